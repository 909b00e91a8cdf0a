"""test_cancel.py: a handler abandoned by limits.request_timeout (or by its client) gives back
everything it waits on.

N requests go to handlers that wait forever: app.sleep, a pg_sleep(60) statement (some running on
the pool's connections, some queued for one), the same inside app.db.transaction, and app.http
against an upstream that accepts and never answers. With limits.request_timeout = 1 every one is
answered 503; then the Lua tasks must go (sluice_lua_tasks_active back to 0: the coroutines are
released), the pool's connections come back idle with no pg_sleep left running on the server
(PQcancel, or the connection closed), the upstream sees its connections closed (app.http resumes
the handler with a "cancelled" error, docs/http-client.md; it then ends), and the server keeps
serving. A client that hangs up while its handler sleeps frees the task the same way.

The database cases need DATABASE_URL (tools/test exports it; locally: export
DATABASE_URL=$(tools/pg-dev start /tmp/sluice-db)); without it they are reported as skipped.
Run: python3 tests/integration/test_cancel.py   (SLUICE_BIN overrides build/sluice)
"""
import os
import socket
import sys
import tempfile
import threading
from concurrent.futures import ThreadPoolExecutor

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import Server, check, get, metric, run_tests, test, wait_for  # noqa: E402

HOST = "127.0.0.1"
DATABASE_URL = os.environ.get("DATABASE_URL")
N = 6            # concurrent requests per case; the pool has 4 connections, so 2 wait for one
MARK = "tcancel_%d" % os.getpid()   # tags the statements so pg_stat_activity can find them

APP = r'''
local app = require "sluice"
local MARK = os.getenv("TC_MARK")

app.get("/hello", function() return "hello world\n" end)
app.get("/sleep", function()
  local big = string.rep("x", 1024 * 1024) .. tostring(math.random())   -- held by the parked coroutine
  app.sleep(3600)
  return #big
end)
app.get("/wake-sleep", function()      -- wakes after its request is over, then waits again
  while true do app.sleep(0.05) end
end)
app.get("/pg", function()
  app.db.query("select pg_sleep(60) /* " .. MARK .. " */")
  return "late\n"
end)
app.get("/pgtx", function()
  app.db.transaction(function() app.db.query("select pg_sleep(60) /* " .. MARK .. " */") end)
  return "late\n"
end)
app.get("/sleeping", function()        -- statements of this test still running on the server
  local r = app.db.query([[select count(*)::int as n from pg_stat_activity
    where query like '%pg_sleep(60) /* ' || $1 || ' */%' and pid <> pg_backend_pid()]], MARK)
  return { json = { n = r[1].n } }
end)
app.get("/upstream", function()
  app.http.get(os.getenv("TC_UPSTREAM"), { timeout = 60 })
  return "late\n"
end)
app.get("/upstream-then-sleep", function()   -- resumed with "cancelled", then parks again
  local res, err, kind = app.http.get(os.getenv("TC_UPSTREAM"), { timeout = 60 })
  if kind ~= "cancelled" then error("want a cancelled app.http, got " .. tostring(kind)) end
  app.sleep(3600)
  return "late\n"
end)
'''

CONFIG = r'''
return {
  workers = 1,
  scripts = { "app.lua" },
  limits = { request_timeout = 1 },
  database = { url = os.getenv("TC_DB") },
}
'''


class Blackhole:
    """An upstream that accepts connections and never answers; counts those still open."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind((HOST, 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        self.lock = threading.Lock()
        self.accepted = self.open = 0
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            with self.lock:
                self.accepted += 1
                self.open += 1
            threading.Thread(target=self._hold, args=(c,), daemon=True).start()

    def _hold(self, c):
        try:
            while c.recv(4096):       # read the request, answer nothing, until the peer closes
                pass
        except OSError:
            pass
        c.close()
        with self.lock:
            self.open -= 1

    def close(self):
        self.sock.close()


def make_app(db_url=None, upstream=None):
    d = tempfile.mkdtemp(prefix="sluice-cancel-")
    with open(os.path.join(d, "app.lua"), "w") as f:
        f.write(APP)
    with open(os.path.join(d, "config.lua"), "w") as f:
        f.write(CONFIG)
    # statements not shared on pipelined connections (the default): one alone on its connection
    # is cancelled on the server; shared ones run to their end (pgpool_query_abandon)
    env = {"TC_MARK": MARK, "SLUICE_ENV": "development", "SLUICE_DB_PIPELINE": "1"}
    if db_url:
        sep = "&" if "?" in db_url else "?"
        env["TC_DB"] = db_url + sep + "connection_limit=4&pool_timeout=20"
    if upstream:
        env["TC_UPSTREAM"] = upstream
    return Server(d, env=env)


def tasks(s):
    return metric(s.port, "sluice_lua_tasks_active", required=True)


def fire(s, path, n=N):
    """n concurrent GETs of path: every one is answered 503 by limits.request_timeout."""
    with ThreadPoolExecutor(n) as ex:
        res = list(ex.map(lambda _: get(s.port, path, timeout=30), range(n)))
    for st, h, body in res:
        check(st == 503 and b"request_timeout" in body, "GET %s: %r %r" % (path, st, body[:200]))


def settled(s, what):
    """The tasks go, and the server still answers."""
    wait_for(lambda: tasks(s) == 0, 15, "sluice_lua_tasks_active back to 0 after %s (now %r)" % (what, tasks(s)))
    st, _, body = get(s.port, "/hello")
    check(st == 200 and body == b"hello world\n", "GET /hello after %s: %r %r" % (what, st, body))


@test
def sleeping_handlers_are_released():
    with make_app() as s:
        check(tasks(s) == 0, "tasks before: %r" % tasks(s))
        fire(s, "/sleep")
        settled(s, "app.sleep(3600)")
        fire(s, "/wake-sleep")
        settled(s, "a handler that sleeps again after its timeout")
        s.assert_alive()


@test
def client_hanging_up_releases_its_handler():
    with make_app() as s:
        conns = []
        for _ in range(N):
            c = socket.create_connection((HOST, s.port))
            c.sendall(b"GET /sleep HTTP/1.1\r\nHost: x\r\n\r\n")
            conns.append(c)
        wait_for(lambda: tasks(s) == N, 15, "%d parked handlers (now %r)" % (N, tasks(s)))
        for c in conns:
            c.close()
        wait_for(lambda: tasks(s) == 0, 15, "the handlers of closed connections released (now %r)" % tasks(s))
        s.assert_alive()


def db_settled(s, what):
    settled(s, what)
    wait_for(lambda: metric(s.port, 'sluice_db_pool_connections{worker="0",state="in_use"}') == 0, 15,
             "the pool's connections given back after %s" % what)
    wait_for(lambda: get(s.port, "/sleeping")[2] == b'{"n":0}', 15,
             "no pg_sleep of this test left running on the server after %s (%r)" % (what, get(s.port, "/sleeping")[2]))


@test
def waiting_queries_are_cancelled():
    if not DATABASE_URL:
        print("skip waiting_queries_are_cancelled: DATABASE_URL is not set")
        return
    with make_app(db_url=DATABASE_URL) as s:
        fire(s, "/pg")
        db_settled(s, "pg_sleep(60) on the pool and queued for it")
        fire(s, "/pgtx")
        db_settled(s, "pg_sleep(60) inside app.db.transaction")
        st, _, body = get(s.port, "/sleeping")        # the pool serves statements again
        check(st == 200 and body == b'{"n":0}', "a query after the cancellations: %r %r" % (st, body))
        s.assert_alive()


@test
def outbound_requests_are_cancelled():
    up = Blackhole()
    try:
        with make_app(upstream="http://%s:%d/never" % (HOST, up.port)) as s:
            fire(s, "/upstream")
            settled(s, "app.http against an upstream that never answers")
            check(up.accepted == N, "upstream connections: %d (want %d)" % (up.accepted, N))
            wait_for(lambda: up.open == 0, 15, "the outbound connections closed (%d open)" % up.open)
            errors = metric(s.port, "sluice_lua_errors_total") or 0
            fire(s, "/upstream-then-sleep")     # abandoned at the sleep that follows the cancelled call
            settled(s, "a handler that sleeps after its cancelled app.http")
            check(up.accepted == 2 * N, "upstream connections: %d (want %d)" % (up.accepted, 2 * N))
            check((metric(s.port, "sluice_lua_errors_total") or 0) == errors, "the handlers raised: %s" % s.log()[-1500:])
            wait_for(lambda: up.open == 0, 15, "the outbound connections closed (%d open)" % up.open)
            s.assert_alive()
    finally:
        up.close()


if __name__ == "__main__":
    run_tests()
