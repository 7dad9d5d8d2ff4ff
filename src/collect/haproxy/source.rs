//! Where statistics come from: `servers` URLs and the UNIX sockets found in `socket-dir`, each
//! with the file name its replies get in a snapshot.
//!
//! URLs are parsed strictly: `unix://` takes an absolute path and no host, `tcp://` a host (a
//! name, an IPv4 address or a bracketed IPv6 address) and a port, and nothing else (no user,
//! path, query or fragment). Paths are taken literally (no percent-decoding).

use crate::shared::option::InvalidOption;
use std::collections::BTreeMap;
use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};
use tracing::warn;

/// How to reach a stats socket.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum SourceAddress {
    Unix(PathBuf),
    /// `host` as written (without brackets for IPv6), to connect to.
    Tcp {
        host: String,
        port: u16,
    },
}

/// One stats socket of one HAProxy process.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Source {
    pub address: SourceAddress,
    /// Prefix of its files in a snapshot (`<file_name>_info`, `<file_name>_stat`).
    pub file_name: String,
}

impl Source {
    /// A UNIX socket; `None` if the path has no usable file name.
    pub fn unix(path: PathBuf) -> Option<Source> {
        let file_name = path.file_name()?.to_str()?.to_owned();
        Some(Source {
            address: SourceAddress::Unix(path),
            file_name,
        })
    }

    /// A TCP server; the file name is `<host>:<port>` as haproxystats names it.
    pub fn tcp(host: &str, port: u16) -> Source {
        Source {
            address: SourceAddress::Tcp {
                host: host.to_owned(),
                port,
            },
            file_name: format!("{}:{port}", host.to_ascii_lowercase()),
        }
    }
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.address {
            SourceAddress::Unix(path) => write!(f, "unix://{}", path.display()),
            SourceAddress::Tcp { host, port } if host.contains(':') => write!(f, "tcp://[{host}]:{port}"),
            SourceAddress::Tcp { host, port } => write!(f, "tcp://{host}:{port}"),
        }
    }
}

/// Why a `servers` entry is not a stats socket URL.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UrlError {
    #[error("{0:?} is not a unix:// or tcp:// URL (examples: unix:///run/haproxy.sock, tcp://127.0.0.1:5555, tcp://[::1]:5555)")]
    Scheme(String),
    #[error("{0:?}: a unix URL takes an absolute path and no host, as in unix:///run/haproxy.sock")]
    UnixPath(String),
    #[error("{0:?}: a tcp URL is tcp://host:port, nothing before the host or after the port")]
    TcpShape(String),
    #[error("{0:?}: the port must be a number from 1 to 65535")]
    Port(String),
    #[error("{0:?}: the host must be a name, an IPv4 address or a bracketed IPv6 address ([::1])")]
    Host(String),
    #[error("{0:?} contains whitespace or control characters")]
    Control(String),
}

/// Parses one `servers` entry.
pub fn parse_server_url(url: &str) -> Result<Source, UrlError> {
    if url.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return Err(UrlError::Control(url.to_owned()));
    }
    let (scheme, rest) = url.split_once("://").ok_or_else(|| UrlError::Scheme(url.to_owned()))?;
    match scheme.to_ascii_lowercase().as_str() {
        "unix" => parse_unix(url, rest),
        "tcp" => parse_tcp(url, rest),
        _ => Err(UrlError::Scheme(url.to_owned())),
    }
}

fn parse_unix(url: &str, path: &str) -> Result<Source, UrlError> {
    let bad = || UrlError::UnixPath(url.to_owned());
    if !path.starts_with('/') || path.ends_with('/') || path.contains(['?', '#']) {
        return Err(bad());
    }
    let path = PathBuf::from(path);
    if path.file_name().is_none() || path.ends_with("..") {
        return Err(bad());
    }
    Source::unix(path).ok_or_else(bad)
}

fn parse_tcp(url: &str, authority: &str) -> Result<Source, UrlError> {
    let shape = || UrlError::TcpShape(url.to_owned());
    if authority.contains(['/', '?', '#', '@']) {
        return Err(shape());
    }
    let (host, port) = match authority.strip_prefix('[') {
        Some(bracketed) => {
            let (v6, port) = bracketed.split_once("]:").ok_or_else(shape)?;
            v6.parse::<Ipv6Addr>().map_err(|_| UrlError::Host(url.to_owned()))?;
            (v6, port)
        }
        None => {
            let (host, port) = authority
                .rsplit_once(':')
                .ok_or_else(|| UrlError::Port(url.to_owned()))?;
            if !valid_host(host) {
                return Err(UrlError::Host(url.to_owned()));
            }
            (host, port)
        }
    };
    let digits_only = !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit());
    let port = match port.parse::<u16>() {
        Ok(port) if port > 0 && digits_only => port,
        _ => return Err(UrlError::Port(url.to_owned())),
    };
    Ok(Source::tcp(host, port))
}

/// A DNS name (letters, digits, `-`, `_`, dots between labels) or an IPv4 address.
fn valid_host(host: &str) -> bool {
    if host.parse::<Ipv4Addr>().is_ok() {
        return true;
    }
    (1..=253).contains(&host.len())
        && host.split('.').all(|label| {
            (1..=63).contains(&label.len())
                && !label.starts_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

/// Parses every `servers` entry; the error names the entry (`pull.servers[i]`).
pub fn parse_servers(servers: &[String]) -> Result<Vec<Source>, InvalidOption> {
    let sources: Vec<Source> = servers
        .iter()
        .enumerate()
        .map(|(i, url)| {
            parse_server_url(url).map_err(|e| InvalidOption::new(&format!("pull.servers[{i}]"), e.to_string()))
        })
        .collect::<Result<_, _>>()?;
    for (i, source) in sources.iter().enumerate() {
        if let Some(first) = sources[..i].iter().find(|s| s.file_name == source.file_name) {
            return Err(InvalidOption::new(
                &format!("pull.servers[{i}]"),
                format!(
                    "{source} and {first} would both be saved as {}_info/_stat",
                    source.file_name
                ),
            ));
        }
    }
    Ok(sources)
}

/// Two sources whose replies would be saved under the same names.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{first} and {second} would both be saved as {file_name}_info/_stat")]
pub struct FileNameClash {
    pub file_name: String,
    pub first: String,
    pub second: String,
}

/// The sources of one cycle: the UNIX sockets now in `socket_dir` (sorted by name), then
/// `servers`. A socket named both ways is pulled once. An unreadable `socket_dir` is logged and
/// contributes nothing, as an empty one (haproxystats does the same).
pub fn list_sources(socket_dir: Option<&Path>, servers: &[Source]) -> Result<Vec<Source>, FileNameClash> {
    let mut sources = socket_dir.map(scan_socket_dir).unwrap_or_default();
    sources.extend(servers.iter().cloned());
    let mut by_name: BTreeMap<String, Source> = BTreeMap::new();
    let mut ordered = Vec::with_capacity(sources.len());
    for source in sources {
        match by_name.get(&source.file_name) {
            Some(known) if known.address == source.address => continue,
            Some(known) => {
                return Err(FileNameClash {
                    file_name: source.file_name.clone(),
                    first: known.to_string(),
                    second: source.to_string(),
                })
            }
            None => {
                by_name.insert(source.file_name.clone(), source.clone());
                ordered.push(source);
            }
        }
    }
    Ok(ordered)
}

/// UNIX sockets directly in `dir` (symlinks followed, hidden names skipped), sorted by name.
pub fn scan_socket_dir(dir: &Path) -> Vec<Source> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) => {
            warn!(socket_dir = %dir.display(), "cannot list socket-dir: {e}");
            return Vec::new();
        }
    };
    let mut sources: Vec<Source> = entries
        .filter_map(Result::ok)
        .filter(|entry| !entry.file_name().to_string_lossy().starts_with('.'))
        .filter(|entry| std::fs::metadata(entry.path()).is_ok_and(|m| m.file_type().is_socket()))
        .filter_map(|entry| Source::unix(entry.path()))
        .collect();
    sources.sort_by(|a, b| a.file_name.cmp(&b.file_name));
    sources
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tcp(host: &str, port: u16) -> SourceAddress {
        SourceAddress::Tcp {
            host: host.into(),
            port,
        }
    }

    #[test]
    fn haproxystats_readme_examples_parse_with_its_file_names() {
        let cases = [
            ("tcp://127.0.0.1:5555", tcp("127.0.0.1", 5555), "127.0.0.1:5555"),
            ("tcp://foo.bar.com:4444", tcp("foo.bar.com", 4444), "foo.bar.com:4444"),
            ("TCP://Foo.Bar.com:4444", tcp("Foo.Bar.com", 4444), "foo.bar.com:4444"),
            (
                "tcp://[fe80::3f2f:46b3:ef0c:a420]:4444",
                tcp("fe80::3f2f:46b3:ef0c:a420", 4444),
                "fe80::3f2f:46b3:ef0c:a420:4444",
            ),
            (
                "unix:///run/haproxy.sock",
                SourceAddress::Unix("/run/haproxy.sock".into()),
                "haproxy.sock",
            ),
        ];
        for (url, address, file_name) in cases {
            let source = parse_server_url(url).unwrap();
            assert_eq!(
                (&source.address, source.file_name.as_str()),
                (&address, file_name),
                "{url}"
            );
        }
        assert_eq!(
            parse_server_url("tcp://[::1]:99").unwrap().to_string(),
            "tcp://[::1]:99"
        );
    }

    fn kind(error: &UrlError) -> &'static str {
        match error {
            UrlError::Scheme(_) => "scheme",
            UrlError::UnixPath(_) => "unix",
            UrlError::TcpShape(_) => "shape",
            UrlError::Port(_) => "port",
            UrlError::Host(_) => "host",
            UrlError::Control(_) => "control",
        }
    }

    #[test]
    fn hostile_and_malformed_urls_are_refused_with_the_reason() {
        let cases = [
            ("http://h:1", "scheme"),
            ("/run/haproxy.sock", "scheme"),
            ("", "scheme"),
            ("unix://", "unix"),
            ("unix://run/haproxy.sock", "unix"),
            ("unix://host/run/a.sock", "unix"),
            ("unix:///run/haproxy/", "unix"),
            ("unix:///run/..", "unix"),
            ("unix:///run/a.sock?x=1", "unix"),
            ("tcp://h", "port"),
            ("tcp://h:", "port"),
            ("tcp://h:0", "port"),
            ("tcp://h:65536", "port"),
            ("tcp://h:+80", "port"),
            ("tcp://h:80/path", "shape"),
            ("tcp://user@h:80", "shape"),
            ("tcp://[::1]", "shape"),
            ("tcp://[nonsense]:80", "host"),
            ("tcp://fe80::1:80", "host"),
            ("tcp://:80", "host"),
            ("tcp://a..b:80", "host"),
            ("tcp://..:80", "host"),
            ("tcp://../../etc:80", "shape"),
            ("tcp://h h:80", "control"),
            ("unix:///run/a\n.sock", "control"),
            ("unix:///run/a\0.sock", "control"),
        ];
        for (url, expected) in cases {
            let err = parse_server_url(url).unwrap_err();
            assert_eq!(kind(&err), expected, "{url:?} gave {err:?}");
        }
        let long = format!("tcp://{}:80", "a".repeat(300));
        assert!(matches!(parse_server_url(&long), Err(UrlError::Host(_))));
    }

    #[test]
    fn servers_that_would_share_file_names_are_refused() {
        let servers = ["unix:///a/x.sock".to_string(), "unix:///b/x.sock".to_string()];
        let err = parse_servers(&servers).unwrap_err();
        assert_eq!(err.key, "pull.servers[1]");
        let err = parse_servers(&["tcp://h:1".into(), "nope".into()]).unwrap_err();
        assert_eq!(err.key, "pull.servers[1]");
    }

    #[test]
    fn socket_dir_yields_its_sockets_only_and_dedups_against_servers() {
        let dir = tempfile::tempdir().unwrap();
        let _b = std::os::unix::net::UnixListener::bind(dir.path().join("b.sock")).unwrap();
        let _a = std::os::unix::net::UnixListener::bind(dir.path().join("a.sock")).unwrap();
        let _hidden = std::os::unix::net::UnixListener::bind(dir.path().join(".hidden.sock")).unwrap();
        std::fs::write(dir.path().join("not-a-socket"), b"").unwrap();
        let same = Source::unix(dir.path().join("a.sock")).unwrap();
        let sources = list_sources(Some(dir.path()), &[same, Source::tcp("h", 1)]).unwrap();
        let names: Vec<&str> = sources.iter().map(|s| s.file_name.as_str()).collect();
        assert_eq!(names, ["a.sock", "b.sock", "h:1"]);
        let clash = Source::unix("/elsewhere/b.sock".into()).unwrap();
        let err = list_sources(Some(dir.path()), &[clash]).unwrap_err();
        assert_eq!(err.file_name, "b.sock");
        assert!(list_sources(Some(&dir.path().join("missing")), &[]).unwrap().is_empty());
    }
}
