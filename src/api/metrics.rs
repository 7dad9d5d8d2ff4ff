//! `/metrics`: what Prometheus scrapes, in the OpenMetrics text format (1.0.0).
//!
//! Families, all prefixed `spoolmon_` (documented with their labels in `docs/api.md`):
//! - **Self-metrics** of each spoolmon process on the base directory, as it last wrote them to
//!   `state/metrics*.prom` (every `self-metrics.interval`): the same families, each sample with
//!   a `component` label (`run`, `pull`, `process`) so that several processes' files merge
//!   into one exposition. This server's own request counters (`spoolmon_api_*`) are live,
//!   labelled with the component that serves (`run` or `serve`).
//! - **Per order with a readable `last_result`**, label `order` (the order id):
//!   `spoolmon_order_info` (1, with `state`, `probe`, `target`), `spoolmon_order_loss_ratio`
//!   (lost / sent pings of the last round), `spoolmon_order_rtt_min_seconds`, `..._median_...`,
//!   `..._max_...` (left out when nothing answered), `spoolmon_order_result_age_seconds`.
//! - **Per order measured since this daemon started** (only inside `spoolmon run`, where the
//!   results pass): the histogram `spoolmon_ping_rtt_seconds` with the fixed buckets of
//!   [`crate::process::latency::BUCKETS`], and the counters `spoolmon_ping_sent_total` and
//!   `spoolmon_ping_lost_total`. The buckets are the same on every node, so
//!   `histogram_quantile(0.99, sum by (le) (rate(spoolmon_ping_rtt_seconds_bucket[5m])))` over
//!   several nodes is a true quantile of all their pings.
//!
//! Label sets are bounded: `order` by the number of orders, `component` by three values, the
//! rest as in the self-metrics files. An order with 15 buckets costs 25 samples.
//!
//! Owns on disk: nothing; reads `state/` and `output/` beside the daemon. Called by
//! [`super::v1::Route`] for `GET /metrics`.

use super::Context;
use crate::output::wide::WideStatus;
use crate::process::latency::{RttHistograms, BUCKETS};
use crate::selfmetrics::exposition::{escape_label, format_value};
use crate::selfmetrics::Component;
use std::collections::HashMap;
use std::fmt::Write as _;
use std::io::Read as _;

/// The media type Prometheus asks for first and parses strictly.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Largest self-metrics file read; a larger one is left out and shown by
/// `spoolmon_api_selfmetrics_unreadable`.
const MAX_FILE_BYTES: u64 = 16 << 20;

/// Families in the order first seen; a family seen again (another component's file) gets the
/// new samples appended, so no family is split.
#[derive(Default)]
struct Exposition {
    families: Vec<Family>,
    index: HashMap<String, usize>,
}

struct Family {
    /// The OpenMetrics family name: a counter's without `_total`.
    name: String,
    kind: &'static str,
    help: String,
    lines: Vec<String>,
}

impl Exposition {
    fn family(&mut self, name: &str, kind: &'static str, help: &str) -> &mut Family {
        let at = *self.index.entry(name.to_owned()).or_insert_with(|| {
            self.families.push(Family {
                name: name.to_owned(),
                kind,
                help: help.to_owned(),
                lines: Vec::new(),
            });
            self.families.len() - 1
        });
        &mut self.families[at]
    }

    fn sample(
        &mut self,
        family: &str,
        kind: &'static str,
        help: &str,
        suffix: &str,
        labels: &[(&str, &str)],
        value: f64,
    ) {
        let line = format!("{family}{suffix}{} {}", label_text(labels), format_value(value));
        self.family(family, kind, help).lines.push(line);
    }

    fn render(&self) -> String {
        let mut out = String::new();
        for family in self.families.iter().filter(|f| !f.lines.is_empty()) {
            let _ = writeln!(out, "# TYPE {} {}", family.name, family.kind);
            if !family.help.is_empty() {
                let _ = writeln!(out, "# HELP {} {}", family.name, escape_help(&family.help));
            }
            for line in &family.lines {
                out.push_str(line);
                out.push('\n');
            }
        }
        out.push_str("# EOF\n");
        out
    }
}

fn label_text(labels: &[(&str, &str)]) -> String {
    if labels.is_empty() {
        return String::new();
    }
    let inner: Vec<String> = labels
        .iter()
        .map(|(key, value)| format!("{key}=\"{}\"", escape_label(value)))
        .collect();
    format!("{{{}}}", inner.join(","))
}

fn escape_help(text: &str) -> String {
    text.replace('\\', "\\\\").replace('\n', "\\n").replace('"', "\\\"")
}

/// `le` as OpenMetrics writes it: a float with a decimal point.
fn bound_text(bound: f64) -> String {
    format!("{bound:?}")
}

/// The whole exposition at `now` (unix seconds).
pub fn render(context: &Context, now: i64) -> String {
    let mut out = Exposition::default();
    for component in Component::ALL {
        add_self_metrics(&mut out, context, component);
    }
    add_server(&mut out, context);
    let listing = crate::output::wide::listing(&context.base, &context.orders, now);
    add_orders(&mut out, &listing);
    if let Some(rtt) = &context.rtt {
        add_histograms(&mut out, rtt);
    }
    out.render()
}

/// One process's `state/metrics*.prom`, its samples labelled with the component. A missing
/// file (that process does not run here) adds nothing; an unreadable one is counted.
fn add_self_metrics(out: &mut Exposition, context: &Context, component: Component) {
    let path = context.base.state().join(component.metrics_file());
    let text = match read_small(&path) {
        Ok(Some(text)) => text,
        Ok(None) => return,
        Err(reason) => {
            tracing::debug!(file = %path.display(), "self-metrics left out: {reason}");
            out.sample(
                "spoolmon_api_selfmetrics_unreadable",
                "gauge",
                "1 for a self-metrics file in state/ that exists but cannot be read (too large, not text).",
                "",
                &[("component", component.name())],
                1.0,
            );
            return;
        }
    };
    let live_api = component.name() == context.component;
    let mut help: HashMap<&str, &str> = HashMap::new();
    let mut kinds: HashMap<&str, &'static str> = HashMap::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            if let Some((name, text)) = rest.split_once(' ') {
                help.insert(name, text);
            }
        } else if let Some(rest) = line.strip_prefix("# TYPE ") {
            match rest.split_once(' ') {
                Some((name, "counter")) => kinds.insert(name, "counter"),
                Some((name, "gauge")) => kinds.insert(name, "gauge"),
                _ => None,
            };
        } else if !line.starts_with('#') && !line.is_empty() {
            let Some((key, value)) = line.rsplit_once(' ') else {
                continue;
            };
            let (name, labels) = match key.split_once('{') {
                Some((name, rest)) => (name, rest.strip_suffix('}').unwrap_or(rest)),
                None => (key, ""),
            };
            let Some(&kind) = kinds.get(name) else { continue };
            if live_api && name.starts_with("spoolmon_api_") {
                continue;
            }
            let Ok(value) = parse_value(value) else { continue };
            let family = match kind {
                "counter" => match name.strip_suffix("_total") {
                    Some(family) => family,
                    None => continue,
                },
                _ => name,
            };
            // The file's HELP text is already escaped for the 0.0.4 format (\\ and \n).
            let help = help
                .get(name)
                .map(|h| h.replace("\\n", " ").replace("\\\\", "\\"))
                .unwrap_or_default();
            let component_label = format!("component=\"{}\"", component.name());
            let labels = if labels.is_empty() {
                component_label
            } else {
                format!("{component_label},{labels}")
            };
            let line = format!("{name}{{{labels}}} {}", format_value(value));
            out.family(family, kind, &help).lines.push(line);
        }
    }
}

fn parse_value(text: &str) -> Result<f64, std::num::ParseFloatError> {
    match text {
        "+Inf" => Ok(f64::INFINITY),
        "-Inf" => Ok(f64::NEG_INFINITY),
        "NaN" => Ok(f64::NAN),
        _ => text.parse(),
    }
}

/// A file's text, `None` when it does not exist; an error for one too large or not UTF-8.
fn read_small(path: &std::path::Path) -> Result<Option<String>, String> {
    let file = match std::fs::File::open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e.to_string()),
    };
    let mut bytes = Vec::new();
    file.take(MAX_FILE_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| e.to_string())?;
    if bytes.len() as u64 > MAX_FILE_BYTES {
        return Err(format!("larger than {MAX_FILE_BYTES} bytes"));
    }
    String::from_utf8(bytes).map(Some).map_err(|_| "not UTF-8".into())
}

/// This server's counters, live (the families self-metrics writes for it).
fn add_server(out: &mut Exposition, context: &Context) {
    use crate::selfmetrics::exposition::Kind;
    for family in crate::selfmetrics::gather::api_families(&context.stats) {
        let (name, kind, suffix) = match family.kind {
            Kind::Counter => (
                family.name.strip_suffix("_total").unwrap_or(&family.name),
                "counter",
                "_total",
            ),
            Kind::Gauge => (family.name.as_str(), "gauge", ""),
        };
        for sample in &family.samples {
            let mut labels: Vec<(&str, &str)> = vec![("component", context.component)];
            labels.extend(sample.labels.iter().map(|(k, v)| (*k, v.as_str())));
            out.sample(name, kind, family.help, suffix, &labels, sample.value);
        }
    }
}

/// The per-order gauges of every order with a readable `last_result`.
fn add_orders(out: &mut Exposition, listing: &[WideStatus]) {
    for order in listing {
        let Some(result) = &order.last_result else { continue };
        let id = order.status.id.as_str();
        let labels = [("order", id)];
        out.sample(
            "spoolmon_order_info",
            "gauge",
            "1 per order with a result; its state, probe and target as labels.",
            "",
            &[
                ("order", id),
                ("state", order.status.state.as_str()),
                ("probe", order.status.probe.as_deref().unwrap_or("")),
                ("target", order.status.target.as_deref().unwrap_or("")),
            ],
            1.0,
        );
        if result.pings > 0 {
            out.sample(
                "spoolmon_order_loss_ratio",
                "gauge",
                "Lost pings of the last round over pings sent (0 to 1).",
                "",
                &labels,
                f64::from(result.loss) / f64::from(result.pings),
            );
        }
        for (family, help, ms) in [
            (
                "spoolmon_order_rtt_min_seconds",
                "Smallest round-trip time of the last round.",
                result.min_ms,
            ),
            (
                "spoolmon_order_rtt_median_seconds",
                "Median round-trip time of the last round (the upper median).",
                result.median_ms,
            ),
            (
                "spoolmon_order_rtt_max_seconds",
                "Largest round-trip time of the last round.",
                result.max_ms,
            ),
        ] {
            if let Some(ms) = ms {
                out.sample(family, "gauge", help, "", &labels, ms / 1000.0);
            }
        }
        out.sample(
            "spoolmon_order_result_age_seconds",
            "gauge",
            "Seconds since the last result was collected.",
            "",
            &labels,
            result.age as f64,
        );
    }
}

/// The RTT histograms and ping counters of every order measured since the daemon started.
fn add_histograms(out: &mut Exposition, rtt: &RttHistograms) {
    const HISTOGRAM: &str = "spoolmon_ping_rtt_seconds";
    const HISTOGRAM_HELP: &str =
        "Round-trip times of answered pings since the daemon started (fixed buckets, the same on every node).";
    for (id, histogram) in rtt.snapshot() {
        let id = id.as_str();
        let cumulative = histogram.cumulative();
        for (i, count) in cumulative.iter().enumerate() {
            let le = BUCKETS.get(i).map_or_else(|| "+Inf".to_string(), |b| bound_text(*b));
            out.sample(
                HISTOGRAM,
                "histogram",
                HISTOGRAM_HELP,
                "_bucket",
                &[("order", id), ("le", &le)],
                *count as f64,
            );
        }
        out.sample(
            HISTOGRAM,
            "histogram",
            HISTOGRAM_HELP,
            "_count",
            &[("order", id)],
            histogram.answered() as f64,
        );
        out.sample(
            HISTOGRAM,
            "histogram",
            HISTOGRAM_HELP,
            "_sum",
            &[("order", id)],
            histogram.sum,
        );
        out.sample(
            "spoolmon_ping_sent",
            "counter",
            "Pings sent in measured rounds since the daemon started.",
            "_total",
            &[("order", id)],
            histogram.sent as f64,
        );
        out.sample(
            "spoolmon_ping_lost",
            "counter",
            "Pings that got no answer in time since the daemon started.",
            "_total",
            &[("order", id)],
            histogram.lost as f64,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn families_from_several_files_are_merged_not_split_and_end_with_eof() {
        let mut out = Exposition::default();
        out.sample("spoolmon_a", "counter", "A.", "_total", &[("component", "run")], 1.0);
        out.sample("spoolmon_b", "gauge", "B.", "", &[], 2.5);
        out.sample("spoolmon_a", "counter", "A.", "_total", &[("component", "pull")], 3.0);
        let text = out.render();
        assert_eq!(
            text,
            "# TYPE spoolmon_a counter\n# HELP spoolmon_a A.\nspoolmon_a_total{component=\"run\"} 1\n\
             spoolmon_a_total{component=\"pull\"} 3\n# TYPE spoolmon_b gauge\n# HELP spoolmon_b B.\n\
             spoolmon_b 2.5\n# EOF\n"
        );
    }

    #[test]
    fn bucket_bounds_are_written_as_floats() {
        assert_eq!(bound_text(1.0), "1.0");
        assert_eq!(bound_text(0.00025), "0.00025");
        assert_eq!(bound_text(5.0), "5.0");
    }

    #[test]
    fn label_values_and_help_are_escaped() {
        assert_eq!(label_text(&[("order", "a\"b\\c\nd")]), "{order=\"a\\\"b\\\\c\\nd\"}");
        assert_eq!(escape_help("x\"y\nz"), "x\\\"y\\nz");
    }
}
