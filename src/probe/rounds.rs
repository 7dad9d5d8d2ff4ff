//! Round pacing for probes that measure one ping at a time per target (HTTP, TCP).
//!
//! [`run_rounds`] calls a blocking `ping` function `plan.pings` times per target on a bounded
//! pool of worker threads. Round `i` of a target is due at `plan.start + i * plan.interval`.
//!
//! Invariants:
//! - A target never has two pings in flight: round `i + 1` starts only after round `i` ended.
//!   If a ping ends after the next round was due (a slow target), the next round starts at once,
//!   late, like httping does; other targets keep their own schedule on the other workers.
//! - Every ping gets `min(plan.timeout, plan.deadline - now)` as its time budget, and no ping
//!   starts at or after `plan.deadline`: those rounds are lost (`None`).
//! - The result has one entry per target with exactly `plan.pings` entries; a target whose every
//!   attempted ping could not be sent ([`Ping::NotSent`]: a name that does not resolve, a socket
//!   or source address refused locally) is a failure with the first reason instead. A target with
//!   at least one ping sent is measured, and its unsent pings are lost.
//!
//! Owns nothing on disk.

use super::{Outcome, ProbeFailure, Rtts, RunPlan};
use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::{Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

/// One ping waiting to be sent: when, to which target, which round.
type Job = Reverse<(Instant, usize, u32)>;

/// What one ping came to.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Ping {
    /// Answered after this many seconds.
    Answered(f64),
    /// Sent (a request, a connection attempt) and not answered in time: the target's doing.
    Lost,
    /// Could not be sent at all, for a reason on the measuring side.
    NotSent(ProbeFailure),
}

/// What the workers share.
struct Schedule {
    /// Due pings, earliest first. Each unfinished target has exactly one job here or in flight.
    due: BinaryHeap<Job>,
    /// Targets that still have rounds to run.
    unfinished: usize,
    results: Vec<Rtts>,
    /// Per target: a ping was sent (answered or lost).
    sent: Vec<bool>,
    /// Per target: why its first unsent ping could not be sent.
    unsent: Vec<Option<ProbeFailure>>,
}

/// Runs `ping(target, budget)` for every target and round of `plan` on at most `max_workers`
/// threads and returns each target's RTTs, or its failure when none of its pings could be sent.
/// `ping` must give up within `budget`.
pub(crate) fn run_rounds<F>(targets: usize, plan: &RunPlan, max_workers: usize, ping: F) -> Vec<Outcome>
where
    F: Fn(usize, Duration) -> Ping + Sync,
{
    let pings = plan.pings as usize;
    let mut schedule = Schedule {
        due: BinaryHeap::with_capacity(targets),
        unfinished: 0,
        results: vec![vec![None; pings]; targets],
        sent: vec![false; targets],
        unsent: vec![None; targets],
    };
    if pings > 0 {
        for target in 0..targets {
            schedule.due.push(Reverse((plan.start, target, 0)));
        }
        schedule.unfinished = targets;
    }
    let shared = (Mutex::new(schedule), Condvar::new());
    let workers = max_workers.clamp(1, targets.max(1));
    std::thread::scope(|scope| {
        for _ in 0..workers {
            scope.spawn(|| work(&shared, plan, &ping));
        }
    });
    let (schedule, _) = shared;
    let schedule = schedule.into_inner().unwrap_or_else(PoisonError::into_inner);
    schedule
        .results
        .into_iter()
        .zip(schedule.sent)
        .zip(schedule.unsent)
        .map(|((rtts, sent), unsent)| match unsent {
            Some(failure) if !sent => Err(failure),
            _ => Ok(rtts),
        })
        .collect()
}

/// One worker: take the earliest due job, wait for its time, ping, schedule the next round.
fn work<F>(shared: &(Mutex<Schedule>, Condvar), plan: &RunPlan, ping: &F)
where
    F: Fn(usize, Duration) -> Ping + Sync,
{
    let (lock, wakeup) = shared;
    while let Some((target, round)) = next_job(lock, wakeup) {
        let now = Instant::now();
        // A round found due at or after the deadline is lost without a ping.
        let outcome =
            (now < plan.deadline).then(|| ping_without_unwinding(ping, target, plan.timeout.min(plan.deadline - now)));
        let mut schedule = lock_schedule(lock);
        match outcome {
            Some(Ping::Answered(rtt)) => {
                schedule.results[target][round as usize] = Some(rtt);
                schedule.sent[target] = true;
            }
            Some(Ping::Lost) => schedule.sent[target] = true,
            Some(Ping::NotSent(failure)) => {
                schedule.unsent[target].get_or_insert(failure);
            }
            None => {}
        }
        let next_round = round + 1;
        let next_due = plan.start + plan.interval * next_round;
        if next_round < plan.pings && next_due < plan.deadline {
            schedule.due.push(Reverse((next_due, target, next_round)));
        } else {
            schedule.unfinished -= 1;
        }
        drop(schedule);
        wakeup.notify_all();
    }
}

/// Calls `ping`; a panic counts as a lost ping so the other workers are not left waiting for a
/// round that would never be rescheduled.
fn ping_without_unwinding<F>(ping: &F, target: usize, budget: Duration) -> Ping
where
    F: Fn(usize, Duration) -> Ping + Sync,
{
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| ping(target, budget))).unwrap_or_else(|_| {
        tracing::warn!(target_index = target, "probe ping panicked; counted as lost");
        Ping::Lost
    })
}

/// Blocks until a job is due and returns it, or returns `None` when every target is finished.
fn next_job(lock: &Mutex<Schedule>, wakeup: &Condvar) -> Option<(usize, u32)> {
    let mut schedule = lock_schedule(lock);
    loop {
        if schedule.unfinished == 0 {
            return None;
        }
        let Some(&Reverse((due, target, round))) = schedule.due.peek() else {
            schedule = wakeup.wait(schedule).unwrap_or_else(PoisonError::into_inner);
            continue;
        };
        let now = Instant::now();
        if due <= now {
            schedule.due.pop();
            return Some((target, round));
        }
        schedule = wakeup
            .wait_timeout(schedule, due - now)
            .unwrap_or_else(PoisonError::into_inner)
            .0;
    }
}

/// Locks the schedule; a worker that panicked mid-ping left it consistent, so poison is ignored.
fn lock_schedule(lock: &Mutex<Schedule>) -> MutexGuard<'_, Schedule> {
    lock.lock().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    //! No test here depends on how fast the machine is: deadlines are a minute away unless a
    //! round must be lost, and then it is due after the deadline by construction (the schedule is
    //! arithmetic); a run ends as soon as its last round is done, so none waits for a deadline.
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn plan(pings: u32, interval_ms: u64, timeout_ms: u64, deadline_ms: u64) -> RunPlan {
        let start = Instant::now() + Duration::from_millis(20);
        RunPlan {
            pings,
            interval: Duration::from_millis(interval_ms),
            timeout: Duration::from_millis(timeout_ms),
            start,
            deadline: start + Duration::from_millis(deadline_ms),
        }
    }

    #[test]
    fn every_target_gets_exactly_pings_results_in_round_order() {
        let plan = plan(4, 10, 100, 60_000);
        let results = run_rounds(3, &plan, 2, |target, _| Ping::Answered(target as f64));
        assert_eq!(results.len(), 3);
        for (target, rtts) in results.iter().enumerate() {
            assert_eq!(rtts, &Ok(vec![Some(target as f64); 4]));
        }
    }

    #[test]
    fn a_target_never_has_two_pings_in_flight() {
        let plan = plan(5, 1, 100, 60_000);
        let in_flight: Vec<AtomicUsize> = (0..4).map(|_| AtomicUsize::new(0)).collect();
        let overlaps = AtomicUsize::new(0);
        run_rounds(4, &plan, 8, |target, _| {
            if in_flight[target].fetch_add(1, Ordering::SeqCst) > 0 {
                overlaps.fetch_add(1, Ordering::SeqCst);
            }
            // Widens the window in which a second ping of the same target would overlap.
            std::thread::sleep(Duration::from_millis(5));
            in_flight[target].fetch_sub(1, Ordering::SeqCst);
            Ping::Answered(0.0)
        });
        assert_eq!(overlaps.load(Ordering::SeqCst), 0);
    }

    #[test]
    fn a_hanging_target_does_not_stop_the_rounds_of_the_others() {
        // Target 0 hangs until targets 1 and 2 have done all their rounds (3 each): with only
        // two workers that can happen only if they run beside it. If they could not, target 0
        // would hang for its whole budget and their rounds would be lost at the deadline.
        let others_done = (Mutex::new(0usize), Condvar::new());
        let plan = plan(3, 20, 120_000, 60_000);
        let results = run_rounds(3, &plan, 2, |target, budget| {
            let (count, changed) = &others_done;
            let mut count = count.lock().unwrap();
            if target == 0 {
                let _released = changed.wait_timeout_while(count, budget, |done| *done < 6).unwrap();
                Ping::Lost
            } else {
                *count += 1;
                changed.notify_all();
                Ping::Answered(0.001)
            }
        });
        assert_eq!(results[0], Ok(vec![None, None, None]));
        assert_eq!(results[1], Ok(vec![Some(0.001); 3]));
        assert_eq!(results[2], Ok(vec![Some(0.001); 3]));
    }

    #[test]
    fn rounds_due_after_the_deadline_are_lost_and_budgets_never_pass_it() {
        // Rounds are due 12 s and 6 s ago, now, and 6 s from now; the deadline is 5 s from now.
        // The first three are due (overdue) at once; the fourth is due after the deadline, so it
        // is never sent, and the run ends without waiting for anything.
        let called_at = Instant::now();
        let plan = RunPlan {
            pings: 4,
            interval: Duration::from_secs(6),
            timeout: Duration::from_secs(60),
            start: called_at - Duration::from_secs(12),
            deadline: called_at + Duration::from_secs(5),
        };
        let calls = AtomicUsize::new(0);
        let results = run_rounds(1, &plan, 4, |_, budget| {
            calls.fetch_add(1, Ordering::SeqCst);
            // Each budget ends by the deadline: it is measured from a moment after `called_at`.
            assert!(budget <= plan.deadline - called_at, "{budget:?}");
            assert!(budget <= plan.timeout);
            Ping::Answered(0.5)
        });
        assert_eq!(results, vec![Ok(vec![Some(0.5), Some(0.5), Some(0.5), None])]);
        assert_eq!(calls.load(Ordering::SeqCst), 3);
    }

    #[test]
    fn a_round_found_due_at_or_after_the_deadline_is_lost_without_a_ping() {
        // The deadline has passed when the only round is taken: no ping, a lost round.
        let now = Instant::now();
        let plan = RunPlan {
            pings: 2,
            interval: Duration::from_secs(60),
            timeout: Duration::from_secs(1),
            start: now - Duration::from_secs(2),
            deadline: now - Duration::from_secs(1),
        };
        let calls = AtomicUsize::new(0);
        let results = run_rounds(2, &plan, 2, |_, _| {
            calls.fetch_add(1, Ordering::SeqCst);
            Ping::Answered(1.0)
        });
        assert_eq!(results, vec![Ok(vec![None, None]); 2]);
        assert_eq!(calls.load(Ordering::SeqCst), 0);
    }

    #[test]
    fn a_panicking_ping_is_lost_and_the_run_still_ends() {
        let plan = plan(2, 1, 100, 60_000);
        let results = run_rounds(2, &plan, 2, |target, _| {
            if target == 0 {
                panic!("hostile ping");
            }
            Ping::Answered(0.25)
        });
        assert_eq!(results, vec![Ok(vec![None, None]), Ok(vec![Some(0.25); 2])]);
    }

    #[test]
    fn zero_targets_and_zero_pings_return_empty_shapes() {
        assert!(run_rounds(0, &plan(3, 1, 1, 100), 4, |_, _| Ping::Answered(1.0)).is_empty());
        assert_eq!(
            run_rounds(2, &plan(0, 1, 1, 100), 4, |_, _| Ping::Answered(1.0)),
            vec![Ok(Vec::<Option<f64>>::new()); 2]
        );
    }

    #[test]
    fn a_target_none_of_whose_pings_could_be_sent_fails_with_the_first_reason() {
        let plan = plan(3, 1, 100, 60_000);
        let calls: Vec<AtomicUsize> = (0..3).map(|_| AtomicUsize::new(0)).collect();
        let results = run_rounds(3, &plan, 2, |target, _| {
            let call = calls[target].fetch_add(1, Ordering::SeqCst);
            match (target, call) {
                (0, n) => Ping::NotSent(ProbeFailure::new(format!("no route {n}"))),
                // Sent once: measured, the unsent pings lost.
                (1, 0) => Ping::Lost,
                (1, _) => Ping::NotSent(ProbeFailure::new("no route")),
                _ => Ping::Answered(0.001),
            }
        });
        assert_eq!(results[0], Err(ProbeFailure::new("no route 0")));
        assert_eq!(results[1], Ok(vec![None, None, None]));
        assert_eq!(results[2], Ok(vec![Some(0.001); 3]));
    }
}
