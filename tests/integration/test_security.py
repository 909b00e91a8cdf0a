"""test_security.py: the admin area behind proxies, handler statuses and os.exit (issue 14, items 1-3).

- The admin area (/_sluice/status, the dashboard, POST /_sluice/reload) is served only when the
  client is on this host: judged like the rate limiter (trusted_proxies, the right-to-left walk),
  with every forwarding header present required to name a loopback client. Checked with raw
  sockets carrying forged headers and through a real nginx on loopback in front of sluice.
- POST /_sluice/reload cannot be triggered by a web page: it needs X-Sluice-Admin: 1 (or the token
  in Authorization), and browser requests from another origin or a DNS-rebound name are refused.
  With admin.token set the token is required even on loopback; ?token= only opens the dashboard.
- A handler status outside 200-599 (1xx, non-integers, strings) is a 500 logged with the handler's
  file:line; 204/205/304 never carry a body; behind nginx a 101 opens no tunnel.
- os.exit in a handler (or at load time) raises an error instead of ending the process; it still
  works in `sluice lua` scripts.

Run: SLUICE_BIN=$PWD/build/sluice python3 tests/integration/test_security.py [names]
"""
import json
import os
import shutil
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import (HOST, HERE, SLUICE_BIN, Conn, NginxServer, Server, check, free_port, get, post,  # noqa: E402
                     run_tests, test, wait_for)

FIX = os.path.join(HERE, "fixtures", "sec_app")
TOKEN = "s3cret-admin-token"


def server(trusted="127.0.0.1", token=""):
    return Server(FIX, env={"FIX_TRUSTED": trusted, "FIX_ADMIN_TOKEN": token})


def request(port, method, path, headers=(), body=b""):
    """One raw request (headers as (name, value) pairs, repeats allowed) on a fresh connection."""
    with Conn(port) as c:
        head = "%s %s HTTP/1.1\r\n" % (method, path)
        if not any(k.lower() == "host" for k, _ in headers):
            head += "Host: %s:%d\r\n" % (HOST, port)
        head += "".join("%s: %s\r\n" % kv for kv in headers)
        if body or method == "POST":
            head += "Content-Length: %d\r\n" % len(body)
        c.send(head.encode() + b"\r\n" + body)
        return c.response(head=method == "HEAD")


def status_of(port, method, path, headers=()):
    return request(port, method, path, headers).status


# ------------------------------------------------------------------ nginx on loopback

class Nginx(NginxServer):
    """nginx in a temp prefix on a free loopback port, proxying everything to one sluice (also
    /_sluice/, as a careless proxy would), websocket-ready (Upgrade passed through, so a 101 from
    upstream would open a tunnel), with /secret blocked by nginx itself."""

    def __init__(self, upstream_port):
        self.port = free_port()
        super().__init__("""    map $http_upgrade $connection_upgrade { default upgrade; "" ""; }
    upstream sl { server 127.0.0.1:%(up)d; keepalive 8; }
    server {
        listen 127.0.0.1:%(port)d;
        location = /secret { return 403 "blocked by nginx\\n"; }
        location / {
            proxy_pass http://sl;
            proxy_http_version 1.1;
            proxy_set_header Host $host;
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            proxy_set_header Upgrade $http_upgrade;
            proxy_set_header Connection $connection_upgrade;
        }
    }
""" % {"up": upstream_port, "port": self.port}, [self.port])


# ------------------------------------------------------------------ 1. the admin area

ADMIN = [("GET", "/_sluice/status"), ("GET", "/_sluice/dashboard"), ("GET", "/_sluice/"),
         ("POST", "/_sluice/reload")]
LOCAL_RELOAD = [("X-Sluice-Admin", "1")]

FORGED = [
    ("remote client in X-Forwarded-For", [("X-Forwarded-For", "203.0.113.5")]),
    ("remote client in Forwarded", [("Forwarded", "for=203.0.113.5")]),
    ("garbage X-Forwarded-For", [("X-Forwarded-For", "garbage")]),
    ("empty list items", [("X-Forwarded-For", ", ,")]),
    ("malformed hop right of a loopback one", [("X-Forwarded-For", "127.0.0.1, nope")]),
    ("Forwarded for=unknown", [("Forwarded", "for=unknown")]),
    ("unbalanced quote in Forwarded", [("Forwarded", 'for="127.0.0.1')]),
    ("second X-Forwarded-For line names a remote", [("X-Forwarded-For", "127.0.0.1"), ("X-Forwarded-For", "203.0.113.5")]),
    ("loopback XFF but remote Forwarded", [("X-Forwarded-For", "127.0.0.1"), ("Forwarded", "for=203.0.113.5")]),
    ("X-Real-IP (sluice never reads it)", [("X-Real-IP", "127.0.0.1")]),
    ("oversized X-Forwarded-For", [("X-Forwarded-For", ", ".join(["127.0.0.1"] * 800))]),
]


@test
def admin_direct_loopback_is_served():
    with server() as s:
        for m, p in ADMIN:
            st = status_of(s.port, m, p, LOCAL_RELOAD if m == "POST" else ())
            check(st == (202 if m == "POST" else 200), "%s %s from loopback: %d" % (m, p, st))
        # a local proxy chain that names a loopback client is local too
        st = status_of(s.port, "GET", "/_sluice/status", [("X-Forwarded-For", "127.0.0.1")])
        check(st == 200, "XFF 127.0.0.1 through a trusted proxy: %d" % st)
        st = status_of(s.port, "GET", "/_sluice/status", [("Forwarded", 'for="[::1]:4711"')])
        check(st == 200, "Forwarded for=[::1] through a trusted proxy: %d" % st)


@test
def admin_refuses_forged_forwarding_headers_raw():
    with server() as s:
        for what, hdrs in FORGED:
            for m, p in ADMIN:
                extra = LOCAL_RELOAD if m == "POST" else []
                r = request(s.port, m, p, hdrs + extra)
                check(r.status == 404, "%s: %s %s answered %d %r" % (what, m, p, r.status, r.body[:120]))
                check(b"sluice dashboard" not in r.body and b"uptime" not in r.body, "%s leaked the page" % what)
        # the application itself is not affected by the admin rule
        check(status_of(s.port, "GET", "/hello", [("X-Forwarded-For", "garbage")]) == 200, "app route")
        s.assert_alive()


@test
def admin_refuses_forwarding_headers_from_an_untrusted_proxy():
    # no trusted_proxies: a same-host proxy cannot be told from a forging client, so any
    # forwarding header means "not local", even one naming loopback
    with server(trusted="") as s:
        for hdrs in ([("X-Forwarded-For", "127.0.0.1")], [("Forwarded", "for=127.0.0.1")]):
            st = status_of(s.port, "GET", "/_sluice/status", hdrs)
            check(st == 404, "%r without trusted_proxies: %d" % (hdrs, st))
        check(status_of(s.port, "GET", "/_sluice/status") == 200, "plain loopback still served")


@test
def admin_through_real_nginx():
    with server() as s, Nginx(s.port) as ng:
        # a client on this host through nginx: nginx writes X-Forwarded-For: 127.0.0.1
        st, _, body = get(ng.port, "/_sluice/status")
        check(st == 200 and b"uptime" in body, "local client through nginx: %d %r" % (st, body[:100]))
        for what, hdrs in FORGED[:9]:
            for m, p in ADMIN:
                h = dict(hdrs)
                if len(hdrs) == 2 and hdrs[0][0] == hdrs[1][0]:
                    h = {hdrs[0][0]: hdrs[0][1] + ", " + hdrs[1][1]}
                if m == "POST":
                    h["X-Sluice-Admin"] = "1"
                    st, _, body = post(ng.port, p, b"", h)
                else:
                    st, _, body = get(ng.port, p, h)
                check(st == 404, "via nginx, %s: %s %s answered %d %r" % (what, m, p, st, body[:120]))
        st, _, _ = get(ng.port, "/hello", {"X-Forwarded-For": "203.0.113.5"})
        check(st == 200, "app through nginx: %d" % st)
        # the server never reloaded from the refused requests
        st, _, body = get(s.port, "/_sluice/status")
        check(st == 200 and json.loads(body)["reloads"] == 0, "reloads after refused requests: %r" % body[:200])
        s.assert_alive()


@test
def reload_cannot_be_a_simple_cross_site_request():
    with server() as s:
        hp = "%s:%d" % (HOST, s.port)
        cases = [
            ("no header at all (an HTML form or a simple fetch)", [], 403),
            ("form post from another origin", [("Origin", "http://evil.example"),
                                               ("Content-Type", "application/x-www-form-urlencoded")], 403),
            ("custom header but another Origin", LOCAL_RELOAD + [("Origin", "http://evil.example")], 403),
            ("Origin null", LOCAL_RELOAD + [("Origin", "null")], 403),
            ("Sec-Fetch-Site cross-site", LOCAL_RELOAD + [("Sec-Fetch-Site", "cross-site")], 403),
            ("Sec-Fetch-Site same-site", LOCAL_RELOAD + [("Sec-Fetch-Site", "same-site")], 403),
            ("DNS rebinding: same origin, foreign Host",
             [("Host", "evil.example:%d" % s.port), ("Origin", "http://evil.example:%d" % s.port),
              ("Sec-Fetch-Site", "same-origin")] + LOCAL_RELOAD, 403),
            ("X-Sluice-Admin other than 1", [("X-Sluice-Admin", "yes")], 403),
            ("X-Sluice-Admin: 1 (curl, the CLI's HTTP path)", LOCAL_RELOAD, 202),
            ("same-origin browser request on 127.0.0.1", LOCAL_RELOAD + [("Origin", "http://" + hp),
                                                                       ("Sec-Fetch-Site", "same-origin")], 202),
        ]
        def reloads():
            return json.loads(get(s.port, "/_sluice/status")[2])["reloads"]
        done = 0
        for what, hdrs, want in cases:
            r = request(s.port, "POST", "/_sluice/reload", hdrs)
            check(r.status == want, "%s: %d (want %d) %r" % (what, r.status, want, r.body[:160]))
            if want == 202:      # requests close together coalesce into one reload: wait for each
                done += 1
                wait_for(lambda: reloads() == done, 15, "accepted reload #%d" % done)
        check(reloads() == 2, "only the accepted requests reloaded: %d" % reloads())
        # reads from a browser: cross-site or a rebound name are refused, a plain client is not
        check(status_of(s.port, "GET", "/_sluice/status", [("Sec-Fetch-Site", "cross-site")]) == 403, "cross-site read")
        check(status_of(s.port, "GET", "/_sluice/status",
                        [("Host", "evil.example"), ("Sec-Fetch-Site", "same-origin")]) == 403, "rebound read")
        check(status_of(s.port, "GET", "/_sluice/status", [("Host", "localhost:%d" % s.port),
                                                           ("Sec-Fetch-Site", "same-origin")]) == 200, "localhost read")
        check(status_of(s.port, "GET", "/_sluice/status", [("Host", "x")]) == 200, "non-browser client, any Host")
        check(status_of(s.port, "GET", "/_sluice/reload") == 405, "GET reload")
        check(status_of(s.port, "POST", "/_sluice/status", LOCAL_RELOAD) == 405, "POST status")
        s.assert_alive()


@test
def admin_token_is_required_on_loopback_and_only_the_page_takes_query_token():
    with server(token=TOKEN) as s:
        bearer = [("Authorization", "Bearer " + TOKEN)]
        cases = [
            ("POST", "/_sluice/reload", LOCAL_RELOAD, 401),
            ("POST", "/_sluice/reload?token=" + TOKEN, LOCAL_RELOAD, 401),
            ("POST", "/_sluice/reload", [("Authorization", "Bearer wrong")], 401),
            ("POST", "/_sluice/reload", bearer + [("Origin", "http://evil.example")], 403),
            ("POST", "/_sluice/reload", bearer, 202),
            ("GET", "/_sluice/status", [], 401),
            ("GET", "/_sluice/status?token=" + TOKEN, [], 401),
            ("GET", "/_sluice/status", bearer, 200),
            ("GET", "/_sluice/dashboard?token=" + TOKEN, [], 200),
            ("HEAD", "/_sluice/dashboard?token=" + TOKEN, [], 200),
            ("GET", "/_sluice/?a=1&token=" + TOKEN, [], 200),
            ("GET", "/_sluice/dashboard?xtoken=" + TOKEN, [], 401),
            ("GET", "/_sluice/dashboard?token=" + TOKEN + "x", [], 401),
            ("GET", "/_sluice/dashboard?token=" + TOKEN[:-1], [], 401),
            ("GET", "/_sluice/dashboard?token=", [], 401),
            ("POST", "/_sluice/dashboard?token=" + TOKEN, [], 401),
            ("GET", "/_sluice/reload", bearer, 405),
            # a token does not make a forged forwarding header local (loopback_only still holds)
            ("GET", "/_sluice/status", bearer + [("X-Forwarded-For", "203.0.113.5")], 404),
        ]
        for m, p, hdrs, want in cases:
            r = request(s.port, m, p, hdrs)
            check(r.status == want, "%s %s %r: %d (want %d) %r" % (m, p, hdrs, r.status, want, r.body[:160]))
        r = request(s.port, "GET", "/_sluice/dashboard?token=" + TOKEN)
        check(r.headers.get("referrer-policy") == "no-referrer", "the page with ?token= sends no Referer: %r" % r.headers)
        check(b"fetch('/_sluice/status',{headers:hdr})" in r.body, "the page polls with the header, not ?token=")
        s.assert_alive()


# ------------------------------------------------------------------ 2. handler statuses

@test
def handler_status_outside_200_599_is_a_logged_500():
    with server() as s, Conn(s.port) as c:
        paths = ["/status/%s" % n for n in ("100", "101", "103", "199", "600", "999", "0", "-1", "200.5")]
        paths += ["/number/101", "/number/100", "/number/42", "/status-string", "/status-fraction", "/status-bool"]
        for p in paths:
            c.send("GET %s HTTP/1.1\r\nHost: x\r\n\r\n" % p)
            r = c.response()
            check(r.status == 500, "%s: %d %r" % (p, r.status, r.raw[:200]))
            check(b"invalid response status" in r.body, "%s body: %r" % (p, r.body))
            check(b"body of" not in r.body and r.headers.get("x-handler") is None, "%s leaked the handler's answer" % p)
            c.send(b"GET /hello HTTP/1.1\r\nHost: x\r\n\r\n")        # the same connection goes on
            r = c.response()
            check(r.status == 200 and r.body == b"hello world\n", "after %s: %r" % (p, r))
        log = s.log()
        for line in ("GET /status/101: ", "GET /number/100: ", "GET /status-string: "):
            i = log.find(line)
            check(i >= 0, "not logged: %r" % line)
            check("sec_app/app.lua:" in log[i:i + 300], "log line without file:line: %r" % log[i:i + 300])
        check("app.lua:7: invalid response status 101" in log, "the handler's line: %r" % log[-2000:])
        r = request(s.port, "GET", "/status/599")
        check(r.status == 599 and r.body == b"body of 599", "599 is a valid final status: %r" % r)


@test
def no_body_statuses_carry_no_body():
    with server() as s, Conn(s.port) as c:
        # pipelined: a stray body byte would be read as the next status line
        c.send(b"".join(b"GET %s HTTP/1.1\r\nHost: x\r\n\r\n" % p for p in
                        (b"/status/204", b"/status/205", b"/status/304", b"/json/204", b"/json/304", b"/hello")))
        for want in (204, 205, 304, 204, 304):
            r = c.response()
            check(r.status == want and r.body == b"", "%d: %r" % (want, r.raw))
            check(b"body of" not in r.raw and b"jjjj" not in r.raw, "%d carried the body: %r" % (want, r.raw))
            if want == 205:
                check(r.headers.get("content-length") == "0", "205 says Content-Length: 0: %r" % r.headers)
            else:
                check("content-length" not in r.headers and "content-type" not in r.headers,
                      "%d has no Content-Length/-Type: %r" % (want, r.headers))
        r = c.response()
        check(r.status == 200 and r.body == b"hello world\n", "after the bodiless ones: %r" % r)
        # HEAD: the GET's Content-Length, no body; a HEAD of a 204 has neither
        c.send(b"HEAD /status/200 HTTP/1.1\r\nHost: x\r\n\r\nHEAD /status/204 HTTP/1.1\r\nHost: x\r\n\r\n"
               b"GET /hello HTTP/1.1\r\nHost: x\r\n\r\n")
        r = c.response(head=True)
        check(r.status == 200 and r.headers.get("content-length") == str(len(b"body of 200")), "HEAD 200: %r" % r.raw)
        r = c.response(head=True)
        check(r.status == 204 and "content-length" not in r.headers, "HEAD 204: %r" % r.raw)
        r = c.response()
        check(r.status == 200 and r.body == b"hello world\n", "after HEAD: %r" % r.raw)


@test
def a_101_opens_no_tunnel_behind_nginx():
    with server() as s, Nginx(s.port) as ng, Conn(ng.port) as c:
        for n in ("101", "100", "103"):
            c.send("GET /status/%s HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n" % n)
            r = c.response()
            check(r.status == 500, "/status/%s via nginx: %r" % (n, r.raw[:200]))
            # the next request on the same client connection is parsed by nginx, so its rules hold
            c.send(b"GET /secret HTTP/1.1\r\nHost: x\r\n\r\n")
            r = c.response()
            check(r.status == 403 and r.body == b"blocked by nginx\n", "after %s: /secret %r" % (n, r.raw[:200]))
        c.send(b"GET /hello HTTP/1.1\r\nHost: x\r\n\r\n")
        r = c.response()
        check(r.status == 200 and r.body == b"hello world\n", "then /hello: %r" % r.raw[:200])
        s.assert_alive()


# ------------------------------------------------------------------ 3. os.exit

@test
def os_exit_in_a_handler_is_an_error_and_the_server_serves_on():
    with server() as s:
        for _ in range(3):
            st, _, body = get(s.port, "/exit")
            check(st == 500 and b"os.exit is disabled" in body and b"app.lua:" in body, "%d %r" % (st, body))
            s.assert_alive()
        st, _, body = get(s.port, "/exit-pcall")
        r = json.loads(body)
        check(st == 200 and r["ok"] is False and "os.exit is disabled" in r["err"], "pcall(os.exit): %r" % body)
        check("GET /exit:" in s.log() and "os.exit is disabled" in s.log(), "logged: %r" % s.log()[-1000:])


@test
def os_exit_at_load_time_is_a_load_error():
    d = tempfile.mkdtemp(prefix="sluice-sec-exit-")
    try:
        shutil.copytree(FIX, d, dirs_exist_ok=True)
        env = dict(os.environ, FIX_TRUSTED="127.0.0.1", FIX_ADMIN_TOKEN="")
        with Server(d, env={"FIX_TRUSTED": "127.0.0.1"}) as s:
            with open(os.path.join(d, "app.lua"), "a") as f:
                f.write('\nif not os.getenv("NOPE_NOT_SET") then os.exit(1) end\n')
            env["PORT"] = str(s.port)
            t = subprocess.run([SLUICE_BIN, "reload", "--config", os.path.join(d, "config.lua")], env=env,
                               capture_output=True, text=True, timeout=60)
            check(t.returncode == 1 and "os.exit is disabled" in t.stderr and "app.lua:" in t.stderr,
                  "reload: %d %r %r" % (t.returncode, t.stdout, t.stderr))
            s.assert_alive()
        # config.lua: `sluice check` reports it with the file name instead of exiting silently
        with open(os.path.join(d, "config.lua"), "w") as f:
            f.write('if true then os.exit(0) end\nreturn {}\n')
        t = subprocess.run([SLUICE_BIN, "check", "--config", os.path.join(d, "config.lua")], env=env,
                           capture_output=True, text=True, timeout=60)
        check(t.returncode == 1 and "config.lua:1:" in t.stderr and "os.exit is disabled" in t.stderr,
              "check: %d %r" % (t.returncode, t.stderr))
    finally:
        shutil.rmtree(d, ignore_errors=True)


@test
def os_exit_still_works_in_sluice_lua_scripts():
    d = tempfile.mkdtemp(prefix="sluice-sec-lua-")
    try:
        p = os.path.join(d, "script.lua")
        with open(p, "w") as f:
            f.write("io.write('before\\n') os.exit(7)\n")
        t = subprocess.run([SLUICE_BIN, "lua", p], capture_output=True, text=True, timeout=30)
        check(t.returncode == 7 and t.stdout == "before\n", "sluice lua: %d %r %r" % (t.returncode, t.stdout, t.stderr))
    finally:
        shutil.rmtree(d, ignore_errors=True)


if __name__ == "__main__":
    run_tests()
