#!/usr/bin/env bash
# Scale benchmark of `spoolmon run`: N loopback targets, measured for a while, then reports
#   startup time (process start -> "spoolmon running"), CPU seconds per minute (daemon plus any
#   child process, from /proc/<pid>/stat), peak RSS, loss, and whether every order got every step.
#
# usage: contrib/bench/ping-scale.sh ORDERS STEP PINGS TEMPLATE SECONDS [extra config YAML lines]
#   e.g. contrib/bench/ping-scale.sh 10000 20 3 smokeping 120
#        contrib/bench/ping-scale.sh 100000 60 20 norrd 300
# Needs root (raw ICMP) and a release build (cargo build --release). BENCH_DIR overrides the
# base directory (default: a new directory under /tmp, removed at the end unless KEEP=1).
set -euo pipefail
orders=${1:?orders} step=${2:?step} pings=${3:?pings} template=${4:?template} seconds=${5:?seconds}
extra=${6:-}
bin=${SPOOLMON:-$(dirname "$0")/../../target/release/spoolmon}
base=${BENCH_DIR:-$(mktemp -d /tmp/spoolmon-bench.XXXXXX)}
mkdir -p "$base/orders/bench"
ticks=$(getconf CLK_TCK)

python3 - "$base/orders/bench" "$orders" "$step" "$pings" "$template" <<'PY'
import os, sys
d, n, step, pings, template = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5]
i = 0
for a in range(1, 255):
    for b in range(0, 256):
        for c in range(1, 255):
            if i >= n: sys.exit(0)
            with open(os.path.join(d, f"t{i}"), "w") as f:
                f.write(f"user: bench\nstep: {step}\npings: {pings}\nprobe: fping\nrrd_template: {template}\n"
                        f"fping:\n    host: 127.{a}.{b}.{c}\n")
            i += 1
PY
printf 'rescan-interval: 30\nqueue-size: 100000\n%s\n' "$extra" > "$base/config.yaml"

cpu_ticks() { awk '{print $14+$15+$16+$17}' "/proc/$1/stat"; }
start_ns=$(date +%s%N)
"$bin" --log-level info run --base-dir "$base" --config "$base/config.yaml" 2> "$base/daemon.log" &
pid=$!
trap 'kill $pid 2>/dev/null || true; wait $pid 2>/dev/null || true; [ "${KEEP:-0}" = 1 ] || rm -rf "$base"' EXIT
until grep -q "spoolmon running" "$base/daemon.log"; do sleep 0.05; kill -0 $pid; done
ready_ns=$(date +%s%N)
echo "startup: $(( (ready_ns - start_ns) / 1000000 )) ms to load $orders orders"

# Warm-up: until every order has its last_result, then (smokeping) until every RRD file has been
# created by the first RRD flush, then one more step (the flush round ends meanwhile).
until [ "$(find "$base/output" -name last_result | wc -l)" -ge "$orders" ]; do sleep 1; kill -0 $pid; done
echo "first results: $(( ($(date +%s%N) - start_ns) / 1000000000 )) s after start"
if [ "$template" = smokeping ]; then
    until [ "$(find "$base/output" -name main.rrd | wc -l)" -ge "$orders" ]; do sleep 1; kill -0 $pid; done
    echo "RRD files created: $(( ($(date +%s%N) - start_ns) / 1000000000 )) s after start"
fi
sleep $((step + 5))
t1=$(cpu_ticks $pid); w1=$(date +%s)
sleep "$seconds"
t2=$(cpu_ticks $pid); w2=$(date +%s)
cpu=$(echo "($t2 - $t1) / $ticks" | bc -l)
echo "cpu: $(printf %.2f "$cpu") s over $((w2 - w1)) s = $(printf %.2f "$(echo "$cpu * 60 / ($w2 - $w1)" | bc -l)") CPU-s per minute"
echo "rss: $(awk '/VmHWM/{print $2/1024 " MiB peak"}' /proc/$pid/status), now $(awk '/VmRSS/{print $2/1024 " MiB"}' /proc/$pid/status)"

now=$(date +%s)
python3 - "$base/output/bench" "$orders" "$step" "$now" <<'PY'
import os, sys
d, n, step, now = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
fresh = stale = missing = loss = pings = 0
for i in range(n):
    try:
        text = open(os.path.join(d, f"t{i}", "last_result")).read()
    except FileNotFoundError:
        missing += 1
        continue
    kv = dict(l.split(": ", 1) for l in text.splitlines())
    # the newest result is for the step before the current one, or the one before that while a run is in flight
    if now - int(kv["time"]) <= 3 * step: fresh += 1
    else: stale += 1
    loss += int(kv["loss"]); pings += int(kv["pings"])
print(f"orders: {fresh} fresh, {stale} stale, {missing} without last_result; "
      f"loss in the newest step: {loss} of {pings} pings ({100.0 * loss / max(pings, 1):.3f}%)")
PY
echo "queue: $(ls "$base/incoming" | wc -l) waiting, $(ls "$base/failed" | wc -l) failed"
[ -d "$base/outbox" ] && "$bin" outbox --base-dir "$base"
grep -c -i "warn" "$base/daemon.log" | sed 's/^/warnings in log: /'
