//! Who measured a result: the node's machine GUID and, for a result shipped from another node,
//! its provenance (the node that measured it and every node it passed).
//!
//! Vocabulary only (no I/O): the GUID's file is `crate::spool::identity`, the frames that carry
//! provenance over the network are `crate::spool::ship`. Processing attaches a [`Provenance`] to
//! every result it reads from a received snapshot; the sinks read it to name the origin node in
//! their paths and tags, and the forward sink to pass the result on with its chain.

use super::measurement::OrderId;
use std::fmt;
use std::str::FromStr;

/// A node's machine GUID: a UUID, written in its hyphenated lower-case form.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MachineGuid(uuid::Uuid);

impl MachineGuid {
    /// A new random (version 4) GUID.
    pub fn random() -> MachineGuid {
        MachineGuid(uuid::Uuid::new_v4())
    }

    /// The 16 bytes, for hashing and binary encodings.
    pub fn as_bytes(&self) -> &[u8; 16] {
        self.0.as_bytes()
    }
}

impl fmt::Display for MachineGuid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.hyphenated().fmt(f)
    }
}

/// Why a text is not a machine GUID.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("not a GUID (expected 8-4-4-4-12 hexadecimal digits, like 5f0c3a52-9d1e-4a4b-8f7e-2c1d0b9a8e7f): {0:?}")]
pub struct GuidError(String);

impl FromStr for MachineGuid {
    type Err = GuidError;

    /// Only the hyphenated form (36 characters), any case: what the file and the config hold.
    fn from_str(text: &str) -> Result<MachineGuid, GuidError> {
        let shown: String = text.chars().take(64).collect();
        if text.len() != 36 {
            return Err(GuidError(shown));
        }
        uuid::Uuid::try_parse(text)
            .map(MachineGuid)
            .map_err(|_| GuidError(shown))
    }
}

/// What the first component of a received order's id starts with: a child's order `bench/o1`
/// of node `prober-1` is `@prober-1/bench/o1` on the receiver (its output is
/// `output/@prober-1/bench/o1/`). Local orders may not use such names (the order book refuses
/// them), so the two never collide.
pub const NODE_PREFIX: char = '@';

/// The id a received order has on the receiver (see [`NODE_PREFIX`]).
pub fn node_order_id(node: &str, id: &OrderId) -> OrderId {
    OrderId::new(format!("{NODE_PREFIX}{node}/{}", id.as_str())).expect("a node name and an order id make an order id")
}

/// Where a received result comes from: set by processing on every result of a shipped
/// snapshot, shared (one `Arc`) by the results of one snapshot.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Provenance {
    /// The node that measured it (its `node-name`): the receiver's ids and paths name it.
    pub node: String,
    /// Every node it passed, the origin first and the node that sent it here last.
    pub chain: Vec<MachineGuid>,
}

impl Provenance {
    /// The GUID of the node that measured it.
    pub fn origin(&self) -> MachineGuid {
        self.chain[0]
    }

    /// `id` (a received order's id on this node, `@<node>/<id>`) as the origin names it.
    pub fn id_at_origin<'a>(&self, id: &'a OrderId) -> &'a str {
        id.as_str()
            .strip_prefix(NODE_PREFIX)
            .and_then(|rest| rest.strip_prefix(self.node.as_str()))
            .and_then(|rest| rest.strip_prefix('/'))
            .unwrap_or(id.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parsing_takes_the_hyphenated_form_in_any_case() {
        let guid: MachineGuid = "5F0C3A52-9D1E-4A4B-8F7E-2C1D0B9A8E7F".parse().unwrap();
        assert_eq!(guid.to_string(), "5f0c3a52-9d1e-4a4b-8f7e-2c1d0b9a8e7f");
        assert!("{5f0c3a52-9d1e-4a4b-8f7e-2c1d0b9a8e7f}".parse::<MachineGuid>().is_err());
        assert!("urn:uuid:5f0c3a52-9d1e-4a4b-8f7e-2c1d0b9a8e7f"
            .parse::<MachineGuid>()
            .is_err());
        assert!("5f0c3a529d1e4a4b8f7e2c1d0b9a8e7f".parse::<MachineGuid>().is_err());
        assert_ne!(MachineGuid::random(), MachineGuid::random());
    }

    #[test]
    fn a_received_id_is_the_origins_id_under_its_node() {
        let local = OrderId::new("lan/t1").unwrap();
        let received = node_order_id("child-1", &local);
        assert_eq!(received.as_str(), "@child-1/lan/t1");
        let provenance = Provenance {
            node: "child-1".into(),
            chain: vec![MachineGuid::random()],
        };
        assert_eq!(provenance.id_at_origin(&received), "lan/t1");
        // An id not under the node (never made by processing) is shown whole.
        let other = node_order_id("child-10", &local);
        assert_eq!(provenance.id_at_origin(&other), "@child-10/lan/t1");
    }
}
