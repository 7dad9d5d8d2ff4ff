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

/// `secs` (unix seconds) as `YYYY-MM-DD HH:MM:SS` in UTC (proleptic Gregorian calendar), for
/// reports that show times to people (`spoolmon show`).
pub fn utc_text(secs: i64) -> String {
    let days = secs.div_euclid(86_400);
    let of_day = secs.rem_euclid(86_400);
    // Howard Hinnant's civil_from_days: days since 1970-01-01 to (year, month, day).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02}",
        of_day / 3600,
        of_day % 3600 / 60,
        of_day % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn utc_text_agrees_with_date() {
        let cases = [0i64, 951_782_400, 1_700_000_000, 1_709_164_799, 4_102_444_800, -86_401];
        for secs in cases {
            let out = std::process::Command::new("date")
                .args(["-u", "-d", &format!("@{secs}"), "+%Y-%m-%d %H:%M:%S"])
                .output()
                .unwrap();
            assert!(out.status.success());
            assert_eq!(
                utc_text(secs),
                String::from_utf8(out.stdout).unwrap().trim_end(),
                "{secs}"
            );
        }
    }

    #[test]
    fn times_before_the_epoch_read_as_zero() {
        let before = UNIX_EPOCH - Duration::from_secs(5);
        assert_eq!((unix_secs(before), unix_millis(before)), (0, 0));
        let t = UNIX_EPOCH + Duration::from_millis(1_700_000_000_123);
        assert_eq!((unix_secs(t), unix_millis(t)), (1_700_000_000, 1_700_000_000_123));
        assert!(unix_now() > 1_600_000_000);
    }
}
