/* httpc_proxy.c: which proxy a request goes through, decided once per request so that the error
 * of a proxy that is down or refuses is told apart from the origin's.
 *
 * Precedence (docs/http-client.md): the request's `proxy` option, else http_client.proxy, else
 * the environment read once per worker at start (https_proxy/HTTPS_PROXY for https://,
 * http_proxy/HTTP_PROXY for http://, then all_proxy/ALL_PROXY; lower case first). The no_proxy
 * list (http_client.no_proxy, else no_proxy/NO_PROXY) is passed to curl, which does the routing;
 * httpc_noproxy_match applies the same documented rules (CURLOPT_NOPROXY) only to know whether
 * a failure happened at the proxy. Owned by the worker's httpc (httpc_int.h). */
#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "httpc_int.h"

static const char *env2(const char *lower, const char *upper)
{
    const char *v = getenv(lower);
    if (!v || !*v) v = getenv(upper);
    return v && *v ? v : NULL;
}

void httpc_proxy_env(httpc *h)
{
    /* HTTP_PROXY in upper case too: curl ignores it because a CGI program receives a client's
     * `Proxy:` header under that name; sluice is no CGI program, its environment is the operator's */
    const char *hp = env2("http_proxy", "HTTP_PROXY"), *sp = env2("https_proxy", "HTTPS_PROXY");
    const char *ap = env2("all_proxy", "ALL_PROXY"), *np = env2("no_proxy", "NO_PROXY");
    if (!hp) hp = ap;
    if (!sp) sp = ap;
    h->env_http_proxy = hp ? strdup(hp) : NULL;
    h->env_https_proxy = sp ? strdup(sp) : NULL;
    h->env_no_proxy = np ? strdup(np) : NULL;
}

void httpc_proxy_free(httpc *h)
{
    free(h->env_http_proxy);
    free(h->env_https_proxy);
    free(h->env_no_proxy);
    free(h->proxy_src);
}

/* a/bits against an address of the same family (len 4 or 16 bytes) */
static int cidr_match(const unsigned char *addr, const unsigned char *net, int len, int bits)
{
    int whole = bits / 8, rest = bits % 8;
    if (bits > len * 8) return 0;
    if (memcmp(addr, net, (size_t)whole) != 0) return 0;
    if (!rest) return 1;
    unsigned char mask = (unsigned char)(0xff << (8 - rest));
    return (addr[whole] & mask) == (net[whole] & mask);
}

/* Does the no_proxy list exclude host[:port]? Entries are separated by commas or spaces; "*"
 * alone excludes every host; a name matches itself and its subdomains (a leading dot is
 * ignored); an IP address matches itself, or a network in CIDR notation. */
int httpc_noproxy_match(const char *list, const char *hostport)
{
    if (!list || !*list) return 0;
    if (strcmp(list, "*") == 0) return 1;
    char host[128];
    const char *hs = hostport, *he;
    if (*hs == '[') { hs++; he = strchr(hs, ']'); }
    else he = strrchr(hs, ':');
    size_t hl = he ? (size_t)(he - hs) : strlen(hs);
    if (hl >= sizeof host) return 0;
    memcpy(host, hs, hl);
    host[hl] = 0;
    while (hl && host[hl - 1] == '.') host[--hl] = 0;     /* "example.com." is example.com */
    unsigned char a[16];
    int family = inet_pton(AF_INET, host, a) == 1 ? AF_INET : inet_pton(AF_INET6, host, a) == 1 ? AF_INET6 : 0;
    const char *p = list;
    while (*p) {
        while (*p == ',' || *p == ' ' || *p == '\t') p++;
        const char *t = p;
        while (*p && *p != ',' && *p != ' ' && *p != '\t') p++;
        size_t tl = (size_t)(p - t);
        if (!tl) continue;
        if (family) {
            char tok[64], *slash;
            if (tl >= sizeof tok) continue;
            memcpy(tok, t, tl);
            tok[tl] = 0;
            char *v6 = tok;
            if (*v6 == '[') { v6++; char *b = strchr(v6, ']'); if (b) memmove(b, b + 1, strlen(b)); }
            int bits = family == AF_INET ? 32 : 128;
            if ((slash = strchr(v6, '/'))) { *slash = 0; bits = atoi(slash + 1); }
            unsigned char net[16];
            if (inet_pton(family, v6, net) == 1 && bits >= 0 && cidr_match(a, net, family == AF_INET ? 4 : 16, bits)) return 1;
            continue;
        }
        while (tl && *t == '.') { t++; tl--; }
        while (tl && t[tl - 1] == '.') tl--;
        if (!tl || tl > hl) continue;
        if (strncasecmp(host + hl - tl, t, tl) == 0 && (tl == hl || host[hl - tl - 1] == '.')) return 1;
    }
    return 0;
}

/* host[:port] of a proxy URL for messages (never its user name or password); one entry cached,
 * a worker rarely has more than one proxy */
static void proxy_name(httpc *h, const char *proxy, char *out, size_t n)
{
    if (h->proxy_src && strcmp(h->proxy_src, proxy) == 0) { snprintf(out, n, "%s", h->proxy_name); return; }
    CURLU *u = curl_url();
    char *hn = NULL, *port = NULL;
    if (u && curl_url_set(u, CURLUPART_URL, proxy, CURLU_GUESS_SCHEME | CURLU_NON_SUPPORT_SCHEME) == CURLUE_OK &&
        curl_url_get(u, CURLUPART_HOST, &hn, 0) == CURLUE_OK) {
        curl_url_get(u, CURLUPART_PORT, &port, 0);
        snprintf(out, n, "%s%s%s", hn, port ? ":" : "", port ? port : "");
    } else {
        snprintf(out, n, "(unparsable proxy URL)");
    }
    curl_free(hn);
    curl_free(port);
    curl_url_cleanup(u);
    char *copy = strdup(proxy);
    if (!copy) return;
    free(h->proxy_src);
    h->proxy_src = copy;
    snprintf(h->proxy_name, sizeof h->proxy_name, "%s", out);
}

void httpc_proxy_choose(httpc *h, httpc_req *r, const httpc_opts *o, int https, const char **proxy, const char **noproxy)
{
    const char *p = o->proxy ? o->proxy : https ? h->env_https_proxy : h->env_http_proxy;
    const char *np = o->no_proxy ? o->no_proxy : h->env_no_proxy;
    *proxy = p ? p : "";
    *noproxy = np ? np : "";
    r->via_proxy = **proxy && !httpc_noproxy_match(*noproxy, r->host);
    if (r->via_proxy) proxy_name(h, *proxy, r->proxy_name, sizeof r->proxy_name);
}
