//! The `[process]` options of haproxystats with its defaults, plus its `group-namespace` and
//! `*-groups` sections, as one serde struct for spoolmon's YAML config.
//!
//! Metric selections may be written as haproxystats does (`"scur bin bout"`) or as a YAML list.
//! Group sections are maps of group name to regular expression, tried in the order written.

use super::catalog::{self, MetricSpec};
use crate::shared::option::{check_printable, InvalidOption};
use regex::Regex;
use serde::de::{IgnoredAny, MapAccess, Visitor};
use serde::ser::SerializeMap;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;
use std::path::PathBuf;

/// haproxystats' `[process]` section (see the module documentation of `process::haproxy`).
/// Every default is haproxystats': all metrics, no grouping, no extras.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(default, rename_all = "kebab-case", deny_unknown_fields)]
pub struct HaproxyOptions {
    /// haproxystats' `src-dir`, `workers` and `liveness-check-interval` have no meaning here
    /// (spoolmon reads `<base-dir>/incoming`, its pool size is the top-level `workers`, and
    /// there are no worker processes to watch): refused with that advice, never silently ignored.
    #[serde(skip_serializing)]
    #[schemars(skip)]
    pub src_dir: Option<IgnoredAny>,
    #[serde(skip_serializing)]
    #[schemars(skip)]
    pub workers: Option<IgnoredAny>,
    #[serde(skip_serializing)]
    #[schemars(skip)]
    pub liveness_check_interval: Option<IgnoredAny>,
    /// Frontend metrics to send; default all of [`catalog::FRONTEND`].
    pub frontend_metrics: Option<MetricNames>,
    /// Backend metrics to send; default all of [`catalog::BACKEND`] (`TotalServers` is always sent).
    pub backend_metrics: Option<MetricNames>,
    /// Server metrics to send; default all of [`catalog::SERVER`].
    pub server_metrics: Option<MetricNames>,
    /// Also send servers aggregated by name across backends (`.server.<s>.<m>`). Default false.
    pub aggr_server_metrics: bool,
    /// File of frontend names (one per line, `#` comments) to leave out; re-read per snapshot.
    pub exclude_frontends: Option<PathBuf>,
    /// File of backend names to leave out, with their servers; re-read per snapshot.
    pub exclude_backends: Option<PathBuf>,
    /// Also send the daemon metrics of each process, as `daemon.process.<socket>.<m>`. Default false.
    pub per_process_metrics: bool,
    /// Send ConnPercentage, ConnRatePercentage, SslConnPercentage, SslRatePercentage. Default false.
    pub calculate_percentages: bool,
    /// Path component under which grouped frontends, backends and servers are sent. Default none.
    pub group_namespace: Option<String>,
    /// With `group-namespace`: also send every grouped metric under its plain path. Required when
    /// `group-namespace` is set.
    pub group_namespace_double_writes: Option<bool>,
    /// Group name → pattern matched against frontend names (dots already `_`).
    pub frontend_groups: GroupPatterns,
    /// Group name → pattern matched against backend names.
    pub backend_groups: GroupPatterns,
    /// Group name → pattern matched against server names.
    pub server_groups: GroupPatterns,
}

impl HaproxyOptions {
    fn reject_retired_keys(&self) -> Result<(), InvalidOption> {
        let retired = [
            (
                "src-dir",
                self.src_dir.is_some(),
                "spoolmon processes <base-dir>/incoming: set --base-dir instead",
            ),
            (
                "workers",
                self.workers.is_some(),
                "the processing pool's size is the top-level `workers` key",
            ),
            (
                "liveness-check-interval",
                self.liveness_check_interval.is_some(),
                "spoolmon has no worker processes to watch: remove it",
            ),
        ];
        match retired.into_iter().find(|(_, set, _)| *set) {
            Some((key, _, advice)) => Err(InvalidOption::new(key, advice)),
            None => Ok(()),
        }
    }

    /// Checks every option; the error names the first bad key (without a section prefix).
    /// Unknown metric names in a selection and unreadable exclude files refuse to start.
    pub fn validate(&self) -> Result<(), InvalidOption> {
        self.reject_retired_keys()?;
        check_selection("frontend-metrics", &self.frontend_metrics, &catalog::FRONTEND)?;
        check_selection("backend-metrics", &self.backend_metrics, &catalog::BACKEND)?;
        check_selection("server-metrics", &self.server_metrics, &catalog::SERVER)?;
        for (key, file) in [
            ("exclude-frontends", &self.exclude_frontends),
            ("exclude-backends", &self.exclude_backends),
        ] {
            if let Some(path) = file {
                std::fs::read(path).map_err(|e| InvalidOption::new(key, format!("{}: {e}", path.display())))?;
            }
        }
        self.check_groups()
    }

    /// The frontend metrics to send, in catalog order.
    pub fn frontend_specs(&self) -> Vec<MetricSpec> {
        catalog::select(&catalog::FRONTEND, self.frontend_metrics.as_ref().map(|n| &n.0[..]))
    }

    /// The backend metrics to send, in catalog order (without `TotalServers`).
    pub fn backend_specs(&self) -> Vec<MetricSpec> {
        catalog::select(&catalog::BACKEND, self.backend_metrics.as_ref().map(|n| &n.0[..]))
    }

    /// The server metrics to send, in catalog order.
    pub fn server_specs(&self) -> Vec<MetricSpec> {
        catalog::select(&catalog::SERVER, self.server_metrics.as_ref().map(|n| &n.0[..]))
    }

    fn check_groups(&self) -> Result<(), InvalidOption> {
        let sections = [
            ("frontend-groups", &self.frontend_groups),
            ("backend-groups", &self.backend_groups),
            ("server-groups", &self.server_groups),
        ];
        for (key, groups) in sections {
            for group in &groups.0 {
                check_component(key, &group.name)?;
            }
        }
        let Some(namespace) = &self.group_namespace else {
            if let Some((key, _)) = sections.iter().find(|(_, groups)| !groups.0.is_empty()) {
                return Err(InvalidOption::new(key, "has no effect without group-namespace"));
            }
            if self.group_namespace_double_writes.is_some() {
                return Err(InvalidOption::new(
                    "group-namespace-double-writes",
                    "has no effect without group-namespace",
                ));
            }
            return Ok(());
        };
        check_component("group-namespace", namespace)?;
        if sections.iter().all(|(_, groups)| groups.0.is_empty()) {
            return Err(InvalidOption::new(
                "group-namespace",
                "needs at least one of frontend-groups, backend-groups, server-groups",
            ));
        }
        if self.group_namespace_double_writes.is_none() {
            return Err(InvalidOption::new(
                "group-namespace-double-writes",
                "must be true or false when group-namespace is set",
            ));
        }
        Ok(())
    }
}

/// Every name in `selection` must be a metric of `catalog`; an empty selection sends nothing
/// and is refused too.
fn check_selection(key: &str, selection: &Option<MetricNames>, catalog: &[MetricSpec]) -> Result<(), InvalidOption> {
    let Some(names) = selection else { return Ok(()) };
    if names.0.is_empty() {
        return Err(InvalidOption::new(key, "must name at least one metric"));
    }
    match names.0.iter().find(|n| !catalog.iter().any(|(known, _)| known == n)) {
        Some(unknown) => {
            let known: Vec<&str> = catalog.iter().map(|(n, _)| *n).collect();
            Err(InvalidOption::new(
                key,
                format!("unknown metric {unknown:?}; known: {}", known.join(" ")),
            ))
        }
        None => Ok(()),
    }
}

/// One Graphite path component: non-empty, no dot, no whitespace or control character.
fn check_component(key: &str, value: &str) -> Result<(), InvalidOption> {
    check_printable(key, value)?;
    if value.is_empty() || value.contains('.') {
        return Err(InvalidOption::new(
            key,
            format!("{value:?} must be one non-empty path component without dots"),
        ));
    }
    Ok(())
}

/// Metric names, written `"a b c"` (haproxystats) or as a list.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(from = "NamesAsWritten", into = "Vec<String>")]
pub struct MetricNames(pub Vec<String>);

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(untagged)]
enum NamesAsWritten {
    Words(String),
    List(Vec<String>),
}

impl From<NamesAsWritten> for MetricNames {
    fn from(written: NamesAsWritten) -> Self {
        match written {
            NamesAsWritten::Words(words) => MetricNames(words.split_whitespace().map(String::from).collect()),
            NamesAsWritten::List(list) => MetricNames(list),
        }
    }
}

impl From<MetricNames> for Vec<String> {
    fn from(names: MetricNames) -> Self {
        names.0
    }
}

/// One group: its name (a path component) and the pattern that puts a name in it.
#[derive(Clone, Debug)]
pub struct GroupPattern {
    pub name: String,
    pub pattern: Regex,
}

/// Groups in the order written; the first whose pattern matches (anywhere in the name) wins.
#[derive(Clone, Debug, Default)]
pub struct GroupPatterns(pub Vec<GroupPattern>);

impl GroupPatterns {
    /// The group `name` belongs to, if any.
    pub fn group_of(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|group| group.pattern.is_match(name))
            .map(|group| group.name.as_str())
    }
}

impl PartialEq for GroupPatterns {
    fn eq(&self, other: &Self) -> bool {
        self.0.len() == other.0.len()
            && self
                .0
                .iter()
                .zip(&other.0)
                .all(|(a, b)| a.name == b.name && a.pattern.as_str() == b.pattern.as_str())
    }
}

impl Serialize for GroupPatterns {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(self.0.len()))?;
        for group in &self.0 {
            map.serialize_entry(&group.name, group.pattern.as_str())?;
        }
        map.end()
    }
}

/// In the schema (and so the config reference) what a user writes: group name → pattern.
impl schemars::JsonSchema for GroupPatterns {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "GroupPatterns".into()
    }

    fn inline_schema() -> bool {
        true
    }

    fn json_schema(generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
        <std::collections::BTreeMap<String, String>>::json_schema(generator)
    }
}

impl<'de> Deserialize<'de> for GroupPatterns {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_map(GroupPatternsVisitor)
    }
}

/// Reads a map in document order, compiling each pattern (a bad one names its group).
struct GroupPatternsVisitor;

impl<'de> Visitor<'de> for GroupPatternsVisitor {
    type Value = GroupPatterns;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a map of group name to regular expression")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<GroupPatterns, A::Error> {
        let mut groups: Vec<GroupPattern> = Vec::new();
        while let Some((name, pattern)) = map.next_entry::<String, String>()? {
            if groups.iter().any(|g| g.name == name) {
                return Err(serde::de::Error::custom(format!("group {name:?} appears twice")));
            }
            let pattern = Regex::new(&pattern)
                .map_err(|e| serde::de::Error::custom(format!("group {name:?}: bad pattern: {e}")))?;
            groups.push(GroupPattern { name, pattern });
        }
        Ok(GroupPatterns(groups))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(yaml: &str) -> Result<HaproxyOptions, String> {
        let options: HaproxyOptions = yaml_serde::from_str(yaml).map_err(|e| e.to_string())?;
        options.validate().map_err(|e| e.to_string())?;
        Ok(options)
    }

    #[test]
    fn defaults_are_haproxystats_defaults_and_print_back() {
        let defaults = HaproxyOptions::default();
        assert!(!defaults.per_process_metrics && !defaults.calculate_percentages && !defaults.aggr_server_metrics);
        assert_eq!(defaults.frontend_specs().len(), 31);
        assert_eq!(defaults.backend_specs().len(), 40);
        assert_eq!(defaults.server_specs().len(), 32);
        let printed = yaml_serde::to_string(&defaults).unwrap();
        assert_eq!(parse(&printed).unwrap(), defaults);
    }

    #[test]
    fn haproxystats_keys_without_meaning_here_are_refused_with_advice() {
        for (key, advice) in [
            ("src-dir: /var/lib/haproxystats/incoming", "--base-dir"),
            ("workers: 4", "top-level `workers`"),
            ("liveness-check-interval: 10", "no worker processes"),
        ] {
            let err = parse(key).unwrap_err();
            assert!(
                err.contains(key.split(':').next().unwrap()) && err.contains(advice),
                "{err}"
            );
        }
    }

    #[test]
    fn selections_accept_words_or_lists_and_refuse_unknown_metrics() {
        let options = parse("frontend-metrics: scur  bin\nserver-metrics: [rtime, stot]\n").unwrap();
        assert_eq!(
            options.frontend_specs().iter().map(|s| s.0).collect::<Vec<_>>(),
            ["bin", "scur"]
        );
        assert_eq!(options.server_specs().len(), 2);
        let err = parse("backend-metrics: scur sessions\n").unwrap_err();
        assert!(
            err.starts_with("backend-metrics:") && err.contains("\"sessions\""),
            "{err}"
        );
        assert!(parse("server-metrics: ''\n")
            .unwrap_err()
            .starts_with("server-metrics:"));
        assert!(parse("frontend-metrics: act\n").unwrap_err().contains("\"act\""));
    }

    #[test]
    fn unknown_keys_and_missing_exclude_files_are_named() {
        assert!(parse("per-process-metric: true\n")
            .unwrap_err()
            .contains("per-process-metric"));
        let err = parse("exclude-backends: /nonexistent/spoolmon-excl\n").unwrap_err();
        assert!(err.starts_with("exclude-backends:"), "{err}");
        assert!(parse("workers: 0\n").unwrap_err().starts_with("workers:"));
    }

    #[test]
    fn groups_keep_their_order_and_need_a_namespace() {
        let yaml = "group-namespace: flavor\ngroup-namespace-double-writes: false\n\
                    frontend-groups: {zz: '^fe_0', aa: '^fe_'}\n";
        let options = parse(yaml).unwrap();
        assert_eq!(options.frontend_groups.group_of("fe_001"), Some("zz"));
        assert_eq!(options.frontend_groups.group_of("fe_101"), Some("aa"));
        assert_eq!(options.frontend_groups.group_of("www"), None);
        assert_eq!(parse(&yaml_serde::to_string(&options).unwrap()).unwrap(), options);

        let no_namespace = parse("backend-groups: {a: x}\n").unwrap_err();
        assert!(no_namespace.starts_with("backend-groups:"), "{no_namespace}");
        let no_groups = parse("group-namespace: g\ngroup-namespace-double-writes: true\n").unwrap_err();
        assert!(no_groups.starts_with("group-namespace:"), "{no_groups}");
        let no_flag = parse("group-namespace: g\nserver-groups: {a: x}\n").unwrap_err();
        assert!(no_flag.starts_with("group-namespace-double-writes:"), "{no_flag}");
        let dotted = parse("group-namespace: a.b\ngroup-namespace-double-writes: true\nserver-groups: {a: x}\n");
        assert!(dotted.unwrap_err().starts_with("group-namespace:"));
        let bad_regex = parse("group-namespace: g\ngroup-namespace-double-writes: true\nserver-groups: {a: '('}\n");
        assert!(bad_regex.unwrap_err().contains("\"a\""));
    }
}
