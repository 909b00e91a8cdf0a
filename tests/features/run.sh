#!/usr/bin/env bash
# tests/features/run.sh: runs every feature suite (tests/features/<name>/<name>.test.lua with its own
# config.lua) through `sluice test`, prints each suite's summary line, then checks what the runner
# itself reports (timeouts, failure details) on the fixtures in tests/features/runner/.
# Usage: tests/features/run.sh [suite...]   (default: all). Exit 1 if anything failed.
# SLUICE_BIN picks the binary (default build/sluice, else build-feat/sluice). The db and db_pool
# suites need DATABASE_URL. SLUICE_FEATURES_STRICT=1 also runs the specs of known bugs.
set -u
cd "$(dirname "$0")/../.." || exit 2
BIN=${SLUICE_BIN:-}
if [ -z "$BIN" ]; then
  for b in build/sluice build-feat/sluice; do [ -x "$b" ] && { BIN=$b; break; }; done
fi
[ -x "${BIN:-}" ] || { echo "run.sh: no sluice binary (build it or set SLUICE_BIN)"; exit 2; }
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
failed=0
# Limits that only catch a hang: generous, and scaled by SLUICE_TEST_SLOW (tools/test sets it for
# the sanitizer builds, 3-10x slower). Each test gets 15 s instead of the runner's default 5.
SLOW=${SLUICE_TEST_SLOW:-1}
scale() { awk -v s="$SLOW" -v n="$1" 'BEGIN { s = s < 1 ? 1 : s; printf "%d", n * s }'; }
SUITE_TIMEOUT=${SLUICE_FEATURES_TIMEOUT:-$(scale 180)}
TEST_TIMEOUT=$(scale 15)

suites=("$@")
if [ ${#suites[@]} = 0 ]; then
  for d in tests/features/*/; do
    n=$(basename "$d")
    [ -f "$d$n.test.lua" ] && suites+=("$n")
  done
  suites+=(runner)
fi

run_suite() {
  local n=$1 dir=tests/features/$1
  local t0=$SECONDS
  timeout "$SUITE_TIMEOUT" "$BIN" test --timeout "$TEST_TIMEOUT" --config "$dir/config.lua" "$dir/$n.test.lua" >"$T/$n.out" 2>"$T/$n.err"
  local rc=$?
  local summary
  summary=$(tail -n 1 "$T/$n.out")
  [ $rc = 124 ] && summary="killed after ${SUITE_TIMEOUT}s"
  [ -z "$summary" ] && summary=$(head -n 1 "$T/$n.err")
  printf '%-14s %-44s (%ds)\n' "$n" "$summary" $((SECONDS - t0))
  if [ $rc != 0 ]; then
    failed=1
    echo "---- $n: exit $rc"
    grep -v '^ok ' "$T/$n.out" | sed 's/^/    /'
    tail -n 20 "$T/$n.err" | sed 's/^/    stderr: /'
  fi
}

# runner NAME: `sluice test` on the fixtures, checking output lines and exit status
check_runner() {
  local dir=tests/features/runner bad=0 t0=$SECONDS
  want() { grep -qF -- "$2" "$1" || { echo "    runner: $3: output lacks: $2"; bad=1; }; }
  mk() { grep -n "MARK:$2" "$dir/$1" | cut -d: -f1; }
  timeout "$(scale 60)" "$BIN" test --timeout 1 --config "$dir/config.lua" "$dir/timeout.fixture.lua" >"$T/to.out" 2>&1
  local rc=$?
  [ $rc = 1 ] || { echo "    runner: timeout fixture: exit $rc, want 1"; bad=1; }
  want "$T/to.out" "FAIL timeouts > never returns" timeouts
  want "$T/to.out" "FAIL timeouts > waits for an event nobody publishes" timeouts
  want "$T/to.out" "timed out after 1" timeouts
  want "$T/to.out" "ok   timeouts > runs after them" timeouts
  want "$T/to.out" "timeout.fixture.lua:$(mk timeout.fixture.lua never): timed out after 1s waiting for done()" timeouts
  [ "$(tail -n 1 "$T/to.out")" = "1 passed, 3 failed" ] || { echo "    runner: timeouts: last line: $(tail -n 1 "$T/to.out")"; bad=1; }
  timeout "$(scale 60)" "$BIN" test --config "$dir/config.lua" "$dir/details.fixture.lua" >"$T/de.out" 2>&1
  rc=$?
  [ $rc = 1 ] || { echo "    runner: details fixture: exit $rc, want 1"; bad=1; }
  want "$T/de.out" "details.fixture.lua:3: Expected objects to be equal." details
  want "$T/de.out" "(number) 2" details
  want "$T/de.out" "(number) 1" details
  want "$T/de.out" "First difference: t.a.b: expected 1, got 2" details
  # busted's language on the event loop: done() from timers, handler errors, stubs, pending()
  timeout "$(scale 60)" "$BIN" test --config "$dir/config.lua" "$dir/busted.fixture.lua" >"$T/bu.out" 2>&1
  rc=$?
  [ $rc = 1 ] || { echo "    runner: busted fixture: exit $rc, want 1"; bad=1; }
  want "$T/bu.out" "ok   on the event loop > waits for done() from a timer" busted
  want "$T/bu.out" "ok   on the event loop > signs off tokens from several callbacks" busted
  want "$T/bu.out" "ok   on the event loop > gets the real function back in the next test" busted
  want "$T/bu.out" "skip on the event loop > can be left pending from inside: needs the v2 API" busted
  want "$T/bu.out" "busted.fixture.lua:$(mk busted.fixture.lua status): Expected response status 500 to be 200." busted
  want "$T/bu.out" "server log during the test:" busted
  want "$T/bu.out" "[error] GET /boom: $(pwd -P)/$dir/app.lua:$(mk app.lua boom): attempt to index local 'cfg'" busted
  want "$T/bu.out" "busted.fixture.lua:$(mk busted.fixture.lua cb): Expected objects to be equal." busted
  want "$T/bu.out" "(raised in a callback while the test waited for done())" busted
  [ "$(tail -n 1 "$T/bu.out")" = "4 passed, 2 failed, 1 skipped" ] || { echo "    runner: busted: last line: $(tail -n 1 "$T/bu.out")"; bad=1; }
  # the spec line the test was waiting on when its time ran out
  want "$T/to.out" "timeout.fixture.lua:4: timed out after 1s" timeouts
  if [ $bad = 0 ]; then
    printf '%-14s %-44s (%ds)\n' runner "runner checks passed" $((SECONDS - t0))
  else
    printf '%-14s %-44s (%ds)\n' runner "runner checks FAILED" $((SECONDS - t0))
    sed 's/^/    /' "$T/to.out" "$T/de.out" "$T/bu.out"
    failed=1
  fi
}

for n in "${suites[@]}"; do
  if [ "$n" = runner ]; then check_runner
  elif [ -f "tests/features/$n/$n.test.lua" ]; then run_suite "$n"
  else echo "run.sh: no suite $n"; failed=1
  fi
done
exit $failed
