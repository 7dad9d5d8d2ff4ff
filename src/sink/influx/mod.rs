//! InfluxDB and Telegraf: results as line protocol ([`line`]), sent by UDP or HTTP
//! ([`transport`]), chosen by the `url` option.
//!
//! | `url` | sent to | options used |
//! |---|---|---|
//! | `udp://host:port` | Telegraf `socket_listener`, InfluxDB `[[udp]]` | `max-datagram-size` |
//! | `http(s)://host:port[/prefix]` without `bucket` | InfluxDB 1.x `POST /write` | `database` (required), `retention-policy`, `username` + `password`, `gzip`, `timeout`, `max-body-size` |
//! | `http(s)://host:port[/prefix]` with `bucket` | InfluxDB 2.x `POST /api/v2/write` | `bucket`, `org`, `token`, `gzip`, `timeout`, `max-body-size` |
//!
//! `precision` and `global-tags` shape the lines for every transport. Options that the chosen
//! transport would ignore are refused by [`InfluxOptions::validate`], so a setting never
//! silently does nothing.

pub mod line;
pub mod transport;

pub use line::InfluxEncoder;
pub use transport::{HttpTransport, UdpTransport};

use super::route::{Kind, MetricGlobs, OrderGlobs, RouteKeys};
use super::{OutboxBounds, Transport};
use crate::shared::option::{check_seconds, InvalidOption};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Unit of the timestamps in the lines (and the `precision` parameter of HTTP writes).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    /// Nanoseconds: what Telegraf and InfluxDB's UDP listener expect by default.
    #[default]
    Ns,
    /// Microseconds.
    Us,
    /// Milliseconds.
    Ms,
    /// Seconds. `individual_rtt` points of one step then share a timestamp and overwrite each
    /// other in InfluxDB: use it only when those are not wanted.
    S,
}

impl Precision {
    /// Timestamp units per second.
    pub fn units_per_second(self) -> i64 {
        match self {
            Precision::Ns => 1_000_000_000,
            Precision::Us => 1_000_000,
            Precision::Ms => 1_000,
            Precision::S => 1,
        }
    }

    /// The `precision` query value of InfluxDB 1.x `/write` (1.x spells microseconds `u`; it
    /// does not know `us`).
    pub fn v1_name(self) -> &'static str {
        match self {
            Precision::Ns => "ns",
            Precision::Us => "u",
            Precision::Ms => "ms",
            Precision::S => "s",
        }
    }

    /// The `precision` query value of InfluxDB 2.x `/api/v2/write`.
    pub fn v2_name(self) -> &'static str {
        match self {
            Precision::Ns => "ns",
            Precision::Us => "us",
            Precision::Ms => "ms",
            Precision::S => "s",
        }
    }
}

/// Options of an InfluxDB / Telegraf sink.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(default, rename_all = "kebab-case", deny_unknown_fields)]
pub struct InfluxOptions {
    /// Where to send: `udp://host:port` or `http(s)://host:port[/path prefix]`.
    /// Default `udp://127.0.0.1:8094` (Telegraf's `socket_listener`, as pingmachine's
    /// `--telegraf host:port`).
    pub url: String,
    /// InfluxDB 1.x database (required for 1.x HTTP writes).
    pub database: Option<String>,
    /// InfluxDB 1.x retention policy; default: the database's default policy.
    pub retention_policy: Option<String>,
    /// Timestamp unit of the lines: `ns` (default), `us`, `ms` or `s`.
    pub precision: Precision,
    /// InfluxDB 1.x user (sent as HTTP basic authentication, with `password`).
    pub username: Option<String>,
    /// InfluxDB 1.x password (with `username`).
    pub password: Option<String>,
    /// InfluxDB 2.x organisation (name).
    pub org: Option<String>,
    /// InfluxDB 2.x bucket; setting it selects the 2.x API.
    pub bucket: Option<String>,
    /// InfluxDB 2.x API token (`Authorization: Token ...`).
    pub token: Option<String>,
    /// Compress HTTP request bodies (`Content-Encoding: gzip`). Default false.
    pub gzip: bool,
    /// Largest UDP datagram in bytes; lines are packed into datagrams up to this size, never
    /// split. Default 1400 (no IP fragmentation on Ethernet paths).
    pub max_datagram_size: usize,
    /// Largest HTTP request body before compression, in bytes. Default 1048576 (InfluxDB's
    /// own limit is 25 MB; smaller bodies keep retries cheap).
    pub max_body_size: usize,
    /// Seconds one HTTP request may take, connection included. Default 5.
    pub timeout: f64,
    /// Tags added to every line (e.g. `host: lb-01`). An order's own tag with the same key
    /// wins, as Telegraf's `global_tags` do.
    pub global_tags: BTreeMap<String, String>,
    /// Size and age bounds of this sink's outbox.
    pub outbox: OutboxBounds,
    /// Kinds of data this sink takes: `ping` (ping results), `haproxy` (HAProxy metrics from
    /// processing), `self` (self-metrics, sent to the sinks `self-metrics: {sinks}` selects).
    /// Default `[ping, self]`: HAProxy metrics (~80,000 measurements a snapshot) only when
    /// `haproxy` is named.
    pub takes: Vec<Kind>,
    /// Which orders' ping results this sink takes: globs on order ids (`web/**`); see
    /// spool-layout.md, "Routing".
    pub orders: OrderGlobs,
    /// Which HAProxy and self metrics this sink takes: globs on their paths before the
    /// namespace (`haproxy.frontend.*.scur`); see spool-layout.md, "Routing".
    pub metrics: MetricGlobs,
}

impl Default for InfluxOptions {
    fn default() -> Self {
        InfluxOptions {
            url: "udp://127.0.0.1:8094".to_string(),
            database: None,
            retention_policy: None,
            precision: Precision::Ns,
            username: None,
            password: None,
            org: None,
            bucket: None,
            token: None,
            gzip: false,
            max_datagram_size: 1400,
            max_body_size: 1 << 20,
            timeout: 5.0,
            global_tags: BTreeMap::new(),
            outbox: OutboxBounds::default(),
            takes: vec![Kind::Ping, Kind::SelfMetrics],
            orders: OrderGlobs::default(),
            metrics: MetricGlobs::default(),
        }
    }
}

/// The remote API that a set of options selects.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Api {
    Udp,
    HttpV1,
    HttpV2,
}

impl InfluxOptions {
    /// The routing keys (`takes`, `orders`, `metrics`).
    pub fn route_keys(&self) -> RouteKeys<'_> {
        RouteKeys {
            takes: &self.takes,
            orders: &self.orders,
            metrics: &self.metrics,
        }
    }

    /// The API the `url` and `bucket` options select (`url` not yet checked).
    pub fn api(&self) -> Api {
        if self.url.starts_with("udp://") {
            Api::Udp
        } else if self.bucket.is_some() {
            Api::HttpV2
        } else {
            Api::HttpV1
        }
    }

    /// Checks every option and that none is set that the selected API would ignore; the error
    /// names the first bad key.
    pub fn validate(&self) -> Result<(), InvalidOption> {
        self.outbox.validate()?;
        transport::check_url(&self.url)?;
        for (key, value) in &self.global_tags {
            line::check_tag("influx.global-tags", key, value)?;
        }
        match self.api() {
            Api::Udp => self.validate_udp(),
            Api::HttpV1 => self.validate_http_v1(),
            Api::HttpV2 => self.validate_http_v2(),
        }
    }

    fn validate_udp(&self) -> Result<(), InvalidOption> {
        if !(1..=transport::MAX_UDP_PAYLOAD).contains(&self.max_datagram_size) {
            let reason = format!("must be 1..={}", transport::MAX_UDP_PAYLOAD);
            return Err(InvalidOption::new("influx.max-datagram-size", reason));
        }
        let http_only = [
            ("influx.database", self.database.is_some()),
            ("influx.retention-policy", self.retention_policy.is_some()),
            ("influx.username", self.username.is_some()),
            ("influx.password", self.password.is_some()),
            ("influx.org", self.org.is_some()),
            ("influx.token", self.token.is_some()),
            ("influx.gzip", self.gzip),
        ];
        refuse_set(
            &http_only,
            "applies to http(s) URLs only; a udp listener chooses its database itself",
        )
    }

    fn validate_http(&self) -> Result<(), InvalidOption> {
        check_seconds("influx.timeout", self.timeout, 0.001)?;
        if self.max_body_size == 0 {
            return Err(InvalidOption::new("influx.max-body-size", "must be at least 1"));
        }
        Ok(())
    }

    fn validate_http_v1(&self) -> Result<(), InvalidOption> {
        self.validate_http()?;
        if self.database.as_deref().is_none_or(str::is_empty) {
            return Err(InvalidOption::new(
                "influx.database",
                "required for an http(s) url without bucket",
            ));
        }
        if self.username.is_some() != self.password.is_some() {
            return Err(InvalidOption::new(
                "influx.username",
                "username and password go together",
            ));
        }
        let v2_only = [
            ("influx.org", self.org.is_some()),
            ("influx.token", self.token.is_some()),
        ];
        refuse_set(&v2_only, "applies to InfluxDB 2.x (set bucket) only")
    }

    fn validate_http_v2(&self) -> Result<(), InvalidOption> {
        self.validate_http()?;
        if self.bucket.as_deref().is_some_and(str::is_empty) {
            return Err(InvalidOption::new("influx.bucket", "must not be empty"));
        }
        let v1_only = [
            ("influx.database", self.database.is_some()),
            ("influx.retention-policy", self.retention_policy.is_some()),
            ("influx.username", self.username.is_some()),
            ("influx.password", self.password.is_some()),
        ];
        refuse_set(&v1_only, "applies to InfluxDB 1.x only (bucket selects 2.x)")
    }
}

/// Fails naming the first key that is set.
fn refuse_set(keys: &[(&str, bool)], reason: &str) -> Result<(), InvalidOption> {
    match keys.iter().find(|(_, set)| *set) {
        Some((key, _)) => Err(InvalidOption::new(key, reason)),
        None => Ok(()),
    }
}

/// The transport the options select, after [`InfluxOptions::validate`] accepted them.
pub fn transport_for(options: &InfluxOptions) -> Result<Box<dyn Transport>, InvalidOption> {
    options.validate()?;
    Ok(match options.api() {
        Api::Udp => Box::new(UdpTransport::new(options)),
        Api::HttpV1 | Api::HttpV2 => Box::new(HttpTransport::new(options)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn http_v1() -> InfluxOptions {
        InfluxOptions {
            url: "http://127.0.0.1:8086".into(),
            database: Some("spoolmon".into()),
            ..InfluxOptions::default()
        }
    }

    #[test]
    fn defaults_are_valid_udp_to_telegraf() {
        let options = InfluxOptions::default();
        options.validate().unwrap();
        assert_eq!(options.api(), Api::Udp);
        assert_eq!(transport_for(&options).unwrap().describe(), "udp://127.0.0.1:8094");
    }

    #[test]
    fn url_and_bucket_select_the_api() {
        assert_eq!(http_v1().api(), Api::HttpV1);
        let v2 = InfluxOptions {
            url: "https://influx.example:8086".into(),
            bucket: Some("b".into()),
            org: Some("o".into()),
            token: Some("t".into()),
            ..InfluxOptions::default()
        };
        v2.validate().unwrap();
        assert_eq!(v2.api(), Api::HttpV2);
    }

    #[test]
    fn options_parse_from_kebab_case() {
        let text = "url: http://h:8086\ndatabase: d\nretention-policy: rp\nprecision: us\ngzip: true\n\
                    global-tags: {host: lb-01}\n";
        let options: InfluxOptions = yaml_serde::from_str(text).unwrap();
        options.validate().unwrap();
        assert_eq!(options.precision, Precision::Us);
        assert_eq!(options.global_tags["host"], "lb-01");
        assert!(yaml_serde::from_str::<InfluxOptions>("retention_policy: x\n").is_err());
        assert!(yaml_serde::from_str::<InfluxOptions>("precision: h\n").is_err());
    }

    #[test]
    fn invalid_and_ignored_options_name_their_key() {
        let cases = [
            (
                InfluxOptions {
                    url: "tcp://h:1".into(),
                    ..InfluxOptions::default()
                },
                "influx.url",
            ),
            (
                InfluxOptions {
                    url: "udp://h".into(),
                    ..InfluxOptions::default()
                },
                "influx.url",
            ),
            (
                InfluxOptions {
                    url: "http://".into(),
                    ..http_v1()
                },
                "influx.url",
            ),
            (
                InfluxOptions {
                    max_datagram_size: 0,
                    ..InfluxOptions::default()
                },
                "influx.max-datagram-size",
            ),
            (
                InfluxOptions {
                    max_datagram_size: 70_000,
                    ..InfluxOptions::default()
                },
                "influx.max-datagram-size",
            ),
            (
                InfluxOptions {
                    gzip: true,
                    ..InfluxOptions::default()
                },
                "influx.gzip",
            ),
            (
                InfluxOptions {
                    database: Some("d".into()),
                    ..InfluxOptions::default()
                },
                "influx.database",
            ),
            (
                InfluxOptions {
                    database: None,
                    ..http_v1()
                },
                "influx.database",
            ),
            (
                InfluxOptions {
                    username: Some("u".into()),
                    ..http_v1()
                },
                "influx.username",
            ),
            (
                InfluxOptions {
                    token: Some("t".into()),
                    ..http_v1()
                },
                "influx.token",
            ),
            (
                InfluxOptions {
                    timeout: 0.0,
                    ..http_v1()
                },
                "influx.timeout",
            ),
            (
                InfluxOptions {
                    max_body_size: 0,
                    ..http_v1()
                },
                "influx.max-body-size",
            ),
            (
                InfluxOptions {
                    bucket: Some("b".into()),
                    ..http_v1()
                },
                "influx.database",
            ),
            (
                InfluxOptions {
                    bucket: Some(String::new()),
                    database: None,
                    ..http_v1()
                },
                "influx.bucket",
            ),
            (
                InfluxOptions {
                    global_tags: BTreeMap::from([("host".into(), String::new())]),
                    ..http_v1()
                },
                "influx.global-tags",
            ),
        ];
        for (options, key) in cases {
            let err = options.validate().unwrap_err();
            assert_eq!(err.key, key, "{options:?}: {err}");
            assert!(transport_for(&options).is_err());
        }
    }
}
