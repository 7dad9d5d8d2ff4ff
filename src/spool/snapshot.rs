//! Snapshot names and the ping snapshot file format.
//!
//! A snapshot is a directory whose name sorts by time: `<unix-epoch>` (haproxystats layout, one
//! `<socket>_info` + `<socket>_stat` pair per HAProxy process) or `<unix-epoch>-<source>-<seq>`
//! (spoolmon collectors). A ping snapshot holds one file, `ping.jsonl`: a header line, then one
//! [`OrderResult`] per line, all JSON (see `spool-layout.md`).
//!
//! `ping.jsonl` is written by whoever can write `incoming/`, so it is read as hostile input:
//! streamed line by line with every line bounded ([`MAX_LINE`]) while it is read (a huge file
//! without a newline costs at most one line of memory), the file bounded ([`MAX_PING_FILE`]) and
//! the number of results bounded ([`PingBounds::max_results`]) before anything is parsed, and
//! every result validated ([`PingBounds::check`]) before any of it is used: a snapshot with one
//! bad line is refused whole, with a reason that names the line, the order and the bound. The
//! optional `failure` of a result (a run that could not measure) is bounded there too, and made
//! one line without control characters as it is read, before a listing or a log shows it.

use crate::shared::measurement::{failure_reason, OrderResult, MAX_FAILURE_LEN};
use crate::spool::beneath::Dir;
use serde::{Deserialize, Serialize};
use std::cmp::Ordering;
use std::fmt;
use std::io::{self, BufRead, BufReader, Read};

/// The file inside a ping snapshot directory.
pub const PING_FILE: &str = "ping.jsonl";
/// The format name in a ping snapshot's header.
pub const PING_FORMAT: &str = "spoolmon-ping";
/// Largest `ping.jsonl` read (64 MiB; a full batch of 1,000 orders x 1,000 pings is ~25 MiB):
/// a larger file is refused from its size alone, without reading it.
pub const MAX_PING_FILE: u64 = 64 << 20;
/// Longest line of `ping.jsonl` (256 KiB, newline included): room for an order id of a few KiB,
/// a 64 KiB `telegraf` map (the limit of order files) escaped, and 1,000 RTTs of 32 bytes.
/// Enforced while reading: a longer line is refused after reading this much of it.
pub const MAX_LINE: usize = 256 << 10;
/// Largest `step` of a result (seconds; the limit of orders).
pub const MAX_STEP: u32 = 86_400;
/// Largest `pings` of a result (the limit of orders).
pub const MAX_PINGS: u32 = 1_000;
/// Largest round-trip time of a result (seconds): the maximum of the RRD's data sources.
pub const MAX_RTT: f64 = crate::shared::measurement::MAX_RTT_SECONDS;

/// Longest snapshot name accepted (bytes); a longer one is an invalid entry.
pub const MAX_NAME: usize = 200;

/// A parsed snapshot directory name.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct SnapshotName {
    pub epoch: i64,
    name: String,
}

impl SnapshotName {
    /// Parses `<epoch>` or `<epoch>-<anything without '/'>`; `None` if the name is not a time.
    pub fn parse(name: &str) -> Option<SnapshotName> {
        // Room for the suffixes spoolmon adds (`.<n>`, `.REASON`) within a 255-byte file name.
        if name.len() > MAX_NAME {
            return None;
        }
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

/// What a ping snapshot may hold: the accepted window of result times around `now` and the
/// number of results (from the config: `result-max-age`, `result-max-future`, `max-batch`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PingBounds {
    /// Unix seconds the window is centred on (the time of reading).
    pub now: i64,
    /// Oldest accepted `time`: this many seconds before `now`.
    pub max_age: u64,
    /// Newest accepted `time` and `updated`: this many seconds after `now`.
    pub max_future: u64,
    /// Most results in one snapshot.
    pub max_results: usize,
}

impl PingBounds {
    /// The defaults of the config keys (7 days back, 300 s ahead, 4 x the default max-batch).
    pub const DEFAULT_MAX_AGE: u64 = 7 * 86_400;
    pub const DEFAULT_MAX_FUTURE: u64 = 300;
    pub const DEFAULT_MAX_RESULTS: usize = 4_000;

    /// The default bounds at `now`.
    pub fn at(now: i64) -> PingBounds {
        PingBounds {
            now,
            max_age: Self::DEFAULT_MAX_AGE,
            max_future: Self::DEFAULT_MAX_FUTURE,
            max_results: Self::DEFAULT_MAX_RESULTS,
        }
    }

    /// The accepted range of `time`, inclusive.
    pub fn window(&self) -> (i64, i64) {
        let age = i64::try_from(self.max_age).unwrap_or(i64::MAX);
        let future = i64::try_from(self.max_future).unwrap_or(i64::MAX);
        (self.now.saturating_sub(age), self.now.saturating_add(future))
    }

    /// Why `result` is out of bounds, if it is: step, pings, RTT count and values, time window,
    /// `updated` (not before `time`, not in the future), and for a failed run its reason (not
    /// empty, at most [`MAX_FAILURE_LEN`] bytes, no round-trip time beside it).
    pub fn check(&self, result: &OrderResult) -> Result<(), String> {
        if !(1..=MAX_STEP).contains(&result.step) {
            return Err(format!("step {} is outside 1..={MAX_STEP} seconds", result.step));
        }
        if !(1..=MAX_PINGS).contains(&result.pings) {
            return Err(format!("pings {} is outside 1..={MAX_PINGS}", result.pings));
        }
        if result.rtts.len() != result.pings as usize {
            return Err(format!(
                "{} round-trip times for {} pings (must be equal)",
                result.rtts.len(),
                result.pings
            ));
        }
        if let Some((index, rtt)) = result.rtts.iter().enumerate().find_map(|(i, rtt)| {
            rtt.filter(|v| !(v.is_finite() && (0.0..=MAX_RTT).contains(v)))
                .map(|v| (i, v))
        }) {
            return Err(format!(
                "round-trip time {rtt:e} (ping {}) is outside 0..={MAX_RTT} seconds",
                index + 1
            ));
        }
        let (oldest, newest) = self.window();
        if result.time < oldest || result.time > newest {
            return Err(format!(
                "time {} is outside the accepted window {oldest}..={newest} (now {} - result-max-age {} s .. now + result-max-future {} s)",
                result.time, self.now, self.max_age, self.max_future
            ));
        }
        if result.updated < result.time || result.updated > newest {
            return Err(format!(
                "updated {} is before its time {} or after {newest} (now + result-max-future)",
                result.updated, result.time
            ));
        }
        if let Some(reason) = &result.failure {
            if reason.trim().is_empty() {
                return Err("failure reason is empty".into());
            }
            if reason.len() > MAX_FAILURE_LEN {
                return Err(format!(
                    "failure reason of {} bytes is longer than {MAX_FAILURE_LEN}",
                    reason.len()
                ));
            }
            if result.rtts.iter().any(Option::is_some) {
                return Err("a failed run (failure set) carries round-trip times".into());
            }
        }
        Ok(())
    }
}

/// Why a ping snapshot cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum PingSnapshotError {
    #[error("cannot read {PING_FILE}: {0}")]
    Io(#[from] io::Error),
    #[error("{PING_FILE} is too large: {size} bytes, the limit is {MAX_PING_FILE}")]
    TooLarge { size: u64 },
    #[error("{PING_FILE} is not a regular file")]
    NotAFile,
    #[error("{PING_FILE} is empty")]
    Empty,
    #[error("{PING_FILE} line {line}: line too long (more than {MAX_LINE} bytes)")]
    LineTooLong { line: usize },
    #[error("{PING_FILE} line {line}: {message}")]
    Malformed { line: usize, message: String },
    #[error("{PING_FILE} announces {announced} results, more than the limit of {limit}")]
    TooManyResults { announced: usize, limit: usize },
    #[error("{PING_FILE} line {line}: order {id:?}: {reason}")]
    OutOfBounds { line: usize, id: String, reason: String },
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

/// Reads `ping.jsonl` of the snapshot directory `dir` within `bounds`.
pub fn read_ping(dir: &Dir, bounds: &PingBounds) -> Result<(PingHeader, Vec<OrderResult>), PingSnapshotError> {
    // A symlink, FIFO or device here would lead elsewhere, block or never end: only regular
    // files are opened (without following a symlink, without blocking).
    let file = dir.open_read(PING_FILE).map_err(|e| match e.kind() {
        io::ErrorKind::InvalidData => PingSnapshotError::NotAFile,
        _ => PingSnapshotError::Io(e),
    })?;
    let size = file.metadata()?.len();
    if size > MAX_PING_FILE {
        return Err(PingSnapshotError::TooLarge { size });
    }
    // The file may grow after the check: reading stops at the limit all the same.
    let reader = BufReader::new(file.take(MAX_PING_FILE + 1));
    decode_ping(reader, bounds)
}

/// Reads one line of at most [`MAX_LINE`] bytes into `buf` (cleared first, newline removed).
/// `Ok(false)` at the end of the input.
fn read_line(reader: &mut impl BufRead, buf: &mut Vec<u8>, line: usize) -> Result<bool, PingSnapshotError> {
    buf.clear();
    let read = reader.by_ref().take(MAX_LINE as u64 + 1).read_until(b'\n', buf)?;
    if read == 0 {
        return Ok(false);
    }
    if buf.last() == Some(&b'\n') {
        buf.pop();
    } else if buf.len() > MAX_LINE {
        return Err(PingSnapshotError::LineTooLong { line });
    }
    Ok(true)
}

/// Parses a ping snapshot from `reader` (streamed, one bounded line at a time) and validates
/// every result against `bounds`. Either every result is good, or the error names the first
/// bad line.
pub fn decode_ping(
    mut reader: impl BufRead,
    bounds: &PingBounds,
) -> Result<(PingHeader, Vec<OrderResult>), PingSnapshotError> {
    let malformed = |line: usize, e: &dyn fmt::Display| PingSnapshotError::Malformed {
        line,
        message: e.to_string(),
    };
    let mut buf = Vec::new();
    if !read_line(&mut reader, &mut buf, 1)? {
        return Err(PingSnapshotError::Empty);
    }
    let header: PingHeader = serde_json::from_slice(&buf).map_err(|e| malformed(1, &e))?;
    if header.format != PING_FORMAT || header.version != 1 {
        return Err(malformed(
            1,
            &format!("unsupported format {:?} version {}", header.format, header.version),
        ));
    }
    if header.results > bounds.max_results {
        return Err(PingSnapshotError::TooManyResults {
            announced: header.results,
            limit: bounds.max_results,
        });
    }
    // The header's count is the producer's word: reserving for it let a 70-byte file make a
    // 128 MiB allocation. Reserve for a typical batch; more results grow the vector as read.
    let mut results = Vec::with_capacity(header.results.min(RESERVED_RESULTS));
    let mut line = 1;
    loop {
        line += 1;
        if !read_line(&mut reader, &mut buf, line)? {
            break;
        }
        if results.len() == header.results {
            // More lines than announced: the header is wrong, or lines were appended.
            return Err(malformed(
                line,
                &format!("more result lines than the {} the header announces", header.results),
            ));
        }
        let mut result: OrderResult = serde_json::from_slice(&buf).map_err(|e| malformed(line, &e))?;
        bounds.check(&result).map_err(|reason| PingSnapshotError::OutOfBounds {
            line,
            id: result.id.to_string(),
            reason,
        })?;
        // Shown in listings, status and logs: one line without control characters.
        if let Some(reason) = result.failure.as_mut() {
            *reason = failure_reason(reason);
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
    use crate::shared::measurement::OrderId;

    /// Bounds centred a minute after the results of [`result`].
    fn bounds() -> PingBounds {
        PingBounds::at(1_700_000_060)
    }

    fn result(id: &str) -> OrderResult {
        OrderResult::builder(OrderId::new(id).unwrap(), 1_700_000_000)
            .updated(1_700_000_021)
            .rtts([Some(0.001), None, Some(0.002)])
            .build()
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
        let (header, back) = decode_ping(&bytes[..], &bounds()).unwrap();
        assert_eq!(header.results, 2);
        assert_eq!(back, results);
    }

    #[test]
    fn truncated_and_garbage_snapshots_are_errors() {
        let bytes = encode_ping("b", &[result("a"), result("b")]);
        let cut = bytes.iter().rposition(|&b| b == b'{').unwrap();
        assert!(matches!(
            decode_ping(&bytes[..cut], &bounds()),
            Err(PingSnapshotError::Truncated { .. })
        ));
        assert!(matches!(
            decode_ping(&bytes[..cut + 5], &bounds()),
            Err(PingSnapshotError::Malformed { .. })
        ));
        assert!(matches!(
            decode_ping(&b""[..], &bounds()),
            Err(PingSnapshotError::Empty)
        ));
        assert!(decode_ping(&b"\xff\xfe\x00garbage"[..], &bounds()).is_err());
        assert!(decode_ping(
            &b"{\"format\":\"other\",\"version\":1,\"batch\":\"\",\"results\":0}"[..],
            &bounds()
        )
        .is_err());
    }

    #[test]
    fn a_fifo_or_symlink_in_place_of_the_file_is_refused_without_blocking() {
        let dir = tempfile::tempdir().unwrap();
        nix::unistd::mkfifo(&dir.path().join(PING_FILE), nix::sys::stat::Mode::S_IRWXU).unwrap();
        let held = Dir::open(dir.path()).unwrap();
        assert!(matches!(read_ping(&held, &bounds()), Err(PingSnapshotError::NotAFile)));
        let other = tempfile::tempdir().unwrap();
        std::fs::write(other.path().join("real"), encode_ping("b", &[result("a")])).unwrap();
        std::os::unix::fs::symlink(other.path().join("real"), other.path().join(PING_FILE)).unwrap();
        let held = Dir::open(other.path()).unwrap();
        assert!(matches!(read_ping(&held, &bounds()), Err(PingSnapshotError::NotAFile)));
        std::fs::remove_file(other.path().join(PING_FILE)).unwrap();
        std::fs::rename(other.path().join("real"), other.path().join(PING_FILE)).unwrap();
        assert_eq!(read_ping(&held, &bounds()).unwrap().1, vec![result("a")]);
    }

    /// The reason `decode_ping` gives for a snapshot holding `bad` after one good result.
    fn refusal(bad: &OrderResult) -> String {
        let bytes = encode_ping("b", &[result("good"), bad.clone()]);
        match decode_ping(&bytes[..], &bounds()) {
            Err(e @ PingSnapshotError::OutOfBounds { line: 3, .. }) => e.to_string(),
            other => panic!("{bad:?} not refused as out of bounds on line 3: {other:?}"),
        }
    }

    #[test]
    fn results_outside_the_bounds_are_refused_naming_the_order_and_the_bound() {
        let mut future = result("x/future");
        future.time = 4_102_444_800; // 2100-01-01
        future.updated = future.time + 20;
        let reason = refusal(&future);
        assert!(
            reason.contains("\"x/future\"")
                && reason.contains("time 4102444800")
                && reason.contains("1699395260..=1700000360"),
            "{reason}"
        );
        let mut negative = result("x/negative");
        negative.time = -100;
        assert!(refusal(&negative).contains("time -100 is outside the accepted window"));
        let mut step = result("x/step");
        step.step = 1 << 31;
        assert!(refusal(&step).contains("step 2147483648 is outside 1..=86400"));
        let mut pings = result("x/pings");
        pings.pings = 2000;
        pings.rtts = vec![None; 2000];
        assert!(refusal(&pings).contains("pings 2000 is outside 1..=1000"));
        let mut huge = result("x/huge");
        huge.rtts[0] = Some(1e308);
        assert!(refusal(&huge).contains("round-trip time 1e308 (ping 1) is outside 0..=180"));
        let mut negative_rtt = result("x/negative-rtt");
        negative_rtt.rtts[2] = Some(-0.5);
        assert!(refusal(&negative_rtt).contains("(ping 3)"));
        let mut short = result("x/short");
        short.rtts.pop();
        assert!(refusal(&short).contains("2 round-trip times for 3 pings"));
        let mut early = result("x/updated");
        early.updated = early.time - 1;
        assert!(refusal(&early).contains("updated 1699999999 is before its time"));
        let mut zero = result("x/zero");
        zero.step = 0;
        assert!(refusal(&zero).contains("step 0"));
    }

    fn failed(id: &str, reason: &str) -> OrderResult {
        OrderResult::builder(OrderId::new(id).unwrap(), 1_700_000_000)
            .updated(1_700_000_021)
            .rtts([None, None, None])
            .failure(reason)
            .build()
    }

    #[test]
    fn a_failed_run_round_trips_and_snapshots_without_the_field_still_read() {
        let results = vec![
            result("a"),
            failed("b", "cannot run /usr/bin/nosuch: No such file or directory"),
        ];
        let bytes = encode_ping("b", &results);
        assert_eq!(decode_ping(&bytes[..], &bounds()).unwrap().1, results);
        let text = String::from_utf8(bytes).unwrap();
        let measured_line = text.lines().nth(1).unwrap();
        assert!(!measured_line.contains("failure"), "{measured_line}");
        // A line as written before the field existed.
        let old = "{\"format\":\"spoolmon-ping\",\"version\":1,\"batch\":\"b\",\"results\":1}\n\
                   {\"id\":\"a\",\"time\":1700000000,\"updated\":1700000021,\"step\":20,\"pings\":1,\
                   \"template\":\"smokeping\",\"rtts\":[0.001]}\n";
        let (_, back) = decode_ping(old.as_bytes(), &bounds()).unwrap();
        assert_eq!(back[0].failure, None);
    }

    #[test]
    fn hostile_failure_reasons_are_refused_or_made_one_clean_line() {
        let huge = refusal(&failed("x/huge", &"x".repeat(MAX_FAILURE_LEN + 1)));
        assert!(
            huge.contains("failure reason of 1025 bytes is longer than 1024"),
            "{huge}"
        );
        assert!(refusal(&failed("x/empty", " \n ")).contains("failure reason is empty"));
        let mut both = failed("x/both", "cannot run");
        both.rtts[1] = Some(0.001);
        assert!(refusal(&both).contains("carries round-trip times"));
        // Control characters and terminal escapes: accepted, shown as spaces.
        let bytes = encode_ping("b", &[failed("x/escape", "bad\u{1b}[2J\r\nline\u{7}\u{202e}end")]);
        let (_, back) = decode_ping(&bytes[..], &bounds()).unwrap();
        assert_eq!(back[0].failure.as_deref(), Some("bad [2J line end"));
        // A failure that is not a string is malformed.
        let text = String::from_utf8(encode_ping("b", &[failed("x/type", "r")])).unwrap();
        let bad = text.replace("\"failure\":\"r\"", "\"failure\":{\"a\":1}");
        assert!(matches!(
            decode_ping(bad.as_bytes(), &bounds()),
            Err(PingSnapshotError::Malformed { line: 2, .. })
        ));
    }

    #[test]
    fn counts_beyond_their_types_and_non_finite_numbers_are_malformed() {
        let good = String::from_utf8(encode_ping("b", &[result("a")])).unwrap();
        for (from, to) in [
            ("\"step\":20", "\"step\":4294967296"),
            ("\"pings\":3", "\"pings\":-3"),
            ("\"time\":1700000000", "\"time\":1e400"),
            ("0.001", "NaN"),
        ] {
            assert!(good.contains(from), "{from}");
            let bad = good.replace(from, to);
            assert!(
                matches!(
                    decode_ping(bad.as_bytes(), &bounds()),
                    Err(PingSnapshotError::Malformed { line: 2, .. })
                ),
                "{to}"
            );
        }
    }

    #[test]
    fn more_results_than_the_limit_are_refused_from_the_header() {
        let bytes = encode_ping("b", &[result("a"), result("b"), result("c")]);
        let tight = PingBounds {
            max_results: 2,
            ..bounds()
        };
        assert!(matches!(
            decode_ping(&bytes[..], &tight),
            Err(PingSnapshotError::TooManyResults { announced: 3, limit: 2 })
        ));
    }

    /// Endless bytes without a newline after a valid header; counts what was read.
    struct Endless {
        header: Vec<u8>,
        served: std::rc::Rc<std::cell::Cell<usize>>,
    }

    impl Read for Endless {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let at = self.served.get();
            let n = buf.len();
            for (i, byte) in buf.iter_mut().enumerate() {
                *byte = self.header.get(at + i).copied().unwrap_or(b'x');
            }
            self.served.set(at + n);
            Ok(n)
        }
    }

    #[test]
    fn a_line_without_end_is_refused_after_reading_one_line_limit() {
        let served = std::rc::Rc::new(std::cell::Cell::new(0));
        let header = encode_ping("b", &[result("a")]);
        let header = header[..=header.iter().position(|&b| b == b'\n').unwrap()].to_vec();
        let reader = BufReader::new(Endless {
            header,
            served: served.clone(),
        });
        let err = decode_ping(reader, &bounds()).unwrap_err();
        assert!(matches!(err, PingSnapshotError::LineTooLong { line: 2 }), "{err}");
        assert!(err.to_string().contains("line too long"), "{err}");
        // One line limit, plus at most one BufReader buffer beyond it (8 KiB) and the header.
        assert!(served.get() <= MAX_LINE + 2 * 8192, "read {} bytes", served.get());
    }

    #[test]
    fn a_sparse_file_beyond_the_size_limit_is_refused_without_reading_it() {
        let dir = tempfile::tempdir().unwrap();
        let file = std::fs::File::create(dir.path().join(PING_FILE)).unwrap();
        file.set_len(1 << 30).unwrap();
        let held = Dir::open(dir.path()).unwrap();
        let err = read_ping(&held, &bounds()).unwrap_err();
        assert!(
            matches!(err, PingSnapshotError::TooLarge { size } if size == 1 << 30),
            "{err}"
        );
        assert!(err.to_string().contains("too large"), "{err}");
    }

    #[test]
    fn mutated_snapshots_never_panic_and_never_yield_a_result_out_of_bounds() {
        let mut wide = result("a/b");
        wide.telegraf = Some(crate::shared::measurement::TelegrafMeta {
            measurement_name: "m".into(),
            tags: [("k".to_string(), "v".to_string())].into(),
        });
        let good = encode_ping("b", &[result("x"), wide, result("z")]);
        // xorshift64: deterministic, no dependency.
        let mut state = 0x9e37_79b9_7f4a_7c15_u64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let interesting: &[&[u8]] = &[
            b"-",
            b"9",
            b"e308",
            b"null",
            b"\n",
            b"\"",
            b"1e400",
            b"4294967296",
            b",",
            b"0.5",
        ];
        let mut accepted = 0;
        for _ in 0..5_000 {
            let mut bytes = good.clone();
            for _ in 0..1 + next() % 4 {
                if bytes.is_empty() {
                    break;
                }
                let at = (next() % bytes.len() as u64) as usize;
                match next() % 4 {
                    0 => bytes[at] = next() as u8,
                    1 => {
                        let piece = interesting[(next() % interesting.len() as u64) as usize];
                        bytes.splice(at..at, piece.iter().copied());
                    }
                    2 => {
                        bytes.remove(at);
                    }
                    _ => bytes.truncate(at),
                }
            }
            if let Ok((header, results)) = decode_ping(&bytes[..], &bounds()) {
                accepted += 1;
                assert_eq!(header.results, results.len());
                for r in &results {
                    assert_eq!(bounds().check(r), Ok(()), "{r:?}");
                }
            }
        }
        // Some mutations are harmless (a digit of an RTT): the parser is exercised both ways.
        assert!(accepted > 0);
    }
}
