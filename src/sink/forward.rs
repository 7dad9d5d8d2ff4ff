//! forward: ship this node's ping results to other spoolmon nodes (a parent, or a proxy),
//! through the outbox, as shipped-snapshot frames ([`crate::spool::ship`]).
//!
//! Owns on disk, beside its outbox's segments: `outbox/<sink>/stream`, the UUID of the outbox's
//! sequence space (made with the outbox, one line). Each frame carries the next sequence of that
//! stream; a receiver keeps a high-water mark per (sender, stream) and acknowledges a repeat
//! without applying it, so a frame sent twice (the answer lost, a crash before the
//! acknowledgement was written) is applied once. The sequence is derived from the outbox itself
//! at start: every frame is one "line" of the outbox, so the frames that ever entered it are
//! its delivered, rejected, dropped and pending lines, and the next frame is one more — nothing
//! else to keep in step. An outbox deleted by hand takes its `stream` file with it: the new
//! outbox has a new stream, which no receiver mistakes for repeats.
//!
//! Delivery: oldest first, a request holds the frames of one outbox batch (at most
//! `max-request-bytes`), sent to the first destination that answers (`mode: failover`, as
//! Netdata's list of parents). A body the receiver can never take (400 malformed, 413 too
//! large) is a rejection (dropped, counted, logged with the receiver's cause); every other
//! refusal (401/403 key or address, 503 over capacity), a 5xx or a connection failure is
//! retried, logged with the cause, and the backlog waits in the outbox. Frames the receiver refuses one by one (a disabled machine, a loop) are
//! logged with the cause and counted as delivered: they will never be taken.
//!
//! What it passes on: this node's own results under its own identity, and the results this
//! node received from others (a proxy, or a parent that is itself a child) under theirs: the
//! origin's GUID and node name, the chain they came through with this node appended, and the
//! order ids as the origin names them, so the next node files them under the origin exactly as
//! this one did (`output/@<origin>/...`). One frame holds results of one origin and chain.
//! With `keep-local: false` this node writes no output of its own for what the sink takes
//! (processing asks [`ResultSink::keeps_local`]): a node without a database of its own, or,
//! for received results, a pure proxy.
//!
//! Built by `crate::sink::running`; called by processing (`accept`) and the sink's delivery
//! thread (`send`).

use super::outbox::Outbox;
use super::route::{Kind, MetricGlobs, OrderGlobs, Route, RouteKeys};
use super::{DeliveryError, OutboxBounds, Transport};
use crate::process::handoff::{ResultSink, SinkBatch, SinkError};
use crate::shared::measurement::{OrderId, OrderResult};
use crate::shared::node::Provenance;
use crate::shared::option::{check_seconds, seconds, InvalidOption};
use crate::spool::identity::MachineGuid;
use crate::spool::ship::{self, ShipHeader};
use crate::spool::snapshot::{encode_ping, SnapshotName, PING_FILE};
use serde::{Deserialize, Serialize};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use tracing::warn;

/// The file in the outbox directory that names its stream.
pub const STREAM_FILE: &str = "stream";

/// How destinations are chosen.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum ForwardMode {
    /// The first destination that answers, in the order given (Netdata's parents); it is kept
    /// until it fails, and when every one has failed the list is tried from the first again.
    #[default]
    Failover,
}

/// Options of the forward sink.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(default, rename_all = "kebab-case", deny_unknown_fields)]
pub struct ForwardOptions {
    /// The receiving nodes, `http://host:port` (their `receive: {listen}`), tried in order.
    /// None by default: the sink needs at least one.
    pub destinations: Vec<String>,
    /// The API key the receivers know (a UUID under their `receive: {api-keys}`).
    pub api_key: String,
    /// How a destination is chosen: `failover` (the first that answers, in order). Default
    /// failover.
    pub mode: ForwardMode,
    /// Ping results per frame (each frame is one snapshot on the receiver). Default 1000.
    pub frame_results: usize,
    /// Largest request body, bytes (keep it below the receivers' `max-request-bytes`).
    /// Default 8388608.
    pub max_request_bytes: usize,
    /// Seconds one request may take, connection included. Default 30.
    pub timeout: f64,
    /// Size and age bounds of this sink's outbox.
    pub outbox: OutboxBounds,
    /// Whether this node still writes its own `output/` (RRD, `last_result`) for the results
    /// this sink takes. `false`: a node that keeps nothing locally (a prober without a
    /// database, or a pure proxy for what it receives); the results then exist only in the
    /// outbox until a destination has them. Default true.
    pub keep_local: bool,
    /// Kinds of data this sink takes: `ping` only (HAProxy snapshots and self-metrics are not
    /// forwarded yet). Default `[ping]`.
    pub takes: Vec<Kind>,
    /// Which orders' ping results this sink takes: globs on order ids (`web/**`); see
    /// spool-layout.md, "Routing".
    pub orders: OrderGlobs,
    /// Not used by this sink (it takes no metrics); accepted for the common routing keys.
    pub metrics: MetricGlobs,
}

impl Default for ForwardOptions {
    fn default() -> Self {
        ForwardOptions {
            destinations: Vec::new(),
            api_key: String::new(),
            mode: ForwardMode::Failover,
            frame_results: 1000,
            max_request_bytes: 8 << 20,
            timeout: 30.0,
            outbox: OutboxBounds::default(),
            keep_local: true,
            takes: vec![Kind::Ping],
            orders: OrderGlobs::default(),
            metrics: MetricGlobs::default(),
        }
    }
}

impl ForwardOptions {
    /// The routing keys (`takes`, `orders`, `metrics`).
    pub fn route_keys(&self) -> RouteKeys<'_> {
        RouteKeys {
            takes: &self.takes,
            orders: &self.orders,
            metrics: &self.metrics,
        }
    }

    /// Checks every option but the route; the error names the key.
    pub fn validate(&self) -> Result<(), InvalidOption> {
        if self.destinations.is_empty() {
            return Err(InvalidOption::new(
                "destinations",
                "name at least one receiving node, e.g. [\"http://192.0.2.10:19999\"]",
            ));
        }
        for destination in &self.destinations {
            destination_address(destination).map_err(|e| InvalidOption::new("destinations", e))?;
        }
        if uuid::Uuid::try_parse(&self.api_key).is_err() || self.api_key.len() != 36 {
            return Err(InvalidOption::new(
                "api-key",
                "the API key is a UUID the receivers list under receive.api-keys",
            ));
        }
        if let Some(kind) = self.takes.iter().find(|k| **k != Kind::Ping) {
            return Err(InvalidOption::new(
                "takes",
                format!("{} is not forwarded yet: a forward sink takes [ping]", kind.name()),
            ));
        }
        if !(1..=100_000).contains(&self.frame_results) {
            return Err(InvalidOption::new("frame-results", "must be 1 to 100000"));
        }
        if self.max_request_bytes < 64 << 10 {
            return Err(InvalidOption::new("max-request-bytes", "must be at least 65536"));
        }
        check_seconds("timeout", self.timeout, 0.1)?;
        self.outbox.validate()
    }
}

/// `http://host:port` as `host:port`; https is refused until TLS exists.
fn destination_address(url: &str) -> Result<String, String> {
    if url.starts_with("https://") {
        return Err(format!(
            "{url}: https (TLS) is not built yet; use http:// on a trusted network"
        ));
    }
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| format!("{url}: expected http://host:port"))?;
    let rest = rest.trim_end_matches('/');
    if rest.is_empty() || rest.contains('/') || !rest.contains(':') {
        return Err(format!("{url}: expected http://host:port"));
    }
    Ok(rest.to_owned())
}

/// The identity frames are sent under.
#[derive(Clone, Debug)]
pub struct Origin {
    pub guid: MachineGuid,
    pub node: String,
}

/// The sink processing hands batches to: frames into the outbox.
pub struct ForwardSink {
    name: String,
    route: Route,
    outbox: Arc<Outbox>,
    origin: Origin,
    stream: uuid::Uuid,
    frame_results: usize,
    keep_local: bool,
    /// The next frame's sequence (module doc: derived from the outbox at start).
    next: AtomicU64,
}

impl ForwardSink {
    /// Reads (or makes) the outbox's stream and the next sequence from the outbox's counts.
    pub fn new(
        name: &str,
        options: &ForwardOptions,
        route: Route,
        outbox: Arc<Outbox>,
        origin: Origin,
    ) -> anyhow::Result<ForwardSink> {
        use anyhow::Context;
        let path = outbox.dir().join(STREAM_FILE);
        let dir = crate::spool::beneath::Dir::open(outbox.dir())?;
        let stream = match dir.read_limited(STREAM_FILE, 64) {
            Ok(bytes) => uuid::Uuid::try_parse(String::from_utf8_lossy(&bytes).trim())
                .with_context(|| format!("{} does not hold a UUID", path.display()))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let stream = uuid::Uuid::new_v4();
                dir.write_new(STREAM_FILE, format!("{}\n", stream.hyphenated()).as_bytes())
                    .and_then(|()| dir.sync())?;
                stream
            }
            Err(e) => return Err(e.into()),
        };
        let status = super::outbox::status(outbox.dir())?;
        let sent = status.delivered_lines + status.rejected_lines + status.dropped_lines + status.lines;
        Ok(ForwardSink {
            name: name.to_owned(),
            route,
            outbox,
            origin,
            stream,
            frame_results: options.frame_results,
            keep_local: options.keep_local,
            next: AtomicU64::new(sent + 1),
        })
    }

    fn error(&self, message: String) -> SinkError {
        SinkError {
            sink: self.name.clone(),
            message,
        }
    }
}

impl ResultSink for ForwardSink {
    fn name(&self) -> &str {
        &self.name
    }

    fn accept(&self, batch: SinkBatch<'_>) -> Result<(), SinkError> {
        if !self.route.takes(crate::process::handoff::Kind::Ping) {
            return Ok(());
        }
        let groups = self.by_origin(self.route.results(batch));
        if groups.is_empty() {
            return Ok(());
        }
        // The outbox's writer lock, held for the batch, orders the sequences too.
        let mut appending = self.outbox.begin();
        let first = self.next.load(Ordering::SeqCst);
        let mut held: Option<Vec<u8>> = None;
        let mut frames = 0u64;
        for (provenance, results) in &groups {
            let (origin, origin_node, chain) = match provenance {
                None => (self.origin.guid, self.origin.node.clone(), vec![self.origin.guid]),
                Some(p) => {
                    let mut chain = p.chain.clone();
                    chain.push(self.origin.guid);
                    (p.origin(), p.node.clone(), chain)
                }
            };
            for chunk in results.chunks(self.frame_results) {
                let sequence = first + frames;
                let epoch = chunk.iter().map(|r| r.time).min().unwrap_or(0);
                let header = ShipHeader {
                    origin,
                    origin_node: origin_node.clone(),
                    chain: chain.clone(),
                    stream: self.stream,
                    sequence,
                    snapshot: SnapshotName::new(epoch, "ping", sequence),
                };
                let mut frame = Vec::new();
                ship::encode(&header, &[(PING_FILE, &encode_ping("forward", chunk))], &mut frame);
                if let Some(previous) = held.replace(frame) {
                    appending
                        .push(&previous, 1)
                        .map_err(|e| self.error(format!("cannot queue in the outbox: {e}")))?;
                }
                frames += 1;
            }
        }
        let last = held.expect("at least one frame");
        appending
            .finish(&last, 1)
            .map_err(|e| self.error(format!("cannot queue in the outbox: {e}")))?;
        self.next.store(first + frames, Ordering::SeqCst);
        Ok(())
    }

    fn keeps_local(&self, result: &OrderResult) -> bool {
        self.keep_local
            || !self.route.takes(crate::process::handoff::Kind::Ping)
            || !self.route.takes_order(result.id.as_str())
    }

    fn keeps_all_local(&self) -> bool {
        self.keep_local
    }
}

/// Results of one origin and chain (`None`: this node's own), in batch order.
type OriginGroup = (Option<Arc<Provenance>>, Vec<OrderResult>);

impl ForwardSink {
    /// The results grouped by where they come from, in order of first appearance, each with
    /// the id its origin gives it. A received result whose chain already holds this node (a
    /// loop the receiver let through, which it never does) or is as long as a chain may be is
    /// left out with a warning: the next node would refuse it.
    fn by_origin<'b>(&self, results: impl Iterator<Item = &'b OrderResult>) -> Vec<OriginGroup> {
        let mut groups: Vec<OriginGroup> = Vec::new();
        let mut refused = 0usize;
        for result in results {
            let provenance = result.origin.as_ref();
            if let Some(p) = provenance {
                if p.chain.contains(&self.origin.guid) || p.chain.len() >= ship::MAX_CHAIN {
                    refused += 1;
                    continue;
                }
            }
            let index = match groups
                .iter()
                .position(|(g, _)| g.as_deref() == provenance.map(|p| &**p))
            {
                Some(index) => index,
                None => {
                    groups.push((provenance.cloned(), Vec::new()));
                    groups.len() - 1
                }
            };
            let mut result = result.clone();
            if let Some(p) = provenance {
                result.id = OrderId::new(p.id_at_origin(&result.id)).expect("a part of an order id is one");
                result.origin = None;
            }
            groups[index].1.push(result);
        }
        if refused > 0 {
            warn!(
                sink = %self.name,
                results = refused,
                "received results not passed on: their chain holds this node or is {} nodes long",
                ship::MAX_CHAIN
            );
        }
        groups
    }
}

/// Sends frames to the destinations (failover) with ureq.
pub struct ForwardTransport {
    destinations: Vec<String>,
    api_key: String,
    max_request_bytes: usize,
    agent: ureq::Agent,
    /// The destination that answered last: tried first next time.
    current: usize,
}

impl ForwardTransport {
    pub fn new(options: &ForwardOptions) -> ForwardTransport {
        let agent = ureq::Agent::config_builder()
            .timeout_global(Some(seconds(options.timeout)))
            .http_status_as_error(false)
            .build()
            .new_agent();
        ForwardTransport {
            destinations: options
                .destinations
                .iter()
                .map(|d| {
                    format!(
                        "http://{}{}",
                        destination_address(d).unwrap_or_default(),
                        crate::receive::server::PATH
                    )
                })
                .collect(),
            api_key: options.api_key.clone(),
            max_request_bytes: options.max_request_bytes,
            agent,
            current: 0,
        }
    }

    fn send_to(&self, url: &str, payload: &[u8]) -> Result<(), DeliveryError> {
        let response = self
            .agent
            .post(url)
            .header("Authorization", &format!("Bearer {}", self.api_key))
            .header("Content-Type", "application/x-spoolmon-ship")
            .send(payload);
        let mut response = match response {
            Ok(response) => response,
            Err(e) => return Err(DeliveryError::Transient(format!("{url}: {e}"))),
        };
        let status = response.status().as_u16();
        let body = response
            .body_mut()
            .with_config()
            .limit(1 << 20)
            .read_to_string()
            .unwrap_or_default();
        let cause = || {
            serde_json::from_str::<serde_json::Value>(&body)
                .ok()
                .and_then(|v| v["error"].as_str().map(str::to_owned))
                .unwrap_or_else(|| body.chars().take(300).collect())
        };
        match status {
            200 => {
                if let Ok(answer) = serde_json::from_str::<serde_json::Value>(&body) {
                    for frame in answer["frames"].as_array().into_iter().flatten() {
                        if frame["result"] == "refused" {
                            warn!(
                                to = url,
                                sequence = %frame["sequence"],
                                "the receiver refused a frame for good: {}",
                                frame["reason"].as_str().unwrap_or("")
                            );
                        }
                    }
                }
                Ok(())
            }
            // The same bytes can never be taken: a malformed or too large body.
            400 | 413 => Err(DeliveryError::Rejected(format!("{url}: HTTP {status}: {}", cause()))),
            // A key, address or capacity refusal (401, 403, 503), a loss or a server error:
            // fixable on the far side, so the backlog waits (bounded by the outbox) and loses
            // nothing while an operator fixes a mistyped key.
            _ => Err(DeliveryError::Transient(format!("{url}: HTTP {status}: {}", cause()))),
        }
    }
}

impl Transport for ForwardTransport {
    fn send(&mut self, payload: &[u8]) -> Result<(), DeliveryError> {
        let n = self.destinations.len();
        let mut last = None;
        for k in 0..n {
            let index = (self.current + k) % n;
            match self.send_to(&self.destinations[index], payload) {
                Ok(()) => {
                    self.current = index;
                    return Ok(());
                }
                Err(DeliveryError::Transient(e)) => last = Some(e),
                Err(rejected) => return Err(rejected),
            }
        }
        // Everything down: start from the first (preferred) destination next time.
        self.current = 0;
        Err(DeliveryError::Transient(last.unwrap_or_default()))
    }

    fn max_payload(&self) -> usize {
        self.max_request_bytes
    }

    fn describe(&self) -> String {
        self.destinations.join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::shared::measurement::OrderId;
    use crate::sink::outbox::OutboxLimits;

    fn results(n: usize, time: i64) -> Vec<OrderResult> {
        (0..n)
            .map(|i| {
                OrderResult::builder(OrderId::new(format!("o{i}")).unwrap(), time)
                    .rtts([Some(0.001)])
                    .build()
            })
            .collect()
    }

    fn options(frame_results: usize) -> ForwardOptions {
        ForwardOptions {
            destinations: vec!["http://127.0.0.1:1".into()],
            api_key: "11111111-2222-3333-4444-555555555555".into(),
            frame_results,
            ..Default::default()
        }
    }

    fn open(dir: &std::path::Path, origin: &Origin) -> (Arc<Outbox>, ForwardSink) {
        let outbox = Arc::new(Outbox::open(dir, OutboxLimits::default()).unwrap());
        let sink = ForwardSink::new("up", &options(3), Route::everything(), outbox.clone(), origin.clone()).unwrap();
        (outbox, sink)
    }

    /// Every frame queued, decoded and then acknowledged as delivered: (stream, sequence,
    /// results in it).
    fn delivered(outbox: &Arc<Outbox>) -> Vec<(uuid::Uuid, u64, usize)> {
        let mut reader = outbox.reader();
        let mut frames = Vec::new();
        while let Some(batch) = reader.next_batch(64 << 20).unwrap() {
            let mut rest = batch.payload();
            while !rest.is_empty() {
                let (frame, after) = ship::decode(rest).unwrap();
                let lines = frame.files[0].1.iter().filter(|b| **b == b'\n').count() - 1;
                frames.push((frame.header.stream, frame.header.sequence, lines));
                assert_eq!(frame.header.origin_node, "child");
                rest = after;
            }
            outbox
                .acknowledge(batch, crate::sink::outbox::Outcome::Delivered)
                .unwrap();
        }
        frames
    }

    #[test]
    fn results_become_frames_whose_sequence_continues_across_restarts() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("up");
        let origin = Origin {
            guid: MachineGuid::random(),
            node: "child".into(),
        };
        let (outbox, sink) = open(&dir, &origin);
        sink.accept(SinkBatch::round(&results(7, 1_700_000_000), &[])).unwrap();
        drop((sink, outbox));
        // Reopened with three frames pending: the next is the fourth, in the same stream.
        let (outbox, sink) = open(&dir, &origin);
        sink.accept(SinkBatch::round(&results(1, 1_700_000_020), &[])).unwrap();
        let all = delivered(&outbox);
        assert_eq!(
            all.iter().map(|f| (f.1, f.2)).collect::<Vec<_>>(),
            [(1, 3), (2, 3), (3, 1), (4, 1)]
        );
        let stream = all[0].0;
        assert!(all.iter().all(|f| f.0 == stream));
        let text = std::fs::read_to_string(dir.join(STREAM_FILE)).unwrap();
        assert_eq!(text.trim(), stream.hyphenated().to_string());
        drop((sink, outbox));
        // Reopened with everything delivered: the count comes from the acknowledgement.
        let (outbox, sink) = open(&dir, &origin);
        sink.accept(SinkBatch::round(&results(2, 1_700_000_040), &[])).unwrap();
        // A batch without ping results appends nothing.
        sink.accept(SinkBatch::round(&[], &[])).unwrap();
        assert_eq!(delivered(&outbox), vec![(stream, 5, 2)]);
    }

    #[test]
    fn received_results_are_passed_on_under_their_origin_with_this_node_appended_to_the_chain() {
        let tmp = tempfile::tempdir().unwrap();
        let me = Origin {
            guid: MachineGuid::random(),
            node: "child".into(),
        };
        let (outbox, sink) = open(&tmp.path().join("up"), &me);
        let leaf = MachineGuid::random();
        let received = |node: &str, chain: Vec<MachineGuid>, id: &str| {
            let mut r = results(1, 1_700_000_000).remove(0);
            r.id = crate::shared::node::node_order_id(node, &OrderId::new(id).unwrap());
            r.origin = Some(Arc::new(Provenance {
                node: node.into(),
                chain,
            }));
            r
        };
        let batch = [
            results(1, 1_700_000_000).remove(0),
            received("leaf", vec![leaf], "lan/t1"),
            received("leaf", vec![leaf], "lan/t2"),
            // Already passed this node: a loop, never passed on.
            received("far", vec![MachineGuid::random(), me.guid], "x"),
        ];
        sink.accept(SinkBatch::round(&batch, &[])).unwrap();
        let mut reader = outbox.reader();
        let batch = reader.next_batch(64 << 20).unwrap().unwrap();
        let mut rest = batch.payload();
        let mut frames = Vec::new();
        while !rest.is_empty() {
            let (frame, after) = ship::decode(rest).unwrap();
            let text = String::from_utf8(frame.files[0].1.to_vec()).unwrap();
            let ids: Vec<String> = text
                .lines()
                .skip(1)
                .map(|line| serde_json::from_str::<serde_json::Value>(line).unwrap()["id"].to_string())
                .collect();
            frames.push((
                frame.header.origin,
                frame.header.origin_node.clone(),
                frame.header.chain.clone(),
                ids,
            ));
            rest = after;
        }
        assert_eq!(
            frames,
            vec![
                (me.guid, "child".to_string(), vec![me.guid], vec!["\"o0\"".to_string()]),
                (
                    leaf,
                    "leaf".to_string(),
                    vec![leaf, me.guid],
                    vec!["\"lan/t1\"".to_string(), "\"lan/t2\"".to_string()]
                ),
            ]
        );
    }

    #[test]
    fn keep_local_false_keeps_nothing_of_what_the_route_takes() {
        let tmp = tempfile::tempdir().unwrap();
        let outbox = Arc::new(Outbox::open(&tmp.path().join("up"), OutboxLimits::default()).unwrap());
        let origin = Origin {
            guid: MachineGuid::random(),
            node: "child".into(),
        };
        let keys = ForwardOptions {
            keep_local: false,
            orders: OrderGlobs {
                include: vec!["lan/**".into()],
                ..OrderGlobs::default()
            },
            ..options(3)
        };
        let route = keys.route_keys().compile().unwrap();
        let sink = ForwardSink::new("up", &keys, route, outbox.clone(), origin.clone()).unwrap();
        assert!(!sink.keeps_all_local());
        let id = |id: &str| OrderResult::builder(OrderId::new(id).unwrap(), 1).build();
        assert!(!sink.keeps_local(&id("lan/t1")));
        assert!(sink.keeps_local(&id("wan/t1")), "not taken, so kept");
        let (_, kept) = open(&tmp.path().join("other"), &origin);
        assert!(kept.keeps_all_local() && kept.keeps_local(&id("lan/t1")));
    }

    #[test]
    fn a_new_outbox_is_a_new_stream() {
        let tmp = tempfile::tempdir().unwrap();
        let origin = Origin {
            guid: MachineGuid::random(),
            node: "child".into(),
        };
        let (a, sink_a) = open(&tmp.path().join("a"), &origin);
        let (b, sink_b) = open(&tmp.path().join("b"), &origin);
        sink_a
            .accept(SinkBatch::round(&results(1, 1_700_000_000), &[]))
            .unwrap();
        sink_b
            .accept(SinkBatch::round(&results(1, 1_700_000_000), &[]))
            .unwrap();
        assert_ne!(delivered(&a)[0].0, delivered(&b)[0].0);
    }

    #[test]
    fn options_are_checked_with_their_key() {
        let cases = [
            (
                ForwardOptions {
                    destinations: vec![],
                    ..options(1)
                },
                "destinations",
            ),
            (
                ForwardOptions {
                    destinations: vec!["https://p:1".into()],
                    ..options(1)
                },
                "https (TLS) is not built yet",
            ),
            (
                ForwardOptions {
                    destinations: vec!["p:1".into()],
                    ..options(1)
                },
                "expected http://host:port",
            ),
            (
                ForwardOptions {
                    api_key: "key".into(),
                    ..options(1)
                },
                "api-key",
            ),
            (
                ForwardOptions {
                    takes: vec![Kind::Haproxy],
                    ..options(1)
                },
                "not forwarded yet",
            ),
            (options(0), "frame-results"),
        ];
        for (o, expected) in cases {
            let e = o.validate().unwrap_err().to_string();
            assert!(e.contains(expected), "{e}");
        }
        assert_eq!(options(1).validate(), Ok(()));
    }
}
