#!/usr/bin/env bash
# usage: contrib/bench/orders-rss.sh ORDERS BIN...: VmRSS/VmHWM of `spoolmon run` with ORDERS orders (step 60, 20 pings,
# norrd), 5 s after "spoolmon running", for each binary in turn (same orders). Needs root.
set -euo pipefail
orders=$1; shift
base=$(mktemp -d /tmp/rss-load.XXXXXX)
trap 'rm -rf "$base"' EXIT
mkdir -p "$base/orders/bench"
python3 - "$base/orders/bench" "$orders" <<'PY'
import os, sys
d, n = sys.argv[1], int(sys.argv[2])
i = 0
for a in range(1, 255):
    for b in range(0, 256):
        for c in range(1, 255):
            if i >= n: sys.exit(0)
            with open(os.path.join(d, f"t{i}"), "w") as f:
                f.write(f"user: bench\nstep: 60\npings: 20\nprobe: fping\nrrd_template: norrd\nfping:\n    host: 127.{a}.{b}.{c}\n")
            i += 1
PY
printf 'rescan-interval: 30\nqueue-size: 100000\n' > "$base/config.yaml"
for bin in "$@"; do
  rm -rf "$base/output" "$base/incoming" "$base/state" "$base/daemon.log"
  "$bin" --log-level info run --base-dir "$base" --config "$base/config.yaml" 2> "$base/daemon.log" &
  pid=$!
  until grep -q "spoolmon running" "$base/daemon.log" 2>/dev/null; do sleep 0.2; kill -0 $pid; done
  sleep 5
  echo "$bin: $(awk '/VmRSS|VmHWM/{printf "%s %d MiB  ", $1, $2/1024}' /proc/$pid/status)"
  kill $pid; wait $pid || true
done
