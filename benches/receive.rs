//! How many ping results per second per core the receiver takes into its spool (issue 13's
//! target: at least 500,000): the receiver of `spoolmon::receive` on a loopback port, fed by
//! `RECV_CONNECTIONS` (default 2) sender threads, each POSTing `RECV_REQUESTS` (default 100)
//! requests of `RECV_FRAMES` (default 10) frames of `RECV_RESULTS` (default 1,000) ping results
//! (3 RTTs each, ~100 KB a frame), stored durably (staged, two `syncfs`, high-water marks,
//! renamed into `incoming/`) before the answer; consecutive frames are merged into snapshots
//! of at most `RECV_MERGE` results (default 4,000, processing's default `max-results`;
//! `RECV_MERGE=1` stores every frame as a snapshot of its own, as before merging). No processing runs:
//! this is the receiving side alone. CPU is the receiver's threads only (`receive` and tokio's
//! blocking pool, from `/proc/self/task/*/stat`), not the senders'; the machine column is every
//! CPU's busy time minus the idle machine's (the senders, loopback TCP and the kernel's
//! writeback included), so it is an upper bound of what receiving costs.
//!
//! usage: cargo bench --bench receive   (RECV_DIR: where the base directory goes, default /tmp)
//! Under `cargo test` (no `--bench` argument) it sends 2 requests of 2 frames, as a smoke test.

#[path = "floor/machine.rs"]
mod machine;

use spoolmon::receive::access::{Access, Grant};
use spoolmon::receive::pattern::SimplePattern;
use spoolmon::receive::server::{Limits, ReceiveStats, Receiver, PATH};
use spoolmon::shared::measurement::{OrderId, OrderResult};
use spoolmon::spool::identity::MachineGuid;
use spoolmon::spool::ship::{self, ShipHeader};
use spoolmon::spool::snapshot::{encode_ping, SnapshotName, PING_FILE};
use spoolmon::spool::BaseDir;
use std::collections::HashMap;
use std::io::{Read, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const KEY: &str = "11111111-2222-3333-4444-555555555555";

fn env_number(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// CPU seconds (user + system) of this process's threads whose name is not a sender's or main's.
fn receiver_cpu() -> f64 {
    let ticks = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .unwrap_or(100) as f64;
    let mut total = 0.0;
    for task in std::fs::read_dir("/proc/self/task").unwrap().flatten() {
        let comm = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default();
        let comm = comm.trim();
        if comm.starts_with("sender") || comm == "receive-bench" {
            continue;
        }
        let stat = std::fs::read_to_string(task.path().join("stat")).unwrap_or_default();
        // Fields after the parenthesised name: state is field 3; utime 14, stime 15.
        let after = stat.rsplit_once(')').map(|(_, rest)| rest).unwrap_or("");
        let fields: Vec<&str> = after.split_whitespace().collect();
        let utime: f64 = fields.get(11).and_then(|v| v.parse().ok()).unwrap_or(0.0);
        let stime: f64 = fields.get(12).and_then(|v| v.parse().ok()).unwrap_or(0.0);
        total += (utime + stime) / ticks;
    }
    total
}

fn body(origin: MachineGuid, stream: uuid::Uuid, first_seq: u64, frames: u64, results: usize, t0: i64) -> Vec<u8> {
    let mut out = Vec::new();
    for f in 0..frames {
        let seq = first_seq + f;
        let batch: Vec<OrderResult> = (0..results)
            .map(|o| {
                OrderResult::builder(OrderId::new(format!("bench/o{o}")).unwrap(), t0)
                    .updated(t0 + 3)
                    .step(20)
                    .rtts([Some(0.000_041), Some(0.000_043), Some(0.000_039)])
                    .build()
            })
            .collect();
        let header = ShipHeader {
            origin,
            origin_node: "bench-child".into(),
            chain: vec![origin],
            stream,
            sequence: seq,
            snapshot: SnapshotName::new(t0, "ping", seq),
        };
        ship::encode(&header, &[(PING_FILE, &encode_ping("bench", &batch))], &mut out);
    }
    out
}

fn post(port: u16, body: &[u8]) {
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    let head = format!(
        "POST {PATH} HTTP/1.1\r\nHost: b\r\nConnection: close\r\nAuthorization: Bearer {KEY}\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).unwrap();
    stream.write_all(body).unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(
        !answer.contains("\"repeat\"") && !answer.contains("\"refused\""),
        "{answer}"
    );
}

fn main() {
    let bench = std::env::args().any(|a| a == "--bench");
    let connections = if bench { env_number("RECV_CONNECTIONS", 2) } else { 1 };
    let requests = if bench { env_number("RECV_REQUESTS", 100) } else { 2 };
    let frames = if bench { env_number("RECV_FRAMES", 10) } else { 2 };
    let results = if bench { env_number("RECV_RESULTS", 1000) } else { 10 } as usize;
    let _ = nix::sys::prctl::set_name(c"receive-bench");
    let parent = std::env::var_os("RECV_DIR").unwrap_or_else(|| "/tmp".into());
    let tmp = tempfile::tempdir_in(parent).unwrap();
    let base = BaseDir::new(tmp.path());
    base.create_all().unwrap();
    let access = Access {
        keys: HashMap::from([(
            KEY.parse().unwrap(),
            Grant {
                enabled: true,
                allow_from: SimplePattern::any(),
            },
        )]),
        machines: HashMap::new(),
    };
    let limits = Limits {
        max_request_bytes: 256 << 20,
        max_connections: 64,
        accept_every: Duration::ZERO,
        timeout: Duration::from_secs(60),
        queue_size: usize::MAX,
        min_free_bytes: 0,
        merge_results: env_number("RECV_MERGE", 4000) as usize,
    };
    let stats = Arc::new(ReceiveStats::default());
    let receiver = Receiver::bind(
        &base,
        &["127.0.0.1:0".parse().unwrap()],
        access,
        MachineGuid::random(),
        limits,
        stats.clone(),
    )
    .unwrap();
    let port = receiver.local_addrs()[0].port();
    let stop = Arc::new(AtomicBool::new(false));
    let thread = receiver.spawn(stop.clone()).unwrap();
    let now = spoolmon::shared::clock::unix_now();
    let t0 = now - now % 20;
    // Bodies are made before the clock starts: the senders' encoding is not the receiver's.
    let bodies: Vec<Vec<Vec<u8>>> = (0..connections)
        .map(|_| {
            let (origin, stream) = (MachineGuid::random(), uuid::Uuid::new_v4());
            (0..requests)
                .map(|r| body(origin, stream, 1 + r * frames, frames, results, t0))
                .collect()
        })
        .collect();
    let bytes: usize = bodies.iter().flatten().map(Vec::len).sum();
    let idle = machine::Machine::calibrate(if bench { 2 } else { 0 });
    let span = machine::Span::start();
    let (cpu0, wall0) = (receiver_cpu(), Instant::now());
    let senders: Vec<_> = bodies
        .into_iter()
        .enumerate()
        .map(|(i, bodies)| {
            std::thread::Builder::new()
                .name(format!("sender-{i}"))
                .spawn(move || bodies.iter().for_each(|b| post(port, b)))
                .unwrap()
        })
        .collect();
    for sender in senders {
        sender.join().unwrap();
    }
    let (cpu, wall) = (receiver_cpu() - cpu0, wall0.elapsed().as_secs_f64());
    let machine = idle.beyond_idle(span);
    stop.store(true, Ordering::Relaxed);
    thread.join().unwrap();
    let total = connections * requests * frames * results as u64;
    assert_eq!(
        stats.frames_stored.load(Ordering::Relaxed),
        connections * requests * frames
    );
    println!(
        "{total} results in {} frames ({:.1} MB) over {connections} connection(s): wall {wall:.2} s, receiver CPU {cpu:.2} s",
        connections * requests * frames,
        bytes as f64 / 1e6
    );
    println!(
        "results per second: {:.0} (wall), {:.0} per core (receiver CPU); {:.1} us CPU per frame of {results}; whole machine {machine:.2} CPU-s, {:.0} results per machine CPU-second (senders included)",
        total as f64 / wall,
        total as f64 / cpu.max(1e-9),
        cpu * 1e6 / (connections * requests * frames) as f64,
        total as f64 / machine.max(1e-9)
    );
}
