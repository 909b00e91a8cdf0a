/* httpc_easy.c: setting up a recycled curl easy handle for one request, cheaply.
 *
 * A handle keeps its options between requests, so instead of curl_easy_reset and twenty setopt
 * calls per request, the constant options are set once per handle, the per-request ones every
 * time, and string options only when they change (a copy of the last value is kept). Unsetting
 * one of the TLS options needs a reset (NULL does not restore curl's default), done then only.
 * Parsed URLs are cached per worker (handlers call the same few endpoints); curl copies the
 * handle for each transfer, so concurrent requests may share an entry.
 *
 * User-Agent and Accept-Encoding go out as header lines of ours rather than through
 * CURLOPT_USERAGENT / curl's own Accept-Encoding: curl 7.88 formats each of those with its
 * printf (one callback per character) for every request and then copies it again into the
 * request; a line in CURLOPT_HTTPHEADER is copied once. That list is an array of nodes kept on
 * the handle (struct curl_slist is public: curl only reads the list), so no allocation either. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "httpc_int.h"

static size_t write_cb(char *p, size_t size, size_t n, void *ud)
{
    httpc_req *r = ud;
    size_t len = size * n;
    if (r->max_body && r->rbody.len + len > r->max_body) { r->too_big = 1; return 0; }
    if (buf_append(&r->rbody, p, len)) return 0;
    return len;
}

static size_t header_cb(char *p, size_t size, size_t n, void *ud)
{
    httpc_req *r = ud;
    size_t len = size * n;
    if (len >= 5 && memcmp(p, "HTTP/", 5) == 0) {   /* a new response (redirect, 1xx): start over */
        buf_reset(&r->rhdrs);
        return len;
    }
    if (len <= 2) return len;                       /* the blank line */
    if (buf_append(&r->rhdrs, p, len)) return 0;
    return len;
}

void httpc_easy_defaults(httpc *h, httpc_req *r)
{
    CURL *e = r->easy;
    curl_easy_setopt(e, CURLOPT_PRIVATE, r);
    curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);              /* worker threads: no SIGALRM for DNS */
    curl_easy_setopt(e, CURLOPT_ERRORBUFFER, r->errbuf);
    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, write_cb);
    curl_easy_setopt(e, CURLOPT_WRITEDATA, r);
    curl_easy_setopt(e, CURLOPT_HEADERFUNCTION, header_cb);
    curl_easy_setopt(e, CURLOPT_HEADERDATA, r);
    curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(e, CURLOPT_REDIR_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(e, CURLOPT_HTTP_VERSION, (long)CURL_HTTP_VERSION_2TLS); /* h2 when TLS offers it */
    for (int i = 0; i < O_COUNT; i++) { free(r->opt[i]); r->opt[i] = NULL; }
    for (int i = 0; i < L_COUNT; i++) r->lopt[i] = -1;
    r->set_custom = r->set_post = r->set_nobody = 0;
}

void httpc_easy_free(httpc_req *r)
{
    if (r->easy) curl_easy_cleanup(r->easy);
    for (int i = 0; i < O_COUNT; i++) free(r->opt[i]);
    buf_free(&r->rbody);
    buf_free(&r->rhdrs);
    buf_free(&r->hlines);
    free(r->hnodes);
    free(r);
}

/* ---------------------------------------------------------------- the URL cache */

static void uc_drop(ucache *c)
{
    free(c->url);
    curl_url_cleanup(c->u);
    memset(c, 0, sizeof *c);
}

void httpc_url_cache_free(httpc *h)
{
    for (int i = 0; i < URL_CACHE; i++) if (h->uc[i].url) uc_drop(&h->uc[i]);
}

/* Parses url (http or https with a host) into u, host[:port] into host. */
static int parse_url(const char *url, CURLU **out, char *host, size_t hostlen, int *https, char *err, size_t errlen)
{
    CURLU *u = curl_url();
    char *scheme = NULL, *hn = NULL, *port = NULL;
    CURLUcode uc = u ? curl_url_set(u, CURLUPART_URL, url, CURLU_NON_SUPPORT_SCHEME) : CURLUE_OUT_OF_MEMORY;
    if (uc == CURLUE_OK) uc = curl_url_get(u, CURLUPART_SCHEME, &scheme, 0);
    if (uc == CURLUE_OK) uc = curl_url_get(u, CURLUPART_HOST, &hn, 0);
    int ok = uc == CURLUE_OK && scheme && (strcmp(scheme, "http") == 0 || strcmp(scheme, "https") == 0);
    if (!ok) {
        if (uc != CURLUE_OK) snprintf(err, errlen, "invalid URL (%s): want http://host/... or https://host/...", curl_url_strerror(uc));
        else snprintf(err, errlen, "unsupported URL scheme (%s): want http:// or https://", scheme);
    } else {
        curl_url_get(u, CURLUPART_PORT, &port, 0);
        if (port) snprintf(host, hostlen, "%s:%s", hn, port);
        else snprintf(host, hostlen, "%s", hn);
        *https = strcmp(scheme, "https") == 0;
    }
    curl_free(scheme);
    curl_free(hn);
    curl_free(port);
    if (!ok) { curl_url_cleanup(u); return -1; }
    *out = u;
    return 0;
}

/* Points r at a parsed URL: a cache entry (referenced) or its own handle. */
static int url_lookup(httpc *h, httpc_req *r, const char *url, int *https, char *err, size_t errlen)
{
    h->uclock++;
    int victim = -1;
    for (int i = 0; i < URL_CACHE; i++) {
        ucache *c = &h->uc[i];
        if (c->url && strcmp(c->url, url) == 0) {
            c->refs++;
            c->used = h->uclock;
            r->uc = i;
            r->url = c->u;
            r->host = c->host;
            *https = c->https;
            return 0;
        }
        if (!c->refs && (victim < 0 || !c->url || (h->uc[victim].url && c->used < h->uc[victim].used))) victim = i;
    }
    CURLU *u;
    if (parse_url(url, &u, r->hostbuf, sizeof r->hostbuf, https, err, errlen)) return -1;
    char *copy = victim >= 0 ? strdup(url) : NULL;
    if (!copy) {                          /* every entry in use: this request owns its URL */
        r->uc = -1;
        r->url = u;
        r->host = r->hostbuf;
        return 0;
    }
    ucache *c = &h->uc[victim];
    if (c->url) uc_drop(c);
    c->url = copy;
    c->u = u;
    snprintf(c->host, sizeof c->host, "%s", r->hostbuf);
    c->https = *https;
    c->refs = 1;
    c->used = h->uclock;
    r->uc = victim;
    r->url = u;
    r->host = c->host;
    return 0;
}

void httpc_easy_release(httpc *h, httpc_req *r)
{
    if (r->uc >= 0) h->uc[r->uc].refs--;
    else if (r->url) curl_url_cleanup(r->url);
    r->url = NULL;
    r->uc = -1;
    r->hdrs = NULL;                       /* the nodes stay for the next request */
    free(r->body);
    r->body = NULL;
}

/* ---------------------------------------------------------------- options */

static int same(const char *a, const char *b) { return a == b || (a && b && strcmp(a, b) == 0); }

/* Sets a string option unless the handle already has that value ("" and NULL are alike for
 * the proxy options, which curl reads as "none"). */
static int str_opt(httpc_req *r, int k, CURLoption opt, const char *want)
{
    if (same(r->opt[k], want)) return 0;
    char *copy = NULL;
    if (want && !(copy = strdup(want))) return -1;
    curl_easy_setopt(r->easy, opt, want);
    free(r->opt[k]);
    r->opt[k] = copy;
    return 0;
}

static void num_opt(httpc_req *r, int k, CURLoption opt, long long v)
{
    if (r->lopt[k] == v) return;
    r->lopt[k] = v;
    if (opt == CURLOPT_MAXFILESIZE_LARGE) curl_easy_setopt(r->easy, opt, (curl_off_t)v);
    else if (opt == CURLOPT_ACCEPT_ENCODING) curl_easy_setopt(r->easy, opt, v ? "" : NULL);
    else curl_easy_setopt(r->easy, opt, (long)v);
}

static int set_method(httpc_req *r, const httpc_opts *o)
{
    CURL *e = r->easy;
    const char *m = o->method ? o->method : "GET";
    if (r->set_custom) { curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, NULL); r->set_custom = 0; }
    if (r->set_post || r->set_nobody) {   /* back to a plain GET before anything else */
        curl_easy_setopt(e, CURLOPT_HTTPGET, 1L);
        r->set_post = r->set_nobody = 0;
    }
    /* POST, PUT and PATCH always carry a body (Content-Length: 0 when empty): some servers
     * answer 411 to one without a length */
    int has_body = o->body != NULL || !strcmp(m, "POST") || !strcmp(m, "PUT") || !strcmp(m, "PATCH");
    if (has_body) {
        if (!(r->body = malloc(o->body_len ? o->body_len : 1))) return -1;
        if (o->body_len) memcpy(r->body, o->body, o->body_len);
        curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)(o->body ? o->body_len : 0));
        curl_easy_setopt(e, CURLOPT_POSTFIELDS, r->body);
        r->set_post = 1;
        /* redirects as curl does them: 301/302/303 turn a POST into a GET, 307/308 keep it */
        if (strcmp(m, "POST") != 0) { curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, m); r->set_custom = 1; }
    } else if (strcmp(m, "HEAD") == 0) {
        curl_easy_setopt(e, CURLOPT_NOBODY, 1L);
        r->set_nobody = 1;
    } else if (strcmp(m, "GET") != 0) {
        curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, m);
        r->set_custom = 1;
    }
    return 0;
}

static int has_name(const char *line, const char *name, size_t n)
{
    return strncasecmp(line, name, n) == 0 && line[n] == ':';
}

/* r->hdrs: the caller's header lines, then User-Agent and Accept-Encoding unless the caller set
 * them, and an empty Expect for a large body (no 100-continue round trip). */
static int set_headers(httpc *h, httpc_req *r, const httpc_opts *o)
{
    int ua = o->user_agent != NULL, ae = o->decompress && h->accept_encoding[0];
    buf *b = &r->hlines;
    buf_reset(b);
    size_t n = 0;
    for (size_t i = 0; i < o->nheaders; i++) {
        const char *l = o->headers[i];
        if (ua && has_name(l, "user-agent", 10)) ua = 0;
        if (ae && has_name(l, "accept-encoding", 15)) ae = 0;
        if (buf_append(b, l, strlen(l) + 1)) return -1;
        n++;
    }
    if (ua) {
        if (buf_puts(b, "User-Agent: ") || buf_append(b, o->user_agent, strlen(o->user_agent) + 1)) return -1;
        n++;
    }
    if (ae) {
        if (buf_append(b, h->accept_encoding, strlen(h->accept_encoding) + 1)) return -1;
        n++;
    }
    if (o->body && o->body_len > 1024) {
        if (buf_append(b, "Expect:", 8)) return -1;
        n++;
    }
    if (!n) { r->hdrs = NULL; return 0; }
    if (n > r->nhnodes) {
        struct curl_slist *p = realloc(r->hnodes, n * sizeof *p);
        if (!p) return -1;
        r->hnodes = p;
        r->nhnodes = n;
    }
    char *s = b->data;                    /* linked only now: the buffer no longer moves */
    for (size_t i = 0; i < n; i++) {
        r->hnodes[i].data = s;
        r->hnodes[i].next = i + 1 < n ? &r->hnodes[i + 1] : NULL;
        s += strlen(s) + 1;
    }
    r->hdrs = r->hnodes;
    return 0;
}

/* "Accept-Encoding: ..." with what this libcurl decodes, in curl's own order (as it would send
 * for CURLOPT_ACCEPT_ENCODING ""); "" when it decodes nothing. */
void httpc_easy_accept_encoding(httpc *h)
{
    const curl_version_info_data *v = curl_version_info(CURLVERSION_NOW);
    char *out = h->accept_encoding;
    size_t n = sizeof h->accept_encoding;
    out[0] = 0;
    const char *list[3];
    int k = 0;
    if (v->libz_version) list[k++] = "deflate, gzip";
    if (v->features & CURL_VERSION_BROTLI) list[k++] = "br";
    if (v->features & CURL_VERSION_ZSTD) list[k++] = "zstd";
    if (!k) return;
    size_t len = (size_t)snprintf(out, n, "Accept-Encoding: %s", list[0]);
    for (int i = 1; i < k && len < n; i++) len += (size_t)snprintf(out + len, n - len, ", %s", list[i]);
}

int httpc_easy_setup(httpc *h, httpc_req *r, const httpc_opts *o, char *err, size_t errlen)
{
    int https = 0;
    if (url_lookup(h, r, o->url, &https, err, errlen)) return -1;
    /* a TLS file option to unset: curl only restores its defaults through a reset */
    const char *tls[4] = {o->ca_file, o->client_cert, o->client_key, o->key_password};
    for (int k = O_CAINFO; k <= O_KEYPASSWD; k++)
        if (r->opt[k] && !tls[k]) {
            curl_easy_reset(r->easy);
            httpc_easy_defaults(h, r);
            break;
        }
    CURL *e = r->easy;
    curl_easy_setopt(e, CURLOPT_CURLU, r->url);
    num_opt(r, L_TIMEOUT, CURLOPT_TIMEOUT_MS, o->timeout > 0 ? (long long)(o->timeout * 1000 + 0.5) : 0);
    num_opt(r, L_CONNECT, CURLOPT_CONNECTTIMEOUT_MS, o->connect_timeout > 0 ? (long long)(o->connect_timeout * 1000 + 0.5) : 0);
    num_opt(r, L_MAXSIZE, CURLOPT_MAXFILESIZE_LARGE, (long long)o->max_body);
    num_opt(r, L_FOLLOW, CURLOPT_FOLLOWLOCATION, o->follow_redirects != 0);
    num_opt(r, L_MAXREDIRS, CURLOPT_MAXREDIRS, o->max_redirects);
    num_opt(r, L_VERIFYPEER, CURLOPT_SSL_VERIFYPEER, o->verify_tls != 0);
    num_opt(r, L_VERIFYHOST, CURLOPT_SSL_VERIFYHOST, o->verify_tls ? 2 : 0);
    num_opt(r, L_ENCODING, CURLOPT_ACCEPT_ENCODING, o->decompress != 0);
    /* https may negotiate h2: wait for a connection being set up rather than open another
     * (for http:// the wait would hold requests behind a slow HTTP/1.1 response) */
    num_opt(r, L_PIPEWAIT, CURLOPT_PIPEWAIT, https);
    r->timeout = o->timeout;
    r->connect_timeout = o->connect_timeout;
    r->max_body = o->max_body;
    r->max_redirects = o->max_redirects;
    /* proxies: explicit, else from the environment as read at start; "" = none, and no getenv
     * in curl for every transfer */
    const char *proxy, *noproxy;
    httpc_proxy_choose(h, r, o, https, &proxy, &noproxy);
    if (str_opt(r, O_CAINFO, CURLOPT_CAINFO, o->ca_file) || str_opt(r, O_SSLCERT, CURLOPT_SSLCERT, o->client_cert) ||
        str_opt(r, O_SSLKEY, CURLOPT_SSLKEY, o->client_key) || str_opt(r, O_KEYPASSWD, CURLOPT_KEYPASSWD, o->key_password) ||
        str_opt(r, O_PROXY, CURLOPT_PROXY, proxy) || str_opt(r, O_NOPROXY, CURLOPT_NOPROXY, noproxy) ||
        /* for a CONNECT only: the request's own User-Agent is a header line (set_headers) */
        str_opt(r, O_USERAGENT, CURLOPT_USERAGENT, r->via_proxy && https ? o->user_agent : NULL))
        goto oom;
    if (set_headers(h, r, o)) goto oom;
    curl_easy_setopt(e, CURLOPT_HTTPHEADER, r->hdrs);
    if (set_method(r, o)) goto oom;
    return 0;
oom:
    snprintf(err, errlen, "out of memory");
    return -1;
}
