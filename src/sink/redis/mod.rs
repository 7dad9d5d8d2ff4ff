//! The Redis sink (`type: redis`): every series into Redis the way PCP's pmseries keeps its
//! time series, so that several nodes writing one Redis can be queried together (the API's
//! `/series/` endpoints read it back).
//!
//! A series is a metric name and its labels: ping results are `<prefix>.ping.loss` (lost
//! pings), `.median`, `.min`, `.max` (seconds) with labels `node` (where it was measured) and
//! `order`; HAProxy and self metrics are `<prefix>.<path>` with `node`. Its id is the SHA-1 of
//! the name and the labels as canonical JSON ([`series_id`]), so every node names a series the
//! same way. Keys, below `key-prefix` (default `spoolmon:`):
//!
//! ```text
//! <p>values:<id>            stream    XADD ... MAXLEN ~ stream-maxlen <ms>-0 value <v>; EXPIRE stream-expire
//! <p>series:<id>            hash      name, labels (JSON)
//! <p>metric.names           set       every name
//! <p>metric.name:<name>     set       ids of that name
//! <p>label.names            set       every label name
//! <p>label:<k>:values       set       every value of label k
//! <p>label:<k>:<v>          set       ids with label k = v
//! ```
//!
//! Through the outbox like every sink ([`super::queued`]): `accept` appends one line per value
//! (`name \t labels \t ms \t value`) to `outbox/<sink>/`; the delivery thread sends them with
//! [`RedisTransport`], pipelined, and acknowledges them only once Redis has answered every
//! command. Redis down or restarting means a backlog, not a loss; the transport reconnects by
//! itself (pmproxy could not, its issue #1357). Delivery is at least once, and a repeat is
//! harmless: a stream entry's id is its time, and Redis refuses an id not above the stream's
//! last (skipped, logged at debug level, not an error). So is a value older than the newest of
//! its series (an older snapshot processed late).

pub mod resp;
pub mod sha1;

use super::route::{Kind, MetricGlobs, OrderGlobs, RouteKeys};
use super::{DeliveryError, Encoder, OutboxBounds, Transport};
use crate::shared::measurement::{MetricRef, OrderResult};
use crate::shared::option::{check_printable, check_seconds, seconds, InvalidOption};
use crate::shared::stats::PingStats;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashSet};

/// Options of a Redis sink.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(default, rename_all = "kebab-case", deny_unknown_fields)]
pub struct RedisOptions {
    /// Redis host name or address. Default `127.0.0.1`.
    pub server: String,
    /// Redis TCP port. Default 6379.
    #[schemars(range(min = 1))]
    pub port: u16,
    /// Password (`AUTH`); none by default.
    pub password: Option<String>,
    /// Database number (`SELECT`). Default 0.
    pub db: u32,
    /// First component of every metric name. Default `spoolmon`.
    pub prefix: String,
    /// What every key starts with. Default `spoolmon:`.
    pub key_prefix: String,
    /// Entries kept per series stream (`XADD ... MAXLEN ~`; pmseries' `stream.maxlen`).
    /// Default 8640 (two days at step 20).
    pub stream_maxlen: u64,
    /// Seconds a series stream lives after its last value (`EXPIRE`; pmseries'
    /// `stream.expire`). Default 86400.
    pub stream_expire: u64,
    /// Seconds to wait for a connection. Default 1.
    pub connect_timeout: f64,
    /// Seconds one write or reply may take. Default 5.
    pub timeout: f64,
    /// Size and age bounds of this sink's outbox.
    pub outbox: OutboxBounds,
    /// Kinds of data this sink takes: `ping`, `haproxy`, `self`. Default all three.
    pub takes: Vec<Kind>,
    /// Which orders' ping results this sink takes (globs on order ids).
    pub orders: OrderGlobs,
    /// Which HAProxy and self metrics this sink takes (globs on their paths).
    pub metrics: MetricGlobs,
}

impl Default for RedisOptions {
    fn default() -> Self {
        RedisOptions {
            server: "127.0.0.1".into(),
            port: 6379,
            password: None,
            db: 0,
            prefix: "spoolmon".into(),
            key_prefix: "spoolmon:".into(),
            stream_maxlen: 8640,
            stream_expire: 86_400,
            connect_timeout: 1.0,
            timeout: 5.0,
            outbox: OutboxBounds::default(),
            takes: vec![Kind::Ping, Kind::Haproxy, Kind::SelfMetrics],
            orders: OrderGlobs::default(),
            metrics: MetricGlobs::default(),
        }
    }
}

impl RedisOptions {
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
        if self.server.is_empty() {
            return Err(InvalidOption::new("redis.server", "must name a host"));
        }
        check_printable("redis.server", &self.server)?;
        if self.port == 0 {
            return Err(InvalidOption::new("redis.port", "must be 1..65535"));
        }
        if self.prefix.is_empty() || self.prefix.contains(['\t', '\n', ' ']) {
            return Err(InvalidOption::new(
                "redis.prefix",
                "must be a name without spaces or tabs",
            ));
        }
        check_printable("redis.key-prefix", &self.key_prefix)?;
        if self.stream_maxlen == 0 {
            return Err(InvalidOption::new("redis.stream-maxlen", "must be at least 1"));
        }
        if self.stream_expire == 0 {
            return Err(InvalidOption::new("redis.stream-expire", "must be at least 1 second"));
        }
        check_seconds("redis.connect-timeout", self.connect_timeout, 0.001)?;
        check_seconds("redis.timeout", self.timeout, 0.001)?;
        Ok(())
    }

    /// Where and how the sink (and the API's `/series/`) connects.
    pub fn endpoint(&self) -> resp::Endpoint {
        resp::Endpoint {
            address: format!("{}:{}", self.server, self.port),
            password: self.password.clone(),
            db: self.db,
            connect_timeout: seconds(self.connect_timeout),
            timeout: seconds(self.timeout),
        }
    }
}

/// A series' id: the SHA-1 of its name, a NUL, and its labels as JSON with sorted keys.
pub fn series_id(name: &str, labels: &BTreeMap<String, String>) -> String {
    let mut text = name.as_bytes().to_vec();
    text.push(0);
    text.extend_from_slice(serde_json::to_string(labels).unwrap_or_default().as_bytes());
    sha1::hex(&text)
}

/// The outbox lines: `name \t labels JSON \t unix ms \t value \n`.
pub struct RedisEncoder {
    prefix: String,
    node: String,
}

impl RedisEncoder {
    pub fn new(options: &RedisOptions, node: &str) -> RedisEncoder {
        RedisEncoder {
            prefix: options.prefix.clone(),
            node: node.to_string(),
        }
    }

    fn line(&self, out: &mut Vec<u8>, name: &str, labels: &BTreeMap<String, String>, time: i64, value: f64) {
        out.extend_from_slice(self.prefix.as_bytes());
        out.push(b'.');
        out.extend_from_slice(name.as_bytes());
        out.push(b'\t');
        out.extend_from_slice(serde_json::to_string(labels).unwrap_or_default().as_bytes());
        out.push(b'\t');
        out.extend_from_slice(itoa::Buffer::new().format(time.saturating_mul(1000)).as_bytes());
        out.push(b'\t');
        out.extend_from_slice(ryu::Buffer::new().format(value).as_bytes());
        out.push(b'\n');
    }
}

impl Encoder for RedisEncoder {
    fn encode_result(&self, result: &OrderResult, out: &mut Vec<u8>) -> usize {
        if result.failure.is_some() {
            return 0;
        }
        let stats = PingStats::from_rtts(&result.rtts);
        let (node, order) = match &result.origin {
            None => (self.node.as_str(), result.id.as_str()),
            Some(origin) => (origin.node.as_str(), origin.id_at_origin(&result.id)),
        };
        let labels = BTreeMap::from([
            ("node".to_string(), node.to_string()),
            ("order".to_string(), order.to_string()),
        ]);
        let mut lines = 0;
        for (name, value) in [
            ("ping.loss", Some(f64::from(stats.loss))),
            ("ping.min", stats.min()),
            ("ping.median", stats.median()),
            ("ping.max", stats.max()),
        ] {
            if let Some(value) = value {
                self.line(out, name, &labels, result.time, value);
                lines += 1;
            }
        }
        lines
    }

    fn encode_metric(&self, metric: MetricRef<'_>, out: &mut Vec<u8>) -> usize {
        if !metric.value.is_finite() || metric.path.contains(['\t', '\n']) {
            return 0;
        }
        let node = metric.origin.map_or(self.node.as_str(), |o| o.node.as_str());
        let labels = BTreeMap::from([("node".to_string(), node.to_string())]);
        self.line(out, metric.path, &labels, metric.time, metric.value);
        1
    }
}

/// Sends the outbox lines as pipelined commands; see the module documentation.
pub struct RedisTransport {
    options: RedisOptions,
    connection: Option<resp::Connection>,
    /// Series whose metadata and indexes this connection has written.
    registered: HashSet<String>,
}

impl RedisTransport {
    pub fn new(options: &RedisOptions) -> RedisTransport {
        RedisTransport {
            options: options.clone(),
            connection: None,
            registered: HashSet::new(),
        }
    }

    fn commands(&self, payload: &[u8], fresh: &mut Vec<String>) -> Result<Vec<Vec<Vec<u8>>>, DeliveryError> {
        let p = &self.options.key_prefix;
        let mut commands = Vec::new();
        let maxlen = self.options.stream_maxlen.to_string();
        let expire = self.options.stream_expire.to_string();
        for line in payload.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
            let text = std::str::from_utf8(line)
                .map_err(|_| DeliveryError::Rejected("an outbox line that is not UTF-8".into()))?;
            let mut fields = text.split('\t');
            let (Some(name), Some(labels), Some(ms), Some(value), None) = (
                fields.next(),
                fields.next(),
                fields.next(),
                fields.next(),
                fields.next(),
            ) else {
                return Err(DeliveryError::Rejected(format!(
                    "a malformed outbox line: {}",
                    crate::orders::book::printable(text)
                )));
            };
            let labels: BTreeMap<String, String> = serde_json::from_str(labels)
                .map_err(|e| DeliveryError::Rejected(format!("labels of an outbox line: {e}")))?;
            let id = series_id(name, &labels);
            if !self.registered.contains(&id) && !fresh.contains(&id) {
                let labels_json = serde_json::to_string(&labels).unwrap_or_default();
                commands.push(words(&[
                    "HSET",
                    &format!("{p}series:{id}"),
                    "name",
                    name,
                    "labels",
                    &labels_json,
                ]));
                commands.push(words(&["SADD", &format!("{p}metric.names"), name]));
                commands.push(words(&["SADD", &format!("{p}metric.name:{name}"), &id]));
                for (key, value) in &labels {
                    commands.push(words(&["SADD", &format!("{p}label.names"), key]));
                    commands.push(words(&["SADD", &format!("{p}label:{key}:values"), value]));
                    commands.push(words(&["SADD", &format!("{p}label:{key}:{value}"), &id]));
                }
                fresh.push(id.clone());
            }
            let stream = format!("{p}values:{id}");
            commands.push(words(&[
                "XADD",
                &stream,
                "MAXLEN",
                "~",
                &maxlen,
                &format!("{ms}-0"),
                "value",
                value,
            ]));
            commands.push(words(&["EXPIRE", &stream, &expire]));
        }
        Ok(commands)
    }
}

fn words(words: &[&str]) -> Vec<Vec<u8>> {
    resp::command(words)
}

impl Transport for RedisTransport {
    fn send(&mut self, payload: &[u8]) -> Result<(), DeliveryError> {
        if self.connection.is_none() {
            let connection = resp::Connection::open(&self.options.endpoint())
                .map_err(|e| DeliveryError::Transient(e.to_string()))?;
            self.connection = Some(connection);
            self.registered.clear();
        }
        let mut fresh = Vec::new();
        let commands = self.commands(payload, &mut fresh)?;
        let replies = match self.connection.as_mut().map(|c| c.pipeline(&commands)) {
            Some(Ok(replies)) => replies,
            Some(Err(e)) => {
                self.connection = None;
                return Err(DeliveryError::Transient(e.to_string()));
            }
            None => return Err(DeliveryError::Transient("not connected".into())),
        };
        let mut first_error = None;
        let mut not_newer = 0u64;
        for reply in &replies {
            if let resp::Reply::Error(e) = reply {
                if e.contains("equal or smaller than the target stream top item") {
                    not_newer += 1;
                } else if first_error.is_none() {
                    first_error = Some(e.clone());
                }
            }
        }
        if not_newer > 0 {
            tracing::debug!(to = %self.describe(), not_newer, "values not newer than their series' newest (repeats, late values) skipped");
        }
        match first_error {
            None => {
                self.registered.extend(fresh);
                Ok(())
            }
            // The key holds something else: the same commands can never succeed.
            Some(e) if e.starts_with("WRONGTYPE") => Err(DeliveryError::Rejected(format!("redis: {e}"))),
            // OOM, LOADING, READONLY, NOAUTH: Redis may take it later.
            Some(e) => {
                self.connection = None;
                Err(DeliveryError::Transient(format!("redis: {e}")))
            }
        }
    }

    fn max_payload(&self) -> usize {
        1 << 20
    }

    fn describe(&self) -> String {
        format!(
            "redis://{}:{}/{}",
            self.options.server, self.options.port, self.options.db
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::shared::measurement::OrderId;

    #[test]
    fn a_result_is_four_lines_with_node_and_order_labels() {
        let encoder = RedisEncoder::new(&RedisOptions::default(), "lb-01");
        let result = OrderResult::builder(OrderId::new("dc1/web-1").unwrap(), 1_800_000_000)
            .rtts([Some(0.001), None, Some(0.003)])
            .build();
        let mut out = Vec::new();
        assert_eq!(encoder.encode_result(&result, &mut out), 4);
        let text = String::from_utf8(out).unwrap();
        let first = text.lines().next().unwrap();
        assert_eq!(
            first,
            "spoolmon.ping.loss\t{\"node\":\"lb-01\",\"order\":\"dc1/web-1\"}\t1800000000000\t1.0"
        );
        assert!(text.contains("spoolmon.ping.median\t"));
    }

    #[test]
    fn series_ids_depend_on_name_and_every_label_only() {
        let labels = |order: &str| {
            BTreeMap::from([
                ("node".to_string(), "a".to_string()),
                ("order".to_string(), order.to_string()),
            ])
        };
        let id = series_id("spoolmon.ping.median", &labels("x"));
        assert_eq!(id.len(), 40);
        assert_eq!(id, series_id("spoolmon.ping.median", &labels("x")));
        assert_ne!(id, series_id("spoolmon.ping.median", &labels("y")));
        assert_ne!(id, series_id("spoolmon.ping.max", &labels("x")));
    }

    #[test]
    fn metadata_is_written_once_per_series_and_bad_lines_are_rejected() {
        let transport = RedisTransport::new(&RedisOptions::default());
        let line = b"spoolmon.ping.loss\t{\"node\":\"a\",\"order\":\"b\"}\t1000\t0\nspoolmon.ping.loss\t{\"node\":\"a\",\"order\":\"b\"}\t2000\t1\n";
        let mut fresh = Vec::new();
        let commands = transport.commands(line, &mut fresh).unwrap();
        let xadds = commands.iter().filter(|c| c[0] == b"XADD").count();
        let hsets = commands.iter().filter(|c| c[0] == b"HSET").count();
        assert_eq!((xadds, hsets, fresh.len()), (2, 1, 1));
        for bad in [
            &b"x\ty\n"[..],
            b"a\tnot json\t1\t2\n",
            b"a\t{}\t1\t2\textra\n",
            b"\xff\n",
        ] {
            assert!(matches!(
                transport.commands(bad, &mut Vec::new()),
                Err(DeliveryError::Rejected(_))
            ));
        }
    }
}
