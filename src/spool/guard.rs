//! The disk guard: invariant 6 of `spool-layout.md`, "collection is suspended while `incoming/`
//! holds `queue-size` snapshots or more, or while the base directory's filesystem has less than
//! `min-free-space-mb` free".
//!
//! Owns nothing on disk; it only reads `incoming/` (its [`queue::depth`], which does not count
//! snapshots that merely wait for an RRD flush) and the free space of the base directory's
//! filesystem ([`queue::free_space`]).
//!
//! Invariants:
//! - The queue is checked before the free space, and a queue that cannot be read suspends
//!   collection too (better a skipped run than an unbounded queue). Free space that cannot be
//!   read does not suspend: `incoming/` being readable is enough to keep collecting.
//! - The check is made right before each collection (a probe run, a pull cycle), never cached:
//!   collection resumes by itself as soon as processing has drained the queue.
//! - The guard only decides; each collector logs and counts a suspension in its own words
//!   ("collection suspended: …", "pulling suspended: …") with the [`Suspension`]'s text.
//!
//! Called by the probe scheduler (`probe::scheduler`, before every batch run) and by the HAProxy
//! pull loop (`collect::haproxy::run`, before every cycle).

use super::{queue, BaseDir};
use std::io;

/// The limits that suspend collection to protect the disk (invariant 6).
#[derive(Clone, Debug)]
pub struct DiskGuard {
    /// Collection is suspended while `incoming/` holds this many snapshots or more.
    pub queue_size: usize,
    /// Collection is suspended while the filesystem has fewer free bytes than this.
    pub min_free_bytes: u64,
}

/// Why collection must be skipped now. The text is what the collectors log after their prefix.
#[derive(Debug, thiserror::Error)]
pub enum Suspension {
    #[error("incoming/ holds {depth} snapshots (queue-size {queue_size})")]
    QueueFull { depth: usize, queue_size: usize },
    #[error("cannot read incoming/: {0}")]
    Unreadable(#[source] io::Error),
    #[error("{free_mib} MiB free, below min-free-space-mb {min_free_mb}")]
    LowSpace { free_mib: u64, min_free_mb: u64 },
}

impl DiskGuard {
    /// The guard for the config file's `queue-size` and `min-free-space-mb` (MiB; a value too
    /// large for bytes means "never enough free space").
    pub fn new(queue_size: usize, min_free_space_mb: u64) -> DiskGuard {
        DiskGuard {
            queue_size,
            min_free_bytes: min_free_space_mb.saturating_mul(1 << 20),
        }
    }

    /// `Ok` when collection may go on in `base`, else why not (see the module documentation).
    pub fn check(&self, base: &BaseDir) -> Result<(), Suspension> {
        match queue::depth(base) {
            Ok(depth) if depth >= self.queue_size => {
                return Err(Suspension::QueueFull {
                    depth,
                    queue_size: self.queue_size,
                })
            }
            Err(e) => return Err(Suspension::Unreadable(e)),
            Ok(_) => {}
        }
        match queue::free_space(base) {
            Ok(free) if free < self.min_free_bytes => Err(Suspension::LowSpace {
                free_mib: free >> 20,
                min_free_mb: self.min_free_bytes >> 20,
            }),
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base() -> (tempfile::TempDir, BaseDir) {
        crate::spool::layout::temp_base()
    }

    #[test]
    fn a_queue_at_queue_size_suspends_and_one_below_does_not() {
        let (_dir, base) = base();
        for name in ["100-ping-000000001", "100-ping-000000002"] {
            std::fs::create_dir(base.incoming().join(name)).expect("snapshot");
        }
        assert!(DiskGuard::new(3, 0).check(&base).is_ok());
        let reason = DiskGuard::new(2, 0).check(&base).expect_err("queue full");
        assert_eq!(reason.to_string(), "incoming/ holds 2 snapshots (queue-size 2)");
    }

    #[test]
    fn less_free_space_than_the_minimum_suspends_with_both_figures_in_mib() {
        let (_dir, base) = base();
        let reason = DiskGuard::new(10, u64::MAX >> 20).check(&base).expect_err("low space");
        let text = reason.to_string();
        assert!(
            text.ends_with(&format!(" MiB free, below min-free-space-mb {}", u64::MAX >> 20)),
            "{text}"
        );
        assert!(matches!(reason, Suspension::LowSpace { .. }));
    }

    #[test]
    fn an_unreadable_incoming_suspends() {
        let (_dir, base) = base();
        std::fs::remove_dir(base.incoming()).expect("remove incoming/");
        let reason = DiskGuard::new(10, 0).check(&base).expect_err("unreadable");
        assert!(reason.to_string().starts_with("cannot read incoming/: "), "{reason}");
    }
}
