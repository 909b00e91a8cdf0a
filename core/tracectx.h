/* tracectx.h: W3C Trace Context (traceparent) for a request: parse the incoming header, or start a
 * new trace, and give the request its own span id for logs and for outbound calls.
 *
 * Layer L1: plain C, no I/O. Ids are kept as lower-case hex text, the form logs and headers use. */
#ifndef SLUICE_TRACECTX_H
#define SLUICE_TRACECTX_H

#include <stddef.h>
#include <stdint.h>

#define TRACEPARENT_LEN 55          /* "00-" 32 hex "-" 16 hex "-" 2 hex */

typedef struct tracectx {
    char trace_id[33];              /* the trace this request belongs to */
    char parent_id[17];             /* the caller's span ("" when the trace started here) */
    char span_id[17];               /* this request's span */
    uint8_t flags;                  /* trace-flags (bit 0: sampled), kept from the caller */
} tracectx;

/* Parses a traceparent value (version 00, or a later version read as 00 as the spec asks):
 * 0 and trace_id, parent_id, flags set; -1 when it is malformed (all-zero ids, upper case,
 * version ff, wrong length). span_id is not touched. */
int tracectx_parse(tracectx *t, const char *v, size_t n);
/* For a request: continues the trace of a valid header (v may be NULL), else starts a new one
 * with a random trace id; always draws a new span id. Random ids come from a per-thread
 * generator seeded from the OS (not for secrets). */
void tracectx_begin(tracectx *t, const char *v, size_t n);
/* The traceparent to send on an outbound call made while handling the request: this request's
 * span becomes the callee's parent. Writes TRACEPARENT_LEN characters and a NUL to out. */
size_t tracectx_traceparent(const tracectx *t, char out[TRACEPARENT_LEN + 1]);

#endif
