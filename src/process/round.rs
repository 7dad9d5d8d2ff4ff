//! One processing round: read the queued snapshots, apply them, make them durable, remove them.
//!
//! Faults are attributed to the smallest unit they belong to:
//! - a snapshot that is itself wrong (unreadable, malformed, a result out of bounds) is
//!   quarantined at once, before anything of it reaches an output or a sink;
//! - an order whose output cannot be written for a reason of its own (path too long, permission,
//!   a file in the way, see [`crate::spool::fault`]) fails alone: its siblings are applied, the
//!   snapshot goes on as usual, and the order is listed in `state/output-errors.json` until it
//!   writes again;
//! - a transient fault (disk full, I/O error) keeps the snapshots it touches in `incoming/`,
//!   retried after [`RETRY_EVERY`] (backing off to [`MAX_RETRY_DELAY`]) without counting anything
//!   against them; processing logs once that it waits and notes the reason as its last error.
//!   Snapshots newer than one that could not be read for such a fault wait with it (listed
//!   after it, they are not applied in that round), so each order's results still reach its RRD
//!   in time order. Reading a snapshot is I/O like writing: an EIO or EMFILE while reading a good
//!   ping or HAProxy snapshot is transient; only what is wrong with its content quarantines it.
//!
//! A result whose probe could not measure its order (its `failure` is set) is written to the RRD
//! as unknown (every data source `U`), leaves `last_result` as it is (pingmachine writes nothing
//! for such a run either), and marks the order `failing` with the probe's reason in
//! `state/output-errors.json` (kind `probe`) until a measured result arrives; entering and
//! leaving that state is logged once per order (at most [`MAX_STATE_LOGS`] lines a round, then a
//! summary), never every step. The sinks' encoders send nothing for it.
//!
//! A snapshot kept for a retry (transient fault, a sink that refused) is not handed again to the
//! sinks that already took its lines: the processor remembers, per snapshot, which sinks did
//! (in memory: after a crash or a restart the lines of snapshots still queued are delivered
//! again, at least once). A `last_result` never moves back in time: an older result is written
//! to the RRD if the RRD still takes it, but does not replace a newer `last_result`.

use crate::output::failures::{self, FailureKind, OrderFailure, OutputErrors};
use crate::output::{archive, last_result, rrd::RrdWriter};
use crate::process::children;
use crate::process::handoff::ResultSink;
use crate::process::handoff::{Kind, RawSnapshot, SinkBatch};
use crate::process::haproxy::{self, HaproxyOptions, HaproxySnapshotError};
use crate::shared::measurement::MetricBlock;
use crate::shared::measurement::{OrderId, OrderResult, RrdTemplate};
use crate::shared::node::Provenance;
use crate::spool::atomic::{sync_filesystem, StagedFile};
use crate::spool::beneath::Dir;
use crate::spool::fault::{self, Fault};
use crate::spool::queue::{self, QueueEntry};
use crate::spool::ship;
use crate::spool::snapshot::{read_ping, PingBounds, PingSnapshotError, SnapshotName, PING_FILE};
use crate::spool::BaseDir;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};
use tracing::{debug, info, warn};

/// Most snapshots read in one round (the rest wait for the next round).
const MAX_SNAPSHOTS_PER_ROUND: usize = 2_000;
/// Most HAProxy snapshots aggregated in one round (each becomes ~80,000 metrics in memory).
const MAX_HAPROXY_PER_ROUND: usize = 2;
/// Most bytes of ping files read in one round (a round takes at least one snapshot): a result
/// costs 2-4 times its line in memory, so a round holds ~16 MB of results however many probe
/// runs ended together. Without it, 100,000 orders ending their step at once (100 snapshots,
/// 2,000,000 RTTs) were one round of 50-100 MB that glibc's arenas kept afterwards
/// (BENCHMARKS.md, issue 12). An RRD flush's journal is not bounded (see `load_queue`).
const MAX_PING_BYTES_PER_ROUND: u64 = 4 << 20;
/// First retry of snapshots kept back by a transient fault or a refusing sink; the delay doubles
/// while the fault lasts, up to [`MAX_RETRY_DELAY`] (new arrivals and rescans retry them too).
pub const RETRY_EVERY: Duration = Duration::from_secs(2);
/// Longest delay between two retries of kept-back snapshots.
pub const MAX_RETRY_DELAY: Duration = Duration::from_secs(60);
/// Most orders whose failing state change is logged one by one in a round (entering and leaving
/// each); the rest are summed up in one line.
pub const MAX_STATE_LOGS: usize = 10;

/// A change in the set of orders whose results may be written to `output/`.
#[derive(Clone, Debug, PartialEq)]
pub enum Lifecycle {
    /// The order is (again) active: restore its output from the archive if needed.
    Activate(OrderId),
    /// The order is gone: archive its output (and move the expired order file with it).
    Deactivate { id: OrderId, expired_file: Option<PathBuf> },
    /// Delete archive entries older than this (`archive-retention`); runs here so it never races
    /// an archive move.
    PurgeArchive(Duration),
}

/// Counters of processing (read by status and self-metrics).
#[derive(Debug, Default)]
pub struct ProcessStats {
    pub rounds: AtomicU64,
    pub snapshots_processed: AtomicU64,
    pub snapshots_failed: AtomicU64,
    pub results_applied: AtomicU64,
    /// Results for orders that are no longer active (dropped, not written).
    pub results_dropped: AtomicU64,
    /// Order output failures, one per order per round (both kinds).
    pub order_errors: AtomicU64,
    /// Gauge: orders whose output fails for a reason of their own (`state/output-errors.json`).
    pub orders_failing: AtomicU64,
    /// Gauge: orders whose newest result says their probe could not measure them (kind `probe`
    /// in `state/output-errors.json`).
    pub orders_probe_failing: AtomicU64,
    /// Gauge: 1 while output waits for a transient fault (disk full, I/O error) to clear.
    pub output_waiting: AtomicU64,
    pub rrd_updates: AtomicU64,
    pub processing_micros: AtomicU64,
    /// The latest quarantine reason, output or sink error (for `spoolmon status`).
    pub last_error: crate::shared::last_error::LastError,
}

/// What one round did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct RoundReport {
    /// Snapshots fully applied and removed.
    pub processed: usize,
    /// Snapshots whose `last_result` and sink lines are done, left for the next RRD flush.
    pub marked: usize,
    pub quarantined: usize,
    /// Snapshots kept in `incoming/` for a retry (transient fault, a sink that refused).
    pub retried: usize,
    pub results: usize,
    /// Snapshots were left for the next round by the round's bounds (run it at once).
    pub deferred: bool,
    /// Bytes of ping files the round read (new snapshots and the RRD flush's journal).
    pub ping_bytes: u64,
}

/// The window and count limits of results, from the config (`result-max-age`,
/// `result-max-future`, `max-batch`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ResultLimits {
    pub max_age: Duration,
    pub max_future: Duration,
    /// Most results in one snapshot.
    pub max_results: usize,
}

impl Default for ResultLimits {
    fn default() -> Self {
        ResultLimits {
            max_age: Duration::from_secs(PingBounds::DEFAULT_MAX_AGE),
            max_future: Duration::from_secs(PingBounds::DEFAULT_MAX_FUTURE),
            max_results: PingBounds::DEFAULT_MAX_RESULTS,
        }
    }
}

/// How often [`Processor::sweep_children`] looks for stale children.
const CHILD_SWEEP_EVERY: Duration = Duration::from_secs(5);

/// The processing state: the active order set, the RRD writer, the sinks, and what earlier
/// rounds left to do (deliveries, quarantines, failing orders).
pub struct Processor {
    base: BaseDir,
    rrd: RrdWriter,
    sinks: Vec<Arc<dyn ResultSink>>,
    /// The children this node receives from (`state/children.json`).
    children: children::Children,
    children_swept: Option<std::time::Instant>,
    /// Some sink ships HAProxy snapshots whole: their files are read for it.
    raw_wanted: bool,
    /// HAProxy snapshots are aggregated: a sink takes the metrics, or none ships the snapshots
    /// (processing then still checks each snapshot and quarantines a bad one).
    aggregate_wanted: bool,
    /// Some sink keeps nothing locally of what it takes (`keep-local: false`): each result is
    /// asked for ([`Processor::keeps_local`]).
    forward_only: bool,
    /// Orders whose results are written; `None` accepts every order (`spoolmon process` alone).
    active: Option<HashSet<OrderId>>,
    /// How HAProxy snapshots are aggregated.
    haproxy: HaproxyOptions,
    limits: ResultLimits,
    /// Epoch of the oldest snapshot left in `incoming/` after the last round.
    oldest_waiting: Option<i64>,
    /// Threads that read and aggregate a round's snapshots (HAProxy's are the costly ones).
    readers: usize,
    stats: Arc<ProcessStats>,
    /// Snapshot name → names of the sinks that took its lines (snapshots kept for a retry).
    delivered: HashMap<String, HashSet<String>>,
    /// Snapshot name → reason, for quarantines that failed (retried every round).
    unquarantined: HashMap<String, String>,
    /// Quarantined entries (their path in `failed/`) whose `REASON` could not be written yet
    /// (the disk was full): the reason is kept here and written again every round.
    unwritten_reasons: Vec<(PathBuf, String)>,
    /// Orders failing for a reason of their own, output or probe (mirrored in
    /// `state/output-errors.json`).
    failing: BTreeMap<OrderId, OrderFailure>,
    /// `failing` changed since it was last written.
    failing_dirty: bool,
    /// What processing remembers of each order's output (one map, not one per fact: at 100,000
    /// orders each map holds its own copy of every id).
    known: Mutex<HashMap<OrderId, KnownOutput>>,
    /// What output waits for while a transient fault lasts ("waiting for disk space: ...").
    waiting: Option<String>,
    /// Snapshots were kept for a retry in the last round.
    held: bool,
    /// How long the loop waits before retrying them.
    retry_delay: Duration,
    /// Most bytes of ping files read in one round ([`MAX_PING_BYTES_PER_ROUND`]; tests set
    /// less).
    ping_bytes_per_round: u64,
    /// Where this node's own measured results are counted into RTT histograms (the API's
    /// `/metrics`), when something reads them.
    rtt: Option<Arc<super::latency::RttHistograms>>,
    /// Snapshot name → errno its load fails with (tests: faults no filesystem gives on demand).
    #[cfg(test)]
    failing_loads: Mutex<HashMap<String, i32>>,
}

/// One snapshot read in this round.
struct Loaded {
    name: SnapshotName,
    results: Vec<OrderResult>,
    /// HAProxy aggregates (and their self-metrics), one block: for the sinks only. Moved out
    /// into the sinks' batch when every sink gets the same, so use `has_metrics` to ask whether
    /// it had any.
    metrics: MetricBlock,
    /// Whether the snapshot had metrics or files for the sinks when it was read (`metrics`
    /// and `raw` may have been moved out).
    has_metrics: bool,
    /// `last_result` and sinks were done in an earlier round; only RRD updates are left.
    applied: bool,
    /// A HAProxy snapshot's files for the sinks that ship it whole (moved out into their
    /// batch like `metrics`).
    raw: Option<RawSnapshot>,
    /// Shipped from another node (it holds `SHIPPED`): who measured it. Its results carry
    /// namespaced ids (`@<node>/<id>`) and are written whatever the local order book holds.
    origin: Option<Arc<Provenance>>,
}

/// What a snapshot holds.
struct LoadedContent {
    results: Vec<OrderResult>,
    /// Its HAProxy aggregates (when a sink takes them).
    metrics: MetricBlock,
    /// Who measured it, when it was shipped from another node.
    origin: Option<Arc<Provenance>>,
    /// A HAProxy snapshot's files, when a sink ships it whole.
    raw: Option<RawSnapshot>,
}

/// Why a snapshot was not loaded.
struct LoadError {
    fault: Fault,
    reason: String,
}

/// What one order gets in a round.
#[derive(Default)]
struct OrderWork<'a> {
    /// Results to write into the RRD (sorted by time before writing).
    rrd: Vec<&'a OrderResult>,
    /// The newest measured result not applied before: the new `last_result` (if not older than
    /// it). A result whose probe failed never becomes `last_result`.
    newest: Option<&'a OrderResult>,
    /// The newest result not applied before, measured or not: whether the probe fails now.
    latest: Option<&'a OrderResult>,
    /// How many results were not applied before.
    fresh: usize,
    /// In a round without an RRD flush: the earliest new result, for which the order's RRD is
    /// created if it has none yet.
    first: Option<&'a OrderResult>,
}

/// What writing one order's output did: the staged `last_result` (with its time), and what its
/// newest result says of its probe, with that result's step (`None`: nothing new;
/// `Some((step, None))`: measured; `Some((step, Some(reason)))`: the probe could not measure it).
type OrderApplied = (Option<(i64, StagedFile)>, Option<(i64, Option<String>)>);

/// A `last_result` staged for one order, with the time it holds.
struct StagedResult {
    id: OrderId,
    time: i64,
    file: StagedFile,
}

/// What processing remembers of one order's output directory, forgotten on archive or restore.
#[derive(Clone, Copy, Debug, Default)]
struct KnownOutput {
    /// The `time` of its current `last_result` (read from the file when unknown).
    newest: Option<i64>,
    /// `output/<id>` was found (or made) a real directory chain, without a link anywhere below
    /// `output/`.
    checked: bool,
}

/// What applying a round's results did, per order.
#[derive(Default)]
struct Applied {
    staged: Vec<StagedResult>,
    written: Vec<OrderId>,
    failed: Vec<(OrderId, Fault, String)>,
    /// Orders written whose newest result says something of their probe: its step and the
    /// failure reason, or `None` for a measured result.
    probed: Vec<(OrderId, i64, Option<String>)>,
}

impl Processor {
    /// A processor on `base` reading snapshots on `workers` threads (0 = one per CPU; results
    /// are applied on the calling thread, see [`Processor::apply`]). With `track_orders`, only
    /// orders announced by [`Lifecycle::Activate`] are written.
    pub fn new(
        base: BaseDir,
        workers: usize,
        sinks: Vec<Arc<dyn ResultSink>>,
        track_orders: bool,
        stats: Arc<ProcessStats>,
    ) -> io::Result<Processor> {
        let readers = match workers {
            0 => std::thread::available_parallelism().map_or(1, usize::from),
            n => n,
        };
        let active = track_orders.then(HashSet::new);
        let failing = match failures::read(&base) {
            Ok(file) => file
                .orders
                .into_iter()
                .filter_map(|(id, failure)| Some((OrderId::new(id).ok()?, failure)))
                .collect(),
            Err(e) => {
                warn!("cannot read the failing orders, starting without them: {e}");
                BTreeMap::new()
            }
        };
        count_failing(&stats, &failing);
        let base_for_children = base.clone();
        Ok(Processor {
            base,
            rrd: RrdWriter::new(),
            forward_only: sinks.iter().any(|sink| !sink.keeps_all_local()),
            raw_wanted: sinks.iter().any(|sink| sink.wants_snapshots(Kind::Haproxy)),
            aggregate_wanted: !sinks.iter().any(|sink| sink.wants_snapshots(Kind::Haproxy))
                || sinks
                    .iter()
                    .any(|sink| sink.takes(Kind::Haproxy) && !sink.wants_snapshots(Kind::Haproxy)),
            children: children::Children::load(&base_for_children, None),
            children_swept: None,
            sinks,
            active,
            haproxy: HaproxyOptions::default(),
            limits: ResultLimits::default(),
            oldest_waiting: None,
            readers,
            stats,
            delivered: HashMap::new(),
            unquarantined: HashMap::new(),
            unwritten_reasons: Vec::new(),
            failing,
            failing_dirty: false,
            known: Mutex::default(),
            waiting: None,
            held: false,
            retry_delay: RETRY_EVERY,
            ping_bytes_per_round: MAX_PING_BYTES_PER_ROUND,
            rtt: None,
            #[cfg(test)]
            failing_loads: Mutex::default(),
        })
    }

    /// Counts each new result of this node's own orders into `histograms` (once per result:
    /// not again when a snapshot found applied after a restart is finished).
    pub fn with_rtt_histograms(mut self, histograms: Arc<super::latency::RttHistograms>) -> Processor {
        self.rtt = Some(histograms);
        self
    }

    /// Marks children silent for `timeout` stale and archives their output (`None`: never).
    pub fn with_child_timeout(mut self, timeout: Option<Duration>) -> Processor {
        self.children = children::Children::load(&self.base, timeout);
        self
    }

    /// Aggregates HAProxy snapshots with `options` (validated) instead of the defaults.
    pub fn with_haproxy(mut self, options: HaproxyOptions) -> Processor {
        self.haproxy = options;
        self
    }

    /// Accepts results within `limits` instead of the defaults.
    pub fn with_limits(mut self, limits: ResultLimits) -> Processor {
        self.limits = limits;
        self
    }

    pub fn base(&self) -> &BaseDir {
        &self.base
    }

    /// Records an error of a whole round (for `spoolmon status`).
    pub fn note_error(&self, message: String) {
        self.stats.last_error.set(message);
    }

    /// When the last round kept snapshots back (a transient fault, a sink that refused), how
    /// long after it the loop retries them without waiting for new input.
    pub fn retry_due(&self) -> Option<Duration> {
        self.held.then_some(self.retry_delay)
    }

    /// Records whether this round kept snapshots back, and paces the next retry.
    fn set_held(&mut self, held: bool) {
        self.retry_delay = if held && self.held {
            (self.retry_delay * 2).min(MAX_RETRY_DELAY)
        } else {
            RETRY_EVERY
        };
        self.held = held;
    }

    /// Applies an order lifecycle change (archive or restore) in processing order.
    pub fn handle(&mut self, command: Lifecycle) {
        match command {
            Lifecycle::Activate(id) => {
                if let Err(e) = archive::restore(&self.base, &id) {
                    warn!(order = %id, "cannot restore archived output: {e}");
                }
                self.known_outputs().remove(&id);
                if let Some(active) = &mut self.active {
                    active.insert(id);
                }
            }
            Lifecycle::Deactivate { id, expired_file } => {
                if let Some(active) = &mut self.active {
                    active.remove(&id);
                }
                self.rrd.forget(&self.base.output().join(id.as_path()));
                self.known_outputs().remove(&id);
                if let Some(rtt) = &self.rtt {
                    rtt.forget(&id);
                }
                if self.failing.remove(&id).is_some() {
                    self.failing_dirty = true;
                    self.save_failing();
                }
                match archive::archive(&self.base, &id, expired_file.as_deref()) {
                    Ok(_) => info!(order = %id, expired = expired_file.is_some(), "archived"),
                    Err(e) => warn!(order = %id, "cannot archive: {e}"),
                }
            }
            Lifecycle::PurgeArchive(retention) => match archive::purge(&self.base, retention, SystemTime::now()) {
                Ok(0) => {}
                Ok(purged) => info!(purged, "purged archive entries older than archive-retention"),
                Err(e) => warn!("cannot purge archive: {e}"),
            },
        }
    }

    /// True when RRD updates are due: always for a `flush_interval` of 0, else when the oldest
    /// snapshot left in `incoming/` by an earlier round has waited that long.
    pub fn flush_due(&self, flush_interval: Duration) -> bool {
        if flush_interval.is_zero() {
            return true;
        }
        let now = crate::shared::clock::unix_now();
        self.oldest_waiting
            .is_some_and(|epoch| now - epoch >= flush_interval.as_secs() as i64)
    }

    /// Processes what is in `incoming/` now. New snapshots get their `last_result` files and
    /// sink lines; with `flush_rrd` every snapshot's RRD updates are applied too and the
    /// snapshots are removed, without it they are marked applied and wait for a flush round.
    pub fn process_pending(&mut self, flush_rrd: bool) -> io::Result<RoundReport> {
        let started = std::time::Instant::now();
        let mut report = RoundReport::default();
        let (mut loaded, listed, mut transient) = self.load_queue(flush_rrd, &mut report)?;
        if loaded.is_empty() {
            self.oldest_waiting = self.oldest_left(&listed);
            self.set_held(report.retried > 0);
            self.note_waiting(&transient);
            return Ok(report);
        }
        self.note_children(&loaded);
        let applied = self.apply(&loaded, flush_rrd);
        self.hand_to_sinks(&mut loaded);
        // RRD pages and new last_result contents reach the disk in one flush; then the
        // last_result files are switched by rename, and a second flush makes the renames durable.
        // A round without results (HAProxy snapshots only) wrote nothing under output/ and its
        // sink lines are durable in the outboxes already (each append is fdatasynced): no flush.
        if loaded.iter().any(|snapshot| !snapshot.results.is_empty()) {
            sync_filesystem(&self.base.output())?;
            self.commit_last_results(applied.staged);
            sync_filesystem(&self.base.output())?;
        }
        let held_orders: HashSet<&OrderId> = applied
            .failed
            .iter()
            .filter(|(_, fault, _)| *fault == Fault::Transient)
            .map(|(id, _, _)| id)
            .collect();
        transient.extend(
            applied
                .failed
                .iter()
                .filter(|(_, fault, _)| *fault == Fault::Transient)
                .map(|(id, _, reason)| format!("order {id}: {reason}")),
        );
        let mut marked = false;
        for snapshot in &loaded {
            let name = snapshot.name.as_str();
            if snapshot.results.iter().any(|r| held_orders.contains(&r.id)) {
                // Not the snapshot's fault, nor its orders': retried as it is, nothing counted.
                report.retried += 1;
                continue;
            }
            if !snapshot.applied && !self.fully_delivered(snapshot) {
                // A sink could not take its lines: keep it, no attempt counted.
                report.retried += 1;
                continue;
            }
            if flush_rrd || snapshot.results.is_empty() {
                match queue::remove(&self.base, name) {
                    Ok(()) => {
                        report.results += if snapshot.applied { 0 } else { snapshot.results.len() };
                        report.processed += 1;
                        self.delivered.remove(name);
                    }
                    Err(e) => {
                        warn!(snapshot = name, "cannot remove processed snapshot: {e}");
                        self.stats
                            .last_error
                            .set(format!("cannot remove processed snapshot {name}: {e}"));
                        report.retried += 1;
                    }
                }
            } else {
                match queue::mark_applied(&self.base, name) {
                    Ok(()) => {
                        report.results += snapshot.results.len();
                        report.marked += 1;
                        marked = true;
                        self.delivered.remove(name);
                    }
                    Err(e) => {
                        if fault::of_io(&e) == Fault::Transient {
                            transient.push(format!("cannot mark snapshot {name} applied: {e}"));
                        } else {
                            warn!(snapshot = name, "cannot mark snapshot applied: {e}");
                        }
                        report.retried += 1;
                    }
                }
            }
        }
        if marked {
            sync_filesystem(&self.base.incoming())?;
        }
        self.record_failures(&applied.written, &applied.failed, &applied.probed);
        // A round that took every snapshot and order without a fault: processing works again.
        if report.quarantined == 0 && report.retried == 0 && applied.failed.is_empty() && transient.is_empty() {
            self.stats.last_error.succeeded();
        }
        self.note_waiting(&transient);
        self.set_held(report.retried > 0);
        self.oldest_waiting = self.oldest_left(&listed);
        self.count_round(&report, started);
        debug!(?report, "processing round done");
        Ok(report)
    }

    /// Reads the snapshots to process this round (quarantining bad ones, retrying failed
    /// quarantines): new snapshots, and with `flush_rrd` also those marked applied in earlier
    /// rounds. Also returns every snapshot name listed, oldest first, and the transient faults
    /// that kept snapshots from being read.
    fn load_queue(
        &mut self,
        flush_rrd: bool,
        report: &mut RoundReport,
    ) -> io::Result<(Vec<Loaded>, Vec<SnapshotName>, Vec<String>)> {
        let mut candidates = Vec::new();
        let mut listed = Vec::new();
        let mut present = HashSet::new();
        let mut haproxy_snapshots = 0;
        let mut ping_bytes = 0;
        let mut full = false;
        self.write_pending_reasons();
        let incoming = self.base.dir("incoming")?;
        for entry in queue::list(&self.base)? {
            match entry {
                QueueEntry::Invalid(raw) => {
                    present.insert(raw.to_string_lossy().into_owned());
                    let reason = "the name is not a snapshot time (<unix-epoch>[-<source>-<seq>], UTF-8, at most 200 bytes) or not a directory";
                    report.quarantined += usize::from(self.quarantine(&raw, reason));
                }
                QueueEntry::Snapshot(name) => {
                    present.insert(name.as_str().to_owned());
                    listed.push(name.clone());
                    if let Some(reason) = self.unquarantined.get(name.as_str()).cloned() {
                        report.quarantined += usize::from(self.quarantine(name.as_str(), &reason));
                        continue;
                    }
                    let applied = queue::is_applied(&self.base, name.as_str());
                    if applied && !flush_rrd {
                        continue;
                    }
                    // Once a bound is reached every later snapshot waits, so what a round takes is
                    // always older than what it leaves. Snapshots waiting for the RRD flush do
                    // not count against the byte bound: a flush takes the whole journal, so each
                    // order gets all its waiting steps in one librrd call.
                    full = full
                        || candidates.len() >= MAX_SNAPSHOTS_PER_ROUND
                        || haproxy_snapshots >= MAX_HAPROXY_PER_ROUND
                        || ping_bytes >= self.ping_bytes_per_round;
                    if full {
                        report.deferred = true;
                        continue;
                    }
                    // Through descriptors: a planted link is not followed (load refuses it).
                    let ping_file = incoming
                        .open_dir(name.as_str())
                        .and_then(|snapshot| snapshot.stat(PING_FILE));
                    match ping_file {
                        Ok(stat) => {
                            let size = u64::try_from(stat.st_size).unwrap_or(0);
                            report.ping_bytes += size;
                            ping_bytes += if applied { 0 } else { size };
                        }
                        Err(_) => haproxy_snapshots += 1,
                    }
                    candidates.push((name, applied));
                }
            }
        }
        // What was kept for snapshots that are gone (removed by hand, quarantined) is dropped.
        self.delivered.retain(|name, _| present.contains(name));
        self.unquarantined.retain(|name, _| present.contains(name));
        let now = crate::shared::clock::unix_now();
        let bounds = PingBounds {
            now,
            max_age: self.limits.max_age.as_secs(),
            max_future: self.limits.max_future.as_secs(),
            max_results: self.limits.max_results,
        };
        // Reading and aggregating is the expensive part for HAProxy snapshots: spread over plain
        // threads (polars keeps each query on its calling thread).
        let threads = self.readers.max(1);
        let per_thread = candidates.len().div_ceil(threads).max(1);
        let this: &Processor = self;
        let (incoming, bounds) = (&incoming, &bounds);
        let load_chunk = |chunk: &[(SnapshotName, bool)]| {
            chunk
                .iter()
                .map(|(name, _)| this.load(incoming, name, bounds))
                .collect::<Vec<_>>()
        };
        let outcomes: Vec<_> = if candidates.len() <= per_thread {
            load_chunk(&candidates)
        } else {
            std::thread::scope(|scope| {
                let workers: Vec<_> = candidates
                    .chunks(per_thread)
                    .map(|chunk| scope.spawn(move || load_chunk(chunk)))
                    .collect();
                workers
                    .into_iter()
                    .flat_map(|worker| worker.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic)))
                    .collect()
            })
        };
        let outcomes = candidates
            .into_iter()
            .zip(outcomes)
            .map(|((name, applied), outcome)| (name, applied, outcome));
        let mut loaded = Vec::new();
        let mut transient = Vec::new();
        for (name, applied, outcome) in outcomes {
            match outcome {
                // An older snapshot waits for a transient fault: the newer ones wait with it, so
                // each order's results still reach its RRD in time order (the RRD would refuse
                // the older times after the newer ones). Nothing is counted against them.
                Ok(_) if !transient.is_empty() => {
                    debug!(snapshot = %name, "kept for the next round behind an older snapshot that could not be read");
                    report.retried += 1;
                }
                Ok(content) => loaded.push(Loaded {
                    name,
                    results: content.results,
                    has_metrics: !content.metrics.is_empty() || content.raw.is_some(),
                    metrics: content.metrics,
                    applied,
                    origin: content.origin,
                    raw: content.raw,
                }),
                Err(LoadError {
                    fault: Fault::Transient,
                    reason,
                }) => {
                    transient.push(format!("cannot read snapshot {name}: {reason}"));
                    report.retried += 1;
                }
                // Gone since it was listed (removed by hand): nothing to quarantine.
                Err(_) if incoming.kind(name.as_str()).is_ok_and(|kind| kind.is_none()) => {}
                Err(LoadError { reason, .. }) => {
                    report.quarantined += usize::from(self.quarantine(name.as_str(), &reason));
                }
            }
        }
        Ok((loaded, listed, transient))
    }

    /// Epoch of the oldest of `listed` still in `incoming/` after the round (newer arrivals are
    /// seen by the next round).
    fn oldest_left(&self, listed: &[SnapshotName]) -> Option<i64> {
        let incoming = self.base.dir("incoming").ok()?;
        listed
            .iter()
            .find(|name| incoming.kind(name.as_str()).is_ok_and(|kind| kind.is_some()))
            .map(|name| name.epoch)
    }

    fn count_round(&self, report: &RoundReport, started: std::time::Instant) {
        self.stats.rounds.fetch_add(1, Ordering::Relaxed);
        self.stats
            .snapshots_processed
            .fetch_add(report.processed as u64, Ordering::Relaxed);
        self.stats
            .processing_micros
            .fetch_add(started.elapsed().as_micros() as u64, Ordering::Relaxed);
    }

    /// Reads a snapshot: a ping snapshot's results (every one within `bounds`), or a HAProxy
    /// snapshot's aggregates, and whether it was shipped from another node (then its results'
    /// ids are namespaced by the origin node, `@<node>/<id>`). Only a transient I/O error is
    /// not the snapshot's fault.
    fn load(&self, incoming: &Dir, name: &SnapshotName, bounds: &PingBounds) -> Result<LoadedContent, LoadError> {
        let bad = |reason: String| LoadError {
            fault: Fault::Permanent,
            reason,
        };
        let io_error = |e: io::Error| LoadError {
            fault: fault::of_io(&e),
            reason: e.to_string(),
        };
        #[cfg(test)]
        if let Some(&code) = self.failing_loads.lock().unwrap().get(name.as_str()) {
            return Err(io_error(io::Error::from_raw_os_error(code)));
        }
        let snapshot = incoming.open_dir(name.as_str()).map_err(io_error)?;
        let origin = match snapshot.kind(ship::SHIPPED_FILE).map_err(io_error)? {
            None => None,
            Some(_) => {
                let bytes = snapshot
                    .read_limited(ship::SHIPPED_FILE, ship::MAX_MARKER)
                    .map_err(io_error)?;
                let header = ship::decode_marker(&bytes).map_err(|e| bad(format!("{}: {e}", ship::SHIPPED_FILE)))?;
                Some(header)
            }
        };
        let provenance = origin.as_ref().map(|origin| {
            Arc::new(Provenance {
                node: origin.origin_node.clone(),
                chain: origin.chain.clone(),
            })
        });
        let has_ping_file = snapshot.kind(PING_FILE).map_err(io_error)?.is_some();
        if has_ping_file {
            return read_ping(&snapshot, bounds)
                .map(|(_, mut results)| {
                    if let Some(provenance) = &provenance {
                        for result in &mut results {
                            result.id = ship::node_order_id(&provenance.node, &result.id);
                            result.origin = Some(provenance.clone());
                        }
                    }
                    LoadedContent {
                        results,
                        metrics: MetricBlock::default(),
                        origin: provenance,
                        raw: None,
                    }
                })
                .map_err(|e| match &e {
                    PingSnapshotError::Io(io) => LoadError {
                        fault: fault::of_io(io),
                        reason: e.to_string(),
                    },
                    _ => bad(e.to_string()),
                });
        }
        // The HAProxy reader takes a path: the held descriptor's own (`/proc/self/fd/N`), so a
        // snapshot swapped for a symlink after it was opened is never followed.
        // Its listing and reads are I/O like any other: only content errors are the snapshot's.
        let dir = snapshot.fd_path();
        let haproxy_error = |e: HaproxySnapshotError| match e {
            HaproxySnapshotError::NoProcesses => bad(format!(
                "unknown snapshot kind: neither {PING_FILE} nor HAProxy <socket>_info/<socket>_stat files"
            )),
            e => LoadError {
                fault: e.fault(),
                reason: e.to_string(),
            },
        };
        let started = std::time::Instant::now();
        let files = haproxy::read_snapshot(&dir).map_err(haproxy_error)?;
        if files.is_empty() {
            return Err(haproxy_error(HaproxySnapshotError::NoProcesses));
        }
        // A sink that ships it whole gets its files; the aggregates are made only for the
        // sinks that take them (a load balancer that only forwards aggregates nothing).
        let raw = self.raw_wanted.then(|| RawSnapshot {
            name: name.clone(),
            files: files
                .iter()
                .flat_map(|f| {
                    [
                        (format!("{}{}", f.socket, haproxy::INFO_SUFFIX), f.info.clone()),
                        (format!("{}{}", f.socket, haproxy::STAT_SUFFIX), f.stat.clone()),
                    ]
                })
                .collect(),
            origin: provenance.clone(),
        });
        let metrics = if self.aggregate_wanted {
            haproxy::aggregate_processes(files, name.epoch, &self.haproxy, started)
                .map_err(haproxy_error)?
                .metrics
                .with_origin(provenance.clone())
        } else {
            MetricBlock::default()
        };
        Ok(LoadedContent {
            results: Vec::new(),
            metrics,
            origin: provenance,
            raw,
        })
    }

    /// Switches the staged `last_result` files into place (one exchange each, on this thread:
    /// see [`Processor::apply`] on why not in parallel) and remembers the time each now holds.
    fn commit_last_results(&self, staged: Vec<StagedResult>) {
        let committed: Vec<(OrderId, i64)> = staged
            .into_iter()
            .filter_map(|staged| {
                let target = staged.file.target().to_owned();
                match staged.file.commit() {
                    Ok(()) => Some((staged.id, staged.time)),
                    Err(e) => {
                        warn!(file = %target.display(), "cannot replace last_result: {e}");
                        None
                    }
                }
            })
            .collect();
        let mut known = self.known_outputs();
        for (id, time) in committed {
            known.entry(id).or_default().newest = Some(time);
        }
    }

    /// Applies every active order's results: with `flush_rrd` the RRD updates of every loaded
    /// snapshot, and `last_result` staged from the newest new result (unless the file holds a
    /// newer one). Returns the staged files, the orders written and the orders that failed.
    fn apply(&self, loaded: &[Loaded], flush_rrd: bool) -> Applied {
        let mut by_order: HashMap<&OrderId, OrderWork> = HashMap::new();
        let mut dropped = 0u64;
        let mut measured: Vec<&OrderResult> = Vec::new();
        for snapshot in loaded {
            for result in &snapshot.results {
                if snapshot.origin.is_none() && !self.is_active(&result.id) {
                    dropped += u64::from(!snapshot.applied);
                    continue;
                }
                if self.rtt.is_some() && snapshot.origin.is_none() && !snapshot.applied {
                    measured.push(result);
                }
                if !self.keeps_local(result) {
                    continue;
                }
                let work = by_order.entry(&result.id).or_default();
                if flush_rrd && result.template == RrdTemplate::Smokeping {
                    work.rrd.push(result);
                }
                if !snapshot.applied {
                    work.fresh += 1;
                    if !flush_rrd && work.first.is_none_or(|f| f.time > result.time) {
                        work.first = Some(result);
                    }
                    if result.failure.is_none() && work.newest.is_none_or(|n| n.time <= result.time) {
                        work.newest = Some(result);
                    }
                    if work.latest.is_none_or(|n| n.time <= result.time) {
                        work.latest = Some(result);
                    }
                }
            }
        }
        self.stats.results_dropped.fetch_add(dropped, Ordering::Relaxed);
        if let Some(rtt) = &self.rtt {
            rtt.observe(measured);
        }
        let groups: Vec<(&OrderId, OrderWork)> = by_order.into_iter().collect();
        type Outcome = (OrderId, Result<OrderApplied, (Fault, String)>);
        let apply = |(id, mut work): (&OrderId, OrderWork)| {
            work.rrd.sort_by_key(|r: &&OrderResult| r.time);
            (id.clone(), self.apply_order(id, &work))
        };
        // On this thread, not in parallel: an order's work is small-file writes (its
        // `last_result` under the spare name, librrd's few pages of a flush), and such writes
        // from two threads at once contend in ext4's journal: 10,000 orders cost 50 µs of CPU
        // per result on two threads against 42 on one (BENCHMARKS.md, issue 12, 2026-12-08).
        let outcomes: Vec<Outcome> = groups.into_iter().map(apply).collect();
        let mut applied = Applied::default();
        for (id, outcome) in outcomes {
            match outcome {
                Ok((staged, probed)) => {
                    if let Some((time, file)) = staged {
                        applied.staged.push(StagedResult {
                            id: id.clone(),
                            time,
                            file,
                        });
                    }
                    if let Some((time, failure)) = probed {
                        applied.probed.push((id.clone(), time, failure));
                    }
                    applied.written.push(id);
                }
                Err((fault, reason)) => applied.failed.push((id, fault, reason)),
            }
        }
        self.stats
            .order_errors
            .fetch_add(applied.failed.len() as u64, Ordering::Relaxed);
        applied
    }

    fn is_active(&self, id: &OrderId) -> bool {
        self.active.as_ref().is_none_or(|active| active.contains(id))
    }

    /// Notes the children whose snapshots this round applies; a stale one's output comes back
    /// from `archive/` before its results are written.
    fn note_children(&mut self, loaded: &[Loaded]) {
        let now = crate::shared::clock::unix_secs(SystemTime::now());
        for provenance in loaded.iter().filter_map(|s| s.origin.as_ref()) {
            if self
                .children
                .heard(&provenance.node, &provenance.origin().to_string(), now)
            {
                let id =
                    OrderId::new(format!("{}{}", ship::NODE_PREFIX, provenance.node)).expect("a node's name is an id");
                match archive::restore(&self.base, &id) {
                    Ok(outcome) => {
                        info!(child = %provenance.node, ?outcome, "a stale child is back: its output restored")
                    }
                    Err(e) => {
                        warn!(child = %provenance.node, "a stale child is back but its output cannot be restored: {e}")
                    }
                }
            }
        }
        self.children.save(&self.base);
    }

    /// Marks the children silent for `receive: {child-timeout}` stale and archives their
    /// output (`output/@<node>/` → `archive/@<node>/`); at most every few seconds.
    pub fn sweep_children(&mut self) {
        if self.children_swept.is_some_and(|at| at.elapsed() < CHILD_SWEEP_EVERY) {
            return;
        }
        self.children_swept = Some(std::time::Instant::now());
        let now = crate::shared::clock::unix_secs(SystemTime::now());
        for node in self.children.sweep(now) {
            let id = OrderId::new(format!("{}{}", ship::NODE_PREFIX, node)).expect("a node's name is an id");
            match archive::archive(&self.base, &id, None) {
                Ok(_) => {
                    let prefix = format!("{id}/");
                    self.known_outputs()
                        .retain(|known, _| !known.as_str().starts_with(&prefix));
                    warn!(child = %node, "child silent for longer than receive.child-timeout: marked stale, its output archived");
                }
                Err(e) => {
                    warn!(child = %node, "cannot archive a stale child's output, trying again later: {e}");
                    self.children.not_stale(&node);
                }
            }
        }
        self.children.save(&self.base);
    }

    /// The children this node receives from, as recorded.
    pub fn children(&self) -> &children::ChildrenFile {
        self.children.file()
    }

    /// Whether the sinks get `result`: an active order's, or one received from another node
    /// (the local order book knows nothing of those).
    fn for_sinks(&self, result: &OrderResult) -> bool {
        result.origin.is_some() || self.is_active(&result.id)
    }

    /// Whether this node writes its own output of `result` (RRD, `last_result`): unless a sink
    /// that takes it keeps nothing locally (`keep-local: false`).
    fn keeps_local(&self, result: &OrderResult) -> bool {
        !self.forward_only || self.sinks.iter().all(|sink| sink.keeps_local(result))
    }

    /// Writes one order's output: its RRD updates (ascending time), then stages `last_result`
    /// unless the current one is newer, and says what the newest result tells of the probe (a
    /// failure older than the current `last_result` tells nothing). The error says whose fault
    /// it is.
    fn apply_order(&self, id: &OrderId, work: &OrderWork) -> Result<OrderApplied, (Fault, String)> {
        let dir = self.base.output().join(id.as_path());
        if !self.known_outputs().get(id).is_some_and(|known| known.checked) {
            // librrd takes paths: make sure none of the order's directories is a symlink out.
            self.base
                .dir("output")
                .and_then(|output| output.create_dir_all(id.as_str()))
                .map_err(|e| (fault::of_io(&e), e.to_string()))?;
            self.known_outputs().entry(id.clone()).or_default().checked = true;
        }
        if !work.rrd.is_empty() {
            self.rrd
                .apply(&dir, &work.rrd)
                .map_err(|e| (e.fault(), e.to_string()))?;
            self.stats.rrd_updates.fetch_add(1, Ordering::Relaxed);
        } else if let Some(first) = work.first {
            // Best effort: the flush creates the file anyway and handles what fails here.
            if let Err(e) = self.rrd.create_if_missing(&dir, first) {
                debug!(order = %id, "RRD not created before the flush: {e}");
            }
        }
        let staged = match work.newest {
            Some(newest) if self.is_newest(id, &dir, newest.time) => {
                let file = last_result::stage(&dir, newest).map_err(|e| {
                    (
                        fault::of_io(&e),
                        format!("cannot write {}: {e}", dir.join(last_result::FILE_NAME).display()),
                    )
                })?;
                Some((newest.time, file))
            }
            Some(older) => {
                debug!(order = %id, time = older.time, "older than the current last_result: RRD only");
                None
            }
            None => None,
        };
        let probed = work.latest.and_then(|latest| match &latest.failure {
            None => Some((latest.time, None)),
            Some(reason) if self.is_newest(id, &dir, latest.time) => Some((latest.time, Some(reason.clone()))),
            Some(_) => None,
        });
        self.stats
            .results_applied
            .fetch_add(work.fresh as u64, Ordering::Relaxed);
        Ok((staged, probed))
    }

    /// True unless the order's `last_result` holds a time after `time` (read from the file
    /// the first time, then remembered).
    fn is_newest(&self, id: &OrderId, dir: &Path, time: i64) -> bool {
        let known = self.known_outputs().get(id).and_then(|known| known.newest);
        let current = known.or_else(|| {
            let found = current_last_result_time(dir)?;
            self.known_outputs().entry(id.clone()).or_default().newest = Some(found);
            Some(found)
        });
        current.is_none_or(|current| time >= current)
    }

    fn known_outputs(&self) -> std::sync::MutexGuard<'_, HashMap<OrderId, KnownOutput>> {
        // Plain values: consistent even if a holder panicked.
        self.known.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Gives each sink the lines of the snapshots it has not taken yet (active results and
    /// metrics of snapshots not applied before), and remembers who took what.
    fn hand_to_sinks(&mut self, loaded: &mut [Loaded]) {
        if self.sinks.is_empty() {
            return;
        }
        let has_lines: Vec<bool> = loaded
            .iter()
            .map(|s| {
                !s.applied && (!s.metrics.is_empty() || s.raw.is_some() || s.results.iter().any(|r| self.for_sinks(r)))
            })
            .collect();
        // Which snapshots each sink still needs; sinks that need the same get the same batch.
        let mut groups: Vec<(Vec<usize>, Vec<usize>)> = Vec::new();
        for (sink_index, sink) in self.sinks.iter().enumerate() {
            let need: Vec<usize> = (0..loaded.len())
                .filter(|&i| has_lines[i])
                .filter(|&i| {
                    self.delivered
                        .get(loaded[i].name.as_str())
                        .is_none_or(|took| !took.contains(sink.name()))
                })
                .collect();
            if need.is_empty() {
                continue;
            }
            match groups.iter_mut().find(|(n, _)| *n == need) {
                Some((_, sinks)) => sinks.push(sink_index),
                None => groups.push((need, vec![sink_index])),
            }
        }
        let only_group = groups.len() == 1;
        for (need, sink_indexes) in groups {
            let mut results: Vec<OrderResult> = need
                .iter()
                .flat_map(|&i| loaded[i].results.iter())
                .filter(|r| self.for_sinks(r))
                .cloned()
                .collect();
            results.sort_by(|a, b| a.time.cmp(&b.time).then_with(|| a.id.cmp(&b.id)));
            // Metrics are only needed here: moved, not copied, when every sink gets the same
            // (a HAProxy snapshot has ~80,000). One block per snapshot.
            let blocks: Vec<MetricBlock> = need
                .iter()
                .map(|&i| {
                    if only_group {
                        std::mem::take(&mut loaded[i].metrics)
                    } else {
                        loaded[i].metrics.clone()
                    }
                })
                .filter(|block| !block.is_empty())
                .collect();
            let snapshots: Vec<RawSnapshot> = need
                .iter()
                .filter_map(|&i| {
                    if only_group {
                        loaded[i].raw.take()
                    } else {
                        loaded[i].raw.clone()
                    }
                })
                .collect();
            for sink_index in sink_indexes {
                let sink = &self.sinks[sink_index];
                let batch = SinkBatch {
                    snapshots: &snapshots,
                    ..SinkBatch::round_blocks(&results, &blocks)
                };
                match sink.accept(batch) {
                    Ok(()) => {
                        for &i in &need {
                            self.delivered
                                .entry(loaded[i].name.as_str().to_owned())
                                .or_default()
                                .insert(sink.name().to_owned());
                        }
                    }
                    Err(e) => {
                        warn!("{e}");
                        self.stats.last_error.set(e.to_string());
                    }
                }
            }
        }
    }

    /// True when every sink took the lines of `snapshot` (or it has none for them).
    fn fully_delivered(&self, snapshot: &Loaded) -> bool {
        if self.sinks.is_empty() {
            return true;
        }
        let has_lines = snapshot.has_metrics || snapshot.results.iter().any(|r| self.for_sinks(r));
        if !has_lines {
            return true;
        }
        let took = self.delivered.get(snapshot.name.as_str());
        self.sinks
            .iter()
            .all(|sink| took.is_some_and(|took| took.contains(sink.name())))
    }

    /// Updates the failing orders from one round: written orders no longer fail for their
    /// output; the newest result of each says whether its probe fails (a failure with its reason)
    /// or measures again; orders failing to write for a reason of their own are recorded (an
    /// output failure takes the place of a probe failure). Each change is logged once (see
    /// [`StateLog`]); the file is rewritten when anything changed.
    fn record_failures(
        &mut self,
        written: &[OrderId],
        failed: &[(OrderId, Fault, String)],
        probed: &[(OrderId, i64, Option<String>)],
    ) {
        let mut log = StateLog::default();
        for id in written {
            if self.failing.get(id).is_some_and(|f| f.kind == FailureKind::Output) {
                if let Some(old) = self.failing.remove(id) {
                    info!(order = %id, failing_since = old.since, "order output written again");
                    self.failing_dirty = true;
                }
            }
        }
        let now = crate::shared::clock::unix_now();
        // Only written orders are probed here: none of them has an output failure left.
        for (id, time, failure) in probed {
            let time = *time;
            match (failure, self.failing.get_mut(id)) {
                // A measured result clears a probe failure of its step or an earlier one; one
                // older than the failure (a snapshot kept back, then retried) does not.
                (None, Some(current)) if current.at.is_some_and(|at| time < at) => {
                    debug!(order = %id, time, "a measured result older than the probe failure: still failing");
                }
                (None, Some(_)) => {
                    if let Some(old) = self.failing.remove(id) {
                        log.left(id, &old);
                        self.failing_dirty = true;
                    }
                }
                (None, None) => {}
                // Still failing: a reason that changes (a command quoting a time or a pid on its
                // stderr) is kept up to date without being logged again or restarting `since`.
                (Some(reason), Some(current)) => {
                    if current.reason != *reason {
                        debug!(order = %id, "probe still cannot measure the order: {reason}");
                        current.reason.clone_from(reason);
                        self.failing_dirty = true;
                    }
                    if current.at.is_none_or(|at| at < time) {
                        current.at = Some(time);
                        self.failing_dirty = true;
                    }
                }
                (Some(reason), None) => {
                    let failure = OrderFailure {
                        reason: reason.clone(),
                        since: now,
                        kind: FailureKind::Probe,
                        at: Some(time),
                    };
                    log.entered(id, &failure);
                    self.failing.insert(id.clone(), failure);
                    self.failing_dirty = true;
                }
            }
        }
        log.summarize();
        for (id, _, reason) in failed.iter().filter(|(_, fault, _)| *fault == Fault::Permanent) {
            if self
                .failing
                .get(id)
                .is_some_and(|f| f.kind == FailureKind::Output && f.reason == *reason)
            {
                continue;
            }
            warn!(order = %id, "cannot write output (the order fails alone; its siblings go on): {reason}");
            self.stats
                .last_error
                .set(format!("order {id}: cannot write output: {reason}"));
            self.failing.insert(
                id.clone(),
                OrderFailure {
                    reason: reason.clone(),
                    since: now,
                    kind: FailureKind::Output,
                    at: None,
                },
            );
            self.failing_dirty = true;
        }
        self.save_failing();
    }

    /// Writes `state/output-errors.json` if the failing orders changed (kept dirty on error).
    fn save_failing(&mut self) {
        count_failing(&self.stats, &self.failing);
        if !self.failing_dirty {
            return;
        }
        let file = OutputErrors {
            version: 1,
            orders: self
                .failing
                .iter()
                .map(|(id, failure)| (id.to_string(), failure.clone()))
                .collect(),
        };
        match failures::write(&self.base, &file) {
            Ok(()) => self.failing_dirty = false,
            Err(e) => warn!("cannot write state/{}: {e}", failures::FILE_NAME),
        }
    }

    /// Logs once when output starts and stops waiting for a transient fault; notes the reason.
    fn note_waiting(&mut self, transient: &[String]) {
        match (transient.first(), &self.waiting) {
            (Some(first), was) => {
                let message = format!("{}: {first}", fault::waiting_for(first));
                if was.is_none() {
                    warn!(
                        snapshots_affected = transient.len(),
                        "output suspended, {message}; the snapshots stay in incoming/ and are retried"
                    );
                }
                self.stats.last_error.set(message.clone());
                self.stats.output_waiting.store(1, Ordering::Relaxed);
                self.waiting = Some(message);
            }
            (None, Some(was)) => {
                info!("output resumed (was {was})");
                self.stats.output_waiting.store(0, Ordering::Relaxed);
                self.waiting = None;
            }
            (None, None) => {}
        }
    }

    /// Moves a snapshot that is itself wrong to `failed/` with `reason`. When that fails (the
    /// disk is full, `failed/` is unusable), the reason is kept and the quarantine retried
    /// every round; the snapshot is not processed meanwhile. True when it was moved.
    fn quarantine(&mut self, raw: impl AsRef<std::ffi::OsStr>, reason: &str) -> bool {
        let raw = raw.as_ref();
        let shown = raw.to_string_lossy().into_owned();
        let name = shown.as_str();
        match queue::quarantine(&self.base, raw, reason) {
            Ok(path) => {
                self.quarantined(name, reason, &path);
                true
            }
            Err(queue::QuarantineError::Reason { path, source }) => {
                // Moved, so never processed again; only its REASON waits for room on the disk.
                self.quarantined(name, reason, &path);
                warn!(
                    snapshot = name,
                    "cannot write the REASON of {} yet ({source}); retrying every round",
                    path.display()
                );
                self.stats.last_error.set(format!(
                    "cannot write the REASON of {} ({reason}): {source}",
                    path.display()
                ));
                self.unwritten_reasons.push((path, reason.to_owned()));
                true
            }
            Err(e) => {
                if self.unquarantined.insert(name.to_owned(), reason.to_owned()).is_none() {
                    warn!(
                        snapshot = name,
                        "cannot quarantine snapshot ({reason}): {e}; retrying every round"
                    );
                }
                self.stats
                    .last_error
                    .set(format!("cannot quarantine snapshot {name} ({reason}): {e}"));
                false
            }
        }
    }

    fn quarantined(&mut self, name: &str, reason: &str, path: &Path) {
        self.stats.snapshots_failed.fetch_add(1, Ordering::Relaxed);
        self.stats
            .last_error
            .set(format!("snapshot {name} quarantined: {reason}"));
        warn!(snapshot = name, moved_to = %path.display(), "snapshot quarantined: {reason}");
        if self.unquarantined.remove(name).is_some() {
            info!(snapshot = name, "quarantine done after an earlier failure");
        }
        self.delivered.remove(name);
    }

    /// Writes the reasons that could not be written when their snapshots were quarantined.
    fn write_pending_reasons(&mut self) {
        let base = &self.base;
        self.unwritten_reasons
            .retain(|(path, reason)| match queue::write_reason(base, path, reason) {
                Ok(()) => {
                    info!(entry = %path.display(), "REASON written after an earlier failure");
                    false
                }
                Err(_) => true,
            });
    }
}

/// Sets the failing-orders gauges: output failures and probe failures.
fn count_failing(stats: &ProcessStats, failing: &BTreeMap<OrderId, OrderFailure>) {
    let probe = failing.values().filter(|f| f.kind == FailureKind::Probe).count();
    stats
        .orders_failing
        .store((failing.len() - probe) as u64, Ordering::Relaxed);
    stats.orders_probe_failing.store(probe as u64, Ordering::Relaxed);
}

/// The log lines of one round's probe state changes: the first [`MAX_STATE_LOGS`] orders
/// entering and leaving the failing state one by one, the rest summed up (a missing fping
/// makes every ICMP order fail in the same round).
#[derive(Default)]
struct StateLog {
    entered: usize,
    left: usize,
}

impl StateLog {
    fn entered(&mut self, id: &OrderId, failure: &OrderFailure) {
        self.entered += 1;
        if self.entered <= MAX_STATE_LOGS {
            warn!(
                order = %id,
                "probe cannot measure the order: {} (failing until it measures again; its steps are unknown in the RRD, not losses)",
                failure.reason
            );
        }
    }

    fn left(&mut self, id: &OrderId, old: &OrderFailure) {
        self.left += 1;
        if self.left <= MAX_STATE_LOGS {
            info!(order = %id, failing_since = old.since, "probe measures the order again (it could not: {})", old.reason);
        }
    }

    fn summarize(&self) {
        if self.entered > MAX_STATE_LOGS {
            warn!(
                "... and {} more orders their probe cannot measure (spoolmon orders lists them)",
                self.entered - MAX_STATE_LOGS
            );
        }
        if self.left > MAX_STATE_LOGS {
            info!("... and {} more orders measured again", self.left - MAX_STATE_LOGS);
        }
    }
}

/// The `time` of `dir/last_result`, if it is a regular file that starts with a `time:` line
/// (opened without following a symlink or blocking on a FIFO).
fn current_last_result_time(dir: &Path) -> Option<i64> {
    use std::os::unix::fs::OpenOptionsExt;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(dir.join(last_result::FILE_NAME))
        .ok()?;
    if !file.metadata().ok()?.is_file() {
        return None;
    }
    let mut text = String::new();
    file.take(1024).read_to_string(&mut text).ok()?;
    let time = text.lines().next()?.strip_prefix("time: ")?;
    time.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::process::handoff::SinkError;
    use crate::spool::beneath::ImmutableDir;
    use crate::spool::snapshot::encode_ping;
    use std::collections::BTreeMap;
    use std::fs;
    use std::sync::Mutex;

    const T0: i64 = 1_700_000_000;

    /// Remembers what it accepted; fails while `failing` is set.
    #[derive(Default)]
    struct RecordingSink {
        name: &'static str,
        accepted: Mutex<Vec<(OrderId, i64)>>,
        /// Metrics accepted, in all.
        metrics: std::sync::atomic::AtomicUsize,
        failing: std::sync::atomic::AtomicBool,
        /// The origin node of each received result accepted (with its id).
        origins: Mutex<Vec<(String, String)>>,
        /// Orders under this prefix are taken without keeping them locally (`keep-local:
        /// false`).
        forward_only: Option<&'static str>,
        /// The origin node of each block of metrics accepted (`-` for a local one).
        block_origins: Mutex<Vec<String>>,
        /// Takes HAProxy snapshots whole (as a forward sink taking `haproxy`): their names.
        ships_snapshots: bool,
        snapshots: Mutex<Vec<String>>,
    }

    impl RecordingSink {
        fn named(name: &'static str) -> Arc<RecordingSink> {
            Arc::new(RecordingSink {
                name,
                ..RecordingSink::default()
            })
        }

        fn ids(&self) -> Vec<String> {
            let mut ids: Vec<String> = self
                .accepted
                .lock()
                .unwrap()
                .iter()
                .map(|(id, _)| id.to_string())
                .collect();
            ids.sort();
            ids
        }
    }

    impl ResultSink for RecordingSink {
        fn name(&self) -> &str {
            self.name
        }
        fn accept(&self, batch: SinkBatch<'_>) -> Result<(), SinkError> {
            if self.failing.load(Ordering::Relaxed) {
                return Err(SinkError {
                    sink: "recording".into(),
                    message: "outbox full".into(),
                });
            }
            let mut accepted = self.accepted.lock().unwrap();
            accepted.extend(batch.results.iter().map(|r| (r.id.clone(), r.time)));
            self.origins.lock().unwrap().extend(
                batch
                    .results
                    .iter()
                    .filter_map(|r| Some((r.id.to_string(), r.origin.as_ref()?.node.clone()))),
            );
            self.metrics.fetch_add(batch.metric_count(), Ordering::Relaxed);
            self.block_origins.lock().unwrap().extend(
                batch
                    .blocks
                    .iter()
                    .map(|b| b.origin().map_or("-".to_string(), |o| o.node.clone())),
            );
            self.snapshots.lock().unwrap().extend(batch.snapshots.iter().map(|s| {
                let node = s.origin.as_ref().map_or("-".to_string(), |o| o.node.clone());
                format!("{node} {} files", s.files.len())
            }));
            Ok(())
        }
        fn wants_snapshots(&self, kind: crate::process::handoff::Kind) -> bool {
            self.ships_snapshots && kind == crate::process::handoff::Kind::Haproxy
        }
        fn takes(&self, kind: crate::process::handoff::Kind) -> bool {
            !self.ships_snapshots || kind != crate::process::handoff::Kind::SelfMetrics
        }
        fn keeps_local(&self, result: &OrderResult) -> bool {
            self.forward_only
                .is_none_or(|prefix| !result.id.as_str().starts_with(prefix))
        }
        fn keeps_all_local(&self) -> bool {
            self.forward_only.is_none()
        }
    }

    fn result(id: &str, time: i64, rtt: f64) -> OrderResult {
        OrderResult::builder(OrderId::new(id).unwrap(), time)
            .rtts([Some(rtt)])
            .build()
    }

    fn publish(base: &BaseDir, seq: u64, results: &[OrderResult]) {
        let name = SnapshotName::new(results[0].time, "ping", seq);
        queue::publish(base, &name, &[(PING_FILE, &encode_ping("b", results))]).unwrap();
    }

    fn setup(sink: &Arc<RecordingSink>) -> (tempfile::TempDir, Processor) {
        let dir = tempfile::tempdir().unwrap();
        let base = BaseDir::new(dir.path());
        base.create_all().unwrap();
        let sinks: Vec<Arc<dyn ResultSink>> = vec![sink.clone()];
        let processor = Processor::new(base, 1, sinks, false, Arc::default())
            .unwrap()
            .with_limits(WIDE);
        (dir, processor)
    }

    /// Accepts the 2023 results of these tests (the default window is 7 days around now).
    const WIDE: ResultLimits = ResultLimits {
        max_age: Duration::from_secs(20 * 366 * 86_400),
        max_future: Duration::from_secs(300),
        max_results: 4_000,
    };

    fn rrd_last_update(path: &std::path::Path) -> String {
        let out = std::process::Command::new("rrdtool")
            .arg("lastupdate")
            .arg(path)
            .output()
            .expect("rrdtool runs");
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    #[test]
    fn without_a_flush_results_reach_last_result_and_sinks_and_rrd_updates_wait() {
        let sink = Arc::new(RecordingSink::default());
        let (_dir, mut processor) = setup(&sink);
        let base = processor.base().clone();
        for step in 0..3 {
            publish(
                &base,
                step as u64,
                &[result("a/b", T0 + step * 20, 0.001 * (step + 1) as f64)],
            );
            let report = processor.process_pending(false).unwrap();
            assert_eq!((report.marked, report.processed, report.results), (1, 0, 1));
        }
        let last = base.output().join("a/b/last_result");
        let text = fs::read_to_string(&last).unwrap();
        assert!(text.contains(&format!("time: {}", T0 + 40)), "{text}");
        // The RRD exists from the first result on, but none of the updates is in it yet.
        let rrd_last = std::process::Command::new("rrdtool")
            .arg("last")
            .arg(base.output().join("a/b/main.rrd"))
            .output()
            .expect("rrdtool runs");
        let rrd_last = String::from_utf8_lossy(&rrd_last.stdout).trim().to_string();
        assert_eq!(
            rrd_last,
            T0.to_string(),
            "created starting one step before its first update, no update yet"
        );
        assert_eq!(fs::read_dir(base.incoming()).unwrap().count(), 3);
        assert_eq!(queue::depth(&base).unwrap(), 0, "applied snapshots count in queue-size");
        assert!(
            processor.flush_due(Duration::from_secs(60)),
            "snapshots from 2023 are due"
        );
        assert!(!processor.flush_due(Duration::from_secs(i64::MAX as u64 / 2)));

        let report = processor.process_pending(true).unwrap();
        assert_eq!((report.processed, report.results), (3, 0));
        assert_eq!(fs::read_dir(base.incoming()).unwrap().count(), 0);
        let rrd = rrd_last_update(&base.output().join("a/b/main.rrd"));
        assert!(rrd.contains(&format!("{}: 0 0.003 0.003", T0 + 60)), "{rrd}");
        // Every result reached the sink exactly once, and last_result was not rewritten from
        // the replayed journal.
        let times: Vec<i64> = sink.accepted.lock().unwrap().iter().map(|(_, t)| *t).collect();
        assert_eq!(times, vec![T0, T0 + 20, T0 + 40]);
        assert!(fs::read_to_string(&last)
            .unwrap()
            .contains(&format!("time: {}", T0 + 40)));
        assert!(!processor.flush_due(Duration::from_secs(60)), "nothing left to flush");
    }

    #[test]
    fn a_round_reads_a_bounded_number_of_ping_bytes_and_leaves_the_rest_for_the_next_round() {
        let sink = Arc::new(RecordingSink::default());
        let (_dir, processor) = setup(&sink);
        let base = processor.base().clone();
        for seq in 0..5 {
            let results: Vec<OrderResult> = (0..3)
                .map(|i| result(&format!("o{i}"), T0 + seq as i64 * 20, 0.001))
                .collect();
            publish(&base, seq, &results);
        }
        let one = fs::metadata(
            base.incoming()
                .join(SnapshotName::new(T0, "ping", 0).as_str())
                .join(PING_FILE),
        )
        .unwrap()
        .len();
        // Room for two snapshots: the round that reaches the bound takes the snapshot that
        // crossed it, so the bound is just under two.
        let mut processor = Processor {
            ping_bytes_per_round: 2 * one - 1,
            ..processor
        };
        let rounds: Vec<(usize, bool)> = (0..3)
            .map(|_| {
                let report = processor.process_pending(false).unwrap();
                (report.marked, report.deferred)
            })
            .collect();
        assert_eq!(rounds, [(2, true), (2, true), (1, false)]);
        assert_eq!(
            sink.accepted.lock().unwrap().len(),
            15,
            "every result once, in three rounds"
        );
        // The flush takes the whole journal at once (one librrd call per order), and new
        // snapshots after it up to the bound.
        for seq in 5..8 {
            let results: Vec<OrderResult> = (0..3)
                .map(|i| result(&format!("o{i}"), T0 + seq as i64 * 20, 0.001))
                .collect();
            publish(&base, seq, &results);
        }
        let flushed: Vec<(usize, bool)> = (0..2)
            .map(|_| {
                let report = processor.process_pending(true).unwrap();
                (report.processed, report.deferred)
            })
            .collect();
        assert_eq!(flushed, [(5 + 2, true), (1, false)]);
        let rrd = rrd_last_update(&base.output().join("o1/main.rrd"));
        // An RRD row is stamped at the end of its step: the last result (T0 + 140) is the row at
        // T0 + 160.
        assert!(rrd.contains(&format!("{}: 0 0.001 0.001", T0 + 8 * 20)), "{rrd}");
        assert_eq!(fs::read_dir(base.incoming()).unwrap().count(), 0);
        assert_eq!(
            sink.accepted.lock().unwrap().len(),
            24,
            "the flush sends the journal nothing again"
        );
    }

    #[test]
    fn a_flush_round_applies_new_and_journaled_snapshots_in_time_order() {
        let sink = Arc::new(RecordingSink::default());
        let (_dir, mut processor) = setup(&sink);
        let base = processor.base().clone();
        publish(&base, 1, &[result("o", T0, 0.001)]);
        processor.process_pending(false).unwrap();
        publish(&base, 2, &[result("o", T0 + 20, 0.002)]);
        let report = processor.process_pending(true).unwrap();
        assert_eq!((report.processed, report.results), (2, 1));
        let rrd = rrd_last_update(&base.output().join("o/main.rrd"));
        assert!(rrd.contains(&format!("{}: 0 0.002 0.002", T0 + 40)), "{rrd}");
        assert_eq!(sink.accepted.lock().unwrap().len(), 2);
    }

    #[test]
    fn after_a_restart_snapshots_left_waiting_for_the_flush_are_flushed_without_new_input() {
        let sink = Arc::new(RecordingSink::default());
        let (_dir, mut first) = setup(&sink);
        let base = first.base().clone();
        publish(&base, 1, &[result("o", T0, 0.001)]);
        assert_eq!(first.process_pending(false).unwrap().marked, 1);
        drop(first);
        let mut restarted = Processor::new(base.clone(), 1, Vec::new(), false, Arc::default())
            .unwrap()
            .with_limits(WIDE);
        assert!(
            !restarted.flush_due(Duration::from_secs(60)),
            "nothing known before a round"
        );
        assert_eq!(restarted.process_pending(false).unwrap(), RoundReport::default());
        assert!(
            restarted.flush_due(Duration::from_secs(60)),
            "the waiting snapshot is due"
        );
        assert_eq!(restarted.process_pending(true).unwrap().processed, 1);
    }

    #[test]
    fn a_failing_sink_keeps_snapshots_without_quarantining_them() {
        let sink = Arc::new(RecordingSink::default());
        let (_dir, mut processor) = setup(&sink);
        let base = processor.base().clone();
        sink.failing.store(true, Ordering::Relaxed);
        publish(&base, 1, &[result("o", T0, 0.001)]);
        for _ in 0..10 {
            let report = processor.process_pending(true).unwrap();
            assert_eq!((report.retried, report.processed, report.quarantined), (1, 0, 0));
        }
        assert_eq!(queue::depth(&base).unwrap(), 1);
        assert_eq!(fs::read_dir(base.failed()).unwrap().count(), 0);
        sink.failing.store(false, Ordering::Relaxed);
        assert_eq!(processor.process_pending(true).unwrap().processed, 1);
        assert_eq!(sink.accepted.lock().unwrap().len(), 1);
    }

    #[test]
    fn a_haproxy_snapshot_a_sink_refused_stays_in_incoming_until_it_takes_it() {
        // One sink: the metrics are moved into its batch, not copied; whether the snapshot had
        // lines must still be known when the sink refused them.
        let sink = RecordingSink::named("rec");
        let (_dir, mut processor, _stats) = setup_sinks(std::slice::from_ref(&sink));
        let base = processor.base().clone();
        publish_haproxy(&base);
        sink.failing.store(true, Ordering::Relaxed);
        for _ in 0..3 {
            let report = processor.process_pending(true).unwrap();
            assert_eq!((report.retried, report.processed, report.quarantined), (1, 0, 0));
            assert_eq!(queue::depth(&base).unwrap(), 1, "the refused snapshot was removed");
        }
        sink.failing.store(false, Ordering::Relaxed);
        assert_eq!(processor.process_pending(true).unwrap().processed, 1);
        assert_eq!(queue::depth(&base).unwrap(), 0);
        assert!(sink.metrics.load(Ordering::Relaxed) > 0, "the sink got the metrics");
    }

    /// Publishes a HAProxy snapshot (one process's `info` and `stat`) taken at `T0`.
    fn publish_haproxy(base: &BaseDir) -> SnapshotName {
        let name = SnapshotName::parse(&T0.to_string()).unwrap();
        let files: [(&str, &[u8]); 2] = [
            ("a.sock_info", HAPROXY_INFO.as_bytes()),
            ("a.sock_stat", HAPROXY_STAT.as_bytes()),
        ];
        queue::publish(base, &name, &files).unwrap();
        name
    }

    fn setup_sinks(sinks: &[Arc<RecordingSink>]) -> (tempfile::TempDir, Processor, Arc<ProcessStats>) {
        let dir = tempfile::tempdir().unwrap();
        let base = BaseDir::new(dir.path());
        base.create_all().unwrap();
        let sinks: Vec<Arc<dyn ResultSink>> = sinks.iter().map(|s| s.clone() as Arc<dyn ResultSink>).collect();
        let stats = Arc::new(ProcessStats::default());
        let processor = Processor::new(base, 1, sinks, false, stats.clone())
            .unwrap()
            .with_limits(WIDE);
        (dir, processor, stats)
    }

    /// A ping snapshot as the receiver stores one shipped from node `node`.
    fn publish_received(base: &BaseDir, node: &str, seq: u64, results: &[OrderResult]) -> SnapshotName {
        let origin = crate::spool::identity::MachineGuid::random();
        let header = ship::ShipHeader {
            origin,
            origin_node: node.into(),
            chain: vec![origin],
            stream: uuid::Uuid::new_v4(),
            sequence: seq,
            snapshot: SnapshotName::new(results[0].time, "ping", seq),
        };
        let name = ship::received_name(&header);
        let marker = ship::encode_marker(&header);
        queue::publish(
            base,
            &name,
            &[(PING_FILE, &encode_ping("b", results)), (ship::SHIPPED_FILE, &marker)],
        )
        .unwrap();
        name
    }

    #[test]
    fn a_received_snapshot_is_written_under_its_node_whatever_the_local_book_holds() {
        let sink = RecordingSink::named("rec");
        let dir = tempfile::tempdir().unwrap();
        let base = BaseDir::new(dir.path());
        base.create_all().unwrap();
        let sinks: Vec<Arc<dyn ResultSink>> = vec![sink.clone()];
        // The book tracks orders: the local "a/b" is active, the child's "a/b" is not in it.
        let mut processor = Processor::new(base.clone(), 1, sinks, true, Arc::default())
            .unwrap()
            .with_limits(WIDE);
        processor.handle(Lifecycle::Activate(OrderId::new("a/b").unwrap()));
        publish(&base, 1, &[result("a/b", T0, 0.001)]);
        publish_received(&base, "child-1", 1, &[result("a/b", T0, 0.005), result("c", T0, 0.006)]);
        processor.process_pending(true).unwrap();
        let child = base.output().join("@child-1");
        let last = fs::read_to_string(child.join("a/b/last_result")).unwrap();
        assert!(last.contains("median: 5.000000e-03"), "{last}");
        assert!(child.join("c/last_result").exists() && child.join("a/b/main.rrd").exists());
        let local = fs::read_to_string(base.output().join("a/b/last_result")).unwrap();
        assert!(
            local.contains("median: 1.000000e-03"),
            "the local order is apart: {local}"
        );
        // (librrd's update time is the end of the step.)
        assert!(rrd_last_update(&child.join("a/b/main.rrd")).contains(&format!("{}: ", T0 + 20)));
        assert_eq!(
            queue::list(&base).unwrap(),
            vec![],
            "both snapshots processed and removed"
        );
        // The sinks get the local order and the child's, which say where they come from.
        assert_eq!(sink.ids(), ["@child-1/a/b", "@child-1/c", "a/b"]);
        let mut origins = sink.origins.lock().unwrap().clone();
        origins.sort();
        assert_eq!(
            origins,
            [
                ("@child-1/a/b".to_string(), "child-1".to_string()),
                ("@child-1/c".to_string(), "child-1".to_string())
            ]
        );
        // A repeat of the same step (a replay) does not add an RRD step twice.
        publish_received(&base, "child-1", 2, &[result("a/b", T0, 0.005)]);
        processor.process_pending(true).unwrap();
        let rrd = rrd_last_update(&child.join("a/b/main.rrd"));
        assert!(rrd.contains(&format!("{}: ", T0 + 20)), "{rrd}");
        assert_eq!(queue::list(&base).unwrap(), vec![], "the repeat is consumed, not stuck");
    }

    #[test]
    fn a_sink_that_keeps_nothing_locally_gets_its_orders_and_no_output_is_written_for_them() {
        let sink = Arc::new(RecordingSink {
            name: "up",
            forward_only: Some("@"),
            ..RecordingSink::default()
        });
        let other = RecordingSink::named("graphite");
        let dir = tempfile::tempdir().unwrap();
        let base = BaseDir::new(dir.path());
        base.create_all().unwrap();
        let sinks: Vec<Arc<dyn ResultSink>> = vec![sink.clone(), other.clone()];
        let mut processor = Processor::new(base.clone(), 1, sinks, false, Arc::default())
            .unwrap()
            .with_limits(WIDE);
        publish(&base, 1, &[result("a/b", T0, 0.001)]);
        publish_received(&base, "child-1", 1, &[result("c", T0, 0.005)]);
        processor.process_pending(true).unwrap();
        // A proxy for what it receives: the child's order is passed on, not written here.
        assert!(!base.output().join("@child-1").exists());
        assert!(base.output().join("a/b/last_result").exists() && base.output().join("a/b/main.rrd").exists());
        assert_eq!(sink.ids(), ["@child-1/c", "a/b"]);
        assert_eq!(other.ids(), ["@child-1/c", "a/b"]);
        assert_eq!(queue::list(&base).unwrap(), vec![]);
    }

    #[test]
    fn a_received_snapshot_with_a_bad_marker_is_quarantined_with_its_reason() {
        let sink = RecordingSink::named("rec");
        let (_dir, mut processor) = setup(&sink);
        let base = processor.base().clone();
        let bad = SnapshotName::new(T0, "ping", 9);
        queue::publish(
            &base,
            &bad,
            &[
                (PING_FILE, &encode_ping("b", &[result("o", T0, 0.001)])),
                (ship::SHIPPED_FILE, b"spoolmon-ship 1\ngarbage\n"),
            ],
        )
        .unwrap();
        processor.process_pending(true).unwrap();
        let failed = crate::spool::beneath::sorted_names(&base.failed());
        assert!(failed.iter().any(|n| n.starts_with(bad.as_str())), "{failed:?}");
        let reasons: String = failed
            .iter()
            .filter_map(|n| fs::read_to_string(base.failed().join(n).join(queue::REASON_FILE)).ok())
            .collect();
        assert!(reasons.contains("SHIPPED"), "{reasons}");
        assert!(!base.output().join("o").exists());
    }

    /// A HAProxy snapshot as the receiver stores one shipped from load balancer `node`.
    fn publish_received_haproxy(base: &BaseDir, node: &str) {
        let lb = crate::spool::identity::MachineGuid::random();
        let header = ship::ShipHeader {
            origin: lb,
            origin_node: node.into(),
            chain: vec![lb],
            stream: uuid::Uuid::new_v4(),
            sequence: 1,
            snapshot: SnapshotName::parse(&T0.to_string()).unwrap(),
        };
        let marker = ship::encode_marker(&header);
        let files: [(&str, &[u8]); 3] = [
            ("a.sock_info", HAPROXY_INFO.as_bytes()),
            ("a.sock_stat", HAPROXY_STAT.as_bytes()),
            (ship::SHIPPED_FILE, &marker),
        ];
        queue::publish(base, &ship::received_name(&header), &files).unwrap();
    }

    #[test]
    fn a_received_haproxy_snapshot_is_aggregated_here_under_its_load_balancer() {
        let sink = RecordingSink::named("rec");
        let (_dir, mut processor) = setup(&sink);
        let base = processor.base().clone();
        publish_received_haproxy(&base, "lb-1");
        publish_haproxy(&base);
        processor.process_pending(true).unwrap();
        assert_eq!(queue::list(&base).unwrap(), vec![], "both processed");
        let mut origins = sink.block_origins.lock().unwrap().clone();
        origins.sort();
        assert_eq!(origins, ["-", "lb-1"]);
        assert!(sink.metrics.load(Ordering::Relaxed) > 2);
    }

    #[test]
    fn a_sink_that_ships_haproxy_snapshots_gets_their_files_and_nothing_is_aggregated_for_it_alone() {
        let shipper = Arc::new(RecordingSink {
            name: "up",
            ships_snapshots: true,
            ..RecordingSink::default()
        });
        let (_dir, mut processor) = setup(&shipper);
        let base = processor.base().clone();
        publish_haproxy(&base);
        publish_received_haproxy(&base, "lb-2");
        processor.process_pending(true).unwrap();
        assert_eq!(queue::list(&base).unwrap(), vec![], "both handed on and removed");
        let mut shipped = shipper.snapshots.lock().unwrap().clone();
        shipped.sort();
        assert_eq!(shipped.len(), 2, "{shipped:?}");
        assert!(
            shipped[0].starts_with("- ") && shipped[1].starts_with("lb-2 "),
            "{shipped:?}"
        );
        assert_eq!(
            shipper.metrics.load(Ordering::Relaxed),
            0,
            "no aggregation for a sink that ships"
        );
    }

    fn failing_orders(base: &BaseDir) -> BTreeMap<String, OrderFailure> {
        failures::read(base).unwrap().orders
    }

    /// A legal order id of 4,090 bytes (every component at most 250 bytes).
    fn long_id() -> String {
        let mut id = vec!["x".repeat(250); 16].join("/");
        id.push('/');
        id.push_str(&"y".repeat(4090 - id.len()));
        assert_eq!(id.len(), 4090);
        id
    }

    #[test]
    fn an_order_whose_path_is_too_long_fails_alone_and_its_siblings_are_applied_once() {
        let sink = RecordingSink::named("rec");
        let (_dir, mut processor, stats) = setup_sinks(std::slice::from_ref(&sink));
        let base = processor.base().clone();
        let long = long_id();
        publish(
            &base,
            1,
            &[result("a", T0, 0.001), result(&long, T0, 0.001), result("b", T0, 0.002)],
        );
        let report = processor.process_pending(true).unwrap();
        assert_eq!((report.processed, report.retried, report.quarantined), (1, 0, 0));
        for _ in 0..3 {
            assert_eq!(processor.process_pending(true).unwrap(), RoundReport::default());
        }
        assert!(base.output().join("a/main.rrd").exists() && base.output().join("b/last_result").exists());
        assert_eq!(fs::read_dir(base.incoming()).unwrap().count(), 0);
        assert_eq!(fs::read_dir(base.failed()).unwrap().count(), 0, "nothing quarantined");
        assert_eq!(
            sink.ids(),
            vec!["a".to_string(), "b".to_string(), long.clone()],
            "each line once"
        );
        let failing = failing_orders(&base);
        assert_eq!(failing.len(), 1, "{failing:?}");
        assert!(
            failing[&long].reason.contains("File name too long"),
            "{:?}",
            failing[&long]
        );
        assert_eq!(stats.orders_failing.load(Ordering::Relaxed), 1);
        assert_eq!(stats.output_waiting.load(Ordering::Relaxed), 0);
    }

    fn failed_result(id: &str, time: i64, reason: &str) -> OrderResult {
        OrderResult::builder(OrderId::new(id).unwrap(), time)
            .rtts([None])
            .failure(reason)
            .build()
    }

    #[test]
    fn a_probe_failure_is_unknown_in_the_rrd_keeps_last_result_and_fails_the_order_until_it_measures() {
        let sink = RecordingSink::named("rec");
        let (_dir, mut processor, stats) = setup_sinks(std::slice::from_ref(&sink));
        let base = processor.base().clone();
        let rrd = base.output().join("o/main.rrd");
        publish(&base, 1, &[result("o", T0, 0.001), result("p", T0, 0.001)]);
        processor.process_pending(true).unwrap();
        publish(
            &base,
            2,
            &[
                failed_result("o", T0 + 20, "cannot run /nonexistent"),
                result("p", T0 + 20, 0.002),
            ],
        );
        processor.process_pending(true).unwrap();
        assert!(
            rrd_last_update(&rrd).contains(&format!("{}: U U U", T0 + 40)),
            "{}",
            rrd_last_update(&rrd)
        );
        let last = fs::read_to_string(base.output().join("o/last_result")).unwrap();
        assert!(last.starts_with(&format!("time: {T0}\n")), "kept: {last}");
        let failing = failing_orders(&base);
        assert_eq!(failing.len(), 1, "{failing:?}");
        let failure = &failing["o"];
        assert_eq!(
            (failure.kind, failure.reason.as_str()),
            (FailureKind::Probe, "cannot run /nonexistent")
        );
        let since = failure.since;
        assert_eq!(stats.orders_probe_failing.load(Ordering::Relaxed), 1);
        assert_eq!(stats.orders_failing.load(Ordering::Relaxed), 0, "no output failure");
        // The sinks were handed both results (their encoders send nothing for the failed one).
        assert_eq!(sink.ids().iter().filter(|id| *id == "o").count(), 2);
        // Still failing, with another reason: kept up to date, `since` unchanged.
        publish(
            &base,
            3,
            &[failed_result("o", T0 + 40, "cannot run /nonexistent (again)")],
        );
        processor.process_pending(true).unwrap();
        let failure = &failing_orders(&base)["o"];
        assert_eq!(
            (failure.reason.as_str(), failure.since),
            ("cannot run /nonexistent (again)", since)
        );
        // A restart keeps the state.
        drop(processor);
        let stats = Arc::new(ProcessStats::default());
        let mut processor = Processor::new(base.clone(), 1, Vec::new(), false, stats.clone())
            .unwrap()
            .with_limits(WIDE);
        assert_eq!(stats.orders_probe_failing.load(Ordering::Relaxed), 1);
        // A measured result ends it.
        publish(&base, 4, &[result("o", T0 + 60, 0.003)]);
        processor.process_pending(true).unwrap();
        assert!(failing_orders(&base).is_empty());
        assert_eq!(stats.orders_probe_failing.load(Ordering::Relaxed), 0);
        assert!(!base.state().join(failures::FILE_NAME).exists());
        let last = fs::read_to_string(base.output().join("o/last_result")).unwrap();
        assert!(last.starts_with(&format!("time: {}\n", T0 + 60)), "{last}");
        // A failed result older than the current last_result says nothing new.
        publish(&base, 5, &[failed_result("o", T0 + 40, "late and stale")]);
        processor.process_pending(true).unwrap();
        assert!(failing_orders(&base).is_empty(), "older than last_result");
    }

    #[test]
    fn a_measured_result_older_than_the_probe_failure_does_not_clear_it() {
        let (_dir, mut processor, _stats) = setup_sinks(&[]);
        let base = processor.base().clone();
        publish(&base, 1, &[result("o", T0, 0.001)]);
        processor.process_pending(true).unwrap();
        publish(&base, 3, &[failed_result("o", T0 + 40, "cannot run /nonexistent")]);
        processor.process_pending(true).unwrap();
        assert_eq!(failing_orders(&base)["o"].at, Some(T0 + 40));
        // A snapshot kept back brings a measurement of an earlier step: still failing.
        publish(&base, 2, &[result("o", T0 + 20, 0.002)]);
        processor.process_pending(true).unwrap();
        let failing = failing_orders(&base);
        assert_eq!(
            failing.get("o").map(|f| f.kind),
            Some(FailureKind::Probe),
            "{failing:?}"
        );
        // One of the failed step or later ends it.
        publish(&base, 4, &[result("o", T0 + 60, 0.003)]);
        processor.process_pending(true).unwrap();
        assert!(failing_orders(&base).is_empty());
    }

    #[test]
    fn an_output_failure_takes_the_place_of_a_probe_failure_and_gives_way_to_it_again() {
        let sink = RecordingSink::named("rec");
        let (_dir, mut processor, stats) = setup_sinks(std::slice::from_ref(&sink));
        let base = processor.base().clone();
        fs::create_dir_all(base.output().join("app")).unwrap();
        fs::write(base.output().join("app/o"), b"in the way").unwrap();
        publish(&base, 1, &[failed_result("app/o", T0, "no socket")]);
        processor.process_pending(true).unwrap();
        assert_eq!(failing_orders(&base)["app/o"].kind, FailureKind::Output);
        assert_eq!(
            (
                stats.orders_failing.load(Ordering::Relaxed),
                stats.orders_probe_failing.load(Ordering::Relaxed)
            ),
            (1, 0)
        );
        fs::remove_file(base.output().join("app/o")).unwrap();
        publish(&base, 2, &[failed_result("app/o", T0 + 20, "no socket")]);
        processor.process_pending(true).unwrap();
        let failure = &failing_orders(&base)["app/o"];
        assert_eq!(
            (failure.kind, failure.reason.as_str()),
            (FailureKind::Probe, "no socket")
        );
        assert_eq!(
            (
                stats.orders_failing.load(Ordering::Relaxed),
                stats.orders_probe_failing.load(Ordering::Relaxed)
            ),
            (0, 1)
        );
    }

    #[test]
    fn a_file_in_place_of_an_orders_directory_fails_that_order_alone_until_it_is_gone() {
        let sink = RecordingSink::named("rec");
        let (_dir, mut processor, _stats) = setup_sinks(std::slice::from_ref(&sink));
        let base = processor.base().clone();
        fs::create_dir_all(base.output().join("app")).unwrap();
        fs::write(base.output().join("app/blocked"), b"in the way").unwrap();
        publish(
            &base,
            1,
            &[result("app/blocked", T0, 0.001), result("app/fine", T0, 0.001)],
        );
        assert_eq!(processor.process_pending(true).unwrap().processed, 1);
        assert!(base.output().join("app/fine/main.rrd").exists());
        let failing = failing_orders(&base);
        assert_eq!(failing.keys().collect::<Vec<_>>(), ["app/blocked"]);
        let since = failing["app/blocked"].since;
        let written = fs::metadata(base.state().join(failures::FILE_NAME))
            .unwrap()
            .modified()
            .unwrap();
        // The same failure again: the record is not rewritten.
        publish(&base, 2, &[result("app/blocked", T0 + 20, 0.001)]);
        assert_eq!(processor.process_pending(true).unwrap().processed, 1);
        let again = fs::metadata(base.state().join(failures::FILE_NAME))
            .unwrap()
            .modified()
            .unwrap();
        assert_eq!((written, failing_orders(&base)["app/blocked"].since), (again, since));
        // Fixed: written again, and the record is gone.
        fs::remove_file(base.output().join("app/blocked")).unwrap();
        publish(&base, 3, &[result("app/blocked", T0 + 40, 0.001)]);
        assert_eq!(processor.process_pending(true).unwrap().processed, 1);
        assert!(base.output().join("app/blocked/main.rrd").exists());
        assert!(failing_orders(&base).is_empty());
        assert!(!base.state().join(failures::FILE_NAME).exists());
        assert_eq!(fs::read_dir(base.failed()).unwrap().count(), 0);
    }

    #[test]
    fn an_immutable_order_directory_fails_that_order_alone() {
        let sink = RecordingSink::named("rec");
        let (_dir, mut processor, _stats) = setup_sinks(std::slice::from_ref(&sink));
        let base = processor.base().clone();
        fs::create_dir_all(base.output().join("frozen")).unwrap();
        let frozen = ImmutableDir::new(&base.output().join("frozen"));
        publish(&base, 1, &[result("frozen", T0, 0.001), result("fine", T0, 0.001)]);
        assert_eq!(processor.process_pending(true).unwrap().processed, 1);
        drop(frozen);
        assert!(base.output().join("fine/main.rrd").exists());
        let failing = failing_orders(&base);
        assert!(failing["frozen"].reason.contains("creating RRD"), "{failing:?}");
        assert_eq!(sink.ids(), ["fine", "frozen"]);
    }

    /// A small tmpfs mounted on a directory while alive (root only; fails the test otherwise).
    struct SmallDisk(PathBuf);

    impl SmallDisk {
        fn mount(dir: &std::path::Path, size: &str) -> SmallDisk {
            let status = std::process::Command::new("mount")
                .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
                .arg(dir)
                .status();
            assert!(
                status.is_ok_and(|s| s.success()),
                "mounting a tmpfs on {} failed: run the tests as root",
                dir.display()
            );
            SmallDisk(dir.to_owned())
        }

        /// Fills the filesystem; the filler file is returned, to delete to free the space.
        fn fill(&self) -> PathBuf {
            use std::io::Write;
            let filler = self.0.join("filler");
            let mut file = fs::File::create(&filler).unwrap();
            let chunk = vec![0u8; 4096];
            while file.write_all(&chunk).is_ok() {}
            filler
        }
    }

    impl Drop for SmallDisk {
        fn drop(&mut self) {
            let _ = std::process::Command::new("umount").arg("-l").arg(&self.0).status();
        }
    }

    #[test]
    fn a_full_disk_keeps_the_snapshot_without_counting_and_applies_it_once_space_returns() {
        let sink = RecordingSink::named("rec");
        let (_dir, mut processor, stats) = setup_sinks(std::slice::from_ref(&sink));
        let base = processor.base().clone();
        let disk = SmallDisk::mount(&base.output(), "1m");
        let filler = disk.fill();
        publish(&base, 1, &[result("new", T0, 0.001), result("other", T0, 0.002)]);
        for _ in 0..8 {
            let report = processor.process_pending(true).unwrap();
            assert_eq!(
                (report.retried, report.processed, report.quarantined),
                (1, 0, 0),
                "{:?}",
                failing_orders(&base)
            );
            assert!(processor.retry_due().is_some());
        }
        assert_eq!(fs::read_dir(base.failed()).unwrap().count(), 0, "never quarantined");
        assert_eq!(queue::depth(&base).unwrap(), 1);
        assert_eq!(stats.output_waiting.load(Ordering::Relaxed), 1);
        let noted = stats.last_error.get().expect("an error is noted").message;
        assert!(noted.starts_with("waiting for disk space"), "{noted}");
        assert!(failing_orders(&base).is_empty(), "a full disk is not the order's fault");
        assert_eq!(sink.ids(), ["new", "other"], "lines handed once, not per retry");
        fs::remove_file(filler).unwrap();
        let report = processor.process_pending(true).unwrap();
        assert_eq!((report.processed, report.retried), (1, 0));
        assert!(processor.retry_due().is_none());
        assert_eq!(stats.output_waiting.load(Ordering::Relaxed), 0);
        assert_eq!(stats.last_error.get(), None, "processing works again");
        let rrd = rrd_last_update(&base.output().join("new/main.rrd"));
        assert!(rrd.contains(&format!("{}: 0 0.001 0.001", T0 + 20)), "{rrd}");
        assert_eq!(sink.ids(), ["new", "other"]);
        drop(disk);
    }

    #[test]
    fn a_quarantine_is_the_last_error_until_a_round_processes_cleanly() {
        let (_dir, mut processor, stats) = setup_sinks(&[]);
        let base = processor.base().clone();
        let name = SnapshotName::new(T0, "ping", 1);
        queue::publish(&base, &name, &[(PING_FILE, b"garbage\n")]).unwrap();
        assert_eq!(processor.process_pending(true).unwrap().quarantined, 1);
        assert!(stats
            .last_error
            .get()
            .is_some_and(|e| e.message.contains(name.as_str())));
        // A round with nothing to do has not shown that processing works.
        processor.process_pending(true).unwrap();
        assert!(stats.last_error.get().is_some());
        publish(&base, 2, &[result("o", T0 + 20, 0.001)]);
        assert_eq!(processor.process_pending(true).unwrap().processed, 1);
        assert_eq!(stats.last_error.get(), None);
    }

    #[test]
    fn a_sink_that_refused_gets_the_lines_on_the_retry_and_the_others_not_again() {
        let (up, down) = (RecordingSink::named("up"), RecordingSink::named("down"));
        let (_dir, mut processor, _stats) = setup_sinks(&[up.clone(), down.clone()]);
        let base = processor.base().clone();
        down.failing.store(true, Ordering::Relaxed);
        publish(&base, 1, &[result("o", T0, 0.001)]);
        for _ in 0..3 {
            assert_eq!(processor.process_pending(true).unwrap().retried, 1);
        }
        assert_eq!((up.ids(), down.ids()), (vec!["o".to_string()], vec![]));
        down.failing.store(false, Ordering::Relaxed);
        publish(&base, 2, &[result("p", T0 + 20, 0.001)]);
        let report = processor.process_pending(true).unwrap();
        assert_eq!((report.processed, report.retried), (2, 0));
        assert_eq!(up.ids(), ["o", "p"]);
        assert_eq!(down.ids(), ["o", "p"]);
    }

    #[test]
    fn an_older_result_after_a_newer_one_goes_to_the_rrd_but_not_to_last_result() {
        let sink = RecordingSink::named("rec");
        let (_dir, mut processor, _stats) = setup_sinks(std::slice::from_ref(&sink));
        let base = processor.base().clone();
        let last = base.output().join("o/last_result");
        // RRD updates wait for a flush: the older result still fits into the RRD (the file the
        // first round created for T0 + 40 holds nothing yet and is made again for T0 + 20).
        publish(&base, 2, &[result("o", T0 + 40, 0.003)]);
        assert_eq!(processor.process_pending(false).unwrap().marked, 1);
        publish(&base, 1, &[result("o", T0 + 20, 0.002)]);
        assert_eq!(processor.process_pending(false).unwrap().marked, 1);
        assert!(fs::read_to_string(&last)
            .unwrap()
            .contains(&format!("time: {}", T0 + 40)));
        assert_eq!(processor.process_pending(true).unwrap().processed, 2);
        let fetched = rrd_fetch(&base.output().join("o/main.rrd"), T0 + 20, T0 + 60);
        assert!(
            fetched.contains(&format!("{}: 0.0000000000e+00 2.0000000000e-03", T0 + 40)),
            "{fetched}"
        );
        assert!(
            fetched.contains(&format!("{}: 0.0000000000e+00 3.0000000000e-03", T0 + 60)),
            "{fetched}"
        );
        // A restarted processor reads the time from the file.
        let mut restarted = Processor::new(base.clone(), 1, Vec::new(), false, Arc::default())
            .unwrap()
            .with_limits(WIDE);
        publish(&base, 3, &[result("o", T0, 0.001)]);
        assert_eq!(restarted.process_pending(true).unwrap().processed, 1);
        let text = fs::read_to_string(&last).unwrap();
        assert!(text.contains(&format!("time: {}", T0 + 40)), "{text}");
        assert!(text.contains("median: 3.000000e-03"), "{text}");
        // An equal or newer time replaces it.
        publish(&base, 4, &[result("o", T0 + 60, 0.004)]);
        assert_eq!(restarted.process_pending(true).unwrap().processed, 1);
        assert!(fs::read_to_string(&last)
            .unwrap()
            .contains(&format!("time: {}", T0 + 60)));
    }

    #[test]
    fn newer_snapshots_wait_behind_an_older_one_that_hit_a_transient_fault_and_none_is_lost() {
        let sink = RecordingSink::named("rec");
        let (_dir, mut processor, _stats) = setup_sinks(std::slice::from_ref(&sink));
        let base = processor.base().clone();
        publish(&base, 1, &[result("o", T0, 0.001)]);
        publish(&base, 2, &[result("o", T0 + 20, 0.002)]);
        publish(&base, 3, &[result("o", T0 + 40, 0.003)]);
        let older = SnapshotName::new(T0, "ping", 1).to_string();
        processor.failing_loads.lock().unwrap().insert(older, libc::EIO);
        let report = processor.process_pending(true).unwrap();
        assert_eq!((report.retried, report.processed, report.quarantined), (3, 0, 0));
        assert!(
            !base.output().join("o/main.rrd").exists(),
            "nothing newer applied first"
        );
        assert!(sink.ids().is_empty());
        assert!(processor.retry_due().is_some());
        processor.failing_loads.lock().unwrap().clear();
        let report = processor.process_pending(true).unwrap();
        assert_eq!((report.processed, report.retried), (3, 0));
        let fetched = rrd_fetch(&base.output().join("o/main.rrd"), T0, T0 + 60);
        for (time, rtt) in [
            (T0 + 20, "1.0000000000e-03"),
            (T0 + 40, "2.0000000000e-03"),
            (T0 + 60, "3.0000000000e-03"),
        ] {
            assert!(
                fetched.contains(&format!("{time}: 0.0000000000e+00 {rtt}")),
                "{time}: {fetched}"
            );
        }
        assert_eq!(sink.ids(), ["o", "o", "o"]);
    }

    const HAPROXY_INFO: &str =
        "Name: HAProxy\nProcess_num: 1\nMaxconn: 100\nCurrConns: 5\nIdle_pct: 90\nUptime_sec: 10\n\n";
    const HAPROXY_STAT: &str = "# pxname,svname,scur,stot,bin,weight,act,rtime,type,status,\n\
        www.example.com,FRONTEND,3,10,100,,,,0,OPEN,\n\
        app,s1.local,1,4,40,1,1,10,2,UP,\n\
        app,BACKEND,1,4,40,1,1,10,1,UP,\n\n";

    /// Set in the child process that runs [`short_of_descriptors`] alone.
    const DESCRIPTORS_CHILD: &str = "SPOOLMON_TEST_SHORT_OF_DESCRIPTORS";

    #[test]
    fn a_good_haproxy_snapshot_read_short_of_descriptors_is_kept_not_quarantined() {
        if std::env::var_os(DESCRIPTORS_CHILD).is_some() {
            short_of_descriptors();
        } else {
            // RLIMIT_NOFILE is per process: lowered in a child running this test alone, so the
            // tests running in parallel here keep their descriptors.
            let module = module_path!().split_once("::").expect("crate::module").1;
            let test = format!("{module}::a_good_haproxy_snapshot_read_short_of_descriptors_is_kept_not_quarantined");
            let out = std::process::Command::new(std::env::current_exe().unwrap())
                .args([test.as_str(), "--exact", "--test-threads=1", "--nocapture"])
                .env(DESCRIPTORS_CHILD, "1")
                .output()
                .expect("the test binary runs");
            let text = format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            assert!(out.status.success(), "{text}");
            assert!(text.contains("1 passed"), "the child ran the test: {text}");
        }
    }

    /// With 0, 1, 2, ... descriptors left, loading a good HAProxy snapshot either works or fails
    /// with a transient fault: never one that would quarantine it.
    fn short_of_descriptors() {
        use std::os::fd::OwnedFd;
        let (_dir, processor, _stats) = setup_sinks(&[]);
        let base = processor.base().clone();
        let name = publish_haproxy(&base);
        let incoming = base.dir("incoming").unwrap();
        let bounds = PingBounds {
            now: T0,
            max_age: WIDE.max_age.as_secs(),
            max_future: WIDE.max_future.as_secs(),
            max_results: WIDE.max_results,
        };
        let good = processor.load(&incoming, &name, &bounds);
        assert!(
            good.as_ref().is_ok_and(|content| !content.metrics.is_empty()),
            "{:?}",
            good.err().map(|e| e.reason)
        );
        let mut limit = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        assert_eq!(unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) }, 0);
        limit.rlim_cur = limit.rlim_cur.min(512);
        assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) }, 0);
        let null = fs::File::open("/dev/null").unwrap();
        let mut hoard: Vec<OwnedFd> = Vec::new();
        let fill = |hoard: &mut Vec<OwnedFd>| {
            while let Ok(fd) = null.try_clone() {
                hoard.push(fd.into());
            }
        };
        let (mut worked, mut waited) = (0, 0);
        for free in 0..12 {
            fill(&mut hoard);
            hoard.truncate(hoard.len() - free);
            match processor.load(&incoming, &name, &bounds) {
                Ok(_) => worked += 1,
                Err(LoadError {
                    fault: Fault::Transient,
                    ..
                }) => waited += 1,
                Err(LoadError { reason, .. }) => {
                    hoard.clear();
                    panic!("with {free} descriptors free the snapshot would be quarantined: {reason}");
                }
            }
        }
        hoard.clear();
        assert!(worked > 0 && waited > 1, "worked {worked}, waited {waited}");
    }

    fn rrd_fetch(path: &std::path::Path, start: i64, end: i64) -> String {
        let out = std::process::Command::new("rrdtool")
            .arg("fetch")
            .arg(path)
            .args(["AVERAGE", "-r", "20", "-s", &start.to_string(), "-e", &end.to_string()])
            .output()
            .expect("rrdtool runs");
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn reason_of(base: &BaseDir, name: &str) -> String {
        fs::read_to_string(base.failed().join(name).join("REASON")).unwrap_or_else(|e| panic!("REASON of {name}: {e}"))
    }

    #[test]
    fn out_of_bounds_results_quarantine_their_snapshot_at_once_and_reach_no_sink() {
        let sink = RecordingSink::named("rec");
        let (_dir, mut processor, stats) = setup_sinks(std::slice::from_ref(&sink));
        let base = processor.base().clone();
        let mut future = result("o", 4_102_444_800, 0.001); // 2100-01-01
        future.updated = future.time + 20;
        let mut pings = result("p", T0, 0.001);
        pings.pings = 2000;
        pings.rtts = vec![Some(0.001); 2000];
        let huge = result("h", T0, 1e308);
        let negative = result("n", -100, 0.001);
        let mut step = result("s", T0, 0.001);
        step.step = 1 << 31;
        let cases: [(&OrderResult, &str); 5] = [
            (&future, "order \"o\": time 4102444800 is outside the accepted window"),
            (&pings, "order \"p\": pings 2000 is outside 1..=1000"),
            (
                &huge,
                "order \"h\": round-trip time 1e308 (ping 1) is outside 0..=180 seconds",
            ),
            (&negative, "order \"n\": time -100 is outside the accepted window"),
            (&step, "order \"s\": step 2147483648 is outside 1..=86400"),
        ];
        for (seq, (bad, _)) in cases.iter().enumerate() {
            let good = result("sibling", T0, 0.001);
            let name = SnapshotName::new(T0, "ping", seq as u64);
            queue::publish(&base, &name, &[(PING_FILE, &encode_ping("b", &[good, (*bad).clone()]))]).unwrap();
        }
        let report = processor.process_pending(true).unwrap();
        assert_eq!((report.quarantined, report.processed, report.retried), (5, 0, 0));
        for (seq, (_, expected)) in cases.iter().enumerate() {
            let reason = reason_of(&base, SnapshotName::new(T0, "ping", seq as u64).as_str());
            assert!(reason.contains("line 3: ") && reason.contains(expected), "{reason}");
        }
        assert!(sink.ids().is_empty(), "nothing of a refused snapshot reaches a sink");
        assert_eq!(
            fs::read_dir(base.output()).unwrap().count(),
            0,
            "no RRD created or moved aside"
        );
        assert_eq!(stats.snapshots_failed.load(Ordering::Relaxed), 5);
        // The order's RRD still takes real updates.
        publish(&base, 9, &[result("o", T0, 0.001)]);
        assert_eq!(processor.process_pending(true).unwrap().processed, 1);
        let rrd = rrd_last_update(&base.output().join("o/main.rrd"));
        assert!(rrd.contains(&format!("{}: 0 0.001 0.001", T0 + 20)), "{rrd}");
    }

    #[test]
    fn a_failed_quarantine_keeps_its_reason_and_is_retried_until_it_succeeds() {
        let sink = RecordingSink::named("rec");
        let (_dir, mut processor, stats) = setup_sinks(std::slice::from_ref(&sink));
        let base = processor.base().clone();
        let name = SnapshotName::new(T0, "ping", 1);
        queue::publish(&base, &name, &[(PING_FILE, b"garbage\n")]).unwrap();
        fs::rename(base.failed(), base.root().join("failed.away")).unwrap();
        fs::write(base.failed(), b"not a directory").unwrap();
        for _ in 0..3 {
            let report = processor.process_pending(true).unwrap();
            assert_eq!((report.quarantined, report.processed), (0, 0));
        }
        assert!(base.incoming().join(name.as_str()).exists());
        assert_eq!(stats.snapshots_failed.load(Ordering::Relaxed), 0);
        let noted = stats.last_error.get().unwrap().message;
        assert!(noted.starts_with("cannot quarantine snapshot"), "{noted}");
        fs::remove_file(base.failed()).unwrap();
        fs::rename(base.root().join("failed.away"), base.failed()).unwrap();
        assert_eq!(processor.process_pending(true).unwrap().quarantined, 1);
        let reason = reason_of(&base, name.as_str());
        assert!(reason.contains("ping.jsonl line 1"), "{reason:?}");
        assert_eq!(stats.snapshots_failed.load(Ordering::Relaxed), 1);
        assert!(sink.ids().is_empty());
    }

    #[test]
    fn a_reason_that_cannot_be_written_yet_is_kept_and_written_when_the_disk_has_room() {
        let dir = tempfile::tempdir().unwrap();
        let status = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=4m,nr_inodes=64", "tmpfs"])
            .arg(dir.path())
            .status();
        assert!(
            status.is_ok_and(|s| s.success()),
            "mounting a tmpfs failed: run the tests as root"
        );
        let _unmount = SmallDisk(dir.path().to_owned());
        let base = BaseDir::new(dir.path().join("base"));
        base.create_all().unwrap();
        let stats = Arc::new(ProcessStats::default());
        let mut processor = Processor::new(base.clone(), 1, Vec::new(), false, stats.clone())
            .unwrap()
            .with_limits(WIDE);
        let name = SnapshotName::new(T0, "ping", 1);
        queue::publish(&base, &name, &[(PING_FILE, b"garbage\n")]).unwrap();
        // Every inode taken: a rename still works, creating REASON does not.
        let fillers = dir.path().join("fill");
        fs::create_dir(&fillers).unwrap();
        let mut n = 0;
        while fs::write(fillers.join(n.to_string()), b"").is_ok() {
            n += 1;
        }
        assert_eq!(processor.process_pending(true).unwrap().quarantined, 1);
        assert!(base.failed().join(name.as_str()).is_dir(), "moved out of the queue");
        assert!(!base.failed().join(name.as_str()).join("REASON").exists());
        assert!(stats.last_error.get().unwrap().message.contains("REASON"));
        processor.process_pending(true).unwrap();
        assert!(
            !base.failed().join(name.as_str()).join("REASON").exists(),
            "still no room"
        );
        fs::remove_file(fillers.join("0")).unwrap();
        fs::remove_file(fillers.join("1")).unwrap();
        processor.process_pending(true).unwrap();
        let reason = reason_of(&base, name.as_str());
        assert!(reason.contains("ping.jsonl line 1"), "the original reason: {reason:?}");
        assert_eq!(stats.snapshots_failed.load(Ordering::Relaxed), 1, "counted once");
    }

    #[test]
    fn a_symlink_in_an_orders_output_path_fails_that_order_alone_and_nothing_is_written_outside() {
        let sink = RecordingSink::named("rec");
        let (dir, mut processor, _stats) = setup_sinks(std::slice::from_ref(&sink));
        let base = processor.base().clone();
        let outside = dir.path().join("outside");
        fs::create_dir(&outside).unwrap();
        std::os::unix::fs::symlink(&outside, base.output().join("lb")).unwrap();
        publish(&base, 1, &[result("lb/web", T0, 0.001), result("fine", T0, 0.001)]);
        assert_eq!(processor.process_pending(true).unwrap().processed, 1);
        assert_eq!(
            fs::read_dir(&outside).unwrap().count(),
            0,
            "nothing created through the link"
        );
        assert!(base.output().join("fine/main.rrd").is_file());
        let failing = failing_orders(&base);
        assert!(failing["lb/web"].reason.contains("symbolic link"), "{failing:?}");
        assert_eq!(fs::read_dir(base.failed()).unwrap().count(), 0);
    }
}
