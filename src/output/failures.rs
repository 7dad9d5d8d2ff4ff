//! `state/output-errors.json`: the orders that are `failing`, with the reason: their output
//! cannot be written, or their probe could not measure them.
//!
//! Owned by processing (`spoolmon run`, `spoolmon process`); read by `spoolmon orders` (state
//! `failing`), `spoolmon status`, `spoolmon check orders` and `spoolmon check order` ([`order`]). Format (JSON, one object):
//!
//! ```text
//! {"version":1,"orders":{"app1/target1":{"reason":"creating directory ...: File name too long","since":1700000020},
//!  "app1/target2":{"reason":"cannot run /usr/bin/nosuch: No such file or directory (os error 2)","since":1700000040,"kind":"probe"}}}
//! ```
//!
//! `kind` says what fails: `output` (the default when absent, as in files written before probe
//! failures were recorded) or `probe`. For `output`, `reason` is the last error of the order's
//! output (RRD or `last_result`); only faults of the order itself are kept here (see
//! [`crate::spool::fault`]), a transient fault (disk full) is a `last_error` of processing
//! instead, and the order leaves the file when its output is written again. For `probe`,
//! `reason` is the `failure` of the order's newest result (the probe could not measure it), and
//! the order leaves the file with its next measured result. An output failure takes the place of
//! a probe failure (it is the one the operator must fix first) and gives way to it again once
//! the output is written. `since` (unix seconds) is when the order started failing with that
//! reason; archiving an order removes it. The file is replaced atomically (temp + fsync + rename
//! in `state/`) and only when the set of orders or a reason changes; an absent file means no
//! order fails. Reasons are shown with control characters replaced (the file is ours, but a
//! listing never trusts a file).

pub use crate::orders::book::FailureKind;
use crate::orders::book::{OrderState, OrderStatus};
use crate::orders::OrderOptions;
use crate::shared::measurement::{one_line, OrderId};
use crate::spool::BaseDir;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::io;

/// Name of the file inside `state/`.
pub const FILE_NAME: &str = "output-errors.json";

/// A larger file is not ours: refused instead of read.
const MAX_FILE: u64 = 16 << 20;

/// Most bytes of one reason a listing shows.
pub const MAX_SHOWN_REASON: usize = 8192;

/// Why one order fails: its output cannot be written, or its probe cannot measure it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderFailure {
    pub reason: String,
    /// Unix seconds of the first failure with this reason.
    pub since: i64,
    /// What fails (`output` when absent).
    #[serde(default)]
    pub kind: FailureKind,
    /// For a probe failure: the step (unix seconds) of the newest result that could not be
    /// measured. Only a measured result of this step or later clears the failure (an older one
    /// arriving late does not). Absent for output failures and in files written before it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub at: Option<i64>,
}

impl OrderFailure {
    /// The reason as listings show it: `cannot write output (since T): ...` or `probe cannot
    /// measure (since T): ...`, one line without control characters, at most
    /// [`MAX_SHOWN_REASON`] bytes of it (an output error names a path of up to 4 KiB).
    pub fn describe(&self) -> String {
        let what = match self.kind {
            FailureKind::Output => "cannot write output",
            FailureKind::Probe => "probe cannot measure",
        };
        format!(
            "{what} (since {}): {}",
            self.since,
            one_line(&self.reason, MAX_SHOWN_REASON)
        )
    }
}

/// The content of `state/output-errors.json`: order id → failure.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutputErrors {
    pub version: u32,
    pub orders: BTreeMap<String, OrderFailure>,
}

/// Reads the file; an absent one means no failures. Unreadable or malformed is an error naming
/// the file.
pub fn read(base: &BaseDir) -> io::Result<OutputErrors> {
    let state = base.dir("state")?;
    let bytes = match state.read_limited(FILE_NAME, MAX_FILE) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(OutputErrors::default()),
        Err(e) => return Err(e),
    };
    serde_json::from_slice(&bytes).map_err(|e| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{}: {e}", base.state().join(FILE_NAME).display()),
        )
    })
}

/// Replaces the file with `errors` (removes it when there are none).
pub fn write(base: &BaseDir, errors: &OutputErrors) -> io::Result<()> {
    let state = base.dir("state")?;
    if errors.orders.is_empty() {
        return match state.unlink(FILE_NAME) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => state.sync(),
        };
    }
    let mut text = serde_json::to_vec(&OutputErrors {
        version: 1,
        orders: errors.orders.clone(),
    })
    .map_err(io::Error::other)?;
    text.push(b'\n');
    state.replace(FILE_NAME, &text)?;
    state.sync()
}

/// Every order below `orders/` as an operator sees it (`spoolmon orders`, `status`, `check
/// orders`): the orders' fresh scan ([`crate::orders::fresh_scan`]), with the active orders listed
/// in `state/output-errors.json` marked `failing` and the reason.
pub fn listing(base: &BaseDir, options: &OrderOptions) -> Vec<OrderStatus> {
    let mut statuses = crate::orders::fresh_scan(base, options);
    mark_failing(base, &mut statuses);
    statuses
}

/// One order as [`listing`] shows it (for `spoolmon check order ID`): the orders' look at that
/// order alone ([`crate::orders::fresh_lookup`]) marked like the listing's. `None` when there is
/// no such order.
pub fn order(base: &BaseDir, options: &OrderOptions, id: &OrderId) -> Option<OrderStatus> {
    let mut statuses: Vec<OrderStatus> = crate::orders::fresh_lookup(base, options, id).into_iter().collect();
    mark_failing(base, &mut statuses);
    statuses.pop()
}

/// Marks the active orders processing recorded as failing, with the reason and what fails (an
/// unreadable record is logged and changes nothing).
pub fn mark_failing(base: &BaseDir, statuses: &mut [OrderStatus]) {
    let errors = match read(base) {
        Ok(errors) => errors,
        Err(e) => {
            tracing::warn!("cannot read the failing orders: {e}");
            return;
        }
    };
    for status in statuses.iter_mut().filter(|s| s.state == OrderState::Active) {
        if let Some(failure) = errors.orders.get(status.id.as_str()) {
            status.state = OrderState::Failing;
            status.reason = Some(failure.describe());
            status.failure = Some(failure.kind);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_round_trip_and_an_empty_set_removes_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let base = BaseDir::new(dir.path());
        base.create_all().unwrap();
        assert_eq!(read(&base).unwrap(), OutputErrors::default());
        let mut errors = OutputErrors::default();
        errors.orders.insert(
            "a/b".into(),
            OrderFailure {
                reason: "File name too long".into(),
                since: 1_700_000_000,
                kind: FailureKind::Output,
                at: None,
            },
        );
        errors.orders.insert(
            "a/c".into(),
            OrderFailure {
                reason: "cannot run /x".into(),
                since: 1_700_000_020,
                kind: FailureKind::Probe,
                at: None,
            },
        );
        write(&base, &errors).unwrap();
        let back = read(&base).unwrap();
        assert_eq!(back.orders, errors.orders);
        assert_eq!(back.version, 1);
        write(&base, &OutputErrors::default()).unwrap();
        assert!(!base.state().join(FILE_NAME).exists());
    }

    #[test]
    fn a_file_without_kinds_reads_as_output_failures_and_reasons_are_described_on_one_line() {
        let dir = tempfile::tempdir().unwrap();
        let base = BaseDir::new(dir.path());
        base.create_all().unwrap();
        std::fs::write(
            base.state().join(FILE_NAME),
            r#"{"version":1,"orders":{"a":{"reason":"Permission denied","since":5},"b":{"reason":"x\u001b[2J\ny","since":6,"kind":"probe"}}}"#,
        )
        .unwrap();
        let errors = read(&base).unwrap();
        assert_eq!(errors.orders["a"].kind, FailureKind::Output);
        assert_eq!(
            errors.orders["a"].describe(),
            "cannot write output (since 5): Permission denied"
        );
        assert_eq!(errors.orders["b"].kind, FailureKind::Probe);
        assert_eq!(errors.orders["b"].describe(), "probe cannot measure (since 6): x [2J y");
        // An output error naming a 4 KiB path is shown whole.
        let long = OrderFailure {
            reason: format!("creating directory {}: File name too long", "x/".repeat(2045)),
            since: 7,
            kind: FailureKind::Output,
            at: None,
        };
        assert!(
            long.describe().ends_with("x/: File name too long"),
            "{}",
            long.describe()
        );
        let written = {
            write(&base, &errors).unwrap();
            std::fs::read_to_string(base.state().join(FILE_NAME)).unwrap()
        };
        assert!(
            written.contains(r#""kind":"probe""#) && written.contains(r#""kind":"output""#),
            "{written}"
        );
    }

    #[test]
    fn a_symlink_or_garbage_in_its_place_is_an_error_not_followed() {
        let dir = tempfile::tempdir().unwrap();
        let base = BaseDir::new(dir.path());
        base.create_all().unwrap();
        let victim = dir.path().join("victim");
        std::fs::write(&victim, b"{\"version\":1,\"orders\":{}}").unwrap();
        std::os::unix::fs::symlink(&victim, base.state().join(FILE_NAME)).unwrap();
        assert!(read(&base).is_err());
        std::fs::remove_file(base.state().join(FILE_NAME)).unwrap();
        std::fs::write(base.state().join(FILE_NAME), b"garbage").unwrap();
        assert!(read(&base).unwrap_err().to_string().contains(FILE_NAME));
    }
}
