//! The shared vocabulary of the pipeline: order ids, RRD templates and one measurement result.
//!
//! Every stage uses these types; conversion to YAML, JSON, RRD arguments or line protocol happens at
//! the edges (orders parsing, snapshot files, output, sinks).

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;
use std::path::{Component, Path, PathBuf};

/// An order's identity: its path relative to `orders/`, with `/` separators (e.g. `app1/target1`).
///
/// Construction guarantees a relative path of normal components only (no `..`, no `.`, no empty
/// component, no NUL), so `base.join(id.as_path())` never leaves `base`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct OrderId(String);

/// Why a string is not an order id.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid order id {0:?}: must be a relative path of plain names (no '..', '.', empty parts or NUL)")]
pub struct InvalidOrderId(pub String);

impl OrderId {
    /// Validates `s` as an order id.
    pub fn new(s: impl Into<String>) -> Result<Self, InvalidOrderId> {
        let s = s.into();
        let valid = !s.is_empty()
            && !s.contains('\0')
            && !s.starts_with('/')
            && s.split('/').all(|part| !part.is_empty() && part != "." && part != "..");
        if valid {
            Ok(OrderId(s))
        } else {
            Err(InvalidOrderId(s))
        }
    }

    /// The id of the file at `path` below `root`, if `path` lies below it.
    pub fn from_relative_path(root: &Path, path: &Path) -> Result<Self, InvalidOrderId> {
        let rel = path
            .strip_prefix(root)
            .map_err(|_| InvalidOrderId(path.display().to_string()))?;
        let mut parts = Vec::new();
        for component in rel.components() {
            match component {
                Component::Normal(name) => match name.to_str() {
                    Some(name) => parts.push(name),
                    None => return Err(InvalidOrderId(rel.display().to_string())),
                },
                _ => return Err(InvalidOrderId(rel.display().to_string())),
            }
        }
        OrderId::new(parts.join("/"))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The id as a relative path, to join onto `orders/`, `output/` or `archive/`.
    pub fn as_path(&self) -> PathBuf {
        PathBuf::from(&self.0)
    }
}

impl TryFrom<String> for OrderId {
    type Error = InvalidOrderId;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        OrderId::new(s)
    }
}

impl From<OrderId> for String {
    fn from(id: OrderId) -> String {
        id.0
    }
}

impl fmt::Display for OrderId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// How an order's results are stored: pingmachine's Smokeping-style RRD, or no RRD at all.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum RrdTemplate {
    #[default]
    Smokeping,
    Norrd,
}

/// Where an order's results are forwarded to time-series systems: a measurement name and tags.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TelegrafMeta {
    pub measurement_name: String,
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
}

/// One named value at one time that is not a ping result: a HAProxy aggregate, a self-metric.
#[derive(Clone, Debug, PartialEq)]
pub struct Metric {
    /// Dotted Graphite-style path below the sink's namespace, e.g. `haproxy.frontend.www.scur`.
    pub path: String,
    pub value: f64,
    /// Unix seconds.
    pub time: i64,
}

/// A metric borrowed from where it is kept: a [`Metric`] or an entry of a [`MetricBlock`].
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct MetricRef<'a> {
    /// As [`Metric::path`].
    pub path: &'a str,
    pub value: f64,
    /// Unix seconds.
    pub time: i64,
    /// The node it was measured on, for a metric received from another node (its block's).
    pub origin: Option<&'a super::node::Provenance>,
}

impl<'a> From<&'a Metric> for MetricRef<'a> {
    fn from(metric: &'a Metric) -> MetricRef<'a> {
        MetricRef {
            path: &metric.path,
            value: metric.value,
            time: metric.time,
            origin: None,
        }
    }
}

impl MetricRef<'_> {
    pub fn to_metric(self) -> Metric {
        Metric {
            path: self.path.to_owned(),
            value: self.value,
            time: self.time,
        }
    }
}

/// Many metrics of one time with their paths in one string: what a HAProxy snapshot becomes
/// (~80,000 metrics). Two vectors and one string instead of a [`Metric`] with its own `String`
/// each: no allocation per metric when it is built, none to free after the sinks encoded it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct MetricBlock {
    time: i64,
    /// Every path, one after the other.
    paths: String,
    /// Where each path ends in `paths`.
    ends: Vec<usize>,
    values: Vec<f64>,
    /// The node whose snapshot this block aggregates, when it was received from another node.
    origin: Option<std::sync::Arc<super::node::Provenance>>,
}

impl MetricBlock {
    /// An empty block of metrics at `time`, with room for `metrics` of `path_bytes` in all.
    pub fn with_capacity(time: i64, metrics: usize, path_bytes: usize) -> MetricBlock {
        MetricBlock {
            time,
            paths: String::with_capacity(path_bytes),
            ends: Vec::with_capacity(metrics),
            values: Vec::with_capacity(metrics),
            origin: None,
        }
    }

    /// The same block, marked as aggregated from a snapshot of another node.
    pub fn with_origin(mut self, origin: Option<std::sync::Arc<super::node::Provenance>>) -> MetricBlock {
        self.origin = origin;
        self
    }

    /// The node it comes from, for a block of a received snapshot.
    pub fn origin(&self) -> Option<&super::node::Provenance> {
        self.origin.as_deref()
    }

    /// Adds the metric `<prefix><name> = value`.
    pub fn push(&mut self, prefix: &str, name: &str, value: f64) {
        self.paths.push_str(prefix);
        self.paths.push_str(name);
        self.ends.push(self.paths.len());
        self.values.push(value);
    }

    pub fn time(&self) -> i64 {
        self.time
    }

    pub fn len(&self) -> usize {
        self.values.len()
    }

    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    /// The metric pushed `index`-th (panics past the end).
    pub fn get(&self, index: usize) -> MetricRef<'_> {
        let start = if index == 0 { 0 } else { self.ends[index - 1] };
        MetricRef {
            path: &self.paths[start..self.ends[index]],
            value: self.values[index],
            time: self.time,
            origin: self.origin.as_deref(),
        }
    }

    /// The metrics in the order they were pushed.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = MetricRef<'_>> + '_ {
        (0..self.len()).map(|i| MetricRef {
            path: &self.paths[if i == 0 { 0 } else { self.ends[i - 1] }..self.ends[i]],
            value: self.values[i],
            time: self.time,
            origin: self.origin.as_deref(),
        })
    }

    /// The metrics as separate values.
    pub fn to_metrics(&self) -> Vec<Metric> {
        self.iter().map(MetricRef::to_metric).collect()
    }
}

/// Largest round-trip time a result may hold, seconds: the maximum of the RRD's RTT data sources
/// (a larger one is lost for the probes, out of bounds for processing).
pub const MAX_RTT_SECONDS: f64 = 180.0;

/// One order's measurement for one step: what a probe run produced for it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct OrderResult {
    pub id: OrderId,
    /// Start (unix seconds, a multiple of `step`) of the step in which the pings were sent.
    pub time: i64,
    /// When the run finished and the result was collected (unix seconds).
    pub updated: i64,
    pub step: u32,
    pub pings: u32,
    pub template: RrdTemplate,
    /// One entry per ping, in sending order: the round-trip time in seconds, or `None` if lost.
    pub rtts: Vec<Option<f64>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub telegraf: Option<TelegrafMeta>,
    /// Why the probe could not measure the order in this run (its command cannot be started,
    /// fping cannot run, no ICMP socket for the target's family, the name does not resolve...):
    /// when set, nothing was measured, every entry of `rtts` is `None` and means unknown, not
    /// lost. Serialized only when set; at most [`MAX_FAILURE_LEN`] bytes, one line, no control
    /// characters (see [`failure_reason`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure: Option<String>,
    /// Where a result shipped from another node comes from (`None` for this node's own):
    /// set by processing from the snapshot's `SHIPPED` marker, never written into a snapshot's
    /// ping file (the marker carries it).
    #[serde(skip)]
    pub origin: Option<std::sync::Arc<super::node::Provenance>>,
}

/// Longest probe failure reason a result carries, in bytes (a snapshot with a longer one is
/// refused; the probes cut theirs with [`failure_reason`]).
pub const MAX_FAILURE_LEN: usize = 1024;

/// `reason` as a result (and every listing and log line showing it) may carry it: on one line,
/// without control characters or the invisible characters that reorder text (each replaced by a
/// space, runs of white space folded into one), trimmed, cut to [`MAX_FAILURE_LEN`] bytes on a
/// character boundary (ending in `…` when cut). An empty reason becomes `unknown reason`.
pub fn failure_reason(reason: &str) -> String {
    one_line(reason, MAX_FAILURE_LEN)
}

/// `text` on one line as [`failure_reason`] makes it, cut to `max` bytes (at least 4).
pub fn one_line(text: &str, max: usize) -> String {
    const CUT: &str = "…";
    let max = max.max(CUT.len() + 1);
    let mut clean = String::with_capacity(text.len().min(max + 4));
    let mut space = false;
    for c in text.chars() {
        if c.is_whitespace() || c.is_control() || is_invisible(c) {
            space = !clean.is_empty();
            continue;
        }
        if clean.len() > max {
            break;
        }
        if std::mem::take(&mut space) {
            clean.push(' ');
        }
        clean.push(c);
    }
    if clean.len() > max {
        let mut end = max - CUT.len();
        while !clean.is_char_boundary(end) {
            end -= 1;
        }
        clean.truncate(end);
        clean.push_str(CUT);
    }
    if clean.is_empty() {
        clean.push_str("unknown reason");
    }
    clean
}

/// Format characters that change how text is shown without being seen: bidirectional overrides
/// and isolates, zero-width characters, the byte order mark.
fn is_invisible(c: char) -> bool {
    matches!(c, '\u{200b}'..='\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2060}'..='\u{2069}' | '\u{feff}')
}

impl OrderResult {
    /// A result of order `id` for the step starting at `time`, to be completed field by field:
    /// `OrderResult::builder(id, time).rtts([Some(0.001), None]).build()`.
    ///
    /// For tests and benchmarks that need a plausible result without spelling out every field
    /// (the scheduler fills every field from the order and the run). Unless set: step 20,
    /// `updated` one step after `time`, one ping per RTT given (none by default), the Smokeping
    /// template, no telegraf metadata.
    pub fn builder(id: OrderId, time: i64) -> OrderResultBuilder {
        OrderResultBuilder {
            id,
            time,
            updated: None,
            step: 20,
            pings: None,
            template: RrdTemplate::Smokeping,
            rtts: Vec::new(),
            telegraf: None,
            failure: None,
        }
    }
}

/// Builds an [`OrderResult`]; see [`OrderResult::builder`] for the defaults.
#[derive(Clone, Debug)]
#[must_use]
pub struct OrderResultBuilder {
    id: OrderId,
    time: i64,
    updated: Option<i64>,
    step: u32,
    pings: Option<u32>,
    template: RrdTemplate,
    rtts: Vec<Option<f64>>,
    telegraf: Option<TelegrafMeta>,
    failure: Option<String>,
}

impl OrderResultBuilder {
    /// The step in seconds (default 20); `updated` follows it unless set.
    pub fn step(mut self, step: u32) -> Self {
        self.step = step;
        self
    }

    /// When the result was collected (default: `time + step`).
    pub fn updated(mut self, updated: i64) -> Self {
        self.updated = Some(updated);
        self
    }

    /// One entry per ping, `None` for a lost one; `pings` is their number unless set.
    pub fn rtts(mut self, rtts: impl IntoIterator<Item = Option<f64>>) -> Self {
        self.rtts = rtts.into_iter().collect();
        self
    }

    /// The number of pings the order asks for (default: the number of RTTs given).
    pub fn pings(mut self, pings: u32) -> Self {
        self.pings = Some(pings);
        self
    }

    pub fn template(mut self, template: RrdTemplate) -> Self {
        self.template = template;
        self
    }

    /// Where the result is forwarded to time-series sinks (default: nowhere).
    pub fn telegraf(mut self, telegraf: impl Into<Option<TelegrafMeta>>) -> Self {
        self.telegraf = telegraf.into();
        self
    }

    /// The run could not measure the order, for `reason` (default: it did); its RTTs should then
    /// all be `None`.
    pub fn failure(mut self, reason: impl Into<String>) -> Self {
        self.failure = Some(reason.into());
        self
    }

    pub fn build(self) -> OrderResult {
        OrderResult {
            updated: self.updated.unwrap_or(self.time + i64::from(self.step)),
            pings: self.pings.unwrap_or(self.rtts.len() as u32),
            id: self.id,
            time: self.time,
            step: self.step,
            template: self.template,
            rtts: self.rtts,
            telegraf: self.telegraf,
            failure: self.failure,
            origin: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_metric_block_gives_back_each_path_and_value_in_push_order() {
        let mut block = MetricBlock::with_capacity(1_700_000_000, 1, 4);
        assert!(block.is_empty());
        block.push("haproxy.frontend.www.", "scur", 3.0);
        block.push("", "x", -0.5);
        block.push("haproxy.daemon.", "", 7.0);
        let expected = [
            ("haproxy.frontend.www.scur", 3.0),
            ("x", -0.5),
            ("haproxy.daemon.", 7.0),
        ];
        assert_eq!(block.len(), 3);
        let got: Vec<(&str, f64, i64)> = block.iter().map(|m| (m.path, m.value, m.time)).collect();
        let want: Vec<(&str, f64, i64)> = expected.iter().map(|(p, v)| (*p, *v, 1_700_000_000)).collect();
        assert_eq!(got, want);
        let metrics = block.to_metrics();
        assert_eq!(metrics[2].path, "haproxy.daemon.");
        assert_eq!(MetricRef::from(&metrics[0]), block.iter().next().unwrap());
    }

    #[test]
    fn order_id_rejects_paths_that_leave_the_tree() {
        for bad in ["", "/abs", "a/../b", "..", "a//b", "./a", "a/", "a\0b"] {
            assert!(OrderId::new(bad).is_err(), "{bad:?} accepted");
        }
        assert_eq!(
            OrderId::new("app1/target1").unwrap().as_path(),
            PathBuf::from("app1/target1")
        );
    }

    #[test]
    fn order_id_from_path_below_root() {
        let id = OrderId::from_relative_path(Path::new("/b/orders"), Path::new("/b/orders/x/y")).unwrap();
        assert_eq!(id.as_str(), "x/y");
        assert!(OrderId::from_relative_path(Path::new("/b/orders"), Path::new("/b/other/y")).is_err());
    }

    #[test]
    fn failure_reasons_are_one_bounded_line_without_control_or_invisible_characters() {
        assert_eq!(
            failure_reason("  cannot run /x:\nNo such file\r\n\t(os error 2)\u{7}  "),
            "cannot run /x: No such file (os error 2)"
        );
        assert_eq!(failure_reason("a\u{1b}[2Jb\u{202e}c\u{9b}d"), "a [2Jb c d");
        assert_eq!(failure_reason("\n\u{0}\t"), "unknown reason");
        let huge = failure_reason(&"é".repeat(10 * MAX_FAILURE_LEN));
        assert!(huge.len() <= MAX_FAILURE_LEN && huge.ends_with('…'), "{}", huge.len());
        assert!(huge.trim_end_matches('…').chars().all(|c| c == 'é'));
        let exact = "x".repeat(MAX_FAILURE_LEN);
        assert_eq!(failure_reason(&exact), exact, "short enough: kept whole");
        let over = failure_reason(&format!("{exact} y"));
        assert_eq!(over.len(), MAX_FAILURE_LEN, "{over}");
    }

    #[test]
    fn a_result_without_failure_serializes_as_before_and_old_lines_still_read() {
        let id = OrderId::new("a").unwrap();
        let measured = OrderResult::builder(id.clone(), 1_700_000_000).rtts([None]).build();
        let line = serde_json::to_string(&measured).unwrap();
        assert!(!line.contains("failure"), "{line}");
        let old = r#"{"id":"a","time":1700000000,"updated":1700000020,"step":20,"pings":1,"template":"smokeping","rtts":[null]}"#;
        assert_eq!(serde_json::from_str::<OrderResult>(old).unwrap(), measured);
        let failed = OrderResult::builder(id, 1_700_000_000)
            .rtts([None])
            .failure("cannot run x")
            .build();
        let line = serde_json::to_string(&failed).unwrap();
        assert!(line.ends_with(r#","failure":"cannot run x"}"#), "{line}");
        assert_eq!(serde_json::from_str::<OrderResult>(&line).unwrap(), failed);
    }

    #[test]
    fn builder_defaults_follow_the_step_and_the_rtts() {
        let id = OrderId::new("a/b").unwrap();
        let built = OrderResult::builder(id.clone(), 1_700_000_000)
            .step(60)
            .rtts([Some(0.001), None])
            .build();
        let expected = OrderResult {
            id,
            time: 1_700_000_000,
            updated: 1_700_000_060,
            step: 60,
            pings: 2,
            template: RrdTemplate::Smokeping,
            rtts: vec![Some(0.001), None],
            telegraf: None,
            failure: None,
            origin: None,
        };
        assert_eq!(built, expected);
        let explicit = OrderResult::builder(expected.id.clone(), 1_700_000_000)
            .step(60)
            .updated(1_700_000_061)
            .pings(5)
            .template(RrdTemplate::Norrd)
            .build();
        assert_eq!(
            (explicit.updated, explicit.pings, explicit.template),
            (1_700_000_061, 5, RrdTemplate::Norrd)
        );
        assert!(explicit.rtts.is_empty());
    }
}
