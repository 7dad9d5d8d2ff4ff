//! Tests of self-metrics: the families gathered from each source, the files written to
//! `state/`, and the metrics sent through the sinks.

use super::exposition::tests::check_exposition;
use super::*;
use crate::collect::haproxy::PullStats;
use crate::orders::book::OrderState;
use crate::probe::scheduler::SchedulerStats;
use crate::process::handoff::{MetricKind, SinkError};
use crate::process::ProcessStats;
use crate::sink::backlog::SinkBacklog;
use crate::sink::delivery::DeliveryStats;

fn sources() -> Sources {
    let scheduler = SchedulerStats::default();
    scheduler.pings_sent.store(40, Ordering::Relaxed);
    scheduler.pings_lost.store(3, Ordering::Relaxed);
    scheduler.suspended_runs.store(2, Ordering::Relaxed);
    scheduler.start_delay_micros.store(1_500_000, Ordering::Relaxed);
    let process = ProcessStats::default();
    process.snapshots_processed.store(7, Ordering::Relaxed);
    process.snapshots_failed.store(1, Ordering::Relaxed);
    process.rrd_updates.store(12, Ordering::Relaxed);
    process.processing_micros.store(250_000, Ordering::Relaxed);
    let pull = PullStats::default();
    pull.cycles_started.store(9, Ordering::Relaxed);
    pull.suspended_cycles.store(4, Ordering::Relaxed);
    let delivery = DeliveryStats::default();
    delivery.sent_lines.store(100, Ordering::Relaxed);
    delivery.last_error.set("delivery failed: connection refused");
    let api = crate::http::ServerStats::default();
    api.requests.store(12, Ordering::Relaxed);
    api.client_errors.store(2, Ordering::Relaxed);
    api.last_error.set("GET /api/v1/status: answered 503");
    Sources {
        scheduler: Some(Arc::new(scheduler)),
        process: Some(Arc::new(process)),
        pull: Some(Arc::new(pull)),
        receive: None,
        api: Some(Arc::new(api)),
        deliveries: vec![("carbon".into(), Arc::new(delivery))].into(),
        discoveries: Vec::new(),
    }
}

fn observed() -> Observed {
    Observed {
        orders: Some(vec![
            (OrderState::Active, 5),
            (OrderState::Invalid, 1),
            (OrderState::Unresolved, 0),
        ]),
        incoming: Some(2),
        failed: Some(1),
        outboxes: vec![SinkBacklog {
            sink: "carbon".into(),
            records: 1,
            lines: 30,
            bytes: 900,
            oldest_age_seconds: Some(8),
            problems: Vec::new(),
            dropped_lines: 6,
            dropped_bytes: 60,
            rejected_lines: 0,
            delivered_lines: 100,
            error: None,
        }],
    }
}

#[test]
fn the_snapshot_is_valid_exposition_with_the_values_of_the_stats() {
    let text = exposition::render(&gather::gather(&sources(), &observed(), 1_700_000_000));
    let samples = check_exposition(&text);
    for line in [
        "spoolmon_build_info{version=\"0.1.0\"} 1",
        "spoolmon_start_time_seconds 1700000000",
        "spoolmon_orders{state=\"active\"} 5",
        "spoolmon_orders{state=\"invalid\"} 1",
        "spoolmon_orders{state=\"unresolved\"} 0",
        "spoolmon_incoming_snapshots 2",
        "spoolmon_failed_snapshots 1",
        "spoolmon_outbox_lines{sink=\"carbon\"} 30",
        "spoolmon_outbox_oldest_age_seconds{sink=\"carbon\"} 8",
        "spoolmon_outbox_dropped_lines_total{sink=\"carbon\"} 6",
        "spoolmon_probe_pings_sent_total 40",
        "spoolmon_probe_pings_lost_total 3",
        "spoolmon_probe_runs_suspended_total 2",
        "spoolmon_probe_start_delay_seconds_total 1.5",
        "spoolmon_snapshots_processed_total 7",
        "spoolmon_snapshots_failed_total 1",
        "spoolmon_rrd_updates_total 12",
        "spoolmon_processing_seconds_total 0.25",
        "spoolmon_sink_sent_lines_total{sink=\"carbon\"} 100",
        "spoolmon_pull_cycles_total 9",
        "spoolmon_pull_suspended_cycles_total 4",
        "spoolmon_api_requests_total 12",
        "spoolmon_api_client_errors_total 2",
        "# TYPE spoolmon_orders gauge",
        "# TYPE spoolmon_rrd_updates_total counter",
    ] {
        assert!(text.lines().any(|l| l == line), "missing {line:?} in\n{text}");
    }
    assert!(samples.len() > 30, "{}", samples.len());
}

#[test]
fn absent_parts_are_left_out() {
    let sources = Sources {
        pull: Some(Arc::new(PullStats::default())),
        ..Sources::default()
    };
    let text = exposition::render(&gather::gather(&sources, &Observed::default(), 1));
    check_exposition(&text);
    assert!(text.contains("spoolmon_pull_cycles_total 0"), "{text}");
    for absent in [
        "spoolmon_orders",
        "spoolmon_probe_",
        "spoolmon_snapshots_processed",
        "spoolmon_outbox_",
    ] {
        assert!(!text.contains(absent), "{absent} in\n{text}");
    }
}

#[test]
fn sink_paths_put_label_values_after_the_name_and_leave_build_info_out() {
    let families = gather::gather(&sources(), &observed(), 1);
    let metrics = sink_metrics("spoolmon", &families, 1_700_000_100);
    let find = |path: &str| metrics.iter().find(|m| m.path == path).map(|m| m.value);
    assert_eq!(find("spoolmon.orders.active"), Some(5.0));
    assert_eq!(find("spoolmon.outbox_lines.carbon"), Some(30.0));
    assert_eq!(find("spoolmon.snapshots_processed_total"), Some(7.0));
    assert!(metrics
        .iter()
        .all(|m| m.time == 1_700_000_100 && !m.path.contains("build_info")));
    let weird = vec![exposition::Family {
        name: "spoolmon_x".into(),
        help: "h",
        kind: exposition::Kind::Gauge,
        samples: vec![exposition::Sample {
            labels: vec![("sink", "a.b c".into())],
            value: 1.0,
        }],
    }];
    assert_eq!(sink_metrics("p", &weird, 0)[0].path, "p.x.a_b_c");
}

/// Remembers every metric it accepted.
#[derive(Default)]
struct Recording(Mutex<Vec<Metric>>);

impl ResultSink for Recording {
    fn name(&self) -> &str {
        "recording"
    }
    fn accept(&self, batch: SinkBatch<'_>) -> Result<(), SinkError> {
        self.0.lock().unwrap().extend_from_slice(batch.metrics);
        Ok(())
    }
}

#[test]
fn a_tick_writes_both_files_atomically_and_only_the_selected_sinks_get_the_metrics() {
    let dir = tempfile::tempdir().unwrap();
    let base = BaseDir::new(dir.path());
    base.create_all().unwrap();
    // The stage's own options, as the `self-metrics:` section `{sinks: [b], interval: 3600}`.
    let options = SelfMetricsOptions {
        sinks: SinkSelection::Named(vec!["b".to_string()]),
        interval: 3600,
        ..SelfMetricsOptions::default()
    };
    let (a, b) = (Arc::new(Recording::default()), Arc::new(Recording::default()));
    let mut running = RunningSinks::default();
    running.sinks = vec![a.clone(), b.clone()];
    running.names = vec!["a".to_string(), "b".to_string()];
    let sources = sources();
    running.deliveries = sources.deliveries.clone();
    sources
        .process
        .as_ref()
        .unwrap()
        .last_error
        .set("snapshot 1 quarantined: empty");
    let metrics = SelfMetrics::new(&base, Component::Process, &options, sources).with_sinks(&options, &running);
    metrics.tick(None);
    let text = std::fs::read_to_string(base.state().join("metrics-process.prom")).unwrap();
    check_exposition(&text);
    assert!(text.contains("spoolmon_snapshots_processed_total 7\n"), "{text}");
    assert!(a.0.lock().unwrap().is_empty());
    let sent = b.0.lock().unwrap().clone();
    assert!(sent
        .iter()
        .any(|m| m.path == "spoolmon.snapshots_processed_total" && m.value == 7.0));
    let status: StatusFile =
        serde_json::from_slice(&std::fs::read(base.state().join("status-process.json")).unwrap()).unwrap();
    assert_eq!(status.component, "process");
    assert_eq!(status.metrics["spoolmon_snapshots_processed_total"], 7.0);
    assert_eq!(status.metrics["spoolmon_incoming_snapshots"], 0.0);
    let sources: Vec<&str> = status.last_errors.iter().map(|e| e.source.as_str()).collect();
    assert!(
        sources.contains(&"processing") && sources.contains(&"sink carbon"),
        "{sources:?}"
    );
    // Within the interval nothing is written again.
    std::fs::remove_file(base.state().join("metrics-process.prom")).unwrap();
    metrics.tick(None);
    assert!(!base.state().join("metrics-process.prom").exists());
    let leftovers: Vec<_> = std::fs::read_dir(base.state())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.starts_with('.'))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

/// Records the batches it accepted; takes self-metrics only when `takes_self`.
struct Routed {
    takes_self: bool,
    batches: Mutex<Vec<(MetricKind, usize)>>,
}

impl ResultSink for Routed {
    fn name(&self) -> &str {
        "routed"
    }
    fn accept(&self, batch: SinkBatch<'_>) -> Result<(), SinkError> {
        self.batches
            .lock()
            .unwrap()
            .push((batch.metric_kind, batch.metrics.len()));
        Ok(())
    }
    fn takes(&self, kind: Kind) -> bool {
        kind != Kind::SelfMetrics || self.takes_self
    }
}

#[test]
fn sinks_true_sends_to_every_sink_that_takes_self_and_says_what_the_batch_is() {
    let dir = tempfile::tempdir().unwrap();
    let base = BaseDir::new(dir.path());
    base.create_all().unwrap();
    let options = SelfMetricsOptions {
        sinks: SinkSelection::All(true),
        interval: 3600,
        ..SelfMetricsOptions::default()
    };
    let sink = |takes_self| {
        Arc::new(Routed {
            takes_self,
            batches: Mutex::default(),
        })
    };
    let (takes, leaves) = (sink(true), sink(false));
    let mut running = RunningSinks::default();
    running.sinks = vec![takes.clone(), leaves.clone()];
    running.names = vec!["takes".to_string(), "leaves".to_string()];
    let metrics = SelfMetrics::new(&base, Component::Process, &options, sources()).with_sinks(&options, &running);
    metrics.tick(None);
    let sent = takes.batches.lock().unwrap().clone();
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].0, MetricKind::SelfMetrics);
    assert!(sent[0].1 > 0);
    assert!(leaves.batches.lock().unwrap().is_empty());
}

#[test]
fn each_component_has_its_own_files() {
    let names: Vec<(String, String)> = Component::ALL
        .iter()
        .map(|c| (c.metrics_file(), c.status_file()))
        .collect();
    assert_eq!(
        names,
        [
            ("metrics.prom".to_string(), "status.json".to_string()),
            ("metrics-pull.prom".into(), "status-pull.json".into()),
            ("metrics-process.prom".into(), "status-process.json".into()),
        ]
    );
}

#[test]
fn a_config_error_is_the_config_part_until_a_reload_is_taken_and_a_delivery_clears_a_sink() {
    let dir = tempfile::tempdir().unwrap();
    let base = BaseDir::new(dir.path());
    let sources = sources();
    let config_error = Arc::new(LastError::default());
    let options = SelfMetricsOptions {
        // The largest interval: the first tick takes the counters, no line is due, no overflow.
        progress_interval: u64::MAX,
        ..SelfMetricsOptions::default()
    };
    let metrics =
        SelfMetrics::new(&base, Component::Run, &options, sources.clone()).with_config_error(config_error.clone());
    config_error.set("reload refused: rescan-interval: invalid type");
    metrics.tick(None);
    metrics.progress_tick();
    let sources_of = |m: &SelfMetrics| m.last_errors().into_iter().map(|e| e.source).collect::<Vec<_>>();
    let mut shown = sources_of(&metrics);
    shown.sort();
    // No state/ yet: the write failed.
    assert_eq!(shown, ["api", "config", "self-metrics", "sink carbon"]);
    base.create_all().unwrap();
    metrics.write(&metrics.observe(None));
    let mut shown = sources_of(&metrics);
    shown.sort();
    assert_eq!(shown, ["api", "config", "sink carbon"]);
    config_error.succeeded();
    sources.deliveries.list()[0].1.last_error.succeeded();
    sources.api.as_ref().unwrap().last_error.succeeded();
    assert!(sources_of(&metrics).is_empty());
}
