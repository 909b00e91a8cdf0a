#!/usr/bin/env python3
"""test_http.py: the HTTP/1.1 core over real sockets (issue 2): framing, limits, timeouts,
keep-alive, pipelining, gzip, routing, the request API, errors, shutdown and the access log.

Run: SLUICE_BIN=build/sluice python3 tests/integration/test_http.py [name-substring ...]
Fixture: tests/integration/fixtures/http (limits: body 64 KiB, header block 4 KiB, url 1 KiB,
20 headers; the FIX_* variables set the timeouts). After every case on the shared server, a fresh
GET /hello must still answer 200.

Timing (issue 23: no check may depend on the machine's speed): the shared server's timeouts are
FAR, so no case on it can hit one by being slow. Each timeout is tested on a server of its own
where only that timeout is short: its lower bound is exact (the server's clock for it starts
after the test's t0), its upper bound allows LATE seconds of slack (a loaded machine, a sanitizer
build), and every other timeout is FAR beyond that, so the bound still tells which one fired.
A test waits for what it can observe (a log line, a refused connection), never a fixed sleep.
"""
import email.utils
import gzip
import json
import os
import re
import select
import signal
import socket
import sys
import time

sys.dont_write_bytecode = True          # keep the source tree clean
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import (TIMEOUT, Conn, Server, check, get, parse_responses, post, raw,  # noqa: E402
                     run_tests, scaled, test, wait_for, xfail)

FIX = "fixtures/http"
BODY_LIMIT = 65536
LATE = scaled(8.0)          # slack on an upper bound: how late a due timeout may be observed
FAR = int(4 * LATE + 30)    # a timeout that must not be the one that fires (never waited for)
EPS = 0.05                  # the server's timer wheel has 1 ms resolution and rounds down


def timeouts(header=FAR, request=FAR, keepalive=FAR, **more):
    """The env for a fixture server with these timeouts (seconds)."""
    env = {"FIX_HEADER_TIMEOUT": str(header), "FIX_REQUEST_TIMEOUT": str(request),
           "FIX_KEEPALIVE_TIMEOUT": str(keepalive)}
    env.update({k: str(v) for k, v in more.items()})
    return env


srv = Server(FIX, env=timeouts())


def req(method, path, headers=(), body=b"", version="1.1", host=True):
    """Builds request bytes; headers is a list of (name, value)."""
    lines = ["%s %s HTTP/%s" % (method, path, version)]
    if host:
        lines.append("Host: localhost")
    lines += ["%s: %s" % (k, v) for k, v in headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


def expect_400_close(data, what, status=400):
    """Sends data on its own connection; the answer must be one JSON error and a close."""
    with Conn(srv.port) as c:
        c.send(data)
        r = c.response()
        check(r.status == status, "%s: status %d, want %d (%r)" % (what, r.status, status, r.body))
        check(r.headers.get("connection") == "close", "%s: no Connection: close: %r" % (what, r.headers))
        check(r.headers.get("content-type") == "application/json", "%s: %r" % (what, r.headers))
        j = json.loads(r.body)
        check(j.get("status") == status and isinstance(j.get("error"), str) and j["error"],
              "%s: error body %r" % (what, r.body))
        check(c.at_eof(), "%s: connection not closed after the error" % what)
        return j


# ------------------------------------------------------------------ connection handling

@test
def keepalive_several_requests_one_socket():
    with Conn(srv.port) as c:
        for i in range(5):
            c.send(req("GET", "/users/%d" % i))
            r = c.response()
            check(r.status == 200 and r.body == b"user %d" % i, repr(r))
            check("connection" not in r.headers, "HTTP/1.1 keep-alive needs no Connection header: %r" % r.headers)
        c.send(req("GET", "/hello", [("Connection", "close")]))
        r = c.response()
        check(r.status == 200 and r.headers.get("connection") == "close", repr(r))
        check(c.at_eof(), "server kept the connection after Connection: close")


@test
def pipelining_16_in_one_write_in_order():
    data = b""
    for i in range(16):
        if i % 5 == 2:
            body = b"payload-%d" % i
            data += req("POST", "/echo", [("Content-Length", len(body))], body)
        else:
            data += req("GET", "/users/%d" % i)
    with Conn(srv.port) as c:
        c.send(data)
        for i in range(16):
            r = c.response()
            want = b"payload-%d" % i if i % 5 == 2 else b"user %d" % i
            check(r.status == 200 and r.body == want, "response %d: %r (want %r)" % (i, r, want))
        c.send(req("GET", "/hello"))
        check(c.response().body == b"hello world\n", "after the pipeline")


@test
def pipelined_slow_handler_keeps_order():
    # a suspended handler (app.sleep) in the middle of a pipeline must not let later
    # responses overtake it
    data = req("GET", "/users/1") + req("GET", "/slow?s=0.2") + req("GET", "/users/3")
    with Conn(srv.port) as c:
        c.send(data)
        bodies = [c.response().body for _ in range(3)]
        check(bodies == [b"user 1", b"slow done\n", b"user 3"], repr(bodies))


@test
def chunked_request_body():
    body = b"5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\n\r\n"
    with Conn(srv.port) as c:
        c.send(req("POST", "/echo", [("Transfer-Encoding", "chunked")], body))
        r = c.response()
        check(r.status == 200 and r.body == b"hello world" and r.headers.get("x-len") == "11", repr(r))
        # chunks split across writes, with trailers
        c.send(req("POST", "/echo", [("Transfer-Encoding", "chunked")]) + b"3\r\nab")
        time.sleep(0.05)
        c.send(b"c\r\n0\r\nX-Trailer: t\r\n\r\n")
        r = c.response()
        check(r.status == 200 and r.body == b"abc", repr(r))
        # trailers are dropped: they cannot add a second Host or any other header
        c.send(req("POST", "/req", [("Transfer-Encoding", "chunked")]) + b"2\r\nhi\r\n0\r\nHost: evil\r\nX-T: 1\r\n\r\n")
        j = json.loads(c.response().body)
        check(j["body"] == "hi" and j["headers"].get("host") == "localhost" and "x-t" not in j["headers"],
              "trailers leaked into req.headers: %r" % j)


@test
def chunked_bad_chunk_size_400_close():
    expect_400_close(req("POST", "/echo", [("Transfer-Encoding", "chunked")], b"zz\r\nhello\r\n0\r\n\r\n"),
                     "bad chunk size")


@test
def chunked_body_over_limit_413():
    chunk = b"%x\r\n" % 40000 + b"a" * 40000 + b"\r\n"
    with Conn(srv.port) as c:
        c.send(req("POST", "/echo", [("Transfer-Encoding", "chunked")]))
        try:
            for _ in range(3):
                c.send(chunk)
        except (BrokenPipeError, ConnectionResetError):
            pass
        r = c.response()
        check(r.status == 413 and r.headers.get("connection") == "close", repr(r))


@test
def http10_closes_unless_keepalive():
    with Conn(srv.port) as c:
        c.send(req("GET", "/hello", version="1.0", host=False))
        r = c.response()
        check(r.status == 200 and r.body == b"hello world\n", repr(r))
        check(r.headers.get("connection") == "close", "HTTP/1.0 response: %r" % r.headers)
        check(c.at_eof(), "HTTP/1.0 without keep-alive must close")
    with Conn(srv.port) as c:
        for i in range(3):      # the same socket serves again: it was kept open
            c.send(req("GET", "/hello", [("Connection", "keep-alive")], version="1.0", host=False))
            r = c.response()
            check(r.status == 200 and r.headers.get("connection", "").lower() == "keep-alive", "%d: %r" % (i, r))


@test
def expect_100_continue():
    with Conn(srv.port) as c:
        c.send(req("POST", "/echo", [("Content-Length", 5), ("Expect", "100-continue")]))
        interim = c.read_until(b"\r\n\r\n")
        check(interim == b"HTTP/1.1 100 Continue\r\n\r\n", "interim: %r" % interim)
        c.send(b"hello")
        r = c.response()
        check(r.status == 200 and r.body == b"hello", repr(r))


@test
def extra_crlf_after_body_no_spurious_100():
    # RFC 9112 2.2: a server should ignore empty lines before a request; they must not
    # replay the previous request's Expect: 100-continue
    with Conn(srv.port) as c:
        c.send(req("POST", "/echo", [("Content-Length", 2), ("Expect", "100-continue")]))
        check(c.read_until(b"\r\n\r\n").startswith(b"HTTP/1.1 100 "), "interim 100")
        c.send(b"ok\r\n")
        r = c.response()
        check(r.status == 200 and r.body == b"ok", repr(r))
        time.sleep(0.1)
        c.send(b"\r\n" + req("GET", "/users/3"))
        r = c.response()
        check(r.status == 200 and r.body == b"user 3", "after the extra CRLF: %r" % r)


@test
def expect_100_continue_too_large_413_without_body():
    with Conn(srv.port) as c:
        c.send(req("POST", "/echo", [("Content-Length", 10 * BODY_LIMIT), ("Expect", "100-continue")]))
        r = c.response()        # the final answer, not a 100, and without sending any body
        check(r.status == 413, "want 413 before the body, got %r" % r)
        check(r.headers.get("connection") == "close", repr(r.headers))
        check(c.at_eof(), "connection should close after 413")


@test
def expect_unknown_417():
    expect_400_close(req("POST", "/echo", [("Content-Length", 1), ("Expect", "tea")], b"x"), "Expect: tea", 417)


@test
def head_has_length_but_no_body():
    with Conn(srv.port) as c:
        c.send(req("HEAD", "/hello") + req("GET", "/users/9"))
        r = c.response(head=True)
        check(r.status == 200 and r.headers.get("content-length") == "12", repr(r))
        r2 = c.response()       # would be garbage if HEAD had leaked a body
        check(r2.status == 200 and r2.body == b"user 9", "after HEAD: %r" % r2)


@test
def date_content_length_connection_headers():
    with Conn(srv.port) as c:
        c.send(req("GET", "/users/abc"))
        r = c.response()
        check(len(r.all("date")) == 1 and len(r.all("content-length")) == 1, repr(r.header_list))
        d = r.headers["date"]
        check(re.match(r"^(Mon|Tue|Wed|Thu|Fri|Sat|Sun), \d\d (Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec) "
                       r"\d{4} \d\d:\d\d:\d\d GMT$", d), "Date %r is not an IMF-fixdate" % d)
        when = email.utils.parsedate_to_datetime(d).timestamp()
        check(abs(when - time.time()) < 5, "Date %r is off by %.0f s" % (d, when - time.time()))
        check(int(r.headers["content-length"]) == len(r.body) == 8, repr(r))
        check(r.headers.get("content-type", "").startswith("text/plain"), repr(r.headers))
    st, h, _ = get(srv.port, "/status/204")
    check(st == 204 and "content-length" not in h, "204 must not carry Content-Length: %r" % h)


# ------------------------------------------------------------------ limits

@test
def body_over_limit_413_before_body_sent():
    with Conn(srv.port) as c:       # request_timeout is FAR: an answer at all means it did not wait
        c.send(req("POST", "/echo", [("Content-Length", 50 * 1024 * 1024)]))   # and no body
        r = c.response()
        check(r.status == 413 and r.headers.get("connection") == "close", repr(r))
        check(json.loads(r.body)["status"] == 413, repr(r.body))
        check(c.at_eof(), "not closed after 413")


@test
def body_at_limit_accepted():
    body = b"b" * BODY_LIMIT
    st, h, b = post(srv.port, "/echo", body)
    check(st == 200 and b == body, "body of exactly body_size: %d, %d bytes" % (st, len(b)))


@test
def header_block_over_limit_431():
    expect_400_close(req("GET", "/hello", [("X-Big", "v" * 5000)]), "5 KB header", 431)
    expect_400_close(req("GET", "/hello", [("X-H%d" % i, "v" * 300) for i in range(15)]), "15 x 300 B", 431)


@test
def too_many_headers_431():
    expect_400_close(req("GET", "/hello", [("X-N%d" % i, "1") for i in range(25)]), "25 headers", 431)
    st, _, _ = get(srv.port, "/hello", headers={"X-N%d" % i: "1" for i in range(15)})
    check(st == 200, "15 headers must pass (got %d)" % st)


@test
def url_over_limit_414():
    expect_400_close(req("GET", "/users/" + "x" * 1100), "1.1 KB url", 414)
    st, _, b = get(srv.port, "/users/" + "y" * 900)
    check(st == 200 and b == b"user " + b"y" * 900, "a 900 B url must pass (%d)" % st)


def took_within(took, due, what):
    """took (s since a t0 before the server's clock started) fits a timeout of `due` s."""
    check(took >= due - EPS, "%s after %.2f s: before its timeout of %g s" % (what, took, due))
    check(took <= due + LATE, "%s after %.2f s: its timeout is %g s (allowing %g s of slack; the "
          "other timeouts are %d s)" % (what, took, due, LATE, FAR))


@test
def slow_headers_408_and_close():
    # header_timeout bounds the whole header block: a byte every 0.2 s must not extend it (one
    # header value growing, so no header limit ends it first)
    with Server(FIX, env=timeouts(header=1)) as s, Conn(s.port) as c:
        t0 = time.monotonic()
        c.send(b"GET /hello HTTP/1.1\r\nX-Drip: ")
        i = 0
        while time.monotonic() - t0 < 1 + LATE:
            if select.select([c.sock], [], [], 0.2)[0]:
                break                            # the answer (or the close) is there
            try:
                c.send(b"a")
            except (BrokenPipeError, ConnectionResetError):
                break
            i += 1
        check(select.select([c.sock], [], [], 0)[0], "no answer to a header block dripping for %.1f s "
              "(%d bytes) with header_timeout = 1" % (time.monotonic() - t0, i))
        took = time.monotonic() - t0
        r = c.response()
        check(r.status == 408 and r.headers.get("connection") == "close", repr(r))
        took_within(took, 1, "408")
        check(c.at_eof(), "not closed after 408")


@test
def silent_connection_closed_after_header_timeout():
    with Server(FIX, env=timeouts(header=1)) as s:
        t0 = time.monotonic()
        with Conn(s.port) as c:
            check(c.at_eof(1 + LATE), "an idle new connection was not closed")
            took = time.monotonic() - t0
            check(c.buf == b"", "nothing should be sent to a client that sent nothing: %r" % c.buf)
        took_within(took, 1, "the silent connection closed")


@test
def slow_body_408():
    # request_timeout counts from the request's first byte: the headers came at once, the body never
    with Server(FIX, env=timeouts(request=2.5)) as s, Conn(s.port, timeout=2.5 + LATE) as c:
        t0 = time.monotonic()
        c.send(req("POST", "/echo", [("Content-Length", 10)], b"abc"))
        r = c.response()
        took = time.monotonic() - t0
        check(r.status == 408 and r.headers.get("connection") == "close", repr(r))
        took_within(took, 2.5, "body 408")
        check(c.at_eof(), "not closed after 408")


@test
def idle_keepalive_closed_after_timeout():
    with Server(FIX, env=timeouts(keepalive=3)) as s, Conn(s.port) as c:
        c.send(req("GET", "/hello"))
        check(c.response().status == 200, "first")
        time.sleep(0.3)                          # far under keepalive_timeout: still usable
        t0 = time.monotonic()                    # before the second request: the idle clock starts later
        c.send(req("GET", "/hello"))
        check(c.response().status == 200, "second request after 0.3 s idle (keepalive_timeout = 3)")
        check(c.at_eof(3 + LATE), "idle keep-alive connection not closed")
        took = time.monotonic() - t0
        check(c.buf == b"", "bytes before the idle close: %r" % c.buf)
        took_within(took, 3, "the idle keep-alive connection closed")


# ------------------------------------------------------------------ bad framing: 400 + close

@test
def duplicate_content_length_400():
    expect_400_close(req("POST", "/echo", [("Content-Length", 3), ("Content-Length", 3)], b"abc"), "dup CL")
    expect_400_close(req("POST", "/echo", [("Content-Length", 3), ("Content-Length", 4)], b"abcd"), "conflicting CL")


@test
def invalid_content_length_400():
    for v in ("abc", "-1", "1 2", "0x10", "3,3", "99999999999999999999999"):
        expect_400_close(req("POST", "/echo", [("Content-Length", v)], b"abc"), "Content-Length: %s" % v)


@test
def content_length_and_transfer_encoding_400():
    expect_400_close(req("POST", "/echo", [("Content-Length", 5), ("Transfer-Encoding", "chunked")],
                         b"0\r\n\r\n"), "CL+TE")
    expect_400_close(req("POST", "/echo", [("Transfer-Encoding", "gzip")], b"x"), "TE gzip")


@test
def missing_host_http11_400():
    expect_400_close(req("GET", "/hello", host=False), "no Host")


@test
def duplicate_host_400():
    expect_400_close(req("GET", "/hello", [("Host", "other")]), "two Hosts")


@test
def control_characters_in_header_400():
    for v in ("a\x01b", "a\x7fb", "a\x00b", "a\x1bb"):
        expect_400_close(req("GET", "/hello", [("X-Ctl", v)]), "value %r" % v)
    expect_400_close(b"GET /hello HTTP/1.1\r\nHost: x\r\nX-A: a\rb\r\n\r\n", "bare CR")
    expect_400_close(b"GET /hello HTTP/1.1\r\nHost: x\r\nX A: b\r\n\r\n", "space in name")
    expect_400_close(b"GET /hello HTTP/1.1\r\nHost: x\r\nX(A): b\r\n\r\n", "parens in name")


@test
def garbage_request_line_400():
    for data in (b"HELLO\r\n\r\n", b"\x00\x01\x02\x03\r\n\r\n", b"GET\r\n\r\n",
                 b"GET hello HTTP/1.1\r\nHost: x\r\n\r\n", b"GET /a b HTTP/1.1\r\nHost: x\r\n\r\n",
                 b"GET /hello HTTP/1.1 extra\r\nHost: x\r\n\r\n"):
        expect_400_close(data, "request line %r" % data[:30])


@test
def unsupported_http_version_505():
    for v in (b"9.9", b"2.0", b"0.9"):
        expect_400_close(b"GET /hello HTTP/" + v + b"\r\nHost: x\r\n\r\n", "HTTP/%s" % v.decode(), 505)


@test
def unknown_method_501_invalid_method_400():
    # a well-formed token that is no method sluice knows is 501 (RFC 9110 9.1); methods are
    # case-sensitive, so "get" is one of those; a method that is not a token is 400
    expect_400_close(b"FROB /hello HTTP/1.1\r\nHost: x\r\n\r\n", "FROB", 501)
    expect_400_close(b"get /hello HTTP/1.1\r\nHost: x\r\n\r\n", "lower-case get", 501)
    expect_400_close(b"G(T /hello HTTP/1.1\r\nHost: x\r\n\r\n", "not a token")


@test
def error_after_good_pipelined_request():
    # the good request is answered, then the bad one gets 400 and the connection closes
    with Conn(srv.port) as c:
        c.send(req("GET", "/users/1") + b"GET /x HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n" + req("GET", "/users/2"))
        r1 = c.response()
        r2 = c.response()
        check(r1.status == 200 and r1.body == b"user 1", repr(r1))
        check(r2.status == 400 and r2.headers.get("connection") == "close", repr(r2))
        check(c.at_eof(), "request after a framing error must not be served")


# ------------------------------------------------------------------ gzip

@test
def gzip_large_text_and_json():
    for path, ctype in (("/big", "text/plain"), ("/bigjson", "application/json")):
        st, plain_h, plain = get(srv.port, path)
        check(st == 200 and len(plain) > 1024, "%s: %d bytes" % (path, len(plain)))
        check(plain_h.get("vary") == "Accept-Encoding", "%s without gzip still needs Vary: %r" % (path, plain_h))
        check("content-encoding" not in plain_h, "%s compressed without Accept-Encoding" % path)
        with Conn(srv.port) as c:
            c.send(req("GET", path, [("Accept-Encoding", "deflate, gzip")]))
            r = c.response()
        check(r.status == 200 and r.headers.get("content-encoding") == "gzip", "%s: %r" % (path, r.headers))
        check(r.headers.get("vary") == "Accept-Encoding", repr(r.headers))
        check(r.headers.get("content-type", "").startswith(ctype), repr(r.headers))
        check(int(r.headers["content-length"]) == len(r.body) < len(plain), "%s: lengths" % path)
        unz = gzip.decompress(r.body)
        if ctype == "application/json":      # key order may differ between workers' Lua states
            unz, plain = json.loads(unz), json.loads(plain)
        check(unz == plain, "%s: gunzip differs from the plain body" % path)


@test
def gzip_not_for_small_or_compressed_or_refused():
    st, h, b = get(srv.port, "/hello", headers={"Accept-Encoding": "gzip"})
    check(st == 200 and "content-encoding" not in h and b == b"hello world\n", "small body: %r" % h)
    st, h, b = get(srv.port, "/png", headers={"Accept-Encoding": "gzip"})
    check(st == 200 and "content-encoding" not in h and h.get("content-type") == "image/png" and len(b) == 2400,
          "image/png: %r" % h)
    for ae in ("gzip;q=0", "gzip; q=0.0, identity", "identity", "br", "*;q=0", "gzip;q=0, *", "gzipx", "xgzip"):
        st, h, b = get(srv.port, "/big", headers={"Accept-Encoding": ae})
        check(st == 200 and "content-encoding" not in h and b.startswith(b"sluice compresses"),
              "Accept-Encoding %r: %r" % (ae, h))
    for ae in ("br;q=1, gzip;q=0.5", "*", "identity, *;q=0.1", "x-gzip", "GZIP"):
        st, h, b = get(srv.port, "/big", headers={"Accept-Encoding": ae})
        check(h.get("content-encoding") == "gzip", "Accept-Encoding %r accepts gzip: %r" % (ae, h))


# ------------------------------------------------------------------ handlers

@test
def handler_error_500_json_and_worker_survives():
    for _ in range(6):           # more than the workers: every worker hits it
        st, h, b = get(srv.port, "/boom")
        check(st == 500 and h.get("content-type") == "application/json", "%d %r" % (st, h))
        j = json.loads(b)
        check(j["status"] == 500 and "kaboom from the handler" in j["error"], "dev mode shows the message: %r" % j)
        st, _, b = get(srv.port, "/hello")
        check(st == 200, "after the error")
    srv.wait_log(r"app\.lua:\d+: kaboom from the handler", what="the error in the log, with file:line")


@test
def crlf_in_response_header_500_no_split():
    for path in ("/crlf", "/crlfname"):
        with Conn(srv.port) as c:
            c.send(req("GET", path) + req("GET", "/users/5"))
            r = c.response()
            check(r.status == 500, "%s: %r" % (path, r))
            check(b"pwned" not in r.raw and b"injected" not in r.raw.lower(), "%s leaked: %r" % (path, r.raw))
            r2 = c.response()
            check(r2.status == 200 and r2.body == b"user 5", "%s: next response %r" % (path, r2))
            check(not c.at_eof(0.2) and c.buf == b"", "%s: extra bytes %r" % (path, c.buf))


# ------------------------------------------------------------------ routing

@test
def routing_404_405_options():
    st, h, b = get(srv.port, "/nope")
    check(st == 404 and json.loads(b) == {"error": "not found", "status": 404}, "%d %r" % (st, b))
    st, h, b = post(srv.port, "/hello", b"")
    check(st == 405 and json.loads(b)["status"] == 405, "POST /hello: %d %r" % (st, b))
    with Conn(srv.port) as c:
        c.send(req("OPTIONS", "/hello"))
        r = c.response()
        allow = [m.strip() for m in r.headers.get("allow", "").split(",")]
        check(r.status == 204 and "GET" in allow and "HEAD" in allow and "POST" not in allow, repr(r))
        c.send(req("OPTIONS", "/only-put"))
        r = c.response()
        check(r.status == 204 and r.headers.get("allow") == "PUT", repr(r))
        c.send(req("HEAD", "/only-put"))
        r = c.response(head=True)
        check(r.status == 405, "HEAD on a PUT-only route: %r" % r)


@test
def routing_params_wildcard_decoding():
    cases = {
        "/users/42": b"user 42",
        "/users/7/posts/9": b"7/9",
        "/users/J%C3%BCrgen%20X": "user Jürgen X".encode(),
        "/users/a%2Fb": b"user a/b",
        "/files/a/b/c.txt": b"file a/b/c.txt",
        "/users/42?x=1": b"user 42",
    }
    for path, want in cases.items():
        st, _, b = get(srv.port, path)
        check(st == 200 and b == want, "%s: %d %r (want %r)" % (path, st, b, want))
    st, _, _ = get(srv.port, "/users/1/posts")
    check(st == 404, "/users/1/posts: %d" % st)


@test
def request_query_headers_body_json():
    st, _, b = get(srv.port, "/req?a=1&b=x%20y&c=%E2%9C%93&plus=a+b",
                   headers={"X-Mixed-Case": "Val ue", "ACCEPT": "text/x"})
    j = json.loads(b)
    check(st == 200 and j["method"] == "GET" and j["path"] == "/req", repr(j))
    q = j["query"]
    check(q.get("a") == "1" and q.get("b") == "x y" and q.get("c") == "\u2713" and q.get("plus") == "a b", repr(q))
    hd = j["headers"]
    check(hd.get("x-mixed-case") == "Val ue" and hd.get("accept") == "text/x", repr(hd))
    check(all(k == k.lower() for k in hd), "header names not lower-case: %r" % list(hd))
    st, _, b = post(srv.port, "/json", b'{"n": 5, "list": [1, 2]}', headers={"Content-Type": "application/json"})
    check(st == 200 and json.loads(b) == {"got": {"n": 5, "list": [1, 2]}}, "%d %r" % (st, b))
    st, _, b = post(srv.port, "/json", b'{"n": ', headers={"Content-Type": "application/json"})
    check(st == 400 and "invalid JSON" in json.loads(b)["err"], "invalid JSON gives nil, err: %d %r" % (st, b))
    check(j.get("ip") == "127.0.0.1", "req.ip: %r" % j.get("ip"))
    # an empty value is a header too; Upgrade is not supported, so the next request is plain HTTP
    with Conn(srv.port) as c:
        c.send(req("GET", "/req", [("X-Empty", ""), ("X-B", "b"), ("Connection", "Upgrade"), ("Upgrade", "websocket")])
               + req("GET", "/users/2"))
        hd = json.loads(c.response().body)["headers"]
        check(hd.get("x-empty") == "" and hd.get("x-b") == "b", "empty header value: %r" % hd)
        check(c.response().body == b"user 2", "request after an Upgrade header")
    # obs-fold (RFC 9112 5.2) is rejected: a proxy that unfolds differently would see other headers
    expect_400_close(b"GET /req HTTP/1.1\r\nHost: x\r\nX-A: a\r\n  folded\r\nX-B: b\r\n\r\n", "obs-fold")
    st, h, b = post(srv.port, "/echo", b"\x00\xffbinary\r\n")
    check(st == 200 and b == b"\x00\xffbinary\r\n" and h.get("x-len") == "10", "binary body: %r" % b)


# ------------------------------------------------------------------ max_connections

@test
def max_connections_503_then_recovers():
    # no timeout can end a connection here: the 21st gets its 503 without sending a byte, at once
    with Server(FIX, env=timeouts(FIX_MAX_CONN=20)) as s:
        conns = []
        try:
            for i in range(20):
                c = Conn(s.port)
                c.send(req("GET", "/users/%d" % i))       # proves it was accepted and counted
                check(c.response().status == 200, "connection %d" % i)
                conns.append(c)
            out = raw(s.port, b"")
            busy_503.append(out)
            head = out.split(b"\r\n\r\n")[0].decode("latin-1").lower()
            check(head.startswith("http/1.1 503 ") and "\r\nconnection: close" in head, "21st connection: %r" % out)
            for i, c in enumerate(conns):                  # the first 20 still work
                c.send(req("GET", "/users/%d" % i))
                check(c.response().body == b"user %d" % i, "connection %d after the 503" % i)
        finally:
            for c in conns:
                c.close()
        # closes are noticed asynchronously (a 503 until then)
        wait_for(lambda: get(s.port, "/hello")[0] == 200, what="the server to serve again after the clients left")


@test
def max_connections_503_body_is_valid_json():
    check(busy_503, "max_connections_503_then_recovers did not run")
    r = parse_responses(busy_503[0])
    check(len(r) == 1 and json.loads(r[0].body)["status"] == 503, "503 body: %r" % busy_503[0])


busy_503 = []


# ------------------------------------------------------------------ shutdown and logs

def refused(port):
    """True when a new connection to port is refused (its listener is closed)."""
    try:
        socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT).close()
        return False
    except ConnectionRefusedError:
        return True


# shutdown_timeout and the connection timeouts are FAR: an exit within Server.wait()'s limit comes
# from the drain finishing, not from a deadline.

@test
def graceful_shutdown_finishes_in_flight():
    with Server(FIX, env=timeouts(FIX_SHUTDOWN_TIMEOUT=FAR)) as s:
        c = Conn(s.port)
        c.send(req("GET", "/slow?s=2&tag=graceful"))
        s.wait_log(r"slow start graceful$", what="the request to be in its handler")
        s.signal(signal.SIGTERM)
        s.wait_log(r"shutting down", what="the server to see SIGTERM")
        wait_for(lambda: refused(s.port), what="new connections to be refused while draining")
        check(s.proc.poll() is None, "the server exited before the in-flight request (2 s) was answered")
        r = c.response()
        check(r.status == 200 and r.body == b"slow done\n", "in-flight request: %r" % r)
        check(r.headers.get("connection") == "close", "last response should say close: %r" % r.headers)
        rc = s.wait(10)
        check(rc == 0, "exit status %r" % rc)
        c.close()


@test
def shutdown_exits_when_last_request_finishes():
    with Server(FIX, env=timeouts(FIX_SHUTDOWN_TIMEOUT=FAR)) as s:
        with Conn(s.port) as c:
            c.send(req("GET", "/slow?s=0.3&tag=last"))
            s.wait_log(r"slow start last$", what="the request to be in its handler")
            s.signal(signal.SIGTERM)
            check(c.response().status == 200, "in-flight request")
        rc = s.wait(10)         # far under shutdown_timeout: the exit follows the last request
        check(rc == 0, "exit %r after SIGTERM" % rc)


@test
def shutdown_closes_idle_keepalive_at_once():
    with Server(FIX, env=timeouts(FIX_SHUTDOWN_TIMEOUT=FAR)) as s:
        idle = Conn(s.port)
        idle.send(req("GET", "/hello"))
        check(idle.response().status == 200, "idle conn")
        s.signal(signal.SIGTERM)
        try:     # keepalive_timeout and shutdown_timeout are FAR: only the shutdown can close it
            check(idle.at_eof(LATE), "idle keep-alive connection not closed within %g s of SIGTERM" % LATE)
        finally:
            idle.close()
        rc = s.wait(10)
        check(rc == 0, "exit %r" % rc)


@test
def access_log_text_and_json():
    with Server(FIX, env={"FIX_ACCESS_LOG": "text"}) as s:
        get(s.port, "/users/7?x=1")
        post(s.port, "/nope", b"")
        s.wait_log(r'"POST /nope HTTP/1\.1" 404 ')
        log = s.log()
    m = re.search(r'^127\.0\.0\.1 \[[A-Z][a-z]{2}, \d\d [A-Z][a-z]{2} \d{4} \d\d:\d\d:\d\d GMT\] '
                  r'"GET /users/7\?x=1 HTTP/1\.1" 200 6 \d+\.\d{3}ms$', log, re.M)
    check(m, "text access line not found in:\n" + log[-1500:])
    check(re.search(r'"POST /nope HTTP/1\.1" 404 \d+ ', log), "404 line:\n" + log[-1500:])
    with Server(FIX, env={"FIX_ACCESS_LOG": "json"}) as s:
        get(s.port, '/users/q"uote')
        s.wait_log(r'^\{.*"url":"/users/q')
        log = s.log()
    lines = [json.loads(ln) for ln in log.splitlines() if ln.startswith("{")]
    hit = [d for d in lines if d.get("url", "").startswith("/users/q")]
    check(len(hit) == 1, "json access line not found in:\n" + log[-1500:])
    d = hit[0]
    check(d["method"] == "GET" and d["status"] == 200 and d["ip"] == "127.0.0.1" and d["url"] == '/users/q"uote'
          and d["bytes"] == len('user q"uote') and isinstance(d["ms"], (int, float))
          and re.match(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$", d["time"]) and d["level"] == "info"
          and d["msg"] == "access" and d["request_id"] and re.match(r"^[0-9a-f]{32}$", d["trace_id"]),
          "json access line: %r" % d)
    # off (the shared server): no access lines at all
    check(not re.search(r'"GET /hello HTTP', srv.log()), "access log should be off in the shared server")


@test
def shared_server_exits_cleanly():
    srv.stop()


# ------------------------------------------------------------------ main

def after_each():
    if srv.proc and srv.returncode is None and srv.proc.poll() is None:
        srv.assert_alive()
    elif srv.returncode is None:
        check(False, "shared " + srv.died_message())


if __name__ == "__main__":
    srv.start()
    try:
        run_tests(after_each=after_each)
    finally:
        srv.cleanup()
