//! The bytes of a segment file: its name, its header, the framing and checksum of a record, and
//! the walk over a segment's records that recovery and `status` share.

use crate::spool::beneath::{Dir, Kind};
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;

/// First bytes of every segment file (format version 1).
pub const MAGIC: [u8; 8] = *b"SPOOLOB1";
/// Where the first record of a segment starts.
pub const SEGMENT_HEADER_LEN: u64 = MAGIC.len() as u64;
/// `[len u32][lines u32][appended unix ms u64][crc32 u32]`, little-endian.
pub const RECORD_HEADER_LEN: usize = 20;
const SEGMENT_SUFFIX: &str = ".seg";
const SEQ_DIGITS: usize = 20;

/// Bit 31 of the `lines` word: more records of the same batch follow this one.
const MORE_FOLLOWS: u32 = 1 << 31;
/// The most lines a record can count (the `lines` word's other 31 bits).
pub const MAX_RECORD_LINES: u32 = MORE_FOLLOWS - 1;

/// The fixed-size front of a record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RecordHeader {
    /// Payload bytes (whole lines).
    pub len: u32,
    /// Lines in the payload, at most [`MAX_RECORD_LINES`].
    pub lines: u32,
    /// More records of the same batch follow: a batch is whole only up to a record without it.
    pub more: bool,
    /// When the record was appended, unix milliseconds.
    pub appended_ms: u64,
    /// CRC-32 (IEEE) over the header's first 16 bytes and the payload.
    pub crc: u32,
}

impl RecordHeader {
    /// The header for `payload`, with its checksum. `lines` must be at most [`MAX_RECORD_LINES`].
    pub fn new(payload: &[u8], lines: u32, more: bool, appended_ms: u64) -> RecordHeader {
        debug_assert!(lines <= MAX_RECORD_LINES);
        let mut header = RecordHeader {
            len: payload.len() as u32,
            lines,
            more,
            appended_ms,
            crc: 0,
        };
        header.crc = header.checksum(payload);
        header
    }

    pub fn to_bytes(self) -> [u8; RECORD_HEADER_LEN] {
        let mut bytes = [0u8; RECORD_HEADER_LEN];
        bytes[..16].copy_from_slice(&self.checked_fields());
        bytes[16..].copy_from_slice(&self.crc.to_le_bytes());
        bytes
    }

    pub fn parse(bytes: &[u8; RECORD_HEADER_LEN]) -> RecordHeader {
        let word = |at: usize| u32::from_le_bytes(bytes[at..at + 4].try_into().expect("4 bytes"));
        RecordHeader {
            len: word(0),
            lines: word(4) & MAX_RECORD_LINES,
            more: word(4) & MORE_FOLLOWS != 0,
            appended_ms: u64::from_le_bytes(bytes[8..16].try_into().expect("8 bytes")),
            crc: word(16),
        }
    }

    /// True when `payload` is the one this header was written for.
    pub fn matches(&self, payload: &[u8]) -> bool {
        payload.len() == self.len as usize && self.checksum(payload) == self.crc
    }

    /// Header plus payload.
    pub fn record_len(&self) -> u64 {
        RECORD_HEADER_LEN as u64 + u64::from(self.len)
    }

    fn checked_fields(&self) -> [u8; 16] {
        let mut fields = [0u8; 16];
        fields[..4].copy_from_slice(&self.len.to_le_bytes());
        let flag = if self.more { MORE_FOLLOWS } else { 0 };
        fields[4..8].copy_from_slice(&(self.lines | flag).to_le_bytes());
        fields[8..].copy_from_slice(&self.appended_ms.to_le_bytes());
        fields
    }

    fn checksum(&self, payload: &[u8]) -> u32 {
        let mut hasher = crc32fast::Hasher::new();
        hasher.update(&self.checked_fields());
        hasher.update(payload);
        hasher.finalize()
    }
}

/// `00000000000000000042.seg`: zero-padded so that names sort like sequence numbers.
pub fn segment_name(seq: u64) -> String {
    format!("{seq:0SEQ_DIGITS$}{SEGMENT_SUFFIX}")
}

/// The sequence number of a segment file name; `None` for any other name.
pub fn parse_segment_name(name: &str) -> Option<u64> {
    let digits = name.strip_suffix(SEGMENT_SUFFIX)?;
    if digits.len() != SEQ_DIGITS || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// An entry of an outbox directory named like a segment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SegmentEntry {
    pub seq: u64,
    pub name: String,
    /// What the entry is (not followed): only a [`Kind::File`] can be a segment of ours.
    pub kind: Kind,
}

/// The entries of `dir` named like segments, oldest (lowest sequence number) first.
pub fn list_segments(dir: &Dir) -> io::Result<Vec<SegmentEntry>> {
    let mut segments = Vec::new();
    for (name, kind) in dir.entries()? {
        let Some(name) = name.to_str() else { continue };
        if let Some(seq) = parse_segment_name(name) {
            segments.push(SegmentEntry {
                seq,
                name: name.to_owned(),
                kind,
            });
        }
    }
    segments.sort_unstable_by_key(|entry| entry.seq);
    Ok(segments)
}

/// True when `file` starts with [`MAGIC`].
pub fn has_magic(file: &File) -> io::Result<bool> {
    let mut magic = [0u8; MAGIC.len()];
    match file.read_exact_at(&mut magic, 0) {
        Ok(()) => Ok(magic == MAGIC),
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Ok(false),
        Err(e) => Err(e),
    }
}

/// Reads the record header at `offset`.
pub fn read_header_at(file: &File, offset: u64) -> io::Result<RecordHeader> {
    let mut bytes = [0u8; RECORD_HEADER_LEN];
    file.read_exact_at(&mut bytes, offset)?;
    Ok(RecordHeader::parse(&bytes))
}

/// Where a walk over a segment stopped.
#[derive(Debug, PartialEq, Eq)]
pub struct WalkEnd {
    /// End of the last good record: everything before it is intact.
    pub valid_len: u64,
    /// Why the walk stopped before the end of the file, if it did.
    pub problem: Option<String>,
}

/// Visits the records of a segment `file_len` bytes long in order, with their offsets, until the
/// end or the first record that is incomplete or malformed. With `verify`, every payload is read
/// (one read per record) and its checksum checked; without, only headers are read. The records
/// of a batch are visited once its last record is found: a batch the file ends inside (the
/// writer stopped before its last record was written) is not visited and is where the walk
/// stops, as for a torn record.
pub fn walk_records(
    file: &File,
    file_len: u64,
    verify: bool,
    mut visit: impl FnMut(u64, &RecordHeader),
) -> io::Result<WalkEnd> {
    // The records of the batch being walked, until its last one.
    let mut batch: Vec<(u64, RecordHeader)> = Vec::new();
    let end = walk_whole_records(file, file_len, verify, |at, header| {
        batch.push((at, *header));
        if !header.more {
            for (at, header) in batch.drain(..) {
                visit(at, &header);
            }
        }
    })?;
    Ok(match batch.first() {
        // The unfinished batch goes with whatever stopped the walk, or is the reason itself.
        Some(&(start, _)) => WalkEnd {
            valid_len: start,
            problem: Some(
                end.problem
                    .unwrap_or_else(|| "the file ends inside a batch (its last record was never written)".to_owned()),
            ),
        },
        None => end,
    })
}

/// [`walk_records`] without the batches: every whole record.
fn walk_whole_records(
    file: &File,
    file_len: u64,
    verify: bool,
    mut visit: impl FnMut(u64, &RecordHeader),
) -> io::Result<WalkEnd> {
    let mut offset = SEGMENT_HEADER_LEN;
    let mut payload = Vec::new();
    while offset < file_len {
        let remaining = file_len - offset;
        if remaining < RECORD_HEADER_LEN as u64 {
            return Ok(stopped_at(offset, "incomplete record header"));
        }
        let header = read_header_at(file, offset)?;
        if header.len == 0 || header.record_len() > remaining {
            return Ok(stopped_at(offset, "record length runs past the end of the file"));
        }
        if verify {
            payload.resize(header.len as usize, 0);
            file.read_exact_at(&mut payload, offset + RECORD_HEADER_LEN as u64)?;
            if !header.matches(&payload) {
                return Ok(stopped_at(offset, "checksum mismatch"));
            }
        }
        visit(offset, &header);
        offset += header.record_len();
    }
    Ok(WalkEnd {
        valid_len: offset,
        problem: None,
    })
}

fn stopped_at(offset: u64, problem: &str) -> WalkEnd {
    WalkEnd {
        valid_len: offset,
        problem: Some(problem.to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trips_and_checksum_covers_fields_and_payload() {
        let header = RecordHeader::new(b"a 1 2\n", 1, false, 1_700_000_000_123);
        assert_eq!(RecordHeader::parse(&header.to_bytes()), header);
        assert!(header.matches(b"a 1 2\n"));
        assert!(!header.matches(b"a 1 3\n"));
        let mut other_lines = header;
        other_lines.lines = 2;
        assert!(!other_lines.matches(b"a 1 2\n"));
        let mut other_flag = header;
        other_flag.more = true;
        assert!(!other_flag.matches(b"a 1 2\n"), "the flag is checksummed");
    }

    #[test]
    fn the_more_flag_is_bit_31_of_the_lines_word_and_round_trips() {
        let header = RecordHeader::new(b"a 1 2\n", MAX_RECORD_LINES, true, 7);
        let bytes = header.to_bytes();
        assert_eq!(&bytes[4..8], &u32::MAX.to_le_bytes());
        assert_eq!(RecordHeader::parse(&bytes), header);
        let plain = RecordHeader::new(b"a 1 2\n", 3, false, 7).to_bytes();
        assert_eq!(
            &plain[4..8],
            &3_u32.to_le_bytes(),
            "a record of one batch is as in version 1"
        );
    }

    #[test]
    fn segment_names_sort_like_numbers_and_other_names_are_ignored() {
        assert_eq!(segment_name(42), "00000000000000000042.seg");
        assert_eq!(parse_segment_name(&segment_name(42)), Some(42));
        assert!(segment_name(9) < segment_name(10));
        for other in [
            "ack",
            ".tmp-1-ack",
            "42.seg",
            "0000000000000000004x.seg",
            "00000000000000000042.seg.tmp",
        ] {
            assert_eq!(parse_segment_name(other), None, "{other}");
        }
    }
}
