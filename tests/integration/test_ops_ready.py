"""test_ops_ready.py: /ready tells the truth about the dependencies it requires (issue 17).

A private PostgreSQL cluster (tools/pg-dev in a temp dir) is stopped with `pg_ctl -m immediate
stop` while the pool's connections sit idle: /ready must answer 503 on every worker within 2 s,
and 200 again within 2 s of `pg_ctl start` returning, with no request touching the database in
between. health.ready_requires = {} keeps the instance in the balancer through the outage. With
Redis: a fail-closed limiter (limiter.redis_failure = "closed") makes /ready follow Redis, a
fail-open one does not.

Run: python3 tests/integration/test_ops_ready.py [case names]   (SLUICE_BIN overrides build/sluice)
"""
import os
import shutil
import subprocess
import tempfile
import time

import harness
from harness import ROOT, SLUICE_BIN, RedisServer, Server, check, free_port, get, metric, run_tests, test, wait_for

harness.TEST_TIMEOUT = 120          # a cluster is initialised per test
# /ready promises 2 s (docs/monitoring.md); +2 s for a loaded machine, as in tests/adversarial/
# faults.py (docs/operations.md). Still under the pool's 5 s health_interval, the fallback that
# would notice a stopped server without the idle connections' sockets telling it.
READY_BOUND = harness.scaled(2.0 + 2.0)
PG_BIN = os.environ.get("PG_BIN", "/usr/lib/postgresql/15/bin")
PGDEV = os.path.join(ROOT, "tools", "pg-dev")

CONFIG = r'''
return {
  workers = 2,
  scripts = { "app.lua" },
  log = { access = "off" },
  ratelimit = os.getenv("FIX_REDIS_URL") and { api = { limit = 100000, window = 60, paths = { "/q" } } } or false,
  database = { url = os.getenv("FIX_DATABASE_URL") },
  redis = { url = os.getenv("FIX_REDIS_URL") },
  limiter = { redis_failure = os.getenv("FIX_REDIS_FAILURE") or "open" },
  health = { ready_requires = os.getenv("FIX_READY_NONE") and {} or nil },
}
'''
APP = r'''
local app = require "sluice"
app.get("/hello", function() return "hello world\n" end)
app.get("/q", function() return { json = app.db.query("select 1 as one")[1] } end)
'''


class PrivatePG:
    """A PostgreSQL cluster of our own, so stopping it disturbs no other test."""

    def __init__(self):
        self.dir = tempfile.mkdtemp(prefix="sluice-ops-pg-")
        self.port = free_port()
        self.url = None

    def start(self):
        for _ in range(3):             # a free port can be taken between the probe and PostgreSQL's bind
            r = subprocess.run([PGDEV, "start", self.dir, str(self.port)], capture_output=True, text=True, timeout=120)
            if r.returncode == 0:
                self.url = r.stdout.strip()
                return self.url
            self.port = free_port()
        raise harness.TestFailure("tools/pg-dev start failed: %s" % r.stderr[-500:])

    def pg_ctl(self, *args):
        cmd = [os.path.join(PG_BIN, "pg_ctl"), "-D", os.path.join(self.dir, "data")] + list(args)
        if os.getuid() == 0:
            cmd = ["runuser", "-u", "postgres", "--"] + cmd
        subprocess.run(cmd, capture_output=True, timeout=60, check=True)

    def stop_immediate(self):
        self.pg_ctl("-m", "immediate", "-w", "stop")

    def start_again(self):
        self.pg_ctl("-l", os.path.join(self.dir, "postgres.log"), "-w", "-t", "60", "start")

    def cleanup(self):
        subprocess.run([PGDEV, "stop", self.dir], capture_output=True, timeout=60)
        shutil.rmtree(self.dir, ignore_errors=True)


def fixture():
    d = tempfile.mkdtemp(prefix="sluice-ops-ready-")
    for name, text in (("config.lua", CONFIG), ("app.lua", APP)):
        with open(os.path.join(d, name), "w") as f:
            f.write(text)
    return d


def ready_status(port):
    """A fresh connection each time: SO_REUSEPORT spreads them over both workers."""
    return get(port, "/ready", headers={"Connection": "close"}, timeout=3)


def pool_state(port):
    """The pools as /metrics shows them, for failure messages."""
    try:
        st, _, body = get(port, "/metrics", timeout=3)
        return [ln for ln in body.decode().splitlines()
                if ln.startswith(("sluice_db_pool_connections", "sluice_dependency_up", "sluice_db_pool_errors_total"))]
    except OSError as e:
        return repr(e)


def wait_streak(port, want, limit, what, streak=12):
    """Polls /ready until `streak` fresh probes in a row answer `want`; returns the seconds from
    now to the first probe of that streak (a failure after `limit` s)."""
    t0 = time.monotonic()
    first, n = None, 0
    while time.monotonic() - t0 < limit:
        st, _, body = ready_status(port)
        if st == want:
            if n == 0:
                first = time.monotonic()
            n += 1
            if n >= streak:
                return first - t0, body
        else:
            n = 0
        time.sleep(0.02)
    raise harness.TestFailure("%s: /ready did not answer %d on every worker within %.0f s (last: %d %r); pools: %r"
                              % (what, want, limit, st, body, pool_state(port)))


@test
def ready_follows_postgres_stopped_and_started_with_idle_connections():
    pg, d = PrivatePG(), fixture()
    try:
        url = pg.start()
        with Server(d, env={"FIX_DATABASE_URL": url}) as srv:
            for _ in range(10):                             # both workers' pools hold idle connections
                st, _, body = get(srv.port, "/q", headers={"Connection": "close"})
                check(st == 200 and b'"one":1' in body, "query before: %r %r" % (st, body))
            wait_for(lambda: metric(srv.port, 'sluice_db_pool_connections{worker="1",state="idle"}') >= 1 and
                     metric(srv.port, 'sluice_db_pool_connections{worker="0",state="idle"}') >= 1, 10, "idle connections")
            wait_streak(srv.port, 200, 10, "before the outage")

            pg.stop_immediate()                             # no request touches the database from here
            took, body = wait_streak(srv.port, 503, 10, "after pg_ctl -m immediate stop")
            print("     503 on every worker %.3f s after the stop" % took, flush=True)
            check(took <= READY_BOUND, "/ready took %.2f s to turn 503 (must be within 2 s, %g s on a loaded "
                  "machine)" % (took, READY_BOUND))
            check(b'"reason":"database unreachable"' in body, body)
            check(metric(srv.port, "sluice_ready") == 0, "sluice_ready gauge during the outage")
            check(metric(srv.port, 'sluice_dependency_up{dependency="database",required="true"}') == 0, "dependency gauge")
            st, _, body = get(srv.port, "/q")
            check(st == 503 and b"database unreachable" in body, "a query during the outage: %r %r" % (st, body))
            check(get(srv.port, "/health")[0] == 200, "liveness stays 200")

            pg.start_again()                                # returns once the server accepts connections
            took, body = wait_streak(srv.port, 200, 10, "after pg_ctl start")
            print("     200 on every worker %.3f s after the start" % took, flush=True)
            check(took <= READY_BOUND, "/ready took %.2f s to turn 200 again (must be within 2 s, %g s on a "
                  "loaded machine)" % (took, READY_BOUND))
            check(body == b'{"status":"ready"}', body)
            for _ in range(6):
                st, _, body = get(srv.port, "/q", headers={"Connection": "close"})
                check(st == 200, "query after the return: %r %r" % (st, body))
            srv.assert_alive()
    finally:
        pg.cleanup()
        shutil.rmtree(d, ignore_errors=True)


@test
def ready_requires_nothing_keeps_the_instance_in_the_balancer():
    pg, d = PrivatePG(), fixture()
    try:
        url = pg.start()
        with Server(d, env={"FIX_DATABASE_URL": url, "FIX_READY_NONE": "1"}) as srv:
            check(get(srv.port, "/q")[0] == 200, "query before")
            pg.stop_immediate()
            # the pool does know (the gauge), but /ready was told not to care
            wait_for(lambda: metric(srv.port, 'sluice_dependency_up{dependency="database",required="false"}') == 0
                     and get(srv.port, "/q", headers={"Connection": "close"})[0] == 503, 10, "the pool to notice")
            sts = {ready_status(srv.port)[0] for _ in range(12)}
            check(sts == {200}, "/ready with health.ready_requires = {}: %r" % sts)
            check(get(srv.port, "/q")[0] == 503, "queries still fail fast")
            srv.assert_alive()
    finally:
        pg.cleanup()
        shutil.rmtree(d, ignore_errors=True)


def redis_case(failure):
    r, d = RedisServer(), fixture()
    try:
        r.start()
        with Server(d, env={"FIX_REDIS_URL": r.url, "FIX_REDIS_FAILURE": failure}) as srv:
            wait_for(lambda: metric(srv.port, 'sluice_redis_connected{conn="command"}') == 2, 10, "Redis links")
            wait_streak(srv.port, 200, 10, "Redis up")
            r.kill()
            wait_for(lambda: metric(srv.port, 'sluice_redis_connected{conn="command"}') == 0, 10, "Redis loss noticed")
            required = "true" if failure == "closed" else "false"
            check(metric(srv.port, 'sluice_dependency_up{dependency="redis",required="%s"}' % required) == 0,
                  "dependency gauge while Redis is down")
            if failure == "closed":
                _, body = wait_streak(srv.port, 503, 10, "fail-closed limiter, Redis down")
                check(b'"reason":"redis unreachable"' in body, body)
                st, h, _ = get(srv.port, "/q")
                check(st == 503 and h.get("retry-after"), "a rate-limited route refuses while Redis is down: %r" % st)
                r.start()                                   # same port: the workers reconnect (backoff <= 5 s)
                wait_streak(srv.port, 200, 20, "Redis back")
            else:
                sts = {ready_status(srv.port)[0] for _ in range(12)}
                check(sts == {200}, "fail-open limiter: /ready stays 200 without Redis: %r" % sts)
                check(get(srv.port, "/hello")[0] == 200, "and requests are served")
            srv.assert_alive()
    finally:
        r.cleanup()
        shutil.rmtree(d, ignore_errors=True)


@test
def fail_closed_limiter_makes_ready_follow_redis():
    redis_case("closed")


@test
def fail_open_limiter_stays_ready_without_redis():
    redis_case("open")


@test
def ready_requires_is_validated():
    d = fixture()
    try:
        with open(os.path.join(d, "config.lua"), "w") as f:
            f.write('return { scripts = { "app.lua" }, health = { ready_requires = { "databse" } } }\n')
        p = subprocess.run([SLUICE_BIN, "check", "--config", os.path.join(d, "config.lua")], capture_output=True,
                           text=True, timeout=30)
        check(p.returncode == 1, "exit %d" % p.returncode)
        check('health.ready_requires[1]: must be one of "database", "redis"' in p.stderr and 'did you mean "database"' in p.stderr,
              p.stderr)
    finally:
        shutil.rmtree(d, ignore_errors=True)


if __name__ == "__main__":
    run_tests()
