//! Opening an outbox after a clean stop or a crash: torn tails cut, delivered segments removed,
//! the acknowledgement checked against what is really on disk, and whatever that discards
//! counted in the `dropped_*` counters and logged with file, offset and amount.
//!
//! Every file is reached through the outbox's directory descriptor and opened non-blocking as a
//! regular file only: a FIFO, device or symlink in place of `ack` makes the acknowledgement
//! unreadable (delivery restarts at the oldest record, logged); one named like a segment is not a
//! segment of ours (it was never created by the writer, which creates segments `O_EXCL`): its
//! entry is removed, logged, nothing is counted (it held no records), and it is never opened.

use super::ack::{Ack, AckRead, Position};
use super::format::{has_magic, list_segments, walk_records, RecordHeader, RECORD_HEADER_LEN, SEGMENT_HEADER_LEN};
use super::{OutboxError, SegmentInfo, Tally};
use crate::spool::beneath::{Dir, Kind};
use crate::spool::temp::TMP_PREFIX;
use std::fs::File;
use std::os::unix::fs::FileExt;
use tracing::{info, warn};

/// What the shared state starts from.
pub struct Recovered {
    pub segments: Vec<SegmentInfo>,
    pub ack: Ack,
    /// Whole records before the acknowledged offset in its segment.
    pub head_done: Tally,
    /// Sequence number of the first segment the writer creates.
    pub next_seq: u64,
    /// What recovery discarded (already added to `ack.counters`): the acknowledgement must be
    /// rewritten so the counters survive the next crash.
    pub discarded: Tally,
}

/// Recovers the outbox in `dir`; see the module documentation.
pub fn recover(dir: &Dir) -> Result<Recovered, OutboxError> {
    remove_stray_temps(dir);
    let listed = list_segments(dir).map_err(|e| OutboxError::io("list outbox", dir.path(), e))?;
    let last_seq = listed.last().map(|entry| entry.seq);
    let mut ack = read_ack(dir, last_seq)?;
    let mut segments = Vec::new();
    let mut head_done = Tally::default();
    let mut discarded = Tally::default();
    for entry in &listed {
        let path = dir.path().join(&entry.name);
        if entry.kind != Kind::File {
            warn!(
                file = %path.display(),
                kind = ?entry.kind,
                "named like an outbox segment but not a regular file: not ours, removed without opening it (it held no records)"
            );
            dir.unlink(&entry.name)
                .map_err(|e| OutboxError::io("remove non-segment", &path, e))?;
            continue;
        }
        if entry.seq < ack.position.segment {
            info!(file = %path.display(), "removing an outbox segment that was delivered before a stop");
            dir.unlink(&entry.name)
                .map_err(|e| OutboxError::io("remove delivered segment", &path, e))?;
            continue;
        }
        let verify = Some(entry.seq) == last_seq;
        let head = (entry.seq == ack.position.segment).then_some(&mut ack.position);
        if let Some((info, done)) = recover_segment(dir, &entry.name, entry.seq, verify, head, &mut discarded)? {
            head_done = done.unwrap_or(head_done);
            segments.push(info);
        }
    }
    let counters = &mut ack.counters;
    counters.dropped_records = counters.dropped_records.saturating_add(discarded.records);
    counters.dropped_lines = counters.dropped_lines.saturating_add(discarded.lines);
    counters.dropped_bytes = counters.dropped_bytes.saturating_add(discarded.bytes);
    let next_seq = last_seq.map_or(0, |seq| seq + 1).max(ack.position.segment);
    Ok(Recovered {
        segments,
        ack,
        head_done,
        next_seq,
        discarded,
    })
}

/// Reads the acknowledgement; a missing, garbage, or impossible one restarts at the oldest record.
fn read_ack(dir: &Dir, last_seq: Option<u64>) -> Result<Ack, OutboxError> {
    let read = Ack::read(dir).map_err(|e| OutboxError::io("read the acknowledgement file in", dir.path(), e))?;
    let ack = match read {
        AckRead::Found(ack) => ack,
        AckRead::Missing if last_seq.is_none() => return Ok(Ack::from_oldest()),
        AckRead::Missing => {
            warn!(outbox = %dir.path().display(), "no acknowledgement file: delivering from the oldest record");
            return Ok(Ack::from_oldest());
        }
        AckRead::Garbage(why) => {
            warn!(outbox = %dir.path().display(), "unreadable acknowledgement file ({why}): delivering from the oldest record, counters restart at 0");
            return Ok(Ack::from_oldest());
        }
    };
    match last_seq {
        Some(last) if ack.position.segment > last + 1 => {
            warn!(
                outbox = %dir.path().display(),
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

/// Cuts segment `name`'s bad tail and sums its records. With `head` (the acknowledged position,
/// when it points into this segment) the position is checked and clamped, and the records before
/// it are summed too. What is discarded (a cut tail not yet delivered, records skipped by an
/// acknowledgement past the end of the file) is added to `discarded`. `None` when nothing is left
/// of the segment (it is removed).
fn recover_segment(
    dir: &Dir,
    name: &str,
    seq: u64,
    verify: bool,
    head: Option<&mut Position>,
    discarded: &mut Tally,
) -> Result<Option<(SegmentInfo, Option<Tally>)>, OutboxError> {
    let path = dir.path().join(name);
    let file = match dir.open_rw(name) {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::InvalidData => {
            // Replaced by something else since it was listed.
            warn!(file = %path.display(), "not an outbox segment ({e}): removed without opening it");
            dir.unlink(name)
                .map_err(|e| OutboxError::io("remove non-segment", &path, e))?;
            return Ok(None);
        }
        Err(e) => return Err(OutboxError::io("open segment", &path, e)),
    };
    if !has_magic(&file).map_err(|e| OutboxError::io("read segment", &path, e))? {
        warn!(file = %path.display(), "not an outbox segment (no SPOOLOB1 header): removed");
        dir.unlink(name)
            .map_err(|e| OutboxError::io("remove segment", &path, e))?;
        return Ok(None);
    }
    let file_len = file
        .metadata()
        .map_err(|e| OutboxError::io("stat segment", &path, e))?
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
    .map_err(|e| OutboxError::io("read segment", &path, e))?;
    if let Some(problem) = &end.problem {
        // Delivered bytes of the tail (before an acknowledgement that points into it) are not lost.
        let from = target.map_or(end.valid_len, |t| t.offset.clamp(end.valid_len, file_len));
        let lost = cut_tally(&file, from, file_len).map_err(|e| OutboxError::io("read segment", &path, e))?;
        warn!(
            file = %path.display(),
            offset = end.valid_len,
            cut_bytes = file_len - end.valid_len,
            dropped_records = lost.records,
            dropped_lines = lost.lines,
            dropped_bytes = lost.bytes,
            "cutting off a torn or corrupt tail ({problem}): counted as dropped"
        );
        discarded.add(lost);
        file.set_len(end.valid_len)
            .and_then(|()| file.sync_data())
            .map_err(|e| OutboxError::io("cut the tail of segment", &path, e))?;
    }
    let head_done = head.map(|position| {
        let past_file = position.offset > file_len;
        let done = placement.clamp(position, end.valid_len, &file, &path);
        if past_file && done.records > 0 {
            // Nothing was ever written there: the records before it are skipped on the word of a
            // wrong acknowledgement, without evidence they were delivered.
            warn!(
                file = %path.display(),
                records = done.records,
                lines = done.lines,
                bytes = done.bytes,
                "the acknowledgement points past the end of the file: the records it skips are counted as dropped"
            );
            discarded.add(done);
        }
        done
    });
    if held.records == 0 {
        dir.unlink(name)
            .map_err(|e| OutboxError::io("remove empty segment", &path, e))?;
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

/// What the tail `from..file_len` held: the records whose header and payload are complete in the
/// file, corrupt or not (their lines and payload bytes as their headers say), then every byte of
/// the torn rest that frames no record.
fn cut_tally(file: &std::fs::File, from: u64, file_len: u64) -> std::io::Result<Tally> {
    let mut tally = Tally::default();
    let mut offset = from;
    while offset < file_len {
        let remaining = file_len - offset;
        if remaining < super::format::RECORD_HEADER_LEN as u64 {
            tally.bytes += remaining;
            break;
        }
        let header = super::format::read_header_at(file, offset)?;
        if header.len == 0 || header.record_len() > remaining {
            // A header that does not frame a record: the rest is unreadable bytes.
            tally.bytes += remaining;
            break;
        }
        tally.add(Tally::of(&header));
        offset += header.record_len();
    }
    Ok(tally)
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
    fn clamp(self, position: &mut Position, valid_len: u64, file: &File, path: &std::path::Path) -> Tally {
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
fn remove_stray_temps(dir: &Dir) {
    let Ok(entries) = dir.entries() else {
        return;
    };
    for (name, _) in entries {
        if name.as_encoded_bytes().starts_with(TMP_PREFIX.as_bytes()) {
            info!(file = %dir.path().join(&name).display(), "removing a stray temporary file");
            let _ = dir.unlink(&name);
        }
    }
}
