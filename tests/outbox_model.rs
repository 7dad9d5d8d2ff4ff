//! Model-based test of the outbox (`src/sink/outbox`): random sequences of appends (of one
//! record, or batches of several: `Outbox::begin`), deliveries
//! (acknowledged as delivered or rejected), reads whose acknowledgement never comes, reopens and
//! crashes (the outbox dropped, sometimes with a torn record at the end of the newest segment, a
//! batch whose last record was never written, its last record cut short, or a stray
//! acknowledgement temp file left behind) run against the real
//! outbox on real files and against a model: a queue of records from which the acknowledged
//! prefix is removed, with the segment each record went into so the line bound can be modelled.
//!
//! After every step the two must agree:
//! - what the reader hands out is a prefix of the model's undelivered lines: nothing lost once
//!   `append` returned, nothing handed out again once its acknowledgement was recorded, nothing
//!   handed out when the model holds nothing, and a batch is whole lines within the payload
//!   limit (a record split only when it is larger than the limit);
//! - `status` (read from the files alone) counts the model's undelivered records, lines and
//!   bytes, and its delivered, rejected and dropped counters, as the module documentation says:
//!   a segment dropped for the line bound adds what it still held, a torn or cut tail adds every
//!   byte cut (and no record or line: none of them is whole), a batch without its last record
//!   adds its records, lines and payload bytes.
//!
//! `PROPTEST_CASES` sets the number of cases (64 by default, a few seconds).

use proptest::prelude::*;
use proptest::sample::Index;
use spoolmon::sink::outbox::{status, Outbox, OutboxLimits, Outcome, Reader};
use std::collections::VecDeque;
use std::fs;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// `[len u32][lines u32][appended ms u64][crc32 u32]` before each payload (spool-layout.md).
const RECORD_HEADER_LEN: usize = 20;
/// The magic at the start of each segment file.
const SEGMENT_HEADER_LEN: u64 = 8;

/// What a crash leaves behind besides the files as they were.
#[derive(Clone, Debug)]
enum Damage {
    Nothing,
    /// A replacement of `ack` that was never renamed into place.
    StrayAckTemp,
    /// The start of a record that was being appended (header and part of the payload, or part
    /// of the header), at the end of the newest segment.
    TornAppend(Index),
    /// The newest record cut short, as a disk that lost the end of a write would leave it.
    CutLastRecord(Index),
    /// Whole records of a batch (this many lines each) at the end of the newest segment, all
    /// saying more follow: the process died before the batch's last record.
    UnfinishedBatch(Vec<u32>),
}

#[derive(Clone, Debug)]
enum Op {
    Append {
        lines: u32,
    },
    /// One batch of records of these many lines each (`begin`, `push`..., `finish`).
    AppendBatch(Vec<u32>),
    /// Reads the next batch and acknowledges it.
    Deliver {
        max_payload: usize,
        outcome: Outcome,
    },
    /// Reads the next batch and never acknowledges it (sent, then the process died).
    ReadOnly {
        max_payload: usize,
    },
    /// Drops the outbox and opens it again (there is no close: a stop is a drop).
    Reopen,
    /// Drops the outbox, damages its files, opens it again.
    Crash(Damage),
}

fn max_payload() -> impl Strategy<Value = usize> {
    prop_oneof![Just(1usize), 8usize..64, 64usize..400, Just(1usize << 20)]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (1u32..=6).prop_map(|lines| Op::Append { lines }),
        2 => prop::collection::vec(1u32..=4, 2..=4).prop_map(Op::AppendBatch),
        4 => (max_payload(), prop_oneof![3 => Just(Outcome::Delivered), 1 => Just(Outcome::Rejected)])
            .prop_map(|(max_payload, outcome)| Op::Deliver { max_payload, outcome }),
        1 => max_payload().prop_map(|max_payload| Op::ReadOnly { max_payload }),
        1 => Just(Op::Reopen),
        2 => prop_oneof![
            Just(Damage::Nothing),
            Just(Damage::StrayAckTemp),
            any::<Index>().prop_map(Damage::TornAppend),
            any::<Index>().prop_map(Damage::CutLastRecord),
            prop::collection::vec(1u32..=3, 1..=3).prop_map(Damage::UnfinishedBatch),
        ]
        .prop_map(Op::Crash),
    ]
}

fn limits() -> impl Strategy<Value = OutboxLimits> {
    (prop::option::of(4u64..40), prop_oneof![64u64..400, Just(32u64 << 20)]).prop_map(|(max_lines, segment_bytes)| {
        OutboxLimits {
            max_lines,
            segment_bytes,
            // Every acknowledgement written at once: the model resumes exactly where the last
            // one left off. What a crash repeats under a cadence is tested in
            // tests/outbox.rs (kill -9 during delivery) and the outbox's unit tests.
            ack_bytes: 0,
            ..OutboxLimits::default()
        }
    })
}

/// The payload of record `id`: `lines` lines of different lengths.
fn payload(id: u64, lines: u32) -> Vec<u8> {
    let mut out = Vec::new();
    for i in 0..u64::from(lines) {
        let pad = "x".repeat(((id * 7 + i * 3) % 13) as usize);
        out.extend_from_slice(format!("r{id}.{i} {pad}\n").as_bytes());
    }
    out
}

fn newlines(bytes: &[u8]) -> u64 {
    bytes.iter().filter(|&&b| b == b'\n').count() as u64
}

/// One appended record as the model knows it.
#[derive(Debug)]
struct Record {
    id: u64,
    /// Its place in its batch: the first record is 0.
    in_batch: u32,
    segment: u64,
    payload: Vec<u8>,
    lines: u64,
    /// Payload bytes and lines already acknowledged.
    sent_bytes: usize,
    sent_lines: u64,
}

impl Record {
    fn rest(&self) -> &[u8] {
        &self.payload[self.sent_bytes..]
    }

    fn rest_lines(&self) -> u64 {
        self.lines - self.sent_lines
    }
}

/// The segment the outbox appends to, as the model knows it.
#[derive(Debug)]
struct Writing {
    segment: u64,
    len: u64,
    lines: u64,
    records: u64,
}

/// What a reader of the outbox must see, and what its counters must say.
#[derive(Debug)]
struct Model {
    limits: OutboxLimits,
    /// Records with undelivered lines, oldest first.
    queue: VecDeque<Record>,
    writing: Option<Writing>,
    next_segment: u64,
    next_id: u64,
    /// The record that ends the newest segment file, while the model is sure which it is.
    last_on_disk: Option<u64>,
    delivered_lines: u64,
    rejected_lines: u64,
    dropped_records: u64,
    dropped_lines: u64,
    dropped_bytes: u64,
}

impl Model {
    fn new(limits: OutboxLimits) -> Model {
        Model {
            limits,
            queue: VecDeque::new(),
            writing: None,
            next_segment: 0,
            next_id: 0,
            last_on_disk: None,
            delivered_lines: 0,
            rejected_lines: 0,
            dropped_records: 0,
            dropped_lines: 0,
            dropped_bytes: 0,
        }
    }

    /// The undelivered lines, oldest first.
    fn stream(&self) -> Vec<u8> {
        self.queue.iter().flat_map(|r| r.rest().iter().copied()).collect()
    }

    /// Appends a batch of one record.
    fn append(&mut self, payload: Vec<u8>, lines: u32) -> u64 {
        let id = self.append_record(payload, lines, 0);
        self.enforce_line_bound();
        id
    }

    /// Appends a record: for a batch's first, a new segment when there is none since the open
    /// or this one is full (segment_bytes or a quarter of max_lines); the rest of a batch goes
    /// into the same segment.
    fn append_record(&mut self, payload: Vec<u8>, lines: u32, in_batch: u32) -> u64 {
        let first_of_batch = in_batch == 0;
        let record_len = (RECORD_HEADER_LEN + payload.len()) as u64;
        let lines = u64::from(lines);
        let max_segment_bytes = self.limits.segment_bytes.min(self.limits.max_bytes / 4).max(1);
        let max_lines = self.limits.max_lines;
        let full = |w: &Writing| {
            w.records > 0
                && (w.len + record_len > max_segment_bytes
                    || max_lines.is_some_and(|max| w.lines + lines > (max / 4).max(1)))
        };
        if self.writing.is_none() || first_of_batch && self.writing.as_ref().is_some_and(full) {
            self.writing = Some(Writing {
                segment: self.next_segment,
                len: SEGMENT_HEADER_LEN,
                lines: 0,
                records: 0,
            });
            self.next_segment += 1;
        }
        let writing = self.writing.as_mut().expect("just opened");
        writing.len += record_len;
        writing.lines += lines;
        writing.records += 1;
        let id = self.next_id;
        self.next_id += 1;
        self.queue.push_back(Record {
            id,
            in_batch,
            segment: writing.segment,
            payload,
            lines,
            sent_bytes: 0,
            sent_lines: 0,
        });
        self.last_on_disk = Some(id);
        id
    }

    /// After a batch: the line bound drops whole segments, oldest first, never the one being
    /// written.
    fn enforce_line_bound(&mut self) {
        let Some(writing_segment) = self.writing.as_ref().map(|w| w.segment) else {
            return;
        };
        while let Some(max) = self.limits.max_lines {
            let undelivered: u64 = self.queue.iter().map(Record::rest_lines).sum();
            if undelivered <= max {
                break;
            }
            let oldest = self
                .queue
                .iter()
                .map(|r| r.segment)
                .filter(|&s| s < writing_segment)
                .min();
            let Some(oldest) = oldest else { break };
            for record in self.queue.iter().filter(|r| r.segment == oldest) {
                self.dropped_records += 1;
                self.dropped_lines += record.rest_lines();
                self.dropped_bytes += record.rest().len() as u64;
            }
            self.queue.retain(|r| r.segment != oldest);
        }
    }

    /// Removes the first `bytes` undelivered bytes (whole lines), as an acknowledgement does.
    fn acknowledge(&mut self, mut bytes: usize, lines: u64, outcome: Outcome) {
        match outcome {
            Outcome::Delivered => self.delivered_lines += lines,
            Outcome::Rejected => self.rejected_lines += lines,
        }
        while bytes > 0 {
            let front = self.queue.front_mut().expect("acknowledged more than the model holds");
            let take = bytes.min(front.rest().len());
            front.sent_lines += newlines(&front.rest()[..take]);
            front.sent_bytes += take;
            bytes -= take;
            if front.rest().is_empty() {
                self.queue.pop_front();
            }
        }
    }

    /// Checks a batch the reader handed out against the model (`None`: nothing to hand out).
    fn check_batch(&self, batch: Option<(&[u8], u64)>, max_payload: usize) -> Result<(), TestCaseError> {
        let stream = self.stream();
        let Some((payload, lines)) = batch else {
            prop_assert!(
                stream.is_empty(),
                "nothing handed out, {} bytes undelivered",
                stream.len()
            );
            return Ok(());
        };
        prop_assert!(!payload.is_empty(), "an empty batch");
        prop_assert!(
            stream.starts_with(payload),
            "the batch is not the oldest undelivered lines:\n batch {:?}\n model {:?}",
            String::from_utf8_lossy(payload),
            String::from_utf8_lossy(&stream[..stream.len().min(payload.len() + 40)])
        );
        prop_assert_eq!(payload.last(), Some(&b'\n'), "not whole lines");
        prop_assert_eq!(lines, newlines(payload), "lines() miscounts the payload");
        prop_assert!(
            payload.len() <= max_payload.max(1) || newlines(payload) == 1,
            "{} bytes for a limit of {max_payload}",
            payload.len()
        );
        // Ends inside a record: the batch is a piece of that record alone, which is too large.
        let mut at = 0;
        for record in &self.queue {
            let rest = record.rest().len();
            if payload.len() < at + rest {
                if payload.len() > at {
                    prop_assert_eq!(at, 0, "a record split after another one in the same batch");
                    prop_assert!(
                        rest > max_payload,
                        "a record of {rest} bytes split for a limit of {max_payload}"
                    );
                }
                break;
            }
            at += rest;
        }
        Ok(())
    }

    /// Checks what `status` reads from the files.
    fn check_status(&self, dir: &Path) -> Result<(), TestCaseError> {
        let status = status(dir).map_err(|e| TestCaseError::fail(e.to_string()))?;
        let expected = (
            self.queue.len() as u64,
            self.queue.iter().map(Record::rest_lines).sum::<u64>(),
            self.queue.iter().map(|r| r.rest().len() as u64).sum::<u64>(),
        );
        prop_assert_eq!((status.records, status.lines, status.bytes), expected, "undelivered");
        prop_assert_eq!(
            (status.delivered_lines, status.rejected_lines),
            (self.delivered_lines, self.rejected_lines),
            "delivered and rejected lines"
        );
        prop_assert_eq!(
            (status.dropped_records, status.dropped_lines, status.dropped_bytes),
            (self.dropped_records, self.dropped_lines, self.dropped_bytes),
            "dropped records, lines, bytes"
        );
        prop_assert!(status.problems.is_empty(), "{:?}", status.problems);
        Ok(())
    }
}

/// The real outbox and its one reader.
struct Real {
    outbox: Arc<Outbox>,
    reader: Reader,
}

impl Real {
    fn open(dir: &Path, limits: &OutboxLimits) -> Real {
        let outbox = Arc::new(Outbox::open(dir, limits.clone()).unwrap());
        let reader = outbox.reader();
        Real { outbox, reader }
    }
}

/// The newest segment file in `dir`, if any.
fn newest_segment(dir: &Path) -> Option<PathBuf> {
    let mut segments: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "seg"))
        .collect();
    segments.sort();
    segments.pop()
}

/// The bytes of a whole record for `payload`, as the writer frames it (spool-layout.md), with
/// bit 31 of the line count set when `more` records of its batch follow.
fn framed(payload: &[u8], more: bool) -> Vec<u8> {
    let mut fields = Vec::new();
    fields.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    let flag = if more { 1 << 31 } else { 0 };
    fields.extend_from_slice(&(newlines(payload) as u32 | flag).to_le_bytes());
    fields.extend_from_slice(&1_700_000_000_000u64.to_le_bytes());
    let mut crc = crc32fast::Hasher::new();
    crc.update(&fields);
    crc.update(payload);
    fields.extend_from_slice(&crc.finalize().to_le_bytes());
    fields.extend_from_slice(payload);
    fields
}

/// Damages the files of the (closed) outbox in `dir` and tells the model what that costs.
fn damage(dir: &Path, damage: &Damage, model: &mut Model) {
    match damage {
        Damage::Nothing => {}
        Damage::StrayAckTemp => fs::write(dir.join(".tmp-1-0-ack.part"), "spoolmon-outbox-ack 1\nsegm").unwrap(),
        Damage::TornAppend(keep) => {
            let Some(segment) = newest_segment(dir) else {
                return;
            };
            let record = framed(&payload(999_999, 3), false);
            let kept = 1 + keep.index(record.len() - 1);
            let file = fs::OpenOptions::new().write(true).open(&segment).unwrap();
            let len = file.metadata().unwrap().len();
            file.write_all_at(&record[..kept], len).unwrap();
            // Every torn byte is cut and counted; a torn record is not a whole one.
            model.dropped_bytes += kept as u64;
        }
        Damage::CutLastRecord(keep) => {
            let Some(last) = model.queue.back() else {
                return;
            };
            // The earlier records of its batch go with it (a batch without its last record).
            let batch = (model.queue.len() - 1).checked_sub(last.in_batch as usize);
            let whole_batch_queued = batch.is_some_and(|batch| {
                model.queue[batch].in_batch == 0 && model.queue.range(batch..).all(|r| r.sent_bytes == 0)
            });
            let (Some(batch), true) = (batch, whole_batch_queued) else {
                return; // the model cannot tell what the cut would take
            };
            if model.last_on_disk != Some(last.id) {
                return; // the model cannot tell what the cut would take
            }
            let segment = newest_segment(dir).expect("the newest record is on disk");
            let record_len = RECORD_HEADER_LEN + last.payload.len();
            let cut = 1 + keep.index(record_len - 1);
            let file = fs::OpenOptions::new().write(true).open(&segment).unwrap();
            let len = file.metadata().unwrap().len();
            file.set_len(len - cut as u64).unwrap();
            model.dropped_bytes += (record_len - cut) as u64;
            model.queue.pop_back();
            for earlier in model.queue.drain(batch..) {
                model.dropped_records += 1;
                model.dropped_lines += earlier.lines;
                model.dropped_bytes += earlier.payload.len() as u64;
            }
            model.last_on_disk = None;
        }
        Damage::UnfinishedBatch(pieces) => {
            let Some(segment) = newest_segment(dir) else {
                return;
            };
            let file = fs::OpenOptions::new().write(true).open(&segment).unwrap();
            let mut len = file.metadata().unwrap().len();
            for (i, &lines) in pieces.iter().enumerate() {
                let bytes = payload(888_888 + i as u64, lines);
                let record = framed(&bytes, true);
                file.write_all_at(&record, len).unwrap();
                len += record.len() as u64;
                // Whole records, cut: counted as records, lines and payload bytes.
                model.dropped_records += 1;
                model.dropped_lines += u64::from(lines);
                model.dropped_bytes += bytes.len() as u64;
            }
        }
    }
}

fn run(limits: OutboxLimits, ops: Vec<Op>) -> Result<(), TestCaseError> {
    let temp = tempfile::tempdir().unwrap();
    let dir = temp.path().join("outbox");
    let mut model = Model::new(limits.clone());
    let mut real = Some(Real::open(&dir, &limits));
    for op in &ops {
        match op {
            Op::Append { lines } => {
                let id = model.next_id;
                let bytes = payload(id, *lines);
                let outbox = &real.as_ref().unwrap().outbox;
                outbox
                    .append(&bytes, *lines)
                    .map_err(|e| TestCaseError::fail(e.to_string()))?;
                model.append(bytes, *lines);
            }
            Op::AppendBatch(pieces) => {
                let outbox = &real.as_ref().unwrap().outbox;
                let mut appending = outbox.begin();
                let (last, init) = pieces.split_last().expect("at least two pieces");
                for (i, &lines) in init.iter().enumerate() {
                    let bytes = payload(model.next_id, lines);
                    appending
                        .push(&bytes, lines)
                        .map_err(|e| TestCaseError::fail(e.to_string()))?;
                    model.append_record(bytes, lines, i as u32);
                }
                let bytes = payload(model.next_id, *last);
                appending
                    .finish(&bytes, *last)
                    .map_err(|e| TestCaseError::fail(e.to_string()))?;
                model.append_record(bytes, *last, init.len() as u32);
                model.enforce_line_bound();
            }
            Op::Deliver { max_payload, outcome } => {
                let Real { outbox, reader } = real.as_mut().unwrap();
                let batch = reader.next_batch(*max_payload).unwrap();
                model.check_batch(batch.map(|b| (b.payload(), b.lines())), *max_payload)?;
                if let Some(batch) = batch {
                    let (bytes, lines) = (batch.payload().len(), batch.lines());
                    outbox.acknowledge(batch, *outcome).unwrap();
                    model.acknowledge(bytes, lines, *outcome);
                }
            }
            Op::ReadOnly { max_payload } => {
                let batch = real.as_mut().unwrap().reader.next_batch(*max_payload).unwrap();
                model.check_batch(batch.map(|b| (b.payload(), b.lines())), *max_payload)?;
            }
            Op::Reopen => {
                drop(real.take());
                model.writing = None;
                real = Some(Real::open(&dir, &limits));
            }
            Op::Crash(how) => {
                drop(real.take());
                model.writing = None;
                damage(&dir, how, &mut model);
                real = Some(Real::open(&dir, &limits));
            }
        }
        model.check_status(&dir)?;
    }
    // Whatever is left comes out once, in order, after one more restart.
    drop(real);
    let Real { outbox, mut reader } = Real::open(&dir, &limits);
    let mut rest = Vec::new();
    while let Some(batch) = reader.next_batch(1 << 20).unwrap() {
        rest.extend_from_slice(batch.payload());
        outbox.acknowledge(batch, Outcome::Delivered).unwrap();
    }
    let expected = model.stream();
    prop_assert_eq!(String::from_utf8_lossy(&rest), String::from_utf8_lossy(&expected));
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: std::env::var("PROPTEST_CASES").ok().and_then(|c| c.parse().ok()).unwrap_or(64),
        ..ProptestConfig::default()
    })]

    #[test]
    fn the_outbox_hands_out_what_the_model_of_a_queue_holds(
        limits in limits(),
        ops in prop::collection::vec(op(), 1..=40),
    ) {
        run(limits, ops)?;
    }
}
