/* json.h: a JSON encoder for Lua values that writes straight into a buffer (responses, SSE data). */
#ifndef SLUICE_JSON_H
#define SLUICE_JSON_H

#include <lua.h>

#include "buf.h"

/* Appends the JSON text of the value at idx to out. Integers (|n| < 2^63) are written
 * exactly, other numbers in the shortest form that reads back as the same double; NaN and
 * infinities are errors. Tables whose keys are 1..n (holes allowed up to twice the count)
 * are arrays, other tables objects (number keys become strings); an empty table is {}.
 * cjson.null (a NULL lightuserdata) is null; a table whose metatable has __jsontype = "array" is an
 * array even when empty (app.array, app.empty_array). Returns NULL, or a constant error message
 * ("cannot encode a function", "nesting deeper than 1000", ...) with out left partial. */
const char *json_encode(lua_State *L, int idx, buf *out);

/* Appends s (NUL-terminated, UTF-8 passed through) as a JSON string literal with its quotes. */
void json_quote(buf *out, const char *s);

/* luaL_Reg-style: json_encode(value) -> string, raises on values JSON cannot hold. */
int json_lua_encode(lua_State *L);

#endif
