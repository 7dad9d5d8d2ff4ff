//! The base directory and its queues: where everything lives, how files and snapshots are made
//! visible atomically, and how snapshots are listed, claimed, quarantined and removed.
//!
//! Rules (see `spool-layout.md`): a reader never sees a half-written file or snapshot. Files are
//! replaced by write-temp + fsync + rename; snapshots are built in `incoming.tmp/` and renamed into
//! `incoming/` whole. A snapshot is removed only after everything it produced is durable.

pub mod atomic;
pub mod beneath;
pub mod fault;
pub mod guard;
pub mod layout;
pub mod lock;
pub mod queue;
pub mod snapshot;
pub mod state;
pub mod temp;
pub mod watch;

pub use layout::BaseDir;
