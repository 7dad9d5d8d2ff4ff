//! Loss and CPU of the native ICMP engine alone at scale, on loopback: `SCALE_TARGETS` distinct
//! 127.x.y.z targets (from 127.10.0.0/15; nothing leaves the host) × `SCALE_PINGS` pings
//! `SCALE_INTERVAL_MS` apart (defaults 10,000 × 3 × 1000 ms), one batch run on one engine as the
//! scheduler would make it. Prints one line: pings sent and lost, wall time, the process's CPU
//! time (getrusage: user + system, the receiver threads included) and the median RTT.
//!
//! Needs root (raw ICMP sockets). Under `cargo test` (no `--bench` argument) it measures 100
//! targets × 2 pings 20 ms apart, as a smoke test that asserts no loss, never times.
//!
//! usage: SCALE_TARGETS=10000 SCALE_PINGS=3 SCALE_INTERVAL_MS=1000 cargo bench --bench icmp_scale
//! (or `contrib/bench/icmp-scale.sh [targets [pings [interval_ms]]]`, a debug build)

use spoolmon::orders::order::ProbeSpec;
use spoolmon::probe::icmp::{IcmpEngine, IcmpOptions, SocketKind};
use spoolmon::probe::{Probe, RunPlan};
use std::net::IpAddr;
use std::time::{Duration, Instant};

/// (user, system) CPU seconds of this process.
fn cpu_seconds() -> (f64, f64) {
    let usage = nix::sys::resource::getrusage(nix::sys::resource::UsageWho::RUSAGE_SELF).expect("getrusage");
    let seconds = |t: nix::sys::time::TimeVal| t.tv_sec() as f64 + t.tv_usec() as f64 / 1e6;
    (seconds(usage.user_time()), seconds(usage.system_time()))
}

fn env_number(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(default)
}

fn main() {
    let bench = std::env::args().any(|arg| arg == "--bench");
    let (targets, pings, interval_ms) = if bench {
        (
            env_number("SCALE_TARGETS", 10_000) as u32,
            env_number("SCALE_PINGS", 3) as u32,
            env_number("SCALE_INTERVAL_MS", 1000),
        )
    } else {
        (100, 2, 20)
    };
    let interval = Duration::from_millis(interval_ms);
    let engine =
        IcmpEngine::open(&IcmpOptions::default()).expect("the ICMP engine needs raw sockets: run the bench as root");
    assert_eq!(engine.ipv4_kind(), Some(SocketKind::Raw), "run the bench as root");
    assert_eq!(engine.ipv6_kind(), Some(SocketKind::Raw), "run the bench as root");
    let specs: Vec<ProbeSpec> = (0..targets)
        .map(|i| ProbeSpec::fping_to(IpAddr::from([127, 10 + (i >> 16) as u8, (i >> 8) as u8, i as u8])))
        .collect();
    let refs: Vec<&ProbeSpec> = specs.iter().collect();
    let start = Instant::now();
    let plan = RunPlan {
        pings,
        interval,
        timeout: Duration::from_secs(2),
        start,
        deadline: start + interval * pings + Duration::from_secs(5),
    };
    let cpu_before = cpu_seconds();
    let started = Instant::now();
    let results: Vec<_> = engine
        .run(&refs, &plan)
        .into_iter()
        .map(|outcome| outcome.unwrap_or_else(|failure| panic!("not measured: {failure}")))
        .collect();
    let wall = started.elapsed().as_secs_f64();
    let cpu_after = cpu_seconds();
    assert_eq!(results.len(), specs.len());
    assert!(results.iter().all(|rtts| rtts.len() == pings as usize));
    let (user, system) = (cpu_after.0 - cpu_before.0, cpu_after.1 - cpu_before.1);
    let cpu = user + system;
    let lost = results.iter().flatten().filter(|rtt| rtt.is_none()).count();
    let mut rtts: Vec<f64> = results.iter().flatten().flatten().copied().collect();
    rtts.sort_by(f64::total_cmp);
    let median = rtts.get(rtts.len() / 2).copied().unwrap_or(f64::NAN);
    println!(
        "targets={targets} pings={pings} interval={interval:?} sent={} lost={lost} \
         wall={wall:.2}s cpu={cpu:.2}s (user {user:.2}s, system {system:.2}s; {:.1}% of one core) \
         median_rtt={:.1}us",
        targets * pings,
        100.0 * cpu / wall,
        median * 1e6
    );
    if !bench {
        assert_eq!(lost, 0, "loopback pings lost in the smoke run");
    }
}
