//! ICMP echo packets of the native engine: building requests and recognising our replies.
//!
//! Owns nothing on disk. Invariants: [`parse_echo_reply`] never panics and accepts only an echo
//! REPLY whose payload carries this engine's token (so our own looped-back requests, other
//! programs' pings, truncated and corrupted packets are all rejected); every request built here
//! carries the engine's identifier ([`identifier`], from its token) in the header, the key's low
//! 16 bits as the sequence and the whole key after the token in the payload, so a kernel filter
//! can pass only our replies by identifier and token (`socket.rs`).

/// ICMPv4 echo reply / request types.
const ICMPV4_ECHO_REPLY: u8 = 0;
const ICMPV4_ECHO_REQUEST: u8 = 8;
/// ICMPv6 echo request / reply types.
const ICMPV6_ECHO_REQUEST: u8 = 128;
const ICMPV6_ECHO_REPLY: u8 = 129;

/// ICMP header (type, code, checksum, identifier, sequence).
const HEADER_LEN: usize = 8;
/// Payload: engine token (8 bytes) + key (4 bytes) + padding (4 bytes).
const PAYLOAD_LEN: usize = 16;
/// Length of every echo request this engine sends.
pub const REQUEST_LEN: usize = HEADER_LEN + PAYLOAD_LEN;
/// Offsets inside the ICMP message (header included) that the kernel filter reads.
pub const IDENTIFIER_AT: u32 = 4;
pub const TOKEN_AT: u32 = 8;

/// The echo identifier of the engine with `token` (raw sockets; a datagram socket's identifier
/// is chosen by the kernel).
pub fn identifier(token: u64) -> u16 {
    (token >> 48) as u16
}

/// The ICMP type and code of an echo reply, as the 16-bit word the kernel filter compares.
pub fn echo_reply_type_code(family: Family) -> u16 {
    match family {
        Family::V4 => u16::from(ICMPV4_ECHO_REPLY) << 8,
        Family::V6 => u16::from(ICMPV6_ECHO_REPLY) << 8,
    }
}

/// Which ICMP flavour a packet belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Family {
    V4,
    V6,
}

/// How the packet arrived, which decides what the receive buffer starts with and which header
/// fields are ours.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Framing {
    /// Raw IPv4: the buffer starts with the IPv4 header; identifier and sequence are ours.
    RawV4,
    /// Raw IPv6: the buffer starts with the ICMPv6 header (the kernel checks its checksum);
    /// identifier and sequence are ours.
    RawV6,
    /// Datagram ("ping") socket: the buffer starts with the ICMP header; the kernel owns the
    /// identifier, only the sequence is ours.
    Datagram(Family),
}

/// Builds the echo request for `key` into `buf` and returns its length.
///
/// The identifier is the engine's ([`identifier`]) and the sequence the key's low half; the
/// payload carries the whole key after the engine token, so 2^32 keys stay distinct. The IPv4
/// checksum is computed here; for ICMPv6 the kernel fills it in (the field is left zero).
pub fn build_echo_request(family: Family, token: u64, key: u32, buf: &mut [u8; REQUEST_LEN]) -> usize {
    let kind = match family {
        Family::V4 => ICMPV4_ECHO_REQUEST,
        Family::V6 => ICMPV6_ECHO_REQUEST,
    };
    buf[0] = kind;
    buf[1] = 0;
    buf[2..4].fill(0);
    buf[4..6].copy_from_slice(&identifier(token).to_be_bytes());
    buf[6..8].copy_from_slice(&(key as u16).to_be_bytes());
    buf[8..16].copy_from_slice(&token.to_be_bytes());
    buf[16..20].copy_from_slice(&key.to_be_bytes());
    buf[20..24].fill(0);
    if family == Family::V4 {
        let sum = internet_checksum(&buf[..]);
        buf[2..4].copy_from_slice(&sum.to_be_bytes());
    }
    REQUEST_LEN
}

/// The key of a reply to one of our echo requests carrying `token`, or `None` for anything else
/// (other types, other programs' replies, truncated or corrupted packets).
pub fn parse_echo_reply(framing: Framing, token: u64, packet: &[u8]) -> Option<u32> {
    let (icmp, family) = match framing {
        Framing::RawV4 => (strip_ipv4_header(packet)?, Family::V4),
        Framing::RawV6 => (packet, Family::V6),
        Framing::Datagram(family) => (packet, family),
    };
    if icmp.len() < REQUEST_LEN {
        return None;
    }
    let expected_type = match family {
        Family::V4 => ICMPV4_ECHO_REPLY,
        Family::V6 => ICMPV6_ECHO_REPLY,
    };
    if icmp[0] != expected_type || icmp[1] != 0 {
        return None;
    }
    // ICMPv6 checksums cover a pseudo-header the raw socket does not give us; the kernel has
    // verified them already. IPv4 we verify ourselves.
    if family == Family::V4 && internet_checksum(icmp) != 0 {
        return None;
    }
    if read_u64(icmp, 8)? != token {
        return None;
    }
    let key = read_u32(icmp, 16)?;
    let header_matches = match framing {
        Framing::Datagram(_) => read_u16(icmp, 6)? == key as u16,
        Framing::RawV4 | Framing::RawV6 => read_u16(icmp, 4)? == identifier(token) && read_u16(icmp, 6)? == key as u16,
    };
    header_matches.then_some(key)
}

/// The ICMP part of a raw IPv4 packet (the header length is variable), if it is ICMP.
fn strip_ipv4_header(packet: &[u8]) -> Option<&[u8]> {
    let first = *packet.first()?;
    if first >> 4 != 4 {
        return None;
    }
    let header_len = usize::from(first & 0x0f) * 4;
    const IPPROTO_ICMP: u8 = 1;
    if header_len < 20 || *packet.get(9)? != IPPROTO_ICMP {
        return None;
    }
    packet.get(header_len..)
}

/// RFC 1071 one's-complement sum; 0 over a packet that includes a correct checksum.
pub fn internet_checksum(data: &[u8]) -> u16 {
    let mut sum: u32 = 0;
    let mut pairs = data.chunks_exact(2);
    for pair in &mut pairs {
        sum += u32::from(u16::from_be_bytes([pair[0], pair[1]]));
    }
    if let [last] = pairs.remainder() {
        sum += u32::from(*last) << 8;
    }
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

fn read_u16(data: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes(data.get(at..at + 2)?.try_into().ok()?))
}

fn read_u32(data: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_be_bytes(data.get(at..at + 4)?.try_into().ok()?))
}

fn read_u64(data: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_be_bytes(data.get(at..at + 8)?.try_into().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOKEN: u64 = 0x0123_4567_89ab_cdef;
    const KEY: u32 = 0xdead_beef;

    fn request(family: Family) -> Vec<u8> {
        let mut buf = [0u8; REQUEST_LEN];
        let len = build_echo_request(family, TOKEN, KEY, &mut buf);
        buf[..len].to_vec()
    }

    /// What the peer sends back: the request with the reply type (and, for IPv4, a fixed
    /// checksum), as the Linux kernel answers.
    fn reply_v4(mut icmp: Vec<u8>) -> Vec<u8> {
        icmp[0] = ICMPV4_ECHO_REPLY;
        icmp[2..4].fill(0);
        let sum = internet_checksum(&icmp);
        icmp[2..4].copy_from_slice(&sum.to_be_bytes());
        icmp
    }

    /// An IPv4 header of `ihl` 32-bit words (options zero-filled) in front of `icmp`.
    fn with_ipv4_header(ihl: u8, icmp: &[u8]) -> Vec<u8> {
        let mut packet = vec![0u8; usize::from(ihl) * 4];
        packet[0] = 0x40 | ihl;
        packet[9] = 1;
        packet.extend_from_slice(icmp);
        packet
    }

    #[test]
    fn built_ipv4_request_has_a_valid_checksum_and_carries_the_key() {
        let packet = request(Family::V4);
        assert_eq!(internet_checksum(&packet), 0);
        assert_eq!(packet[0], ICMPV4_ECHO_REQUEST);
        assert_eq!(read_u16(&packet, 4), Some(identifier(TOKEN)));
        assert_eq!(read_u16(&packet, 6), Some(KEY as u16));
        assert_eq!(read_u32(&packet, 16), Some(KEY));
    }

    #[test]
    fn ipv4_reply_behind_headers_of_any_length_is_recognised() {
        let reply = reply_v4(request(Family::V4));
        for ihl in [5u8, 6, 15] {
            let packet = with_ipv4_header(ihl, &reply);
            assert_eq!(parse_echo_reply(Framing::RawV4, TOKEN, &packet), Some(KEY), "ihl {ihl}");
        }
        assert_eq!(
            parse_echo_reply(Framing::Datagram(Family::V4), TOKEN, &reply),
            Some(KEY)
        );
    }

    #[test]
    fn our_own_looped_back_request_is_not_a_reply() {
        let packet = with_ipv4_header(5, &request(Family::V4));
        assert_eq!(parse_echo_reply(Framing::RawV4, TOKEN, &packet), None);
        assert_eq!(parse_echo_reply(Framing::RawV6, TOKEN, &request(Family::V6)), None);
    }

    #[test]
    fn ipv6_reply_is_recognised_and_ipv4_type_is_not() {
        let mut reply = request(Family::V6);
        reply[0] = ICMPV6_ECHO_REPLY;
        assert_eq!(parse_echo_reply(Framing::RawV6, TOKEN, &reply), Some(KEY));
        reply[0] = ICMPV4_ECHO_REPLY;
        assert_eq!(parse_echo_reply(Framing::RawV6, TOKEN, &reply), None);
    }

    #[test]
    fn corrupted_checksum_is_rejected() {
        let mut reply = reply_v4(request(Family::V4));
        reply[20] ^= 0x40;
        let packet = with_ipv4_header(5, &reply);
        assert_eq!(parse_echo_reply(Framing::RawV4, TOKEN, &packet), None);
    }

    #[test]
    fn reply_carrying_another_token_is_rejected() {
        let reply = reply_v4(request(Family::V4));
        let packet = with_ipv4_header(5, &reply);
        assert_eq!(parse_echo_reply(Framing::RawV4, TOKEN ^ 1, &packet), None);
    }

    #[test]
    fn header_key_must_match_payload_key() {
        let mut reply = request(Family::V4);
        reply[7] ^= 1; // sequence differs from the key in the payload
        let packet = with_ipv4_header(5, &reply_v4(reply.clone()));
        assert_eq!(parse_echo_reply(Framing::RawV4, TOKEN, &packet), None);
        let datagram = reply_v4(reply);
        assert_eq!(parse_echo_reply(Framing::Datagram(Family::V4), TOKEN, &datagram), None);
    }

    #[test]
    fn datagram_reply_with_kernel_chosen_identifier_is_accepted() {
        let mut reply = request(Family::V4);
        reply[4..6].copy_from_slice(&0x1234u16.to_be_bytes());
        let reply = reply_v4(reply);
        assert_eq!(
            parse_echo_reply(Framing::Datagram(Family::V4), TOKEN, &reply),
            Some(KEY)
        );
        let packet = with_ipv4_header(5, &reply);
        assert_eq!(parse_echo_reply(Framing::RawV4, TOKEN, &packet), None);
    }

    #[test]
    fn every_truncation_of_a_valid_reply_is_rejected() {
        let packet = with_ipv4_header(6, &reply_v4(request(Family::V4)));
        for len in 0..packet.len() {
            assert_eq!(
                parse_echo_reply(Framing::RawV4, TOKEN, &packet[..len]),
                None,
                "len {len}"
            );
        }
    }

    #[test]
    fn bad_ip_headers_are_rejected() {
        let reply = reply_v4(request(Family::V4));
        let mut short_ihl = with_ipv4_header(5, &reply);
        short_ihl[0] = 0x44; // IHL 4 < minimum
        let mut not_icmp = with_ipv4_header(5, &reply);
        not_icmp[9] = 17;
        let mut ipv6_version = with_ipv4_header(5, &reply);
        ipv6_version[0] = 0x65;
        for packet in [short_ihl, not_icmp, ipv6_version] {
            assert_eq!(parse_echo_reply(Framing::RawV4, TOKEN, &packet), None);
        }
    }

    #[test]
    fn garbage_never_panics_and_is_never_a_reply() {
        let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
        for round in 0..20_000usize {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let len = round % 90;
            let bytes: Vec<u8> = (0..len).map(|i| (state >> ((i % 8) * 8)) as u8 ^ i as u8).collect();
            for framing in [
                Framing::RawV4,
                Framing::RawV6,
                Framing::Datagram(Family::V4),
                Framing::Datagram(Family::V6),
            ] {
                assert_eq!(parse_echo_reply(framing, TOKEN, &bytes), None);
            }
        }
    }
}
