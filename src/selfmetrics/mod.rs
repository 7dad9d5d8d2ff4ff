//! Self-metrics: spoolmon's own counters and gauges, written periodically to `state/` for
//! Prometheus (node_exporter's textfile collector) and `spoolmon status`, and optionally sent
//! through the configured sinks like any other metric.
//!
//! # What is written (every `self-metrics: {interval}` seconds, each file replaced atomically)
//!
//! ```text
//! state/metrics.prom           spoolmon run       Prometheus text exposition format
//! state/metrics-pull.prom      spoolmon pull
//! state/metrics-process.prom   spoolmon process
//! state/status.json            spoolmon run       the same samples plus the last error of each part
//! state/status-pull.json       spoolmon pull
//! state/status-process.json    spoolmon process
//! ```
//!
//! Each process writes its own pair, so `pull` and `process` running beside each other never
//! overwrite one another. The files are replaced by write-temp + fsync + rename
//! ([`crate::spool::beneath::Dir::replace`]): node_exporter's textfile collector (pointed at
//! `state/` with `--collector.textfile.directory`, or given a symlink to the file) never reads
//! a partial file. A stopped process leaves its last files behind; node_exporter's
//! `node_textfile_mtime_seconds` shows how old they are.
//!
//! Every `self-metrics: {progress-interval}` seconds (default 60) the same counters also give
//! one info line per part in the log, with what it did since the previous line ([`progress`]).
//! A part's last error ([`LastError`]) is shown only until the part has worked again; the
//! `config` part is the reason a SIGHUP's config was refused, kept by the caller across reloads.
//!
//! # Sinks
//!
//! With `self-metrics: {sinks: true}` (every sink whose `takes` has `self`) or a list of sink
//! names (each must take `self`, or the config is refused), each write also
//! hands the samples as [`Metric`]s to those sinks' `accept`, the same call processing makes
//! for HAProxy aggregates. `accept` is safe from this thread while processing uses the same
//! sinks: an outbox serializes appends under its writer lock and local-store under its own
//! mutex, and every batch is one whole record. The path of a sample is
//! `<prefix>.<name without spoolmon_>[.<label value>...]` below the sink's own namespace and
//! host (`pings.lb-01.spoolmon.orders.active`), label values with characters other than ASCII
//! letters, digits, `-` and `_` written as `_`. A sink that fails is logged and the batch is
//! not retried: self-metrics are a sample, not a journal.

pub mod exposition;
pub mod gather;
pub mod progress;

pub use gather::{Observed, Sources};

use crate::collect::haproxy::PullStats;
use crate::orders::book::OrderBook;
use crate::probe::scheduler::SchedulerStats;
use crate::process::handoff::Kind;
use crate::process::handoff::ResultSink;
use crate::process::handoff::SinkBatch;
use crate::process::ProcessStats;
use crate::shared::clock::unix_now;
use crate::shared::last_error::{ErrorRecord, LastError};
use crate::shared::measurement::Metric;
use crate::sink::running::RunningSinks;
use crate::spool::{queue, BaseDir};
use exposition::Family;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use tracing::{debug, warn};

/// The `self-metrics:` section of the config.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(default, rename_all = "kebab-case", deny_unknown_fields)]
pub struct SelfMetricsOptions {
    /// Seconds between two writes of `state/metrics*.prom` and `state/status*.json` (and sends
    /// to sinks). Default 10.
    #[schemars(range(min = 1))]
    pub interval: u64,
    /// Sinks that get the self-metrics: `false` (none, the default), `true` (every sink whose
    /// `takes` has `self`) or a list of sink names from `sinks:` (each must take `self`).
    pub sinks: SinkSelection,
    /// First path component of the self-metrics in sinks. Default `spoolmon`.
    pub prefix: String,
    /// Seconds between two progress lines in the log (one info line per part with what it
    /// did since the previous one, see [`progress`]); `0` turns them off. Default 60.
    pub progress_interval: u64,
}

impl Default for SelfMetricsOptions {
    fn default() -> Self {
        SelfMetricsOptions {
            interval: 10,
            sinks: SinkSelection::All(false),
            prefix: "spoolmon".into(),
            progress_interval: 60,
        }
    }
}

/// `sinks: true|false` or `sinks: [name, ...]`.
#[derive(Clone, Debug, PartialEq, Serialize, schemars::JsonSchema)]
#[serde(untagged)]
pub enum SinkSelection {
    All(bool),
    Named(Vec<String>),
}

/// By hand rather than `untagged`, so a wrong value gets an error naming the key and the
/// accepted forms.
impl<'de> Deserialize<'de> for SinkSelection {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Selection;
        impl<'de> serde::de::Visitor<'de> for Selection {
            type Value = SinkSelection;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("true, false or a list of sink names")
            }
            fn visit_bool<E>(self, all: bool) -> Result<SinkSelection, E> {
                Ok(SinkSelection::All(all))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<SinkSelection, A::Error> {
                let mut names = Vec::new();
                while let Some(name) = seq.next_element::<String>()? {
                    names.push(name);
                }
                Ok(SinkSelection::Named(names))
            }
        }
        deserializer.deserialize_any(Selection)
    }
}

impl SinkSelection {
    fn includes(&self, name: &str) -> bool {
        match self {
            SinkSelection::All(all) => *all,
            SinkSelection::Named(names) => names.iter().any(|n| n == name),
        }
    }
}

impl SelfMetricsOptions {
    /// Checks the options; `sink_takes_self` tells, for a name, whether `sinks:` has a sink of
    /// that name (`None` if not) and whether its `takes` has `self`. The error names the key.
    pub fn validate(&self, sink_takes_self: impl Fn(&str) -> Option<bool>) -> Result<(), String> {
        if self.interval == 0 {
            return Err("self-metrics.interval: must be at least 1".into());
        }
        let word = |c: &str| !c.is_empty() && c.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-'));
        if !self.prefix.split('.').all(word) {
            return Err(format!(
                "self-metrics.prefix: {:?} must be dot-separated words of letters, digits, '_' or '-'",
                self.prefix
            ));
        }
        if let SinkSelection::Named(names) = &self.sinks {
            for name in names {
                match sink_takes_self(name) {
                    None => return Err(format!("self-metrics.sinks: no sink named {name:?} under sinks:")),
                    Some(false) => {
                        return Err(format!(
                            "self-metrics.sinks names {name:?}, but sinks.{name}.takes leaves out self: \
                             add self to sinks.{name}.takes or remove {name:?} from self-metrics.sinks"
                        ))
                    }
                    Some(true) => {}
                }
            }
        }
        Ok(())
    }
}

/// Which spoolmon process writes: each has its own files in `state/`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Component {
    Run,
    Pull,
    Process,
}

impl Component {
    pub const ALL: [Component; 3] = [Component::Run, Component::Pull, Component::Process];

    pub fn name(self) -> &'static str {
        match self {
            Component::Run => "run",
            Component::Pull => "pull",
            Component::Process => "process",
        }
    }

    fn suffix(self) -> &'static str {
        match self {
            Component::Run => "",
            Component::Pull => "-pull",
            Component::Process => "-process",
        }
    }

    /// `metrics.prom`, `metrics-pull.prom`, `metrics-process.prom`.
    pub fn metrics_file(self) -> String {
        format!("metrics{}.prom", self.suffix())
    }

    /// `status.json`, `status-pull.json`, `status-process.json`.
    pub fn status_file(self) -> String {
        format!("status{}.json", self.suffix())
    }
}

/// The content of `state/status*.json`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StatusFile {
    /// `run`, `pull` or `process`.
    pub component: String,
    pub pid: u32,
    pub version: String,
    /// When the process started and when this file was written, unix seconds.
    pub started: i64,
    pub written: i64,
    /// Every sample of the metrics file: `name` or `name{label="value"}` → value.
    pub metrics: BTreeMap<String, f64>,
    /// The latest error of each part that had one, newest first.
    pub last_errors: Vec<SourceError>,
}

/// The latest error of one part of the process.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SourceError {
    /// `probes`, `processing`, `pull`, `sink <name>`, `config` or `self-metrics`.
    pub source: String,
    pub time: i64,
    pub message: String,
}

/// Writes the self-metrics of one process every interval; see the module documentation.
pub struct SelfMetrics {
    base: BaseDir,
    component: Component,
    interval: Duration,
    prefix: String,
    sources: Sources,
    sinks: Vec<Arc<dyn ResultSink>>,
    started: i64,
    last_write: Mutex<Option<Instant>>,
    own_error: LastError,
    /// A rejected reload of the config file (kept by the caller across reloads).
    config_error: Option<Arc<LastError>>,
    /// Between progress lines; `None` when they are off.
    progress_interval: Option<Duration>,
    /// When the last progress line was written and the counters it was computed from.
    progress: Mutex<Option<(Instant, progress::Totals)>>,
}

impl SelfMetrics {
    /// Self-metrics of `component` on `base` from `sources`, written every `options.interval`.
    pub fn new(base: &BaseDir, component: Component, options: &SelfMetricsOptions, sources: Sources) -> SelfMetrics {
        SelfMetrics {
            base: base.clone(),
            component,
            interval: Duration::from_secs(options.interval.max(1)),
            prefix: options.prefix.clone(),
            sources,
            sinks: Vec::new(),
            started: unix_now(),
            last_write: Mutex::new(None),
            own_error: LastError::default(),
            config_error: None,
            progress_interval: (options.progress_interval > 0).then(|| Duration::from_secs(options.progress_interval)),
            progress: Mutex::new(None),
        }
    }

    /// The self-metrics of `spoolmon run`: its scheduler, processing and (when `pulling`, with
    /// a `pull:` section) puller.
    pub fn for_daemon(
        base: &BaseDir,
        options: &SelfMetricsOptions,
        pulling: bool,
        sinks: &RunningSinks,
        scheduler: Arc<SchedulerStats>,
        process: Arc<ProcessStats>,
        pull: Arc<PullStats>,
    ) -> SelfMetrics {
        let sources = Sources {
            scheduler: Some(scheduler),
            process: Some(process),
            pull: pulling.then_some(pull),
            receive: None,
            api: None,
            deliveries: Default::default(),
            discoveries: Vec::new(),
        };
        SelfMetrics::new(base, Component::Run, options, sources).with_sinks(options, sinks)
    }

    /// The self-metrics of `spoolmon process`: processing and the sinks.
    pub fn for_process(
        base: &BaseDir,
        options: &SelfMetricsOptions,
        sinks: &RunningSinks,
        process: Arc<ProcessStats>,
    ) -> SelfMetrics {
        let sources = Sources {
            process: Some(process),
            ..Sources::default()
        };
        SelfMetrics::new(base, Component::Process, options, sources).with_sinks(options, sinks)
    }

    /// The self-metrics of `spoolmon pull` (no sinks: `spoolmon pull` runs none), with the
    /// `self-metrics:` options read at start.
    pub fn for_pull(base: &BaseDir, options: &SelfMetricsOptions, pull: Arc<PullStats>) -> SelfMetrics {
        let sources = Sources {
            pull: Some(pull),
            ..Sources::default()
        };
        SelfMetrics::new(base, Component::Pull, options, sources)
    }

    /// Adds the API server's counters and its last error (part `api`).
    pub fn with_api(mut self, stats: Arc<crate::http::ServerStats>) -> SelfMetrics {
        self.sources.api = Some(stats);
        self
    }

    /// Adds the receiver's counters and its last error (part `receive`).
    pub fn with_receive(mut self, stats: Arc<crate::receive::server::ReceiveStats>) -> SelfMetrics {
        self.sources.receive = Some(stats);
        self
    }

    /// Shows `error` in the status file as the last error of the `config` part: the reason a
    /// reload was refused, until a later one is taken ([`LastError::succeeded`]).
    pub fn with_config_error(mut self, error: Arc<LastError>) -> SelfMetrics {
        self.config_error = Some(error);
        self
    }

    /// Counts from `unix` seconds instead of now (`spoolmon run` keeps its counters across a
    /// reload, which rebuilds this).
    pub fn started(mut self, unix: i64) -> SelfMetrics {
        self.started = unix;
        self
    }

    /// Adds the running sinks: their delivery counters, and those `options.sinks` selects as
    /// destinations.
    pub fn with_sinks(mut self, options: &SelfMetricsOptions, running: &RunningSinks) -> SelfMetrics {
        self.sources.deliveries = running.deliveries.clone();
        self.sources.discoveries = running.discoveries.clone();
        let selection = &options.sinks;
        self.sinks = running
            .names
            .iter()
            .zip(&running.sinks)
            .filter(|(name, sink)| selection.includes(name) && sink.takes(Kind::SelfMetrics))
            .map(|(_, sink)| Arc::clone(sink))
            .collect();
        self
    }

    /// Writes when the interval has passed since the last write (at once the first time).
    /// `book` gives the orders by state (the daemon's own book; `None` leaves them out).
    pub fn tick(&self, book: Option<&OrderBook>) {
        self.progress_tick();
        {
            let mut last = self.last_write.lock().unwrap_or_else(|e| e.into_inner());
            if last.is_some_and(|t| t.elapsed() < self.interval) {
                return;
            }
            *last = Some(Instant::now());
        }
        let observed = self.observe(book);
        self.write(&observed);
    }

    /// Runs [`SelfMetrics::tick`] on its own thread until `shutdown` is set, then writes once
    /// more (for `spoolmon pull` and `spoolmon process`, whose main thread is busy).
    pub fn spawn(self, shutdown: Arc<AtomicBool>) -> std::io::Result<JoinHandle<()>> {
        std::thread::Builder::new().name("self-metrics".into()).spawn(move || {
            while !shutdown.load(Ordering::Relaxed) {
                self.tick(None);
                std::thread::sleep(Duration::from_millis(200));
            }
            let observed = self.observe(None);
            self.write(&observed);
        })
    }

    /// Logs the progress lines when `progress-interval` has passed since the last ones (the
    /// first call only takes the counters to start from).
    fn progress_tick(&self) {
        let Some(interval) = self.progress_interval else {
            return;
        };
        let mut last = self.progress.lock().unwrap_or_else(|e| e.into_inner());
        if last.as_ref().is_some_and(|(t, _)| t.elapsed() < interval) {
            return;
        }
        let outboxes = if self.sources.deliveries.is_empty() {
            Vec::new()
        } else {
            crate::sink::backlog::read_all(&self.base.outbox(), std::time::SystemTime::now()).unwrap_or_default()
        };
        let now = progress::Totals::read(&self.sources, &outboxes);
        if let Some((since, before)) = last.as_ref() {
            progress::log(&progress::lines(before, &now, since.elapsed()));
        }
        *last = Some((Instant::now(), now));
    }

    fn observe(&self, book: Option<&OrderBook>) -> Observed {
        let with_outboxes = self.component != Component::Pull;
        Observed {
            orders: book.map(OrderBook::state_counts),
            incoming: queue::depth(&self.base).ok(),
            failed: count_failed(&self.base),
            outboxes: if with_outboxes {
                crate::sink::backlog::read_all(&self.base.outbox(), std::time::SystemTime::now()).unwrap_or_default()
            } else {
                Vec::new()
            },
        }
    }

    /// Writes the metrics and status files and sends to the selected sinks.
    fn write(&self, observed: &Observed) {
        let families = gather::gather(&self.sources, observed, self.started);
        let state = self.base.dir("state");
        let replace = |name: &str, contents: &[u8]| match &state {
            Ok(state) => state.replace(name, contents),
            Err(e) => Err(std::io::Error::new(e.kind(), e.to_string())),
        };
        let text = exposition::render(&families);
        let mut ok = true;
        if let Err(e) = replace(&self.component.metrics_file(), text.as_bytes()) {
            warn!("cannot write {}: {e}", self.component.metrics_file());
            self.own_error
                .set(format!("cannot write {}: {e}", self.component.metrics_file()));
            ok = false;
        }
        let status = self.status(&families);
        let json = serde_json::to_vec_pretty(&status).unwrap_or_default();
        if let Err(e) = replace(&self.component.status_file(), &json) {
            warn!("cannot write {}: {e}", self.component.status_file());
            ok = false;
        }
        // Cleared for the next status file: this one still shows why the last write failed.
        if self.send(&families, status.written) && ok {
            self.own_error.succeeded();
        }
    }

    fn status(&self, families: &[Family]) -> StatusFile {
        let metrics = families
            .iter()
            .flat_map(|f| {
                f.samples
                    .iter()
                    .map(|s| (exposition::sample_key(&f.name, &s.labels), s.value))
            })
            .collect();
        StatusFile {
            component: self.component.name().into(),
            pid: std::process::id(),
            version: env!("CARGO_PKG_VERSION").into(),
            started: self.started,
            written: unix_now(),
            metrics,
            last_errors: self.last_errors(),
        }
    }

    fn last_errors(&self) -> Vec<SourceError> {
        let sources = &self.sources;
        let mut found: Vec<(String, Option<ErrorRecord>)> = vec![
            (
                "probes".into(),
                sources.scheduler.as_ref().and_then(|s| s.last_error.get()),
            ),
            (
                "processing".into(),
                sources.process.as_ref().and_then(|s| s.last_error.get()),
            ),
            ("pull".into(), sources.pull.as_ref().and_then(|s| s.last_error.get())),
            (
                "receive".into(),
                sources.receive.as_ref().and_then(|s| s.last_error.get()),
            ),
            ("api".into(), sources.api.as_ref().and_then(|s| s.last_error.get())),
            ("self-metrics".into(), self.own_error.get()),
            ("config".into(), self.config_error.as_ref().and_then(|e| e.get())),
        ];
        for (sink, stats) in &sources.deliveries.list() {
            found.push((format!("sink {sink}"), stats.last_error.get()));
        }
        for (sink, stats) in &sources.discoveries {
            found.push((format!("discovery {sink}"), stats.last_error.get()));
        }
        let mut errors: Vec<SourceError> = found
            .into_iter()
            .filter_map(|(source, record)| {
                record.map(|r| SourceError {
                    source,
                    time: r.time,
                    message: r.message,
                })
            })
            .collect();
        errors.sort_by(|a, b| b.time.cmp(&a.time).then_with(|| a.source.cmp(&b.source)));
        errors
    }

    /// Hands the samples (all but `build_info`) to the selected sinks as one batch each; false
    /// when a sink refused them.
    fn send(&self, families: &[Family], time: i64) -> bool {
        if self.sinks.is_empty() {
            return true;
        }
        let mut ok = true;
        let metrics = sink_metrics(&self.prefix, families, time);
        for sink in &self.sinks {
            match sink.accept(SinkBatch::self_metrics(&metrics)) {
                Ok(()) => debug!(sink = sink.name(), metrics = metrics.len(), "self-metrics sent"),
                Err(e) => {
                    warn!("self-metrics not sent: {e}");
                    self.own_error.set(format!("not sent: {e}"));
                    ok = false;
                }
            }
        }
        ok
    }
}

/// The samples as sink metrics: `<prefix>.<name without spoolmon_>[.<label value>...]`.
pub fn sink_metrics(prefix: &str, families: &[Family], time: i64) -> Vec<Metric> {
    let mut metrics = Vec::new();
    for family in families.iter().filter(|f| f.name != "spoolmon_build_info") {
        let name = family.name.strip_prefix("spoolmon_").unwrap_or(&family.name);
        for sample in &family.samples {
            let mut path = format!("{prefix}.{name}");
            for (_, value) in &sample.labels {
                path.push('.');
                path.extend(value.chars().map(|c| {
                    if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                        c
                    } else {
                        '_'
                    }
                }));
            }
            metrics.push(Metric {
                path,
                value: sample.value,
                time,
            });
        }
    }
    metrics
}

/// Snapshots in `failed/` (their `.REASON` files not counted); `None` if it cannot be read.
pub fn count_failed(base: &BaseDir) -> Option<usize> {
    let entries = std::fs::read_dir(base.failed()).ok()?;
    Some(
        entries
            .flatten()
            .filter(|e| !e.file_name().to_string_lossy().ends_with(".REASON"))
            .count(),
    )
}

#[cfg(test)]
mod tests;
