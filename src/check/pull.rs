//! `check pull`: how long ago the HAProxy pull collector last published a snapshot.

use super::{recorded_time, unix_now, Outcome, Perf, RecordProblem, Status, Thresholds};
use crate::spool::state::LAST_PUBLISHED_FILE;
use crate::spool::BaseDir;
use std::time::SystemTime;

/// The age (seconds) of the last published snapshot, from `state/pull-published`, against
/// `age`. CRITICAL when nothing was ever published on this base; UNKNOWN when `state/` cannot
/// be read.
pub fn check_pull(base: &BaseDir, age: &Thresholds, now: SystemTime) -> Outcome {
    if let Err(e) = std::fs::read_dir(base.state()) {
        return Outcome::unknown("pull", format!("cannot read {}: {e}", base.state().display()));
    }
    let (published, snapshot) = match recorded_time(base, LAST_PUBLISHED_FILE) {
        Ok(found) => found,
        Err(RecordProblem::Missing(why)) => {
            return Outcome {
                check: "pull",
                status: Status::Critical,
                text: format!("no HAProxy snapshot was ever published here ({why})"),
                perf: Vec::new(),
            }
        }
        Err(RecordProblem::Unreadable(why)) => {
            return Outcome::unknown("pull", format!("the last-published record is unreadable: {why}"))
        }
    };
    let published_age = (unix_now(now) - published).max(0);
    Outcome {
        check: "pull",
        status: age.status(published_age as f64),
        text: format!("last snapshot {snapshot} published {published_age} s ago"),
        perf: vec![Perf {
            label: "published_age".into(),
            value: published_age as f64,
            unit: "s",
            thresholds: Some(age.clone()),
            max: None,
        }],
    }
}
