"""test_dashboard.py: the admin dashboard (/_sluice/dashboard) in headless Chromium (issues 8, 17).

Starts sluice with an admin token, a 1 s metrics interval and PostgreSQL ($DATABASE_URL), opens
the dashboard with ?token= in /usr/bin/chromium (driven by playwright-core, see
tests/integration/browser/), generates load from a thread (fast, slow and database routes, a few
handler errors, three SSE streams) and checks what a person would see: the page goes live, every
card shows a number that goes up under load, and each chart (request rate, error rate,
p50/p95/p99, connections and streams, memory and CPU against their limits, the database pool)
is drawn on a sane axis: its top at or above the largest value drawn and at most ~1.7x it (so a
14 ms p95 is never drawn against "max 1.00"), the latest p95 equal to the card beside it, memory
and CPU on a fixed 0-100 % axis, the streams and the pool's cap what the server reports. Handler
errors are listed; the page logs no JavaScript errors. Without the token the page is not served.

A screenshot goes to $TMPDIR/sluice-test-dashboard.png; with --update-docs (or SLUICE_UPDATE_DOCS=1)
also to docs/images/dashboard.png.

Run: DATABASE_URL=... python3 tests/integration/test_dashboard.py [--update-docs]
"""
import http.client
import json
import os
import random
import shutil
import socket
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, "browser"))
import harness  # noqa: E402
from harness import ROOT, Server, check, get, run_tests, test  # noqa: E402
import nodeenv  # noqa: E402

# Timing (issue 23): Chromium on a loaded machine is slow to start and to answer, so every wait
# below only bounds a failure (WAIT s); values the page shows together are read in one evaluation
# (a poll every 2 s could land between two reads), and a value that needs live load in a given
# moment (a rate, a busy pool connection) is waited for, not sampled once.
harness.TEST_TIMEOUT = max(harness.TEST_TIMEOUT, 400)
WAIT = 90
# everything the checks read from one poll's drawing, as one JSON string
SEEN = ("JSON.stringify({charts: window.sluiceCharts, p95: document.getElementById('c-p95 ms').textContent, "
        "streams: document.getElementById('c-sse streams').textContent, "
        "legend: document.querySelector('#ch-latency .legend [data-series=p95] b').textContent})")
HOST = "127.0.0.1"
TOKEN = "dash-%d" % os.getpid()
UPDATE_DOCS = "--update-docs" in sys.argv or os.environ.get("SLUICE_UPDATE_DOCS") == "1"
DOCS_PNG = os.path.join(ROOT, "docs", "images", "dashboard.png")
SHOT = os.path.join(tempfile.gettempdir(), "sluice-test-dashboard.png")     # overwritten by every run

CONFIG = r'''
return {
  workers = 2,
  scripts = { "app.lua" },
  log = { access = "off" },
  ratelimit = false,
  admin = { token = os.getenv("FIX_ADMIN_TOKEN") },
  metrics = { interval = 1, retention = 100 },
  sse = { heartbeat = 5 },
  database = { url = os.getenv("FIX_DATABASE_URL") },
}
'''
APP = r'''
local app = require "sluice"
app.get("/hello", function() return "hello world\n" end)
app.get("/work", function(req)              -- a handler that waits (an API call...)
  app.sleep((tonumber(req.query.ms) or 5) / 1000)
  return { json = { ok = true } }
end)
app.get("/db", function(req)                 -- holds a pool connection for a moment
  return { json = app.db.query("select pg_sleep($1::float) as s", (tonumber(req.query.ms) or 5) / 1000)[1] }
end)
app.get("/boom", function() error("the report generator fell over") end)
app.sse("/events/:room", function(req) return { channel = "room:" .. req.params.room } end)
'''


class Load(threading.Thread):
    """Requests in a loop until stopped: mostly fast, some slow, database queries, a few errors."""

    def __init__(self, port):
        super().__init__(daemon=True)
        self.port = port
        self.stop = False
        self.done = 0
        self.errors = []

    def run(self):
        conn = http.client.HTTPConnection(HOST, self.port, timeout=60)
        while not self.stop:
            r = random.random()
            busy = 1 + int(time.monotonic()) % 3          # slower and faster seconds: a latency curve
            if r < 0.55:
                path = "/hello"
            elif r < 0.8:
                path = "/work?ms=%d" % (busy * random.choice((2, 5, 10, 20)))
            elif r < 0.98:
                path = "/db?ms=%d" % random.choice((1, 5, 20))
            else:
                path = "/boom"
            try:
                conn.request("GET", path)
                conn.getresponse().read()
                self.done += 1
            except Exception as e:  # noqa: BLE001
                self.errors.append(repr(e))
                conn.close()
                conn = http.client.HTTPConnection(HOST, self.port, timeout=60)
                time.sleep(0.05)
        conn.close()


def card(br, name):
    """The number shown on a card (the dashboard's ids are c-<label>)."""
    text = br.js("(document.getElementById(%r) || {}).textContent ?? null" % ("c-" + name))
    check(text is not None, "no card %r on the page" % name)
    try:
        return float(text)
    except ValueError:
        raise AssertionError("card %r shows %r, not a number" % (name, text))


def colored_pixels(br, chart, color):
    """Pixels of a series' colour on a chart's canvas (the line is drawn)."""
    r, g, b = int(color[1:3], 16), int(color[3:5], 16), int(color[5:7], 16)
    return br.js("""(() => { const c = document.querySelector('#ch-%s canvas');
        const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data; let n = 0;
        for (let i = 0; i < d.length; i += 4)
          if (d[i + 3] > 200 && Math.abs(d[i] - %d) < 40 && Math.abs(d[i + 1] - %d) < 40 && Math.abs(d[i + 2] - %d) < 40) n++;
        return n; })()""" % (chart, r, g, b))


@test
def dashboard_charts_show_live_figures_on_sane_axes():
    db = os.environ.get("DATABASE_URL")
    check(db, "DATABASE_URL is required (tools/test sets it; tools/pg-dev start DIR prints one)")
    fixture = tempfile.mkdtemp(prefix="sluice-dashboard-")
    for name, text in (("config.lua", CONFIG), ("app.lua", APP)):
        with open(os.path.join(fixture, name), "w") as f:
            f.write(text)
    load = br = None
    streams = []
    try:
        with Server(fixture, env={"FIX_ADMIN_TOKEN": TOKEN, "FIX_DATABASE_URL": db}) as srv:
            st, _, body = get(srv.port, "/_sluice/dashboard")
            check(st in (401, 403, 404) and b"<canvas" not in body, "the dashboard without a token: %d" % st)
            st, _, body = get(srv.port, "/_sluice/dashboard?token=wrong")
            check(st in (401, 403, 404) and b"<canvas" not in body, "the dashboard with a bad token: %d" % st)

            load = Load(srv.port)
            load.start()
            for i in range(3):                 # three open streams for the "streams" series and card
                s = socket.create_connection((HOST, srv.port), timeout=harness.TIMEOUT)
                streams.append(s)
                s.sendall(b"GET /events/lobby HTTP/1.1\r\nHost: x\r\n\r\n")
                head = b""
                while b"\r\n\r\n" not in head:   # admitted: the server counts it from here on
                    chunk = s.recv(4096)
                    check(chunk, "stream %d closed before its head: %r" % (i, head))
                    head += chunk
                check(head.startswith(b"HTTP/1.1 200 ") and b"text/event-stream" in head, "stream %d: %r" % (i, head))

            br = nodeenv.Browser(start_timeout=WAIT + 30)
            st = br.goto("http://%s:%d/_sluice/dashboard?token=%s" % (HOST, srv.port, TOKEN))
            check(st == 200, "dashboard status %r" % st)
            br.wait("document.getElementById('state').textContent.startsWith('live')",
                    "the page to go live (its first /_sluice/status poll)", WAIT)
            labels = br.js("[...document.querySelectorAll('#cards .card .k')].map(e => e.textContent)")
            for want in ("connections", "requests", "5xx", "p50 ms", "p95 ms", "p99 ms", "sse streams", "rss MB"):
                check(want in labels, "card %r missing; cards: %r" % (want, labels))
            for k in labels:
                card(br, k)                    # every card shows a number
            r1 = card(br, "requests")
            br.wait("Number(document.getElementById('c-requests').textContent) > %d" % r1,
                    "the requests card to go up under load", WAIT)
            r2 = card(br, "requests")
            check(r2 - r1 < load.done + 1000, "requests jumped by %d with %d sent" % (r2 - r1, load.done))

            # a few snapshots (one per second here), with errors and pool use among them; the latest
            # point (the page's live one) with the 3 streams, their connections and the load's rate
            # (the wait keeps what it saw: the charts, the cards and the p95 legend as one poll drew them)
            br.wait("(window.sluiceCharts.rate && window.sluiceCharts.rate.points >= 6 && "
                    "window.sluiceCharts.errors.dataMax > 0 && window.sluiceCharts.pool.max['in use'] >= 1 && "
                    "window.sluiceCharts.conns.last.streams === 3 && window.sluiceCharts.conns.last.connections >= 4 && "
                    "window.sluiceCharts.rate.last['req/s'] > 1) && (window.testSeen = " + SEEN + ")",
                    "six points per chart, a 5xx, a busy pool connection, 3 streams and a live request rate", WAIT)
            seen = json.loads(br.js("window.testSeen"))
            charts = seen["charts"]
            for cid in ("rate", "errors", "latency", "conns", "resources", "pool"):
                check(cid in charts, "chart %s missing: %r" % (cid, list(charts)))
                c = charts[cid]
                check(c["axisMax"] >= c["dataMax"] > 0 or cid == "errors" and c["axisMax"] >= c["dataMax"],
                      "%s: the axis (0..%g) holds every value drawn (max %g)" % (cid, c["axisMax"], c["dataMax"]))
                check(c["ticks"][0] == 0 and c["ticks"][-1] == c["axisMax"] and 3 <= len(c["ticks"]) <= 7,
                      "%s: ticks from 0 to the top: %r" % (cid, c["ticks"]))
                if cid != "resources":
                    floor = {"errors": 0.02, "conns": 4, "pool": 1}.get(cid, 0)
                    check(c["axisMax"] <= 1.7 * max(c["dataMax"], floor) + 1e-9,
                          "%s: the axis (0..%g) is not squashed against the data (max %g)" % (cid, c["axisMax"], c["dataMax"]))
                # resources: memory as a fraction of the machine's 24 GiB sits on the zero line, where
                # the axis can cover it; then the CPU series shows the chart draws its data
                colors = c["colors"][:1] if cid != "resources" else c["colors"]
                px = sum(colored_pixels(br, cid, col) for col in colors)
                check(px > 30, "%s: its series are drawn (%d pixels of %s)" % (cid, px, colors))

            # the regression: the p95 beside the chart is on the chart, and under its top
            p95_card = float(seen["p95"])
            lat = charts["latency"]
            check(abs(lat["last"]["p95"] - p95_card) < 0.006, "latest p95 on the chart %r vs the card %r" % (lat["last"], p95_card))
            check(lat["axisMax"] >= p95_card and lat["axisMax"] >= lat["last"]["p99"], "p95 %g / p99 %g under the axis top %g"
                  % (p95_card, lat["last"]["p99"], lat["axisMax"]))
            check(p95_card >= 1, "p95 card %r with handlers sleeping 2..60 ms" % p95_card)
            shown = seen["legend"]
            check(shown.endswith(" ms") and abs(float(shown[:-3]) - lat["last"]["p95"]) <= 0.051, "legend %r" % shown)

            # memory and CPU against their limits: a fixed 0-100 % axis, the limit named
            res = charts["resources"]
            check(res["axisMax"] == 1 and res["ticks"] == [0, 0.2, 0.4, 0.6, 0.8, 1], "resources axis %r" % res["ticks"])
            st, _, body = get(srv.port, "/_sluice/status", headers={"Authorization": "Bearer " + TOKEN})
            status = json.loads(body)
            check(0 < res["last"]["memory"] < 1 and abs(res["last"]["memory"] - status["memory"]["ratio"]) < 0.01,
                  "memory share %r vs the server's %r" % (res["last"], status["memory"]))
            check(status["memory"]["source"] in res["note"] and "RSS" in res["note"], "resources note: %r" % res["note"])
            check(0 <= res["last"]["cpu"] <= 1.5, "cpu share %r" % res["last"])

            # connections and streams, the pool: what the server reports
            conns = charts["conns"]
            check(conns["last"]["streams"] == 3, "streams series %r (3 open)" % conns["last"])
            check(conns["last"]["connections"] >= 4, "connections %r: 3 streams + the load + the page" % conns["last"])
            check("11000 connections" in conns["note"] and "10000 streams" in conns["note"], conns["note"])
            check(float(seen["streams"]) == 3, "sse streams card: %r (3 open)" % seen["streams"])
            pool = charts["pool"]
            check(pool["last"]["cap"] == status["db"]["cap"] > 0, "pool cap %r vs %r" % (pool["last"], status["db"]))
            check(pool["axisMax"] >= pool["last"]["cap"], "the cap is inside the pool chart's axis")
            rate = charts["rate"]
            check(rate["last"]["req/s"] > 1, "request rate %r under load" % rate["last"])

            # handler errors from /boom are listed with their route
            br.wait("document.querySelectorAll('#errors tr').length > 1", "the last errors table", WAIT)
            row = br.js("document.querySelector('#errors tr:nth-child(2)').textContent")
            check("/boom" in row and "fell over" in row, "error row: %r" % row)

            # browsers ask for /favicon.ico by themselves; the page has none (a 404, not a script error)
            problems = [p for p in br.console_errors() if "favicon.ico" not in p]
            problems = [p for p in problems if not (p.startswith("console: Failed to load resource")
                                                    and any(q.endswith("/favicon.ico") for q in br.console_errors()))]
            check(not problems, "JavaScript or HTTP errors on the dashboard: %r" % problems)
            shot = SHOT
            br.screenshot(shot, full=True)
            check(os.path.getsize(shot) > 20000, "screenshot too small")
            print("# screenshot: %s" % shot, flush=True)
            if UPDATE_DOCS:
                os.makedirs(os.path.dirname(DOCS_PNG), exist_ok=True)
                shutil.copyfile(shot, DOCS_PNG)
                print("# updated %s" % os.path.relpath(DOCS_PNG, ROOT), flush=True)
            check(not load.errors, "load generator errors: %r" % load.errors[:3])
            load.stop = True
            load.join(5)
            for s in streams:
                s.close()
    finally:
        if load:
            load.stop = True
        if br:
            br.close()
        for s in streams:
            s.close()
        shutil.rmtree(fixture, ignore_errors=True)


if __name__ == "__main__":
    try:
        reason = nodeenv.ensure_modules()
    except Exception as e:  # noqa: BLE001
        print("FAIL npm install: %s" % e)
        sys.exit(1)
    if reason:
        print("skip: " + reason)
        print("0 passed, 0 failed")
        sys.exit(0)
    if not os.access(nodeenv.CHROMIUM, os.X_OK):
        print("skip: %s not found (apt-get install chromium)" % nodeenv.CHROMIUM)
        print("0 passed, 0 failed")
        sys.exit(0)
    run_tests()
