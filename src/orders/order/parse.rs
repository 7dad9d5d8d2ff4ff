//! Parsing and validation: the text of one order (plus the old interface's `telegraf/<id>`
//! file) into an [`Order`] or an [`OrderError`] naming the offending key.
//!
//! Keys are pingmachine's (see `reference/pingmachine.md`). Rules:
//! - unknown keys and sections of other probes are warnings, never errors;
//! - wrong types, out-of-range numbers (`step` 1..=[`MAX_STEP`], `pings` 1..=[`MAX_PINGS`]),
//!   unknown probes, missing required keys or sections are errors;
//! - hosts of `fping`/`tcp` orders are resolved here (an IP literal as is, a name with the system
//!   resolver, first address); a name that does not resolve is [`OrderError::Unresolvable`], which
//!   the order book retries ("not yet", not "bad");
//! - `alert:` is strict: an unknown level or metric, or a value that is not a threshold, is an
//!   error (an ignored threshold would silently never alert);
//! - hostile YAML gives an error, never a panic or a memory blow-up (see `fields`).
//!
//! This module reads no files: the order book owns `orders/` and passes text in. Called by the
//! order book and `tests/fuzz_parsers.rs`.

use super::alert::{Alert, Level, Metric, Threshold};
use super::fields::{kind_of, load_map, to_text, to_words, Fields, Problem};
use super::{ExecKind, ExecSpec, Expiry, FpingSpec, HttpingSpec, Order, ProbeKind, ProbeSpec, TcpSpec, PROBE_NAMES};
use crate::orders::OrderOptions;
use crate::shared::measurement::{OrderId, RrdTemplate, TelegrafMeta};
use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use yaml_serde::Value;

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
    #[error("order {id}: names starting with '@' are reserved for the orders of other spoolmon nodes (their output is output/@<node>/...); rename {path}")]
    ReservedName { id: OrderId, path: PathBuf },
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

impl Problem {
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
        let Some(kind) = ProbeKind::from_name(&probe_name) else {
            return Err(Problem::key(
                "probe",
                format!("unknown probe {probe_name:?} (known: {})", PROBE_NAMES.join(", ")),
            ));
        };
        let rrd_template = rrd_template(fields.string("rrd_template")?)?;
        let expire = expiry(fields.take("expire"))?;
        let alert = alert(fields.take("alert"))?.shared();
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
        let probe = self.probe(kind, section)?;
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
            expire,
            alert,
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

    fn probe(&mut self, kind: ProbeKind, section: Fields) -> Result<ProbeSpec, Problem> {
        match kind {
            ProbeKind::Fping => self.fping(section).map(ProbeSpec::Fping),
            ProbeKind::Httping => self.httping(section).map(ProbeSpec::Httping),
            ProbeKind::Tcp => self.tcp(section).map(ProbeSpec::Tcp),
            ProbeKind::Exec => self.exec(ExecKind::Exec, section).map(ProbeSpec::Exec),
            ProbeKind::Sping => self.exec(ExecKind::Sping, section).map(ProbeSpec::Exec),
            ProbeKind::Pping => self.exec(ExecKind::Pping, section).map(ProbeSpec::Exec),
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

/// `expire:`: absent (or null) for the `order-timeout` rule, or `never`; anything else is an
/// error (a typo must not silently give an order that expires after all).
fn expiry(value: Option<Value>) -> Result<Expiry, Problem> {
    match value {
        None => Ok(Expiry::Timeout),
        Some(Value::String(text)) if text == "never" => Ok(Expiry::Never),
        Some(Value::String(text)) => Err(Problem::key(
            "expire",
            format!("{text:?} is not `never` (leave the key out to expire after order-timeout)"),
        )),
        Some(other) => Err(Problem::key(
            "expire",
            format!(
                "must be `never`, found {} (leave the key out to expire after order-timeout)",
                kind_of(&other)
            ),
        )),
    }
}

/// `alert:`: a map of levels (`warning`, `critical`), each a map of metrics (`loss`, `median`,
/// `max`) to threshold values; absent or null: no thresholds of its own.
fn alert(value: Option<Value>) -> Result<Alert, Problem> {
    const SHAPE: &str = "{warning: {loss: 10%, median: 100ms}, critical: {loss: 50%, max: 1s}}";
    let map = match value {
        None => return Ok(Alert::default()),
        Some(Value::Mapping(map)) => map,
        Some(other) => {
            return Err(Problem::key(
                "alert",
                format!("must be a map like {SHAPE}, found {}", kind_of(&other)),
            ))
        }
    };
    let mut fields = Fields::new("alert.", map)?;
    let mut level = |name: &str| -> Result<Level, Problem> {
        let key = fields.name(name);
        let map = match fields.take(name) {
            None => return Ok(Level::default()),
            Some(Value::Mapping(map)) => map,
            Some(other) => {
                return Err(Problem::key(
                    &key,
                    format!("must be a map of loss, median and max, found {}", kind_of(&other)),
                ))
            }
        };
        let mut metrics = Fields::new(&format!("{key}."), map)?;
        let mut level = Level::default();
        for metric in Metric::ALL {
            let name = metrics.name(metric.name());
            let Some(value) = metrics.take(metric.name()) else {
                continue;
            };
            let text = to_text(&name, value)?;
            let threshold = Threshold::parse(metric, &text).map_err(|message| Problem::key(&name, message))?;
            level
                .set(metric, threshold)
                .map_err(|message| Problem::key(&name, message))?;
        }
        metrics.finish_strict("metric", "loss, median, max")?;
        Ok(level)
    };
    let warning = level("warning")?;
    let critical = level("critical")?;
    fields.finish_strict("level", "warning, critical")?;
    Ok(Alert { warning, critical })
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
