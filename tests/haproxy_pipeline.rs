//! The HAProxy pipeline end to end: real HAProxy instances pulled by `spoolmon run`, aggregated,
//! and delivered to a real carbon-cache that is down for a while (nothing lost);
//! `spoolmon process` alone on haproxystats-pull's layout (the reference snapshot) beside a
//! poison snapshot; and a kill -9 in the middle of a backlog of HAProxy snapshots.

mod common;
#[path = "data/haproxy/reference.rs"]
mod reference;

use common::servers::{free_tcp_port, Carbon, Haproxy, HaproxySetup};
use common::*;
use std::collections::{BTreeSet, HashMap, HashSet};
use std::fs;
use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};
use std::time::Duration;

const LIMIT: Duration = Duration::from_secs(90);

#[test]
fn pulled_haproxy_statistics_reach_carbon_after_an_outage() {
    let haproxy = Haproxy::start(&HaproxySetup {
        instances: 2,
        ..HaproxySetup::default()
    });
    let base = Base::new();
    let store = base.join("ls");
    let port = free_tcp_port();
    let config = format!(
        "rescan-interval: 1\n\
         pull: {{socket-dir: '{}', pull-interval: 1, pull-timeout: 0.9}}\n\
         sinks:\n\
         \x20 carbon: {{type: graphite, port: {port}, namespace: lb, hostname: vm, fqdn: false, retries: 1, interval: 0.2, delay: 0.5}}\n\
         \x20 store: {{type: local-store, dir: '{}', namespace: lb, hostname: vm, fqdn: false}}\n",
        haproxy.socket_dir.display(),
        store.display()
    );
    let daemon = base.start(&config);
    wait_for("3 pulls aggregated while carbon is down", LIMIT, Some(&daemon), || {
        fs::read_dir(&store).map(|d| d.count()).unwrap_or(0) >= 3
    });
    let carbon = Carbon::start_on(port);
    let stored = local_store_lines(&store);
    let paths: BTreeSet<&str> = [
        "lb.vm.haproxy.frontend.fe_0.stot",
        "lb.vm.haproxy.backend.be_1.TotalServers",
        "lb.vm.haproxy.backend.be_0.server.srv_0_1.weight",
        "lb.vm.haproxy.daemon.Uptime_sec",
        "lb.vm.haproxy.haproxystats.MetricsFrontend",
    ]
    .into();
    let expected: Vec<(&(String, i64), &f64)> =
        stored.iter().filter(|((p, _), _)| paths.contains(p.as_str())).collect();
    let seen: BTreeSet<&str> = expected.iter().map(|((p, _), _)| p.as_str()).collect();
    assert_eq!(seen, paths, "local-store lacks some of the checked paths");
    let (from, until) = (
        expected.iter().map(|((_, t), _)| *t).min().unwrap(),
        expected.iter().map(|((_, t), _)| *t).max().unwrap(),
    );
    wait_for("the outage's aggregates in whisper", LIMIT, Some(&daemon), || {
        expected
            .iter()
            .all(|((path, time), value)| carbon.fetch(path, from, until).contains(&(*time, Some(**value))))
    });
    assert_eq!(base.count("failed"), 0);
}

#[test]
fn process_alone_aggregates_haproxystats_pull_output_and_quarantines_a_poison_snapshot() {
    let base = Base::new();
    fs::create_dir_all(base.join("incoming")).unwrap();
    let unpacked = tempfile::tempdir().unwrap();
    let snapshot = reference::unpack_snapshot(unpacked.path());
    fs::rename(&snapshot, base.join(&format!("incoming/{}", reference::TIME))).unwrap();
    let poison = base.join("incoming/1795431760");
    fs::create_dir_all(&poison).unwrap();
    fs::write(poison.join("lb1.sock_info"), b"\x00\x01\xff binary").unwrap();
    fs::write(
        poison.join("lb1.sock_stat"),
        b"# pxname,svname\nonly,a header and a row\n",
    )
    .unwrap();
    let store = base.join("ls");
    base.write_config(&format!(
        "sinks:\n  store: {{type: local-store, dir: '{}', namespace: loadbalancers, hostname: vm}}\n",
        store.display()
    ));
    let process = base.spawn(&[], "process");
    wait_for("both snapshots handled", LIMIT, Some(&process), || {
        base.count("incoming") == 0
    });
    let reason = base
        .read("failed/1795431760/REASON")
        .expect("poison snapshot quarantined with a REASON");
    assert!(reason.contains("lb1.sock"), "{reason}");
    let stats = fs::read_to_string(store.join(format!("{}/stats", reference::TIME))).unwrap();
    let golden = reference::golden_lines();
    let paths =
        |text: &str| -> BTreeSet<String> { text.lines().map(|l| l.split(' ').next().unwrap().to_string()).collect() };
    assert_eq!(paths(&stats), paths(&golden), "not haproxystats 0.5.1's set of paths");
    assert!(process.terminate(Duration::from_secs(10)).is_some_and(|s| s.success()));
}

/// Distinct metric paths received per timestamp, over every connection a TCP listener accepts.
/// A plain socket, not carbon: the test counts what spoolmon sends (2.4 million lines), which
/// whisper would take minutes to store and fetch back.
fn count_paths_per_time(listener: TcpListener) -> Arc<Mutex<HashMap<i64, HashSet<String>>>> {
    let seen: Arc<Mutex<HashMap<i64, HashSet<String>>>> = Arc::default();
    let shared = Arc::clone(&seen);
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { return };
            let shared = Arc::clone(&shared);
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines() {
                    let Ok(line) = line else { return };
                    let mut fields = line.split(' ');
                    let (Some(path), Some(_), Some(time)) = (fields.next(), fields.next(), fields.next()) else {
                        panic!("not a Graphite line: {line:?}");
                    };
                    let time: i64 = time.parse().unwrap_or_else(|_| panic!("bad time in {line:?}"));
                    shared.lock().unwrap().entry(time).or_default().insert(path.to_owned());
                }
            });
        }
    });
    seen
}

/// A round of HAProxy snapshots has no results, so it skips the flushes of output/ (nothing
/// was written there) and relies on each outbox append being fdatasynced before the snapshot is
/// removed. A kill -9 anywhere in a backlog of 30 snapshots, then a restart: every snapshot's
/// lines reach the sink (a snapshot processed again sends its lines again, harmless for
/// Graphite, which keeps the last value of a path and time). kill -9 keeps the page cache, so
/// this proves the order of the steps, not what a power cut would leave.
#[test]
fn kill_9_in_a_backlog_of_haproxy_snapshots_then_restart_delivers_every_snapshot() {
    const SNAPSHOTS: i64 = 30;
    const PATHS_PER_SNAPSHOT: usize = 78_455;
    let base = Base::new();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let seen = count_paths_per_time(listener);
    let unpacked = tempfile::tempdir().unwrap();
    let snapshot = reference::unpack_snapshot(unpacked.path());
    let staging = base.join("staging");
    for i in 0..SNAPSHOTS {
        let dir = staging.join((reference::TIME + 10 * i).to_string());
        fs::create_dir_all(&dir).unwrap();
        for entry in fs::read_dir(&snapshot).unwrap() {
            let entry = entry.unwrap();
            fs::copy(entry.path(), dir.join(entry.file_name())).unwrap();
        }
    }
    fs::rename(&staging, base.join("incoming")).unwrap();
    // The outbox holds all 30 snapshots (2.35 M lines): with the default bound (1 M lines, as
    // haproxystats' queue-size) a delivery slower than processing, as on a loaded machine,
    // drops the oldest segments by design, and this test is about the kill, not the bound.
    base.write_config(&format!(
        "sinks:\n  carbon: {{type: graphite, port: {port}, namespace: loadbalancers, hostname: vm, queue-size: 10000000}}\n"
    ));
    let process = base.spawn(&[], "process");
    wait_for("a first round done", LIMIT, Some(&process), || {
        (base.count("incoming") as i64) < SNAPSHOTS
    });
    process.kill9();
    let left = base.count("incoming");
    assert!(left > 0, "killed after the last snapshot: the test proves nothing");

    let process = base.spawn(&[], "process");
    let complete = |seen: &HashMap<i64, HashSet<String>>| {
        (0..SNAPSHOTS).all(|i| {
            seen.get(&(reference::TIME + 10 * i))
                .is_some_and(|p| p.len() >= PATHS_PER_SNAPSHOT)
        })
    };
    wait_for("every snapshot's lines at the sink", LIMIT, Some(&process), || {
        complete(&seen.lock().unwrap())
    });
    assert!(process.terminate(Duration::from_secs(10)).is_some_and(|s| s.success()));
    let seen = seen.lock().unwrap();
    for i in 0..SNAPSHOTS {
        let time = reference::TIME + 10 * i;
        assert_eq!(seen[&time].len(), PATHS_PER_SNAPSHOT, "paths of the snapshot at {time}");
    }
    assert_eq!(seen.len() as i64, SNAPSHOTS, "lines with times of no snapshot");
    assert_eq!(base.count("incoming"), 0);
    assert_eq!(base.count("failed"), 0);
}
