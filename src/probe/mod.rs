//! Probes measure batches of orders; the scheduler decides when.
//!
//! A probe gets every order of one batch (same probe kind, step, pings and probe options) and a
//! [`RunPlan`], and returns one [`Outcome`] per order: the RTT list it measured, or why it could
//! not measure that order at all ([`ProbeFailure`]). It never runs past `plan.deadline`: pings
//! without an answer by then count as lost. Probes do not touch the disk; the scheduler turns
//! their results into snapshots (a failure becomes the result's `failure`, its pings unknown).
//!
//! Lost or failed, the rule of every probe: a ping that went out (a packet sent, a connection
//! attempted, a command that ran and reported) and got no answer is lost — the target's doing.
//! A run that could not put a single ping on its way for an order, for a reason on the measuring
//! side (the command or fping cannot be started or fails without reporting, no ICMP socket or
//! source address for the target, every send refused locally, the name does not resolve), is a
//! failure with that reason. Each probe module says what it counts where.
//!
//! - [`scheduler`]: batches, timing, snapshots, the disk guard check before every run.
//! - [`icmp`] (native engine, with its options), [`fping`], [`http`], [`tcp`], [`exec`]: the
//!   probes. `rounds` paces the one-ping-at-a-time probes (HTTP, TCP).
//! - [`child`]: the one supervisor of child processes (exec commands, fping), with [`cgroup`]
//!   for their containment.

pub mod cgroup;
pub mod child;
pub mod exec;
pub mod fping;
pub mod http;
pub mod icmp;
mod rounds;
pub mod scheduler;
pub mod tcp;
mod warn_once;

use crate::orders::order::ProbeSpec;
use std::time::{Duration, Instant};

/// How one run of a batch is laid out in time.
#[derive(Clone, Debug)]
pub struct RunPlan {
    /// Pings per order.
    pub pings: u32,
    /// Time between two pings to the same target (round i starts at `start + i * interval`).
    pub interval: Duration,
    /// How long to wait for one answer.
    pub timeout: Duration,
    /// When the first round starts.
    pub start: Instant,
    /// Hard end of the run: the next run of the batch starts here. Nothing may outlive it.
    pub deadline: Instant,
}

/// Round-trip times of one order's pings, in sending order; `None` is a lost ping.
pub type Rtts = Vec<Option<f64>>;

/// What one run produced for one order: the pings it measured, or why it could not measure.
pub type Outcome = Result<Rtts, ProbeFailure>;

/// Why a run could not measure an order (nothing was sent for it). The reason is one bounded
/// line ([`crate::shared::measurement::failure_reason`]), ready for listings and logs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProbeFailure(String);

impl ProbeFailure {
    pub fn new(reason: impl std::fmt::Display) -> ProbeFailure {
        ProbeFailure(crate::shared::measurement::failure_reason(&reason.to_string()))
    }

    pub fn reason(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for ProbeFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// A way of measuring. Implementations must be usable from several threads at once (batches of
/// the same probe kind run concurrently).
pub trait Probe: Send + Sync {
    /// Measures every spec in `targets` `plan.pings` times. The result has one entry per target,
    /// in the same order: exactly `plan.pings` RTTs (seconds, or `None` for a lost ping), or the
    /// reason the target could not be measured.
    fn run(&self, targets: &[&ProbeSpec], plan: &RunPlan) -> Vec<Outcome>;
}
