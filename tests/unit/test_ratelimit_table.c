/* test_ratelimit_table.c: the rate-limit table's storage (open addressing: linear probing,
 * backward-shift deletion, clusters wrapping around the end of a shard) against a reference
 * model, and key moves under threads (run under TSan by tools/test). test_ratelimit.c has the
 * GCRA semantics. */
#include "ratelimit.h"
#include "tap.h"

#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

/* ---- a small, nearly full shard against a model of the semantics ---- */

enum { CAP = 50, POOL = 200 };
static const uint64_t T = 100, B = 3; /* ms: limit 3 per 300 ms */

/* The model: a key's TAT (0 = absent, equivalent to a full bucket). A new key finds room iff
 * fewer than CAP keys are busy (TAT > now): expired keys are evicted to make room (ratelimit.h). */
static uint64_t model[POOL];

static int busy_keys(uint64_t now)
{
    int n = 0;
    for (int i = 0; i < POOL; i++) n += model[i] > now;
    return n;
}

static uint64_t rnd_state = 0x9E3779B97F4A7C15u;
static uint64_t rnd(void)
{
    rnd_state ^= rnd_state << 13, rnd_state ^= rnd_state >> 7, rnd_state ^= rnd_state << 17;
    return rnd_state;
}

static int name(int i, char *out) { return snprintf(out, 16, "k%d", i); }

static void test_model(void)
{
    ratelimit *rl = ratelimit_new(CAP, 1); /* one shard: 63 slots for 50 keys, long clusters */
    rl_policy p = {.id = 7, .limit = 3, .window_ms = 300};
    rl_result r;
    uint64_t now = 1000;
    long bad_check = 0, bad_peek = 0, bad_full = 0, bad_keys = 0, checks = 0, fulls = 0, resets = 0, sweeps = 0;
    char k[16];
    for (int step = 0; step < 200000; step++) {
        now += rnd() % 4 == 0 ? rnd() % 10 : 0;
        uint64_t op = rnd() % 100;
        int i = (int)(rnd() % POOL);
        int kl = name(i, k);
        if (op < 85) { /* a request */
            uint64_t tat = model[i] > now ? model[i] : now;
            int present = model[i] > now, room = present || busy_keys(now) < CAP;
            int want = room && tat + T <= now + B * T;
            ratelimit_check(rl, &p, k, (size_t)kl, now, &r);
            checks++;
            if (!room) {
                fulls++;
                bad_full += !(!r.allowed && r.table_full);
            } else if (r.allowed != want || r.table_full ||
                       (want && r.remaining != (now + B * T - (tat + T)) / T)) {
                bad_check++;
            }
            if (want) model[i] = tat + T;
        } else if (op < 92) { /* peek: the stored state of a key, without changing it */
            uint64_t tat = model[i] > now ? model[i] : now;
            ratelimit_check_n(rl, &p, k, (size_t)kl, 0, now, &r);
            bad_peek += r.remaining != (now + B * T - tat) / T;
        } else if (op < 97) { /* forget a key: removal moves the rest of its cluster back */
            ratelimit_reset_key(rl, p.id, k, (size_t)kl);
            model[i] = 0;
            resets++;
        } else { /* housekeeping: every expired key goes */
            ratelimit_sweep(rl, now);
            rl_stats st;
            ratelimit_stats(rl, &st);
            bad_keys += st.keys != (uint64_t)busy_keys(now);
            sweeps++;
        }
    }
    /* every busy key is still found with its exact state (no key lost by a move) */
    for (int i = 0; i < POOL; i++) {
        int kl = name(i, k);
        uint64_t tat = model[i] > now ? model[i] : now;
        ratelimit_check_n(rl, &p, k, (size_t)kl, 0, now, &r);
        bad_peek += r.remaining != (now + B * T - tat) / T;
    }
    printf("# %ld checks (%ld on a full table), %ld resets, %ld sweeps\n", checks, fulls, resets, sweeps);
    ok(fulls > 1000 && resets > 1000 && sweeps > 1000, "the run filled the table and removed keys often");
    is_int(bad_check, 0, "every decision and remaining as the model says");
    is_int(bad_full, 0, "table_full exactly when CAP keys are busy");
    is_int(bad_peek, 0, "every key's stored state as the model says (peeks)");
    is_int(bad_keys, 0, "after a sweep, keys == the busy keys");

    /* clear empties a full table; every slot is usable again */
    ratelimit_clear(rl);
    rl_stats st;
    ratelimit_stats(rl, &st);
    is_int(st.keys, 0, "clear: no keys");
    int admitted = 0;
    for (int i = 0; i < CAP; i++) {
        int kl = name(i, k);
        ratelimit_check(rl, &p, k, (size_t)kl, now, &r);
        admitted += r.allowed;
    }
    int kl = name(CAP, k);
    ratelimit_check(rl, &p, k, (size_t)kl, now, &r);
    ok(admitted == CAP && !r.allowed && r.table_full, "after clear: %d new keys fit, the next is refused", admitted);
    ratelimit_free(rl);
}

/* Tables of every small size: each holds exactly its capacity of keys, and after removing any
 * one of them the others are all found again (probing across the end of the shard). */
static void test_sizes(void)
{
    rl_policy p = {.id = 1, .limit = 1, .window_ms = 1000};
    rl_result r;
    char k[16];
    int bad = 0;
    for (int cap = 1; cap <= 40; cap++) {
        for (int gone = 0; gone < cap; gone++) {
            ratelimit *rl = ratelimit_new((size_t)cap, 1);
            for (int i = 0; i < cap; i++) bad += ratelimit_check(rl, &p, k, (size_t)name(i, k), 0, &r) || !r.allowed;
            bad += ratelimit_check(rl, &p, k, (size_t)name(cap, k), 0, &r) || r.allowed || !r.table_full;
            ratelimit_reset_key(rl, p.id, k, (size_t)name(gone, k));
            for (int i = 0; i < cap; i++) {   /* an exhausted key is found: rejected, not table_full */
                ratelimit_check(rl, &p, k, (size_t)name(i, k), 0, &r);
                bad += i == gone ? !r.allowed : r.allowed || r.table_full;
            }
            ratelimit_free(rl);
        }
    }
    is_int(bad, 0, "tables of 1..40 keys: full at capacity, every key found after any one is removed");
}

/* Keys of every length (inline up to RL_KEY_INLINE, digests beyond): the same bytes from another
 * buffer are the same key; a key differing in any one byte is another key. */
static void test_key_lengths(void)
{
    rl_policy p = {.id = 3, .limit = 1, .window_ms = 1000};
    rl_result r;
    char a[80], b[80];
    int bad = 0;
    for (size_t len = 0; len <= 70; len++) {
        for (size_t pos = 0; pos < (len ? len : 1); pos++) {
            ratelimit *rl = ratelimit_new(16, 1);
            for (size_t i = 0; i < len; i++) a[i] = b[i] = (char)('a' + (i * 7 + len) % 26);
            a[len] = 'X', b[len] = 'Y'; /* bytes after the key never count */
            ratelimit_check(rl, &p, a, len, 0, &r);
            bad += !r.allowed;
            ratelimit_check(rl, &p, b, len, 0, &r);     /* same bytes, another buffer: exhausted */
            bad += r.allowed;
            if (len) {
                b[pos] = (char)(b[pos] ^ 0x20);
                ratelimit_check(rl, &p, b, len, 0, &r); /* one byte differs: a fresh bucket */
                bad += !r.allowed;
            }
            ratelimit_free(rl);
        }
    }
    is_int(bad, 0, "keys of 0..70 bytes: equal bytes are one key, any one byte changed is another");
}

/* ---- threads: exact counts while other threads' removals move keys ---- */

typedef struct {
    ratelimit *rl;
    int id;
    long admitted;
    _Atomic int *stop;
} warg;

/* 20 keys of its own, 200 rounds each, at a frozen time: exactly B admitted per key */
static void *owner(void *v)
{
    warg *a = v;
    rl_policy p = {.id = 1, .limit = 3, .window_ms = 900000};
    rl_result r;
    char k[24];
    for (int round = 0; round < 200; round++)
        for (int i = 0; i < 20; i++) {
            int n = snprintf(k, sizeof k, "t%d-%d", a->id, i);
            ratelimit_check(a->rl, &p, k, (size_t)n, 5, &r);
            a->admitted += r.allowed;
        }
    return NULL;
}

/* inserts and removes keys of its own in the same shards: removals shift the owners' keys */
static void *churn(void *v)
{
    warg *a = v;
    rl_policy p = {.id = 1, .limit = 3, .window_ms = 900000};
    rl_result r;
    char k[24];
    for (unsigned i = 0; !atomic_load(a->stop); i++) {
        int n = snprintf(k, sizeof k, "c%u", i % 40);
        ratelimit_check(a->rl, &p, k, (size_t)n, 5, &r);
        if (i % 3 == 0) ratelimit_reset_key(a->rl, p.id, k, (size_t)n);
        if (i % 64 == 0) ratelimit_sweep(a->rl, 5);   /* nothing is expired at 5: a no-op scan */
        a->admitted++;
    }
    return NULL;
}

static void test_threads_moving_keys(void)
{
    enum { NT = 3 };
    ratelimit *rl = ratelimit_new(128, 2); /* 2 shards of 64 keys: 60 owner keys + up to 40 churn keys */
    _Atomic int stop = 0;
    pthread_t th[NT], ch;
    warg a[NT], c = {.rl = rl, .stop = &stop};
    pthread_create(&ch, NULL, churn, &c);
    for (int i = 0; i < NT; i++) {
        a[i] = (warg){.rl = rl, .id = i};
        pthread_create(&th[i], NULL, owner, &a[i]);
    }
    long total = 0;
    for (int i = 0; i < NT; i++) pthread_join(th[i], NULL), total += a[i].admitted;
    atomic_store(&stop, 1);
    pthread_join(ch, NULL);
    printf("# churn thread: %ld requests with removals meanwhile\n", c.admitted);
    is_int(total, NT * 20 * 3, "3 threads x 20 keys x 200 requests while a 4th removes keys: exactly 3 per key");
    ratelimit_free(rl);
}

int main(void)
{
    test_model();
    test_sizes();
    test_key_lengths();
    test_threads_moving_keys();
    return tap_done();
}
