//! Messages that would repeat every step (a missing binary, a bad proxy) are logged once per
//! target and distinct message, and again only after the target worked in between. The probes
//! log them at debug: the reason travels with the order's result, and processing logs when the
//! order starts and stops failing.
//!
//! Invariant: memory is bounded; past [`MAX_REMEMBERED`] entries the memory is reset, which at
//! worst repeats a warning. Owns nothing on disk.

use std::collections::HashSet;
use std::sync::{Mutex, PoisonError};

/// Most (target, message) pairs remembered at once.
pub(crate) const MAX_REMEMBERED: usize = 4096;

/// The (target, message) pairs already logged.
#[derive(Debug, Default)]
pub(crate) struct WarnOnce {
    logged: Mutex<HashSet<(String, String)>>,
}

impl WarnOnce {
    /// Remembers `message` about `target` without logging it; returns whether it is new (the
    /// caller logs it then, at the level it chooses).
    pub(crate) fn remember(&self, target: &str, message: &str) -> bool {
        let mut logged = self.logged.lock().unwrap_or_else(PoisonError::into_inner);
        if logged.contains(&(target.to_owned(), message.to_owned())) {
            return false;
        }
        if logged.len() >= MAX_REMEMBERED {
            logged.clear();
        }
        logged.insert((target.to_owned(), message.to_owned()));
        true
    }

    /// Forgets the warnings about `target`, so a later failure is logged again.
    pub(crate) fn forget(&self, target: &str) {
        let mut logged = self.logged.lock().unwrap_or_else(PoisonError::into_inner);
        if logged.iter().any(|(t, _)| t == target) {
            logged.retain(|(t, _)| t != target);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_warning_is_logged_once_until_the_target_is_forgotten() {
        let warnings = WarnOnce::default();
        assert!(warnings.remember("a", "missing binary"));
        assert!(!warnings.remember("a", "missing binary"));
        assert!(warnings.remember("a", "other error"));
        assert!(warnings.remember("b", "missing binary"));
        warnings.forget("a");
        assert!(warnings.remember("a", "missing binary"));
        assert!(!warnings.remember("b", "missing binary"));
    }

    #[test]
    fn memory_stays_bounded_under_endless_distinct_messages() {
        let warnings = WarnOnce::default();
        for i in 0..(MAX_REMEMBERED * 3) {
            warnings.remember("t", &format!("error {i}"));
        }
        let remembered = warnings.logged.lock().expect("lock").len();
        assert!(remembered <= MAX_REMEMBERED, "{remembered}");
    }
}
