/* static.h: safe static-file lookup below a root directory, plus the HTTP validator (ETag/304) and Range rules. */
#ifndef SLUICE_STATIC_H
#define SLUICE_STATIC_H

#include <stddef.h>
#include <sys/types.h>
#include <time.h>

/*
 * Path rules (static_open):
 * - url_path is the raw path below the mount prefix, still percent-encoded, without
 *   the query string (a raw '?' or '#' ends it). "" and "/" both name the root.
 * - Decoded exactly once: "%252e" becomes the literal name "%2e", never "..".
 *   Bad escapes, %00 / NUL, other control bytes and backslashes -> 400.
 * - Segments are normalised lexically ("//", ".", ".."); a ".." that would climb
 *   above the root -> 404. Dot-files (".git", ".env") -> 404 unless
 *   STATIC_DOTFILES is given; ".well-known" is always allowed.
 * - Lookup never leaves the root, symlinks included: openat2(RESOLVE_BENEATH |
 *   RESOLVE_NO_MAGICLINKS) when the kernel has it, else a component-by-component walk
 *   with O_NOFOLLOW that expands symlinks itself. Both give the same answers:
 *   relative symlinks that stay inside the root are followed, absolute symlinks
 *   (even to places inside the root), magic links and symlinks that climb out -> 404.
 *   (One nuance: a ".." inside a link target is resolved lexically by the walk and
 *   physically by openat2; either way the result stays below the root.)
 * - Only regular files are served (devices, FIFOs, sockets -> 404; opened
 *   O_NONBLOCK so a FIFO cannot hang the worker). A directory with a trailing '/'
 *   serves index_name inside it (404 if absent or index_name is NULL); a directory
 *   without it -> 301 with is_dir_redirect set: redirect to the request path + "/".
 * - Missing, unreadable or outside -> 404 (never 403: it would leak existence).
 */

typedef struct static_file {
    int fd;                   /* open regular file (O_RDONLY|O_CLOEXEC), -1 if none */
    off_t size;
    time_t mtime;
    char etag[48];            /* strong, quoted: "size-mtime_ns" (+ "-gz" for .gz) */
    const char *content_type; /* static string, from the requested name's extension */
    int is_dir_redirect;      /* 1: answer 301, Location = request path + "/" */
    int gzip;                 /* 1: fd is the precompressed "<name>.gz" sibling */
} static_file;

enum {
    STATIC_GZIP = 1 << 0,     /* client accepts gzip: prefer a regular "<file>.gz" sibling */
    STATIC_DOTFILES = 1 << 1, /* serve names starting with '.' */
};

/* Resolve url_path below the directory root_fd (any fd opened on a directory, e.g. with
 * O_PATH|O_DIRECTORY; kept open by the caller and shareable between threads).
 * Returns 0 with *out filled (fd >= 0, *http_status 200) or, for a directory without
 * trailing slash, 0 with fd -1, is_dir_redirect 1 and *http_status 301;
 * -1 with *http_status 400, 404 or 500 (out of fds/memory) and out->fd == -1. */
int static_open_at(int root_fd, const char *url_path, size_t len, const char *index_name,
                   unsigned flags, static_file *out, int *http_status);

/* Same, opening root_realpath for the call (one extra open/close); flags 0. */
int static_open(const char *root_realpath, const char *url_path, size_t len,
                const char *index_name, static_file *out, int *http_status);

/* Close out->fd if open; idempotent. */
void static_close(static_file *f);

/* MIME type for a file name by its extension (case-insensitive); never NULL,
 * "application/octet-stream" when unknown. Text types carry "; charset=utf-8". */
const char *static_content_type(const char *name, size_t len);

/* 1 when the type is worth gzipping on the fly (text, JSON, JS, XML, SVG, wasm, map). */
int static_compressible(const char *content_type);

/* 1 when an Accept-Encoding value allows gzip (gzip/x-gzip/'*' with q > 0). NULL -> 0. */
int static_accepts_gzip(const char *accept_encoding);

/* Format t as an IMF-fixdate ("Sun, 06 Nov 1994 08:49:37 GMT"), locale-independent.
 * buf needs 30 bytes; returns the length (29). */
size_t static_http_date(time_t t, char buf[30]);

/* Parse an HTTP-date (IMF-fixdate, RFC 850 or asctime). -1 when invalid. */
time_t static_parse_http_date(const char *s);

/* RFC 9110 13.2.2 for GET/HEAD: 1 = answer 304. If-None-Match (NULL when absent)
 * wins over If-Modified-Since: '*' or any listed tag matching weakly -> 304;
 * otherwise mtime <= If-Modified-Since -> 304. Invalid dates are ignored. */
int static_not_modified(const static_file *f, const char *if_none_match,
                        const char *if_modified_since);

/* RFC 9110 13.1.5: 1 when a Range may be honoured given If-Range (NULL -> 1): an
 * entity tag must match strongly, a date must equal the file's mtime exactly. */
int static_if_range(const static_file *f, const char *if_range);

/* Parse a Range header against size. 0: absent, invalid, not "bytes", or several
 * ranges (multipart/byteranges is not produced; the whole file is served, 200).
 * 1: one satisfiable range -> 206 with start/len ("a-b", "a-", "-n"; oversized
 * numbers saturate). -1: unsatisfiable -> 416 with Content-Range "bytes *" + "/<size>". */
int static_range(const char *range_header, off_t size, off_t *start, off_t *len);

/* Test hook: 0 forces the O_NOFOLLOW walk, 1 uses openat2 if the probe found it,
 * -1 re-probes. Returns whether openat2 will be used. */
int static_use_openat2(int mode);

#endif
