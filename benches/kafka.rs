//! The Kafka sink's transport into a real broker (`tansu` on loopback, memory storage, a topic
//! of 3 partitions): Graphite-sized lines (about 60 bytes of message, keyed by path) handed to
//! `KafkaTransport::send` in the delivery thread's batches of up to 4 MiB, each returning only
//! once every message has its delivery report with `acks=all` and the idempotent producer.
//! Prints lines per second of wall time and per CPU second of this process (all its threads:
//! the sending one and librdkafka's), the broker's CPU not counted, and the time from handing a
//! batch over to its last report (p50/p99).
//!
//! usage: cargo bench --bench kafka [-- LINES]   (default 2,000,000; under `cargo test` 20,000
//! as a smoke test). The broker: `$TANSU` or `~/.cache/spoolmon-test/tansu/bin/tansu` (`make
//! test-deps` builds it).

use spoolmon::sink::delivery::DeliveryStats;
use spoolmon::sink::kafka::transport::KafkaTransport;
use spoolmon::sink::kafka::KafkaOptions;
use spoolmon::sink::Transport;
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::{Duration, Instant};

fn cpu_seconds() -> f64 {
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) };
    let t = |tv: libc::timeval| tv.tv_sec as f64 + tv.tv_usec as f64 / 1e6;
    t(usage.ru_utime) + t(usage.ru_stime)
}

fn tansu() -> PathBuf {
    std::env::var_os("TANSU").map(PathBuf::from).unwrap_or_else(|| {
        PathBuf::from(std::env::var_os("HOME").unwrap_or_else(|| "/root".into()))
            .join(".cache/spoolmon-test/tansu/bin/tansu")
    })
}

fn main() {
    let bench = std::env::args().any(|a| a == "--bench");
    let lines: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(if bench { 2_000_000 } else { 20_000 });
    let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let url = format!("tcp://127.0.0.1:{port}");
    let mut broker = Command::new(tansu())
        .args(["broker", "--listener-url", &url, "--advertised-listener-url", &url])
        .args(["--storage-engine", "memory://tansu/"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("tansu (make test-deps builds it, or set TANSU)");
    let started = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(started.elapsed() < Duration::from_secs(30), "tansu did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    let created = Command::new(tansu())
        .args([
            "topic",
            "create",
            "spoolmon.haproxy",
            "--partitions",
            "3",
            "--broker",
            &url,
        ])
        .output()
        .unwrap();
    assert!(created.status.success(), "{}", String::from_utf8_lossy(&created.stderr));

    let options: KafkaOptions = yaml_serde::from_str(&format!("brokers: [\"127.0.0.1:{port}\"]")).unwrap();
    let stats = Arc::new(DeliveryStats::default());
    let mut transport =
        KafkaTransport::new(&options, "bench", stats.clone(), Arc::new(AtomicBool::new(false))).unwrap();
    // Outbox lines as the encoder writes them for `format: graphite`: kind, key, message.
    let mut batches: Vec<Vec<u8>> = vec![Vec::new()];
    for i in 0..lines {
        let path = format!("haproxy.backend.be-{:03}.server.srv-{:02}.scur", i % 200, i / 200 % 10);
        let line = format!("h\t{path}\tspoolmon.lb-01.{path} {} 1800000000\n", i % 1000);
        if batches.last().unwrap().len() + line.len() > transport.max_payload() {
            batches.push(Vec::new());
        }
        batches.last_mut().unwrap().extend_from_slice(line.as_bytes());
    }
    // One warm-up batch (connection, producer id, metadata).
    transport.send(b"h\twarm\tspoolmon.warm 1 1800000000\n").unwrap();
    let (cpu0, wall0) = (cpu_seconds(), Instant::now());
    let mut latencies: Vec<f64> = Vec::new();
    for batch in &batches {
        let t = Instant::now();
        transport.send(batch).unwrap();
        latencies.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    let (cpu, wall) = (cpu_seconds() - cpu0, wall0.elapsed().as_secs_f64());
    latencies.sort_by(f64::total_cmp);
    let at = |q: f64| latencies[((latencies.len() as f64 * q) as usize).min(latencies.len() - 1)];
    println!(
        "{lines} lines in {} batches: {:.0} lines/s wall, {:.0} lines per CPU second of the producer process ({cpu:.2} CPU-s in {wall:.2} s); batch to last report p50 {:.1} ms, p99 {:.1} ms",
        batches.len(),
        lines as f64 / wall,
        lines as f64 / cpu,
        at(0.5),
        at(0.99),
    );
    let _ = broker.kill();
    let _ = broker.wait();
}
