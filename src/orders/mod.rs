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

use crate::spool::BaseDir;
use book::{OrderBook, OrderState, OrderStatus};
use std::time::SystemTime;

/// What the orders stage takes from the configuration (`Config::order_options` builds it from
/// the keys of the same names; the defaults live here).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OrderOptions {
    /// Seconds after its last modification at which an active order expires (`order-timeout`).
    pub order_timeout: u64,
    /// Command for `sping:` orders (`sping-command`; placeholders as in `exec:` orders).
    pub sping_command: Vec<String>,
    /// Command for `pping:` orders (`pping-command`).
    pub pping_command: Vec<String>,
}

impl Default for OrderOptions {
    /// One hour and a minute; both SCION tools run as `scion ping` (pingmachine's defaults).
    fn default() -> Self {
        let scion_ping = || {
            [
                "scion",
                "ping",
                "--count",
                "{pings}",
                "--interval",
                "{interval_ms}ms",
                "{host}",
            ]
            .map(String::from)
            .to_vec()
        };
        OrderOptions {
            order_timeout: 3660,
            sping_command: scion_ping(),
            pping_command: scion_ping(),
        }
    }
}

/// The state of every file below `orders/` right now, from a fresh scan (for `spoolmon orders`,
/// which runs without the daemon); active orders listed in `state/output-errors.json` are
/// `failing`, with the reason.
pub fn listing(base: &BaseDir, options: &OrderOptions) -> Vec<OrderStatus> {
    let mut book = OrderBook::new(base.clone(), options.clone());
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
