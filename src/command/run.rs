//! `spoolmon run`: the all-in-one daemon. Composes the order book and its watch, the scheduler
//! and probes, the processing thread, the sinks, the optional HAProxy puller and self-metrics on
//! one base directory, under the [`crate::service::supervisor`].
//!
//! Threads: the main thread watches `orders/` and `telegraf/` ([`OrderWatch`]), turns order
//! events into schedule updates and processing's lifecycle commands, writes the heartbeat and
//! self-metrics and pings the watchdog; one scheduler thread starts batch runs (each run on its
//! own thread); one processing thread applies snapshots (reading HAProxy's on several); each sink with an
//! outbox has a delivery thread; with `pull:`, one pull thread. SIGTERM/SIGINT stop the
//! pipeline: the scheduler stops starting runs, processing finishes the round in hand, a stop
//! leaves undelivered lines in the outbox for the next start.
//!
//! SIGHUP reads the config file again: an invalid one is logged and the running configuration
//! kept; an unchanged one only rescans `orders/`; a changed one stops the pipeline (scheduling,
//! processing, sinks, pull; each finishes what it has in hand, as on a stop) and starts it again
//! with the new configuration, or with the running one if the new one cannot start. The ICMP
//! sockets, the locks and the account are kept: `engine`, `icmp` and `fping-path` change only
//! at restart (a warning says so).
//!
//! Log lines keep the target `spoolmon::daemon` of the module this replaced, so log filters
//! and journal searches keep matching.

use super::{load_config, BaseArgs, ServiceArgs, Started};
use crate::config::Config;
use crate::orders::book::{OrderBook, OrderEvent};
use crate::orders::order::Order;
use crate::orders::watch::OrderWatch;
use crate::probe::exec::ExecProbe;
use crate::probe::fping::FpingProbe;
use crate::probe::http::HttpProbe;
use crate::probe::icmp::Engine;
use crate::probe::icmp::IcmpEngine;
use crate::probe::scheduler::{ProbeSet, Scheduler, SchedulerStats};
use crate::probe::tcp::TcpProbe;
use crate::probe::Probe;
use crate::process::{self, Lifecycle, LoopTiming, ProcessStats, Processor};
use crate::selfmetrics::SelfMetrics;
use crate::service::notify::Notifier;
use crate::service::signals::Signals;
use crate::service::supervisor::{self, Claim, Event, Reread, Served, Service};
use crate::sink::running::RunningSinks;
use crate::spool::guard::DiskGuard;
use crate::spool::lock::{DaemonLock, LOCK_FILE, PULL_LOCK};
use crate::spool::{queue, state, BaseDir};
use anyhow::{Context, Result};
use crossbeam_channel::{Receiver, Sender};
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};
use tracing::{info, warn};

/// The log target of every line of `spoolmon run` (see the module documentation).
const LOG: &str = "spoolmon::daemon";

/// How often the archive retention is applied, when one is set.
const PURGE_EVERY: Duration = Duration::from_secs(3600);

/// `spoolmon run`: runs the daemon on `--base-dir` until SIGTERM/SIGINT.
pub fn run(base: BaseArgs, service: ServiceArgs, log_file: Option<PathBuf>) -> Result<ExitCode> {
    let config = load_config(base.config.as_deref())?;
    let started = Started::new(&base, &service, log_file)?;
    daemon(BaseDir::new(base.base_dir), config, started)?;
    Ok(ExitCode::SUCCESS)
}

/// Counters that outlive a reload (read by status and self-metrics).
#[derive(Clone)]
pub struct DaemonStats {
    pub process: Arc<ProcessStats>,
    pub scheduler: Arc<SchedulerStats>,
    pub pull: Arc<crate::collect::haproxy::PullStats>,
    /// Why the last SIGHUP's config was refused, until a reload is taken (status's `config`).
    pub config: Arc<crate::shared::last_error::LastError>,
    pub receive: Arc<crate::receive::server::ReceiveStats>,
    pub api: Arc<crate::http::ServerStats>,
    /// RTT histograms per order for the API's `/metrics` (counted only with an `api:` section).
    pub rtt: Arc<crate::process::latency::RttHistograms>,
    /// When the process started, unix seconds (a reload does not reset the counters).
    pub started: i64,
}

impl DaemonStats {
    fn new() -> DaemonStats {
        DaemonStats {
            process: Arc::default(),
            scheduler: Arc::default(),
            pull: Arc::default(),
            config: Arc::default(),
            receive: Arc::default(),
            api: Arc::default(),
            rtt: Arc::default(),
            started: crate::shared::clock::unix_now(),
        }
    }
}

/// Runs the daemon on `base` with `config` until SIGTERM/SIGINT (see the module documentation).
pub fn daemon(base: BaseDir, config: Config, started: Started) -> Result<()> {
    let owner = queue::TmpOwner {
        probes: true,
        pull: config.pull.is_some(),
        processing: true,
    };
    // The puller's lock too when pulling, before incoming.tmp/ is cleaned of pull leftovers.
    let lock_names: &[&str] = match config.pull {
        Some(_) => &[LOCK_FILE, PULL_LOCK],
        None => &[LOCK_FILE],
    };
    let claim = Claim {
        locks: lock_names,
        owner,
        user: started.user.as_ref(),
        user_files: &started.user_files,
        stop_timeout: config.stop_timeout,
    };
    let config_file = started.config_file.as_deref();
    supervisor::launch(&base, claim, &started.signals, |mut locks| {
        let pull_lock = (locks.len() > 1).then(|| locks.remove(1));
        let probes = build_probes(&config)?;
        let daemon = Daemon {
            base: base.clone(),
            config_file,
            _lock: locks,
            pull_lock,
            probes,
            watch: None,
            stats: DaemonStats::new(),
            pipeline: None,
        };
        Ok((daemon, config.clone()))
    })
}

/// `spoolmon run` as a [`Service`]: what outlives a reload, and the running [`Pipeline`].
struct Daemon<'a> {
    base: BaseDir,
    config_file: Option<&'a Path>,
    _lock: Vec<DaemonLock>,
    /// Held while the running configuration pulls (taken on a reload that starts pulling).
    pull_lock: Option<DaemonLock>,
    /// Opened before the account switch; kept across reloads.
    probes: ProbeSet,
    /// Set up at the first start, before the first scan; kept across reloads.
    watch: Option<OrderWatch>,
    stats: DaemonStats,
    pipeline: Option<Pipeline>,
}

impl Service for Daemon<'_> {
    type Settings = Config;

    fn start(&mut self, config: &Config) -> Result<()> {
        let rescan_every = Duration::from_secs(config.rescan_interval);
        let watch = match &mut self.watch {
            Some(watch) => watch,
            // Watch first, then scan: nothing dropped in between is missed (invariant 5).
            None => self.watch.insert(OrderWatch::new(&self.base, rescan_every)?),
        };
        let pipeline = Pipeline::start(&self.base, config, &self.probes, &self.stats)?;
        watch.scanned(rescan_every);
        self.pipeline = Some(pipeline);
        if config.pull.is_none() {
            self.pull_lock = None;
        }
        Ok(())
    }

    fn ready(&self) -> String {
        let orders = self.pipeline.as_ref().map_or(0, |p| p.book.active().count());
        info!(target: LOG, base = %self.base.root().display(), orders, "spoolmon running");
        format!("{orders} orders active")
    }

    fn serve(&mut self, config: &Config, signals: &Signals, notifier: &mut Notifier) -> Served {
        if let (Some(pipeline), Some(watch)) = (&mut self.pipeline, &mut self.watch) {
            pipeline.watch_orders(&self.base, watch, config, signals, notifier);
        }
        Served::Running
    }

    fn stop(&mut self, notifier: &mut Notifier) {
        if let Some(pipeline) = self.pipeline.take() {
            pipeline.stop(notifier);
        }
    }

    fn reread(&mut self, running: &Config) -> Reread<Config> {
        let Some(path) = self.config_file else {
            info!(target: LOG, "SIGHUP: no config file; rescanning orders/");
            return Reread::Keep;
        };
        match Config::load(path).map(|new| keep_restart_only_keys(running, new)) {
            Ok(new) if new == *running => {
                info!(target: LOG, config = %path.display(), "SIGHUP: configuration unchanged; rescanning orders/");
                self.stats.config.succeeded();
                Reread::Keep
            }
            Ok(new) => Reread::New(new),
            Err(e) => {
                warn!(target: LOG, "SIGHUP: {e}; keeping the running configuration (rescanning orders/)");
                self.stats
                    .config
                    .set(format!("reload refused, the running configuration is kept: {e}"));
                Reread::Keep
            }
        }
    }

    fn keep(&mut self) {
        if let Some(watch) = &mut self.watch {
            watch.rescan_soon();
        }
    }

    fn prepare(&mut self, new: &Config) -> bool {
        if new.pull.is_none() || self.pull_lock.is_some() {
            return true;
        }
        match DaemonLock::acquire(&self.base, PULL_LOCK) {
            Ok(lock) => {
                self.pull_lock = Some(lock);
                true
            }
            Err(e) => {
                warn!(
                    target: LOG,
                    "SIGHUP: the new config pulls HAProxy statistics, but {e}; keeping the running configuration"
                );
                self.stats.config.set(format!(
                    "reload refused, the running configuration is kept: the new config pulls HAProxy statistics, but {e}"
                ));
                false
            }
        }
    }

    fn stop_timeout(&self, config: &Config) -> Option<u64> {
        Some(config.stop_timeout)
    }

    fn report(&self, event: Event<'_>) {
        match event {
            Event::Restarting => info!(target: LOG, "SIGHUP: configuration changed; restarting the pipeline"),
            Event::Reloaded => {
                info!(target: LOG, "configuration reloaded");
                self.stats.config.succeeded();
            }
            Event::CannotStart(e) => {
                warn!(
                    target: LOG,
                    "SIGHUP: the new configuration cannot start ({e:#}); going back to the running one"
                );
                self.stats.config.set(format!(
                    "reload refused, the running configuration is kept: the new configuration cannot start ({e:#})"
                ));
            }
            Event::StoppedDuringReload => info!(target: LOG, "stopped (a stop came during the reload)"),
            Event::Stopping => info!(target: LOG, "stopping: finishing the snapshots in hand"),
            Event::Stopped => info!(target: LOG, "stopped"),
        }
    }
}

/// The parts of `spoolmon run` that one configuration drives: order book, scheduler, processing,
/// sinks, pull. Rebuilt from scratch on a reload; everything they share lives on disk.
struct Pipeline {
    stop: Arc<AtomicBool>,
    book: OrderBook,
    commands: Sender<Lifecycle>,
    orders_tx: Sender<Vec<Arc<Order>>>,
    processing: Option<JoinHandle<()>>,
    scheduling: Option<JoinHandle<()>>,
    pulling: Option<JoinHandle<()>>,
    /// The `receive` thread, when the config has a `receive:` section.
    receiving: Option<JoinHandle<()>>,
    /// The `api` thread, when the config has an `api:` section.
    serving: Option<JoinHandle<()>>,
    sinks: RunningSinks,
    self_metrics: SelfMetrics,
    /// When the heartbeat was last written and the archive last purged.
    last_heartbeat: Option<Instant>,
    last_purge: Option<Instant>,
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
        let active: HashSet<String> = book.active().map(|o| o.id.to_string()).collect();
        for id in crate::output::reconcile::orphaned(base, &active) {
            let _ = commands.send(Lifecycle::Deactivate { id, expired_file: None });
        }
        let sinks = crate::sink::running::start(base, &config.sinks, &config.node_name(), &stop)?;
        let self_metrics = SelfMetrics::for_daemon(
            base,
            &config.self_metrics,
            config.pull.is_some(),
            &sinks,
            stats.scheduler.clone(),
            stats.process.clone(),
            stats.pull.clone(),
        )
        .started(stats.started)
        .with_config_error(stats.config.clone());
        let self_metrics = match config.receive {
            Some(_) => self_metrics.with_receive(stats.receive.clone()),
            None => self_metrics,
        };
        let self_metrics = match config.api {
            Some(_) => self_metrics.with_api(stats.api.clone()),
            None => self_metrics,
        };
        let mut pipeline = Pipeline {
            stop,
            book,
            commands,
            orders_tx,
            processing: None,
            scheduling: None,
            pulling: None,
            receiving: None,
            serving: None,
            sinks,
            self_metrics,
            last_heartbeat: None,
            last_purge: None,
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
        orders_rx: Receiver<Vec<Arc<Order>>>,
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
        .with_limits(config.result_limits())
        .with_child_timeout(config.child_timeout());
        let processor = match config.api {
            Some(_) => processor.with_rtt_histograms(stats.rtt.clone()),
            None => processor,
        };
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
            guard: DiskGuard::new(config.queue_size, config.min_free_space_mb),
            stats: stats.scheduler.clone(),
            published_tx: Some(wake_tx),
        };
        let stop = self.stop.clone();
        self.scheduling = Some(
            std::thread::Builder::new()
                .name("scheduler".into())
                .spawn(move || scheduler.run(orders_rx, stop))?,
        );
        if let Some(options) = &config.receive {
            self.receiving = Some(crate::receive::start(
                base,
                options,
                stats.receive.clone(),
                self.stop.clone(),
                config.result_limits().max_results,
            )?);
        }
        if let Some(options) = &config.api {
            let server = crate::api::start(
                base,
                config.order_options(),
                crate::api::Readers {
                    status: super::status::reader(base, config),
                    stats: stats.api.clone(),
                    rtt: Some(stats.rtt.clone()),
                    component: "run",
                    redis: config.series_redis(),
                },
                options,
                self.stop.clone(),
            )?;
            self.serving = Some(server.thread);
        }
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

    /// The order-watching loop of the main thread, until a stop or a reload is pending: also
    /// writes the heartbeat and pings the service manager's watchdog, so both prove this loop
    /// is alive.
    fn watch_orders(
        &mut self,
        base: &BaseDir,
        watch: &mut OrderWatch,
        config: &Config,
        signals: &Signals,
        notifier: &mut Notifier,
    ) {
        while !signals.terminating() && !signals.hup.load(Ordering::SeqCst) {
            notifier.watchdog_tick();
            if self
                .last_heartbeat
                .is_none_or(|t| t.elapsed() >= state::HEARTBEAT_EVERY)
            {
                state::write_heartbeat(base);
                self.last_heartbeat = Some(Instant::now());
            }
            self.self_metrics.tick(Some(&self.book));
            let events = watch.turn(&mut self.book);
            if !events.is_empty() {
                send_lifecycle(&self.commands, events);
                send_orders(&self.orders_tx, &self.book);
            }
            if let Some(retention) = config.archive_retention {
                if self.last_purge.is_none_or(|t| t.elapsed() >= PURGE_EVERY) {
                    self.last_purge = Some(Instant::now());
                    let _ = self
                        .commands
                        .send(Lifecycle::PurgeArchive(Duration::from_secs(retention)));
                }
            }
        }
    }

    /// Stops starting work, lets every thread finish what it has in hand, and waits for them,
    /// pinging the service manager's watchdog meanwhile (a drain may take a processing round).
    fn stop(self, notifier: &mut Notifier) {
        self.stop.store(true, Ordering::SeqCst);
        drop(self.orders_tx);
        for thread in [self.scheduling, self.pulling, self.receiving, self.serving]
            .into_iter()
            .flatten()
        {
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
            target: LOG,
            keys = kept.join(", "),
            "SIGHUP: these keys change only at restart; their running values stay"
        );
    }
    new
}

/// Processing's lifecycle command for each order event (a changed order needs none: the
/// scheduler gets the new order list).
fn send_lifecycle(commands: &Sender<Lifecycle>, events: Vec<OrderEvent>) {
    for event in events {
        let command = match event {
            OrderEvent::Added(order) => Lifecycle::Activate(order.id.clone()),
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

fn send_orders(orders_tx: &Sender<Vec<Arc<Order>>>, book: &OrderBook) {
    let _ = orders_tx.send(book.active().cloned().collect());
}

/// The probes for this configuration: the native ICMP engine, or fping when it cannot run.
pub fn build_probes(config: &Config) -> Result<ProbeSet> {
    let fping = || -> Arc<dyn Probe> {
        info!(target: LOG, fping = %config.fping_path.display(), "ICMP orders are measured with the fping binary");
        Arc::new(FpingProbe::new(config.fping_path.clone()))
    };
    let icmp: Arc<dyn Probe> = match config.engine {
        Engine::Fping => fping(),
        Engine::Native => Arc::new(IcmpEngine::open(&config.icmp).context("engine: native, but no ICMP socket")?),
        Engine::Auto => match IcmpEngine::open(&config.icmp) {
            Ok(engine) => Arc::new(engine),
            Err(e) => {
                warn!(
                    target: LOG,
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
