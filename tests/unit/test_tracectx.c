/* test_tracectx: W3C traceparent parsing (the spec's examples and its invalid cases), new traces,
 * and the header passed to outbound calls. */
#include "tracectx.h"

#include <string.h>

#include "tap.h"

static int parse(const char *v, tracectx *t) { return tracectx_parse(t, v, strlen(v)); }

int main(void)
{
    tracectx t;
    memset(&t, 0, sizeof t);
    is_int(parse("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01", &t), 0, "the spec's example parses");
    is_str(t.trace_id, "0af7651916cd43dd8448eb211c80319c", "trace id");
    is_str(t.parent_id, "b7ad6b7169203331", "parent id");
    is_int(t.flags, 1, "sampled flag");
    is_int(parse("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00", &t), 0, "not sampled");
    is_int(t.flags, 0, "flags 00");
    /* a later version: read the known fields, allow more after a dash */
    is_int(parse("cc-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01-what-the-future-holds", &t), 0, "future version with extra fields");
    is_int(parse("cc-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01", &t), 0, "future version, same length");
    static const char *const bad[] = {
        "ff-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",       /* version ff */
        "00-00000000000000000000000000000000-b7ad6b7169203331-01",       /* all-zero trace id */
        "00-0af7651916cd43dd8448eb211c80319c-0000000000000000-01",       /* all-zero parent id */
        "00-0AF7651916CD43DD8448EB211C80319C-b7ad6b7169203331-01",       /* upper case */
        "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01-extra", /* 00 with extra data */
        "00-0af7651916cd43dd8448eb211c80319c-b7ad6b716920333-01",        /* short parent */
        "00-0af7651916cd43dd8448eb211c80319c_b7ad6b7169203331-01",       /* wrong separator */
        "cc-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01x",      /* future version, no dash */
        "0-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        "",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) ok(parse(bad[i], &t) == -1, "invalid: \"%s\"", bad[i]);

    tracectx_begin(&t, "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01", 55);
    is_str(t.trace_id, "0af7651916cd43dd8448eb211c80319c", "begin continues a valid trace");
    is_int(strlen(t.span_id), 16, "with a span id of its own");
    ok(strcmp(t.span_id, "b7ad6b7169203331") != 0, "which is not the caller's");
    char out[TRACEPARENT_LEN + 1];
    is_int(tracectx_traceparent(&t, out), TRACEPARENT_LEN, "outbound traceparent length");
    char want[64];
    strcpy(want, "00-0af7651916cd43dd8448eb211c80319c-");
    strcat(want, t.span_id);
    strcat(want, "-01");
    is_str(out, want, "outbound: same trace, this span as parent, flags kept");
    tracectx u;
    ok(tracectx_parse(&u, out, strlen(out)) == 0, "and it parses");

    tracectx a, b;
    tracectx_begin(&a, "garbage", 7);
    tracectx_begin(&b, NULL, 0);
    ok(strlen(a.trace_id) == 32 && a.parent_id[0] == 0 && a.flags == 0, "an invalid header starts a new trace");
    ok(strcmp(a.trace_id, b.trace_id) != 0 && strcmp(a.span_id, b.span_id) != 0, "new traces differ");
    tracectx_traceparent(&a, out);
    ok(tracectx_parse(&u, out, strlen(out)) == 0, "a generated traceparent is valid");
    return tap_done();
}
