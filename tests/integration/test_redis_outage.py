"""test_redis_outage.py: SSE across two sluice instances when the bus (a REAL redis-server) fails
(issue 14, items 5 and 6). Every subscriber must get each published event or an explicit
`sluice-gap` covering it; a publish the bus cannot carry must fail loudly (503), never reach
only some subscribers in silence.

Cases:
  http_publish_reaches_every_instance    POST /_sluice/publish on B reaches subscribers on A and B
                                         under the returned id, in order with app.publish; bad
                                         input is a 400, and while Redis is down a 503
  redis_restart_no_silent_loss           subscribers on both instances, a publisher on B all along,
                                         Redis killed for ~2 s and restarted empty: every event
                                         that got a 201 arrives at every subscriber or is covered
                                         by a sluice-gap; publishes during the outage are 503
  subscriber_cut_is_caught_up            Redis stays up, its pub/sub clients are killed
                                         (CLIENT KILL TYPE pubsub) while B publishes: every event
                                         arrives everywhere, fetched from the streams, no gap
  last_event_id_after_outage_never_skips a client that left before the outage comes back to A with
                                         Last-Event-ID: each event after its id arrives or a gap
                                         covers it
  replay_from_own_history_reports_its_holes
                                         A's subscriber is cut while B publishes on a channel A has
                                         no subscriber for; with Redis then down, a Last-Event-ID
                                         replay from A's own history gets a gap for what A missed

A gap {"last_event_id": X} at some point of a stream covers the ids after X up to the next id the
stream delivers. Run: SLUICE_BIN=$PWD/build/sluice python3 tests/integration/test_redis_outage.py
"""
import json
import os
import shutil
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import RedisServer, Server, check, metric, post, run_tests, test, wait_for, wait_linked  # noqa: E402
from ssecheck import Collector, Publisher, audit, ordered, publish_app  # noqa: E402

HOST = "127.0.0.1"
TOKEN = "pub-secret"

APP = r'''
local app = require "sluice"
app.get("/hello", function() return "hello world\n" end)
app.sse("/events/:room", function(req) return { channel = "room:" .. req.params.room } end)
app.post("/pub/:room", function(req)
  local id = app.publish("room:" .. req.params.room, { event = "msg", data = req.body })
  return { status = 201, json = { id = id } }
end)
'''

CONFIG = r'''
return {
  workers = 2,
  scripts = { "app.lua" },
  log = { access = "off" },
  ratelimit = {
    api = { limit = 100000000, window = 900, key = "ip", paths = { "/" } },
    monitoring = { limit = 100000000, window = 60, key = "ip", paths = { "/metrics", "/health", "/ready" } },
  },
  sse = { heartbeat = 2, retention = 1000, publish_token = os.getenv("PUB_TOKEN") },
  redis = { url = os.getenv("REDIS_URL") },
}
'''

FIXTURE = tempfile.mkdtemp(prefix="sluice-redis-outage-")
with open(os.path.join(FIXTURE, "config.lua"), "w") as f:
    f.write(CONFIG)
with open(os.path.join(FIXTURE, "app.lua"), "w") as f:
    f.write(APP)

REDIS = RedisServer()
A = B = None


def publish_http(port, channel, data, token=TOKEN):
    body = json.dumps({"channel": channel, "event": "msg", "data": data})
    st, hdrs, out = post(port, "/_sluice/publish", body, {"Authorization": "Bearer " + token,
                                                          "Content-Type": "application/json"})
    return st, hdrs, out


def finish_and_audit(cols, pub_log, room, what):
    """Publishes a final marker, waits for every collector to see it, audits each one."""
    ok = [eid for n, st, eid in pub_log if st == 201]
    st, eid = publish_app(B.port, room, "final")
    check(st == 201, "final publish: %r" % st)
    ok.append(eid)
    for c in cols:
        wait_for(lambda: c.has("final"), 15, "the final event at every subscriber (%s)" % what)
    totals = [0, 0, 0]
    for k, c in enumerate(cols):
        d, g, lost = audit(c, ok)
        totals[0] += d
        totals[1] += g
        totals[2] += len(lost)
        check(not lost, "%s: subscriber %d silently lost %d of %d events: %r" % (what, k, len(lost), len(ok), lost[:10]))
        check(ordered(c), "%s: subscriber %d got ids out of order or twice" % (what, k))
    return ok, totals


@test
def http_publish_reaches_every_instance():
    ca, cb = Collector(A.port, "h"), Collector(B.port, "h")
    st, hdrs, out = publish_http(B.port, "room:h", "from-http")
    check(st == 201, "HTTP publish: %r %r" % (st, out))
    hid = json.loads(out)["id"]
    st, lid = publish_app(A.port, "h", "from-lua")
    check(st == 201, "app.publish: %r" % st)
    for c, name in ((ca, "A"), (cb, "B")):
        wait_for(lambda: c.has("from-lua"), 15, "both events on %s" % name)
        got = [(int(e["id"]), e["data"]) for e in c.snapshot()]
        check(got == [(hid, "from-http"), (lid, "from-lua")], "subscriber on %s got %r" % (name, got))
    st, _, out = publish_http(B.port, "bad\nchannel", "x")
    check(st == 400, "bad channel over HTTP: %r %r" % (st, out))
    st, _, out = publish_http(B.port, "room:h", "x", token="wrong")
    check(st == 401, "wrong token: %r" % st)
    ca.close()
    cb.close()
    A.assert_alive()
    B.assert_alive()


@test
def redis_restart_no_silent_loss():
    cols = [Collector(A.port, "o"), Collector(A.port, "o"), Collector(B.port, "o"), Collector(B.port, "o")]
    pub = Publisher(B.port, "o")
    wait_for(lambda: sum(1 for _, st, _ in pub.log if st == 201) >= 10, 10, "publishes before the outage")
    REDIS.stop()
    wait_for(lambda: metric(B.port, 'sluice_redis_connected{conn="command"}') == 0, 10, "B to notice the outage")
    http_down = publish_http(B.port, "room:o", "http-down")
    # an outage with publishes going on: at least 1.5 s, and until the publisher has seen it
    # refuse a few (waited for, so a slow publisher thread cannot miss the outage)
    t_down = time.monotonic()
    wait_for(lambda: sum(1 for _, st, _ in pub.log if st == 503) >= 3, 15, "publishes refused during the outage")
    time.sleep(max(0.0, 1.5 - (time.monotonic() - t_down)))
    REDIS.start()                        # same port, empty: its history is gone
    wait_linked(A, B)
    wait_for(lambda: sum(1 for _, st, _ in pub.log[-10:] if st == 201) == 10, 10, "publishes succeeding again")
    log = pub.finish()
    ok, (d, g, lost) = finish_and_audit(cols, log, "o", "Redis restart")
    failed = sum(1 for _, st, _ in log if st == 503)
    other = sum(1 for _, st, _ in log if st not in (201, 503))
    notices = sum(1 for c in cols for e in c.snapshot() if e.get("event") == "sluice-gap")
    print("  publishes: %d ok (201), %d refused (503), %d other; over 4 subscribers: %d delivered, "
          "%d covered by sluice-gap, %d lost; sluice-gap notices received: %d"
          % (len(ok), failed, other, d, g, lost, notices))
    check(failed > 0, "publishes during the outage fail loudly (503)")
    st, hdrs, out = http_down
    check(st == 503 and hdrs.get("retry-after") == "1", "HTTP publish during the outage: %r %r" % (st, out))
    check(metric(B.port, "sluice_redis_publish_failures_total", required=True) >= failed, "failures counted")
    for c in cols:
        c.close()
    A.assert_alive()
    B.assert_alive()


@test
def subscriber_cut_is_caught_up():
    cols = [Collector(A.port, "k"), Collector(B.port, "k")]
    caught0 = metric(A.port, "sluice_redis_sse_caught_up_total") or 0
    gaps0 = metric(A.port, "sluice_redis_sse_gaps_total") or 0
    pub = Publisher(B.port, "k")
    wait_for(lambda: len(pub.log) >= 10, 10, "publishes before the cut")
    for _ in range(3):                   # cut both subscribers a few times while B publishes
        REDIS.cmd("CLIENT", "KILL", "TYPE", "pubsub")
        time.sleep(0.4)
    wait_linked(A, B)
    time.sleep(0.3)
    log = pub.finish()
    ok, (d, g, lost) = finish_and_audit(cols, log, "k", "subscriber cut")
    caught = metric(A.port, "sluice_redis_sse_caught_up_total", required=True) - caught0
    print("  publishes: %d ok; over 2 subscribers: %d delivered, %d covered by sluice-gap, %d lost; "
          "A fetched %d from the streams" % (len(ok), d, g, lost, caught))
    check(all(st == 201 for _, st, _ in log), "Redis stayed up: every publish succeeds")
    check(g == 0 and metric(A.port, "sluice_redis_sse_gaps_total") == gaps0,
          "intact streams: caught up without a gap")
    for c in cols:
        c.close()
    A.assert_alive()
    B.assert_alive()


@test
def last_event_id_after_outage_never_skips():
    c = Collector(A.port, "r")
    ids = []
    for i in range(3):
        st, eid = publish_app(B.port, "r", "before-%d" % i)
        check(st == 201, "publish: %r" % st)
        ids.append(eid)
    wait_for(lambda: c.has("before-2"), 15, "the client got the first events")
    last = max(int(e["id"]) for e in c.snapshot())
    c.close()                            # the client leaves; events go on, then Redis fails
    pub = Publisher(B.port, "r")
    wait_for(lambda: sum(1 for _, st, _ in pub.log if st == 201) >= 5, 10, "publishes while the client is away")
    REDIS.stop()
    wait_for(lambda: metric(B.port, 'sluice_redis_connected{conn="command"}') == 0, 10, "B to notice the outage")
    failed0 = sum(1 for _, st, _ in pub.log if st == 503)
    t_down = time.monotonic()           # at least 1 s down, and until publishes were refused
    wait_for(lambda: sum(1 for _, st, _ in pub.log if st == 503) >= failed0 + 3, 15, "publishes refused during the outage")
    time.sleep(max(0.0, 1.0 - (time.monotonic() - t_down)))
    REDIS.start()
    wait_linked(A, B)
    wait_for(lambda: sum(1 for _, st, _ in pub.log[-5:] if st == 201) == 5, 10, "publishes succeeding again")
    log = pub.finish()
    back = Collector(A.port, "r", last_id=last)
    ok, (d, g, lost) = finish_and_audit([back], log, "r", "Last-Event-ID after the outage")
    print("  after Last-Event-ID %d: %d events published meanwhile, %d delivered, %d covered by sluice-gap, %d lost"
          % (last, len(ok), d, g, lost))
    back.close()
    A.assert_alive()
    B.assert_alive()


@test
def replay_from_own_history_reports_its_holes():
    """A's hub misses the events published while its subscriber was cut off on a channel it had no
    subscriber for (nothing to catch up): a replay from that history (Redis down) must say so."""
    c = Collector(A.port, "q")
    st, eid = publish_app(B.port, "q", "before")
    check(st == 201, "publish: %r" % st)
    wait_for(lambda: c.has("before"), 15, "the client got the first event")
    last = eid
    c.close()
    pub = Publisher(B.port, "q")
    wait_for(lambda: len(pub.log) >= 5, 10, "publishes while the client is away")
    for _ in range(3):                   # cut the subscribers: A misses events on "q" meanwhile
        REDIS.cmd("CLIENT", "KILL", "TYPE", "pubsub")
        time.sleep(0.4)
    wait_linked(A, B)
    time.sleep(0.3)
    log = pub.finish()
    ok = [eid for _, st, eid in log if st == 201]
    REDIS.stop()
    wait_for(lambda: metric(A.port, 'sluice_redis_connected{conn="command"}') == 0, 10, "A to notice the outage")
    back = Collector(A.port, "q", last_id=last)          # replayed from A's own history
    wait_for(lambda: any(int(e.get("id", 0)) == ok[-1] for e in back.snapshot()), 15, "the replay up to the last event")
    d, g, lost = audit(back, ok)
    print("  replay from A's history after Last-Event-ID %d: %d events published, %d delivered, %d covered by "
          "sluice-gap, %d lost" % (last, len(ok), d, g, len(lost)))
    check(not lost, "replay from the instance's own history silently skipped %d of %d events: %r"
          % (len(lost), len(ok), lost[:10]))
    check(ordered(back), "replay in order")
    back.close()
    REDIS.start()
    wait_linked(A, B)
    A.assert_alive()
    B.assert_alive()


def main():
    global A, B
    servers = []
    try:
        REDIS.start()
        env = {"REDIS_URL": REDIS.url, "PUB_TOKEN": TOKEN, "SLUICE_ENV": "development"}
        A = Server(FIXTURE, env=env).start()
        servers.append(A)
        B = Server(FIXTURE, env=env).start()
        servers.append(B)
        wait_linked(A, B)
        run_tests()
    finally:
        for s in servers:
            try:
                if s.proc:
                    s.stop()
            except Exception as e:  # noqa: BLE001
                print("stop: %s" % e)
            finally:
                s.cleanup()
        REDIS.cleanup()
        shutil.rmtree(FIXTURE, ignore_errors=True)


if __name__ == "__main__":
    main()
