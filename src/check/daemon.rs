//! `check daemon`: a live process holds the base directory's lock and its heartbeat is fresh.

use super::{recorded_time, unix_now, Outcome, Perf, RecordProblem, Status, Thresholds};
use crate::spool::state::HEARTBEAT_FILE;
use crate::spool::{lock, BaseDir};
use std::time::SystemTime;

/// CRITICAL when no process holds `state/lock`; otherwise the heartbeat's age (seconds)
/// against `age`. UNKNOWN when `state/` cannot be read.
pub fn check_daemon(base: &BaseDir, age: &Thresholds, now: SystemTime) -> Outcome {
    if let Err(e) = std::fs::read_dir(base.state()) {
        return Outcome::unknown("daemon", format!("cannot read {}: {e}", base.state().display()));
    }
    let Some(pid) = lock::holder(&base.state().join(lock::LOCK_FILE)) else {
        return Outcome {
            check: "daemon",
            status: Status::Critical,
            text: format!("no spoolmon holds {}", base.state().join(lock::LOCK_FILE).display()),
            perf: Vec::new(),
        };
    };
    let (beat, _pid) = match recorded_time(base, HEARTBEAT_FILE) {
        Ok(record) => record,
        Err(RecordProblem::Missing(why)) => {
            return Outcome {
                check: "daemon",
                status: Status::Critical,
                text: format!("pid {pid} holds the lock but has no heartbeat ({why})"),
                perf: Vec::new(),
            }
        }
        Err(RecordProblem::Unreadable(why)) => {
            return Outcome::unknown(
                "daemon",
                format!("pid {pid} holds the lock but the heartbeat is unreadable: {why}"),
            )
        }
    };
    let beat_age = (unix_now(now) - beat).max(0);
    Outcome {
        check: "daemon",
        status: age.status(beat_age as f64),
        text: format!("pid {pid} running, heartbeat {beat_age} s ago"),
        perf: vec![Perf {
            label: "heartbeat_age".into(),
            value: beat_age as f64,
            unit: "s",
            thresholds: Some(age.clone()),
            max: None,
        }],
    }
}
