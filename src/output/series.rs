//! An order's RRD data as `rrdtool fetch` gives it: every data source of `main.rrd`, one
//! consolidation function, a time window and a wished-for resolution (the API's
//! `GET /api/v1/series/<id>`).
//!
//! Owns nothing on disk and writes nothing: it reads `<dir>/<id>/main.rrd` below `output/` (or
//! `archive/`) beside a running daemon, through [`super::history::CheckedRrd`] (no symlink
//! followed, the checked inode is what librrd reads).
//!
//! Invariants:
//! - **The archive is librrd's choice**, exactly as `rrdtool fetch CF -s FROM -e UNTIL -r RES`
//!   makes it (librrd's `rrd_fetch_r` is called with those arguments): the archive of that
//!   function covering the window whose resolution is closest to the wish, else the one
//!   covering most of it. Times are what `rrdtool fetch` prints: each row's timestamp is the
//!   end of its interval.
//! - **Bounded**: at most [`MAX_SERIES_VALUES`] values (rows × data sources at the file's own
//!   step, the finest librrd could pick) per query; a longer window needs a coarser resolution.
//! - **Unknown is `null`**, never 0.
//!
//! Called by the API (`crate::api`).

use super::history::{CheckedRrd, HistoryError, Layout};
use crate::shared::measurement::OrderId;
use crate::spool::beneath::Dir;
use rrd::ConsolidationFn;
use serde::Serialize;
use std::time::{Duration, UNIX_EPOCH};

/// Most values (rows × data sources) one query may return.
pub const MAX_SERIES_VALUES: u64 = 2_000_000;

/// A consolidation function, as RRD names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum Cf {
    #[serde(rename = "AVERAGE")]
    Average,
    #[serde(rename = "MIN")]
    Min,
    #[serde(rename = "MAX")]
    Max,
    #[serde(rename = "LAST")]
    Last,
}

impl std::str::FromStr for Cf {
    type Err = String;

    fn from_str(text: &str) -> Result<Cf, String> {
        match text.to_ascii_uppercase().as_str() {
            "AVERAGE" => Ok(Cf::Average),
            "MIN" => Ok(Cf::Min),
            "MAX" => Ok(Cf::Max),
            "LAST" => Ok(Cf::Last),
            _ => Err(format!(
                "{:?} is no consolidation function (AVERAGE, MIN, MAX, LAST)",
                crate::orders::book::printable(text)
            )),
        }
    }
}

impl Cf {
    fn librrd(self) -> ConsolidationFn {
        match self {
            Cf::Average => ConsolidationFn::Avg,
            Cf::Min => ConsolidationFn::Min,
            Cf::Max => ConsolidationFn::Max,
            Cf::Last => ConsolidationFn::Last,
        }
    }
}

/// What to fetch: `[from, until]` in unix seconds, `resolution` seconds per row wished for
/// (`None`: the finest).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Query {
    pub cf: Cf,
    pub from: i64,
    pub until: i64,
    pub resolution: Option<u64>,
}

/// Why a query was refused or failed.
#[derive(Debug, thiserror::Error)]
pub enum SeriesError {
    /// The file is missing or cannot be read (as `spoolmon show` says it).
    #[error(transparent)]
    File(#[from] HistoryError),
    /// The caller asked for something impossible (the reason says what).
    #[error("{0}")]
    Query(String),
}

/// One row: its timestamp (the end of its interval, unix seconds) and one value per source.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Row {
    pub time: i64,
    pub values: Vec<Option<f64>>,
}

/// What librrd fetched.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Series {
    pub id: OrderId,
    /// The file read.
    pub file: String,
    pub cf: Cf,
    /// Seconds per row of the archive librrd chose.
    pub resolution: u64,
    /// The window librrd answered for (aligned to `resolution`): rows end after `start`, the
    /// last at `end`.
    pub start: i64,
    pub end: i64,
    /// The data sources, in the order of each row's values.
    pub sources: Vec<String>,
    pub rows: Vec<Row>,
}

/// Fetches `query` from `<parent>/<id>/main.rrd`.
pub fn fetch(parent: &Dir, id: &OrderId, query: Query) -> Result<Series, SeriesError> {
    if query.from >= query.until {
        return Err(SeriesError::Query(format!(
            "from ({}) must be before until ({})",
            query.from, query.until
        )));
    }
    if query.from < 0 {
        return Err(SeriesError::Query(format!("from ({}) is before 1970", query.from)));
    }
    if query.resolution == Some(0) {
        return Err(SeriesError::Query("resolution must be at least 1 second".into()));
    }
    let file = CheckedRrd::open(parent, id)?;
    let info = rrd::ops::info::info(file.librrd_path()).map_err(|e| file.librrd_error(e))?;
    let layout = Layout::from_info(info);
    let finest = query.resolution.unwrap_or(1).max(layout.step.max(1));
    let sources = layout.sources.len() as u64;
    let values = ((query.until - query.from) as u64 / finest).saturating_mul(sources.max(1));
    if values > MAX_SERIES_VALUES {
        return Err(SeriesError::Query(format!(
            "the window needs up to {values} values at {finest} s per row (at most {MAX_SERIES_VALUES}): \
             ask for a coarser resolution or a shorter window"
        )));
    }
    let at = |t: i64| UNIX_EPOCH + Duration::from_secs(t as u64);
    let data = rrd::ops::fetch::fetch(
        file.librrd_path(),
        query.cf.librrd(),
        at(query.from),
        at(query.until),
        Duration::from_secs(query.resolution.unwrap_or(1)),
    )
    .map_err(|e| file.librrd_error(e))?;
    let resolution = data.step().as_secs().max(1);
    let unix = crate::shared::clock::unix_secs;
    let rows = data
        .rows()
        .iter()
        .map(|row| Row {
            time: unix(row.timestamp()),
            values: row.as_slice().iter().map(|v| v.is_finite().then_some(*v)).collect(),
        })
        .collect();
    Ok(Series {
        id: id.clone(),
        file: file.path().to_string_lossy().into_owned(),
        cf: query.cf,
        resolution,
        start: unix(data.start()) - resolution as i64,
        end: unix(data.end()),
        sources: data.ds_names().to_vec(),
        rows,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn consolidation_functions_are_rrds_names_in_any_case() {
        assert_eq!("average".parse::<Cf>().unwrap(), Cf::Average);
        assert_eq!("MAX".parse::<Cf>().unwrap(), Cf::Max);
        assert!("median".parse::<Cf>().unwrap_err().contains("AVERAGE, MIN, MAX, LAST"));
        assert_eq!(serde_json::to_string(&Cf::Last).unwrap(), "\"LAST\"");
    }
}
