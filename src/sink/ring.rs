//! The hash ring of a `forward` sink in `mode: hash` (veneur-proxy's job): which destination
//! owns a key, so one series always reaches the same receiver.
//!
//! The hash is **rendezvous hashing** (highest random weight) on XXH3-64: every destination
//! has a seed, `XXH3-64(its identity)` with seed 0, where the identity is its `host:port` as
//! written in `destinations`; a key's score at a destination is `XXH3-64(key)` with that seed,
//! and the destination with the highest score owns the key (equal scores: the smaller
//! identity). A key's *ranking* is every destination by falling score: the owner first, then
//! where its data goes when the owner is handed off (`handoff-timeout`).
//!
//! Why this hash rather than a ring of virtual nodes (veneur's, uneven per its issue #122):
//! each key's owner is an independent uniform choice, so the shares are binomial (10,000 keys
//! over 5 destinations: 2,000 ± 40 each) with no tuning, and a change of the set moves only what
//! it must: adding a destination moves to it exactly the keys it now wins (about 1/(N+1)),
//! removing one moves only its own keys. XXH3 is specified and stable across versions and
//! platforms, so every node, and every build, computes the same owner.
//!
//! The key of a ping result is `<origin node>/<order id at the origin>`: a child's order and
//! the same order passed on by a proxy hash alike. No I/O; called by the forward sink.

use xxhash_rust::xxh3::xxh3_64_with_seed;

/// The destinations a key can be owned by, with their seeds.
#[derive(Clone, Debug)]
pub struct Ring {
    members: Vec<(String, u64)>,
}

impl Ring {
    /// A ring over `identities` (each destination's `host:port`), in the order given: the
    /// indexes [`Ring::owner`] returns are positions in it.
    pub fn new<S: AsRef<str>>(identities: &[S]) -> Ring {
        Ring {
            members: identities
                .iter()
                .map(|id| (id.as_ref().to_owned(), xxh3_64_with_seed(id.as_ref().as_bytes(), 0)))
                .collect(),
        }
    }

    pub fn len(&self) -> usize {
        self.members.len()
    }

    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    /// The index of the destination that owns `key` (None on an empty ring).
    pub fn owner(&self, key: &[u8]) -> Option<usize> {
        self.owner_among(key, |_| true)
    }

    /// The owner of `key` among the destinations `allowed` accepts: the first of its ranking
    /// that is allowed.
    pub fn owner_among(&self, key: &[u8], allowed: impl Fn(usize) -> bool) -> Option<usize> {
        let mut best: Option<(u64, &str, usize)> = None;
        for (index, (id, seed)) in self.members.iter().enumerate() {
            if !allowed(index) {
                continue;
            }
            let score = xxh3_64_with_seed(key, *seed);
            let better = match best {
                None => true,
                Some((top, top_id, _)) => score > top || (score == top && id.as_str() < top_id),
            };
            if better {
                best = Some((score, id, index));
            }
        }
        best.map(|(_, _, index)| index)
    }
}

/// The key of a ping result on the ring: `<node>/<order id at the origin>`.
pub fn result_key(node: &str, id_at_origin: &str, out: &mut Vec<u8>) {
    out.clear();
    out.extend_from_slice(node.as_bytes());
    out.push(b'/');
    out.extend_from_slice(id_at_origin.as_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(n: usize) -> Vec<Vec<u8>> {
        (0..n)
            .map(|i| {
                let mut key = Vec::new();
                result_key(&format!("prober-{}", i % 7), &format!("lan/target-{i}"), &mut key);
                key
            })
            .collect()
    }

    fn destinations(n: usize) -> Vec<String> {
        (1..=n).map(|i| format!("10.0.0.{i}:19999")).collect()
    }

    fn owners(ring: &Ring, keys: &[Vec<u8>]) -> Vec<usize> {
        keys.iter().map(|k| ring.owner(k).unwrap()).collect()
    }

    #[test]
    fn ten_thousand_keys_over_3_to_5_destinations_no_share_more_than_10_percent_above_fair() {
        let keys = keys(10_000);
        for n in 3..=5 {
            let ring = Ring::new(&destinations(n));
            let mut shares = vec![0usize; n];
            for owner in owners(&ring, &keys) {
                shares[owner] += 1;
            }
            let fair = keys.len() as f64 / n as f64;
            let most = *shares.iter().max().unwrap() as f64;
            assert!(most <= fair * 1.10, "{n} destinations: shares {shares:?}, fair {fair}");
        }
    }

    #[test]
    fn adding_a_destination_moves_at_most_1_over_n_plus_5_percent_and_only_to_it() {
        let keys = keys(10_000);
        for n in 3..=5 {
            let before = owners(&Ring::new(&destinations(n)), &keys);
            let after = owners(&Ring::new(&destinations(n + 1)), &keys);
            let moved: Vec<usize> = (0..keys.len()).filter(|&i| before[i] != after[i]).collect();
            assert!(
                moved.iter().all(|&i| after[i] == n),
                "a key moved between old destinations"
            );
            let share = moved.len() as f64 / keys.len() as f64;
            assert!(share <= 1.0 / (n + 1) as f64 + 0.05, "{n} → {}: {share}", n + 1);
            assert!(share > 0.0);
        }
    }

    #[test]
    fn removing_a_destination_moves_only_its_keys_and_they_go_to_their_second_choice() {
        let keys = keys(5_000);
        let all = destinations(4);
        let ring = Ring::new(&all);
        let before = owners(&ring, &keys);
        // Without destination 1, by a smaller ring and by excluding it from the full one.
        let smaller = Ring::new(&[&all[0], &all[2], &all[3]]);
        let index_in_full = [0, 2, 3];
        for (i, key) in keys.iter().enumerate() {
            let excluded = ring.owner_among(key, |d| d != 1).unwrap();
            assert_eq!(index_in_full[smaller.owner(key).unwrap()], excluded);
            if before[i] != 1 {
                assert_eq!(excluded, before[i], "a key of a remaining destination moved");
            }
        }
    }

    #[test]
    fn the_owner_is_the_same_in_every_build_and_order_of_destinations() {
        // Fixed figures: a change of the hash would move every node's series.
        let ring = Ring::new(&destinations(3));
        let mut key = Vec::new();
        result_key("prober-1", "lan/t1", &mut key);
        let owner = ring.owner(&key).unwrap();
        let reversed: Vec<String> = destinations(3).into_iter().rev().collect();
        let other = Ring::new(&reversed);
        assert_eq!(reversed[other.owner(&key).unwrap()], destinations(3)[owner]);
        // As `printf 'prober-1/lan/t1' | xxhsum -H3` (Debian's xxhash) prints it.
        assert_eq!(xxh3_64_with_seed(b"prober-1/lan/t1", 0), 0x6a6c_ba9c_d471_c39c_u64);
        assert!(Ring::new::<&str>(&[]).owner(&key).is_none());
    }
}
