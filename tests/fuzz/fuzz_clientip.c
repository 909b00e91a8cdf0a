/* fuzz_clientip.c: libFuzzer target for the header walk, CIDR parsing and prefix keys.
 * Input: byte 0 picks the peer (trusted or not, v4 or v6) and the header mode, then
 * X-Forwarded-For, a '\n', the Forwarded value. Build: see docs/rate-limiting.md. */
#include "clientip.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

static clientip_trust *trust;

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!trust) {
        const char *nets[] = {"10.0.0.0/8", "fd00::/8", "192.0.2.1", "::ffff:0:0/104"};
        trust = clientip_trust_parse(nets, 4, NULL, 0);
    }
    if (size == 0) return 0;
    uint8_t ctl = data[0];
    const char *s = (const char *)data + 1;
    size_t n = size - 1;
    const char *nl = memchr(s, '\n', n);
    const char *xff = s, *fwd = nl ? nl + 1 : s + n;
    size_t xfflen = nl ? (size_t)(nl - s) : n, fwdlen = nl ? n - xfflen - 1 : 0;

    struct sockaddr_storage ss;
    memset(&ss, 0, sizeof ss);
    if (ctl & 1) {
        struct sockaddr_in6 *p = (struct sockaddr_in6 *)&ss;
        p->sin6_family = AF_INET6;
        inet_pton(AF_INET6, (ctl & 2) ? "fd00::1" : "2001:db8::1", &p->sin6_addr);
    } else {
        struct sockaddr_in *p = (struct sockaddr_in *)&ss;
        p->sin_family = AF_INET;
        inet_pton(AF_INET, (ctl & 2) ? "10.1.2.3" : "203.0.113.1", &p->sin_addr);
    }
    clientip_trust_set_header(trust, (clientip_header)((ctl >> 2) % 3));

    /* Exact-size copies so ASan sees any read past the caller's lengths. */
    char *x = malloc(xfflen ? xfflen : 1), *f = malloc(fwdlen ? fwdlen : 1);
    memcpy(x, xff, xfflen);
    memcpy(f, fwd, fwdlen);
    char out[64], key[64];
    int r = clientip_resolve(trust, (struct sockaddr *)&ss, x, xfflen, f, fwdlen, out, sizeof out);
    if (r < 0 || (size_t)r != strlen(out)) abort(); /* a valid peer always resolves */
    if (clientip_key(out, (ctl >> 4) * 8 + 8, key, sizeof key) < 0) abort();
    if (!(ctl & 2) && strcmp(out, (ctl & 1) ? "2001:db8::1" : "203.0.113.1") != 0)
        abort(); /* untrusted peer: headers must never matter */

    /* The raw input as a one-entry trust list and as a key source (NUL-terminated copy). */
    char *z = malloc(n + 1);
    memcpy(z, s, n);
    z[n] = 0;
    char err[128];
    const char *one[] = {z};
    clientip_trust_free(clientip_trust_parse(one, 1, err, sizeof err));
    clientip_key(z, ctl, key, sizeof key);
    clientip_is_trusted(trust, z);
    free(z);
    free(x);
    free(f);
    return 0;
}
