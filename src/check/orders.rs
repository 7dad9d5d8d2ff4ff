//! `check orders`: order files that cannot be measured (invalid or unresolved), active orders
//! that are `failing` (from `state/output-errors.json`): CRITICAL when their probe cannot measure
//! them, at least WARNING when their output cannot be written, the first one named (a probe
//! failure first), and active orders whose `last_result` is older than a few steps (stale
//! measurements).
//!
//! Why a probe failure is CRITICAL: the order is not measured at all, for a reason on the
//! measuring side that someone must fix (a missing binary, a permission, a name that does not
//! resolve), and it used to show as 100% loss, which per-target alerting rates CRITICAL; a broken
//! prober must not be quieter than the dead target it was mistaken for.

use super::{unix_now, Outcome, Perf, Status, Thresholds};
use crate::config::Config;
use crate::orders::book::{FailureKind, OrderState, OrderStatus};
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
    let status = limits
        .stale
        .status(stale.len() as f64)
        .max(limits.invalid.status(invalid.len() as f64))
        .max(failing_status);
    Outcome {
        check: "orders",
        status,
        text: summary(active, &invalid, &failing, &stale, limits.stale_steps),
        perf: vec![
            Perf {
                label: "active".into(),
                value: active as f64,
                unit: "",
                thresholds: None,
            },
            perf("invalid", invalid.len(), &limits.invalid),
            Perf {
                label: "failing".into(),
                value: failing.len() as f64,
                unit: "",
                thresholds: None,
            },
            perf("stale", stale.len(), &limits.stale),
        ],
    }
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
fn written(order: &OrderStatus) -> i64 {
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
