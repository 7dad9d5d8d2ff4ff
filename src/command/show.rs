//! `spoolmon show ID [--range DURATION] [--json]`: one order's state, last result and recent
//! steps from its `main.rrd` ([`crate::output::show::report`]), as text or one JSON object.
//! Reads only; runs beside the daemon.
//!
//! Exit status: 0 when the report was printed (also when its `last_result` or `main.rrd`
//! cannot be read: that is named in the report); 1 when the id is no order and has neither
//! output nor an archive entry; 2 for a hostile or malformed id, a bad `--range` (clap's usage
//! error) or a base directory that is not one.

use super::{load_config, BaseArgs};
use crate::shared::measurement::OrderId;
use anyhow::{bail, Result};
use std::process::ExitCode;

/// The longest `--range`: 520 weeks, what the longest archive spoolmon writes covers.
pub const MAX_RANGE: u64 = 520 * 7 * 86_400;

/// An id longer than this cannot name a path (PATH_MAX, 4096 bytes with the final NUL).
const MAX_ID_BYTES: usize = 4095;

pub fn run(base: BaseArgs, id: &str, range: u64, json: bool) -> Result<ExitCode> {
    let id = show_id(id)?;
    let config = load_config(base.config.as_deref())?;
    let base_dir = super::orders_base(&base)?;
    let now = crate::shared::clock::unix_now();
    let Some(report) = crate::output::show::report(&base_dir, &config.order_options(), &id, range, now) else {
        eprintln!(
            "spoolmon: no order {:?}: not below {}/orders/, output/ or archive/",
            id.as_str(),
            base.base_dir.display()
        );
        return Ok(ExitCode::from(1));
    };
    if json {
        super::print_stdout(serde_json::to_string_pretty(&report)? + "\n")?;
    } else {
        super::print_stdout(crate::output::show::format_text(&report))?;
    }
    Ok(ExitCode::SUCCESS)
}

/// The id to show: a valid order id the daemon would read (see `order add`), of printable
/// characters and short enough to be a path.
fn show_id(text: &str) -> Result<OrderId> {
    if text.len() > MAX_ID_BYTES {
        bail!(
            "order id of {} bytes refused: longer than any path can be ({MAX_ID_BYTES} bytes)",
            text.len()
        );
    }
    if text.chars().any(char::is_control) {
        let shown: String = crate::orders::book::printable(text).chars().take(80).collect();
        bail!("order id {shown:?} refused: it contains control characters");
    }
    super::order::order_id(text)
}

/// `--range`: a positive whole number of seconds, optionally with one unit (`s`, `m`, `h`, `d`,
/// `w`): `30m`, `1h`, `6h`, `1d`, `7d`, `3600`; at most [`MAX_RANGE`].
pub fn parse_range(text: &str) -> Result<u64, String> {
    let (digits, unit) = match text.char_indices().find(|(_, c)| !c.is_ascii_digit()) {
        Some((at, _)) => text.split_at(at),
        None => (text, ""),
    };
    if digits.is_empty() {
        return Err(format!(
            "{text:?} is not a duration: it needs a number (30m, 1h, 1d, 3600)"
        ));
    }
    let multiplier = match unit {
        "" | "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        "w" => 7 * 86_400,
        _ => {
            return Err(format!(
                "{text:?} is not a duration: a whole number with an optional unit s, m, h, d or w (30m, 1h, 6h, 1d, 7d, 3600)"
            ))
        }
    };
    let too_long = || format!("{text:?} is longer than the longest archive: at most 520w (3640d)");
    let number: u64 = digits.parse().map_err(|_| too_long())?;
    let seconds = number.checked_mul(multiplier).ok_or_else(too_long)?;
    if seconds == 0 {
        return Err("the range must be longer than 0 seconds".to_string());
    }
    if seconds > MAX_RANGE {
        return Err(too_long());
    }
    Ok(seconds)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_take_seconds_and_the_usual_units() {
        let cases = [
            ("30m", 1800),
            ("1h", 3600),
            ("6h", 21_600),
            ("1d", 86_400),
            ("7d", 604_800),
            ("3600", 3600),
            ("90s", 90),
            ("2w", 1_209_600),
            ("1", 1),
            ("0060", 60),
            ("520w", MAX_RANGE),
            ("3640d", MAX_RANGE),
        ];
        for (text, seconds) in cases {
            assert_eq!(parse_range(text), Ok(seconds), "{text}");
        }
    }

    #[test]
    fn zero_negative_huge_and_garbage_ranges_are_refused() {
        let cases = [
            ("0", "longer than 0"),
            ("0h", "longer than 0"),
            ("-1h", "needs a number"),
            ("-5", "needs a number"),
            ("", "needs a number"),
            ("h", "needs a number"),
            ("1.5h", "not a duration"),
            ("1h30m", "not a duration"),
            ("1y", "not a duration"),
            ("1 h", "not a duration"),
            (" 1h", "needs a number"),
            ("1H", "not a duration"),
            ("１h", "needs a number"),
            ("3641d", "longest archive"),
            ("521w", "longest archive"),
            ("99999999999999999999999", "longest archive"),
            ("18446744073709551615w", "longest archive"),
            ("abc", "needs a number"),
            ("1h\n", "not a duration"),
        ];
        for (text, expected) in cases {
            let error = parse_range(text).expect_err(text);
            assert!(error.contains(expected), "{text:?}: {error}");
        }
    }

    #[test]
    fn hostile_ids_are_refused_before_anything_is_read() {
        let huge = "a".repeat(5000);
        let cases = [
            ("../x", "invalid order id"),
            ("a/../../x", "invalid order id"),
            ("/etc/passwd", "invalid order id"),
            ("", "invalid order id"),
            ("a//b", "invalid order id"),
            ("./a", "invalid order id"),
            ("a\nb", "control characters"),
            ("a\u{1b}[2J", "control characters"),
            ("a\0b", "control characters"),
            (huge.as_str(), "longer than any path"),
            (".hidden", "ignores"),
        ];
        for (id, expected) in cases {
            let error = show_id(id).expect_err(id).to_string();
            assert!(error.contains(expected), "{id:?}: {error}");
            assert!(!error.contains('\u{1b}') && !error.contains('\n'), "{error:?}");
        }
        assert_eq!(show_id("app/target-1").unwrap().as_str(), "app/target-1");
    }
}
