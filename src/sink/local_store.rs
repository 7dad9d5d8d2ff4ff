//! local-store: haproxystats' debugging dispatcher. What its route takes of every batch is
//! appended, in Graphite plaintext (the same lines and namespace as the Graphite sink), to
//! `<dir>/<time>/stats`, one directory per distinct result or metric time, and fsynced before
//! [`ResultSink::accept`] returns. No outbox: the file is the destination.
//!
//! **Nothing ever deletes these files: the directory grows without bound** (haproxystats warns
//! not to leave it enabled for more than an hour). Enable it to debug, then remove it.

use super::graphite::{GraphiteEncoder, GraphiteOptions};
use super::route::Route;
use super::route::{Kind, MetricGlobs, OrderGlobs, RouteKeys};
use crate::process::handoff::Kind as DataKind;
use crate::process::handoff::ResultSink;
use crate::process::handoff::SinkBatch;
use crate::process::handoff::SinkError;
use crate::shared::measurement::MetricRef;
use crate::shared::measurement::OrderResult;
use crate::shared::option::InvalidOption;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

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
    /// Kinds of data this sink takes: `ping` (ping results), `haproxy` (HAProxy metrics from
    /// processing), `self` (self-metrics, sent to the sinks `self-metrics: {sinks}` selects).
    /// Default all three.
    pub takes: Vec<Kind>,
    /// Which orders' ping results this sink takes: globs on order ids (`web/**`); see
    /// spool-layout.md, "Routing".
    pub orders: OrderGlobs,
    /// Which HAProxy and self metrics this sink takes: globs on their paths before the
    /// namespace (`haproxy.frontend.*.scur`); see spool-layout.md, "Routing".
    pub metrics: MetricGlobs,
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
            takes: graphite.takes,
            orders: graphite.orders,
            metrics: graphite.metrics,
        }
    }
}

impl LocalStoreOptions {
    /// The routing keys (`takes`, `orders`, `metrics`).
    pub fn route_keys(&self) -> RouteKeys<'_> {
        RouteKeys {
            takes: &self.takes,
            orders: &self.orders,
            metrics: &self.metrics,
        }
    }

    /// Checks every option but the route (checked for every sink type by
    /// [`super::config::validate_sinks`]); the error names the key.
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
    /// The sink's name under `sinks:` (in logs, errors and processing's bookkeeping).
    name: String,
    dir: PathBuf,
    encoder: GraphiteEncoder,
    route: Route,
    /// Serializes appends, so lines of concurrent batches never interleave within a file.
    writing: Mutex<()>,
}

/// The lines of one batch that go into one `<time>/stats` file.
#[derive(Default)]
struct TimeSlice<'a> {
    results: Vec<&'a OrderResult>,
    metrics: Vec<MetricRef<'a>>,
}

impl LocalStore {
    /// Sink `name`: a store under the options' `dir`, writing what `encoder` (the Graphite
    /// sink's) writes of what the options' route takes. Fails only on a route that
    /// [`LocalStoreOptions::validate`] refuses.
    pub fn new(name: &str, options: &LocalStoreOptions, encoder: GraphiteEncoder) -> Result<LocalStore, InvalidOption> {
        Ok(LocalStore {
            name: name.to_owned(),
            dir: options.dir.clone(),
            encoder,
            route: options.route_keys().compile()?,
            writing: Mutex::new(()),
        })
    }

    /// Encodes one time's results and metrics and appends them to `<dir>/<time>/stats`.
    fn append(&self, time: i64, slice: &TimeSlice<'_>, buffer: &mut Vec<u8>) -> io::Result<()> {
        buffer.clear();
        for result in &slice.results {
            self.encoder.encode_result(result, buffer);
        }
        for metric in &slice.metrics {
            self.encoder.encode_metric(*metric, buffer);
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
            sink: self.name.clone(),
            message: format!("{what}: {error}"),
        }
    }
}

impl ResultSink for LocalStore {
    fn name(&self) -> &str {
        &self.name
    }

    fn accept(&self, batch: SinkBatch<'_>) -> Result<(), SinkError> {
        let mut by_time: BTreeMap<i64, TimeSlice<'_>> = BTreeMap::new();
        for result in self.route.results(batch) {
            by_time.entry(result.time).or_default().results.push(result);
        }
        for metric in self.route.metrics(batch) {
            by_time.entry(metric.time).or_default().metrics.push(metric);
        }
        if by_time.is_empty() {
            return Ok(());
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

    fn takes(&self, kind: DataKind) -> bool {
        self.route.takes(kind)
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
