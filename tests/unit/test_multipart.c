/* test_multipart.c: real client bodies (curl, urllib3), quoting, CRLF/LF, limits and errors for core/multipart.c. */
#include "multipart.h"
#include "tap.h"

#include <stdlib.h>
#include <string.h>

/* Bodies captured from real clients (a socket that recorded what they sent). */
/* curl 7.88 -F title=... -F file=@up.txt -F bin=@bin.dat -F empty= -F 'q=@up.txt;filename="we\"ird\\name.txt"' */
static const char curl_body_ct[] = "multipart/form-data; boundary=------------------------568a2ec2d6412428";
static const char curl_body[] =
    "--------------------------568a2ec2d6412428\r\n"
    "Content-Disposition: form-data; name=\"title\"\r\n"
    "\r\n"
    "Hello world\r\n"
    "--------------------------568a2ec2d6412428\r\n"
    "Content-Disposition: form-data; name=\"file\"; filename=\"up.txt\"\r\n"
    "Content-Type: text/plain\r\n"
    "\r\n"
    "hello\r\n"
    "--not-the-boundary\r\n"
    "world\r\n"
    "--------------------------568a2ec2d6412428\r\n"
    "Content-Disposition: form-data; name=\"bin\"; filename=\"bin.dat\"\r\n"
    "Content-Type: application/octet-stream\r\n"
    "\r\n"
    "\000\001\002binary\377\r\n"
    "--------------------------568a2ec2d6412428\r\n"
    "Content-Disposition: form-data; name=\"empty\"\r\n"
    "\r\n"
    "\r\n"
    "--------------------------568a2ec2d6412428\r\n"
    "Content-Disposition: form-data; name=\"q\"; filename=\"we%22ird\\name.txt\"\r\n"
    "Content-Type: text/plain\r\n"
    "\r\n"
    "hello\r\n"
    "--not-the-boundary\r\n"
    "world\r\n"
    "--------------------------568a2ec2d6412428--\r\n";
/* curl 7.88 -F x=1 -F 'f=@/dev/null;filename=C:\Users\bob\photo.jpg' (sent chunked; chunk framing removed) */
static const char curl_win_ct[] = "multipart/form-data; boundary=------------------------1916baa66e82320d";
static const char curl_win[] =
    "--------------------------1916baa66e82320d\r\n"
    "Content-Disposition: form-data; name=\"x\"\r\n"
    "\r\n"
    "1\r\n"
    "--------------------------1916baa66e82320d\r\n"
    "Content-Disposition: form-data; name=\"f\"; filename=\"C:\\Users\\bob\\photo.jpg\"\r\n"
    "Content-Type: image/jpeg\r\n"
    "\r\n"
    "\r\n"
    "--------------------------1916baa66e82320d--\r\n";
/* urllib3.encode_multipart_formdata, boundary py-boundary-42 */
static const char py_body[] =
    "--py-boundary-42\r\n"
    "Content-Disposition: form-data; name=\"name\"\r\n"
    "\r\n"
    "Zo\303\253\r\n"
    "--py-boundary-42\r\n"
    "Content-Disposition: form-data; name=\"doc\"; filename=\"r\303\251sum\303\251.txt\"\r\n"
    "Content-Type: text/plain\r\n"
    "\r\n"
    "line1\r\n"
    "line2\r\n"
    "--py-boundary-42--\r\n";

static multipart_part parts[64];
static size_t np;
static const char *err;
static char scratch[4096];

static int parse_n(const char *ct, const char *body, size_t len, size_t max)
{
    err = NULL;
    return multipart_parse(ct, body, len, parts, max, &np, scratch, sizeof scratch, &err);
}
#define PARSE(ct, lit) parse_n(ct, lit, sizeof lit - 1, 64)

static int span_is(const char *p, size_t n, const char *want)
{
    return p && strlen(want) == n && memcmp(p, want, n) == 0;
}

#define CT "multipart/form-data; boundary=b"
#define CD "Content-Disposition: form-data; "

static void real_clients(void)
{
    is_int(PARSE(curl_body_ct, curl_body), 0, "curl body parses");
    is_int(np, 5, "curl: 5 parts");
    ok(span_is(parts[0].name, parts[0].name_len, "title") && !parts[0].filename && !parts[0].content_type,
       "curl: text field has no filename/type");
    ok(span_is(parts[0].data, parts[0].data_len, "Hello world"), "curl: field value");
    ok(span_is(parts[1].filename, parts[1].filename_len, "up.txt"), "curl: filename");
    ok(span_is(parts[1].content_type, parts[1].content_type_len, "text/plain"), "curl: part type");
    ok(span_is(parts[1].data, parts[1].data_len, "hello\r\n--not-the-boundary\r\nworld"),
       "curl: boundary-like line inside data kept");
    ok(parts[2].data_len == 10 && memcmp(parts[2].data, "\0\1\2binary\377", 10) == 0, "curl: binary data with NUL");
    ok(parts[3].data_len == 0 && span_is(parts[3].name, parts[3].name_len, "empty"), "curl: empty field");
    ok(span_is(parts[4].filename, parts[4].filename_len, "name.txt"),
       "curl: filename with raw backslash reduced to its last segment");
    ok(parts[1].data > curl_body && parts[1].data < curl_body + sizeof curl_body &&
           parts[1].name > curl_body && parts[1].name < curl_body + sizeof curl_body,
       "curl: strings point into the body (no copies)");

    is_int(PARSE(curl_win_ct, curl_win), 0, "curl windows path body parses");
    is_int(np, 2, "curl win: 2 parts");
    ok(span_is(parts[1].filename, parts[1].filename_len, "photo.jpg"), "C:\\Users\\bob\\photo.jpg -> photo.jpg");
    ok(parts[1].data_len == 0 && span_is(parts[1].content_type, parts[1].content_type_len, "image/jpeg"),
       "curl win: empty file with type");

    is_int(PARSE("multipart/form-data; boundary=py-boundary-42", py_body), 0, "urllib3 body parses");
    ok(np == 2 && span_is(parts[0].data, parts[0].data_len, "Zo\303\253"), "urllib3: UTF-8 value");
    ok(span_is(parts[1].filename, parts[1].filename_len, "r\303\251sum\303\251.txt"), "urllib3: UTF-8 filename");
    ok(span_is(parts[1].data, parts[1].data_len, "line1\r\nline2"), "urllib3: CRLF inside data kept");
}

static void framing(void)
{
    is_int(PARSE(CT, "--b\n" CD "name=\"a\"\n\nval\n--b\n" CD "name=\"c\"\n\nv2\n--b--\n"), 0, "LF-only body");
    ok(np == 2 && span_is(parts[0].data, parts[0].data_len, "val") && span_is(parts[1].data, parts[1].data_len, "v2"),
       "LF-only: values without line breaks");
    is_int(PARSE(CT, "preamble --b\r\nmore\r\n--b\r\n" CD "name=\"a\"\r\n\r\nx\r\n--b--\r\nepilogue\r\n--b\r\n"), 0,
           "preamble and epilogue ignored");
    ok(np == 1 && span_is(parts[0].data, parts[0].data_len, "x"), "only the real part");
    is_int(PARSE(CT, "--b\r\n" CD "name=\"a\"\r\n\r\n--bb\r\nx--b\r\n--b-\r\n--b\tz\r\n--b--"), 0,
           "boundary prefixes inside data");
    ok(span_is(parts[0].data, parts[0].data_len, "--bb\r\nx--b\r\n--b-\r\n--b\tz"), "data kept whole");
    is_int(PARSE(CT, "--b  \t\r\n" CD "name=\"a\"\r\n\r\nx\r\n--b \r\n" CD "name=\"c\"\r\n\r\ny\r\n--b--"), 0,
           "transport padding after delimiters");
    is_int(np, 2, "padding: 2 parts");
    is_int(PARSE(CT, "--b\r\n" CD "name=\"a\"\r\n\r\nx\r\n\r\n--b--\r\n"), 0, "data ending in CRLF");
    ok(span_is(parts[0].data, parts[0].data_len, "x\r\n"), "only the delimiter's CRLF is removed");
    is_int(PARSE(CT, "--b\r\n" CD "name=\"e\"\r\n\r\n--b--"), 0, "empty part without CRLF before delimiter");
    ok(np == 1 && parts[0].data_len == 0, "empty data");
    is_int(PARSE(CT, "--b--\r\n"), 0, "no parts at all");
    is_int(np, 0, "zero parts");
    is_int(PARSE(CT, "--b\r\n" CD "name=\"a\"\r\nX-Other: 1\r\ncontent-TYPE:   text/csv ; q=1  \r\n\r\nx\r\n--b--"),
           0, "other headers ignored, names case-insensitive");
    ok(span_is(parts[0].content_type, parts[0].content_type_len, "text/csv ; q=1"), "content type trimmed");
    is_int(PARSE(CT, "--b\r\nContent-Disposition: form-data;\r\n\tname=\"folded\"\r\n\r\nx\r\n--b--"), 0,
           "folded header");
    ok(span_is(parts[0].name, parts[0].name_len, "folded"), "folded name");

    /* errors */
    is_int(PARSE(CT, "--b\r\n" CD "name=\"a\"\r\n\r\nx\r\n--b\r\n"), -1, "no close delimiter");
    is_str(err, "multipart: missing closing boundary", "error text");
    is_int(PARSE(CT, "--b\r\n" CD "name=\"a\"\r\n\r\nx"), -1, "truncated data");
    is_str(err, "multipart: missing closing boundary", "truncated data error");
    is_int(PARSE(CT, "--b\r\n" CD "name=\"a\"\r\n"), -1, "truncated headers");
    is_str(err, "multipart: truncated part headers", "truncated headers error");
    is_int(PARSE(CT, ""), -1, "empty body");
    is_int(PARSE(CT, "no delimiter anywhere"), -1, "no delimiter");
    is_int(parse_n(CT, NULL, 0, 64), -1, "NULL body");
    is_int(PARSE(CT, "--b\r\nContent-Type: text/plain\r\n\r\nx\r\n--b--"), -1, "no Content-Disposition");
    is_str(err, "multipart: part without a name", "no name error");
    is_int(PARSE(CT, "--b\r\nContent-Disposition: attachment; name=\"a\"\r\n\r\nx\r\n--b--"), -1, "attachment");
    is_str(err, "multipart: part is not form-data", "not form-data error");
    is_int(PARSE(CT, "--b\r\n" CD "filename=\"a.txt\"\r\n\r\nx\r\n--b--"), -1, "filename but no name");
    is_int(PARSE(CT, "--b\r\n" CD "name=\"a\"\r\n" CD "name=\"b\"\r\n\r\nx\r\n--b--"), -1, "duplicate CD");
    is_str(err, "multipart: duplicate Content-Disposition", "duplicate error");
    is_int(PARSE(CT, "--b\r\n" CD "name=\"a\r\n\r\nx\r\n--b--"), -1, "unterminated quote");
    is_str(err, "multipart: malformed Content-Disposition", "malformed CD error");
    is_int(PARSE(CT, "--b\r\n" CD "name=\"a\"\r\nbogus line\r\n\r\nx\r\n--b--"), -1, "header without colon");
    is_int(PARSE(CT, "--b\r\n" CD "name=\"a\"\rX: y\r\n\r\nx\r\n--b--"), -1, "bare CR in header");
    is_int(PARSE(CT, "--b\r\n X: y\r\n" CD "name=\"a\"\r\n\r\nx\r\n--b--"), -1, "continuation first");
    is_int(PARSE(CT, "--b\r\n" CD "name\r\n\r\nx\r\n--b--"), -1, "parameter without value");
}

static void quoting(void)
{
    is_int(PARSE(CT, "--b\r\n" CD "name=\"a\\\"b\\\\c\\d\"\r\n\r\nx\r\n--b--"), 0, "escaped quote and backslash");
    ok(span_is(parts[0].name, parts[0].name_len, "a\"b\\c\\d"), "unescaped; other backslashes literal");
    ok(parts[0].name >= scratch && parts[0].name < scratch + sizeof scratch, "unescaped name lives in scratch");
    is_int(PARSE(CT, "--b\r\n" CD "NAME=plain;FileName=t.txt\r\n\r\nx\r\n--b--"), 0, "tokens, any case");
    ok(span_is(parts[0].name, parts[0].name_len, "plain") && span_is(parts[0].filename, parts[0].filename_len, "t.txt"),
       "token values");
    is_int(PARSE(CT, "--b\r\nContent-Disposition:form-data ; name = \"a;b=c\" ; filename = \"x y.txt\"\r\n\r\nx\r\n--b--"),
           0, "spaces around ; and =, ; inside quotes");
    ok(span_is(parts[0].name, parts[0].name_len, "a;b=c") && span_is(parts[0].filename, parts[0].filename_len, "x y.txt"),
       "quoted values intact");
    is_int(PARSE(CT, "--b\r\n" CD "name=\"f\"; filename=\"\"\r\n\r\n\r\n--b--"), 0, "empty filename");
    ok(parts[0].filename && parts[0].filename_len == 0, "empty filename is \"\", not NULL");
    is_int(PARSE(CT, "--b\r\n" CD "name=\"f\"; filename=\"../../etc/passwd\"\r\n\r\nx\r\n--b--"), 0, "path filename");
    ok(span_is(parts[0].filename, parts[0].filename_len, "passwd"), "../../etc/passwd -> passwd");
    is_int(PARSE(CT, "--b\r\n" CD "name=\"f\"; filename=\"..\"\r\n\r\nx\r\n--b--"), 0, "dotdot filename");
    ok(parts[0].filename && parts[0].filename_len == 0, ".. -> \"\"");
    is_int(PARSE(CT, "--b\r\n" CD "name=\"f\"; filename*=UTF-8''%e2%82%ac%20rates.txt; filename=\"EUR rates.txt\"\r\n\r\nx\r\n--b--"),
           0, "filename* before filename");
    ok(span_is(parts[0].filename, parts[0].filename_len, "\342\202\254 rates.txt"), "filename* wins (RFC 5987)");
    is_int(PARSE(CT, "--b\r\n" CD "name=\"f\"; filename=\"EUR.txt\"; filename*=utf-8'en'%2Fetc%2Fx%C3%A9\r\n\r\nx\r\n--b--"),
           0, "filename* after filename");
    ok(span_is(parts[0].filename, parts[0].filename_len, "x\303\251"), "filename* decoded and path-stripped");
    is_int(PARSE(CT, "--b\r\n" CD "name=\"f\"; filename=\"plain.txt\"; filename*=ISO-8859-1''%a3.txt\r\n\r\nx\r\n--b--"),
           0, "other charset");
    ok(span_is(parts[0].filename, parts[0].filename_len, "plain.txt"), "unknown charset ignored");
    is_int(PARSE(CT, "--b\r\n" CD "name=\"f\"; filename*=UTF-8''a%00b\r\n\r\nx\r\n--b--"), -1, "NUL in filename*");
    is_str(err, "multipart: invalid filename", "NUL error");

    char small[2];
    err = NULL;
    static const char esc[] = "--b\r\n" CD "name=\"a\\\"b\"\r\n\r\nx\r\n--b--";
    is_int(multipart_parse(CT, esc, sizeof esc - 1, parts, 64, &np, small, sizeof small, &err), -1,
           "scratch too small");
    is_str(err, "multipart: part headers too large", "scratch error");
    static const char noesc[] = "--b\r\n" CD "name=\"ab\"\r\n\r\nx\r\n--b--";
    is_int(multipart_parse(CT, noesc, sizeof noesc - 1, parts, 64, &np, NULL, 0, &err), 0,
           "no scratch needed without escapes");
}

static void boundaries(void)
{
    const char *b;
    is_int(multipart_boundary("multipart/form-data; boundary=abc", &b), 3, "plain boundary");
    is_int(multipart_boundary("Multipart/Form-Data; charset=utf-8; BOUNDARY=\"a b:c\"", &b), 5, "quoted, case");
    ok(b && memcmp(b, "a b:c", 5) == 0, "quoted boundary value");
    is_int(multipart_boundary("application/json; boundary=abc", &b), 0, "not multipart");
    is_int(multipart_boundary("multipart/mixed; boundary=abc", &b), 0, "not form-data");
    is_int(multipart_boundary("multipart/form-data", &b), 0, "no boundary");
    is_int(multipart_boundary("multipart/form-data; boundary=", &b), 0, "empty boundary");
    is_int(multipart_boundary("multipart/form-data; boundary=\"\"", &b), 0, "empty quoted boundary");
    is_int(multipart_boundary("multipart/form-data; boundary=\"ab \"", &b), 0, "trailing space");
    is_int(multipart_boundary("multipart/form-data; boundary=a@b", &b), 0, "@ not a bchar");
    is_int(multipart_boundary(NULL, &b), 0, "NULL");
    char ct[128] = "multipart/form-data; boundary=";
    size_t l = strlen(ct);
    memset(ct + l, 'x', 70);
    ct[l + 70] = '\0';
    is_int(multipart_boundary(ct, &b), 70, "70 chars ok");
    ct[l + 70] = 'x';
    ct[l + 71] = '\0';
    is_int(multipart_boundary(ct, &b), 0, "71 chars refused");
    is_int(PARSE("text/plain", "--b--"), -1, "parse refuses other types");
    is_str(err, "multipart: missing or invalid boundary", "boundary error text");
}

static void limits(void)
{
    /* exactly max parts passes, one more fails */
    size_t cap = 1001 * 64 + 16, n = 0;
    char *body = malloc(cap);
    multipart_part *many = malloc(1000 * sizeof *many);
    for (int i = 0; i < 1001; i++) n += (size_t)sprintf(body + n, "--b\r\n" CD "name=\"f%d\"\r\n\r\n%d\r\n", i, i);
    size_t cut = n - strlen("--b\r\n" CD "name=\"f1000\"\r\n\r\n1000\r\n");
    memcpy(body + cut, "--b--", 5);
    err = NULL;
    is_int(multipart_parse(CT, body, cut + 5, many, 1000, &np, NULL, 0, &err), 0, "1000 parts at max 1000");
    ok(np == 1000 && span_is(many[999].name, many[999].name_len, "f999") && span_is(many[999].data, many[999].data_len, "999"),
       "last part intact");
    memcpy(body + cut, "--b\r\n", 5); /* restore part 1000's delimiter */
    memcpy(body + n, "--b--", 5);
    is_int(multipart_parse(CT, body, n + 5, many, 1000, &np, NULL, 0, &err), -1, "1001 parts over max 1000");
    is_str(err, "multipart: too many parts", "too many parts error");
    is_int(multipart_parse(CT, body, n + 5, many, 0, &np, NULL, 0, &err), -1, "max 0");

    /* header bytes per part */
    n = (size_t)sprintf(body, "--b\r\n" CD "name=\"a\"\r\nX-Pad: ");
    memset(body + n, 'p', 8000);
    n += 8000;
    n += (size_t)sprintf(body + n, "\r\n\r\nx\r\n--b--");
    is_int(multipart_parse(CT, body, n, many, 1000, &np, NULL, 0, &err), 0, "8 KB-ish headers ok");
    n = (size_t)sprintf(body, "--b\r\n" CD "name=\"a\"\r\nX-Pad: ");
    memset(body + n, 'p', 9000);
    n += 9000;
    n += (size_t)sprintf(body + n, "\r\n\r\nx\r\n--b--");
    is_int(multipart_parse(CT, body, n, many, 1000, &np, NULL, 0, &err), -1, "9 KB header refused");
    is_str(err, "multipart: part headers too large", "header limit error");
    free(body);
    free(many);
}

int main(void)
{
    real_clients();
    framing();
    quoting();
    boundaries();
    limits();
    return tap_done();
}
