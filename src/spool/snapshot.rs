//! Snapshot names and the ping snapshot file format.
//!
//! A snapshot is a directory whose name sorts by time: `<unix-epoch>` (haproxystats layout, one
//! `<socket>_info` + `<socket>_stat` pair per HAProxy process) or `<unix-epoch>-<source>-<seq>`
//! (spoolmon collectors). A ping snapshot holds one file, `ping.jsonl`: a header line, then one
//! [`OrderResult`] per line, all JSON (see `spool-layout.md`).

use crate::measurement::OrderResult;
use serde::{Deserialize, Serialize};
use std::cmp::Ordering;
use std::fmt;
use std::io::{self, BufRead, BufReader, Read};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

/// The file inside a ping snapshot directory.
pub const PING_FILE: &str = "ping.jsonl";
/// The format name in a ping snapshot's header.
pub const PING_FORMAT: &str = "spoolmon-ping";
/// Largest ping snapshot file we read (a hostile or corrupt file must not exhaust memory).
pub const MAX_PING_FILE: u64 = 1 << 30;

/// A parsed snapshot directory name.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct SnapshotName {
    pub epoch: i64,
    name: String,
}

impl SnapshotName {
    /// Parses `<epoch>` or `<epoch>-<anything without '/'>`; `None` if the name is not a time.
    pub fn parse(name: &str) -> Option<SnapshotName> {
        let digits = name.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 || digits > 12 {
            return None;
        }
        let rest = &name[digits..];
        if !(rest.is_empty() || rest.starts_with('-')) || name.contains('/') {
            return None;
        }
        let epoch = name[..digits].parse().ok()?;
        Some(SnapshotName {
            epoch,
            name: name.to_owned(),
        })
    }

    /// `<epoch>-<source>-<seq>`, with `seq` zero-padded so names sort in creation order.
    pub fn new(epoch: i64, source: &str, seq: u64) -> SnapshotName {
        SnapshotName {
            epoch,
            name: format!("{epoch}-{source}-{seq:09}"),
        }
    }

    pub fn as_str(&self) -> &str {
        &self.name
    }
}

impl Ord for SnapshotName {
    fn cmp(&self, other: &Self) -> Ordering {
        self.epoch.cmp(&other.epoch).then_with(|| self.name.cmp(&other.name))
    }
}

impl PartialOrd for SnapshotName {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl fmt::Display for SnapshotName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name)
    }
}

/// First line of `ping.jsonl`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PingHeader {
    pub format: String,
    pub version: u32,
    /// Which batch produced it (probe kind, step, pings), for logs.
    pub batch: String,
    /// Number of result lines that follow (detects truncation).
    pub results: usize,
}

/// Why a ping snapshot cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum PingSnapshotError {
    #[error("cannot read {PING_FILE}: {0}")]
    Io(#[from] io::Error),
    #[error("{PING_FILE} is larger than {MAX_PING_FILE} bytes")]
    TooLarge,
    #[error("{PING_FILE} is not a regular file")]
    NotAFile,
    #[error("{PING_FILE} is empty")]
    Empty,
    #[error("{PING_FILE} line {line}: {message}")]
    Malformed { line: usize, message: String },
    #[error("{PING_FILE} is truncated: header announces {expected} results, found {found}")]
    Truncated { expected: usize, found: usize },
}

/// Most results [`decode_ping`] reserves room for before reading them.
const RESERVED_RESULTS: usize = 1024;

/// Serializes a ping snapshot.
pub fn encode_ping(batch: &str, results: &[OrderResult]) -> Vec<u8> {
    let header = PingHeader {
        format: PING_FORMAT.into(),
        version: 1,
        batch: batch.into(),
        results: results.len(),
    };
    let mut out = serde_json::to_vec(&header).expect("header serializes");
    out.push(b'\n');
    for result in results {
        serde_json::to_writer(&mut out, result).expect("result serializes");
        out.push(b'\n');
    }
    out
}

/// Reads `dir/ping.jsonl`.
pub fn read_ping(dir: &Path) -> Result<(PingHeader, Vec<OrderResult>), PingSnapshotError> {
    let path = dir.join(PING_FILE);
    // A FIFO or device here would block or never end: only regular files are read (and the
    // open does not follow a symlink to one).
    if !std::fs::symlink_metadata(&path)?.file_type().is_file() {
        return Err(PingSnapshotError::NotAFile);
    }
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(&path)?;
    if file.metadata()?.len() > MAX_PING_FILE {
        return Err(PingSnapshotError::TooLarge);
    }
    decode_ping(BufReader::new(file.take(MAX_PING_FILE)))
}

/// Parses a ping snapshot from `reader`.
pub fn decode_ping(reader: impl BufRead) -> Result<(PingHeader, Vec<OrderResult>), PingSnapshotError> {
    let mut lines = reader.lines();
    let malformed = |line: usize, e: &dyn fmt::Display| PingSnapshotError::Malformed {
        line,
        message: e.to_string(),
    };
    let first = lines.next().ok_or(PingSnapshotError::Empty)??;
    let header: PingHeader = serde_json::from_str(&first).map_err(|e| malformed(1, &e))?;
    if header.format != PING_FORMAT || header.version != 1 {
        return Err(malformed(
            1,
            &format!("unsupported format {:?} version {}", header.format, header.version),
        ));
    }
    // The header's count is the producer's word: reserving for it let a 70-byte file make a
    // 128 MiB allocation. Reserve for a typical batch; more results grow the vector as read.
    let mut results = Vec::with_capacity(header.results.min(RESERVED_RESULTS));
    for (index, line) in lines.enumerate() {
        let line = line?;
        let result: OrderResult = serde_json::from_str(&line).map_err(|e| malformed(index + 2, &e))?;
        if result.rtts.len() != result.pings as usize || result.step == 0 {
            return Err(malformed(index + 2, &"rtts length differs from pings, or step is 0"));
        }
        results.push(result);
    }
    if results.len() != header.results {
        return Err(PingSnapshotError::Truncated {
            expected: header.results,
            found: results.len(),
        });
    }
    Ok((header, results))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::measurement::{OrderId, RrdTemplate};

    fn result(id: &str) -> OrderResult {
        OrderResult {
            id: OrderId::new(id).unwrap(),
            time: 1_700_000_000,
            updated: 1_700_000_021,
            step: 20,
            pings: 3,
            template: RrdTemplate::Smokeping,
            rtts: vec![Some(0.001), None, Some(0.002)],
            telegraf: None,
        }
    }

    #[test]
    fn names_sort_by_time_then_sequence() {
        let mut names: Vec<_> = ["1700000020-ping-000000002", "1700000000", "1700000020-ping-000000001"]
            .iter()
            .map(|n| SnapshotName::parse(n).unwrap())
            .collect();
        names.sort();
        let sorted: Vec<_> = names.iter().map(|n| n.as_str()).collect();
        assert_eq!(
            sorted,
            ["1700000000", "1700000020-ping-000000001", "1700000020-ping-000000002"]
        );
    }

    #[test]
    fn names_that_are_not_times_are_rejected() {
        for bad in ["", "abc", "12abc", "-12", "1234567890123", ".tmp-1", "17/00"] {
            assert!(SnapshotName::parse(bad).is_none(), "{bad:?}");
        }
    }

    #[test]
    fn ping_snapshot_round_trips_including_odd_ids() {
        let results = vec![result("a/b"), result("we ird\n\"id\"/\u{e9}")];
        let bytes = encode_ping("fping/20/3", &results);
        let (header, back) = decode_ping(&bytes[..]).unwrap();
        assert_eq!(header.results, 2);
        assert_eq!(back, results);
    }

    #[test]
    fn truncated_and_garbage_snapshots_are_errors() {
        let bytes = encode_ping("b", &[result("a"), result("b")]);
        let cut = bytes.iter().rposition(|&b| b == b'{').unwrap();
        assert!(matches!(
            decode_ping(&bytes[..cut]),
            Err(PingSnapshotError::Truncated { .. })
        ));
        assert!(matches!(
            decode_ping(&bytes[..cut + 5]),
            Err(PingSnapshotError::Malformed { .. })
        ));
        assert!(matches!(decode_ping(&b""[..]), Err(PingSnapshotError::Empty)));
        assert!(decode_ping(&b"\xff\xfe\x00garbage"[..]).is_err());
        assert!(decode_ping(&b"{\"format\":\"other\",\"version\":1,\"batch\":\"\",\"results\":0}"[..]).is_err());
    }

    #[test]
    fn a_fifo_or_symlink_in_place_of_the_file_is_refused_without_blocking() {
        let dir = tempfile::tempdir().unwrap();
        nix::unistd::mkfifo(&dir.path().join(PING_FILE), nix::sys::stat::Mode::S_IRWXU).unwrap();
        assert!(matches!(read_ping(dir.path()), Err(PingSnapshotError::NotAFile)));
        let other = tempfile::tempdir().unwrap();
        std::fs::write(other.path().join("real"), encode_ping("b", &[result("a")])).unwrap();
        std::os::unix::fs::symlink(other.path().join("real"), other.path().join(PING_FILE)).unwrap();
        assert!(matches!(read_ping(other.path()), Err(PingSnapshotError::NotAFile)));
        std::fs::remove_file(other.path().join(PING_FILE)).unwrap();
        std::fs::rename(other.path().join("real"), other.path().join(PING_FILE)).unwrap();
        assert_eq!(read_ping(other.path()).unwrap().1, vec![result("a")]);
    }
}
