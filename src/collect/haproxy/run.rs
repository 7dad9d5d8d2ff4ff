//! The pull loop: a cycle at every wall-clock multiple of `pull-interval`, skipped while the
//! queue is full or the disk nearly so, until the shutdown flag is set.
//!
//! Every wait (for the next slot, while suspended, during a cycle) checks the flag at least every
//! [`SHUTDOWN_POLL`], so SIGTERM/SIGHUP (which set it) take effect within a second in any state.

use super::cycle::{ensure_queue_dirs, pull_cycle_until, PullError};
use super::options::PullOptions;
use crate::shared::clock::unix_millis;
use crate::spool::guard::DiskGuard;
use crate::spool::BaseDir;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tracing::{error, info, warn};

/// Longest sleep between two checks of the shutdown flag.
pub const SHUTDOWN_POLL: Duration = Duration::from_millis(200);

/// Counters of the pull loop (for status and self-metrics).
#[derive(Debug, Default)]
pub struct PullStats {
    /// Cycles begun (not counting suspended slots).
    pub cycles_started: AtomicU64,
    pub snapshots_published: AtomicU64,
    /// Cycles that published nothing because a source failed (see the log for which).
    pub failed_cycles: AtomicU64,
    /// Slots skipped because `incoming/` was full or free space low.
    pub suspended_cycles: AtomicU64,
    /// Cycles that published nothing because their snapshot name was taken.
    pub name_collisions: AtomicU64,
    /// Slots that passed while a cycle overran.
    pub missed_slots: AtomicU64,
    /// Bytes of every published reply.
    pub bytes_pulled: AtomicU64,
    /// Wall and CPU time of the last published cycle, microseconds.
    pub last_cycle_wall_us: AtomicU64,
    pub last_cycle_cpu_us: AtomicU64,
    /// CPU time of every published cycle together, microseconds.
    pub cycle_cpu_us: AtomicU64,
    /// The latest failed cycle or suspension (for `spoolmon status`).
    pub last_error: crate::shared::last_error::LastError,
}

/// Pulls on schedule until `shutdown` is set (run it on its own thread). `options` must have
/// passed [`PullOptions::validate`]. `tick` is called at least every [`SHUTDOWN_POLL`] while
/// waiting and around every cycle (the liveness signal of `spoolmon pull`: heartbeat, watchdog).
pub fn run_pull(
    base: &BaseDir,
    options: &PullOptions,
    shutdown: Arc<AtomicBool>,
    stats: Arc<PullStats>,
    tick: &mut dyn FnMut(),
) {
    info!(
        pull_interval = options.pull_interval,
        pull_timeout = options.pull_timeout,
        "pulling HAProxy statistics"
    );
    let interval = options.cycle_interval();
    let mut last_slot = None;
    loop {
        let (slot, missed) = next_slot(SystemTime::now(), interval, last_slot);
        if missed > 0 {
            stats.missed_slots.fetch_add(missed, Ordering::Relaxed);
            warn!(missed, "the last cycle overran pull-interval: slots skipped");
        }
        if !sleep_until(slot, &shutdown, tick) {
            break;
        }
        last_slot = Some(slot);
        if let Some(reason) = suspension_reason(base, options) {
            stats.suspended_cycles.fetch_add(1, Ordering::Relaxed);
            warn!("pulling suspended: {reason}");
            stats.last_error.set(format!("pulling suspended: {reason}"));
            continue;
        }
        stats.cycles_started.fetch_add(1, Ordering::Relaxed);
        record(base, pull_cycle_until(base, options, &shutdown), &stats);
    }
    info!("pull stopped");
}

fn record(base: &BaseDir, result: Result<super::CycleReport, PullError>, stats: &PullStats) {
    match result {
        Ok(report) => {
            crate::spool::state::write_last_published(base, &report.snapshot);
            let micros = |d: Duration| d.as_micros().min(u128::from(u64::MAX)) as u64;
            stats.snapshots_published.fetch_add(1, Ordering::Relaxed);
            stats.bytes_pulled.fetch_add(report.bytes, Ordering::Relaxed);
            stats.last_cycle_wall_us.store(micros(report.wall), Ordering::Relaxed);
            stats.last_cycle_cpu_us.store(micros(report.cpu), Ordering::Relaxed);
            stats.cycle_cpu_us.fetch_add(micros(report.cpu), Ordering::Relaxed);
            stats.last_error.succeeded();
        }
        Err(PullError::Cancelled) => info!("{}", PullError::Cancelled),
        Err(PullError::SnapshotExists(name)) => {
            stats.name_collisions.fetch_add(1, Ordering::Relaxed);
            let error = PullError::SnapshotExists(name.clone());
            warn!(snapshot = %name, "{error}");
            stats.last_error.set(error.to_string());
        }
        Err(e) => {
            stats.failed_cycles.fetch_add(1, Ordering::Relaxed);
            error!("pull cycle failed: {e}");
            stats.last_error.set(format!("pull cycle failed: {e}"));
        }
    }
}

/// The first wall-clock multiple of `interval` at or after `now` and after `last` (the slot of
/// the previous cycle), with the number of slots between the two that were missed.
pub fn next_slot(now: SystemTime, interval: Duration, last: Option<SystemTime>) -> (SystemTime, u64) {
    let interval_ms = interval.as_millis().max(1);
    let now_ms = u128::from(unix_millis(now));
    let mut slot_ms = now_ms.div_ceil(interval_ms) * interval_ms;
    let mut missed = 0;
    if let Some(last) = last {
        let last_ms = u128::from(unix_millis(last));
        slot_ms = slot_ms.max(last_ms + interval_ms);
        missed = ((slot_ms - last_ms) / interval_ms).saturating_sub(1) as u64;
    }
    (UNIX_EPOCH + Duration::from_millis(slot_ms as u64), missed)
}

/// Sleeps until the wall clock reaches `until`, in slices of [`SHUTDOWN_POLL`], calling `tick`
/// before each; false if `shutdown` was set first. The clock is re-read every slice, so a step
/// of the clock is followed.
pub fn sleep_until(until: SystemTime, shutdown: &AtomicBool, tick: &mut dyn FnMut()) -> bool {
    loop {
        tick();
        if shutdown.load(Ordering::Relaxed) {
            return false;
        }
        match until.duration_since(SystemTime::now()) {
            Ok(left) if !left.is_zero() => std::thread::sleep(left.min(SHUTDOWN_POLL)),
            _ => return true,
        }
    }
}

/// Why this slot must be skipped (invariant 6), if it must.
fn suspension_reason(base: &BaseDir, options: &PullOptions) -> Option<String> {
    if let Err(e) = ensure_queue_dirs(base) {
        return Some(format!("cannot create incoming/: {e}"));
    }
    DiskGuard::new(options.queue_size, options.min_free_space_mb)
        .check(base)
        .err()
        .map(|suspension| suspension.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_published_cycle_clears_the_last_error_and_a_failed_one_sets_it() {
        let dir = tempfile::tempdir().unwrap();
        let base = BaseDir::new(dir.path());
        base.create_all().unwrap();
        let stats = PullStats::default();
        record(&base, Err(PullError::NoSources), &stats);
        assert!(stats.last_error.get().unwrap().message.starts_with("pull cycle failed"));
        let report = super::super::CycleReport {
            snapshot: "1700000000".into(),
            path: dir.path().join("incoming/1700000000"),
            sources: 1,
            bytes: 10,
            retries: 0,
            wall: Duration::from_millis(5),
            cpu: Duration::from_millis(1),
        };
        record(&base, Ok(report), &stats);
        assert_eq!(stats.last_error.get(), None);
        assert_eq!(stats.snapshots_published.load(Ordering::Relaxed), 1);
        record(&base, Err(PullError::NoSources), &stats);
        assert!(stats.last_error.get().is_some());
    }

    fn at_ms(ms: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_millis(ms)
    }

    #[test]
    fn slots_are_wall_clock_multiples_of_the_interval() {
        let ten = Duration::from_secs(10);
        assert_eq!(
            next_slot(at_ms(1_700_000_003_500), ten, None),
            (at_ms(1_700_000_010_000), 0)
        );
        assert_eq!(
            next_slot(at_ms(1_700_000_010_000), ten, None),
            (at_ms(1_700_000_010_000), 0)
        );
        assert_eq!(
            next_slot(at_ms(1_700_000_010_001), ten, None),
            (at_ms(1_700_000_020_000), 0)
        );
    }

    #[test]
    fn a_quick_cycle_never_reruns_its_slot_and_an_overrun_skips_slots() {
        let ten = Duration::from_secs(10);
        let slot = at_ms(1_700_000_010_000);
        // Finished within the same millisecond: the next slot is still the next multiple.
        assert_eq!(next_slot(slot, ten, Some(slot)), (at_ms(1_700_000_020_000), 0));
        assert_eq!(
            next_slot(at_ms(1_700_000_012_000), ten, Some(slot)),
            (at_ms(1_700_000_020_000), 0)
        );
        // Overran past two slots (20 and 30): they are skipped and counted.
        assert_eq!(
            next_slot(at_ms(1_700_000_035_000), ten, Some(slot)),
            (at_ms(1_700_000_040_000), 2)
        );
    }

    #[test]
    fn sleeping_ends_at_once_when_shutdown_is_set() {
        let shutdown = AtomicBool::new(true);
        let far = SystemTime::now() + Duration::from_secs(3600);
        let mut ticks = 0;
        assert!(!sleep_until(far, &shutdown, &mut || ticks += 1));
        assert!(sleep_until(SystemTime::now(), &AtomicBool::new(false), &mut || {
            ticks += 1
        }));
        assert_eq!(ticks, 2, "one tick per slice");
    }
}
