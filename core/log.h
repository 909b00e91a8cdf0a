/* log.h: the error log (levels, to stderr or a file) and the access log line writer. */
#ifndef SLUICE_LOG_H
#define SLUICE_LOG_H

enum { LOG_DEBUG, LOG_INFO, LOG_WARN, LOG_ERROR };

/* Sets the minimum level written (from config: log.level). */
void log_set_level(int level);
/* Redirects the log to a file (NULL: stderr); returns -1 when the file cannot be opened. */
int log_set_file(const char *path);
/* Writes one line "<time> [level] message" when level is enabled; thread-safe (one write per line). */
void log_msg(int level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Hands every line log_msg writes to tap(line, len, ud) instead of the log file (the spec
 * runner keeps each test's server log and shows it under a failing test); NULL restores
 * the file. Set it before worker threads start: the pointer is not synchronized. */
void log_set_tap(void (*tap)(const char *line, unsigned long len, void *ud), void *ud);
/* Writes a pre-formatted line (access log) as is. */
void log_raw(const char *line, unsigned long len);
/* Parses "debug"/"info"/"warn"/"error"; -1 when unknown. */
int log_level_parse(const char *s);

#endif
