//! The progress lines: every `self-metrics: {progress-interval}` seconds (default 60, `0` turns
//! them off) one info line per part of the process, with what it did since the previous line,
//! computed as deltas of the counters the parts keep ([`Sources`]):
//!
//! ```text
//! progress: probes: 120 orders measured, 360 pings sent, 0 lost, 0 runs suspended in the last 60 s
//! progress: processing: 120 snapshots processed, 120 results applied, 0 quarantined in the last 60 s
//! progress: pull: 6 cycles, 6 published, 0 failed in the last 60 s
//! progress: sink carbon: 480 lines delivered, 0 rejected, 0 dropped, 0 backlog in the last 60 s
//! ```
//!
//! A part that runs in this process always has its line, with 0s when it did nothing, so an
//! operator sees it is alive; a part that is not configured (no `pull:`, no outbox sink) has
//! none. `backlog` is the lines waiting in the sink's outbox now, `dropped` the lines the
//! outbox dropped to stay within its limits. Local-store sinks write in the processing round
//! and have no line of their own. When runs could not measure some orders (their probe failed:
//! a missing binary, no permission, ...), the probes' line says how many after `measured`
//! (`120 orders measured (3 not measured), ...`); it says nothing of it otherwise.

use super::gather::Sources;
use crate::sink::backlog::SinkBacklog;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tracing::info;

/// The tracing target of the progress lines (`--log-level spoolmon::progress=warn` silences
/// them).
pub const TARGET: &str = "spoolmon::progress";

/// The counters the lines are the differences of, read at one moment.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Totals {
    pub probes: Option<[u64; 5]>,
    pub processing: Option<[u64; 3]>,
    pub pull: Option<[u64; 3]>,
    /// Per sink: lines delivered, rejected and dropped; the backlog is a gauge, kept apart.
    pub sinks: Vec<(String, [u64; 3], u64)>,
}

fn load(counter: &AtomicU64) -> u64 {
    counter.load(Ordering::Relaxed)
}

impl Totals {
    /// The counters of `sources` now; `outboxes` gives the sinks' dropped lines and backlog.
    pub fn read(sources: &Sources, outboxes: &[SinkBacklog]) -> Totals {
        let outbox: BTreeMap<&str, &SinkBacklog> = outboxes.iter().map(|b| (b.sink.as_str(), b)).collect();
        Totals {
            probes: sources.scheduler.as_ref().map(|s| {
                [
                    load(&s.orders_measured),
                    load(&s.pings_sent),
                    load(&s.pings_lost),
                    load(&s.suspended_runs),
                    load(&s.orders_unmeasured),
                ]
            }),
            processing: sources.process.as_ref().map(|s| {
                [
                    load(&s.snapshots_processed),
                    load(&s.results_applied),
                    load(&s.snapshots_failed),
                ]
            }),
            pull: sources.pull.as_ref().map(|s| {
                [
                    load(&s.cycles_started),
                    load(&s.snapshots_published),
                    load(&s.failed_cycles),
                ]
            }),
            sinks: sources
                .deliveries
                .list()
                .iter()
                .map(|(name, stats)| {
                    let backlog = outbox.get(name.as_str());
                    (
                        name.clone(),
                        [
                            load(&stats.sent_lines),
                            load(&stats.rejected_lines),
                            backlog.map_or(0, |b| b.dropped_lines),
                        ],
                        backlog.map_or(0, |b| b.lines),
                    )
                })
                .collect(),
        }
    }
}

/// The lines from `before` to `now` over `elapsed` (a counter that went down, as the outbox's
/// dropped count can when its `ack` is replaced, counts 0).
pub fn lines(before: &Totals, now: &Totals, elapsed: Duration) -> Vec<String> {
    fn delta<const N: usize>(before: Option<&[u64; N]>, now: &[u64; N]) -> [u64; N] {
        let mut out = [0; N];
        for (i, slot) in out.iter_mut().enumerate() {
            *slot = now[i].saturating_sub(before.map_or(0, |b| b[i]));
        }
        out
    }
    let span = format!("in the last {} s", elapsed.as_secs_f64().round() as u64);
    let mut lines = Vec::new();
    if let Some(now_probes) = &now.probes {
        let [measured, sent, lost, suspended, unmeasured] = delta(before.probes.as_ref(), now_probes);
        let unmeasured = match unmeasured {
            0 => String::new(),
            n => format!(" ({n} not measured)"),
        };
        lines.push(format!(
            "probes: {measured} orders measured{unmeasured}, {sent} pings sent, {lost} lost, {suspended} runs suspended {span}"
        ));
    }
    if let Some(now_processing) = &now.processing {
        let [processed, applied, quarantined] = delta(before.processing.as_ref(), now_processing);
        lines.push(format!(
            "processing: {processed} snapshots processed, {applied} results applied, {quarantined} quarantined {span}"
        ));
    }
    if let Some(now_pull) = &now.pull {
        let [cycles, published, failed] = delta(before.pull.as_ref(), now_pull);
        lines.push(format!(
            "pull: {cycles} cycles, {published} published, {failed} failed {span}"
        ));
    }
    for (name, counters, backlog) in &now.sinks {
        let earlier = before.sinks.iter().find(|(n, _, _)| n == name).map(|(_, c, _)| c);
        let [delivered, rejected, dropped] = delta(earlier, counters);
        lines.push(format!(
            "sink {name}: {delivered} lines delivered, {rejected} rejected, {dropped} dropped, {backlog} backlog {span}"
        ));
    }
    lines
}

/// Logs `lines` at info under [`TARGET`].
pub fn log(lines: &[String]) {
    for line in lines {
        info!(target: TARGET, "{line}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::collect::haproxy::PullStats;
    use crate::probe::scheduler::SchedulerStats;
    use crate::sink::delivery::DeliveryStats;
    use std::sync::Arc;

    #[test]
    fn lines_are_the_deltas_and_a_part_that_did_nothing_says_0() {
        let scheduler = Arc::new(SchedulerStats::default());
        let pull = Arc::new(PullStats::default());
        let carbon = Arc::new(DeliveryStats::default());
        let sources = Sources {
            scheduler: Some(scheduler.clone()),
            process: None,
            pull: Some(pull.clone()),
            receive: None,
            api: None,
            deliveries: vec![("carbon".into(), carbon.clone())].into(),
            discoveries: Vec::new(),
        };
        scheduler.orders_measured.store(4, Ordering::Relaxed);
        let before = Totals::read(&sources, &[]);
        scheduler.orders_measured.store(10, Ordering::Relaxed);
        scheduler.pings_sent.store(18, Ordering::Relaxed);
        carbon.sent_lines.store(7, Ordering::Relaxed);
        let backlog = SinkBacklog {
            sink: "carbon".into(),
            lines: 3,
            dropped_lines: 2,
            ..SinkBacklog::default()
        };
        let now = Totals::read(&sources, &[backlog]);
        let lines = lines(&before, &now, Duration::from_millis(59_600));
        assert_eq!(
            lines,
            [
                "probes: 6 orders measured, 18 pings sent, 0 lost, 0 runs suspended in the last 60 s",
                "pull: 0 cycles, 0 published, 0 failed in the last 60 s",
                "sink carbon: 7 lines delivered, 0 rejected, 2 dropped, 3 backlog in the last 60 s",
            ]
        );
        // Orders the probe could not measure are said, only when there are some.
        scheduler.orders_measured.store(13, Ordering::Relaxed);
        scheduler.orders_unmeasured.store(2, Ordering::Relaxed);
        let later = Totals::read(&sources, &[]);
        assert_eq!(
            super::lines(&now, &later, Duration::from_secs(60))[0],
            "probes: 3 orders measured (2 not measured), 0 pings sent, 0 lost, 0 runs suspended in the last 60 s"
        );
    }

    #[test]
    fn a_counter_that_went_down_counts_0_and_no_parts_give_no_lines() {
        let mut before = Totals {
            pull: Some([5, 5, u64::MAX]),
            ..Totals::default()
        };
        let now = Totals {
            pull: Some([3, 6, 0]),
            ..Totals::default()
        };
        assert_eq!(
            lines(&before, &now, Duration::from_secs(1)),
            ["pull: 0 cycles, 1 published, 0 failed in the last 1 s"]
        );
        before.pull = None;
        assert!(lines(&before, &Totals::default(), Duration::from_secs(1)).is_empty());
    }
}
