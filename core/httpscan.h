/* httpscan.h: strict RFC 9112 framing for core/http.c, byte by byte and without allocation:
 * the line grammar of a request's header block (everything http-parser 2.9 is lenient about:
 * bare CR or LF as line ends, obs-fold, whitespace before a colon, NUL and other controls,
 * sloppy request lines) and a chunked body decoder (chunk-size, chunk-ext, the CRLF after the
 * data, trailer lines). State lives in the caller's struct; decoded data goes to the caller's
 * buf. Layer L1 (protocol): knows bytes and limits, nothing of connections. */
#ifndef SLUICE_HTTPSCAN_H
#define SLUICE_HTTPSCAN_H

#include <stddef.h>
#include <stdint.h>

#include "buf.h"

/* A token method longer than this cannot be one http-parser knows: 501 at once. */
#define HTTPSCAN_METHOD_MAX 24
/* Most hex digits in a chunk-size (leading zeros included): 16 covers any 64-bit size. */
#define HTTPSCAN_CHUNK_DIGITS 16

typedef struct httpscan {
    uint8_t state;
    uint8_t vi;              /* position in "HTTP/d.d" */
    uint8_t mlen;            /* method bytes in method[] */
    uint8_t ndigits;         /* chunk-size digits so far */
    uint8_t in_block;        /* past the method: consumed bytes belong to the header block */
    char method[HTTPSCAN_METHOD_MAX];   /* a method split across reads */
    uint32_t bytes;          /* header block bytes so far, then header block + trailer section */
    uint32_t target;         /* request-target bytes */
    uint32_t lines;          /* header field lines */
    uint32_t ext;            /* chunk-extension bytes in this message */
    uint32_t lead;           /* after httpscan_head: consumed bytes before the header block */
    uint64_t size;           /* the chunk being read: declared size, then bytes left */
    size_t header_size, url_size, body_size;
    unsigned max_headers;
    int status;              /* on HS_ERROR: 400, 413, 414, 431 or 501 */
    const char *msg;         /* on HS_ERROR: a constant string */
} httpscan;

/* What httpscan_head() did with the bytes it consumed (*used of them). */
typedef enum httpscan_ev {
    HS_SKIP,      /* consumed, but not for http-parser: empty lines before the request, the method */
    HS_METHOD,    /* a method that began in an earlier read is complete in method[0..mlen):
                   * hand it to http-parser before what follows (a method within one read is
                   * handed on with the rest, see lead) */
    HS_FEED,      /* all n bytes are valid; those from lead on belong to the header block
                   * (before lead: empty lines): hand them on */
    HS_HEAD_END,  /* the header block is complete, through its final LF: hand on the bytes
                   * from lead to *used */
    HS_ERROR,     /* status and msg say why; the connection must close. The *used bytes before
                   * the offending one were valid: when in_block is set those from lead on are
                   * header-block bytes, which the caller hands on first (an error there comes
                   * earlier in the stream) */
} httpscan_ev;

typedef enum httpscan_body {
    HB_MORE,      /* consumed everything, the body goes on */
    HB_DONE,      /* the last chunk and the trailer section are complete (*used bytes) */
    HB_ERROR,     /* status and msg say why */
} httpscan_body;

/* Prepares s for a new message with these limits (a header block over header_size gets 431, a
 * request-target over url_size 414, more than max_headers lines 431, a body over body_size 413). */
void httpscan_begin(httpscan *s, size_t header_size, size_t url_size, unsigned max_headers, size_t body_size);
/* Validates the next bytes of a header block (request line, field lines, final CRLF). The result
 * never depends on how the bytes were split across calls. */
httpscan_ev httpscan_head(httpscan *s, const char *p, size_t n, size_t *used);
/* Call once the header block was accepted and the body is chunked. */
void httpscan_chunked_begin(httpscan *s);
/* Decodes chunked framing from p[0..n), appending chunk data to body (trailers are checked and
 * dropped; their bytes count with the header block against header_size). */
httpscan_body httpscan_chunked(httpscan *s, const char *p, size_t n, size_t *used, buf *body);

#endif
