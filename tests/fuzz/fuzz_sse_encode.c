/* fuzz_sse_encode.c: libFuzzer target for the SSE event encoder: what a browser parses back must equal what was published.
 * Input: byte 0 = flags (bit 0: retry, bit 1: Last-Event-ID from the input), then
 * event name, '\0', channel, '\0', data (the rest; may hold any byte).
 * Build: clang -g -O1 -fsanitize=fuzzer,address,undefined -Icore core/sse.c tests/fuzz/fuzz_sse_encode.c -lpthread */
#include "sse.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static sse_hub *hub;
static sse_worker *wk;
static sse_event *got;

static void wake(void *ud) { (void)ud; }
static void deliver(sse_sub *s, sse_event *e, void *ud)
{
    (void)s;
    (void)ud;
    if (sse_event_id(e) && !got) { /* skip the gap notice, keep the live event */
        sse_event_ref(e);
        got = e;
    }
}

/* The WHATWG event-stream interpretation of one event (LF line ends: all the encoder emits). */
static void parse(const char *w, size_t n, char *data, size_t *dl, char *ev, char *id, long *retry)
{
    size_t i = 0, d = 0;
    int any = 0;
    *ev = *id = 0;
    *retry = -1;
    while (i < n && w[i] != '\n') {
        const char *l = w + i, *eol = memchr(l, '\n', n - i);
        if (!eol) abort(); /* every line ends */
        const char *colon = memchr(l, ':', (size_t)(eol - l));
        size_t fl = (size_t)((colon ? colon : eol) - l);
        const char *v = colon ? colon + 1 : eol;
        if (v < eol && *v == ' ') v++;
        size_t vl = (size_t)(eol - v);
        if (fl == 4 && !memcmp(l, "data", 4)) {
            memcpy(data + d, v, vl);
            d += vl;
            data[d++] = '\n';
            any = 1;
        } else if (fl == 5 && !memcmp(l, "event", 5)) {
            memcpy(ev, v, vl);
            ev[vl] = 0;
        } else if (fl == 2 && !memcmp(l, "id", 2)) {
            memcpy(id, v, vl);
            id[vl] = 0;
        } else if (fl == 5 && !memcmp(l, "retry", 5)) {
            *retry = strtol(v, NULL, 10);
        } else {
            abort(); /* the encoder only writes these four fields */
        }
        i = (size_t)(eol - w) + 1;
    }
    if (i + 1 != n || !any) abort(); /* exactly one blank line at the end, data present */
    *dl = d - 1;
}

int LLVMFuzzerTestOneInput(const uint8_t *in, size_t size)
{
    if (!hub) {
        sse_limits l = { .max_total = 10, .retention_count = 0, .max_event_bytes = 1 << 16 };
        hub = sse_hub_new(&l, 1, 0);
        wk = sse_worker_new(hub, 0, wake, NULL);
    }
    if (size < 1) return 0;
    uint8_t fl = in[0];
    const char *p = (const char *)in + 1, *end = (const char *)in + size;
    const char *z1 = memchr(p, 0, (size_t)(end - p));
    if (!z1) return 0;
    const char *ch = z1 + 1, *z2 = memchr(ch, 0, (size_t)(end - ch));
    if (!z2) return 0;
    const char *data = z2 + 1;
    size_t datalen = (size_t)(end - data), chlen = (size_t)(z2 - ch);
    char *dcopy = malloc(datalen ? datalen : 1); /* exact size: ASan catches over-reads */
    memcpy(dcopy, data, datalen);

    sse_sub s;
    memset(&s, 0, sizeof s);
    const char *chs[1] = { ch };
    int subbed = sse_worker_subscribe(wk, &s, chs, 1, NULL, (fl & 2) ? p : NULL, 0, deliver, NULL) == SSE_OK;
    const char *err = NULL;
    int retry = (fl & 1) ? (int)(fl >> 2) * 1000 : -1;
    uint64_t id = sse_hub_publish(hub, ch, chlen, p, dcopy, datalen, NULL, retry, 0, &err);
    int bad_ev = strpbrk(p, "\r\n") != NULL;
    if (!id && !err) abort();
    if (id && bad_ev) abort();
    sse_worker_drain(wk);
    if (id && subbed) {
        if (!got) abort();
        size_t n, dl;
        const char *w = sse_event_wire(got, &n);
        char *pd = malloc(n), ev[1 << 16], ids[32];
        long r;
        parse(w, n, pd, &dl, ev, ids, &r);
        /* expected data: CRLF and CR become LF */
        char *exp = malloc(datalen + 1);
        size_t el = 0;
        for (size_t i = 0; i < datalen; i++) {
            if (dcopy[i] == '\r') {
                exp[el++] = '\n';
                if (i + 1 < datalen && dcopy[i + 1] == '\n') i++;
            } else {
                exp[el++] = dcopy[i];
            }
        }
        char idexp[32];
        snprintf(idexp, sizeof idexp, "%llu", (unsigned long long)id);
        if (dl != el || memcmp(pd, exp, el)) abort();
        if (strcmp(ev, p)) abort(); /* "event: " + name: the parser eats exactly that space */
        if (strcmp(ids, idexp) || r != retry) abort();
        free(pd);
        free(exp);
    }
    if (got) sse_event_unref(got);
    got = NULL;
    sse_worker_unsubscribe(wk, &s);
    free(dcopy);
    return 0;
}
