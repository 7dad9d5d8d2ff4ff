//! Crash safety: kill -9 while a backlog is being processed, restart, and prove that every
//! snapshot was applied exactly once (right value at the right time) and none is left or failed.

mod common;

use common::*;
use spoolmon::shared::measurement::{OrderId, OrderResult};
use spoolmon::spool::snapshot::{encode_ping, SnapshotName, PING_FILE};
use spoolmon::spool::{queue, BaseDir};
use std::collections::HashMap;
use std::time::Duration;

const STEP: i64 = 60;
const STEPS: i64 = 600;
const ORDERS: usize = 100;

/// RTT of ping `p` of step `k` for order `o`: distinct per step, so a value in the RRD proves
/// which snapshot it came from.
fn rtt(o: usize, k: i64, p: usize) -> f64 {
    1e-4 * (1.0 + k as f64) + 1e-6 * (o as f64) + 1e-7 * p as f64
}

fn backlog(base: &BaseDir, t0: i64) {
    for k in 0..STEPS {
        let results: Vec<OrderResult> = (0..ORDERS)
            .map(|o| {
                OrderResult::builder(OrderId::new(format!("crash/{o}")).unwrap(), t0 + k * STEP)
                    .step(STEP as u32)
                    .rtts((0..3).map(|p| Some(rtt(o, k, p))))
                    .build()
            })
            .collect();
        let name = SnapshotName::new(t0 + k * STEP, "test", k as u64);
        queue::publish(base, &name, &[(PING_FILE, &encode_ping("test", &results))]).unwrap();
    }
}

/// `rrdtool fetch` rows of the 1-step RRA: timestamp -> median.
fn medians(rrd: &std::path::Path, start: i64, end: i64) -> HashMap<i64, f64> {
    let out = rrdtool(&[
        "fetch",
        rrd.to_str().unwrap(),
        "AVERAGE",
        "-r",
        "60",
        "-s",
        &start.to_string(),
        "-e",
        &end.to_string(),
    ]);
    out.lines()
        .filter_map(|line| {
            let (ts, values) = line.split_once(':')?;
            let ts: i64 = ts.trim().parse().ok()?;
            let median: f64 = values.split_whitespace().nth(1)?.parse().ok()?;
            (!median.is_nan()).then_some((ts, median))
        })
        .collect()
}

#[test]
fn kill_9_during_processing_then_restart_applies_every_snapshot_exactly_once() {
    let base = Base::new();
    let spool = BaseDir::new(base.path());
    spool.create_all().unwrap();
    for o in 0..ORDERS {
        // 127.0.0.x answers, but live measurements land after the backlog and are not checked.
        base.write_order(&format!("crash/{o}"), &ping_order("127.0.0.1", STEP as u32, 3));
    }
    let now = spoolmon::shared::clock::unix_now();
    let t0 = now - now % STEP - (STEPS + 10) * STEP;
    backlog(&spool, t0);
    let total = base.count("incoming");
    assert_eq!(total, STEPS as usize);

    // First kill: shortly after start-up, while snapshots are being read and RRDs written.
    let daemon = base.start(FAST);
    wait_for("daemon running", Duration::from_secs(60), Some(&daemon), || {
        daemon.log_text().contains("spoolmon running")
    });
    std::thread::sleep(Duration::from_millis(50));
    daemon.kill9();
    // Second kill: the moment the first snapshot of the remaining backlog is removed, i.e. in the
    // middle of a round's removals.
    let before = base.count("incoming");
    let daemon = base.start(FAST);
    let started = std::time::Instant::now();
    while base.count("incoming") >= before && started.elapsed() < Duration::from_secs(60) {
        std::thread::sleep(Duration::from_millis(1));
    }
    daemon.kill9();
    let at_kill = base.count("incoming");
    assert!(
        at_kill > 0 && at_kill < before,
        "kill did not land mid-round: {at_kill} of {before} left"
    );
    let daemon = base.start(FAST);
    wait_for("backlog drained", Duration::from_secs(120), Some(&daemon), || {
        queue::list(&spool).unwrap().iter().all(|e| match e {
            queue::QueueEntry::Snapshot(s) => s.epoch > t0 + STEPS * STEP,
            queue::QueueEntry::Invalid(_) => false,
        })
    });
    drop(daemon);
    assert_every_step_applied_once(&base, t0);
}

/// Every order's RRD holds every step's median exactly where it belongs, nothing was
/// quarantined, and `last_result` shows the newest step.
fn assert_every_step_applied_once(base: &Base, t0: i64) {
    assert_eq!(base.count("failed"), 0, "no snapshot may be quarantined");
    for o in 0..ORDERS {
        let rrd = base.join(&format!("output/crash/{o}/main.rrd"));
        let got = medians(&rrd, t0, t0 + STEPS * STEP);
        for k in 0..STEPS {
            let ts = t0 + k * STEP + STEP;
            let expected = rtt(o, k, 1);
            let value = got
                .get(&ts)
                .copied()
                .unwrap_or_else(|| panic!("order {o} step {k} (t={ts}) missing"));
            assert!(
                (value - expected).abs() < 1e-9,
                "order {o} step {k}: {value} != {expected}"
            );
        }
    }
    let last = base.read("output/crash/0/last_result").unwrap();
    assert!(field(&last, "time").parse::<i64>().unwrap() >= t0 + (STEPS - 1) * STEP);
}

/// Snapshots in `incoming/` that hold the "applied, waiting for the RRD flush" marker.
fn marked(base: &Base) -> usize {
    std::fs::read_dir(base.join("incoming"))
        .unwrap()
        .filter(|e| e.as_ref().unwrap().path().join(queue::APPLIED_MARK).exists())
        .count()
}

#[test]
fn kill_9_while_results_wait_for_the_rrd_flush_then_restart_applies_every_snapshot_once() {
    let base = Base::new();
    let spool = BaseDir::new(base.path());
    spool.create_all().unwrap();
    for o in 0..ORDERS {
        base.write_order(&format!("crash/{o}"), &ping_order("127.0.0.1", STEP as u32, 3));
    }
    let now = spoolmon::shared::clock::unix_now();
    let t0 = now - now % STEP - (STEPS + 10) * STEP;
    backlog(&spool, t0);
    // An hour's flush interval: the backlog gets its last_result and sink lines and is marked,
    // RRD updates wait. Kill while the markers are being written.
    let journaled = "rescan-interval: 2\nrrd-flush-interval: 3600\n";
    let daemon = base.start(journaled);
    let started = std::time::Instant::now();
    while marked(&base) == 0 && started.elapsed() < Duration::from_secs(60) {
        std::thread::sleep(Duration::from_millis(1));
    }
    daemon.kill9();
    // Usually the kill lands while markers are being written; on a busy machine it may land
    // after the last one. Both are crashes the restart must survive, so neither is an error.
    let at_kill = marked(&base);
    assert!(at_kill > 0, "nothing was marked before the kill");
    // Restart: the marked backlog is older than the interval, so the first flush round applies
    // every RRD update. Kill it as soon as it removes the first snapshot.
    let daemon = base.start(journaled);
    let started = std::time::Instant::now();
    while base.count("incoming") >= STEPS as usize && started.elapsed() < Duration::from_secs(60) {
        std::thread::sleep(Duration::from_millis(1));
    }
    daemon.kill9();
    assert!(base.count("incoming") < STEPS as usize, "no flush round started");
    // Last restart, stopped with SIGTERM: stopping flushes whatever still waits.
    let daemon = base.start(journaled);
    wait_for("backlog applied", Duration::from_secs(120), Some(&daemon), || {
        queue::list(&spool).unwrap().iter().all(|e| match e {
            queue::QueueEntry::Snapshot(s) => s.epoch > t0 + STEPS * STEP,
            queue::QueueEntry::Invalid(_) => false,
        })
    });
    assert!(daemon.terminate(Duration::from_secs(60)).is_some_and(|s| s.success()));
    assert_eq!(
        base.count("incoming"),
        0,
        "SIGTERM left snapshots waiting for the flush"
    );
    assert_every_step_applied_once(&base, t0);
}
