#!/usr/bin/env bash
# static.sh: sluice's app.static vs nginx (sendfile on) serving the same directory, one server
# core (0), one wrk core (1), same run: 1 KB, 64 KB and 1 MB files with 50 connections, and the
# 1 KB file with 16-deep pipelining. Prints a table and records it in bench/RESULTS-overhead.md.
# Usage: bench/static.sh [seconds]   (seconds per 50-connection round, default 4; < 2 minutes)
#
# Environment knobs:
#   SLUICE_BIN=path     binary to test (default build/sluice)
#   BENCH_ROUNDS=3      rounds per figure (the servers alternate)
#   BENCH_SYSCALLS=0    skip counting syscalls per request (strace -c, after the measurements)
#   BENCH_RESULTS=0     do not write bench/RESULTS-overhead.md
#   BENCH_PORT=17520    first of two consecutive ports (sluice, nginx)
#   BENCH_KEEP=1        keep the temp dir (files, raw wrk output, headers)
#   BENCH_NICE=0        do not raise the priority (see bench/lib.sh)
set -euo pipefail

SECS=${1:-4}
case $SECS in ''|*[!0-9]*|0) echo "usage: $0 [seconds]" >&2; exit 2;; esac
ROUNDS=${BENCH_ROUNDS:-3}
case $ROUNDS in ''|*[!0-9]*|0) echo "BENCH_ROUNDS must be a positive integer" >&2; exit 2;; esac
PSECS=$(( SECS > 3 ? SECS - 1 : 2 ))
CONNS=50
DEPTH=16

HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
SLUICE_BIN=$(readlink -f "${SLUICE_BIN:-$ROOT/build/sluice}")
PORT0=${BENCH_PORT:-17520}
BENCH_NAME=static
# shellcheck source=bench/lib.sh
. "$HERE/lib.sh"

[ "$(nproc)" -ge 2 ] || bench_die "needs 2 cores (server on 0, wrk on 1)"
[ -x "$SLUICE_BIN" ] || bench_die "no $SLUICE_BIN; build first: cmake -B build && cmake --build build"
for t in wrk nginx python3; do command -v $t >/dev/null || bench_die "$t missing"; done
SYSCALLS=${BENCH_SYSCALLS:-1}
command -v strace >/dev/null || SYSCALLS=0

bench_priority "$@"
bench_tmpdir
T_START=$SECONDS

# ---------------------------------------------------------------- files (random bytes, fixed mtime)
FILES="1k.bin 64k.bin 1m.bin"
mkdir -p "$TMP/files"
head -c 1024 /dev/urandom >"$TMP/files/1k.bin"
head -c 65536 /dev/urandom >"$TMP/files/64k.bin"
head -c 1048576 /dev/urandom >"$TMP/files/1m.bin"
touch -d '2024-01-02 03:04:05 UTC' "$TMP/files/"*.bin
chmod 755 "$TMP" "$TMP/files"; chmod 644 "$TMP/files/"*.bin   # nginx may drop to www-data

# ---------------------------------------------------------------- servers (core 0)
ln -s "$SLUICE_BIN" "$TMP/server-under-test"
bench_start sluice "$PORT0" env PORT="$PORT0" BENCH_STATIC_DIR="$TMP/files" \
  "$TMP/server-under-test" run --config "$HERE/static-app/config.lua"
mkdir -p "$TMP/nginx"
sed -e "s#@PREFIX@#$TMP/nginx#g" -e "s#@PORT@#$((PORT0 + 1))#g" -e "s#@ROOT@#$TMP/files#g" \
  "$HERE/nginx/static.conf" >"$TMP/nginx/nginx.conf"
bench_start nginx $((PORT0 + 1)) nginx -p "$TMP/nginx" -e "$TMP/nginx/error.log" -c "$TMP/nginx/nginx.conf"
bench_wait_port "$PORT0" sluice
bench_wait_port $((PORT0 + 1)) nginx
url() { echo "http://127.0.0.1:${SRV_PORT[$1]}/s/$2"; }

# ---------------------------------------------------------------- same bytes, same headers
# Body identical to the file; Content-Length, Last-Modified, Content-Type, Cache-Control and
# Accept-Ranges identical between the servers; ETag strong on both and answered with 304 when
# sent back in If-None-Match (the ETag formats differ: sluice "size-mtime_ns" in hex, nginx
# "mtime_s-size" in hex); 16 pipelined requests answered in order with the right bodies.
python3 - "$PORT0" "$TMP/files" "$TMP/headers.txt" $FILES <<'PY' || bench_die "correctness check failed (logs in $TMP)"
import socket, sys, time
p0, root, hfile, files = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4:]
ports = {"sluice": p0, "nginx": p0 + 1}
def responses(port, reqs):
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    s.sendall(b"".join(reqs))
    buf, out = b"", []
    while len(out) < len(reqs):
        e = buf.find(b"\r\n\r\n")
        if e >= 0:
            head = buf[:e].decode("latin-1").split("\r\n")
            h = {k.strip().lower(): v.strip() for k, v in (l.split(":", 1) for l in head[1:])}
            n = int(h.get("content-length", "0")) if not head[0].split()[1] == "304" else 0
            if len(buf) >= e + 4 + n:
                out.append((head[0], h, buf[e + 4:e + 4 + n])); buf = buf[e + 4 + n:]; continue
        chunk = s.recv(1 << 20)
        if not chunk: sys.exit(f"port {port}: closed after {len(out)} responses")
        buf += chunk
    s.close()
    return out
req = lambda path, extra="": f"GET {path} HTTP/1.1\r\nHost: localhost\r\n{extra}\r\n".encode()
log = open(hfile, "w")
for f in files:
    data = open(f"{root}/{f}", "rb").read()
    got = {}
    for name, port in ports.items():
        [(st, h, body)] = responses(port, [req(f"/s/{f}")])
        log.write(f"--- {name} /s/{f}\n{st}\n" + "".join(f"{k}: {v}\n" for k, v in sorted(h.items())))
        if not st.startswith("HTTP/1.1 200"): sys.exit(f"{name} /s/{f}: {st}")
        if body != data: sys.exit(f"{name} /s/{f}: body differs from the file")
        et = h.get("etag", "")
        if not (et.startswith('"') and et.endswith('"')): sys.exit(f"{name} /s/{f}: no strong ETag: {et!r}")
        [(st2, _, _)] = responses(port, [req(f"/s/{f}", f"If-None-Match: {et}\r\n")])
        if not st2.startswith("HTTP/1.1 304"): sys.exit(f"{name} /s/{f}: If-None-Match with its ETag -> {st2}")
        got[name] = h
    for k in ("content-length", "last-modified", "content-type", "cache-control", "accept-ranges"):
        a, b = got["sluice"].get(k), got["nginx"].get(k)
        if a != b: sys.exit(f"/s/{f}: {k} differs: sluice {a!r} nginx {b!r}")
    if got["sluice"]["content-length"] != str(len(data)): sys.exit(f"/s/{f}: wrong Content-Length")
for name, port in ports.items():
    rs = responses(port, [req("/s/1k.bin")] * 8 + [req("/s/64k.bin")] * 8)
    want = [open(f"{root}/1k.bin", "rb").read()] * 8 + [open(f"{root}/64k.bin", "rb").read()] * 8
    if [r[2] for r in rs] != want: sys.exit(f"{name}: pipelined responses wrong or out of order")
PY

# ---------------------------------------------------------------- measuring
compare() { # label secs file wrk-args...
  local label=$1 secs=$2 f=$3 r order s; shift 3
  for ((r = 1; r <= ROUNDS; r++)); do
    if [ $((r % 2)) = 1 ]; then order="sluice nginx"; else order="nginx sluice"; fi
    for s in $order; do bench_run "$label" "$s" "$(url "$s" "$f")" "$secs" "$@"; done
  done
}
echo "sluice: $SLUICE_BIN (pid ${SRV_PID[sluice]})  nginx: $(nginx -v 2>&1 | sed 's/.*\///') (pid ${SRV_PID[nginx]}); servers on core 0, wrk -t1 on core 1"
echo "$ROUNDS rounds per figure: 50 connections ${SECS}s; 1k.bin also 50 connections x $DEPTH pipelined ${PSECS}s"
for f in $FILES; do for s in sluice nginx; do taskset -c 1 wrk -t1 -c"$CONNS" -d1s "$(url "$s" "$f")" >/dev/null; done; done
compare 1k-c50   "$SECS"  1k.bin  -c"$CONNS"
compare 1k-pipe  "$PSECS" 1k.bin  -c"$CONNS" -s "$HERE/pipeline.lua" -- "$DEPTH"
compare 64k-c50  "$SECS"  64k.bin -c"$CONNS"
compare 1m-c50   "$SECS"  1m.bin  -c"$CONNS"
for s in sluice nginx; do kill -0 "${SRV_PID[$s]}" 2>/dev/null || bench_die "$s died during the run"; done

# ---------------------------------------------------------------- syscalls per request
# strace -c slows the server down, but the counts per request are what they are: each server
# for 2 s under the 1k-c50 load. (Not part of the timing figures above.)
SYS_TABLE=""
if [ "$SYSCALLS" = 1 ]; then
  for mode in c50 pipe; do
    for s in sluice nginx; do
      args=(-t1 -c"$CONNS" -d2s); [ "$mode" = pipe ] && args+=(-s "$HERE/pipeline.lua")
      strace -c -f -p "${SRV_PID[$s]}" -o "$TMP/strace-$s-$mode.txt" 2>/dev/null &
      spid=$!; sleep 0.5
      if [ "$mode" = pipe ]; then taskset -c 1 wrk "${args[@]}" "$(url "$s" 1k.bin)" -- "$DEPTH" >"$TMP/strace-$s-$mode.wrk"
      else taskset -c 1 wrk "${args[@]}" "$(url "$s" 1k.bin)" >"$TMP/strace-$s-$mode.wrk"; fi
      kill -INT "$spid"; wait "$spid" 2>/dev/null || true
      n=$(parse_wrk <"$TMP/strace-$s-$mode.wrk" | awk '{ print $1 }')
      SYS_TABLE+="| 1k-$mode | $s | $(awk -v n="$n" '   # columns: % time, seconds, usecs/call, calls, [errors,] syscall
        NF >= 5 && $1 ~ /^[0-9.]+$/ && $NF != "total" { c[$NF] = $4 + 0 }
        END { for (k in c) { t += c[k] / n; if (c[k] / n >= 0.05) s = s sprintf("%s %.2f, ", k, c[k] / n) }
              sub(/, $/, "", s); printf "%.2f | %s |", t, s }' "$TMP/strace-$s-$mode.txt")"$'\n'
    done
  done
fi

# ---------------------------------------------------------------- table
SUM=$(bench_sum)
TABLE=$(awk '
  { k = $1 " " $2; rps[k] = $3; rpc[k] = $4; p50[k] = $5; p99[k] = $6; us[k] = $7; sy[k] = $8
    if (!($1 in seen)) { seen[$1] = 1; L[++n] = $1 } }
  END {
    print "| file / load | server | req/s | req per CPU-s | CPU us/req user+sys | p50 ms | p99 ms |"
    print "|---|---|---:|---:|---:|---:|---:|"
    for (i = 1; i <= n; i++) {
      l = L[i]; a = l " sluice"; b = l " nginx"
      printf "| %s | sluice | %.0f | %.0f | %.2f+%.2f | %s | %s |\n", l, rps[a], rpc[a], us[a], sy[a], p50[a], p99[a]
      printf "| %s | nginx | %.0f | %.0f | %.2f+%.2f | %s | %s |\n", l, rps[b], rpc[b], us[b], sy[b], p50[b], p99[b]
      printf "| %s | **sluice/nginx** | %.2fx | **%.2fx** | | | |\n", l, rps[a] / rps[b], rpc[a] / rpc[b]
      v = v sprintf("- %s: requests per CPU-second %.2fx nginx (target >= 0.9x): %s; req/s %.2fx\n", l, rpc[a] / rpc[b], (rpc[a] / rpc[b] >= 0.9 ? "MET" : "NOT MET"), rps[a] / rps[b])
    }
    printf "\nTargets (issue 9, same run):\n%s", v
  }' <<<"$SUM")
echo
echo "$TABLE"
if [ -n "$SYS_TABLE" ]; then
  SYS_TABLE="| load | server | syscalls per request | the main ones, per request |"$'\n'"|---|---|---:|---|"$'\n'"$SYS_TABLE"
  echo; echo "$SYS_TABLE"
fi
if [ ${#WARN[@]} -gt 0 ]; then echo; echo "warnings:"; printf '  %s\n' "${WARN[@]}"; fi
echo; echo "response headers (1k.bin):"; awk '/^--- / { p = ($3 == "/s/1k.bin") } p' "$TMP/headers.txt" | sed 's/^/  /'
echo "(took $((SECONDS - T_START)) s)"

# ---------------------------------------------------------------- RESULTS-overhead.md
[ "${BENCH_RESULTS:-1}" = 1 ] || exit 0
RES="$HERE/RESULTS-overhead.md"
SECTION=$(cat <<EOF
<!-- static.sh:begin (this section is rewritten by bench/static.sh) -->
## bench/static.sh — latest run

- date: $(date -u '+%Y-%m-%d %H:%M UTC')
- machine: $(bench_machine)
- command: \`bench/static.sh $SECS\` (BENCH_ROUNDS=$ROUNDS; sluice $(cd "$ROOT" && git rev-parse --short HEAD 2>/dev/null || echo '?')$(cd "$ROOT" && git diff --quiet HEAD -- core lua 2>/dev/null || echo ' + uncommitted core/lua changes'), $SLUICE_BIN), nginx $(nginx -v 2>&1 | sed 's/.*\///')
- setup: sluice \`app.static("/s", dir)\` (bench/static-app/: \`workers = 1\`, access log off, \`ratelimit = false\`) and
  nginx (bench/nginx/static.conf: \`master_process off\`, \`worker_processes 1\`, \`sendfile on\`, \`tcp_nopush on\`, access log
  off, no open_file_cache, same Cache-Control) serving the same directory of random-byte files (1 KB, 64 KB, 1 MB),
  both pinned to core 0; \`wrk -t1\` on core 1; 50 keep-alive connections (${SECS} s per round), and for 1k.bin
  50 connections x $DEPTH pipelined (${PSECS} s per round, bench/pipeline.lua). $ROUNDS rounds per figure, the servers
  taking turns; figures are sums over the rounds (p50/p99: median of the rounds). Priority: $(bench_prio_text).
  Checked before measuring: identical bodies, Content-Length, Last-Modified, Content-Type, Cache-Control,
  Accept-Ranges; strong ETags on both that give 304 on If-None-Match (formats differ, see below); pipelined order.

$TABLE
$( [ -n "$SYS_TABLE" ] && { echo; echo "Syscalls (strace -c -f on the server for 2 s of 1k.bin, 50 connections without and with 16-deep pipelining; strace slows the server, the counts per request are unaffected):"; echo; echo "$SYS_TABLE"; })

Response headers for 1k.bin:
\`\`\`
$(awk '/^--- / { p = ($3 == "/s/1k.bin") } p' "$TMP/headers.txt")
\`\`\`
$( [ ${#WARN[@]} -gt 0 ] && { echo; echo "Warnings during this run:"; printf -- '- %s\n' "${WARN[@]}"; } )
<!-- static.sh:end -->
EOF
)
if [ ! -f "$RES" ]; then printf '# Overhead and static-file benchmark results\n\n' >"$RES"; fi
SECTION=$SECTION python3 - "$RES" static.sh <<'PY'
import os, re, sys
p, tag = sys.argv[1], re.escape(sys.argv[2])
s = open(p).read(); new = os.environ["SECTION"]
pat = re.compile(r"<!-- " + tag + r":begin.*?<!-- " + tag + r":end -->", re.S)
s = pat.sub(lambda m: new, s) if pat.search(s) else s.rstrip("\n") + "\n\n" + new + "\n"
open(p, "w").write(s)
PY
echo; echo "recorded in $RES"
