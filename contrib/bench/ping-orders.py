#!/usr/bin/env python3
"""Writes N fping orders into BASE/orders/bench/ atomically: o0..o{N-1}, step 20, 3 pings,
targets 127.1.x.y (250 per /24), the orders ../shared/bench/ping-vs-pingmachine.sh gives both
systems. usage: contrib/bench/ping-orders.py BASE N"""
import os
import sys

base, n = sys.argv[1], int(sys.argv[2])
orders, tmp_dir = os.path.join(base, "orders", "bench"), os.path.join(base, "tmp")
os.makedirs(orders, exist_ok=True)
os.makedirs(tmp_dir, exist_ok=True)
for i in range(n):
    tmp = os.path.join(tmp_dir, f"o{i}")
    with open(tmp, "w") as f:
        f.write(f"user: bench\ntask: o{i}\nstep: 20\npings: 3\nprobe: fping\nfping:\n    host: 127.1.{i // 250}.{i % 250 + 1}\n")
    os.rename(tmp, os.path.join(orders, f"o{i}"))
os.rmdir(tmp_dir)
