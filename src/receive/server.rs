//! The receiver's listener: HTTP/1.1 on the configured addresses, one endpoint,
//! `POST /spoolmon/v1/snapshots`, whose body is one or more shipped-snapshot frames
//! ([`crate::spool::ship`]). It answers only once every new frame is durable in `incoming/`
//! ([`super::store`]), so a sender may forget what it was told was stored.
//!
//! Each request, in order: the API key and the peer's address ([`super::access`]; 401/403 with
//! the cause); room in the queue and on the disk (503 with `Retry-After`, at once, before the
//! body is read); the body, bounded by `max-request-bytes` (413) and by the time limit (408);
//! the frames, decoded as hostile input (400 with the byte offset and cause, nothing stored);
//! each frame's origin machine and loop check (refused frames are answered one by one, the
//! others stored); the store (503 when it fails, nothing promised). The answer is JSON, one
//! entry per frame: `{"frames":[{"stream":"…","sequence":7,"result":"stored"},
//! {"stream":"…","sequence":8,"result":"repeat"},{"stream":"…","sequence":9,"result":"refused",
//! "status":403,"reason":"…"}]}`; an error is `{"error":"…"}`.
//!
//! Limits against hostile peers are the listener's ([`crate::http`]), from the `receive:`
//! options: at most `max-connections` at once (one more is answered 503 and closed), a new
//! connection at most every `accept-every`, the request head, a TLS handshake and each write
//! within `timeout`, and a connection's whole life within `timeout` ×
//! [`MAX_CONNECTION_LIFE_FACTOR`]; the body within `timeout` here.
//!
//! Runs on a current-thread tokio runtime in its own thread (`receive`); stores on tokio's
//! blocking pool, one request at a time (the store is behind a mutex). Owns nothing on disk
//! itself. Started by the commands with a `receive:` section.

use super::access::{Access, Refusal};
use super::store::{Store, Stored};
use crate::http::{self, answer, error_json, ConnectionStats, Handler, Listen, Listeners, Peer};
use crate::spool::identity::MachineGuid;
use crate::spool::ship;
use crate::spool::{queue, BaseDir};
use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Method, Request, Response};
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tracing::warn;

/// The one path the receiver serves.
pub const PATH: &str = "/spoolmon/v1/snapshots";
/// Longest a connection may live, whatever it does: `timeout` × 10.
pub const MAX_CONNECTION_LIFE_FACTOR: u32 = 10;

/// The receiver's limits (the `receive:` options that bound what peers can make it do).
#[derive(Clone, Debug)]
pub struct Limits {
    pub max_request_bytes: usize,
    pub max_connections: usize,
    pub accept_every: Duration,
    pub timeout: Duration,
    /// Answer 503 while `incoming/` holds this many snapshots or more.
    pub queue_size: usize,
    /// Answer 503 while the base directory's filesystem has less free space than this.
    pub min_free_bytes: u64,
    /// Most results of the snapshot one request's merged ping frames become (processing's
    /// `max-results`).
    pub merge_results: usize,
}

impl Limits {
    /// What the listener holds every connection to: `timeout` for the head, the handshake and
    /// each write, `timeout` × [`MAX_CONNECTION_LIFE_FACTOR`] for a connection's life.
    fn connection_limits(&self) -> http::Limits {
        http::Limits {
            max_connections: self.max_connections,
            accept_every: self.accept_every,
            header_timeout: self.timeout,
            write_timeout: self.timeout,
            life: self.timeout * MAX_CONNECTION_LIFE_FACTOR,
        }
    }
}

/// What the receiver counts (read by status and self-metrics).
#[derive(Debug, Default)]
pub struct ReceiveStats {
    pub requests: AtomicU64,
    /// Requests refused whole: key, capacity, size, time, malformed body, store failure.
    pub requests_refused: AtomicU64,
    pub frames_stored: AtomicU64,
    pub frames_repeated: AtomicU64,
    pub frames_refused: AtomicU64,
    pub bytes_received: AtomicU64,
    /// Connections refused, TLS handshakes failed (no certificate, a certificate the client CA
    /// did not sign, plain HTTP to a TLS port, a stalled peer), requests in flight.
    pub connections: ConnectionStats,
    pub last_error: crate::shared::last_error::LastError,
}

struct Shared {
    base: BaseDir,
    access: Access,
    me: MachineGuid,
    limits: Limits,
    store: Mutex<Store>,
    stats: Arc<ReceiveStats>,
}

/// A bound receiver, not yet serving.
pub struct Receiver {
    listeners: Listeners,
    shared: Arc<Shared>,
    tls: Option<Arc<rustls::ServerConfig>>,
}

impl Receiver {
    /// Binds every address (an error names it) and opens the store (finishing what a crash
    /// left, see [`Store::open`]).
    pub fn bind(
        base: &BaseDir,
        listen: &[SocketAddr],
        access: Access,
        me: MachineGuid,
        limits: Limits,
        stats: Arc<ReceiveStats>,
    ) -> io::Result<Receiver> {
        let listen: Vec<Listen> = listen.iter().copied().map(Listen::Tcp).collect();
        let listeners = Listeners::bind(&listen)?;
        let store = Store::open(base)?.with_merge_results(limits.merge_results);
        Ok(Receiver {
            listeners,
            shared: Arc::new(Shared {
                base: base.clone(),
                access,
                me,
                limits,
                store: Mutex::new(store),
                stats,
            }),
            tls: None,
        })
    }

    /// Speaks TLS with `config` on every listener (before serving).
    pub fn with_tls(mut self, config: Option<Arc<rustls::ServerConfig>>) -> Receiver {
        self.tls = config;
        self
    }

    /// The addresses actually bound (port 0 becomes the port the kernel chose).
    pub fn local_addrs(&self) -> Vec<SocketAddr> {
        self.listeners.local_addrs()
    }

    /// Serves in a thread of its own (`receive`) until `shutdown` is set; requests in progress
    /// then get up to the time limit to finish.
    pub fn spawn(self, shutdown: Arc<AtomicBool>) -> io::Result<std::thread::JoinHandle<()>> {
        let limits = self.shared.limits.connection_limits();
        self.listeners.spawn("receive", self.shared, limits, self.tls, shutdown)
    }
}

impl Handler for Shared {
    async fn handle(self: Arc<Self>, request: Request<Incoming>, peer: Peer) -> Response<Full<Bytes>> {
        let Peer::Tcp(peer) = peer else {
            // The receiver listens on TCP only (`receive.listen` takes addresses).
            return answer(403, error_json("the receiver takes TCP peers only"));
        };
        handle(request, peer, self).await
    }

    fn connections(&self) -> &ConnectionStats {
        &self.stats.connections
    }

    fn connection_failed(&self, message: String) {
        self.stats.last_error.set(message);
    }

    fn config_key(&self) -> &'static str {
        "receive"
    }
}

/// Refuses the whole request: counted, logged with the peer, answered with the cause.
fn refuse(shared: &Shared, peer: SocketAddr, status: u16, reason: &str, retry: Option<u64>) -> Response<Full<Bytes>> {
    shared.stats.requests_refused.fetch_add(1, Ordering::Relaxed);
    warn!(peer = %peer, status, "refused a shipment: {reason}");
    shared.stats.last_error.set(format!("refused {peer}: {reason}"));
    let mut response = answer(status, error_json(reason));
    if let Some(retry) = retry {
        response
            .headers_mut()
            .insert(hyper::header::RETRY_AFTER, hyper::header::HeaderValue::from(retry));
    }
    response
}

async fn handle(request: Request<Incoming>, peer: SocketAddr, shared: Arc<Shared>) -> Response<Full<Bytes>> {
    shared.stats.requests.fetch_add(1, Ordering::Relaxed);
    if request.uri().path() != PATH {
        return refuse(
            &shared,
            peer,
            404,
            &format!("no such endpoint (this node receives at POST {PATH})"),
            None,
        );
    }
    if request.method() != Method::POST {
        return refuse(&shared, peer, 405, &format!("{PATH} takes POST only"), None);
    }
    let authorization = request
        .headers()
        .get(hyper::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    if let Err(refusal) = shared.access.check_key(authorization, peer.ip()) {
        return refuse(&shared, peer, refusal.status(), &refusal.to_string(), None);
    }
    if let Some(reason) = over_capacity(&shared) {
        return refuse(&shared, peer, 503, &reason, Some(5));
    }
    let limit = shared.limits.max_request_bytes;
    let body = match http::read_body(request, limit, shared.limits.timeout, "receive").await {
        Ok(body) => body,
        Err((413, reason)) => {
            let reason = format!("{reason}: send fewer snapshots per request");
            return refuse(&shared, peer, 413, &reason, None);
        }
        Err((status, reason)) => return refuse(&shared, peer, status, &reason, None),
    };
    shared
        .stats
        .bytes_received
        .fetch_add(body.len() as u64, Ordering::Relaxed);
    let worker = Arc::clone(&shared);
    match tokio::task::spawn_blocking(move || store_body(&worker, peer, &body)).await {
        Ok(Ok(json)) => answer(200, json),
        Ok(Err((status, reason))) => refuse(&shared, peer, status, &reason, (status == 503).then_some(5)),
        Err(e) => refuse(&shared, peer, 500, &format!("the store failed: {e}"), None),
    }
}

/// Why the receiver cannot take more now (queue full, disk low), if it cannot.
fn over_capacity(shared: &Shared) -> Option<String> {
    match queue::depth(&shared.base) {
        Ok(depth) if depth >= shared.limits.queue_size => {
            return Some(format!(
            "over capacity: incoming/ holds {depth} snapshots (queue-size {}); the sender keeps its data and retries",
            shared.limits.queue_size
        ))
        }
        Err(e) => return Some(format!("cannot look at incoming/: {e}")),
        Ok(_) => {}
    }
    match queue::free_space(&shared.base) {
        Ok(free) if free < shared.limits.min_free_bytes => Some(format!(
            "short of disk: {free} bytes free, {} needed; the sender keeps its data and retries",
            shared.limits.min_free_bytes
        )),
        Err(e) => Some(format!("cannot read the free space: {e}")),
        Ok(_) => None,
    }
}

/// Decodes every frame, checks each, stores the accepted ones; the JSON answer, or the
/// status and cause of refusing the whole request.
fn store_body(shared: &Shared, peer: SocketAddr, body: &[u8]) -> Result<String, (u16, String)> {
    let mut frames = Vec::new();
    let mut rest = body;
    while !rest.is_empty() {
        let offset = body.len() - rest.len();
        let (frame, after) = ship::decode(rest).map_err(|e| {
            (
                400,
                format!(
                    "frame {} (at byte {offset} of the body): {e}; nothing of this request was stored",
                    frames.len() + 1
                ),
            )
        })?;
        frames.push(frame);
        rest = after;
    }
    if frames.is_empty() {
        return Err((400, "the body holds no frame".into()));
    }
    let verdicts: Vec<Result<(), Refusal>> = frames
        .iter()
        .map(|f| {
            shared
                .access
                .check_frame(f.header.origin, &f.header.chain, shared.me, peer.ip())
        })
        .collect();
    let accepted: Vec<ship::Frame<'_>> = frames
        .iter()
        .zip(&verdicts)
        .filter(|(_, v)| v.is_ok())
        .map(|(f, _)| ship::Frame {
            header: f.header.clone(),
            files: f.files.clone(),
        })
        .collect();
    let stored = {
        let mut store = shared.store.lock().unwrap_or_else(|p| p.into_inner());
        store.store(&accepted).map_err(|e| {
            (
                503,
                format!("cannot store the snapshots: {e}; nothing new was promised, send them again"),
            )
        })?
    };
    let mut stored = stored.into_iter();
    let mut entries = Vec::with_capacity(frames.len());
    for (frame, verdict) in frames.iter().zip(verdicts) {
        let h = &frame.header;
        let mut entry = serde_json::json!({ "stream": h.stream.hyphenated().to_string(), "sequence": h.sequence });
        match verdict {
            Ok(()) => {
                let result = match stored.next() {
                    Some(Stored::New(_)) => {
                        shared.stats.frames_stored.fetch_add(1, Ordering::Relaxed);
                        "stored"
                    }
                    _ => {
                        shared.stats.frames_repeated.fetch_add(1, Ordering::Relaxed);
                        "repeat"
                    }
                };
                entry["result"] = result.into();
            }
            Err(refusal) => {
                shared.stats.frames_refused.fetch_add(1, Ordering::Relaxed);
                warn!(peer = %peer, origin = %h.origin, node = %h.origin_node, "refused a shipped snapshot: {refusal}");
                shared.stats.last_error.set(format!(
                    "refused a snapshot of {} from {peer}: {refusal}",
                    h.origin_node
                ));
                entry["result"] = "refused".into();
                entry["status"] = refusal.status().into();
                entry["reason"] = refusal.to_string().into();
            }
        }
        entries.push(entry);
    }
    if entries.iter().all(|e| e["result"] != "refused") {
        // A request taken whole: what went wrong before works again.
        shared.stats.last_error.succeeded();
    }
    Ok(serde_json::json!({ "frames": entries }).to_string())
}

#[cfg(test)]
mod tests {
    use super::super::access::Grant;
    use super::super::pattern::SimplePattern;
    use super::*;
    use crate::spool::ship::ShipHeader;
    use crate::spool::snapshot::SnapshotName;
    use std::collections::HashMap;
    use std::io::{Read, Write};

    const KEY: &str = "11111111-2222-3333-4444-555555555555";

    struct Running {
        _tmp: tempfile::TempDir,
        base: BaseDir,
        address: SocketAddr,
        me: MachineGuid,
        stats: Arc<ReceiveStats>,
        shutdown: Arc<AtomicBool>,
        thread: Option<std::thread::JoinHandle<()>>,
    }

    impl Drop for Running {
        fn drop(&mut self) {
            self.shutdown.store(true, Ordering::Relaxed);
            if let Some(thread) = self.thread.take() {
                let _ = thread.join();
            }
        }
    }

    fn limits() -> Limits {
        Limits {
            max_request_bytes: 1 << 20,
            max_connections: 8,
            accept_every: Duration::ZERO,
            timeout: Duration::from_secs(2),
            queue_size: 1000,
            min_free_bytes: 0,
            merge_results: 4000,
        }
    }

    fn start(access: Access, limits: Limits) -> Running {
        let tmp = tempfile::tempdir().unwrap();
        let base = BaseDir::new(tmp.path());
        base.create_all().unwrap();
        let me = MachineGuid::random();
        let stats = Arc::new(ReceiveStats::default());
        let receiver = Receiver::bind(
            &base,
            &["127.0.0.1:0".parse().unwrap()],
            access,
            me,
            limits,
            Arc::clone(&stats),
        )
        .unwrap();
        let address = receiver.local_addrs()[0];
        let shutdown = Arc::new(AtomicBool::new(false));
        let thread = receiver.spawn(Arc::clone(&shutdown)).unwrap();
        Running {
            _tmp: tmp,
            base,
            address,
            me,
            stats,
            shutdown,
            thread: Some(thread),
        }
    }

    fn grant(enabled: bool, pattern: &str) -> Grant {
        Grant {
            enabled,
            allow_from: SimplePattern::parse(pattern).unwrap(),
        }
    }

    fn access() -> Access {
        Access {
            keys: HashMap::from([(KEY.parse().unwrap(), grant(true, "127.0.0.1 127.0.0.2"))]),
            machines: HashMap::new(),
        }
    }

    /// Connects from `from` (a loopback address), sends `request` whole, reads the answer to
    /// the end (the request asks the server to close).
    fn exchange(to: SocketAddr, from: &str, request: &[u8]) -> (u16, String, String) {
        let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        socket
            .bind(&format!("{from}:0").parse::<SocketAddr>().unwrap().into())
            .unwrap();
        socket.connect(&to.into()).unwrap();
        let mut stream: std::net::TcpStream = socket.into();
        stream.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
        stream.write_all(request).unwrap();
        let mut answer = Vec::new();
        stream.read_to_end(&mut answer).unwrap();
        let answer = String::from_utf8_lossy(&answer).into_owned();
        let (head, body) = answer.split_once("\r\n\r\n").unwrap_or((&answer, ""));
        let status = head.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
        (status, head.to_string(), body.to_string())
    }

    fn post(key: Option<&str>, body: &[u8]) -> Vec<u8> {
        let mut request = format!(
            "POST {PATH} HTTP/1.1\r\nHost: parent\r\nConnection: close\r\nContent-Length: {}\r\n",
            body.len()
        );
        if let Some(key) = key {
            request.push_str(&format!("Authorization: Bearer {key}\r\n"));
        }
        request.push_str("\r\n");
        let mut bytes = request.into_bytes();
        bytes.extend_from_slice(body);
        bytes
    }

    fn frame(origin: MachineGuid, chain: Vec<MachineGuid>, stream: uuid::Uuid, sequence: u64, out: &mut Vec<u8>) {
        let header = ShipHeader {
            origin,
            origin_node: "child-1".into(),
            chain,
            stream,
            sequence,
            snapshot: SnapshotName::new(1_700_000_000, "ping", sequence),
        };
        ship::encode(&header, &[("ping.jsonl", b"spoolmon-ping 1 batch 0\n")], out);
    }

    fn queued(base: &BaseDir) -> usize {
        crate::spool::beneath::sorted_names(&base.incoming()).len()
    }

    #[test]
    fn frames_are_stored_before_the_answer_and_repeats_are_recognised() {
        let r = start(access(), limits());
        let (child, stream) = (MachineGuid::random(), uuid::Uuid::new_v4());
        let mut body = Vec::new();
        frame(child, vec![child], stream, 1, &mut body);
        frame(child, vec![child], stream, 2, &mut body);
        let (status, _, answer) = exchange(r.address, "127.0.0.1", &post(Some(KEY), &body));
        assert_eq!(status, 200, "{answer}");
        let json: serde_json::Value = serde_json::from_str(&answer).unwrap();
        assert_eq!(json["frames"][0]["result"], "stored");
        assert_eq!(json["frames"][1]["result"], "stored");
        assert_eq!(json["frames"][1]["sequence"], 2);
        assert_eq!(queued(&r.base), 2, "in incoming/ when the answer came");
        // Sent again (the answer was lost): acknowledged, not stored twice.
        let (status, _, answer) = exchange(r.address, "127.0.0.2", &post(Some(KEY), &body));
        assert_eq!(status, 200);
        assert!(answer.matches("\"repeat\"").count() == 2, "{answer}");
        assert_eq!(queued(&r.base), 2);
        assert_eq!(r.stats.frames_stored.load(Ordering::Relaxed), 2);
        assert_eq!(r.stats.frames_repeated.load(Ordering::Relaxed), 2);
    }

    #[test]
    fn every_refusal_of_a_request_says_its_cause() {
        let mut rules = access();
        let disabled = uuid::Uuid::new_v4();
        rules.keys.insert(disabled, grant(false, "*"));
        let r = start(rules, limits());
        let child = MachineGuid::random();
        let mut body = Vec::new();
        frame(child, vec![child], uuid::Uuid::new_v4(), 1, &mut body);
        let cases: Vec<(Vec<u8>, &str, u16, &str)> = vec![
            (post(None, &body), "127.0.0.1", 401, "no API key"),
            (post(Some("not-a-key"), &body), "127.0.0.1", 401, "not a UUID"),
            (
                post(Some(&uuid::Uuid::new_v4().to_string()), &body),
                "127.0.0.1",
                401,
                "unknown API key",
            ),
            (post(Some(&disabled.to_string()), &body), "127.0.0.1", 403, "disabled"),
            (
                post(Some(KEY), &body),
                "127.0.0.3",
                403,
                "address 127.0.0.3 is not allowed",
            ),
            (
                post(Some(KEY), b"GET / HTTP/1.1\r\n\r\n"),
                "127.0.0.1",
                400,
                "not a shipped snapshot",
            ),
            (post(Some(KEY), b""), "127.0.0.1", 400, "no frame"),
            (
                format!("GET {PATH} HTTP/1.1\r\nHost: p\r\nConnection: close\r\n\r\n").into_bytes(),
                "127.0.0.1",
                405,
                "POST only",
            ),
            (
                b"POST /other HTTP/1.1\r\nHost: p\r\nConnection: close\r\nContent-Length: 0\r\n\r\n".to_vec(),
                "127.0.0.1",
                404,
                "no such endpoint",
            ),
        ];
        for (request, from, status, cause) in cases {
            let (got, _, answer) = exchange(r.address, from, &request);
            assert_eq!(got, status, "{cause}: {answer}");
            assert!(answer.contains(cause), "{cause}: {answer}");
        }
        assert_eq!(queued(&r.base), 0);
        // A frame cut short in the middle of a body with a good one first: nothing stored.
        let mut two = body.clone();
        let mut second = Vec::new();
        frame(child, vec![child], uuid::Uuid::new_v4(), 2, &mut second);
        two.extend_from_slice(&second[..second.len() - 5]);
        let (got, _, answer) = exchange(r.address, "127.0.0.1", &post(Some(KEY), &two));
        assert_eq!(got, 400, "{answer}");
        assert!(
            answer.contains("frame 2") && answer.contains("nothing of this request was stored"),
            "{answer}"
        );
        assert_eq!(queued(&r.base), 0);
    }

    #[test]
    fn machines_and_loops_are_refused_frame_by_frame() {
        let (off, good) = (MachineGuid::random(), MachineGuid::random());
        let mut rules = access();
        rules.machines.insert(off, grant(false, "*"));
        let r = start(rules, limits());
        let mut body = Vec::new();
        frame(off, vec![off], uuid::Uuid::new_v4(), 1, &mut body);
        frame(good, vec![good], uuid::Uuid::new_v4(), 1, &mut body);
        frame(good, vec![good, r.me], uuid::Uuid::new_v4(), 1, &mut body);
        let (status, _, answer) = exchange(r.address, "127.0.0.1", &post(Some(KEY), &body));
        assert_eq!(status, 200, "{answer}");
        let json: serde_json::Value = serde_json::from_str(&answer).unwrap();
        assert_eq!(json["frames"][0]["result"], "refused");
        assert_eq!(json["frames"][0]["status"], 403);
        assert!(json["frames"][0]["reason"].as_str().unwrap().contains("is disabled"));
        assert_eq!(json["frames"][1]["result"], "stored");
        assert_eq!(json["frames"][2]["status"], 508);
        assert!(json["frames"][2]["reason"].as_str().unwrap().starts_with("loop"));
        assert_eq!(queued(&r.base), 1);
        assert_eq!(r.stats.frames_refused.load(Ordering::Relaxed), 2);
    }

    #[test]
    fn bodies_over_the_limit_are_refused_declared_or_not() {
        let mut small = limits();
        small.max_request_bytes = 1000;
        let r = start(access(), small);
        let child = MachineGuid::random();
        let mut body = Vec::new();
        while body.len() <= 1000 {
            frame(child, vec![child], uuid::Uuid::new_v4(), 1, &mut body);
        }
        let (status, _, answer) = exchange(r.address, "127.0.0.1", &post(Some(KEY), &body));
        assert_eq!(status, 413, "{answer}");
        assert!(answer.contains("max-request-bytes"), "{answer}");
        // Chunked, so no length is declared: cut off while it arrives.
        let mut request = format!(
            "POST {PATH} HTTP/1.1\r\nHost: p\r\nConnection: close\r\nTransfer-Encoding: chunked\r\nAuthorization: Bearer {KEY}\r\n\r\n"
        )
        .into_bytes();
        request.extend_from_slice(format!("{:x}\r\n", body.len()).as_bytes());
        request.extend_from_slice(&body);
        request.extend_from_slice(b"\r\n0\r\n\r\n");
        let (status, _, answer) = exchange(r.address, "127.0.0.1", &request);
        assert_eq!(status, 413, "{answer}");
        assert_eq!(queued(&r.base), 0);
    }

    #[test]
    fn a_full_queue_is_answered_503_with_retry_after_before_the_body_is_read() {
        let mut full = limits();
        full.queue_size = 1;
        let r = start(access(), full);
        std::fs::create_dir(r.base.incoming().join("1700000000")).unwrap();
        let child = MachineGuid::random();
        let mut body = Vec::new();
        frame(child, vec![child], uuid::Uuid::new_v4(), 1, &mut body);
        let (status, head, answer) = exchange(r.address, "127.0.0.1", &post(Some(KEY), &body));
        assert_eq!(status, 503, "{answer}");
        assert!(head.to_ascii_lowercase().contains("retry-after: 5"), "{head}");
        assert!(
            answer.contains("over capacity") && answer.contains("queue-size 1"),
            "{answer}"
        );
    }

    #[test]
    fn slow_peers_are_cut_off_and_a_connection_over_the_limit_is_refused() {
        let mut few = limits();
        few.max_connections = 2;
        few.timeout = Duration::from_secs(1);
        let r = start(access(), few);
        // Two peers that send half a request head and stop (slow loris) hold both slots...
        let mut idle = Vec::new();
        for _ in 0..2 {
            let mut s = std::net::TcpStream::connect(r.address).unwrap();
            s.write_all(b"POST /spoolmon/v1/snap").unwrap();
            s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
            idle.push(s);
        }
        // ...until the receiver has counted them (so the third is surely over the limit).
        let child = MachineGuid::random();
        let mut body = Vec::new();
        frame(child, vec![child], uuid::Uuid::new_v4(), 1, &mut body);
        let mut refused = None;
        for _ in 0..50 {
            let (status, _, answer) = exchange(r.address, "127.0.0.1", &post(Some(KEY), &body));
            if status == 503 {
                refused = Some(answer);
                break;
            }
            assert_eq!(status, 200, "{answer}");
        }
        let answer = refused.expect("a third connection was never refused");
        assert!(answer.contains("max-connections"), "{answer}");
        // The slow ones are closed by the header time limit (read returns end of file).
        for mut s in idle {
            let mut rest = Vec::new();
            let read = s.read_to_end(&mut rest);
            assert!(read.is_ok(), "the slow connection was not closed: {read:?}");
        }
        assert!(r.stats.connections.refused.load(Ordering::Relaxed) >= 1);
        // Served again once they are gone.
        let (status, _, answer) = exchange(r.address, "127.0.0.1", &post(Some(KEY), &body));
        assert_eq!(status, 200, "{answer}");
    }
}
