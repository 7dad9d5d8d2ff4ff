//! Cost of one pull cycle against the reference setup: 4 real HAProxy instances, each with 200
//! frontends and 200 backends × 10 servers (the shape of `reference/haproxy/`), all pulled
//! through UNIX stats sockets in one socket-dir.
//!
//! Reported per cycle: wall time (start to snapshot durable in `incoming/`), the cycle's CPU as
//! the collector counts it ([`CycleReport::cpu`]: its own thread and its request threads), and
//! the whole process's CPU (getrusage RUSAGE_SELF, user + system) as a cross-check; the bench
//! does nothing else between cycles but remove the snapshot it just published (not timed).
//! HAProxy's own CPU to produce the replies is not included.
//!
//! Under `cargo test` (no `--bench` argument) it runs 1 small instance for 2 cycles, as a smoke
//! test.
//!
//! usage: cargo bench --bench pull -- [cycles] [instances] [frontends] [backends] [servers]
//! (defaults 20, 4, 200, 200, 10)

#[path = "../tests/common/mod.rs"]
mod common;

use common::servers::{Haproxy, HaproxySetup};
use spoolmon::collect::haproxy::{pull_cycle, CycleReport, PullOptions};
use spoolmon::spool::{queue, BaseDir};
use std::time::Duration;

fn process_cpu() -> Duration {
    let usage = nix::sys::resource::getrusage(nix::sys::resource::UsageWho::RUSAGE_SELF).unwrap();
    let duration = |t: nix::sys::time::TimeVal| Duration::new(t.tv_sec() as u64, t.tv_usec() as u32 * 1000);
    duration(usage.user_time()) + duration(usage.system_time())
}

fn milliseconds(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Median and maximum of `values`.
fn median_and_max(mut values: Vec<f64>) -> (f64, f64) {
    values.sort_by(f64::total_cmp);
    (values[values.len() / 2], values[values.len() - 1])
}

fn main() {
    // `cargo test --all-targets` runs this without `--bench`: then only a small smoke run.
    let benchmarking = std::env::args().any(|a| a == "--bench");
    let args: Vec<String> = std::env::args().skip(1).filter(|a| a != "--bench").collect();
    let number = |i: usize, full: usize, smoke: usize| {
        args.get(i)
            .and_then(|a| a.parse().ok())
            .unwrap_or(if benchmarking { full } else { smoke })
    };
    let cycles = number(0, 20, 2).max(1);
    let setup = HaproxySetup {
        instances: number(1, 4, 1),
        frontends: number(2, 200, 2),
        backends: number(3, 200, 2),
        servers_per_backend: number(4, 10, 2),
        ..HaproxySetup::default()
    };
    let haproxy = Haproxy::start(&setup);
    let base_dir = tempfile::tempdir().unwrap();
    let base = BaseDir::new(base_dir.path());
    base.create_all().unwrap();
    let options = PullOptions {
        socket_dir: Some(haproxy.socket_dir.clone()),
        pull_timeout: 10.0,
        min_free_space_mb: 0,
        ..PullOptions::default()
    };
    let mut reports: Vec<(CycleReport, Duration)> = Vec::new();
    for _ in 0..cycles {
        let before = process_cpu();
        let report = pull_cycle(&base, &options).expect("a cycle against healthy HAProxy publishes");
        let process = process_cpu().saturating_sub(before);
        queue::remove(&base, &report.snapshot).unwrap();
        reports.push((report, process));
    }
    let (wall, wall_max) = median_and_max(reports.iter().map(|(r, _)| milliseconds(r.wall)).collect());
    let (cpu, cpu_max) = median_and_max(reports.iter().map(|(r, _)| milliseconds(r.cpu)).collect());
    let (process, _) = median_and_max(reports.iter().map(|(_, p)| milliseconds(*p)).collect());
    let bytes = reports[0].0.bytes;
    println!(
        "pull: {} instances x ({} frontends, {} backends x {} servers), {cycles} cycles, {:.1} MiB per snapshot",
        setup.instances,
        setup.frontends,
        setup.backends,
        setup.servers_per_backend,
        bytes as f64 / f64::from(1 << 20),
    );
    println!("  wall per cycle: median {wall:.1} ms, max {wall_max:.1} ms");
    println!("  CPU per cycle (collector threads): median {cpu:.1} ms, max {cpu_max:.1} ms");
    println!("  CPU per cycle (whole process, getrusage): median {process:.1} ms");
}
