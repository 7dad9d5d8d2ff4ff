//! Everything processing writes for an order: `output/<id>/main.rrd` ([`rrd`]),
//! `output/<id>/last_result` ([`last_result`]), and the move of `output/<id>` to and from
//! `archive/<id>` when an order goes away or comes back ([`archive`]).
//!
//! Per order, processing calls [`rrd::RrdWriter::apply`] with the order's results in time order,
//! then [`last_result::stage`] with the newest one, syncs the filesystem once for the whole batch,
//! switches the staged `last_result` files in and syncs again; nothing here fsyncs a file
//! itself. Archive moves fsync the directories they change. Apart from replacing `last_result` and updating `main.rrd`, nothing in `output/` or
//! `archive/` is overwritten or deleted (old and damaged files are renamed aside), except by
//! [`archive::purge`] when the caller enables a retention.
//!
//! A failed write is classified by [`crate::spool::fault`]: the order's own fault (it fails alone) or a
//! transient one of the machine (the work waits). [`failures`] keeps the orders that fail in
//! `state/output-errors.json` for `spoolmon orders`, `status` and `check orders`; [`reconcile`]
//! finds, at start, the output of orders that went away while spoolmon was stopped. [`wide`] is
//! `spoolmon orders --wide`: the listing with each order's last result and expiry. [`show`] is
//! `spoolmon show ID`: one order's state, last result and recent steps, which [`history`] reads
//! back from `main.rrd` with librrd's fetch (never through a symlink).

pub mod archive;
pub mod failures;
pub mod graph;
pub mod history;
pub mod last_result;
pub mod reconcile;
pub mod rrd;
pub mod series;
pub mod show;
mod thumbnail;
pub mod wide;
