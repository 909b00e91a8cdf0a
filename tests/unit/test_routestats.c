/* test_routestats.c: unit tests for core/routestats (labels by pattern, bounded slots and codes, merge over workers, a writer and a reader thread). */
#include "routestats.h"
#include "tap.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static char *render(rs_registry *r, rs_table **t, int n)
{
    buf b = {0};
    routestats_render(r, t, n, &b);
    buf_append(&b, "", 1);
    return b.data;
}

static double sample(const char *text, const char *series)
{
    const char *p = strstr(text, series);
    if (!p) return -1;
    return strtod(p + strlen(series), NULL);
}

static volatile int stop;
static void *reader(void *arg)
{
    void **a = arg;
    uint64_t last = 0;
    long bad = 0;
    while (!stop) {
        uint64_t cls[6];
        routestats_classes((rs_table **)&a[1], 1, cls);
        if (cls[2] < last) bad++;          /* counters only grow */
        last = cls[2];
    }
    return (void *)bad;
}

int main(void)
{
    rs_registry *reg = routestats_registry_new();
    uint16_t a = routestats_route_id(reg, "/items/:id");
    uint16_t b = routestats_route_id(reg, "/hello");
    is_int(routestats_route_id(reg, "/items/:id"), a, "the same pattern keeps its id");
    ok(a >= RS_FIRST_USER && b == a + 1, "user ids after the built-ins");
    is_int(routestats_route_id(NULL, "/x"), RS_UNMATCHED, "no registry: unmatched");

    rs_table *w0 = routestats_table_new(), *w1 = routestats_table_new();
    for (int i = 0; i < 10; i++) routestats_record(w0, a, 0, 200, 300);      /* GET, 0.3 ms */
    for (int i = 0; i < 5; i++) routestats_record(w1, a, 0, 200, 3000);      /* other worker, 3 ms */
    routestats_record(w1, a, 0, 404, 100);
    routestats_record(w0, b, 2, 500, 250000);                                 /* POST, 250 ms */
    routestats_record(w0, RS_UNMATCHED, 0, 404, 50);
    rs_table *both[2] = {w0, w1};
    char *t = render(reg, both, 2);
    is_int(sample(t, "sluice_http_requests_total{route=\"/items/:id\",method=\"GET\",code=\"200\"} "), 15, "200s merged over two workers");
    is_int(sample(t, "sluice_http_requests_total{route=\"/items/:id\",method=\"GET\",code=\"404\"} "), 1, "404 apart");
    is_int(sample(t, "sluice_http_requests_total{route=\"/hello\",method=\"POST\",code=\"500\"} "), 1, "POST /hello 500");
    is_int(sample(t, "sluice_http_requests_total{route=\"(unmatched)\",method=\"GET\",code=\"404\"} "), 1, "unmatched label");
    is_int(sample(t, "sluice_http_request_duration_seconds_bucket{route=\"/items/:id\",method=\"GET\",le=\"0.0005\"} "), 11, "le 0.5 ms: 10 + the 404");
    is_int(sample(t, "sluice_http_request_duration_seconds_bucket{route=\"/items/:id\",method=\"GET\",le=\"0.005\"} "), 16, "le 5 ms: all 16");
    is_int(sample(t, "sluice_http_request_duration_seconds_count{route=\"/items/:id\",method=\"GET\"} "), 16, "count");
    is_int(sample(t, "sluice_http_request_duration_seconds_bucket{route=\"/hello\",method=\"POST\",le=\"0.2\"} "), 0, "250 ms is above le 0.2");
    is_int(sample(t, "sluice_http_request_duration_seconds_bucket{route=\"/hello\",method=\"POST\",le=\"0.5\"} "), 1, "and below le 0.5");
    const char *f1 = strstr(t, "sluice_http_requests_total{"), *f2 = strstr(t, "# TYPE sluice_http_request_duration_seconds histogram");
    ok(f1 && f2 && f1 < f2 && !strstr(f2, "sluice_http_requests_total{"), "each family's samples together");
    free(t);
    uint64_t cls[6];
    routestats_classes(both, 2, cls);
    ok(cls[2] == 15 && cls[4] == 2 && cls[5] == 1 && cls[1] == 0 && cls[3] == 0, "classes 2xx %llu 4xx %llu 5xx %llu",
       (unsigned long long)cls[2], (unsigned long long)cls[4], (unsigned long long)cls[5]);

    /* more than RS_CODES distinct codes on one pair: the rest count under their class */
    rs_table *wc = routestats_table_new();
    for (int c = 0; c < RS_CODES + 3; c++) routestats_record(wc, a, 0, 400 + c, 10);
    t = render(reg, &wc, 1);
    is_int(sample(t, "code=\"4xx\"} "), 3, "codes past the first RS_CODES of a pair: code=\"4xx\"");
    char first[32], lastc[32], next[32];
    snprintf(first, sizeof first, "code=\"400\"} 1");
    snprintf(lastc, sizeof lastc, "code=\"%d\"} 1", 400 + RS_CODES - 1);
    snprintf(next, sizeof next, "code=\"%d\"", 400 + RS_CODES);
    ok(strstr(t, first) && strstr(t, lastc) && !strstr(t, next), "the first RS_CODES codes kept exactly");
    free(t);
    routestats_record(wc, a, 0, 42, 10);
    routestats_classes(&wc, 1, cls);
    is_int(cls[4], RS_CODES + 3, "an invalid status is not counted in a class");

    /* route label cardinality: the registry is bounded, the rest is (overflow) */
    char pat[64];
    uint16_t last = 0;
    for (int i = 0; i < RS_ROUTES + 20; i++) {
        snprintf(pat, sizeof pat, "/r%d", i);
        last = routestats_route_id(reg, pat);
    }
    is_int(last, RS_OVERFLOW, "past RS_ROUTES patterns: the overflow id");

    /* slot cardinality: every (route, method) pair past the table's room counts under (overflow) */
    rs_table *ws = routestats_table_new();
    for (int r = RS_FIRST_USER; r < RS_ROUTES; r++)
        for (int m = 0; m < 2; m++) routestats_record(ws, (unsigned)r, (unsigned)m, 200, 10);
    t = render(reg, &ws, 1);
    unsigned long long total = 0, over = 0;
    for (char *p = t; (p = strstr(p, "sluice_http_requests_total{")); p++) {
        unsigned long long v = strtoull(strchr(p, '}') + 2, NULL, 10);
        total += v;
        if (!strncmp(p, "sluice_http_requests_total{route=\"(overflow)\"", 45)) over += v;
    }
    unsigned long long pairs = (unsigned long long)(RS_ROUTES - RS_FIRST_USER) * 2;
    is_int(total, pairs, "no request lost when the slots run out");
    is_int(over, pairs - (RS_SLOTS - RS_METHODS), "pairs past the slots count under (overflow)");
    free(t);

    /* the label is escaped */
    rs_registry *r2 = routestats_registry_new();
    uint16_t qq = routestats_route_id(r2, "/a\"b\\c");
    rs_table *wq = routestats_table_new();
    routestats_record(wq, qq, 0, 200, 1);
    t = render(r2, &wq, 1);
    ok(strstr(t, "route=\"/a\\\"b\\\\c\"") != NULL, "quotes and backslashes escaped in the route label");
    free(t);
    buf js = {0};
    routestats_status_json(r2, &wq, 1, 20, &js);
    buf_append(&js, "", 1);
    ok(strstr(js.data, "\"route\":\"/a\\\"b\\\\c\",\"method\":\"GET\",\"requests\":1") != NULL, "status JSON: %s", js.data);
    buf_free(&js);

    /* one writer, one reader thread */
    rs_table *wt = routestats_table_new();
    void *arg[2] = {reg, wt};
    pthread_t th;
    pthread_create(&th, NULL, reader, arg);
    for (int i = 0; i < 2000000; i++) routestats_record(wt, a + (unsigned)(i & 3), (unsigned)(i & 1), 200, (uint64_t)(i & 1023));
    stop = 1;
    void *bad;
    pthread_join(th, &bad);
    is_int((long)bad, 0, "a reader never sees a counter go back");
    routestats_classes(&wt, 1, cls);
    is_int(cls[2], 2000000, "every request counted");

    routestats_table_free(w0);
    routestats_table_free(w1);
    routestats_table_free(wc);
    routestats_table_free(ws);
    routestats_table_free(wq);
    routestats_table_free(wt);
    routestats_registry_free(reg);
    routestats_registry_free(r2);
    return tap_done();
}
