//! What a long-running spoolmon process needs to behave as a system service: it claims its
//! base directory ([`claim`]), tells its
//! service manager how it is doing ([`notify`]), gives up root after opening what needs root
//! ([`privilege`]), stops on signals within a bounded time ([`signals`]) and logs where its
//! service manager expects it ([`log`]). [`supervisor`] puts these together into the one
//! lifecycle every long-running command (`run`, `pull`, `process`) runs under.

pub mod claim;
pub mod log;
pub mod notify;
pub mod privilege;
pub mod signals;
pub mod supervisor;
