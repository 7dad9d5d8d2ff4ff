//! What processing hands on: the interface between a processing round and the sinks.
//!
//! Each round gives every [`ResultSink`] one [`SinkBatch`] (the round's ping results and
//! metrics) before it removes the snapshots they came from; a sink's `accept` returns `Ok` only
//! once the batch is durable on this machine (in its outbox), or a [`SinkError`] and the
//! snapshots stay in `incoming/` to be retried. Defined here, by the stage that calls it, so
//! processing never imports the sinks: `crate::sink` implements the trait and the commands hand
//! the started sinks to the [`super::Processor`]. Owns nothing on disk.

use crate::shared::measurement::{Metric, OrderResult};

/// What processing hands to the sinks in one round.
#[derive(Clone, Copy, Debug, Default)]
pub struct SinkBatch<'a> {
    /// Ping results, sorted by time then order id.
    pub results: &'a [OrderResult],
    pub metrics: &'a [Metric],
}

impl SinkBatch<'_> {
    pub fn is_empty(&self) -> bool {
        self.results.is_empty() && self.metrics.is_empty()
    }
}

/// A destination for processed results.
pub trait ResultSink: Send + Sync {
    /// Short name, also the directory name under `outbox/`.
    fn name(&self) -> &str;
    /// Takes a batch of results (any orders, each order's results in time order). Returns once the
    /// batch is durable on this machine.
    fn accept(&self, batch: SinkBatch<'_>) -> Result<(), SinkError>;
}

/// Why a sink could not take a batch; the snapshots stay in `incoming/` and are retried.
#[derive(Debug, thiserror::Error)]
#[error("sink {sink}: {message}")]
pub struct SinkError {
    pub sink: String,
    pub message: String,
}
