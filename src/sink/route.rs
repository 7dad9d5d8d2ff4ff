//! Routing: what each sink takes of the data handed to it.
//!
//! Every sink type has the same three keys (fields of each type's options struct, read with it;
//! see [`RouteKeys`]):
//!
//! ```yaml
//! takes: [ping, haproxy, self]                         # kinds of data
//! orders: {include: ["web/**"], exclude: ["web/test-*"]}   # ping results, by order id
//! metrics: {include: ["haproxy.**"], exclude: ["**.scur"]} # haproxy and self metrics, by path
//! ```
//!
//! - `takes` names the [`Kind`]s: `ping` (ping results), `haproxy` (HAProxy metrics from
//!   processing) and `self` (self-metrics, sent only to sinks `self-metrics: {sinks}` selects).
//!   Graphite and local-store take all three by default, InfluxDB `ping` and `self`.
//! - `orders` filters ping results by order id (`web/a`, as under `orders/`), `metrics` filters
//!   HAProxy and self metrics by their path as processing and self-metrics produce it, before
//!   the sink's namespace and host (`haproxy.frontend.www.scur`, `spoolmon.orders.active`).
//!   An empty `include` takes everything; `exclude` wins over `include`.
//! - Globs: `*` is any run of characters within one component (not across `/` in order ids,
//!   not across `.` in metric paths), `**` any run across components (`a/**/b` also matches
//!   `a/b`, `**.scur` also `scur`), `?` one character other than the separator, `[abc]`,
//!   `[a-z]`, `[!a-z]` one character of (or not of) a set, never the separator, and `\` makes
//!   the next character literal. A pattern matches the whole id or path.
//!
//! Patterns are checked when the config is read ([`RouteKeys::validate`]) and compiled into
//! one regular expression per list ([`Route`]): matching is linear in the path, allocates
//! nothing, and is skipped entirely when a list is empty, so a sink without globs takes a
//! HAProxy snapshot's ~80,000 metrics without a single match. Owns nothing on disk; used by
//! the sinks' `accept` (`super::queued`, `super::local_store`).

use crate::process::handoff::{self, SinkBatch};
use crate::shared::measurement::{MetricRef, OrderResult};
use crate::shared::option::InvalidOption;
use regex::{Regex, RegexBuilder};
use serde::{Deserialize, Serialize};
use std::fmt::Write as _;

/// Longest glob pattern, in bytes.
pub const MAX_PATTERN: usize = 1024;
/// Most patterns in one `include` or `exclude` list.
pub const MAX_PATTERNS: usize = 256;
/// Bound on the compiled size of one list's regular expression.
const REGEX_SIZE_LIMIT: usize = 8 << 20;

/// A kind of data in `takes:`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Kind {
    /// Ping results of the orders (filtered by `orders`).
    Ping,
    /// HAProxy metrics aggregated by processing, `haproxy.*` (filtered by `metrics`).
    Haproxy,
    /// spoolmon's self-metrics, `<self-metrics prefix>.*`, for the sinks `self-metrics: {sinks}`
    /// selects (filtered by `metrics`).
    #[serde(rename = "self")]
    SelfMetrics,
}

impl Kind {
    /// Every kind, in the order they are printed.
    pub const ALL: [Kind; 3] = [Kind::Ping, Kind::Haproxy, Kind::SelfMetrics];

    /// The kind of data handed over by processing or self-metrics.
    pub fn data(self) -> handoff::Kind {
        match self {
            Kind::Ping => handoff::Kind::Ping,
            Kind::Haproxy => handoff::Kind::Haproxy,
            Kind::SelfMetrics => handoff::Kind::SelfMetrics,
        }
    }

    /// The name in the config.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Ping => "ping",
            Kind::Haproxy => "haproxy",
            Kind::SelfMetrics => "self",
        }
    }
}

/// `orders:` — which ping results, by order id.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct OrderGlobs {
    /// Globs on order ids (`web/**`, `db/*-primary`): only the results of orders matching one
    /// are taken. Empty (the default) = every order. `*` stays within one `/`-separated
    /// component, `**` crosses them, `?` is one character, `[a-z]` one of a set
    /// (spool-layout.md, "Routing").
    pub include: Vec<String>,
    /// Globs on order ids whose results are left out, even when included. Default: none.
    pub exclude: Vec<String>,
}

/// `metrics:` — which HAProxy and self metrics, by path.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct MetricGlobs {
    /// Globs on metric paths before the sink's namespace (`haproxy.frontend.*.scur`,
    /// `spoolmon.orders.*`): only metrics matching one are taken. Empty (the default) = every
    /// metric. `*` stays within one `.`-separated component, `**` crosses them, `?` is one
    /// character, `[a-z]` one of a set (spool-layout.md, "Routing").
    pub include: Vec<String>,
    /// Globs on metric paths left out, even when included (`**.Uptime_sec`). Default: none.
    pub exclude: Vec<String>,
}

/// The routing keys of one sink, borrowed from its options struct (each sink type has the same
/// three fields; the config does not flatten one struct into several, see ARCHITECTURE.md).
#[derive(Clone, Copy, Debug)]
pub struct RouteKeys<'a> {
    pub takes: &'a [Kind],
    pub orders: &'a OrderGlobs,
    pub metrics: &'a MetricGlobs,
}

impl RouteKeys<'_> {
    /// Whether `takes` names `kind`.
    pub fn takes(&self, kind: Kind) -> bool {
        self.takes.contains(&kind)
    }

    /// Checks the keys; the error's key is relative to the sink (`takes`,
    /// `orders.include[2]`).
    pub fn validate(&self) -> Result<(), InvalidOption> {
        self.compile().map(|_| ())
    }

    /// The route these keys describe; fails as [`RouteKeys::validate`].
    pub fn compile(&self) -> Result<Route, InvalidOption> {
        if self.takes.is_empty() {
            return Err(InvalidOption::new(
                "takes",
                "must name at least one of ping, haproxy, self (a sink that takes nothing is not needed)",
            ));
        }
        let orders_set = !(self.orders.include.is_empty() && self.orders.exclude.is_empty());
        if orders_set && !self.takes(Kind::Ping) {
            return Err(InvalidOption::new(
                "orders",
                format!(
                    "filters ping results, but takes is {} (without ping)",
                    self.takes_text()
                ),
            ));
        }
        let metrics_set = !(self.metrics.include.is_empty() && self.metrics.exclude.is_empty());
        if metrics_set && !(self.takes(Kind::Haproxy) || self.takes(Kind::SelfMetrics)) {
            return Err(InvalidOption::new(
                "metrics",
                format!(
                    "filters haproxy and self metrics, but takes is {} (neither haproxy nor self)",
                    self.takes_text()
                ),
            ));
        }
        Ok(Route {
            ping: self.takes(Kind::Ping),
            haproxy: self.takes(Kind::Haproxy),
            self_metrics: self.takes(Kind::SelfMetrics),
            orders: Filter::new("orders", &self.orders.include, &self.orders.exclude, '/')?,
            metrics: Filter::new("metrics", &self.metrics.include, &self.metrics.exclude, '.')?,
        })
    }

    /// `takes` as written: `[ping, self]`.
    pub fn takes_text(&self) -> String {
        let names: Vec<&str> = self.takes.iter().map(|kind| kind.name()).collect();
        format!("[{}]", names.join(", "))
    }
}

/// What one sink takes, compiled from its [`RouteKeys`].
#[derive(Clone, Debug)]
pub struct Route {
    ping: bool,
    haproxy: bool,
    self_metrics: bool,
    orders: Filter,
    metrics: Filter,
}

impl Route {
    /// Every kind, no filter (a sink built without a config, as in tests and benchmarks).
    pub fn everything() -> Route {
        Route {
            ping: true,
            haproxy: true,
            self_metrics: true,
            orders: Filter::default(),
            metrics: Filter::default(),
        }
    }

    /// Whether the sink takes data of `kind` at all.
    pub fn takes(&self, kind: handoff::Kind) -> bool {
        match kind {
            handoff::Kind::Ping => self.ping,
            handoff::Kind::Haproxy => self.haproxy,
            handoff::Kind::SelfMetrics => self.self_metrics,
        }
    }

    /// Whether the sink takes the results of order `id` (given it takes ping results).
    pub fn takes_order(&self, id: &str) -> bool {
        self.orders.passes(id)
    }

    /// Whether the sink takes the metric at `path` (given it takes its kind).
    pub fn takes_metric(&self, path: &str) -> bool {
        self.metrics.passes(path)
    }

    /// The results of `batch` this sink takes, in batch order.
    pub fn results<'s, 'b>(&'s self, batch: SinkBatch<'b>) -> impl Iterator<Item = &'b OrderResult> + use<'s, 'b> {
        let results = if self.ping { batch.results } else { &[] };
        let all = self.orders.is_everything();
        results
            .iter()
            .filter(move |result| all || self.orders.passes(result.id.as_str()))
    }

    /// True when the sink takes every metric of `batch` (its kind, and no metric globs), so
    /// that an encoder can go through them block by block without asking for each.
    pub fn takes_every_metric_of(&self, batch: SinkBatch<'_>) -> bool {
        self.takes(batch.metric_kind.kind()) && self.metrics.is_everything()
    }

    /// The metrics of `batch` this sink takes, in batch order.
    pub fn metrics<'s, 'b>(&'s self, batch: SinkBatch<'b>) -> impl Iterator<Item = MetricRef<'b>> + use<'s, 'b> {
        let batch = if self.takes(batch.metric_kind.kind()) {
            batch
        } else {
            SinkBatch::default()
        };
        let all = self.metrics.is_everything();
        batch
            .all_metrics()
            .filter(move |metric| all || self.metrics.passes(metric.path))
    }
}

/// An include and an exclude list, each compiled into one anchored regular expression; `None`
/// is an empty list.
#[derive(Clone, Debug, Default)]
struct Filter {
    include: Option<Regex>,
    exclude: Option<Regex>,
}

impl Filter {
    /// `key` is `orders` or `metrics` (for errors); `separator` is what `*` does not cross.
    fn new(key: &str, include: &[String], exclude: &[String], separator: char) -> Result<Filter, InvalidOption> {
        Ok(Filter {
            include: list_regex(&format!("{key}.include"), include, separator)?,
            exclude: list_regex(&format!("{key}.exclude"), exclude, separator)?,
        })
    }

    fn is_everything(&self) -> bool {
        self.include.is_none() && self.exclude.is_none()
    }

    fn passes(&self, text: &str) -> bool {
        self.include.as_ref().is_none_or(|include| include.is_match(text))
            && !self.exclude.as_ref().is_some_and(|exclude| exclude.is_match(text))
    }
}

/// One regular expression matching a whole text that matches any of `patterns`.
fn list_regex(key: &str, patterns: &[String], separator: char) -> Result<Option<Regex>, InvalidOption> {
    if patterns.is_empty() {
        return Ok(None);
    }
    if patterns.len() > MAX_PATTERNS {
        return Err(InvalidOption::new(
            key,
            format!("{} patterns; at most {MAX_PATTERNS}", patterns.len()),
        ));
    }
    let mut regex = String::from(r"(?s)\A(?:");
    for (index, pattern) in patterns.iter().enumerate() {
        let translated = glob_regex(pattern, separator)
            .map_err(|reason| InvalidOption::new(&format!("{key}[{index}]"), format!("{pattern:?}: {reason}")))?;
        if index > 0 {
            regex.push('|');
        }
        regex.push_str("(?:");
        regex.push_str(&translated);
        regex.push(')');
    }
    regex.push_str(r")\z");
    RegexBuilder::new(&regex)
        .size_limit(REGEX_SIZE_LIMIT)
        .build()
        .map(Some)
        .map_err(|e| match e {
            regex::Error::CompiledTooBig(_) => {
                InvalidOption::new(key, "the patterns together are too large; use fewer or shorter ones")
            }
            other => InvalidOption::new(key, format!("cannot compile the patterns: {other}")),
        })
}

/// A glob as a regular expression (without anchors); the error says what is wrong with it.
pub fn glob_regex(pattern: &str, separator: char) -> Result<String, String> {
    if pattern.is_empty() {
        return Err("an empty pattern matches nothing; leave the list empty to take everything".into());
    }
    if pattern.len() > MAX_PATTERN {
        return Err(format!("{} bytes; a pattern has at most {MAX_PATTERN}", pattern.len()));
    }
    if let Some(c) = pattern.chars().find(|c| c.is_control()) {
        return Err(format!("contains the control character {c:?}"));
    }
    let chars: Vec<char> = pattern.chars().collect();
    let sep = escaped(separator);
    let mut out = String::with_capacity(pattern.len() * 2);
    // Whether the character before `i` is a separator written as one (not escaped): where a
    // `**` may stand for no component at all.
    let mut after_separator = true;
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let mut next_after_separator = false;
        match c {
            '*' => {
                let run = chars[i..].iter().take_while(|&&c| c == '*').count();
                if run > 2 {
                    return Err(format!(
                        "{} stars in a row; `*` matches within one component, `**` across components",
                        run
                    ));
                }
                if run == 1 {
                    write!(out, "[^{sep}]*").unwrap();
                    i += 1;
                } else if after_separator && chars.get(i + 2) == Some(&separator) {
                    // `**/` at the start or after a `/`: any number of whole components, none too.
                    write!(out, "(?:.*{sep})?").unwrap();
                    i += 3;
                    next_after_separator = true;
                } else {
                    out.push_str(".*");
                    i += 2;
                }
            }
            '?' => {
                write!(out, "[^{sep}]").unwrap();
                i += 1;
            }
            '[' => {
                i = class(&chars, i, separator, &mut out)?;
            }
            '\\' => {
                let Some(&literal) = chars.get(i + 1) else {
                    return Err("ends in `\\`, which escapes nothing".into());
                };
                out.push_str(&escaped(literal));
                i += 2;
            }
            _ => {
                out.push_str(&escaped(c));
                next_after_separator = c == separator;
                i += 1;
            }
        }
        after_separator = next_after_separator;
    }
    Ok(out)
}

/// Translates the class starting at `chars[start]` (`[`) into `out`; returns the index after
/// its `]`.
fn class(chars: &[char], start: usize, separator: char, out: &mut String) -> Result<usize, String> {
    let mut i = start + 1;
    let negated = matches!(chars.get(i), Some('!' | '^'));
    if negated {
        i += 1;
    }
    let mut members = String::new();
    let mut first = true;
    loop {
        let Some(&c) = chars.get(i) else {
            return Err("`[` without its `]`".into());
        };
        if c == ']' && !first {
            i += 1;
            break;
        }
        first = false;
        let (low, after) = class_char(chars, i)?;
        let (high, after) = if chars.get(after) == Some(&'-') && chars.get(after + 1).is_some_and(|&c| c != ']') {
            class_char(chars, after + 1)?
        } else {
            (low, after)
        };
        if low > high {
            return Err(format!("range `{low}-{high}` is backwards"));
        }
        if !negated && (low..=high).contains(&separator) {
            return Err(format!(
                "`[...]` includes the separator {separator:?}, which only a literal or `**` matches"
            ));
        }
        if low == high {
            members.push_str(&escaped(low));
        } else {
            write!(members, "{}-{}", escaped(low), escaped(high)).unwrap();
        }
        i = after;
    }
    out.push('[');
    if negated {
        out.push('^');
        out.push_str(&escaped(separator));
    }
    out.push_str(&members);
    out.push(']');
    Ok(i)
}

/// One member character of a class at `chars[i]` (`\x` is `x`); returns it and the index after.
fn class_char(chars: &[char], i: usize) -> Result<(char, usize), String> {
    match chars[i] {
        '\\' => chars
            .get(i + 1)
            .map(|&c| (c, i + 2))
            .ok_or_else(|| "`[` without its `]`".to_string()),
        c => Ok((c, i + 1)),
    }
}

/// `c` as a regular-expression literal, in and outside classes.
fn escaped(c: char) -> String {
    if c.is_ascii_alphanumeric() || c == '_' {
        c.to_string()
    } else {
        format!("\\x{{{:x}}}", u32::from(c))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::process::handoff::MetricKind;
    use crate::shared::measurement::{Metric, OrderId};

    fn matches(pattern: &str, separator: char, text: &str) -> bool {
        let filter = Filter::new("k", &[pattern.to_string()], &[], separator).unwrap();
        filter.passes(text)
    }

    fn path(pattern: &str, text: &str) -> bool {
        matches(pattern, '.', text)
    }

    fn order(pattern: &str, text: &str) -> bool {
        matches(pattern, '/', text)
    }

    #[test]
    fn star_stays_within_one_component_and_double_star_crosses_them() {
        assert!(path("haproxy.frontend.*.scur", "haproxy.frontend.www.scur"));
        assert!(path("haproxy.frontend.*.scur", "haproxy.frontend..scur"));
        assert!(!path("haproxy.frontend.*.scur", "haproxy.frontend.a.b.scur"));
        assert!(path("haproxy.**", "haproxy.backend.be.server.s1.scur"));
        assert!(!path("haproxy.**", "spoolmon.orders.active"));
        assert!(path("**.scur", "haproxy.frontend.www.scur"));
        assert!(path("**.scur", "scur"));
        assert!(!path("**.scur", "haproxy.frontend.www.xscur"));
        assert!(path("haproxy.**.scur", "haproxy.scur"));
        assert!(path("haproxy.**.scur", "haproxy.a.b.c.scur"));
        assert!(!path("haproxy.**.scur", "haproxyscur"));
        assert!(path("**", "anything.at.all"));
        assert!(path("*", "one"));
        assert!(!path("*", "two.parts"));
        assert!(path("ha**", "haproxy.x"), "`**` inside a component crosses too");
        // In order ids the separator is `/`, and `.` is an ordinary character.
        assert!(order("web/*", "web/a.b"));
        assert!(!order("web/*", "web/a/b"));
        assert!(order("web/**", "web/a/b"));
        assert!(!order("web/**", "webx/a"));
        assert!(order("**/db", "db"));
        assert!(order("**/db", "site/x/db"));
        assert!(order("a/**/b", "a/b"));
        assert!(!order("a/**/b", "a/xb"));
    }

    #[test]
    fn question_marks_classes_and_escapes() {
        assert!(path("srv-?", "srv-1"));
        assert!(!path("srv-?", "srv-10"));
        assert!(!path("a?b", "a.b"), "`?` never matches the separator");
        assert!(order("?", "ü"), "`?` is one character, not one byte");
        assert!(path("srv-[0-9]", "srv-7"));
        assert!(!path("srv-[0-9]", "srv-x"));
        assert!(path("srv-[!0-9]", "srv-x"));
        assert!(!path("a[!x]b", "a.b"), "a negated class never matches the separator");
        assert!(path("[]x]", "]"));
        assert!(path("[a-]", "-"));
        assert!(path(r"a\*b", "a*b"));
        assert!(!path(r"a\*b", "axb"));
        assert!(path("a+b(c)|d^$", "a+b(c)|d^$"), "regex syntax is literal in a glob");
        assert!(!path("a.b", "aXb"), "the separator is literal");
        assert!(order("web.a", "web.a"));
        assert!(!order("web.a", "webxa"));
    }

    #[test]
    fn bad_patterns_say_what_is_wrong() {
        for (pattern, reason) in [
            ("", "empty pattern"),
            ("a***", "3 stars"),
            ("[abc", "without its `]`"),
            ("[", "without its `]`"),
            ("[!", "without its `]`"),
            ("[z-a]", "backwards"),
            ("a[.]", "separator"),
            ("a[+-/]", "separator"),
            ("a\\", "escapes nothing"),
            ("a\tb", "control character"),
        ] {
            let err = glob_regex(pattern, '.').unwrap_err();
            assert!(err.contains(reason), "{pattern:?}: {err}");
        }
        assert!(glob_regex("[/]", '.').is_ok(), "`/` is no separator in metric paths");
        let huge = "a".repeat(MAX_PATTERN + 1);
        assert!(glob_regex(&huge, '.').unwrap_err().contains("at most 1024"));
        assert!(glob_regex(&"a".repeat(MAX_PATTERN), '.').is_ok());
    }

    fn keys<'a>(takes: &'a [Kind], orders: &'a OrderGlobs, metrics: &'a MetricGlobs) -> RouteKeys<'a> {
        RouteKeys { takes, orders, metrics }
    }

    #[test]
    fn invalid_routes_name_the_key() {
        let none = (OrderGlobs::default(), MetricGlobs::default());
        let err = keys(&[], &none.0, &none.1).validate().unwrap_err();
        assert_eq!(err.key, "takes");
        let orders = OrderGlobs {
            include: vec!["web/**".into()],
            ..OrderGlobs::default()
        };
        let err = keys(&[Kind::Haproxy], &orders, &none.1).validate().unwrap_err();
        assert_eq!(err.key, "orders");
        assert!(err.reason.contains("[haproxy]"), "{err}");
        let metrics = MetricGlobs {
            exclude: vec!["**.scur".into()],
            ..MetricGlobs::default()
        };
        let err = keys(&[Kind::Ping], &none.0, &metrics).validate().unwrap_err();
        assert_eq!(err.key, "metrics");
        keys(&[Kind::SelfMetrics], &none.0, &metrics).validate().unwrap();
        let bad = MetricGlobs {
            include: vec!["haproxy.**".into(), "x[".into()],
            ..MetricGlobs::default()
        };
        let err = keys(&Kind::ALL, &none.0, &bad).validate().unwrap_err();
        assert_eq!(err.key, "metrics.include[1]");
        assert!(err.reason.contains("\"x[\""), "{err}");
        let many = OrderGlobs {
            exclude: vec!["a".into(); MAX_PATTERNS + 1],
            ..OrderGlobs::default()
        };
        let err = keys(&Kind::ALL, &many, &none.1).validate().unwrap_err();
        assert_eq!(err.key, "orders.exclude");
    }

    #[test]
    fn many_large_patterns_are_refused_and_many_ordinary_ones_compile_and_match_in_linear_time() {
        // The largest lists the per-pattern limits allow, full of stars: too large together.
        let starry = "*a".repeat(MAX_PATTERN / 2);
        let err = list_regex("metrics.include", &vec![starry; MAX_PATTERNS], '.').unwrap_err();
        assert_eq!(err.key, "metrics.include");
        assert!(err.reason.contains("too large"), "{err}");
        // As many ordinary patterns as a list may have compile.
        let ordinary: Vec<String> = (0..MAX_PATTERNS)
            .map(|i| format!("haproxy.backend.be_{i}_*.server.srv-[0-9]?.**"))
            .collect();
        let regex = list_regex("metrics.include", &ordinary, '.').unwrap().unwrap();
        assert!(regex.is_match("haproxy.backend.be_17_x.server.srv-3a.scur"));
        assert!(!regex.is_match("haproxy.backend.be_17.x.server.srv-3a.scur"));
        // Linear time on the classic backtracking killer.
        let killer = list_regex("k", &["*a*a*a*a*a*a*a*a*a*a*a*b".to_string()], '.')
            .unwrap()
            .unwrap();
        assert!(!killer.is_match(&"a".repeat(100_000)));
    }

    #[test]
    fn exclude_wins_and_empty_include_takes_everything() {
        let orders = OrderGlobs {
            include: vec!["web/**".into(), "db/primary".into()],
            exclude: vec!["web/test-*".into()],
        };
        let metrics = MetricGlobs {
            include: Vec::new(),
            exclude: vec!["**.Uptime_sec".into()],
        };
        let route = keys(&Kind::ALL, &orders, &metrics).compile().unwrap();
        assert!(route.takes_order("web/a"));
        assert!(route.takes_order("web/eu/b"));
        assert!(route.takes_order("db/primary"));
        assert!(!route.takes_order("db/replica"));
        assert!(!route.takes_order("web/test-1"));
        assert!(route.takes_order("web/eu/test-1"), "`*` stays within the component");
        assert!(route.takes_metric("haproxy.frontend.www.scur"));
        assert!(!route.takes_metric("haproxy.daemon.Uptime_sec"));
    }

    fn result(id: &str) -> OrderResult {
        OrderResult::builder(OrderId::new(id).unwrap(), 100)
            .rtts(vec![None])
            .build()
    }

    fn metric(path: &str) -> Metric {
        Metric {
            path: path.into(),
            value: 1.0,
            time: 100,
        }
    }

    #[test]
    fn a_route_selects_by_kind_then_by_glob() {
        let results = [result("web/a"), result("db/b")];
        let metrics = [metric("haproxy.frontend.www.scur"), metric("haproxy.daemon.Idle_pct")];
        let orders = OrderGlobs {
            include: vec!["web/*".into()],
            ..OrderGlobs::default()
        };
        let globs = MetricGlobs {
            include: vec!["**.scur".into()],
            ..MetricGlobs::default()
        };
        let round = SinkBatch::round(&results, &metrics);
        let samples = SinkBatch::self_metrics(&metrics);
        assert_eq!(samples.metric_kind, MetricKind::SelfMetrics);

        let route = keys(&[Kind::Ping, Kind::Haproxy], &orders, &globs).compile().unwrap();
        let ids: Vec<&str> = route.results(round).map(|r| r.id.as_str()).collect();
        assert_eq!(ids, ["web/a"]);
        let paths: Vec<&str> = route.metrics(round).map(|m| m.path).collect();
        assert_eq!(paths, ["haproxy.frontend.www.scur"]);
        assert_eq!(route.metrics(samples).count(), 0, "does not take self");
        assert!(!route.takes(handoff::Kind::SelfMetrics));

        let none = (OrderGlobs::default(), MetricGlobs::default());
        let pings = keys(&[Kind::Ping], &none.0, &none.1).compile().unwrap();
        assert_eq!(pings.results(round).count(), 2);
        assert_eq!(pings.metrics(round).count(), 0);
        let own = keys(&[Kind::SelfMetrics], &none.0, &none.1).compile().unwrap();
        assert_eq!((own.results(round).count(), own.metrics(round).count()), (0, 0));
        assert_eq!(own.metrics(samples).count(), 2);
        let all = Route::everything();
        assert_eq!((all.results(round).count(), all.metrics(round).count()), (2, 2));
    }

    #[test]
    fn kinds_parse_by_their_config_names_and_refuse_others() {
        let kinds: Vec<Kind> = yaml_serde::from_str("[ping, haproxy, self]").unwrap();
        assert_eq!(kinds, Kind::ALL);
        assert_eq!(
            yaml_serde::to_string(&Kind::ALL).unwrap(),
            "- ping\n- haproxy\n- self\n"
        );
        for bad in ["[pings]", "[forwarded]", "[Ping]", "[self-metrics]"] {
            let err = yaml_serde::from_str::<Vec<Kind>>(bad).unwrap_err().to_string();
            assert!(err.contains("ping") && err.contains("haproxy"), "{bad}: {err}");
        }
        assert!(yaml_serde::from_str::<OrderGlobs>("{inclde: [a]}").is_err());
    }
}
