"""ssecheck.py: SSE delivery auditing shared by the fault tests (test_redis_outage.py,
test_redis_sentinel.py): a threaded subscriber that records every `msg` and `sluice-gap` event, a
steady publisher, and the audit that splits published ids into delivered, covered by a gap, and
silently lost. No tests here."""
import json
import socket
import threading
import time

from harness import HOST, check, post


class Collector:
    """An SSE subscriber read by a thread: events in arrival order ({field: value}), comments skipped."""

    def __init__(self, port, room, last_id=None):
        self.sock = socket.create_connection((HOST, port), timeout=30)
        extra = "Last-Event-ID: %s\r\n" % last_id if last_id else ""
        self.sock.sendall(("GET /events/%s HTTP/1.1\r\nHost: x\r\n%s\r\n" % (room, extra)).encode())
        buf = b""
        while b"\r\n\r\n" not in buf:
            chunk = self.sock.recv(65536)
            check(chunk, "stream closed before its head")
            buf += chunk
        head, _, self.buf = buf.partition(b"\r\n\r\n")
        check(head.startswith(b"HTTP/1.1 200"), "subscribe: %r" % head[:80])
        self.events = []
        self.lock = threading.Lock()
        self.stop = False
        self.eof = False
        self.t = threading.Thread(target=self._run, daemon=True)
        self.t.start()

    def _run(self):
        self.sock.settimeout(0.2)
        while not self.stop:
            while b"\n\n" in self.buf:
                block, _, self.buf = self.buf.partition(b"\n\n")
                ev = {}
                for ln in block.decode().split("\n"):
                    if ln and not ln.startswith(":"):
                        k, _, v = ln.partition(": ")
                        ev[k] = v
                if ev.get("event") in ("msg", "sluice-gap"):
                    with self.lock:
                        self.events.append(ev)
            try:
                chunk = self.sock.recv(65536)
            except socket.timeout:
                continue
            except OSError:
                chunk = b""
            if not chunk:
                self.eof = True
                return
            self.buf += chunk

    def snapshot(self):
        with self.lock:
            return list(self.events)

    def has(self, data):
        return any(e.get("data") == data for e in self.snapshot())

    def close(self):
        self.stop = True
        self.t.join(2)
        self.sock.close()


def publish_app(port, room, data):
    """app.publish through a handler: (status, id or None)."""
    try:
        st, _, body = post(port, "/pub/" + room, data, timeout=30)   # a loaded machine is slow, not down
    except OSError:
        return 0, None
    return st, (json.loads(body)["id"] if st == 201 else None)


class Publisher:
    """Publishes data "p<n>" on B every 20 ms until stopped; keeps (n, status, id)."""

    def __init__(self, port, room):
        self.port, self.room = port, room
        self.log = []
        self.stop = False
        self.t = threading.Thread(target=self._run, daemon=True)
        self.t.start()

    def _run(self):
        n = 0
        while not self.stop:
            st, eid = publish_app(self.port, self.room, "p%d" % n)
            self.log.append((n, st, eid))
            n += 1
            time.sleep(0.02)

    def finish(self):
        self.stop = True
        self.t.join(60)          # a publish in flight may take its whole 30 s timeout
        return self.log


def audit(col, published):
    """(delivered, gapped, lost) over the ids that got a 201, for one subscriber's stream."""
    evs = col.snapshot()
    got = set()
    covered = []                       # (after, upto): ids in (after, upto) are covered by a gap
    for i, e in enumerate(evs):
        if e.get("event") == "msg":
            got.add(int(e["id"]))
        else:
            after = json.loads(e["data"])["last_event_id"]
            nxt = next((int(x["id"]) for x in evs[i + 1:] if x.get("event") == "msg"), 1 << 62)
            covered.append((after, nxt))
    delivered = gapped = 0
    lost = []
    for eid in published:
        if eid in got:
            delivered += 1
        elif any(a < eid < u for a, u in covered):
            gapped += 1
        else:
            lost.append(eid)
    return delivered, gapped, lost


def ordered(col):
    ids = [int(e["id"]) for e in col.snapshot() if e.get("event") == "msg"]
    return ids == sorted(ids) and len(ids) == len(set(ids))
