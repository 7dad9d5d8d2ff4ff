//! The segment being appended to: the records of one batch written, then `fdatasync`ed once;
//! cut back to the end of the last durable batch when a write or sync fails.

use super::format::{segment_name, RecordHeader, MAGIC, RECORD_HEADER_LEN, SEGMENT_HEADER_LEN};
use super::OutboxError;
use crate::spool::beneath::Dir;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;

/// The open segment file of the writer and what it holds.
#[derive(Debug)]
pub struct SegmentWriter {
    pub seq: u64,
    file: File,
    path: PathBuf,
    /// Durable length: every byte before it is a complete, synced batch.
    pub len: u64,
    /// End of what the batch being written has written so far (`len` when none is).
    written: u64,
    pub records: u64,
    pub lines: u64,
    /// Unix ms of the first record, 0 while there is none.
    pub first_ms: u64,
}

impl SegmentWriter {
    /// Creates segment `seq` in `dir` with its magic header, durably (file and directory synced).
    /// The name must be free (`O_EXCL`): nothing planted under it is ever written through.
    pub fn create(dir: &Dir, seq: u64) -> Result<SegmentWriter, OutboxError> {
        let name = segment_name(seq);
        let path = dir.path().join(&name);
        let file = dir
            .create_new(&name)
            .map_err(|e| OutboxError::io("create segment", &path, e))?;
        let written = file
            .write_all_at(&MAGIC, 0)
            .and_then(|()| file.sync_data())
            .and_then(|()| dir.sync());
        if let Err(e) = written {
            let _ = dir.unlink(&name);
            return Err(OutboxError::io("write the header of segment", &path, e));
        }
        Ok(SegmentWriter {
            seq,
            file,
            path,
            len: SEGMENT_HEADER_LEN,
            written: SEGMENT_HEADER_LEN,
            records: 0,
            lines: 0,
            first_ms: 0,
        })
    }

    /// Writes one record of a batch after what the batch wrote before; durable only with
    /// [`SegmentWriter::commit`]. On failure (disk full, file too large, I/O error) the file is
    /// cut back to its durable length: the whole batch is gone, earlier batches stay intact and
    /// the next batch starts at a record boundary.
    pub fn write(&mut self, header: &RecordHeader, payload: &[u8]) -> Result<(), OutboxError> {
        let written = self
            .file
            .write_all_at(&header.to_bytes(), self.written)
            .and_then(|()| self.file.write_all_at(payload, self.written + RECORD_HEADER_LEN as u64));
        if let Err(e) = written {
            self.abandon();
            return Err(OutboxError::io("append a record to", &self.path, e));
        }
        self.written += header.record_len();
        Ok(())
    }

    /// Makes the batch written since the last commit durable; `headers` are its records.
    pub fn commit(&mut self, headers: &[RecordHeader]) -> Result<(), OutboxError> {
        if let Err(e) = self.file.sync_data() {
            self.abandon();
            return Err(OutboxError::io("append a record to", &self.path, e));
        }
        self.len = self.written;
        for header in headers {
            self.records += 1;
            self.lines += u64::from(header.lines);
            if self.first_ms == 0 {
                self.first_ms = header.appended_ms;
            }
        }
        Ok(())
    }

    /// Forgets what the batch being written wrote, also a record torn part-way: cut back to the
    /// durable length.
    pub fn abandon(&mut self) {
        self.written = self.len;
        self.cut_back();
    }

    /// Truncates a partly written batch away. A failure here is logged only: the torn bytes
    /// are then found when the outbox is next opened (by checksum, or as a batch without its
    /// last record), and the in-memory length still points before them, so the next batch
    /// overwrites them.
    fn cut_back(&self) {
        if let Err(e) = self.file.set_len(self.len).and_then(|()| self.file.sync_data()) {
            tracing::warn!(
                file = %self.path.display(),
                offset = self.len,
                "cannot cut a failed append back to the last good record: {e}"
            );
        }
    }
}
