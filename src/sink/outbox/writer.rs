//! The segment being appended to: one record written and `fdatasync`ed per append, cut back to
//! the last good record when a write or sync fails.

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
    /// Durable length: every byte before it is a complete, synced record.
    pub len: u64,
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
            records: 0,
            lines: 0,
            first_ms: 0,
        })
    }

    /// Appends one record and makes it durable. On failure (disk full, file too large, I/O
    /// error) the file is cut back to its previous length, so earlier records stay intact and the
    /// next append starts at a record boundary.
    pub fn append(&mut self, header: &RecordHeader, payload: &[u8]) -> Result<(), OutboxError> {
        let written = self
            .file
            .write_all_at(&header.to_bytes(), self.len)
            .and_then(|()| self.file.write_all_at(payload, self.len + RECORD_HEADER_LEN as u64))
            .and_then(|()| self.file.sync_data());
        if let Err(e) = written {
            self.cut_back();
            return Err(OutboxError::io("append a record to", &self.path, e));
        }
        self.len += header.record_len();
        self.records += 1;
        self.lines += u64::from(header.lines);
        if self.first_ms == 0 {
            self.first_ms = header.appended_ms;
        }
        Ok(())
    }

    /// Truncates a partly written record away. A failure here is logged only: the torn bytes
    /// are then found by checksum when the outbox is next opened, and the in-memory length still
    /// points before them, so the next append overwrites them.
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
