"""test_cluster.py: three sluice instances + one redis-server behind nginx, all on loopback (issue 11).

nginx runs deploy/nginx/sluice.conf itself (in a temp prefix, its three upstream lines pointed at
the three instances). Checks:
- a publish on any instance reaches subscribers on all three (and through the balancer): each
  subscriber gets every event once, with the same ids in the same order;
- the rate limit holds across instances: one client (X-Forwarded-For through nginx, which the
  instances trust) spread over all three instances gets exactly the limit, another is unaffected;
- SIGKILL of one instance: its clients, reconnecting through the balancer with Last-Event-ID,
  land on a survivor and get every event published while they were away, exactly once, in order;
- redis-server restarted mid-test: cross-instance delivery resumes once the instances reconnect.

Bounded: about 15 s. PostgreSQL is not needed.
Run: python3 tests/integration/test_cluster.py   (SLUICE_BIN overrides build/sluice)
"""
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import NginxServer, RedisServer, ROOT, metric, wait_for, wait_linked, SLUICE_BIN, Server, TestFailure, check, free_port, get, post, run_tests, test  # noqa: E402

HOST = "127.0.0.1"
FIXTURE = "fixtures/cluster"
NGINX_CONF = os.path.join(ROOT, "deploy", "nginx", "sluice.conf")
PREFIX = "sluice-cluster-%d:" % os.getpid()


# ------------------------------------------------------------------ the pieces

class Instance(Server):
    """A sluice on a fixed port (nginx's upstream lines name it), restartable on that port."""

    def __init__(self, port, redis_url):
        super().__init__(FIXTURE, env={"REDIS_URL": redis_url, "REDIS_PREFIX": PREFIX, "SLUICE_ENV": "development"})
        self.fixed_port = port

    def start(self):
        self.port = self.fixed_port
        self.env["PORT"] = str(self.port)
        self._errf = tempfile.NamedTemporaryFile(prefix="sluice-stderr-", suffix=".log", delete=False)
        self.proc = subprocess.Popen([SLUICE_BIN, "run", "--config", self.config], env=self.env,
                                     stdin=subprocess.DEVNULL, stdout=self._errf, stderr=self._errf, cwd=self.fixture)
        if not self._wait_healthy():
            raise TestFailure("instance on :%d did not become healthy:\n%s" % (self.port, self.log()[-3000:]))
        return self

    def kill(self):
        self.signalled = True
        self.proc.kill()
        self.proc.wait(5)


Redis = RedisServer


class Nginx(NginxServer):
    """deploy/nginx/sluice.conf with its listen line and three upstream lines rewritten."""

    def __init__(self, ports):
        prefix = tempfile.mkdtemp(prefix="sluice-cluster-nginx-")
        self.port = free_port()
        with open(NGINX_CONF) as f:
            text = f.read()
        out, i = [], 0
        for ln in text.splitlines():
            if "(sluice-upstream)" in ln:
                check(i < len(ports), "deploy/nginx/sluice.conf has more upstream lines than instances")
                ln = re.sub(r"127\.0\.0\.1:\d+", "127.0.0.1:%d" % ports[i], ln)
                i += 1
            elif "(sluice-listen)" in ln:
                ln = re.sub(r"listen\s+[^;\s]+", "listen 127.0.0.1:%d" % self.port, ln)
            out.append(ln)
        check(i == len(ports), "deploy/nginx/sluice.conf: %d upstream lines, want %d" % (i, len(ports)))
        with open(os.path.join(prefix, "sluice.conf"), "w") as f:
            f.write("\n".join(out) + "\n")
        super().__init__("    include %s/sluice.conf;" % prefix, [self.port], prefix=prefix)
        self.own = True          # the prefix is ours: cleanup() removes it


class SSE:
    """A raw event-stream client (through nginx or straight to an instance)."""

    def __init__(self, port, path, headers=None, timeout=5.0):
        self.port, self.path = port, path
        self.sock = socket.create_connection((HOST, port), timeout=timeout)
        h = "".join("%s: %s\r\n" % kv for kv in (headers or {}).items())
        self.sock.sendall(("GET %s HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\n%s\r\n" % (path, h)).encode())
        self.buf = b""
        while b"\r\n\r\n" not in self.buf:
            chunk = self.sock.recv(65536)
            if not chunk:
                break
            self.buf += chunk
        head, _, self.raw = self.buf.partition(b"\r\n\r\n")
        self.buf = b""
        self.status = int(head.split(b" ", 2)[1]) if head else 0
        self.head = head.decode("latin-1")
        # nginx re-frames the close-delimited stream as chunked: the last chunk is the end of
        # the stream (what EventSource sees as a disconnect), even if the socket stays open
        self.chunked = "transfer-encoding: chunked" in self.head.lower()
        self.eof = False
        self._dechunk()
        self.got = []               # (id, data) of "msg" events, in arrival order
        self.gaps = []

    def _dechunk(self):
        if not self.chunked:
            self.buf += self.raw
            self.raw = b""
            return
        while b"\r\n" in self.raw:
            line, _, rest = self.raw.partition(b"\r\n")
            size = int(line.split(b";")[0], 16)
            if size == 0:
                self.eof = True
                self.raw = b""
                return
            if len(rest) < size + 2:
                return
            self.buf += rest[:size]
            self.raw = rest[size + 2:]

    def pump(self, until_n=None, timeout=15.0):
        """Reads until len(got) >= until_n (or EOF or timeout); returns got. The default timeout
        is a generous wait for what must come; pass a short one to see that nothing more comes."""
        deadline = time.monotonic() + timeout
        while not self.eof:
            while b"\n\n" in self.buf:
                block, _, self.buf = self.buf.partition(b"\n\n")
                ev = {}
                for ln in block.decode().split("\n"):
                    if ln and not ln.startswith(":"):
                        k, _, v = ln.partition(": ")
                        ev[k] = v
                if ev.get("event") == "msg":
                    self.got.append((ev["id"], ev["data"]))
                elif ev.get("event") == "sluice-gap":
                    self.gaps.append(ev["data"])
            if until_n is not None and len(self.got) >= until_n:
                break
            left = deadline - time.monotonic()
            if left <= 0:
                break
            self.sock.settimeout(left)
            try:
                chunk = self.sock.recv(65536)
            except socket.timeout:
                break
            except ConnectionResetError:
                chunk = b""
            if not chunk:
                self.eof = True
                break
            self.raw += chunk
            self._dechunk()
        if self.eof:          # events that came before the end
            self.eof = False
            self.pump(until_n, 0)
            self.eof = True
        return self.got

    def close(self):
        self.sock.close()


def publish(port, room, data):
    st, _, body = post(port, "/pub/" + room, data)
    check(st == 201, "publish on :%d: %r %r" % (port, st, body))
    return str(json.loads(body)["id"])


# ------------------------------------------------------------------ tests

REDIS = Redis()
INST = []          # three Instances
LB = None


@test
def publish_on_one_instance_reaches_subscribers_on_all_three():
    subs = [SSE(s.port, "/events/fan") for s in INST for _ in range(2)]
    subs.append(SSE(LB.port, "/events/fan", {"Cookie": "sluice_sid=fan"}))
    for s in subs:
        check(s.status == 200, "subscribe on :%d: %s" % (s.port, s.head))
    sent = []
    for i in range(12):                     # every instance publishes in turn
        src = INST[i % 3]
        sent.append((publish(src.port, "fan", "from-%d-%d" % (src.port, i)), "from-%d-%d" % (src.port, i)))
    lb_sent = publish(LB.port, "fan", "via-balancer")
    sent.append((lb_sent, "via-balancer"))
    for s in subs:
        got = s.pump(len(sent))
        check(got == sent, "subscriber on :%d got %d of %d events (or out of order): %r"
              % (s.port, len(got), len(sent), [(a, b) for a, b in zip(got, sent) if a != b][:3]))
        check(not s.pump(len(sent) + 1, timeout=0.2)[len(sent):], "a duplicate on :%d" % s.port)
    for s in subs:
        s.close()


@test
def rate_limit_holds_across_instances_through_the_balancer():
    codes, ports = [], set()
    lock = threading.Lock()

    def client(k):
        for j in range(10):
            st, _, body = get(LB.port, "/limited", {"X-Forwarded-For": "10.77.0.1",
                                                    "Cookie": "sluice_sid=rl-%d-%d" % (k, j)})
            with lock:
                codes.append(st)
                if st == 200:
                    r = json.loads(body)
                    ports.add(r["port"])
                    check(r["ip"] == "10.77.0.1", "the instance saw the client as %r" % r["ip"])
    ts = [threading.Thread(target=client, args=(k,)) for k in range(6)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    ok, limited = codes.count(200), codes.count(429)
    check(ok == 30 and limited == 30, "one client through the balancer: %d admitted, %d limited of 60 (want 30/30): %r"
          % (ok, limited, codes))
    check(len(ports) == 3, "the balancer spread the client over %r only (want all three instances)" % ports)
    st, _, _ = get(LB.port, "/limited", {"X-Forwarded-For": "10.77.0.2", "Cookie": "sluice_sid=other"})
    check(st == 200, "another client is limited too: %d" % st)
    for inst in INST:                      # and straight to each instance: the shared count holds
        st, h, _ = get(inst.port, "/limited", {"X-Forwarded-For": "10.77.0.1"})
        check(st == 200 or st == 429, "direct: %d" % st)
    check(metric(INST[0].port, "sluice_redis_ratelimit_decisions_total") > 0, "decisions were not made in Redis")


@test
def killed_instance_clients_reconnect_through_the_balancer_and_miss_nothing():
    room = "kill"
    # twelve clients through the balancer; each session cookie sticks to one instance
    cookies = ["sluice_sid=k%d" % i for i in range(12)]
    where = {c: get(LB.port, "/whoami", {"Cookie": c})[2].decode().strip() for c in cookies}
    by_port = {}
    for c, p in where.items():
        by_port.setdefault(p, []).append(c)
    check(len(by_port) >= 2, "sessions all landed on one instance: %r" % by_port)
    victim_port = max(by_port, key=lambda p: len(by_port[p]))
    victim = [i for i in INST if str(i.port) == victim_port][0]
    survivor, third = [i for i in INST if i is not victim]
    clients = {c: SSE(LB.port, "/events/" + room, {"Cookie": c}) for c in cookies}
    for c, s in clients.items():
        check(s.status == 200, "stream %s: %s" % (c, s.head))
    sent = [(publish(survivor.port, room, "before-%d" % i), "before-%d" % i) for i in range(5)]
    for c, s in clients.items():
        check(s.pump(5) == sent, "before the kill, %s got %r" % (c, s.got))

    victim.kill()
    doomed = by_port[victim_port]
    for c in doomed:
        s = clients[c]
        s.pump(timeout=15)
        check(s.eof, "the stream of %s did not end when its instance was killed" % c)
    for c in cookies:
        if c not in doomed:
            check(not clients[c].eof, "a stream on a surviving instance ended: %s" % c)

    missed = [(publish(survivor.port, room, "missed-%d" % i), "missed-%d" % i) for i in range(10)]
    sent += missed
    # back through the balancer with the same cookie and Last-Event-ID, as EventSource does
    for c in doomed:
        old = clients[c]
        s = SSE(LB.port, "/events/" + room, {"Cookie": c, "Last-Event-ID": old.got[-1][0]})
        check(s.status == 200, "reconnect of %s through the balancer: %s" % (c, s.head))
        s.got = list(old.got)
        clients[c] = s
    after = [(publish(third.port, room, "after-%d" % i), "after-%d" % i) for i in range(3)]
    sent += after
    for c, s in clients.items():
        got = s.pump(len(sent))
        ids = [i for i, _ in got]
        check(len(set(ids)) == len(ids), "%s received a duplicate: %r" % (c, ids))
        check(got == sent, "%s (%s) got %d of %d events, first missing %r" %
              (c, "reconnected" if c in doomed else "survivor", len(got), len(sent),
               [e for e in sent if e not in got][:3]))
        check(not s.gaps, "%s got a gap notice although Redis holds the history: %r" % (c, s.gaps))
        check(not s.pump(len(sent) + 1, timeout=0.1)[len(sent):], "a duplicate after the replay for %s" % c)
    for s in clients.values():
        s.close()
    # the instance comes back on its port and rejoins the cluster
    idx = INST.index(victim)
    victim.cleanup()
    INST[idx] = Instance(victim.fixed_port, REDIS.url).start()
    wait_linked(INST[idx])
    # (nginx itself keeps skipping it for fail_timeout = 10 s: not waited for here)


@test
def redis_restart_mid_test_delivery_resumes():
    subs = [SSE(s.port, "/events/redis") for s in INST]
    for s in subs:
        check(s.status == 200, s.head)
    first = publish(INST[0].port, "redis", "up")
    for s in subs:
        check(s.pump(1) == [(first, "up")], "before the restart, :%d got %r" % (s.port, s.got))
    REDIS.kill()
    wait_for(lambda: metric(INST[0].port, 'sluice_redis_connected{conn="command"}') == 0, 15, "the outage to be noticed")
    st, _, body = post(INST[0].port, "/pub/redis", "down")     # the bus cannot carry it: fails loudly
    check(st == 503, "publish during the outage: %r %r" % (st, body))
    check(subs[0].pump(2, timeout=0.5) == [(first, "up")], "nothing delivered for it: %r" % subs[0].got)
    REDIS.start()                                              # same port, empty
    wait_linked(*INST)
    for k, src in enumerate(INST):
        eid = publish(src.port, "redis", "back-%d" % k)
        for s in subs:
            got = s.pump(until_n=len([e for e in s.got]) + 1)
            check(got and got[-1] == (eid, "back-%d" % k),
                  "after the Redis restart, a publish on :%d did not reach :%d: %r" % (src.port, s.port, got[-3:]))
    for s in subs:
        s.close()


def main():
    global LB
    if not shutil.which("nginx") and not os.path.exists("/usr/sbin/nginx"):
        print("skip: nginx is not installed (apt-get install nginx)")
        print("0 passed, 0 failed")
        return
    ports = []
    while len(ports) < 3:
        p = free_port()
        if p not in ports:
            ports.append(p)
    code = 0
    try:
        REDIS.start()
        for p in ports:
            INST.append(Instance(p, REDIS.url).start())
        wait_linked(*INST)
        LB = Nginx(ports).start()
        try:
            run_tests()
        except SystemExit as e:
            code = e.code or 0
    finally:
        if LB:
            LB.cleanup()
        for s in INST:
            try:
                if s.proc and s.proc.poll() is None:
                    s.stop()
            except Exception as e:  # noqa: BLE001
                print("stop :%d: %s" % (s.port, e))
                code = 1
            finally:
                s.cleanup()
        REDIS.cleanup()
    sys.exit(code)


if __name__ == "__main__":
    main()
