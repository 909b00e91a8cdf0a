/* http.h: HTTP/1.1 request parsing: core/httpscan.c checks the bytes strictly (RFC 9112), http-parser
 * splits the accepted header block into method, target and fields, this module decides the
 * framing (Content-Length, chunked, keep-alive) and reads the body. See docs/architecture.md. */
#ifndef SLUICE_HTTP_H
#define SLUICE_HTTP_H

#include <http_parser.h>
#include <stddef.h>
#include <stdint.h>

#include "buf.h"
#include "httpscan.h"

#define HTTP_MAX_HEADERS_HARD 128

typedef struct http_header {
    uint32_t name, nlen;    /* offsets into http_req.store; names are lower-cased */
    uint32_t value, vlen;
} http_header;

typedef struct http_limits {
    size_t body_size;      /* 413 above this (checked before reading when Content-Length is known) */
    size_t header_size;    /* 431 when the header block (request line + field lines, CRLFs included) exceeds it */
    size_t url_size;       /* 414 */
    unsigned max_headers;  /* 431 */
} http_limits;

/* One parsed request. Strings live in `store` (copied, so the input buffer may move). */
typedef struct http_req {
    buf store;              /* url, header names and values, NUL-separated */
    buf body;
    http_header *headers;   /* inline_headers, or a heap array once a request has more */
    unsigned nheaders, cap_headers;
    http_header inline_headers[16];   /* most requests: no allocation, and an idle connection stays small */
    uint32_t url, url_len;  /* offsets into store: always origin-form ("/..."), or "*" for OPTIONS;
                             * an absolute-form target is reduced to its path and query, and a
                             * fragment ('#...') is cut off */
    uint32_t path_len;      /* path part of url (before '?') */
    int method;             /* enum http_method */
    unsigned short http_major, http_minor;
    unsigned keepalive : 1, expect_continue : 1, chunked : 1, has_cl : 1, head : 1;
    unsigned complete : 1;  /* the whole message (with body) was parsed */
    unsigned headers_done : 1;
    unsigned nhost;
    size_t header_bytes;    /* header block bytes, as counted against header_size */
    int in_value;           /* parser state: last callback was a header value */
} http_req;

/* Result of feeding bytes to the parser. */
typedef enum http_feed_result {
    FEED_MORE,     /* consumed everything, message not complete */
    FEED_HEADERS,       /* headers complete (for 100-continue / early checks); call again */
    FEED_REQUEST,       /* a complete request is ready in req */
    FEED_ERROR,         /* respond with err_status and close */
} http_feed_result;

typedef struct http_conn_parser {
    http_parser p;          /* first member: callbacks cast back to the http_conn_parser */
    http_req *req;
    http_limits lim;        /* a copy: a reload frees the config it came from */
    int err_status;         /* 400, 413, 414, 417, 431, 501, 505 */
    const char *err_msg;    /* constant string */
    httpscan scan;          /* strict byte-level checks of the current message */
    int phase;              /* header block, Content-Length body, chunked body */
    uint64_t body_left;     /* Content-Length bytes still to read */
    uint64_t content_length;
    unsigned hp_done : 1;   /* http-parser reached the end of the header block */
    unsigned fresh : 1;     /* the next byte starts a new message */
} http_conn_parser;

/* Prepares a parser for a new connection (lim is copied). */
void http_parser_setup(http_conn_parser *cp, http_req *req, const http_limits *lim);
/* Feeds data; *used gets the number of bytes consumed: all of them, except after a complete
 * request (the next one starts at data + *used) or an error. Returns at headers-complete and at
 * message-complete so the caller can act between messages (pipelining). */
http_feed_result http_feed(http_conn_parser *cp, const char *data, size_t len, size_t *used);
/* Clears req for the next message on the same connection (keeps buffers). */
void http_req_reset(http_req *req);
void http_req_free(http_req *req);

/* Header lookup by lower-case name; returns the value (NUL-terminated, in store) or NULL. */
const char *http_req_header(const http_req *req, const char *lname, size_t *vlen);
static inline const char *http_req_url(const http_req *r) { return r->store.data + r->url; }
static inline const char *http_hname(const http_req *r, const http_header *h) { return r->store.data + h->name; }
static inline const char *http_hvalue(const http_req *r, const http_header *h) { return r->store.data + h->value; }

/* Reason phrase for a status code ("OK", "Not Found", ...). */
const char *http_reason(int status);
/* True when a header name or value would let a response be split or smuggled. */
int http_header_unsafe(const char *s, size_t n, int is_name);
/* Percent-decodes in place; returns the new length, or -1 on a bad escape or a decoded NUL. */
long http_urldecode(char *s, size_t n, int plus_is_space);

#endif
