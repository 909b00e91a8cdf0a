/* pgurl.c: DATABASE_URL parsing for the pool: Prisma-style parameters are ours, everything else goes to libpq.
 * The one validation of a database URL: `sluice check` (lua/config.lua, through sluice.pgurl) and the
 * pool at `sluice run` both call pgurl_parse, so check rejects exactly what run would. Messages name
 * no variable: the caller knows whether the URL came from DATABASE_URL, database.url or a replica list. */
#include "pgurl.h"

#include <libpq-fe.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Parameters sluice reads itself (see pgurl.h); everything else must be a libpq keyword. */
static const char *const OURS[] = {
    "connection_limit", "pool_timeout", "connect_timeout", "idle_timeout", "max_idle_connection_lifetime",
    "max_lifetime", "max_connection_lifetime", "statement_timeout", "health_check_interval", "schema",
    "pgbouncer", "socket_timeout", "sslaccept", "statement_cache_size", NULL,
};

/* Optimal-string-alignment distance (insert, delete, substitute, swap neighbours), capped at 3. */
static int distance(const char *a, const char *b)
{
    size_t la = strlen(a), lb = strlen(b);
    if (la > 63 || lb > 63 || (la > lb ? la - lb : lb - la) > 2) return 3;
    int d[64][64];
    for (size_t i = 0; i <= la; i++) d[i][0] = (int)i;
    for (size_t j = 0; j <= lb; j++) d[0][j] = (int)j;
    for (size_t i = 1; i <= la; i++)
        for (size_t j = 1; j <= lb; j++) {
            int v = d[i - 1][j - 1] + (a[i - 1] != b[j - 1]);
            if (d[i - 1][j] + 1 < v) v = d[i - 1][j] + 1;
            if (d[i][j - 1] + 1 < v) v = d[i][j - 1] + 1;
            if (i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] && d[i - 2][j - 2] + 1 < v)
                v = d[i - 2][j - 2] + 1;
            d[i][j] = v;
        }
    return d[la][lb];
}

/* The known parameter closest to an unknown one (ours or libpq's), or NULL. */
static const char *suggest(const char *key, char *buf, size_t buflen)
{
    int best = 3;
    buf[0] = 0;
    size_t kl = strlen(key);
    for (const char *const *o = OURS; *o; o++) {
        int d = distance(key, *o);
        if (d < best && (size_t)d < kl) { best = d; snprintf(buf, buflen, "%s", *o); }
    }
    PQconninfoOption *defs = PQconndefaults();
    for (PQconninfoOption *o = defs; o && o->keyword; o++) {
        int d = distance(key, o->keyword);
        if (d < best && (size_t)d < kl) { best = d; snprintf(buf, buflen, "%s", o->keyword); }
    }
    if (defs) PQconninfoFree(defs);
    return buf[0] ? buf : NULL;
}

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
    out->stmt_cache_size = 100;
    if (!url || !*url) {
        snprintf(err, errlen, "empty; set it to postgresql://user:password@host:5432/dbname");
        return -1;
    }
    if (strncmp(url, "postgresql://", 13) != 0 && strncmp(url, "postgres://", 11) != 0) {
        snprintf(err, errlen, "must start with postgresql:// or postgres:// (got '%.12s...')", url);
        return -1;
    }
    const char *q = strchr(url, '?');
    size_t baselen = q ? (size_t)(q - url) : strlen(url);
    if (baselen >= sizeof out->conninfo) {
        snprintf(err, errlen, "too long (over %zu characters)", sizeof out->conninfo - 1);
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
                snprintf(err, errlen, "connection_limit=%s is not an integer from 1 to 1000", val);
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
                snprintf(err, errlen, "schema is longer than %zu characters", sizeof out->search_path - 1);
                return -1;
            }
            memcpy(out->search_path, val, strlen(val) + 1);
        } else if (!strcmp(key, "statement_cache_size")) {
            char *e;
            long n = strtol(val, &e, 10);
            if (!*val || *e || n < 0 || n > 10000) {
                snprintf(err, errlen, "statement_cache_size=%s is not an integer from 0 to 10000 (0 = no prepared statements)", val);
                return -1;
            }
            out->stmt_cache_size = (int)n;
        } else if (!strcmp(key, "pgbouncer")) {
            if (!strcmp(val, "true") || !strcmp(val, "1")) out->pgbouncer = 1;
            else if (!strcmp(val, "false") || !strcmp(val, "0")) out->pgbouncer = 0;
            else {
                snprintf(err, errlen, "pgbouncer=%s is not true or false", val);
                return -1;
            }
        } else if (!strcmp(key, "socket_timeout") || !strcmp(key, "sslaccept")) {
            /* Prisma-only knobs without a meaning here */
        } else {
            ours = 0;
        }
        if (bad) {
            snprintf(err, errlen, "%s=%s is not a duration (seconds, or e.g. 500ms / 20s%s)", key, val,
                     strcmp(key, "statement_timeout") ? "" : "; a bare number is milliseconds");
            return -1;
        }
        if (!ours) {
            size_t n = (size_t)(end - p);
            if (len + n + 2 >= sizeof out->conninfo) {
                snprintf(err, errlen, "too long (over %zu characters)", sizeof out->conninfo - 1);
                return -1;
            }
            out->conninfo[len++] = kept++ ? '&' : '?';
            memcpy(out->conninfo + len, p, n);
            len += n;
        }
        p = amp ? amp + 1 : end;
    }
    out->conninfo[len] = 0;
    if (out->pgbouncer) out->stmt_cache_size = 0; /* transaction pooling: a named statement lives on one server connection */
    char *perr = NULL;
    PQconninfoOption *opts = PQconninfoParse(out->conninfo, &perr);
    if (!opts) {
        char msg[200] = "out of memory", bad[64], near[64];
        if (perr) {
            snprintf(msg, sizeof msg, "%s", perr);
            msg[strcspn(msg, "\n")] = 0;
            PQfreemem(perr);
        }
        /* a misspelt parameter: say which known one was meant, as config keys do */
        if (sscanf(msg, "invalid URI query parameter: \"%63[^\"]\"", bad) == 1) {
            if (suggest(bad, near, sizeof near)) snprintf(err, errlen, "unknown parameter \"%s\" (did you mean %s?)", bad, near);
            else snprintf(err, errlen, "unknown parameter \"%s\" (neither sluice's, listed in docs/database.md, nor libpq's)", bad);
            return -1;
        }
        snprintf(err, errlen, "not a valid URL: %s; expected postgresql://user:password@host:5432/dbname?connection_limit=N&pool_timeout=S",
                 msg);
        return -1;
    }
    PQconninfoFree(opts);
    return 0;
}
