//! The one clock of spoolmon: wall-clock time as unix seconds or milliseconds.
//!
//! A time before 1970 (a clock set far back) reads as 0 rather than failing: every caller stamps
//! records or compares ages, and a zero is visibly wrong in `spoolmon status` without stopping
//! measurement. Called by every stage; owns nothing on disk.

use std::time::{SystemTime, UNIX_EPOCH};

/// Seconds since the epoch of `t` (0 before the epoch).
pub fn unix_secs(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64)
}

/// Milliseconds since the epoch of `t` (0 before the epoch).
pub fn unix_millis(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// Seconds since the epoch, now.
pub fn unix_now() -> i64 {
    unix_secs(SystemTime::now())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn times_before_the_epoch_read_as_zero() {
        let before = UNIX_EPOCH - Duration::from_secs(5);
        assert_eq!((unix_secs(before), unix_millis(before)), (0, 0));
        let t = UNIX_EPOCH + Duration::from_millis(1_700_000_000_123);
        assert_eq!((unix_secs(t), unix_millis(t)), (1_700_000_000, 1_700_000_000_123));
        assert!(unix_now() > 1_600_000_000);
    }
}
