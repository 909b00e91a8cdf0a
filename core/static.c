/* static.c: safe static-file lookup (decode once, normalise, openat2 or an O_NOFOLLOW walk), MIME types, ETag/304, Range. */
#include "static.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>
#ifdef SYS_openat2
#include <linux/openat2.h>
#endif

#define PATH_CAP 4096
#define MAX_SYMLINK_HOPS 40
/* O_NONBLOCK: opening a FIFO planted in the tree must not block the worker.
 * O_NOCTTY: a tty device must never become our controlling terminal. */
#define OPEN_FLAGS (O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOCTTY)
#define OFF_MAX ((off_t)(((uintmax_t)1 << (sizeof(off_t) * CHAR_BIT - 1)) - 1))

/* ---- path decoding and normalisation ---------------------------------------------- */

static int hexval(int c)
{
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

/* Percent-decode exactly once. 0 or an HTTP status (400). */
static int decode_path(const char *s, size_t n, char *out, size_t cap, size_t *outlen)
{
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '?' || c == '#') break;
        if (c == '%') {
            int hi, lo;
            if (i + 2 >= n || (hi = hexval(s[i + 1])) < 0 || (lo = hexval(s[i + 2])) < 0) return 400;
            c = (unsigned char)(hi << 4 | lo);
            i += 2;
        }
        /* NUL would truncate the C path; controls and '\\' have no business in a URL
         * path and '\\' is a separator on other systems a tree may be copied to. */
        if (c < 0x20 || c == 0x7f || c == '\\') return 400;
        if (o + 1 >= cap) return 400;
        out[o++] = (char)c;
    }
    out[o] = '\0';
    *outlen = o;
    return 0;
}

/* Lexically normalise "a//b/./c/../d" to "a/b/d" (no leading or trailing '/').
 * -1 when a ".." would climb above the start, -2 when out is too small. */
static int normalise(const char *s, size_t n, char *out, size_t cap)
{
    size_t o = 0, i = 0;
    while (i < n) {
        size_t j = i;
        while (j < n && s[j] != '/') j++;
        size_t k = j - i;
        if (k == 0 || (k == 1 && s[i] == '.')) {
            /* empty or "." segment: nothing */
        } else if (k == 2 && s[i] == '.' && s[i + 1] == '.') {
            if (o == 0) return -1;
            while (o > 0 && out[o - 1] != '/') o--;
            if (o > 0) o--; /* drop the separator too */
        } else {
            if (o + (o > 0) + k + 1 > cap) return -2;
            if (o > 0) out[o++] = '/';
            memcpy(out + o, s + i, k);
            o += k;
        }
        i = j + 1;
    }
    out[o] = '\0';
    return 0;
}

/* 1 when some segment is a dot-file other than ".well-known" (RFC 8615). */
static int has_dotfile(const char *rel)
{
    for (const char *p = rel; *p;) {
        const char *e = strchr(p, '/');
        size_t k = e ? (size_t)(e - p) : strlen(p);
        if (p[0] == '.' && !(k == 11 && memcmp(p, ".well-known", 11) == 0)) return 1;
        if (!e) break;
        p = e + 1;
    }
    return 0;
}

/* ---- confined lookup -------------------------------------------------------------- */

static atomic_int openat2_mode = -1; /* -1 unknown, 0 walk, 1 openat2 */

static int probe_openat2(void)
{
#ifdef SYS_openat2
    struct open_how how;
    memset(&how, 0, sizeof how);
    how.flags = O_PATH | O_CLOEXEC | O_DIRECTORY;
    how.resolve = RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS;
    int fd = (int)syscall(SYS_openat2, AT_FDCWD, ".", &how, sizeof how);
    if (fd >= 0) {
        close(fd);
        return 1;
    }
    /* ENOSYS: old kernel; EPERM: seccomp filter; EINVAL: flags unknown. */
    return !(errno == ENOSYS || errno == EPERM || errno == EINVAL);
#else
    return 0;
#endif
}

int static_use_openat2(int mode)
{
    if (mode == 0) {
        atomic_store(&openat2_mode, 0);
        return 0;
    }
    int have = probe_openat2();
    atomic_store(&openat2_mode, have);
    return have;
}

#ifdef SYS_openat2
static int resolve_openat2(int root_fd, const char *rel)
{
    struct open_how how;
    memset(&how, 0, sizeof how);
    how.flags = OPEN_FLAGS;
    how.resolve = RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS;
    for (int tries = 0; tries < 4; tries++) {
        int fd = (int)syscall(SYS_openat2, root_fd, *rel ? rel : ".", &how, sizeof how);
        /* EAGAIN: a concurrent rename raced a ".." in a symlink target; retry. */
        if (fd >= 0 || errno != EAGAIN) return fd;
    }
    return -1;
}
#endif

/* One symlink met during the walk: splice its target into path in place of the
 * component that starts at path[pre] and ends before rest. 0, or -1 with errno. */
static int splice_link(int dfd, const char *comp, char *path, size_t pre, const char *rest)
{
    char target[PATH_CAP], tmp[PATH_CAP];
    ssize_t t = readlinkat(dfd, comp, target, sizeof target);
    /* Absolute targets are refused like RESOLVE_BENEATH does, even when they name a
     * place inside the root: the root's absolute path is not ours to know. */
    if (t <= 0 || (size_t)t >= sizeof target || target[0] == '/') {
        errno = EXDEV;
        return -1;
    }
    size_t rl = rest ? strlen(rest) : 0;
    if (pre + (size_t)t + rl >= sizeof tmp) {
        errno = ENAMETOOLONG;
        return -1;
    }
    memcpy(tmp, path, pre);
    memcpy(tmp + pre, target, (size_t)t);
    if (rl) memcpy(tmp + pre + t, rest, rl);
    if (normalise(tmp, pre + (size_t)t + rl, path, PATH_CAP) != 0) {
        errno = EXDEV; /* climbs out of the root */
        return -1;
    }
    return 0;
}

/* Walk rel one component at a time with O_NOFOLLOW, expanding relative symlinks
 * ourselves so that the result can never leave root_fd. */
static int resolve_walk(int root_fd, const char *rel)
{
    char path[PATH_CAP];
    size_t n = strlen(rel);
    if (n >= sizeof path) {
        errno = ENAMETOOLONG;
        return -1;
    }
    memcpy(path, rel, n + 1);
    for (int hops = 0; hops <= MAX_SYMLINK_HOPS; hops++) {
        if (!path[0]) return openat(root_fd, ".", OPEN_FLAGS);
        int dfd = root_fd, spliced = 0;
        const char *p = path;
        for (;;) {
            const char *slash = strchr(p, '/');
            size_t k = slash ? (size_t)(slash - p) : strlen(p);
            char comp[NAME_MAX + 1];
            if (k > NAME_MAX) {
                if (dfd != root_fd) close(dfd);
                errno = ENAMETOOLONG;
                return -1;
            }
            memcpy(comp, p, k);
            comp[k] = '\0';
            int fd = openat(dfd, comp, OPEN_FLAGS | O_NOFOLLOW | (slash ? O_DIRECTORY : 0));
            if (fd < 0) {
                int e = errno;
                struct stat st;
                /* O_NOFOLLOW on a link gives ELOOP, or ENOTDIR with O_DIRECTORY. */
                if ((e == ELOOP || e == ENOTDIR) &&
                    fstatat(dfd, comp, &st, AT_SYMLINK_NOFOLLOW) == 0 && S_ISLNK(st.st_mode)) {
                    if (splice_link(dfd, comp, path, (size_t)(p - path), slash) == 0) spliced = 1;
                    e = errno;
                }
                if (dfd != root_fd) close(dfd);
                if (spliced) break;
                errno = e;
                return -1;
            }
            if (dfd != root_fd) close(dfd);
            if (!slash) return fd;
            dfd = fd;
            p = slash + 1;
        }
    }
    errno = ELOOP;
    return -1;
}

static int resolve(int root_fd, const char *rel)
{
    int mode = atomic_load(&openat2_mode);
    if (mode < 0) mode = static_use_openat2(1);
#ifdef SYS_openat2
    if (mode == 1) return resolve_openat2(root_fd, rel);
#endif
    return resolve_walk(root_fd, rel);
}

static int errno_status(int e)
{
    /* Running out of descriptors or memory is our fault, not a missing file. */
    return (e == EMFILE || e == ENFILE || e == ENOMEM) ? 500 : 404;
}

/* Open rel and require a regular file. fd or -1 with *status set. */
static int open_regular(int root_fd, const char *rel, struct stat *st, int *status)
{
    int fd = resolve(root_fd, rel);
    if (fd < 0) {
        *status = errno_status(errno);
        return -1;
    }
    if (fstat(fd, st) != 0 || !S_ISREG(st->st_mode)) {
        close(fd);
        *status = 404;
        return -1;
    }
    return fd;
}

static void fill(static_file *out, int fd, const struct stat *st, int gz)
{
    unsigned long long ns =
        (unsigned long long)st->st_mtim.tv_sec * 1000000000ull + (unsigned long long)st->st_mtim.tv_nsec;
    out->fd = fd;
    out->size = st->st_size;
    out->mtime = st->st_mtim.tv_sec;
    out->gzip = gz;
    /* No inode: instances behind a balancer serve copies with different inodes and
     * must agree on the tag. Nanosecond mtime catches same-size rewrites. */
    snprintf(out->etag, sizeof out->etag, "\"%llx-%llx%s\"", (unsigned long long)st->st_size, ns,
             gz ? "-gz" : "");
}

int static_open_at(int root_fd, const char *url_path, size_t len, const char *index_name,
                   unsigned flags, static_file *out, int *http_status)
{
    char dec[PATH_CAP], rel[PATH_CAP + NAME_MAX + 8];
    size_t dlen;
    memset(out, 0, sizeof *out);
    out->fd = -1;
    out->content_type = "application/octet-stream";
    if (decode_path(url_path, len, dec, sizeof dec, &dlen) != 0) {
        *http_status = 400;
        return -1;
    }
    int trailing = dlen > 0 && dec[dlen - 1] == '/';
    int r = normalise(dec, dlen, rel, PATH_CAP);
    if (r != 0) {
        *http_status = r == -1 ? 404 : 400;
        return -1;
    }
    if (!(flags & STATIC_DOTFILES) && has_dotfile(rel)) {
        *http_status = 404;
        return -1;
    }

    int fd = resolve(root_fd, rel);
    struct stat st;
    if (fd < 0) {
        *http_status = errno_status(errno);
        return -1;
    }
    if (fstat(fd, &st) != 0) {
        close(fd);
        *http_status = 500;
        return -1;
    }
    size_t rl = strlen(rel);
    if (S_ISDIR(st.st_mode)) {
        close(fd);
        if (!trailing) { /* relative links in the index page need the slash form */
            out->is_dir_redirect = 1;
            *http_status = 301;
            return 0;
        }
        size_t il = index_name ? strlen(index_name) : 0;
        if (il == 0 || il > NAME_MAX || strchr(index_name, '/') || rl + 1 + il >= PATH_CAP) {
            *http_status = 404;
            return -1;
        }
        if (rl) rel[rl++] = '/';
        memcpy(rel + rl, index_name, il + 1);
        rl += il;
        if ((fd = open_regular(root_fd, rel, &st, http_status)) < 0) return -1;
    } else if (!S_ISREG(st.st_mode) || trailing) { /* "file.txt/" is not the file */
        close(fd);
        *http_status = 404;
        return -1;
    }

    const char *base = strrchr(rel, '/');
    base = base ? base + 1 : rel;
    out->content_type = static_content_type(base, strlen(base));

    /* A .gz sibling is looked for only where it can pay off: compressible types. */
    if ((flags & STATIC_GZIP) && static_compressible(out->content_type) && rl + 3 < PATH_CAP) {
        struct stat gst;
        int dummy;
        memcpy(rel + rl, ".gz", 4);
        int gfd = open_regular(root_fd, rel, &gst, &dummy);
        if (gfd >= 0) {
            close(fd);
            fill(out, gfd, &gst, 1);
            *http_status = 200;
            return 0;
        }
    }
    fill(out, fd, &st, 0);
    *http_status = 200;
    return 0;
}

int static_open(const char *root_realpath, const char *url_path, size_t len,
                const char *index_name, static_file *out, int *http_status)
{
    int root = open(root_realpath, O_PATH | O_DIRECTORY | O_CLOEXEC);
    if (root < 0) {
        memset(out, 0, sizeof *out);
        out->fd = -1;
        out->content_type = "application/octet-stream";
        *http_status = 500; /* a missing root is a configuration error */
        return -1;
    }
    int r = static_open_at(root, url_path, len, index_name, 0, out, http_status);
    close(root);
    return r;
}

void static_close(static_file *f)
{
    if (f && f->fd >= 0) {
        close(f->fd);
        f->fd = -1;
    }
}

/* ---- content types ---------------------------------------------------------------- */

static const struct {
    const char *ext, *type;
} mime[] = {
    {"html", "text/html; charset=utf-8"},  {"htm", "text/html; charset=utf-8"},
    {"css", "text/css; charset=utf-8"},    {"js", "text/javascript; charset=utf-8"},
    {"mjs", "text/javascript; charset=utf-8"}, {"json", "application/json"},
    {"map", "application/json"},           {"svg", "image/svg+xml"},
    {"png", "image/png"},                  {"jpg", "image/jpeg"},
    {"jpeg", "image/jpeg"},                {"gif", "image/gif"},
    {"webp", "image/webp"},                {"ico", "image/x-icon"},
    {"txt", "text/plain; charset=utf-8"},  {"xml", "application/xml"},
    {"pdf", "application/pdf"},            {"wasm", "application/wasm"},
    {"woff", "font/woff"},                 {"woff2", "font/woff2"},
    {"mp4", "video/mp4"},                  {"webm", "video/webm"},
};

const char *static_content_type(const char *name, size_t len)
{
    size_t i = len;
    while (i > 0 && name[i - 1] != '.' && name[i - 1] != '/') i--;
    if (i == 0 || name[i - 1] != '.') return "application/octet-stream";
    const char *ext = name + i;
    size_t el = len - i;
    for (size_t k = 0; k < sizeof mime / sizeof mime[0]; k++)
        if (strlen(mime[k].ext) == el && strncasecmp(mime[k].ext, ext, el) == 0) return mime[k].type;
    return "application/octet-stream";
}

int static_compressible(const char *t)
{
    if (!t) return 0;
    return strncmp(t, "text/", 5) == 0 || strstr(t, "json") || strstr(t, "javascript") ||
           strstr(t, "xml") || strcmp(t, "application/wasm") == 0;
}

/* ---- header value helpers --------------------------------------------------------- */

static const char *skip_ws(const char *s)
{
    while (*s == ' ' || *s == '\t') s++;
    return s;
}

int static_accepts_gzip(const char *ae)
{
    int gzip = -1, star = -1; /* -1 not listed, 0 refused, 1 accepted */
    if (!ae) return 0;
    const char *p = ae;
    while (*p) {
        p = skip_ws(p);
        const char *tok = p;
        while (*p && *p != ',' && *p != ';' && *p != ' ' && *p != '\t') p++;
        size_t tl = (size_t)(p - tok);
        int q = 1;
        while (*p && *p != ',') { /* parameters: only q matters */
            p = skip_ws(p);
            if (*p == ';') p = skip_ws(p + 1);
            if ((*p == 'q' || *p == 'Q') && p[1] == '=') {
                p += 2;
                q = 0;
                while (*p == '0' || *p == '.' || (*p >= '1' && *p <= '9')) {
                    if (*p >= '1' && *p <= '9') q = 1;
                    p++;
                }
            } else if (*p && *p != ',') {
                p++;
            }
        }
        if ((tl == 4 && strncasecmp(tok, "gzip", 4) == 0) || (tl == 6 && strncasecmp(tok, "x-gzip", 6) == 0))
            gzip = q;
        else if (tl == 1 && *tok == '*')
            star = q;
        if (*p == ',') p++;
    }
    return gzip >= 0 ? gzip : star > 0;
}

static const char wdays[7][4] = {"Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"};
static const char months[12][4] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                   "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};

static char *put2(char *p, int v)
{
    *p++ = (char)('0' + v / 10 % 10);
    *p++ = (char)('0' + v % 10);
    return p;
}

size_t static_http_date(time_t t, char buf[30])
{
    struct tm tm;
    if (!gmtime_r(&t, &tm) || tm.tm_year + 1900 > 9999 || tm.tm_year + 1900 < 0) {
        t = 0;
        gmtime_r(&t, &tm);
    }
    /* Hand-formatted: strftime would follow the process locale. */
    char *p = buf;
    memcpy(p, wdays[tm.tm_wday], 3);
    p += 3;
    *p++ = ',';
    *p++ = ' ';
    p = put2(p, tm.tm_mday);
    *p++ = ' ';
    memcpy(p, months[tm.tm_mon], 3);
    p += 3;
    *p++ = ' ';
    p = put2(p, (tm.tm_year + 1900) / 100);
    p = put2(p, (tm.tm_year + 1900) % 100);
    *p++ = ' ';
    p = put2(p, tm.tm_hour);
    *p++ = ':';
    p = put2(p, tm.tm_min);
    *p++ = ':';
    p = put2(p, tm.tm_sec);
    memcpy(p, " GMT", 5);
    return (size_t)(p + 4 - buf);
}

/* Read exactly n digits (n > 0) or, with n == 0, one or more. -1 on failure. */
static int digits(const char **s, int n)
{
    int v = 0, k = 0;
    while (**s >= '0' && **s <= '9' && (n == 0 || k < n) && k < 9) {
        v = v * 10 + (**s - '0');
        (*s)++;
        k++;
    }
    return (k == 0 || (n && k != n)) ? -1 : v;
}

static int month(const char **s)
{
    for (int m = 0; m < 12; m++)
        if (strncmp(*s, months[m], 3) == 0) {
            *s += 3;
            return m;
        }
    return -1;
}

static int hms(const char **s, struct tm *tm)
{
    if ((tm->tm_hour = digits(s, 2)) < 0 || *(*s)++ != ':') return -1;
    if ((tm->tm_min = digits(s, 2)) < 0 || *(*s)++ != ':') return -1;
    if ((tm->tm_sec = digits(s, 2)) < 0) return -1;
    return 0;
}

time_t static_parse_http_date(const char *s)
{
    struct tm tm;
    memset(&tm, 0, sizeof tm);
    if (!s) return -1;
    s = skip_ws(s);
    while ((*s >= 'A' && *s <= 'Z') || (*s >= 'a' && *s <= 'z')) s++; /* day name */
    if (*s == ',') {
        if (*++s != ' ') return -1;
        s++;
        if ((tm.tm_mday = digits(&s, 2)) < 0) return -1;
        if (*s == ' ') { /* IMF-fixdate: 06 Nov 1994 08:49:37 GMT */
            s++;
            if ((tm.tm_mon = month(&s)) < 0 || *s++ != ' ') return -1;
            if ((tm.tm_year = digits(&s, 4)) < 0) return -1;
            tm.tm_year -= 1900;
        } else if (*s == '-') { /* RFC 850: 06-Nov-94 08:49:37 GMT */
            s++;
            if ((tm.tm_mon = month(&s)) < 0 || *s++ != '-') return -1;
            if ((tm.tm_year = digits(&s, 2)) < 0) return -1;
            if (tm.tm_year < 70) tm.tm_year += 100;
        } else {
            return -1;
        }
        if (*s++ != ' ' || hms(&s, &tm) < 0 || strncmp(s, " GMT", 4) != 0) return -1;
        s += 4;
    } else if (*s == ' ') { /* asctime: Nov  6 08:49:37 1994 */
        s++;
        if ((tm.tm_mon = month(&s)) < 0 || *s++ != ' ') return -1;
        if (*s == ' ') s++;
        if ((tm.tm_mday = digits(&s, 0)) < 0 || *s++ != ' ' || hms(&s, &tm) < 0 || *s++ != ' ') return -1;
        if ((tm.tm_year = digits(&s, 4)) < 0) return -1;
        tm.tm_year -= 1900;
    } else {
        return -1;
    }
    if (*skip_ws(s) != '\0') return -1;
    if (tm.tm_mday < 1 || tm.tm_mday > 31 || tm.tm_hour > 23 || tm.tm_min > 59 || tm.tm_sec > 60)
        return -1;
    return timegm(&tm);
}

/* Does the entity-tag list contain etag? weak: W/ ignored on both sides (If-None-Match);
 * otherwise both must be strong (If-Range). */
static int etag_match(const char *list, const char *etag, int weak)
{
    size_t el = strlen(etag);
    const char *p = list;
    for (;;) {
        while (*p == ' ' || *p == '\t' || *p == ',') p++;
        if (!*p) return 0;
        if (*p == '*') return weak; /* "*" is only meaningful in If-None-Match */
        int is_weak = 0;
        if (p[0] == 'W' && p[1] == '/') {
            is_weak = 1;
            p += 2;
        }
        if (*p != '"') return 0;
        const char *q = strchr(p + 1, '"');
        if (!q) return 0;
        size_t tl = (size_t)(q - p) + 1;
        if ((weak || !is_weak) && tl == el && memcmp(p, etag, el) == 0) return 1;
        p = q + 1;
    }
}

int static_not_modified(const static_file *f, const char *inm, const char *ims)
{
    if (inm) return etag_match(inm, f->etag, 1);
    if (ims) {
        time_t t = static_parse_http_date(ims);
        return t >= 0 && f->mtime <= t;
    }
    return 0;
}

int static_if_range(const static_file *f, const char *ir)
{
    if (!ir) return 1;
    ir = skip_ws(ir);
    if (*ir == '"' || (ir[0] == 'W' && ir[1] == '/')) return etag_match(ir, f->etag, 0);
    time_t t = static_parse_http_date(ir);
    return t >= 0 && t == f->mtime;
}

/* Decimal with saturation at OFF_MAX: a huge number is still "huge", never wraps. */
static int parse_off(const char **s, off_t *v)
{
    const char *p = *s;
    off_t x = 0;
    while (*p >= '0' && *p <= '9') {
        int d = *p++ - '0';
        x = (x > (OFF_MAX - d) / 10) ? OFF_MAX : x * 10 + d;
    }
    if (p == *s) return -1;
    *s = p;
    *v = x;
    return 0;
}

int static_range(const char *h, off_t size, off_t *start, off_t *len)
{
    off_t first, last = 0;
    if (!h) return 0;
    h = skip_ws(h);
    if (strncasecmp(h, "bytes", 5) != 0) return 0;
    h = skip_ws(h + 5);
    if (*h++ != '=') return 0;
    h = skip_ws(h);
    if (strchr(h, ',')) return 0; /* several ranges: serve the whole representation */
    if (*h == '-') {              /* suffix: the last n bytes */
        h++;
        if (parse_off(&h, &last) < 0 || *skip_ws(h)) return 0;
        if (last == 0) return -1;
        if (size == 0) return 0; /* nothing to slice: a plain 200 with an empty body */
        if (last > size) last = size;
        *start = size - last;
        *len = last;
        return 1;
    }
    if (parse_off(&h, &first) < 0 || *h++ != '-') return 0;
    int has_last = parse_off(&h, &last) == 0;
    if (*skip_ws(h)) return 0;
    if (has_last && last < first) return 0; /* invalid: ignore the header */
    if (first >= size) return -1;
    off_t end = (has_last && last < size - 1) ? last : size - 1;
    *start = first;
    *len = end - first + 1;
    return 1;
}
