//! Orders: the user-owned YAML files below `orders/` that say what to measure.
//!
//! - [`order`]: the order model and its parsing/validation (pure: text in, [`order::Order`] or a
//!   reasoned error out);
//! - [`book`]: the order book, which tracks every file below `orders/` (and `telegraf/<id>`),
//!   emits Added / Changed / Removed / Expired events and lists each file's state.
//!
//! [`listing`] also shows active orders whose output cannot be written as `failing`, with the
//! reason processing recorded in `state/output-errors.json` (see [`crate::output::failures`]).
//!
//! Nothing here writes below `orders/`: a bad order is reported and left where the user put it;
//! expired orders are moved by the caller (the daemon's archive step).

pub mod book;
pub mod order;
pub mod watch;

use crate::config::Config;
use crate::spool::BaseDir;
use book::{OrderBook, OrderState, OrderStatus};
use std::time::SystemTime;

/// The state of every file below `orders/` right now, from a fresh scan (for `spoolmon orders`,
/// which runs without the daemon); active orders listed in `state/output-errors.json` are
/// `failing`, with the reason.
pub fn listing(base: &BaseDir, config: &Config) -> Vec<OrderStatus> {
    let mut book = OrderBook::new(base.clone(), config.clone());
    book.rescan(SystemTime::now());
    let mut statuses = book.listing();
    mark_failing(base, &mut statuses);
    statuses
}

/// Marks the active orders whose output processing could not write (an unreadable record is
/// logged and changes nothing).
fn mark_failing(base: &BaseDir, statuses: &mut [OrderStatus]) {
    let errors = match crate::output::failures::read(base) {
        Ok(errors) => errors,
        Err(e) => {
            tracing::warn!("cannot read the failing orders: {e}");
            return;
        }
    };
    for status in statuses.iter_mut().filter(|s| s.state == OrderState::Active) {
        if let Some(failure) = errors.orders.get(status.id.as_str()) {
            status.state = OrderState::Failing;
            status.reason = Some(format!(
                "cannot write output (since {}): {}",
                failure.since, failure.reason
            ));
        }
    }
}

/// A human-readable table of a listing: id, state, probe, step/pings, target, reason.
pub fn format_table(statuses: &[OrderStatus]) -> String {
    let rows: Vec<[String; 6]> = statuses
        .iter()
        .map(|status| {
            let shape = match (status.step, status.pings) {
                (Some(step), Some(pings)) => format!("{step}s/{pings}"),
                _ => "-".to_string(),
            };
            let mut reason = status.reason.clone().unwrap_or_default();
            if reason.is_empty() && !status.warnings.is_empty() {
                reason = format!("warning: {}", status.warnings.join("; "));
            }
            [
                printable(status.id.as_str()),
                status.state.as_str().to_string(),
                status.probe.clone().unwrap_or_else(|| "-".to_string()),
                shape,
                printable(status.target.as_deref().unwrap_or("-")),
                printable(&reason),
            ]
        })
        .collect();
    let header = ["ID", "STATE", "PROBE", "STEP/PINGS", "TARGET", "REASON"].map(String::from);
    let mut widths = header.clone().map(|h| h.chars().count());
    for row in &rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let mut table = String::new();
    for row in std::iter::once(&header).chain(&rows) {
        let mut line = String::new();
        for (i, (cell, width)) in row.iter().zip(widths).enumerate() {
            if i + 1 == row.len() {
                line.push_str(cell);
            } else {
                line.push_str(&format!("{cell:<width$}  "));
            }
        }
        table.push_str(line.trim_end());
        table.push('\n');
    }
    table
}

/// `text` with control characters (from file names or YAML errors) shown as `?`, so a listing
/// cannot move the terminal's cursor.
fn printable(text: &str) -> String {
    text.chars().map(|c| if c.is_control() { '?' } else { c }).collect()
}
