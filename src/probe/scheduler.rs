//! The scheduler: groups active orders into batches and runs each batch once per step.
//!
//! Orders with the same probe kind, probe options (all but the target), step and pings share a
//! batch (at most `max-batch` orders). Every batch gets a stable pseudo-random offset inside the
//! step (derived from its key, so restarts keep the phase) and its pings are spread over 80% of
//! the step. A run's deadline is the start of its next run: runs never overlap, and pings still
//! unanswered at the deadline count as lost. Each finished run becomes one snapshot in
//! `incoming/` (see `spool::snapshot`); an order its probe could not measure gets a result with
//! the probe's `failure` and unknown pings (counted in [`SchedulerStats::orders_unmeasured`], not
//! as sent or lost pings). New or changed orders take effect at their next step.
//!
//! Snapshot names are `<step start>-ping-<seq>`. `seq` starts above the highest `seq` of the
//! `-ping-` snapshots still queued in `incoming/` when the scheduler starts, so a restart within
//! the same step never reuses a queued name; a name that is taken anyway (another producer) is
//! retried with the next `seq` (up to [`MAX_NAME_TRIES`] times, each logged). Any other publish
//! failure (`incoming.tmp/` unwritable or immutable, disk full, ...) keeps the snapshot in memory
//! (at most [`MAX_HELD_SNAPSHOTS`] / [`MAX_HELD_BYTES`], oldest dropped and counted beyond) and
//! suspends collection with the reason until a retry publishes every held snapshot.
//!
//! Before every run the scheduler asks the disk guard ([`DiskGuard`], `spool::guard`) whether
//! collection may go on (invariant 6); a suspended run is skipped, logged and counted in
//! [`SchedulerStats::suspended_runs`].

use super::{Probe, ProbeFailure, RunPlan};
use crate::orders::order::{Order, ProbeSpec};
use crate::shared::clock::unix_secs;
use crate::shared::measurement::OrderResult;
use crate::spool::guard::DiskGuard;
use crate::spool::snapshot::{encode_ping, PING_FILE};
use crate::spool::{queue, snapshot::SnapshotName, BaseDir};
use std::collections::{BTreeMap, VecDeque};
use std::io;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tracing::{debug, info, warn};

/// The probe implementations, one per kind of order.
#[derive(Clone)]
pub struct ProbeSet {
    pub icmp: Arc<dyn Probe>,
    pub http: Arc<dyn Probe>,
    pub tcp: Arc<dyn Probe>,
    pub exec: Arc<dyn Probe>,
}

impl ProbeSet {
    fn for_spec(&self, spec: &ProbeSpec) -> &Arc<dyn Probe> {
        match spec {
            ProbeSpec::Fping(_) => &self.icmp,
            ProbeSpec::Httping(_) => &self.http,
            ProbeSpec::Tcp(_) => &self.tcp,
            ProbeSpec::Exec(_) => &self.exec,
        }
    }
}

/// Counters the scheduler keeps (read by status and self-metrics).
#[derive(Debug, Default)]
pub struct SchedulerStats {
    pub runs: AtomicU64,
    /// Orders measured, one per order of every batch run (those that could not be measured too).
    pub orders_measured: AtomicU64,
    /// Orders a run could not measure (the result carries the probe's reason, no pings).
    pub orders_unmeasured: AtomicU64,
    pub pings_sent: AtomicU64,
    pub pings_lost: AtomicU64,
    pub snapshots_published: AtomicU64,
    pub publish_errors: AtomicU64,
    /// Runs skipped because `incoming/` was full or the disk nearly so.
    pub suspended_runs: AtomicU64,
    /// How late runs started after their scheduled time, microseconds: the sum and the latest.
    pub start_delay_micros: AtomicU64,
    pub last_start_delay_micros: AtomicU64,
    /// Snapshot names found taken at publish and retried with the next sequence number.
    pub name_collisions: AtomicU64,
    /// Snapshots kept in memory because publishing failed (a gauge).
    pub held_snapshots: AtomicU64,
    /// Held snapshots dropped because more than [`MAX_HELD_SNAPSHOTS`] / [`MAX_HELD_BYTES`] waited.
    pub snapshots_lost: AtomicU64,
    /// The latest suspension reason or publish error (for `spoolmon status`).
    pub last_error: crate::shared::last_error::LastError,
}

/// Tries with successive sequence numbers before a publish that keeps colliding is held.
pub const MAX_NAME_TRIES: u32 = 100;
/// Most snapshots kept in memory while publishing fails.
pub const MAX_HELD_SNAPSHOTS: usize = 10_000;
/// Most bytes of snapshots kept in memory while publishing fails.
pub const MAX_HELD_BYTES: usize = 256 << 20;

/// A finished run's snapshot that could not be published yet.
struct HeldSnapshot {
    step_start: i64,
    batch: String,
    orders: usize,
    body: Vec<u8>,
}

/// Snapshots waiting for `incoming.tmp/` to become writable again, oldest first, and why.
#[derive(Default)]
struct Held {
    snapshots: VecDeque<HeldSnapshot>,
    bytes: usize,
    reason: Option<String>,
    /// A thread is publishing held snapshots (one at a time, outside the lock): others leave
    /// the retry to it, and new snapshots queue behind the held ones.
    retrying: bool,
}

/// The sequence number of a snapshot name: what follows the last `-` (`1700000000-ping-000000042`).
fn name_seq(name: &str, source: &str) -> Option<u64> {
    let (_, rest) = name.split_once(&format!("-{source}-"))?;
    if rest.is_empty() || !rest.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    rest.parse().ok()
}

/// The first sequence number to use: one above the highest 9-digit `seq` of the `<epoch>-ping-`
/// snapshots in `incoming/` (larger ones, planted by someone else, are left to the collision
/// retry so names keep their 9 digits and their order).
pub fn first_seq(base: &BaseDir) -> u64 {
    let Ok(entries) = base.dir("incoming").and_then(|dir| dir.entries()) else {
        return 0;
    };
    entries
        .iter()
        .filter_map(|(name, _)| name_seq(&name.to_string_lossy(), "ping"))
        .filter(|&seq| seq < 999_000_000)
        .max()
        .map_or(0, |seq| seq + 1)
}

/// One batch: orders measured together.
#[derive(Clone, Debug)]
pub struct Batch {
    /// Probe kind, options, step and pings (and chunk number): the batch's identity.
    pub key: String,
    pub step: u32,
    pub pings: u32,
    pub orders: Vec<Arc<Order>>,
    /// Seconds after each step start at which runs begin.
    pub offset: Duration,
}

/// Groups `orders` into batches of at most `max_batch`, in id order within each key (the
/// orders are shared with the order book: no copies).
pub fn make_batches(orders: Vec<Arc<Order>>, max_batch: usize) -> Vec<Batch> {
    let mut groups: BTreeMap<String, Vec<Arc<Order>>> = BTreeMap::new();
    for order in orders {
        groups.entry(batch_key(&order)).or_default().push(order);
    }
    let mut batches = Vec::new();
    for (key, mut members) in groups {
        members.sort_by(|a, b| a.id.cmp(&b.id));
        let size = max_batch.max(1);
        let mut members = members.into_iter().peekable();
        let mut chunk_index = 0;
        while members.peek().is_some() {
            // Exact-capacity chunks: split_off would leave every chunk holding the capacity of
            // the whole group (quadratic memory at 100,000 orders).
            let chunk: Vec<Arc<Order>> = members.by_ref().take(size).collect();
            let key = format!("{key}#{chunk_index}");
            let (step, pings) = (chunk[0].step, chunk[0].pings);
            let offset = stable_offset(&key, step, pings);
            batches.push(Batch {
                key,
                step,
                pings,
                orders: chunk,
                offset,
            });
            chunk_index += 1;
        }
    }
    batches
}

/// What makes two orders measurable in the same run: everything but the target.
fn batch_key(order: &Order) -> String {
    format!("{} step={} pings={}", order.probe.batch_key(), order.step, order.pings)
}

/// A stable offset in `[0, min(step/(pings+1), step/5))`, from a hash of the batch key.
fn stable_offset(key: &str, step: u32, pings: u32) -> Duration {
    let range_ms = (u64::from(step) * 1000 / (u64::from(pings) + 1)).min(u64::from(step) * 200);
    if range_ms == 0 {
        return Duration::ZERO;
    }
    // FNV-1a: stable across Rust versions, unlike the std hasher.
    let hash = key.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    });
    Duration::from_millis(hash % range_ms)
}

/// Time between rounds and per-ping timeout for a batch: pings spread over 80% of the step.
pub fn round_timing(batch: &Batch, default_timeout: Duration) -> (Duration, Duration) {
    let step = Duration::from_secs(u64::from(batch.step));
    let timeout = default_timeout.min(step / 2);
    let explicit_ms = batch.orders.first().and_then(|o| o.probe.interval_ms());
    let interval = match explicit_ms {
        Some(ms) => Duration::from_millis(ms.max(1)),
        None => (step.mul_f64(0.8).saturating_sub(timeout) / batch.pings).max(Duration::from_millis(1)),
    };
    (interval, timeout)
}

/// Start of the next run of `batch` at or after `now` (wall clock), as (step start, run start).
pub fn next_run_after(batch: &Batch, now: SystemTime) -> (i64, SystemTime) {
    let step = i64::from(batch.step);
    let now_secs = unix_secs(now);
    let mut step_start = now_secs - now_secs.rem_euclid(step);
    loop {
        let start = UNIX_EPOCH + Duration::from_secs(step_start as u64) + batch.offset;
        if start >= now {
            return (step_start, start);
        }
        step_start += step;
    }
}

/// Runs batches on schedule until `shutdown` is set. Receives the full active order list on
/// `orders_rx` whenever it changes.
pub struct Scheduler {
    pub base: BaseDir,
    pub probes: ProbeSet,
    pub max_batch: usize,
    pub ping_timeout: Duration,
    pub guard: DiskGuard,
    pub stats: Arc<SchedulerStats>,
    /// Told the name of each snapshot published, so processing can start at once.
    pub published_tx: Option<crossbeam_channel::Sender<String>>,
}

/// What the probe-run threads share with the scheduling loop.
struct Shared {
    scheduler: Scheduler,
    /// The next snapshot sequence number.
    seq: AtomicU64,
    held: Mutex<Held>,
}

struct Due {
    batch: Arc<Batch>,
    step_start: i64,
    start: SystemTime,
}

impl Scheduler {
    /// The scheduling loop (run it on its own thread).
    pub fn run(self, orders_rx: crossbeam_channel::Receiver<Vec<Arc<Order>>>, shutdown: Arc<AtomicBool>) {
        let seq = first_seq(&self.base);
        debug!(
            first_seq = seq,
            "snapshot sequence numbers start above those still queued"
        );
        let this = Arc::new(Shared {
            scheduler: self,
            seq: AtomicU64::new(seq),
            held: Mutex::default(),
        });
        let mut schedule: Vec<Due> = Vec::new();
        while !shutdown.load(Ordering::Relaxed) {
            let wait = next_wait(&schedule);
            match orders_rx.recv_timeout(wait) {
                Ok(orders) => {
                    let count = orders.len();
                    schedule = plan_schedule(orders, this.scheduler.max_batch, SystemTime::now(), &schedule);
                    info!(orders = count, batches = schedule.len(), "schedule updated");
                    continue;
                }
                Err(crossbeam_channel::RecvTimeoutError::Disconnected) => break,
                Err(crossbeam_channel::RecvTimeoutError::Timeout) => {}
            }
            this.retry_held();
            let now = SystemTime::now();
            for due in schedule.iter_mut().filter(|d| d.start <= now) {
                let (next_step_start, next_start) = next_run_after(&due.batch, due.start + Duration::from_millis(1));
                let run = RunRequest {
                    batch: due.batch.clone(),
                    step_start: due.step_start,
                    start: due.start,
                    deadline: next_start,
                };
                due.step_start = next_step_start;
                due.start = next_start;
                this.launch(run);
            }
        }
        this.retry_held();
        let held = this.lock_held().snapshots.len();
        if held > 0 {
            warn!(
                held,
                "stopping with snapshots that could not be published: their results are lost"
            );
        }
        debug!("scheduler stopped");
    }
}

impl std::ops::Deref for Shared {
    type Target = Scheduler;
    fn deref(&self) -> &Scheduler {
        &self.scheduler
    }
}

impl Shared {
    fn launch(self: &Arc<Self>, run: RunRequest) {
        if let Some(reason) = self.suspension_reason() {
            self.stats.suspended_runs.fetch_add(1, Ordering::Relaxed);
            warn!(batch = %run.batch.key, "collection suspended: {reason}");
            self.stats.last_error.set(format!("collection suspended: {reason}"));
            return;
        }
        let late = SystemTime::now()
            .duration_since(run.start)
            .unwrap_or_default()
            .as_micros() as u64;
        self.stats.start_delay_micros.fetch_add(late, Ordering::Relaxed);
        self.stats.last_start_delay_micros.store(late, Ordering::Relaxed);
        let this = Arc::clone(self);
        let spawned = std::thread::Builder::new()
            .name("probe-run".into())
            .spawn(move || this.execute(run));
        if let Err(e) = spawned {
            warn!("cannot start a probe run thread: {e}");
        }
    }

    fn suspension_reason(&self) -> Option<String> {
        if let Some(reason) = self.held_reason() {
            return Some(reason);
        }
        self.guard
            .check(&self.base)
            .err()
            .map(|suspension| suspension.to_string())
    }

    /// Measures one batch run and publishes its snapshot (or holds it, see the module docs).
    fn execute(&self, run: RunRequest) {
        let results = measure(&self.probes, &run, self.ping_timeout);
        self.stats.runs.fetch_add(1, Ordering::Relaxed);
        self.stats
            .orders_measured
            .fetch_add(results.len() as u64, Ordering::Relaxed);
        // A failed order sent nothing: its pings are neither sent nor lost.
        let measured = || results.iter().filter(|r| r.failure.is_none());
        let sent = measured().map(|r| r.rtts.len() as u64).sum::<u64>();
        let lost = measured()
            .map(|r| r.rtts.iter().filter(|v| v.is_none()).count() as u64)
            .sum::<u64>();
        let unmeasured = results.iter().filter(|r| r.failure.is_some()).count() as u64;
        self.stats.pings_sent.fetch_add(sent, Ordering::Relaxed);
        self.stats.pings_lost.fetch_add(lost, Ordering::Relaxed);
        self.stats.orders_unmeasured.fetch_add(unmeasured, Ordering::Relaxed);
        let snapshot = HeldSnapshot {
            step_start: run.step_start,
            batch: run.batch.key.clone(),
            orders: results.len(),
            body: encode_ping(&run.batch.key, &results),
        };
        // Behind snapshots already held (or one being retried): keep the queue in order,
        // publish after them.
        let mut held = self.lock_held();
        if !held.snapshots.is_empty() || held.retrying {
            self.hold(&mut held, snapshot, None);
            return;
        }
        drop(held);
        if let Err((snapshot, e)) = self.publish(snapshot) {
            let mut held = self.lock_held();
            self.hold(&mut held, snapshot, Some(e));
        }
    }

    /// Publishes one snapshot under the next free sequence number; gives it back with the error
    /// when that fails for another reason than a taken name (or the name stays taken).
    fn publish(&self, snapshot: HeldSnapshot) -> Result<(), (HeldSnapshot, io::Error)> {
        let mut tries = 0;
        loop {
            let seq = self.seq.fetch_add(1, Ordering::Relaxed);
            let name = SnapshotName::new(snapshot.step_start, "ping", seq);
            match queue::publish(&self.base, &name, &[(PING_FILE, &snapshot.body)]) {
                Ok(_) => {
                    self.stats.snapshots_published.fetch_add(1, Ordering::Relaxed);
                    self.stats.last_error.succeeded();
                    debug!(snapshot = %name, orders = snapshot.orders, "published");
                    if let Some(tx) = &self.published_tx {
                        let _ = tx.send(name.to_string());
                    }
                    return Ok(());
                }
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists && tries + 1 < MAX_NAME_TRIES => {
                    tries += 1;
                    self.stats.name_collisions.fetch_add(1, Ordering::Relaxed);
                    warn!(snapshot = %name, batch = %snapshot.batch, "snapshot name taken, trying the next sequence number: {e}");
                }
                Err(e) => {
                    self.stats.publish_errors.fetch_add(1, Ordering::Relaxed);
                    return Err((
                        snapshot,
                        io::Error::new(e.kind(), format!("cannot publish snapshot {name}: {e}")),
                    ));
                }
            }
        }
    }

    /// Keeps `snapshot` for a later retry (dropping the oldest held one beyond the bounds) and
    /// records why collection is suspended.
    fn hold(&self, held: &mut Held, snapshot: HeldSnapshot, error: Option<io::Error>) {
        held.bytes += snapshot.body.len();
        held.snapshots.push_back(snapshot);
        while held.snapshots.len() > MAX_HELD_SNAPSHOTS || (held.bytes > MAX_HELD_BYTES && held.snapshots.len() > 1) {
            let Some(dropped) = held.snapshots.pop_front() else {
                break;
            };
            held.bytes -= dropped.body.len();
            self.stats.snapshots_lost.fetch_add(1, Ordering::Relaxed);
            warn!(
                batch = %dropped.batch,
                step = dropped.step_start,
                "too many snapshots waiting to be published: the oldest is dropped"
            );
        }
        self.stats
            .held_snapshots
            .store(held.snapshots.len() as u64, Ordering::Relaxed);
        if let Some(e) = error {
            let first = held.reason.is_none();
            let reason = format!("{e}; {} snapshot(s) kept in memory and retried", held.snapshots.len());
            if first {
                warn!("collection suspended: {reason}");
            } else {
                debug!("still cannot publish: {reason}");
            }
            self.stats.last_error.set(format!("collection suspended: {reason}"));
            held.reason = Some(e.to_string());
        }
    }

    /// Publishes the held snapshots, oldest first, until one fails again. Each is taken off the
    /// queue under the lock and published outside it (probe threads that finish and
    /// [`Shared::held_reason`] never wait for the fsyncs), and put back at the front if it
    /// fails; only one thread retries at a time.
    fn retry_held(&self) {
        let mut held = self.lock_held();
        if held.retrying || held.snapshots.is_empty() {
            return;
        }
        held.retrying = true;
        drop(held);
        // Cleared on every way out, a panic included, so retries never stop for good.
        struct Retrying<'a>(&'a Shared);
        impl Drop for Retrying<'_> {
            fn drop(&mut self) {
                self.0.lock_held().retrying = false;
            }
        }
        let _retrying = Retrying(self);
        loop {
            let mut held = self.lock_held();
            let Some(snapshot) = held.snapshots.pop_front() else {
                self.stats.held_snapshots.store(0, Ordering::Relaxed);
                if let Some(reason) = held.reason.take() {
                    info!("every held snapshot is published; collection resumes (it was suspended: {reason})");
                }
                return;
            };
            held.bytes -= snapshot.body.len();
            drop(held);
            if let Err((snapshot, e)) = self.publish(snapshot) {
                let mut held = self.lock_held();
                held.bytes += snapshot.body.len();
                held.snapshots.push_front(snapshot);
                self.stats
                    .held_snapshots
                    .store(held.snapshots.len() as u64, Ordering::Relaxed);
                let reason = format!("{e}; {} snapshot(s) kept in memory and retried", held.snapshots.len());
                debug!("still cannot publish: {reason}");
                self.stats.last_error.set(format!("collection suspended: {reason}"));
                held.reason = Some(e.to_string());
                return;
            }
        }
    }

    /// Why collection is suspended by held snapshots, if it is.
    fn held_reason(&self) -> Option<String> {
        let held = self.lock_held();
        let reason = held.reason.as_ref()?;
        Some(format!(
            "{reason}; {} snapshot(s) kept in memory and retried",
            held.snapshots.len()
        ))
    }

    fn lock_held(&self) -> std::sync::MutexGuard<'_, Held> {
        self.held.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// One run of one batch.
pub struct RunRequest {
    pub batch: Arc<Batch>,
    /// Start of the step the run belongs to (unix seconds).
    pub step_start: i64,
    pub start: SystemTime,
    pub deadline: SystemTime,
}

/// Runs the batch's probe and turns the RTTs into one result per order.
pub fn measure(probes: &ProbeSet, run: &RunRequest, ping_timeout: Duration) -> Vec<OrderResult> {
    let batch = &run.batch;
    let (interval, timeout) = round_timing(batch, ping_timeout);
    let now_wall = SystemTime::now();
    let now = Instant::now();
    let to_instant = |t: SystemTime| match t.duration_since(now_wall) {
        Ok(ahead) => now + ahead,
        Err(_) => now,
    };
    let plan = RunPlan {
        pings: batch.pings,
        interval,
        timeout,
        start: to_instant(run.start),
        deadline: to_instant(run.deadline),
    };
    let specs: Vec<&ProbeSpec> = batch.orders.iter().map(|o| &o.probe).collect();
    let Some(first) = specs.first() else { return Vec::new() };
    let mut outcomes = probes.for_spec(first).run(&specs, &plan);
    outcomes.resize_with(batch.orders.len(), || {
        Err(ProbeFailure::new("the probe returned no result for this order"))
    });
    let updated = unix_secs(SystemTime::now());
    batch
        .orders
        .iter()
        .zip(outcomes)
        .map(|(order, outcome)| {
            let (mut rtts, failure) = match outcome {
                Ok(rtts) => (rtts, None),
                Err(failure) => (Vec::new(), Some(failure.reason().to_owned())),
            };
            rtts.resize(order.pings as usize, None);
            drop_implausible(&mut rtts);
            OrderResult {
                id: order.id.clone(),
                time: run.step_start,
                updated,
                step: order.step,
                pings: order.pings,
                template: order.rrd_template,
                rtts,
                telegraf: order.telegraf.clone(),
                failure,
                origin: None,
            }
        })
        .collect()
}

/// The new schedule for `orders`. A batch that existed before keeps its next run time, so a
/// change arriving just as a run is due never skips that run.
fn plan_schedule(orders: Vec<Arc<Order>>, max_batch: usize, now: SystemTime, previous: &[Due]) -> Vec<Due> {
    let known: std::collections::HashMap<&str, (i64, SystemTime)> = previous
        .iter()
        .map(|d| (d.batch.key.as_str(), (d.step_start, d.start)))
        .collect();
    make_batches(orders, max_batch)
        .into_iter()
        .map(|batch| {
            let (step_start, start) = known
                .get(batch.key.as_str())
                .copied()
                .unwrap_or_else(|| next_run_after(&batch, now));
            Due {
                batch: Arc::new(batch),
                step_start,
                start,
            }
        })
        .collect()
}

fn next_wait(schedule: &[Due]) -> Duration {
    let now = SystemTime::now();
    schedule
        .iter()
        .map(|d| d.start.duration_since(now).unwrap_or(Duration::ZERO))
        .min()
        .unwrap_or(Duration::from_secs(1))
        .min(Duration::from_secs(1))
}

/// An answer no RRD can hold (an exec command printing `time=200000 ms`, a negative or
/// non-finite time) is a lost ping: processing refuses a snapshot with such a value, which would
/// lose the whole batch for one command's output.
fn drop_implausible(rtts: &mut [Option<f64>]) {
    for rtt in rtts.iter_mut() {
        if rtt.is_some_and(|seconds| !(0.0..=crate::spool::snapshot::MAX_RTT).contains(&seconds)) {
            *rtt = None;
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn answers_no_rrd_can_hold_become_lost_pings() {
        let mut rtts = vec![Some(0.001), Some(200.0), Some(-1.0), Some(f64::NAN), None, Some(180.0)];
        super::drop_implausible(&mut rtts);
        assert_eq!(rtts[..2], [Some(0.001), None]);
        assert_eq!(rtts[2..5], [None, None, None]);
        assert_eq!(rtts[5], Some(180.0));
    }

    use super::*;
    use crate::orders::order::{FpingSpec, TcpSpec};
    use crate::shared::measurement::{OrderId, RrdTemplate};

    fn fping_order(id: &str, step: u32, pings: u32, host: &str) -> Order {
        Order {
            id: OrderId::new(id).unwrap(),
            user: "test".into(),
            task: None,
            step,
            pings,
            rrd_template: RrdTemplate::Smokeping,
            probe: ProbeSpec::Fping(FpingSpec {
                host: host.into(),
                address: host.parse().unwrap(),
                source_ip: None,
                interface: None,
                interval_ms: None,
            }),
            telegraf: None,
            expire: crate::orders::order::Expiry::Timeout,
            alert: Default::default(),
        }
    }

    struct Silent;
    impl Probe for Silent {
        fn run(&self, targets: &[&ProbeSpec], plan: &RunPlan) -> Vec<super::super::Outcome> {
            vec![Ok(vec![None; plan.pings as usize]); targets.len()]
        }
    }

    /// Cannot measure the first target, measures the rest.
    struct Broken;
    impl Probe for Broken {
        fn run(&self, targets: &[&ProbeSpec], plan: &RunPlan) -> Vec<super::super::Outcome> {
            (0..targets.len())
                .map(|i| match i {
                    0 => Err(ProbeFailure::new("cannot run /nonexistent:\nNo such file")),
                    _ => Ok(vec![Some(0.001); plan.pings as usize]),
                })
                .collect()
        }
    }

    #[test]
    fn a_target_the_probe_cannot_measure_gets_unknown_pings_and_the_reason_and_counts_no_loss() {
        let tmp = tempfile::tempdir().unwrap();
        let base = BaseDir::new(tmp.path());
        base.create_all().unwrap();
        let mut shared = shared(&base);
        let broken: Arc<dyn Probe> = Arc::new(Broken);
        shared.scheduler.probes.icmp = broken;
        let orders = vec![
            fping_order("a", 20, 2, "127.0.0.1"),
            fping_order("b", 20, 2, "127.0.0.2"),
        ];
        let run = RunRequest {
            batch: Arc::new(make_batches(orders.into_iter().map(Arc::new).collect(), 10).remove(0)),
            step_start: 100,
            start: SystemTime::now(),
            deadline: SystemTime::now() + Duration::from_secs(5),
        };
        let results = measure(&shared.probes, &run, shared.ping_timeout);
        assert_eq!(
            results[0].failure.as_deref(),
            Some("cannot run /nonexistent: No such file")
        );
        assert_eq!(results[0].rtts, vec![None, None]);
        assert_eq!((results[1].failure.as_deref(), results[1].rtts.len()), (None, 2));
        shared.execute(run);
        let stats = &shared.stats;
        assert_eq!(stats.orders_measured.load(Ordering::Relaxed), 2);
        assert_eq!(stats.orders_unmeasured.load(Ordering::Relaxed), 1);
        assert_eq!(stats.pings_sent.load(Ordering::Relaxed), 2, "only b's pings went out");
        assert_eq!(stats.pings_lost.load(Ordering::Relaxed), 0);
    }

    fn shared(base: &BaseDir) -> Shared {
        let silent: Arc<dyn Probe> = Arc::new(Silent);
        Shared {
            scheduler: Scheduler {
                base: base.clone(),
                probes: ProbeSet {
                    icmp: silent.clone(),
                    http: silent.clone(),
                    tcp: silent.clone(),
                    exec: silent,
                },
                max_batch: 10,
                ping_timeout: Duration::from_secs(1),
                guard: DiskGuard {
                    queue_size: 1000,
                    min_free_bytes: 0,
                },
                stats: Arc::default(),
                published_tx: None,
            },
            seq: AtomicU64::new(first_seq(base)),
            held: Mutex::default(),
        }
    }

    fn snapshot(step_start: i64) -> HeldSnapshot {
        HeldSnapshot {
            step_start,
            batch: "test".into(),
            orders: 0,
            body: encode_ping("test", &[]),
        }
    }

    fn names(base: &BaseDir) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(base.incoming())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn sequence_numbers_start_above_the_queued_ping_snapshots_and_taken_names_are_skipped() {
        let tmp = tempfile::tempdir().unwrap();
        let base = BaseDir::new(tmp.path());
        base.create_all().unwrap();
        for name in [
            "100-ping-000000007",
            "100-ping-000000003",
            "90-pull-000000050",
            "100-ping-999999999",
            "100",
        ] {
            std::fs::create_dir(base.incoming().join(name)).unwrap();
        }
        assert_eq!(
            first_seq(&base),
            8,
            "above 7; the planted 10-digit-bound seq is ignored"
        );
        let shared = shared(&base);
        // Names the next two sequence numbers would take are planted after start.
        for name in ["100-ping-000000008", "100-ping-000000009"] {
            std::fs::create_dir(base.incoming().join(name)).unwrap();
        }
        assert!(shared.publish(snapshot(100)).is_ok());
        assert_eq!(shared.stats.name_collisions.load(Ordering::Relaxed), 2);
        assert!(
            names(&base).contains(&"100-ping-000000010".to_string()),
            "{:?}",
            names(&base)
        );
        let planted = std::fs::read_dir(base.incoming().join("100-ping-000000008"))
            .unwrap()
            .count();
        assert_eq!(planted, 0, "a taken name is never written into");
    }

    #[test]
    fn snapshots_that_cannot_be_published_are_held_suspend_collection_and_follow_in_order() {
        let tmp = tempfile::tempdir().unwrap();
        let base = BaseDir::new(tmp.path());
        base.create_all().unwrap();
        let shared = shared(&base);
        // incoming.tmp/ replaced by a file: every publish fails (not a taken name).
        std::fs::remove_dir(base.incoming_tmp()).unwrap();
        std::fs::write(base.incoming_tmp(), b"").unwrap();
        for step in [100, 120] {
            let run = RunRequest {
                batch: Arc::new(make_batches(vec![Arc::new(fping_order("a", 20, 1, "127.0.0.1"))], 10).remove(0)),
                step_start: step,
                start: SystemTime::now(),
                deadline: SystemTime::now(),
            };
            shared.execute(run);
        }
        assert_eq!(shared.stats.held_snapshots.load(Ordering::Relaxed), 2);
        let reason = shared.suspension_reason().expect("suspended");
        assert!(
            reason.contains("cannot publish snapshot 100-ping-") && reason.contains("2 snapshot(s) kept"),
            "{reason}"
        );
        shared.retry_held();
        assert_eq!(shared.stats.held_snapshots.load(Ordering::Relaxed), 2, "still failing");
        assert_eq!(shared.stats.orders_measured.load(Ordering::Relaxed), 2);
        let noted = shared.stats.last_error.get().expect("the suspension is noted").message;
        assert!(noted.starts_with("collection suspended"), "{noted}");
        std::fs::remove_file(base.incoming_tmp()).unwrap();
        std::fs::create_dir(base.incoming_tmp()).unwrap();
        shared.retry_held();
        assert_eq!(shared.stats.held_snapshots.load(Ordering::Relaxed), 0);
        assert_eq!(shared.suspension_reason(), None);
        assert_eq!(shared.stats.last_error.get(), None, "publishing works again");
        let published = names(&base);
        assert_eq!(published.len(), 2, "{published:?}");
        assert!(published[0].starts_with("100-ping-") && published[1].starts_with("120-ping-"));
        assert_eq!(shared.stats.snapshots_lost.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn held_snapshots_are_published_outside_the_lock_and_a_run_finishing_meanwhile_follows_them() {
        let tmp = tempfile::tempdir().unwrap();
        let base = BaseDir::new(tmp.path());
        base.create_all().unwrap();
        // Every publish then waits for the test to take its name: a publish that never ends.
        let (tx, rx) = crossbeam_channel::bounded(0);
        let mut shared = shared(&base);
        shared.scheduler.published_tx = Some(tx);
        let shared = Arc::new(shared);
        let run = |step| RunRequest {
            batch: Arc::new(make_batches(vec![Arc::new(fping_order("a", 20, 1, "127.0.0.1"))], 10).remove(0)),
            step_start: step,
            start: SystemTime::now(),
            deadline: SystemTime::now(),
        };
        std::fs::remove_dir(base.incoming_tmp()).unwrap();
        std::fs::write(base.incoming_tmp(), b"").unwrap();
        for step in [100, 120] {
            shared.execute(run(step));
        }
        assert_eq!(shared.stats.held_snapshots.load(Ordering::Relaxed), 2);
        std::fs::remove_file(base.incoming_tmp()).unwrap();
        std::fs::create_dir(base.incoming_tmp()).unwrap();
        let retrier = {
            let shared = Arc::clone(&shared);
            std::thread::spawn(move || shared.retry_held())
        };
        // The first held snapshot is in incoming/: the retrier now waits inside its publish.
        let mut polls = 0;
        while names(&base).is_empty() {
            polls += 1;
            assert!(polls < 100_000, "the retry never published");
            std::thread::sleep(Duration::from_millis(1));
        }
        let free = shared.held.try_lock().is_ok();
        if !free {
            drop(rx); // let the retrier finish before failing
            panic!("the held snapshots stay locked while one is published");
        }
        assert!(shared.held_reason().is_some(), "still suspended while the retry runs");
        shared.retry_held(); // a second retrier leaves it to the first
        shared.execute(run(140)); // a run finishing meanwhile queues behind the held ones
        let taken: Vec<String> = (0..3).map(|_| rx.recv().unwrap()).collect();
        retrier.join().unwrap();
        assert!(
            taken[0].starts_with("100-ping-") && taken[1].starts_with("120-ping-") && taken[2].starts_with("140-ping-"),
            "{taken:?}"
        );
        assert_eq!(names(&base).len(), 3);
        assert_eq!(shared.stats.held_snapshots.load(Ordering::Relaxed), 0);
        assert_eq!(shared.held_reason(), None);
    }

    #[test]
    fn orders_with_same_probe_step_and_pings_share_a_batch() {
        let mut orders: Vec<Order> = (0..5)
            .map(|i| fping_order(&format!("a/{i}"), 20, 3, "127.0.0.1"))
            .collect();
        orders.push(fping_order("b", 60, 3, "127.0.0.1"));
        orders.push(fping_order("c", 20, 5, "127.0.0.1"));
        let tcp = Order {
            probe: ProbeSpec::Tcp(TcpSpec {
                host: "127.0.0.1".into(),
                port: 22,
                address: "127.0.0.1:22".parse().unwrap(),
                source_ip: None,
                interval_ms: None,
            }),
            ..fping_order("d", 20, 3, "127.0.0.1")
        };
        orders.push(tcp);
        let batches = make_batches(orders.into_iter().map(Arc::new).collect(), 2);
        let sizes: Vec<(String, usize)> = batches.iter().map(|b| (b.key.clone(), b.orders.len())).collect();
        // 5 orders of one kind in chunks of 2, plus three singletons.
        assert_eq!(batches.len(), 6, "{sizes:?}");
        assert_eq!(batches.iter().map(|b| b.orders.len()).sum::<usize>(), 8);
        assert!(batches
            .iter()
            .all(|b| b.orders.iter().all(|o| o.step == b.step && o.pings == b.pings)));
    }

    #[test]
    fn batches_hold_exactly_their_own_orders_in_id_order() {
        let orders: Vec<Order> = (0..2_500)
            .map(|i| fping_order(&format!("o{i:05}"), 20, 3, "127.0.0.1"))
            .collect();
        let batches = make_batches(orders.into_iter().map(Arc::new).collect(), 1000);
        assert_eq!(
            batches.iter().map(|b| b.orders.len()).collect::<Vec<_>>(),
            [1000, 1000, 500]
        );
        for batch in &batches {
            // No chunk may keep the allocation of the whole group alive.
            assert_eq!(batch.orders.capacity(), batch.orders.len(), "{}", batch.key);
            assert!(batch.orders.windows(2).all(|w| w[0].id < w[1].id));
        }
        assert_eq!(batches[1].orders[0].id.as_str(), "o01000");
    }

    #[test]
    fn offsets_are_stable_and_inside_the_first_part_of_the_step() {
        for (step, pings) in [(20, 3), (60, 20), (1, 1), (300, 20), (3600, 5)] {
            for i in 0..50 {
                let key = format!("fping step={step} pings={pings}#{i}");
                let offset = stable_offset(&key, step, pings);
                assert_eq!(offset, stable_offset(&key, step, pings));
                let limit = Duration::from_millis(u64::from(step) * 1000 / (u64::from(pings) + 1));
                assert!(offset < limit.max(Duration::from_millis(1)), "{offset:?} for {key}");
                assert!(offset <= Duration::from_secs(u64::from(step)) / 5);
            }
        }
    }

    #[test]
    fn next_run_is_at_step_start_plus_offset_and_never_in_the_past() {
        let mut batch = make_batches(vec![Arc::new(fping_order("a", 20, 3, "127.0.0.1"))], 10).remove(0);
        batch.offset = Duration::from_secs(3);
        let at = |s: u64| UNIX_EPOCH + Duration::from_secs(s);
        assert_eq!(
            next_run_after(&batch, at(1_000_000_000)),
            (1_000_000_000, at(1_000_000_003))
        );
        assert_eq!(
            next_run_after(&batch, at(1_000_000_003)),
            (1_000_000_000, at(1_000_000_003))
        );
        assert_eq!(
            next_run_after(&batch, at(1_000_000_004)),
            (1_000_000_020, at(1_000_000_023))
        );
    }

    #[test]
    fn pings_are_spread_over_most_of_the_step() {
        let batch = make_batches(vec![Arc::new(fping_order("a", 20, 3, "127.0.0.1"))], 10).remove(0);
        let (interval, timeout) = round_timing(&batch, Duration::from_secs(3));
        assert_eq!(timeout, Duration::from_secs(3));
        let last_answer_by = interval * 2 + timeout;
        assert!(last_answer_by <= Duration::from_secs(16), "{interval:?}");
        let tiny = make_batches(vec![Arc::new(fping_order("a", 1, 5, "127.0.0.1"))], 10).remove(0);
        let (interval, timeout) = round_timing(&tiny, Duration::from_secs(3));
        assert!(timeout <= Duration::from_millis(500));
        assert!(interval >= Duration::from_millis(1));
    }
}
