//! Metric paths below the Graphite sink's `<namespace>[.<host>].` prefix, as haproxystats spells
//! them:
//!
//! ```text
//! haproxy.daemon.<m>                          haproxy.daemon.process.<socket>.<m>
//! haproxy.frontend.<f>.<m>                    haproxy.backend.<b>.<m>
//! haproxy.backend.<b>.server.<s>.<m>          haproxy.server.<s>.<m>
//! haproxy.haproxystats.<m>
//! haproxy.<group-namespace>.<group>.frontend.<f>.<m>   (and so on for backends and servers)
//! ```
//!
//! Dots in HAProxy names become `_` (a dot separates Graphite levels).

use super::options::{GroupPatterns, HaproxyOptions};
use crate::shared::measurement::MetricBlock;
use std::borrow::Cow;

/// First component of every path.
pub const ROOT: &str = "haproxy.";
/// Prefix of the self-metrics (timings and counts).
pub const SELF_METRICS: &str = "haproxy.haproxystats.";
/// Prefix of the daemon metrics of all processes together.
pub const DAEMON: &str = "haproxy.daemon.";

/// `name` with every `.` replaced by `_`; borrowed when there is none.
pub fn graphite_name(name: &str) -> Cow<'_, str> {
    if name.contains('.') {
        Cow::Owned(name.replace('.', "_"))
    } else {
        Cow::Borrowed(name)
    }
}

/// Room reserved per metric path: the reference snapshot's paths average 61.4 bytes
/// (`haproxy.backend.<b>.server.<s>.<metric>`). The 48 reserved before made the block's string
/// grow once per snapshot, copying ~3.8 MB.
const PATH_BYTES: usize = 64;

/// Metrics produced so far, all at the snapshot's time, their paths in one string
/// ([`MetricBlock`]): no allocation per metric.
#[derive(Debug)]
pub struct MetricBuffer {
    block: MetricBlock,
}

impl MetricBuffer {
    /// Room for `capacity` metrics of [`PATH_BYTES`] each.
    pub fn new(time: i64, capacity: usize) -> MetricBuffer {
        MetricBuffer {
            block: MetricBlock::with_capacity(time, capacity, capacity * PATH_BYTES),
        }
    }

    /// Adds `<prefix><name> = value`.
    pub fn push(&mut self, prefix: &str, name: &str, value: f64) {
        self.block.push(prefix, name, value);
    }

    pub fn len(&self) -> usize {
        self.block.len()
    }

    pub fn into_block(self) -> MetricBlock {
        self.block
    }

    #[cfg(test)]
    pub fn into_metrics(self) -> Vec<crate::shared::measurement::Metric> {
        self.block.to_metrics()
    }
}

/// What a frontend, backend or server is matched against for `group-namespace`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GroupedBy {
    Frontend,
    Backend,
    Server,
}

/// `group-namespace` and the `*-groups` patterns: where each entity's metrics are written.
#[derive(Clone, Copy, Debug)]
pub struct Grouping<'o> {
    namespace: Option<&'o str>,
    double_writes: bool,
    frontends: &'o GroupPatterns,
    backends: &'o GroupPatterns,
    servers: &'o GroupPatterns,
}

impl<'o> Grouping<'o> {
    pub fn new(options: &'o HaproxyOptions) -> Grouping<'o> {
        Grouping {
            namespace: options.group_namespace.as_deref(),
            double_writes: options.group_namespace_double_writes.unwrap_or(false),
            frontends: &options.frontend_groups,
            backends: &options.backend_groups,
            servers: &options.server_groups,
        }
    }

    /// The prefixes under which the metrics of the entity named `name` (Graphite spelling) are
    /// written: `haproxy.<tail>` when it is in no group, `haproxy.<ns>.<group>.<tail>` when it
    /// is, and both with `group-namespace-double-writes`. `tail` ends with a dot.
    pub fn prefixes(&self, by: GroupedBy, name: &str, tail: &str) -> Vec<String> {
        let plain = || format!("{ROOT}{tail}");
        let group = self.namespace.and_then(|namespace| {
            let patterns = match by {
                GroupedBy::Frontend => self.frontends,
                GroupedBy::Backend => self.backends,
                GroupedBy::Server => self.servers,
            };
            patterns.group_of(name).map(|group| (namespace, group))
        });
        match group {
            None => vec![plain()],
            Some((namespace, group)) => {
                let grouped = format!("{ROOT}{namespace}.{group}.{tail}");
                if self.double_writes {
                    vec![grouped, plain()]
                } else {
                    vec![grouped]
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options(yaml: &str) -> HaproxyOptions {
        let options: HaproxyOptions = yaml_serde::from_str(yaml).unwrap();
        options.validate().unwrap();
        options
    }

    #[test]
    fn dots_become_underscores_without_copying_names_that_have_none() {
        assert_eq!(graphite_name("fe.example.com"), "fe_example_com");
        assert!(matches!(graphite_name("www"), Cow::Borrowed("www")));
    }

    #[test]
    fn without_a_namespace_everything_is_plain() {
        let options = HaproxyOptions::default();
        let grouping = Grouping::new(&options);
        assert_eq!(
            grouping.prefixes(GroupedBy::Frontend, "foo", "frontend.foo."),
            ["haproxy.frontend.foo."]
        );
    }

    #[test]
    fn grouped_entities_move_and_double_writes_keep_the_plain_path() {
        let single =
            options("group-namespace: flavor\ngroup-namespace-double-writes: false\nfrontend-groups: {abc: '^foo-'}\n");
        let grouping = Grouping::new(&single);
        assert_eq!(
            grouping.prefixes(GroupedBy::Frontend, "foo-001", "frontend.foo-001."),
            ["haproxy.flavor.abc.frontend.foo-001."]
        );
        assert_eq!(
            grouping.prefixes(GroupedBy::Frontend, "bar-001", "frontend.bar-001."),
            ["haproxy.frontend.bar-001."]
        );
        assert_eq!(
            grouping.prefixes(GroupedBy::Backend, "foo-001", "backend.foo-001."),
            ["haproxy.backend.foo-001."]
        );
        let double =
            options("group-namespace: flavor\ngroup-namespace-double-writes: true\nserver-groups: {web: 'web'}\n");
        assert_eq!(
            Grouping::new(&double).prefixes(GroupedBy::Server, "web1", "server.web1."),
            ["haproxy.flavor.web.server.web1.", "haproxy.server.web1."]
        );
    }
}
