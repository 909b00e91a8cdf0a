/* metrics.c: per-worker counters and HDR histograms (lock-free writes, merged on read),
 * the last errors and periodic snapshots (bounded rings), Prometheus text and status JSON. */
#include "metrics.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include "hist.h"
#include "lua_app.h"
#include "lua_db.h"
#include "httpc.h"
#include "ratelimit.h"
#include "rbus.h"
#include "sse.h"

typedef struct wmetrics {
    hist all;                       /* since start */
    histwin recent;                 /* sliding window: 6 x 10 s */
    atomic_ullong by_class[6];      /* 1xx..5xx, index 1..5 */
} wmetrics;

typedef struct err_entry {
    double time;
    int status;
    char route[128];
    char msg[1024];
} err_entry;

typedef struct snapshot {
    double time;
    unsigned long long requests, errors5xx;
    int connections, sse;
    double p50_ms, p95_ms, p99_ms, rss_mb, cpu_s;
} snapshot;

typedef struct smetrics {
    pthread_mutex_t lock;
    err_entry *errs;
    unsigned nerr_cap, nerr, err_head;
    unsigned long long errors_total;
    snapshot *snaps;
    unsigned nsnap_cap, nsnap, snap_head;
    unsigned long long line_requests, line_errors;   /* totals at the last status line */
    double line_time;
} smetrics;

static uint64_t now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec;
}

int metrics_worker_init(worker *w)
{
    wmetrics *m = calloc(1, sizeof *m);
    if (!m) return -1;
    hist_init(&m->all);
    histwin_init(&m->recent, 6, 10);
    w->metrics = m;
    return 0;
}

void metrics_worker_free(worker *w)
{
    free(w->metrics);
    w->metrics = NULL;
}

int metrics_server_init(server *s, unsigned errors_kept, unsigned snapshots_kept)
{
    smetrics *m = calloc(1, sizeof *m);
    if (!m) return -1;
    pthread_mutex_init(&m->lock, NULL);
    m->nerr_cap = errors_kept ? errors_kept : 500;
    m->errs = calloc(m->nerr_cap, sizeof *m->errs);
    m->nsnap_cap = snapshots_kept ? snapshots_kept : 300;
    m->snaps = calloc(m->nsnap_cap, sizeof *m->snaps);
    if (!m->errs || !m->snaps) return -1;
    s->metrics = m;
    return 0;
}

void metrics_server_free(server *s)
{
    smetrics *m = s->metrics;
    if (!m) return;
    free(m->errs);
    free(m->snaps);
    free(m);
    s->metrics = NULL;
}

void metrics_observe(worker *w, int status, uint64_t us, uint64_t now)
{
    wmetrics *m = w->metrics;
    if (!m) return;
    hist_record(&m->all, us);
    histwin_record(&m->recent, now, us);
    int cls = status / 100;
    if (cls >= 1 && cls <= 5) atomic_fetch_add_explicit(&m->by_class[cls], 1, memory_order_relaxed);
}

void metrics_error(worker *w, conn *c, const char *msg)
{
    smetrics *m = w->srv->metrics;
    if (!m) return;
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    pthread_mutex_lock(&m->lock);
    err_entry *e = &m->errs[m->err_head];
    m->err_head = (m->err_head + 1) % m->nerr_cap;
    if (m->nerr < m->nerr_cap) m->nerr++;
    m->errors_total++;
    e->time = (double)ts.tv_sec + ts.tv_nsec / 1e9;
    e->status = 500;
    snprintf(e->route, sizeof e->route, "%s %.*s", http_method_str((enum http_method)c->req.method),
             (int)(c->req.path_len > 100 ? 100 : c->req.path_len), http_req_url(&c->req));
    snprintf(e->msg, sizeof e->msg, "%s", msg);
    pthread_mutex_unlock(&m->lock);
}

static void proc_usage(double *rss_mb, double *cpu_s)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    *cpu_s = (double)ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 + (double)ru.ru_stime.tv_sec + ru.ru_stime.tv_usec / 1e6;
    *rss_mb = 0;
    FILE *f = fopen("/proc/self/statm", "r");
    if (f) {
        long pages, res;
        if (fscanf(f, "%ld %ld", &pages, &res) == 2) *rss_mb = (double)res * (double)sysconf(_SC_PAGESIZE) / 1048576.0;
        fclose(f);
    }
}

/* Sums every worker's histograms: since start (all=1) or over the recent window. */
static void merged(server *s, hist *out, int all)
{
    hist_init(out);
    for (int i = 0; i < s->nworkers; i++) {
        wmetrics *m = s->workers[i].metrics;
        if (!m) continue;
        if (all) hist_merge(out, &m->all);
        else histwin_merge(&m->recent, now_s(), out);
    }
}

static unsigned long long class_total(server *s, int cls)
{
    unsigned long long n = 0;
    for (int i = 0; i < s->nworkers; i++) {
        wmetrics *m = s->workers[i].metrics;
        if (m) n += atomic_load_explicit(&m->by_class[cls], memory_order_relaxed);
    }
    return n;
}

static const char *esc_label(const char *s, char *out, size_t n)
{
    size_t o = 0;
    for (; *s && o + 3 < n; s++) {
        if (*s == '"' || *s == '\\') out[o++] = '\\';
        if (*s == '\n') { out[o++] = '\\'; out[o++] = 'n'; continue; }
        out[o++] = *s;
    }
    out[o] = 0;
    return out;
}

void metrics_render(server *s, buf *b)
{
    hist h;
    merged(s, &h, 1);
    static const double bounds_s[] = {0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.2, 0.5, 1, 2.5, 5, 10, 30};
    buf_puts(b, "# HELP sluice_http_request_duration_seconds Time from a request's first byte to its response.\n"
                "# TYPE sluice_http_request_duration_seconds histogram\n");
    for (size_t i = 0; i < sizeof bounds_s / sizeof *bounds_s; i++) {
        uint64_t top = hist_bucket_top((uint64_t)(bounds_s[i] * 1e6));
        buf_printf(b, "sluice_http_request_duration_seconds_bucket{le=\"%g\"} %llu\n", bounds_s[i],
                   (unsigned long long)hist_count_le(&h, top));
    }
    buf_printf(b, "sluice_http_request_duration_seconds_bucket{le=\"+Inf\"} %llu\n", (unsigned long long)hist_count(&h));
    buf_printf(b, "sluice_http_request_duration_seconds_sum %.6f\n", hist_mean(&h) * (double)hist_count(&h) / 1e6);
    buf_printf(b, "sluice_http_request_duration_seconds_count %llu\n", (unsigned long long)hist_count(&h));

    hist r;
    merged(s, &r, 0);
    buf_puts(b, "# HELP sluice_http_request_duration_recent_seconds Response time percentiles over the last minute.\n"
                "# TYPE sluice_http_request_duration_recent_seconds summary\n");
    static const double qs[] = {0.5, 0.95, 0.99, 0.999};
    for (int i = 0; i < 4; i++)
        buf_printf(b, "sluice_http_request_duration_recent_seconds{quantile=\"%g\"} %.6f\n", qs[i],
                   (double)hist_percentile(&r, qs[i]) / 1e6);
    buf_printf(b, "sluice_http_request_duration_recent_seconds_sum %.6f\n", hist_mean(&r) * (double)hist_count(&r) / 1e6);
    buf_printf(b, "sluice_http_request_duration_recent_seconds_count %llu\n", (unsigned long long)hist_count(&r));

    buf_puts(b, "# HELP sluice_http_responses_total Responses by status class.\n# TYPE sluice_http_responses_total counter\n");
    for (int c = 1; c <= 5; c++) buf_printf(b, "sluice_http_responses_total{code=\"%dxx\"} %llu\n", c, class_total(s, c));
    unsigned long long bytes = 0, lua_errors = 0, limited = 0, slow = 0, dropped = 0;
    for (int i = 0; i < s->nworkers; i++) {
        slow += atomic_load(&s->workers[i].sse_slow_closed);
        dropped += atomic_load(&s->workers[i].sse_dropped);
        bytes += atomic_load(&s->workers[i].bytes_out);
        lua_errors += atomic_load(&s->workers[i].lua_errors);
        limited += atomic_load(&s->workers[i].rate_limited);
    }
    buf_printf(b, "# HELP sluice_http_response_bytes_total Bytes written to clients.\n# TYPE sluice_http_response_bytes_total counter\nsluice_http_response_bytes_total %llu\n", bytes);
    buf_printf(b, "# HELP sluice_sse_slow_disconnects_total Streams closed because their queue reached sse.max_queue.\n# TYPE sluice_sse_slow_disconnects_total counter\nsluice_sse_slow_disconnects_total %llu\n", slow);
    buf_printf(b, "# HELP sluice_sse_dropped_events_total Events dropped for slow streams (sse.slow_policy = drop_oldest).\n# TYPE sluice_sse_dropped_events_total counter\nsluice_sse_dropped_events_total %llu\n", dropped);
    buf_printf(b, "# HELP sluice_connections Open client connections.\n# TYPE sluice_connections gauge\nsluice_connections %d\n", atomic_load(&s->nconns));
    buf_printf(b, "# HELP sluice_lua_errors_total Errors raised by Lua handlers and timers.\n# TYPE sluice_lua_errors_total counter\nsluice_lua_errors_total %llu\n", lua_errors);
    buf_printf(b, "# HELP sluice_ratelimit_rejections_total Requests answered 429 by a rate-limit policy.\n# TYPE sluice_ratelimit_rejections_total counter\nsluice_ratelimit_rejections_total %llu\n", limited);
    if (s->rl) {
        rl_stats st;
        ratelimit_stats(s->rl, &st);
        buf_printf(b, "# HELP sluice_ratelimit_keys Keys in the rate-limit table.\n# TYPE sluice_ratelimit_keys gauge\nsluice_ratelimit_keys %llu\n", (unsigned long long)st.keys);
        buf_printf(b, "# HELP sluice_ratelimit_capacity Maximum keys (limiter.max_keys).\n# TYPE sluice_ratelimit_capacity gauge\nsluice_ratelimit_capacity %llu\n", (unsigned long long)st.capacity);
        buf_printf(b, "# HELP sluice_ratelimit_evictions_total Expired keys forgotten to make room.\n# TYPE sluice_ratelimit_evictions_total counter\nsluice_ratelimit_evictions_total %llu\n", (unsigned long long)st.evictions);
        buf_printf(b, "# HELP sluice_ratelimit_table_full_total New keys refused because the table was full of busy keys.\n# TYPE sluice_ratelimit_table_full_total counter\nsluice_ratelimit_table_full_total %llu\n", (unsigned long long)st.table_full);
    }
    if (s->ssehub) {
        sse_stats st;
        sse_hub_stats(s->ssehub, &st);
        buf_printf(b, "# HELP sluice_sse_subscribers Open event streams.\n# TYPE sluice_sse_subscribers gauge\nsluice_sse_subscribers %llu\n", (unsigned long long)st.subscribers);
        buf_printf(b, "# HELP sluice_sse_channels Channels with subscribers or history.\n# TYPE sluice_sse_channels gauge\nsluice_sse_channels %llu\n", (unsigned long long)st.channels);
        buf_printf(b, "# HELP sluice_sse_published_total Events published.\n# TYPE sluice_sse_published_total counter\nsluice_sse_published_total %llu\n", (unsigned long long)st.published);
        buf_printf(b, "# HELP sluice_sse_delivered_total Events queued to subscribers.\n# TYPE sluice_sse_delivered_total counter\nsluice_sse_delivered_total %llu\n", (unsigned long long)st.delivered);
        buf_printf(b, "# HELP sluice_sse_rejected_total Streams refused by a cap.\n# TYPE sluice_sse_rejected_total counter\n"
                      "sluice_sse_rejected_total{cap=\"total\"} %llu\nsluice_sse_rejected_total{cap=\"user\"} %llu\nsluice_sse_rejected_total{cap=\"channel\"} %llu\n",
                   (unsigned long long)st.rejected_total, (unsigned long long)st.rejected_user, (unsigned long long)st.rejected_channel);
        unsigned maxch = atomic_load(&s->metrics_max_channels);   /* not via cfg0: a reload frees it */
        if (!maxch) maxch = 100;
        sse_channel_stat top[256];
        size_t n = sse_hub_top_channels(s->ssehub, top, maxch < 256 ? maxch : 256);
        buf_puts(b, "# HELP sluice_sse_channel_subscribers Subscribers of the busiest channels (capped by metrics.max_channels).\n# TYPE sluice_sse_channel_subscribers gauge\n");
        for (size_t i = 0; i < n; i++) {
            char esc[512];
            buf_printf(b, "sluice_sse_channel_subscribers{channel=\"%s\"} %llu\n", esc_label(top[i].name, esc, sizeof esc),
                       (unsigned long long)top[i].subscribers);
        }
    }
    int any_db = 0;
    for (int i = 0; i < s->nworkers; i++) if (s->workers[i].db) any_db = 1;
    if (any_db) {
        buf_puts(b, "# HELP sluice_db_pool_connections Pool connections by state.\n# TYPE sluice_db_pool_connections gauge\n");
        buf_puts(b, "# HELP sluice_db_pool_waiting Requests waiting for a connection.\n# TYPE sluice_db_pool_waiting gauge\n");
        buf_puts(b, "# HELP sluice_db_pool_cap This worker's share of connection_limit.\n# TYPE sluice_db_pool_cap gauge\n");
        buf_puts(b, "# HELP sluice_db_pool_acquired_total Connections handed out.\n# TYPE sluice_db_pool_acquired_total counter\n");
        buf_puts(b, "# HELP sluice_db_pool_timeouts_total Acquires that hit pool_timeout.\n# TYPE sluice_db_pool_timeouts_total counter\n");
        buf_puts(b, "# HELP sluice_db_pool_errors_total Connect, query and timeout errors.\n# TYPE sluice_db_pool_errors_total counter\n");
        buf_puts(b, "# HELP sluice_db_pool_wait_seconds_total Time spent waiting for a connection.\n# TYPE sluice_db_pool_wait_seconds_total counter\n");
        for (int i = 0; i < s->nworkers; i++) db_metrics(&s->workers[i], b, i == 0);
    }
    rbus_metrics(s, b);
    httpc *hc[256];                 /* outbound requests (app.http): every worker's client */
    int nhc = s->nworkers < 256 ? s->nworkers : 256;
    for (int i = 0; i < nhc; i++) hc[i] = s->workers[i].httpc;
    httpc_metrics(hc, nhc, b);
    double rss, cpu;
    proc_usage(&rss, &cpu);
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    buf_printf(b, "# HELP sluice_process_resident_memory_bytes Resident set size.\n# TYPE sluice_process_resident_memory_bytes gauge\nsluice_process_resident_memory_bytes %.0f\n", rss * 1048576.0);
    buf_printf(b, "# HELP sluice_process_cpu_seconds_total User and system CPU time.\n# TYPE sluice_process_cpu_seconds_total counter\nsluice_process_cpu_seconds_total %.3f\n", cpu);
    buf_printf(b, "# HELP sluice_uptime_seconds Seconds since start.\n# TYPE sluice_uptime_seconds gauge\nsluice_uptime_seconds %.3f\n", (double)ts.tv_sec + ts.tv_nsec / 1e9 - s->started);
    buf_printf(b, "# HELP sluice_reloads_total Successful reloads.\n# TYPE sluice_reloads_total counter\nsluice_reloads_total %llu\n", (unsigned long long)atomic_load(&s->reloads));
    buf_printf(b, "# HELP sluice_reload_failures_total Rejected reloads.\n# TYPE sluice_reload_failures_total counter\nsluice_reload_failures_total %llu\n", (unsigned long long)atomic_load(&s->reload_failures));
    smetrics *sm = s->metrics;
    if (sm) buf_printf(b, "# HELP sluice_errors_total Handler errors recorded (the last ones are in /_sluice/status).\n# TYPE sluice_errors_total counter\nsluice_errors_total %llu\n", sm->errors_total);
}

static void json_str(buf *b, const char *s)
{
    buf_puts(b, "\"");
    for (; *s; s++) {
        unsigned char ch = (unsigned char)*s;
        if (ch == '"' || ch == '\\') { buf_append(b, "\\", 1); buf_append(b, s, 1); }
        else if (ch == '\n') buf_puts(b, "\\n");
        else if (ch == '\t') buf_puts(b, "\\t");
        else if (ch < 0x20) buf_printf(b, "\\u%04x", ch);
        else buf_append(b, s, 1);
    }
    buf_puts(b, "\"");
}

void metrics_status_line(server *s, char *out, size_t n)
{
    smetrics *m = s->metrics;
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    double now = (double)ts.tv_sec + ts.tv_nsec / 1e9;
    unsigned long long req = 0;
    for (int c = 1; c <= 5; c++) req += class_total(s, c);
    unsigned long long err = class_total(s, 5);
    double dt = m && m->line_time > 0 ? now - m->line_time : now - s->started;
    double rate = dt > 0 ? (double)(req - (m ? m->line_requests : 0)) / dt : 0;
    hist r;
    merged(s, &r, 0);
    unsigned long long sse_n = 0;
    if (s->ssehub) { sse_stats st; sse_hub_stats(s->ssehub, &st); sse_n = st.subscribers; }
    snprintf(out, n, "status: %d connections (%llu streams), %.1f req/s, p99 %.2f ms, %llu errors (5xx) since last",
             atomic_load(&s->nconns), sse_n, rate, (double)hist_percentile(&r, 0.99) / 1000.0,
             err - (m ? m->line_errors : 0));
    if (m) { m->line_requests = req; m->line_errors = err; m->line_time = now; }
}

void metrics_snapshot(server *s)
{
    smetrics *m = s->metrics;
    if (!m) return;
    snapshot sn = {0};
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    sn.time = (double)ts.tv_sec;
    for (int c = 1; c <= 5; c++) sn.requests += class_total(s, c);
    sn.errors5xx = class_total(s, 5);
    sn.connections = atomic_load(&s->nconns);
    if (s->ssehub) { sse_stats st; sse_hub_stats(s->ssehub, &st); sn.sse = (int)st.subscribers; }
    hist r;
    merged(s, &r, 0);
    sn.p50_ms = (double)hist_percentile(&r, 0.5) / 1000.0;
    sn.p95_ms = (double)hist_percentile(&r, 0.95) / 1000.0;
    sn.p99_ms = (double)hist_percentile(&r, 0.99) / 1000.0;
    proc_usage(&sn.rss_mb, &sn.cpu_s);
    pthread_mutex_lock(&m->lock);
    m->snaps[m->snap_head] = sn;
    m->snap_head = (m->snap_head + 1) % m->nsnap_cap;
    if (m->nsnap < m->nsnap_cap) m->nsnap++;
    pthread_mutex_unlock(&m->lock);
}

void metrics_status_json(server *s, buf *b)
{
    smetrics *m = s->metrics;
    hist r;
    merged(s, &r, 0);
    double rss, cpu;
    proc_usage(&rss, &cpu);
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    unsigned long long total = 0;
    for (int c = 1; c <= 5; c++) total += class_total(s, c);
    buf_printf(b, "{\"uptime\":%.1f,\"workers\":%d,\"connections\":%d,\"requests\":%llu,\"errors_5xx\":%llu,"
                  "\"rss_mb\":%.1f,\"cpu_seconds\":%.2f,\"reloads\":%llu,\"reload_failures\":%llu,",
               (double)ts.tv_sec + ts.tv_nsec / 1e9 - s->started, s->nworkers, atomic_load(&s->nconns), total,
               class_total(s, 5), rss, cpu, (unsigned long long)atomic_load(&s->reloads),
               (unsigned long long)atomic_load(&s->reload_failures));
    buf_puts(b, "\"last_reload_error\":");
    json_str(b, s->last_reload_error);
    buf_printf(b, ",\"latency_ms\":{\"p50\":%.3f,\"p95\":%.3f,\"p99\":%.3f,\"p999\":%.3f},",
               hist_percentile(&r, 0.5) / 1000.0, hist_percentile(&r, 0.95) / 1000.0,
               hist_percentile(&r, 0.99) / 1000.0, hist_percentile(&r, 0.999) / 1000.0);
    if (s->ssehub) {
        sse_stats st;
        sse_hub_stats(s->ssehub, &st);
        buf_printf(b, "\"sse\":{\"subscribers\":%llu,\"channels\":%llu,\"published\":%llu},",
                   (unsigned long long)st.subscribers, (unsigned long long)st.channels, (unsigned long long)st.published);
    }
    rbus_status_json(s, b);
    if (!m) { buf_puts(b, "\"errors\":[],\"snapshots\":[]}"); return; }
    pthread_mutex_lock(&m->lock);
    buf_puts(b, "\"errors\":[");
    for (unsigned i = 0; i < m->nerr; i++) {
        err_entry *e = &m->errs[(m->err_head + m->nerr_cap - 1 - i) % m->nerr_cap];
        buf_printf(b, "%s{\"time\":%.3f,\"status\":%d,\"route\":", i ? "," : "", e->time, e->status);
        json_str(b, e->route);
        buf_puts(b, ",\"message\":");
        json_str(b, e->msg);
        buf_puts(b, "}");
    }
    buf_puts(b, "],\"snapshots\":[");
    for (unsigned i = 0; i < m->nsnap; i++) {
        snapshot *sn = &m->snaps[(m->snap_head + m->nsnap_cap - m->nsnap + i) % m->nsnap_cap];
        buf_printf(b, "%s{\"time\":%.0f,\"requests\":%llu,\"errors_5xx\":%llu,\"connections\":%d,\"sse\":%d,"
                      "\"p50_ms\":%.3f,\"p95_ms\":%.3f,\"p99_ms\":%.3f,\"rss_mb\":%.1f,\"cpu_seconds\":%.2f}",
                   i ? "," : "", sn->time, sn->requests, sn->errors5xx, sn->connections, sn->sse, sn->p50_ms,
                   sn->p95_ms, sn->p99_ms, sn->rss_mb, sn->cpu_s);
    }
    buf_puts(b, "]}");
    pthread_mutex_unlock(&m->lock);
}
