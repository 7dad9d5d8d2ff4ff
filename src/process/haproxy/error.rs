//! Why a HAProxy snapshot cannot be aggregated. Each variant names the file (relative to the
//! snapshot directory) and the reason, so the caller can write it to `failed/<snap>/REASON`.

use std::io;

/// A snapshot that cannot be aggregated. Every variant but [`HaproxySnapshotError::Io`] is about
/// the snapshot's content: it goes to `failed/` and is never retried. An I/O error is classified
/// by its errno ([`HaproxySnapshotError::fault`]): a transient one (EIO, EMFILE, ...) keeps the
/// snapshot for a retry.
#[derive(Debug, thiserror::Error)]
pub enum HaproxySnapshotError {
    #[error("snapshot directory name {0:?} is not a time (expected <unix-epoch>[-<source>-<seq>])")]
    NameNotATime(String),
    #[error("cannot read {file}: {source}")]
    Io { file: String, source: io::Error },
    #[error("no <socket>_info and <socket>_stat files: not a HAProxy snapshot")]
    NoProcesses,
    #[error("{present} has no {missing} beside it: every process needs both halves")]
    MissingHalf { present: String, missing: String },
    #[error("{file} is not a regular file")]
    NotAFile { file: String },
    #[error("{file} is larger than {limit} bytes")]
    TooLarge { file: String, limit: u64 },
    #[error("{count} <socket>_info/<socket>_stat pairs, more than the {limit} a snapshot may hold")]
    TooManyProcesses { count: usize, limit: usize },
    #[error(
        "the <socket>_info/<socket>_stat files hold {total} bytes together, more than the {limit} a snapshot may hold"
    )]
    SnapshotTooLarge { total: u64, limit: u64 },
    #[error("{file} is empty")]
    Empty { file: String },
    #[error("{file} holds binary data (byte offset {offset})")]
    Binary { file: String, offset: usize },
    #[error("{file} is truncated: it does not end with the empty line that ends every HAProxy answer")]
    Truncated { file: String },
    #[error("{file}: {reason}")]
    Garbage { file: String, reason: String },
    #[error("{file} has a header but no rows")]
    HeaderOnly { file: String },
    #[error("{file}: the header has no {column:?} column")]
    MissingColumn { file: String, column: &'static str },
    #[error("{file} line {line}: {found} fields where the header has {expected}")]
    MismatchedColumns {
        file: String,
        line: usize,
        expected: usize,
        found: usize,
    },
    #[error("{file} line {line}: {field} is {value:?}, not a number")]
    NotANumber {
        file: String,
        line: usize,
        field: String,
        value: String,
    },
    #[error("aggregation failed: {0}")]
    Aggregation(#[from] polars::error::PolarsError),
}

impl HaproxySnapshotError {
    /// Whose fault it is: an I/O error by its errno (see [`crate::spool::fault`]), everything
    /// else the snapshot's own.
    pub fn fault(&self) -> crate::spool::fault::Fault {
        match self {
            HaproxySnapshotError::Io { source, .. } => crate::spool::fault::of_io(source),
            _ => crate::spool::fault::Fault::Permanent,
        }
    }
}
