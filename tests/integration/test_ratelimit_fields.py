"""test_ratelimit_fields.py: the RateLimit field's numbers on the limiter's short paths (issue 21):
a policy keyed by a request header and one keyed by the client address, each with T = window/limit
over one second (so t is computed from T, not the T <= 1 s shortcut), pipelined and not. r counts
down exactly; t is the time until the next request drips back, within T; a 429's t is its
Retry-After. Fixture: fixtures/rl_pipeline (api: 20 per 1000 s by address, T = 50 s; byclient: 5 per
1000 s by X-Client, T = 200 s)."""
import re

from harness import Conn, Server, check, get, run_tests, test

FIELD = re.compile(r'"(\w+)";r=(\d+);t=(\d+)$')


def fields(r):
    m = FIELD.match(r.headers.get("ratelimit", ""))
    check(m, "no RateLimit field in %r" % r)
    return m.group(1), int(m.group(2)), int(m.group(3))


def pipelined(port, n, path, headers=""):
    c = Conn(port)
    c.send(("GET %s HTTP/1.1\r\nHost: x\r\n%s\r\n" % (path, headers)).encode() * n)
    out = [c.response() for _ in range(n)]
    c.close()
    return out


# t of an admitted request: T minus the time since the key's first request, rounded up. A slow run
# may take a few seconds, never T - 10 s.
def check_t(t, T, what):
    check(T - 10 <= t <= T, "%s: t=%d, expected within %d s of T=%d" % (what, t, 10, T))


@test
def header_key_fields_pipelined():
    with Server("fixtures/rl_pipeline", env={"FIX_WORKERS": "1"}) as srv:
        res = pipelined(srv.port, 7, "/h", "X-Client: alice\r\n")
        got = [(r.status,) + fields(r) for r in res]
        check([g[0] for g in got] == [200] * 5 + [429] * 2, "statuses: %r" % got)
        check([g[2] for g in got[:5]] == [4, 3, 2, 1, 0], "r counts down 4..0: %r" % got)
        check(all(g[1] == "byclient" for g in got), "policy name: %r" % got)
        for g in got[:5]:
            check_t(g[3], 200, "admitted")
        for r, g in zip(res[5:], got[5:]):
            check(g[2] == 0 and str(g[3]) == r.headers["retry-after"], "429: r=0 and t = Retry-After: %r" % r.headers)
        # another client has its own bucket; the next request still works
        st, h, _ = get(srv.port, "/h", headers={"X-Client": "bob"})
        check(st == 200 and FIELD.match(h["ratelimit"]).group(2) == "4", "bob: %d %r" % (st, h))


@test
def header_key_fields_one_by_one_match_pipelined():
    with Server("fixtures/rl_pipeline", env={"FIX_WORKERS": "1"}) as srv:
        rs = []
        for i in range(5):
            st, h, _ = get(srv.port, "/h", headers={"X-Client": "carol"})
            check(st == 200, "request %d: %d" % (i, st))
            _, r, t = FIELD.match(h["ratelimit"]).groups()
            rs.append(int(r))
            check_t(int(t), 200, "admitted")
        check(rs == [4, 3, 2, 1, 0], "r counts down: %r" % rs)
        st, h, _ = get(srv.port, "/h", headers={"X-Client": "carol"})
        check(st == 429 and h["ratelimit"].endswith(";t=" + h["retry-after"]), "then 429: %d %r" % (st, h))
        # without the header the client address is the key (a fresh bucket of 5)
        st, h, _ = get(srv.port, "/h")
        check(st == 200 and FIELD.match(h["ratelimit"]).group(2) == "4", "no header: %d %r" % (st, h))


@test
def address_key_fields_pipelined():
    with Server("fixtures/rl_pipeline", env={"FIX_WORKERS": "1"}) as srv:
        res = pipelined(srv.port, 21, "/api/item")
        got = [(r.status,) + fields(r) for r in res]
        check([g[0] for g in got] == [200] * 20 + [429], "statuses: %r" % [g[0] for g in got])
        check([g[2] for g in got[:20]] == list(range(19, -1, -1)), "r counts down 19..0: %r" % got)
        for g in got[:20]:
            check_t(g[3], 50, "admitted")
        check(got[20][3] == int(res[20].headers["retry-after"]), "429: t = Retry-After")
        check(get(srv.port, "/health")[0] == 200, "unlimited paths still served")


if __name__ == "__main__":
    run_tests()
