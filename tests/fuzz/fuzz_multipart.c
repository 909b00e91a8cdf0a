/* fuzz_multipart.c: libFuzzer target for multipart_parse. Input: byte 0 picks max_parts
 * and the scratch size, then the Content-Type value, a '\n', the body.
 * Build: clang -g -O1 -fsanitize=fuzzer,address,undefined -D_GNU_SOURCE -Icore core/multipart.c \
 *          tests/fuzz/fuzz_multipart.c -o /tmp/fuzz_multipart
 * Run:   /tmp/fuzz_multipart -max_total_time=60 tests/fuzz/corpus/multipart */
#include "multipart.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

static int inside(const char *p, size_t n, const char *base, size_t cap)
{
    return p >= base && p + n <= base + cap;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size == 0) return 0;
    size_t max = data[0] & 15, scap = (size_t)(data[0] >> 4) * 16;
    const char *s = (const char *)data + 1;
    size_t n = size - 1;
    const char *nl = memchr(s, '\n', n);
    size_t ctl = nl ? (size_t)(nl - s) : 0;
    const char *bsrc = nl ? nl + 1 : s;
    size_t blen = n - (size_t)(bsrc - s);

    /* Exact-size copies so ASan catches any read past the caller's lengths. */
    char *ct = malloc(ctl + 1), *body = malloc(blen ? blen : 1), *scratch = malloc(scap ? scap : 1);
    memcpy(ct, s, ctl);
    ct[ctl] = '\0';
    memcpy(body, bsrc, blen);
    multipart_part parts[15];
    size_t np = 99;
    const char *err = NULL;
    int r = multipart_parse(ct, body, blen, parts, max, &np, scap ? scratch : NULL, scap, &err);
    if (r == 0) {
        if (np > max) abort();
        const char *prev = body;
        for (size_t i = 0; i < np; i++) {
            multipart_part *p = &parts[i];
            if (!p->name) abort();
            if (!inside(p->data, p->data_len, body, blen) || p->data < prev) abort();
            prev = p->data + p->data_len;
            if (!inside(p->name, p->name_len, body, blen) && !inside(p->name, p->name_len, scratch, scap)) abort();
            if (p->filename) {
                if (!inside(p->filename, p->filename_len, body, blen) &&
                    !inside(p->filename, p->filename_len, scratch, scap))
                    abort();
                if (memchr(p->filename, '/', p->filename_len) || memchr(p->filename, '\\', p->filename_len) ||
                    memchr(p->filename, '\0', p->filename_len))
                    abort(); /* paths are stripped, NUL refused */
            }
            if (p->content_type && !inside(p->content_type, p->content_type_len, body, blen)) abort();
        }
    } else if (!err || strncmp(err, "multipart: ", 11) != 0) {
        abort();
    }
    free(ct);
    free(body);
    free(scratch);
    return 0;
}
