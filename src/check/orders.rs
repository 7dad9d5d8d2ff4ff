//! `check orders`: order files that cannot be measured (invalid or unresolved), active orders
//! that are `failing` (from `state/output-errors.json`): CRITICAL when their probe cannot measure
//! them, at least WARNING when their output cannot be written, the first one named (a probe
//! failure first), active orders whose `last_result` is older than a few steps (stale
//! measurements), and the last result of every other active order against alert thresholds
//! (its own `alert:`, else `--order-warning`/`--order-critical`; the evaluation is `check
//! order`'s): the worst one is named, and how many alert. Without any such threshold (no list
//! given, no order with `alert:`) the line is what it was before alerts existed.
//!
//! Why a probe failure is CRITICAL: the order is not measured at all, for a reason on the
//! measuring side that someone must fix (a missing binary, a permission, a name that does not
//! resolve), and it used to show as 100% loss, which per-target alerting rates CRITICAL; a broken
//! prober must not be quieter than the dead target it was mistaken for.

use super::order::{applied, judge, read_result};
use super::{unix_now, Outcome, Perf, Status, Thresholds};
use crate::config::Config;
use crate::orders::book::{printable, FailureKind, OrderState, OrderStatus};
use crate::orders::order::Alert;
use crate::output::last_result::ReadError;
use crate::spool::BaseDir;
use std::io::ErrorKind;
use std::time::SystemTime;

/// The ranges of `check orders`.
#[derive(Clone, Debug)]
pub struct OrderThresholds {
    /// For the number of stale orders.
    pub stale: Thresholds,
    /// For the number of invalid or unresolved order files.
    pub invalid: Thresholds,
    /// An active order is stale when its `last_result` is older than this many steps (or it has
    /// none and its file is that old).
    pub stale_steps: u32,
    /// For each order's last result (`--order-warning`/`--order-critical`), where its own
    /// `alert:` says nothing.
    pub results: Alert,
}

/// One order whose last result is over a threshold (or cannot be used: WARNING).
struct Alerting<'a> {
    id: &'a str,
    status: Status,
    text: String,
}

/// One stale order: its id and how old its newest result is (`None`: never measured).
struct Stale<'a> {
    id: &'a str,
    age: Option<i64>,
    step: u32,
}

/// Scans `orders/` as the daemon would (with `config`'s defaults) and looks at each active
/// order's `output/<id>/last_result`. UNKNOWN when `orders/` or a `last_result` cannot be read.
pub fn check_orders(base: &BaseDir, config: &Config, limits: &OrderThresholds, now: SystemTime) -> Outcome {
    if let Err(e) = std::fs::read_dir(base.orders()) {
        return Outcome::unknown("orders", format!("cannot read {}: {e}", base.orders().display()));
    }
    let listing = crate::output::failures::listing(base, &config.order_options());
    let invalid: Vec<&OrderStatus> = listing
        .iter()
        .filter(|o| matches!(o.state, OrderState::Invalid | OrderState::Unresolved))
        .collect();
    let mut failing: Vec<&OrderStatus> = listing.iter().filter(|o| o.state == OrderState::Failing).collect();
    // Probe failures first (stable: in id order within each kind): the one named is the worst.
    failing.sort_by_key(|o| o.failure != Some(FailureKind::Probe));
    let active = listing.len() - invalid.len();
    let mut stale = Vec::new();
    // A failing order is reported as failing (its output may not even be readable).
    for order in listing.iter().filter(|o| o.state == OrderState::Active) {
        match staleness(base, order, limits.stale_steps, now) {
            Ok(Some(found)) => stale.push(found),
            Ok(None) => {}
            Err(reason) => return Outcome::unknown("orders", reason),
        }
    }
    let failing_status = match failing.first().map(|o| o.failure) {
        None => Status::Ok,
        Some(Some(FailureKind::Probe)) => Status::Critical,
        Some(_) => Status::Warning,
    };
    // Alerts: every active order not stale (a stale one is reported as stale) whose thresholds
    // say anything. Thresholds apply when a list is given or any order has its own, whatever
    // its state, so the line keeps its shape while an order is stale or failing.
    let thresholds_apply = !limits.results.is_empty() || listing.iter().any(|o| !o.alert.is_empty());
    let mut alerting = Vec::new();
    for order in listing.iter().filter(|o| o.state == OrderState::Active) {
        if stale.iter().any(|s| s.id == order.id.as_str()) {
            continue;
        }
        let applied = applied(&order.alert, &limits.results, ["--order-warning", "--order-critical"]);
        if applied.is_empty() {
            continue;
        }
        let (status, text) = match read_result(base, &order.id) {
            Ok(result) => {
                let verdict = judge(&result, &applied);
                (verdict.status, verdict.text)
            }
            Err(ReadError::Missing) => continue,
            // A result that cannot be used tells nothing about the target; named, as a warning.
            Err(e) => (Status::Warning, format!("cannot use its last_result: {e}")),
        };
        if status != Status::Ok {
            alerting.push(Alerting {
                id: order.id.as_str(),
                status,
                text,
            });
        }
    }
    let alert_status = alerting.iter().map(|a| a.status).max().unwrap_or(Status::Ok);
    let status = limits
        .stale
        .status(stale.len() as f64)
        .max(limits.invalid.status(invalid.len() as f64))
        .max(failing_status)
        .max(alert_status);
    let mut text = summary(active, &invalid, &failing, &stale, limits.stale_steps);
    let mut perf = vec![
        Perf {
            label: "active".into(),
            value: active as f64,
            unit: "",
            thresholds: None,
            max: None,
        },
        perf("invalid", invalid.len(), &limits.invalid),
        Perf {
            label: "failing".into(),
            value: failing.len() as f64,
            unit: "",
            thresholds: None,
            max: None,
        },
        perf("stale", stale.len(), &limits.stale),
    ];
    if thresholds_apply {
        text.push_str(&alert_summary(&alerting));
        let critical = alerting.iter().filter(|a| a.status == Status::Critical).count();
        for (label, count) in [
            ("alerting_warning", alerting.len() - critical),
            ("alerting_critical", critical),
        ] {
            perf.push(Perf {
                label: label.into(),
                value: count as f64,
                unit: "",
                thresholds: None,
                max: None,
            });
        }
    }
    Outcome {
        check: "orders",
        status,
        text,
        perf,
    }
}

/// `, 2 alerting (1 critical, 1 warning; worst: <id>: <its verdict>)`: the worst is the first
/// (in id order) of the highest status.
fn alert_summary(alerting: &[Alerting<'_>]) -> String {
    let mut text = format!(", {} alerting", alerting.len());
    // `max_by_key` keeps the last of equals: reversed, the first in id order.
    if let Some(worst) = alerting.iter().rev().max_by_key(|a| a.status) {
        let critical = alerting.iter().filter(|a| a.status == Status::Critical).count();
        text.push_str(&format!(
            " ({critical} critical, {} warning; worst: {}: {})",
            alerting.len() - critical,
            printable(worst.id),
            worst.text
        ));
    }
    text
}

/// `Some` when `order` has no result newer than `steps` of its steps.
fn staleness<'a>(
    base: &BaseDir,
    order: &'a OrderStatus,
    steps: u32,
    now: SystemTime,
) -> Result<Option<Stale<'a>>, String> {
    let Some(step) = order.step else { return Ok(None) };
    let limit = i64::from(step) * i64::from(steps);
    let path = base.output().join(order.id.as_path()).join("last_result");
    // Through descriptors: a link planted on the way (or as the file) is not followed.
    let modified = base
        .dir("output")
        .and_then(|output| output.open_dir(order.id.as_str()))
        .and_then(|dir| dir.open_read("last_result"))
        .and_then(|file| file.metadata())
        .and_then(|meta| meta.modified());
    let age = match modified {
        Ok(modified) => Some(unix_now(now) - unix_now(modified)),
        Err(e) if e.kind() == ErrorKind::NotFound => None,
        // A link, FIFO or directory planted there is no result: the order counts as never
        // measured (judged by its file's age), and the check still answers for the others.
        Err(e) if e.kind() == ErrorKind::InvalidData => None,
        Err(e) => return Err(format!("cannot read {}: {e}", path.display())),
    };
    let old = match age {
        Some(age) => age > limit,
        None => unix_now(now) - written(order) > limit,
    };
    Ok(old.then_some(Stale {
        id: order.id.as_str(),
        age,
        step,
    }))
}

/// When the order file was written, unix seconds: its birth time where the filesystem keeps
/// one (owners touch order files to keep them from expiring, which must not hide an order
/// that was never measured), else its modification time.
pub(super) fn written(order: &OrderStatus) -> i64 {
    std::fs::metadata(&order.path)
        .and_then(|m| m.created())
        .map_or(order.mtime, unix_now)
}

fn summary(
    active: usize,
    invalid: &[&OrderStatus],
    failing: &[&OrderStatus],
    stale: &[Stale<'_>],
    steps: u32,
) -> String {
    let mut text = format!("{active} active, {} invalid", invalid.len());
    let first_of = |orders: &[&OrderStatus]| {
        orders.first().map(|first| {
            let reason = first
                .reason
                .as_deref()
                .unwrap_or(first.state.as_str())
                .replace('\n', " ");
            format!(" (first: {}: {reason})", first.id.as_str())
        })
    };
    text.push_str(&first_of(invalid).unwrap_or_default());
    text.push_str(&format!(", {} failing", failing.len()));
    text.push_str(&first_of(failing).unwrap_or_default());
    text.push_str(&format!(", {} stale", stale.len()));
    if let Some(first) = stale.first() {
        let age = match first.age {
            Some(age) => format!("last result {age} s ago"),
            None => "never measured".to_string(),
        };
        text.push_str(&format!(
            " (first: {}: {age}, step {} s, stale after {steps} steps)",
            first.id, first.step
        ));
    }
    text
}

fn perf(label: &str, value: usize, thresholds: &Thresholds) -> Perf {
    Perf {
        label: label.into(),
        value: value as f64,
        unit: "",
        thresholds: Some(thresholds.clone()),
        max: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::shared::measurement::OrderId;

    fn order(base: &BaseDir, id: &str) -> OrderStatus {
        OrderStatus {
            id: OrderId::new(id).unwrap(),
            path: base.orders().join(format!("{id}.yaml")),
            state: OrderState::Active,
            reason: None,
            failure: None,
            mtime: 1_000,
            probe: None,
            step: Some(20),
            pings: None,
            target: None,
            warnings: Vec::new(),
            expire: None,
            alert: Default::default(),
        }
    }

    #[test]
    fn a_planted_link_on_the_way_to_last_result_is_not_followed_into_a_fresh_file() {
        let dir = tempfile::tempdir().unwrap();
        let base = BaseDir::new(dir.path().join("base"));
        base.create_all().unwrap();
        let outside = dir.path().join("outside");
        std::fs::create_dir_all(outside.join("app")).unwrap();
        std::fs::write(outside.join("last_result"), "time: 1\n").unwrap();
        std::fs::write(outside.join("app/last_result"), "time: 1\n").unwrap();
        // A link as the file, and a link as a directory on the way.
        std::fs::create_dir(base.output().join("file")).unwrap();
        std::os::unix::fs::symlink(outside.join("last_result"), base.output().join("file/last_result")).unwrap();
        std::os::unix::fs::symlink(&outside, base.output().join("dir")).unwrap();
        let now = SystemTime::now();
        for id in ["file", "dir/app"] {
            let order = order(&base, id);
            let stale = staleness(&base, &order, 3, now)
                .unwrap()
                .expect("stale: never measured");
            assert_eq!((stale.id, stale.age), (id, None));
        }
        // A real, fresh last_result is read.
        std::fs::create_dir(base.output().join("real")).unwrap();
        std::fs::write(base.output().join("real/last_result"), "time: 1\n").unwrap();
        assert!(staleness(&base, &order(&base, "real"), 3, now).unwrap().is_none());
    }
}
