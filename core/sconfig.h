/* sconfig.h: the C view of a normalized config.lua (immutable once built; one per Lua state). */
#ifndef SLUICE_SCONFIG_H
#define SLUICE_SCONFIG_H

#include <stddef.h>
#include <stdint.h>

#include "http.h"

struct lua_State;

enum { RLKEY_IP, RLKEY_USER, RLKEY_HEADER, RLKEY_FUNC };
enum { SC_READY_DATABASE = 1, SC_READY_REDIS = 2 };

typedef struct sc_policy {
    char *name;
    uint32_t id;            /* stable per name (hash), so buckets survive reloads */
    uint64_t limit, window_ms, burst;
    int key_kind;
    char *key_header;       /* lower-case header name for RLKEY_HEADER */
    int key_fn_ref;         /* Lua registry ref for RLKEY_FUNC */
    char *fields_head;      /* "RateLimit-Policy: ...\r\nRateLimit: \"name\";r=": the constant part of
                               both fields, built once (NULL if out of memory: no fields sent);
                               at least 64 bytes allocated, so short heads copy in one fixed size */
    size_t fields_head_len;
} sc_policy;

typedef struct sc_prefix {
    char *prefix;
    size_t len;
    int policy;             /* index into policies */
    unsigned methods;       /* bitmask of http_parser methods; 0 = all */
} sc_prefix;

typedef struct sconfig {
    int port;
    char host[64];
    int workers;            /* resolved: "auto" = number of cores */
    int production;
    char *config_file;      /* absolute */
    char *base_dir;         /* directory of config.lua */
    char **scripts;
    size_t nscripts;

    http_limits lim;
    unsigned max_connections;
    size_t max_output_buffer;       /* unsent bytes at which a connection stops reading (limits) */
    double request_timeout, header_timeout, keepalive_timeout, shutdown_timeout, script_timeout;
    double lua_memory_mb;   /* limits.lua_memory: per-state Lua budget in MB, 0 = none */
    int jit;                /* limits.jit: handler states compile with LuaJIT's JIT */
    char **cors_origins, **cors_methods, **cors_headers, **cors_expose;
    size_t ncors_origins, ncors_methods, ncors_headers, ncors_expose;
    int cors_credentials, cors_max_age;

    int gzip_enabled, gzip_level;
    size_t gzip_threshold;
    char **gzip_types;
    size_t ngzip_types;

    int access_log;         /* 0 off, 1 text, 2 json */
    int log_level;          /* 0 debug .. 3 error */
    int log_json;           /* log.format = "json": every line is a JSON object */

    sc_policy *policies;
    size_t npolicies;
    sc_prefix *prefixes;    /* sorted by length, longest first */
    size_t nprefixes;
    size_t limiter_max_keys;
    unsigned ipv6_prefix;
    int ratelimit_headers;
    int redis_fail_closed;          /* limiter.redis_failure = "closed": 503 when Redis cannot decide */
    char **trusted_proxies;
    size_t ntrusted;
    struct clientip_trust *trust;   /* parsed trusted_proxies, NULL when none */

    unsigned sse_max, sse_per_user, sse_per_channel, sse_retention, sse_max_queue;
    int sse_drop_oldest;            /* sse.slow_policy = "drop_oldest" (else disconnect) */
    double sse_slow_timeout;        /* s a stream may stay over max_queue without progress */
    double sse_heartbeat, sse_retention_seconds, sse_cleanup;
    char *publish_token, *publish_path;

    char *db_url, *db_replicas;
    double statement_timeout;
    double db_health_interval;      /* database.health_interval: s between health checks of the pool */
    int ready_requires;             /* health.ready_requires as SC_READY_* bits; -1 = not set (the default) */
    char *redis_url, *redis_prefix;
    char *admin_token;
    int admin_loopback_only;
    unsigned metrics_retention, metrics_errors, metrics_max_channels;
    double metrics_interval;
} sconfig;

/* Builds a config from the normalized table at the top of L's stack. Returns NULL and an error
 * message in err on a value the C side cannot use. */
sconfig *sconfig_from_lua(struct lua_State *L, int idx, char *err, size_t errlen);
/* Frees the config (Lua refs are released by the owning state, not here). */
void sconfig_free(sconfig *c);
/* The rate-limit policy for a request: longest matching prefix on a segment boundary, or -1. */
int sconfig_policy_for(const sconfig *c, int method, const char *path, size_t len);

#endif
