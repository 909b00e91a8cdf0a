"""test_redis_sentinel.py: Redis failover under Sentinel, followed natively (issue 22).

Real engines on loopback: a redis-server master, a replica of it, three redis-sentinel processes
watching the master (quorum 2, down-after 1 s), and two sluice instances with
    REDIS_URL=redis-sentinel://127.0.0.1:S1,127.0.0.1:S2,127.0.0.1:S3/mymaster
Subscribers on both instances, a publisher on B and rate-limited requests on A all along; the
master is killed. Checked:
  - both instances discover the master through the Sentinels and are linked (cross-instance SSE);
  - after the kill the Sentinels promote the replica; both instances follow it within 10 s of the
    `+switch-master` announcement (measured from a subscription of the test's own);
  - every event that got a 201 reaches every subscriber or is covered by a `sluice-gap`: 0 silent
    losses; publishes during the switch fail loudly (503), never reach only some subscribers;
  - rate-limit decisions during the switch are 200/429 (fail-open) — never a hang or a 500;
  - /metrics counts the switch (sluice_redis_master_switches_total) and the instances' links are up
    on the new master; a node that is not the master (ROLE) is never kept.
Run: SLUICE_BIN=$PWD/build/sluice python3 tests/integration/test_redis_sentinel.py
"""
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import HOST, RedisServer, Server, check, free_port, get, metric, run_tests, test, wait_for, wait_linked  # noqa: E402
from ssecheck import Collector, Publisher, audit, ordered, publish_app  # noqa: E402

MASTER = "mymaster"

APP = r'''
local app = require "sluice"
app.get("/hello", function() return "hello world\n" end)
app.get("/limited", function() return "ok\n" end)
app.sse("/events/:room", function(req) return { channel = "room:" .. req.params.room } end)
app.post("/pub/:room", function(req)
  local id = app.publish("room:" .. req.params.room, { event = "msg", data = req.body })
  return { status = 201, json = { id = id } }
end)
'''

CONFIG = r'''
return {
  workers = 2,
  scripts = { "app.lua" },
  log = { access = "off" },
  ratelimit = {
    api = { limit = 100000000, window = 900, key = "ip", paths = { "/" } },
    monitoring = { limit = 100000000, window = 60, key = "ip", paths = { "/metrics", "/health", "/ready" } },
    limited = { limit = 50, window = 60, key = "ip", paths = { "/limited" } },
  },
  sse = { heartbeat = 2, retention = 1000 },
  redis = { url = os.getenv("REDIS_URL") },
}
'''


def redis_cli(port, *args, timeout=5):
    out = subprocess.run(["redis-cli", "-h", HOST, "-p", str(port)] + [str(a) for a in args],
                         capture_output=True, text=True, timeout=timeout)
    if out.returncode:
        raise OSError(out.stderr)
    return out.stdout.strip()


class Sentinels:
    """A master, a replica and three Sentinels in one temp dir."""

    def __init__(self):
        self.dir = tempfile.mkdtemp(prefix="sluice-sentinel-")
        self.master = RedisServer()
        self.replica = RedisServer()
        self.ports = [free_port() for _ in range(3)]
        self.procs = []

    def start(self):
        self.master.start()
        self.replica.start()
        redis_cli(self.replica.port, "REPLICAOF", HOST, self.master.port)
        wait_for(lambda: "master_link_status:up" in redis_cli(self.replica.port, "INFO", "replication"), 15,
                 "the replica to sync")
        for i, p in enumerate(self.ports):
            conf = os.path.join(self.dir, "sentinel-%d.conf" % i)
            with open(conf, "w") as f:
                f.write("port %d\nbind %s\ndir %s\n"
                        "sentinel monitor %s %s %d 2\n"
                        "sentinel down-after-milliseconds %s 1000\n"
                        "sentinel failover-timeout %s 5000\n"
                        "sentinel parallel-syncs %s 1\n" % (p, HOST, self.dir, MASTER, HOST, self.master.port,
                                                            MASTER, MASTER, MASTER))
            self.procs.append(subprocess.Popen(["redis-sentinel", conf], stdout=subprocess.DEVNULL,
                                               stderr=subprocess.DEVNULL))
        for p in self.ports:       # each Sentinel knows the replica and the two other Sentinels
            wait_for(lambda: redis_cli(p, "SENTINEL", "get-master-addr-by-name", MASTER).split() ==
                     [HOST, str(self.master.port)], 15, "Sentinel :%d to watch the master" % p)
            wait_for(lambda: int(redis_cli(p, "SENTINEL", "master", MASTER).split("\n")[
                redis_cli(p, "SENTINEL", "master", MASTER).split("\n").index("num-other-sentinels") + 1]) == 2
                and int(redis_cli(p, "SENTINEL", "master", MASTER).split("\n")[
                    redis_cli(p, "SENTINEL", "master", MASTER).split("\n").index("num-slaves") + 1]) == 1,
                     30, "Sentinel :%d to know the others and the replica" % p)
        return self

    @property
    def url(self):
        return "redis-sentinel://" + ",".join("%s:%d" % (HOST, p) for p in self.ports) + "/" + MASTER

    def cleanup(self):
        for pr in self.procs:
            if pr.poll() is None:
                pr.kill()
                pr.wait(5)
        self.master.cleanup()
        self.replica.cleanup()
        shutil.rmtree(self.dir, ignore_errors=True)


class SwitchWatcher(threading.Thread):
    """The test's own subscription to +switch-master on one Sentinel: when the switch was announced."""

    def __init__(self, port):
        super().__init__(daemon=True)
        self.sock = socket.create_connection((HOST, port), timeout=30)
        self.sock.sendall(b"SUBSCRIBE +switch-master\r\n")
        self.at = None
        self.line = b""

    def run(self):
        buf = b""
        while self.at is None:
            try:
                chunk = self.sock.recv(4096)
            except OSError:
                return
            if not chunk:
                return
            buf += chunk
            if b"+switch-master\r\n$" in buf and buf.count(b"\r\n") >= 9:
                self.at = time.monotonic()
                self.line = buf


@test
def master_failover_is_followed_and_nothing_is_lost_silently():
    cl = Sentinels().start()
    d = tempfile.mkdtemp(prefix="sluice-sentinel-app-")
    open(os.path.join(d, "app.lua"), "w").write(APP)
    open(os.path.join(d, "config.lua"), "w").write(CONFIG)
    a = b = None
    try:
        a = Server(d, env={"REDIS_URL": cl.url}).start()
        b = Server(d, env={"REDIS_URL": cl.url}).start()
        wait_linked(a, b)
        cols = [Collector(a.port, "f"), Collector(b.port, "f")]
        st, eid = publish_app(b.port, "f", "first")
        check(st == 201, "publish through the master the Sentinels named: %r" % st)
        for c in cols:
            wait_for(lambda: c.has("first"), 15, "cross-instance delivery before the failover")
        # rate-limited requests on A all along: 200 or 429, never anything else
        limited, stop = [], threading.Event()

        def limiter_load():
            while not stop.is_set():
                t0 = time.monotonic()
                try:
                    st, _, _ = get(a.port, "/limited", timeout=10)
                except OSError as e:
                    st = repr(e)
                limited.append((st, time.monotonic() - t0))
                time.sleep(0.02)

        lt = threading.Thread(target=limiter_load, daemon=True)
        lt.start()
        pub = Publisher(b.port, "f")
        wait_for(lambda: sum(1 for _, st, _ in pub.log if st == 201) >= 10, 10, "publishes before the failover")
        watch = SwitchWatcher(cl.ports[0])
        watch.start()
        t_kill = time.monotonic()
        cl.master.kill()
        wait_for(lambda: watch.at is not None, 30, "the Sentinels to announce +switch-master")
        check(watch.line and str(cl.replica.port).encode() in watch.line, "promoted the replica: %r" % watch.line[-200:])
        # both instances follow: linked again (command connections and subscriber) on the new master
        wait_for(lambda: metric(a.port, 'sluice_redis_connected{conn="subscriber"}') == 1 and
                 metric(b.port, 'sluice_redis_connected{conn="subscriber"}') == 1 and
                 metric(a.port, 'sluice_redis_connected{conn="command"}') == 2 and
                 metric(b.port, 'sluice_redis_connected{conn="command"}') == 2, 15, "both instances on the new master")
        wait_for(lambda: sum(1 for _, st, _ in pub.log[-10:] if st == 201) == 10, 15, "publishes succeeding again")
        followed = time.monotonic() - watch.at
        log = pub.finish()
        stop.set()
        lt.join(15)
        ok = [eid for n, st, eid in log if st == 201]
        st, eid = publish_app(b.port, "f", "final")
        check(st == 201, "final publish: %r" % st)
        ok.append(eid)
        totals = [0, 0, 0]
        for k, c in enumerate(cols):
            wait_for(lambda: c.has("final"), 15, "the final event at subscriber %d" % k)
            dl, g, lost = audit(c, ok)
            totals = [totals[0] + dl, totals[1] + g, totals[2] + len(lost)]
            check(not lost, "subscriber %d silently lost %d of %d events: %r" % (k, len(lost), len(ok), lost[:10]))
            check(ordered(c), "subscriber %d got ids out of order or twice" % k)
        statuses = {}
        for s_, _ in limited:
            statuses[s_] = statuses.get(s_, 0) + 1
        check(set(statuses) <= {200, 429}, "rate-limited requests during the switch: %r" % statuses)
        check(max(t for _, t in limited) < 5, "a rate-limit decision hung: %.2f s" % max(t for _, t in limited))
        failed = sum(1 for _, st, _ in log if st == 503)
        other = sum(1 for _, st, _ in log if st not in (201, 503))
        check(other == 0, "publishes answered neither 201 nor 503: %d" % other)
        print("     Sentinel failover: announced %.2f s after the kill, followed %.2f s after the announcement "
              "(both instances linked and publishing); publishes %d ok, %d refused (503); over 2 subscribers "
              "%d delivered, %d covered by sluice-gap, %d lost; rate limit %r"
              % (watch.at - t_kill, followed, len(ok), failed, totals[0], totals[1], totals[2], statuses))
        check(followed < 10, "followed %.2f s after the announcement (target < 10 s)" % followed)
        sw = (metric(a.port, "sluice_redis_master_switches_total"), metric(b.port, "sluice_redis_master_switches_total"))
        check(sw == (1, 1), "the switch is counted once on each instance: %r" % (sw,))
        for c in cols:
            c.close()
        a.assert_alive()
        b.assert_alive()
    finally:
        for s_ in (a, b):
            if s_:
                s_.stop()
                s_.cleanup()
        cl.cleanup()
        shutil.rmtree(d, ignore_errors=True)


@test
def a_bad_sentinel_url_is_one_clear_line():
    d = tempfile.mkdtemp(prefix="sluice-sentinel-bad-")
    open(os.path.join(d, "app.lua"), "w").write(APP)
    open(os.path.join(d, "config.lua"), "w").write(CONFIG)
    try:
        env = dict(os.environ, REDIS_URL="redis-sentinel://127.0.0.1:1/")
        r = subprocess.run([os.environ.get("SLUICE_BIN", "build/sluice"), "check", "--config",
                            os.path.join(d, "config.lua")], env=env, capture_output=True, text=True, timeout=30)
        check(r.returncode != 0, "check accepted a Sentinel URL without a master name")
        check("redis-sentinel://" in (r.stdout + r.stderr), "the message shows the expected form: %r" % (r.stdout + r.stderr))
    finally:
        shutil.rmtree(d, ignore_errors=True)


if __name__ == "__main__":
    run_tests()
