/* test_pgresult: PostgreSQL results and errors as Lua values, checked against a real server. */
#include <lauxlib.h>
#include <lualib.h>
#include <stdlib.h>

#include "../../core/pgpool.h"
#include "../../core/pgresult.h"
#include "tap.h"

static lua_State *L;
static char evalbuf[512];

/* Run a Lua chunk (sees the global `rows` / `err`) and return tostring of its result. */
static const char *eval(const char *code)
{
    if (luaL_loadstring(L, code) || lua_pcall(L, 0, 1, 0)) {
        snprintf(evalbuf, sizeof evalbuf, "lua error: %s", lua_tostring(L, -1));
    } else {
        lua_getglobal(L, "tostring");
        lua_insert(L, -2);
        lua_call(L, 1, 1);
        snprintf(evalbuf, sizeof evalbuf, "%s", lua_tostring(L, -1));
    }
    lua_pop(L, 1);
    return evalbuf;
}

static PGresult *run(PGconn *pg, const char *sql)
{
    PGresult *r = PQexec(pg, sql);
    ExecStatusType s = PQresultStatus(r);
    if (s != PGRES_TUPLES_OK && s != PGRES_COMMAND_OK && s != PGRES_FATAL_ERROR)
        printf("# unexpected status for %s: %s\n", sql, PQresultErrorMessage(r));
    return r;
}

static void set_rows(PGconn *pg, const char *sql)
{
    PGresult *r = run(pg, sql);
    if (PQresultStatus(r) == PGRES_FATAL_ERROR) printf("# %s", PQresultErrorMessage(r));
    int top = lua_gettop(L);
    pgresult_push(L, r);
    ok(lua_gettop(L) == top + 1, "pgresult_push pushes one value (%s)", sql);
    lua_setglobal(L, "rows");
    PQclear(r);
}

int main(void)
{
    const char *url = getenv("DATABASE_URL");
    if (!url || !*url) {
        printf("# SKIP no DATABASE_URL\n");
        return tap_done();
    }
    pgpool_config cfg;
    char err[256];
    if (pgpool_parse_url(url, &cfg, err, sizeof err) < 0) {
        ok(0, "parse DATABASE_URL: %s", err);
        return tap_done();
    }
    PGconn *pg = PQconnectdb(cfg.conninfo);
    if (PQstatus(pg) != CONNECTION_OK) {
        ok(0, "connect: %s", PQerrorMessage(pg));
        return tap_done();
    }
    L = luaL_newstate();
    luaL_openlibs(L);

    set_rows(pg, "select 9223372036854775807::int8 as big, '-9223372036854775808'::int8 as small_big,"
                 " 9007199254740992::int8 as edge, 42::int8 as i8, 3::int2 as i2, -7::int4 as i4, 26::oid as o,"
                 " 1.25::float4 as f4, 0.1::float8 as f8, 'NaN'::float8 as nan, '-Infinity'::float8 as ninf,"
                 " true as t, false as f, null::int as n, 'it''s'::text as s, ''::text as e,"
                 " 'abc'::bytea as b, '2024-01-02'::date as d");
    is_str(eval("return #rows"), "1", "one row");
    is_str(eval("return type(rows[1].big) .. ' ' .. rows[1].big"), "string 9223372036854775807",
           "int8 2^63-1 stays an exact string");
    is_str(eval("return type(rows[1].small_big) .. ' ' .. rows[1].small_big"), "string -9223372036854775808",
           "int8 -2^63 stays an exact string");
    is_str(eval("return type(rows[1].edge) .. ' ' .. string.format('%.0f', rows[1].edge)"), "number 9007199254740992",
           "int8 2^53 is a number");
    is_str(eval("return type(rows[1].i8) .. ' ' .. rows[1].i8"), "number 42", "small int8 is a number");
    is_str(eval("return rows[1].i2 + rows[1].i4 + rows[1].o"), "22", "int2/int4/oid are numbers");
    is_str(eval("return rows[1].f4 .. ' ' .. rows[1].f8"), "1.25 0.1", "float4/float8 are numbers");
    is_str(eval("return tostring(rows[1].nan ~= rows[1].nan) .. ' ' .. tostring(rows[1].ninf == -math.huge)"),
           "true true", "NaN and -Infinity become numbers");
    is_str(eval("return type(rows[1].t) .. ' ' .. tostring(rows[1].t) .. ' ' .. tostring(rows[1].f)"),
           "boolean true false", "bool is boolean");
    is_str(eval("local n = 0; for k in pairs(rows[1]) do if k == 'n' then n = 1 end end; return rows[1].n == nil and n == 0"),
           "true", "NULL is an absent key");
    is_str(eval("return rows[1].s .. '|' .. rows[1].e .. '|' .. rows[1].b .. '|' .. rows[1].d"),
           "it's||\\x616263|2024-01-02", "text, empty text, bytea and date are strings");

    set_rows(pg, "select 1.5::numeric as a, 12.50::numeric as b, 0.1::numeric as c, 123456789012345::numeric as d,"
                 " 9007199254740993::numeric as e, 12345678901234567890.5::numeric as f, 3.14159265358979323846::numeric as g,"
                 " 'NaN'::numeric as h, -0.000001::numeric as i, 100::numeric(10,2) as j");
    is_str(eval("local r = rows[1]; return type(r.a)..' '..r.a..' '..r.b..' '..r.c..' '..string.format('%.0f', r.d)"),
           "number 1.5 12.5 0.1 123456789012345", "numeric with few digits is a number");
    is_str(eval("local r = rows[1]; return type(r.e)..' '..r.e..' '..r.f..' '..r.g"),
           "string 9007199254740993 12345678901234567890.5 3.14159265358979323846",
           "numeric that a double cannot hold stays an exact string");
    is_str(eval("local r = rows[1]; return type(r.h)..' '..r.h..' '..type(r.i)..' '..r.i..' '..type(r.j)..' '..r.j"),
           "string NaN number -1e-06 number 100", "numeric NaN is a string; small and scaled values are numbers");

    set_rows(pg, "select '{\"a\":[1,2,{\"b\":\"x\"}],\"n\":null}'::jsonb as j, '[true, 3.5]'::json as k,"
                 " '\"str\"'::json as s");
    is_str(eval("local j = rows[1].j; return type(j)..' '..#j.a..' '..j.a[3].b..' '..tostring(j.n ~= nil)"),
           "table 3 x true", "jsonb decodes to tables (JSON null is a non-nil sentinel)");
    is_str(eval("local k = rows[1].k; return tostring(k[1])..' '..k[2]..' '..rows[1].s"), "true 3.5 str",
           "json arrays and scalars decode");

    PQclear(run(pg, "create temp table pr_t (id int primary key, name text)"));
    set_rows(pg, "insert into pr_t values (1, 'a'), (2, 'b'), (3, 'c')");
    is_str(eval("return #rows .. ' ' .. rows.affected"), "0 3", "insert: no rows, affected = 3");
    set_rows(pg, "update pr_t set name = 'z' where id >= 2 returning id");
    is_str(eval("return tostring(rows[1].name) .. ' ' .. rows[1].id"), "nil 2", "update returning: only the returned column");
    is_str(eval("return #rows .. ' ' .. rows.affected"), "2 2", "update returning: 2 rows, affected = 2");
    is_str(eval("local n = 0; for k in pairs(rows) do n = n + 1 end; return n"), "2",
           "affected is not a key of the rows table (JSON-encodes as an array)");
    set_rows(pg, "select * from pr_t where id > 100");
    is_str(eval("return #rows .. ' ' .. tostring(rows.affected)"), "0 nil", "select: no affected field");
    set_rows(pg, "delete from pr_t");
    is_str(eval("return rows.affected"), "3", "delete: affected = 3");

    PQclear(run(pg, "insert into pr_t values (1, 'a')"));
    PGresult *r = run(pg, "insert into pr_t values (1, 'dup')");
    pgresult_push_error(L, r, "fallback");
    lua_setglobal(L, "err");
    PQclear(r);
    is_str(eval("return err.sqlstate"), "23505", "unique violation: sqlstate");
    is_str(eval("return err.constraint .. ' | ' .. err.detail"), "pr_t_pkey | Key (id)=(1) already exists.",
           "unique violation: constraint and detail");
    is_str(eval("return tostring(err)"), "23505: duplicate key value violates unique constraint \"pr_t_pkey\"",
           "__tostring is 'SQLSTATE: message'");
    is_str(eval("local ok, e = pcall(error, err); return e.sqlstate"), "23505", "the table survives error()/pcall");

    r = run(pg, "select nosuchcol from pr_t");
    pgresult_push_error(L, r, NULL);
    lua_setglobal(L, "err");
    PQclear(r);
    is_str(eval("return tostring(err)"), "42703: column \"nosuchcol\" does not exist", "undefined column error");

    pgresult_push_error(L, NULL, "pool timeout: no connection free after 10 s (connection_limit=10, 5 on this worker)");
    lua_setglobal(L, "err");
    is_str(eval("return tostring(err.sqlstate) .. ' ' .. err.code .. ' | ' .. tostring(err)"),
           "nil pool_timeout | pool timeout: no connection free after 10 s (connection_limit=10, 5 on this worker)",
           "client-side pool timeout error");
    pgresult_push_error(L, NULL, "connection lost: server closed the connection unexpectedly");
    lua_setglobal(L, "err");
    is_str(eval("return err.code .. ' | ' .. tostring(err)"),
           "connection_lost | 08006: connection lost: server closed the connection unexpectedly",
           "connection loss maps to 08006");

    lua_close(L);
    PQfinish(pg);
    return tap_done();
}
