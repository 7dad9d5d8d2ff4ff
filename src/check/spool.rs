//! Checks of the spool's queues: `incoming/`, `failed/` and each sink's outbox.

use super::{unix_now, Outcome, Perf, Status, Thresholds};
use crate::sink::backlog;
use crate::spool::queue::{self, QueueEntry};
use crate::spool::BaseDir;
use std::path::Path;
use std::time::SystemTime;

fn readable_dir(check: &'static str, dir: &Path) -> Result<(), Outcome> {
    match std::fs::read_dir(dir) {
        Ok(_) => Ok(()),
        Err(e) => Err(Outcome::unknown(check, format!("cannot read {}: {e}", dir.display()))),
    }
}

/// `check queue`: snapshots waiting in `incoming/` (not counting those that only wait for the
/// RRD flush) against `count`, and the age of the oldest waiting one (seconds) against `age`.
pub fn check_queue(base: &BaseDir, count: &Thresholds, age: &Thresholds, now: SystemTime) -> Outcome {
    if let Err(outcome) = readable_dir("queue", &base.incoming()) {
        return outcome;
    }
    let entries = match queue::list(base) {
        Ok(entries) => entries,
        Err(e) => return Outcome::unknown("queue", format!("cannot list {}: {e}", base.incoming().display())),
    };
    let (mut waiting, mut flush, mut oldest) = (0usize, 0usize, None::<i64>);
    for entry in &entries {
        match entry {
            QueueEntry::Snapshot(name) if queue::is_applied(base, name.as_str()) => flush += 1,
            QueueEntry::Snapshot(name) => {
                waiting += 1;
                oldest = Some(oldest.map_or(name.epoch, |o: i64| o.min(name.epoch)));
            }
            QueueEntry::Invalid(_) => waiting += 1,
        }
    }
    let oldest_age = oldest.map_or(0, |epoch| (unix_now(now) - epoch).max(0));
    let status = count.status(waiting as f64).max(age.status(oldest_age as f64));
    let text = match oldest {
        Some(_) => {
            format!("{waiting} snapshots waiting, the oldest for {oldest_age} s; {flush} wait for the RRD flush")
        }
        None => format!("no snapshot waiting; {flush} wait for the RRD flush"),
    };
    Outcome {
        check: "queue",
        status,
        text,
        perf: vec![
            perf("snapshots", waiting as f64, "", count),
            perf("oldest_age", oldest_age as f64, "s", age),
            Perf {
                label: "waiting_for_rrd_flush".into(),
                value: flush as f64,
                unit: "",
                thresholds: None,
                max: None,
            },
        ],
    }
}

/// `check failed`: snapshots quarantined in `failed/` against `count`.
pub fn check_failed(base: &BaseDir, count: &Thresholds) -> Outcome {
    let entries = match std::fs::read_dir(base.failed()) {
        Ok(entries) => entries,
        Err(e) => return Outcome::unknown("failed", format!("cannot read {}: {e}", base.failed().display())),
    };
    let mut names: Vec<String> = entries
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|name| !name.ends_with(".REASON"))
        .collect();
    names.sort();
    let failed = names.len();
    let text = match names.first() {
        Some(first) => format!("{failed} snapshots in failed/ (first: {first}; see its REASON)"),
        None => "no snapshot in failed/".to_string(),
    };
    Outcome {
        check: "failed",
        status: count.status(failed as f64),
        text,
        perf: vec![perf("failed", failed as f64, "", count)],
    }
}

/// `check outbox`: per sink, the age of the oldest undelivered line (seconds) against `age`;
/// lines dropped at the outbox's bound make it at least WARNING.
pub fn check_outbox(base: &BaseDir, age: &Thresholds, now: SystemTime) -> Outcome {
    if let Err(outcome) = readable_dir("outbox", base.root()) {
        return outcome;
    }
    let backlogs = match backlog::read_all(&base.outbox(), now) {
        Ok(backlogs) => backlogs,
        Err(e) => return Outcome::unknown("outbox", format!("cannot read {}: {e}", base.outbox().display())),
    };
    let mut status = Status::Ok;
    let mut parts = Vec::new();
    let mut perfs = Vec::new();
    for b in &backlogs {
        if let Some(error) = &b.error {
            status = status.max(Status::Unknown);
            parts.push(format!("{}: unreadable ({error})", b.sink));
            continue;
        }
        let oldest = b.oldest_age_seconds.unwrap_or(0);
        status = status.max(age.status(oldest as f64));
        if !b.problems.is_empty() {
            status = status.max(Status::Warning);
            parts.push(format!("{}: {}", b.sink, b.problems.join("; ")));
        }
        if b.dropped_lines > 0 {
            status = status.max(Status::Warning);
        }
        parts.push(format!(
            "{}: {} lines waiting, oldest {} s, {} dropped",
            b.sink, b.lines, oldest, b.dropped_lines
        ));
        perfs.push(perf(&format!("{}_oldest_age", b.sink), oldest as f64, "s", age));
        perfs.push(Perf {
            label: format!("{}_lines", b.sink),
            value: b.lines as f64,
            unit: "",
            thresholds: None,
            max: None,
        });
        perfs.push(Perf {
            label: format!("{}_dropped", b.sink),
            value: b.dropped_lines as f64,
            unit: "c",
            thresholds: None,
            max: None,
        });
    }
    let text = if parts.is_empty() {
        "no sink has an outbox".to_string()
    } else {
        parts.join("; ")
    };
    Outcome {
        check: "outbox",
        status,
        text,
        perf: perfs,
    }
}

fn perf(label: &str, value: f64, unit: &'static str, thresholds: &Thresholds) -> Perf {
    Perf {
        label: label.to_owned(),
        value,
        unit,
        thresholds: Some(thresholds.clone()),
        max: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_linked_applied_mark_leaves_the_snapshot_waiting() {
        let dir = tempfile::tempdir().unwrap();
        let base = BaseDir::new(dir.path().join("base"));
        base.create_all().unwrap();
        let outside = dir.path().join("elsewhere");
        std::fs::write(&outside, "").unwrap();
        let snapshot = base.incoming().join("1700000000-ping-1");
        std::fs::create_dir(&snapshot).unwrap();
        std::os::unix::fs::symlink(&outside, snapshot.join(queue::APPLIED_MARK)).unwrap();
        let none = Thresholds::parse(None, None).unwrap();
        let outcome = check_queue(&base, &none, &none, SystemTime::now());
        assert!(
            outcome.text.starts_with("1 snapshots waiting") && outcome.text.ends_with("0 wait for the RRD flush"),
            "{}",
            outcome.text
        );
    }
}
