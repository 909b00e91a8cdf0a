/* pgresult.c: PGresult -> Lua rows (typed by column OID) and PostgreSQL errors -> Lua error tables. */
#include "pgresult.h"

#include <lauxlib.h>
#include <stdlib.h>
#include <string.h>

#include "pgpool.h"

/* From lua-cjson (liblua5.1-cjson.a, which the runtime links to embed the "cjson" module); declared
 * here so the build needs no extra include path for <lua5.1/lua-cjson.h>. */
int luaopen_cjson(lua_State *L);

/* Built-in type OIDs (stable across PostgreSQL versions; see pg_type.dat). */
enum {
    OID_BOOL = 16, OID_INT8 = 20, OID_INT2 = 21, OID_INT4 = 23, OID_OID = 26, OID_JSON = 114,
    OID_FLOAT4 = 700, OID_FLOAT8 = 701, OID_NUMERIC = 1700, OID_JSONB = 3802,
};


/* Registry keys: addresses of these statics are unique per process. */
static const char json_key = 0, errmt_key = 0;

/* cjson's decode, from a private instance of the linked-in lua-cjson (so a script's cjson settings
 * cannot change how rows decode), created once per Lua state and cached in the registry. */
static void push_json_decode(lua_State *L)
{
    lua_pushlightuserdata(L, (void *)&json_key);
    lua_rawget(L, LUA_REGISTRYINDEX);
    if (!lua_isnil(L, -1)) return;
    lua_pop(L, 1);
    lua_pushcfunction(L, luaopen_cjson);
    lua_call(L, 0, 1);
    lua_getfield(L, -1, "decode");
    lua_remove(L, -2);
    lua_pushlightuserdata(L, (void *)&json_key);
    lua_pushvalue(L, -2);
    lua_rawset(L, LUA_REGISTRYINDEX);
}

/* A numeric is handed to Lua as a number only when the double round-trips to the same decimal:
 * an integer of at most 2^53, or at most 15 significant digits. Otherwise it stays an exact string. */
static int numeric_fits(const char *s, int len)
{
    const char *p = s, *end = s + len;
    if (p < end && (*p == '-' || *p == '+')) p++;
    const char *ib = p;
    while (p < end && *p >= '0' && *p <= '9') p++;
    const char *ie = p, *fb = p, *fe = p;
    if (p < end && *p == '.') {
        fb = ++p;
        while (p < end && *p >= '0' && *p <= '9') p++;
        fe = p;
    }
    if (p != end || (ie == ib && fe == fb)) return 0; /* NaN, Infinity, exponent forms: keep the string */
    while (ib < ie && *ib == '0') ib++;
    while (fe > fb && fe[-1] == '0') fe--;
    int ilen = (int)(ie - ib), flen = (int)(fe - fb);
    if (flen == 0) return ilen <= 15 || (ilen == 16 && memcmp(ib, "9007199254740992", 16) <= 0);
    if (ilen == 0) {
        const char *q = fb;
        while (q < fe && *q == '0') q++;
        return (q - fb) < 300 && (fe - q) <= 15; /* stay clear of subnormals */
    }
    return ilen + flen <= 15;
}

static void push_value(lua_State *L, Oid type, const char *v, int len)
{
    switch (type) {
    case OID_INT2: case OID_INT4: case OID_OID: case OID_FLOAT4: case OID_FLOAT8:
        lua_pushnumber(L, strtod(v, NULL)); /* strtod reads NaN, Infinity, -Infinity as PostgreSQL prints them */
        return;
    case OID_INT8: {
        long long n = strtoll(v, NULL, 10);
        if (n >= -(1LL << 53) && n <= (1LL << 53)) lua_pushnumber(L, (lua_Number)n);
        else lua_pushlstring(L, v, (size_t)len);
        return;
    }
    case OID_NUMERIC:
        if (numeric_fits(v, len)) lua_pushnumber(L, strtod(v, NULL));
        else lua_pushlstring(L, v, (size_t)len);
        return;
    case OID_BOOL:
        lua_pushboolean(L, v[0] == 't');
        return;
    case OID_JSON: case OID_JSONB:
        push_json_decode(L);
        lua_pushlstring(L, v, (size_t)len);
        if (lua_pcall(L, 1, 1, 0)) { /* e.g. nesting too deep: keep the text rather than fail the query */
            lua_pop(L, 1);
            lua_pushlstring(L, v, (size_t)len);
        }
        return;
    default:
        lua_pushlstring(L, v, (size_t)len);
        return;
    }
}

int pgresult_push(lua_State *L, const PGresult *res)
{
    int nrows = PQntuples(res), ncols = PQnfields(res);
    luaL_checkstack(L, ncols + 8, "too many result columns");
    lua_createtable(L, nrows, 0);
    int rows = lua_gettop(L);
    /* Column names pushed once and reused by index: no per-cell string hashing. */
    for (int j = 0; j < ncols; j++) lua_pushstring(L, PQfname(res, j));
    for (int i = 0; i < nrows; i++) {
        lua_createtable(L, 0, ncols);
        for (int j = 0; j < ncols; j++) {
            if (PQgetisnull(res, i, j)) continue;
            lua_pushvalue(L, rows + 1 + j);
            push_value(L, PQftype(res, j), PQgetvalue(res, i, j), PQgetlength(res, i, j));
            lua_rawset(L, -3);
        }
        lua_rawseti(L, rows, i + 1);
    }
    lua_settop(L, rows);
    const char *status = PQcmdStatus((PGresult *)res), *tuples = PQcmdTuples((PGresult *)res);
    if (tuples && *tuples && status &&
        (!strncmp(status, "INSERT", 6) || !strncmp(status, "UPDATE", 6) || !strncmp(status, "DELETE", 6) ||
         !strncmp(status, "MERGE", 5))) {
        /* In a metatable, not a field: cjson ignores metatables, so `json = rows` stays an array. */
        lua_createtable(L, 0, 1);
        lua_createtable(L, 0, 1);
        lua_pushnumber(L, strtod(tuples, NULL));
        lua_setfield(L, -2, "affected");
        lua_setfield(L, -2, "__index");
        lua_setmetatable(L, rows);
    }
    return 1;
}

static int error_tostring(lua_State *L)
{
    lua_getfield(L, 1, "sqlstate");
    lua_getfield(L, 1, "message");
    const char *state = lua_tostring(L, -2), *msg = lua_tostring(L, -1);
    if (!msg) msg = "database error";
    if (state) lua_pushfstring(L, "%s: %s", state, msg);
    else lua_pushstring(L, msg);
    return 1;
}

static void set_str(lua_State *L, const char *key, const char *v)
{
    if (!v || !*v) return;
    lua_pushstring(L, v);
    lua_setfield(L, -2, key);
}

static const struct { const char *prefix, *sqlstate, *code; } client_errors[] = {
    {PGPOOL_ERR_TIMEOUT, NULL, "pool_timeout"},
    {PGPOOL_ERR_UNREACHABLE, "08001", "unreachable"},
    {PGPOOL_ERR_LOST, "08006", "connection_lost"},
    {PGPOOL_ERR_STMT_TIMEOUT, "57014", "statement_timeout"},
    {PGPOOL_ERR_CLOSED, NULL, "pool_closed"},
};

int pgresult_push_error(lua_State *L, const PGresult *res, const char *fallback)
{
    lua_createtable(L, 0, 6);
    const char *msg = res ? PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY) : NULL;
    if (msg) {
        set_str(L, "sqlstate", PQresultErrorField(res, PG_DIAG_SQLSTATE));
        set_str(L, "message", msg);
        set_str(L, "detail", PQresultErrorField(res, PG_DIAG_MESSAGE_DETAIL));
        set_str(L, "hint", PQresultErrorField(res, PG_DIAG_MESSAGE_HINT));
        set_str(L, "constraint", PQresultErrorField(res, PG_DIAG_CONSTRAINT_NAME));
        if (fallback && !strncmp(fallback, PGPOOL_ERR_LOST, strlen(PGPOOL_ERR_LOST))) set_str(L, "code", "connection_lost");
    } else {
        if (!fallback || !*fallback) fallback = "database error";
        for (size_t i = 0; i < sizeof client_errors / sizeof client_errors[0]; i++) {
            if (!strncmp(fallback, client_errors[i].prefix, strlen(client_errors[i].prefix))) {
                set_str(L, "sqlstate", client_errors[i].sqlstate);
                set_str(L, "code", client_errors[i].code);
                break;
            }
        }
        set_str(L, "message", fallback);
    }
    /* The database is unavailable for now (pool exhausted, server down or restarting, connection
     * killed): uncaught, the request answers 503 with Retry-After rather than 500. */
    lua_getfield(L, -1, "sqlstate");
    lua_getfield(L, -2, "code");
    const char *st = lua_tostring(L, -2), *code = lua_tostring(L, -1);
    int unavailable = (code && strcmp(code, "statement_timeout") != 0) ||
                      (st && (!strncmp(st, "08", 2) || !strcmp(st, "57P01") || !strcmp(st, "57P02") ||
                              !strcmp(st, "57P03") || !strcmp(st, "53300")));
    lua_pop(L, 2);
    if (unavailable) {
        lua_pushinteger(L, 503);
        lua_setfield(L, -2, "status");
    }
    lua_pushlightuserdata(L, (void *)&errmt_key);
    lua_rawget(L, LUA_REGISTRYINDEX);
    if (lua_isnil(L, -1)) {
        lua_pop(L, 1);
        lua_createtable(L, 0, 1);
        lua_pushcfunction(L, error_tostring);
        lua_setfield(L, -2, "__tostring");
        lua_pushlightuserdata(L, (void *)&errmt_key);
        lua_pushvalue(L, -2);
        lua_rawset(L, LUA_REGISTRYINDEX);
    }
    lua_setmetatable(L, -2);
    return 1;
}
