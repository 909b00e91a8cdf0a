/* pgstmt.c: per-connection LRU of named prepared statements and the pool's run-time estimates (see pgstmt.h). */
#include "pgstmt.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CADD(field) __atomic_store_n(&(field), (field) + 1, __ATOMIC_RELAXED)

enum { ST_FREE, ST_PENDING, ST_READY, ST_STALE };

typedef struct entry {
    char *sql;
    size_t len;
    uint64_t hash;
    uint32_t id;
    int state;
    int hnext;                /* hash chain, or the free list while ST_FREE */
    int lprev, lnext;         /* LRU list, most recently used first */
} entry;

struct pgstmt {
    int cap, used, free_head, lru_head, lru_tail;
    uint32_t next_id, tag;
    unsigned mask;            /* buckets - 1 */
    int *bucket;
    entry *e;
    pgstmt_counters *cnt;
    pgstmt_counters none;     /* counted here when the caller gave no counters */
};

uint64_t pgstmt_hash(const char *sql)
{
    uint64_t h = 1469598103934665603ULL;
    for (const unsigned char *p = (const unsigned char *)sql; *p; p++) h = (h ^ *p) * 1099511628211ULL;
    return h;
}

const char *pgstmt_name(const pgstmt *s, uint32_t id, char *buf, size_t n)
{
    snprintf(buf, n, "sluice_%08x_%u", s->tag, id);
    return buf;
}

pgstmt *pgstmt_new(int cap, pgstmt_counters *cnt, uint32_t tag)
{
    if (cap < 1) return NULL;
    pgstmt *s = calloc(1, sizeof *s);
    if (!s) return NULL;
    unsigned nb = 4;
    while (nb < (unsigned)cap * 2) nb <<= 1;
    s->bucket = malloc(nb * sizeof *s->bucket);
    s->e = calloc((size_t)cap, sizeof *s->e);
    if (!s->bucket || !s->e) {
        free(s->bucket);
        free(s->e);
        free(s);
        return NULL;
    }
    for (unsigned i = 0; i < nb; i++) s->bucket[i] = -1;
    s->mask = nb - 1;
    s->cap = cap;
    s->cnt = cnt ? cnt : &s->none;
    s->next_id = 1;
    s->tag = tag;
    s->lru_head = s->lru_tail = -1;
    s->free_head = -1;
    for (int i = cap - 1; i >= 0; i--) {
        s->e[i].hnext = s->free_head;
        s->free_head = i;
    }
    return s;
}

void pgstmt_free(pgstmt *s)
{
    if (!s) return;
    for (int i = 0; i < s->cap; i++) free(s->e[i].sql);
    free(s->e);
    free(s->bucket);
    free(s);
}

static void lru_unlink(pgstmt *s, int i)
{
    entry *e = &s->e[i];
    if (e->lprev >= 0) s->e[e->lprev].lnext = e->lnext; else s->lru_head = e->lnext;
    if (e->lnext >= 0) s->e[e->lnext].lprev = e->lprev; else s->lru_tail = e->lprev;
    e->lprev = e->lnext = -1;
}

static void lru_front(pgstmt *s, int i)
{
    entry *e = &s->e[i];
    e->lprev = -1;
    e->lnext = s->lru_head;
    if (s->lru_head >= 0) s->e[s->lru_head].lprev = i;
    s->lru_head = i;
    if (s->lru_tail < 0) s->lru_tail = i;
}

static int find(const pgstmt *s, const char *sql, uint64_t hash)
{
    for (int i = s->bucket[hash & s->mask]; i >= 0; i = s->e[i].hnext) {
        const entry *e = &s->e[i];
        if (e->hash == hash && strcmp(e->sql, sql) == 0) return i;
    }
    return -1;
}

/* Take entry i out of the hash and the LRU and put it on the free list. */
static void forget(pgstmt *s, int i)
{
    entry *e = &s->e[i];
    int *pp = &s->bucket[e->hash & s->mask];
    while (*pp != i) pp = &s->e[*pp].hnext;
    *pp = e->hnext;
    lru_unlink(s, i);
    free(e->sql);
    e->sql = NULL;
    e->state = ST_FREE;
    e->id = 0;
    e->hnext = s->free_head;
    s->free_head = i;
    s->used--;
}

void pgstmt_plan(pgstmt *s, const char *sql, uint64_t hash, int may_close, int admit, pgstmt_use *out)
{
    out->id = 0;
    out->ref = -1;
    out->parse = 0;
    out->close_id = 0;
    int i = find(s, sql, hash);
    if (i >= 0 && s->e[i].state == ST_PENDING) {
        /* its Parse is still in flight and may fail: an Execute behind it would then get "does not
         * exist" instead of the Parse's error, so this one runs unnamed */
        CADD(s->cnt->misses);
        return;
    }
    if (i >= 0 && s->e[i].state == ST_READY) {
        CADD(s->cnt->hits);
        if (s->lru_head != i) { lru_unlink(s, i); lru_front(s, i); }
        out->id = s->e[i].id;
        out->ref = i;
        return;
    }
    CADD(s->cnt->misses);
    if (i >= 0) {                       /* stale: close the old copy, parse it again under a new name */
        if (!may_close) return;         /* inside a transaction: run it unnamed this time */
        out->close_id = s->e[i].id;
        s->e[i].id = s->next_id++;
        s->e[i].state = ST_PENDING;
        if (s->lru_head != i) { lru_unlink(s, i); lru_front(s, i); }
        out->id = s->e[i].id;
        out->ref = i;
        out->parse = 1;
        return;
    }
    char *copy = NULL;
    size_t len = strlen(sql);
    if (!admit) return;
    if (s->free_head < 0 && !may_close) return; /* full, and a DEALLOCATE could abort the transaction */
    if (!(copy = malloc(len + 1))) return;
    memcpy(copy, sql, len + 1);
    if (s->free_head < 0) {             /* full: evict the least recently used */
        int t = s->lru_tail;
        out->close_id = s->e[t].id;
        CADD(s->cnt->evictions);
        forget(s, t);
    }
    i = s->free_head;
    entry *e = &s->e[i];
    s->free_head = e->hnext;
    s->used++;
    e->sql = copy;
    e->len = len;
    e->hash = hash;
    e->id = s->next_id++;
    e->state = ST_PENDING;
    e->hnext = s->bucket[hash & s->mask];
    s->bucket[hash & s->mask] = i;
    lru_front(s, i);
    out->id = e->id;
    out->ref = i;
    out->parse = 1;
}

static int owns(const pgstmt *s, const pgstmt_use *u)
{
    return u->id && u->ref >= 0 && u->ref < s->cap && s->e[u->ref].state != ST_FREE && s->e[u->ref].id == u->id;
}

void pgstmt_parsed(pgstmt *s, const pgstmt_use *u, int ok)
{
    if (!owns(s, u) || s->e[u->ref].state != ST_PENDING) return;
    if (ok) s->e[u->ref].state = ST_READY;
    else forget(s, u->ref);
}

void pgstmt_invalid(pgstmt *s, const pgstmt_use *u, int gone)
{
    if (!owns(s, u)) return;
    CADD(s->cnt->invalidated);
    if (gone) forget(s, u->ref);
    else s->e[u->ref].state = ST_STALE;
}

int pgstmt_is_ready(const pgstmt *s, const pgstmt_use *u) { return s && owns(s, u) && s->e[u->ref].state == ST_READY; }

int pgstmt_count(const pgstmt *s) { return s ? s->used : 0; }

void pgstmt_est_add(pgstmt_est *t, uint64_t hash, double secs)
{
    if (!hash) hash = 1;                /* 0 marks an empty slot */
    if (!(secs >= 0)) secs = 0;
    pgstmt_est_slot *e = &t->e[hash % PGSTMT_EST_SLOTS];
    if (e->hash != hash) {
        e->hash = hash;
        e->avg = (float)secs;
        e->dev = (float)(secs / 2);
        return;
    }
    e->dev = (float)(0.75 * e->dev + 0.25 * fabs(secs - e->avg));
    e->avg = (float)(0.875 * e->avg + 0.125 * secs);
}

double pgstmt_est_get(const pgstmt_est *t, uint64_t hash)
{
    if (!hash) hash = 1;
    const pgstmt_est_slot *e = &t->e[hash % PGSTMT_EST_SLOTS];
    return e->hash == hash ? (double)e->avg + 4.0 * e->dev : -1;
}
