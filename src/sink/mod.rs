//! Sinks: where processed results are forwarded beyond `output/`.
//!
//! Processing hands every batch of results to each configured [`ResultSink`](crate::process::handoff::ResultSink) before it removes
//! the snapshots they came from, so a sink's `accept` must have made the results durable (in its
//! outbox under `outbox/<sink>/`) when it returns `Ok`. Delivery to the remote system happens
//! later and independently; a slow or dead remote never blocks `accept`.
//!
//! The parts, along the data flow:
//! - an [`Encoder`] turns results and metrics into whole lines (`graphite`, `influx`);
//! - the `outbox` stores those lines durably per sink and hands them out oldest first;
//! - a delivery thread per sink sends them through a [`Transport`] and acknowledges what the
//!   remote took, with backoff on [`DeliveryError::Transient`] and a drop on
//!   [`DeliveryError::Rejected`];
//! - `local_store` writes haproxystats' debugging layout directly, without an outbox;
//! - each sink takes only what its [`route`] says (`takes`, `orders`, `metrics` in its config),
//!   filtered while encoding: nothing is copied, and a batch it takes nothing of appends nothing.

use crate::process::handoff::{MetricKind, SinkBatch};
use crate::shared::measurement::{MetricBlock, MetricRef, OrderResult};
use crate::shared::option::InvalidOption;

pub mod backlog;
pub mod config;
pub mod delivery;
pub mod discovery;
pub mod forward;
pub mod graphite;
pub mod hostname;
pub mod influx;
pub mod kafka;
pub mod local_store;
pub mod number;
pub mod outbox;
pub mod queued;
pub mod redis;
pub mod ring;
pub mod route;
pub mod running;

/// Turns results and metrics into whole lines of a text protocol, each ending in `\n`.
pub trait Encoder: Send + Sync {
    /// Appends the lines of one ping result to `out`; returns how many lines it appended.
    fn encode_result(&self, result: &OrderResult, out: &mut Vec<u8>) -> usize;
    /// Appends the line(s) of one metric to `out`; returns how many lines it appended.
    fn encode_metric(&self, metric: MetricRef<'_>, out: &mut Vec<u8>) -> usize;

    /// Appends the lines of the metrics `range` of `block` (all at the block's time); returns
    /// how many lines it appended. An encoder may do once per call what is the same for every
    /// metric of a block.
    fn encode_block(&self, block: &MetricBlock, range: std::ops::Range<usize>, out: &mut Vec<u8>) -> usize {
        range.map(|index| self.encode_metric(block.get(index), out)).sum()
    }

    /// Appends the line(s) of one metric of `kind`; the same as [`Encoder::encode_metric`] for
    /// an encoder whose lines do not depend on the kind (all but Kafka's, whose topic does).
    fn encode_metric_of(&self, kind: MetricKind, metric: MetricRef<'_>, out: &mut Vec<u8>) -> usize {
        let _ = kind;
        self.encode_metric(metric, out)
    }

    /// [`Encoder::encode_block`] for metrics of `kind` (see [`Encoder::encode_metric_of`]).
    fn encode_block_of(
        &self,
        kind: MetricKind,
        block: &MetricBlock,
        range: std::ops::Range<usize>,
        out: &mut Vec<u8>,
    ) -> usize {
        let _ = kind;
        self.encode_block(block, range, out)
    }

    /// Appends the lines of all of `batch`; returns how many lines it appended.
    fn encode(&self, batch: SinkBatch<'_>, out: &mut Vec<u8>) -> usize {
        let results: usize = batch.results.iter().map(|r| self.encode_result(r, out)).sum();
        let metrics: usize = batch
            .all_metrics()
            .map(|m| self.encode_metric_of(batch.metric_kind, m, out))
            .sum();
        results + metrics
    }
}

/// Why a delivery attempt failed, and whether retrying can help.
#[derive(Debug, thiserror::Error)]
pub enum DeliveryError {
    /// The remote refused this batch for good (e.g. HTTP 400 for bad line protocol): retrying the
    /// same bytes cannot succeed, so the batch is dropped with a log line and a counter.
    #[error("rejected: {0}")]
    Rejected(String),
    /// Time-out, refusal, reset, HTTP 5xx, a name that does not resolve: the batch is kept and
    /// retried after a backoff.
    #[error("{0}")]
    Transient(String),
}

/// Sends encoded lines to one remote system. Each sink's delivery thread owns one.
pub trait Transport: Send {
    /// Sends `payload` (whole lines, each ending in `\n`, at most [`Transport::max_payload`]
    /// bytes unless a single line is longer) and returns when the remote has taken all of it.
    fn send(&mut self, payload: &[u8]) -> Result<(), DeliveryError>;
    /// The largest payload the delivery thread should hand to one `send`.
    fn max_payload(&self) -> usize;
    /// Where it sends to, for logs and `spoolmon outbox` (e.g. `tcp://127.0.0.1:2003`).
    fn describe(&self) -> String;
}

/// How large a sink's outbox may grow before its oldest entries are dropped (config `outbox:`).
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize, schemars::JsonSchema)]
#[serde(default, rename_all = "kebab-case", deny_unknown_fields)]
pub struct OutboxBounds {
    /// Bytes of undelivered lines kept on disk. Default 1 GiB.
    pub max_bytes: u64,
    /// Seconds an undelivered line is kept; absent = no age limit (the default).
    pub max_age: Option<f64>,
}

impl Default for OutboxBounds {
    fn default() -> Self {
        OutboxBounds {
            max_bytes: 1 << 30,
            max_age: None,
        }
    }
}

impl OutboxBounds {
    /// Checks the bounds; the error names the key.
    pub fn validate(&self) -> Result<(), InvalidOption> {
        if self.max_bytes < 1 << 20 {
            return Err(InvalidOption::new("outbox.max-bytes", "must be at least 1048576"));
        }
        if self.max_age.is_some_and(|age| !(age.is_finite() && age > 0.0)) {
            return Err(InvalidOption::new(
                "outbox.max-age",
                "must be a positive number of seconds",
            ));
        }
        Ok(())
    }
}

/// How a delivery thread retries after a transient failure (haproxystats' Graphite semantics).
///
/// After a failed attempt it waits `interval`, then `interval * backoff`, `interval * backoff²`,
/// … for up to `retries` further attempts; when those fail too it pauses for `delay` and starts
/// the cycle again. It never gives up: the outbox's bound decides what is dropped.
#[derive(Clone, Debug, PartialEq)]
pub struct RetryPolicy {
    pub retries: u32,
    pub interval: std::time::Duration,
    pub backoff: f64,
    pub delay: std::time::Duration,
}

impl Default for RetryPolicy {
    /// haproxystats' Graphite defaults: 3 retries, 1.8 s apart, backoff 2, then a 10 s delay.
    fn default() -> Self {
        RetryPolicy {
            retries: 3,
            interval: std::time::Duration::from_millis(1800),
            backoff: 2.0,
            delay: std::time::Duration::from_secs(10),
        }
    }
}
