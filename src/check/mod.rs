//! `spoolmon check ...`: Nagios plugins that read only the base directory (no daemon needed,
//! read access is enough). Output `SPOOLMON <CHECK> <STATUS> - text | perfdata`, exit code
//! 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN (base directory missing or unreadable).
//!
//! Parts: the spool's queues (`spool`), the daemon's lock and heartbeat (`daemon`), the pull
//! collector (`pull`), the nodes this one receives from (`children`), all orders (`orders`), one order's last result against alert thresholds
//! (`order`, whose evaluation `check orders` shares). The Nagios ranges are the order model's
//! ([`range`], re-exported: an order's `alert:` values use the same syntax).

mod children;
mod daemon;
mod order;
mod orders;
mod pull;
mod spool;

pub use crate::orders::order::range;
pub use children::check_children;
pub use daemon::check_daemon;
pub use order::{check_order, OrderLimits};
pub use orders::{check_orders, OrderThresholds};
pub use pull::check_pull;
pub use range::{InvalidRange, Range};
pub use spool::{check_failed, check_outbox, check_queue};

use std::fmt::Write as _;

use crate::shared::clock::unix_secs as unix_now;

/// Largest state record read (they are one short line).
const MAX_RECORD_BYTES: u64 = 4096;

/// Why a state record gave no time.
enum RecordProblem {
    /// Missing, or not `<unix seconds> <rest>` (no record): the text says which.
    Missing(String),
    /// Unreadable or not a regular file (a FIFO is refused at once, never waited on).
    Unreadable(String),
}

/// The state record `state/<name>` of the form `<unix seconds> <rest>`: the time and the rest of
/// the line. Opened through the base's descriptors, non-blocking, regular files only.
fn recorded_time(base: &crate::spool::BaseDir, name: &str) -> Result<(i64, String), RecordProblem> {
    let bytes = base
        .dir("state")
        .and_then(|state| state.read_limited(name, MAX_RECORD_BYTES))
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => {
                RecordProblem::Missing(format!("{} is missing", base.state().join(name).display()))
            }
            _ => RecordProblem::Unreadable(e.to_string()),
        })?;
    let malformed = || {
        RecordProblem::Missing(format!(
            "{} is not `<unix seconds> <detail>`",
            base.state().join(name).display()
        ))
    };
    let text = std::str::from_utf8(&bytes).map_err(|_| malformed())?;
    let line = text.lines().next().ok_or_else(malformed)?;
    let (time, rest) = line.split_once(' ').unwrap_or((line, ""));
    Ok((time.parse().map_err(|_| malformed())?, rest.trim().to_string()))
}

/// A Nagios plugin status; its number is the exit code.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Status {
    Ok = 0,
    Warning = 1,
    Critical = 2,
    Unknown = 3,
}

impl Status {
    fn label(self) -> &'static str {
        match self {
            Status::Ok => "OK",
            Status::Warning => "WARNING",
            Status::Critical => "CRITICAL",
            Status::Unknown => "UNKNOWN",
        }
    }
}

/// Warning and critical ranges for one value.
#[derive(Clone, Debug, PartialEq)]
pub struct Thresholds {
    pub warning: Option<Range>,
    pub critical: Option<Range>,
}

impl Thresholds {
    /// Parses `-w`/`-c` texts (either may be absent).
    pub fn parse(warning: Option<&str>, critical: Option<&str>) -> Result<Thresholds, InvalidRange> {
        Ok(Thresholds {
            warning: warning.map(Range::parse).transpose()?,
            critical: critical.map(Range::parse).transpose()?,
        })
    }

    /// The status `value` has under these thresholds.
    pub fn status(&self, value: f64) -> Status {
        if self.critical.as_ref().is_some_and(|r| r.alerts(value)) {
            Status::Critical
        } else if self.warning.as_ref().is_some_and(|r| r.alerts(value)) {
            Status::Warning
        } else {
            Status::Ok
        }
    }
}

/// One perfdata value: `label=value[unit];warn;crit;min[;max]` (only `label=value[unit]` without
/// thresholds and maximum).
#[derive(Clone, Debug, PartialEq)]
pub struct Perf {
    pub label: String,
    /// NaN: the value could not be determined (an RTT when nothing answered), printed `U` as
    /// the plugin guidelines say.
    pub value: f64,
    pub unit: &'static str,
    pub thresholds: Option<Thresholds>,
    /// The largest value possible (the pings of a loss count), printed after the minimum 0.
    pub max: Option<f64>,
}

/// What a check found.
#[derive(Clone, Debug, PartialEq)]
pub struct Outcome {
    pub check: &'static str,
    pub status: Status,
    pub text: String,
    pub perf: Vec<Perf>,
}

impl Outcome {
    /// UNKNOWN with a reason (e.g. the base directory cannot be read).
    pub fn unknown(check: &'static str, reason: String) -> Outcome {
        Outcome {
            check,
            status: Status::Unknown,
            text: reason,
            perf: Vec::new(),
        }
    }

    /// The plugin's one line of output.
    pub fn line(&self) -> String {
        // One line, and no `|` before the perfdata: both would change what Nagios reads.
        let text = self.text.replace(['\n', '\r'], " ").replace('|', "/");
        let mut line = format!(
            "SPOOLMON {} {} - {}",
            self.check.to_uppercase(),
            self.status.label(),
            text
        );
        if !self.perf.is_empty() {
            line.push_str(" |");
            for perf in &self.perf {
                let _ = write!(line, " {}=", perf_label(&perf.label));
                if perf.value.is_nan() {
                    line.push('U');
                } else {
                    let _ = write!(line, "{}{}", perf.value, perf.unit);
                }
                if perf.thresholds.is_some() || perf.max.is_some() {
                    let text = |r: Option<&Range>| r.map(|r| r.to_string()).unwrap_or_default();
                    let t = perf.thresholds.as_ref();
                    let _ = write!(
                        line,
                        ";{};{};0",
                        text(t.and_then(|t| t.warning.as_ref())),
                        text(t.and_then(|t| t.critical.as_ref()))
                    );
                }
                if let Some(max) = perf.max {
                    let _ = write!(line, ";{max}");
                }
            }
        }
        line
    }

    pub fn exit_code(&self) -> u8 {
        self.status as u8
    }
}

/// A perfdata label, quoted when it holds a space or a quote.
fn perf_label(label: &str) -> String {
    if label.contains([' ', '\'', '=']) {
        format!("'{}'", label.replace('\'', "''"))
    } else {
        label.to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn critical_wins_over_warning_and_the_line_follows_the_plugin_format() {
        let t = Thresholds::parse(Some("10"), Some("50")).unwrap();
        assert_eq!(
            (t.status(10.0), t.status(11.0), t.status(51.0)),
            (Status::Ok, Status::Warning, Status::Critical)
        );
        let outcome = Outcome {
            check: "queue",
            status: Status::Warning,
            text: "11 snapshots waiting".into(),
            perf: vec![Perf {
                label: "snapshots".into(),
                value: 11.0,
                unit: "",
                thresholds: Some(t),
                max: None,
            }],
        };
        assert_eq!(
            outcome.line(),
            "SPOOLMON QUEUE WARNING - 11 snapshots waiting | snapshots=11;10;50;0"
        );
        assert_eq!(outcome.exit_code(), 1);
        assert_eq!(perf_label("a b'c"), "'a b''c'");
        let undetermined = Outcome {
            perf: vec![
                Perf {
                    label: "median".into(),
                    value: f64::NAN,
                    unit: "s",
                    thresholds: Some(Thresholds::parse(None, Some("0.1")).unwrap()),
                    max: None,
                },
                Perf {
                    label: "loss".into(),
                    value: 3.0,
                    unit: "",
                    thresholds: None,
                    max: Some(20.0),
                },
            ],
            ..outcome.clone()
        };
        assert!(
            undetermined.line().ends_with("| median=U;;0.1;0 loss=3;;;0;20"),
            "{}",
            undetermined.line()
        );
        let hostile = Outcome::unknown("orders", "bad | order\nreason".into());
        assert_eq!(hostile.line(), "SPOOLMON ORDERS UNKNOWN - bad / order reason");
    }
}
