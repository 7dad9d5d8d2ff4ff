//! Where a `forward` sink's destinations come from when they change (veneur-proxy's discovery):
//! a file of URLs, DNS SRV records, or Consul's health API, read again every `interval`.
//!
//! Each refresh gives a whole set or an error. A set is applied only when it differs from the
//! one in use; an error, or an answer with no destination, keeps the last good set (veneur's
//! old behaviour, which its users preferred to an empty ring), logged and counted. Answers are
//! hostile input: the file and Consul's body are bounded ([`MAX_ANSWER_BYTES`]), every
//! destination is checked like one in the config, at most [`MAX_DESTINATIONS`] are taken.
//!
//! - `file`: one URL per line (`https://host:port`), `#` comments and blank lines ignored; one
//!   bad line refuses the whole file (naming the line), so a half-edited file changes nothing.
//! - `srv`: the SRV records of the name, each `<scheme>://<target>:<port>`, ordered by priority
//!   (lowest first: the failover order), then weight (highest first), then target; asked of
//!   `dns-server` (`IP:port`) or of the system's resolvers (`/etc/resolv.conf`).
//! - `consul`: `GET <url>/v1/health/service/<service>?passing[&tag=<tag>]`, each entry's
//!   `Service.Address` (or `Node.Address` when empty) and `Service.Port`, in Consul's order.
//!
//! No state on disk. The sink's discovery thread (`discover-<sink>`, started by
//! `crate::sink::running`) calls [`Discovery::resolve`] and hands a new set to the sink.

use crate::shared::option::{check_seconds, seconds, InvalidOption};
use serde::{Deserialize, Serialize};
use std::io::Read;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tracing::{info, warn};

/// Largest file or Consul answer read (bytes).
pub const MAX_ANSWER_BYTES: u64 = 4 << 20;
/// Most destinations taken from one answer.
pub const MAX_DESTINATIONS: usize = 1024;

/// `https` or `http`, for the sources that give a host and a port only.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Scheme {
    #[default]
    Https,
    Http,
}

impl Scheme {
    fn as_str(self) -> &'static str {
        match self {
            Scheme::Https => "https",
            Scheme::Http => "http",
        }
    }
}

/// `discovery: {consul}`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(default, rename_all = "kebab-case", deny_unknown_fields)]
pub struct ConsulOptions {
    /// Consul's HTTP API, `http://127.0.0.1:8500` (the local agent).
    pub url: String,
    /// The service whose passing instances are the destinations.
    pub service: String,
    /// Only instances with this tag. None by default.
    pub tag: Option<String>,
}

/// `discovery:` of a forward sink: exactly one source, and how often it is read.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(default, rename_all = "kebab-case", deny_unknown_fields)]
pub struct DiscoveryOptions {
    /// A file of destinations, one URL per line (`#` comments). None by default.
    pub file: Option<PathBuf>,
    /// A DNS name whose SRV records are the destinations (`_spoolmon._tcp.example.com`).
    /// None by default.
    pub srv: Option<String>,
    /// The DNS server asked for `srv`, `IP:port`. Default: the system's resolvers.
    pub dns_server: Option<String>,
    /// Consul's health API. None by default.
    pub consul: Option<ConsulOptions>,
    /// The scheme of the destinations `srv` and `consul` give (they give a host and a port).
    /// Default https.
    pub scheme: Scheme,
    /// Seconds between two reads of the source. Default 30.
    pub interval: f64,
    /// Seconds one DNS or Consul query may take. Default 5.
    pub timeout: f64,
}

impl Default for DiscoveryOptions {
    fn default() -> Self {
        DiscoveryOptions {
            file: None,
            srv: None,
            dns_server: None,
            consul: None,
            scheme: Scheme::Https,
            interval: 30.0,
            timeout: 5.0,
        }
    }
}

impl DiscoveryOptions {
    /// Checks the options; the error names the key (under `discovery.`).
    pub fn validate(&self) -> Result<(), InvalidOption> {
        let sources = [self.file.is_some(), self.srv.is_some(), self.consul.is_some()];
        if sources.iter().filter(|s| **s).count() != 1 {
            return Err(InvalidOption::new("discovery", "name exactly one of file, srv, consul"));
        }
        if let Some(server) = &self.dns_server {
            if self.srv.is_none() {
                return Err(InvalidOption::new("discovery.dns-server", "is for srv only"));
            }
            server
                .parse::<SocketAddr>()
                .map_err(|_| InvalidOption::new("discovery.dns-server", format!("{server:?} is not IP:port")))?;
        }
        if let Some(consul) = &self.consul {
            if !(consul.url.starts_with("http://") || consul.url.starts_with("https://")) {
                return Err(InvalidOption::new(
                    "discovery.consul.url",
                    "expected http(s)://host:port",
                ));
            }
            if consul.service.is_empty()
                || !consul
                    .service
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
            {
                return Err(InvalidOption::new(
                    "discovery.consul.service",
                    "a service name: letters, digits, '-', '_', '.'",
                ));
            }
        }
        check_seconds("discovery.interval", self.interval, 1.0)?;
        check_seconds("discovery.timeout", self.timeout, 0.1)
    }

    /// What the source is, for the log.
    pub fn describe(&self) -> String {
        match (&self.file, &self.srv, &self.consul) {
            (Some(file), _, _) => format!("file {}", file.display()),
            (_, Some(srv), _) => format!("SRV {srv}"),
            (_, _, Some(consul)) => format!("Consul {} service {}", consul.url, consul.service),
            _ => "nothing".into(),
        }
    }
}

/// Why a refresh gave no set.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DiscoveryError {
    #[error("{source_name}: {message}")]
    Failed { source_name: String, message: String },
    #[error("{0}: no destination in the answer")]
    Empty(String),
}

/// A source of destinations.
pub struct Discovery {
    options: DiscoveryOptions,
    /// Checks one destination as the config does (`Err` names what is wrong).
    check: fn(&str) -> Result<(), String>,
}

impl Discovery {
    pub fn new(options: DiscoveryOptions, check: fn(&str) -> Result<(), String>) -> Discovery {
        Discovery { options, check }
    }

    pub fn options(&self) -> &DiscoveryOptions {
        &self.options
    }

    /// The destinations the source names now.
    pub fn resolve(&self) -> Result<Vec<String>, DiscoveryError> {
        let source = self.options.describe();
        let failed = |message: String| DiscoveryError::Failed {
            source_name: source.clone(),
            message,
        };
        let found = if let Some(file) = &self.options.file {
            let text = read_bounded(std::fs::File::open(file).map_err(|e| failed(e.to_string()))?).map_err(failed)?;
            parse_lines(&text, self.check).map_err(failed)?
        } else if let Some(name) = &self.options.srv {
            self.srv(name).map_err(failed)?
        } else if let Some(consul) = &self.options.consul {
            self.consul(consul).map_err(failed)?
        } else {
            Vec::new()
        };
        if found.is_empty() {
            return Err(DiscoveryError::Empty(source));
        }
        Ok(found)
    }

    fn srv(&self, name: &str) -> Result<Vec<String>, String> {
        use hickory_resolver::config::{NameServerConfigGroup, ResolverConfig};
        use hickory_resolver::name_server::TokioConnectionProvider;
        use hickory_resolver::Resolver;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| e.to_string())?;
        let provider = TokioConnectionProvider::default();
        let mut builder = match &self.options.dns_server {
            Some(server) => {
                let address: SocketAddr = server.parse().map_err(|_| format!("{server:?} is not IP:port"))?;
                let servers = NameServerConfigGroup::from_ips_clear(&[address.ip()], address.port(), true);
                Resolver::builder_with_config(ResolverConfig::from_parts(None, vec![], servers), provider)
            }
            None => Resolver::builder(provider).map_err(|e| format!("cannot read the system's resolvers: {e}"))?,
        };
        builder.options_mut().timeout = seconds(self.options.timeout);
        builder.options_mut().attempts = 1;
        // A refresh asks again: nothing cached between refreshes.
        builder.options_mut().cache_size = 0;
        let resolver = builder.build();
        let lookup = runtime
            .block_on(resolver.srv_lookup(name))
            .map_err(|e| format!("SRV lookup: {e}"))?;
        let mut records: Vec<(u16, std::cmp::Reverse<u16>, String, u16)> = lookup
            .iter()
            .take(MAX_DESTINATIONS)
            .map(|srv| {
                let target = srv.target().to_utf8();
                let target = target.trim_end_matches('.').to_owned();
                (srv.priority(), std::cmp::Reverse(srv.weight()), target, srv.port())
            })
            .collect();
        records.sort();
        let scheme = self.options.scheme.as_str();
        records
            .into_iter()
            .filter(|(_, _, target, _)| !target.is_empty())
            .map(|(_, _, target, port)| {
                let url = format!("{scheme}://{target}:{port}");
                (self.check)(&url).map(|()| url)
            })
            .collect()
    }

    fn consul(&self, consul: &ConsulOptions) -> Result<Vec<String>, String> {
        let agent = ureq::Agent::config_builder()
            .timeout_global(Some(seconds(self.options.timeout)))
            .http_status_as_error(false)
            .build()
            .new_agent();
        let mut url = format!(
            "{}/v1/health/service/{}?passing",
            consul.url.trim_end_matches('/'),
            consul.service
        );
        if let Some(tag) = &consul.tag {
            url.push_str("&tag=");
            url.extend(tag.bytes().map(|b| {
                if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                    (b as char).to_string()
                } else {
                    format!("%{b:02X}")
                }
            }));
        }
        let mut response = agent.get(&url).call().map_err(|e| format!("{url}: {e}"))?;
        let status = response.status().as_u16();
        let body = response
            .body_mut()
            .with_config()
            .limit(MAX_ANSWER_BYTES)
            .read_to_string()
            .map_err(|e| format!("{url}: {e}"))?;
        if status != 200 {
            let shown: String = body.chars().take(200).collect();
            return Err(format!("{url}: HTTP {status}: {shown}"));
        }
        parse_consul(&body, self.options.scheme, self.check)
    }
}

/// At most [`MAX_ANSWER_BYTES`] of `reader` as text.
fn read_bounded(reader: impl Read) -> Result<String, String> {
    let mut bytes = Vec::new();
    reader
        .take(MAX_ANSWER_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| e.to_string())?;
    if bytes.len() as u64 > MAX_ANSWER_BYTES {
        return Err(format!("larger than {MAX_ANSWER_BYTES} bytes"));
    }
    String::from_utf8(bytes).map_err(|_| "not UTF-8 text".to_owned())
}

/// The URLs of a destinations file.
pub fn parse_lines(text: &str, check: fn(&str) -> Result<(), String>) -> Result<Vec<String>, String> {
    let mut found = Vec::new();
    for (index, line) in text.lines().enumerate() {
        let line = line.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        check(line).map_err(|e| format!("line {}: {e}", index + 1))?;
        if found.len() == MAX_DESTINATIONS {
            return Err(format!("more than {MAX_DESTINATIONS} destinations"));
        }
        if !found.iter().any(|d| d == line) {
            found.push(line.to_owned());
        }
    }
    Ok(found)
}

/// The destinations of an answer of Consul's `/v1/health/service/<name>`.
pub fn parse_consul(body: &str, scheme: Scheme, check: fn(&str) -> Result<(), String>) -> Result<Vec<String>, String> {
    let entries: Vec<serde_json::Value> =
        serde_json::from_str(body).map_err(|e| format!("not Consul's health JSON (an array of entries): {e}"))?;
    let mut found = Vec::new();
    for (index, entry) in entries.iter().take(MAX_DESTINATIONS).enumerate() {
        let service = &entry["Service"];
        let address = service["Address"]
            .as_str()
            .filter(|a| !a.is_empty())
            .or_else(|| entry["Node"]["Address"].as_str())
            .ok_or_else(|| format!("entry {index}: no Service.Address or Node.Address"))?;
        let port = service["Port"]
            .as_u64()
            .filter(|p| (1..=65535).contains(p))
            .ok_or_else(|| format!("entry {index}: no Service.Port in 1-65535"))?;
        let host = if address.contains(':') {
            format!("[{address}]")
        } else {
            address.to_owned()
        };
        let url = format!("{}://{host}:{port}", scheme.as_str());
        check(&url).map_err(|e| format!("entry {index}: {e}"))?;
        if !found.contains(&url) {
            found.push(url);
        }
    }
    Ok(found)
}

/// What a sink's discovery counts (status and self-metrics).
#[derive(Debug, Default)]
pub struct DiscoveryStats {
    pub refreshes: AtomicU64,
    /// Refreshes that failed or found nothing (the last good set was kept).
    pub errors: AtomicU64,
    /// Sets applied (a refresh that found the same set applies nothing).
    pub changes: AtomicU64,
    /// Destinations in the set in use.
    pub destinations: AtomicU64,
    pub last_error: crate::shared::last_error::LastError,
}

/// Makes a found set the one in use, or says why it cannot.
pub type Apply = dyn Fn(&[String]) -> Result<(), String> + Send;

/// Runs `discovery` every interval until `shutdown`, handing each new set to `apply` (which
/// says why it cannot take it, if it cannot). `current` is the set in use at start.
pub fn spawn(
    sink: &str,
    discovery: Discovery,
    mut current: Vec<String>,
    apply: Box<Apply>,
    stats: Arc<DiscoveryStats>,
    shutdown: Arc<AtomicBool>,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    let sink = sink.to_owned();
    std::thread::Builder::new()
        .name(format!("discover-{sink}"))
        .spawn(move || {
            let interval = seconds(discovery.options().interval);
            stats.destinations.store(current.len() as u64, Ordering::Relaxed);
            while !shutdown.load(Ordering::Relaxed) {
                stats.refreshes.fetch_add(1, Ordering::Relaxed);
                match discovery.resolve() {
                    Ok(found) if found == current => stats.last_error.succeeded(),
                    Ok(found) => match apply(&found) {
                        Ok(()) => {
                            info!(sink = %sink, from = %current.join(", "), to = %found.join(", "), "destinations changed");
                            stats.changes.fetch_add(1, Ordering::Relaxed);
                            stats.destinations.store(found.len() as u64, Ordering::Relaxed);
                            stats.last_error.succeeded();
                            current = found;
                        }
                        Err(e) => {
                            stats.errors.fetch_add(1, Ordering::Relaxed);
                            warn!(sink = %sink, "cannot use the discovered destinations, keeping the last: {e}");
                            stats.last_error.set(e);
                        }
                    },
                    Err(e) => {
                        stats.errors.fetch_add(1, Ordering::Relaxed);
                        warn!(sink = %sink, keeping = %current.join(", "), "discovery: {e}; keeping the last good destinations");
                        stats.last_error.set(e.to_string());
                    }
                }
                let until = Instant::now() + interval;
                while !shutdown.load(Ordering::Relaxed) && Instant::now() < until {
                    std::thread::sleep(Duration::from_millis(200).min(interval));
                }
            }
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(url: &str) -> Result<(), String> {
        if url.starts_with("http://") || url.starts_with("https://") {
            Ok(())
        } else {
            Err(format!("{url}: expected https://host:port"))
        }
    }

    #[test]
    fn a_destinations_file_is_read_whole_or_refused_naming_the_line() {
        let text = "# parents\nhttps://10.0.0.1:19999\n\n  https://10.0.0.2:19999  # rack 2\nhttps://10.0.0.1:19999\n";
        assert_eq!(
            parse_lines(text, check).unwrap(),
            ["https://10.0.0.1:19999", "https://10.0.0.2:19999"]
        );
        let e = parse_lines("https://a:1\nftp://b:2\n", check).unwrap_err();
        assert!(e.starts_with("line 2: ftp://b:2"), "{e}");
        let many: String = (0..=MAX_DESTINATIONS).map(|i| format!("https://h{i}:1\n")).collect();
        assert!(parse_lines(&many, check).unwrap_err().contains("more than"));
        assert!(read_bounded(&vec![b'a'; MAX_ANSWER_BYTES as usize + 1][..]).is_err());
        assert!(read_bounded(&[0xff, 0xfe][..]).unwrap_err().contains("UTF-8"));
    }

    #[test]
    fn consuls_answer_gives_the_service_address_or_the_nodes() {
        // As Consul documents /v1/health/service/:service (fields trimmed).
        let body = r#"[
          {"Node": {"Node": "n1", "Address": "10.1.10.12"}, "Service": {"ID": "p1", "Service": "parent", "Address": "", "Port": 19999}, "Checks": []},
          {"Node": {"Node": "n2", "Address": "10.1.10.13"}, "Service": {"ID": "p2", "Service": "parent", "Address": "10.1.20.5", "Port": 19998}, "Checks": []},
          {"Node": {"Node": "n3", "Address": "2001:db8::7"}, "Service": {"ID": "p3", "Service": "parent", "Address": "", "Port": 19999}, "Checks": []}
        ]"#;
        assert_eq!(
            parse_consul(body, Scheme::Http, check).unwrap(),
            [
                "http://10.1.10.12:19999",
                "http://10.1.20.5:19998",
                "http://[2001:db8::7]:19999"
            ]
        );
        assert_eq!(parse_consul("[]", Scheme::Https, check).unwrap(), Vec::<String>::new());
        for bad in [
            "{}",
            "not json",
            r#"[{"Service": {"Port": 1}}]"#,
            r#"[{"Service": {"Address": "a", "Port": 0}}]"#,
            r#"[{"Service": {"Address": "a", "Port": 70000}}]"#,
        ] {
            assert!(parse_consul(bad, Scheme::Https, check).is_err(), "{bad}");
        }
    }

    #[test]
    fn options_name_exactly_one_source() {
        let none = DiscoveryOptions::default();
        assert!(none.validate().unwrap_err().to_string().contains("exactly one"));
        let two = DiscoveryOptions {
            file: Some("a".into()),
            srv: Some("_s._tcp.example".into()),
            ..DiscoveryOptions::default()
        };
        assert!(two.validate().is_err());
        let dns_without_srv = DiscoveryOptions {
            file: Some("a".into()),
            dns_server: Some("127.0.0.1:53".into()),
            ..DiscoveryOptions::default()
        };
        assert!(dns_without_srv.validate().unwrap_err().to_string().contains("srv only"));
        let bad_server = DiscoveryOptions {
            srv: Some("_s._tcp.example".into()),
            dns_server: Some("localhost".into()),
            ..DiscoveryOptions::default()
        };
        assert!(bad_server.validate().unwrap_err().to_string().contains("IP:port"));
        let ok = DiscoveryOptions {
            consul: Some(ConsulOptions {
                url: "http://127.0.0.1:8500".into(),
                service: "parent".into(),
                tag: None,
            }),
            ..DiscoveryOptions::default()
        };
        assert_eq!(ok.validate(), Ok(()));
    }

    #[test]
    fn a_missing_file_or_an_empty_one_is_an_error_that_keeps_the_last_set() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("parents");
        let discovery = Discovery::new(
            DiscoveryOptions {
                file: Some(path.clone()),
                ..DiscoveryOptions::default()
            },
            check,
        );
        assert!(matches!(discovery.resolve(), Err(DiscoveryError::Failed { .. })));
        std::fs::write(&path, "# nothing yet\n").unwrap();
        assert!(matches!(discovery.resolve(), Err(DiscoveryError::Empty(_))));
        std::fs::write(&path, "http://127.0.0.1:1\n").unwrap();
        assert_eq!(discovery.resolve().unwrap(), ["http://127.0.0.1:1"]);
    }
}
