/* routestats.c: per-worker (route, method) slots with a latency phist and status-code counters; see routestats.h. */
#include "routestats.h"

#include "json.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define LOAD(p) __atomic_load_n((p), __ATOMIC_RELAXED)
#define STORE(p, v) __atomic_store_n((p), (v), __ATOMIC_RELAXED)

struct rs_registry {
    pthread_mutex_t lock;
    unsigned n;                         /* ids in use, RS_FIRST_USER.. after the built-ins */
    char *name[RS_ROUTES];
};

_Static_assert(sizeof(rs_slot) == 256, "a slot is four cache lines");

static const char *const method_names[RS_METHODS] = {"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "OTHER"};

static const double duration_le[] = {0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.2, 0.5, 1, 2.5, 5, 10, 30};
phist_bounds routestats_duration_bounds_;
static pthread_once_t bounds_once = PTHREAD_ONCE_INIT;
static void bounds_init(void)
{
    phist_bounds_init(&routestats_duration_bounds_, duration_le, (int)(sizeof duration_le / sizeof *duration_le));
}

const phist_bounds *routestats_bounds(void)
{
    pthread_once(&bounds_once, bounds_init);
    return &routestats_duration_bounds_;
}

/* ---------------------------------------------------------------- registry */

rs_registry *routestats_registry_new(void)
{
    rs_registry *r = calloc(1, sizeof *r);
    if (!r) return NULL;
    pthread_mutex_init(&r->lock, NULL);
    static const char *const builtin[RS_FIRST_USER] = {"", "(unmatched)", "(overflow)", "/health", "/ready",
                                                       "/metrics", "/_sluice/*", "(publish)"};
    for (int i = 0; i < RS_FIRST_USER; i++) r->name[i] = strdup(builtin[i]);
    r->n = RS_FIRST_USER;
    routestats_bounds();
    return r;
}

void routestats_registry_free(rs_registry *r)
{
    if (!r) return;
    for (unsigned i = 0; i < r->n; i++) free(r->name[i]);
    pthread_mutex_destroy(&r->lock);
    free(r);
}

uint16_t routestats_route_id(rs_registry *r, const char *pattern)
{
    if (!r) return RS_UNMATCHED;
    if (!pattern) return RS_UNMATCHED;
    pthread_mutex_lock(&r->lock);
    uint16_t id = RS_OVERFLOW;
    for (unsigned i = RS_FIRST_USER; i < r->n; i++)
        if (strcmp(r->name[i], pattern) == 0) { id = (uint16_t)i; goto out; }
    if (r->n < RS_ROUTES && (r->name[r->n] = strdup(pattern))) id = (uint16_t)r->n++;
out:
    pthread_mutex_unlock(&r->lock);
    return id;
}

/* ---------------------------------------------------------------- writer */

rs_table *routestats_table_new(void)
{
    routestats_bounds();
    return calloc(1, sizeof(rs_table));
}

void routestats_table_free(rs_table *t) { free(t); }

/* A new slot for (route, method). The last RS_METHODS slots are kept for the overflow route,
 * so it can always take a pair that finds the table full. */
unsigned routestats_slot_new(rs_table *t, unsigned route, unsigned method)
{
    if (route >= RS_ROUTES) route = RS_OVERFLOW;
    method &= RS_METHODS - 1;
    unsigned orig = route, n = t->nslots;
    if (route != RS_OVERFLOW && n >= RS_SLOTS - RS_METHODS) {
        route = RS_OVERFLOW;
        unsigned s = t->slot_of[route][method];
        if (s) { t->slot_of[orig][method] = (uint16_t)s; return s; }
    }
    t->key[n].route = (uint16_t)route;
    t->key[n].method = (uint8_t)method;
    __atomic_store_n(&t->nslots, n + 1, __ATOMIC_RELEASE);
    t->slot_of[route][method] = (uint16_t)(n + 1);
    t->slot_of[orig][method] = (uint16_t)(n + 1);
    return n + 1;
}

/* A status code other than the slot's first: find or add it, else count it under its class. */
void routestats_code(rs_slot *sl, int status)
{
    for (int i = 0; i < RS_CODES; i++) {
        unsigned c = sl->code[i];
        if (c == (unsigned)status) { STORE(&sl->n[i], LOAD(&sl->n[i]) + 1); return; }
        if (!c) {
            if (status < 100 || status > 599) break;
            STORE(&sl->n[i], 1);
            __atomic_store_n(&sl->code[i], (uint16_t)status, __ATOMIC_RELEASE);
            return;
        }
    }
    int k = status >= 100 && status <= 599 ? status / 100 : 0;
    STORE(&sl->cls[k], LOAD(&sl->cls[k]) + 1);
}

/* ---------------------------------------------------------------- readers */

void routestats_classes(rs_table *const *tables, int nt, uint64_t out[6])
{
    memset(out, 0, 6 * sizeof *out);
    for (int w = 0; w < nt; w++) {
        const rs_table *t = tables[w];
        if (!t) continue;
        unsigned n = __atomic_load_n(&t->nslots, __ATOMIC_ACQUIRE);
        for (unsigned i = 0; i < n; i++) {
            const rs_slot *sl = &t->slot[i];
            for (int k = 0; k < RS_CODES; k++) {
                unsigned c = __atomic_load_n(&sl->code[k], __ATOMIC_ACQUIRE);
                if (!c) break;
                out[c / 100] += LOAD(&sl->n[k]);
            }
            for (int k = 1; k < 6; k++) out[k] += LOAD(&sl->cls[k]);
        }
    }
}

typedef struct code_row { uint32_t key; uint64_t n; } code_row;       /* key: route<<16 | method<<12 | code */
typedef struct hist_row { uint32_t key; const phist *h; } hist_row;    /* key: route<<8 | method */

static int cmp_code(const void *a, const void *b)
{
    uint32_t x = ((const code_row *)a)->key, y = ((const code_row *)b)->key;
    return x < y ? -1 : x > y;
}

static int cmp_hist(const void *a, const void *b)
{
    uint32_t x = ((const hist_row *)a)->key, y = ((const hist_row *)b)->key;
    return x < y ? -1 : x > y;
}

/* Route names copied under the registry's lock: label values escaped for the text format
 * (esc) and raw, for JSON (raw); NAME_MAX bytes each, longer patterns truncated. */
#define NAME_MAX_ 192
typedef struct names_t { char esc[RS_ROUTES][NAME_MAX_], raw[RS_ROUTES][NAME_MAX_ / 2]; } names_t;

static names_t *copy_names(const rs_registry *r)
{
    names_t *nm = r ? calloc(1, sizeof *nm) : NULL;
    if (!nm) return NULL;
    rs_registry *rr = (rs_registry *)r;
    pthread_mutex_lock(&rr->lock);
    for (unsigned i = 0; i < rr->n; i++) {
        size_t o = 0;
        for (const char *s = rr->name[i]; *s && o + 3 < NAME_MAX_; s++) {
            if (*s == '"' || *s == '\\') nm->esc[i][o++] = '\\';
            if (*s == '\n') { nm->esc[i][o++] = '\\'; nm->esc[i][o++] = 'n'; continue; }
            nm->esc[i][o++] = *s;
        }
        snprintf(nm->raw[i], sizeof nm->raw[i], "%s", rr->name[i]);
    }
    pthread_mutex_unlock(&rr->lock);
    return nm;
}

/* Every (route, method, code) count and every (route, method) histogram over the tables. */
static size_t collect(rs_table *const *tables, int nt, code_row **codes, hist_row **hists, size_t *nh)
{
    size_t cap = 0;
    for (int w = 0; w < nt; w++)
        if (tables[w]) cap += __atomic_load_n(&tables[w]->nslots, __ATOMIC_ACQUIRE);
    *codes = calloc(cap * (RS_CODES + 6) + 1, sizeof **codes);
    *hists = calloc(cap + 1, sizeof **hists);
    size_t nc = 0;
    *nh = 0;
    if (!*codes || !*hists) return 0;
    for (int w = 0; w < nt; w++) {
        const rs_table *t = tables[w];
        if (!t) continue;
        unsigned n = __atomic_load_n(&t->nslots, __ATOMIC_ACQUIRE);
        for (unsigned i = 0; i < n && *nh < cap; i++) {
            const rs_slot *sl = &t->slot[i];
            unsigned route = t->key[i].route, method = t->key[i].method;
            uint32_t rm = (uint32_t)route << 16 | (uint32_t)method << 12;
            (*hists)[(*nh)++] = (hist_row){(uint32_t)route << 8 | method, &sl->h};
            for (int k = 0; k < RS_CODES; k++) {
                unsigned c = __atomic_load_n(&sl->code[k], __ATOMIC_ACQUIRE);
                if (!c) break;
                (*codes)[nc++] = (code_row){rm | c, LOAD(&sl->n[k])};
            }
            for (unsigned k = 0; k < 6; k++) {
                uint64_t v = LOAD(&sl->cls[k]);
                if (v) (*codes)[nc++] = (code_row){rm | k, v};
            }
        }
    }
    qsort(*codes, nc, sizeof **codes, cmp_code);
    qsort(*hists, *nh, sizeof **hists, cmp_hist);
    return nc;
}

void routestats_render(const rs_registry *r, rs_table *const *tables, int nt, buf *out)
{
    const phist_bounds *b = routestats_bounds();
    buf_puts(out, "# HELP sluice_http_requests_total Requests answered, by route pattern, method and status code.\n"
                  "# TYPE sluice_http_requests_total counter\n");
    names_t *nm = copy_names(r);
    code_row *codes;
    hist_row *hists;
    size_t nh, nc = collect(tables, nt, &codes, &hists, &nh);
    for (size_t i = 0; nm && i < nc;) {
        uint32_t key = codes[i].key;
        uint64_t n = 0;
        for (; i < nc && codes[i].key == key; i++) n += codes[i].n;
        unsigned route = key >> 16, method = (key >> 12) & 15, code = key & 0xfff;
        char cs[8];
        if (code >= 100) snprintf(cs, sizeof cs, "%u", code);
        else if (code) snprintf(cs, sizeof cs, "%uxx", code);
        else snprintf(cs, sizeof cs, "unknown");
        buf_printf(out, "sluice_http_requests_total{route=\"%s\",method=\"%s\",code=\"%s\"} %llu\n", nm->esc[route],
                   method_names[method], cs, (unsigned long long)n);
    }
    buf_puts(out, "# HELP sluice_http_request_duration_seconds Time from a request's first byte to its response, by route pattern and method.\n"
                  "# TYPE sluice_http_request_duration_seconds histogram\n");
    for (size_t i = 0; nm && i < nh;) {
        uint32_t key = hists[i].key;
        phist m = {{0}, 0};
        for (; i < nh && hists[i].key == key; i++) phist_merge(&m, hists[i].h);
        char labels[256];
        snprintf(labels, sizeof labels, "route=\"%s\",method=\"%s\"", nm->esc[key >> 8], method_names[key & 0xff]);
        phist_render(out, "sluice_http_request_duration_seconds", labels, &m, b);
    }
    free(codes);
    free(hists);
    free(nm);
}

typedef struct pair_sum { uint32_t key; uint64_t n, e5; double sum_s; } pair_sum;

static int cmp_busy(const void *a, const void *b)
{
    const pair_sum *x = a, *y = b;
    return x->n > y->n ? -1 : x->n < y->n;
}

void routestats_status_json(const rs_registry *r, rs_table *const *tables, int nt, int max, buf *out)
{
    names_t *nm = copy_names(r);
    code_row *codes;
    hist_row *hists;
    size_t nh, nc = collect(tables, nt, &codes, &hists, &nh);
    pair_sum *ps = calloc(nh + 1, sizeof *ps);
    size_t np = 0;
    for (size_t i = 0, j = 0; ps && i < nh;) {      /* both lists are sorted by (route, method) */
        uint32_t key = hists[i].key;
        pair_sum *p = &ps[np++];
        p->key = key;
        for (; i < nh && hists[i].key == key; i++) p->sum_s += (double)LOAD(&hists[i].h->sum_us) / 1e6;
        uint32_t ck = (key >> 8) << 16 | (key & 0xff) << 12;
        while (j < nc && (codes[j].key & ~0xfffu) < ck) j++;
        for (; j < nc && (codes[j].key & ~0xfffu) == ck; j++) {
            p->n += codes[j].n;
            unsigned code = codes[j].key & 0xfff;
            if (code / 100 == 5 || code == 5) p->e5 += codes[j].n;
        }
    }
    if (ps) qsort(ps, np, sizeof *ps, cmp_busy);
    buf_puts(out, "\"routes\":[");
    for (size_t i = 0; nm && i < np && (int)i < max; i++) {
        pair_sum *p = &ps[i];
        buf_printf(out, "%s{\"route\":", i ? "," : "");
        json_quote(out, nm->raw[p->key >> 8]);
        buf_printf(out, ",\"method\":\"%s\",\"requests\":%llu,\"errors_5xx\":%llu,\"mean_ms\":%.3f}",
                   method_names[p->key & 0xff], (unsigned long long)p->n, (unsigned long long)p->e5,
                   p->n ? p->sum_s * 1000.0 / (double)p->n : 0.0);
    }
    buf_puts(out, "],");
    free(ps);
    free(codes);
    free(hists);
    free(nm);
}
