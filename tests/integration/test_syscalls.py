"""test_syscalls.py: system calls the request path must not make, counted with strace (counts, not
time: the same on any machine).

- A keep-alive request whose handler waits (app.sleep, like a database query or an outbound call)
  costs no epoll_ctl: the connection's read interest stays registered while the handler works
  (core/conn.c update_events). Before, libev dropped it and added it back around every handler:
  two epoll_ctl calls per request (ADD failing with EEXIST, then MOD).
- A client that pipelines while a handler waits still gets every answer, in order (the kept
  interest is dropped for real when bytes arrive meanwhile, so the loop does not spin on them).

Run: SLUICE_BIN=$PWD/build/sluice python3 tests/integration/test_syscalls.py
"""
import os
import shutil
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import HERE, Conn, Server, check, run_tests, test, wait_for  # noqa: E402

FIX = os.path.join(HERE, "fixtures", "http")
N = 100


def strace_counts(pid, action):
    """Runs action() with strace counting the server's epoll_ctl calls; returns (calls, errors)."""
    out = "/tmp/sluice-syscalls-%d.txt" % os.getpid()
    st = subprocess.Popen(["strace", "-f", "-qq", "-c", "-e", "trace=epoll_ctl", "-o", out, "-p", str(pid)],
                          stderr=subprocess.DEVNULL)
    try:
        # strace is attached once it has stopped every thread once: wait for its status line
        def attached():
            tasks = os.listdir("/proc/%d/task" % pid)
            return all("TracerPid:\t0\n" not in open("/proc/%d/task/%s/status" % (pid, t)).read() for t in tasks)
        wait_for(attached, 15, "strace to attach to every thread")
        action()
    finally:
        st.send_signal(2)
        st.wait(30)
    calls = errors = 0
    with open(out) as f:
        for ln in f:
            p = ln.split()
            if p and p[-1] == "epoll_ctl":
                calls = int(p[3])
                errors = int(p[4]) if len(p) == 6 else 0
    os.unlink(out)
    return calls, errors


@test
def a_waiting_handler_costs_no_epoll_ctl():
    if not shutil.which("strace"):
        check(False, "strace is missing (tools/bootstrap installs it)")
    with Server(FIX, env={"FIX_WORKERS": "1"}) as s:
        with Conn(s.port) as c:
            c.send(b"GET /hello HTTP/1.1\r\nHost: x\r\n\r\n")
            check(c.response().status == 200, "warm-up")

            def requests():
                for i in range(N):
                    c.send(b"GET /slow?s=0.001 HTTP/1.1\r\nHost: x\r\n\r\n")
                    r = c.response()
                    check(r.status == 200 and r.body == b"slow done\n", "request %d: %r" % (i, r))
            calls, errors = strace_counts(s.proc.pid, requests)
        check(calls < N // 10, "%d waiting requests made %d epoll_ctl calls (%d failed): want almost none"
              % (N, calls, errors))
        s.assert_alive()


@test
def pipelining_while_a_handler_waits_is_answered_in_order():
    with Server(FIX, env={"FIX_WORKERS": "1"}) as s:
        with Conn(s.port) as c:
            c.send(b"GET /slow?s=0.2 HTTP/1.1\r\nHost: x\r\n\r\n")
            time.sleep(0.05)         # not a bound: the next requests come while (or after) it waits
            c.send(b"GET /hello HTTP/1.1\r\nHost: x\r\n\r\n" * 5)
            r = c.response()
            check(r.status == 200 and r.body == b"slow done\n", "first: %r" % r)
            for i in range(5):
                r = c.response()
                check(r.status == 200, "pipelined %d: %r" % (i, r))
            c.send(b"GET /hello HTTP/1.1\r\nHost: x\r\n\r\n")
            check(c.response().status == 200, "the connection goes on")
        s.assert_alive()


if __name__ == "__main__":
    run_tests()
