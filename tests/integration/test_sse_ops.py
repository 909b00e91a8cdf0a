"""test_sse_ops.py: SSE operations a user notices: on_open hooks, slow consumers (disconnect or
drop_oldest with a `sluice-dropped` notice), the `retry:` hint with jitter at shutdown, and the
rate limiter's fail-closed mode when Redis is configured but down."""
import re
import signal
import socket
import threading
import time

from harness import Conn, Server, check, free_port, get, post, run_tests, test


def open_stream(port, rcvbuf=None):
    c = Conn(port, timeout=5)
    if rcvbuf:      # a small window must be set before connecting to take effect
        c.sock.close()
        c.sock = socket.socket()
        c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        c.sock.settimeout(5)
        c.sock.connect(("127.0.0.1", port))
    c.send(b"GET /events HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\n\r\n")
    head = c.read_until(b"\r\n\r\n")
    check(b"200 OK" in head, head)
    return c


@test
def on_open_runs_once_per_admitted_stream():
    with Server("fixtures/sse_ops") as s:
        a, b = open_stream(s.port), open_stream(s.port)
        time.sleep(0.1)
        check(get(s.port, "/opened")[2] == b"2", get(s.port, "/opened"))
        a.close(); b.close()


@test
def slow_consumer_is_disconnected_and_others_keep_going():
    with Server("fixtures/sse_ops", env={"FIX_MAX_QUEUE": "8", "FIX_RETENTION": "2"}) as s:
        slow = open_stream(s.port, rcvbuf=4096)      # never reads
        fast = open_stream(s.port)
        got = {}
        reader = threading.Thread(target=lambda: got.setdefault("data", fast.read_until(b"data: 150:")))
        reader.start()                                    # the fast client reads while we publish
        check(post(s.port, "/burst/150?gap=0.002", b"")[0] == 200, "publish")   # ~40 MB/s, steady
        reader.join(20)
        check(b"data: 1:" in got.get("data", b""), "the fast client got everything")
        time.sleep(0.2)
        st, _, body = get(s.port, "/metrics")
        m = re.search(rb"sluice_sse_slow_disconnects_total (\d+)", body)
        check(m and int(m.group(1)) == 1, "one slow disconnect: %r" % (m and m.group(0)))
        check("too slow" in s.log(), "logged")
        fast.close()


@test
def drop_oldest_keeps_the_stream_and_tells_the_client():
    with Server("fixtures/sse_ops", env={"FIX_MAX_QUEUE": "8", "FIX_RETENTION": "2", "FIX_SLOW_POLICY": "drop_oldest"}) as s:
        slow = open_stream(s.port, rcvbuf=4096)
        check(post(s.port, "/burst/150", b"")[0] == 200, "publish")
        time.sleep(0.2)
        data = slow.read_until(b"event: sluice-dropped\ndata: ")   # now read everything that is left
        data += slow.read_until(b"\n\n")
        n = int(re.search(rb'"dropped":(\d+)', data).group(1))
        got = len(re.findall(rb"event: big", data))
        check(b"data: 150:" in data, "the newest event is kept")
        check(got + n == 150 and n > 0, "events %d + dropped %d" % (got, n))
        st, _, body = get(s.port, "/metrics")
        check(re.search(rb"sluice_sse_dropped_events_total [1-9]", body), "counted")


@test
def shutdown_sends_a_jittered_retry_hint():
    srv = Server("fixtures/sse_ops").start()
    try:
        streams = [open_stream(srv.port) for _ in range(6)]
        srv.proc.send_signal(signal.SIGTERM)
        hints = []
        for c in streams:
            c.read_until(b"retry: ")
            m = re.match(rb"(\d+)\n\n", c.read_until(b"\n\n"))
            check(m, "no retry hint")
            hints.append(int(m.group(1)))
            check(c.at_eof(3), "stream closed after the hint")
        check(all(1000 <= h < 5000 for h in hints), hints)
        check(len(set(hints)) > 1, "jittered: %r" % hints)
        srv.wait()
        check(srv.returncode == 0, "exit %r" % srv.returncode)
    finally:
        srv.cleanup()


@test
def redis_down_fail_closed_answers_503():
    dead = "redis://127.0.0.1:%d" % free_port()
    with Server("fixtures/sse_ops", env={"FIX_REDIS_URL": dead, "FIX_REDIS_FAILURE": "closed"}) as s:
        st, h, body = get(s.port, "/limited")
        check(st == 503 and b"rate limiter unavailable" in body and h.get("retry-after"), (st, body))
    with Server("fixtures/sse_ops", env={"FIX_REDIS_URL": dead}) as s:
        st, h, body = get(s.port, "/limited")
        check(st == 200, "fail-open by default: %d" % st)


if __name__ == "__main__":
    run_tests()
