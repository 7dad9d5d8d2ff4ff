//! Processing: snapshots in `incoming/` become RRD updates, `last_result` files and sink input.
//!
//! One processing thread owns the queue. Each round it lists `incoming/` oldest first, reads every
//! snapshot (HAProxy's on several threads), groups the results by order and applies each order's
//! results in time order (one librrd call per order per round), one order after the other on the
//! processing thread (parallel small-file writes contend in ext4's journal; invariant 3 holds
//! trivially). Then it hands the results to the sinks, flushes the filesystem once
//! (`syncfs`) and only then removes the snapshots (invariant 2). A snapshot that is itself wrong
//! (unreadable, malformed, a result out of bounds) goes to `failed/` with a `REASON` at once; an
//! order whose output cannot be written fails alone (listed in `state/output-errors.json`); a
//! transient fault (disk full) keeps the snapshots in `incoming/`, retried after
//! [`round::RETRY_EVERY`] (backing off) without ever quarantining them (see [`round`]).
//!
//! Order lifecycle (archive on removal, restore on re-appearance) also runs on this thread, so
//! results of runs still in flight for a removed order never re-create its `output/` directory.

pub mod children;
pub mod handoff;
pub mod haproxy;
pub mod latency;
pub mod round;

pub use round::{Lifecycle, ProcessStats, Processor, ResultLimits, RoundReport};

use crate::spool::watch::DirWatcher;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tracing::warn;

/// How the processing loop paces itself.
#[derive(Clone, Debug)]
pub struct LoopTiming {
    /// Full rescan of `incoming/` at least this often, whatever inotify says.
    pub rescan: Duration,
    /// Let snapshots wait up to this long to batch several steps per RRD update (0 = never wait).
    pub flush_interval: Duration,
}

/// Runs processing until `shutdown` is set: watch `incoming/` first, then scan (invariant 5).
/// New snapshots are applied as they arrive; their RRD updates are batched up to
/// `flush_interval` (the snapshots stay in `incoming/`, marked applied, as the journal).
/// `commands` carries order lifecycle changes; `wake` is told of snapshots published in-process.
/// `tick` is called before every round and at least every 200 ms while waiting (the liveness
/// signal of `spoolmon process`: heartbeat and watchdog).
pub fn run_loop(
    mut processor: Processor,
    commands: crossbeam_channel::Receiver<Lifecycle>,
    wake: crossbeam_channel::Receiver<String>,
    shutdown: Arc<AtomicBool>,
    timing: LoopTiming,
    tick: &mut dyn FnMut(),
) {
    let mut watcher = match DirWatcher::new(&processor.base().incoming(), false) {
        Ok(w) => Some(w),
        Err(e) => {
            warn!("cannot watch incoming/, falling back to polling every second: {e}");
            None
        }
    };
    // `None` until the first round (Instant::now() - rescan would panic shortly after boot).
    let mut last_round: Option<Instant> = None;
    let mut pending = true;
    loop {
        tick();
        for command in commands.try_iter() {
            processor.handle(command);
        }
        processor.sweep_children();
        let stopping = shutdown.load(Ordering::Relaxed);
        let since_last = last_round.map(|t| t.elapsed());
        let rescan_due = since_last.is_none_or(|d| d >= timing.rescan);
        // Snapshots left for an RRD flush are flushed when the oldest is due; at most once a
        // second, so a snapshot that keeps failing is retried at a sane pace.
        let flush_waiting = !timing.flush_interval.is_zero()
            && processor.flush_due(timing.flush_interval)
            && since_last.is_none_or(|d| d >= Duration::from_secs(1));
        // Snapshots kept back (disk full, a sink refused) are retried at their own pace.
        let retry_waiting = processor
            .retry_due()
            .is_some_and(|delay| since_last.is_none_or(|d| d >= delay));
        if pending || rescan_due || flush_waiting || retry_waiting || stopping {
            let flush_rrd = stopping || processor.flush_due(timing.flush_interval);
            pending = match processor.process_pending(flush_rrd) {
                Ok(report) => {
                    if report.ping_bytes >= TRIM_AFTER_PING_BYTES {
                        give_back_free_memory();
                    }
                    report.deferred
                }
                Err(e) => {
                    warn!("processing round failed: {e}");
                    processor.note_error(format!("processing round failed: {e}"));
                    false
                }
            };
            last_round = Some(Instant::now());
        }
        if stopping {
            break;
        }
        pending |= wait_for_work(watcher.as_mut(), &wake);
    }
}

/// After a round that read this many bytes of ping files (a few thousand results), the memory
/// it freed is given back to the system.
const TRIM_AFTER_PING_BYTES: u64 = 1 << 20;

/// Returns the free pages of every malloc arena to the system (glibc's `malloc_trim`). A round's
/// results are allocated on processing's threads and freed at its end, but glibc keeps freed
/// memory in the arena of the thread that used it, where the probe threads (other arenas) never
/// reuse it: at 100,000 orders that held ~45 MB (BENCHMARKS.md, issue 12). A trim costs a
/// walk of the free lists and the page faults of the next round's first touch; rounds that
/// read little (one snapshot of 1,000 results, HAProxy) do not trim.
fn give_back_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only walks and releases glibc's own free memory; it takes the arenas'
    // locks like any malloc call.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Blocks up to 200 ms; true when something arrived in `incoming/`.
fn wait_for_work(watcher: Option<&mut DirWatcher>, wake: &crossbeam_channel::Receiver<String>) -> bool {
    let woken = wake.try_iter().count() > 0;
    let timeout = Duration::from_millis(200);
    let changed = match watcher {
        Some(w) => match w.wait(timeout) {
            Ok(events) => !events.is_empty(),
            Err(e) => {
                warn!("watching incoming/ failed: {e}");
                true
            }
        },
        None => {
            std::thread::sleep(timeout);
            true
        }
    };
    woken || changed
}
