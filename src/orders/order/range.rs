//! Nagios threshold ranges, as the Nagios plugin guidelines define them: `10` (alert outside
//! 0..10), `10:` (below 10), `~:10` (above 10), `10:20` (outside), `@10:20` (inside).
//!
//! The syntax of every check's `-w`/`-c` (`crate::check` re-exports it as `check::range`) and of
//! the values of an order's `alert:` thresholds ([`super::alert`]), which is why it lives with
//! the order model: the order parser validates them, the checks evaluate them. Pure: no I/O.

use std::fmt;

/// A parsed range; [`Range::alerts`] says whether a value raises the alert.
#[derive(Clone, Debug, PartialEq)]
pub struct Range {
    start: f64,
    end: f64,
    /// `@`: alert inside the range instead of outside.
    inside: bool,
    text: String,
}

/// Why a range does not parse.
#[derive(Debug, thiserror::Error, PartialEq)]
#[error("invalid threshold range {0:?} (expected e.g. 10, 10:, ~:10, 10:20 or @10:20)")]
pub struct InvalidRange(pub String);

impl Range {
    pub fn parse(text: &str) -> Result<Range, InvalidRange> {
        let invalid = || InvalidRange(text.to_owned());
        let (inside, body) = match text.strip_prefix('@') {
            Some(rest) => (true, rest),
            None => (false, text),
        };
        let number = |s: &str| s.trim().parse::<f64>().ok().filter(|v| v.is_finite());
        let (start, end) = match body.split_once(':') {
            None => (0.0, number(body).ok_or_else(invalid)?),
            Some((start, end)) => {
                let start = if start == "~" {
                    f64::NEG_INFINITY
                } else {
                    number(start).ok_or_else(invalid)?
                };
                let end = if end.is_empty() {
                    f64::INFINITY
                } else {
                    number(end).ok_or_else(invalid)?
                };
                (start, end)
            }
        };
        if start > end {
            return Err(invalid());
        }
        Ok(Range {
            start,
            end,
            inside,
            text: text.to_owned(),
        })
    }

    /// True when `value` raises the alert.
    pub fn alerts(&self, value: f64) -> bool {
        let within = self.start <= value && value <= self.end;
        within == self.inside
    }
}

impl fmt::Display for Range {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alerts(range: &str, value: f64) -> bool {
        Range::parse(range).unwrap().alerts(value)
    }

    #[test]
    fn every_form_of_the_guidelines_at_its_boundaries() {
        assert!(!alerts("10", 0.0) && !alerts("10", 10.0));
        assert!(alerts("10", 10.5) && alerts("10", -1.0));
        assert!(!alerts("10:", 10.0) && alerts("10:", 9.9) && !alerts("10:", 1e9));
        assert!(!alerts("~:10", -1e9) && !alerts("~:10", 10.0) && alerts("~:10", 10.1));
        assert!(!alerts("10:20", 10.0) && !alerts("10:20", 20.0) && alerts("10:20", 9.0) && alerts("10:20", 21.0));
        assert!(alerts("@10:20", 10.0) && alerts("@10:20", 20.0) && !alerts("@10:20", 9.0) && !alerts("@10:20", 21.0));
    }

    #[test]
    fn malformed_ranges_are_refused() {
        for bad in ["", "abc", "20:10", "1:2:3", "@", "nan", "inf", "~", ":5x"] {
            assert!(Range::parse(bad).is_err(), "{bad:?}");
        }
    }
}
