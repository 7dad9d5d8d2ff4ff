#!/usr/bin/env bash
# Issue 12: processing's cost per order per step. Runs BIN on N fping orders (step 20, 3 pings,
# 127.1.x.y; queue-size 100000, rrd-flush-interval $FLUSH, default 300), waits until every order
# has a last_result, then (1) per-thread CPU ticks over WINDOW s from /proc/PID/task/*/stat, (2)
# with PERF=1 a call-graph profile over WINDOW s (perf record -g; the top of perf report by
# symbol and by thread), (3) strace -c -f over WINDOW s (STRACE=0 skips it).
# EXTRA: more configuration lines (e.g. EXTRA='workers: 1').
# Usage: [FLUSH=0] [PERF=1] [EXTRA=...] contrib/bench/process-syscalls.sh BIN [N] [WINDOW] [WORKDIR]
# The base directory (about 4.7 GB of RRDs for 10,000 orders) is deleted at the end.
set -euo pipefail
BIN=$1; N=${2:-10000}; WIN=${3:-60}; W=${4:-$(mktemp -d /tmp/procsys.XXXX)}
B="$W/base"
"$(dirname "$0")/ping-orders.py" "$B" "$N"
printf 'queue-size: 100000\nrrd-flush-interval: %s\n%s\n' "${FLUSH:-300}" "${EXTRA:-}" > "$W/spoolmon.yaml"
"$BIN" run --base-dir "$B" --config "$W/spoolmon.yaml" > "$W/sm.log" 2>&1 &
PID=$!
trap 'kill $PID 2>/dev/null || true; rm -rf "$B"' EXIT
until [ "$(find "$B/output" -name last_result 2>/dev/null | wc -l)" -ge "$N" ]; do sleep 2; kill -0 $PID; done
sleep 5
ticks() { for t in /proc/$PID/task/*; do printf '%s %s\n' "$(cat "$t/comm")" "$(awk '{print $14+$15}' "$t/stat")"; done | awk '{a[$1]+=$2} END{for(k in a) print k, a[k]}' | sort; }
ticks > "$W/t1"; sleep "$WIN"; ticks > "$W/t2"
echo "== CPU ticks (1/100 s) per thread name over ${WIN}s"
join "$W/t1" "$W/t2" | awk '{d=$3-$2; s+=d; if ($1 ~ /^process/) p+=d; print $1, d} END{print "TOTAL", s; print "PROCESS*", p}'
if [ "${PERF:-0}" = 1 ]; then
  echo "== perf record -g over ${WIN}s"
  perf record -q -g -o "$W/perf.data" -p $PID -- sleep "$WIN" 2>/dev/null
  # (head closes the pipe early: no pipefail here)
  (set +o pipefail
   perf report -i "$W/perf.data" --no-children --sort comm --stdio -g none 2>/dev/null | grep -v '^#' | grep -v '^$' | head -20
   perf report -i "$W/perf.data" --no-children --sort dso,symbol --stdio -g none 2>/dev/null | grep -v '^#' | grep -v '^$' | head -60
   perf report -i "$W/perf.data" --children --comms process,process-0,process-1 --sort symbol --stdio -g none 2>/dev/null \
     | grep -v '^#' | grep -v '^$' | head -80)
fi
if [ "${STRACE:-1}" = 1 ]; then
  echo "== strace -c -f over ${WIN}s"
  timeout -s INT "$WIN" strace -c -f -p $PID -o "$W/strace.txt" || true
  sleep 1
  cat "$W/strace.txt"
fi
kill $PID; wait $PID 2>/dev/null || true
rm -rf "$B"
echo "workdir $W (base directory deleted)"
