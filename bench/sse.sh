#!/usr/bin/env bash
# sse.sh: SSE fan-out benchmark: sluice vs nginx + Nchan vs the floor (bench/ssefloor.c), one
# server core (0) and one load core (1), all in the same run. N subscribers (default 9,500) on one
# channel, then M publishes one after the other; prints connect rate, server RSS per idle
# subscriber, publish-to-delivery p50/p99/max, lost/duplicated events, and the issue-5 targets.
# Usage: bench/sse.sh [N]        (~2 minutes with the defaults on a quiet machine)
#
# Environment knobs:
#   SLUICE_BIN=path       binary to test (default: build-sse/sluice, else build/sluice)
#   BENCH_ROUNDS=2        rounds; the servers take turns, in reverse order every other round
#   BENCH_PUBS=20         publishes per run
#   BENCH_SERVERS="sluice nchan floor"   which servers to run
#   BENCH_CAPACITY="19000 20000"   after the comparison, sluice alone with workers = 1 and = 2 at
#                         each of these subscriber counts (the largest count one instance holds)
#   BENCH_PORT=18580      first of three consecutive ports (sluice, nchan, floor)
#   BENCH_RESULTS=0       do not write bench/RESULTS-sse.md (smoke runs)
#   BENCH_KEEP=1          keep the temp dir with logs and raw sseload output
#   BENCH_NICE=0          do not raise the priority (see bench/http.sh)
#   BENCH_QUIET_WAIT=120  before each run, wait up to this many seconds for cores 0 and 1 to be
#                         less than 25% busy (other benchmarks on a shared machine); 0 = do not wait
set -euo pipefail

N=${1:-9500}
case $N in ''|*[!0-9]*|0) echo "usage: $0 [subscribers]" >&2; exit 2;; esac
ROUNDS=${BENCH_ROUNDS:-2}
case $ROUNDS in ''|*[!0-9]*|0) echo "BENCH_ROUNDS must be a positive integer" >&2; exit 2;; esac
PUBS=${BENCH_PUBS:-20}
SERVERS=${BENCH_SERVERS:-sluice nchan floor}
CAPACITY=${BENCH_CAPACITY:-}

HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
if [ -z "${SLUICE_BIN:-}" ]; then
  SLUICE_BIN=$ROOT/build-sse/sluice; [ -x "$SLUICE_BIN" ] || SLUICE_BIN=$ROOT/build/sluice
fi
PORT0=${BENCH_PORT:-18580}
P_SLUICE=$PORT0 P_NCHAN=$((PORT0 + 1)) P_FLOOR=$((PORT0 + 2))
NCHAN_SO=/usr/lib/nginx/modules/ngx_nchan_module.so

die() { echo "sse.sh: $*" >&2; exit 1; }
[ "$(nproc)" -ge 2 ] || die "needs 2 cores (server on 0, sseload on 1)"
[ -x "$SLUICE_BIN" ] || die "no $SLUICE_BIN; build first: cmake -B build-sse && cmake --build build-sse -j2"
command -v cc >/dev/null || die "cc missing"
[ -f /usr/include/ev.h ] || die "libev-dev missing"
if [[ " $SERVERS " == *" nchan "* ]]; then
  command -v nginx >/dev/null || die "nginx missing (apt-get install nginx-light)"
  [ -f "$NCHAN_SO" ] || die "$NCHAN_SO missing (apt-get install libnginx-mod-nchan)"
fi
for p in $P_SLUICE $P_NCHAN $P_FLOOR; do
  if ss -Htln "sport = :$p" | grep -q .; then die "port $p is in use (set BENCH_PORT)"; fi
done

# Priority: as in bench/http.sh, as root the benchmark runs in its own session whose autogroup
# gets nice -20, so busy processes elsewhere on a shared machine take less of cores 0 and 1.
# shellcheck source=bench/lib.sh
. "$(dirname "$0")/lib.sh"      # shared helpers: bench_priority, cpu_ticks, rq_wait_ns, CLK
bench_priority "$@"

TMP=$(mktemp -d /tmp/ssebench.XXXXXX)
SPID=""   # the server of the current run
LPID=""   # the current sseload
stop_pid() { # pid [signal]: TERM (or signal), up to 5 s, then KILL
  local p=$1 i
  kill -"${2:-TERM}" "$p" 2>/dev/null || return 0
  for ((i = 0; i < 50; i++)); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
  kill -KILL "$p" 2>/dev/null || true
  wait "$p" 2>/dev/null || true
}
cleanup() {
  local rc=$?
  [ -n "$LPID" ] && stop_pid "$LPID"
  [ -n "$SPID" ] && stop_pid "$SPID"
  if [ "${BENCH_KEEP:-0}" = 1 ] || [ "$rc" -ne 0 ]; then echo "logs and raw output kept in $TMP" >&2
  else rm -rf "$TMP"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ---------------------------------------------------------------- build the tools
CFLAGS=(-std=c11 -D_GNU_SOURCE -O2 -Wall -Wextra -Wno-unused-parameter)
cc "${CFLAGS[@]}" -o "$TMP/sseload" "$HERE/sseload.c" -lev || die "building sseload failed"
cc "${CFLAGS[@]}" -o "$TMP/ssefloor" "$HERE/ssefloor.c" || die "building ssefloor failed"
# started through links with other names: a stray `pkill sluice` (or nginx) from someone
# else's test on this shared machine must not end the server under test halfway through
ln -s "$(readlink -f "$SLUICE_BIN")" "$TMP/sluice-under-test"
ln -s "$(command -v nginx || echo /usr/sbin/nginx)" "$TMP/nginx-under-test"
mkdir -p "$TMP/nginx"
sed -e "s#@PREFIX@#$TMP/nginx#g" -e "s#@PORT@#$P_NCHAN#g" "$HERE/nchan/nginx.conf" >"$TMP/nginx/nginx.conf"

port_of() { case $1 in sluice*) echo "$P_SLUICE";; nchan) echo "$P_NCHAN";; floor) echo "$P_FLOOR";; esac; }

start_server() { # name [workers] -> sets SPID, waits until it listens
  local name=$1 workers=${2:-1} port i
  port=$(port_of "$name")
  case $name in
    sluice*) PORT=$port SSE_WORKERS=$workers "${PRIO[@]}" taskset -c 0 "$TMP/sluice-under-test" run \
               --config "$HERE/sse-app/config.lua" >>"$TMP/sluice.log" 2>&1 &;;
    nchan)   "${PRIO[@]}" taskset -c 0 "$TMP/nginx-under-test" -p "$TMP/nginx" -e "$TMP/nginx/error.log" \
               -c "$TMP/nginx/nginx.conf" >>"$TMP/nchan.log" 2>&1 &;;
    floor)   "${PRIO[@]}" taskset -c 0 "$TMP/ssefloor" "$port" >>"$TMP/floor.log" 2>&1 &;;
  esac
  SPID=$!
  for ((i = 0; i < 100; i++)); do
    ss -Htln "sport = :$port" | grep -q . && { sleep 0.3; return 0; }
    kill -0 "$SPID" 2>/dev/null || die "$name exited at start (see $TMP/$name.log)"
    sleep 0.1
  done
  die "$name does not listen on $port"
}

core_busy() { # -> "busy% of core 0, busy% of core 1" over 1 s, from /proc/stat
  local a b
  a=$(grep -E '^cpu[01] ' /proc/stat); sleep 1; b=$(grep -E '^cpu[01] ' /proc/stat)
  printf '%s\n%s\n' "$a" "$b" | awk '{ idle = $5 + $6; tot = 0; for (i = 2; i <= NF; i++) tot += $i
    if (seen[$1]++) { printf "%d ", 100 - 100 * (idle - i0[$1]) / (tot - t0[$1] + 1e-9) } else { i0[$1] = idle; t0[$1] = tot } }
    END { print "" }'
}
wait_quiet() { # label: other load on cores 0 and 1 skews every figure; wait a while for it to pass
  local waited=0 max=${BENCH_QUIET_WAIT:-120} b0 b1
  while :; do
    read -r b0 b1 < <(core_busy)
    if [ "$b0" -lt 25 ] && [ "$b1" -lt 25 ]; then break; fi
    if [ "$waited" -ge "$max" ]; then
      WARN+=("$1: cores 0/1 were ${b0}%/${b1}% busy with other work when the run started (waited ${waited} s)")
      break
    fi
    [ "$waited" = 0 ] && echo "    cores 0/1 busy ${b0}%/${b1}% with other work: waiting up to ${max} s"
    sleep 4; waited=$((waited + 5))
  done
}

RUN=0
ROWS=()
WARN=()
# One run: a fresh server, sseload on core 1, the server stopped. Appends "name round k=v..." to ROWS.
measure() { # name round subscribers [workers]
  local name=$1 round=$2 n=$3 workers=${4:-1} out q0 q1 t0 t1 res rc=0
  RUN=$((RUN + 1))
  wait_quiet "$name ($n subscribers)"
  start_server "$name" "$workers"
  out="$TMP/run$RUN-$name-$n.txt"
  q0=$(rq_wait_ns "$SPID"); t0=$(date +%s%N)
  # distinct source addresses per run (127.1.RUN.x): no TIME_WAIT left by an earlier run collides
  "${PRIO[@]}" taskset -c 1 timeout 300 "$TMP/sseload" -p "$(port_of "$name")" -n "$n" -m "$PUBS" \
    -k "$SPID" -b "127.1.$((RUN % 250)).1" -T 60 -w 10 >"$out" 2>&1 &
  LPID=$!
  wait "$LPID" || rc=$?
  LPID=""
  q1=$(rq_wait_ns "$SPID"); t1=$(date +%s%N)
  kill -0 "$SPID" 2>/dev/null || WARN+=("$name ($n subscribers): the server died during the run (log: $TMP/${name%%-*}.log)")
  # nginx 1.22 + nchan 1.3.6 with master_process off double-frees at exit (glibc abort): that
  # is after the measurement, so nginx is simply killed
  if [ "$name" = nchan ]; then stop_pid "$SPID" KILL 2>/dev/null; else stop_pid "$SPID"; fi
  SPID=""
  res=$(grep '^RESULT ' "$out" | sed 's/^RESULT //' || true)
  [ -n "$res" ] || { cat "$out" >&2; die "$name: sseload gave no result (exit $rc)"; }
  sed 's/^/    /' "$out" | grep -v '^    RESULT'
  [ "$rc" -ne 0 ] && WARN+=("$name ($n subscribers): sseload reported failed subscribes or events not delivered exactly once (see its output above)")
  local w=$(( (q1 - q0) * 100 / (t1 - t0 + 1) ))
  [ "$w" -gt 5 ] && WARN+=("$name ($n subscribers): the server waited for a CPU ${w}% of the run: other load on core 0")
  ROWS+=("$name $round $workers $res")
}

echo "sluice: $SLUICE_BIN  nginx: $(nginx -v 2>&1 | sed 's/.*\///') + nchan $(dpkg-query -W -f='${Version}' libnginx-mod-nchan 2>/dev/null || echo '?')"
echo "each server one worker on core 0, sseload on core 1; $N subscribers on one channel, $PUBS publishes, $ROUNDS round(s)"
# shellcheck disable=SC2086  # split on purpose
REVERSED=$(printf '%s\n' $SERVERS | tac | tr '\n' ' ')
for ((round = 1; round <= ROUNDS; round++)); do
  order=$SERVERS; [ $((round % 2)) = 0 ] && order=$REVERSED
  for s in $order; do
    echo "== round $round: $s"
    measure "$s" "$round" "$N"
  done
done
for n in $CAPACITY; do
  for w in 1 2; do
    echo "== capacity: sluice, workers = $w, $n subscribers"
    measure "sluice-cap" "-" "$n" "$w"
  done
done

# ---------------------------------------------------------------- table
kv() { sed -n "s/.* $1=\([^ ]*\).*/\1/p" <<<" $2"; }
TABLE=$(
  echo "| server | round | workers | subscribed / asked | connect /s | RSS per subscriber | p50 ms | p99 ms | max ms | lost | dup | out of order | server CPU us per delivery |"
  echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
  for r in "${ROWS[@]}"; do
    read -r name round workers rest <<<"$r"
    got=$(kv got "$rest"); cpu=$(kv cpu_ms "$rest")
    printf '| %s | %s | %s | %s / %s | %s | %s B | %s | %s | %s | %s | %s | %s | %s |\n' "$name" "$round" "$workers" \
      "$(kv connected "$rest")" "$(kv n "$rest")" "$(kv connect_rate "$rest")" "$(kv rss_per_sub_b "$rest")" \
      "$(kv p50_ms "$rest")" "$(kv p99_ms "$rest")" "$(kv max_ms "$rest")" "$(kv lost "$rest")" \
      "$(kv dup "$rest")" "$(kv ooo "$rest")" "$(awk -v c="$cpu" -v g="$got" 'BEGIN { printf "%.1f", (g > 0 ? c * 1000 / g : 0) }')"
  done
  # targets: per round, sluice's p99 against the floor's of the same round; RSS per subscriber
  printf '%s\n' "${ROWS[@]}" | awk '
    function kv(k,   i, a) { for (i = 4; i <= NF; i++) { split($i, a, "="); if (a[1] == k) return a[2] } return "" }
    $2 != "-" { p99[$1, $2] = kv("p99_ms"); rss[$1, $2] = kv("rss_per_sub_b"); if ($2 > maxr) maxr = $2 }
    END {
      printf "\nTargets (issue 5, same run):\n"
      for (r = 1; r <= maxr; r++) {
        if ((("sluice", r) in p99) && (("floor", r) in p99) && p99["floor", r] > 0) {
          x = p99["sluice", r] / p99["floor", r]
          printf "- round %s: sluice p99 %.1f ms = %.2fx the floor'"'"'s %.1f ms (target <= 1.25x): %s\n", r,
                 p99["sluice", r], x, p99["floor", r], (x <= 1.25 ? "MET" : "NOT MET")
        }
        if (("sluice", r) in rss)
          printf "- round %s: sluice RSS per idle subscriber %d B (target <= 2048 B): %s\n", r, rss["sluice", r],
                 (rss["sluice", r] <= 2048 ? "MET" : "NOT MET")
      }
    }'
)
echo
echo "$TABLE"
if [ ${#WARN[@]} -gt 0 ]; then echo; echo "warnings:"; printf '  %s\n' "${WARN[@]}"; fi

# ---------------------------------------------------------------- RESULTS-sse.md
[ "${BENCH_RESULTS:-1}" = 1 ] || exit 0
RES="$HERE/RESULTS-sse.md"
SECTION=$(cat <<EOF
<!-- sse.sh:begin (this section is rewritten by bench/sse.sh) -->
## bench/sse.sh — latest run

- date: $(date -u '+%Y-%m-%d %H:%M UTC')
- machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | sed 's/.*: //'), kernel $(uname -r), open files limit $(ulimit -n)
- command: \`$( [ -n "$CAPACITY" ] && echo "BENCH_CAPACITY=\"$CAPACITY\" ")bench/sse.sh $N\` (sluice $(cd "$ROOT" && git rev-parse --short HEAD 2>/dev/null || echo '?')$(cd "$ROOT" && git diff --quiet HEAD -- core lua 2>/dev/null || echo ' + uncommitted core/lua changes'), $SLUICE_BIN)
- nginx $(nginx -v 2>&1 | sed 's/.*\///') + libnginx-mod-nchan $(dpkg-query -W -f='${Version}' libnginx-mod-nchan 2>/dev/null)
- setup: every server runs one worker pinned to core 0 and is started fresh for each run (sluice
  bench/sse-app: \`workers = 1\`, access log off, \`ratelimit = false\`, caps raised; nginx + Nchan bench/nchan:
  \`master_process off\`, \`worker_processes 1\`, EventSource subscriber; the floor bench/ssefloor.c: epoll, one
  write() per subscriber in a plain loop). bench/sseload.c runs pinned to core 1: $N subscribers on one channel
  (GET /sub/bench, Accept: text/event-stream) from 127.1.x.y source addresses, at most 256 subscribes in
  flight; then $PUBS publishes (POST /pub/bench), each sent once every live subscriber has the previous one.
  Latency = receipt time at each subscriber - CLOCK_MONOTONIC taken just before the publish request
  was written (the event's data carries it); p50/p99/max over all (subscriber, event) pairs.
  RSS per subscriber = (VmRSS with all subscribed, 2 s after the last subscribe - VmRSS of the fresh server) / N.
  Server CPU per delivery = utime+stime of the server during the publish phase / deliveries.
  Priority: $( [ ${#PRIO[@]} -gt 0 ] && echo "own session, autogroup nice -20 and nice -20 (shared machine)" || echo "default nice").

$TABLE
$( [ ${#WARN[@]} -gt 0 ] && { echo; echo "Warnings during this run:"; printf -- '- %s\n' "${WARN[@]}"; } )
<!-- sse.sh:end -->
EOF
)
if [ ! -f "$RES" ]; then printf '# SSE benchmark results\n\n' >"$RES"; fi
SECTION=$SECTION python3 - "$RES" <<'PY'
import os, re, sys
p = sys.argv[1]; s = open(p).read()
new = os.environ["SECTION"]
pat = re.compile(r"<!-- sse.sh:begin.*?<!-- sse.sh:end -->", re.S)
s = pat.sub(lambda m: new, s) if pat.search(s) else s.rstrip("\n") + "\n\n" + new + "\n"
open(p, "w").write(s)
PY
echo; echo "recorded in $RES"
