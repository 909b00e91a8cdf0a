"""test_http_client.py: app.http (issue 19) against real servers on loopback: the sluice instance
itself, nginx (plain HTTP, gzip, redirects), nginx with TLS and HTTP/2 under a CA this test makes
with openssl (ca_file, wrong host name, client certificates), and a small Python upstream that
holds, trickles, chunks, never answers or records what it saw (cancellation, concurrency, FIFO).

Run: python3 tests/integration/test_http_client.py [names]   (SLUICE_BIN overrides build/sluice)
"""
import json
import os
import select
import shutil
import signal
import socket
import socketserver
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import (HOST, SLUICE_BIN, NginxServer, Server, SSEClient, check, free_port, get, metric, post,  # noqa: E402
                     run_tests, test, wait_for)

FIXTURE = "fixtures/http_client"
TMP = tempfile.mkdtemp(prefix="sluice-httpc-")
os.chmod(TMP, 0o755)


# ------------------------------------------------------------------ a scriptable upstream

class Upstream:
    """HTTP/1.1 on a free loopback port, keep-alive, one thread per connection. Paths:
    /hold?id=X    waits until release(X) (or release_all) and answers "released X"; notes when
                  the client closes the connection meanwhile (`closed`)
    /never        reads the request, never answers (notes the close like /hold)
    /trickle?n=&ms=  n 100-byte pieces ms apart under a Content-Length
    /chunked?n=&size=  a chunked body of n pieces
    /record?ev=   notes ev, answers "ok"
    /close        closes without answering
    anything else "upstream ok"."""

    def __init__(self):
        self.cond = threading.Condition()
        self.arrivals, self.closed, self.records = [], [], []
        self.held = self.max_held = self.connections = 0
        self.released, self.release_all, self.stopping = set(), False, False
        self.auto_release_at = None     # release every hold once this many are held at once
        up = self

        class Handler(socketserver.BaseRequestHandler):
            def handle(self):
                with up.cond:
                    up.connections += 1
                try:
                    up.serve(self.request)
                except OSError:
                    pass

        class TCP(socketserver.ThreadingTCPServer):
            daemon_threads = True
            allow_reuse_address = True
            request_queue_size = 512

        self.srv = TCP((HOST, 0), Handler)
        self.port = self.srv.server_address[1]
        threading.Thread(target=self.srv.serve_forever, daemon=True).start()

    def url(self, path):
        return "http://%s:%d%s" % (HOST, self.port, path)

    def reset(self):
        with self.cond:
            self.arrivals, self.closed, self.records = [], [], []
            self.held = self.max_held = self.connections = 0
            self.released, self.release_all, self.auto_release_at = set(), False, None

    def release(self, ident=None):
        with self.cond:
            if ident is None:
                self.release_all = True
            else:
                self.released.add(ident)
            self.cond.notify_all()

    def stop(self):
        with self.cond:
            self.stopping = True
            self.cond.notify_all()
        self.srv.shutdown()

    @staticmethod
    def answer(sock, body, status="200 OK", extra=""):
        if isinstance(body, str):
            body = body.encode()
        sock.sendall(("HTTP/1.1 %s\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n%s\r\n" %
                      (status, len(body), extra)).encode() + body)

    def client_gone(self, sock):
        r, _, _ = select.select([sock], [], [], 0)
        if not r:
            return False
        try:
            return sock.recv(1, socket.MSG_PEEK) == b""
        except OSError:
            return True

    def hold(self, sock, ident, forever):
        with self.cond:
            self.arrivals.append(ident)
            self.held += 1
            self.max_held = max(self.max_held, self.held)
            if self.auto_release_at and self.held >= self.auto_release_at:
                self.release_all = True
            self.cond.notify_all()
        try:
            while True:
                with self.cond:
                    if self.stopping:
                        return False
                    if not forever and (self.release_all or ident in self.released):
                        break
                    self.cond.wait(0.05)
                if self.client_gone(sock):
                    with self.cond:
                        self.closed.append(ident)
                        self.cond.notify_all()
                    return False
        finally:
            with self.cond:
                self.held -= 1
        self.answer(sock, "released %s" % ident)
        return True

    def serve(self, sock):
        buf = b""
        while True:
            while b"\r\n\r\n" not in buf:
                d = sock.recv(65536)
                if not d:
                    return
                buf += d
            head, buf = buf.split(b"\r\n\r\n", 1)
            lines = head.decode("latin-1").split("\r\n")
            target = lines[0].split(" ")[1]
            hdrs = dict((k.strip().lower(), v.strip()) for k, v in (ln.split(":", 1) for ln in lines[1:] if ":" in ln))
            n = int(hdrs.get("content-length", "0"))
            while len(buf) < n:
                d = sock.recv(65536)
                if not d:
                    return
                buf += d
            buf = buf[n:]
            path, _, qs = target.partition("?")
            q = {k: v[0] for k, v in urllib.parse.parse_qs(qs).items()}
            if path == "/hold" or path == "/never":
                if not self.hold(sock, q.get("id", path), path == "/never"):
                    return
            elif path == "/trickle":
                pieces, ms = int(q.get("n", "5")), int(q.get("ms", "100"))
                sock.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % (pieces * 100))
                for i in range(pieces):
                    time.sleep(ms / 1000.0)
                    sock.sendall(bytes([65 + i % 26]) * 100)
            elif path == "/chunked":
                pieces, size = int(q.get("n", "4")), int(q.get("size", "10"))
                out = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Type: text/plain\r\n\r\n"
                for i in range(pieces):
                    out += b"%x\r\n%s\r\n" % (size, bytes([97 + i % 26]) * size)
                sock.sendall(out + b"0\r\n\r\n")
            elif path == "/record":
                with self.cond:
                    self.records.append(q.get("ev", ""))
                    self.cond.notify_all()
                self.answer(sock, "ok")
            elif path == "/close":
                return
            else:
                self.answer(sock, "upstream ok\n")


UP = Upstream()


# ------------------------------------------------------------------ certificates and nginx

def sh(*args):
    r = subprocess.run(args, cwd=TMP, capture_output=True, text=True, timeout=60)
    check(r.returncode == 0, "%s: %s" % (" ".join(args), r.stderr))


def make_certs():
    """A CA, a server certificate for DNS:localhost only, a client certificate (EC P-256)."""
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    sh("openssl", "req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.pem", "-days", "2", "-subj", "/CN=sluice test CA",
       "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign")
    for name, ext in (("server", "subjectAltName=DNS:localhost\nextendedKeyUsage=serverAuth\n"),
                      ("client", "extendedKeyUsage=clientAuth\n")):
        with open(os.path.join(TMP, name + ".ext"), "w") as f:
            f.write(ext)
        sh("openssl", "req", *ec, "-keyout", name + ".key", "-out", name + ".csr", "-subj", "/CN=" + name)
        sh("openssl", "x509", "-req", "-in", name + ".csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
           "-out", name + ".pem", "-days", "2", "-extfile", name + ".ext")


def start_nginx():
    root = os.path.join(TMP, "www")
    os.makedirs(root, exist_ok=True)
    with open(os.path.join(root, "small.txt"), "w") as f:
        f.write("hello from nginx\n")
    with open(os.path.join(root, "text.txt"), "w") as f:
        f.write("".join("line %05d of a text that compresses well\n" % i for i in range(1200)))
    with open(os.path.join(root, "big.bin"), "wb") as f:
        f.write(os.urandom(1 << 20))
    plain, tls = free_port(), free_port()
    ng = NginxServer("""    default_type text/plain;
    gzip on;
    gzip_types text/plain;
    gzip_min_length 1;
    server {
        listen 127.0.0.1:%(plain)d;
        root %(root)s;
        location = /redir { return 302 /small.txt; }
        location = /loop { return 302 /loop; }
    }
    server {
        listen 127.0.0.1:%(tls)d ssl http2;
        ssl_certificate %(p)s/server.pem;
        ssl_certificate_key %(p)s/server.key;
        ssl_client_certificate %(p)s/ca.pem;
        ssl_verify_client optional;
        root %(root)s;
        location = /whoami { return 200 "$ssl_client_verify $ssl_client_s_dn\\n"; }
    }
""" % {"p": TMP, "root": root, "plain": plain, "tls": tls}, [plain, tls], prefix=TMP)
    return ng.start(), plain, tls


make_certs()
NGINX, NGX, NGX_TLS = start_nginx()
CA = os.path.join(TMP, "ca.pem")


def ngx(path):
    return "http://127.0.0.1:%d%s" % (NGX, path)


def call(srv, opts, timeout=30):
    """POST /call: the fixture runs app.http.request(opts) and answers with the outcome."""
    st, _, body = post(srv.port, "/call", json.dumps(opts), {"Content-Type": "application/json"}, timeout=timeout)
    check(st == 200, "/call %r: %r %r" % (opts, st, body[:300]))
    return json.loads(body)


def ok(out, status=200):
    check(out.get("ok") and out["status"] == status, "expected a %d response, got %r" % (status, out))
    return out


def failed(out, kind, host):
    check(not out.get("ok"), "expected a failure, got %r" % {k: out.get(k) for k in ("status", "body")})
    check(out["kind"] == kind, "kind %r, want %r: %s" % (out["kind"], kind, out["err"]))
    check(out["err"].startswith(host + ": "), "error does not start with the host %r: %s" % (host, out["err"]))
    return out


def parallel(fn, n):
    """Runs fn(i) on n threads at once; returns the results in order (exceptions re-raised)."""
    out = [None] * n
    errs = []

    def run(i):
        try:
            out[i] = fn(i)
        except Exception as e:  # noqa: BLE001  re-raised below with the index
            errs.append((i, e))
    ts = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in ts:
        t.start()
    return ts, out, errs


def join(ts, errs):
    for t in ts:
        t.join(60)
    check(not errs, "client threads failed: %r" % errs[:3])


S = Server(FIXTURE).start()


# ------------------------------------------------------------------ the instance itself

@test
def self_call_sends_method_headers_json_query_and_form():
    out = ok(call(S, {"self": "/echo", "method": "POST", "json": {"a": 1, "b": [1, 2]},
                      "headers": {"X-Test": "yes", "x-multi": ["1", "2"]}, "query": {"q": "a b&c"}}))
    echo = json.loads(out["body"])
    check(echo["method"] == "POST" and echo["path"] == "/echo", echo)
    check(json.loads(echo["body"]) == {"a": 1, "b": [1, 2]}, echo["body"])
    check(echo["headers"]["content-type"] == "application/json", echo["headers"])
    check(echo["headers"]["x-test"] == "yes" and echo["headers"]["x-multi"] == "1, 2", echo["headers"])
    check(echo["query"] == {"q": "a b&c"}, echo["query"])
    check(echo["headers"]["user-agent"] == "sluice", echo["headers"])
    check(out["headers"]["content-type"] == "application/json", out["headers"])   # response names lower-case
    check(out["http_version"] == "1.1" and out["time"] >= 0, out)
    out = ok(call(S, {"self": "/echo", "method": "PUT", "form": {"name": "a&b", "n": 3}}))
    echo = json.loads(out["body"])
    check(echo["method"] == "PUT" and echo["headers"]["content-type"] == "application/x-www-form-urlencoded", echo)
    check(sorted(echo["body"].split("&")) == ["n=3", "name=a%26b"], echo["body"])
    # a POST without a body still says Content-Length: 0; a query joins one already in the URL
    echo = json.loads(ok(call(S, {"self": "/echo?x=1#frag", "method": "post", "query": {"y": 2}}))["body"])
    check(echo["method"] == "POST" and echo["headers"].get("content-length") == "0", echo)
    check(echo["query"] == {"x": "1", "y": "2"}, echo["query"])
    S.assert_alive()


@test
def sugar_verbs_and_status_codes_are_responses():
    for verb in ("get", "post", "put", "delete"):
        st, _, body = post(S.port, "/verb", json.dumps({"verb": verb, "url": "http://127.0.0.1:%d/echo" % S.port,
                                                        "opts": {"body": "x"} if verb != "get" else {}}))
        out = json.loads(body)
        check(st == 200 and out["ok"] and json.loads(out["body"])["method"] == verb.upper(), (verb, out))
    st, _, body = post(S.port, "/verb", json.dumps({"verb": "head", "url": "http://127.0.0.1:%d/echo" % S.port}))
    out = json.loads(body)
    check(st == 200 and out["ok"] and out["status"] == 200 and out["body"] == "" and
          int(out["headers"]["content-length"]) > 0, out)
    out = ok(call(S, {"self": "/status/404"}), 404)
    check(out["body"] == "status 404", out)
    ok(call(S, {"self": "/status/503"}), 503)
    st, _, body = get(S.port, "/decode")
    check(st == 200 and json.loads(body) == {"ok": True, "n": 3}, body)


@test
def misuse_raises_with_a_message_and_the_server_keeps_serving():
    want = {"scheme": "unsupported URL scheme (ftp)", "nourl": "url must be a string",
            "header": "has CR, LF or NUL", "timeout": "timeout must be a number",
            "twobodies": "give one of body, json and form", "all": "(request 2)",
            "unknown": 'unknown option "timout"'}
    for what, text in want.items():
        st, _, body = get(S.port, "/misuse/" + what)
        check(st == 500 and text in json.loads(body)["error"], (what, st, body))
    S.assert_alive()


@test
def calling_at_load_time_is_rejected():
    d = tempfile.mkdtemp(prefix="loadtime-", dir=TMP)
    with open(os.path.join(d, "config.lua"), "w") as f:
        f.write('return { scripts = { "app.lua" } }\n')
    with open(os.path.join(d, "app.lua"), "w") as f:
        f.write('local app = require "sluice"\nlocal res = app.http.get("http://127.0.0.1:1/")\n')
    r = subprocess.run([SLUICE_BIN, "check", "--config", os.path.join(d, "config.lua")],
                       capture_output=True, text=True, timeout=30)
    check(r.returncode != 0 and "app.lua:2" in r.stderr + r.stdout and "not at load time" in r.stderr + r.stdout,
          (r.returncode, r.stdout, r.stderr))


# ------------------------------------------------------------------ ordinary failures

@test
def refused_port_and_unknown_host_return_nil_and_a_message():
    port = free_port()
    failed(call(S, {"url": "http://127.0.0.1:%d/x" % port}), "connect", "127.0.0.1:%d" % port)
    failed(call(S, {"url": "http://no-such-host.invalid/x"}), "dns", "no-such-host.invalid")
    failed(call(S, {"url": UP.url("/close")}), "protocol", "127.0.0.1:%d" % UP.port)
    S.assert_alive()


@test
def timeout_when_the_upstream_accepts_and_never_answers():
    UP.reset()
    out = failed(call(S, {"url": UP.url("/never"), "timeout": 0.5}), "timeout", "127.0.0.1:%d" % UP.port)
    check("timed out" in out["err"], out)
    # curl gave up on the connection: the upstream sees it closed
    wait_for(lambda: "/never" in UP.closed, 10, "the upstream to see the timed-out connection close")
    S.assert_alive()


@test
def a_trickling_body_arrives_whole_within_the_timeout_and_times_out_past_it():
    out = ok(call(S, {"url": UP.url("/trickle?n=5&ms=100"), "timeout": 20}))
    check(out["body"] == "".join(chr(65 + i) * 100 for i in range(5)), out["body"][:80])
    out = failed(call(S, {"url": UP.url("/trickle?n=40&ms=100"), "timeout": 1}), "timeout", "127.0.0.1:%d" % UP.port)
    S.assert_alive()


@test
def body_over_max_body_fails_with_or_without_a_length():
    out = failed(call(S, {"url": ngx("/big.bin"), "max_body": 1000}), "too_large", "127.0.0.1:%d" % NGX)
    check("max_body (1000 bytes)" in out["err"], out)
    failed(call(S, {"url": UP.url("/chunked?n=20&size=1000"), "max_body": 5000}), "too_large", "127.0.0.1:%d" % UP.port)
    out = ok(call(S, {"url": UP.url("/chunked?n=5&size=1000"), "max_body": 5000}))   # exactly at the limit
    check(len(out["body"]) == 5000, len(out["body"]))
    out = ok(call(S, {"url": ngx("/big.bin"), "max_body": 2 << 20}))
    check(out["body_len"] == 1 << 20, out["body_len"])
    S.assert_alive()


# ------------------------------------------------------------------ nginx: redirects, gzip, chunked

@test
def redirects_are_returned_or_followed():
    out = ok(call(S, {"url": ngx("/redir")}), 302)
    check(out["headers"]["location"].endswith("/small.txt"), out["headers"])
    out = ok(call(S, {"url": ngx("/redir"), "follow_redirects": True}))
    check(out["body"] == "hello from nginx\n" and out["url"].endswith("/small.txt"), out)
    out = failed(call(S, {"url": ngx("/loop"), "follow_redirects": True, "max_redirects": 3}), "redirects",
                 "127.0.0.1:%d" % NGX)
    check("max_redirects 3" in out["err"], out)


@test
def gzip_and_chunked_responses_are_decoded():
    with open(os.path.join(TMP, "www", "text.txt")) as f:
        text = f.read()
    out = ok(call(S, {"url": ngx("/text.txt")}))
    check(out["headers"].get("content-encoding") == "gzip", out["headers"])       # compressed on the wire
    check(out["headers"].get("transfer-encoding") == "chunked", out["headers"])   # nginx gzips with chunks
    check(out["body"] == text, "decoded body differs (%d bytes, want %d)" % (len(out["body"]), len(text)))
    out = ok(call(S, {"url": ngx("/text.txt"), "decompress": False}))
    check("content-encoding" not in out["headers"] and out["body"] == text, out["headers"])
    out = ok(call(S, {"url": UP.url("/chunked?n=4&size=10")}))
    check(out["body"] == "a" * 10 + "b" * 10 + "c" * 10 + "d" * 10, out["body"])


@test
def default_user_agent_and_accept_encoding_yield_to_the_callers_own():
    hdrs = json.loads(ok(call(S, {"self": "/echo"}))["body"])["headers"]
    check(hdrs.get("user-agent") == "sluice", hdrs)
    enc = [e.strip() for e in hdrs.get("accept-encoding", "").split(",")]
    check("gzip" in enc and "deflate" in enc, "Accept-Encoding %r" % hdrs.get("accept-encoding"))
    # set by the caller (any case): sent once, theirs; decompress = false sends none
    hdrs = json.loads(ok(call(S, {"self": "/echo", "headers": {"user-AGENT": "mine/1", "Accept-Encoding": "identity"}}))["body"])["headers"]
    check(hdrs.get("user-agent") == "mine/1" and hdrs.get("accept-encoding") == "identity", hdrs)
    hdrs = json.loads(ok(call(S, {"self": "/echo", "decompress": False}))["body"])["headers"]
    check("accept-encoding" not in hdrs and hdrs.get("user-agent") == "sluice", hdrs)
    # the caller's headers are all sent, in order, also past the ones added here, and a large
    # body goes without waiting for 100-continue
    many = {"x-h%02d" % i: "v%d" % i for i in range(40)}
    out = ok(call(S, {"self": "/echo", "method": "POST", "headers": many, "body": "b" * 5000}))
    echo = json.loads(out["body"])
    check(all(echo["headers"].get(k) == v for k, v in many.items()), echo["headers"])
    check(echo["body"] == "b" * 5000 and "expect" not in echo["headers"], echo["headers"])


@test
def keep_alive_connections_are_reused():
    UP.reset()
    for _ in range(5):
        ok(call(S, {"url": UP.url("/record?ev=ka")}))
    check(UP.records == ["ka"] * 5, UP.records)
    # one connection at most: the one of an earlier test may still be the one in use
    check(UP.connections <= 1, "5 sequential calls opened %d connections" % UP.connections)


# ------------------------------------------------------------------ TLS

@test
def tls_verification_passes_with_ca_file_and_fails_without_or_on_the_wrong_name():
    url = "https://localhost:%d/small.txt" % NGX_TLS
    out = ok(call(S, {"url": url, "ca_file": CA}))
    check(out["body"] == "hello from nginx\n", out)
    check(out["http_version"] == "2", "HTTP/2 over TLS not used: %r" % out["http_version"])
    out = failed(call(S, {"url": url}), "tls", "localhost:%d" % NGX_TLS)
    check("certificate" in out["err"], out)
    failed(call(S, {"url": "https://127.0.0.1:%d/small.txt" % NGX_TLS, "ca_file": CA}), "tls", "127.0.0.1:%d" % NGX_TLS)
    ok(call(S, {"url": "https://127.0.0.1:%d/small.txt" % NGX_TLS, "verify_tls": False}))
    S.assert_alive()


@test
def client_certificates_are_presented():
    url = "https://localhost:%d/whoami" % NGX_TLS
    out = ok(call(S, {"url": url, "ca_file": CA}))
    check(out["body"].startswith("NONE"), out["body"])
    out = ok(call(S, {"url": url, "ca_file": CA, "client_cert": os.path.join(TMP, "client.pem"),
                      "client_key": os.path.join(TMP, "client.key")}))
    check(out["body"].startswith("SUCCESS") and "CN=client" in out["body"], out["body"])


@test
def ca_file_from_config_is_the_default():
    with Server(FIXTURE, env={"FIX_CA_FILE": CA}) as s:
        ok(call(s, {"url": "https://localhost:%d/small.txt" % NGX_TLS}))
        failed(call(s, {"url": "https://localhost:%d/small.txt" % NGX_TLS, "ca_file": False}), "tls",
               "localhost:%d" % NGX_TLS)


# ------------------------------------------------------------------ through a forward proxy

class Tinyproxy:
    """Debian's tinyproxy in the foreground on a free loopback port (its own temp dir), allowing
    CONNECT to the TLS nginx only; with `auth` it wants Basic credentials (user, password)."""

    def __init__(self, name, auth=None):
        tp = shutil.which("tinyproxy")
        check(tp, "tinyproxy is not installed (apt-get install tinyproxy)")
        self.dir = os.path.join(TMP, name)
        os.makedirs(self.dir, exist_ok=True)
        self.port = free_port()
        self.logfile = os.path.join(self.dir, "tinyproxy.log")
        conf = ["Port %d" % self.port, "Listen 127.0.0.1", "Allow 127.0.0.1", "Timeout 60", "MaxClients 200",
                "LogLevel Info", 'LogFile "%s"' % self.logfile, 'PidFile "%s/tinyproxy.pid"' % self.dir,
                'ViaProxyName "%s"' % name, "ConnectPort %d" % NGX_TLS]
        if auth:
            conf.append("BasicAuth %s %s" % auth)
        path = os.path.join(self.dir, "tinyproxy.conf")
        with open(path, "w") as f:
            f.write("\n".join(conf) + "\n")
        self.proc = subprocess.Popen([tp, "-d", "-c", path], cwd=self.dir,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for(lambda: socket.create_connection((HOST, self.port), timeout=0.5).close() is None, 10,
                 "tinyproxy on %d" % self.port)

    def url(self, cred=None):
        return "http://%s127.0.0.1:%d" % ("%s:%s@" % cred if cred else "", self.port)

    def log(self):
        try:
            with open(self.logfile, encoding="utf-8", errors="replace") as f:
                return f.read()
        except OSError:
            return ""

    def saw(self, what):
        """Waits until the proxy's log has the line (it is written as the request is handled)."""
        wait_for(lambda: what in self.log(), 10, "tinyproxy logged %r" % what)

    def stop(self):
        self.proc.terminate()
        self.proc.wait(10)


PX = Tinyproxy("sluice-test-proxy")
PROXY_USER, PROXY_PW = "sluiceuser", "pw-%d-secret" % os.getpid()
PXA = Tinyproxy("sluice-auth-proxy", auth=(PROXY_USER, PROXY_PW))
# a proxy environment that names nothing, so only what a test sets counts (lower case wins)
NO_ENV = {k: "" for k in ("http_proxy", "https_proxy", "all_proxy", "no_proxy",
                          "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY")}


def self_url(srv, path, host="127.0.0.1"):
    return "http://%s:%d%s" % (host, srv.port, path)


def via(out):
    """The Via header the upstream (this instance's /echo) received, "" when none."""
    return json.loads(ok(out)["body"])["headers"].get("via", "")


@test
def plain_http_goes_through_the_proxy():
    out = call(S, {"url": self_url(S, "/echo?through=proxy"), "proxy": PX.url()})
    check("sluice-test-proxy" in via(out), "the upstream did not see the proxy: via %r" % via(out))
    PX.saw("GET http://127.0.0.1:%d/echo?through=proxy" % S.port)
    check(via(call(S, {"url": self_url(S, "/echo")})) == "", "a request without a proxy went through one")
    S.assert_alive()


@test
def https_goes_through_a_connect_tunnel_and_is_still_verified():
    url = "https://localhost:%d/small.txt" % NGX_TLS
    out = ok(call(S, {"url": url, "ca_file": CA, "proxy": PX.url()}))
    check(out["body"] == "hello from nginx\n", out)
    PX.saw("CONNECT localhost:%d" % NGX_TLS)
    # the tunnel changes nothing about trust: without the CA the certificate is refused
    out = failed(call(S, {"url": url, "proxy": PX.url()}), "tls", "localhost:%d" % NGX_TLS)
    check("certificate" in out["err"], out)
    # a port the proxy does not tunnel to: its refusal is a proxy error naming its answer
    out = failed(call(S, {"url": "https://localhost:%d/" % NGX, "proxy": PX.url(), "verify_tls": False}), "proxy",
                 "localhost:%d" % NGX)
    check("refused the tunnel (CONNECT answered 403)" in out["err"], out["err"])
    S.assert_alive()


@test
def proxy_from_config_and_environment_with_no_proxy():
    down = "http://127.0.0.1:%d" % free_port()
    # HTTP_PROXY / HTTPS_PROXY in upper case; NO_PROXY excludes localhost (and its subdomains)
    env = dict(NO_ENV, HTTP_PROXY=PX.url(), HTTPS_PROXY=PX.url(), NO_PROXY="localhost")
    with Server(FIXTURE, env=env) as s:
        check("sluice-test-proxy" in via(call(s, {"url": self_url(s, "/echo?env=upper")})), "HTTP_PROXY not used")
        check(via(call(s, {"url": self_url(s, "/echo", "localhost")})) == "", "NO_PROXY=localhost not honoured")
        check(via(call(s, {"url": self_url(s, "/echo"), "proxy": ""})) == "", 'proxy = "" is not direct')
        before = PX.log().count("CONNECT localhost:%d" % NGX_TLS)
        ok(call(s, {"url": "https://localhost:%d/small.txt" % NGX_TLS, "ca_file": CA}))
        check(PX.log().count("CONNECT localhost:%d" % NGX_TLS) == before, "https to localhost was tunnelled")
    # lower case wins over upper case; https_proxy is for https:// only
    env = dict(NO_ENV, http_proxy=PX.url(), HTTP_PROXY=down, https_proxy=down)
    with Server(FIXTURE, env=env) as s:
        check("sluice-test-proxy" in via(call(s, {"url": self_url(s, "/echo")})), "http_proxy not preferred")
        failed(call(s, {"url": "https://localhost:%d/small.txt" % NGX_TLS, "ca_file": CA}), "proxy",
               "localhost:%d" % NGX_TLS)
    # config over the environment: http_client.proxy and http_client.no_proxy win
    env = dict(NO_ENV, HTTP_PROXY=down, HTTPS_PROXY=down, NO_PROXY="*", FIX_PROXY=PX.url(),
               FIX_NO_PROXY="example.invalid, localhost")
    with Server(FIXTURE, env=env) as s:
        check("sluice-test-proxy" in via(call(s, {"url": self_url(s, "/echo")})), "config proxy not used")
        check(via(call(s, {"url": self_url(s, "/echo", "localhost")})) == "", "config no_proxy not honoured")
        # the request's own proxy option wins over both
        failed(call(s, {"url": self_url(s, "/echo"), "proxy": down}), "proxy", "127.0.0.1:%d" % s.port)
    # no_proxy as an IP network (CIDR), and "*" for every host
    with Server(FIXTURE, env=dict(NO_ENV, HTTP_PROXY=down, NO_PROXY="10.0.0.0/8,127.0.0.0/8")) as s:
        check(via(call(s, {"url": self_url(s, "/echo")})) == "", "NO_PROXY=127.0.0.0/8 not honoured")
    with Server(FIXTURE, env=dict(NO_ENV, HTTP_PROXY=down, NO_PROXY="*")) as s:
        check(via(call(s, {"url": self_url(s, "/echo")})) == "", "NO_PROXY=* not honoured")


@test
def a_proxy_that_is_down_or_unresolvable_fails_with_kind_proxy():
    port = free_port()
    target = "127.0.0.1:%d" % S.port
    for url in (self_url(S, "/echo"), "https://localhost:%d/small.txt" % NGX_TLS):
        host = url.split("/")[2]
        out = failed(call(S, {"url": url, "proxy": "http://127.0.0.1:%d" % port, "ca_file": CA}), "proxy", host)
        check("could not connect to the proxy 127.0.0.1:%d" % port in out["err"], out["err"])
    out = failed(call(S, {"url": self_url(S, "/echo"), "proxy": "http://no-such-proxy.invalid:3128"}), "proxy", target)
    check("could not resolve the proxy's host name (no-such-proxy.invalid:3128)" in out["err"], out["err"])
    check(metric(S.port, 'sluice_http_client_errors_total{kind="proxy"}') >= 3, "proxy errors not counted")
    check(get(S.port, "/hello")[0] == 200, "the server stopped serving")


@test
def a_proxy_that_accepts_and_never_answers_times_out():
    silent = socket.socket()
    silent.bind((HOST, 0))
    silent.listen(64)                 # connections complete in the kernel; nothing ever answers
    try:
        px = "http://127.0.0.1:%d" % silent.getsockname()[1]
        out = failed(call(S, {"url": "https://localhost:%d/small.txt" % NGX_TLS, "proxy": px, "ca_file": CA,
                              "connect_timeout": 0.5, "timeout": 30}), "timeout", "localhost:%d" % NGX_TLS)
        check("connect_timeout 0.5 s" in out["err"], out["err"])
        out = failed(call(S, {"url": self_url(S, "/echo"), "proxy": px, "timeout": 0.5}), "timeout",
                     "127.0.0.1:%d" % S.port)
        check("timeout 0.5 s" in out["err"], out["err"])
    finally:
        silent.close()
    check(get(S.port, "/hello")[0] == 200, "the server stopped serving")


@test
def proxy_credentials_are_used_and_never_shown():
    good, bad = PXA.url((PROXY_USER, PROXY_PW)), PXA.url((PROXY_USER, PROXY_PW + "-wrong"))
    check("sluice-auth-proxy" in via(call(S, {"url": self_url(S, "/echo"), "proxy": good})), "not through the auth proxy")
    ok(call(S, {"url": "https://localhost:%d/small.txt" % NGX_TLS, "ca_file": CA, "proxy": good}))
    seen = []
    for url, proxy in ((self_url(S, "/echo"), PXA.url()), ("https://localhost:%d/small.txt" % NGX_TLS, PXA.url()),
                       ("https://localhost:%d/small.txt" % NGX_TLS, bad)):
        out = failed(call(S, {"url": url, "proxy": proxy, "ca_file": CA}), "proxy", url.split("/")[2])
        check("wants credentials or refused them" in out["err"], out["err"])
        seen.append(out["err"])
    # wrong credentials on plain HTTP: tinyproxy answers 401 (not 407), which an origin could have
    # sent too, so it is the response
    out = ok(call(S, {"url": self_url(S, "/echo"), "proxy": bad}), 401)
    check("tinyproxy" in out["body"], out["body"][:300])
    down = "http://%s:%s@127.0.0.1:%d" % (PROXY_USER, PROXY_PW, free_port())
    seen.append(failed(call(S, {"url": self_url(S, "/echo"), "proxy": down}), "proxy", "127.0.0.1:%d" % S.port)["err"])
    seen.append(get(S.port, "/metrics")[2].decode())
    seen.append(S.log())
    # a config with a bad proxy URL is refused at start with the password hidden
    bad_cfg = Server(FIXTURE, env={"FIX_PROXY": "ftp://%s:%s@proxy.example" % (PROXY_USER, PROXY_PW)}, start_timeout=10)
    try:
        bad_cfg.start()
        check(False, "a config with proxy = ftp://... started")
    except Exception:  # noqa: BLE001  the harness raises when the server does not become healthy
        pass
    finally:
        if bad_cfg.proc and bad_cfg.proc.poll() is None:
            bad_cfg.proc.kill()
    log = bad_cfg.log()
    check("http_client.proxy" in log and "must be a proxy URL" in log, log[-2000:])
    seen.append(log)
    for text in seen:
        check(PROXY_PW not in text, "the proxy password appears in: %s" % text[-2000:])


# ------------------------------------------------------------------ concurrency, limits, cancellation

@test
def hundred_handlers_have_their_calls_in_flight_at_once():
    UP.reset()
    ts, out, errs = parallel(lambda i: call(S, {"url": UP.url("/hold?id=c%d" % i)}), 100)
    wait_for(lambda: UP.held >= 100, 20, "100 calls held by the upstream at once (held %d)" % UP.held)
    UP.release()
    join(ts, errs)
    for i, o in enumerate(out):
        check(ok(o)["body"] == "released c%d" % i, o)
    check(UP.max_held >= 100, UP.max_held)


@test
def hello_is_served_while_200_calls_wait_on_a_slow_upstream():
    UP.reset()
    ts, out, errs = parallel(lambda i: call(S, {"url": UP.url("/hold?id=w%d" % i)}), 200)
    wait_for(lambda: UP.held >= 200, 30, "200 calls held by the upstream")
    for _ in range(5):
        st, _, body = get(S.port, "/hello")
        check(st == 200 and body == b"hello world\n", (st, body))
    check(UP.held >= 200, "calls finished before the upstream answered")
    check(metric(S.port, "sluice_http_client_in_flight") == 200, metric(S.port, "sluice_http_client_in_flight"))
    UP.release()
    join(ts, errs)
    check(all(o["ok"] and o["status"] == 200 for o in out), [o for o in out if not o["ok"]][:3])


@test
def all_runs_requests_in_parallel_and_reports_each_outcome():
    UP.reset()
    UP.auto_release_at = 3            # released only once all three are there at the same time
    refused = free_port()
    st, _, body = post(S.port, "/all", json.dumps([{"url": UP.url("/hold?id=a1")}, {"url": UP.url("/hold?id=a2")},
                                                   {"url": "http://127.0.0.1:%d/" % refused},
                                                   {"url": UP.url("/hold?id=a3")}]), timeout=30)
    check(st == 200, (st, body))
    out = json.loads(body)
    check([o["ok"] for o in out] == [True, True, False, True], out)
    check(out[0]["body"] == "released a1" and out[3]["body"] == "released a3", out)
    check(out[2]["err"].startswith("127.0.0.1:%d: " % refused), out[2])
    check(UP.max_held == 3, UP.max_held)


@test
def client_going_away_cancels_the_outbound_request():
    UP.reset()
    before = metric(S.port, 'sluice_http_client_errors_total{kind="cancelled"}') or 0
    c = socket.create_connection((HOST, S.port), timeout=5)
    body = json.dumps({"url": UP.url("/hold?id=gone"), "timeout": 30})
    c.sendall(("POST /twice HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s" %
               (len(body), body)).encode())
    wait_for(lambda: "gone" in UP.arrivals, 10, "the call to reach the upstream")
    c.close()
    wait_for(lambda: "gone" in UP.closed, 10, "the upstream to see its connection closed")
    want = "again cancelled 127.0.0.1:%d: cancelled" % UP.port
    wait_for(lambda: any(s.startswith(want) for s in json.loads(get(S.port, "/seen")[2])), 10, "the handler's second call")
    check(UP.arrivals.count("gone") == 1, "the abandoned handler's second call went out: %r" % UP.arrivals)
    check(metric(S.port, 'sluice_http_client_errors_total{kind="cancelled"}') == before + 1, "cancelled not counted")
    check(metric(S.port, "sluice_http_client_in_flight") == 0, "still in flight")
    S.assert_alive()


@test
def many_clients_leaving_at_once_while_their_calls_connect_or_queue():
    # cancelling hundreds of transfers in one go, some of them still connecting, with new ones
    # started from the queue as slots free up: the worker must survive and account for all
    UP.reset()
    with Server(FIXTURE, env={"FIX_MAX_PER_HOST": "8"}) as s:
        def m(name):
            check(s.proc.poll() is None, s.died_message())
            return metric(s.port, name)
        for rnd in range(4):
            socks = []
            for i in range(60):
                c = socket.create_connection((HOST, s.port), timeout=5)
                body = json.dumps({"url": UP.url("/hold?id=b%d-%d" % (rnd, i)), "timeout": 30})
                c.sendall(("POST /call HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                           "Content-Length: %d\r\n\r\n%s" % (len(body), body)).encode())
                socks.append(c)
            wait_for(lambda: m("sluice_http_client_in_flight") == 8 and m("sluice_http_client_queued") == 52, 15,
                     "8 in flight and 52 queued")
            for c in socks:
                c.close()
            wait_for(lambda: m("sluice_http_client_in_flight") == 0 and m("sluice_http_client_queued") == 0, 15,
                     "all cancelled")
            s.assert_alive()
        wait_for(lambda: UP.held == 0, 15, "the upstream to see every cancelled request's connection close")


@test
def request_timeout_cancels_the_outbound_request():
    UP.reset()
    with Server(FIXTURE, env={"FIX_REQUEST_TIMEOUT": "1"}) as s:
        st, _, body = post(s.port, "/call", json.dumps({"url": UP.url("/hold?id=rt"), "timeout": 30}), timeout=20)
        check(st == 503 and b"request_timeout" in body, (st, body))
        wait_for(lambda: "rt" in UP.closed, 10, "the upstream to see its connection closed")
        wait_for(lambda: metric(s.port, "sluice_http_client_in_flight") == 0, 10, "nothing in flight")
        s.assert_alive()


@test
def excess_requests_wait_fifo_and_time_out_in_the_queue():
    UP.reset()
    with Server(FIXTURE, env={"FIX_MAX_CONCURRENT": "1", "FIX_QUEUE_TIMEOUT": "30"}) as s:
        ts, out, errs = parallel(lambda i: call(s, {"url": UP.url("/hold?id=first")}), 1)
        wait_for(lambda: "first" in UP.arrivals, 10, "the first call to hold the only slot")
        order = ["q1", "q2", "q3"]
        threads = []
        for k, ident in enumerate(order):          # queued one after the other
            t, o, e = parallel(lambda i, ident=ident: call(s, {"url": UP.url("/hold?id=" + ident)}), 1)
            threads.append((t, o, e))
            wait_for(lambda k=k: metric(s.port, "sluice_http_client_queued") == k + 1, 10, "%s queued" % ident)
        out2 = call(s, {"url": UP.url("/hold?id=late"), "queue_timeout": 0.2})
        failed(out2, "queue_timeout", "127.0.0.1:%d" % UP.port)
        check("late" not in UP.arrivals, "a call that timed out in the queue reached the upstream")
        UP.release()
        join(ts, errs)
        for t, o, e in threads:
            join(t, e)
            ok(o[0])
        check(UP.arrivals == ["first"] + order, "upstream order %r" % UP.arrivals)
        check(metric(s.port, 'sluice_http_client_errors_total{kind="queue_timeout"}') == 1, "queue_timeout count")
        s.assert_alive()


@test
def connections_per_host_are_bounded():
    UP.reset()
    UP.auto_release_at = 2
    with Server(FIXTURE, env={"FIX_MAX_PER_HOST": "2"}) as s:
        ts, out, errs = parallel(lambda i: call(s, {"url": UP.url("/hold?id=h%d" % i)}), 6)
        join(ts, errs)
        check(all(o["ok"] for o in out), out)
        check(UP.max_held == 2 and UP.connections <= 2, "held %d at once over %d connections" % (UP.max_held, UP.connections))


@test
def a_reload_while_calls_are_in_flight_keeps_them_and_the_new_code_calls_out():
    UP.reset()
    reloads = metric(S.port, "sluice_reloads_total")
    ts, out, errs = parallel(lambda i: call(S, {"url": UP.url("/hold?id=r%d" % i)}), 3)
    wait_for(lambda: UP.held >= 3, 10, "3 calls held")
    S.signal(signal.SIGHUP)
    wait_for(lambda: metric(S.port, "sluice_reloads_total") == reloads + 1, 15, "the reload")
    ok(call(S, {"url": ngx("/small.txt")}))          # the new state calls out too
    UP.release()
    join(ts, errs)
    check([o["body"] for o in out] == ["released r0", "released r1", "released r2"], out)
    S.assert_alive()


# ------------------------------------------------------------------ other callers: timers, SSE, specs

@test
def timer_callbacks_and_sse_callbacks_can_call_out():
    UP.reset()
    st, _, _ = post(S.port, "/timer", UP.url("/record?ev=timer"))
    check(st == 202, st)
    wait_for(lambda: "timer 200" in json.loads(get(S.port, "/seen")[2]), 10, "the timer's call")
    check("timer" in UP.records, UP.records)
    ev = SSEClient(S.port, "/events?notify=" + urllib.parse.quote(UP.url("/record"), safe=""))
    check(ev.status == 200, ev.head)
    wait_for(lambda: "open" in UP.records, 10, "on_open's call")
    ev.close()
    wait_for(lambda: "close" in UP.records, 10, "on_close's call")
    wait_for(lambda: "close 200" in json.loads(get(S.port, "/seen")[2]), 10, "on_close's result")


@test
def specs_mock_calls_and_reach_the_test_instance():
    r = subprocess.run([SLUICE_BIN, "test", "spec/http_spec.lua"], cwd=os.path.join(os.path.dirname(__file__), FIXTURE),
                       capture_output=True, text=True, timeout=120)
    last = r.stdout.strip().splitlines()[-1] if r.stdout.strip() else ""
    check(r.returncode == 0 and last.endswith("0 failed") and not last.startswith("0 passed"),
          "sluice test: rc %d\n%s\n%s" % (r.returncode, r.stdout[-3000:], r.stderr[-2000:]))


@test
def metrics_count_by_host_class_and_kind_and_pass_promtool():
    ok(call(S, {"url": ngx("/small.txt")}))
    ok(call(S, {"url": ngx("/nope")}), 404)
    st, _, body = get(S.port, "/metrics")
    text = body.decode()
    host = "127.0.0.1:%d" % NGX
    check(metric(S.port, 'sluice_http_client_requests_total{host="%s",code="2xx"}' % host) >= 1, "2xx by host")
    check(metric(S.port, 'sluice_http_client_requests_total{host="%s",code="4xx"}' % host) >= 1, "4xx by host")
    check(metric(S.port, 'sluice_http_client_errors_total{kind="connect"}') >= 1, "errors by kind")
    check("sluice_http_client_request_duration_seconds_bucket" in text, "latency histogram")
    if shutil.which("promtool"):
        p = subprocess.run(["promtool", "check", "metrics"], input=body, capture_output=True, timeout=30)
        check(p.returncode == 0, "promtool: %s %s" % (p.stdout, p.stderr))


def teardown():
    PX.stop()
    PXA.stop()
    S.stop()
    S.cleanup()
    UP.stop()
    NGINX.stop()
    shutil.rmtree(TMP, ignore_errors=True)


if __name__ == "__main__":
    try:
        run_tests(after_each=lambda: check(S.proc.poll() is None, S.died_message()))
    finally:
        teardown()
