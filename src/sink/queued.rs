//! A sink that encodes each batch into lines and queues them in its outbox; its delivery thread
//! (see [`super::delivery`]) forwards them.

use super::outbox::Outbox;
use super::Encoder;
use crate::process::handoff::ResultSink;
use crate::process::handoff::SinkBatch;
use crate::process::handoff::SinkError;
use std::sync::Arc;

/// `accept` = encode into one buffer + one durable [`Outbox::append`].
pub struct OutboxSink {
    name: String,
    encoder: Box<dyn Encoder>,
    outbox: Arc<Outbox>,
}

impl OutboxSink {
    pub fn new(name: &str, encoder: Box<dyn Encoder>, outbox: Arc<Outbox>) -> OutboxSink {
        OutboxSink {
            name: name.to_owned(),
            encoder,
            outbox,
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
        let mut lines = Vec::new();
        let count = self.encoder.encode(batch, &mut lines);
        if count == 0 {
            return Ok(());
        }
        let count = u32::try_from(count).map_err(|_| self.error(format!("{count} lines in one batch")))?;
        self.outbox
            .append(&lines, count)
            .map_err(|e| self.error(format!("cannot queue {count} lines: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::shared::measurement::Metric;
    use crate::sink::outbox::{status, OutboxLimits};
    use std::io::Write;

    struct PlainText;

    impl Encoder for PlainText {
        fn encode(&self, batch: SinkBatch<'_>, out: &mut Vec<u8>) -> usize {
            for metric in batch.metrics {
                writeln!(out, "{} {} {}", metric.path, metric.value, metric.time).unwrap();
            }
            batch.metrics.len()
        }
    }

    #[test]
    fn accepted_batch_is_one_durable_record_and_an_empty_one_none() {
        let dir = tempfile::tempdir().unwrap();
        let outbox = Arc::new(Outbox::open(dir.path(), OutboxLimits::default()).unwrap());
        let sink = OutboxSink::new("graphite", Box::new(PlainText), outbox);
        let metrics: Vec<Metric> = (0..3)
            .map(|i| Metric {
                path: format!("haproxy.frontend.www.scur{i}"),
                value: f64::from(i),
                time: 1_700_000_000,
            })
            .collect();
        let batch = SinkBatch {
            results: &[],
            metrics: &metrics,
        };
        sink.accept(batch).unwrap();
        sink.accept(SinkBatch::default()).unwrap();
        let queued = status(dir.path()).unwrap();
        assert_eq!((queued.records, queued.lines), (1, 3));
        assert_eq!(sink.name(), "graphite");
    }
}
