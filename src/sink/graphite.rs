//! Graphite: results and metrics as plaintext-protocol lines, sent over one persistent TCP
//! connection (haproxystats' `[graphite]` dispatcher, with its options and defaults).
//!
//! Lines are `<path> <value> <unix seconds>\n`. Paths start with the namespace and, with
//! `prefix-hostname`, the host's name as one component (see [`hostname`](super::hostname)):
//!
//! ```text
//! <namespace>[.<host>].ping.<order id>.loss    <lost pings, a count>   <time>
//! <namespace>[.<host>].ping.<order id>.min     <seconds>               <time>
//! <namespace>[.<host>].ping.<order id>.median  <seconds, upper median> <time>
//! <namespace>[.<host>].ping.<order id>.max     <seconds>               <time>
//! <namespace>[.<host>].<metric path>           <value>                 <metric time>
//! ```
//!
//! A result received from another node (a child's, `@<node>/<id>` in `output/`), and a metric
//! aggregated here from a HAProxy snapshot another node shipped, is written under its origin's
//! name in place of this host's, whether `prefix-hostname` is set or not
//! (without it the children's orders would share one series):
//! `<namespace>.<origin node>.ping.<order id at the origin>.loss` (in the node's name every
//! character other than ASCII letters, digits and `-` becomes `_`, dots too), so a parent's Graphite holds
//! a child's series exactly where the child's own Graphite sink would have put them.
//!
//! `time` is the start of the step ([`OrderResult::time`]). An order without answers sends only
//! `loss`: Graphite has no spelling for "no value" other than leaving the point out, and `nan`
//! breaks its functions. A result whose probe could not measure the order (`failure` set) sends
//! no line at all: its step is unknown, and a `loss` line would invent one. In the order id `/` becomes `.` (one Graphite level per directory);
//! every character other than ASCII letters, digits, `-` and `_` becomes `_`, so `app/db.1`
//! is `app.db_1` (and therefore the same series as `app/db_1`). Metric paths are written as
//! given except that whitespace and control characters, which would end the field, become `_`;
//! metrics with a non-finite value are left out. Values: see [`number`](super::number).
//!
//! The transport writes each payload with one `write_all` on a connection kept open between
//! payloads. After any error the connection is dropped and the next `send` reconnects. The
//! plaintext protocol has no acknowledgement: `send` returns when the kernel took the bytes. To
//! catch a carbon that restarted since the last payload, the transport checks before each
//! write whether the peer closed the connection and reconnects if so. A payload resent after
//! an error may repeat lines carbon already stored; Graphite keeps one value per time, so a
//! repeat is harmless.

use super::hostname;
use super::number::{write_integer, write_number};
use super::route::{Kind, MetricGlobs, OrderGlobs, RouteKeys};
use super::{DeliveryError, Encoder, OutboxBounds, RetryPolicy, Transport};
use crate::shared::measurement::OrderResult;
use crate::shared::measurement::{MetricBlock, MetricRef};
use crate::shared::option::{check_printable, check_seconds, seconds, InvalidOption};
use crate::shared::stats::PingStats;
use serde::{Deserialize, Serialize};
use std::io::{self, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

/// Largest payload handed to one `send`: big writes on one connection are what carbon and
/// carbon-c-relay take fastest, and every payload was one acknowledgement (a file replace and a
/// directory fsync): at 512 KiB those were half of the delivery thread's CPU on HAProxy rounds
/// (~14.5 MB each: 28 payloads), at 2 MiB a quarter as many (now the outbox acknowledges every
/// 8 MiB while a backlog is sent, see `OutboxLimits::ack_bytes`). The write-timeout bounds each
/// `write` that makes no progress, not the payload.
pub const MAX_PAYLOAD: usize = 2 * 1024 * 1024;

/// The `[graphite]` options of haproxystats, with its defaults.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(default, rename_all = "kebab-case", deny_unknown_fields)]
pub struct GraphiteOptions {
    /// Graphite (carbon-cache or relay) host name or address. Default `127.0.0.1`.
    pub server: String,
    /// Plaintext-protocol TCP port. Default 2003, carbon's plaintext port (haproxystats'
    /// default is 3002).
    #[schemars(range(min = 1))]
    pub port: u16,
    /// Reconnection attempts after a failure before pausing for `delay`. Default 3.
    pub retries: u32,
    /// Seconds before the first reconnection attempt. Default 1.8.
    pub interval: f64,
    /// Seconds to wait for a connection to be established. Default 1.
    pub connect_timeout: f64,
    /// Seconds one socket write may block. Default 1.
    pub write_timeout: f64,
    /// Seconds to pause after `retries` failed attempts. Default 10.
    pub delay: f64,
    /// Factor applied to the wait before each further attempt. Default 2.
    pub backoff: f64,
    /// First component(s) of every path. Default `loadbalancers`.
    pub namespace: String,
    /// Put the host's name after the namespace. Default true.
    pub prefix_hostname: bool,
    /// Use the fully qualified host name (dots as `_`) rather than the short one. Default true.
    pub fqdn: bool,
    /// Most lines the outbox of this sink holds; when full, the oldest lines are dropped.
    /// Default 1000000.
    pub queue_size: usize,
    /// Host name to use instead of the system's (then shortened or not per `fqdn`). Default:
    /// none, the system's name.
    pub hostname: Option<String>,
    /// Size and age bounds of this sink's outbox (`queue-size` bounds its lines too).
    pub outbox: OutboxBounds,
    /// Kinds of data this sink takes: `ping` (ping results), `haproxy` (HAProxy metrics from
    /// processing), `self` (self-metrics, sent to the sinks `self-metrics: {sinks}` selects).
    /// Default all three.
    pub takes: Vec<Kind>,
    /// Which orders' ping results this sink takes: globs on order ids (`web/**`); see
    /// spool-layout.md, "Routing".
    pub orders: OrderGlobs,
    /// Which HAProxy and self metrics this sink takes: globs on their paths before the
    /// namespace (`haproxy.frontend.*.scur`); see spool-layout.md, "Routing".
    pub metrics: MetricGlobs,
}

impl Default for GraphiteOptions {
    fn default() -> Self {
        GraphiteOptions {
            server: "127.0.0.1".to_string(),
            port: 2003,
            retries: 3,
            interval: 1.8,
            connect_timeout: 1.0,
            write_timeout: 1.0,
            delay: 10.0,
            backoff: 2.0,
            namespace: "loadbalancers".to_string(),
            prefix_hostname: true,
            fqdn: true,
            queue_size: 1_000_000,
            hostname: None,
            outbox: OutboxBounds::default(),
            takes: Kind::ALL.to_vec(),
            orders: OrderGlobs::default(),
            metrics: MetricGlobs::default(),
        }
    }
}

impl GraphiteOptions {
    /// The routing keys (`takes`, `orders`, `metrics`).
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
            return Err(InvalidOption::new("graphite.server", "must name a host"));
        }
        check_printable("graphite.server", &self.server)?;
        if self.port == 0 {
            return Err(InvalidOption::new("graphite.port", "must be 1..65535"));
        }
        check_seconds("graphite.interval", self.interval, 0.0)?;
        check_seconds("graphite.connect-timeout", self.connect_timeout, 0.001)?;
        check_seconds("graphite.write-timeout", self.write_timeout, 0.001)?;
        check_seconds("graphite.delay", self.delay, 0.0)?;
        if !(self.backoff.is_finite() && self.backoff >= 1.0) {
            return Err(InvalidOption::new("graphite.backoff", "must be a number >= 1"));
        }
        check_namespace(&self.namespace)?;
        if self.queue_size == 0 {
            return Err(InvalidOption::new("graphite.queue-size", "must be at least 1"));
        }
        match &self.hostname {
            Some(name) if name.is_empty() => Err(InvalidOption::new("graphite.hostname", "must not be empty")),
            Some(name) => check_printable("graphite.hostname", name),
            None => Ok(()),
        }
    }

    /// How the delivery thread retries after a failure: `retries`, `interval`, `backoff`, `delay`.
    pub fn retry_policy(&self) -> RetryPolicy {
        RetryPolicy {
            retries: self.retries,
            interval: seconds(self.interval),
            backoff: self.backoff,
            delay: seconds(self.delay),
        }
    }

    /// `<namespace>.` or `<namespace>.<host>.`: what every path starts with.
    pub fn path_prefix(&self) -> String {
        if !self.prefix_hostname {
            return format!("{}.", self.namespace);
        }
        let name = match &self.hostname {
            Some(name) => name.clone(),
            None if self.fqdn => hostname::fully_qualified(&hostname::system_hostname()),
            None => hostname::system_hostname(),
        };
        format!("{}.{}.", self.namespace, hostname::path_component(&name, self.fqdn))
    }
}

/// A node's name as one path component, as a host name with `fqdn` (dots become `_`): two
/// nodes whose names differ after a dot stay two.
fn write_node(out: &mut Vec<u8>, node: &str) {
    out.extend(node.bytes().map(|b| match b {
        b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' => b,
        _ => b'_',
    }));
}

/// A namespace is one or more dot-separated, non-empty components without whitespace.
fn check_namespace(namespace: &str) -> Result<(), InvalidOption> {
    check_printable("graphite.namespace", namespace)?;
    if namespace.split('.').any(str::is_empty) {
        return Err(InvalidOption::new(
            "graphite.namespace",
            format!("{namespace:?} must be non-empty names separated by single dots"),
        ));
    }
    Ok(())
}

/// Encodes results and metrics as Graphite plaintext lines (see the module documentation).
#[derive(Clone, Debug)]
pub struct GraphiteEncoder {
    /// `<namespace>[.<host>].`
    prefix: String,
    /// `<namespace>.`: received results add their origin node's name.
    namespace: String,
}

impl GraphiteEncoder {
    /// An encoder with the options' namespace and host name (looked up now, once).
    pub fn new(options: &GraphiteOptions) -> GraphiteEncoder {
        GraphiteEncoder {
            prefix: options.path_prefix(),
            namespace: format!("{}.", options.namespace),
        }
    }

    /// An encoder whose paths start with `prefix` (e.g. `loadbalancers.lb-01.`), and
    /// received results' with `namespace` and their node.
    pub fn with_prefix(namespace: &str, prefix: &str) -> GraphiteEncoder {
        GraphiteEncoder {
            prefix: prefix.to_string(),
            namespace: format!("{namespace}."),
        }
    }

    /// What every path starts with.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// Appends the `loss` line and, if anything answered, the `min`, `median`, `max` lines of
    /// `result`; returns how many lines it appended.
    pub fn encode_result(&self, result: &OrderResult, out: &mut Vec<u8>) -> usize {
        if result.failure.is_some() {
            return 0;
        }
        let stats = PingStats::from_rtts(&result.rtts);
        let start = out.len();
        match &result.origin {
            None => {
                out.extend_from_slice(self.prefix.as_bytes());
                out.extend_from_slice(b"ping.");
                write_order_id(out, result.id.as_str());
            }
            Some(origin) => {
                out.extend_from_slice(self.namespace.as_bytes());
                write_node(out, &origin.node);
                out.extend_from_slice(b".ping.");
                write_order_id(out, origin.id_at_origin(&result.id));
            }
        }
        out.push(b'.');
        let order_path = start..out.len();
        write_tail(out, b"loss", f64::from(stats.loss), result.time);
        let values: [(&[u8], _); 3] = [
            (b"min", stats.min()),
            (b"median", stats.median()),
            (b"max", stats.max()),
        ];
        let mut lines = 1;
        for (name, value) in values {
            if let Some(value) = value {
                out.extend_from_within(order_path.clone());
                write_tail(out, name, value, result.time);
                lines += 1;
            }
        }
        lines
    }

    /// Appends the line of `metric`; returns 1, or 0 if its value is not finite.
    pub fn encode_metric(&self, metric: MetricRef<'_>, out: &mut Vec<u8>) -> usize {
        if !metric.value.is_finite() {
            tracing::debug!(path = %metric.path, value = metric.value, "metric without a finite value left out");
            return 0;
        }
        self.write_prefix(metric.origin, out);
        write_metric_path(out, metric.path);
        write_tail(out, b"", metric.value, metric.time);
        1
    }

    /// `<namespace>[.<host>].`, or `<namespace>.<origin node>.` for what another node sent.
    fn write_prefix(&self, origin: Option<&crate::shared::node::Provenance>, out: &mut Vec<u8>) {
        match origin {
            None => out.extend_from_slice(self.prefix.as_bytes()),
            Some(origin) => {
                out.extend_from_slice(self.namespace.as_bytes());
                write_node(out, &origin.node);
                out.push(b'.');
            }
        }
    }

    /// [`GraphiteEncoder::encode_metric`] for each metric of `range`, with the time formatted
    /// once (the block's 78,455 lines of a HAProxy snapshot share it).
    pub fn encode_block(&self, block: &MetricBlock, range: std::ops::Range<usize>, out: &mut Vec<u8>) -> usize {
        let mut time = Vec::with_capacity(24);
        time.push(b' ');
        write_integer(&mut time, block.time());
        time.push(b'\n');
        let mut prefix = Vec::with_capacity(self.prefix.len() + 32);
        self.write_prefix(block.origin(), &mut prefix);
        let mut lines = 0;
        for index in range {
            let metric = block.get(index);
            if !metric.value.is_finite() {
                lines += self.encode_metric(metric, out);
                continue;
            }
            out.extend_from_slice(&prefix);
            write_metric_path(out, metric.path);
            out.push(b' ');
            write_number(out, metric.value);
            out.extend_from_slice(&time);
            lines += 1;
        }
        lines
    }
}

impl Encoder for GraphiteEncoder {
    fn encode_result(&self, result: &OrderResult, out: &mut Vec<u8>) -> usize {
        GraphiteEncoder::encode_result(self, result, out)
    }

    fn encode_metric(&self, metric: MetricRef<'_>, out: &mut Vec<u8>) -> usize {
        GraphiteEncoder::encode_metric(self, metric, out)
    }

    fn encode_block(&self, block: &MetricBlock, range: std::ops::Range<usize>, out: &mut Vec<u8>) -> usize {
        GraphiteEncoder::encode_block(self, block, range, out)
    }
}

/// Appends `<name> <value> <time>\n`.
fn write_tail(out: &mut Vec<u8>, name: &[u8], value: f64, time: i64) {
    out.extend_from_slice(name);
    out.push(b' ');
    write_number(out, value);
    out.push(b' ');
    write_integer(out, time);
    out.push(b'\n');
}

/// Appends an order id as Graphite levels: `/` → `.`, other unsafe characters → `_`.
fn write_order_id(out: &mut Vec<u8>, id: &str) {
    for &byte in id.as_bytes() {
        match byte {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'_' => out.push(byte),
            b'/' => out.push(b'.'),
            // One `_` per character: for the first byte of a UTF-8 sequence, none for the rest.
            0x80..=0xBF => {}
            _ => out.push(b'_'),
        }
    }
}

/// Appends a metric path with whitespace and control characters (field separators) as `_`.
fn write_metric_path(out: &mut Vec<u8>, path: &str) {
    let bytes = path.as_bytes();
    if is_plain(bytes) {
        out.extend_from_slice(bytes);
    } else {
        out.extend(bytes.iter().map(|&b| if b > b' ' && b != 0x7f { b } else { b'_' }));
    }
}

/// Whether no byte of `bytes` is a space, a control character or DEL. Eight bytes at a time
/// (a HAProxy snapshot's 78,455 paths made this check a tenth of its Graphite encoding, byte by
/// byte): a word has such a byte iff one of its ASCII bytes is below `!` or is `0x7f`; bytes
/// from `0x80` (UTF-8) never count. Exact per byte: no carry crosses into the next byte.
fn is_plain(bytes: &[u8]) -> bool {
    const LOW_BITS: u64 = 0x7f7f_7f7f_7f7f_7f7f;
    const HIGH_BITS: u64 = 0x8080_8080_8080_8080;
    const BANG: u64 = 0x2121_2121_2121_2121;
    let mut words = bytes.chunks_exact(8);
    let mut flagged = 0;
    for word in words.by_ref() {
        let word = u64::from_le_bytes(word.try_into().expect("8 bytes"));
        let low = word & LOW_BITS;
        // Top bit set in each byte whose low 7 bits are >= `!` (no carry: at most 0x7f + 0x5f).
        let at_least_bang = low + (HIGH_BITS - BANG);
        // Top bit set in each byte whose low 7 bits are 0x7f.
        let del = (low + 0x0101_0101_0101_0101) & HIGH_BITS;
        flagged |= (!at_least_bang | del) & !word & HIGH_BITS;
    }
    flagged == 0 && words.remainder().iter().all(|&b| b > b' ' && b != 0x7f)
}

/// Sends payloads to carbon over one persistent TCP connection, reconnecting after errors.
#[derive(Debug)]
pub struct GraphiteTransport {
    server: String,
    port: u16,
    connect_timeout: Duration,
    write_timeout: Duration,
    connection: Option<TcpStream>,
}

impl GraphiteTransport {
    /// A transport to `server:port`; it connects on the first `send`.
    pub fn new(options: &GraphiteOptions) -> GraphiteTransport {
        GraphiteTransport {
            server: options.server.clone(),
            port: options.port,
            connect_timeout: seconds(options.connect_timeout),
            write_timeout: seconds(options.write_timeout),
            connection: None,
        }
    }

    /// The open connection, after connecting if there is none or the peer closed it.
    fn connection(&mut self) -> Result<&mut TcpStream, DeliveryError> {
        if self.connection.as_ref().is_some_and(peer_closed) {
            tracing::info!(to = %self.describe(), "graphite closed the connection; reconnecting");
            self.connection = None;
        }
        if self.connection.is_none() {
            let stream = self.connect()?;
            tracing::info!(to = %self.describe(), "connected to graphite");
            self.connection = Some(stream);
        }
        Ok(self.connection.as_mut().expect("connected above"))
    }

    /// Connects to the first address of `server` that accepts within the connect time-out.
    fn connect(&self) -> Result<TcpStream, DeliveryError> {
        let addresses = (self.server.as_str(), self.port)
            .to_socket_addrs()
            .map_err(|e| DeliveryError::Transient(format!("resolving {}: {e}", self.server)))?;
        let mut last_error = io::Error::new(io::ErrorKind::NotFound, "no address");
        for address in addresses {
            match TcpStream::connect_timeout(&address, self.connect_timeout) {
                Ok(stream) => {
                    stream
                        .set_write_timeout(Some(self.write_timeout))
                        .and_then(|()| stream.set_nodelay(true))
                        .map_err(|e| DeliveryError::Transient(format!("configuring socket: {e}")))?;
                    return Ok(stream);
                }
                Err(e) => last_error = e,
            }
        }
        Err(DeliveryError::Transient(format!(
            "connecting to {}: {last_error}",
            self.describe()
        )))
    }
}

/// True if the peer has closed `stream` (or it failed): carbon never sends anything, so a
/// readable socket means end of file or an error.
fn peer_closed(stream: &TcpStream) -> bool {
    if stream.set_nonblocking(true).is_err() {
        return true;
    }
    let closed = match (&*stream).read(&mut [0u8; 1]) {
        Ok(0) => true,
        Ok(_) => false,
        Err(e) => e.kind() != io::ErrorKind::WouldBlock,
    };
    stream.set_nonblocking(false).is_err() || closed
}

impl Transport for GraphiteTransport {
    fn send(&mut self, payload: &[u8]) -> Result<(), DeliveryError> {
        let connection = self.connection()?;
        if let Err(e) = connection.write_all(payload) {
            self.connection = None;
            return Err(DeliveryError::Transient(format!("writing to {}: {e}", self.describe())));
        }
        Ok(())
    }

    fn max_payload(&self) -> usize {
        MAX_PAYLOAD
    }

    fn describe(&self) -> String {
        format!("tcp://{}:{}", self.server, self.port)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::process::handoff::SinkBatch;
    use crate::shared::measurement::{Metric, OrderId};

    fn result(id: &str, rtts: Vec<Option<f64>>) -> OrderResult {
        OrderResult::builder(OrderId::new(id).unwrap(), 1_700_000_000)
            .rtts(rtts)
            .build()
    }

    #[test]
    fn a_received_result_is_written_under_its_origin_node_and_its_id_there() {
        let mut received = result("@child.dc1/lan/t1", vec![Some(0.001)]);
        received.origin = Some(std::sync::Arc::new(crate::shared::node::Provenance {
            node: "child.dc1".into(),
            chain: vec![crate::shared::node::MachineGuid::random()],
        }));
        let (text, lines) = encode(&[received.clone()], &[]);
        assert_eq!(lines, 4);
        assert!(
            text.starts_with("ns.child_dc1.ping.lan.t1.loss 0 1700000000\n"),
            "{text}"
        );
        // Without prefix-hostname the origin is still named: children never share a series.
        let encoder = GraphiteEncoder::with_prefix("ns", "ns.");
        let mut out = Vec::new();
        encoder.encode_result(&received, &mut out);
        assert!(String::from_utf8(out)
            .unwrap()
            .starts_with("ns.child_dc1.ping.lan.t1.loss "));
    }

    fn encode(results: &[OrderResult], metrics: &[Metric]) -> (String, usize) {
        let encoder = GraphiteEncoder::with_prefix("ns", "ns.lb-01.");
        let mut out = Vec::new();
        let lines = encoder.encode(SinkBatch::round(results, metrics), &mut out);
        (String::from_utf8(out).unwrap(), lines)
    }

    #[test]
    fn ping_result_gives_loss_count_and_sorted_statistics_in_seconds() {
        let (text, lines) = encode(
            &[result(
                "app/target",
                vec![Some(0.003), None, Some(0.001), Some(0.002), Some(0.004)],
            )],
            &[],
        );
        assert_eq!(
            text,
            "ns.lb-01.ping.app.target.loss 1 1700000000\n\
             ns.lb-01.ping.app.target.min 0.001 1700000000\n\
             ns.lb-01.ping.app.target.median 0.003 1700000000\n\
             ns.lb-01.ping.app.target.max 0.004 1700000000\n"
        );
        assert_eq!(lines, 4);
    }

    #[test]
    fn no_answer_sends_only_loss_and_never_nan() {
        let (text, lines) = encode(&[result("t", vec![None, None, None])], &[]);
        assert_eq!(text, "ns.lb-01.ping.t.loss 3 1700000000\n");
        assert_eq!(lines, 1);
    }

    #[test]
    fn a_run_that_could_not_measure_sends_nothing() {
        let mut failed = result("app/down", vec![None, None, None]);
        failed.failure = Some("cannot run /nonexistent".into());
        let (text, lines) = encode(&[failed, result("app/up", vec![Some(0.001)])], &[]);
        assert_eq!(lines, 4, "{text}");
        assert!(!text.contains("app.down"), "{text}");
    }

    #[test]
    fn one_answer_is_min_median_and_max() {
        let (text, _) = encode(&[result("t", vec![Some(5.7e-4)])], &[]);
        assert_eq!(
            text,
            "ns.lb-01.ping.t.loss 0 1700000000\nns.lb-01.ping.t.min 0.00057 1700000000\n\
             ns.lb-01.ping.t.median 0.00057 1700000000\nns.lb-01.ping.t.max 0.00057 1700000000\n"
        );
    }

    #[test]
    fn even_count_uses_the_upper_median() {
        let (text, _) = encode(&[result("t", vec![Some(4.0), Some(1.0), Some(3.0), Some(2.0)])], &[]);
        assert!(text.contains("ns.lb-01.ping.t.median 3 1700000000\n"), "{text}");
    }

    #[test]
    fn unsafe_characters_in_order_ids_become_underscores() {
        let (text, _) = encode(&[result("a b/c.d/ü;x=1*", vec![None])], &[]);
        assert_eq!(text, "ns.lb-01.ping.a_b.c_d.__x_1_.loss 1 1700000000\n");
    }

    #[test]
    fn a_path_is_plain_unless_a_byte_is_whitespace_control_or_del_wherever_it_is() {
        for byte in 0..=255_u8 {
            let separator = byte <= b' ' || byte == 0x7f;
            for at in 0..19 {
                let mut path = b"haproxy.backend.x.y".to_vec();
                path[at] = byte;
                assert_eq!(is_plain(&path), !separator, "byte {byte:#x} at {at}");
            }
        }
        assert!(is_plain(b""));
        assert!(is_plain("frontend.caf\u{e9}.scur".as_bytes()));
    }

    #[test]
    fn metrics_keep_their_path_and_lose_only_field_separators() {
        let metrics = [
            Metric {
                path: "haproxy.frontend.www.scur".into(),
                value: 12.0,
                time: 1_700_000_001,
            },
            Metric {
                path: "haproxy.bad name\n.x".into(),
                value: -0.5,
                time: 1,
            },
            Metric {
                path: "haproxy.nan".into(),
                value: f64::NAN,
                time: 1,
            },
            Metric {
                path: "haproxy.inf".into(),
                value: f64::INFINITY,
                time: 1,
            },
        ];
        let (text, lines) = encode(&[], &metrics);
        assert_eq!(
            text,
            "ns.lb-01.haproxy.frontend.www.scur 12 1700000001\nns.lb-01.haproxy.bad_name_.x -0.5 1\n"
        );
        assert_eq!(lines, 2);
    }

    #[test]
    fn prefix_follows_prefix_hostname_and_fqdn() {
        let options = |prefix_hostname, fqdn| GraphiteOptions {
            namespace: "loadbalancers".into(),
            prefix_hostname,
            fqdn,
            hostname: Some("lb-01.example.com".into()),
            ..GraphiteOptions::default()
        };
        assert_eq!(options(true, true).path_prefix(), "loadbalancers.lb-01_example_com.");
        assert_eq!(options(true, false).path_prefix(), "loadbalancers.lb-01.");
        assert_eq!(options(false, true).path_prefix(), "loadbalancers.");
        let system = GraphiteEncoder::new(&GraphiteOptions {
            fqdn: false,
            ..GraphiteOptions::default()
        });
        assert_eq!(
            system.prefix(),
            format!("loadbalancers.{}.", path_short(&hostname::system_hostname()))
        );
    }

    #[test]
    fn a_block_encodes_to_the_same_lines_as_its_metrics_one_by_one() {
        use crate::shared::measurement::MetricBlock;
        let encoder = GraphiteEncoder::new(&GraphiteOptions {
            namespace: "lb".into(),
            hostname: Some("h".into()),
            ..GraphiteOptions::default()
        });
        let mut block = MetricBlock::with_capacity(1_700_000_123, 6, 100);
        for (name, value) in [
            ("scur", 3.0),
            ("rate", 0.25),
            ("bad", f64::NAN),
            ("odd path", -7.5),
            ("inf", f64::INFINITY),
            ("big", 1e300),
        ] {
            block.push("haproxy.frontend.www.", name, value);
        }
        let mut one_by_one = Vec::new();
        let lines: usize = block.iter().map(|m| encoder.encode_metric(m, &mut one_by_one)).sum();
        for split in 0..=block.len() {
            let mut blockwise = Vec::new();
            let mut got = encoder.encode_block(&block, 0..split, &mut blockwise);
            got += encoder.encode_block(&block, split..block.len(), &mut blockwise);
            assert_eq!(
                String::from_utf8_lossy(&blockwise),
                String::from_utf8_lossy(&one_by_one),
                "split at {split}"
            );
            assert_eq!(got, lines);
        }
        assert_eq!(lines, 4, "the two non-finite values are left out");
    }

    fn path_short(name: &str) -> String {
        hostname::path_component(name, false)
    }

    #[test]
    fn defaults_are_haproxystats_defaults_but_carbons_port_and_valid() {
        let options = GraphiteOptions::default();
        options.validate().unwrap();
        assert_eq!(
            (options.server.as_str(), options.port, options.queue_size),
            ("127.0.0.1", 2003, 1_000_000)
        );
        assert_eq!(options.retry_policy(), RetryPolicy::default());
    }

    #[test]
    fn options_parse_from_kebab_case_and_name_bad_keys() {
        let options: GraphiteOptions =
            yaml_serde::from_str("server: carbon\nport: 2003\nconnect-timeout: 0.5\nprefix-hostname: false\n").unwrap();
        assert_eq!(
            (options.port, options.connect_timeout, options.prefix_hostname),
            (2003, 0.5, false)
        );
        assert!(yaml_serde::from_str::<GraphiteOptions>("prefix_hostname: false\n").is_err());
        let bad = [
            (
                GraphiteOptions {
                    port: 0,
                    ..Default::default()
                },
                "graphite.port",
            ),
            (
                GraphiteOptions {
                    interval: -1.0,
                    ..Default::default()
                },
                "graphite.interval",
            ),
            (
                GraphiteOptions {
                    write_timeout: 0.0,
                    ..Default::default()
                },
                "graphite.write-timeout",
            ),
            (
                GraphiteOptions {
                    backoff: 0.5,
                    ..Default::default()
                },
                "graphite.backoff",
            ),
            (
                GraphiteOptions {
                    namespace: "a..b".into(),
                    ..Default::default()
                },
                "graphite.namespace",
            ),
            (
                GraphiteOptions {
                    namespace: "a b".into(),
                    ..Default::default()
                },
                "graphite.namespace",
            ),
            (
                GraphiteOptions {
                    queue_size: 0,
                    ..Default::default()
                },
                "graphite.queue-size",
            ),
            (
                GraphiteOptions {
                    hostname: Some(String::new()),
                    ..Default::default()
                },
                "graphite.hostname",
            ),
            (
                GraphiteOptions {
                    server: String::new(),
                    ..Default::default()
                },
                "graphite.server",
            ),
        ];
        for (options, key) in bad {
            assert_eq!(options.validate().unwrap_err().key, key);
        }
    }

    #[test]
    fn retry_policy_carries_the_options() {
        let options = GraphiteOptions {
            retries: 5,
            interval: 0.25,
            backoff: 3.0,
            delay: 1.5,
            ..Default::default()
        };
        assert_eq!(
            options.retry_policy(),
            RetryPolicy {
                retries: 5,
                interval: Duration::from_millis(250),
                backoff: 3.0,
                delay: Duration::from_millis(1500)
            }
        );
    }
}
