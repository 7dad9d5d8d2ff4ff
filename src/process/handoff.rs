//! What processing hands on: the interface between a processing round and the sinks.
//!
//! Each round gives every [`ResultSink`] one [`SinkBatch`] (the round's ping results and
//! HAProxy metrics) before it removes the snapshots they came from; self-metrics hand their
//! samples through the same call. A round's HAProxy metrics come as one [`MetricBlock`] per
//! snapshot ([`SinkBatch::blocks`]), which sinks read through [`SinkBatch::all_metrics`]. A sink's `accept` returns `Ok` only once what it takes of the
//! batch is durable on this machine (in its outbox), or a [`SinkError`] and the snapshots stay
//! in `incoming/` to be retried. Each batch says what [`Kind`] of data it holds, so every sink
//! takes only the kinds its route names (`crate::sink::route`); a sink that takes nothing of a
//! batch returns `Ok` without writing anything, and the batch counts as taken.
//!
//! Defined here, by the stage that calls it, so processing never imports the sinks:
//! `crate::sink` implements the trait and the commands hand the started sinks to the
//! [`super::Processor`]. Owns nothing on disk.

use crate::shared::measurement::{Metric, MetricBlock, MetricRef, OrderResult};

/// A kind of data a sink can take (its `takes:` in the config).
///
/// Results received from other spoolmon nodes are [`Kind::Ping`] too: each carries its
/// origin ([`OrderResult::origin`]), which the sinks name in their paths and tags.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kind {
    /// Ping results of the orders ([`SinkBatch::results`]).
    Ping,
    /// HAProxy metrics aggregated by processing (including `haproxy.haproxystats.*`, the
    /// aggregation's own timings).
    Haproxy,
    /// spoolmon's self-metrics (`crate::selfmetrics`).
    SelfMetrics,
}

/// What the metrics of a [`SinkBatch`] are (its results are always [`Kind::Ping`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum MetricKind {
    /// HAProxy aggregates from a processing round.
    #[default]
    Haproxy,
    /// Samples of the self-metrics.
    SelfMetrics,
}

impl MetricKind {
    /// The kind a sink must take to receive these metrics.
    pub fn kind(self) -> Kind {
        match self {
            MetricKind::Haproxy => Kind::Haproxy,
            MetricKind::SelfMetrics => Kind::SelfMetrics,
        }
    }
}

/// What processing (or self-metrics) hands to the sinks in one call.
#[derive(Clone, Copy, Debug, Default)]
pub struct SinkBatch<'a> {
    /// Ping results, sorted by time then order id.
    pub results: &'a [OrderResult],
    /// Metrics, with their path as their producer spells it (`haproxy.frontend.www.scur`,
    /// `spoolmon.orders.active`): without any sink's namespace or host.
    pub metrics: &'a [Metric],
    /// More metrics of the same kind, in blocks (one per HAProxy snapshot), after `metrics`.
    pub blocks: &'a [MetricBlock],
    /// What `metrics` are.
    pub metric_kind: MetricKind,
    /// HAProxy snapshots as they are on disk, for the sinks that ship them whole
    /// ([`ResultSink::wants_snapshots`]); empty for the others.
    pub snapshots: &'a [RawSnapshot],
}

/// A HAProxy snapshot as it is on disk: what a forward sink ships to another node, whose
/// processing aggregates it there (haproxystats' "centralized processing").
#[derive(Clone, Debug, PartialEq)]
pub struct RawSnapshot {
    /// Its name in `incoming/` (its time: the pull's).
    pub name: crate::spool::snapshot::SnapshotName,
    /// `<socket>_info` and `<socket>_stat` of each process, with their text.
    pub files: Vec<(String, String)>,
    /// The node that pulled it, when it was received from another node.
    pub origin: Option<std::sync::Arc<crate::shared::node::Provenance>>,
}

impl<'a> SinkBatch<'a> {
    /// A processing round's batch: ping results and HAProxy metrics.
    pub fn round(results: &'a [OrderResult], metrics: &'a [Metric]) -> SinkBatch<'a> {
        SinkBatch {
            results,
            metrics,
            blocks: &[],
            metric_kind: MetricKind::Haproxy,
            snapshots: &[],
        }
    }

    /// A processing round's batch: ping results and the HAProxy metrics of its snapshots, one
    /// block each.
    pub fn round_blocks(results: &'a [OrderResult], blocks: &'a [MetricBlock]) -> SinkBatch<'a> {
        SinkBatch {
            results,
            metrics: &[],
            blocks,
            metric_kind: MetricKind::Haproxy,
            snapshots: &[],
        }
    }

    /// A batch of self-metrics samples.
    pub fn self_metrics(metrics: &'a [Metric]) -> SinkBatch<'a> {
        SinkBatch {
            results: &[],
            metrics,
            blocks: &[],
            metric_kind: MetricKind::SelfMetrics,
            snapshots: &[],
        }
    }

    pub fn is_empty(&self) -> bool {
        self.results.is_empty() && self.metric_count() == 0 && self.snapshots.is_empty()
    }

    /// How many metrics the batch holds, in `metrics` and `blocks`.
    pub fn metric_count(&self) -> usize {
        self.metrics.len() + self.blocks.iter().map(MetricBlock::len).sum::<usize>()
    }

    /// Every metric: `metrics`, then each block's.
    pub fn all_metrics(&self) -> impl Iterator<Item = MetricRef<'a>> + use<'a> {
        let (metrics, blocks) = (self.metrics, self.blocks);
        metrics
            .iter()
            .map(MetricRef::from)
            .chain(blocks.iter().flat_map(MetricBlock::iter))
    }
}

/// A destination for processed results.
pub trait ResultSink: Send + Sync {
    /// Short name (the sink's name under `sinks:`), also the directory name under `outbox/`.
    fn name(&self) -> &str;
    /// Takes what its route takes of a batch of results (any orders, each order's results in
    /// time order). Returns once that is durable on this machine; `Ok` without writing
    /// anything when it takes nothing of the batch.
    fn accept(&self, batch: SinkBatch<'_>) -> Result<(), SinkError>;
    /// Whether this sink takes data of `kind` at all (self-metrics are sent only to sinks that
    /// take them). A sink without a route takes every kind.
    fn takes(&self, kind: Kind) -> bool {
        let _ = kind;
        true
    }
    /// Whether this sink ships `kind` as whole snapshots ([`SinkBatch::snapshots`]) rather
    /// than taking their aggregates: a forward sink taking `haproxy`. Processing then reads
    /// the snapshot's files for it, and aggregates only for the sinks that take the metrics.
    fn wants_snapshots(&self, kind: Kind) -> bool {
        let _ = kind;
        false
    }
    /// Whether this node still writes its own output (RRD, `last_result`) of a result this
    /// sink takes: `false` only for a sink that forwards what it takes and keeps nothing
    /// (`keep-local: false`, a node without a database of its own, or a pure proxy).
    fn keeps_local(&self, result: &OrderResult) -> bool {
        let _ = result;
        true
    }
    /// True when [`ResultSink::keeps_local`] is true for every result (processing then never
    /// asks).
    fn keeps_all_local(&self) -> bool {
        true
    }
}

/// Why a sink could not take a batch; the snapshots stay in `incoming/` and are retried.
#[derive(Debug, thiserror::Error)]
#[error("sink {sink}: {message}")]
pub struct SinkError {
    pub sink: String,
    pub message: String,
}
