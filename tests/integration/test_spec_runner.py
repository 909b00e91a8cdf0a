"""test_spec_runner.py: what `sluice test` (the spec runner, core/testing.c) reports and leaves
behind in two situations its own self-tests cannot reach.

- A test that times out while a statement of its db.fixture() transaction is still running
  (in a handler it requested, in the spec itself, inside app.db.transaction): the test fails
  with `file:line: timed out after Ns` at the spec line it was waiting on, the next test opens
  the fixture again (it used to fail with "db fixture already open"), the timed-out test's rows
  are rolled back, and the blocking statements are cancelled on the server, not left running.
- A timed-out test is abandoned where it waits: a late answer to its request() does not resume
  it, an app.sleep loop in it does not go on ticking during the next tests.
- POST /_sluice/reload through the spec runner's request(): 503 "reload is not available in the
  spec runner", and the instance keeps serving.

The spec files are tests/integration/fixtures/spec_runner/*_spec.lua. The db case needs
DATABASE_URL (tools/test exports it; locally: export DATABASE_URL=$(tools/pg-dev start /tmp/x 5433)).
Run: python3 tests/integration/test_spec_runner.py [names]   (SLUICE_BIN overrides build/sluice)
"""
import os
import random
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import HERE, ROOT, SANITIZER_RE, SLUICE_BIN, check, run_tests, scaled, test  # noqa: E402

FIX = os.path.join(HERE, "fixtures", "spec_runner")
REL = os.path.relpath(FIX, ROOT)           # how the runner names the spec files (run from ROOT)


def mark(name, tag):
    """The line of `-- MARK:tag` in a fixture file."""
    with open(os.path.join(FIX, name)) as f:
        for i, line in enumerate(f, 1):
            if "MARK:" + tag in line:
                return i
    raise AssertionError("no MARK:%s in %s" % (tag, name))


def sluice_test(spec, timeout, env=None):
    """`sluice test --timeout N` on one fixture spec, from the repository root: (exit, output lines)."""
    e = dict(os.environ)
    e.update(env or {})
    p = subprocess.run([SLUICE_BIN, "test", "--timeout", str(timeout), "--config", os.path.join(REL, "config.lua"),
                        os.path.join(REL, spec)], cwd=ROOT, env=e, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                       timeout=scaled(120))
    out = p.stdout.decode("utf-8", "replace")
    check(not SANITIZER_RE.search(out), "sanitizer report:\n" + out)
    return p.returncode, out.splitlines(), out


def has_line(lines, want, out):
    check(any(ln.strip() == want for ln in lines), "output lacks the line %r:\n%s" % (want, out))


@test
def db_fixture_released_after_a_timeout():
    url = os.environ.get("DATABASE_URL")
    check(url, "this test needs DATABASE_URL (a PostgreSQL it may create tables in)")
    # the spec timeout is the time the blocking tests take; the last test polls the server for
    # the cancelled statements for at most 3 s of it (both scaled for sanitizer builds)
    t = int(scaled(4))
    table = "spec_runner_%d_%d" % (os.getpid(), random.randint(0, 1 << 20))
    rc, lines, out = sluice_test("db_timeout_spec.lua", t, {"SPEC_TABLE": table, "SPEC_POLL_SECONDS": str(scaled(3))})
    spec = os.path.join(REL, "db_timeout_spec.lua")
    f = "timeouts > in db.fixture() > "
    for name in ("blocks in a handler's statement", "blocks in its own statement", "blocks inside app.db.transaction"):
        check(any(ln.startswith("FAIL " + f + name + " (") for ln in lines), "no FAIL line for %r:\n%s" % (name, out))
    for name in ("opens the fixture after a handler timed out", "opens the fixture after the spec timed out",
                 "opens the fixture after a transaction timed out"):
        check(any(ln.startswith("ok   " + f + name + " (") for ln in lines), "no ok line for %r:\n%s" % (name, out))
    check(any(ln.startswith("ok   timeouts > left no row and no statement running (") for ln in lines),
          "the final check did not pass:\n" + out)
    # each failure is the timeout, at the spec line the test was waiting on
    for tag in ("handler", "spec", "tx"):
        has_line(lines, "%s:%d: timed out after %ds" % (spec, mark("db_timeout_spec.lua", tag), t), out)
    check("db fixture already open" not in out, "a fixture stayed open:\n" + out)
    check(not any(ln.startswith("FAIL timeouts > teardown") for ln in lines), "the teardown failed:\n" + out)
    check(lines and lines[-1] == "4 passed, 3 failed", "summary: %r\n%s" % (lines[-1] if lines else None, out))
    check(rc == 1, "exit status %d, want 1:\n%s" % (rc, out))


@test
def a_timed_out_test_is_abandoned():
    # no database: a request whose answer comes after the timeout, an app.sleep loop
    t = int(scaled(2))
    rc, lines, out = sluice_test("abandon_spec.lua", t, {"DATABASE_URL": ""})
    spec = os.path.join(REL, "abandon_spec.lua")
    f = "a timed-out test > "
    for name, tag in (("waits for a late answer", "late"), ("sleeps in a loop", "loop")):
        check(any(ln.startswith("FAIL " + f + name + " (") for ln in lines), "no FAIL line for %r:\n%s" % (name, out))
        has_line(lines, "%s:%d: timed out after %ds" % (spec, mark("abandon_spec.lua", tag), t), out)
    for name in ("is not resumed by that answer", "does not go on looping"):
        check(any(ln.startswith("ok   " + f + name + " (") for ln in lines), "no ok line for %r:\n%s" % (name, out))
    check(lines and lines[-1] == "2 passed, 2 failed", "summary: %r\n%s" % (lines[-1] if lines else None, out))
    check(rc == 1, "exit status %d, want 1:\n%s" % (rc, out))


@test
def reload_answers_503_in_the_spec_runner():
    rc, lines, out = sluice_test("reload_spec.lua", int(scaled(5)), {"DATABASE_URL": ""})
    s = "POST /_sluice/reload in the spec runner > "
    for name in ("answers 503 with the reason, then the next request works",
                 "still needs the admin header first (403), and keeps serving", "refuses again when asked twice in a row"):
        check(any(ln.startswith("ok   " + s + name + " (") for ln in lines), "no ok line for %r:\n%s" % (name, out))
    check(lines and lines[-1] == "3 passed, 0 failed", "summary: %r\n%s" % (lines[-1] if lines else None, out))
    check(rc == 0, "exit status %d, want 0:\n%s" % (rc, out))


if __name__ == "__main__":
    run_tests()
