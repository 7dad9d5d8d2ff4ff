//! The shipped snapshot: one snapshot of the spool, framed to travel from one node's spool into
//! another's `incoming/` (over HTTP from a `forward` sink to a receiver, and later as a Kafka
//! message). The frame is the spool's own unit with who sent it: the receiver writes the files
//! back as a snapshot directory and processes it like a local one, namespaced by its origin.
//!
//! The format (`spool-layout.md`, "Shipped snapshots"): header lines of text, then each file's
//! bytes, then a CRC-32 line over everything before it:
//!
//! ```text
//! spoolmon-ship 1
//! origin: <machine GUID> <node name>      the node that measured it
//! chain: <GUID>,<GUID>,...                every node it passed, origin first, sender last
//! stream: <UUID>                          the sender's outbox stream (its sequence space)
//! sequence: <n>                           increasing within the stream, from 1
//! snapshot: <name>                        the snapshot's directory name at the origin
//! files: <count>
//! file: <name> <bytes>                    then exactly <bytes> bytes and a newline
//! ...
//! crc32: <8 lower-case hex digits>
//! ```
//!
//! A request body holds one frame or several, back to back. Frames come from the network, so
//! [`decode`] treats them as hostile: every line and count is bounded before anything is kept,
//! every name is checked to be one plain file name, lengths are checked against what is left
//! of the body before any file is taken, and a frame whose checksum does not match is refused
//! whole. The decoded frame borrows its files from the body (no copy).
//!
//! Called by the forward sink (encode) and the receiver (decode); no I/O here.

use super::identity::MachineGuid;
use super::snapshot::SnapshotName;
use std::fmt;

/// The first line's format name and version.
pub const FORMAT: &str = "spoolmon-ship";
/// The version this build writes and reads.
pub const VERSION: u32 = 1;
/// Longest header line (bytes, newline included).
pub const MAX_HEADER_LINE: usize = 4096;
/// Most nodes a snapshot may pass (the chain's length): a longer chain is refused as a loop.
pub const MAX_CHAIN: usize = 32;
/// Most files in one snapshot (a HAProxy snapshot of 1,024 processes has 2,048).
pub const MAX_FILES: usize = 4096;
/// Longest node name (bytes).
pub const MAX_NODE_NAME: usize = 64;
/// Longest file name inside a snapshot (bytes).
pub const MAX_FILE_NAME: usize = 200;
/// The file a received snapshot carries beside its files: its frame's header, as a frame
/// without files. Processing reads it to namespace the snapshot by its origin.
pub const SHIPPED_FILE: &str = "SHIPPED";
/// Largest [`SHIPPED_FILE`] read back (a header of 32 GUIDs is under 2 KiB).
pub const MAX_MARKER: u64 = 16 << 10;
/// What the name of every received snapshot contains after its epoch.
pub const RECEIVED_TAG: &str = "-from.";
pub use crate::shared::node::{node_order_id, NODE_PREFIX};

/// Names a frame may not use for its files: the markers spoolmon writes into snapshots.
const RESERVED: [&str; 2] = [SHIPPED_FILE, super::queue::APPLIED_MARK];

/// Who a shipped snapshot is from and where it is in its sender's stream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ShipHeader {
    /// The node that measured (or pulled) it.
    pub origin: MachineGuid,
    /// The origin's node name: the receiver namespaces the origin's orders by it.
    pub origin_node: String,
    /// Every node it passed, origin first, the sender last (one entry when sent by its origin).
    pub chain: Vec<MachineGuid>,
    /// The sender's stream: its outbox for this destination, made with the outbox. A receiver
    /// keeps one high-water mark per (sender, stream).
    pub stream: uuid::Uuid,
    /// Position in the stream, from 1, increasing by at least 1 per frame.
    pub sequence: u64,
    /// The snapshot's name at the origin (sorts by time, as every snapshot name).
    pub snapshot: SnapshotName,
}

impl ShipHeader {
    /// The node that sent this frame (the chain's last entry).
    pub fn sender(&self) -> MachineGuid {
        *self.chain.last().expect("a chain is never empty")
    }

    /// How many nodes passed it on before the sender.
    pub fn hops(&self) -> usize {
        self.chain.len() - 1
    }
}

/// One decoded frame: the header and the files, borrowed from the body.
#[derive(Debug, PartialEq, Eq)]
pub struct Frame<'a> {
    pub header: ShipHeader,
    pub files: Vec<(&'a str, &'a [u8])>,
}

/// Why a frame was refused (the position is the byte offset in the body where it failed).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FrameError {
    #[error("at byte {at}: not a shipped snapshot (first line {line:?}, expected \"{FORMAT} {VERSION}\")")]
    Format { at: usize, line: String },
    #[error("at byte {at}: version {version} of the shipped-snapshot format is not known to this node (it reads {VERSION}); upgrade it")]
    Version { at: usize, version: String },
    #[error("at byte {at}: header line longer than {MAX_HEADER_LINE} bytes or without its newline")]
    LongLine { at: usize },
    #[error("at byte {at}: expected \"{expected}: ...\", found {found:?}")]
    Field {
        at: usize,
        expected: &'static str,
        found: String,
    },
    #[error("at byte {at}: {field}: {reason}")]
    Value {
        at: usize,
        field: &'static str,
        reason: String,
    },
    #[error("at byte {at}: file {name:?} claims {claimed} bytes, the body has {left} left")]
    Truncated {
        at: usize,
        name: String,
        claimed: u64,
        left: usize,
    },
    #[error(
        "at byte {at}: checksum mismatch (frame says {claimed}, its bytes give {actual:08x}): corrupted in transit"
    )]
    Checksum { at: usize, claimed: String, actual: u32 },
}

/// Appends one frame to `out`.
pub fn encode(header: &ShipHeader, files: &[(&str, &[u8])], out: &mut Vec<u8>) {
    use std::io::Write;
    let start = out.len();
    let chain: Vec<String> = header.chain.iter().map(MachineGuid::to_string).collect();
    // Writing into a Vec cannot fail.
    let _ = write!(
        out,
        "{FORMAT} {VERSION}\norigin: {} {}\nchain: {}\nstream: {}\nsequence: {}\nsnapshot: {}\nfiles: {}\n",
        header.origin,
        header.origin_node,
        chain.join(","),
        header.stream.hyphenated(),
        header.sequence,
        header.snapshot,
        files.len()
    );
    for (name, bytes) in files {
        let _ = writeln!(out, "file: {name} {}", bytes.len());
        out.extend_from_slice(bytes);
        out.push(b'\n');
    }
    let crc = crc32fast::hash(&out[start..]);
    let _ = writeln!(out, "crc32: {crc:08x}");
}

/// The marker a received snapshot carries ([`SHIPPED_FILE`]).
pub fn encode_marker(header: &ShipHeader) -> Vec<u8> {
    let mut out = Vec::new();
    encode(header, &[], &mut out);
    out
}

/// Reads a [`SHIPPED_FILE`] back: one frame without files and nothing after it.
pub fn decode_marker(bytes: &[u8]) -> Result<ShipHeader, FrameError> {
    let (frame, rest) = decode(bytes)?;
    if !frame.files.is_empty() || !rest.is_empty() {
        return Err(value_error(0, "marker", "holds files or more than one frame"));
    }
    Ok(frame.header)
}

/// The name a received snapshot gets in the receiver's queue:
/// `<origin epoch>-from.<origin node>.<stream, 32 hex digits>.<sequence, 20 digits>`. It sorts
/// with the receiver's own snapshots by the time it was taken, and two frames never share it.
pub fn received_name(header: &ShipHeader) -> SnapshotName {
    let stream = header.stream.simple();
    let name = format!(
        "{}{RECEIVED_TAG}{}.{}.{:020}",
        header.snapshot.epoch, header.origin_node, stream, header.sequence
    );
    SnapshotName::parse(&name).expect("a node name, hex digits and a number make a snapshot name")
}

/// Whether `name` (in `incoming/` or `incoming.tmp/`) is a received snapshot's.
pub fn is_received_name(name: &str) -> bool {
    SnapshotName::parse(name).is_some_and(|n| n.as_str()[n.epoch.to_string().len()..].starts_with(RECEIVED_TAG))
}

/// Whether `name` may be a node name: 1-64 ASCII letters, digits, `-`, `_` and `.`, not
/// starting with `.` or `-` (it becomes a directory name and a Graphite path component).
pub fn valid_node_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > MAX_NODE_NAME {
        return Err(format!("a node name has 1 to {MAX_NODE_NAME} characters"));
    }
    if name.starts_with(['.', '-']) {
        return Err("a node name does not start with '.' or '-'".into());
    }
    match name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')))
    {
        Some(c) => Err(format!(
            "{c:?} is not allowed in a node name (letters, digits, '-', '_', '.')"
        )),
        None => Ok(()),
    }
}

/// Whether `name` may be a file of a shipped snapshot: one plain file name of printable ASCII
/// without spaces, not starting with `.`, at most [`MAX_FILE_NAME`] bytes.
fn valid_file_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > MAX_FILE_NAME {
        return Err(format!("a file name has 1 to {MAX_FILE_NAME} bytes"));
    }
    if name.starts_with('.') {
        return Err("a file name does not start with '.'".into());
    }
    if RESERVED.contains(&name) {
        return Err(format!("{name} is a name spoolmon reserves for its own markers"));
    }
    if let Some(c) = name.chars().find(|c| !c.is_ascii_graphic() || *c == '/') {
        return Err(format!("{c:?} is not allowed in a file name"));
    }
    Ok(())
}

/// A cursor over the body, bounding every line it reads.
struct Reader<'a> {
    body: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn line(&mut self) -> Result<&'a str, FrameError> {
        let rest = &self.body[self.at..];
        let window = &rest[..rest.len().min(MAX_HEADER_LINE)];
        let Some(end) = memchr::memchr(b'\n', window) else {
            return Err(FrameError::LongLine { at: self.at });
        };
        let line = std::str::from_utf8(&window[..end]).map_err(|_| FrameError::Value {
            at: self.at,
            field: "header",
            reason: "not UTF-8".into(),
        })?;
        self.at += end + 1;
        Ok(line)
    }

    /// The value of `<field>: <value>`.
    fn field(&mut self, field: &'static str) -> Result<(usize, &'a str), FrameError> {
        let at = self.at;
        let line = self.line()?;
        match line.strip_prefix(field).and_then(|rest| rest.strip_prefix(": ")) {
            Some(value) => Ok((at, value)),
            None => Err(FrameError::Field {
                at,
                expected: field,
                found: line.chars().take(80).collect(),
            }),
        }
    }
}

fn value_error(at: usize, field: &'static str, reason: impl fmt::Display) -> FrameError {
    FrameError::Value {
        at,
        field,
        reason: reason.to_string(),
    }
}

fn guid(at: usize, field: &'static str, text: &str) -> Result<MachineGuid, FrameError> {
    text.parse().map_err(|e| value_error(at, field, e))
}

/// Decodes the frame at the start of `body`; returns it and the rest of the body.
pub fn decode(body: &[u8]) -> Result<(Frame<'_>, &[u8]), FrameError> {
    let mut r = Reader { body, at: 0 };
    let first = r.line().map_err(|e| match e {
        FrameError::LongLine { at } => FrameError::Format {
            at,
            line: String::from_utf8_lossy(&body[..body.len().min(40)]).into_owned(),
        },
        other => other,
    })?;
    match first.split_once(' ') {
        Some((FORMAT, version)) if version == VERSION.to_string() => {}
        Some((FORMAT, version)) => {
            return Err(FrameError::Version {
                at: 0,
                version: version.chars().take(20).collect(),
            })
        }
        _ => {
            return Err(FrameError::Format {
                at: 0,
                line: first.chars().take(40).collect(),
            })
        }
    }
    let (at, origin) = r.field("origin")?;
    let (origin_guid, origin_node) = origin
        .split_once(' ')
        .ok_or_else(|| value_error(at, "origin", "expected \"<GUID> <node name>\""))?;
    let origin = guid(at, "origin", origin_guid)?;
    valid_node_name(origin_node).map_err(|e| value_error(at, "origin", e))?;
    let (at, chain_text) = r.field("chain")?;
    let mut chain = Vec::new();
    for part in chain_text.split(',') {
        if chain.len() == MAX_CHAIN {
            return Err(value_error(
                at,
                "chain",
                format!("longer than {MAX_CHAIN} nodes (a loop?)"),
            ));
        }
        chain.push(guid(at, "chain", part)?);
    }
    if chain[0] != origin {
        return Err(value_error(at, "chain", "does not start with the origin"));
    }
    let (at, stream) = r.field("stream")?;
    let stream = uuid::Uuid::try_parse(stream)
        .ok()
        .filter(|_| stream.len() == 36)
        .ok_or_else(|| value_error(at, "stream", "not a UUID"))?;
    let (at, sequence) = r.field("sequence")?;
    let sequence: u64 = sequence
        .parse()
        .ok()
        .filter(|n| *n > 0)
        .ok_or_else(|| value_error(at, "sequence", "not a positive integer"))?;
    let (at, snapshot) = r.field("snapshot")?;
    let snapshot = SnapshotName::parse(snapshot).ok_or_else(|| value_error(at, "snapshot", "not a snapshot name"))?;
    let (at, count) = r.field("files")?;
    let count: usize = count
        .parse()
        .ok()
        .filter(|n| *n <= MAX_FILES)
        .ok_or_else(|| value_error(at, "files", format!("not a count of at most {MAX_FILES}")))?;
    let mut files: Vec<(&str, &[u8])> = Vec::with_capacity(count.min(64));
    for _ in 0..count {
        let (at, file) = r.field("file")?;
        let (name, len) = file
            .rsplit_once(' ')
            .ok_or_else(|| value_error(at, "file", "expected \"<name> <bytes>\""))?;
        valid_file_name(name).map_err(|e| value_error(at, "file", e))?;
        if files.iter().any(|(seen, _)| *seen == name) {
            return Err(value_error(at, "file", format!("{name:?} twice")));
        }
        let len: u64 = len
            .parse()
            .map_err(|_| value_error(at, "file", "length not a number"))?;
        let left = body.len() - r.at;
        if len >= left as u64 {
            return Err(FrameError::Truncated {
                at,
                name: name.to_owned(),
                claimed: len,
                left,
            });
        }
        let len = len as usize;
        let bytes = &body[r.at..r.at + len];
        if body[r.at + len] != b'\n' {
            return Err(value_error(
                r.at + len,
                "file",
                format!("{name:?} is not followed by a newline"),
            ));
        }
        r.at += len + 1;
        files.push((name, bytes));
    }
    let end_of_frame = r.at;
    let (at, claimed) = r.field("crc32")?;
    let actual = crc32fast::hash(&body[..end_of_frame]);
    if claimed != format!("{actual:08x}") {
        return Err(FrameError::Checksum {
            at,
            claimed: claimed.chars().take(16).collect(),
            actual,
        });
    }
    let header = ShipHeader {
        origin,
        origin_node: origin_node.to_owned(),
        chain,
        stream,
        sequence,
        snapshot,
    };
    Ok((Frame { header, files }, &body[r.at..]))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn header(sequence: u64) -> ShipHeader {
        let origin = MachineGuid::random();
        ShipHeader {
            origin,
            origin_node: "prober-1".into(),
            chain: vec![origin, MachineGuid::random()],
            stream: uuid::Uuid::new_v4(),
            sequence,
            snapshot: SnapshotName::parse("1700000000-ping-000000001").unwrap(),
        }
    }

    fn frame(files: &[(&str, &[u8])]) -> (ShipHeader, Vec<u8>) {
        let h = header(7);
        let mut out = Vec::new();
        encode(&h, files, &mut out);
        (h, out)
    }

    #[test]
    fn frames_round_trip_back_to_back_with_binary_files() {
        let a: &[u8] = b"spoolmon-ping 1 batch 1\n{\"x\":1}\n";
        let b: Vec<u8> = (0..=255u8).cycle().take(70_000).collect();
        let (h1, mut body) = frame(&[("ping.jsonl", a)]);
        let h2 = header(8);
        encode(
            &h2,
            &[("haproxy1_info", &b), ("haproxy1_stat", b"\n\n"), ("empty", b"")],
            &mut body,
        );
        let (f1, rest) = decode(&body).unwrap();
        assert_eq!(f1.header, h1);
        assert_eq!(f1.files, vec![("ping.jsonl", a)]);
        assert_eq!(f1.header.sender(), h1.chain[1]);
        assert_eq!(f1.header.hops(), 1);
        let (f2, rest) = decode(rest).unwrap();
        assert_eq!(f2.header, h2);
        assert_eq!(f2.files.len(), 3);
        assert_eq!(f2.files[0], ("haproxy1_info", &b[..]));
        assert_eq!(f2.files[2], ("empty", &b""[..]));
        assert!(rest.is_empty());
    }

    #[test]
    fn every_truncation_of_a_frame_is_refused() {
        let (_, body) = frame(&[("ping.jsonl", b"line one\nline two\n"), ("b", b"xyz")]);
        for len in 0..body.len() {
            assert!(decode(&body[..len]).is_err(), "truncated at {len} was accepted");
        }
        assert!(decode(&body).is_ok());
    }

    #[test]
    fn every_flipped_byte_is_refused() {
        let (_, body) = frame(&[("ping.jsonl", b"{\"order\":\"a/b\"}\n")]);
        for i in 0..body.len() {
            let mut bad = body.clone();
            bad[i] ^= 0x01;
            assert!(
                decode(&bad).is_err(),
                "flipped byte {i} ({:?}) was accepted",
                body[i] as char
            );
        }
    }

    #[test]
    fn hostile_headers_are_refused_with_their_cause() {
        let guid = MachineGuid::random();
        let ok_chain = format!("chain: {guid}\n");
        let cases: Vec<(String, &str)> = vec![
            ("GET / HTTP/1.1\r\n".into(), "not a shipped snapshot"),
            (format!("{FORMAT} 2\n"), "version 2"),
            (format!("{FORMAT} 1\norigin: {guid}\n"), "origin"),
            (format!("{FORMAT} 1\norigin: {guid} ../etc\n"), "node name"),
            (format!("{FORMAT} 1\norigin: {guid} a/b\n"), "not allowed in a node name"),
            (format!("{FORMAT} 1\norigin: nope x\n"), "not a GUID"),
            (format!("{FORMAT} 1\norigin: {guid} n\nchain: {}\n", MachineGuid::random()), "does not start with the origin"),
            (
                format!("{FORMAT} 1\norigin: {guid} n\nchain: {}\n", vec![guid.to_string(); MAX_CHAIN + 1].join(",")),
                "a loop?",
            ),
            (format!("{FORMAT} 1\norigin: {guid} n\n{ok_chain}stream: x\n"), "stream"),
            (
                format!("{FORMAT} 1\norigin: {guid} n\n{ok_chain}stream: {}\nsequence: 0\n", uuid::Uuid::new_v4()),
                "positive",
            ),
            (
                format!("{FORMAT} 1\norigin: {guid} n\n{ok_chain}stream: {}\nsequence: 1\nsnapshot: ../x\n", uuid::Uuid::new_v4()),
                "snapshot name",
            ),
            (
                format!(
                    "{FORMAT} 1\norigin: {guid} n\n{ok_chain}stream: {}\nsequence: 1\nsnapshot: 1\nfiles: 99999999999999999999\n",
                    uuid::Uuid::new_v4()
                ),
                "count",
            ),
            (
                format!(
                    "{FORMAT} 1\norigin: {guid} n\n{ok_chain}stream: {}\nsequence: 1\nsnapshot: 1\nfiles: 1\nfile: a/../x 1\nx\n",
                    uuid::Uuid::new_v4()
                ),
                "not allowed in a file name",
            ),
            (
                format!(
                    "{FORMAT} 1\norigin: {guid} n\n{ok_chain}stream: {}\nsequence: 1\nsnapshot: 1\nfiles: 1\nfile: .hidden 1\nx\n",
                    uuid::Uuid::new_v4()
                ),
                "does not start with '.'",
            ),
            (
                format!(
                    "{FORMAT} 1\norigin: {guid} n\n{ok_chain}stream: {}\nsequence: 1\nsnapshot: 1\nfiles: 1\nfile: a 18446744073709551615\nx\n",
                    uuid::Uuid::new_v4()
                ),
                "claims 18446744073709551615 bytes",
            ),
            (
                format!(
                    "{FORMAT} 1\norigin: {guid} n\n{ok_chain}stream: {}\nsequence: 1\nsnapshot: 1\nfiles: 2\nfile: a 1\nx\nfile: a 1\ny\n",
                    uuid::Uuid::new_v4()
                ),
                "twice",
            ),
            (format!("{FORMAT} 1\norigin: {guid} {}\n", "n".repeat(5000)), "longer than 4096"),
        ];
        for (text, cause) in cases {
            let e = decode(text.as_bytes()).unwrap_err().to_string();
            assert!(e.contains(cause), "{text:?}: {e}");
        }
    }

    #[test]
    fn a_huge_body_without_newlines_is_refused_after_one_line() {
        let body = vec![b'x'; 64 << 20];
        assert!(matches!(decode(&body), Err(FrameError::Format { .. })));
    }

    #[test]
    fn markers_and_received_names() {
        let h = header(42);
        let marker = encode_marker(&h);
        assert_eq!(decode_marker(&marker).unwrap(), h);
        let (_, with_file) = frame(&[("a", b"x")]);
        assert!(decode_marker(&with_file).is_err());
        let name = received_name(&h);
        assert!(name.as_str().starts_with("1700000000-from.prober-1."), "{name}");
        assert_eq!(name.epoch, 1_700_000_000);
        assert!(is_received_name(name.as_str()));
        assert!(!is_received_name("1700000000-ping-000000001"));
        assert!(!is_received_name("1700000000"));
        assert_ne!(received_name(&header(43)), name);
        // Frames may not plant the markers.
        for reserved in [SHIPPED_FILE, "APPLIED"] {
            let mut body = Vec::new();
            encode(&h, &[(reserved, b"")], &mut body);
            assert!(
                decode(&body).unwrap_err().to_string().contains("reserves"),
                "{reserved}"
            );
        }
    }

    #[test]
    fn received_orders_are_namespaced_by_their_node() {
        let id = crate::shared::measurement::OrderId::new("bench/o1").unwrap();
        assert_eq!(node_order_id("prober-1", &id).as_str(), "@prober-1/bench/o1");
    }

    #[test]
    fn node_names() {
        for good in ["prober-1", "lb01.example.com", "A_b"] {
            assert_eq!(valid_node_name(good), Ok(()));
        }
        for bad in ["", ".", "..", "-x", "a b", "a/b", "é", &"n".repeat(65)] {
            assert!(valid_node_name(bad).is_err(), "{bad:?}");
        }
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(body in proptest::collection::vec(any::<u8>(), 0..600)) {
            let _ = decode(&body);
        }

        #[test]
        fn arbitrary_files_round_trip(files in proptest::collection::vec(("[a-z0-9_]{1,20}", proptest::collection::vec(any::<u8>(), 0..300)), 0..6)) {
            let mut names = std::collections::HashSet::new();
            let files: Vec<(String, Vec<u8>)> = files.into_iter().filter(|(n, _)| names.insert(n.clone())).collect();
            let refs: Vec<(&str, &[u8])> = files.iter().map(|(n, b)| (n.as_str(), b.as_slice())).collect();
            let (h, body) = frame(&refs);
            let (f, rest) = decode(&body).unwrap();
            prop_assert_eq!(f.header, h);
            prop_assert_eq!(f.files, refs);
            prop_assert!(rest.is_empty());
        }
    }
}
