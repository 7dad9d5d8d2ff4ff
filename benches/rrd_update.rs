//! Cost of the output stage alone: one processing round per step over N orders, each order's
//! RRD updated (librrd) and its `last_result` staged and switched, like `process::round` does,
//! without probes or the spool. CPU from getrusage (user + system), per result.
//!
//! Under `cargo test` (no `--bench` argument) it runs 20 orders only, as a smoke test.
//!
//! usage: cargo bench --bench rrd_update -- [orders] [steps] [rrd|last_result|both] [dir]
//! (dir defaults to a new temporary directory; give one to keep the files between runs)

use spoolmon::output::{last_result, rrd::RrdWriter};
use spoolmon::shared::measurement::{OrderId, OrderResult};
use spoolmon::spool::atomic::sync_filesystem;
use std::path::PathBuf;
use std::time::Instant;

fn cpu_seconds() -> f64 {
    let usage = nix::sys::resource::getrusage(nix::sys::resource::UsageWho::RUSAGE_SELF).unwrap();
    let secs = |t: nix::sys::time::TimeVal| t.tv_sec() as f64 + t.tv_usec() as f64 / 1e6;
    secs(usage.user_time()) + secs(usage.system_time())
}

fn main() {
    // `cargo test --all-targets` runs this without `--bench`: then only a small smoke run.
    let benchmarking = std::env::args().any(|a| a == "--bench");
    let args: Vec<String> = std::env::args().skip(1).filter(|a| a != "--bench").collect();
    let default_orders = if benchmarking { 2000 } else { 20 };
    let orders: usize = args.first().and_then(|a| a.parse().ok()).unwrap_or(default_orders);
    let steps: i64 = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(5);
    let tmp = tempfile::tempdir().unwrap();
    let parts = args.get(2).cloned().unwrap_or_else(|| "both".into());
    let dir = args.get(3).map(PathBuf::from).unwrap_or_else(|| tmp.path().to_owned());
    let writer = RrdWriter::new();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let t0 = now - now % 20 - 20 * (steps + 2);
    let pool = rayon::ThreadPoolBuilder::new().build().unwrap();
    for k in 0..=steps {
        let (cpu, wall) = (cpu_seconds(), Instant::now());
        let staged: Vec<_> = pool.install(|| {
            use rayon::prelude::*;
            (0..orders)
                .into_par_iter()
                .map(|o| {
                    // Step 20, Smokeping, collected one step later, 3 pings (the builder's defaults).
                    let result = OrderResult::builder(OrderId::new(format!("o{o}")).unwrap(), t0 + 20 * k)
                        .rtts([Some(1e-4), Some(2e-4), None])
                        .build();
                    let out = dir.join(result.id.as_path());
                    if parts != "last_result" {
                        writer.apply(&out, &[&result]).unwrap();
                    }
                    (parts != "rrd").then(|| last_result::stage(&out, &result).unwrap())
                })
                .collect()
        });
        sync_filesystem(&dir).unwrap();
        for file in staged.into_iter().flatten() {
            file.commit().unwrap();
        }
        sync_filesystem(&dir).unwrap();
        let what = if k == 0 { "create + first update" } else { "update" };
        println!(
            "step {k}: {what}: {:.1} us CPU per order, {:.0} ms wall for {orders} orders",
            (cpu_seconds() - cpu) * 1e6 / orders as f64,
            wall.elapsed().as_secs_f64() * 1e3
        );
    }
}
