/* sconfig.c: reads the normalized config table (lua/config.lua) into a C struct. */
#include "sconfig.h"

#include <lauxlib.h>
#include <lua.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "clientip.h"
#include "log.h"

static double num(lua_State *L, int t, const char *k, double def)
{
    lua_getfield(L, t, k);
    double v = lua_isnumber(L, -1) ? lua_tonumber(L, -1) : def;
    lua_pop(L, 1);
    return v;
}

static char *str(lua_State *L, int t, const char *k)
{
    lua_getfield(L, t, k);
    const char *s = lua_type(L, -1) == LUA_TSTRING ? lua_tostring(L, -1) : NULL;
    char *r = s ? strdup(s) : NULL;
    lua_pop(L, 1);
    return r;
}

static int boolean(lua_State *L, int t, const char *k, int def)
{
    lua_getfield(L, t, k);
    int v = lua_isboolean(L, -1) ? lua_toboolean(L, -1) : def;
    lua_pop(L, 1);
    return v;
}

/* Pushes t[k] (a table) or an empty table. */
static int sub(lua_State *L, int t, const char *k)
{
    lua_getfield(L, t, k);
    if (!lua_istable(L, -1)) { lua_pop(L, 1); lua_newtable(L); }
    return lua_gettop(L);
}

static char **strlist(lua_State *L, int t, size_t *n)
{
    *n = 0;
    if (!lua_istable(L, t)) return NULL;
    size_t len = lua_objlen(L, t);
    char **v = calloc(len + 1, sizeof *v);
    for (size_t i = 1; i <= len; i++) {
        lua_rawgeti(L, t, (int)i);
        if (lua_type(L, -1) == LUA_TSTRING) v[(*n)++] = strdup(lua_tostring(L, -1));
        lua_pop(L, 1);
    }
    return v;
}

static uint32_t name_id(const char *s)
{
    uint32_t h = 2166136261u;
    for (; *s; s++) { h ^= (unsigned char)*s; h *= 16777619u; }
    return h ? h : 1;
}

static unsigned method_bit(const char *m)
{
    static const char *names[] = {"DELETE", "GET", "HEAD", "POST", "PUT"};
    static const int nums[] = {0, 1, 2, 3, 4};   /* http_parser: DELETE=0 GET=1 HEAD=2 POST=3 PUT=4 */
    for (int i = 0; i < 5; i++) if (strcasecmp(m, names[i]) == 0) return 1u << nums[i];
    if (strcasecmp(m, "OPTIONS") == 0) return 1u << 6;
    if (strcasecmp(m, "PATCH") == 0) return 1u << 28;
    return 0;
}

sconfig *sconfig_from_lua(lua_State *L, int t, char *err, size_t errlen)
{
    sconfig *c = calloc(1, sizeof *c);
    if (!c) { snprintf(err, errlen, "out of memory"); return NULL; }
    int top = lua_gettop(L);
    c->port = (int)num(L, t, "port", 5000);
    char *host = str(L, t, "host");
    snprintf(c->host, sizeof c->host, "%s", host ? host : "0.0.0.0");
    free(host);
    lua_getfield(L, t, "workers");
    if (lua_isnumber(L, -1)) c->workers = (int)lua_tointeger(L, -1);
    else {
        long n = sysconf(_SC_NPROCESSORS_ONLN);
        c->workers = n > 0 ? (int)n : 1;
    }
    lua_pop(L, 1);
    char *env = str(L, t, "env");
    c->production = env && strcmp(env, "production") == 0;
    free(env);
    int sc = sub(L, t, "scripts");
    c->scripts = strlist(L, sc, &c->nscripts);
    lua_pop(L, 1);

    int lim = sub(L, t, "limits");
    c->max_connections = (unsigned)num(L, lim, "max_connections", 10000);
    c->max_output_buffer = (size_t)num(L, lim, "max_output_buffer", 1048576);
    c->request_timeout = num(L, lim, "request_timeout", 30);
    c->header_timeout = num(L, lim, "header_timeout", 10);
    c->keepalive_timeout = num(L, lim, "keepalive_timeout", 75);
    c->lim.body_size = (size_t)num(L, lim, "body_size", 10485760);
    c->lim.header_size = (size_t)num(L, lim, "header_size", 16384);
    c->lim.url_size = (size_t)num(L, lim, "url_size", 8192);
    c->lim.max_headers = (unsigned)num(L, lim, "max_headers", 100);
    c->script_timeout = num(L, lim, "script_timeout", 5);
    c->lua_memory_mb = num(L, lim, "lua_memory", 512);
    c->jit = boolean(L, lim, "jit", 1);
    lua_pop(L, 1);
    int co = sub(L, t, "cors");
    int x = sub(L, co, "origins");
    c->cors_origins = strlist(L, x, &c->ncors_origins);
    lua_pop(L, 1);
    x = sub(L, co, "methods");
    c->cors_methods = strlist(L, x, &c->ncors_methods);
    lua_pop(L, 1);
    x = sub(L, co, "headers");
    c->cors_headers = strlist(L, x, &c->ncors_headers);
    lua_pop(L, 1);
    x = sub(L, co, "expose");
    c->cors_expose = strlist(L, x, &c->ncors_expose);
    lua_pop(L, 1);
    c->cors_credentials = boolean(L, co, "credentials", 0);
    c->cors_max_age = (int)num(L, co, "max_age", 600);
    lua_pop(L, 1);
    c->shutdown_timeout = num(L, t, "shutdown_timeout", 30);

    int cz = sub(L, t, "compression");
    c->gzip_enabled = boolean(L, cz, "enabled", 1);
    c->gzip_level = (int)num(L, cz, "level", 6);
    c->gzip_threshold = (size_t)num(L, cz, "threshold", 1024);
    int ty = sub(L, cz, "types");
    c->gzip_types = strlist(L, ty, &c->ngzip_types);
    lua_pop(L, 2);

    int lg = sub(L, t, "log");
    char *acc = str(L, lg, "access");
    c->access_log = !acc || strcmp(acc, "off") == 0 ? 0 : strcmp(acc, "json") == 0 ? 2 : 1;
    free(acc);
    char *lvl = str(L, lg, "level");
    c->log_level = lvl ? log_level_parse(lvl) : LOG_INFO;
    if (c->log_level < 0) c->log_level = LOG_INFO;
    free(lvl);
    char *fmt = str(L, lg, "format");
    c->log_json = fmt && strcmp(fmt, "json") == 0;
    free(fmt);
    if (c->log_json && c->access_log) c->access_log = 2;   /* JSON mode: the access log too */
    lua_pop(L, 1);

    /* rate-limit policies and their path prefixes (precomputed by config.policy_routes) */
    int rl = sub(L, t, "ratelimit");
    size_t np = 0;
    lua_pushnil(L);
    while (lua_next(L, rl)) { np++; lua_pop(L, 1); }
    c->policies = calloc(np + 1, sizeof *c->policies);
    lua_pushnil(L);
    while (lua_next(L, rl)) {
        if (lua_type(L, -2) == LUA_TSTRING && lua_istable(L, -1)) {
            int p = lua_gettop(L);
            sc_policy *pol = &c->policies[c->npolicies++];
            pol->name = strdup(lua_tostring(L, -2));
            pol->id = name_id(pol->name);
            pol->limit = (uint64_t)num(L, p, "limit", 1000);
            pol->window_ms = (uint64_t)(num(L, p, "window", 900) * 1000);
            pol->burst = (uint64_t)num(L, p, "burst", (double)pol->limit);
            char *kk = str(L, p, "key_kind");
            pol->key_kind = !kk || strcmp(kk, "ip") == 0 ? RLKEY_IP : strcmp(kk, "user") == 0 ? RLKEY_USER
                          : strcmp(kk, "header") == 0 ? RLKEY_HEADER : RLKEY_FUNC;
            free(kk);
            pol->key_header = str(L, p, "key_header");
            /* names are identifiers of any length: sized by a first snprintf */
            const char *ff = "RateLimit-Policy: \"%s\";q=%llu;w=%llu\r\nRateLimit: \"%s\";r=";
            unsigned long long fq = pol->limit, fw = (pol->window_ms + 999) / 1000;
            int ln = snprintf(NULL, 0, ff, pol->name, fq, fw, pol->name);
            if (ln > 0 && (pol->fields_head = calloc(1, (size_t)ln + 1 < 64 ? 64 : (size_t)ln + 1))) {
                snprintf(pol->fields_head, (size_t)ln + 1, ff, pol->name, fq, fw, pol->name);
                pol->fields_head_len = (size_t)ln;
            }
            if (pol->key_kind == RLKEY_FUNC) {
                lua_getfield(L, p, "key");
                pol->key_fn_ref = luaL_ref(L, LUA_REGISTRYINDEX);
            }
        }
        lua_pop(L, 1);
    }
    lua_getglobal(L, "require");
    lua_pushstring(L, "config");
    lua_call(L, 1, 1);
    lua_getfield(L, -1, "policy_routes");
    lua_pushvalue(L, t);
    lua_call(L, 1, 1);
    int routes = lua_gettop(L);
    size_t nr = lua_objlen(L, routes);
    c->prefixes = calloc(nr + 1, sizeof *c->prefixes);
    for (size_t i = 1; i <= nr; i++) {
        lua_rawgeti(L, routes, (int)i);
        int e = lua_gettop(L);
        char *path = str(L, e, "path"), *pname = str(L, e, "policy");
        int idx = -1;
        for (size_t k = 0; pname && k < c->npolicies; k++) if (strcmp(c->policies[k].name, pname) == 0) idx = (int)k;
        free(pname);
        if (path && idx >= 0) {
            sc_prefix *px = &c->prefixes[c->nprefixes++];
            px->prefix = path;
            px->len = strlen(path);
            px->policy = idx;
            lua_getfield(L, e, "methods");
            if (lua_istable(L, -1)) {
                size_t nm = lua_objlen(L, -1);
                for (size_t m = 1; m <= nm; m++) {
                    lua_rawgeti(L, -1, (int)m);
                    if (lua_isstring(L, -1)) px->methods |= method_bit(lua_tostring(L, -1));
                    lua_pop(L, 1);
                }
                if (!px->methods) px->methods = 1u << 31;   /* only unknown methods: matches none */
            }
            lua_pop(L, 1);
        } else {
            free(path);
        }
        lua_pop(L, 1);
    }
    lua_settop(L, rl - 1);

    int li = sub(L, t, "limiter");
    c->limiter_max_keys = (size_t)num(L, li, "max_keys", 100000);
    c->ipv6_prefix = (unsigned)num(L, li, "ipv6_prefix", 64);
    c->ratelimit_headers = boolean(L, li, "headers", 1);
    char *rf = str(L, li, "redis_failure");
    c->redis_fail_closed = rf && strcmp(rf, "closed") == 0;
    free(rf);
    lua_pop(L, 1);
    int tp = sub(L, t, "trusted_proxies");
    c->trusted_proxies = strlist(L, tp, &c->ntrusted);
    lua_pop(L, 1);
    if (c->ntrusted) {
        char terr[256];
        c->trust = clientip_trust_parse((const char *const *)c->trusted_proxies, c->ntrusted, terr, sizeof terr);
        if (!c->trust) {
            snprintf(err, errlen, "trusted_proxies: %s", terr);
            lua_settop(L, top);
            sconfig_free(c);
            return NULL;
        }
    }

    int ss = sub(L, t, "sse");
    c->sse_max = (unsigned)num(L, ss, "max_connections", 10000);
    c->sse_per_user = (unsigned)num(L, ss, "per_user", 10);
    c->sse_per_channel = (unsigned)num(L, ss, "per_channel", 0);
    c->sse_retention = (unsigned)num(L, ss, "retention", 1000);
    c->sse_max_queue = (unsigned)num(L, ss, "max_queue", 1024);
    char *sp = str(L, ss, "slow_policy");
    c->sse_drop_oldest = sp && strcmp(sp, "drop_oldest") == 0;
    free(sp);
    c->sse_slow_timeout = num(L, ss, "slow_timeout", 5);
    c->sse_heartbeat = num(L, ss, "heartbeat", 30);
    c->sse_retention_seconds = num(L, ss, "retention_seconds", 0);
    c->sse_cleanup = num(L, ss, "cleanup_interval", 300);
    c->publish_token = str(L, ss, "publish_token");
    c->publish_path = str(L, ss, "publish_path");
    lua_pop(L, 1);

    int db = sub(L, t, "database");
    c->db_url = str(L, db, "url");
    c->statement_timeout = num(L, db, "statement_timeout", 30);
    c->db_health_interval = num(L, db, "health_interval", 5);
    int rep = sub(L, db, "replica_urls");
    size_t nrep;
    char **reps = strlist(L, rep, &nrep);
    if (nrep) {
        size_t tot = 0;
        for (size_t i = 0; i < nrep; i++) tot += strlen(reps[i]) + 1;
        c->db_replicas = calloc(1, tot + 1);
        for (size_t i = 0; i < nrep; i++) { if (i) strcat(c->db_replicas, ","); strcat(c->db_replicas, reps[i]); }
    }
    for (size_t i = 0; i < nrep; i++) free(reps[i]);
    free(reps);
    lua_pop(L, 2);

    int he = sub(L, t, "health");
    lua_getfield(L, he, "ready_requires");
    c->ready_requires = -1;
    if (lua_istable(L, -1)) {
        c->ready_requires = 0;
        for (int i = 1; i <= (int)lua_objlen(L, -1); i++) {
            lua_rawgeti(L, -1, i);
            const char *d = lua_tostring(L, -1);
            if (d && strcmp(d, "database") == 0) c->ready_requires |= SC_READY_DATABASE;
            if (d && strcmp(d, "redis") == 0) c->ready_requires |= SC_READY_REDIS;
            lua_pop(L, 1);
        }
    }
    lua_pop(L, 2);

    int rd = sub(L, t, "redis");
    c->redis_url = str(L, rd, "url");
    c->redis_prefix = str(L, rd, "prefix");
    lua_pop(L, 1);
    int ad = sub(L, t, "admin");
    c->admin_token = str(L, ad, "token");
    c->admin_loopback_only = boolean(L, ad, "loopback_only", 1);
    lua_pop(L, 1);
    int me = sub(L, t, "metrics");
    c->metrics_retention = (unsigned)num(L, me, "retention", 300);
    c->metrics_interval = num(L, me, "interval", 10);
    c->metrics_max_channels = (unsigned)num(L, me, "max_channels", 100);
    c->metrics_errors = (unsigned)num(L, me, "errors", 500);
    lua_pop(L, 1);
    lua_settop(L, top);
    return c;
}

static void freelist(char **v, size_t n)
{
    for (size_t i = 0; i < n; i++) free(v[i]);
    free(v);
}

void sconfig_free(sconfig *c)
{
    if (!c) return;
    free(c->config_file);
    free(c->base_dir);
    freelist(c->scripts, c->nscripts);
    freelist(c->gzip_types, c->ngzip_types);
    freelist(c->cors_origins, c->ncors_origins);
    freelist(c->cors_methods, c->ncors_methods);
    freelist(c->cors_headers, c->ncors_headers);
    freelist(c->cors_expose, c->ncors_expose);
    for (size_t i = 0; i < c->npolicies; i++) {
        free(c->policies[i].name);
        free(c->policies[i].key_header);
        free(c->policies[i].fields_head);
    }
    free(c->policies);
    for (size_t i = 0; i < c->nprefixes; i++) free(c->prefixes[i].prefix);
    free(c->prefixes);
    freelist(c->trusted_proxies, c->ntrusted);
    if (c->trust) clientip_trust_free(c->trust);
    free(c->publish_token);
    free(c->publish_path);
    free(c->db_url);
    free(c->db_replicas);
    free(c->redis_url);
    free(c->redis_prefix);
    free(c->admin_token);
    free(c);
}

/* Prefixes are short ("/api"): a byte loop, no call (this runs for every request). */
static inline int has_prefix(const char *path, const char *prefix, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (path[i] != prefix[i]) return 0;
    return 1;
}

int sconfig_policy_for(const sconfig *c, int method, const char *path, size_t len)
{
    unsigned bit = method >= 0 && method < 31 ? 1u << method : 0;
    for (size_t i = 0; i < c->nprefixes; i++) {
        const sc_prefix *p = &c->prefixes[i];
        if (p->methods && !(p->methods & bit)) continue;
        if (len < p->len || !has_prefix(path, p->prefix, p->len)) continue;
        if (len == p->len || p->prefix[p->len - 1] == '/' || path[p->len] == '/') return p->policy;
    }
    return -1;
}
