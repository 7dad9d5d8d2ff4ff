#!/usr/bin/env bash
# What a Nagios check and `spoolmon status` cost on a large base directory: 10,000 orders (half
# with a fresh last_result, a quarter stale, a quarter never measured), 100 invalid order files,
# 500 snapshots waiting in incoming/ and 50 in failed/. Each command runs 10 times; prints the
# median wall time and the peak RSS of one run (GNU time).
#
# usage: contrib/bench/checks-scale.sh [orders]     (release build)
set -euo pipefail
bin=${SPOOLMON:-$(dirname "$0")/../../target/release/spoolmon}
orders=${1:-10000}
base=$(mktemp -d /tmp/spoolmon-checks.XXXXXX)
trap 'rm -rf "$base"' EXIT
now=$(date +%s)
mkdir -p "$base"/{orders,incoming,failed,output,state}
for ((i = 0; i < orders; i++)); do
    dir="$base/orders/g$((i / 1000))"
    mkdir -p "$dir" "$base/output/g$((i / 1000))/t$i"
    printf 'user: bench\nstep: 60\npings: 3\nprobe: fping\nfping:\n    host: 10.%d.%d.%d\n' \
        $((i / 65536)) $((i / 256 % 256)) $((i % 256)) > "$dir/t$i"
    case $((i % 4)) in
        0 | 1) echo "time: $now" > "$base/output/g$((i / 1000))/t$i/last_result" ;;
        2) echo "time: $((now - 600))" > "$base/output/g$((i / 1000))/t$i/last_result"
           touch -d "@$((now - 600))" "$base/output/g$((i / 1000))/t$i/last_result" ;;
        3) rm -d "$base/output/g$((i / 1000))/t$i"; touch -d "@$((now - 600))" "$dir/t$i" ;;
    esac
done
for ((i = 0; i < 100; i++)); do echo 'step: [' > "$base/orders/bad$i"; done
for ((i = 0; i < 500; i++)); do mkdir "$base/incoming/$((now - i))-ping-$(printf %09d "$i")"; done
for ((i = 0; i < 50; i++)); do mkdir "$base/failed/$((now - i))-ping-x$i"; done

measure() { # label, command...
    local label=$1; shift
    local times=()
    for _ in 1 2 3 4 5 6 7 8 9 10; do
        local start end
        start=$(date +%s%N)
        "$@" > /dev/null 2>&1 || true
        end=$(date +%s%N)
        times+=($(( (end - start) / 1000000 )))
    done
    local median
    median=$(printf '%s\n' "${times[@]}" | sort -n | sed -n 5p)
    local rss
    rss=$( (/usr/bin/time -f %M "$@" 2>&1 >/dev/null || true) | tail -1)
    printf '%-16s median %5d ms   peak RSS %6d KiB\n' "$label" "$median" "$rss"
}
echo "$orders orders, 100 invalid, 500 waiting, 50 failed"
"$bin" check orders --base-dir "$base" || true
measure "check orders" "$bin" check orders --base-dir "$base"
measure "check queue" "$bin" check queue --base-dir "$base"
measure "check failed" "$bin" check failed --base-dir "$base"
measure "check daemon" "$bin" check daemon --base-dir "$base"
measure "status --json" "$bin" status --json --base-dir "$base"
