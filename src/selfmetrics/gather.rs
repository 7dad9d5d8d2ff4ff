//! A snapshot of the daemon's own counters and gauges as metric families: from the stats
//! structs the threads update ([`Sources`]) and from what was just read on disk
//! ([`Observed`]: orders by state, queue depths, outbox backlogs).

use super::exposition::{Family, Kind, Sample};
use crate::collect::haproxy::PullStats;
use crate::orders::book::OrderState;
use crate::probe::scheduler::SchedulerStats;
use crate::process::ProcessStats;
use crate::sink::backlog::SinkBacklog;
use crate::sink::delivery::DeliveryStats;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// The stats structs of the parts running in this process (absent parts are left out).
#[derive(Clone, Debug, Default)]
pub struct Sources {
    pub scheduler: Option<Arc<SchedulerStats>>,
    pub process: Option<Arc<ProcessStats>>,
    pub pull: Option<Arc<PullStats>>,
    /// The receiver's counters, when it listens (`receive:`).
    pub receive: Option<Arc<crate::receive::server::ReceiveStats>>,
    /// The API server's counters, when it serves (`api:`).
    pub api: Option<Arc<crate::http::ServerStats>>,
    /// Delivery counters per outbox name.
    pub deliveries: crate::sink::delivery::DeliveryRegistry,
    /// Discovery counters per forward sink with `discovery:`.
    pub discoveries: Vec<(String, Arc<crate::sink::discovery::DiscoveryStats>)>,
}

/// Gauges read from the base directory (or the order book) for this snapshot.
#[derive(Debug, Default)]
pub struct Observed {
    pub orders: Option<Vec<(OrderState, usize)>>,
    /// Snapshots in `incoming/` that still need processing.
    pub incoming: Option<usize>,
    /// Snapshots in `failed/`.
    pub failed: Option<usize>,
    pub outboxes: Vec<SinkBacklog>,
}

/// Collects families in order; the name is prefixed with `spoolmon_`.
struct Families(Vec<Family>);

impl Families {
    fn add(&mut self, name: &str, help: &'static str, kind: Kind, samples: Vec<Sample>) {
        self.0.push(Family {
            name: format!("spoolmon_{name}"),
            help,
            kind,
            samples,
        });
    }

    fn one(&mut self, name: &str, help: &'static str, kind: Kind, value: f64) {
        self.add(name, help, kind, vec![unlabelled(value)]);
    }

    fn counter(&mut self, name: &str, help: &'static str, counter: &AtomicU64) {
        self.one(name, help, Kind::Counter, load(counter));
    }
}

fn unlabelled(value: f64) -> Sample {
    Sample {
        labels: Vec::new(),
        value,
    }
}

fn load(counter: &AtomicU64) -> f64 {
    counter.load(Ordering::Relaxed) as f64
}

fn micros(counter: &AtomicU64) -> f64 {
    load(counter) / 1e6
}

fn sink_sample(sink: &str, value: f64) -> Sample {
    Sample {
        labels: vec![("sink", sink.to_owned())],
        value,
    }
}

/// Every family of this snapshot; `started` is the process's start, unix seconds.
pub fn gather(sources: &Sources, observed: &Observed, started: i64) -> Vec<Family> {
    let mut families = Families(Vec::new());
    let build = Sample {
        labels: vec![("version", env!("CARGO_PKG_VERSION").to_owned())],
        value: 1.0,
    };
    families.add(
        "build_info",
        "The running spoolmon's version (always 1).",
        Kind::Gauge,
        vec![build],
    );
    families.one(
        "start_time_seconds",
        "When this spoolmon process started, unix seconds.",
        Kind::Gauge,
        started as f64,
    );
    add_observed(&mut families, observed);
    if let Some(stats) = &sources.scheduler {
        add_scheduler(&mut families, stats);
    }
    if let Some(stats) = &sources.process {
        add_process(&mut families, stats);
    }
    add_deliveries(&mut families, &sources.deliveries.list());
    add_discoveries(&mut families, &sources.discoveries);
    if let Some(stats) = &sources.pull {
        add_pull(&mut families, stats);
    }
    if let Some(stats) = &sources.receive {
        add_receive(&mut families, stats);
    }
    if let Some(stats) = &sources.api {
        families.0.extend(api_families(stats));
    }
    families.0
}

/// The API server's counters (also what its own `/metrics` shows live).
pub fn api_families(stats: &crate::http::ServerStats) -> Vec<Family> {
    let mut families = Families(Vec::new());
    families.counter("api_requests_total", "Requests the API answered.", &stats.requests);
    families.counter(
        "api_client_errors_total",
        "API requests answered 4xx (the client's mistake).",
        &stats.client_errors,
    );
    families.counter(
        "api_server_errors_total",
        "API requests answered 5xx (something here could not be read or written).",
        &stats.server_errors,
    );
    families.counter(
        "api_connections_refused_total",
        "API connections answered 503 at once (api.max-connections).",
        &stats.connections.refused,
    );
    families.counter(
        "api_tls_failures_total",
        "API TLS handshakes that failed or did not finish within api.header-timeout.",
        &stats.connections.tls_failures,
    );
    families.0
}

fn add_receive(families: &mut Families, stats: &crate::receive::server::ReceiveStats) {
    families.counter("receive_requests_total", "Requests to the receiver.", &stats.requests);
    families.counter(
        "receive_requests_refused_total",
        "Requests the receiver refused whole (key, address, capacity, size, time, malformed body, store failure).",
        &stats.requests_refused,
    );
    families.add(
        "receive_frames_total",
        "Shipped snapshots received, by what became of them (stored, repeat: stored before, refused: machine or loop).",
        Kind::Counter,
        [
            ("stored", &stats.frames_stored),
            ("repeat", &stats.frames_repeated),
            ("refused", &stats.frames_refused),
        ]
        .into_iter()
        .map(|(result, counter)| Sample {
            labels: vec![("result", result.into())],
            value: load(counter),
        })
        .collect(),
    );
    families.counter(
        "receive_bytes_total",
        "Request body bytes the receiver read.",
        &stats.bytes_received,
    );
    families.counter(
        "receive_connections_refused_total",
        "Connections answered 503 at once (receive.max-connections or accept-every).",
        &stats.connections.refused,
    );
    families.counter(
        "receive_tls_failures_total",
        "TLS handshakes that failed or did not finish within receive.timeout.",
        &stats.connections.tls_failures,
    );
}

fn add_observed(families: &mut Families, observed: &Observed) {
    if let Some(orders) = &observed.orders {
        let samples = orders
            .iter()
            .map(|(state, count)| Sample {
                labels: vec![("state", state.as_str().to_owned())],
                value: *count as f64,
            })
            .collect();
        families.add("orders", "Order files below orders/ by state.", Kind::Gauge, samples);
    }
    if let Some(incoming) = observed.incoming {
        families.one(
            "incoming_snapshots",
            "Snapshots in incoming/ waiting to be processed (not counting those marked APPLIED).",
            Kind::Gauge,
            incoming as f64,
        );
    }
    if let Some(failed) = observed.failed {
        families.one(
            "failed_snapshots",
            "Snapshots quarantined in failed/.",
            Kind::Gauge,
            failed as f64,
        );
    }
    add_outboxes(families, &observed.outboxes);
}

fn add_outboxes(families: &mut Families, outboxes: &[SinkBacklog]) {
    let readable: Vec<&SinkBacklog> = outboxes.iter().filter(|b| b.error.is_none()).collect();
    let each = |value: fn(&SinkBacklog) -> f64| -> Vec<Sample> {
        readable.iter().map(|b| sink_sample(&b.sink, value(b))).collect()
    };
    families.add(
        "outbox_lines",
        "Undelivered lines in the sink's outbox.",
        Kind::Gauge,
        each(|b| b.lines as f64),
    );
    families.add(
        "outbox_bytes",
        "Undelivered payload bytes in the sink's outbox.",
        Kind::Gauge,
        each(|b| b.bytes as f64),
    );
    families.add(
        "outbox_oldest_age_seconds",
        "Age of the oldest undelivered record in the sink's outbox (0 when empty).",
        Kind::Gauge,
        each(|b| b.oldest_age_seconds.unwrap_or(0) as f64),
    );
    families.add(
        "outbox_dropped_lines_total",
        "Lines dropped from the sink's outbox to respect its bound, or corrupt (lifetime of the outbox).",
        Kind::Counter,
        each(|b| b.dropped_lines as f64),
    );
    families.add(
        "outbox_dropped_bytes_total",
        "Bytes dropped from the sink's outbox (lifetime of the outbox).",
        Kind::Counter,
        each(|b| b.dropped_bytes as f64),
    );
}

fn add_scheduler(families: &mut Families, stats: &SchedulerStats) {
    families.counter("probe_runs_total", "Batch runs measured.", &stats.runs);
    families.counter(
        "probe_orders_measured_total",
        "Orders measured (one per order of every batch run).",
        &stats.orders_measured,
    );
    families.counter(
        "probe_orders_unmeasured_total",
        "Orders a run could not measure (missing binary, permission, no socket, ...): their steps are unknown, their pings neither sent nor lost.",
        &stats.orders_unmeasured,
    );
    families.counter("probe_pings_sent_total", "Pings (probes) sent.", &stats.pings_sent);
    families.counter(
        "probe_pings_lost_total",
        "Pings (probes) without an answer.",
        &stats.pings_lost,
    );
    families.counter(
        "probe_snapshots_published_total",
        "Snapshots published into incoming/ by the probes.",
        &stats.snapshots_published,
    );
    families.counter(
        "probe_publish_errors_total",
        "Probe snapshots that could not be published.",
        &stats.publish_errors,
    );
    families.counter(
        "probe_runs_suspended_total",
        "Batch runs skipped because incoming/ was full, free space low, or snapshots could not be published (collection suspended).",
        &stats.suspended_runs,
    );
    families.counter(
        "probe_snapshot_name_collisions_total",
        "Snapshot names found taken at publish and retried with the next sequence number.",
        &stats.name_collisions,
    );
    families.one(
        "probe_snapshots_held",
        "Snapshots kept in memory because they could not be published yet.",
        Kind::Gauge,
        stats.held_snapshots.load(std::sync::atomic::Ordering::Relaxed) as f64,
    );
    families.counter(
        "probe_snapshots_lost_total",
        "Held snapshots dropped because too many waited to be published.",
        &stats.snapshots_lost,
    );
    families.one(
        "probe_start_delay_seconds_total",
        "Sum over started runs of how late each started after its scheduled time.",
        Kind::Counter,
        micros(&stats.start_delay_micros),
    );
    families.one(
        "probe_last_start_delay_seconds",
        "How late the latest run started after its scheduled time.",
        Kind::Gauge,
        micros(&stats.last_start_delay_micros),
    );
}

fn add_process(families: &mut Families, stats: &ProcessStats) {
    families.counter(
        "process_rounds_total",
        "Processing rounds that loaded snapshots.",
        &stats.rounds,
    );
    families.counter(
        "snapshots_processed_total",
        "Snapshots fully applied and removed from incoming/.",
        &stats.snapshots_processed,
    );
    families.counter(
        "snapshots_failed_total",
        "Snapshots moved to failed/.",
        &stats.snapshots_failed,
    );
    families.counter(
        "results_applied_total",
        "Order results written to output/.",
        &stats.results_applied,
    );
    families.counter(
        "results_dropped_total",
        "Results of orders no longer active (not written).",
        &stats.results_dropped,
    );
    families.counter(
        "order_output_errors_total",
        "Orders whose output could not be written in a round.",
        &stats.order_errors,
    );
    families.one(
        "order_output_failing",
        "Orders whose output cannot be written for a reason of their own (state/output-errors.json).",
        Kind::Gauge,
        load(&stats.orders_failing),
    );
    families.one(
        "order_probe_failing",
        "Orders whose newest result says their probe could not measure them (failing, kind probe, in state/output-errors.json).",
        Kind::Gauge,
        load(&stats.orders_probe_failing),
    );
    families.one(
        "output_waiting",
        "1 while output waits for a transient fault (disk full, I/O error) to clear.",
        Kind::Gauge,
        load(&stats.output_waiting),
    );
    families.counter(
        "rrd_updates_total",
        "librrd update calls (one per order per round).",
        &stats.rrd_updates,
    );
    families.one(
        "processing_seconds_total",
        "Wall-clock time spent in processing rounds.",
        Kind::Counter,
        micros(&stats.processing_micros),
    );
}

fn add_discoveries(families: &mut Families, discoveries: &[(String, Arc<crate::sink::discovery::DiscoveryStats>)]) {
    use crate::sink::discovery::DiscoveryStats;
    if discoveries.is_empty() {
        return;
    }
    let each = |value: fn(&DiscoveryStats) -> &AtomicU64| per_sink(discoveries, value);
    families.add(
        "sink_destinations",
        "Destinations a forward sink with discovery uses now.",
        Kind::Gauge,
        each(|s| &s.destinations),
    );
    families.add(
        "sink_discovery_errors_total",
        "Discovery refreshes that failed or found no destination (the last good set was kept).",
        Kind::Counter,
        each(|s| &s.errors),
    );
    families.add(
        "sink_discovery_changes_total",
        "Destination sets discovery found and applied.",
        Kind::Counter,
        each(|s| &s.changes),
    );
}

/// One sample per sink of the counter `value` picks from its stats.
fn per_sink<T>(stats: &[(String, Arc<T>)], value: fn(&T) -> &AtomicU64) -> Vec<Sample> {
    stats
        .iter()
        .map(|(sink, stats)| sink_sample(sink, load(value(stats))))
        .collect()
}

fn add_deliveries(families: &mut Families, deliveries: &[(String, Arc<DeliveryStats>)]) {
    let each = |value: fn(&DeliveryStats) -> &AtomicU64| per_sink(deliveries, value);
    families.add(
        "sink_sent_lines_total",
        "Lines the sink's remote took since this process started.",
        Kind::Counter,
        each(|s| &s.sent_lines),
    );
    families.add(
        "sink_sent_bytes_total",
        "Bytes the sink's remote took since this process started.",
        Kind::Counter,
        each(|s| &s.sent_bytes),
    );
    families.add(
        "sink_failed_sends_total",
        "Sends to the sink's remote that failed transiently (each retry counts).",
        Kind::Counter,
        each(|s| &s.failed_sends),
    );
    families.add(
        "sink_rejected_lines_total",
        "Lines the sink's remote refused for good (dropped).",
        Kind::Counter,
        each(|s| &s.rejected_lines),
    );
    families.add(
        "sink_handed_off_lines_total",
        "Lines taken out of the outbox for other destinations of the ring (a forward sink in mode: hash whose destination was down for handoff-timeout).",
        Kind::Counter,
        each(|s| &s.handed_off_lines),
    );
    families.add(
        "sink_resent_lines_total",
        "Lines sent again after the remote reported them not delivered (Kafka: failed delivery reports); what may arrive twice.",
        Kind::Counter,
        each(|s| &s.resent_lines),
    );
}

fn add_pull(families: &mut Families, stats: &PullStats) {
    families.counter("pull_cycles_total", "HAProxy pull cycles begun.", &stats.cycles_started);
    families.counter(
        "pull_snapshots_published_total",
        "HAProxy snapshots published into incoming/.",
        &stats.snapshots_published,
    );
    families.counter(
        "pull_failed_cycles_total",
        "Pull cycles that published nothing because a source failed.",
        &stats.failed_cycles,
    );
    families.counter(
        "pull_suspended_cycles_total",
        "Pull slots skipped because incoming/ was full or free space low (collection suspended).",
        &stats.suspended_cycles,
    );
    families.counter(
        "pull_missed_slots_total",
        "Pull slots that passed while a cycle overran.",
        &stats.missed_slots,
    );
    families.counter(
        "pull_name_collisions_total",
        "Pull cycles that published nothing because their snapshot name was taken.",
        &stats.name_collisions,
    );
    families.counter(
        "pull_bytes_total",
        "Bytes of every published HAProxy reply.",
        &stats.bytes_pulled,
    );
    families.one(
        "pull_cpu_seconds_total",
        "CPU time of every published pull cycle.",
        Kind::Counter,
        micros(&stats.cycle_cpu_us),
    );
    families.one(
        "pull_last_cycle_seconds",
        "Wall-clock time of the latest published pull cycle.",
        Kind::Gauge,
        micros(&stats.last_cycle_wall_us),
    );
}
