#!/usr/bin/env bash
# Issue 13: ping results per second through one link between two spoolmon processes (plain
# HTTP, then TLS with a client certificate) and through a 3-node chain child -> proxy ->
# parent, with the CPU each process spends per result.
#
# The child is `spoolmon process` on a base whose incoming/ holds SNAPSHOTS ping snapshots of
# RESULTS results each (orders o0..o{RESULTS-1}, one 20 s step per snapshot, 3 RTTs, template
# norrd: no RRD anywhere), written before the clock starts. Its forward sink has keep-local:
# false (it writes no output of its own: it only ships). A proxy (keep-local: false) passes
# frames on; the parent stores them and applies them (one last_result per order). The clock
# runs from the child's start until the parent's metrics file counts every result applied
# (spoolmon_results_applied_total); CPU is each process's user+system ticks from /proc.
#
# usage: contrib/bench/forward-link.sh BIN [SNAPSHOTS] [RESULTS]    (defaults 200 x 1000)
set -euo pipefail
BIN=${1:?spoolmon binary}; SNAPS=${2:-200}; RESULTS=${3:-1000}
TOTAL=$((SNAPS * RESULTS))
W=$(mktemp -d /tmp/fwd-link.XXXXXX)
TK=$(getconf CLK_TCK)
PIDS=""
cleanup() { for p in $PIDS; do kill "$p" 2>/dev/null || true; done; sleep 1; rm -rf "$W"; }
trap cleanup EXIT
KEY=0b1f4d2e-6a7c-4e8b-9d0f-1a2b3c4d5e6f
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
ticks() { awk '{print $14+$15}' "/proc/$1/stat"; }

# Certificates: a CA, the receivers' certificate for 127.0.0.1, a client certificate.
( cd "$W"
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout ca.key -out ca.pem -days 2 \
    -subj /CN=bench-ca -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign 2>/dev/null
  for who in server client; do
    openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout $who.key -out $who.csr -subj /CN=$who 2>/dev/null
  done
  printf 'subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n' > server.ext
  printf 'extendedKeyUsage=clientAuth\n' > client.ext
  for who in server client; do
    openssl x509 -req -in $who.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out $who.pem -days 2 -extfile $who.ext 2>/dev/null
  done )

make_child() { # BASE: incoming/ full of snapshots
  python3 - "$1" "$SNAPS" "$RESULTS" <<'EOF'
import json, os, sys, time
base, snaps, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
for d in ("orders", "incoming", "incoming.tmp", "output", "archive", "failed", "outbox", "state"):
    os.makedirs(os.path.join(base, d), exist_ok=True)
t0 = int(time.time()) // 20 * 20 - 20 * (snaps + 1)
for s in range(snaps):
    t = t0 + 20 * s
    d = os.path.join(base, "incoming", "%d-ping-%09d" % (t, s))
    os.makedirs(d)
    with open(os.path.join(d, "ping.jsonl"), "w") as f:
        f.write(json.dumps({"format": "spoolmon-ping", "version": 1, "batch": "bench", "results": n}) + "\n")
        for i in range(n):
            f.write(json.dumps({"id": "o%d" % i, "time": t, "updated": t + 3, "step": 20, "pings": 3,
                                "template": "norrd", "rtts": [0.001, 0.0012, None]}) + "\n")
EOF
}

receiver_config() { # PORT TLS(0/1) [FORWARD-TO-PORT]
  printf 'queue-size: 100000\nmax-batch: %s\nself-metrics:\n  interval: 1\nreceive:\n  listen: ["127.0.0.1:%s"]\n  api-keys:\n    %s: {}\n  queue-size: 100000\n' "$RESULTS" "$1" "$KEY"
  if [ "$2" = 1 ]; then
    printf '  tls: {cert: %s/server.pem, key: %s/server.key, client-ca: %s/ca.pem}\n' "$W" "$W" "$W"
  fi
  if [ -n "${3:-}" ]; then forward_sink "$3" "$2" proxy; fi
}
forward_sink() { # PORT TLS NODE
  local scheme=http tls=""
  if [ "$2" = 1 ]; then scheme=https; tls="    tls: {ca: $W/ca.pem, cert: $W/client.pem, key: $W/client.key}
"; fi
  printf 'node-name: %s\nsinks:\n  up:\n    type: forward\n    destinations: ["%s://127.0.0.1:%s"]\n    api-key: %s\n    keep-local: false\n%s' "$3" "$scheme" "$1" "$KEY" "$tls"
}
applied() { awk '/^spoolmon_results_applied_total /{print $2}' "$1/state/metrics-process.prom" 2>/dev/null || echo 0; }

run() { # NAME TLS HOPS(1|2)
  local name=$1 tls=$2 hops=$3 d="$W/$1"
  mkdir -p "$d"
  local pport; pport=$(port)
  receiver_config "$pport" "$tls" > "$d/parent.yaml"
  mkdir -p "$d/parent"
  "$BIN" process --base-dir "$d/parent" --config "$d/parent.yaml" > "$d/parent.log" 2>&1 &
  local parent=$!; PIDS="$PIDS $parent"
  local target=$pport proxy=""
  if [ "$hops" = 2 ]; then
    local xport; xport=$(port)
    receiver_config "$xport" "$tls" "$pport" > "$d/proxy.yaml"
    mkdir -p "$d/proxy"
    "$BIN" process --base-dir "$d/proxy" --config "$d/proxy.yaml" > "$d/proxy.log" 2>&1 &
    proxy=$!; PIDS="$PIDS $proxy"; target=$xport
  fi
  sleep 2
  make_child "$d/child"
  { printf 'queue-size: 100000\nmax-batch: %s\n' "$RESULTS"; forward_sink "$target" "$tls" child; } > "$d/child.yaml"
  local p1 x1=0 t1; p1=$(ticks "$parent"); [ -n "$proxy" ] && x1=$(ticks "$proxy"); t1=$(date +%s.%N)
  "$BIN" process --base-dir "$d/child" --config "$d/child.yaml" > "$d/child.log" 2>&1 &
  local child=$!; PIDS="$PIDS $child"
  local c=0 x=0 p=0
  until [ "$(applied "$d/parent")" -ge "$TOTAL" ]; do
    kill -0 "$parent"; kill -0 "$child"
    c=$(ticks "$child"); p=$(ticks "$parent"); [ -n "$proxy" ] && x=$(ticks "$proxy")
    sleep 0.2
  done
  local t2; t2=$(date +%s.%N)
  c=$(ticks "$child"); p=$(ticks "$parent"); [ -n "$proxy" ] && x=$(ticks "$proxy")
  local wall; wall=$(echo "$t2 - $t1" | bc -l)
  local xcpu; xcpu=$(echo "($x - $x1) / $TK" | bc -l)
  printf '| %-22s | %9d | %6.2f | %9.0f | %6.2f us | %s | %6.2f us |\n' "$name" "$TOTAL" "$wall" \
    "$(echo "$TOTAL / $wall" | bc -l)" \
    "$(echo "$c / $TK * 1000000 / $TOTAL" | bc -l)" \
    "$(if [ -n "$proxy" ]; then printf '%6.2f us' "$(echo "$xcpu * 1000000 / $TOTAL" | bc -l)"; else printf '%9s' '-'; fi)" \
    "$(echo "($p - $p1) / $TK * 1000000 / $TOTAL" | bc -l)"
  kill "$child" "$parent" ${proxy:+"$proxy"} 2>/dev/null || true
  wait 2>/dev/null || true
  rm -rf "$d"
}
echo "$SNAPS snapshots x $RESULTS results, norrd; CPU per result = user+system of each process / results"
echo "| link | results | wall s | results/s | child CPU/result | proxy CPU/result | parent CPU/result |"
echo "|---|---|---|---|---|---|---|"
run "one link, http" 0 1
run "one link, TLS (mutual)" 1 1
run "chain of 3, http" 0 2
run "chain of 3, TLS" 1 2
