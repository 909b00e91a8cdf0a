/* httpc_int.h: internal to the httpc module; only httpc.c, httpc_easy.c and httpc_stats.c include it (callers use httpc.h). */
#ifndef SLUICE_HTTPC_INT_H
#define SLUICE_HTTPC_INT_H

#include <curl/curl.h>
#include <stdatomic.h>

#include "hist.h"
#include "httpc.h"

#define HTTPC_MAX_HOSTS 32        /* metric labels per worker; later hosts count as "other" */
#define FREE_KEEP 64              /* recycled requests (with their easy handles) per worker */
#define BODY_KEEP 65536           /* a recycled request keeps at most this much buffer */
#define URL_CACHE 16              /* parsed URLs kept per worker (handlers call the same few) */

enum rstate { R_QUEUED, R_ACTIVE, R_DONE };
/* string options cached on a recycled easy handle, so an unchanged value costs no setopt */
enum { O_CAINFO, O_SSLCERT, O_SSLKEY, O_KEYPASSWD, O_PROXY, O_NOPROXY, O_USERAGENT, O_COUNT };
/* number options cached the same way (a setopt costs little, but ACCEPT_ENCODING "" makes curl
 * build its list of encodings every time it is set) */
enum { L_TIMEOUT, L_CONNECT, L_MAXSIZE, L_FOLLOW, L_MAXREDIRS, L_VERIFYPEER, L_VERIFYHOST, L_ENCODING, L_PIPEWAIT, L_COUNT };

struct httpc_req {
    httpc *h;
    httpc_req *prev, *next;       /* in the queue, the active list, the done list or the free list */
    /* kept while the request is recycled (see httpc_easy.c) */
    CURL *easy;
    buf rbody, rhdrs;             /* response body and the final response's header lines */
    buf hlines;                   /* the request's header lines, NUL-terminated, for hnodes */
    struct curl_slist *hnodes;    /* CURLOPT_HTTPHEADER's list, in an array kept for the next request */
    size_t nhnodes;
    char *opt[O_COUNT];           /* string options set on easy (copies), NULL when unset */
    long long lopt[L_COUNT];      /* number options set on easy, -1 when unknown */
    unsigned set_custom : 1, set_post : 1, set_nobody : 1;
    /* per request */
    enum rstate state;
    int cancelled;                /* R_DONE: cancelled before its callback ran */
    ev_timer qtimer;              /* queue_timeout while R_QUEUED */
    CURLU *url;                   /* owned when uc < 0, else the URL cache's */
    int uc;
    struct curl_slist *hdrs;      /* hnodes or NULL (no header) */
    char *body;                   /* our copy of the request body */
    size_t max_body;
    int too_big;
    int max_redirects;
    double timeout, connect_timeout;
    CURLcode rc;
    enum httpc_err qerr;          /* set when it failed before reaching curl */
    int host_idx;
    int load;                     /* index in h->loads */
    int via_proxy;                /* a proxy is used (not excluded by no_proxy) */
    int proxy_status;             /* the proxy's refusal: CONNECT answer or 407, 0 = none */
    char proxy_name[128];         /* host[:port] of that proxy, for messages */
    const char *host;             /* host[:port], in the URL cache entry or hostbuf */
    char hostbuf[128];
    char errbuf[CURL_ERROR_SIZE];
    httpc_done_cb cb;
    void *ud;
};

/* A socket curl asked us to watch (its curl_multi_assign pointer). */
typedef struct hsock {
    ev_io io;
    httpc *h;
    struct hsock *next;
} hsock;

typedef struct ucache {
    char *url;
    CURLU *u;
    char host[128];
    int https, refs;
    unsigned long long used;
} ucache;

typedef struct hhost {
    char name[128];
    atomic_ullong by_class[6];    /* 1xx..5xx at 1..5 */
} hhost;

typedef struct rlist { httpc_req *head, *tail; int n; } rlist;

/* Requests of one host in curl and in the queue, for max_per_host. Enforced here rather than with
 * CURLMOPT_MAX_HOST_CONNECTIONS: curl re-examines every transfer parked on that limit each time a
 * connection frees up (quadratic with hundreds waiting), and counts the wait in their timeout. */
typedef struct hload {
    char name[128];
    int active, queued;
} hload;

struct httpc {
    struct ev_loop *loop;
    CURLM *multi;
    ev_timer timer;               /* curl's timeout */
    ev_timer kick;                /* runs the done list for failures that never reached curl */
    httpc_limits lim;
    rlist queue, active, done;
    httpc_req *freereqs;
    int nfree;
    hsock *freesocks;
    hload *loads;
    int nloads;
    ucache uc[URL_CACHE];
    unsigned long long uclock;
    char *env_http_proxy, *env_https_proxy, *env_no_proxy;   /* read once: no getenv per request */
    char *proxy_src, proxy_name[128];                        /* the last proxy URL and its host[:port] */
    char accept_encoding[64];     /* "Accept-Encoding: deflate, gzip, br, zstd" as this libcurl decodes */
    int draining, closing;
    /* metrics: written by this worker only, read by any thread */
    hist latency;
    atomic_ullong errors[HTTPC_E_COUNT];
    atomic_int in_flight, queued;
    hhost hosts[HTTPC_MAX_HOSTS];
    atomic_ullong other_by_class[6];
    atomic_int nhosts;
};

/* httpc_easy.c */
/* Configures r's easy handle for o (URL through the cache, options, headers, method). Returns 0,
 * or -1 with a message in err (a URL that cannot work, out of memory). */
int httpc_easy_setup(httpc *h, httpc_req *r, const httpc_opts *o, char *err, size_t errlen);
/* Releases what one request held (URL reference, header list, body copy) before recycling. */
void httpc_easy_release(httpc *h, httpc_req *r);
/* The options every easy handle carries for life (callbacks, protocols, sockets through us). */
void httpc_easy_defaults(httpc *h, httpc_req *r);
void httpc_easy_free(httpc_req *r);
void httpc_easy_accept_encoding(httpc *h);
void httpc_url_cache_free(httpc *h);

/* httpc_proxy.c */
void httpc_proxy_env(httpc *h);
void httpc_proxy_free(httpc *h);
/* The proxy and no_proxy strings to give curl for r ("" = none); sets r->via_proxy, r->proxy_name. */
void httpc_proxy_choose(httpc *h, httpc_req *r, const httpc_opts *o, int https, const char **proxy, const char **noproxy);
int httpc_noproxy_match(const char *list, const char *hostport);

/* httpc_stats.c */
/* the error kind of a finished transfer; a failure at the proxy also sets r->proxy_status */
enum httpc_err httpc_classify(httpc_req *r, CURLcode rc);
/* "host: reason (curl's detail)" */
void httpc_error_text(const httpc_req *r, enum httpc_err e, char *out, size_t n);
int httpc_host_index(httpc *h, const char *host);
void httpc_count_response(httpc *h, const httpc_req *r, int status);

#endif
