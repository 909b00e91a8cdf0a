#!/usr/bin/env bash
# toolkit.sh: the handler toolkit's costs, each against an anchor in the same run:
#   1. HMAC-SHA256 and JWT verify (HS256, RS256, ES256, EdDSA) per operation: sluice's Lua (JIT on,
#      and off as handlers run by default) vs Node.js's crypto;
#   2. one Argon2id hash with config.lua's defaults: sluice (libsodium) vs the argon2 CLI;
#   3. what an HS256 bearer check adds to the /json route's CPU per request (bench/http.sh's
#      method: server on core 0, wrk -t1 on core 1, requests per server CPU-second), with the
#      verified-token cache and without it, keep-alive and 16-deep pipelined;
#   4. /hello latency on the worker that also serves 50 concurrent logins (Argon2id verifies).
# Prints tables and records them in bench/RESULTS.md (the toolkit.sh section).
# Usage: bench/toolkit.sh [seconds]   (per HTTP round, default 5; about 3 minutes)
#
# Environment knobs: SLUICE_BIN, BENCH_ROUNDS=3 (rounds per HTTP figure, routes alternating),
# BENCH_RESULTS=0 (do not write RESULTS.md), BENCH_PORT=17560, BENCH_KEEP=1, BENCH_NICE=0
# (see bench/lib.sh), BENCH_NODE=0 (skip Node.js), BENCH_HASHES=20 (Argon2id hashes per tool).
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
[ -x "$SLUICE_BIN" ] || bench_die "no $SLUICE_BIN; build first: cmake -B build && cmake --build build"
for t in wrk openssl python3 argon2; do command -v $t >/dev/null || bench_die "$t missing (tools/bootstrap)"; done
WITH_NODE=${BENCH_NODE:-1}
command -v node >/dev/null || WITH_NODE=0

bench_priority "$@"
bench_tmpdir
T_START=$SECONDS

# ---------------------------------------------------------------- keys and tokens (shared)
mkdir -p "$TMP/keys"
openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$TMP/keys/RS256.pem" 2>/dev/null
openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$TMP/keys/ES256.pem" 2>/dev/null
openssl genpkey -algorithm ED25519 -out "$TMP/keys/EdDSA.pem" 2>/dev/null
for a in RS256 ES256 EdDSA; do openssl pkey -in "$TMP/keys/$a.pem" -pubout -out "$TMP/keys/$a.pub" 2>/dev/null; done
"$SLUICE_BIN" lua "$APP/mkkeys.lua" "$TMP/keys.json" "$TMP/keys"
TOKEN=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["tokens"]["HS256"])' "$TMP/keys.json")
SECRET=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["secret"])' "$TMP/keys.json")

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

# ---------------------------------------------------------------- 3. JWT on the /json route
echo "3. /json with and without an HS256 bearer check (sluice on core 0, wrk -t1 on core 1, $ROUNDS x ${SECS}s)"
ln -s "$SLUICE_BIN" "$TMP/server-under-test"
bench_start sluice "$PORT" env PORT="$PORT" BENCH_JWT_SECRET="$SECRET" "$TMP/server-under-test" run --config "$APP/config.lua"
bench_wait_port "$PORT" sluice
H="Authorization: Bearer $TOKEN"
for route in json json-jwt json-jwt-nocache; do
  st=$(curl -s -o /dev/null -w '%{http_code}' -H "$H" "http://127.0.0.1:$PORT/$route")
  [ "$st" = 200 ] || bench_die "/$route answered $st with the token"
done
st=$(curl -s -o /dev/null -w '%{http_code}' -H "Authorization: Bearer ${TOKEN}x" "http://127.0.0.1:$PORT/json-jwt")
[ "$st" = 401 ] || bench_die "/json-jwt answered $st to a bad token (want 401)"
for route in json json-jwt json-jwt-nocache; do taskset -c 1 wrk -t1 -c50 -d1s -H "$H" "http://127.0.0.1:$PORT/$route" >/dev/null; done
ROUTES="json json-jwt json-jwt-nocache"
for ((r = 1; r <= ROUNDS; r++)); do
  order=$ROUTES; [ $((r % 2)) = 0 ] && order="json-jwt-nocache json-jwt json"
  for route in $order; do bench_run "$route" sluice "http://127.0.0.1:$PORT/$route" "$SECS" -c50 --latency -H "$H"; done
done
PSECS=$(( SECS > 3 ? SECS / 2 : 2 ))
for ((r = 1; r <= ROUNDS; r++)); do
  order=$ROUTES; [ $((r % 2)) = 0 ] && order="json-jwt-nocache json-jwt json"
  for route in $order; do bench_run "$route-pipe" sluice "http://127.0.0.1:$PORT/$route" "$PSECS" -c50 -H "$H" -s "$HERE/pipeline.lua" -- 16; done
done
SUM=$(bench_sum)
cpu_of() { awk -v k="$1 sluice" '$1 " " $2 == k { printf "%.3f", $7 + $8 }' <<<"$SUM"; }
line_of() { awk -v k="$1 sluice" '$1 " " $2 == k' <<<"$SUM"; }
J0=$(cpu_of json) J1=$(cpu_of json-jwt) J2=$(cpu_of json-jwt-nocache)
P0=$(cpu_of json-pipe) P1=$(cpu_of json-jwt-pipe) P2=$(cpu_of json-jwt-nocache-pipe)
pct() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%+.1f%%", (b - a) / a * 100 }'; }

# ---------------------------------------------------------------- 3b. instructions per request
# callgrind counts user-space instructions exactly, immune to the shared machine's load; only
# ev_invoke_pending (request handling) is collected; requests = calls of dispatch_request.
CG=()
if [ "${BENCH_CALLGRIND:-1}" = 1 ] && command -v valgrind >/dev/null; then
  echo "3b. user-space instructions per request (callgrind, wrk -t1 -c10 2 s per route)"
  for route in json json-jwt json-jwt-nocache; do
    cport=$((PORT + 1)); out="$TMP/cg.$route"
    if ss -Htln "sport = :$cport" | grep -q .; then bench_die "port $cport is in use (set BENCH_PORT)"; fi
    env PORT=$cport BENCH_JWT_SECRET="$SECRET" "${PRIO[@]}" taskset -c 0 valgrind --tool=callgrind --callgrind-out-file="$out" \
      --toggle-collect=ev_invoke_pending "$TMP/server-under-test" run --config "$APP/config.lua" >"$out.log" 2>&1 &
    cpid=$!; PIDS+=("$cpid")
    for ((i = 0; i < 300; i++)); do ss -Htln "sport = :$cport" | grep -q . && break; sleep 0.1; done
    taskset -c 1 wrk -t1 -c10 -d2s -H "$H" "http://127.0.0.1:$cport/$route" >"$out.wrk"
    kill -TERM "$cpid"; wait "$cpid" || true
    grep -q Collected "$out.log" || bench_die "callgrind $route: no profile (see $out.log)"
    tot=$(callgrind_annotate --threshold=100 "$out" 2>/dev/null | awk '/PROGRAM TOTALS/ { s = $1; gsub(/,/, "", s); print s + 0 }')
    n=$(callgrind_annotate --tree=caller --threshold=100 "$out" 2>/dev/null |
        awk '/=> .*:dispatch_request \(/ { s = $0; sub(/.*\(/, "", s); sub(/x\).*/, "", s); gsub(/,/, "", s); n += s } END { print n + 0 }')
    [ "$n" -gt 0 ] || bench_die "callgrind $route: no requests counted"
    CG+=("$route $(awk -v t="$tot" -v n="$n" 'BEGIN { printf "%.0f", t / n }') $n")
    printf '  /%-18s %8.0f instructions per request (%d requests)\n' "$route" "$(awk -v t="$tot" -v n="$n" 'BEGIN { print t / n }')" "$n"
  done
fi
ir_of() { local l r ir n; for l in "${CG[@]}"; do read -r r ir n <<<"$l"; [ "$r" = "$1" ] && echo "$ir"; done; return 0; }

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
    echo "LuaJIT's interpreter, how handlers run with the default \`limits.script_timeout\`."
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
    echo "connections) and ${PSECS} s 16-deep pipelined, routes alternating)."
    echo
    echo "| route | mode | req/s | req per CPU-s | CPU µs/req user+sys | vs /json |"
    echo "|---|---|---:|---:|---:|---:|"
    for route in json json-jwt json-jwt-nocache; do
      for m in "" -pipe; do
        read -r _ _ rps rpc _ _ us ss <<<"$(line_of "$route$m")"
        base=$J0; [ "$m" = -pipe ] && base=$P0
        echo "| /$route | $( [ -z "$m" ] && echo "keep-alive" || echo "pipelined") | $rps | $rpc | $us+$ss | $( [ "$route" = json ] && echo "—" || pct "$base" "$(cpu_of "$route$m")") |"
      done
    done
    echo
    echo "Target (issue 20): the check adds < 5% to /json's CPU per request. Measured with wrk (CPU µs per request,"
    echo "tick-sampled, on a shared machine): keep-alive $(pct "$J0" "$J1") with the verified-token cache (the route calls"
    echo "\`app.jwt.verify_bearer\`), $(pct "$J0" "$J2") without it; pipelined $(pct "$P0" "$P1") / $(pct "$P0" "$P2")."
    if [ ${#CG[@]} -gt 0 ]; then
      read -r _ _ _ _ _ _ u0 s0 <<<"$(line_of json)"
      echo
      echo "User-space instructions per request (callgrind, \`--toggle-collect=ev_invoke_pending\`, \`wrk -t1 -c10\` 2 s;"
      echo "exact, unaffected by other load). The share of CPU is the added instructions over /json's, times the user"
      echo "share of /json's CPU in the keep-alive run above ($u0 of $(awk -v a="$u0" -v b="$s0" 'BEGIN { print a + b }') µs; the kernel's part is the same two"
      echo "syscalls for every route):"
      echo
      echo "| route | instructions/request | added | ≈ added share of CPU (keep-alive) |"
      echo "|---|---:|---:|---:|"
      b=$(ir_of json)
      for route in json json-jwt json-jwt-nocache; do
        ir=$(ir_of "$route")
        echo "| /$route | $ir | $( [ "$route" = json ] && echo "—" || awk -v a="$b" -v c="$ir" 'BEGIN { printf "%+.0f (%+.1f%%)", c - a, (c - a) / a * 100 }') | $( [ "$route" = json ] && echo "—" || awk -v a="$b" -v c="$ir" -v u="$u0" -v s="$s0" 'BEGIN { printf "%+.1f%%", (c - a) / a * u / (u + s) * 100 }') |"
      done
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
