/* router.c: exact-path hash for static routes plus a segment trie for patterns. */
#include "router.h"

#include <http_parser.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define container_of(p, T, m) ((T *)((char *)(p) - offsetof(T, m)))

/* What a route slot holds: the caller's target, plus the pattern and a label word for metrics. */
typedef struct rtarget {
    route_target t;
    char *pattern;
    unsigned label;
} rtarget;

typedef struct rnode rnode;
struct rnode {
    char *seg;            /* static segment text, or param name (without ':'), or "*" */
    size_t seglen;
    int type;             /* 0 static, 1 param, 2 wildcard */
    rtarget t[RM_COUNT];
    int has_target;
    rnode **kids;
    size_t nkids;
};

typedef struct exact {
    char *path;
    size_t len;
    uint64_t hash;
    rtarget t[RM_COUNT];
} exact;

struct router {
    rnode root;
    exact *tab;           /* open addressing, power-of-two size */
    size_t tabsize, nexact;
};

static uint64_t hash_bytes(const char *s, size_t n)
{
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < n; i++) { h ^= (unsigned char)s[i]; h *= 1099511628211ull; }
    return h;
}

router *router_new(void) { return calloc(1, sizeof(router)); }

static void targets_free(rtarget *t)
{
    for (int i = 0; i < RM_COUNT; i++) free(t[i].pattern);
}

static void node_free(rnode *n)
{
    targets_free(n->t);
    for (size_t i = 0; i < n->nkids; i++) { node_free(n->kids[i]); free(n->kids[i]); }
    free(n->kids);
    free(n->seg);
}

void router_free(router *r)
{
    if (!r) return;
    node_free(&r->root);
    for (size_t i = 0; i < r->tabsize; i++) {
        if (r->tab[i].path) targets_free(r->tab[i].t);
        free(r->tab[i].path);
    }
    free(r->tab);
    free(r);
}

int router_method(int m)
{
    switch (m) {
    case HTTP_GET: return RM_GET;
    case HTTP_HEAD: return RM_HEAD;
    case HTTP_POST: return RM_POST;
    case HTTP_PUT: return RM_PUT;
    case HTTP_PATCH: return RM_PATCH;
    case HTTP_DELETE: return RM_DELETE;
    case HTTP_OPTIONS: return RM_OPTIONS;
    default: return -1;
    }
}

static const char *const names[] = {"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "*"};

int router_method_name(const char *s)
{
    for (int i = 0; i < RM_COUNT; i++) if (strcasecmp(s, names[i]) == 0) return i;
    if (strcasecmp(s, "ANY") == 0) return RM_ANY;
    return -1;
}

static exact *exact_find(const router *r, const char *p, size_t n, uint64_t h)
{
    if (!r->tabsize) return NULL;
    for (size_t i = h & (r->tabsize - 1);; i = (i + 1) & (r->tabsize - 1)) {
        exact *e = &r->tab[i];
        if (!e->path) return NULL;
        if (e->hash == h && e->len == n && memcmp(e->path, p, n) == 0) return e;
    }
}

static exact *exact_insert(router *r, const char *p, size_t n)
{
    uint64_t h = hash_bytes(p, n);
    exact *e = exact_find(r, p, n, h);
    if (e) return e;
    if ((r->nexact + 1) * 2 > r->tabsize) {
        size_t ns = r->tabsize ? r->tabsize * 2 : 16;
        exact *nt = calloc(ns, sizeof *nt);
        if (!nt) return NULL;
        for (size_t i = 0; i < r->tabsize; i++) {
            if (!r->tab[i].path) continue;
            size_t j = r->tab[i].hash & (ns - 1);
            while (nt[j].path) j = (j + 1) & (ns - 1);
            nt[j] = r->tab[i];
        }
        free(r->tab);
        r->tab = nt;
        r->tabsize = ns;
    }
    size_t j = h & (r->tabsize - 1);
    while (r->tab[j].path) j = (j + 1) & (r->tabsize - 1);
    e = &r->tab[j];
    e->path = strndup(p, n);
    if (!e->path) return NULL;
    e->len = n;
    e->hash = h;
    r->nexact++;
    return e;
}

static rnode *kid(rnode *n, const char *seg, size_t len, int type)
{
    for (size_t i = 0; i < n->nkids; i++) {
        rnode *k = n->kids[i];
        if (k->type == type && (type != 0 || (k->seglen == len && memcmp(k->seg, seg, len) == 0))) return k;
    }
    rnode *k = calloc(1, sizeof *k);
    rnode **kids = realloc(n->kids, (n->nkids + 1) * sizeof *kids);
    if (!k || !kids) { free(k); if (kids) n->kids = kids; return NULL; }
    k->seg = strndup(seg, len);
    k->seglen = len;
    k->type = type;
    n->kids = kids;
    n->kids[n->nkids++] = k;
    return k;
}

int router_add(router *r, int rm, const char *pat, route_target t, char *err, size_t errlen)
{
    size_t len = strlen(pat);
    if (len == 0 || pat[0] != '/') {
        snprintf(err, errlen, "route pattern must start with '/': \"%s\" (write \"/%s\")", pat, pat);
        return -1;
    }
    if (rm < 0 || rm >= RM_COUNT) { snprintf(err, errlen, "bad method for %s", pat); return -1; }
    /* Every message says what to write instead: it is shown at the script line that added the route. */
    rtarget *slot;
    if (!strchr(pat, ':') && !strchr(pat, '*')) {
        exact *e = exact_insert(r, pat, len);
        if (!e) { snprintf(err, errlen, "out of memory"); return -1; }
        slot = &e->t[rm];
    } else {
        rnode *n = &r->root;
        const char *p = pat + 1;
        while (1) {
            const char *end = strchr(p, '/');
            size_t sl = end ? (size_t)(end - p) : strlen(p);
            if (sl > 0 && p[0] == ':') {
                if (sl == 1) { snprintf(err, errlen, "empty parameter name in \"%s\" (name it, e.g. \":id\")", pat); return -1; }
                rnode *had = NULL;
                for (size_t i = 0; i < n->nkids; i++) if (n->kids[i]->type == 1) had = n->kids[i];
                /* one trie node per position: a second name there would silently get the first's */
                if (had && (had->seglen != sl - 1 || memcmp(had->seg, p + 1, sl - 1) != 0)) {
                    snprintf(err, errlen, "parameter \":%.*s\" in \"%s\" is \":%s\" in another route at the same position "
                             "(routes sharing a path must name a parameter alike: use \":%s\")", (int)(sl - 1), p + 1, pat,
                             had->seg, had->seg);
                    return -1;
                }
                n = kid(n, p + 1, sl - 1, 1);
            } else if (sl == 1 && p[0] == '*') {
                if (end) { snprintf(err, errlen, "'*' must be the last segment in \"%s\" (use \":name\" for one segment)", pat); return -1; }
                n = kid(n, "*", 1, 2);
            } else {
                if (memchr(p, '*', sl)) {
                    snprintf(err, errlen, "'*' must be a whole segment in \"%s\" (e.g. \"/files/*\"; req.params[\"*\"] holds the rest)", pat);
                    return -1;
                }
                n = kid(n, p, sl, 0);
            }
            if (!n) { snprintf(err, errlen, "out of memory"); return -1; }
            if (!end) break;
            p = end + 1;
        }
        n->has_target = 1;
        slot = &n->t[rm];
    }
    if (slot->t.ref) {
        snprintf(err, errlen, "duplicate route %s %s (one handler per method and path: remove one, or change its path or method)",
                 names[rm], pat);
        return -1;
    }
    char *copy = strdup(pat);
    if (!copy) { snprintf(err, errlen, "out of memory"); return -1; }
    slot->t = t;
    slot->pattern = copy;
    slot->label = 0;
    return 0;
}

static const route_target *pick(const rtarget *t, int rm, unsigned *allowed)
{
    for (int i = 0; i < RM_COUNT; i++) if (t[i].t.ref) *allowed |= 1u << i;
    if (t[rm].t.ref) return &t[rm].t;
    if (rm == RM_HEAD && t[RM_GET].t.ref) return &t[RM_GET].t;
    if (t[RM_ANY].t.ref) return &t[RM_ANY].t;
    return NULL;
}

const char *router_pattern(const route_target *t) { return container_of(t, rtarget, t)->pattern; }

unsigned *router_label_slot(const route_target *t) { return &container_of((route_target *)t, rtarget, t)->label; }

static const route_target *walk(const rnode *n, int rm, const char *p, const char *end,
                                router_param *ps, int *np, unsigned *allowed)
{
    if (p > end) return n->has_target ? pick(n->t, rm, allowed) : NULL;
    const char *slash = memchr(p, '/', (size_t)(end - p));
    const char *segend = slash ? slash : end;
    size_t sl = (size_t)(segend - p);
    const char *next = slash ? slash + 1 : end + 1;
    for (int pass = 0; pass < 3; pass++) {
        for (size_t i = 0; i < n->nkids; i++) {
            const rnode *k = n->kids[i];
            if (k->type != pass) continue;
            if (pass == 0 && (k->seglen != sl || memcmp(k->seg, p, sl) != 0)) continue;
            if (pass == 1 && sl == 0) continue;
            if (pass == 2) {
                if (!k->has_target) continue;
                unsigned a = 0;
                const route_target *t = pick(k->t, rm, &a);
                *allowed |= a;
                if (t && *np < ROUTER_MAX_PARAMS) {
                    ps[*np] = (router_param){"*", p, 1, (size_t)(end - p)};
                    (*np)++;
                }
                if (t) return t;
                continue;
            }
            int save = *np;
            if (pass == 1 && *np < ROUTER_MAX_PARAMS) {
                ps[*np] = (router_param){k->seg, p, k->seglen, sl};
                (*np)++;
            }
            const route_target *t = walk(k, rm, next, end, ps, np, allowed);
            if (t) return t;
            *np = save;
        }
    }
    return NULL;
}

const route_target *router_match(const router *r, int rm, const char *path, size_t len,
                                 router_param *params, int *nparams, unsigned *allowed)
{
    *nparams = 0;
    *allowed = 0;
    exact *e = exact_find(r, path, len, hash_bytes(path, len));
    if (e) {
        const route_target *t = pick(e->t, rm, allowed);
        if (t) return t;
    }
    if (!r->root.nkids || len == 0 || path[0] != '/') return NULL;
    unsigned a = 0;
    const route_target *t = walk(&r->root, rm, path + 1, path + len, params, nparams, &a);
    *allowed |= a;
    return t;
}
