//! `spoolmon backfill --to SINK [--from output|archive] [--orders GLOB] [--since T]`: the RRD
//! history of the orders, sent through a sink as if it had been measured now (pmseries'
//! `--load`): each order's `main.rrd` read from its finest `AVERAGE` archive for each period,
//! coarser ones further back, never two archives for one time
//! ([`crate::output::history`]'s finest periods), each row a result the sink encodes as it
//! encodes live ones (`time` the row's start, its pings the row's).
//!
//! Through an outbox of its own, `outbox/<sink>@backfill/`, with its own delivery thread: it
//! runs beside the daemon (whose outbox of that sink it never touches) and delivers with the
//! sink's transport and retries; it ends once every line is delivered. A progress line on a
//! terminal (orders read, lines queued and delivered), log lines otherwise.
//!
//! **Resumable.** Orders are read in id order; after each one the last finished id is recorded
//! in `state/backfill-<sink>.json` with the window, which a later run with the same `--to`
//! continues (its lines already queued are in the outbox, which survives too). An order cut off
//! by a crash is read again: its lines may be sent twice, which Graphite (same path and time),
//! InfluxDB (same point) and Redis (a stream id not above the last) all store once. One backfill
//! per sink at a time (`state/backfill-<sink>.lock`).
//!
//! Exit status: 0 when everything was delivered; 1 when interrupted (SIGINT/SIGTERM: run it
//! again to continue); 2 for bad arguments or a sink that cannot be backfilled.

use super::{load_config, BaseArgs};
use crate::output::history::{CheckedRrd, Layout};
use crate::process::handoff::Kind as Data;
use crate::service::signals::Signals;
use crate::shared::measurement::{OrderId, OrderResult};
use crate::spool::BaseDir;
use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use std::io::{IsTerminal, Write};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, UNIX_EPOCH};
use tracing::info;

/// Lines per outbox record appended.
const BATCH_LINES: usize = 20_000;

/// What `spoolmon backfill` takes besides the base directory.
#[derive(Debug, clap::Args)]
pub struct BackfillArgs {
    /// The sink (its name under sinks:) to send through: graphite, influxdb or redis.
    #[arg(long, value_name = "SINK")]
    pub to: String,
    /// Where the RRDs are read: output (the orders being measured) or archive.
    #[arg(long, value_enum, default_value = "output")]
    pub from: Source,
    /// Only the orders matching this glob (`dc1/**`; `*` within one component).
    #[arg(long, value_name = "GLOB")]
    pub orders: Option<String>,
    /// Only the history since then: unix seconds, or -<duration> (-30d).
    #[arg(long, value_name = "TIME")]
    pub since: Option<String>,
}

/// Where the RRDs are read.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    Output,
    Archive,
}

impl Source {
    fn dir(self) -> &'static str {
        match self {
            Source::Output => "output",
            Source::Archive => "archive",
        }
    }
}

/// `state/backfill-<sink>.json`: the window and how far it got.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct Progress {
    from: Source,
    orders: Option<String>,
    /// `--since` as given (a relative time is read once, at the start).
    since_arg: Option<String>,
    since: i64,
    until: i64,
    /// The last order whose lines are all in the outbox.
    last_done: Option<String>,
}

pub fn run(base: BaseArgs, args: BackfillArgs) -> Result<ExitCode> {
    let config = load_config(base.config.as_deref())?;
    let base_dir = BaseDir::new(&base.base_dir);
    let Some(sink) = config.sinks.get(&args.to) else {
        let names: Vec<&String> = config.sinks.keys().collect();
        bail!("no sink {:?} in the config (sinks: {names:?})", args.to);
    };
    let now = crate::shared::clock::unix_now();
    let since = match &args.since {
        Some(text) => crate::api::query::parse_time(text, now).map_err(|e| anyhow::anyhow!("--since: {e}"))?,
        None => 0,
    };
    let globs = crate::sink::route::OrderGlobs {
        include: args.orders.iter().cloned().collect(),
        exclude: Vec::new(),
    };
    let selection = crate::sink::route::RouteKeys {
        takes: &[crate::sink::route::Kind::Ping],
        orders: &globs,
        metrics: &Default::default(),
    }
    .compile()
    .map_err(|e| anyhow::anyhow!("--orders: {e}"))?;
    let state = base_dir
        .dir("state")
        .with_context(|| format!("cannot open {}/state (is --base-dir right?)", base.base_dir.display()))?;
    let _lock = lock(&state, &args.to)?;
    let progress_name = format!("backfill-{}.json", args.to);
    let found = match state.read_limited(&progress_name, 1 << 20) {
        Ok(bytes) => Some(bytes),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(e.into()),
    };
    let mut progress = match found {
        Some(bytes) => {
            let found: Progress = serde_json::from_slice(&bytes).with_context(|| {
                format!(
                    "{}/{progress_name} is damaged: remove it to start over",
                    state.path().display()
                )
            })?;
            if (found.from, &found.orders, &found.since_arg) != (args.from, &args.orders, &args.since) {
                bail!(
                    "a backfill to {} with other arguments is unfinished ({}/{progress_name}): finish it, or remove that file to start over",
                    args.to,
                    state.path().display()
                );
            }
            info!(last_done = ?found.last_done, "continuing the backfill");
            found
        }
        None => Progress {
            from: args.from,
            orders: args.orders.clone(),
            since_arg: args.since.clone(),
            since,
            until: now,
            last_done: None,
        },
    };
    let ids = order_ids(&base_dir, progress.from)?;
    let todo: Vec<OrderId> = ids
        .into_iter()
        .filter(|id| selection.takes_order(id.as_str()))
        .filter(|id| progress.last_done.as_deref().is_none_or(|done| id.as_str() > done))
        .collect();
    base_dir
        .root_dir()
        .and_then(|root| root.create_dir_all("outbox"))
        .with_context(|| format!("cannot create {}/outbox", base.base_dir.display()))?;
    let signals = Signals::install().context("cannot install signal handlers")?;
    let shutdown = Arc::new(AtomicBool::new(false));
    let detached =
        crate::sink::running::detached(&base_dir, &args.to, sink, &config.node_name(), "backfill", &shutdown)?;
    if !detached.route.takes(Data::Ping) {
        shutdown.store(true, Ordering::SeqCst);
        let _ = detached.delivery.join();
        bail!("sink {} does not take ping results (its takes:)", args.to);
    }
    let parent = base_dir
        .dir(progress.from.dir())
        .with_context(|| format!("cannot open {}/", progress.from.dir()))?;
    let mut meter = Meter::new(todo.len(), std::io::stderr().is_terminal());
    let mut interrupted = false;
    for id in &todo {
        if signals.terminating() {
            interrupted = true;
            break;
        }
        if detached.route.takes_order(id.as_str()) {
            let lines = backfill_order(&parent, id, progress.since, progress.until, &detached)?;
            meter.queued += lines;
        }
        progress.last_done = Some(id.to_string());
        state
            .replace(&progress_name, &serde_json::to_vec_pretty(&progress)?)
            .with_context(|| {
                format!(
                    "cannot record the progress in {}/{progress_name}",
                    state.path().display()
                )
            })?;
        meter.orders += 1;
        meter.show(&detached, false);
    }
    // Wait until every queued line is delivered (or a signal).
    let outbox_dir = detached.outbox.dir().to_owned();
    while !interrupted {
        let left = crate::sink::outbox::status(&outbox_dir)
            .map(|s| s.lines)
            .unwrap_or(u64::MAX);
        meter.show(&detached, false);
        if left == 0 {
            break;
        }
        if signals.terminating() {
            interrupted = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    meter.show(&detached, true);
    shutdown.store(true, Ordering::SeqCst);
    let _ = detached.delivery.join();
    if interrupted {
        eprintln!("spoolmon: backfill interrupted; run the same command again to continue");
        return Ok(ExitCode::from(1));
    }
    // Done: the next backfill to this sink starts a new window.
    let _ = state.unlink(&progress_name);
    Ok(ExitCode::SUCCESS)
}

fn lock(state: &crate::spool::beneath::Dir, sink: &str) -> Result<nix::fcntl::Flock<std::fs::File>> {
    let name = format!("backfill-{sink}.lock");
    let file = state
        .open_or_create(&name)
        .with_context(|| format!("cannot open {}/{name}", state.path().display()))?;
    nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusiveNonblock).map_err(|_| {
        anyhow::anyhow!(
            "another backfill to {sink} is running ({}/{name} is locked)",
            state.path().display()
        )
    })
}

/// Every order directory with a `main.rrd` below `output/` or `archive/`, in id order.
fn order_ids(base: &BaseDir, from: Source) -> Result<Vec<OrderId>> {
    let root = match base.dir(from.dir()) {
        Ok(dir) => dir,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e).with_context(|| format!("cannot open {}/", from.dir())),
    };
    Ok(crate::output::archive::entries_below(&root)?
        .into_iter()
        .filter(|entry| entry.has_rrd)
        .filter_map(|entry| OrderId::new(entry.id).ok())
        .collect())
}

/// Reads one order's history into the outbox; returns the lines queued.
fn backfill_order(
    parent: &crate::spool::beneath::Dir,
    id: &OrderId,
    since: i64,
    until: i64,
    detached: &crate::sink::running::Detached,
) -> Result<u64> {
    let file = match CheckedRrd::open(parent, id) {
        Ok(file) => file,
        Err(e) => {
            tracing::warn!(order = %id, "skipped: {e}");
            return Ok(0);
        }
    };
    let info = rrd::ops::info::info(file.librrd_path()).map_err(|e| file.librrd_error(e))?;
    let layout = Layout::from_info(info);
    let pings = layout.pings() as usize;
    let mut buffer = Vec::new();
    let mut lines = 0usize;
    let mut total = 0u64;
    // Oldest period first, so that each series is sent in time order.
    for (resolution, start, end) in layout.finest_periods().into_iter().rev() {
        let (start, end) = (start.max(since), end.min(until));
        if start >= end {
            continue;
        }
        let at = |t: i64| UNIX_EPOCH + Duration::from_secs(t.max(0) as u64);
        let data = rrd::ops::fetch::fetch(
            file.librrd_path(),
            rrd::ConsolidationFn::Avg,
            at(start),
            at(end),
            Duration::from_secs(resolution),
        )
        .map_err(|e| file.librrd_error(e))?;
        let step = data.step().as_secs() as i64;
        let index = |name: &str| data.ds_names().iter().position(|n| n == name);
        let (loss_at, ping_at): (Option<usize>, Vec<usize>) = (
            index("loss"),
            (1..=pings).filter_map(|i| index(&format!("ping{i}"))).collect(),
        );
        for row in data.rows().iter() {
            let row_end = crate::shared::clock::unix_secs(row.timestamp());
            // Only the rows inside this period: the next finer archive has the time after it.
            if row_end <= start || row_end > end {
                continue;
            }
            let values = row.as_slice();
            let Some(result) = result_of(id, row_end - step, step, values, loss_at, &ping_at) else {
                continue;
            };
            lines += detached.encoder.encode_result(&result, &mut buffer);
            if lines >= BATCH_LINES {
                detached
                    .outbox
                    .append(&buffer, lines as u32)
                    .context("cannot append to the backfill outbox")?;
                total += lines as u64;
                buffer.clear();
                lines = 0;
            }
        }
    }
    if lines > 0 {
        detached
            .outbox
            .append(&buffer, lines as u32)
            .context("cannot append to the backfill outbox")?;
        total += lines as u64;
    }
    Ok(total)
}

/// One RRD row as a result: its pings the known `ping<i>` values, as many as the row's loss
/// leaves answered, the rest lost. `None` for a row with nothing known.
fn result_of(
    id: &OrderId,
    time: i64,
    step: i64,
    values: &[f64],
    loss_at: Option<usize>,
    ping_at: &[usize],
) -> Option<OrderResult> {
    let pings = ping_at.len();
    let known: Vec<f64> = ping_at.iter().map(|&i| values[i]).filter(|v| v.is_finite()).collect();
    let loss = loss_at.map(|i| values[i]).filter(|v| v.is_finite());
    if known.is_empty() && loss.is_none() {
        return None;
    }
    let lost = loss.map_or(pings - known.len(), |l| (l.round().max(0.0) as usize).min(pings));
    let answered = (pings - lost).min(known.len());
    let mut rtts: Vec<Option<f64>> = known.into_iter().take(answered).map(Some).collect();
    rtts.resize(pings.max(1), None);
    Some(
        OrderResult::builder(id.clone(), time)
            .step(u32::try_from(step).unwrap_or(u32::MAX))
            .updated(time + step)
            .rtts(rtts)
            .build(),
    )
}

/// The progress line.
struct Meter {
    total: usize,
    orders: usize,
    queued: u64,
    terminal: bool,
    last: Option<Instant>,
}

impl Meter {
    fn new(total: usize, terminal: bool) -> Meter {
        Meter {
            total,
            orders: 0,
            queued: 0,
            terminal,
            last: None,
        }
    }

    fn show(&mut self, detached: &crate::sink::running::Detached, last: bool) {
        let every = if self.terminal {
            Duration::from_millis(200)
        } else {
            Duration::from_secs(10)
        };
        if !last && self.last.is_some_and(|t| t.elapsed() < every) {
            return;
        }
        self.last = Some(Instant::now());
        let delivered = detached.stats.sent_lines.load(Ordering::Relaxed);
        let width = 30;
        let done = (self.orders * width)
            .checked_div(self.total)
            .unwrap_or(width)
            .min(width);
        let text = format!(
            "[{}{}] {}/{} orders, {} lines queued, {} delivered",
            "#".repeat(done),
            ".".repeat(width - done),
            self.orders,
            self.total,
            self.queued,
            delivered
        );
        if self.terminal {
            let mut err = std::io::stderr().lock();
            let _ = write!(err, "\r{text}{}", if last { "\n" } else { "" });
            let _ = err.flush();
        } else {
            info!("backfill: {text}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_become_results_with_their_loss_and_known_pings() {
        let id = OrderId::new("a/b").unwrap();
        // loss, median, ping1..3
        let row = [1.0, 0.002, 0.001, 0.002, f64::NAN];
        let result = result_of(&id, 1000, 20, &row, Some(0), &[2, 3, 4]).unwrap();
        assert_eq!(result.rtts, [Some(0.001), Some(0.002), None]);
        assert_eq!((result.time, result.step), (1000, 20));
        // A consolidated row: fractional loss rounds, pings known beyond the answered are left out.
        let averaged = [0.4, 0.002, 0.001, 0.002, 0.003];
        assert_eq!(
            result_of(&id, 0, 300, &averaged, Some(0), &[2, 3, 4])
                .unwrap()
                .rtts
                .iter()
                .flatten()
                .count(),
            3
        );
        let unknown = [f64::NAN; 5];
        assert!(result_of(&id, 0, 20, &unknown, Some(0), &[2, 3, 4]).is_none());
        let all_lost = [3.0, f64::NAN, f64::NAN, f64::NAN, f64::NAN];
        assert_eq!(
            result_of(&id, 0, 20, &all_lost, Some(0), &[2, 3, 4]).unwrap().rtts,
            [None, None, None]
        );
    }
}
