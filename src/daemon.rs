//! `spoolmon run`: the all-in-one daemon. Wires the order book, the scheduler and probes, the
//! processing thread and the output together on one base directory.
//!
//! Threads: this one watches `orders/` and `telegraf/` (inotify first, then a full scan; a full
//! rescan every `rescan-interval` and on inotify overflow) and turns order events into schedule
//! updates and lifecycle commands; one scheduler thread starts batch runs (each run on its own
//! thread); one processing thread (with its rayon pool) applies snapshots. SIGTERM/SIGINT set
//! `shutdown`: the scheduler stops starting runs, processing finishes the round in hand.
//! Each sink with an outbox has a delivery thread; a stop leaves undelivered lines in the
//! outbox for the next start.

use crate::config::{Config, Engine};
use crate::orders::book::{OrderBook, OrderEvent};
use crate::orders::order::Order;
use crate::probe::exec::ExecProbe;
use crate::probe::fping::FpingProbe;
use crate::probe::http::HttpProbe;
use crate::probe::icmp::IcmpEngine;
use crate::probe::scheduler::{DiskGuard, ProbeSet, Scheduler, SchedulerStats};
use crate::probe::tcp::TcpProbe;
use crate::probe::Probe;
use crate::process::{self, Lifecycle, LoopTiming, ProcessStats, Processor};
use crate::spool::lock::DaemonLock;
use crate::spool::watch::{DirWatcher, WatchEvent};
use crate::spool::{queue, BaseDir};
use anyhow::{Context, Result};
use crossbeam_channel::Sender;
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};
use tracing::{info, warn};

/// How often `state/heartbeat` is rewritten (read by `spoolmon check daemon`).
const HEARTBEAT: Duration = Duration::from_secs(10);

/// Name of the heartbeat file in `state/`: `<unix time> <pid>\n`, replaced atomically.
pub const HEARTBEAT_FILE: &str = "heartbeat";

/// How often expiry is checked (it only looks at in-memory mtimes).
const EXPIRY_CHECK: Duration = Duration::from_secs(5);

/// Runs the daemon on `base` until `shutdown` is set.
/// `hup` is set by SIGHUP: it makes the daemon rescan `orders/` at once (the configuration itself
/// is read at start only; restart to change it).
pub fn run(base: BaseDir, config: Config, shutdown: Arc<AtomicBool>, hup: Arc<AtomicBool>) -> Result<()> {
    base.create_all()
        .with_context(|| format!("cannot create base directory {}", base.root().display()))?;
    let _lock = DaemonLock::acquire(&base.state().join("lock"))?;
    let owner = queue::TmpOwner {
        probes: true,
        pull: config.pull.is_some(),
        processing: true,
    };
    let orphans = queue::clean_tmp(&base, owner).context("cannot clean incoming.tmp/")?;
    if orphans > 0 {
        info!(orphans, "removed unpublished snapshots left by a previous run");
    }
    let probes = build_probes(&config)?;
    let _pull_lock = match config.pull {
        Some(_) => Some(DaemonLock::acquire(&base.state().join(crate::pull_command::PULL_LOCK))?),
        None => None,
    };

    // Watch first, then scan: nothing dropped in between is missed (invariant 5).
    let mut watchers = vec![
        DirWatcher::new(&base.orders(), true).context("cannot watch orders/")?,
        DirWatcher::new(&base.telegraf(), true).context("cannot watch telegraf/")?,
    ];
    let mut book = OrderBook::new(base.clone(), config.clone());
    let initial = book.rescan(SystemTime::now());

    let (command_tx, command_rx) = crossbeam_channel::unbounded();
    let (wake_tx, wake_rx) = crossbeam_channel::unbounded();
    let (orders_tx, orders_rx) = crossbeam_channel::unbounded();
    send_lifecycle(&command_tx, initial);
    reconcile_output(&base, &book, &command_tx);

    let sinks = crate::sink::running::start(&base, &config.sinks, &shutdown)?;
    let (process_stats, scheduler_stats) = (Arc::new(ProcessStats::default()), Arc::new(SchedulerStats::default()));
    let pull_stats = Arc::new(crate::collect::haproxy::PullStats::default());
    let processor = Processor::new(
        base.clone(),
        config.workers,
        sinks.sinks.clone(),
        true,
        process_stats.clone(),
    )?
    .with_haproxy(config.process.clone());
    let timing = LoopTiming {
        rescan: Duration::from_secs(config.rescan_interval),
        flush_interval: Duration::from_secs(config.rrd_flush_interval),
    };
    let process_shutdown = shutdown.clone();
    let processing = std::thread::Builder::new()
        .name("process".into())
        .spawn(move || process::run_loop(processor, command_rx, wake_rx, process_shutdown, timing))?;

    let scheduler = Scheduler {
        base: base.clone(),
        probes,
        max_batch: config.max_batch,
        ping_timeout: Duration::from_millis(config.icmp.timeout_ms),
        guard: DiskGuard {
            queue_size: config.queue_size,
            min_free_bytes: config.min_free_space_mb << 20,
        },
        stats: scheduler_stats.clone(),
        published_tx: Some(wake_tx),
    };
    let scheduler_shutdown = shutdown.clone();
    let scheduling = std::thread::Builder::new()
        .name("scheduler".into())
        .spawn(move || scheduler.run(orders_rx, scheduler_shutdown))?;
    let pulling = match &config.pull {
        Some(options) => {
            let (base, options, shutdown) = (base.clone(), options.clone(), shutdown.clone());
            let stats = pull_stats.clone();
            Some(
                std::thread::Builder::new()
                    .name("pull".into())
                    .spawn(move || crate::collect::haproxy::run_pull(&base, &options, shutdown, stats))?,
            )
        }
        None => None,
    };
    send_orders(&orders_tx, &book);
    info!(base = %base.root().display(), orders = book.active().count(), "spoolmon running");
    let self_metrics =
        crate::selfmetrics::SelfMetrics::for_daemon(&base, &config, &sinks, scheduler_stats, process_stats, pull_stats);

    let signals = LoopSignals {
        shutdown: &shutdown,
        hup: &hup,
    };
    watch_orders(
        &base,
        &mut book,
        &mut watchers,
        &config,
        &command_tx,
        &orders_tx,
        signals,
        &self_metrics,
    );

    info!("stopping: finishing the snapshots in hand");
    drop(orders_tx);
    let _ = scheduling.join();
    if let Some(pulling) = pulling {
        let _ = pulling.join();
    }
    let _ = processing.join();
    sinks.join();
    info!("stopped");
    Ok(())
}

/// Rewrites `state/heartbeat` (a failure is logged: the check will then report it stale).
fn write_heartbeat(base: &BaseDir) {
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default();
    let text = format!("{} {}\n", now.as_secs(), std::process::id());
    if let Err(e) = crate::spool::atomic::replace_file(&base.state().join(HEARTBEAT_FILE), text.as_bytes()) {
        warn!("cannot write the heartbeat: {e}");
    }
}

/// The flags the order-watching loop obeys.
#[derive(Clone, Copy)]
struct LoopSignals<'a> {
    shutdown: &'a AtomicBool,
    hup: &'a AtomicBool,
}

/// The order-watching loop of the main thread.
#[allow(clippy::too_many_arguments)]
fn watch_orders(
    base: &BaseDir,
    book: &mut OrderBook,
    watchers: &mut [DirWatcher],
    config: &Config,
    commands: &Sender<Lifecycle>,
    orders_tx: &Sender<Vec<Order>>,
    signals: LoopSignals<'_>,
    self_metrics: &crate::selfmetrics::SelfMetrics,
) {
    let rescan_every = Duration::from_secs(config.rescan_interval);
    let (mut last_rescan, mut last_expiry, mut last_purge) = (Instant::now(), Instant::now(), None::<Instant>);
    let mut last_heartbeat: Option<Instant> = None;
    while !signals.shutdown.load(Ordering::Relaxed) {
        if last_heartbeat.is_none_or(|t| t.elapsed() >= HEARTBEAT) {
            write_heartbeat(base);
            last_heartbeat = Some(Instant::now());
        }
        self_metrics.tick(Some(book));
        let mut changed = Vec::new();
        let mut rescan = last_rescan.elapsed() >= rescan_every;
        if signals.hup.swap(false, Ordering::Relaxed) {
            info!("SIGHUP: rescanning orders/ (the configuration is read at start only)");
            rescan = true;
        }
        for (i, watcher) in watchers.iter_mut().enumerate() {
            let timeout = if i == 0 {
                Duration::from_millis(250)
            } else {
                Duration::ZERO
            };
            match watcher.wait(timeout) {
                Ok(events) => collect_paths(events, &mut changed, &mut rescan),
                Err(e) => {
                    warn!("order watcher failed, rescanning: {e}");
                    rescan = true;
                }
            }
        }
        let now = SystemTime::now();
        let mut events = if rescan {
            last_rescan = Instant::now();
            book.rescan(now)
        } else if changed.is_empty() {
            Vec::new()
        } else {
            book.refresh(&changed, now)
        };
        if last_expiry.elapsed() >= EXPIRY_CHECK {
            last_expiry = Instant::now();
            events.extend(book.expire(now));
        }
        if !events.is_empty() {
            send_lifecycle(commands, events);
            send_orders(orders_tx, book);
        }
        if let Some(retention) = config.archive_retention {
            if last_purge.is_none_or(|t| t.elapsed() >= Duration::from_secs(3600)) {
                last_purge = Some(Instant::now());
                let _ = commands.send(Lifecycle::PurgeArchive(Duration::from_secs(retention)));
            }
        }
    }
}

fn collect_paths(events: Vec<WatchEvent>, changed: &mut Vec<PathBuf>, rescan: &mut bool) {
    for event in events {
        match event {
            WatchEvent::Changed(path) | WatchEvent::Removed(path) => changed.push(path),
            WatchEvent::Rescan => *rescan = true,
        }
    }
}

fn send_lifecycle(commands: &Sender<Lifecycle>, events: Vec<OrderEvent>) {
    for event in events {
        let command = match event {
            OrderEvent::Added(order) => Lifecycle::Activate(order.id),
            OrderEvent::Changed { .. } => continue,
            OrderEvent::Removed(id) => Lifecycle::Deactivate { id, expired_file: None },
            OrderEvent::Expired { id, path } => Lifecycle::Deactivate {
                id,
                expired_file: Some(path),
            },
        };
        let _ = commands.send(command);
    }
}

fn send_orders(orders_tx: &Sender<Vec<Order>>, book: &OrderBook) {
    let _ = orders_tx.send(book.active().cloned().collect());
}

/// Archives output directories of orders that disappeared while the daemon was down.
fn reconcile_output(base: &BaseDir, book: &OrderBook, commands: &Sender<Lifecycle>) {
    let active: HashSet<String> = book.active().map(|o| o.id.to_string()).collect();
    let mut stale = Vec::new();
    find_order_dirs(&base.output(), &base.output(), &mut stale);
    for id in stale.into_iter().filter(|id| !active.contains(id.as_str())) {
        match crate::measurement::OrderId::new(id) {
            Ok(id) => {
                info!(order = %id, "order gone while stopped: archiving its output");
                let _ = commands.send(Lifecycle::Deactivate { id, expired_file: None });
            }
            Err(e) => warn!("unexpected directory in output/: {e}"),
        }
    }
}

/// Order directories below `dir`: those holding `main.rrd` or `last_result`.
fn find_order_dirs(root: &Path, dir: &Path, found: &mut Vec<String>) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    let mut is_order_dir = false;
    for entry in entries.flatten() {
        let name = entry.file_name();
        if name == "main.rrd" || name == "last_result" {
            is_order_dir = true;
        } else if entry.file_type().is_ok_and(|t| t.is_dir()) {
            find_order_dirs(root, &entry.path(), found);
        }
    }
    if is_order_dir {
        if let Ok(rel) = dir.strip_prefix(root) {
            found.push(rel.to_string_lossy().into_owned());
        }
    }
}

/// The probes for this configuration: the native ICMP engine, or fping when it cannot run.
pub fn build_probes(config: &Config) -> Result<ProbeSet> {
    let fping = || -> Arc<dyn Probe> {
        info!(fping = %config.fping_path.display(), "ICMP orders are measured with the fping binary");
        Arc::new(FpingProbe::new(config.fping_path.clone()))
    };
    let icmp: Arc<dyn Probe> = match config.engine {
        Engine::Fping => fping(),
        Engine::Native => Arc::new(IcmpEngine::open(&config.icmp).context("engine: native, but no ICMP socket")?),
        Engine::Auto => match IcmpEngine::open(&config.icmp) {
            Ok(engine) => Arc::new(engine),
            Err(e) => {
                warn!(
                    "native ICMP engine unavailable ({e}); using {}",
                    config.fping_path.display()
                );
                fping()
            }
        },
    };
    Ok(ProbeSet {
        icmp,
        http: Arc::new(HttpProbe::new()),
        tcp: Arc::new(TcpProbe::new()),
        exec: Arc::new(ExecProbe::new()),
    })
}
