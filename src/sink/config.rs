//! The `sinks:` section of the config: one [`SinkConfig`] per sink, keyed by its name, which also
//! names its `outbox/<name>/` directory.
//!
//! Invariant: a name that passes [`validate_sinks`] is a single, non-hidden path component, so
//! `outbox/<name>/` never leaves `outbox/`. Composed into the whole config by `crate::config`;
//! started by [`super::running::start`].

use super::graphite::GraphiteOptions;
use super::influx::InfluxOptions;
use super::local_store::LocalStoreOptions;
use crate::shared::option::InvalidOption;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// One sink under `sinks:` (keyed by its name, which names its `outbox/<name>/`): `type:` picks
/// the kind, the other keys are that kind's options.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "kebab-case")]
pub enum SinkConfig {
    Graphite(GraphiteOptions),
    Influxdb(InfluxOptions),
    LocalStore(LocalStoreOptions),
}

impl SinkConfig {
    fn validate(&self) -> Result<(), InvalidOption> {
        match self {
            SinkConfig::Graphite(options) => options.validate(),
            SinkConfig::Influxdb(options) => options.validate(),
            SinkConfig::LocalStore(options) => options.validate(),
        }
    }
}

/// True for names usable as a directory under `outbox/`: 1–64 of `[A-Za-z0-9_.-]`, not
/// starting with a dot.
fn valid_sink_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
}

/// Checks every sink's name and options; the error names the sink (`sinks.<name>: ...`).
pub fn validate_sinks(sinks: &BTreeMap<String, SinkConfig>) -> Result<(), String> {
    for (name, sink) in sinks {
        if !valid_sink_name(name) {
            return Err(format!(
                "sinks.{name}: a sink name must be 1-64 letters, digits, '_', '-' or '.' (not starting with '.')"
            ));
        }
        sink.validate().map_err(|e| format!("sinks.{name}: {e}"))?;
    }
    Ok(())
}
