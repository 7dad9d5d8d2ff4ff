#!/usr/bin/env bash
# The spoolmon half of ../shared/bench/haproxy-vs-haproxystats.sh, again, on the corpus that
# script kept (run it once with KEEP=1): `spoolmon process` on its 30 HAProxy snapshots into its
# loopback Graphite-like sink, timed until every line is delivered. Prints wall and CPU seconds
# and the peak RSS.
#   contrib/bench/process-corpus.sh KEPT_DIR SPOOLMON_BIN
# Interleave two binaries to compare them on a busy machine:
#   for i in 1 2 3 4 5 6; do for b in A B; do contrib/bench/process-corpus.sh DIR $b; done; done
set -euo pipefail
K=${1:?the directory haproxy-vs-haproxystats.sh kept}; BIN=$(readlink -f "${2:?spoolmon binary}")
VAR=$K/smvar; rm -rf "$VAR"; mkdir -p "$VAR/incoming" "$VAR/staging"; cp -a "$K/corpus/." "$VAR/staging/"
printf 'sinks:\n  graphite: {type: graphite, server: 127.0.0.1, port: 39991, namespace: loadbalancers}\n' > "$K/sm.yaml"
python3 "$K/sink.py" 39991 2> "$K/sm-sink.err" & SINK=$!; sleep 0.5
"$BIN" process --base-dir "$VAR" --config "$K/sm.yaml" > "$K/sm.log" 2>&1 & P=$!
until grep -q "spoolmon process running" "$K/sm.log"; do sleep 0.1; kill -0 $P; done; sleep 1.5
C0=$(python3 "$K/cpu_of.py" $P); T0=$(date +%s.%N)
for d in "$VAR"/staging/*; do mv "$d" "$VAR/incoming/"; done
while [ -n "$(ls -A "$VAR/incoming")" ]; do sleep 0.05; done
until "$BIN" outbox --base-dir "$VAR" --json | python3 -c 'import json,sys; sys.exit(0 if all(s["lines"] == 0 for s in json.load(sys.stdin)) else 1)'; do sleep 0.05; done
T1=$(date +%s.%N); C1=$(python3 "$K/cpu_of.py" $P); RSS=$(awk '/VmHWM/{print int($2/1024)}' /proc/$P/status)
kill -TERM $P; wait $P || true; kill -TERM $SINK; wait $SINK || true
echo "$BIN wall=$(echo "$T1 - $T0" | bc)s cpu=$(echo "$C1 - $C0" | bc)s peak_rss=${RSS}MiB"
