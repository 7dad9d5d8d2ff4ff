//! Results and metrics as InfluxDB line protocol, the lines pingmachine sent to Telegraf (with
//! its bugs fixed).
//!
//! For a result whose order has a measurement name `M` and tags, sent at step start `T`:
//!
//! ```text
//! M,<tags> loss=<percent>,max_rtt=<s>,median_rtt=<s>,min_rtt=<s> <T>
//! M,<tags> individual_rtt=<s> <T + step*i/pings>      one per answered ping, i = its index
//! ```
//!
//! - `loss` is the percentage of pings without an answer; RTTs are in seconds, the median is
//!   the upper median of the sorted answers (as `last_result`; pingmachine took it from the
//!   unsorted list). Without answers the line is `M,<tags> loss=100 <T>` (pingmachine divided
//!   by zero there and lost the rest of its batch).
//! - `pings` in the `individual_rtt` timestamps is the number of pings sent, so the points of
//!   one step are spread evenly over it, in sending order.
//! - Tags are the order's tags merged with the configured global tags, sorted by key; an
//!   order's tag wins over a global tag with the same key (as in Telegraf). Tags with an empty
//!   key or value, or with a line break, are left out: line protocol cannot carry them. Fields
//!   are sorted too.
//! - Escaping: in the measurement `,` and space; in tag keys and values `,`, `=` and space. A
//!   backslash that would escape the next character (one of those, or the separator after the
//!   end of the name) is doubled so the line still parses; InfluxDB 2.x reads that back as one
//!   backslash, 1.x as two. All field keys are fixed names that need no escaping, and no string
//!   field is ever written.
//! - A result received from another node (a child's), and a metric aggregated from a HAProxy
//!   snapshot another node shipped, carry the tag `node=<origin node name>`, over an order's own
//!   `node` tag and a global one: the children's series stay apart.
//! - Timestamps are integers in the configured precision (nanoseconds by default).
//! - Results without a measurement name produce no line; neither does a measurement name that
//!   is empty, holds a line break or starts with `#` (a comment line in line protocol), nor a
//!   result whose probe could not measure the order (`failure` set: its step is unknown, and
//!   `loss=100` would invent a loss; pingmachine sent nothing for such a run either).
//!
//! A [`Metric`] becomes `<path>[,<global tags>] value=<v> <time>`: the whole dotted path is the
//! measurement (what Telegraf's Graphite parser without templates does too), the value a float
//! field. Metrics with a non-finite value are left out.

use super::{InfluxOptions, Precision};
use crate::shared::measurement::MetricRef;
use crate::shared::measurement::{OrderResult, TelegrafMeta};
use crate::shared::option::InvalidOption;
use crate::shared::stats::PingStats;
use crate::sink::number::{write_integer, write_number};
use crate::sink::Encoder;
use std::cmp::Ordering;
use std::collections::BTreeMap;

/// The tag naming the origin node of a received result.
pub const NODE_TAG: &str = "node";
/// Characters escaped with a backslash in a measurement name.
const MEASUREMENT_SPECIAL: &[u8] = b", ";
/// Characters escaped with a backslash in tag keys and tag values.
const TAG_SPECIAL: &[u8] = b", =";

/// Encodes results and metrics as line protocol (see the module documentation).
#[derive(Clone, Debug)]
pub struct InfluxEncoder {
    /// Sorted by key.
    global_tags: Vec<(String, String)>,
    units_per_second: i64,
}

impl InfluxEncoder {
    pub fn new(options: &InfluxOptions) -> InfluxEncoder {
        InfluxEncoder::with_tags(&options.global_tags, options.precision)
    }

    /// An encoder adding `global_tags` to every line, with timestamps in `precision`.
    pub fn with_tags(global_tags: &BTreeMap<String, String>, precision: Precision) -> InfluxEncoder {
        InfluxEncoder {
            global_tags: global_tags
                .iter()
                .filter(|(key, value)| representable(key, value))
                .map(|(key, value)| (key.clone(), value.clone()))
                .collect(),
            units_per_second: precision.units_per_second(),
        }
    }

    /// Appends the summary line and one `individual_rtt` line per answer of `result`; returns
    /// how many lines it appended (0 without a usable measurement name).
    pub fn encode_result(&self, result: &OrderResult, out: &mut Vec<u8>) -> usize {
        let Some(meta) = result
            .telegraf
            .as_ref()
            .filter(|meta| measurement_usable(&meta.measurement_name) && result.failure.is_none())
        else {
            return 0;
        };
        let stats = PingStats::from_rtts(&result.rtts);
        let start = out.len();
        match &result.origin {
            None => self.write_series_key(meta, out),
            Some(origin) => {
                let mut tags = meta.tags.clone();
                tags.insert(NODE_TAG.to_owned(), origin.node.clone());
                write_escaped(out, &meta.measurement_name, MEASUREMENT_SPECIAL);
                self.write_tags(&tags, out);
            }
        }
        let series = start..out.len();
        out.extend_from_slice(b" loss=");
        write_number(out, stats.loss_percent());
        if let (Some(min), Some(median), Some(max)) = (stats.min(), stats.median(), stats.max()) {
            write_field(out, b",max_rtt=", max);
            write_field(out, b",median_rtt=", median);
            write_field(out, b",min_rtt=", min);
        }
        self.write_time(out, result, 0);
        let mut lines = 1;
        for (index, rtt) in result.rtts.iter().enumerate() {
            if let Some(rtt) = rtt.filter(|rtt| is_answer(*rtt)) {
                out.extend_from_within(series.clone());
                write_field(out, b" individual_rtt=", rtt);
                self.write_time(out, result, index);
                lines += 1;
            }
        }
        lines
    }

    /// Appends the line of `metric`; returns 1, or 0 if it cannot be written.
    pub fn encode_metric(&self, metric: MetricRef<'_>, out: &mut Vec<u8>) -> usize {
        if !metric.value.is_finite() || !measurement_usable(metric.path) {
            tracing::debug!(path = %metric.path, value = metric.value, "metric left out of line protocol");
            return 0;
        }
        write_escaped(out, metric.path, MEASUREMENT_SPECIAL);
        match metric.origin {
            None => self.write_tags(&BTreeMap::new(), out),
            Some(origin) => self.write_tags(&BTreeMap::from([(NODE_TAG.to_owned(), origin.node.clone())]), out),
        }
        write_field(out, b" value=", metric.value);
        out.push(b' ');
        write_integer(out, metric.time.saturating_mul(self.units_per_second));
        out.push(b'\n');
        1
    }

    /// Appends `M,<tags>` of an order.
    fn write_series_key(&self, meta: &TelegrafMeta, out: &mut Vec<u8>) {
        write_escaped(out, &meta.measurement_name, MEASUREMENT_SPECIAL);
        self.write_tags(&meta.tags, out);
    }

    /// Appends `,k=v` for the union of `own` and the global tags, sorted, `own` winning.
    fn write_tags(&self, own: &BTreeMap<String, String>, out: &mut Vec<u8>) {
        let mut own = own.iter().filter(|(k, v)| representable(k, v)).peekable();
        let mut global = self.global_tags.iter().map(|(k, v)| (k, v)).peekable();
        loop {
            let order = match (own.peek(), global.peek()) {
                (Some(o), Some(g)) => o.0.cmp(g.0),
                (Some(_), None) => Ordering::Less,
                (None, Some(_)) => Ordering::Greater,
                (None, None) => break,
            };
            if order == Ordering::Equal {
                global.next();
            }
            let (key, value) = match order {
                Ordering::Less | Ordering::Equal => own.next(),
                Ordering::Greater => global.next(),
            }
            .expect("peeked");
            out.push(b',');
            write_escaped(out, key, TAG_SPECIAL);
            out.push(b'=');
            write_escaped(out, value, TAG_SPECIAL);
        }
    }

    /// Appends ` <timestamp>\n` of ping `index` of `result`: `T + step*index/pings`.
    fn write_time(&self, out: &mut Vec<u8>, result: &OrderResult, index: usize) {
        let units = i128::from(self.units_per_second);
        let pings = result.rtts.len().max(1) as i128;
        let offset = i128::from(result.step) * units * index as i128 / pings;
        let time = i128::from(result.time) * units + offset;
        out.push(b' ');
        write_integer(
            out,
            i64::try_from(time).unwrap_or(if time < 0 { i64::MIN } else { i64::MAX }),
        );
        out.push(b'\n');
    }
}

impl Encoder for InfluxEncoder {
    fn encode_result(&self, result: &OrderResult, out: &mut Vec<u8>) -> usize {
        InfluxEncoder::encode_result(self, result, out)
    }

    fn encode_metric(&self, metric: MetricRef<'_>, out: &mut Vec<u8>) -> usize {
        InfluxEncoder::encode_metric(self, metric, out)
    }
}

/// Checks a configured tag; `option` is the config key of the tag map.
pub fn check_tag(option: &str, key: &str, value: &str) -> Result<(), InvalidOption> {
    if representable(key, value) {
        Ok(())
    } else {
        let reason = format!("tag {key:?}: {value:?}: keys and values must be non-empty, without line breaks");
        Err(InvalidOption::new(option, reason))
    }
}

/// An answered ping, as [`PingStats::from_rtts`] counts it: finite and not negative.
fn is_answer(rtt: f64) -> bool {
    rtt.is_finite() && rtt >= 0.0
}

fn representable(key: &str, value: &str) -> bool {
    let has_break = |s: &str| s.contains(['\n', '\r']);
    !key.is_empty() && !value.is_empty() && !has_break(key) && !has_break(value)
}

fn measurement_usable(name: &str) -> bool {
    !name.is_empty() && !name.starts_with('#') && !name.contains(['\n', '\r'])
}

/// Appends `name` (e.g. `,max_rtt=`) and `value`.
fn write_field(out: &mut Vec<u8>, name: &[u8], value: f64) {
    out.extend_from_slice(name);
    write_number(out, value);
}

/// Appends `text` with a backslash before each byte in `special`, and a backslash doubled where
/// it would otherwise escape what follows it (a special byte, or the separator after the end).
fn write_escaped(out: &mut Vec<u8>, text: &str, special: &[u8]) {
    let bytes = text.as_bytes();
    if !bytes.iter().any(|b| special.contains(b) || *b == b'\\') {
        out.extend_from_slice(bytes);
        return;
    }
    for (index, &byte) in bytes.iter().enumerate() {
        let escapes_next = byte == b'\\' && bytes.get(index + 1).is_none_or(|next| special.contains(next));
        if special.contains(&byte) || escapes_next {
            out.push(b'\\');
        }
        out.push(byte);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::process::handoff::SinkBatch;
    use crate::shared::measurement::{Metric, OrderId};

    const T: i64 = 1_700_000_000;

    fn result(measurement: Option<&str>, tags: &[(&str, &str)], rtts: Vec<Option<f64>>) -> OrderResult {
        OrderResult::builder(OrderId::new("app/target").unwrap(), T)
            .rtts(rtts)
            .telegraf(measurement.map(|name| TelegrafMeta {
                measurement_name: name.to_string(),
                tags: tags.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            }))
            .build()
    }

    fn encode_with(encoder: &InfluxEncoder, results: &[OrderResult], metrics: &[Metric]) -> (String, usize) {
        let mut out = Vec::new();
        let lines = encoder.encode(SinkBatch::round(results, metrics), &mut out);
        (String::from_utf8(out).unwrap(), lines)
    }

    fn encode(results: &[OrderResult]) -> (String, usize) {
        encode_with(&InfluxEncoder::with_tags(&BTreeMap::new(), Precision::Ns), results, &[])
    }

    #[test]
    fn summary_and_individual_lines_with_sorted_tags_and_spread_timestamps() {
        let rtts = vec![Some(0.003), None, Some(0.001), Some(0.002)];
        let (text, lines) = encode(&[result(Some("ping"), &[("b", "2"), ("a", "1")], rtts)]);
        assert_eq!(
            text,
            "ping,a=1,b=2 loss=25,max_rtt=0.003,median_rtt=0.002,min_rtt=0.001 1700000000000000000\n\
             ping,a=1,b=2 individual_rtt=0.003 1700000000000000000\n\
             ping,a=1,b=2 individual_rtt=0.001 1700000010000000000\n\
             ping,a=1,b=2 individual_rtt=0.002 1700000015000000000\n"
        );
        assert_eq!(lines, 4);
    }

    #[test]
    fn even_answer_count_uses_the_upper_median_of_sorted_values() {
        let (text, _) = encode(&[result(Some("m"), &[], vec![Some(0.4), Some(0.1), Some(0.3), Some(0.2)])]);
        let summary = text.lines().next().unwrap();
        assert_eq!(
            summary,
            "m loss=0,max_rtt=0.4,median_rtt=0.3,min_rtt=0.1 1700000000000000000"
        );
    }

    #[test]
    fn no_answer_sends_full_loss_and_no_rtt_fields() {
        let (text, lines) = encode(&[result(Some("m"), &[("t", "v")], vec![None, None, None])]);
        assert_eq!(text, "m,t=v loss=100 1700000000000000000\n");
        assert_eq!(lines, 1);
        let (text, _) = encode(&[result(Some("m"), &[], vec![])]);
        assert_eq!(text, "m loss=100 1700000000000000000\n");
    }

    #[test]
    fn a_run_that_could_not_measure_sends_nothing() {
        let mut failed = result(Some("ping"), &[("host", "a")], vec![None, None]);
        failed.failure = Some("cannot run /nonexistent".into());
        assert_eq!(encode(&[failed]), (String::new(), 0));
    }

    #[test]
    fn one_answer_is_min_median_and_max() {
        let (text, lines) = encode(&[result(Some("m"), &[], vec![None, Some(5.7e-4), None])]);
        assert_eq!(
            text,
            "m loss=66.66666666666667,max_rtt=0.00057,median_rtt=0.00057,min_rtt=0.00057 1700000000000000000\n\
             m individual_rtt=0.00057 1700000006666666666\n"
        );
        assert_eq!(lines, 2);
    }

    #[test]
    fn every_special_character_is_escaped_where_the_spec_says() {
        let (text, _) = encode(&[result(Some("my meas,x=y\"\\"), &[("k ,=\"", "v ,=\"\\")], vec![None])]);
        assert_eq!(
            text,
            "my\\ meas\\,x=y\"\\\\,k\\ \\,\\=\"=v\\ \\,\\=\"\\\\ loss=100 1700000000000000000\n"
        );
        let (text, _) = encode(&[result(Some("a\\b"), &[("k", "x\\,y\\z")], vec![None])]);
        assert_eq!(text, "a\\b,k=x\\\\\\,y\\z loss=100 1700000000000000000\n");
    }

    #[test]
    fn results_without_a_usable_measurement_produce_no_lines() {
        for measurement in [None, Some(""), Some("#comment"), Some("a\nb")] {
            let (text, lines) = encode(&[result(measurement, &[], vec![Some(0.1)])]);
            assert_eq!((text.as_str(), lines), ("", 0), "{measurement:?}");
        }
    }

    #[test]
    fn unrepresentable_tags_are_left_out() {
        let tags = [("empty", ""), ("", "v"), ("nl", "a\nb"), ("ok", "1")];
        let (text, _) = encode(&[result(Some("m"), &tags, vec![None])]);
        assert_eq!(text, "m,ok=1 loss=100 1700000000000000000\n");
    }

    #[test]
    fn global_tags_merge_sorted_and_the_order_tag_wins() {
        let global = BTreeMap::from([
            ("host".to_string(), "g".to_string()),
            ("zone".to_string(), "z".to_string()),
        ]);
        let encoder = InfluxEncoder::with_tags(&global, Precision::Ns);
        let results = [result(Some("m"), &[("host", "o"), ("a", "1")], vec![None])];
        let (text, _) = encode_with(&encoder, &results, &[]);
        assert_eq!(text, "m,a=1,host=o,zone=z loss=100 1700000000000000000\n");
    }

    #[test]
    fn a_received_result_is_tagged_with_its_origin_node_over_every_other_node_tag() {
        let global = BTreeMap::from([("node".to_string(), "parent".to_string())]);
        let encoder = InfluxEncoder::with_tags(&global, Precision::Ns);
        let mut received = result(Some("m"), &[("node", "own"), ("a", "1")], vec![None]);
        received.origin = Some(std::sync::Arc::new(crate::shared::node::Provenance {
            node: "child 1".into(),
            chain: vec![crate::shared::node::MachineGuid::random()],
        }));
        let (text, _) = encode_with(&encoder, &[received], &[]);
        assert_eq!(text, "m,a=1,node=child\\ 1 loss=100 1700000000000000000\n");
    }

    #[test]
    fn metrics_become_value_fields_with_global_tags() {
        let global = BTreeMap::from([("host".to_string(), "lb 1".to_string())]);
        let encoder = InfluxEncoder::with_tags(&global, Precision::Ns);
        let metrics = [
            Metric {
                path: "haproxy.frontend.www.scur".into(),
                value: 12.0,
                time: T,
            },
            Metric {
                path: "haproxy.x y".into(),
                value: 1e-7,
                time: T,
            },
            Metric {
                path: "haproxy.nan".into(),
                value: f64::NAN,
                time: T,
            },
        ];
        let (text, lines) = encode_with(&encoder, &[], &metrics);
        assert_eq!(
            text,
            "haproxy.frontend.www.scur,host=lb\\ 1 value=12 1700000000000000000\n\
             haproxy.x\\ y,host=lb\\ 1 value=1e-7 1700000000000000000\n"
        );
        assert_eq!(lines, 2);
    }

    #[test]
    fn precision_scales_timestamps_and_floors_ping_offsets() {
        let rtts = vec![Some(0.1), Some(0.2), Some(0.3)];
        let timestamps = |precision| {
            let encoder = InfluxEncoder::with_tags(&BTreeMap::new(), precision);
            let (text, _) = encode_with(&encoder, &[result(Some("m"), &[], rtts.clone())], &[]);
            text.lines()
                .map(|l| l.rsplit(' ').next().unwrap().to_string())
                .collect::<Vec<_>>()
        };
        assert_eq!(
            timestamps(Precision::S),
            ["1700000000", "1700000000", "1700000006", "1700000013"]
        );
        assert_eq!(
            timestamps(Precision::Ms),
            ["1700000000000", "1700000000000", "1700000006666", "1700000013333"]
        );
        assert_eq!(timestamps(Precision::Us)[2], "1700000006666666");
    }
}
