//! The Prometheus text exposition format (version 0.0.4), as node_exporter's textfile
//! collector reads it: per family one `# HELP` and one `# TYPE` line, then its samples
//! `name{label="value",...} value`, families never interleaved.
//!
//! Label values escape `\` as `\\`, `"` as `\"` and a newline as `\n`; HELP text escapes `\`
//! and newlines. Values are integers when they are whole (below 2^53), otherwise the shortest
//! decimal text; `NaN`, `+Inf` and `-Inf` as the format spells them.

use std::fmt::Write as _;

/// Counter (only goes up; the name ends in `_total`) or gauge.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
        }
    }
}

/// One value of a family, with its labels.
#[derive(Clone, Debug, PartialEq)]
pub struct Sample {
    pub labels: Vec<(&'static str, String)>,
    pub value: f64,
}

/// A metric family: one name, one help text, one type, its samples.
#[derive(Clone, Debug, PartialEq)]
pub struct Family {
    pub name: String,
    pub help: &'static str,
    pub kind: Kind,
    pub samples: Vec<Sample>,
}

/// The exposition text of `families` (families without samples are left out).
pub fn render(families: &[Family]) -> String {
    let mut out = String::new();
    for family in families.iter().filter(|f| !f.samples.is_empty()) {
        let _ = writeln!(out, "# HELP {} {}", family.name, escape_help(family.help));
        let _ = writeln!(out, "# TYPE {} {}", family.name, family.kind.as_str());
        for sample in &family.samples {
            let _ = writeln!(
                out,
                "{} {}",
                sample_key(&family.name, &sample.labels),
                format_value(sample.value)
            );
        }
    }
    out
}

/// `name` or `name{label="value",...}`, as the sample's line starts (also the key of the sample
/// in `status.json`).
pub fn sample_key(name: &str, labels: &[(&'static str, String)]) -> String {
    if labels.is_empty() {
        return name.to_owned();
    }
    let labels: Vec<String> = labels
        .iter()
        .map(|(key, value)| format!("{key}=\"{}\"", escape_label(value)))
        .collect();
    format!("{name}{{{}}}", labels.join(","))
}

/// A label value with `\`, `"` and newline escaped.
pub fn escape_label(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

fn escape_help(text: &str) -> String {
    text.replace('\\', "\\\\").replace('\n', "\\n")
}

/// A sample value as the format spells it.
pub fn format_value(value: f64) -> String {
    if value.is_nan() {
        "NaN".into()
    } else if value.is_infinite() {
        if value > 0.0 { "+Inf" } else { "-Inf" }.into()
    } else if value.fract() == 0.0 && value.abs() < 9_007_199_254_740_992.0 {
        format!("{}", value as i64)
    } else {
        format!("{value}")
    }
}

/// True for a valid metric name: `[a-zA-Z_:][a-zA-Z0-9_:]*`.
pub fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::collections::HashSet;

    /// Checks `text` against the exposition format's rules strictly; returns the samples
    /// (`name{labels}` → value). Panics naming the first offending line.
    pub(crate) fn check_exposition(text: &str) -> Vec<(String, f64)> {
        assert!(text.ends_with('\n'), "the text must end with a newline");
        let mut typed: HashSet<String> = HashSet::new();
        let mut helped: HashSet<String> = HashSet::new();
        let mut current: Option<(String, String)> = None;
        let mut samples = Vec::new();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# HELP ") {
                let name = rest.split(' ').next().unwrap();
                assert!(valid_name(name), "bad name in {line:?}");
                assert!(helped.insert(name.to_owned()), "second HELP for {name}");
            } else if let Some(rest) = line.strip_prefix("# TYPE ") {
                let (name, kind) = rest.split_once(' ').unwrap_or_else(|| panic!("{line:?}"));
                assert!(valid_name(name), "bad name in {line:?}");
                assert!(helped.contains(name), "TYPE before HELP for {name}");
                assert!(matches!(kind, "counter" | "gauge"), "unexpected type in {line:?}");
                assert!(typed.insert(name.to_owned()), "second TYPE for {name}");
                if kind == "counter" {
                    assert!(name.ends_with("_total"), "counter {name} must end in _total");
                }
                current = Some((name.to_owned(), kind.to_owned()));
            } else {
                assert!(!line.starts_with('#') && !line.is_empty(), "unexpected line {line:?}");
                samples.push(check_sample(line, current.as_ref()));
            }
        }
        samples
    }

    fn check_sample(line: &str, current: Option<&(String, String)>) -> (String, f64) {
        let (key, value) = line.rsplit_once(' ').unwrap_or_else(|| panic!("no value in {line:?}"));
        let name_end = key.find('{').unwrap_or(key.len());
        let name = &key[..name_end];
        let family = current.unwrap_or_else(|| panic!("sample before any TYPE: {line:?}"));
        assert_eq!(name, family.0, "sample {line:?} outside its family");
        if name_end < key.len() {
            check_labels(&key[name_end..], line);
        }
        let value = match value {
            "NaN" => f64::NAN,
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            v => v.parse().unwrap_or_else(|_| panic!("bad value in {line:?}")),
        };
        if family.1 == "counter" {
            assert!(value >= 0.0, "negative counter in {line:?}");
        }
        (key.to_owned(), value)
    }

    /// `{a="x",b="y\"z"}`: names valid, values quoted with only the three escapes.
    fn check_labels(labels: &str, line: &str) {
        let inner = labels
            .strip_prefix('{')
            .and_then(|l| l.strip_suffix('}'))
            .unwrap_or_else(|| panic!("bad labels in {line:?}"));
        let mut rest = inner;
        while !rest.is_empty() {
            let (name, after) = rest
                .split_once("=\"")
                .unwrap_or_else(|| panic!("bad label in {line:?}"));
            assert!(
                valid_name(name) && !name.starts_with("__"),
                "bad label name in {line:?}"
            );
            let mut chars = after.char_indices();
            let end = loop {
                match chars.next() {
                    Some((_, '\\')) => {
                        let escaped = chars.next().map(|(_, c)| c);
                        assert!(matches!(escaped, Some('\\' | '"' | 'n')), "bad escape in {line:?}");
                    }
                    Some((i, '"')) => break i,
                    Some((_, '\n')) | None => panic!("unterminated label value in {line:?}"),
                    Some(_) => {}
                }
            };
            rest = &after[end + 1..];
            rest = rest.strip_prefix(',').unwrap_or(rest);
        }
    }

    fn family(name: &str, kind: Kind, samples: Vec<Sample>) -> Family {
        Family {
            name: name.into(),
            help: "Help with a \\ backslash\nand a newline.",
            kind,
            samples,
        }
    }

    #[test]
    fn rendered_families_follow_the_format_and_escape_labels() {
        let families = [
            family(
                "spoolmon_x_total",
                Kind::Counter,
                vec![Sample {
                    labels: vec![("sink", "we\\ird \"name\"\nhere".into())],
                    value: 3.0,
                }],
            ),
            family("spoolmon_empty", Kind::Gauge, Vec::new()),
            family(
                "spoolmon_y_seconds",
                Kind::Gauge,
                vec![Sample {
                    labels: Vec::new(),
                    value: 0.25,
                }],
            ),
        ];
        let text = render(&families);
        assert_eq!(
            text,
            "# HELP spoolmon_x_total Help with a \\\\ backslash\\nand a newline.\n\
             # TYPE spoolmon_x_total counter\n\
             spoolmon_x_total{sink=\"we\\\\ird \\\"name\\\"\\nhere\"} 3\n\
             # HELP spoolmon_y_seconds Help with a \\\\ backslash\\nand a newline.\n\
             # TYPE spoolmon_y_seconds gauge\n\
             spoolmon_y_seconds 0.25\n"
        );
        assert_eq!(check_exposition(&text).len(), 2);
    }

    #[test]
    fn values_are_spelled_as_the_format_wants() {
        assert_eq!(format_value(12.0), "12");
        assert_eq!(format_value(-3.0), "-3");
        assert_eq!(format_value(0.001), "0.001");
        assert_eq!(format_value(1e20), "100000000000000000000");
        assert_eq!(format_value(f64::NAN), "NaN");
        assert_eq!(format_value(f64::INFINITY), "+Inf");
        assert_eq!(format_value(f64::NEG_INFINITY), "-Inf");
    }

    #[test]
    fn the_checker_catches_what_the_format_forbids() {
        let bad = [
            "spoolmon_a 1\n",                                                                // no TYPE
            "# HELP a_total h\n# TYPE a_total counter\n# TYPE a_total counter\na_total 1\n", // twice
            "# HELP a h\n# TYPE a counter\na 1\n",                                           // counter w/o _total
            "# HELP 1a h\n# TYPE 1a gauge\n1a 1\n",                                          // bad name
            "# HELP a h\n# TYPE a gauge\na{s=\"x\ny\"} 1\n",                                 // raw newline
            "# HELP a h\n# TYPE a gauge\na{s=\"\\x\"} 1\n",                                  // bad escape
            "# HELP a h\n# TYPE a gauge\nb 1\n",                                             // wrong family
        ];
        for text in bad {
            assert!(
                std::panic::catch_unwind(|| check_exposition(text)).is_err(),
                "accepted {text:?}"
            );
        }
        assert!(valid_name("spoolmon:x_1") && !valid_name("spoolmon-x") && !valid_name(""));
    }
}
