//! One run of a batch on the native engine: paced rounds of echo requests, then harvesting the
//! in-flight table into per-target RTT lists.
//!
//! Owns nothing on disk. Invariants: round `i` starts no earlier than `plan.start + i *
//! plan.interval`; every send goes through the engine-wide pacer; a round is harvested once all
//! its pings were answered or `plan.timeout` after its last send, and never after
//! `plan.deadline`; the result always has `plan.pings` entries per target, `None` for anything
//! unsent, unanswered, answered too late or cut off by the deadline — or, for a target without a
//! socket, or none of whose echo requests the kernel took (`sendto` failed every time: no route,
//! a local firewall), a failure with the reason: nothing was sent, nothing can have been lost.
//! Each paced chunk goes out with one `sendmmsg` per socket; every slot of the chunk is claimed
//! in the in-flight table before the call (so no reply can arrive unclaimed) and given its send
//! time after it (request `i` of `n` at `i/n` of the call), before the round can be harvested.

use super::inflight::{InflightTable, Pacer};
use super::socket::{Endpoint, SendBatch};
use crate::probe::{Outcome, ProbeFailure, Rtts, RunPlan};
use std::collections::VecDeque;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tracing::{debug, warn};

/// While waiting for the last replies, how often the run checks whether all have arrived.
const ANSWER_POLL: Duration = Duration::from_millis(2);

/// One target of a run and the socket that reaches it (or why there is none: not measured).
pub struct RunTarget {
    pub address: IpAddr,
    pub endpoint: Result<Arc<Endpoint>, ProbeFailure>,
}

/// What a run needs from the engine.
pub struct EngineParts<'a> {
    pub table: &'a InflightTable,
    pub pacer: &'a Pacer,
    pub token: u64,
}

/// Requests of one round that are (or were) in flight.
struct Round {
    index: usize,
    /// Key per target; `None` = not sent.
    keys: Vec<Option<u32>>,
    /// When the last ping of the round times out.
    expires: Instant,
    /// Targets before this index are known to be answered (or unsent).
    answered_upto: usize,
}

/// Runs `plan` against `targets` and returns one RTT list (seconds) per target, or why the
/// target could not be measured.
pub fn run_rounds(engine: &EngineParts, targets: &[RunTarget], plan: &RunPlan) -> Vec<Outcome> {
    let pings = plan.pings as usize;
    let mut results = RttGrid::new(targets.len(), pings);
    let sendable: Vec<usize> = (0..targets.len()).filter(|&t| targets[t].endpoint.is_ok()).collect();
    let mut pending: VecDeque<Round> = VecDeque::new();
    let mut send_failures = SendFailures::new(targets.len());
    for index in 0..pings {
        let Some(round_start) = round_start(plan, index) else {
            break;
        };
        if round_start >= plan.deadline {
            break;
        }
        wait_until(round_start, engine, plan, &mut pending, &mut results);
        let round = send_round(
            engine,
            targets,
            &sendable,
            index,
            plan,
            &mut pending,
            &mut results,
            &mut send_failures,
        );
        pending.push_back(round);
    }
    finish(engine, plan, &mut pending, &mut results);
    send_failures.report(targets.len());
    targets
        .iter()
        .enumerate()
        .map(|(t, target)| match &target.endpoint {
            Err(failure) => Err(failure.clone()),
            Ok(_) => match send_failures.unmeasured(t) {
                Some(error) => Err(ProbeFailure::new(format!(
                    "cannot send ICMP echo requests to {}: {error}",
                    target.address
                ))),
                None => Ok(results.rtts(t)),
            },
        })
        .collect()
}

/// The RTTs of a run while it runs: one flat row of `pings` seconds per target, NaN for none.
/// Half the memory of one `Vec<Option<f64>>` per target (and one allocation instead of one per
/// target): 100 runs of 1,000 targets × 20 pings hold 16 MB instead of 34 for most of each step.
struct RttGrid {
    pings: usize,
    cells: Vec<f64>,
}

impl RttGrid {
    fn new(targets: usize, pings: usize) -> RttGrid {
        RttGrid {
            pings,
            cells: vec![f64::NAN; targets * pings],
        }
    }

    /// Records ping `index` of target `t` (ignored past the row: a round beyond the plan).
    fn set(&mut self, t: usize, index: usize, seconds: f64) {
        if index < self.pings {
            if let Some(cell) = self.cells.get_mut(t * self.pings + index) {
                *cell = seconds;
            }
        }
    }

    /// Target `t`'s RTTs, `None` for each ping without an answer.
    fn rtts(&self, t: usize) -> Rtts {
        self.cells[t * self.pings..(t + 1) * self.pings]
            .iter()
            .map(|&seconds| (!seconds.is_nan()).then_some(seconds))
            .collect()
    }
}

fn round_start(plan: &RunPlan, index: usize) -> Option<Instant> {
    let offset = plan.interval.checked_mul(u32::try_from(index).ok()?)?;
    plan.start.checked_add(offset)
}

/// Sends one echo request per sendable target, in paced chunks, each chunk with one `sendmmsg`
/// per socket; harvests expired rounds between chunks so in-flight slots are read before they
/// can be reused.
#[allow(clippy::too_many_arguments)]
fn send_round(
    engine: &EngineParts,
    targets: &[RunTarget],
    sendable: &[usize],
    index: usize,
    plan: &RunPlan,
    pending: &mut VecDeque<Round>,
    results: &mut RttGrid,
    failures: &mut SendFailures,
) -> Round {
    let mut keys = vec![None; targets.len()];
    let mut last_send = Instant::now();
    let chunk_size = engine.pacer.chunk() as usize;
    let mut batch = SendBatch::with_capacity(chunk_size);
    for chunk in sendable.chunks(chunk_size) {
        harvest_expired(engine, plan, pending, results);
        let count = chunk.len() as u32;
        let at = engine.pacer.reserve(count);
        if at >= plan.deadline {
            break;
        }
        sleep_until(at);
        let first_key = engine.table.reserve_keys(count);
        let keyed: Vec<(usize, u32)> = chunk
            .iter()
            .enumerate()
            .map(|(offset, &t)| (t, first_key.wrapping_add(offset as u32)))
            .collect();
        // Consecutive targets on the same socket share one sendmmsg (normally the whole chunk).
        for group in keyed.chunk_by(|a, b| same_endpoint(&targets[a.0], &targets[b.0])) {
            let Ok(endpoint) = &targets[group[0].0].endpoint else {
                continue;
            };
            last_send = send_group(engine, endpoint, targets, group, &mut batch, &mut keys, failures);
        }
    }
    Round {
        index,
        keys,
        expires: last_send + plan.timeout,
        answered_upto: 0,
    }
}

fn same_endpoint(a: &RunTarget, b: &RunTarget) -> bool {
    match (&a.endpoint, &b.endpoint) {
        (Ok(a), Ok(b)) => Arc::ptr_eq(a, b),
        _ => false,
    }
}

/// Sends the requests of `group` (target, key) through `endpoint` with one `sendmmsg` and returns
/// when it was done. Every slot is claimed before the call; request `i` of `n` is timed as sent
/// at `start + i/n` of the call's duration (the kernel handles them one after the other, and on
/// loopback builds each reply inside the call), so batching does not add the earlier requests'
/// sending to a later one's RTT.
fn send_group(
    engine: &EngineParts,
    endpoint: &Endpoint,
    targets: &[RunTarget],
    group: &[(usize, u32)],
    batch: &mut SendBatch,
    keys: &mut [Option<u32>],
    failures: &mut SendFailures,
) -> Instant {
    batch.clear();
    for &(t, key) in group {
        engine.table.claim(key);
        batch.push(endpoint.family, engine.token, key, targets[t].address);
    }
    let start = Instant::now();
    endpoint.send_batch(batch, |i, result| {
        let (t, key) = group[i];
        match result {
            Ok(()) => {
                keys[t] = Some(key);
                failures.sent(t);
            }
            Err(e) => failures.note(t, targets[t].address, e),
        }
    });
    let end = Instant::now();
    let spread = end.saturating_duration_since(start);
    let n = group.len() as u32;
    for (i, &(_, key)) in group.iter().enumerate() {
        engine.table.set_sent(key, start + spread * i as u32 / n);
    }
    end
}

/// Sleeps until `until`, harvesting rounds that expire meanwhile.
fn wait_until(
    until: Instant,
    engine: &EngineParts,
    plan: &RunPlan,
    pending: &mut VecDeque<Round>,
    results: &mut RttGrid,
) {
    loop {
        harvest_expired(engine, plan, pending, results);
        let wake = pending.front().map_or(until, |round| round.expires.min(until));
        if Instant::now() >= until {
            return;
        }
        sleep_until(wake);
    }
}

/// Harvests the remaining rounds as soon as each is fully answered, or at its expiry, or at the
/// deadline.
fn finish(engine: &EngineParts, plan: &RunPlan, pending: &mut VecDeque<Round>, results: &mut RttGrid) {
    while let Some(round) = pending.front_mut() {
        let give_up = round.expires.min(plan.deadline);
        if all_answered(engine.table, round) || Instant::now() >= give_up {
            if let Some(round) = pending.pop_front() {
                harvest(engine.table, plan.timeout, &round, results);
            }
            continue;
        }
        sleep_until(give_up.min(Instant::now() + ANSWER_POLL));
    }
}

fn harvest_expired(engine: &EngineParts, plan: &RunPlan, pending: &mut VecDeque<Round>, results: &mut RttGrid) {
    let now = Instant::now();
    while pending.front().is_some_and(|round| round.expires <= now) {
        if let Some(round) = pending.pop_front() {
            harvest(engine.table, plan.timeout, &round, results);
        }
    }
}

fn all_answered(table: &InflightTable, round: &mut Round) -> bool {
    while let Some(key) = round.keys.get(round.answered_upto) {
        if key.is_some_and(|key| table.rtt(key).is_none()) {
            return false;
        }
        round.answered_upto += 1;
    }
    true
}

fn harvest(table: &InflightTable, timeout: Duration, round: &Round, results: &mut RttGrid) {
    for (t, key) in round.keys.iter().enumerate() {
        let rtt = key.and_then(|key| table.rtt(key)).filter(|rtt| *rtt <= timeout);
        if let Some(rtt) = rtt {
            results.set(t, round.index, rtt.as_secs_f64());
        }
    }
}

fn sleep_until(at: Instant) {
    let now = Instant::now();
    if at > now {
        std::thread::sleep(at - now);
    }
}

/// Send errors of one run, reported once at its end instead of once per packet.
struct SendFailures {
    count: usize,
    first: Option<(IpAddr, std::io::Error)>,
    /// Per target: an echo request was taken by the kernel.
    sent: Vec<bool>,
    /// Per target: the first send error.
    errors: Vec<Option<String>>,
}

impl SendFailures {
    fn new(targets: usize) -> SendFailures {
        SendFailures {
            count: 0,
            first: None,
            sent: vec![false; targets],
            errors: vec![None; targets],
        }
    }

    fn sent(&mut self, target: usize) {
        self.sent[target] = true;
    }

    fn note(&mut self, target: usize, address: IpAddr, error: std::io::Error) {
        self.count += 1;
        self.errors[target].get_or_insert_with(|| error.to_string());
        self.first.get_or_insert((address, error));
    }

    /// The first send error of `target` if none of its requests could be sent.
    fn unmeasured(&self, target: usize) -> Option<&str> {
        self.errors[target].as_deref().filter(|_| !self.sent[target])
    }

    /// Warns when requests could not be sent to targets that are still measured (those pings
    /// count as lost); targets with no request sent at all are failures, which processing logs.
    fn report(&self, targets: usize) {
        let lost = (0..self.sent.len())
            .filter(|&t| self.sent[t] && self.errors[t].is_some())
            .count();
        if let Some((address, error)) = &self.first {
            if lost > 0 {
                warn!(
                    "ICMP: {} echo requests could not be sent in a run of {targets} targets \
                     (first: to {address}: {error}); counted as lost for the {lost} targets \
                     other requests reached",
                    self.count
                );
            } else {
                debug!(
                    "ICMP: {} echo requests could not be sent in a run of {targets} targets \
                     (first: to {address}: {error}); those targets are not measured",
                    self.count
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::RttGrid;

    #[test]
    fn the_grid_gives_each_target_its_own_row_with_none_for_unanswered_pings() {
        let mut grid = RttGrid::new(3, 2);
        grid.set(0, 1, 0.5);
        grid.set(2, 0, 0.000_123_456);
        grid.set(1, 2, 9.0); // a round beyond the plan: not target 2's first ping
        grid.set(3, 0, 9.0); // no such target
        assert_eq!(grid.rtts(0), [None, Some(0.5)]);
        assert_eq!(grid.rtts(1), [None, None]);
        assert_eq!(grid.rtts(2), [Some(0.000_123_456), None]);
    }
}
