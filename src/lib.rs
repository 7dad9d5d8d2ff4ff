//! spoolmon: a monitoring pipeline where a directory is a queue.
//!
//! Data flows through the modules in this order: [`orders`] (what to measure) → [`probe`]
//! (measure, on a schedule) and [`collect`] (HAProxy statistics) → [`spool`] (snapshots in
//! `incoming/`) → [`process`] (statistics) → [`output`] (RRD, `last_result`, archive) and
//! [`sink`] (forwarding). [`daemon`] wires them together for `spoolmon run`;
//! [`pull_command`] and [`process_command`] run one half alone (`spoolmon pull`,
//! `spoolmon process`), as haproxystats users expect. [`check`] holds the Nagios checks;
//! [`selfmetrics`] writes spoolmon's own metrics and [`status`] reads them back for
//! `spoolmon status`; [`service`] is what a daemon needs from its service manager (sd_notify,
//! privilege drop, stop signals, logging). [`yaml_expansion`] bounds YAML aliases for the order
//! and config parsers.

pub mod check;
pub mod collect;
pub mod config;
pub mod daemon;
pub mod shared;
// TEMP re-export while branches merge
pub use shared::measurement;
pub mod orders;
pub mod output;
pub mod probe;
pub mod process;
pub mod process_command;
pub mod pull_command;
pub mod selfmetrics;
pub mod service;
pub mod sink;
pub mod spool;
pub mod status;
pub mod yaml_expansion;
