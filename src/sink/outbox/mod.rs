//! The outbox: a durable, bounded, per-sink queue of encoded lines under `outbox/<sink>/`.
//!
//! Processing appends the lines of each batch (one record, or several for a large batch,
//! `fdatasync`ed once before the append returns); the sink's delivery thread reads the oldest
//! undelivered lines, sends them and acknowledges them. A restart resumes exactly at the
//! acknowledgement.
//!
//! # Design constraints
//! - Segment files are append-only; a record, and a batch of records, never spans two segments.
//!   Segments are deleted whole, once delivered or when dropped to respect the bound.
//! - A batch is added whole or not at all: the reader sees it once all its records are durable,
//!   and recovery cuts a batch whose last record was never written.
//! - Every record is checksummed. A torn or corrupt tail (crash mid-write, disk full) is found by
//!   checksum when the outbox is opened, cut off and logged; everything before it is delivered.
//! - An append that fails part-way truncates the segment back to its last good record.
//! - The reader only reads bytes the writer has made durable.
//! - The acknowledgement file is replaced atomically after a delivered batch once
//!   [`OutboxLimits::ack_bytes`] were delivered since its last write, and after every batch once
//!   the reader has caught up (and after a rejection, a dropped segment, a stop): a crash repeats
//!   at most `ack_bytes` and the batch that was in flight. It is written into a spare file that is
//!   then exchanged with it (`RENAME_EXCHANGE`), so no file is created or deleted per batch.
//! - Writer and reader share one [`Outbox`] in one process. One process at a time opens an
//!   outbox (the daemon's `state/lock` ensures it); [`status`] reads it from any process.
//!
//! # On-disk layout
//! ```text
//! outbox/<sink>/
//!   00000000000000000000.seg   segments, named by a 20-digit zero-padded sequence number
//!   00000000000000000001.seg   (the highest one is being appended to)
//!   ack                        the acknowledgement file
//!   .ack.spare                 the next acknowledgement being written, then the previous one
//!                              (exchanged with `ack`; ignored when reading)
//!   .tmp-<pid>-ack.part        a replacement of `ack` being written by an older spoolmon
//!                              (ignored, removed on open)
//! ```
//!
//! # Segment file
//! Bytes 0..8 are the magic `SPOOLOB1` (format version 1), then records back to back. All
//! integers are little-endian. A record is:
//!
//! | bytes      | field       | meaning                                                      |
//! |------------|-------------|--------------------------------------------------------------|
//! | 0..4       | len u32     | payload length in bytes, at least 1                          |
//! | 4..8       | lines u32   | bits 0..30: number of lines in the payload; bit 31: more     |
//! |            |             | records of the same batch follow this one                    |
//! | 8..16      | appended u64| when it was appended, unix milliseconds                      |
//! | 16..20     | crc u32     | CRC-32 (IEEE 802.3, as zlib) of bytes 0..16, then the payload |
//! | 20..20+len | payload     | whole lines, each ending in `\n`                             |
//!
//! A batch is its records up to and including the first one without bit 31 (a batch of one
//! record is a record as in files written before batches existed: the format stays version 1).
//! Processing writes a large batch (a round of HAProxy snapshots, ~14.5 MB) in records of just
//! under 2 MiB, so that neither it nor the reader holds the whole batch in memory.
//!
//! A new segment is started when the current one would pass `segment_bytes` with a batch's
//! first record (or a quarter of `max_lines` lines, or holds records older than a quarter of
//! `max_age`), and at every open: the writer never appends to a segment it did not create.
//!
//! # Acknowledgement file
//! Text, one `key value` per line after the first line `spoolmon-outbox-ack 1`; all keys are
//! required, values are decimal u64:
//! ```text
//! spoolmon-outbox-ack 1
//! segment 3             the segment of the first undelivered record
//! offset 1048596        the byte offset of that record in it
//! skip_bytes 61440      payload bytes of that record already delivered (a line boundary)
//! skip_lines 1024       lines of that record already delivered
//! delivered_lines 10    lifetime counters: lines the remote took,
//! rejected_lines 0        lines the remote refused for good (dropped),
//! dropped_records 0       records, lines and payload bytes dropped to respect the bound
//! dropped_lines 0         or because they were corrupt
//! dropped_bytes 0
//! ```
//! Everything in segments numbered below `segment`, and before `offset` in it, is delivered. A
//! `segment` that does not exist means the start of the next one that does. A record is split
//! across sends only when it is larger than the transport's largest payload, and only at line
//! boundaries; the acknowledgement then points inside it with `skip_bytes`.
//!
//! # Recovery on open
//! Stray temporary files are removed. Segments before the acknowledged one are deleted (their
//! deletion was interrupted). Each segment's records are walked; the last segment's checksums are
//! all checked (older segments' are checked as they are delivered). The first bad record (or
//! the first record of a batch the file ends inside) and everything after it is cut off and logged with file and offset; what was cut and not yet
//! delivered is added to the `dropped_*` counters (bytes: every byte cut; records and lines: the
//! cut records whose header and payload are whole, as their headers say). A missing or
//! unreadable `ack` (also a FIFO, device or symlink in its place: never opened for reading)
//! restarts delivery at the oldest record (logged); one that points past the end of its segment
//! is clamped to the end, and the records it skips are counted as dropped; one inside a record, or
//! skipping what is not whole lines of its record, is clamped back to the record's start. An entry named like a
//! segment that is not a regular file is removed unopened (logged). When anything was counted,
//! the acknowledgement is rewritten at once so the counters survive the next crash.
//!
//! Every file is reached through the outbox directory's descriptor, opened non-blocking and
//! checked to be a regular file (`spool::beneath`): nothing a producer plants here can hang the
//! daemon, `spoolmon outbox`, `status` or the checks.
//!
//! # Bounds
//! After each append, while the segment files hold more than `max_bytes` bytes, or more than
//! `max_lines` undelivered lines, or the oldest segment's newest record is older than `max_age`,
//! the oldest segment is dropped (never the one being appended to): its undelivered records,
//! lines and bytes are added to the `dropped_*` counters and logged.

mod ack;
mod format;
mod reader;
mod recovery;
mod status;
#[cfg(test)]
mod tests;
mod writer;

pub use ack::{Ack, AckRead, Counters, Position};
pub use reader::{Batch, Reader};
pub use status::{status, status_in, OutboxStatus};

use crate::shared::clock::unix_millis;
use crate::spool::beneath::Dir;
use format::{segment_name, RecordHeader};
use std::collections::VecDeque;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};
use tracing::warn;
use writer::SegmentWriter;

/// Why an outbox operation failed.
#[derive(Debug, thiserror::Error)]
pub enum OutboxError {
    #[error("cannot {doing} {}: {source}", path.display())]
    Io {
        doing: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("a payload must be whole lines ending in a newline (got {len} bytes)")]
    NotWholeLines { len: usize },
    #[error("a payload of {len} bytes is larger than a record can hold (4 GiB)")]
    TooLarge { len: usize },
    #[error("{lines} lines are more than a record can count (2^31 - 1)")]
    TooManyLines { lines: u32 },
}

impl OutboxError {
    fn io(doing: &'static str, path: &Path, source: io::Error) -> OutboxError {
        OutboxError::Io {
            doing,
            path: path.to_owned(),
            source,
        }
    }
}

/// Payload bytes delivered between two acknowledgement writes while a backlog is sent: every
/// write is an `fdatasync` and a rename, and at one per 2 MiB Graphite payload they were the
/// largest single cost of the delivery thread on HAProxy rounds (~7 MB a snapshot). 8 MiB is
/// about one write a snapshot; a crash then repeats at most 8 MiB (carbon and InfluxDB keep one
/// value per series and time, so a repeated line changes nothing there).
pub const DEFAULT_ACK_BYTES: u64 = 8 << 20;

/// How much an outbox may hold before its oldest segment is dropped.
#[derive(Clone, Debug, PartialEq)]
pub struct OutboxLimits {
    /// Bytes of segment files.
    pub max_bytes: u64,
    /// Undelivered lines (haproxystats' Graphite `queue-size`).
    pub max_lines: Option<u64>,
    /// Age of the newest record of the oldest segment.
    pub max_age: Option<Duration>,
    /// Size at which a segment is closed; capped at a quarter of `max_bytes`.
    pub segment_bytes: u64,
    /// Payload bytes delivered between two writes of the acknowledgement file while more is
    /// waiting; caught up, every delivered batch is written at once. A crash repeats at most
    /// this much plus the batch in flight.
    pub ack_bytes: u64,
}

impl Default for OutboxLimits {
    /// 1 GiB in segments of 32 MiB, no line or age bound, acknowledged every 8 MiB (see
    /// [`DEFAULT_ACK_BYTES`]).
    fn default() -> Self {
        OutboxLimits {
            max_bytes: 1 << 30,
            max_lines: None,
            max_age: None,
            segment_bytes: 32 << 20,
            ack_bytes: DEFAULT_ACK_BYTES,
        }
    }
}

/// Lines delivered or records dropped, as a sum.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Tally {
    records: u64,
    lines: u64,
    bytes: u64,
}

impl Tally {
    fn of(header: &RecordHeader) -> Tally {
        Tally {
            records: 1,
            lines: u64::from(header.lines),
            bytes: u64::from(header.len),
        }
    }

    fn add(&mut self, other: Tally) {
        self.records = self.records.saturating_add(other.records);
        self.lines = self.lines.saturating_add(other.lines);
        self.bytes = self.bytes.saturating_add(other.bytes);
    }

    fn minus(self, other: Tally) -> Tally {
        Tally {
            records: self.records.saturating_sub(other.records),
            lines: self.lines.saturating_sub(other.lines),
            bytes: self.bytes.saturating_sub(other.bytes),
        }
    }
}

/// One segment file as the shared state knows it.
#[derive(Clone, Debug)]
struct SegmentInfo {
    seq: u64,
    /// Durable length: the reader reads no further.
    len: u64,
    held: Tally,
    /// Unix ms of the newest record (0 while empty).
    newest_ms: u64,
    /// A corrupt record was found in it: the rest of it is dropped.
    corrupt: bool,
}

/// What the writer and the reader share.
#[derive(Debug)]
struct State {
    /// Oldest first; the last one is the writer's, if it has one.
    segments: VecDeque<SegmentInfo>,
    writing: Option<u64>,
    ack: Position,
    /// Whole records before `ack.offset` in the head segment (delivered but still on disk).
    head_done: Tally,
    counters: Counters,
    /// Bumped by every append; the reader waits for it to change.
    appends: u64,
    /// Payload bytes acknowledged since the acknowledgement file was last written (0: the
    /// file says what `ack` and `counters` say).
    unwritten_bytes: u64,
}

impl State {
    /// What is not delivered yet in the head segment `seg` (the one the ack points into).
    fn undelivered(&self, seg: &SegmentInfo) -> Tally {
        if seg.seq != self.ack.segment {
            return seg.held;
        }
        let skipped = Tally {
            records: 0,
            lines: self.ack.skip_lines,
            bytes: self.ack.skip_bytes,
        };
        seg.held.minus(self.head_done).minus(skipped)
    }

    fn snapshot(&self) -> Ack {
        Ack {
            position: self.ack,
            counters: self.counters,
        }
    }

    /// What the acknowledgement file is to hold now, marked as written.
    fn mark_written(&mut self) -> Ack {
        self.unwritten_bytes = 0;
        self.snapshot()
    }

    /// True when everything durable is acknowledged: the acknowledgement is at the end of the
    /// newest segment (or past every segment).
    fn caught_up(&self) -> bool {
        self.segments
            .iter()
            .all(|s| s.seq < self.ack.segment || (s.seq == self.ack.segment && self.ack.offset >= s.len))
    }

    /// Moves the acknowledgement to the first record after segment `seq`.
    fn ack_past(&mut self, seq: u64) {
        let next = self
            .segments
            .iter()
            .map(|s| s.seq)
            .find(|&s| s > seq)
            .unwrap_or(seq + 1);
        self.ack = Position::start_of(next);
        self.head_done = Tally::default();
    }
}

/// The writer's side: the open segment and the number the next one gets.
#[derive(Debug)]
struct WriterSlot {
    segment: Option<SegmentWriter>,
    next_seq: u64,
}

/// A durable per-sink queue; see the module documentation.
#[derive(Debug)]
pub struct Outbox {
    dir: PathBuf,
    /// `dir`, opened: every file of the outbox is reached through it.
    fd: Dir,
    limits: OutboxLimits,
    writer: Mutex<WriterSlot>,
    /// Held while the acknowledgement file is written, so writes happen in state order.
    ack_file: Mutex<()>,
    state: Mutex<State>,
    appended: Condvar,
}

/// How a delivered batch ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The remote took it.
    Delivered,
    /// The remote refused it for good; it is dropped and counted.
    Rejected,
}

impl Outbox {
    /// Opens (creating if needed) the outbox in `dir` and recovers it; see the module docs.
    pub fn open(dir: &Path, limits: OutboxLimits) -> Result<Outbox, OutboxError> {
        std::fs::create_dir_all(dir).map_err(|e| OutboxError::io("create outbox", dir, e))?;
        let fd = Dir::open(dir).map_err(|e| OutboxError::io("open outbox", dir, e))?;
        Outbox::open_dir(fd, limits)
    }

    /// Opens (creating if needed) the outbox `<parent>/<name>` without following a symlink in
    /// its place (`outbox/<sink>` of a base directory) and recovers it.
    pub fn open_in(parent: &Dir, name: &str, limits: OutboxLimits) -> Result<Outbox, OutboxError> {
        let path = parent.path().join(name);
        let fd = parent
            .create_dir_all(name)
            .map_err(|e| OutboxError::io("open outbox", &path, e))?;
        Outbox::open_dir(fd, limits)
    }

    fn open_dir(fd: Dir, limits: OutboxLimits) -> Result<Outbox, OutboxError> {
        let dir = fd.path().to_owned();
        let dir = dir.as_path();
        let recovered = recovery::recover(&fd)?;
        if recovered.discarded != Tally::default() {
            recovered
                .ack
                .write(&fd)
                .map_err(|e| OutboxError::io("write the acknowledgement file in", dir, e))?;
        }
        let state = State {
            segments: recovered.segments.into(),
            writing: None,
            ack: recovered.ack.position,
            head_done: recovered.head_done,
            counters: recovered.ack.counters,
            appends: 0,
            unwritten_bytes: 0,
        };
        Ok(Outbox {
            dir: dir.to_owned(),
            fd,
            limits,
            writer: Mutex::new(WriterSlot {
                segment: None,
                next_seq: recovered.next_seq,
            }),
            ack_file: Mutex::new(()),
            state: Mutex::new(state),
            appended: Condvar::new(),
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Appends `payload` (`lines` whole lines, each ending in `\n`) as a batch of one record;
    /// durable when this returns `Ok`. On error nothing was added and earlier records are intact;
    /// retry later.
    pub fn append(&self, payload: &[u8], lines: u32) -> Result<(), OutboxError> {
        self.begin().finish(payload, lines)
    }

    /// Starts a batch of several records, for lines that are encoded a piece at a time: see
    /// [`Appending`]. Other appends wait until it is finished or dropped.
    pub fn begin(&self) -> Appending<'_> {
        Appending {
            outbox: self,
            slot: self.lock_writer(),
            headers: Vec::new(),
        }
    }

    /// A reader of this outbox for its (single) delivery thread.
    pub fn reader(self: &std::sync::Arc<Self>) -> Reader {
        Reader::new(std::sync::Arc::clone(self))
    }

    /// Waits until something is appended after `seen` appends, at most `timeout`. Returns the
    /// number of appends so far.
    pub fn wait_for_append(&self, seen: u64, timeout: Duration) -> u64 {
        let state = self.lock_state();
        let (state, _) = self
            .appended
            .wait_timeout_while(state, timeout, |s| s.appends == seen)
            .unwrap_or_else(|e| e.into_inner());
        state.appends
    }

    /// Appends so far in this process (for [`Outbox::wait_for_append`]).
    pub fn appends(&self) -> u64 {
        self.lock_state().appends
    }

    /// Wakes every thread in [`Outbox::wait_for_append`] (e.g. on shutdown).
    pub fn wake_all(&self) {
        self.appended.notify_all();
    }

    /// Records that `batch` left the outbox, and writes the acknowledgement file when the
    /// outbox is caught up, the batch was rejected, or [`OutboxLimits::ack_bytes`] were
    /// delivered since the last write (the reader goes on from the new position either way;
    /// [`Outbox::write_unwritten_ack`] writes what is left). If the batch's segment was dropped
    /// meanwhile, only the counters change.
    pub fn acknowledge(&self, batch: &Batch, outcome: Outcome) -> Result<(), OutboxError> {
        let _file = self.lock_ack_file();
        let ack = {
            let mut state = self.lock_state();
            match outcome {
                // Saturating: the counters come from an `ack` file another program may have written.
                Outcome::Delivered => {
                    state.counters.delivered_lines = state.counters.delivered_lines.saturating_add(batch.lines())
                }
                Outcome::Rejected => {
                    state.counters.rejected_lines = state.counters.rejected_lines.saturating_add(batch.lines())
                }
            }
            if state.ack == batch.start {
                state.ack = batch.end;
                state.head_done.add(batch.finished);
            }
            state.unwritten_bytes = state.unwritten_bytes.saturating_add(batch.payload().len() as u64);
            let write =
                outcome == Outcome::Rejected || state.unwritten_bytes >= self.limits.ack_bytes || state.caught_up();
            if !write {
                return Ok(());
            }
            state.mark_written()
        };
        self.write_ack(&ack)
    }

    /// Writes the acknowledgement file if deliveries since its last write are not in it yet
    /// (the delivery thread calls this when it stops).
    pub fn write_unwritten_ack(&self) -> Result<(), OutboxError> {
        let _file = self.lock_ack_file();
        let ack = {
            let mut state = self.lock_state();
            if state.unwritten_bytes == 0 {
                return Ok(());
            }
            state.mark_written()
        };
        self.write_ack(&ack)
    }

    /// True while `batch` is still the oldest undelivered data (not acknowledged, not dropped).
    pub fn is_pending(&self, batch: &Batch) -> bool {
        self.lock_state().ack == batch.start
    }

    /// The segment the next record goes into: the open one, or a new one when there is none,
    /// it is full, or it was found corrupt.
    fn segment_for<'a>(
        &self,
        slot: &'a mut WriterSlot,
        header: &RecordHeader,
    ) -> Result<&'a mut SegmentWriter, OutboxError> {
        let rotate = match &slot.segment {
            None => true,
            Some(segment) => self.is_full(segment, header) || self.is_corrupt(segment.seq),
        };
        if rotate {
            let segment = SegmentWriter::create(&self.fd, slot.next_seq)?;
            slot.next_seq += 1;
            let mut state = self.lock_state();
            state.segments.push_back(SegmentInfo {
                seq: segment.seq,
                len: segment.len,
                held: Tally::default(),
                newest_ms: 0,
                corrupt: false,
            });
            state.writing = Some(segment.seq);
            slot.segment = Some(segment);
        }
        Ok(slot.segment.as_mut().expect("a segment was just opened"))
    }

    /// True when `header`'s record should go into a new segment rather than `segment`.
    fn is_full(&self, segment: &SegmentWriter, header: &RecordHeader) -> bool {
        if segment.records == 0 {
            return false;
        }
        let limits = &self.limits;
        let max_segment_bytes = limits.segment_bytes.min(limits.max_bytes / 4).max(1);
        let too_long = segment.len + header.record_len() > max_segment_bytes;
        let too_many_lines = limits
            .max_lines
            .is_some_and(|max| segment.lines + u64::from(header.lines) > (max / 4).max(1));
        let too_old = limits
            .max_age
            .is_some_and(|age| header.appended_ms.saturating_sub(segment.first_ms) > (age / 4).as_millis() as u64);
        too_long || too_many_lines || too_old
    }

    fn is_corrupt(&self, seq: u64) -> bool {
        self.lock_state().segments.iter().any(|s| s.seq == seq && s.corrupt)
    }

    /// Makes the batch just committed to `segment` (its records' `headers`) visible to the
    /// reader and wakes it.
    fn publish(&self, segment: &SegmentWriter, headers: &[RecordHeader]) {
        let mut state = self.lock_state();
        if let Some(info) = state.segments.iter_mut().rev().find(|s| s.seq == segment.seq) {
            info.len = segment.len;
            for header in headers {
                info.held.add(Tally::of(header));
                info.newest_ms = header.appended_ms;
            }
        }
        state.appends += 1;
        drop(state);
        self.appended.notify_all();
    }

    /// Drops the oldest segments while the outbox is over its bounds.
    fn enforce_limits(&self) {
        while let Some(seq) = self.oldest_over_limits() {
            self.drop_segment(seq, "the outbox is over its bound");
        }
    }

    /// The oldest segment, if the outbox is over a bound and it is not the one being written.
    fn oldest_over_limits(&self) -> Option<u64> {
        let state = self.lock_state();
        let oldest = state.segments.front()?;
        if state.writing == Some(oldest.seq) {
            return None;
        }
        let bytes: u64 = state.segments.iter().map(|s| s.len).sum();
        let lines: u64 = state.segments.iter().map(|s| state.undelivered(s).lines).sum();
        let now = unix_millis(SystemTime::now());
        let limits = &self.limits;
        let over = bytes > limits.max_bytes
            || limits.max_lines.is_some_and(|max| lines > max)
            || limits
                .max_age
                .is_some_and(|age| now.saturating_sub(oldest.newest_ms) > age.as_millis() as u64);
        over.then_some(oldest.seq)
    }

    /// Removes segment `seq` (the oldest) with what it still held: counted, logged, acknowledged
    /// past. The reader uses it too, for segments it has delivered or found corrupt.
    fn drop_segment(&self, seq: u64, why: &str) {
        let _file = self.lock_ack_file();
        let (ack, lost) = {
            let mut state = self.lock_state();
            let Some(index) = state.segments.iter().position(|s| s.seq == seq) else {
                return;
            };
            let lost = state.undelivered(&state.segments[index]);
            state.segments.remove(index);
            let counters = &mut state.counters;
            counters.dropped_records = counters.dropped_records.saturating_add(lost.records);
            counters.dropped_lines = counters.dropped_lines.saturating_add(lost.lines);
            counters.dropped_bytes = counters.dropped_bytes.saturating_add(lost.bytes);
            if state.ack.segment <= seq {
                state.ack_past(seq);
            }
            (state.mark_written(), lost)
        };
        if lost.records > 0 {
            warn!(
                outbox = %self.dir.display(),
                segment = seq,
                records = lost.records,
                lines = lost.lines,
                bytes = lost.bytes,
                "dropped undelivered lines: {why}"
            );
        }
        // A segment may go before the acknowledgement is written: an acknowledgement naming a
        // missing segment means the start of the next one.
        let _ = self.write_ack(&ack);
        self.remove_segment_file(seq);
    }

    fn remove_segment_file(&self, seq: u64) {
        if let Err(e) = self.fd.unlink(segment_name(seq)) {
            warn!("cannot remove outbox segment: {e}");
        }
    }

    fn write_ack(&self, ack: &Ack) -> Result<(), OutboxError> {
        ack.write(&self.fd).map_err(|e| {
            warn!(outbox = %self.dir.display(), "cannot write the acknowledgement file: {e}");
            OutboxError::io("write the acknowledgement file in", &self.dir, e)
        })
    }

    fn lock_state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn lock_writer(&self) -> MutexGuard<'_, WriterSlot> {
        self.writer.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn lock_ack_file(&self) -> MutexGuard<'_, ()> {
        self.ack_file.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A batch being appended as several records: [`Appending::push`] writes one that more follow,
/// [`Appending::finish`] the last one, makes the whole batch durable with one `fdatasync` and
/// only then visible to the reader. Dropped unfinished (or after an error), what it wrote is cut
/// away; after a crash, recovery cuts a batch without its last record. So the reader and a
/// restart see each batch whole or not at all, while the lines of a large batch (a round of
/// HAProxy snapshots) never have to be in memory at once.
///
/// The records of a batch are never split across segments: a segment ends after a batch, so it
/// may pass `segment_bytes` by the rest of the batch its first record started.
pub struct Appending<'a> {
    outbox: &'a Outbox,
    slot: MutexGuard<'a, WriterSlot>,
    /// The records written so far.
    headers: Vec<RecordHeader>,
}

impl Appending<'_> {
    /// Writes `payload` (`lines` whole lines) as a record of the batch that more records follow.
    /// On error the whole batch is gone: drop this.
    pub fn push(&mut self, payload: &[u8], lines: u32) -> Result<(), OutboxError> {
        self.write(payload, lines, true)
    }

    /// Writes the batch's last record and makes the batch durable and visible. On error nothing
    /// of the batch was added and earlier batches are intact; retry later.
    pub fn finish(mut self, payload: &[u8], lines: u32) -> Result<(), OutboxError> {
        self.write(payload, lines, false)?;
        let headers = std::mem::take(&mut self.headers);
        let segment = self
            .slot
            .segment
            .as_mut()
            .expect("the batch's records are in the open segment");
        segment.commit(&headers)?;
        self.outbox.publish(segment, &headers);
        self.outbox.enforce_limits();
        Ok(())
    }

    fn write(&mut self, payload: &[u8], lines: u32, more: bool) -> Result<(), OutboxError> {
        let result = self.write_record(payload, lines, more);
        if result.is_err() {
            // The batch's earlier records go too (a failed write was cut back already; a
            // payload refused before writing leaves them written but not durable).
            self.headers.clear();
            if let Some(segment) = self.slot.segment.as_mut() {
                segment.abandon();
            }
        }
        result
    }

    fn write_record(&mut self, payload: &[u8], lines: u32, more: bool) -> Result<(), OutboxError> {
        if payload.last() != Some(&b'\n') {
            return Err(OutboxError::NotWholeLines { len: payload.len() });
        }
        if u32::try_from(payload.len()).is_err() {
            return Err(OutboxError::TooLarge { len: payload.len() });
        }
        if lines > format::MAX_RECORD_LINES {
            return Err(OutboxError::TooManyLines { lines });
        }
        let header = RecordHeader::new(payload, lines, more, unix_millis(SystemTime::now()));
        let segment = if self.headers.is_empty() {
            self.outbox.segment_for(&mut self.slot, &header)?
        } else {
            self.slot
                .segment
                .as_mut()
                .expect("the batch's first record is in the open segment")
        };
        segment.write(&header, payload)?;
        self.headers.push(header);
        Ok(())
    }
}

impl Drop for Appending<'_> {
    fn drop(&mut self) {
        if !self.headers.is_empty() {
            if let Some(segment) = self.slot.segment.as_mut() {
                segment.abandon();
            }
        }
    }
}
