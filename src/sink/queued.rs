//! A sink that encodes what its route takes of each batch into lines and queues them in its
//! outbox; its delivery thread (see [`super::delivery`]) forwards them. A batch it takes nothing
//! of appends no record (and `accept` returns `Ok`: processing counts it as taken). A large
//! batch is written as it is encoded, in records of about [`PIECE_BYTES`] (one outbox batch,
//! synced once), so its lines are never all in memory.

use super::outbox::{Appending, Outbox, OutboxError};
use super::route::Route;
use super::Encoder;
use crate::process::handoff::Kind;
use crate::process::handoff::ResultSink;
use crate::process::handoff::SinkBatch;
use crate::process::handoff::SinkError;
use std::sync::{Arc, Mutex};

/// Encoded lines are written to the outbox as a record once they reach this size (a round of
/// two HAProxy snapshots is about 14.5 MB of lines with a namespace and a hostname: held whole,
/// it was the largest part of the daemon's memory, twice, here and in the reader). Just under
/// Graphite's 2 MiB payload, so that each record is one send, handed out without a copy.
const PIECE_BYTES: usize = (2 << 20) - (64 << 10);
/// The largest encoding buffer kept between batches (a piece and its last line; one line
/// longer than a piece makes it larger, and it is freed after its batch).
const KEPT_BUFFER_BYTES: usize = 2 * PIECE_BYTES;
/// Metrics of a block encoded between two looks at the piece's size: a piece passes
/// [`PIECE_BYTES`] by at most this many lines (~24 KiB of HAProxy lines).
const BLOCK_STEP: usize = 256;
/// Room reserved per metric line: HAProxy's lines are 75-95 bytes with a namespace and a
/// hostname (`loadbalancers.vm.haproxy.backend.<b>.server.<s>.<metric> <value> <time>`).
const METRIC_LINE_BYTES: usize = 96;

/// `accept` = encode what the route takes, a piece at a time, into one durable outbox batch.
pub struct OutboxSink {
    name: String,
    encoder: Box<dyn Encoder>,
    route: Route,
    outbox: Arc<Outbox>,
    /// The encoding buffer, kept between batches: a fresh one each round cost its page faults
    /// and the kernel's zeroing of every page (≈3% of HAProxy processing in a profile).
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

    /// Encodes what the route takes of `batch` into `pieces`, handing it each piece as it fills.
    fn encode_in_pieces(&self, batch: SinkBatch<'_>, pieces: &mut Pieces<'_>) -> Result<(), OutboxError> {
        for result in self.route.results(batch) {
            pieces.lines += self.encoder.encode_result(result, pieces.buffer);
            pieces.spill()?;
        }
        if !self.route.takes_every_metric_of(batch) {
            for metric in self.route.metrics(batch) {
                pieces.lines += self.encoder.encode_metric_of(batch.metric_kind, metric, pieces.buffer);
                pieces.spill()?;
            }
            return Ok(());
        }
        for metric in batch.metrics {
            pieces.lines += self
                .encoder
                .encode_metric_of(batch.metric_kind, metric.into(), pieces.buffer);
            pieces.spill()?;
        }
        for block in batch.blocks {
            for start in (0..block.len()).step_by(BLOCK_STEP) {
                let range = start..(start + BLOCK_STEP).min(block.len());
                pieces.lines += self
                    .encoder
                    .encode_block_of(batch.metric_kind, block, range, pieces.buffer);
                pieces.spill()?;
            }
        }
        Ok(())
    }
}

/// The lines of one batch on their way into the outbox: encoded into `buffer`, written as a
/// record of the outbox batch whenever `buffer` passes [`PIECE_BYTES`], except its last line, so
/// that [`Pieces::finish`] always has a last record to write.
struct Pieces<'a> {
    appending: Option<Appending<'a>>,
    outbox: &'a Outbox,
    buffer: &'a mut Vec<u8>,
    /// Lines in `buffer`.
    lines: usize,
}

impl Pieces<'_> {
    fn spill(&mut self) -> Result<(), OutboxError> {
        if self.buffer.len() < PIECE_BYTES || self.lines < 2 {
            return Ok(());
        }
        let body = &self.buffer[..self.buffer.len() - 1];
        let last_line = body.iter().rposition(|&b| b == b'\n').map_or(0, |newline| newline + 1);
        let lines = u32::try_from(self.lines - 1).unwrap_or(u32::MAX);
        let outbox = self.outbox;
        self.appending
            .get_or_insert_with(|| outbox.begin())
            .push(&self.buffer[..last_line], lines)?;
        self.buffer.drain(..last_line);
        self.lines = 1;
        Ok(())
    }

    /// Writes the last record and commits the batch; nothing when no line was encoded.
    fn finish(self) -> Result<(), OutboxError> {
        if self.lines == 0 && self.appending.is_none() {
            return Ok(());
        }
        let lines = u32::try_from(self.lines).unwrap_or(u32::MAX);
        match self.appending {
            Some(appending) => appending.finish(self.buffer, lines),
            None => self.outbox.append(self.buffer, lines),
        }
    }
}

impl ResultSink for OutboxSink {
    fn name(&self) -> &str {
        &self.name
    }

    fn accept(&self, batch: SinkBatch<'_>) -> Result<(), SinkError> {
        let mut buffer = self.buffer.lock().unwrap_or_else(|e| e.into_inner());
        buffer.clear();
        // One allocation for a round's lines (or a piece of them), not a doubling and copy.
        buffer.reserve((batch.metric_count() * METRIC_LINE_BYTES).min(PIECE_BYTES + PIECE_BYTES / 8));
        let mut pieces = Pieces {
            appending: None,
            outbox: &self.outbox,
            buffer: &mut buffer,
            lines: 0,
        };
        let queued = self.encode_in_pieces(batch, &mut pieces).and_then(|()| pieces.finish());
        if buffer.capacity() > KEPT_BUFFER_BYTES {
            *buffer = Vec::new();
        }
        queued.map_err(|e| self.error(format!("cannot queue lines: {e}")))
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

    /// Every line `accept` queued, in order, read back through the outbox.
    fn delivered(outbox: &Arc<Outbox>) -> Vec<u8> {
        let mut reader = outbox.reader();
        let mut out = Vec::new();
        while let Some(batch) = reader.next_batch(crate::sink::graphite::MAX_PAYLOAD).unwrap() {
            out.extend_from_slice(batch.payload());
            outbox
                .acknowledge(batch, crate::sink::outbox::Outcome::Delivered)
                .unwrap();
        }
        out
    }

    /// A sink taking everything into a new outbox in `dir`.
    fn sink_in(dir: &std::path::Path) -> (Arc<Outbox>, OutboxSink) {
        let outbox = Arc::new(Outbox::open(dir, OutboxLimits::default()).unwrap());
        let sink = OutboxSink::new(
            "graphite",
            Box::new(PlainText),
            Route::everything(),
            Arc::clone(&outbox),
        );
        (outbox, sink)
    }

    #[test]
    fn a_large_batch_is_queued_in_pieces_of_whole_lines_as_one_outbox_batch() {
        let dir = tempfile::tempdir().unwrap();
        let (outbox, sink) = sink_in(dir.path());
        let mut metrics = metrics(&[]);
        for i in 0..200_000 {
            metrics.push(Metric {
                path: format!("haproxy.backend.b{i}.scur"),
                value: f64::from(i),
                time: 1_700_000_000,
            });
        }
        // One line longer than a piece on its own, between the others.
        metrics.insert(
            30_000,
            Metric {
                path: "x".repeat(PIECE_BYTES + 10),
                value: 1.0,
                time: 1_700_000_000,
            },
        );
        sink.accept(SinkBatch::round(&[], &metrics)).unwrap();
        let expected: Vec<u8> = metrics
            .iter()
            .flat_map(|m| format!("{} {} {}\n", m.path, m.value, m.time).into_bytes())
            .collect();
        assert!(expected.len() > 4 * PIECE_BYTES, "{} bytes", expected.len());
        let queued = status(dir.path()).unwrap();
        assert_eq!(queued.lines, 200_001);
        assert!(queued.records >= 5, "{} records", queued.records);
        // Written with `more` flags and one last record: reopening cuts nothing.
        drop((sink, outbox));
        let reopened = Arc::new(Outbox::open(dir.path(), OutboxLimits::default()).unwrap());
        assert_eq!(status(dir.path()).unwrap().dropped_records, 0);
        assert_eq!(delivered(&reopened), expected, "every line, whole, in order");
    }

    #[test]
    fn blocks_are_queued_as_their_metrics_would_be_also_in_pieces() {
        use crate::shared::measurement::MetricBlock;
        let mut blocks = Vec::new();
        for b in 0..3 {
            let mut block = MetricBlock::with_capacity(1_700_000_000 + b, 40_000, 40_000 * 30);
            for i in 0..40_000 {
                block.push("haproxy.server.", &format!("s{b}.{i}"), f64::from(i));
            }
            blocks.push(block);
        }
        let as_metrics: Vec<Metric> = blocks.iter().flat_map(MetricBlock::to_metrics).collect();
        let queue = |batch: SinkBatch<'_>| {
            let dir = tempfile::tempdir().unwrap();
            let (outbox, sink) = sink_in(dir.path());
            sink.accept(batch).unwrap();
            let records = status(dir.path()).unwrap().records;
            (delivered(&outbox), records)
        };
        let (blockwise, records) = queue(SinkBatch::round_blocks(&[], &blocks));
        let (one_by_one, _) = queue(SinkBatch::round(&[], &as_metrics));
        assert!(records >= 2, "{records} records");
        assert_eq!(blockwise.len(), one_by_one.len());
        assert!(blockwise == one_by_one, "the same lines in the same order");
    }
}
