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
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
