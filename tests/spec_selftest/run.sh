#!/usr/bin/env bash
# run.sh: self-tests of the spec runner (lua/spec.lua) under plain luajit.
# Runs the fixtures and checks output lines and exit statuses; exits non-zero
# on any mismatch, printing what differed and the output it got.
set -u
cd "$(dirname "$0")/../.." || exit 2
export LUA_PATH="lua/?.lua;;"
SLUICE_LUA=${SLUICE_LUA:-build/sluice lua}
F=tests/spec_selftest/fixtures
D=tests/spec_selftest/driver.lua
H=tests/spec_selftest/host_driver.lua
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
failures=0
checks=0

# run NAME DRIVER ARGS... : runs one case, output in $T/out, status in $rc
run() {
  name=$1; shift
  $SLUICE_LUA "$@" >"$T/out" 2>"$T/err"
  rc=$?
  case_failed=0
}
bad() {
  echo "FAIL [$name]: $*"
  failures=$((failures + 1)); case_failed=1
}
status() { checks=$((checks + 1)); [ "$rc" = "$1" ] || bad "exit status $rc, want $1"; }
has() { checks=$((checks + 1)); grep -qF -- "$1" "$T/out" || bad "output lacks: $1"; }
lacks() { checks=$((checks + 1)); ! grep -qF -- "$1" "$T/out" || bad "output has: $1"; }
line() { checks=$((checks + 1)); grep -qxF -- "$1" "$T/out" || bad "no line exactly: $1"; }
count() { checks=$((checks + 1)); n=$(grep -cF -- "$2" "$T/out"); [ "$n" = "$1" ] || bad "'$2' appears $n times, want $1"; }
last() {
  checks=$((checks + 1)); l=$(tail -n 1 "$T/out")
  [ "$l" = "$1" ] || bad "last line '$l', want '$1'"
}
done_case() {
  if [ "$case_failed" = 1 ]; then
    echo "---- output of [$name] ----"; cat "$T/out" "$T/err"; echo "----"
  fi
}
mark() { grep -n "MARK:$2" "$F/$1" | cut -d: -f1; }

run passing $D $F/pass.lua
status 0; last "9 passed, 0 failed"; lacks "FAIL"
checks=$((checks + 1))
grep -qE '^ok   assertions > equal \([0-9]+ ms\)$' "$T/out" || bad "test line format"
done_case

run failing $D $F/fail.lua
status 1; last "1 passed, 6 failed"
line "FAIL failures > equal (0 ms)"
line "ok   failures > passes (0 ms)"
has "$F/fail.lua:$(mark fail.lua eq): expected values to be equal"
has "expected: 201"; has "actual:   500"
has "$F/fail.lua:$(mark fail.lua same): expected values to be the same"
has 't.items[2].name: expected "a", got "b"'
has 'items = { { name = "x" }, { name = "b", tags = { 1, 2 } } },'
has "t.b: expected 2, got nil"
has "$F/fail.lua:$(mark fail.lua deep): $F/helper.lua:$(mark helper.lua helper): attempt to index"
has "$F/helper.lua:$(mark helper.lua helper): in function 'explode'"
has "$F/fail.lua:$(mark fail.lua neg): expected values to differ"
has "$F/fail.lua:$(mark fail.lua custom): the flag should be set"
lacks "spec.lua:"; lacks "spec_assert.lua:"
done_case

run pending $D $F/pending.lua
status 0; last "1 passed, 0 failed, 2 skipped"
line "skip pending > not written yet"; line "skip pending > no body"
done_case

run syntax-error $D $F/syntax.lua $F/pass.lua
status 2; last "9 passed, 0 failed"
has "$F/syntax.lua:4: ')' expected"; has "1 spec file(s) did not load"
done_case

run load-error $D $F/loaderr.lua $F/pending.lua
status 2; last "1 passed, 0 failed, 2 skipped"
has "$F/loaderr.lua:$(mark loaderr.lua loaderr): attempt to index local 'cfg'"
lacks "never runs"
done_case

run hooks $D $F/hooks.lua
status 1; last "3 passed, 4 failed"
line "ok   order > is busted's (0 ms)"
line "ok   outer > inner > b (0 ms)"
count 2 "before_each: $F/hooks.lua:$(mark hooks.lua be): db not ready"
has "setup: $F/hooks.lua:$(mark hooks.lua setup): no fixture"
has "after_each: $F/hooks.lua:$(mark hooks.lua ae): cleanup failed"
line "FAIL bad setup > z (0 ms)"
done_case

run filter $D --filter 'users > create' $F/filter.lua
status 0; last "1 passed, 0 failed"; line "ok   users > create (0 ms)"; lacks "admin"
done_case
run filter-anchor $D --filter 'create$' --filter=nothing $F/filter.lua
status 0; last "2 passed, 0 failed"; has "users > admin > create"
done_case
run filter-none $D --filter 'zzz' $F/filter.lua $F/pending.lua
status 0; last "0 passed, 0 failed"
done_case

run junit $D --junit "$T/j.xml" $F/fail.lua $F/pending.lua $F/syntax.lua $F/xmlesc.lua
status 2; last "2 passed, 7 failed, 2 skipped"
cp "$T/j.xml" "$T/out"
has '<testsuites name="sluice test" tests="12" failures="7" errors="1" skipped="2"'
has '<testsuite name="tests/spec_selftest/fixtures/pending.lua" tests="3" failures="0" errors="0" skipped="2"'
has "<failure message=\"$F/fail.lua:$(mark fail.lua eq): expected values to be equal\""
has 'name="pending &gt; not written yet" time="0.000"><skipped/></testcase>'
has 'name="(load)"'; has 'xml &lt;&amp;&quot;&apos;&gt;'; has 'good é'
checks=$((checks + 1))
if command -v xmllint >/dev/null; then
  xmllint --noout "$T/j.xml" 2>"$T/err" || bad "junit XML is not well-formed: $(cat "$T/err")"
elif command -v python3 >/dev/null; then
  python3 -c 'import sys,xml.dom.minidom as m; m.parse(sys.argv[1])' "$T/j.xml" 2>"$T/err" \
    || bad "junit XML is not well-formed: $(cat "$T/err")"
fi
done_case

run junit-unwritable $D --junit /nonexistent/dir/j.xml $F/filter.lua
status 2; last "3 passed, 0 failed"; has "cannot write junit file"
done_case

run host $H --timeout 0.3 $F/host.lua
status 1; last "4 passed, 1 failed"
has "$F/host.lua:$(mark host.lua hang): timed out after 0.3s"
line "ok   host > continues after a timeout (0 ms)"
done_case

mkdir -p "$T/d/sub"
cp $F/filter.lua "$T/d/sub/users_spec.lua"; cp $F/pending.lua "$T/d/pending_spec.lua"
cp $F/pass.lua "$T/d/notaspec.lua"
run directory $D "$T/d/"
status 0; last "4 passed, 0 failed, 2 skipped"; lacks "assertions"
done_case
run directory-host-expand $H "$T/d"
status 0; last "4 passed, 0 failed, 2 skipped"
done_case
run missing-directory $D "$T/nope"
status 2; has "$T/nope: no *_spec.lua files found"; last "0 passed, 0 failed"
done_case

run tty $H --filter 'users > create' $F/filter.lua
lacks $'\e['
done_case
SPEC_TTY=1 run tty-colors $H --filter 'users > create' $F/filter.lua
has $'\e[32mok  \e[0m users > create'
done_case

run usage $D --bogus
status 2; checks=$((checks + 1)); grep -qF "unknown option --bogus" "$T/err" || bad "no usage error"
done_case
run bad-filter $D --filter '[' $F/filter.lua
status 2
done_case
run bad-timeout $D --timeout soon $F/filter.lua
status 2
done_case

if [ "$failures" -gt 0 ]; then
  echo "spec self-tests: $failures of $checks checks failed"
  exit 1
fi
echo "spec self-tests: all $checks checks passed"
