//! Proxy and server names as dense numbers, so that polars groups on integer columns instead of
//! building string columns from 9,600 rows (copying the names into Arrow views, then hashing
//! them): that was a quarter of the grouping time. Rows of one proxy are consecutive in
//! `show stat`, so the last name looked up is remembered and most rows skip the hash.

use std::collections::HashMap;

/// Names seen so far, each with the number it got (its position).
#[derive(Debug, Default)]
pub struct NameTable<'a> {
    names: Vec<&'a str>,
    ids: HashMap<&'a str, u32>,
    last: Option<(&'a str, u32)>,
}

impl<'a> NameTable<'a> {
    /// The number of `name`, given the next free one if it is new.
    pub fn id(&mut self, name: &'a str) -> u32 {
        if let Some((last, id)) = self.last {
            if last == name {
                return id;
            }
        }
        let next = self.names.len() as u32;
        let id = *self.ids.entry(name).or_insert(next);
        if id == next {
            self.names.push(name);
        }
        self.last = Some((name, id));
        id
    }

    /// The name numbered `id`.
    pub fn name(&self, id: u32) -> &'a str {
        self.names[id as usize]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equal_names_share_a_number_wherever_they_reappear() {
        let mut table = NameTable::default();
        let ids: Vec<u32> = ["a", "a", "b", "a", "c", "b"].iter().map(|n| table.id(n)).collect();
        assert_eq!(ids, [0, 0, 1, 0, 2, 1]);
        assert_eq!((table.name(0), table.name(2)), ("a", "c"));
    }
}
