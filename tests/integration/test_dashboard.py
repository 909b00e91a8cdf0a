"""test_dashboard.py: the admin dashboard (/_sluice/dashboard) in headless Chromium (issue 8).

Starts sluice with an admin token and a 1 s metrics interval, opens the dashboard with ?token= in
/usr/bin/chromium (driven by playwright-core, see tests/integration/browser/), generates load
from a thread (fast and slow routes, a few handler errors), and checks what a person would see:
the page goes live, every card shows a number, the request count goes up between two reads, the
p95 chart gets drawn (red pixels on the canvas), the handler errors are listed, and the page
logs no JavaScript errors. Without the token the page is not served.

A screenshot goes to $TMPDIR/sluice-test-dashboard.png; with --update-docs (or SLUICE_UPDATE_DOCS=1) also to
docs/images/dashboard.png.

Run: python3 tests/integration/test_dashboard.py [--update-docs]   (SLUICE_BIN overrides build/sluice)
"""
import os
import random
import shutil
import socket
import sys
import tempfile
import threading
import time
import http.client

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, "browser"))
from harness import ROOT, Server, check, get, run_tests, test  # noqa: E402
import nodeenv  # noqa: E402

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
}
'''
APP = r'''
local app = require "sluice"
app.get("/hello", function() return "hello world\n" end)
app.get("/work", function(req)              -- a handler that waits (a query, an API call...)
  app.sleep((tonumber(req.query.ms) or 5) / 1000)
  return { json = { ok = true } }
end)
app.get("/boom", function() error("the report generator fell over") end)
app.sse("/events/:room", function(req) return { channel = "room:" .. req.params.room } end)
'''


class Load(threading.Thread):
    """Requests in a loop until stopped: mostly fast, some slow, a few errors."""

    def __init__(self, port):
        super().__init__(daemon=True)
        self.port = port
        self.stop = False
        self.done = 0
        self.errors = []

    def run(self):
        conn = http.client.HTTPConnection(HOST, self.port, timeout=5)
        while not self.stop:
            r = random.random()
            busy = 1 + int(time.monotonic()) % 3          # slower and faster seconds: a p95 curve
            path = ("/hello" if r < 0.6 else "/work?ms=%d" % (busy * random.choice((2, 5, 10, 20))) if r < 0.99
                    else "/boom")
            try:
                conn.request("GET", path)
                conn.getresponse().read()
                self.done += 1
            except Exception as e:  # noqa: BLE001
                self.errors.append(repr(e))
                conn.close()
                conn = http.client.HTTPConnection(HOST, self.port, timeout=5)
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


@test
def dashboard_shows_live_numbers_and_the_p95_chart():
    fixture = tempfile.mkdtemp(prefix="sluice-dashboard-")
    for name, text in (("config.lua", CONFIG), ("app.lua", APP)):
        with open(os.path.join(fixture, name), "w") as f:
            f.write(text)
    load = br = None
    streams = []
    try:
        with Server(fixture, env={"FIX_ADMIN_TOKEN": TOKEN}) as srv:
            st, _, body = get(srv.port, "/_sluice/dashboard")
            check(st in (401, 403, 404) and b"<canvas" not in body, "the dashboard without a token: %d" % st)
            st, _, body = get(srv.port, "/_sluice/dashboard?token=wrong")
            check(st in (401, 403, 404) and b"<canvas" not in body, "the dashboard with a bad token: %d" % st)

            load = Load(srv.port)
            load.start()
            for i in range(3):                 # a few open streams for the "sse streams" card
                s = socket.create_connection((HOST, srv.port), timeout=5)
                s.sendall(b"GET /events/lobby HTTP/1.1\r\nHost: x\r\n\r\n")
                streams.append(s)

            br = nodeenv.Browser()
            st = br.goto("http://%s:%d/_sluice/dashboard?token=%s" % (HOST, srv.port, TOKEN))
            check(st == 200, "dashboard status %r" % st)
            br.wait("document.getElementById('state').textContent.startsWith('live')",
                    "the page to go live (its first /_sluice/status poll)", 10)
            labels = br.js("[...document.querySelectorAll('#cards .card .k')].map(e => e.textContent)")
            for want in ("connections", "requests", "5xx", "p50 ms", "p95 ms", "p99 ms", "sse streams", "rss MB"):
                check(want in labels, "card %r missing; cards: %r" % (want, labels))
            for k in labels:
                card(br, k)                    # every card shows a number
            r1 = card(br, "requests")
            time.sleep(2.3)                    # the page polls every 2 s
            br.wait("Number(document.getElementById('c-requests').textContent) > %d" % r1,
                    "the requests card to go up under load", 5)
            r2 = card(br, "requests")
            check(r2 > r1, "requests did not increase: %r -> %r" % (r1, r2))
            check(r2 - r1 < load.done + 1000, "requests jumped by %d with %d sent" % (r2 - r1, load.done))
            check(card(br, "sse streams") == 3, "sse streams card: %r (3 open)" % card(br, "sse streams"))
            check(card(br, "rss MB") > 1, "rss card: %r" % card(br, "rss MB"))

            # the p95 chart: look for its red line (the label is black, so red is only the line)
            br.wait("document.getElementById('chart') && true", "the chart canvas")
            deadline = time.monotonic() + 10
            red = 0
            while time.monotonic() < deadline:
                red = br.js("""(() => { const c = document.getElementById('chart');
                    const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
                    let n = 0; for (let i = 0; i < d.length; i += 4)
                      if (d[i + 3] > 0 && d[i] > 150 && d[i + 1] < 120 && d[i + 2] < 120) n++;
                    return n; })()""")
                if red > 200:
                    break
                time.sleep(0.5)
            check(red > 200, "the p95 line is not drawn on the chart (%d red pixels)" % red)
            label = br.js("(() => { const c = document.getElementById('chart').getContext('2d');"
                          "const d = c.getImageData(0, 0, 300, 16).data; let n = 0;"
                          "for (let i = 3; i < d.length; i += 4) if (d[i] > 0) n++; return n; })()")
            check(label > 20, "the chart's p95 label is not drawn")
            check(card(br, "p95 ms") >= 2, "p95 card %r with handlers sleeping 2..40 ms" % card(br, "p95 ms"))

            # handler errors from /boom are listed with their route
            br.wait("document.querySelectorAll('#errors tr').length > 1", "the last errors table", 8)
            row = br.js("document.querySelector('#errors tr:nth-child(2)').textContent")
            check("/boom" in row and "fell over" in row, "error row: %r" % row)

            # browsers ask for /favicon.ico by themselves; the page has none (a 404, not a script error)
            problems = [p for p in br.console_errors() if "favicon.ico" not in p]
            problems = [p for p in problems if not (p.startswith("console: Failed to load resource")
                                                    and any(q.endswith("/favicon.ico") for q in br.console_errors()))]
            check(not problems, "JavaScript or HTTP errors on the dashboard: %r" % problems)
            shot = SHOT
            br.screenshot(shot)
            check(os.path.getsize(shot) > 10000, "screenshot too small")
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
