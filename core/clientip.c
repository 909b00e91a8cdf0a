/* clientip.c: trusted-proxy walk over X-Forwarded-For / Forwarded, and IPv6 prefix keys. */
#include "clientip.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Every address is held as 16 bytes; IPv4 as ::ffff:a.b.c.d so one matcher serves both. */
typedef struct addr {
    uint8_t b[16];
} addr;

typedef struct cidr {
    addr net;
    unsigned bits; /* prefix length over the 16-byte form */
} cidr;

struct clientip_trust {
    clientip_header header;
    size_t n;
    cidr list[];
};

static const uint8_t v4mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};

static int is_v4(const addr *a) { return memcmp(a->b, v4mapped, 12) == 0; }

static void mask_bits(addr *a, unsigned bits)
{
    for (unsigned i = 0; i < 16; i++) {
        unsigned keep = bits >= 8 * (i + 1) ? 8 : bits > 8 * i ? bits - 8 * i : 0;
        a->b[i] &= (uint8_t)(0xFF00u >> keep);
    }
}

/* Strict address text (no brackets, no port, no zone) of length len. */
static int parse_addr(const char *s, size_t len, addr *out)
{
    char buf[INET6_ADDRSTRLEN + 1];
    if (len == 0 || len >= sizeof buf) return -1;
    memcpy(buf, s, len);
    buf[len] = 0;
    if (memchr(buf, 0, len)) return -1; /* embedded NUL from a hostile header */
    struct in_addr v4;
    if (inet_pton(AF_INET, buf, &v4) == 1) {
        memcpy(out->b, v4mapped, 12);
        memcpy(out->b + 12, &v4, 4);
        return 0;
    }
    return inet_pton(AF_INET6, buf, out->b) == 1 ? 0 : -1;
}

static int format_addr(const addr *a, char *out, size_t outlen)
{
    char buf[INET6_ADDRSTRLEN];
    if (is_v4(a))
        inet_ntop(AF_INET, a->b + 12, buf, sizeof buf);
    else
        inet_ntop(AF_INET6, a->b, buf, sizeof buf);
    size_t n = strlen(buf);
    if (!out || n + 1 > outlen) return -1;
    memcpy(out, buf, n + 1);
    return (int)n;
}

static int trusted(const clientip_trust *t, const addr *a)
{
    if (!t) return 0;
    for (size_t i = 0; i < t->n; i++) {
        const cidr *c = &t->list[i];
        unsigned full = c->bits / 8, rest = c->bits % 8;
        if (memcmp(a->b, c->net.b, full) != 0) continue;
        if (rest && ((a->b[full] ^ c->net.b[full]) & (uint8_t)(0xFF00u >> rest))) continue;
        return 1;
    }
    return 0;
}

/* ---- trust set ---- */

clientip_trust *clientip_trust_parse(const char *const *cidrs, size_t n, char *err, size_t errlen)
{
    if (err && errlen) err[0] = 0;
    if (n > 100000 || (n && !cidrs)) {
        if (err && errlen) snprintf(err, errlen, "bad trusted proxy list");
        return NULL;
    }
    clientip_trust *t = calloc(1, sizeof *t + n * sizeof(cidr));
    if (!t) {
        if (err && errlen) snprintf(err, errlen, "out of memory");
        return NULL;
    }
    for (size_t i = 0; i < n; i++) {
        const char *s = cidrs[i] ? cidrs[i] : "";
        const char *slash = strchr(s, '/');
        size_t alen = slash ? (size_t)(slash - s) : strlen(s);
        cidr *c = &t->list[i];
        int bad = parse_addr(s, alen, &c->net) != 0;
        /* The text decides the prefix scale: "::ffff:0:0/96" is an IPv6 prefix. */
        int v4text = !memchr(s, ':', alen);
        unsigned max = v4text ? 32 : 128, bits = max;
        if (!bad && slash) {
            const char *d = slash + 1;
            bad = *d == 0 || strlen(d) > 3;
            unsigned v = 0;
            for (; !bad && *d; d++) {
                if (*d < '0' || *d > '9') bad = 1;
                else v = v * 10 + (unsigned)(*d - '0');
            }
            if (!bad && v > max) bad = 1;
            bits = v;
        }
        if (bad) {
            if (err && errlen)
                snprintf(err, errlen, "trusted proxy #%zu \"%.60s\": not an IP address or CIDR",
                         i + 1, s);
            free(t);
            return NULL;
        }
        /* Host bits set (10.1.2.3/8) are ignored, as nginx and HAProxy do. */
        c->bits = v4text ? bits + 96 : bits;
        mask_bits(&c->net, c->bits);
    }
    t->n = n;
    t->header = CLIENTIP_HDR_AUTO;
    return t;
}

void clientip_trust_free(clientip_trust *t) { free(t); }

void clientip_trust_set_header(clientip_trust *t, clientip_header h)
{
    if (t) t->header = h;
}

int clientip_is_trusted(const clientip_trust *t, const char *ip)
{
    addr a;
    return ip && parse_addr(ip, strlen(ip), &a) == 0 && trusted(t, &a);
}

/* ---- one hop ---- */

static int is_ows(char c) { return c == ' ' || c == '\t'; }

static void trim(const char **s, const char **e)
{
    while (*s < *e && is_ows(**s)) (*s)++;
    while (*e > *s && is_ows((*e)[-1])) (*e)--;
}

/* ":port" (digits, or RFC 7239 obfuscated "_x") from p to e; 0 if well formed. */
static int parse_port(const char *p, const char *e)
{
    if (p == e || *p != ':' || ++p == e) return -1;
    if (*p == '_') {
        for (p++; p < e; p++)
            if (!(*p == '.' || *p == '_' || *p == '-' || (*p >= '0' && *p <= '9') ||
                  ((*p | 0x20) >= 'a' && (*p | 0x20) <= 'z')))
                return -1;
        return 0;
    }
    if (e - p > 5) return -1;
    for (; p < e; p++)
        if (*p < '0' || *p > '9') return -1;
    return 0;
}

/* A node as proxies write it: "1.2.3.4", "1.2.3.4:80", "2001:db8::1", "[2001:db8::1]",
 * "[2001:db8::1]:80". A bare IPv6 address never has a port (its last group would be
 * read as one), so "2001:db8::1:80" is the address it spells. */
static int parse_node(const char *s, const char *e, addr *out)
{
    trim(&s, &e);
    if (s == e) return -1;
    if (*s == '[') {
        const char *close = memchr(s, ']', (size_t)(e - s));
        if (!close || !memchr(s, ':', (size_t)(close - s))) return -1;
        if (close + 1 != e && parse_port(close + 1, e) != 0) return -1;
        return parse_addr(s + 1, (size_t)(close - s - 1), out);
    }
    const char *colon = memchr(s, ':', (size_t)(e - s));
    if (colon && !memchr(colon + 1, ':', (size_t)(e - colon - 1))) { /* exactly one ':' */
        if (parse_port(colon, e) != 0) return -1;
        if (parse_addr(s, (size_t)(colon - s), out) != 0 || !is_v4(out)) return -1;
        return 0;
    }
    return parse_addr(s, (size_t)(e - s), out);
}

/* ---- the walk ---- */

/* The walk is specified right to left, but a forward pass gives the same answer
 * without storing the hops: the rightmost hop that is not trusted decides. If it is a
 * valid untrusted address it is the client; if malformed, the hop to its right (the
 * last trusted one reached), or the peer if there is none; if every hop is trusted,
 * the leftmost. */
typedef struct walk {
    const clientip_trust *t;
    int n;            /* hops seen */
    int state;        /* 0 all trusted so far, 1 untrusted found, 2 malformed waiting, 3 resolved */
    addr first, ans;
} walk;

static void walk_hop(walk *w, int valid, const addr *a)
{
    if (!valid) {
        w->state = 2;
    } else if (!trusted(w->t, a)) {
        w->state = 1;
        w->ans = *a;
    } else {
        if (w->n == 0) w->first = *a;
        if (w->state == 2) {
            w->state = 3;
            w->ans = *a;
        }
    }
    w->n++;
}

/* Result of the walk; returns 0 when the peer is the answer. */
static int walk_end(const walk *w, addr *out)
{
    switch (w->state) {
    case 0:
        if (w->n == 0) return 0;
        *out = w->first;
        return 1;
    case 1:
    case 3:
        *out = w->ans;
        return 1;
    default:
        return 0;
    }
}

static void walk_xff(walk *w, const char *s, const char *end)
{
    while (s <= end) {
        const char *comma = memchr(s, ',', (size_t)(end - s));
        const char *e = comma ? comma : end;
        addr a;
        walk_hop(w, parse_node(s, e, &a) == 0, &a);
        if (!comma) break;
        s = comma + 1;
    }
}

/* Unquote a token or quoted-string value into buf (NUL-free); -1 if malformed. */
static int unquote(const char *s, const char *e, char *buf, size_t cap, size_t *len)
{
    size_t n = 0;
    if (s < e && *s == '"') {
        if (e - s < 2 || e[-1] != '"') return -1;
        for (s++, e--; s < e; s++) {
            if (*s == '"') return -1;
            if (*s == '\\' && ++s == e) return -1;
            if (n == cap) return -1;
            buf[n++] = *s;
        }
    } else {
        for (; s < e; s++) {
            if (*s == '"' || *s == '\\' || n == cap) return -1;
            buf[n++] = *s;
        }
    }
    *len = n;
    return 0;
}

/* One Forwarded element "for=...;proto=...;by=...": its for= node, 0 if valid. */
static int forwarded_for(const char *s, const char *e, addr *out)
{
    int found = 0, valid = 0;
    while (s < e) {
        /* next ';' outside quotes */
        const char *p = s;
        int q = 0;
        for (; p < e && (q || *p != ';'); p++) {
            if (q && *p == '\\' && p + 1 < e) p++;
            else if (*p == '"') q = !q;
        }
        if (q) return -1;
        const char *ps = s, *pe = p;
        trim(&ps, &pe);
        const char *eq = memchr(ps, '=', (size_t)(pe - ps));
        if (!eq) return -1;
        const char *ns = ps, *ne = eq;
        trim(&ns, &ne);
        if (ne - ns == 3 && (ns[0] | 0x20) == 'f' && (ns[1] | 0x20) == 'o' && (ns[2] | 0x20) == 'r') {
            if (found++) return -1; /* two for= in one element: ambiguous */
            const char *vs = eq + 1, *ve = pe;
            trim(&vs, &ve);
            char buf[80];
            size_t n;
            valid = unquote(vs, ve, buf, sizeof buf, &n) == 0 && parse_node(buf, buf + n, out) == 0;
        }
        s = p + (p < e);
    }
    return found && valid ? 0 : -1;
}

static void walk_forwarded(walk *w, const char *s, const char *end)
{
    for (;;) {
        const char *p = s;
        int q = 0;
        for (; p < end && (q || *p != ','); p++) {
            if (q && *p == '\\' && p + 1 < end) p++;
            else if (*p == '"') q = !q;
        }
        addr a;
        walk_hop(w, !q && forwarded_for(s, p, &a) == 0, &a);
        if (p >= end) break;
        s = p + 1;
    }
}

static int present(const char *s, size_t len)
{
    for (size_t i = 0; s && i < len; i++)
        if (!is_ows(s[i])) return 1;
    return 0;
}

int clientip_resolve_how(const clientip_trust *t, const struct sockaddr *peer, const char *xff,
                         size_t xfflen, const char *forwarded, size_t fwdlen, char *out,
                         size_t outlen, clientip_how *how)
{
    addr a;
    clientip_how h0 = CLIENTIP_PEER;
    if (!peer) return -1;
    if (peer->sa_family == AF_INET) {
        memcpy(a.b, v4mapped, 12);
        memcpy(a.b + 12, &((const struct sockaddr_in *)peer)->sin_addr, 4);
    } else if (peer->sa_family == AF_INET6) {
        memcpy(a.b, &((const struct sockaddr_in6 *)peer)->sin6_addr, 16);
    } else {
        return -1;
    }
    int has_xff = present(xff, xfflen), has_fwd = present(forwarded, fwdlen);
    if (has_xff || has_fwd) h0 = CLIENTIP_UNRESOLVED;
    if (trusted(t, &a)) {
        clientip_header h = t->header;
        walk w = {.t = t};
        int walked = 1;
        if (has_xff && (h == CLIENTIP_HDR_XFF || h == CLIENTIP_HDR_AUTO))
            walk_xff(&w, xff, xff + xfflen);
        else if (has_fwd && (h == CLIENTIP_HDR_FORWARDED || (h == CLIENTIP_HDR_AUTO && !has_xff)))
            walk_forwarded(&w, forwarded, forwarded + fwdlen);
        else
            walked = 0;
        addr c;
        if (walk_end(&w, &c)) a = c;
        /* states 0 (every hop trusted) and 1 (an untrusted, well-formed hop) name the client;
         * 2 and 3 fell back because the deciding hop was malformed */
        if (walked && (w.state == 0 || w.state == 1) && w.n > 0) h0 = CLIENTIP_HOP;
    }
    if (how) *how = h0;
    return format_addr(&a, out, outlen);
}

int clientip_resolve(const clientip_trust *t, const struct sockaddr *peer, const char *xff,
                     size_t xfflen, const char *forwarded, size_t fwdlen, char *out,
                     size_t outlen)
{
    return clientip_resolve_how(t, peer, xff, xfflen, forwarded, fwdlen, out, outlen, NULL);
}

int clientip_is_loopback(const char *ip)
{
    addr a;
    if (!ip || parse_addr(ip, strlen(ip), &a) != 0) return 0;
    if (is_v4(&a)) return a.b[12] == 127;
    static const uint8_t one[16] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1};
    return memcmp(a.b, one, 16) == 0;
}

int clientip_key(const char *ip, unsigned v6_prefix, char *out, size_t outlen)
{
    addr a;
    if (v6_prefix == 0) v6_prefix = 64;
    if (!ip || v6_prefix > 128 || parse_addr(ip, strlen(ip), &a) != 0) return -1;
    if (is_v4(&a)) return format_addr(&a, out, outlen);
    mask_bits(&a, v6_prefix);
    char buf[INET6_ADDRSTRLEN];
    inet_ntop(AF_INET6, a.b, buf, sizeof buf);
    int n = snprintf(out, outlen, "%s/%u", buf, v6_prefix);
    return n < 0 || (size_t)n >= outlen ? -1 : n;
}
