# lib.sh: shell helpers shared by the bench scripts (sourced, not run): http.sh and sse.sh use the
# priority and CPU-accounting helpers, overhead.sh and static.sh the whole set.
# shellcheck shell=bash disable=SC2034  # sourced; SRV_PORT, WARN, RESULT_LINES are read by the scripts
# The same measuring rules as bench/http.sh: servers pinned to core 0, wrk -t1 pinned to core 1,
# server CPU from /proc/PID/stat, run-queue waits from schedstat, autogroup nice -20 as root.
#
# A script sets BENCH_NAME, then calls, in this order:
#   bench_priority "$@"      (as root: re-runs the script in its own session at nice -20; sets PRIO)
#   bench_tmpdir             (TMP, PIDS, cleanup on exit; BENCH_KEEP=1 keeps TMP)
#   bench_start NAME PORT CMD...   (starts a server pinned to core 0, records its pid)
#   bench_run LABEL NAME URL SECS [wrk args...]   (one measured wrk run on core 1)
# and reads RESULT_LINES / WARN afterwards.

bench_die() { echo "${BENCH_NAME:-bench}: $*" >&2; exit 1; }

# Priority. With autogroup scheduling (the default), nice only ranks processes of one session
# against each other; so, as root, the benchmark runs in its own session whose autogroup gets
# nice -20, and busy processes elsewhere on a shared machine take less of cores 0 and 1.
PRIO=()
bench_priority() {
  if [ "$(id -u)" = 0 ] && [ "${BENCH_NICE:-1}" = 1 ]; then
    if [ -z "${BENCH_INNER:-}" ] && [ -w /proc/self/autogroup ]; then
      BENCH_INNER=1 setsid "$0" "$@" &
      local inner=$! rc=0
      trap 'kill -TERM "$inner" 2>/dev/null' INT TERM
      wait "$inner" || rc=$?
      while kill -0 "$inner" 2>/dev/null; do wait "$inner" || rc=$?; done
      exit "$rc"
    fi
    if [ -n "${BENCH_INNER:-}" ]; then echo -20 >/proc/self/autogroup 2>/dev/null || true; fi
    PRIO=(nice -n -20)
  fi
}

PIDS=()
bench_tmpdir() {
  TMP=$(mktemp -d "/tmp/${BENCH_NAME:-bench}.XXXXXX")
  trap bench_cleanup EXIT
  trap 'exit 130' INT TERM
}
bench_cleanup() {
  local rc=$? p
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
  if [ "${BENCH_KEEP:-0}" = 1 ] || [ "$rc" -ne 0 ]; then echo "raw output and logs kept in $TMP" >&2
  else rm -rf "$TMP"; fi
}

declare -A SRV_PID SRV_PORT
# bench_start NAME PORT CMD... : start a server on core 0 (stdout+stderr in $TMP/NAME.log).
# sluice binaries are best started through a link with another name (see http.sh: a stray
# `pkill sluice` elsewhere on a shared machine must not end the server under test).
bench_start() {
  local name=$1 port=$2; shift 2
  if ss -Htln "sport = :$port" | grep -q .; then bench_die "port $port is in use (set BENCH_PORT)"; fi
  "${PRIO[@]}" taskset -c 0 "$@" >"$TMP/$name.log" 2>&1 &
  SRV_PID[$name]=$!; SRV_PORT[$name]=$port
  PIDS+=("$!")
}

# bench_wait_port PORT NAME: until something listens (10 s), else die with the log.
bench_wait_port() {
  local i
  for ((i = 0; i < 100; i++)); do
    ss -Htln "sport = :$1" | grep -q . && return 0
    kill -0 "${SRV_PID[$2]}" 2>/dev/null || bench_die "$2 exited at start: $(tail -5 "$TMP/$2.log")"
    sleep 0.1
  done
  bench_die "$2 not listening on $1: $(tail -5 "$TMP/$2.log")"
}

CLK=$(getconf CLK_TCK)
cpu_ticks() { # pid -> "utime stime" of the whole process (all threads), in clock ticks
  local st; st=$(<"/proc/$1/stat"); st=${st##*) }
  awk '{ print $12, $13 }' <<<"$st"   # fields 14 and 15 of stat, counted after "comm)"
}
rq_wait_ns() { # pid -> total time its threads spent runnable but waiting for a CPU, in ns
  { cat /proc/"$1"/task/*/schedstat 2>/dev/null || true; } | awk '{ s += $2 } END { printf "%d\n", s }'
}
# wrk output -> "requests seconds p50_ms p99_ms socket_errors non2xx" ("-" when no --latency)
parse_wrk() {
  awk '
    function ms(v) { if (v ~ /us$/) { sub(/us$/, "", v); return v / 1000 } if (v ~ /ms$/) { sub(/ms$/, "", v); return v + 0 }
                     if (v ~ /s$/) { sub(/s$/, "", v); return v * 1000 } return v }
    / requests in / { req = $1; d = $4; sub(/,$/, "", d)
                      if (d ~ /ms$/) { sub(/ms$/, "", d); d /= 1000 } else if (d ~ /m$/) { sub(/m$/, "", d); d *= 60 } else sub(/s$/, "", d) }
    $1 == "50%"     { p50 = ms($2) }
    $1 == "99%"     { p99 = ms($2) }
    /Socket errors/ { gsub(/,/, ""); err = $4 + $6 + $8 + $10 }
    /Non-2xx/       { bad = $NF }
    END { printf "%d %.3f %s %s %d %d\n", req, d, (p50 == "" ? "-" : p50), (p99 == "" ? "-" : p99), err, bad }'
}

RESULT_LINES=()
WARN=()
# wrk_argv URL ARGS...: sets WRK_ARGV to ARGS URL -- SCRIPT_ARGS, where SCRIPT_ARGS are the ARGS
# after a literal "--" (wrk wants the URL before them)
wrk_argv() {
  local url=$1 a opts=() sargs=() after=0; shift
  for a in "$@"; do
    if [ "$after" = 1 ]; then sargs+=("$a"); elif [ "$a" = -- ]; then after=1; else opts+=("$a"); fi
  done
  WRK_ARGV=("${opts[@]}" "$url")
  if [ "$after" = 1 ]; then WRK_ARGV+=(-- "${sargs[@]}"); fi
}

# bench_run LABEL NAME URL SECS [wrk args... [-- script args...]]
# One wrk -t1 run on core 1 against server NAME; appends to RESULT_LINES:
#   "LABEL requests seconds p50_ms p99_ms cpu_ticks utime_ticks stime_ticks"
bench_run() {
  local label=$1 name=$2 url=$3 secs=$4; shift 4
  local pid=${SRV_PID[$name]} out="$TMP/run-$label-$name.txt"
  out=${out// /_}
  local u0 s0 u1 s1 q0 q1 wq=0 v wpid req dur p50 p99 err bad
  read -r u0 s0 < <(cpu_ticks "$pid"); q0=$(rq_wait_ns "$pid")
  wrk_argv "$url" -t1 -d"${secs}s" "$@"
  "${PRIO[@]}" taskset -c 1 wrk "${WRK_ARGV[@]}" >"$out" 2>&1 &
  wpid=$!
  while kill -0 "$wpid" 2>/dev/null; do
    v=$(rq_wait_ns "$wpid"); [ "$v" -gt 0 ] && wq=$v
    sleep 0.25
  done
  wait "$wpid" || bench_die "wrk failed on $url: $(cat "$out")"
  kill -0 "$pid" 2>/dev/null || bench_die "$name (pid $pid) exited during the run; see $TMP/$name.log"
  read -r u1 s1 < <(cpu_ticks "$pid"); q1=$(rq_wait_ns "$pid")
  read -r req dur p50 p99 err bad < <(parse_wrk <"$out")
  [ "$err" -gt 0 ] && WARN+=("$label $name: $err socket errors")
  [ "$bad" -gt 0 ] && WARN+=("$label $name: $bad non-2xx responses")
  local sw=$(( (q1 - q0) / 10000000 / secs )) ww=$(( wq / 10000000 / secs ))
  if [ "$sw" -gt 5 ] || [ "$ww" -gt 5 ]; then
    WARN+=("$label $name: waited for a CPU ${sw}% (server) and ${ww}% (wrk) of the run: other load on the machine")
  fi
  local t=$(( u1 - u0 + s1 - s0 ))
  RESULT_LINES+=("$label $name $req $dur $p50 $p99 $t $((u1 - u0)) $((s1 - s0))")
  printf '  %-14s %-10s %9.0f req/s  p50 %7s ms  p99 %7s ms  server CPU %5.2f s  %8.0f req/CPU-s\n' "$label" "$name" \
    "$(awk -v r="$req" -v d="$dur" 'BEGIN { print r / d }')" "$p50" "$p99" \
    "$(awk -v t="$t" -v c="$CLK" 'BEGIN { print t / c }')" \
    "$(awk -v r="$req" -v t="$t" -v c="$CLK" 'BEGIN { print (t > 0 ? r / (t / c) : 0) }')"
}

# bench_sum: RESULT_LINES -> one line per (label, server), summed over rounds:
#   "label server req/s req_per_cpu_s p50 p99 us_user us_sys" (p50, p99: median of the rounds)
bench_sum() {
  printf '%s\n' "${RESULT_LINES[@]}" | awk -v clk="$CLK" '
    { k = $1 " " $2; if (!(k in req)) order[++n] = k
      req[k] += $3; dur[k] += $4; tck[k] += $7; ut[k] += $8; st[k] += $9
      p50[k] = p50[k] " " $5; p99[k] = p99[k] " " $6 }
    function median(list,   a, m, x, y, v) {
      m = split(list, a, " ")
      for (x = 2; x <= m; x++) { v = a[x]; for (y = x - 1; y >= 1 && a[y] + 0 > v + 0; y--) a[y + 1] = a[y]; a[y + 1] = v }
      return (m ? a[int((m + 1) / 2)] : "-") }
    END { for (i = 1; i <= n; i++) { k = order[i]
            printf "%s %.1f %.1f %s %s %.3f %.3f\n", k, req[k] / dur[k], (tck[k] ? req[k] / (tck[k] / clk) : 0),
                   median(p50[k]), median(p99[k]), 1e6 * ut[k] / clk / req[k], 1e6 * st[k] / clk / req[k] } }'
}

bench_machine() {
  echo "$(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | sed 's/.*: //'), kernel $(uname -r)"
}
bench_prio_text() {
  if [ ${#PRIO[@]} -gt 0 ]; then echo "servers and wrk in their own session, autogroup nice -20 and nice -20 (shared machine)"
  else echo "default nice"; fi
}
