//! `spoolmon config --reference`: every key of the config file with its type, default and
//! meaning, rendered as Markdown from the JSON schema that `schemars` derives from the option
//! types themselves (their serde attributes give the keys and the `Default`s the defaults, their
//! doc comments the meaning), so the reference cannot drift from what the parser takes.
//! `config-reference.md` is this output, checked to be in sync by `tests/cli.rs`.
//!
//! Layout: one table for the top-level keys; one section for each top-level key that is itself a
//! mapping of options (`icmp:`, `pull:`, `process:`, `self-metrics:`); one for `sinks:` with a
//! table per sink `type:`. A mapping inside a section (a sink's `outbox:`) is listed with dotted
//! keys (`outbox.max-bytes`).

use super::Config;
use serde_json::{Map, Value};
use std::fmt::Write as _;

/// The command that regenerates `config-reference.md`.
pub const REGENERATE: &str = "spoolmon config --reference > config-reference.md";

/// The whole reference, Markdown.
pub fn markdown() -> String {
    let schema = schemars::schema_for!(Config).to_value();
    Renderer { root: &schema }.document()
}

struct Renderer<'a> {
    root: &'a Value,
}

/// One row of a table.
struct Row {
    key: String,
    kind: String,
    default: String,
    meaning: String,
}

impl<'a> Renderer<'a> {
    fn document(&self) -> String {
        let mut out = String::new();
        out.push_str("# spoolmon configuration reference\n\n");
        let _ = writeln!(
            out,
            "Generated from the option types by `spoolmon config --reference`; do not edit, \
             regenerate with `{REGENERATE}`."
        );
        out.push_str(
            "\nThe config file (`--config FILE`) is YAML. Every key is optional: an absent key has \
             its default, an unknown key is an error that names it. `spoolmon config \
             --print-defaults` prints the same defaults as a config file, `spoolmon config --print \
             --config FILE` the configuration in force.\n",
        );
        let properties = self.properties(self.root);
        let mut top = Vec::new();
        let mut sections = Vec::new();
        let mut sinks = None;
        for (key, property) in &properties {
            if key == "sinks" {
                sinks = Some(property);
                top.push(self.section_row(key, property));
            } else if self.options_of(property).is_some() {
                sections.push((key, property));
                top.push(self.section_row(key, property));
            } else {
                top.push(self.row(key.clone(), property));
            }
        }
        out.push_str("\n## Top level\n\n");
        table(&mut out, &top);
        for (key, property) in sections {
            let options = self.options_of(property).expect("a section");
            let _ = write!(out, "\n## `{key}:`\n\n");
            paragraph(&mut out, &description(property));
            if nullable(property) {
                paragraph(
                    &mut out,
                    &format!("Absent by default; the defaults below are those of a `{key}:` section that is present."),
                );
            }
            table(&mut out, &self.rows("", options));
        }
        if let Some(sinks) = sinks {
            self.sinks(&mut out, sinks);
        }
        out
    }

    /// `sinks:`, a map of sink name to one of the tagged sink types: a table per `type:`.
    fn sinks(&self, out: &mut String, sinks: &Value) {
        out.push_str("\n## `sinks:`\n\n");
        paragraph(out, &description(sinks));
        let sink = self.resolve(&sinks["additionalProperties"]);
        out.push_str(
            "Each sink is a mapping under its name (1-64 letters, digits, `_`, `-` or `.`, not \
             starting with `.`), with a `type:` and that type's keys:\n\n",
        );
        out.push_str("```yaml\nsinks:\n  carbon:\n    type: graphite\n    server: graphite.example.net\n```\n");
        for variant in sink["oneOf"].as_array().into_iter().flatten() {
            let kind = variant["properties"]["type"]["const"]
                .as_str()
                .expect("a tagged sink type");
            let _ = write!(out, "\n### `type: {kind}`\n\n");
            paragraph(out, &description(variant));
            let rows: Vec<Row> = self
                .rows("", variant)
                .into_iter()
                .filter(|row| row.key != "`type`")
                .collect();
            table(out, &rows);
        }
    }

    /// The row of a key that has a section of its own.
    fn section_row(&self, key: &str, property: &Value) -> Row {
        let default = if nullable(property) {
            "absent".to_string()
        } else {
            "see below".into()
        };
        Row {
            key: format!("`{key}`"),
            kind: "mapping".into(),
            default,
            meaning: format!("{} See [`{key}:`](#{key}).", description(property)),
        }
    }

    /// The rows of an object schema's properties; nested option mappings as dotted keys.
    fn rows(&self, prefix: &str, object: &Value) -> Vec<Row> {
        let mut rows = Vec::new();
        for (key, property) in self.properties(object) {
            let key = format!("{prefix}{key}");
            match self.options_of(&property) {
                Some(options) => rows.extend(self.rows(&format!("{key}."), options)),
                None => rows.push(self.row(key, &property)),
            }
        }
        rows
    }

    fn row(&self, key: String, property: &Value) -> Row {
        let mut meaning = description(property);
        if meaning.is_empty() {
            meaning = description(self.resolve(property));
        }
        let values = self.value_meanings(property);
        if !values.is_empty() {
            meaning = format!("{meaning} {values}").trim().to_string();
        }
        Row {
            key: format!("`{key}`"),
            kind: self.kind(property),
            default: property.get("default").map_or_else(String::new, default_text),
            meaning,
        }
    }

    /// The properties of an object schema, `$ref`s followed.
    fn properties(&self, object: &Value) -> Vec<(String, Value)> {
        let object = self.resolve(object);
        object["properties"]
            .as_object()
            .map(|properties| properties.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
            .unwrap_or_default()
    }

    /// The object schema with properties that `property` is (or may be, besides null).
    fn options_of<'v>(&'v self, property: &'v Value) -> Option<&'v Value> {
        let inner = match property.get("anyOf").and_then(Value::as_array) {
            Some(branches) if branches.len() == 2 && branches.iter().any(is_null) => {
                branches.iter().find(|b| !is_null(b)).expect("a non-null branch")
            }
            _ => property,
        };
        let inner = self.resolve(inner);
        inner.get("properties").map(|_| inner)
    }

    /// Follows a `$ref` into `$defs`.
    fn resolve<'v>(&'v self, schema: &'v Value) -> &'v Value {
        match schema.get("$ref").and_then(Value::as_str) {
            Some(reference) => {
                let name = reference.trim_start_matches("#/$defs/");
                &self.root["$defs"][name]
            }
            None => schema,
        }
    }

    /// The type as a reader wants it: `integer ≥ 0`, `list of string`, `` `a` or `b` ``.
    fn kind(&self, schema: &Value) -> String {
        let schema = self.resolve(schema);
        if let Some(branches) = schema
            .get("anyOf")
            .or_else(|| schema.get("oneOf"))
            .and_then(Value::as_array)
        {
            let (nulls, others): (Vec<&Value>, Vec<&Value>) = branches.iter().partition(|b| is_null(b));
            let kinds: Vec<String> = others.iter().map(|b| self.kind(b)).collect();
            let kinds = kinds.join(" or ");
            return if nulls.is_empty() {
                kinds
            } else {
                format!("{kinds}, optional")
            };
        }
        if let Some(value) = schema.get("const") {
            return format!("`{}`", value_text(value));
        }
        if let Some(values) = schema.get("enum").and_then(Value::as_array) {
            return values
                .iter()
                .map(|v| format!("`{}`", value_text(v)))
                .collect::<Vec<_>>()
                .join(" or ");
        }
        let mut types: Vec<&str> = match &schema["type"] {
            Value::String(t) => vec![t.as_str()],
            Value::Array(ts) => ts.iter().filter_map(Value::as_str).collect(),
            _ => vec![],
        };
        let optional = types.contains(&"null");
        types.retain(|t| *t != "null");
        let kinds: Vec<String> = types
            .iter()
            .map(|t| match *t {
                "integer" => integer_kind(schema),
                "array" => format!("list of {}", self.kind(&schema["items"])),
                "object" => match schema.get("additionalProperties") {
                    Some(Value::Bool(false)) | None => "mapping".into(),
                    Some(values) => format!("mapping of string to {}", self.kind(values)),
                },
                other => other.to_string(),
            })
            .collect();
        let kinds = kinds.join(" or ");
        if optional {
            format!("{kinds}, optional")
        } else {
            kinds
        }
    }

    /// For a key whose values are named alternatives: what each value means.
    fn value_meanings(&self, property: &Value) -> String {
        let schema = self.resolve(property);
        let mut meanings = Vec::new();
        for branch in schema.get("oneOf").and_then(Value::as_array).into_iter().flatten() {
            let text = description(branch);
            if text.is_empty() {
                continue;
            }
            if let Some(value) = branch.get("const") {
                meanings.push(format!("`{}`: {text}", value_text(value)));
            }
        }
        meanings.join(" ")
    }
}

fn is_null(schema: &Value) -> bool {
    schema.get("type").and_then(Value::as_str) == Some("null")
}

fn nullable(property: &Value) -> bool {
    property
        .get("anyOf")
        .and_then(Value::as_array)
        .is_some_and(|branches| branches.iter().any(is_null))
}

fn integer_kind(schema: &Value) -> String {
    match (
        schema.get("minimum").and_then(Value::as_i64),
        schema.get("maximum").and_then(Value::as_u64),
    ) {
        (Some(min), Some(max)) => format!("integer {min}-{max}"),
        (Some(min), None) => format!("integer ≥ {min}"),
        _ => "integer".into(),
    }
}

/// A schema's doc comment as one line: wrapped lines joined, rustdoc link brackets dropped.
fn description(schema: &Value) -> String {
    let text = schema.get("description").and_then(Value::as_str).unwrap_or("");
    let joined = text
        .split("\n\n")
        .map(|paragraph| paragraph.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect::<Vec<_>>()
        .join(" ");
    // `[`catalog::FRONTEND`]` (an intra-doc link) reads as `catalog::FRONTEND`.
    joined.replace("[`", "`").replace("`]", "`").replace('|', "\\|")
}

/// A default as YAML would spell it; null (an absent key) as "absent".
fn default_text(value: &Value) -> String {
    match value {
        Value::Null => "absent".into(),
        other => format!("`{}`", value_text(other)).replace('|', "\\|"),
    }
}

/// A value in YAML flow style: strings bare unless YAML would read them otherwise.
fn value_text(value: &Value) -> String {
    match value {
        Value::Null => "null".into(),
        Value::String(s) => {
            // Bare where YAML reads it back as this string, also inside a flow list.
            let plain = s.trim() == s
                && !s.contains(['{', '}', '[', ']', ',', '#', '"', '\''])
                && !s.contains(": ")
                && yaml_serde::from_str::<Value>(s).ok() == Some(Value::String(s.clone()));
            if plain {
                s.clone()
            } else {
                Value::String(s.clone()).to_string()
            }
        }
        Value::Array(items) => format!("[{}]", items.iter().map(value_text).collect::<Vec<_>>().join(", ")),
        Value::Object(map) => object_text(map),
        other => other.to_string(),
    }
}

fn object_text(map: &Map<String, Value>) -> String {
    let entries: Vec<String> = map.iter().map(|(k, v)| format!("{k}: {}", value_text(v))).collect();
    format!("{{{}}}", entries.join(", "))
}

fn paragraph(out: &mut String, text: &str) {
    if !text.is_empty() {
        let _ = write!(out, "{text}\n\n");
    }
}

fn table(out: &mut String, rows: &[Row]) {
    out.push_str("| key | type | default | meaning |\n| --- | --- | --- | --- |\n");
    for row in rows {
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} |",
            row.key, row.kind, row.default, row.meaning
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::collect::haproxy::PullOptions;
    use crate::sink::config::SinkConfig;

    /// The text of the section under `heading` (up to the next heading of any level).
    fn section<'m>(markdown: &'m str, heading: &str) -> &'m str {
        let start = markdown
            .find(&format!("\n{heading}\n"))
            .unwrap_or_else(|| panic!("no {heading}"));
        let body = &markdown[start + heading.len() + 2..];
        &body[..body.find("\n#").unwrap_or(body.len())]
    }

    /// The keys a value serializes to, nested mappings as dotted keys (`outbox.max-bytes`).
    fn keys(value: &yaml_serde::Value, prefix: &str, nested: bool) -> Vec<String> {
        let mut keys = Vec::new();
        for (key, value) in value.as_mapping().expect("a mapping") {
            let key = format!("{prefix}{}", key.as_str().unwrap());
            match value {
                yaml_serde::Value::Mapping(inner) if nested && !inner.is_empty() => {
                    keys.extend(self::keys(value, &format!("{key}."), true))
                }
                _ => keys.push(key),
            }
        }
        keys
    }

    fn rows(section: &str) -> Vec<String> {
        section
            .lines()
            .filter_map(|line| line.strip_prefix("| `"))
            .map(|line| line[..line.find('`').unwrap()].to_string())
            .collect()
    }

    fn assert_keys(markdown: &str, heading: &str, value: impl serde::Serialize, except: &[&str]) {
        let value = yaml_serde::to_value(value).unwrap();
        let mut expected: Vec<String> = keys(&value, "", heading != "## Top level")
            .into_iter()
            .filter(|key| !except.contains(&key.as_str()))
            .collect();
        expected.sort();
        assert_eq!(rows(section(markdown, heading)), expected, "{heading}");
    }

    #[test]
    fn every_key_the_config_prints_has_exactly_one_row_in_its_section() {
        let markdown = markdown();
        let defaults = Config::default();
        assert_keys(&markdown, "## Top level", &defaults, &[]);
        assert_keys(&markdown, "## `icmp:`", &defaults.icmp, &[]);
        assert_keys(&markdown, "## `process:`", &defaults.process, &[]);
        assert_keys(&markdown, "## `self-metrics:`", &defaults.self_metrics, &[]);
        assert_keys(&markdown, "## `pull:`", PullOptions::default(), &[]);
        for sink in [
            SinkConfig::Graphite(Default::default()),
            SinkConfig::Influxdb(Default::default()),
            SinkConfig::LocalStore(Default::default()),
            SinkConfig::Redis(Default::default()),
            // Its optional sections set, so their keys are counted.
            SinkConfig::Kafka(crate::sink::kafka::KafkaOptions {
                tls: Some(Default::default()),
                sasl: Some(crate::sink::kafka::KafkaSasl {
                    mechanism: "PLAIN".into(),
                    username: String::new(),
                    password: String::new(),
                }),
                ..Default::default()
            }),
        ] {
            let kind = yaml_serde::to_value(&sink).unwrap()["type"]
                .as_str()
                .unwrap()
                .to_string();
            assert_keys(&markdown, &format!("### `type: {kind}`"), &sink, &["type"]);
        }
    }

    #[test]
    fn rows_carry_type_default_and_the_doc_comment() {
        let markdown = markdown();
        let graphite = section(&markdown, "### `type: graphite`");
        assert!(
            graphite.contains("| `port` | integer 1-65535 | `2003` | Plaintext-protocol TCP port."),
            "{graphite}"
        );
        assert!(
            graphite.contains("| `outbox.max-age` | number, optional | absent |"),
            "{graphite}"
        );
        let influx = section(&markdown, "### `type: influxdb`");
        assert!(
            influx.contains("| `database` | string, optional | absent | InfluxDB 1.x database"),
            "{influx}"
        );
        assert!(
            influx.contains("| `precision` | `ns` or `us` or `ms` or `s` | `ns` |"),
            "{influx}"
        );
        let top = section(&markdown, "## Top level");
        assert!(
            top.contains("| `engine` | `auto` or `native` or `fping` | `auto` |"),
            "{top}"
        );
        // Placeholders are quoted as YAML needs them (`{pings}` bare would be a mapping).
        assert!(
            top.contains(
                "| `sping-command` | list of string | `[scion, ping, --count, \"{pings}\", --interval, \"{interval_ms}ms\", \"{host}\"]` |"
            ),
            "{top}"
        );
        let pull = section(&markdown, "## `pull:`");
        assert!(
            pull.contains("| `servers` | list of string or string | `[]` |"),
            "{pull}"
        );
        let self_metrics = section(&markdown, "## `self-metrics:`");
        assert!(
            self_metrics.contains("| `sinks` | boolean or list of string | `false` |"),
            "{self_metrics}"
        );
        // Every row has its meaning; a key without a doc comment would leave it empty.
        for line in markdown.lines().filter(|line| line.starts_with("| `")) {
            assert!(!line.ends_with("|  |"), "no meaning: {line}");
        }
    }

    #[test]
    fn defaults_are_spelled_as_yaml_reads_them_back() {
        for (value, text) in [
            (Value::String("fping".into()), "fping"),
            (Value::String("udp://127.0.0.1:8094".into()), "udp://127.0.0.1:8094"),
            (Value::String("{host}".into()), "\"{host}\""),
            (Value::String("true".into()), "\"true\""),
            (Value::String("a: b".into()), "\"a: b\""),
            (Value::String(" x".into()), "\" x\""),
            (Value::String(String::new()), "\"\""),
            (serde_json::json!([1, "x, y"]), "[1, \"x, y\"]"),
        ] {
            assert_eq!(value_text(&value), text);
        }
        assert_eq!(default_text(&Value::Null), "absent");
        assert_eq!(default_text(&Value::String("a|b".into())), "`a\\|b`");
    }
}
