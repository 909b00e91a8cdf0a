"""test_monitoring.py: /health, /ready, /metrics (promtool), /_sluice/status, the errors ring,
the admin token, the monitoring rate limit and the dashboard page (issue 8)."""
import json
import shutil
import signal
import subprocess
import time

from harness import Conn, Server, check, free_port, get, run_tests, test

TOKEN = "s3cret"


def srv(db=None):
    env = {"FIX_ADMIN_TOKEN": TOKEN}
    if db:
        env["FIX_DATABASE_URL"] = db
    return Server("fixtures/monitoring", env=env)


AUTH = {"Authorization": "Bearer " + TOKEN}


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
        # at most 4 probes: the monitoring policy of this fixture allows 5 per minute and the
        # harness's start-up check used one
        st, body = 0, b""
        for _ in range(4):
            time.sleep(0.5)
            st, _, body = get(s.port, "/ready")
            if st == 503:
                break
        check(st == 503, "ready %d %r" % (st, body))
        check(json.loads(body) == {"status": "not ready", "reason": "database unreachable"}, body)
        check(get(s.port, "/health")[0] == 200, "health must stay 200")


@test
def ready_is_503_while_draining():
    with srv() as s:
        c = Conn(s.port, timeout=5)
        c.send(b"GET /ok HTTP/1.1\r\nHost: x\r\n\r\n")
        check(c.response().status == 200, "first request")
        # keep a request in flight (slow body) so the connection stays open during shutdown
        c.send(b"POST /ok HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nab")
        time.sleep(0.1)
        s.proc.send_signal(signal.SIGTERM)
        time.sleep(0.3)
        c2 = None
        try:
            c2 = Conn(s.port, timeout=1)
            c2.send(b"GET /ready HTTP/1.1\r\nHost: x\r\n\r\n")
            r = c2.response()
            check(r.status == 503, "new connections after SIGTERM: %r" % r)
        except OSError:
            pass        # refused: the listener is closed, which is what a balancer sees too
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
        time.sleep(1.3)
        st, _, body = get(s.port, "/_sluice/status", headers=AUTH)
        check(st == 200, "status %d %r" % (st, body))
        j = json.loads(body)
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
            c = Conn(s.port, timeout=10)
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
        # the harness's start-up probe of /health already used one of the 5
        sts = [get(s.port, "/health")[0] for _ in range(6)]
        check(sts == [200] * 4 + [429] * 2, "statuses %r" % sts)
        st, h, body = get(s.port, "/health")
        check(h.get("retry-after") and json.loads(body)["policy"] == "monitoring", (h, body))
        check(get(s.port, "/ok")[0] == 200, "app routes are not in the monitoring policy")


if __name__ == "__main__":
    run_tests()
