//! Sinks: where processed results are forwarded beyond `output/`.
//!
//! Processing hands every batch of results to each configured [`ResultSink`] before it removes
//! the snapshots they came from, so a sink's `accept` must have made the results durable (in its
//! outbox under `outbox/<sink>/`) when it returns `Ok`. Delivery to the remote system happens
//! later and independently; a slow or dead remote never blocks `accept`.

use crate::measurement::OrderResult;

/// Why a sink could not take a batch; the snapshots stay in `incoming/` and are retried.
#[derive(Debug, thiserror::Error)]
#[error("sink {sink}: {message}")]
pub struct SinkError {
    pub sink: String,
    pub message: String,
}

/// A destination for processed results.
pub trait ResultSink: Send + Sync {
    /// Short name, also the directory name under `outbox/`.
    fn name(&self) -> &str;
    /// Takes a batch of results (any orders, each order's results in time order).
    fn accept(&self, results: &[OrderResult]) -> Result<(), SinkError>;
}
