/* multipart.h: bounded, allocation-free multipart/form-data parser over a body already in memory (RFC 7578/2046). */
#ifndef SLUICE_MULTIPART_H
#define SLUICE_MULTIPART_H

#include <stddef.h>

/*
 * Rules:
 * - Boundary from the Content-Type "boundary" parameter (quoted or not), 1..70
 *   characters of the RFC 2046 bchars set, no trailing space.
 * - Preamble and epilogue are ignored. A delimiter is "--boundary" at the start of
 *   the body or after a line break, followed by optional spaces/tabs and CRLF (or a
 *   bare LF: lenient for hand-written clients), or by "--" (the close delimiter).
 *   "--boundary" followed by anything else is data. The line break before a
 *   delimiter belongs to it, not to the data.
 * - Each part needs Content-Disposition: form-data; name="..." (RFC 7578 4.2).
 *   Header names are case-insensitive; folded lines are accepted; other headers
 *   are ignored. At most MULTIPART_MAX_HEADER bytes of headers per part.
 * - Quoted strings: '\"' and '\\' are unescaped; any other backslash is kept
 *   literally (old browsers send raw "C:\dir\file" paths). filename* (RFC 5987
 *   ext-value) wins over filename when its charset is UTF-8 or US-ASCII; other
 *   charsets are ignored. A decoded NUL is an error.
 *   Filenames are reduced to what follows the last '/' or '\'; "." and ".." become "".
 *   Percent sequences in plain filename= (browsers write %22 for '"') are left as sent.
 * - Strings that need no unescaping point into the body; the others are written to
 *   the caller's scratch buffer. Nothing is allocated.
 * - Missing close delimiter, truncated headers, too many parts, oversized headers
 *   -> error. Errors are constant strings fit for a 400 body.
 */

#define MULTIPART_MAX_BOUNDARY 70
#define MULTIPART_MAX_HEADER 8192 /* header bytes per part */

typedef struct multipart_part {
    const char *name;         /* form field name, never NULL (may be "" only if sent so) */
    size_t name_len;
    const char *filename;     /* NULL when the part is not a file; "" for an empty file input */
    size_t filename_len;
    const char *content_type; /* NULL when absent (RFC 7578: text/plain) */
    size_t content_type_len;
    const char *data;         /* points into the body */
    size_t data_len;
} multipart_part;

/* Boundary of a multipart/form-data Content-Type value: its length (1..70) with
 * *boundary pointing into content_type; 0 for another type or a missing/invalid boundary. */
size_t multipart_boundary(const char *content_type, const char **boundary);

/* Parse body into at most max_parts parts. Strings are not NUL-terminated; they point
 * into body or into scratch (scratch_cap = 4096 is plenty for real forms; running out
 * is an error). Returns 0 and *nparts, or -1 with *err set; parts are then undefined. */
int multipart_parse(const char *content_type, const char *body, size_t len, multipart_part *parts,
                    size_t max_parts, size_t *nparts, char *scratch, size_t scratch_cap,
                    const char **err);

#endif
