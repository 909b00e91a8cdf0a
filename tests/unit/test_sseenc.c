/* test_sseenc: the SSE wire format written for every published event. */
#include "sseenc.h"

#include <stdlib.h>
#include <string.h>

#include "tap.h"

/* Encodes into a buffer sized by sseenc_body_len plus a canary, returns a NUL-terminated copy. */
static char out[4096];
static const char *enc(const char *event, int retry_ms, const char *data, size_t datalen, int *fits)
{
    size_t evlen = event ? strlen(event) : 0;
    size_t need = sseenc_body_len(evlen, retry_ms, data, datalen);
    memset(out, '#', sizeof out);
    size_t n = sseenc_body(out, event, evlen, retry_ms, data, datalen);
    *fits = n <= need && out[need] == '#' && (retry_ms >= 0 || n == need);
    out[n] = 0;
    return out;
}

int main(void)
{
    int fits;
    is_str(enc("msg", -1, "hello", 5, &fits), "event: msg\ndata: hello\n\n", "event + one data line");
    ok(fits, "length is exact without retry");
    is_str(enc(NULL, -1, "", 0, &fits), "data: \n\n", "empty data still gives one data line");
    ok(fits, "empty: exact length");
    is_str(enc(NULL, -1, "a\nb\rc\r\nd", 8, &fits), "data: a\ndata: b\ndata: c\ndata: d\n\n", "LF, CR and CRLF each end a line");
    ok(fits, "multi-line: exact length");
    is_str(enc(NULL, -1, "x\n", 2, &fits), "data: x\ndata: \n\n", "a trailing newline keeps an empty last line");
    is_str(enc(NULL, -1, "\r\n\r\n", 4, &fits), "data: \ndata: \ndata: \n\n", "CRLF CRLF: three empty lines");
    ok(fits, "CRLF: exact length");
    is_str(enc("tick", 2500, "1", 1, &fits), "event: tick\nretry: 2500\ndata: 1\n\n", "retry field");
    ok(fits, "retry: within the bound");
    enc(NULL, 2147483647, "", 0, &fits);
    ok(fits, "largest retry fits the bound");
    is_str(enc(NULL, -1, "a\0b", 3, &fits), "data: a", "NUL bytes are data, copied as is");
    ok(!memcmp(out, "data: a\0b\n\n", 11), "the NUL and what follows it are kept");

    char idl[SSEENC_ID_MAX + 1];
    size_t n = sseenc_id_line(idl, 0);
    idl[n] = 0;
    is_str(idl, "id: 0\n", "id line 0");
    n = sseenc_id_line(idl, UINT64_MAX);
    idl[n] = 0;
    is_str(idl, "id: 18446744073709551615\n", "id line max");
    ok(n <= SSEENC_ID_MAX, "id line fits SSEENC_ID_MAX");

    uint64_t v = 7;
    ok(sseenc_parse_id("42", &v) == 0 && v == 42, "parse 42");
    ok(sseenc_parse_id("18446744073709551615", &v) == 0 && v == UINT64_MAX, "parse UINT64_MAX");
    v = 7;
    ok(sseenc_parse_id("18446744073709551616", &v) == -1 && v == 7, "overflow rejected, out untouched");
    ok(sseenc_parse_id("000000000000000000001", &v) == -1, "21 digits rejected");
    ok(sseenc_parse_id("", &v) == -1, "empty rejected");
    ok(sseenc_parse_id("-1", &v) == -1 && sseenc_parse_id(" 1", &v) == -1 && sseenc_parse_id("1 ", &v) == -1 &&
       sseenc_parse_id("+1", &v) == -1 && sseenc_parse_id("1e3", &v) == -1, "signs, spaces, exponents rejected");
    return tap_done();
}
