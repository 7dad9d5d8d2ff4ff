//! `spoolmon check ...` as Nagios runs it: real base directories in each state, every
//! threshold boundary, output line and exit code.
//!
//! `check order` and `check orders`' alert thresholds are judged on `last_result` files written
//! here in the documented format (a real daemon on loopback loses no ping, so the loss and RTT
//! boundaries need fixtures: no address answers some pings and not others), and once on the
//! result a real daemon measured.

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
        ..OutboxLimits::default()
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
    // check order: never measured for more than --stale-steps steps is CRITICAL.
    let (code, line) = check(&["order", "quiet", "--base-dir", &path]);
    assert_eq!(code, 2, "{line}");
    assert!(
        line.contains("quiet: never measured: the order was written ")
            && line.contains("(step 1 s, stale after 3 steps)"),
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

// ---------------------------------------------------------------------------------------------
// check order ID, and check orders' alert thresholds
// ---------------------------------------------------------------------------------------------

/// `output/<id>/last_result` in the documented format (spool-layout.md), collected `age` seconds
/// ago: `loss` of `pings` lost, RTTs in seconds (`None`: `~`, nothing answered). Its mtime is
/// `updated`, as when processing writes it (`check orders` judges staleness by the mtime,
/// `check order` by `updated`).
fn result_file(
    base: &common::Base,
    id: &str,
    age: i64,
    (pings, loss): (u32, u32),
    median: Option<f64>,
    max: Option<f64>,
) {
    use spoolmon::output::last_result::format_c_exponent;
    let rtt = |v: Option<f64>| v.map_or_else(|| "~".to_string(), format_c_exponent);
    let updated = now() - age;
    let dir = base.join(&format!("output/{id}"));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("last_result"),
        format!(
            "time: {}\nupdated: {updated}\nstep: 60\npings: {pings}\nloss: {loss}\nmin: {}\nmedian: {}\nmax: {}\n",
            updated - 20,
            rtt(median),
            rtt(median),
            rtt(max)
        ),
    )
    .unwrap();
    set_mtime(&dir.join("last_result"), updated);
}

/// A base with orders/, output/ and state/, and its path as text.
fn order_base() -> (common::Base, String) {
    let base = common::Base::new();
    BaseDir::new(base.path()).create_all().unwrap();
    let path = base.path().to_str().unwrap().to_string();
    (base, path)
}

/// `spoolmon check order <id> --base-dir <path> <args...>`.
fn check_order(path: &str, id: &str, args: &[&str]) -> (i32, String) {
    let mut all = vec!["order", id, "--base-dir", path];
    all.extend_from_slice(args);
    check(&all)
}

#[test]
fn order_alerts_on_loss_count_loss_percent_median_and_max_at_their_boundaries() {
    let (base, path) = order_base();
    base.write_order("app/t", &common::ping_order("127.0.0.1", 60, 20));
    result_file(&base, "app/t", 10, (20, 2), Some(0.05), Some(0.2));
    let (code, line) = check_order(&path, "app/t", &[]);
    assert_eq!(code, 0, "{line}");
    assert!(
        line.starts_with(
            "SPOOLMON ORDER OK - app/t: loss 2/20 (10%), median 50 ms, max 200 ms | \
             loss=2;;;0;20 loss_pct=10%;;;0;100 median=0.05s;;;0 max=0.2s;;;0 age="
        ),
        "{line}"
    );
    assert!(line.ends_with("s;;180;0"), "stale after 3 steps of 60 s: {line}");
    let cases: [(&[&str], i32, &str); 16] = [
        // Loss, a count: a plain value alerts above it.
        (&["-w", "loss=2"], 0, ""),
        (&["-w", "loss=1"], 1, "; warning loss=1 (-w)"),
        (&["-c", "loss=1"], 2, "; critical loss=1 (-c)"),
        (&["-w", "loss=1", "-c", "loss=2"], 1, "; warning loss=1 (-w)"),
        // Loss, a percentage of the pings.
        (&["-w", "loss=10%"], 0, ""),
        (&["-w", "loss=9%"], 1, "; warning loss=9% (-w)"),
        (&["-c", "loss=9.9%"], 2, "; critical loss=9.9% (-c)"),
        // The median RTT, in seconds or with a unit.
        (&["-w", "median=50ms"], 0, ""),
        (&["-w", "median=49ms"], 1, "; warning median=49ms (-w)"),
        (&["-c", "median=0.049"], 2, "; critical median=0.049 (-c)"),
        (&["-c", "median=50000us"], 0, ""),
        // The max RTT; a range alerts outside it, `@` inside.
        (&["-c", "max=200ms"], 0, ""),
        (&["-c", "max=199ms"], 2, "; critical max=199ms (-c)"),
        (&["-w", "max=@0.1:0.3"], 1, "; warning max=@0.1:0.3 (-w)"),
        (&["-w", "max=300ms:1s"], 1, "; warning max=300ms:1s (-w)"),
        // Every metric at once: the worst level wins, each firing threshold is named.
        (
            &["-w", "loss=1,median=49ms", "-c", "loss=50%,max=100ms"],
            2,
            "; warning loss=1 (-w), warning median=49ms (-w), critical max=100ms (-c)",
        ),
    ];
    for (args, expected, fired) in cases {
        let (code, line) = check_order(&path, "app/t", args);
        assert_eq!(code, expected, "{args:?}: {line}");
        let text = line.split(" | ").next().unwrap();
        assert!(
            text.ends_with(&format!("app/t: loss 2/20 (10%), median 50 ms, max 200 ms{fired}")),
            "{args:?}: {line}"
        );
    }
    // Perfdata: each threshold in its metric's unit (the count's and the percentage's apart).
    let (_, line) = check_order(&path, "app/t", &["-w", "loss=1,median=49ms", "-c", "loss=50%,max=1s"]);
    assert!(
        line.contains("| loss=2;1;;0;20 loss_pct=10%;;50;0;100 median=0.05s;0.049;;0 max=0.2s;;1;0 age="),
        "{line}"
    );
    // Nothing answered: an RTT threshold fires (no median is worse than a slow one), `U`.
    result_file(&base, "app/t", 10, (20, 20), None, None);
    let (code, line) = check_order(&path, "app/t", &["-c", "median=1s"]);
    assert_eq!(code, 2, "{line}");
    assert!(
        line.contains("app/t: loss 20/20 (100%), nothing answered; critical median=1s (-c) | ")
            && line.contains("median=U;;1;0 max=U;;;0"),
        "{line}"
    );
}

#[test]
fn order_alert_in_the_order_file_wins_per_level_and_metric_over_the_command_line() {
    let (base, path) = order_base();
    let order = format!(
        "{}alert:\n    warning: {{loss: 50%}}\n    critical: {{median: 10ms}}\n",
        common::ping_order("127.0.0.1", 60, 20)
    );
    base.write_order("app/own", &order);
    result_file(&base, "app/own", 5, (20, 2), Some(0.05), Some(0.06));
    let (code, line) = check_order(&path, "app/own", &[]);
    assert_eq!(code, 2, "the order's own thresholds apply without any option: {line}");
    assert!(line.contains("; critical median=10ms (order's alert:) | "), "{line}");
    assert!(line.contains("median=0.05s;;0.01;0"), "{line}");
    // -c median=1s does not loosen the order's critical median.
    let (code, line) = check_order(&path, "app/own", &["-c", "median=1s"]);
    assert_eq!(code, 2, "{line}");
    assert!(
        line.contains("median=10ms (order's alert:)") && !line.contains("(-c)"),
        "{line}"
    );
    // -w loss=1 does not apply: the order's warning loss (50%) does; -c loss=1 does (the order
    // sets no critical loss).
    let (_, line) = check_order(&path, "app/own", &["-w", "loss=1"]);
    assert!(
        !line.contains("loss=1 (-w)") && line.contains("loss_pct=10%;50;;0;100"),
        "{line}"
    );
    let (code, line) = check_order(&path, "app/own", &["-c", "loss=1"]);
    assert_eq!(code, 2, "{line}");
    assert!(
        line.contains("critical loss=1 (-c), critical median=10ms (order's alert:)"),
        "{line}"
    );
    // The listing shows the order's thresholds as written.
    let out = Command::new(BIN)
        .args(["orders", "--json", "--base-dir", &path])
        .output()
        .unwrap();
    let listing: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        listing[0]["alert"],
        serde_json::json!({"warning": {"loss": "50%"}, "critical": {"median": "10ms"}})
    );
}

#[test]
fn order_is_critical_when_its_target_is_not_measured_and_unknown_before_its_first_result() {
    let (base, path) = order_base();
    let order = common::ping_order("127.0.0.1", 60, 20);
    // Not measured yet: UNKNOWN (the order file is new).
    base.write_order("app/new", &order);
    let (code, line) = check_order(&path, "app/new", &["-c", "loss=1"]);
    assert_eq!(code, 3, "{line}");
    assert!(
        line.starts_with("SPOOLMON ORDER UNKNOWN - app/new: not measured yet: the order was written "),
        "{line}"
    );
    assert!(!line.contains('|'), "no result, no perfdata: {line}");
    // Stale: the last result is older than --stale-steps steps.
    base.write_order("app/old", &order);
    result_file(&base, "app/old", 200, (20, 0), Some(0.001), Some(0.002));
    let (code, line) = check_order(&path, "app/old", &[]);
    assert_eq!(code, 2, "{line}");
    assert!(
        line.contains("app/old: no result for 20")
            && line.contains("s (step 60 s, stale after 3 steps); last: loss 0/20"),
        "{line}"
    );
    assert!(line.contains("| loss=0;;;0;20 "), "the last result's perfdata: {line}");
    assert_eq!(check_order(&path, "app/old", &["--stale-steps", "10"]).0, 0);
    // No such order, or one archived after it was deleted or expired.
    let (code, line) = check_order(&path, "app/none", &[]);
    assert_eq!(
        (code, line.as_str()),
        (2, "SPOOLMON ORDER CRITICAL - app/none: no such order below orders/")
    );
    std::fs::create_dir_all(base.join("archive/app/gone")).unwrap();
    std::fs::write(base.join("archive/app/gone/order.expired"), &order).unwrap();
    std::fs::create_dir_all(base.join("archive/app/deleted")).unwrap();
    let (code, line) = check_order(&path, "app/gone", &[]);
    assert_eq!(code, 2, "{line}");
    assert!(
        line.contains("it expired (not touched for order-timeout), its file and output are in archive/app/gone/"),
        "{line}"
    );
    let (_, line) = check_order(&path, "app/deleted", &[]);
    assert!(
        line.contains("it was deleted, its output is in archive/app/deleted/"),
        "{line}"
    );
    // An invalid order, an invalid alert: the target is not measured.
    base.write_order("app/bad", &order.replace("step: 60", "step: 0"));
    let (code, line) = check_order(&path, "app/bad", &[]);
    assert_eq!(code, 2, "{line}");
    assert!(
        line.contains("app/bad: invalid, not measured: order app/bad: step: 0 is out of range"),
        "{line}"
    );
    base.write_order(
        "app/typo",
        &format!("{order}alert: {{critical: {{loss: 5 percent}}}}\n"),
    );
    let (code, line) = check_order(&path, "app/typo", &[]);
    assert_eq!(code, 2, "{line}");
    assert!(
        line.contains("invalid, not measured: order app/typo: alert.critical.loss: "),
        "{line}"
    );
    // Failing because processing cannot write its output: WARNING (measured, not recorded) with
    // the reason, perfdata kept; failing because its probe cannot measure it: CRITICAL.
    base.write_order("app/failing", &order);
    result_file(&base, "app/failing", 5, (20, 1), Some(0.001), Some(0.002));
    std::fs::write(
        base.join("state/output-errors.json"),
        r#"{"version":1,"orders":{"app/failing":{"reason":"cannot create directory: Permission denied","since":1700000000}}}"#,
    )
    .unwrap();
    let (code, line) = check_order(&path, "app/failing", &["-c", "loss=5"]);
    assert_eq!(code, 1, "{line}");
    assert!(
        line.contains("app/failing: failing: cannot write output (since 1700000000): cannot create directory: Permission denied | loss=1;;5;0;20"),
        "{line}"
    );
    std::fs::write(
        base.join("state/output-errors.json"),
        r#"{"version":1,"orders":{"app/failing":{"reason":"cannot run /nonexistent","since":1700000000,"kind":"probe","at":1700000000}}}"#,
    )
    .unwrap();
    let (code, line) = check_order(&path, "app/failing", &["-c", "loss=5"]);
    assert_eq!(code, 2, "{line}");
    assert!(
        line.contains("app/failing: failing: probe cannot measure (since 1700000000): cannot run /nonexistent |"),
        "{line}"
    );
    // A last_result that cannot be used: UNKNOWN with the reason, never followed.
    base.write_order("app/garbage", &order);
    result_file(&base, "app/garbage", 5, (20, 1), Some(0.001), Some(0.002));
    std::fs::write(base.join("output/app/garbage/last_result"), "time: 1\n").unwrap();
    let (code, line) = check_order(&path, "app/garbage", &[]);
    assert_eq!(code, 3, "{line}");
    assert!(
        line.contains("cannot use output/app/garbage/last_result: last_result has 1 lines"),
        "{line}"
    );
    base.write_order("app/link", &order);
    result_file(&base, "app/other", 5, (20, 1), Some(0.001), Some(0.002));
    std::fs::create_dir_all(base.join("output/app/link")).unwrap();
    std::os::unix::fs::symlink(
        base.join("output/app/other/last_result"),
        base.join("output/app/link/last_result"),
    )
    .unwrap();
    let (code, line) = check_order(&path, "app/link", &[]);
    assert_eq!(code, 3, "{line}");
    assert!(line.contains("symlink (not followed)"), "{line}");
    // An unreadable base, a missing config: UNKNOWN.
    let (code, line) = check_order("/nonexistent/spoolmon", "app/t", &[]);
    assert_eq!(code, 3, "{line}");
    assert!(line.contains("cannot read /nonexistent/spoolmon/orders"), "{line}");
    let (code, line) = check_order(&path, "app/old", &["--config", "/nonexistent.yaml"]);
    assert_eq!(code, 3, "{line}");
    assert!(line.contains("/nonexistent.yaml"), "{line}");
}

#[test]
fn order_refuses_malformed_thresholds_and_hostile_ids_as_unknown() {
    let (base, path) = order_base();
    base.write_order("app/t", &common::ping_order("127.0.0.1", 60, 20));
    result_file(&base, "app/t", 5, (20, 1), Some(0.001), Some(0.002));
    let bad = [
        (
            vec!["-w", "loss=2,max=x"],
            "invalid threshold \"max=x\": \"x\" is not a time",
        ),
        (vec!["-c", "min=1ms"], "unknown metric \"min\""),
        (vec!["-w", "loss"], "\"loss\": expected metric=value"),
        (vec!["-w", "loss=1,loss=2"], "loss is given twice"),
        (vec!["-w", "loss=2,"], "empty item"),
        (vec!["-c", "median=20ms:10ms"], "the start is above the end"),
        (vec!["-c", "loss=101%"], "more than 100%"),
        (vec!["-c", ""], "no threshold given"),
    ];
    for (args, reason) in bad {
        let (code, line) = check_order(&path, "app/t", &args);
        assert_eq!(code, 3, "{args:?}: {line}");
        assert!(
            line.starts_with("SPOOLMON ORDER UNKNOWN - ") && line.contains(reason),
            "{args:?}: {line}"
        );
    }
    let huge = format!("median={}", "9".repeat(100_000));
    let (code, line) = check_order(&path, "app/t", &["-w", &huge]);
    assert_eq!(code, 3);
    assert!(line.len() < 400, "a huge argument gives a short line: {}", line.len());
    let long_part = "x".repeat(300);
    let deep = vec!["d"; 200].join("/");
    let hostile = [
        ("../x", "is not an order id"),
        ("/etc/passwd", "is not an order id"),
        ("app/../../x", "is not an order id"),
        ("app//t", "is not an order id"),
        ("./app/t", "is not an order id"),
        ("app/.hidden", "the daemon ignores the name \".hidden\""),
        ("app/t.tmp", "the daemon ignores"),
        (long_part.as_str(), "a part longer than 255 bytes"),
        (deep.as_str(), "deeper than"),
    ];
    for (id, reason) in hostile {
        let (code, line) = check_order(&path, id, &[]);
        assert_eq!(code, 3, "{id}: {line}");
        assert!(line.contains(reason) && line.len() < 400, "{id}: {line}");
    }
    // clap's own refusals are UNKNOWN too.
    let (code, line) = check(&["order", "--base-dir", &path]);
    assert_eq!(code, 3, "{line}");
    assert!(line.contains("<ID>"), "{line}");
}

#[test]
fn orders_judges_every_order_against_its_thresholds_and_names_the_worst() {
    let (base, path) = order_base();
    let order = common::ping_order("127.0.0.1", 60, 20);
    let own = |alert: &str| format!("{order}alert: {alert}\n");
    base.write_order("a-ok", &order);
    result_file(&base, "a-ok", 5, (20, 0), Some(0.001), Some(0.002));
    base.write_order("b-lossy", &order);
    result_file(&base, "b-lossy", 5, (20, 3), Some(0.001), Some(0.002));
    base.write_order("c-slow", &own("{critical: {median: 10ms}}"));
    result_file(&base, "c-slow", 5, (20, 0), Some(0.05), Some(0.06));
    base.write_order("d-slow-too", &own("{critical: {median: 10ms}}"));
    result_file(&base, "d-slow-too", 5, (20, 0), Some(0.05), Some(0.06));
    // Stale: reported as stale, its old result not judged.
    base.write_order("e-stale", &own("{critical: {loss: 0}}"));
    result_file(&base, "e-stale", 100_000, (20, 20), None, None);
    let at = |args: &[&str]| {
        let mut all = vec!["orders", "--base-dir", &path, "-w", "1"];
        all.extend_from_slice(args);
        check(&all)
    };
    // The orders' own thresholds apply without any option: c and d are critical, c (the first
    // in id order) is named.
    let (code, line) = at(&[]);
    assert_eq!(code, 2, "{line}");
    assert!(
        line.contains(", 1 stale (first: e-stale: ") && line.contains(
            ", 2 alerting (2 critical, 0 warning; worst: c-slow: loss 0/20 (0%), median 50 ms, max 60 ms; critical median=10ms (order's alert:))"
        ),
        "{line}"
    );
    assert!(
        line.ends_with("stale=1;1;10;0 alerting_warning=0 alerting_critical=2"),
        "{line}"
    );
    // --order-warning adds b (over 2 lost) for the orders that say nothing of loss.
    let (code, line) = at(&["--order-warning", "loss=2"]);
    assert_eq!(code, 2, "{line}");
    assert!(
        line.contains(", 3 alerting (2 critical, 1 warning; worst: c-slow: "),
        "{line}"
    );
    assert!(line.ends_with("alerting_warning=1 alerting_critical=2"), "{line}");
    // --order-critical makes b the worst (first of the critical ones in id order).
    let (_, line) = at(&["--order-critical", "loss=10%"]);
    assert!(
        line.contains(", 3 alerting (3 critical, 0 warning; worst: b-lossy: loss 3/20 (15%), median 1 ms, max 2 ms; critical loss=10% (--order-critical))"),
        "{line}"
    );
    // The orders' own critical median beats the option's looser one.
    let (_, line) = at(&["--order-critical", "median=1s"]);
    assert!(
        line.contains(", 2 alerting (2 critical, 0 warning; worst: c-slow: "),
        "{line}"
    );
    // Nothing alerting: OK but for the stale order, the counts still there.
    std::fs::remove_file(base.join("orders/c-slow")).unwrap();
    std::fs::remove_file(base.join("orders/d-slow-too")).unwrap();
    let (code, line) = at(&["--stale-steps", "10000"]);
    assert_eq!(
        code, 2,
        "e-stale's own critical loss=0 fires once it is not stale: {line}"
    );
    assert!(
        line.contains(", 0 stale, 1 alerting (1 critical, 0 warning; worst: e-stale: loss 20/20 (100%), nothing answered; critical loss=0 (order's alert:))"),
        "{line}"
    );
    std::fs::remove_file(base.join("orders/e-stale")).unwrap();
    let (code, line) = at(&["--order-warning", "loss=5"]);
    assert_eq!(code, 0, "{line}");
    assert!(line.ends_with(", 0 stale, 0 alerting | active=2 invalid=0;0;;0 failing=0 stale=0;1;10;0 alerting_warning=0 alerting_critical=0"), "{line}");
    // A last_result that cannot be used by an order with thresholds: a warning, named.
    std::fs::write(base.join("output/b-lossy/last_result"), "garbage\n").unwrap();
    let (code, line) = at(&["--order-warning", "loss=5"]);
    assert_eq!(code, 1, "{line}");
    assert!(
        line.contains("1 alerting (0 critical, 1 warning; worst: b-lossy: cannot use its last_result: "),
        "{line}"
    );
    // A malformed list: UNKNOWN naming the item.
    let (code, line) = at(&["--order-critical", "loss=5,lag=1"]);
    assert_eq!(code, 3, "{line}");
    assert!(
        line.starts_with("SPOOLMON ORDERS UNKNOWN - invalid threshold \"lag=1\""),
        "{line}"
    );
}

#[test]
fn order_judges_the_result_a_real_daemon_measured() {
    let base = common::Base::new();
    let path = base.path().to_str().unwrap().to_string();
    // Its own alert: critical at any loss (loopback answers every ping).
    let order = format!(
        "{}alert: {{critical: {{loss: 0}}}}\n",
        common::ping_order("127.0.0.1", 2, 3)
    );
    base.write_order("app/lo", &order);
    let daemon = base.start(common::FAST);
    common::wait_for(
        "app/lo measured",
        std::time::Duration::from_secs(60),
        Some(&daemon),
        || base.read("output/app/lo/last_result").is_some(),
    );
    // Stopped, so the result checked is the one read here.
    daemon.kill9();
    let text = base.read("output/app/lo/last_result").unwrap();
    let (loss, median, max) = (
        common::field(&text, "loss"),
        common::field(&text, "median"),
        common::field(&text, "max"),
    );
    assert_eq!(loss, "0", "loopback answers: {text}");
    assert_ne!(median, "~", "{text}");
    let seconds = |v: &str| v.parse::<f64>().unwrap();
    let stale = ["--stale-steps", "100000"];
    let (code, line) = check_order(&path, "app/lo", &stale);
    assert_eq!(code, 0, "{line}");
    assert!(
        line.starts_with("SPOOLMON ORDER OK - app/lo: loss 0/3 (0%), median ")
            && line.contains(&format!(
                "| loss=0;;0;0;3 loss_pct=0%;;;0;100 median={}s;;;0 max={}s;;;0 age=",
                seconds(&median),
                seconds(&max)
            )),
        "{line}"
    );
    // Thresholds at the measured values (written as last_result prints them): not above them.
    let at = format!("median={median},max={max}");
    assert_eq!(check_order(&path, "app/lo", &[&stale[..], &["-w", &at]].concat()).0, 0);
    // A range holding the measured median, and one holding the max: inside alerts.
    let inside = format!("median=@0:{median}");
    let (code, line) = check_order(&path, "app/lo", &[&stale[..], &["-w", &inside]].concat());
    assert_eq!(code, 1, "{line}");
    let inside = format!("max=@{max}:{max}");
    let (code, line) = check_order(&path, "app/lo", &[&stale[..], &["-c", &inside]].concat());
    assert_eq!(code, 2, "{line}");
    assert!(line.contains(&format!("critical max=@{max}:{max} (-c)")), "{line}");
    // check orders judges it too: the order's own critical loss does not fire.
    let (code, line) = check(&["orders", "--base-dir", &path, "--stale-steps", "100000"]);
    assert_eq!(code, 0, "{line}");
    assert!(line.contains(", 0 alerting | "), "{line}");
}

#[test]
fn the_readme_example_of_check_order_is_what_it_prints() {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let command = readme
        .lines()
        .find(|l| l.starts_with("$ spoolmon check order app/web1 "))
        .expect("README shows check order");
    let printed = readme
        .lines()
        .find(|l| l.starts_with("SPOOLMON ORDER WARNING - app/web1: "))
        .expect("README shows its line");
    let (base, path) = order_base();
    base.write_order("app/web1", &common::ping_order("192.0.2.1", 20, 20));
    result_file(&base, "app/web1", 12, (20, 2), Some(0.0012), Some(0.0034));
    let args: Vec<&str> = command.split(' ').skip(5).collect();
    let (code, line) = check_order(&path, "app/web1", &args);
    assert_eq!(code, 1, "{line}");
    let upto_age = |l: &str| l.split(" age=").next().unwrap().to_string();
    assert_eq!(upto_age(&line), upto_age(printed));
    assert!(line.ends_with("s;;60;0") && printed.ends_with("s;;60;0"), "{line}");
}
