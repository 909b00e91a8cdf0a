/* limiter.c: policy lookup, key extraction and the 429 answer around the shared GCRA table, or around
 * the same GCRA run as a script in Redis when several instances share the limits. */
#include "limiter.h"

#include <lauxlib.h>
#include <stdio.h>
#include <string.h>

#include "clientip.h"
#include "lua_app.h"
#include "ratelimit.h"
#include "rbus.h"
#include "response.h"
#include "conn.h"
#include "server.h"
#include "worker.h"

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
    const sconfig *cfg = c->w->app_cfg;
    if (!cfg->trust) {              /* keyed by the socket peer: the same for the whole connection */
        if (!c->ipkey_len && clientip_key(c->ip, cfg->ipv6_prefix, c->ipkey, sizeof c->ipkey) > 0)
            c->ipkey_len = (uint8_t)strlen(c->ipkey);
        size_t n = c->ipkey_len < cap ? c->ipkey_len : cap - 1;
        memcpy(out, c->ipkey, n);
        out[n] = 0;
        return n;
    }
    return (size_t)clientip_key(limiter_client_ip(c), cfg->ipv6_prefix, out, cap) > 0 ? strlen(out) : 0;
}

/* Both fields are built by the core from config-validated names and numbers: appended
 * directly (the policy line is precomputed per policy), no formatting or checks per request. */
static void put_fields(resp *r, const limiter_verdict *v)
{
    buf *b = &r->c->out;
    if (v->pol) buf_append(b, v->pol->policy_line, v->pol->policy_line_len);
    buf_append(b, "RateLimit: \"", 12);
    buf_puts(b, v->policy);
    buf_append(b, "\";r=", 4);
    buf_putu(b, v->remaining);
    buf_append(b, ";t=", 3);
    buf_putu(b, v->reset_s);
    buf_append(b, "\r\n", 2);
}

void limiter_headers(resp *r, const limiter_verdict *v)
{
    if (v->policy) put_fields(r, v);
}

/* Turns a GCRA result into the verdict: 1 admitted (v filled), -1 rejected with the 429 queued. */
/* limiter.redis_failure = "closed": when Redis cannot decide, refuse rather than guess. */
static int refuse_unavailable(conn *c)
{
    atomic_fetch_add_explicit(&c->w->rate_limited, 1, memory_order_relaxed);
    resp_error(c, 503, "rate limiter unavailable (Redis did not answer), retry later", 0);
    return -1;
}

/* The RateLimit field's t (draft-ietf-httpapi-ratelimit-headers: seconds until more quota is
 * available) for an admitted request: GCRA gives one more request back every T = window/limit, and
 * the next one arrives when the debt reset_ms falls to the multiple of T below it. 0 = bucket full. */
static uint64_t next_unit_s(const sc_policy *p, uint64_t reset_ms)
{
    if (!reset_ms || !p->limit) return 0;
    uint64_t t_us = (p->window_ms * 1000 + p->limit - 1) / p->limit;
    if (!t_us) t_us = 1;
    uint64_t rem = (reset_ms * 1000) % t_us;
    return ((rem ? rem : t_us) + 999999) / 1000000;
}

static int decide(conn *c, const sc_policy *p, const rl_result *res, limiter_verdict *v)
{
    worker *w = c->w;
    const sconfig *cfg = w->app_cfg;
    v->policy = p->name;
    v->pol = p;
    v->limit = p->limit;
    v->window_s = (p->window_ms + 999) / 1000;
    v->remaining = res->remaining;
    v->retry_after_s = res->retry_after_ms == UINT64_MAX ? v->window_s : (res->retry_after_ms + 999) / 1000;
    if (!v->retry_after_s) v->retry_after_s = 1;
    /* t: on a 429 the wait Retry-After gives (the same value, so a client reading either waits
     * the same); admitted, the time until the next request drips back */
    v->reset_s = res->allowed ? next_unit_s(p, res->reset_ms) : v->retry_after_s;
    if (res->allowed) {
        if (!cfg->ratelimit_headers) v->policy = NULL;
        return 1;
    }
    atomic_fetch_add_explicit(&w->rate_limited, 1, memory_order_relaxed);
    resp r;
    resp_begin(&r, c, 429);
    char ra[32];
    int n = snprintf(ra, sizeof ra, "%llu", (unsigned long long)v->retry_after_s);
    resp_header(&r, "Retry-After", 11, ra, (size_t)n);
    put_fields(&r, v);
    char body[512];
    n = snprintf(body, sizeof body,
                 "{\"error\":\"rate limit exceeded\",\"status\":429,\"policy\":\"%s\",\"limit\":%llu,\"window\":%llu,\"retry_after\":%s}",
                 p->name, (unsigned long long)p->limit, (unsigned long long)v->window_s, ra);
    resp_finish(&r, "application/json", body, (size_t)n);
    return -1;
}

/* ---- the Redis backend: one GCRA script per decision, exact across instances ---- */

#define REDIS_DEADLINE 0.25         /* s: then the local table decides (fail open to local limits) */

typedef struct rlwait {
    conn *c;
    rbus_op *op;
    void (*done)(conn *c, int rc);
    rl_policy pol;
    size_t kl;
    char key[256];
    struct rlwait *prev, *next;
} rlwait;

typedef struct rlside {
    rlwait *pending;                /* decisions in flight (few: each lasts < 250 ms) */
    rlwait *free;
} rlside;

static void wait_unlink(rlside *sd, rlwait *wt)
{
    if (wt->prev) wt->prev->next = wt->next;
    else sd->pending = wt->next;
    if (wt->next) wt->next->prev = wt->prev;
    wt->next = sd->free;
    sd->free = wt;
}

static int reply_result(const redisReply *r, rl_result *res)
{
    if (!r || r->type != REDIS_REPLY_ARRAY || r->elements != 4) return -1;
    for (int i = 0; i < 4; i++) if (r->element[i]->type != REDIS_REPLY_INTEGER) return -1;
    memset(res, 0, sizeof *res);
    res->allowed = r->element[0]->integer == 1;
    res->remaining = (uint64_t)r->element[1]->integer;
    res->retry_after_ms = r->element[2]->integer < 0 ? UINT64_MAX : (uint64_t)r->element[2]->integer;
    res->reset_ms = (uint64_t)r->element[3]->integer;
    return 0;
}

static void redis_verdict(void *ud, const redisReply *r, const char *err)
{
    rlwait *wt = ud;
    conn *c = wt->c;
    worker *w = c->w;
    rlside *sd = w->limiter;
    void (*done)(conn *, int) = wt->done;
    rl_result res;
    int closed = 0;
    if (reply_result(r, &res) == 0) {
        rbus_count(w->srv, RBC_RL_REDIS);
    } else if (w->app_cfg->redis_fail_closed) {
        rbus_count(w->srv, RBC_RL_FALLBACK);
        closed = 1;
    } else {
        rbus_count(w->srv, RBC_RL_FALLBACK);
        if (ratelimit_check(w->srv->rl, &wt->pol, wt->key, wt->kl, worker_now_us(w) / 1000, &res) < 0)
            res.allowed = 1, res.remaining = 0, res.reset_ms = 0, res.retry_after_ms = 0;
    }
    wait_unlink(sd, wt);
    /* a reload may have replaced the policies meanwhile: the verdict reports the current one */
    const sconfig *cfg = w->app_cfg;
    int pi = cfg->nprefixes ? sconfig_policy_for(cfg, c->req.method, http_req_url(&c->req), c->req.path_len) : -1;
    int rc = 0;
    c->has_lv = 0;
    if (closed) rc = refuse_unavailable(c);
    else if (pi >= 0) {
        rc = decide(c, &cfg->policies[pi], &res, &c->lv);
        c->has_lv = rc > 0;
    }
    done(c, rc);
}

/* Starts a Redis decision; 0 when it could not be sent (the caller decides locally). */
static int redis_check(conn *c, const rl_policy *pol, const char *key, size_t kl,
                       void (*done)(conn *c, int rc))
{
    worker *w = c->w;
    uint64_t win_ns = pol->window_ms * 1000000u;
    uint64_t T = win_ns / pol->limit + (win_ns % pol->limit != 0);
    uint64_t B = pol->burst ? pol->burst : pol->limit;
    if (pol->window_ms > (UINT64_C(1) << 53) / 1000000u || B > (UINT64_C(1) << 53) / T) return 0;  /* not exact in a double */
    rlside *sd = w->limiter;
    if (!sd && !(sd = w->limiter = calloc(1, sizeof *sd))) return 0;
    rlwait *wt = sd->free;
    if (wt) sd->free = wt->next;
    else if (!(wt = malloc(sizeof *wt))) return 0;
    wt->c = c;
    wt->done = done;
    wt->pol = *pol;
    wt->kl = kl < sizeof wt->key ? kl : sizeof wt->key - 1;
    memcpy(wt->key, key, wt->kl);
    char rkey[400], ts[24], bs[24];
    const sc_policy *p = NULL;
    for (size_t i = 0; i < w->app_cfg->npolicies; i++)
        if (w->app_cfg->policies[i].id == pol->id) p = &w->app_cfg->policies[i];
    size_t rkl = (size_t)snprintf(rkey, sizeof rkey, "%srl:%s:", rbus_prefix(w->srv), p ? p->name : "?");
    if (rkl + wt->kl < sizeof rkey) { memcpy(rkey + rkl, key, wt->kl); rkl += wt->kl; }
    const char *av[] = {rkey, ts, bs, "1"};
    size_t al[] = {rkl, (size_t)snprintf(ts, sizeof ts, "%llu", (unsigned long long)T),
                   (size_t)snprintf(bs, sizeof bs, "%llu", (unsigned long long)B), 1};
    wt->op = rbus_eval(w, RBUS_GCRA, 1, 4, av, al, REDIS_DEADLINE, redis_verdict, wt);
    if (!wt->op) {
        wt->next = sd->free;
        sd->free = wt;
        return 0;
    }
    wt->prev = NULL;
    wt->next = sd->pending;
    if (sd->pending) sd->pending->prev = wt;
    sd->pending = wt;
    return 1;
}

void limiter_conn_gone(conn *c)
{
    rlside *sd = c->w->limiter;
    if (!sd) return;
    for (rlwait *wt = sd->pending; wt; wt = wt->next)
        if (wt->c == c) {
            rbus_cancel(wt->op);
            wait_unlink(sd, wt);
            return;
        }
}

void limiter_worker_free(worker *w)
{
    rlside *sd = w->limiter;
    if (!sd) return;
    while (sd->pending) {
        rbus_cancel(sd->pending->op);
        wait_unlink(sd, sd->pending);
    }
    for (rlwait *wt = sd->free, *n; wt; wt = n) { n = wt->next; free(wt); }
    free(sd);
    w->limiter = NULL;
}

static int check(conn *c, const char *path, size_t plen, limiter_verdict *v, void (*done)(conn *c, int rc))
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
    if (done && w->rbus) {
        if (rbus_ready(w) && redis_check(c, &pol, key, kl, done)) {
            c->state = CS_HANDLING;     /* stop parsing pipelined requests until the verdict */
            return 2;
        }
        rbus_count(w->srv, RBC_RL_FALLBACK);
        if (cfg->redis_fail_closed) return refuse_unavailable(c);
    }
    rl_result res;
    if (ratelimit_check(rl, &pol, key, kl, worker_now_us(w) / 1000, &res) < 0) return 0;
    return decide(c, p, &res, v);
}

int limiter_check(conn *c, const char *path, size_t plen, limiter_verdict *v)
{
    return check(c, path, plen, v, NULL);
}

int limiter_check_async(conn *c, const char *path, size_t plen, limiter_verdict *v, void (*done)(conn *c, int rc))
{
    return check(c, path, plen, v, done);
}
