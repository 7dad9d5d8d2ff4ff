//! The `api:` section: where the API listens, who may read and write, and the limits that bound
//! what a client can make it do. `spoolmon serve` serves it (defaults without the section);
//! `spoolmon run` serves it when the section is present.

use crate::http::{self, Listen};
use crate::shared::option::{check_seconds, seconds, InvalidOption};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The default listen address: loopback only (pmproxy's `PMPROXY_LOCAL`).
pub const DEFAULT_LISTEN: &str = "127.0.0.1:19998";

/// Shortest token accepted (a token is a password: `uuidgen` makes 36 characters).
pub const MIN_TOKEN_CHARS: usize = 16;

/// Settings of the API server (the `api:` section).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(default, rename_all = "kebab-case", deny_unknown_fields)]
pub struct ApiOptions {
    /// Addresses to listen on: `address:port` (`127.0.0.1:19998`, `[::1]:19998`) or
    /// `unix:/absolute/path` (a Unix socket; its directory's permissions decide who may
    /// connect). Default `["127.0.0.1:19998"]`: this machine only.
    pub listen: Vec<String>,
    /// Bearer tokens (`Authorization: Bearer <token>`), each `read` or `write` (write may read
    /// too); at least 16 characters each. Writes (PUT, DELETE) always need a `write` token.
    /// None by default: nothing can be written through the API.
    pub tokens: BTreeMap<String, Access>,
    /// Whether reads need no token. Default true; false makes every request need a token.
    pub anonymous_read: bool,
    /// Largest request body, bytes (pmproxy's `-L`); a larger request is answered 413.
    /// Default 65536 (an order is at most 64 KiB).
    pub max_request_bytes: u64,
    /// Connections served at once; one more is answered 503 and closed. Default 64.
    pub max_connections: usize,
    /// Seconds a request's head may take to arrive (a slow client is cut off). Default 10.
    pub header_timeout: f64,
    /// Seconds a request's body may take to arrive. Default 30.
    pub read_timeout: f64,
    /// Seconds a write to a client may make no progress before the connection is closed (a
    /// client that stops reading). Default 30.
    pub write_timeout: f64,
    /// TLS on every TCP listen address: `{cert, key}` PEM files and, for client certificates,
    /// `client-ca`; `unix:` sockets stay plain HTTP. None by default (plain HTTP: keep it on
    /// loopback or a trusted network).
    pub tls: Option<crate::http::tls::TlsOptions>,
}

/// What a token may do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Access {
    Read,
    Write,
}

impl Default for ApiOptions {
    fn default() -> Self {
        ApiOptions {
            listen: vec![DEFAULT_LISTEN.into()],
            tokens: BTreeMap::new(),
            anonymous_read: true,
            max_request_bytes: 64 << 10,
            max_connections: 64,
            header_timeout: 10.0,
            read_timeout: 30.0,
            write_timeout: 30.0,
            tls: None,
        }
    }
}

/// A connection lives at most this many times the longest of the time limits.
const MAX_CONNECTION_LIFE_FACTOR: u32 = 20;

impl ApiOptions {
    /// Checks every option; the error names the first bad key (`api.<key>`).
    pub fn validate(&self) -> Result<(), InvalidOption> {
        self.addresses()?;
        for token in self.tokens.keys() {
            if token.chars().count() < MIN_TOKEN_CHARS {
                return Err(InvalidOption::new(
                    "api.tokens",
                    format!("a token must be at least {MIN_TOKEN_CHARS} characters (make one with uuidgen)"),
                ));
            }
            if !token.bytes().all(|b| b.is_ascii_graphic()) {
                return Err(InvalidOption::new(
                    "api.tokens",
                    "a token must be printable ASCII without spaces (it is sent in a header)",
                ));
            }
        }
        if self.max_request_bytes < 1024 {
            return Err(InvalidOption::new(
                "api.max-request-bytes",
                "must be at least 1024 (bytes)",
            ));
        }
        if self.max_connections == 0 {
            return Err(InvalidOption::new("api.max-connections", "must be at least 1"));
        }
        check_seconds("api.header-timeout", self.header_timeout, 0.1)?;
        check_seconds("api.read-timeout", self.read_timeout, 0.1)?;
        check_seconds("api.write-timeout", self.write_timeout, 0.1)?;
        Ok(())
    }

    /// The listen addresses, parsed.
    pub fn addresses(&self) -> Result<Vec<Listen>, InvalidOption> {
        if self.listen.is_empty() {
            return Err(InvalidOption::new(
                "api.listen",
                format!("name at least one address, e.g. [\"{DEFAULT_LISTEN}\"] (or remove the api: section)"),
            ));
        }
        self.listen
            .iter()
            .map(|text| text.parse().map_err(|e: String| InvalidOption::new("api.listen", e)))
            .collect()
    }

    /// What the listener holds every connection to.
    pub fn connection_limits(&self) -> http::Limits {
        let longest = self.header_timeout.max(self.read_timeout).max(self.write_timeout);
        http::Limits {
            max_connections: self.max_connections,
            accept_every: std::time::Duration::ZERO,
            header_timeout: seconds(self.header_timeout),
            write_timeout: seconds(self.write_timeout),
            life: seconds(longest) * MAX_CONNECTION_LIFE_FACTOR,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_defaults_listen_on_loopback_only_and_take_no_writes() {
        let options = ApiOptions::default();
        options.validate().unwrap();
        assert_eq!(
            options.addresses().unwrap(),
            vec![Listen::Tcp("127.0.0.1:19998".parse().unwrap())]
        );
        assert!(options.tokens.is_empty());
    }

    #[test]
    fn bad_options_are_named() {
        let bad = |options: ApiOptions| options.validate().unwrap_err().to_string();
        let short = ApiOptions {
            tokens: [("short".to_string(), Access::Write)].into(),
            ..ApiOptions::default()
        };
        assert!(bad(short).contains("api.tokens"));
        let spaced = ApiOptions {
            tokens: [("a token with spaces in it".to_string(), Access::Read)].into(),
            ..ApiOptions::default()
        };
        assert!(bad(spaced).contains("printable"));
        let nowhere = ApiOptions {
            listen: vec![],
            ..ApiOptions::default()
        };
        assert!(bad(nowhere).contains("api.listen"));
        let relative = ApiOptions {
            listen: vec!["unix:api.sock".into()],
            ..ApiOptions::default()
        };
        assert!(bad(relative).contains("absolute"));
        let tiny = ApiOptions {
            max_request_bytes: 10,
            ..ApiOptions::default()
        };
        assert!(bad(tiny).contains("api.max-request-bytes"));
        let never = ApiOptions {
            header_timeout: 0.0,
            ..ApiOptions::default()
        };
        assert!(bad(never).contains("api.header-timeout"));
    }

    #[test]
    fn tokens_are_read_or_write_in_yaml() {
        let options: ApiOptions =
            yaml_serde::from_str("tokens:\n  0123456789abcdef0123: read\n  fedcba9876543210fedc: write\n").unwrap();
        assert_eq!(options.tokens["0123456789abcdef0123"], Access::Read);
        assert_eq!(options.tokens["fedcba9876543210fedc"], Access::Write);
        assert!(yaml_serde::from_str::<ApiOptions>("tokens:\n  0123456789abcdef0123: admin\n").is_err());
    }
}
