#!/usr/bin/env python3
"""test_http_framing.py: RFC 9112 framing as handlers see it (issue 14, items 8-11): absolute-form
targets, fragments, Host, Connection options with whitespace, HTTP/1.0 with Transfer-Encoding,
the CRLF after chunk data, strict line ends, and verdicts that do not depend on how the bytes
arrive. tests/adversarial/ holds the full hostile corpus (directly and behind nginx / HAProxy);
this file checks what reaches req.* in Lua.

Run: SLUICE_BIN=build/sluice python3 tests/integration/test_http_framing.py [name-substring ...]
Fixture: tests/integration/fixtures/http (GET/POST /req echoes method, path, query, headers, body).
"""
import json
import os
import socket
import sys

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import Conn, Server, check, run_tests, test  # noqa: E402

# the fixture's short timeouts made long (issue 23): a slow machine cannot turn a verdict into a
# 408, and a connection left open after an error is not closed by a timeout either (at_eof fails)
srv = Server("fixtures/http", env={"FIX_HEADER_TIMEOUT": "120", "FIX_KEEPALIVE_TIMEOUT": "120",
                                   "FIX_REQUEST_TIMEOUT": "120"})


def one(data):
    """Sends data on a fresh connection; returns the first response and whether it then closed."""
    with Conn(srv.port) as c:
        c.send(data)
        r = c.response()
        return r, c


def req_json(data):
    r, _ = one(data)
    check(r.status == 200, "status %d %r" % (r.status, r.body[:200]))
    return json.loads(r.body)


def expect_error(data, status, what):
    with Conn(srv.port) as c:
        try:
            c.send(data)
        except (BrokenPipeError, ConnectionResetError):
            pass
        r = c.response()
        check(r.status == status, "%s: %d, want %d (%r)" % (what, r.status, status, r.body))
        check(r.headers.get("connection") == "close", "%s: no Connection: close" % what)
        check(c.at_eof(), "%s: connection left open" % what)


@test
def absolute_form_routes_by_path_and_sets_host():
    j = req_json(b"GET http://example.com:8080/req?a=1#frag HTTP/1.1\r\nHost: other\r\n\r\n")
    check(j["path"] == "/req" and j["query"] == {"a": "1"}, "path/query: %r" % j)
    check(j["headers"]["host"] == "example.com:8080", "RFC 9112 3.2.2: the authority replaces Host: %r" % j["headers"])
    j = req_json(b"GET HTTPS://h.example/req HTTP/1.0\r\n\r\n")
    check(j["headers"].get("host") == "h.example", "HTTP/1.0 without Host gets the target's: %r" % j["headers"])
    expect_error(b"GET http://u@example.com/req HTTP/1.1\r\nHost: x\r\n\r\n", 400, "userinfo")
    expect_error(b"GET ftp://example.com/req HTTP/1.1\r\nHost: x\r\n\r\n", 400, "ftp scheme")
    expect_error(b"GET http://example.com/req HTTP/1.1\r\n\r\n", 400, "absolute-form still needs Host in 1.1")


@test
def fragment_is_not_part_of_path_or_query():
    j = req_json(b"GET /req#x?y=1 HTTP/1.1\r\nHost: x\r\n\r\n")
    check(j["path"] == "/req" and j["query"] == {}, "%r" % j)
    j = req_json(b"GET /req?a=b#c HTTP/1.1\r\nHost: x\r\n\r\n")
    check(j["query"] == {"a": "b"}, "%r" % j)


@test
def host_must_be_one_valid_value():
    for v in (b"a, b", b"a b", b"u@a", b"a:80x", b":80", b"[::1"):
        expect_error(b"GET /req HTTP/1.1\r\nHost: " + v + b"\r\n\r\n", 400, "Host: %r" % v)
    j = req_json(b"GET /req HTTP/1.1\r\nHost: \t[::1]:8080  \r\n\r\n")
    check(j["headers"]["host"] == "[::1]:8080", "OWS trimmed: %r" % j["headers"])
    j = req_json(b"GET /req HTTP/1.1\r\nHost:\r\n\r\n")
    check(j["headers"]["host"] == "", "an empty Host is valid: %r" % j["headers"])


@test
def header_values_lose_surrounding_whitespace():
    j = req_json(b"GET /req HTTP/1.1\r\nHost: x\r\nX-A: \t a b \t \r\n\r\n")
    check(j["headers"]["x-a"] == "a b", "%r" % j["headers"])


@test
def connection_close_with_whitespace_is_honoured():
    for v in (b"close ", b"close\t", b"keep-alive, close  ", b"Close"):
        with Conn(srv.port) as c:
            c.send(b"GET /req HTTP/1.1\r\nHost: x\r\nConnection: " + v + b"\r\n\r\n"
                   b"GET /hello HTTP/1.1\r\nHost: x\r\n\r\n")
            r = c.response()
            check(r.status == 200 and r.headers.get("connection") == "close", "Connection: %r: %r" % (v, r.headers))
            check(c.at_eof(), "Connection: %r: the pipelined request after it was read" % v)


@test
def http10_with_transfer_encoding_400_close():
    # RFC 9112 6.1: the framing of an HTTP/1.0 message with Transfer-Encoding is faulty
    expect_error(b"POST /req HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
                 b"GET /hello HTTP/1.0\r\n\r\n", 400, "1.0 + TE")
    expect_error(b"POST /req HTTP/1.0\r\nConnection: keep-alive\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
                 400, "1.0 keep-alive + TE")


@test
def crlf_after_chunk_data_is_required():
    data = (b"POST /req HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhelloXX0\r\n\r\n"
            b"GET /hello HTTP/1.1\r\nHost: x\r\n\r\n")
    expect_error(data, 400, "chunk data without CRLF")
    r, _ = one(b"POST /req HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n")
    check(r.status == 200 and json.loads(r.body)["body"] == "hello", "a correct body still works: %r" % r)


@test
def transfer_codings_other_than_chunked_501():
    for te in (b"gzip, chunked", b"identity, chunked", b"deflate , chunked"):
        expect_error(b"POST /req HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: " + te + b"\r\n\r\n0\r\n\r\n", 501, te)
    for te in (b"chunked, gzip", b"xchunked", b"chunked, chunked", b"chunked;x=1", b",chunked"):
        expect_error(b"POST /req HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: " + te + b"\r\n\r\n0\r\n\r\n", 400, te)


@test
def strict_line_grammar_400():
    for name, data in (
        ("bare LF", b"GET /req HTTP/1.1\nHost: x\n\n"),
        ("bare CR", b"GET /req HTTP/1.1\r\nHost: x\r\nX-A: a\rTransfer-Encoding: chunked\r\n\r\n"),
        ("obs-fold", b"GET /req HTTP/1.1\r\nHost: x\r\nX-A: a\r\n b\r\n\r\n"),
        ("NUL", b"GET /req HTTP/1.1\r\nHost: x\r\nX-A: a\x00b\r\n\r\n"),
        ("space before colon", b"GET /req HTTP/1.1\r\nHost: x\r\nX-A : b\r\n\r\n"),
        ("chunk size junk", b"POST /req HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n2 xyz\r\nhi\r\n0\r\n\r\n"),
        ("empty chunk ext", b"POST /req HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n2;\r\nhi\r\n0\r\n\r\n"),
        ("unbalanced quote", b"POST /req HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n2;a=\"b\r\nhi\r\n0\r\n\r\n"),
    ):
        expect_error(data, 400, name)


def dribble(data, port):
    """Sends data one byte per send() (TCP_NODELAY), returns everything until the server closes."""
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    try:
        for i in range(len(data)):
            try:
                s.sendall(data[i:i + 1])
            except (BrokenPipeError, ConnectionResetError):
                break
        out = b""
        while True:
            try:
                chunk = s.recv(65536)
            except (socket.timeout, ConnectionResetError):
                break
            if not chunk:
                break
            out += chunk
        return out
    finally:
        s.close()


@test
def verdicts_do_not_depend_on_segmentation():
    # the same bytes in one write and one byte per segment: the same answers
    cases = [
        b"FROB /req HTTP/1.1\r\nHost: x\r\n\r\n",
        b"POST /req HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhelloXX0\r\n\r\n",
        b"GET /req HTTP/1.1\r\nHost: x\r\nX-A: a\r\n b\r\n\r\n",
        b"POST /req HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5;a=\"b\"\r\nhello\r\n0\r\n\r\n"
        b"GET /hello HTTP/1.1\r\nHost: x\r\nConnection: close \r\n\r\n",
    ]
    for data in cases:
        whole = dribble_whole(data)
        parts = dribble(data, srv.port)
        check(statuses(whole) == statuses(parts), "%r: %r whole, %r byte by byte" % (data[:40], statuses(whole), statuses(parts)))


def dribble_whole(data):
    with socket.create_connection(("127.0.0.1", srv.port), timeout=5) as s:
        s.sendall(data)
        out = b""
        while True:
            try:
                chunk = s.recv(65536)
            except (socket.timeout, ConnectionResetError):
                break
            if not chunk:
                break
            out += chunk
        return out


def statuses(raw):
    return [int(ln.split(b" ")[1]) for ln in raw.split(b"\r\n") if ln.startswith(b"HTTP/1.1 ")]


def after_each():
    srv.assert_alive()


if __name__ == "__main__":
    srv.start()
    try:
        run_tests(after_each=after_each)
    finally:
        try:
            srv.stop()
        finally:
            srv.cleanup()
