"""test_lua_budget.py: the per-state Lua memory budget (limits.lua_memory) and deadlines that hold
for long C calls (issue 14, item 7).

- string.rep("x", 2^30) in a handler is refused by the budget at once: a 500 naming file:line and
  limits.lua_memory, and the RSS never grows (read from /proc/PID/status, generous bounds).
- A Lua loop that keeps every table it makes is stopped at the budget; the memory comes back
  (full collection after the stop) and the state stays usable: the same work fits again.
- A long C call that allocates as it goes (gsub on 32 MB, no Lua in between, so the count hook
  never runs) is stopped at limits.script_timeout instead of running to its end.
- A reload whose script allocates 1 GB at load time is rejected at once with the file named, and
  the old code keeps serving; config.lua runs under the default budget.
- lua_memory = 0 turns the budget off; bad values are config errors.

Run: SLUICE_BIN=$PWD/build/sluice python3 tests/integration/test_lua_budget.py [names]
"""
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import HERE, SLUICE_BIN, Server, check, get, run_tests, test, wait_for  # noqa: E402

FIX = os.path.join(HERE, "fixtures", "sec_budget")
MB = 1024 * 1024


def server(mem=None, timeout=None, fixture=FIX, gsub=None):
    env = {}
    if gsub is not None:
        env["FIX_GSUB"] = str(gsub)
    if mem is not None:
        env["FIX_LUA_MEMORY"] = str(mem)
    if timeout is not None:
        env["FIX_SCRIPT_TIMEOUT"] = str(timeout)
    return Server(fixture, env=env)


def rss(srv):
    """VmRSS of the server process, in bytes."""
    with open("/proc/%d/status" % srv.proc.pid) as f:
        for ln in f:
            if ln.startswith("VmRSS:"):
                return int(ln.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def error_of(body):
    try:
        return json.loads(body).get("error", "")
    except ValueError:
        return body.decode("latin-1")


@test
def string_rep_2_30_is_refused_by_the_budget():
    with server(mem=64) as s:
        base = rss(s)
        for _ in range(3):
            st, _, body = get(s.port, "/rep", timeout=60)
            e = error_of(body)
            check(st == 500 and "Lua memory budget exceeded (limits.lua_memory = 64 MB)" in e and "app.lua:6:" in e,
                  "%d %r" % (st, body[:300]))
            s.assert_alive()
        grown = rss(s) - base
        check(grown < 100 * MB, "RSS grew by %.0f MB" % (grown / MB))
        check("GET /rep: " in s.log() and "sec_budget/app.lua:6: Lua memory budget exceeded" in s.log(),
              "logged with file:line: %r" % s.log()[-1500:])


@test
def the_default_budget_is_on():
    with server() as s:
        st, _, body = get(s.port, "/rep", timeout=60)
        check(st == 500 and "limits.lua_memory = 512 MB" in error_of(body), "%d %r" % (st, body[:300]))
        s.assert_alive()


@test
def a_table_loop_is_stopped_and_its_memory_returned():
    with server(mem=64) as s:
        base = rss(s)
        for round_ in range(2):
            st, _, body = get(s.port, "/tables", timeout=60)
            e = error_of(body)
            check(st == 500 and "Lua memory budget exceeded (limits.lua_memory = 64 MB)" in e and "app.lua:" in e,
                  "round %d: %d %r" % (round_, st, body[:300]))
            # the memory comes back to the process's neighbours: the stop collects the run's tables
            wait_for(lambda: rss(s) - base < 48 * MB, 15, "RSS back within 48 MB of the start (now +%.0f MB)"
                     % ((rss(s) - base) / MB))
            # and to the budget: 16 MB of tables fit again, the state is usable
            st, _, body = get(s.port, "/alloc/16", timeout=60)
            check(st == 200 and body == b"262144", "after the stop, /alloc/16: %d %r" % (st, body[:200]))
            s.assert_alive()


@test
def a_long_c_call_stops_at_script_timeout():
    # gsub over 32 MB: one C call, its output buffer doubling as it goes, no Lua instruction in
    # between, so the count hook cannot fire; the allocator refuses once the deadline passed.
    # (Without it the call runs to its end and answers 200 with the length.)
    # A 20 ms deadline keeps the case independent of the machine's speed: the call takes ~1 s
    # here, and its last buffer growths come well after 20 ms on any machine.
    # The 32 MB input is built at load (FIX_GSUB), so the run is the gsub alone.
    with server(mem=512, timeout=0.02, gsub=25) as s:
        st, _, body = get(s.port, "/gsub/25", timeout=60)
        e = error_of(body)
        check(st == 500 and "script ran too long without yielding (limits.script_timeout)" in e and "app.lua:" in e,
              "%d %r" % (st, body[:300]))
        s.assert_alive()
        st, _, body = get(s.port, "/gsub/10")
        check(st == 200 and body == b"2048", "a short gsub still works: %d %r" % (st, body))


@test
def a_timer_over_the_budget_is_stopped_and_logged():
    with server(mem=64) as s:
        base = rss(s)
        st, _, body = get(s.port, "/timer-hog")
        check(st == 200 and body == b"armed\n", "%d %r" % (st, body))
        wait_for(lambda: "timer callback failed: " in s.log() and "Lua memory budget exceeded" in s.log(), 20,
                 "the timer's stop in the log")
        wait_for(lambda: rss(s) - base < 48 * MB, 15, "RSS back after the timer's stop")
        s.assert_alive()
        st, _, body = get(s.port, "/alloc/16", timeout=60)
        check(st == 200, "the budget is free again: %d %r" % (st, body[:200]))


@test
def a_handler_may_catch_the_refusal():
    with server(mem=64) as s:
        st, _, body = get(s.port, "/pcall-rep", timeout=60)
        check(st == 200 and json.loads(body) == {"ok": False, "err": "not enough memory"}, "%d %r" % (st, body))
        s.assert_alive()


@test
def lua_memory_zero_turns_the_budget_off():
    with server(mem=16) as s:
        st, _, body = get(s.port, "/alloc/32", timeout=60)
        check(st == 500 and "limits.lua_memory = 16 MB" in error_of(body), "budget 16: %d %r" % (st, body[:200]))
    with server(mem=0) as s:
        st, _, body = get(s.port, "/alloc/32", timeout=60)
        check(st == 200 and body == b"524288", "budget off: %d %r" % (st, body[:200]))


@test
def a_reload_with_a_huge_load_time_allocation_is_rejected():
    d = tempfile.mkdtemp(prefix="sluice-budget-reload-")
    try:
        shutil.copytree(FIX, d, dirs_exist_ok=True)
        with server(mem=64, fixture=d) as s:
            with open(os.path.join(d, "app.lua"), "a") as f:
                f.write('\napp.get("/v2", function() return "v2\\n" end)\nlocal big = string.rep("x", 2 ^ 30)\n')
            s.proc.send_signal(signal.SIGHUP)          # the server's own reload path

            def failed():
                st = json.loads(get(s.port, "/_sluice/status")[2])
                return st["reload_failures"] == 1 and st
            wait_for(failed, 20, "the reload to be rejected")
            st = json.loads(get(s.port, "/_sluice/status")[2])
            err = st["last_reload_error"] or ""
            check("app.lua: loading stopped: over the Lua memory budget (limits.lua_memory = 64 MB)" in err,
                  "last_reload_error: %r" % err)
            check(st["reloads"] == 0, "nothing was swapped in: %r" % st["reloads"])
            check(get(s.port, "/v2")[0] == 404, "the new route is not live")
            s.assert_alive()                           # the old code keeps serving
            env = dict(os.environ, PORT=str(s.port), FIX_LUA_MEMORY="64")
            t = subprocess.run([SLUICE_BIN, "reload", "--config", os.path.join(d, "config.lua")], env=env,
                               capture_output=True, text=True, timeout=60)
            check(t.returncode == 1 and "app.lua: loading stopped: over the Lua memory budget" in t.stderr,
                  "sluice reload: %d %r" % (t.returncode, t.stderr))
            s.assert_alive()
        # config.lua itself runs under the default budget (512 MB)
        with open(os.path.join(d, "config.lua"), "w") as f:
            f.write('local big = string.rep("x", 2 ^ 30)\nreturn {}\n')
        t = subprocess.run([SLUICE_BIN, "check", "--config", os.path.join(d, "config.lua")], capture_output=True,
                           text=True, timeout=60)
        check(t.returncode == 1 and "config.lua: loading stopped: over the Lua memory budget (limits.lua_memory = 512 MB)"
              in t.stderr, "check: %d %r" % (t.returncode, t.stderr))
    finally:
        shutil.rmtree(d, ignore_errors=True)


@test
def bad_lua_memory_values_are_config_errors():
    d = tempfile.mkdtemp(prefix="sluice-budget-cfg-")
    try:
        for v in ("-1", "1.5", '"64MB"', "2^21"):
            with open(os.path.join(d, "config.lua"), "w") as f:
                f.write("return { scripts = {}, limits = { lua_memory = %s } }\n" % v)
            t = subprocess.run([SLUICE_BIN, "check", "--config", os.path.join(d, "config.lua")],
                               capture_output=True, text=True, timeout=60)
            check(t.returncode == 1 and "limits.lua_memory" in t.stderr, "%s: %d %r" % (v, t.returncode, t.stderr))
    finally:
        shutil.rmtree(d, ignore_errors=True)


if __name__ == "__main__":
    run_tests()
