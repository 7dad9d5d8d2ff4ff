//! Throughput of the outbox: Graphite-like lines (60 bytes) appended in batches with one
//! `fdatasync` per append, delivered by the Graphite sink's transport through a TCP socket on
//! 127.0.0.1 into a reader thread that discards them. Three runs:
//! - live: the delivery thread runs while lines are appended (append rate and end-to-end rate);
//! - outage: appends with nothing delivered (the backlog of an outage);
//! - replay: the outbox of the outage reopened (recovery included) and its backlog delivered.
//!
//! CPU is the whole process's (getrusage: user + system, all threads, the discarding reader too).
//! Under `cargo test` (no `--bench` argument) it runs 20,000 lines only, as a smoke test.
//!
//! usage: cargo bench --bench outbox -- [lines] [lines-per-append] [dir]
//! (defaults 5,000,000, 5,000, a new temporary directory)

use spoolmon::sink::delivery::Delivery;
use spoolmon::sink::graphite::{GraphiteOptions, GraphiteTransport, MAX_PAYLOAD};
use spoolmon::sink::outbox::{Outbox, OutboxLimits};
use spoolmon::sink::RetryPolicy;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

struct Settings {
    lines: u64,
    per_append: u32,
    dir: PathBuf,
}

fn cpu_seconds() -> f64 {
    let usage = nix::sys::resource::getrusage(nix::sys::resource::UsageWho::RUSAGE_SELF).unwrap();
    let secs = |t: nix::sys::time::TimeVal| t.tv_sec() as f64 + t.tv_usec() as f64 / 1e6;
    secs(usage.user_time()) + secs(usage.system_time())
}

/// One append's worth of lines, each exactly 60 bytes.
fn batch_payload(lines: u32) -> Vec<u8> {
    let mut out = Vec::with_capacity(lines as usize * 60);
    for i in 0..lines {
        let start = out.len();
        write!(
            out,
            "servers.web{:04}.haproxy.frontend.www.scur {:>6} 1700000000",
            i % 1000,
            i
        )
        .unwrap();
        out.resize(start + 59, b' ');
        out.push(b'\n');
    }
    out
}

/// Accepts connections on 127.0.0.1 and throws away what they send, counting bytes.
fn discarding_listener() -> (SocketAddr, Arc<AtomicU64>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap();
    let received = Arc::new(AtomicU64::new(0));
    let counter = Arc::clone(&received);
    std::thread::spawn(move || {
        for mut stream in listener.incoming().flatten() {
            let counter = Arc::clone(&counter);
            std::thread::spawn(move || {
                let mut buffer = vec![0u8; 1 << 18];
                while let Ok(n @ 1..) = stream.read(&mut buffer) {
                    counter.fetch_add(n as u64, Ordering::Relaxed);
                }
            });
        }
    });
    (address, received)
}

/// A delivery thread from `outbox` to `to`; returns its shutdown flag and handle.
fn deliver(outbox: &Arc<Outbox>, to: SocketAddr) -> (Arc<AtomicBool>, std::thread::JoinHandle<()>) {
    let options = GraphiteOptions {
        server: to.ip().to_string(),
        port: to.port(),
        ..GraphiteOptions::default()
    };
    let transport = GraphiteTransport::new(&options);
    let shutdown = Arc::new(AtomicBool::new(false));
    let delivery = Delivery::new(
        "bench",
        outbox,
        Box::new(transport),
        RetryPolicy::default(),
        Arc::clone(&shutdown),
    );
    (shutdown, delivery.spawn().unwrap())
}

fn append_all(outbox: &Outbox, settings: &Settings, payload: &[u8]) {
    let appends = settings.lines / u64::from(settings.per_append);
    for _ in 0..appends {
        outbox.append(payload, settings.per_append).unwrap();
    }
}

fn wait_for_bytes(received: &AtomicU64, total: u64) {
    while received.load(Ordering::Relaxed) < total {
        std::thread::sleep(Duration::from_millis(1));
    }
}

fn report(what: &str, lines: u64, wall: Duration, cpu: f64) {
    println!(
        "{what:<44} {:>6.2} M lines/s  {:>7.2} s wall  {:>6.2} s CPU  {:>5.2} us CPU/line",
        lines as f64 / wall.as_secs_f64() / 1e6,
        wall.as_secs_f64(),
        cpu,
        cpu * 1e6 / lines as f64
    );
}

fn stop(outbox: &Outbox, (shutdown, handle): (Arc<AtomicBool>, std::thread::JoinHandle<()>)) {
    shutdown.store(true, Ordering::Relaxed);
    outbox.wake_all();
    handle.join().unwrap();
}

fn limits() -> OutboxLimits {
    OutboxLimits {
        max_bytes: 64 << 30,
        ..OutboxLimits::default()
    }
}

/// Appends while the delivery thread runs: append rate, then end-to-end rate.
fn live(settings: &Settings, payload: &[u8], to: SocketAddr, received: &AtomicU64) {
    let outbox = Arc::new(Outbox::open(&settings.dir.join("live"), limits()).unwrap());
    let delivery = deliver(&outbox, to);
    let total = received.load(Ordering::Relaxed) + settings.lines * 60;
    let (cpu, wall) = (cpu_seconds(), Instant::now());
    append_all(&outbox, settings, payload);
    report(
        "live: appended (delivery running)",
        settings.lines,
        wall.elapsed(),
        cpu_seconds() - cpu,
    );
    wait_for_bytes(received, total);
    report(
        "live: delivered, end to end",
        settings.lines,
        wall.elapsed(),
        cpu_seconds() - cpu,
    );
    stop(&outbox, delivery);
}

/// Appends with nothing delivered, then reopens and delivers the backlog.
fn outage_then_replay(settings: &Settings, payload: &[u8], to: SocketAddr, received: &AtomicU64) {
    let dir: &Path = &settings.dir.join("outage");
    let outbox = Outbox::open(dir, limits()).unwrap();
    let (cpu, wall) = (cpu_seconds(), Instant::now());
    append_all(&outbox, settings, payload);
    report(
        "outage: appended (nothing delivered)",
        settings.lines,
        wall.elapsed(),
        cpu_seconds() - cpu,
    );
    drop(outbox);

    let total = received.load(Ordering::Relaxed) + settings.lines * 60;
    let (cpu, wall) = (cpu_seconds(), Instant::now());
    let outbox = Arc::new(Outbox::open(dir, limits()).unwrap());
    let opened = wall.elapsed();
    let delivery = deliver(&outbox, to);
    wait_for_bytes(received, total);
    report(
        "replay: reopened and delivered the backlog",
        settings.lines,
        wall.elapsed(),
        cpu_seconds() - cpu,
    );
    println!("  (reopening with recovery took {:.0} ms)", opened.as_secs_f64() * 1e3);
    stop(&outbox, delivery);
}

fn main() {
    // `cargo test --all-targets` runs this without `--bench`: then only a small smoke run.
    let benchmarking = std::env::args().any(|a| a == "--bench");
    let args: Vec<String> = std::env::args().skip(1).filter(|a| a != "--bench").collect();
    let number = |i: usize, default: u64| args.get(i).and_then(|a| a.parse().ok()).unwrap_or(default);
    let tmp = tempfile::tempdir().unwrap();
    let settings = Settings {
        lines: number(0, if benchmarking { 5_000_000 } else { 20_000 }),
        per_append: number(1, 5_000) as u32,
        dir: args.get(2).map(PathBuf::from).unwrap_or_else(|| tmp.path().to_owned()),
    };
    let payload = batch_payload(settings.per_append);
    println!(
        "{} lines of 60 bytes, {} lines per append (one fdatasync each), Graphite sends of up to {} bytes, in {}",
        settings.lines,
        settings.per_append,
        MAX_PAYLOAD,
        settings.dir.display()
    );
    let (to, received) = discarding_listener();
    live(&settings, &payload, to, &received);
    outage_then_replay(&settings, &payload, to, &received);
}
