//! `spoolmon run`: the all-in-one daemon. Wires the order book, the scheduler and probes, the
//! processing thread and the output together on one base directory.
//!
//! Threads: this one watches `orders/` and `telegraf/` (inotify first, then a full scan; a full
//! rescan every `rescan-interval` and on inotify overflow) and turns order events into schedule
//! updates and lifecycle commands; one scheduler thread starts batch runs (each run on its own
//! thread); one processing thread (with its rayon pool) applies snapshots. SIGTERM/SIGINT stop
//! the pipeline: the scheduler stops starting runs, processing finishes the round in hand.
//! Each sink with an outbox has a delivery thread; a stop leaves undelivered lines in the
//! outbox for the next start. SIGHUP reloads the configuration (see [`run`]).

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
use crate::selfmetrics::SelfMetrics;
use crate::service::claim::claim_base;
use crate::service::notify::Notifier;
use crate::service::privilege::Account;
use crate::service::signals::Signals;
use crate::sink::running::RunningSinks;
use crate::spool::lock::{DaemonLock, LOCK_FILE};
use crate::spool::watch::{DirWatcher, WatchEvent};
use crate::spool::{queue, state, BaseDir};
use anyhow::{Context, Result};
use crossbeam_channel::{Receiver, Sender};
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};
use tracing::{info, warn};

/// How often expiry is checked (it only looks at in-memory mtimes).
const EXPIRY_CHECK: Duration = Duration::from_secs(5);

/// How `spoolmon run` was started, besides its configuration.
#[derive(Debug, Default)]
pub struct RunOptions {
    /// The configuration file, read again on SIGHUP (none: SIGHUP only rescans `orders/`).
    pub config_file: Option<PathBuf>,
    /// Switch to this account once the ICMP sockets and locks are open.
    pub user: Option<Account>,
    /// Files to give to `user` as well (a log file opened as root).
    pub user_files: Vec<PathBuf>,
}

/// Counters that outlive a reload (read by status and self-metrics).
#[derive(Clone)]
pub struct DaemonStats {
    pub process: Arc<ProcessStats>,
    pub scheduler: Arc<SchedulerStats>,
    pub pull: Arc<crate::collect::haproxy::PullStats>,
    /// When the process started, unix seconds (a reload does not reset the counters).
    pub started: i64,
}

impl DaemonStats {
    fn new() -> DaemonStats {
        DaemonStats {
            process: Arc::default(),
            scheduler: Arc::default(),
            pull: Arc::default(),
            started: crate::selfmetrics::unix_now(),
        }
    }
}

/// Runs the daemon on `base` until SIGTERM/SIGINT (see [`Signals`]).
///
/// SIGHUP reads the config file again: an invalid one is logged and the running configuration
/// kept; an unchanged one only rescans `orders/`; a changed one stops the pipeline (probes
/// scheduling, processing, sinks, pull; each finishes what it has in hand, as on a stop) and
/// starts it again with the new configuration. The ICMP sockets, the locks and the account are
/// kept: `engine`, `icmp` and `fping-path` change only at restart.
pub fn run(base: BaseDir, config: Config, options: RunOptions, signals: &Signals) -> Result<()> {
    let mut notifier = Notifier::from_env();
    let owner = queue::TmpOwner {
        probes: true,
        pull: config.pull.is_some(),
        processing: true,
    };
    // The puller's lock too when pulling, before incoming.tmp/ is cleaned of pull leftovers.
    let lock_names: &[&str] = match config.pull {
        Some(_) => &[LOCK_FILE, crate::pull_command::PULL_LOCK],
        None => &[LOCK_FILE],
    };
    let mut locks = claim_base(&base, lock_names, owner, options.user.as_ref())?;
    let mut pull_lock = (locks.len() > 1).then(|| locks.remove(1));
    let probes = build_probes(&config)?;
    if let Some(account) = &options.user {
        let mut owned: Vec<&Path> = options.user_files.iter().map(PathBuf::as_path).collect();
        owned.extend(locks.iter().chain(&pull_lock).map(|lock| lock.path.as_path()));
        account.switch_to(&base, &owned)?;
    }
    let _lock = locks;
    signals.bound_the_drain(config.stop_timeout)?;

    // Watch first, then scan: nothing dropped in between is missed (invariant 5).
    let mut watchers = vec![
        DirWatcher::new(&base.orders(), true).context("cannot watch orders/")?,
        DirWatcher::new(&base.telegraf(), true).context("cannot watch telegraf/")?,
    ];
    let stats = DaemonStats::new();
    let mut config = config;
    let mut pipeline = Pipeline::start(&base, &config, &probes, &stats)?;
    loop {
        info!(base = %base.root().display(), orders = pipeline.book.active().count(), "spoolmon running");
        notifier.ready(&format!("{} orders active", pipeline.book.active().count()));
        let exit = watch_orders(
            &base,
            &mut pipeline,
            &mut watchers,
            &config,
            signals,
            options.config_file.as_deref(),
            &mut notifier,
        );
        let LoopExit::Reload(new) = exit else { break };
        notifier.reloading();
        if new.pull.is_some() && pull_lock.is_none() {
            match DaemonLock::acquire(&base, crate::spool::lock::PULL_LOCK) {
                Ok(lock) => pull_lock = Some(lock),
                Err(e) => {
                    warn!(
                        "SIGHUP: the new config pulls HAProxy statistics, but {e}; keeping the running configuration"
                    );
                    continue;
                }
            }
        }
        info!("SIGHUP: configuration changed; restarting the pipeline");
        pipeline.stop(&mut notifier);
        if signals.terminating() {
            notifier.stopping();
            info!("stopped (a stop came during the reload)");
            return Ok(());
        }
        (pipeline, config) = restart(&base, config, *new, &probes, &stats)?;
        if config.pull.is_none() {
            pull_lock = None;
        }
        signals.stop_timeout_s.store(config.stop_timeout, Ordering::Relaxed);
    }
    notifier.stopping();
    info!("stopping: finishing the snapshots in hand");
    pipeline.stop(&mut notifier);
    info!("stopped");
    Ok(())
}

/// Starts the pipeline with `new`, or with `running` again if `new` cannot start; returns it
/// with the configuration in effect.
fn restart(
    base: &BaseDir,
    running: Config,
    new: Config,
    probes: &ProbeSet,
    stats: &DaemonStats,
) -> Result<(Pipeline, Config)> {
    match Pipeline::start(base, &new, probes, stats) {
        Ok(pipeline) => {
            info!("configuration reloaded");
            Ok((pipeline, new))
        }
        Err(e) => {
            warn!("SIGHUP: the new configuration cannot start ({e:#}); going back to the running one");
            Ok((Pipeline::start(base, &running, probes, stats)?, running))
        }
    }
}

/// The parts of `spoolmon run` that one configuration drives: order book, scheduler, processing,
/// sinks, pull. Rebuilt from scratch on a reload; everything they share lives on disk.
struct Pipeline {
    stop: Arc<AtomicBool>,
    book: OrderBook,
    commands: Sender<Lifecycle>,
    orders_tx: Sender<Vec<Order>>,
    processing: Option<JoinHandle<()>>,
    scheduling: Option<JoinHandle<()>>,
    pulling: Option<JoinHandle<()>>,
    sinks: RunningSinks,
    self_metrics: SelfMetrics,
}

impl Pipeline {
    /// Starts every part; if one cannot start, the parts already running are stopped and
    /// joined before the error is returned (nothing of a failed start keeps running).
    fn start(base: &BaseDir, config: &Config, probes: &ProbeSet, stats: &DaemonStats) -> Result<Pipeline> {
        let stop = Arc::new(AtomicBool::new(false));
        let mut book = OrderBook::new(base.clone(), config.order_options());
        let initial = book.rescan(SystemTime::now());
        let (commands, command_rx) = crossbeam_channel::unbounded();
        let (orders_tx, orders_rx) = crossbeam_channel::unbounded();
        send_lifecycle(&commands, initial);
        reconcile_output(base, &book, &commands);
        let sinks = crate::sink::running::start(base, &config.sinks, &stop)?;
        let self_metrics = SelfMetrics::for_daemon(
            base,
            config,
            &sinks,
            stats.scheduler.clone(),
            stats.process.clone(),
            stats.pull.clone(),
        )
        .started(stats.started);
        let mut pipeline = Pipeline {
            stop,
            book,
            commands,
            orders_tx,
            processing: None,
            scheduling: None,
            pulling: None,
            sinks,
            self_metrics,
        };
        match pipeline.start_threads(base, config, probes, stats, command_rx, orders_rx) {
            Ok(()) => {
                send_orders(&pipeline.orders_tx, &pipeline.book);
                Ok(pipeline)
            }
            Err(e) => {
                pipeline.stop(&mut Notifier::disabled());
                Err(e)
            }
        }
    }

    fn start_threads(
        &mut self,
        base: &BaseDir,
        config: &Config,
        probes: &ProbeSet,
        stats: &DaemonStats,
        command_rx: Receiver<Lifecycle>,
        orders_rx: Receiver<Vec<Order>>,
    ) -> Result<()> {
        let (wake_tx, wake_rx) = crossbeam_channel::unbounded();
        let processor = Processor::new(
            base.clone(),
            config.workers,
            self.sinks.sinks.clone(),
            true,
            stats.process.clone(),
        )?
        .with_haproxy(config.process.clone())
        .with_limits(config.result_limits());
        let timing = LoopTiming {
            rescan: Duration::from_secs(config.rescan_interval),
            flush_interval: Duration::from_secs(config.rrd_flush_interval),
        };
        let stop = self.stop.clone();
        self.processing = Some(
            std::thread::Builder::new()
                .name("process".into())
                .spawn(move || process::run_loop(processor, command_rx, wake_rx, stop, timing, &mut || {}))?,
        );
        let scheduler = Scheduler {
            base: base.clone(),
            probes: probes.clone(),
            max_batch: config.max_batch,
            ping_timeout: Duration::from_millis(config.icmp.timeout_ms),
            guard: DiskGuard {
                queue_size: config.queue_size,
                min_free_bytes: config.min_free_space_mb << 20,
            },
            stats: stats.scheduler.clone(),
            published_tx: Some(wake_tx),
        };
        let stop = self.stop.clone();
        self.scheduling = Some(
            std::thread::Builder::new()
                .name("scheduler".into())
                .spawn(move || scheduler.run(orders_rx, stop))?,
        );
        if let Some(options) = &config.pull {
            let (base, options, stop, stats) = (base.clone(), options.clone(), self.stop.clone(), stats.pull.clone());
            self.pulling = Some(
                std::thread::Builder::new()
                    .name("pull".into())
                    .spawn(move || crate::collect::haproxy::run_pull(&base, &options, stop, stats, &mut || {}))?,
            );
        }
        Ok(())
    }

    /// Stops starting work, lets every thread finish what it has in hand, and waits for them,
    /// pinging the service manager's watchdog meanwhile (a drain may take a processing round).
    fn stop(self, notifier: &mut Notifier) {
        self.stop.store(true, Ordering::SeqCst);
        drop(self.orders_tx);
        for thread in [self.scheduling, self.pulling].into_iter().flatten() {
            join_alive(thread, notifier);
        }
        drop(self.commands);
        if let Some(processing) = self.processing {
            join_alive(processing, notifier);
        }
        while self.sinks.running() {
            notifier.watchdog_tick();
            std::thread::sleep(Duration::from_millis(100));
        }
        self.sinks.join();
    }
}

/// Waits for `thread`, pinging the watchdog while it runs.
fn join_alive(thread: JoinHandle<()>, notifier: &mut Notifier) {
    while !thread.is_finished() {
        notifier.watchdog_tick();
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = thread.join();
}

/// Keys whose running values stay until a restart (the sockets and probes built from them are
/// opened before privileges are dropped): `new` with those keys taken from `running`.
fn keep_restart_only_keys(running: &Config, mut new: Config) -> Config {
    let mut kept = Vec::new();
    if new.engine != running.engine {
        kept.push("engine");
        new.engine = running.engine;
    }
    if new.icmp != running.icmp {
        kept.push("icmp");
        new.icmp = running.icmp.clone();
    }
    if new.fping_path != running.fping_path {
        kept.push("fping-path");
        new.fping_path = running.fping_path.clone();
    }
    if !kept.is_empty() {
        warn!(
            keys = kept.join(", "),
            "SIGHUP: these keys change only at restart; their running values stay"
        );
    }
    new
}

/// Why the order-watching loop ended.
enum LoopExit {
    Stop,
    /// SIGHUP brought a valid configuration different from the running one.
    Reload(Box<Config>),
}

/// What SIGHUP found in the config file.
enum Reread {
    Unchanged,
    Invalid,
    Changed(Box<Config>),
}

/// Reads the config file again for SIGHUP, logging what it found.
fn reread(config_file: Option<&Path>, running: &Config) -> Reread {
    let Some(path) = config_file else {
        info!("SIGHUP: no config file; rescanning orders/");
        return Reread::Unchanged;
    };
    match Config::load(path).map(|new| keep_restart_only_keys(running, new)) {
        Ok(new) if new == *running => {
            info!(config = %path.display(), "SIGHUP: configuration unchanged; rescanning orders/");
            Reread::Unchanged
        }
        Ok(new) => Reread::Changed(Box::new(new)),
        Err(e) => {
            warn!("SIGHUP: {e}; keeping the running configuration (rescanning orders/)");
            Reread::Invalid
        }
    }
}

/// The order-watching loop of the main thread: also writes the heartbeat and pings the
/// service manager's watchdog, so both prove this loop is alive.
fn watch_orders(
    base: &BaseDir,
    pipeline: &mut Pipeline,
    watchers: &mut [DirWatcher],
    config: &Config,
    signals: &Signals,
    config_file: Option<&Path>,
    notifier: &mut Notifier,
) -> LoopExit {
    let rescan_every = Duration::from_secs(config.rescan_interval);
    let (mut last_rescan, mut last_expiry, mut last_purge) = (Instant::now(), Instant::now(), None::<Instant>);
    let mut last_heartbeat: Option<Instant> = None;
    let book = &mut pipeline.book;
    while !signals.terminating() {
        notifier.watchdog_tick();
        if last_heartbeat.is_none_or(|t| t.elapsed() >= state::HEARTBEAT_EVERY) {
            state::write_heartbeat(base);
            last_heartbeat = Some(Instant::now());
        }
        pipeline.self_metrics.tick(Some(book));
        let mut changed = Vec::new();
        let mut rescan = last_rescan.elapsed() >= rescan_every;
        if signals.hup.swap(false, Ordering::Relaxed) {
            match reread(config_file, config) {
                Reread::Changed(new) => return LoopExit::Reload(new),
                Reread::Unchanged | Reread::Invalid => rescan = true,
            }
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
            send_lifecycle(&pipeline.commands, events);
            send_orders(&pipeline.orders_tx, book);
        }
        if let Some(retention) = config.archive_retention {
            if last_purge.is_none_or(|t| t.elapsed() >= Duration::from_secs(3600)) {
                last_purge = Some(Instant::now());
                let _ = pipeline
                    .commands
                    .send(Lifecycle::PurgeArchive(Duration::from_secs(retention)));
            }
        }
    }
    LoopExit::Stop
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
