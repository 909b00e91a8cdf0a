/* test_static.c: traversal, symlinks, index/301, MIME, ETag/304, Range and .gz siblings for core/static.c. */
#include "static.h"
#include "tap.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

static char base[128], root[160];
static int rootfd;

static void put(const char *rel, const char *text)
{
    char p[512];
    snprintf(p, sizeof p, "%s/%s", base, rel);
    FILE *f = fopen(p, "w");
    if (!f) { perror(p); exit(2); }
    fputs(text, f);
    fclose(f);
}

static void sub(const char *rel)
{
    char p[512];
    snprintf(p, sizeof p, "%s/%s", base, rel);
    if (mkdir(p, 0755) != 0) { perror(p); exit(2); }
}

static void lnk(const char *target, const char *rel)
{
    char p[512];
    snprintf(p, sizeof p, "%s/%s", base, rel);
    if (symlink(target, p) != 0) { perror(p); exit(2); }
}

/* Open url; return status and put the first bytes of the body in body. */
static int get(const char *url, unsigned flags, char *body, size_t cap, static_file *out)
{
    static_file f;
    int st = -1;
    if (!out) out = &f;
    body[0] = '\0';
    static_open_at(rootfd, url, strlen(url), "index.html", flags, out, &st);
    if (out->fd >= 0) {
        ssize_t n = pread(out->fd, body, cap - 1, 0);
        body[n > 0 ? n : 0] = '\0';
    }
    if (out == &f) static_close(&f);
    return st;
}

static void path_tests(const char *mode)
{
    char b[256];
    static_file f;
#define GET(url) get(url, 0, b, sizeof b, NULL)
    printf("# lookup via %s\n", mode);
    ok(GET("/b.txt") == 200 && strcmp(b, "bee\n") == 0, "%s: plain file", mode);
    ok(GET("b.txt") == 200, "%s: no leading slash", mode);
    ok(GET("/a/../b.txt") == 200 && strcmp(b, "bee\n") == 0, "%s: /a/../b.txt stays inside", mode);
    ok(GET("//a/./c.txt") == 200 && strcmp(b, "cee\n") == 0, "%s: // and . collapse", mode);
    ok(GET("/b.txt?x=1#y") == 200, "%s: query and fragment ignored", mode);
    ok(GET("/%62%2Etxt") == 200, "%s: encoded letters decode", mode);
    is_int(GET("/nope.txt"), 404, "missing file 404");

    /* traversal */
    is_int(GET("/../etc/passwd"), 404, "/../etc/passwd");
    is_int(GET("/../outside/canary.txt"), 404, "/../outside/canary.txt");
    is_int(GET("/%2e%2e/outside/canary.txt"), 404, "/%2e%2e/ encoded dots");
    is_int(GET("/%2E%2e/outside/canary.txt"), 404, "/%2E%2e/ mixed case");
    is_int(GET("/a/%2e%2e/%2e%2e/outside/canary.txt"), 404, "/a/%2e%2e/%2e%2e/");
    is_int(GET("/..%2foutside/canary.txt"), 404, "/..%2f");
    is_int(GET("/a/..%2F..%2Foutside%2Fcanary.txt"), 404, "%2F as separator still confined");
    is_int(GET("/.."), 404, "bare ..");
    is_int(GET("/%252e%252e/outside/canary.txt"), 404, "%252e is not decoded twice (no such dir)");
    ok(GET("/%252e") == 200 && strcmp(b, "literal\n") == 0, "%s: %%252e names the file \"%%2e\"", mode);
    is_int(GET("/b.txt%00.png"), 400, "%00 -> 400");
    is_int(get("/b.txt\0.png", 0, b, sizeof b, NULL), 200, "C string stops at NUL (len from strlen)");
    {
        static_file g;
        int st = 0;
        static_open_at(rootfd, "/b.txt\0.png", 11, "index.html", 0, &g, &st);
        is_int(st, 400, "raw NUL inside len -> 400");
        ok(g.fd == -1, "no fd on error");
    }
    is_int(GET("/a\\..\\..\\outside"), 400, "backslash -> 400");
    is_int(GET("/a%5c..%5c..%5coutside"), 400, "encoded backslash -> 400");
    is_int(GET("/b%2"), 400, "truncated escape -> 400");
    is_int(GET("/b%zz.txt"), 400, "invalid escape -> 400");
    is_int(GET("/b%0a.txt"), 400, "encoded LF -> 400");

    /* dot-files */
    is_int(GET("/.env"), 404, "dot-file hidden");
    is_int(GET("/.%65nv"), 404, "encoded dot-file hidden");
    is_int(get("/.env", STATIC_DOTFILES, b, sizeof b, NULL), 200, "STATIC_DOTFILES serves it");
    ok(GET("/.well-known/acme.txt") == 200, "%s: .well-known allowed", mode);

    /* symlinks */
    ok(GET("/link_in") == 200 && strcmp(b, "bee\n") == 0, "%s: symlink inside the tree followed", mode);
    ok(GET("/link_dir_in/c.txt") == 200 && strcmp(b, "cee\n") == 0, "%s: symlinked dir inside", mode);
    ok(GET("/a/up") == 200 && strcmp(b, "bee\n") == 0, "%s: ../ link that stays inside", mode);
    ok(GET("/chain") == 200 && strcmp(b, "bee\n") == 0, "%s: link to link", mode);
    is_int(GET("/link_passwd"), 404, "symlink to /etc/passwd");
    is_int(GET("/link_rel_out"), 404, "relative symlink climbing out");
    is_int(GET("/link_dir_out/canary.txt"), 404, "symlinked dir outside");
    is_int(GET("/a/deep_out/canary.txt"), 404, "nested ../../ link outside");
    is_int(GET("/link_abs_in"), 404, "absolute symlink refused even if inside");
    is_int(GET("/loop1"), 404, "symlink loop");

    /* special files */
    alarm(5); /* a FIFO opened without O_NONBLOCK would hang here */
    is_int(GET("/fifo"), 404, "FIFO refused without blocking");
    alarm(0);
    is_int(GET("/devnull"), 404, "symlink to /dev/null refused");

    /* directories */
    ok(GET("/") == 200 && strcmp(b, "root index\n") == 0, "%s: / serves index.html", mode);
    ok(GET("/a/") == 200 && strcmp(b, "a index\n") == 0, "%s: /a/ serves a/index.html", mode);
    is_int(get("/a", 0, b, sizeof b, &f), 301, "/a -> 301");
    ok(f.is_dir_redirect == 1 && f.fd == -1, "301 sets is_dir_redirect, no fd");
    is_int(get("", 0, b, sizeof b, &f), 301, "empty path (mount root) -> 301");
    is_int(GET("/empty/"), 404, "dir without index -> 404");
    is_int(GET("/b.txt/"), 404, "file with trailing slash -> 404");
    is_int(GET("/dirindex/"), 404, "index.html that is a directory -> 404");
    {
        static_file g;
        int st = 0;
        static_open_at(rootfd, "/a/", 3, NULL, 0, &g, &st);
        is_int(st, 404, "NULL index_name: directories 404");
    }

    /* precompressed siblings */
    ok(get("/style.css", STATIC_GZIP, b, sizeof b, &f) == 200 && f.gzip == 1 && strcmp(b, "GZ") == 0,
       "%s: style.css.gz preferred when gzip accepted", mode);
    is_str(f.content_type, "text/css; charset=utf-8", "gz keeps the original type");
    ok(strstr(f.etag, "-gz\"") != NULL, "gz variant has its own ETag");
    static_close(&f);
    ok(get("/style.css", 0, b, sizeof b, &f) == 200 && f.gzip == 0 && strcmp(b, "body{}") == 0,
       "%s: plain file without STATIC_GZIP", mode);
    static_close(&f);
    ok(get("/b.txt", STATIC_GZIP, b, sizeof b, &f) == 200 && f.gzip == 0, "%s: no sibling -> plain", mode);
    static_close(&f);
    ok(get("/logo.png", STATIC_GZIP, b, sizeof b, &f) == 200 && f.gzip == 0, "%s: png never uses .gz", mode);
    static_close(&f);
    ok(get("/evil.js", STATIC_GZIP, b, sizeof b, &f) == 200 && f.gzip == 0,
       "%s: .gz sibling symlinked outside is ignored", mode);
    static_close(&f);
    ok(get("/", STATIC_GZIP, b, sizeof b, &f) == 200 && f.gzip == 1, "%s: index.html.gz for /", mode);
    static_close(&f);
#undef GET
}

static void mime_tests(void)
{
    is_str(static_content_type("a.html", 6), "text/html; charset=utf-8", "html");
    is_str(static_content_type("A.JS", 4), "text/javascript; charset=utf-8", "JS upper case");
    is_str(static_content_type("x.mjs", 5), "text/javascript; charset=utf-8", "mjs");
    is_str(static_content_type("p.JPEG", 6), "image/jpeg", "jpeg");
    is_str(static_content_type("f.woff2", 7), "font/woff2", "woff2");
    is_str(static_content_type("m.wasm", 6), "application/wasm", "wasm");
    is_str(static_content_type("app.js.map", 10), "application/json", "map");
    is_str(static_content_type("noext", 5), "application/octet-stream", "no extension");
    is_str(static_content_type("d.x/noext", 9), "application/octet-stream", "dot in dir only");
    is_str(static_content_type("a.tar.gz", 8), "application/octet-stream", "unknown");
    ok(static_compressible("text/css; charset=utf-8"), "css compressible");
    ok(static_compressible("application/json"), "json compressible");
    ok(static_compressible("image/svg+xml"), "svg compressible");
    ok(!static_compressible("image/png"), "png not compressible");
    ok(!static_compressible("application/octet-stream"), "octet-stream not compressible");

    ok(static_accepts_gzip("gzip, deflate, br"), "gzip listed");
    ok(static_accepts_gzip("br;q=1.0, GZIP;q=0.5"), "gzip with q");
    ok(!static_accepts_gzip("gzip;q=0"), "gzip q=0 refused");
    ok(!static_accepts_gzip("gzip; q=0.000, *"), "explicit q=0 beats *");
    ok(static_accepts_gzip("*"), "* accepts");
    ok(!static_accepts_gzip("br, deflate"), "no gzip");
    ok(!static_accepts_gzip("gzipx"), "gzipx is not gzip");
    ok(!static_accepts_gzip(NULL), "absent");
    ok(static_accepts_gzip("x-gzip"), "x-gzip");
}

static void validator_tests(void)
{
    char d[30];
    is_int(static_http_date(784111777, d), 29, "date length");
    is_str(d, "Sun, 06 Nov 1994 08:49:37 GMT", "IMF-fixdate");
    is_int(static_parse_http_date("Sun, 06 Nov 1994 08:49:37 GMT"), 784111777, "parse IMF-fixdate");
    is_int(static_parse_http_date("Sunday, 06-Nov-94 08:49:37 GMT"), 784111777, "parse RFC 850");
    is_int(static_parse_http_date("Sun Nov  6 08:49:37 1994"), 784111777, "parse asctime");
    is_int(static_parse_http_date("Sun, 06 Nov 1994 08:49:37 CET"), -1, "non-GMT rejected");
    is_int(static_parse_http_date("yesterday"), -1, "garbage rejected");
    is_int(static_parse_http_date("Sun, 06 Nov 1994 25:49:37 GMT"), -1, "hour 25 rejected");

    static_file f;
    memset(&f, 0, sizeof f);
    f.mtime = 784111777;
    strcpy(f.etag, "\"1a-2b\"");
    ok(static_not_modified(&f, "\"1a-2b\"", NULL), "INM exact -> 304");
    ok(static_not_modified(&f, "W/\"1a-2b\"", NULL), "INM weak comparison -> 304");
    ok(static_not_modified(&f, "\"x\", \"y\" ,W/\"1a-2b\"", NULL), "INM list");
    ok(static_not_modified(&f, "*", NULL), "INM * -> 304");
    ok(!static_not_modified(&f, "\"1a-2c\"", NULL), "INM other tag -> 200");
    ok(!static_not_modified(&f, "\"1a-2c\"", "Sun, 06 Nov 1994 08:49:37 GMT"),
       "INM present wins over a matching IMS");
    ok(!static_not_modified(&f, "1a-2b", NULL), "unquoted tag never matches");
    ok(static_not_modified(&f, NULL, "Sun, 06 Nov 1994 08:49:37 GMT"), "IMS equal -> 304");
    ok(static_not_modified(&f, NULL, "Mon, 07 Nov 1994 08:49:37 GMT"), "IMS later -> 304");
    ok(!static_not_modified(&f, NULL, "Sun, 06 Nov 1994 08:49:36 GMT"), "IMS earlier -> 200");
    ok(!static_not_modified(&f, NULL, "not a date"), "invalid IMS ignored");
    ok(!static_not_modified(&f, NULL, NULL), "no conditionals -> 200");

    ok(static_if_range(&f, NULL), "no If-Range");
    ok(static_if_range(&f, "\"1a-2b\""), "If-Range strong match");
    ok(!static_if_range(&f, "W/\"1a-2b\""), "If-Range weak never matches");
    ok(!static_if_range(&f, "\"zz\""), "If-Range other tag");
    ok(static_if_range(&f, "Sun, 06 Nov 1994 08:49:37 GMT"), "If-Range equal date");
    ok(!static_if_range(&f, "Sun, 06 Nov 1994 08:49:38 GMT"), "If-Range other date");

    /* ETag changes when the file changes, even at the same size */
    char b[64];
    static_file g, h;
    get("/b.txt", 0, b, sizeof b, &g);
    get("/b.txt", 0, b, sizeof b, &h);
    is_str(g.etag, h.etag, "ETag stable across opens");
    ok(g.etag[0] == '"' && g.etag[strlen(g.etag) - 1] == '"' && g.etag[1] != '/', "ETag strong and quoted");
    is_int(h.size, 4, "size");
    static_close(&g);
    static_close(&h);
    char p[512];
    snprintf(p, sizeof p, "%s/b.txt", base);
    struct timespec ts[2] = {{0, UTIME_OMIT}, {1000000000, 5}};
    utimensat(AT_FDCWD, p, ts, 0);
    get("/b.txt", 0, b, sizeof b, &g);
    ok(strcmp(g.etag, h.etag) != 0, "ETag changes with mtime at same size");
    is_int(g.mtime, 1000000000, "mtime");
    static_close(&g);
}

static void range_tests(void)
{
    off_t s = -7, l = -7;
    is_int(static_range(NULL, 1000, &s, &l), 0, "no Range");
    is_int(static_range("bytes=0-499", 1000, &s, &l), 1, "bytes=0-499");
    ok(s == 0 && l == 500, "0-499 -> start 0 len 500");
    is_int(static_range("bytes=500-", 1000, &s, &l), 1, "open range");
    ok(s == 500 && l == 500, "500- -> 500..999");
    is_int(static_range("bytes=-200", 1000, &s, &l), 1, "suffix");
    ok(s == 800 && l == 200, "-200 -> last 200");
    is_int(static_range("bytes=-5000", 1000, &s, &l), 1, "suffix longer than file");
    ok(s == 0 && l == 1000, "whole file");
    is_int(static_range("bytes=900-5000", 1000, &s, &l), 1, "last clamps");
    ok(s == 900 && l == 100, "900-999");
    is_int(static_range("bytes=999-999", 1000, &s, &l), 1, "single last byte");
    ok(s == 999 && l == 1, "999 len 1");
    is_int(static_range("Bytes = 1-2 ", 1000, &s, &l), 1, "unit case-insensitive, spaces");
    is_int(static_range("bytes=1000-", 1000, &s, &l), -1, "start == size -> 416");
    is_int(static_range("bytes=-0", 1000, &s, &l), -1, "-0 -> 416");
    is_int(static_range("bytes=0-", 0, &s, &l), -1, "empty file 0- -> 416");
    is_int(static_range("bytes=-5", 0, &s, &l), 0, "empty file suffix -> 200");
    is_int(static_range("bytes=99999999999999999999999-", 1000, &s, &l), -1, "overflowing start -> 416");
    is_int(static_range("bytes=0-99999999999999999999999", 1000, &s, &l), 1, "overflowing end clamps");
    ok(s == 0 && l == 1000, "whole file from overflowing end");
    is_int(static_range("bytes=-99999999999999999999999", 1000, &s, &l), 1, "overflowing suffix");
    ok(s == 0 && l == 1000, "whole file from overflowing suffix");
    is_int(static_range("bytes=5-3", 1000, &s, &l), 0, "last < first ignored");
    is_int(static_range("bytes=0-1,5-6", 1000, &s, &l), 0, "multiple ranges ignored");
    is_int(static_range("items=0-1", 1000, &s, &l), 0, "other unit ignored");
    is_int(static_range("bytes=abc", 1000, &s, &l), 0, "garbage ignored");
    is_int(static_range("bytes=-", 1000, &s, &l), 0, "bare - ignored");
    is_int(static_range("bytes=1-2x", 1000, &s, &l), 0, "trailing junk ignored");
    is_int(static_range("bytes=+1-2", 1000, &s, &l), 0, "sign ignored");
}

int main(void)
{
    snprintf(base, sizeof base, "/tmp/test_static.%d", (int)getpid());
    char cmd[1024];
    snprintf(cmd, sizeof cmd, "rm -rf %s && mkdir -p %s/root %s/outside", base, base, base);
    if (system(cmd) != 0) return 2;
    put("outside/canary.txt", "CANARY\n");
    snprintf(root, sizeof root, "%s/root", base);
    strcat(base, "/root");
    put("index.html", "root index\n");
    put("b.txt", "bee\n");
    put("%2e", "literal\n");
    put(".env", "SECRET=1\n");
    sub(".well-known");
    put(".well-known/acme.txt", "token\n");
    sub("a");
    put("a/index.html", "a index\n");
    put("a/c.txt", "cee\n");
    lnk("../b.txt", "a/up");
    lnk("../../outside", "a/deep_out");
    sub("empty");
    sub("dirindex");
    sub("dirindex/index.html");
    put("style.css", "body{}");
    put("style.css.gz", "GZ");
    put("index.html.gz", "GZI");
    put("logo.png", "PNG");
    put("logo.png.gz", "PNGGZ");
    put("evil.js", "js");
    lnk("../outside/canary.txt", "evil.js.gz");
    lnk("b.txt", "link_in");
    lnk("a", "link_dir_in");
    lnk("link_in", "chain");
    lnk("/etc/passwd", "link_passwd");
    lnk("../outside/canary.txt", "link_rel_out");
    lnk("../outside", "link_dir_out");
    lnk("loop2", "loop1");
    lnk("loop1", "loop2");
    lnk("/dev/null", "devnull");
    char p[512];
    snprintf(p, sizeof p, "%s/b.txt", root);
    lnk(p, "link_abs_in");
    snprintf(p, sizeof p, "%s/fifo", root);
    if (mkfifo(p, 0644) != 0) return 2;

    rootfd = open(root, O_PATH | O_DIRECTORY | O_CLOEXEC);
    if (rootfd < 0) return 2;

    int have = static_use_openat2(-1);
    printf("# openat2 available: %d\n", have);
    if (have) path_tests("openat2");
    static_use_openat2(0);
    path_tests("O_NOFOLLOW walk");
    static_use_openat2(-1);

    {
        static_file f;
        int st = 0;
        static_open(root, "/b.txt", 6, NULL, &f, &st);
        ok(st == 200 && f.fd >= 0, "static_open by path");
        static_close(&f);
        static_close(&f);
        ok(f.fd == -1, "static_close idempotent");
        static_open("/nonexistent-root-xyz", "/b.txt", 6, NULL, &f, &st);
        is_int(st, 500, "missing root -> 500");
    }
    mime_tests();
    validator_tests();
    range_tests();

    close(rootfd);
    int probe = open("/dev/null", O_RDONLY);
    is_int(probe, rootfd, "no descriptor leaked (next free fd is the root's)");
    close(probe);
    snprintf(cmd, sizeof cmd, "rm -rf /tmp/test_static.%d", (int)getpid());
    if (system(cmd) != 0) return 2;
    return tap_done();
}
