//! The order model: one YAML file in `orders/`, validated into an [`Order`].
//!
//! [`parse_order`] turns the text of one order (plus the old interface's `telegraf/<id>` file)
//! into an [`Order`] or an [`OrderError`] naming the offending key. Keys are pingmachine's (see
//! `reference/pingmachine.md`). Rules:
//! - unknown keys and sections of other probes are warnings, never errors;
//! - wrong types, out-of-range numbers (`step` 1..=[`MAX_STEP`], `pings` 1..=[`MAX_PINGS`]),
//!   unknown probes, missing required keys or sections are errors;
//! - hosts of `fping`/`tcp` orders are resolved here (an IP literal as is, a name with the system
//!   resolver, first address); a name that does not resolve is [`OrderError::Unresolvable`], which
//!   the order book retries ("not yet", not "bad");
//! - hostile YAML (alias bombs of any shape, deep nesting, duplicate keys) gives an error, never a
//!   panic or a memory blow-up.
//!
//! This module reads no files: the order book owns `orders/` and passes text in.

use crate::orders::OrderOptions;
use crate::measurement::{OrderId, RrdTemplate, TelegrafMeta};
use crate::yaml_expansion::check_expansion;
use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use yaml_serde::Value;

/// A valid order: what to measure, how often, and where the results go.
#[derive(Clone, Debug, PartialEq)]
pub struct Order {
    pub id: OrderId,
    pub user: String,
    pub task: Option<String>,
    /// Seconds between measurements (>= 1).
    pub step: u32,
    /// Pings per step (>= 1).
    pub pings: u32,
    pub rrd_template: RrdTemplate,
    pub probe: ProbeSpec,
    /// Forwarding metadata: the order's `telegraf:` map, its top-level `measurement_name`/`tags`,
    /// or the old interface's `telegraf/<id>` file.
    pub telegraf: Option<TelegrafMeta>,
}

/// The probe an order asks for, with that probe's section of the order.
#[derive(Clone, Debug, PartialEq)]
pub enum ProbeSpec {
    Fping(FpingSpec),
    Httping(HttpingSpec),
    Tcp(TcpSpec),
    /// `exec`, and the SCION tools `sping` / `pping`, which run as commands.
    Exec(ExecSpec),
}

impl ProbeSpec {
    /// An `fping` spec for an address with no options (what the probe tests measure).
    #[cfg(test)]
    pub(crate) fn fping_to(address: IpAddr) -> ProbeSpec {
        ProbeSpec::Fping(FpingSpec {
            host: address.to_string(),
            address,
            source_ip: None,
            interface: None,
            interval_ms: None,
        })
    }
}

/// `fping:` section: ICMP echo to one host (measured by the native engine or the fping binary).
#[derive(Clone, Debug, PartialEq)]
pub struct FpingSpec {
    pub host: String,
    /// `host` resolved (a literal, or the first address the resolver returned).
    pub address: IpAddr,
    pub source_ip: Option<IpAddr>,
    pub interface: Option<String>,
    /// Milliseconds between pings to the same host (fping `-p`); computed from step when absent.
    pub interval_ms: Option<u64>,
}

/// `httping:` section: HTTP(S) request time.
#[derive(Clone, Debug, PartialEq)]
pub struct HttpingSpec {
    pub url: String,
    pub user_agent: Option<String>,
    pub proxy: Option<String>,
    /// Status codes that count as a lost ping.
    pub http_codes_as_failure: Vec<u16>,
    /// Seconds between requests; computed from step when absent.
    pub interval: Option<f64>,
}

/// `tcp:` section: TCP connect time to host:port.
#[derive(Clone, Debug, PartialEq)]
pub struct TcpSpec {
    pub host: String,
    pub port: u16,
    pub address: SocketAddr,
    pub source_ip: Option<IpAddr>,
    pub interval_ms: Option<u64>,
}

/// Which section an exec-style order came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ExecKind {
    Exec,
    Sping,
    Pping,
}

/// `exec:` (or `sping:`/`pping:`) section: a command run once per step that prints one
/// `time=<x> ms` line per answered ping.
#[derive(Clone, Debug, PartialEq)]
pub struct ExecSpec {
    pub kind: ExecKind,
    /// argv; placeholders `{host}`, `{pings}`, `{interval_ms}`, `{source_ip}`, `{interface}` are
    /// substituted per run. For sping/pping the command comes from the config.
    pub command: Vec<String>,
    pub host: Option<String>,
    pub source_ip: Option<IpAddr>,
    pub interface: Option<String>,
    /// Extra arguments appended to the command (sping/pping `flags:`), split on whitespace.
    pub flags: Vec<String>,
    pub timeout_ms: Option<u64>,
}

// ---------------------------------------------------------------------------------------------
// Parsing and validation
// ---------------------------------------------------------------------------------------------

/// Largest order (and `telegraf/<id>`) file accepted, in bytes. Orders are a few hundred bytes;
/// the limit keeps a wrong file dropped into `orders/` from costing memory or parse time.
pub const MAX_ORDER_BYTES: u64 = 64 * 1024;
/// Largest `step`: one day. A longer step would leave a one-sample-per-day RRD (heartbeat 2 days).
pub const MAX_STEP: u64 = 86_400;
/// Most `pings` per step: every ping is one RRD data source, and 1000 is already far beyond what
/// Smokeping-style graphs use (usually 20).
pub const MAX_PINGS: u64 = 1_000;
/// Largest `interval` (milliseconds) between two pings to the same target: one hour.
pub const MAX_INTERVAL_MS: u64 = 3_600_000;

/// The probes an order may name in `probe:`.
pub const PROBE_NAMES: [&str; 6] = ["fping", "httping", "tcp", "exec", "sping", "pping"];

/// A valid order plus what was odd but harmless about it (unknown keys, ignored sections).
#[derive(Clone, Debug, PartialEq)]
pub struct ParsedOrder {
    pub order: Order,
    /// One message per oddity, each naming the key.
    pub warnings: Vec<String>,
}

/// Why an order file does not give an order.
///
/// Every variant except [`OrderError::Unresolvable`] means the file is wrong and stays invalid until
/// it changes; `Unresolvable` means "not yet": the order book retries it on every rescan.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum OrderError {
    #[error("order {id}: cannot read {path}: {message}")]
    Read {
        id: OrderId,
        path: PathBuf,
        message: String,
    },
    #[error("order {id}: file {path} is too large (more than {limit} bytes)")]
    TooLarge { id: OrderId, path: PathBuf, limit: u64 },
    #[error("order {id}: {path} is not a regular file")]
    NotRegularFile { id: OrderId, path: PathBuf },
    #[error("order {id}: path escapes orders/ through a symlink ({path} -> {target})")]
    SymlinkEscape {
        id: OrderId,
        path: PathBuf,
        target: PathBuf,
    },
    #[error("order {id}: symlink {path} cannot be followed: {message}")]
    SymlinkBroken {
        id: OrderId,
        path: PathBuf,
        message: String,
    },
    #[error("order {id}: {path} is not UTF-8 text (binary file?)")]
    NotUtf8 { id: OrderId, path: PathBuf },
    #[error("order {id}: the order is empty")]
    Empty { id: OrderId },
    #[error("order {id}: invalid YAML: {message}")]
    Yaml { id: OrderId, message: String },
    #[error("order {id}: the order must be a map of keys, found {found}")]
    NotAMap { id: OrderId, found: &'static str },
    #[error("order {id}: {key}: {message}")]
    Invalid { id: OrderId, key: String, message: String },
    #[error("order {id}: host {host:?} does not resolve: {message}")]
    Unresolvable { id: OrderId, host: String, message: String },
}

impl OrderError {
    /// True for errors that may go away without the file changing (name resolution).
    pub fn is_retryable(&self) -> bool {
        matches!(self, OrderError::Unresolvable { .. })
    }
}

/// Parses and validates order `id` from its YAML `text`.
///
/// `telegraf_file` is the content of the old interface's `telegraf/<id>` file, if there is one; it
/// is used only when the order itself names no `measurement_name`. Host names are resolved with the
/// system resolver (first address); an IP literal is used as is.
pub fn parse_order(
    id: &OrderId,
    text: &str,
    telegraf_file: Option<&str>,
    options: &OrderOptions,
) -> Result<ParsedOrder, OrderError> {
    parse_order_with(id, text, telegraf_file, options, &resolve_host)
}

/// How a host name becomes an address; the order book substitutes one that remembers the last
/// known address of an order whose host stopped resolving (and `tests/fuzz_parsers.rs` one that
/// never asks a resolver).
pub type HostResolver<'r> = dyn Fn(&str) -> Result<IpAddr, String> + 'r;

/// Resolves `host` with the system resolver: an IP literal as is, else the first address.
pub fn resolve_host(host: &str) -> Result<IpAddr, String> {
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Ok(ip);
    }
    let mut addresses = (host, 0u16).to_socket_addrs().map_err(|e| e.to_string())?;
    addresses
        .next()
        .map(|address| address.ip())
        .ok_or_else(|| "the resolver returned no address".to_string())
}

/// [`parse_order`] with an explicit resolver.
pub fn parse_order_with(
    id: &OrderId,
    text: &str,
    telegraf_file: Option<&str>,
    options: &OrderOptions,
    resolver: &HostResolver<'_>,
) -> Result<ParsedOrder, OrderError> {
    let document = load_map(text).map_err(|e| e.for_order(id))?;
    let mut warnings = Vec::new();
    let mut parser = OrderParser {
        options,
        resolver,
        warnings: &mut warnings,
    };
    let order = parser.order(id, document, telegraf_file).map_err(|e| e.for_order(id))?;
    Ok(ParsedOrder { order, warnings })
}

/// A parse problem before it is attached to an order id.
#[derive(Debug)]
enum Problem {
    Empty,
    Yaml(String),
    NotAMap(&'static str),
    Key { key: String, message: String },
    Unresolvable { host: String, message: String },
}

impl Problem {
    fn key(key: &str, message: impl Into<String>) -> Problem {
        Problem::Key {
            key: key.to_string(),
            message: message.into(),
        }
    }

    fn for_order(self, id: &OrderId) -> OrderError {
        let id = id.clone();
        match self {
            Problem::Empty => OrderError::Empty { id },
            Problem::Yaml(message) => OrderError::Yaml { id, message },
            Problem::NotAMap(found) => OrderError::NotAMap { id, found },
            Problem::Key { key, message } => OrderError::Invalid { id, key, message },
            Problem::Unresolvable { host, message } => OrderError::Unresolvable { id, host, message },
        }
    }
}

/// Parses YAML text that must hold one map. yaml_serde rejects duplicate keys and limits nesting
/// (128 levels) and alias jumps (100 per event parsed); [`check_expansion`] first refuses a
/// document whose aliases expand to more nodes than its length plus
/// [`crate::yaml_expansion::MAX_ALIAS_NODES`] (one alias replaying a large node many times), so
/// hostile input gives an error, not a crash or a memory blow-up.
fn load_map(text: &str) -> Result<yaml_serde::Mapping, Problem> {
    check_expansion(text).map_err(Problem::Yaml)?;
    let mut value: Value = yaml_serde::from_str(text).map_err(|e| Problem::Yaml(e.to_string()))?;
    value
        .apply_merge()
        .map_err(|e| Problem::Yaml(format!("merge key `<<`: {e}")))?;
    match value {
        Value::Mapping(map) => Ok(map),
        Value::Null => Err(Problem::Empty),
        other => Err(Problem::NotAMap(kind_of(&other))),
    }
}

fn kind_of(value: &Value) -> &'static str {
    match value {
        Value::Null => "nothing",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Sequence(_) => "a list",
        Value::Mapping(_) => "a map",
        Value::Tagged(_) => "a tagged value",
    }
}

/// One YAML map read key by key. Keys never taken are unknown and become warnings.
struct Fields {
    /// `""` for the top level, `"fping."` for a section: prefixes key names in messages.
    prefix: String,
    entries: BTreeMap<String, Value>,
}

impl Fields {
    fn new(prefix: &str, map: yaml_serde::Mapping) -> Result<Fields, Problem> {
        let mut entries = BTreeMap::new();
        for (key, value) in map {
            match key {
                Value::String(key) => {
                    entries.insert(key, value);
                }
                other => {
                    return Err(Problem::key(
                        prefix.trim_end_matches('.'),
                        format!("keys must be strings, found {}", kind_of(&other)),
                    ))
                }
            }
        }
        Ok(Fields {
            prefix: prefix.to_string(),
            entries,
        })
    }

    fn name(&self, key: &str) -> String {
        format!("{}{key}", self.prefix)
    }

    /// The value of `key`; an explicit null counts as absent.
    fn take(&mut self, key: &str) -> Option<Value> {
        self.entries.remove(key).filter(|value| !value.is_null())
    }

    fn required(&mut self, key: &str) -> Result<Value, Problem> {
        self.take(key)
            .ok_or_else(|| Problem::key(&self.name(key), "required key missing"))
    }

    fn string(&mut self, key: &str) -> Result<Option<String>, Problem> {
        let name = self.name(key);
        self.take(key).map(|v| to_text(&name, v)).transpose()
    }

    fn required_string(&mut self, key: &str) -> Result<String, Problem> {
        let name = self.name(key);
        to_text(&name, self.required(key)?)
    }

    fn integer(&mut self, key: &str, min: u64, max: u64) -> Result<Option<u64>, Problem> {
        let name = self.name(key);
        self.take(key).map(|v| to_integer(&name, &v, min, max)).transpose()
    }

    fn required_integer(&mut self, key: &str, min: u64, max: u64) -> Result<u64, Problem> {
        let name = self.name(key);
        to_integer(&name, &self.required(key)?, min, max)
    }

    fn ip(&mut self, key: &str) -> Result<Option<IpAddr>, Problem> {
        let name = self.name(key);
        match self.string(key)? {
            None => Ok(None),
            Some(text) => text
                .parse()
                .map(Some)
                .map_err(|_| Problem::key(&name, format!("{text:?} is not an IP address"))),
        }
    }

    fn interface(&mut self, key: &str) -> Result<Option<String>, Problem> {
        let name = self.name(key);
        let value = self.string(key)?;
        if let Some(interface) = &value {
            let valid = !interface.is_empty()
                && interface.len() <= 15
                && !interface.contains(|c: char| c == '/' || c.is_whitespace() || c.is_control());
            if !valid {
                return Err(Problem::key(
                    &name,
                    format!("{interface:?} is not a network interface name"),
                ));
            }
        }
        Ok(value)
    }

    /// A host name or address: checked for shape, not resolved.
    fn host(&mut self, key: &str) -> Result<Option<String>, Problem> {
        let name = self.name(key);
        let host = self.string(key)?;
        if let Some(host) = &host {
            check_host_shape(&name, host)?;
        }
        Ok(host)
    }

    fn required_host(&mut self, key: &str) -> Result<String, Problem> {
        let name = self.name(key);
        let host = self.required_string(key)?;
        check_host_shape(&name, &host)?;
        Ok(host)
    }

    /// Warns about every key never taken.
    fn finish(self, warnings: &mut Vec<String>) {
        for key in self.entries.keys() {
            warnings.push(format!("unknown key `{}{key}` ignored", self.prefix));
        }
    }
}

fn check_host_shape(name: &str, host: &str) -> Result<(), Problem> {
    if host.is_empty() || host.len() > 253 {
        return Err(Problem::key(name, "must be a host name or IP address"));
    }
    if host.starts_with('-') || host.contains(|c: char| c.is_whitespace() || c.is_control()) {
        return Err(Problem::key(name, format!("{host:?} is not a host name or IP address")));
    }
    Ok(())
}

/// A scalar as text: strings as they are, numbers in their YAML spelling. Lists, maps, booleans
/// and tagged values are wrong types.
fn to_text(name: &str, value: Value) -> Result<String, Problem> {
    match value {
        Value::String(text) => Ok(text),
        Value::Number(number) => Ok(number.to_string()),
        other => Err(Problem::key(
            name,
            format!("must be a string, found {}", kind_of(&other)),
        )),
    }
}

/// An integer in `min..=max`; a string holding one is accepted as pingmachine (Perl) did.
fn to_integer(name: &str, value: &Value, min: u64, max: u64) -> Result<u64, Problem> {
    let number = match value {
        Value::Number(n) => match (n.as_u64(), n.as_i64()) {
            (Some(n), _) => n,
            (None, Some(negative)) => {
                return Err(Problem::key(
                    name,
                    format!("{negative} is negative, must be at least {min}"),
                ))
            }
            _ => return Err(Problem::key(name, format!("{n} is not an integer"))),
        },
        Value::String(text) => text
            .trim()
            .parse::<u64>()
            .map_err(|_| Problem::key(name, format!("{text:?} is not a non-negative integer")))?,
        other => {
            return Err(Problem::key(
                name,
                format!("must be an integer, found {}", kind_of(other)),
            ))
        }
    };
    if number < min || number > max {
        return Err(Problem::key(name, format!("{number} is out of range {min}..={max}")));
    }
    Ok(number)
}

/// A list of words: a YAML list of scalars, or one string split on whitespace.
fn to_words(name: &str, value: Value) -> Result<Vec<String>, Problem> {
    match value {
        Value::Sequence(items) => items
            .into_iter()
            .enumerate()
            .map(|(i, item)| to_text(&format!("{name}[{i}]"), item))
            .collect(),
        Value::String(text) => Ok(text.split_whitespace().map(String::from).collect()),
        other => Err(Problem::key(
            name,
            format!("must be a list or a string, found {}", kind_of(&other)),
        )),
    }
}

/// Turns one YAML document into an [`Order`], collecting warnings.
struct OrderParser<'p, 'r> {
    options: &'p OrderOptions,
    resolver: &'p HostResolver<'r>,
    warnings: &'p mut Vec<String>,
}

impl OrderParser<'_, '_> {
    fn order(
        &mut self,
        id: &OrderId,
        document: yaml_serde::Mapping,
        telegraf_file: Option<&str>,
    ) -> Result<Order, Problem> {
        let mut fields = Fields::new("", document)?;
        let user = fields.required_string("user")?;
        let task = fields.string("task")?;
        let step = fields.required_integer("step", 1, MAX_STEP)? as u32;
        let pings = fields.required_integer("pings", 1, MAX_PINGS)? as u32;
        let probe_name = fields.required_string("probe")?;
        if !PROBE_NAMES.contains(&probe_name.as_str()) {
            return Err(Problem::key(
                "probe",
                format!("unknown probe {probe_name:?} (known: {})", PROBE_NAMES.join(", ")),
            ));
        }
        let rrd_template = rrd_template(fields.string("rrd_template")?)?;
        let telegraf = self.telegraf(id, &mut fields, telegraf_file)?;
        let section = match fields.take(&probe_name) {
            Some(Value::Mapping(map)) => Fields::new(&format!("{probe_name}."), map)?,
            Some(other) => {
                return Err(Problem::key(
                    &probe_name,
                    format!("must be a map, found {}", kind_of(&other)),
                ))
            }
            None => {
                return Err(Problem::key(
                    &probe_name,
                    format!("section missing (required by `probe: {probe_name}`)"),
                ))
            }
        };
        let probe = self.probe(&probe_name, section)?;
        for other in PROBE_NAMES {
            if fields.take(other).is_some() {
                self.warnings
                    .push(format!("section `{other}` ignored: the order's probe is {probe_name}"));
            }
        }
        fields.finish(self.warnings);
        Ok(Order {
            id: id.clone(),
            user,
            task,
            step,
            pings,
            rrd_template,
            probe,
            telegraf,
        })
    }

    /// Forwarding metadata: `telegraf:` map, else top-level `measurement_name`/`tags`, else the
    /// old interface's `telegraf/<id>` file.
    fn telegraf(
        &mut self,
        id: &OrderId,
        fields: &mut Fields,
        telegraf_file: Option<&str>,
    ) -> Result<Option<TelegrafMeta>, Problem> {
        let section = match fields.take("telegraf") {
            Some(Value::Mapping(map)) => {
                let meta = telegraf_meta(Fields::new("telegraf.", map)?, self.warnings)?;
                Some(meta)
            }
            Some(other) => {
                return Err(Problem::key(
                    "telegraf",
                    format!("must be a map, found {}", kind_of(&other)),
                ))
            }
            None => None,
        };
        let top_name = fields.string("measurement_name")?;
        let top_tags = fields.take("tags");
        let top_level = match (top_name, top_tags) {
            (Some(name), tags) => Some(TelegrafMeta {
                measurement_name: check_measurement_name("measurement_name", name)?,
                tags: tags.map(|t| to_tags("tags", t)).transpose()?.unwrap_or_default(),
            }),
            (None, Some(_)) => {
                self.warnings
                    .push("key `tags` ignored: no `measurement_name` next to it".to_string());
                None
            }
            (None, None) => None,
        };
        if section.is_some() && top_level.is_some() {
            self.warnings
                .push("top-level `measurement_name`/`tags` ignored: the `telegraf` section wins".to_string());
        }
        if let Some(meta) = section.or(top_level) {
            return Ok(Some(meta));
        }
        match telegraf_file {
            Some(text) => self.telegraf_file(id, text).map(Some),
            None => Ok(None),
        }
    }

    /// The old interface's `telegraf/<id>` file: a map with measurement_name and tags.
    fn telegraf_file(&mut self, id: &OrderId, text: &str) -> Result<TelegrafMeta, Problem> {
        let prefix = format!("telegraf/{id} ");
        let map = load_map(text).map_err(|problem| match problem {
            Problem::Empty => Problem::key(prefix.trim_end(), "file is empty"),
            Problem::Yaml(message) => Problem::key(prefix.trim_end(), message),
            Problem::NotAMap(found) => Problem::key(prefix.trim_end(), format!("must be a map, found {found}")),
            other => other,
        })?;
        telegraf_meta(Fields::new(&prefix, map)?, self.warnings)
    }

    fn probe(&mut self, probe_name: &str, section: Fields) -> Result<ProbeSpec, Problem> {
        match probe_name {
            "fping" => self.fping(section).map(ProbeSpec::Fping),
            "httping" => self.httping(section).map(ProbeSpec::Httping),
            "tcp" => self.tcp(section).map(ProbeSpec::Tcp),
            "exec" => self.exec(ExecKind::Exec, section).map(ProbeSpec::Exec),
            "sping" => self.exec(ExecKind::Sping, section).map(ProbeSpec::Exec),
            _ => self.exec(ExecKind::Pping, section).map(ProbeSpec::Exec),
        }
    }

    fn resolve(&self, host: &str) -> Result<IpAddr, Problem> {
        (self.resolver)(host).map_err(|message| Problem::Unresolvable {
            host: host.to_string(),
            message,
        })
    }

    fn fping(&mut self, mut fields: Fields) -> Result<FpingSpec, Problem> {
        let host = fields.required_host("host")?;
        let source_ip = fields.ip("source_ip")?;
        let interface = fields.interface("interface")?;
        let interval_ms = fields.integer("interval", 1, MAX_INTERVAL_MS)?;
        fields.finish(self.warnings);
        let address = self.resolve(&host)?;
        Ok(FpingSpec {
            host,
            address,
            source_ip,
            interface,
            interval_ms,
        })
    }

    fn httping(&mut self, mut fields: Fields) -> Result<HttpingSpec, Problem> {
        let url = fields.required_string("url")?;
        check_http_url("httping.url", &url)?;
        let user_agent = fields.string("user_agent")?;
        let proxy = fields.string("proxy")?;
        if let Some(proxy) = &proxy {
            check_proxy("httping.proxy", proxy)?;
        }
        let http_codes_as_failure = fields
            .take("http_codes_as_failure")
            .map(|v| to_status_codes("httping.http_codes_as_failure", v))
            .transpose()?
            .unwrap_or_default();
        let interval = fields
            .take("interval")
            .map(|v| to_seconds("httping.interval", &v))
            .transpose()?;
        fields.finish(self.warnings);
        Ok(HttpingSpec {
            url,
            user_agent,
            proxy,
            http_codes_as_failure,
            interval,
        })
    }

    fn tcp(&mut self, mut fields: Fields) -> Result<TcpSpec, Problem> {
        let host = fields.required_host("host")?;
        let port = fields.required_integer("port", 1, u64::from(u16::MAX))? as u16;
        let source_ip = fields.ip("source_ip")?;
        let interval_ms = fields.integer("interval", 1, MAX_INTERVAL_MS)?;
        fields.finish(self.warnings);
        let address = SocketAddr::new(self.resolve(&host)?, port);
        Ok(TcpSpec {
            host,
            port,
            address,
            source_ip,
            interval_ms,
        })
    }

    /// `exec:`, `sping:` and `pping:`. Hosts are not resolved here: the command does that (SCION
    /// addresses are not DNS names).
    fn exec(&mut self, kind: ExecKind, mut fields: Fields) -> Result<ExecSpec, Problem> {
        let section = fields.prefix.trim_end_matches('.').to_string();
        let command = match kind {
            ExecKind::Exec => {
                let name = fields.name("command");
                to_words(&name, fields.required("command")?)?
            }
            ExecKind::Sping => self.options.sping_command.clone(),
            ExecKind::Pping => self.options.pping_command.clone(),
        };
        if command.is_empty() {
            return Err(Problem::key(&format!("{section}.command"), "names no program"));
        }
        let host = match kind {
            ExecKind::Exec => fields.host("host")?,
            _ => Some(fields.required_host("host")?),
        };
        let source_ip = fields.ip("source_ip")?;
        let interface = fields.interface("interface")?;
        let flags = match kind {
            ExecKind::Exec => Vec::new(),
            _ => {
                let name = fields.name("flags");
                fields
                    .take("flags")
                    .map(|v| to_words(&name, v))
                    .transpose()?
                    .unwrap_or_default()
            }
        };
        let timeout_ms = fields.integer("timeout", 1, MAX_INTERVAL_MS)?;
        fields.finish(self.warnings);
        let spec = ExecSpec {
            kind,
            command,
            host,
            source_ip,
            interface,
            flags,
            timeout_ms,
        };
        check_placeholders(&section, &spec)?;
        Ok(spec)
    }
}

fn rrd_template(name: Option<String>) -> Result<RrdTemplate, Problem> {
    match name.as_deref() {
        None | Some("smokeping") => Ok(RrdTemplate::Smokeping),
        Some("norrd") => Ok(RrdTemplate::Norrd),
        Some(other) => Err(Problem::key(
            "rrd_template",
            format!("unknown template {other:?} (known: smokeping, norrd)"),
        )),
    }
}

fn telegraf_meta(mut fields: Fields, warnings: &mut Vec<String>) -> Result<TelegrafMeta, Problem> {
    let name_key = fields.name("measurement_name");
    let tags_key = fields.name("tags");
    let measurement_name = check_measurement_name(&name_key, fields.required_string("measurement_name")?)?;
    let tags = fields
        .take("tags")
        .map(|t| to_tags(&tags_key, t))
        .transpose()?
        .unwrap_or_default();
    fields.finish(warnings);
    Ok(TelegrafMeta { measurement_name, tags })
}

fn check_measurement_name(name: &str, value: String) -> Result<String, Problem> {
    if value.is_empty() || value.contains(|c: char| c.is_control()) {
        return Err(Problem::key(
            name,
            "must be a non-empty name without control characters",
        ));
    }
    Ok(value)
}

/// Tags: a map of names to scalars; numbers and booleans are stringified (YAML reads
/// `tunnel_id: 12458` as a number).
fn to_tags(name: &str, value: Value) -> Result<BTreeMap<String, String>, Problem> {
    let map = match value {
        Value::Mapping(map) => map,
        other => return Err(Problem::key(name, format!("must be a map, found {}", kind_of(&other)))),
    };
    let mut tags = BTreeMap::new();
    for (key, value) in map {
        let key = match key {
            Value::String(key) if !key.is_empty() => key,
            Value::Number(number) => number.to_string(),
            other => {
                return Err(Problem::key(
                    name,
                    format!("tag names must be strings, found {}", kind_of(&other)),
                ))
            }
        };
        let key_name = format!("{name}.{key}");
        let value = match value {
            Value::Bool(flag) => flag.to_string(),
            other => to_text(&key_name, other)?,
        };
        if value.is_empty() || format!("{key}{value}").contains(|c: char| c.is_control()) {
            return Err(Problem::key(
                &key_name,
                "tag names and values must be non-empty, without control characters",
            ));
        }
        tags.insert(key, value);
    }
    Ok(tags)
}

fn check_http_url(name: &str, url: &str) -> Result<(), Problem> {
    let lower = url.to_ascii_lowercase();
    let rest = lower.strip_prefix("http://").or_else(|| lower.strip_prefix("https://"));
    match rest {
        Some(rest)
            if !rest.is_empty()
                && !rest.starts_with('/')
                && !url.contains(|c: char| c.is_whitespace() || c.is_control()) =>
        {
            Ok(())
        }
        _ => Err(Problem::key(
            name,
            format!("{url:?} is not an http:// or https:// URL with a host"),
        )),
    }
}

fn check_proxy(name: &str, proxy: &str) -> Result<(), Problem> {
    if proxy.is_empty() || proxy.contains(|c: char| c.is_whitespace() || c.is_control()) {
        return Err(Problem::key(name, format!("{proxy:?} is not a proxy address")));
    }
    Ok(())
}

/// Status codes: pingmachine's comma-separated string (`403,407,503`), one number, or a list.
fn to_status_codes(name: &str, value: Value) -> Result<Vec<u16>, Problem> {
    let words: Vec<String> = match value {
        Value::String(text) => text
            .split(',')
            .map(|part| part.trim().to_string())
            .filter(|part| !part.is_empty())
            .collect(),
        Value::Number(number) => vec![number.to_string()],
        Value::Sequence(items) => items
            .into_iter()
            .enumerate()
            .map(|(i, item)| to_text(&format!("{name}[{i}]"), item))
            .collect::<Result<_, _>>()?,
        other => {
            return Err(Problem::key(
                name,
                format!("must be a comma-separated string or a list, found {}", kind_of(&other)),
            ))
        }
    };
    words
        .iter()
        .map(|word| match word.parse::<u16>() {
            Ok(code) if (100..=599).contains(&code) => Ok(code),
            _ => Err(Problem::key(
                name,
                format!("{word:?} is not an HTTP status code (100..=599)"),
            )),
        })
        .collect()
}

/// Seconds (integer or fraction), more than 0 and at most [`MAX_INTERVAL_MS`].
fn to_seconds(name: &str, value: &Value) -> Result<f64, Problem> {
    let seconds = match value {
        Value::Number(number) => number.as_f64(),
        Value::String(text) => text.trim().parse::<f64>().ok(),
        _ => None,
    };
    match seconds {
        Some(s) if s.is_finite() && s > 0.0 && s <= (MAX_INTERVAL_MS / 1000) as f64 => Ok(s),
        _ => Err(Problem::key(
            name,
            format!("must be a number of seconds in (0, {}]", MAX_INTERVAL_MS / 1000),
        )),
    }
}

/// A command that uses `{host}`, `{source_ip}` or `{interface}` needs that key in its section.
fn check_placeholders(section: &str, spec: &ExecSpec) -> Result<(), Problem> {
    let needs = |placeholder: &str| {
        spec.command
            .iter()
            .chain(&spec.flags)
            .any(|word| word.contains(placeholder))
    };
    let present = [
        ("{host}", "host", spec.host.is_some()),
        ("{source_ip}", "source_ip", spec.source_ip.is_some()),
        ("{interface}", "interface", spec.interface.is_some()),
    ];
    for (placeholder, key, is_present) in present {
        if needs(placeholder) && !is_present {
            return Err(Problem::key(
                &format!("{section}.{key}"),
                format!("required: the command uses {placeholder}"),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id() -> OrderId {
        OrderId::new("app1/target1").unwrap()
    }

    fn parse(text: &str) -> Result<ParsedOrder, OrderError> {
        parse_order(&id(), text, None, &OrderOptions::default())
    }

    /// The key named by an `Invalid` error (panics on any other outcome).
    fn invalid_key(text: &str) -> String {
        match parse(text) {
            Err(OrderError::Invalid { key, .. }) => key,
            other => panic!("expected an invalid-key error for {text:?}, got {other:?}"),
        }
    }

    const README_ORDER: &str =
        "user: tmon\ntask: tun_eth0_4061\nstep: 300\npings: 20\nprobe: fping\nfping:\n    host: 62.179.116.250\n";
    const README_TELEGRAF: &str = "measurement_name: tunnel\ntags:\n    tunnel_id: 12458\n    remote_host: 5292\n    interface: eth2\n    remote_interface: eth2\n";

    fn base(probe: &str, section: &str) -> String {
        format!("user: tmon\nstep: 20\npings: 3\nprobe: {probe}\n{section}")
    }

    #[test]
    fn readme_example_order_parses() {
        let parsed = parse(README_ORDER).unwrap();
        assert!(parsed.warnings.is_empty(), "{:?}", parsed.warnings);
        let order = parsed.order;
        assert_eq!(order.user, "tmon");
        assert_eq!(order.task.as_deref(), Some("tun_eth0_4061"));
        assert_eq!((order.step, order.pings), (300, 20));
        assert_eq!(order.rrd_template, RrdTemplate::Smokeping);
        assert_eq!(order.telegraf, None);
        match order.probe {
            ProbeSpec::Fping(f) => {
                assert_eq!(f.host, "62.179.116.250");
                assert_eq!(f.address, "62.179.116.250".parse::<IpAddr>().unwrap());
            }
            other => panic!("not fping: {other:?}"),
        }
    }

    #[test]
    fn readme_top_level_measurement_name_and_numeric_tags_are_forwarding_metadata() {
        let parsed = parse(&format!("{README_ORDER}{README_TELEGRAF}")).unwrap();
        assert!(parsed.warnings.is_empty(), "{:?}", parsed.warnings);
        let meta = parsed.order.telegraf.unwrap();
        assert_eq!(meta.measurement_name, "tunnel");
        assert_eq!(meta.tags["tunnel_id"], "12458");
        assert_eq!(meta.tags["remote_host"], "5292");
        assert_eq!(meta.tags["interface"], "eth2");
        assert_eq!(meta.tags.len(), 4);
    }

    #[test]
    fn readme_old_interface_telegraf_file_attaches_metadata() {
        let parsed = parse_order(&id(), README_ORDER, Some(README_TELEGRAF), &OrderOptions::default()).unwrap();
        let meta = parsed.order.telegraf.unwrap();
        assert_eq!(meta.measurement_name, "tunnel");
        assert_eq!(meta.tags["tunnel_id"], "12458");
    }

    #[test]
    fn order_keys_take_precedence_over_telegraf_file_and_section_over_top_level() {
        let own = format!("{README_ORDER}measurement_name: own\n");
        let parsed = parse_order(&id(), &own, Some(README_TELEGRAF), &OrderOptions::default()).unwrap();
        assert_eq!(parsed.order.telegraf.unwrap().measurement_name, "own");

        let both = format!("{own}telegraf:\n  measurement_name: section\n  tags: {{a: 1}}\n");
        let parsed = parse(&both).unwrap();
        let meta = parsed.order.telegraf.unwrap();
        assert_eq!(meta.measurement_name, "section");
        assert_eq!(meta.tags["a"], "1");
        assert!(parsed.warnings.iter().any(|w| w.contains("measurement_name")));
    }

    #[test]
    fn readme_fping_section_with_interface_and_source_ip_parses() {
        let text = base(
            "fping",
            "fping:\n    host: 213.156.230.57\n    interface: eth0\n    source_ip: 10.0.0.12\n",
        );
        match parse(&text).unwrap().order.probe {
            ProbeSpec::Fping(f) => {
                assert_eq!(f.interface.as_deref(), Some("eth0"));
                assert_eq!(f.source_ip, Some("10.0.0.12".parse().unwrap()));
                assert_eq!(f.interval_ms, None);
            }
            other => panic!("not fping: {other:?}"),
        }
    }

    #[test]
    fn readme_httping_section_parses_comma_separated_status_codes() {
        let text = base(
            "httping",
            "httping:\n    url: http://www.example.com\n    user_agent: pingmachine\n    proxy: http://10.0.0.24:8080\n    http_codes_as_failure: 403,407,503\n",
        );
        match parse(&text).unwrap().order.probe {
            ProbeSpec::Httping(h) => {
                assert_eq!(h.url, "http://www.example.com");
                assert_eq!(h.user_agent.as_deref(), Some("pingmachine"));
                assert_eq!(h.proxy.as_deref(), Some("http://10.0.0.24:8080"));
                assert_eq!(h.http_codes_as_failure, vec![403, 407, 503]);
            }
            other => panic!("not httping: {other:?}"),
        }
    }

    #[test]
    fn status_codes_may_be_a_yaml_list_or_one_number() {
        let list = base(
            "httping",
            "httping: {url: 'https://x.test/', http_codes_as_failure: [500, '502']}\n",
        );
        let one = base(
            "httping",
            "httping: {url: 'https://x.test/', http_codes_as_failure: 503}\n",
        );
        for (text, expected) in [(list, vec![500, 502]), (one, vec![503])] {
            match parse(&text).unwrap().order.probe {
                ProbeSpec::Httping(h) => assert_eq!(h.http_codes_as_failure, expected),
                other => panic!("not httping: {other:?}"),
            }
        }
        let bad = base(
            "httping",
            "httping: {url: 'https://x.test/', http_codes_as_failure: '403,abc'}\n",
        );
        assert_eq!(invalid_key(&bad), "httping.http_codes_as_failure");
    }

    #[test]
    fn readme_sping_and_pping_sections_use_the_configured_command() {
        let options = OrderOptions {
            sping_command: vec!["my-sping".into(), "{host}".into()],
            ..OrderOptions::default()
        };
        for probe in ["sping", "pping"] {
            let text = base(
                probe,
                &format!(
                    "{probe}:\n    host: 213.156.230.57\n    interface: eth0\n    source_ip: 10.0.0.12\n    flags:\n"
                ),
            );
            let parsed = parse_order(&id(), &text, None, &options).unwrap();
            match parsed.order.probe {
                ProbeSpec::Exec(e) => {
                    let expected = if probe == "sping" {
                        &options.sping_command
                    } else {
                        &options.pping_command
                    };
                    assert_eq!(&e.command, expected);
                    assert!(e.flags.is_empty());
                    assert_eq!(e.host.as_deref(), Some("213.156.230.57"));
                    assert_eq!(e.interface.as_deref(), Some("eth0"));
                }
                other => panic!("not exec: {other:?}"),
            }
        }
        let flagged = base(
            "sping",
            "sping: {host: '1-ff00:0:110,10.0.0.1', flags: '--sciond 1.2.3.4 -v'}\n",
        );
        match parse(&flagged).unwrap().order.probe {
            ProbeSpec::Exec(e) => {
                assert_eq!(e.kind, ExecKind::Sping);
                assert_eq!(e.flags, ["--sciond", "1.2.3.4", "-v"]);
            }
            other => panic!("not exec: {other:?}"),
        }
    }

    #[test]
    fn exec_command_is_a_list_or_a_whitespace_split_string() {
        let list = base("exec", "exec: {command: ['/bin/echo', 'time=1 ms'], timeout: 500}\n");
        let string = base("exec", "exec: {command: '/bin/echo  time=1  ms'}\n");
        match parse(&list).unwrap().order.probe {
            ProbeSpec::Exec(e) => {
                assert_eq!(e.command, ["/bin/echo", "time=1 ms"]);
                assert_eq!(e.timeout_ms, Some(500));
            }
            other => panic!("not exec: {other:?}"),
        }
        match parse(&string).unwrap().order.probe {
            ProbeSpec::Exec(e) => assert_eq!(e.command, ["/bin/echo", "time=1", "ms"]),
            other => panic!("not exec: {other:?}"),
        }
        assert_eq!(invalid_key(&base("exec", "exec: {command: []}\n")), "exec.command");
        assert_eq!(invalid_key(&base("exec", "exec: {timeout: 5}\n")), "exec.command");
    }

    #[test]
    fn exec_command_using_host_placeholder_needs_a_host() {
        let text = base("exec", "exec: {command: 'ping -c {pings} {host}'}\n");
        assert_eq!(invalid_key(&text), "exec.host");
        let ok = base("exec", "exec: {command: 'ping -c {pings} {host}', host: '::1'}\n");
        assert!(parse(&ok).is_ok());
    }

    #[test]
    fn tcp_section_resolves_host_and_port() {
        let text = base("tcp", "tcp: {host: 127.0.0.1, port: 8080, interval: 250}\n");
        match parse(&text).unwrap().order.probe {
            ProbeSpec::Tcp(t) => {
                assert_eq!(t.address, "127.0.0.1:8080".parse::<SocketAddr>().unwrap());
                assert_eq!(t.interval_ms, Some(250));
            }
            other => panic!("not tcp: {other:?}"),
        }
        assert_eq!(invalid_key(&base("tcp", "tcp: {host: 127.0.0.1}\n")), "tcp.port");
        assert_eq!(
            invalid_key(&base("tcp", "tcp: {host: 127.0.0.1, port: 70000}\n")),
            "tcp.port"
        );
    }

    #[test]
    fn host_name_is_resolved_with_the_system_resolver() {
        let text = base("fping", "fping: {host: localhost}\n");
        match parse(&text).unwrap().order.probe {
            ProbeSpec::Fping(f) => {
                assert_eq!(f.host, "localhost");
                assert!(f.address.is_loopback(), "{}", f.address);
            }
            other => panic!("not fping: {other:?}"),
        }
    }

    #[test]
    fn unresolvable_host_is_a_retryable_error_naming_the_host() {
        let text = base("fping", "fping: {host: no-such-host.invalid}\n");
        let err = parse(&text).unwrap_err();
        assert!(err.is_retryable(), "{err}");
        assert!(matches!(&err, OrderError::Unresolvable { host, .. } if host == "no-such-host.invalid"));
        assert!(err.to_string().contains("no-such-host.invalid"));
    }

    #[test]
    fn unknown_keys_are_warnings_naming_the_key_and_the_order_stays_valid() {
        let text = format!("{README_ORDER}    ttl: 5\ncolour: blue\nhttping: {{url: 'http://x.test'}}\n");
        let parsed = parse(&text).unwrap();
        let all = parsed.warnings.join("\n");
        assert!(all.contains("`colour`"), "{all}");
        assert!(all.contains("`fping.ttl`"), "{all}");
        assert!(all.contains("`httping`"), "{all}");
        assert_eq!(parsed.warnings.len(), 3, "{all}");
    }

    #[test]
    fn missing_required_keys_are_named() {
        for key in ["user", "step", "pings", "probe"] {
            let text: String = README_ORDER
                .lines()
                .filter(|line| !line.starts_with(&format!("{key}:")))
                .map(|line| format!("{line}\n"))
                .collect();
            assert_eq!(invalid_key(&text), key);
        }
        assert_eq!(invalid_key(&base("fping", "fping: {interface: eth0}\n")), "fping.host");
        assert_eq!(invalid_key(&base("httping", "httping: {proxy: x}\n")), "httping.url");
    }

    #[test]
    fn out_of_range_and_wrongly_typed_numbers_are_named() {
        let cases = [
            ("step: 0", "step"),
            ("step: -5", "step"),
            ("step: 1.5", "step"),
            ("step: fast", "step"),
            ("step: [1]", "step"),
            ("step: 86401", "step"),
            ("pings: 0", "pings"),
            ("pings: -1", "pings"),
            ("pings: 1001", "pings"),
            ("pings: {a: 1}", "pings"),
        ];
        for (line, key) in cases {
            let text = README_ORDER.replace(if key == "step" { "step: 300" } else { "pings: 20" }, line);
            assert_eq!(invalid_key(&text), key, "{line}");
        }
        let huge = README_ORDER.replace("step: 300", "step: 99999999999999999999999");
        let err = parse(&huge).unwrap_err().to_string();
        assert!(err.contains("step"), "{err}");
        // pingmachine (Perl) accepted quoted numbers; so do we.
        let quoted = README_ORDER.replace("step: 300", "step: '300'");
        assert_eq!(parse(&quoted).unwrap().order.step, 300);
    }

    #[test]
    fn wrongly_typed_strings_and_sections_are_named() {
        let cases = [
            (README_ORDER.replace("user: tmon", "user: [a, b]"), "user"),
            (README_ORDER.replace("user: tmon", "user: true"), "user"),
            (
                README_ORDER.replace("    host: 62.179.116.250", "    host: {a: 1}"),
                "fping.host",
            ),
            (
                README_ORDER.replace("fping:\n    host: 62.179.116.250\n", "fping: 62.179.116.250\n"),
                "fping",
            ),
            (
                base("fping", "fping: {host: 127.0.0.1, source_ip: not-an-ip}\n"),
                "fping.source_ip",
            ),
            (
                base("fping", "fping: {host: 127.0.0.1, interface: 'eth0 eth1'}\n"),
                "fping.interface",
            ),
            (
                base("fping", "fping: {host: 127.0.0.1, interval: 0}\n"),
                "fping.interval",
            ),
            (base("fping", "fping: {host: '-f /etc/passwd'}\n"), "fping.host"),
            (base("fping", "fping: {host: ''}\n"), "fping.host"),
            (base("httping", "httping: {url: 'ftp://x.test'}\n"), "httping.url"),
            (base("httping", "httping: {url: 'http://'}\n"), "httping.url"),
            (
                base("httping", "httping: {url: 'http://x.test', interval: -1}\n"),
                "httping.interval",
            ),
            (format!("{README_ORDER}rrd_template: fancy\n"), "rrd_template"),
            (format!("{README_ORDER}telegraf: yes\n"), "telegraf"),
            (
                format!("{README_ORDER}telegraf: {{tags: {{a: b}}}}\n"),
                "telegraf.measurement_name",
            ),
            (format!("{README_ORDER}measurement_name: m\ntags: [a]\n"), "tags"),
            (
                format!("{README_ORDER}measurement_name: m\ntags: {{a: [1]}}\n"),
                "tags.a",
            ),
            (
                format!("{README_ORDER}measurement_name: m\ntags: {{a: ''}}\n"),
                "tags.a",
            ),
            (format!("{README_ORDER}1: one\n"), ""),
        ];
        for (text, key) in cases {
            assert_eq!(invalid_key(&text), key, "{text}");
        }
    }

    #[test]
    fn unknown_probe_is_an_error_naming_the_probe() {
        let text = README_ORDER.replace("probe: fping", "probe: smoke");
        assert_eq!(invalid_key(&text), "probe");
        assert!(parse(&text).unwrap_err().to_string().contains("smoke"));
    }

    #[test]
    fn probe_without_its_section_is_an_error_not_a_crash() {
        let text = "user: tmon\nstep: 300\npings: 20\nprobe: fping\n";
        assert_eq!(invalid_key(text), "fping");
        let other_section = "user: tmon\nstep: 300\npings: 20\nprobe: tcp\nfping: {host: 127.0.0.1}\n";
        assert_eq!(invalid_key(other_section), "tcp");
    }

    #[test]
    fn norrd_template_is_accepted() {
        let text = format!("{README_ORDER}rrd_template: norrd\n");
        assert_eq!(parse(&text).unwrap().order.rrd_template, RrdTemplate::Norrd);
    }

    #[test]
    fn empty_and_comment_only_orders_are_empty_errors() {
        for text in ["", "   \n", "# just a comment\n", "~\n"] {
            assert!(matches!(parse(text), Err(OrderError::Empty { .. })), "{text:?}");
        }
    }

    #[test]
    fn list_or_scalar_at_top_level_is_not_a_map() {
        for (text, found) in [("- a\n- b\n", "a list"), ("hello\n", "a string"), ("42\n", "a number")] {
            match parse(text) {
                Err(OrderError::NotAMap { found: f, .. }) => assert_eq!(f, found),
                other => panic!("{text:?}: {other:?}"),
            }
        }
    }

    #[test]
    fn broken_yaml_binary_garbage_and_multiple_documents_are_yaml_errors() {
        let garbage: String = (0u8..=255).map(char::from).cycle().take(4096).collect();
        let cases = [
            "user: [unclosed\n".to_string(),
            "user: tmon\n  step: 3\n bad indent: {\n".to_string(),
            "\0\u{1}\u{2}ELF\u{7f}".to_string(),
            garbage,
            "a: 1\n---\nb: 2\n".to_string(),
            "user: *undefined_alias\n".to_string(),
        ];
        for text in cases {
            match parse(&text) {
                Err(OrderError::Yaml { .. }) => {}
                other => panic!("{:?}: {other:?}", &text[..text.len().min(40)]),
            }
        }
    }

    #[test]
    fn duplicate_keys_are_an_error_naming_the_key() {
        let text = format!("{README_ORDER}step: 20\n");
        match parse(&text) {
            Err(OrderError::Yaml { message, .. }) => {
                assert!(message.contains("duplicate") && message.contains("step"), "{message}")
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn alias_bomb_is_refused_without_expanding_it() {
        // "Billion laughs": 9 levels of 9 references = 387,420,489 leaves if expanded.
        let mut text = String::from("a0: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n");
        for level in 1..=9 {
            let prev = format!("*a{}", level - 1);
            let refs = [prev.as_str(); 9].join(", ");
            text.push_str(&format!("a{level}: &a{level} [{refs}]\n"));
        }
        text.push_str(README_ORDER);
        match parse(&text) {
            Err(OrderError::Yaml { message, .. }) => {
                assert!(message.contains("alias expansion limit"), "{message}")
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn one_alias_replaying_a_large_list_many_times_is_refused() {
        // 1,000 aliases of a 1,000-item list: a million nodes (about 1 GB) from 5 KB, within
        // yaml_serde's own limit of 100 alias jumps per event.
        let n = 1000;
        let text = format!("a: &x [{}]\nb: [{}]\n{README_ORDER}", "a, ".repeat(n), "*x, ".repeat(n));
        match parse(&text) {
            Err(OrderError::Yaml { message, .. }) => {
                assert!(message.contains("alias expansion limit"), "{message}")
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn deeply_nested_yaml_is_refused_without_overflowing_the_stack() {
        let depth = 10_000;
        let text = format!("user: {}{}\n", "[".repeat(depth), "]".repeat(depth));
        match parse(&text) {
            Err(OrderError::Yaml { message, .. }) => {
                assert!(message.contains("recursion limit"), "{message}")
            }
            other => panic!("{other:?}"),
        }
        let maps = format!("{}1{}", "{a: ".repeat(depth), "}".repeat(depth));
        assert!(matches!(parse(&maps), Err(OrderError::Yaml { .. })));
    }

    #[test]
    fn merge_keys_are_applied() {
        let text = "defaults: &d {user: tmon, step: 20, pings: 3}\n<<: *d\nprobe: fping\nfping: {host: 127.0.0.1}\n";
        let parsed = parse(text).unwrap();
        assert_eq!(parsed.order.step, 20);
        assert!(parsed.warnings.iter().any(|w| w.contains("defaults")));
    }

    #[test]
    fn broken_telegraf_file_is_an_error_naming_that_file() {
        for bad in ["[a, b]", "tags: {a: b}", "measurement_name: [x]", "{"] {
            match parse_order(&id(), README_ORDER, Some(bad), &OrderOptions::default()) {
                Err(OrderError::Invalid { key, .. }) => {
                    assert!(key.starts_with("telegraf/app1/target1"), "{key}")
                }
                other => panic!("{bad:?}: {other:?}"),
            }
        }
    }
}
