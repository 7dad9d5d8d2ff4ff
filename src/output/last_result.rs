//! The `output/<id>/last_result` file: the newest result of one order in pingmachine's format.
//!
//! Owns `output/<id>/last_result`. Format (pingmachine's, byte for byte), eight lines, each
//! `key: value\n`, in this order, no trailing spaces:
//!
//! ```text
//! time: 1310116500
//! updated: 1310116524
//! step: 20
//! pings: 1
//! loss: 0
//! min: 5.700000e-04
//! median: 5.700000e-04
//! max: 5.700000e-04
//! ```
//!
//! `time` is the start of the step in which the pings were sent (as pingmachine), `updated` when
//! the result was collected, `loss` a count of lost pings, `min`/`median`/`max` round-trip times in
//! seconds printed like C's `%.6e`, or `~` when nothing answered. The median is the upper median.
//! A run whose probe could not measure the order (a result with `failure`) does not replace the
//! file: it keeps the newest measured result, whose `time` and `updated` tell how old it is
//! (pingmachine writes nothing for such a run either; a `loss` there would be invented).
//!
//! Invariant: the new content is staged in `.last_result.next` and switched in by an atomic
//! exchange (see `spool::atomic::StagedFile`), so a reader sees the old or the new content, never
//! a missing or partial file (pingmachine unlinked it first). Nothing is fsynced here: the caller
//! syncs the filesystem before and after committing a whole batch.
//!
//! [`read`] reads it back for `spoolmon orders --wide`, through the `output/` directory's
//! descriptor: no symlink followed on the way or at the end, a FIFO or device refused before
//! anything is read (opened non-blocking), at most [`MAX_LEN`] bytes read.

use crate::shared::measurement::OrderId;
use crate::shared::measurement::OrderResult;
use crate::shared::stats::PingStats;
use crate::spool::atomic::StagedFile;
use crate::spool::beneath::{Dir, Kind};
use std::fmt::Write as _;
use std::io;
use std::path::Path;

/// Name of the file inside `output/<id>/`.
pub const FILE_NAME: &str = "last_result";

/// Texts longer than this are not a `last_result` file (eight short lines).
pub const MAX_LEN: usize = 1024;

/// Why [`read`] has no result for an order.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// No `output/<id>/last_result` (the order was never measured, or `output/` is absent).
    #[error("not measured yet")]
    Missing,
    #[error("last_result is a symlink (not followed)")]
    Symlink,
    #[error("last_result is not a regular file")]
    NotRegular,
    #[error("last_result is larger than {MAX_LEN} bytes")]
    TooLarge,
    #[error("last_result is not UTF-8")]
    NotText,
    #[error(transparent)]
    Malformed(#[from] LastResultParseError),
    #[error("cannot read last_result: {0}")]
    Io(io::Error),
}

/// Reads `<id>/last_result` below `output` (the `output/` directory): never follows a symlink,
/// never blocks on a FIFO, reads at most [`MAX_LEN`] + 1 bytes, parses strictly ([`parse`]).
pub fn read(output: &Dir, id: &OrderId) -> Result<LastResult, ReadError> {
    use std::io::Read;
    let dir = match output.open_dir(id.as_path()) {
        Ok(dir) => dir,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(ReadError::Missing),
        Err(e) => return Err(ReadError::Io(e)),
    };
    match dir.kind(FILE_NAME).map_err(ReadError::Io)? {
        None => return Err(ReadError::Missing),
        Some(Kind::Symlink) => return Err(ReadError::Symlink),
        Some(Kind::File) => {}
        Some(_) => return Err(ReadError::NotRegular),
    }
    // The entry may be swapped between the look and the open: the open refuses symlinks and
    // does not block, and the opened file's own type is checked again.
    let file = match dir.open_file_beneath(FILE_NAME) {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(ReadError::Missing),
        Err(e) => return Err(ReadError::Io(e)),
    };
    let meta = file.metadata().map_err(ReadError::Io)?;
    if !meta.file_type().is_file() {
        return Err(ReadError::NotRegular);
    }
    if meta.len() > MAX_LEN as u64 {
        return Err(ReadError::TooLarge);
    }
    let mut bytes = Vec::with_capacity(MAX_LEN + 1);
    file.take(MAX_LEN as u64 + 1)
        .read_to_end(&mut bytes)
        .map_err(ReadError::Io)?;
    if bytes.len() > MAX_LEN {
        return Err(ReadError::TooLarge);
    }
    let text = String::from_utf8(bytes).map_err(|_| ReadError::NotText)?;
    Ok(parse(&text)?)
}

/// The content of a `last_result` file.
#[derive(Clone, Debug, PartialEq)]
pub struct LastResult {
    pub time: i64,
    pub updated: i64,
    pub step: u32,
    pub pings: u32,
    pub loss: u32,
    pub min: Option<f64>,
    pub median: Option<f64>,
    pub max: Option<f64>,
}

/// Why a text is not a well-formed `last_result` file.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum LastResultParseError {
    #[error("last_result is {0} bytes, more than a last_result file can be")]
    TooLong(usize),
    #[error("last_result does not end with a newline")]
    MissingFinalNewline,
    #[error("last_result line {line}: expected `{expected}: <value>`, found {found:?}")]
    UnexpectedLine {
        line: usize,
        expected: &'static str,
        found: String,
    },
    #[error("last_result line {line}: {key} value {value:?} is not valid")]
    BadValue {
        line: usize,
        key: &'static str,
        value: String,
    },
    #[error("last_result has {0} lines, expected 8")]
    WrongLineCount(usize),
    #[error("last_result says loss {loss} of {pings} pings")]
    LossAbovePings { loss: u32, pings: u32 },
}

const KEYS: [&str; 8] = ["time", "updated", "step", "pings", "loss", "min", "median", "max"];

/// The `last_result` text of `result`.
pub fn format(result: &OrderResult) -> String {
    let stats = PingStats::from_rtts(&result.rtts);
    let mut text = String::with_capacity(160);
    // Writing into a String cannot fail.
    let _ = write!(
        text,
        "time: {}\nupdated: {}\nstep: {}\npings: {}\nloss: {}\nmin: {}\nmedian: {}\nmax: {}\n",
        result.time,
        result.updated,
        result.step,
        result.pings,
        result.pings.saturating_sub(stats.sorted.len() as u32),
        optional_value(stats.min()),
        optional_value(stats.median()),
        optional_value(stats.max()),
    );
    text
}

/// Writes the new `dir/last_result` under a temporary name; the caller syncs the filesystem and
/// then commits it (see [`StagedFile`]), so the content is durable before it becomes visible.
pub fn stage(dir: &Path, result: &OrderResult) -> io::Result<StagedFile> {
    let target = dir.join(FILE_NAME);
    let text = format(result);
    // The directory almost always exists: create it only when staging says it is missing
    // (one failing mkdir per update per order showed up in profiles).
    match StagedFile::stage(&target, text.as_bytes()) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            std::fs::create_dir_all(dir)?;
            StagedFile::stage(&target, text.as_bytes())
        }
        staged => staged,
    }
}

/// Reads a `last_result` text strictly: exactly the eight lines in pingmachine's order.
pub fn parse(text: &str) -> Result<LastResult, LastResultParseError> {
    if text.len() > MAX_LEN {
        return Err(LastResultParseError::TooLong(text.len()));
    }
    let body = text
        .strip_suffix('\n')
        .ok_or(LastResultParseError::MissingFinalNewline)?;
    let lines: Vec<&str> = body.split('\n').collect();
    if lines.len() != KEYS.len() {
        return Err(LastResultParseError::WrongLineCount(lines.len()));
    }
    let mut values = [""; 8];
    for (index, (line, key)) in lines.iter().zip(KEYS).enumerate() {
        values[index] = line
            .strip_prefix(key)
            .and_then(|rest| rest.strip_prefix(": "))
            .filter(|value| !value.is_empty() && value.trim() == *value)
            .ok_or_else(|| LastResultParseError::UnexpectedLine {
                line: index + 1,
                expected: key,
                found: (*line).to_string(),
            })?;
    }
    let parsed = LastResult {
        time: parse_integer(values[0], 0)?,
        updated: parse_integer(values[1], 1)?,
        step: parse_integer(values[2], 2)?,
        pings: parse_integer(values[3], 3)?,
        loss: parse_integer(values[4], 4)?,
        min: parse_value(values[5], 5)?,
        median: parse_value(values[6], 6)?,
        max: parse_value(values[7], 7)?,
    };
    if parsed.loss > parsed.pings {
        return Err(LastResultParseError::LossAbovePings {
            loss: parsed.loss,
            pings: parsed.pings,
        });
    }
    Ok(parsed)
}

/// `value` as C's `printf("%.6e")` prints it, e.g. `5.700000e-04`, `1.000000e+00`.
pub fn format_c_exponent(value: f64) -> String {
    if value.is_nan() {
        return "nan".to_string();
    }
    if value.is_infinite() {
        return if value > 0.0 { "inf" } else { "-inf" }.to_string();
    }
    // Rust prints `5.700000e-4`; C pads the exponent to two digits and always signs it.
    let rust = format!("{value:.6e}");
    let (mantissa, exponent) = rust.split_once('e').unwrap_or((rust.as_str(), "0"));
    let exponent: i32 = exponent.parse().unwrap_or(0);
    let sign = if exponent < 0 { '-' } else { '+' };
    format!("{mantissa}e{sign}{:02}", exponent.unsigned_abs())
}

fn optional_value(value: Option<f64>) -> String {
    value.map_or_else(|| "~".to_string(), format_c_exponent)
}

fn parse_integer<T: std::str::FromStr>(value: &str, index: usize) -> Result<T, LastResultParseError> {
    let digits = value.strip_prefix('-').unwrap_or(value);
    let plain = !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit());
    plain
        .then(|| value.parse().ok())
        .flatten()
        .ok_or_else(|| bad_value(value, index))
}

fn parse_value(value: &str, index: usize) -> Result<Option<f64>, LastResultParseError> {
    if value == "~" {
        return Ok(None);
    }
    let number_like = value
        .bytes()
        .all(|b| b.is_ascii_digit() || matches!(b, b'.' | b'e' | b'E' | b'+' | b'-'));
    match value.parse::<f64>() {
        Ok(v) if number_like && v.is_finite() && v >= 0.0 => Ok(Some(v)),
        _ => Err(bad_value(value, index)),
    }
}

fn bad_value(value: &str, index: usize) -> LastResultParseError {
    LastResultParseError::BadValue {
        line: index + 1,
        key: KEYS[index],
        value: value.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;

    fn result(time: i64, rtts: Vec<Option<f64>>) -> OrderResult {
        OrderResult::builder(OrderId::new("app1/target").unwrap(), time)
            .updated(time + 24)
            .rtts(rtts)
            .build()
    }

    #[test]
    fn format_matches_pingmachine_example_byte_for_byte() {
        let text = format(&result(1310116500, vec![Some(5.7e-4)]));
        assert_eq!(
            text,
            "time: 1310116500\nupdated: 1310116524\nstep: 20\npings: 1\nloss: 0\n\
             min: 5.700000e-04\nmedian: 5.700000e-04\nmax: 5.700000e-04\n"
        );
    }

    #[test]
    fn statistics_are_sorted_with_upper_median_and_loss_count() {
        let text = format(&result(100, vec![Some(3e-4), None, Some(1e-4), Some(2e-4), None]));
        let parsed = parse(&text).unwrap();
        assert_eq!(parsed.loss, 2);
        assert_eq!(parsed.pings, 5);
        assert_eq!(
            (parsed.min, parsed.median, parsed.max),
            (Some(1e-4), Some(2e-4), Some(3e-4))
        );
        assert!(text.contains("min: 1.000000e-04\nmedian: 2.000000e-04\nmax: 3.000000e-04\n"));
    }

    #[test]
    fn no_answers_gives_tilde_values_and_full_loss() {
        let text = format(&result(100, vec![None, None, None]));
        assert!(text.ends_with("loss: 3\nmin: ~\nmedian: ~\nmax: ~\n"), "{text}");
        let parsed = parse(&text).unwrap();
        assert_eq!((parsed.min, parsed.median, parsed.max), (None, None, None));
    }

    #[test]
    fn no_line_has_trailing_spaces() {
        let text = format(&result(100, vec![Some(0.0), None]));
        assert!(text.lines().all(|l| l.trim_end() == l));
    }

    #[test]
    fn c_exponent_format_matches_printf() {
        // Expected strings are what glibc printf("%.6e") prints for these values.
        let cases = [
            (0.0, "0.000000e+00"),
            (1.0, "1.000000e+00"),
            (5.7e-4, "5.700000e-04"),
            (1.5, "1.500000e+00"),
            (12.345678, "1.234568e+01"),
            (180.0, "1.800000e+02"),
            (1e-5, "1.000000e-05"),
            (1.23456789e-10, "1.234568e-10"),
            (9.9999999e-5, "1.000000e-04"),
            (1e100, "1.000000e+100"),
            (1e-300, "1.000000e-300"),
            (-2.5e-3, "-2.500000e-03"),
        ];
        for (value, expected) in cases {
            assert_eq!(format_c_exponent(value), expected, "value {value}");
        }
    }

    #[test]
    fn c_exponent_format_agrees_with_the_real_printf_binary() {
        // Values exact enough that coreutils' long-double printf rounds them like a double would.
        let values = ["0", "0.00057", "1", "123.456", "0.000012345678", "250"];
        let output = std::process::Command::new("printf")
            .arg("%.6e\\n")
            .args(values)
            .env("LC_ALL", "C")
            .output()
            .unwrap();
        let printed = String::from_utf8(output.stdout).unwrap();
        let ours: Vec<String> = values.iter().map(|v| format_c_exponent(v.parse().unwrap())).collect();
        assert_eq!(printed.lines().collect::<Vec<_>>(), ours);
    }

    #[test]
    fn parse_round_trips_format() {
        let original = result(1310116500, vec![Some(0.25), Some(1.5), None]);
        let parsed = parse(&format(&original)).unwrap();
        assert_eq!(
            parsed,
            LastResult {
                time: 1310116500,
                updated: 1310116524,
                step: 20,
                pings: 3,
                loss: 1,
                min: Some(0.25),
                median: Some(1.5),
                max: Some(1.5),
            }
        );
    }

    #[test]
    fn parse_rejects_malformed_texts() {
        let good = format(&result(100, vec![Some(1e-3)]));
        let cases: Vec<String> = vec![
            String::new(),
            good.trim_end().to_string(),
            good.replace("step: 20", "step: 20 "),
            good.replace("step: 20", "step:20"),
            good.replace("step: 20", "step: twenty"),
            good.replace("step: 20", "step: -20"),
            good.replace("step: 20", "step: +20"),
            good.replace("loss: 0", "loss: 2"),
            good.replace("min: 1.000000e-03", "min: nan"),
            good.replace("min: 1.000000e-03", "min: inf"),
            good.replace("min: 1.000000e-03", "min: -1e-3"),
            good.replace("min: 1.000000e-03", "min: "),
            good.replace("time:", "Time:"),
            good.replace("pings: 1\nloss: 0\n", "loss: 0\npings: 1\n"),
            format!("{good}extra: 1\n"),
            format!("{good}\n"),
            good.replace('\n', "\r\n"),
            "x".repeat(10_000_000),
            format!("time: {}\n", "9".repeat(500)),
        ];
        for case in cases {
            assert!(parse(&case).is_err(), "accepted {:?}", &case[..case.len().min(80)]);
        }
    }

    /// Stages and commits at once (processing syncs the filesystem in between).
    fn write(dir: &Path, result: &OrderResult) -> io::Result<()> {
        stage(dir, result)?.commit()
    }

    #[test]
    fn write_creates_the_directory_and_leaves_only_the_reused_next_file() {
        let base = tempfile::tempdir().unwrap();
        let dir = base.path().join("output/app 1/ünïcode");
        write(&dir, &result(100, vec![Some(1e-3)])).unwrap();
        write(&dir, &result(120, vec![None])).unwrap();
        let mut names: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        names.sort();
        assert_eq!(names, [".last_result.next", FILE_NAME].map(std::ffi::OsString::from));
        let parsed = parse(&std::fs::read_to_string(dir.join(FILE_NAME)).unwrap()).unwrap();
        assert_eq!((parsed.time, parsed.loss), (120, 1));
    }

    #[test]
    fn reader_never_sees_the_file_missing_or_partial_while_it_is_replaced() {
        let base = tempfile::tempdir().unwrap();
        let dir = base.path().to_path_buf();
        write(&dir, &result(0, vec![Some(1e-3)])).unwrap();
        let done = Arc::new(AtomicBool::new(false));
        let reader = {
            let done = Arc::clone(&done);
            let path = dir.join(FILE_NAME);
            std::thread::spawn(move || {
                let mut reads = 0u64;
                while !done.load(Ordering::Acquire) {
                    let text = std::fs::read_to_string(&path).expect("last_result missing");
                    parse(&text).expect("last_result partial");
                    reads += 1;
                }
                reads
            })
        };
        for i in 1..=1000 {
            let rtts = (0..(i % 7 + 1)).map(|k| (k % 2 == 0).then_some(1e-3)).collect();
            write(&dir, &result(i * 20, rtts)).unwrap();
        }
        done.store(true, Ordering::Release);
        let reads = reader.join().unwrap();
        assert!(reads > 0);
        let last = parse(&std::fs::read_to_string(dir.join(FILE_NAME)).unwrap()).unwrap();
        assert_eq!(last.time, 20_000);
    }
}
