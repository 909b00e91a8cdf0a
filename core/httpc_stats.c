/* httpc_stats.c: what the httpc module counts and says: error kinds and messages, per-host
 * status classes, the latency histogram, and their Prometheus text (read from any thread). */
#include <stdio.h>
#include <string.h>

#include "httpc_int.h"

static const char *const err_names[HTTPC_E_COUNT] = {
    "ok", "dns", "connect", "timeout", "tls", "too_large", "redirects", "protocol", "queue_timeout", "cancelled", "proxy", "other",
};

const char *httpc_err_name(enum httpc_err e) { return e < HTTPC_E_COUNT ? err_names[e] : "other"; }
const char *httpc_req_host(const httpc_req *r) { return r->host; }

int httpc_host_index(httpc *h, const char *host)
{
    int n = atomic_load_explicit(&h->nhosts, memory_order_relaxed);
    for (int i = 0; i < n; i++)
        if (strcmp(h->hosts[i].name, host) == 0) return i;
    if (n >= HTTPC_MAX_HOSTS) return -1;
    snprintf(h->hosts[n].name, sizeof h->hosts[n].name, "%s", host);
    atomic_store_explicit(&h->nhosts, n + 1, memory_order_release);   /* name before count */
    return n;
}

void httpc_count_response(httpc *h, const httpc_req *r, int status)
{
    int cls = status / 100;
    if (cls < 1 || cls > 5) return;
    atomic_ullong *c = r->host_idx >= 0 ? &h->hosts[r->host_idx].by_class[cls] : &h->other_by_class[cls];
    atomic_fetch_add_explicit(c, 1, memory_order_relaxed);
}

enum httpc_err httpc_classify(httpc_req *r, CURLcode rc)
{
    if (r->via_proxy) {               /* curl talks to the proxy: a failure to reach it is the proxy's */
        long cc = 0;
        switch (rc) {
        case CURLE_COULDNT_CONNECT:
        case CURLE_COULDNT_RESOLVE_PROXY:
        case CURLE_PROXY:
            return HTTPC_E_PROXY;
        case CURLE_RECV_ERROR:         /* "CONNECT tunnel failed, response 403" */
            curl_easy_getinfo(r->easy, CURLINFO_HTTP_CONNECTCODE, &cc);
            if (cc >= 300) { r->proxy_status = (int)cc; return HTTPC_E_PROXY; }
            break;
        default:
            break;
        }
    }
    switch (rc) {
    case CURLE_OK: return HTTPC_OK;
    case CURLE_COULDNT_RESOLVE_HOST:
    case CURLE_COULDNT_RESOLVE_PROXY: return HTTPC_E_DNS;
    case CURLE_COULDNT_CONNECT: return HTTPC_E_CONNECT;
    case CURLE_OPERATION_TIMEDOUT: return HTTPC_E_TIMEOUT;
    case CURLE_PEER_FAILED_VERIFICATION:
    case CURLE_SSL_CONNECT_ERROR:
    case CURLE_SSL_CERTPROBLEM:
    case CURLE_SSL_CIPHER:
    case CURLE_SSL_CACERT_BADFILE:
    case CURLE_SSL_ISSUER_ERROR:
    case CURLE_SSL_PINNEDPUBKEYNOTMATCH:
    case CURLE_SSL_CRL_BADFILE:
    case CURLE_SSL_ENGINE_NOTFOUND:
    case CURLE_SSL_ENGINE_SETFAILED:
    case CURLE_SSL_ENGINE_INITFAILED:
    case CURLE_SSL_INVALIDCERTSTATUS:
    case CURLE_USE_SSL_FAILED: return HTTPC_E_TLS;
    case CURLE_FILESIZE_EXCEEDED: return HTTPC_E_TOO_LARGE;
    case CURLE_WRITE_ERROR: return r->too_big ? HTTPC_E_TOO_LARGE : HTTPC_E_OTHER;
    case CURLE_TOO_MANY_REDIRECTS: return HTTPC_E_REDIRECTS;
    case CURLE_GOT_NOTHING:
    case CURLE_RECV_ERROR:
    case CURLE_SEND_ERROR:
    case CURLE_PARTIAL_FILE:
    case CURLE_HTTP2:
    case CURLE_HTTP2_STREAM:
    case CURLE_WEIRD_SERVER_REPLY:
    case CURLE_BAD_CONTENT_ENCODING:
    case CURLE_UNSUPPORTED_PROTOCOL:
    case CURLE_HTTP_RETURNED_ERROR: return HTTPC_E_PROTOCOL;
    default: return HTTPC_E_OTHER;
    }
}

/* "host: reason (curl's detail)" */
void httpc_error_text(const httpc_req *r, enum httpc_err e, char *out, size_t n)
{
    const char *detail = r->errbuf[0] ? r->errbuf : e == HTTPC_E_QUEUE_TIMEOUT || e == HTTPC_E_CANCELLED ? "" : curl_easy_strerror(r->rc);
    char reason[320];
    switch (e) {
    case HTTPC_E_DNS: snprintf(reason, sizeof reason, "could not resolve the host name"); break;
    case HTTPC_E_CONNECT: snprintf(reason, sizeof reason, "could not connect (refused or unreachable)"); break;
    case HTTPC_E_TIMEOUT: {
        curl_off_t ct = 0;
        curl_easy_getinfo(r->easy, CURLINFO_CONNECT_TIME_T, &ct);
        if (ct == 0 && r->connect_timeout > 0) snprintf(reason, sizeof reason, "connect timed out (connect_timeout %g s)", r->connect_timeout);
        else snprintf(reason, sizeof reason, "timed out (timeout %g s)", r->timeout);
        break;
    }
    case HTTPC_E_TLS:
        snprintf(reason, sizeof reason, "%s", r->rc == CURLE_PEER_FAILED_VERIFICATION ? "TLS certificate verification failed" : "TLS failed");
        break;
    case HTTPC_E_TOO_LARGE: snprintf(reason, sizeof reason, "response body over max_body (%zu bytes)", r->max_body); detail = ""; break;
    case HTTPC_E_REDIRECTS: snprintf(reason, sizeof reason, "too many redirects (max_redirects %d)", r->max_redirects); break;
    case HTTPC_E_PROTOCOL: snprintf(reason, sizeof reason, "bad or incomplete response"); break;
    case HTTPC_E_QUEUE_TIMEOUT: snprintf(reason, sizeof reason, "no free slot within queue_timeout (http_client.max_concurrent requests in flight)"); break;
    case HTTPC_E_CANCELLED: snprintf(reason, sizeof reason, "cancelled"); break;
    case HTTPC_E_PROXY:
        if (r->proxy_status == 407 || r->proxy_status == 401) {
            snprintf(reason, sizeof reason, "the proxy %s wants credentials or refused them (407)", r->proxy_name);
            detail = "";
        } else if (r->proxy_status) {
            snprintf(reason, sizeof reason, "the proxy %s refused the tunnel (CONNECT answered %d)", r->proxy_name, r->proxy_status);
        } else if (r->rc == CURLE_COULDNT_RESOLVE_PROXY) {
            snprintf(reason, sizeof reason, "could not resolve the proxy's host name (%s)", r->proxy_name);
        } else {
            snprintf(reason, sizeof reason, "could not connect to the proxy %s (refused or unreachable)", r->proxy_name);
        }
        break;
    default: snprintf(reason, sizeof reason, "request failed"); break;
    }
    if (detail && *detail) snprintf(out, n, "%s: %s (%s)", r->host, reason, detail);
    else snprintf(out, n, "%s: %s", r->host, reason);
}

/* ---------------------------------------------------------------- metrics */

static void put_label(buf *out, const char *s)
{
    for (; *s; s++) {
        if (*s == '"' || *s == '\\') buf_append(out, "\\", 1);
        if (*s == '\n') { buf_puts(out, "\\n"); continue; }
        buf_append(out, s, 1);
    }
}

void httpc_metrics(httpc *const *hs, int n, buf *out)
{
    typedef struct { const char *name; unsigned long long c[6]; } mh;
    mh merged[HTTPC_MAX_HOSTS + 1];
    int nm = 0;
    unsigned long long other[6] = {0}, errs[HTTPC_E_COUNT] = {0};
    long long inflight = 0, queued = 0;
    hist lat;
    hist_init(&lat);
    for (int w = 0; w < n; w++) {
        httpc *h = hs[w];
        if (!h) continue;
        int nh = atomic_load_explicit(&h->nhosts, memory_order_acquire);
        for (int i = 0; i < nh; i++) {
            int k = 0;
            while (k < nm && strcmp(merged[k].name, h->hosts[i].name) != 0) k++;
            unsigned long long *dst;
            if (k == nm && nm < HTTPC_MAX_HOSTS) { merged[nm].name = h->hosts[i].name; memset(merged[nm].c, 0, sizeof merged[nm].c); nm++; }
            dst = k < nm ? merged[k].c : other;
            for (int c = 1; c <= 5; c++) dst[c] += atomic_load_explicit(&h->hosts[i].by_class[c], memory_order_relaxed);
        }
        for (int c = 1; c <= 5; c++) other[c] += atomic_load_explicit(&h->other_by_class[c], memory_order_relaxed);
        for (int e = 1; e < HTTPC_E_COUNT; e++) errs[e] += atomic_load_explicit(&h->errors[e], memory_order_relaxed);
        inflight += atomic_load_explicit(&h->in_flight, memory_order_relaxed);
        queued += atomic_load_explicit(&h->queued, memory_order_relaxed);
        hist_merge(&lat, &h->latency);
    }
    buf_puts(out, "# HELP sluice_http_client_requests_total Outbound requests answered, by host and status class.\n"
                  "# TYPE sluice_http_client_requests_total counter\n");
    for (int k = 0; k <= nm; k++) {
        const char *name = k < nm ? merged[k].name : "other";
        unsigned long long *c = k < nm ? merged[k].c : other;
        if (k == nm && !(other[1] | other[2] | other[3] | other[4] | other[5])) break;
        for (int cls = 1; cls <= 5; cls++) {
            if (!c[cls]) continue;
            buf_puts(out, "sluice_http_client_requests_total{host=\"");
            put_label(out, name);
            buf_printf(out, "\",code=\"%dxx\"} %llu\n", cls, c[cls]);
        }
    }
    buf_puts(out, "# HELP sluice_http_client_errors_total Outbound requests that got no response, by kind.\n"
                  "# TYPE sluice_http_client_errors_total counter\n");
    for (int e = 1; e < HTTPC_E_COUNT; e++)
        buf_printf(out, "sluice_http_client_errors_total{kind=\"%s\"} %llu\n", err_names[e], errs[e]);
    buf_printf(out, "# HELP sluice_http_client_in_flight Outbound requests handed to curl.\n"
                    "# TYPE sluice_http_client_in_flight gauge\nsluice_http_client_in_flight %lld\n", inflight);
    buf_printf(out, "# HELP sluice_http_client_queued Outbound requests waiting for a slot (http_client.max_concurrent).\n"
                    "# TYPE sluice_http_client_queued gauge\nsluice_http_client_queued %lld\n", queued);
    static const double le[] = {0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30};
    buf_puts(out, "# HELP sluice_http_client_request_duration_seconds Outbound request time on the wire, answered requests.\n"
                  "# TYPE sluice_http_client_request_duration_seconds histogram\n");
    for (size_t i = 0; i < sizeof le / sizeof *le; i++) {
        uint64_t top = hist_bucket_top((uint64_t)(le[i] * 1e6));
        buf_printf(out, "sluice_http_client_request_duration_seconds_bucket{le=\"%g\"} %llu\n", (double)top / 1e6,
                   (unsigned long long)hist_count_le(&lat, top));
    }
    buf_printf(out, "sluice_http_client_request_duration_seconds_bucket{le=\"+Inf\"} %llu\n", (unsigned long long)lat.count);
    buf_printf(out, "sluice_http_client_request_duration_seconds_sum %.6f\n", (double)lat.sum / 1e6);
    buf_printf(out, "sluice_http_client_request_duration_seconds_count %llu\n", (unsigned long long)lat.count);
}
