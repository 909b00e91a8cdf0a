#!/usr/bin/env bash
# bench/spec.sh: how long `sluice test` takes per test (issue 16): 1,000 empty tests, and 100
# tests that each make one HTTP request through the test instance, against busted 2.1 running
# the same 1,000 empty tests under LuaJIT (`sluice lua /usr/bin/busted`, the JIT on) in the same
# run. Each case runs ROUNDS times (default 5); the table shows the median wall time of the whole
# command (start-up included). Targets: < 0.3 s and < 1 s on the project's 2-core machine.
#
#   bench/spec.sh [rounds]             writes the spec.sh section of bench/RESULTS.md
#   BENCH_RESULTS=0 bench/spec.sh 3    smoke run, nothing written
#   BENCH_BASE_BIN=/path/to/old/sluice bench/spec.sh   also times an older binary (before/after)
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
BIN=${SLUICE_BIN:-$ROOT/build/sluice}
BASE=${BENCH_BASE_BIN:-}
ROUNDS=${1:-5}
[ -x "$BIN" ] || { echo "spec.sh: no $BIN (build first)" >&2; exit 1; }
[ -f /usr/bin/busted ] || { echo "spec.sh: /usr/bin/busted missing (Debian lua-busted, tools/bootstrap)" >&2; exit 1; }
LOAD=$(cut -d' ' -f1-3 /proc/loadavg)
TMP=$(mktemp -d /tmp/bench-spec.XXXXXX)
trap 'rm -rf "$TMP"' EXIT

# the app under test: one route, the default rate-limit policies and table size (100,000 keys)
mkdir -p "$TMP/app" "$TMP/anchor"
cat >"$TMP/app/config.lua" <<'EOF'
return { scripts = { "app.lua" } }
EOF
cat >"$TMP/app/app.lua" <<'EOF'
local app = require "sluice"
app.get("/hello", function() return "hello world\n" end)
EOF
{
  echo 'describe("empty", function()'
  for i in $(seq 1 1000); do echo "  it(\"test $i\", function() end)"; done
  echo 'end)'
} >"$TMP/app/empty_spec.lua"
{
  echo 'describe("one request each", function()'
  for i in $(seq 1 100); do
    echo "  it(\"request $i\", function() assert.are.equal(200, request(\"GET\", \"/hello\").status) end)"
  done
  echo 'end)'
} >"$TMP/app/http_spec.lua"
cp "$TMP/app/empty_spec.lua" "$TMP/anchor/empty_spec.lua"

# measure LABEL DIR WANT CMD... : ROUNDS runs in DIR; checks the output has WANT; median wall time
# and median CPU time (user + system of the command, which a loaded machine inflates far less)
declare -A MEDIAN CPU
measure() {
  local label=$1 dir=$2 want=$3; shift 3
  local walls=() cpus=() r t
  for r in $(seq 1 "$ROUNDS"); do
    t=$( { TIMEFORMAT='%R %U %S'; time { (cd "$dir" && "$@") >"$TMP/out" 2>&1; }; } 2>&1 ) || true
    grep -qF -- "$want" "$TMP/out" || { echo "spec.sh: $label: output lacks '$want':" >&2; tail -5 "$TMP/out" >&2; exit 1; }
    walls+=("$(echo "$t" | awk '{print $1}')")
    cpus+=("$(echo "$t" | awk '{printf "%.3f", $2 + $3}')")
  done
  MEDIAN[$label]=$(printf '%s\n' "${walls[@]}" | sort -n | awk '{a[NR]=$1} END {printf "%.3f", a[int((NR+1)/2)]}')
  CPU[$label]=$(printf '%s\n' "${cpus[@]}" | sort -n | awk '{a[NR]=$1} END {printf "%.3f", a[int((NR+1)/2)]}')
  printf '%-48s wall %s s, cpu %s s (medians of %d)\n' "$label" "${MEDIAN[$label]}" "${CPU[$label]}" "$ROUNDS"
}

measure "sluice test, 1,000 empty tests" "$TMP/app" "1000 passed, 0 failed" "$BIN" test empty_spec.lua
measure "sluice test, 100 tests with one request" "$TMP/app" "100 passed, 0 failed" "$BIN" test http_spec.lua
measure "busted (LuaJIT), 1,000 empty tests" "$TMP/anchor" "1000 successes" "$BIN" lua /usr/bin/busted -o plainTerminal empty_spec.lua
if [ -n "$BASE" ]; then
  measure "before: sluice test, 1,000 empty tests" "$TMP/app" "1000 passed, 0 failed" "$BASE" test empty_spec.lua
  measure "before: sluice test, 100 tests with one request" "$TMP/app" "100 passed, 0 failed" "$BASE" test http_spec.lua
fi

E=${MEDIAN["sluice test, 1,000 empty tests"]}
H=${MEDIAN["sluice test, 100 tests with one request"]}
A=${MEDIAN["busted (LuaJIT), 1,000 empty tests"]}
EC=${CPU["sluice test, 1,000 empty tests"]}
HC=${CPU["sluice test, 100 tests with one request"]}
AC=${CPU["busted (LuaJIT), 1,000 empty tests"]}
verdict() { awk -v v="$1" -v t="$2" 'BEGIN { print (v < t) ? "met" : "**not met**" }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2fx", a / b }'; }
echo "1,000 empty tests: $E s wall, $EC s CPU (target < 0.3 s: $(verdict "$E" 0.3)), busted $A s wall, $AC s CPU ($(ratio "$E" "$A") / $(ratio "$EC" "$AC") of busted)"
echo "100 tests with a request: $H s (target < 1 s: $(verdict "$H" 1))"

[ "${BENCH_RESULTS:-1}" = 1 ] || exit 0
REV=$(git rev-parse --short HEAD 2>/dev/null || echo "?")
{
  echo "<!-- spec.sh:begin (this section is rewritten by bench/spec.sh) -->"
  echo "## bench/spec.sh — sluice test per-test cost (issue 16)"
  echo
  echo "- date: $(date -u '+%Y-%m-%d %H:%M UTC')"
  echo "- machine: $(nproc) cores, $(lscpu | sed -n 's/^Model name: *//p' | head -1), kernel $(uname -r); load average at the start: $LOAD (a shared machine: read the ratio to the anchor, measured in the same conditions)"
  echo "- command: \`bench/spec.sh $ROUNDS\` (sluice $REV, $BIN); medians of $ROUNDS runs of each whole command, start-up included: wall time, and CPU time (user + system of the command)"
  echo "- the app: one route, the default rate-limit policies and table size (100,000 keys); the specs are generated"
  echo "- anchor, same run: \`sluice lua /usr/bin/busted -o plainTerminal empty_spec.lua\` — Debian's busted 2.1.1 with luassert under sluice's LuaJIT with the JIT on"
  echo
  echo "| case | wall time | CPU time | target (wall) | verdict |"
  echo "|---|---:|---:|---:|---|"
  echo "| \`sluice test\`: 1,000 empty tests | $E s | $EC s | < 0.3 s | $(verdict "$E" 0.3) |"
  echo "| \`sluice test\`: 100 tests, one HTTP request each | $H s | $HC s | < 1 s | $(verdict "$H" 1) |"
  echo "| busted under LuaJIT: the same 1,000 empty tests (anchor) | $A s | $AC s | — | sluice/busted: wall $(ratio "$E" "$A"), CPU $(ratio "$EC" "$AC") |"
  if [ -n "$BASE" ]; then
    echo "| before (\`$BASE\`): 1,000 empty tests | ${MEDIAN["before: sluice test, 1,000 empty tests"]} s | ${CPU["before: sluice test, 1,000 empty tests"]} s | | |"
    echo "| before: 100 tests, one request each | ${MEDIAN["before: sluice test, 100 tests with one request"]} s | ${CPU["before: sluice test, 100 tests with one request"]} s | | |"
  fi
  echo
  echo "<!-- spec.sh:end -->"
} >"$TMP/section"
python3 - "$ROOT/bench/RESULTS.md" "$TMP/section" <<'EOF'
import re, sys
path, sec = sys.argv[1], open(sys.argv[2]).read()
doc = open(path).read()
pat = re.compile(r"<!-- spec\.sh:begin.*?<!-- spec\.sh:end -->\n", re.S)
doc = pat.sub(lambda m: sec, doc) if pat.search(doc) else doc.rstrip("\n") + "\n\n" + sec
open(path, "w").write(doc)
EOF
echo "bench/RESULTS.md: spec.sh section written"
