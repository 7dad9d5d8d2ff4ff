//! The Kafka sink (`type: kafka`): every ping result, HAProxy metric and self-metric as one
//! Kafka message, in the topic of its kind, keyed by its series (the order id, the metric
//! path), so that one series stays in one partition and in order.
//!
//! Through the outbox like every sink ([`super::queued`]): `accept` appends one line per message
//! to `outbox/<sink>/`, `<kind> \t <key> \t <message> \n` (kind `p`, `h` or `s`; an empty key
//! for `key: none`), the message already in its `format:` (JSON, line protocol or Graphite
//! plaintext, none of which holds a newline). The delivery thread hands a batch of lines to
//! [`transport::KafkaTransport`], which produces each through librdkafka's idempotent producer
//! (`acks=all`) to the topic its kind names now (the config read at start, so a changed topic
//! applies to the backlog too) and returns only once every message of the batch has its delivery
//! report. The outbox's acknowledgement therefore advances only on delivery reports: a broker
//! outage or restart is a backlog, never a loss.
//!
//! Repeats: librdkafka retries inside the idempotent producer without duplicates. A message whose
//! report is a failure (its `delivery-timeout` passed, the broker unreachable) is produced again
//! with the rest of its batch's failures after a backoff; messages of the batch already reported
//! delivered are not (the transport remembers them for the batch it is sending). After a crash,
//! what was delivered but not yet acknowledged in the outbox is sent again: at most the
//! outbox's acknowledgement lag (`OutboxLimits::ack_bytes`) plus one batch. Rejections for good
//! (message too large, unknown topic when the cluster does not create topics, not authorised)
//! are counted as rejected lines, logged with the broker's reason, and do not stall the sink.
//!
//! The JSON of each kind is documented field by field in spool-layout.md ("Kafka messages").
//!
//! Owns on disk: `outbox/<sink>/` (through [`super::outbox`]). Called by
//! [`super::running`], which starts it like the other sinks with an outbox.

pub mod transport;

use super::graphite::GraphiteEncoder;
use super::influx::{InfluxEncoder, Precision};
use super::route::{Kind, MetricGlobs, OrderGlobs, RouteKeys};
use super::{Encoder, OutboxBounds};
use crate::process::handoff::MetricKind;
use crate::shared::measurement::{MetricBlock, MetricRef, OrderResult};
use crate::shared::option::{check_printable, check_seconds, InvalidOption};
use crate::shared::stats::PingStats;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::PathBuf;

/// Options of a Kafka sink.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(default, rename_all = "kebab-case", deny_unknown_fields)]
pub struct KafkaOptions {
    /// Bootstrap brokers, `host:port` each (librdkafka's `bootstrap.servers`). Required.
    pub brokers: Vec<String>,
    /// The topic of each kind; `{node}` is replaced by this node's name.
    pub topics: Topics,
    /// What a message's key is: `series` (the order id, the metric path: one series in one
    /// partition, in order; the default), `node` (this node's name) or `none` (spread).
    pub key: KeyChoice,
    /// How a message is written: `json` (the default), `influx` (line protocol, as Telegraf's
    /// `outputs.kafka` writes), `graphite` (plaintext).
    pub format: MessageFormat,
    /// First component of every Graphite path (`format: graphite`); the node's name follows.
    /// Default `spoolmon`.
    pub namespace: String,
    /// Compression of message batches: `none`, `gzip`, `snappy`, `lz4` (the default), `zstd`.
    pub compression: Compression,
    /// TLS to the brokers (`security.protocol: ssl`, or `sasl_ssl` with `sasl:`).
    pub tls: Option<KafkaTls>,
    /// SASL authentication (`PLAIN`, `SCRAM-SHA-256`, `SCRAM-SHA-512`).
    pub sasl: Option<KafkaSasl>,
    /// Seconds librdkafka keeps trying to deliver a message before it reports a failure
    /// (`message.timeout.ms`); the message is then produced again after a backoff. Default 30.
    pub delivery_timeout: f64,
    /// Largest message, bytes (`message.max.bytes`); a longer one is rejected and counted.
    /// Default 1000000.
    pub max_message_bytes: u32,
    /// More librdkafka settings, passed through as they are (e.g. `linger.ms`,
    /// `ssl.endpoint.identification.algorithm`). Not `acks`, `enable.idempotence` or the keys
    /// the options above set.
    pub librdkafka: BTreeMap<String, String>,
    /// Size and age bounds of this sink's outbox.
    pub outbox: OutboxBounds,
    /// Kinds of data this sink takes: `ping`, `haproxy`, `self`. Default all three.
    pub takes: Vec<Kind>,
    /// Which orders' ping results this sink takes (globs on order ids).
    pub orders: OrderGlobs,
    /// Which HAProxy and self metrics this sink takes (globs on their paths).
    pub metrics: MetricGlobs,
}

/// A topic per kind of data.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(default, rename_all = "kebab-case", deny_unknown_fields)]
pub struct Topics {
    /// Ping results. Default `spoolmon.ping`.
    pub ping: String,
    /// HAProxy metrics. Default `spoolmon.haproxy`.
    pub haproxy: String,
    /// Self-metrics. Default `spoolmon.self`.
    #[serde(rename = "self")]
    pub self_metrics: String,
}

impl Default for Topics {
    fn default() -> Self {
        Topics {
            ping: "spoolmon.ping".into(),
            haproxy: "spoolmon.haproxy".into(),
            self_metrics: "spoolmon.self".into(),
        }
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum KeyChoice {
    #[default]
    Series,
    Node,
    None,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum MessageFormat {
    #[default]
    Json,
    Influx,
    Graphite,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Compression {
    None,
    Gzip,
    Snappy,
    #[default]
    Lz4,
    Zstd,
}

impl Compression {
    /// librdkafka's `compression.type`.
    pub fn librdkafka(self) -> &'static str {
        match self {
            Compression::None => "none",
            Compression::Gzip => "gzip",
            Compression::Snappy => "snappy",
            Compression::Lz4 => "lz4",
            Compression::Zstd => "zstd",
        }
    }
}

/// TLS to the brokers: the CA to verify them with (the system's otherwise) and a client
/// certificate for brokers that ask for one.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(default, rename_all = "kebab-case", deny_unknown_fields)]
pub struct KafkaTls {
    /// PEM file of the CA(s) the brokers' certificates are checked against.
    pub ca: Option<PathBuf>,
    /// PEM file of this client's certificate (with `key`).
    pub cert: Option<PathBuf>,
    /// PEM file of this client's private key (with `cert`).
    pub key: Option<PathBuf>,
}

/// SASL credentials.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct KafkaSasl {
    /// `PLAIN`, `SCRAM-SHA-256` or `SCRAM-SHA-512`.
    pub mechanism: String,
    /// The SASL user name.
    pub username: String,
    /// The SASL password (this file is then a secret: keep it readable by spoolmon only).
    pub password: String,
}

/// The librdkafka keys the options set themselves (refused under `librdkafka:`).
const OWN_KEYS: [&str; 12] = [
    "bootstrap.servers",
    "metadata.broker.list",
    "acks",
    "request.required.acks",
    "enable.idempotence",
    "compression.type",
    "compression.codec",
    "message.timeout.ms",
    "delivery.timeout.ms",
    "message.max.bytes",
    "security.protocol",
    "sasl.mechanisms",
];

impl Default for KafkaOptions {
    fn default() -> Self {
        KafkaOptions {
            brokers: Vec::new(),
            topics: Topics::default(),
            key: KeyChoice::Series,
            format: MessageFormat::Json,
            namespace: "spoolmon".into(),
            compression: Compression::Lz4,
            tls: None,
            sasl: None,
            delivery_timeout: 30.0,
            max_message_bytes: 1_000_000,
            librdkafka: BTreeMap::new(),
            outbox: OutboxBounds::default(),
            takes: vec![Kind::Ping, Kind::Haproxy, Kind::SelfMetrics],
            orders: OrderGlobs::default(),
            metrics: MetricGlobs::default(),
        }
    }
}

impl KafkaOptions {
    pub fn route_keys(&self) -> RouteKeys<'_> {
        RouteKeys {
            takes: &self.takes,
            orders: &self.orders,
            metrics: &self.metrics,
        }
    }

    /// Checks every option; the error names the first bad key.
    pub fn validate(&self) -> Result<(), InvalidOption> {
        self.outbox.validate()?;
        if self.brokers.is_empty() {
            return Err(InvalidOption::new(
                "kafka.brokers",
                "name at least one broker, host:port",
            ));
        }
        for broker in &self.brokers {
            check_printable("kafka.brokers", broker)?;
            let port = broker.rsplit_once(':').and_then(|(host, port)| {
                (!host.is_empty() && !broker.contains([',', ' '])).then(|| port.parse::<u16>().ok())?
            });
            if port.is_none_or(|p| p == 0) {
                return Err(InvalidOption::new(
                    "kafka.brokers",
                    format!("{broker:?} is not host:port"),
                ));
            }
        }
        for (key, topic) in [
            ("kafka.topics.ping", &self.topics.ping),
            ("kafka.topics.haproxy", &self.topics.haproxy),
            ("kafka.topics.self", &self.topics.self_metrics),
        ] {
            check_topic(key, &topic.replace("{node}", "n"))?;
        }
        if self.namespace.is_empty() || self.namespace.contains([' ', '\t', '\n']) {
            return Err(InvalidOption::new(
                "kafka.namespace",
                "must be a path component without spaces",
            ));
        }
        check_seconds("kafka.delivery-timeout", self.delivery_timeout, 0.1)?;
        if self.max_message_bytes < 1000 {
            return Err(InvalidOption::new("kafka.max-message-bytes", "must be at least 1000"));
        }
        if let Some(sasl) = &self.sasl {
            if !["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"].contains(&sasl.mechanism.as_str()) {
                return Err(InvalidOption::new(
                    "kafka.sasl.mechanism",
                    "must be PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512",
                ));
            }
        }
        if let Some(tls) = &self.tls {
            if tls.cert.is_some() != tls.key.is_some() {
                return Err(InvalidOption::new("kafka.tls", "cert and key go together"));
            }
        }
        for key in self.librdkafka.keys() {
            if OWN_KEYS.contains(&key.as_str()) {
                return Err(InvalidOption::new(
                    &format!("kafka.librdkafka.{key}"),
                    "is set by the sink's own options",
                ));
            }
        }
        Ok(())
    }

    /// The topic of `kind` for node `node`.
    pub fn topic(&self, kind: MessageKind, node: &str) -> String {
        let template = match kind {
            MessageKind::Ping => &self.topics.ping,
            MessageKind::Haproxy => &self.topics.haproxy,
            MessageKind::SelfMetrics => &self.topics.self_metrics,
        };
        template.replace("{node}", node)
    }
}

/// Kafka's rule for topic names: 1 to 249 of `[a-zA-Z0-9._-]`, not `.` or `..`.
fn check_topic(key: &str, topic: &str) -> Result<(), InvalidOption> {
    let legal = topic
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if topic.is_empty() || topic.len() > 249 || !legal || topic == "." || topic == ".." {
        return Err(InvalidOption::new(
            key,
            format!("{topic:?}: a topic is 1 to 249 of a-z A-Z 0-9 . _ - ({{node}} allowed)"),
        ));
    }
    Ok(())
}

/// What a message is, and so which topic it goes to; its letter in the outbox line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MessageKind {
    Ping,
    Haproxy,
    SelfMetrics,
}

impl MessageKind {
    fn letter(self) -> u8 {
        match self {
            MessageKind::Ping => b'p',
            MessageKind::Haproxy => b'h',
            MessageKind::SelfMetrics => b's',
        }
    }

    pub fn from_letter(letter: u8) -> Option<MessageKind> {
        match letter {
            b'p' => Some(MessageKind::Ping),
            b'h' => Some(MessageKind::Haproxy),
            b's' => Some(MessageKind::SelfMetrics),
            _ => None,
        }
    }

    fn of_metrics(kind: MetricKind) -> MessageKind {
        match kind {
            MetricKind::Haproxy => MessageKind::Haproxy,
            MetricKind::SelfMetrics => MessageKind::SelfMetrics,
        }
    }

    fn name(self) -> &'static str {
        match self {
            MessageKind::Ping => "ping",
            MessageKind::Haproxy => "haproxy",
            MessageKind::SelfMetrics => "self",
        }
    }
}

/// Encodes the outbox lines of a Kafka sink (see the module documentation).
pub struct KafkaEncoder {
    node: String,
    key: KeyChoice,
    format: MessageFormat,
    graphite: GraphiteEncoder,
    influx: InfluxEncoder,
}

impl KafkaEncoder {
    pub fn new(options: &KafkaOptions, node: &str) -> KafkaEncoder {
        let prefix = format!(
            "{}.{}.",
            options.namespace,
            crate::sink::hostname::path_component(node, true)
        );
        KafkaEncoder {
            node: node.to_string(),
            key: options.key,
            format: options.format,
            graphite: GraphiteEncoder::with_prefix(&options.namespace, &prefix),
            influx: InfluxEncoder::with_tags(&BTreeMap::from([("node".to_string(), node.to_string())]), Precision::Ns),
        }
    }

    /// Writes `<letter> \t <key> \t` for a message of `kind` about `series`.
    fn head(&self, out: &mut Vec<u8>, kind: MessageKind, series: &str) {
        out.push(kind.letter());
        out.push(b'\t');
        match self.key {
            KeyChoice::Series => out.extend(series.bytes().filter(|b| !matches!(b, b'\t' | b'\n'))),
            KeyChoice::Node => out.extend_from_slice(self.node.as_bytes()),
            KeyChoice::None => {}
        }
        out.push(b'\t');
    }

    /// Encodes with `encode` into a scratch buffer of lines and writes each as a message of
    /// `kind` about `series`; returns the messages written.
    fn wrapped(
        &self,
        out: &mut Vec<u8>,
        kind: MessageKind,
        series: &str,
        encode: impl FnOnce(&mut Vec<u8>) -> usize,
    ) -> usize {
        let mut lines = Vec::new();
        if encode(&mut lines) == 0 {
            return 0;
        }
        let mut written = 0;
        for line in lines.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
            self.head(out, kind, series);
            out.extend_from_slice(line);
            out.push(b'\n');
            written += 1;
        }
        written
    }

    fn metric(&self, kind: MessageKind, metric: MetricRef<'_>, out: &mut Vec<u8>) -> usize {
        if metric.path.contains(['\t', '\n']) {
            return 0;
        }
        match self.format {
            MessageFormat::Json => {
                if !metric.value.is_finite() {
                    return 0;
                }
                let node = metric.origin.map_or(self.node.as_str(), |o| o.node.as_str());
                let json = serde_json::json!({
                    "type": kind.name(),
                    "node": node,
                    "path": metric.path,
                    "time": metric.time,
                    "value": metric.value,
                });
                self.head(out, kind, metric.path);
                // serde_json escapes control characters: the message holds no newline.
                let _ = serde_json::to_writer(&mut *out, &json);
                out.push(b'\n');
                1
            }
            MessageFormat::Influx => self.wrapped(out, kind, metric.path, |b| self.influx.encode_metric(metric, b)),
            MessageFormat::Graphite => self.wrapped(out, kind, metric.path, |b| self.graphite.encode_metric(metric, b)),
        }
    }
}

/// An RTT or statistic in seconds as JSON (null when unknown).
fn seconds_json(value: Option<f64>) -> serde_json::Value {
    value
        .filter(|v| v.is_finite())
        .map_or(serde_json::Value::Null, serde_json::Value::from)
}

impl Encoder for KafkaEncoder {
    fn encode_result(&self, result: &OrderResult, out: &mut Vec<u8>) -> usize {
        let series = result.id.as_str();
        match self.format {
            MessageFormat::Json => {
                let stats = PingStats::from_rtts(&result.rtts);
                let (node, order) = match &result.origin {
                    None => (self.node.as_str(), result.id.as_str()),
                    Some(origin) => (origin.node.as_str(), origin.id_at_origin(&result.id)),
                };
                let measured = result.failure.is_none();
                let json = serde_json::json!({
                    "type": "ping",
                    "node": node,
                    "order": order,
                    "time": result.time,
                    "updated": result.updated,
                    "step": result.step,
                    "pings": result.pings,
                    "loss": if measured { serde_json::Value::from(stats.loss) } else { serde_json::Value::Null },
                    "min": seconds_json(stats.min()),
                    "median": seconds_json(stats.median()),
                    "max": seconds_json(stats.max()),
                    "rtts": result.rtts.iter().map(|r| seconds_json(*r)).collect::<Vec<_>>(),
                    "failure": result.failure,
                });
                self.head(out, MessageKind::Ping, series);
                let _ = serde_json::to_writer(&mut *out, &json);
                out.push(b'\n');
                1
            }
            MessageFormat::Influx => {
                self.wrapped(out, MessageKind::Ping, series, |b| self.influx.encode_result(result, b))
            }
            MessageFormat::Graphite => self.wrapped(out, MessageKind::Ping, series, |b| {
                self.graphite.encode_result(result, b)
            }),
        }
    }

    /// A metric whose kind is not given is a HAProxy one (the kind of most metrics).
    fn encode_metric(&self, metric: MetricRef<'_>, out: &mut Vec<u8>) -> usize {
        self.metric(MessageKind::Haproxy, metric, out)
    }

    fn encode_metric_of(&self, kind: MetricKind, metric: MetricRef<'_>, out: &mut Vec<u8>) -> usize {
        self.metric(MessageKind::of_metrics(kind), metric, out)
    }

    fn encode_block_of(
        &self,
        kind: MetricKind,
        block: &MetricBlock,
        range: std::ops::Range<usize>,
        out: &mut Vec<u8>,
    ) -> usize {
        range
            .map(|index| self.encode_metric_of(kind, block.get(index), out))
            .sum()
    }
}

#[cfg(test)]
mod tests;
