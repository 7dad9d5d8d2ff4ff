//! Sending a Kafka sink's outbox lines through librdkafka's idempotent producer (`acks=all`),
//! one message per line, and returning only once every message of the batch has its delivery
//! report (see [`super`] for the line format and the delivery guarantees).
//!
//! The producer is a `BaseProducer` polled by the sink's delivery thread itself (no thread of
//! rdkafka's, no async runtime): `send` hands librdkafka the batch's messages, then polls for
//! their reports, a few milliseconds at a time, looking at the daemon's stop flag in between.
//! Each report settles its message: delivered, or rejected for good (counted, not retried).
//! When some reports are failures, `send` returns a transient error and remembers which lines of
//! this batch are settled; the delivery thread sends the same batch again after its backoff and
//! only the unsettled lines are produced again (counted as resent), by a new producer (a new
//! producer id: a broker restarted without its state knows the old one no more, and librdkafka
//! would retry it forever against "unknown producer id").
//!
//! Owns on disk: nothing. Called by the sink's delivery thread ([`crate::sink::delivery`]).

use super::{KafkaOptions, MessageKind};
use crate::sink::delivery::DeliveryStats;
use crate::sink::{DeliveryError, Transport};
use rdkafka::config::{ClientConfig, RDKafkaLogLevel};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};
use rdkafka::ClientContext;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tracing::{debug, info, warn};

/// Bytes of outbox lines handed to one `send`: about 30,000 Graphite-sized messages, reported
/// within a few round trips to the brokers.
const MAX_PAYLOAD: usize = 4 << 20;

/// How long one poll for delivery reports waits before the stop flag is looked at again.
const POLL: Duration = Duration::from_millis(5);

/// What a delivery report said of one message.
#[derive(Debug)]
enum Report {
    Delivered,
    /// Refused for good: producing it again cannot succeed.
    Rejected(String),
    /// Not delivered this time (timed out, brokers unreachable): produced again later.
    Failed(String),
}

/// Collects the delivery reports the producer's poll hands over, by line index.
struct Reports {
    reports: Mutex<Vec<(usize, Report)>>,
}

impl Reports {
    fn take(&self) -> Vec<(usize, Report)> {
        std::mem::take(&mut *self.reports.lock().unwrap_or_else(|p| p.into_inner()))
    }
}

impl ClientContext for Reports {
    fn log(&self, level: RDKafkaLogLevel, facility: &str, message: &str) {
        match level {
            RDKafkaLogLevel::Emerg | RDKafkaLogLevel::Alert | RDKafkaLogLevel::Critical | RDKafkaLogLevel::Error => {
                warn!(facility, "librdkafka: {message}")
            }
            RDKafkaLogLevel::Warning | RDKafkaLogLevel::Notice => info!(facility, "librdkafka: {message}"),
            RDKafkaLogLevel::Info | RDKafkaLogLevel::Debug => debug!(facility, "librdkafka: {message}"),
        }
    }

    fn error(&self, error: KafkaError, reason: &str) {
        // Brokers down or unreachable: the delivery thread reports the failed sends itself.
        debug!("librdkafka: {error}: {reason}");
    }
}

impl ProducerContext for Reports {
    type DeliveryOpaque = usize;

    fn delivery(&self, result: &DeliveryResult<'_>, index: usize) {
        let report = match result {
            Ok(_) => Report::Delivered,
            Err((error, _)) => classify(error),
        };
        self.reports
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push((index, report));
    }
}

/// Whether an error is a message's rejection for good or a failure worth another attempt.
fn classify(error: &KafkaError) -> Report {
    use RDKafkaErrorCode as E;
    match error.rdkafka_error_code() {
        Some(
            E::MessageSizeTooLarge
            | E::InvalidMessageSize
            | E::InvalidMessage
            | E::InvalidRecord
            | E::UnknownTopic
            | E::UnknownTopicOrPartition
            | E::TopicAuthorizationFailed
            | E::InvalidTopic,
        ) => Report::Rejected(error.to_string()),
        _ => Report::Failed(error.to_string()),
    }
}

/// The batch being sent and which of its lines are settled.
struct Progress {
    fingerprint: u64,
    settled: Vec<bool>,
}

/// See the module documentation.
pub struct KafkaTransport {
    producer: BaseProducer<Reports>,
    /// librdkafka's settings, to make a new producer with.
    config: ClientConfig,
    /// Whether the last send ended with failed reports: the next one starts a new producer.
    renew: bool,
    brokers: String,
    /// Topic per kind: ping, haproxy, self.
    topics: [String; 3],
    progress: Option<Progress>,
    stats: Arc<DeliveryStats>,
    shutdown: Arc<AtomicBool>,
}

/// librdkafka's configuration for `options` (every key the sink sets, then the pass-through).
pub fn client_config(options: &KafkaOptions, node: &str) -> ClientConfig {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", options.brokers.join(","))
        .set("client.id", format!("spoolmon-{node}"))
        .set("acks", "all")
        .set("enable.idempotence", "true")
        .set("compression.type", options.compression.librdkafka())
        .set(
            "message.timeout.ms",
            ((options.delivery_timeout * 1000.0).round() as u64).max(1).to_string(),
        )
        .set("message.max.bytes", options.max_message_bytes.to_string())
        // A topic the cluster does not have (and does not create) is a rejection once the
        // metadata has not shown it for half the delivery timeout; librdkafka's default (30 s,
        // the default delivery timeout too) would let the message time out first and be
        // retried forever. `librdkafka:` may set it otherwise.
        .set(
            "topic.metadata.propagation.max.ms",
            ((options.delivery_timeout * 500.0).round() as u64).max(1).to_string(),
        );
    let protocol = match (&options.tls, &options.sasl) {
        (None, None) => "plaintext",
        (Some(_), None) => "ssl",
        (None, Some(_)) => "sasl_plaintext",
        (Some(_), Some(_)) => "sasl_ssl",
    };
    config.set("security.protocol", protocol);
    if let Some(tls) = &options.tls {
        for (key, path) in [
            ("ssl.ca.location", &tls.ca),
            ("ssl.certificate.location", &tls.cert),
            ("ssl.key.location", &tls.key),
        ] {
            if let Some(path) = path {
                config.set(key, path.display().to_string());
            }
        }
    }
    if let Some(sasl) = &options.sasl {
        config
            .set("sasl.mechanisms", &sasl.mechanism)
            .set("sasl.username", &sasl.username)
            .set("sasl.password", &sasl.password);
    }
    for (key, value) in &options.librdkafka {
        config.set(key, value);
    }
    config
}

impl KafkaTransport {
    /// A producer for `options` (it connects when it first sends); an error names the setting
    /// librdkafka refused.
    pub fn new(
        options: &KafkaOptions,
        node: &str,
        stats: Arc<DeliveryStats>,
        shutdown: Arc<AtomicBool>,
    ) -> Result<KafkaTransport, String> {
        let mut config = client_config(options, node);
        config.set_log_level(RDKafkaLogLevel::Info);
        let producer = producer(&config)?;
        Ok(KafkaTransport {
            producer,
            config,
            renew: false,
            brokers: options.brokers.join(","),
            topics: [
                options.topic(MessageKind::Ping, node),
                options.topic(MessageKind::Haproxy, node),
                options.topic(MessageKind::SelfMetrics, node),
            ],
            progress: None,
            stats,
            shutdown,
        })
    }

    fn topic(&self, kind: MessageKind) -> &str {
        match kind {
            MessageKind::Ping => &self.topics[0],
            MessageKind::Haproxy => &self.topics[1],
            MessageKind::SelfMetrics => &self.topics[2],
        }
    }

    /// Hands message `index` to librdkafka, waiting while its queue is full; `Err` when it
    /// refused the message at once (the report it stands for).
    fn produce(&self, index: usize, topic: &str, key: &[u8], message: &[u8]) -> Result<(), Report> {
        let mut record = BaseRecord::with_opaque_to(topic, index).payload(message);
        if !key.is_empty() {
            record = record.key(key);
        }
        loop {
            match self.producer.send(record) {
                Ok(()) => return Ok(()),
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                    if self.shutdown.load(Ordering::Relaxed) {
                        return Err(Report::Failed("stopping".into()));
                    }
                    self.producer.poll(POLL);
                    record = back;
                }
                Err((error, _)) => return Err(classify(&error)),
            }
        }
    }
}

/// A new producer with `config`; an error names the setting librdkafka refused.
fn producer(config: &ClientConfig) -> Result<BaseProducer<Reports>, String> {
    let reports = Reports {
        reports: Mutex::new(Vec::new()),
    };
    config
        .create_with_context(reports)
        .map_err(|e| format!("librdkafka refused the settings: {e}"))
}

/// Splits an outbox line into its kind, key and message.
fn parse_line(line: &[u8]) -> Option<(MessageKind, &[u8], &[u8])> {
    let kind = MessageKind::from_letter(*line.first()?)?;
    let rest = line.get(1..)?.strip_prefix(b"\t")?;
    let tab = memchr::memchr(b'\t', rest)?;
    Some((kind, &rest[..tab], &rest[tab + 1..]))
}

impl Transport for KafkaTransport {
    fn send(&mut self, payload: &[u8]) -> Result<(), DeliveryError> {
        if self.renew {
            // After failed reports, a new producer: a new producer id from the brokers. The old
            // one's id may be unknown to them now (a broker that lost its state answers "unknown
            // producer id" to every retry of it, forever); what the old one had in flight is
            // not waited for (it is produced again, counted as resent).
            self.producer
                .purge(rdkafka::producer::PurgeConfig::default().queue().inflight());
            self.producer = producer(&self.config).map_err(DeliveryError::Transient)?;
            self.renew = false;
        }
        let lines: Vec<&[u8]> = payload.split(|b| *b == b'\n').filter(|l| !l.is_empty()).collect();
        let fingerprint = xxhash_rust::xxh3::xxh3_64(payload);
        // `again`: this batch was produced before (its failed lines are produced a second time).
        let (mut progress, again) = match self.progress.take() {
            Some(p) if p.fingerprint == fingerprint && p.settled.len() == lines.len() => (p, true),
            _ => (
                Progress {
                    fingerprint,
                    settled: vec![false; lines.len()],
                },
                false,
            ),
        };
        let mut outstanding = 0usize;
        let mut rejected: Vec<String> = Vec::new();
        let mut failed: Option<String> = None;
        let mut resent = 0u64;
        let mut settle = |progress: &mut Progress, index: usize, report: Report| match report {
            Report::Delivered => progress.settled[index] = true,
            Report::Rejected(why) => {
                progress.settled[index] = true;
                rejected.push(why);
            }
            Report::Failed(why) => {
                failed.get_or_insert(why);
            }
        };
        for (index, line) in lines.iter().enumerate() {
            if progress.settled[index] {
                continue;
            }
            let Some((kind, key, message)) = parse_line(line) else {
                settle(
                    &mut progress,
                    index,
                    Report::Rejected(format!(
                        "a malformed outbox line: {}",
                        crate::orders::book::printable(&String::from_utf8_lossy(line))
                    )),
                );
                continue;
            };
            match self.produce(index, self.topic(kind), key, message) {
                Ok(()) => {
                    outstanding += 1;
                    resent += u64::from(again);
                }
                Err(report) => settle(&mut progress, index, report),
            }
            if self.shutdown.load(Ordering::Relaxed) {
                break;
            }
        }
        while outstanding > 0 {
            self.producer.poll(POLL);
            for (index, report) in self.producer.context().take() {
                if index < progress.settled.len() {
                    outstanding = outstanding.saturating_sub(1);
                    settle(&mut progress, index, report);
                }
            }
            if outstanding > 0 && self.shutdown.load(Ordering::Relaxed) {
                // What is still in flight is sent again after the restart (not acknowledged).
                failed.get_or_insert_with(|| "stopping with messages in flight".into());
                break;
            }
        }
        if resent > 0 {
            self.stats.resent_lines.fetch_add(resent, Ordering::Relaxed);
        }
        if let Some(first) = rejected.first() {
            self.stats
                .rejected_lines
                .fetch_add(rejected.len() as u64, Ordering::Relaxed);
            self.stats
                .last_error
                .set(format!("{} message(s) rejected: {first}", rejected.len()));
            warn!(to = %self.describe(), rejected = rejected.len(), "Kafka rejected messages; they are dropped: {first}");
        }
        if progress.settled.iter().all(|s| *s) {
            return Ok(());
        }
        let unsettled = progress.settled.iter().filter(|s| !**s).count();
        self.progress = Some(progress);
        self.renew = true;
        Err(DeliveryError::Transient(format!(
            "{unsettled} of {} message(s) not delivered: {}",
            lines.len(),
            failed.unwrap_or_else(|| "no delivery report".into())
        )))
    }

    fn max_payload(&self) -> usize {
        MAX_PAYLOAD
    }

    fn describe(&self) -> String {
        format!("kafka://{}", self.brokers)
    }
}

impl Drop for KafkaTransport {
    fn drop(&mut self) {
        // Messages in flight are in the outbox still (not acknowledged): nothing to wait for.
        self.producer
            .purge(rdkafka::producer::PurgeConfig::default().queue().inflight());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_outbox_line_is_split_into_kind_key_and_message() {
        let (kind, key, message) = parse_line(b"p\tdc1/web-1\t{\"a\":\"x\ty\"}").unwrap();
        assert_eq!(kind, MessageKind::Ping);
        assert_eq!(key, b"dc1/web-1");
        assert_eq!(message, b"{\"a\":\"x\ty\"}", "tabs in the message are kept");
        assert_eq!(parse_line(b"h\t\tvalue").unwrap().1, b"", "no key");
        for bad in [&b""[..], b"x\tk\tm", b"p", b"p\tno-second-tab", b"pk\tm"] {
            assert!(parse_line(bad).is_none(), "{:?}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn errors_that_cannot_heal_are_rejections_the_rest_failures() {
        let rejected = KafkaError::MessageProduction(RDKafkaErrorCode::MessageSizeTooLarge);
        assert!(matches!(classify(&rejected), Report::Rejected(_)));
        let unknown = KafkaError::MessageProduction(RDKafkaErrorCode::UnknownTopic);
        assert!(matches!(classify(&unknown), Report::Rejected(_)));
        let timed_out = KafkaError::MessageProduction(RDKafkaErrorCode::MessageTimedOut);
        assert!(matches!(classify(&timed_out), Report::Failed(_)));
    }
}
