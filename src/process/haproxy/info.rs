//! `show info`: `Key: value` lines, ending with an empty line. Only the keys spoolmon aggregates
//! ([`DAEMON_SUMS`] and [`DAEMON_MEANS`]) are kept; their values must be numbers. Other keys
//! (`Name`, `Version`, `Uptime`, …) and lines without `": "` are ignored, as haproxystats does.

use super::catalog::{DAEMON_MEANS, DAEMON_SUMS};
use super::error::HaproxySnapshotError;
use super::stat::parse_number;

/// The aggregated `show info` fields of one process, in [`daemon_field_names`] order; `None`
/// where this HAProxy version does not report the field.
#[derive(Clone, Debug, PartialEq)]
pub struct DaemonFields {
    pub socket: String,
    pub values: Vec<Option<f64>>,
}

impl DaemonFields {
    /// The value of `key` (one of [`daemon_field_names`]), if this process reported it.
    pub fn get(&self, key: &str) -> Option<f64> {
        field_index(key).and_then(|i| self.values[i])
    }
}

/// Every aggregated `show info` key: the summed ones, then the averaged ones.
pub fn daemon_field_names() -> impl Iterator<Item = &'static str> {
    DAEMON_SUMS.iter().chain(DAEMON_MEANS.iter()).copied()
}

fn field_index(key: &str) -> Option<usize> {
    daemon_field_names().position(|name| name == key)
}

/// Parses the `show info` text `text` of the file `file` (for error messages).
pub fn parse_info(file: &str, socket: &str, text: &str) -> Result<DaemonFields, HaproxySnapshotError> {
    let mut values = vec![None; DAEMON_SUMS.len() + DAEMON_MEANS.len()];
    let mut found = false;
    for (number, line) in text.lines().enumerate() {
        let Some((key, value)) = line.split_once(": ") else {
            continue;
        };
        let Some(index) = field_index(key) else { continue };
        let parsed = parse_number(value.trim().as_bytes()).ok_or_else(|| HaproxySnapshotError::NotANumber {
            file: file.to_owned(),
            line: number + 1,
            field: key.to_owned(),
            value: value.to_owned(),
        })?;
        values[index] = Some(parsed);
        found = true;
    }
    if !found {
        return Err(HaproxySnapshotError::Garbage {
            file: file.to_owned(),
            reason: "none of the `show info` fields spoolmon aggregates (Maxconn, CurrConns, Idle_pct, …)".into(),
        });
    }
    if !text.ends_with("\n\n") {
        return Err(HaproxySnapshotError::Truncated { file: file.to_owned() });
    }
    Ok(DaemonFields {
        socket: socket.to_owned(),
        values,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_keys_are_kept_and_text_fields_ignored() {
        let text = "Name: HAProxy\nUptime: 0d 0h00m38s\nUptime_sec: 38\nMaxconn: 4000\nIdle_pct: 97\n\n";
        let fields = parse_info("p_info", "p", text).unwrap();
        assert_eq!(fields.get("Maxconn"), Some(4000.0));
        assert_eq!(fields.get("Idle_pct"), Some(97.0));
        assert_eq!(fields.get("MaxZlibMemUsage"), None);
    }

    #[test]
    fn a_known_key_with_a_non_numeric_value_is_an_error() {
        let err = parse_info("p_info", "p", "Maxconn: 4000\nCurrConns: lots\n\n").unwrap_err();
        assert_eq!(err.to_string(), "p_info line 2: CurrConns is \"lots\", not a number");
    }

    #[test]
    fn garbage_and_truncated_answers_are_errors() {
        let garbage = parse_info("p_info", "p", "hello world\nfoo: bar\n\n").unwrap_err();
        assert!(matches!(garbage, HaproxySnapshotError::Garbage { .. }), "{garbage}");
        let truncated = parse_info("p_info", "p", "Maxconn: 4000\nCurrCo").unwrap_err();
        assert!(
            matches!(truncated, HaproxySnapshotError::Truncated { .. }),
            "{truncated}"
        );
    }
}
