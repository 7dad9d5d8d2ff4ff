//! Probes measure batches of orders; the scheduler decides when.
//!
//! A probe gets every order of one batch (same probe kind, step, pings and probe options) and a
//! [`RunPlan`], and returns one RTT list per order. It never runs past `plan.deadline`: pings
//! without an answer by then count as lost. Probes do not touch the disk; the scheduler turns
//! their results into snapshots.
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

/// A way of measuring. Implementations must be usable from several threads at once (batches of
/// the same probe kind run concurrently).
pub trait Probe: Send + Sync {
    /// Measures every spec in `targets` `plan.pings` times. The result has one entry per target,
    /// in the same order, each with exactly `plan.pings` entries (RTT seconds or `None`).
    fn run(&self, targets: &[&ProbeSpec], plan: &RunPlan) -> Vec<Rtts>;
}
