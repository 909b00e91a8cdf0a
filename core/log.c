/* log.c: line-at-a-time logging; each line is one write(2) so threads never interleave. In JSON
 * mode (log.format = "json") every line is one JSON object with an ISO-8601 UTC time. */
#include "log.h"

#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#define LINE_MAX_LEN 8192

static int log_level = LOG_INFO;
static int log_fd = 2;
static int log_format_json;
static void (*log_tap)(const char *line, unsigned long len, void *ud);
static void *log_tap_ud;

void log_set_tap(void (*tap)(const char *line, unsigned long len, void *ud), void *ud)
{
    log_tap = tap;
    log_tap_ud = ud;
}

static const char *const tags[] = {"debug", "info", "warn", "error"};

void log_set_level(int level) { log_level = level; }
void log_set_format(int json) { log_format_json = json; }
int log_json(void) { return log_format_json; }
int log_enabled(int level) { return level >= log_level; }

int log_set_file(const char *path)
{
    if (!path) { log_fd = 2; return 0; }
    int fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (fd < 0) return -1;
    log_fd = fd;
    return 0;
}

int log_level_parse(const char *s)
{
    for (int i = 0; i < 4; i++) if (strcmp(s, tags[i]) == 0) return i;
    return -1;
}

size_t log_time_iso(char out[LOG_TIME_LEN])
{
    struct timeval tv;
    gettimeofday(&tv, NULL);
    struct tm tm;
    gmtime_r(&tv.tv_sec, &tm);
    size_t n = strftime(out, LOG_TIME_LEN, "%Y-%m-%dT%H:%M:%S", &tm);
    n += (size_t)snprintf(out + n, LOG_TIME_LEN - n, ".%03ldZ", (long)tv.tv_usec / 1000);
    return n;
}

size_t log_json_escape(char *out, size_t cap, const char *s, size_t n)
{
    static const char hex[] = "0123456789abcdef";
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (o + 7 > cap) break;                  /* room for the longest escape: truncate */
        if (c == '"' || c == '\\') { out[o++] = '\\'; out[o++] = (char)c; }
        else if (c == '\n') { out[o++] = '\\'; out[o++] = 'n'; }
        else if (c == '\t') { out[o++] = '\\'; out[o++] = 't'; }
        else if (c == '\r') { out[o++] = '\\'; out[o++] = 'r'; }
        else if (c < 0x20 || c == 0x7f) {
            memcpy(out + o, "\\u00", 4);
            out[o + 4] = hex[c >> 4];
            out[o + 5] = hex[c & 15];
            o += 6;
        } else if (c < 0x80) {
            out[o++] = (char)c;
        } else {                                 /* UTF-8 sequences are copied, stray bytes become U+FFFD */
            size_t len = c >= 0xc2 && c <= 0xdf ? 2 : c >= 0xe0 && c <= 0xef ? 3 : c >= 0xf0 && c <= 0xf4 ? 4 : 0;
            int good = len && i + len <= n;
            for (size_t k = 1; good && k < len; k++) good = ((unsigned char)s[i + k] & 0xc0) == 0x80;
            if (good) {
                memcpy(out + o, s + i, len);
                o += len;
                i += len - 1;
            } else {
                memcpy(out + o, "\\ufffd", 6);
                o += 6;
            }
        }
    }
    return o;
}

/* Appends "key":"escaped value" to line at *n (value skipped when NULL or empty). */
static void json_str(char *line, size_t *n, size_t cap, const char *key, const char *v, size_t vl)
{
    if (!v || !vl) return;
    int k = snprintf(line + *n, cap - *n, ",\"%s\":\"", key);
    if (k < 0 || (size_t)k >= cap - *n) return;
    *n += (size_t)k;
    *n += log_json_escape(line + *n, cap - *n - 2, v, vl);
    line[(*n)++] = '"';
}

static void write_line(char *line, size_t n)
{
    line[n++] = '\n';
    if (log_tap) { log_tap(line, (unsigned long)n, log_tap_ud); return; }
    ssize_t w = write(log_fd, line, n);
    (void)w;
}

void log_event(int level, const log_ctx *ctx, const char *msg, size_t msglen)
{
    if (level < log_level) return;
    char line[LINE_MAX_LEN];
    size_t cap = sizeof line - 2, n;              /* room for '}' and '\n' */
    if (log_format_json) {
        char t[LOG_TIME_LEN];
        log_time_iso(t);
        n = (size_t)snprintf(line, cap, "{\"time\":\"%s\",\"level\":\"%s\"", t, tags[level & 3]);
        json_str(line, &n, cap - 1024, "msg", msg, msglen);    /* keep room for the context */
        if (ctx) {
            json_str(line, &n, cap, "src", ctx->src, ctx->src ? strlen(ctx->src) : 0);
            json_str(line, &n, cap, "request_id", ctx->reqid, ctx->reqid ? strlen(ctx->reqid) : 0);
            json_str(line, &n, cap, "route", ctx->route, ctx->route ? strlen(ctx->route) : 0);
            json_str(line, &n, cap, "trace_id", ctx->trace_id, ctx->trace_id ? strlen(ctx->trace_id) : 0);
            if (ctx->fields && ctx->fields_len && n + ctx->fields_len < cap) {   /* pre-encoded ,"k":v members */
                memcpy(line + n, ctx->fields, ctx->fields_len);
                n += ctx->fields_len;
            }
        }
        line[n++] = '}';
    } else {
        struct timeval tv;
        gettimeofday(&tv, NULL);
        struct tm tm;
        localtime_r(&tv.tv_sec, &tm);
        n = strftime(line, cap, "%Y-%m-%dT%H:%M:%S", &tm);
        n += (size_t)snprintf(line + n, cap - n, ".%03ld [%s] ", (long)tv.tv_usec / 1000, tags[level & 3]);
        if (ctx && ctx->src) n += (size_t)snprintf(line + n, cap - n, "%s: ", ctx->src);
        if (n > cap) n = cap;
        size_t m = msglen < cap - n ? msglen : cap - n;
        memcpy(line + n, msg, m);
        n += m;
        if (ctx && ctx->fields && ctx->fields_len && n + ctx->fields_len < cap) {   /* pre-formatted " k=v" */
            memcpy(line + n, ctx->fields, ctx->fields_len);
            n += ctx->fields_len;
        }
    }
    write_line(line, n);
}

void log_msg(int level, const char *fmt, ...)
{
    if (level < log_level) return;
    char msg[LINE_MAX_LEN - 256];
    va_list ap;
    va_start(ap, fmt);
    int m = vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (m < 0) m = 0;
    if ((size_t)m >= sizeof msg) m = (int)sizeof msg - 1;
    log_event(level, NULL, msg, (size_t)m);
}

void log_raw(const char *line, unsigned long len)
{
    ssize_t w = write(log_fd, line, len);
    (void)w;
}
