//! Who may ship snapshots to this node: Netdata's two-level check, with every refusal saying
//! why.
//!
//! A request names an API key (`Authorization: Bearer <key>`); each frame names its origin
//! machine. The key must be configured (`api-keys:`), enabled, and allow the peer's address by
//! its `allow-from` pattern; then each frame's origin, if it has a section of its own
//! (`machines:`), must be enabled there and allowed from that address by its pattern too. A
//! machine without a section is allowed by its key alone (as in Netdata). A frame whose chain
//! already holds this node's GUID came back around a loop and is refused too.
//!
//! Owns nothing on disk; the receiver calls it for each request and each frame.

use super::pattern::{Decision, SimplePattern};
use crate::spool::identity::MachineGuid;
use std::collections::HashMap;
use std::fmt;
use std::net::IpAddr;

/// One `api-keys:` or `machines:` entry, patterns parsed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Grant {
    pub enabled: bool,
    pub allow_from: SimplePattern,
}

/// The parsed access rules.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Access {
    pub keys: HashMap<uuid::Uuid, Grant>,
    pub machines: HashMap<MachineGuid, Grant>,
}

/// Why a request or a frame was refused: the text a sender is answered with and the receiver
/// logs, and the HTTP status.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Refusal {
    NoKey,
    MalformedKey,
    UnknownKey,
    KeyDisabled,
    KeyAddress {
        address: IpAddr,
        pattern: String,
        word: Option<String>,
    },
    MachineDisabled(MachineGuid),
    MachineAddress {
        machine: MachineGuid,
        address: IpAddr,
        pattern: String,
        word: Option<String>,
    },
    Loop {
        origin: MachineGuid,
        hops: usize,
    },
}

impl Refusal {
    /// 401 for a missing or unknown key, 403 for what the rules deny, 508 for a loop.
    pub fn status(&self) -> u16 {
        match self {
            Refusal::NoKey | Refusal::MalformedKey | Refusal::UnknownKey => 401,
            Refusal::Loop { .. } => 508,
            _ => 403,
        }
    }
}

fn denied_by(word: &Option<String>, pattern: &str) -> String {
    match word {
        Some(word) => format!("denied by `{word}` of allow-from `{pattern}`"),
        None => format!("matched by no word of allow-from `{pattern}`"),
    }
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refusal::NoKey => f.write_str("no API key: send `Authorization: Bearer <api key>`"),
            Refusal::MalformedKey => f.write_str("the API key is not a UUID (like 11111111-2222-3333-4444-555555555555)"),
            Refusal::UnknownKey => f.write_str("unknown API key: it is not under receive.api-keys on this node"),
            Refusal::KeyDisabled => f.write_str("the API key is disabled (receive.api-keys.<key>.enabled: false)"),
            Refusal::KeyAddress { address, pattern, word } => {
                write!(f, "address {address} is not allowed for this API key: {}", denied_by(word, pattern))
            }
            Refusal::MachineDisabled(machine) => {
                write!(f, "machine {machine} is disabled (receive.machines.{machine}.enabled: false)")
            }
            Refusal::MachineAddress {
                machine,
                address,
                pattern,
                word,
            } => write!(
                f,
                "address {address} is not allowed for machine {machine}: {}",
                denied_by(word, pattern)
            ),
            Refusal::Loop { origin, hops } => write!(
                f,
                "loop: a snapshot of machine {origin} came back to this node after {hops} hop(s); check the forward destinations"
            ),
        }
    }
}

/// The address as a pattern sees it: an IPv4 address mapped into IPv6 (`::ffff:10.1.2.3`, what
/// a dual-stack listener reports) is matched as IPv4.
pub fn canonical(address: IpAddr) -> IpAddr {
    match address {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(address, IpAddr::V4),
        v4 => v4,
    }
}

fn check(grant: &Grant, address: IpAddr) -> Result<(), (String, Option<String>)> {
    match grant.allow_from.decide(&address.to_string()) {
        Decision::Allowed { .. } => Ok(()),
        Decision::DeniedBy { word } => Err((grant.allow_from.to_string(), Some(word.to_owned()))),
        Decision::NoMatch => Err((grant.allow_from.to_string(), None)),
    }
}

impl Access {
    /// The request-level check: its key (the `Authorization` header's value, if any) from
    /// `peer`.
    pub fn check_key(&self, authorization: Option<&str>, peer: IpAddr) -> Result<(), Refusal> {
        let address = canonical(peer);
        let text = authorization.ok_or(Refusal::NoKey)?;
        let key = text
            .strip_prefix("Bearer ")
            .map(str::trim)
            .filter(|k| k.len() == 36)
            .and_then(|k| uuid::Uuid::try_parse(k).ok())
            .ok_or(Refusal::MalformedKey)?;
        let grant = self.keys.get(&key).ok_or(Refusal::UnknownKey)?;
        if !grant.enabled {
            return Err(Refusal::KeyDisabled);
        }
        check(grant, address).map_err(|(pattern, word)| Refusal::KeyAddress { address, pattern, word })
    }

    /// The frame-level check: its origin machine from `peer`, and no loop through `me`.
    pub fn check_frame(
        &self,
        origin: MachineGuid,
        chain: &[MachineGuid],
        me: MachineGuid,
        peer: IpAddr,
    ) -> Result<(), Refusal> {
        if chain.contains(&me) {
            return Err(Refusal::Loop {
                origin,
                hops: chain.len().saturating_sub(1),
            });
        }
        let Some(grant) = self.machines.get(&origin) else {
            return Ok(());
        };
        if !grant.enabled {
            return Err(Refusal::MachineDisabled(origin));
        }
        let address = canonical(peer);
        check(grant, address).map_err(|(pattern, word)| Refusal::MachineAddress {
            machine: origin,
            address,
            pattern,
            word,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "11111111-2222-3333-4444-555555555555";

    fn grant(enabled: bool, pattern: &str) -> Grant {
        Grant {
            enabled,
            allow_from: SimplePattern::parse(pattern).unwrap(),
        }
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn the_key_is_checked_first_with_its_cause() {
        let key: uuid::Uuid = KEY.parse().unwrap();
        let disabled = uuid::Uuid::new_v4();
        let access = Access {
            keys: HashMap::from([
                (key, grant(true, "!127.0.0.3 127.0.0.*")),
                (disabled, grant(false, "*")),
            ]),
            machines: HashMap::new(),
        };
        let bearer = format!("Bearer {KEY}");
        assert_eq!(access.check_key(Some(&bearer), ip("127.0.0.2")), Ok(()));
        assert_eq!(access.check_key(Some(&bearer), ip("::ffff:127.0.0.2")), Ok(()));
        assert_eq!(access.check_key(None, ip("127.0.0.2")), Err(Refusal::NoKey));
        assert_eq!(
            access.check_key(Some("Bearer nope"), ip("127.0.0.2")),
            Err(Refusal::MalformedKey)
        );
        assert_eq!(access.check_key(Some(KEY), ip("127.0.0.2")), Err(Refusal::MalformedKey));
        let unknown = format!("Bearer {}", uuid::Uuid::new_v4());
        assert_eq!(
            access.check_key(Some(&unknown), ip("127.0.0.2")),
            Err(Refusal::UnknownKey)
        );
        let off = format!("Bearer {disabled}");
        assert_eq!(access.check_key(Some(&off), ip("127.0.0.2")), Err(Refusal::KeyDisabled));
        let e = access.check_key(Some(&bearer), ip("127.0.0.3")).unwrap_err();
        assert_eq!(e.status(), 403);
        assert_eq!(
            e.to_string(),
            "address 127.0.0.3 is not allowed for this API key: denied by `!127.0.0.3` of allow-from `!127.0.0.3 127.0.0.*`"
        );
        let e = access.check_key(Some(&bearer), ip("10.0.0.1")).unwrap_err();
        assert!(e.to_string().contains("matched by no word"), "{e}");
        assert_eq!(Refusal::UnknownKey.status(), 401);
    }

    #[test]
    fn the_machine_is_checked_again_and_loops_are_refused() {
        let (known, off, other, me) = (
            MachineGuid::random(),
            MachineGuid::random(),
            MachineGuid::random(),
            MachineGuid::random(),
        );
        let access = Access {
            keys: HashMap::new(),
            machines: HashMap::from([(known, grant(true, "127.0.0.2")), (off, grant(false, "*"))]),
        };
        assert_eq!(access.check_frame(known, &[known], me, ip("127.0.0.2")), Ok(()));
        assert!(matches!(
            access.check_frame(known, &[known], me, ip("127.0.0.4")),
            Err(Refusal::MachineAddress { .. })
        ));
        assert_eq!(
            access.check_frame(off, &[off], me, ip("127.0.0.2")),
            Err(Refusal::MachineDisabled(off))
        );
        assert_eq!(
            access.check_frame(other, &[other], me, ip("192.0.2.1")),
            Ok(()),
            "no section: the key decides"
        );
        let e = access
            .check_frame(other, &[other, me, known], me, ip("127.0.0.2"))
            .unwrap_err();
        assert_eq!(e.status(), 508);
        assert!(e.to_string().starts_with("loop: a snapshot of machine"), "{e}");
    }
}
