"""test_pg_failover.py: PostgreSQL primary failover with libpq's own multi-host support (issue 22).

Two private PostgreSQL 15 clusters on loopback: a primary (tools/pg-dev) and a streaming standby
made with `pg_basebackup -R`. sluice runs with
    DATABASE_URL=postgresql://sluice:sluice@127.0.0.1:P1,127.0.0.1:P2/sluice?target_session_attrs=read-write
With a write load running, the primary is stopped (`pg_ctl stop -m immediate`) and the standby
promoted (`pg_ctl promote`). Checked:
  - every request answers within a bound (pool_timeout + statement time): no hang;
  - failures during the switch are 503 (pool could not connect in time) or 500 with the database
    error in the log, never anything else;
  - requests succeed again soon after the promotion, on the new primary (its port): within 10 s
    here (the pool retries at most every 2.5 s; bench/RESULTS.md has the measured 0.2-1 s against
    the spec's 5 s, on a quiet machine);
  - rows written before the stop and after the promotion are all on the new primary;
  - app.db.read against a replica URL pointing at the stopped server fails clearly, not silently.
Run: python3 tests/integration/test_pg_failover.py   (SLUICE_BIN overrides build/sluice)
"""
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import ROOT, Server, check, free_port, get, post, run_tests, test, wait_for  # noqa: E402

PG_DEV = os.path.join(ROOT, "tools", "pg-dev")
BIN = os.environ.get("PG_BIN", "/usr/lib/postgresql/15/bin")


def as_pg(*cmd, **kw):
    if os.getuid() == 0:
        cmd = ("runuser", "-u", "postgres", "--") + cmd
    return subprocess.run(cmd, capture_output=True, text=True, timeout=kw.pop("timeout", 60), **kw)


APP = r'''
local app = require "sluice"
app.get("/setup", function()
  app.db.query("create table if not exists fo_items (id serial primary key, v text)")
  return "ok\n"
end)
app.post("/items", function(req)
  local r = app.db.query("insert into fo_items (v) values ($1) returning id, inet_server_port() as port", req.body)
  return { status = 201, json = { id = r[1].id, port = r[1].port } }
end)
app.get("/items", function()
  local r = app.db.query("select count(*)::int as n, inet_server_port() as port from fo_items")
  return { json = r[1] }
end)
app.get("/replica", function()
  local r = app.db.read("select inet_server_port() as port")
  return { json = r[1] }
end)
'''

CONFIG = r'''
return {
  workers = 2,
  scripts = { "app.lua" },
  log = { access = "off" },
  -- the writers send thousands of requests (more on a slow machine, which stays longer in the
  -- switch): the default API policy (1,000 per 15 min) answered 429 to the rest
  ratelimit = false,
  database = { url = os.getenv("FO_URL"), replica_urls = { os.getenv("FO_REPLICA") } },
}
'''


class Clusters:
    """A primary and a streaming standby in one temp dir."""

    def __init__(self):
        self.dir = tempfile.mkdtemp(prefix="sluice-fo-")
        os.chmod(self.dir, 0o755)
        self.p1, self.p2 = free_port(), free_port()
        self.primary = os.path.join(self.dir, "primary")
        self.standby = os.path.join(self.dir, "standby")

    def start(self):
        os.makedirs(self.primary)
        url = subprocess.run([PG_DEV, "start", self.primary, str(self.p1)], capture_output=True, text=True,
                             check=True, timeout=90).stdout.strip()
        self.user_url = url
        data = os.path.join(self.primary, "data")
        # replication over the unix socket for pg_basebackup, trusted like the rest of the socket
        r = as_pg("sh", "-c", "echo 'local replication all trust' >> '%s/pg_hba.conf'" % data)
        check(r.returncode == 0, r.stderr)
        r = as_pg(BIN + "/pg_ctl", "-D", data, "reload")
        check(r.returncode == 0, r.stderr)
        os.makedirs(self.standby)
        if os.getuid() == 0:
            shutil.chown(self.standby, "postgres")
        sdata = os.path.join(self.standby, "data")
        r = as_pg(BIN + "/pg_basebackup", "-h", self.primary, "-p", str(self.p1), "-U", "postgres",
                  "-D", sdata, "-R", "-X", "stream", "-c", "fast", timeout=120)
        check(r.returncode == 0, "pg_basebackup: " + r.stderr)
        r = as_pg("sh", "-c", "echo \"port = %d\" > '%s/pg-dev-port.conf' && echo \"unix_socket_directories = '%s'\" >> '%s/postgresql.conf'"
                  % (self.p2, sdata, self.standby, sdata))
        check(r.returncode == 0, r.stderr)
        r = as_pg(BIN + "/pg_ctl", "-D", sdata, "-l", os.path.join(self.standby, "postgres.log"), "-w", "-t", "60", "start")
        check(r.returncode == 0, "standby start: " + r.stdout + r.stderr)
        return self

    def url(self, params):
        # postgresql://sluice:sluice@127.0.0.1:P1/sluice -> both hosts
        base = self.user_url.replace("127.0.0.1:%d" % self.p1, "127.0.0.1:%d,127.0.0.1:%d" % (self.p1, self.p2))
        return base + "?" + params

    def standby_sql(self, sql):
        """One value from the standby (over its unix socket), "" on error."""
        db = self.user_url.rsplit("/", 1)[1]
        r = as_pg(BIN + "/psql", "-h", self.standby, "-p", str(self.p2), "-U", "postgres", "-d", db, "-XAtqc", sql,
                  timeout=30)
        return r.stdout.strip() if r.returncode == 0 else ""

    def stop_primary(self):
        r = as_pg(BIN + "/pg_ctl", "-D", os.path.join(self.primary, "data"), "-m", "immediate", "-w", "stop")
        check(r.returncode == 0, "stop primary: " + r.stderr)

    def promote(self):
        r = as_pg(BIN + "/pg_ctl", "-D", os.path.join(self.standby, "data"), "-w", "promote")
        check(r.returncode == 0, "promote: " + r.stderr)

    def cleanup(self):
        for d in (self.standby, self.primary):
            data = os.path.join(d, "data")
            if os.path.isdir(data):
                as_pg(BIN + "/pg_ctl", "-D", data, "-m", "immediate", "-w", "stop")
        shutil.rmtree(self.dir, ignore_errors=True)


def app_dir(cl, params):
    d = tempfile.mkdtemp(prefix="sluice-fo-app-")
    open(os.path.join(d, "app.lua"), "w").write(APP)
    open(os.path.join(d, "config.lua"), "w").write(CONFIG)
    return d, {"FO_URL": cl.url(params), "FO_REPLICA": cl.user_url.replace(str(cl.p1), str(cl.p2)),
               "SLUICE_ENV": "development"}


@test
def primary_failover_requests_recover_after_promotion():
    cl = Clusters().start()
    d = None
    try:
        pool_timeout = 2.0
        d, env = app_dir(cl, "target_session_attrs=read-write&connection_limit=6&pool_timeout=%g&connect_timeout=2&statement_timeout=3000" % pool_timeout)
        with Server(d, env=env) as srv:
            st, _, body = get(srv.port, "/setup")
            check(st == 200, (st, body))
            # the standby has the table before the primary goes: replication is asynchronous, and
            # on a loaded machine the standby can lag (or still be connecting) for a while
            wait_for(lambda: cl.standby_sql("select to_regclass('fo_items') is not null") == "t", 60,
                     "the standby to replay the table's creation")
            results, stop = [], threading.Event()
            lock = threading.Lock()

            def writer(k):
                n = 0
                while not stop.is_set():
                    n += 1
                    t0 = time.monotonic()
                    try:
                        st, _, body = post(srv.port, "/items", ("w%d-%d" % (k, n)).encode(), timeout=15)
                    except OSError as e:
                        st, body = repr(e), b""
                    with lock:
                        results.append((t0, time.monotonic() - t0, st, body))
                    time.sleep(0.02)

            threads = [threading.Thread(target=writer, args=(k,)) for k in range(4)]
            for t in threads:
                t.start()
            # some writes before the failover (waited for: a loaded machine may take a while)
            wait_for(lambda: len(results) >= 8, 30, "writes before the failover")
            with lock:
                before = [r for r in results]
            check(before and all(r[2] == 201 for r in before), "before the failover: %r" % [r[2] for r in before if r[2] != 201][:5])
            check(all(json.loads(r[3])["port"] == cl.p1 for r in before), "writes went to the primary")
            t_stop = time.monotonic()
            cl.stop_primary()
            time.sleep(1.0)                      # the outage: nothing can write
            cl.promote()
            t_promoted = time.monotonic()
            # run until every writer has had 2 s of successes in a row on the new primary, bounded
            deadline = t_promoted + 25
            recovered = None
            while time.monotonic() < deadline:
                time.sleep(0.1)
                with lock:
                    post_p = [r for r in results if r[0] + r[1] > t_promoted]
                fails = [r for r in post_p if r[2] != 201]
                last_fail = max((r[0] + r[1] for r in fails), default=t_promoted)
                if post_p and time.monotonic() - last_fail > 2.0:
                    recovered = last_fail - t_promoted
                    break
            stop.set()
            for t in threads:
                t.join(30)
            check(recovered is not None, "writes kept failing 25 s after the promotion: %r\nserver log:\n%s" %
                  ([(round(r[0] - t_promoted, 2), r[2]) for r in results if r[0] > t_promoted][-20:], srv.log()[-2500:]))
            # the pool retries a down server at most every 2.5 s (backoff 2 s +- 25 %): a pool that
            # stops retrying or backs off for tens of seconds fails here; a loaded machine does not
            check(recovered < 10.0, "writes recovered %.2f s after the promotion (bound 10 s)" % recovered)
            during = [r for r in results if r[0] >= t_stop]
            bad = [r for r in during if r[2] not in (201, 500, 503)]
            check(not bad, "unexpected answers during the switch: %r" % bad[:5])
            # at most pool_timeout + connect_timeout + statement_timeout (7 s) plus room for a loaded
            # machine; a hang runs into the client's 15 s timeout
            slow = [r for r in during if r[1] > pool_timeout + 2.0 + 3.0 + 3.0]
            check(not slow, "requests hung past pool_timeout + connect_timeout + statement_timeout: %r"
                  % [(round(r[1], 2), r[2]) for r in slow[:5]])
            after = [r for r in results if r[0] > t_promoted + recovered]
            check(after and all(r[2] == 201 for r in after), "after recovery: %r" % [r[2] for r in after if r[2] != 201][:5])
            check(all(json.loads(r[3])["port"] == cl.p2 for r in after), "writes go to the promoted standby")
            errors = [r for r in during if r[2] != 201]
            # every failed request left a clear line in the log (database error or pool timeout)
            if any(r[2] == 500 for r in errors):
                check("database" in srv.log().lower() or "connection" in srv.log().lower(), "no database error logged")
            st, _, body = get(srv.port, "/items")
            n_ok = len([r for r in results if r[2] == 201])
            got = json.loads(body)
            check(st == 200 and got["port"] == cl.p2, (st, body))
            # asynchronous replication with an immediate stop may lose the last acknowledged writes;
            # the count on the new primary is at least what was written after it took over
            n_after = len([r for r in results if r[2] == 201 and json.loads(r[3])["port"] == cl.p2])
            check(got["n"] >= n_after, "rows on the new primary %d < writes acknowledged by it %d" % (got["n"], n_after))
            print("     failover: %d requests, %d ok, %d failed during the switch (500: %d, 503: %d); "
                  "every write ok again %.2f s after promotion; slowest answer %.2f s"
                  % (len(results), n_ok, len(errors), len([r for r in errors if r[2] == 500]),
                     len([r for r in errors if r[2] == 503]), recovered, max(r[1] for r in results)))
            # the replica URL points at the old standby, now the primary: reads still work there
            st, _, body = get(srv.port, "/replica")
            check(st == 200 and json.loads(body)["port"] == cl.p2, ("replica read", st, body))
    finally:
        cl.cleanup()
        if d:
            shutil.rmtree(d, ignore_errors=True)


@test
def an_unreachable_replica_sends_reads_to_the_primary():
    cl = Clusters().start()
    d = None
    try:
        d, env = app_dir(cl, "target_session_attrs=read-write&connection_limit=6&pool_timeout=2&connect_timeout=2")
        with Server(d, env=env) as srv:
            st, _, body = get(srv.port, "/replica")
            check(st == 200 and json.loads(body)["port"] == cl.p2, ("replica read before", st, body))
            r = as_pg(BIN + "/pg_ctl", "-D", os.path.join(cl.standby, "data"), "-m", "immediate", "-w", "stop")
            check(r.returncode == 0, r.stderr)
            answers = []
            t_end = time.monotonic() + 30          # bounds a failure only: the loop ends once reads moved
            while time.monotonic() < t_end:
                t0 = time.monotonic()
                st, _, body = get(srv.port, "/replica", timeout=15)
                answers.append((st, time.monotonic() - t0, body))
                if st == 200 and json.loads(body)["port"] == cl.p1 and len(answers) > 3:
                    break
                time.sleep(0.1)
            check(all(a[0] in (200, 500, 503) for a in answers), "answers: %r" % answers[:5])
            check(all(a[1] < 8 for a in answers), "a read hung: %r" % [(a[0], round(a[1], 2)) for a in answers if a[1] >= 8])
            last = answers[-1]
            check(last[0] == 200 and json.loads(last[2])["port"] == cl.p1, "reads did not move to the primary: %r" % (last,))
            print("     replica down: %d reads, %d failed before reads moved to the primary"
                  % (len(answers), len([a for a in answers if a[0] != 200])))
    finally:
        cl.cleanup()
        if d:
            shutil.rmtree(d, ignore_errors=True)


if __name__ == "__main__":
    run_tests()
