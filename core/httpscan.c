/* httpscan.c: strict header-block line grammar and chunked decoding (RFC 9112 2-7), see httpscan.h.
 * Every check happens at a fixed byte position, so the verdict on an input never depends on
 * how it was split into reads; the limits are enforced by never scanning past what they allow. */
#include "httpscan.h"

#include <string.h>

enum { K_TCHAR = 1, K_VCHAR = 2, K_FIELD = 4, K_HEX = 8, K_QDTEXT = 16, K_QPAIR = 32 };
static unsigned char cls[256];

__attribute__((constructor)) static void init_classes(void)
{
    for (int c = 0; c < 256; c++) {
        unsigned char k = 0;
        int vchar = c >= 0x21 && c <= 0x7e, obs = c >= 0x80, ws = c == ' ' || c == '\t';
        if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
            (c && strchr("!#$%&'*+-.^_`|~", c) != NULL))
            k |= K_TCHAR;
        if (vchar) k |= K_VCHAR;
        if (vchar || obs || ws) k |= K_FIELD | K_QPAIR;   /* field-vchar, SP, HTAB */
        if ((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F')) k |= K_HEX;
        if ((vchar || obs || ws) && c != '"' && c != '\\') k |= K_QDTEXT;
        cls[c] = k;
    }
}

enum {
    /* request line */
    S_START, S_START_LF, S_METHOD, S_SP1, S_TARGET0, S_TARGET, S_VERSION, S_RL_CR, S_RL_LF,
    /* field lines: the header block's, then the trailer section's */
    L_LINE0, L_NAME, L_VALUE, L_VALUE_LF, L_END_LF,
    /* chunked body */
    C_SIZE0, C_SIZE, C_SIZE_LF, C_DATA, C_DATA_CR, C_DATA_LF,
    C_BWS, C_NAME0, C_NAME, C_NAME_BWS, C_VAL0, C_TOK, C_QS, C_QP, C_QEND,   /* chunk-ext */
};

static const char MSG_BARE_LF[] = "bare LF as a line end (CRLF required)";
static const char MSG_BARE_CR[] = "bare CR (not followed by LF)";
static const char MSG_RLINE[] = "malformed request line";
static const char MSG_EXT[] = "invalid chunk extension";

static int scan_fail(httpscan *s, int status, const char *msg)
{
    s->status = status;
    s->msg = msg;
    return -1;
}

void httpscan_begin(httpscan *s, size_t header_size, size_t url_size, unsigned max_headers, size_t body_size)
{
    s->state = S_START;
    s->vi = s->mlen = s->ndigits = s->in_block = 0;
    s->bytes = s->target = s->lines = s->ext = 0;
    s->size = 0;
    s->header_size = header_size;
    s->url_size = url_size;
    s->max_headers = max_headers;
    s->body_size = body_size;
    s->status = 0;
    s->msg = NULL;
}

/* SWAR: eight bytes at a time through the long runs (values, targets). below() can flag a
 * byte above a true hit as well, never one before it: so on little-endian the lowest flagged
 * byte is the first that ends the run, found without going byte by byte. */
#define ONES 0x0101010101010101ull
#define HIGHS 0x8080808080808080ull
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
#define SWAR 1
#else
#define SWAR 0
#endif
static inline uint64_t load8(const unsigned char *p)
{
    uint64_t x;
    memcpy(&x, p, 8);
    return x;
}
/* the high bit of each byte of x below n (n <= 128), and maybe of bytes after one */
static inline uint64_t below(uint64_t x, unsigned n) { return (x - ONES * n) & ~x & HIGHS; }
static inline uint64_t is_del(uint64_t x) { return below(x ^ (ONES * 0x7f), 1); }

/* Index of the first byte from i that is not field-vchar / SP / HTAB. */
static inline size_t skip_field(const unsigned char *p, size_t i, size_t n)
{
    while (SWAR && n - i >= 8) {
        uint64_t x = load8(p + i), m = below(x, 0x20) | is_del(x);
        if (!m) { i += 8; continue; }
        i += (size_t)__builtin_ctzll(m) >> 3;
        if (p[i] != '\t') return i;
        i++;                    /* HTAB is allowed in a value */
    }
    while (i < n && (cls[p[i]] & K_FIELD)) i++;
    return i;
}

/* Index of the first byte from i (before stop) that is not VCHAR. */
static inline size_t skip_vchar(const unsigned char *p, size_t i, size_t stop)
{
    while (SWAR && stop - i >= 8) {
        uint64_t x = load8(p + i), m = below(x, 0x21) | is_del(x) | (x & HIGHS);
        if (m) return i + ((size_t)__builtin_ctzll(m) >> 3);
        i += 8;
    }
    while (i < stop && (cls[p[i]] & K_VCHAR)) i++;
    return i;
}

/* Field lines up to and including the empty line that ends them: advances *pos through p[0..n)
 * (to n, or past the final LF with *end set, or to the offending byte on an error, -1). The
 * states fall through to each other, so a whole line costs no dispatch. */
static int scan_lines(httpscan *s, const unsigned char *p, size_t n, size_t *pos, int trailer, int *end)
{
    size_t i = *pos;
    int rc = 0;
    while (i < n && !rc) {
        unsigned c = p[i];
        switch (s->state) {
        case L_LINE0:
            if (c == '\r') { s->state = L_END_LF; i++; break; }
            if (!(cls[c] & K_TCHAR)) {
                /* RFC 9112 5.2: obs-fold may be rejected, and 2.2: so may whitespace after the
                 * start line; a proxy that unfolds differently would see other headers */
                rc = scan_fail(s, 400, c == ' ' || c == '\t' ? "obs-fold (a line starting with whitespace) is not accepted"
                                     : c == '\n' ? MSG_BARE_LF : c == 0 ? "NUL in request" : "invalid character in header name");
                break;
            }
            if (!trailer && ++s->lines > s->max_headers) { rc = scan_fail(s, 431, "too many request headers"); break; }
            s->state = L_NAME;
            i++;
            /* fall through */
        case L_NAME:
            while (i < n && (cls[p[i]] & K_TCHAR)) i++;
            if (i == n) break;
            c = p[i];
            if (c != ':') {
                rc = scan_fail(s, 400, c == ' ' || c == '\t' ? "whitespace between header name and colon"
                                     : c == '\r' || c == '\n' ? "header line without a colon" : "invalid character in header name");
                break;
            }
            s->state = L_VALUE;
            i++;
            /* fall through */
        case L_VALUE:
            i = skip_field(p, i, n);
            if (i == n) break;
            c = p[i];
            if (c != '\r') {
                rc = scan_fail(s, 400, c == '\n' ? MSG_BARE_LF : c == 0 ? "NUL in request" : "control character in header value");
                break;
            }
            s->state = L_VALUE_LF;
            if (++i == n) break;
            c = p[i];
            /* fall through */
        case L_VALUE_LF:
            if (c != '\n') { rc = scan_fail(s, 400, MSG_BARE_CR); break; }
            s->state = L_LINE0;
            i++;
            break;
        case L_END_LF:
            if (c != '\n') { rc = scan_fail(s, 400, MSG_BARE_CR); break; }
            *end = 1;
            *pos = i + 1;
            return 0;
        default:
            rc = scan_fail(s, 500, "httpscan: bad state");
        }
    }
    *pos = i;
    return rc;
}

/* Empty lines before the request line (RFC 9112 2.2: ignored) and the method, which is held
 * here until its SP shows it is a whole token: http-parser would reject an unknown method at
 * its first unexpected letter, and an unknown but well-formed method is a 501, not a 400. */
static httpscan_ev scan_start(httpscan *s, const unsigned char *p, size_t n, size_t *used)
{
    size_t i = 0;
    while (i < n) {
        unsigned c = p[i];
        if (s->state == S_START) {
            if (c == '\r') { s->state = S_START_LF; i++; continue; }
            if (!(cls[c] & K_TCHAR)) {
                *used = i;
                scan_fail(s, 400, c == '\n' ? MSG_BARE_LF : c == 0 ? "NUL in request" : MSG_RLINE);
                return HS_ERROR;
            }
            s->state = S_METHOD;
            s->mlen = 0;
        } else if (s->state == S_START_LF) {
            if (c != '\n') { *used = i; scan_fail(s, 400, MSG_BARE_CR); return HS_ERROR; }
            s->state = S_START;
            i++;
            continue;
        }
        /* method[] keeps only what the caller cannot find in this read's bytes */
        size_t j = i, had = s->mlen, room = HTTPSCAN_METHOD_MAX - had, stop = n - i > room ? i + room : n;
        while (j < stop && (cls[p[j]] & K_TCHAR)) j++;
        s->mlen = (uint8_t)(had + (j - i));
        if (j < n && s->mlen == HTTPSCAN_METHOD_MAX && (cls[p[j]] & K_TCHAR)) {
            *used = j;
            scan_fail(s, 501, "method not implemented");
            return HS_ERROR;
        }
        if (j == n || had) memcpy(s->method + had, p + i, j - i);
        i = j;
        if (i == n) break;
        *used = i;
        if (p[i] != ' ') { scan_fail(s, 400, p[i] == 0 ? "NUL in request" : MSG_RLINE); return HS_ERROR; }
        s->state = S_SP1;
        s->in_block = 1;
        s->bytes = s->mlen;
        return HS_METHOD;
    }
    *used = n;
    return HS_SKIP;
}

httpscan_ev httpscan_head(httpscan *s, const char *data, size_t n, size_t *used)
{
    const unsigned char *p = (const unsigned char *)data;
    size_t i = 0;
    s->lead = 0;
    if (s->state < S_SP1) {
        httpscan_ev ev = scan_start(s, p, n, used);
        if (ev != HS_METHOD || *used < s->mlen) return ev;
        i = *used;              /* the method is in these bytes: go on with the block */
        s->lead = (uint32_t)(i - s->mlen);
    }
    size_t from = i;
    /* never look past the header_size budget: a block over it is a 431 at that byte */
    size_t room = s->header_size > s->bytes ? s->header_size - s->bytes : 0;
    size_t lim = n - i < room ? n : i + room;
    int end = 0;
    while (i < lim && !end) {
        unsigned c = p[i];
        /* the states fall through to each other: a whole request line costs no dispatch */
        switch (s->state) {
        case S_SP1:             /* the SP after the method (HS_METHOD stopped before it) */
            s->state = S_TARGET0;
            if (++i == lim) break;
            c = p[i];
            /* fall through */
        case S_TARGET0:
            if (!(cls[c] & K_VCHAR)) {
                *used = i;
                scan_fail(s, 400, c == ' ' ? "more than one space in the request line" : c == 0 ? "NUL in request" : MSG_RLINE);
                return HS_ERROR;
            }
            s->state = S_TARGET;
            /* fall through */
        case S_TARGET: {
            /* at most url_size bytes: the byte after them is the 414, at its own offset */
            size_t stop = lim - i > s->url_size - s->target ? i + (s->url_size - s->target) : lim;
            size_t j = skip_vchar(p, i, stop);
            s->target += (uint32_t)(j - i);
            i = j;
            *used = i;
            if (i == lim) break;
            c = p[i];
            if (s->target == s->url_size && (cls[c] & K_VCHAR)) { scan_fail(s, 414, "URI too long"); return HS_ERROR; }
            if (c != ' ') {
                scan_fail(s, 400, c == '\r' || c == '\n' ? "request line without an HTTP version"
                                : c == 0 ? "NUL in request" : "invalid character in request target");
                return HS_ERROR;
            }
            s->state = S_VERSION;
            s->vi = 0;
            if (++i == lim) break;
            c = p[i];
        }
            /* fall through */
        case S_VERSION: {
            static const char pat[] = "HTTP/d.d";
            if (s->vi == 0 && lim - i >= 8 && memcmp(p + i, "HTTP/", 5) == 0 && p[i + 5] >= '0' &&
                p[i + 5] <= '9' && p[i + 6] == '.' && p[i + 7] >= '0' && p[i + 7] <= '9') {
                i += 8;             /* the whole version at once: the usual case */
            } else {
                char want = pat[s->vi];
                if (want == 'd' ? !(c >= '0' && c <= '9') : c != (unsigned char)want) {
                    *used = i;
                    scan_fail(s, 400, c == ' ' ? "more than one space in the request line" : "invalid HTTP version");
                    return HS_ERROR;
                }
                i++;
                if (++s->vi < 8) break;
            }
            s->state = S_RL_CR;
            if (i == lim) break;
            c = p[i];
        }
            /* fall through */
        case S_RL_CR:
            if (c != '\r') {
                *used = i;
                scan_fail(s, 400, c == '\n' ? MSG_BARE_LF : c == ' ' ? "text after the HTTP version" : "invalid HTTP version");
                return HS_ERROR;
            }
            s->state = S_RL_LF;
            if (++i == lim) break;
            c = p[i];
            /* fall through */
        case S_RL_LF:
            if (c != '\n') { *used = i; scan_fail(s, 400, MSG_BARE_CR); return HS_ERROR; }
            s->state = L_LINE0;
            i++;
            /* fall through */
        default:
            if (scan_lines(s, p, lim, &i, 0, &end)) { *used = i; return HS_ERROR; }
        }
    }
    s->bytes += (uint32_t)(i - from);
    *used = i;
    if (end) return HS_HEAD_END;
    if (i < n) { scan_fail(s, 431, "request header block too large"); return HS_ERROR; }
    return HS_FEED;
}

void httpscan_chunked_begin(httpscan *s)
{
    s->state = C_SIZE0;
    s->ext = 0;
    s->size = 0;
    s->ndigits = 0;
}

static int hex_digit(unsigned c)
{
    return c <= '9' ? (int)c - '0' : (int)(c | 0x20) - 'a' + 10;
}

httpscan_body httpscan_chunked(httpscan *s, const char *data, size_t n, size_t *used, buf *body)
{
    const unsigned char *p = (const unsigned char *)data;
    size_t i = 0;
    int bad = 0;
    while (i < n && !bad) {
        unsigned c = p[i];
        /* chunk-ext bytes: bounded per message, like a header block */
        if (s->state >= C_BWS && ++s->ext > s->header_size) { bad = scan_fail(s, 400, "chunk extensions too long"); break; }
        int ws = c == ' ' || c == '\t';
        switch (s->state) {
        case C_SIZE0:
            if (!(cls[c] & K_HEX)) { bad = scan_fail(s, 400, "invalid chunk size"); break; }
            s->size = 0;
            s->ndigits = 0;
            s->state = C_SIZE;
            break;
        case C_SIZE:
            if (cls[c] & K_HEX) {
                if (++s->ndigits > HTTPSCAN_CHUNK_DIGITS) { bad = scan_fail(s, 400, "chunk size has too many digits"); break; }
                s->size = s->size * 16 + (uint64_t)hex_digit(c);      /* bounded below: no overflow */
                if (s->size > s->body_size - body->len) { bad = scan_fail(s, 413, "request body too large"); break; }
                i++;
            } else if (c == '\r') { s->state = C_SIZE_LF; i++; }
            else if (c == ';') { s->state = C_NAME0; i++; }
            else if (ws) { s->state = C_BWS; i++; }
            else bad = scan_fail(s, 400, "invalid chunk size");
            break;
        case C_SIZE_LF:
            if (c != '\n') { bad = scan_fail(s, 400, MSG_BARE_CR); break; }
            s->state = s->size ? C_DATA : L_LINE0;
            i++;
            break;
        case C_DATA: {
            size_t take = n - i < s->size ? n - i : (size_t)s->size;
            if (buf_append(body, p + i, take)) { bad = scan_fail(s, 500, "out of memory"); break; }
            s->size -= take;
            i += take;
            if (!s->size) s->state = C_DATA_CR;
            break;
        }
        case C_DATA_CR:
            if (c != '\r') { bad = scan_fail(s, 400, "chunk data not followed by CRLF"); break; }
            s->state = C_DATA_LF;
            i++;
            break;
        case C_DATA_LF:
            if (c != '\n') { bad = scan_fail(s, 400, "chunk data not followed by CRLF"); break; }
            s->state = C_SIZE0;
            i++;
            break;
        /* chunk-ext = *( BWS ";" BWS ext-name [ BWS "=" BWS ( token / quoted-string ) ] ) */
        case C_BWS:             /* whitespace is only allowed before a ';' here */
            if (c == ';') s->state = C_NAME0;
            else if (!ws) bad = scan_fail(s, 400, MSG_EXT);
            i++;
            break;
        case C_NAME0:
            if (cls[c] & K_TCHAR) s->state = C_NAME;
            else if (!ws) bad = scan_fail(s, 400, MSG_EXT);
            i++;
            break;
        case C_NAME:
            if (c == '\r') s->state = C_SIZE_LF;
            else if (c == '=') s->state = C_VAL0;
            else if (c == ';') s->state = C_NAME0;
            else if (ws) s->state = C_NAME_BWS;
            else if (!(cls[c] & K_TCHAR)) bad = scan_fail(s, 400, MSG_EXT);
            i++;
            break;
        case C_NAME_BWS:
            if (c == '=') s->state = C_VAL0;
            else if (c == ';') s->state = C_NAME0;
            else if (!ws) bad = scan_fail(s, 400, MSG_EXT);
            i++;
            break;
        case C_VAL0:
            if (c == '"') s->state = C_QS;
            else if (cls[c] & K_TCHAR) s->state = C_TOK;
            else if (!ws) bad = scan_fail(s, 400, MSG_EXT);
            i++;
            break;
        case C_TOK:
            if (c == '\r') s->state = C_SIZE_LF;
            else if (c == ';') s->state = C_NAME0;
            else if (ws) s->state = C_BWS;
            else if (!(cls[c] & K_TCHAR)) bad = scan_fail(s, 400, MSG_EXT);
            i++;
            break;
        case C_QS:
            if (c == '"') s->state = C_QEND;
            else if (c == '\\') s->state = C_QP;
            else if (!(cls[c] & K_QDTEXT))
                bad = scan_fail(s, 400, c == '\r' || c == '\n' ? "unterminated quoted string in chunk extension" : MSG_EXT);
            i++;
            break;
        case C_QP:
            if (cls[c] & K_QPAIR) s->state = C_QS;
            else bad = scan_fail(s, 400, MSG_EXT);
            i++;
            break;
        case C_QEND:
            if (c == '\r') s->state = C_SIZE_LF;
            else if (c == ';') s->state = C_NAME0;
            else if (ws) s->state = C_BWS;
            else bad = scan_fail(s, 400, MSG_EXT);
            i++;
            break;
        default: {              /* the trailer section: checked like header lines, then dropped */
            size_t room = s->header_size > s->bytes ? s->header_size - s->bytes : 0;
            size_t lim = n - i > room ? i + room : n, from = i;
            int end = 0;
            bad = scan_lines(s, p, lim, &i, 1, &end);
            s->bytes += (uint32_t)(i - from);
            if (bad) break;
            if (end) { *used = i; return HB_DONE; }
            if (i < n) bad = scan_fail(s, 431, "trailer section too large");
        }
        }
    }
    *used = i;
    return bad ? HB_ERROR : HB_MORE;
}
