"""test_lua_jit_guard.py: the runaway guard with LuaJIT's JIT on, under the default config (issue 21,
section 1). Runs are not watched by a hook while on time; the watchdog thread sets the hook on a run
once it is past limits.script_timeout (docs/operations.md, "Runaway Lua").

- The JIT is on by default and compiles handler loops; no hook is set while runs are on time, nor
  after a stopped one.
- Runaways the hook or the allocator reaches are stopped with a 500 and the worker keeps serving:
  string building (a growing string, parts into a table, string.format), a pattern match the JIT
  does not compile, a loop that swallows every error with pcall, a pcall-wrapped loop followed by a
  second one; a handler that catches the stop answers within its grace.
- Loops whose compiled code never leaves its trace (`while true do end`, a numeric for, a loop
  whose callee is inlined, the same inside pcall) cannot be stopped by anything LuaJIT offers: the
  watchdog sees no hook call and the thread sampled in JIT-compiled code, logs which request it was
  and ends the process with status 70 for its supervisor to restart, never before the deadline
  plus LUA_WATCHDOG_STUCK (1 s).
- Timer callbacks are held the same way (stopped and logged, or the last resort naming the timer).
- A long C call without Lua or allocation (waiting 2 s for a child process) is not mistaken for a
  stuck trace: it runs to its end, then the run is stopped (500), and the server lives on.
- limits.jit = false keeps the interpreter: every runaway, `while true do end` included, is a 500.
- A reload whose script loops at its top level is rejected at the 10 s load deadline (loading runs
  interpreted, so a reload never meets the last resort) and the old code keeps serving.
- All of it again with the real default script_timeout (5 s).

Most cases use script_timeout = 1 s (FIX_SCRIPT_TIMEOUT) to stay short; nothing else differs from
the defaults. Timing checks are lower bounds only (a run is never stopped before its deadline).

Run: SLUICE_BIN=$PWD/build/sluice python3 tests/integration/test_lua_jit_guard.py [names]
"""
import json
import os
import shutil
import signal
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import HERE, Server, check, get, run_tests, test, wait_for  # noqa: E402

FIX = os.path.join(HERE, "fixtures", "jit_guard")
RAN_TOO_LONG = "script ran too long without yielding (limits.script_timeout)"
STUCK_AFTER = 1.0            # LUA_WATCHDOG_STUCK
EXIT_STUCK = 70              # LUA_WATCHDOG_EXIT


def server(timeout=1, jit=True, fixture=FIX):
    env = {}
    if timeout is not None:
        env["FIX_SCRIPT_TIMEOUT"] = str(timeout)
    if not jit:
        env["FIX_JIT"] = "false"
    return Server(fixture, env=env)


def error_of(body):
    try:
        return json.loads(body).get("error", "")
    except ValueError:
        return body.decode("latin-1")


def timed_get(s, path, timeout=60):
    t0 = time.monotonic()
    st, _, body = get(s.port, path, timeout=timeout)
    return st, body, time.monotonic() - t0


def no_hook(s):
    st, _, body = get(s.port, "/hook")
    check(st == 200 and json.loads(body) == {"hook": False}, "no hook is set between runs: %d %r" % (st, body))


def stopped(s, path, timeout, messages=(RAN_TOO_LONG,)):
    try:
        st, body, took = timed_get(s, path)
    except OSError as e:
        raise AssertionError("%s: %r; server log:\n%s" % (path, e, s.log()[-2500:]))
    e = error_of(body)
    check(st == 500 and any(m in e for m in messages), "%s: %d %r" % (path, st, body[:300]))
    check(took >= timeout * 0.9, "%s was stopped after %.2f s, before its %.1f s deadline" % (path, took, timeout))
    s.assert_alive()
    no_hook(s)


@test
def the_jit_is_on_by_default_and_no_hook_is_set():
    with server(timeout=None) as s:
        st, _, body = get(s.port, "/jit")
        check(st == 200 and json.loads(body) == {"on": True, "compiled": True, "x": 300000},
              "the JIT compiles the handler's loop: %d %r" % (st, body))
        no_hook(s)


@test
def runaways_the_hook_or_the_allocator_reach_are_stopped_with_500():
    with server() as s:
        for path in ("/run/concat", "/run/parts", "/run/format", "/run/find"):
            stopped(s, path, 1.0)
        # a loop that catches every stop goes on only until its grace is used up; a memory
        # stop is as good as a deadline one here (the JIT allocates fast)
        stopped(s, "/run/pcall-forever", 1.0, (RAN_TOO_LONG, "Lua memory budget exceeded"))
        stopped(s, "/run/pcall-concat", 1.0, (RAN_TOO_LONG, "Lua memory budget exceeded"))
        check("GET /run/find: " in s.log() and "app.lua:" in s.log() and "stack traceback" in s.log(),
              "the stops are logged with file:line and a traceback: %r" % s.log()[-1500:])
        st, _, body = get(s.port, "/jit")
        check(st == 200 and json.loads(body)["on"] is True, "the JIT is still on after the stops: %r" % body)


@test
def the_string_table_is_never_refused_inside_compiled_code():
    # /run/parts after /run/concat: the collector, stepping inside the compiled loop, shrinks
    # and grows LuaJIT's string table; refusing that allocation there crashed the process
    # (segfault in LuaJIT's unwinder, about one pair in two) before the allocator let it pass.
    with server() as s:
        for _ in range(5):
            stopped(s, "/run/concat", 1.0)
            stopped(s, "/run/parts", 1.0)


@test
def a_handler_that_catches_the_stop_answers_in_its_grace():
    with server() as s:
        st, body, took = timed_get(s, "/run/caught")
        r = json.loads(body) if st == 200 else {}
        check(st == 200 and r.get("ok") is False and (r.get("err") == "not enough memory" or RAN_TOO_LONG in r.get("err", "")),
              "%d %r" % (st, body[:300]))
        check(took >= 0.9, "caught after %.2f s" % took)
        s.assert_alive()
        no_hook(s)


def ends_the_process(path, timeout):
    """GET path on a fresh server: no answer, the process exits with 70 and says why."""
    s = server(timeout=timeout).start()
    try:
        t0 = time.monotonic()
        try:
            st, _, body = get(s.port, path, timeout=timeout + 30)
            check(False, "%s answered %d %r instead of ending the process" % (path, st, body[:200]))
        except OSError:
            pass                        # the connection goes down with the process
        rc = s.wait(timeout + 30)
        took = time.monotonic() - t0
        log = s.log()
        check(rc == EXIT_STUCK, "%s: exit status %r (want %d); log:\n%s" % (path, rc, EXIT_STUCK, log[-2000:]))
        check("a Lua run (GET %s) is still going" % path in log and "JIT-compiled code that never returns to the "
              "interpreter" in log and "ending the process with status 70" in log,
              "%s: the last resort says which request and why: %r" % (path, log[-2000:]))
        check(took >= timeout + STUCK_AFTER * 0.9, "%s: the process ended after %.2f s, before the deadline (%.1f s) "
              "plus %.1f s" % (path, took, timeout, STUCK_AFTER))
    finally:
        s.cleanup()


@test
def a_loop_that_never_leaves_its_trace_ends_the_process():
    for path in ("/stuck/while", "/stuck/for", "/stuck/call", "/stuck/pcall"):
        ends_the_process(path, 1)


@test
def timer_callbacks_are_held_the_same_way():
    with server() as s:
        st, _, body = get(s.port, "/timer/run")
        check(st == 200 and body == b"armed\n", "%d %r" % (st, body))
        wait_for(lambda: "timer callback failed: " in s.log() and RAN_TOO_LONG in s.log(), 20,
                 "the runaway timer's stop in the log")
        s.assert_alive()
        no_hook(s)
    s = server().start()
    try:
        st, _, body = get(s.port, "/timer/stuck")
        check(st == 200 and body == b"armed\n", "%d %r" % (st, body))
        rc = s.wait(30)
        check(rc == EXIT_STUCK and "a Lua run (an app.timer callback) is still going" in s.log(),
              "exit status %r; log %r" % (rc, s.log()[-1500:]))
    finally:
        s.cleanup()


@test
def a_long_c_call_is_not_mistaken_for_a_stuck_trace():
    # os.execute("sleep 2"): 2 s in one C call (waiting for the child), no Lua and no allocation.
    # The watchdog samples it outside compiled code, so it is never judged stuck (its signals do
    # not break the wait either); once it returns, the overdue run is stopped at its next
    # instruction.
    with server(timeout=0.2) as s:
        st, body, took = timed_get(s, "/cwait")
        check(st == 500 and RAN_TOO_LONG in error_of(body), "%d %r" % (st, body[:300]))
        check(took >= 2.0, "the wait was cut short: %.2f s" % took)
        s.assert_alive()
        no_hook(s)


@test
def limits_jit_false_keeps_the_interpreter_and_stops_every_runaway():
    with server(jit=False) as s:
        st, _, body = get(s.port, "/jit")
        check(st == 200 and json.loads(body) == {"on": False, "compiled": False, "x": 300000}, "%d %r" % (st, body))
        for path in ("/stuck/while", "/stuck/for", "/stuck/call", "/run/find"):
            stopped(s, path, 1.0)
        st, _, body = get(s.port, "/stuck/pcall")      # caught, and answered in the grace
        check(st == 200 and body == b"false", "%d %r" % (st, body[:300]))
        s.assert_alive()


@test
def a_reload_whose_script_loops_at_load_is_rejected_and_the_old_code_serves():
    d = tempfile.mkdtemp(prefix="sluice-jit-guard-reload-")
    try:
        shutil.copytree(FIX, d, dirs_exist_ok=True)
        with server(fixture=d) as s:
            with open(os.path.join(d, "app.lua"), "a") as f:
                f.write('\napp.get("/v2", function() return "v2\\n" end)\nwhile true do end\n')
            s.proc.send_signal(signal.SIGHUP)

            def failed():
                st = json.loads(get(s.port, "/_sluice/status")[2])
                return st["reload_failures"] == 1 and st
            wait_for(failed, 40, "the reload to be rejected at the load deadline")
            err = json.loads(get(s.port, "/_sluice/status")[2])["last_reload_error"] or ""
            check("loading took longer than the 10 s load deadline" in err and "app.lua" in err,
                  "last_reload_error: %r" % err)
            check(get(s.port, "/v2")[0] == 404, "the new route is not live")
            s.assert_alive()
            st, _, body = get(s.port, "/jit")
            check(st == 200 and json.loads(body)["on"] is True, "the old state still runs with the JIT: %r" % body)
    finally:
        shutil.rmtree(d, ignore_errors=True)


@test
def with_the_default_5_s_script_timeout_runaways_are_stopped():
    with server(timeout=None) as s:
        stopped(s, "/run/find", 5.0)
        stopped(s, "/run/concat", 5.0)


@test
def with_the_default_5_s_script_timeout_a_stuck_trace_ends_the_process():
    ends_the_process("/stuck/for", 5)


if __name__ == "__main__":
    run_tests()
