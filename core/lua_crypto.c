/* lua_crypto.c: the `sluice.crypto` and `sluice.password` modules behind lua/sluice_crypto.lua and
 * lua/sluice_jwt.lua: hashes, HMAC, randomness, encodings, JWS keys and signatures (crypto.c, jws.c),
 * and Argon2id hashing run on the workpool so the calling coroutine waits, not the worker.
 * Misuse raises; input that is merely wrong (bad base64, a PEM that is not a key) returns nil, msg. */
#include <lauxlib.h>
#include <lua.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "lua_crypto.h"

#include "crypto.h"
#include "jws.h"
#include "lua_app.h"
#include "lua_jwt.h"
#include "workpool.h"

#define KEY_MT "sluice.crypto.key"
#define RANDOM_MAX (1 << 20)          /* largest random_bytes(n) */
#define POOL_QUEUE 1024               /* password jobs waiting for a thread, per process */
#define POOL_NICE 5                   /* hashing yields the core to the event loops (weight 1/3 of nice 0) */

static int check_md(lua_State *L, int idx)
{
    int md = crypto_md_from_name(luaL_checkstring(L, idx));
    if (md < 0) luaL_argerror(L, idx, "digest must be sha1, sha256, sha384 or sha512");
    return md;
}

/* hash(alg, s) -> raw digest */
static int l_hash(lua_State *L)
{
    int md = check_md(L, 1);
    size_t n;
    const char *s = luaL_checklstring(L, 2, &n);
    unsigned char out[CRYPTO_MD_MAX];
    int len = crypto_digest(md, s, n, out);
    if (len < 0) return luaL_error(L, "digest failed");
    lua_pushlstring(L, (const char *)out, (size_t)len);
    return 1;
}

/* hmac(alg, key, msg) -> raw MAC */
static int l_hmac(lua_State *L)
{
    int md = check_md(L, 1);
    size_t kl, n;
    const char *k = luaL_checklstring(L, 2, &kl);
    const char *m = luaL_checklstring(L, 3, &n);
    unsigned char out[CRYPTO_MD_MAX];
    int len = crypto_hmac(md, k, kl, m, n, out);
    if (len < 0) return luaL_error(L, "hmac failed");
    lua_pushlstring(L, (const char *)out, (size_t)len);
    return 1;
}

static int l_random(lua_State *L)
{
    lua_Integer n = luaL_checkinteger(L, 1);
    if (n < 0 || n > RANDOM_MAX) return luaL_argerror(L, 1, "must be 0..1048576");
    luaL_Buffer b;
    luaL_buffinit(L, &b);
    while (n > 0) {
        size_t chunk = n > LUAL_BUFFERSIZE ? LUAL_BUFFERSIZE : (size_t)n;
        char *p = luaL_prepbuffer(&b);
        crypto_random(p, chunk);
        luaL_addsize(&b, chunk);
        n -= (lua_Integer)chunk;
    }
    luaL_pushresult(&b);
    return 1;
}

static int l_equal(lua_State *L)
{
    size_t an, bn;
    const char *a = luaL_checklstring(L, 1, &an);
    const char *b = luaL_checklstring(L, 2, &bn);
    lua_pushboolean(L, crypto_equal(a, an, b, bn));
    return 1;
}

/* A scratch buffer from a Lua userdata (collected with the call's garbage). */
static char *scratch(lua_State *L, size_t n) { return lua_newuserdata(L, n ? n : 1); }

/* b64encode(s, url) */
static int l_b64encode(lua_State *L)
{
    size_t n;
    const char *s = luaL_checklstring(L, 1, &n);
    int url = lua_toboolean(L, 2);
    char *out = scratch(L, crypto_b64_len(n, url) + 1);
    size_t len = crypto_b64_encode(s, n, out, url);
    lua_pushlstring(L, out, len);
    return 1;
}

/* b64decode(s, url) -> bytes | nil, msg */
static int l_b64decode(lua_State *L)
{
    size_t n;
    const char *s = luaL_checklstring(L, 1, &n);
    int url = lua_toboolean(L, 2);
    unsigned char *out = (unsigned char *)scratch(L, n * 3 / 4 + 1);
    long len = crypto_b64_decode(s, n, out, url);
    if (len < 0) {
        lua_pushnil(L);
        lua_pushstring(L, url ? "invalid base64url" : "invalid base64");
        return 2;
    }
    lua_pushlstring(L, (const char *)out, (size_t)len);
    return 1;
}

static int l_hexencode(lua_State *L)
{
    size_t n;
    const char *s = luaL_checklstring(L, 1, &n);
    char *out = scratch(L, 2 * n + 1);
    lua_pushlstring(L, out, crypto_hex_encode(s, n, out));
    return 1;
}

static int l_hexdecode(lua_State *L)
{
    size_t n;
    const char *s = luaL_checklstring(L, 1, &n);
    unsigned char *out = (unsigned char *)scratch(L, n / 2 + 1);
    long len = crypto_hex_decode(s, n, out);
    if (len < 0) { lua_pushnil(L); lua_pushstring(L, "invalid hex"); return 2; }
    lua_pushlstring(L, (const char *)out, (size_t)len);
    return 1;
}

/* ---------------------------------------------------------------- keys */

typedef struct keyud {
    jws_key *k;
} keyud;

static void push_key(lua_State *L, jws_key *k)
{
    keyud *u = lua_newuserdata(L, sizeof *u);
    u->k = k;
    luaL_getmetatable(L, KEY_MT);
    lua_setmetatable(L, -2);
}

static jws_key *check_key(lua_State *L, int idx)
{
    keyud *u = luaL_checkudata(L, idx, KEY_MT);
    if (!u->k) luaL_argerror(L, idx, "key was freed");
    return u->k;
}

static int key_gc(lua_State *L)
{
    keyud *u = luaL_checkudata(L, 1, KEY_MT);
    jws_key_free(u->k);
    u->k = NULL;                  /* idempotent */
    return 0;
}

static int key_fail(lua_State *L, const char *msg)
{
    lua_pushnil(L);
    lua_pushstring(L, msg);
    return 2;
}

/* key_secret(bytes) */
static int l_key_secret(lua_State *L)
{
    size_t n;
    const char *s = luaL_checklstring(L, 1, &n);
    jws_key *k = jws_key_secret(s, n);
    if (!k) return luaL_error(L, "out of memory");
    push_key(L, k);
    return 1;
}

/* key_pem(text) -> key | nil, msg */
static int l_key_pem(lua_State *L)
{
    size_t n;
    const char *s = luaL_checklstring(L, 1, &n);
    char err[256];
    jws_key *k = jws_key_pem(s, n, err, sizeof err);
    if (!k) return key_fail(L, err);
    push_key(L, k);
    return 1;
}

/* A base64url JWK member into buf (NULL/0 when absent); -1 when it is not base64url. */
static int jwk_member(lua_State *L, int t, const char *name, unsigned char *buf, jws_bytes *out)
{
    lua_getfield(L, t, name);
    size_t n = 0;
    const char *s = lua_type(L, -1) == LUA_TSTRING ? lua_tolstring(L, -1, &n) : NULL;
    out->p = NULL;
    out->n = 0;
    if (!s) {
        int absent = lua_isnil(L, -1);
        lua_pop(L, 1);
        return absent ? 0 : -1;
    }
    long len = n <= (JWS_SIG_MAX * 4 / 3) ? crypto_b64_decode(s, n, buf, 1) : -1;
    lua_pop(L, 1);
    if (len < 0) return -1;
    out->p = buf;
    out->n = (size_t)len;
    return 0;
}

/* key_jwk(table) -> key | nil, msg: kty oct (k), RSA (n, e [, d, p, q, dp, dq, qi]), EC (crv, x,
 * y [, d]), OKP (crv, x [, d]) */
static int l_key_jwk(lua_State *L)
{
    luaL_checktype(L, 1, LUA_TTABLE);
    lua_getfield(L, 1, "kty");
    const char *kty = lua_tostring(L, -1);
    lua_getfield(L, 1, "crv");
    const char *crv = lua_tostring(L, -1);
    if (!kty) return key_fail(L, "JWK without kty");
    static const char *const names[] = {"k", "n", "e", "d", "p", "q", "dp", "dq", "qi", "x", "y"};
    enum { K, N, E, D, P, Q, DP, DQ, QI, X, Y, NM };
    unsigned char *buf = (unsigned char *)scratch(L, NM * JWS_SIG_MAX);
    jws_bytes v[NM];
    for (int i = 0; i < NM; i++) {
        if (jwk_member(L, 1, names[i], buf + i * JWS_SIG_MAX, &v[i])) {
            lua_pushnil(L);
            lua_pushfstring(L, "JWK member %s is not base64url (or too long)", names[i]);
            return 2;
        }
    }
    char err[256] = "unsupported kty (oct, RSA, EC or OKP)";
    jws_key *k = NULL;
    if (strcmp(kty, "oct") == 0) {
        if (!v[K].n) return key_fail(L, "oct JWK without k");
        k = jws_key_secret(v[K].p, v[K].n);
    } else if (strcmp(kty, "RSA") == 0) {
        k = jws_key_rsa(v[N], v[E], v[D], v[P], v[Q], v[DP], v[DQ], v[QI], err, sizeof err);
    } else if (strcmp(kty, "EC") == 0) {
        k = jws_key_ec(crv, v[X], v[Y], v[D], err, sizeof err);
    } else if (strcmp(kty, "OKP") == 0) {
        k = jws_key_okp(crv, v[X], v[D], err, sizeof err);
    }
    if (!k) return key_fail(L, err);
    push_key(L, k);
    return 1;
}

static int key_kind(lua_State *L)
{
    static const char *const kinds[] = {"oct", "RSA", "EC", "OKP"};
    lua_pushstring(L, kinds[jws_key_kind(check_key(L, 1))]);
    return 1;
}

static int key_private(lua_State *L)
{
    lua_pushboolean(L, jws_key_private(check_key(L, 1)));
    return 1;
}

static int key_bits(lua_State *L)
{
    lua_pushinteger(L, jws_key_bits(check_key(L, 1)));
    return 1;
}

/* key:fits(alg) -> nil | reason */
static int key_fits(lua_State *L)
{
    jws_key *k = check_key(L, 1);
    size_t n;
    const char *a = luaL_checklstring(L, 2, &n);
    int alg = jws_alg_from_name(a, n);
    const char *why = alg < 0 ? "alg not supported" : jws_key_fits(k, alg);
    if (why) lua_pushstring(L, why);
    else lua_pushnil(L);
    return 1;
}

static void set_b64(lua_State *L, const char *name, const unsigned char *p, size_t n)
{
    char out[JWS_SIG_MAX * 2];
    size_t len = crypto_b64_encode(p, n, out, 1);
    lua_pushlstring(L, out, len);
    lua_setfield(L, -2, name);
}

/* key:public_jwk() -> { kty =, n =, e = | crv =, x =, y = } (nil for a secret) */
static int key_public_jwk(lua_State *L)
{
    jws_key *k = check_key(L, 1);
    if (jws_key_kind(k) == JWS_SECRET) return 0;
    unsigned char *a = (unsigned char *)scratch(L, 2 * JWS_SIG_MAX), *b = a + JWS_SIG_MAX;
    size_t al, bl;
    if (jws_key_public(k, a, &al, b, &bl)) return luaL_error(L, "cannot export the public key");
    lua_newtable(L);
    int kind = jws_key_kind(k);
    lua_pushstring(L, kind == JWS_RSA ? "RSA" : kind == JWS_EC ? "EC" : "OKP");
    lua_setfield(L, -2, "kty");
    if (kind == JWS_RSA) {
        set_b64(L, "n", a, al);
        set_b64(L, "e", b, bl);
    } else {
        lua_pushstring(L, jws_key_curve(k));
        lua_setfield(L, -2, "crv");
        set_b64(L, "x", a, al);
        if (kind == JWS_EC) set_b64(L, "y", b, bl);
    }
    return 1;
}

static int key_tostring(lua_State *L)
{
    jws_key *k = check_key(L, 1);
    static const char *const kinds[] = {"HMAC secret", "RSA", "EC", "OKP"};
    const char *crv = jws_key_curve(k);
    lua_pushfstring(L, "crypto key (%s %s%d bits, %s)", kinds[jws_key_kind(k)], crv ? crv : "", jws_key_bits(k),
                    jws_key_private(k) ? "private" : "public");
    return 1;
}

static int check_alg(lua_State *L, int idx)
{
    size_t n;
    const char *a = luaL_checklstring(L, idx, &n);
    int alg = jws_alg_from_name(a, n);
    if (alg < 0) luaL_argerror(L, idx, "alg must be HS256/384/512, RS256/384/512, PS256/384/512, ES256/384/512 or EdDSA");
    return alg;
}

/* sign(key, alg, msg) -> raw signature; raises when the key cannot sign with alg */
static int l_sign(lua_State *L)
{
    jws_key *k = check_key(L, 1);
    int alg = check_alg(L, 2);
    size_t n;
    const char *m = luaL_checklstring(L, 3, &n);
    const char *why = jws_key_fits(k, alg);
    if (why) return luaL_error(L, "cannot sign %s: %s", jws_alg_name(alg), why);
    if (!jws_key_private(k)) return luaL_error(L, "cannot sign %s with a public key", jws_alg_name(alg));
    unsigned char *sig = (unsigned char *)scratch(L, JWS_SIG_MAX);
    size_t sl = 0;
    if (jws_sign(k, alg, m, n, sig, &sl)) return luaL_error(L, "signing failed");
    lua_pushlstring(L, (const char *)sig, sl);
    return 1;
}

/* verify(key, alg, msg, sig) -> boolean */
static int l_verify(lua_State *L)
{
    jws_key *k = check_key(L, 1);
    int alg = check_alg(L, 2);
    size_t n, sl;
    const char *m = luaL_checklstring(L, 3, &n);
    const char *s = luaL_checklstring(L, 4, &sl);
    lua_pushboolean(L, jws_verify(k, alg, m, n, (const unsigned char *)s, sl));
    return 1;
}

/* jws_split(token, max) -> header_json, payload_json, signing_input_len, sig (maybe empty) | nil, reason.
 * The compact serialization's three base64url parts, decoded in one pass (the hot path of
 * app.jwt.verify: no Lua string for each part). */
static int l_jws_split(lua_State *L)
{
    size_t n;
    const char *t = luaL_checklstring(L, 1, &n);
    lua_Integer max = luaL_optinteger(L, 2, 8192);
    if ((lua_Integer)n > max) return key_fail(L, "token too large");
    const char *d1 = memchr(t, '.', n);
    const char *d2 = d1 ? memchr(d1 + 1, '.', n - (size_t)(d1 + 1 - t)) : NULL;
    if (!d1 || !d2 || memchr(d2 + 1, '.', n - (size_t)(d2 + 1 - t))) return key_fail(L, "malformed token");
    size_t hl = (size_t)(d1 - t), pl = (size_t)(d2 - d1 - 1), sl = n - (size_t)(d2 + 1 - t);
    unsigned char stackbuf[8192 + 4];            /* the decoded parts are shorter than the token */
    unsigned char *buf = n <= 8192 ? stackbuf : (unsigned char *)scratch(L, n + 4);
    long h = crypto_b64_decode(t, hl, buf, 1);
    long p = h > 0 ? crypto_b64_decode(d1 + 1, pl, buf + h, 1) : -1;
    long s = p >= 0 ? crypto_b64_decode(d2 + 1, sl, buf + h + p, 1) : -1;
    if (h <= 0 || p < 0 || s < 0) return key_fail(L, "malformed token");
    lua_pushlstring(L, (const char *)buf, (size_t)h);
    lua_pushlstring(L, (const char *)buf + h, (size_t)p);
    lua_pushinteger(L, (lua_Integer)(d2 - t));
    lua_pushlstring(L, (const char *)buf + h + p, (size_t)s);
    return 4;
}

/* jws_check(key, alg, token, input_len, sig) -> boolean: verify over the token's first
 * input_len bytes (no copy of the signing input) */
static int l_jws_check(lua_State *L)
{
    jws_key *k = check_key(L, 1);
    int alg = check_alg(L, 2);
    size_t n, sl;
    const char *t = luaL_checklstring(L, 3, &n);
    lua_Integer il = luaL_checkinteger(L, 4);
    const char *s = luaL_checklstring(L, 5, &sl);
    if (il < 0 || (size_t)il > n) return luaL_argerror(L, 4, "out of range");
    lua_pushboolean(L, jws_verify(k, alg, t, (size_t)il, (const unsigned char *)s, sl));
    return 1;
}

int luaopen_sluice_crypto(lua_State *L)
{
    static const luaL_Reg key_methods[] = {
        {"kind", key_kind}, {"private", key_private}, {"bits", key_bits},
        {"fits", key_fits}, {"public_jwk", key_public_jwk}, {NULL, NULL},
    };
    static const luaL_Reg fns[] = {
        {"hash", l_hash},           {"hmac", l_hmac},           {"random", l_random},
        {"equal", l_equal},         {"b64encode", l_b64encode}, {"b64decode", l_b64decode},
        {"hexencode", l_hexencode}, {"hexdecode", l_hexdecode}, {"key_secret", l_key_secret},
        {"key_pem", l_key_pem},     {"key_jwk", l_key_jwk},     {"sign", l_sign},
        {"verify", l_verify},       {"jws_split", l_jws_split}, {"jws_check", l_jws_check},
        {NULL, NULL},
    };
    if (crypto_init()) return luaL_error(L, "libsodium failed to initialise");
    if (luaL_newmetatable(L, KEY_MT)) {
        lua_pushcfunction(L, key_gc);
        lua_setfield(L, -2, "__gc");
        lua_pushcfunction(L, key_tostring);
        lua_setfield(L, -2, "__tostring");
        lua_newtable(L);
        luaL_setfuncs(L, key_methods, 0);
        lua_setfield(L, -2, "__index");
        lua_pushliteral(L, "crypto key");
        lua_setfield(L, -2, "__metatable");
    }
    lua_pop(L, 1);
    lua_newtable(L);
    luaL_setfuncs(L, fns, 0);
    lua_jwt_register(L);
    return 1;
}

/* ---------------------------------------------------------------- sluice.password */

/* The hashing threads: one pool for the process (every worker's state hashes on it), created by
 * the first hash that needs it, freed by lua_password_shutdown. */
static workpool *_Atomic password_pool;

void lua_password_shutdown(void)
{
    workpool_free(atomic_exchange(&password_pool, NULL));
}

typedef struct pwjob {
    wp_job job;
    task *t;
    int verify;
    int result;                   /* hash: 0 / -1; verify: 1 / 0 */
    unsigned long long ops;
    size_t mem;
    size_t pwlen, hlen;
    char hash[CRYPTO_PASSWORD_STRLEN];
    char pw[];                    /* pwlen bytes, wiped before free */
} pwjob;

static void pw_run(wp_job *j)
{
    pwjob *p = (pwjob *)j;
    if (p->verify) p->result = crypto_password_verify(p->pw, p->pwlen, p->hash, p->hlen);
    else p->result = crypto_password_hash(p->pw, p->pwlen, p->ops, p->mem, p->hash);
}

/* Pushes the job's answer: hash -> string | nil, msg; verify -> boolean. */
static int pw_push(lua_State *L, pwjob *p)
{
    if (p->verify) { lua_pushboolean(L, p->result == 1); return 1; }
    if (p->result == 0) { lua_pushstring(L, p->hash); return 1; }
    lua_pushnil(L);
    lua_pushstring(L, "password hashing failed (out of memory for mem_limit_kb?)");
    return 2;
}

static void pw_free(pwjob *p)
{
    memset(p->pw, 0, p->pwlen);   /* plain memset: the free right after cannot be elided away */
    __asm__ __volatile__("" : : "r"(p->pw) : "memory");
    free(p);
}

static void pw_done(wp_job *j)
{
    pwjob *p = (pwjob *)j;
    task *t = p->t;
    if (!t) { pw_free(p); return; }          /* its task was abandoned (pw_cancel) */
    int n = pw_push(t->co, p);
    t->wait = NULL;
    pw_free(p);
    task_resume(t, n);
}

/* t->cancel: the task is abandoned (lua_app.c). The hash runs to its end on its thread (a running
 * argon2 cannot be stopped); pw_done then only frees the job. */
static void pw_cancel(task *t)
{
    pwjob *p = t->wait;
    if (p) p->t = NULL;
    t->wait = NULL;
}

/* Runs the job on the pool and suspends the calling task, or runs it here when there is no
 * task to suspend (loading scripts, `sluice check`). */
static int pw_start(lua_State *L, pwjob *p, int threads)
{
    appstate *a = lua_touserdata(L, lua_upvalueindex(1));
    task *t = a ? task_current(a, L) : NULL;
    if (!t && a && a->running) {
        pw_free(p);
        return luaL_error(L, "app.password: call it from the handler itself, not from a coroutine it made");
    }
    if (!t || !a->w) {
        pw_run(&p->job);
        int n = pw_push(L, p);
        pw_free(p);
        return n;
    }
    worker *w = a->w;
    if (!w->wpinbox) {
        workpool *pool = workpool_shared(&password_pool, threads, POOL_QUEUE, POOL_NICE);
        w->wpinbox = pool ? wp_inbox_new(pool, w->loop) : NULL;
    }
    p->job.run = pw_run;
    p->job.done = pw_done;
    p->t = t;
    if (!w->wpinbox || workpool_submit(w->wpinbox, &p->job)) {
        pw_free(p);
        lua_pushnil(L);
        lua_pushstring(L, "busy: too many password hashes waiting");
        return 2;
    }
    t->wait = p;
    t->cancel = pw_cancel;
    return task_yield(L, t);
}

static pwjob *pw_new(lua_State *L, const char *pw, size_t n)
{
    pwjob *p = calloc(1, sizeof *p + n + 1);
    if (!p) luaL_error(L, "out of memory");
    memcpy(p->pw, pw, n);
    p->pwlen = n;
    return p;
}

/* hash(pw, ops, mem_bytes, threads) -> PHC string | nil, msg */
static int l_pw_hash(lua_State *L)
{
    size_t n;
    const char *pw = luaL_checklstring(L, 1, &n);
    lua_Number ops = luaL_checknumber(L, 2), mem = luaL_checknumber(L, 3);
    int threads = (int)luaL_optinteger(L, 4, 2);
    if (n > CRYPTO_PW_MAX) return luaL_argerror(L, 1, "longer than 4096 bytes");
    if (ops < 1 || mem < 0 || !crypto_password_params_ok((unsigned long long)ops, (size_t)mem))
        return luaL_argerror(L, 2, "ops_limit or mem_limit_kb out of libsodium's range");
    pwjob *p = pw_new(L, pw, n);
    p->ops = (unsigned long long)ops;
    p->mem = (size_t)mem;
    return pw_start(L, p, threads);
}

/* verify(pw, hash, threads) -> boolean */
static int l_pw_verify(lua_State *L)
{
    size_t n, hl;
    const char *pw = luaL_checklstring(L, 1, &n);
    const char *h = luaL_checklstring(L, 2, &hl);
    int threads = (int)luaL_optinteger(L, 3, 2);
    if (n > CRYPTO_PW_MAX || hl >= CRYPTO_PASSWORD_STRLEN || hl < 10 || strncmp(h, "$argon2", 7) != 0) {
        lua_pushboolean(L, 0);     /* cannot match: no need to wait for a thread */
        return 1;
    }
    pwjob *p = pw_new(L, pw, n);
    p->verify = 1;
    memcpy(p->hash, h, hl);
    p->hash[hl] = 0;
    p->hlen = hl;
    return pw_start(L, p, threads);
}

/* needs_rehash(hash, ops, mem_bytes) -> boolean */
static int l_pw_needs_rehash(lua_State *L)
{
    size_t hl;
    const char *h = luaL_checklstring(L, 1, &hl);
    lua_Number ops = luaL_checknumber(L, 2), mem = luaL_checknumber(L, 3);
    lua_pushboolean(L, crypto_password_needs_rehash(h, hl, (unsigned long long)ops, (size_t)mem));
    return 1;
}

int luaopen_sluice_password(lua_State *L)
{
    static const luaL_Reg fns[] = {
        {"hash", l_pw_hash}, {"verify", l_pw_verify}, {"needs_rehash", l_pw_needs_rehash}, {NULL, NULL},
    };
    if (crypto_init()) return luaL_error(L, "libsodium failed to initialise");
    lua_newtable(L);
    lua_pushvalue(L, lua_upvalueindex(1));
    luaL_setfuncs(L, fns, 1);
    return 1;
}
