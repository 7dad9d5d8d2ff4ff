//! One processing round: read the queued snapshots, apply them, make them durable, remove them.

use crate::measurement::{OrderId, OrderResult, RrdTemplate};
use crate::output::{archive, last_result, rrd::RrdWriter};
use crate::process::haproxy::{self, HaproxyOptions};
use crate::sink::Metric;
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
/// Most HAProxy snapshots aggregated in one round (each becomes ~80,000 metrics in memory).
const MAX_HAPROXY_PER_ROUND: usize = 2;
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
    /// The latest quarantine reason, output or sink error (for `spoolmon status`).
    pub last_error: crate::selfmetrics::LastError,
}

/// What one round did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct RoundReport {
    /// Snapshots fully applied and removed.
    pub processed: usize,
    /// Snapshots whose `last_result` and sink lines are done, left for the next RRD flush.
    pub marked: usize,
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
    /// How HAProxy snapshots are aggregated.
    haproxy: HaproxyOptions,
    /// Epoch of the oldest snapshot left in `incoming/` after the last round.
    oldest_waiting: Option<i64>,
    pool: rayon::ThreadPool,
    stats: Arc<ProcessStats>,
}

/// One snapshot read in this round.
struct Loaded {
    name: SnapshotName,
    results: Vec<OrderResult>,
    /// HAProxy aggregates (and their self-metrics): for the sinks only.
    metrics: Vec<Metric>,
    /// `last_result` and sinks were done in an earlier round; only RRD updates are left.
    applied: bool,
}

/// What one order gets in a round.
#[derive(Default)]
struct OrderWork<'a> {
    /// Results to write into the RRD (sorted by time before writing).
    rrd: Vec<&'a OrderResult>,
    /// The newest result not applied before: the new `last_result`.
    newest: Option<&'a OrderResult>,
    /// How many results were not applied before.
    fresh: usize,
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
            haproxy: HaproxyOptions::default(),
            oldest_waiting: None,
            pool,
            stats,
        })
    }

    /// Aggregates HAProxy snapshots with `options` (validated) instead of the defaults.
    pub fn with_haproxy(mut self, options: HaproxyOptions) -> Processor {
        self.haproxy = options;
        self
    }

    pub fn base(&self) -> &BaseDir {
        &self.base
    }

    /// Records an error of a whole round (for `spoolmon status`).
    pub fn note_error(&self, message: String) {
        self.stats.last_error.set(message);
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

    /// True when RRD updates are due: always for a `flush_interval` of 0, else when the oldest
    /// snapshot left in `incoming/` by an earlier round has waited that long.
    pub fn flush_due(&self, flush_interval: Duration) -> bool {
        if flush_interval.is_zero() {
            return true;
        }
        let now = crate::probe::scheduler::unix_secs(SystemTime::now());
        self.oldest_waiting
            .is_some_and(|epoch| now - epoch >= flush_interval.as_secs() as i64)
    }

    /// Processes what is in `incoming/` now. New snapshots get their `last_result` files and
    /// sink lines; with `flush_rrd` every snapshot's RRD updates are applied too and the
    /// snapshots are removed, without it they are marked applied and wait for a flush round.
    pub fn process_pending(&mut self, flush_rrd: bool) -> io::Result<RoundReport> {
        let started = std::time::Instant::now();
        let mut report = RoundReport::default();
        let (mut loaded, listed) = self.load_queue(flush_rrd, &mut report)?;
        if loaded.is_empty() {
            self.oldest_waiting = self.oldest_left(&listed);
            return Ok(report);
        }
        let (staged, failed_orders) = self.apply(&loaded, flush_rrd);
        let sink_error = self.hand_to_sinks(&mut loaded);
        // RRD pages and new last_result contents reach the disk in one flush; then the
        // last_result files are switched by rename, and a second flush makes the renames durable.
        sync_filesystem(&self.base.output())?;
        self.commit_last_results(staged);
        sync_filesystem(&self.base.output())?;
        let mut marked = false;
        for snapshot in &loaded {
            let failed = snapshot.results.iter().any(|r| failed_orders.contains(&r.id));
            if failed {
                report.retried += self.retry_or_quarantine(snapshot) as usize;
            } else if sink_error.is_some() && !snapshot.applied {
                // Not the snapshot's fault (an outbox cannot take lines): keep it, no attempt counted.
                report.retried += 1;
            } else if flush_rrd || snapshot.results.is_empty() {
                report.results += if snapshot.applied { 0 } else { snapshot.results.len() };
                queue::remove(&self.base, snapshot.name.as_str())?;
                self.attempts.remove(snapshot.name.as_str());
                report.processed += 1;
            } else {
                report.results += snapshot.results.len();
                queue::mark_applied(&self.base, snapshot.name.as_str())?;
                self.attempts.remove(snapshot.name.as_str());
                report.marked += 1;
                marked = true;
            }
        }
        if marked {
            sync_filesystem(&self.base.incoming())?;
        }
        self.oldest_waiting = self.oldest_left(&listed);
        self.count_round(&report, started);
        debug!(?report, "processing round done");
        Ok(report)
    }

    /// Reads the snapshots to process this round (quarantining unreadable ones): new snapshots,
    /// and with `flush_rrd` also those marked applied in earlier rounds. Also returns every
    /// snapshot name listed, oldest first.
    fn load_queue(
        &mut self,
        flush_rrd: bool,
        report: &mut RoundReport,
    ) -> io::Result<(Vec<Loaded>, Vec<SnapshotName>)> {
        let mut candidates = Vec::new();
        let mut listed = Vec::new();
        let mut haproxy_snapshots = 0;
        for entry in queue::list(&self.base)? {
            match entry {
                QueueEntry::Invalid(name) => {
                    self.quarantine(
                        &name,
                        "the name is not a snapshot time (<unix-epoch>[-<source>-<seq>]) or not a directory",
                    );
                    report.quarantined += 1;
                }
                QueueEntry::Snapshot(name) => {
                    listed.push(name.clone());
                    if candidates.len() >= MAX_SNAPSHOTS_PER_ROUND || haproxy_snapshots >= MAX_HAPROXY_PER_ROUND {
                        continue;
                    }
                    let applied = queue::is_applied(&self.base, name.as_str());
                    if applied && !flush_rrd {
                        continue;
                    }
                    haproxy_snapshots +=
                        usize::from(!self.base.incoming().join(name.as_str()).join(PING_FILE).exists());
                    candidates.push((name, applied));
                }
            }
        }
        // Reading and aggregating is the expensive part for HAProxy snapshots: spread over plain
        // threads (polars keeps each query on its calling thread, which must not be a rayon
        // worker).
        let threads = self.pool.current_num_threads().max(1);
        let per_thread = candidates.len().div_ceil(threads).max(1);
        let this: &Processor = self;
        let load_chunk =
            |chunk: &[(SnapshotName, bool)]| chunk.iter().map(|(name, _)| this.load(name)).collect::<Vec<_>>();
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
        for (name, applied, outcome) in outcomes {
            match outcome {
                Ok((results, metrics)) => loaded.push(Loaded {
                    name,
                    results,
                    metrics,
                    applied,
                }),
                Err(reason) => {
                    self.quarantine(name.as_str(), &reason);
                    report.quarantined += 1;
                }
            }
        }
        Ok((loaded, listed))
    }

    /// Epoch of the oldest of `listed` still in `incoming/` after the round (newer arrivals are
    /// seen by the next round).
    fn oldest_left(&self, listed: &[SnapshotName]) -> Option<i64> {
        listed
            .iter()
            .find(|name| self.base.incoming().join(name.as_str()).exists())
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

    /// Reads a snapshot: a ping snapshot's results, or a HAProxy snapshot's aggregates.
    fn load(&self, name: &SnapshotName) -> Result<(Vec<OrderResult>, Vec<Metric>), String> {
        let dir = self.base.incoming().join(name.as_str());
        if dir.join(PING_FILE).exists() {
            return read_ping(&dir)
                .map(|(_, results)| (results, Vec::new()))
                .map_err(|e| e.to_string());
        }
        if haproxy::is_haproxy_snapshot(&dir) {
            return haproxy::aggregate(&dir, name.epoch, &self.haproxy)
                .map(|aggregate| (Vec::new(), aggregate.metrics))
                .map_err(|e| e.to_string());
        }
        Err(format!(
            "unknown snapshot kind: neither {PING_FILE} nor HAProxy <socket>_info/<socket>_stat files"
        ))
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

    /// Applies every active order's results: with `flush_rrd` the RRD updates of every loaded
    /// snapshot, and `last_result` staged from the newest new result. Returns the staged files
    /// and the orders that failed.
    fn apply(&self, loaded: &[Loaded], flush_rrd: bool) -> (Vec<StagedFile>, HashSet<OrderId>) {
        let mut by_order: HashMap<&OrderId, OrderWork> = HashMap::new();
        let mut dropped = 0u64;
        for snapshot in loaded {
            for result in &snapshot.results {
                if !self.is_active(&result.id) {
                    dropped += u64::from(!snapshot.applied);
                    continue;
                }
                let work = by_order.entry(&result.id).or_default();
                if flush_rrd && result.template == RrdTemplate::Smokeping {
                    work.rrd.push(result);
                }
                if !snapshot.applied {
                    work.fresh += 1;
                    if work.newest.is_none_or(|n| n.time <= result.time) {
                        work.newest = Some(result);
                    }
                }
            }
        }
        self.stats.results_dropped.fetch_add(dropped, Ordering::Relaxed);
        let groups: Vec<(&OrderId, OrderWork)> = by_order.into_iter().collect();
        let outcomes: Vec<Result<Option<StagedFile>, OrderId>> = self.pool.install(|| {
            groups
                .into_par_iter()
                .map(|(id, mut work)| {
                    work.rrd.sort_by_key(|r| r.time);
                    self.apply_order(id, &work).map_err(|e| {
                        warn!(order = %id, "cannot write output: {e}");
                        self.stats
                            .last_error
                            .set(format!("order {id}: cannot write output: {e}"));
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

    fn is_active(&self, id: &OrderId) -> bool {
        self.active.as_ref().is_none_or(|active| active.contains(id))
    }

    /// Writes one order's output: its RRD updates (ascending time), then stages `last_result`.
    fn apply_order(&self, id: &OrderId, work: &OrderWork) -> Result<Option<StagedFile>, String> {
        let dir = self.base.output().join(id.as_path());
        if !work.rrd.is_empty() {
            self.rrd.apply(&dir, &work.rrd).map_err(|e| e.to_string())?;
            self.stats.rrd_updates.fetch_add(1, Ordering::Relaxed);
        }
        let staged = match work.newest {
            Some(newest) => {
                Some(last_result::stage(&dir, newest).map_err(|e| format!("cannot write last_result: {e}"))?)
            }
            None => None,
        };
        self.stats
            .results_applied
            .fetch_add(work.fresh as u64, Ordering::Relaxed);
        Ok(staged)
    }

    /// Gives every sink the active results; the first error, if any.
    fn hand_to_sinks(&self, loaded: &mut [Loaded]) -> Option<String> {
        if self.sinks.is_empty() {
            return None;
        }
        let mut results: Vec<OrderResult> = loaded
            .iter()
            .filter(|s| !s.applied)
            .flat_map(|s| s.results.iter())
            .filter(|r| self.is_active(&r.id))
            .cloned()
            .collect();
        results.sort_by(|a, b| a.time.cmp(&b.time).then_with(|| a.id.cmp(&b.id)));
        // Metrics are only needed here: moved, not copied (a HAProxy snapshot has ~80,000).
        let mut metrics: Vec<Metric> = Vec::new();
        for snapshot in loaded.iter_mut().filter(|s| !s.applied) {
            metrics.append(&mut snapshot.metrics);
        }
        if results.is_empty() && metrics.is_empty() {
            return None;
        }
        let mut first_error = None;
        for sink in &self.sinks {
            let batch = SinkBatch {
                results: &results,
                metrics: &metrics,
            };
            if let Err(e) = sink.accept(batch) {
                warn!("{e}");
                self.stats.last_error.set(e.to_string());
                first_error.get_or_insert(e.to_string());
            }
        }
        first_error
    }

    /// Counts a failed attempt; quarantines after [`MAX_ATTEMPTS`]. True if kept for a retry.
    fn retry_or_quarantine(&mut self, snapshot: &Loaded) -> bool {
        let name = snapshot.name.as_str().to_owned();
        let attempts = self.attempts.entry(name.clone()).or_insert(0);
        *attempts += 1;
        if *attempts < MAX_ATTEMPTS {
            return true;
        }
        self.attempts.remove(&name);
        let reason =
            format!("gave up after {MAX_ATTEMPTS} attempts: output of some orders could not be written (see log)");
        self.quarantine(&name, &reason);
        false
    }

    fn quarantine(&self, name: &str, reason: &str) {
        self.stats.snapshots_failed.fetch_add(1, Ordering::Relaxed);
        self.stats
            .last_error
            .set(format!("snapshot {name} quarantined: {reason}"));
        match queue::quarantine(&self.base, name, reason) {
            Ok(path) => warn!(snapshot = name, moved_to = %path.display(), "snapshot quarantined: {reason}"),
            Err(e) => warn!(snapshot = name, "cannot quarantine snapshot ({reason}): {e}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sink::SinkError;
    use crate::spool::snapshot::encode_ping;
    use std::fs;
    use std::sync::Mutex;

    const T0: i64 = 1_700_000_000;

    /// Remembers what it accepted; fails while `failing` is set.
    #[derive(Default)]
    struct RecordingSink {
        accepted: Mutex<Vec<(OrderId, i64)>>,
        failing: std::sync::atomic::AtomicBool,
    }

    impl ResultSink for RecordingSink {
        fn name(&self) -> &str {
            "recording"
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
            Ok(())
        }
    }

    fn result(id: &str, time: i64, rtt: f64) -> OrderResult {
        OrderResult {
            id: OrderId::new(id).unwrap(),
            time,
            updated: time + 20,
            step: 20,
            pings: 1,
            template: RrdTemplate::Smokeping,
            rtts: vec![Some(rtt)],
            telegraf: None,
        }
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
        let processor = Processor::new(base, 1, sinks, false, Arc::default()).unwrap();
        (dir, processor)
    }

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
        assert!(
            !base.output().join("a/b/main.rrd").exists(),
            "RRD written before the flush"
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
        let mut restarted = Processor::new(base.clone(), 1, Vec::new(), false, Arc::default()).unwrap();
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
        for _ in 0..MAX_ATTEMPTS * 2 {
            let report = processor.process_pending(true).unwrap();
            assert_eq!((report.retried, report.processed, report.quarantined), (1, 0, 0));
        }
        assert_eq!(queue::depth(&base).unwrap(), 1);
        assert_eq!(fs::read_dir(base.failed()).unwrap().count(), 0);
        sink.failing.store(false, Ordering::Relaxed);
        assert_eq!(processor.process_pending(true).unwrap().processed, 1);
        assert_eq!(sink.accepted.lock().unwrap().len(), 1);
    }
}
