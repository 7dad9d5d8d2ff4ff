//! Alert thresholds on an order's results: the order file's `alert:` and the threshold lists of
//! `spoolmon check order -w/-c` and `check orders --order-warning/--order-critical`.
//!
//! A level (warning or critical) sets any subset of three metrics of a result:
//! - `loss`: lost pings, a count (`2`) or a percentage of the pings (`20%`);
//! - `median`, `max`: round-trip times, in seconds (`0.5`) or with a unit (`100ms`, `250us`,
//!   `1s`).
//!
//! Each value is a Nagios range ([`super::range`]) whose numbers may carry the unit: `100ms`
//! alerts above 100 ms (as `-w 10` alerts outside 0..10), `10ms:100ms` outside, `@10%:20%`
//! inside, `~:1s`, `5:`. A loss range is all counts or all percentages. Bounds: a loss count
//! at most [`super::MAX_PINGS`], a percentage at most 100, an RTT at most an hour (and at least
//! a nanosecond when not 0); nothing negative.
//!
//! The list syntax (command line) is `metric=value` items separated by commas:
//! `loss=2,median=100ms,max=0.5`; the order's form is a YAML map per level (parsed in `parse.rs`
//! through [`Threshold::parse`]): `alert: {warning: {loss: 10%, median: 100ms}, critical:
//! {loss: 50%, max: 1s}}`.
//!
//! Invariant: a [`Threshold`]'s range is in the metric's own unit (lost pings, percent, seconds),
//! so the checks compare a result's values with it directly and print it as perfdata
//! thresholds; [`Threshold::written`] keeps the text as given for messages and listings.
//!
//! Called by the order parser (`alert:`), `command::check` (the lists) and `crate::check`
//! (evaluating a result, `check order` and `check orders`).

use super::range::Range;
use serde::ser::{SerializeMap, Serializer};
use std::sync::{Arc, LazyLock};

/// What a threshold measures in a result.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Metric {
    Loss,
    Median,
    Max,
}

impl Metric {
    /// Every metric, in the order messages and perfdata list them.
    pub const ALL: [Metric; 3] = [Metric::Loss, Metric::Median, Metric::Max];

    /// The name thresholds use (`loss=`, `median:`).
    pub const fn name(self) -> &'static str {
        match self {
            Metric::Loss => "loss",
            Metric::Median => "median",
            Metric::Max => "max",
        }
    }

    pub fn from_name(name: &str) -> Option<Metric> {
        Metric::ALL.into_iter().find(|metric| metric.name() == name)
    }
}

/// One metric's threshold at one level.
#[derive(Clone, Debug, PartialEq)]
pub struct Threshold {
    /// In the metric's unit: lost pings (or percent of the pings when [`Threshold::percent`])
    /// for `loss`, seconds for `median` and `max`.
    pub range: Range,
    /// A loss range written as a percentage of the pings.
    pub percent: bool,
    /// The value as written (`100ms`, `20%`, `2`).
    pub written: String,
}

/// Most characters of a value or an item quoted in an error message.
const QUOTED_CHARS: usize = 60;

/// `text` in quotes for a message, cut to [`QUOTED_CHARS`] (a hostile argument stays short).
pub(crate) fn quote(text: &str) -> String {
    if text.chars().count() > QUOTED_CHARS {
        let head: String = text.chars().take(QUOTED_CHARS).collect();
        format!("{:?}...", head)
    } else {
        format!("{text:?}")
    }
}

/// Largest RTT a threshold may name, seconds.
const MAX_RTT_SECS: f64 = 3600.0;
/// Smallest RTT other than 0 a threshold may name, seconds (finer is no measurement).
const MIN_RTT_SECS: f64 = 1e-9;

impl Threshold {
    /// Parses the value of `metric` (`100ms`, `20%`, `10ms:50ms`); the error says what is wrong
    /// with it (the caller names the item or key).
    pub fn parse(metric: Metric, text: &str) -> Result<Threshold, String> {
        let value = text.trim();
        if value.is_empty() {
            return Err("no value".to_string());
        }
        let (inside, body) = match value.strip_prefix('@') {
            Some(rest) => ("@", rest),
            None => ("", value),
        };
        let mut parts = body.split(':');
        let (first, second) = (parts.next().unwrap_or_default(), parts.next());
        if parts.next().is_some() {
            return Err(format!("{} has more than one `:`", quote(value)));
        }
        let mut percent = None;
        let mut endpoint = |text: &str| -> Result<String, String> {
            let (number, is_percent) = normalize(metric, text)?;
            if metric == Metric::Loss && percent.replace(is_percent).is_some_and(|was| was != is_percent) {
                return Err(format!("{} mixes a count and a percentage", quote(value)));
            }
            Ok(number)
        };
        let normalized = match second {
            None => endpoint(first)?,
            Some(end) => {
                let start = if first == "~" {
                    "~".to_string()
                } else if first.is_empty() {
                    return Err(format!("{} has no start before `:` (`~:` for none)", quote(value)));
                } else {
                    endpoint(first)?
                };
                let end = if end.is_empty() { String::new() } else { endpoint(end)? };
                format!("{start}:{end}")
            }
        };
        let range = Range::parse(&format!("{inside}{normalized}"))
            .map_err(|_| format!("{}: the start is above the end", quote(value)))?;
        Ok(Threshold {
            range,
            percent: percent.unwrap_or(false),
            written: value.to_string(),
        })
    }

    /// The item as a list names it: `median=100ms`.
    pub fn item(&self, metric: Metric) -> String {
        format!("{}={}", metric.name(), self.written)
    }
}

/// One number of a range, with its unit, in the metric's own unit as a plain decimal text
/// (`100ms` → `0.1`), and whether it was a percentage.
fn normalize(metric: Metric, text: &str) -> Result<(String, bool), String> {
    let (number, exponent, percent) = match metric {
        Metric::Loss => match text.strip_suffix('%') {
            Some(number) => (number, 0, true),
            None => (text, 0, false),
        },
        Metric::Median | Metric::Max => {
            let units = [("ms", -3), ("us", -6), ("s", 0)];
            match units
                .iter()
                .find_map(|(unit, exponent)| text.strip_suffix(unit).map(|n| (n, *exponent)))
            {
                Some((number, exponent)) => (number, exponent, false),
                None => (text, 0, false),
            }
        }
    };
    let what = match (metric, percent) {
        (Metric::Loss, true) => "a percentage",
        (Metric::Loss, false) => "a count of lost pings or a percentage (20%)",
        _ => "a time in seconds or with a unit (100ms, 250us, 1s)",
    };
    let bad = || format!("{} is not {what}", quote(text));
    let (mantissa, written_exponent) = match number.find(['e', 'E']) {
        Some(at) => (&number[..at], Some(&number[at + 1..])),
        None => (number, None),
    };
    let digits = mantissa.bytes().filter(u8::is_ascii_digit).count();
    let dots = mantissa.bytes().filter(|b| *b == b'.').count();
    if digits == 0 || digits + dots != mantissa.len() || dots > 1 {
        return Err(bad());
    }
    let exponent = match written_exponent {
        None => exponent,
        Some(written) => {
            let plain = written.strip_prefix(['+', '-']).unwrap_or(written);
            if plain.is_empty() || plain.len() > 4 || !plain.bytes().all(|b| b.is_ascii_digit()) {
                return Err(bad());
            }
            written.parse::<i32>().map_err(|_| bad())? + exponent
        }
    };
    // Shifting the decimal exponent, not multiplying: `1.2ms` is exactly the double nearest
    // 0.0012 (1.2 / 1000 may not be), so the perfdata shows `0.0012`.
    let value: f64 = format!("{mantissa}e{exponent}").parse().map_err(|_| bad())?;
    let (limit, unit) = match (metric, percent) {
        (Metric::Loss, true) => (100.0, "%"),
        (Metric::Loss, false) => (super::MAX_PINGS as f64, " lost pings"),
        _ => (MAX_RTT_SECS, " s"),
    };
    if !value.is_finite() || value > limit {
        return Err(format!("{} is more than {limit}{unit}", quote(text)));
    }
    if metric != Metric::Loss && value != 0.0 && value < MIN_RTT_SECS {
        return Err(format!("{} is less than a nanosecond", quote(text)));
    }
    Ok((value.to_string(), percent))
}

/// One level's thresholds: any subset of the metrics.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Level {
    pub loss: Option<Threshold>,
    pub median: Option<Threshold>,
    pub max: Option<Threshold>,
}

/// Why a threshold list does not parse: the item and what is wrong with it.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid threshold {item}: {reason} (expected e.g. loss=2,median=100ms,max=0.5)")]
pub struct InvalidThreshold {
    /// The item, quoted (and cut when long).
    pub item: String,
    pub reason: String,
}

impl Level {
    pub fn get(&self, metric: Metric) -> Option<&Threshold> {
        match metric {
            Metric::Loss => self.loss.as_ref(),
            Metric::Median => self.median.as_ref(),
            Metric::Max => self.max.as_ref(),
        }
    }

    fn slot(&mut self, metric: Metric) -> &mut Option<Threshold> {
        match metric {
            Metric::Loss => &mut self.loss,
            Metric::Median => &mut self.median,
            Metric::Max => &mut self.max,
        }
    }

    /// Sets `metric`'s threshold, refusing a second one.
    pub fn set(&mut self, metric: Metric, threshold: Threshold) -> Result<(), String> {
        let slot = self.slot(metric);
        if slot.is_some() {
            return Err(format!("{} is given twice", metric.name()));
        }
        *slot = Some(threshold);
        Ok(())
    }

    pub fn is_empty(&self) -> bool {
        Metric::ALL.iter().all(|metric| self.get(*metric).is_none())
    }

    /// Parses a list: `loss=2,median=100ms,max=0.5` (any subset, each metric at most once,
    /// spaces around items and `=` allowed).
    pub fn parse_list(text: &str) -> Result<Level, InvalidThreshold> {
        let invalid = |item: &str, reason: String| InvalidThreshold {
            item: quote(item),
            reason,
        };
        if text.trim().is_empty() {
            return Err(invalid(text, "no threshold given".to_string()));
        }
        let mut level = Level::default();
        for item in text.split(',') {
            let item = item.trim();
            if item.is_empty() {
                return Err(invalid(item, "empty item (a doubled or trailing comma)".to_string()));
            }
            let Some((name, value)) = item.split_once('=') else {
                return Err(invalid(item, "expected metric=value".to_string()));
            };
            let Some(metric) = Metric::from_name(name.trim()) else {
                return Err(invalid(
                    item,
                    format!("unknown metric {} (known: loss, median, max)", quote(name.trim())),
                ));
            };
            let threshold = Threshold::parse(metric, value).map_err(|reason| invalid(item, reason))?;
            level.set(metric, threshold).map_err(|reason| invalid(item, reason))?;
        }
        Ok(level)
    }
}

/// Listings show a level as a map of metric to the value as written.
impl serde::Serialize for Level {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let present: Vec<(Metric, &Threshold)> = Metric::ALL
            .into_iter()
            .filter_map(|metric| self.get(metric).map(|t| (metric, t)))
            .collect();
        let mut map = serializer.serialize_map(Some(present.len()))?;
        for (metric, threshold) in present {
            map.serialize_entry(metric.name(), &threshold.written)?;
        }
        map.end()
    }
}

/// An order's `alert:`, or the command line's pair of lists.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize)]
pub struct Alert {
    #[serde(skip_serializing_if = "Level::is_empty")]
    pub warning: Level,
    #[serde(skip_serializing_if = "Level::is_empty")]
    pub critical: Level,
}

impl Alert {
    /// The `-w`/`-c` lists (either may be absent).
    pub fn parse_lists(warning: Option<&str>, critical: Option<&str>) -> Result<Alert, InvalidThreshold> {
        Ok(Alert {
            warning: warning.map(Level::parse_list).transpose()?.unwrap_or_default(),
            critical: critical.map(Level::parse_list).transpose()?.unwrap_or_default(),
        })
    }

    pub fn is_empty(&self) -> bool {
        self.warning.is_empty() && self.critical.is_empty()
    }

    /// `self` as an order holds it: an empty one is the process's single shared empty value
    /// (no allocation per order), any other one its own.
    pub fn shared(self) -> Arc<Alert> {
        static EMPTY: LazyLock<Arc<Alert>> = LazyLock::new(|| Arc::new(Alert::default()));
        if self.is_empty() {
            EMPTY.clone()
        } else {
            Arc::new(self)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn threshold(metric: Metric, text: &str) -> Threshold {
        Threshold::parse(metric, text).unwrap_or_else(|e| panic!("{text}: {e}"))
    }

    #[test]
    fn units_are_converted_to_the_metrics_own_unit_exactly() {
        let cases = [
            (Metric::Median, "100ms", "0.1"),
            (Metric::Median, "1.2ms", "0.0012"),
            (Metric::Max, "250us", "0.00025"),
            (Metric::Max, "0.5", "0.5"),
            (Metric::Max, "1s", "1"),
            (Metric::Max, "1.5e2ms", "0.15"),
            (Metric::Max, "10ms:100ms", "0.01:0.1"),
            (Metric::Max, "@10ms:20ms", "@0.01:0.02"),
            (Metric::Max, "~:1s", "~:1"),
            (Metric::Max, "5ms:", "0.005:"),
            (Metric::Loss, "2", "2"),
            (Metric::Loss, "20%", "20"),
            (Metric::Loss, "@10%:20%", "@10:20"),
            (Metric::Loss, "0", "0"),
        ];
        for (metric, text, range) in cases {
            let parsed = threshold(metric, text);
            assert_eq!(parsed.range.to_string(), range, "{text}");
            assert_eq!(parsed.written, text);
            assert_eq!(parsed.percent, text.contains('%'), "{text}");
        }
    }

    #[test]
    fn a_plain_value_alerts_above_it_and_ranges_keep_their_nagios_meaning() {
        let median = threshold(Metric::Median, "100ms");
        assert!(!median.range.alerts(0.1) && median.range.alerts(0.1001) && !median.range.alerts(0.0));
        let inside = threshold(Metric::Loss, "@10%:20%");
        assert!(inside.range.alerts(15.0) && !inside.range.alerts(25.0) && !inside.range.alerts(5.0));
        let below = threshold(Metric::Max, "5ms:");
        assert!(below.range.alerts(0.004) && !below.range.alerts(10.0));
    }

    #[test]
    fn malformed_values_are_refused_with_the_reason() {
        let cases = [
            (Metric::Median, "", "no value"),
            (Metric::Median, "100xs", "not a time"),
            (Metric::Median, "ms", "not a time"),
            (Metric::Median, "-1ms", "not a time"),
            (Metric::Median, "1..2", "not a time"),
            (Metric::Median, "nan", "not a time"),
            (Metric::Median, "inf", "not a time"),
            (Metric::Median, "1e99999", "not a time"),
            (Metric::Median, "1e400", "more than 3600"),
            (Metric::Median, "2h", "not a time"),
            (Metric::Median, "3601", "more than 3600"),
            (Metric::Median, "1e-12", "less than a nanosecond"),
            (Metric::Median, "1:2:3", "more than one"),
            (Metric::Median, "20ms:10ms", "start is above the end"),
            (Metric::Median, ":5", "no start"),
            (Metric::Median, "@", "not a time"),
            (Metric::Loss, "2%%", "not a percentage"),
            (Metric::Loss, "101%", "more than 100%"),
            (Metric::Loss, "1001", "more than 1000"),
            (Metric::Loss, "2:50%", "mixes a count and a percentage"),
            (Metric::Loss, "5ms", "not a count"),
            (Metric::Loss, "0x10", "not a count"),
            (Metric::Loss, " ", "no value"),
        ];
        for (metric, text, reason) in cases {
            let error = Threshold::parse(metric, text).expect_err(text);
            assert!(error.contains(reason), "{text}: {error}");
        }
    }

    #[test]
    fn lists_take_any_subset_once_and_name_the_bad_item() {
        let level = Level::parse_list("loss=2, median = 100ms,max=0.5").unwrap();
        assert_eq!(level.loss.as_ref().unwrap().range.to_string(), "2");
        assert_eq!(level.median.as_ref().unwrap().range.to_string(), "0.1");
        assert_eq!(level.max.as_ref().unwrap().item(Metric::Max), "max=0.5");
        let only = Level::parse_list("loss=20%").unwrap();
        assert!(only.loss.unwrap().percent && only.median.is_none() && only.max.is_none());
        let cases = [
            ("", "\"\": no threshold given"),
            ("loss=2,", "\"\": empty item"),
            ("loss=2,,max=1", "empty item"),
            ("loss", "\"loss\": expected metric=value"),
            ("min=1ms", "\"min=1ms\": unknown metric \"min\""),
            ("Loss=1", "unknown metric"),
            ("loss=1,loss=2%", "\"loss=2%\": loss is given twice"),
            ("median=fast", "\"median=fast\": \"fast\" is not a time"),
        ];
        for (text, message) in cases {
            let error = Level::parse_list(text).expect_err(text).to_string();
            assert!(error.contains(message), "{text}: {error}");
            assert!(error.contains("loss=2,median=100ms,max=0.5"), "{error}");
        }
    }

    #[test]
    fn a_huge_list_is_refused_with_a_short_message() {
        let huge = format!("median={}", "9".repeat(1 << 20));
        let error = Level::parse_list(&huge).unwrap_err().to_string();
        assert!(error.len() < 400, "{}", error.len());
        let many = "loss=1,".repeat(100_000);
        let error = Level::parse_list(&many).unwrap_err().to_string();
        assert!(error.contains("given twice") && error.len() < 400, "{error}");
    }

    #[test]
    fn a_level_serializes_as_the_values_written() {
        let alert = Alert::parse_lists(Some("median=100ms,loss=10%"), None).unwrap();
        assert_eq!(
            serde_json::to_string(&alert).unwrap(),
            r#"{"warning":{"loss":"10%","median":"100ms"}}"#
        );
        assert!(Alert::default().is_empty());
    }
}
