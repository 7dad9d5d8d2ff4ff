//! Native httping: one ping is one HTTP(S) GET of the order's URL on a fresh connection.
//!
//! Timing runs from before name resolution and connect (so TCP and TLS setup are included, as in
//! httping without keep-alive) to the end of the response headers. The body is then read and
//! discarded up to [`BODY_CAP`] bytes so a short read is noticed; the connection is never reused.
//!
//! What counts as answered: any HTTP response, whatever its status (404 and 500 included, like
//! httping), unless the status is in the order's `http_codes_as_failure`. Lost: refused/reset
//! connection, timeout, malformed or cut response (short read), TLS failure — including an
//! invalid or self-signed certificate: the probe verifies certificates against the bundled web
//! PKI roots and has no "insecure" switch. Redirects are not followed (one request = one ping;
//! the 3xx response counts as answered).
//!
//! Not sent ([`HttpPingError::is_sent`]): the name does not resolve, the URL or proxy is unusable,
//! the connect fails locally (`tcp::is_local`), or the order's proxy refuses the connection (the
//! target was never reached). A run in which no ping of an order could be sent is a failure with
//! the reason (`GET http://x.invalid/: failed to lookup address information: ...`), not a loss.
//!
//! Differences from pingmachine's httping: the host name is resolved for every ping (httping
//! resolves once), so DNS time is part of the RTT for named hosts; a `proxy` (`host:port` or
//! `http://host:port`) is used as an HTTP CONNECT tunnel for both http and https URLs (httping
//! sends `GET http://...` to the proxy), so the proxy must allow CONNECT to the target port.
//!
//! Targets of a run are measured concurrently on at most [`MAX_WORKERS`] threads (see `rounds`).
//! The order's `interval` is used by the scheduler to build the [`RunPlan`]. Owns nothing on disk.

use super::rounds::{run_rounds, Ping};
use super::warn_once::WarnOnce;
use super::{Outcome, Probe, ProbeFailure, RunPlan};
use crate::orders::order::{HttpingSpec, ProbeSpec};
use std::io::{self, Read};
use std::time::{Duration, Instant};
use ureq::config::AutoHeaderValue;
use ureq::{Agent, Proxy};

/// Most requests in flight at once in one run (pingmachine ran 15 httping processes per batch).
pub const MAX_WORKERS: usize = 16;

/// Most body bytes read (and discarded) per ping; the rest is dropped with the connection.
pub const BODY_CAP: u64 = 64 * 1024;

/// Largest response head accepted (status line and headers); also the read buffer size.
pub const RESPONSE_HEADER_CAP: usize = 64 * 1024;

/// Write buffer per connection: a GET request head is far smaller.
const REQUEST_BUFFER: usize = 16 * 1024;

/// `User-Agent` sent when the order names none.
pub const DEFAULT_USER_AGENT: &str = concat!("spoolmon/", env!("CARGO_PKG_VERSION"));

/// Why one HTTP ping was lost, or why an order cannot be measured at all.
#[derive(Debug, thiserror::Error)]
pub enum HttpPingError {
    #[error("invalid proxy {proxy:?} for {url}: {source}")]
    Proxy {
        url: String,
        proxy: String,
        source: ureq::Error,
    },
    #[error("GET {url}: {source}")]
    Request { url: String, source: ureq::Error },
    #[error("GET {url}: reading the body after status {status}: {source}")]
    ShortRead {
        url: String,
        status: u16,
        source: io::Error,
    },
    #[error("GET {url}: status {status} is listed in http_codes_as_failure")]
    FailureStatus { url: String, status: u16 },
    #[error("order for {0} is not an httping order")]
    NotHttping(String),
}

/// Measures HTTP(S) request time. One instance serves concurrent runs.
#[derive(Debug, Default)]
pub struct HttpProbe {
    warnings: WarnOnce,
}

impl HttpProbe {
    pub fn new() -> HttpProbe {
        HttpProbe::default()
    }

    /// Builds the client for one order, or says why the order cannot be measured (logged at
    /// debug once: the reason travels with the result).
    fn agent_for<'a>(&self, spec: &'a ProbeSpec) -> Result<(&'a HttpingSpec, Agent), ProbeFailure> {
        let result = match spec {
            ProbeSpec::Httping(spec) => agent(spec).map(|agent| (spec, agent)),
            other => Err(HttpPingError::NotHttping(format!("{other:?}"))),
        };
        match result {
            Ok(pair) => {
                self.warnings.forget(&pair.0.url);
                Ok(pair)
            }
            Err(error) => {
                let name = match spec {
                    ProbeSpec::Httping(spec) => spec.url.as_str(),
                    _ => "non-httping order",
                };
                let failure = ProbeFailure::new(&error);
                if self.warnings.remember(name, failure.reason()) {
                    tracing::debug!(url = name, "httping cannot measure: {failure}");
                }
                Err(failure)
            }
        }
    }
}

impl Probe for HttpProbe {
    fn run(&self, targets: &[&ProbeSpec], plan: &RunPlan) -> Vec<Outcome> {
        let agents: Vec<_> = targets.iter().map(|spec| self.agent_for(spec)).collect();
        run_rounds(targets.len(), plan, MAX_WORKERS, |index, budget| {
            let (spec, agent) = match &agents[index] {
                Ok(pair) => pair,
                Err(failure) => return Ping::NotSent(failure.clone()),
            };
            match request_time(agent, spec, budget) {
                Ok(rtt) => Ping::Answered(rtt),
                Err(error) if error.is_sent(spec.proxy.is_some()) => {
                    tracing::debug!(%error, "http ping lost");
                    Ping::Lost
                }
                Err(error) => {
                    tracing::debug!(%error, "http ping not sent");
                    Ping::NotSent(ProbeFailure::new(error))
                }
            }
        })
    }
}

impl HttpPingError {
    /// Whether the request went out to the target before it failed (a lost ping), rather than
    /// failing on this side: the name did not resolve, the URL or proxy is unusable, the connect
    /// failed locally, or (with a proxy) the proxy refused the connection.
    pub fn is_sent(&self, via_proxy: bool) -> bool {
        let source = match self {
            HttpPingError::Request { source, .. } => source,
            HttpPingError::Proxy { .. } | HttpPingError::NotHttping(_) => return false,
            HttpPingError::ShortRead { .. } | HttpPingError::FailureStatus { .. } => return true,
        };
        match source {
            ureq::Error::HostNotFound
            | ureq::Error::BadUri(_)
            | ureq::Error::Http(_)
            | ureq::Error::InvalidProxyUrl
            | ureq::Error::RequireHttpsOnly(_) => false,
            ureq::Error::Io(e) => {
                !(is_resolution_failure(e)
                    || super::tcp::is_local(e)
                    || (via_proxy && e.kind() == io::ErrorKind::ConnectionRefused))
            }
            _ => true,
        }
    }
}

/// Whether `error` is the system resolver's "this name does not resolve" (std reports
/// `getaddrinfo` failures without an errno, as "failed to lookup address information: ...").
pub fn is_resolution_failure(error: &io::Error) -> bool {
    error.raw_os_error().is_none() && error.to_string().starts_with("failed to lookup address information")
}

/// The client for one order: its proxy and user agent, no connection reuse, no redirects, every
/// status returned as a response. Environment proxy variables are ignored: only the order's
/// `proxy` is used.
pub fn agent(spec: &HttpingSpec) -> Result<Agent, HttpPingError> {
    let proxy = match &spec.proxy {
        Some(proxy) => Some(Proxy::new(proxy).map_err(|source| HttpPingError::Proxy {
            url: spec.url.clone(),
            proxy: proxy.clone(),
            source,
        })?),
        None => None,
    };
    let user_agent = spec.user_agent.as_deref().unwrap_or(DEFAULT_USER_AGENT);
    let config = Agent::config_builder()
        .proxy(proxy)
        .http_status_as_error(false)
        .max_redirects(0)
        .max_idle_connections(0)
        .max_idle_connections_per_host(0)
        .user_agent(user_agent)
        .accept_encoding(AutoHeaderValue::None)
        // Every ping allocates fresh buffers; the 128 KiB defaults are mostly zero-filling.
        .input_buffer_size(RESPONSE_HEADER_CAP)
        .max_response_header_size(RESPONSE_HEADER_CAP)
        .output_buffer_size(REQUEST_BUFFER)
        .build();
    Ok(config.new_agent())
}

/// Sends one GET within `budget` and returns the time to the end of the response headers in
/// seconds.
pub fn request_time(agent: &Agent, spec: &HttpingSpec, budget: Duration) -> Result<f64, HttpPingError> {
    let url = &spec.url;
    let started = Instant::now();
    let mut response = agent
        .get(url)
        .config()
        .timeout_global(Some(budget))
        .build()
        .call()
        .map_err(|source| HttpPingError::Request {
            url: url.clone(),
            source,
        })?;
    let rtt = started.elapsed().as_secs_f64();
    let status = response.status().as_u16();
    let mut body = response.body_mut().as_reader().take(BODY_CAP);
    io::copy(&mut body, &mut io::sink()).map_err(|source| HttpPingError::ShortRead {
        url: url.clone(),
        status,
        source,
    })?;
    if spec.http_codes_as_failure.contains(&status) {
        return Err(HttpPingError::FailureStatus {
            url: url.clone(),
            status,
        });
    }
    Ok(rtt)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::probe::Rtts;
    use std::io::Write;
    use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
    use std::process::{Child, Command, Stdio};
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::{Arc, Mutex};

    /// What the test server does with a request.
    #[derive(Clone, Copy)]
    enum Reply {
        Status(u16),
        Slow(Duration),
        CloseMidHeaders,
        HugeBody,
        CutBody,
        Garbage,
        /// A response head larger than [`RESPONSE_HEADER_CAP`].
        HugeHeaders,
    }

    /// A loopback HTTP server that records the head of every request it receives.
    struct TestServer {
        address: SocketAddr,
        heads: Arc<Mutex<Vec<String>>>,
        connections: Arc<AtomicUsize>,
        /// Body bytes the server managed to send (for `Reply::HugeBody`).
        body_bytes_sent: Arc<AtomicUsize>,
        /// Connections the server is done with (the client hung up, or the reply was sent).
        finished: Arc<AtomicUsize>,
    }

    impl TestServer {
        fn start(reply: Reply) -> TestServer {
            let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
            let address = listener.local_addr().expect("addr");
            let server = TestServer {
                address,
                heads: Arc::default(),
                connections: Arc::default(),
                body_bytes_sent: Arc::default(),
                finished: Arc::default(),
            };
            let (heads, connections) = (Arc::clone(&server.heads), Arc::clone(&server.connections));
            let (sent, finished) = (Arc::clone(&server.body_bytes_sent), Arc::clone(&server.finished));
            std::thread::spawn(move || {
                for stream in listener.incoming().flatten() {
                    connections.fetch_add(1, Ordering::SeqCst);
                    let (heads, sent, finished) = (Arc::clone(&heads), Arc::clone(&sent), Arc::clone(&finished));
                    std::thread::spawn(move || {
                        serve(stream, reply, &heads, &sent);
                        finished.fetch_add(1, Ordering::SeqCst);
                    });
                }
            });
            server
        }

        fn url(&self, path: &str) -> String {
            format!("http://{}{path}", self.address)
        }

        fn heads(&self) -> Vec<String> {
            self.heads.lock().expect("lock").clone()
        }

        /// Waits until the server is done with `count` connections; fails after a minute.
        fn wait_for_finished_connections(&self, count: usize) {
            let started = Instant::now();
            while self.finished.load(Ordering::SeqCst) < count {
                assert!(
                    started.elapsed() < Duration::from_secs(60),
                    "the server is still serving: {} of {count} connections finished",
                    self.finished.load(Ordering::SeqCst)
                );
                std::thread::sleep(Duration::from_millis(10));
            }
        }
    }

    /// Reads a request head (up to the blank line, at most 64 KiB).
    fn read_head(stream: &mut TcpStream) -> String {
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") && head.len() < 65536 {
            match stream.read(&mut byte) {
                Ok(1) => head.push(byte[0]),
                _ => break,
            }
        }
        String::from_utf8_lossy(&head).into_owned()
    }

    /// Answers requests on one connection. Status replies keep the connection alive (so a
    /// client that reuses connections would be noticed); the others end it.
    fn serve(mut stream: TcpStream, reply: Reply, heads: &Mutex<Vec<String>>, body_bytes_sent: &AtomicUsize) {
        loop {
            let head = read_head(&mut stream);
            if head.is_empty() {
                return;
            }
            heads.lock().expect("lock").push(head);
            let response: Vec<u8> = match reply {
                Reply::Status(code) => {
                    let response =
                        format!("HTTP/1.1 {code} Test\r\nContent-Length: 2\r\nLocation: /elsewhere\r\n\r\nok");
                    if stream.write_all(response.as_bytes()).is_err() {
                        return;
                    }
                    continue;
                }
                Reply::Slow(delay) => {
                    std::thread::sleep(delay);
                    b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n".to_vec()
                }
                Reply::CloseMidHeaders => b"HTTP/1.1 200 OK\r\nContent-Le".to_vec(),
                Reply::CutBody => b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\nshort".to_vec(),
                Reply::Garbage => b"SSH-2.0-OpenSSH_9.2\r\n\r\n".to_vec(),
                Reply::HugeHeaders => {
                    let header = format!("X-Filler: {}\r\n", "y".repeat(1000));
                    let headers = header.repeat(2 * RESPONSE_HEADER_CAP / 1000);
                    format!("HTTP/1.1 200 OK\r\n{headers}Content-Length: 0\r\n\r\n").into_bytes()
                }
                Reply::HugeBody => {
                    let _ = stream.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 1000000000\r\n\r\n");
                    let chunk = vec![b'x'; 65536];
                    // Until the client hangs up (or the whole gigabyte is sent).
                    for _ in 0..(1_000_000_000 / chunk.len()) {
                        if stream.write_all(&chunk).is_err() {
                            break;
                        }
                        body_bytes_sent.fetch_add(chunk.len(), Ordering::SeqCst);
                    }
                    return;
                }
            };
            let _ = stream.write_all(&response);
            let _ = stream.shutdown(Shutdown::Write);
            return;
        }
    }

    fn httping(url: &str) -> HttpingSpec {
        HttpingSpec {
            url: url.to_owned(),
            user_agent: None,
            proxy: None,
            http_codes_as_failure: vec![],
            interval: None,
        }
    }

    fn plan(pings: u32, timeout: Duration, deadline: Duration) -> RunPlan {
        let start = Instant::now();
        RunPlan {
            pings,
            interval: Duration::from_millis(20),
            timeout,
            start,
            deadline: start + deadline,
        }
    }

    /// The RTTs of each spec; panics on a spec that could not be measured.
    fn run(specs: &[HttpingSpec], plan: &RunPlan) -> Vec<Rtts> {
        outcomes(specs, plan)
            .into_iter()
            .map(|outcome| outcome.unwrap_or_else(|failure| panic!("not measured: {failure}")))
            .collect()
    }

    fn outcomes(specs: &[HttpingSpec], plan: &RunPlan) -> Vec<Outcome> {
        let specs: Vec<ProbeSpec> = specs.iter().cloned().map(ProbeSpec::Httping).collect();
        let refs: Vec<&ProbeSpec> = specs.iter().collect();
        HttpProbe::new().run(&refs, plan)
    }

    fn normal_plan(pings: u32) -> RunPlan {
        plan(pings, Duration::from_secs(5), Duration::from_secs(20))
    }

    fn all_answered(rtts: &Rtts) -> bool {
        rtts.iter().all(|rtt| rtt.is_some_and(|s| s > 0.0 && s < 5.0))
    }

    #[test]
    fn each_ping_is_one_get_on_a_fresh_connection_with_the_default_user_agent() {
        let server = TestServer::start(Reply::Status(200));
        let results = run(&[httping(&server.url("/probe?x=1"))], &normal_plan(3));
        assert!(all_answered(&results[0]), "{results:?}");
        assert_eq!(server.connections.load(Ordering::SeqCst), 3, "one connection per ping");
        let heads = server.heads();
        assert_eq!(heads.len(), 3, "{heads:?}");
        for head in heads {
            assert!(head.starts_with("GET /probe?x=1 HTTP/1.1\r\n"), "{head}");
            let agent_line = format!("user-agent: {DEFAULT_USER_AGENT}\r\n");
            assert!(head.to_ascii_lowercase().contains(&agent_line), "{head}");
        }
    }

    #[test]
    fn order_user_agent_is_sent() {
        let server = TestServer::start(Reply::Status(200));
        let mut spec = httping(&server.url("/"));
        spec.user_agent = Some("pingmachine-compatible/1.0".into());
        run(&[spec], &normal_plan(1));
        let heads = server.heads();
        assert!(heads[0].contains("pingmachine-compatible/1.0\r\n"), "{heads:?}");
    }

    #[test]
    fn error_statuses_are_answered_unless_listed_as_failure() {
        let server = TestServer::start(Reply::Status(503));
        let plain = httping(&server.url("/"));
        let mut strict = httping(&server.url("/"));
        strict.http_codes_as_failure = vec![500, 503];
        let mut other_codes = httping(&server.url("/"));
        other_codes.http_codes_as_failure = vec![404];
        let results = run(&[plain, strict, other_codes], &normal_plan(2));
        assert!(all_answered(&results[0]), "{results:?}");
        assert_eq!(results[1], vec![None, None]);
        assert!(all_answered(&results[2]), "{results:?}");
    }

    #[test]
    fn redirect_is_answered_and_not_followed() {
        let server = TestServer::start(Reply::Status(302));
        let results = run(&[httping(&server.url("/start"))], &normal_plan(2));
        assert!(all_answered(&results[0]), "{results:?}");
        let heads = server.heads();
        assert_eq!(heads.len(), 2, "{heads:?}");
        assert!(heads.iter().all(|h| h.starts_with("GET /start ")), "{heads:?}");
    }

    #[test]
    fn broken_responses_are_lost_pings() {
        let mid_headers = TestServer::start(Reply::CloseMidHeaders);
        let cut_body = TestServer::start(Reply::CutBody);
        let garbage = TestServer::start(Reply::Garbage);
        let huge_headers = TestServer::start(Reply::HugeHeaders);
        let specs = [
            httping(&mid_headers.url("/")),
            httping(&cut_body.url("/")),
            httping(&garbage.url("/")),
            httping(&huge_headers.url("/")),
        ];
        let results = run(&specs, &normal_plan(2));
        assert_eq!(results, vec![vec![None, None]; 4]);
        assert_eq!(huge_headers.heads().len(), 2);
        // The servers were reached: the losses come from their replies.
        assert_eq!(mid_headers.heads().len(), 2);
        assert_eq!(cut_body.heads().len(), 2);
        assert_eq!(garbage.heads().len(), 2);
    }

    #[test]
    fn huge_body_is_answered_without_reading_it_all() {
        let server = TestServer::start(Reply::HugeBody);
        let results = run(&[httping(&server.url("/big"))], &normal_plan(2));
        assert!(all_answered(&results[0]), "{results:?}");
        // Once the server saw both connections end, it could have pushed at most the cap plus
        // socket buffers. (A client that kept reading would make it send the whole gigabyte.)
        server.wait_for_finished_connections(2);
        let sent = server.body_bytes_sent.load(Ordering::SeqCst);
        assert!(sent < 2 * 64 * 1024 * 1024, "client read {sent} body bytes");
    }

    #[test]
    fn a_refused_connection_is_lost_and_an_unresolvable_host_or_bad_url_is_not_measured() {
        let closed = TcpListener::bind("127.0.0.1:0").expect("bind");
        let closed_url = format!("http://{}/", closed.local_addr().expect("addr"));
        drop(closed);
        let specs = [
            httping(&closed_url),
            httping("http://no-such-host.invalid/"),
            httping("not a url at all"),
        ];
        let results = outcomes(&specs, &normal_plan(2));
        assert_eq!(results[0], Ok(vec![None, None]), "the target said no: lost");
        let unresolved = results[1]
            .as_ref()
            .expect_err("a .invalid name never resolves (RFC 6761)");
        assert!(
            unresolved.reason().starts_with("GET http://no-such-host.invalid/: ")
                && unresolved.reason().contains("failed to lookup address information"),
            "{unresolved}"
        );
        assert!(results[2].is_err(), "{:?}", results[2]);
    }

    #[test]
    fn resolution_failures_are_told_from_other_io_errors() {
        use std::net::ToSocketAddrs;
        let error = ("no-such-host.invalid", 80).to_socket_addrs().expect_err("RFC 6761");
        assert!(is_resolution_failure(&error), "{error:?}");
        assert!(!is_resolution_failure(&io::Error::from_raw_os_error(
            libc::ECONNREFUSED
        )));
        assert!(!is_resolution_failure(&io::Error::other("reset")));
    }

    #[test]
    fn slow_response_past_the_timeout_is_lost_while_a_fast_target_keeps_its_rounds() {
        let slow = TestServer::start(Reply::Slow(Duration::from_secs(3)));
        let fast = TestServer::start(Reply::Status(200));
        // The timeout leaves a loaded machine a second to answer the fast target, and is still
        // 2 s short of the slow one.
        let plan = plan(3, Duration::from_secs(1), Duration::from_secs(10));
        let results = run(&[httping(&slow.url("/")), httping(&fast.url("/"))], &plan);
        assert_eq!(results[0], vec![None, None, None]);
        assert!(all_answered(&results[1]), "{results:?}");
    }

    #[test]
    fn response_that_would_arrive_after_the_deadline_is_lost() {
        let slow = TestServer::start(Reply::Slow(Duration::from_secs(3)));
        let plan = plan(2, Duration::from_secs(15), Duration::from_millis(400));
        let results = run(&[httping(&slow.url("/"))], &plan);
        assert_eq!(results, vec![vec![None, None]]);
        assert!(Instant::now() >= plan.deadline);
    }

    /// An HTTP CONNECT proxy that records each request line and tunnels to the requested target.
    fn start_connect_proxy() -> (SocketAddr, Arc<Mutex<Vec<String>>>) {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let address = listener.local_addr().expect("addr");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let recorded = Arc::clone(&lines);
        std::thread::spawn(move || {
            for mut client in listener.incoming().flatten() {
                let head = read_head(&mut client);
                let line = head.lines().next().unwrap_or_default().to_owned();
                recorded.lock().expect("lock").push(line.clone());
                let target = line.split(' ').nth(1).unwrap_or_default().to_owned();
                let Ok(upstream) = TcpStream::connect(&target) else {
                    let _ = client.write_all(b"HTTP/1.1 502 Bad Gateway\r\n\r\n");
                    continue;
                };
                let _ = client.write_all(b"HTTP/1.1 200 Connection established\r\n\r\n");
                tunnel(client, upstream);
            }
        });
        (address, lines)
    }

    fn tunnel(client: TcpStream, upstream: TcpStream) {
        let (Ok(mut client_in), Ok(mut upstream_in)) = (client.try_clone(), upstream.try_clone()) else {
            return;
        };
        let (mut client_out, mut upstream_out) = (client, upstream);
        std::thread::spawn(move || io::copy(&mut client_in, &mut upstream_out));
        std::thread::spawn(move || io::copy(&mut upstream_in, &mut client_out));
    }

    #[test]
    fn proxy_option_sends_the_request_through_the_proxy() {
        let origin = TestServer::start(Reply::Status(200));
        let (proxy, lines) = start_connect_proxy();
        let mut with_scheme = httping(&origin.url("/via-proxy"));
        with_scheme.proxy = Some(format!("http://{proxy}"));
        let mut bare = httping(&origin.url("/via-proxy"));
        bare.proxy = Some(proxy.to_string());
        let results = run(&[with_scheme, bare], &normal_plan(1));
        assert!(results.iter().all(all_answered), "{results:?}");
        let lines = lines.lock().expect("lock").clone();
        let expected = format!("CONNECT {} HTTP/1.1", origin.address);
        assert_eq!(lines, vec![expected.clone(), expected], "{lines:?}");
        let heads = origin.heads();
        assert_eq!(heads.len(), 2);
        assert!(heads[0].starts_with("GET /via-proxy "), "{heads:?}");
    }

    #[test]
    fn an_unusable_or_refusing_proxy_measures_nothing_and_says_why() {
        let origin = TestServer::start(Reply::Status(200));
        let mut bad = httping(&origin.url("/"));
        bad.proxy = Some("ftp://[broken".into());
        let closed = TcpListener::bind("127.0.0.1:0").expect("bind");
        let mut down = httping(&origin.url("/"));
        down.proxy = Some(closed.local_addr().expect("addr").to_string());
        drop(closed);
        let results = outcomes(&[bad, down], &normal_plan(2));
        let bad = results[0].as_ref().expect_err("bad proxy");
        assert!(bad.reason().starts_with("invalid proxy \"ftp://[broken\""), "{bad}");
        let down = results[1].as_ref().expect_err("proxy down");
        assert!(down.reason().to_ascii_lowercase().contains("refused"), "{down}");
        assert!(origin.heads().is_empty());
    }

    /// A child process killed when the test ends, however it ends.
    struct KilledOnDrop(Child);

    impl Drop for KilledOnDrop {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }

    fn free_port() -> u16 {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.local_addr().expect("addr").port()
    }

    /// Waits until something accepts connections on `port` (the real servers take a moment).
    fn wait_for_listener(port: u16) {
        for _ in 0..200 {
            if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("nothing listens on port {port}");
    }

    #[test]
    fn python_http_server_answers_and_its_404_counts_only_when_listed() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("index.html"), "hello").expect("write");
        let port = free_port();
        let _server = KilledOnDrop(
            Command::new("python3")
                .args(["-m", "http.server", "--bind", "127.0.0.1", &port.to_string()])
                .current_dir(dir.path())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("python3 http.server"),
        );
        wait_for_listener(port);
        let found = httping(&format!("http://127.0.0.1:{port}/index.html"));
        let missing = httping(&format!("http://127.0.0.1:{port}/missing"));
        let mut missing_is_failure = missing.clone();
        missing_is_failure.http_codes_as_failure = vec![404];
        let results = run(&[found, missing, missing_is_failure], &normal_plan(3));
        assert!(all_answered(&results[0]), "{results:?}");
        assert!(all_answered(&results[1]), "{results:?}");
        assert_eq!(results[2], vec![None, None, None]);
    }

    #[test]
    fn https_server_with_a_self_signed_certificate_is_lost() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (key, cert) = (dir.path().join("key.pem"), dir.path().join("cert.pem"));
        let made = Command::new("openssl")
            .args(["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1"])
            .args(["-subj", "/CN=127.0.0.1", "-keyout"])
            .arg(&key)
            .arg("-out")
            .arg(&cert)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("openssl req");
        assert!(made.success());
        let port = free_port();
        let _server = KilledOnDrop(
            Command::new("openssl")
                .args(["s_server", "-www", "-accept", &port.to_string(), "-cert"])
                .arg(&cert)
                .arg("-key")
                .arg(&key)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("openssl s_server"),
        );
        wait_for_listener(port);
        let spec = httping(&format!("https://127.0.0.1:{port}/"));
        let agent = agent(&spec).expect("agent");
        match request_time(&agent, &spec, Duration::from_secs(5)) {
            Err(HttpPingError::Request { source, .. }) => {
                let message = source.to_string().to_ascii_lowercase();
                assert!(message.contains("certificate"), "{message}");
            }
            other => panic!("expected a certificate failure, got {other:?}"),
        }
    }
}
