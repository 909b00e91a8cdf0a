"""test_scaffold.py: `sluice new DIR` makes a project that checks, passes its specs, serves and
migrates at once; `sluice routes` prints the route table with file:line and rate-limit policies
(issue 18). The database step runs when DATABASE_URL is set (tools/test sets it)."""
import os
import re
import shutil
import subprocess
import tempfile

from harness import SLUICE_BIN, Server, check, get, post, run_tests, test

DATABASE_URL = os.environ.get("DATABASE_URL")


def sluice(cwd, *args, env_extra=None, db=False, timeout=60):
    env = dict(os.environ)
    env.pop("DATABASE_URL", None)
    if db:
        env["DATABASE_URL"] = DATABASE_URL
    env.update(env_extra or {})
    return subprocess.run([SLUICE_BIN, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


FILES = ["config.lua", "scripts/app.lua", "templates/index.html", "tests/app_spec.lua", "migrations/001_init.sql", ".gitignore"]


@test
def new_project_runs_and_its_specs_pass():
    top = tempfile.mkdtemp(prefix="sluice-scaffold-")
    try:
        r = sluice(top, "new", "myapp")
        check(r.returncode == 0, r.stderr)
        d = os.path.join(top, "myapp")
        for f in FILES:
            check(os.path.isfile(os.path.join(d, f)), "created " + f)
        check("created myapp/: " in r.stdout and "sluice test" in r.stdout, r.stdout)
        r = sluice(d, "check")
        check(r.returncode == 0 and "config.lua: ok (1 script" in r.stdout, r.stdout + r.stderr)
        r = sluice(d, "test")
        check(r.returncode == 0, r.stdout + r.stderr)
        check(r.stdout.strip().splitlines()[-1] == "2 passed, 0 failed", r.stdout)
        if DATABASE_URL:        # and the same with a database configured
            r = sluice(d, "test", db=True)
            check(r.returncode == 0 and r.stdout.strip().endswith("2 passed, 0 failed"), r.stdout + r.stderr)
        with Server(d, env={"DATABASE_URL": ""}) as srv:
            st, h, body = get(srv.port, "/?name=Ada")
            check(st == 200 and h["content-type"] == "text/html; charset=utf-8" and b"<h1>Hello, Ada!</h1>" in body, body)
            st, _, body = post(srv.port, "/echo", b'{"x":1}', {"Content-Type": "application/json"})
            check(st == 201 and b'"echo":{"x":1}' in body, body)
            st, _, body = get(srv.port, "/notes")
            check(st == 503 and b"set DATABASE_URL" in body, body)
        r = sluice(top, "new", "myapp")
        check(r.returncode == 1 and "exists and is not empty" in r.stderr, "never overwrites: " + r.stderr)
        r = sluice(top, "new")
        check(r.returncode == 2 and "usage: sluice new DIR" in r.stderr, r.stderr)
    finally:
        shutil.rmtree(top)


@test
def new_project_migrates_and_reads_its_table():
    if not DATABASE_URL:
        print("     (skipped: no DATABASE_URL)")
        return
    top = tempfile.mkdtemp(prefix="sluice-scaffold-db-")
    db = "scaffold_%d" % os.getpid()
    base = DATABASE_URL.split("?")[0]
    url = re.sub(r"/[^/]*$", "/" + db, base)
    subprocess.run(["psql", base, "-qc", "drop database if exists %s with (force)" % db], capture_output=True, timeout=30)
    r = subprocess.run(["psql", base, "-qc", "create database %s" % db], capture_output=True, text=True, timeout=30)
    check(r.returncode == 0, r.stderr)
    try:
        check(sluice(top, "new", "app").returncode == 0, "scaffold")
        d = os.path.join(top, "app")
        r = sluice(d, "migrate", env_extra={"DATABASE_URL": url})
        check(r.returncode == 0 and "applied  001_init.sql" in r.stdout, r.stdout + r.stderr)
        r = sluice(d, "migrate", "new", "add tags")
        check(r.returncode == 0 and "002_add_tags.sql" in r.stdout, r.stdout + r.stderr)
        with Server(d, env={"DATABASE_URL": url}) as srv:
            st, _, body = get(srv.port, "/notes")
            check(st == 200 and body == b"[]", "%d %r" % (st, body))
    finally:
        shutil.rmtree(top)
        subprocess.run(["psql", base, "-qc", "drop database if exists %s with (force)" % db], capture_output=True, timeout=30)


ROUTES_APP = '''local app = require "sluice"
app.get("/", function() return "home" end)
app.post("/api/login", function() return "in" end)
app.get("/api/items/:id", function() return "item" end)
app.route("*", "/api/any", function() return "any" end)
app.sse("/events/:room", function() return { channel = "r" } end)
app.static("/assets", "public")
app.get("/health", function() return "never" end)
'''

ROUTES_CONFIG = '''return {
  scripts = { "app.lua" },
  ratelimit = {
    api = { limit = 1000, window = 900, paths = { "/" } },
    login = { limit = 10, window = 60, paths = { "/api/login" }, methods = { "POST" } },
    special = { limit = 5, window = 10, burst = 2, key = "header:x-key", paths = { "/api/items/special" } },
    monitoring = { limit = 300, window = 60, paths = { "/metrics", "/health", "/ready" } },
  },
}
'''


@test
def routes_prints_the_table_with_lines_and_policies():
    d = tempfile.mkdtemp(prefix="sluice-routes-")
    try:
        os.mkdir(os.path.join(d, "public"))
        with open(os.path.join(d, "app.lua"), "w") as f:
            f.write(ROUTES_APP)
        with open(os.path.join(d, "config.lua"), "w") as f:
            f.write(ROUTES_CONFIG)
        r = sluice(d, "routes")
        check(r.returncode == 0, r.stderr)
        rows = [re.split(r"\s{2,}", l.strip()) for l in r.stdout.splitlines() if l.strip()]
        check(rows[0] == ["METHOD", "PATH", "DEFINED AT", "RATE LIMIT"], r.stdout)
        want = [
            ["GET", "/", "app.lua:2", "api (1000 per 900 s by ip)"],
            ["POST", "/api/login", "app.lua:3", "login (10 per 60 s by ip)"],
            ["GET", "/api/items/:id", "app.lua:4", "api (1000 per 900 s by ip); /api/items/special: special"],
            ["*", "/api/any", "app.lua:5", "api (1000 per 900 s by ip)"],
            ["SSE", "/events/:room", "app.lua:6", "never counted (SSE stream)"],
            ["GET", "/assets/*", "app.lua:7", "api (1000 per 900 s by ip)", "[static files from public/]"],
            ["GET", "/health", "app.lua:8", "monitoring (300 per 60 s by ip)", "[never reached: a built-in endpoint has this path]"],
        ]
        for i, w in enumerate(want):
            check(rows[1 + i] == w, "row %d: %r, want %r\n%s" % (i + 1, rows[1 + i], w, r.stdout))
        check(["GET", "/metrics", "built in", "monitoring (300 per 60 s by ip)"] in rows, r.stdout)
        check(["GET", "/_sluice/", "built in (admin)", "api (1000 per 900 s by ip)"] in rows, r.stdout)
        with open(os.path.join(d, "config.lua"), "w") as f:
            f.write(ROUTES_CONFIG.replace('paths = { "/api/items/special" }', 'paths = { "/api/items" }'))
        r = sluice(d, "routes")
        check("special (5 per 10 s by header:x-key, burst 2)" in r.stdout, "a key and burst are shown: " + r.stdout)
        with open(os.path.join(d, "app.lua"), "a") as f:
            f.write('app.get("/", function() end)\n')
        r = sluice(d, "routes")
        check(r.returncode == 1 and "app.lua:9: duplicate route GET /" in r.stderr, "load errors as in check: " + r.stderr)
    finally:
        shutil.rmtree(d)


if __name__ == "__main__":
    run_tests()
