"""test_monitoring.py: /health, /ready, /metrics (promtool), /_sluice/status, the errors ring,
the admin token, the monitoring rate limit and the dashboard page (issue 8).

The fixture's monitoring policy allows 5 requests a minute to /metrics, /health and /ready, so
the servers here are started by polling /ok (not /health), and tests wait for what they need
through /_sluice/status, which the policy does not count (issue 23: no fixed sleeps)."""
import json
import shutil
import signal
import subprocess

from harness import Conn, Server, check, free_port, get, raw, run_tests, test, wait_for

TOKEN = "s3cret"


def srv(db=None):
    env = {"FIX_ADMIN_TOKEN": TOKEN}
    if db:
        env["FIX_DATABASE_URL"] = db
    return Server("fixtures/monitoring", env=env, health="/ok")


AUTH = {"Authorization": "Bearer " + TOKEN}


def status(s):
    st, _, body = get(s.port, "/_sluice/status", headers=AUTH)
    check(st == 200, "status %d %r" % (st, body))
    return json.loads(body)


@test
def health_ready_and_metrics_pass_promtool():
    with srv() as s:
        for i in range(3):
            get(s.port, "/ok")
        get(s.port, "/fail/1")
        st, h, body = get(s.port, "/health")
        check(st == 200 and json.loads(body) == {"status": "ok"}, body)
        st, h, body = get(s.port, "/ready")
        check(st == 200 and json.loads(body) == {"status": "ready"}, body)
        st, h, body = get(s.port, "/metrics")
        check(st == 200 and h["content-type"].startswith("text/plain; version=0.0.4"), h)
        text = body.decode()
        for name in ("sluice_http_request_duration_seconds_bucket", "sluice_http_responses_total{code=\"5xx\"} 1",
                     "sluice_connections", "sluice_lua_errors_total 1", "sluice_process_resident_memory_bytes",
                     "sluice_process_cpu_seconds_total", "sluice_uptime_seconds", "sluice_sse_subscribers",
                     "sluice_ratelimit_keys", "sluice_reloads_total 0"):
            check(name in text, "metrics lack %s" % name)
        if shutil.which("promtool"):
            p = subprocess.run(["promtool", "check", "metrics"], input=body, capture_output=True, timeout=30)
            check(p.returncode == 0, "promtool: %s %s" % (p.stdout, p.stderr))


@test
def ready_is_503_when_database_unreachable():
    dead = "postgresql://u:p@127.0.0.1:%d/db?connect_timeout=1" % free_port()
    with srv(dead) as s:
        # the verdict through the status page (not rate-limited), then one /ready
        wait_for(lambda: status(s).get("ready_reason") == "database unreachable", what="the failed database "
                 "connection to reach the readiness verdict")
        st, _, body = get(s.port, "/ready")
        check(st == 503, "ready %d %r" % (st, body))
        check(json.loads(body) == {"status": "not ready", "reason": "database unreachable"}, body)
        check(get(s.port, "/health")[0] == 200, "health must stay 200")


@test
def ready_is_503_while_draining():
    with srv() as s:
        c = Conn(s.port)
        c.send(b"GET /ok HTTP/1.1\r\nHost: x\r\n\r\n")
        check(c.response().status == 200, "first request")
        # keep a request in flight (slow body) so the connection stays open during shutdown; the
        # 100 Continue says the server has its headers
        c.send(b"POST /ok HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n")
        check(c.read_until(b"\r\n\r\n").startswith(b"HTTP/1.1 100 "), "100 Continue")
        c.send(b"ab")
        s.signal(signal.SIGTERM)
        s.wait_log(r"shutting down", what="the server to see SIGTERM")     # logged once draining is set
        # a new connection now: refused (the listener is closed, which is what a balancer sees
        # too), closed unanswered (a worker that had not begun draining accepted it), or a 503
        try:
            out = raw(s.port, b"GET /ready HTTP/1.1\r\nHost: x\r\n\r\n")
        except (ConnectionRefusedError, ConnectionResetError, BrokenPipeError):
            out = b""
        check(out == b"" or out.startswith(b"HTTP/1.1 503 "), "a new connection after SIGTERM: %r" % out[:300])
        check(s.proc.poll() is None, "the server exited with a request in flight")
        c.send(b"cde")
        r = c.response()
        check(r.status == 405 or r.status == 200, "in-flight request answered: %r" % r)
        s.wait()
        check(s.returncode == 0, "exit %r" % s.returncode)


@test
def status_json_keeps_bounded_errors_and_snapshots():
    with srv() as s:
        for i in range(5):
            get(s.port, "/fail/%d" % i)
        wait_for(lambda: len(status(s)["snapshots"]) >= 1, what="a snapshot (metrics.interval = 1)")
        j = status(s)
        for k in ("uptime", "workers", "connections", "requests", "errors_5xx", "rss_mb", "cpu_seconds",
                  "latency_ms", "reloads", "errors", "snapshots"):
            check(k in j, "status lacks %s" % k)
        check(len(j["errors"]) == 3, "errors ring keeps metrics.errors = 3, got %d" % len(j["errors"]))
        check("failure number 4" in j["errors"][0]["message"], j["errors"][0])
        check("stack traceback" in j["errors"][0]["message"], "traceback kept")
        check(j["errors"][0]["route"].startswith("GET /fail/4"), j["errors"][0])
        check(len(j["snapshots"]) >= 1, "a snapshot per metrics.interval")
        check(set(j["latency_ms"]) == {"p50", "p95", "p99", "p999"}, j["latency_ms"])


@test
def error_ring_keeps_exactly_the_last_500_by_default():
    import os, shutil, tempfile
    d = tempfile.mkdtemp(prefix="sluice-errors-")
    try:
        shutil.copy(os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures/monitoring/app.lua"), d)
        with open(os.path.join(d, "config.lua"), "w") as f:
            f.write('return { workers = 2, scripts = { "app.lua" }, log = { access = "off" }, ratelimit = false }\n')
        with Server(d) as s:
            c = Conn(s.port)
            for i in range(510):                 # one keep-alive connection, 510 handler errors
                c.send(b"GET /fail/%d HTTP/1.1\r\nHost: x\r\n\r\n" % i)
                check(c.response().status == 500, "request %d" % i)
            st, _, body = get(s.port, "/_sluice/status")
            errs = json.loads(body)["errors"]
            check(len(errs) == 500, "kept %d" % len(errs))
            check("failure number 509" in errs[0]["message"] and "failure number 10" in errs[-1]["message"],
                  "newest first, oldest kept is #10: %r .. %r" % (errs[0]["message"][:40], errs[-1]["message"][:40]))
    finally:
        shutil.rmtree(d)


@test
def admin_area_requires_token():
    with srv() as s:
        st, _, body = get(s.port, "/_sluice/status")
        check(st == 401, "no token: %d" % st)
        st, _, body = get(s.port, "/_sluice/status", headers={"Authorization": "Bearer wrong"})
        check(st == 401, "wrong token: %d" % st)
        st, h, body = get(s.port, "/_sluice/dashboard?token=" + TOKEN)
        check(st == 200 and b"sluice dashboard" in body and h["content-type"].startswith("text/html"), st)


@test
def monitoring_endpoints_are_rate_limited():
    with srv() as s:
        # (the harness's start-up probe used /ok, so all 5 are left)
        sts = [get(s.port, "/health")[0] for _ in range(7)]
        check(sts == [200] * 5 + [429] * 2, "statuses %r" % sts)
        st, h, body = get(s.port, "/health")
        check(h.get("retry-after") and json.loads(body)["policy"] == "monitoring", (h, body))
        check(get(s.port, "/ok")[0] == 200, "app routes are not in the monitoring policy")


if __name__ == "__main__":
    run_tests()
