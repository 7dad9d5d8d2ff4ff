//! The options the ICMP side of the probe receives: which engine measures `fping` orders
//! ([`Engine`], the config file's top-level `engine:`) and the native engine's settings
//! ([`IcmpOptions`], the config file's `icmp:` section).
//!
//! Owns nothing on disk. Invariants: the serde attributes and defaults here *are* the config
//! file's schema for these keys (`spoolmon config --print-defaults` prints them); unknown keys
//! under `icmp:` are an error. The config file's schema (`crate::config`) holds both, and `spoolmon run` hands
//! [`IcmpOptions`] to [`IcmpEngine::open`](super::IcmpEngine::open).

use serde::{Deserialize, Serialize};

/// Which engine measures `fping` orders.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Engine {
    /// Native ICMP engine; the fping binary when no ICMP socket can be opened.
    #[default]
    Auto,
    /// Native ICMP engine only (start-up fails without an ICMP socket).
    Native,
    /// Always the fping binary, with pingmachine's command line.
    Fping,
}

/// Native ICMP engine settings.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(default, rename_all = "kebab-case", deny_unknown_fields)]
pub struct IcmpOptions {
    /// Echo requests per second, all targets together (pacing).
    #[schemars(range(min = 1))]
    pub send_rate: u32,
    /// SO_RCVBUF of the ICMP sockets, bytes.
    pub receive_buffer: usize,
    /// How long to wait for one echo reply, milliseconds.
    #[schemars(range(min = 1))]
    pub timeout_ms: u64,
}

impl Default for IcmpOptions {
    fn default() -> Self {
        IcmpOptions {
            send_rate: 50_000,
            receive_buffer: 16 << 20,
            timeout_ms: 3000,
        }
    }
}
