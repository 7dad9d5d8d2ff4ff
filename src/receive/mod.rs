//! Receiving shipped snapshots from other spoolmon nodes (issue 13, in progress).
//!
//! What is here so far: [`pattern`], the `allow-from` patterns (Netdata's simple patterns) the
//! receiver checks a peer's address against, for its API key and again for its machine. The
//! listener itself, which will write each received snapshot ([`crate::spool::ship`]) into
//! `incoming/` before it answers, is not built yet; nothing in the daemon listens.
//!
//! On disk this module will own `state/receive/` (the per-sender high-water marks); it owns
//! nothing yet. It sits beside `collect` in the import graph: a source of snapshots.

pub mod access;
pub mod pattern;
pub mod store;
