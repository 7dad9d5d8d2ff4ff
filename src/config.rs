//! The one configuration file of spoolmon (YAML). Every key is optional; `spoolmon config
//! --print-defaults` prints them all with their defaults, `spoolmon config --reference` (see
//! [`reference`]) every key with its type, default and meaning.
//!
//! Unknown keys are an error naming the file and the key: a typo in a config file must not
//! silently leave a default in force.

use crate::collect::haproxy::PullOptions;
use crate::process::haproxy::HaproxyOptions;
use crate::receive::options::ReceiveOptions;
use crate::selfmetrics::SelfMetricsOptions;
use crate::sink::config::{validate_sinks, SinkConfig};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

pub use crate::probe::icmp::{Engine, IcmpOptions};

pub mod reference;

/// A forward sink needs a destination and a key: the printed defaults name examples.
fn forward_example() -> crate::sink::forward::ForwardOptions {
    crate::sink::forward::ForwardOptions {
        destinations: vec![FORWARD_EXAMPLE_DESTINATION.into()],
        api_key: RECEIVE_EXAMPLE_KEY.into(),
        ..Default::default()
    }
}

const FORWARD_EXAMPLE_DESTINATION: &str = "http://192.0.2.10:19999";

/// The Kafka sink in the commented `sinks:` block of `--print-defaults` (brokers have no default).
fn kafka_example() -> crate::sink::kafka::KafkaOptions {
    crate::sink::kafka::KafkaOptions {
        brokers: vec![KAFKA_EXAMPLE_BROKER.into()],
        ..Default::default()
    }
}

const KAFKA_EXAMPLE_BROKER: &str = "192.0.2.20:9092";

/// The address and API key in the commented `receive:` block of `--print-defaults`.
const RECEIVE_EXAMPLE_LISTEN: &str = "127.0.0.1:19999";
const RECEIVE_EXAMPLE_KEY: &str = "11111111-2222-3333-4444-555555555555";

/// The socket directory in the commented `pull:` block of `--print-defaults`.
const PULL_EXAMPLE_SOCKET_DIR: &str = "/run/haproxy";

/// Largest `result-max-age` / `result-max-future`, seconds (100 years).
const MAX_RESULT_WINDOW: u64 = 100 * 366 * 86_400;

/// The whole configuration.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(default, rename_all = "kebab-case", deny_unknown_fields)]
pub struct Config {
    /// Seconds after its last modification at which an order expires and is archived.
    #[schemars(range(min = 1))]
    pub order_timeout: u64,
    /// Seconds between rescans of `orders/` (a catch-up: new, replaced and removed files) and of
    /// `incoming/` (inotify does the rest).
    #[schemars(range(min = 1))]
    pub rescan_interval: u64,
    /// Collection is suspended while `incoming/` holds this many snapshots or more.
    #[schemars(range(min = 1))]
    pub queue_size: usize,
    /// Collection is suspended while the base directory's filesystem has less free space (MiB).
    pub min_free_space_mb: u64,
    /// Which engine measures `fping:` orders.
    pub engine: Engine,
    /// The fping binary used by `engine: fping` and as fallback.
    pub fping_path: PathBuf,
    /// The native ICMP engine's settings.
    pub icmp: IcmpOptions,
    /// Most orders in one batch (one probe run, one snapshot).
    #[schemars(range(min = 1))]
    pub max_batch: usize,
    /// Threads that read and aggregate a round's snapshots (HAProxy's are the costly ones); 0 =
    /// one per CPU. Ping results are applied on one thread.
    pub workers: usize,
    /// Seconds RRD updates may wait so that several steps go into an RRD with one update call
    /// (the snapshots stay in `incoming/`, marked `APPLIED`, as the journal; `last_result` and
    /// sinks are not delayed). 0 = apply every snapshot's RRD updates at once.
    pub rrd_flush_interval: u64,
    /// Seconds before now a result's `time` may be; an older one makes its snapshot quarantined
    /// (a clock far behind, a replay of old data).
    #[schemars(range(min = 1, max = MAX_RESULT_WINDOW))]
    pub result_max_age: u64,
    /// Seconds after now a result's `time` (and `updated`) may be; a later one makes its snapshot
    /// quarantined (a clock far ahead would make the RRD skip every real update until then).
    #[schemars(range(max = MAX_RESULT_WINDOW))]
    pub result_max_future: u64,
    /// Seconds after which archive entries are deleted; absent = never (as pingmachine).
    pub archive_retention: Option<u64>,
    /// Command for `sping:` orders (placeholders as in `exec:` orders).
    pub sping_command: Vec<String>,
    /// Command for `pping:` orders.
    pub pping_command: Vec<String>,
    /// Where results are forwarded besides `output/`: name → sink (none by default).
    #[serde(deserialize_with = "crate::sink::config::deserialize_sinks")]
    pub sinks: BTreeMap<String, SinkConfig>,
    /// HAProxy statistics pulling (haproxystats' `[pull]`): absent = off. `spoolmon pull` needs
    /// it; `spoolmon run` pulls too when it is present.
    pub pull: Option<PullOptions>,
    /// This node's name for the nodes it forwards to (their `output/@<node>/`): 1-64 ASCII
    /// letters, digits, `-`, `_`, `.`. Default: the host name (other characters made `-`).
    pub node_name: Option<String>,
    /// Receiving snapshots shipped from other spoolmon nodes: absent = this node listens
    /// nowhere. `spoolmon run` and `spoolmon process` listen when it is present.
    pub receive: Option<ReceiveOptions>,
    /// The HTTP API (`spoolmon serve` serves it, with its defaults when absent): `spoolmon run`
    /// serves it too when the section is present. Absent = `run` serves no API.
    pub api: Option<crate::api::options::ApiOptions>,
    /// How HAProxy snapshots are aggregated (haproxystats' `[process]`; defaults as there).
    pub process: HaproxyOptions,
    /// Seconds a stop (SIGTERM/SIGINT) may take to finish the work in hand before the process
    /// exits anyway; a second SIGTERM exits at once. Nothing on disk is lost either way.
    #[schemars(range(min = 1))]
    pub stop_timeout: u64,
    /// spoolmon's own metrics: `state/metrics*.prom`, `state/status*.json`, optionally sinks.
    pub self_metrics: SelfMetricsOptions,
}

impl Default for Config {
    fn default() -> Self {
        let orders = crate::orders::OrderOptions::default();
        Config {
            order_timeout: orders.order_timeout,
            rescan_interval: 30,
            queue_size: 360,
            min_free_space_mb: 100,
            engine: Engine::Auto,
            fping_path: PathBuf::from("fping"),
            icmp: IcmpOptions::default(),
            max_batch: 1000,
            workers: 0,
            rrd_flush_interval: 0,
            result_max_age: crate::spool::snapshot::PingBounds::DEFAULT_MAX_AGE,
            result_max_future: crate::spool::snapshot::PingBounds::DEFAULT_MAX_FUTURE,
            archive_retention: None,
            sping_command: orders.sping_command,
            pping_command: orders.pping_command,
            sinks: BTreeMap::new(),
            pull: None,
            node_name: None,
            receive: None,
            api: None,
            process: HaproxyOptions::default(),
            stop_timeout: 30,
            self_metrics: SelfMetricsOptions::default(),
        }
    }
}

/// A config file that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    // The cause is in the message and deliberately not the error's `source()`: printed with its
    // chain (`{:#}`, as the commands do) the OS error would otherwise appear twice.
    #[error("cannot read config file {path}: {cause}")]
    Read { path: PathBuf, cause: std::io::Error },
    #[error("invalid config file {path}: {message}")]
    Invalid { path: PathBuf, message: String },
}

impl Config {
    /// Reads and validates `path`.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|cause| ConfigError::Read {
            path: path.to_owned(),
            cause,
        })?;
        Config::parse(&text).map_err(|message| ConfigError::Invalid {
            path: path.to_owned(),
            message,
        })
    }

    /// Parses config text; an empty document means all defaults.
    pub fn parse(text: &str) -> Result<Config, String> {
        let config: Config = if text.trim().is_empty() {
            Config::default()
        } else {
            // Each of the `sinks:` is buffered whole (a YAML value, read by its `type:`): aliases
            // are bounded first (see crate::yaml_expansion).
            crate::yaml_expansion::check_expansion(text)?;
            yaml_serde::from_str(text).map_err(|e| e.to_string())?
        };
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> Result<(), String> {
        let positive = [
            ("order-timeout", self.order_timeout),
            ("rescan-interval", self.rescan_interval),
            ("queue-size", self.queue_size as u64),
            ("max-batch", self.max_batch as u64),
            ("icmp.send-rate", u64::from(self.icmp.send_rate)),
            ("icmp.timeout-ms", self.icmp.timeout_ms),
            ("stop-timeout", self.stop_timeout),
            ("result-max-age", self.result_max_age),
        ];
        for (key, value) in positive {
            if value == 0 {
                return Err(format!("{key}: must be at least 1"));
            }
        }
        // The window is added to and subtracted from unix seconds: keep it far from overflow.
        for (key, value) in [
            ("result-max-age", self.result_max_age),
            ("result-max-future", self.result_max_future),
        ] {
            if value > MAX_RESULT_WINDOW {
                return Err(format!(
                    "{key}: must be at most {MAX_RESULT_WINDOW} seconds (100 years)"
                ));
            }
        }
        if self.sping_command.is_empty() || self.pping_command.is_empty() {
            return Err("sping-command / pping-command: must name a program".into());
        }
        validate_sinks(&self.sinks)?;
        if let Some(pull) = &self.pull {
            pull.validate().map_err(|e| e.to_string())?;
        }
        if let Some(receive) = &self.receive {
            receive.validate().map_err(|e| e.to_string())?;
        }
        if let Some(api) = &self.api {
            api.validate().map_err(|e| e.to_string())?;
        }
        if let Some(name) = &self.node_name {
            crate::spool::ship::valid_node_name(name).map_err(|e| format!("node-name: {e}"))?;
        }
        self.process.validate().map_err(|e| format!("process.{e}"))?;
        self.self_metrics.validate(|name| {
            self.sinks
                .get(name)
                .map(|sink| sink.route_keys().takes(crate::sink::route::Kind::SelfMetrics))
        })?;
        Ok(())
    }

    /// What processing accepts in a ping snapshot: the time window and at most 4 x `max-batch`
    /// results (spoolmon's own snapshots hold at most `max-batch`; the margin keeps snapshots
    /// written before a smaller `max-batch` was configured).
    /// How long a child may be silent before it is stale (`receive: {child-timeout}`;
    /// `None` without a `receive:` section or with 0).
    pub fn child_timeout(&self) -> Option<std::time::Duration> {
        self.receive.as_ref().and_then(ReceiveOptions::child_timeout)
    }

    pub fn result_limits(&self) -> crate::process::ResultLimits {
        crate::process::ResultLimits {
            max_age: std::time::Duration::from_secs(self.result_max_age),
            max_future: std::time::Duration::from_secs(self.result_max_future),
            max_results: self.max_batch.saturating_mul(4),
        }
    }

    /// The Redis the API's `/series/` reads: the first sink of `type: redis` (by name).
    pub fn series_redis(&self) -> Option<crate::sink::redis::RedisOptions> {
        self.sinks.values().find_map(|sink| match sink {
            crate::sink::config::SinkConfig::Redis(options) => Some(options.clone()),
            _ => None,
        })
    }

    /// `node-name`, or the host name made a valid node name.
    pub fn node_name(&self) -> String {
        self.node_name.clone().unwrap_or_else(|| {
            let host = crate::sink::hostname::system_hostname();
            let mut name: String = host
                .chars()
                .map(|c| {
                    if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                        c
                    } else {
                        '-'
                    }
                })
                .take(crate::spool::ship::MAX_NODE_NAME)
                .collect();
            if crate::spool::ship::valid_node_name(&name).is_err() {
                name = format!("node{}", name.trim_start_matches(['.', '-']));
                name.truncate(crate::spool::ship::MAX_NODE_NAME);
            }
            name
        })
    }

    /// What the order book and the order parser use: `order-timeout`, `sping-command` and
    /// `pping-command`.
    pub fn order_options(&self) -> crate::orders::OrderOptions {
        crate::orders::OrderOptions {
            order_timeout: self.order_timeout,
            sping_command: self.sping_command.clone(),
            pping_command: self.pping_command.clone(),
        }
    }

    /// The configuration as YAML (for `--print-defaults` and `--print`).
    pub fn to_yaml(&self) -> String {
        yaml_serde::to_string(self).expect("config serializes")
    }

    /// `--print-defaults`: the defaults as YAML, and after `sinks: {}` and `pull: null` the
    /// defaults of each sink type and of a `pull:` section as commented-out blocks (each starting
    /// at its `# sinks:` / `# pull:` line), which, uncommented, are a valid config themselves.
    pub fn defaults_yaml() -> String {
        #[derive(Serialize)]
        struct Sinks {
            sinks: BTreeMap<String, SinkConfig>,
        }
        #[derive(Serialize)]
        struct Pull {
            pull: PullOptions,
        }
        #[derive(Serialize)]
        struct Receive {
            receive: ReceiveOptions,
        }
        let sinks = Sinks {
            sinks: BTreeMap::from([
                ("graphite".into(), SinkConfig::Graphite(Default::default())),
                ("influxdb".into(), SinkConfig::Influxdb(Default::default())),
                ("local-store".into(), SinkConfig::LocalStore(Default::default())),
                ("forward".into(), SinkConfig::Forward(forward_example())),
                ("redis".into(), SinkConfig::Redis(Default::default())),
                ("kafka".into(), SinkConfig::Kafka(kafka_example())),
            ]),
        };
        // A pull: section needs something to pull from, so the block names an example socket
        // directory (marked as such) where the default is none.
        let pull = Pull {
            pull: PullOptions {
                socket_dir: Some(PULL_EXAMPLE_SOCKET_DIR.into()),
                ..PullOptions::default()
            },
        };
        // A receive: section needs an address and a key: the block names examples (marked).
        let receive = Receive {
            receive: ReceiveOptions {
                listen: vec![RECEIVE_EXAMPLE_LISTEN.into()],
                api_keys: BTreeMap::from([(RECEIVE_EXAMPLE_KEY.into(), Default::default())]),
                ..ReceiveOptions::default()
            },
        };
        #[derive(Serialize)]
        struct Api {
            api: crate::api::options::ApiOptions,
        }
        let api = Api {
            api: Default::default(),
        };
        let commented = |intro: &str, yaml: String| {
            let mut block = format!("# {intro}\n");
            for line in yaml.lines() {
                block.push_str(&format!("# {line}\n").replace("# \n", "#\n"));
            }
            block
        };
        let mut out = String::new();
        for line in Config::default().to_yaml().lines() {
            out.push_str(line);
            out.push('\n');
            if line == "sinks: {}" {
                out.push_str(&commented(
                    "Every sink type with its defaults (name a sink as you like; give only the keys that differ):",
                    yaml_serde::to_string(&sinks)
                        .expect("sinks serialize")
                        .replace(
                            &format!("- {FORWARD_EXAMPLE_DESTINATION}"),
                            &format!(
                                "- {FORWARD_EXAMPLE_DESTINATION}  # an example: no default, name the receiving nodes"
                            ),
                        )
                        .replace(
                            &format!("- {KAFKA_EXAMPLE_BROKER}"),
                            &format!("- {KAFKA_EXAMPLE_BROKER}  # an example: no default, name the bootstrap brokers"),
                        ),
                ));
            } else if line == "pull: null" {
                let example = format!("socket-dir: {PULL_EXAMPLE_SOCKET_DIR}");
                out.push_str(&commented(
                    "A pull: section with its defaults (present = HAProxy statistics are pulled):",
                    yaml_serde::to_string(&pull).expect("pull serializes").replace(
                        &example,
                        &format!("{example}  # an example: no default, set socket-dir, servers or both"),
                    ),
                ));
            } else if line == "api: null" {
                out.push_str(&commented(
                    "An api: section with its defaults (present = spoolmon run serves the API; spoolmon serve uses these without one):",
                    yaml_serde::to_string(&api).expect("api serializes"),
                ));
            } else if line == "receive: null" {
                out.push_str(&commented(
                    "A receive: section with its defaults (present = this node receives snapshots from other nodes):",
                    yaml_serde::to_string(&receive)
                        .expect("receive serializes")
                        .replace(
                            &format!("- {RECEIVE_EXAMPLE_LISTEN}"),
                            &format!(
                                "- {RECEIVE_EXAMPLE_LISTEN}  # an example: no default, name this node's addresses"
                            ),
                        )
                        .replace(
                            &format!("{RECEIVE_EXAMPLE_KEY}:"),
                            &format!("{RECEIVE_EXAMPLE_KEY}:  # an example: make your own with uuidgen"),
                        ),
                ));
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn printed_defaults_parse_back_to_defaults() {
        let text = Config::default().to_yaml();
        assert_eq!(Config::parse(&text).unwrap(), Config::default());
    }

    /// The `# sinks:` / `# pull:` block of the printed defaults, uncommented.
    fn uncommented_block(printed: &str, first: &str) -> String {
        let start = printed
            .find(&format!("\n{first}\n"))
            .unwrap_or_else(|| panic!("{first} in:\n{printed}"))
            + 1;
        printed[start..]
            .lines()
            .take_while(|line| line.starts_with('#'))
            .map(|line| format!("{}\n", line.strip_prefix("# ").unwrap_or(line.trim_start_matches('#'))))
            .collect()
    }

    #[test]
    fn printed_defaults_show_every_sink_type_and_pull_commented_out() {
        let printed = Config::defaults_yaml();
        assert_eq!(Config::parse(&printed).unwrap(), Config::default());
        let sinks = Config::parse(&uncommented_block(&printed, "# sinks:")).unwrap().sinks;
        assert_eq!(
            sinks,
            BTreeMap::from([
                ("graphite".to_string(), SinkConfig::Graphite(Default::default())),
                ("influxdb".to_string(), SinkConfig::Influxdb(Default::default())),
                ("local-store".to_string(), SinkConfig::LocalStore(Default::default())),
                ("forward".to_string(), SinkConfig::Forward(forward_example())),
                ("redis".to_string(), SinkConfig::Redis(Default::default())),
                ("kafka".to_string(), SinkConfig::Kafka(kafka_example())),
            ])
        );
        assert!(
            printed.contains("#     - http://192.0.2.10:19999  # an example"),
            "{printed}"
        );
        let pull = Config::parse(&uncommented_block(&printed, "# pull:")).unwrap().pull;
        let example = PullOptions {
            socket_dir: Some(PULL_EXAMPLE_SOCKET_DIR.into()),
            ..PullOptions::default()
        };
        assert_eq!(pull, Some(example));
        assert!(
            printed.contains("#   socket-dir: /run/haproxy  # an example"),
            "{printed}"
        );
        let receive = Config::parse(&uncommented_block(&printed, "# receive:"))
            .unwrap()
            .receive;
        let example = ReceiveOptions {
            listen: vec![RECEIVE_EXAMPLE_LISTEN.into()],
            api_keys: BTreeMap::from([(RECEIVE_EXAMPLE_KEY.into(), Default::default())]),
            ..ReceiveOptions::default()
        };
        assert_eq!(receive, Some(example));
        // Graphite's port and InfluxDB's url are where an operator looks first.
        assert!(printed.contains("#     port: 2003\n"), "{printed}");
        assert!(printed.contains("#     url: udp://127.0.0.1:8094\n"), "{printed}");
        // The route defaults: InfluxDB leaves HAProxy metrics out, the others take everything.
        let takes = |sink: &str| sinks[sink].route_keys().takes_text();
        assert_eq!(takes("graphite"), "[ping, haproxy, self]");
        assert_eq!(takes("influxdb"), "[ping, self]");
        assert_eq!(takes("local-store"), "[ping, haproxy, self]");
        assert!(
            printed.contains("#     takes:\n#     - ping\n#     - self\n#     orders:\n#       include: []\n"),
            "{printed}"
        );
    }

    const ROUTED: &str = "sinks:
  pings:
    type: graphite
    namespace: ping
    takes: [ping]
    orders: {include: ['web/**', 'db/*'], exclude: ['web/test-*']}
  lb:
    type: graphite
    namespace: loadbalancers
    takes: [haproxy, self]
    metrics: {include: ['haproxy.frontend.*.scur', 'spoolmon.**'], exclude: ['**.Uptime_sec']}
  telegraf:
    type: influxdb
  debug:
    type: local-store
    dir: /tmp/ls
    takes: [haproxy]
self-metrics: {sinks: [lb, telegraf]}
";

    #[test]
    fn routes_parse_print_back_and_take_what_they_say() {
        use crate::process::handoff::Kind as Data;
        let config = Config::parse(ROUTED).unwrap();
        assert_eq!(Config::parse(&config.to_yaml()).unwrap(), config);
        let route = |name: &str| config.sinks[name].route_keys().compile().unwrap();
        let pings = route("pings");
        assert!(pings.takes(Data::Ping) && !pings.takes(Data::Haproxy) && !pings.takes(Data::SelfMetrics));
        assert!(pings.takes_order("web/eu/a") && pings.takes_order("db/a"));
        assert!(!pings.takes_order("web/test-1") && !pings.takes_order("db/eu/a") && !pings.takes_order("dns/a"));
        let lb = route("lb");
        assert!(!lb.takes(Data::Ping) && lb.takes(Data::Haproxy) && lb.takes(Data::SelfMetrics));
        assert!(lb.takes_metric("haproxy.frontend.www.scur") && lb.takes_metric("spoolmon.orders.active"));
        assert!(!lb.takes_metric("haproxy.frontend.www.stot") && !lb.takes_metric("spoolmon.process.Uptime_sec"));
        let telegraf = route("telegraf");
        assert!(telegraf.takes(Data::Ping) && !telegraf.takes(Data::Haproxy) && telegraf.takes(Data::SelfMetrics));
        let debug = route("debug");
        assert!(!debug.takes(Data::Ping) && debug.takes(Data::Haproxy));
    }

    #[test]
    fn bad_routes_are_named_at_their_key() {
        for (sink, key) in [
            (
                "{type: graphite, takes: [pings]}",
                "sinks.x.takes: unknown variant `pings`",
            ),
            (
                "{type: graphite, takes: [forwarded]}",
                "sinks.x.takes: unknown variant `forwarded`",
            ),
            ("{type: influxdb, takes: ping}", "sinks.x.takes"),
            (
                "{type: local-store, takes: []}",
                "sinks.x.takes: must name at least one",
            ),
            (
                "{type: graphite, orders: {inclde: [a]}}",
                "sinks.x.orders: unknown field `inclde`",
            ),
            ("{type: graphite, metrics: [a]}", "sinks.x.metrics"),
            ("{type: graphite, orders: {include: ['']}}", "sinks.x.orders.include[0]"),
            (
                "{type: graphite, orders: {exclude: [a, 'b[']}}",
                "sinks.x.orders.exclude[1]",
            ),
            (
                "{type: influxdb, metrics: {include: ['a***']}}",
                "sinks.x.metrics.include[0]",
            ),
            (
                "{type: graphite, takes: [ping], metrics: {include: [a]}}",
                "sinks.x.metrics: filters",
            ),
            (
                "{type: local-store, takes: [self], orders: {include: [a]}}",
                "sinks.x.orders: filters",
            ),
            ("{type: graphite, route: {takes: [ping]}}", "sinks.x.route: unknown key"),
        ] {
            let err = Config::parse(&format!("sinks: {{x: {sink}}}")).unwrap_err();
            assert!(err.contains(key), "{sink}: {err}");
        }
        let huge = format!(
            "sinks: {{x: {{type: graphite, orders: {{include: ['{}']}}}}}}",
            "*a".repeat(600)
        );
        let err = Config::parse(&huge).unwrap_err();
        assert!(
            err.contains("sinks.x.orders.include[0]") && err.contains("at most 1024"),
            "{err}"
        );
    }

    #[test]
    fn self_metrics_go_only_to_sinks_that_take_them() {
        let named = "sinks: {carbon: {type: graphite, takes: [ping, haproxy]}}\nself-metrics: {sinks: [carbon]}\n";
        let err = Config::parse(named).unwrap_err();
        assert!(
            err.contains("self-metrics.sinks") && err.contains("sinks.carbon.takes"),
            "{err}"
        );
        // `true` is every sink that takes self: no contradiction with a sink that does not.
        let all =
            "sinks: {carbon: {type: graphite, takes: [ping]}, own: {type: local-store}}\nself-metrics: {sinks: true}\n";
        Config::parse(all).unwrap();
        Config::parse("sinks: {own: {type: influxdb}}\nself-metrics: {sinks: [own]}\n").unwrap();
    }

    #[test]
    fn aliases_expanding_a_large_list_many_times_are_refused() {
        let n = 1000;
        let text = format!(
            "sping-command: &x [{}]\nsinks:\n  b: {{type: graphite, y: [{}]}}\n",
            "a, ".repeat(n),
            "*x, ".repeat(n)
        );
        let err = Config::parse(&text).unwrap_err();
        assert!(err.contains("alias expansion limit"), "{err}");
    }

    #[test]
    fn unknown_key_is_named_in_the_error() {
        let err = Config::parse("order-timeout: 10\nqueue-sise: 3\n").unwrap_err();
        assert!(err.contains("queue-sise"), "{err}");
    }

    #[test]
    fn zero_and_wrongly_typed_values_are_rejected() {
        assert!(Config::parse("queue-size: 0").unwrap_err().contains("queue-size"));
        assert!(Config::parse("order-timeout: soon").is_err());
        assert!(Config::parse("icmp: {send-rate: -5}").is_err());
    }

    #[test]
    fn the_result_window_has_documented_defaults_and_bounds() {
        let defaults = Config::default();
        assert_eq!((defaults.result_max_age, defaults.result_max_future), (604_800, 300));
        let printed = defaults.to_yaml();
        assert!(printed.contains("result-max-age: 604800"), "{printed}");
        assert!(printed.contains("result-max-future: 300"), "{printed}");
        let limits = Config::parse("result-max-age: 3600\nresult-max-future: 0\nmax-batch: 10\n")
            .unwrap()
            .result_limits();
        assert_eq!(limits.max_age.as_secs(), 3600);
        assert_eq!(limits.max_future.as_secs(), 0);
        assert_eq!(limits.max_results, 40);
        assert!(Config::parse("result-max-age: 0")
            .unwrap_err()
            .contains("result-max-age"));
        assert!(Config::parse("result-max-future: 99999999999")
            .unwrap_err()
            .contains("result-max-future"));
    }

    #[test]
    fn partial_config_keeps_other_defaults() {
        let config = Config::parse("engine: fping\nicmp: {timeout-ms: 500}\n").unwrap();
        assert_eq!(config.engine, Engine::Fping);
        assert_eq!(config.icmp.timeout_ms, 500);
        assert_eq!(config.icmp.send_rate, IcmpOptions::default().send_rate);
        assert_eq!(config.order_timeout, 3660);
    }

    const SINKS: &str = "sinks:
  carbon:
    type: graphite
    server: 127.0.0.2
    port: 2003
    namespace: ping
    outbox: {max-bytes: 2097152, max-age: 3600}
  telegraf:
    type: influxdb
    url: http://127.0.0.1:8086
    database: pings
  debug:
    type: local-store
    dir: /tmp/ls
";

    #[test]
    fn sinks_of_every_kind_parse_with_their_own_defaults_and_print_back() {
        let config = Config::parse(SINKS).unwrap();
        match &config.sinks["carbon"] {
            SinkConfig::Graphite(g) => {
                assert_eq!((g.server.as_str(), g.port, g.retries), ("127.0.0.2", 2003, 3));
                assert_eq!((g.outbox.max_bytes, g.outbox.max_age), (2_097_152, Some(3600.0)));
            }
            other => panic!("not graphite: {other:?}"),
        }
        match &config.sinks["telegraf"] {
            SinkConfig::Influxdb(i) => assert_eq!(i.database.as_deref(), Some("pings")),
            other => panic!("not influxdb: {other:?}"),
        }
        assert!(matches!(&config.sinks["debug"], SinkConfig::LocalStore(l) if l.dir == Path::new("/tmp/ls")));
        assert_eq!(Config::parse(&config.to_yaml()).unwrap(), config);
    }

    #[test]
    fn bad_sinks_are_named_in_the_error() {
        let unknown_type = Config::parse("sinks: {x: {type: kafka}}").unwrap_err();
        assert!(unknown_type.contains("kafka"), "{unknown_type}");
        let no_type = Config::parse("sinks: {x: {server: a}}").unwrap_err();
        assert!(no_type.contains("type"), "{no_type}");
        let typo = Config::parse("sinks: {x: {type: graphite, sever: a}}").unwrap_err();
        assert!(typo.contains("sever"), "{typo}");
        let bad_port = Config::parse("sinks: {x: {type: graphite, port: 0}}").unwrap_err();
        assert!(bad_port.contains("sinks.x") && bad_port.contains("port"), "{bad_port}");
        let small = Config::parse("sinks: {x: {type: graphite, outbox: {max-bytes: 10}}}").unwrap_err();
        assert!(small.contains("outbox.max-bytes"), "{small}");
        for name in ["../up", ".hidden", "a/b", "", &"n".repeat(65)] {
            let err = Config::parse(&format!("sinks: {{'{name}': {{type: graphite}}}}")).unwrap_err();
            assert!(err.contains("sink name"), "{name:?}: {err}");
        }
        let url = Config::parse("sinks: {x: {type: influxdb, url: 'ftp://h'}}").unwrap_err();
        assert!(url.contains("sinks.x"), "{url}");
    }

    #[test]
    fn a_typo_in_a_sink_names_the_sink_and_the_key() {
        for (text, path, accepted) in [
            (
                "sinks: {carbon: {type: graphite, sever: x}}",
                "sinks.carbon.sever",
                "`server`, `port`",
            ),
            (
                "sinks:\n  a: {type: local-store}\n  tele:\n    type: influxdb\n    databse: pings\n",
                "sinks.tele.databse",
                "`database`",
            ),
            (
                "sinks: {debug: {type: local-store, dri: /tmp}}",
                "sinks.debug.dri",
                "`dir`",
            ),
        ] {
            let err = Config::parse(text).unwrap_err();
            assert!(err.contains(path) && err.contains(accepted), "{text}: {err}");
        }
        for (text, expected) in [
            ("sinks: {x: {type: nats}}", "sinks.x.type"),
            ("sinks: {x: {server: a}}", "sinks.x: missing `type:`"),
            ("sinks: {x: graphite}", "sinks.x:"),
            ("sinks: {x: {type: graphite, port: many}}", "sinks.x"),
            ("sinks: {x: {type: graphite, outbox: {max-byte: 1}}}", "max-byte"),
        ] {
            let err = Config::parse(text).unwrap_err();
            assert!(err.contains(expected), "{text}: {err}");
        }
    }

    #[test]
    fn self_metrics_options_parse_and_bad_ones_name_their_key() {
        let config = Config::parse("sinks: {debug: {type: local-store, dir: /tmp/ls}}\nself-metrics: {interval: 5, sinks: [debug], prefix: mon.self}\n").unwrap();
        assert_eq!(config.self_metrics.interval, 5);
        assert_eq!(
            config.self_metrics.sinks,
            crate::selfmetrics::SinkSelection::Named(vec!["debug".into()])
        );
        assert_eq!(Config::parse(&config.to_yaml()).unwrap(), config);
        let all = Config::parse("self-metrics: {sinks: true}").unwrap();
        assert_eq!(all.self_metrics.sinks, crate::selfmetrics::SinkSelection::All(true));
        for (text, key) in [
            ("self-metrics: {interval: 0}", "self-metrics.interval"),
            ("self-metrics: {sinks: [nope]}", "self-metrics.sinks"),
            ("self-metrics: {prefix: 'a b'}", "self-metrics.prefix"),
            ("self-metrics: {prefix: ''}", "self-metrics.prefix"),
            ("self-metrics: {intervall: 3}", "intervall"),
            ("self-metrics: {sinks: 5}", "self-metrics.sinks"),
            (
                "self-metrics: {sinks: yes please}",
                "true, false or a list of sink names",
            ),
        ] {
            let err = Config::parse(text).unwrap_err();
            assert!(err.contains(key), "{text}: {err}");
        }
    }

    #[test]
    fn the_readme_self_metrics_example_is_a_valid_config() {
        let readme = include_str!("../README.md");
        let start = readme.find("```yaml\nself-metrics:").expect("README has the example") + "```yaml\n".len();
        let end = start + readme[start..].find("```").unwrap();
        assert_eq!(
            Config::parse(&readme[start..end]).unwrap().self_metrics,
            SelfMetricsOptions::default()
        );
    }

    #[test]
    fn the_readme_sinks_example_is_a_valid_config() {
        let readme = include_str!("../README.md");
        let start = readme.find("```yaml\nsinks:").expect("README has the sinks example") + "```yaml\n".len();
        let end = start + readme[start..].find("```").unwrap();
        let config = Config::parse(&readme[start..end]).unwrap();
        assert_eq!(config.sinks.len(), 5);
        assert!(matches!(&config.sinks["series"], SinkConfig::Redis(r) if r.server == "redis.example.net"));
        assert!(
            matches!(&config.sinks["bus"], SinkConfig::Kafka(k) if k.brokers.len() == 2
            && k.topic(crate::sink::kafka::MessageKind::SelfMetrics, "lb-01") == "spoolmon.self.lb-01")
        );
        assert_eq!(config.series_redis().unwrap().port, 6379);
    }

    #[test]
    fn the_readme_routing_example_is_a_valid_config_that_splits_the_kinds() {
        use crate::process::handoff::Kind as Data;
        let readme = include_str!("../README.md");
        let marker = "```yaml\nsinks:\n  pings:";
        let start = readme.find(marker).expect("README has the routing example") + "```yaml\n".len();
        let end = start + readme[start..].find("```").unwrap();
        let config = Config::parse(&readme[start..end]).unwrap();
        let route = |name: &str| config.sinks[name].route_keys().compile().unwrap();
        let (pings, lb, telegraf) = (route("pings"), route("lb"), route("telegraf"));
        assert!(pings.takes(Data::Ping) && !pings.takes(Data::Haproxy));
        assert!(!lb.takes(Data::Ping) && lb.takes(Data::Haproxy) && lb.takes(Data::SelfMetrics));
        assert!(lb.takes_metric("haproxy.backend.be.scur"));
        assert!(!lb.takes_metric("haproxy.backend.be.server.s1.scur"));
        assert!(!telegraf.takes(Data::Haproxy));
        assert!(
            telegraf.takes_order("web/eu/a") && !telegraf.takes_order("web/test-1") && !telegraf.takes_order("db/a")
        );
    }
}
