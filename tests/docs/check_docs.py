#!/usr/bin/env python3
"""check_docs.py: the examples in README.md and docs/*.md are correct (issue 18).

- every ```lua block compiles with the runtime's LuaJIT (`sluice lua`): as a chunk, or, for the
  config and response snippets that are written as such, as an expression or as table fields;
- every ```sh / ```bash block passes `bash -n`, every ```js block `node --check` (when node is
  installed);
- the README's five-minute tour runs: the example app is served (after `sluice migrate` when
  DATABASE_URL is set), the route the README adds is added and reloaded with the message the
  README quotes, the README's spec passes with `sluice test`, and /metrics, /ready and the
  dashboard answer.

Usage: SLUICE_BIN=build/sluice python3 tests/docs/check_docs.py [--no-tour]
Prints one line per problem (file:line: what) and `docs: N blocks checked, N problems`; exit 1
on any problem."""
import glob
import http.client
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
SLUICE = os.path.abspath(os.environ.get("SLUICE_BIN") or os.path.join(ROOT, "build", "sluice"))
problems = []


def problem(where, what):
    problems.append("%s: %s" % (where, what))
    print("FAIL %s: %s" % (where, what), flush=True)


def blocks(path):
    """(info, first line number, text) of every fenced block; indentation of the fence removed."""
    out, cur = [], None
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            m = re.match(r"^(\s*)```\s*([\w+-]*)\s*$", line)
            if cur is None and m:
                cur = (m.group(2).lower(), n + 1, len(m.group(1)), [])
            elif cur is not None and re.match(r"^\s*```\s*$", line):
                info, first, indent, lines = cur
                out.append((info, first, "".join(l[indent:] if l[:indent].strip() == "" else l for l in lines)))
                cur = None
            elif cur is not None:
                cur[3].append(line)
    if cur is not None:
        problem("%s:%d" % (os.path.relpath(path, ROOT), cur[1] - 1), "unclosed code fence")
    return out


LUA_DRIVER = r'''
-- compiles each file given: as a chunk, else as an expression, else as table fields
local bad = 0
for i = 1, #arg do
  local f = assert(io.open(arg[i], "rb"))
  local src = f:read("*a")
  f:close()
  local _, err = loadstring(src, "=block")
  if err and loadstring("return " .. src, "=block") then err = nil end
  if err and loadstring("return {\n" .. src .. "\n}", "=block") then err = nil end
  if err then bad = bad + 1; io.write(arg[i], "\t", (err:gsub("\n", " ")), "\n") end
end
os.exit(bad == 0 and 0 or 1)
'''


def check_blocks(files):
    tmp = tempfile.mkdtemp(prefix="sluice-docs-")
    lua, count = {}, 0
    try:
        for path in files:
            rel = os.path.relpath(path, ROOT)
            for i, (info, first, text) in enumerate(blocks(path)):
                where = "%s:%d" % (rel, first)
                if info == "lua":
                    name = os.path.join(tmp, "b%d.lua" % len(lua))
                    with open(name, "w") as f:
                        f.write(text)
                    lua[name] = where
                    count += 1
                elif info in ("sh", "bash", "shell"):
                    count += 1
                    r = subprocess.run(["bash", "-n"], input=text, capture_output=True, text=True, timeout=30)
                    if r.returncode != 0:
                        problem(where, "shell block does not parse: " + r.stderr.strip().replace("\n", " "))
                elif info in ("js", "javascript") and shutil.which("node"):
                    count += 1
                    name = os.path.join(tmp, "b%d.js" % i)
                    with open(name, "w") as f:
                        f.write(text)
                    r = subprocess.run(["node", "--check", name], capture_output=True, text=True, timeout=30)
                    if r.returncode != 0:
                        problem(where, "js block does not parse: " + r.stderr.strip().splitlines()[-1])
        driver = os.path.join(tmp, "driver.lua")
        with open(driver, "w") as f:
            f.write(LUA_DRIVER)
        if lua:
            r = subprocess.run([SLUICE, "lua", driver, *lua], capture_output=True, text=True, timeout=60)
            for line in r.stdout.splitlines():
                name, err = line.split("\t", 1)
                problem(lua[name], "lua block does not compile: " + err)
            if r.returncode not in (0, 1) or (r.returncode == 1 and not r.stdout):
                problem("sluice lua", "the compile driver failed: " + r.stderr)
    finally:
        shutil.rmtree(tmp)
    return count


# ------------------------------------------------------------------ the README's tour

def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def http_get(port, path):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        c.request("GET", path)
        r = c.getresponse()
        return r.status, r.read()
    finally:
        c.close()


def tour():
    readme = open(os.path.join(ROOT, "README.md"), encoding="utf-8").read()
    section = readme[readme.index("## A five-minute tour"):]
    section = section[:section.index("\n## ", 3)]
    route = re.search(r'`(app\.get\("/hi", function\(\) return "hi\\n" end\))`', section)
    reloaded = re.search(r"it prints `(reloaded: [^`]+)`", section)
    spec = [t for info, _, t in blocks(os.path.join(ROOT, "README.md")) if info == "lua" and 'describe("hi"' in t]
    script = re.search(r"at the end of `(scripts/[\w.]+\.lua)`", section)
    for what, found in (("the /hi route", route), ("the reload message", reloaded), ("the hi spec", spec),
                        ("the script to edit", script)):
        if not found:
            problem("README.md", "the tour no longer shows %s (update tests/docs/check_docs.py with it)" % what)
            return
    app = tempfile.mkdtemp(prefix="sluice-tour-")
    env = dict(os.environ, PORT=str(free_port()))
    srv, db = None, None
    base_url = (os.environ.get("DATABASE_URL") or "").split("?")[0]
    try:
        for item in ("config.lua", "scripts", "public", "migrations"):
            src = os.path.join(ROOT, item)
            (shutil.copytree if os.path.isdir(src) else shutil.copy)(src, os.path.join(app, item))
        os.makedirs(os.path.join(app, "tests", "spec"))
        if base_url:                     # step 1 (tools/run): migrations on a database of its own
            db = "docs_tour_%d" % os.getpid()
            subprocess.run(["psql", base_url, "-qc", "drop database if exists %s with (force)" % db], capture_output=True)
            subprocess.run(["psql", base_url, "-qc", "create database %s" % db], check=True, capture_output=True)
            env["DATABASE_URL"] = re.sub(r"/[^/]*$", "/" + db, base_url)
            r = subprocess.run([SLUICE, "migrate"], cwd=app, env=env, capture_output=True, text=True, timeout=60)
            if r.returncode != 0:
                problem("README.md tour", "sluice migrate failed: " + r.stderr.strip())
                return
        else:
            env.pop("DATABASE_URL", None)
        port = int(env["PORT"])
        log = open(os.path.join(app, "server.log"), "w")
        srv = subprocess.Popen([SLUICE, "run"], cwd=app, env=env, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 60          # bounds a failure only
        while True:
            try:
                if http_get(port, "/health")[0] == 200:
                    break
            except OSError:
                pass
            if srv.poll() is not None or time.monotonic() > deadline:
                problem("README.md tour", "the example app did not start: " + open(log.name).read()[-500:])
                return
            time.sleep(0.1)
        st, body = http_get(port, "/")
        if st != 200 or b"<html" not in body.lower():
            problem("README.md tour step 1", "GET / gave %d, not the board page" % st)
        # step 2: add the README's route, reload, see the README's message and the route
        with open(os.path.join(app, script.group(1)), "a") as f:
            f.write("\n" + route.group(1).replace("\\n", "\\n") + "\n")
        r = subprocess.run([SLUICE, "reload"], cwd=app, env=env, capture_output=True, text=True, timeout=60)
        if r.returncode != 0 or r.stdout.strip() != reloaded.group(1):
            problem("README.md tour step 2", "sluice reload said %r %r, the README says %r" % (r.stdout, r.stderr, reloaded.group(1)))
        st, body = http_get(port, "/hi")
        if (st, body) != (200, b"hi\n"):
            problem("README.md tour step 2", "GET /hi after the reload gave %d %r" % (st, body))
        # step 3: the README's spec
        with open(os.path.join(app, "tests", "spec", "hi_spec.lua"), "w") as f:
            f.write(spec[0])
        r = subprocess.run([SLUICE, "test", "tests/spec/hi_spec.lua"], cwd=app, env=env, capture_output=True, text=True, timeout=120)
        last = r.stdout.strip().splitlines()[-1] if r.stdout.strip() else r.stderr.strip()
        if r.returncode != 0 or last != "1 passed, 0 failed":
            problem("README.md tour step 3", "the spec: %s" % (r.stdout + r.stderr)[-600:])
        # step 4: look inside
        st, body = http_get(port, "/metrics")
        if st != 200 or b"# TYPE" not in body:
            problem("README.md tour step 4", "/metrics gave %d" % st)
        # ready: the database (when configured) is reachable; it may take the pool a moment
        deadline = time.monotonic() + 30
        while True:
            st, _ = http_get(port, "/ready")
            if st == 200 or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        if st != 200:
            problem("README.md tour step 4", "/ready gave %d" % st)
        st, body = http_get(port, "/_sluice/")
        if st != 200:
            problem("README.md tour step 4", "the dashboard /_sluice/ gave %d" % st)
    finally:
        if srv and srv.poll() is None:
            srv.terminate()
            try:
                srv.wait(timeout=20)
            except subprocess.TimeoutExpired:
                srv.kill()
        shutil.rmtree(app, ignore_errors=True)
        if db:
            subprocess.run(["psql", base_url, "-qc", "drop database if exists %s with (force)" % db], capture_output=True)


def main():
    files = [os.path.join(ROOT, "README.md")] + sorted(glob.glob(os.path.join(ROOT, "docs", "*.md")))
    n = check_blocks(files)
    if "--no-tour" not in sys.argv:
        tour()
        n += 1
    print("docs: %d blocks checked (and the README tour), %d problems" % (n, len(problems)))
    sys.exit(1 if problems else 0)


if __name__ == "__main__":
    main()
