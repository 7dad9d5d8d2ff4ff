//! Stopping in the middle of heavy processing (`spoolmon process` aggregating large HAProxy
//! snapshots): SIGTERM finishes the round in hand and loses nothing; a second SIGTERM, or a
//! drain longer than `stop-timeout`, ends the process at once, and a restart still loses
//! nothing (at most the round in hand is applied again).

mod common;
#[path = "data/haproxy/reference.rs"]
mod reference;

use common::*;
use std::collections::BTreeMap;
use std::fs;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

const LIMIT: Duration = Duration::from_secs(300);
/// HAProxy processes per snapshot: the reference's 4, repeated. Large enough that one round
/// (two snapshots) takes seconds in a debug build.
const PROCESSES: usize = 48;
const SNAPSHOTS: i64 = 8;
/// HAProxy snapshots per processing round (the processor takes at most two at a time).
const ROUND: usize = 2;
/// Logged once a stop signal has been taken and the drain begins.
const DRAINING: &str = "stop requested: draining";

/// Snapshot times: the reference's time and every 10 s after it.
fn times() -> Vec<i64> {
    (0..SNAPSHOTS).map(|k| reference::TIME + 10 * k).collect()
}

/// Fills `incoming/` with [`SNAPSHOTS`] snapshots of `processes` processes each, every file a
/// hard link to the unpacked reference (processing only reads and then removes them).
fn heavy_backlog(base: &Base, unpacked: &Path, processes: usize) {
    let source = reference::unpack_snapshot(unpacked);
    for time in times() {
        let dir = base.join(&format!("incoming/{time}"));
        fs::create_dir_all(&dir).unwrap();
        for p in 0..processes {
            let from = 1 + p % 4;
            for kind in ["stat", "info"] {
                fs::hard_link(
                    source.join(format!("haproxy-{from}.sock_{kind}")),
                    dir.join(format!("haproxy-{}.sock_{kind}", p + 1)),
                )
                .unwrap();
            }
        }
    }
}

fn start_process(base: &Base, config: &str) -> Daemon {
    base.write_config(config);
    base.spawn(&[], "process")
}

fn config(store: &Path, extra: &str) -> String {
    format!(
        "rescan-interval: 1\n{extra}sinks:\n  store: {{type: local-store, dir: '{}', namespace: lb, hostname: vm}}\n",
        store.display()
    )
}

/// Lines in each `<time>/stats` of the local store.
fn stored(store: &Path) -> BTreeMap<i64, usize> {
    let Ok(entries) = fs::read_dir(store) else {
        return BTreeMap::new();
    };
    entries
        .flatten()
        .filter_map(|e| {
            let time = e.file_name().to_str()?.parse().ok()?;
            let text = fs::read_to_string(e.path().join("stats")).ok()?;
            Some((time, text.lines().count()))
        })
        .collect()
}

/// Waits until `count` snapshots are in the store and the next round has begun.
fn wait_until_processed(base: &Base, store: &Path, daemon: &Daemon, count: usize) {
    wait_for("snapshots processed", LIMIT, Some(daemon), || {
        stored(store).len() >= count
    });
    assert!(
        base.count("incoming") > 0,
        "the backlog was processed before the signal"
    );
}

/// Every snapshot reached the store, with the same number of lines as the first one
/// (`repeats` snapshots may have been applied twice: the round in hand at a hard exit).
fn assert_each_snapshot_stored(base: &Base, store: &Path, repeats: usize) {
    assert_eq!(base.count("failed"), 0, "nothing may be quarantined");
    let stored = stored(store);
    assert_eq!(
        stored.keys().copied().collect::<Vec<_>>(),
        times(),
        "a snapshot was lost"
    );
    let once = stored.values().copied().min().unwrap();
    assert!(once > 1000, "too few lines per snapshot: {stored:?}");
    let twice = stored.values().filter(|&&n| n == 2 * once).count();
    let once_or_twice = stored.values().all(|&n| n == once || n == 2 * once);
    assert!(once_or_twice && twice <= repeats, "{stored:?}");
}

#[test]
fn sigterm_during_heavy_processing_finishes_the_round_and_a_restart_loses_nothing() {
    let base = Base::new();
    let unpacked = tempfile::tempdir().unwrap();
    heavy_backlog(&base, unpacked.path(), PROCESSES);
    let store = base.join("store");
    let process = start_process(&base, &config(&store, ""));
    wait_for("heartbeat", LIMIT, Some(&process), || {
        base.read("state/heartbeat").is_some()
    });
    let check = Command::new(BIN)
        .args(["check", "daemon", "--base-dir"])
        .arg(base.path())
        .output()
        .unwrap();
    let line = String::from_utf8_lossy(&check.stdout);
    assert_eq!(check.status.code(), Some(0), "spoolmon process beats too: {line}");
    assert!(line.contains(&format!("pid {} running", process.pid())), "{line}");
    wait_until_processed(&base, &store, &process, 1);
    let status = process.terminate(LIMIT).expect("stops after its round");
    assert!(status.success(), "{status:?}");
    let left = base.count("incoming");
    assert!(left > 0 && left < SNAPSHOTS as usize, "{left} left");
    assert_eq!(base.count("incoming.tmp"), 0);
    let process = start_process(&base, &config(&store, ""));
    wait_for("backlog drained", LIMIT, Some(&process), || base.count("incoming") == 0);
    assert!(process.terminate(LIMIT).is_some_and(|s| s.success()));
    assert_each_snapshot_stored(&base, &store, 0);
}

#[test]
fn a_second_sigterm_or_an_overlong_drain_exits_at_once_and_a_restart_loses_nothing() {
    let base = Base::new();
    let unpacked = tempfile::tempdir().unwrap();
    // Twice as heavy: the drain the second SIGTERM must land in lasts a whole round of these.
    heavy_backlog(&base, unpacked.path(), 2 * PROCESSES);
    let store = base.join("store");

    let process = start_process(&base, &config(&store, ""));
    wait_until_processed(&base, &store, &process, 1);
    // The stop is read at the top of a round, and that round still runs: with snapshots left
    // beyond the round in hand, the drain lasts at least one whole round of heavy snapshots
    // (seconds, longer still on a loaded machine).
    let waiting = base.count("incoming");
    assert!(
        waiting > ROUND,
        "only {waiting} snapshots left at the first SIGTERM: the drain could end at once"
    );
    let pid = process.pid();
    signal(pid, "TERM");
    // The marker that the stop was taken (the flag a second SIGTERM is judged by is set) and
    // the drain has begun; the second SIGTERM comes during that drain, not after a guessed delay.
    wait_for("the drain to begin", LIMIT, Some(&process), || {
        process.log_text().contains(DRAINING)
    });
    signal(pid, "TERM");
    let process_log = process.log.clone();
    let status = process.wait_exit(LIMIT).expect("exits");
    let log = fs::read_to_string(&process_log).unwrap();
    assert_eq!(
        status.code(),
        Some(1),
        "a second SIGTERM exits with 1: {status:?}\n{log}"
    );
    // The second SIGTERM ended the drain, not the drain itself: it never logged "stopped", and
    // part of the backlog is still waiting.
    assert!(!log.lines().any(|line| line.ends_with(" stopped")), "{log}");
    assert!(base.count("incoming") > 0, "the whole backlog was processed");

    let process = start_process(&base, &config(&store, "stop-timeout: 1\n"));
    let done = stored(&store).len();
    wait_until_processed(&base, &store, &process, done + 1);
    let process_log = process.log.clone();
    let status = process.terminate(LIMIT).expect("exits");
    assert_eq!(status.code(), Some(1), "{status:?}");
    let log = fs::read_to_string(process_log).unwrap();
    assert!(log.contains("did not stop within stop-timeout (1s)"), "{log}");

    let process = start_process(&base, &config(&store, ""));
    wait_for("backlog drained", LIMIT, Some(&process), || base.count("incoming") == 0);
    assert!(process.terminate(LIMIT).is_some_and(|s| s.success()));
    // Each hard exit may repeat the round in hand (at most 2 snapshots each).
    assert_each_snapshot_stored(&base, &store, 4);
}
