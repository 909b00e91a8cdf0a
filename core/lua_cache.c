/* lua_cache.c: `sluice.cache` primitives (Redis or a bounded in-process LRU table with TTLs) and the
 * binding of app.publish (to ssebus.c). Values arrive already encoded by lua/sluice.lua (strings only here).
 * Runtime failures return nil, message; misuse raises. */
#include "lua_cache.h"

#include <lauxlib.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "clock.h"
#include "ctx.h"
#include "log.h"
#include "rbus.h"
#include "ssebus.h"

#define CACHE_TIMEOUT 0.5           /* s: a cache call that takes longer is a miss */

/* ------------------------------------------------------------------ in-process table */

typedef struct centry {
    struct centry *hnext, *prev, *next;     /* hash chain; LRU list (most recent at head) */
    uint64_t hash, expires_ms;               /* 0 = no expiry */
    char *val;
    size_t vlen, klen;
    char key[];
} centry;

typedef struct lcache {
    pthread_mutex_t mu;
    centry **b;
    size_t nb, n, max;
    centry lru;                             /* sentinel */
} lcache;

static uint64_t fnv(const char *s, size_t n)
{
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < n; i++) h = (h ^ (unsigned char)s[i]) * 1099511628211ull;
    return h;
}

static lcache *lcache_get(server *s)
{
    lcache *c = atomic_load(&s->cache);
    if (c) return c;
    c = calloc(1, sizeof *c);
    if (!c) return NULL;
    c->max = CACHE_LOCAL_MAX;
    c->nb = 16384;
    c->b = calloc(c->nb, sizeof *c->b);
    if (!c->b) { free(c); return NULL; }
    pthread_mutex_init(&c->mu, NULL);
    c->lru.next = c->lru.prev = &c->lru;
    lcache *expect = NULL;
    if (!atomic_compare_exchange_strong(&s->cache, &expect, c)) {   /* another worker was first */
        free(c->b);
        free(c);
        return expect;
    }
    return c;
}

static void lru_unlink(centry *e) { e->prev->next = e->next; e->next->prev = e->prev; }
static void lru_front(lcache *c, centry *e)
{
    e->next = c->lru.next;
    e->prev = &c->lru;
    c->lru.next->prev = e;
    c->lru.next = e;
}

static void entry_drop(lcache *c, centry *e)
{
    centry **pp = &c->b[e->hash & (c->nb - 1)];
    while (*pp != e) pp = &(*pp)->hnext;
    *pp = e->hnext;
    lru_unlink(e);
    c->n--;
    free(e->val);
    free(e);
}

/* Finds a live entry (an expired one is dropped on the way). Lock held. */
static centry *entry_find(lcache *c, const char *k, size_t kl, uint64_t now)
{
    uint64_t h = fnv(k, kl);
    for (centry *e = c->b[h & (c->nb - 1)]; e; e = e->hnext)
        if (e->hash == h && e->klen == kl && memcmp(e->key, k, kl) == 0) {
            if (e->expires_ms && e->expires_ms <= now) { entry_drop(c, e); return NULL; }
            return e;
        }
    return NULL;
}

/* Stores v under k (replacing), evicting the least recently used entry when full. Lock held. */
static int entry_put(lcache *c, const char *k, size_t kl, const char *v, size_t vl, uint64_t expires, uint64_t now)
{
    char *nv = malloc(vl + 1);
    if (!nv) return -1;
    memcpy(nv, v, vl);
    nv[vl] = 0;
    centry *e = entry_find(c, k, kl, now);
    if (!e) {
        if (c->n >= c->max) {
            centry *old = c->lru.prev;
            /* prefer an expired entry near the tail; else the least recently used one */
            for (int i = 0; i < 8 && old != &c->lru; i++, old = old->prev)
                if (old->expires_ms && old->expires_ms <= now) break;
            if (old == &c->lru) old = c->lru.prev;
            entry_drop(c, old);
        }
        if (!(e = calloc(1, sizeof *e + kl + 1))) { free(nv); return -1; }
        memcpy(e->key, k, kl);
        e->klen = kl;
        e->hash = fnv(k, kl);
        e->hnext = c->b[e->hash & (c->nb - 1)];
        c->b[e->hash & (c->nb - 1)] = e;
        c->n++;
    } else {
        lru_unlink(e);
        free(e->val);
    }
    e->val = nv;
    e->vlen = vl;
    e->expires_ms = expires;
    lru_front(c, e);
    return 0;
}

void lua_cache_server_free(server *s)
{
    lcache *c = atomic_exchange(&s->cache, NULL);
    if (!c) return;
    for (centry *e = c->lru.next, *n; e != &c->lru; e = n) { n = e->next; free(e->val); free(e); }
    free(c->b);
    pthread_mutex_destroy(&c->mu);
    free(c);
}

/* ------------------------------------------------------------------ Redis replies -> the parked task */

static void resume_err(task *t, const char *err)
{
    lua_pushnil(t->co);
    lua_pushstring(t->co, err);
    task_resume(t, 2);
}

static void get_cb(void *ud, const redisReply *r, const char *err)
{
    task *t = ud;
    if (!r || r->type == REDIS_REPLY_ERROR) {
        rbus_count(t->app->w->srv, RBC_CACHE_ERRORS);
        resume_err(t, err ? err : "redis error");
        return;
    }
    if (r->type == REDIS_REPLY_STRING) lua_pushlstring(t->co, r->str, r->len);
    else lua_pushnil(t->co);
    task_resume(t, 1);
}

static void ok_cb(void *ud, const redisReply *r, const char *err)
{
    task *t = ud;
    if (!r || r->type == REDIS_REPLY_ERROR) {
        rbus_count(t->app->w->srv, RBC_CACHE_ERRORS);
        lua_pushboolean(t->co, 0);
        lua_pushstring(t->co, err ? err : "redis error");
        task_resume(t, 2);
        return;
    }
    lua_pushboolean(t->co, 1);
    task_resume(t, 1);
}

static void num_cb(void *ud, const redisReply *r, const char *err)
{
    task *t = ud;
    if (!r || r->type == REDIS_REPLY_ERROR) {
        rbus_count(t->app->w->srv, RBC_CACHE_ERRORS);
        resume_err(t, err ? err : "redis error");
        return;
    }
    if (r->type == REDIS_REPLY_INTEGER) lua_pushnumber(t->co, (double)r->integer);
    else if (r->type == REDIS_REPLY_STRING) lua_pushnumber(t->co, strtod(r->str, NULL));
    else lua_pushnil(t->co);
    task_resume(t, 1);
}

/* t->cancel: the task is abandoned (lua_app.c): its command's answer is not delivered. */
static void cache_cancel(task *t)
{
    if (t->wait) rbus_cancel(t->wait);
    t->wait = NULL;
}

static int park_or_fail(lua_State *L, task *t, rbus_op *op)
{
    if (!op) {
        rbus_count(t->app->w->srv, RBC_CACHE_ERRORS);
        lua_pushnil(L);
        lua_pushstring(L, "redis unavailable");
        return 2;
    }
    t->wait = op;
    t->cancel = cache_cancel;
    return task_yield(L, t);
}

/* ------------------------------------------------------------------ primitives */

static appstate *app_of(lua_State *L) { return lua_touserdata(L, lua_upvalueindex(1)); }

static task *need_task(lua_State *L, appstate *a)
{
    task *t = a->w ? task_current(a, L) : NULL;
    if (!t) luaL_error(L, "app.cache with Redis: only inside a handler, timer or spec (not at load time)");
    return t;
}

static uint64_t now_ms(appstate *a) { return a->w ? worker_now_us(a->w) / 1000 : 0; }

static size_t rkey(appstate *a, const char *k, size_t kl, char *out, size_t cap)
{
    int n = snprintf(out, cap, "%sc:%.*s", rbus_prefix(a->w->srv), (int)kl, k);
    return n < 0 ? 0 : (size_t)n < cap ? (size_t)n : cap - 1;
}

static size_t check_key(lua_State *L, const char **k)
{
    size_t kl;
    *k = luaL_checklstring(L, 1, &kl);
    if (kl == 0 || kl > 512) luaL_argerror(L, 1, "key must be 1..512 bytes");
    return kl;
}

/* get(key) -> value | nil [, err] */
static int l_get(lua_State *L)
{
    appstate *a = app_of(L);
    const char *k;
    size_t kl = check_key(L, &k);
    if (a->w && a->w->rbus) {
        task *t = need_task(L, a);
        char key[600];
        const char *av[] = {"GET", key};
        size_t al[] = {3, rkey(a, k, kl, key, sizeof key)};
        return park_or_fail(L, t, rbus_command(a->w, 2, av, al, CACHE_TIMEOUT, get_cb, t));
    }
    lcache *c = a->w ? lcache_get(a->w->srv) : NULL;
    if (!c) { lua_pushnil(L); return 1; }
    pthread_mutex_lock(&c->mu);
    centry *e = entry_find(c, k, kl, now_ms(a));
    if (e) {
        lru_unlink(e);
        lru_front(c, e);
        lua_pushlstring(L, e->val, e->vlen);
    } else {
        lua_pushnil(L);
    }
    pthread_mutex_unlock(&c->mu);
    return 1;
}

/* set(key, value, ttl_seconds) -> true | false, err */
static int l_set(lua_State *L)
{
    appstate *a = app_of(L);
    const char *k;
    size_t kl = check_key(L, &k), vl;
    const char *v = luaL_checklstring(L, 2, &vl);
    double ttl = luaL_optnumber(L, 3, 0);
    if (ttl < 0) return luaL_argerror(L, 3, "ttl must be >= 0 seconds");
    if (a->w && a->w->rbus) {
        task *t = need_task(L, a);
        char key[600], px[32];
        const char *av[] = {"SET", key, v, "PX", px};
        size_t al[] = {3, rkey(a, k, kl, key, sizeof key), vl, 2, 0};
        al[4] = (size_t)snprintf(px, sizeof px, "%lld", (long long)(ttl * 1000 + 0.5));
        return park_or_fail(L, t, rbus_command(a->w, ttl > 0 ? 5 : 3, av, al, CACHE_TIMEOUT, ok_cb, t));
    }
    lcache *c = a->w ? lcache_get(a->w->srv) : NULL;
    if (!c) { lua_pushboolean(L, 0); lua_pushstring(L, "cache unavailable"); return 2; }
    uint64_t now = now_ms(a);
    pthread_mutex_lock(&c->mu);
    int rc = entry_put(c, k, kl, v, vl, ttl > 0 ? now + (uint64_t)(ttl * 1000 + 0.5) : 0, now);
    pthread_mutex_unlock(&c->mu);
    lua_pushboolean(L, rc == 0);
    if (rc) { lua_pushstring(L, "out of memory"); return 2; }
    return 1;
}

/* incr(key, by, ttl_seconds) -> new value | nil, err. The ttl applies when the key is created. */
static int l_incr(lua_State *L)
{
    appstate *a = app_of(L);
    const char *k;
    size_t kl = check_key(L, &k);
    double by = luaL_optnumber(L, 2, 1);
    double ttl = luaL_optnumber(L, 3, 0);
    if (ttl < 0) return luaL_argerror(L, 3, "ttl must be >= 0 seconds");
    char bys[40];
    if (by == (double)(long long)by && by > -9e15 && by < 9e15) snprintf(bys, sizeof bys, "%lld", (long long)by);
    else snprintf(bys, sizeof bys, "%.17g", by);
    if (a->w && a->w->rbus) {
        task *t = need_task(L, a);
        char key[600], px[32];
        snprintf(px, sizeof px, "%lld", (long long)(ttl * 1000 + 0.5));
        rkey(a, k, kl, key, sizeof key);
        const char *av[] = {key, bys, px};
        return park_or_fail(L, t, rbus_eval(a->w, RBUS_INCR, 1, 3, av, NULL, CACHE_TIMEOUT, num_cb, t));
    }
    lcache *c = a->w ? lcache_get(a->w->srv) : NULL;
    if (!c) { lua_pushnil(L); lua_pushstring(L, "cache unavailable"); return 2; }
    uint64_t now = now_ms(a);
    pthread_mutex_lock(&c->mu);
    centry *e = entry_find(c, k, kl, now);
    double v = 0;
    uint64_t exp = ttl > 0 ? now + (uint64_t)(ttl * 1000 + 0.5) : 0;
    if (e) {
        char *end;
        v = strtod(e->val, &end);
        if (end == e->val || *end) {
            pthread_mutex_unlock(&c->mu);
            lua_pushnil(L);
            lua_pushstring(L, "value is not a number");
            return 2;
        }
        exp = e->expires_ms;
    }
    v += by;
    char out[40];
    int n = v == (double)(long long)v && v > -9e15 && v < 9e15 ? snprintf(out, sizeof out, "%lld", (long long)v)
                                                                : snprintf(out, sizeof out, "%.17g", v);
    int rc = entry_put(c, k, kl, out, (size_t)n, exp, now);
    pthread_mutex_unlock(&c->mu);
    if (rc) { lua_pushnil(L); lua_pushstring(L, "out of memory"); return 2; }
    lua_pushnumber(L, v);
    return 1;
}

/* del(key) -> true | false, err */
static int l_del(lua_State *L)
{
    appstate *a = app_of(L);
    const char *k;
    size_t kl = check_key(L, &k);
    if (a->w && a->w->rbus) {
        task *t = need_task(L, a);
        char key[600];
        const char *av[] = {"DEL", key};
        size_t al[] = {3, rkey(a, k, kl, key, sizeof key)};
        return park_or_fail(L, t, rbus_command(a->w, 2, av, al, CACHE_TIMEOUT, ok_cb, t));
    }
    lcache *c = a->w ? lcache_get(a->w->srv) : NULL;
    if (c) {
        pthread_mutex_lock(&c->mu);
        centry *e = entry_find(c, k, kl, now_ms(a));
        if (e) entry_drop(c, e);
        pthread_mutex_unlock(&c->mu);
    }
    lua_pushboolean(L, 1);
    return 1;
}

/* backend() -> "redis" | "local" */
static int l_backend(lua_State *L)
{
    appstate *a = app_of(L);
    lua_pushstring(L, a->w && a->w->rbus ? "redis" : "local");
    return 1;
}

int luaopen_sluice_cache(lua_State *L)
{
    static const luaL_Reg fns[] = {
        {"get", l_get}, {"set", l_set}, {"incr", l_incr}, {"del", l_del}, {"backend", l_backend}, {NULL, NULL},
    };
    lua_newtable(L);
    lua_pushvalue(L, lua_upvalueindex(1));
    luaL_setfuncs(L, fns, 1);
    return 1;
}

/* ------------------------------------------------------------------ app.publish */

/* A PENDING publish resumes the parked task with (id) or (nil, message, code). */
static void pub_done(void *ud, int st, uint64_t id, const char *err)
{
    task *t = ud;
    if (st == SSEBUS_DONE) {
        lua_pushnumber(t->co, (double)id);
        task_resume(t, 1);
        return;
    }
    lua_pushnil(t->co);
    lua_pushstring(t->co, err ? err : "rejected");
    if (st == SSEBUS_UNAVAILABLE) lua_pushliteral(t->co, "unreachable");
    else lua_pushnil(t->co);
    task_resume(t, 3);
}

int lua_cache_publish(lua_State *L, appstate *a, const char *ch, size_t chl, const char *data, size_t dl,
                      const char *event, const char *id_override, int retry)
{
    task *t = task_current(a, L);
    ssebus_msg m = { ch, chl, event, data, dl, id_override, retry };
    uint64_t id;
    const char *err;
    switch (ssebus_publish(a->w, &m, t ? pub_done : NULL, t, &id, &err)) {
    case SSEBUS_DONE:
        lua_pushnumber(L, (double)id);
        return 1;
    case SSEBUS_PENDING:
        if (!t) {                   /* a coroutine of the script's own: cannot wait for the id */
            lua_pushboolean(L, 1);
            return 1;
        }
        return task_yield(L, t);    /* lua_yield's value (-1) must reach the VM unchanged */
    case SSEBUS_UNAVAILABLE:
        lua_pushnil(L);
        lua_pushstring(L, err);
        lua_pushliteral(L, "unreachable");
        return 3;
    default:
        lua_pushnil(L);
        lua_pushstring(L, err ? err : "rejected");
        return 2;
    }
}
