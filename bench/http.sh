#!/usr/bin/env bash
# http.sh: sluice vs nginx+lua (and optionally Node.js) on a hello and a JSON route, one server
# core (0) and one wrk core (1), all in the same run; prints a table and records it in
# bench/RESULTS.md.  Usage: bench/http.sh [seconds]   (default 10; ~2 minutes in total)
#
# Environment knobs:
#   SLUICE_BIN=path     binary to test (default: build/sluice of this checkout)
#   BENCH_NODE=0        skip the Node.js anchor (default: run it when `node` exists)
#   BENCH_RESULTS=0     do not write bench/RESULTS.md (smoke runs)
#   BENCH_ROUNDS=2      rounds per figure (servers alternate between rounds)
#   BENCH_PORT=17480    first of three consecutive ports (sluice, nginx, node)
#   BENCH_KEEP=1        keep the temp dir with raw wrk output
#   BENCH_NICE=0        do not raise the priority (as root, servers and wrk run at nice -20 so
#                       that stray processes on a shared machine disturb the cores less)
set -euo pipefail

SECS=${1:-10}
case $SECS in ''|*[!0-9]*) echo "usage: $0 [seconds]" >&2; exit 2;; esac
ROUNDS=${BENCH_ROUNDS:-2}
case $ROUNDS in ''|*[!0-9]*|0) echo "BENCH_ROUNDS must be a positive integer" >&2; exit 2;; esac
# Each figure is the sum of ROUNDS rounds, the servers taking turns (in reverse order every
# other round), so that load drifting on a shared machine hits every server alike.
ASECS=$(( SECS / ROUNDS > 2 ? SECS / ROUNDS : 2 ))        # per round, (a)
BSECS=$(( SECS / ROUNDS / 2 > 2 ? SECS / ROUNDS / 2 : 2 ))  # per round, (b): it saturates quickly
CONNS=50
DEPTH=16

HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
SLUICE_BIN=${SLUICE_BIN:-$ROOT/build/sluice}
PORT0=${BENCH_PORT:-17480}
P_SLUICE=$PORT0 P_NGINX=$((PORT0 + 1)) P_NODE=$((PORT0 + 2))
NGX_LUA=/usr/lib/nginx/modules/ngx_http_lua_module.so

die() { echo "http.sh: $*" >&2; exit 1; }
[ "$(nproc)" -ge 2 ] || die "needs 2 cores (server on 0, wrk on 1)"
[ -x "$SLUICE_BIN" ] || die "no $SLUICE_BIN; build first: cmake -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo && cmake --build build"
command -v wrk >/dev/null || die "wrk missing (apt-get install wrk)"
command -v nginx >/dev/null || die "nginx missing (apt-get install nginx-light)"
[ -f "$NGX_LUA" ] || die "$NGX_LUA missing (apt-get install libnginx-mod-http-lua; note: the 'luajit' package removes it)"
command -v python3 >/dev/null || die "python3 missing"
WITH_NODE=${BENCH_NODE:-1}
command -v node >/dev/null || WITH_NODE=0
for p in $P_SLUICE $P_NGINX $P_NODE; do
  if ss -Htln "sport = :$p" | grep -q .; then die "port $p is in use (set BENCH_PORT)"; fi
done

# Priority. With autogroup scheduling (the default), nice only ranks processes of one session
# against each other; so, as root, the benchmark runs in its own session whose autogroup gets
# nice -20, and busy processes elsewhere on a shared machine take less of cores 0 and 1.
# shellcheck source=bench/lib.sh
. "$(dirname "$0")/lib.sh"      # shared helpers: bench_priority, cpu_ticks, rq_wait_ns, CLK
bench_priority "$@"

TMP=$(mktemp -d /tmp/httpbench.XXXXXX)
PIDS=()
cleanup() {
  local rc=$? p
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
  if [ "${BENCH_KEEP:-0}" = 1 ] || [ "$rc" -ne 0 ]; then echo "raw output and logs kept in $TMP" >&2
  else rm -rf "$TMP"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ---------------------------------------------------------------- start the servers (core 0)
# started through a link with another name: on a shared machine a stray `pkill sluice` (or -f)
# from someone else's test must not end the server under test halfway through the run
ln -s "$(readlink -f "$SLUICE_BIN")" "$TMP/server-under-test"
PORT=$P_SLUICE "${PRIO[@]}" taskset -c 0 "$TMP/server-under-test" run --config "$HERE/app/config.lua" >"$TMP/sluice.log" 2>&1 &
PID_SLUICE=$!; PIDS+=("$PID_SLUICE")

mkdir -p "$TMP/nginx"
sed -e "s#@PREFIX@#$TMP/nginx#g" -e "s#@PORT@#$P_NGINX#g" "$HERE/nginx/nginx.conf" >"$TMP/nginx/nginx.conf"
"${PRIO[@]}" taskset -c 0 nginx -p "$TMP/nginx" -e "$TMP/nginx/error.log" -c "$TMP/nginx/nginx.conf" >"$TMP/nginx.log" 2>&1 &
PID_NGINX=$!; PIDS+=("$PID_NGINX")

SERVERS="sluice nginx"
if [ "$WITH_NODE" = 1 ]; then
  PORT=$P_NODE "${PRIO[@]}" taskset -c 0 node "$HERE/app/node-server.js" >"$TMP/node.log" 2>&1 &
  PID_NODE=$!; PIDS+=("$PID_NODE")
  SERVERS="sluice nginx node"
fi

port_of() { case $1 in sluice) echo "$P_SLUICE";; nginx) echo "$P_NGINX";; node) echo "$P_NODE";; esac; }
pid_of()  { case $1 in sluice) echo "$PID_SLUICE";; nginx) echo "$PID_NGINX";; node) echo "$PID_NODE";; esac; }

# ---------------------------------------------------------------- correctness before measuring
# Checks status, content type and body of both routes, then that 16 pipelined requests get 16
# in-order responses on one connection.
check() { # server
  python3 - "$(port_of "$1")" "$1" <<'PY'
import json, socket, sys, time
port, name = int(sys.argv[1]), sys.argv[2]
def read_responses(s, want):
    buf, out = b"", []
    s.settimeout(3)
    while len(out) < want:
        while True:
            head_end = buf.find(b"\r\n\r\n")
            if head_end < 0: break
            head = buf[:head_end].decode("latin-1").split("\r\n")
            hdrs = {k.strip().lower(): v.strip() for k, v in (l.split(":", 1) for l in head[1:])}
            if "content-length" not in hdrs: sys.exit(f"{name}: response without Content-Length: {head}")
            n = int(hdrs["content-length"])
            if len(buf) < head_end + 4 + n: break
            out.append((head[0], hdrs, buf[head_end + 4: head_end + 4 + n]))
            buf = buf[head_end + 4 + n:]
            if len(out) == want: return out
        chunk = s.recv(65536)
        if not chunk: sys.exit(f"{name}: connection closed after {len(out)} responses")
        buf += chunk
    return out
deadline = time.time() + 10
while True:
    try:
        s = socket.create_connection(("127.0.0.1", port), timeout=1); break
    except OSError:
        if time.time() > deadline: sys.exit(f"{name}: not listening on {port}")
        time.sleep(0.1)
req = lambda path: f"GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n".encode()
s.sendall(req("/hello") + req("/json"))
(st1, h1, b1), (st2, h2, b2) = read_responses(s, 2)
if not st1.startswith("HTTP/1.1 200") or b1 != b"hello world\n" or not h1.get("content-type", "").startswith("text/plain"):
    sys.exit(f"{name}: /hello wrong: {st1} {h1} {b1!r}")
j = json.loads(b2)
if not st2.startswith("HTTP/1.1 200") or not h2.get("content-type", "").startswith("application/json") \
   or set(j) != {"ok", "id", "name"} or j["ok"] is not True or j["name"] != "x" or not isinstance(j["id"], int):
    sys.exit(f"{name}: /json wrong: {st2} {h2} {b2!r}")
s.sendall(req("/hello") * 8 + req("/json") * 8)
rs = read_responses(s, 16)
if [r[2] == b"hello world\n" for r in rs] != [True] * 8 + [False] * 8:
    sys.exit(f"{name}: pipelined responses out of order")
PY
}
for s in $SERVERS; do check "$s" || die "$s failed the correctness check (logs in $TMP)"; done

# ---------------------------------------------------------------- measuring
# wrk output -> "requests seconds p99_ms socket_errors non2xx"
parse_wrk() {
  awk '
    / requests in / { req = $1; d = $4; sub(/,$/, "", d)
                      if (d ~ /ms$/) { sub(/ms$/, "", d); d /= 1000 } else if (d ~ /m$/) { sub(/m$/, "", d); d *= 60 } else sub(/s$/, "", d) }
    $1 == "99%"     { v = $2; if (v ~ /us$/) { sub(/us$/, "", v); v /= 1000 } else if (v ~ /ms$/) sub(/ms$/, "", v); else if (v ~ /s$/) { sub(/s$/, "", v); v *= 1000 } p99 = v }
    /Socket errors/ { gsub(/,/, ""); err = $4 + $6 + $8 + $10 }
    /Non-2xx/       { bad = $NF }
    END { printf "%d %.3f %s %d %d\n", req, d, (p99 == "" ? "-" : p99), err, bad }'
}
RESULT_LINES=()
WARN=()
run() { # server route mode(a|b) seconds
  local srv=$1 route=$2 mode=$3 secs=$4 url pid u0 s0 u1 s1 t0 t1 out
  url="http://127.0.0.1:$(port_of "$srv")/$route"; pid=$(pid_of "$srv")
  out="$TMP/$srv-$route-$mode.txt"
  local args=(-t1 -c"$CONNS" -d"${secs}s" --latency)
  [ "$mode" = b ] && args=(-t1 -c"$CONNS" -d"${secs}s" -s "$HERE/pipeline.lua")
  local q0 q1 wq=0 v wpid
  read -r u0 s0 < <(cpu_ticks "$pid"); q0=$(rq_wait_ns "$pid")
  if [ "$mode" = b ]; then "${PRIO[@]}" taskset -c 1 wrk "${args[@]}" "$url" -- "$DEPTH" >"$out" &
  else "${PRIO[@]}" taskset -c 1 wrk "${args[@]}" "$url" >"$out" & fi
  wpid=$!
  # wrk's own run-queue wait, sampled while it runs (its /proc entry goes away at exit)
  while kill -0 "$wpid" 2>/dev/null; do
    v=$(rq_wait_ns "$wpid"); [ "$v" -gt 0 ] && wq=$v
    sleep 0.25
  done
  wait "$wpid" || die "wrk failed on $url: $(cat "$out")"
  kill -0 "$pid" 2>/dev/null || die "$srv (pid $pid) exited during the run; see $TMP/$srv.log"
  read -r u1 s1 < <(cpu_ticks "$pid"); q1=$(rq_wait_ns "$pid")
  t0=$((u0 + s0)) t1=$((u1 + s1))
  read -r req dur p99 err bad < <(parse_wrk <"$out")
  [ "$err" -gt 0 ] && WARN+=("$srv /$route ($mode): $err socket errors")
  [ "$bad" -gt 0 ] && WARN+=("$srv /$route ($mode): $bad non-2xx responses")
  # time spent runnable but not running = other processes took the core; over 5% skews results
  local sw=$(( (q1 - q0) / 10000000 / secs )) ww=$(( wq / 10000000 / secs ))
  if [ "$sw" -gt 5 ] || [ "$ww" -gt 5 ]; then
    WARN+=("$srv /$route ($mode): waited for a CPU ${sw}% (server) and ${ww}% (wrk) of the run: other load on the machine")
  fi
  RESULT_LINES+=("$srv $route $mode $req $dur $p99 $((t1 - t0)) $((u1 - u0)) $((s1 - s0))")
  printf '  %-6s /%-5s %s  %8.0f req/s  p99 %6s ms  server CPU %5.1f s\n' "$srv" "$route" \
    "$( [ "$mode" = a ] && echo "keep-alive" || echo "pipelined ")" \
    "$(awk -v r="$req" -v d="$dur" 'BEGIN { print r / d }')" "$( [ "$mode" = a ] && echo "$p99" || echo "-")" \
    "$(awk -v t=$((t1 - t0)) -v c="$CLK" 'BEGIN { print t / c }')"
}

echo "sluice: $SLUICE_BIN (pid $PID_SLUICE)  nginx: $(nginx -v 2>&1 | sed 's/.*\///') (pid $PID_NGINX)$( [ "$WITH_NODE" = 1 ] && echo "  node: $(node --version) (pid $PID_NODE)")"
echo "each server on core 0, wrk -t1 on core 1; $ROUNDS rounds of (a) $CONNS conns ${ASECS}s, (b) $CONNS conns x $DEPTH pipelined ${BSECS}s"
# shellcheck disable=SC2086  # split on purpose
REVERSED=$(printf '%s\n' $SERVERS | tac | tr '\n' ' ')
for route in hello json; do
  for s in $SERVERS; do   # warm up: JIT traces, connection pools, page cache
    taskset -c 1 wrk -t1 -c"$CONNS" -d1s "http://127.0.0.1:$(port_of "$s")/$route" >/dev/null
  done
  for mode in a b; do
    secs=$ASECS; [ "$mode" = b ] && secs=$BSECS
    for ((round = 1; round <= ROUNDS; round++)); do
      order=$SERVERS; [ $((round % 2)) = 0 ] && order=$REVERSED
      for s in $order; do run "$s" "$route" "$mode" "$secs"; done
    done
  done
done
for s in $SERVERS; do kill -0 "$(pid_of "$s")" 2>/dev/null || die "$s died during the run (logs in $TMP)"; done

# ---------------------------------------------------------------- table
TABLE=$(printf '%s\n' "${RESULT_LINES[@]}" | awk -v clk="$CLK" -v servers="$SERVERS" '
  { k = $1 SUBSEP $2; m = $3          # sums over the rounds; p99: the worst round
    req[k, m] += $4; dur[k, m] += $5; tck[k, m] += $7; ut[k, m] += $8; st[k, m] += $9
    if (m == "a" && (p99[k] == "" || $6 + 0 > p99[k] + 0)) p99[k] = $6 }
  END {
    for (km in req) {
      rps[km] = req[km] / dur[km]; cpu[km] = tck[km] / clk / dur[km]
      rpc[km] = (tck[km] > 0 ? req[km] / (tck[km] / clk) : 0)
      usr[km] = 1e6 * ut[km] / clk / req[km]; sys[km] = 1e6 * st[km] / clk / req[km]
    }
    n = split(servers, S, " ")
    print "| route | server | (a) req/s | (a) p99 ms | (a) server CPU | (a) req per CPU-s | (a) CPU us/req user+sys | (b) pipelined req/s | (b) server CPU | (b) req per CPU-s | (b) CPU us/req user+sys |"
    print "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    split("hello json", R, " ")
    for (ri = 1; ri <= 2; ri++) {
      r = R[ri]
      for (i = 1; i <= n; i++) {
        k = S[i] SUBSEP r
        printf "| /%s | %s | %.0f | %s | %.0f%% | %.0f | %.2f+%.2f | %.0f | %.0f%% | %.0f | %.2f+%.2f |\n", r, S[i], rps[k, "a"], p99[k],
               100 * cpu[k, "a"], rpc[k, "a"], usr[k, "a"], sys[k, "a"], rps[k, "b"], 100 * cpu[k, "b"], rpc[k, "b"], usr[k, "b"], sys[k, "b"]
      }
      s = "sluice" SUBSEP r; g = "nginx" SUBSEP r
      printf "| /%s | **sluice/nginx** | %.2fx | %.2fx | | **%.2fx** | | **%.2fx** | | %.2fx | |\n", r,
             rps[s, "a"] / rps[g, "a"], p99[s] / p99[g], rpc[s, "a"] / rpc[g, "a"], rps[s, "b"] / rps[g, "b"],
             rpc[s, "b"] / rpc[g, "b"]
      verdict = verdict sprintf("- /%s: (a) req per CPU-s %.2fx nginx (target >= 1.15x): %s; p99 %s vs %s ms (target: no higher): %s; (b) pipelined %.2fx nginx (target >= 4x): %s\n",
        r, rpc[s, "a"] / rpc[g, "a"], (rpc[s, "a"] / rpc[g, "a"] >= 1.15 ? "MET" : "NOT MET"), p99[s], p99[g],
        (p99[s] + 0 <= p99[g] + 0 ? "MET" : "NOT MET"), rps[s, "b"] / rps[g, "b"], (rps[s, "b"] / rps[g, "b"] >= 4 ? "MET" : "NOT MET"))
    }
    printf "\nTargets (sluice vs nginx, same run):\n%s", verdict
  }')

echo
echo "$TABLE"
if [ ${#WARN[@]} -gt 0 ]; then echo; echo "warnings:"; printf '  %s\n' "${WARN[@]}"; fi

# ---------------------------------------------------------------- RESULTS.md
[ "${BENCH_RESULTS:-1}" = 1 ] || exit 0
RES="$HERE/RESULTS.md"
SECTION=$(cat <<EOF
<!-- http.sh:begin (this section is rewritten by bench/http.sh) -->
## bench/http.sh — latest run

- date: $(date -u '+%Y-%m-%d %H:%M UTC')
- machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | sed 's/.*: //'), kernel $(uname -r)
- command: \`bench/http.sh $SECS\` (sluice $(cd "$ROOT" && git rev-parse --short HEAD 2>/dev/null || echo '?')$(cd "$ROOT" && git diff --quiet HEAD -- core lua 2>/dev/null || echo ' + uncommitted core/lua changes'), $SLUICE_BIN)
- nginx $(nginx -v 2>&1 | sed 's/.*\///') + lua-nginx-module $(dpkg-query -W -f='${Version}' libnginx-mod-http-lua 2>/dev/null)$( [ "$WITH_NODE" = 1 ] && echo ", node $(node --version)")
- setup: each server one worker pinned to core 0 (sluice \`workers = 1\`, access log off, \`ratelimit = false\`;
  nginx \`master_process off\`, \`worker_processes 1\`, access log off, Content-Length set from Lua;
  node one process); \`wrk -t1\` pinned to core 1; (a) $CONNS keep-alive connections, \`--latency\`, $ROUNDS x ${ASECS} s;
  (b) $CONNS connections x $DEPTH pipelined requests (bench/pipeline.lua), $ROUNDS x ${BSECS} s.
  Servers take turns round by round; figures are sums over the rounds, p99 is the worst round.
  Priority: $( [ ${#PRIO[@]} -gt 0 ] && echo "servers and wrk in their own session, autogroup nice -20 and nice -20 (shared machine)" || echo "default nice").
  Server CPU = delta of utime+stime (/proc/PID/stat fields 14+15, all threads) / CLK_TCK over the wrk run.
  CPU us/req = utime (user space) + stime (kernel) per request, in microseconds (tick-sampled: read it as a split, not to 0.01 us).

$TABLE
$( [ ${#WARN[@]} -gt 0 ] && { echo; echo "Warnings during this run:"; printf -- '- %s\n' "${WARN[@]}"; } )
<!-- http.sh:end -->
EOF
)
if [ ! -f "$RES" ]; then printf '# Benchmark results\n\n' >"$RES"; fi
SECTION=$SECTION python3 - "$RES" <<'PY'
import os, re, sys
p = sys.argv[1]; s = open(p).read()
new = os.environ["SECTION"]
pat = re.compile(r"<!-- http.sh:begin.*?<!-- http.sh:end -->", re.S)
s = pat.sub(lambda m: new, s) if pat.search(s) else s.rstrip("\n") + "\n\n" + new + "\n"
open(p, "w").write(s)
PY
echo; echo "recorded in $RES"
