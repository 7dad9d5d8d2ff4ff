//! Serving HTTP/1.1 to peers that may be hostile: the listeners, connection limits, TLS
//! handshakes and time limits that the receiver (`POST /spoolmon/v1/snapshots`, [`crate::receive`])
//! and the API (`spoolmon serve`, `crate::api`) share. What a request means is the caller's
//! [`Handler`]; everything before and around it is here.
//!
//! Owns on disk: only the Unix sockets it is told to listen on (`unix:/path`): a stale socket
//! left by a crashed server is replaced, any other file of that name is refused, and the
//! socket is removed when the server stops.
//!
//! Invariants, against any peer:
//! - at most `max-connections` connections at once; one more is answered `503` with
//!   `Retry-After` and closed (never queued, never hanging);
//! - a new connection at most every `accept-every` (Netdata's "accept a streaming request every
//!   N seconds"; zero: no limit);
//! - the request head within `header-timeout` (hyper's header timer) and at most
//!   [`MAX_HEAD`] bytes; a write that makes no progress for `write-timeout` ends the connection
//!   (a peer that stops reading its answers); a connection's whole life within `life`;
//! - a TLS handshake within `header-timeout`; failed handshakes are counted and logged with the
//!   cause, refused connections are counted and logged at most every [`REFUSAL_LOG_EVERY`];
//! - on stop, no new connection is taken and requests in flight get `header-timeout` to finish.
//!
//! Runs on a current-thread tokio runtime in a thread of its own (named by the caller), so the
//! rest of the daemon stays thread-based; handlers do blocking work on tokio's blocking pool.
//! The [`tls`] part reads the PEM files of both ends of a TLS link (servers here, the forward
//! sink's client side).

pub mod tls;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tracing::{info, warn};

/// Largest request head (bytes).
pub const MAX_HEAD: usize = 64 << 10;

/// How often refused connections are logged (they are all counted).
pub const REFUSAL_LOG_EVERY: Duration = Duration::from_secs(10);

/// What to listen on: `addr:port` or `unix:/path`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Listen {
    Tcp(SocketAddr),
    Unix(PathBuf),
}

impl std::fmt::Display for Listen {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Listen::Tcp(address) => write!(f, "{address}"),
            Listen::Unix(path) => write!(f, "unix:{}", path.display()),
        }
    }
}

impl std::str::FromStr for Listen {
    type Err = String;

    /// `127.0.0.1:8080`, `[::1]:8080`, or `unix:/run/spoolmon/api.sock` (an absolute path).
    fn from_str(text: &str) -> Result<Listen, String> {
        if let Some(path) = text.strip_prefix("unix:") {
            let path = PathBuf::from(path);
            if !path.is_absolute() {
                return Err(format!(
                    "{text:?}: a Unix socket needs an absolute path (unix:/run/x.sock)"
                ));
            }
            return Ok(Listen::Unix(path));
        }
        text.parse::<SocketAddr>()
            .map(Listen::Tcp)
            .map_err(|_| format!("{text:?} is neither address:port (127.0.0.1:8080, [::1]:8080) nor unix:/path"))
    }
}

/// Who is on the other end of a connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Peer {
    Tcp(SocketAddr),
    /// A Unix socket: whoever may open the socket file (its permissions decide).
    Unix,
}

impl std::fmt::Display for Peer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Peer::Tcp(address) => write!(f, "{address}"),
            Peer::Unix => write!(f, "unix socket"),
        }
    }
}

/// The limits every connection is held to.
#[derive(Clone, Debug)]
pub struct Limits {
    pub max_connections: usize,
    /// Accept a new connection at most this often (zero: no limit).
    pub accept_every: Duration,
    /// The request head (and a TLS handshake) must arrive within this.
    pub header_timeout: Duration,
    /// A write that makes no progress for this long ends the connection.
    pub write_timeout: Duration,
    /// Longest a connection may live, whatever it does.
    pub life: Duration,
}

/// What the listener counts (the handler's component reports them).
#[derive(Debug, Default)]
pub struct ConnectionStats {
    /// Connections answered 503 and closed: over `max-connections`, or too soon after the last.
    pub refused: AtomicU64,
    /// TLS handshakes that failed or did not finish within the time limit.
    pub tls_failures: AtomicU64,
    /// Requests being handled now (a stop waits for them, not for idle connections).
    pub in_flight: AtomicU64,
}

/// What a request-answering server counts (the API's, read by self-metrics, status and its own
/// `/metrics`).
#[derive(Debug, Default)]
pub struct ServerStats {
    pub requests: AtomicU64,
    /// Requests answered 4xx (the client's fault).
    pub client_errors: AtomicU64,
    /// Requests answered 5xx (something here could not be read or written).
    pub server_errors: AtomicU64,
    pub connections: ConnectionStats,
    pub last_error: crate::shared::last_error::LastError,
}

/// What a server does with a request. `config_key` names the section in messages
/// (`receive`, `api`).
pub trait Handler: Send + Sync + 'static {
    /// The answer to one request from `peer`.
    fn handle(
        self: Arc<Self>,
        request: Request<Incoming>,
        peer: Peer,
    ) -> impl Future<Output = Response<Full<Bytes>>> + Send;
    /// The connection counters.
    fn connections(&self) -> &ConnectionStats;
    /// Something went wrong outside a request (a TLS handshake): for the component's last error.
    fn connection_failed(&self, message: String);
    /// The config section the limits come from, for messages (`receive`, `api`).
    fn config_key(&self) -> &'static str;
    /// Whether a configured TLS also wraps the Unix sockets (true unless a handler says not:
    /// the receiver's client certificates name the node, the API's tokens do not need TLS on a
    /// socket only this machine can open, and proxies in front of it speak plain HTTP there).
    fn tls_on_unix_sockets(&self) -> bool {
        true
    }
}

enum Bound {
    Tcp(std::net::TcpListener),
    Unix(std::os::unix::net::UnixListener, PathBuf),
}

/// Bound listeners, not yet serving.
pub struct Listeners {
    bound: Vec<Bound>,
}

impl Listeners {
    /// Binds every address; an error names it. A Unix socket path holding a socket nobody
    /// listens on (a crashed server's) is replaced; any other file there is refused.
    pub fn bind(listen: &[Listen]) -> io::Result<Listeners> {
        let mut bound = Vec::with_capacity(listen.len());
        for address in listen {
            let named = |e: io::Error| io::Error::new(e.kind(), format!("cannot listen on {address}: {e}"));
            match address {
                Listen::Tcp(socket) => {
                    let listener = std::net::TcpListener::bind(socket).map_err(named)?;
                    listener.set_nonblocking(true)?;
                    bound.push(Bound::Tcp(listener));
                }
                Listen::Unix(path) => {
                    remove_stale_socket(path).map_err(named)?;
                    let listener = std::os::unix::net::UnixListener::bind(path).map_err(named)?;
                    listener.set_nonblocking(true)?;
                    bound.push(Bound::Unix(listener, path.clone()));
                }
            }
        }
        Ok(Listeners { bound })
    }

    /// The TCP addresses actually bound (port 0 becomes the port the kernel chose).
    pub fn local_addrs(&self) -> Vec<SocketAddr> {
        self.bound
            .iter()
            .filter_map(|b| match b {
                Bound::Tcp(l) => l.local_addr().ok(),
                Bound::Unix(..) => None,
            })
            .collect()
    }

    /// Serves in the thread `name` until `shutdown` is set.
    pub fn spawn<H: Handler>(
        self,
        name: &str,
        handler: Arc<H>,
        limits: Limits,
        tls: Option<Arc<rustls::ServerConfig>>,
        shutdown: Arc<AtomicBool>,
    ) -> io::Result<std::thread::JoinHandle<()>> {
        std::thread::Builder::new().name(name.into()).spawn(move || {
            let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
                Ok(runtime) => runtime,
                Err(e) => {
                    warn!("{} cannot start its runtime: {e}", handler.config_key());
                    handler.connection_failed(format!("cannot start: {e}"));
                    return;
                }
            };
            let server = Server {
                handler,
                limits,
                tls: tls.map(tokio_rustls::TlsAcceptor::from),
                last_accept: Mutex::new(None),
            };
            runtime.block_on(serve(self.bound, Arc::new(server), shutdown));
        })
    }
}

/// A socket file left behind by a server that is gone is removed; anything else is an error.
fn remove_stale_socket(path: &std::path::Path) -> io::Result<()> {
    use std::os::unix::fs::FileTypeExt;
    match std::fs::symlink_metadata(path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
        Ok(meta) if !meta.file_type().is_socket() => Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            "a file that is not a socket has this name (not replaced)",
        )),
        Ok(_) => match std::os::unix::net::UnixStream::connect(path) {
            Ok(_) => Err(io::Error::new(
                io::ErrorKind::AddrInUse,
                "another server is listening on this socket",
            )),
            Err(_) => std::fs::remove_file(path),
        },
    }
}

/// How often a serving thread looks at its stop flag.
const SHUTDOWN_POLL: Duration = Duration::from_secs(1);

struct Server<H> {
    handler: Arc<H>,
    limits: Limits,
    tls: Option<tokio_rustls::TlsAcceptor>,
    last_accept: Mutex<Option<Instant>>,
}

async fn serve<H: Handler>(bound: Vec<Bound>, server: Arc<Server<H>>, shutdown: Arc<AtomicBool>) {
    let slots = Arc::new(tokio::sync::Semaphore::new(server.limits.max_connections));
    let mut tasks = tokio::task::JoinSet::new();
    let mut sockets = Vec::new();
    for listener in bound {
        let key = server.handler.config_key();
        match listener {
            Bound::Tcp(listener) => match tokio::net::TcpListener::from_std(listener) {
                Ok(listener) => {
                    if let Ok(address) = listener.local_addr() {
                        info!("{key}: listening on {address}");
                    }
                    tasks.spawn(accept_tcp(listener, Arc::clone(&server), Arc::clone(&slots)));
                }
                Err(e) => warn!("{key} cannot use a listener: {e}"),
            },
            Bound::Unix(listener, path) => match tokio::net::UnixListener::from_std(listener) {
                Ok(listener) => {
                    info!("{key}: listening on unix:{}", path.display());
                    sockets.push(path);
                    tasks.spawn(accept_unix(listener, Arc::clone(&server), Arc::clone(&slots)));
                }
                Err(e) => warn!("{key} cannot use a listener: {e}"),
            },
        }
    }
    while !shutdown.load(Ordering::Relaxed) {
        // The stop flag is looked at once a second: an idle server wakes up that rarely (its
        // whole idle cost), and a stop waits at most that long to begin.
        tokio::time::sleep(SHUTDOWN_POLL).await;
    }
    // Stop accepting; let requests in progress finish within the time limit. Idle connections
    // close when the runtime ends.
    tasks.abort_all();
    for path in sockets {
        let _ = std::fs::remove_file(path);
    }
    let deadline = Instant::now() + server.limits.header_timeout;
    let in_flight = &server.handler.connections().in_flight;
    while in_flight.load(Ordering::SeqCst) > 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Refused connections are logged at most every [`REFUSAL_LOG_EVERY`]: the first at once,
/// then how many followed (a flood must not flood the log too).
#[derive(Default)]
struct RefusalLog {
    logged: Option<Instant>,
    since: u64,
}

impl RefusalLog {
    fn note(&mut self, key: &str, peer: Peer, reason: &str) {
        self.since += 1;
        if self.logged.is_some_and(|at| at.elapsed() < REFUSAL_LOG_EVERY) {
            return;
        }
        warn!(peer = %peer, refused = self.since, "{key}: refused connection(s) since the last such line: {reason}");
        self.logged = Some(Instant::now());
        self.since = 0;
    }
}

impl<H: Handler> Server<H> {
    /// A slot for a new connection, or the reason (and the seconds to retry in) it gets none.
    fn admit(&self, slots: &Arc<tokio::sync::Semaphore>) -> Result<tokio::sync::OwnedSemaphorePermit, (String, u64)> {
        let key = self.handler.config_key();
        let busy = too_soon(&self.last_accept, self.limits.accept_every);
        match (busy, Arc::clone(slots).try_acquire_owned()) {
            (None, Ok(permit)) => Ok(permit),
            (Some(wait), _) => Err((
                format!(
                    "too busy to accept a new connection ({key}.accept-every); retry in {} s",
                    wait.as_secs().max(1)
                ),
                wait.as_secs().max(1),
            )),
            (None, Err(_)) => Err((
                format!(
                    "over capacity: {} connections open ({key}.max-connections)",
                    self.limits.max_connections
                ),
                1,
            )),
        }
    }
}

async fn accept_tcp<H: Handler>(
    listener: tokio::net::TcpListener,
    server: Arc<Server<H>>,
    slots: Arc<tokio::sync::Semaphore>,
) {
    let mut refusals = RefusalLog::default();
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                // Out of descriptors and the like: back off instead of spinning.
                warn!("{} cannot accept a connection: {e}", server.handler.config_key());
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        admit_and_serve(stream, Peer::Tcp(peer), &server, &slots, &mut refusals);
    }
}

async fn accept_unix<H: Handler>(
    listener: tokio::net::UnixListener,
    server: Arc<Server<H>>,
    slots: Arc<tokio::sync::Semaphore>,
) {
    let mut refusals = RefusalLog::default();
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                warn!("{} cannot accept a connection: {e}", server.handler.config_key());
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        admit_and_serve(stream, Peer::Unix, &server, &slots, &mut refusals);
    }
}

/// Takes the connection into a slot and serves it in a task of its own, or refuses it.
fn admit_and_serve<S, H>(
    stream: S,
    peer: Peer,
    server: &Arc<Server<H>>,
    slots: &Arc<tokio::sync::Semaphore>,
    refusals: &mut RefusalLog,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    H: Handler,
{
    let permit = match server.admit(slots) {
        Ok(permit) => permit,
        Err((reason, retry)) => {
            server.handler.connections().refused.fetch_add(1, Ordering::Relaxed);
            refusals.note(server.handler.config_key(), peer, &reason);
            tokio::spawn(refuse_connection(stream, reason, retry));
            return;
        }
    };
    let server = Arc::clone(server);
    tokio::spawn(async move {
        let _permit = permit;
        let tls = server.tls.clone();
        let Some(acceptor) = tls.filter(|_| peer != Peer::Unix || server.handler.tls_on_unix_sockets()) else {
            return serve_connection(stream, peer, server).await;
        };
        let timeout = server.limits.header_timeout;
        let failed = |reason: String| {
            server
                .handler
                .connections()
                .tls_failures
                .fetch_add(1, Ordering::Relaxed);
            warn!(peer = %peer, "{}: TLS handshake failed: {reason}", server.handler.config_key());
            server
                .handler
                .connection_failed(format!("TLS handshake with {peer} failed: {reason}"));
        };
        match tokio::time::timeout(timeout, acceptor.accept(stream)).await {
            Ok(Ok(tls)) => serve_connection(tls, peer, server).await,
            Ok(Err(e)) => failed(e.to_string()),
            Err(_) => failed(format!(
                "not finished within {} s ({}.timeout)",
                timeout.as_secs_f64(),
                server.handler.config_key()
            )),
        }
    });
}

/// Counts a request in flight for as long as it lives.
struct InFlight<'a>(&'a AtomicU64);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Serves HTTP/1.1 on one accepted connection (plain or TLS) for at most its life.
async fn serve_connection<S, H>(stream: S, peer: Peer, server: Arc<Server<H>>)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    H: Handler,
{
    let handler = Arc::clone(&server.handler);
    let service = hyper::service::service_fn(move |request| {
        let handler = Arc::clone(&handler);
        async move {
            let in_flight = &handler.connections().in_flight;
            in_flight.fetch_add(1, Ordering::SeqCst);
            let _in_flight = InFlight(in_flight);
            Ok::<_, std::convert::Infallible>(Arc::clone(&handler).handle(request, peer).await)
        }
    });
    let stream = WriteDeadline::new(stream, server.limits.write_timeout);
    let connection = hyper::server::conn::http1::Builder::new()
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(server.limits.header_timeout)
        .max_buf_size(MAX_HEAD.max(8192))
        .serve_connection(hyper_util::rt::TokioIo::new(stream), service);
    let _ = tokio::time::timeout(server.limits.life, connection).await;
}

/// `Some(wait)` when the last connection was accepted less than `every` ago.
fn too_soon(last: &Mutex<Option<Instant>>, every: Duration) -> Option<Duration> {
    let mut last = last.lock().unwrap_or_else(|p| p.into_inner());
    let now = Instant::now();
    if let Some(at) = *last {
        let since = now.duration_since(at);
        if since < every {
            return Some(every - since);
        }
    }
    *last = Some(now);
    None
}

/// Answers a connection that is not taken with a 503 and closes it. What the peer sent is
/// drained for a moment (at most 64 KiB, 1 s) before closing: closing with unread data would
/// reset the connection and could destroy the answer before the peer reads it.
async fn refuse_connection<S: AsyncRead + AsyncWrite + Unpin>(mut stream: S, reason: String, retry: u64) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let body = error_json(&reason);
    let answer = format!(
        "HTTP/1.1 503 Service Unavailable\r\nRetry-After: {retry}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        stream.write_all(answer.as_bytes()).await?;
        stream.shutdown().await?;
        let mut sink = [0u8; 4096];
        let mut drained = 0;
        while drained < 64 << 10 {
            match stream.read(&mut sink).await? {
                0 => break,
                n => drained += n,
            }
        }
        Ok::<(), io::Error>(())
    })
    .await;
}

/// A stream whose writes fail with `TimedOut` when they make no progress for `timeout`: a peer
/// that stops reading cannot hold a connection (and its slot) by leaving answers unread.
struct WriteDeadline<S> {
    inner: S,
    timeout: Duration,
    stalled: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl<S> WriteDeadline<S> {
    fn new(inner: S, timeout: Duration) -> WriteDeadline<S> {
        WriteDeadline {
            inner,
            timeout,
            stalled: None,
        }
    }

    /// `Pending` becomes `TimedOut` once the write has waited `timeout`; progress rearms it.
    fn watch<T>(&mut self, cx: &mut Context<'_>, poll: Poll<io::Result<T>>) -> Poll<io::Result<T>> {
        match poll {
            Poll::Ready(result) => {
                self.stalled = None;
                Poll::Ready(result)
            }
            Poll::Pending => {
                let timeout = self.timeout;
                let sleep = self
                    .stalled
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
                match sleep.as_mut().poll(cx) {
                    Poll::Ready(()) => Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        format!("the peer read nothing for {} s", timeout.as_secs_f64()),
                    ))),
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for WriteDeadline<S> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for WriteDeadline<S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let poll = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.watch(cx, poll)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let poll = Pin::new(&mut self.inner).poll_flush(cx);
        self.watch(cx, poll)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let poll = Pin::new(&mut self.inner).poll_shutdown(cx);
        self.watch(cx, poll)
    }
}

/// `{"error": reason}`.
pub fn error_json(reason: &str) -> String {
    serde_json::json!({ "error": reason }).to_string()
}

/// An answer with `status`, `content_type` and `body`.
pub fn answer_with(status: u16, content_type: &'static str, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(body.into()));
    *response.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    response.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static(content_type),
    );
    response
}

/// A JSON answer.
pub fn answer(status: u16, body: String) -> Response<Full<Bytes>> {
    answer_with(status, "application/json", body)
}

/// Why a request body could not be read: the status and the cause.
pub type BodyRefusal = (u16, String);

/// Reads the whole body, at most `limit` bytes (413, declared or not; checked against
/// `Content-Length` before a byte is read) within `timeout` (408); `key` names the config
/// section of the limit.
pub async fn read_body(
    request: Request<Incoming>,
    limit: usize,
    timeout: Duration,
    key: &str,
) -> Result<Bytes, BodyRefusal> {
    let too_large = || {
        (
            413,
            format!("the request is larger than {key}.max-request-bytes ({limit} bytes)"),
        )
    };
    let declared = request
        .headers()
        .get(hyper::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(too_large());
    }
    let body = Limited::new(request.into_body(), limit);
    match tokio::time::timeout(timeout, body.collect()).await {
        Err(_) => Err((408, format!("the body did not arrive within {} s", timeout.as_secs()))),
        Ok(Err(e)) if e.downcast_ref::<http_body_util::LengthLimitError>().is_some() => Err(too_large()),
        Ok(Err(e)) => Err((400, format!("cannot read the body: {e}"))),
        Ok(Ok(collected)) => Ok(collected.to_bytes()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listen_addresses_are_tcp_or_absolute_unix_paths() {
        assert_eq!(
            "127.0.0.1:80".parse::<Listen>().unwrap(),
            Listen::Tcp("127.0.0.1:80".parse().unwrap())
        );
        assert_eq!(
            "unix:/run/a.sock".parse::<Listen>().unwrap(),
            Listen::Unix("/run/a.sock".into())
        );
        assert!("unix:a.sock".parse::<Listen>().unwrap_err().contains("absolute"));
        assert!("localhost".parse::<Listen>().unwrap_err().contains("neither"));
        assert_eq!("unix:/x".parse::<Listen>().unwrap().to_string(), "unix:/x");
    }

    #[test]
    fn a_stale_socket_is_replaced_and_a_live_one_or_a_file_is_not() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.sock");
        drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
        assert!(path.exists(), "a dropped listener leaves its socket file");
        remove_stale_socket(&path).unwrap();
        assert!(!path.exists());
        let live = std::os::unix::net::UnixListener::bind(&path).unwrap();
        assert_eq!(remove_stale_socket(&path).unwrap_err().kind(), io::ErrorKind::AddrInUse);
        drop(live);
        std::fs::remove_file(&path).unwrap();
        std::fs::write(&path, b"user data").unwrap();
        assert_eq!(
            remove_stale_socket(&path).unwrap_err().kind(),
            io::ErrorKind::AlreadyExists
        );
        assert_eq!(std::fs::read(&path).unwrap(), b"user data");
    }
}
