/* response.h: writing one HTTP response into a connection's output buffer (layer L3): the
 * status line, headers (checked for CR/LF/NUL), Content-Length, gzip when worthwhile, Date and
 * Connection, and the one error body the core uses. Nothing here owns memory: the response is
 * bytes in c->out, sent by conn_flush. Headers of the layers above are added through the
 * connection's hook (conn_ops.on_response_headers, called by resp_finish and
 * resp_finish_headers before the framing headers). */
#ifndef SLUICE_RESPONSE_H
#define SLUICE_RESPONSE_H

#include <stddef.h>

#include "conn.h"

typedef struct resp {
    conn *c;
    int status;
    size_t hdr_start;               /* where this response starts in c->out */
    unsigned has_ctype : 1, has_vary : 1, has_encoding : 1, no_body : 1, close : 1;
} resp;

/* Starts a response (status line); headers follow, then resp_finish. */
void resp_begin(resp *r, conn *c, int status);
/* Adds a header; returns -1 when the name or value contains CR/LF/NUL (nothing written). */
int resp_header(resp *r, const char *name, size_t nlen, const char *value, size_t vlen);
/* Adds Content-Type, Content-Length (gzip when worthwhile), Date, Connection and the body. */
void resp_finish(resp *r, const char *ctype, const char *body, size_t len);
/* A complete small response with a text or JSON body; closes after when close is set. */
void resp_simple(conn *c, int status, const char *ctype, const char *body, int close);
/* Like resp_finish for a body sent separately (a file of len bytes): no gzip, no body here. */
void resp_finish_headers(resp *r, const char *ctype, size_t len);
/* Gzips body at compression.level into the worker's scratch buffer (valid until the next gzip):
 * 0 with out and outlen set, -1 on failure. For callers that must know the encoding before the headers. */
int resp_gzip(worker *w, const char *body, size_t len, const char **out, size_t *outlen);
/* The JSON error body used for every error the core produces: {"error": msg, "status": N}
 * (an HTML page when the client prefers text/html). */
void resp_error(conn *c, int status, const char *msg, int close);

#endif
