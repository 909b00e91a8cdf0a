/* routestats.h: requests and latency by route pattern, method and status code (bounded labels), per worker, merged when read. */
#ifndef SLUICE_ROUTESTATS_H
#define SLUICE_ROUTESTATS_H

#include <stdint.h>

#include "buf.h"
#include "phist.h"

/*
 * Labels are bounded by construction, whatever the traffic:
 * - route: the *pattern* a request matched ("/items/:id"), never its raw path. Patterns get a
 *   process-wide id the first time a route answers (routestats_route_id, under a mutex, once
 *   per route per Lua state) and keep it across reloads. Past RS_ROUTES patterns, new ones
 *   share the id RS_OVERFLOW, printed route="(overflow)". Requests no route matched (404, 405,
 *   CORS preflights) are route="(unmatched)"; built-in endpoints have their own ids.
 * - method: GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS or OTHER (RS_METHODS values).
 * - code: the status code; a (route, method) pair keeps RS_CODES distinct codes, later new
 *   ones are counted under their class ("4xx").
 * Each worker has RS_SLOTS (route, method) slots, allocated on first use from a fixed array
 * (no malloc after start); when they run out, new pairs count under (overflow, method).
 *
 * Threads: a worker's table has one writer (its thread); readers on any thread merge the
 * workers' tables without locks (relaxed atomics; a slot is published with a release store
 * of its index after its labels are written).
 */

#define RS_ROUTES 256
#define RS_METHODS 8
#define RS_SLOTS 256
#define RS_CODES 6

enum {
    RS_NONE = 0,       /* not yet assigned (route_target.mid before its first request) */
    RS_UNMATCHED,
    RS_OVERFLOW,
    RS_HEALTH,
    RS_READY,
    RS_METRICS,
    RS_ADMIN,          /* the admin area /_sluice/... */
    RS_PUBLISH,        /* the HTTP publish endpoint (sse.publish_path) */
    RS_FIRST_USER
};

typedef struct rs_registry rs_registry;   /* opaque: process-wide pattern names */
typedef struct rs_table rs_table;         /* one worker's counters: the fields are private */

/* Private to routestats (public only so that recording inlines into metrics_observe). A slot is
 * 256 bytes: its phist, then its codes and their counts. */
typedef struct rs_slot {
    phist h;                            /* 144 bytes */
    uint16_t code[RS_CODES];            /* status codes seen; 0 = free (published with release) */
    uint16_t pad_[8 - RS_CODES];
    uint64_t n[RS_CODES];
    uint64_t cls[6];                    /* codes past RS_CODES by class; cls[0]: not a valid status */
} rs_slot;

struct rs_table {
    uint16_t slot_of[RS_ROUTES][RS_METHODS]; /* 1-based index into slot; 0 = none yet (writer only) */
    uint32_t nslots;                          /* slots in use (release store after filling one) */
    struct { uint16_t route; uint8_t method; } key[RS_SLOTS];
    rs_slot slot[RS_SLOTS] __attribute__((aligned(64)));
};

extern phist_bounds routestats_duration_bounds_;   /* set once by routestats_bounds() */
/* The slow paths of routestats_record: a new (route, method) pair; a code not in code[0]. */
unsigned routestats_slot_new(rs_table *t, unsigned route, unsigned method);
void routestats_code(rs_slot *sl, int status);

/* The process-wide registry (built-in labels pre-registered); NULL on out-of-memory. */
rs_registry *routestats_registry_new(void);
void routestats_registry_free(rs_registry *r);
/* The id of a route pattern (the same id for the same pattern forever, RS_OVERFLOW when full).
 * Takes a mutex: call once per route target, not per request. NULL registry: RS_UNMATCHED. */
uint16_t routestats_route_id(rs_registry *r, const char *pattern);

/* A worker's table (about 60 KB); NULL on out-of-memory. */
rs_table *routestats_table_new(void);
void routestats_table_free(rs_table *t);
/* The request duration buckets (seconds): 0.0005 ... 30, shared by every series. */
const phist_bounds *routestats_bounds(void);

/* Records one request (writer thread only): route id < RS_ROUTES, method index 0..RS_METHODS-1
 * (RM_* order, RS_METHODS-1 = other), status code, duration in us. No allocation, no lock;
 * inline, with one compare for the slot and one for the usual status code. */
static inline void routestats_record(rs_table *t, unsigned route, unsigned method, int status, uint64_t us)
{
    unsigned s = t->slot_of[route][method];
    if (__builtin_expect(!s, 0)) s = routestats_slot_new(t, route, method);
    rs_slot *sl = &t->slot[s - 1];
    phist_record(&sl->h, &routestats_duration_bounds_, us);
    if (__builtin_expect(sl->code[0] == (unsigned)status, 1))
        __atomic_store_n(&sl->n[0], __atomic_load_n(&sl->n[0], __ATOMIC_RELAXED) + 1, __ATOMIC_RELAXED);
    else
        routestats_code(sl, status);
}

/* Responses by class summed over n tables: out[1..5] = 1xx..5xx (out[0] unused). */
void routestats_classes(rs_table *const *tables, int n, uint64_t out[6]);

/* Appends sluice_http_requests_total{route,method,code} and
 * sluice_http_request_duration_seconds{route,method} (HELP, TYPE, samples) over n tables. */
void routestats_render(const rs_registry *r, rs_table *const *tables, int n, buf *out);

/* Per-route summary for the status JSON: `"routes":[{"route":..,"method":..,"requests":..,
 * "errors_5xx":..,"mean_ms":..},...],` for the busiest `max` pairs (with the trailing comma). */
void routestats_status_json(const rs_registry *r, rs_table *const *tables, int n, int max, buf *out);

#endif
