//! The outbox and its delivery thread end to end: a real TCP listener on 127.0.0.1 that is away
//! for a while, a `kill -9` in the middle of delivery and in the middle of a batch of several
//! records, and a disk that fills up (a file size limit in a child process).
//!
//! The child processes are this test binary run again with `child_process` as the only test and
//! `OUTBOX_CHILD` naming the role.

mod common;

use common::wait_for;
use spoolmon::sink::delivery::{Delivery, DeliveryStats};
use spoolmon::sink::outbox::{status, Outbox, OutboxError, OutboxLimits, Outcome};
use spoolmon::sink::{DeliveryError, RetryPolicy, Transport};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

/// Longest any wait in these tests may take before the test fails instead of hanging.
const PATIENCE: Duration = Duration::from_secs(60);

/// A plain TCP transport: connects on first use, reconnects after an error.
struct TcpTransport {
    to: SocketAddr,
    stream: Option<TcpStream>,
    max_payload: usize,
    /// Pause after each send, to keep a delivery running long enough to be killed.
    pace: Duration,
}

impl TcpTransport {
    fn new(to: SocketAddr, max_payload: usize) -> TcpTransport {
        TcpTransport {
            to,
            stream: None,
            max_payload,
            pace: Duration::ZERO,
        }
    }

    fn write(&mut self, payload: &[u8]) -> std::io::Result<()> {
        if self.stream.is_none() {
            self.stream = Some(TcpStream::connect_timeout(&self.to, Duration::from_secs(5))?);
        }
        self.stream.as_mut().expect("connected").write_all(payload)
    }
}

impl Transport for TcpTransport {
    fn send(&mut self, payload: &[u8]) -> Result<(), DeliveryError> {
        let written = self.write(payload);
        std::thread::sleep(self.pace);
        written.map_err(|e| {
            self.stream = None;
            DeliveryError::Transient(e.to_string())
        })
    }
    fn max_payload(&self) -> usize {
        self.max_payload
    }
    fn describe(&self) -> String {
        format!("tcp://{}", self.to)
    }
}

/// The bytes one connection has sent so far.
type Received = Arc<Mutex<Vec<u8>>>;

/// Accepts connections and keeps what each one sent, in the order they were accepted.
#[derive(Clone, Default)]
struct Collector {
    connections: Arc<Mutex<Vec<Received>>>,
}

impl Collector {
    fn start(listener: TcpListener) -> Collector {
        let collector = Collector::default();
        let connections = Arc::clone(&collector.connections);
        std::thread::spawn(move || {
            for mut stream in listener.incoming().flatten() {
                let received = Arc::new(Mutex::new(Vec::new()));
                connections.lock().unwrap().push(Arc::clone(&received));
                std::thread::spawn(move || {
                    let mut chunk = vec![0u8; 1 << 16];
                    while let Ok(n @ 1..) = stream.read(&mut chunk) {
                        received.lock().unwrap().extend_from_slice(&chunk[..n]);
                    }
                });
            }
        });
        collector
    }

    /// Complete lines received on each connection (a line cut by a dying sender is left out).
    fn connections(&self) -> Vec<Vec<u8>> {
        let connections = self.connections.lock().unwrap();
        connections
            .iter()
            .map(|c| {
                let bytes = c.lock().unwrap();
                let complete = bytes.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
                bytes[..complete].to_vec()
            })
            .collect()
    }

    fn lines(&self) -> usize {
        self.connections().iter().flatten().filter(|&&b| b == b'\n').count()
    }

    /// Waits until at least `lines` lines arrived; panics after [`PATIENCE`].
    fn wait_for_lines(&self, lines: usize) {
        wait_for("lines to arrive", PATIENCE, None, || self.lines() >= lines);
    }
}

/// Lines of record `record`: `<prefix>.<record>.<i> <i> 1700000000`.
fn record(prefix: &str, record: u32, lines: u32) -> Vec<u8> {
    let mut out = Vec::new();
    for i in 0..lines {
        writeln!(out, "{prefix}.{record:05}.{i:03} {i} 1700000000").unwrap();
    }
    out
}

fn fast_retry() -> RetryPolicy {
    RetryPolicy {
        retries: 2,
        interval: Duration::from_millis(5),
        backoff: 2.0,
        delay: Duration::from_millis(20),
    }
}

/// A running delivery thread and what stops it.
struct Running {
    handle: JoinHandle<()>,
    shutdown: Arc<AtomicBool>,
    outbox: Arc<Outbox>,
    stats: Arc<DeliveryStats>,
}

fn start_delivery(outbox: &Arc<Outbox>, transport: TcpTransport) -> Running {
    let shutdown = Arc::new(AtomicBool::new(false));
    let delivery = Delivery::new(
        "graphite",
        outbox,
        Box::new(transport),
        fast_retry(),
        Arc::clone(&shutdown),
    );
    let stats = delivery.stats();
    Running {
        handle: delivery.spawn().unwrap(),
        shutdown,
        outbox: Arc::clone(outbox),
        stats,
    }
}

impl Running {
    fn stop(self) {
        self.shutdown.store(true, Ordering::Relaxed);
        self.outbox.wake_all();
        let (done, finished) = mpsc::channel();
        let handle = self.handle;
        std::thread::spawn(move || done.send(handle.join().is_ok()));
        assert_eq!(finished.recv_timeout(PATIENCE), Ok(true), "delivery thread stopped");
    }
}

#[test]
fn lines_queued_while_the_remote_refuses_connections_all_arrive_oldest_first() {
    let dir = tempfile::tempdir().unwrap();
    let outbox = Arc::new(Outbox::open(dir.path(), OutboxLimits::default()).unwrap());
    let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    // The listener above is closed again: connections to `port` are refused for now.
    let mut expected = Vec::new();
    for r in 0..20 {
        expected.extend(record("outage", r, 50));
        outbox.append(&record("outage", r, 50), 50).unwrap();
    }
    let running = start_delivery(&outbox, TcpTransport::new(port, 4096));
    wait_for("refused connections", PATIENCE, None, || {
        running.stats.failed_sends.load(Ordering::Relaxed) >= 5
    });
    for r in 20..40 {
        expected.extend(record("outage", r, 50));
        outbox.append(&record("outage", r, 50), 50).unwrap();
    }
    let collector = Collector::start(TcpListener::bind(port).expect("the port is free again"));
    collector.wait_for_lines(40 * 50);
    running.stop();
    assert_eq!(
        collector.connections().concat(),
        expected,
        "everything, once, oldest first"
    );
    let after = status(dir.path()).unwrap();
    assert_eq!((after.lines, after.delivered_lines), (0, 2000));
}

const CRASH_RECORDS: u32 = 300;
const CRASH_LINES: u32 = 200;
const CRASH_PAYLOAD: usize = 8192;
/// The crash child's acknowledgement cadence: a kill repeats at most this and the batch in flight.
const CRASH_ACK_BYTES: u64 = 4 * CRASH_PAYLOAD as u64;

#[test]
fn kill_9_during_delivery_loses_nothing_and_repeats_at_most_the_unwritten_acknowledgements_and_the_batch_in_flight() {
    let dir = tempfile::tempdir().unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap();
    let collector = Collector::start(listener);
    let mut child = child_command("crash", dir.path())
        .env("OUTBOX_PORT", port.to_string())
        .spawn()
        .unwrap();
    let total = (CRASH_RECORDS * CRASH_LINES) as usize;
    collector.wait_for_lines(total / 4);
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    let before_restart = collector.lines();
    assert!(
        before_restart < total,
        "the child was killed before it delivered everything"
    );

    let outbox = Arc::new(Outbox::open(dir.path(), OutboxLimits::default()).unwrap());
    let running = start_delivery(&outbox, TcpTransport::new(port, CRASH_PAYLOAD));
    wait_for("the backlog to be delivered", PATIENCE, None, || {
        status(dir.path()).unwrap().lines == 0
    });
    running.stop();

    let expected: Vec<u8> = (0..CRASH_RECORDS)
        .flat_map(|r| record("crash", r, CRASH_LINES))
        .collect();
    let connections = collector.connections();
    assert_eq!(connections.len(), 2, "one connection before the kill, one after");
    let (first, second) = (&connections[0], &connections[1]);
    assert!(expected.starts_with(first), "before the kill: a prefix, in order");
    assert!(expected.ends_with(second), "after the restart: the rest, in order");
    let repeated = (first.len() + second.len()).saturating_sub(expected.len());
    assert_eq!(first.len() + second.len() - repeated, expected.len(), "nothing missing");
    assert!(
        repeated <= CRASH_ACK_BYTES as usize + CRASH_PAYLOAD,
        "{repeated} bytes sent twice: more than the acknowledgement cadence and the batch in flight"
    );
}

#[test]
fn disk_full_mid_append_leaves_earlier_records_intact_and_appends_work_afterwards() {
    let dir = tempfile::tempdir().unwrap();
    let output = child_command("disk-full", dir.path()).output().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "child failed: {stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let report = "appended before the limit: ";
    let appended: u32 = stdout
        .lines()
        .find_map(|l| l.split_once(report).map(|(_, n)| n))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("child did not report: {stdout}"));

    let delivered = reopen_and_deliver_all(dir.path());
    let mut expected: Vec<u8> = (0..appended).flat_map(|r| record("full", r, 100)).collect();
    expected.extend(record("after", 0, 100));
    assert_eq!(delivered, expected);
}

const BATCH_PIECES: u32 = 4;
const PIECE_LINES: u32 = 50;

/// The lines of piece `piece` of batch `batch` of child `child`.
fn piece(child: u32, batch: u32, piece: u32) -> Vec<u8> {
    record(&format!("k{child:02}.b{batch:05}"), piece, PIECE_LINES)
}

#[test]
fn kill_9_in_the_middle_of_a_batch_of_several_records_leaves_only_whole_batches() {
    let dir = tempfile::tempdir().unwrap();
    let batch_records = u64::from(BATCH_PIECES) + 1;
    let mut cut_once = false;
    let mut children = 0;
    // Each child appends batches until killed; it pauses between the records of a batch, so
    // most kills land inside one. Killed until one did (recovery then counts what it cut).
    while !cut_once && children < 20 {
        let records_before = status(dir.path()).unwrap().records;
        let mut child = child_command("batches", dir.path())
            .env("OUTBOX_CHILD_NUMBER", children.to_string())
            .spawn()
            .unwrap();
        wait_for("two more batches", PATIENCE, None, || {
            status(dir.path()).unwrap().records >= records_before + 2 * batch_records
        });
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        children += 1;
        drop(Outbox::open(dir.path(), OutboxLimits::default()).unwrap());
        cut_once = status(dir.path()).unwrap().dropped_records > 0;
    }
    assert!(cut_once, "none of {children} kills landed inside a batch");
    let counted = status(dir.path()).unwrap();
    assert_eq!(
        counted.records % batch_records,
        0,
        "only whole batches are left: {counted:?}"
    );

    let delivered = reopen_and_deliver_all(dir.path());
    // Every child's batches from its first, each whole, in order, none twice.
    let mut expected = Vec::new();
    let mut rest = delivered.as_slice();
    for child in 0..children {
        let mut batch = 0;
        loop {
            let whole: Vec<u8> = (0..=BATCH_PIECES).flat_map(|p| piece(child, batch, p)).collect();
            if !rest.starts_with(&whole) {
                break;
            }
            rest = &rest[whole.len()..];
            expected.extend(whole);
            batch += 1;
        }
        assert!(batch >= 2, "child {child} left {batch} whole batches");
    }
    assert!(
        rest.is_empty(),
        "only whole batches: {} bytes left, starting {:?}",
        rest.len(),
        String::from_utf8_lossy(&rest[..rest.len().min(80)])
    );
    assert_eq!(delivered, expected);
}

/// Opens the outbox in `dir` (recovering it) and reads and acknowledges everything in it.
fn reopen_and_deliver_all(dir: &Path) -> Vec<u8> {
    let outbox = Arc::new(Outbox::open(dir, OutboxLimits::default()).unwrap());
    let mut reader = outbox.reader();
    let mut delivered = Vec::new();
    while let Some(batch) = reader.next_batch(1 << 20).unwrap() {
        delivered.extend_from_slice(batch.payload());
        outbox.acknowledge(batch, Outcome::Delivered).unwrap();
    }
    delivered
}

/// Bytes in the segment files of the outbox in `dir`.
fn segment_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "seg"))
        .map(|p| std::fs::metadata(p).unwrap().len())
        .sum()
}

fn child_command(role: &str, dir: &Path) -> Command {
    let mut command = Command::new(std::env::current_exe().unwrap());
    command
        .args([
            "child_process",
            "--exact",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("OUTBOX_CHILD", role)
        .env("OUTBOX_DIR", dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    command
}

/// Not a test: the body of the child processes of the tests above (does nothing without
/// `OUTBOX_CHILD`).
#[test]
#[ignore = "run as a child process by the crash and disk-full tests"]
fn child_process() {
    let Ok(role) = std::env::var("OUTBOX_CHILD") else {
        return;
    };
    let dir = std::path::PathBuf::from(std::env::var("OUTBOX_DIR").unwrap());
    match role.as_str() {
        "crash" => append_then_deliver_until_killed(&dir),
        "disk-full" => append_until_the_file_size_limit(&dir),
        "batches" => append_batches_until_killed(&dir),
        other => panic!("unknown child role {other}"),
    }
}

/// Queues the whole backlog, then delivers it slowly (small batches, paced) until killed.
fn append_then_deliver_until_killed(dir: &Path) {
    let port: SocketAddr = std::env::var("OUTBOX_PORT").unwrap().parse().unwrap();
    let limits = OutboxLimits {
        ack_bytes: CRASH_ACK_BYTES,
        ..OutboxLimits::default()
    };
    let outbox = Arc::new(Outbox::open(dir, limits).unwrap());
    for r in 0..CRASH_RECORDS {
        outbox.append(&record("crash", r, CRASH_LINES), CRASH_LINES).unwrap();
    }
    let mut transport = TcpTransport::new(port, CRASH_PAYLOAD);
    transport.pace = Duration::from_millis(2);
    let running = start_delivery(&outbox, transport);
    std::thread::sleep(PATIENCE);
    running.stop();
}

/// Appends batches of several records until killed, pausing between records.
fn append_batches_until_killed(dir: &Path) {
    let child: u32 = std::env::var("OUTBOX_CHILD_NUMBER").unwrap().parse().unwrap();
    let outbox = Outbox::open(dir, OutboxLimits::default()).unwrap();
    for batch in 0.. {
        let mut appending = outbox.begin();
        for p in 0..BATCH_PIECES {
            appending.push(&piece(child, batch, p), PIECE_LINES).unwrap();
            std::thread::sleep(Duration::from_millis(3));
        }
        appending
            .finish(&piece(child, batch, BATCH_PIECES), PIECE_LINES)
            .unwrap();
    }
}

/// Appends until a 64 KiB file size limit stops an append part-way (EFBIG), checks that the
/// failure changed nothing, lets a batch fail at its second record (and checks it left nothing),
/// lifts the limit and appends again.
fn append_until_the_file_size_limit(dir: &Path) {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    use nix::sys::signal::{signal, SigHandler, Signal};
    // SAFETY: ignoring a signal installs no handler code.
    unsafe { signal(Signal::SIGXFSZ, SigHandler::SigIgn) }.unwrap();
    let (_, hard) = getrlimit(Resource::RLIMIT_FSIZE).unwrap();
    setrlimit(Resource::RLIMIT_FSIZE, 64 << 10, hard).unwrap();
    let outbox = Outbox::open(dir, OutboxLimits::default()).unwrap();
    let mut appended = 0;
    let error = loop {
        match outbox.append(&record("full", appended, 100), 100) {
            Ok(()) => appended += 1,
            Err(e) => break e,
        }
    };
    let OutboxError::Io { source, .. } = &error else {
        panic!("unexpected error {error}");
    };
    assert_eq!(source.raw_os_error(), Some(libc::EFBIG), "{error}");
    assert!(appended > 0);
    let record_len = 20 + record("full", 0, 100).len() as u64;
    assert_eq!(
        segment_bytes(dir),
        8 + u64::from(appended) * record_len,
        "the failed append was cut back to the last good record"
    );
    assert!(
        outbox.append(&record("full", appended, 100), 100).is_err(),
        "still full"
    );
    // Room for one and a half records: a batch's second record fails, and its first goes too.
    let full = segment_bytes(dir);
    setrlimit(Resource::RLIMIT_FSIZE, full + record_len * 3 / 2, hard).unwrap();
    let mut batch = outbox.begin();
    batch.push(&record("torn", 0, 100), 100).unwrap();
    let error = batch.push(&record("torn", 1, 100), 100).unwrap_err();
    assert!(
        matches!(&error, OutboxError::Io { source, .. } if source.raw_os_error() == Some(libc::EFBIG)),
        "{error}"
    );
    drop(batch);
    assert_eq!(segment_bytes(dir), full, "the failed batch was cut back whole");
    setrlimit(Resource::RLIMIT_FSIZE, hard, hard).unwrap();
    outbox.append(&record("after", 0, 100), 100).unwrap();
    println!("appended before the limit: {appended}");
}
