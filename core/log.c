/* log.c: line-at-a-time logging; each line is one write(2) so threads never interleave. */
#include "log.h"

#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

static int log_level = LOG_INFO;
static int log_fd = 2;
static void (*log_tap)(const char *line, unsigned long len, void *ud);
static void *log_tap_ud;

void log_set_tap(void (*tap)(const char *line, unsigned long len, void *ud), void *ud)
{
    log_tap = tap;
    log_tap_ud = ud;
}

void log_set_level(int level) { log_level = level; }

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
    static const char *names[] = {"debug", "info", "warn", "error"};
    for (int i = 0; i < 4; i++) if (strcmp(s, names[i]) == 0) return i;
    return -1;
}

void log_msg(int level, const char *fmt, ...)
{
    if (level < log_level) return;
    static const char *tags[] = {"debug", "info", "warn", "error"};
    char line[4096];
    struct timeval tv;
    gettimeofday(&tv, NULL);
    struct tm tm;
    localtime_r(&tv.tv_sec, &tm);
    int n = (int)strftime(line, sizeof line, "%Y-%m-%dT%H:%M:%S", &tm);
    n += snprintf(line + n, sizeof line - (size_t)n, ".%03ld [%s] ", (long)tv.tv_usec / 1000, tags[level & 3]);
    va_list ap;
    va_start(ap, fmt);
    int m = vsnprintf(line + n, sizeof line - (size_t)n - 1, fmt, ap);
    va_end(ap);
    if (m < 0) m = 0;
    n += m;
    if (n > (int)sizeof line - 2) n = (int)sizeof line - 2;
    line[n++] = '\n';
    if (log_tap) { log_tap(line, (unsigned long)n, log_tap_ud); return; }
    ssize_t w = write(log_fd, line, (size_t)n);
    (void)w;
}

void log_raw(const char *line, unsigned long len)
{
    ssize_t w = write(log_fd, line, len);
    (void)w;
}
