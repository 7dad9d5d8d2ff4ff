//! The shared vocabulary: the types and small rules every stage speaks, and nothing else.
//!
//! - [`measurement`]: order ids, RRD templates, one measurement result ([`measurement::OrderResult`]);
//! - [`stats`]: the ping statistics of one step ([`stats::PingStats`]), as pingmachine defines them;
//! - [`clock`]: unix time, the one clock helper;
//! - [`last_error`]: the latest error of a component, for `state/status*.json`;
//! - [`node`]: a node's machine GUID and the provenance of a result shipped from another node;
//! - [`option`]: the error that names a bad config key, and seconds as floats.
//!
//! Rules: this module sits at the bottom of the import graph. It imports no other spoolmon
//! module, does no I/O and owns nothing on disk; conversion to and from files and protocols
//! happens in the stages (orders parsing, snapshot files, output, sinks). The disk itself (the
//! base directory, locks, atomic files) is the other bottom module, [`crate::spool`].

pub mod clock;
pub mod last_error;
pub mod measurement;
pub mod node;
pub mod option;
pub mod stats;
