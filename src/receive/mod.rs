//! Receiving shipped snapshots from other spoolmon nodes (issue 13, being built).
//!
//! The parts: [`server`], the HTTP/1.1 listener (`POST /spoolmon/v1/snapshots`, limits against
//! hostile peers, answers only once what it stores is durable); [`access`], who may ship here
//! (API key, then origin machine, each with an `allow-from` pattern, and loops); [`pattern`],
//! Netdata's simple patterns; [`store`], the frames written into `incoming/` exactly once, with
//! the per-sender high-water marks in `state/receive/` (owned there) and crash recovery.
//!
//! Not yet wired: no config section starts the listener, and processing does not yet namespace
//! a received snapshot by its origin, so nothing in the daemon listens until both exist.
//! It sits beside `collect` in the import graph: a source of snapshots, importing only spool
//! and shared.

pub mod access;
pub mod pattern;
pub mod server;
pub mod store;
