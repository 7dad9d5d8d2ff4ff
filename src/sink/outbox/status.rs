//! The backlog of an outbox, read from its files alone: no lock, no daemon, nothing written.
//! Safe while a daemon appends and delivers (a segment removed meanwhile is skipped; a record
//! being appended is not counted until it is complete).

use super::ack::{Ack, AckRead};
use super::format::{has_magic, list_segments, walk_records};
use super::OutboxError;
use crate::spool::beneath::{Dir, Kind};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// What an outbox holds and what has left it (for `spoolmon outbox`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct OutboxStatus {
    /// Records with undelivered lines.
    pub records: u64,
    /// Undelivered lines.
    pub lines: u64,
    /// Undelivered payload bytes.
    pub bytes: u64,
    /// When the oldest undelivered record was appended.
    pub oldest: Option<SystemTime>,
    pub dropped_records: u64,
    pub dropped_lines: u64,
    pub dropped_bytes: u64,
    pub rejected_lines: u64,
    pub delivered_lines: u64,
    /// What is wrong with the files, if anything (an unreadable `ack`, an entry named like a
    /// segment that is not a regular file); the counts are what could be read.
    pub problems: Vec<String>,
}

/// [`status_in`] of the outbox directory at `path`.
pub fn status(path: &std::path::Path) -> Result<OutboxStatus, OutboxError> {
    let dir = Dir::open(path).map_err(|e| OutboxError::io("open outbox", path, e))?;
    status_in(&dir)
}

/// Reads the status of the outbox `dir` (`outbox/<sink>/`). A missing or unreadable
/// acknowledgement file counts everything as undelivered, as delivery would. Nothing is opened
/// that is not a regular file, and nothing blocks.
pub fn status_in(dir: &Dir) -> Result<OutboxStatus, OutboxError> {
    let mut problems = Vec::new();
    let ack = match Ack::read(dir).map_err(|e| OutboxError::io("read the acknowledgement file in", dir.path(), e))? {
        AckRead::Found(ack) => ack,
        AckRead::Missing => Ack::from_oldest(),
        AckRead::Garbage(why) => {
            problems.push(format!("unreadable acknowledgement file ({why})"));
            Ack::from_oldest()
        }
    };
    let counters = ack.counters;
    let mut status = OutboxStatus {
        dropped_records: counters.dropped_records,
        dropped_lines: counters.dropped_lines,
        dropped_bytes: counters.dropped_bytes,
        rejected_lines: counters.rejected_lines,
        delivered_lines: counters.delivered_lines,
        ..OutboxStatus::default()
    };
    let segments = list_segments(dir).map_err(|e| OutboxError::io("list outbox", dir.path(), e))?;
    let acked = ack.position;
    for entry in segments.into_iter().filter(|entry| entry.seq >= acked.segment) {
        let path = dir.path().join(&entry.name);
        if entry.kind != Kind::File {
            problems.push(format!("{} is not a regular file (not a segment)", path.display()));
            continue;
        }
        let file = match dir.open_read(&entry.name) {
            Ok(file) => file,
            Err(e) if e.kind() == std::io::ErrorKind::InvalidData => {
                problems.push(e.to_string());
                continue;
            }
            Err(_) => continue, // delivered or dropped since it was listed
        };
        if !has_magic(&file).unwrap_or(false) {
            continue;
        }
        let seq = entry.seq;
        let file_len = file
            .metadata()
            .map_err(|e| OutboxError::io("stat segment", &path, e))?
            .len();
        let walked = walk_records(&file, file_len, false, |offset, header| {
            let skipped = if seq == acked.segment {
                match offset.cmp(&acked.offset) {
                    std::cmp::Ordering::Less => return,
                    std::cmp::Ordering::Equal => (acked.skip_lines, acked.skip_bytes),
                    std::cmp::Ordering::Greater => (0, 0),
                }
            } else {
                (0, 0)
            };
            status.records += 1;
            status.lines += u64::from(header.lines).saturating_sub(skipped.0);
            status.bytes += u64::from(header.len).saturating_sub(skipped.1);
            status
                .oldest
                .get_or_insert(UNIX_EPOCH + Duration::from_millis(header.appended_ms));
        });
        walked.map_err(|e| OutboxError::io("read segment", &path, e))?;
    }
    status.problems = problems;
    Ok(status)
}
