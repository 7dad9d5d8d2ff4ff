//! The `output/<id>/main.rrd` file: pingmachine's Smokeping-style RRD, written with librrd.
//!
//! Owns `output/<id>/main.rrd` and the files it renames aside next to it
//! (`main-<unix now>-step<S>-pings<P>.rrd` after a layout change, `corrupted-<unix now>-main.rrd`
//! for a file that is not an RRD; `-1`, `-2`, ... is appended to the stem if the name is taken).
//! Nothing here is ever deleted, except a file [`RrdWriter::create_if_missing`] made moments
//! before that holds nothing yet (an older result arrived before its first update).
//!
//! # Definition (pingmachine's, exactly, where pingmachine works)
//!
//! `--step S`, `DS:loss:GAUGE:<2S>:0:<pings>`, `DS:median:GAUGE:<2S>:0:180`,
//! `DS:ping1..ping<pings>:GAUGE:<2S>:0:180`, and RRAs, all with xff 0.5:
//!
//! - `S < 300`: `AVERAGE 1x900`, then for each (span, rows) of (300 s, 864), (1800 s, 480),
//!   (3600 s, 960), (43200 s, 800), (604800 s, 520) three RRAs of `pdp` steps per row and `r` rows:
//!   `AVERAGE, MIN, MAX` for the first three spans, `AVERAGE, MAX, MIN` for the last two
//!   (pingmachine's order). `pdp = max(1, round(span / S))` and `r = round(rows * span / (pdp * S))`,
//!   rounding halves up. When S divides 300 this is pingmachine's `span/S x rows` exactly; for
//!   other steps (7, 45, 200, ..., where pingmachine passes a fractional step count and fails)
//!   each RRA keeps its resolution close to `span` and its covered time close to `rows * span`.
//! - `S == 300`: `AVERAGE 1x864`; `AVERAGE, MIN, MAX` at 6x480 and 12x960; `AVERAGE, MAX, MIN` at
//!   144x800 and 2016x520.
//! - `S > 300`: `AVERAGE 1x1008`; `AVERAGE, MIN, MAX` at 12x4320; `AVERAGE, MAX, MIN` at 144x720.
//!
//! # Updates
//!
//! A result's `time` is the start of the step in which its pings were sent; its update is at
//! `time + step`, so RRD attributes it to that step (pingmachine updates at `time`, one step too
//! early). A new file starts (`--start`) one step before its first update. Values are
//! `loss:median:ping1:...:pingN`: the loss count, the upper median, and the sorted answered
//! round-trip times (seconds) with `loss / 2` (rounded down) `U` before them and the remaining `U`
//! after (Smokeping's convention); without answers the median and every ping are `U`. A result
//! whose probe could not measure the order (its `failure` is set) is all `U`, the loss included:
//! the step is unknown, not lost. (pingmachine writes no update for such a run, so its file shows
//! unknown only once the 2-step heartbeat has passed, and a single failed step between two
//! measured ones takes the next step's values.)
//!
//! While updates wait for a flush (`rrd-flush-interval`), [`RrdWriter::create_if_missing`]
//! creates a missing file for an order's first result, so creation (librrd's costliest call)
//! is spread over the rounds that first see each order; an existing file is only inspected.
//!
//! [`RrdWriter::apply`] takes one order's results, drops `norrd` ones, sorts the rest by time
//! (stable) and keeps only the first result of each time (a later duplicate counts as skipped,
//! as RRD itself refuses a second update at the same time). Consecutive results of the same
//! (step, pings) go to librrd in ONE update call with several timestamps; results at or before
//! the file's last update are skipped (a replay after a crash is "already applied", not an
//! error), and librrd is also told to skip past updates.
//!
//! # Layout changes and damaged files
//!
//! The layout (step, ping count) of an existing file is read with `rrd info` once per file per
//! process and cached with the file's inode; the cache is trusted while the inode stays the same.
//! A file whose layout differs from the result's is renamed aside and a new `main.rrd` created
//! (logged at info); a batch whose layout changes midway rotates as often as needed. A regular
//! file librrd cannot read as an RRD (garbage, truncated, empty) is renamed aside as corrupted
//! (logged as a warning) and recreated. When an update fails, the cached layout is forgotten, the
//! file inspected again and the update retried once. Nothing is fsynced here: the caller syncs the
//! filesystem once per batch.

use crate::shared::clock::unix_now;
use crate::shared::measurement::{OrderResult, RrdTemplate};
use crate::shared::stats::PingStats;
use crate::spool::atomic::rename_to_free_name;
use rrd::ops::create::{create, Archive, DataSource, DataSourceName};
use rrd::ops::info::{info, InfoValue};
use rrd::ops::update::{update_all, BatchTime, Datum, Options};
use rrd::ConsolidationFn;
use std::collections::HashMap;
use std::fs;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, UNIX_EPOCH};
use tracing::{info, warn};

/// Name of the RRD inside `output/<id>/`.
pub const FILE_NAME: &str = "main.rrd";

/// Largest step accepted: the heartbeat (2 x step) must fit librrd's 32-bit argument.
pub const MAX_STEP: u32 = u32::MAX / 2;

const XFF: f64 = 0.5;
/// Maximum of the RTT data sources (`median`, `ping<i>`), seconds.
pub const RTT_MAX_SECONDS: f64 = crate::shared::measurement::MAX_RTT_SECONDS;

/// The shape of a Smokeping RRD: what must match between a result and an existing file.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct RrdLayout {
    pub step: u32,
    pub pings: u32,
}

/// How rows of an RRA consolidate primary data points.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Consolidation {
    Average,
    Min,
    Max,
}

/// One `DS:<name>:GAUGE:<heartbeat>:<min>:<max>`.
#[derive(Clone, Debug, PartialEq)]
pub struct GaugeSource {
    pub name: String,
    pub heartbeat: u32,
    pub min: f64,
    pub max: f64,
}

/// One `RRA:<cf>:<xff>:<pdp_per_row>:<rows>`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ArchiveSpec {
    pub consolidation: Consolidation,
    pub xff: f64,
    pub pdp_per_row: u32,
    pub rows: u32,
}

/// Everything `rrdtool create` needs besides the file name and start time.
#[derive(Clone, Debug, PartialEq)]
pub struct RrdDefinition {
    pub step: u32,
    pub sources: Vec<GaugeSource>,
    pub archives: Vec<ArchiveSpec>,
}

impl RrdDefinition {
    /// About how many bytes a file of this definition takes (its values; the headers are small).
    pub fn approximate_size(&self) -> u64 {
        let rows: u64 = self.archives.iter().map(|a| u64::from(a.rows)).sum();
        rows * self.sources.len() as u64 * 8 + 4096
    }

    /// The definition as `rrdtool create` arguments (`--step S DS:... RRA:...`).
    pub fn create_args(&self) -> Vec<String> {
        let mut args = vec!["--step".to_string(), self.step.to_string()];
        args.extend(
            self.sources
                .iter()
                .map(|s| format!("DS:{}:GAUGE:{}:{}:{}", s.name, s.heartbeat, s.min, s.max)),
        );
        args.extend(self.archives.iter().map(|a| {
            format!(
                "RRA:{}:{}:{}:{}",
                consolidation_name(a.consolidation),
                a.xff,
                a.pdp_per_row,
                a.rows
            )
        }));
        args
    }
}

/// The Smokeping RRD definition for `step` and `pings` (see the module documentation).
pub fn definition(step: u32, pings: u32) -> RrdDefinition {
    let heartbeat = step.saturating_mul(2);
    let gauge = |name: String, max: f64| GaugeSource {
        name,
        heartbeat,
        min: 0.0,
        max,
    };
    let mut sources = vec![
        gauge("loss".to_string(), f64::from(pings)),
        gauge("median".to_string(), RTT_MAX_SECONDS),
    ];
    sources.extend((1..=pings).map(|i| gauge(format!("ping{i}"), RTT_MAX_SECONDS)));
    RrdDefinition {
        step,
        sources,
        archives: archives(step),
    }
}

/// pingmachine's order of consolidation functions for the short and the long spans.
const AVG_MIN_MAX: [Consolidation; 3] = [Consolidation::Average, Consolidation::Min, Consolidation::Max];
const AVG_MAX_MIN: [Consolidation; 3] = [Consolidation::Average, Consolidation::Max, Consolidation::Min];

/// (span in seconds, rows, consolidation order) of the consolidated RRAs for steps up to 300.
const SPANS_UP_TO_300: [(u64, u64, [Consolidation; 3]); 5] = [
    (300, 864, AVG_MIN_MAX),
    (1800, 480, AVG_MIN_MAX),
    (3600, 960, AVG_MIN_MAX),
    (43_200, 800, AVG_MAX_MIN),
    (604_800, 520, AVG_MAX_MIN),
];

fn archives(step: u32) -> Vec<ArchiveSpec> {
    let archive = |consolidation, pdp_per_row, rows| ArchiveSpec {
        consolidation,
        xff: XFF,
        pdp_per_row,
        rows,
    };
    let mut list = Vec::with_capacity(16);
    let spans: &[(u64, u64, [Consolidation; 3])] = match step {
        0..300 => {
            list.push(archive(Consolidation::Average, 1, 900));
            &SPANS_UP_TO_300
        }
        300 => {
            list.push(archive(Consolidation::Average, 1, 864));
            &SPANS_UP_TO_300[1..]
        }
        _ => {
            list.push(archive(Consolidation::Average, 1, 1008));
            for (pdp, rows, order) in [(12, 4320, AVG_MIN_MAX), (144, 720, AVG_MAX_MIN)] {
                list.extend(order.iter().map(|&cf| archive(cf, pdp, rows)));
            }
            return list;
        }
    };
    let step = u64::from(step.max(1));
    for &(span, rows, order) in spans {
        let pdp = divide_rounding_half_up(span, step).max(1);
        let rows = divide_rounding_half_up(rows * span, pdp * step).max(1);
        let (pdp, rows) = (saturate_u32(pdp), saturate_u32(rows));
        list.extend(order.iter().map(|&cf| archive(cf, pdp, rows)));
    }
    list
}

fn divide_rounding_half_up(numerator: u64, denominator: u64) -> u64 {
    (2 * numerator + denominator) / (2 * denominator)
}

fn saturate_u32(value: u64) -> u32 {
    u32::try_from(value).unwrap_or(u32::MAX)
}

fn consolidation_name(consolidation: Consolidation) -> &'static str {
    match consolidation {
        Consolidation::Average => "AVERAGE",
        Consolidation::Min => "MIN",
        Consolidation::Max => "MAX",
    }
}

fn consolidation_fn(consolidation: Consolidation) -> ConsolidationFn {
    match consolidation {
        Consolidation::Average => ConsolidationFn::Avg,
        Consolidation::Min => ConsolidationFn::Min,
        Consolidation::Max => ConsolidationFn::Max,
    }
}

/// The layout a result needs.
pub fn layout_of(result: &OrderResult) -> RrdLayout {
    RrdLayout {
        step: result.step,
        pings: result.pings,
    }
}

/// The RRD update time of a result: the end of the step in which its pings were sent.
pub fn update_time(result: &OrderResult) -> i64 {
    result.time + i64::from(result.step)
}

/// The update values `loss, median, ping1..pingN` of a result (Smokeping's convention).
pub fn update_values(result: &OrderResult) -> Vec<Datum> {
    let pings = result.pings as usize;
    if result.failure.is_some() {
        return vec![Datum::Unspecified; pings + 2];
    }
    let stats = PingStats::from_rtts(&result.rtts);
    let answered = stats.sorted.len();
    let lost = pings.saturating_sub(answered);
    let mut values = Vec::with_capacity(pings + 2);
    values.push(Datum::Int(lost as u64));
    values.push(stats.median().map_or(Datum::Unspecified, Datum::Float));
    values.extend(std::iter::repeat_n(Datum::Unspecified, lost / 2));
    values.extend(stats.sorted.iter().take(pings).map(|&v| Datum::Float(v)));
    values.extend(std::iter::repeat_n(Datum::Unspecified, lost - lost / 2));
    values
}

/// What one [`RrdWriter::apply`] call did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RrdApplied {
    /// Results written to the RRD.
    pub applied: usize,
    /// Results at or before the file's last update, or repeating a time earlier in the batch.
    pub skipped: usize,
    /// `norrd` results (no RRD work).
    pub without_rrd: usize,
}

/// Why an order's RRD could not be brought up to date; names the file.
#[derive(Debug, thiserror::Error)]
pub enum RrdError {
    #[error("result of {id} at {time} cannot go into an RRD: {reason}")]
    MalformedResult {
        id: String,
        time: i64,
        reason: &'static str,
    },
    #[error("creating directory {path}: {source}")]
    CreateDir { path: PathBuf, source: io::Error },
    #[error("inspecting {path}: {source}")]
    Stat { path: PathBuf, source: io::Error },
    #[error("reading RRD header of {path}: {source}")]
    Inspect {
        path: PathBuf,
        source: rrd::error::RrdError,
    },
    #[error("renaming {path} aside: {source}")]
    MoveAside { path: PathBuf, source: io::Error },
    /// `disk_full`: the filesystem had less room than the file needs when librrd failed (librrd
    /// often loses the errno of a failed write and says nothing useful).
    #[error("creating RRD {path}: {source}{}", if *disk_full { " (disk full)" } else { "" })]
    Create {
        path: PathBuf,
        source: rrd::error::RrdError,
        disk_full: bool,
    },
    #[error("updating RRD {path}: {source}")]
    Update {
        path: PathBuf,
        source: rrd::error::RrdError,
    },
    /// librrd said it created the file, but there is none (librrd 1.7 loses the error of a
    /// failed write, e.g. on a full disk, and removes its temporary file).
    #[error("creating RRD {path}: librrd reported success but created no file{}", if *disk_full { " (disk full)" } else { "" })]
    NotCreated { path: PathBuf, disk_full: bool },
}

impl RrdError {
    /// Whether the order itself is at fault (see [`crate::spool::fault`]).
    pub fn fault(&self) -> crate::spool::fault::Fault {
        use crate::spool::fault::{of_io, of_text, Fault};
        match self {
            RrdError::MalformedResult { .. } => Fault::Permanent,
            RrdError::CreateDir { source, .. } | RrdError::Stat { source, .. } | RrdError::MoveAside { source, .. } => {
                of_io(source)
            }
            RrdError::Create { disk_full: true, .. } | RrdError::NotCreated { disk_full: true, .. } => Fault::Transient,
            RrdError::Inspect { source, .. } | RrdError::Create { source, .. } | RrdError::Update { source, .. } => {
                of_text(&source.to_string())
            }
            RrdError::NotCreated { .. } => Fault::Permanent,
        }
    }
}

/// A file whose layout was read (or which was created) by this process.
#[derive(Clone, Copy, Debug)]
struct VerifiedFile {
    layout: RrdLayout,
    last_update: i64,
    /// Created by [`RrdWriter::create_if_missing`] and not updated since: holds nothing.
    empty: bool,
    device: u64,
    inode: u64,
}

/// What `rrd info` says about an existing file.
struct InspectedFile {
    step: u64,
    ping_sources: u32,
    smokeping_shaped: bool,
    last_update: i64,
}

impl InspectedFile {
    fn has_layout(&self, layout: RrdLayout) -> bool {
        self.smokeping_shaped && self.step == u64::from(layout.step) && self.ping_sources == layout.pings
    }
}

/// Applies results to `main.rrd` files, remembering the layouts it has verified.
///
/// Shared by the processing pool: different orders may be applied in parallel, one order's
/// results must never be applied concurrently.
#[derive(Debug, Default)]
pub struct RrdWriter {
    verified: Mutex<HashMap<PathBuf, VerifiedFile>>,
}

impl RrdWriter {
    pub fn new() -> Self {
        Self::default()
    }

    /// Brings `dir/main.rrd` up to date with `results` (one order's, ascending time).
    pub fn apply(&self, dir: &Path, results: &[&OrderResult]) -> Result<RrdApplied, RrdError> {
        results.iter().try_for_each(|r| validate(r))?;
        let mut batch: Vec<&OrderResult> = results
            .iter()
            .copied()
            .filter(|r| r.template == RrdTemplate::Smokeping)
            .collect();
        let mut outcome = RrdApplied {
            without_rrd: results.len() - batch.len(),
            ..RrdApplied::default()
        };
        batch.sort_by_key(|r| r.time);
        let unique_before = batch.len();
        batch.dedup_by_key(|r| r.time);
        outcome.skipped = unique_before - batch.len();
        let path = dir.join(FILE_NAME);
        for group in batch.chunk_by(|a, b| layout_of(a) == layout_of(b)) {
            let (applied, skipped) = self.apply_group(&path, group)?;
            outcome.applied += applied;
            outcome.skipped += skipped;
        }
        Ok(outcome)
    }

    /// Creates `dir/main.rrd` for `first` (an order's earliest result of a round whose RRD
    /// updates wait for a flush) when there is no file yet: the file then exists, empty and
    /// starting one step before `first`'s update, from the order's first result on (an older
    /// result arriving before the first update replaces the still empty file, see `apply`), and its
    /// creation, the costliest thing librrd does for an order (~2 ms, BENCHMARKS.md), is paid
    /// in the round that first sees the order instead of all at once in the first flush. An
    /// existing file is inspected once and its layout remembered, but never rotated or replaced
    /// here: the flush does that, in time order with the results waiting for it. Returns
    /// whether a file was created.
    pub fn create_if_missing(&self, dir: &Path, first: &OrderResult) -> Result<bool, RrdError> {
        if first.template != RrdTemplate::Smokeping {
            return Ok(false);
        }
        validate(first)?;
        let path = dir.join(FILE_NAME);
        if self.cache().contains_key(&path) {
            return Ok(false);
        }
        match fs::symlink_metadata(&path) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                self.create_file(&path, layout_of(first), update_time(first))?;
                if let Some(file) = self.cache().get_mut(&path) {
                    file.empty = true;
                }
                Ok(true)
            }
            Err(source) => Err(RrdError::Stat { path, source }),
            Ok(_) => {
                // A Smokeping-shaped file of any layout is remembered as it is (the flush
                // rotates it if the results want another); anything else waits for the flush.
                let found = inspect(&path).ok().filter(|found| found.smokeping_shaped);
                if let Some((found, step)) = found.and_then(|f| u32::try_from(f.step).ok().map(|s| (f, s))) {
                    let layout = RrdLayout {
                        step,
                        pings: found.ping_sources,
                    };
                    self.remember(&path, layout, found.last_update)?;
                }
                Ok(false)
            }
        }
    }

    /// Forgets what this writer knows about `dir/main.rrd` (after moving it elsewhere).
    pub fn forget(&self, dir: &Path) {
        self.cache().remove(&dir.join(FILE_NAME));
    }

    /// Applies results of one layout, ascending and unique in time; returns (applied, skipped).
    fn apply_group(&self, path: &Path, group: &[&OrderResult]) -> Result<(usize, usize), RrdError> {
        let layout = layout_of(group[0]);
        let first_update = update_time(group[0]);
        // A file created early for a later first result holds nothing yet: an older result
        // arriving before its first update gets a file that starts early enough for it.
        let created_too_late = self
            .cache()
            .get(path)
            .is_some_and(|f| f.empty && first_update <= f.last_update);
        if created_too_late && fs::remove_file(path).is_ok() {
            self.cache().remove(path);
        }
        let mut retried = false;
        loop {
            let last_update = self.ensure_file(path, layout, update_time(group[0]))?;
            let fresh: Vec<&OrderResult> = group.iter().copied().filter(|r| update_time(r) > last_update).collect();
            let skipped = group.len() - fresh.len();
            let Some(newest) = fresh.last() else {
                return Ok((0, skipped));
            };
            match write_updates(path, &fresh) {
                Ok(()) => {
                    if let Some(file) = self.cache().get_mut(path) {
                        file.last_update = update_time(newest);
                        file.empty = false;
                    }
                    return Ok((fresh.len(), skipped));
                }
                Err(source) if !retried => {
                    warn!(path = %path.display(), error = %source, "RRD update failed; inspecting the file again and retrying once");
                    self.cache().remove(path);
                    retried = true;
                }
                Err(source) => {
                    return Err(RrdError::Update {
                        path: path.to_path_buf(),
                        source,
                    })
                }
            }
        }
    }

    /// Makes `path` an RRD of `layout`, creating, rotating or replacing a corrupted file as
    /// needed; returns its last update time.
    fn ensure_file(&self, path: &Path, layout: RrdLayout, first_update: i64) -> Result<i64, RrdError> {
        let metadata = match fs::symlink_metadata(path) {
            Ok(metadata) => metadata,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return self.create_file(path, layout, first_update),
            Err(source) => {
                return Err(RrdError::Stat {
                    path: path.to_path_buf(),
                    source,
                })
            }
        };
        let cached = self.cache().get(path).copied();
        if let Some(file) = cached.filter(|f| f.device == metadata.dev() && f.inode == metadata.ino()) {
            if file.layout == layout {
                return Ok(file.last_update);
            }
            let aside = rotate_aside(path, file.layout.step.into(), file.layout.pings)?;
            info!(old = %aside.display(), step = layout.step, pings = layout.pings, "RRD layout changed; old file kept, new main.rrd created");
            return self.create_file(path, layout, first_update);
        }
        match inspect(path) {
            Ok(found) if found.has_layout(layout) => {
                self.remember(path, layout, found.last_update)?;
                Ok(found.last_update)
            }
            Ok(found) => {
                let aside = rotate_aside(path, found.step, found.ping_sources)?;
                info!(old = %aside.display(), step = layout.step, pings = layout.pings, "RRD layout changed; old file kept, new main.rrd created");
                self.create_file(path, layout, first_update)
            }
            Err(source) if metadata.is_file() && fs::File::open(path).is_ok() => {
                let aside = move_corrupted_aside(path)?;
                warn!(path = %path.display(), kept_as = %aside.display(), error = %source, "not a valid RRD file; renamed aside and recreated");
                self.create_file(path, layout, first_update)
            }
            Err(source) => Err(RrdError::Inspect {
                path: path.to_path_buf(),
                source,
            }),
        }
    }

    /// Creates a fresh RRD whose first update will be at `first_update`.
    fn create_file(&self, path: &Path, layout: RrdLayout, first_update: i64) -> Result<i64, RrdError> {
        self.cache().remove(path);
        if let Some(dir) = path.parent() {
            fs::create_dir_all(dir).map_err(|source| RrdError::CreateDir {
                path: dir.to_path_buf(),
                source,
            })?;
        }
        let start = first_update - i64::from(layout.step);
        let def = definition(layout.step, layout.pings);
        let disk_full = || disk_full(path.parent().unwrap_or(Path::new(".")), def.approximate_size());
        create_rrd(path, &def, start).map_err(|source| RrdError::Create {
            path: path.to_path_buf(),
            source,
            disk_full: disk_full(),
        })?;
        if fs::symlink_metadata(path).is_err_and(|e| e.kind() == io::ErrorKind::NotFound) {
            return Err(RrdError::NotCreated {
                path: path.to_path_buf(),
                disk_full: disk_full(),
            });
        }
        self.remember(path, layout, start)?;
        Ok(start)
    }

    fn remember(&self, path: &Path, layout: RrdLayout, last_update: i64) -> Result<(), RrdError> {
        let metadata = fs::symlink_metadata(path).map_err(|source| RrdError::Stat {
            path: path.to_path_buf(),
            source,
        })?;
        let file = VerifiedFile {
            layout,
            last_update,
            empty: false,
            device: metadata.dev(),
            inode: metadata.ino(),
        };
        self.cache().insert(path.to_path_buf(), file);
        Ok(())
    }

    fn cache(&self) -> MutexGuard<'_, HashMap<PathBuf, VerifiedFile>> {
        // The map stays consistent even if a holder panicked: entries are plain values.
        self.verified.lock().unwrap_or_else(|p| p.into_inner())
    }
}

fn validate(result: &OrderResult) -> Result<(), RrdError> {
    let reason = if result.step == 0 || result.step > MAX_STEP {
        Some("step must be between 1 and 2^31 - 1 seconds")
    } else if result.pings == 0 {
        Some("pings must be at least 1")
    } else if result.rtts.len() != result.pings as usize {
        Some("number of round-trip times differs from pings")
    } else if result.time < 0 {
        Some("time is before 1970")
    } else {
        None
    };
    match reason {
        Some(reason) => Err(RrdError::MalformedResult {
            id: result.id.to_string(),
            time: result.time,
            reason,
        }),
        None => Ok(()),
    }
}

fn create_rrd(path: &Path, def: &RrdDefinition, start: i64) -> rrd::error::RrdResult<()> {
    let sources = def
        .sources
        .iter()
        .map(|s| {
            let name = DataSourceName::new(s.name.clone())?;
            Ok(DataSource::gauge(&name, s.heartbeat, Some(s.min), Some(s.max)))
        })
        .collect::<rrd::error::RrdResult<Vec<_>>>()?;
    let archives = def
        .archives
        .iter()
        .map(|a| Archive::new(consolidation_fn(a.consolidation), a.xff, a.pdp_per_row, a.rows))
        .collect::<Result<Vec<_>, _>>()?;
    create(
        path,
        timestamp(start),
        Duration::from_secs(u64::from(def.step)),
        true,
        None,
        &[],
        &sources,
        &archives,
    )
}

/// One librrd call for all of `results` (ascending, unique times, one layout).
fn write_updates(path: &Path, results: &[&OrderResult]) -> rrd::error::RrdResult<()> {
    let batches: Vec<(BatchTime, Vec<Datum>)> = results
        .iter()
        .map(|r| (BatchTime::Timestamp(timestamp(update_time(r))), update_values(r)))
        .collect();
    // The struct update stays valid if the crate's `locking_mode` feature adds a field.
    #[allow(clippy::needless_update)]
    let options = Options {
        skip_past_updates: true,
        ..Options::default()
    };
    update_all(path, options, &batches)
}

fn timestamp(unix_seconds: i64) -> std::time::SystemTime {
    UNIX_EPOCH + Duration::from_secs(u64::try_from(unix_seconds).unwrap_or(0))
}

fn inspect(path: &Path) -> rrd::error::RrdResult<InspectedFile> {
    let map = info(path)?;
    let count = |key: &str| map.get(key).cloned().and_then(InfoValue::into_count);
    let step = count("step").unwrap_or(0);
    let last_update = count("last_update").map_or(0, |t| i64::try_from(t).unwrap_or(i64::MAX));
    let names: Vec<&str> = map
        .keys()
        .filter_map(|k| k.strip_prefix("ds[")?.strip_suffix("].type"))
        .collect();
    let ping_sources = names.iter().filter(|n| n.starts_with("ping")).count();
    let ping_sources = u32::try_from(ping_sources).unwrap_or(u32::MAX);
    let expected = definition(1, ping_sources);
    let smokeping_shaped =
        names.len() == expected.sources.len() && expected.sources.iter().all(|s| names.contains(&s.name.as_str()));
    Ok(InspectedFile {
        step,
        ping_sources,
        smokeping_shaped,
        last_update,
    })
}

/// True when the filesystem of `dir` has fewer than `needed` bytes or no inode left (or cannot
/// say: a filesystem that cannot even be asked is not the order's fault).
fn disk_full(dir: &Path, needed: u64) -> bool {
    nix::sys::statvfs::statvfs(dir).map_or(true, |s| {
        let free = s.blocks_available() * s.fragment_size();
        free < needed || (s.files() > 0 && s.files_available() == 0)
    })
}

fn rotate_aside(path: &Path, step: u64, pings: u32) -> Result<PathBuf, RrdError> {
    let stem = format!("main-{}-step{step}-pings{pings}", unix_now());
    move_aside(path, &stem)
}

fn move_corrupted_aside(path: &Path) -> Result<PathBuf, RrdError> {
    let stem = format!("corrupted-{}-main", unix_now());
    move_aside(path, &stem)
}

fn move_aside(path: &Path, stem: &str) -> Result<PathBuf, RrdError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    rename_to_free_name(path, dir, stem, ".rrd").map_err(|source| RrdError::MoveAside {
        path: path.to_path_buf(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::shared::measurement::OrderId;
    use std::collections::BTreeMap;
    use std::process::Command;

    /// A time in the past aligned to steps 20, 60, 300 and 3600.
    const T0: i64 = 1_699_999_200;

    fn result(step: u32, time: i64, rtts: Vec<Option<f64>>) -> OrderResult {
        OrderResult::builder(OrderId::new("app/target").unwrap(), time)
            .step(step)
            .updated(time + i64::from(step) + 3)
            .rtts(rtts)
            .build()
    }

    fn rrdtool(args: &[&str]) -> String {
        let output = Command::new("rrdtool").args(args).output().unwrap();
        assert!(
            output.status.success(),
            "rrdtool {args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8(output.stdout).unwrap()
    }

    fn path_str(path: &Path) -> &str {
        path.to_str().unwrap()
    }

    /// `rrdtool info` lines describing the structure (step, DS, RRA shape), sorted.
    fn structure(path: &Path) -> Vec<String> {
        let mut lines: Vec<String> = rrdtool(&["info", path_str(path)])
            .lines()
            .filter(|l| {
                let key = l.split(" = ").next().unwrap_or("");
                key == "step"
                    || (key.starts_with("ds[")
                        && [".type", ".minimal_heartbeat", ".min", ".max"]
                            .iter()
                            .any(|s| key.ends_with(s)))
                    || (key.starts_with("rra[")
                        && [".cf", ".pdp_per_row", ".rows", ".xff"]
                            .iter()
                            .any(|s| key.ends_with(s)))
            })
            .map(str::to_string)
            .collect();
        lines.sort();
        lines
    }

    /// (last update time, values) from `rrdtool lastupdate`.
    fn last_update(path: &Path) -> (i64, Vec<String>) {
        let text = rrdtool(&["lastupdate", path_str(path)]);
        let line = text.lines().last().unwrap();
        let (time, values) = line.split_once(':').unwrap();
        (
            time.trim().parse().unwrap(),
            values.split_whitespace().map(str::to_string).collect(),
        )
    }

    /// Rows of `rrdtool fetch AVERAGE` at the finest resolution: row end time -> values.
    fn fetch(path: &Path, step: u32, start: i64, end: i64) -> BTreeMap<i64, Vec<Option<f64>>> {
        let text = rrdtool(&[
            "fetch",
            path_str(path),
            "AVERAGE",
            "-r",
            &step.to_string(),
            "-s",
            &start.to_string(),
            "-e",
            &end.to_string(),
        ]);
        text.lines()
            .filter_map(|l| l.split_once(": "))
            .map(|(time, values)| {
                let values = values
                    .split_whitespace()
                    .map(|v| v.parse::<f64>().ok().filter(|v| !v.is_nan()))
                    .collect();
                (time.trim().parse().unwrap(), values)
            })
            .collect()
    }

    /// pingmachine's `rrdtool create` command line (Config.pm's RRAs transcribed per step).
    fn pingmachine_create(path: &Path, start: i64, step: u32, pings: u32) {
        let rras: Vec<String> = match step {
            20 | 60 => {
                let k = 300 / step;
                let mut v = vec!["AVERAGE:0.5:1:900".to_string()];
                for (pdp, rows, order) in [
                    (k, 864, "AVERAGE MIN MAX"),
                    (6 * k, 480, "AVERAGE MIN MAX"),
                    (12 * k, 960, "AVERAGE MIN MAX"),
                    (144 * k, 800, "AVERAGE MAX MIN"),
                    (2016 * k, 520, "AVERAGE MAX MIN"),
                ] {
                    v.extend(order.split(' ').map(|cf| format!("{cf}:0.5:{pdp}:{rows}")));
                }
                v
            }
            300 => [
                "AVERAGE:0.5:1:864",
                "AVERAGE:0.5:6:480",
                "MIN:0.5:6:480",
                "MAX:0.5:6:480",
                "AVERAGE:0.5:12:960",
                "MIN:0.5:12:960",
                "MAX:0.5:12:960",
                "AVERAGE:0.5:144:800",
                "MAX:0.5:144:800",
                "MIN:0.5:144:800",
                "AVERAGE:0.5:2016:520",
                "MAX:0.5:2016:520",
                "MIN:0.5:2016:520",
            ]
            .map(String::from)
            .to_vec(),
            _ => [
                "AVERAGE:0.5:1:1008",
                "AVERAGE:0.5:12:4320",
                "MIN:0.5:12:4320",
                "MAX:0.5:12:4320",
                "AVERAGE:0.5:144:720",
                "MAX:0.5:144:720",
                "MIN:0.5:144:720",
            ]
            .map(String::from)
            .to_vec(),
        };
        let heartbeat = 2 * step;
        let mut args = vec![
            "create".to_string(),
            path_str(path).to_string(),
            "--start".to_string(),
            start.to_string(),
            "--step".to_string(),
            step.to_string(),
            format!("DS:loss:GAUGE:{heartbeat}:0:{pings}"),
            format!("DS:median:GAUGE:{heartbeat}:0:180"),
        ];
        args.extend((1..=pings).map(|i| format!("DS:ping{i}:GAUGE:{heartbeat}:0:180")));
        args.extend(rras.iter().map(|r| format!("RRA:{r}")));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        rrdtool(&args);
    }

    use crate::spool::beneath::sorted_names as names;

    #[test]
    fn definition_matches_pingmachine_rrdtool_create_for_its_steps() {
        let tmp = tempfile::tempdir().unwrap();
        for (step, pings) in [(20, 3), (60, 5), (300, 20), (3600, 1)] {
            let theirs = tmp.path().join(format!("pm-{step}.rrd"));
            pingmachine_create(&theirs, T0, step, pings);
            let dir = tmp.path().join(format!("ours-{step}"));
            let first = result(step, T0, vec![Some(1e-3); pings as usize]);
            RrdWriter::new().apply(&dir, &[&first]).unwrap();
            let ours = structure(&dir.join(FILE_NAME));
            assert!(ours.len() > 10);
            assert_eq!(ours, structure(&theirs), "step {step} pings {pings}");
        }
    }

    #[test]
    fn create_args_spell_pingmachine_definition() {
        let args = definition(20, 2).create_args();
        assert_eq!(
            args[..7],
            [
                "--step",
                "20",
                "DS:loss:GAUGE:40:0:2",
                "DS:median:GAUGE:40:0:180",
                "DS:ping1:GAUGE:40:0:180",
                "DS:ping2:GAUGE:40:0:180",
                "RRA:AVERAGE:0.5:1:900",
            ]
        );
        assert_eq!(args.len(), 6 + 16);
    }

    #[test]
    fn awkward_steps_get_rras_of_about_the_same_resolution_and_coverage() {
        for step in [1u32, 7, 8, 45, 70, 200, 250, 299] {
            let def = definition(step, 3);
            assert_eq!(def.archives.len(), 16, "step {step}");
            assert_eq!((def.archives[0].pdp_per_row, def.archives[0].rows), (1, 900));
            let consolidated = def.archives[1..].chunks(3);
            for (chunk, (span, rows)) in consolidated.zip([
                (300.0, 864.0),
                (1800.0, 480.0),
                (3600.0, 960.0),
                (43200.0, 800.0),
                (604800.0, 520.0),
            ]) {
                let a = chunk[0];
                let resolution = f64::from(a.pdp_per_row * step);
                let coverage = resolution * f64::from(a.rows);
                assert!(a.pdp_per_row >= 1);
                assert!(
                    (resolution - span).abs() <= f64::from(step) / 2.0 || a.pdp_per_row == 1,
                    "step {step}: resolution {resolution} for span {span}"
                );
                assert!(
                    (coverage / (span * rows) - 1.0).abs() < 0.01,
                    "step {step}: coverage {coverage} for {span}x{rows}"
                );
                assert!(chunk.iter().all(|c| (c.pdp_per_row, c.rows) == (a.pdp_per_row, a.rows)));
            }
        }
        assert_eq!(definition(7, 1).archives[1].pdp_per_row, 43);
        assert_eq!(definition(45, 1).archives[1].pdp_per_row, 7);
    }

    #[test]
    fn update_values_follow_smokeping_convention() {
        let r = result(20, T0, vec![Some(3e-4), None, Some(1e-4), None, Some(2e-4)]);
        assert_eq!(
            update_values(&r),
            vec![
                Datum::Int(2),
                Datum::Float(2e-4),
                Datum::Unspecified,
                Datum::Float(1e-4),
                Datum::Float(2e-4),
                Datum::Float(3e-4),
                Datum::Unspecified,
            ]
        );
        let lost3 = result(20, T0, vec![None, Some(5e-3), None, None]);
        assert_eq!(
            update_values(&lost3),
            vec![
                Datum::Int(3),
                Datum::Float(5e-3),
                Datum::Unspecified,
                Datum::Float(5e-3),
                Datum::Unspecified,
                Datum::Unspecified,
            ]
        );
    }

    #[test]
    fn results_land_at_the_end_of_their_step_in_one_batch() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("output/app/target");
        let results: Vec<OrderResult> = (0..5)
            .map(|i| {
                let v = 1e-3 * f64::from(i + 1);
                result(20, T0 + 20 * i64::from(i), vec![Some(v), Some(2.0 * v), None])
            })
            .collect();
        let refs: Vec<&OrderResult> = results.iter().collect();
        let outcome = RrdWriter::new().apply(&dir, &refs).unwrap();
        assert_eq!(
            outcome,
            RrdApplied {
                applied: 5,
                skipped: 0,
                without_rrd: 0
            }
        );
        let path = dir.join(FILE_NAME);
        let (last, values) = last_update(&path);
        assert_eq!(last, T0 + 4 * 20 + 20);
        assert_eq!(values[0], "1");
        let rows = fetch(&path, 20, T0, T0 + 100);
        for i in 0..5i64 {
            let v = 1e-3 * (i + 1) as f64;
            let row = &rows[&(T0 + 20 * i + 20)];
            assert_eq!(row[0], Some(1.0), "loss at step {i}");
            // Upper median of [v, 2v] is 2v; ping1 is U (1 lost: 0 before, 1 after).
            assert!((row[1].unwrap() - 2.0 * v).abs() < 1e-12);
            assert!((row[2].unwrap() - v).abs() < 1e-12);
            assert!((row[3].unwrap() - 2.0 * v).abs() < 1e-12);
            assert_eq!(row[4], None);
        }
        // The step before the first result holds nothing.
        assert!(rows.get(&T0).is_none_or(|row| row.iter().all(Option::is_none)));
    }

    #[test]
    fn create_if_missing_creates_an_empty_file_once_and_leaves_another_layout_to_the_flush() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("o");
        let first = result(20, T0, vec![Some(1e-3), None, None]);
        let writer = RrdWriter::new();
        assert!(writer.create_if_missing(&dir, &first).unwrap());
        let path = dir.join(FILE_NAME);
        assert_eq!(
            last_update(&path).0,
            T0,
            "one step before the first update, nothing in it"
        );
        assert!(!writer.create_if_missing(&dir, &first).unwrap(), "created once");
        // The update waiting for the flush lands in the file created early.
        assert_eq!(writer.apply(&dir, &[&first]).unwrap().applied, 1);
        assert_eq!(last_update(&path).0, T0 + 20);

        // A file of another layout (5 pings) found by a new writer is not touched here...
        let other = result(20, T0 + 20, vec![Some(1e-3); 5]);
        let fresh_writer = RrdWriter::new();
        assert!(!fresh_writer.create_if_missing(&dir, &other).unwrap());
        let pings = |p: &Path| {
            structure(p)
                .iter()
                .filter(|l| l.starts_with("ds[ping") && l.contains(".type"))
                .count()
        };
        assert_eq!(pings(&path), 3);
        assert_eq!(fs::read_dir(&dir).unwrap().count(), 1, "nothing rotated aside");
        // ...but by the flush, which rotates it as before.
        assert_eq!(fresh_writer.apply(&dir, &[&other]).unwrap().applied, 1);
        assert_eq!(fs::read_dir(&dir).unwrap().count(), 2, "old layout kept aside");
        assert_eq!(pings(&path), 5);
    }

    #[test]
    fn replaying_a_batch_changes_nothing_and_is_no_error() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("o");
        let results: Vec<OrderResult> = (0..4)
            .map(|i| result(60, T0 + 60 * i, vec![Some(0.01), Some(0.02)]))
            .collect();
        let refs: Vec<&OrderResult> = results.iter().collect();
        RrdWriter::new().apply(&dir, &refs).unwrap();
        let before = fs::read(dir.join(FILE_NAME)).unwrap();
        // Same writer (cached layout) and a fresh one (as after a crash and restart).
        for writer in [RrdWriter::new(), RrdWriter::new()] {
            writer.apply(&dir, &refs).unwrap();
            let again = writer.apply(&dir, &refs).unwrap();
            assert_eq!((again.applied, again.skipped), (0, 4));
        }
        assert_eq!(fs::read(dir.join(FILE_NAME)).unwrap(), before);
        // A batch overlapping the file applies only its new part.
        let more: Vec<OrderResult> = (2..6)
            .map(|i| result(60, T0 + 60 * i, vec![Some(0.05), None]))
            .collect();
        let more_refs: Vec<&OrderResult> = more.iter().collect();
        let outcome = RrdWriter::new().apply(&dir, &more_refs).unwrap();
        assert_eq!((outcome.applied, outcome.skipped), (2, 2));
        let rows = fetch(&dir.join(FILE_NAME), 60, T0, T0 + 360);
        assert_eq!(rows[&(T0 + 240)][0], Some(0.0), "old value kept");
        assert_eq!(rows[&(T0 + 300)][0], Some(1.0), "new value added");
        assert_eq!(last_update(&dir.join(FILE_NAME)).0, T0 + 360);
    }

    #[test]
    fn out_of_order_and_duplicate_times_are_sorted_and_first_wins() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("o");
        let a = result(20, T0 + 40, vec![Some(0.3)]);
        let b = result(20, T0, vec![Some(0.1)]);
        let c = result(20, T0 + 20, vec![Some(0.2)]);
        let dup = result(20, T0, vec![Some(0.9)]);
        let outcome = RrdWriter::new().apply(&dir, &[&a, &b, &dup, &c]).unwrap();
        assert_eq!((outcome.applied, outcome.skipped), (3, 1));
        let rows = fetch(&dir.join(FILE_NAME), 20, T0, T0 + 60);
        let medians: Vec<Option<f64>> = (1..=3).map(|i| rows[&(T0 + 20 * i)][1]).collect();
        assert_eq!(medians, vec![Some(0.1), Some(0.2), Some(0.3)]);
    }

    #[test]
    fn zero_answers_store_full_loss_and_unknowns() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("o");
        let r = result(20, T0, vec![None, None, None]);
        RrdWriter::new().apply(&dir, &[&r]).unwrap();
        let (time, values) = last_update(&dir.join(FILE_NAME));
        assert_eq!(time, T0 + 20);
        assert_eq!(values, ["3", "U", "U", "U", "U"]);
        let row = &fetch(&dir.join(FILE_NAME), 20, T0, T0 + 20)[&(T0 + 20)];
        assert_eq!(row[0], Some(3.0));
        assert!(row[1..].iter().all(Option::is_none));
    }

    #[test]
    fn a_failed_run_is_unknown_in_every_data_source_even_between_measured_steps() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("o");
        let before = result(20, T0, vec![Some(0.001), None, Some(0.003)]);
        let mut failed = result(20, T0 + 20, vec![None, None, None]);
        failed.failure = Some("cannot run /nonexistent".into());
        let after = result(20, T0 + 40, vec![Some(0.002); 3]);
        assert_eq!(update_values(&failed), vec![Datum::Unspecified; 5]);
        RrdWriter::new().apply(&dir, &[&before, &failed]).unwrap();
        let (time, values) = last_update(&dir.join(FILE_NAME));
        assert_eq!(time, T0 + 40);
        assert_eq!(values, ["U", "U", "U", "U", "U"], "not loss 3");
        RrdWriter::new().apply(&dir, &[&after]).unwrap();
        let rows = fetch(&dir.join(FILE_NAME), 20, T0, T0 + 60);
        assert_eq!(rows[&(T0 + 20)][0], Some(1.0), "the measured step before");
        // Within the heartbeat of the next update, a missing update would take its values; an
        // explicit unknown stays unknown.
        assert!(rows[&(T0 + 40)].iter().all(Option::is_none), "{:?}", rows[&(T0 + 40)]);
        assert_eq!(rows[&(T0 + 60)][0], Some(0.0), "the measured step after");
    }

    #[test]
    fn one_and_twenty_pings_work() {
        let tmp = tempfile::tempdir().unwrap();
        for pings in [1usize, 20] {
            let dir = tmp.path().join(format!("p{pings}"));
            let rtts: Vec<Option<f64>> = (0..pings)
                .map(|i| (i % 4 != 3).then_some(0.001 * (pings - i) as f64))
                .collect();
            let r = result(20, T0, rtts.clone());
            RrdWriter::new().apply(&dir, &[&r]).unwrap();
            let (_, values) = last_update(&dir.join(FILE_NAME));
            assert_eq!(values.len(), pings + 2);
            let lost = rtts.iter().filter(|v| v.is_none()).count();
            assert_eq!(values[0], lost.to_string());
            let known = values[2..].iter().filter(|v| *v != "U").count();
            assert_eq!(known, pings - lost);
        }
    }

    #[test]
    fn awkward_steps_create_working_files() {
        let tmp = tempfile::tempdir().unwrap();
        for step in [7u32, 45] {
            let dir = tmp.path().join(format!("s{step}"));
            let t = T0 - T0 % i64::from(step);
            let results: Vec<OrderResult> = (0..3)
                .map(|i| result(step, t + i64::from(step) * i, vec![Some(0.002)]))
                .collect();
            let refs: Vec<&OrderResult> = results.iter().collect();
            let outcome = RrdWriter::new().apply(&dir, &refs).unwrap();
            assert_eq!(outcome.applied, 3);
            let info = structure(&dir.join(FILE_NAME));
            assert!(info.contains(&format!("step = {step}")));
            assert_eq!(last_update(&dir.join(FILE_NAME)).0, t + 3 * i64::from(step));
        }
    }

    #[test]
    fn corrupt_files_are_renamed_aside_and_replaced() {
        let tmp = tempfile::tempdir().unwrap();
        let valid = tmp.path().join("valid");
        let r = result(20, T0, vec![Some(0.001), Some(0.002)]);
        RrdWriter::new().apply(&valid, &[&r]).unwrap();
        let valid_bytes = fs::read(valid.join(FILE_NAME)).unwrap();
        let garbage: Vec<u8> = (0..5000u32).map(|i| (i.wrapping_mul(2654435761) >> 13) as u8).collect();
        let header_only = b"RRD\0".to_vec();
        let cases: [(&str, &[u8]); 5] = [
            ("garbage", &garbage),
            ("truncated", &valid_bytes[..valid_bytes.len() / 2]),
            ("short", &valid_bytes[..100]),
            ("empty", b""),
            ("cookie", &header_only),
        ];
        for (name, bytes) in cases {
            let dir = tmp.path().join(name);
            fs::create_dir_all(&dir).unwrap();
            fs::write(dir.join(FILE_NAME), bytes).unwrap();
            let outcome = RrdWriter::new().apply(&dir, &[&r]).unwrap();
            assert_eq!(outcome.applied, 1, "{name}");
            let files = names(&dir);
            assert_eq!(files.len(), 2, "{name}: {files:?}");
            let aside = files.iter().find(|f| f.starts_with("corrupted-")).unwrap();
            assert!(aside.ends_with("-main.rrd"), "{aside}");
            assert_eq!(fs::read(dir.join(aside)).unwrap(), bytes, "{name} kept intact");
            assert_eq!(last_update(&dir.join(FILE_NAME)).0, T0 + 20, "{name}");
        }
    }

    #[test]
    fn file_corrupted_behind_a_cached_layout_is_recovered() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("o");
        let writer = RrdWriter::new();
        let first = result(20, T0, vec![Some(0.001)]);
        writer.apply(&dir, &[&first]).unwrap();
        // Overwrite in place (same inode), so the cache still trusts the file.
        fs::OpenOptions::new()
            .write(true)
            .truncate(true)
            .open(dir.join(FILE_NAME))
            .unwrap();
        let second = result(20, T0 + 20, vec![Some(0.002)]);
        assert_eq!(writer.apply(&dir, &[&second]).unwrap().applied, 1);
        assert_eq!(last_update(&dir.join(FILE_NAME)).0, T0 + 40);
        assert!(names(&dir).iter().any(|n| n.starts_with("corrupted-")));
    }

    #[test]
    fn layout_change_keeps_the_old_file() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("o");
        let writer = RrdWriter::new();
        let three = result(20, T0, vec![Some(0.001); 3]);
        writer.apply(&dir, &[&three]).unwrap();
        let old_bytes = fs::read(dir.join(FILE_NAME)).unwrap();
        let five = result(20, T0 + 20, vec![Some(0.001); 5]);
        writer.apply(&dir, &[&five]).unwrap();
        let files = names(&dir);
        let aside = files
            .iter()
            .find(|f| f.starts_with("main-") && f.ends_with("-step20-pings3.rrd"))
            .unwrap_or_else(|| panic!("old file not kept: {files:?}"));
        assert_eq!(fs::read(dir.join(aside)).unwrap(), old_bytes);
        assert_eq!(last_update(&dir.join(FILE_NAME)).1.len(), 7);
        // A fresh writer (no cache) detects a step change through `rrd info`.
        let step60 = result(60, T0 + 60, vec![Some(0.001); 5]);
        RrdWriter::new().apply(&dir, &[&step60]).unwrap();
        assert!(names(&dir).iter().any(|f| f.ends_with("-step20-pings5.rrd")));
        assert!(structure(&dir.join(FILE_NAME)).contains(&"step = 60".to_string()));
    }

    #[test]
    fn batch_with_changing_layouts_rotates_in_sequence() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("o");
        let a1 = result(20, T0, vec![Some(0.001); 2]);
        let b = result(20, T0 + 20, vec![Some(0.001); 4]);
        let a2 = result(20, T0 + 40, vec![Some(0.003); 2]);
        let outcome = RrdWriter::new().apply(&dir, &[&a1, &b, &a2]).unwrap();
        assert_eq!(outcome.applied, 3);
        let files = names(&dir);
        assert_eq!(files.len(), 3, "{files:?}");
        assert!(files.iter().any(|f| f.ends_with("-step20-pings2.rrd")));
        assert!(files.iter().any(|f| f.ends_with("-step20-pings4.rrd")));
        let (time, values) = last_update(&dir.join(FILE_NAME));
        assert_eq!((time, values.len()), (T0 + 60, 4));
    }

    #[test]
    fn norrd_results_leave_the_rrd_alone() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("o");
        let mut r = result(20, T0, vec![Some(0.001)]);
        r.template = RrdTemplate::Norrd;
        let outcome = RrdWriter::new().apply(&dir, &[&r]).unwrap();
        assert_eq!(outcome.without_rrd, 1);
        assert!(!dir.exists());
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join(FILE_NAME), b"not touched").unwrap();
        RrdWriter::new().apply(&dir, &[&r]).unwrap();
        assert_eq!(fs::read(dir.join(FILE_NAME)).unwrap(), b"not touched");
    }

    #[test]
    fn malformed_results_are_rejected_before_touching_the_file() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("o");
        let good = result(20, T0, vec![Some(0.001)]);
        let mut wrong_count = result(20, T0 + 20, vec![Some(0.001)]);
        wrong_count.pings = 3;
        let mut zero_step = good.clone();
        zero_step.step = 0;
        let mut huge_step = good.clone();
        huge_step.step = u32::MAX;
        let mut negative = good.clone();
        negative.time = -20;
        for bad in [&wrong_count, &zero_step, &huge_step, &negative] {
            let err = RrdWriter::new().apply(&dir, &[&good, bad]).unwrap_err();
            assert!(matches!(err, RrdError::MalformedResult { .. }), "{err}");
        }
        assert!(!dir.exists());
    }

    #[test]
    fn paths_with_spaces_and_unicode_work() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("output/app 1/zürich ping – ü/目标");
        let r = result(20, T0, vec![Some(0.004)]);
        RrdWriter::new().apply(&dir, &[&r]).unwrap();
        assert_eq!(last_update(&dir.join(FILE_NAME)).0, T0 + 20);
    }

    #[test]
    fn parallel_orders_share_one_writer() {
        let tmp = tempfile::tempdir().unwrap();
        let writer = RrdWriter::new();
        std::thread::scope(|scope| {
            for order in 0..8 {
                let writer = &writer;
                let dir = tmp.path().join(format!("order{order}"));
                scope.spawn(move || {
                    for batch in 0..5i64 {
                        let results: Vec<OrderResult> = (0..4)
                            .map(|i| result(20, T0 + 20 * (batch * 4 + i), vec![Some(0.001); 3]))
                            .collect();
                        let refs: Vec<&OrderResult> = results.iter().collect();
                        assert_eq!(writer.apply(&dir, &refs).unwrap().applied, 4);
                    }
                });
            }
        });
        for order in 0..8 {
            let path = tmp.path().join(format!("order{order}")).join(FILE_NAME);
            assert_eq!(last_update(&path).0, T0 + 20 * 20);
        }
    }
}
