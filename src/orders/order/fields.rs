//! Reading one YAML map key by key: typed values, the key's full name in every error, and the
//! keys never taken left over as warnings.
//!
//! Invariants: hostile YAML (alias bombs of any shape, deep nesting, duplicate keys) gives a
//! [`Problem`], never a panic or a memory blow-up; an explicit null counts as absent.
//!
//! Called by the order parser (`parse.rs`) only.

use crate::yaml_expansion::check_expansion;
use std::collections::BTreeMap;
use std::net::IpAddr;
use yaml_serde::Value;

/// A parse problem before it is attached to an order id.
#[derive(Debug)]
pub(super) enum Problem {
    Empty,
    Yaml(String),
    NotAMap(&'static str),
    Key { key: String, message: String },
    Unresolvable { host: String, message: String },
}

impl Problem {
    pub(super) fn key(key: &str, message: impl Into<String>) -> Problem {
        Problem::Key {
            key: key.to_string(),
            message: message.into(),
        }
    }
}

/// Parses YAML text that must hold one map. yaml_serde rejects duplicate keys and limits nesting
/// (128 levels) and alias jumps (100 per event parsed); [`check_expansion`] first refuses a
/// document whose aliases expand to more nodes than its length plus
/// [`crate::yaml_expansion::MAX_ALIAS_NODES`] (one alias replaying a large node many times), so
/// hostile input gives an error, not a crash or a memory blow-up.
pub(super) fn load_map(text: &str) -> Result<yaml_serde::Mapping, Problem> {
    check_expansion(text).map_err(Problem::Yaml)?;
    let mut value: Value = yaml_serde::from_str(text).map_err(|e| Problem::Yaml(e.to_string()))?;
    value
        .apply_merge()
        .map_err(|e| Problem::Yaml(format!("merge key `<<`: {e}")))?;
    match value {
        Value::Mapping(map) => Ok(map),
        Value::Null => Err(Problem::Empty),
        other => Err(Problem::NotAMap(kind_of(&other))),
    }
}

pub(super) fn kind_of(value: &Value) -> &'static str {
    match value {
        Value::Null => "nothing",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Sequence(_) => "a list",
        Value::Mapping(_) => "a map",
        Value::Tagged(_) => "a tagged value",
    }
}

/// One YAML map read key by key. Keys never taken are unknown and become warnings.
pub(super) struct Fields {
    /// `""` for the top level, `"fping."` for a section: prefixes key names in messages.
    pub(super) prefix: String,
    entries: BTreeMap<String, Value>,
}

impl Fields {
    pub(super) fn new(prefix: &str, map: yaml_serde::Mapping) -> Result<Fields, Problem> {
        let mut entries = BTreeMap::new();
        for (key, value) in map {
            match key {
                Value::String(key) => {
                    entries.insert(key, value);
                }
                other => {
                    return Err(Problem::key(
                        prefix.trim_end_matches('.'),
                        format!("keys must be strings, found {}", kind_of(&other)),
                    ))
                }
            }
        }
        Ok(Fields {
            prefix: prefix.to_string(),
            entries,
        })
    }

    pub(super) fn name(&self, key: &str) -> String {
        format!("{}{key}", self.prefix)
    }

    /// The value of `key`; an explicit null counts as absent.
    pub(super) fn take(&mut self, key: &str) -> Option<Value> {
        self.entries.remove(key).filter(|value| !value.is_null())
    }

    pub(super) fn required(&mut self, key: &str) -> Result<Value, Problem> {
        self.take(key)
            .ok_or_else(|| Problem::key(&self.name(key), "required key missing"))
    }

    pub(super) fn string(&mut self, key: &str) -> Result<Option<String>, Problem> {
        let name = self.name(key);
        self.take(key).map(|v| to_text(&name, v)).transpose()
    }

    pub(super) fn required_string(&mut self, key: &str) -> Result<String, Problem> {
        let name = self.name(key);
        to_text(&name, self.required(key)?)
    }

    pub(super) fn integer(&mut self, key: &str, min: u64, max: u64) -> Result<Option<u64>, Problem> {
        let name = self.name(key);
        self.take(key).map(|v| to_integer(&name, &v, min, max)).transpose()
    }

    pub(super) fn required_integer(&mut self, key: &str, min: u64, max: u64) -> Result<u64, Problem> {
        let name = self.name(key);
        to_integer(&name, &self.required(key)?, min, max)
    }

    pub(super) fn ip(&mut self, key: &str) -> Result<Option<IpAddr>, Problem> {
        let name = self.name(key);
        match self.string(key)? {
            None => Ok(None),
            Some(text) => text
                .parse()
                .map(Some)
                .map_err(|_| Problem::key(&name, format!("{text:?} is not an IP address"))),
        }
    }

    pub(super) fn interface(&mut self, key: &str) -> Result<Option<String>, Problem> {
        let name = self.name(key);
        let value = self.string(key)?;
        if let Some(interface) = &value {
            let valid = !interface.is_empty()
                && interface.len() <= 15
                && !interface.contains(|c: char| c == '/' || c.is_whitespace() || c.is_control());
            if !valid {
                return Err(Problem::key(
                    &name,
                    format!("{interface:?} is not a network interface name"),
                ));
            }
        }
        Ok(value)
    }

    /// A host name or address: checked for shape, not resolved.
    pub(super) fn host(&mut self, key: &str) -> Result<Option<String>, Problem> {
        let name = self.name(key);
        let host = self.string(key)?;
        if let Some(host) = &host {
            check_host_shape(&name, host)?;
        }
        Ok(host)
    }

    pub(super) fn required_host(&mut self, key: &str) -> Result<String, Problem> {
        let name = self.name(key);
        let host = self.required_string(key)?;
        check_host_shape(&name, &host)?;
        Ok(host)
    }

    /// Refuses the first key never taken (for sections where an ignored key would silently do
    /// nothing, such as `alert:`); `known` lists the keys the section takes.
    pub(super) fn finish_strict(self, what: &str, known: &str) -> Result<(), Problem> {
        match self.entries.keys().next() {
            None => Ok(()),
            Some(key) => Err(Problem::key(
                &self.name(key),
                format!("unknown {what} (known: {known})"),
            )),
        }
    }

    /// Warns about every key never taken.
    pub(super) fn finish(self, warnings: &mut Vec<String>) {
        for key in self.entries.keys() {
            warnings.push(format!("unknown key `{}{key}` ignored", self.prefix));
        }
    }
}

pub(super) fn check_host_shape(name: &str, host: &str) -> Result<(), Problem> {
    if host.is_empty() || host.len() > 253 {
        return Err(Problem::key(name, "must be a host name or IP address"));
    }
    if host.starts_with('-') || host.contains(|c: char| c.is_whitespace() || c.is_control()) {
        return Err(Problem::key(name, format!("{host:?} is not a host name or IP address")));
    }
    Ok(())
}

/// A scalar as text: strings as they are, numbers in their YAML spelling. Lists, maps, booleans
/// and tagged values are wrong types.
pub(super) fn to_text(name: &str, value: Value) -> Result<String, Problem> {
    match value {
        Value::String(text) => Ok(text),
        Value::Number(number) => Ok(number.to_string()),
        other => Err(Problem::key(
            name,
            format!("must be a string, found {}", kind_of(&other)),
        )),
    }
}

/// An integer in `min..=max`; a string holding one is accepted as pingmachine (Perl) did.
pub(super) fn to_integer(name: &str, value: &Value, min: u64, max: u64) -> Result<u64, Problem> {
    let number = match value {
        Value::Number(n) => match (n.as_u64(), n.as_i64()) {
            (Some(n), _) => n,
            (None, Some(negative)) => {
                return Err(Problem::key(
                    name,
                    format!("{negative} is negative, must be at least {min}"),
                ))
            }
            _ => return Err(Problem::key(name, format!("{n} is not an integer"))),
        },
        Value::String(text) => text
            .trim()
            .parse::<u64>()
            .map_err(|_| Problem::key(name, format!("{text:?} is not a non-negative integer")))?,
        other => {
            return Err(Problem::key(
                name,
                format!("must be an integer, found {}", kind_of(other)),
            ))
        }
    };
    if number < min || number > max {
        return Err(Problem::key(name, format!("{number} is out of range {min}..={max}")));
    }
    Ok(number)
}

/// A list of words: a YAML list of scalars, or one string split on whitespace.
pub(super) fn to_words(name: &str, value: Value) -> Result<Vec<String>, Problem> {
    match value {
        Value::Sequence(items) => items
            .into_iter()
            .enumerate()
            .map(|(i, item)| to_text(&format!("{name}[{i}]"), item))
            .collect(),
        Value::String(text) => Ok(text.split_whitespace().map(String::from).collect()),
        other => Err(Problem::key(
            name,
            format!("must be a list or a string, found {}", kind_of(&other)),
        )),
    }
}
