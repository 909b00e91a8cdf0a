/* test_pgstmt: the statement cache's decisions (hit, miss, LRU eviction, stale plans, transactions)
 * and the run-time estimates; no server needed (pgstmt does no I/O). */
#include <stdlib.h>
#include <string.h>

#include "../../core/pgstmt.h"
#include "tap.h"

static pgstmt_use plan(pgstmt *s, const char *sql, int may_close)
{
    pgstmt_use u;
    pgstmt_plan(s, sql, pgstmt_hash(sql), may_close, 1, &u);
    return u;
}

static void test_hit_miss_lru(void)
{
    pgstmt_counters cnt = {0};
    pgstmt *s = pgstmt_new(2, &cnt, 0xabc);
    pgstmt_use a = plan(s, "select 1", 1);
    ok(a.id && a.parse && !a.close_id, "miss: parse under a new name, nothing to close");
    pgstmt_parsed(s, &a, 1);
    pgstmt_use a2 = plan(s, "select 1", 1);
    ok(a2.id == a.id && !a2.parse, "hit: same name, no parse");
    pgstmt_use b = plan(s, "select 2", 1);
    pgstmt_parsed(s, &b, 1);
    ok(b.id != a.id && b.parse && !b.close_id, "second statement: own name");
    plan(s, "select 1", 1);                       /* select 1 is now the most recently used */
    pgstmt_use c = plan(s, "select 3", 1);
    ok(c.parse && c.close_id == b.id, "full: the least recently used (select 2) is closed");
    is_int(pgstmt_count(s), 2, "cache holds its cap");
    pgstmt_use b2 = plan(s, "select 2", 1);
    ok(b2.parse && b2.id != b.id && b2.close_id == a.id, "evicted statement parses again under a new name");
    is_int(cnt.hits, 2, "hits counted");
    is_int(cnt.misses, 4, "misses counted");
    is_int(cnt.evictions, 2, "evictions counted");
    char name[PGSTMT_NAME_MAX];
    is_str(pgstmt_name(s, b2.id, name, sizeof name), "sluice_00000abc_4", "names are sluice_<tag>_<id>");
    pgstmt_free(s);
}

static void test_pending_and_failed_parse(void)
{
    pgstmt *s = pgstmt_new(4, NULL, 1);
    pgstmt_use a = plan(s, "selec 1", 1);
    pgstmt_use a2 = plan(s, "selec 1", 1);
    ok(!a2.id && !a2.parse && !a2.close_id, "a Parse in flight (it may fail): the same text runs unnamed meanwhile");
    pgstmt_parsed(s, &a, 0);
    is_int(pgstmt_count(s), 0, "a failed Parse is not cached");
    pgstmt_use a3 = plan(s, "selec 1", 1);
    ok(a3.parse && a3.id != a.id && !a3.close_id, "after a failed Parse: parsed again, nothing to close");
    pgstmt_invalid(s, &a2, 1);                    /* a report for an unnamed run names no slot */
    is_int(pgstmt_count(s), 1, "a stale report for a reused slot is ignored");
    pgstmt_free(s);
}

static void test_stale_and_transactions(void)
{
    pgstmt_counters cnt = {0};
    pgstmt *s = pgstmt_new(1, &cnt, 2);
    pgstmt_use a = plan(s, "select * from t", 1);
    pgstmt_parsed(s, &a, 1);
    pgstmt_invalid(s, &a, 0);                     /* 0A000: result type changed, still on the server */
    pgstmt_use in_tx = plan(s, "select * from t", 0);
    ok(!in_tx.id && !in_tx.close_id, "stale inside a transaction: run unnamed, close nothing");
    pgstmt_use out = plan(s, "select * from t", 1);
    ok(out.parse && out.close_id == a.id && out.id != a.id, "stale outside: close the old copy, parse a new one");
    pgstmt_parsed(s, &out, 1);
    pgstmt_use full = plan(s, "select 2", 0);
    ok(!full.id && !full.close_id, "full inside a transaction: unnamed, no eviction");
    is_int(pgstmt_count(s), 1, "the cached statement stayed");
    pgstmt_use hit = plan(s, "select * from t", 0);
    ok(hit.id == out.id && !hit.parse, "hits work inside a transaction");
    pgstmt_invalid(s, &hit, 1);                   /* 26000: gone on the server */
    pgstmt_use again = plan(s, "select * from t", 0);
    ok(again.parse && !again.close_id, "gone: parsed again without a DEALLOCATE (also in a transaction)");
    pgstmt_parsed(s, &again, 1);
    is_int(cnt.invalidated, 2, "invalidations counted");
    pgstmt_use once;
    pgstmt_plan(s, "select 'once'", pgstmt_hash("select 'once'"), 1, 0, &once);
    ok(!once.id && !once.close_id && pgstmt_count(s) == 1, "not admitted: unnamed, nothing evicted");
    pgstmt_plan(s, "select * from t", pgstmt_hash("select * from t"), 1, 0, &once);
    ok(once.id == again.id, "a cached statement is a hit whether admitted or not");
    pgstmt_free(s);
}

static void test_many(void)
{
    pgstmt *s = pgstmt_new(50, NULL, 3);
    char sql[64];
    int hits = 0;
    for (int round = 0; round < 3; round++)
        for (int i = 0; i < 200; i++) {
            snprintf(sql, sizeof sql, "select %d", i % 40);
            pgstmt_use u = plan(s, sql, 1);
            if (u.parse) pgstmt_parsed(s, &u, 1);
            else hits++;
        }
    is_int(hits, 600 - 40, "40 statements in a cache of 50: every one parsed once");
    is_int(pgstmt_count(s), 40, "40 cached");
    for (int i = 0; i < 1000; i++) {
        snprintf(sql, sizeof sql, "select %d", 1000 + i);
        pgstmt_use u = plan(s, sql, 1);
        pgstmt_parsed(s, &u, (i % 3) != 0);
    }
    ok(pgstmt_count(s) <= 50, "never above the cap (%d)", pgstmt_count(s));
    pgstmt_free(s);
    ok(pgstmt_new(0, NULL, 4) == NULL, "cap 0: no cache");
    pgstmt_free(NULL);
}

static void test_est(void)
{
    static pgstmt_est t;
    uint64_t h = pgstmt_hash("select pg_sleep(1)");
    ok(pgstmt_est_get(&t, h) < 0, "never seen: unknown");
    pgstmt_est_add(&t, h, 0.001);
    double e1 = pgstmt_est_get(&t, h);
    ok(e1 >= 0.001 && e1 < 0.01, "one run: about its time, with margin (%g)", e1);
    for (int i = 0; i < 50; i++) pgstmt_est_add(&t, h, 0.001);
    ok(pgstmt_est_get(&t, h) < 0.0015, "steady: close to the run time (%g)", pgstmt_est_get(&t, h));
    pgstmt_est_add(&t, h, 2.0);
    ok(pgstmt_est_get(&t, h) > 1.0, "one slow run makes it slow at once (%g)", pgstmt_est_get(&t, h));
    uint64_t other = h + PGSTMT_EST_SLOTS;        /* same slot, another statement */
    pgstmt_est_add(&t, other, 0.001);
    ok(pgstmt_est_get(&t, h) < 0, "a collision forgets the older statement: unknown, not fast");
}

int main(void)
{
    test_hit_miss_lru();
    test_pending_and_failed_parse();
    test_stale_and_transactions();
    test_many();
    test_est();
    return tap_done();
}
