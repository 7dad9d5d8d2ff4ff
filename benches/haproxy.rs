//! CPU and memory of HAProxy aggregation: the real reference snapshot (4 processes × 200
//! frontends, 200 backends × 10 servers; 2.4 MB of `show stat`) aggregated N times, as the
//! processing step does — read the files, parse, group with polars, build 78,455 metrics in
//! one block — and, separately, the same plus encoding the block as Graphite lines.
//!
//! CPU is the whole process's (getrusage: user + system, all threads, polars' pool included);
//! peak RSS is the process's `ru_maxrss`. The first run (polars' thread pool starting) is
//! reported apart. haproxystats 0.5.1 needs ~0.56 CPU-s and ~170 MB for this snapshot; the
//! target is under 20 ms and 100 MB.
//!
//! Under `cargo test` (no `--bench` argument) it aggregates once, as a smoke test that asserts
//! the line count, never times.
//!
//! usage: cargo bench --bench haproxy -- [snapshots]   (default 200)

#[path = "../tests/data/haproxy/reference.rs"]
mod reference;

use nix::sys::resource::{getrusage, UsageWho};
use spoolmon::process::haproxy::{aggregate_block, HaproxyOptions};
use spoolmon::sink::graphite::GraphiteEncoder;
use std::collections::BTreeMap;
use std::path::Path;

/// Lines haproxystats 0.5.1 sends for the reference snapshot.
const LINES: usize = 78_455;

fn cpu_seconds() -> f64 {
    let usage = getrusage(UsageWho::RUSAGE_SELF).unwrap();
    let secs = |t: nix::sys::time::TimeVal| t.tv_sec() as f64 + t.tv_usec() as f64 / 1e6;
    secs(usage.user_time()) + secs(usage.system_time())
}

fn peak_rss_mb() -> f64 {
    getrusage(UsageWho::RUSAGE_SELF).unwrap().max_rss() as f64 / 1024.0
}

/// Aggregates `dir` (and encodes the metrics if `encode`) `runs` times; returns CPU ms per run
/// and the mean of each self-metric timing (wall-clock ms per part).
fn measure(dir: &Path, runs: usize, encode: bool) -> (f64, BTreeMap<String, f64>) {
    let mut parts = BTreeMap::new();
    let options = HaproxyOptions::default();
    let encoder = GraphiteEncoder::with_prefix("loadbalancers", "loadbalancers.vm.");
    let mut out = Vec::with_capacity(8 << 20);
    let started = cpu_seconds();
    for _ in 0..runs {
        let block = aggregate_block(dir, reference::TIME, &options)
            .expect("reference snapshot aggregates")
            .metrics;
        assert_eq!(block.len(), LINES);
        for timing in block.iter().filter(|m| m.path.contains("WallClockTime")) {
            let name = timing.path.rsplit('.').next().unwrap_or_default();
            *parts.entry(name.replace("WallClockTime", "")).or_insert(0.0) += timing.value * 1e3 / runs as f64;
        }
        if encode {
            out.clear();
            assert_eq!(encoder.encode_block(&block, 0..block.len(), &mut out), LINES);
        }
    }
    ((cpu_seconds() - started) * 1e3 / runs as f64, parts)
}

fn main() {
    let benchmarking = std::env::args().any(|a| a == "--bench");
    let runs: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(if benchmarking { 200 } else { 1 });
    let temp = tempfile::tempdir().unwrap();
    let dir = reference::unpack_snapshot(temp.path());

    let (first, _) = measure(&dir, 1, false);
    println!("first snapshot (polars start-up included): {first:>7.2} ms CPU, {LINES} lines");
    if !benchmarking {
        return;
    }
    let (aggregate_ms, parts) = measure(&dir, runs, false);
    println!("aggregate, {runs} snapshots:               {aggregate_ms:>7.2} ms CPU per snapshot, {LINES} lines");
    let parts: Vec<String> = parts.iter().map(|(part, ms)| format!("{part} {ms:.2}")).collect();
    println!("  wall-clock ms by part (self-metrics):   {}", parts.join(", "));
    let (encoded_ms, _) = measure(&dir, runs, true);
    println!("aggregate + Graphite encoding:            {encoded_ms:>7.2} ms CPU per snapshot");
    println!("peak RSS of the whole bench process:      {:>7.1} MB", peak_rss_mb());
}
