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

use super::delivery::DeliveryStats;
use super::outbox::Outbox;
use super::ring::{result_key, Ring};
use super::route::{Kind, MetricGlobs, OrderGlobs, Route, RouteKeys};
use super::{DeliveryError, OutboxBounds, Transport};
use crate::process::handoff::{Kind as DataKind, ResultSink, SinkBatch, SinkError};
use crate::shared::measurement::{OrderId, OrderResult};
use crate::shared::node::Provenance;
use crate::shared::option::{check_seconds, seconds, InvalidOption};
use crate::spool::identity::MachineGuid;
use crate::spool::ship::{self, ShipHeader};
use crate::spool::snapshot::{decode_ping, encode_ping, PingBounds, SnapshotName, PING_FILE};
use serde::{Deserialize, Serialize};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
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
    /// Each result to the destination that owns its key (origin node + order id) on the
    /// consistent hash (`crate::sink::ring`: rendezvous hashing on XXH3-64), through an outbox
    /// of its own per destination (`outbox/<sink>@<host>_<port>/`), so a down destination's
    /// share waits for it.
    Hash,
}

/// `tls:` of the forward sink, for its `https://` destinations.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(default, rename_all = "kebab-case", deny_unknown_fields)]
pub struct ForwardTls {
    /// CA certificates (PEM) the receivers' certificates must chain to. Default: the system's
    /// roots (`/etc/ssl/certs`).
    pub ca: Option<std::path::PathBuf>,
    /// Accept any certificate, unverified (a test network only: anyone between can read and
    /// change what is shipped). Default false.
    pub skip_verify: bool,
    /// A client certificate chain (PEM) for receivers with `tls: {client-ca}`; needs `key`.
    pub cert: Option<std::path::PathBuf>,
    /// The client certificate's private key (PEM).
    pub key: Option<std::path::PathBuf>,
}

/// Options of the forward sink.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(default, rename_all = "kebab-case", deny_unknown_fields)]
pub struct ForwardOptions {
    /// The receiving nodes, `https://host:port` (their `receive: {listen}` with `tls`) or
    /// `http://host:port`, tried in order (failover) or owning a share each (hash). None by
    /// default: the sink needs at least one.
    pub destinations: Vec<String>,
    /// The API key the receivers know (a UUID under their `receive: {api-keys}`).
    pub api_key: String,
    /// How a destination is chosen: `failover` (the first that answers, in order) or `hash`
    /// (each result to the destination that owns its origin node + order id, each destination
    /// with an outbox of its own). Default failover.
    pub mode: ForwardMode,
    /// `mode: hash` only: seconds a destination may fail before its waiting share is handed off
    /// to the next destinations of the ring (re-routed, logged and counted). None by default:
    /// a down destination's share waits for it, bounded by its outbox.
    pub handoff_timeout: Option<f64>,
    /// Ping results per frame (each frame is one snapshot on the receiver). Default 1000.
    pub frame_results: usize,
    /// Largest request body, bytes (keep it below the receivers' `max-request-bytes`).
    /// Default 8388608.
    pub max_request_bytes: usize,
    /// Seconds one request may take, connection included. Default 30.
    pub timeout: f64,
    /// TLS of the `https://` destinations: which CA to trust, and a client certificate for
    /// receivers that ask for one.
    pub tls: ForwardTls,
    /// Where the destinations come from when they change: a file, DNS SRV records or
    /// Consul, read every `interval` (`destinations` is then the set until the first answer,
    /// and may be empty). None by default.
    pub discovery: Option<super::discovery::DiscoveryOptions>,
    /// Size and age bounds of this sink's outbox.
    pub outbox: OutboxBounds,
    /// Whether this node still writes its own `output/` (RRD, `last_result`) for the results
    /// this sink takes. `false`: a node that keeps nothing locally (a prober without a
    /// database, or a pure proxy for what it receives); the results then exist only in the
    /// outbox until a destination has them. Default true.
    pub keep_local: bool,
    /// Kinds of data this sink takes: `ping` (results) and `haproxy` (whole HAProxy snapshots,
    /// aggregated by the receiver, which names this node as their host); self-metrics are not
    /// forwarded yet. Default `[ping]`.
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
            handoff_timeout: None,
            frame_results: 1000,
            max_request_bytes: 8 << 20,
            timeout: 30.0,
            tls: ForwardTls::default(),
            discovery: None,
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
        if let Some(discovery) = &self.discovery {
            discovery.validate()?;
        }
        if self.destinations.is_empty() && self.discovery.is_none() {
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
        if let Some(kind) = self.takes.iter().find(|k| !matches!(**k, Kind::Ping | Kind::Haproxy)) {
            return Err(InvalidOption::new(
                "takes",
                format!(
                    "{} is not forwarded yet: a forward sink takes ping and haproxy",
                    kind.name()
                ),
            ));
        }
        if !(1..=100_000).contains(&self.frame_results) {
            return Err(InvalidOption::new("frame-results", "must be 1 to 100000"));
        }
        if self.max_request_bytes < 64 << 10 {
            return Err(InvalidOption::new("max-request-bytes", "must be at least 65536"));
        }
        check_seconds("timeout", self.timeout, 0.1)?;
        if self.tls.cert.is_some() != self.tls.key.is_some() {
            return Err(InvalidOption::new(
                "tls",
                "a client certificate needs both cert and key",
            ));
        }
        let has_https = self.destinations.iter().any(|d| d.starts_with("https://"));
        if !has_https && self.discovery.is_none() && self.tls != ForwardTls::default() {
            return Err(InvalidOption::new(
                "tls",
                "applies to https:// destinations only, and none is given",
            ));
        }
        if let Some(handoff) = self.handoff_timeout {
            if self.mode != ForwardMode::Hash {
                return Err(InvalidOption::new(
                    "handoff-timeout",
                    "only a sink in mode: hash hands a destination's share off",
                ));
            }
            check_seconds("handoff-timeout", handoff, 1.0)?;
        }
        if self.mode == ForwardMode::Hash {
            let mut labels: Vec<String> = self.destinations.iter().map(|d| destination_label(d)).collect();
            labels.sort();
            if let Some(twice) = labels.windows(2).find(|w| w[0] == w[1]) {
                return Err(InvalidOption::new(
                    "destinations",
                    format!("two destinations share the outbox label {}: name each once", twice[0]),
                ));
            }
        }
        self.outbox.validate()
    }
}

/// `https://host:port` or `http://host:port` as `host:port`.
fn destination_address(url: &str) -> Result<String, String> {
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"))
        .ok_or_else(|| format!("{url}: expected https://host:port or http://host:port"))?;
    let rest = rest.trim_end_matches('/');
    if rest.is_empty() || rest.contains('/') || !rest.contains(':') {
        return Err(format!("{url}: expected https://host:port or http://host:port"));
    }
    Ok(rest.to_owned())
}

/// Checks one destination as the config does (for the ones discovery finds).
pub fn check_destination(url: &str) -> Result<(), String> {
    destination_address(url).map(|_| ())
}

/// `https://` or `http://` of a (validated) destination.
fn scheme(url: &str) -> &'static str {
    if url.starts_with("https://") {
        "https"
    } else {
        "http"
    }
}

/// The client TLS of the sink's agent: the CA (or the system's roots), verification, the
/// client certificate. An error names the file.
fn client_tls(tls: &ForwardTls) -> Result<ureq::tls::TlsConfig, crate::http::tls::TlsError> {
    use crate::http::tls::{read_certs, read_key, read_pem, TlsError};
    use ureq::tls::{Certificate, ClientCert, PrivateKey, RootCerts, TlsConfig};
    let to_ureq = |certs: Vec<rustls_pki_types::CertificateDer<'static>>| -> Vec<Certificate<'static>> {
        certs
            .iter()
            .map(|c| Certificate::from_der(c.as_ref()).to_owned())
            .collect()
    };
    let roots = match &tls.ca {
        Some(ca) => RootCerts::new_with_certs(&to_ureq(read_certs(ca)?)),
        None => {
            let found = rustls_native_certs::load_native_certs();
            if found.certs.is_empty() {
                warn!(
                    "no system root certificates found ({} errors): using the built-in Mozilla roots",
                    found.errors.len()
                );
                RootCerts::WebPki
            } else {
                RootCerts::new_with_certs(&to_ureq(found.certs))
            }
        }
    };
    let client = match (&tls.cert, &tls.key) {
        (Some(cert), Some(key)) => {
            let chain = to_ureq(read_certs(cert)?);
            // Checked by our reader first, for its errors naming the file; ureq takes PEM.
            read_key(key)?;
            let private = PrivateKey::from_pem(&read_pem(key)?).map_err(|e| TlsError::Pem {
                path: key.clone(),
                message: e.to_string(),
            })?;
            Some(ClientCert::new_with_certs(&chain, private))
        }
        _ => None,
    };
    Ok(TlsConfig::builder()
        .root_certs(roots)
        .disable_verification(tls.skip_verify)
        .client_cert(client)
        .build())
}

/// The identity frames are sent under.
#[derive(Clone, Debug)]
pub struct Origin {
    pub guid: MachineGuid,
    pub node: String,
}

/// Where a frame's results come from: its header's origin, origin node and chain (this node
/// last).
#[derive(Clone, Debug, PartialEq, Eq)]
struct Source {
    origin: MachineGuid,
    node: String,
    chain: Vec<MachineGuid>,
}

/// Results of one source, with their ids as the origin names them, in batch order.
type SourceGroup = (Source, Vec<OrderResult>);

/// One outbox of the sink with its stream: the sink's only one (`mode: failover`), or one
/// destination's (`mode: hash`, hinted handoff: a down destination's share waits in its own).
pub struct Lane {
    /// The outbox directory's name: the sink's, or `<sink>@<destination label>`.
    name: String,
    /// `mode: hash`: the one destination this lane delivers to (`None`: the sink's list).
    destination: Option<String>,
    outbox: Arc<Outbox>,
    stream: uuid::Uuid,
    /// The next frame's sequence (module doc: derived from the outbox at start).
    next: AtomicU64,
    /// Since when its destination has failed without a success in between (`mode: hash`).
    failing_since: std::sync::Mutex<Option<Instant>>,
}

impl Lane {
    /// Reads (or makes) the outbox's stream and the next sequence from the outbox's counts;
    /// `destination` is the one it delivers to in `mode: hash`.
    pub fn open(name: &str, destination: Option<&str>, outbox: Arc<Outbox>) -> anyhow::Result<Lane> {
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
        Ok(Lane {
            name: name.to_owned(),
            destination: destination.map(str::to_owned),
            outbox,
            stream,
            next: AtomicU64::new(sent + 1),
            failing_since: std::sync::Mutex::new(None),
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn outbox(&self) -> &Arc<Outbox> {
        &self.outbox
    }

    /// Appends one frame of `files` (a snapshot named `name` at its origin) to the outbox,
    /// durable when it returns.
    fn append_frame(&self, source: &Source, name: &SnapshotName, files: &[(&str, &[u8])]) -> Result<(), String> {
        let appending = self.outbox.begin();
        let sequence = self.next.load(Ordering::SeqCst);
        let header = ShipHeader {
            origin: source.origin,
            origin_node: source.node.clone(),
            chain: source.chain.clone(),
            stream: self.stream,
            sequence,
            snapshot: name.clone(),
        };
        let mut frame = Vec::new();
        ship::encode(&header, files, &mut frame);
        appending
            .finish(&frame, 1)
            .map_err(|e| format!("cannot queue in the outbox {}: {e}", self.name))?;
        self.next.store(sequence + 1, Ordering::SeqCst);
        Ok(())
    }

    /// Frames `groups` (at most `frame_results` results per frame) into the outbox, one record
    /// each, durable when it returns; the number of frames.
    fn append(&self, groups: &[SourceGroup], frame_results: usize) -> Result<u64, String> {
        if groups.iter().all(|(_, results)| results.is_empty()) {
            return Ok(0);
        }
        // The outbox's writer lock, held for the batch, orders the sequences too.
        let mut appending = self.outbox.begin();
        let first = self.next.load(Ordering::SeqCst);
        let mut held: Option<Vec<u8>> = None;
        let mut frames = 0u64;
        for (source, results) in groups {
            for chunk in results.chunks(frame_results) {
                let sequence = first + frames;
                let epoch = chunk.iter().map(|r| r.time).min().unwrap_or(0);
                let header = ShipHeader {
                    origin: source.origin,
                    origin_node: source.node.clone(),
                    chain: source.chain.clone(),
                    stream: self.stream,
                    sequence,
                    snapshot: SnapshotName::new(epoch, "ping", sequence),
                };
                let mut frame = Vec::new();
                ship::encode(&header, &[(PING_FILE, &encode_ping("forward", chunk))], &mut frame);
                if let Some(previous) = held.replace(frame) {
                    appending
                        .push(&previous, 1)
                        .map_err(|e| format!("cannot queue in the outbox {}: {e}", self.name))?;
                }
                frames += 1;
            }
        }
        let last = held.expect("at least one frame");
        appending
            .finish(&last, 1)
            .map_err(|e| format!("cannot queue in the outbox {}: {e}", self.name))?;
        self.next.store(first + frames, Ordering::SeqCst);
        Ok(frames)
    }
}

/// The label of a destination in its lane's outbox name: its `host:port` with every character
/// other than ASCII letters, digits, `.` and `-` as `_` (`10.0.0.1:19999` → `10.0.0.1_19999`).
pub fn destination_label(destination: &str) -> String {
    destination_address(destination)
        .unwrap_or_else(|_| destination.to_owned())
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '-') {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// The lanes of a sink and, in `mode: hash`, the ring over the destinations in use: shared by
/// the sink (which routes each result to its owner's lane), every lane's transport (which
/// hands a down destination's frames off to the next owners after `handoff-timeout`) and the
/// discovery thread (which changes the set).
///
/// The set changes as a whole ([`Lanes::set_destinations`]): a new destination gets a lane
/// (its outbox and delivery thread, opened by the caller); a destination that left keeps its
/// lane, retired, whose transport drains what it holds to the current owners instead of
/// sending it (ring changes drain, never drop); one that comes back gets its lane back.
pub struct Lanes {
    mode: ForwardMode,
    frame_results: usize,
    set: std::sync::RwLock<LaneSet>,
}

#[derive(Default)]
struct LaneSet {
    /// Every lane opened since start (indexes never change).
    lanes: Vec<Arc<Lane>>,
    /// The destinations in use, in order (failover's list; hash: one per member).
    destinations: Vec<String>,
    /// `mode: hash`: the lane of each destination in use, in the same order.
    members: Vec<usize>,
    /// `mode: hash`: the ring over `destinations`.
    ring: Option<Ring>,
}

/// Opens the lane of destination `url` as lane `index` (its outbox and delivery thread).
pub type OpenLane<'a> = dyn FnMut(usize, &str) -> anyhow::Result<Arc<Lane>> + 'a;

impl Lanes {
    /// The lanes of a sink in `mode: failover`: its one lane, to `options.destinations`.
    pub fn failover(lane: Lane, options: &ForwardOptions) -> Lanes {
        Lanes {
            mode: ForwardMode::Failover,
            frame_results: options.frame_results,
            set: std::sync::RwLock::new(LaneSet {
                lanes: vec![Arc::new(lane)],
                destinations: options.destinations.clone(),
                members: vec![0],
                ring: None,
            }),
        }
    }

    /// The lanes of a sink in `mode: hash`: none until [`Lanes::set_destinations`].
    pub fn hash(options: &ForwardOptions) -> Lanes {
        Lanes {
            mode: ForwardMode::Hash,
            frame_results: options.frame_results,
            set: std::sync::RwLock::new(LaneSet::default()),
        }
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, LaneSet> {
        self.set.read().unwrap_or_else(|p| p.into_inner())
    }

    /// Every lane opened so far.
    pub fn lanes(&self) -> Vec<Arc<Lane>> {
        self.read().lanes.clone()
    }

    /// The destinations in use.
    pub fn destinations(&self) -> Vec<String> {
        self.read().destinations.clone()
    }

    /// Whether lane `index` is one of the set in use.
    fn is_member(&self, index: usize) -> bool {
        self.read().members.contains(&index)
    }

    /// Makes `destinations` the set in use. In `mode: hash` each gets its lane: the one it
    /// had (by outbox name), or one `open` makes; the others are retired.
    pub fn set_destinations(&self, destinations: &[String], sink: &str, open: &mut OpenLane<'_>) -> anyhow::Result<()> {
        let mut set = self.set.write().unwrap_or_else(|p| p.into_inner());
        if self.mode == ForwardMode::Failover {
            set.destinations = destinations.to_vec();
            return Ok(());
        }
        let mut members = Vec::with_capacity(destinations.len());
        for destination in destinations {
            let name = format!("{sink}@{}", destination_label(destination));
            let index = match set.lanes.iter().position(|lane| lane.name == name) {
                Some(index) => index,
                None => {
                    let index = set.lanes.len();
                    let lane = open(index, destination)?;
                    set.lanes.push(lane);
                    index
                }
            };
            members.push(index);
        }
        let identities: Vec<String> = destinations
            .iter()
            .map(|d| destination_address(d).unwrap_or_default())
            .collect();
        set.ring = Some(Ring::new(&identities));
        set.members = members;
        set.destinations = destinations.to_vec();
        Ok(())
    }

    /// Splits `groups` by the lane that owns each result (its key on the ring) among the lanes
    /// in use that `allowed` accepts, and appends each lane's part; the number of frames. An
    /// error when no lane may take a result (none in use or none allowed).
    fn route(&self, groups: Vec<SourceGroup>, allowed: impl Fn(usize) -> bool) -> Result<u64, String> {
        let set = self.read();
        let Some(ring) = &set.ring else {
            return set.lanes[0].append(&groups, self.frame_results);
        };
        let mut per_lane: Vec<Vec<SourceGroup>> = set.lanes.iter().map(|_| Vec::new()).collect();
        let mut key = Vec::new();
        for (source, results) in groups {
            let first_group_of_source: Vec<usize> = per_lane.iter().map(Vec::len).collect();
            for result in results {
                result_key(&source.node, result.id.as_str(), &mut key);
                let member = ring
                    .owner_among(&key, |m| allowed(set.members[m]))
                    .ok_or_else(|| "no destination of the ring may take results now".to_owned())?;
                let lane = set.members[member];
                let groups = &mut per_lane[lane];
                if groups.len() == first_group_of_source[lane] {
                    groups.push((source.clone(), Vec::new()));
                }
                groups.last_mut().expect("pushed").1.push(result);
            }
        }
        let mut frames = 0;
        for (lane, groups) in set.lanes.iter().zip(&per_lane) {
            frames += lane.append(groups, self.frame_results)?;
        }
        Ok(frames)
    }

    /// Appends one HAProxy snapshot as one frame to the lane that owns it: the one lane
    /// (failover), or the owner of `<node>/haproxy` on the ring (a load balancer's snapshots
    /// always reach the same receiver, which aggregates them).
    fn route_snapshot(
        &self,
        source: &Source,
        name: &SnapshotName,
        files: &[(&str, &[u8])],
        allowed: impl Fn(usize) -> bool,
    ) -> Result<(), String> {
        let set = self.read();
        let lane = match &set.ring {
            None => 0,
            Some(ring) => {
                let mut key = Vec::new();
                result_key(&source.node, "haproxy", &mut key);
                let member = ring
                    .owner_among(&key, |m| allowed(set.members[m]))
                    .ok_or_else(|| "no destination of the ring may take snapshots now".to_owned())?;
                set.members[member]
            }
        };
        set.lanes[lane].append_frame(source, name, files)
    }

    fn failing_since(&self, index: usize) -> Option<Arc<Lane>> {
        self.read().lanes.get(index).cloned()
    }

    /// Records a send of lane `index`: a success clears its failure, a failure starts it (if
    /// not started). Returns how long it has been failing.
    fn record(&self, index: usize, ok: bool) -> Duration {
        let Some(lane) = self.failing_since(index) else {
            return Duration::ZERO;
        };
        let mut since = lane.failing_since.lock().unwrap_or_else(|p| p.into_inner());
        if ok {
            *since = None;
            return Duration::ZERO;
        }
        since.get_or_insert_with(Instant::now).elapsed()
    }

    /// Whether lane `index`'s destination has been failing for at least `timeout`.
    fn down_for(&self, index: usize, timeout: Duration) -> bool {
        self.failing_since(index).is_some_and(|lane| {
            let since = lane.failing_since.lock().unwrap_or_else(|p| p.into_inner());
            since.is_some_and(|since| since.elapsed() >= timeout)
        })
    }

    /// Hands the frames of `payload` (one batch of lane `from`'s outbox) to the lanes in use
    /// that own their results (a whole snapshot's frame: its load balancer's key) once `from` (and, with a `timeout`, every destination down for
    /// that long) is left out: decoded, routed again, appended (durable) to those lanes. On
    /// `Ok` (frames read, results moved) the batch may be acknowledged: its results are in
    /// other outboxes.
    fn hand_off(&self, from: usize, payload: &[u8], timeout: Option<Duration>) -> Result<(u64, u64), String> {
        let mut groups = Vec::new();
        let mut rest = payload;
        let bounds = PingBounds {
            now: 0,
            max_age: u64::MAX / 4,
            max_future: u64::MAX / 4,
            max_results: self.frame_results.max(1),
        };
        let (mut frames_read, mut results_moved) = (0u64, 0u64);
        let mut snapshots = Vec::new();
        while !rest.is_empty() {
            let (frame, after) =
                ship::decode(rest).map_err(|e| format!("a frame of the outbox cannot be read back: {e}"))?;
            rest = after;
            frames_read += 1;
            let header = frame.header;
            let source = Source {
                origin: header.origin,
                node: header.origin_node.clone(),
                chain: header.chain.clone(),
            };
            match frame.files.as_slice() {
                [(name, bytes)] if *name == PING_FILE => {
                    let (_, results) = decode_ping(*bytes, &bounds)
                        .map_err(|e| format!("a frame of the outbox cannot be read back: {e}"))?;
                    results_moved += results.len() as u64;
                    groups.push((source, results));
                }
                // A whole snapshot (HAProxy): to its next owner as it is.
                files => snapshots.push((source, header.snapshot, files.to_vec())),
            }
        }
        let allowed = |lane: usize| lane != from && timeout.is_none_or(|timeout| !self.down_for(lane, timeout));
        self.route(groups, allowed)?;
        for (source, name, files) in &snapshots {
            self.route_snapshot(source, name, files, allowed)?;
        }
        Ok((frames_read, results_moved))
    }
}

/// The sink processing hands batches to: frames into the outbox (or, in `mode: hash`, into
/// the outbox of the destination that owns each result).
pub struct ForwardSink {
    name: String,
    route: Route,
    origin: Origin,
    keep_local: bool,
    lanes: Arc<Lanes>,
}

impl ForwardSink {
    pub fn new(name: &str, options: &ForwardOptions, route: Route, lanes: Arc<Lanes>, origin: Origin) -> ForwardSink {
        ForwardSink {
            name: name.to_owned(),
            route,
            origin,
            keep_local: options.keep_local,
            lanes,
        }
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
        if self.route.takes(DataKind::Haproxy) {
            for snapshot in batch.snapshots {
                let Some(source) = self.source_of(snapshot.origin.as_deref()) else {
                    continue;
                };
                let files: Vec<(&str, &[u8])> = snapshot
                    .files
                    .iter()
                    .map(|(name, text)| (name.as_str(), text.as_bytes()))
                    .collect();
                self.lanes
                    .route_snapshot(&source, &snapshot.name, &files, |_| true)
                    .map_err(|e| self.error(e))?;
            }
        }
        if !self.route.takes(DataKind::Ping) {
            return Ok(());
        }
        let groups = self.by_origin(self.route.results(batch));
        if groups.is_empty() {
            return Ok(());
        }
        self.lanes.route(groups, |_| true).map_err(|e| self.error(e))?;
        Ok(())
    }

    fn takes(&self, kind: DataKind) -> bool {
        self.route.takes(kind)
    }

    fn wants_snapshots(&self, kind: DataKind) -> bool {
        kind == DataKind::Haproxy && self.route.takes(kind)
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

impl ForwardSink {
    /// Who a frame of what came from `provenance` (`None`: this node) is from, with this node
    /// at the end of its chain; `None` when it must not be passed on (a loop, or a chain as
    /// long as a chain may be), logged.
    fn source_of(&self, provenance: Option<&Provenance>) -> Option<Source> {
        match provenance {
            None => Some(Source {
                origin: self.origin.guid,
                node: self.origin.node.clone(),
                chain: vec![self.origin.guid],
            }),
            Some(p) if p.chain.contains(&self.origin.guid) || p.chain.len() >= ship::MAX_CHAIN => {
                warn!(sink = %self.name, node = %p.node, "a received snapshot not passed on: its chain holds this node or is {} nodes long", ship::MAX_CHAIN);
                None
            }
            Some(p) => {
                let mut chain = p.chain.clone();
                chain.push(self.origin.guid);
                Some(Source {
                    origin: p.origin(),
                    node: p.node.clone(),
                    chain,
                })
            }
        }
    }

    /// The results grouped by where they come from, in order of first appearance, each with
    /// the id its origin gives it. A received result whose chain already holds this node (a
    /// loop the receiver let through, which it never does) or is as long as a chain may be is
    /// left out with a warning: the next node would refuse it.
    fn by_origin<'b>(&self, results: impl Iterator<Item = &'b OrderResult>) -> Vec<SourceGroup> {
        let mut groups: Vec<(Option<&Provenance>, SourceGroup)> = Vec::new();
        let mut refused = 0usize;
        for result in results {
            let provenance = result.origin.as_deref();
            if let Some(p) = provenance {
                if p.chain.contains(&self.origin.guid) || p.chain.len() >= ship::MAX_CHAIN {
                    refused += 1;
                    continue;
                }
            }
            let index = match groups.iter().position(|(g, _)| *g == provenance) {
                Some(index) => index,
                None => {
                    let source = match provenance {
                        None => Source {
                            origin: self.origin.guid,
                            node: self.origin.node.clone(),
                            chain: vec![self.origin.guid],
                        },
                        Some(p) => {
                            let mut chain = p.chain.clone();
                            chain.push(self.origin.guid);
                            Source {
                                origin: p.origin(),
                                node: p.node.clone(),
                                chain,
                            }
                        }
                    };
                    groups.push((provenance, (source, Vec::new())));
                    groups.len() - 1
                }
            };
            let mut result = result.clone();
            if let Some(p) = provenance {
                result.id = OrderId::new(p.id_at_origin(&result.id)).expect("a part of an order id is one");
                result.origin = None;
            }
            groups[index].1 .1.push(result);
        }
        if refused > 0 {
            warn!(
                sink = %self.name,
                results = refused,
                "received results not passed on: their chain holds this node or is {} nodes long",
                ship::MAX_CHAIN
            );
        }
        groups.into_iter().map(|(_, group)| group).collect()
    }
}

/// Sends one lane's frames with ureq: to the sink's destinations in order (failover), or to
/// the lane's one destination (hash), handing them off after `handoff-timeout` of failure, and
/// at once when the destination has left the set.
pub struct ForwardTransport {
    api_key: String,
    max_request_bytes: usize,
    agent: ureq::Agent,
    /// The destinations of the last send (failover: the destination that answered last is
    /// tried first next time, until the list changes).
    last_list: Vec<String>,
    current: usize,
    lanes: Arc<Lanes>,
    index: usize,
    handoff_timeout: Option<Duration>,
    /// The lane's delivery counters (`handed_off_lines`).
    stats: Arc<DeliveryStats>,
}

impl ForwardTransport {
    /// The transport of lane `index` of `lanes`; what it hands off is counted in `stats` (the
    /// lane's delivery counters). An error names a TLS file.
    pub fn new(
        options: &ForwardOptions,
        lanes: Arc<Lanes>,
        index: usize,
        stats: Arc<DeliveryStats>,
    ) -> Result<ForwardTransport, crate::http::tls::TlsError> {
        let mut config = ureq::Agent::config_builder()
            .timeout_global(Some(seconds(options.timeout)))
            .http_status_as_error(false);
        // TLS is set up when the sink may ever talk https (discovery may bring https later).
        let https = options.destinations.iter().any(|d| d.starts_with("https://")) || options.discovery.is_some();
        if https {
            config = config.tls_config(client_tls(&options.tls)?);
        }
        Ok(ForwardTransport {
            api_key: options.api_key.clone(),
            max_request_bytes: options.max_request_bytes,
            agent: config.build().new_agent(),
            last_list: Vec::new(),
            current: 0,
            lanes,
            index,
            handoff_timeout: options.handoff_timeout.map(seconds),
            stats,
        })
    }

    /// The URLs this lane sends to now.
    fn urls(&self) -> Vec<String> {
        let destinations = match self.lanes.failing_since(self.index).and_then(|l| l.destination.clone()) {
            Some(one) => vec![one],
            None => self.lanes.destinations(),
        };
        destinations
            .iter()
            .map(|d| {
                format!(
                    "{}://{}{}",
                    scheme(d),
                    destination_address(d).unwrap_or_default(),
                    crate::receive::server::PATH
                )
            })
            .collect()
    }

    /// The failover loop over the destinations.
    fn send_any(&mut self, payload: &[u8]) -> Result<(), DeliveryError> {
        let urls = self.urls();
        if urls != self.last_list {
            self.last_list = urls.clone();
            self.current = 0;
        }
        let n = urls.len();
        if n == 0 {
            return Err(DeliveryError::Transient("no destination known yet (discovery)".into()));
        }
        let mut last = None;
        for k in 0..n {
            let index = (self.current + k) % n;
            match self.send_to(&urls[index], payload) {
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

    /// Hands the payload off to the other lanes; `Ok` when it may be acknowledged here.
    fn hand_off(&self, payload: &[u8], timeout: Option<Duration>, why: &str) -> Result<(), DeliveryError> {
        match self.lanes.hand_off(self.index, payload, timeout) {
            Ok((frames, results)) => {
                self.stats.handed_off_lines.fetch_add(frames, Ordering::Relaxed);
                warn!(lane = %self.lane_name(), frames, results, "{why}: handed off to the current owners on the ring");
                Ok(())
            }
            Err(e) => Err(DeliveryError::Transient(format!("{why}; cannot hand off: {e}"))),
        }
    }

    fn lane_name(&self) -> String {
        self.lanes
            .failing_since(self.index)
            .map(|lane| lane.name.clone())
            .unwrap_or_default()
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
        if self.lanes.mode == ForwardMode::Failover {
            return self.send_any(payload);
        }
        // A destination that left the set: what it holds goes to the current owners.
        if !self.lanes.is_member(self.index) {
            return self.hand_off(payload, None, "the destination left the set");
        }
        let sent = self.send_any(payload);
        // An answer, even a rejection, says the destination is up.
        let failing = self
            .lanes
            .record(self.index, !matches!(sent, Err(DeliveryError::Transient(_))));
        match (sent, self.handoff_timeout) {
            (Err(DeliveryError::Transient(e)), Some(timeout)) if failing >= timeout => {
                let why = format!(
                    "destination down for {:.0} s (handoff-timeout); last error: {e}",
                    failing.as_secs_f64()
                );
                self.hand_off(payload, Some(timeout), &why)
            }
            (sent, _) => sent,
        }
    }

    fn max_payload(&self) -> usize {
        self.max_request_bytes
    }

    fn describe(&self) -> String {
        self.urls().join(", ")
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

    /// A node named `child` with a new GUID.
    fn child_origin() -> Origin {
        Origin {
            guid: MachineGuid::random(),
            node: "child".into(),
        }
    }

    fn one_lane(outbox: &Arc<Outbox>, options: &ForwardOptions) -> Arc<Lanes> {
        Arc::new(Lanes::failover(
            Lane::open("up", None, outbox.clone()).unwrap(),
            options,
        ))
    }

    /// A sink in mode: hash over `n` destinations (nothing listens there), its lanes.
    fn hash_sink(dir: &std::path::Path, n: usize, origin: &Origin) -> (ForwardOptions, Arc<Lanes>, ForwardSink) {
        let options = ForwardOptions {
            destinations: (1..=n).map(|i| format!("http://127.0.0.{i}:1")).collect(),
            mode: ForwardMode::Hash,
            ..options(1000)
        };
        let lanes = Arc::new(Lanes::hash(&options));
        lanes
            .set_destinations(&options.destinations, "up", &mut |_, d| {
                let name = format!("up@{}", destination_label(d));
                let outbox = Arc::new(Outbox::open(&dir.join(&name), OutboxLimits::default()).unwrap());
                Ok(Arc::new(Lane::open(&name, Some(d), outbox).unwrap()))
            })
            .unwrap();
        let sink = ForwardSink::new("up", &options, Route::everything(), lanes.clone(), origin.clone());
        (options, lanes, sink)
    }

    /// A sink in mode: hash over 3 destinations, 300 results accepted.
    fn hashed_with_results() -> (tempfile::TempDir, ForwardOptions, Arc<Lanes>, ForwardSink) {
        let tmp = tempfile::tempdir().unwrap();
        let origin = child_origin();
        let (options, lanes, sink) = hash_sink(tmp.path(), 3, &origin);
        sink.accept(SinkBatch::round(&results(300, 1_700_000_000), &[]))
            .unwrap();
        (tmp, options, lanes, sink)
    }

    /// The payload the lane's delivery would send next (all it holds here).
    fn pending(lane: &Lane) -> Vec<u8> {
        let mut reader = lane.outbox().reader();
        reader.next_batch(64 << 20).unwrap().unwrap().payload().to_vec()
    }

    /// The `<node>/<id>` key of every result queued in `outbox` (one batch of up to 64 MiB
    /// holds them all here), without acknowledging them.
    fn queued_keys(outbox: &Arc<Outbox>) -> Vec<String> {
        let mut reader = outbox.reader();
        let mut keys = Vec::new();
        if let Some(batch) = reader.next_batch(64 << 20).unwrap() {
            let mut rest = batch.payload();
            while !rest.is_empty() {
                let (frame, after) = ship::decode(rest).unwrap();
                let (_, results) = decode_ping(frame.files[0].1, &PingBounds::at(1_700_000_000)).unwrap();
                keys.extend(results.iter().map(|r| format!("{}/{}", frame.header.origin_node, r.id)));
                rest = after;
            }
        }
        keys
    }

    fn open(dir: &std::path::Path, origin: &Origin) -> (Arc<Outbox>, ForwardSink) {
        let outbox = Arc::new(Outbox::open(dir, OutboxLimits::default()).unwrap());
        let sink = ForwardSink::new(
            "up",
            &options(3),
            Route::everything(),
            one_lane(&outbox, &options(3)),
            origin.clone(),
        );
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
        let origin = child_origin();
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
        let me = child_origin();
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
        let origin = child_origin();
        let keys = ForwardOptions {
            keep_local: false,
            orders: OrderGlobs {
                include: vec!["lan/**".into()],
                ..OrderGlobs::default()
            },
            ..options(3)
        };
        let route = keys.route_keys().compile().unwrap();
        let sink = ForwardSink::new("up", &keys, route, one_lane(&outbox, &keys), origin.clone());
        assert!(!sink.keeps_all_local());
        let id = |id: &str| OrderResult::builder(OrderId::new(id).unwrap(), 1).build();
        assert!(!sink.keeps_local(&id("lan/t1")));
        assert!(sink.keeps_local(&id("wan/t1")), "not taken, so kept");
        let (_, kept) = open(&tmp.path().join("other"), &origin);
        assert!(kept.keeps_all_local() && kept.keeps_local(&id("lan/t1")));
    }

    #[test]
    fn in_hash_mode_each_result_is_queued_for_the_destination_that_owns_its_key() {
        let (_tmp, options, lanes, _sink) = hashed_with_results();
        let ring = Ring::new(
            &options
                .destinations
                .iter()
                .map(|d| destination_address(d).unwrap())
                .collect::<Vec<_>>(),
        );
        let mut total = 0;
        for (index, lane) in lanes.lanes().iter().enumerate() {
            let keys = queued_keys(lane.outbox());
            assert!(!keys.is_empty(), "every destination owns some of 300 keys");
            for key in &keys {
                assert_eq!(ring.owner(key.as_bytes()), Some(index), "{key} in lane {}", lane.name());
            }
            total += keys.len();
        }
        assert_eq!(total, 300, "each result queued once");
        assert_eq!(lanes.lanes()[1].name(), "up@127.0.0.2_1");
    }

    #[test]
    fn a_destination_down_for_the_handoff_timeout_hands_its_share_to_the_next_owners() {
        let (_tmp, mut options, lanes, _sink) = hashed_with_results();
        let down = &lanes.lanes()[0];
        let share = queued_keys(down.outbox());
        let stats = Arc::new(DeliveryStats::default());
        // Without a timeout the share waits: the send fails and nothing moves.
        let mut waiting = ForwardTransport::new(&options, lanes.clone(), 0, stats.clone()).unwrap();
        let payload = pending(down);
        assert!(matches!(waiting.send(&payload), Err(DeliveryError::Transient(_))));
        // With one already passed (0 s here), the send hands the frames off: they are in the
        // other lanes, each result with its second choice, and the batch may be acknowledged.
        options.handoff_timeout = Some(0.0);
        let before: Vec<usize> = lanes.lanes()[1..]
            .iter()
            .map(|l| queued_keys(l.outbox()).len())
            .collect();
        let mut handing = ForwardTransport::new(&options, lanes.clone(), 0, stats.clone()).unwrap();
        handing.send(&payload).unwrap();
        assert_eq!(stats.handed_off_lines.load(Ordering::Relaxed), 1, "one frame");
        let ring = Ring::new(&["127.0.0.1:1", "127.0.0.2:1", "127.0.0.3:1"]);
        let mut moved = 0;
        for (offset, lane) in lanes.lanes()[1..].iter().enumerate() {
            let keys = queued_keys(lane.outbox());
            let new = &keys[before[offset]..];
            for key in new {
                assert!(share.contains(key));
                assert_eq!(ring.owner_among(key.as_bytes(), |d| d != 0), Some(offset + 1));
            }
            moved += new.len();
        }
        assert_eq!(moved, share.len());
    }

    #[test]
    fn a_haproxy_snapshot_in_a_down_lane_is_handed_off_whole() {
        let tmp = tempfile::tempdir().unwrap();
        let origin = Origin {
            guid: MachineGuid::random(),
            node: "lb-1".into(),
        };
        let (mut options, lanes, sink) = hash_sink(tmp.path(), 3, &origin);
        let snapshot = crate::process::handoff::RawSnapshot {
            name: SnapshotName::parse("1700000000").unwrap(),
            files: vec![
                ("a.sock_info".into(), "Name: HAProxy\n".into()),
                ("a.sock_stat".into(), "# pxname,svname\n".into()),
            ],
            origin: None,
        };
        let snapshots = [snapshot];
        let batch = SinkBatch {
            snapshots: &snapshots,
            ..SinkBatch::default()
        };
        sink.accept(batch).unwrap();
        let owner = lanes
            .lanes()
            .iter()
            .position(|lane| lane.outbox().reader().next_batch(1 << 20).unwrap().is_some())
            .expect("one lane holds the snapshot");
        options.handoff_timeout = Some(0.0);
        let stats = Arc::new(DeliveryStats::default());
        let mut transport = ForwardTransport::new(&options, lanes.clone(), owner, stats.clone()).unwrap();
        let payload = pending(&lanes.lanes()[owner]);
        transport.send(&payload).unwrap();
        let others: Vec<Vec<u8>> = lanes
            .lanes()
            .iter()
            .enumerate()
            .filter(|(i, _)| *i != owner)
            .filter_map(|(_, lane)| {
                lane.outbox()
                    .reader()
                    .next_batch(1 << 20)
                    .unwrap()
                    .map(|b| b.payload().to_vec())
            })
            .collect();
        assert_eq!(others.len(), 1, "the snapshot went to one other lane");
        let (frame, rest) = ship::decode(&others[0]).unwrap();
        assert!(rest.is_empty());
        assert_eq!(frame.header.origin_node, "lb-1");
        assert_eq!(frame.header.snapshot.as_str(), "1700000000");
        assert_eq!(
            frame.files.iter().map(|(n, _)| *n).collect::<Vec<_>>(),
            ["a.sock_info", "a.sock_stat"]
        );
    }

    #[test]
    fn a_destination_that_leaves_the_set_drains_its_share_to_the_current_owners_and_gets_its_lane_back() {
        let (tmp, options, lanes, sink) = hashed_with_results();
        let leaving = lanes.lanes()[2].clone();
        let share = queued_keys(leaving.outbox());
        let mut open = |_: usize, d: &str| -> anyhow::Result<Arc<Lane>> {
            let name = format!("up@{}", destination_label(d));
            let outbox = Arc::new(Outbox::open(&tmp.path().join(&name), OutboxLimits::default()).unwrap());
            Ok(Arc::new(Lane::open(&name, Some(d), outbox).unwrap()))
        };
        lanes
            .set_destinations(&options.destinations[..2], "up", &mut open)
            .unwrap();
        assert_eq!(lanes.destinations(), options.destinations[..2]);
        // New results go to the two left only.
        sink.accept(SinkBatch::round(&results(300, 1_700_000_020), &[]))
            .unwrap();
        assert_eq!(queued_keys(leaving.outbox()).len(), share.len());
        // The retired lane's transport hands what it holds on without sending it anywhere.
        let stats = Arc::new(DeliveryStats::default());
        let mut transport = ForwardTransport::new(&options, lanes.clone(), 2, stats.clone()).unwrap();
        let payload = pending(&leaving);
        transport.send(&payload).unwrap();
        assert_eq!(stats.handed_off_lines.load(Ordering::Relaxed), 1);
        let ring = Ring::new(&["127.0.0.1:1", "127.0.0.2:1"]);
        for (index, lane) in lanes.lanes()[..2].iter().enumerate() {
            for key in queued_keys(lane.outbox()) {
                assert_eq!(ring.owner(key.as_bytes()), Some(index), "{key}");
            }
        }
        // It comes back: the same lane (outbox, stream), not a new one.
        lanes.set_destinations(&options.destinations, "up", &mut open).unwrap();
        assert_eq!(lanes.lanes().len(), 3);
        assert!(lanes.is_member(2));
    }

    #[test]
    fn a_new_outbox_is_a_new_stream() {
        let tmp = tempfile::tempdir().unwrap();
        let origin = child_origin();
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
                    tls: ForwardTls {
                        cert: Some("c.pem".into()),
                        ..ForwardTls::default()
                    },
                    ..options(1)
                },
                "a client certificate needs both cert and key",
            ),
            (
                ForwardOptions {
                    destinations: vec!["p:1".into()],
                    ..options(1)
                },
                "expected https://host:port or http://host:port",
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
                    takes: vec![Kind::SelfMetrics],
                    ..options(1)
                },
                "not forwarded yet",
            ),
            (options(0), "frame-results"),
            (
                ForwardOptions {
                    handoff_timeout: Some(60.0),
                    ..options(1)
                },
                "only a sink in mode: hash",
            ),
            (
                ForwardOptions {
                    mode: ForwardMode::Hash,
                    destinations: vec!["http://a:1".into(), "http://a:1/".into()],
                    ..options(1)
                },
                "share the outbox label a_1",
            ),
        ];
        for (o, expected) in cases {
            let e = o.validate().unwrap_err().to_string();
            assert!(e.contains(expected), "{e}");
        }
        assert_eq!(options(1).validate(), Ok(()));
    }
}
