//! One processing round: read the queued snapshots, apply them, make them durable, remove them.

use crate::measurement::{OrderId, OrderResult, RrdTemplate};
use crate::output::{archive, last_result, rrd::RrdWriter};
use crate::sink::{ResultSink, SinkBatch};
use crate::spool::atomic::{sync_filesystem, StagedFile};
use crate::spool::queue::{self, QueueEntry};
use crate::spool::snapshot::{read_ping, SnapshotName, PING_FILE};
use crate::spool::BaseDir;
use rayon::prelude::*;
use std::collections::{HashMap, HashSet};
use std::io;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tracing::{debug, info, warn};

/// Most snapshots read in one round (the rest wait for the next round).
const MAX_SNAPSHOTS_PER_ROUND: usize = 2_000;
/// Rounds a snapshot may fail to apply before it is quarantined.
const MAX_ATTEMPTS: u32 = 5;

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
    pub order_errors: AtomicU64,
    pub rrd_updates: AtomicU64,
    pub processing_micros: AtomicU64,
}

/// What one round did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct RoundReport {
    pub processed: usize,
    pub quarantined: usize,
    pub retried: usize,
    pub results: usize,
}

/// The processing state: the active order set, the RRD writer, the sinks.
pub struct Processor {
    base: BaseDir,
    rrd: RrdWriter,
    sinks: Vec<Arc<dyn ResultSink>>,
    /// Orders whose results are written; `None` accepts every order (`spoolmon process` alone).
    active: Option<HashSet<OrderId>>,
    attempts: HashMap<String, u32>,
    pool: rayon::ThreadPool,
    stats: Arc<ProcessStats>,
}

/// One snapshot read in this round.
struct Loaded {
    name: SnapshotName,
    results: Vec<OrderResult>,
}

impl Processor {
    /// A processor on `base` with `workers` threads (0 = one per CPU). With `track_orders`, only
    /// orders announced by [`Lifecycle::Activate`] are written.
    pub fn new(
        base: BaseDir,
        workers: usize,
        sinks: Vec<Arc<dyn ResultSink>>,
        track_orders: bool,
        stats: Arc<ProcessStats>,
    ) -> io::Result<Processor> {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(workers)
            .thread_name(|i| format!("process-{i}"))
            .build()
            .map_err(io::Error::other)?;
        let active = track_orders.then(HashSet::new);
        Ok(Processor {
            base,
            rrd: RrdWriter::new(),
            sinks,
            active,
            attempts: HashMap::new(),
            pool,
            stats,
        })
    }

    pub fn base(&self) -> &BaseDir {
        &self.base
    }

    /// Applies an order lifecycle change (archive or restore) in processing order.
    pub fn handle(&mut self, command: Lifecycle) {
        match command {
            Lifecycle::Activate(id) => {
                if let Err(e) = archive::restore(&self.base, &id) {
                    warn!(order = %id, "cannot restore archived output: {e}");
                }
                if let Some(active) = &mut self.active {
                    active.insert(id);
                }
            }
            Lifecycle::Deactivate { id, expired_file } => {
                if let Some(active) = &mut self.active {
                    active.remove(&id);
                }
                self.rrd.forget(&self.base.output().join(id.as_path()));
                match archive::archive(&self.base, &id, expired_file.as_deref()) {
                    Ok(_) => info!(order = %id, expired = expired_file.is_some(), "archived"),
                    Err(e) => warn!(order = %id, "cannot archive output: {e}"),
                }
            }
            Lifecycle::PurgeArchive(retention) => match archive::purge(&self.base, retention, SystemTime::now()) {
                Ok(0) => {}
                Ok(purged) => info!(purged, "purged archive entries older than archive-retention"),
                Err(e) => warn!("cannot purge archive: {e}"),
            },
        }
    }

    /// True when the oldest snapshot has waited `flush_interval` (always true for 0).
    pub fn flush_due(&self, flush_interval: Duration) -> bool {
        if flush_interval.is_zero() {
            return true;
        }
        let now = crate::probe::scheduler::unix_secs(SystemTime::now());
        match queue::list(&self.base) {
            Ok(entries) => entries.iter().any(|e| match e {
                QueueEntry::Snapshot(s) => now - s.epoch >= flush_interval.as_secs() as i64,
                QueueEntry::Invalid(_) => true,
            }),
            Err(_) => true,
        }
    }

    /// Processes what is in `incoming/` now.
    pub fn process_pending(&mut self) -> io::Result<RoundReport> {
        let started = std::time::Instant::now();
        let mut report = RoundReport::default();
        let mut loaded = Vec::new();
        for entry in queue::list(&self.base)? {
            match entry {
                QueueEntry::Invalid(name) => {
                    self.quarantine(
                        &name,
                        "the name is not a snapshot time (<unix-epoch>[-<source>-<seq>]) or not a directory",
                    );
                    report.quarantined += 1;
                }
                QueueEntry::Snapshot(name) if loaded.len() < MAX_SNAPSHOTS_PER_ROUND => match self.load(&name) {
                    Ok(results) => loaded.push(Loaded { name, results }),
                    Err(reason) => {
                        self.quarantine(name.as_str(), &reason);
                        report.quarantined += 1;
                    }
                },
                QueueEntry::Snapshot(_) => {}
            }
        }
        if loaded.is_empty() {
            return Ok(report);
        }
        let (staged, failed_orders) = self.apply(&loaded);
        let sink_error = self.hand_to_sinks(&loaded);
        // RRD pages and new last_result contents reach the disk in one flush; then the
        // last_result files are switched by rename, and a second flush makes the renames durable.
        sync_filesystem(&self.base.output())?;
        self.commit_last_results(staged);
        sync_filesystem(&self.base.output())?;
        for snapshot in &loaded {
            let failed = sink_error.is_some() || snapshot.results.iter().any(|r| failed_orders.contains(&r.id));
            if failed {
                report.retried += self.retry_or_quarantine(snapshot, sink_error.as_deref()) as usize;
            } else {
                queue::remove(&self.base, snapshot.name.as_str())?;
                self.attempts.remove(snapshot.name.as_str());
                report.processed += 1;
                report.results += snapshot.results.len();
            }
        }
        self.stats.rounds.fetch_add(1, Ordering::Relaxed);
        self.stats
            .snapshots_processed
            .fetch_add(report.processed as u64, Ordering::Relaxed);
        self.stats
            .processing_micros
            .fetch_add(started.elapsed().as_micros() as u64, Ordering::Relaxed);
        debug!(?report, "processing round done");
        Ok(report)
    }

    fn load(&self, name: &SnapshotName) -> Result<Vec<OrderResult>, String> {
        let dir = self.base.incoming().join(name.as_str());
        if !dir.join(PING_FILE).exists() {
            return Err(format!("unknown snapshot kind: no {PING_FILE} in it"));
        }
        read_ping(&dir).map(|(_, results)| results).map_err(|e| e.to_string())
    }

    /// Renames the staged `last_result` files into place (in parallel: one rename each).
    fn commit_last_results(&self, staged: Vec<StagedFile>) {
        self.pool.install(|| {
            staged.into_par_iter().for_each(|file| {
                let target = file.target().to_owned();
                if let Err(e) = file.commit() {
                    warn!(file = %target.display(), "cannot replace last_result: {e}");
                }
            })
        });
    }

    /// Applies every active order's results: RRDs written, `last_result` files staged. Returns
    /// the staged files and the orders that failed.
    fn apply(&self, loaded: &[Loaded]) -> (Vec<StagedFile>, HashSet<OrderId>) {
        let mut by_order: HashMap<&OrderId, Vec<&OrderResult>> = HashMap::new();
        let mut dropped = 0u64;
        for result in loaded.iter().flat_map(|s| &s.results) {
            if self.active.as_ref().is_some_and(|active| !active.contains(&result.id)) {
                dropped += 1;
                continue;
            }
            by_order.entry(&result.id).or_default().push(result);
        }
        self.stats.results_dropped.fetch_add(dropped, Ordering::Relaxed);
        let groups: Vec<(&OrderId, Vec<&OrderResult>)> = by_order.into_iter().collect();
        let outcomes: Vec<Result<Option<StagedFile>, OrderId>> = self.pool.install(|| {
            groups
                .into_par_iter()
                .map(|(id, mut results)| {
                    results.sort_by_key(|r| r.time);
                    self.apply_order(id, &results).map_err(|e| {
                        warn!(order = %id, "cannot write output: {e}");
                        id.clone()
                    })
                })
                .collect()
        });
        let mut staged = Vec::with_capacity(outcomes.len());
        let mut failures = HashSet::new();
        for outcome in outcomes {
            match outcome {
                Ok(file) => staged.extend(file),
                Err(id) => {
                    failures.insert(id);
                }
            }
        }
        self.stats
            .order_errors
            .fetch_add(failures.len() as u64, Ordering::Relaxed);
        (staged, failures)
    }

    /// Writes one order's results (ascending time): RRD, then stages `last_result` of the newest.
    fn apply_order(&self, id: &OrderId, results: &[&OrderResult]) -> Result<Option<StagedFile>, String> {
        let dir = self.base.output().join(id.as_path());
        let rrd_results: Vec<&OrderResult> = results
            .iter()
            .copied()
            .filter(|r| r.template == RrdTemplate::Smokeping)
            .collect();
        if !rrd_results.is_empty() {
            self.rrd.apply(&dir, &rrd_results).map_err(|e| e.to_string())?;
            self.stats.rrd_updates.fetch_add(1, Ordering::Relaxed);
        }
        let staged = match results.last() {
            Some(newest) => {
                Some(last_result::stage(&dir, newest).map_err(|e| format!("cannot write last_result: {e}"))?)
            }
            None => None,
        };
        self.stats
            .results_applied
            .fetch_add(results.len() as u64, Ordering::Relaxed);
        Ok(staged)
    }

    /// Gives every sink the active results; the first error, if any.
    fn hand_to_sinks(&self, loaded: &[Loaded]) -> Option<String> {
        if self.sinks.is_empty() {
            return None;
        }
        let mut results: Vec<OrderResult> = loaded
            .iter()
            .flat_map(|s| s.results.iter())
            .filter(|r| self.active.as_ref().is_none_or(|a| a.contains(&r.id)))
            .cloned()
            .collect();
        results.sort_by(|a, b| a.time.cmp(&b.time).then_with(|| a.id.cmp(&b.id)));
        let mut first_error = None;
        for sink in &self.sinks {
            let batch = SinkBatch {
                results: &results,
                metrics: &[],
            };
            if let Err(e) = sink.accept(batch) {
                warn!("{e}");
                first_error.get_or_insert(e.to_string());
            }
        }
        first_error
    }

    /// Counts a failed attempt; quarantines after [`MAX_ATTEMPTS`]. True if kept for a retry.
    fn retry_or_quarantine(&mut self, snapshot: &Loaded, sink_error: Option<&str>) -> bool {
        let name = snapshot.name.as_str().to_owned();
        let attempts = self.attempts.entry(name.clone()).or_insert(0);
        *attempts += 1;
        if *attempts < MAX_ATTEMPTS {
            return true;
        }
        self.attempts.remove(&name);
        let reason = match sink_error {
            Some(e) => format!("gave up after {MAX_ATTEMPTS} attempts: {e}"),
            None => {
                format!("gave up after {MAX_ATTEMPTS} attempts: output of some orders could not be written (see log)")
            }
        };
        self.quarantine(&name, &reason);
        false
    }

    fn quarantine(&self, name: &str, reason: &str) {
        self.stats.snapshots_failed.fetch_add(1, Ordering::Relaxed);
        match queue::quarantine(&self.base, name, reason) {
            Ok(path) => warn!(snapshot = name, moved_to = %path.display(), "snapshot quarantined: {reason}"),
            Err(e) => warn!(snapshot = name, "cannot quarantine snapshot ({reason}): {e}"),
        }
    }
}
