#!/usr/bin/env bash
# usage: contrib/bench/orders-rescan.sh BIN ORDERS SECONDS: the main thread's CPU ticks and `strace -c` of it
# (no -f: only the order-watching thread) over SECONDS with ORDERS orders; NOSTRACE=1 for ticks alone. Needs root.
set -euo pipefail
bin=$1 orders=$2 seconds=$3
base=$(mktemp -d /tmp/rescan-bench.XXXXXX)
mkdir -p "$base/orders/bench"
python3 - "$base/orders/bench" "$orders" <<'PY'
import os, sys
d, n = sys.argv[1], int(sys.argv[2])
for i in range(n):
    a, b = divmod(i, 250)
    with open(os.path.join(d, f"t{i}"), "w") as f:
        f.write(f"user: bench\nstep: 60\npings: 1\nprobe: fping\nrrd_template: norrd\nfping:\n    host: 127.1.{a % 250}.{1 + b}\n")
PY
printf 'rescan-interval: 30\nqueue-size: 100000\n' > "$base/config.yaml"
"$bin" --log-level info run --base-dir "$base" --config "$base/config.yaml" 2> "$base/daemon.log" &
pid=$!
trap 'kill $pid 2>/dev/null || true; wait $pid 2>/dev/null || true; rm -rf "$base"' EXIT
until grep -q "spoolmon running" "$base/daemon.log"; do sleep 0.1; kill -0 $pid; done
sleep 5
t1=$(awk '{print $14+$15}' /proc/$pid/task/$pid/stat)
if [ "${NOSTRACE:-0}" = 1 ]; then sleep "$seconds"; : > "$base/strace.txt"; else timeout -s INT "$seconds" strace -c -p $pid -o "$base/strace.txt" || true; fi
t2=$(awk '{print $14+$15}' /proc/$pid/task/$pid/stat)
echo "main thread ticks over ${seconds}s (with strace attached): $((t2 - t1))"
head -25 "$base/strace.txt"
echo "VmHWM: $(awk '/VmHWM/{print $2}' /proc/$pid/status) kB"
