"""test_ratelimit_pipeline.py: the rate limiter under pipelined requests (issue 21: the per-worker
leases that let a pipelined batch cost one table decision). Exactly the limit with one worker, never
more with two, and every admitted response reports its own `remaining`."""
import re

from harness import Conn, Server, check, get, run_tests, test

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


run_tests()
