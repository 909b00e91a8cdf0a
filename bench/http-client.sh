#!/usr/bin/env bash
# http-client.sh: a handler that makes one outbound request per request (app.http.get to a local
# nginx serving a small file) vs the same in nginx + lua-nginx-module (ngx.location.capture to
# proxy_pass with a keep-alive pool) and in Node.js (fetch), in the same run; plus plain nginx
# proxy_pass for reference, and the p99 of a parallel /hello while 200 outbound calls wait on a
# slow upstream. Servers on core 0, wrk -t1 and the upstream on core 1; figures are requests per
# CPU-second of the server. Records a section in bench/RESULTS.md.
# Usage: bench/http-client.sh [seconds]   (per round, default 5; about 1.5 minutes in total)
#
# Environment knobs:
#   SLUICE_BIN=path     binary to test (default build/sluice)
#   BENCH_ROUNDS=2      rounds per figure (the servers take turns)
#   BENCH_NODE=0        skip the Node.js anchor
#   BENCH_RESULTS=0     do not write bench/RESULTS.md (smoke runs)
#   BENCH_PORT=17490    first of five consecutive ports (sluice, nginx, node, upstream, base)
#   BENCH_BASE=path     also measure this sluice binary (e.g. main's build) in the same rounds,
#                       as the contender "base": a before/after that shares the machine's load
#   BENCH_KEEP=1        keep the temp dir (raw wrk output, logs)
#   BENCH_NICE=0        do not raise the priority (see bench/lib.sh)
set -euo pipefail

SECS=${1:-5}
case $SECS in ''|*[!0-9]*|0) echo "usage: $0 [seconds]" >&2; exit 2;; esac
ROUNDS=${BENCH_ROUNDS:-2}
case $ROUNDS in ''|*[!0-9]*|0) echo "BENCH_ROUNDS must be a positive integer" >&2; exit 2;; esac
CONNS=50
WAITING=200                      # outbound calls parked on the slow upstream during the /hello probe

HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
SLUICE_BIN=$(readlink -f "${SLUICE_BIN:-$ROOT/build/sluice}")
PORT0=${BENCH_PORT:-17490}
P_SLUICE=$PORT0 P_NGINX=$((PORT0 + 1)) P_NODE=$((PORT0 + 2)) P_UP=$((PORT0 + 3)) P_BASE=$((PORT0 + 4))
BASE_BIN=${BENCH_BASE:+$(readlink -f "$BENCH_BASE")}
[ -z "$BASE_BIN" ] || [ -x "$BASE_BIN" ] || { echo "BENCH_BASE=$BENCH_BASE: not an executable" >&2; exit 2; }
MODS=/usr/lib/nginx/modules
BENCH_NAME=http-client
# shellcheck source=bench/lib.sh
. "$HERE/lib.sh"

[ "$(nproc)" -ge 2 ] || bench_die "needs 2 cores (servers on 0, wrk and the upstream on 1)"
[ -x "$SLUICE_BIN" ] || bench_die "no $SLUICE_BIN; build first: cmake -B build && cmake --build build"
for t in wrk nginx python3; do command -v $t >/dev/null || bench_die "$t missing"; done
for m in ngx_http_lua_module ngx_http_echo_module ndk_http_module; do
  [ -f "$MODS/$m.so" ] || bench_die "$MODS/$m.so missing (libnginx-mod-http-lua, libnginx-mod-http-echo)"
done
WITH_NODE=${BENCH_NODE:-1}
command -v node >/dev/null || WITH_NODE=0

bench_priority "$@"
bench_tmpdir
T_START=$SECONDS

# ---------------------------------------------------------------- upstream (core 1, with wrk)
mkdir -p "$TMP/www" "$TMP/up" "$TMP/nginx"
{ head -c 47 /dev/zero | tr '\0' u; echo; } >"$TMP/www/small.txt"   # 48 bytes
chmod 755 "$TMP" "$TMP/www"; chmod 644 "$TMP/www/small.txt"
sed -e "s#@PREFIX@#$TMP/up#g" -e "s#@PORT@#$P_UP#g" -e "s#@ROOT@#$TMP/www#g" "$HERE/nginx/upstream.conf" >"$TMP/up/nginx.conf"
if ss -Htln "sport = :$P_UP" | grep -q .; then bench_die "port $P_UP is in use (set BENCH_PORT)"; fi
"${PRIO[@]}" taskset -c 1 nginx -p "$TMP/up" -e "$TMP/up/error.log" -c "$TMP/up/nginx.conf" >"$TMP/upstream.log" 2>&1 &
SRV_PID[upstream]=$!; PIDS+=("$!")
bench_wait_port "$P_UP" upstream
UP_URL="http://127.0.0.1:$P_UP/small.txt"

# ---------------------------------------------------------------- servers under test (core 0)
ln -s "$SLUICE_BIN" "$TMP/server-under-test"      # a stray `pkill sluice` elsewhere must miss it
bench_start sluice "$P_SLUICE" env PORT="$P_SLUICE" BENCH_UPSTREAM="$UP_URL" BENCH_SLOW="http://127.0.0.1:$P_UP/slow" \
  "$TMP/server-under-test" run --config "$HERE/http-client-app/config.lua"
sed -e "s#@PREFIX@#$TMP/nginx#g" -e "s#@PORT@#$P_NGINX#g" -e "s#@UP@#$P_UP#g" "$HERE/nginx/http-client.conf" >"$TMP/nginx/nginx.conf"
bench_start nginx "$P_NGINX" nginx -p "$TMP/nginx" -e "$TMP/nginx/error.log" -c "$TMP/nginx/nginx.conf"
SERVERS="sluice nginx"
if [ -n "$BASE_BIN" ]; then
  ln -s "$BASE_BIN" "$TMP/base-under-test"
  bench_start base "$P_BASE" env PORT="$P_BASE" BENCH_UPSTREAM="$UP_URL" BENCH_SLOW="http://127.0.0.1:$P_UP/slow" \
    "$TMP/base-under-test" run --config "$HERE/http-client-app/config.lua"
  SERVERS="sluice base nginx"
fi
if [ "$WITH_NODE" = 1 ]; then
  bench_start node "$P_NODE" env PORT="$P_NODE" BENCH_UPSTREAM="$UP_URL" node "$HERE/http-client-app/node-fetch.js"
  SERVERS="$SERVERS node"
fi
for s in $SERVERS; do bench_wait_port "${SRV_PORT[$s]}" "$s"; done

# ---------------------------------------------------------------- same answer everywhere
python3 - "$TMP/www/small.txt" "$P_SLUICE/proxy" "$P_NGINX/proxy" "$P_NGINX/pp" \
  $( [ "$WITH_NODE" = 1 ] && echo "$P_NODE/proxy") $( [ -n "$BASE_BIN" ] && echo "$P_BASE/proxy") <<'PY' || bench_die "correctness check failed (logs in $TMP)"
import http.client, sys
want = open(sys.argv[1], "rb").read()
for target in sys.argv[2:]:
    port, path = target.split("/", 1)
    for _ in range(3):          # also over a reused connection of the server's pool
        c = http.client.HTTPConnection("127.0.0.1", int(port), timeout=5)
        c.request("GET", "/" + path)
        r = c.getresponse(); body = r.read(); c.close()
        if r.status != 200 or body != want:
            sys.exit(f":{port}/{path}: {r.status} {body[:100]!r}, want 200 and the upstream file")
PY

# ---------------------------------------------------------------- measuring
url() { echo "http://127.0.0.1:${SRV_PORT[$1]}/$2"; }
echo "sluice: $SLUICE_BIN (pid ${SRV_PID[sluice]})  nginx: $(nginx -v 2>&1 | sed 's/.*\///') (pid ${SRV_PID[nginx]})$( [ "$WITH_NODE" = 1 ] && echo "  node: $(node --version) (pid ${SRV_PID[node]})")"
echo "servers on core 0; wrk -t1 and the upstream nginx on core 1; $ROUNDS rounds of $CONNS connections x ${SECS}s"
for s in $SERVERS; do taskset -c 1 wrk -t1 -c"$CONNS" -d1s "$(url "$s" proxy)" >/dev/null; done
taskset -c 1 wrk -t1 -c"$CONNS" -d1s "$(url nginx pp)" >/dev/null
REVERSED=$(printf '%s\n' $SERVERS | tac | tr '\n' ' ')
for ((round = 1; round <= ROUNDS; round++)); do
  order=$SERVERS; [ $((round % 2)) = 0 ] && order=$REVERSED
  for s in $order; do bench_run proxy "$s" "$(url "$s" proxy)" "$SECS" -c"$CONNS" --latency; done
  bench_run proxy_pass nginx "$(url nginx pp)" "$SECS" -c"$CONNS" --latency
done
for s in $SERVERS; do kill -0 "${SRV_PID[$s]}" 2>/dev/null || bench_die "$s died during the run"; done

# ---------------------------------------------------------------- /hello while 200 calls wait
# A paced probe (10 connections, 2 ms between a connection's requests: ~5,000 req/s, far from
# saturating the core) on /hello: once alone, once while wrk keeps $WAITING connections on /slow,
# each parking a handler on an upstream that answers after 3 s (so every 3 s, 200 calls complete
# and 200 new ones start).
# Three rounds of (alone, loaded); the figures are the medians of the rounds.
PROBE_SECS=$(( SECS > 4 ? SECS : 4 ))
probe() { "${PRIO[@]}" taskset -c 1 wrk -t1 -c10 -d"${PROBE_SECS}s" --latency -s "$HERE/paced.lua" "$(url sluice hello)" -- 2 >"$1" 2>&1; }
waiting() { curl -s "$(url sluice metrics)" | awk '$1 == "sluice_http_client_in_flight" || $1 == "sluice_http_client_queued" { n += $2 } END { print n + 0 }'; }
median3() { printf '%s\n' "$@" | sort -g | sed -n 2p; }
A99=() A50=() L99=() L50=() LRATE=() WAITS=() SBAD=0 HERR=0 HBAD=0
for ((pr = 1; pr <= 3; pr++)); do
  probe "$TMP/hello-alone-$pr.txt"
  "${PRIO[@]}" taskset -c 1 wrk -t1 -c"$WAITING" -d"$((PROBE_SECS + 4))s" --timeout 30s "$(url sluice slow)" >"$TMP/slow-$pr.txt" 2>&1 &
  SLOW_WRK=$!
  sleep 2
  WAITS+=("$(waiting)")
  probe "$TMP/hello-loaded-$pr.txt"
  WAITS+=("$(waiting)")
  wait "$SLOW_WRK" || true
  read -r _ _ p50 p99 _ _ < <(parse_wrk <"$TMP/hello-alone-$pr.txt"); A99+=("$p99"); A50+=("$p50")
  read -r n d p50 p99 e b < <(parse_wrk <"$TMP/hello-loaded-$pr.txt"); L99+=("$p99"); L50+=("$p50")
  LRATE+=("$(awk -v r="$n" -v d="$d" 'BEGIN { printf "%.0f", r / d }')"); HERR=$((HERR + e)); HBAD=$((HBAD + b))
  read -r _ _ _ _ _ b < <(parse_wrk <"$TMP/slow-$pr.txt"); SBAD=$((SBAD + b))
done
HP99=$(median3 "${L99[@]}") HP50=$(median3 "${L50[@]}") AP99=$(median3 "${A99[@]}") AP50=$(median3 "${A50[@]}")

# ---------------------------------------------------------------- table
SUM=$(bench_sum)
TABLE=$(awk -v servers="$SERVERS" '
  { k = $1 " " $2; rps[k] = $3; rpc[k] = $4; p50[k] = $5; p99[k] = $6; us[k] = $7; sy[k] = $8 }
  END {
    n = split(servers, S, " ")
    print "| server | handler | req/s | req per CPU-s | CPU us/req user+sys | p50 ms | p99 ms | sluice / this, per CPU-s |"
    print "|---|---|---:|---:|---:|---:|---:|---:|"
    what["sluice"] = "`app.http.get` (libcurl multi on libev)"; what["nginx"] = "Lua `ngx.location.capture` -> proxy_pass, keepalive 64"
    what["node"] = "`await fetch()` (undici)"; what["base"] = "the same, BENCH_BASE binary (before)"
    a = "proxy sluice"
    for (i = 1; i <= n; i++) {
      k = "proxy " S[i]
      printf "| %s | %s | %.0f | %.0f | %.2f+%.2f | %s | %s | %s |\n", S[i], what[S[i]], rps[k], rpc[k], us[k], sy[k], p50[k], p99[k],
             (S[i] == "sluice" ? "" : sprintf("**%.2fx**", rpc[a] / rpc[k]))
    }
    k = "proxy_pass nginx"
    printf "| nginx | plain `proxy_pass` (no Lua), for reference | %.0f | %.0f | %.2f+%.2f | %s | %s | %.2fx |\n", rps[k], rpc[k], us[k], sy[k], p50[k], p99[k], rpc[a] / rpc[k]
    r = rpc[a] / rpc["proxy nginx"]
    v = sprintf("- requests per CPU-second %.2fx nginx+lua (target >= 1.0x): %s\n", r, (r >= 1.0 ? "MET" : "NOT MET"))
    if (("proxy node") in rpc) { r = rpc[a] / rpc["proxy node"]; v = v sprintf("- requests per CPU-second %.2fx Node fetch (target >= 4x): %s\n", r, (r >= 4 ? "MET" : "NOT MET")) }
    if (("proxy base") in rpc) v = v sprintf("- this sluice vs the BENCH_BASE binary, requests per CPU-second: %.2fx (same rounds)\n", rpc[a] / rpc["proxy base"])
    printf "\nTargets (same run):\n%s", v
  }' <<<"$SUM")
PROBE="- /hello p99 while $WAITING outbound calls wait on the slow upstream: ${HP99} ms, p50 ${HP50} ms (the same probe alone: p99 ${AP99} ms, p50 ${AP50} ms; medians of 3 rounds, p99 per round loaded ${L99[*]} / alone ${A99[*]} ms; paced probe, ${LRATE[*]} req/s on 10 connections; outbound calls waiting (in flight + queued) at the start and end of each loaded probe: ${WAITS[*]}; target < 2 ms): $(awk -v p="$HP99" 'BEGIN { print (p + 0 < 2 ? "MET" : "NOT MET") }')"
[ "$HERR" -gt 0 ] || [ "$HBAD" -gt 0 ] && WARN+=("/hello probe: $HERR socket errors, $HBAD non-2xx")
[ "$SBAD" -gt 0 ] && WARN+=("/slow: $SBAD non-2xx")
echo
echo "$TABLE"
echo "$PROBE"
if [ ${#WARN[@]} -gt 0 ]; then echo; echo "warnings:"; printf '  %s\n' "${WARN[@]}"; fi
echo "(took $((SECONDS - T_START)) s)"

# ---------------------------------------------------------------- RESULTS.md
[ "${BENCH_RESULTS:-1}" = 1 ] || exit 0
RES="$HERE/RESULTS.md"
SECTION=$(cat <<EOF
<!-- http-client.sh:begin (this section is rewritten by bench/http-client.sh) -->
## bench/http-client.sh — outbound HTTP from a handler (issue 19), latest run

- date: $(date -u '+%Y-%m-%d %H:%M UTC')
- machine: $(bench_machine)
- command: \`bench/http-client.sh $SECS\` (BENCH_ROUNDS=$ROUNDS$( [ -n "$BASE_BIN" ] && echo ", BENCH_BASE=$BASE_BIN"); sluice $(cd "$ROOT" && git rev-parse --short HEAD 2>/dev/null || echo '?')$(cd "$ROOT" && git diff --quiet HEAD -- core lua 2>/dev/null || echo ' + uncommitted core/lua changes'), $SLUICE_BIN)
- nginx $(nginx -v 2>&1 | sed 's/.*\///') + lua-nginx-module $(dpkg-query -W -f='${Version}' libnginx-mod-http-lua 2>/dev/null)$( [ "$WITH_NODE" = 1 ] && echo ", node $(node --version)"), $(curl-config --version 2>/dev/null || curl --version | head -1 | awk '{ print $3 }')
- setup: each server one worker pinned to core 0 (sluice bench/http-client-app/: \`workers = 1\`, access log off,
  \`ratelimit = false\`, http_client defaults; nginx bench/nginx/http-client.conf: \`master_process off\`,
  \`worker_processes 1\`, upstream \`keepalive 64\`; node one process, bench/http-client-app/node-fetch.js).
  Each request to /proxy makes one GET to the upstream, a second nginx (bench/nginx/upstream.conf) serving a
  48-byte file, pinned to core 1 together with \`wrk -t1\`; $CONNS keep-alive connections, $ROUNDS x ${SECS} s per
  figure, servers taking turns; figures are sums over the rounds (p50/p99: median of the rounds).
  Server CPU = delta of utime+stime of the server process (/proc/PID/stat, all threads) over the wrk run;
  the upstream's CPU is not counted for anyone. Priority: $(bench_prio_text).
  Checked before measuring: every server answers /proxy with 200 and the upstream's bytes, also on a reused connection.
  The /hello probe: wrk -t1 -c10 with 2 ms between a connection's requests (bench/paced.lua), ${PROBE_SECS} s, alone and
  while \`wrk -c$WAITING\` keeps $WAITING requests on sluice's /slow, each waiting on an upstream that answers after 3 s
  (echo_sleep); 3 rounds.

$TABLE
$PROBE
$( [ ${#WARN[@]} -gt 0 ] && { echo; echo "Warnings during this run:"; printf -- '- %s\n' "${WARN[@]}"; } )
<!-- http-client.sh:end -->
EOF
)
SECTION=$SECTION python3 - "$RES" http-client.sh <<'PY'
import os, re, sys
p, tag = sys.argv[1], re.escape(sys.argv[2])
s = open(p).read(); new = os.environ["SECTION"]
pat = re.compile(r"<!-- " + tag + r":begin.*?<!-- " + tag + r":end -->", re.S)
s = pat.sub(lambda m: new, s) if pat.search(s) else s.rstrip("\n") + "\n\n" + new + "\n"
open(p, "w").write(s)
PY
echo; echo "recorded in $RES"
