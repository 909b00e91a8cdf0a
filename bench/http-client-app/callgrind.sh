#!/usr/bin/env bash
# callgrind.sh: user-space instructions per /proxy request (bench/http-client.sh's handler) under
# valgrind's callgrind, for sluice or for the nginx+lua anchor, and where they go: a fixed number
# of requests (N, 10 keep-alive clients) after a warm-up, counters zeroed in between, so start-up
# is not counted. Instruction counts do not depend on the machine's load the way CPU time does
# (the number of event-loop turns still varies a little with timing: repeat and compare).
# Usage: bench/http-client-app/callgrind.sh sluice|nginx [N]   (SLUICE_BIN overrides build/sluice)
# Prints "Ir/request" and, for sluice, the inclusive cost of the main parts per request; the
# callgrind file is kept (path printed) for callgrind_annotate.
set -euo pipefail
WHO=${1:?usage: $0 sluice|nginx [requests]}
N=${2:-4000}
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
SLUICE_BIN=$(readlink -f "${SLUICE_BIN:-$ROOT/build/sluice}")
for t in valgrind callgrind_control callgrind_annotate nginx python3 curl; do
  command -v $t >/dev/null || { echo "$t missing" >&2; exit 1; }
done
TMP=$(mktemp -d /tmp/sluice-cg.XXXXXX)
chmod 755 "$TMP"
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT
free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
UP=$(free_port) PORT=$(free_port)

mkdir -p "$TMP/www" "$TMP/up" "$TMP/ngx"
{ head -c 47 /dev/zero | tr '\0' u; echo; } >"$TMP/www/small.txt"
chmod 755 "$TMP/www"; chmod 644 "$TMP/www/small.txt"
sed -e "s#@PREFIX@#$TMP/up#g" -e "s#@PORT@#$UP#g" -e "s#@ROOT@#$TMP/www#g" "$HERE/../nginx/upstream.conf" >"$TMP/up/nginx.conf"
nginx -p "$TMP/up" -e "$TMP/up/error.log" -c "$TMP/up/nginx.conf" >"$TMP/up.log" 2>&1 &
PIDS+=($!)

OUT="$TMP/callgrind.out"
VG=(valgrind --tool=callgrind --callgrind-out-file="$OUT.%p" --dump-instr=no)
case $WHO in
  sluice)
    (cd "$HERE" && PORT=$PORT BENCH_UPSTREAM="http://127.0.0.1:$UP/small.txt" exec "${VG[@]}" "$SLUICE_BIN" run --config config.lua) >"$TMP/server.log" 2>&1 &
    ;;
  nginx)
    sed -e "s#@PREFIX@#$TMP/ngx#g" -e "s#@PORT@#$PORT#g" -e "s#@UP@#$UP#g" "$HERE/../nginx/http-client.conf" >"$TMP/ngx/nginx.conf"
    "${VG[@]}" nginx -p "$TMP/ngx" -e "$TMP/ngx/error.log" -c "$TMP/ngx/nginx.conf" >"$TMP/server.log" 2>&1 &
    ;;
  *) echo "usage: $0 sluice|nginx [requests]" >&2; exit 2 ;;
esac
VP=$!
PIDS+=($VP)
for ((i = 0; i < 200; i++)); do curl -sf -o /dev/null "http://127.0.0.1:$PORT/proxy" && break; sleep 0.3; done
load() {
  python3 - "$PORT" "$1" <<'PY'
import http.client, sys, threading
port, n, c = int(sys.argv[1]), int(sys.argv[2]), 10
bad = []
def run():
    h = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    for _ in range(n // c):
        h.request("GET", "/proxy"); r = h.getresponse(); r.read()
        if r.status != 200: bad.append(r.status)
ts = [threading.Thread(target=run) for _ in range(c)]
[t.start() for t in ts]; [t.join() for t in ts]
if bad: sys.exit("%d answers were not 200: %r" % (len(bad), bad[:5]))
PY
}
load 1000
callgrind_control -z "$VP" >/dev/null 2>&1
load "$N"
callgrind_control -d "$VP" >/dev/null 2>&1
sleep 0.5
F=$(ls -S "$OUT".* | head -1)
IR=$(awk '/^summary:/ { print $2 }' "$F")
echo "$WHO: $N requests, $IR instructions, Ir/request $((IR / N))   ($F)"
if [ "$WHO" = sluice ]; then
  callgrind_annotate --inclusive=yes --auto=no --threshold=100 "$F" 2>/dev/null |
    grep -E "curl_multi_socket_action|curl_multi_(add|remove)_handle|curl_easy_getinfo|conn_io_cb|lua_resume |l_request|slot_result|push_response|lua_http_parse_opts|httpc_submit|l_traceparent|0x00000000000494b0|curl_maprintf|curl_msnprintf|curl_strnequal|sscanf " |
    awk -v n="$N" '{ x = $1; gsub(",", "", x); f = $0; sub(/^.*%\) +/, "", f); sub(/ \[.*$/, "", f); sub(/^.*\//, "", f) }
      !seen[f]++ { printf "  %7.0f  %s\n", x / n, f }'
  echo "  (inclusive per request; 0x...494b0 is libcurl 7.88's printf into the request buffer, an internal symbol)"
fi
cp "$F" "/tmp/$(basename "$TMP")-$WHO.callgrind"
echo "kept: /tmp/$(basename "$TMP")-$WHO.callgrind"
cleanup
PIDS=()
rm -rf "$TMP"
