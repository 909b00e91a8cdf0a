"""test_db_prepared.py: the pool's prepared-statement cache and its pipelining (issue 21, section 2).

Against a real PostgreSQL (DATABASE_URL) and a real PgBouncer 1.18 in transaction mode:
- cache hits: the statement is named on the backend (pg_prepared_statements) and counted in
  /metrics (sluice_db_statement_cache_hits_total / misses / evictions / invalidations);
- LRU eviction at statement_cache_size (the evicted statements are closed on the backend);
- a statement that fails to parse gives the same error as with the cache off, and is not cached;
- DDL between calls (cached plan must not change result type, 0A000): retried once, invisible
  to the handler; a terminated backend takes its cache with it;
- pgbouncer=true: many distinct statements through PgBouncer, unnamed, every answer right; and
  without pgbouncer=true the pool notices the mixed sessions and turns named statements off;
- pipelining (on by default): a slow statement on every connection plus fast ones: the fast ones
  are not held behind the slow ones (a clean pool-timeout 503 within pool_timeout, before the slow
  ones end), nothing lost, every answer to its own request; fast statements do share connections.

Needs DATABASE_URL (tools/test exports it). Run: python3 tests/integration/test_db_prepared.py
"""
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import PgBouncer, Server, check, get, metric, run_tests, test, wait_for  # noqa: E402

DATABASE_URL = os.environ.get("DATABASE_URL")
if not DATABASE_URL:
    sys.exit("test_db_prepared.py: DATABASE_URL is not set; run under tools/test, or:\n"
             "  export DATABASE_URL=$(tools/pg-dev start /tmp/sluice-db)")
TABLE = "tdp_%d_%d" % (os.getpid(), random.randint(0, 1 << 20))

APP = r'''
local app = require "sluice"
local T = os.getenv("TDP_TABLE")

app.get("/hello", function() return "hello world\n" end)

-- statement n of many distinct ones: v = k + n
app.get("/q/:n", function(req)
  local n = tonumber(req.params.n)
  local r = app.db.query("select $1::int + " .. n .. " as v", tonumber(req.query.k or "0"))[1]
  return { json = { v = r.v } }
end)

-- this session's named statements (the pool's only connection in these servers)
app.get("/prepared", function()
  local rows = app.db.query("select name, statement from pg_prepared_statements where name like 'sluice%' order by prepare_time, name")
  local out = {}
  for i, r in ipairs(rows) do out[i] = r.statement end
  return { json = { n = #rows, statements = out } }
end)

app.get("/bad", function()
  local ok, err = pcall(app.db.query, "selec 1 from nowhere_tdp")
  return { json = { sqlstate = err.sqlstate, msg = tostring(err) } }
end)

app.get("/ddl/create", function()
  app.db.query("drop table if exists " .. T)
  app.db.query("create table " .. T .. " (a int)")
  app.db.query("insert into " .. T .. " values (1)")
  return "ok\n"
end)
local cols = 0
app.get("/ddl/add", function()
  cols = cols + 1
  app.db.query("alter table " .. T .. " add column b" .. cols .. " int default 7")
  return "ok\n"
end)
app.get("/t", function()
  local r = app.db.query("select * from " .. T)[1]
  local n = 0
  for _ in pairs(r) do n = n + 1 end
  return { json = { a = r.a, cols = n } }
end)
app.get("/t_tx", function()
  local ok, err = pcall(app.db.transaction, function()
    local r = app.db.query("select * from " .. T)[1]
    local n = 0
    for _ in pairs(r) do n = n + 1 end
    return n
  end)
  return { json = { ok = ok, sqlstate = not ok and err.sqlstate or nil, cols = ok and err or nil } }
end)

app.get("/pid", function() return { json = { pid = app.db.query("select pg_backend_pid() as pid")[1].pid } } end)

-- a slow statement whose SQL text is new to the pool (tag), and a fast one
app.get("/slow", function(req)
  local r = app.db.query("select pg_sleep($1) as s, $2::text as tag -- " .. req.query.tag, tonumber(req.query.s), req.query.tag)[1]
  return { json = { tag = r.tag } }
end)
app.get("/fast", function(req)
  local ok, r = pcall(app.db.query, "select $1::int as k", tonumber(req.query.k))
  if not ok then return { status = 503, json = { err = tostring(r), code = r.code } } end
  return { json = { k = r[1].k } }
end)
'''

CONFIG = r'''
return {
  workers = 1,
  scripts = { "app.lua" },
  ratelimit = false,
  log = { access = "off" },
  database = { url = os.getenv("TDP_URL"), health_interval = 0 },
}
'''


def with_params(url, **params):
    sep = "&" if "?" in url else "?"
    return url + sep + "&".join("%s=%s" % kv for kv in params.items())


APPDIR = tempfile.mkdtemp(prefix="sluice-dbp-")
with open(os.path.join(APPDIR, "app.lua"), "w") as f:
    f.write(APP)
with open(os.path.join(APPDIR, "config.lua"), "w") as f:
    f.write(CONFIG)


def server(url, **env):
    e = {"TDP_URL": url, "TDP_TABLE": TABLE, "SLUICE_ENV": "development"}
    e.update(env)
    return Server(APPDIR, env=e)


def jget(port, path, want=200, timeout=10.0):
    st, _, body = get(port, path, timeout=timeout)
    check(st == want, "GET %s: %r %r (want %d)" % (path, st, body[:300], want))
    return json.loads(body)


def stmt_metrics(port):
    return {k: metric(port, "sluice_db_statement_cache_%s_total" % k, required=True)
            for k in ("hits", "misses", "evictions", "invalidations")}


# one connection, so every request runs on the same backend session
ONE = with_params(DATABASE_URL, connection_limit=1, pool_timeout=5, health_check_interval=0)


@test
def cache_hits_are_named_statements_on_the_backend():
    with server(ONE) as srv:
        before = stmt_metrics(srv.port)
        for k in range(20):
            check(jget(srv.port, "/q/1?k=%d" % k)["v"] == k + 1, "statement answers")
        after = stmt_metrics(srv.port)
        check(after["misses"] - before["misses"] == 2 and after["hits"] - before["hits"] == 18,
              "20 runs of one statement: unnamed the first time (never seen), then prepared, then 18 hits"
              " (%r -> %r)" % (before, after))
        p = jget(srv.port, "/prepared")
        check("select $1::int + 1 as v" in p["statements"], "named on the backend: %r" % p)
        # the cache is per connection: a new backend starts empty, and works
        pid = jget(srv.port, "/pid")["pid"]
        subprocess.run(["psql", DATABASE_URL, "-XAtqc", "select pg_terminate_backend(%d)" % pid], check=True,
                       stdout=subprocess.DEVNULL, timeout=30)
        def new_backend():              # a request may still meet the dying connection: a 503, not retried
            st, _, body = get(srv.port, "/pid")
            return st == 200 and json.loads(body)["pid"] != pid
        wait_for(new_backend, 15, "a new backend")
        p2 = jget(srv.port, "/prepared")
        check("select $1::int + 1 as v" not in p2["statements"], "a reconnect empties the cache: %r" % p2)
        check(jget(srv.port, "/q/1?k=5")["v"] == 6, "works on the new connection")


@test
def statement_cache_size_evicts_least_recently_used():
    with server(with_params(ONE, statement_cache_size=3)) as srv:
        before = stmt_metrics(srv.port)
        for n in range(10, 15):                    # 5 distinct statements through a cache of 3
            for k in range(2):                     # twice: a text seen once is run unnamed
                check(jget(srv.port, "/q/%d?k=%d" % (n, k))["v"] == n + k, "statement %d" % n)
        p = jget(srv.port, "/prepared")            # its own statement is new: unnamed, takes no slot
        check(p["statements"] == ["select $1::int + 12 as v", "select $1::int + 13 as v", "select $1::int + 14 as v"],
              "the backend keeps the 3 most recent, the older ones were closed: %r" % p["statements"])
        ev = stmt_metrics(srv.port)["evictions"] - before["evictions"]
        check(ev == 2, "evictions: 10 and 11 (got %r)" % ev)
        check(jget(srv.port, "/q/10?k=2")["v"] == 12, "an evicted statement runs again (parsed anew)")
    with server(with_params(ONE, statement_cache_size=0)) as srv:
        for n in range(3):
            jget(srv.port, "/q/%d" % n)
        check(jget(srv.port, "/prepared")["n"] == 0, "statement_cache_size=0: nothing named on the backend")
        m = stmt_metrics(srv.port)
        check(m["hits"] == 0 and m["misses"] == 0, "size 0: no cache to hit or miss: %r" % m)


@test
def a_statement_that_fails_to_parse_gives_the_same_error_and_is_not_cached():
    with server(with_params(ONE, statement_cache_size=0)) as off:
        want = jget(off.port, "/bad")
    with server(ONE) as srv:
        for _ in range(3):
            got = jget(srv.port, "/bad")
            check(got == want, "same error as unnamed: %r vs %r" % (got, want))
        check(want["sqlstate"] == "42601", "a syntax error: %r" % want)
        p = jget(srv.port, "/prepared")
        check(not any("nowhere_tdp" in s for s in p["statements"]), "not cached: %r" % p)
        # many at once, pipelined on the one connection: each gets the parse error, never a
        # "prepared statement ... does not exist" from queueing behind another one's failed Parse
        with ThreadPoolExecutor(16) as ex:
            for _ in range(5):
                got = list(ex.map(lambda i: jget(srv.port, "/bad"), range(48)))
                check(all(g == want for g in got), "concurrent: %r" % [g for g in got if g != want][:3])
        check(jget(srv.port, "/q/3?k=1")["v"] == 4, "the connection still works")


@test
def ddl_between_calls_is_retried_once_and_invisible():
    with server(ONE) as srv:
        check(get(srv.port, "/ddl/create")[0] == 200, "create table")
        check(jget(srv.port, "/t") == {"a": 1, "cols": 1}, "before DDL")
        check(jget(srv.port, "/t") == {"a": 1, "cols": 1}, "cached")
        inv = stmt_metrics(srv.port)["invalidations"]
        for i in range(3):
            st, _, _ = get(srv.port, "/ddl/add")
            check(st == 200, "alter table")
            r = jget(srv.port, "/t")
            check(r == {"a": 1, "cols": 2 + i}, "after DDL %d: the new column, no error: %r" % (i + 1, r))
        check(stmt_metrics(srv.port)["invalidations"] - inv == 3, "three stale plans noticed")
        # inside a transaction the failed statement aborted it: the handler gets the error, the
        # statement is parsed again next time
        check(jget(srv.port, "/t_tx")["ok"], "in a transaction, cached")
        get(srv.port, "/ddl/add")
        r = jget(srv.port, "/t_tx")
        check(r == {"ok": False, "sqlstate": "0A000"}, "stale plan inside a transaction: 0A000, not retried: %r" % r)
        check(jget(srv.port, "/t_tx") == {"ok": True, "cols": 5}, "next transaction parses it again")
        check(jget(srv.port, "/t") == {"a": 1, "cols": 5}, "and outside")


# ------------------------------------------------------------------ PgBouncer, transaction mode



def many_distinct_statements(srv, n=300, threads=16):
    """n requests over 60 distinct statements from 16 threads: every answer must be its own."""
    def one(i):
        k = random.randint(0, 1000)
        st, _, body = get(srv.port, "/q/%d?k=%d" % (i % 60, k), timeout=20)
        return st == 200 and json.loads(body)["v"] == k + i % 60, (st, body[:200])
    with ThreadPoolExecutor(threads) as ex:
        res = list(ex.map(one, range(n)))
    bad = [r[1] for r in res if not r[0]]
    check(not bad, "%d of %d wrong or failed, e.g. %r" % (len(bad), n, bad[:3]))


@test
def pgbouncer_true_works_in_transaction_mode_with_many_distinct_statements():
    with PgBouncer() as pgb:
        # 8 sluice connections over 2 server connections: sessions interleave on the server
        url = with_params(pgb.url, connection_limit=8, statement_timeout=0, pool_timeout=10, pgbouncer="true")
        with server(url) as srv:
            many_distinct_statements(srv)
            m = stmt_metrics(srv.port)
            check(m == {"hits": 0, "misses": 0, "evictions": 0, "invalidations": 0},
                  "pgbouncer=true: no statement cache at all: %r" % m)
            check("prepared statement" not in srv.log(), "no prepared-statement errors:\n" + srv.log()[-1500:])
        check("prepared statement" not in pgb.log(), "pgbouncer log:\n" + pgb.log()[-1000:])


@test
def without_pgbouncer_true_the_pool_notices_mixed_sessions():
    with PgBouncer() as pgb:
        url = with_params(pgb.url, connection_limit=8, statement_timeout=0, pool_timeout=10)
        with server(url) as srv:
            # every answer right, also while it finds out. Finding out takes a named statement run
            # on a server connection other than the one that prepared it, which PgBouncer does only
            # when the clients' statements interleave: on a loaded machine one round can run nearly
            # serially on one server connection (a loaded clean-clone run saw no warning after 300)
            for _ in range(10):
                many_distinct_statements(srv)
                if "prepared statements are off for this pool" in srv.log():
                    break
            check("prepared statements are off for this pool" in srv.log(),
                  "the pool warned about mixed sessions:\n" + srv.log()[-1500:])
            h = stmt_metrics(srv.port)["hits"]
            many_distinct_statements(srv, n=100)
            check(stmt_metrics(srv.port)["hits"] == h, "no named statement after the warning")


# ------------------------------------------------------------------ pipelining

@test
def fast_statements_are_not_held_behind_slow_ones():
    # 2 connections, pool_timeout 1 s, pipelining on (the default)
    url = with_params(DATABASE_URL, connection_limit=2, pool_timeout=1, statement_timeout=20000, health_check_interval=0)
    with server(url) as srv:
        for k in range(20):
            check(jget(srv.port, "/fast?k=%d" % k)["k"] == k, "warm: the fast statement is known")
        for rnd in range(2):                       # a new slow SQL text, then the same one again (known slow)
            tag = "tdp%d" % random.randint(0, 1 << 30) if rnd == 0 else tag
            slow_done, fast = [], []

            def slow(i):
                r = jget(srv.port, "/slow?s=4&tag=%s" % tag, timeout=60)
                slow_done.append(time.monotonic())
                return r

            with ThreadPoolExecutor(2 + 12) as ex:
                slows = [ex.submit(slow, i) for i in range(2)]
                wait_for(lambda: metric(srv.port, 'sluice_db_pool_connections{worker="0",state="idle"}') == 0 and
                         metric(srv.port, 'sluice_db_pool_connections{worker="0",state="in_use"}') == 2,
                         20, "both connections running the slow statement")

                def one(k):
                    st, _, body = get(srv.port, "/fast?k=%d" % k, timeout=60)
                    fast.append(time.monotonic())
                    return st, json.loads(body)
                res = list(ex.map(one, range(100, 112)))
                for s in slows:
                    check(s.result()["tag"] == tag, "the slow statements answer (nothing lost)")
            for k, (st, body) in zip(range(100, 112), res):
                check((st == 200 and body == {"k": k}) or (st == 503 and body["code"] == "pool_timeout"),
                      "fast statement %d: its own answer or a clean pool timeout: %r %r" % (k, st, body))
            check(max(fast) < min(slow_done),
                  "round %d: every fast statement was answered before the slow ones ended (%.2f s vs %.2f s)"
                  % (rnd, max(fast) - min(fast), min(slow_done) - min(fast)))
        check(jget(srv.port, "/fast?k=7")["k"] == 7, "the pool works afterwards")


@test
def fast_statements_share_connections_and_keep_their_answers():
    url = with_params(DATABASE_URL, connection_limit=1, pool_timeout=10, health_check_interval=0)
    with server(url) as srv:
        jget(srv.port, "/fast?k=1")

        def one(k):
            st, _, body = get(srv.port, "/fast?k=%d" % k, timeout=30)
            return st == 200 and json.loads(body) == {"k": k}
        for attempt in range(50):                  # until some statement found the connection busy
            with ThreadPoolExecutor(16) as ex:
                check(all(ex.map(one, range(attempt * 64, attempt * 64 + 64))), "every answer its own")
            if metric(srv.port, "sluice_db_pool_pipelined_total") > 0:
                break
        check(metric(srv.port, "sluice_db_pool_pipelined_total") > 0, "statements were pipelined on the one connection")
    with server(url, SLUICE_DB_PIPELINE="1") as srv:
        with ThreadPoolExecutor(16) as ex:
            check(all(ex.map(lambda k: get(srv.port, "/fast?k=%d" % k, timeout=30)[0] == 200, range(200))), "all 200")
        check(metric(srv.port, "sluice_db_pool_pipelined_total") == 0, "SLUICE_DB_PIPELINE=1: no pipelining")


def main():
    try:
        run_tests()
    finally:
        subprocess.run(["psql", DATABASE_URL, "-XAtqc", "drop table if exists " + TABLE],
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=30)
        shutil.rmtree(APPDIR, ignore_errors=True)


if __name__ == "__main__":
    main()
