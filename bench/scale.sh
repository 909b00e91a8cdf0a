#!/usr/bin/env bash
# scale.sh: SSE subscribers and publish-to-delivery latency with 1 to 5 sluice instances on
# this machine sharing one redis-server (REDIS_URL), subscribers spread evenly over the instances
# (issue 11's benchmark). One process may hold 20,000 open files here, so one instance holds just
# under 20,000 subscribers; several instances are how one machine goes past that.
#
# For each instance count K (1..5 by default; issue 11 asks 1, 2, 3): a private redis-server, K instances of bench/sse-app (workers = 1
# each, REDIS_URL set), PER x K subscribers over ROOMS channels (subscriber i on instance i % K),
# then PUBS publishes/s for SECS seconds, each sent to instance (connection % K), so most
# deliveries cross instances through Redis. Reports subscribed/asked, connect rate, sluice RSS per
# subscriber, Redis memory per subscriber (connection tracking), delivery latency p50/p95/p99/max,
# lost deliveries, CPU. ~2.5 minutes with the defaults.
#
# Usage: bench/scale.sh [per_instance] [seconds]      (default 19000 subscribers per instance, 20 s)
#
# Environment knobs:
#   SLUICE_BIN=path         binary (default build-scn/sluice, else build/sluice)
#   SCALE_INSTANCES="1 2 3 4 5" instance counts to run
#   SCALE_ROOMS=100         channels;  SCALE_PUBS=50   publishes per second
#   SCALE_PORT=17700        first port (redis; instances on the next ones)
#   BENCH_RESULTS=0         do not write bench/RESULTS-scenario.md;  BENCH_KEEP=1 keep the temp dir
#   BENCH_NICE=0            do not raise the priority (see bench/lib.sh)
set -euo pipefail

PER=${1:-19000}
SECS=${2:-20}
[[ $PER =~ ^[0-9]+$ ]] && [ "$PER" -ge 1 ] && [ "$PER" -le 19800 ] || { echo "per_instance: 1..19800 (the open-files limit)" >&2; exit 2; }
[[ $SECS =~ ^[0-9]+$ ]] && [ "$SECS" -ge 1 ] && [ "$SECS" -le 60 ] || { echo "seconds: 1..60" >&2; exit 2; }
INSTANCES=${SCALE_INSTANCES:-1 2 3 4 5}
ROOMS=${SCALE_ROOMS:-100}
PUBS=${SCALE_PUBS:-50}
PORT0=${SCALE_PORT:-17700}

HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
BENCH_NAME=scale
# shellcheck source=lib.sh
. "$HERE/lib.sh"
if [ -z "${SLUICE_BIN:-}" ]; then
  SLUICE_BIN=$ROOT/build-scn/sluice; [ -x "$SLUICE_BIN" ] || SLUICE_BIN=$ROOT/build/sluice
fi
die() { echo "scale.sh: $*" >&2; exit 1; }
[ -x "$SLUICE_BIN" ] || die "no $SLUICE_BIN; build first: cmake -B build && cmake --build build -j2"
command -v redis-server >/dev/null || die "redis-server missing"
command -v cc >/dev/null || die "cc missing"
MAXK=0; for k in $INSTANCES; do [ "$k" -gt "$MAXK" ] && MAXK=$k; done
for ((p = PORT0; p <= PORT0 + MAXK; p++)); do
  if ss -Htln "sport = :$p" | grep -q .; then die "port $p is in use (set SCALE_PORT)"; fi
done

bench_priority "$@"

TMP=$(mktemp -d /tmp/scale.XXXXXX)
SPIDS=() RPID="" LPID=""
stop_pid() { # pid: TERM, up to 5 s, then KILL
  local p=$1 i
  kill "$p" 2>/dev/null || return 0
  for ((i = 0; i < 50; i++)); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
  kill -KILL "$p" 2>/dev/null || true
  wait "$p" 2>/dev/null || true
}
stop_all() {
  local p
  [ -n "$LPID" ] && stop_pid "$LPID"; LPID=""
  for p in "${SPIDS[@]}"; do stop_pid "$p"; done; SPIDS=()
  [ -n "$RPID" ] && stop_pid "$RPID"; RPID=""
}
cleanup() {
  local rc=$?
  set +e    # a failing kill or wait must not end the cleanup halfway (set -e is still on in traps)
  trap '' INT TERM   # nor a second signal (the wrapper of bench_priority forwards one too)
  stop_all
  if [ "${BENCH_KEEP:-0}" = 1 ] || { [ "$rc" -ne 0 ] && [ "$rc" -ne 130 ]; }; then echo "logs and raw output kept in $TMP" >&2
  else rm -rf "$TMP"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

CFLAGS=(-std=c11 -D_GNU_SOURCE -O2 -Wall -Wextra -Wno-unused-parameter)
cc "${CFLAGS[@]}" -o "$TMP/scenload" "$HERE/seed-scenario/scenload.c" -lev || die "building scenload failed"
ln -s "$(readlink -f "$SLUICE_BIN")" "$TMP/sluice-under-test"
step() { printf '%s  %s\n' "$(date +%T)" "$*"; }
wait_port() { # port pid log
  local i
  for ((i = 0; i < 100; i++)); do
    ss -Htln "sport = :$1" | grep -q . && return 0
    kill -0 "$2" 2>/dev/null || die "exited at start: $(tail -5 "$3")"
    sleep 0.1
  done
  die "nothing listens on $1: $(tail -5 "$3")"
}
redis_mem() { redis-cli -p "$PORT0" info memory | sed -n 's/^used_memory:\([0-9]*\).*/\1/p'; }

ROWS=()
RUN=0
for K in $INSTANCES; do
  RUN=$((RUN + 1))
  N=$((PER * K))
  step "== $K instance(s), $N subscribers"
  "${PRIO[@]}" redis-server --port "$PORT0" --bind 127.0.0.1 --save '' --appendonly no --daemonize no \
    --dir "$TMP" --logfile "$TMP/redis-$K.log" --maxclients 1000 &
  RPID=$!
  wait_port "$PORT0" "$RPID" "$TMP/redis-$K.log"
  PORTS="" PIDLIST=""
  for ((i = 1; i <= K; i++)); do
    p=$((PORT0 + i))
    # connections per instance just under the open-files limit; the stream cap counts across
    # instances through Redis, so it is raised above the total
    REDIS_URL="redis://127.0.0.1:$PORT0" PORT=$p SSE_WORKERS=1 SSE_MAX_CONNECTIONS=19900 SSE_MAX_STREAMS=1000000 \
      "${PRIO[@]}" "$TMP/sluice-under-test" run --config "$HERE/sse-app/config.lua" >"$TMP/sluice-$K-$i.log" 2>&1 &
    SPIDS+=("$!")
    wait_port "$p" "$!" "$TMP/sluice-$K-$i.log"
    PORTS="$PORTS${PORTS:+,}$p" PIDLIST="$PIDLIST${PIDLIST:+,}$!"
  done
  sleep 0.5
  M0=$(redis_mem)
  out="$TMP/scenload-$K.txt"
  # distinct source addresses per run (127.2.RUN.x): no TIME_WAIT of an earlier run collides
  "${PRIO[@]}" timeout 200 "$TMP/scenload" -A sse -p "$PORTS" -n "$N" -r "$ROOMS" -R "$PUBS" -d "$SECS" -c "$((4 * K))" \
    -k "$PIDLIST" -g "$RPID" -b "127.2.$RUN.1" -T 90 >"$out" 2>&1 &
  LPID=$!
  # Redis memory with everyone subscribed: sampled once the connect phase is reported
  M1=""
  while kill -0 "$LPID" 2>/dev/null; do
    if [ -z "$M1" ] && grep -q '^CONNECT ' "$out"; then M1=$(redis_mem); fi
    sleep 0.5
  done
  rc=0; wait "$LPID" || rc=$?
  LPID=""
  [ -n "$M1" ] || M1=$M0
  grep -v '^RESULT\|^CONNECT' "$out" | sed 's/^/  /'
  for p in "${SPIDS[@]}"; do kill -0 "$p" 2>/dev/null || die "an instance died during the run (logs in $TMP)"; done
  grep -q '^RESULT ' "$out" || die "scenload gave no result (exit $rc)"
  ROWS+=("$K $(grep '^CONNECT ' "$out" | sed 's/^CONNECT //') $(grep '^RESULT ' "$out" | sed 's/^RESULT //') redis_b_per_sub=$(awk -v a="$M0" -v b="$M1" -v n="$N" 'BEGIN { printf "%.0f", (b - a) / n }')")
  stop_all
  sleep 1
done

kv() { sed -n "s/.* $1=\([^ ]*\).*/\1/p" <<<" $2"; }
TABLE=$(
  echo "| instances | subscribed / asked | connect /s | sluice RSS per subscriber | Redis memory per subscriber | publishes | deliveries | lost | delivery p50 / p95 / p99 / max ms | CPU sluice (all) | CPU redis | CPU subscribers |"
  echo "|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|"
  for r in "${ROWS[@]}"; do
    k=${r%% *}
    printf '| %s | %s / %s | %s | %s B | %s B | %s | %s | %s | %s / %s / %s / %s | %s%% | %s%% | %s%% |\n' "$k" \
      "$(kv connected "$r")" "$(kv n "$r")" "$(kv connect_rate "$r")" "$(kv rss_per_sub_b "$r")" "$(kv redis_b_per_sub "$r")" \
      "$(kv publishes "$r")" "$(kv delivered "$r")" "$(kv lost "$r")" \
      "$(kv dlv_p50_ms "$r")" "$(kv dlv_p95_ms "$r")" "$(kv dlv_p99_ms "$r")" "$(kv dlv_max_ms "$r")" \
      "$(kv cpu_sluice "$r")" "$(kv cpu_pg "$r")" "$(kv cpu_subs "$r")"
  done
)
BEST=$(for r in "${ROWS[@]}"; do
  if [ "$(kv lost "$r")" = 0 ] && [ "$(kv connected "$r")" = "$(kv n "$r")" ]; then kv connected "$r"; fi
done | sort -n | tail -1)
echo
echo "$TABLE"
echo
echo "largest run with every subscriber connected and nothing lost: ${BEST:-none} concurrent subscribers"

[ "${BENCH_RESULTS:-1}" = 1 ] || exit 0
RES="$HERE/RESULTS-scenario.md"
SECTION=$(cat <<EOF
<!-- scale:begin (this section is rewritten by bench/scale.sh) -->
## bench/scale.sh — several instances, one Redis

- date: $(date -u '+%Y-%m-%d %H:%M UTC')
- machine: $(bench_machine), open files limit $(ulimit -n) per process
- command: \`$( [ "$INSTANCES" != "1 2 3 4 5" ] && echo "SCALE_INSTANCES=\"$INSTANCES\" ")bench/scale.sh $PER $SECS\` (sluice $(cd "$ROOT" && git rev-parse --short HEAD 2>/dev/null || echo '?')$(cd "$ROOT" && git diff --quiet HEAD -- core lua 2>/dev/null || echo ' + uncommitted core/lua changes'), $SLUICE_BIN), redis-server $(redis-server --version | sed 's/.*v=\([^ ]*\).*/\1/')
- setup: K instances of bench/sse-app (\`GET /sub/:ch\`, \`POST /pub/:ch\`; workers = 1 each, no pinning, REDIS_URL set,
  limits.max_connections 19,900 per instance, sse.max_connections raised above the total since it counts across
  instances), one redis-server (no persistence); scenload (bench/seed-scenario/scenload.c -A sse): $PER x K subscribers
  over $ROOMS channels, subscriber i on instance i % K, from 127.2.x.y source addresses in one process per 5,000
  subscribers; then $PUBS publishes/s for $SECS s to random channels, publish j through instance j % K (4 x K keep-alive
  connections), so a publish reaches most subscribers through another instance via Redis.
  Latency = receipt - the moment the publish request was written. RSS per subscriber = (sum of the instances' VmRSS
  with everyone subscribed - before) / subscribers; Redis memory per subscriber = used_memory delta / subscribers
  (the cross-instance connection tracking). CPU in % of one core over the publish phase (200% = the whole machine).
  Priority: $( [ ${#PRIO[@]} -gt 0 ] && echo "the servers and the load tool in their own session, autogroup nice -20 and nice -20 (shared machine); redis-server at nice -20" || echo "default nice").

$TABLE

Largest run with every subscriber connected and every event delivered to every subscriber: **${BEST:-none}** concurrent
subscribers on this 2-core machine.
<!-- scale:end -->
EOF
)
if [ ! -f "$RES" ]; then printf '# Scenario and multi-instance benchmarks\n\n' >"$RES"; fi
SECTION=$SECTION python3 - "$RES" <<'PY'
import os, re, sys
p = sys.argv[1]; s = open(p).read()
new = os.environ["SECTION"]
pat = re.compile(r"<!-- scale:begin.*?<!-- scale:end -->", re.S)
s = pat.sub(lambda m: new, s) if pat.search(s) else s.rstrip("\n") + "\n\n" + new + "\n"
open(p, "w").write(s)
PY
echo; echo "recorded in $RES"
