//! An order's recent steps, read back from its `main.rrd` (written by [`super::rrd`]) with
//! librrd's fetch: what `spoolmon show` prints below the last result.
//!
//! Owns nothing on disk and writes nothing: it reads `<dir>/<id>/main.rrd` below `output/` (or
//! `archive/`), beside a running daemon.
//!
//! Invariants:
//! - **No symlink is followed.** The order's directory is opened below the held `output/` (or
//!   `archive/`) descriptor through [`crate::spool::beneath`] (a symlink on the way is refused),
//!   `main.rrd` is looked at without following it (a symlink, FIFO, device or directory is
//!   refused by name), then opened `O_NOFOLLOW | O_NONBLOCK` and checked with `fstat` to be a
//!   regular file. librrd only takes a path: it is handed `/proc/self/fd/<n>` of that open file,
//!   which reopens the very inode that was checked, so a file renamed or a symlink planted over
//!   the name after the check is never read. No race is left (it needs `/proc`, as the HAProxy
//!   snapshot reader does). librrd's own error messages name the `/proc` path; they are shown
//!   with the file's real path instead.
//! - **Bounded.** At most [`MAX_ROWS`] rows are returned; at most [`MAX_FETCH_VALUES`] values
//!   are fetched (a range that would need more is refused, which only a foreign file with a fine
//!   archive and many data sources can cause).
//! - **Unknown stays unknown.** A step librrd has no value for (never measured, an explicit `U`,
//!   a gap longer than the heartbeat, a row before the file was created) is `None`, never 0.
//!
//! # Choosing the resolution
//!
//! The window is the `range` seconds before now (or, for an archived order, before the file's
//! last update), and no later than the file's last update (rows after it are not written yet).
//! Rows are written at the end of their step, by a daemon that measures during the step, so the
//! newest row can end up to one step after now: it is in the window. For every `AVERAGE` archive, rows of `r` seconds, the
//! window holds `n` of its rows; shown rows are `D = r * ceil(n / MAX_ROWS)` seconds, each the
//! average of `D / r` archive rows (an average is unknown when fewer than half of its rows are
//! known, as RRD's own xff of 0.5). Of the archives that cover the whole window, the one with
//! the smallest `D` is taken (the coarser one on a tie: it is consolidated by librrd already);
//! when none covers it, the one reaching furthest back. Shown rows start at multiples of `D`
//! (unix time), as RRD aligns its own rows.
//!
//! Data sources: `loss`, `median` and `ping1..pingN` (the Smokeping template), whichever the file
//! has. A row's min and max are the smallest and largest `pingN` value; above the file's step,
//! where the `AVERAGE` archive holds averages of each rank, they come from the `MIN` and `MAX`
//! archives of the same resolution when the file has them (spoolmon's files do), so they are the
//! true extremes of the row's time.
//!
//! Called by [`super::show`].

use super::rrd::FILE_NAME;
use crate::shared::measurement::OrderId;
use crate::spool::beneath::{Dir, Kind};
use rrd::ops::info::{info, InfoValue};
use rrd::ConsolidationFn;
use serde::Serialize;
use std::collections::HashMap;
use std::io;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::time::{Duration, UNIX_EPOCH};

/// The longest range: 520 weeks, what the longest archive spoolmon writes covers.
pub const MAX_RANGE: u64 = 520 * 7 * 86_400;

/// At most this many rows are shown.
pub const MAX_ROWS: u64 = 60;

/// At most this many values (rows times data sources) are fetched from librrd at once.
pub const MAX_FETCH_VALUES: u64 = 10_000_000;

/// Why an order has no recent steps to show.
#[derive(Debug, thiserror::Error)]
pub enum HistoryError {
    /// No `main.rrd` (never measured, an `rrd_template: norrd` order, or no directory at all).
    #[error("no {FILE_NAME} (not measured yet, or the order has rrd_template: norrd)")]
    Missing,
    #[error("{} is a symlink (not followed)", path.display())]
    Symlink { path: PathBuf },
    #[error("{} is not a regular file", path.display())]
    NotRegular { path: PathBuf },
    /// The directory or the file could not be opened (the message names it).
    #[error("{0}")]
    Io(io::Error),
    #[error("{} cannot be read as an RRD: {reason}", path.display())]
    Unreadable { path: PathBuf, reason: String },
    #[error("{} has no AVERAGE archive", path.display())]
    NoAverage { path: PathBuf },
    #[error("{} has none of the data sources loss, median, ping<N> (it has: {names})", path.display())]
    Foreign { path: PathBuf, names: String },
    #[error("{}: the range needs {values} values at {resolution} s per row; choose a shorter --range", path.display())]
    TooMuch {
        path: PathBuf,
        values: u64,
        resolution: u64,
    },
}

/// The recent steps of one order, as `spoolmon show` prints them (and its `--json`).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct History {
    /// The file read.
    pub file: String,
    /// The file's step, seconds.
    pub step: u64,
    /// The file's last update, unix seconds (the end of the last step written).
    pub last_update: i64,
    /// Number of `ping<N>` data sources (the order's pings).
    pub pings: u32,
    /// The range asked for, seconds.
    pub range: u64,
    /// What the range ends at: `now` or `last_update`.
    pub window_end: WindowEnd,
    /// Start of the first row shown and end of the last one (unix seconds); `end` is not later
    /// than `last_update`, `start` not earlier than now (or `last_update`) minus `range`,
    /// rounded up to `resolution`.
    pub start: i64,
    pub end: i64,
    /// Seconds per row shown.
    pub resolution: u64,
    /// Seconds per row of the archive read (`resolution` is a multiple of it).
    pub archive_resolution: u64,
    /// Whether min and max come from the file's MIN and MAX archives (else from the pings of
    /// the AVERAGE archive).
    pub min_max_archives: bool,
    /// Oldest first.
    pub rows: Vec<Row>,
}

/// One row: the `resolution` seconds from `start`. Values null where unknown.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Row {
    /// Unix seconds, a multiple of the resolution.
    pub start: i64,
    /// Lost pings (an average count when the row spans several steps).
    pub loss: Option<f64>,
    /// `loss` as a percentage of the pings.
    pub loss_percent: Option<f64>,
    /// Round-trip times, seconds.
    pub median: Option<f64>,
    pub min: Option<f64>,
    pub max: Option<f64>,
}

/// Where the window of rows ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum WindowEnd {
    /// The last `range` seconds (an order being measured).
    Now,
    /// The `range` seconds before the file's last update (an archived order, measured no more).
    LastUpdate,
}

/// Reads `range` seconds of `<parent>/<id>/main.rrd` (`parent` being the held `output/` or
/// `archive/` directory), ending at `now` or at the file's last update.
pub fn read(parent: &Dir, id: &OrderId, range: u64, window_end: WindowEnd, now: i64) -> Result<History, HistoryError> {
    let file = CheckedRrd::open(parent, id)?;
    file.source().read(range, window_end, now)
}

/// An order's `main.rrd`, opened without following a symlink and checked to be a regular file,
/// held open while librrd reads it through [`CheckedRrd::librrd_path`] (see the module's
/// invariants). Also used by [`super::series`].
pub struct CheckedRrd {
    /// Held so that `/proc/self/fd/<n>` stays this very inode.
    _file: std::fs::File,
    librrd_path: PathBuf,
    path: PathBuf,
}

impl CheckedRrd {
    /// Opens `<parent>/<id>/main.rrd`.
    pub fn open(parent: &Dir, id: &OrderId) -> Result<CheckedRrd, HistoryError> {
        let dir = match parent.open_dir(id.as_path()) {
            Ok(dir) => dir,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(HistoryError::Missing),
            Err(e) => return Err(HistoryError::Io(e)),
        };
        let path = dir.path().join(FILE_NAME);
        match dir.kind(FILE_NAME).map_err(HistoryError::Io)? {
            None => return Err(HistoryError::Missing),
            Some(Kind::Symlink) => return Err(HistoryError::Symlink { path }),
            Some(Kind::File) => {}
            Some(_) => return Err(HistoryError::NotRegular { path }),
        }
        // Swapped between the look and the open: the open refuses a symlink and checks the type.
        let file = match dir.open_read(FILE_NAME) {
            Ok(file) => file,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(HistoryError::Missing),
            Err(e) => return Err(HistoryError::Io(e)),
        };
        let librrd_path = PathBuf::from(format!("/proc/self/fd/{}", file.as_raw_fd()));
        if !librrd_path.exists() {
            return Err(HistoryError::Unreadable {
                path,
                reason: "/proc is not mounted (librrd is handed the open file as /proc/self/fd/<n>)".into(),
            });
        }
        Ok(CheckedRrd {
            _file: file,
            librrd_path,
            path,
        })
    }

    /// The path to hand librrd (`/proc/self/fd/<n>`).
    pub fn librrd_path(&self) -> &Path {
        &self.librrd_path
    }

    /// The file's real path, for messages.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A librrd error, naming the real file instead of its `/proc/self/fd` path.
    pub fn librrd_error(&self, e: rrd::error::RrdError) -> HistoryError {
        self.source().librrd(e)
    }

    fn source(&self) -> Source<'_> {
        Source {
            librrd_path: &self.librrd_path,
            path: &self.path,
        }
    }
}

/// The checked file: its `/proc/self/fd` path for librrd and its real path for messages.
struct Source<'a> {
    librrd_path: &'a Path,
    path: &'a Path,
}

impl Source<'_> {
    fn read(&self, range: u64, window_end: WindowEnd, now: i64) -> Result<History, HistoryError> {
        let layout = Layout::from_info(info(self.librrd_path).map_err(|e| self.librrd(e))?);
        let columns = Columns::of(&layout.sources);
        if columns.is_empty() {
            let mut names: Vec<&str> = layout.sources.iter().map(String::as_str).take(10).collect();
            if layout.sources.len() > 10 {
                names.push("...");
            }
            return Err(HistoryError::Foreign {
                path: self.path.to_owned(),
                names: crate::orders::book::printable(&names.join(", ")),
            });
        }
        let range_secs = i64::try_from(range).unwrap_or(i64::MAX);
        // A step is written at its end, by a daemon that measures it during the step: the
        // newest row may end up to one step after now, and belongs to the last `range` seconds.
        let (window_start, until) = match window_end {
            WindowEnd::Now => (
                now.saturating_sub(range_secs),
                now.saturating_add(i64::try_from(layout.step).unwrap_or(0)),
            ),
            WindowEnd::LastUpdate => (layout.last_update.saturating_sub(range_secs), layout.last_update),
        };
        let plan = plan(&layout, window_start, until).ok_or_else(|| HistoryError::NoAverage {
            path: self.path.to_owned(),
        })?;
        let mut history = History {
            file: self.path.to_string_lossy().into_owned(),
            step: layout.step,
            last_update: layout.last_update,
            pings: columns.pings.len() as u32,
            range,
            window_end,
            start: plan.start,
            end: plan.end.max(plan.start),
            resolution: plan.resolution,
            archive_resolution: plan.archive_resolution,
            min_max_archives: false,
            rows: Vec::new(),
        };
        if plan.start >= plan.end {
            return Ok(history);
        }
        let count = (plan.end - plan.start) as u64 / plan.archive_resolution;
        let values = count.saturating_mul(layout.sources.len() as u64);
        if values > MAX_FETCH_VALUES {
            return Err(HistoryError::TooMuch {
                path: self.path.to_owned(),
                values,
                resolution: plan.archive_resolution,
            });
        }
        let average = self.fetch(ConsolidationFn::Avg, &plan)?;
        history.archive_resolution = average.step;
        // Above the file's step, the true extremes are in the MIN and MAX archives.
        let extremes = if average.step > layout.step && layout.has_extremes(&plan) {
            match (
                self.fetch(ConsolidationFn::Min, &plan),
                self.fetch(ConsolidationFn::Max, &plan),
            ) {
                (Ok(min), Ok(max)) if min.matches(&average) && max.matches(&average) => Some((min, max)),
                _ => None,
            }
        } else {
            None
        };
        history.min_max_archives = extremes.is_some();
        let average_columns = Columns::of(&average.names);
        let extremes = extremes.map(|(min, max)| {
            let columns = (Columns::of(&min.names), Columns::of(&max.names));
            (min, max, columns)
        });
        let samples: Vec<(i64, Sample)> = average
            .rows
            .iter()
            .enumerate()
            .map(|(i, (start, values))| {
                let mut sample = Sample::of(&average_columns, values);
                if let Some((min, max, (min_columns, max_columns))) = &extremes {
                    sample.min = Sample::of(min_columns, &min.rows[i].1).min;
                    sample.max = Sample::of(max_columns, &max.rows[i].1).max;
                }
                (*start, sample)
            })
            .collect();
        history.rows = consolidate(&samples, plan.resolution, history.pings);
        Ok(history)
    }

    fn fetch(&self, cf: ConsolidationFn, plan: &Plan) -> Result<Fetched, HistoryError> {
        let data = rrd::ops::fetch::fetch(
            self.librrd_path,
            cf,
            timestamp(plan.start),
            timestamp(plan.end),
            Duration::from_secs(plan.archive_resolution),
        )
        .map_err(|e| self.librrd(e))?;
        let step = data.step().as_secs().max(1);
        let rows = data
            .rows()
            .iter()
            .map(|row| {
                let end = crate::shared::clock::unix_secs(row.timestamp());
                (end - step as i64, row.as_slice().to_vec())
            })
            .filter(|(start, _)| *start >= plan.start && *start < plan.end)
            .collect();
        Ok(Fetched {
            names: data.ds_names().to_vec(),
            step,
            rows,
        })
    }

    /// A librrd error, naming the real file instead of its `/proc/self/fd` path.
    fn librrd(&self, e: rrd::error::RrdError) -> HistoryError {
        let reason = e
            .to_string()
            .replace(&*self.librrd_path.to_string_lossy(), &self.path.to_string_lossy());
        HistoryError::Unreadable {
            path: self.path.to_owned(),
            reason,
        }
    }
}

fn timestamp(unix_seconds: i64) -> std::time::SystemTime {
    UNIX_EPOCH + Duration::from_secs(u64::try_from(unix_seconds).unwrap_or(0))
}

/// What librrd fetched: data source names, seconds per row, (row start, values) oldest first.
struct Fetched {
    names: Vec<String>,
    step: u64,
    rows: Vec<(i64, Vec<f64>)>,
}

impl Fetched {
    /// Whether `self` has the same rows as `other` (so they can be read side by side).
    fn matches(&self, other: &Fetched) -> bool {
        self.step == other.step
            && self.rows.len() == other.rows.len()
            && self.rows.iter().zip(&other.rows).all(|(a, b)| a.0 == b.0)
    }
}

/// What `rrd info` says about a file, as far as reading it back needs.
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct Layout {
    pub(crate) step: u64,
    last_update: i64,
    /// Data source names in the file's order.
    pub(crate) sources: Vec<String>,
    archives: Vec<ArchiveInfo>,
}

#[derive(Clone, Debug, PartialEq)]
struct ArchiveInfo {
    cf: String,
    pdp_per_row: u64,
    rows: u64,
}

impl Layout {
    pub(crate) fn from_info(mut map: HashMap<String, InfoValue>) -> Layout {
        let mut count = |key: &str| map.remove(key).and_then(InfoValue::into_count);
        let step = count("step").unwrap_or(0);
        let last_update = count("last_update").map_or(0, |t| i64::try_from(t).unwrap_or(i64::MAX));
        let mut archives = Vec::new();
        for i in 0.. {
            let cf = map.remove(&format!("rra[{i}].cf")).and_then(InfoValue::into_string);
            let pdp = map
                .remove(&format!("rra[{i}].pdp_per_row"))
                .and_then(InfoValue::into_count);
            let rows = map.remove(&format!("rra[{i}].rows")).and_then(InfoValue::into_count);
            let (Some(cf), Some(pdp_per_row), Some(rows)) = (cf, pdp, rows) else {
                break;
            };
            archives.push(ArchiveInfo { cf, pdp_per_row, rows });
        }
        let mut sources: Vec<(u64, String)> = map
            .into_iter()
            .filter_map(|(key, value)| {
                let name = key.strip_prefix("ds[")?.strip_suffix("].index")?;
                Some((value.into_count()?, name.to_string()))
            })
            .collect();
        sources.sort();
        Layout {
            step,
            last_update,
            sources: sources.into_iter().map(|(_, name)| name).collect(),
            archives,
        }
    }

    /// The number of `ping<N>` data sources (`ping1` on without a gap): the pings of a round.
    pub(crate) fn pings(&self) -> u32 {
        let has = |i: u32| self.sources.iter().any(|s| *s == format!("ping{i}"));
        (1..).take_while(|&i| has(i)).count() as u32
    }

    /// The periods of the file each read from its finest `AVERAGE` archive covering it, newest
    /// first, not overlapping: (seconds per row, start, end), the rows ending in (start, end].
    pub(crate) fn finest_periods(&self) -> Vec<(u64, i64, i64)> {
        let mut covered: Vec<(u64, i64, i64)> = self
            .archives
            .iter()
            .filter(|a| a.cf == "AVERAGE")
            .filter_map(|a| self.coverage(a))
            .collect();
        covered.sort_by_key(|c| c.0);
        let mut periods = Vec::new();
        let mut before = i64::MAX;
        for (resolution, oldest, end) in covered {
            let end = end.min(before);
            if oldest < end {
                periods.push((resolution, oldest, end));
                before = oldest;
            }
        }
        periods
    }

    /// The covered time of `archive`: (seconds per row, start of its oldest row, end of its
    /// newest row), or `None` for an archive that cannot be read back (zero or overflowing).
    fn coverage(&self, archive: &ArchiveInfo) -> Option<(u64, i64, i64)> {
        let resolution = archive.pdp_per_row.checked_mul(self.step).filter(|&r| r > 0)?;
        let r = i64::try_from(resolution).ok()?;
        let end = self.last_update - self.last_update.rem_euclid(r);
        let span = i64::try_from(archive.rows).ok()?.checked_mul(r)?;
        Some((resolution, end.saturating_sub(span), end))
    }

    /// Whether the file has MIN and MAX archives of `plan`'s resolution covering its rows.
    fn has_extremes(&self, plan: &Plan) -> bool {
        ["MIN", "MAX"].iter().all(|cf| {
            self.archives.iter().any(|a| {
                a.cf == *cf
                    && self.coverage(a).is_some_and(|(r, oldest, end)| {
                        r == plan.archive_resolution && oldest <= plan.start && end >= plan.end
                    })
            })
        })
    }
}

/// Which archive to read, at what resolution, over which rows (see the module documentation).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Plan {
    archive_resolution: u64,
    resolution: u64,
    /// Start of the first row, end of the last (`start >= end`: nothing to read).
    start: i64,
    end: i64,
}

/// The plan for the window `[window_start, window_end)`; `None` when the file has no readable
/// AVERAGE archive.
fn plan(layout: &Layout, window_start: i64, window_end: i64) -> Option<Plan> {
    let max_rows = MAX_ROWS as i64;
    let candidates = layout
        .archives
        .iter()
        .filter(|a| a.cf == "AVERAGE")
        .filter_map(|a| layout.coverage(a))
        .filter_map(|(resolution, oldest, newest)| {
            let r = i64::try_from(resolution).ok()?;
            let end = window_end.min(newest);
            let end = end - end.rem_euclid(r);
            let first = window_start.max(oldest);
            let first = first.checked_add((r - first.rem_euclid(r)) % r)?;
            let rows = if end > first { (end - first) / r } else { 0 };
            let per_row = ((rows + max_rows - 1) / max_rows).max(1);
            let shown = r.checked_mul(per_row)?;
            let start = first.checked_add((shown - first.rem_euclid(shown)) % shown)?;
            let plan = Plan {
                archive_resolution: resolution,
                resolution: shown as u64,
                start,
                end,
            };
            Some((plan, oldest, oldest <= window_start))
        })
        .collect::<Vec<_>>();
    let covering = candidates.iter().filter(|(_, _, covers)| *covers);
    let best_covering =
        covering.min_by_key(|(plan, _, _)| (plan.resolution, std::cmp::Reverse(plan.archive_resolution)));
    let best = best_covering.or_else(|| {
        candidates
            .iter()
            .min_by_key(|(plan, oldest, _)| (*oldest, plan.archive_resolution))
    });
    best.map(|(plan, _, _)| *plan)
}

/// Where `loss`, `median` and the `ping<N>` sources are among a file's data sources.
#[derive(Debug, Default)]
struct Columns {
    loss: Option<usize>,
    median: Option<usize>,
    /// In ping number order.
    pings: Vec<usize>,
}

impl Columns {
    fn of(names: &[String]) -> Columns {
        let mut columns = Columns::default();
        let mut pings: Vec<(u32, usize)> = Vec::new();
        for (index, name) in names.iter().enumerate() {
            match name.as_str() {
                "loss" => columns.loss = Some(index),
                "median" => columns.median = Some(index),
                other => {
                    let number = other
                        .strip_prefix("ping")
                        .filter(|n| n.bytes().all(|b| b.is_ascii_digit()));
                    if let Some(n) = number.and_then(|n| n.parse().ok()) {
                        pings.push((n, index));
                    }
                }
            }
        }
        pings.sort();
        columns.pings = pings.into_iter().map(|(_, index)| index).collect();
        columns
    }

    fn is_empty(&self) -> bool {
        self.loss.is_none() && self.median.is_none() && self.pings.is_empty()
    }
}

/// One archive row read: its values, unknown as `None`.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
struct Sample {
    loss: Option<f64>,
    median: Option<f64>,
    min: Option<f64>,
    max: Option<f64>,
}

impl Sample {
    fn of(columns: &Columns, values: &[f64]) -> Sample {
        let value = |index: Option<usize>| index.and_then(|i| values.get(i)).copied().filter(|v| v.is_finite());
        let pings: Vec<f64> = columns.pings.iter().filter_map(|&i| value(Some(i))).collect();
        Sample {
            loss: value(columns.loss),
            median: value(columns.median),
            min: pings.iter().copied().reduce(f64::min),
            max: pings.iter().copied().reduce(f64::max),
        }
    }
}

/// A running average that is unknown when fewer than half of its rows are known.
#[derive(Default)]
struct Mean {
    sum: f64,
    known: u32,
}

/// Groups `samples` (start, values; oldest first) into rows of `resolution` seconds starting at
/// its multiples: loss and median averaged, min the smallest, max the largest; each unknown
/// when fewer than half of the row's samples know it.
fn consolidate(samples: &[(i64, Sample)], resolution: u64, pings: u32) -> Vec<Row> {
    let resolution = i64::try_from(resolution).unwrap_or(i64::MAX).max(1);
    let mut rows = Vec::new();
    for group in samples.chunk_by(|a, b| a.0.div_euclid(resolution) == b.0.div_euclid(resolution)) {
        let present = group.len() as u32;
        let enough = |known: u32| known > 0 && 2 * known >= present;
        let mut loss = Mean::default();
        let mut median = Mean::default();
        let (mut min, mut max) = ((None::<f64>, 0u32), (None::<f64>, 0u32));
        for (_, sample) in group {
            for (mean, value) in [(&mut loss, sample.loss), (&mut median, sample.median)] {
                if let Some(v) = value {
                    mean.sum += v;
                    mean.known += 1;
                }
            }
            if let Some(v) = sample.min {
                min = (Some(min.0.map_or(v, |m: f64| m.min(v))), min.1 + 1);
            }
            if let Some(v) = sample.max {
                max = (Some(max.0.map_or(v, |m: f64| m.max(v))), max.1 + 1);
            }
        }
        let average = |mean: &Mean| enough(mean.known).then(|| mean.sum / f64::from(mean.known));
        let loss = average(&loss);
        rows.push(Row {
            start: group[0].0.div_euclid(resolution) * resolution,
            loss,
            loss_percent: loss.filter(|_| pings > 0).map(|l| l * 100.0 / f64::from(pings)),
            median: average(&median),
            min: min.0.filter(|_| enough(min.1)),
            max: max.0.filter(|_| enough(max.1)),
        });
    }
    rows
}

/// A range (`spoolmon show --range`, the API's `range=`): a positive whole number of seconds, optionally with one unit (`s`, `m`, `h`, `d`,
/// `w`): `30m`, `1h`, `6h`, `1d`, `7d`, `3600`; at most [`MAX_RANGE`].
pub fn parse_range(text: &str) -> Result<u64, String> {
    let (digits, unit) = match text.char_indices().find(|(_, c)| !c.is_ascii_digit()) {
        Some((at, _)) => text.split_at(at),
        None => (text, ""),
    };
    if digits.is_empty() {
        return Err(format!(
            "{text:?} is not a duration: it needs a number (30m, 1h, 1d, 3600)"
        ));
    }
    let multiplier = match unit {
        "" | "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        "w" => 7 * 86_400,
        "y" => 365 * 86_400,
        _ => {
            return Err(format!(
                "{text:?} is not a duration: a whole number with an optional unit s, m, h, d, w or y (30m, 1h, 6h, 1d, 7d, 1y, 3600)"
            ))
        }
    };
    let too_long = || format!("{text:?} is longer than the longest archive: at most 520w (3640d)");
    let number: u64 = digits.parse().map_err(|_| too_long())?;
    let seconds = number.checked_mul(multiplier).ok_or_else(too_long)?;
    if seconds == 0 {
        return Err("the range must be longer than 0 seconds".to_string());
    }
    if seconds > MAX_RANGE {
        return Err(too_long());
    }
    Ok(seconds)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_take_seconds_and_the_usual_units() {
        let cases = [
            ("30m", 1800),
            ("1h", 3600),
            ("6h", 21_600),
            ("1d", 86_400),
            ("7d", 604_800),
            ("3600", 3600),
            ("90s", 90),
            ("2w", 1_209_600),
            ("1", 1),
            ("0060", 60),
            ("520w", MAX_RANGE),
            ("3640d", MAX_RANGE),
        ];
        for (text, seconds) in cases {
            assert_eq!(parse_range(text), Ok(seconds), "{text}");
        }
    }

    #[test]
    fn zero_negative_huge_and_garbage_ranges_are_refused() {
        let cases = [
            ("0", "longer than 0"),
            ("0h", "longer than 0"),
            ("-1h", "needs a number"),
            ("-5", "needs a number"),
            ("", "needs a number"),
            ("h", "needs a number"),
            ("1.5h", "not a duration"),
            ("1h30m", "not a duration"),
            ("1x", "not a duration"),
            ("1 h", "not a duration"),
            (" 1h", "needs a number"),
            ("1H", "not a duration"),
            ("１h", "needs a number"),
            ("3641d", "longest archive"),
            ("521w", "longest archive"),
            ("99999999999999999999999", "longest archive"),
            ("18446744073709551615w", "longest archive"),
            ("abc", "needs a number"),
            ("1h\n", "not a duration"),
        ];
        for (text, expected) in cases {
            let error = parse_range(text).expect_err(text);
            assert!(error.contains(expected), "{text:?}: {error}");
        }
    }

    use crate::output::rrd::definition;

    /// The layout spoolmon writes for `step` and `pings`, last updated at `last_update`.
    fn spoolmon_layout(step: u32, pings: u32, last_update: i64) -> Layout {
        let def = definition(step, pings);
        Layout {
            step: u64::from(step),
            last_update,
            sources: def.sources.iter().map(|s| s.name.clone()).collect(),
            archives: def
                .archives
                .iter()
                .map(|a| ArchiveInfo {
                    cf: format!("{:?}", a.consolidation).to_uppercase(),
                    pdp_per_row: u64::from(a.pdp_per_row),
                    rows: u64::from(a.rows),
                })
                .collect(),
        }
    }

    const NOW: i64 = 1_800_000_000;

    #[test]
    fn finest_periods_cover_the_file_once_finest_first() {
        let layout = spoolmon_layout(20, 3, NOW);
        let periods = layout.finest_periods();
        assert!(periods.len() >= 2, "{periods:?}");
        assert_eq!(periods[0].2, NOW - NOW.rem_euclid(20), "the newest row first");
        for pair in periods.windows(2) {
            let ((fine, start, _), (coarse, _, end)) = (pair[0], pair[1]);
            assert!(coarse > fine, "coarser further back: {periods:?}");
            assert_eq!(end, start, "no gap and no overlap: {periods:?}");
        }
    }

    fn plan_for(step: u32, range: i64) -> Plan {
        let layout = spoolmon_layout(step, 3, NOW - 5);
        plan(&layout, NOW - range, NOW).unwrap()
    }

    #[test]
    fn the_shown_resolution_keeps_the_table_short_for_every_usual_range() {
        // (step, range) -> (archive rows, shown rows)
        let cases = [
            ((20, 600), (20, 20)),
            ((20, 1800), (20, 40)),
            ((20, 3600), (20, 60)),
            ((20, 6 * 3600), (300, 600)),
            ((20, 86_400), (300, 1500)),
            ((20, 7 * 86_400), (3600, 10_800)),
            ((300, 3600), (300, 300)),
            ((300, 86_400), (300, 1500)),
            ((60, 3600), (60, 60)),
            ((3600, 7 * 86_400), (3600, 10_800)),
            ((2, 60), (2, 2)),
        ];
        for ((step, range), (archive, shown)) in cases {
            let plan = plan_for(step, range);
            assert_eq!(
                (plan.archive_resolution, plan.resolution),
                (archive, shown),
                "step {step} range {range}: {plan:?}"
            );
            let rows = (plan.end - plan.start) as u64 / plan.resolution;
            assert!(rows <= MAX_ROWS, "step {step} range {range}: {rows} rows");
            // The window's start is kept to within one shown row.
            assert!(
                (NOW - range..NOW - range + shown as i64).contains(&plan.start),
                "step {step} range {range}: {plan:?}"
            );
            assert_eq!(plan.start.rem_euclid(shown as i64), 0);
            assert_eq!(plan.end.rem_euclid(archive as i64), 0);
            assert!(plan.end <= NOW - 5);
        }
    }

    #[test]
    fn a_file_last_updated_before_the_window_has_no_rows() {
        let layout = spoolmon_layout(20, 3, NOW - 7200);
        let plan = plan(&layout, NOW - 3600, NOW).unwrap();
        assert!(plan.start >= plan.end, "{plan:?}");
    }

    #[test]
    fn without_a_covering_archive_the_longest_is_read_and_its_rows_bounded() {
        let layout = Layout {
            step: 1,
            last_update: NOW,
            sources: vec!["median".into()],
            archives: vec![ArchiveInfo {
                cf: "AVERAGE".into(),
                pdp_per_row: 1,
                rows: 100,
            }],
        };
        let plan = plan(&layout, NOW - 400 * 86_400, NOW).unwrap();
        assert_eq!((plan.archive_resolution, plan.resolution), (1, 2));
        assert_eq!((plan.start, plan.end), (NOW - 100, NOW));
        let no_average = Layout {
            archives: vec![ArchiveInfo {
                cf: "MAX".into(),
                pdp_per_row: 1,
                rows: 100,
            }],
            ..layout
        };
        assert_eq!(super::plan(&no_average, NOW - 3600, NOW), None);
    }

    #[test]
    fn consolidation_averages_and_keeps_unknowns_unknown() {
        let known = |loss, median, min, max| Sample {
            loss: Some(loss),
            median: Some(median),
            min: Some(min),
            max: Some(max),
        };
        let unknown = Sample::default();
        let samples = [
            (120, known(0.0, 0.002, 0.001, 0.003)),
            (140, known(3.0, 0.004, 0.0005, 0.009)),
            (160, unknown),
            (180, unknown),
            (200, unknown),
            (220, known(1.0, 0.001, 0.001, 0.001)),
            (240, known(1.0, 0.001, 0.001, 0.001)),
            (260, unknown),
        ];
        let rows = consolidate(&samples, 60, 3);
        assert_eq!(rows.len(), 3);
        assert_eq!(rows[0].start, 120);
        assert_eq!(rows[0].loss, Some(1.5));
        assert_eq!(rows[0].loss_percent, Some(50.0));
        assert!((rows[0].median.unwrap() - 0.003).abs() < 1e-15);
        assert_eq!((rows[0].min, rows[0].max), (Some(0.0005), Some(0.009)));
        // 180..240: one known of three (fewer than half): unknown, not zero.
        assert_eq!(rows[1].start, 180);
        assert_eq!(
            (rows[1].loss, rows[1].median, rows[1].min, rows[1].max),
            (None, None, None, None)
        );
        assert_eq!(rows[1].loss_percent, None);
        assert_eq!(rows[2].start, 240);
        assert_eq!(rows[2].loss, Some(1.0), "one known of two is enough");
        let single = consolidate(&samples, 20, 3);
        assert_eq!(single.len(), 8);
        assert_eq!(single[2].loss, None);
        assert_eq!(single[1].median, Some(0.004));
    }

    #[test]
    fn columns_are_found_by_name_and_pings_by_number() {
        let names: Vec<String> = ["ping10", "loss", "ping2", "median", "ping1", "pingx", "other"]
            .map(String::from)
            .to_vec();
        let columns = Columns::of(&names);
        assert_eq!((columns.loss, columns.median), (Some(1), Some(3)));
        assert_eq!(columns.pings, [4, 2, 0]);
        let values = [0.009, 1.0, f64::NAN, 0.004, 0.002, 5.0, 6.0];
        let sample = Sample::of(&columns, &values);
        assert_eq!(sample.loss, Some(1.0));
        assert_eq!(sample.median, Some(0.004));
        assert_eq!((sample.min, sample.max), (Some(0.002), Some(0.009)));
        assert!(Columns::of(&["x".to_string()]).is_empty());
    }
}
