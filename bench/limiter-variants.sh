#!/usr/bin/env bash
# limiter-variants.sh: server CPU per request of several builds or modes of bench/overhead-app side
# by side (issue 21 §3: which of several limiter changes pays). Every server is pinned to core 0 and
# they take turns, the order reversed every other round; wrk -t1 -c50 on core 1, 16-deep pipelined,
# 10,000 X-Client keys unless SCRIPT/ARGS say otherwise (SCRIPT=bench/pipeline.lua ARGS=16: one key).
# Server CPU = delta utime+stime (/proc/PID/stat) over each 3 s run, after a 1 s warm-up.
# Usage: bench/limiter-variants.sh ROUNDS NAME:BIN:MODE...   (MODE: off, ip, ipnh, header)
#   e.g. bench/limiter-variants.sh 8 off:build/sluice:off hdr:build/sluice:header
set -euo pipefail
[ $# -ge 2 ] || { echo "usage: $0 ROUNDS NAME:BIN:MODE..." >&2; exit 2; }
R=$1; shift
HERE=$(cd "$(dirname "$0")" && pwd)
APP=$HERE/overhead-app
SCRIPT=${SCRIPT:-$APP/clients.lua}; ARGS=${ARGS:-16 10000}
port=${BENCH_PORT:-17620}
declare -A P PID REQ CPU US
names=()
trap 'for p in "${PID[@]}"; do kill "$p" 2>/dev/null || true; done' EXIT
for spec in "$@"; do
  IFS=: read -r name bin mode <<<"$spec"
  BENCH_RL=$mode PORT=$port taskset -c 0 "$bin" run --config "$APP/config.lua" >/dev/null 2>&1 &
  PID[$name]=$!; P[$name]=$port; names+=("$name"); port=$((port + 1))
done
sleep 2
ticks() { awk '{print $14, $15}' "/proc/$1/stat"; }
for ((r = 0; r < R; r++)); do
  order=("${names[@]}")
  if ((r % 2)); then mapfile -t order < <(printf '%s\n' "${names[@]}" | tac); fi
  for n in "${order[@]}"; do
    url=http://127.0.0.1:${P[$n]}/hello
    # shellcheck disable=SC2086
    taskset -c 1 wrk -t1 -c50 -d1s "$url" -s "$SCRIPT" -- $ARGS >/dev/null
    read -r u0 s0 < <(ticks "${PID[$n]}")
    # shellcheck disable=SC2086
    q=$(taskset -c 1 wrk -t1 -c50 -d3s "$url" -s "$SCRIPT" -- $ARGS | awk '/requests in/ {print $1}')
    read -r u1 s1 < <(ticks "${PID[$n]}")
    REQ[$n]=$((${REQ[$n]:-0} + q)); CPU[$n]=$((${CPU[$n]:-0} + u1 - u0 + s1 - s0)); US[$n]=$((${US[$n]:-0} + u1 - u0))
    echo "round $r $n: $q requests, $((u1 - u0 + s1 - s0)) ticks"
  done
done
tck=$(getconf CLK_TCK)
for n in "${names[@]}"; do
  awk -v n="$n" -v q="${REQ[$n]}" -v c="${CPU[$n]}" -v u="${US[$n]}" -v t="$tck" \
    'BEGIN { printf "%-10s server CPU %.4f us/req (user %.4f), %.0f req per CPU-s\n", n, c * 1e6 / t / q, u * 1e6 / t / q, q * t / c }'
done
