"""test_ratelimit_pipeline.py: the rate limiter under pipelined requests (issue 21: the per-worker
leases that let a pipelined batch cost one table decision). Exactly the limit with one worker, never
more with two, and every admitted response reports its own `remaining`."""
import os
import re
import shutil
import subprocess
import tempfile

from harness import SLUICE_BIN, Conn, Server, check, get, run_tests, test

LIMIT = 20


def batches(port, nconn, depth, path="/api/item", headers=""):
    """Opens nconn connections, writes depth pipelined requests on each before reading any answer,
    then reads every response. Returns a list (per connection) of (status, r or None, headers)."""
    conns = [Conn(port) for _ in range(nconn)]
    req = ("GET %s HTTP/1.1\r\nHost: x\r\n%s\r\n" % (path, headers)).encode()
    for c in conns:
        c.send(req * depth)
    out = []
    for c in conns:
        got = []
        for _ in range(depth):
            r = c.response()
            m = re.match(r'"\w+";r=(\d+);t=(\d+)$', r.headers.get("ratelimit", ""))
            check(m, "no RateLimit field in %r" % r)
            got.append((r.status, int(m.group(1)), r.headers))
        out.append(got)
        c.close()
    return out


def admitted_r(res):
    return [r for conn in res for (st, r, _) in conn if st == 200]


def check_429s(res):
    for conn in res:
        for st, r, h in conn:
            check(st in (200, 429), "unexpected status %d" % st)
            if st == 429:
                check(r == 0 and int(h["retry-after"]) >= 1, "429 without r=0 / Retry-After: %r" % h)


def check_order(res):
    """On one connection the admitted requests count down (r strictly decreasing)."""
    for conn in res:
        rs = [r for (st, r, _) in conn if st == 200]
        check(all(a > b for a, b in zip(rs, rs[1:])), "r not decreasing on a connection: %r" % rs)


@test
def pipelined_batches_admit_exactly_the_limit_with_one_worker():
    with Server("fixtures/rl_pipeline", env={"FIX_WORKERS": "1"}) as srv:
        res = batches(srv.port, 4, 16)
        rs = admitted_r(res)
        check(sorted(rs) == list(range(LIMIT)),
              "one worker: exactly %d admitted, r = %d..0 each once; got %d: %r" % (LIMIT, LIMIT - 1, len(rs), sorted(rs)))
        check_429s(res)
        check_order(res)
        check(get(srv.port, "/api/item")[0] == 429, "the bucket stays empty")
        check(get(srv.port, "/health")[0] == 200, "the server still serves unlimited paths")


@test
def two_workers_never_admit_more_than_the_limit():
    with Server("fixtures/rl_pipeline", env={"FIX_WORKERS": "2"}) as srv:
        res = batches(srv.port, 8, 16)
        rs = admitted_r(res)
        # leases never hand out an admission twice: at most the limit, each r reported once
        check(0 < len(rs) <= LIMIT, "two workers: %d admitted (limit %d)" % (len(rs), LIMIT))
        check(len(set(rs)) == len(rs) and all(0 <= r < LIMIT for r in rs), "r values repeat or out of range: %r" % sorted(rs))
        check_429s(res)
        check_order(res)
        check(get(srv.port, "/api/item")[0] == 429, "the bucket stays empty")
        check(get(srv.port, "/health")[0] == 200, "the server still serves unlimited paths")


@test
def header_keys_are_leased_per_key():
    """Two clients (X-Client) pipelining on interleaved connections: 5 each, no more, no less."""
    with Server("fixtures/rl_pipeline", env={"FIX_WORKERS": "1"}) as srv:
        conns = {k: [Conn(srv.port), Conn(srv.port)] for k in ("alice", "bob")}
        for k in ("alice", "bob"):
            for c in conns[k]:
                c.send(("GET /h HTTP/1.1\r\nHost: x\r\nX-Client: %s\r\n\r\n" % k).encode() * 8)
        for k in ("alice", "bob"):
            st = [c.response().status for c in conns[k] for _ in range(8)]
            check(st.count(200) == 5 and st.count(429) == 11, "%s: %d admitted of 16 (limit 5)" % (k, st.count(200)))
            for c in conns[k]:
                c.close()
        check(get(srv.port, "/h", headers={"X-Client": "carol"})[0] == 200, "a third client has its own bucket")


CATCH_ALL_APP = """
local app = require "sluice"
app.get("/a", function() return "a\\n" end)
app.get("/b/:id", function() return "b\\n" end)
"""

CATCH_ALL_CONFIG = """
return {
  workers = 1,
  scripts = { "app.lua" },
  log = { access = "off" },
  ratelimit = { %s },
}
"""


def write_atomic(d, name, text):
    with open(os.path.join(d, name + ".tmp"), "w") as f:
        f.write(text)
    os.replace(os.path.join(d, name + ".tmp"), os.path.join(d, name))


@test
def catch_all_policy_covers_every_path_and_follows_a_reload():
    # A single `paths = { "/" }` prefix for every method is found without the prefix search
    # (core/limiter.c, policy_for): every path shares its bucket, pipelined or not; after a reload
    # to a narrower prefix the worker's note is renewed, and other paths are no longer limited.
    d = tempfile.mkdtemp(prefix="sluice-rlcatch-")
    try:
        write_atomic(d, "app.lua", CATCH_ALL_APP)
        write_atomic(d, "config.lua", CATCH_ALL_CONFIG % 'all = { limit = 10, window = 600, paths = { "/" } }')
        with Server(d) as srv:
            rs = []
            for path in ("/a", "/b/1", "/b/x"):
                st, h, _ = get(srv.port, path)
                check(h.get("ratelimit-policy") == '"all";q=10;w=600', "%s: %r" % (path, h))
                rs.append(int(re.search(r";r=(\d+);", h["ratelimit"]).group(1)))
            # (the harness's readiness probe may have taken one already: counted from the first)
            check(rs[0] >= 7 and rs == [rs[0], rs[0] - 1, rs[0] - 2], "one bucket for every path: r = %r" % rs)
            left = rs[2]
            res = batches(srv.port, 1, left + 1, path="/b/2")
            check([st for (st, _, _) in res[0]] == [200] * left + [429], "pipelined: %r" % [x[:2] for x in res[0]])
            check(admitted_r(res) == list(range(left - 1, -1, -1)), "pipelined r: %r" % admitted_r(res))
            write_atomic(d, "config.lua", CATCH_ALL_CONFIG % 'all = { limit = 10, window = 600, paths = { "/a" } }')
            out = subprocess.run([SLUICE_BIN, "reload", "--config", os.path.join(d, "config.lua")],
                                 env=srv.env, capture_output=True, text=True, timeout=30)
            check(out.returncode == 0, "reload failed: %s" % out.stderr)
            st, h, _ = get(srv.port, "/b/3")
            check(st == 200 and "ratelimit" not in h, "/b/3 after the reload: %d %r" % (st, h))
            st, h, _ = get(srv.port, "/a")
            check(st == 429 and h.get("ratelimit-policy") == '"all";q=10;w=600',
                  "/a: the bucket survives the reload: %d %r" % (st, h))
            check(get(srv.port, "/b/4")[0] == 200, "the server still serves")
    finally:
        shutil.rmtree(d)


run_tests()
