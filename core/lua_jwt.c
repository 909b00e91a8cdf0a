/* lua_jwt.c: the verified-token cache behind app.jwt.options (lua/sluice_jwt.lua), so that a
 * request presenting a token verified before costs a hash, a memcmp and a clock comparison in C
 * instead of Lua table work and a string made from the Authorization header.
 *
 * An options object (jwt_options) is a userdata: the read-only verify options (a Lua table in
 * its environment, read through __index) and a bounded set-associative cache of the tokens (or
 * whole Authorization header values) verified under those options. Each cache entry holds a
 * malloc'd copy of the token bytes, the time window in which the claims pass (exp/nbf/iat with
 * the leeway, worked out in Lua when the entry is made), and registry references to the claims
 * and header tables returned on a hit: the same tables every time (released when the entry is
 * replaced, or by the object's __gc).
 *
 * An entry counts only for the key set it was verified with. A "binding" pins a key set (and the
 * parsed key list it was verified with) by strong references, so the pointers compared on each
 * hit cannot be reused by another object; replacing a binding (another key set, a JWKS whose key
 * list changed) bumps its generation, which drops its entries. Entries are only ever made after a
 * full verification (signature, JSON, claims), and a hit compares every byte of the token.
 *
 * Everything here belongs to one Lua state (one worker); nothing is shared between threads. */
#include <lauxlib.h>
#include <lua.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "lua_jwt.h"

#include "conn.h"
#include "http.h"

#define OPTS_MT "sluice.jwt.options"
#define WAYS 2
#define SETS_MIN 8                /* first allocation: 16 entries (a handful of users) */
#define SETS_MAX 512              /* bound: 1,024 entries per options object */
#define NBIND 4                   /* key sets one options object can serve at once */
#define TOKEN_MAX 16384           /* longer tokens are verified every time, never kept */

typedef struct {
    char *tok;                    /* NULL: empty */
    uint64_t hash;
    uint32_t len, bgen;
    uint8_t kind, bind, used;     /* kind 0: a token, 1: an Authorization header value */
    double from, to;              /* the claims pass for from <= now <= to */
    int cl_ref, h_ref;            /* LUA_REGISTRYINDEX references */
} entry;

typedef struct {
    const void *keys, *list;      /* identities; NULL: free */
    int keys_ref, list_ref;
    uint32_t gen;
    int jwks;                     /* keys is an app.jwt.jwks object: check list and ttl on a hit */
} binding;

#define OPTS_MAGIC 0x6a77746f70747331ull  /* "jwtopts1": a userdata of this size is ours only with it */

typedef struct jwt_options jwt_options;
struct jwt_options {
    uint64_t magic;
    jwt_options *self;
    entry *e;                     /* nsets * WAYS, NULL until the first entry */
    unsigned nsets, count;
    size_t bytes;
    binding b[NBIND];
    unsigned next_bind;
    int has_now;
    double now;
    uint64_t hits, misses;
};

/* Seconds added to the wall clock (app.jwt._clock_shift, for tests): per process. */
static double clock_shift;

static double wall_now(void) { return (double)time(NULL) + clock_shift; }

/* Only the last 16 bytes: a token ends in its signature, which is what makes two tokens differ
 * (a collision costs a memcmp and a miss, never a wrong answer: every byte is compared). */
static inline uint64_t tok_hash(const char *p, size_t n)
{
    uint64_t a = 0, b = 0;
    if (n >= 16) {
        memcpy(&a, p + n - 16, 8);
        memcpy(&b, p + n - 8, 8);
    } else {
        memcpy(&a, p, n < 8 ? n : 8);
        if (n > 8) memcpy(&b, p + 8, n - 8);
    }
    uint64_t h = (a ^ (uint64_t)n) * 0x9e3779b97f4a7c15ull ^ b * 0xff51afd7ed558ccdull;
    return h ^ (h >> 31);
}

/* The options object at idx, or NULL. Per request, so no metatable lookup: only a full userdata
 * has a payload of its size (a light one's objlen is 0), and only ours holds the magic and its
 * own address (a Lua script cannot write a userdata's bytes). */
static jwt_options *to_opts(lua_State *L, int idx)
{
    jwt_options *o = lua_touserdata(L, idx);
    if (!o || lua_objlen(L, idx) != sizeof *o || o->magic != OPTS_MAGIC || o->self != o) return NULL;
    return o;
}

static jwt_options *check_opts(lua_State *L, int idx)
{
    jwt_options *o = to_opts(L, idx);
    if (!o) luaL_argerror(L, idx, "expected options made by app.jwt.options");
    return o;
}

static void entry_clear(lua_State *L, jwt_options *o, entry *e)
{
    if (!e->tok) return;
    o->bytes -= e->len;
    o->count--;
    free(e->tok);
    e->tok = NULL;
    luaL_unref(L, LUA_REGISTRYINDEX, e->cl_ref);
    luaL_unref(L, LUA_REGISTRYINDEX, e->h_ref);
}

static int entry_live(const jwt_options *o, const entry *e)
{
    return e->tok && o->b[e->bind].keys && o->b[e->bind].gen == e->bgen;
}

/* The token bytes a hit looks up: a string (kind 0), or the Authorization header the client sent
 * (kind 1), read from the connection as req:header reads it (lua_core.c's request table: [1] =
 * the conn, [2] = its request generation). NULL: none (no header, two of them, a request that is
 * over, a table that is not a request): the Lua path decides. */
static const char *subject(lua_State *L, size_t *n, int *kind)
{
    int t = lua_type(L, 1);
    if (t == LUA_TSTRING) {
        *kind = 0;
        return lua_tolstring(L, 1, n);
    }
    if (t != LUA_TTABLE) return NULL;
    *kind = 1;
    lua_rawgeti(L, 1, 1);
    conn *c = lua_type(L, -1) == LUA_TLIGHTUSERDATA ? lua_touserdata(L, -1) : NULL;
    if (!c) return NULL;
    lua_rawgeti(L, 1, 2);
    if (c->closed || c->gen != (uint32_t)lua_tonumber(L, -1)) return NULL;
    const http_req *r = &c->req;
    const char *v = NULL;
    for (unsigned i = 0; i < r->nheaders; i++) {
        const http_header *h = &r->headers[i];
        if (h->nlen != 13 || memcmp(http_hname(r, h), "authorization", 13) != 0) continue;
        if (v) return NULL;                          /* joined by the Lua path */
        v = http_hvalue(r, h);
        *n = h->vlen;
    }
    return v;
}

/* jwt_hit(token | req, keys [, opts]) -> claims, header | nothing: a token these options verified
 * with these keys before, inside its window now. Never raises: any doubt is a miss. */
static int l_hit(lua_State *L)
{
    jwt_options *o = to_opts(L, 3);
    if (!o && lua_isnoneornil(L, 3)) o = lua_touserdata(L, lua_upvalueindex(5));   /* the default options */
    if (!o || !o->e) return 0;
    const void *kp = lua_topointer(L, 2);
    unsigned b = 0;
    while (b < NBIND && (o->b[b].keys != kp || !kp)) b++;
    if (b == NBIND) { o->misses++; return 0; }
    size_t n;
    int kind;
    const char *s = subject(L, &n, &kind);
    if (!s) { o->misses++; return 0; }
    uint64_t h = tok_hash(s, n);
    entry *set = o->e + (h & (o->nsets - 1)) * WAYS;
    entry *e = NULL;
    for (int w = 0; w < WAYS; w++) {
        entry *x = &set[w];
        if (x->hash == h && x->len == n && x->kind == kind && x->bind == b && x->bgen == o->b[b].gen && x->tok &&
            memcmp(x->tok, s, n) == 0) { e = x; break; }
    }
    if (!e) { o->misses++; return 0; }
    double now = o->has_now ? o->now : wall_now();
    if (now < e->from || now > e->to) { o->misses++; return 0; }
    if (o->b[b].jwks) {                              /* the set's keys are still the ones, and fresh */
        lua_pushvalue(L, lua_upvalueindex(2));       /* "list" */
        lua_rawget(L, 2);
        int same = lua_topointer(L, -1) == o->b[b].list;
        lua_pushvalue(L, lua_upvalueindex(3));       /* "fetched" */
        lua_rawget(L, 2);
        lua_pushvalue(L, lua_upvalueindex(4));       /* "ttl" */
        lua_rawget(L, 2);
        if (!same || !lua_isnumber(L, -1) || !(wall_now() - lua_tonumber(L, -2) < lua_tonumber(L, -1))) {
            o->misses++;
            return 0;
        }
    }
    set[0].used = (e == &set[0]);
    o->hits++;
    lua_rawgeti(L, LUA_REGISTRYINDEX, e->cl_ref);
    lua_rawgeti(L, LUA_REGISTRYINDEX, e->h_ref);
    return 2;
}

/* The binding of keys (made, or its list updated, as needed) -> its index. */
static unsigned bind_keys(lua_State *L, jwt_options *o, int keys, int list, int jwks)
{
    const void *kp = lua_topointer(L, keys), *lp = lua_topointer(L, list);
    unsigned b = 0;
    while (b < NBIND && o->b[b].keys != kp) b++;
    if (b == NBIND) {
        for (b = 0; b < NBIND && o->b[b].keys; b++) {}
        if (b == NBIND) b = o->next_bind++ % NBIND;
        binding *x = &o->b[b];
        if (x->keys) {
            luaL_unref(L, LUA_REGISTRYINDEX, x->keys_ref);
            luaL_unref(L, LUA_REGISTRYINDEX, x->list_ref);
        }
        lua_pushvalue(L, keys);
        x->keys_ref = luaL_ref(L, LUA_REGISTRYINDEX);
        lua_pushvalue(L, list);
        x->list_ref = luaL_ref(L, LUA_REGISTRYINDEX);
        x->keys = kp, x->list = lp, x->jwks = jwks;
        x->gen++;
        return b;
    }
    binding *x = &o->b[b];
    if (x->list != lp) {                             /* the key set's keys changed: drop its entries */
        luaL_unref(L, LUA_REGISTRYINDEX, x->list_ref);
        lua_pushvalue(L, list);
        x->list_ref = luaL_ref(L, LUA_REGISTRYINDEX);
        x->list = lp;
        x->gen++;
    }
    x->jwks = jwks;
    return b;
}

/* Twice the sets (up to SETS_MAX), the live entries moved over, stale ones dropped. */
static int grow(lua_State *L, jwt_options *o)
{
    unsigned ns = o->nsets ? o->nsets * 2 : SETS_MIN;
    entry *ne = calloc((size_t)ns * WAYS, sizeof *ne);
    if (!ne) return -1;
    entry *old = o->e;
    unsigned on = o->nsets;
    o->e = ne, o->nsets = ns;
    for (unsigned i = 0; old && i < on * WAYS; i++) {
        entry *x = &old[i];
        if (!x->tok) continue;
        if (!entry_live(o, x)) { entry_clear(L, o, x); continue; }
        entry *set = ne + (x->hash & (ns - 1)) * WAYS;
        int w = set[0].tok ? 1 : 0;
        if (set[w].tok) entry_clear(L, o, x);  /* cannot happen with twice the sets; be safe */
        else set[w] = *x;
    }
    free(old);
    return 0;
}

/* jwt_put(opts, keys, list, is_jwks, token | header value, kind, claims, header, from, to)
 * -> true | false (not kept: too long, out of memory). Called after a verification passed. */
static int l_put(lua_State *L)
{
    jwt_options *o = check_opts(L, 1);
    luaL_checkany(L, 2);
    luaL_checktype(L, 3, LUA_TTABLE);
    int jwks = lua_toboolean(L, 4);
    size_t n;
    const char *s = luaL_checklstring(L, 5, &n);
    int kind = (int)luaL_checkinteger(L, 6);
    luaL_checktype(L, 7, LUA_TTABLE);
    luaL_checktype(L, 8, LUA_TTABLE);
    double from = luaL_checknumber(L, 9), to = luaL_checknumber(L, 10);
    if (n > TOKEN_MAX || !lua_topointer(L, 2)) { lua_pushboolean(L, 0); return 1; }
    lua_settop(L, 10);
    unsigned b = bind_keys(L, o, 2, 3, jwks);
    if ((!o->e || (o->count >= o->nsets * WAYS * 3 / 4 && o->nsets < SETS_MAX)) && grow(L, o) != 0) {
        lua_pushboolean(L, 0);
        return 1;
    }
    uint64_t h = tok_hash(s, n);
    entry *set = o->e + (h & (o->nsets - 1)) * WAYS, *e = NULL;
    for (int w = 0; w < WAYS && !e; w++)             /* the same token again, else a free way */
        if (set[w].tok && set[w].hash == h && set[w].len == n && set[w].kind == kind && memcmp(set[w].tok, s, n) == 0) e = &set[w];
    for (int w = 0; w < WAYS && !e; w++)
        if (!entry_live(o, &set[w])) e = &set[w];
    if (!e) e = set[0].used ? &set[1] : &set[0];    /* the way not hit last */
    char *copy = malloc(n ? n : 1);
    if (!copy) { lua_pushboolean(L, 0); return 1; }
    memcpy(copy, s, n);
    entry_clear(L, o, e);
    e->tok = copy;
    e->hash = h, e->len = (uint32_t)n, e->kind = (uint8_t)kind, e->bind = (uint8_t)b, e->bgen = o->b[b].gen;
    e->from = from, e->to = to;
    lua_pushvalue(L, 7);
    e->cl_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    lua_pushvalue(L, 8);
    e->h_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    o->count++;
    o->bytes += n;
    lua_pushboolean(L, 1);
    return 1;
}

/* jwt_options(plain options table, now | nil) -> options object. The table is the caller's
 * (already copied): __index reads it. */
static int l_options(lua_State *L)
{
    luaL_checktype(L, 1, LUA_TTABLE);
    jwt_options *o = lua_newuserdata(L, sizeof *o);
    memset(o, 0, sizeof *o);
    o->magic = OPTS_MAGIC;
    o->self = o;
    if (lua_type(L, 2) == LUA_TNUMBER) o->has_now = 1, o->now = lua_tonumber(L, 2);
    lua_pushvalue(L, lua_upvalueindex(1));
    lua_setmetatable(L, -2);
    lua_createtable(L, 0, 1);
    lua_pushvalue(L, 1);
    lua_setfield(L, -2, "options");
    lua_setfenv(L, -2);
    return 1;
}

/* jwt_plain(opts) -> the options table it reads */
static int l_plain(lua_State *L)
{
    check_opts(L, 1);
    lua_getfenv(L, 1);
    lua_getfield(L, -1, "options");
    return 1;
}

static int opts_index(lua_State *L)
{
    lua_getfenv(L, 1);
    lua_getfield(L, -1, "options");
    lua_pushvalue(L, 2);
    lua_rawget(L, -2);
    return 1;
}

static int opts_newindex(lua_State *L)
{
    return luaL_error(L, "app.jwt.options: read-only (make another with app.jwt.options)");
}

static int opts_gc(lua_State *L)
{
    jwt_options *o = lua_touserdata(L, 1);
    for (unsigned i = 0; o->e && i < o->nsets * WAYS; i++) entry_clear(L, o, &o->e[i]);
    free(o->e);
    o->e = NULL, o->nsets = 0;
    for (unsigned b = 0; b < NBIND; b++) {
        if (!o->b[b].keys) continue;
        luaL_unref(L, LUA_REGISTRYINDEX, o->b[b].keys_ref);
        luaL_unref(L, LUA_REGISTRYINDEX, o->b[b].list_ref);
        o->b[b].keys = NULL;
    }
    o->magic = 0;
    return 0;
}

static int opts_tostring(lua_State *L)
{
    lua_pushfstring(L, "jwt options (%p)", lua_topointer(L, 1));
    return 1;
}

/* jwt_stats(opts) -> { entries =, bytes =, capacity =, hits =, misses = } */
static int l_stats(lua_State *L)
{
    jwt_options *o = check_opts(L, 1);
    unsigned live = 0;
    for (unsigned i = 0; o->e && i < o->nsets * WAYS; i++) live += entry_live(o, &o->e[i]);
    lua_createtable(L, 0, 5);
    lua_pushinteger(L, live);
    lua_setfield(L, -2, "entries");
    lua_pushinteger(L, (lua_Integer)o->bytes);
    lua_setfield(L, -2, "bytes");
    lua_pushinteger(L, SETS_MAX * WAYS);
    lua_setfield(L, -2, "capacity");
    lua_pushnumber(L, (double)o->hits);
    lua_setfield(L, -2, "hits");
    lua_pushnumber(L, (double)o->misses);
    lua_setfield(L, -2, "misses");
    return 1;
}

/* jwt_now() -> the wall clock in seconds (time(), plus the test shift) */
static int l_now(lua_State *L)
{
    lua_pushnumber(L, wall_now());
    return 1;
}

/* jwt_clock_shift(seconds) -> the new shift: moves the JWT clock (tests) */
static int l_clock_shift(lua_State *L)
{
    clock_shift += luaL_checknumber(L, 1);
    lua_pushnumber(L, clock_shift);
    return 1;
}

void lua_jwt_register(lua_State *L)
{
    static const luaL_Reg mt[] = {
        {"__index", opts_index}, {"__newindex", opts_newindex}, {"__gc", opts_gc}, {"__tostring", opts_tostring}, {NULL, NULL},
    };
    static const luaL_Reg fns[] = {
        {"jwt_options", l_options}, {"jwt_put", l_put}, {"jwt_stats", l_stats}, {NULL, NULL},
    };
    luaL_newmetatable(L, OPTS_MT);
    luaL_setfuncs(L, mt, 0);
    lua_pushliteral(L, "jwt options");
    lua_setfield(L, -2, "__metatable");
    int mti = lua_gettop(L);
    for (const luaL_Reg *f = fns; f->name; f++) {
        lua_pushvalue(L, mti);
        lua_pushcclosure(L, f->func, 1);
        lua_setfield(L, mti - 1, f->name);
    }
    lua_pushcfunction(L, l_plain);
    lua_setfield(L, mti - 1, "jwt_plain");
    lua_newtable(L);                                 /* the default options (verify without opts) */
    lua_pushvalue(L, mti);
    lua_pushcclosure(L, l_options, 1);
    lua_pushvalue(L, -2);
    lua_call(L, 1, 1);
    lua_remove(L, -2);
    lua_pushvalue(L, -1);
    lua_setfield(L, mti - 1, "jwt_default");
    int def = lua_gettop(L);
    lua_pushvalue(L, mti);
    lua_pushliteral(L, "list");
    lua_pushliteral(L, "fetched");
    lua_pushliteral(L, "ttl");
    lua_pushvalue(L, def);
    lua_pushcclosure(L, l_hit, 5);
    lua_setfield(L, mti - 1, "jwt_hit");
    lua_remove(L, def);
    lua_pushcfunction(L, l_now);
    lua_setfield(L, mti - 1, "jwt_now");
    lua_pushcfunction(L, l_clock_shift);
    lua_setfield(L, mti - 1, "jwt_clock_shift");
    lua_pop(L, 1);
}
