"""test_ops_metrics.py: metrics an operator can slice (issue 17).

- requests and latency by route *pattern*, method and status code: many ids, random 404 paths and
  300 registered routes give a bounded number of series, the rest under route="(overflow)";
  `promtool check metrics` clean;
- the database pool: acquire waits on conventional buckets (le="0.0005", ...), acquisitions,
  timeouts and errors as counters, against real PostgreSQL ($DATABASE_URL);
- memory and CPU against the cgroup's limits: sluice started inside a cgroup (v1 here, whatever
  the machine has; v2 files are covered by tests/unit/test_sysres.c) reports that cgroup's
  memory limit and CPU quota, and the machine's figures outside one;
- SSE: streams, subscribes, refusals by reason (per-user cap, the handler's own status), the cap.

Run: DATABASE_URL=... python3 tests/integration/test_ops_metrics.py [case names]
"""
import os
import random
import shutil
import socket
import subprocess
import tempfile
import threading
import time
import http.client

import harness
from harness import HOST, Server, SLUICE_BIN, check, get, metric, post, run_tests, test, wait_for

CONFIG = r'''
return {
  workers = 2,
  scripts = { "app.lua" },
  log = { access = "off" },
  ratelimit = false,
  database = { url = os.getenv("FIX_DATABASE_URL") },
  sse = { per_user = 1, max_connections = 500 },
}
'''
APP = r'''
local app = require "sluice"
app.get("/items/:id", function(req)
  if tonumber(req.params.id) % 2 == 0 then return { json = { id = req.params.id } } end
  return { status = 404, json = { error = "no such item" } }
end)
app.post("/items", function(req) return { status = 201, json = { ok = true } } end)
app.delete("/items/:id", function(req) return { status = 204 } end)
app.get("/teapot", function() return { status = 418, body = "short and stout\n" } end)
for i = 1, 300 do app.get("/r/" .. i, function() return "r\n" end) end
app.get("/burn", function()                  -- CPU for the resource ratios
  local x = 0
  for i = 1, 3e6 do x = x + i % 7 end
  return tostring(x)
end)
app.get("/db/sleep", function(req) return { json = app.db.query("select pg_sleep($1::float) as s", req.query.s or "0.5")[1] } end)
app.get("/db/bad", function() return { json = app.db.query("select * from no_such_table_ops") } end)
app.get("/db/ok", function() return { json = app.db.query("select 1 as one")[1] } end)
app.sse("/events/:room", function(req)
  if req.headers["x-user"] == "mallory" then return { status = 401 } end
  return { channel = "room:" .. req.params.room, user = req.headers["x-user"] }
end)
'''


def fixture(config=CONFIG):
    d = tempfile.mkdtemp(prefix="sluice-ops-metrics-")
    for name, text in (("config.lua", config), ("app.lua", APP)):
        with open(os.path.join(d, name), "w") as f:
            f.write(text)
    return d


def samples(port, family):
    """{labels-string: value} for every sample of a family (bucket/sum/count lines excluded)."""
    st, _, body = get(port, "/metrics")
    check(st == 200, "metrics %d" % st)
    out = {}
    for ln in body.decode().splitlines():
        if ln.startswith(family + "{"):
            labels, _, v = ln[len(family) + 1:].rpartition("} ")
            out[labels] = float(v)
    return out, body


def scrape(port):
    """{series: value} of one /metrics answer."""
    st, _, body = get(port, "/metrics")
    check(st == 200, "metrics %d" % st)
    return {ln.rpartition(" ")[0]: float(ln.rpartition(" ")[2]) for ln in body.decode().splitlines()
            if ln and not ln.startswith("#")}


def request(port, method, path, conn=None):
    c = conn or http.client.HTTPConnection(HOST, port, timeout=10)
    c.request(method, path)
    r = c.getresponse()
    r.read()
    return r.status


@test
def requests_by_route_pattern_method_and_code_with_bounded_labels():
    d = fixture()
    try:
        with Server(d) as s:
            c = http.client.HTTPConnection(HOST, s.port, timeout=10)
            for i in range(100):                                  # 100 raw paths, one pattern
                request(s.port, "GET", "/items/%d" % i, c)
            for i in range(7):
                check(request(s.port, "POST", "/items", c) == 201, "POST")
            for i in range(3):
                check(request(s.port, "DELETE", "/items/%d" % i, c) == 204, "DELETE")
            check(request(s.port, "GET", "/teapot", c) == 418, "418")
            for i in range(200):                                  # random paths nobody routes
                check(request(s.port, "GET", "/nope/%x" % random.getrandbits(64), c) == 404, "404")
            check(request(s.port, "PROPFIND", "/items/1", c) in (404, 405), "a method sluice does not route")
            n_r = 0
            for i in range(1, 301):                               # more patterns than RS_ROUTES allows
                check(request(s.port, "GET", "/r/%d" % i, c) == 200, "/r/%d" % i)
                n_r += 1
            c.close()
            req, body = samples(s.port, "sluice_http_requests_total")
            check(req['route="/items/:id",method="GET",code="200"'] == 50, req.get('route="/items/:id",method="GET",code="200"'))
            check(req['route="/items/:id",method="GET",code="404"'] == 50, "404s of the route, apart from its 200s")
            check(req['route="/items",method="POST",code="201"'] == 7, "POST 201")
            check(req['route="/items/:id",method="DELETE",code="204"'] == 3, "DELETE 204")
            check(req['route="/teapot",method="GET",code="418"'] == 1, "a status code, not only its class")
            check(req['route="(unmatched)",method="GET",code="404"'] == 200, "200 random paths are ONE series")
            check(any(k.startswith('route="(unmatched)",method="OTHER"') for k in req), "unknown methods are OTHER: %r"
                  % [k for k in req if "OTHER" in k])
            check(not any("/nope/" in k for k in req), "no raw path in a label")
            routes = {k.split('",method')[0] for k in req}
            check(len(routes) <= 256, "route label values are bounded: %d" % len(routes))
            over = sum(v for k, v in req.items() if k.startswith('route="(overflow)"'))
            rs = sum(v for k, v in req.items() if k.startswith('route="/r/'))
            check(over > 0 and over + rs == n_r, "every /r/N request counted once, the excess under (overflow): %d + %d"
                  % (rs, over))
            check(len(req) < 400, "series: %d" % len(req))
            hist, _ = samples(s.port, "sluice_http_request_duration_seconds_count")
            check(hist['route="/items/:id",method="GET"'] == 100, "the histogram is by route and method: %r"
                  % hist.get('route="/items/:id",method="GET"'))
            buckets, _ = samples(s.port, "sluice_http_request_duration_seconds_bucket")
            les = sorted({k.rpartition('le="')[2].rstrip('"') for k in buckets if k.startswith('route="/teapot"')},
                         key=lambda x: float("inf") if x == "+Inf" else float(x))
            check(les == ["0.0005", "0.001", "0.0025", "0.005", "0.01", "0.025", "0.05", "0.1", "0.2", "0.5", "1",
                          "2.5", "5", "10", "30", "+Inf"], "duration buckets: %r" % les)
            classes, _ = samples(s.port, "sluice_http_responses_total")
            check(classes['code="4xx"'] >= 251 and classes['code="2xx"'] >= 360, "classes kept: %r" % classes)
            p = subprocess.run(["promtool", "check", "metrics"], input=body, capture_output=True, timeout=30)
            check(p.returncode == 0, "promtool: %s %s" % (p.stdout, p.stderr))
    finally:
        shutil.rmtree(d, ignore_errors=True)


@test
def database_pool_waits_timeouts_and_errors():
    url = os.environ.get("DATABASE_URL")
    if not url:
        print("     skip: no DATABASE_URL")
        return
    sep = "&" if "?" in url else "?"
    cfg = CONFIG.replace("workers = 2", "workers = 1")
    d = fixture(cfg)
    try:
        with Server(d, env={"FIX_DATABASE_URL": url + sep + "connection_limit=1&pool_timeout=0.4"}) as s:
            # the first query also connects, which on a loaded machine can take longer than the
            # 0.4 s pool_timeout (a 503): wait until one succeeds, then count from there
            wait_for(lambda: get(s.port, "/db/ok")[0] == 200, what="a first query (the pool's connection)")
            acq0 = metric(s.port, 'sluice_db_pool_acquired_total{worker="0"}')
            tmo0 = metric(s.port, 'sluice_db_pool_timeouts_total{worker="0"}')
            b0, _ = samples(s.port, "sluice_db_pool_wait_duration_seconds_bucket")
            holder = threading.Thread(target=lambda: get(s.port, "/db/sleep?s=1.5", timeout=10))
            holder.start()
            wait_for(lambda: metric(s.port, 'sluice_db_pool_connections{worker="0",state="in_use"}') == 1, 5, "the slow query")
            st, _, body = get(s.port, "/db/ok")             # waits pool_timeout for the only connection
            check(st == 503 and b"pool timeout" in body, "the second query times out: %r %r" % (st, body))
            holder.join(10)
            check(get(s.port, "/db/bad")[0] == 500, "a bad query")
            check(metric(s.port, 'sluice_db_pool_timeouts_total{worker="0"}') == tmo0 + 1, "one timeout counted")
            check(metric(s.port, 'sluice_db_pool_errors_total{worker="0"}') >= 1, "the SQL error counted")
            check(metric(s.port, 'sluice_db_pool_acquired_total{worker="0"}') >= acq0 + 2, "acquisitions counted")
            b, body = samples(s.port, "sluice_db_pool_wait_duration_seconds_bucket")
            les = [k.rpartition('le="')[2].rstrip('"') for k in b]
            check(les == ["0.0005", "0.001", "0.0025", "0.005", "0.01", "0.025", "0.05", "0.1", "0.25", "0.5", "1",
                          "2.5", "5", "10", "20", "30", "+Inf"], "conventional bounds, not bucket edges: %r" % les)
            d = {k: b[k] - b0.get(k, 0) for k in b}      # since the first query: holder, timeout, bad
            # exactly one wait over 0.25 s, the 0.4 s pool_timeout (late by up to several seconds
            # on a loaded machine, never early)
            check(d['worker="0",le="+Inf"'] >= 3 and d['worker="0",le="+Inf"'] - d['worker="0",le="0.25"'] == 1
                  and d['worker="0",le="10"'] == d['worker="0",le="+Inf"'],
                  "the 0.4 s timeout wait lies in (0.25, 10], the others under it: %r" % d)
            check(d['worker="0",le="0.05"'] >= 2, "immediate acquires in the low buckets: %r" % d)
            p = subprocess.run(["promtool", "check", "metrics"], input=body, capture_output=True, timeout=30)
            check(p.returncode == 0, "promtool: %s %s" % (p.stdout, p.stderr))
    finally:
        shutil.rmtree(d, ignore_errors=True)


def meminfo_total():
    with open("/proc/meminfo") as f:
        for ln in f:
            if ln.startswith("MemTotal:"):
                return int(ln.split()[1]) * 1024
    return 0


def burn(port, secs):
    t = time.monotonic()
    c = http.client.HTTPConnection(HOST, port, timeout=30)
    while time.monotonic() - t < secs:
        request(port, "GET", "/burn", c)
    c.close()


@test
def memory_and_cpu_against_the_machine_without_a_cgroup_limit():
    d = fixture()
    try:
        with Server(d) as s:
            m, _ = samples(s.port, "sluice_memory_limit_bytes")
            cores, _ = samples(s.port, "sluice_cpu_limit_cores")
            # this machine's own cgroup may limit us; then the source says so and the unit tests cover it
            if 'source="machine"' in m:
                check(m['source="machine"'] == meminfo_total(), "MemTotal: %r" % m)
            if 'source="machine"' in cores:
                check(cores['source="machine"'] == len(os.sched_getaffinity(0)), "nproc: %r" % cores)
            one = scrape(s.port)
            rss, ratio = one["sluice_process_resident_memory_bytes"], one["sluice_memory_used_ratio"]
            lim = list(m.values())[0]
            check(abs(ratio - rss / lim) < 0.01 * rss / lim + 1e-6, "ratio %g = rss %g / limit %g" % (ratio, rss, lim))
    finally:
        shutil.rmtree(d, ignore_errors=True)


V1 = "/sys/fs/cgroup"


@test
def memory_and_cpu_against_the_cgroup_the_server_runs_in():
    name = "sluice-ops-test-%d" % os.getpid()
    mem, cpu = os.path.join(V1, "memory", name), os.path.join(V1, "cpu", name)
    v2 = os.path.exists(os.path.join(V1, "cgroup.controllers"))
    try:
        if v2:
            os.mkdir(os.path.join(V1, name))
            mem = cpu = os.path.join(V1, name)
            with open(os.path.join(mem, "memory.max"), "w") as f:
                f.write("536870912")
            with open(os.path.join(cpu, "cpu.max"), "w") as f:
                f.write("50000 100000")
        else:
            os.mkdir(mem)
            os.mkdir(cpu)
            with open(os.path.join(mem, "memory.limit_in_bytes"), "w") as f:
                f.write("536870912")
            with open(os.path.join(cpu, "cpu.cfs_quota_us"), "w") as f:
                f.write("50000")
    except OSError as e:
        print("     skip: cannot make a cgroup here (%s)" % e)
        return
    d = fixture()
    try:
        # the server joins the cgroup before it starts: a wrapper moves itself there, then execs sluice
        wrapper = os.path.join(d, "in-cgroup.sh")
        with open(wrapper, "w") as f:
            f.write('#!/bin/sh\necho $$ > %s/cgroup.procs\n%sexec "%s" "$@"\n'
                    % (mem, "" if v2 else "echo $$ > %s/cgroup.procs\n" % cpu, SLUICE_BIN))
        os.chmod(wrapper, 0o755)
        harness.SLUICE_BIN = wrapper          # Server() starts whatever harness.SLUICE_BIN names
        try:
            with Server(d) as s:
                harness.SLUICE_BIN = SLUICE_BIN
                m, _ = samples(s.port, "sluice_memory_limit_bytes")
                check(m == {'source="cgroup"': 536870912}, "memory limit from the cgroup: %r" % m)
                cores, _ = samples(s.port, "sluice_cpu_limit_cores")
                check(cores == {'source="cgroup"': 0.5}, "CPU quota 50000/100000: %r" % cores)
                one = scrape(s.port)                  # both figures from one scrape
                check(abs(one["sluice_memory_used_ratio"] - one["sluice_process_resident_memory_bytes"] / 536870912) < 1e-5,
                      "RSS / memory limit: %r" % one)
                # CPU-bound requests: the process uses up to its half core, a ratio near 1 of its limit
                threads = [threading.Thread(target=burn, args=(s.port, 4)) for _ in range(2)]
                for t in threads:
                    t.start()
                for t in threads:
                    t.join()
                two = scrape(s.port)
                r = two["sluice_cpu_used_ratio"]
                # how much of its half core the process had depends on the machine's load: compare
                # with its own CPU time over the ratio's 10 s window (the process is that young, or
                # the burn sits inside it). Against the machine's 2 cores it would be 4x too small.
                cpu_s, up = two["sluice_process_cpu_seconds_total"], two["sluice_uptime_seconds"]
                want = cpu_s / (min(up, 10.0) * 0.5)
                print("     cpu_used_ratio under load, quota 0.5 core: %.2f (its CPU time says %.2f)" % (r, want), flush=True)
                check(want / 2.5 - 0.05 <= r < 1.5, "CPU ratio against a 0.5-core quota under load: %.2f, its "
                      "CPU time (%.2f s in %.1f s) gives %.2f" % (r, cpu_s, up, want))
                st, _, body = get(s.port, "/_sluice/status")
                check(b'"source":"cgroup"' in body and b'"limit_bytes":536870912' in body, body[:600])
        finally:
            harness.SLUICE_BIN = SLUICE_BIN
    finally:
        shutil.rmtree(d, ignore_errors=True)
        for p in {mem, cpu}:
            for _ in range(50):
                try:
                    os.rmdir(p)
                    break
                except OSError:
                    time.sleep(0.1)


class Stream:
    def __init__(self, port, path, user=None):
        self.sock = socket.create_connection((HOST, port), timeout=5)
        h = "X-User: %s\r\n" % user if user else ""
        self.sock.sendall(("GET %s HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\n%s\r\n" % (path, h)).encode())
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = self.sock.recv(4096)
            if not chunk:
                break
            data += chunk
        self.status = int(data.split(b" ", 2)[1]) if data else 0

    def close(self):
        self.sock.close()


@test
def sse_streams_subscribes_and_refusals_by_reason():
    d = fixture()
    streams = []
    try:
        with Server(d) as s:
            check(metric(s.port, "sluice_sse_capacity") == 500, "the cap is exported")
            a = Stream(s.port, "/events/lobby", "alice")
            streams.append(a)
            check(a.status == 200, "alice's stream %d" % a.status)
            b = Stream(s.port, "/events/lobby", "alice")          # per_user = 1
            streams.append(b)
            check(b.status == 429, "alice's second stream is refused: %d" % b.status)
            m = Stream(s.port, "/events/lobby", "mallory")         # the handler says 401
            streams.append(m)
            check(m.status == 401, "mallory %d" % m.status)
            wait_for(lambda: metric(s.port, "sluice_sse_subscribers") == 1, 5, "one open stream")
            check(metric(s.port, "sluice_sse_subscribes_total") == 1, "one admitted")
            ref, body = samples(s.port, "sluice_sse_refused_total")
            check(ref == {'reason="total_cap"': 0, 'reason="user_cap"': 1, 'reason="channel_cap"': 0, 'reason="handler"': 1},
                  "refusals by reason: %r" % ref)
            req, _ = samples(s.port, "sluice_http_requests_total")
            check(req.get('route="/events/:room",method="GET",code="429"') == 1 and
                  req.get('route="/events/:room",method="GET",code="401"') == 1 and
                  req.get('route="/events/:room",method="GET",code="200"') == 1, "stream requests by route and code: %r"
                  % {k: v for k, v in req.items() if "events" in k})
            p = subprocess.run(["promtool", "check", "metrics"], input=body, capture_output=True, timeout=30)
            check(p.returncode == 0, "promtool: %s %s" % (p.stdout, p.stderr))
    finally:
        for x in streams:
            x.close()
        shutil.rmtree(d, ignore_errors=True)


if __name__ == "__main__":
    run_tests()
