//! The listing: each tracked file below `orders/` with its state, probe, target and reason, as
//! `spoolmon orders` prints it (a table or JSON), `spoolmon status` and the checks count it, and
//! self-metrics sum it ([`OrderBook::state_counts`]).
//!
//! Invariants: a listing is read-only (the book's state as it is, or a fresh scan); `failing` is
//! never the book's own state: `crate::output::failures::listing` marks the active orders for
//! which processing recorded in `state/output-errors.json` that their output cannot be written
//! or that their probe could not measure them ([`FailureKind`]). Text shown in the table has
//! control characters replaced, so a file name cannot move the terminal's cursor.
//!
//! Called by `output::failures::listing` (for `spoolmon orders`, `status`, `check orders`),
//! `output::failures::order` (one order, [`fresh_lookup`], for `check order`) and self-metrics.

use super::{Entry, EntryState, OrderBook};
use crate::orders::order::{Alert, Expiry};
use crate::orders::OrderOptions;
use crate::shared::measurement::OrderId;
use crate::spool::BaseDir;
use serde::Serialize;
use std::path::PathBuf;
use std::time::{SystemTime, UNIX_EPOCH};

/// The state of one tracked order file, as listed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum OrderState {
    Active,
    /// Active, but its output cannot be written or its probe cannot measure it (from
    /// `state/output-errors.json`; set by `crate::output::failures::listing`, never by the book
    /// itself).
    Failing,
    Invalid,
    Unresolved,
}

impl OrderState {
    pub fn as_str(self) -> &'static str {
        match self {
            OrderState::Active => "active",
            OrderState::Failing => "failing",
            OrderState::Invalid => "invalid",
            OrderState::Unresolved => "unresolved",
        }
    }
}

/// What makes a `failing` order fail.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FailureKind {
    /// Processing cannot write its output (RRD or `last_result`).
    #[default]
    Output,
    /// Its probe could not measure it in the newest run (missing binary, permission, a name
    /// that does not resolve, ...): its results are unknown, not losses.
    Probe,
}

impl FailureKind {
    pub fn as_str(self) -> &'static str {
        match self {
            FailureKind::Output => "output",
            FailureKind::Probe => "probe",
        }
    }
}

/// One line of `spoolmon orders` (and of its `--json` output).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct OrderStatus {
    pub id: OrderId,
    pub path: PathBuf,
    pub state: OrderState,
    /// Why the order is invalid, unresolved or failing.
    pub reason: Option<String>,
    /// For a `failing` order: what fails (in `--json` only then).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failure: Option<FailureKind>,
    /// Last modification of the order file, unix seconds.
    pub mtime: i64,
    pub probe: Option<String>,
    pub step: Option<u32>,
    pub pings: Option<u32>,
    /// Host, URL or command the order measures.
    pub target: Option<String>,
    /// Harmless oddities of an active order (unknown keys).
    pub warnings: Vec<String>,
    /// When an active order expires: `timeout` (`order-timeout` after `mtime`) or `never`
    /// (`expire: never`); null for the other states.
    pub expire: Option<Expiry>,
    /// An active order's own alert thresholds (`alert:`), each value as written; left out of
    /// the JSON when the order has none.
    #[serde(skip_serializing_if = "Alert::is_empty")]
    pub alert: Alert,
}

impl OrderBook {
    /// Every tracked file with its state, in id order.
    pub fn listing(&self) -> Vec<OrderStatus> {
        self.entries.values().map(status_of).collect()
    }

    /// How many tracked files are in each state (for self-metrics; no copies, unlike `listing`).
    pub fn state_counts(&self) -> Vec<(OrderState, usize)> {
        let mut counts = [0usize; 3];
        for entry in self.entries.values() {
            counts[match entry.state {
                EntryState::Active(_) => 0,
                EntryState::Invalid(_) => 1,
                EntryState::Unresolved(_) => 2,
            }] += 1;
        }
        let states = [OrderState::Active, OrderState::Invalid, OrderState::Unresolved];
        states.into_iter().zip(counts).collect()
    }
}

fn status_of(entry: &Entry) -> OrderStatus {
    let mtime = match entry.order.mtime.duration_since(UNIX_EPOCH) {
        Ok(age) => age.as_secs() as i64,
        Err(before) => -(before.duration().as_secs() as i64),
    };
    let (state, reason) = match &entry.state {
        EntryState::Active(_) => (OrderState::Active, None),
        EntryState::Invalid(reason) => (OrderState::Invalid, Some(reason.clone())),
        EntryState::Unresolved(reason) => (OrderState::Unresolved, Some(reason.clone())),
    };
    let order = match &entry.state {
        EntryState::Active(order) => Some(order),
        _ => None,
    };
    OrderStatus {
        id: entry.id.clone(),
        path: entry.path.clone(),
        state,
        reason,
        failure: None,
        mtime,
        probe: order.map(|o| o.probe.name().to_string()),
        step: order.map(|o| o.step),
        pings: order.map(|o| o.pings),
        target: order.map(|o| o.probe.target()),
        warnings: entry.warnings.clone(),
        expire: order.map(|o| o.expire),
        alert: order.map(|o| Alert::clone(&o.alert)).unwrap_or_default(),
    }
}

/// The state of every file below `orders/` right now, from a fresh scan (for `spoolmon orders`,
/// which runs without the daemon). No order is `failing` here: that is output's record, added by
/// [`crate::output::failures::listing`], which is what the commands and checks call.
pub fn fresh_scan(base: &BaseDir, options: &OrderOptions) -> Vec<OrderStatus> {
    let mut book = OrderBook::new(base.clone(), options.clone());
    book.rescan(SystemTime::now());
    book.listing()
}

/// The state of order `id` right now, as [`fresh_scan`] would list it, from a look at its own
/// path alone (`orders/<id>`: the book's refresh of that path, with the same symlink, size and
/// name rules), so a check of one order costs one order's parse (and host lookup), not the whole
/// directory's. `None` when no such order is tracked (no file, or a name the book ignores).
pub fn fresh_lookup(base: &BaseDir, options: &OrderOptions, id: &OrderId) -> Option<OrderStatus> {
    let mut book = OrderBook::new(base.clone(), options.clone());
    book.refresh(&[base.orders().join(id.as_path())], SystemTime::now());
    book.entries.values().find(|entry| entry.id == *id).map(status_of)
}

/// A human-readable table of a listing: id, state, probe, step/pings, target, reason (for an
/// active order: `expire: never` and its warnings).
pub fn format_table(statuses: &[OrderStatus]) -> String {
    let mut rows = vec![TABLE_HEADER.map(String::from).to_vec()];
    rows.extend(statuses.iter().map(|status| table_row(status).to_vec()));
    render_table(&rows)
}

/// The header of [`format_table`], one name per cell of [`table_row`].
pub const TABLE_HEADER: [&str; 6] = ["ID", "STATE", "PROBE", "STEP/PINGS", "TARGET", "REASON"];

/// One row of [`format_table`], control characters already replaced (the reason last, so a
/// wider listing can insert its columns before it).
pub fn table_row(status: &OrderStatus) -> [String; 6] {
    let shape = match (status.step, status.pings) {
        (Some(step), Some(pings)) => format!("{step}s/{pings}"),
        _ => "-".to_string(),
    };
    let mut reason = status.reason.clone().unwrap_or_default();
    if reason.is_empty() {
        let mut notes = Vec::new();
        if status.expire == Some(Expiry::Never) {
            notes.push("expire: never".to_string());
        }
        if !status.warnings.is_empty() {
            notes.push(format!("warning: {}", status.warnings.join("; ")));
        }
        reason = notes.join("; ");
    }
    [
        printable(status.id.as_str()),
        status.state.as_str().to_string(),
        status.probe.clone().unwrap_or_else(|| "-".to_string()),
        shape,
        printable(status.target.as_deref().unwrap_or("-")),
        printable(&reason),
    ]
}

/// `rows` (the header first) as aligned columns, two spaces apart, the last cell unpadded and
/// no line with trailing spaces. Cells are printed as they are: the caller replaces control
/// characters ([`printable`]).
pub fn render_table(rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = Vec::new();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            if widths.len() <= i {
                widths.push(0);
            }
            widths[i] = widths[i].max(cell.chars().count());
        }
    }
    let mut table = String::new();
    for row in rows {
        let mut line = String::new();
        for (i, (cell, width)) in row.iter().zip(&widths).enumerate() {
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
pub fn printable(text: &str) -> String {
    text.chars().map(|c| if c.is_control() { '?' } else { c }).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::orders::book::fixture::*;

    #[test]
    fn listing_serializes_state_as_a_word_and_the_table_names_each_order() {
        let mut f = Fixture::new();
        f.write("a/good", VALID);
        f.write("a/bad", VALID.replace("step: 20", "step: 0"));
        f.rescan();
        let listing = crate::orders::fresh_scan(&f.base, &OrderOptions::default());
        let json = serde_json::to_value(&listing).unwrap();
        let states: Vec<&str> = json
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["state"].as_str().unwrap())
            .collect();
        assert_eq!(states, ["invalid", "active"]);
        assert_eq!(json[1]["step"], 20);
        let table = crate::orders::format_table(&listing);
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines.len(), 3, "{table}");
        assert!(lines[1].starts_with("a/bad") && lines[1].contains("step: 0"), "{table}");
        assert!(lines[2].contains("a/good") && lines[2].contains("20s/3"), "{table}");
    }

    #[test]
    fn looking_up_one_order_lists_it_exactly_as_the_whole_scan_does() {
        let f = Fixture::new();
        f.write("a/good", format!("{VALID}alert: {{warning: {{loss: 10%}}}}\n"));
        f.write("a/bad", VALID.replace("step: 20", "step: 0"));
        f.write("a/.hidden", VALID);
        f.write("deep/er/order", VALID);
        f.write("outside", VALID);
        std::os::unix::fs::symlink("../outside", f.path("a/inside-link")).unwrap();
        std::os::unix::fs::symlink("/etc/passwd", f.path("a/escape")).unwrap();
        std::os::unix::fs::symlink(f.path("deep"), f.path("linked-dir")).unwrap();
        let options = OrderOptions::default();
        let scan = crate::orders::fresh_scan(&f.base, &options);
        assert!(scan.len() >= 6, "{scan:?}");
        for status in &scan {
            let one = fresh_lookup(&f.base, &options, &status.id);
            assert_eq!(one.as_ref(), Some(status), "{}", status.id);
        }
        let good = scan.iter().find(|s| s.id.as_str() == "a/good").unwrap();
        assert_eq!(good.alert.warning.loss.as_ref().unwrap().written, "10%");
        for absent in ["a/.hidden", "a/none", "a", "deep/er", "../outside"] {
            let Ok(id) = OrderId::new(absent) else { continue };
            assert_eq!(fresh_lookup(&f.base, &options, &id), None, "{absent}");
        }
    }
}
