//! `spoolmon orders --wide`: the listing ([`super::failures::listing`]) with, per order, its last
//! result (loss, median RTT, age, read from `output/<id>/last_result` by
//! [`super::last_result::read`]) and the time until its order file expires.
//!
//! Reads only, beside the daemon. Invariants: a missing, unreadable or malformed `last_result`
//! never fails the listing, it is that order's `last_result_error` (the table shows `-` and a
//! short reason); the expiry is `order-timeout` after the order file's mtime for an order that
//! expires, none for `expire: never` and for the states without an order (invalid, unresolved).
//!
//! Called by `command::orders` and the API's order listing.

use super::last_result::{self, LastResult, ReadError};
use crate::orders::book::OrderStatus;
use crate::orders::order::Expiry;
use crate::orders::OrderOptions;
use crate::spool::BaseDir;
use serde::Serialize;
use std::io;

/// One line of `spoolmon orders --wide` (and of its `--json` output): the plain listing's fields
/// and these.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct WideStatus {
    #[serde(flatten)]
    pub status: OrderStatus,
    /// The newest result, null when there is none (never measured) or it cannot be read.
    pub last_result: Option<ResultSummary>,
    /// Why `output/<id>/last_result` could not be read (null when read, or absent).
    pub last_result_error: Option<String>,
    /// Seconds until the order expires (negative: overdue); null for `expire: never` (see
    /// `expire`) and for orders that are not active.
    pub expires_in: Option<i64>,
}

/// The newest result of an order, as `spoolmon orders --wide` shows it.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ResultSummary {
    /// Start of the measured step, unix seconds.
    pub time: i64,
    /// When the result was collected, unix seconds.
    pub updated: i64,
    /// Seconds since `updated` (0 if `updated` is in the future).
    pub age: i64,
    pub step: u32,
    pub pings: u32,
    /// Lost pings (a count of `pings`).
    pub loss: u32,
    /// Round-trip times in milliseconds, null when nothing answered.
    pub min_ms: Option<f64>,
    pub median_ms: Option<f64>,
    pub max_ms: Option<f64>,
}

impl ResultSummary {
    fn new(result: &LastResult, now: i64) -> ResultSummary {
        let ms = |v: Option<f64>| v.map(|s| s * 1000.0);
        ResultSummary {
            time: result.time,
            updated: result.updated,
            age: now.saturating_sub(result.updated).max(0),
            step: result.step,
            pings: result.pings,
            loss: result.loss,
            min_ms: ms(result.min),
            median_ms: ms(result.median),
            max_ms: ms(result.max),
        }
    }
}

/// The listing of every order below `orders/` with its last result and expiry, at `now` (unix
/// seconds).
pub fn listing(base: &BaseDir, options: &OrderOptions, now: i64) -> Vec<WideStatus> {
    widen(base, options, super::failures::listing(base, options), now)
}

/// `statuses` (some of a listing: the API's page) with their last results and expiry, at `now`.
pub fn widen(base: &BaseDir, options: &OrderOptions, statuses: Vec<OrderStatus>, now: i64) -> Vec<WideStatus> {
    // No output/ (nothing measured yet) means every order is "not measured yet".
    let output = match base.dir("output") {
        Ok(dir) => Ok(dir),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Err(None),
        Err(e) => Err(Some(format!("cannot open output/: {e}"))),
    };
    statuses
        .into_iter()
        .map(|status| {
            let read = match &output {
                Ok(dir) => last_result::read(dir, &status.id),
                Err(None) => Err(ReadError::Missing),
                Err(Some(reason)) => Err(ReadError::Io(io::Error::other(reason.clone()))),
            };
            let (last_result, last_result_error) = match read {
                Ok(result) => (Some(ResultSummary::new(&result, now)), None),
                Err(ReadError::Missing) => (None, None),
                Err(e) => (None, Some(e.to_string())),
            };
            let expires_in = expires_in(&status, options, now);
            WideStatus {
                status,
                last_result,
                last_result_error,
                expires_in,
            }
        })
        .collect()
}

/// Seconds until `status`'s order expires at `now` (negative: overdue): `order-timeout` after the
/// order file's mtime; none for `expire: never` and for the states without an order.
pub fn expires_in(status: &OrderStatus, options: &OrderOptions, now: i64) -> Option<i64> {
    match status.expire {
        Some(Expiry::Timeout) => {
            let timeout = i64::try_from(options.order_timeout).unwrap_or(i64::MAX);
            Some(timeout.saturating_sub(now.saturating_sub(status.mtime)))
        }
        Some(Expiry::Never) | None => None,
    }
}

/// A reason in the table is cut here (the JSON has it whole).
const REASON_CHARS: usize = 80;

/// The table of [`listing`]: the plain columns with LOSS, MEDIAN, AGE and EXPIRES before the
/// reason; `-` where there is nothing (never measured, no expiry), the unreadable `last_result`'s
/// reason added to the reason column.
pub fn format_table(statuses: &[WideStatus]) -> String {
    use crate::orders::book::{printable, render_table, table_row, TABLE_HEADER};
    let mut header: Vec<String> = TABLE_HEADER.map(String::from).to_vec();
    let reason_header = header.pop().unwrap_or_default();
    header.extend(["LOSS", "MEDIAN", "AGE", "EXPIRES"].map(String::from));
    header.push(reason_header);
    let mut rows = vec![header];
    for wide in statuses {
        let mut row = table_row(&wide.status).to_vec();
        let mut reason = row.pop().unwrap_or_default();
        let dash = || "-".to_string();
        let (loss, median, age) = match &wide.last_result {
            Some(r) => (
                format!("{}/{}", r.loss, r.pings),
                r.median_ms.map_or_else(dash, milliseconds),
                duration(r.age),
            ),
            None => (dash(), dash(), dash()),
        };
        let expires = match (wide.status.expire, wide.expires_in) {
            (Some(Expiry::Never), _) => "never".to_string(),
            (_, Some(left)) if left <= 0 => "overdue".to_string(),
            (_, Some(left)) => duration(left),
            _ => dash(),
        };
        if let Some(error) = &wide.last_result_error {
            let mut error: String = printable(error);
            if error.chars().count() > REASON_CHARS {
                error = error.chars().take(REASON_CHARS).collect::<String>() + "...";
            }
            reason = if reason.is_empty() {
                error
            } else {
                format!("{reason}; {error}")
            };
        }
        row.extend([loss, median, age, expires, reason]);
        rows.push(row);
    }
    render_table(&rows)
}

/// `ms` milliseconds, with three significant decimals for the small ones: `0.045ms`, `12.3ms`,
/// `1204ms` (also `spoolmon show`'s).
pub fn milliseconds(ms: f64) -> String {
    if ms < 10.0 {
        format!("{ms:.3}ms")
    } else if ms < 1000.0 {
        format!("{ms:.1}ms")
    } else {
        format!("{ms:.0}ms")
    }
}

/// A short duration: `45s`, `12m`, `5h`, `3d` (rounded down; also `spoolmon show`'s).
pub fn duration(secs: i64) -> String {
    if secs < 120 {
        format!("{secs}s")
    } else if secs < 7_200 {
        format!("{}m", secs / 60)
    } else if secs < 172_800 {
        format!("{}h", secs / 3600)
    } else {
        format!("{}d", secs / 86_400)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_and_milliseconds_are_short() {
        let cases = [
            (0, "0s"),
            (119, "119s"),
            (120, "2m"),
            (3660, "61m"),
            (7200, "2h"),
            (200_000, "2d"),
        ];
        for (secs, text) in cases {
            assert_eq!(duration(secs), text);
        }
        assert_eq!(milliseconds(0.0453), "0.045ms");
        assert_eq!(milliseconds(12.34), "12.3ms");
        assert_eq!(milliseconds(1204.4), "1204ms");
    }
}
