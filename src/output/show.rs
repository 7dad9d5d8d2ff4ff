//! `spoolmon show ID`: one order's report: its state as `spoolmon orders` lists it (with the
//! failing reason and the expiry), its last result ([`super::last_result::read`]) and its recent
//! steps from `main.rrd` ([`super::history::read`]), as text or one JSON object.
//!
//! Reads only, beside the daemon; owns nothing on disk. Where the data is read: `output/<id>/`
//! when the order is listed (any state) or its output is still there without an order file;
//! otherwise `archive/<id>/` (an archived order); an id in none of them is unknown ([`report`]
//! says `None`). Invariants: an unreadable `last_result` or `main.rrd` never fails the report, it
//! is that part's error (shown in its place); text from files (ids, targets, reasons, librrd's
//! messages) has control characters replaced before it reaches the terminal.
//!
//! Called by `command::show`.

use super::history::{self, History, HistoryError, WindowEnd};
use super::last_result::{self, ReadError};
use super::wide::{duration, expires_in, milliseconds};
use crate::orders::book::{printable, render_table, OrderState, OrderStatus};
use crate::orders::order::Expiry;
use crate::orders::OrderOptions;
use crate::shared::clock::utc_text;
use crate::shared::measurement::OrderId;
use crate::spool::beneath::Dir;
use crate::spool::BaseDir;
use serde::Serialize;
use std::io;

/// Where an order's data was read from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Location {
    Output,
    Archive,
}

impl Location {
    fn dir_name(self) -> &'static str {
        match self {
            Location::Output => "output",
            Location::Archive => "archive",
        }
    }
}

/// The report of one order (`spoolmon show ID`, and its `--json`).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Report {
    pub id: OrderId,
    /// `output` (`output/<id>/`) or `archive` (`archive/<id>/`: the order is archived).
    pub location: Location,
    /// The order as `spoolmon orders --json` lists it (state, reason, probe, target, step,
    /// pings, ...); null when there is no order file.
    pub order: Option<OrderStatus>,
    /// Seconds until the order expires (negative: overdue); null for `expire: never` and
    /// without an active order.
    pub expires_in: Option<i64>,
    /// The newest result; null when there is none or it cannot be read.
    pub last_result: Option<LastResultView>,
    /// Why `last_result` could not be read (null when read, or never measured).
    pub last_result_error: Option<String>,
    /// The recent steps from `main.rrd`; null when there is none or it cannot be read.
    pub history: Option<History>,
    /// Why `main.rrd` could not be read (or that there is none).
    pub history_error: Option<String>,
}

/// The newest result (`last_result`), times in unix seconds, round-trip times in seconds.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct LastResultView {
    /// Start of the measured step.
    pub time: i64,
    /// When the result was collected.
    pub updated: i64,
    /// Seconds since `updated` (0 if it is in the future).
    pub age: i64,
    pub step: u32,
    pub pings: u32,
    /// Lost pings (a count of `pings`).
    pub loss: u32,
    pub loss_percent: f64,
    /// Null when nothing answered.
    pub min: Option<f64>,
    pub median: Option<f64>,
    pub max: Option<f64>,
}

/// The report of `id`, its steps over the `range` seconds before `now`; `None` when the id is
/// neither an order below `orders/` nor has output or an archive entry.
pub fn report(base: &BaseDir, options: &OrderOptions, id: &OrderId, range: u64, now: i64) -> Option<Report> {
    // That one order, not a scan of orders/ (which would resolve every order's host).
    let order = super::failures::order(base, options, id);
    let output = layout_dir(base, "output");
    let location = if order.is_some() || present(&output, id) {
        Location::Output
    } else if present(&layout_dir(base, "archive"), id) {
        Location::Archive
    } else {
        return None;
    };
    let parent = match location {
        Location::Output => output,
        Location::Archive => layout_dir(base, location.dir_name()),
    };
    let (last_result, last_result_error) = match &parent {
        Ok(dir) => match last_result::read(dir, id) {
            Ok(r) => (Some(LastResultView::new(&r, now)), None),
            Err(ReadError::Missing) => (None, None),
            Err(e) => (None, Some(e.to_string())),
        },
        Err(None) => (None, None),
        Err(Some(reason)) => (None, Some(reason.clone())),
    };
    // An archived order is measured no more: its last hour is the one before its last update.
    let window_end = match location {
        Location::Output => WindowEnd::Now,
        Location::Archive => WindowEnd::LastUpdate,
    };
    let (history, history_error) = match &parent {
        Ok(dir) => match history::read(dir, id, range, window_end, now) {
            Ok(h) => (Some(h), None),
            Err(e) => (None, Some(e.to_string())),
        },
        Err(None) => (None, Some(HistoryError::Missing.to_string())),
        Err(Some(reason)) => (None, Some(reason.clone())),
    };
    let expires_in = order.as_ref().and_then(|o| expires_in(o, options, now));
    Some(Report {
        id: id.clone(),
        location,
        order,
        expires_in,
        last_result,
        last_result_error,
        history,
        history_error,
    })
}

/// A layout directory held open: `Err(None)` when it does not exist, `Err(Some(reason))` when
/// it cannot be opened (a symlink in its place).
fn layout_dir(base: &BaseDir, name: &str) -> Result<Dir, Option<String>> {
    match base.dir(name) {
        Ok(dir) => Ok(dir),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Err(None),
        Err(e) => Err(Some(format!("cannot open {name}/: {e}"))),
    }
}

/// Whether `<parent>/<id>` exists in any form (also when it cannot be opened: a symlink, a
/// file, a parent that cannot be opened), so that it is shown with its error, not as unknown.
fn present(parent: &Result<Dir, Option<String>>, id: &OrderId) -> bool {
    match parent {
        Ok(dir) => !matches!(dir.open_dir(id.as_path()), Err(e) if e.kind() == io::ErrorKind::NotFound),
        Err(None) => false,
        Err(Some(_)) => true,
    }
}

impl LastResultView {
    fn new(result: &last_result::LastResult, now: i64) -> LastResultView {
        LastResultView {
            time: result.time,
            updated: result.updated,
            age: now.saturating_sub(result.updated).max(0),
            step: result.step,
            pings: result.pings,
            loss: result.loss,
            loss_percent: if result.pings == 0 {
                0.0
            } else {
                f64::from(result.loss) * 100.0 / f64::from(result.pings)
            },
            min: result.min,
            median: result.median,
            max: result.max,
        }
    }
}

/// Round-trip time `seconds` as the tables show it (`0.045ms`), `-` when unknown.
fn rtt(seconds: Option<f64>) -> String {
    seconds.map_or_else(|| "-".to_string(), |s| milliseconds(s * 1000.0))
}

/// A loss count (an average over several steps may be fractional) of `pings`: `0/3`, `1.5/3`.
fn loss_text(loss: Option<f64>, pings: u32) -> String {
    let Some(loss) = loss else {
        return "-".to_string();
    };
    let count = if (loss - loss.round()).abs() < 1e-9 {
        format!("{}", loss.round())
    } else {
        format!("{loss:.1}")
    };
    if pings == 0 {
        count
    } else {
        format!("{count}/{pings}")
    }
}

/// The text report: a few `label: value` lines, the table of recent steps and the sparklines.
pub fn format_text(report: &Report) -> String {
    let mut lines: Vec<(String, String)> = Vec::new();
    let id = printable(report.id.as_str());
    let state = match (&report.order, report.location) {
        (Some(order), _) => match &order.reason {
            Some(reason) => format!("{}: {}", order.state.as_str(), printable(reason)),
            None => order.state.as_str().to_string(),
        },
        (None, Location::Output) => format!("no order file; output/{id}/ not archived yet"),
        (None, Location::Archive) => format!("archived: no order file, data from archive/{id}/"),
    };
    lines.push(("order".into(), format!("{id} ({state})")));
    if let Some(order) = report
        .order
        .as_ref()
        .filter(|o| matches!(o.state, OrderState::Active | OrderState::Failing))
    {
        lines.push(("probe".into(), probe_line(order, report.expires_in)));
    }
    let last = match (&report.last_result, &report.last_result_error) {
        (Some(r), _) => format!(
            "{} UTC ({} ago): loss {}/{} ({:.0}%), median {}, min {}, max {}",
            utc_text(r.time),
            duration(r.age),
            r.loss,
            r.pings,
            r.loss_percent,
            rtt(r.median),
            rtt(r.min),
            rtt(r.max)
        ),
        (None, Some(error)) => format!("cannot be read: {}", printable(error)),
        (None, None) => "none (not measured yet)".to_string(),
    };
    lines.push(("last result".into(), last));
    let mut tail = String::new();
    match (&report.history, &report.history_error) {
        (Some(h), _) => {
            lines.push(("history".into(), history_line(h)));
            tail = history_table(h);
        }
        (None, Some(error)) => lines.push(("history".into(), format!("cannot be shown: {}", printable(error)))),
        (None, None) => {}
    }
    let width = lines.iter().map(|(label, _)| label.len()).max().unwrap_or(0) + 1;
    let mut text: String = lines
        .iter()
        .map(|(label, value)| format!("{:<width$} {value}\n", format!("{label}:")))
        .collect();
    if !tail.is_empty() {
        text.push('\n');
        text.push_str(&tail);
    }
    text
}

fn probe_line(order: &OrderStatus, expires_in: Option<i64>) -> String {
    let mut parts = vec![format!(
        "{} {}",
        order.probe.as_deref().unwrap_or("-"),
        printable(order.target.as_deref().unwrap_or("-"))
    )];
    if let (Some(step), Some(pings)) = (order.step, order.pings) {
        parts.push(format!("every {step}s, {pings} pings"));
    }
    parts.push(match (order.expire, expires_in) {
        (Some(Expiry::Never), _) => "expire: never".to_string(),
        (_, Some(left)) if left <= 0 => "overdue (expires at the next rescan)".to_string(),
        (_, Some(left)) => format!("expires in {}", duration(left)),
        _ => "no expiry".to_string(),
    });
    parts.join(", ")
}

fn history_line(h: &History) -> String {
    let range = exact_duration(h.range);
    let per_row = h.resolution / h.archive_resolution.max(1);
    let how = if per_row > 1 {
        format!("{} AVERAGE rows of {}s averaged", per_row, h.archive_resolution)
    } else {
        format!("the {}s AVERAGE archive", h.archive_resolution)
    };
    let extremes = if h.min_max_archives {
        ", min/max from the MIN/MAX archives"
    } else {
        ""
    };
    let before = match h.window_end {
        WindowEnd::Now => format!("the last {range}"),
        WindowEnd::LastUpdate => format!("the {range} before the last update"),
    };
    let span = if h.rows.is_empty() {
        format!(
            "nothing recorded in {before} (last update {} UTC)",
            utc_text(h.last_update)
        )
    } else {
        format!(
            "{before}, {} .. {} UTC, one row per {}s ({how}{extremes})",
            utc_text(h.start),
            utc_text(h.end),
            h.resolution
        )
    };
    format!("{span}; {}", printable(&h.file))
}

/// `secs` in the largest unit that divides it: `7d`, `6h`, `30m`, `90s`.
fn exact_duration(secs: u64) -> String {
    match secs {
        0 => "0s".to_string(),
        s if s % 86_400 == 0 => format!("{}d", s / 86_400),
        s if s % 3600 == 0 => format!("{}h", s / 3600),
        s if s % 60 == 0 => format!("{}m", s / 60),
        s => format!("{s}s"),
    }
}

/// Bars of the median sparkline, lowest first.
const BARS: [char; 8] = ['▁', '▂', '▃', '▄', '▅', '▆', '▇', '█'];

fn history_table(h: &History) -> String {
    if h.rows.is_empty() {
        return String::new();
    }
    let mut rows = vec![["START (UTC)", "LOSS", "MEDIAN", "MIN", "MAX"]
        .map(String::from)
        .to_vec()];
    for row in &h.rows {
        rows.push(vec![
            utc_text(row.start),
            loss_text(row.loss, h.pings),
            rtt(row.median),
            rtt(row.min),
            rtt(row.max),
        ]);
    }
    let mut text = render_table(&rows);
    text.push('\n');
    let medians: Vec<f64> = h.rows.iter().filter_map(|r| r.median).collect();
    let low = medians.iter().copied().reduce(f64::min);
    let high = medians.iter().copied().reduce(f64::max);
    let line: String = h
        .rows
        .iter()
        .map(|r| match (r.median, low, high) {
            (Some(v), Some(low), Some(high)) if high - low > f64::EPSILON * high => {
                let level = ((v - low) / (high - low) * 7.0).round() as usize;
                BARS[level.min(7)]
            }
            (Some(_), _, _) => BARS[3],
            (None, _, _) => '?',
        })
        .collect();
    let scale = match (low, high) {
        (Some(low), Some(high)) => format!("  {} .. {}", rtt(Some(low)), rtt(Some(high))),
        _ => String::new(),
    };
    text.push_str(&format!("median  {line}{scale}\n"));
    let marks: String = h
        .rows
        .iter()
        .map(|r| match r.loss {
            None => '?',
            Some(l) if l < 1e-9 => '.',
            Some(l) if h.pings > 0 && l > f64::from(h.pings) - 1e-9 => 'X',
            Some(_) => 'x',
        })
        .collect();
    text.push_str(&format!("loss    {marks}  (. none, x some, X all, ? unknown)\n"));
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::output::history::Row;

    fn history(rows: Vec<Row>) -> History {
        History {
            file: "/b/output/t/main.rrd".into(),
            step: 20,
            last_update: 1_800_000_100,
            pings: 3,
            range: 3600,
            window_end: WindowEnd::Now,
            start: 1_800_000_000,
            end: 1_800_000_100,
            resolution: 20,
            archive_resolution: 20,
            min_max_archives: false,
            rows,
        }
    }

    fn row(start: i64, loss: Option<f64>, median: Option<f64>) -> Row {
        Row {
            start,
            loss,
            loss_percent: loss.map(|l| l * 100.0 / 3.0),
            median,
            min: median.map(|m| m / 2.0),
            max: median.map(|m| m * 2.0),
        }
    }

    #[test]
    fn the_table_shows_unknowns_as_dashes_and_the_sparklines_mark_them() {
        let h = history(vec![
            row(1_800_000_000, Some(0.0), Some(0.001)),
            row(1_800_000_020, Some(1.0), Some(0.002)),
            row(1_800_000_040, None, None),
            row(1_800_000_060, Some(3.0), None),
            row(1_800_000_080, Some(0.5), Some(0.0015)),
        ]);
        let text = history_table(&h);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines[0].split_whitespace().collect::<Vec<_>>(),
            ["START", "(UTC)", "LOSS", "MEDIAN", "MIN", "MAX"]
        );
        assert_eq!(
            lines[1].split_whitespace().collect::<Vec<_>>(),
            ["2027-01-15", "08:00:00", "0/3", "1.000ms", "0.500ms", "2.000ms"]
        );
        assert_eq!(
            lines[3].split_whitespace().skip(2).collect::<Vec<_>>(),
            ["-", "-", "-", "-"]
        );
        assert_eq!(
            lines[4].split_whitespace().skip(2).collect::<Vec<_>>(),
            ["3/3", "-", "-", "-"]
        );
        assert_eq!(lines[5].split_whitespace().nth(2), Some("0.5/3"));
        assert_eq!(lines[7], "median  ▁█??▅  1.000ms .. 2.000ms");
        assert_eq!(lines[8], "loss    .x?Xx  (. none, x some, X all, ? unknown)");
    }

    #[test]
    fn an_empty_history_says_when_the_file_was_last_updated() {
        let h = history(Vec::new());
        assert!(history_table(&h).is_empty());
        let line = history_line(&h);
        assert!(
            line.contains("nothing recorded in the last 1h (last update 2027-01-15 08:01:40 UTC)"),
            "{line}"
        );
        assert!(line.contains("2027-01-15 08:01:40"), "{line}");
    }
}
