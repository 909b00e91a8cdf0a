"""test_prometheus.py: deploy/prometheus and deploy/grafana, for real (issue 17).

- `promtool check config` on the scrape config, `promtool check rules` on alerts.yml and
  `promtool test rules` on alerts_test.yml; every alert has a `for:`, a runbook line and a unit
  test that makes it fire.
- Prometheus itself (the Debian package, on loopback in a temp dir, 1 s scrape interval) scrapes
  two sluice instances sharing PostgreSQL ($DATABASE_URL) and Redis under load (fast and slow
  routes, database queries, handler errors, rate-limited requests, SSE streams): the alert rules
  load, the dashboard's instance variable lists both instances, and every query of every panel
  of deploy/grafana/sluice.json returns data through Prometheus' HTTP API.

Run: DATABASE_URL=... python3 tests/integration/test_prometheus.py   (SLUICE_BIN overrides build/sluice)
"""
import http.client
import json
import os
import random
import shutil
import socket
import subprocess
import tempfile
import threading
import time
import urllib.parse
import urllib.request

import yaml

import harness
from harness import HOST, ROOT, RedisServer, Server, check, free_port, get, run_tests, test

harness.TEST_TIMEOUT = 180
PROM_DIR = os.path.join(ROOT, "deploy", "prometheus")
DASHBOARD = os.path.join(ROOT, "deploy", "grafana", "sluice.json")

CONFIG = r'''
return {
  workers = 2,
  scripts = { "app.lua" },
  log = { access = "off" },
  ratelimit = { limited = { limit = 2, window = 60, paths = { "/limited" } } },
  database = { url = os.getenv("FIX_DATABASE_URL") },
  redis = { url = os.getenv("FIX_REDIS_URL") },
}
'''
APP = r'''
local app = require "sluice"
app.get("/hello", function() return "hello world\n" end)
app.get("/slow", function(req) app.sleep((tonumber(req.query.ms) or 20) / 1000); return "slow\n" end)
app.get("/db", function() return { json = app.db.query("select 1 as one")[1] } end)
app.get("/boom", function() error("the report generator fell over") end)
app.get("/limited", function() return "ok\n" end)
app.sse("/events/:room", function(req) return { channel = "room:" .. req.params.room } end)
'''


def promtool(*args):
    return subprocess.run(["promtool"] + list(args), capture_output=True, text=True, timeout=60, cwd=PROM_DIR)


@test
def config_rules_and_rule_unit_tests_pass_promtool():
    p = promtool("check", "config", "prometheus.yml")
    check(p.returncode == 0, "check config: %s %s" % (p.stdout, p.stderr))
    p = promtool("check", "rules", "alerts.yml")
    check(p.returncode == 0 and "10 rules found" in p.stdout, "check rules: %s %s" % (p.stdout, p.stderr))
    p = promtool("test", "rules", "alerts_test.yml")
    check(p.returncode == 0 and "SUCCESS" in p.stdout, "test rules: %s %s" % (p.stdout, p.stderr))
    with open(os.path.join(PROM_DIR, "alerts.yml")) as f:
        rules = [r for g in yaml.safe_load(f)["groups"] for r in g["rules"]]
    with open(os.path.join(PROM_DIR, "alerts_test.yml")) as f:
        tests = yaml.safe_load(f)["tests"]
    fired = {a["alertname"] for t in tests for a in t["alert_rule_test"] if a["exp_alerts"]}
    quiet = {a["alertname"] for t in tests for a in t["alert_rule_test"] if not a["exp_alerts"]}
    for r in rules:
        name = r["alert"]
        check(r.get("for"), "%s has no for:" % name)
        check(r["annotations"].get("runbook") and r["annotations"].get("runbook_url"), "%s has no runbook line" % name)
        check(name in fired and name in quiet, "%s needs a firing and a quiet unit test" % name)
    wanted = {"SluiceMemoryHigh": "> 0.8", "SluiceCPUHigh": "> 0.7", "SluiceHighErrorRate": "> 0.01",
              "SluiceHighLatencyP95": "> 0.2", "SluiceDBPoolSaturated": "> 0.9", "SluiceSSENearCap": "> 0.9",
              "SluiceInstanceDown": "== 0", "SluiceNotReady": "== 0"}
    for name, thr in wanted.items():
        r = [r for r in rules if r["alert"] == name]
        check(r and thr in r[0]["expr"], "%s with the seed's threshold %s" % (name, thr))


class Load(threading.Thread):
    """Requests in a loop on both instances until stopped."""

    def __init__(self, ports):
        super().__init__(daemon=True)
        self.ports, self.stop, self.done, self.errors = ports, False, 0, []

    def run(self):
        conns = {p: http.client.HTTPConnection(HOST, p, timeout=60) for p in self.ports}
        paths = ["/hello"] * 6 + ["/db"] * 3 + ["/slow?ms=5", "/slow?ms=30", "/boom", "/limited", "/nope"]
        while not self.stop:
            p = random.choice(self.ports)
            try:
                conns[p].request("GET", random.choice(paths))
                conns[p].getresponse().read()
                self.done += 1
            except Exception as e:  # noqa: BLE001
                self.errors.append(repr(e))
                conns[p].close()
                conns[p] = http.client.HTTPConnection(HOST, p, timeout=60)
                time.sleep(0.05)
        for c in conns.values():
            c.close()


def prom_query(port, q):
    u = "http://%s:%d/api/v1/query?%s" % (HOST, port, urllib.parse.urlencode({"query": q}))
    with urllib.request.urlopen(u, timeout=10) as r:
        return json.loads(r.read())


def prom_get(port, path):
    with urllib.request.urlopen("http://%s:%d%s" % (HOST, port, path), timeout=10) as r:
        return json.loads(r.read())


def panel_queries():
    with open(DASHBOARD) as f:
        dash = json.load(f)
    out = []
    for p in dash["panels"]:
        for t in p.get("targets", []):
            q = t["expr"].replace("$instance", ".*").replace("$__rate_interval", "20s")
            out.append((p["title"], t.get("legendFormat", ""), q))
    return dash, out


@test
def prometheus_scrapes_sluice_and_every_dashboard_query_returns_data():
    db = os.environ.get("DATABASE_URL")
    check(db, "DATABASE_URL is required (tools/test sets it; tools/pg-dev start DIR prints one)")
    tmp = tempfile.mkdtemp(prefix="sluice-prom-")
    redis = RedisServer()
    prom = load = None
    streams = []
    try:
        app = os.path.join(tmp, "app")
        os.mkdir(app)
        for name, text in (("config.lua", CONFIG), ("app.lua", APP)):
            with open(os.path.join(app, name), "w") as f:
                f.write(text)
        redis.start()
        env = {"FIX_DATABASE_URL": db, "FIX_REDIS_URL": redis.url}
        with Server(app, env=env) as s1, Server(app, env=env) as s2:
            targets = ["%s:%d" % (HOST, s.port) for s in (s1, s2)]
            pport = free_port()
            with open(os.path.join(PROM_DIR, "prometheus.yml")) as f:
                pc = yaml.safe_load(f)
            pc["global"] = {"scrape_interval": "1s", "evaluation_interval": "1s"}
            pc["rule_files"] = [os.path.join(PROM_DIR, "alerts.yml")]
            pc["scrape_configs"][0]["static_configs"] = [{"targets": targets}]
            pc["scrape_configs"][0]["scrape_timeout"] = "1s"
            with open(os.path.join(tmp, "prometheus.yml"), "w") as f:
                yaml.safe_dump(pc, f)
            plog = open(os.path.join(tmp, "prometheus.log"), "w")
            prom = subprocess.Popen(["prometheus", "--config.file=" + os.path.join(tmp, "prometheus.yml"),
                                     "--storage.tsdb.path=" + os.path.join(tmp, "data"),
                                     "--web.listen-address=%s:%d" % (HOST, pport), "--log.level=warn"],
                                    stdout=plog, stderr=plog, stdin=subprocess.DEVNULL)
            deadline = time.monotonic() + 60
            while True:
                check(prom.poll() is None, "prometheus exited: " + open(os.path.join(tmp, "prometheus.log")).read()[-2000:])
                try:
                    with urllib.request.urlopen("http://%s:%d/-/ready" % (HOST, pport), timeout=2) as r:
                        if r.status == 200:
                            break
                except OSError:
                    pass
                check(time.monotonic() < deadline, "prometheus did not get ready")
                time.sleep(0.2)

            load = Load([s1.port, s2.port])
            load.start()
            for s in (s1, s2):
                for room in ("lobby", "ops"):
                    k = socket.create_connection((HOST, s.port), timeout=5)
                    k.sendall(("GET /events/%s HTTP/1.1\r\nHost: x\r\n\r\n" % room).encode())
                    streams.append(k)

            # the rules load and evaluate
            deadline = time.monotonic() + 60
            while True:
                groups = prom_get(pport, "/api/v1/rules")["data"]["groups"]
                rules = [r for g in groups for r in g["rules"]]
                if len(rules) == 10 and all(r.get("health") == "ok" and r.get("lastEvaluation", "").startswith("20")
                                            for r in rules):
                    break
                check(time.monotonic() < deadline, "alert rules not loaded/evaluated: %r" % rules[:2])
                time.sleep(0.5)

            # every panel query returns data (polling: rates need a few scrapes)
            dash, queries = panel_queries()
            check(len(queries) >= 30, "dashboard queries: %d" % len(queries))
            missing = queries
            deadline = time.monotonic() + 90
            while missing and time.monotonic() < deadline:
                left = []
                for title, legend, q in missing:
                    r = prom_query(pport, q)
                    check(r["status"] == "success", "%s: %s -> %r" % (title, q, r))
                    vals = [float(x["value"][1]) for x in r["data"]["result"]]
                    if not any(v == v for v in vals):        # no series, or only NaN (0/0, empty rates)
                        left.append((title, legend, q))
                missing = left
                if missing:
                    time.sleep(1)
            check(not missing, "panel queries without a number after 90 s: %s" % "\n".join("%s [%s]: %s" % m for m in missing))

            # per instance and all: the variable's query lists both instances, and the per-instance
            # series of a panel are one per instance
            var = [v for v in dash["templating"]["list"] if v["name"] == "instance"][0]
            match = var["definition"][len("label_values("):].rsplit(",", 1)[0]
            vals = prom_get(pport, "/api/v1/label/instance/values?" + urllib.parse.urlencode({"match[]": match}))["data"]
            check(sorted(vals) == sorted(targets), "instance variable values %r, want %r" % (vals, targets))
            q = 'sum by (instance) (rate(sluice_http_requests_total{job="sluice",instance=~".*"}[20s]))'
            deadline = time.monotonic() + 60        # each instance needs two scrapes in the window
            while True:
                r = prom_query(pport, q)
                if sorted(x["metric"]["instance"] for x in r["data"]["result"]) == sorted(targets):
                    break
                check(time.monotonic() < deadline, "request rate per instance: %r (up: %r)"
                      % (r, prom_query(pport, 'up{job="sluice"}')["data"]["result"]))
                time.sleep(0.5)
            deadline = time.monotonic() + 30        # the streams as both instances' latest scrapes see them
            while True:
                r = prom_query(pport, 'sum(sluice_sse_subscribers{job="sluice"})')
                if r["data"]["result"] and float(r["data"]["result"][0]["value"][1]) == 4:
                    break
                check(time.monotonic() < deadline, "4 streams over both instances: %r" % r)
                time.sleep(0.5)
            r = prom_query(pport, 'sum(sluice_db_pool_cap{job="sluice"})')
            check(float(r["data"]["result"][0]["value"][1]) > 0, "pool cap: %r" % r)
            check(not load.errors, "load errors: %r" % load.errors[:3])
    finally:
        if load:
            load.stop = True
            load.join(10)
        for k in streams:
            k.close()
        if prom and prom.poll() is None:
            prom.terminate()
            try:
                prom.wait(20)
            except subprocess.TimeoutExpired:
                prom.kill()
        redis.cleanup()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    run_tests()
