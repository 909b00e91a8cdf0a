#!/usr/bin/env bash
# db.sh: a primary-key select through sluice's pool vs `pgbench -S` and `pgbench -S -M prepared`
# (the database's own limit) and vs Node.js (express + the `pg` pool), same run, same database,
# 10 connections each; prints a table and records it in bench/RESULTS-db.md.
# Usage: bench/db.sh [seconds]   (default 15)
#
# A private PostgreSQL 15 cluster (tools/pg-dev, temp dir) gets `pgbench -i -s 10` (1,000,000
# accounts). sluice (workers = 1) and node run on core 0, wrk (-t1 -c50, random accounts) on core
# 1; PostgreSQL and pgbench are not pinned. Each figure sums BENCH_ROUNDS rounds, the contenders
# taking turns, so load drifting on a shared machine hits each alike.
#
# CPU per request: the server's process (sluice, node) plus every PostgreSQL process (the live
# ones from /proc/PID/stat, plus what the postmaster reaped from backends that exited, its
# cutime + cstime), against pgbench's client (its own user + system time) plus the same
# PostgreSQL total, per transaction. wrk's own CPU is not counted (pgbench has no HTTP side).
#
#   SLUICE_BIN=path   binary (default build/sluice)     BENCH_ROUNDS=5   rounds per figure
#   BENCH_NODE=0      skip Node.js (needs npm registry access for express and pg)
#   BENCH_RESULTS=0   do not write bench/RESULTS-db.md  BENCH_PORT=17580 first of 6 ports
#   BENCH_KEEP=1      keep the temp dir
set -euo pipefail

SECS=${1:-15}
case $SECS in ''|*[!0-9]*) echo "usage: $0 [seconds]" >&2; exit 2;; esac
ROUNDS=${BENCH_ROUNDS:-5}
RSECS=$(( SECS / ROUNDS > 2 ? SECS / ROUNDS : 2 ))
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
SLUICE_BIN=${SLUICE_BIN:-$ROOT/build/sluice}
PORT0=${BENCH_PORT:-17580}
P_PG=$PORT0 P_S1=$((PORT0 + 1)) P_S2=$((PORT0 + 2)) P_NODE=$((PORT0 + 3)) P_S0=$((PORT0 + 4)) P_S3=$((PORT0 + 5))
PGBIN=/usr/lib/postgresql/15/bin

die() { echo "db.sh: $*" >&2; exit 1; }
[ "$(nproc)" -ge 2 ] || die "needs 2 cores"
[ -x "$SLUICE_BIN" ] || die "no $SLUICE_BIN; build first"
command -v wrk >/dev/null || die "wrk missing"
[ -x "$PGBIN/pgbench" ] || die "pgbench missing (package postgresql)"
WITH_NODE=${BENCH_NODE:-1}
command -v node >/dev/null && command -v npm >/dev/null || WITH_NODE=0

# As root: a session of its own at nice -20 (autogroup), so stray load on a shared machine
# disturbs the contenders less (same trick as bench/http.sh).
PRIO=()
if [ "$(id -u)" = 0 ] && [ -w /proc/self/autogroup ]; then
  if [ -z "${BENCH_INNER:-}" ]; then
    BENCH_INNER=1 setsid "$0" "$@" &
    inner=$!
    trap 'kill -TERM "$inner" 2>/dev/null' INT TERM
    rc=0; wait "$inner" || rc=$?
    exit "$rc"
  fi
  echo -20 >/proc/self/autogroup 2>/dev/null || true
  PRIO=(nice -n -20)
fi

TMP=$(mktemp -d /tmp/dbbench.XXXXXX)
chmod 755 "$TMP"
PIDS=()
cleanup() {
  local rc=$? p
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
  "$ROOT/tools/pg-dev" stop "$TMP/pg" >/dev/null 2>&1 || true
  if [ "${BENCH_KEEP:-0}" = 1 ] || [ "$rc" -ne 0 ]; then echo "raw output kept in $TMP" >&2; else rm -rf "$TMP"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

echo "== PostgreSQL cluster and pgbench -i -s 10"
URL=$("$ROOT/tools/pg-dev" start "$TMP/pg" "$P_PG") || die "PostgreSQL did not start"
"$PGBIN/pgbench" -i -s 10 -q "$URL" >"$TMP/pgbench-init.log" 2>&1 || die "pgbench -i failed: $(tail -3 "$TMP/pgbench-init.log")"
POOL_URL="$URL?connection_limit=10&pool_timeout=10"

if [ "$WITH_NODE" = 1 ]; then
  echo "== npm install express pg (temp dir)"
  (cd "$TMP" && npm init -y >/dev/null 2>&1 && npm install --no-audit --no-fund express pg >"$TMP/npm.log" 2>&1) ||
    { echo "npm install failed (no registry?): skipping Node.js"; WITH_NODE=0; }
fi

ln -s "$(readlink -f "$SLUICE_BIN")" "$TMP/server-under-test"
PORT=$P_S1 BENCH_WORKERS=1 DATABASE_URL=$POOL_URL "${PRIO[@]}" taskset -c 0 "$TMP/server-under-test" run \
  --config "$HERE/db-app/config.lua" >"$TMP/sluice1.log" 2>&1 &
PID_S1=$!; PIDS+=("$PID_S1")
PORT=$P_S2 BENCH_WORKERS=2 DATABASE_URL=$POOL_URL "${PRIO[@]}" "$TMP/server-under-test" run \
  --config "$HERE/db-app/config.lua" >"$TMP/sluice2.log" 2>&1 &
PID_S2=$!; PIDS+=("$PID_S2")
PORT=$P_S0 BENCH_WORKERS=1 DATABASE_URL="$POOL_URL&statement_cache_size=0" "${PRIO[@]}" taskset -c 0 "$TMP/server-under-test" run \
  --config "$HERE/db-app/config.lua" >"$TMP/sluice0.log" 2>&1 &
PID_S0=$!; PIDS+=("$PID_S0")
PORT=$P_S3 BENCH_WORKERS=1 SLUICE_DB_PIPELINE=1 DATABASE_URL=$POOL_URL "${PRIO[@]}" taskset -c 0 "$TMP/server-under-test" run \
  --config "$HERE/db-app/config.lua" >"$TMP/sluice3.log" 2>&1 &
PID_S3=$!; PIDS+=("$PID_S3")
CONTENDERS="pgbench pgbench-prepared sluice sluice-unnamed sluice-nopipe sluice-w2"
if [ "$WITH_NODE" = 1 ]; then
  PORT=$P_NODE NODE_PATH=$TMP/node_modules DATABASE_URL=$URL "${PRIO[@]}" taskset -c 0 node "$HERE/db-app/node-server.js" \
    >"$TMP/node.log" 2>&1 &
  PID_NODE=$!; PIDS+=("$PID_NODE")
  CONTENDERS="$CONTENDERS node"
fi
port_of() { case $1 in sluice) echo "$P_S1";; sluice-unnamed) echo "$P_S0";; sluice-nopipe) echo "$P_S3";; sluice-w2) echo "$P_S2";; node) echo "$P_NODE";; esac; }

# correctness before measuring: the same JSON from every server
for c in sluice sluice-w2 sluice-unnamed sluice-nopipe node; do
  case " $CONTENDERS " in *" $c "*) ;; *) continue;; esac
  for _ in $(seq 50); do curl -sf "http://127.0.0.1:$(port_of "$c")/account/42" >"$TMP/$c.json" 2>/dev/null && break; sleep 0.1; done
  python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); sys.exit(0 if d=={"aid":42,"abalance":0} else "%s: %r" % (sys.argv[2], d))' \
    "$TMP/$c.json" "$c" || die "$c answered wrong"
  taskset -c 1 wrk -t1 -c50 -d1s -s "$HERE/db-app/wrk.lua" "http://127.0.0.1:$(port_of "$c")" >/dev/null # warm-up
done

declare -A REQ DUR PER TCK PGT LOADS
CLK=$(getconf CLK_TCK)
PM=$(head -1 "$TMP/pg/data/postmaster.pid")
# utime + stime of a process and its threads (the remainder after "(comm) " starts at field 3)
cpu_ticks() { local st; st=$(<"/proc/$1/stat"); st=${st##*) }; awk '{ print $12 + $13 }' <<<"$st"; }
# every PostgreSQL process: the postmaster with its reaped children (cutime + cstime: backends
# that exited, e.g. pgbench's at the end of a run) plus its live children
pg_ticks() {
  python3 - "$PM" <<'PY'
import os, sys
pm = sys.argv[1]
def fields(pid):
    with open("/proc/%s/stat" % pid) as f:
        return f.read().rsplit(")", 1)[1].split()
f = fields(pm)
t = int(f[11]) + int(f[12]) + int(f[13]) + int(f[14])
for p in os.listdir("/proc"):
    if not p.isdigit() or p == pm:
        continue
    try:
        g = fields(p)
    except OSError:
        continue
    if g[1] == pm:
        t += int(g[11]) + int(g[12])
print(t)
PY
}
pid_of() { case $1 in sluice) echo "$PID_S1";; sluice-w2) echo "$PID_S2";; sluice-unnamed) echo "$PID_S0";; sluice-nopipe) echo "$PID_S3";; node) echo "$PID_NODE";; esac; }
run() { # contender -> adds requests, seconds, its CPU ticks (client or server) and PostgreSQL's
  local c=$1 out="$TMP/$c-$2.txt" n d p0 p1
  p0=$(pg_ticks)
  case $c in
    pgbench|pgbench-prepared)
      local mode=simple; [ "$c" = pgbench-prepared ] && mode=prepared
      "${PRIO[@]}" /usr/bin/time -f "%U %S" -o "$out.time" "$PGBIN/pgbench" -S -M "$mode" -c 10 -j 2 -T "$RSECS" "$URL" >"$out" 2>&1 ||
        die "pgbench failed: $(tail -3 "$out")"
      sleep 0.5   # its backends exit after it: let the postmaster reap them (their CPU moves to its cutime)
      p1=$(pg_ticks)
      d=$RSECS
      n=$(awk -v s="$RSECS" '/^tps = / { printf "%d", $3 * s }' "$out")
      TCK[$c]=$(awk -v a="${TCK[$c]:-0}" -v c="$CLK" '{ printf "%.0f", a + ($1 + $2) * c }' "$out.time") ;;
    *)
      local pid t0; pid=$(pid_of "$c"); t0=$(cpu_ticks "$pid")
      "${PRIO[@]}" taskset -c 1 wrk -t1 -c50 -d"${RSECS}s" -s "$HERE/db-app/wrk.lua" "http://127.0.0.1:$(port_of "$c")" >"$out"
      p1=$(pg_ticks)
      grep -q "Non-2xx" "$out" && die "$c: non-2xx responses: $(grep Non-2xx "$out")"
      n=$(awk '/ requests in / { print $1 }' "$out")
      d=$(awk '/ requests in / { d = $4; sub(/,$/, "", d); sub(/s$/, "", d); print d }' "$out")
      TCK[$c]=$(( ${TCK[$c]:-0} + $(cpu_ticks "$pid") - t0 )) ;;
  esac
  PGT[$c]=$(( ${PGT[$c]:-0} + p1 - p0 ))
  PER[$c,$2]=$(awk -v n="$n" -v d="$d" 'BEGIN { printf "%.0f", n / d }')
  REQ[$c]=$(( ${REQ[$c]:-0} + n ))
  DUR[$c]=$(awk -v a="${DUR[$c]:-0}" -v b="$d" 'BEGIN { print a + b }')
  printf '  round %d  %-17s %8.0f /s  load %s\n' "$2" "$c" "$(awk -v n="$n" -v d="$d" 'BEGIN { print n / d }')" "$(cut -d' ' -f1 /proc/loadavg)"
}

echo "== $ROUNDS rounds of ${RSECS}s: $CONTENDERS"
REVERSED=$(printf '%s\n' $CONTENDERS | tac | tr '\n' ' ')
for ((r = 1; r <= ROUNDS; r++)); do
  LOADS[$r]=$(cut -d' ' -f1 /proc/loadavg)
  order=$CONTENDERS; [ $((r % 2)) = 0 ] && order=$REVERSED
  for c in $order; do run "$c" "$r"; done
done

rate() { awk -v n="${REQ[$1]}" -v d="${DUR[$1]}" 'BEGIN { printf "%.0f", n / d }'; }
ratio() { awk -v a="$(rate "$1")" -v b="$(rate "$2")" 'BEGIN { printf "%.2f", a / b }'; }
# median over the rounds of (a's rate / b's rate in the same round): robust to load swings
mratio() {
  local r
  for ((r = 1; r <= ROUNDS; r++)); do awk -v a="${PER[$1,$r]}" -v b="${PER[$2,$r]}" 'BEGIN { printf "%.4f\n", a / b }'; done |
    sort -g | awk '{ v[NR] = $1 } END { printf "%.2f", NR % 2 ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}
# requests per CPU-second of the server process (sluice, node): what one core can serve
per_cpu() { awk -v n="${REQ[$1]}" -v t="${TCK[$1]}" -v c="$CLK" 'BEGIN { printf "%.0f", (t > 0 ? n / (t / c) : 0) }'; }
# microseconds of CPU per request or transaction: the contender's own (server or pgbench client), PostgreSQL's, total
us_own() { awk -v n="${REQ[$1]}" -v t="${TCK[$1]}" -v c="$CLK" 'BEGIN { printf "%.1f", t / c * 1e6 / n }'; }
us_pg() { awk -v n="${REQ[$1]}" -v t="${PGT[$1]}" -v c="$CLK" 'BEGIN { printf "%.1f", t / c * 1e6 / n }'; }
us_all() { awk -v n="${REQ[$1]}" -v t="${TCK[$1]}" -v g="${PGT[$1]}" -v c="$CLK" 'BEGIN { printf "%.1f", (t + g) / c * 1e6 / n }'; }
cratio() { awk -v a="$(us_all "$1")" -v b="$(us_all "$2")" 'BEGIN { printf "%.2f", a / b }'; }
rounds() { local r out=""; for ((r = 1; r <= ROUNDS; r++)); do out="$out ${PER[$1,$r]}"; done; echo "${out# }"; }
row() { echo "| $1 | $2 | $(rate "$1") | $(us_own "$1") | $(us_pg "$1") | **$(us_all "$1")** | $(rounds "$1") |"; }
TABLE="| contender | what | req or tx /s (all rounds) | own CPU µs/req | PostgreSQL CPU µs/req | total CPU µs/req | per round |
|---|---|---:|---:|---:|---:|---|
$(row pgbench '`pgbench -S -M simple -c 10 -j 2` (no HTTP; own = the pgbench client)')
$(row pgbench-prepared '`pgbench -S -M prepared -c 10 -j 2` (no HTTP; own = the pgbench client)')
$(row sluice 'workers = 1 on core 0, connection_limit=10, defaults (statement cache 100, pipelining 4), wrk -t1 -c50 on core 1')
$(row sluice-unnamed 'as sluice, `statement_cache_size=0` (unnamed statements: parse + plan each time)')
$(row sluice-nopipe 'as sluice, `SLUICE_DB_PIPELINE=1` (one statement per connection at a time)')
$(row sluice-w2 'workers = 2 unpinned, connection_limit=10 (5 + 5)')"
[ "$WITH_NODE" = 1 ] && TABLE="$TABLE
$(row node 'express + pg Pool(max 10), one process on core 0')"
VERDICT="Ratios: all rounds summed, and (in brackets) the median of the per-round ratios.
- throughput sluice / pgbench -S -M prepared: $(ratio sluice pgbench-prepared)x [$(mratio sluice pgbench-prepared)x] (target >= 0.6x); / pgbench -S: $(ratio sluice pgbench)x [$(mratio sluice pgbench)x]; workers = 2 / prepared: $(ratio sluice-w2 pgbench-prepared)x [$(mratio sluice-w2 pgbench-prepared)x]
- total CPU per request sluice / pgbench -S -M prepared per transaction: $(cratio sluice pgbench-prepared)x (target <= 1.5x); / pgbench -S: $(cratio sluice pgbench)x
- statement cache: sluice / sluice-unnamed throughput $(ratio sluice sluice-unnamed)x [$(mratio sluice sluice-unnamed)x], PostgreSQL CPU per request $(us_pg sluice) vs $(us_pg sluice-unnamed) µs
- pipelining: sluice / sluice-nopipe throughput $(ratio sluice sluice-nopipe)x [$(mratio sluice sluice-nopipe)x]"
[ "$WITH_NODE" = 1 ] && VERDICT="$VERDICT
- sluice / Node.js express + pg: $(ratio sluice node)x [$(mratio sluice node)x] (target >= 3x); total CPU per request $(cratio sluice node)x
- requests per server CPU-second: sluice $(per_cpu sluice), node $(per_cpu node): sluice / node $(awk -v a="$(per_cpu sluice)" -v b="$(per_cpu node)" 'BEGIN { printf "%.2f", a / b }')x"
echo; echo "$TABLE"; echo; echo "$VERDICT"
ROUNDLOAD=$(for ((r = 1; r <= ROUNDS; r++)); do printf '%s ' "${LOADS[$r]}"; done)
LOAD=$(cut -d' ' -f1-3 /proc/loadavg)
echo "load average at the end: $LOAD (1-minute, at the start of each round: $ROUNDLOAD)"

if [ "${BENCH_RESULTS:-1}" = 1 ]; then
  {
    echo "# bench/db.sh results"
    echo
    echo "Recorded $(date -u '+%Y-%m-%d %H:%M UTC') by \`bench/db.sh $SECS\` ($ROUNDS rounds of ${RSECS}s, contenders alternating)."
    echo "Machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $(uname -r);"
    echo "PostgreSQL $("$PGBIN/postgres" --version | awk '{print $3}'), scale 10 (1,000,000 accounts), fsync off;"
    echo "node $(node --version 2>/dev/null || echo -), wrk on core 1; load average at the end: $LOAD"
    echo "(1-minute load at the start of each round: $ROUNDLOAD)."
    echo
    echo "Route: \`GET /account/:aid\` -> \`select aid, abalance from pgbench_accounts where aid = \$1\` -> JSON,"
    echo "random aid per request (bench/db-app/wrk.lua). 10 database connections for every contender."
    echo
    echo "$TABLE"
    echo
    echo "$VERDICT"
  } >"$HERE/RESULTS-db.md"
  echo "written to bench/RESULTS-db.md"
fi
