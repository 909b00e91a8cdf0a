"""test_sse_ops.py: SSE operations a user notices: on_open hooks, slow consumers (disconnect or
drop_oldest with a `sluice-dropped` notice), the `retry:` hint with jitter at shutdown, and the
rate limiter's fail-closed mode when Redis is configured but down."""
import re
import signal
import socket
import threading
import time

from harness import Conn, Server, check, free_port, get, metric, post, run_tests, scaled, test, wait_for


def open_stream(port, rcvbuf=None):
    c = Conn(port, timeout=scaled(15))
    if rcvbuf:      # a small window must be set before connecting to take effect
        c.sock.close()
        c.sock = socket.socket()
        c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        c.sock.settimeout(scaled(15))
        c.sock.connect(("127.0.0.1", port))
    c.send(b"GET /events HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\n\r\n")
    head = c.read_until(b"\r\n\r\n")
    check(b"200 OK" in head, head)
    return c


@test
def on_open_runs_once_per_admitted_stream():
    with Server("fixtures/sse_ops") as s:
        a, b = open_stream(s.port), open_stream(s.port)
        # the hooks run as their own coroutines: wait for both, then make sure no third run follows
        wait_for(lambda: get(s.port, "/opened")[2] == b"2", 15, "on_open for both streams")
        time.sleep(0.2)
        check(get(s.port, "/opened")[2] == b"2", get(s.port, "/opened"))
        a.close(); b.close()


class Drainer(threading.Thread):
    """Reads a stream as fast as it can from the moment it starts, keeping only a count of the
    events seen (no growing buffer to rescan), so its speed does not depend on how much came."""

    def __init__(self, conn):
        super().__init__(daemon=True)
        self.conn, self.last, self.closed = conn, 0, False
        self.cond = threading.Condition()

    def run(self):
        tail = self.conn.buf
        self.conn.sock.settimeout(scaled(30))
        while True:
            try:
                chunk = self.conn.sock.recv(1 << 20)
            except OSError:
                chunk = b""
            if not chunk:
                break
            tail += chunk
            ids = re.findall(rb"data: (\d+):", tail)
            tail = tail[-32:]                     # a marker split across two reads
            if ids:
                with self.cond:
                    self.last = max(self.last, int(ids[-1]))
                    self.cond.notify_all()
        with self.cond:
            self.closed = True
            self.cond.notify_all()

    def wait_for(self, n, timeout=None):
        timeout = scaled(30) if timeout is None else timeout
        with self.cond:
            self.cond.wait_for(lambda: self.last >= n or self.closed, timeout)
            return self.last >= n


@test
def slow_consumer_is_disconnected_and_others_keep_going():
    # The fast client is never more than WINDOW events behind: the test publishes event i+WINDOW only
    # after the fast reader has seen event i, so "fast" holds on any machine, loaded or under a
    # sanitizer. The slow one never reads: once the socket buffers are full its queue passes the
    # bound (max_queue 8, at least retention + 16 = 18 events) and stays there without progress;
    # after sse.slow_timeout (0.3 s here) the next event closes it. Publishing goes on, paced the
    # same way, until that happened (bounded: 3,000 events).
    WINDOW = 4
    with Server("fixtures/sse_ops", env={"FIX_MAX_QUEUE": "8", "FIX_RETENTION": "2", "FIX_SLOW_TIMEOUT": "0.3"}) as s:
        slow = open_stream(s.port, rcvbuf=4096)      # never reads
        fast = Drainer(open_stream(s.port))
        fast.start()
        cut_at = None
        for i in range(1, 3001):
            if i > WINDOW:
                check(fast.wait_for(i - WINDOW), "fast client stalled at %d (closed: %s)" % (fast.last, fast.closed))
            check(post(s.port, "/pub/%d" % i, b"")[0] == 200, "publish %d" % i)
            if i >= 150 and i % 10 == 0 and metric(s.port, "sluice_sse_slow_disconnects_total") == 1:
                cut_at = i
                break
            if i >= 150:
                time.sleep(0.01)
        check(cut_at, "the slow client was never disconnected")
        check(fast.wait_for(cut_at), "the fast client got everything: last %d of %d, closed %s" % (fast.last, cut_at, fast.closed))
        check(not fast.closed, "the fast client is still connected")
        check(metric(s.port, "sluice_sse_slow_disconnects_total") == 1, "exactly one slow disconnect")
        check("too slow" in s.log(), "logged")
        slow.sock.settimeout(10)
        try:
            while slow._fill():                   # what the kernel still held, then the close
                slow.buf = b""
        except ConnectionResetError:
            slow.eof = True
        check(slow.eof, "the slow client's stream was closed")
        fast.conn.close()


@test
def a_pause_shorter_than_slow_timeout_does_not_cut_a_client():
    # 50 events of 256 KB (12.5 MB) reach a client that pauses before reading. The kernel holds at
    # most ~4 MB for it (tcp_wmem max 4 MB + a 4 KB receive window): at least 34 events wait in
    # the server's queue, over the bound (max_queue 8, at least retention + 16 = 18) and under its
    # hard cap (4 x 18 = 72). The client has been over the bound for less than sse.slow_timeout
    # (30 s here, far more than publishing takes on a loaded or sanitizer build): it is not slow
    # yet. When it reads, it gets every event. (Before slow_timeout, a queue over the bound cut at
    # once, so a burst cut clients that read as fast as they could.)
    with Server("fixtures/sse_ops", env={"FIX_MAX_QUEUE": "8", "FIX_RETENTION": "2", "FIX_SLOW_TIMEOUT": "30"}) as s:
        paused = open_stream(s.port, rcvbuf=4096)
        for i in range(1, 51):
            check(post(s.port, "/pub/%d?kb=256" % i, b"")[0] == 200, "publish %d" % i)
        time.sleep(0.3)
        check(metric(s.port, "sluice_sse_slow_disconnects_total") == 0, "the paused client was cut")
        reader = Drainer(paused)
        reader.start()
        check(reader.wait_for(50), "the client got every event after its pause: last %d, closed %s" % (reader.last, reader.closed))
        check(metric(s.port, "sluice_sse_slow_disconnects_total") == 0, "no slow disconnect")
        paused.close()


@test
def drop_oldest_keeps_the_stream_and_tells_the_client():
    with Server("fixtures/sse_ops", env={"FIX_MAX_QUEUE": "8", "FIX_RETENTION": "2", "FIX_SLOW_POLICY": "drop_oldest"}) as s:
        slow = open_stream(s.port, rcvbuf=4096)
        st, _, body = post(s.port, "/burst/150", b"", timeout=scaled(60))
        check(st == 200, "publish: %r %r" % (st, body[:300]))
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
            check(c.at_eof(scaled(15)), "stream closed after the hint")
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
