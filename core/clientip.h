/* clientip.h: who is the client (trusted-proxy aware X-Forwarded-For / Forwarded walk) and its rate-limit key. */
#ifndef SLUICE_CLIENTIP_H
#define SLUICE_CLIENTIP_H

#include <stddef.h>
#include <sys/socket.h>

/*
 * Rules (docs/rate-limiting.md has the long form):
 * - Forwarding headers are read only when the socket peer is a trusted proxy.
 *   Otherwise the client is the socket peer, whatever the headers say.
 * - The header's hops are walked right to left (the rightmost hop was written by the
 *   proxy nearest to us). Trusted hops are skipped; the first untrusted hop is the
 *   client. If every hop is trusted, the leftmost one is the client.
 * - A malformed hop (not an IP, "unknown", an obfuscated "_id", an empty list item,
 *   unbalanced quotes) stops the walk: the client is the last trusted hop reached
 *   (the proxy that wrote the bad value), never something to the left of it.
 * - Which header: CLIENTIP_HDR_AUTO (default) uses X-Forwarded-For when present and
 *   non-empty, else Forwarded. Configure your proxies to write (and overwrite, not
 *   pass through) the header you rely on, and pin it with clientip_trust_set_header:
 *   a header your proxy does not write is controlled by the client.
 * - Several header lines of the same name must be joined with ", " by the caller,
 *   in the order received.
 * - IPv4-mapped IPv6 (::ffff:1.2.3.4) is reported as IPv4. Ports ("1.2.3.4:80",
 *   "[::1]:80") are dropped. Output is the canonical inet_ntop text.
 */

typedef struct clientip_trust clientip_trust;

typedef enum clientip_header {
    CLIENTIP_HDR_AUTO = 0,  /* X-Forwarded-For if present, else Forwarded */
    CLIENTIP_HDR_XFF,       /* only X-Forwarded-For */
    CLIENTIP_HDR_FORWARDED, /* only RFC 7239 Forwarded: for= */
} clientip_header;

/* Parse n trusted proxies: IPv4/IPv6 CIDRs ("10.0.0.0/8", "fd00::/8") or bare addresses.
 * n == 0 gives a set that trusts nobody. NULL on bad input with err naming the entry. */
clientip_trust *clientip_trust_parse(const char *const *cidrs, size_t n, char *err, size_t errlen);

/* Free a trust set. NULL is ignored. */
void clientip_trust_free(clientip_trust *t);

/* Choose which forwarding header is honoured (default CLIENTIP_HDR_AUTO). */
void clientip_trust_set_header(clientip_trust *t, clientip_header h);

/* Is this textual address inside the trusted set? 1/0, and 0 for unparsable text. */
int clientip_is_trusted(const clientip_trust *t, const char *ip);

/* Write the client address (text, NUL-terminated) for a request from `peer` (AF_INET or
 * AF_INET6) with the given raw header values (NULL/0 when absent). t may be NULL (trust
 * nobody). Returns the text length, or -1 for an unsupported peer family or a too small out
 * (INET6_ADDRSTRLEN = 46 bytes always suffices). Thread-safe, no allocation. */
int clientip_resolve(const clientip_trust *t, const struct sockaddr *peer, const char *xff,
                     size_t xfflen, const char *forwarded, size_t fwdlen, char *out,
                     size_t outlen);

/* How clientip_resolve_how found its answer. */
typedef enum clientip_how {
    CLIENTIP_PEER = 0,   /* no forwarding header present: the socket peer */
    CLIENTIP_HOP,        /* a well-formed hop of the honoured header (or the leftmost, all trusted) */
    CLIENTIP_UNRESOLVED, /* a forwarding header is present but does not name the client: the peer is
                          * not trusted, the header is not the honoured one, or the deciding hop is
                          * malformed. The answer is the fallback clientip_resolve gives. */
} clientip_how;

/* clientip_resolve that also says how the answer was found (how may be NULL). Used where a
 * wrong answer is worse than no answer (the admin area refuses CLIENTIP_UNRESOLVED). */
int clientip_resolve_how(const clientip_trust *t, const struct sockaddr *peer, const char *xff,
                         size_t xfflen, const char *forwarded, size_t fwdlen, char *out,
                         size_t outlen, clientip_how *how);

/* Is this textual address a loopback one (127.0.0.0/8, ::1, ::ffff:127.x)? 1/0. */
int clientip_is_loopback(const char *ip);

/* Rate-limit key for a client address: IPv4 as is, IPv6 masked to v6_prefix bits (1..128,
 * 0 = 64) as "net/prefix", e.g. "2001:db8:1:2::/64". Returns the length, -1 on bad input
 * or a too small out (64 bytes always suffices). */
int clientip_key(const char *ip, unsigned v6_prefix, char *out, size_t outlen);

#endif
