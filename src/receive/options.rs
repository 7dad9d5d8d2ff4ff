//! The `receive:` section: where this node listens for shipped snapshots, who may ship, and the
//! limits that bound what a peer can make it do. Absent = the node listens nowhere.

use super::access::{Access, Grant};
use super::pattern::SimplePattern;
use super::server::Limits;
use crate::shared::option::{check_seconds, seconds, InvalidOption};
use crate::spool::identity::MachineGuid;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;

/// Settings of the receiver (the `receive:` section).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(default, rename_all = "kebab-case", deny_unknown_fields)]
pub struct ReceiveOptions {
    /// Addresses to listen on, each an IP address and a port (`192.0.2.10:19999`,
    /// `[2001:db8::1]:19999`); host names are not taken. None by default: the section needs at
    /// least one.
    pub listen: Vec<String>,
    /// The API keys senders may use (`Authorization: Bearer <key>`), each a UUID (make one with
    /// `uuidgen`) mapped to `{enabled, allow-from}`. The section needs at least one.
    pub api_keys: BTreeMap<String, GrantOptions>,
    /// Rules per origin machine (its `state/machine-guid`), checked after the key's: a machine
    /// without an entry is allowed by its key alone. None by default.
    pub machines: BTreeMap<String, GrantOptions>,
    /// Largest request body, bytes; a larger request is answered 413. Default 67108864 (64 MiB).
    pub max_request_bytes: u64,
    /// Connections served at once; one more is answered 503 and closed. Default 64.
    pub max_connections: usize,
    /// Seconds between two accepted connections (Netdata's "accept a streaming request every N
    /// seconds"); one sooner is answered 503 with Retry-After. Default 0 (no limit).
    pub accept_every: f64,
    /// Seconds a request's head and its body may take to arrive, and the drain time at stop;
    /// a connection lives at most 10 times this. Default 30.
    pub timeout: f64,
    /// Requests are answered 503 (the sender keeps its data and retries) while `incoming/` holds
    /// this many snapshots or more. Default 1000.
    pub queue_size: usize,
    /// Requests are answered 503 while the base directory's filesystem has less free space
    /// (MiB). Default 100.
    pub min_free_space_mb: u64,
    /// Seconds a child (a node this one receives from) may be silent before it is marked
    /// stale: its output is archived (`archive/@<node>/`) like an expired order's and restored
    /// when it is heard from again. 0 = never. Default 86400 (a day).
    pub child_timeout: f64,
    /// TLS on every listen address: `{cert, key}` PEM files and, for client certificates,
    /// `client-ca`. None by default (plain HTTP: use it on a trusted network only).
    pub tls: Option<crate::http::tls::TlsOptions>,
}

/// One `api-keys:` or `machines:` entry.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(default, rename_all = "kebab-case", deny_unknown_fields)]
pub struct GrantOptions {
    /// Whether this key (or machine) may ship at all. Default true.
    pub enabled: bool,
    /// Netdata's simple pattern of peer addresses: space-separated globs with `*`, `!` negates,
    /// the first match decides, no match denies. Default `*` (every address).
    pub allow_from: String,
}

impl Default for GrantOptions {
    fn default() -> Self {
        GrantOptions {
            enabled: true,
            allow_from: "*".into(),
        }
    }
}

impl Default for ReceiveOptions {
    fn default() -> Self {
        ReceiveOptions {
            listen: Vec::new(),
            api_keys: BTreeMap::new(),
            machines: BTreeMap::new(),
            max_request_bytes: 64 << 20,
            max_connections: 64,
            accept_every: 0.0,
            timeout: 30.0,
            queue_size: 1000,
            min_free_space_mb: 100,
            child_timeout: 86_400.0,
            tls: None,
        }
    }
}

fn grant(key: &str, options: &GrantOptions) -> Result<Grant, InvalidOption> {
    let allow_from = SimplePattern::parse(&options.allow_from)
        .map_err(|e| InvalidOption::new(&format!("{key}.allow-from"), e.to_string()))?;
    Ok(Grant {
        enabled: options.enabled,
        allow_from,
    })
}

impl ReceiveOptions {
    /// Checks every option; the error names the first bad key (`receive.<key>`).
    pub fn validate(&self) -> Result<(), InvalidOption> {
        self.addresses()?;
        self.access()?;
        if self.max_request_bytes < 4096 {
            return Err(InvalidOption::new(
                "receive.max-request-bytes",
                "must be at least 4096 (bytes)",
            ));
        }
        if self.max_connections == 0 {
            return Err(InvalidOption::new("receive.max-connections", "must be at least 1"));
        }
        check_seconds("receive.accept-every", self.accept_every, 0.0)?;
        check_seconds("receive.timeout", self.timeout, 0.1)?;
        if self.queue_size == 0 {
            return Err(InvalidOption::new("receive.queue-size", "must be at least 1"));
        }
        if self.child_timeout != 0.0 {
            check_seconds("receive.child-timeout", self.child_timeout, 1.0)?;
        }
        Ok(())
    }

    /// `child-timeout` as a duration (`None` for 0: never stale).
    pub fn child_timeout(&self) -> Option<std::time::Duration> {
        (self.child_timeout > 0.0).then(|| seconds(self.child_timeout))
    }

    /// The listen addresses, parsed.
    pub fn addresses(&self) -> Result<Vec<SocketAddr>, InvalidOption> {
        if self.listen.is_empty() {
            return Err(InvalidOption::new(
                "receive.listen",
                "name at least one address to listen on, e.g. [\"192.0.2.10:19999\"] (or remove the receive: section)",
            ));
        }
        self.listen
            .iter()
            .map(|text| {
                text.parse().map_err(|_| {
                    InvalidOption::new(
                        "receive.listen",
                        format!(
                            "{text:?} is not an IP address and a port (like 192.0.2.10:19999 or [2001:db8::1]:19999)"
                        ),
                    )
                })
            })
            .collect()
    }

    /// The access rules, parsed.
    pub fn access(&self) -> Result<Access, InvalidOption> {
        if self.api_keys.is_empty() {
            return Err(InvalidOption::new(
                "receive.api-keys",
                "name at least one API key (a UUID, from uuidgen): without one nobody may ship here",
            ));
        }
        let mut keys = HashMap::new();
        for (text, options) in &self.api_keys {
            let path = format!("receive.api-keys.{text}");
            let key = uuid::Uuid::try_parse(text)
                .ok()
                .filter(|_| text.len() == 36)
                .ok_or_else(|| {
                    InvalidOption::new(&path, "an API key is a UUID like 11111111-2222-3333-4444-555555555555")
                })?;
            keys.insert(key, grant(&path, options)?);
        }
        let mut machines = HashMap::new();
        for (text, options) in &self.machines {
            let path = format!("receive.machines.{text}");
            let guid: MachineGuid = text
                .parse()
                .map_err(|e: crate::spool::identity::GuidError| InvalidOption::new(&path, e.to_string()))?;
            machines.insert(guid, grant(&path, options)?);
        }
        Ok(Access { keys, machines })
    }

    /// The limits, as the server takes them.
    pub fn limits(&self) -> Limits {
        Limits {
            max_request_bytes: usize::try_from(self.max_request_bytes).unwrap_or(usize::MAX),
            max_connections: self.max_connections,
            accept_every: seconds(self.accept_every),
            timeout: seconds(self.timeout),
            queue_size: self.queue_size,
            min_free_bytes: self.min_free_space_mb.saturating_mul(1 << 20),
            merge_results: crate::spool::snapshot::PingBounds::DEFAULT_MAX_RESULTS,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options(yaml: &str) -> Result<ReceiveOptions, String> {
        let options: ReceiveOptions = yaml_serde::from_str(yaml).map_err(|e| e.to_string())?;
        options.validate().map_err(|e| e.to_string())?;
        Ok(options)
    }

    const GOOD: &str = "listen: [\"127.0.0.1:19999\"]\napi-keys:\n  11111111-2222-3333-4444-555555555555: {allow-from: \"127.* !*\"}\n";

    #[test]
    fn a_good_section_gives_addresses_access_and_limits() {
        let o = options(GOOD).unwrap();
        assert_eq!(
            o.addresses().unwrap(),
            vec!["127.0.0.1:19999".parse::<SocketAddr>().unwrap()]
        );
        let access = o.access().unwrap();
        assert_eq!(access.keys.len(), 1);
        assert_eq!(o.limits().max_request_bytes, 64 << 20);
        assert_eq!(o.limits().timeout, std::time::Duration::from_secs(30));
    }

    #[test]
    fn every_mistake_names_its_key() {
        let key = "11111111-2222-3333-4444-555555555555";
        let cases = [
            ("api-keys: {}\n".to_string(), "receive.listen"),
            (
                format!("listen: [\"localhost:1\"]\napi-keys: {{{key}: {{}}}}\n"),
                "is not an IP address",
            ),
            (
                "listen: [\"127.0.0.1:1\"]\n".to_string(),
                "receive.api-keys: name at least one",
            ),
            (
                "listen: [\"127.0.0.1:1\"]\napi-keys: {nope: {}}\n".to_string(),
                "receive.api-keys.nope",
            ),
            (
                format!("listen: [\"127.0.0.1:1\"]\napi-keys: {{{key}: {{allow-from: \"\"}}}}\n"),
                "allow-from",
            ),
            (
                format!("listen: [\"127.0.0.1:1\"]\napi-keys: {{{key}: {{}}}}\nmachines: {{x: {{}}}}\n"),
                "receive.machines.x",
            ),
            (format!("{GOOD}max-request-bytes: 10\n"), "receive.max-request-bytes"),
            (format!("{GOOD}max-connections: 0\n"), "receive.max-connections"),
            (format!("{GOOD}timeout: 0\n"), "receive.timeout"),
            (format!("{GOOD}queue-size: 0\n"), "receive.queue-size"),
            (format!("{GOOD}tls: {{}}\n"), "tls: missing field `cert`"),
            (format!("{GOOD}tls: {{cert: a, key: b, ca: c}}\n"), "unknown field `ca`"),
            (format!("{GOOD}child-timeout: 0.5\n"), "receive.child-timeout"),
        ];
        for (yaml, expected) in cases {
            let e = options(&yaml).unwrap_err();
            assert!(e.contains(expected), "{yaml:?}: {e}");
        }
    }
}
