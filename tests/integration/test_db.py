"""test_db.py: app.db against a real PostgreSQL (issue 7).

Covers: Lua types and NULLs, SQL-injection attempts through parameters (stored verbatim), a Lua
error inside app.db.transaction (rolled back, nothing leaks to the next request on the same
connection), pool exhaustion (fast 503 with Retry-After after pool_timeout), a statement timeout,
pg_terminate_backend of a pooled connection, LISTEN/NOTIFY turned into an SSE publish (also
after a hot reload, which moves the listener to the new scripts), metrics (wait histogram,
errors by SQLSTATE class, the listener counted against connection_limit), a fast restart
(`pg_ctl stop -m fast`, 5 s down, start) of a private cluster under load (200 or fast 503 only,
none past pool_timeout, the pool refills, the listener comes back, no leaked file descriptors),
and PgBouncer in transaction mode.

Needs DATABASE_URL (tools/test exports it; locally: export DATABASE_URL=$(tools/pg-dev start
/tmp/sluice-db)). The restart test starts its own cluster with tools/pg-dev in a temp dir.
Run: python3 tests/integration/test_db.py   (SLUICE_BIN overrides build/sluice)
"""
import json
import os
import random
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import ROOT, SLUICE_BIN, SSEClient, Server, metric, wait_for, check, free_port, get, post, run_tests, test  # noqa: E402

HOST = "127.0.0.1"
PG_DEV = os.path.join(ROOT, "tools", "pg-dev")
DATABASE_URL = os.environ.get("DATABASE_URL")
if not DATABASE_URL:
    sys.exit("test_db.py: DATABASE_URL is not set; run under tools/test, or:\n"
             "  export DATABASE_URL=$(tools/pg-dev start /tmp/sluice-db)")
TABLE = "tdb_%d_%d" % (os.getpid(), random.randint(0, 1 << 20))
CHANNEL = "tdb_chan_%d" % os.getpid()

APP = r'''
local app = require "sluice"
local T = os.getenv("TDB_TABLE")

app.get("/hello", function() return "hello world\n" end)

app.get("/setup", function()
  app.db.query("create table if not exists " .. T .. " (id serial primary key, v text, n int)")
  return "ok\n"
end)

app.get("/types", function()
  local r = app.db.query([[select 42::int as i, 9007199254740993::bigint as big, 2.5::float8 as f,
      12.50::numeric as n, true as b, 'x'::text as t, null::text as nul, '{"a":[1,2]}'::jsonb as j,
      $1::text as p, $2::int as pnull, $3::int + 1 as pint, $4::bool as pbool]], "param", nil, 41, false)[1]
  return { json = { i = r.i, big = r.big, f = r.f, n = r.n, b = r.b, t = r.t, j = r.j, p = r.p, pint = r.pint,
    pbool = r.pbool, nul_absent = r.nul == nil, pnull_absent = r.pnull == nil,
    ty = { i = type(r.i), big = type(r.big), f = type(r.f), n = type(r.n), b = type(r.b), j = type(r.j) } } }
end)

app.post("/items", function(req)
  local rows = app.db.query("insert into " .. T .. " (v) values ($1) returning id", req.body)
  return { status = 201, json = { id = rows[1].id, affected = rows.affected } }
end)

app.get("/items/:id", function(req)
  local rows = app.db.query("select v from " .. T .. " where id = $1", req.params.id)
  if #rows == 0 then return { status = 404, body = "" } end
  return { body = rows[1].v }
end)

app.get("/count", function()
  return { json = { n = app.db.query("select count(*)::int as n from " .. T)[1].n } }
end)

app.post("/txfail", function()
  app.db.transaction(function()
    app.db.query("insert into " .. T .. " (v) values ('txfail')")
    error("boom inside the transaction")
  end)
  return "not reached\n"
end)

app.post("/txok", function()
  local id = app.db.transaction(function()
    local a = app.db.query("insert into " .. T .. " (v) values ('txok') returning id")[1].id
    app.db.query("update " .. T .. " set n = 7 where id = $1", a)
    return a
  end)
  return { json = { id = id } }
end)

app.get("/txstate", function()
  local r = app.db.query([[select txid_current_if_assigned() as x, current_setting('transaction_isolation') as iso,
      (select count(*)::int from ]] .. T .. [[ where v = 'txfail') as leaked]])[1]
  -- SAVEPOINT fails outside a transaction block: it succeeds only on a connection left mid-transaction
  local ok, err = pcall(app.db.query, "savepoint tdb_probe")
  return { json = { x_absent = r.x == nil, fresh = not ok and err.sqlstate == "25P01", iso = r.iso, leaked = r.leaked } }
end)

app.get("/begin_leak", function()   -- a BEGIN without COMMIT: never shares its connection
  app.db.query("begin")
  app.db.query("select 1")
  return "ok\n"
end)

app.get("/pid", function() return { json = { pid = app.db.query("select pg_backend_pid() as pid")[1].pid } } end)

app.get("/sleep", function(req)  -- a transaction holds its connection exclusively
  -- s seconds in steps of at most 1 s, each under statement_timeout (1.5 s), so a test can hold a
  -- connection long enough to tell its behaviour apart from a slow machine's
  local left = tonumber(req.query.s or "1")
  app.db.transaction(function()
    while left > 0 do
      app.db.query("select pg_sleep($1)", math.min(left, 1))
      left = left - 1
    end
  end)
  return "slept\n"
end)

app.get("/catch_sleep", function(req)
  local ok, err = pcall(app.db.query, "select pg_sleep($1)", tonumber(req.query.s or "3"))
  return { json = { ok = ok, sqlstate = not ok and err.sqlstate or nil, msg = not ok and tostring(err) or nil } }
end)

app.get("/kill/:pid", function(req)
  return { json = { ok = app.db.query("select pg_terminate_backend($1::int) as ok", req.params.pid)[1].ok } }
end)

app.get("/bad", function()
  local ok, err = pcall(app.db.query, "select * from no_such_table_tdb")
  return { json = { sqlstate = err.sqlstate, msg = tostring(err) } }
end)

app.get("/pk", function() return { json = app.db.query("select $1::int as k", 1)[1] } end)

app.post("/notify", function(req)
  app.db.query("select pg_notify($1, $2)", req.query.ch or os.getenv("TDB_CHANNEL"), req.body)
  return "sent\n"
end)

app.sse("/events/:room", function(req) return { channel = "room:" .. req.params.room } end)

app.db.listen(os.getenv("TDB_CHANNEL"), function(payload, channel)
  app.publish("room:n", { event = "VERSION", data = channel .. "|" .. payload })
end)
'''

CONFIG = r'''
return {
  workers = tonumber(os.getenv("TDB_WORKERS") or "1"),
  scripts = { "app.lua" },
  ratelimit = {
    api = { limit = 10000000, window = 900, key = "ip", paths = { "/" } },
    monitoring = { limit = 10000000, window = 60, key = "ip", paths = { "/metrics", "/health", "/ready" } },
  },
  sse = { heartbeat = 30 },
  database = { url = os.getenv("TDB_URL") },
}
'''


def with_params(url, **params):
    sep = "&" if "?" in url else "?"
    return url + sep + "&".join("%s=%s" % kv for kv in params.items())


def make_app(version="v1"):
    d = tempfile.mkdtemp(prefix="sluice-db-")
    with open(os.path.join(d, "app.lua"), "w") as f:
        f.write(APP.replace("VERSION", version))
    with open(os.path.join(d, "config.lua"), "w") as f:
        f.write(CONFIG)
    return d


def server(d, url, workers=1, pipeline=8):
    # pipeline: SLUICE_DB_PIPELINE (statements shared per connection; sluice's default is 1 = off)
    return Server(d, env={"TDB_URL": url, "TDB_TABLE": TABLE, "TDB_CHANNEL": CHANNEL, "TDB_WORKERS": str(workers),
                          "SLUICE_ENV": "development", "SLUICE_DB_PIPELINE": str(pipeline)})


def jget(port, path, want=200, timeout=5.0):
    st, h, body = get(port, path, timeout=timeout)
    check(st == want, "GET %s: %r %r (want %d)" % (path, st, body[:300], want))
    return json.loads(body) if body[:1] in (b"{", b"[") else body



class SSE(SSEClient):
    """The shared client, subscribed or failing the test."""

    def __init__(self, port, path):
        super().__init__(port, path)
        check(self.status == 200, "SSE subscribe: %r" % self.head[:100])


def fd_count(pid):
    return len(os.listdir("/proc/%d/fd" % pid))


# sessions in a /sleep transaction (active in a pg_sleep, or between two of them); an idle pooled
# connection whose last statement happened to be a pg_sleep is not one
SLEEPING = "from pg_stat_activity where query like 'select pg_sleep(%' and state <> 'idle' and pid <> pg_backend_pid()"


def sleeping_queries():
    """How many /sleep queries PostgreSQL is running right now."""
    out = subprocess.run(["psql", DATABASE_URL, "-XAtqc", "select count(*) " + SLEEPING], capture_output=True,
                         text=True, timeout=30).stdout.strip()
    return int(out or -1)


# ------------------------------------------------------------------ the shared server

# workers = 1 and connection_limit = 3: one LISTEN connection + a pool of 2, so "the same worker"
# and "the same connection" are deterministic; pool_timeout 0.5 s, statement_timeout 1.5 s; no
# background health pings (a ping in flight on the idle connection would hand out the other one:
# "same connection reused" failed once on a loaded machine).
MAIN_URL = with_params(DATABASE_URL, connection_limit=3, pool_timeout=0.5, statement_timeout=1500,
                       health_check_interval=0)
APPDIR = make_app()
MAIN = None


@test
def types_and_nulls_come_back_as_lua_values():
    jget(MAIN.port, "/setup", want=200)
    r = jget(MAIN.port, "/types")
    check(r["i"] == 42 and r["ty"]["i"] == "number", "int: %r" % r)
    check(r["big"] == "9007199254740993" and r["ty"]["big"] == "string", "big int kept exact as a string: %r" % r)
    check(r["f"] == 2.5 and r["n"] == 12.5 and r["ty"]["n"] == "number", "float/numeric: %r" % r)
    check(r["b"] is True and r["ty"]["b"] == "boolean", "bool: %r" % r)
    check(r["j"] == {"a": [1, 2]} and r["ty"]["j"] == "table", "jsonb decoded: %r" % r)
    check(r["t"] == "x" and r["p"] == "param" and r["pint"] == 42 and r["pbool"] is False, "params: %r" % r)
    check(r["nul_absent"] is True and r["pnull_absent"] is True, "NULL is nil: %r" % r)
    r = jget(MAIN.port, "/bad")
    check(r["sqlstate"] == "42P01" and "no_such_table_tdb" in r["msg"], "error table: %r" % r)


@test
def injection_attempts_through_parameters_are_stored_verbatim():
    evil = ["'); drop table %s; --" % TABLE, "x' or '1'='1", "$1", "\\'; select pg_sleep(10); --",
            "Robert\"); DROP TABLE students;--", "caf\u00e9 \u2603 \U0001F600", "a\tb\nc", " ; "]
    for v in evil:
        st, _, body = post(MAIN.port, "/items", v.encode())
        check(st == 201, "insert %r: %r %r" % (v, st, body))
        r = json.loads(body)
        check(r["affected"] == 1, "affected: %r" % r)
        st, _, got = get(MAIN.port, "/items/%d" % r["id"])
        check(st == 200 and got.decode() == v, "stored %r, read back %r" % (v, got))
    check(jget(MAIN.port, "/count")["n"] >= len(evil), "the table survived")
    st, _, body = get(MAIN.port, "/items/1%20or%201=1")
    check(st == 500 and b"22P02" in body, "a non-integer id is an error, not SQL: %r %r" % (st, body[:200]))


@test
def lua_error_in_transaction_rolls_back_and_leaks_nothing():
    before = jget(MAIN.port, "/count")["n"]
    pid = jget(MAIN.port, "/pid")["pid"]
    st, _, body = post(MAIN.port, "/txfail", b"")
    check(st == 500 and b"boom inside the transaction" in body, "txfail: %r %r" % (st, body[:300]))
    # the most recently used idle connection is handed out next: the one the transaction used
    check(jget(MAIN.port, "/pid")["pid"] == pid, "same connection reused")
    r = jget(MAIN.port, "/txstate")
    check(r["x_absent"] and r["fresh"] and r["leaked"] == 0 and r["iso"] == "read committed",
          "state after the failed transaction: %r" % r)
    check(jget(MAIN.port, "/count")["n"] == before, "nothing committed")
    st, _, body = post(MAIN.port, "/txok", b"")
    r = json.loads(body)
    check(st == 200 and isinstance(r["id"], int), "committed transaction returns fn's value: %r" % r)
    check(jget(MAIN.port, "/count")["n"] == before + 1, "commit persisted")


@test
def pool_exhaustion_gives_fast_503_with_retry_after():
    results = []

    def slow():
        results.append(get(MAIN.port, "/sleep?s=5", timeout=30)[0])

    ths = [threading.Thread(target=slow) for _ in range(2)]
    for t in ths:
        t.start()
    # both pool connections are busy once PostgreSQL runs both sleeps (not after a guessed delay)
    wait_for(lambda: sleeping_queries() == 2, 15, "both slow queries to run")
    t0 = time.monotonic()
    st, h, body = get(MAIN.port, "/pk", timeout=30)
    took = time.monotonic() - t0
    for t in ths:
        t.join()
    check(st == 503 and h.get("retry-after"), "exhausted pool: %r %r %r" % (st, h, body[:200]))
    check(b"pool timeout" in body, "says why: %r" % body[:200])
    # not before pool_timeout (0.5 s), and far from both the 5 s a freed connection would take and
    # the 10 s default pool_timeout: the bound tells them apart on any machine
    check(0.4 <= took <= 3.0, "answered after pool_timeout (0.5 s), took %.2f s" % took)
    check(results == [200, 200], "the slow requests finished: %r" % results)
    check(metric(MAIN.port, 'sluice_db_pool_timeouts_total{worker="0"}') >= 1, "timeout counted")
    check(jget(MAIN.port, "/pk") == {"k": 1}, "pool usable again")


@test
def shared_pipelined_statements_keep_errors_and_transactions_apart():
    # 2 pool connections, 48 concurrent one-shot statements: they share connections in pipeline
    # mode; an error in one must not touch its neighbours, nor may a BEGIN sent through
    # app.db.query pull the next callers into its transaction
    paths = ["/pk", "/bad", "/pid", "/begin_leak"] * 12
    with ThreadPoolExecutor(24) as ex:
        res = list(ex.map(lambda p: (p,) + get(MAIN.port, p, timeout=10), paths))
    for p, st, _, body in res:
        if p == "/pk":
            check(st == 200 and json.loads(body) == {"k": 1}, "/pk: %r %r" % (st, body[:200]))
        elif p == "/bad":
            check(st == 200 and json.loads(body)["sqlstate"] == "42P01", "/bad: %r %r" % (st, body[:200]))
        else:
            check(st == 200, "%s: %r %r" % (p, st, body[:200]))
    r = jget(MAIN.port, "/txstate")
    check(r["x_absent"] and r["fresh"], "no transaction left open: %r" % r)


@test
def statement_timeout_cancels_the_query():
    t0 = time.monotonic()
    r = jget(MAIN.port, "/catch_sleep?s=20", timeout=30)
    took = time.monotonic() - t0
    check(r["ok"] is False and r["sqlstate"] == "57014" and "statement timeout" in r["msg"], "statement timeout: %r" % r)
    # not before statement_timeout (1.5 s); the upper bound only has to tell it from the 20 s query
    # running to its end
    check(1.3 <= took <= 10, "cancelled after statement_timeout 1.5 s, took %.2f s" % took)
    check(jget(MAIN.port, "/pk") == {"k": 1}, "connection usable after the timeout")


@test
def terminated_backend_is_dropped_not_reused():
    pid = jget(MAIN.port, "/pid")["pid"]
    # kill it while idle: the pool notices the closed socket and opens a fresh one
    lost = 'sluice_db_pool_errors_by_class_total{worker="0",class="08"}'     # lost connections
    lost0 = metric(MAIN.port, lost) or 0
    subprocess.run(["psql", DATABASE_URL, "-XAtqc", "select pg_terminate_backend(%d)" % pid], check=True,
                   stdout=subprocess.DEVNULL, timeout=10)
    # the pool drops it when its socket closes (counted as a lost connection; a probe then takes
    # its place): wait for that, not for a guessed 0.2 s
    wait_for(lambda: (metric(MAIN.port, lost) or 0) >= lost0 + 1, 15, "the pool to drop the killed idle connection")
    for _ in range(3):
        check(jget(MAIN.port, "/pid")["pid"] != pid, "a terminated connection was reused")
    # kill it mid-query: that request fails fast with 503, the next ones succeed
    got = {}

    def slow():
        got["r"] = get(MAIN.port, "/sleep?s=30", timeout=60)
        got["t"] = time.monotonic()

    th = threading.Thread(target=slow)
    th.start()
    # wait until the query is really running (a loaded machine may take a while to dispatch it)
    wait_for(lambda: sleeping_queries() == 1, 15, "the slow query to start")
    out = subprocess.run(["psql", DATABASE_URL, "-XAtqc", "select pg_terminate_backend(pid) " + SLEEPING],
                         capture_output=True, text=True, timeout=10)
    t_kill = time.monotonic()
    th.join()
    st, h, body = got["r"]
    check(out.stdout.strip() == "t", "killed one backend: %r" % out.stdout)
    # "terminating connection" (not a 200 after the sleep) proves the request failed when the
    # backend died instead of waiting; the bound only rules out a hang (the query sleeps 30 s)
    check(st == 503 and b"terminating connection" in body, "killed mid-query: %r %r" % (st, body[:200]))
    check(got["t"] - t_kill < 10, "answered at once, not hung: %.2f s" % (got["t"] - t_kill))
    check(jget(MAIN.port, "/pk") == {"k": 1}, "next request works")
    check(metric(MAIN.port, 'sluice_db_pool_errors_by_class_total{worker="0",class="57"}') >= 1, "57P01 counted by class")


@test
def notify_becomes_an_sse_event():
    check(metric(MAIN.port, "sluice_db_listen_up") == 1, "listener connected")
    # connection_limit = 3 on one worker: the listener takes one, the pool gets 2
    check(metric(MAIN.port, 'sluice_db_pool_cap{worker="0"}') == 2, "listener counted against connection_limit")
    s = SSE(MAIN.port, "/events/n")
    try:
        for i in range(3):
            post(MAIN.port, "/notify", ("hello %d" % i).encode())
        ev = s.events(3)
        check([e.get("data") for e in ev] == ["%s|hello %d" % (CHANNEL, i) for i in range(3)], "events: %r" % ev)
        check(all(e.get("event") == "v1" for e in ev), "from the v1 scripts: %r" % ev)
        # a NOTIFY from outside sluice (psql) arrives the same way
        subprocess.run(["psql", DATABASE_URL, "-XAtqc", "notify %s, 'from psql'" % CHANNEL], check=True,
                       stdout=subprocess.DEVNULL, timeout=10)
        ev = s.events(1)
        check(ev and ev[0]["data"] == CHANNEL + "|from psql", "psql NOTIFY: %r" % ev)
        # another channel is not listened to
        post(MAIN.port, "/notify?ch=tdb_other", b"nope")
        check(s.events(1, timeout=0.5) == [], "only the registered channel")
    finally:
        s.close()


@test
def reload_moves_the_listener_to_the_new_scripts():
    with open(os.path.join(APPDIR, "app.lua"), "w") as f:
        f.write(APP.replace("VERSION", "v2"))
    r = subprocess.run([SLUICE_BIN, "reload", "--config", os.path.join(APPDIR, "config.lua")],
                       capture_output=True, text=True, timeout=20, env=dict(MAIN.env))
    check(r.returncode == 0, "reload: %r %r" % (r.stdout, r.stderr))
    s = SSE(MAIN.port, "/events/n")
    try:
        post(MAIN.port, "/notify", b"after reload")
        ev = s.events(1)
        check(ev and ev[0].get("event") == "v2" and ev[0]["data"] == CHANNEL + "|after reload",
              "the new state's function ran: %r" % ev)
        check(s.events(1, timeout=0.4) == [], "exactly once (the old function is gone)")
    finally:
        s.close()
    check(metric(MAIN.port, 'sluice_db_pool_cap{worker="0"}') == 2, "cap unchanged by the reload")


@test
def metrics_have_wait_histogram_and_error_classes():
    st, _, body = get(MAIN.port, "/metrics")
    text = body.decode()
    check("# TYPE sluice_db_pool_wait_duration_seconds histogram" in text, "histogram TYPE")
    check('sluice_db_pool_wait_duration_seconds_bucket{worker="0",le="+Inf"}' in text, "+Inf bucket")
    count = metric(MAIN.port, 'sluice_db_pool_wait_duration_seconds_count{worker="0"}')
    check(count and count > 10, "acquires recorded: %r" % count)
    check(metric(MAIN.port, 'sluice_db_pool_errors_by_class_total{worker="0",class="42"}') >= 1, "42P01 counted")
    check(metric(MAIN.port, 'sluice_db_pool_errors_by_class_total{worker="0",class="22"}') >= 1, "22P02 counted")
    promtool = shutil.which("promtool")
    if promtool:
        r = subprocess.run([promtool, "check", "metrics"], input=body, capture_output=True, timeout=20)
        check(r.returncode == 0,
              "promtool: %r" % (r.stdout + r.stderr)[:600])


# ------------------------------------------------------------------ a private cluster: restarts

@test
def restart_under_load_fast_503s_refill_no_fd_leak():
    pgdir = tempfile.mkdtemp(prefix="sluice-db-pg-")
    os.chmod(pgdir, 0o755)
    port = free_port()
    try:
        url = subprocess.run([PG_DEV, "start", pgdir, str(port)], capture_output=True, text=True, check=True,
                             timeout=60).stdout.strip()
        d = make_app()
        try:
            with server(d, with_params(url, connection_limit=7, pool_timeout=1), workers=2) as srv:
                pool_timeout = 1.0
                jget(srv.port, "/setup")
                pid = srv.proc.pid

                def hit(_):
                    t0 = time.monotonic()
                    try:
                        st, h, _ = get(srv.port, "/pk", timeout=10)
                    except OSError as e:
                        st, h = repr(e), {}
                    return st, time.monotonic() - t0, h.get("retry-after")

                def load(seconds, threads=16, until=None):
                    out, end = [], time.monotonic() + seconds
                    with ThreadPoolExecutor(threads) as ex:
                        while time.monotonic() < end if until is None else not until():
                            out += list(ex.map(hit, range(threads)))
                    return out

                warm = load(1.0)
                check(all(r[0] == 200 for r in warm), "warm-up: %r" % [r for r in warm if r[0] != 200][:5])
                wait_for(lambda: metric(srv.port, "sluice_db_listen_up") == 1, 15, "listener")
                fds_before = fd_count(pid)
                restarted = {}

                # The server stays down for 5 s: long enough that a request waiting for it to come
                # back (instead of failing within pool_timeout) stands out from a loaded machine's
                # slowness by seconds (the bound below).
                down_s = 5.0

                def restart():
                    try:
                        time.sleep(0.7)
                        for cmd in ("stop", "start"):
                            subprocess.run([PG_DEV, cmd, pgdir], check=True, timeout=120,         # same port
                                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                            if cmd == "stop":
                                restarted["stopped"] = time.monotonic()
                                time.sleep(down_s)
                    except Exception as e:  # noqa: BLE001
                        restarted["err"] = repr(e)
                    finally:
                        restarted["at"] = time.monotonic()

                rt = threading.Thread(target=restart)
                rt.start()
                # the load goes on until a second after the server is back
                res = load(0, until=lambda: "at" in restarted and time.monotonic() > restarted["at"] + 1.0)
                rt.join()
                check("stopped" in restarted and "err" not in restarted, "stop/start of the private server: %r" % restarted)
                print("     restart under load: %d requests, %d x 200, %d x 503, slowest %.3f s" % (
                    len(res), sum(1 for r in res if r[0] == 200), sum(1 for r in res if r[0] == 503),
                    max(r[1] for r in res)), flush=True)
                bad = [r for r in res if r[0] not in (200, 503)]
                check(not bad, "only 200 or 503 during the restart: %r" % bad[:5])
                n503 = [r for r in res if r[0] == 503]
                check(n503, "no 503 while the server was down for %.0f s" % down_s)
                check(all(r[2] for r in n503), "503s carry Retry-After")
                slowest = max(r[1] for r in res)
                # pool_timeout (1 s) plus room for a loaded machine, well under the 5 s outage
                check(slowest <= pool_timeout + 2.0, "a request waited %.2f s (pool_timeout %.1f s, server down %.0f s)"
                      % (slowest, pool_timeout, down_s))
                # the pool refills and the listener comes back: on both workers, each of which
                # probes the server on its own backoff (at most 2.5 s apart), so one 200 is not it
                def refilled():
                    with ThreadPoolExecutor(16) as ex:
                        return all(r[0] == 200 for r in ex.map(hit, range(16)))
                wait_for(refilled, 15, "pool refilled on both workers")
                after = load(1.0)
                check(all(r[0] == 200 for r in after), "after the restart: %r" % [r for r in after if r[0] != 200][:5])
                wait_for(lambda: metric(srv.port, "sluice_db_listen_up") == 1, 15, "listener reconnected")
                check(metric(srv.port, "sluice_db_listen_reconnects_total") >= 1, "listener saw the restart")
                s = SSE(srv.port, "/events/n")
                try:
                    post(srv.port, "/notify", b"after restart")
                    ev = s.events(1)
                    check(ev and ev[0]["data"] == CHANNEL + "|after restart", "NOTIFY after restart: %r" % ev)
                finally:
                    s.close()
                conns = sum(metric(srv.port, 'sluice_db_pool_connections{worker="%d",state="%s"}' % (w, st)) or 0
                            for w in (0, 1) for st in ("idle", "in_use", "connecting"))
                check(conns <= 6, "pool within connection_limit - listener: %r" % conns)
                wait_for(lambda: fd_count(pid) <= fds_before, 15,
                         "fd count back to %d (now %d)" % (fds_before, fd_count(pid)))
        finally:
            shutil.rmtree(d, ignore_errors=True)
    finally:
        subprocess.run([PG_DEV, "stop", pgdir], timeout=60)
        shutil.rmtree(pgdir, ignore_errors=True)


# ------------------------------------------------------------------ PgBouncer, transaction mode

@test
def works_through_pgbouncer_in_transaction_mode():
    with harness.PgBouncer(DATABASE_URL) as pgb:
        # statement_timeout=0: SET is session state, which transaction pooling does not keep
        with server(APPDIR, with_params(pgb.url, connection_limit=8, statement_timeout=0, pool_timeout=5),
                    workers=2) as srv:
            jget(srv.port, "/setup")
            r = jget(srv.port, "/types")
            check(r["p"] == "param" and r["pnull_absent"] and r["big"] == "9007199254740993", "types via pgbouncer: %r" % r)
            before = jget(srv.port, "/count")["n"]
            # 8 sluice connections share 2 server connections: statements of different clients
            # interleave on one server connection, which breaks named prepared statements
            with ThreadPoolExecutor(16) as ex:
                res = list(ex.map(lambda i: post(srv.port, "/items", ("pgb %d" % i).encode())[0], range(200)))
                tx = list(ex.map(lambda i: post(srv.port, "/txok", b"")[0], range(50)))
                fails = list(ex.map(lambda i: post(srv.port, "/txfail", b"")[0], range(20)))
            check(res == [201] * 200, "inserts via pgbouncer: %r" % sorted(set(res)))
            check(tx == [200] * 50, "transactions via pgbouncer: %r" % sorted(set(tx)))
            check(fails == [500] * 20, "failing transactions: %r" % sorted(set(fails)))
            check(jget(srv.port, "/count")["n"] == before + 250, "200 inserts + 50 transactions, no rolled-back rows")
            r = jget(srv.port, "/txstate")
            check(r["x_absent"] and r["leaked"] == 0, "no leaked transaction: %r" % r)
        log = pgb.log()
        check("prepared statement" not in log, "pgbouncer log mentions prepared statements:\n" + log[-1000:])


def main():
    global MAIN
    MAIN = server(APPDIR, MAIN_URL)
    MAIN.start()
    try:
        run_tests()
    finally:
        try:
            subprocess.run(["psql", DATABASE_URL, "-XAtqc", "drop table if exists " + TABLE],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=10)
            if MAIN.proc.poll() is None:
                MAIN.stop()
        finally:
            MAIN.cleanup()
            shutil.rmtree(APPDIR, ignore_errors=True)


if __name__ == "__main__":
    main()
