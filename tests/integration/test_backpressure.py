"""test_backpressure.py: a client that pipelines requests and does not read the responses must not
make the server buffer them without bound (issue 14, item 4; limits.max_output_buffer).

Cases:
  non_reading_pipeliner_bounded     MBs of pipelined GET /big8k and GET /hello, never read: the
                                    server's RSS (VmRSS in /proc/PID/status) grows by < 30 MB, other
                                    clients are served meanwhile, and after the client leaves the
                                    RSS is back near where it started
  paused_client_gets_everything     a client that stops reading for a while, then reads, gets
                                    every response, complete and in order
  reading_pipeliner_in_order        a client that pipelines 3,000 requests while reading gets
                                    every response in order

Run: SLUICE_BIN=$PWD/build/sluice python3 tests/integration/test_backpressure.py [case ...]
"""
import os
import shutil
import socket
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import SLUICE_BIN, Conn, Server, check, get, run_tests, test, wait_for  # noqa: E402

HOST = "127.0.0.1"

APP = r'''
local app = require "sluice"
local big = string.rep("x", 8192)
app.get("/hello", function() return "hello world\n" end)
app.get("/big8k", function() return big end)
-- 8 KB that name their request, so order and completeness can be checked
app.get("/n/:i", function(req) return "<" .. req.params.i .. ">" .. big end)
'''

CONFIG = r'''
return {
  workers = 1,
  scripts = { "app.lua" },
  log = { access = "off" },
  ratelimit = {
    api = { limit = 100000000, window = 900, key = "ip", paths = { "/" } },
    monitoring = { limit = 100000000, window = 60, key = "ip", paths = { "/metrics", "/health", "/ready" } },
  },
}
'''

FIXTURE = tempfile.mkdtemp(prefix="sluice-backpressure-")
with open(os.path.join(FIXTURE, "config.lua"), "w") as f:
    f.write(CONFIG)
with open(os.path.join(FIXTURE, "app.lua"), "w") as f:
    f.write(APP)

SRV = None
MB = 1024 * 1024
with open(SLUICE_BIN, "rb") as f:      # ASan's allocator keeps freed memory (quarantine): RSS says little
    SANITIZED = b"__asan_init" in f.read()


def rss_kb():
    with open("/proc/%d/status" % SRV.proc.pid) as f:
        for ln in f:
            if ln.startswith("VmRSS:"):
                return int(ln.split()[1])
    raise AssertionError("no VmRSS")


def hello_ok():
    st, _, body = get(SRV.port, "/hello", timeout=5)
    return st == 200 and body == b"hello world\n"


def pipeline_without_reading(req, total, sent):
    """Sends `total` bytes of pipelined requests on a socket it never reads; returns the socket.
    sent[0] counts the bytes the kernel took (sending stops when the windows are full)."""
    s = socket.create_connection((HOST, SRV.port), timeout=10)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)     # keep what the kernel holds small
    chunk = req * (65536 // len(req))
    s.settimeout(3.0)            # a send that cannot progress for 3 s: the server stopped reading

    def run():
        try:
            while sent[0] < total:
                sent[0] += s.send(chunk[: min(len(chunk), total - sent[0])])
        except OSError:
            pass

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return s, t


@test
def non_reading_pipeliner_bounded():
    for _ in range(50):                      # warm up: Lua state, buffers, allocator arenas
        check(hello_ok(), "warm-up")
    base = rss_kb()
    peak = base
    results = {}
    for name, req, total in (("big8k", b"GET /big8k HTTP/1.1\r\nHost: x\r\n\r\n", 2 * MB),
                             ("hello", b"GET /hello HTTP/1.1\r\nHost: x\r\n\r\n", 16 * MB)):
        sent = [0]
        s, t = pipeline_without_reading(req, total, sent)
        # while the client sits there, others are served and memory stays bounded
        deadline = time.monotonic() + 4
        served = 0
        while time.monotonic() < deadline:
            check(hello_ok(), "another client is served while %s is stuck" % name)
            served += 1
            peak = max(peak, rss_kb())
            time.sleep(0.1)
        t.join(10)
        peak = max(peak, rss_kb())
        results[name] = (sent[0], served)
        s.close()
    wait_for(hello_ok, 5, "server serves after the clients left")
    # the parked connection's buffers are freed: RSS comes back near the start
    after = [rss_kb()]

    def settled():
        after[0] = rss_kb()
        return after[0] - base < 8 * 1024
    if not SANITIZED:
        wait_for(settled, 10, "RSS back within 8 MB of the start (start %d KB, now %d KB)" % (base, after[0]))
    print("  RSS KB: before %d, peak %d (+%d), after %d (+%d); requests sent: big8k %d B, hello %d B; "
          "other-client requests served meanwhile: %d, %d"
          % (base, peak, peak - base, after[0], after[0] - base, results["big8k"][0], results["hello"][0],
             results["big8k"][1], results["hello"][1]))
    check(results["big8k"][0] >= 256 * 1024, "the client did pipeline a lot: %d bytes" % results["big8k"][0])
    if SANITIZED:
        print("  (sanitizer build: RSS bounds not checked)")
    else:
        check(peak - base < 30 * 1024, "RSS grew by %d KB under a non-reading pipeliner (bound 30 MB)" % (peak - base))
    SRV.assert_alive()


def read_numbered(c, lo, hi):
    for i in range(lo, hi):
        r = c.response()
        want = b"<%d>" % i
        check(r.status == 200 and r.body.startswith(want) and len(r.body) == len(want) + 8192,
              "response %d: %r %r" % (i, r.status, r.body[:20]))


@test
def paused_client_gets_everything():
    n = 2000                                   # ~16 MB of responses, far over the 1 MB bound
    data = b"".join(b"GET /n/%d HTTP/1.1\r\nHost: x\r\n\r\n" % i for i in range(n))
    c = Conn(SRV.port, timeout=20)
    c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
    sender = threading.Thread(target=lambda: c.send(data), daemon=True)
    sender.start()
    time.sleep(1.5)                            # not reading: the server pauses this connection
    check(hello_ok(), "another client is served while one is paused")
    read_numbered(c, 0, n)                     # now read: everything comes, in order
    sender.join(10)
    c.send(b"GET /hello HTTP/1.1\r\nHost: x\r\n\r\n")
    r = c.response()
    check(r.status == 200 and r.body == b"hello world\n", "the connection still works: %r" % r)
    c.close()
    SRV.assert_alive()


@test
def reading_pipeliner_in_order():
    n = 3000
    data = b"".join(b"GET /n/%d HTTP/1.1\r\nHost: x\r\n\r\n" % i for i in range(n))
    c = Conn(SRV.port, timeout=20)
    sender = threading.Thread(target=lambda: c.send(data), daemon=True)
    sender.start()
    read_numbered(c, 0, n)
    sender.join(10)
    c.close()
    SRV.assert_alive()


def main():
    global SRV
    SRV = Server(FIXTURE)
    try:
        SRV.start()
        run_tests()
    finally:
        try:
            if SRV.proc:
                SRV.stop()
        finally:
            SRV.cleanup()
            shutil.rmtree(FIXTURE, ignore_errors=True)


if __name__ == "__main__":
    main()
