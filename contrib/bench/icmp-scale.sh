#!/bin/sh
# Measures the native ICMP engine at scale on loopback (127.10.0.0/15 targets; nothing leaves
# the host): loss, wall time and process CPU time. Needs root (raw sockets). The measurement is
# benches/icmp_scale.rs.
#
#   contrib/bench/icmp-scale.sh [TARGETS [PINGS [INTERVAL_MS]]]
#   contrib/bench/icmp-scale.sh 100000 20 3000     # 100k targets x 20 pings per 60 s
#
# Debug builds (the default here) cost several times the CPU of a release build; for a release
# build run `cargo bench --bench icmp_scale` with the same SCALE_* variables.
set -eu
cd "$(dirname "$0")/../.."
SCALE_TARGETS="${1:-10000}" SCALE_PINGS="${2:-3}" SCALE_INTERVAL_MS="${3:-1000}" \
  exec cargo bench --profile dev --bench icmp_scale
