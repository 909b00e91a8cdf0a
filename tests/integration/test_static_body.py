"""test_static_body.py: a static file over 16 KB is the connection's body source (conn_send_file:
sendfile after the headers, issue 15 move 2). Checked over real sockets: the whole file and a
range arrive byte for byte, a request pipelined behind a big file is answered after it, in order,
on the same connection, a client that reads slowly still gets every byte, a client that leaves in
the middle of a file does not hurt the server, and every response still carries its X-Request-Id
(the response header hook)."""
import os
import shutil
import socket
import tempfile
import time

from harness import Conn, Server, check, get, run_tests, scaled, test

DIR = None
BIG = bytes((i * 7 + (i >> 9)) & 0xFF for i in range(3 * 1024 * 1024 + 123))   # 3 MB: many sendfile rounds


def fixture():
    global DIR
    if DIR:
        return DIR
    DIR = tempfile.mkdtemp(prefix="sluice-static-body-")
    os.mkdir(os.path.join(DIR, "public"))
    with open(os.path.join(DIR, "public", "big.bin"), "wb") as f:
        f.write(BIG)
    with open(os.path.join(DIR, "config.lua"), "w") as f:
        f.write('return { workers = 1, scripts = { "app.lua" }, ratelimit = false, log = { access = "off" } }\n')
    with open(os.path.join(DIR, "app.lua"), "w") as f:
        f.write('local app = require "sluice"\napp.static("/s", "public")\n'
                'app.get("/hello", function() return "hello\\n" end)\n')
    return DIR


def read_response(c):
    """(status line, lower-cased headers, body) of one Content-Length response on Conn c."""
    head = c.read_until(b"\r\n\r\n").decode("latin-1").split("\r\n")
    hdrs = {}
    for ln in head[1:]:
        if ln:
            k, v = ln.split(":", 1)
            hdrs[k.strip().lower()] = v.strip()
    return head[0], hdrs, c.read_exact(int(hdrs["content-length"]))


@test
def a_big_file_and_a_range_arrive_whole():
    with Server(fixture()) as s:
        st, hdrs, body = get(s.port, "/s/big.bin", timeout=scaled(30))
        check(st == 200 and body == BIG, (st, len(body)))
        check(hdrs.get("x-request-id"), hdrs)
        st, hdrs, body = get(s.port, "/s/big.bin", {"Range": "bytes=100000-2500000"}, timeout=scaled(30))
        check(st == 206 and body == BIG[100000:2500001], (st, len(body)))
        check(hdrs.get("content-range") == "bytes 100000-2500000/%d" % len(BIG), hdrs)


@test
def a_request_pipelined_behind_a_big_file_is_answered_after_it():
    with Server(fixture()) as s:
        c = Conn(s.port, timeout=scaled(30))
        req = lambda p: ("GET %s HTTP/1.1\r\nHost: x\r\n\r\n" % p).encode()
        c.send(req("/s/big.bin") + req("/hello") + req("/s/big.bin") + req("/hello"))
        ids = set()
        for want in (BIG, b"hello\n", BIG, b"hello\n"):
            line, hdrs, body = read_response(c)
            check(line.startswith("HTTP/1.1 200") and body == want, (line, len(body)))
            ids.add(hdrs.get("x-request-id"))
        check(len(ids) == 4 and None not in ids, ids)
        c.close()


@test
def a_slow_reader_gets_every_byte():
    with Server(fixture()) as s:
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)   # a small window: many EAGAINs
        sock.settimeout(scaled(30))
        sock.connect(("127.0.0.1", s.port))
        sock.sendall(b"GET /s/big.bin HTTP/1.1\r\nHost: x\r\n\r\nGET /hello HTTP/1.1\r\nHost: x\r\n\r\n")
        got = b""
        for i in range(40):                 # pauses while the file is being sent
            got += sock.recv(8192)
            time.sleep(0.005)
        while True:
            chunk = sock.recv(262144)
            if not chunk:
                break
            got += chunk
            if got.endswith(b"hello\n"):
                break
        head, _, rest = got.partition(b"\r\n\r\n")
        check(head.startswith(b"HTTP/1.1 200") and rest[:len(BIG)] == BIG, (head[:60], len(rest)))
        check(rest[len(BIG):].startswith(b"HTTP/1.1 200") and rest.endswith(b"hello\n"), rest[len(BIG):][:80])
        sock.close()


@test
def a_client_leaving_mid_file_does_not_hurt_the_server():
    with Server(fixture()) as s:
        for _ in range(5):
            sock = socket.create_connection(("127.0.0.1", s.port), timeout=scaled(10))
            sock.sendall(b"GET /s/big.bin HTTP/1.1\r\nHost: x\r\n\r\n")
            sock.recv(1000)
            sock.close()
        st, _, body = get(s.port, "/hello")
        check(st == 200 and body == b"hello\n", (st, body))
        st, _, body = get(s.port, "/s/big.bin", timeout=scaled(30))
        check(st == 200 and body == BIG, (st, len(body)))


if __name__ == "__main__":
    try:
        run_tests()
    finally:
        if DIR:
            shutil.rmtree(DIR, ignore_errors=True)
