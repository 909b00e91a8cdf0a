/* log.h: the error log (levels, text or JSON lines, to stderr or a file) and the access log line writer. */
#ifndef SLUICE_LOG_H
#define SLUICE_LOG_H

#include <stddef.h>

enum { LOG_DEBUG, LOG_INFO, LOG_WARN, LOG_ERROR };

#define LOG_TIME_LEN 32

/* Sets the minimum level written (from config: log.level). */
void log_set_level(int level);
/* 1: every line is a JSON object (log.format = "json"); 0: text lines. */
void log_set_format(int json);
int log_json(void);
/* 1 when lines of this level are written. */
int log_enabled(int level);
/* Redirects the log to a file (NULL: stderr); returns -1 when the file cannot be opened. */
int log_set_file(const char *path);

/* What a line is about, when it belongs to a request or a script call. Every member may be
 * NULL. fields are pre-encoded: `,"k":v,...` members in JSON mode, ` k=v ...` in text mode. */
typedef struct log_ctx {
    const char *src;        /* "scripts/app.lua:12" */
    const char *reqid, *route, *trace_id;
    const char *fields;
    size_t fields_len;
} log_ctx;

/* Writes one line when level is enabled; thread-safe (one write per line). Text:
 * "<local time> [level] src: msg fields"; JSON: {"time":"<UTC ISO-8601>","level":...,"msg":...,
 * "src":...,"request_id":...,"route":...,"trace_id":...,<fields>}. */
void log_event(int level, const log_ctx *ctx, const char *msg, size_t msglen);
/* log_event without context, printf-style. */
void log_msg(int level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Hands every line log_event and log_msg write to tap(line, len, ud) instead of the log file
 * (the spec runner keeps each test's server log and shows it under a failing test); NULL
 * restores the file. Set it before worker threads start: the pointer is not synchronized. */
void log_set_tap(void (*tap)(const char *line, unsigned long len, void *ud), void *ud);
/* Writes a pre-formatted line (access log) as is. */
void log_raw(const char *line, unsigned long len);
/* Parses "debug"/"info"/"warn"/"error"; -1 when unknown. */
int log_level_parse(const char *s);

/* "2026-01-31T23:59:59.123Z" (UTC, milliseconds); returns the length. */
size_t log_time_iso(char out[LOG_TIME_LEN]);
/* Writes s as the inside of a JSON string (quotes and backslashes escaped, control characters
 * as \uXXXX) into out, stopping before cap; returns the bytes written. Bytes >= 0x80 are copied. */
size_t log_json_escape(char *out, size_t cap, const char *s, size_t n);

#endif
