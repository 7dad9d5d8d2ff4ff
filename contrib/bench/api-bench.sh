#!/usr/bin/env bash
# usage: contrib/bench/api-bench.sh BIN [ORDERS] [REQUESTS]
#
# The API's figures of issue 14 at ORDERS orders (default 10000), each with a last_result and
# a main.rrd (one day of 20-ping SmokePing rows at step 20 made by rrdtool, hard-linked so the
# base directory stays small), served by `BIN serve`:
#   - /render of one series over a day (format=json, maxDataPoints=1000): p50/p99 of REQUESTS
#   - /api/v1/orders first page (100 orders, by id) and sorted by median (reads every result)
#   - a thumbnail as the orders page asks for it (/graph/<id>.png?range=3h&width=150&height=30&legend=0)
#   - /graph/<id>.png over a day (600x200, SmokePing's size), and beside it SmokePing's own
#     drawing of the same file: its two librrd calls (the PRINT of the largest median for the
#     y axis, then the graph) run in-process through RRDs (the Perl binding SmokePing draws
#     with), the same number of times
#   - the orders page in headless Chromium until it is drawn and idle, minus the same browser
#     loading a static asset (so the browser's start is not counted)
#   - the server's idle CPU over 60 s (no requests): ticks from /proc/PID/stat
# Times from curl's %{time_total} (connection set up and answer read, curl's start not counted).
set -euo pipefail
bin=$1 orders=${2:-10000} requests=${3:-200}
base=$(mktemp -d /tmp/api-bench.XXXXXX)
trap 'kill ${pid:-0} 2>/dev/null || true; wait ${pid:-0} 2>/dev/null || true; rm -rf "$base"' EXIT
now=$(date +%s)
start=$((now - 86400))
seed=$base/seed.rrd
args=(create "$seed" --start $((start - 20)) --step 20 DS:loss:GAUGE:40:0:20 DS:median:GAUGE:40:0:180)
for i in $(seq 1 20); do args+=("DS:ping$i:GAUGE:40:0:180"); done
args+=(RRA:AVERAGE:0.5:1:4320 RRA:AVERAGE:0.5:15:2880 RRA:MIN:0.5:15:2880 RRA:MAX:0.5:15:2880)
rrdtool "${args[@]}"
python3 - "$start" > "$base/updates" <<'PY'
import math, random, sys
start = int(sys.argv[1])
random.seed(1)
for i in range(4320):
    base = 0.010 + 0.004 * math.sin(i / 300)
    rtts = sorted(base * (1 + random.expovariate(4)) for _ in range(20))
    lost = 0 if i % 97 else random.choice([1, 2, 5])
    known = rtts[: 20 - lost]
    print(f"{start + 20 * i}:{lost}:{known[len(known) // 2]:.6f}:" + ":".join([f"{v:.6f}" for v in known] + ["U"] * lost))
PY
xargs -n 200 rrdtool update "$seed" < "$base/updates"
python3 - "$base" "$orders" "$seed" "$now" <<'PY'
import os, sys
base, n, seed, now = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4])
for i in range(n):
    oid = f"lab/g{i // 1000:02d}/o{i:05d}"
    os.makedirs(os.path.join(base, "orders", os.path.dirname(oid)), exist_ok=True)
    with open(os.path.join(base, "orders", oid), "w") as f:
        f.write(f"user: bench\nstep: 20\npings: 20\nprobe: fping\nfping:\n    host: 127.1.{i // 250 % 250}.{1 + i % 250}\n")
    out = os.path.join(base, "output", oid)
    os.makedirs(out, exist_ok=True)
    os.link(seed, os.path.join(out, "main.rrd"))
    m = 0.010 + (i % 97) / 10000
    with open(os.path.join(out, "last_result"), "w") as f:
        f.write(f"time: {now - 40}\nupdated: {now - 25}\nstep: 20\npings: 20\nloss: {i % 3}\nmin: {m * 0.9:.6e}\nmedian: {m:.6e}\nmax: {m * 1.5:.6e}\n")
PY
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
printf 'api:\n  listen: ["127.0.0.1:%s"]\n' "$port" > "$base/config.yaml"
"$bin" --log-level warn serve --base-dir "$base" --config "$base/config.yaml" 2> "$base/serve.log" &
pid=$!
until curl -sf "http://127.0.0.1:$port/api/v1/health" > /dev/null; do sleep 0.1; kill -0 $pid; done
site=http://127.0.0.1:$port

# Medians and 99th percentiles of curl's time_total over N requests of URL, in ms.
timed() {
  local n=$1 url=$2
  for _ in $(seq 1 "$n"); do curl -s -o /dev/null -w '%{time_total}\n' "$url"; done |
    sort -n | awk '{ t[NR] = $1 * 1000 } END { printf "p50 %.2f ms  p99 %.2f ms  (n=%d)\n", t[int(NR * 0.5 + 0.5)], t[int(NR * 0.99 + 0.5)], NR }'
}
id=lab/g04/o04242
echo "machine: $(nproc) cores, $(uname -r); $orders orders"
echo "render one series over a day: $(timed "$requests" "$site/render?target=ping.lab.g04.o04242.median&from=-1d&format=json&maxDataPoints=1000")"
echo "render sumSeries over 1000 orders, 1h: $(timed 20 "$site/render?target=sumSeries(ping.lab.g04.*.median)&from=-1h&format=json")"
echo "orders first page (100, by id): $(timed 50 "$site/api/v1/orders?limit=100")"
echo "orders sorted by median (reads every last_result): $(timed 10 "$site/api/v1/orders?limit=100&sort=median")"
echo "graph PNG over a day (600x200): $(timed 50 "$site/graph/$id.png?range=1d")"
echo "thumbnail PNG over 3 h (150x30, legend=0, as the orders page asks): $(timed 100 "$site/graph/$id.png?range=3h&width=150&height=30&legend=0")"

if perl -MRRDs -e 1 2> /dev/null; then
  # SmokePing's detail graph of the same file: its smoke (cp<i> clipped at the maximum, bands
  # between the i-th and (21-i)-th ping), its median by loss, its legend, drawn in-process by
  # RRDs as smokeping.cgi draws it.
  perl - "$base/output/$id/main.rrd" "$start" "$now" 50 <<'PL'
# SmokePing 2.7's detail graph (Smokeping.pm, mode "s"), its three librrd calls per image: the
# largest median for the y axis (RRDs::graph PRINT), the median's standard deviation
# (RRDhelpers::get_stddev: RRDs::fetch), then the graph with its whole legend.
use strict; use RRDs; use Time::HiRes qw(time);
my ($rrd, $start, $end, $n) = @ARGV;
my $pings = 20; my $half = $pings / 2; my $height = 200;
my %lc = (0 => ['0', '#26ff00'], 1 => ["1/$pings", '#00b8ff'], 2 => ["2/$pings", '#0059ff'], 3 => ["3/$pings", '#5e00ff'],
          4 => ["4/$pings", '#7e00ff'], int($pings / 2) => [int($pings / 2) . "/$pings", '#dd00ff'], $pings - 1 => [($pings - 1) . "/$pings", '#ff0000']);
sub one {
  my ($graphret) = RRDs::graph('dummy', '--start', $start, '--end', $end, "DEF:maxping=$rrd:median:AVERAGE", 'PRINT:maxping:MAX:%le');
  my $max = $graphret->[0] * 1.5;
  my ($s0, $st, $names, $array) = RRDs::fetch($rrd, 'AVERAGE', '--start', $start, '--end', $end);
  my $idx = 0; for (@$names) { last if $_ eq 'median'; $idx++ }
  my ($sum, $sq, $cnt) = (0, 0, 0);
  for (@$array) { my $v = $_->[$idx]; next unless defined $v; $sum += $v; $sq += $v * $v; $cnt++ }
  my $stddev = $cnt ? sqrt($sq / $cnt - ($sum / $cnt) ** 2) : 0;
  my $swidth = $max / $height;
  my @smoke;
  for (my ($bot, $top) = (1, $pings); $top > $bot; $top--, $bot++) {
    my $c = sprintf("%02x", int(190 / $half * ($half - $bot)) + 50);
    push @smoke, "CDEF:smoke$bot=cp$bot,UN,UNKN,cp$top,cp$bot,-,IF", "AREA:cp$bot", "STACK:smoke$bot#$c$c$c";
  }
  my @median = ("DEF:median=$rrd:median:AVERAGE", "CDEF:ploss=loss,$pings,/,100,*", "VDEF:avmed=median,AVERAGE",
    "CDEF:mesd=median,POP,avmed,$stddev,/", 'GPRINT:avmed:median rtt\:  %.1lf %ss avg', 'GPRINT:median:MAX:%.1lf %ss max',
    'GPRINT:median:MIN:%.1lf %ss min', 'GPRINT:median:LAST:%.1lf %ss now', sprintf('COMMENT:%.1f ms sd', $stddev * 1000.0),
    'GPRINT:mesd:AVERAGE:%.1lf %s am/s\l', "LINE1:median#202020", "GPRINT:ploss:AVERAGE:packet loss\\: %.2lf %% avg",
    "GPRINT:ploss:MAX:%.2lf %% max", "GPRINT:ploss:MIN:%.2lf %% min", 'GPRINT:ploss:LAST:%.2lf %% now\l', 'COMMENT:loss color\:');
  my $last = -1;
  for my $loss (sort { $a <=> $b } keys %lc) {
    next if $loss >= $pings;
    push @median, "CDEF:me$loss=loss,$last,GT,loss,$loss,LE,*,1,UNKN,IF,median,*", "CDEF:meL$loss=me$loss,$swidth,-",
      "CDEF:meH$loss=me$loss,0,*,$swidth,2,*,+", "AREA:meL$loss", "STACK:meH$loss$lc{$loss}[1]:$lc{$loss}[0]";
    $last = $loss;
  }
  my ($out) = RRDs::graphv('-', '--start', $start, '--end', $end, '--height', $height, '--width', 600, '--title', 'bench from here',
    '--rigid', '--upper-limit', $max, '--lower-limit', 0, '--vertical-label', 'Seconds', '--imgformat', 'PNG',
    '--color', 'SHADEA#ffffff', '--color', 'SHADEB#ffffff', '--color', 'BACK#ffffff',
    (map {"DEF:ping${_}=$rrd:ping${_}:AVERAGE"} 1 .. $pings), (map {"CDEF:cp${_}=ping${_},$max,LT,ping${_},INF,IF"} 1 .. $pings),
    "DEF:loss=$rrd:loss:AVERAGE", @smoke, @median, 'COMMENT: \l', 'HRULE:0#000000',
    "COMMENT:probe\\:       $pings ICMP Echo Pings (56 Bytes) every 20s", 'COMMENT:end\: now\j');
  my $e = RRDs::error; die $e if $e;
}
my @t;
for (1 .. $n) { my $t0 = time; one(); push @t, (time - $t0) * 1000; }
@t = sort { $a <=> $b } @t;
printf "SmokePing's detail graph of the same file (Smokeping.pm's three librrd calls, RRDs in-process): p50 %.2f ms  p99 %.2f ms  (n=%d)\n", $t[int($n * 0.5)], $t[int($n * 0.99)], $n;
PL
else
  echo "SmokePing's graph: RRDs (librrds-perl, SmokePing's dependency) is not installed"
fi

if command -v chromium > /dev/null; then
  # Wall time of a headless Chromium that loads the page and waits until nothing is pending
  # (the table drawn, the thumbnails loaded), minus that of the same Chromium loading a static
  # asset of the same server: what the page itself costs. Alternated, 7 of each. Chromium without
  # its background networking (this machine refuses it: waits of 0.5 s at random otherwise) and
  # with a new profile each time.
  load() { local t0 t1; t0=$(date +%s%N); chromium --headless=new --no-sandbox --disable-gpu --disable-quic --no-first-run --disable-background-networking --disable-component-update --disable-sync --user-data-dir="$(mktemp -d "$base/chromium.XXXX")" --virtual-time-budget=30000 --dump-dom "$1" > "$base/dom.html" 2> /dev/null; t1=$(date +%s%N); echo $(((t1 - t0) / 1000000)); }
  for view in "/" "/?sort=median" "/?graphs=0"; do
    page=() blank=()
    for _ in 1 2 3 4 5 6 7; do
      blank+=("$(load "$site/assets/app.css")")
      page+=("$(load "$site$view")")
      grep -q 'data-ready="1"' "$base/dom.html" || echo "  (the page was not drawn)"
    done
    pm=$(printf '%s\n' "${page[@]}" | sort -n | sed -n 4p)
    bm=$(printf '%s\n' "${blank[@]}" | sort -n | sed -n 4p)
    echo "orders page $view in Chromium: median $pm ms, a static asset $bm ms: the page $((pm - bm)) ms (loads: ${page[*]} / ${blank[*]})"
  done
fi

t1=$(awk '{print $14 + $15}' /proc/$pid/stat)
sleep 60
t2=$(awk '{print $14 + $15}' /proc/$pid/stat)
hz=$(getconf CLK_TCK)
echo "idle: $((t2 - t1)) ticks of 1/$hz s over 60 s = $(awk -v t=$((t2 - t1)) -v hz="$hz" 'BEGIN { printf "%.3f", t / hz / 60 * 100 }') % of a core"
echo "VmHWM: $(awk '/VmHWM/{print $2}' /proc/$pid/status) kB"
