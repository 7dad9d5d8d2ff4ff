//! Collectors that write snapshots into `incoming/`.
//!
//! A collector measures something outside spoolmon and publishes what it got as one snapshot
//! directory with [`spool::queue::publish`](crate::spool::queue::publish): built in
//! `incoming.tmp/`, fsynced, renamed into `incoming/` whole, never over an existing snapshot.
//! A collector publishes only complete snapshots; a measurement that failed in part publishes
//! nothing and leaves nothing behind in `incoming.tmp/`. Collectors suspend themselves (with a
//! warning and a counter) while `incoming/` is full or the disk nearly so (invariant 6), as
//! [`spool::guard::DiskGuard`](crate::spool::guard::DiskGuard) decides.
//!
//! - [`haproxy`]: `spoolmon pull`, haproxystats-pull's job: `show info` and `show stat` from
//!   every HAProxy stats socket, as `incoming/<epoch>/<socket>_info|_stat`.
//!
//! The probes of [`probe`](crate::probe) are collectors too, but driven by orders; the ones here
//! are driven by configuration alone.

pub mod haproxy;
