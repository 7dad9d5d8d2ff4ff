#!/usr/bin/env bash
# Order churn benchmark: with 3,000 orders running, 1,000 orders are added, 1,000 changed
# (pings 3 -> 4) and 1,000 removed at once (the new ones with pings 5) (three directory renames). Reports the time until all
# of it is in effect: the scheduler runs the new set (3,000 orders in 3 batches, logged as
# "schedule updated orders=3000 batches=3") and the 1,000 removed orders are archived.
#
# usage: contrib/bench/order-churn.sh        (root, release build)
set -euo pipefail
bin=${SPOOLMON:-$(dirname "$0")/../../target/release/spoolmon}
base=$(mktemp -d /tmp/spoolmon-churn.XXXXXX)
trap 'kill $pid 2>/dev/null || true; wait $pid 2>/dev/null || true; rm -rf "$base"' EXIT
write_orders() { # dir first count pings
    mkdir -p "$1"
    for ((i = $2; i < $2 + $3; i++)); do
        printf 'user: churn\nstep: 20\npings: %s\nprobe: fping\nrrd_template: norrd\nfping:\n    host: 127.2.%d.%d\n' \
            "$4" $((i / 250)) $((1 + i % 250)) > "$1/t$i"
    done
}
write_orders "$base/orders/remove" 0 1000 3
write_orders "$base/orders/change" 1000 1000 3
write_orders "$base/orders/keep" 2000 1000 3
printf 'max-batch: 10000\nrescan-interval: 30\n' > "$base/config.yaml"
"$bin" run --base-dir "$base" --config "$base/config.yaml" 2> "$base/daemon.log" &
pid=$!
until grep -q "spoolmon running" "$base/daemon.log"; do sleep 0.05; done
sleep 25 # every order measured once, so archiving has output to move
write_orders "$base/staging/add" 3000 1000 5
mkdir -p "$base/staging/gone"
start=$(date +%s%N)
sed -i 's/^pings: 3$/pings: 4/' "$base"/orders/change/t*     # rewritten by rename, like a client
mv "$base/orders/remove" "$base/staging/gone/remove"
mv "$base/staging/add" "$base/orders/add"
until grep -q "schedule updated orders=3000 batches=3" "$base/daemon.log" &&
      [ "$(find "$base/archive/remove" -name last_result 2>/dev/null | wc -l)" = 1000 ]; do
    sleep 0.02
done
end=$(date +%s%N)
echo "churn of 1000 added + 1000 changed + 1000 removed in effect after $(( (end - start) / 1000000 )) ms"
