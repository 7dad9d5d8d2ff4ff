//! spoolmon: a monitoring pipeline where a directory is a queue.
//!
//! Data flows through the modules in this order: [`orders`] (what to measure) → [`probe`]
//! (measure, on a schedule) and [`collect`] (HAProxy statistics) → [`spool`] (snapshots in
//! `incoming/`) → [`process`] (statistics) → [`output`] (RRD, `last_result`, archive) and
//! [`sink`] (forwarding).
//!
//! [`command`] has one file per subcommand, each a thin composition of those stages: `run`
//! wires all of them together on one base directory; `pull` and `process` run one half alone,
//! as haproxystats users expect. The long-running ones share one lifecycle,
//! [`service::supervisor`] (claim the base, switch user, notify the service manager, reload on
//! SIGHUP, drain on SIGTERM); the rest of [`service`] is what a daemon needs from its service
//! manager (sd_notify, privilege drop, stop signals, logging). [`config`] is the file schema,
//! read only by the commands and the observers (checks, status report, API), which hand each stage its
//! options.
//!
//! Above the data flow, reading only: [`check`] holds the Nagios checks; [`selfmetrics`]
//! writes spoolmon's own metrics and [`status`] reads them back for `spoolmon status`; [`api`] serves what
//! all of them read over HTTP (`spoolmon serve`, or `run` with `api:`). At the
//! bottom: [`shared`] is the vocabulary every stage speaks (measurements, the clock, the last
//! error, option errors), [`spool`] is the disk, [`http`] serves HTTP/1.1 to hostile peers
//! (the receiver's and the API's listeners); [`yaml_expansion`] bounds YAML aliases for the
//! order and config parsers.
//!
//! `ARCHITECTURE.md` at the top of the repository has the module map (one line per module) and
//! the rules of the house: where options live and what may import what.

pub mod api;
pub mod check;
pub mod collect;
pub mod command;
pub mod config;
pub mod http;
pub mod orders;
pub mod output;
pub mod probe;
pub mod process;
pub mod receive;
pub mod selfmetrics;
pub mod service;
pub mod shared;
pub mod sink;
pub mod spool;
pub mod status;
pub mod yaml_expansion;
