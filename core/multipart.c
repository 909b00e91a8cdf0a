/* multipart.c: multipart/form-data parsing over an in-memory body; parts point into the body, nothing is allocated. */
#include "multipart.h"

#include <string.h>
#include <strings.h>

typedef struct span {
    const char *p;
    size_t n;
} span;

/* Scratch space for the few strings that must be unescaped. */
typedef struct scratch {
    char *buf;
    size_t cap, used;
} scratch;

static int lower(int c) { return (c >= 'A' && c <= 'Z') ? c + 32 : c; }

static int ieq(span s, const char *lit)
{
    size_t n = strlen(lit);
    if (s.n != n) return 0;
    for (size_t i = 0; i < n; i++)
        if (lower((unsigned char)s.p[i]) != lit[i]) return 0;
    return 1;
}

/* Header values may be folded, so CR and LF count as whitespace inside them. */
static int is_ws(int c) { return c == ' ' || c == '\t' || c == '\r' || c == '\n'; }

static const char *skip_ws(const char *p, const char *end)
{
    while (p < end && is_ws((unsigned char)*p)) p++;
    return p;
}

static int is_tchar(int c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
           (c && strchr("!#$%&'*+-.^_`|~", c));
}

/* RFC 2046 bchars. */
static int is_bchar(int c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
           (c && strchr("'()+_,-./:=? ", c));
}

typedef struct param {
    span name, val;
    int quoted;
} param;

/* Next "; name=value" in [*pp, end). 1 found, 0 at end, -1 malformed. */
static int next_param(const char **pp, const char *end, param *out)
{
    const char *p = skip_ws(*pp, end);
    for (;;) { /* tolerate empty parameters: ";;" */
        if (p == end) return 0;
        if (*p != ';') return -1;
        p = skip_ws(p + 1, end);
        if (p < end && *p != ';') break;
    }
    const char *n = p;
    while (p < end && is_tchar((unsigned char)*p)) p++;
    out->name = (span){n, (size_t)(p - n)};
    p = skip_ws(p, end);
    if (out->name.n == 0 || p == end || *p != '=') return -1;
    p = skip_ws(p + 1, end);
    if (p < end && *p == '"') {
        const char *v = ++p;
        for (;; p++) {
            if (p == end || *p == '\r' || *p == '\n' || *p == '\0') return -1;
            if (*p == '"') break;
            if (*p == '\\' && p + 1 < end && (p[1] == '"' || p[1] == '\\')) p++;
        }
        out->val = (span){v, (size_t)(p - v)};
        out->quoted = 1;
        p++;
    } else {
        const char *v = p;
        while (p < end && *p != ';' && !is_ws((unsigned char)*p) && *p != '\0' && *p != '"') p++;
        out->val = (span){v, (size_t)(p - v)};
        out->quoted = 0;
        if (out->val.n == 0) return -1;
    }
    *pp = p;
    return 1;
}

/* Value of a quoted string without its escapes; in place when there are none. */
static int unquote(param *pr, scratch *sc, span *out)
{
    if (!pr->quoted || !memchr(pr->val.p, '\\', pr->val.n)) {
        *out = pr->val;
        return 0;
    }
    if (sc->cap - sc->used < pr->val.n) return -1;
    char *o = sc->buf + sc->used, *start = o;
    for (size_t i = 0; i < pr->val.n; i++) {
        char c = pr->val.p[i];
        if (c == '\\' && i + 1 < pr->val.n && (pr->val.p[i + 1] == '"' || pr->val.p[i + 1] == '\\')) c = pr->val.p[++i];
        *o++ = c;
    }
    *out = (span){start, (size_t)(o - start)};
    sc->used += out->n;
    return 0;
}

static int hexval(int c)
{
    if (c >= '0' && c <= '9') return c - '0';
    c = lower(c);
    return (c >= 'a' && c <= 'f') ? c - 'a' + 10 : -1;
}

/* RFC 5987 ext-value "UTF-8'lang'%e2%82%ac.txt". 1 decoded, 0 ignored (other charset,
 * bad syntax), -1 error (decoded NUL or scratch full). */
static int ext_value(span v, scratch *sc, span *out)
{
    const char *q1 = memchr(v.p, '\'', v.n);
    if (!q1) return 0;
    span cs = {v.p, (size_t)(q1 - v.p)};
    if (!ieq(cs, "utf-8") && !ieq(cs, "us-ascii")) return 0;
    const char *end = v.p + v.n, *q2 = memchr(q1 + 1, '\'', (size_t)(end - q1 - 1));
    if (!q2) return 0;
    const char *s = q2 + 1;
    if (s == end) return 0; /* empty: nothing to prefer over filename= */
    if (sc->cap - sc->used < (size_t)(end - s)) return -1;
    char *o = sc->buf + sc->used, *start = o;
    while (s < end) {
        int c = (unsigned char)*s++;
        if (c == '%') {
            int hi, lo;
            if (end - s < 2 || (hi = hexval(s[0])) < 0 || (lo = hexval(s[1])) < 0) return 0;
            c = hi << 4 | lo;
            s += 2;
            if (c == 0) return -1;
        }
        *o++ = (char)c;
    }
    *out = (span){start, (size_t)(o - start)};
    sc->used += out->n;
    return 1;
}

/* Keep what follows the last '/' or '\\': a client's directory layout is not ours. */
static span basename_of(span f)
{
    size_t i = f.n;
    while (i > 0 && f.p[i - 1] != '/' && f.p[i - 1] != '\\') i--;
    span b = {f.p + i, f.n - i};
    if ((b.n == 1 && b.p[0] == '.') || (b.n == 2 && b.p[0] == '.' && b.p[1] == '.')) b.n = 0;
    return b;
}

size_t multipart_boundary(const char *ct, const char **boundary)
{
    if (!ct) return 0;
    const char *end = ct + strlen(ct), *p = skip_ws(ct, end), *t = p;
    while (p < end && *p != ';' && !is_ws((unsigned char)*p)) p++;
    if (!ieq((span){t, (size_t)(p - t)}, "multipart/form-data")) return 0;
    param pr;
    int r;
    while ((r = next_param(&p, end, &pr)) == 1) {
        if (!ieq(pr.name, "boundary")) continue;
        span b = pr.val;
        if (b.n < 1 || b.n > MULTIPART_MAX_BOUNDARY || b.p[b.n - 1] == ' ') return 0;
        for (size_t i = 0; i < b.n; i++)
            if (!is_bchar((unsigned char)b.p[i])) return 0;
        *boundary = b.p;
        return b.n;
    }
    return 0;
}

/* Find the delimiter "--boundary" at or after from, at the body start or after a LF,
 * followed by "--" (close: returns 2) or [ \t]* and a line break (returns 1).
 * *dstart: where the preceding data ends (the line break before it excluded);
 * *next: first byte after the delimiter line. 0 when there is none. */
static int find_delim(const char *body, size_t len, size_t from, const char *d, size_t dl,
                      size_t *dstart, size_t *next)
{
    while (from + dl <= len) {
        const char *m = memmem(body + from, len - from, d, dl);
        if (!m) return 0;
        size_t i = (size_t)(m - body), j = i + dl;
        from = i + 1;
        if (i > 0 && body[i - 1] != '\n') continue;
        int kind = 1;
        if (j + 2 <= len && body[j] == '-' && body[j + 1] == '-') {
            *next = j + 2;
            kind = 2;
        } else {
            while (j < len && (body[j] == ' ' || body[j] == '\t')) j++;
            if (j < len && body[j] == '\n') {
                *next = j + 1;
            } else if (j + 1 < len && body[j] == '\r' && body[j + 1] == '\n') {
                *next = j + 2;
            } else {
                continue; /* "--boundaryX": just data */
            }
        }
        size_t s = i;
        if (s > 0 && body[s - 1] == '\n') s--;
        if (s > 0 && body[s - 1] == '\r') s--;
        *dstart = s;
        return kind;
    }
    return 0;
}

static int content_disposition(span v, multipart_part *part, scratch *sc, const char **err)
{
    const char *p = skip_ws(v.p, v.p + v.n), *end = v.p + v.n, *t = p;
    while (p < end && is_tchar((unsigned char)*p)) p++;
    if (!ieq((span){t, (size_t)(p - t)}, "form-data")) {
        *err = "multipart: part is not form-data";
        return -1;
    }
    param pr;
    int r, have_ext = 0;
    span s;
    while ((r = next_param(&p, end, &pr)) == 1) {
        if (ieq(pr.name, "name")) {
            if (unquote(&pr, sc, &s) < 0) goto full;
            part->name = s.p;
            part->name_len = s.n;
        } else if (ieq(pr.name, "filename") && !have_ext) {
            if (unquote(&pr, sc, &s) < 0) goto full;
            s = basename_of(s);
            part->filename = s.p;
            part->filename_len = s.n;
        } else if (ieq(pr.name, "filename*")) {
            span raw;
            if (unquote(&pr, sc, &raw) < 0) goto full;
            int e = ext_value(raw, sc, &s);
            if (e < 0) {
                *err = "multipart: invalid filename";
                return -1;
            }
            if (e == 1) {
                s = basename_of(s);
                part->filename = s.p;
                part->filename_len = s.n;
                have_ext = 1;
            }
        }
    }
    if (r < 0) {
        *err = "multipart: malformed Content-Disposition";
        return -1;
    }
    return 0;
full:
    *err = "multipart: part headers too large";
    return -1;
}

/* Parse the header block at body[pos..]; *data_start is set past the blank line. */
static int part_headers(const char *body, size_t len, size_t pos, multipart_part *part,
                        scratch *sc, size_t *data_start, const char **err)
{
    size_t limit = len - pos > MULTIPART_MAX_HEADER ? pos + MULTIPART_MAX_HEADER : len;
    span name = {0, 0}, val = {0, 0};
    int have_cd = 0;
    for (;;) {
        const char *nl = memchr(body + pos, '\n', limit - pos);
        if (!nl) {
            *err = limit < len ? "multipart: part headers too large" : "multipart: truncated part headers";
            return -1;
        }
        size_t eol = (size_t)(nl - body), end = eol;
        if (end > pos && body[end - 1] == '\r') end--;
        if (memchr(body + pos, '\r', end - pos) || memchr(body + pos, '\0', end - pos)) {
            *err = "multipart: malformed part header";
            return -1;
        }
        int blank = end == pos, cont = !blank && (body[pos] == ' ' || body[pos] == '\t');
        if (cont) {
            if (!name.p) {
                *err = "multipart: malformed part header";
                return -1;
            }
            val.n = end - (size_t)(val.p - body); /* a folded line extends the value */
        } else {
            if (name.p) { /* the previous header is complete */
                if (ieq(name, "content-disposition")) {
                    if (have_cd++) {
                        *err = "multipart: duplicate Content-Disposition";
                        return -1;
                    }
                    if (content_disposition(val, part, sc, err) < 0) return -1;
                } else if (ieq(name, "content-type")) {
                    const char *a = skip_ws(val.p, val.p + val.n), *b = val.p + val.n;
                    while (b > a && is_ws((unsigned char)b[-1])) b--;
                    part->content_type = a;
                    part->content_type_len = (size_t)(b - a);
                }
            }
            if (blank) {
                *data_start = eol + 1;
                break;
            }
            const char *c = memchr(body + pos, ':', end - pos);
            name = (span){body + pos, c ? (size_t)(c - body) - pos : 0};
            for (size_t i = 0; i < name.n; i++)
                if (!is_tchar((unsigned char)name.p[i])) name.n = 0;
            if (name.n == 0) {
                *err = "multipart: malformed part header";
                return -1;
            }
            val = (span){c + 1, end - (size_t)(c + 1 - body)};
        }
        pos = eol + 1;
    }
    if (!part->name) {
        *err = "multipart: part without a name";
        return -1;
    }
    return 0;
}

int multipart_parse(const char *content_type, const char *body, size_t len, multipart_part *parts,
                    size_t max_parts, size_t *nparts, char *scratch_buf, size_t scratch_cap,
                    const char **err)
{
    const char *b;
    size_t bl = multipart_boundary(content_type, &b);
    *nparts = 0;
    if (!bl) {
        *err = "multipart: missing or invalid boundary";
        return -1;
    }
    char d[2 + MULTIPART_MAX_BOUNDARY];
    d[0] = d[1] = '-';
    memcpy(d + 2, b, bl);
    size_t dl = bl + 2, dstart, next;
    scratch sc = {scratch_buf, scratch_buf ? scratch_cap : 0, 0};

    int kind = body ? find_delim(body, len, 0, d, dl, &dstart, &next) : 0; /* preamble skipped */
    while (kind == 1) {
        if (next == len) break; /* a delimiter ends the body: no close delimiter */
        if (*nparts == max_parts) {
            *err = "multipart: too many parts";
            return -1;
        }
        multipart_part *part = &parts[*nparts];
        memset(part, 0, sizeof *part);
        size_t ds;
        if (part_headers(body, len, next, part, &sc, &ds, err) < 0) return -1;
        kind = find_delim(body, len, ds, d, dl, &dstart, &next);
        if (kind == 0) break;
        part->data = body + ds;
        /* an empty part may omit the line break before the delimiter */
        part->data_len = dstart > ds ? dstart - ds : 0;
        ++*nparts;
    }
    if (kind != 2) {
        *err = "multipart: missing closing boundary";
        return -1;
    }
    return 0; /* the epilogue is ignored */
}
