//! Checks shared by every stage's option structs (sinks, the HAProxy collector and processing):
//! the error that names the bad key, and seconds given as floats turned into [`Duration`]s.

use std::time::Duration;

/// An option value a sink cannot work with; `key` is the dotted config key, e.g. `graphite.port`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{key}: {reason}")]
pub struct InvalidOption {
    pub key: String,
    pub reason: String,
}

impl InvalidOption {
    pub fn new(key: &str, reason: impl Into<String>) -> InvalidOption {
        InvalidOption {
            key: key.to_string(),
            reason: reason.into(),
        }
    }
}

/// Checks that `value` seconds is a finite number of at least `min` seconds.
pub fn check_seconds(key: &str, value: f64, min: f64) -> Result<(), InvalidOption> {
    if value.is_finite() && value >= min && Duration::try_from_secs_f64(value).is_ok() {
        Ok(())
    } else {
        Err(InvalidOption::new(
            key,
            format!("{value} is not a number of seconds >= {min}"),
        ))
    }
}

/// `value` seconds as a [`Duration`], saturating: values [`check_seconds`] rejects become zero
/// (negative, NaN) or [`Duration::MAX`] (too large).
pub fn seconds(value: f64) -> Duration {
    Duration::try_from_secs_f64(value).unwrap_or(if value > 0.0 { Duration::MAX } else { Duration::ZERO })
}

/// Checks that `value` contains no whitespace or control character (they end a protocol field).
pub fn check_printable(key: &str, value: &str) -> Result<(), InvalidOption> {
    match value.chars().find(|c| c.is_whitespace() || c.is_control()) {
        Some(c) => Err(InvalidOption::new(key, format!("{value:?} contains {c:?}"))),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seconds_accept_fractions_and_reject_nonsense() {
        assert_eq!(seconds(1.8), Duration::from_millis(1800));
        assert!(check_seconds("k", 0.5, 0.0).is_ok());
        for bad in [-1.0, f64::NAN, f64::INFINITY, 1e30] {
            let err = check_seconds("graphite.interval", bad, 0.0).unwrap_err();
            assert_eq!(err.key, "graphite.interval");
        }
        assert_eq!(seconds(f64::NAN), Duration::ZERO);
        assert_eq!(seconds(1e30), Duration::MAX);
    }

    #[test]
    fn printable_rejects_whitespace_and_controls() {
        assert!(check_printable("k", "lb-01").is_ok());
        assert!(check_printable("k", "a b").is_err());
        assert!(check_printable("k", "a\nb").is_err());
    }
}
