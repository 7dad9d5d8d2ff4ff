//! HAProxy snapshots: haproxystats 0.5.1's aggregation ("haproxystats-process"), with polars.
//!
//! # Input
//! A snapshot directory named by its time (`<epoch>[-<source>-<seq>]`) holding, per HAProxy
//! process, `<socket>_info` (`show info`) and `<socket>_stat` (`show stat` CSV), each ending
//! with the empty line that ends every HAProxy answer. Other files in the directory are
//! ignored. [`aggregate_block`] reads it and returns the metrics in one [`MetricBlock`] (what
//! processing hands to the sinks); [`aggregate`] gives them as separate [`Metric`]s. Neither
//! writes or removes anything.
//!
//! # What is computed (haproxystats 0.5.1, checked line by line by `tests/haproxy_parity.rs`)
//! - daemon (`show info`): 37 fields summed, `Idle_pct` and `Uptime_sec` averaged. CpuUsagePct
//!   = 100 - Idle_pct per process; with two or more processes its 25/50/75/95/99th nearest-rank
//!   percentiles (`<p>PercentileCpuUsagePct`) and sample standard deviation (`StdCpuUsagePct`).
//!   No daemon-level CpuUsagePct. Limits and maxima are summed, like everything else.
//! - `calculate-percentages`: ConnPercentage, ConnRatePercentage, SslConnPercentage,
//!   SslRatePercentage = `int(100 * sum(part) / sum(limit))`, 0 when the limit is 0.
//! - `per-process-metrics`: `daemon.process.<socket>.<m>` for the 37 summed fields,
//!   CpuUsagePct and (with `calculate-percentages`) the percentages of each process.
//! - frontends (`svname` FRONTEND): 31 metrics summed per frontend name.
//! - backends (`svname` BACKEND): 33 summed, act/bck/weight/rtime/ctime/qtime/ttime averaged
//!   over all rows (as 0.5.1; empty cells count as 0).
//! - servers (`type` 2) per backend and server name: 26 summed, throttle/weight and the four
//!   times averaged; `backend.<b>.TotalServers` = distinct server names (sent and counted with
//!   the servers, as 0.5.1 does); with `aggr-server-metrics` also `server.<s>.<m>` grouped by
//!   server name across backends.
//! - `frontend-/backend-/server-metrics` select which of those are sent; `exclude-frontends`
//!   and `exclude-backends` files leave names out (an excluded backend takes its servers along).
//! - `group-namespace` with `frontend-/backend-/server-groups`: an entity whose name matches a
//!   group's pattern (first match in config order) is sent as `haproxy.<ns>.<group>.<tail>`;
//!   with `group-namespace-double-writes` also as `haproxy.<tail>`. Servers (`backend.<b>.server.
//!   <s>` and `server.<s>`) are matched by server name, `TotalServers` by backend name.
//! - self-metrics, `haproxy.haproxystats.<m>`: MetricsHAProxy, MetricsFrontend, MetricsBackend,
//!   MetricsServer (lines sent by that part, plus one, as 0.5.1 counts), WallClockTimeHAProxy,
//!   WallClockTimeFrontends, WallClockTimeBackends, WallClockTimeServers, WallClockTimeAllStats
//!   (parsing and aggregation) and TotalWallClockTime (the whole call, reading included), in
//!   seconds rounded to microseconds.
//! - dots in names become `_`. Paths start at `haproxy.`; the Graphite sink adds
//!   `<namespace>[.<host>].` (haproxystats' `namespace`, `prefix-hostname`, `fqdn`).
//!
//! # Mixed HAProxy versions
//! Columns and `show info` keys are found by name in each file. A metric column a process lacks
//! counts as 0 for its rows (as an empty cell does); a summed daemon field nobody reports is 0
//! (0.5.1 sends `MaxZlibMemUsage 0` for HAProxy 2.6); an averaged one nobody reports is left out.
//!
//! # Deliberate differences from haproxystats 0.5.1
//! - `per-process-metrics` paths use the socket name (`daemon.process.haproxy-1_sock.<m>`), not
//!   `Process_num`, which is 1 for every separate HAProxy instance (their metrics collided).
//!   Each process also gets its CpuUsagePct.
//! - A metric selection names exactly what is sent, each metric aggregated its documented way.
//!   0.5.1 always added the averaged metrics and, when one of them was also selected, sent
//!   pandas' merge duplicates (`act_x`, `act_y`); spoolmon sends `act` once.
//! - No `nan` lines: an average nobody reports is left out (the unreleased haproxystats head
//!   sends `nan` for idle backends' times; 0.5.1 averages over all rows and so do we).
//! - `aggr-server-metrics` uses the selected server metrics and leaves out the servers of
//!   excluded backends; 0.5.1 aggregated every server with the default list.
//! - Errors: a missing half, an empty, binary, truncated or garbled file, a header without rows,
//!   rows whose field count differs from the header, a non-numeric value in an aggregated
//!   field (or one beyond HAProxy's 64-bit counters, whose sums could reach `inf`), or a
//!   directory name that is not a time make the whole snapshot fail with a
//!   [`HaproxySnapshotError`] (the caller moves it to `failed/`). 0.5.1 skipped or crashed.
//! - A file counts as truncated unless it ends with the empty line that ends every HAProxy
//!   answer (0.5.1 aggregated whatever a peer closing half-way had left).
//! - Start-up refuses `*-groups` without `group-namespace`, `group-namespace` without groups or
//!   without `group-namespace-double-writes`, group names with dots, and unreadable exclude
//!   files; 0.5.1 ignored or tripped over them later.
//! - Self-metric timings measure spoolmon's work (milliseconds, not the best part of a second),
//!   in seconds rounded to microseconds.
//!
//! # Speed
//! The reference snapshot (4 processes × 200 frontends, 200 backends × 10 servers; 78,455
//! lines) takes about 8-10 ms of CPU (haproxystats 0.5.1: 560 ms) and under 40 MB peak RSS
//! for the whole bench process: the CSV is parsed by hand straight into per-kind column vectors
//! (lines found with `memchr`, commas eight bytes at a time, fields kept as byte ranges), names
//! become integer keys, polars groups and reduces the columns on the calling thread, and the
//! daemon part (40 numbers) is plain Rust. A little under half the time is parsing, the rest
//! grouping and building the 78,455 metric paths, which go into one string of a
//! [`MetricBlock`] (no `String` per metric: the sinks encode from it; issue 12 measured the
//! end-to-end gain in BENCHMARKS.md). `cargo bench --bench haproxy` measures it.
//!
//! Where polars earns its place: the three group-bys (stable, sum/mean per column) of
//! [`proxies`]. Where it does not and is not used: parsing (by hand, see [`stat`]), the daemon
//! part and `TotalServers` (plain Rust, cheaper than a query).

mod catalog;
mod daemon;
mod error;
mod exclusions;
mod info;
mod names;
mod options;
mod paths;
mod proxies;
mod snapshot;
mod stat;

pub use catalog::{Aggregation, MetricSpec};
pub use error::HaproxySnapshotError;
pub use options::{GroupPattern, GroupPatterns, HaproxyOptions, MetricNames};
pub use snapshot::{is_haproxy_snapshot, ProcessFiles, INFO_SUFFIX, STAT_SUFFIX};

use crate::shared::measurement::{Metric, MetricBlock};
use exclusions::Exclusions;
use info::DaemonFields;
use paths::{Grouping, MetricBuffer, SELF_METRICS};
use stat::{StatRows, Wanted};
use std::path::Path;
use std::time::Instant;
use tracing::debug;

/// What one snapshot became.
#[derive(Clone, Debug, PartialEq)]
pub struct Aggregate {
    /// Every metric, self-metrics included, all at the snapshot's time; paths start at `haproxy.`.
    pub metrics: Vec<Metric>,
    /// The processes aggregated (socket names, sorted).
    pub processes: Vec<String>,
}

/// What one snapshot became, its metrics in one [`MetricBlock`] (what processing hands to
/// the sinks: no `String` per metric).
#[derive(Clone, Debug, PartialEq)]
pub struct AggregateBlock {
    /// Every metric, self-metrics included, all at the snapshot's time; paths start at `haproxy.`.
    pub metrics: MetricBlock,
    /// The processes aggregated (socket names, sorted).
    pub processes: Vec<String>,
}

/// Aggregates the snapshot in `dir` (haproxystats layout) into metrics at `time`: as
/// [`aggregate_block`], each metric a [`Metric`] of its own.
pub fn aggregate(dir: &Path, time: i64, options: &HaproxyOptions) -> Result<Aggregate, HaproxySnapshotError> {
    let block = aggregate_block(dir, time, options)?;
    Ok(Aggregate {
        metrics: block.metrics.to_metrics(),
        processes: block.processes,
    })
}

/// Aggregates the snapshot in `dir` (haproxystats layout) into one block of metrics at `time`.
///
/// `options` must have passed [`HaproxyOptions::validate`]. Exclude files are read now.
pub fn aggregate_block(
    dir: &Path,
    time: i64,
    options: &HaproxyOptions,
) -> Result<AggregateBlock, HaproxySnapshotError> {
    let started = Instant::now();
    snapshot::check_name(dir)?;
    let files = snapshot::read_processes(dir)?;
    aggregate_processes(files, time, options, started)
}

/// Reads the process files of the snapshot `dir` (within the snapshot's bounds), for a sink
/// that ships it whole and for [`aggregate_processes`].
pub fn read_snapshot(dir: &Path) -> Result<Vec<ProcessFiles>, HaproxySnapshotError> {
    snapshot::read_processes(dir)
}

/// [`aggregate_block`] of files already read; `started` is when the snapshot began to be read
/// (the `TotalWallClockTime` self-metric counts from it).
pub fn aggregate_processes(
    files: Vec<ProcessFiles>,
    time: i64,
    options: &HaproxyOptions,
    started: Instant,
) -> Result<AggregateBlock, HaproxySnapshotError> {
    if files.is_empty() {
        return Err(HaproxySnapshotError::NoProcesses);
    }
    let stats_started = Instant::now();
    let specs = Specs::of(options);
    let parsed = Parsed::from_files(&files, &specs, &Exclusions::load(options))?;
    let mut out = MetricBuffer::new(time, parsed.expected_lines(&specs));
    on_this_thread(|| parsed.emit(&specs, options, &mut out))?;
    out.push(SELF_METRICS, "WallClockTimeAllStats", seconds_since(stats_started));
    out.push(SELF_METRICS, "TotalWallClockTime", seconds_since(started));
    debug!(
        processes = files.len(),
        metrics = out.len(),
        "aggregated HAProxy snapshot"
    );
    Ok(AggregateBlock {
        metrics: out.into_block(),
        processes: files.into_iter().map(|f| f.socket).collect(),
    })
}

/// The metrics selected for each kind of row.
struct Specs {
    frontend: Vec<MetricSpec>,
    backend: Vec<MetricSpec>,
    server: Vec<MetricSpec>,
}

impl Specs {
    fn of(options: &HaproxyOptions) -> Specs {
        Specs {
            frontend: options.frontend_specs(),
            backend: options.backend_specs(),
            server: options.server_specs(),
        }
    }

    fn wanted(&self) -> Wanted<'_> {
        Wanted {
            frontend: &self.frontend,
            backend: &self.backend,
            server: &self.server,
        }
    }
}

/// Every process's `show info` fields and `show stat` rows, parsed.
struct Parsed<'a> {
    daemon: Vec<DaemonFields>,
    rows: StatRows<'a>,
}

impl<'a> Parsed<'a> {
    fn from_files(
        files: &'a [ProcessFiles],
        specs: &Specs,
        exclusions: &Exclusions,
    ) -> Result<Parsed<'a>, HaproxySnapshotError> {
        let daemon = files
            .iter()
            .map(|f| info::parse_info(&f.info_name(), &f.socket, &f.info))
            .collect::<Result<Vec<_>, _>>()?;
        let mut rows = StatRows::new(specs.wanted());
        for f in files {
            stat::parse_stat(&f.stat_name(), &f.stat, specs.wanted(), exclusions, &mut rows)?;
        }
        Ok(Parsed { daemon, rows })
    }

    /// About how many metrics will be sent (rows of one process times metrics per row).
    fn expected_lines(&self, specs: &Specs) -> usize {
        let per_process = |rows: usize| rows / self.daemon.len().max(1);
        64 + per_process(self.rows.frontends.len()) * specs.frontend.len()
            + per_process(self.rows.backends.len()) * (specs.backend.len() + 1)
            + per_process(self.rows.servers.len()) * specs.server.len()
    }

    /// Daemon, frontends, backends, servers, each followed by its self-metrics.
    fn emit(self, specs: &Specs, options: &HaproxyOptions, out: &mut MetricBuffer) -> Result<(), HaproxySnapshotError> {
        let grouping = Grouping::new(options);
        let Parsed { daemon, rows } = self;
        let names = proxies::Names {
            proxies: &rows.proxy_names,
            servers: &rows.server_names,
        };
        timed_section(out, "MetricsHAProxy", "WallClockTimeHAProxy", |out| {
            daemon::emit_daemon(&daemon, options, out);
            Ok(())
        })?;
        timed_section(out, "MetricsFrontend", "WallClockTimeFrontends", |out| {
            proxies::emit_frontends(rows.frontends, names, &specs.frontend, &grouping, out)
        })?;
        timed_section(out, "MetricsBackend", "WallClockTimeBackends", |out| {
            proxies::emit_backends(rows.backends, names, &specs.backend, &grouping, out)
        })?;
        timed_section(out, "MetricsServer", "WallClockTimeServers", |out| {
            proxies::emit_servers(
                rows.servers,
                names,
                &specs.server,
                options.aggr_server_metrics,
                &grouping,
                out,
            )
        })
    }
}

/// Runs `work` with polars confined to the calling thread (polars' thread-local switch, set back
/// when `work` returns or unwinds). Callers aggregate snapshots in parallel already, and for
/// queries this small polars' pool cost more CPU in wake-ups than the work itself.
fn on_this_thread<R>(work: impl FnOnce() -> R) -> R {
    use polars_async::executor::ALLOW_RAYON_THREADS;
    struct Restore(bool);
    impl Drop for Restore {
        fn drop(&mut self) {
            ALLOW_RAYON_THREADS.set(self.0);
        }
    }
    let _restore = Restore(ALLOW_RAYON_THREADS.replace(false));
    work()
}

/// Runs one part, then adds its `Metrics<part>` (its lines plus one, as haproxystats counts)
/// and `WallClockTime<part>` self-metrics.
fn timed_section(
    out: &mut MetricBuffer,
    count_name: &str,
    time_name: &str,
    emit: impl FnOnce(&mut MetricBuffer) -> polars::prelude::PolarsResult<()>,
) -> Result<(), HaproxySnapshotError> {
    let started = Instant::now();
    let before = out.len();
    emit(out)?;
    let lines = out.len() - before;
    out.push(SELF_METRICS, count_name, (lines + 1) as f64);
    out.push(SELF_METRICS, time_name, seconds_since(started));
    Ok(())
}

/// Seconds since `start`, rounded to microseconds.
fn seconds_since(start: Instant) -> f64 {
    (start.elapsed().as_secs_f64() * 1e6).round() / 1e6
}
