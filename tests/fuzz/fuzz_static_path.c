/* fuzz_static_path.c: libFuzzer target for static_open_at's path handling against a temp root
 * with symlinks in and out and a canary file outside it that must never be opened.
 * Input: byte 0 = flags (bit 0 gzip, bit 1 dot-files, bit 2 force the O_NOFOLLOW walk),
 * the rest is the URL path. Every fd returned must be a regular file under the root.
 * Build: clang -g -O1 -fsanitize=fuzzer,address,undefined -D_GNU_SOURCE -Icore core/static.c \
 *          tests/fuzz/fuzz_static_path.c -o /tmp/fuzz_static_path
 * Run:   /tmp/fuzz_static_path -max_total_time=60 tests/fuzz/corpus/static_path */
#include "static.h"

#include <fcntl.h>
#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static int rootfd = -1;
static char rootreal[PATH_MAX];
static size_t rootlen;

static void mk(const char *base, const char *rel, const char *text, const char *link)
{
    char p[PATH_MAX];
    snprintf(p, sizeof p, "%s/%s", base, rel);
    if (link) {
        if (symlink(link, p) != 0) abort();
    } else if (text) {
        FILE *f = fopen(p, "w");
        if (!f) abort();
        fputs(text, f);
        fclose(f);
    } else if (mkdir(p, 0755) != 0) {
        abort();
    }
}

static char base[64];

static void cleanup(void)
{
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", base);
    if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", base);
}

static void setup(void)
{
    snprintf(base, sizeof base, "/tmp/fuzz_static.%d", (int)getpid());
    atexit(cleanup);
    mkdir(base, 0755);
    mk(base, "outside", NULL, NULL);
    mk(base, "outside/canary.txt", "CANARY", NULL);
    mk(base, "root", NULL, NULL);
    char root[128];
    snprintf(root, sizeof root, "%s/root", base);
    mk(root, "index.html", "i", NULL);
    mk(root, "b.txt", "b", NULL);
    mk(root, "a.css", "c", NULL);
    mk(root, "a.css.gz", "z", NULL);
    mk(root, ".env", "s", NULL);
    mk(root, "a", NULL, NULL);
    mk(root, "a/index.html", "ai", NULL);
    mk(root, "a/b", NULL, NULL);
    mk(root, "a/b/c.js", "j", NULL);
    mk(root, "a/up", NULL, "../b.txt");
    mk(root, "a/b/upup", NULL, "../../a");
    mk(root, "a/b/out", NULL, "../../../outside");
    mk(root, "a/b/canary", NULL, "../../../outside/canary.txt");
    mk(root, "in", NULL, "a");
    mk(root, "out", NULL, "../outside");
    mk(root, "abs", NULL, "/etc/passwd");
    mk(root, "absdir", NULL, "/tmp");
    mk(root, "evil.js", "e", NULL);
    mk(root, "evil.js.gz", NULL, "../outside/canary.txt");
    mk(root, "loop", NULL, "loop");
    mk(root, "dots", NULL, "a/../..");
    mk(root, "proc", NULL, "/proc/self/root");
    if (!realpath(root, rootreal)) abort();
    rootlen = strlen(rootreal);
    rootfd = open(rootreal, O_PATH | O_DIRECTORY | O_CLOEXEC);
    if (rootfd < 0) abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (rootfd < 0) setup();
    if (size == 0) return 0;
    unsigned flags = (data[0] & 1 ? STATIC_GZIP : 0) | (data[0] & 2 ? STATIC_DOTFILES : 0);
    static_use_openat2((data[0] & 4) ? 0 : 1);
    char *url = malloc(size - 1 ? size - 1 : 1); /* exact size for ASan */
    memcpy(url, data + 1, size - 1);
    static_file f;
    int st = 0;
    int r = static_open_at(rootfd, url, size - 1, "index.html", flags, &f, &st);
    if (st != 200 && st != 301 && st != 400 && st != 404) abort();
    if ((r == 0) != (st == 200 || st == 301)) abort();
    if (f.fd >= 0) {
        char link[64], real[PATH_MAX];
        struct stat sb;
        snprintf(link, sizeof link, "/proc/self/fd/%d", f.fd);
        ssize_t n = readlink(link, real, sizeof real - 1);
        if (n < 0) abort();
        real[n] = '\0';
        if ((size_t)n <= rootlen || memcmp(real, rootreal, rootlen) != 0 || real[rootlen] != '/') {
            fprintf(stderr, "ESCAPED: %s\n", real);
            abort();
        }
        if (fstat(f.fd, &sb) != 0 || !S_ISREG(sb.st_mode) || sb.st_size != f.size) abort();
        if (!(flags & STATIC_DOTFILES) && strstr(real + rootlen, "/.")) abort();
        if (st != 200) abort();
    } else if (st == 200) {
        abort();
    }
    static_close(&f);
    free(url);
    return 0;
}
