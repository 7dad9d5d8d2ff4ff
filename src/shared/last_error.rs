//! The most recent error of one component (processing, a sink's delivery, the puller, the
//! scheduler, the config of a reload), kept in memory for `state/status*.json` and `spoolmon
//! status`. Every stage that can fail without stopping keeps one and calls
//! [`LastError::succeeded`] when it has worked again (a delivery, a published cycle or run, a
//! clean processing round, a reload taken): an error is shown only until the part's next
//! success, so status does not keep reporting a part that has recovered. The observers
//! (self-metrics, status) only read it.

use serde::{Deserialize, Serialize};
use std::sync::Mutex;

/// Longest message kept, in bytes (the log has the rest).
const MAX_MESSAGE: usize = 500;

/// One error: when it happened and what it said.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorRecord {
    /// Unix seconds.
    pub time: i64,
    pub message: String,
}

/// The latest error of a component; cheap to set from any thread.
#[derive(Debug, Default)]
pub struct LastError(Mutex<Option<ErrorRecord>>);

impl LastError {
    /// Replaces the record with `message`, stamped now (cut to [`MAX_MESSAGE`] bytes).
    pub fn set(&self, message: impl Into<String>) {
        let mut message = message.into();
        if message.len() > MAX_MESSAGE {
            let mut end = MAX_MESSAGE;
            while !message.is_char_boundary(end) {
                end -= 1;
            }
            message.truncate(end);
            message.push('…');
        }
        let record = ErrorRecord {
            time: super::clock::unix_now(),
            message,
        };
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = Some(record);
    }

    /// The part has worked since: the error is no longer current and [`LastError::get`]
    /// returns `None` until the next [`LastError::set`].
    pub fn succeeded(&self) {
        let mut record = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if record.is_some() {
            *record = None;
        }
    }

    /// The error, if the part has not worked since it happened.
    pub fn get(&self) -> Option<ErrorRecord> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_newest_error_wins_and_long_messages_are_cut_on_a_character_boundary() {
        let last = LastError::default();
        assert_eq!(last.get(), None);
        last.set("first");
        last.set("é".repeat(400));
        let record = last.get().unwrap();
        assert!(record.message.starts_with('é') && record.message.ends_with('…'));
        assert!(record.message.len() <= MAX_MESSAGE + '…'.len_utf8());
        assert!(record.time > 1_600_000_000);
    }

    #[test]
    fn a_success_clears_the_error_until_the_next_one() {
        let last = LastError::default();
        last.succeeded();
        assert_eq!(last.get(), None);
        last.set("refused");
        last.succeeded();
        assert_eq!(last.get(), None);
        last.set("refused again");
        assert_eq!(last.get().unwrap().message, "refused again");
    }
}
