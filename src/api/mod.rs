//! The API: what a person or a script looks at over HTTP (`spoolmon serve`, and `spoolmon run`
//! with an `api:` section). pmproxy's job for spoolmon's own files: REST and JSON below
//! `/api/v1/` ([`v1`]): orders (listed, one read, written with `PUT`, removed with `DELETE`),
//! last results, an order's RRD series, queues, sinks, nodes, status, the archive, health;
//! `/metrics` for Prometheus ([`metrics`]), the Graphite render API for Grafana ([`graphite`]),
//! SmokePing graphs ([`graph`]), the web page ([`web`]) and pmproxy's `/series/` over Redis
//! ([`pmseries`]).
//!
//! Owns on disk: nothing of its own. It reads beside the daemon what the stages own (through
//! their readers: [`crate::output`], and the status report the command hands in) and writes only order files, through
//! [`crate::orders::write`], exactly as `spoolmon order add|remove` does. The listener (limits,
//! TLS, Unix sockets) is the shared [`crate::http`] layer.
//!
//! Invariants:
//! - **Who may do what**: reads need no token unless `anonymous-read: false`; a `PUT` or
//!   `DELETE` always needs a `write` token (none is configured by default, so nothing can be
//!   written). A token is compared in constant time; an unknown token is 401 even for a read.
//! - **Nothing outside `orders/` is written**, and only after the same validation as a file
//!   the daemon reads (ids: [`crate::orders::write::lookup_id`] after one strict
//!   percent-decoding; text: the daemon's parser).
//! - **Answers never hang on a part that is down**: every answer is computed from files, in
//!   tokio's blocking pool; a base directory or file that cannot be read is answered at once
//!   (503 or 500 with the cause), not waited for. Requests are bounded by the `api:` limits.
//! - **Bad requests get a clear 4xx** with `{"error": ...}`: unknown endpoints and parameters,
//!   bad times, ids and bodies.
//!
//! Called by `command::serve` and `command::run`; an observer of the stages, reading. It sits
//! below `config` (which composes its `api:` section), so the status report, which needs the
//! whole config, is handed in as a [`StatusReader`].

pub mod graph;
pub mod graphite;
pub mod metrics;
pub mod options;
pub mod pmseries;
pub mod query;
pub mod v1;
pub mod web;

use crate::http::{self, answer, error_json, ConnectionStats, Handler, Listeners, Peer, ServerStats};
use crate::orders::OrderOptions;
use crate::spool::BaseDir;
use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Method, Request, Response};
use options::{Access, ApiOptions};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use tracing::{info, warn};

/// The status report (`spoolmon status --json`) as the command reads it: the report needs the
/// whole configuration, which only the commands compose (the API sits below `config`, whose
/// `api:` section it owns). An error is the reason it cannot be read.
pub type StatusReader = Arc<dyn Fn() -> Result<serde_json::Value, String> + Send + Sync>;

/// What the API reads besides files, handed in by the command that serves it.
pub struct Readers {
    /// The status report.
    pub status: StatusReader,
    /// This server's counters (kept by the command: they outlive a reload of `run`).
    pub stats: Arc<ServerStats>,
    /// RTT histograms counted by processing (`spoolmon run`), `None` where no results pass.
    pub rtt: Option<Arc<crate::process::latency::RttHistograms>>,
    /// The command serving, as `/metrics` labels this server's counters: `run` or `serve`.
    pub component: &'static str,
    /// The Redis `/series/` reads (the config's first `type: redis` sink), if any.
    pub redis: Option<crate::sink::redis::RedisOptions>,
}

/// What every request reads: the base directory and what it is served with.
pub struct Context {
    pub base: BaseDir,
    pub status: StatusReader,
    pub orders: OrderOptions,
    pub max_request_bytes: usize,
    pub read_timeout: std::time::Duration,
    pub stats: Arc<ServerStats>,
    pub rtt: Option<Arc<crate::process::latency::RttHistograms>>,
    pub component: &'static str,
    pub redis: Option<crate::sink::redis::RedisOptions>,
    /// The last order listing and when it was made (see [`Context::listing`]).
    pub listed: std::sync::Mutex<Option<(std::time::Instant, Arc<Vec<crate::orders::book::OrderStatus>>)>>,
}

/// How long an order listing is reused: scanning 10,000 order files costs ~0.3 s, and a person
/// paging through them asks for it again and again.
pub const LISTING_REUSED_FOR: std::time::Duration = std::time::Duration::from_secs(2);

impl Context {
    /// Every order with its state ([`crate::output::failures::listing`]), at most
    /// [`LISTING_REUSED_FOR`] old; a write through the API ([`Context::forget_listing`]) makes
    /// the next one fresh.
    pub fn listing(&self) -> Arc<Vec<crate::orders::book::OrderStatus>> {
        let mut listed = self.listed.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((at, listing)) = listed.as_ref() {
            if at.elapsed() < LISTING_REUSED_FOR {
                return Arc::clone(listing);
            }
        }
        let listing = Arc::new(crate::output::failures::listing(&self.base, &self.orders));
        *listed = Some((std::time::Instant::now(), Arc::clone(&listing)));
        listing
    }

    pub fn forget_listing(&self) {
        *self.listed.lock().unwrap_or_else(|p| p.into_inner()) = None;
    }
}

struct Api {
    context: Arc<Context>,
    tokens: Vec<(Vec<u8>, Access)>,
    anonymous_read: bool,
    stats: Arc<ServerStats>,
}

/// A running API server.
pub struct Server {
    pub thread: std::thread::JoinHandle<()>,
    /// The TCP addresses bound (port 0 becomes the port the kernel chose).
    pub addresses: Vec<SocketAddr>,
}

/// Binds `options.listen` and serves in the `api` thread until `stop` is set; an error names
/// the address or file that could not be used.
pub fn start(
    base: &BaseDir,
    orders: OrderOptions,
    readers: Readers,
    options: &ApiOptions,
    stop: Arc<AtomicBool>,
) -> anyhow::Result<Server> {
    use anyhow::Context as _;
    options.validate()?;
    let tls = match &options.tls {
        Some(tls) => Some(http::tls::server_config(tls).context("api.tls")?),
        None => None,
    };
    let listen = options.addresses()?;
    let listeners = Listeners::bind(&listen).context("api.listen")?;
    let addresses = listeners.local_addrs();
    let api = Api {
        context: Arc::new(Context {
            base: base.clone(),
            status: readers.status,
            orders,
            max_request_bytes: usize::try_from(options.max_request_bytes).unwrap_or(usize::MAX),
            read_timeout: crate::shared::option::seconds(options.read_timeout),
            stats: readers.stats.clone(),
            rtt: readers.rtt,
            component: readers.component,
            redis: readers.redis,
            listed: std::sync::Mutex::new(None),
        }),
        tokens: options
            .tokens
            .iter()
            .map(|(token, access)| (token.as_bytes().to_vec(), *access))
            .collect(),
        anonymous_read: options.anonymous_read,
        stats: readers.stats,
    };
    // The Unix sockets as configured, the TCP addresses as bound (port 0 made real).
    let shown: Vec<String> = listen
        .iter()
        .filter(|l| matches!(l, http::Listen::Unix(_)))
        .map(ToString::to_string)
        .chain(addresses.iter().map(ToString::to_string))
        .collect();
    let thread = listeners.spawn("api", Arc::new(api), options.connection_limits(), tls, stop)?;
    info!(tls = options.tls.is_some(), "api listening on {}", shown.join(", "));
    Ok(Server { thread, addresses })
}

/// What a request needs, by its method (a POST is a read of the Graphite endpoints that take
/// a form).
fn needed(method: &Method, path: &str) -> Option<Access> {
    match *method {
        Method::GET | Method::HEAD => Some(Access::Read),
        Method::POST if graphite::takes_post(path) => Some(Access::Read),
        Method::PUT | Method::DELETE => Some(Access::Write),
        _ => None,
    }
}

/// A request understood.
enum Endpoint {
    V1(v1::Route),
    Graphite(graphite::Route),
    Graph(graph::Route),
    Series(pmseries::Route),
    /// A page or asset, answered at once (it is in the binary).
    Web(Response<Full<Bytes>>),
}

impl Endpoint {
    fn parse(request: &Request<Incoming>) -> Result<Endpoint, (u16, String)> {
        let (method, uri) = (request.method(), request.uri());
        if graphite::handles(uri.path()) {
            graphite::Route::parse(method, uri.path(), uri.query()).map(Endpoint::Graphite)
        } else if uri.path().starts_with(graph::PREFIX) {
            graph::Route::parse(method, uri.path(), uri.query()).map(Endpoint::Graph)
        } else if uri.path().starts_with(pmseries::PREFIX) {
            pmseries::Route::parse(method, uri.path(), uri.query()).map(Endpoint::Series)
        } else if web::handles(uri.path()) {
            web::answer(method, uri.path(), uri.query()).map(Endpoint::Web)
        } else {
            v1::Route::parse(method, uri.path(), uri.query()).map(Endpoint::V1)
        }
    }

    fn takes_body(&self) -> bool {
        match self {
            Endpoint::V1(route) => route.takes_body(),
            Endpoint::Graphite(route) => route.takes_body(),
            Endpoint::Graph(_) | Endpoint::Series(_) | Endpoint::Web(_) => false,
        }
    }

    fn answer(self, context: &Context, body: Option<Bytes>) -> Response<Full<Bytes>> {
        match self {
            Endpoint::Web(response) => response,
            Endpoint::V1(route) => route.answer(context, body),
            Endpoint::Graphite(route) => route
                .answer(context, body, crate::shared::clock::unix_now())
                .unwrap_or_else(refusal),
            Endpoint::Graph(route) => route
                .answer(context, crate::shared::clock::unix_now())
                .unwrap_or_else(refusal),
            Endpoint::Series(route) => route
                .answer(context, crate::shared::clock::unix_now())
                .unwrap_or_else(refusal),
        }
    }
}

/// Equal in constant time for equal lengths (a token's length is no secret worth a branch).
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

impl Api {
    /// The access a request's token gives: `Ok(None)` without a token, an error for a bad one.
    fn token_access(&self, request: &Request<Incoming>) -> Result<Option<Access>, (u16, String)> {
        let Some(value) = request.headers().get(hyper::header::AUTHORIZATION) else {
            return Ok(None);
        };
        let token = value
            .to_str()
            .ok()
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim)
            .ok_or_else(|| (401, "the Authorization header must be \"Bearer <token>\"".to_string()))?;
        self.tokens
            .iter()
            .find(|(known, _)| same(known, token.as_bytes()))
            .map(|(_, access)| Some(*access))
            .ok_or_else(|| (401, "unknown token".to_string()))
    }

    /// Whether the request may go on: the refusal otherwise.
    fn authorize(&self, request: &Request<Incoming>, need: Access) -> Result<(), (u16, String)> {
        let have = self.token_access(request)?;
        match (need, have) {
            (_, Some(Access::Write)) | (Access::Read, Some(Access::Read)) => Ok(()),
            (Access::Read, None) if self.anonymous_read => Ok(()),
            (Access::Read, None) => Err((401, "a token is needed (api.anonymous-read is false)".into())),
            (Access::Write, None) => Err((401, "writing needs a write token (api.tokens)".into())),
            (Access::Write, Some(Access::Read)) => Err((403, "this token may only read".into())),
        }
    }

    fn count(&self, response: &Response<Full<Bytes>>, peer: Peer, what: &str) {
        let status = response.status().as_u16();
        if status >= 500 {
            self.stats.server_errors.fetch_add(1, Ordering::Relaxed);
            warn!(peer = %peer, status, "api: {what} failed");
            self.stats.last_error.set(format!("{what}: answered {status}"));
        } else if status >= 400 {
            self.stats.client_errors.fetch_add(1, Ordering::Relaxed);
        }
    }
}

impl Handler for Api {
    async fn handle(self: Arc<Self>, request: Request<Incoming>, peer: Peer) -> Response<Full<Bytes>> {
        self.stats.requests.fetch_add(1, Ordering::Relaxed);
        let what = format!(
            "{} {}",
            request.method(),
            crate::orders::book::printable(request.uri().path())
        );
        let response = self.answer(request).await;
        self.count(&response, peer, &what);
        response
    }

    fn connections(&self) -> &ConnectionStats {
        &self.stats.connections
    }

    fn connection_failed(&self, message: String) {
        self.stats.last_error.set(message);
    }

    fn config_key(&self) -> &'static str {
        "api"
    }

    /// `tls:` is for the TCP listeners; a `unix:` socket answers plain HTTP (a reverse proxy on
    /// the same machine speaks it there, and the tokens still apply).
    fn tls_on_unix_sockets(&self) -> bool {
        false
    }
}

/// An answer whose refusal is `(status, reason)`.
fn refusal((status, reason): (u16, String)) -> Response<Full<Bytes>> {
    let mut response = answer(status, error_json(&reason));
    if status == 401 {
        response.headers_mut().insert(
            hyper::header::WWW_AUTHENTICATE,
            hyper::header::HeaderValue::from_static("Bearer realm=\"spoolmon\""),
        );
    }
    response
}

impl Api {
    async fn answer(self: &Arc<Self>, request: Request<Incoming>) -> Response<Full<Bytes>> {
        let Some(need) = needed(request.method(), request.uri().path()) else {
            let mut response = refusal((
                405,
                format!(
                    "{} is not served here (GET, HEAD, PUT, DELETE; POST for /render and /metrics/find)",
                    request.method()
                ),
            ));
            response.headers_mut().insert(
                hyper::header::ALLOW,
                hyper::header::HeaderValue::from_static("GET, HEAD, PUT, DELETE"),
            );
            return response;
        };
        let route = match Endpoint::parse(&request) {
            Ok(route) => route,
            Err(refused) => return refusal(refused),
        };
        if let Err(refused) = self.authorize(&request, need) {
            return refusal(refused);
        }
        let body = if route.takes_body() {
            let context = &self.context;
            match http::read_body(request, context.max_request_bytes, context.read_timeout, "api").await {
                Ok(body) => Some(body),
                Err(refused) => return refusal(refused),
            }
        } else {
            None
        };
        let context = self.context.clone();
        match tokio::task::spawn_blocking(move || route.answer(&context, body)).await {
            Ok(response) => response,
            Err(e) => refusal((500, format!("the request's work failed: {e}"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_compare_whole() {
        assert!(same(b"0123456789abcdef", b"0123456789abcdef"));
        assert!(!same(b"0123456789abcdef", b"0123456789abcdeg"));
        assert!(!same(b"0123456789abcdef", b"0123456789abcde"));
        assert!(!same(b"", b"x"));
    }

    #[test]
    fn methods_need_read_or_write() {
        assert_eq!(needed(&Method::GET, "/api/v1/orders"), Some(Access::Read));
        assert_eq!(needed(&Method::HEAD, "/metrics"), Some(Access::Read));
        assert_eq!(needed(&Method::PUT, "/api/v1/orders/a"), Some(Access::Write));
        assert_eq!(needed(&Method::DELETE, "/api/v1/orders/a"), Some(Access::Write));
        assert_eq!(needed(&Method::POST, "/api/v1/orders"), None);
        assert_eq!(needed(&Method::POST, "/render"), Some(Access::Read));
        assert_eq!(needed(&Method::PATCH, "/render"), None);
    }
}
