//! A sink that encodes each batch into lines and queues them in its outbox; its delivery thread
//! (see [`super::delivery`]) forwards them.

use super::outbox::Outbox;
use super::{Encoder, ResultSink, SinkBatch, SinkError};
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
