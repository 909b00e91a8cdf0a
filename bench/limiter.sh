#!/usr/bin/env bash
# limiter.sh: what rate limiting costs per request, for two builds of sluice in the same run (an
# A/B of the limiter's hot path, issue 21 section 3). Each build runs three servers of
# bench/overhead-app: `off` (ratelimit = false), `ip` (one policy keyed by the client address, one
# key) and `header` (a policy keyed by X-Client, a different key on every request, 10,000 keys);
# the cost is 1 - (requests per CPU-second with the policy) / (without), per build. Servers on core
# 0, wrk -t1 on core 1 (bench/lib.sh); in each round the four servers of a comparison take turns,
# in an order that alternates. Then callgrind counts the user-space instructions per request of
# each build (exact, independent of the machine's load): the primary evidence on a shared machine.
# Usage: bench/limiter.sh OLD_BIN NEW_BIN [seconds]   (seconds per 50-connection round, default 3)
#
# Environment knobs:
#   BENCH_ROUNDS=3      rounds per figure
#   BENCH_CALLGRIND=0   skip the instruction counts
#   BENCH_RESULTS=0     do not write the limiter.sh section of bench/RESULTS.md
#   BENCH_PORT=17530    first of seven consecutive ports
#   BENCH_KEEP=1        keep the temp dir (raw wrk output, callgrind files)
#   BENCH_NICE=0        do not raise the priority (see bench/lib.sh)
set -euo pipefail

[ $# -ge 2 ] || { echo "usage: $0 OLD_BIN NEW_BIN [seconds]" >&2; exit 2; }
OLD_BIN=$(readlink -f "$1"); NEW_BIN=$(readlink -f "$2")
SECS=${3:-3}
case $SECS in ''|*[!0-9]*|0) echo "usage: $0 OLD_BIN NEW_BIN [seconds]" >&2; exit 2;; esac
ROUNDS=${BENCH_ROUNDS:-3}
case $ROUNDS in ''|*[!0-9]*|0) echo "BENCH_ROUNDS must be a positive integer" >&2; exit 2;; esac
PSECS=$(( SECS > 3 ? SECS - 1 : 2 ))   # pipelined rounds saturate quickly
CONNS=50
DEPTH=16
NKEYS=10000

HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
APP=$HERE/overhead-app
PORT0=${BENCH_PORT:-17530}
BENCH_NAME=limiter
# shellcheck source=bench/lib.sh
. "$HERE/lib.sh"

[ "$(nproc)" -ge 2 ] || bench_die "needs 2 cores (servers on 0, wrk on 1)"
for b in "$OLD_BIN" "$NEW_BIN"; do [ -x "$b" ] || bench_die "no executable $b"; done
for t in wrk python3; do command -v $t >/dev/null || bench_die "$t missing"; done
CALLGRIND=${BENCH_CALLGRIND:-1}
if [ "$CALLGRIND" = 1 ] && ! command -v valgrind >/dev/null; then
  echo "limiter.sh: valgrind missing: no instruction counts" >&2; CALLGRIND=0
fi

bench_priority "$@"
bench_tmpdir
T_START=$SECONDS
LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)

# ---------------------------------------------------------------- servers
# links with other names (see bench/http.sh: a stray `pkill sluice` must not end them)
ln -s "$OLD_BIN" "$TMP/server-old"
ln -s "$NEW_BIN" "$TMP/server-new"
i=0
for b in old new; do
  for mode in off ip header; do
    bench_start "$b-$mode" $((PORT0 + i)) env PORT=$((PORT0 + i)) BENCH_RL=$mode "$TMP/server-$b" run --config "$APP/config.lua"
    i=$((i + 1))
  done
done
for b in old new; do for mode in off ip header; do bench_wait_port "${SRV_PORT[$b-$mode]}" "$b-$mode"; done; done
url() { echo "http://127.0.0.1:${SRV_PORT[$1]}/hello"; }

# ---------------------------------------------------------------- correctness before measuring
# Both builds answer /hello; limited servers send both RateLimit fields and the same policy,
# unlimited ones none; 16 pipelined requests on one connection count down r one by one.
python3 - "$PORT0" <<'PY' || bench_die "correctness check failed (logs in $TMP)"
import socket, sys, urllib.request
p0 = int(sys.argv[1])
ports = {f"{b}-{m}": p0 + 3 * bi + mi for bi, b in enumerate(("old", "new")) for mi, m in enumerate(("off", "ip", "header"))}
def get(name, hdrs={}):
    r = urllib.request.urlopen(urllib.request.Request(f"http://127.0.0.1:{ports[name]}/hello", headers=hdrs), timeout=5)
    return r.status, {k.lower(): v for k, v in r.headers.items()}, r.read()
policy = {}
for name in ports:
    st, h, b = get(name, {"X-Client": "check"})
    if st != 200 or b != b"hello world\n": sys.exit(f"{name}: /hello -> {st} {b!r}")
    limited = not name.endswith("-off")
    if ("ratelimit-policy" in h) != limited or ("ratelimit" in h) != limited:
        sys.exit(f"{name}: RateLimit fields {'missing' if limited else 'unexpected'}: {h}")
    if limited: policy.setdefault(name.split("-")[1], set()).add(h["ratelimit-policy"])
for m, s in policy.items():
    if len(s) != 1: sys.exit(f"{m}: the builds send different RateLimit-Policy fields: {s}")
for b in ("old", "new"):
    s = socket.create_connection(("127.0.0.1", ports[f"{b}-ip"]), timeout=5)
    s.sendall(b"GET /hello HTTP/1.1\r\nHost: x\r\n\r\n" * 16)
    data = b""
    while data.count(b"hello world\n") < 16:
        chunk = s.recv(65536)
        if not chunk: sys.exit(f"{b}-ip: connection closed after {data.count(b'hello world')} responses")
        data += chunk
    rs = [int(l.split(b";r=")[1].split(b";")[0]) for l in data.split(b"\r\n") if l.startswith(b"RateLimit: ")]
    if len(rs) != 16 or any(rs[i + 1] >= rs[i] for i in range(15)):
        sys.exit(f"{b}-ip: pipelined r values do not count down: {rs}")
PY

# ---------------------------------------------------------------- measuring
PIPE=(-c"$CONNS" -s "$HERE/pipeline.lua")
KEYS=(-c"$CONNS" -s "$APP/clients.lua")
# compare LABEL "S1 S2 S3 S4" SECS wrk-args...: ROUNDS rounds; the servers take turns, in reverse
# order every other round
compare() {
  local label=$1 servers=$2 secs=$3 r s list; shift 3
  for ((r = 1; r <= ROUNDS; r++)); do
    if [ $((r % 2)) = 1 ]; then list=$servers; else list=$(tr ' ' '\n' <<<"$servers" | tac | tr '\n' ' '); fi
    for s in $list; do bench_run "$label" "$s" "$(url "$s")" "$secs" "$@"; done
  done
}

echo "old: $OLD_BIN"
echo "new: $NEW_BIN"
echo "servers on core 0 (one worker each), wrk -t1 on core 1; load average at start: $LOAD_START"
echo "$ROUNDS rounds per figure: 50 connections ${SECS}s, 50 connections x $DEPTH pipelined ${PSECS}s"
for s in old-off old-ip old-header new-off new-ip new-header; do   # warm up: JIT traces, page cache
  taskset -c 1 wrk -t1 -c"$CONNS" -d1s "$(url "$s")" >/dev/null
done
for s in old-header new-header; do taskset -c 1 wrk -t1 -c"$CONNS" -d1s -s "$APP/clients.lua" "$(url "$s")" -- 1 "$NKEYS" >/dev/null; done

echo "one key (all connections come from 127.0.0.1):"
compare ip-pipe "old-off old-ip new-off new-ip" "$PSECS" "${PIPE[@]}" -- "$DEPTH"
compare ip-c50  "old-off old-ip new-off new-ip" "$SECS" -c"$CONNS"
echo "$NKEYS keys (X-Client header, a different one on every request):"
compare hdr-pipe "old-off old-header new-off new-header" "$PSECS" "${KEYS[@]}" -- "$DEPTH" "$NKEYS"
compare hdr-c50  "old-off old-header new-off new-header" "$SECS" "${KEYS[@]}" -- 1 "$NKEYS"
for s in old-off old-ip old-header new-off new-ip new-header; do
  kill -0 "${SRV_PID[$s]}" 2>/dev/null || bench_die "$s died during the run"
done
LOAD_END=$(cut -d' ' -f1-3 /proc/loadavg)

# ---------------------------------------------------------------- instruction counts
# callgrind counts user-space instructions (collection limited to ev_invoke_pending: request
# handling, not start-up; counters zeroed after a warm-up run of the same load, so that the
# many-key modes profile keys already in the table); requests = calls of dispatch_request. The limiter's share is the
# inclusive cost of limiter_check_async + limiter_headers minus what the `off` server spends in
# them (the early return), and, as a cross-check, the difference of the totals per request (the
# `off` server gets the same requests: the X-Client header too in the header modes).
CG_LINES=()
callgrind_run() { # build mode label wrk-args...
  local b=$1 mode=$2 label=$3 port=$((PORT0 + 6)) pid i n try; shift 3
  local out="$TMP/cg.$b.$label"
  # under valgrind on a busy machine the app may miss its 10 s load deadline: try again
  for ((try = 1; try <= 3; try++)); do
    if ss -Htln "sport = :$port" | grep -q .; then bench_die "port $port is in use (set BENCH_PORT)"; fi
    BENCH_RL=$mode PORT=$port "${PRIO[@]}" taskset -c 0 valgrind --tool=callgrind --callgrind-out-file="$out" \
      --toggle-collect=ev_invoke_pending "$TMP/server-$b" run --config "$APP/config.lua" >"$out.log" 2>&1 &
    pid=$!; PIDS+=("$pid")
    for ((i = 0; i < 300; i++)); do
      ss -Htln "sport = :$port" | grep -q . && break
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.1
    done
    if ss -Htln "sport = :$port" | grep -q .; then
      # warm-up first (JIT traces; every key of the many-key modes stored once), then the
      # counters are zeroed: the profile is the steady state, where a request's key is known
      wrk_argv "http://127.0.0.1:$port/hello" -t1 -c10 -d3s "$@"
      taskset -c 1 wrk "${WRK_ARGV[@]}" >/dev/null
      callgrind_control -z "$pid" >/dev/null 2>&1 || true
      taskset -c 1 wrk "${WRK_ARGV[@]}" >"$out.wrk"
    fi
    kill -TERM "$pid" 2>/dev/null; wait "$pid" || true
    grep -q " requests in " "$out.wrk" 2>/dev/null && ! grep -q "^  0 requests" "$out.wrk" && break
    echo "  callgrind $b $label: no traffic profiled (attempt $try, see $out.log)" >&2
    rm -f "$out.wrk"
  done
  grep -q Collected "$out.log" && [ -f "$out.wrk" ] || bench_die "callgrind $b $label: no profile (see $out.log)"
  callgrind_annotate --inclusive=yes --threshold=100 "$out" >"$out.txt" 2>/dev/null
  n=$(callgrind_annotate --tree=caller --threshold=100 "$out" 2>/dev/null |
      awk '/=> .*:dispatch_request \(/ { s = $0; sub(/.*\(/, "", s); sub(/x\).*/, "", s); gsub(/,/, "", s); n += s } END { print n + 0 }')
  CG_LINES+=("$b $label $(awk '
    function num(s) { gsub(/,/, "", s); return s + 0 }
    /PROGRAM TOTALS/ { tot = num($1) }
    / [^ ]*:limiter_check_async \[/ { lc = num($1) }
    / [^ ]*:limiter_headers \[/ { lh = num($1) }
    END { printf "%d %d %d", tot, lc, lh }' "$out.txt") $n")
}
if [ "$CALLGRIND" = 1 ]; then
  echo "callgrind instruction counts (about 3 minutes)..."
  for b in old new; do
    callgrind_run "$b" off    off-ip-pipe  -s "$HERE/pipeline.lua" -- "$DEPTH"
    callgrind_run "$b" ip     ip-pipe      -s "$HERE/pipeline.lua" -- "$DEPTH"
    callgrind_run "$b" off    off-hdr-pipe -s "$APP/clients.lua" -- "$DEPTH" "$NKEYS"
    callgrind_run "$b" header hdr-pipe     -s "$APP/clients.lua" -- "$DEPTH" "$NKEYS"
    callgrind_run "$b" off    off-ip-c10
    callgrind_run "$b" ip     ip-c10
    callgrind_run "$b" off    off-hdr-c10  -s "$APP/clients.lua" -- 1 "$NKEYS"
    callgrind_run "$b" header hdr-c10      -s "$APP/clients.lua" -- 1 "$NKEYS"
  done
fi

# ---------------------------------------------------------------- tables
SUM=$(bench_sum)
TABLE=$(awk '
  { k = $1 " " $2; rps[k] = $3; rpc[k] = $4; us[k] = $7; sy[k] = $8; if (!($1 in seen)) { seen[$1] = 1; L[++n] = $1 } }
  function row(l, s) { printf "| %s | %s | %.0f | %.0f | %.2f+%.2f |\n", l, s, rps[l " " s], rpc[l " " s], us[l " " s], sy[l " " s] }
  END {
    print "| mode | server | req/s | req per CPU-s | CPU us/req user+sys |"
    print "|---|---|---:|---:|---:|"
    for (i = 1; i <= n; i++) {
      l = L[i]; on = (l ~ /^hdr/ ? "header" : "ip")
      row(l, "old-off"); row(l, "old-" on); row(l, "new-off"); row(l, "new-" on)
      printf "| %s | **rate-limit cost** (1 - on/off, req per CPU-s) | old **%.1f%%** | new **%.1f%%** | |\n", l,
        100 * (1 - rpc[l " old-" on] / rpc[l " old-off"]), 100 * (1 - rpc[l " new-" on] / rpc[l " new-off"])
    }
  }' <<<"$SUM")
CGTABLE=""
if [ ${#CG_LINES[@]} -gt 0 ]; then
  CGTABLE=$(printf '%s\n' "${CG_LINES[@]}" | awk '
    { k = $1 " " $2; n = $6; if (n == 0) next; tot[k] = $3 / n; lim[k] = ($4 + $5) / n; req[k] = n }
    END {
      print "| mode | build | requests profiled | Ir/req, off | Ir/req, limited | limiter Ir/req (check + headers, minus off) | share of the request | total Ir/req difference |"
      print "|---|---|---:|---:|---:|---:|---:|---:|"
      split("ip-pipe hdr-pipe ip-c10 hdr-c10", ms, " ")
      for (i = 1; i <= 4; i++) for (j = 1; j <= 2; j++) {
        m = ms[i]; b = (j == 1 ? "old" : "new"); off = b " off-" m; on = b " " m
        if (!(on in tot) || !(off in tot)) continue
        d = lim[on] - lim[off]
        printf "| %s | %s | %d | %.0f | %.0f | **%.0f** | **%.1f%%** | %+.0f |\n", m, b, req[on], tot[off], tot[on], d, 100 * d / tot[off], tot[on] - tot[off]
      }
    }')
fi

VERDICT=$(awk '
  { k = $1 " " $2; rpc[k] = $4 }
  function cost(l, b, on) { return 100 * (1 - rpc[l " " b "-" on] / rpc[l " " b "-off"]) }
  END {
    for (bi = 1; bi <= 2; bi++) { b = (bi == 1 ? "old" : "new")
      a = cost("ip-pipe", b, "ip"); c = cost("ip-c50", b, "ip"); d = cost("hdr-pipe", b, "header"); e = cost("hdr-c50", b, "header")
      printf "- %s build, measured (req per CPU-s, target < 5%%): one key pipelined %.1f%%, 50 connections %.1f%%; %s keys pipelined %.1f%%, 50 connections %.1f%%: %s\n",
        b, a, c, "10,000", d, e, ((a < 5 && c < 5 && d < 5 && e < 5) ? "MET" : "NOT MET")
    }
  }' <<<"$SUM")
if [ ${#CG_LINES[@]} -gt 0 ]; then
  VERDICT+=$'\n'$(printf '%s\n' "${CG_LINES[@]}" | awk '
    { k = $1 " " $2; n = $6; if (n == 0) next; tot[k] = $3 / n; lim[k] = ($4 + $5) / n }
    END {
      for (bi = 1; bi <= 2; bi++) { b = (bi == 1 ? "old" : "new"); worst = 0; s = ""
        split("ip-pipe hdr-pipe ip-c10 hdr-c10", ms, " ")
        for (i = 1; i <= 4; i++) { m = ms[i]; off = b " off-" m
          if (!((b " " m) in tot) || !(off in tot)) continue
          p = 100 * (lim[b " " m] - lim[off]) / tot[off]; if (p > worst) worst = p
          s = s sprintf("%s %.1f%%, ", m, p) }
        sub(/, $/, "", s)
        printf "- %s build, by instruction count (limiter share of the request, target < 5%%): %s: %s\n", b, s, (worst < 5 ? "MET" : "NOT MET")
      }
    }')
fi

echo
echo "$TABLE"
[ -n "$CGTABLE" ] && { echo; echo "$CGTABLE"; }
echo; echo "$VERDICT"
if [ ${#WARN[@]} -gt 0 ]; then echo; echo "warnings:"; printf '  %s\n' "${WARN[@]}"; fi
echo "load average: start $LOAD_START, end of the measured rounds $LOAD_END (took $((SECONDS - T_START)) s)"

# ---------------------------------------------------------------- RESULTS.md
[ "${BENCH_RESULTS:-1}" = 1 ] || exit 0
RES="$HERE/RESULTS.md"
SECTION=$(cat <<EOF
<!-- limiter.sh:begin (this section is rewritten by bench/limiter.sh) -->
## bench/limiter.sh — rate limiting per request, before/after (issue 21, section 3)

- date: $(date -u '+%Y-%m-%d %H:%M UTC')
- machine: $(bench_machine); **shared**: load average $LOAD_START at the start, $LOAD_END after the measured rounds
- command: \`bench/limiter.sh OLD NEW $SECS\` (BENCH_ROUNDS=$ROUNDS); old = \`$OLD_BIN\`, new = \`$NEW_BIN\`
  (sluice $(cd "$ROOT" && git rev-parse --short HEAD 2>/dev/null || echo '?'))
- setup: per build three servers of \`bench/overhead-app\` (\`GET /hello\`, one worker, access log off): \`off\`
  (\`ratelimit = false\`), \`ip\` (one policy keyed by the client address: one key), \`header\` (keyed by
  X-Client, a different key on every request, $NKEYS keys); RateLimit headers on. All six pinned to core 0,
  \`wrk -t1\` on core 1: 50 connections (${SECS} s per round) or 50 connections x $DEPTH pipelined (${PSECS} s);
  $ROUNDS rounds, the four servers of a comparison taking turns (order reversed every other round);
  figures summed over the rounds. Priority: $(bench_prio_text).
  Server CPU = delta utime+stime (/proc/PID/stat) over the wrk run.

$TABLE
$( [ -n "$CGTABLE" ] && cat <<EOC

Instructions per request (callgrind, user space, \`--toggle-collect=ev_invoke_pending\`, \`wrk -t1 -c10\` 3 s
after a 3 s warm-up whose counts are discarded, pipelined or not as the mode says; limiter = inclusive limiter_check_async + limiter_headers, minus the same
in the \`off\` server; the last column is the plain difference of the totals, noisier: JIT and timers):

$CGTABLE
EOC
)

Targets (issue 21: rate limiting < 5% per request in both modes):
$VERDICT
$( [ ${#WARN[@]} -gt 0 ] && { echo; echo "Warnings during this run:"; printf -- '- %s\n' "${WARN[@]}"; } )
<!-- limiter.sh:end -->
EOF
)
SECTION=$SECTION python3 - "$RES" limiter.sh <<'PY'
import os, re, sys
p, tag = sys.argv[1], re.escape(sys.argv[2])
s = open(p).read(); new = os.environ["SECTION"]
pat = re.compile(r"<!-- " + tag + r":begin.*?<!-- " + tag + r":end -->", re.S)
s = pat.sub(lambda m: new, s) if pat.search(s) else s.rstrip("\n") + "\n\n" + new + "\n"
open(p, "w").write(s)
PY
echo; echo "recorded in $RES"
