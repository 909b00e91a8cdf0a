/* pgurl.c: DATABASE_URL parsing for the pool: Prisma-style parameters are ours, everything else goes to libpq. */
#include "pgurl.h"

#include <libpq-fe.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int hexval(int ch)
{
    if (ch >= '0' && ch <= '9') return ch - '0';
    if (ch >= 'a' && ch <= 'f') return ch - 'a' + 10;
    if (ch >= 'A' && ch <= 'F') return ch - 'A' + 10;
    return -1;
}

static void url_decode(const char *s, size_t n, char *out, size_t outlen)
{
    size_t o = 0;
    for (size_t i = 0; i < n && o + 1 < outlen; i++) {
        if (s[i] == '%' && i + 2 < n && hexval(s[i + 1]) >= 0 && hexval(s[i + 2]) >= 0) {
            out[o++] = (char)(hexval(s[i + 1]) * 16 + hexval(s[i + 2]));
            i += 2;
        } else {
            out[o++] = s[i] == '+' ? ' ' : s[i];
        }
    }
    out[o] = 0;
}

/* Seconds: "20", "2.5", "500ms", "20s". PostgreSQL-style statement_timeout: bare number = ms. */
static int parse_duration(const char *v, int bare_is_ms, double *out)
{
    char *end;
    double d = strtod(v, &end);
    if (end == v || !isfinite(d) || d < 0) return -1;
    if (*end == 0) d = bare_is_ms ? d / 1000.0 : d;
    else if (strcmp(end, "ms") == 0) d /= 1000.0;
    else if (strcmp(end, "s") != 0) return -1;
    *out = d;
    return 0;
}

int pgurl_parse(const char *url, pgpool_config *out, char *err, size_t errlen)
{
    memset(out, 0, sizeof *out);
    out->connection_limit = 10;
    out->pool_timeout = 10;
    out->connect_timeout = 5;
    out->idle_timeout = 300;
    out->max_lifetime = 1800;
    out->statement_timeout = 30;
    out->health_interval = 30;
    if (!url || !*url) {
        snprintf(err, errlen, "DATABASE_URL is empty; set it to postgresql://user:password@host:5432/dbname");
        return -1;
    }
    if (strncmp(url, "postgresql://", 13) != 0 && strncmp(url, "postgres://", 11) != 0) {
        snprintf(err, errlen, "DATABASE_URL must start with postgresql:// or postgres:// (got '%.12s...')", url);
        return -1;
    }
    const char *q = strchr(url, '?');
    size_t baselen = q ? (size_t)(q - url) : strlen(url);
    if (baselen >= sizeof out->conninfo) {
        snprintf(err, errlen, "DATABASE_URL is too long (over %zu characters)", sizeof out->conninfo - 1);
        return -1;
    }
    memcpy(out->conninfo, url, baselen);
    size_t len = baselen;
    int kept = 0;
    for (const char *p = q ? q + 1 : NULL; p && *p;) {
        const char *amp = strchr(p, '&'), *end = amp ? amp : p + strlen(p);
        const char *eq = memchr(p, '=', (size_t)(end - p));
        char key[64], val[256];
        size_t klen = eq ? (size_t)(eq - p) : (size_t)(end - p);
        url_decode(p, klen < sizeof key ? klen : sizeof key - 1, key, sizeof key);
        url_decode(eq ? eq + 1 : end, eq ? (size_t)(end - eq - 1) : 0, val, sizeof val);
        int ours = 1, bad = 0;
        if (!strcmp(key, "connection_limit")) {
            char *e;
            long n = strtol(val, &e, 10);
            if (!*val || *e || n < 1 || n > 1000) {
                snprintf(err, errlen, "DATABASE_URL: connection_limit=%s is not an integer from 1 to 1000", val);
                return -1;
            }
            out->connection_limit = (int)n;
        } else if (!strcmp(key, "pool_timeout")) {
            bad = parse_duration(val, 0, &out->pool_timeout);
        } else if (!strcmp(key, "connect_timeout")) {
            bad = parse_duration(val, 0, &out->connect_timeout);
        } else if (!strcmp(key, "idle_timeout") || !strcmp(key, "max_idle_connection_lifetime")) {
            bad = parse_duration(val, 0, &out->idle_timeout);
        } else if (!strcmp(key, "max_lifetime") || !strcmp(key, "max_connection_lifetime")) {
            bad = parse_duration(val, 0, &out->max_lifetime);
        } else if (!strcmp(key, "statement_timeout")) {
            bad = parse_duration(val, 1, &out->statement_timeout);
        } else if (!strcmp(key, "health_check_interval")) {
            bad = parse_duration(val, 0, &out->health_interval);
        } else if (!strcmp(key, "schema")) {
            if (strlen(val) >= sizeof out->search_path) {
                snprintf(err, errlen, "DATABASE_URL: schema is longer than %zu characters", sizeof out->search_path - 1);
                return -1;
            }
            memcpy(out->search_path, val, strlen(val) + 1);
        } else if (!strcmp(key, "pgbouncer") || !strcmp(key, "socket_timeout") || !strcmp(key, "sslaccept") ||
                   !strcmp(key, "statement_cache_size")) {
            /* Prisma-only knobs: we use unnamed statements only, so PgBouncer needs nothing */
        } else {
            ours = 0;
        }
        if (bad) {
            snprintf(err, errlen, "DATABASE_URL: %s=%s is not a duration (seconds, or e.g. 500ms / 20s%s)", key, val,
                     strcmp(key, "statement_timeout") ? "" : "; a bare number is milliseconds");
            return -1;
        }
        if (!ours) {
            size_t n = (size_t)(end - p);
            if (len + n + 2 >= sizeof out->conninfo) {
                snprintf(err, errlen, "DATABASE_URL is too long (over %zu characters)", sizeof out->conninfo - 1);
                return -1;
            }
            out->conninfo[len++] = kept++ ? '&' : '?';
            memcpy(out->conninfo + len, p, n);
            len += n;
        }
        p = amp ? amp + 1 : end;
    }
    out->conninfo[len] = 0;
    char *perr = NULL;
    PQconninfoOption *opts = PQconninfoParse(out->conninfo, &perr);
    if (!opts) {
        char msg[200] = "out of memory";
        if (perr) {
            snprintf(msg, sizeof msg, "%s", perr);
            msg[strcspn(msg, "\n")] = 0;
            PQfreemem(perr);
        }
        snprintf(err, errlen, "DATABASE_URL is not valid: %s; expected postgresql://user:password@host:5432/dbname?connection_limit=N&pool_timeout=S",
                 msg);
        return -1;
    }
    PQconninfoFree(opts);
    return 0;
}
