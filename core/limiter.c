/* limiter.c: policy lookup, key extraction and the 429 answer around the shared GCRA table, or around
 * the same GCRA run as a script in Redis when several instances share the limits. */
#include "limiter.h"

#include <lauxlib.h>
#include <stdio.h>
#include <string.h>

#include "buf.h"
#include "clientip.h"
#include "clock.h"
#include "conn.h"
#include "ctx.h"
#include "ratelimit.h"
#include "rbus.h"
#include "response.h"
#include "sconfig.h"

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

/* The client-address key as text (the peer's is computed once per connection). */
static size_t client_key(conn *c, char *out, size_t cap)
{
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

/* The peer-address key prepared for the table and policy id: hashed once per connection, and
 * its hint saves the chain walk too (the pipelined case, issue 21). */
static __attribute__((noinline)) void peer_key_make(conn *c, ratelimit *rl, uint32_t policy)
{
    const sconfig *cfg = c->w->app_cfg;
    if (!c->ipkey_len && clientip_key(c->ip, cfg->ipv6_prefix, c->ipkey, sizeof c->ipkey) > 0)
        c->ipkey_len = (uint8_t)strlen(c->ipkey);
    ratelimit_key(rl, policy, c->ipkey, c->ipkey_len, &c->rlk);
    c->rlk_set = c->ipkey_len > 0;      /* no key (unparsable peer): tried again next request */
}

static inline rl_key *peer_key(conn *c, ratelimit *rl, uint32_t policy)
{
    if (!c->rlk_set || c->rlk.policy != policy) peer_key_make(c, rl, policy);
    return &c->rlk;
}

static long policy_key_fn(conn *c, const sc_policy *p, char *out, size_t cap);

/* The bucket key for a policy: its length, with *key pointing at it (in out, or a header value
 * in the request: not NUL-terminated); -1 means the client address (no other key applies). Keys
 * are cut at cap - 1 bytes, as the Redis backend stores them. */
static long policy_key(conn *c, const sc_policy *p, char *out, size_t cap, const char **key)
{
    size_t n = 0;
    *key = out;
    if (p->key_kind == RLKEY_HEADER && p->key_header) {
        const char *v = http_req_header(&c->req, p->key_header, &n);
        if (v && n) {
            *key = v;
            return (long)(n < cap - 1 ? n : cap - 1);
        }
    } else if (p->key_kind == RLKEY_USER) {
        const char *v = http_req_header(&c->req, "authorization", &n);
        if (!v) v = http_req_header(&c->req, "x-user", &n);
        if (v && n) {
            int k = snprintf(out, cap, "u:%.*s", (int)n, v);
            return (size_t)k < cap ? k : (long)cap - 1;
        }
    } else if (p->key_kind == RLKEY_FUNC) {
        return policy_key_fn(c, p, out, cap);
    }
    return -1;
}

/* key = function(req): the Lua side's callback names the bucket (limiter_set_key_fn). */
static _Atomic(limiter_key_fn) key_fn;

void limiter_set_key_fn(limiter_key_fn fn) { atomic_store_explicit(&key_fn, fn, memory_order_relaxed); }

static __attribute__((noinline)) long policy_key_fn(conn *c, const sc_policy *p, char *out, size_t cap)
{
    limiter_key_fn fn = atomic_load_explicit(&key_fn, memory_order_relaxed);
    return fn ? fn(c, p->key_fn_ref, out, cap) : -1;
}

/* Both fields are built by the core from config-validated names and numbers, straight into the
 * output buffer: the constant head is precomputed per policy, the two numbers formatted here. */
static inline __attribute__((always_inline)) void put_fields(resp *r, const limiter_verdict *v)
{
    buf *b = &r->c->out;
    const sc_policy *p = v->pol;        /* set whenever v->policy is */
    if (!p->fields_head) return;
    size_t hl = p->fields_head_len, need = (hl > 64 ? hl : 64) + 20 + 3 + 20 + 2;
    if (b->cap - b->len < need && buf_reserve(b, need)) return;
    char *o = b->data + b->len;
    if (hl <= 64) memcpy(o, p->fields_head, 64);   /* fixed size, no call: the head has room (sconfig.h) */
    else memcpy(o, p->fields_head, hl);
    o = dec_put(o + p->fields_head_len, v->remaining);
    memcpy(o, ";t=", 3);
    o = dec_put(o + 3, v->reset_s);
    memcpy(o, "\r\n", 2);
    b->len = (size_t)(o + 2 - b->data);
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
    /* T <= 1 s (window <= limit seconds, both defaults): the wait is in (0, T], so t = 1 */
    if (p->window_ms / 1000 + (p->window_ms % 1000 != 0) <= p->limit) return 1;
    uint64_t t_us = (p->window_ms * 1000 + p->limit - 1) / p->limit;
    if (!t_us) t_us = 1;
    uint64_t rem = (reset_ms * 1000) % t_us;
    return ((rem ? rem : t_us) + 999999) / 1000000;
}

/* The verdict of an admitted request: what the RateLimit fields read (limit, window_s and
 * retry_after_s are a 429's). */
static inline int admitted(const char *vname, const sc_policy *p, int t1, uint64_t t_us, const rl_result *res,
                           limiter_verdict *v)
{
    v->policy = vname;              /* the policy's name when limiter.headers, else NULL */
    v->pol = p;
    v->remaining = res->remaining;
    /* t: the time until the next request drips back (within T; an admitted request always owes).
     * t_us: T in microseconds when the caller has it (0: next_unit_s computes it) */
    if (!res->reset_ms) v->reset_s = 0;
    else if (t1) v->reset_s = 1;
    else if (t_us) {
        uint64_t rem = (res->reset_ms * 1000) % t_us;
        v->reset_s = ((rem ? rem : t_us) + 999999) / 1000000;
    } else v->reset_s = next_unit_s(p, res->reset_ms);
    return 1;
}

static int decide(conn *c, const sc_policy *p, const rl_result *res, limiter_verdict *v)
{
    worker *w = c->w;
    const sconfig *cfg = w->app_cfg;
    if (res->allowed) return admitted(cfg->ratelimit_headers ? p->name : NULL, p, 0, 0, res, v);
    v->policy = p->name;
    v->pol = p;
    v->limit = p->limit;
    v->window_s = (p->window_ms + 999) / 1000;
    v->remaining = res->remaining;
    v->retry_after_s = res->retry_after_ms == UINT64_MAX ? v->window_s : (res->retry_after_ms + 999) / 1000;
    if (!v->retry_after_s) v->retry_after_s = 1;
    /* t: on a 429 the wait Retry-After gives (the same value, so a client reading either waits
     * the same) */
    v->reset_s = v->retry_after_s;
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

/* A policy's GCRA constants, kept per worker so that a check does not divide to find T. A
 * configuration never changes once loaded, and the worker counts its swaps (reloads): so the
 * policy's index and the swap count name the policy exactly. */
typedef struct gcra_slot {
    const sc_policy *pol;
    unsigned long long gen;         /* w->swapped_gen when filled */
    int ok;
    int t1;                         /* T <= 1 s: the RateLimit t of an admitted request is 1 */
    uint64_t t_us;                  /* T in us, rounded up as next_unit_s rounds it */
    size_t hlen;                    /* strlen(pol->key_header), 0 without one */
    int kind;                       /* which check decides locally: KIND_* */
    const char *vname;              /* the verdict's policy name: pol->name when limiter.headers */
    rl_gcra g;
} gcra_slot;
#define GCRA_SLOTS 8
enum { KIND_GENERAL, KIND_PEER, KIND_HEADER };  /* check_general, the peer key, check_header */

/* Leases (ratelimit.h): the worker takes several admissions of a busy key in one table decision
 * and spends them on that key's next requests of the same millisecond, from any of its
 * connections; what is left goes back before the loop sleeps (the flush, once per loop
 * iteration). A pipelined batch then costs one table decision instead of one per request, and
 * workers sharing a hot key (every client behind one proxy address) no longer pass its cache line
 * back and forth on every request. A slot per key hash; a lease is sized by its key's demand: the
 * requests of the previous loop iteration, doubled when the lease runs dry, 1 (a plain check)
 * for a key seen once, so that little is ever handed back. */
typedef struct lease_slot {
    rl_lease ls;
    uint64_t hash;                  /* the slot's key (hash and policy: enough to size leases) */
    uint32_t policy;
    uint32_t want;                  /* admissions the next lease takes */
    uint32_t demand;                /* requests for the key in this loop iteration */
} lease_slot;
#define LEASE_SLOTS 16
#define LEASE_MAX 64

typedef struct rlside {
    rlwait *pending;                /* decisions in flight (few: each lasts < 250 ms) */
    rlwait *free;
    gcra_slot gcra[GCRA_SLOTS];
    worker *w;
    ev_prepare flush_w;             /* hands the leases back before the loop waits */
    uint32_t touched;               /* bit i: lease[i] was used in this loop iteration */
    lease_slot lease[LEASE_SLOTS];
    /* The configuration's one catch-all policy (a single `paths = { "/" }` prefix for every
     * method: every request path matches it), found once per configuration as the gcra slots are;
     * -1 when the prefixes must be searched per request (sconfig_policy_for). */
    const sconfig *root_cfg;
    unsigned long long root_gen;
    int root_pi;
} rlside;

static void lease_flush_cb(struct ev_loop *loop, ev_prepare *pw, int revents)
{
    (void)loop, (void)revents;
    rlside *sd = (rlside *)((char *)pw - offsetof(rlside, flush_w));
    for (uint32_t m = sd->touched; m; m &= m - 1) {
        lease_slot *e = &sd->lease[__builtin_ctz(m)];
        if (e->ls.left) ratelimit_lease_end(sd->w->srv->rl, &e->ls);
        e->want = e->demand < LEASE_MAX ? e->demand : LEASE_MAX;
        e->demand = 0;
    }
    sd->touched = 0;
}

/* The worker's limiter state, made on first use (once per worker). */
static rlside *side(worker *w)
{
    if (w->limiter) return w->limiter;
    rlside *sd = calloc(1, sizeof(rlside));
    if (!sd) return NULL;
    sd->w = w;
    ev_prepare_init(&sd->flush_w, lease_flush_cb);
    ev_prepare_start(w->loop, &sd->flush_w);
    ev_unref(w->loop);              /* does not keep the loop alive */
    return w->limiter = sd;
}

/* One decision for prepared key k at the worker's clock: from the worker's lease of the key when
 * it has one for this millisecond, else from the table (taking a lease when the key is busy).
 * Returns 1 when admitted from the lease (the caller need not look at res->allowed: what the
 * verdict does not read is then never stored), 0 when the table decided, -1 for another policy. */
static inline __attribute__((always_inline)) int table_check(worker *w, ratelimit *rl, const rl_gcra *g, rl_key *k, rl_result *res)
{
    uint64_t now_ms = worker_now_us(w) / 1000;
    rlside *sd = w->limiter;        /* made by policy_gcra; NULL only without memory */
    if (!sd) return ratelimit_check_key(rl, g, k, 1, now_ms, res);
    unsigned i = (unsigned)(k->hash >> 7) % LEASE_SLOTS;
    lease_slot *e = &sd->lease[i];
    if (e->hash != k->hash || e->policy != k->policy) {
        /* another key's slot: while that key holds a lease, this one is checked plainly; else the
         * slot is this key's from now on, and its first request is a plain check (with many
         * clients, most keys come once per loop iteration) */
        if (!e->ls.left) {
            e->hash = k->hash, e->policy = k->policy, e->want = 1, e->demand = 1;
            sd->touched |= 1u << i;
        }
        return ratelimit_check_key(rl, g, k, 1, now_ms, res);
    }
    e->demand++;
    sd->touched |= 1u << i;
    if (e->ls.left) {
        if (ratelimit_lease_take(g, k, now_ms, &e->ls, res)) return 1;
        ratelimit_lease_end(rl, &e->ls);    /* another millisecond, policy or table epoch */
    }
    if (e->demand > e->want) e->want = e->want * 2 < LEASE_MAX ? e->want * 2 : LEASE_MAX;
    if (e->want <= 1) return ratelimit_check_key(rl, g, k, 1, now_ms, res);
    return ratelimit_lease(rl, g, k, e->want, now_ms, res, &e->ls);
}

/* The GCRA constants of policy pi (into tmp when there is no cache); NULL for an invalid policy. */
static __attribute__((noinline)) const gcra_slot *policy_gcra_fill(worker *w, int pi, const sc_policy *p,
                                                                   gcra_slot *tmp)
{
    rl_policy pol = {p->id, p->limit, p->window_ms, p->burst};
    rlside *sd = side(w);
    gcra_slot *e = sd ? &sd->gcra[(unsigned)pi % GCRA_SLOTS] : tmp;
    e->ok = ratelimit_gcra(&pol, &e->g) == 0;
    e->t1 = e->ok && e->g.T <= 1000000000u;
    e->t_us = (p->window_ms * 1000 + p->limit - 1) / (p->limit ? p->limit : 1);
    if (!e->t_us) e->t_us = 1;
    e->hlen = p->key_header ? strlen(p->key_header) : 0;
    const sconfig *cfg = w->app_cfg;
    e->kind = p->key_kind == RLKEY_IP && !cfg->trust ? KIND_PEER
              : p->key_kind == RLKEY_HEADER && p->key_header ? KIND_HEADER : KIND_GENERAL;
    e->vname = cfg->ratelimit_headers ? p->name : NULL;
    e->pol = p;
    e->gen = w->swapped_gen;
    return e->ok ? e : NULL;
}

static inline const gcra_slot *policy_gcra(worker *w, int pi, const sc_policy *p, gcra_slot *tmp)
{
    const rlside *sd = w->limiter;
    if (sd) {
        const gcra_slot *e = &sd->gcra[(unsigned)pi % GCRA_SLOTS];
        if (e->pol == p && e->gen == w->swapped_gen) return e->ok ? e : NULL;
    }
    return policy_gcra_fill(w, pi, p, tmp);
}

/* The policy index for a request path: the catch-all without a search when there is one. */
static __attribute__((noinline)) int policy_for_fill(worker *w, const sconfig *cfg, int method, const char *path,
                                                     size_t plen)
{
    rlside *sd = side(w);
    if (sd) {
        const sc_prefix *px = cfg->prefixes;
        sd->root_pi = cfg->nprefixes == 1 && px->len == 1 && px->prefix[0] == '/' && !px->methods ? px->policy : -1;
        sd->root_cfg = cfg;
        sd->root_gen = w->swapped_gen;
    }
    return sconfig_policy_for(cfg, method, path, plen);
}

static inline int policy_for(worker *w, const sconfig *cfg, int method, const char *path, size_t plen)
{
    const rlside *sd = w->limiter;
    if (!sd || sd->root_cfg != cfg || sd->root_gen != w->swapped_gen) return policy_for_fill(w, cfg, method, path, plen);
    if (sd->root_pi >= 0 && plen && path[0] == '/') return sd->root_pi;  /* what the search would find */
    return sconfig_policy_for(cfg, method, path, plen);
}

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
    rlside *sd = side(w);
    if (!sd) return 0;
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
    lease_flush_cb(w->loop, &sd->flush_w, 0);
    ev_ref(w->loop);
    ev_prepare_stop(w->loop, &sd->flush_w);
    while (sd->pending) {
        rbus_cancel(sd->pending->op);
        wait_unlink(sd, sd->pending);
    }
    for (rlwait *wt = sd->free, *n; wt; wt = n) { n = wt->next; free(wt); }
    free(sd);
    w->limiter = NULL;
}

/* Every key kind but the peer address, and every decision made in Redis. */
static __attribute__((noinline)) int check_general(conn *c, int pi, const sc_policy *p, limiter_verdict *v,
                                                   void (*done)(conn *c, int rc))
{
    worker *w = c->w;
    const sconfig *cfg = w->app_cfg;
    ratelimit *rl = w->srv->rl;
    char buf[256];
    const char *key;
    long kl = policy_key(c, p, buf, sizeof buf, &key);
    if (done && w->rbus) {
        size_t n = kl >= 0 ? (size_t)kl : client_key(c, buf, sizeof buf);
        rl_policy pol = {p->id, p->limit, p->window_ms, p->burst};
        if (rbus_ready(w) && redis_check(c, &pol, key, n, done)) {
            c->state = CS_HANDLING;     /* stop parsing pipelined requests until the verdict */
            return 2;
        }
        rbus_count(w->srv, RBC_RL_FALLBACK);
        if (cfg->redis_fail_closed) return refuse_unavailable(c);
    }
    gcra_slot gtmp;
    const gcra_slot *gs = policy_gcra(w, pi, p, &gtmp);
    if (!gs) return 0;
    rl_key ktmp, *k = &ktmp;
    if (kl >= 0) ratelimit_key(rl, p->id, key, (size_t)kl, &ktmp);
    else if (!cfg->trust) k = peer_key(c, rl, p->id);  /* the same for the whole connection */
    else ratelimit_key(rl, p->id, buf, client_key(c, buf, sizeof buf), &ktmp);
    rl_result res;
    if (table_check(w, rl, &gs->g, k, &res) < 0) return 0;
    return res.allowed ? admitted(gs->vname, p, gs->t1, gs->t_us, &res, v) : decide(c, p, &res, v);
}

/* n equal bytes (few: a header name), without a call. */
static inline int same_bytes(const char *a, const char *b, size_t n)
{
    uint64_t x, y, u, v;
    if (n >= 8) {
        for (size_t i = 0; i + 8 < n; i += 8) {
            memcpy(&x, a + i, 8), memcpy(&y, b + i, 8);
            if (x != y) return 0;
        }
        memcpy(&x, a + n - 8, 8), memcpy(&y, b + n - 8, 8);
        return x == y;
    }
    if (n >= 4) {
        uint32_t p, q, r, t;
        memcpy(&p, a, 4), memcpy(&q, b, 4), memcpy(&r, a + n - 4, 4), memcpy(&t, b + n - 4, 4);
        return p == q && r == t;
    }
    u = v = 0;
    for (size_t i = 0; i < n; i++) u = u << 8 | (uint8_t)a[i], v = v << 8 | (uint8_t)b[i];
    return u == v;
}

/* The first value of the lower-case header name (nlen bytes), as http_req_header finds it. */
static inline const char *find_header(const http_req *r, const char *name, size_t nlen, size_t *vlen)
{
    for (unsigned i = 0; i < r->nheaders; i++) {
        const http_header *h = &r->headers[i];
        if (h->nlen == nlen && same_bytes(http_hname(r, h), name, nlen)) {
            *vlen = h->vlen;
            return http_hvalue(r, h);
        }
    }
    return NULL;
}

/* A policy keyed by a request header, decided by the local table (issue 21: with many clients
 * every request brings another key, so the key is prepared per request): the header found with
 * the policy's cached name length, the key prepared straight from the value. Without the header
 * (the client address is the key) or with Redis: check_general. */
static inline int check_header(conn *c, int pi, const gcra_slot *gs, limiter_verdict *v, void (*done)(conn *c, int rc))
{
    worker *w = c->w;
    ratelimit *rl = w->srv->rl;
    const sc_policy *p = gs->pol;
    size_t n = 0;
    const char *val = find_header(&c->req, p->key_header, gs->hlen, &n);
    if (!val || !n) return check_general(c, pi, p, v, done);
    rl_key k;
    ratelimit_key(rl, p->id, val, n < 255 ? n : 255, &k);   /* cut as policy_key cuts */
    rl_result res;
    int rc = table_check(w, rl, &gs->g, &k, &res);
    if (rc < 0) return 0;
    return rc || res.allowed ? admitted(gs->vname, gs->pol, gs->t1, gs->t_us, &res, v) : decide(c, gs->pol, &res, v);
}

/* The common case kept short (issue 21: pipelined requests pay it each): a policy keyed by the
 * socket peer, decided by the local table with the connection's prepared key. */
static int check(conn *c, const char *path, size_t plen, limiter_verdict *v, void (*done)(conn *c, int rc))
{
    worker *w = c->w;
    const sconfig *cfg = w->app_cfg;
    ratelimit *rl = w->srv->rl;
    if (!rl || !cfg->nprefixes) return 0;
    int pi = policy_for(w, cfg, c->req.method, path, plen);
    if (pi < 0) return 0;
    const sc_policy *p = &cfg->policies[pi];
    gcra_slot gtmp;
    const gcra_slot *gs = policy_gcra(w, pi, p, &gtmp);
    if (!gs || gs->kind == KIND_GENERAL || (done && w->rbus)) return check_general(c, pi, p, v, done);
    if (gs->kind == KIND_HEADER) return check_header(c, pi, gs, v, done);
    rl_result res;
    int rc = table_check(w, rl, &gs->g, peer_key(c, rl, p->id), &res);
    if (rc < 0) return 0;
    return rc || res.allowed ? admitted(gs->vname, p, gs->t1, gs->t_us, &res, v) : decide(c, p, &res, v);
}

int limiter_check(conn *c, const char *path, size_t plen, limiter_verdict *v)
{
    return check(c, path, plen, v, NULL);
}

int limiter_check_async(conn *c, const char *path, size_t plen, limiter_verdict *v, void (*done)(conn *c, int rc))
{
    return check(c, path, plen, v, done);
}
