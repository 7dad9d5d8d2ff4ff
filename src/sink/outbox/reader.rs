//! Reading the oldest undelivered lines in batches no larger than a transport takes.
//!
//! A batch is whole records, up to the payload limit; a record larger than the limit on its own
//! is handed out in line-aligned pieces. Records are read with one large `pread` per batch into
//! a reused buffer (the window); small records' payloads are copied into the batch, and a record
//! filling more than half a payload is handed out from the window itself: no allocation or
//! syscall per line.

use super::ack::Position;
use super::format::{segment_name, RecordHeader, RECORD_HEADER_LEN};
use super::{Outbox, OutboxError, Tally};
use crate::spool::beneath::Dir;
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::sync::Arc;

/// Lines read from the outbox, waiting to be sent and acknowledged.
#[derive(Debug)]
pub struct Batch {
    pub(super) start: Position,
    pub(super) end: Position,
    /// Records whose last byte is in this batch.
    pub(super) finished: Tally,
    /// The lines, or (with `range`) the reader's window holding them: a record filling more than
    /// half a payload, or a piece of one larger than a payload, is handed out from the window
    /// where it was read, not copied (a HAProxy round is ~14.5 MB in records of just under
    /// 2 MiB, Graphite's payload).
    payload: Vec<u8>,
    range: Option<std::ops::Range<usize>>,
    lines: u64,
}

impl Batch {
    fn starting_at(&mut self, start: Position) {
        self.start = start;
        self.end = start;
        self.finished = Tally::default();
        self.payload.clear();
        self.lines = 0;
    }

    /// Whole lines, each ending in `\n`.
    pub fn payload(&self) -> &[u8] {
        match &self.range {
            Some(range) => &self.payload[range.clone()],
            None => &self.payload,
        }
    }

    pub fn lines(&self) -> u64 {
        self.lines
    }

    /// The first line without its newline (for logs).
    pub fn first_line(&self) -> &[u8] {
        let payload = self.payload();
        let end = payload.iter().position(|&b| b == b'\n').unwrap_or(payload.len());
        &payload[..end]
    }
}

/// Where the next batch comes from, as the shared state says.
enum Head {
    /// Nothing durable is undelivered.
    Nothing,
    /// Segment `seq` is read to its end (or found corrupt) and no longer written to.
    Finished { seq: u64, corrupt: bool },
    /// Records from `start` up to the durable end `end` of its segment.
    Readable { start: Position, end: u64 },
}

/// What reading at the head found.
enum ReadOutcome {
    Batch,
    Corrupt {
        offset: u64,
        reason: &'static str,
    },
    /// The segment was dropped meanwhile.
    Vanished,
}

/// The delivery thread's handle on an outbox (one per outbox).
#[derive(Debug)]
pub struct Reader {
    outbox: Arc<Outbox>,
    file: Option<(u64, File)>,
    /// Bytes of segment `window_start.0` from offset `window_start.1`.
    window: Vec<u8>,
    window_start: Option<(u64, u64)>,
    /// The record whose checksum was checked last (pieces of it need no second check).
    verified: Option<(u64, u64)>,
    batch: Batch,
}

impl Reader {
    pub(super) fn new(outbox: Arc<Outbox>) -> Reader {
        Reader {
            outbox,
            file: None,
            window: Vec::new(),
            window_start: None,
            verified: None,
            batch: Batch {
                start: Position::start_of(0),
                end: Position::start_of(0),
                finished: Tally::default(),
                payload: Vec::new(),
                range: None,
                lines: 0,
            },
        }
    }

    pub fn outbox(&self) -> &Arc<Outbox> {
        &self.outbox
    }

    /// The oldest undelivered lines, at most `max_payload` bytes unless a single line is longer;
    /// `None` when everything durable is delivered. The same lines come again until the batch
    /// is acknowledged with [`Outbox::acknowledge`].
    pub fn next_batch(&mut self, max_payload: usize) -> Result<Option<&Batch>, OutboxError> {
        loop {
            match self.head() {
                Head::Nothing => return Ok(None),
                Head::Finished { seq, corrupt } => {
                    let why = if corrupt {
                        "the segment holds a corrupt record"
                    } else {
                        "delivered"
                    };
                    self.outbox.drop_segment(seq, why);
                }
                Head::Readable { start, end } => match self.read(start, end, max_payload.max(1))? {
                    ReadOutcome::Batch => return Ok(Some(&self.batch)),
                    ReadOutcome::Corrupt { offset, reason } => self.mark_corrupt(start.segment, offset, reason),
                    ReadOutcome::Vanished => {}
                },
            }
        }
    }

    fn head(&self) -> Head {
        let mut state = self.outbox.lock_state();
        let Some(first) = state.segments.front() else {
            return Head::Nothing;
        };
        let (seq, len, corrupt) = (first.seq, first.len, first.corrupt);
        if seq != state.ack.segment {
            // The acknowledged segment is gone (delivered or dropped): start of the next one.
            state.ack = Position::start_of(seq);
            state.head_done = Tally::default();
        }
        if corrupt || state.ack.offset >= len {
            let still_written = state.writing == Some(seq);
            return if still_written {
                Head::Nothing
            } else {
                Head::Finished { seq, corrupt }
            };
        }
        Head::Readable {
            start: state.ack,
            end: len,
        }
    }

    fn mark_corrupt(&mut self, seq: u64, offset: u64, reason: &str) {
        let path = self.outbox.dir.join(segment_name(seq));
        tracing::error!(file = %path.display(), offset, "corrupt outbox record ({reason}): the rest of this segment is dropped");
        let mut state = self.outbox.lock_state();
        if let Some(segment) = state.segments.iter_mut().find(|s| s.seq == seq) {
            segment.corrupt = true;
        }
        self.window_start = None;
    }

    /// Fills the batch from `start`, reading no further than `end`.
    fn read(&mut self, start: Position, end: u64, max_payload: usize) -> Result<ReadOutcome, OutboxError> {
        if self.batch.range.take().is_some() {
            // The last batch was lent from the window (a large record or a piece): take it back.
            std::mem::swap(&mut self.window, &mut self.batch.payload);
        }
        let seq = start.segment;
        match self.load_window(seq, start.offset, end, max_payload) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(ReadOutcome::Vanished),
            Err(e) if e.kind() == io::ErrorKind::InvalidData => {
                self.window_start = None;
                return Ok(ReadOutcome::Corrupt {
                    offset: start.offset,
                    reason: "the segment file was replaced by something that is not a regular file",
                });
            }
            Err(e) => return Err(self.read_error(seq, e)),
        }
        self.batch.starting_at(start);
        let mut at = 0usize;
        let mut position = start;
        while position.offset < end && self.window.len() - at >= RECORD_HEADER_LEN {
            let header = RecordHeader::parse(self.window[at..at + RECORD_HEADER_LEN].try_into().expect("20 bytes"));
            let record_len = header.record_len();
            if header.len == 0 || position.offset + record_len > end {
                if !self.batch.payload.is_empty() {
                    break; // deliver the good records first; the next read finds this one
                }
                let reason = "record length runs past the written end";
                return Ok(ReadOutcome::Corrupt {
                    offset: position.offset,
                    reason,
                });
            }
            if self.window.len() - at < record_len as usize {
                if at > 0 {
                    break;
                }
                self.load_whole_record(seq, start.offset, record_len as usize)
                    .map_err(|e| self.read_error(seq, e))?;
            }
            let payload = &self.window[at + RECORD_HEADER_LEN..at + record_len as usize];
            if self.verified != Some((seq, position.offset)) {
                if !header.matches(payload) {
                    if !self.batch.payload.is_empty() {
                        break;
                    }
                    return Ok(ReadOutcome::Corrupt {
                        offset: position.offset,
                        reason: "checksum mismatch",
                    });
                }
                self.verified = Some((seq, position.offset));
            }
            let rest = &payload[position.skip_bytes as usize..];
            // A record that fills more than half a payload goes out alone (in line-aligned pieces
            // when it is larger than a payload), lent from the window; smaller records are copied
            // into the batch, as many as fit.
            let lend = self.batch.payload.is_empty() && rest.len() > max_payload / 2;
            let room = max_payload.saturating_sub(self.batch.payload.len());
            let take = if rest.len() <= room {
                rest.len()
            } else if self.batch.payload.is_empty() {
                line_aligned_prefix(rest, room)
            } else {
                break;
            };
            let from = at + RECORD_HEADER_LEN + position.skip_bytes as usize;
            let whole = take == rest.len();
            if whole {
                self.batch.lines += u64::from(header.lines).saturating_sub(position.skip_lines);
                self.batch.finished.add(Tally::of(&header));
                position = Position::start_of(seq);
                position.offset = start.offset + (at as u64) + record_len;
            } else {
                let lines = count_lines(&rest[..take]);
                self.batch.lines += lines;
                position.skip_bytes += take as u64;
                position.skip_lines += lines;
            }
            if lend {
                self.batch.range = Some(from..from + take);
                std::mem::swap(&mut self.window, &mut self.batch.payload);
                break;
            }
            self.batch.payload.extend_from_slice(&rest[..take]);
            if !whole {
                break;
            }
            at += record_len as usize;
        }
        self.batch.end = position;
        Ok(ReadOutcome::Batch)
    }

    /// Reads the bytes from `offset` (up to one batch plus a header, not past `end`) unless they
    /// are already in the window (a large record handed out in pieces).
    fn load_window(&mut self, seq: u64, offset: u64, end: u64, max_payload: usize) -> io::Result<()> {
        if self.window_start == Some((seq, offset)) {
            return Ok(());
        }
        self.window_start = None;
        let len = (end - offset).min(max_payload as u64 + RECORD_HEADER_LEN as u64) as usize;
        self.window.resize(len, 0);
        open_segment(&mut self.file, &self.outbox.fd, seq)?.read_exact_at(&mut self.window, offset)?;
        self.window_start = Some((seq, offset));
        Ok(())
    }

    /// Grows the window (which starts at `offset`) to hold the whole record there.
    fn load_whole_record(&mut self, seq: u64, offset: u64, record_len: usize) -> io::Result<()> {
        let have = self.window.len();
        self.window.resize(record_len, 0);
        let file = open_segment(&mut self.file, &self.outbox.fd, seq)?;
        file.read_exact_at(&mut self.window[have..], offset + have as u64)
    }

    fn read_error(&mut self, seq: u64, e: io::Error) -> OutboxError {
        self.window_start = None;
        OutboxError::io("read segment", &self.outbox.dir.join(segment_name(seq)), e)
    }
}

/// The open segment `seq` of `dir`, reusing `cached` when it is that one. Opened non-blocking
/// and only if it is a regular file (anything else: [`io::ErrorKind::InvalidData`]).
fn open_segment<'a>(cached: &'a mut Option<(u64, File)>, dir: &Dir, seq: u64) -> io::Result<&'a File> {
    if cached.as_ref().is_none_or(|(open, _)| *open != seq) {
        *cached = Some((seq, dir.open_read(segment_name(seq))?));
    }
    Ok(&cached.as_ref().expect("just opened").1)
}

/// How many bytes of `rest` to send when it does not fit in `room`: up to the last newline
/// within `room`, or, when a single line is longer than `room`, that whole line.
fn line_aligned_prefix(rest: &[u8], room: usize) -> usize {
    let limit = room.min(rest.len());
    match rest[..limit].iter().rposition(|&b| b == b'\n') {
        Some(newline) => newline + 1,
        None => rest[limit..]
            .iter()
            .position(|&b| b == b'\n')
            .map_or(rest.len(), |newline| limit + newline + 1),
    }
}

/// Newlines in `bytes`, eight bytes at a time (a record of HAProxy lines is handed out in
/// pieces of the transport's payload size, each counted: byte by byte this was a tenth of the
/// delivery thread's work).
/// Exact per byte, as in `process::haproxy`'s comma search: no carry crosses bytes.
fn count_lines(bytes: &[u8]) -> u64 {
    const LOW_BITS: u64 = 0x7f7f_7f7f_7f7f_7f7f;
    const NEWLINES: u64 = 0x0a0a_0a0a_0a0a_0a0a;
    let mut words = bytes.chunks_exact(8);
    let mut count = 0_u64;
    for word in words.by_ref() {
        let zero_where_newline = u64::from_le_bytes(word.try_into().expect("8 bytes")) ^ NEWLINES;
        let newlines = !(((zero_where_newline & LOW_BITS) + LOW_BITS) | zero_where_newline | LOW_BITS);
        count += u64::from(newlines.count_ones());
    }
    count + words.remainder().iter().filter(|&&b| b == b'\n').count() as u64
}

#[cfg(test)]
mod tests {
    use super::count_lines;

    #[test]
    fn newlines_are_counted_in_every_position_of_a_word_and_nothing_else_is() {
        for byte in 0..=255_u8 {
            for at in 0..21 {
                let mut bytes = b"a.b 1 2\nc.d 3 4\nxyz..".to_vec();
                bytes[at] = byte;
                let expected = bytes.iter().filter(|&&b| b == b'\n').count() as u64;
                assert_eq!(count_lines(&bytes), expected, "byte {byte:#x} at {at}");
            }
        }
        assert_eq!(count_lines(b""), 0);
        assert_eq!(count_lines(&[b'\n'; 17]), 17);
    }
}
