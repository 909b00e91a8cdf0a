#!/usr/bin/env python3
"""run.py: the standing adversarial suite (issue 14): hostile HTTP/1.1 framing against sluice,
sent directly and through real nginx and real HAProxy in front of it.

    SLUICE_BIN=build/sluice python3 tests/adversarial/run.py [--mode direct|nginx|haproxy] [name ...]

The cases are in corpus.py. Every case runs in three modes:
- direct: the bytes go straight to sluice. Asserted: the exact status of every response, in
  order; the connection closed when the case requires it (errors, Connection: close), else a
  final request on the same connection still gets its own answer; the handler ran exactly one
  request per 2xx response (and with the body length the case expects) and never /smuggled;
  a fresh request (GET /health) still succeeds.
- nginx, haproxy: the bytes go to the proxy (upstream keep-alive on, so a desync would poison
  the next client's request), followed on the same connection by a final `Connection: close`
  request. Then two fresh clients send one request each through the proxy and must get their
  own answers. Asserted: every request sluice's handler ran for the case is one the proxy
  logged as routed itself (method and target) - so no request boundary differs between the
  proxy and sluice - and the follow-ups were answered in order.
The handler log is the fixture's catch-all route (fixture/app.lua), which logs
`ADVSEEN <method> <url> <body length>` for every request it runs.

Prints one line per case and mode, every failing case's name with the reason, and the totals;
exits 1 on any failure. Proxies that are not installed fail the run (SLUICE_ADV_SKIP_PROXIES=1
skips them explicitly).
"""
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

sys.dont_write_bytecode = True
HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "integration"))
sys.path.insert(0, HERE)
from harness import HOST, Conn, NginxServer, Server, TestFailure, check, free_port, get  # noqa: E402
import corpus  # noqa: E402

FIXTURE = os.path.join(HERE, "fixture")
SEEN_RE = re.compile(r"ADVSEEN (\S+) (\S+) (\d+)")


def case_re(name):
    return re.compile(r"[?&]case=%s(?:&|$)" % re.escape(name))


def origin_form(target):
    """http://host/p?q -> /p?q (absolute-form is routed by its path); a fragment is no part."""
    m = re.match(r"^[A-Za-z][A-Za-z0-9+.-]*://[^/?#]*", target)
    if m:
        target = target[m.end():] or "/"
    if target.startswith("?"):           # nginx logs "http://h?q" as "?q"
        target = "/" + target
    return target.split("#", 1)[0]


class Sluice:
    def __init__(self):
        self.srv = Server(FIXTURE)
        self.srv.start()
        self.port = self.srv.port

    def seen(self, name=None):
        """(method, url, body length) of every request the handler ran (for one case)."""
        out = []
        rx = case_re(name) if name else None
        for m in SEEN_RE.finditer(self.srv.log()):
            if rx is None or rx.search(m.group(2)):
                out.append((m.group(1), m.group(2), int(m.group(3))))
        return out

    def alive(self):
        check(self.srv.proc.poll() is None, self.srv.died_message())
        st, _, _ = get(self.port, "/health")
        check(st == 200, "GET /health after the case: %r" % st)

    def stop(self):
        try:
            self.srv.stop()
        finally:
            self.srv.cleanup()


def wait_until(cond, timeout, step=0.02):
    deadline = time.monotonic() + timeout
    while True:
        if cond():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(step)


def wait_port(port, timeout=10):
    ok = wait_until(lambda: _connects(port), timeout, 0.05)
    check(ok, "port %d did not open" % port)


def _connects(port):
    try:
        socket.create_connection((HOST, port), timeout=0.5).close()
        return True
    except OSError:
        return False


# ---------------------------------------------------------------- proxies

class Proxy:
    """A proxy on a loopback port in a temp dir; routed() parses its access log."""
    name = "?"

    def routed(self, name):
        rx = case_re(name)
        out = []
        try:
            with open(self.logfile, "rb") as f:
                text = f.read().decode("latin-1")
        except OSError:
            return out
        for m in re.finditer(r"^ADV (\S+) (\S+)", text, re.M):
            target = origin_form(m.group(2))
            if rx.search(target):
                out.append((m.group(1), target))
        return out

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(self.stop_signal)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        shutil.rmtree(self.dir, ignore_errors=True)


class Nginx(Proxy):
    name = "nginx"

    def __init__(self, upstream):
        self.port = free_port()
        self.srv = NginxServer("""    log_format adv 'ADV $request_method $request_uri $status';
    client_header_timeout 3s;
    client_body_timeout 3s;
    upstream sluice { server 127.0.0.1:%(up)d; keepalive 8; }
    server {
        listen 127.0.0.1:%(port)d;
        client_max_body_size 1m;
        location / {
            proxy_pass http://sluice;
            proxy_http_version 1.1;              # keep-alive to sluice, as deploy/nginx does
            proxy_set_header Connection "";
            proxy_set_header Host $host;
        }
    }""" % {"up": upstream, "port": self.port}, [self.port], access_log="%(p)s/access.log adv")
        self.logfile = os.path.join(self.srv.prefix, "access.log")
        self.srv.start()

    def stop(self):
        self.srv.cleanup()


class HAProxy(Proxy):
    name = "haproxy"
    stop_signal = signal.SIGTERM

    def __init__(self, upstream):
        exe = shutil.which("haproxy")
        check(exe, "haproxy is not installed")
        self.dir = tempfile.mkdtemp(prefix="sluice-adv-haproxy-")
        self.port = free_port()
        self.logfile = os.path.join(self.dir, "haproxy.log")
        conf = os.path.join(self.dir, "haproxy.cfg")
        with open(conf, "w") as f:
            f.write("""
global
    nbthread 1
    log stdout format raw local0 info
defaults
    mode http
    log global
    log-format "ADV %%HM %%HU %%ST"
    option http-keep-alive
    http-reuse always                        # share upstream connections between clients
    timeout connect 5s
    timeout client 3s
    timeout server 5s
    timeout http-request 3s
    timeout http-keep-alive 3s
frontend adv
    bind 127.0.0.1:%(port)d
    default_backend sluice
backend sluice
    server s1 127.0.0.1:%(up)d
""" % {"up": upstream, "port": self.port})
        t = subprocess.run([exe, "-c", "-f", conf], capture_output=True, text=True)
        check(t.returncode == 0, "haproxy -c: " + t.stdout + t.stderr)
        self.logf = open(self.logfile, "wb")
        self.proc = subprocess.Popen([exe, "-db", "-f", conf], stdout=self.logf, stderr=subprocess.DEVNULL)
        wait_port(self.port)

    def stop(self):
        Proxy.stop(self)
        self.logf.close()


# ---------------------------------------------------------------- one case

def end_request(tag):
    return b"GET /end?case=%s HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n" % tag.encode()


def send_all(sock, data):
    try:
        sock.sendall(data)
    except (BrokenPipeError, ConnectionResetError):
        pass          # the server answered and closed before reading everything: allowed


def run_direct(sl, case):
    mode = "direct"
    tag = case.tag(mode)
    c = Conn(sl.port, timeout=5)
    try:
        send_all(c.sock, case.data(mode))
        got = []
        for i in range(len(case.statuses)):
            try:
                r = c.response(head=i in case.heads)
            except (TestFailure, ConnectionResetError) as e:
                raise TestFailure("statuses %r, want %r (then: %s)" % (got, case.statuses, e))
            got.append(r)
            if r.status >= 400:
                check(r.headers.get("connection") == "close",
                      "a %d must say Connection: close: %r" % (r.status, r.headers))
        statuses = [r.status for r in got]
        check(statuses == case.statuses, "statuses %r, want %r" % (statuses, case.statuses))
        if case.close:
            check(c.at_eof(3), "the connection was not closed after the last response (%r)" % c.buf[:200])
        else:
            send_all(c.sock, end_request(tag))
            r = c.response()
            want = b"seen GET /end?case=%s len=0" % tag.encode()
            check(r.status == 200 and r.body.startswith(want),
                  "the next request on the connection got %d %r, want its own answer" % (r.status, r.body[:120]))
            check(c.at_eof(3), "not closed after Connection: close")
    finally:
        c.close()
    ok2xx = [r for r in got if 200 <= r.status < 300]
    want_seen = len(ok2xx) + (0 if case.close else 1)
    check(wait_until(lambda: len(sl.seen(tag)) >= want_seen, 3),
          "the handler ran %d requests, want %d" % (len(sl.seen(tag)), want_seen))
    seen = sl.seen(tag)
    smug = [s for s in seen if s[1].startswith("/smuggled")]
    check(not smug, "SMUGGLED: the handler ran %r" % smug)
    check(len(seen) == want_seen, "the handler ran %d requests for %d answers: %r" % (len(seen), want_seen, seen))
    if case.bodies is not None:
        lens = [s[2] for s in seen[:len(case.bodies)]]
        check(lens == case.bodies, "body lengths seen by the handler %r, want %r" % (lens, case.bodies))
    sl.alive()


def run_proxied(sl, px, case):
    mode = px.name
    tag = case.tag(mode)
    s = socket.create_connection((HOST, px.port), timeout=5)
    try:
        send_all(s, case.data(mode) + end_request(tag))
        s.settimeout(2.5)     # an incomplete request (by the proxy's reading) waits for its timeout
        deadline = time.monotonic() + 2.5
        while time.monotonic() < deadline:
            try:
                if not s.recv(65536):
                    break
            except (socket.timeout, ConnectionResetError):
                break
    finally:
        s.close()
    # two fresh clients: their requests would be the ones to pick up a desynchronised
    # upstream connection (keep-alive to sluice is on in both proxies)
    for n in (1, 2):
        path = "/check?case=%s&n=%d" % (tag, n)
        st, _, body = get(px.port, path)
        check(st == 200 and body.startswith(b"seen GET " + path.encode() + b" "),
              "follow-up %d through %s got %d %r: a desynchronised connection?" % (n, px.name, st, body[:150]))
    check(wait_until(lambda: any(u.endswith("n=2") for _, u, _ in sl.seen(tag)), 3),
          "sluice did not log the follow-ups")
    # every request sluice ran must be one the proxy routed; the proxy may log a little later
    missing = []

    def matched():
        routed = list(px.routed(tag))
        missing[:] = []
        for m, u, _ in sl.seen(tag):
            if (m, u) in routed:
                routed.remove((m, u))
            else:
                missing.append((m, u))
        return not missing
    check(wait_until(matched, 3), "DESYNC: sluice ran %r, which %s did not route as requests" % (missing, px.name))
    sl.alive()


# ---------------------------------------------------------------- main

def main():
    args = sys.argv[1:]
    modes = ["direct", "nginx", "haproxy"]
    if "--mode" in args:
        i = args.index("--mode")
        modes = args[i + 1].split(",")
        del args[i:i + 2]
    if os.environ.get("SLUICE_ADV_SKIP_PROXIES") == "1":
        modes = [m for m in modes if m == "direct"]
    cases = [c for c in corpus.CASES if not args or any(a in c.name for a in args)]
    names = [c.name for c in corpus.CASES]
    check(len(names) == len(set(names)), "duplicate case names")
    t0 = time.monotonic()
    sl = Sluice()
    failed, passed = [], 0
    try:
        for mode in modes:
            px = None
            try:
                if mode == "nginx":
                    px = Nginx(sl.port)
                elif mode == "haproxy":
                    px = HAProxy(sl.port)
            except TestFailure as e:
                for c in cases:
                    failed.append((mode, c.name, "proxy did not start: %s" % e))
                print("FAIL %-8s (all cases): %s" % (mode, e), flush=True)
                continue
            try:
                for c in cases:
                    t = time.monotonic()
                    try:
                        if px:
                            run_proxied(sl, px, c)
                        else:
                            run_direct(sl, c)
                        passed += 1
                        print("ok   %-8s %s (%.2fs)" % (mode, c.name, time.monotonic() - t), flush=True)
                    except Exception as e:       # noqa: BLE001 - every failure is reported per case
                        failed.append((mode, c.name, str(e)))
                        print("FAIL %-8s %s: %s" % (mode, c.name, e), flush=True)
                        if sl.srv.proc.poll() is not None:
                            print("sluice died; stopping: " + sl.srv.died_message())
                            raise
            finally:
                if px:
                    px.stop()
    finally:
        try:
            sl.stop()
        except TestFailure as e:
            failed.append(("sluice", "exit", str(e)))
    total = passed + len(failed)
    print("time: %.1fs" % (time.monotonic() - t0))
    if failed:
        print("failing cases:")
        for mode, name, why in failed:
            print("  %s %s: %s" % (mode, name, why.splitlines()[0] if why else ""))
    print("%d cases x %d modes: %d passed, %d failed" % (len(cases), len(modes), passed, len(failed)))
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
