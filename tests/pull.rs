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
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
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
        let stopped = Arc::clone(&stop);
        let thread = std::thread::spawn(move || {
            let accepted = AtomicUsize::new(0);
            while !stopped.load(Ordering::Relaxed) {
                match accept() {
                    Ok(connection) => {
                        let number = accepted.fetch_add(1, Ordering::Relaxed);
                        let stopped = Arc::clone(&stopped);
                        std::thread::spawn(move || answer(connection, behaviour, number, &stopped));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        FakeStats {
            url,
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
fn answer(mut connection: Connection, behaviour: Behaviour, number: usize, stop: &AtomicBool) {
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
    let report = pull_cycle(&base, &options).unwrap();
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
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs();
    assert!(now - epoch < 5, "{epoch} vs {now}");
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
    let silent = FakeStats::tcp(Behaviour::Silent);
    let options = PullOptions {
        pull_timeout: 0.5,
        retries: -1,
        ..fast_options(&[&silent.url])
    };
    let started = Instant::now();
    let (_dir, base) = new_base();
    let err = pull_cycle(&base, &options).unwrap_err();
    let elapsed = started.elapsed();
    assert!(
        elapsed < Duration::from_millis(2500),
        "a 0.5 s pull-timeout took {elapsed:?}"
    );
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
    thread: Option<JoinHandle<()>>,
}

impl Loop {
    fn start(base: &BaseDir, options: PullOptions) -> Loop {
        let shutdown = Arc::new(AtomicBool::new(false));
        let stats = Arc::new(PullStats::default());
        let (base, flag, counters) = (base.clone(), Arc::clone(&shutdown), Arc::clone(&stats));
        let thread = std::thread::spawn(move || run_pull(&base, &options, flag, counters, &mut || {}));
        Loop {
            shutdown,
            stats,
            thread: Some(thread),
        }
    }

    fn count(&self, counter: impl Fn(&PullStats) -> &std::sync::atomic::AtomicU64) -> u64 {
        counter(&self.stats).load(Ordering::Relaxed)
    }

    /// Sets the shutdown flag and returns how long the loop took to end.
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

#[test]
fn the_loop_pulls_at_wall_clock_multiples_of_pull_interval() {
    let fake = FakeStats::tcp(Behaviour::Valid);
    let (_dir, base) = new_base();
    let running = Loop::start(
        &base,
        PullOptions {
            pull_interval: 2,
            ..fast_options(&[&fake.url])
        },
    );
    wait_for("two snapshots", Duration::from_secs(10), None, || {
        names(&base.incoming()).len() >= 2
    });
    assert!(running.stop() < Duration::from_secs(1));
    let epochs: Vec<u64> = names(&base.incoming()).iter().map(|n| n.parse().unwrap()).collect();
    assert!(epochs.iter().all(|e| e % 2 == 0), "{epochs:?}");
    assert!(epochs.windows(2).all(|w| w[1] - w[0] == 2), "{epochs:?}");
}

#[test]
fn a_full_queue_suspends_pulling_and_shutdown_is_prompt_while_suspended() {
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
    wait_for("a suspended slot", Duration::from_secs(5), None, || {
        running.count(|s| &s.suspended_cycles) >= 2
    });
    assert_eq!(running.count(|s| &s.cycles_started), 0);
    assert_eq!(names(&base.incoming()).len(), 2);
    std::fs::remove_dir(base.incoming().join("1000000000")).unwrap();
    wait_for("pulling to resume", Duration::from_secs(5), None, || {
        running.count(|s| &s.snapshots_published) >= 1
    });
    // Full again (one old snapshot and the new one): suspended, then stopped while suspended.
    let suspended = running.count(|s| &s.suspended_cycles);
    wait_for("suspension again", Duration::from_secs(5), None, || {
        running.count(|s| &s.suspended_cycles) > suspended
    });
    let took = running.stop();
    assert!(took < Duration::from_secs(1), "shutdown while suspended took {took:?}");
    assert_eq!(names(&base.incoming()).len(), 2);
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
    wait_for("a cycle to start", Duration::from_secs(5), None, || {
        running.count(|s| &s.cycles_started) >= 1
    });
    std::thread::sleep(Duration::from_millis(300));
    let took = running.stop();
    // Not prompt would be waiting out the 30 s pull-timeout; 10 s leaves a loaded machine room.
    assert!(took < Duration::from_secs(10), "shutdown during a cycle took {took:?}");
    assert!(names(&base.incoming()).is_empty() && names(&base.incoming_tmp()).is_empty());
}
