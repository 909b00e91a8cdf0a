/* lua_http_int.h: internal to the sluice.http binding: lua_http.c and lua_http_opts.c (reading a request's options table). */
#ifndef SLUICE_LUA_HTTP_INT_H
#define SLUICE_LUA_HTTP_INT_H

#include <lua.h>

#include "buf.h"
#include "httpc.h"

#define MAX_HEADERS 128

/* One request's options as httpc_opts, with the storage its strings need while it is submitted. */
typedef struct preq {
    httpc_opts o;
    buf lines;                    /* header lines, each NUL-terminated */
    size_t off[MAX_HEADERS];
    const char *ptr[MAX_HEADERS];
    size_t n;
    buf body;                     /* json / form bodies */
    buf url;                      /* url with the query appended */
    char method[16];
    char err[300];
} preq;

/* Reads the options table at t over defaults into p (strings point into the table or into p).
 * Returns 0, or -1 with the message in p->err (misuse: the caller raises). Call
 * lua_http_opts_free either way. */
int lua_http_parse_opts(lua_State *L, int t, const httpc_opts *defaults, preq *p);
void lua_http_opts_free(preq *p);

#endif
