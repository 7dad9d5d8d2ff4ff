//! A bound on what YAML aliases may expand to, checked before a document is deserialized.
//!
//! yaml_serde refuses more than 100 alias jumps per event parsed, which stops the classic
//! "billion laughs" (aliases of aliases). It does not stop one alias replaying a large anchored
//! node: `a: &x [a, a, …]` (n items) then `b: [*x, *x, …]` (n aliases) is n jumps for n² nodes,
//! so a 5 KB order became a million-node value (about 1 GB and seconds of CPU), and a 64 KiB one
//! would exhaust memory. Serde's internally tagged enums (config `sinks:`) buffer such a value
//! in full before looking at it, so typed parsing is no protection.
//!
//! [`check_expansion`] walks the document once as a deserializer sees it (aliases replayed),
//! counting nodes and building nothing, and stops as soon as the count passes the bound.

use serde::de::{self, DeserializeSeed, Deserializer, EnumAccess, MapAccess, SeqAccess, VariantAccess, Visitor};
use std::cell::Cell;
use std::fmt;

/// Nodes that aliases may add to a document beyond one per byte of its text (which no document
/// without aliases reaches).
pub const MAX_ALIAS_NODES: usize = 10_000;

/// Refuses `text` if its aliases expand to more than `text.len()` + [`MAX_ALIAS_NODES`] nodes.
///
/// Any other problem with the text (bad syntax, several documents) is left for the real
/// deserialization to report with its usual message: this returns `Ok` then.
pub fn check_expansion(text: &str) -> Result<(), String> {
    let limit = text.len() + MAX_ALIAS_NODES;
    let count = Cell::new(0);
    let counter = Counter { count: &count, limit };
    match counter.deserialize(yaml_serde::Deserializer::from_str(text)) {
        Err(_) if count.get() > limit => Err(format!(
            "alias expansion limit exceeded: the aliases would expand the document to more than {limit} nodes"
        )),
        _ => Ok(()),
    }
}

/// Counts the nodes it visits, failing past `limit`.
#[derive(Clone, Copy)]
struct Counter<'c> {
    count: &'c Cell<usize>,
    limit: usize,
}

impl Counter<'_> {
    fn node<E: de::Error>(&self) -> Result<(), E> {
        let count = self.count.get() + 1;
        self.count.set(count);
        if count > self.limit {
            return Err(E::custom("alias expansion limit exceeded"));
        }
        Ok(())
    }
}

impl<'de> DeserializeSeed<'de> for Counter<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Counter<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any YAML value")
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<(), E> {
        self.node()
    }

    fn visit_i64<E: de::Error>(self, _: i64) -> Result<(), E> {
        self.node()
    }

    fn visit_u64<E: de::Error>(self, _: u64) -> Result<(), E> {
        self.node()
    }

    fn visit_i128<E: de::Error>(self, _: i128) -> Result<(), E> {
        self.node()
    }

    fn visit_u128<E: de::Error>(self, _: u128) -> Result<(), E> {
        self.node()
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> Result<(), E> {
        self.node()
    }

    fn visit_str<E: de::Error>(self, _: &str) -> Result<(), E> {
        self.node()
    }

    fn visit_bytes<E: de::Error>(self, _: &[u8]) -> Result<(), E> {
        self.node()
    }

    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        self.node()
    }

    fn visit_none<E: de::Error>(self) -> Result<(), E> {
        self.node()
    }

    fn visit_some<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        self.node()?;
        self.deserialize(deserializer)
    }

    fn visit_newtype_struct<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        self.node()?;
        self.deserialize(deserializer)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        self.node()?;
        while seq.next_element_seed(self)?.is_some() {}
        Ok(())
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        self.node()?;
        while map.next_key_seed(self)?.is_some() {
            map.next_value_seed(self)?;
        }
        Ok(())
    }

    /// A tagged value (`!tag value`).
    fn visit_enum<A: EnumAccess<'de>>(self, data: A) -> Result<(), A::Error> {
        self.node()?;
        let (_, variant) = data.variant::<de::IgnoredAny>()?;
        variant.newtype_variant_seed(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_alias_replaying_a_large_node_many_times_is_refused() {
        let n = 1000;
        let text = format!("a: &x [{}]\nb: [{}]\n", "a, ".repeat(n), "*x, ".repeat(n));
        let err = check_expansion(&text).unwrap_err();
        assert!(err.contains("alias expansion limit"), "{err}");
    }

    #[test]
    fn ordinary_documents_and_small_aliases_pass() {
        let plain = format!("a: [{}]\nb: {{c: 1, d: !tag x}}\n", "1,".repeat(50_000));
        assert_eq!(check_expansion(&plain), Ok(()));
        let merge = "defaults: &d {user: tmon, step: 20}\n<<: *d\nlist: [*d, *d, *d]\n";
        assert_eq!(check_expansion(merge), Ok(()));
    }

    #[test]
    fn other_problems_are_left_to_the_real_parse() {
        for text in ["", "a: [unclosed\n", "a: 1\n---\nb: 2\n", "a: *undefined\n"] {
            assert_eq!(check_expansion(text), Ok(()), "{text:?}");
        }
    }
}
