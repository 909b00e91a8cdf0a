"""test_ops_control.py: finding a running server from its config (issue 17).

`PORT=<p> sluice run --config app/config.lua`, then from elsewhere (another directory, no PORT):
`sluice reload --config app/config.lua` reaches it; `sluice status` prints pid, uptime, workers,
connections, streams, the last reload and its result; SIGHUP through the pid file reloads;
`--port`/`PORT` pick a server; two servers on one config make `reload` ask for a port; a killed
server's leftovers are recognised; the files go when the server exits.

Run: python3 tests/integration/test_ops_control.py [case names]   (SLUICE_BIN overrides build/sluice)
"""
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time

from harness import HOST, SLUICE_BIN, Server, check, free_port, get, run_tests, test, wait_for

CONFIG = 'return { port = 5000, workers = 2, scripts = { "app.lua" }, log = { access = "off" }, ratelimit = false }\n'
APP_V = 'local app = require "sluice"\napp.get("/v", function() return "%s\\n" end)\n' \
        'app.sse("/events/:r", function(req) return { channel = req.params.r } end)\n'


def make_app():
    d = tempfile.mkdtemp(prefix="sluice-ctl-")
    os.mkdir(os.path.join(d, "app"))
    with open(os.path.join(d, "app", "config.lua"), "w") as f:
        f.write(CONFIG)
    write_app(d, "v1")
    return d


def write_app(d, v, broken=False):
    p = os.path.join(d, "app", "app.lua")
    with open(p + ".tmp", "w") as f:
        f.write(APP_V % v + ("\napp.get('/x', function() end\n" if broken else ""))
    os.replace(p + ".tmp", p)


def cli(d, *args, env=None, cwd=None):
    e = {k: v for k, v in os.environ.items() if k != "PORT"}       # another shell: no PORT
    e.update(env or {})
    return subprocess.run([SLUICE_BIN] + list(args), capture_output=True, text=True, timeout=30,
                          env=e, cwd=cwd or d)


def status_fields(out):
    return {m.group(1): m.group(2) for m in re.finditer(r"^([a-z ]+):\s+(.*)$", out, re.M)}


def all_say(port, want):
    seen = {get(port, "/v", headers={"Connection": "close"})[2] for _ in range(20)}
    check(seen == {want}, "answers %r, want %r" % (seen, want))


@test
def reload_and_status_find_a_server_started_with_PORT():
    d = make_app()
    try:
        # harness.Server sets PORT to a free port: the config says 5000
        with Server(os.path.join(d, "app")) as srv:
            check(srv.port != 5000, "the test needs PORT to differ from the config's port")
            write_app(d, "v2")
            r = cli(d, "reload", "--config", "app/config.lua")
            check(r.returncode == 0 and "live on every worker" in r.stdout, "reload: %r %r" % (r.stdout, r.stderr))
            all_say(srv.port, b"v2\n")
            # from another directory, with the config's absolute path (and through a symlink)
            os.symlink(os.path.join(d, "app"), os.path.join(d, "link"))
            r = cli(d, "status", "--config", os.path.join(d, "link", "config.lua"), cwd="/")
            check(r.returncode == 0, "status: %r" % r.stderr)
            f = status_fields(r.stdout)
            check(int(f["pid"]) == srv.proc.pid, "pid %r vs %d" % (f.get("pid"), srv.proc.pid))
            check(f["port"] == str(srv.port) and f["workers"] == "2", f)
            check(f["config"] == os.path.realpath(os.path.join(d, "app", "config.lua")), f["config"])
            check(re.match(r"\d+s$", f["uptime"]), f["uptime"])
            check(f["connections"].endswith("(limit 11000)") and f["streams"].startswith("0 SSE"), f)
            check(f["last reload"].endswith(", ok") and f["reloads"] == "1 ok, 0 rejected", f)
            check(f["ready"] == "yes", f)
            # a rejected reload: its result and message are in the summary
            write_app(d, "v3", broken=True)
            r = cli(d, "reload", "--config", "app/config.lua")
            check(r.returncode == 1 and "app.lua:" in r.stderr, "rejected reload: %r" % r.stderr)
            all_say(srv.port, b"v2\n")
            s = socket.create_connection((HOST, srv.port), timeout=5)
            s.sendall(b"GET /events/x HTTP/1.1\r\nHost: x\r\n\r\n")
            wait_for(lambda: "1 SSE" in status_fields(cli(d, "status", "--config", "app/config.lua").stdout)["streams"],
                     5, "the stream in the summary")
            f = status_fields(cli(d, "status", "--config", "app/config.lua").stdout)
            check(", rejected: " in f["last reload"] and "app.lua:" in f["last reload"], f["last reload"])
            check(f["reloads"] == "1 ok, 1 rejected", f["reloads"])
            s.close()
            j = json.loads(cli(d, "status", "--config", "app/config.lua", "--json").stdout)
            check(j["pid"] == srv.proc.pid and j["last_reload"]["ok"] is False and j["reload_failures"] == 1, j)
    finally:
        shutil.rmtree(d, ignore_errors=True)


@test
def sighup_through_the_pid_file():
    d = make_app()
    try:
        with Server(os.path.join(d, "app")) as srv:
            f = status_fields(cli(d, "status", "--config", "app/config.lua").stdout)
            pidfile = f["pid file"]
            check(os.path.isfile(pidfile) and oct(os.stat(os.path.dirname(pidfile)).st_mode & 0o777) == "0o700",
                  "pid file %s in a private directory" % pidfile)
            with open(pidfile) as fh:
                pid = int(fh.read())
            check(pid == srv.proc.pid, "pid file says %d, server is %d" % (pid, srv.proc.pid))
            write_app(d, "v2")
            os.kill(pid, signal.SIGHUP)
            wait_for(lambda: get(srv.port, "/_sluice/status")[2].find(b'"reloads":1') >= 0, 10, "the reload")
            all_say(srv.port, b"v2\n")
            sock = f["control"]
            check(os.path.exists(sock) and os.stat(sock).st_mode & 0o777 == 0o600, "control socket %s mode 0600" % sock)
        check(not os.path.exists(pidfile) and not os.path.exists(sock), "the files go when the server exits")
    finally:
        shutil.rmtree(d, ignore_errors=True)


@test
def port_overrides_and_several_servers_on_one_config():
    d = make_app()
    try:
        with Server(os.path.join(d, "app")) as a, Server(os.path.join(d, "app")) as b:
            r = cli(d, "reload", "--config", "app/config.lua")
            check(r.returncode == 1 and "2 servers run" in r.stderr and "--port" in r.stderr and str(a.port) in r.stderr,
                  "ambiguous reload: %r" % r.stderr)
            write_app(d, "v2")
            r = cli(d, "reload", "--config", "app/config.lua", "--port", str(b.port))
            check(r.returncode == 0, "reload --port: %r" % r.stderr)
            all_say(b.port, b"v2\n")
            all_say(a.port, b"v1\n")
            r = cli(d, "reload", "--config", "app/config.lua", env={"PORT": str(a.port)})
            check(r.returncode == 0, "reload with PORT: %r" % r.stderr)
            all_say(a.port, b"v2\n")
            r = cli(d, "status", "--config", "app/config.lua")
            pids = sorted(int(x) for x in re.findall(r"^pid:\s+(\d+)$", r.stdout, re.M))
            check(pids == sorted([a.proc.pid, b.proc.pid]), "status lists both: %r" % r.stdout)
            free = free_port()
            r = cli(d, "reload", "--config", "app/config.lua", "--port", str(free))
            check(r.returncode == 1 and "no server running on port %d" % free in r.stderr, r.stderr)
            r = cli(d, "reload", "--config", "app/config.lua", "--port", "http")
            check(r.returncode == 2 and "--port wants 1..65535" in r.stderr, r.stderr)
    finally:
        shutil.rmtree(d, ignore_errors=True)


@test
def no_server_and_a_killed_servers_leftovers():
    d = make_app()
    try:
        r = cli(d, "reload", "--config", "app/config.lua")
        check(r.returncode == 1 and "no server running with" in r.stderr and "sluice run --config" in r.stderr, r.stderr)
        r = cli(d, "status", "--config", "nope/config.lua")
        check(r.returncode == 1 and "nope/config.lua" in r.stderr, r.stderr)
        srv = Server(os.path.join(d, "app")).start()
        try:
            f = status_fields(cli(d, "status", "--config", "app/config.lua").stdout)
            srv.proc.kill()                      # no cleanup: the socket and pid file stay
            srv.proc.wait(5)
            check(os.path.exists(f["control"]), "a killed server leaves its socket")
            r = cli(d, "reload", "--config", "app/config.lua")
            check(r.returncode == 1 and "no server running" in r.stderr, "a dead socket is not a server: %r" % r.stderr)
            check(not os.path.exists(f["control"]) and not os.path.exists(f["pid file"]), "leftovers removed")
        finally:
            srv.cleanup()
        # and a new server on the same config and port works again
        with Server(os.path.join(d, "app")) as srv2:
            check(cli(d, "reload", "--config", "app/config.lua").returncode == 0, "reload after a restart")
            check(get(srv2.port, "/v")[2] == b"v1\n", "serving")
    finally:
        shutil.rmtree(d, ignore_errors=True)


@test
def an_unsafe_run_directory_is_refused():
    d = make_app()
    run = tempfile.mkdtemp(prefix="sluice-run-")
    try:
        os.chmod(run, 0o777)                 # anyone could plant a socket here
        env = {"SLUICE_RUN_DIR": run}
        with Server(os.path.join(d, "app"), env=env) as srv:
            check("run directory %s must be a directory owned by this user" % run in srv.log(), srv.log()[-800:])
            r = cli(d, "reload", "--config", "app/config.lua", env=env)
            check(r.returncode == 1 and "writable by no one else" in r.stderr, r.stderr)
            check(get(srv.port, "/v")[0] == 200, "the server serves anyway (SIGHUP still reloads)")
        os.chmod(run, 0o700)
        with Server(os.path.join(d, "app"), env=env) as srv:
            check(cli(d, "reload", "--config", "app/config.lua", env=env).returncode == 0, "SLUICE_RUN_DIR honoured")
            check(any(n.endswith("-%d.sock" % srv.port) for n in os.listdir(run)), os.listdir(run))
    finally:
        shutil.rmtree(d, ignore_errors=True)
        shutil.rmtree(run, ignore_errors=True)


if __name__ == "__main__":
    run_tests()
