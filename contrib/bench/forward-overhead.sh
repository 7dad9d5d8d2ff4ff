#!/usr/bin/env bash
# Issue 13: what forwarding adds to a child's CPU. N fping orders (step 20, 3 pings, smokeping
# RRDs, 127.1.x.y; rrd-flush-interval 300), measured twice one after the other: `spoolmon run`
# alone, then the same with a `forward` sink to a parent (`spoolmon process` with `receive:` on
# 127.0.0.1, its own base directory). Prints each run's child CPU-s per minute (process tree,
# from /proc/<pid>/stat), the parent's, peak RSS, and the child's outbox at the end.
# usage: contrib/bench/forward-overhead.sh BIN [N] [SECONDS]   (root: raw ICMP)
set -euo pipefail
BIN=${1:?spoolmon binary}; N=${2:-10000}; SECS=${3:-120}
W=$(mktemp -d /tmp/fwd-bench.XXXXXX)
TK=$(getconf CLK_TCK)
PIDS=""
cleanup() { for p in $PIDS; do kill "$p" 2>/dev/null || true; done; sleep 1; rm -rf "$W"; }
trap cleanup EXIT
KEY=0b1f4d2e-6a7c-4e8b-9d0f-1a2b3c4d5e6f
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
mkorders() { "$(dirname "$0")/ping-orders.py" "$1" "$N"; }
ticks() { awk '{print $14+$15+$16+$17}' "/proc/$1/stat"; }
run_child() { # NAME CONFIG -> prints a row
  local name=$1 config=$2 base="$W/$1"
  mkorders "$base"
  printf '%s' "$config" > "$W/$name.yaml"
  "$BIN" run --base-dir "$base" --config "$W/$name.yaml" > "$W/$name.log" 2>&1 &
  local pid=$!; PIDS="$PIDS $pid"
  until [ "$(find "$base/output" -name last_result 2>/dev/null | wc -l)" -ge "$N" ]; do sleep 2; kill -0 "$pid"; done
  sleep 25
  local c1 p1 t1 c2 p2 t2
  c1=$(ticks "$pid"); p1=${PARENT:+$(ticks "$PARENT")}; t1=$(date +%s.%N)
  sleep "$SECS"
  c2=$(ticks "$pid"); p2=${PARENT:+$(ticks "$PARENT")}; t2=$(date +%s.%N)
  local wall; wall=$(echo "$t2 - $t1" | bc -l)
  printf '| %-28s | %6.2f | %s | %5s MiB |\n' "$name" "$(echo "($c2 - $c1) / $TK * 60 / $wall" | bc -l)" \
    "${PARENT:+$(printf '%6.2f' "$(echo "($p2 - $p1) / $TK * 60 / $wall" | bc -l)")}" \
    "$(awk '/VmHWM/{print int($2/1024)}' "/proc/$pid/status")"
  [ -n "${PARENT:-}" ] && "$BIN" outbox --base-dir "$base" | sed 's/^/    /'
  kill "$pid"; wait "$pid" 2>/dev/null || true
}
echo "| run | child CPU-s/min | parent CPU-s/min | child peak RSS |"
echo "|---|---|---|---|"
PARENT="" run_child alone "queue-size: 100000
rrd-flush-interval: 300
"
mkdir -p "$W/parent"
printf 'queue-size: 100000\nrrd-flush-interval: 300\nreceive:\n  listen: ["127.0.0.1:%s"]\n  api-keys:\n    %s: {}\n  queue-size: 100000\n' "$PORT" "$KEY" > "$W/parent.yaml"
"$BIN" process --base-dir "$W/parent" --config "$W/parent.yaml" > "$W/parent.log" 2>&1 &
PARENT=$!; PIDS="$PIDS $PARENT"
sleep 2
run_child forwarding "queue-size: 100000
rrd-flush-interval: 300
node-name: child
sinks:
  up:
    type: forward
    destinations: [\"http://127.0.0.1:$PORT\"]
    api-key: $KEY
"
echo "parent: $(find "$W/parent/output" -name last_result | wc -l) of $N orders at output/@child/"
