/* strmap.c: chained hash table of map-owned entries (link header + value + key in one allocation). */
#include "strmap.h"

#include <stdalign.h>
#include <stdlib.h>
#include <string.h>

typedef struct snode {
    struct snode *next;
    uint64_t hash;
    const char *key;  /* points just past the value, so strmap_key needs no map */
    uint32_t klen;
} snode;

/* The value starts this far into the entry: rounded up so any type can live there. */
#define HDR ((sizeof(snode) + alignof(max_align_t) - 1) / alignof(max_align_t) * alignof(max_align_t))
#define VAL(n) ((void *)((char *)(n) + HDR))
#define NODE(v) ((snode *)((char *)(v) - HDR))

struct strmap {
    snode **b;
    size_t mask, n, vsize;
    uint64_t seed;
};

strmap *strmap_new(uint64_t seed, size_t vsize)
{
    strmap *m = malloc(sizeof *m);
    if (!m) return NULL;
    m->b = calloc(16, sizeof *m->b);
    if (!m->b) {
        free(m);
        return NULL;
    }
    m->mask = 15;
    m->n = 0;
    m->vsize = vsize;
    m->seed = seed;
    return m;
}

void strmap_free(strmap *m)
{
    if (!m) return;
    for (size_t i = 0; i <= m->mask; i++)
        for (snode *n = m->b[i], *nx; n; n = nx) {
            nx = n->next;
            free(n);
        }
    free(m->b);
    free(m);
}

/* FNV-1a with the seed folded into the offset basis, plus a final shift-xor so
 * the low bits (the bucket index) depend on the high ones too. */
uint64_t strmap_hash(const strmap *m, const char *s, size_t len)
{
    uint64_t x = 0xcbf29ce484222325ull ^ m->seed;
    for (size_t i = 0; i < len; i++) x = (x ^ (unsigned char)s[i]) * 0x100000001b3ull;
    return x ^ (x >> 29);
}

void *strmap_get_hashed(const strmap *m, uint64_t hash, const char *key, size_t len)
{
    for (snode *n = m->b[hash & m->mask]; n; n = n->next)
        if (n->hash == hash && n->klen == len && memcmp(n->key, key, len) == 0) return VAL(n);
    return NULL;
}

void *strmap_get(const strmap *m, const char *key, size_t len)
{
    return strmap_get_hashed(m, strmap_hash(m, key, len), key, len);
}

/* Doubles the bucket array; on OOM keeps the old one (longer chains, still correct). */
static void grow(strmap *m)
{
    size_t ncap = (m->mask + 1) * 2;
    snode **nb = calloc(ncap, sizeof *nb);
    if (!nb) return;
    for (size_t i = 0; i <= m->mask; i++)
        for (snode *x = m->b[i], *nx; x; x = nx) {
            nx = x->next;
            x->next = nb[x->hash & (ncap - 1)];
            nb[x->hash & (ncap - 1)] = x;
        }
    free(m->b);
    m->b = nb;
    m->mask = ncap - 1;
}

void *strmap_put_hashed(strmap *m, uint64_t hash, const char *key, size_t len, int *created)
{
    if (created) *created = 0;
    void *v = strmap_get_hashed(m, hash, key, len);
    if (v) return v;
    if (len > UINT32_MAX) return NULL;
    snode *n = calloc(1, HDR + m->vsize + len + 1);
    if (!n) return NULL;
    char *k = (char *)VAL(n) + m->vsize;
    memcpy(k, key, len);
    n->key = k;
    n->klen = (uint32_t)len;
    n->hash = hash;
    if (m->n >= m->mask + 1) grow(m);
    snode **head = &m->b[hash & m->mask];
    n->next = *head;
    *head = n;
    m->n++;
    if (created) *created = 1;
    return VAL(n);
}

void *strmap_put(strmap *m, const char *key, size_t len, int *created)
{
    return strmap_put_hashed(m, strmap_hash(m, key, len), key, len, created);
}

void strmap_del(strmap *m, void *val)
{
    snode *n = NODE(val);
    for (snode **p = &m->b[n->hash & m->mask]; *p; p = &(*p)->next)
        if (*p == n) {
            *p = n->next;
            m->n--;
            free(n);
            return;
        }
}

const char *strmap_key(const void *val, size_t *len)
{
    const snode *n = (const snode *)((const char *)val - HDR);
    if (len) *len = n->klen;
    return n->key;
}

size_t strmap_count(const strmap *m) { return m->n; }

void strmap_iterate(strmap *m, strmap_iter_fn fn, void *ud)
{
    /* next is read before the call so fn may delete the entry it was handed */
    for (size_t i = 0; i <= m->mask; i++)
        for (snode *n = m->b[i], *nx; n; n = nx) {
            nx = n->next;
            if (fn(VAL(n), ud)) return;
        }
}
