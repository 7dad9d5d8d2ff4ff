//! The base directory and its queues: where everything lives, how files and snapshots are made
//! visible atomically, and how snapshots are listed, claimed, quarantined and removed.
//!
//! Rules (see `spool-layout.md`): a reader never sees a half-written file or snapshot. Files are
//! replaced by write-temp + fsync + rename; snapshots are built in `incoming.tmp/` and renamed into
//! `incoming/` whole. A snapshot is removed only after everything it produced is durable.
//!
//! The parts: [`layout`] (the base directory's paths, its root descriptor), [`beneath`] (I/O
//! through directory descriptors that never leaves the base, errors naming operation and path),
//! [`atomic`] and [`temp`] (replacing files, temporary names), [`queue`] and [`snapshot`] (the
//! `incoming/` queue and the ping snapshot format), [`lock`] (one daemon, one puller),
//! [`state`] (the small records of `state/`), [`guard`] (collection suspended while the queue
//! is full or the disk low), [`fault`] (whose fault a failed write is), [`watch`] (inotify),
//! [`identity`] (the node's machine GUID in `state/`) and [`ship`] (a snapshot framed to travel
//! to another node's spool).
//! Every stage may import spool; spool imports only `crate::shared`.

pub mod atomic;
pub mod beneath;
pub mod fault;
pub mod guard;
pub mod identity;
pub mod layout;
pub mod lock;
pub mod queue;
pub mod ship;
pub mod snapshot;
pub mod state;
pub mod temp;
pub mod watch;

pub use layout::BaseDir;
