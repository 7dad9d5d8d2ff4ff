//! The order model: one YAML file in `orders/`, validated into an [`Order`].
//!
//! Parsing and validation live here (see `parse_order`); the order book decides what to do with
//! the result.

use crate::measurement::{OrderId, RrdTemplate, TelegrafMeta};
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
