/* metrics.c: per-worker counters and histograms (lock-free writes, merged on read), requests by
 * route (routestats.c), resource use against the cgroup's limits (sysres.c), the last errors and
 * periodic snapshots (bounded rings), Prometheus text and the status JSON. */
#include "metrics.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "conn.h"
#include "ctx.h"
#include "hist.h"
#include "httpc.h"
#include "json.h"
#include "ratelimit.h"
#include "rbus.h"
#include "routestats.h"
#include "sconfig.h"
#include "sse.h"
#include "sysres.h"

typedef struct wmetrics {
    histwin recent;                 /* sliding window: 6 x 10 s, for percentiles */
    rs_table *routes;               /* requests and latency by route, method, code */
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
    double rps, error_ratio, mem_ratio, cpu_ratio, mem_limit_mb, cpus;
    int db, db_in_use, db_idle, db_waiting, db_cap;
} snapshot;

#define USAGE_RING 16               /* one CPU sample per second: ratios over the last 10 s */
#define USAGE_WINDOW 10.0

typedef struct smetrics {
    pthread_mutex_t lock;
    err_entry *errs;
    unsigned nerr_cap, nerr, err_head;
    unsigned long long errors_total;
    snapshot *snaps;
    unsigned nsnap_cap, nsnap, snap_head;
    unsigned long long line_requests, line_errors;   /* totals at the last status line */
    double line_time;
    rs_registry *routes;            /* route pattern -> label id, process-wide */
    /* resource use: sampled by the main thread every second (metrics_sample_usage) */
    struct { double t, cpu; } ring[USAGE_RING];
    unsigned nring, ring_head, nsample;
    sysres_limits lim;
    double cpu_ratio;
} smetrics;

int metrics_worker_init(worker *w)
{
    wmetrics *m = calloc(1, sizeof *m);
    if (!m) return -1;
    histwin_init(&m->recent, 6, 10);
    m->routes = routestats_table_new();
    if (!m->routes) { free(m); return -1; }
    w->metrics = m;
    return 0;
}

void metrics_worker_free(worker *w)
{
    wmetrics *m = w->metrics;
    if (m) routestats_table_free(m->routes);
    free(m);
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
    m->routes = routestats_registry_new();
    if (!m->errs || !m->snaps || !m->routes) return -1;
    sysres_limits_read(NULL, NULL, NULL, &m->lim);
    s->metrics = m;
    metrics_sample_usage(s);
    return 0;
}

void metrics_server_free(server *s)
{
    smetrics *m = s->metrics;
    if (!m) return;
    free(m->errs);
    free(m->snaps);
    routestats_registry_free(m->routes);
    free(m);
    s->metrics = NULL;
}

uint16_t metrics_route_id(server *s, const char *pattern)
{
    smetrics *m = s ? s->metrics : NULL;
    return m ? routestats_route_id(m->routes, pattern) : RS_UNMATCHED;
}

void metrics_observe(worker *w, unsigned route, unsigned method, int status, uint64_t us, uint64_t now)
{
    wmetrics *m = w->metrics;
    if (!m) return;
    histwin_record(&m->recent, now, us);
    routestats_record(m->routes, route, method, status, us);
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

static double mono_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

/* The verdict from what is configured and up (both MH_* bits). */
static void readiness_verdict(server *s, const sconfig *cfg, metrics_health *h)
{
    h->required = cfg->ready_requires >= 0 ? (unsigned)cfg->ready_requires
                                           : MH_DATABASE | (cfg->redis_fail_closed ? MH_REDIS : 0u);
    h->reason = NULL;
    if (atomic_load(&s->stopping)) h->reason = "draining: shutting down";
    else if ((h->required & h->configured & MH_DATABASE) && !(h->up & MH_DATABASE)) h->reason = "database unreachable";
    else if ((h->required & h->configured & MH_REDIS) && !(h->up & MH_REDIS)) h->reason = "redis unreachable";
    h->ready = h->reason == NULL;
}

static const metrics_db_ops *_Atomic db_ops;

void metrics_set_db(const metrics_db_ops *ops) { atomic_store_explicit(&db_ops, ops, memory_order_release); }

static const metrics_db_ops *dbo(void) { return atomic_load_explicit(&db_ops, memory_order_acquire); }
static int db_ready_of(worker *w) { const metrics_db_ops *o = dbo(); return o ? o->ready(w) : 1; }
static void db_render(worker *w, buf *b, int first) { const metrics_db_ops *o = dbo(); if (o) o->render(w, b, first); }

static void db_sum(server *s, db_totals *t)
{
    const metrics_db_ops *o = dbo();
    if (o) o->totals(s, t);
    else memset(t, 0, sizeof *t);
}

void metrics_readiness(worker *w, const sconfig *cfg, metrics_health *h)
{
    h->configured = h->up = 0;
    if (cfg->db_url && w->db) {
        h->configured |= MH_DATABASE;
        if (db_ready_of(w)) h->up |= MH_DATABASE;
    }
    if (w->rbus) {
        h->configured |= MH_REDIS;
        if (rbus_ready(w)) h->up |= MH_REDIS;
    }
    readiness_verdict(w->srv, cfg, h);
}

void metrics_readiness_all(server *s, metrics_health *h)
{
    h->configured = h->up = 0;
    int db = 0, db_up = 0;
    for (int i = 0; i < s->nworkers; i++)
        if (s->workers[i].db) { db++; db_up += db_ready_of(&s->workers[i]); }   /* an atomic load per pool */
    if (db) {
        h->configured |= MH_DATABASE;
        if (db_up == db) h->up |= MH_DATABASE;
    }
    if (s->rbus) {
        h->configured |= MH_REDIS;
        if (rbus_links_up(s) == s->nworkers) h->up |= MH_REDIS;
    }
    readiness_verdict(s, s->cfg0, h);
}

void metrics_sample_usage(server *s)
{
    smetrics *m = s->metrics;
    if (!m) return;
    double rss, cpu, now = mono_now();
    sysres_usage(&rss, &cpu);
    sysres_limits lim;
    int reread = m->nsample % 10 == 0;      /* limits can change at run time (systemctl set-property) */
    if (reread) sysres_limits_read(NULL, NULL, NULL, &lim);
    pthread_mutex_lock(&m->lock);
    if (reread) m->lim = lim;
    m->nsample++;
    m->ring[m->ring_head].t = now;
    m->ring[m->ring_head].cpu = cpu;
    m->ring_head = (m->ring_head + 1) % USAGE_RING;
    if (m->nring < USAGE_RING) m->nring++;
    /* the oldest sample within the window (or the oldest there is) */
    unsigned oldest = (m->ring_head + USAGE_RING - m->nring) % USAGE_RING;
    for (unsigned k = 0; k + 1 < m->nring; k++) {
        unsigned i = (oldest + k) % USAGE_RING;
        if (now - m->ring[i].t <= USAGE_WINDOW + 0.5) { oldest = i; break; }
    }
    double dt = now - m->ring[oldest].t;
    m->cpu_ratio = dt > 0.2 && m->lim.cpus > 0 ? (cpu - m->ring[oldest].cpu) / (dt * m->lim.cpus) : 0;
    pthread_mutex_unlock(&m->lock);
}

void metrics_resources(server *s, metrics_res *out)
{
    smetrics *m = s->metrics;
    memset(out, 0, sizeof *out);
    sysres_usage(&out->rss_bytes, &out->cpu_seconds);
    if (!m) return;
    pthread_mutex_lock(&m->lock);
    out->mem_limit_bytes = m->lim.mem_bytes;
    out->cpus = m->lim.cpus;
    out->mem_cgroup = m->lim.mem_cgroup;
    out->cpu_cgroup = m->lim.cpu_cgroup;
    out->cpu_ratio = m->cpu_ratio;
    pthread_mutex_unlock(&m->lock);
    out->mem_ratio = out->mem_limit_bytes > 0 ? out->rss_bytes / out->mem_limit_bytes : 0;
}

/* Sums every worker's recent window. */
static void merged_recent(server *s, hist *out)
{
    hist_init(out);
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    for (int i = 0; i < s->nworkers; i++) {
        wmetrics *m = s->workers[i].metrics;
        if (m) histwin_merge(&m->recent, (uint64_t)ts.tv_sec, out);
    }
}

/* The workers' route tables, for routestats' readers (at most 256 workers). */
static int route_tables(server *s, rs_table **out)
{
    int n = 0;
    for (int i = 0; i < s->nworkers && n < 256; i++) {
        wmetrics *m = s->workers[i].metrics;
        out[n++] = m ? m->routes : NULL;
    }
    return n;
}

static void classes(server *s, uint64_t out[6])
{
    rs_table *t[256];
    int n = route_tables(s, t);
    routestats_classes(t, n, out);
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

#define GAUGE(b, name, help, fmt, ...) \
    buf_printf(b, "# HELP " name " " help "\n# TYPE " name " gauge\n" name " " fmt "\n", __VA_ARGS__)
#define COUNTER(b, name, help, fmt, ...) \
    buf_printf(b, "# HELP " name " " help "\n# TYPE " name " counter\n" name " " fmt "\n", __VA_ARGS__)

static void render_sse(server *s, buf *b, unsigned long long slow, unsigned long long dropped,
                       unsigned long long subscribes, unsigned long long refused_handler)
{
    COUNTER(b, "sluice_sse_slow_disconnects_total", "Streams closed because their queue stayed over sse.max_queue (slow consumers).", "%llu", slow);
    COUNTER(b, "sluice_sse_dropped_events_total", "Events dropped for slow streams (sse.slow_policy = drop_oldest).", "%llu", dropped);
    COUNTER(b, "sluice_sse_subscribes_total", "Event streams admitted.", "%llu", subscribes);
    GAUGE(b, "sluice_sse_capacity", "sse.max_connections: the most event streams this instance admits.", "%u", atomic_load(&s->sse_cap));
    if (!s->ssehub) return;
    sse_stats st;
    sse_hub_stats(s->ssehub, &st);
    GAUGE(b, "sluice_sse_subscribers", "Open event streams.", "%llu", (unsigned long long)st.subscribers);
    GAUGE(b, "sluice_sse_channels", "Channels with subscribers or history.", "%llu", (unsigned long long)st.channels);
    COUNTER(b, "sluice_sse_published_total", "Events published.", "%llu", (unsigned long long)st.published);
    COUNTER(b, "sluice_sse_delivered_total", "Events queued to subscribers.", "%llu", (unsigned long long)st.delivered);
    buf_printf(b, "# HELP sluice_sse_rejected_total Streams refused by a cap (kept for compatibility: see sluice_sse_refused_total).\n# TYPE sluice_sse_rejected_total counter\n"
                  "sluice_sse_rejected_total{cap=\"total\"} %llu\nsluice_sse_rejected_total{cap=\"user\"} %llu\nsluice_sse_rejected_total{cap=\"channel\"} %llu\n",
               (unsigned long long)st.rejected_total, (unsigned long long)st.rejected_user, (unsigned long long)st.rejected_channel);
    buf_printf(b, "# HELP sluice_sse_refused_total Event streams refused, by reason: a cap (total, per user, per channel) or the app.sse handler's own status.\n# TYPE sluice_sse_refused_total counter\n"
                  "sluice_sse_refused_total{reason=\"total_cap\"} %llu\nsluice_sse_refused_total{reason=\"user_cap\"} %llu\n"
                  "sluice_sse_refused_total{reason=\"channel_cap\"} %llu\nsluice_sse_refused_total{reason=\"handler\"} %llu\n",
               (unsigned long long)st.rejected_total, (unsigned long long)st.rejected_user,
               (unsigned long long)st.rejected_channel, refused_handler);
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

static void render_resources(server *s, buf *b)
{
    metrics_res r;
    metrics_resources(s, &r);
    GAUGE(b, "sluice_process_resident_memory_bytes", "Resident set size.", "%.0f", r.rss_bytes);
    COUNTER(b, "sluice_process_cpu_seconds_total", "User and system CPU time.", "%.3f", r.cpu_seconds);
    buf_printf(b, "# HELP sluice_memory_limit_bytes Memory this process may use: the cgroup's memory.max, else the machine's MemTotal (source).\n"
                  "# TYPE sluice_memory_limit_bytes gauge\nsluice_memory_limit_bytes{source=\"%s\"} %.0f\n",
               r.mem_cgroup ? "cgroup" : "machine", r.mem_limit_bytes);
    GAUGE(b, "sluice_memory_used_ratio", "Resident set size as a fraction of sluice_memory_limit_bytes.", "%.6f", r.mem_ratio);
    buf_printf(b, "# HELP sluice_cpu_limit_cores CPUs this process may use: the cgroup's cpu.max quota/period, else the CPUs it may run on (source).\n"
                  "# TYPE sluice_cpu_limit_cores gauge\nsluice_cpu_limit_cores{source=\"%s\"} %.3f\n",
               r.cpu_cgroup ? "cgroup" : "machine", r.cpus);
    GAUGE(b, "sluice_cpu_used_ratio", "CPU time over the last 10 s as a fraction of sluice_cpu_limit_cores.", "%.6f", r.cpu_ratio);
}

static void render_health(const metrics_health *h, buf *b)
{
    GAUGE(b, "sluice_ready", "1 while GET /ready answers 200 (on the worker that answered this scrape).", "%d", h->ready);
    buf_puts(b, "# HELP sluice_dependency_up 1 while a configured dependency is reachable; required: whether /ready depends on it (health.ready_requires).\n"
                "# TYPE sluice_dependency_up gauge\n");
    static const char *const names[] = {"database", "redis"};
    for (int i = 0; i < 2; i++)
        if (h->configured & (1u << i))
            buf_printf(b, "sluice_dependency_up{dependency=\"%s\",required=\"%s\"} %d\n", names[i],
                       h->required & (1u << i) ? "true" : "false", h->up & (1u << i) ? 1 : 0);
}

void metrics_render(server *s, const metrics_health *h, buf *b)
{
    rs_table *tables[256];
    int nt = route_tables(s, tables);
    smetrics *sm = s->metrics;
    routestats_render(sm ? sm->routes : NULL, tables, nt, b);

    hist r;
    merged_recent(s, &r);
    buf_puts(b, "# HELP sluice_http_request_duration_recent_seconds Response time percentiles over the last minute.\n"
                "# TYPE sluice_http_request_duration_recent_seconds summary\n");
    static const double qs[] = {0.5, 0.95, 0.99, 0.999};
    for (int i = 0; i < 4; i++)
        buf_printf(b, "sluice_http_request_duration_recent_seconds{quantile=\"%g\"} %.6f\n", qs[i],
                   (double)hist_percentile(&r, qs[i]) / 1e6);
    buf_printf(b, "sluice_http_request_duration_recent_seconds_sum %.6f\n", hist_mean(&r) * (double)hist_count(&r) / 1e6);
    buf_printf(b, "sluice_http_request_duration_recent_seconds_count %llu\n", (unsigned long long)hist_count(&r));

    uint64_t cls[6];
    routestats_classes(tables, nt, cls);
    buf_puts(b, "# HELP sluice_http_responses_total Responses by status class.\n# TYPE sluice_http_responses_total counter\n");
    for (int c = 1; c <= 5; c++) buf_printf(b, "sluice_http_responses_total{code=\"%dxx\"} %llu\n", c, (unsigned long long)cls[c]);
    unsigned long long bytes = 0, lua_errors = 0, limited = 0, slow = 0, dropped = 0, subs = 0, refused = 0;
    long lua_tasks = 0;
    for (int i = 0; i < s->nworkers; i++) {
        lua_tasks += atomic_load_explicit(&s->workers[i].lua_tasks, memory_order_relaxed);
        slow += atomic_load(&s->workers[i].sse_slow_closed);
        dropped += atomic_load(&s->workers[i].sse_dropped);
        bytes += atomic_load(&s->workers[i].bytes_out);
        lua_errors += atomic_load(&s->workers[i].lua_errors);
        limited += atomic_load(&s->workers[i].rate_limited);
        subs += atomic_load(&s->workers[i].sse_subscribes);
        refused += atomic_load(&s->workers[i].sse_refused_handler);
    }
    COUNTER(b, "sluice_http_response_bytes_total", "Bytes written to clients.", "%llu", bytes);
    GAUGE(b, "sluice_connections", "Open client connections.", "%d", atomic_load(&s->nconns));
    GAUGE(b, "sluice_connections_capacity", "limits.max_connections (lowered to fit the open-files limit).", "%u", atomic_load(&s->conn_cap));
    COUNTER(b, "sluice_lua_errors_total", "Errors raised by Lua handlers and timers.", "%llu", lua_errors);
    GAUGE(b, "sluice_lua_tasks_active", "Lua tasks (handlers, running timer callbacks) holding a coroutine: running or waiting.", "%ld", lua_tasks);
    COUNTER(b, "sluice_ratelimit_rejections_total", "Requests answered 429 by a rate-limit policy.", "%llu", limited);
    if (s->rl) {
        rl_stats st;
        ratelimit_stats(s->rl, &st);
        GAUGE(b, "sluice_ratelimit_keys", "Keys in the rate-limit table.", "%llu", (unsigned long long)st.keys);
        GAUGE(b, "sluice_ratelimit_capacity", "Maximum keys (limiter.max_keys).", "%llu", (unsigned long long)st.capacity);
        COUNTER(b, "sluice_ratelimit_evictions_total", "Expired keys forgotten to make room.", "%llu", (unsigned long long)st.evictions);
        COUNTER(b, "sluice_ratelimit_table_full_total", "New keys refused because the table was full of busy keys.", "%llu", (unsigned long long)st.table_full);
    }
    render_sse(s, b, slow, dropped, subs, refused);
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
        for (int i = 0; i < s->nworkers; i++) db_render(&s->workers[i], b, i == 0);
    }
    rbus_metrics(s, b);
    httpc *hc[256];                 /* outbound requests (app.http): every worker's client */
    int nhc = s->nworkers < 256 ? s->nworkers : 256;
    for (int i = 0; i < nhc; i++) hc[i] = s->workers[i].httpc;
    httpc_metrics(hc, nhc, b);
    if (h) render_health(h, b);
    render_resources(s, b);
    GAUGE(b, "sluice_uptime_seconds", "Seconds since start.", "%.3f", mono_now() - s->started);
    COUNTER(b, "sluice_reloads_total", "Successful reloads.", "%llu", (unsigned long long)atomic_load(&s->reloads));
    COUNTER(b, "sluice_reload_failures_total", "Rejected reloads.", "%llu", (unsigned long long)atomic_load(&s->reload_failures));
    if (sm) COUNTER(b, "sluice_errors_total", "Handler errors recorded (the last ones are in /_sluice/status).", "%llu", sm->errors_total);
}

static unsigned long long total_of(const uint64_t cls[6])
{
    unsigned long long n = 0;
    for (int c = 1; c <= 5; c++) n += cls[c];
    return n;
}

void metrics_status_line(server *s, char *out, size_t n)
{
    smetrics *m = s->metrics;
    double now = mono_now();
    uint64_t cls[6];
    classes(s, cls);
    unsigned long long req = total_of(cls), err = cls[5];
    double dt = m && m->line_time > 0 ? now - m->line_time : now - s->started;
    double rate = dt > 0 ? (double)(req - (m ? m->line_requests : 0)) / dt : 0;
    hist r;
    merged_recent(s, &r);
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
    sn.time = (double)ts.tv_sec + ts.tv_nsec / 1e9;
    uint64_t cls[6];
    classes(s, cls);
    sn.requests = total_of(cls);
    sn.errors5xx = cls[5];
    sn.connections = atomic_load(&s->nconns);
    if (s->ssehub) { sse_stats st; sse_hub_stats(s->ssehub, &st); sn.sse = (int)st.subscribers; }
    hist r;
    merged_recent(s, &r);
    sn.p50_ms = (double)hist_percentile(&r, 0.5) / 1000.0;
    sn.p95_ms = (double)hist_percentile(&r, 0.95) / 1000.0;
    sn.p99_ms = (double)hist_percentile(&r, 0.99) / 1000.0;
    metrics_res res;
    metrics_resources(s, &res);
    sn.rss_mb = res.rss_bytes / 1048576.0;
    sn.cpu_s = res.cpu_seconds;
    sn.mem_ratio = res.mem_ratio;
    sn.cpu_ratio = res.cpu_ratio;
    sn.mem_limit_mb = res.mem_limit_bytes / 1048576.0;
    sn.cpus = res.cpus;
    db_totals db;
    db_sum(s, &db);
    sn.db = db.configured;
    sn.db_in_use = db.in_use;
    sn.db_idle = db.idle;
    sn.db_waiting = db.waiting;
    sn.db_cap = db.cap;
    pthread_mutex_lock(&m->lock);
    if (m->nsnap) {        /* rates over the interval since the previous snapshot */
        const snapshot *prev = &m->snaps[(m->snap_head + m->nsnap_cap - 1) % m->nsnap_cap];
        double dt = sn.time - prev->time;
        unsigned long long dn = sn.requests - prev->requests, de = sn.errors5xx - prev->errors5xx;
        sn.rps = dt > 0 ? (double)dn / dt : 0;
        sn.error_ratio = dn ? (double)de / (double)dn : 0;
    }
    m->snaps[m->snap_head] = sn;
    m->snap_head = (m->snap_head + 1) % m->nsnap_cap;
    if (m->nsnap < m->nsnap_cap) m->nsnap++;
    pthread_mutex_unlock(&m->lock);
}

void metrics_status_json(server *s, const metrics_health *h, buf *b)
{
    smetrics *m = s->metrics;
    hist r;
    merged_recent(s, &r);
    metrics_res res;
    metrics_resources(s, &res);
    uint64_t cls[6];
    classes(s, cls);
    buf_printf(b, "{\"pid\":%d,\"port\":%d,\"uptime\":%.1f,\"workers\":%d,\"connections\":%d,\"max_connections\":%u,"
                  "\"requests\":%llu,\"errors_5xx\":%llu,\"rss_mb\":%.1f,\"cpu_seconds\":%.2f,\"reloads\":%llu,\"reload_failures\":%llu,",
               (int)getpid(), s->port, mono_now() - s->started, s->nworkers, atomic_load(&s->nconns),
               atomic_load(&s->conn_cap), total_of(cls), (unsigned long long)cls[5], res.rss_bytes / 1048576.0,
               res.cpu_seconds, (unsigned long long)atomic_load(&s->reloads),
               (unsigned long long)atomic_load(&s->reload_failures));
    pthread_mutex_lock(&s->reload_lock);                 /* a reload on the main thread may be writing them */
    char *err_copy = malloc(sizeof s->last_reload_error);
    if (err_copy) memcpy(err_copy, s->last_reload_error, sizeof s->last_reload_error);
    double when = s->last_reload_wall;
    int ok = atomic_load(&s->last_reload_ok);
    pthread_mutex_unlock(&s->reload_lock);
    buf_puts(b, "\"last_reload_error\":");
    json_quote(b, err_copy ? err_copy : "");
    free(err_copy);
    buf_printf(b, ",\"last_reload\":{\"time\":%.3f,\"ok\":%s},", when, when == 0 ? "null" : ok ? "true" : "false");
    buf_printf(b, "\"memory\":{\"rss_bytes\":%.0f,\"limit_bytes\":%.0f,\"ratio\":%.4f,\"source\":\"%s\"},"
                  "\"cpu\":{\"ratio\":%.4f,\"cores\":%.3f,\"source\":\"%s\"},",
               res.rss_bytes, res.mem_limit_bytes, res.mem_ratio, res.mem_cgroup ? "cgroup" : "machine",
               res.cpu_ratio, res.cpus, res.cpu_cgroup ? "cgroup" : "machine");
    buf_printf(b, "\"latency_ms\":{\"p50\":%.3f,\"p95\":%.3f,\"p99\":%.3f,\"p999\":%.3f},",
               hist_percentile(&r, 0.5) / 1000.0, hist_percentile(&r, 0.95) / 1000.0,
               hist_percentile(&r, 0.99) / 1000.0, hist_percentile(&r, 0.999) / 1000.0);
    if (s->ssehub) {
        sse_stats st;
        sse_hub_stats(s->ssehub, &st);
        buf_printf(b, "\"sse\":{\"subscribers\":%llu,\"channels\":%llu,\"published\":%llu,\"max_connections\":%u},",
                   (unsigned long long)st.subscribers, (unsigned long long)st.channels, (unsigned long long)st.published,
                   atomic_load(&s->sse_cap));
    }
    db_totals db;
    db_sum(s, &db);
    if (db.configured)
        buf_printf(b, "\"db\":{\"in_use\":%d,\"idle\":%d,\"connecting\":%d,\"waiting\":%d,\"cap\":%d,\"down_workers\":%d,"
                      "\"acquired\":%llu,\"timeouts\":%llu,\"errors\":%llu},",
                   db.in_use, db.idle, db.connecting, db.waiting, db.cap, db.down, db.acquired, db.timeouts, db.errors);
    if (h) {
        buf_printf(b, "\"ready\":%s,\"ready_reason\":", h->ready ? "true" : "false");
        json_quote(b, h->reason ? h->reason : "");
        buf_printf(b, ",\"dependencies\":{");
        static const char *const names[] = {"database", "redis"};
        int first = 1;
        for (int i = 0; i < 2; i++)
            if (h->configured & (1u << i)) {
                buf_printf(b, "%s\"%s\":{\"up\":%s,\"required\":%s}", first ? "" : ",", names[i],
                           h->up & (1u << i) ? "true" : "false", h->required & (1u << i) ? "true" : "false");
                first = 0;
            }
        buf_puts(b, "},");
    }
    rbus_status_json(s, b);
    rs_table *tables[256];
    int nt = route_tables(s, tables);
    routestats_status_json(m ? m->routes : NULL, tables, nt, 20, b);
    if (!m) { buf_puts(b, "\"errors\":[],\"snapshots\":[]}"); return; }
    pthread_mutex_lock(&m->lock);
    buf_puts(b, "\"errors\":[");
    for (unsigned i = 0; i < m->nerr; i++) {
        err_entry *e = &m->errs[(m->err_head + m->nerr_cap - 1 - i) % m->nerr_cap];
        buf_printf(b, "%s{\"time\":%.3f,\"status\":%d,\"route\":", i ? "," : "", e->time, e->status);
        json_quote(b, e->route);
        buf_puts(b, ",\"message\":");
        json_quote(b, e->msg);
        buf_puts(b, "}");
    }
    buf_puts(b, "],\"snapshots\":[");
    for (unsigned i = 0; i < m->nsnap; i++) {
        snapshot *sn = &m->snaps[(m->snap_head + m->nsnap_cap - m->nsnap + i) % m->nsnap_cap];
        buf_printf(b, "%s{\"time\":%.3f,\"requests\":%llu,\"errors_5xx\":%llu,\"connections\":%d,\"sse\":%d,"
                      "\"p50_ms\":%.3f,\"p95_ms\":%.3f,\"p99_ms\":%.3f,\"rss_mb\":%.1f,\"cpu_seconds\":%.2f,"
                      "\"rps\":%.2f,\"error_ratio\":%.5f,\"mem_ratio\":%.5f,\"cpu_ratio\":%.5f,\"mem_limit_mb\":%.1f,\"cpus\":%.3f",
                   i ? "," : "", sn->time, sn->requests, sn->errors5xx, sn->connections, sn->sse, sn->p50_ms,
                   sn->p95_ms, sn->p99_ms, sn->rss_mb, sn->cpu_s, sn->rps, sn->error_ratio, sn->mem_ratio,
                   sn->cpu_ratio, sn->mem_limit_mb, sn->cpus);
        if (sn->db)
            buf_printf(b, ",\"db_in_use\":%d,\"db_idle\":%d,\"db_waiting\":%d,\"db_cap\":%d", sn->db_in_use, sn->db_idle,
                       sn->db_waiting, sn->db_cap);
        buf_puts(b, "}");
    }
    buf_puts(b, "]}");
    pthread_mutex_unlock(&m->lock);
}
