#!/usr/bin/env bash
# End-to-end throughput of HAProxy processing: N copies of the reference snapshot (4 processes x
# 200 frontends, 200 backends x 10 servers; 78,455 Graphite lines each) are put into incoming/
# at once; `spoolmon process` aggregates them and delivers every line through the Graphite sink
# into a discarding TCP socket. Reports snapshots per second until incoming/ is empty and until
# the outbox has delivered everything, CPU seconds and peak RSS of spoolmon.
#
# usage: [THREADS=1] contrib/bench/haproxy-throughput.sh [snapshots]     (default 200)
# THREADS=1 also prints each thread's CPU seconds.
# Needs a release build (cargo build --release), python3 and socat.
set -euo pipefail
n=${1:-200}
root=$(cd "$(dirname "$0")/../.." && pwd)
bin=${SPOOLMON:-$root/target/release/spoolmon}
base=$(mktemp -d /tmp/spoolmon-haproxy-bench.XXXXXX)
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
socat -u TCP-LISTEN:$port,fork,reuseaddr OPEN:/dev/null,wronly & sink=$!
trap 'kill $sink 2>/dev/null || true; [ -n "${pid:-}" ] && kill $pid 2>/dev/null && wait $pid 2>/dev/null; rm -rf "$base"' EXIT
mkdir -p "$base/incoming" "$base/staging"
python3 - "$root/tests/data/haproxy/1795431755" "$base/staging" "$n" <<'PY'
import gzip, os, shutil, sys
src, staging, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
files = {}
for name in os.listdir(src):
    data = open(os.path.join(src, name), "rb").read()
    if name.endswith(".gz"):
        data, name = gzip.decompress(data), name[:-3]
    files[name] = data
for i in range(n):
    d = os.path.join(staging, str(1795431755 + 10 * i))
    os.mkdir(d)
    for name, data in files.items():
        open(os.path.join(d, name), "wb").write(data)
PY
printf 'sinks:\n  carbon: {type: graphite, port: %s, namespace: loadbalancers, hostname: vm}\n' "$port" > "$base/config.yaml"
mv "$base"/staging/* "$base/incoming/"
ticks=$(getconf CLK_TCK)
start=$(date +%s%N)
"$bin" process --base-dir "$base" --config "$base/config.yaml" 2> "$base/process.log" & pid=$!
until [ -z "$(ls -A "$base/incoming")" ]; do sleep 0.05; kill -0 $pid 2>/dev/null || { grep -m3 -A3 panicked "$base/process.log"; exit 1; }; done
processed=$(date +%s%N)
until "$bin" outbox --base-dir "$base" --json | python3 -c 'import json,sys; sys.exit(0 if all(s["lines"]==0 for s in json.load(sys.stdin)) else 1)'; do sleep 0.05; kill -0 $pid; done
delivered=$(date +%s%N)
cpu=$(awk -v t="$ticks" '{print ($14+$15)/t}' /proc/$pid/stat)
rss=$(awk '/VmHWM/{print $2/1024}' /proc/$pid/status)
lines=$("$bin" outbox --base-dir "$base" --json | python3 -c 'import json,sys; print(sum(s["delivered_lines"] for s in json.load(sys.stdin)))')
echo "snapshots: $n, lines delivered: $lines, failed: $(ls "$base/failed" | wc -l)"
echo "processed: $(echo "$n / (($processed - $start) / 1000000000)" | bc -l | xargs printf %.1f) snapshots/s"
echo "delivered: $(echo "$n / (($delivered - $start) / 1000000000)" | bc -l | xargs printf %.1f) snapshots/s end to end"
if [ -n "${THREADS:-}" ]; then   # per-thread CPU seconds, largest first
  for t in /proc/$pid/task/*; do awk -v t="$ticks" '{sub(/^[0-9]+ \(/,""); n=$0; sub(/\).*/,"",n); sub(/^[^)]*\) /,""); split($0,f," "); printf "%s %.2f\n", n, (f[12]+f[13])/t}' "$t/stat"; done | sort -k2 -rn | head -12
fi
echo "cpu: $(printf %.2f "$cpu") s = $(echo "$cpu * 1000 / $n" | bc -l | xargs printf %.1f) ms per snapshot; peak rss: $(printf %.0f "$rss") MiB"
