"""test_newcomer.py: the errors a newcomer hits first are one line each, saying what is wrong and
what to do (issue 10): port in use, bad DATABASE_URL, PostgreSQL not reachable, a syntax error in
config.lua, a script that does not exist, an unknown config key, a missing library at build time."""
import gzip
import os
import re
import shutil
import subprocess
import tempfile

from harness import SLUICE_BIN, Conn, Server, _request, check, free_port, get, run_tests, test, wait_for

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, "..", ".."))


def app_dir(config):
    d = tempfile.mkdtemp(prefix="sluice-newcomer-")
    shutil.copy(os.path.join(HERE, "fixtures/newcomer/app.lua"), d)
    with open(os.path.join(d, "config.lua"), "w") as f:
        f.write(config)
    return d


def run(d, *args, env=None, timeout=20):
    e = dict(os.environ)
    e.pop("DATABASE_URL", None)
    e.update(env or {})
    return subprocess.run([SLUICE_BIN, *args, "--config", os.path.join(d, "config.lua")], env=e,
                          capture_output=True, text=True, timeout=timeout, cwd=d)


OK_CONFIG = 'return { scripts = { "app.lua" }, workers = 1, log = { access = "off" } }\n'


def one_line(text):
    lines = [l for l in text.strip().splitlines() if l.strip()]
    check(len(lines) == 1, "want one line, got %r" % text)
    return lines[0]


@test
def port_in_use():
    d = app_dir(OK_CONFIG)
    try:
        with Server(d) as srv:
            r = run(d, "run", env={"PORT": str(srv.port)})
            check(r.returncode == 1, "exit %d" % r.returncode)
            line = one_line(r.stderr)
            check("port %d is already in use" % srv.port in line and "PORT=" in line, line)
            check(get(srv.port, "/hi")[0] == 200, "the first server is untouched")
    finally:
        shutil.rmtree(d)


@test
def bad_database_url():
    d = app_dir(OK_CONFIG)
    try:
        r = run(d, "check", env={"DATABASE_URL": "mysql://root@localhost/db"})
        check(r.returncode == 1, "exit %d" % r.returncode)
        line = one_line(r.stderr)
        check("database.url" in line and "DATABASE_URL" in line and "postgres" in line, line)
        r = run(d, "run", env={"DATABASE_URL": "postgresql://u:p@127.0.0.1:5432/db?connection_limit=abc", "PORT": str(free_port())})
        check(r.returncode == 1, "exit %d" % r.returncode)
        line = one_line(r.stderr)
        check("connection_limit" in line and "p@" not in line, "names the parameter, hides the password: " + line)
    finally:
        shutil.rmtree(d)


@test
def check_and_run_agree_on_database_url():
    # issue 18: check said ok where run then refused; now one parser decides both, same message
    d = app_dir(OK_CONFIG)
    try:
        base = "postgresql://u:secret@127.0.0.1:%d/db" % free_port()
        cases = {
            "?connection_limit=5000": "connection_limit=5000 is not an integer from 1 to 1000",
            "?connection_limit=0": "connection_limit=0 is not an integer from 1 to 1000",
            "?conection_limit=5": 'unknown parameter "conection_limit" (did you mean connection_limit?)',
            "?pool_timout=5": 'unknown parameter "pool_timout" (did you mean pool_timeout?)',
            "?sslmdoe=disable": 'unknown parameter "sslmdoe" (did you mean sslmode?)',
            "?statement_timeout=soon": "statement_timeout=soon is not a duration",
            "?pool_timeout=-1": "pool_timeout=-1 is not a duration",
        }
        for q, want in cases.items():
            env = {"DATABASE_URL": base + q, "PORT": str(free_port())}
            c = run(d, "check", env=env)
            r = run(d, "run", env=env)
            check(c.returncode == 1 and r.returncode == 1, "%s: check exit %d, run exit %d" % (q, c.returncode, r.returncode))
            cl, rl = one_line(c.stderr), one_line(r.stderr)
            check(cl == rl, "%s: check and run say the same: %r vs %r" % (q, cl, rl))
            check(want in cl, "%s: %r lacks %r" % (q, cl, want))
            check(cl.count("DATABASE_URL") == 1, "the variable is named once: " + cl)
            check("secret" not in cl, "no password: " + cl)
        ok = run(d, "check", env={"DATABASE_URL": base + "?connection_limit=1000&pool_timeout=2.5&sslmode=disable"})
        check(ok.returncode == 0 and "ok" in ok.stdout, "the documented top of the range is accepted: " + ok.stderr)
    finally:
        shutil.rmtree(d)


def static_app():
    d = tempfile.mkdtemp(prefix="sluice-newcomer-static-")
    os.mkdir(os.path.join(d, "public"))
    text = "".join("line %d of a compressible text file\n" % i for i in range(300)).encode()
    with open(os.path.join(d, "public", "big.txt"), "wb") as f:
        f.write(text)
    css = b"body { color: black; }\n" * 200
    with open(os.path.join(d, "public", "app.css"), "wb") as f:
        f.write(css)
    with open(os.path.join(d, "public", "app.css.gz"), "wb") as f:
        f.write(gzip.compress(css))
    with open(os.path.join(d, "app.lua"), "w") as f:
        f.write('local app = require "sluice"\napp.static("/s", "public")\napp.get("/hi", function() return "hi\\n" end)\n')
    with open(os.path.join(d, "config.lua"), "w") as f:
        f.write(OK_CONFIG)
    return d, text, css


GZ = {"Accept-Encoding": "gzip"}
SAME = ("content-encoding", "content-length", "content-type", "etag", "vary", "last-modified", "cache-control")


@test
def static_gzip_has_its_own_etag_and_head_matches_get():
    # issue 18: gzip and identity shared one strong ETag (RFC 9110 8.8.3), and HEAD with
    # Accept-Encoding: gzip gave the identity length and no Content-Encoding
    d, text, css = static_app()
    try:
        with Server(d) as srv:
            for path, body in (("/s/big.txt", text), ("/s/app.css", css)):   # gzip on the fly; a .gz sibling
                st, ident, raw_body = get(srv.port, path)
                check(st == 200 and raw_body == body and "content-encoding" not in ident, "%s identity: %d %r" % (path, st, ident))
                st, gz, gz_body = get(srv.port, path, GZ)
                check(st == 200 and gz.get("content-encoding") == "gzip", "%s gzip: %r" % (path, gz))
                check(gzip.decompress(gz_body) == body, path + ": the gzip body is the file")
                check(int(gz["content-length"]) == len(gz_body), path + ": Content-Length of the gzip body")
                e1, e2 = ident["etag"], gz["etag"]
                check(e1 != e2 and not e1.startswith("W/") and not e2.startswith("W/"), "two strong tags: %s %s" % (e1, e2))
                check(e2.endswith('-gz"'), "the gzip tag ends in -gz: %s %s" % (e1, e2))
                if path == "/s/big.txt":
                    check(e2 == e1[:-1] + '-gz"', "gzip on the fly: the identity tag + -gz: %s %s" % (e1, e2))
                check(ident.get("vary") == "Accept-Encoding" and gz.get("vary") == "Accept-Encoding", "Vary on both")
                # HEAD carries exactly what GET would, without the body
                st, head, head_body = _request(srv.port, "HEAD", path, headers=GZ)
                check(st == 200 and head_body == b"", "HEAD: %d %r" % (st, head_body))
                for h in SAME:
                    check(head.get(h) == gz.get(h), "%s HEAD gzip %s: %r, GET: %r" % (path, h, head.get(h), gz.get(h)))
                st, head, _ = _request(srv.port, "HEAD", path)
                for h in SAME:
                    check(head.get(h) == ident.get(h), "%s HEAD identity %s: %r, GET: %r" % (path, h, head.get(h), ident.get(h)))
                # If-None-Match matches the representation the client would get, and only that one
                st, h304, b304 = get(srv.port, path, dict(GZ, **{"If-None-Match": e2}))
                check(st == 304 and b304 == b"" and h304.get("etag") == e2, "%s gzip tag -> 304: %d %r" % (path, st, h304))
                st, _, b = get(srv.port, path, dict(GZ, **{"If-None-Match": e1}))
                check(st == 200 and gzip.decompress(b) == body, "%s identity tag, gzip client -> 200 (%d)" % (path, st))
                st, h304, _ = get(srv.port, path, {"If-None-Match": e1})
                check(st == 304 and h304.get("etag") == e1, "%s identity tag -> 304 (%d)" % (path, st))
                st, _, b = get(srv.port, path, {"If-None-Match": e2})
                check(st == 200 and b == body, "%s gzip tag, identity client -> 200 (%d)" % (path, st))
                st, h304, _ = _request(srv.port, "HEAD", path, headers=dict(GZ, **{"If-None-Match": e2}))
                check(st == 304, "%s HEAD conditional like GET (%d)" % (path, st))
                if path != "/s/big.txt":
                    continue
                # a Range is served from the identity file, with the identity tag (a .gz sibling ignores it)
                st, rh, rb = get(srv.port, path, dict(GZ, Range="bytes=0-9"))
                check(st == 206 and rb == body[:10] and rh.get("etag") == e1 and "content-encoding" not in rh,
                      "%s range: %d %r" % (path, st, rh))
            check(get(srv.port, "/hi")[0] == 200, "the server keeps serving")
    finally:
        shutil.rmtree(d)


# (script body after two lines of preamble, expected text); the mistake is always on line 3 or 4
LOAD_ERRORS = [
    ('app.get("/a", function() end)\napp.get("/a", function() end)', 4,
     'duplicate route GET /a: GET /a is already defined at {app}:3 (one handler per method and path'),
    ('app.get("/u/:id", function() end)\napp.get("/u/:name", function() end)', 4,
     "duplicate route GET /u/:name: GET /u/:id is already defined at {app}:3"),
    ('app.get("/u/:id", function() end)\napp.post("/u/:name", function() end)', 4,
     'parameter ":name" in "/u/:name" is ":id" in another route at the same position'),
    ('app.get("a", function() end)', 3, "route pattern must start with '/': \"a\" (write \"/a\")"),
    ('app.route("FETCH", "/x", function() end)', 3, 'app.route: unknown method "FETCH" (use GET, POST'),
    ('app.get("/x/:", function() end)', 3, 'empty parameter name in "/x/:" (name it, e.g. ":id")'),
    ('app.get("/x/*/y", function() end)', 3, "'*' must be the last segment"),
    ('app.get("/x", "hello")', 3, 'app.get("/x", fn): the handler must be a function (got string)'),
    ('app.sse("/e", 1)', 3, "app.sse(\"/e\", fn): the authorizer must be a function"),
    ('app.static("/s", "nodir")', 3, "cannot open directory {dir}/nodir: No such file or directory (create it"),
    ('app.before("x", function() end)', 3, "middleware prefix must start with '/', e.g. app.before(\"/api\", fn)"),
    ('app.timer("x", function() end)', 3, "app.timer(seconds, fn [, repeat]): seconds must be a number >= 0"),
    ('app.db.listen("orders")', 3, "app.db.listen(channel, fn): fn must be a function (got nil)"),
    ('app.db.query("select 1")', 3, "app.db: only inside a handler, timer or spec, not while the script loads (move it"),
    ('local m = require "no_such_module"', 3, "module 'no_such_module' not found: put no_such_module.lua in scripts/"),
]


@test
def load_time_errors_name_the_users_line():
    # issue 18: "lua/sluice.lua:22: duplicate route  /a" named neither the method nor the user's line
    d = app_dir(OK_CONFIG)
    try:
        app = os.path.join(d, "app.lua")
        for body, line, want in LOAD_ERRORS:
            with open(app, "w") as f:
                f.write('local app = require "sluice"\n\n' + body + "\n")
            r = run(d, "check")
            check(r.returncode == 1, "%s: exit %d" % (body, r.returncode))
            msg = one_line(r.stderr)
            check(msg.startswith("%s:%d: " % (app, line)), "%s: names the user's line: %s" % (body, msg))
            check("sluice.lua" not in msg and "bad argument" not in msg, "%s: nothing from the runtime: %s" % (body, msg))
            check(want.format(app=app, dir=d) in msg, "%s: %r lacks %r" % (body, msg, want))
        # a reload that is refused says the same, and the server keeps the old code
        with open(app, "w") as f:
            f.write('local app = require "sluice"\napp.get("/hi", function() return "hi\\n" end)\n')
        with Server(d) as srv:
            with open(app, "a") as f:
                f.write('app.get("/hi", function() return "again" end)\n')
            r = run(d, "reload", env={"PORT": str(srv.port)})
            check(r.returncode == 1, "reload refused: %d %s" % (r.returncode, r.stdout))
            check(("%s:3: duplicate route GET /hi: GET /hi is already defined at %s:2" % (app, app)) in r.stderr, r.stderr)
            st, _, body = get(srv.port, "/hi")
            check(st == 200 and body == b"hi\n", "the old code still serves")
    finally:
        shutil.rmtree(d)


@test
def sse_refusals_say_which_and_why():
    # issue 18: "bad channel name or Last-Event-ID" did not say which, nor why
    d = app_dir(OK_CONFIG)
    try:
        with open(os.path.join(d, "app.lua"), "a") as f:
            f.write('app.sse("/ev", function(req)\n'
                    '  if req.query.dup then return { channels = { "a", "a" } } end\n'
                    '  if req.query.two then return { channels = { "a", "b" } } end\n'
                    '  return { channel = req.query.ch or "room" }\n'
                    'end)\n')
        with Server(d) as srv:
            st, _, body = get(srv.port, "/ev", {"Last-Event-ID": "yesterday"})
            check(st == 400 and b"Last-Event-ID is not an event id" in body and b"decimal" in body, "%d %r" % (st, body))
            st, _, body = get(srv.port, "/ev", {"Last-Event-ID": "9" * 80})
            check(st == 400 and b"Last-Event-ID is not an event id" in body, "%d %r" % (st, body))
            st, _, body = get(srv.port, "/ev?ch=")
            check(st == 400 and b"the SSE handler returned a bad channel name (channels are 1 to 200 bytes" in body, "%d %r" % (st, body))
            st, _, body = get(srv.port, "/ev?ch=" + "x" * 201)
            check(st == 400 and b"bad channel name" in body, "%d %r" % (st, body))
            st, _, body = get(srv.port, "/ev?dup=1")
            check(st == 400 and b'returned channel \\"a\\" twice' in body, "%d %r" % (st, body))
            check("SSE the SSE handler returned" in srv.log(), "the developer's mistake is logged too")
            # two channels on one stream (this crashed the server: the list index moved while reading it)
            with Conn(srv.port) as c:
                c.send(b"GET /ev?two=1 HTTP/1.1\r\nHost: x\r\n\r\n")
                head = c.read_until(b"\r\n\r\n")
                check(head.startswith(b"HTTP/1.1 200") and b"text/event-stream" in head, head)
            check(get(srv.port, "/hi")[0] == 200, "the server keeps serving")
    finally:
        shutil.rmtree(d)


@test
def handlers_use_debian_lua_modules():
    # docs/lua-api.md "Lua modules": pure-Lua packages from /usr/share/lua/5.1 load from a handler
    check(os.path.isfile("/usr/share/lua/5.1/say/init.lua"), "lua-say is installed (tools/bootstrap)")
    d = app_dir(OK_CONFIG)
    try:
        with open(os.path.join(d, "app.lua"), "a") as f:
            f.write('local say = require "say"\n'
                    'say:set("greeting", "hello %s")\n'
                    'app.get("/say", function(req) return say("greeting", { req.query.who or "?" }) end)\n')
        with Server(d) as srv:
            st, _, body = get(srv.port, "/say?who=ada")
            check(st == 200 and body == b"hello ada", "%d %r" % (st, body))
    finally:
        shutil.rmtree(d)


@test
def docs_quote_the_real_database_url_errors():
    # issue 18: docs/database.md quoted an error sluice never printed
    with open(os.path.join(ROOT, "docs", "database.md")) as f:
        quoted = [l.strip() for l in f if l.startswith("config.lua: database.url: ")]
    check(len(quoted) >= 2, "the page quotes the errors")
    d = app_dir(OK_CONFIG)
    try:
        for q in quoted:
            m = re.search(r'unknown parameter "(\w+)"', q) or re.search(r"(\w+=\w+) is not", q)
            param = m.group(1) if "=" in m.group(1) else m.group(1) + "=5"
            r = run(d, "check", env={"DATABASE_URL": "postgresql://u@127.0.0.1:5432/db?" + param})
            line = one_line(r.stderr)
            check(line.endswith(q) and line[:-len(q)] == d + "/", "docs: %r\nreal: %r" % (q, line))
    finally:
        shutil.rmtree(d)


@test
def postgresql_not_reachable():
    d = app_dir(OK_CONFIG)
    try:
        url = "postgresql://u:secret@127.0.0.1:%d/db" % free_port()
        with Server(d, env={"DATABASE_URL": url}) as srv:
            wait_for(lambda: "database unreachable" in srv.log(), 15, "the log line about the database")
            lines = [l for l in srv.log().splitlines() if "database unreachable" in l]
            check(lines, "a log line: " + srv.log()[-500:])
            check("is PostgreSQL running" in lines[0] and "secret" not in lines[0], lines[0])
            check(get(srv.port, "/ready")[0] == 503, "/ready says not ready")
            check(get(srv.port, "/hi")[0] == 200, "routes without the database keep working")
    finally:
        shutil.rmtree(d)


@test
def syntax_error_in_config():
    d = app_dir('return {\n  port = 5000,\n  workers = = 1,\n}\n')
    try:
        r = run(d, "run")
        check(r.returncode == 1, "exit %d" % r.returncode)
        line = one_line(r.stderr)
        check("config.lua:3:" in line and "unexpected symbol" in line, line)
    finally:
        shutil.rmtree(d)


@test
def unknown_key_and_missing_script():
    d = app_dir('return { scripts = { "app.lua", "nope.lua" }, limits = { body_sise = 10 } }\n')
    try:
        r = run(d, "check")
        check(r.returncode == 1, "exit %d" % r.returncode)
        check("limits.body_sise: unknown key (did you mean body_size?)" in r.stderr, r.stderr)
        d2 = app_dir('return { scripts = { "app.lua", "nope.lua" } }\n')
        r = run(d2, "check")
        line = one_line(r.stderr)
        check("nope.lua: script not found" in line, line)
        shutil.rmtree(d2)
    finally:
        shutil.rmtree(d)


@test
def missing_library_at_build_time():
    # configure against an empty pkg-config path: the first missing library is named with its package
    b = tempfile.mkdtemp(prefix="sluice-cmake-")
    try:
        env = dict(os.environ, PKG_CONFIG_LIBDIR="/nonexistent", PKG_CONFIG_PATH="")
        r = subprocess.run(["cmake", "-S", ROOT, "-B", b], env=env, capture_output=True, text=True, timeout=60)
        check(r.returncode != 0, "configure should fail")
        flat = " ".join(r.stderr.split())          # cmake wraps long messages
        check("sluice: LuaJIT 2.1 not found: run tools/bootstrap (or apt-get install libluajit2-5.1-dev)" in flat, r.stderr[-800:])
    finally:
        shutil.rmtree(b)


if __name__ == "__main__":
    run_tests()
