//! `spoolmon check ...` as Nagios runs it: real base directories in each state, every
//! threshold boundary, output line and exit code.

mod common;

use common::BIN;
use spoolmon::sink::outbox::{Outbox, OutboxLimits};
use spoolmon::spool::snapshot::{SnapshotName, PING_FILE};
use spoolmon::spool::{queue, BaseDir};
use std::process::Command;
use std::time::{SystemTime, UNIX_EPOCH};

fn check(args: &[&str]) -> (i32, String) {
    let out = Command::new(BIN).arg("check").args(args).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).trim_end().to_string();
    assert_eq!(stdout.lines().count(), 1, "one line of output: {stdout:?}");
    (out.status.code().unwrap(), stdout)
}

fn base() -> (tempfile::TempDir, BaseDir, String) {
    let dir = tempfile::tempdir().unwrap();
    let base = BaseDir::new(dir.path());
    base.create_all().unwrap();
    let path = dir.path().to_str().unwrap().to_string();
    (dir, base, path)
}

fn now() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() as i64
}

fn publish(base: &BaseDir, epoch: i64, seq: u64) -> String {
    let name = SnapshotName::new(epoch, "ping", seq);
    queue::publish(base, &name, &[(PING_FILE, b"x\n")]).unwrap();
    name.as_str().to_string()
}

#[test]
fn queue_counts_waiting_snapshots_at_every_boundary_and_ignores_those_waiting_for_the_flush() {
    let (_dir, base, path) = base();
    let (code, line) = check(&["queue", "--base-dir", &path]);
    assert_eq!(code, 0, "{line}");
    assert!(line.starts_with("SPOOLMON QUEUE OK - no snapshot waiting"), "{line}");
    for seq in 0..3 {
        publish(&base, now() - 5, seq);
    }
    let applied = publish(&base, now() - 5, 3);
    queue::mark_applied(&base, &applied).unwrap();
    let at = |w: &str, c: &str| check(&["queue", "--base-dir", &path, "-w", w, "-c", c]);
    assert_eq!(at("3", "5").0, 0, "3 waiting is inside 0..3");
    assert_eq!(at("2", "5").0, 1);
    assert_eq!(at("1", "3").0, 1, "3 is inside the critical range 0..3");
    assert_eq!(at("1", "2").0, 2);
    let (_, line) = at("10", "20");
    assert!(
        line.contains("3 snapshots waiting") && line.contains("1 wait for the RRD flush"),
        "{line}"
    );
    assert!(line.contains("| snapshots=3;10;20;0 oldest_age="), "{line}");
    // Age of the oldest: 5 s or a little more.
    let (code, line) = check(&[
        "queue",
        "--base-dir",
        &path,
        "--age-warning",
        "3",
        "--age-critical",
        "100",
    ]);
    assert_eq!(code, 1, "{line}");
    let (code, _) = check(&[
        "queue",
        "--base-dir",
        &path,
        "--age-warning",
        "1",
        "--age-critical",
        "2",
    ]);
    assert_eq!(code, 2);
}

#[test]
fn failed_warns_on_any_quarantined_snapshot_by_default() {
    let (_dir, base, path) = base();
    assert_eq!(check(&["failed", "--base-dir", &path]).0, 0);
    let name = publish(&base, now(), 1);
    queue::quarantine(&base, &name, "test").unwrap();
    std::fs::write(base.incoming().join("stray"), b"x").unwrap();
    queue::quarantine(&base, "stray", "not a directory").unwrap();
    let (code, line) = check(&["failed", "--base-dir", &path]);
    assert_eq!(code, 1, "{line}");
    assert!(
        line.contains("2 snapshots in failed/"),
        "the .REASON file is not a snapshot: {line}"
    );
    assert_eq!(check(&["failed", "--base-dir", &path, "-w", "2", "-c", "5"]).0, 0);
    assert_eq!(check(&["failed", "--base-dir", &path, "-w", "0", "-c", "1"]).0, 2);
}

#[test]
fn outbox_reports_each_sink_and_warns_on_age_and_drops() {
    let (_dir, base, path) = base();
    let (code, line) = check(&["outbox", "--base-dir", &path]);
    assert_eq!((code, line.as_str()), (0, "SPOOLMON OUTBOX OK - no sink has an outbox"));
    let outbox = Outbox::open(&base.outbox().join("carbon"), OutboxLimits::default()).unwrap();
    outbox.append(b"a 1 1\n", 1).unwrap();
    drop(outbox);
    let (code, line) = check(&["outbox", "--base-dir", &path]);
    assert_eq!(code, 0, "{line}");
    assert!(
        line.contains("carbon: 1 lines waiting") && line.contains("carbon_lines=1"),
        "{line}"
    );
    // The record is a moment old: a warning range that excludes 0 s turns it WARNING.
    assert_eq!(
        check(&["outbox", "--base-dir", &path, "-w", "@0:100000", "-c", "100000"]).0,
        1
    );
    assert_eq!(
        check(&["outbox", "--base-dir", &path, "-w", "1", "-c", "@0:100000"]).0,
        2
    );
}

#[test]
fn daemon_is_ok_while_a_live_daemon_beats_and_critical_once_it_is_killed() {
    let base = common::Base::new();
    let path = base.path().to_str().unwrap().to_string();
    std::fs::create_dir_all(base.join("state")).unwrap();
    assert_eq!(check(&["daemon", "--base-dir", &path]).0, 2, "no daemon yet");
    let daemon = base.start(common::FAST);
    common::wait_for(
        "heartbeat written",
        std::time::Duration::from_secs(60),
        Some(&daemon),
        || base.read("state/heartbeat").is_some(),
    );
    let (code, line) = check(&["daemon", "--base-dir", &path]);
    assert_eq!(code, 0, "{line}");
    assert!(line.contains(&format!("pid {} running", daemon.pid())), "{line}");
    // A heartbeat 100 s old: WARNING at -w 60, CRITICAL at -c 99, OK at -w 110 (a few seconds of slack).
    std::fs::write(base.join("state/heartbeat"), format!("{} 1\n", now() - 100)).unwrap();
    assert_eq!(check(&["daemon", "--base-dir", &path, "-w", "60", "-c", "300"]).0, 1);
    assert_eq!(check(&["daemon", "--base-dir", &path, "-w", "60", "-c", "99"]).0, 2);
    assert_eq!(check(&["daemon", "--base-dir", &path, "-w", "110", "-c", "300"]).0, 0);
    daemon.kill9();
    let (code, line) = check(&["daemon", "--base-dir", &path]);
    assert_eq!(code, 2, "{line}");
    assert!(line.contains("no spoolmon holds"), "{line}");
}

#[test]
fn a_missing_or_unreadable_base_and_a_bad_range_are_unknown() {
    let (code, line) = check(&["queue", "--base-dir", "/nonexistent/spoolmon"]);
    assert_eq!(code, 3, "{line}");
    assert!(
        line.starts_with("SPOOLMON QUEUE UNKNOWN - cannot read /nonexistent/spoolmon/incoming"),
        "{line}"
    );
    assert_eq!(check(&["failed", "--base-dir", "/nonexistent/spoolmon"]).0, 3);
    assert_eq!(check(&["outbox", "--base-dir", "/nonexistent/spoolmon"]).0, 3);
    assert_eq!(check(&["daemon", "--base-dir", "/nonexistent/spoolmon"]).0, 3);
    let (_dir, base, path) = base();
    std::fs::remove_dir(base.incoming()).unwrap();
    std::fs::write(base.incoming(), b"not a directory").unwrap();
    assert_eq!(check(&["queue", "--base-dir", &path]).0, 3);
    let (code, line) = check(&["failed", "--base-dir", &path, "-w", "20:10"]);
    assert_eq!(code, 3);
    assert!(line.contains("invalid threshold range"), "{line}");
}
