/* test_strmap: the string-keyed entry table used by the SSE hub (channels, users) and workers. */
#include "strmap.h"

#include <stdalign.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tap.h"

typedef struct val {
    uint64_t a;
    void *p;
    uint32_t n;
} val;

static void test_basics(void)
{
    strmap *m = strmap_new(42, sizeof(val));
    ok(m != NULL, "new");
    is_int(strmap_count(m), 0, "empty map has no entries");
    ok(strmap_get(m, "x", 1) == NULL, "get on empty map is NULL");

    int created = -1;
    val *v = strmap_put(m, "chat", 4, &created);
    ok(v != NULL && created == 1, "put creates");
    ok(v->a == 0 && v->p == NULL && v->n == 0, "new value is zeroed");
    ok((uintptr_t)v % alignof(max_align_t) == 0, "value is aligned for any type");
    v->a = 7;
    val *again = strmap_put(m, "chat", 4, &created);
    ok(again == v && created == 0 && again->a == 7, "put of an existing key returns the same value");
    ok(strmap_get(m, "chat", 4) == v, "get finds it");
    ok(strmap_get(m, "cha", 3) == NULL && strmap_get(m, "chats", 5) == NULL, "prefix and extension are other keys");
    is_int(strmap_count(m), 1, "count 1");

    char buf[8] = "room";
    size_t len = 0;
    val *r = strmap_put(m, buf, 4, NULL);
    memcpy(buf, "XXXX", 4);
    const char *k = strmap_key(r, &len);
    ok(k != buf && len == 4 && strcmp(k, "room") == 0, "the map keeps its own NUL-terminated copy of the key");
    ok(strmap_get(m, "room", 4) == r, "lookup does not depend on the caller's buffer");

    val *z1 = strmap_put(m, "a\0b", 3, NULL), *z2 = strmap_put(m, "a\0c", 3, NULL);
    ok(z1 && z2 && z1 != z2, "keys with NUL bytes are distinct");
    val *e = strmap_put(m, "", 0, NULL);
    ok(e && strmap_get(m, "", 0) == e && strmap_key(e, &len)[0] == 0 && len == 0, "empty key works");
    is_int(strmap_count(m), 5, "count 5");

    strmap_del(m, r);
    ok(strmap_get(m, "room", 4) == NULL, "del removes");
    ok(strmap_get(m, "chat", 4) == v, "del leaves others");
    is_int(strmap_count(m), 4, "count after del");
    strmap_free(m); /* frees the remaining entries: ASan reports any leak */
    strmap_free(NULL);
}

static void test_seed(void)
{
    strmap *a = strmap_new(1234, sizeof(val)), *b = strmap_new(1234, 8), *c = strmap_new(99, 8);
    uint64_t ha = strmap_hash(a, "news", 4);
    ok(ha == strmap_hash(b, "news", 4), "maps with the same seed hash alike");
    ok(ha != strmap_hash(c, "news", 4), "another seed gives another hash");
    void *vb = strmap_put_hashed(b, ha, "news", 4, NULL);
    ok(vb && strmap_get_hashed(b, ha, "news", 4) == vb && strmap_get(b, "news", 4) == vb,
       "a hash from a map with the same seed works for put/get");
    strmap_free(a);
    strmap_free(b);
    strmap_free(c);
}

static void test_growth(void)
{
    enum { N = 20000 };
    strmap *m = strmap_new(7, sizeof(val));
    static val *vs[N];
    char k[32];
    int allnew = 1;
    for (int i = 0; i < N; i++) {
        int created;
        int n = snprintf(k, sizeof k, "channel:%d", i);
        vs[i] = strmap_put(m, k, (size_t)n, &created);
        if (!vs[i] || !created) allnew = 0;
        else vs[i]->n = (uint32_t)i;
    }
    ok(allnew, "%d distinct keys inserted", N);
    is_int(strmap_count(m), N, "count after growth");
    int found = 1;
    for (int i = 0; i < N; i++) {
        int n = snprintf(k, sizeof k, "channel:%d", i);
        val *v = strmap_get(m, k, (size_t)n);
        if (v != vs[i] || v->n != (uint32_t)i) found = 0;
    }
    ok(found, "every value found at its original address after the table grew");
    for (int i = 0; i < N; i += 2) strmap_del(m, vs[i]);
    is_int(strmap_count(m), N / 2, "half deleted");
    int odd_ok = 1;
    for (int i = 0; i < N; i++) {
        int n = snprintf(k, sizeof k, "channel:%d", i);
        val *v = strmap_get(m, k, (size_t)n);
        if ((i % 2 == 0) != (v == NULL)) odd_ok = 0;
    }
    ok(odd_ok, "deleted keys gone, the others still there");
    strmap_free(m);
}

/* White box: one hash for every key puts them all in one chain. */
static void test_collisions(void)
{
    strmap *m = strmap_new(0, sizeof(val));
    char k[16];
    val *vs[100];
    for (int i = 0; i < 100; i++) {
        int n = snprintf(k, sizeof k, "k%d", i);
        vs[i] = strmap_put_hashed(m, 5, k, (size_t)n, NULL);
    }
    int ok_all = 1;
    for (int i = 0; i < 100; i++) {
        int n = snprintf(k, sizeof k, "k%d", i);
        if (strmap_get_hashed(m, 5, k, (size_t)n) != vs[i]) ok_all = 0;
    }
    ok(ok_all, "equal hashes: keys are still told apart");
    strmap_del(m, vs[50]);
    strmap_del(m, vs[0]);
    strmap_del(m, vs[99]);
    ok(strmap_get_hashed(m, 5, "k50", 3) == NULL && strmap_get_hashed(m, 5, "k51", 3) == vs[51] &&
       strmap_get_hashed(m, 5, "k1", 2) == vs[1], "del from the middle and both ends of a chain");
    strmap_free(m);
}

typedef struct it_ctx {
    strmap *m;
    int visits, stop_after, del_odd;
    unsigned char seen[1000];
} it_ctx;

static int visit(void *v, void *ud)
{
    it_ctx *x = ud;
    val *e = v;
    x->seen[e->n]++;
    x->visits++;
    if (x->del_odd && e->n % 2) strmap_del(x->m, e);
    return x->stop_after && x->visits == x->stop_after;
}

static void test_iterate(void)
{
    strmap *m = strmap_new(3, sizeof(val));
    char k[16];
    for (int i = 0; i < 1000; i++) {
        int n = snprintf(k, sizeof k, "u%d", i);
        ((val *)strmap_put(m, k, (size_t)n, NULL))->n = (uint32_t)i;
    }
    it_ctx x = { .m = m };
    strmap_iterate(m, visit, &x);
    int once = 1;
    for (int i = 0; i < 1000; i++) once &= x.seen[i] == 1;
    ok(x.visits == 1000 && once, "iterate visits every entry exactly once");

    memset(&x, 0, sizeof x);
    x.m = m;
    x.stop_after = 10;
    strmap_iterate(m, visit, &x);
    is_int(x.visits, 10, "a nonzero return stops the walk");

    memset(&x, 0, sizeof x);
    x.m = m;
    x.del_odd = 1;
    strmap_iterate(m, visit, &x);
    once = 1;
    for (int i = 0; i < 1000; i++) once &= x.seen[i] == 1;
    ok(x.visits == 1000 && once, "deleting the current entry does not disturb the walk");
    is_int(strmap_count(m), 500, "odd entries deleted during the walk");
    ok(strmap_get(m, "u3", 2) == NULL && strmap_get(m, "u4", 2) != NULL, "the right ones");
    strmap_free(m);
}

int main(void)
{
    test_basics();
    test_seed();
    test_growth();
    test_collisions();
    test_iterate();
    return tap_done();
}
