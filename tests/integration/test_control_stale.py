"""test_control_stale.py: a server killed outright (SIGKILL, a sanitizer abort, the watchdog's
_exit) leaves its control socket and pid file in the run directory; the next server to start
removes those whose pid is gone, and nothing else: a live server's files, files naming a live
process, and names sluice does not create are left alone.

Run: python3 tests/integration/test_control_stale.py   (SLUICE_BIN overrides build/sluice)
"""
import os
import shutil
import signal
import subprocess
import tempfile

from harness import SLUICE_BIN, Server, check, run_tests, test

CONFIG = 'return { port = 5000, workers = 1, scripts = { "app.lua" }, log = { access = "off" }, ratelimit = false }\n'
APP = 'local app = require "sluice"\napp.get("/health", function() return "ok\\n" end)\n'


def make_app(root, name):
    d = os.path.join(root, name)
    os.mkdir(d)
    with open(os.path.join(d, "config.lua"), "w") as f:
        f.write(CONFIG)
    with open(os.path.join(d, "app.lua"), "w") as f:
        f.write(APP)
    return d


def files_of(run, port):
    return sorted(n for n in os.listdir(run) if n.endswith("-%d.sock" % port) or n.endswith("-%d.pid" % port))


def dead_pid():
    p = subprocess.Popen(["true"])
    p.wait()
    return p.pid


@test
def a_killed_servers_files_go_at_the_next_start_and_nothing_else():
    root = tempfile.mkdtemp(prefix="sluice-stale-")
    run = os.path.join(root, "run")
    os.mkdir(run, 0o700)
    env = {"SLUICE_RUN_DIR": run}
    live = Server(make_app(root, "live"), env=env).start()
    killed = Server(make_app(root, "killed"), env=env).start()
    nxt = None
    try:
        live_files = files_of(run, live.port)
        check(len(live_files) == 2, "the live server's socket and pid file: %r" % live_files)
        killed.proc.send_signal(signal.SIGKILL)
        killed.signalled = True
        killed.proc.wait(30)
        stale = files_of(run, killed.port)
        check(len(stale) == 2, "SIGKILL leaves the socket and pid file behind: %r" % stale)
        # planted: a dead pid's file (swept), and ones that must stay
        def plant(name, text):
            with open(os.path.join(run, name), "w") as f:
                f.write(text)
        plant("00000000000000aa-1.pid", "%d\n" % dead_pid())              # dead: removed
        plant("00000000000000bb-2.pid", "%d\n" % os.getpid())             # a live process: kept
        plant("00000000000000cc-3.pid", "not a pid\n")                    # unreadable: kept
        plant("notes-4.pid", "%d\n" % dead_pid())                         # not a sluice name: kept
        plant("00000000000000dd-5.pid.bak", "%d\n" % dead_pid())          # not a sluice name: kept
        nxt = Server(make_app(root, "next"), env=env).start()
        left = sorted(os.listdir(run))
        check(files_of(run, killed.port) == [], "the killed server's files are gone: %r" % left)
        check(files_of(run, live.port) == live_files, "the live server's files are untouched: %r" % left)
        check("00000000000000aa-1.pid" not in left, "a dead pid's file is removed: %r" % left)
        for keep in ("00000000000000bb-2.pid", "00000000000000cc-3.pid", "notes-4.pid", "00000000000000dd-5.pid.bak"):
            check(keep in left, "%s is kept: %r" % (keep, left))
        check(len(files_of(run, nxt.port)) == 2, "the new server has its own files: %r" % left)
        check("no longer running" in nxt.log(), "the sweep is logged:\n" + nxt.log()[-1500:])
        st = subprocess.run([SLUICE_BIN, "status", "--config",
                             os.path.join(root, "live", "config.lua")], capture_output=True, text=True, timeout=30,
                            env=dict(os.environ, **env))
        check(st.returncode == 0, "the live server still answers status: %s %s" % (st.stdout, st.stderr))
    finally:
        for s in (nxt, live):
            if s:
                s.stop()
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    run_tests()
