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
use anyhow::Result;
use std::process::ExitCode;

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

/// The id to show: see [`crate::orders::write::lookup_id`].
fn show_id(text: &str) -> Result<OrderId> {
    Ok(crate::orders::write::lookup_id(text)?)
}

#[cfg(test)]
mod tests {
    use super::*;

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
