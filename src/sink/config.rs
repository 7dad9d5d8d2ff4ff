//! The `sinks:` section of the config: one [`SinkConfig`] per sink, keyed by its name, which also
//! names its `outbox/<name>/` directory.
//!
//! Invariant: a name that passes [`validate_sinks`] is a single, non-hidden path component, so
//! `outbox/<name>/` never leaves `outbox/`. Composed into the whole config by `crate::config`
//! (which reads the section with [`deserialize_sinks`]); started by [`super::running::start`].

use super::forward::ForwardOptions;
use super::graphite::GraphiteOptions;
use super::influx::InfluxOptions;
use super::kafka::KafkaOptions;
use super::local_store::LocalStoreOptions;
use super::redis::RedisOptions;
use super::route::{Kind, MetricGlobs, OrderGlobs, RouteKeys};
use crate::shared::option::InvalidOption;
use serde::de::{DeserializeOwned, Error as _};
use serde::{Deserialize, Deserializer, Serialize};
use std::collections::BTreeMap;

/// One sink under `sinks:` (keyed by its name, which names its `outbox/<name>/`): `type:` picks
/// the kind, the other keys are that kind's options. Printed as one mapping with its `type:`;
/// read by [`deserialize_sinks`].
#[derive(Clone, Debug, PartialEq, Serialize, schemars::JsonSchema)]
#[serde(tag = "type", rename_all = "kebab-case")]
pub enum SinkConfig {
    Graphite(GraphiteOptions),
    Influxdb(InfluxOptions),
    LocalStore(LocalStoreOptions),
    Forward(ForwardOptions),
    Redis(RedisOptions),
    Kafka(KafkaOptions),
}

/// A sink's `type:`, read before its options.
#[derive(Clone, Copy, Deserialize)]
#[serde(rename_all = "kebab-case")]
enum SinkType {
    Graphite,
    Influxdb,
    LocalStore,
    Forward,
    Redis,
    Kafka,
}

/// Reads the `sinks:` section (`deserialize_with` of the config's `sinks`).
///
/// Not serde's internally tagged enum: that buffers each sink and reports an unknown key at the
/// `sinks:` section, without the sink. Each sink is read as a YAML value first, its `type:`
/// picks the options struct (each `deny_unknown_fields`), and every error is prefixed with
/// `sinks.<name>`; a key that sink type does not take is named as `sinks.<name>.<key>` with the
/// keys it takes. (The price: these errors carry no line and column, which YAML values do not
/// keep; before, they pointed at the `sinks:` section, not at the key.)
pub fn deserialize_sinks<'de, D: Deserializer<'de>>(deserializer: D) -> Result<BTreeMap<String, SinkConfig>, D::Error> {
    BTreeMap::<String, yaml_serde::Value>::deserialize(deserializer)?
        .into_iter()
        .map(|(name, value)| {
            let sink = SinkConfig::from_yaml(&name, value).map_err(D::Error::custom)?;
            Ok((name, sink))
        })
        .collect()
}

impl SinkConfig {
    /// One sink from its YAML value; the error names the sink (see [`deserialize_sinks`]).
    fn from_yaml(name: &str, value: yaml_serde::Value) -> Result<SinkConfig, String> {
        let yaml_serde::Value::Mapping(mut keys) = value else {
            return Err(format!(
                "sinks.{name}: a sink is a mapping with a `type:` (graphite, influxdb, local-store, forward, redis or kafka)"
            ));
        };
        let kind = keys.remove("type").ok_or_else(|| {
            format!("sinks.{name}: missing `type:` (graphite, influxdb, local-store, forward, redis or kafka)")
        })?;
        let kind: SinkType = yaml_serde::from_value(kind).map_err(|e| format!("sinks.{name}.type: {e}"))?;
        check_route_keys(name, &keys)?;
        let keys = yaml_serde::Value::Mapping(keys);
        Ok(match kind {
            SinkType::Graphite => SinkConfig::Graphite(options(name, keys)?),
            SinkType::Influxdb => SinkConfig::Influxdb(options(name, keys)?),
            SinkType::LocalStore => SinkConfig::LocalStore(options(name, keys)?),
            SinkType::Forward => SinkConfig::Forward(options(name, keys)?),
            SinkType::Redis => SinkConfig::Redis(options(name, keys)?),
            SinkType::Kafka => SinkConfig::Kafka(options(name, keys)?),
        })
    }

    fn validate(&self) -> Result<(), InvalidOption> {
        match self {
            SinkConfig::Graphite(options) => options.validate(),
            SinkConfig::Influxdb(options) => options.validate(),
            SinkConfig::LocalStore(options) => options.validate(),
            SinkConfig::Forward(options) => options.validate(),
            SinkConfig::Redis(options) => options.validate(),
            SinkConfig::Kafka(options) => options.validate(),
        }
    }

    /// The sink's routing keys (`takes`, `orders`, `metrics`; the same for every type).
    pub fn route_keys(&self) -> RouteKeys<'_> {
        match self {
            SinkConfig::Graphite(options) => options.route_keys(),
            SinkConfig::Influxdb(options) => options.route_keys(),
            SinkConfig::LocalStore(options) => options.route_keys(),
            SinkConfig::Forward(options) => options.route_keys(),
            SinkConfig::Redis(options) => options.route_keys(),
            SinkConfig::Kafka(options) => options.route_keys(),
        }
    }
}

/// Reads the routing keys of sink `name` on their own first, so a wrong kind or a typo inside
/// `orders:` / `metrics:` is named at its key (`sinks.<name>.takes: unknown variant ...`).
fn check_route_keys(name: &str, keys: &yaml_serde::Mapping) -> Result<(), String> {
    fn check<T: DeserializeOwned>(name: &str, key: &str, keys: &yaml_serde::Mapping) -> Result<(), String> {
        match keys.get(key) {
            Some(value) => yaml_serde::from_value::<T>(value.clone())
                .map(drop)
                .map_err(|e| format!("sinks.{name}.{key}: {e}")),
            None => Ok(()),
        }
    }
    check::<Vec<Kind>>(name, "takes", keys)?;
    check::<OrderGlobs>(name, "orders", keys)?;
    check::<MetricGlobs>(name, "metrics", keys)
}

/// The options of sink `name` from its keys without `type:`. When they are refused and a
/// top-level key is none of the options' own (the keys the defaults print), the error names that
/// key and the accepted ones; otherwise it is serde's, after `sinks.<name>: `.
fn options<T: DeserializeOwned + Serialize + Default>(name: &str, keys: yaml_serde::Value) -> Result<T, String> {
    yaml_serde::from_value(keys.clone()).map_err(|e| {
        let accepted = match yaml_serde::to_value(T::default()) {
            Ok(yaml_serde::Value::Mapping(defaults)) => defaults,
            _ => return format!("sinks.{name}: {e}"),
        };
        let unknown = keys
            .as_mapping()
            .into_iter()
            .flat_map(|keys| keys.keys())
            .filter_map(|key| key.as_str())
            .find(|key| !accepted.contains_key(*key));
        match unknown {
            Some(key) => {
                let accepted: Vec<String> = accepted
                    .keys()
                    .filter_map(|key| key.as_str())
                    .map(|key| format!("`{key}`"))
                    .collect();
                format!(
                    "sinks.{name}.{key}: unknown key, expected `type` or one of {}",
                    accepted.join(", ")
                )
            }
            None => format!("sinks.{name}: {e}"),
        }
    })
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
        sink.route_keys().validate().map_err(|e| format!("sinks.{name}.{e}"))?;
    }
    Ok(())
}
