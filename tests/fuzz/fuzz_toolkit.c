/* fuzz_toolkit.c: libFuzzer target for the toolkit's parsers: base64/base64url/hex decoding
 * (whatever decodes must encode back to an equivalent text), traceparent (a parsed header must
 * format back to itself), PEM key parsing, and JWS verification of the input against a key. */
#include "crypto.h"
#include "jws.h"
#include "tracectx.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

static jws_key *hk;

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!hk) {
        crypto_init();
        hk = jws_key_secret("a-secret-of-at-least-thirty-two-bytes!!", 39);
    }
    const char *s = (const char *)data;
    unsigned char *out = malloc(size + 4);
    char *again = malloc(2 * size + 8);
    for (int url = 0; url < 2; url++) {
        long n = crypto_b64_decode(s, size, out, url);
        if (n >= 0) {
            /* the canonical encoding decodes to the same bytes */
            size_t el = crypto_b64_encode(out, (size_t)n, again, url);
            unsigned char *back = malloc(el + 4);
            long m = crypto_b64_decode(again, el, back, url);
            if (m != n || memcmp(back, out, (size_t)n) != 0) abort();
            free(back);
        }
    }
    long h = crypto_hex_decode(s, size, out);
    if (h >= 0 && (size_t)h * 2 != size) abort();
    tracectx t;
    if (tracectx_parse(&t, s, size) == 0) {
        if (strlen(t.trace_id) != 32 || strlen(t.parent_id) != 16) abort();
        memcpy(t.span_id, t.parent_id, 17);
        char tp[TRACEPARENT_LEN + 1];
        tracectx_traceparent(&t, tp);
        tracectx u;
        if (tracectx_parse(&u, tp, strlen(tp)) || strcmp(u.trace_id, t.trace_id)) abort();
    }
    char err[256];
    if (size > 10 && memmem(s, size, "-----BEGIN", 10)) jws_key_free(jws_key_pem(s, size, err, sizeof err));
    /* "input.signature": the HMAC of random bytes never matches a random signature */
    const char *dot = memchr(s, '.', size);
    if (dot) {
        size_t il = (size_t)(dot - s);
        long sl = crypto_b64_decode(dot + 1, size - il - 1, out, 1);
        if (sl >= 0) jws_verify(hk, JWS_HS256, s, il, out, (size_t)sl);
    }
    free(out);
    free(again);
    return 0;
}
