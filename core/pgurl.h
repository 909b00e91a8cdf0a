/* pgurl: parse a DATABASE_URL (postgresql://...) into a pool config: our parameters out, the rest checked by libpq. */
#ifndef SLUICE_PGURL_H
#define SLUICE_PGURL_H

#include <stddef.h>

/* Plain data: what a URL says about the pool. Defaults are filled in by pgurl_parse. */
typedef struct pgpool_config {
    char conninfo[2048];      /* the URL minus our own parameters, handed to libpq */
    int connection_limit;     /* global cap over all workers (default 10, 1..1000) */
    double pool_timeout;      /* s a caller waits for a free connection; 0 = forever (default 10) */
    double connect_timeout;   /* s for one connection attempt (default 5) */
    double idle_timeout;      /* s before an unused connection is closed; 0 = never (default 300) */
    double max_lifetime;      /* s before a connection is retired, minus up to 10% jitter; 0 = never (default 1800) */
    double statement_timeout; /* s per query, set on the server and enforced by a client timer; 0 = none (default 30) */
    double health_interval;   /* s an idle connection may sit before it is pinged in the background (default 30) */
    char search_path[128];    /* from Prisma's `schema` parameter; "" = server default */
    int stmt_cache_size;      /* named prepared statements kept per connection; 0 = unnamed only (default 100) */
    int pgbouncer;            /* Prisma's pgbouncer=true: PgBouncer in transaction mode, so stmt_cache_size is 0 */
} pgpool_config;

/* Parse a postgresql:// or postgres:// URL: take out our parameters (connection_limit, pool_timeout,
 * connect_timeout, idle_timeout, max_lifetime, statement_timeout, schema, pgbouncer, statement_cache_size,
 * ...) and validate
 * the rest with libpq. Returns 0, or -1 with a one-line reason in err that names no variable (the caller
 * prefixes "DATABASE_URL: ", "database.url: ", ...); a misspelt parameter gets "did you mean". out is
 * always reset first. This is the only validation of a database URL: lua/config.lua calls it too. */
int pgurl_parse(const char *url, pgpool_config *out, char *err, size_t errlen);

#endif
