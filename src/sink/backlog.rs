//! The backlog of every sink's outbox, read from `outbox/` alone (no daemon needed): what
//! `spoolmon outbox` prints and the outbox check reads. Directories are opened through
//! descriptors without following symlinks and files only when they are regular (non-blocking),
//! so whatever is planted under `outbox/` gives an answer with the reason, never a hang.

use super::outbox::{self, OutboxStatus};
use crate::spool::beneath::{Dir, Kind};
use serde::Serialize;
use std::path::Path;
use std::time::SystemTime;

/// One sink's backlog, or why it could not be read.
#[derive(Debug, Default, Serialize)]
pub struct SinkBacklog {
    pub sink: String,
    /// Undelivered records, lines and bytes.
    pub records: u64,
    pub lines: u64,
    pub bytes: u64,
    /// Seconds since the oldest undelivered record was appended.
    pub oldest_age_seconds: Option<u64>,
    pub dropped_lines: u64,
    pub dropped_bytes: u64,
    pub rejected_lines: u64,
    pub delivered_lines: u64,
    /// Set when the outbox could not be read; the counts are then 0.
    pub error: Option<String>,
    /// What is wrong with its files though it could be read (an unreadable `ack`, a non-file
    /// named like a segment).
    pub problems: Vec<String>,
}

impl SinkBacklog {
    fn new(sink: String, status: OutboxStatus, now: SystemTime) -> SinkBacklog {
        let age = status
            .oldest
            .map(|oldest| now.duration_since(oldest).unwrap_or_default().as_secs());
        SinkBacklog {
            sink,
            records: status.records,
            lines: status.lines,
            bytes: status.bytes,
            oldest_age_seconds: age,
            dropped_lines: status.dropped_lines,
            dropped_bytes: status.dropped_bytes,
            rejected_lines: status.rejected_lines,
            delivered_lines: status.delivered_lines,
            error: None,
            problems: status.problems,
        }
    }

    fn unreadable(sink: String, error: String) -> SinkBacklog {
        SinkBacklog {
            sink,
            records: 0,
            lines: 0,
            bytes: 0,
            oldest_age_seconds: None,
            dropped_lines: 0,
            dropped_bytes: 0,
            rejected_lines: 0,
            delivered_lines: 0,
            error: Some(error),
            problems: Vec::new(),
        }
    }
}

/// The backlog of every directory under `outbox_root`, sorted by sink name. A missing
/// `outbox_root` means no sink has run yet: an empty list.
pub fn read_all(outbox_root: &Path, now: SystemTime) -> std::io::Result<Vec<SinkBacklog>> {
    let root = match Dir::open(outbox_root) {
        Ok(root) => root,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut backlogs = Vec::new();
    for (name, kind) in root.entries()? {
        let sink = name.to_string_lossy().into_owned();
        match kind {
            Kind::Dir => {}
            Kind::Symlink => {
                let error = format!("{} is a symbolic link, not followed", outbox_root.join(&sink).display());
                backlogs.push(SinkBacklog::unreadable(sink, error));
                continue;
            }
            Kind::File | Kind::Other => continue,
        }
        let read = root
            .open_dir(&sink)
            .map_err(|e| e.to_string())
            .and_then(|dir| outbox::status_in(&dir).map_err(|e| e.to_string()));
        backlogs.push(match read {
            Ok(status) => SinkBacklog::new(sink, status, now),
            Err(e) => SinkBacklog::unreadable(sink, e),
        });
    }
    backlogs.sort_by(|a, b| a.sink.cmp(&b.sink));
    Ok(backlogs)
}

/// A table for people: one line per sink.
pub fn format_table(backlogs: &[SinkBacklog]) -> String {
    let mut out = format!(
        "{:<20} {:>9} {:>11} {:>13} {:>10} {:>11} {:>11} {:>13}\n",
        "SINK", "RECORDS", "LINES", "BYTES", "OLDEST", "DROPPED", "REJECTED", "DELIVERED"
    );
    for b in backlogs {
        if let Some(error) = &b.error {
            out.push_str(&format!("{:<20} unreadable: {error}\n", b.sink));
            continue;
        }
        let oldest = b.oldest_age_seconds.map_or("-".to_string(), |s| format!("{s}s"));
        out.push_str(&format!(
            "{:<20} {:>9} {:>11} {:>13} {:>10} {:>11} {:>11} {:>13}\n",
            b.sink, b.records, b.lines, b.bytes, oldest, b.dropped_lines, b.rejected_lines, b.delivered_lines
        ));
        for problem in &b.problems {
            out.push_str(&format!("{:<20} warning: {problem}\n", b.sink));
        }
    }
    if backlogs.is_empty() {
        out.push_str("(no sink has an outbox)\n");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sink::outbox::{Outbox, OutboxLimits};
    use std::time::Duration;

    #[test]
    fn every_outbox_is_listed_with_its_backlog() {
        let root = tempfile::tempdir().unwrap();
        let outbox = Outbox::open(&root.path().join("carbon"), OutboxLimits::default()).unwrap();
        outbox.append(b"a 1 1\nb 2 1\n", 2).unwrap();
        outbox.append(b"c 3 1\n", 1).unwrap();
        std::fs::create_dir(root.path().join("idle")).unwrap();
        std::fs::write(root.path().join("stray-file"), b"x").unwrap();
        let later = SystemTime::now() + Duration::from_secs(120);
        let backlogs = read_all(root.path(), later).unwrap();
        let names: Vec<&str> = backlogs.iter().map(|b| b.sink.as_str()).collect();
        assert_eq!(names, ["carbon", "idle"]);
        assert_eq!((backlogs[1].lines, backlogs[1].oldest_age_seconds), (0, None));
        let carbon = &backlogs[0];
        assert_eq!((carbon.records, carbon.lines, carbon.bytes), (2, 3, 18));
        assert!(carbon.oldest_age_seconds.is_some_and(|age| (119..=121).contains(&age)));
        let table = format_table(&backlogs);
        assert!(table.contains("carbon"), "{table}");
        assert_eq!(read_all(&root.path().join("missing"), later).unwrap().len(), 0);
    }
}
