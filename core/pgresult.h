/* pgresult: convert libpq results and errors into Lua values (rows with Lua types, error tables). */
#ifndef SLUICE_PGRESULT_H
#define SLUICE_PGRESULT_H

#include <libpq-fe.h>
#include <lua.h>

/* Push an array of row tables (column name -> value; SQL NULL = absent key). Types by column OID:
 * int2/int4/oid -> number; int8/numeric -> number when exact in a double, else string; float4/float8 ->
 * number (NaN, +-inf included); bool -> boolean; json/jsonb -> decoded table (cjson); others -> string.
 * For INSERT/UPDATE/DELETE/MERGE, rows.affected (via a metatable, so rows still encode as a JSON
 * array) is the row count. Does not take ownership of res. Returns 1 (values pushed). */
int pgresult_push(lua_State *L, const PGresult *res);

/* Push an error table { sqlstate, message, detail, hint, constraint } with a __tostring giving
 * "SQLSTATE: message". With res NULL (client-side failure) message is fallback, sqlstate is mapped
 * from pgpool's prefixes (connection lost 08006, unreachable 08001, statement timeout 57014) or nil,
 * and `code` names the client error ("pool_timeout", "unreachable", ...). Errors meaning the database is
 * unavailable for now (pool errors, class 08, 57P01-57P03, 53300) get status = 503. Returns 1. */
int pgresult_push_error(lua_State *L, const PGresult *res, const char *fallback);

#endif
