/* limiter.c: policy lookup, key extraction and the 429 answer around the shared GCRA table. */
#include "limiter.h"

#include <lauxlib.h>
#include <stdio.h>
#include <string.h>

#include "clientip.h"
#include "lua_app.h"
#include "ratelimit.h"

/* Joins every value of a header with ", " (a proxy chain may send several lines). */
static size_t joined_header(const http_req *r, const char *name, char *out, size_t cap)
{
    size_t n = strlen(name), len = 0;
    for (unsigned i = 0; i < r->nheaders; i++) {
        const http_header *h = &r->headers[i];
        if (h->nlen != n || memcmp(http_hname(r, h), name, n) != 0) continue;
        if (len && len + 2 < cap) { out[len++] = ','; out[len++] = ' '; }
        size_t k = h->vlen < cap - len - 1 ? h->vlen : cap - len - 1;
        memcpy(out + len, http_hvalue(r, h), k);
        len += k;
    }
    out[len] = 0;
    return len;
}

const char *limiter_client_ip(conn *c)
{
    if (c->client_ip_gen == c->gen && c->client_ip[0]) return c->client_ip;
    const sconfig *cfg = c->w->app_cfg;
    c->client_ip_gen = c->gen;
    if (!cfg->trust) {
        snprintf(c->client_ip, sizeof c->client_ip, "%s", c->ip);
        return c->client_ip;
    }
    char xff[2048], fwd[2048];
    size_t xl = joined_header(&c->req, "x-forwarded-for", xff, sizeof xff);
    size_t fl = joined_header(&c->req, "forwarded", fwd, sizeof fwd);
    if (clientip_resolve(cfg->trust, (const struct sockaddr *)&c->peer, xl ? xff : NULL, xl, fl ? fwd : NULL, fl,
                         c->client_ip, sizeof c->client_ip) < 0)
        snprintf(c->client_ip, sizeof c->client_ip, "%s", c->ip);
    return c->client_ip;
}

/* The bucket key for a policy; "" falls back to the client address. */
static size_t policy_key(conn *c, const sc_policy *p, char *out, size_t cap)
{
    size_t n = 0;
    if (p->key_kind == RLKEY_HEADER && p->key_header) {
        const char *v = http_req_header(&c->req, p->key_header, &n);
        if (v && n) {
            n = n < cap - 1 ? n : cap - 1;
            memcpy(out, v, n);
            out[n] = 0;
            return n;
        }
    } else if (p->key_kind == RLKEY_USER) {
        const char *v = http_req_header(&c->req, "authorization", &n);
        if (!v) v = http_req_header(&c->req, "x-user", &n);
        if (v && n) {
            int k = snprintf(out, cap, "u:%.*s", (int)n, v);
            return (size_t)k < cap ? (size_t)k : cap - 1;
        }
    } else if (p->key_kind == RLKEY_FUNC) {
        appstate *a = c->w->app;
        lua_State *L = a->L;
        int top = lua_gettop(L);
        lua_rawgeti(L, LUA_REGISTRYINDEX, p->key_fn_ref);
        lua_createtable(L, 2, 2);
        lua_pushlightuserdata(L, c);
        lua_rawseti(L, -2, 1);
        lua_pushnumber(L, c->gen);
        lua_rawseti(L, -2, 2);
        lua_pushlstring(L, http_req_url(&c->req), c->req.path_len);
        lua_setfield(L, -2, "path");
        lua_pushstring(L, http_method_str((enum http_method)c->req.method));
        lua_setfield(L, -2, "method");
        lua_rawgeti(L, LUA_REGISTRYINDEX, a->req_mt_ref);
        lua_setmetatable(L, -2);
        if (lua_pcall(L, 1, 1, 0) == 0 && lua_isstring(L, -1)) {
            const char *v = lua_tolstring(L, -1, &n);
            int k = snprintf(out, cap, "f:%.*s", (int)n, v);
            lua_settop(L, top);
            return (size_t)k < cap ? (size_t)k : cap - 1;
        }
        lua_settop(L, top);
    }
    return (size_t)clientip_key(limiter_client_ip(c), c->w->app_cfg->ipv6_prefix, out, cap) > 0 ? strlen(out) : 0;
}

static void put_fields(resp *r, const limiter_verdict *v)
{
    char b[256];
    int n = snprintf(b, sizeof b, "\"%s\";q=%llu;w=%llu", v->policy, (unsigned long long)v->limit,
                     (unsigned long long)v->window_s);
    resp_header(r, "RateLimit-Policy", 16, b, (size_t)n);
    n = snprintf(b, sizeof b, "\"%s\";r=%llu;t=%llu", v->policy, (unsigned long long)v->remaining,
                 (unsigned long long)v->reset_s);
    resp_header(r, "RateLimit", 9, b, (size_t)n);
}

void limiter_headers(resp *r, const limiter_verdict *v)
{
    if (v->policy) put_fields(r, v);
}

int limiter_check(conn *c, const char *path, size_t plen, limiter_verdict *v)
{
    worker *w = c->w;
    const sconfig *cfg = w->app_cfg;
    ratelimit *rl = w->srv->rl;
    if (!rl || !cfg->nprefixes) return 0;
    int pi = sconfig_policy_for(cfg, c->req.method, path, plen);
    if (pi < 0) return 0;
    const sc_policy *p = &cfg->policies[pi];
    char key[256];
    size_t kl = policy_key(c, p, key, sizeof key);
    rl_policy pol = {p->id, p->limit, p->window_ms, p->burst};
    rl_result res;
    if (ratelimit_check(rl, &pol, key, kl, worker_now_us(w) / 1000, &res) < 0) return 0;
    v->policy = p->name;
    v->limit = p->limit;
    v->window_s = (p->window_ms + 999) / 1000;
    v->remaining = res.remaining;
    v->reset_s = (res.reset_ms + 999) / 1000;
    v->retry_after_s = res.retry_after_ms == UINT64_MAX ? v->window_s : (res.retry_after_ms + 999) / 1000;
    if (res.allowed) {
        if (!cfg->ratelimit_headers) v->policy = NULL;
        return 1;
    }
    atomic_fetch_add_explicit(&w->rate_limited, 1, memory_order_relaxed);
    resp r;
    resp_begin(&r, c, 429);
    char ra[32];
    int n = snprintf(ra, sizeof ra, "%llu", (unsigned long long)(v->retry_after_s ? v->retry_after_s : 1));
    resp_header(&r, "Retry-After", 11, ra, (size_t)n);
    put_fields(&r, v);
    char body[512];
    n = snprintf(body, sizeof body,
                 "{\"error\":\"rate limit exceeded\",\"status\":429,\"policy\":\"%s\",\"limit\":%llu,\"window\":%llu,\"retry_after\":%s}",
                 p->name, (unsigned long long)p->limit, (unsigned long long)v->window_s, ra);
    resp_finish(&r, "application/json", body, (size_t)n);
    return -1;
}
