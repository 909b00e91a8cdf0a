/* sseenc: the Server-Sent Events wire format: field lines, data split on CR/LF/CRLF, decimal ids. */
#ifndef SLUICE_SSEENC_H
#define SLUICE_SSEENC_H

#include <stddef.h>
#include <stdint.h>

/* Room for the longest id line, "id: " + 20 digits + "\n", rounded up. */
#define SSEENC_ID_MAX 25

/* Bytes sseenc_body needs for these fields (exact when retry_ms < 0, else an upper bound). */
size_t sseenc_body_len(size_t evlen, int retry_ms, const char *data, size_t datalen);
/* Writes "event: E\n" (when evlen), "retry: N\n" (when retry_ms >= 0), one "data: " line per
 * line of data (CR, LF and CRLF each end one) and the blank line; returns the bytes written.
 * out needs sseenc_body_len bytes. The event name must not contain CR or LF (not checked). */
size_t sseenc_body(char *out, const char *event, size_t evlen, int retry_ms, const char *data, size_t datalen);
/* Writes "id: <id>\n" to out (SSEENC_ID_MAX bytes of room); returns its length. */
size_t sseenc_id_line(char *out, uint64_t id);
/* Parses a Last-Event-ID / id override: 1..20 decimal digits, no sign or spaces, at most
 * UINT64_MAX. Returns 0 and sets *out, or -1. */
int sseenc_parse_id(const char *s, uint64_t *out);

#endif
