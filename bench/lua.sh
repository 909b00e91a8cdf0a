#!/usr/bin/env bash
# lua.sh: Lua-heavy handlers, sluice (defaults: the JIT on and the runaway guard on) against
# nginx + lua-nginx-module running the very same Lua (bench/lua-app/work.lua), one server core
# (0) and one wrk core (1), all in the same run; also sluice with the guard off
# (limits.script_timeout = 0), to show what the guard costs, and with the JIT off (limits.jit =
# false: every runaway stoppable). Prints a table and records it in bench/RESULTS.md.
# Usage: bench/lua.sh [seconds]   (per round, route and server, default 5; ~5 minutes)
#
# The routes (bench/lua-app/work.lua):
#   /sort  builds 200 small tables, sorts them with a Lua comparator, sums a field
#   /text  POST ~10 KB of text: gsub escaping, gmatch word scan, whitespace squeeze, a summary
#   /json  POST a ~5 KB JSON document: cjson decode, modify, encode (the response is ~5 KB)
#
# Environment knobs:
#   SLUICE_BIN=path     binary to test (default: build/sluice of this checkout)
#   BENCH_BASE=path     another sluice binary to run as a fourth contender (e.g. an older build)
#   BENCH_ROUNDS=4      rounds per figure (the servers take turns, in reverse order every other round)
#   BENCH_CONNS=20      wrk connections
#   BENCH_CALLGRIND=0   skip the instruction counts (valgrind's callgrind; ~2 minutes)
#   BENCH_RESULTS=0     do not write bench/RESULTS.md (smoke runs)
#   BENCH_PORT=17660    first of six consecutive ports
#   BENCH_KEEP=1        keep the temp dir (raw wrk output, logs, request bodies)
#   BENCH_NICE=0        do not raise the priority (see bench/lib.sh)
set -euo pipefail

SECS=${1:-5}
case $SECS in ''|*[!0-9]*|0) echo "usage: $0 [seconds]" >&2; exit 2;; esac
ROUNDS=${BENCH_ROUNDS:-4}
case $ROUNDS in ''|*[!0-9]*|0) echo "BENCH_ROUNDS must be a positive integer" >&2; exit 2;; esac
CONNS=${BENCH_CONNS:-20}
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
APP=$HERE/lua-app
SLUICE_BIN=$(readlink -f "${SLUICE_BIN:-$ROOT/build/sluice}")
PORT0=${BENCH_PORT:-17660}
NGX_LUA=/usr/lib/nginx/modules/ngx_http_lua_module.so
BENCH_NAME=luabench
# shellcheck source=bench/lib.sh
. "$HERE/lib.sh"

[ "$(nproc)" -ge 2 ] || bench_die "needs 2 cores (server on 0, wrk on 1)"
[ -x "$SLUICE_BIN" ] || bench_die "no $SLUICE_BIN; build first: cmake -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo && cmake --build build"
for t in wrk nginx python3; do command -v $t >/dev/null || bench_die "$t missing"; done
CALLGRIND=${BENCH_CALLGRIND:-1}
if [ "$CALLGRIND" = 1 ] && ! command -v valgrind >/dev/null; then
  echo "lua.sh: valgrind missing: no instruction counts (apt-get install valgrind)" >&2; CALLGRIND=0
fi
[ -f "$NGX_LUA" ] || bench_die "$NGX_LUA missing (apt-get install libnginx-mod-http-lua)"
if [ -n "${BENCH_BASE:-}" ]; then BENCH_BASE=$(readlink -f "$BENCH_BASE"); [ -x "$BENCH_BASE" ] || bench_die "BENCH_BASE=$BENCH_BASE is not executable"; fi

bench_priority "$@"
bench_tmpdir
T_START=$SECONDS
python3 "$APP/gen.py" "$TMP"

# ---------------------------------------------------------------- servers (core 0)
# sluice through links with other names: a stray `pkill sluice` on a shared machine must not end
# the servers under test
ln -s "$SLUICE_BIN" "$TMP/server-under-test"
bench_start sluice "$PORT0" env PORT="$PORT0" "$TMP/server-under-test" run --config "$APP/config.lua"
bench_start noguard $((PORT0 + 1)) env PORT=$((PORT0 + 1)) BENCH_SCRIPT_TIMEOUT=0 "$TMP/server-under-test" run --config "$APP/config.lua"
mkdir -p "$TMP/nginx"
sed -e "s#@PREFIX@#$TMP/nginx#g" -e "s#@PORT@#$((PORT0 + 2))#g" -e "s#@APPDIR@#$APP#g" "$HERE/nginx/lua.conf" >"$TMP/nginx/nginx.conf"
bench_start nginx $((PORT0 + 2)) nginx -p "$TMP/nginx" -e "$TMP/nginx/error.log" -c "$TMP/nginx/nginx.conf"
bench_start nojit $((PORT0 + 4)) env PORT=$((PORT0 + 4)) BENCH_JIT=false "$TMP/server-under-test" run --config "$APP/config.lua"
SERVERS="sluice noguard nojit nginx"
if [ -n "${BENCH_BASE:-}" ]; then
  ln -s "$BENCH_BASE" "$TMP/server-base"
  bench_start base $((PORT0 + 3)) env PORT=$((PORT0 + 3)) "$TMP/server-base" run --config "$APP/config.lua"
  SERVERS="$SERVERS base"
fi
for s in $SERVERS; do bench_wait_port "${SRV_PORT[$s]}" "$s"; done

# ---------------------------------------------------------------- correctness before measuring
# Every server gives the same answers: /sort's first response (the counters start at 1), /text
# byte for byte, /json the same document (key order aside); and the sluice servers run with
# the JIT on.
python3 - "$TMP" $(for s in $SERVERS; do echo "$s=${SRV_PORT[$s]}"; done) <<'PY' || bench_die "correctness check failed (logs in $TMP)"
import json, sys, urllib.request
tmp, servers = sys.argv[1], dict(a.split("=") for a in sys.argv[2:])
text = open(tmp + "/text.txt", "rb").read()
doc = open(tmp + "/doc.json", "rb").read()
def call(port, path, body=None, ctype=None):
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=body, headers={"Content-Type": ctype} if ctype else {})
    with urllib.request.urlopen(req, timeout=5) as r:
        return r.status, r.read()
got = {}
for name, port in servers.items():
    a = call(port, "/sort")
    b = call(port, "/text", text, "text/plain")
    c = call(port, "/json", doc, "application/json")
    if a[0] != 200 or b[0] != 200 or c[0] != 200: sys.exit(f"{name}: statuses {a[0]} {b[0]} {c[0]}")
    got[name] = (a[1], b[1], json.loads(c[1]))
ref = got["nginx"]
for name, g in got.items():
    for what, x, y in zip(("/sort", "/text", "/json"), g, ref):
        if x != y: sys.exit(f"{name} {what} differs from nginx: {str(x)[:200]} vs {str(y)[:200]}")
d = ref[2]
if not (d["summary"]["version"] == 4 and d["owner"]["name"] == "ADA LOVELACE" and len(doc) > 5000 and len(text) == 10240):
    sys.exit("unexpected /json result or request bodies")
PY

# ---------------------------------------------------------------- measuring
url() { echo "http://127.0.0.1:${SRV_PORT[$1]}/$2"; }
body_args() { # route -> wrk args for its request body (after the URL: -s script -- file type)
  case $1 in
    sort) echo "";;
    text) echo "-s $APP/post.lua -- $TMP/text.txt text/plain";;
    json) echo "-s $APP/post.lua -- $TMP/doc.json application/json";;
  esac
}
route_args() { echo "-c$CONNS --latency $(body_args "$1")"; }
echo "sluice: $SLUICE_BIN  nginx: $(nginx -v 2>&1 | sed 's/.*\///')$( [ -n "${BENCH_BASE:-}" ] && echo "  base: $BENCH_BASE")"
echo "each server one worker on core 0, wrk -t1 -c$CONNS on core 1; $ROUNDS rounds x ${SECS}s per route and server; load: $(cut -d' ' -f1-3 /proc/loadavg)"
REVERSED=$(printf '%s\n' $SERVERS | tac | tr '\n' ' ')
LOAD_BEFORE=$(cut -d' ' -f1 /proc/loadavg)
for route in sort text json; do
  # shellcheck disable=SC2046  # word splitting of the wrk arguments on purpose
  for s in $SERVERS; do   # warm up: JIT traces, page cache
    wrk_argv "$(url "$s" "$route")" -t1 -d2s $(route_args "$route")
    taskset -c 1 wrk "${WRK_ARGV[@]}" >/dev/null
  done
  for ((round = 1; round <= ROUNDS; round++)); do
    order=$SERVERS; [ $((round % 2)) = 0 ] && order=$REVERSED
    # shellcheck disable=SC2046
    for s in $order; do bench_run "$route" "$s" "$(url "$s" "$route")" "$SECS" $(route_args "$route"); done
  done
done
for s in $SERVERS; do kill -0 "${SRV_PID[$s]}" 2>/dev/null || bench_die "$s died during the run (logs in $TMP)"; done
LOAD_AFTER=$(cut -d' ' -f1 /proc/loadavg)

# spread of the per-round req per CPU-s, per route and server: (max - min) / mean
SPREAD=$(printf '%s\n' "${RESULT_LINES[@]}" | awk -v clk="$CLK" '
  { k = $1 " " $2; v = ($7 > 0 ? $3 / ($7 / clk) : 0); n[k]++; s[k] += v
    if (!(k in mx) || v > mx[k]) mx[k] = v; if (!(k in mn) || v < mn[k]) mn[k] = v }
  END { for (k in n) printf "%s %.1f\n", k, 100 * (mx[k] - mn[k]) / (s[k] / n[k]) }')
# the same comparison round by round: sluice's and nginx's rounds ran next to each other, so
# their ratio is less exposed to load drifting over the run; median and range per route
PAIRED=$(printf '%s\n' "${RESULT_LINES[@]}" | awk -v clk="$CLK" '
  { k = $1 " " $2; r[k, ++cnt[k]] = ($7 > 0 ? $3 / ($7 / clk) : 0) }
  END { split("sort text json", R, " ")
    for (i = 1; i <= 3; i++) { m = cnt[R[i] " sluice"]; n = 0
      for (j = 1; j <= m; j++) if (r[R[i] " nginx", j] > 0) v[++n] = r[R[i] " sluice", j] / r[R[i] " nginx", j]
      for (a = 2; a <= n; a++) { x = v[a]; for (b = a - 1; b >= 1 && v[b] > x; b--) v[b + 1] = v[b]; v[b + 1] = x }
      med = (n % 2 ? v[(n + 1) / 2] : (v[n / 2] + v[n / 2 + 1]) / 2)
      printf "/%s %.2fx (%.2f-%.2f)\n", R[i], med, v[1], v[n] } }')

# ---------------------------------------------------------------- instruction counts
# callgrind counts user-space instructions exactly, whatever else runs on the machine: the same
# Lua in both servers should cost the same, and the servers' own work is the difference. Per
# route and server (sluice with its defaults, nginx): start under callgrind, 2 s of warm-up
# (JIT traces), zero the counters, 5 s measured with wrk -c1, dump; Ir per request = Ir of the
# measured part (only inside the event loop's dispatch: ev_invoke_pending for sluice,
# ngx_process_events_and_timers for nginx) / requests wrk counted.
CG_LINES=()
callgrind_one() { # server route
  local name=$1 route=$2 port=$((PORT0 + 5)) out="$TMP/cg.$1.$2" vp i req ir
  if ss -Htln "sport = :$port" | grep -q .; then bench_die "port $port is in use (set BENCH_PORT)"; fi
  if [ "$name" = sluice ]; then
    PORT=$port "${PRIO[@]}" taskset -c 0 valgrind --tool=callgrind --callgrind-out-file="$out" \
      --toggle-collect=ev_invoke_pending "$TMP/server-under-test" run --config "$APP/config.lua" >"$out.log" 2>&1 &
  else
    mkdir -p "$TMP/nginx-cg"
    sed -e "s#@PREFIX@#$TMP/nginx-cg#g" -e "s#@PORT@#$port#g" -e "s#@APPDIR@#$APP#g" "$HERE/nginx/lua.conf" >"$TMP/nginx-cg/nginx.conf"
    "${PRIO[@]}" taskset -c 0 valgrind --tool=callgrind --callgrind-out-file="$out" --toggle-collect=ngx_process_events_and_timers \
      nginx -p "$TMP/nginx-cg" -e "$TMP/nginx-cg/error.log" -c "$TMP/nginx-cg/nginx.conf" >"$out.log" 2>&1 &
  fi
  vp=$!; PIDS+=("$vp")
  for ((i = 0; i < 300; i++)); do ss -Htln "sport = :$port" | grep -q . && break; sleep 0.1; done
  # shellcheck disable=SC2046
  wrk_argv "http://127.0.0.1:$port/$route" -t1 -c4 -d2s $(body_args "$route")
  taskset -c 1 wrk "${WRK_ARGV[@]}" >/dev/null
  callgrind_control -z "$vp" >/dev/null
  # shellcheck disable=SC2046
  wrk_argv "http://127.0.0.1:$port/$route" -t1 -c1 -d5s $(body_args "$route")   # one connection: at most one request straddles the counting window
  req=$(taskset -c 1 wrk "${WRK_ARGV[@]}" | awk '/ requests in / { print $1 }')
  callgrind_control -d "$vp" >/dev/null
  kill -TERM "$vp" 2>/dev/null; wait "$vp" 2>/dev/null || true
  ir=$(callgrind_annotate "$out.1" 2>/dev/null | awk '/PROGRAM TOTALS/ { gsub(/,/, "", $1); print $1 }')
  [ -n "$ir" ] && [ "${req:-0}" -gt 0 ] || bench_die "callgrind $name $route: no profile or no requests (see $out.log)"
  CG_LINES+=("$route $name $ir $req")
  printf '  callgrind %-5s %-7s %6d requests %12.0f Ir/request\n' "$route" "$name" "$req" "$(awk -v a="$ir" -v b="$req" 'BEGIN { print a / b }')"
}
CGTABLE=""
if [ "$CALLGRIND" = 1 ]; then
  echo "instruction counts (callgrind, about 2 minutes)..."
  for route in sort text json; do for s in sluice nginx; do callgrind_one "$s" "$route"; done; done
  CGTABLE=$(printf '%s\n' "${CG_LINES[@]}" | awk '
    { ir[$1 " " $2] = $3 / $4; n[$1 " " $2] = $4 }
    END {
      print "| route | sluice Ir/request | nginx Ir/request | sluice/nginx | requests counted (sluice, nginx) |"
      print "|---|---:|---:|---:|---:|"
      split("sort text json", R, " ")
      for (i = 1; i <= 3; i++) { r = R[i]
        printf "| /%s | %.0f | %.0f | **%.3fx** | %d, %d |\n", r, ir[r " sluice"], ir[r " nginx"], ir[r " sluice"] / ir[r " nginx"], n[r " sluice"], n[r " nginx"] }
    }')
fi

# ---------------------------------------------------------------- table
SUM=$(bench_sum)
TABLE=$(awk -v servers="$SERVERS" -v spread="$SPREAD" '
  BEGIN { m = split(spread, sp, "\n"); for (i = 1; i <= m; i++) { split(sp[i], f, " "); SP[f[1] " " f[2]] = f[3] } }
  { k = $1 " " $2; rps[k] = $3; rpc[k] = $4; p50[k] = $5; p99[k] = $6; us[k] = $7; sy[k] = $8 }
  END {
    n = split(servers, S, " ")
    print "| route | server | req/s | req per CPU-s | spread of rounds | p50 ms | p99 ms | CPU us/req user+sys |"
    print "|---|---|---:|---:|---:|---:|---:|---:|"
    split("sort text json", R, " ")
    for (ri = 1; ri <= 3; ri++) {
      r = R[ri]
      for (i = 1; i <= n; i++) { k = r " " S[i]
        printf "| /%s | %s | %.0f | %.0f | %s%% | %s | %s | %.1f+%.1f |\n", r, S[i], rps[k], rpc[k], SP[k], p50[k], p99[k], us[k], sy[k] }
      printf "| /%s | **sluice/nginx** | %.2fx | **%.2fx** | | | | |\n", r, rps[r " sluice"] / rps[r " nginx"], rpc[r " sluice"] / rpc[r " nginx"]
      printf "| /%s | guard cost (1 - sluice/noguard) | %.1f%% | %.1f%% | | | | |\n", r, 100 * (1 - rps[r " sluice"] / rps[r " noguard"]), 100 * (1 - rpc[r " sluice"] / rpc[r " noguard"])
      printf "| /%s | nojit/nginx (limits.jit = false) | %.2fx | %.2fx | | | | |\n", r, rps[r " nojit"] / rps[r " nginx"], rpc[r " nojit"] / rpc[r " nginx"]
      if (index(servers, "base"))
        printf "| /%s | sluice/base | %.2fx | %.2fx | | | | |\n", r, rps[r " sluice"] / rps[r " base"], rpc[r " sluice"] / rpc[r " base"]
    }
  }' <<<"$SUM")
PAIRED_TEXT=$(printf '%s; ' $(tr ' ' '_' <<<"$PAIRED") | tr '_' ' ' | sed 's/; $//')
VERDICT=$(awk '{ rpc[$1 " " $2] = $4 }
  END { split("sort text json", R, " "); all = 1
    for (i = 1; i <= 3; i++) { x = rpc[R[i] " sluice"] / rpc[R[i] " nginx"]; if (x < 1.0) all = 0; s = s sprintf(" /%s %.2fx", R[i], x) }
    printf "- issue 21 (1), requests per CPU-second >= 1.0x nginx+lua with the runaway guard on (the default), all three routes:%s: %s\n", s, (all ? "MET" : "NOT MET") }' <<<"$SUM")

echo
echo "$TABLE"
[ -n "$CGTABLE" ] && { echo; echo "$CGTABLE"; }
echo; echo "$VERDICT"
echo "- round by round, sluice/nginx requests per CPU-second: median (range): $PAIRED_TEXT"
echo "load average (1 min) before/after the measuring: $LOAD_BEFORE / $LOAD_AFTER"
if [ ${#WARN[@]} -gt 0 ]; then echo; echo "warnings:"; printf '  %s\n' "${WARN[@]}"; fi
echo "(took $((SECONDS - T_START)) s)"

# ---------------------------------------------------------------- RESULTS.md
[ "${BENCH_RESULTS:-1}" = 1 ] || exit 0
RES="$HERE/RESULTS.md"
SECTION=$(cat <<EOF
<!-- lua.sh:begin (this section is rewritten by bench/lua.sh) -->
## bench/lua.sh — Lua-heavy handlers, latest run

- date: $(date -u '+%Y-%m-%d %H:%M UTC')
- machine: $(bench_machine); load average (1 min) $LOAD_BEFORE before and $LOAD_AFTER after the measuring (shared machine)
- command: \`bench/lua.sh $SECS\` (BENCH_ROUNDS=$ROUNDS, BENCH_CONNS=$CONNS; sluice $(cd "$ROOT" && git rev-parse --short HEAD 2>/dev/null || echo '?')$(cd "$ROOT" && git diff --quiet HEAD -- core lua 2>/dev/null || echo ' + uncommitted core/lua changes'), $SLUICE_BIN)$( [ -n "${BENCH_BASE:-}" ] && echo "; base: $BENCH_BASE")
- nginx $(nginx -v 2>&1 | sed 's/.*\///') + lua-nginx-module $(dpkg-query -W -f='${Version}' libnginx-mod-http-lua 2>/dev/null), LuaJIT $(dpkg-query -W -f='${Version}' libluajit2-5.1-2 2>/dev/null || echo '?')
- setup: the same Lua in both servers (bench/lua-app/work.lua: nginx \`init_by_lua_block\` requires it,
  \`content_by_lua_block\` calls it; sluice's bench/lua-app/app.lua does the same). \`sluice\` = defaults
  (the JIT on, \`limits.script_timeout = 5\`, \`limits.lua_memory = 512\`), \`noguard\` = the same with
  \`script_timeout = 0\`, \`nojit\` = defaults with \`limits.jit = false\` (interpreter only); all \`workers = 1\`, access log off, \`ratelimit = false\`, compression off. nginx
  \`master_process off\`, one worker, access log off, \`client_body_buffer_size 64k\` (bench/nginx/lua.conf).
  Servers on core 0, \`wrk -t1 -c$CONNS --latency\` on core 1; POST bodies with bench/lua-app/post.lua
  (10,240 B of text, a 5,188 B JSON document, written by bench/lua-app/gen.py). $ROUNDS rounds x ${SECS} s per
  route and server, the servers taking turns (reverse order every other round); figures are sums over the
  rounds (p50/p99: median of the rounds); "spread of rounds" = (max - min) / mean of the per-round req per
  CPU-s. Priority: $(bench_prio_text). Server CPU = delta utime+stime (/proc/PID/stat) / CLK_TCK over the wrk run.

$TABLE
$( [ -n "$CGTABLE" ] && cat <<EOC

Instructions per request (callgrind, user space, counted inside the event loop's dispatch; 2 s of warm-up
then 5 s measured with \`wrk -t1 -c1\`; immune to the machine's load, unlike the table above):

$CGTABLE
EOC
)

$VERDICT
- round by round (each sluice round next to an nginx round), sluice/nginx requests per CPU-second: median (range): $PAIRED_TEXT
$( [ ${#WARN[@]} -gt 0 ] && { echo; echo "Warnings during this run:"; printf -- '- %s\n' "${WARN[@]}"; } )
<!-- lua.sh:end -->
EOF
)
SECTION=$SECTION python3 - "$RES" lua.sh <<'PY'
import os, re, sys
p, tag = sys.argv[1], re.escape(sys.argv[2])
s = open(p).read(); new = os.environ["SECTION"]
pat = re.compile(r"<!-- " + tag + r":begin.*?<!-- " + tag + r":end -->", re.S)
s = pat.sub(lambda m: new, s) if pat.search(s) else s.rstrip("\n") + "\n\n" + new + "\n"
open(p, "w").write(s)
PY
echo; echo "recorded in $RES"
