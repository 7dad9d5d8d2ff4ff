//! `spoolmon check ...` as Nagios runs it: real base directories in each state, every
//! threshold boundary, output line and exit code.

mod common;

use common::BIN;
use spoolmon::sink::outbox::{Outbox, OutboxLimits};
use spoolmon::spool::snapshot::{SnapshotName, PING_FILE};
use spoolmon::spool::{queue, BaseDir};
use std::process::Command;

fn check(args: &[&str]) -> (i32, String) {
    // RUST_LOG set: a check still writes nothing but its line.
    let out = Command::new(BIN)
        .arg("check")
        .args(args)
        .env("RUST_LOG", "debug")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).trim_end().to_string();
    assert_eq!(stdout.lines().count(), 1, "one line of output: {stdout:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.is_empty(), "a check writes nothing to stderr: {stderr}");
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
    spoolmon::shared::clock::unix_now()
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
fn outbox_warns_once_lines_were_dropped_at_the_bound_whatever_the_age() {
    let (_dir, base, path) = base();
    let limits = OutboxLimits {
        max_bytes: 4 << 10,
        max_lines: Some(20),
        max_age: None,
        segment_bytes: 1 << 10,
    };
    let outbox = Outbox::open(&base.outbox().join("carbon"), limits).unwrap();
    for k in 0..20 {
        let record: String = (0..10).map(|i| format!("r{k}.{i} 1 1\n")).collect();
        outbox.append(record.as_bytes(), 10).unwrap();
    }
    drop(outbox);
    let (code, line) = check(&["outbox", "--base-dir", &path, "-w", "100000", "-c", "100000"]);
    assert_eq!(code, 1, "{line}");
    let dropped: u64 = line
        .split(" dropped")
        .next()
        .and_then(|head| head.rsplit(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no drop count: {line}"));
    assert!(dropped >= 180, "200 lines appended, at most 20 kept: {line}");
    assert!(line.contains(&format!("carbon_dropped={dropped}c")), "{line}");
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

/// Sets the modification time of `path` to `unix` seconds.
fn set_mtime(path: &std::path::Path, unix: i64) {
    let time = nix::sys::time::TimeVal::new(unix, 0);
    nix::sys::stat::utimes(path, &time, &time).unwrap();
}

/// `output/<id>/last_result` written `age` seconds ago.
fn last_result(base: &common::Base, id: &str, age: i64) {
    let dir = base.join(&format!("output/{id}"));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("last_result"), "time: 1\n").unwrap();
    set_mtime(&dir.join("last_result"), now() - age);
}

#[test]
fn orders_counts_stale_and_invalid_orders_at_every_boundary() {
    let base = common::Base::new();
    let path = base.path().to_str().unwrap().to_string();
    BaseDir::new(base.path()).create_all().unwrap();
    let (code, line) = check(&["orders", "--base-dir", &path]);
    assert_eq!(
        (code, line.as_str()),
        (
            0,
            "SPOOLMON ORDERS OK - 0 active, 0 invalid, 0 failing, 0 stale | active=0 invalid=0;0;;0 failing=0 stale=0;0;10;0"
        )
    );
    let order = common::ping_order("127.0.0.1", 60, 3);
    for id in ["fresh", "old", "silent", "new"] {
        base.write_order(id, &order);
    }
    last_result(&base, "fresh", 30);
    last_result(&base, "old", 200); // 3 steps of 60 s = 180 s: stale
    last_result(&base, "silent", 500); // stale too (never measured: the next test)
    base.write_order("broken", "step: [\n");
    let at = |args: &[&str]| {
        let mut all = vec!["orders", "--base-dir", &path];
        all.extend_from_slice(args);
        check(&all)
    };
    let (code, line) = at(&[]);
    assert_eq!(code, 1, "{line}");
    assert!(
        line.starts_with("SPOOLMON ORDERS WARNING - 4 active, 1 invalid (first: broken: "),
        "{line}"
    );
    assert!(line.contains(", 2 stale (first: "), "{line}");
    assert!(line.contains(", 0 failing, 2 stale (first: "), "{line}");
    assert!(
        line.ends_with("| active=4 invalid=1;0;;0 failing=0 stale=2;0;10;0"),
        "{line}"
    );
    // The stale count against -w/-c (the invalid order tolerated with --invalid-warning 1).
    let tolerant = ["--invalid-warning", "1"];
    assert_eq!(
        at(&[&tolerant[..], &["-w", "2", "-c", "5"]].concat()).0,
        0,
        "2 stale is inside 0..2"
    );
    assert_eq!(at(&[&tolerant[..], &["-w", "1", "-c", "2"]].concat()).0, 1);
    assert_eq!(at(&[&tolerant[..], &["-w", "1", "-c", "1"]].concat()).0, 2);
    // More steps of patience: nothing is stale, only the invalid order warns.
    let (code, line) = at(&["--stale-steps", "10"]);
    assert_eq!(code, 1, "{line}");
    assert!(line.contains(", 0 stale"), "{line}");
    assert_eq!(at(&["--stale-steps", "10", "--invalid-warning", "1"]).0, 0);
    assert_eq!(at(&["--stale-steps", "10", "--invalid-critical", "0"]).0, 2);
    let (code, line) = at(&["--stale-steps", "1", "-w", "3", "-c", "10", "--invalid-warning", "1"]);
    assert_eq!(
        code, 0,
        "fresh (30 s) is within 1 step, new has no result but is new: {line}"
    );
    assert!(line.contains(", 2 stale"), "{line}");
    // An order whose output cannot be written is at least WARNING, named with its reason.
    std::fs::write(
        base.join("state/output-errors.json"),
        r#"{"version":1,"orders":{"fresh":{"reason":"cannot create directory: Permission denied","since":1700000000}}}"#,
    )
    .unwrap();
    let (code, line) = at(&["--stale-steps", "10", "--invalid-warning", "1"]);
    assert_eq!(code, 1, "{line}");
    assert!(
        line.contains(", 1 failing (first: fresh: cannot write output (since 1700000000): cannot create directory: Permission denied), 0 stale"),
        "{line}"
    );
    assert!(line.contains("failing=1 "), "{line}");
    // An order its probe cannot measure is CRITICAL, and named first.
    std::fs::write(
        base.join("state/output-errors.json"),
        r#"{"version":1,"orders":{"fresh":{"reason":"cannot create directory: Permission denied","since":1700000000},"old":{"reason":"cannot run /usr/bin/nosuch: No such file or directory","since":1700000020,"kind":"probe"}}}"#,
    )
    .unwrap();
    let (code, line) = at(&["--stale-steps", "10", "--invalid-warning", "1"]);
    assert_eq!(code, 2, "{line}");
    assert!(
        line.starts_with("SPOOLMON ORDERS CRITICAL - 4 active, 1 invalid (first: broken: "),
        "{line}"
    );
    assert!(
        line.contains(", 2 failing (first: old: probe cannot measure (since 1700000020): cannot run /usr/bin/nosuch: No such file or directory), 0 stale"),
        "{line}"
    );
    assert!(line.contains("failing=2 "), "{line}");
}

#[test]
fn orders_names_the_first_stale_order_as_never_measured_even_if_its_file_is_touched() {
    let base = common::Base::new();
    let path = base.path().to_str().unwrap().to_string();
    BaseDir::new(base.path()).create_all().unwrap();
    base.write_order("quiet", &common::ping_order("127.0.0.1", 1, 1));
    let (code, line) = check(&["orders", "--base-dir", &path]);
    assert_eq!(code, 0, "just written: not stale yet: {line}");
    // More than 3 steps of 1 s in whole seconds, however the second boundaries fall.
    std::thread::sleep(std::time::Duration::from_millis(4500));
    // Owners touch order files to keep them from expiring; that must not hide it.
    set_mtime(&base.join("orders/quiet"), now());
    let (code, line) = check(&["orders", "--base-dir", &path]);
    assert_eq!(code, 1, "{line}");
    assert!(
        line.contains("(first: quiet: never measured, step 1 s, stale after 3 steps)"),
        "{line}"
    );
    let (code, line) = check(&["orders", "--base-dir", &path, "--config", "/nonexistent.yaml"]);
    assert_eq!(code, 3, "an unreadable config is UNKNOWN: {line}");
    assert!(line.contains("/nonexistent.yaml"), "{line}");
}

#[test]
fn pull_reports_the_age_of_the_last_published_snapshot() {
    let (_dir, base, path) = base();
    let (code, line) = check(&["pull", "--base-dir", &path]);
    assert_eq!(code, 2, "{line}");
    assert!(line.contains("no HAProxy snapshot was ever published here"), "{line}");
    std::fs::write(
        base.state().join("pull-published"),
        format!("{} 1700000000\n", now() - 100),
    )
    .unwrap();
    let (code, line) = check(&["pull", "--base-dir", &path, "-w", "110", "-c", "300"]);
    assert_eq!(code, 0, "{line}");
    assert!(line.contains("last snapshot 1700000000 published 10"), "{line}");
    assert_eq!(check(&["pull", "--base-dir", &path, "-w", "60", "-c", "300"]).0, 1);
    assert_eq!(check(&["pull", "--base-dir", &path, "-w", "60", "-c", "99"]).0, 2);
    std::fs::write(base.state().join("pull-published"), "garbage\n").unwrap();
    assert_eq!(
        check(&["pull", "--base-dir", &path]).0,
        2,
        "an unreadable record is no record"
    );
    assert_eq!(check(&["pull", "--base-dir", "/nonexistent/spoolmon"]).0, 3);
}

/// Runs a check as the unprivileged user `nobody` (the tests run as root in CI).
fn check_as_nobody(args: &[&str]) -> (i32, String) {
    use std::os::unix::process::CommandExt;
    let out = Command::new(BIN)
        .arg("check")
        .args(args)
        .uid(65534)
        .gid(65534)
        .output()
        .unwrap();
    (
        out.status.code().unwrap(),
        String::from_utf8_lossy(&out.stdout).trim_end().to_string(),
    )
}

#[test]
fn checks_work_as_an_unprivileged_user_with_read_access_and_are_unknown_without() {
    common::require_root("switching the checks to the user nobody");
    use std::os::unix::fs::PermissionsExt;
    let (dir, base, path) = base();
    let readable = std::fs::Permissions::from_mode(0o755);
    std::fs::set_permissions(dir.path(), readable.clone()).unwrap();
    publish(&base, now(), 1);
    for check in ["queue", "failed", "outbox", "orders"] {
        let (code, line) = check_as_nobody(&[check, "--base-dir", &path]);
        assert_eq!(code, 0, "{check} as nobody: {line}");
    }
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
    for check in ["queue", "failed", "outbox", "daemon", "orders", "pull"] {
        let (code, line) = check_as_nobody(&[check, "--base-dir", &path]);
        assert_eq!(code, 3, "{check} without access: {line}");
        assert!(line.contains("Permission denied"), "{line}");
    }
    std::fs::set_permissions(dir.path(), readable).unwrap();
}
