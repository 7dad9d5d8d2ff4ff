//! The order model: what one valid file below `orders/` asks to be measured.
//!
//! Owns the spec types ([`Order`], [`ProbeSpec`] and its kinds) and everything that depends on
//! the kind of probe: its name, what it measures ([`ProbeSpec::target`]), what orders must share to
//! run together ([`ProbeSpec::batch_key`]) and its interval ([`ProbeSpec::interval_ms`]), each
//! an exhaustive `match`, so a new kind is a compile error wherever it is not handled yet.
//!
//! Invariants: an [`Order`] is valid (numbers in range, required keys present, hosts of `fping`
//! and `tcp` resolved); only [`parse_order`] makes one from producer text.
//!
//! Parts:
//! - this file: the spec types and their per-kind methods;
//! - `parse`: the text of one order (plus the old interface's `telegraf/<id>` file) into an
//!   [`Order`] or an [`OrderError`] naming the offending key ([`parse_order`]; pure: reads no
//!   files, the order book passes text in);
//! - `fields`: reading a YAML map key by key into typed values, with hostile YAML refused;
//! - [`alert`]: the order's alert thresholds (`alert:`) and the threshold lists of the checks;
//! - [`range`]: Nagios ranges, the syntax of every threshold value.
//!
//! Called by the order book (parsing), the scheduler (batch key, interval) and the probes (the
//! spec of each order they measure).

pub mod alert;
mod fields;
mod parse;
pub mod range;
#[cfg(test)]
mod tests;

pub use parse::{
    parse_order, parse_order_with, resolve_host, HostResolver, OrderError, ParsedOrder, MAX_INTERVAL_MS,
    MAX_ORDER_BYTES, MAX_PINGS, MAX_STEP,
};

pub use alert::Alert;

use crate::shared::measurement::{OrderId, RrdTemplate, TelegrafMeta};
use std::net::{IpAddr, SocketAddr};

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
    /// Whether the order expires `order-timeout` after its file was last modified (`expire:`).
    pub expire: Expiry,
    /// The order's own alert thresholds (`alert:`; empty when absent), which the checks prefer
    /// to the command line's per level and metric. Shared: most orders have none, and an empty
    /// [`Alert`] inline would be 480 of the order's 752 bytes in each copy (the book's, the
    /// scheduler's); every order without `alert:` points to one empty value
    /// ([`Alert::shared`]).
    pub alert: std::sync::Arc<Alert>,
}

/// When an order expires: the order file's `expire:` key.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Expiry {
    /// No `expire:` key: the order expires `order-timeout` after its file was last modified
    /// (pingmachine's rule; producers keep it alive by touching it).
    #[default]
    Timeout,
    /// `expire: never`: a static target, measured until its file is deleted or rewritten
    /// without the key.
    Never,
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
    /// The kind of probe (what `probe:` named).
    pub fn kind(&self) -> ProbeKind {
        match self {
            ProbeSpec::Fping(_) => ProbeKind::Fping,
            ProbeSpec::Httping(_) => ProbeKind::Httping,
            ProbeSpec::Tcp(_) => ProbeKind::Tcp,
            ProbeSpec::Exec(spec) => match spec.kind {
                ExecKind::Exec => ProbeKind::Exec,
                ExecKind::Sping => ProbeKind::Sping,
                ExecKind::Pping => ProbeKind::Pping,
            },
        }
    }

    /// The probe's name as orders write it in `probe:` (and `spoolmon orders` lists it).
    pub fn name(&self) -> &'static str {
        self.kind().name()
    }

    /// What the order measures, as `spoolmon orders` lists it: the host (with the address it
    /// resolved to, when that differs), the URL, `host:port`, or the command.
    pub fn target(&self) -> String {
        match self {
            ProbeSpec::Fping(spec) if spec.host == spec.address.to_string() => spec.host.clone(),
            ProbeSpec::Fping(spec) => format!("{} ({})", spec.host, spec.address),
            ProbeSpec::Httping(spec) => spec.url.clone(),
            ProbeSpec::Tcp(spec) => format!("{}:{}", spec.host, spec.port),
            ProbeSpec::Exec(spec) => spec.host.clone().unwrap_or_else(|| spec.command.join(" ")),
        }
    }

    /// What orders must share to be measured in one run: the probe kind and every option but
    /// the target. The scheduler adds step and pings; the text is part of the batch's identity
    /// (its phase in the step is derived from it), so it must not change between releases.
    pub fn batch_key(&self) -> String {
        match self {
            ProbeSpec::Fping(s) => format!(
                "fping src={:?} if={:?} int={:?}",
                s.source_ip, s.interface, s.interval_ms
            ),
            ProbeSpec::Httping(s) => format!("httping int={:?}", s.interval),
            ProbeSpec::Tcp(s) => format!("tcp src={:?} int={:?}", s.source_ip, s.interval_ms),
            ProbeSpec::Exec(s) => format!("{} timeout={:?}", self.name(), s.timeout_ms),
        }
    }

    /// Milliseconds between two pings to the target, if the order sets them (`interval:`;
    /// httping's seconds are truncated to whole milliseconds). `None`: the scheduler spreads the
    /// pings over the step.
    pub fn interval_ms(&self) -> Option<u64> {
        match self {
            ProbeSpec::Fping(s) => s.interval_ms,
            ProbeSpec::Tcp(s) => s.interval_ms,
            ProbeSpec::Httping(s) => s.interval.map(|secs| (secs * 1000.0) as u64),
            ProbeSpec::Exec(_) => None,
        }
    }

    /// The host name and the address it resolved to, for the probes whose host is resolved when
    /// the order is parsed (fping, tcp); the order book keeps that address while the name stops
    /// resolving.
    pub fn resolved_host(&self) -> Option<(&str, IpAddr)> {
        match self {
            ProbeSpec::Fping(spec) => Some((&spec.host, spec.address)),
            ProbeSpec::Tcp(spec) => Some((&spec.host, spec.address.ip())),
            ProbeSpec::Httping(_) | ProbeSpec::Exec(_) => None,
        }
    }

    /// An `fping` spec for an address with no options (what the probe tests and benches
    /// measure).
    pub fn fping_to(address: IpAddr) -> ProbeSpec {
        ProbeSpec::Fping(FpingSpec {
            host: address.to_string(),
            address,
            source_ip: None,
            interface: None,
            interval_ms: None,
        })
    }
}

/// What `probe:` may name: one kind per probe section an order can have.
///
/// Adding a kind: a variant here, its name in [`ProbeKind::name`] and [`ProbeKind::ALL`], its
/// spec in [`ProbeSpec`]; the compiler then points at every `match` that must learn it (the
/// spec's methods here, the parser, the probe dispatch in `probe::scheduler::ProbeSet` and its
/// construction from the config in `command::run`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ProbeKind {
    Fping,
    Httping,
    Tcp,
    Exec,
    Sping,
    Pping,
}

impl ProbeKind {
    /// Every kind, in the order error messages list them.
    pub const ALL: [ProbeKind; 6] = [
        ProbeKind::Fping,
        ProbeKind::Httping,
        ProbeKind::Tcp,
        ProbeKind::Exec,
        ProbeKind::Sping,
        ProbeKind::Pping,
    ];

    /// The name orders use in `probe:` and as the key of the probe's section.
    pub const fn name(self) -> &'static str {
        match self {
            ProbeKind::Fping => "fping",
            ProbeKind::Httping => "httping",
            ProbeKind::Tcp => "tcp",
            ProbeKind::Exec => "exec",
            ProbeKind::Sping => "sping",
            ProbeKind::Pping => "pping",
        }
    }

    /// The kind `probe:` names, if any.
    pub fn from_name(name: &str) -> Option<ProbeKind> {
        ProbeKind::ALL.into_iter().find(|kind| kind.name() == name)
    }
}

/// The names of [`ProbeKind::ALL`].
pub const PROBE_NAMES: [&str; ProbeKind::ALL.len()] = {
    let mut names = [""; ProbeKind::ALL.len()];
    let mut i = 0;
    while i < names.len() {
        names[i] = ProbeKind::ALL[i].name();
        i += 1;
    }
    names
};

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
