/* test_pgurl: DATABASE_URL parsing (no server needed: libpq only validates the string). */
#include <stdlib.h>
#include <string.h>

#include "../../core/pgpool.h"
#include "tap.h"

static void test_basics(void)
{
    pgpool_config c;
    char err[256] = "";
    is_int(pgurl_parse("postgresql://u:p@h:5432/db?connection_limit=50&pool_timeout=20", &c, err, sizeof err), 0,
           "parse: spec example");
    is_str(c.conninfo, "postgresql://u:p@h:5432/db", "parse: our params are stripped");
    is_int(c.connection_limit, 50, "parse: connection_limit");
    ok(c.pool_timeout == 20 && c.connect_timeout == 5 && c.statement_timeout == 30, "parse: pool_timeout and defaults");
    ok(c.idle_timeout == 300 && c.max_lifetime == 1800 && c.health_interval == 30 && c.search_path[0] == 0,
       "parse: remaining defaults");
    pgurl_parse("postgres://u@h/db?sslmode=disable&statement_timeout=500ms&application_name=x&pgbouncer=true"
                "&schema=my%20app&idle_timeout=60&max_lifetime=600",
                &c, err, sizeof err);
    is_str(c.conninfo, "postgres://u@h/db?sslmode=disable&application_name=x", "parse: libpq params are kept");
    ok(c.statement_timeout == 0.5 && c.idle_timeout == 60 && c.max_lifetime == 600 && c.connection_limit == 10,
       "parse: durations and default limit 10");
    is_str(c.search_path, "my app", "parse: schema (url-decoded) becomes search_path");
    pgurl_parse("postgresql://h/db?statement_timeout=2000&pool_timeout=0", &c, err, sizeof err);
    ok(c.statement_timeout == 2.0 && c.pool_timeout == 0, "parse: bare statement_timeout is ms; pool_timeout=0");
    is_int(pgurl_parse("postgresql://h/db?max_idle_connection_lifetime=7s&max_connection_lifetime=90"
                       "&health_check_interval=250ms&connect_timeout=3",
                       &c, err, sizeof err), 0, "parse: Prisma aliases accepted");
    ok(c.idle_timeout == 7 && c.max_lifetime == 90 && c.health_interval == 0.25 && c.connect_timeout == 3,
       "parse: aliases set the same fields");
    is_str(c.conninfo, "postgresql://h/db", "parse: nothing left for libpq, no '?'");
}

static void test_statement_cache(void)
{
    pgpool_config c;
    char err[256] = "";
    pgurl_parse("postgresql://h/db", &c, err, sizeof err);
    ok(c.stmt_cache_size == 100 && !c.pgbouncer, "statement cache: 100 per connection by default");
    is_int(pgurl_parse("postgresql://h/db?statement_cache_size=7", &c, err, sizeof err), 0, "statement_cache_size=7 accepted");
    is_int(c.stmt_cache_size, 7, "statement_cache_size sets the size");
    pgurl_parse("postgresql://h/db?statement_cache_size=0", &c, err, sizeof err);
    is_int(c.stmt_cache_size, 0, "statement_cache_size=0: off");
    pgurl_parse("postgresql://h/db?statement_cache_size=50&pgbouncer=true", &c, err, sizeof err);
    ok(c.pgbouncer && c.stmt_cache_size == 0, "pgbouncer=true: no named statements, whatever the size");
    is_str(c.conninfo, "postgresql://h/db", "both are ours, not libpq's");
    pgurl_parse("postgresql://h/db?pgbouncer=false", &c, err, sizeof err);
    ok(!c.pgbouncer && c.stmt_cache_size == 100, "pgbouncer=false: the cache stays");
    is_int(pgurl_parse("postgresql://h/db?statement_cache_size=-1", &c, err, sizeof err), -1, "negative size rejected");
    is_str(err, "statement_cache_size=-1 is not an integer from 0 to 10000 (0 = no prepared statements)", "size: clear message");
    is_int(pgurl_parse("postgresql://h/db?pgbouncer=yes please", &c, err, sizeof err), -1, "pgbouncer=<junk> rejected");
    is_str(err, "pgbouncer=yes please is not true or false", "pgbouncer: clear message");
}

static void test_errors(void)
{
    pgpool_config c;
    char err[256] = "";
    is_int(pgurl_parse("mysql://h/db", &c, err, sizeof err), -1, "parse: wrong scheme rejected");
    ok(strstr(err, "postgresql://") != NULL, "parse: error says what is expected (%s)", err);
    is_int(pgurl_parse("", &c, err, sizeof err), -1, "parse: empty URL rejected");
    ok(strstr(err, "empty") != NULL, "parse: empty URL error (%s)", err);
    is_int(pgurl_parse("postgresql://h/db?connection_limit=0", &c, err, sizeof err), -1, "parse: limit 0 rejected");
    is_str(err, "connection_limit=0 is not an integer from 1 to 1000", "parse: limit error text (no variable name: the caller adds it)");
    is_int(pgurl_parse("postgresql://h/db?connection_limit=1000", &c, err, sizeof err), 0, "parse: limit 1000 is the top");
    is_int(pgurl_parse("postgresql://h/db?connection_limit=1001", &c, err, sizeof err), -1, "parse: limit 1001 rejected");
    is_int(pgurl_parse("postgresql://h/db?pool_timeout=soon", &c, err, sizeof err), -1, "parse: bad duration");
    is_int(pgurl_parse("postgresql://h/db?statement_timeout=-1", &c, err, sizeof err), -1, "parse: negative duration");
    ok(strstr(err, "a bare number is milliseconds") != NULL, "parse: statement_timeout hint (%s)", err);
    is_int(pgurl_parse("postgresql://h/db?bogus=1", &c, err, sizeof err), -1, "parse: unknown param rejected");
    is_str(err, "unknown parameter \"bogus\" (neither sluice's, listed in docs/database.md, nor libpq's)", "parse: unknown param named");
    is_int(pgurl_parse("postgresql://h/db?conection_limit=5", &c, err, sizeof err), -1, "parse: misspelt param rejected");
    is_str(err, "unknown parameter \"conection_limit\" (did you mean connection_limit?)", "parse: did you mean (ours)");
    pgurl_parse("postgresql://h/db?pool_timout=5", &c, err, sizeof err);
    is_str(err, "unknown parameter \"pool_timout\" (did you mean pool_timeout?)", "parse: did you mean (ours, 2)");
    pgurl_parse("postgresql://h/db?sslmdoe=require", &c, err, sizeof err);
    is_str(err, "unknown parameter \"sslmdoe\" (did you mean sslmode?)", "parse: did you mean (libpq's, a swap)");
    is_int(pgurl_parse("postgresql://[::1/db", &c, err, sizeof err), -1, "parse: a URL libpq refuses");
    ok(strstr(err, "DATABASE_URL") == NULL, "parse: no variable name in any message (%s)", err);
    ok(strchr(err, '\n') == NULL, "parse: error is one line");

    char longschema[300] = "postgresql://h/db?schema=";
    memset(longschema + strlen(longschema), 's', 200);
    is_int(pgurl_parse(longschema, &c, err, sizeof err), -1, "parse: schema over 127 bytes rejected");
    char *huge = malloc(3000);
    memcpy(huge, "postgresql://h/", 15);
    memset(huge + 15, 'd', 2900);
    huge[2915] = 0;
    is_int(pgurl_parse(huge, &c, err, sizeof err), -1, "parse: URL over 2047 bytes rejected");
    ok(strstr(err, "too long") != NULL, "parse: too long error (%s)", err);
    free(huge);
}

int main(void)
{
    test_basics();
    test_statement_cache();
    test_errors();
    /* The old name is what lua_db.c calls: it must stay the same parser. */
    pgpool_config a, b;
    char err[256];
    const char *u = "postgresql://u@h/db?sslmode=disable&connection_limit=7&schema=s";
    int ra = pgurl_parse(u, &a, err, sizeof err), rb = pgpool_parse_url(u, &b, err, sizeof err);
    ok(ra == 0 && rb == 0 && !strcmp(a.conninfo, b.conninfo) && a.connection_limit == 7 && b.connection_limit == 7 &&
       !strcmp(b.search_path, "s"), "pgpool_parse_url is pgurl_parse");
    return tap_done();
}
