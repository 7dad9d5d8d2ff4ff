//! Sending line protocol: UDP datagrams, or HTTP POSTs to InfluxDB 1.x `/write` or 2.x
//! `/api/v2/write`.
//!
//! UDP packs whole lines into datagrams of at most `max-datagram-size` bytes; a line is never
//! split, and a line longer than that goes alone in its own datagram. UDP has no
//! acknowledgement: `send` returns when the kernel took the datagrams. A line too long for any
//! datagram (over 65507 bytes) is [`DeliveryError::Rejected`] after the rest of the payload
//! went out; a send error (e.g. "connection refused" reported by ICMP for an earlier datagram)
//! is transient, and the socket is opened afresh (name resolved again) on the next `send`.
//!
//! HTTP errors are classified as follows:
//!
//! | outcome | class | why |
//! |---|---|---|
//! | 2xx | delivered | |
//! | 400 | rejected | bad line protocol or a field type conflict: the same bytes fail again (InfluxDB stored the valid lines of a partial write) |
//! | 413, 422, other 4xx | rejected | the request itself is unacceptable (too large, outside retention); retrying identical bytes cannot help |
//! | 401, 403 | transient | the lines are fine, the credentials or grants are not: an operator fixes them on the server, and the kept lines then go through |
//! | 404 | transient | InfluxDB answers 404 for a database or bucket that does not exist *yet*; once created the kept lines go through |
//! | 408, 429 | transient | the server asks to come back later |
//! | 1xx, 3xx | transient | redirects are not followed: a misconfigured URL, fixed by an operator |
//! | 5xx | transient | server trouble |
//! | no response: refused, reset, time-out, name not resolved, TLS failure | transient | |
//!
//! Transient failures keep the lines in the outbox, whose bound decides what is dropped, so a
//! configuration mistake costs at most the outbox, never a silent loss of everything sent
//! until someone notices.

use super::{Api, InfluxOptions};
use crate::shared::option::{seconds, InvalidOption};
use crate::sink::{DeliveryError, Transport};
use base64::Engine as _;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, ToSocketAddrs, UdpSocket};
use ureq::http::Uri;
use ureq::Agent;

/// The largest UDP payload over IPv4 (65535 - 8 byte UDP header - 20 byte IP header).
pub const MAX_UDP_PAYLOAD: usize = 65_507;

/// Most bytes of an error response kept for the log line.
const ERROR_BODY_CAP: u64 = 1024;

/// Checks that `url` is `udp://host:port` or `http(s)://host[:port][/path]`.
pub fn check_url(url: &str) -> Result<(), InvalidOption> {
    let bad = |reason: &str| InvalidOption::new("influx.url", format!("{url:?}: {reason}"));
    let uri: Uri = url.parse().map_err(|e| bad(&format!("not a URL ({e})")))?;
    let authority = uri
        .authority()
        .filter(|a| !a.host().is_empty())
        .ok_or_else(|| bad("no host"))?;
    if uri.query().is_some() {
        return Err(bad("must not have a query; use the options instead"));
    }
    match uri.scheme_str() {
        Some("udp") if authority.port_u16().is_none() => Err(bad("udp needs a port")),
        Some("udp") if !matches!(uri.path(), "" | "/") => Err(bad("udp takes no path")),
        Some("udp" | "http" | "https") => Ok(()),
        _ => Err(bad("scheme must be udp, http or https")),
    }
}

/// Sends lines as UDP datagrams to Telegraf or InfluxDB's UDP listener.
#[derive(Debug)]
pub struct UdpTransport {
    /// `host:port`.
    target: String,
    max_datagram: usize,
    socket: Option<UdpSocket>,
}

impl UdpTransport {
    /// A transport to the options' `udp://host:port`; it opens its socket on the first `send`.
    pub fn new(options: &InfluxOptions) -> UdpTransport {
        UdpTransport {
            target: options
                .url
                .trim_start_matches("udp://")
                .trim_end_matches('/')
                .to_string(),
            max_datagram: options.max_datagram_size,
            socket: None,
        }
    }

    fn socket(&mut self) -> Result<&UdpSocket, DeliveryError> {
        if self.socket.is_none() {
            self.socket =
                Some(self.open().map_err(|e| {
                    DeliveryError::Transient(format!("opening a socket to udp://{}: {e}", self.target))
                })?);
        }
        Ok(self.socket.as_ref().expect("opened above"))
    }

    /// A socket connected to the first address `target` resolves to.
    fn open(&self) -> io::Result<UdpSocket> {
        let address = self
            .target
            .to_socket_addrs()?
            .next()
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "name has no address"))?;
        let local: SocketAddr = if address.is_ipv4() {
            ([0, 0, 0, 0], 0).into()
        } else {
            ([0u16; 8], 0).into()
        };
        let socket = UdpSocket::bind(local)?;
        socket.connect(address)?;
        Ok(socket)
    }
}

/// Bytes of lines handed to one UDP `send` (split into datagrams there).
const UDP_BATCH_BYTES: usize = 64 << 10;

impl Transport for UdpTransport {
    fn send(&mut self, payload: &[u8]) -> Result<(), DeliveryError> {
        let max_datagram = self.max_datagram;
        let sent = send_datagrams(self.socket()?, payload, max_datagram);
        match sent {
            Ok(0) => Ok(()),
            Ok(oversized) => Err(DeliveryError::Rejected(format!(
                "{oversized} line(s) too long for a UDP datagram to {}",
                self.describe()
            ))),
            Err(e) => {
                self.socket = None;
                Err(DeliveryError::Transient(format!("sending to {}: {e}", self.describe())))
            }
        }
    }

    /// Several datagrams per delivery batch: each acknowledged batch costs fsyncs in the outbox,
    /// so one batch per datagram would limit delivery to a few thousand datagrams a second.
    fn max_payload(&self) -> usize {
        UDP_BATCH_BYTES.max(self.max_datagram)
    }

    fn describe(&self) -> String {
        format!("udp://{}", self.target)
    }
}

/// Sends `payload` as datagrams of whole lines; returns how many were too long to send at all.
fn send_datagrams(socket: &UdpSocket, payload: &[u8], max_datagram: usize) -> io::Result<usize> {
    let mut oversized = 0;
    for datagram in datagrams(payload, max_datagram) {
        match socket.send(datagram) {
            Ok(_) => {}
            Err(e) if e.raw_os_error() == Some(libc::EMSGSIZE) => oversized += 1,
            Err(e) => return Err(e),
        }
    }
    Ok(oversized)
}

/// Splits `payload` into runs of whole lines of at most `max` bytes each; a line longer than
/// `max` is a run of its own. A last line without `\n` counts as a line.
pub fn datagrams(payload: &[u8], max: usize) -> Datagrams<'_> {
    Datagrams { rest: payload, max }
}

/// Iterator returned by [`datagrams`].
#[derive(Debug)]
pub struct Datagrams<'a> {
    rest: &'a [u8],
    max: usize,
}

impl<'a> Iterator for Datagrams<'a> {
    type Item = &'a [u8];

    fn next(&mut self) -> Option<&'a [u8]> {
        if self.rest.is_empty() {
            return None;
        }
        let mut end = line_end(self.rest, 0);
        while end < self.rest.len() {
            let next = line_end(self.rest, end);
            if next > self.max {
                break;
            }
            end = next;
        }
        let (datagram, rest) = self.rest.split_at(end);
        self.rest = rest;
        Some(datagram)
    }
}

/// Index just past the line of `bytes` that starts at `start`.
fn line_end(bytes: &[u8], start: usize) -> usize {
    bytes[start..]
        .iter()
        .position(|&b| b == b'\n')
        .map_or(bytes.len(), |newline| start + newline + 1)
}

/// Sends lines by HTTP POST to InfluxDB 1.x `/write` or 2.x `/api/v2/write`.
#[derive(Debug)]
pub struct HttpTransport {
    agent: Agent,
    /// `<url>/write` or `<url>/api/v2/write`.
    write_url: String,
    query: Vec<(&'static str, String)>,
    /// `Basic ...` or `Token ...`.
    authorization: Option<String>,
    gzip: bool,
    max_body: usize,
}

impl HttpTransport {
    /// A transport for validated options with an `http(s)` url.
    pub fn new(options: &InfluxOptions) -> HttpTransport {
        let base = options.url.trim_end_matches('/');
        let (path, query, authorization) = match options.api() {
            Api::HttpV2 => ("/api/v2/write", v2_query(options), token_authorization(options)),
            Api::HttpV1 | Api::Udp => ("/write", v1_query(options), basic_authorization(options)),
        };
        let agent = Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(seconds(options.timeout)))
            .max_redirects(0)
            .user_agent(concat!("spoolmon/", env!("CARGO_PKG_VERSION")))
            .build()
            .new_agent();
        HttpTransport {
            agent,
            write_url: format!("{base}{path}"),
            query,
            authorization,
            gzip: options.gzip,
            max_body: options.max_body_size,
        }
    }

    /// POSTs `body` and returns the status and (the start of) the response body.
    fn post(&self, body: &[u8]) -> Result<(u16, String), ureq::Error> {
        let mut request = self
            .agent
            .post(&self.write_url)
            .header("Content-Type", "text/plain; charset=utf-8");
        for (key, value) in &self.query {
            request = request.query(key, value);
        }
        if let Some(authorization) = &self.authorization {
            request = request.header("Authorization", authorization);
        }
        if self.gzip {
            request = request.header("Content-Encoding", "gzip");
        }
        let mut response = request.send(body)?;
        let status = response.status().as_u16();
        let mut text = Vec::new();
        // The body only decorates the log line: a failure to read it changes nothing.
        let _ = response
            .body_mut()
            .as_reader()
            .take(ERROR_BODY_CAP)
            .read_to_end(&mut text);
        Ok((status, String::from_utf8_lossy(&text).trim().to_string()))
    }
}

impl Transport for HttpTransport {
    fn send(&mut self, payload: &[u8]) -> Result<(), DeliveryError> {
        let compressed;
        let body = if self.gzip {
            compressed = gzip(payload);
            &compressed[..]
        } else {
            payload
        };
        match self.post(body) {
            Ok((status, text)) => classify_status(status, &text, &self.describe()),
            Err(e) => Err(DeliveryError::Transient(format!("POST {}: {e}", self.describe()))),
        }
    }

    fn max_payload(&self) -> usize {
        self.max_body
    }

    fn describe(&self) -> String {
        let query: Vec<String> = self.query.iter().map(|(k, v)| format!("{k}={v}")).collect();
        format!("{}?{}", self.write_url, query.join("&"))
    }
}

/// Maps an HTTP status to delivered, rejected or transient (see the module documentation).
pub fn classify_status(status: u16, body: &str, target: &str) -> Result<(), DeliveryError> {
    let message = || format!("POST {target}: HTTP {status}: {body}");
    match status {
        200..=299 => Ok(()),
        401 | 403 | 404 | 408 | 429 => Err(DeliveryError::Transient(message())),
        400..=499 => Err(DeliveryError::Rejected(message())),
        _ => Err(DeliveryError::Transient(message())),
    }
}

fn v1_query(options: &InfluxOptions) -> Vec<(&'static str, String)> {
    let mut query = vec![("db", options.database.clone().unwrap_or_default())];
    if let Some(policy) = &options.retention_policy {
        query.push(("rp", policy.clone()));
    }
    query.push(("precision", options.precision.v1_name().to_string()));
    query
}

fn v2_query(options: &InfluxOptions) -> Vec<(&'static str, String)> {
    let mut query = Vec::new();
    if let Some(org) = &options.org {
        query.push(("org", org.clone()));
    }
    query.push(("bucket", options.bucket.clone().unwrap_or_default()));
    query.push(("precision", options.precision.v2_name().to_string()));
    query
}

/// `Basic base64(user:password)`: credentials in a header rather than in the URL, which
/// proxies and logs record.
fn basic_authorization(options: &InfluxOptions) -> Option<String> {
    let (user, password) = (options.username.as_ref()?, options.password.as_ref()?);
    let encoded = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
    Some(format!("Basic {encoded}"))
}

fn token_authorization(options: &InfluxOptions) -> Option<String> {
    options.token.as_ref().map(|token| format!("Token {token}"))
}

/// `payload` gzip-compressed (fast level: line protocol compresses well at any level).
fn gzip(payload: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::with_capacity(payload.len() / 4), flate2::Compression::fast());
    encoder
        .write_all(payload)
        .and_then(|()| encoder.finish())
        .expect("compressing into memory cannot fail")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn split(payload: &str, max: usize) -> Vec<&str> {
        datagrams(payload.as_bytes(), max)
            .map(|d| std::str::from_utf8(d).unwrap())
            .collect()
    }

    #[test]
    fn datagrams_pack_whole_lines_up_to_the_size() {
        let payload = "aaaa\nbbbb\ncccc\ndd\n";
        assert_eq!(split(payload, 10), ["aaaa\nbbbb\n", "cccc\ndd\n"]);
        assert_eq!(split(payload, 9), ["aaaa\n", "bbbb\n", "cccc\ndd\n"]);
        assert_eq!(split(payload, 100), [payload]);
        assert!(split("", 10).is_empty());
    }

    #[test]
    fn a_line_longer_than_the_size_travels_alone_and_whole() {
        let payload = "a\nbbbbbbbbbbbb\nc\nd\n";
        assert_eq!(split(payload, 4), ["a\n", "bbbbbbbbbbbb\n", "c\nd\n"]);
        assert_eq!(split("xxxxxxxx\n", 3), ["xxxxxxxx\n"]);
        assert_eq!(split("a\nno newline", 4), ["a\n", "no newline"]);
    }

    #[test]
    fn datagrams_never_split_a_line_for_any_size() {
        let payload: String = (0..200).map(|i| format!("m{} v={i}\n", "x".repeat(i % 17))).collect();
        for max in 1..80 {
            let parts = split(&payload, max);
            assert_eq!(parts.concat(), payload);
            for part in parts {
                assert!(part.ends_with('\n'));
                assert!(part.len() <= max || part.matches('\n').count() == 1, "{max}: {part:?}");
            }
        }
    }

    #[test]
    fn statuses_are_classified() {
        let class = |status| match classify_status(status, "body", "t") {
            Ok(()) => "ok",
            Err(DeliveryError::Rejected(_)) => "rejected",
            Err(DeliveryError::Transient(_)) => "transient",
        };
        for (status, expected) in [
            (200, "ok"),
            (204, "ok"),
            (400, "rejected"),
            (413, "rejected"),
            (422, "rejected"),
            (405, "rejected"),
            (401, "transient"),
            (403, "transient"),
            (404, "transient"),
            (408, "transient"),
            (429, "transient"),
            (301, "transient"),
            (500, "transient"),
            (503, "transient"),
        ] {
            assert_eq!(class(status), expected, "HTTP {status}");
        }
        let Err(DeliveryError::Rejected(message)) = classify_status(400, "unable to parse", "x") else {
            panic!("400 not rejected");
        };
        assert!(
            message.contains("400") && message.contains("unable to parse"),
            "{message}"
        );
    }

    #[test]
    fn gzip_bodies_decompress_to_the_payload() {
        let payload = b"m v=1 1\n".repeat(100);
        let mut decoded = Vec::new();
        flate2::read::GzDecoder::new(&gzip(&payload)[..])
            .read_to_end(&mut decoded)
            .unwrap();
        assert_eq!(decoded, payload);
    }

    fn udp_transport(address: SocketAddr, max_datagram_size: usize) -> UdpTransport {
        UdpTransport::new(&InfluxOptions {
            url: format!("udp://{address}"),
            max_datagram_size,
            ..InfluxOptions::default()
        })
    }

    #[test]
    fn udp_datagrams_arrive_as_whole_lines() {
        let receiver = UdpSocket::bind("127.0.0.1:0").unwrap();
        receiver.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut transport = udp_transport(receiver.local_addr().unwrap(), 20);
        let payload = b"a v=1 1\nbb v=2 2\nccc v=3 3\nd v=4 4\n";
        transport.send(payload).unwrap();
        let mut received = Vec::new();
        let mut buffer = [0u8; 100];
        while received.len() < payload.len() {
            let n = receiver.recv(&mut buffer).unwrap();
            assert!(n <= 20 && buffer[n - 1] == b'\n', "{:?}", &buffer[..n]);
            received.extend_from_slice(&buffer[..n]);
        }
        assert_eq!(received, payload);
    }

    #[test]
    fn a_line_too_long_for_udp_is_rejected_after_the_rest_went_out() {
        let receiver = UdpSocket::bind("127.0.0.1:0").unwrap();
        receiver.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut transport = udp_transport(receiver.local_addr().unwrap(), 100);
        let huge = format!("m v=\"{}\" 1\n", "x".repeat(MAX_UDP_PAYLOAD + 10));
        let payload = format!("a v=1 1\n{huge}b v=2 2\n");
        let err = transport.send(payload.as_bytes()).unwrap_err();
        assert!(matches!(err, DeliveryError::Rejected(_)), "{err}");
        let mut buffer = [0u8; 100];
        let mut got = Vec::new();
        for _ in 0..2 {
            let n = receiver.recv(&mut buffer).unwrap();
            got.push(String::from_utf8_lossy(&buffer[..n]).into_owned());
        }
        assert_eq!(got, ["a v=1 1\n", "b v=2 2\n"]);
    }
}
