//! The HAProxy pull collector (`spoolmon pull`): haproxystats-pull's job, with its on-disk
//! layout, so either half of haproxystats can be replaced on its own.
//!
//! # What a cycle does
//!
//! 1. Sources are listed afresh: every UNIX socket in `socket-dir` (hidden names skipped, as
//!    haproxystats' glob does) plus every `servers` URL ([`source`]).
//! 2. For every source, `show info` and `show stat` are each sent on a connection of their own,
//!    all at the same time (one thread per request), and read to EOF ([`fetch`]).
//! 3. Every reply is checked for completeness ([`validate`]): it ends with HAProxy's terminating
//!    empty line, `show info` parses as `Key: value` lines with the keys processing needs, every
//!    `show stat` row has as many CSV columns as the header. A failed request (refused, reset,
//!    timed out, truncated, too large, garbage) is retried `retries` times, `interval` apart.
//! 4. Only when every request of every source succeeded within `pull-timeout` is the snapshot
//!    published ([`cycle`]): `incoming.tmp/<epoch>/` is written and renamed to
//!    `incoming/<epoch>/`. Otherwise nothing is written at all; the error names each failed
//!    source and request.
//!
//! # On disk (the haproxystats layout)
//!
//! ```text
//! incoming/<epoch>/<file name>_info     `show info` reply, byte for byte
//! incoming/<epoch>/<file name>_stat     `show stat` reply, byte for byte
//! ```
//!
//! `<epoch>` is the wall-clock second at which the cycle started (the pull-interval slot when the
//! loop is on time). The file name of a source is, as in haproxystats 0.5.1, the base name of a
//! UNIX socket path (`/run/haproxy/admin1.sock` → `admin1.sock`) or `<host>:<port>` of a TCP
//! server, with the host as Python's `urlparse` gives it: lower-cased, IPv6 without brackets
//! (`tcp://[::1]:4444` → `::1:4444`). Two sources with the same file name make the cycle fail
//! (haproxystats silently let one overwrite the other). A snapshot name that is taken (in
//! `incoming/` or being built in `incoming.tmp/`) is never overwritten: that cycle publishes
//! nothing and is counted in [`PullStats::name_collisions`].
//!
//! # The loop
//!
//! [`run_pull`] starts a cycle at every wall-clock multiple of `pull-interval` (so all hosts pull
//! at the same instants); slots missed because a cycle overran are skipped, not caught up. A slot
//! is skipped with a warning while `incoming/` holds `queue-size` snapshots or more, or while free
//! space is below `min-free-space-mb`. The shutdown flag is checked at least every 200 ms in
//! every wait; a cycle in flight is abandoned (nothing published) when it is set.
//!
//! # Differences from haproxystats-pull (its bugs, see the reference notes)
//!
//! A reply cut short by the peer is an error, not a truncated file; a TCP reset is an error of
//! that source, not a crash; signals are honoured while sleeping or suspended; a `pull-timeout`
//! below one second works (haproxystats disabled the timeout when `int(pull-timeout)` was 0);
//! `retries` applies to the whole request, not only to the connect.

pub mod cycle;
pub mod fetch;
pub mod options;
pub mod run;
pub mod source;
pub mod validate;

pub use cycle::{pull_cycle, pull_cycle_until, CycleReport, PullError, RequestFailure};
pub use options::PullOptions;
pub use run::{run_pull, PullStats};
