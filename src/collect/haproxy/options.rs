//! The `[pull]` options of haproxystats, with its defaults, as a YAML section.
//!
//! How haproxystats' options map onto spoolmon:
//!
//! | haproxystats | here |
//! |---|---|
//! | `socket-dir`, `servers`, `buffer-limit`, `retries`, `timeout`, `interval`, `pull-timeout`, `pull-interval`, `queue-size` | same key, same default, same unit |
//! | `[DEFAULT]` `retries` / `timeout` / `interval` | no inheritance: set them here (the defaults are `[pull]`'s) |
//! | `[paths] base-dir` | `--base-dir` |
//! | `dst-dir`, `tmp-dst-dir` | always `<base-dir>/incoming` and `<base-dir>/incoming.tmp` (rejected if set) |
//! | `workers` (threads writing files) | rejected: a snapshot is written in one step by the cycle itself |
//! | `loglevel` | rejected: `--log-level`, or `RUST_LOG=spoolmon::collect=debug` |
//! | — | `min-free-space-mb`: suspend pulling below this much free space (invariant 6) |
//!
//! The rejected keys are parsed only to say what to do instead: an option that would be accepted
//! and then ignored is worse than an error.

use crate::shared::option::{check_seconds, seconds, InvalidOption};
use serde::de::IgnoredAny;
use serde::{Deserialize, Deserializer, Serialize};
use std::path::PathBuf;
use std::time::Duration;

/// Settings of `spoolmon pull` (the `pull:` section).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(default, rename_all = "kebab-case", deny_unknown_fields)]
pub struct PullOptions {
    /// A directory of HAProxy stats sockets: every UNIX socket in it is pulled. Unset by default.
    pub socket_dir: Option<PathBuf>,
    /// Stats sockets to pull besides those in `socket-dir`: `unix:///path`, `tcp://host:port`,
    /// `tcp://[v6]:port`. A list, or one comma-separated string as in haproxystats. None by
    /// default.
    #[serde(deserialize_with = "list_or_comma_separated")]
    #[schemars(with = "ListOrString")]
    pub servers: Vec<String>,
    /// Largest reply accepted from one request, bytes; a larger one fails the cycle.
    /// Default 6291456.
    pub buffer_limit: u64,
    /// Further attempts after a failed request: 0 = one attempt, -1 = until `pull-timeout`.
    /// Default 1.
    pub retries: i64,
    /// Seconds to wait for a connection to be established. Default 0.1.
    pub timeout: f64,
    /// Seconds between attempts of a request. Default 0.5.
    pub interval: f64,
    /// Seconds a whole cycle may take; a cycle not complete by then publishes nothing.
    /// Default 2.
    pub pull_timeout: f64,
    /// Seconds between cycles; cycles start at wall-clock multiples of it. Default 10.
    pub pull_interval: u64,
    /// Pulling is suspended while `incoming/` holds this many snapshots or more. Default 360.
    pub queue_size: usize,
    /// Pulling is suspended while the base directory's filesystem has less free space (MiB).
    /// Default 100.
    pub min_free_space_mb: u64,
    #[serde(skip_serializing)]
    #[schemars(skip)]
    pub dst_dir: Option<IgnoredAny>,
    #[serde(skip_serializing)]
    #[schemars(skip)]
    pub tmp_dst_dir: Option<IgnoredAny>,
    #[serde(skip_serializing)]
    #[schemars(skip)]
    pub workers: Option<IgnoredAny>,
    #[serde(skip_serializing)]
    #[schemars(skip)]
    pub loglevel: Option<IgnoredAny>,
}

impl Default for PullOptions {
    fn default() -> Self {
        PullOptions {
            socket_dir: None,
            servers: Vec::new(),
            buffer_limit: 6_291_456,
            retries: 1,
            timeout: 0.1,
            interval: 0.5,
            pull_timeout: 2.0,
            pull_interval: 10,
            queue_size: 360,
            min_free_space_mb: 100,
            dst_dir: None,
            tmp_dst_dir: None,
            workers: None,
            loglevel: None,
        }
    }
}

/// `servers:` as written: a list, or one comma-separated string (also its schema).
#[derive(Deserialize, schemars::JsonSchema)]
#[serde(untagged)]
enum ListOrString {
    List(Vec<String>),
    Commas(String),
}

/// Accepts `[a, b]` or `"a,b"` (haproxystats' spelling); empty items are dropped.
fn list_or_comma_separated<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<String>, D::Error> {
    let items = match ListOrString::deserialize(deserializer)? {
        ListOrString::List(items) => items,
        ListOrString::Commas(text) => text.split(',').map(str::to_owned).collect(),
    };
    Ok(items
        .into_iter()
        .map(|item| item.trim().to_owned())
        .filter(|item| !item.is_empty())
        .collect())
}

impl PullOptions {
    /// Checks every option; the error names the first bad key (`pull.<key>`).
    pub fn validate(&self) -> Result<(), InvalidOption> {
        self.reject_retired_keys()?;
        if self.socket_dir.is_none() && self.servers.is_empty() {
            return Err(InvalidOption::new(
                "pull.socket-dir",
                "set socket-dir or servers (or both): there is nothing to pull from",
            ));
        }
        if self.socket_dir.as_ref().is_some_and(|dir| dir.as_os_str().is_empty()) {
            return Err(InvalidOption::new("pull.socket-dir", "must name a directory"));
        }
        super::source::parse_servers(&self.servers)?;
        if self.buffer_limit == 0 {
            return Err(InvalidOption::new("pull.buffer-limit", "must be at least 1 (bytes)"));
        }
        if self.retries < -1 {
            return Err(InvalidOption::new(
                "pull.retries",
                "must be -1 (until pull-timeout), 0 (one attempt) or more",
            ));
        }
        check_seconds("pull.timeout", self.timeout, 0.001)?;
        check_seconds("pull.interval", self.interval, 0.0)?;
        check_seconds("pull.pull-timeout", self.pull_timeout, 0.001)?;
        if self.pull_interval == 0 {
            return Err(InvalidOption::new("pull.pull-interval", "must be at least 1 (seconds)"));
        }
        if self.queue_size == 0 {
            return Err(InvalidOption::new("pull.queue-size", "must be at least 1"));
        }
        Ok(())
    }

    fn reject_retired_keys(&self) -> Result<(), InvalidOption> {
        let queue = "spoolmon always uses <base-dir>/incoming and <base-dir>/incoming.tmp: \
                     set --base-dir to haproxystats' base-dir instead";
        let retired = [
            ("pull.dst-dir", self.dst_dir.is_some(), queue),
            ("pull.tmp-dst-dir", self.tmp_dst_dir.is_some(), queue),
            (
                "pull.workers",
                self.workers.is_some(),
                "spoolmon writes each snapshot in one step, without writer threads: remove it",
            ),
            (
                "pull.loglevel",
                self.loglevel.is_some(),
                "use --log-level, or RUST_LOG=spoolmon::collect=debug for the collector alone",
            ),
        ];
        match retired.into_iter().find(|(_, set, _)| *set) {
            Some((key, _, advice)) => Err(InvalidOption::new(key, format!("not supported: {advice}"))),
            None => Ok(()),
        }
    }

    /// `timeout` as a duration.
    pub fn connect_timeout(&self) -> Duration {
        seconds(self.timeout)
    }

    /// `interval` as a duration.
    pub fn retry_interval(&self) -> Duration {
        seconds(self.interval)
    }

    /// `pull-timeout` as a duration.
    pub fn cycle_timeout(&self) -> Duration {
        seconds(self.pull_timeout)
    }

    /// `pull-interval` as a duration.
    pub fn cycle_interval(&self) -> Duration {
        Duration::from_secs(self.pull_interval)
    }

    /// Attempts a request may make: `None` = unlimited (`retries: -1`).
    pub fn attempts(&self) -> Option<u64> {
        u64::try_from(self.retries)
            .ok()
            .map(|retries| retries.saturating_add(1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(yaml: &str) -> Result<PullOptions, String> {
        let options: PullOptions = yaml_serde::from_str(yaml).map_err(|e| e.to_string())?;
        options.validate().map_err(|e| e.to_string())?;
        Ok(options)
    }

    #[test]
    fn defaults_are_haproxystats_defaults_and_print_back() {
        let options = parse("socket-dir: /run/haproxy").unwrap();
        let expected = PullOptions {
            socket_dir: Some("/run/haproxy".into()),
            ..PullOptions::default()
        };
        assert_eq!(options, expected);
        assert_eq!((options.retries, options.timeout, options.interval), (1, 0.1, 0.5));
        assert_eq!(
            (
                options.pull_timeout,
                options.pull_interval,
                options.queue_size,
                options.buffer_limit
            ),
            (2.0, 10, 360, 6_291_456)
        );
        let printed = yaml_serde::to_string(&options).unwrap();
        assert_eq!(parse(&printed).unwrap(), options);
    }

    #[test]
    fn servers_take_a_list_or_haproxystats_comma_separated_string() {
        let list = parse("servers: [unix:///run/a.sock, 'tcp://127.0.0.1:5555']").unwrap();
        let commas = parse("servers: 'unix:///run/a.sock, tcp://127.0.0.1:5555,'").unwrap();
        assert_eq!(list.servers, ["unix:///run/a.sock", "tcp://127.0.0.1:5555"]);
        assert_eq!(commas.servers, list.servers);
    }

    #[test]
    fn fractional_timeouts_and_unlimited_retries_are_accepted() {
        let options = parse("servers: tcp://h:1\npull-timeout: 0.4\nretries: -1\ntimeout: 0.05").unwrap();
        assert_eq!(options.cycle_timeout(), Duration::from_millis(400));
        assert_eq!(options.attempts(), None);
        assert_eq!(parse("servers: tcp://h:1\nretries: 0").unwrap().attempts(), Some(1));
        assert_eq!(parse("servers: tcp://h:1\nretries: 2").unwrap().attempts(), Some(3));
    }

    #[test]
    fn bad_values_are_named_by_key() {
        let cases = [
            ("pull-interval: 10", "pull.socket-dir"),
            ("servers: tcp://h:1\nretries: -2", "pull.retries"),
            ("servers: tcp://h:1\ntimeout: 0", "pull.timeout"),
            ("servers: tcp://h:1\npull-timeout: -1", "pull.pull-timeout"),
            ("servers: tcp://h:1\npull-interval: 0", "pull.pull-interval"),
            ("servers: tcp://h:1\nqueue-size: 0", "pull.queue-size"),
            ("servers: tcp://h:1\nbuffer-limit: 0", "pull.buffer-limit"),
            ("servers: 'tcp://h'", "pull.servers[0]"),
            ("servers: [unix:///a.sock, 'http://h:1']", "pull.servers[1]"),
        ];
        for (yaml, key) in cases {
            let err = parse(yaml).unwrap_err();
            assert!(err.starts_with(key), "{yaml:?}: {err}");
        }
    }

    #[test]
    fn keys_that_would_do_nothing_are_refused_with_advice() {
        for key in ["dst-dir: /x", "tmp-dst-dir: /x", "workers: 8", "loglevel: debug"] {
            let err = parse(&format!("socket-dir: /run/haproxy\n{key}")).unwrap_err();
            let name = key.split(':').next().unwrap();
            assert!(err.starts_with(&format!("pull.{name}: not supported")), "{err}");
        }
        let typo = parse("socket-dri: /run").unwrap_err();
        assert!(typo.contains("socket-dri"), "{typo}");
    }
}
