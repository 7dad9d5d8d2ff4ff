//! The HAProxy pull collector against real HAProxy instances (UNIX and TCP stats sockets), and
//! against a small stats-socket server that produces the faults HAProxy cannot produce on
//! demand: each fault must publish nothing, leave nothing in `incoming.tmp/`, and name the
//! failing source.

mod common;

use common::servers::{Haproxy, HaproxySetup, PythonHttp};
use common::wait_for;
use spoolmon::collect::haproxy::{pull_cycle, run_pull, PullError, PullOptions, PullStats};
use spoolmon::spool::BaseDir;
use std::io::{Read, Write};
use std::net::TcpListener;
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

const INFO: &str = "Name: HAProxy\nVersion: 2.6.12\nProcess_num: 1\nPid: 4242\nUptime_sec: 10\n\n";
const STAT: &str = "# pxname,svname,scur,stot,status,\nfe,FRONTEND,0,7,OPEN,\nbe,srv,0,7,UP,\nbe,BACKEND,0,7,UP,\n\n";

/// What the test stats server does with a connection.
#[derive(Clone, Copy, Debug)]
enum Behaviour {
    Valid,
    /// Sends half of the reply, then closes.
    CloseHalfway,
    /// Sends half of the reply, then resets the connection (TCP only).
    ResetMidRead,
    /// Reads the command and never answers.
    Silent,
    Garbage,
    /// A `show stat` row with one column too few.
    WrongColumnCount,
    /// A reply of this many bytes (a CSV that never ends).
    Huge(usize),
    /// Closes the first n connections without a word, then answers properly.
    FailFirst(usize),
}

/// A stats socket served by a thread of the test, stopped when dropped.
struct FakeStats {
    url: String,
    /// Commands read so far (the progress marker of a peer that never answers).
    commands: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl FakeStats {
    fn unix(path: &Path, behaviour: Behaviour) -> FakeStats {
        let listener = UnixListener::bind(path).unwrap();
        listener.set_nonblocking(true).unwrap();
        let url = format!("unix://{}", path.display());
        FakeStats::serve(url, behaviour, move || {
            listener.accept().map(|(s, _)| Connection::Unix(s))
        })
    }

    fn tcp(behaviour: Behaviour) -> FakeStats {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let url = format!("tcp://127.0.0.1:{}", listener.local_addr().unwrap().port());
        FakeStats::serve(url, behaviour, move || {
            listener.accept().map(|(s, _)| Connection::Tcp(s))
        })
    }

    fn serve(
        url: String,
        behaviour: Behaviour,
        mut accept: impl FnMut() -> std::io::Result<Connection> + Send + 'static,
    ) -> FakeStats {
        let stop = Arc::new(AtomicBool::new(false));
        let commands = Arc::new(AtomicUsize::new(0));
        let (stopped, read) = (Arc::clone(&stop), Arc::clone(&commands));
        let thread = std::thread::spawn(move || {
            let accepted = AtomicUsize::new(0);
            while !stopped.load(Ordering::Relaxed) {
                match accept() {
                    Ok(connection) => {
                        let number = accepted.fetch_add(1, Ordering::Relaxed);
                        let (stopped, read) = (Arc::clone(&stopped), Arc::clone(&read));
                        std::thread::spawn(move || answer(connection, behaviour, number, &read, &stopped));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        FakeStats {
            url,
            commands,
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for FakeStats {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

enum Connection {
    Unix(std::os::unix::net::UnixStream),
    Tcp(std::net::TcpStream),
}

impl Connection {
    fn stream(&mut self) -> &mut dyn ReadWrite {
        match self {
            Connection::Unix(s) => s,
            Connection::Tcp(s) => s,
        }
    }
}

trait ReadWrite: Read + Write {}
impl<T: Read + Write> ReadWrite for T {}

/// Serves one connection: reads the command line, then behaves.
fn answer(mut connection: Connection, behaviour: Behaviour, number: usize, commands: &AtomicUsize, stop: &AtomicBool) {
    match &connection {
        Connection::Unix(s) => s.set_nonblocking(false).unwrap(),
        Connection::Tcp(s) => s.set_nonblocking(false).unwrap(),
    }
    let stream = connection.stream();
    let mut command = Vec::new();
    let mut byte = [0u8; 1];
    while stream.read(&mut byte).is_ok_and(|n| n == 1) && byte[0] != b'\n' {
        command.push(byte[0]);
    }
    commands.fetch_add(1, Ordering::SeqCst);
    let valid = if command == b"show info" { INFO } else { STAT };
    let half = &valid.as_bytes()[..valid.len() / 2];
    let _ = match behaviour {
        Behaviour::Valid => stream.write_all(valid.as_bytes()),
        Behaviour::FailFirst(n) if number < n => Ok(()),
        Behaviour::FailFirst(_) => stream.write_all(valid.as_bytes()),
        Behaviour::CloseHalfway => stream.write_all(half),
        Behaviour::ResetMidRead => reset_after(&connection, half),
        Behaviour::Silent => {
            while !stop.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(20));
            }
            Ok(())
        }
        Behaviour::Garbage => stream.write_all(b"\x00\xff\xfegarbage\n\n"),
        Behaviour::WrongColumnCount if command == b"show stat" => {
            stream.write_all(STAT.replace("be,srv,0,7,UP,", "be,srv,0,7,UP").as_bytes())
        }
        Behaviour::WrongColumnCount => stream.write_all(valid.as_bytes()),
        Behaviour::Huge(size) => {
            let row = "be,srv,0,7,UP,\n".repeat(size / 15 + 1);
            stream.write_all(format!("# pxname,svname,scur,stot,status,\n{row}").as_bytes())
        }
    };
}

/// Writes `data`, waits for the client to read it, then closes with a RST (SO_LINGER 0).
fn reset_after(connection: &Connection, data: &[u8]) -> std::io::Result<()> {
    let Connection::Tcp(stream) = connection else {
        panic!("a reset needs TCP");
    };
    (&*stream).write_all(data)?;
    std::thread::sleep(Duration::from_millis(100));
    socket2::SockRef::from(stream).set_linger(Some(Duration::ZERO))
}

fn new_base() -> (tempfile::TempDir, BaseDir) {
    let dir = tempfile::tempdir().unwrap();
    let base = BaseDir::new(dir.path());
    base.create_all().unwrap();
    (dir, base)
}

/// Names in a directory, sorted.
fn names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

fn fast_options(servers: &[&str]) -> PullOptions {
    PullOptions {
        servers: servers.iter().map(|s| s.to_string()).collect(),
        retries: 0,
        timeout: 0.5,
        interval: 0.05,
        pull_timeout: 3.0,
        min_free_space_mb: 0,
        ..PullOptions::default()
    }
}

/// Column `name` of the row `pxname,svname` in a `show stat` reply.
fn stat_value(stat: &str, pxname: &str, svname: &str, name: &str) -> u64 {
    let mut lines = stat.lines();
    let header: Vec<&str> = lines.next().unwrap().trim_start_matches("# ").split(',').collect();
    let column = header.iter().position(|h| *h == name).unwrap();
    let row = lines
        .map(|l| l.split(',').collect::<Vec<_>>())
        .find(|r| r[0] == pxname && r[1] == svname)
        .unwrap_or_else(|| panic!("no row {pxname},{svname}"));
    row[column].parse().unwrap_or(0)
}

/// Checks by hand what haproxystats-process needs of a `show stat` file.
fn assert_complete_stat(path: &Path) {
    let text = std::fs::read_to_string(path).unwrap();
    assert!(text.starts_with("# pxname,svname,"), "{}", path.display());
    assert!(
        text.ends_with(",\n\n"),
        "{} does not end with HAProxy's empty line",
        path.display()
    );
    let lines: Vec<&str> = text.trim_end().lines().collect();
    let columns = lines[0].matches(',').count();
    assert!(columns > 80, "{columns} columns in {}", path.display());
    for line in &lines {
        assert_eq!(line.matches(',').count(), columns, "{line}");
    }
}

fn unix_secs() -> u64 {
    spoolmon::shared::clock::unix_now() as u64
}

/// Waits for the next wall-clock second, so that the next cycle gets a new snapshot name.
fn next_second() {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
    std::thread::sleep(Duration::from_nanos(1_000_000_000 - u64::from(now.subsec_nanos())) + Duration::from_millis(5));
}

#[test]
fn real_haproxy_instances_become_one_complete_haproxystats_snapshot() {
    let haproxy = Haproxy::start(&HaproxySetup {
        instances: 4,
        frontends: 3,
        backends: 2,
        servers_per_backend: 3,
        tcp_stats: true,
        ..HaproxySetup::default()
    });
    let (_dir, base) = new_base();
    let tcp_port = haproxy.instances[3].tcp_stats_port.unwrap();
    let tcp_url = format!("tcp://127.0.0.1:{tcp_port}");
    let options = PullOptions {
        socket_dir: Some(haproxy.socket_dir.clone()),
        ..fast_options(&[&tcp_url])
    };
    let before = unix_secs();
    let report = pull_cycle(&base, &options).unwrap();
    let after = unix_secs();
    assert_eq!(report.sources, 4);
    assert_eq!(names(&base.incoming()), std::slice::from_ref(&report.snapshot));
    assert!(names(&base.incoming_tmp()).is_empty());
    let mut expected: Vec<String> = (1..=3)
        .flat_map(|n| [format!("haproxy-{n}.sock_info"), format!("haproxy-{n}.sock_stat")])
        .collect();
    expected.extend([
        format!("127.0.0.1:{tcp_port}_info"),
        format!("127.0.0.1:{tcp_port}_stat"),
    ]);
    expected.sort();
    assert_eq!(names(&report.path), expected);
    for name in &expected {
        let file = report.path.join(name);
        if name.ends_with("_stat") {
            assert_complete_stat(&file);
            let text = std::fs::read_to_string(&file).unwrap();
            assert!(
                text.contains("\nbe.1,srv.1.2,") && text.contains("\nfe.2,FRONTEND,"),
                "{name}"
            );
        } else {
            let text = std::fs::read_to_string(&file).unwrap();
            assert!(text.starts_with("Name: HAProxy\n") && text.ends_with("\n\n"), "{name}");
            assert!(text.contains("\nProcess_num: 1\n"), "{name}");
        }
    }
    let epoch: u64 = report
        .snapshot
        .parse()
        .expect("the snapshot is named by its epoch alone");
    // The second the cycle began: bracketed by the clock around the call, whatever it took.
    assert!((before..=after).contains(&epoch), "{epoch} not in {before}..={after}");
}

#[test]
fn counters_move_with_traffic_between_cycles() {
    let http = PythonHttp::start();
    let haproxy = Haproxy::start(&HaproxySetup {
        server_port: http.port,
        ..HaproxySetup::default()
    });
    let (_dir, base) = new_base();
    let options = PullOptions {
        socket_dir: Some(haproxy.socket_dir.clone()),
        ..fast_options(&[])
    };
    let stat_of = |report: &spoolmon::collect::haproxy::CycleReport| {
        std::fs::read_to_string(report.path.join("haproxy-1.sock_stat")).unwrap()
    };
    let before = stat_of(&pull_cycle(&base, &options).unwrap());
    haproxy.send_requests(0, 5);
    next_second();
    let after = stat_of(&pull_cycle(&base, &options).unwrap());
    let requests = |stat: &str| stat_value(stat, "fe.0", "FRONTEND", "stot");
    assert_eq!(requests(&after), requests(&before) + 5, "frontend sessions");
    let answered = |stat: &str| stat_value(stat, "be.0", "BACKEND", "hrsp_2xx");
    assert_eq!(answered(&after), answered(&before) + 5, "backend 2xx responses");
    assert_eq!(base.incoming().read_dir().unwrap().count(), 2);
}

/// Runs one cycle with a good source beside `fault` and checks that nothing was published.
fn assert_fault_publishes_nothing(fault: &str, options: PullOptions, expected: &str) {
    let (_dir, base) = new_base();
    let good_dir = tempfile::tempdir().unwrap();
    let _good = FakeStats::unix(&good_dir.path().join("good.sock"), Behaviour::Valid);
    let options = PullOptions {
        socket_dir: Some(good_dir.path().to_owned()),
        ..options
    };
    let err = pull_cycle(&base, &options).unwrap_err();
    let text = err.to_string();
    let PullError::Incomplete { requests, failures } = &err else {
        panic!("{fault}: {err}");
    };
    assert_eq!(*requests, 4, "{text}");
    assert!(!failures.is_empty(), "{text}");
    assert!(failures.iter().all(|f| f.source == fault), "{text}");
    assert!(
        text.contains(fault) && text.contains(expected),
        "expected {expected:?} in: {text}"
    );
    assert!(names(&base.incoming()).is_empty(), "published despite: {text}");
    assert!(names(&base.incoming_tmp()).is_empty(), "orphan left by: {text}");
}

#[test]
fn each_fault_publishes_nothing_leaves_no_orphan_and_names_the_source() {
    let cases = [
        (Behaviour::CloseHalfway, "truncated"),
        (Behaviour::ResetMidRead, "reset"),
        (Behaviour::Garbage, "incomplete reply"),
        (Behaviour::WrongColumnCount, "CSV columns"),
        (Behaviour::Huge(1 << 20), "buffer-limit"),
        (Behaviour::FailFirst(usize::MAX), "empty reply"),
    ];
    for (behaviour, expected) in cases {
        let fake = FakeStats::tcp(behaviour);
        let options = PullOptions {
            buffer_limit: 64 * 1024,
            retries: 1,
            ..fast_options(&[&fake.url])
        };
        assert_fault_publishes_nothing(&fake.url, options, expected);
    }
}

#[test]
fn refused_and_missing_sockets_publish_nothing() {
    let closed = TcpListener::bind("127.0.0.1:0").unwrap();
    let refused = format!("tcp://127.0.0.1:{}", closed.local_addr().unwrap().port());
    drop(closed);
    assert_fault_publishes_nothing(&refused, fast_options(&[&refused]), "connect failed");
    let missing = "unix:///nonexistent/haproxy.sock";
    assert_fault_publishes_nothing(missing, fast_options(&[missing]), "connect failed");
}

#[test]
fn a_transient_fault_is_retried_and_the_snapshot_published() {
    let (_dir, base) = new_base();
    let flaky = FakeStats::tcp(Behaviour::FailFirst(2));
    let options = PullOptions {
        retries: 2,
        ..fast_options(&[&flaky.url])
    };
    let report = pull_cycle(&base, &options).unwrap();
    assert_eq!(report.retries, 2);
    let port = flaky.url.rsplit(':').next().unwrap();
    assert_eq!(
        std::fs::read_to_string(report.path.join(format!("127.0.0.1:{port}_stat"))).unwrap(),
        STAT
    );
    let (_dir, base) = new_base();
    let flaky = FakeStats::tcp(Behaviour::FailFirst(2));
    assert!(
        pull_cycle(&base, &fast_options(&[&flaky.url])).is_err(),
        "retries: 0 made a second attempt"
    );
}

#[test]
fn pull_timeout_bounds_a_cycle_with_a_silent_peer() {
    // The peer reads the command and never answers while the test runs, and `retries: -1`
    // retries until pull-timeout: only the 0.5 s pull-timeout can end this cycle.
    let silent = FakeStats::tcp(Behaviour::Silent);
    let options = PullOptions {
        pull_timeout: 0.5,
        retries: -1,
        ..fast_options(&[&silent.url])
    };
    let (_dir, base) = new_base();
    let started = Instant::now();
    let err = pull_cycle(&base, &options).unwrap_err();
    let elapsed = started.elapsed();
    // Not a timing threshold: without its pull-timeout the cycle would hang for as long as the
    // peer stays silent; 10 s is far more than a loaded machine needs to notice the deadline.
    assert!(
        elapsed < Duration::from_secs(10),
        "a 0.5 s pull-timeout took {elapsed:?}"
    );
    // The deadline is taken inside the call, so the cycle cannot give up before 0.5 s.
    assert!(elapsed >= Duration::from_millis(450), "gave up early: {elapsed:?}");
    let text = err.to_string();
    assert!(text.contains(&silent.url) && text.contains("pull-timeout"), "{text}");
    assert!(names(&base.incoming()).is_empty() && names(&base.incoming_tmp()).is_empty());
}

#[test]
fn snapshot_names_that_are_taken_are_never_overwritten() {
    let fake = FakeStats::tcp(Behaviour::Valid);
    let options = fast_options(&[&fake.url]);
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs();
    for (dir, marker) in [
        ("incoming", "published earlier"),
        ("incoming.tmp", "being built by someone else"),
    ] {
        let (_dir, base) = new_base();
        for epoch in now..now + 5 {
            let taken = base.root().join(dir).join(epoch.to_string());
            std::fs::create_dir(&taken).unwrap();
            std::fs::write(taken.join("marker"), marker).unwrap();
        }
        let err = pull_cycle(&base, &options).unwrap_err();
        assert!(matches!(err, PullError::SnapshotExists(_)), "{err}");
        for epoch in now..now + 5 {
            let taken: PathBuf = base.root().join(dir).join(epoch.to_string());
            assert_eq!(names(&taken), ["marker"]);
            assert_eq!(std::fs::read_to_string(taken.join("marker")).unwrap(), marker);
        }
        let other = if dir == "incoming" {
            base.incoming_tmp()
        } else {
            base.incoming()
        };
        assert!(names(&other).is_empty(), "{dir}: {:?}", names(&other));
    }
}

/// `run_pull` on its own thread.
struct Loop {
    shutdown: Arc<AtomicBool>,
    stats: Arc<PullStats>,
    /// Calls of the loop's `tick`: it ticks every slice of every wait (for a slot, while
    /// suspended), so ticks after a cycle are the marker that the loop waits again.
    ticks: Arc<AtomicU64>,
    thread: Option<JoinHandle<()>>,
}

impl Loop {
    fn start(base: &BaseDir, options: PullOptions) -> Loop {
        let shutdown = Arc::new(AtomicBool::new(false));
        let stats = Arc::new(PullStats::default());
        let ticks = Arc::new(AtomicU64::new(0));
        let (base, flag, counters) = (base.clone(), Arc::clone(&shutdown), Arc::clone(&stats));
        let ticked = Arc::clone(&ticks);
        let thread = std::thread::spawn(move || {
            run_pull(&base, &options, flag, counters, &mut || {
                ticked.fetch_add(1, Ordering::SeqCst);
            })
        });
        Loop {
            shutdown,
            stats,
            ticks,
            thread: Some(thread),
        }
    }

    fn count(&self, counter: impl Fn(&PullStats) -> &AtomicU64) -> u64 {
        counter(&self.stats).load(Ordering::SeqCst)
    }

    /// Waits until the loop has ticked twice more than now: it is inside a wait (it ticked,
    /// slept a slice and ticked again), not between a counter and the wait.
    fn wait_until_waiting(&self) {
        let ticks = self.ticks.load(Ordering::SeqCst);
        wait_for(
            "the loop to tick in its wait (due every SHUTDOWN_POLL)",
            Duration::from_secs(30),
            None,
            || self.ticks.load(Ordering::SeqCst) >= ticks + 2,
        );
    }

    /// Sets the shutdown flag and returns how long the loop took to end (at most 10 s: a loop
    /// still running then fails the test).
    fn stop(mut self) -> Duration {
        let started = Instant::now();
        self.shutdown.store(true, Ordering::Relaxed);
        let thread = self.thread.take().unwrap();
        while !thread.is_finished() && started.elapsed() < Duration::from_secs(10) {
            std::thread::sleep(Duration::from_millis(10));
        }
        let took = started.elapsed();
        assert!(thread.is_finished(), "run_pull ignored shutdown for {took:?}");
        thread.join().unwrap();
        took
    }
}

impl Drop for Loop {
    fn drop(&mut self) {
        self.shutdown.store(true, Ordering::Relaxed);
    }
}

/// A `pull-interval` of at least a minute whose next slot comes in 3 to 30 s: after that first
/// slot the loop waits a minute or more for the next one, so a stop that is not prompt (that
/// waits for the slot) would take 50 s or more, while the test itself takes seconds.
fn interval_with_a_slot_soon() -> u64 {
    let now = unix_secs();
    for ahead in 3..=30 {
        if let Some(interval) = (60..=3600).find(|interval| (now + ahead) % interval == 0) {
            return interval;
        }
    }
    panic!("no interval of 60..=3600 s has a multiple 3..=30 s after {now}");
}

/// The longest a stop may take where prompt means "within a poll of the shutdown flag" and not
/// prompt means 50 s or more: 10 s leaves a loaded machine plenty of room.
const PROMPT: Duration = Duration::from_secs(10);

#[test]
fn the_loop_pulls_at_wall_clock_multiples_of_pull_interval() {
    let fake = FakeStats::tcp(Behaviour::Valid);
    let (_dir, base) = new_base();
    let interval: u64 = 2;
    let running = Loop::start(
        &base,
        PullOptions {
            pull_interval: interval,
            ..fast_options(&[&fake.url])
        },
    );
    let stats = Arc::clone(&running.stats);
    wait_for("three snapshots", Duration::from_secs(60), None, || {
        names(&base.incoming()).len() >= 3
    });
    running.stop();
    let mut epochs: Vec<u64> = names(&base.incoming()).iter().map(|n| n.parse().unwrap()).collect();
    epochs.sort_unstable();
    let count = |counter: &AtomicU64| counter.load(Ordering::SeqCst);
    assert_eq!(count(&stats.snapshots_published), epochs.len() as u64, "{epochs:?}");
    // Each snapshot is named by the second its cycle began, which is its slot: a multiple of
    // pull-interval (it would be the next second only if the thread woke a whole second late).
    assert!(epochs.iter().all(|e| e % interval == 0), "{epochs:?}");
    // A loaded machine may miss a slot (a cycle overran it, or failed): the loop then skips it
    // and counts it, it never pulls in between. So gaps are whole multiples of the interval, and
    // every slot skipped between two snapshots is counted as missed or as a slot that published
    // nothing (the counters also hold slots before the first and after the last snapshot).
    assert!(
        epochs.windows(2).all(|w| w[1] > w[0] && (w[1] - w[0]) % interval == 0),
        "{epochs:?}"
    );
    let skipped: u64 = epochs.windows(2).map(|w| (w[1] - w[0]) / interval - 1).sum();
    let accounted = count(&stats.missed_slots)
        + count(&stats.failed_cycles)
        + count(&stats.name_collisions)
        + count(&stats.suspended_cycles);
    assert!(
        skipped <= accounted,
        "{skipped} slots skipped, {accounted} counted: {epochs:?} {stats:?}"
    );
}

#[test]
fn shutdown_is_prompt_while_waiting_for_the_next_slot() {
    let fake = FakeStats::tcp(Behaviour::Valid);
    let (_dir, base) = new_base();
    let running = Loop::start(
        &base,
        PullOptions {
            pull_interval: interval_with_a_slot_soon(),
            ..fast_options(&[&fake.url])
        },
    );
    wait_for("the first snapshot", Duration::from_secs(60), None, || {
        running.count(|s| &s.snapshots_published) >= 1
    });
    running.wait_until_waiting();
    let took = running.stop();
    // The next slot is a minute or more away (see interval_with_a_slot_soon).
    assert!(took < PROMPT, "shutdown while waiting for a slot took {took:?}");
    assert_eq!(names(&base.incoming()).len(), 1);
}

#[test]
fn a_full_queue_suspends_pulling_until_there_is_room() {
    let fake = FakeStats::tcp(Behaviour::Valid);
    let (_dir, base) = new_base();
    for name in ["1000000000", "1000000001"] {
        std::fs::create_dir(base.incoming().join(name)).unwrap();
    }
    let running = Loop::start(
        &base,
        PullOptions {
            pull_interval: 1,
            queue_size: 2,
            ..fast_options(&[&fake.url])
        },
    );
    wait_for("a suspended slot", Duration::from_secs(30), None, || {
        running.count(|s| &s.suspended_cycles) >= 2
    });
    assert_eq!(running.count(|s| &s.cycles_started), 0);
    assert_eq!(names(&base.incoming()).len(), 2);
    std::fs::remove_dir(base.incoming().join("1000000000")).unwrap();
    wait_for("pulling to resume", Duration::from_secs(30), None, || {
        running.count(|s| &s.snapshots_published) >= 1
    });
    // Full again (one old snapshot and the new one): suspended again, nothing more pulled.
    let suspended = running.count(|s| &s.suspended_cycles);
    wait_for("suspension again", Duration::from_secs(30), None, || {
        running.count(|s| &s.suspended_cycles) > suspended
    });
    let published = running.count(|s| &s.snapshots_published);
    running.stop();
    assert_eq!(published, 1);
    assert_eq!(names(&base.incoming()).len(), 2);
}

#[test]
fn shutdown_is_prompt_while_suspended() {
    let fake = FakeStats::tcp(Behaviour::Valid);
    let (_dir, base) = new_base();
    std::fs::create_dir(base.incoming().join("1000000000")).unwrap();
    let running = Loop::start(
        &base,
        PullOptions {
            pull_interval: interval_with_a_slot_soon(),
            queue_size: 1,
            ..fast_options(&[&fake.url])
        },
    );
    wait_for("a suspended slot", Duration::from_secs(60), None, || {
        running.count(|s| &s.suspended_cycles) >= 1
    });
    running.wait_until_waiting();
    let took = running.stop();
    // Suspended until the next slot, a minute or more away (see interval_with_a_slot_soon).
    assert!(took < PROMPT, "shutdown while suspended took {took:?}");
    assert_eq!(names(&base.incoming()), ["1000000000"]);
}

#[test]
fn shutdown_is_prompt_while_waiting_for_a_silent_peer() {
    let silent = FakeStats::tcp(Behaviour::Silent);
    let (_dir, base) = new_base();
    let running = Loop::start(
        &base,
        PullOptions {
            pull_interval: 1,
            pull_timeout: 30.0,
            ..fast_options(&[&silent.url])
        },
    );
    // Both requests have reached the peer: the cycle now waits for replies that never come.
    wait_for("both requests at the peer", Duration::from_secs(30), None, || {
        silent.commands.load(Ordering::SeqCst) >= 2
    });
    let took = running.stop();
    // Not prompt would be waiting out the 30 s pull-timeout.
    assert!(took < PROMPT, "shutdown during a cycle took {took:?}");
    assert!(names(&base.incoming()).is_empty() && names(&base.incoming_tmp()).is_empty());
}
