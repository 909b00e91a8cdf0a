#!/usr/bin/env bash
# toolkit.sh: the handler toolkit's costs, each against an anchor in the same run:
#   1. HMAC-SHA256 and JWT verify (HS256, RS256, ES256, EdDSA) per operation: sluice's Lua (JIT on,
#      and off as handlers run by default) vs Node.js's crypto;
#   2. one Argon2id hash with config.lua's defaults: sluice (libsodium) vs the argon2 CLI;
#   3. what an HS256 bearer check adds to the /json route's CPU per request (bench/http.sh's
#      method: server on core 0, wrk -t1 on core 1, requests per server CPU-second), with the
#      verified-token cache (/jwtc) and without it (/jwtn), keep-alive and 16-deep pipelined;
#      3b. the same in user-space instructions per request (callgrind: one server, routes and
#      modes alternating, each window zeroed and dumped on its own);
#   4. /hello latency on the worker that also serves 50 concurrent logins (Argon2id verifies).
# Prints tables and records them in bench/RESULTS.md (the toolkit.sh section).
# Usage: bench/toolkit.sh [seconds]   (per HTTP round, default 5; about 4 minutes)
#
# Environment knobs: SLUICE_BIN, BENCH_ROUNDS=3 (rounds per HTTP figure, routes alternating),
# BENCH_RESULTS=0 (do not write RESULTS.md), BENCH_PORT=17560, BENCH_KEEP=1, BENCH_NICE=0
# (see bench/lib.sh), BENCH_NODE=0 (skip Node.js), BENCH_HASHES=20 (Argon2id hashes per tool),
# BENCH_ONLY=jwt (only 3 and 3b, printed, RESULTS.md untouched), BENCH_CALLGRIND=0 (no 3b),
# BENCH_CG_ROUNDS=2, BENCH_CG_SECS=2 (callgrind windows per route and mode, and their length).
set -euo pipefail

SECS=${1:-5}
case $SECS in ''|*[!0-9]*|0) echo "usage: $0 [seconds]" >&2; exit 2;; esac
ROUNDS=${BENCH_ROUNDS:-3}
HASHES=${BENCH_HASHES:-20}
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
SLUICE_BIN=$(readlink -f "${SLUICE_BIN:-$ROOT/build/sluice}")
APP=$HERE/toolkit-app
PORT=${BENCH_PORT:-17560}
BENCH_NAME=toolkit
# shellcheck source=bench/lib.sh
. "$HERE/lib.sh"

[ "$(nproc)" -ge 2 ] || bench_die "needs 2 cores (server on 0, wrk on 1)"
ONLY=${BENCH_ONLY:-}
case $ONLY in ''|jwt) ;; *) bench_die "BENCH_ONLY: only 'jwt' is known";; esac
[ "$ONLY" = jwt ] && BENCH_RESULTS=0
[ -x "$SLUICE_BIN" ] || bench_die "no $SLUICE_BIN; build first: cmake -B build && cmake --build build"
for t in wrk openssl python3 argon2; do command -v $t >/dev/null || bench_die "$t missing (tools/bootstrap)"; done
WITH_NODE=${BENCH_NODE:-1}
command -v node >/dev/null || WITH_NODE=0

bench_priority "$@"
bench_tmpdir
T_START=$SECONDS
LOAD0=$(cut -d' ' -f1-3 /proc/loadavg)

# ---------------------------------------------------------------- keys and tokens (shared)
mkdir -p "$TMP/keys"
openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$TMP/keys/RS256.pem" 2>/dev/null
openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$TMP/keys/ES256.pem" 2>/dev/null
openssl genpkey -algorithm ED25519 -out "$TMP/keys/EdDSA.pem" 2>/dev/null
for a in RS256 ES256 EdDSA; do openssl pkey -in "$TMP/keys/$a.pem" -pubout -out "$TMP/keys/$a.pub" 2>/dev/null; done
"$SLUICE_BIN" lua "$APP/mkkeys.lua" "$TMP/keys.json" "$TMP/keys"
TOKEN=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["tokens"]["HS256"])' "$TMP/keys.json")
SECRET=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["secret"])' "$TMP/keys.json")

if [ "$ONLY" != jwt ]; then
# ---------------------------------------------------------------- 1. per-operation costs
echo "1. per operation (core 0, median of $ROUNDS runs each)"
micro() { # label cmd...: appends "label name us" lines
  local label=$1; shift
  "${PRIO[@]}" taskset -c 0 "$@" | sed "s/^/$label /" >>"$TMP/micro.txt"
}
: >"$TMP/micro.txt"
for ((r = 1; r <= ROUNDS; r++)); do
  micro sluice-jit "$SLUICE_BIN" lua "$APP/micro.lua" "$TMP/keys.json" jit
  micro sluice-interp "$SLUICE_BIN" lua "$APP/micro.lua" "$TMP/keys.json" nojit
  [ "$WITH_NODE" = 1 ] && micro node node "$APP/micro.js" "$TMP/keys.json"
done
MICRO=$(awk '{ k = $2; v[$1 " " k] = v[$1 " " k] " " $3; if (!(k in seen)) { seen[k] = 1; order[++n] = k } }
  function med(s,  a, m, i, j, t) { m = split(s, a, " "); for (i = 2; i <= m; i++) for (j = i; j > 1 && a[j - 1] + 0 > a[j] + 0; j--) { t = a[j]; a[j] = a[j - 1]; a[j - 1] = t }; return m ? a[int((m + 1) / 2)] : "-" }
  END { for (i = 1; i <= n; i++) { k = order[i]; printf "%s %s %s %s\n", k, med(v["sluice-jit " k]), med(v["sluice-interp " k]), med(v["node " k]) } }' "$TMP/micro.txt")
printf '  %-26s %12s %14s %10s %16s\n' operation "sluice JIT" "sluice interp" node "node/sluice-int"
while read -r name a b c; do
  printf '  %-26s %10s us %12s us %8s us %15s\n' "$name" "$a" "$b" "$c" \
    "$(awk -v n="$c" -v s="$b" 'BEGIN { if (n == "-" || n == "" || s == 0) print "-"; else printf "%.2fx", n / s }')"
done <<<"$MICRO"

# ---------------------------------------------------------------- 2. Argon2id hash cost
echo "2. Argon2id hash, m=19456 KiB t=2 p=1 (core 0, $HASHES hashes each)"
cat >"$TMP/hash.lua" <<'EOF'
local p = require "sluice.password"
local n = tonumber(arg[1])
local t0 = os.time()
local c0 = os.clock()
for i = 1, n do assert(p.hash("benchmark password " .. i, 2, 19456 * 1024, 1)) end
print(string.format("%.3f", (os.clock() - c0) / n * 1000))
EOF
SL_MS=$("${PRIO[@]}" taskset -c 0 "$SLUICE_BIN" lua "$TMP/hash.lua" "$HASHES")
# the CLI's CPU time, from the children's rusage (a process start each, ~1 ms of it)
CLI_MS=$("${PRIO[@]}" python3 - "$HASHES" <<'PY'
import resource, subprocess, sys
n = int(sys.argv[1])
r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
for i in range(1, n + 1):
    subprocess.run(["taskset", "-c", "0", "argon2", "saltsaltsalt%d" % i, "-id", "-t", "2", "-k", "19456", "-p", "1", "-e"],
                   input=b"benchmark password %d" % i, stdout=subprocess.DEVNULL, check=True)
r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
print("%.3f" % ((r1.ru_utime + r1.ru_stime - r0.ru_utime - r0.ru_stime) / n * 1000))
PY
)
printf '  sluice (libsodium)  %8s ms of CPU per hash\n  argon2 CLI          %8s ms of CPU per run   sluice/CLI %s\n' "$SL_MS" "$CLI_MS" \
  "$(awk -v a="$SL_MS" -v b="$CLI_MS" 'BEGIN { printf "%.2fx", a / b }')"

fi

# ---------------------------------------------------------------- 3. JWT on the /json route
echo "3. /json with and without an HS256 bearer check (sluice on core 0, wrk -t1 on core 1, $ROUNDS x ${SECS}s)"
ln -s "$SLUICE_BIN" "$TMP/server-under-test"
bench_start sluice "$PORT" env PORT="$PORT" BENCH_JWT_SECRET="$SECRET" "$TMP/server-under-test" run --config "$APP/config.lua"
bench_wait_port "$PORT" sluice
H="Authorization: Bearer $TOKEN"
ROUTES="json jwtc jwtn"          # the JWT routes' paths are as long as /json's (same parsing and routing)
for route in $ROUTES; do
  st=$(curl -s -o /dev/null -w '%{http_code}' -H "$H" "http://127.0.0.1:$PORT/$route")
  [ "$st" = 200 ] || bench_die "/$route answered $st with the token"
done
st=$(curl -s -o /dev/null -w '%{http_code}' -H "Authorization: Bearer ${TOKEN}x" "http://127.0.0.1:$PORT/jwtc")
[ "$st" = 401 ] || bench_die "/jwtc answered $st to a bad token (want 401)"
for route in $ROUTES; do taskset -c 1 wrk -t1 -c50 -d1s -H "$H" "http://127.0.0.1:$PORT/$route" >/dev/null; done
REVERSED="jwtn jwtc json"
for ((r = 1; r <= ROUNDS; r++)); do
  order=$ROUTES; [ $((r % 2)) = 0 ] && order=$REVERSED
  for route in $order; do bench_run "$route" sluice "http://127.0.0.1:$PORT/$route" "$SECS" -c50 --latency -H "$H"; done
done
PSECS=$(( SECS > 3 ? SECS / 2 : 2 ))
for ((r = 1; r <= ROUNDS; r++)); do
  order=$ROUTES; [ $((r % 2)) = 0 ] && order=$REVERSED
  for route in $order; do bench_run "$route-pipe" sluice "http://127.0.0.1:$PORT/$route" "$PSECS" -c50 -H "$H" -s "$HERE/pipeline.lua" -- 16; done
done
SUM=$(bench_sum)
cpu_of() { awk -v k="$1 sluice" '$1 " " $2 == k { printf "%.3f", $7 + $8 }' <<<"$SUM"; }
line_of() { awk -v k="$1 sluice" '$1 " " $2 == k' <<<"$SUM"; }
ushare_of() { awk -v k="$1 sluice" '$1 " " $2 == k { printf "%.4f", $7 / ($7 + $8) }' <<<"$SUM"; }
J0=$(cpu_of json) J1=$(cpu_of jwtc) J2=$(cpu_of jwtn)
P0=$(cpu_of json-pipe) P1=$(cpu_of jwtc-pipe) P2=$(cpu_of jwtn-pipe)
pct() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%+.1f%%", (b - a) / a * 100 }'; }
printf '  CPU per request vs /json: keep-alive /jwtc %s, /jwtn %s; pipelined /jwtc %s, /jwtn %s\n' \
  "$(pct "$J0" "$J1")" "$(pct "$J0" "$J2")" "$(pct "$P0" "$P1")" "$(pct "$P0" "$P2")"

# ---------------------------------------------------------------- 3b. instructions per request
# callgrind counts user-space instructions exactly, immune to the shared machine's load; only
# ev_invoke_pending (request handling) is collected; requests = calls of dispatch_request. One
# server for every route, so all see the same heap; each window (route x mode x round, routes
# alternating) is zeroed before and dumped after its wrk run.
declare -A CG_IR=() CG_N=()
CG_ROUNDS=${BENCH_CG_ROUNDS:-2}
CG_SECS=${BENCH_CG_SECS:-2}
if [ "${BENCH_CALLGRIND:-1}" = 1 ] && command -v valgrind >/dev/null && command -v callgrind_control >/dev/null; then
  echo "3b. user-space instructions per request (callgrind, wrk -t1 -c10, $CG_ROUNDS x ${CG_SECS}s per route and mode)"
  cport=$((PORT + 1)); cgo="$TMP/cg.out"
  if ss -Htln "sport = :$cport" | grep -q .; then bench_die "port $cport is in use (set BENCH_PORT)"; fi
  env PORT=$cport BENCH_JWT_SECRET="$SECRET" "${PRIO[@]}" taskset -c 0 valgrind --tool=callgrind --callgrind-out-file="$cgo" \
    --toggle-collect=ev_invoke_pending "$TMP/server-under-test" run --config "$APP/config.lua" >"$TMP/cg.log" 2>&1 &
  cpid=$!; PIDS+=("$cpid")
  for ((i = 0; i < 300; i++)); do ss -Htln "sport = :$cport" | grep -q . && break; sleep 0.1; done
  for route in $ROUTES; do taskset -c 1 wrk -t1 -c10 -d1s -H "$H" "http://127.0.0.1:$cport/$route" >/dev/null; done
  for ((r = 1; r <= CG_ROUNDS; r++)); do
    order=$ROUTES; [ $((r % 2)) = 0 ] && order=$REVERSED
    for route in $order; do for m in ka pipe; do
      callgrind_control -z "$cpid" >/dev/null 2>&1
      if [ $m = pipe ]; then extra=(-s "$HERE/pipeline.lua" -- 16); else extra=(); fi
      taskset -c 1 wrk -t1 -c10 -d"${CG_SECS}s" -H "$H" "http://127.0.0.1:$cport/$route" "${extra[@]}" >/dev/null
      callgrind_control -d "w.$route.$m.$r" "$cpid" >/dev/null 2>&1
    done; done
  done
  kill -TERM "$cpid"; wait "$cpid" || true
  for f in "$cgo".*; do
    w=$(grep -a -m1 '^desc: Trigger: dump w\.' "$f" | sed 's/.*dump w\.//') || true
    [ -n "$w" ] || continue
    tot=$(callgrind_annotate --threshold=100 "$f" 2>/dev/null | awk '/PROGRAM TOTALS/ { s = $1; gsub(/,/, "", s); print s + 0 }')
    n=$(callgrind_annotate --tree=caller --threshold=100 "$f" 2>/dev/null |
        awk '/=> .*:dispatch_request \(/ { s = $0; sub(/.*\(/, "", s); sub(/x\).*/, "", s); gsub(/,/, "", s); n += s } END { print n + 0 }')
    k=${w%.*}
    CG_IR[$k]=$(( ${CG_IR[$k]:-0} + tot )); CG_N[$k]=$(( ${CG_N[$k]:-0} + n ))
  done
  for route in $ROUTES; do for m in ka pipe; do
    [ "${CG_N[$route.$m]:-0}" -gt 0 ] || bench_die "callgrind $route $m: no requests counted (see $TMP/cg.log)"
  done; done
fi
ir_of() { [ -n "${CG_N[$1]:-}" ] && awk -v t="${CG_IR[$1]}" -v n="${CG_N[$1]}" 'BEGIN { printf "%.0f", t / n }'; return 0; }
# added instructions over /json's, as a share of /json's whole CPU in that mode: times the user
# share of /json's CPU measured by the wrk runs above (the kernel's part is the same syscalls)
cg_share() { # route mode -> "+N (+x.x%) +y.y%"
  local b ir u
  b=$(ir_of "json.$2"); ir=$(ir_of "$1.$2")
  u=$(ushare_of "$( [ "$2" = pipe ] && echo json-pipe || echo json)")
  awk -v a="$b" -v c="$ir" -v u="$u" 'BEGIN { printf "%+.0f (%+.1f%%) %+.1f%%", c - a, (c - a) / a * 100, (c - a) / a * u * 100 }'
}
if [ ${#CG_N[@]} -gt 0 ]; then
  for route in $ROUTES; do for m in ka pipe; do
    printf '  /%-5s %-5s %7s instructions per request (%d requests)%s\n' "$route" "$m" "$(ir_of "$route.$m")" "${CG_N[$route.$m]}" \
      "$( [ "$route" = json ] || echo "   added $(cg_share "$route" "$m" | awk '{ print $1, $2 " of user instructions, " $3 " of CPU" }')")"
  done; done
fi
LOAD1=$(cut -d' ' -f1-3 /proc/loadavg)

if [ "$ONLY" != jwt ]; then
# ---------------------------------------------------------------- 4. /hello during logins
echo "4. /hello (wrk -t1 -c4 --latency, ${SECS}s) idle, then while 50 logins verify Argon2id without pause"
LAT=()
hello_run() { # label
  local out="$TMP/hello-$1.txt"
  "${PRIO[@]}" wrk -t1 -c4 -d"${SECS}s" --latency "http://127.0.0.1:$PORT/hello" >"$out"
  read -r req dur p50 p99 err bad < <(parse_wrk <"$out")
  LAT+=("$1|$req|$dur|$p50|$p99")
  printf '  %-14s %9.0f req/s  p50 %s ms  p99 %s ms\n' "$1" "$(awk -v r="$req" -v d="$dur" 'BEGIN { print r / d }')" "$p50" "$p99"
}
# the server may use both cores here (its hashing threads run at nice 5)
taskset -p -a -c 0,1 "${SRV_PID[sluice]}" >/dev/null
hello_run idle
python3 "$APP/logins.py" "$PORT" 50 "$((SECS + 2))" >"$TMP/logins.txt" &
LPID=$!
sleep 1
hello_run "50 logins"
wait "$LPID" || bench_die "the logins failed: $(cat "$TMP/logins.txt")"
LOGINS=$(cat "$TMP/logins.txt")
printf '  logins answered: %s in %ss (%.1f/s)\n' "$LOGINS" "$((SECS + 2))" "$(awk -v n="$LOGINS" -v s=$((SECS + 2)) 'BEGIN { print n / s }')"
fi

for w in "${WARN[@]}"; do echo "WARNING: $w" >&2; done

# ---------------------------------------------------------------- RESULTS.md
if [ "${BENCH_RESULTS:-1}" = 1 ]; then
  REV=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo "?")
  {
    echo "<!-- toolkit.sh:begin (this section is rewritten by bench/toolkit.sh) -->"
    echo "## bench/toolkit.sh — the handler toolkit (latest run)"
    echo
    echo "- date: $(date -u '+%Y-%m-%d %H:%M UTC'); machine: $(bench_machine)"
    echo "- command: \`bench/toolkit.sh $SECS\` (sluice $REV, $SLUICE_BIN); $(bench_prio_text)"
    echo "- $( [ "$WITH_NODE" = 1 ] && echo "node $(node --version)" || echo "no node"), $(argon2 -h 2>&1 | head -1 | sed 's/^Usage:.*/argon2 CLI/')"
    echo
    echo "**1. Per operation** (one core, median of $ROUNDS runs; a 200-byte message; JWT verify = split, base64url,"
    echo "signature, JSON decode, claims check; Node's verify is the same steps with node:crypto). \"interp\" is"
    echo "LuaJIT's interpreter, how handlers run with \`limits.jit = false\` (the JIT is on by default)."
    echo
    echo "| operation | sluice, JIT (µs) | sluice, interp (µs) | Node.js crypto (µs) | Node / sluice interp |"
    echo "|---|---:|---:|---:|---:|"
    while read -r name a b c; do
      echo "| $name | $a | $b | $c | $(awk -v n="$c" -v s="$b" 'BEGIN { if (n == "-" || n == "" || s == 0) print "-"; else printf "%.2fx", n / s }') |"
    done <<<"$MICRO"
    echo
    echo "**2. Argon2id**, m=19456 KiB, t=2, p=1 (the \`password\` defaults), $HASHES hashes on core 0: sluice $SL_MS ms"
    echo "of CPU per hash (libsodium), the argon2 CLI $CLI_MS ms of CPU per run (includes starting the process):"
    echo "sluice/CLI $(awk -v a="$SL_MS" -v b="$CLI_MS" 'BEGIN { printf "%.2fx", a / b }')."
    echo
    echo "**3. HS256 bearer check on /json** (\`bench/toolkit-app\`: one worker on core 0, \`wrk -t1\` on core 1,"
    echo "every request carries the same \`Authorization: Bearer\` token; $ROUNDS rounds of ${SECS} s keep-alive (50"
    echo "connections) and ${PSECS} s 16-deep pipelined, routes alternating). /jwtc is /json behind"
    echo "\`app.jwt.verify_bearer(req, KEY, app.jwt.options{ aud = \"api\", algs = { \"HS256\" } })\` (the verified-token"
    echo "cache), /jwtn the same with \`cache = false\` (a full verification per request); both paths are as long as"
    echo "\"/json\". Load average at the start and end of 3/3b: $LOAD0 / $LOAD1."
    echo
    echo "| route | mode | req/s | req per CPU-s | CPU µs/req user+sys | vs /json |"
    echo "|---|---|---:|---:|---:|---:|"
    for route in $ROUTES; do
      for m in "" -pipe; do
        read -r _ _ rps rpc _ _ us ss <<<"$(line_of "$route$m")"
        base=$J0; [ "$m" = -pipe ] && base=$P0
        echo "| /$route | $( [ -z "$m" ] && echo "keep-alive" || echo "pipelined") | $rps | $rpc | $us+$ss | $( [ "$route" = json ] && echo "—" || pct "$base" "$(cpu_of "$route$m")") |"
      done
    done
    echo
    echo "Target (issue 20): the check adds < 5% to /json's CPU per request. Measured with wrk (CPU µs per request,"
    echo "tick-sampled, on a shared machine): keep-alive $(pct "$J0" "$J1") with the verified-token cache, $(pct "$J0" "$J2")"
    echo "without it; pipelined $(pct "$P0" "$P1") / $(pct "$P0" "$P2")."
    if [ ${#CG_N[@]} -gt 0 ]; then
      echo
      echo "User-space instructions per request (callgrind, \`--toggle-collect=ev_invoke_pending\`, one server, \`wrk -t1"
      echo "-c10\`, $CG_ROUNDS windows of ${CG_SECS} s per route and mode, routes alternating; exact, unaffected by other load)."
      echo "The share of CPU is the added instructions over /json's, times the user share of /json's CPU in the"
      echo "same mode in the wrk runs above (keep-alive $(ushare_of json), pipelined $(ushare_of json-pipe); the kernel's part"
      echo "is the same syscalls for every route):"
      echo
      echo "| route | mode | instructions/request | added | ≈ added share of CPU |"
      echo "|---|---|---:|---:|---:|"
      for route in $ROUTES; do for m in ka pipe; do
        if [ "$route" = json ]; then add="—"; shr="—"; else read -r a1 a2 a3 <<<"$(cg_share "$route" "$m")"; add="$a1 $a2"; shr=$a3; fi
        echo "| /$route | $( [ $m = ka ] && echo keep-alive || echo pipelined) | $(ir_of "$route.$m") | $add | $shr |"
      done; done
    fi
    echo
    echo "**4. /hello while logins hash** (server unpinned on both cores, 1 worker, 2 hashing threads at nice 5;"
    echo "\`wrk -t1 -c4 --latency\` ${SECS} s; logins by \`bench/toolkit-app/logins.py\`, 50 always in flight): $LOGINS"
    echo "logins answered in $((SECS + 2)) s."
    echo
    echo "| /hello | req/s | p50 ms | p99 ms |"
    echo "|---|---:|---:|---:|"
    for l in "${LAT[@]}"; do
      IFS='|' read -r lab req dur p50 p99 <<<"$l"
      echo "| $lab | $(awk -v r="$req" -v d="$dur" 'BEGIN { printf "%.0f", r / d }') | $p50 | $p99 |"
    done
    if [ ${#WARN[@]} -gt 0 ]; then echo; for w in "${WARN[@]}"; do echo "- warning: $w"; done; fi
    echo "<!-- toolkit.sh:end -->"
  } >"$TMP/section.md"
  python3 - "$HERE/RESULTS.md" "$TMP/section.md" <<'PY'
import re, sys
path, new = sys.argv[1], open(sys.argv[2]).read().rstrip("\n")
text = open(path).read()
pat = re.compile(r"<!-- toolkit.sh:begin.*?<!-- toolkit.sh:end -->", re.S)
text = pat.sub(lambda m: new, text) if pat.search(text) else text.rstrip("\n") + "\n\n" + new + "\n"
open(path, "w").write(text)
PY
  echo "recorded in bench/RESULTS.md"
fi
echo "done in $((SECONDS - T_START)) s"
