#!/usr/bin/env bash
# run.sh: self-tests of the spec runner (lua/spec*.lua) through `sluice lua` drivers: the plain
# driver (no event loop) and host_driver.lua (a stand-in host with coroutines and a timeout).
# Runs the fixtures and checks output lines and exit statuses. Every failing check prints its own
# line (`FAIL [case]: ...`) and the output of its case; exits non-zero on any failure.
# Nothing here depends on the machine's speed: durations are matched as "([0-9]+ ms)".
set -u
cd "$(dirname "$0")/../.." || exit 2
ROOT=$PWD
BIN=${SLUICE_BIN:-$ROOT/build/sluice}
SLUICE_LUA=${SLUICE_LUA:-$BIN lua --config $ROOT/tests/spec_selftest/fixtures/config.lua}
F=tests/spec_selftest/fixtures
D=$ROOT/tests/spec_selftest/driver.lua
H=$ROOT/tests/spec_selftest/host_driver.lua
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
failures=0
checks=0

# run NAME DRIVER ARGS... : runs one case, output in $T/out, stderr in $T/err, status in $rc
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
err_has() { checks=$((checks + 1)); grep -qF -- "$1" "$T/err" || bad "stderr lacks: $1"; }
lacks() { checks=$((checks + 1)); ! grep -qF -- "$1" "$T/out" "$T/err" || bad "output has: $1"; }
line() { checks=$((checks + 1)); grep -qxF -- "$1" "$T/out" || bad "no line exactly: $1"; }
# tline 'ok   a > b': that test line, whatever its duration
tline() {
  checks=$((checks + 1))
  local re
  re=$(printf '%s' "$1" | sed 's/[][\.*^$()+?{}|/]/\\&/g')
  grep -qE -- "^$re \([0-9]+ ms\)\$" "$T/out" || bad "no test line: $1 (N ms)"
}
count() { checks=$((checks + 1)); n=$(grep -cF -- "$2" "$T/out"); [ "$n" = "$1" ] || bad "'$2' appears $n times, want $1"; }
last() {
  checks=$((checks + 1)); l=$(tail -n 1 "$T/out")
  [ "$l" = "$1" ] || bad "last line '$l', want '$1'"
}
done_case() {
  if [ "$case_failed" = 1 ]; then
    echo "---- output of [$name] ----"; cat "$T/out"; echo "---- stderr ----"; cat "$T/err"; echo "----"
  fi
}
mark() { grep -n "MARK:$2" "$F/$1" | cut -d: -f1; }

run passing $D $F/pass.lua
status 0; last "9 passed, 0 failed"; lacks "FAIL"
tline "ok   assertions > equal"
done_case

run failing $D $F/fail.lua
status 1; last "1 passed, 6 failed"
tline "FAIL failures > equal"; tline "ok   failures > passes"
has "$F/fail.lua:$(mark fail.lua eq): Expected objects to be equal."
has "Passed in:"; has "(number) 500"; has "Expected:"; has "(number) 201"
has "$F/fail.lua:$(mark fail.lua same): Expected objects to be the same."
has 'First difference: t.items[2].name: expected "a", got "b"'
has "*[name] = 'b'"
has "First difference: t.b: expected 2, got nil"
has "$F/fail.lua:$(mark fail.lua deep): $F/helper.lua:$(mark helper.lua helper): attempt to index"
has "$F/helper.lua:$(mark helper.lua helper): in function 'explode'"
has "$F/fail.lua:$(mark fail.lua neg): Expected objects to not be equal."
has "$F/fail.lua:$(mark fail.lua custom): the flag should be set"
lacks "lua/spec"; lacks "luassert/"
done_case

run pending $D $F/pending.lua
status 0; last "1 passed, 0 failed, 3 skipped"
line "skip pending > not written yet"; line "skip pending > no body"
line "skip pending > stops as pending: waits for the new API"
lacks "never reached"
done_case

run all-pending $D $F/allpending.lua
status 2; last "0 passed, 0 failed, 2 skipped"
has "sluice test: no test ran: all 2 selected test(s) are pending"
done_case

run no-tests $D $F/notests.lua
status 2; last "0 passed, 0 failed"; has "sluice test: the spec files define no tests"
done_case

run syntax-error $D $F/syntax.lua $F/pass.lua
status 2; last "9 passed, 0 failed"
has "$F/syntax.lua:4: ')' expected"; has "1 spec file(s) did not load"
done_case

run load-error $D $F/loaderr.lua $F/pending.lua
status 2; last "1 passed, 0 failed, 3 skipped"
has "$F/loaderr.lua:$(mark loaderr.lua loaderr): attempt to index local 'cfg'"
lacks "never runs"
done_case

run misuse $D $F/misuse.lua
status 2; has "$F/misuse.lua:$(mark misuse.lua misuse): it expects a name and a function"
lacks "lua/spec"
done_case

run hooks $D $F/hooks.lua
status 1; last "3 passed, 6 failed"
tline "ok   order > is busted's"; tline "ok   outer > inner > b"
count 2 "before_each: $F/hooks.lua:$(mark hooks.lua be): db not ready"
has "setup: $F/hooks.lua:$(mark hooks.lua setup): no fixture"
has "after_each: $F/hooks.lua:$(mark hooks.lua ae): cleanup failed"
count 2 "lazy_setup: $F/hooks.lua:$(mark hooks.lua lazy): no lazy fixture"
tline "FAIL bad setup > z"
lacks "must not"
done_case

run async $D $F/async.lua
status 1; last "3 passed, 1 failed"
tline "ok   done > signs off tokens in order"; tline "ok   done > refuses an unexpected token"
has "returned without calling done()"
done_case

run language $D $F/language.lua
status 0; last "14 passed, 0 failed"
done_case
grep -oE 'randomize > r[0-9]' "$T/out" | tr -d '\n' >"$T/order1"
run language-again $D $F/language.lua
grep -oE 'randomize > r[0-9]' "$T/out" | tr -d '\n' >"$T/order2"
checks=$((checks + 2))
[ "$(cat "$T/order1")" != "randomize > r1randomize > r2randomize > r3randomize > r4randomize > r5randomize > r6randomize > r7randomize > r8" ] \
  || bad "randomize(7) kept the file order"
cmp -s "$T/order1" "$T/order2" || bad "randomize(7) gave two orders: $(cat "$T/order1") / $(cat "$T/order2")"
done_case

# filters and tags: --filter matches busted's space-joined name and sluice's "a > b"
run filter $D --filter 'users > create' $F/filter.lua
status 0; last "1 passed, 0 failed"; tline "ok   users > create"; lacks "admin"
done_case
run filter-busted-name $D --filter 'users admin' $F/filter.lua
status 0; last "1 passed, 0 failed"; tline "ok   users > admin > create"
done_case
run filter-anchor $D --filter 'create$' --filter=nothing $F/filter.lua
status 0; last "2 passed, 0 failed"; has "users > admin > create"
done_case
run filter-out $D --filter-out 'admin' $F/filter.lua
status 0; last "2 passed, 0 failed"; lacks "admin"
done_case
run filter-none $D --filter 'zzz' $F/filter.lua $F/pending.lua
status 2; last "0 passed, 0 failed"
has "sluice test: no test matches --filter \"zzz\" (7 test(s) in 2 file(s))"
done_case
run tags $D --tags slow $F/tags.lua
status 0; last "2 passed, 0 failed"; has "api #slow > lists"; lacks "parser"
done_case
run tags-exclude $D --exclude-tags db,fast $F/tags.lua
status 0; last "2 passed, 0 failed"; has "api #slow > lists"; has "parser > rejects"; lacks "#db"
done_case
run tags-none $D --tags nosuchtag $F/tags.lua
status 2; has "sluice test: no test matches --tags nosuchtag"
done_case
run tags-conflict $D --tags db --exclude-tags db $F/tags.lua
status 2; err_has "cannot use --tags and --exclude-tags for the same tag"
done_case

run junit $D --junit "$T/j.xml" $F/fail.lua $F/pending.lua $F/syntax.lua $F/xmlesc.lua
status 2; last "2 passed, 7 failed, 3 skipped"
cp "$T/j.xml" "$T/out"
has '<testsuites name="sluice test" tests="13" failures="5" errors="3" skipped="3"'
has '<testsuite name="tests/spec_selftest/fixtures/pending.lua" tests="4" failures="0" errors="0" skipped="3"'
has "<failure message=\"$F/fail.lua:$(mark fail.lua eq): Expected objects to be equal.\""
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

# output handlers
run out-tap $D -o TAP $F/fail.lua
status 1; last "1..7"; has "not ok 1 - failures equal"; has "ok 7 - failures passes"
has "# Failure message: $F/fail.lua:$(mark fail.lua eq): Expected objects to be equal."
done_case
run out-plain $D -o plainTerminal $F/fail.lua $F/pending.lua
status 1; has "2 successes / 5 failures / 1 error / 3 pending"; has "Failure -> $F/fail.lua @ 5"
done_case
run out-utf $D -o utfTerminal $F/filter.lua
status 0; has "3 successes / 0 failures / 0 errors / 0 pending"; has "●●●"
done_case
run out-json $D -o json $F/fail.lua
status 1
checks=$((checks + 1))
python3 -c '
import json, sys
d = json.load(open(sys.argv[1]))
assert len(d["successes"]) == 1 and len(d["failures"]) == 5 and len(d["errors"]) == 1, d.keys()
assert d["failures"][0]["name"] == "failures equal", d["failures"][0]["name"]
assert d["failures"][0]["trace"]["currentline"] == 5
' "$T/out" 2>"$T/err.py" || bad "json output: $(cat "$T/err.py")"
done_case
run out-junit $D -o junit $F/filter.lua
status 0; has '<testsuites name="sluice test" tests="3" failures="0" errors="0" skipped="0"'
done_case
run out-unknown $D -o nosuch $F/filter.lua
status 2; err_has 'unknown output "nosuch"'
done_case

# order, repetition, stopping, listing, prelude code
run repeat $D --repeat 3 $F/filter.lua
status 0; last "9 passed, 0 failed"; has "--- run 3 of 3"
done_case
run shuffle-seed $D --shuffle --seed 11 $F/filter.lua $F/tags.lua
status 0; has "sluice test: random order, seed 11 (rerun with --seed 11)"; last "7 passed, 0 failed"
grep -E '^ok ' "$T/out" >"$T/shuf1"
done_case
run shuffle-seed-again $D --shuffle --seed 11 $F/filter.lua $F/tags.lua
grep -E '^ok ' "$T/out" >"$T/shuf2"
checks=$((checks + 1))
[ "$(sed 's/ (.*//' "$T/shuf1")" = "$(sed 's/ (.*//' "$T/shuf2")" ] || bad "--seed 11 gave two different orders"
done_case
run no-keep-going $D --no-keep-going $F/fail.lua
status 1; last "0 passed, 1 failed"
done_case
run list $D --list --tags slow $F/tags.lua
status 0; line "$F/tags.lua:2: api #slow > lists"; line "$F/tags.lua:3: api #slow > creates #db"; lacks "parser"
done_case
printf 'describe("e", function() it("sees -e globals", function() assert.equal("hi", greeting) end) end)\n' >"$T/greet.lua"
run prelude $D -e 'greeting = "hi"' "$T/greet.lua"
status 0; last "1 passed, 0 failed"
done_case
run prelude-error $D -e 'error("boom")' $F/filter.lua
status 2; err_has "boom"
done_case

run expose-across-files $D $F/exposer.lua $F/exposed.lua
status 0; last "2 passed, 0 failed"
done_case
run sort $D --sort $F/order.lua
status 0; checks=$((checks + 1))
[ "$(grep -oE 'order > [ab]' "$T/out" | tr -d '\n')" = "order > aorder > b" ] || bad "--sort did not sort"
done_case
run suppress-pending $D --suppress-pending $F/order.lua
status 0; lacks "skip order"; last "2 passed, 0 failed, 1 skipped"
done_case
run lazy $D --lazy $F/hooks.lua
status 1; has "lazy_setup: $F/hooks.lua:$(mark hooks.lua setup): no fixture"
done_case
mkdir -p "$T/lib" "$T/lp"
printf 'return { answer = 42 }\n' >"$T/lib/answer_mod.lua"
printf 'local m = require "answer_mod"\ndescribe("lpath", function() it("finds the module", function() assert.equal(42, m.answer) end) end)\n' >"$T/lp/lpath_spec.lua"
printf 'helped = "yes"\n' >"$T/lp/helper.lua"
printf 'describe("helper", function() it("ran first", function() assert.equal("yes", helped) end) end)\n' >"$T/lp/helped_spec.lua"
run lpath $D --lpath "$T/lib/?.lua" "$T/lp/lpath_spec.lua"
status 0; last "1 passed, 0 failed"
done_case
run lpath-missing $D "$T/lp/lpath_spec.lua"
status 2; has "module 'answer_mod' not found"
done_case
run helper $D --helper "$T/lp/helper.lua" "$T/lp/helped_spec.lua"
status 0; last "1 passed, 0 failed"
done_case

# a host: coroutines, reset hooks, timeouts
run host $H --timeout 0.3 $F/host.lua
status 1; last "4 passed, 1 failed"
has "$F/host.lua:$(mark host.lua hang): timed out after 0.3s"
tline "ok   host > continues after a timeout"
done_case

# discovery: directories, the default spec/ then tests/, patterns, .busted
mkdir -p "$T/d/sub" "$T/d/.hidden"
cp $F/filter.lua "$T/d/sub/users_spec.lua"; cp $F/pending.lua "$T/d/pending_spec.lua"
cp $F/pass.lua "$T/d/notaspec.lua"; cp $F/fail.lua "$T/d/.hidden/x_spec.lua"
run directory $D "$T/d/"
status 0; last "4 passed, 0 failed, 3 skipped"; lacks "assertions"; lacks "failures"
done_case
run directory-no-recursive $D --no-recursive "$T/d"
status 0; last "1 passed, 0 failed, 3 skipped"
done_case
run pattern $D --pattern '^users' "$T/d"
status 0; last "3 passed, 0 failed"
done_case
run missing-path $D "$T/nope"
status 2; has "$T/nope: No such file or directory"; last "0 passed, 0 failed"
done_case
mkdir -p "$T/empty"
run empty-directory $D "$T/empty"
status 2; has "$T/empty: no *_spec.lua files found"; last "0 passed, 0 failed"
done_case

mkdir -p "$T/p1/spec" "$T/p1/tests" "$T/p2/tests/api" "$T/p3"
cp $F/filter.lua "$T/p1/spec/a_spec.lua"; cp $F/tags.lua "$T/p1/tests/b_spec.lua"
cp $F/tags.lua "$T/p2/tests/api/b_spec.lua"
(cd "$T/p1" && $SLUICE_LUA "$D" >"$T/out" 2>"$T/err"); rc=$?; name=default-spec-dir; case_failed=0
status 0; last "3 passed, 0 failed"
done_case
(cd "$T/p2" && $SLUICE_LUA "$D" >"$T/out" 2>"$T/err"); rc=$?; name=default-tests-dir; case_failed=0
status 0; last "4 passed, 0 failed"
done_case
(cd "$T/p3" && $SLUICE_LUA "$D" >"$T/out" 2>"$T/err"); rc=$?; name=default-none; case_failed=0
status 2; has "sluice test: no spec files: neither spec/ nor tests/ exists here"; last "0 passed, 0 failed"
done_case
cat >"$T/p2/.busted" <<'EOF'
return {
  _all = { ["exclude-tags"] = "db" },
  default = { ROOT = { "tests/api" }, tags = { "slow" } },
  fast = { tags = "fast", output = "TAP" },
}
EOF
(cd "$T/p2" && $SLUICE_LUA "$D" >"$T/out" 2>"$T/err"); rc=$?; name=dot-busted; case_failed=0
status 0; last "1 passed, 0 failed"; has "api #slow > lists"
done_case
(cd "$T/p2" && $SLUICE_LUA "$D" -r fast >"$T/out" 2>"$T/err"); rc=$?; name=dot-busted-task; case_failed=0
status 0; last "1..1"; has "ok 1 - parser parses #fast"
done_case
(cd "$T/p2" && $SLUICE_LUA "$D" --tags fast --exclude-tags slow >"$T/out" 2>"$T/err"); rc=$?; name=dot-busted-cli-wins; case_failed=0
status 0; last "1 passed, 0 failed"
done_case
(cd "$T/p2" && $SLUICE_LUA "$D" -r nosuchtask >"$T/out" 2>"$T/err"); rc=$?; name=dot-busted-bad-task; case_failed=0
status 2; err_has 'task "nosuchtask" not found'
done_case

# sluice lua: a script with the whole sluice API on a test instance, and the REPL
run lua-script $F/script.lua a b
status 0; has "status 200"; has "args a,b"; has "arg0 true"
done_case
run lua-script-status $F/script.lua 3
status 3
done_case
run lua-script-error $F/script.lua fail
status 1; err_has "$F/script.lua:$(mark script.lua scripterr): attempt to index local 't'"
done_case
run lua-script-quiet $F/script.lua quiet
status 1; checks=$((checks + 1)); [ ! -s "$T/err" ] || bad "error() printed: $(cat "$T/err")"
done_case
printf 'res = request("GET", "/health")\nres.status\nfor i = 1, 2 do\nprint("line " .. i)\nend\nerror("oops")\napp.get ~= nil\n' \
  | $SLUICE_LUA >"$T/out" 2>"$T/err"; rc=$?; name=lua-repl; case_failed=0
status 0; line "200"; line "line 1"; line "line 2"; has "oops"; line "true"
done_case

# the REPL's instance stays live while it waits for input: a timer set by one line fires before
# the next line is typed (the writer waits for it, bounded, instead of sleeping a fixed time)
name=lua-repl-live; case_failed=0
mkfifo "$T/in"
$SLUICE_LUA <"$T/in" >"$T/out" 2>"$T/err" &
repl_pid=$!
exec 7>"$T/in"
echo 'app.timer(0.01, function() print("FIRED") io.stdout:flush() end)' >&7
for _ in $(seq 1 200); do grep -q FIRED "$T/out" && break; sleep 0.05; done
echo 'print("after")' >&7
exec 7>&-
wait $repl_pid; rc=$?
status 0; line "FIRED"; line "after"
checks=$((checks + 1)); [ "$(grep -n FIRED "$T/out" | cut -d: -f1)" -lt "$(grep -n after "$T/out" | cut -d: -f1)" ] 2>/dev/null \
  || bad "the timer did not fire while the REPL waited"
done_case

run tty $H --filter 'users > create' $F/filter.lua
lacks $'\e['
done_case
SPEC_TTY=1 run tty-colors $H --filter 'users > create' $F/filter.lua
has $'\e[32mok  \e[0m users > create'
done_case

run usage $D --bogus
status 2; err_has "unknown option --bogus"
done_case
run usage-coverage $D --coverage
status 2; err_has "--coverage is not supported"
done_case
run bad-filter $D --filter '[' $F/filter.lua
status 2; err_has "bad --filter pattern"
done_case
run bad-timeout $D --timeout soon $F/filter.lua
status 2; err_has "--timeout needs a number"
done_case
run bad-repeat $D --repeat 0 $F/filter.lua
status 2; err_has "bad --repeat"
done_case
run help $D --help
status 0; has "usage: sluice test"; has "--exclude-tags"
done_case

if [ "$failures" -gt 0 ]; then
  echo "spec self-tests: $failures of $checks checks failed"
  exit 1
fi
echo "spec self-tests: all $checks checks passed"
