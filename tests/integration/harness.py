"""harness.py: shared helpers for sluice's integration tests (python3 stdlib only).

    from harness import Server, Conn, raw, get, post, test, run_tests, check

    with Server("fixtures/http", env={"FIX_MAX_CONN": "20"}) as srv:
        status, headers, body = get(srv.port, "/hello")

Server     starts $SLUICE_BIN (default build/sluice) `run --config <fixture>/config.lua` on a free
           127.0.0.1 port, waits for GET /health (health= another path), captures stderr to a
           file (srv.log(), srv.wait_log(regex)), and on exit sends SIGTERM and requires exit
           status 0 and no sanitizer report.
Conn       one raw client socket with a read buffer: send(), response() parses one HTTP
           response (Content-Length, chunked or read-to-close), at_eof() tells whether the
           server closed it.
raw()      send bytes on a fresh socket and return what comes back.
get/post   via http.client, returning (status, headers dict lower-case, body bytes).
test/xfail/run_tests   a tiny registry: prints `ok name` / `FAIL name`, then `N passed, N failed`,
           exits 1 when anything failed. Every test runs under an alarm (TEST_TIMEOUT s); a
           SIGTERM (tools/test's `timeout`) fails the running test with its traceback.
wait_for   polls a condition with a generous deadline: how a test waits for something to happen.
Everything uses 127.0.0.1 and every socket has a timeout, so a hung server fails a test
instead of hanging the suite.

Machine speed: no test may depend on it. SLUICE_TEST_SLOW (a factor >= 1, default 1; tools/test
sets it for the sanitizer builds, which run 3-10x slower) multiplies the limits that only bound
a wait for something that must happen: the per-test alarm, server start and exit, wait_for, the
default socket timeout (scaled()). It never stretches a window in which something must NOT
happen, nor a timeout a test passes explicitly.
"""
import http.client
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import traceback
from urllib.parse import urlparse

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
HERE = os.path.dirname(os.path.abspath(__file__))
SLUICE_BIN = os.path.abspath(os.environ.get("SLUICE_BIN") or os.path.join(ROOT, "build", "sluice"))
HOST = "127.0.0.1"
SLOW = max(1.0, float(os.environ.get("SLUICE_TEST_SLOW") or 1))


def scaled(seconds):
    """A limit on waiting for something that must happen, allowing for a slow (sanitizer) build."""
    return seconds * SLOW


TIMEOUT = scaled(10.0)             # default socket timeout, seconds
# Per test (SIGALRM). Only catches a hang, so it is far above what any test needs: at load
# average 8, test_reload.py's thousand_reloads_keep_rss_flat alone took over 30 s.
TEST_TIMEOUT = int(scaled(180))

SANITIZER_RE = re.compile(r"ERROR: (Address|Leak|Thread|Memory)Sanitizer|runtime error:|SUMMARY: \w+Sanitizer")


class TestFailure(AssertionError):
    pass


def check(cond, msg="check failed"):
    """assert that survives python -O and carries a message."""
    if not cond:
        raise TestFailure(msg)


def free_port():
    s = socket.socket()
    s.bind((HOST, 0))
    port = s.getsockname()[1]
    s.close()
    return port


# ------------------------------------------------------------------ the server under test


def rss_kb(srv):
    """The resident set (VmRSS, kB) of a Server's process (or of a pid); fails the test when
    /proc has no VmRSS for it."""
    pid = srv if isinstance(srv, int) else srv.proc.pid
    with open("/proc/%d/status" % pid) as f:
        for ln in f:
            if ln.startswith("VmRSS:"):
                return int(ln.split()[1])
    raise TestFailure("no VmRSS for pid %d" % pid)


class Server:
    """A running sluice for one fixture directory (relative to tests/integration or absolute)."""

    def __init__(self, fixture, env=None, config="config.lua", start_timeout=30.0, health="/health"):
        self.fixture = fixture if os.path.isabs(fixture) else os.path.join(HERE, fixture)
        self.config = os.path.join(self.fixture, config)
        self.env = dict(os.environ)
        self.env.update(env or {})
        self.start_timeout = scaled(start_timeout)
        self.health = health              # the path start() polls until it answers 200
        self.port = None
        self.proc = None
        self.returncode = None
        self.signalled = False
        self._errf = None

    def start(self):
        for attempt in range(3):          # a free port can be taken between probe and bind
            self.port = free_port()
            self.env["PORT"] = str(self.port)
            self._errf = tempfile.NamedTemporaryFile(prefix="sluice-stderr-", suffix=".log", delete=False)
            self.proc = subprocess.Popen([SLUICE_BIN, "run", "--config", self.config], env=self.env,
                                         stdin=subprocess.DEVNULL, stdout=self._errf, stderr=self._errf,
                                         cwd=self.fixture)
            if self._wait_healthy():
                return self
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait(5)
            if "Address already in use" not in self.log():
                break
        raise TestFailure("server did not become healthy; stderr:\n" + self.log()[-3000:])

    def _wait_healthy(self):
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                return False
            try:
                # a probe that times out is retried and so reaches the server twice: keep the
                # limit well above a loaded machine's answer time (rate-limited fixtures count it)
                st, _, _ = get(self.port, self.health, timeout=scaled(3.0))
                if st == 200:
                    return True
            except OSError:
                pass
            time.sleep(0.05)
        return False

    def log(self):
        """Everything the server wrote to stdout/stderr so far."""
        if not self._errf:
            return ""
        with open(self._errf.name, "rb") as f:
            return f.read().decode("utf-8", "replace")

    def wait_log(self, pattern, timeout=15.0, what=None):
        """Waits (bounded, scaled) until the server's output matches the regex `pattern`; returns
        the match. How a test sees that the server got somewhere (a handler started, a signal
        was handled) instead of sleeping."""
        rx = re.compile(pattern, re.M)
        found = []
        wait_for(lambda: found.append(rx.search(self.log())) or found[-1], timeout,
                 what or "%r in the server's log" % pattern)
        return found[-1]

    def sanitizer_report(self):
        m = SANITIZER_RE.search(self.log())
        return self.log()[m.start():m.start() + 4000] if m else None

    def signal(self, sig):
        self.signalled = True
        self.proc.send_signal(sig)

    def wait(self, timeout=30.0):
        """Waits for exit; returns the exit status (kills and fails on timeout)."""
        timeout = scaled(timeout)
        try:
            self.returncode = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
            raise TestFailure("server did not exit within %.0f s of the signal" % timeout)
        return self.returncode

    def stop(self):
        """SIGTERM; requires exit status 0 and no sanitizer report."""
        if self.proc and self.proc.poll() is None:
            self.signalled = True
            self.proc.send_signal(signal.SIGTERM)
        rc = self.wait()
        rep = self.sanitizer_report()
        check(rep is None, "sanitizer report:\n" + (rep or ""))
        check(rc == 0, "server exit status %r (want 0); stderr tail:\n%s" % (rc, self.log()[-2000:]))

    def died_message(self):
        why = ""
        if not self.signalled and "shutting down" in self.log():
            why = " after a SIGTERM/SIGINT the tests did not send (another process killing sluice?)"
        elif self.proc.returncode is not None and self.proc.returncode < 0:
            why = " by signal %d" % -self.proc.returncode
        return "server died (status %r)%s; stderr tail:\n%s" % (self.proc.returncode, why, self.log()[-3000:])

    def assert_alive(self):
        """The follow-up check after every case: a fresh GET /hello still gets 200."""
        check(self.proc.poll() is None, self.died_message())
        st, _, body = get(self.port, "/hello")
        check(st == 200 and body == b"hello world\n", "follow-up GET /hello: %r %r" % (st, body))

    def cleanup(self):
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)
        if self._errf:
            self._errf.close()
            try:
                os.unlink(self._errf.name)
            except OSError:
                pass

    def __enter__(self):
        try:
            return self.start()
        except BaseException:
            self.cleanup()
            raise

    def __exit__(self, et, ev, tb):
        try:
            if et is None:
                self.stop()
        finally:
            self.cleanup()
        return False


# ------------------------------------------------------------------ raw sockets and parsing

class Response:
    def __init__(self, status, reason, headers, body, raw):
        self.status, self.reason, self.body, self.raw = status, reason, body, raw
        self.header_list = headers                      # [(lower-case name, value)] in order
        self.headers = {k: v for k, v in headers}       # last one wins

    def all(self, name):
        return [v for k, v in self.header_list if k == name]

    def __repr__(self):
        return "<Response %d %r %r>" % (self.status, self.headers, self.body[:200])


class Conn:
    """A client socket with a read buffer, for keep-alive, pipelining and malformed input."""

    def __init__(self, port, timeout=TIMEOUT):
        self.sock = socket.create_connection((HOST, port), timeout=timeout)
        self.buf = b""
        self.eof = False

    def send(self, data):
        self.sock.sendall(data if isinstance(data, bytes) else data.encode())

    def _fill(self):
        if self.eof:
            return False
        chunk = self.sock.recv(65536)
        if not chunk:
            self.eof = True
            return False
        self.buf += chunk
        return True

    def read_until(self, marker):
        while marker not in self.buf:
            if not self._fill():
                raise TestFailure("connection closed before %r; got %r" % (marker, self.buf[:300]))
        i = self.buf.index(marker) + len(marker)
        out, self.buf = self.buf[:i], self.buf[i:]
        return out

    def read_exact(self, n):
        while len(self.buf) < n:
            if not self._fill():
                raise TestFailure("connection closed after %d of %d bytes" % (len(self.buf), n))
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def response(self, head=False):
        """Reads one response. head=True: the request was HEAD, so no body follows."""
        start = self.read_until(b"\r\n\r\n")
        lines = start[:-4].decode("latin-1").split("\r\n")
        m = re.match(r"HTTP/1\.[01] (\d{3}) ?(.*)$", lines[0])
        check(m, "bad status line %r" % lines[0])
        status = int(m.group(1))
        hdrs = []
        for ln in lines[1:]:
            check(":" in ln and ln[0] not in " \t", "bad header line %r" % ln)
            k, v = ln.split(":", 1)
            hdrs.append((k.strip().lower(), v.strip()))
        h = dict(hdrs)
        body = b""
        if head or status < 200 or status in (204, 304):
            pass
        elif "chunked" in h.get("transfer-encoding", "").lower():
            while True:
                size = int(self.read_until(b"\r\n").split(b";")[0].strip(), 16)
                if size == 0:
                    self.read_until(b"\r\n")
                    break
                body += self.read_exact(size)
                check(self.read_exact(2) == b"\r\n", "bad chunk end")
        elif "content-length" in h:
            body = self.read_exact(int(h["content-length"]))
        else:
            while self._fill():
                pass
            body, self.buf = self.buf, b""
        return Response(status, m.group(2), hdrs, body, start + body)

    def at_eof(self, timeout=TIMEOUT):
        """True when the server closes the connection (no further bytes) within timeout."""
        self.sock.settimeout(timeout)
        try:
            while self._fill():
                pass
            return self.buf == b""
        except socket.timeout:
            return False
        except ConnectionResetError:
            return True

    def close(self):
        self.sock.close()

    def __enter__(self):
        return self

    def __exit__(self, *a):
        self.close()


def raw(port, data, read_until_close=True, timeout=TIMEOUT):
    """Sends data on a new connection; returns every byte until the server closes (or, when
    read_until_close is False, what arrives within the first successful recv)."""
    with socket.create_connection((HOST, port), timeout=timeout) as s:
        s.sendall(data if isinstance(data, bytes) else data.encode())
        out = b""
        while True:
            try:
                chunk = s.recv(65536)
            except ConnectionResetError:
                break
            if not chunk:
                break
            out += chunk
            if not read_until_close:
                break
        return out


def parse_responses(data):
    """Splits a byte string holding several responses (to non-HEAD requests)."""
    out = []
    c = Conn.__new__(Conn)
    c.buf, c.eof, c.sock = data, True, None
    while c.buf:
        out.append(c.response())
    return out


def _request(port, method, path, body=None, headers=None, timeout=TIMEOUT):
    conn = http.client.HTTPConnection(HOST, port, timeout=timeout)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        r = conn.getresponse()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, r.read()
    finally:
        conn.close()


def get(port, path, headers=None, timeout=TIMEOUT):
    return _request(port, "GET", path, None, headers, timeout)


def post(port, path, body, headers=None, timeout=TIMEOUT):
    return _request(port, "POST", path, body, headers, timeout)


# ------------------------------------------------------------------ metrics, waiting, SSE

def metric(port, name, required=False):
    """The sum of the /metrics samples named `name` (a bare name sums every label set; a name
    with its labels picks one series). None when there is none, or a failure when required."""
    st, _, body = get(port, "/metrics")
    check(st == 200, "/metrics on :%d: %r" % (port, st))
    total, found = 0.0, False
    for ln in body.decode().splitlines():
        if ln.startswith(name + " ") or ln.startswith(name + "{"):
            total += float(ln.rsplit(" ", 1)[1])
            found = True
    check(found or not required, "metric %s missing" % name)
    return total if found else None


def wait_for(cond, timeout=15.0, what="condition"):
    """Polls cond() every 50 ms (a connection error counts as not yet) until it is true. The
    timeout only bounds a failure: pick it generously (it is scaled for slow builds)."""
    timeout = scaled(timeout)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if cond():
                return
        except OSError:
            pass
        time.sleep(0.05)
    raise TestFailure("timed out after %.0f s waiting for %s" % (timeout, what))


def wait_linked(*servers):
    """Every instance has its Redis links up: one command connection per worker (2 workers in
    the fixtures) and the subscriber."""
    for s in servers:
        wait_for(lambda: metric(s.port, 'sluice_redis_connected{conn="subscriber"}') == 1 and
                 metric(s.port, 'sluice_redis_connected{conn="command"}') == 2, 15, "the Redis links of :%d" % s.port)


class SSEClient:
    """A raw event-stream client: status and head, then parsed events (comments skipped)."""

    def __init__(self, port, path, headers=None, timeout=None):
        self.sock = socket.create_connection((HOST, port), timeout=TIMEOUT if timeout is None else timeout)
        h = "".join("%s: %s\r\n" % kv for kv in (headers or {}).items())
        self.sock.sendall(("GET %s HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\n%s\r\n" % (path, h)).encode())
        self.buf = b""
        while b"\r\n\r\n" not in self.buf:
            chunk = self.sock.recv(65536)
            if not chunk:
                break
            self.buf += chunk
        head, _, self.buf = self.buf.partition(b"\r\n\r\n")
        self.status = int(head.split(b" ", 2)[1]) if head else 0
        self.head = head.decode("latin-1")

    def events(self, n, timeout=None):
        """Up to n events ({field: value}, repeated data lines joined with \\n) within timeout
        (default: a generous wait for events that must come; pass a short one to check that
        nothing more comes)."""
        timeout = scaled(15.0) if timeout is None else timeout
        out = []
        deadline = time.monotonic() + timeout
        while len(out) < n:
            while b"\n\n" in self.buf and len(out) < n:
                block, _, self.buf = self.buf.partition(b"\n\n")
                ev = {}
                for ln in block.decode().split("\n"):
                    if not ln or ln.startswith(":"):
                        continue
                    k, _, v = ln.partition(": ")
                    ev[k] = ev[k] + "\n" + v if k in ev else v
                if ev:
                    out.append(ev)
            left = deadline - time.monotonic()
            if len(out) >= n or left <= 0:
                break
            self.sock.settimeout(left)
            try:
                chunk = self.sock.recv(65536)
            except socket.timeout:
                break
            if not chunk:
                break
            self.buf += chunk
        return out

    def close(self):
        self.sock.close()


# ------------------------------------------------------------------ a throw-away redis-server

class PgBouncer:
    """PgBouncer 1.18 in transaction mode in front of database_url (default: DATABASE_URL), 2 server
    connections; `with PgBouncer() as pgb:` gives pgb.url (the same database through PgBouncer) and pgb.log()."""

    def __init__(self, database_url=None):
        self.database_url = database_url or os.environ["DATABASE_URL"]

    def __enter__(self):
        pgb = shutil.which("pgbouncer") or "/usr/sbin/pgbouncer"
        check(os.path.exists(pgb), "pgbouncer is not installed (tools/bootstrap installs it)")
        u = urlparse(self.database_url)
        self.dir = d = tempfile.mkdtemp(prefix="sluice-pgbp-")
        os.chmod(d, 0o777)
        port = free_port()
        with open(os.path.join(d, "userlist.txt"), "w") as f:
            f.write('"%s" "%s"\n' % (u.username, u.password))
        with open(os.path.join(d, "pgbouncer.ini"), "w") as f:
            f.write("[databases]\n%s = host=%s port=%d dbname=%s user=%s password=%s\n"
                    "[pgbouncer]\nlisten_addr = 127.0.0.1\nlisten_port = %d\nunix_socket_dir =\n"
                    "auth_type = md5\nauth_file = %s/userlist.txt\npool_mode = transaction\n"
                    "default_pool_size = 2\nmax_client_conn = 100\nlogfile = %s/pgbouncer.log\n"
                    "pidfile = %s/pgbouncer.pid\nignore_startup_parameters = extra_float_digits\n"
                    % (u.path[1:], u.hostname, u.port or 5432, u.path[1:], u.username, u.password, port, d, d, d))
        for fn in os.listdir(d):
            os.chmod(os.path.join(d, fn), 0o644)
        cmd = [pgb, os.path.join(d, "pgbouncer.ini")]
        if os.geteuid() == 0:                     # pgbouncer refuses to run as root
            cmd = ["runuser", "-u", "postgres", "--"] + cmd
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        end = time.monotonic() + scaled(10)
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > end:
                    self.__exit__(None, None, None)
                    check(False, "pgbouncer did not start")
                time.sleep(0.05)
        self.url = "postgresql://%s:%s@127.0.0.1:%d%s" % (u.username, u.password, port, u.path)
        return self

    def log(self):
        with open(os.path.join(self.dir, "pgbouncer.log")) as f:
            return f.read()

    def __exit__(self, *exc):
        self.proc.terminate()
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        shutil.rmtree(self.dir, ignore_errors=True)
        return False


class RedisServer:
    """redis-server on a free loopback port in a temp dir, no persistence. start() waits for PING;
    stop()/kill() end it (start() again reuses the port, empty); cleanup() also removes the dir."""

    def __init__(self):
        self.dir = tempfile.mkdtemp(prefix="sluice-redis-")
        self.port = free_port()
        self.proc = None

    def start(self):
        self.proc = subprocess.Popen(["redis-server", "--port", str(self.port), "--bind", HOST, "--save", "",
                                      "--appendonly", "no", "--daemonize", "no", "--dir", self.dir],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                with socket.create_connection((HOST, self.port), timeout=1) as s:
                    s.sendall(b"PING\r\n")
                    if s.recv(64).startswith(b"+PONG"):
                        return self
            except OSError:
                pass
            time.sleep(0.05)
        raise TestFailure("redis-server did not start on :%d" % self.port)

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)
        self.proc = None

    kill = stop

    def cmd(self, *args):
        out = subprocess.run(["redis-cli", "-h", HOST, "-p", str(self.port)] + [str(a) for a in args],
                             capture_output=True, text=True, timeout=5)
        if out.returncode:
            raise OSError(out.stderr)
        return out.stdout.strip()

    @property
    def url(self):
        return "redis://%s:%d" % (HOST, self.port)

    def cleanup(self):
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


class NginxServer:
    """A real nginx in a temp prefix (workers may run as nobody: the prefix is world-readable).
    `http` is the body of the http {} block (the temp paths are added before it, the access log
    line after it: `access_log` is its value, "off" unless given, with %(p)s for the prefix, so a
    log_format in `http` can be named); `ports` are the ports start() waits for. `prefix` may be
    given (files written there first); otherwise a temp dir is made and removed by cleanup().
    Also a context manager."""

    def __init__(self, http, ports, prefix=None, access_log="off"):
        self.own = prefix is None
        self.prefix = prefix or tempfile.mkdtemp(prefix="sluice-nginx-")
        os.chmod(self.prefix, 0o777)
        self.ports = list(ports)
        self.nginx = shutil.which("nginx") or "/usr/sbin/nginx"
        check(os.path.exists(self.nginx), "nginx is not installed (apt-get install nginx)")
        self.conf = os.path.join(self.prefix, "nginx.conf")
        with open(self.conf, "w") as f:
            f.write("""worker_processes 1;
pid %(p)s/nginx.pid;
error_log %(p)s/error.log warn;
events { worker_connections 1024; }
http {
    client_body_temp_path %(p)s/body;
    proxy_temp_path %(p)s/proxy;
    fastcgi_temp_path %(p)s/fastcgi;
    uwsgi_temp_path %(p)s/uwsgi;
    scgi_temp_path %(p)s/scgi;
%(http)s
    access_log %(log)s;
}
""" % {"p": self.prefix, "http": http, "log": access_log % {"p": self.prefix}})
        self.proc = None

    def start(self):
        t = subprocess.run([self.nginx, "-t", "-p", self.prefix, "-c", self.conf], capture_output=True, text=True)
        check(t.returncode == 0, "nginx -t: " + t.stderr)
        self.proc = subprocess.Popen([self.nginx, "-p", self.prefix, "-c", self.conf, "-g", "daemon off;"],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for port in self.ports:
            deadline = time.monotonic() + 10
            while True:
                check(self.proc.poll() is None, "nginx exited at start: %s" % self.error_log()[-500:])
                try:
                    socket.create_connection((HOST, port), timeout=0.5).close()
                    break
                except OSError:
                    if time.monotonic() > deadline:
                        raise TestFailure("nginx did not listen on :%d" % port)
                    time.sleep(0.05)
        return self

    def error_log(self):
        try:
            with open(os.path.join(self.prefix, "error.log")) as f:
                return f.read()
        except OSError:
            return ""

    def stop(self):
        """SIGQUIT (graceful), then kill after 10 s."""
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGQUIT)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.proc = None

    def cleanup(self):
        self.stop()
        if self.own:
            shutil.rmtree(self.prefix, ignore_errors=True)

    def __enter__(self):
        return self.start()

    def __exit__(self, *a):
        self.cleanup()
        return False


# ------------------------------------------------------------------ test registry

_tests = []


def test(fn):
    """Decorator: registers fn (no arguments) as a test named after the function."""
    _tests.append(fn)
    return fn


def xfail(bug):
    """Decorator under @test: a known bug (name it: file:line, what). The test still runs;
    a failure prints `xfail` and does not count, a pass prints `XPASS` and fails the run,
    so the marker is removed once the bug is fixed."""
    def mark(fn):
        fn.xfail = bug
        return fn
    return mark


def _alarm(signum, frame):
    raise TestFailure("test exceeded %d s" % TEST_TIMEOUT)


class Terminated(BaseException):
    """SIGTERM (tools/test's `timeout` for a whole file): not an Exception, so a test's own
    `except Exception` does not swallow it; its finally blocks still stop the servers."""


def _term(signum, frame):
    raise Terminated("killed by SIGTERM (the file's time limit in tools/test?) while this test ran")


def run_tests(after_each=None, only=None):
    """Runs the registered tests in order (or those whose names contain a command-line
    argument); after_each() runs after every test and a failure there fails that test.
    Prints one line per test, then `N passed, N failed`; exits 1 on any failure."""
    passed = failed = 0
    only = only or [a for a in sys.argv[1:] if not a.startswith("-")]
    signal.signal(signal.SIGALRM, _alarm)
    signal.signal(signal.SIGTERM, _term)
    t0 = time.monotonic()
    for fn in _tests:
        if only and not any(o in fn.__name__ for o in only):
            continue
        t = time.monotonic()
        signal.alarm(TEST_TIMEOUT)
        bug = getattr(fn, "xfail", None)
        try:
            try:
                fn()
            except Exception:
                if not bug:
                    raise
                print("xfail %s: %s\n      %s" % (fn.__name__, bug, sys.exc_info()[1]), flush=True)
            else:
                if bug:
                    raise TestFailure("XPASS: marked xfail (%s) but passed: remove the marker" % bug)
            if after_each:
                after_each()
            signal.alarm(0)
            passed += 1
            if not bug:
                print("ok   %s (%.2fs)" % (fn.__name__, time.monotonic() - t), flush=True)
        except (Exception, Terminated) as e:
            signal.alarm(0)
            failed += 1
            print("FAIL %s (%.2fs)" % (fn.__name__, time.monotonic() - t), flush=True)
            for ln in traceback.format_exc().rstrip().splitlines():
                print("     " + ln)
            sys.stdout.flush()
            if isinstance(e, Terminated):      # say where it hung, then stop: the run is over
                print("time: %.1fs" % (time.monotonic() - t0))
                print("%d passed, %d failed (stopped by SIGTERM)" % (passed, failed), flush=True)
                sys.exit(1)
    print("time: %.1fs" % (time.monotonic() - t0))
    print("%d passed, %d failed" % (passed, failed), flush=True)
    sys.exit(1 if failed else 0)
