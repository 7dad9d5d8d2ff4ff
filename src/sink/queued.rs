//! A sink that encodes what its route takes of each batch into lines and queues them in its
//! outbox; its delivery thread (see [`super::delivery`]) forwards them. A batch it takes nothing
//! of appends no record (and `accept` returns `Ok`: processing counts it as taken).

use super::outbox::Outbox;
use super::route::Route;
use super::Encoder;
use crate::process::handoff::Kind;
use crate::process::handoff::ResultSink;
use crate::process::handoff::SinkBatch;
use crate::process::handoff::SinkError;
use std::sync::{Arc, Mutex};

/// The largest encoding buffer kept between batches (a round of two HAProxy snapshots is about
/// 14.5 MB of lines with a namespace and a hostname); a larger one is freed after its batch.
const KEPT_BUFFER_BYTES: usize = 32 << 20;
/// Room reserved per metric line: HAProxy's lines are 75-95 bytes with a namespace and a
/// hostname (`loadbalancers.vm.haproxy.backend.<b>.server.<s>.<metric> <value> <time>`). Reserved
/// pages that are never written cost no memory.
const METRIC_LINE_BYTES: usize = 96;

/// `accept` = encode what the route takes into one buffer + one durable [`Outbox::append`].
pub struct OutboxSink {
    name: String,
    encoder: Box<dyn Encoder>,
    route: Route,
    outbox: Arc<Outbox>,
    /// The encoding buffer, kept between batches: a fresh 15 MB one each round cost its page
    /// faults and the kernel's zeroing of every page (≈3% of HAProxy processing in a profile).
    buffer: Mutex<Vec<u8>>,
}

impl OutboxSink {
    pub fn new(name: &str, encoder: Box<dyn Encoder>, route: Route, outbox: Arc<Outbox>) -> OutboxSink {
        OutboxSink {
            name: name.to_owned(),
            encoder,
            route,
            outbox,
            buffer: Mutex::default(),
        }
    }

    pub fn outbox(&self) -> &Arc<Outbox> {
        &self.outbox
    }

    fn error(&self, message: String) -> SinkError {
        SinkError {
            sink: self.name.clone(),
            message,
        }
    }
}

impl ResultSink for OutboxSink {
    fn name(&self) -> &str {
        &self.name
    }

    fn accept(&self, batch: SinkBatch<'_>) -> Result<(), SinkError> {
        let mut lines = self.buffer.lock().unwrap_or_else(|e| e.into_inner());
        lines.clear();
        // One allocation for a round's lines, not a doubling and copy when the guess is short.
        lines.reserve(batch.metric_count() * METRIC_LINE_BYTES);
        let count = self.encoder.encode_routed(batch, &self.route, &mut lines);
        let queued = match u32::try_from(count) {
            Ok(0) => Ok(()),
            Ok(count) => self
                .outbox
                .append(&lines, count)
                .map_err(|e| self.error(format!("cannot queue {count} lines: {e}"))),
            Err(_) => Err(self.error(format!("{count} lines in one batch"))),
        };
        if lines.capacity() > KEPT_BUFFER_BYTES {
            *lines = Vec::new();
        }
        queued
    }

    fn takes(&self, kind: Kind) -> bool {
        self.route.takes(kind)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::shared::measurement::{Metric, MetricRef, OrderId, OrderResult};
    use crate::sink::outbox::{status, OutboxLimits};
    use crate::sink::route::{Kind as Takes, MetricGlobs, OrderGlobs, RouteKeys};
    use std::io::Write;

    struct PlainText;

    impl Encoder for PlainText {
        fn encode_result(&self, result: &OrderResult, out: &mut Vec<u8>) -> usize {
            writeln!(out, "ping.{} {}", result.id, result.time).unwrap();
            1
        }

        fn encode_metric(&self, metric: MetricRef<'_>, out: &mut Vec<u8>) -> usize {
            writeln!(out, "{} {} {}", metric.path, metric.value, metric.time).unwrap();
            1
        }
    }

    fn metrics(paths: &[&str]) -> Vec<Metric> {
        paths
            .iter()
            .map(|path| Metric {
                path: path.to_string(),
                value: 1.0,
                time: 1_700_000_000,
            })
            .collect()
    }

    /// What the outbox in `dir` holds: (records, lines).
    fn queued(dir: &std::path::Path) -> (u64, u64) {
        let queued = status(dir).unwrap();
        (queued.records, queued.lines)
    }

    #[test]
    fn only_what_the_route_takes_is_queued_and_a_batch_it_takes_nothing_of_appends_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let outbox = Arc::new(Outbox::open(dir.path(), OutboxLimits::default()).unwrap());
        let orders = OrderGlobs {
            include: vec!["web/**".into()],
            exclude: vec!["web/test-*".into()],
        };
        let globs = MetricGlobs {
            include: vec!["haproxy.frontend.*.scur".into()],
            ..MetricGlobs::default()
        };
        let route = RouteKeys {
            takes: &[Takes::Ping, Takes::Haproxy],
            orders: &orders,
            metrics: &globs,
        }
        .compile()
        .unwrap();
        let sink = OutboxSink::new("carbon", Box::new(PlainText), route, outbox);
        let results: Vec<OrderResult> = ["db/a", "web/a", "web/test-1"]
            .iter()
            .map(|id| OrderResult::builder(OrderId::new(*id).unwrap(), 100).build())
            .collect();
        let haproxy = metrics(&["haproxy.frontend.www.scur", "haproxy.backend.be.scur"]);
        sink.accept(SinkBatch::round(&results, &haproxy)).unwrap();
        assert_eq!(queued(dir.path()), (1, 2), "web/a and the frontend's scur");
        // Nothing of these passes: no record, and still Ok (processing counts them as taken).
        sink.accept(SinkBatch::self_metrics(&metrics(&["spoolmon.orders.active"])))
            .unwrap();
        sink.accept(SinkBatch::round(&results[..1], &haproxy[1..])).unwrap();
        assert_eq!(queued(dir.path()), (1, 2));
        assert!(sink.takes(Kind::Haproxy) && !sink.takes(Kind::SelfMetrics));
        let reader = std::fs::read(dir.path().join("00000000000000000000.seg")).unwrap();
        let text = String::from_utf8_lossy(&reader);
        assert!(
            text.contains("ping.web/a 100\nhaproxy.frontend.www.scur 1 1700000000\n"),
            "{text}"
        );
    }

    #[test]
    fn accepted_batch_is_one_durable_record_and_an_empty_one_none() {
        let dir = tempfile::tempdir().unwrap();
        let outbox = Arc::new(Outbox::open(dir.path(), OutboxLimits::default()).unwrap());
        let sink = OutboxSink::new("graphite", Box::new(PlainText), Route::everything(), outbox);
        let metrics: Vec<Metric> = (0..3)
            .map(|i| Metric {
                path: format!("haproxy.frontend.www.scur{i}"),
                value: f64::from(i),
                time: 1_700_000_000,
            })
            .collect();
        sink.accept(SinkBatch::round(&[], &metrics)).unwrap();
        sink.accept(SinkBatch::default()).unwrap();
        let queued = status(dir.path()).unwrap();
        assert_eq!((queued.records, queued.lines), (1, 3));
        assert_eq!(sink.name(), "graphite");
    }
}
