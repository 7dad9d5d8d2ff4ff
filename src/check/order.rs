//! `check order ID`: one order as one Nagios service (with NRPE, one service per target): its
//! state, the freshness of its `output/<id>/last_result`, and that result's loss, median and
//! max RTT against alert thresholds; perfdata whenever a result can be read.
//!
//! The thresholds: the order's own `alert:` wins per level and metric, the command line's
//! `-w`/`-c` lists fill in what it leaves unset ([`applied`]). The evaluation ([`judge`]) is
//! shared with `check orders`, which applies it to every active order.
//!
//! Statuses, as Nagios users expect of a service that watches a target: everything that means
//! the target is not being measured is CRITICAL (no such order, an invalid or unresolved order
//! file, a probe that cannot measure it, no result for `stale-steps` steps, never measured for
//! that long); output that cannot be written is WARNING, as in `check orders`;
//! UNKNOWN is for what keeps the check from answering (a bad argument, an unreadable base, config
//! or `last_result`, and a new order not measured yet).
//!
//! Reads only: the order through `crate::output::failures::order` (the listing's state,
//! failing included, of that one order), the result through `crate::output::last_result::read`
//! (no symlink followed, bounded, strict).

use super::{unix_now, Outcome, Perf, Status, Thresholds};
use crate::config::Config;
use crate::orders::book::{printable, FailureKind, OrderState, OrderStatus};
use crate::orders::order::alert::{Alert, Metric, Threshold};
use crate::orders::order::range::Range;
use crate::output::last_result::{self, LastResult, ReadError};
use crate::shared::measurement::OrderId;
use crate::spool::BaseDir;
use std::io;
use std::time::SystemTime;

/// What `check order` takes besides the order.
#[derive(Clone, Debug)]
pub struct OrderLimits {
    /// The command line's `-w`/`-c` lists: the thresholds of every level and metric the order's
    /// own `alert:` leaves unset.
    pub alert: Alert,
    /// The result is stale when it was collected more than this many of the order's steps ago.
    pub stale_steps: u32,
}

/// Where a threshold that applies came from, as messages name it.
const FROM_ORDER: &str = "order's alert:";

/// The thresholds that apply to one order, per level (warning, critical) and metric, with where
/// each came from.
pub(super) struct Applied<'a> {
    cells: [[Option<(&'a Threshold, &'static str)>; 3]; 2],
}

impl Applied<'_> {
    pub(super) fn is_empty(&self) -> bool {
        self.cells.iter().flatten().all(Option::is_none)
    }

    fn get(&self, level: usize, metric: Metric) -> Option<(&Threshold, &'static str)> {
        let index = Metric::ALL.iter().position(|m| *m == metric).unwrap_or(0);
        self.cells[level][index]
    }

    /// The perfdata thresholds of `metric` (for loss: the count's or the percentage's).
    fn thresholds(&self, metric: Metric, percent: bool) -> Thresholds {
        let range = |level: usize| -> Option<Range> {
            self.get(level, metric)
                .filter(|(t, _)| t.percent == percent)
                .map(|(t, _)| t.range.clone())
        };
        Thresholds {
            warning: range(0),
            critical: range(1),
        }
    }
}

/// The order's own thresholds where it sets them, else `default`'s (the command line's, named
/// by `flags`: the warning and the critical list's option).
pub(super) fn applied<'a>(order: &'a Alert, default: &'a Alert, flags: [&'static str; 2]) -> Applied<'a> {
    let mut cells = [[None; 3]; 2];
    for (level, (own, fallback)) in [(&order.warning, &default.warning), (&order.critical, &default.critical)]
        .into_iter()
        .enumerate()
    {
        for (index, metric) in Metric::ALL.into_iter().enumerate() {
            cells[level][index] = own
                .get(metric)
                .map(|t| (t, FROM_ORDER))
                .or_else(|| fallback.get(metric).map(|t| (t, flags[level])));
        }
    }
    Applied { cells }
}

/// What a result is under the thresholds that apply.
pub(super) struct Verdict {
    /// OK, WARNING or CRITICAL.
    pub status: Status,
    /// `loss 1/20 (5%), median 1.2 ms, max 3.4 ms`, then each threshold that fired (the higher
    /// level only, per metric) and where it came from.
    pub text: String,
    /// `loss`, `loss_pct`, `median`, `max`, with the thresholds that apply.
    pub perf: Vec<Perf>,
}

/// Judges `result`. An RTT threshold fires when nothing answered (no median is worse than a
/// slow one); a loss percentage is of the result's pings.
pub(super) fn judge(result: &LastResult, applied: &Applied<'_>) -> Verdict {
    let percent = if result.pings == 0 {
        0.0
    } else {
        f64::from(result.loss) * 100.0 / f64::from(result.pings)
    };
    let mut status = Status::Ok;
    let mut fired = Vec::new();
    for metric in Metric::ALL {
        for (level, level_status) in [(1, Status::Critical), (0, Status::Warning)] {
            let Some((threshold, source)) = applied.get(level, metric) else {
                continue;
            };
            let alerts = match metric {
                Metric::Loss if threshold.percent => threshold.range.alerts(percent),
                Metric::Loss => threshold.range.alerts(f64::from(result.loss)),
                Metric::Median => result.median.is_none_or(|v| threshold.range.alerts(v)),
                Metric::Max => result.max.is_none_or(|v| threshold.range.alerts(v)),
            };
            if alerts {
                status = status.max(level_status);
                fired.push(format!(
                    "{} {} ({source})",
                    level_status.label().to_lowercase(),
                    threshold.item(metric)
                ));
                break;
            }
        }
    }
    let mut text = format!("loss {}/{} ({}%), ", result.loss, result.pings, short(percent));
    match (result.median, result.max) {
        (Some(median), Some(max)) => {
            text.push_str(&format!("median {}, max {}", milliseconds(median), milliseconds(max)))
        }
        _ => text.push_str("nothing answered"),
    }
    if !fired.is_empty() {
        text.push_str("; ");
        text.push_str(&fired.join(", "));
    }
    let rtt = |label: &str, value: Option<f64>, metric: Metric| Perf {
        label: label.into(),
        value: value.unwrap_or(f64::NAN),
        unit: "s",
        thresholds: Some(applied.thresholds(metric, false)),
        max: None,
    };
    let perf = vec![
        Perf {
            label: "loss".into(),
            value: f64::from(result.loss),
            unit: "",
            thresholds: Some(applied.thresholds(Metric::Loss, false)),
            max: Some(f64::from(result.pings)),
        },
        Perf {
            label: "loss_pct".into(),
            value: (percent * 100.0).round() / 100.0,
            unit: "%",
            thresholds: Some(applied.thresholds(Metric::Loss, true)),
            max: Some(100.0),
        },
        rtt("median", result.median, Metric::Median),
        rtt("max", result.max, Metric::Max),
    ];
    Verdict { status, text, perf }
}

/// A percentage as the text shows it: `5`, `33.3`.
fn short(percent: f64) -> String {
    let tenths = (percent * 10.0).round() / 10.0;
    format!("{tenths}")
}

/// Seconds as milliseconds for the text, trailing zeros dropped: `0.045 ms`, `1.2 ms`,
/// `12.3 ms`, `1204 ms`.
fn milliseconds(secs: f64) -> String {
    let ms = secs * 1000.0;
    let text = if ms < 10.0 {
        format!("{ms:.3}")
    } else if ms < 1000.0 {
        format!("{ms:.1}")
    } else {
        format!("{ms:.0}")
    };
    let text = match text.contains('.') {
        true => text.trim_end_matches('0').trim_end_matches('.'),
        false => &text,
    };
    format!("{text} ms")
}

/// `output/<id>/last_result` (no `output/` yet: not measured).
pub(super) fn read_result(base: &BaseDir, id: &OrderId) -> Result<LastResult, ReadError> {
    match base.dir("output") {
        Ok(output) => last_result::read(&output, id),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Err(ReadError::Missing),
        Err(e) => Err(ReadError::Io(e)),
    }
}

/// Checks order `id` (already a valid id) in `base` at `now`, with `config`'s order defaults.
pub fn check_order(base: &BaseDir, config: &Config, id: &OrderId, limits: &OrderLimits, now: SystemTime) -> Outcome {
    let name = printable(id.as_str());
    let outcome = |status: Status, text: String, perf: Vec<Perf>| Outcome {
        check: "order",
        status,
        text: format!("{name}: {text}"),
        perf,
    };
    if let Err(e) = std::fs::read_dir(base.orders()) {
        return Outcome::unknown("order", format!("cannot read {}: {e}", base.orders().display()));
    }
    let Some(order) = crate::output::failures::order(base, &config.order_options(), id) else {
        return outcome(Status::Critical, absent(base, id), Vec::new());
    };
    let applied = applied(&order.alert, &limits.alert, ["-w", "-c"]);
    let step = order.step.unwrap_or(0);
    let limit = i64::from(step) * i64::from(limits.stale_steps);
    let read = read_result(base, id);
    // The perfdata of the result, whatever the state: a graph shows what was last measured.
    let judged = |result: &LastResult| {
        let mut verdict = judge(result, &applied);
        let age = unix_now(now).saturating_sub(result.updated).max(0);
        verdict.perf.push(Perf {
            label: "age".into(),
            value: age as f64,
            unit: "s",
            thresholds: Some(Thresholds {
                warning: None,
                critical: Range::parse(&limit.to_string()).ok(),
            }),
            max: None,
        });
        (verdict, age)
    };
    let reason = || order.reason.as_deref().unwrap_or("").replace('\n', " ");
    match order.state {
        OrderState::Invalid | OrderState::Unresolved => outcome(
            Status::Critical,
            format!("{}, not measured: {}", order.state.as_str(), reason()),
            Vec::new(),
        ),
        // As `check orders` rates them: a probe that cannot measure is CRITICAL (the target is
        // not measured), output that cannot be written WARNING (measured, not recorded).
        OrderState::Failing => {
            let perf = read.as_ref().map(|r| judged(r).0.perf).unwrap_or_default();
            let status = match order.failure {
                Some(FailureKind::Output) => Status::Warning,
                _ => Status::Critical,
            };
            outcome(status, format!("failing: {}", reason()), perf)
        }
        OrderState::Active => match read {
            Ok(result) => {
                let (verdict, age) = judged(&result);
                if age > limit {
                    outcome(
                        Status::Critical,
                        format!(
                            "no result for {age} s (step {step} s, stale after {} steps); last: {}",
                            limits.stale_steps, verdict.text
                        ),
                        verdict.perf,
                    )
                } else {
                    outcome(verdict.status, verdict.text, verdict.perf)
                }
            }
            Err(ReadError::Missing) => never_measured(&order, limits.stale_steps, now, &outcome),
            Err(e) => Outcome::unknown("order", format!("{name}: cannot use output/{name}/last_result: {e}")),
        },
    }
}

/// An active order without a result: CRITICAL once its file is `stale_steps` steps old (never
/// measured), UNKNOWN before (not measured yet).
fn never_measured(
    order: &OrderStatus,
    stale_steps: u32,
    now: SystemTime,
    outcome: &dyn Fn(Status, String, Vec<Perf>) -> Outcome,
) -> Outcome {
    let step = order.step.unwrap_or(0);
    let age = unix_now(now) - super::orders::written(order);
    let limit = i64::from(step) * i64::from(stale_steps);
    if age > limit {
        outcome(
            Status::Critical,
            format!(
                "never measured: the order was written {age} s ago (step {step} s, stale after {stale_steps} steps)"
            ),
            Vec::new(),
        )
    } else {
        outcome(
            Status::Unknown,
            format!("not measured yet: the order was written {age} s ago (step {step} s)"),
            Vec::new(),
        )
    }
}

/// Why there is no order `id`: archived (deleted or expired), or never there.
fn absent(base: &BaseDir, id: &OrderId) -> String {
    let name = printable(id.as_str());
    let archived = base.dir("archive").and_then(|archive| archive.open_dir(id.as_path()));
    match archived {
        Ok(entry) if matches!(entry.kind("order.expired"), Ok(Some(_))) => format!(
            "no such order below orders/: it expired (not touched for order-timeout), its file and output are in archive/{name}/"
        ),
        Ok(_) => format!("no such order below orders/: it was deleted, its output is in archive/{name}/"),
        Err(_) => "no such order below orders/".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn result(loss: u32, pings: u32, median: Option<f64>, max: Option<f64>) -> LastResult {
        LastResult {
            time: 100,
            updated: 110,
            step: 20,
            pings,
            loss,
            min: median,
            median,
            max,
        }
    }

    fn verdict(order: &Alert, cli: &Alert, r: &LastResult) -> Verdict {
        judge(r, &applied(order, cli, ["-w", "-c"]))
    }

    fn lists(w: Option<&str>, c: Option<&str>) -> Alert {
        Alert::parse_lists(w, c).unwrap()
    }

    #[test]
    fn each_metric_at_its_boundary_and_the_higher_level_wins() {
        let cli = lists(
            Some("loss=1,median=100ms,max=0.5"),
            Some("loss=20%,median=300ms,max=1s"),
        );
        let none = Alert::default();
        let ok = verdict(&none, &cli, &result(1, 20, Some(0.1), Some(0.5)));
        assert_eq!(ok.status, Status::Ok, "{}", ok.text);
        assert_eq!(ok.text, "loss 1/20 (5%), median 100 ms, max 500 ms");
        let cases = [
            (
                result(2, 20, Some(0.01), Some(0.01)),
                Status::Warning,
                "warning loss=1 (-w)",
            ),
            (
                result(4, 20, Some(0.01), Some(0.01)),
                Status::Warning,
                "warning loss=1 (-w)",
            ),
            (
                result(5, 20, Some(0.01), Some(0.01)),
                Status::Critical,
                "critical loss=20% (-c)",
            ),
            (
                result(0, 20, Some(0.1001), Some(0.2)),
                Status::Warning,
                "warning median=100ms (-w)",
            ),
            (
                result(0, 20, Some(0.3001), Some(0.4)),
                Status::Critical,
                "critical median=300ms (-c)",
            ),
            (
                result(0, 20, Some(0.01), Some(0.6)),
                Status::Warning,
                "warning max=0.5 (-w)",
            ),
            (
                result(0, 20, Some(0.01), Some(1.01)),
                Status::Critical,
                "critical max=1s (-c)",
            ),
            (
                result(20, 20, None, None),
                Status::Critical,
                "critical median=300ms (-c)",
            ),
        ];
        for (r, status, fired) in cases {
            let v = verdict(&none, &cli, &r);
            assert_eq!(v.status, status, "{}", v.text);
            assert!(v.text.contains(fired), "{}", v.text);
        }
        let all_lost = verdict(&none, &cli, &result(20, 20, None, None));
        assert!(
            all_lost.text.starts_with("loss 20/20 (100%), nothing answered; "),
            "{}",
            all_lost.text
        );
    }

    #[test]
    fn the_orders_own_thresholds_win_per_level_and_metric() {
        let cli = lists(Some("loss=1,median=100ms"), Some("loss=5"));
        let order = lists(Some("loss=50%"), None);
        let r = result(3, 20, Some(0.2), Some(0.2));
        let v = verdict(&order, &cli, &r);
        // loss: the order's warning (50%) is not reached, the command line's critical (5) not
        // either; median: the command line's warning fires.
        assert_eq!(v.status, Status::Warning, "{}", v.text);
        assert!(v.text.ends_with("; warning median=100ms (-w)"), "{}", v.text);
        let v = verdict(&order, &cli, &result(6, 20, Some(0.01), Some(0.01)));
        assert_eq!(v.status, Status::Critical, "{}", v.text);
        assert!(v.text.ends_with("; critical loss=5 (-c)"), "{}", v.text);
        let v = verdict(&order, &cli, &result(11, 20, Some(0.01), Some(0.01)));
        assert!(
            v.text.ends_with("; critical loss=5 (-c)"),
            "the higher level only: {}",
            v.text
        );
        let strict = lists(None, Some("median=1ms"));
        let v = verdict(&strict, &cli, &r);
        assert_eq!(v.status, Status::Critical);
        assert!(v.text.contains("critical median=1ms (order's alert:)"), "{}", v.text);
    }

    #[test]
    fn perfdata_carries_each_metric_with_the_thresholds_in_its_own_unit() {
        let cli = lists(Some("loss=2,median=100ms"), Some("loss=50%,max=1s"));
        let v = verdict(&Alert::default(), &cli, &result(1, 3, Some(0.0012), Some(0.0034)));
        let outcome = Outcome {
            check: "order",
            status: v.status,
            text: v.text,
            perf: v.perf,
        };
        assert_eq!(
            outcome.line(),
            "SPOOLMON ORDER OK - loss 1/3 (33.3%), median 1.2 ms, max 3.4 ms | \
             loss=1;2;;0;3 loss_pct=33.33%;;50;0;100 median=0.0012s;0.1;;0 max=0.0034s;;1;0"
        );
        let v = verdict(&Alert::default(), &Alert::default(), &result(3, 3, None, None));
        let line = Outcome {
            check: "order",
            status: v.status,
            text: v.text,
            perf: v.perf,
        }
        .line();
        assert!(
            line.ends_with("| loss=3;;;0;3 loss_pct=100%;;;0;100 median=U;;;0 max=U;;;0"),
            "{line}"
        );
    }
}
