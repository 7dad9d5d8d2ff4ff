//! Opening an outbox after a clean stop or a crash: torn tails cut, delivered segments removed,
//! the acknowledgement checked against what is really on disk.

use super::ack::{Ack, AckRead, Position};
use super::format::{has_magic, list_segments, walk_records, RecordHeader, RECORD_HEADER_LEN, SEGMENT_HEADER_LEN};
use super::{OutboxError, SegmentInfo, Tally};
use crate::spool::atomic::TMP_PREFIX;
use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::Path;
use tracing::{info, warn};

/// What the shared state starts from.
pub struct Recovered {
    pub segments: Vec<SegmentInfo>,
    pub ack: Ack,
    /// Whole records before the acknowledged offset in its segment.
    pub head_done: Tally,
    /// Sequence number of the first segment the writer creates.
    pub next_seq: u64,
}

/// Recovers the outbox in `dir`; see the module documentation.
pub fn recover(dir: &Path) -> Result<Recovered, OutboxError> {
    remove_stray_temps(dir);
    let listed = list_segments(dir).map_err(|e| OutboxError::io("list outbox", dir, e))?;
    let last_seq = listed.last().map(|(seq, _)| *seq);
    let mut ack = read_ack(dir, last_seq)?;
    let mut segments = Vec::new();
    let mut head_done = Tally::default();
    for (seq, path) in &listed {
        if *seq < ack.position.segment {
            info!(file = %path.display(), "removing an outbox segment that was delivered before a stop");
            std::fs::remove_file(path).map_err(|e| OutboxError::io("remove delivered segment", path, e))?;
            continue;
        }
        let verify = Some(*seq) == last_seq;
        let head = (*seq == ack.position.segment).then_some(&mut ack.position);
        if let Some((info, done)) = recover_segment(path, *seq, verify, head)? {
            head_done = done.unwrap_or(head_done);
            segments.push(info);
        }
    }
    let next_seq = last_seq.map_or(0, |seq| seq + 1).max(ack.position.segment);
    Ok(Recovered {
        segments,
        ack,
        head_done,
        next_seq,
    })
}

/// Reads the acknowledgement; a missing, garbage, or impossible one restarts at the oldest record.
fn read_ack(dir: &Path, last_seq: Option<u64>) -> Result<Ack, OutboxError> {
    let read = Ack::read(dir).map_err(|e| OutboxError::io("read the acknowledgement file in", dir, e))?;
    let ack = match read {
        AckRead::Found(ack) => ack,
        AckRead::Missing if last_seq.is_none() => return Ok(Ack::from_oldest()),
        AckRead::Missing => {
            warn!(outbox = %dir.display(), "no acknowledgement file: delivering from the oldest record");
            return Ok(Ack::from_oldest());
        }
        AckRead::Garbage(why) => {
            warn!(outbox = %dir.display(), "unreadable acknowledgement file ({why}): delivering from the oldest record, counters restart at 0");
            return Ok(Ack::from_oldest());
        }
    };
    match last_seq {
        Some(last) if ack.position.segment > last + 1 => {
            warn!(
                outbox = %dir.display(),
                segment = ack.position.segment,
                last_segment = last,
                "the acknowledgement names a segment that was never written: delivering from the oldest record"
            );
            Ok(Ack {
                position: Position::start_of(0),
                counters: ack.counters,
            })
        }
        _ => Ok(ack),
    }
}

/// Cuts segment `path`'s bad tail and sums its records. With `head` (the acknowledged position,
/// when it points into this segment) the position is checked and clamped, and the records before
/// it are summed too. `None` when nothing is left of the segment (it is removed).
fn recover_segment(
    path: &Path,
    seq: u64,
    verify: bool,
    head: Option<&mut Position>,
) -> Result<Option<(SegmentInfo, Option<Tally>)>, OutboxError> {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .map_err(|e| OutboxError::io("open segment", path, e))?;
    if !has_magic(&file).map_err(|e| OutboxError::io("read segment", path, e))? {
        warn!(file = %path.display(), "not an outbox segment (no SPOOLOB1 header): removed");
        std::fs::remove_file(path).map_err(|e| OutboxError::io("remove segment", path, e))?;
        return Ok(None);
    }
    let file_len = file
        .metadata()
        .map_err(|e| OutboxError::io("stat segment", path, e))?
        .len();
    let target = head.as_deref().copied();
    let mut held = Tally::default();
    let mut newest_ms = 0;
    let mut placement = AckPlacement::default();
    let end = walk_records(&file, file_len, verify, |offset, header| {
        held.add(Tally::of(header));
        newest_ms = header.appended_ms;
        if let Some(target) = &target {
            placement.visit(target, offset, header);
        }
    })
    .map_err(|e| OutboxError::io("read segment", path, e))?;
    if let Some(problem) = &end.problem {
        warn!(
            file = %path.display(),
            offset = end.valid_len,
            cut_bytes = file_len - end.valid_len,
            "cutting off a torn or corrupt tail: {problem}"
        );
        file.set_len(end.valid_len)
            .and_then(|()| file.sync_data())
            .map_err(|e| OutboxError::io("cut the tail of segment", path, e))?;
    }
    let head_done = head.map(|position| placement.clamp(position, end.valid_len, &file, path));
    if held.records == 0 {
        std::fs::remove_file(path).map_err(|e| OutboxError::io("remove empty segment", path, e))?;
        return Ok(None);
    }
    let info = SegmentInfo {
        seq,
        len: end.valid_len,
        held,
        newest_ms,
        corrupt: false,
    };
    Ok(Some((info, head_done)))
}

/// Where the acknowledged offset falls among a segment's records.
#[derive(Default)]
struct AckPlacement {
    /// Records that end at or before the offset.
    done: Tally,
    /// The record starting exactly at the offset.
    at: Option<RecordHeader>,
    /// The start of a record the offset falls inside of.
    inside: Option<u64>,
}

impl AckPlacement {
    fn visit(&mut self, target: &Position, offset: u64, header: &RecordHeader) {
        let end = offset + header.record_len();
        if end <= target.offset {
            self.done.add(Tally::of(header));
        } else if offset == target.offset {
            self.at = Some(*header);
        } else if offset < target.offset {
            self.inside = Some(offset);
        }
    }

    /// Moves `position` to the nearest valid place at or before it (resending rather than losing)
    /// or to the end when it lies past the end; returns the records before it.
    /// A skip must be whole lines of the record (else the reader would send the rest of a cut
    /// line and miscount lines); `file` is the segment, read for that check.
    fn clamp(self, position: &mut Position, valid_len: u64, file: &File, path: &Path) -> Tally {
        let skip_fits = |h: &RecordHeader| {
            (position.skip_bytes == 0 && position.skip_lines == 0)
                || (position.skip_bytes < u64::from(h.len)
                    && position.skip_lines < u64::from(h.lines)
                    && skips_whole_lines(file, position))
        };
        let problem = match (self.at, self.inside) {
            (Some(header), _) if skip_fits(&header) => None,
            (Some(_), _) => Some("skips what is not whole lines of its record"),
            (None, Some(start)) => {
                position.offset = start;
                Some("points inside a record")
            }
            (None, None) if position.offset == valid_len && position.skip_bytes == 0 => None,
            (None, None) if position.offset >= valid_len => {
                position.offset = valid_len;
                Some("points past the end")
            }
            (None, None) => {
                position.offset = SEGMENT_HEADER_LEN;
                Some("points before the first record")
            }
        };
        if let Some(problem) = problem {
            warn!(file = %path.display(), offset = position.offset, "the acknowledgement {problem}: clamped to the offset shown");
            position.skip_bytes = 0;
            position.skip_lines = 0;
        }
        self.done
    }
}

/// True when the first `skip_bytes` payload bytes of the record at `position.offset` are exactly
/// `skip_lines` whole lines (the caller checked that they lie inside the record).
fn skips_whole_lines(file: &File, position: &Position) -> bool {
    let mut skipped = vec![0; position.skip_bytes as usize];
    file.read_exact_at(&mut skipped, position.offset + RECORD_HEADER_LEN as u64)
        .is_ok()
        && skipped.last() == Some(&b'\n')
        && skipped.iter().filter(|&&b| b == b'\n').count() as u64 == position.skip_lines
}

/// Removes temporary files a crash left behind (replacements of `ack` that never happened).
fn remove_stray_temps(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        if entry.file_name().to_string_lossy().starts_with(TMP_PREFIX) {
            info!(file = %entry.path().display(), "removing a stray temporary file");
            let _ = std::fs::remove_file(entry.path());
        }
    }
}
