//! local-store: haproxystats' debugging dispatcher. Every batch is appended, in Graphite
//! plaintext (the same lines and namespace as the Graphite sink), to `<dir>/<time>/stats`, one
//! directory per distinct result or metric time, and fsynced before [`ResultSink::accept`]
//! returns. No outbox: the file is the destination.
//!
//! **Nothing ever deletes these files: the directory grows without bound** (haproxystats warns
//! not to leave it enabled for more than an hour). Enable it to debug, then remove it.

use super::graphite::{GraphiteEncoder, GraphiteOptions};
use crate::process::handoff::ResultSink;
use crate::process::handoff::SinkBatch;
use crate::process::handoff::SinkError;
use crate::shared::measurement::Metric;
use crate::shared::measurement::OrderResult;
use crate::shared::option::InvalidOption;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// Name of the sink, in logs and errors.
pub const NAME: &str = "local-store";

/// Options of the local-store sink.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(default, rename_all = "kebab-case", deny_unknown_fields)]
pub struct LocalStoreOptions {
    /// Directory of the `<time>/stats` files; created if missing. Default
    /// `/var/lib/spoolmon/local-store`. Grows without bound (spool-layout.md, "local-store"):
    /// use it to debug.
    pub dir: PathBuf,
    /// First component(s) of every path, as the Graphite sink's `namespace` (same default).
    pub namespace: String,
    /// Put the host's name after the namespace, as the Graphite sink's (same default).
    pub prefix_hostname: bool,
    /// Use the fully qualified host name, as the Graphite sink's `fqdn` (same default).
    pub fqdn: bool,
    /// Host name to use instead of the system's, as the Graphite sink's (same default).
    pub hostname: Option<String>,
}

impl Default for LocalStoreOptions {
    fn default() -> Self {
        let graphite = GraphiteOptions::default();
        LocalStoreOptions {
            dir: PathBuf::from("/var/lib/spoolmon/local-store"),
            namespace: graphite.namespace,
            prefix_hostname: graphite.prefix_hostname,
            fqdn: graphite.fqdn,
            hostname: graphite.hostname,
        }
    }
}

impl LocalStoreOptions {
    pub fn validate(&self) -> Result<(), InvalidOption> {
        if self.dir.as_os_str().is_empty() {
            return Err(InvalidOption::new("local-store.dir", "must name a directory"));
        }
        self.naming().validate()
    }

    /// The Graphite options that name the paths (the rest at their defaults).
    fn naming(&self) -> GraphiteOptions {
        GraphiteOptions {
            namespace: self.namespace.clone(),
            prefix_hostname: self.prefix_hostname,
            fqdn: self.fqdn,
            hostname: self.hostname.clone(),
            ..GraphiteOptions::default()
        }
    }

    /// The encoder of this store's lines (looks the host name up now, once).
    pub fn encoder(&self) -> GraphiteEncoder {
        GraphiteEncoder::new(&self.naming())
    }
}

/// Appends Graphite lines to `<dir>/<time>/stats`, durably, for every batch.
#[derive(Debug)]
pub struct LocalStore {
    dir: PathBuf,
    encoder: GraphiteEncoder,
    /// Serializes appends, so lines of concurrent batches never interleave within a file.
    writing: Mutex<()>,
}

/// The lines of one batch that go into one `<time>/stats` file.
#[derive(Default)]
struct TimeSlice<'a> {
    results: Vec<&'a OrderResult>,
    metrics: Vec<&'a Metric>,
}

impl LocalStore {
    /// A store under the options' `dir`, writing what `encoder` (the Graphite sink's) writes.
    pub fn new(options: &LocalStoreOptions, encoder: GraphiteEncoder) -> LocalStore {
        LocalStore {
            dir: options.dir.clone(),
            encoder,
            writing: Mutex::new(()),
        }
    }

    /// Encodes one time's results and metrics and appends them to `<dir>/<time>/stats`.
    fn append(&self, time: i64, slice: &TimeSlice<'_>, buffer: &mut Vec<u8>) -> io::Result<()> {
        buffer.clear();
        for result in &slice.results {
            self.encoder.encode_result(result, buffer);
        }
        for metric in &slice.metrics {
            self.encoder.encode_metric(metric, buffer);
        }
        if buffer.is_empty() {
            return Ok(());
        }
        let time_dir = self.dir.join(time.to_string());
        if create_dir(&time_dir)? {
            sync_dir(&self.dir)?;
        }
        let path = time_dir.join("stats");
        let mut file = OpenOptions::new().create(true).append(true).open(&path)?;
        let was_empty = file.metadata()?.len() == 0;
        file.write_all(buffer)?;
        file.sync_data()?;
        if was_empty {
            sync_dir(&time_dir)?;
        }
        Ok(())
    }

    fn error(&self, what: String, error: io::Error) -> SinkError {
        SinkError {
            sink: NAME.to_string(),
            message: format!("{what}: {error}"),
        }
    }
}

impl ResultSink for LocalStore {
    fn name(&self) -> &str {
        NAME
    }

    fn accept(&self, batch: SinkBatch<'_>) -> Result<(), SinkError> {
        let mut by_time: BTreeMap<i64, TimeSlice<'_>> = BTreeMap::new();
        for result in batch.results {
            by_time.entry(result.time).or_default().results.push(result);
        }
        for metric in batch.metrics {
            by_time.entry(metric.time).or_default().metrics.push(metric);
        }
        let _writing = self.writing.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        fs::create_dir_all(&self.dir).map_err(|e| self.error(format!("creating {}", self.dir.display()), e))?;
        let mut buffer = Vec::new();
        for (time, slice) in &by_time {
            self.append(*time, slice, &mut buffer).map_err(|e| {
                let path = self.dir.join(time.to_string()).join("stats");
                self.error(format!("appending to {}", path.display()), e)
            })?;
        }
        Ok(())
    }
}

/// Creates `dir`; true if it did not exist before.
fn create_dir(dir: &Path) -> io::Result<bool> {
    match fs::create_dir(dir) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(false),
        Err(e) => Err(e),
    }
}

/// Makes the entries of `dir` durable (a new file or subdirectory is only durable once its
/// directory is synced).
fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}
