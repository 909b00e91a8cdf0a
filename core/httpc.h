/* httpc.h: outbound HTTP for one worker: libcurl's multi-socket interface driven by the worker's
 * libev loop, a concurrency cap with a FIFO of waiting requests, and counters for /metrics.
 *
 * Layer L2 (engine): knows libev and libcurl, nothing of connections, tasks or Lua. One httpc per
 * worker thread, used only from that thread (the metrics readers excepted, see httpc_metrics).
 * A request is submitted with a completion callback; the callback runs from the loop (never from
 * inside httpc_submit or httpc_cancel), exactly once, unless the request is cancelled first. */
#ifndef SLUICE_HTTPC_H
#define SLUICE_HTTPC_H

#include <ev.h>
#include <stddef.h>

#include "buf.h"

typedef struct httpc httpc;
typedef struct httpc_req httpc_req;

/* Per-worker limits (config.lua http_client); plain data. */
typedef struct httpc_limits {
    int max_concurrent;       /* transfers handed to curl at once; more wait FIFO */
    int max_per_host;         /* requests in flight per host[:port] (more queue), 0 = no cap */
    int max_idle;             /* idle keep-alive connections kept (CURLMOPT_MAXCONNECTS) */
} httpc_limits;

/* Why a request failed: the `kind` returned to Lua and the label of the errors metric. */
enum httpc_err {
    HTTPC_OK,
    HTTPC_E_DNS,              /* the host name did not resolve */
    HTTPC_E_CONNECT,          /* refused, unreachable */
    HTTPC_E_TIMEOUT,          /* connect_timeout or timeout */
    HTTPC_E_TLS,              /* handshake or certificate verification */
    HTTPC_E_TOO_LARGE,        /* body over max_body */
    HTTPC_E_REDIRECTS,        /* more than max_redirects */
    HTTPC_E_PROTOCOL,         /* connection closed early, malformed response */
    HTTPC_E_QUEUE_TIMEOUT,    /* waited longer than queue_timeout for a slot */
    HTTPC_E_CANCELLED,        /* the caller went away (client gone, request_timeout, shutdown) */
    HTTPC_E_PROXY,            /* the proxy is down, unresolvable, or refused (CONNECT answer, 407) */
    HTTPC_E_OTHER,
    HTTPC_E_COUNT
};

/* One request. Strings are copied by httpc_submit; nothing here needs to outlive the call. */
typedef struct httpc_opts {
    const char *method;       /* "GET", "POST", ... (upper case) */
    const char *url;          /* http:// or https:// only */
    const char *const *headers;   /* "Name: value" lines */
    size_t nheaders;
    const char *body;         /* NULL: no body */
    size_t body_len;
    double timeout;           /* seconds for the whole transfer once started, 0 = none */
    double connect_timeout;   /* seconds, 0 = curl's default */
    double queue_timeout;     /* seconds waiting for a slot (max_concurrent), 0 = fail at once */
    size_t max_body;          /* decoded response bytes, 0 = no limit */
    int follow_redirects, max_redirects;
    int verify_tls;           /* 0: no peer or host name check */
    int decompress;           /* send Accept-Encoding and decode gzip/deflate/br/zstd */
    const char *ca_file;      /* NULL: the system bundle */
    const char *client_cert, *client_key, *key_password;
    const char *proxy;        /* NULL: from the environment (httpc_proxy.c); "" none */
    const char *no_proxy;     /* NULL: no_proxy/NO_PROXY */
    const char *user_agent;
} httpc_opts;

/* What the callback gets; pointers are valid only during the callback. */
typedef struct httpc_result {
    enum httpc_err err;       /* HTTPC_OK when a response arrived (any status) */
    const char *errmsg;       /* "connection refused: ..." when err != HTTPC_OK */
    int status;
    const char *headers;      /* raw header lines of the final response ("Name: value\r\n"...) */
    size_t headers_len;
    const char *body;
    size_t body_len;
    double seconds;           /* on the wire (queue wait excluded) */
    const char *host;         /* host[:port] of the URL */
    const char *effective_url;    /* after redirects */
    const char *http_version; /* "1.1", "2", ... ("" when unknown) */
} httpc_result;

typedef void (*httpc_done_cb)(void *ud, const httpc_result *res);

/* Creates the worker's client on its loop (lim NULL: 256 concurrent, 64 per host, 64 idle);
 * NULL when curl cannot start. */
httpc *httpc_new(struct ev_loop *loop, const httpc_limits *lim);
/* Completes every pending request with HTTPC_E_CANCELLED ("the server is shutting down")
 * through its callback, then frees everything. Not from inside a callback. */
void httpc_free(httpc *h);
/* Applies new limits (cheap when unchanged); queued requests start if the cap grew. */
void httpc_set_limits(httpc *h, const httpc_limits *lim);
/* Starts (or queues) a request. Returns NULL with a message in err when it cannot be sent at
 * all: a URL that is not http(s)://host..., an unknown option value, out of memory. */
httpc_req *httpc_submit(httpc *h, const httpc_opts *o, httpc_done_cb cb, void *ud, char *err, size_t errlen);
/* Abandons a request: its connection is closed if mid-transfer, the callback never runs. Safe
 * from a completion callback (also on a request whose completion is pending); r is freed. */
void httpc_cancel(httpc_req *r);
/* host[:port] of a request's URL (for messages). */
const char *httpc_req_host(const httpc_req *r);
/* Short constant name of an error kind ("timeout", "dns", ...). */
const char *httpc_err_name(enum httpc_err e);

/* Prometheus text for all workers' clients (any thread; hs[i] may be NULL). */
void httpc_metrics(httpc *const *hs, int n, buf *out);
/* Requests in curl and waiting for a slot (this thread). */
void httpc_counts(const httpc *h, int *in_flight, int *queued);

#endif
