//! Orders: the user-owned YAML files below `orders/` that say what to measure.
//!
//! - [`order`]: the order model (the spec of each probe kind: name, target, batch key,
//!   interval) and its parsing/validation (pure: text in, [`order::Order`] or a reasoned error
//!   out);
//! - [`book`]: the order book, which tracks every file below `orders/` (and `telegraf/<id>`)
//!   with a safe walk, emits Added / Changed / Removed / Expired events and lists each file's
//!   state ([`fresh_scan`], [`format_table`]);
//! - [`write`]: writing, touching and removing orders for producers (`spoolmon order`, the
//!   API's `PUT`/`DELETE`), validated by the same parser, atomically, never outside `orders/`;
//! - [`OrderOptions`]: what the stage takes from the configuration, with its defaults.
//!
//! An order whose output cannot be written is `failing` only in the listing of
//! `crate::output::failures::listing`, which adds processing's record
//! (`state/output-errors.json`) to [`fresh_scan`]: orders never read what a later stage writes.
//!
//! The daemon never writes below `orders/` (only [`write`] does, for producers): a bad order is reported and left where the user put it;
//! expired orders are moved by the caller (the daemon's archive step). Nothing here reads the
//! configuration: callers pass [`OrderOptions`] (`Config::order_options`).

pub mod book;
pub mod order;
pub mod watch;
pub mod write;

pub use book::{format_table, fresh_lookup, fresh_scan};

/// What the orders stage takes from the configuration (`Config::order_options` builds it from
/// the keys of the same names; the defaults live here).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OrderOptions {
    /// Seconds after its last modification at which an active order expires (`order-timeout`).
    pub order_timeout: u64,
    /// Command for `sping:` orders (`sping-command`; placeholders as in `exec:` orders).
    pub sping_command: Vec<String>,
    /// Command for `pping:` orders (`pping-command`).
    pub pping_command: Vec<String>,
}

impl Default for OrderOptions {
    /// Orders expire after an hour and a minute; `sping` and `pping` both run `scion ping`.
    fn default() -> Self {
        let scion_ping = || {
            [
                "scion",
                "ping",
                "--count",
                "{pings}",
                "--interval",
                "{interval_ms}ms",
                "{host}",
            ]
            .map(String::from)
            .to_vec()
        };
        OrderOptions {
            order_timeout: 3660,
            sping_command: scion_ping(),
            pping_command: scion_ping(),
        }
    }
}
