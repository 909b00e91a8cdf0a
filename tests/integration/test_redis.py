"""test_redis.py: several sluice instances sharing one real redis-server (all on 127.0.0.1).

Covers: cross-instance SSE (each event once per subscriber, same ids, same order), replay from
the shared Redis streams for a client that reconnects to another instance (also one started after
the events), per-user SSE caps across instances, exact rate limits across instances (GCRA in
Redis), app.cache shared by instances, and a Redis outage (publishes fail with 503, local limits
continue, counted in /metrics; cross-instance delivery resumes after Redis comes back).

Run: python3 tests/integration/test_redis.py   (SLUICE_BIN overrides build/sluice)
"""
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import metric as harness_metric  # noqa: E402
from harness import RedisServer, SSEClient, Server, wait_for, wait_linked, check, free_port, get, post, run_tests, test  # noqa: E402

HOST = "127.0.0.1"

APP = r'''
local app = require "sluice"

app.get("/hello", function() return "hello world\n" end)

app.sse("/events/:room", function(req)
  return { channel = "room:" .. req.params.room, user = req.headers["x-user"] }
end)

app.post("/pub/:room", function(req)
  local id = app.publish("room:" .. req.params.room, { event = "msg", data = req.body })
  return { status = 201, json = { id = id } }
end)

app.get("/limited", function() return "ok\n" end)

app.post("/cache/:k", function(req)
  local body = req:json()
  local ok, err = app.cache.set(req.params.k, body.v, body.ttl)
  return { json = { ok = ok, err = err } }
end)

app.get("/cache/:k", function(req)
  local v, err = app.cache.get(req.params.k)
  return { json = { v = v, err = err, backend = app.cache.backend() } }
end)

app.post("/incr/:k", function(req)
  local v, err = app.cache.incr(req.params.k, tonumber(req.query.by or "1"), 60)
  return { json = { v = v, err = err } }
end)
'''

CONFIG = r'''
return {
  workers = 2,
  scripts = { "app.lua" },
  ratelimit = {
    api = { limit = 1000000, window = 900, key = "ip", paths = { "/" } },
    monitoring = { limit = 1000000, window = 60, key = "ip", paths = { "/metrics", "/health", "/ready" } },
    -- 20 per hour: GCRA refills one every 180 s, so the 48 requests of the test see exactly 20
    -- admitted however slowly the machine runs them (with window = 60, one more every 3 s)
    limited = { limit = 20, window = 3600, key = "ip", paths = { "/limited" } },
  },
  sse = { per_user = 10, heartbeat = 2, retention = 100 },
  redis = { url = os.getenv("REDIS_URL"), prefix = os.getenv("REDIS_PREFIX") or "sluice:" },
}
'''


# ------------------------------------------------------------------ fixtures

Redis = RedisServer


FIXTURE = tempfile.mkdtemp(prefix="sluice-redis-fixture-")
with open(os.path.join(FIXTURE, "config.lua"), "w") as f:
    f.write(CONFIG)
with open(os.path.join(FIXTURE, "app.lua"), "w") as f:
    f.write(APP)

REDIS = Redis()


def instance(prefix="sluice:"):
    return Server(FIXTURE, env={"REDIS_URL": REDIS.url, "REDIS_PREFIX": prefix, "SLUICE_ENV": "development"})



SSE = SSEClient


def metric(port, name):
    return harness_metric(port, name, required=True)


def publish(port, room, data):
    st, _, body = post(port, "/pub/" + room, data)
    check(st == 201, "publish on :%d: %r %r" % (port, st, body))
    return json.loads(body)["id"]


# ------------------------------------------------------------------ tests

A = B = C = None


@test
def publish_reaches_every_instance_once_in_order():
    subs = [SSE(s.port, "/events/fan") for s in (A, B, C) for _ in range(2)]
    for s in subs:
        check(s.status == 200, "subscribe: %s" % s.head)
    ids = []
    # two publishers at once, on different instances
    errs = []

    def pub(srv, tag):
        try:
            for i in range(15):
                ids.append(publish(srv.port, "fan", "%s-%d" % (tag, i)))
        except Exception as e:  # noqa: BLE001
            errs.append(e)
    ts = [threading.Thread(target=pub, args=(A, "a")), threading.Thread(target=pub, args=(B, "b"))]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    check(not errs, "publish errors: %r" % errs)
    seen = [s.events(30) for s in subs]
    first = [(e["id"], e["data"]) for e in seen[0]]
    check(len(first) == 30, "subscriber got %d events, want 30" % len(first))
    extra = [s.events(1, timeout=0.1) for s in subs]
    check(not any(extra), "an event was delivered twice: %r" % extra)
    for got in seen[1:]:
        check([(e["id"], e["data"]) for e in got] == first, "subscribers disagree on ids/order")
    nums = [int(i) for i, _ in first]
    check(nums == sorted(nums) and len(set(nums)) == 30, "ids not strictly increasing: %r" % nums)
    check(sorted(nums) == sorted(ids), "published ids %r differ from delivered %r" % (sorted(ids), nums))
    for tag in "ab":   # each publisher's own events stay in its order
        mine = [d for _, d in first if d.startswith(tag + "-")]
        check(mine == ["%s-%d" % (tag, i) for i in range(15)], "order of %s: %r" % (tag, mine))
    for s in subs:
        s.close()


@test
def reconnect_to_another_instance_replays_missed_events():
    s1 = SSE(A.port, "/events/rep")
    check(s1.status == 200, s1.head)
    first = publish(A.port, "rep", "before")
    got = s1.events(1)
    check(got and got[0]["id"] == str(first), "live event: %r" % got)
    s1.close()
    missed = [publish(B.port, "rep", "missed-%d" % i) for i in range(5)]
    s2 = SSE(C.port, "/events/rep", {"Last-Event-ID": str(first)})
    check(s2.status == 200, s2.head)
    ev = s2.events(5)
    check([e["id"] for e in ev] == [str(i) for i in missed], "replay ids %r want %r" % (ev, missed))
    check([e["data"] for e in ev] == ["missed-%d" % i for i in range(5)], "replay data %r" % ev)
    live = publish(A.port, "rep", "after")
    ev = s2.events(1)
    check(ev and ev[0]["id"] == str(live) and ev[0]["data"] == "after", "live after replay: %r" % ev)
    check(not s2.events(1, timeout=0.5), "duplicate delivered after replay")
    s2.close()
    # an instance started after the events has them only in Redis
    with instance() as d:
        wait_linked(d)
        s3 = SSE(d.port, "/events/rep", {"Last-Event-ID": str(first)})
        ev = s3.events(6)
        check([e["data"] for e in ev] == ["missed-%d" % i for i in range(5)] + ["after"],
              "late instance replay: %r" % ev)
        check(all("event" in e and e["event"] == "msg" for e in ev), "event names lost: %r" % ev)
        s3.close()


@test
def per_user_cap_counts_all_instances():
    streams = []
    for i in range(10):
        s = SSE((A, B)[i % 2].port, "/events/cap", {"X-User": "alice"})
        check(s.status == 200, "stream %d: %s" % (i, s.head))
        streams.append(s)
    for srv in (A, B, C):
        s = SSE(srv.port, "/events/cap", {"X-User": "alice"})
        check(s.status == 429, "11th stream on :%d got %d" % (srv.port, s.status))
        s.close()
    other = SSE(C.port, "/events/cap", {"X-User": "bob"})
    check(other.status == 200, "another user is not capped: %s" % other.head)
    other.close()
    streams.pop().close()        # one of alice's goes away: the next one fits again (on any instance)
    deadline = time.monotonic() + 15          # the close reaches the shared count in a moment
    while True:
        s = SSE(C.port, "/events/cap", {"X-User": "alice"})
        if s.status == 200 or time.monotonic() > deadline:
            break
        s.close()
        time.sleep(0.1)
    check(s.status == 200, "after a close, a new stream is admitted: %s" % s.head)
    streams.append(s)
    for s in streams:
        s.close()


@test
def rate_limit_is_exact_across_instances():
    codes = []
    lock = threading.Lock()

    def hit(srv, n):
        for _ in range(n):
            st, h, _ = get(srv.port, "/limited")
            with lock:
                codes.append((st, h.get("ratelimit")))
    ts = [threading.Thread(target=hit, args=(srv, 8)) for srv in (A, B, C) for _ in range(2)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    ok = sum(1 for st, _ in codes if st == 200)
    limited = sum(1 for st, _ in codes if st == 429)
    check(ok == 20 and limited == 28, "admitted %d, rejected %d (want exactly 20 of 48): %r" % (ok, limited, codes))
    check(metric(A.port, "sluice_redis_ratelimit_decisions_total") > 0, "decisions were not made in Redis")


@test
def cache_is_shared_between_instances():
    st, _, body = post(A.port, "/cache/k1", json.dumps({"v": {"name": "x", "n": [1, 2]}}))
    check(st == 200 and json.loads(body)["ok"] is True, "set: %r" % body)
    st, _, body = get(B.port, "/cache/k1")
    r = json.loads(body)
    check(r["backend"] == "redis" and r["v"] == {"name": "x", "n": [1, 2]}, "get on B: %r" % r)
    post(A.port, "/cache/s1", json.dumps({"v": "12"}))
    r = json.loads(get(C.port, "/cache/s1")[2])
    check(r["v"] == "12", "a string stays a string: %r" % r)
    vals = [json.loads(post(srv.port, "/incr/ctr", "")[2])["v"] for srv in (A, B, C, A)]
    check(vals == [1, 2, 3, 4], "incr across instances: %r" % vals)
    # a fractional ttl, long enough to be seen on a loaded machine: visible, its expiry set in
    # Redis to at most 2.5 s, then gone
    post(A.port, "/cache/short", json.dumps({"v": 5, "ttl": 2.5}))
    check(json.loads(get(B.port, "/cache/short")[2])["v"] == 5, "ttl value visible")
    pttl = int(REDIS.cmd("PTTL", "sluice:c:short"))
    check(0 < pttl <= 2500, "the key expires within 2.5 s: PTTL %d" % pttl)
    wait_for(lambda: json.loads(get(B.port, "/cache/short")[2]).get("v") is None, 15, "the ttl to expire")


@test
def redis_outage_degrades_and_recovers():
    sa, sb = SSE(A.port, "/events/out"), SSE(B.port, "/events/out")
    check(sa.status == 200 and sb.status == 200, "subscribe")
    publish(A.port, "out", "up")
    check(len(sa.events(1)) == 1 and len(sb.events(1)) == 1, "delivery before the outage")
    fail0 = metric(A.port, "sluice_redis_publish_failures_total")
    REDIS.stop()
    wait_for(lambda: metric(A.port, 'sluice_redis_connected{conn="command"}') == 0, 15, "A notices the outage")
    # a publish the bus cannot carry fails loudly (503), rather than reaching this instance only
    st, hdrs, body = post(A.port, "/pub/out", "down")
    check(st == 503 and b"unreachable" in body and hdrs.get("retry-after") == "1",
          "publish during the outage: %r %r %r" % (st, hdrs, body))
    check(metric(A.port, "sluice_redis_publish_failures_total") == fail0 + 1, "failed publish counted")
    check(sa.events(1, timeout=0.5) == [], "nothing delivered for a failed publish")
    codes = [get(A.port, "/limited")[0] for _ in range(3)]
    check(all(c in (200, 429) for c in codes), "limits still answer during the outage: %r" % codes)
    check(metric(A.port, "sluice_redis_ratelimit_fallbacks_total") >= 3, "fallbacks counted")
    s = SSE(B.port, "/events/out2", {"X-User": "carol"})
    check(s.status == 200, "streams are still admitted (local caps): %s" % s.head)
    s.close()
    REDIS.start()
    wait_linked(A, B)
    pid = publish(A.port, "out", "back")
    for sub in (sa, sb):
        # the restarted Redis lost its history (no persistence): a sluice-gap may say the streams
        # no longer reach back, then live delivery goes on
        ev = sub.events(1)
        if ev and ev[0].get("event") == "sluice-gap":
            ev = sub.events(1)
        check(ev and ev[0]["data"] == "back" and ev[0]["id"] == str(pid), "cross-instance after recovery: %r" % ev)
    check(metric(A.port, "sluice_redis_reconnects_total") >= 1, "reconnect counted")
    sa.close()
    sb.close()


def main():
    global A, B, C
    servers = [instance(), instance(), instance()]
    try:
        REDIS.start()
        for s in servers:
            s.start()
        A, B, C = servers
        wait_linked(A, B, C)
        run_tests()
    finally:
        code = 0
        for s in servers:
            try:
                if s.proc:
                    s.stop()
            except Exception as e:  # noqa: BLE001
                print("stop: %s" % e)
                code = 1
            finally:
                s.cleanup()
        REDIS.cleanup()
        shutil.rmtree(FIXTURE, ignore_errors=True)
        if code:
            sys.exit(code)


if __name__ == "__main__":
    main()
