//! `spoolmon process`: processing alone (haproxystats-process's job, and ping snapshots from
//! another machine's probes), in the foreground, under the [`crate::service::supervisor`]:
//! every snapshot in `incoming/` is applied and handed to the configured sinks. Takes the base
//! directory's lock, so it never runs beside `spoolmon run` on the same base.
//!
//! Processing, its sinks and self-metrics stop on any signal (they share the signals' wake
//! flag): SIGTERM/SIGINT finish the round in hand and stop; SIGHUP finishes it, reads the config
//! file again (an invalid one is logged and the running configuration kept) and starts them
//! again, with the new configuration or, if it cannot start, the running one.
//!
//! With a `receive:` section it also listens for snapshots shipped from other nodes
//! (`crate::receive`), which processing then applies under `output/@<node>/`.
//!
//! Log lines keep the target `spoolmon::process_command` of the module this replaced.

use super::{load_config, BaseArgs, ServiceArgs, Started};
use crate::config::Config;
use crate::process::{self, LoopTiming, ProcessStats, Processor};
use crate::selfmetrics::SelfMetrics;
use crate::service::notify::Notifier;
use crate::service::signals::Signals;
use crate::service::supervisor::{self, Claim, Event, Reread, Served, Service};
use crate::shared::last_error::LastError;
use crate::sink::running::RunningSinks;
use crate::spool::lock::{DaemonLock, LOCK_FILE};
use crate::spool::{queue, state, BaseDir};
use anyhow::Result;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use tracing::{info, warn};

/// The log target of every line of `spoolmon process`.
const LOG: &str = "spoolmon::process_command";

/// `spoolmon process`: processes `--base-dir` until SIGTERM/SIGINT.
pub fn run(base: BaseArgs, service: ServiceArgs, log_file: Option<PathBuf>) -> Result<ExitCode> {
    let config = load_config(base.config.as_deref())?;
    let started = Started::new(&base, &service, log_file)?;
    process(BaseDir::new(base.base_dir), config, started)?;
    Ok(ExitCode::SUCCESS)
}

/// Processes `base` with `config` until SIGTERM/SIGINT (see the module documentation).
pub fn process(base: BaseDir, config: Config, started: Started) -> Result<()> {
    let claim = Claim {
        locks: &[LOCK_FILE],
        owner: queue::TmpOwner {
            probes: false,
            pull: false,
            processing: true,
        },
        user: started.user.as_ref(),
        user_files: &started.user_files,
        stop_timeout: config.stop_timeout,
    };
    let signals = &started.signals;
    supervisor::launch(&base, claim, signals, |locks| {
        let service = Processing {
            base: base.clone(),
            config_file: started.config_file.as_deref(),
            signals: signals.clone(),
            _locks: locks,
            stats: Arc::default(),
            receive_stats: Arc::default(),
            config_error: Arc::default(),
            started: crate::shared::clock::unix_now(),
            running: None,
        };
        Ok((service, config.clone()))
    })
}

/// `spoolmon process` as a [`Service`].
struct Processing<'a> {
    base: BaseDir,
    config_file: Option<&'a Path>,
    signals: Signals,
    _locks: Vec<DaemonLock>,
    /// The counters and their start time outlive a reload.
    stats: Arc<ProcessStats>,
    receive_stats: Arc<crate::receive::server::ReceiveStats>,
    /// Why the last SIGHUP's config was refused, until a reload is taken (status's `config`).
    config_error: Arc<LastError>,
    started: i64,
    running: Option<Run>,
}

/// One run of processing, sinks and self-metrics with one configuration, until any signal.
struct Run {
    /// The `receive` thread, when the config has a `receive:` section.
    receiving: Option<JoinHandle<()>>,
    sinks: RunningSinks,
    processor: Processor,
    self_metrics: JoinHandle<()>,
    timing: LoopTiming,
}

impl Processing<'_> {
    /// Stops the sinks of a start that failed: nothing of it may keep running (their threads own
    /// the outboxes the fallback start opens again). They stop on `wake`, which is then set back
    /// to what the signals say, so the fallback is not stopped by it.
    fn abandon(&self, sinks: RunningSinks) {
        self.signals.wake.store(true, Ordering::SeqCst);
        sinks.join();
        self.signals.rearm_wake();
    }

    /// Stops the receiver of a start that failed (it stops on `wake`, as the sinks).
    fn abandon_receiver(&self, receiving: Option<JoinHandle<()>>) {
        if let Some(receiving) = receiving {
            self.signals.wake.store(true, Ordering::SeqCst);
            let _ = receiving.join();
            self.signals.rearm_wake();
        }
    }
}

impl Service for Processing<'_> {
    type Settings = Config;

    fn start(&mut self, config: &Config) -> Result<()> {
        let wake = &self.signals.wake;
        // The receiver first: a port that cannot be bound stops the start before anything runs.
        let receiving = match &config.receive {
            Some(options) => Some(crate::receive::start(
                &self.base,
                options,
                self.receive_stats.clone(),
                wake.clone(),
                config.result_limits().max_results,
            )?),
            None => None,
        };
        let sinks = match crate::sink::running::start(&self.base, &config.sinks, &config.node_name(), wake) {
            Ok(sinks) => sinks,
            Err(e) => {
                self.abandon_receiver(receiving);
                return Err(e);
            }
        };
        let processor = match Processor::new(
            self.base.clone(),
            config.workers,
            sinks.sinks.clone(),
            false,
            self.stats.clone(),
        ) {
            Ok(processor) => processor
                .with_haproxy(config.process.clone())
                .with_limits(config.result_limits())
                .with_child_timeout(config.child_timeout()),
            Err(e) => {
                self.abandon(sinks);
                self.abandon_receiver(receiving);
                return Err(e.into());
            }
        };
        let mut self_metrics = SelfMetrics::for_process(&self.base, &config.self_metrics, &sinks, self.stats.clone());
        if config.receive.is_some() {
            self_metrics = self_metrics.with_receive(self.receive_stats.clone());
        }
        let self_metrics = match self_metrics
            .started(self.started)
            .with_config_error(self.config_error.clone())
            .spawn(wake.clone())
        {
            Ok(thread) => thread,
            Err(e) => {
                self.abandon(sinks);
                self.abandon_receiver(receiving);
                return Err(anyhow::Error::new(e).context("cannot start the self-metrics thread"));
            }
        };
        let timing = LoopTiming {
            rescan: Duration::from_secs(config.rescan_interval),
            flush_interval: Duration::from_secs(config.rrd_flush_interval),
        };
        self.running = Some(Run {
            receiving,
            sinks,
            processor,
            self_metrics,
            timing,
        });
        Ok(())
    }

    fn ready(&self) -> String {
        let sinks = self.running.as_ref().map_or(0, |run| run.sinks.sinks.len());
        info!(target: LOG, base = %self.base.root().display(), sinks, "spoolmon process running");
        format!("processing, {sinks} sinks")
    }

    fn serve(&mut self, _: &Config, signals: &Signals, notifier: &mut Notifier) -> Served {
        let Some(run) = self.running.take() else {
            return Served::Ended;
        };
        // No orders here: nothing sends lifecycle commands or in-process wake-ups.
        let (_commands_tx, commands) = crossbeam_channel::unbounded();
        let (_wake_tx, wake) = crossbeam_channel::unbounded();
        let base = &self.base;
        let mut last_heartbeat: Option<Instant> = None;
        let mut liveness = || {
            notifier.watchdog_tick();
            if last_heartbeat.is_none_or(|t| t.elapsed() >= state::HEARTBEAT_EVERY) {
                state::write_heartbeat(base);
                last_heartbeat = Some(Instant::now());
            }
        };
        process::run_loop(
            run.processor,
            commands,
            wake,
            signals.wake.clone(),
            run.timing,
            &mut liveness,
        );
        let _ = run.self_metrics.join();
        if let Some(receiving) = run.receiving {
            let _ = receiving.join();
        }
        run.sinks.join();
        Served::Ended
    }

    fn stop(&mut self, _: &mut Notifier) {
        // A run that was started but not served yet: stopped as a signal would.
        if let Some(run) = self.running.take() {
            self.signals.wake.store(true, Ordering::SeqCst);
            let _ = run.self_metrics.join();
            if let Some(receiving) = run.receiving {
                let _ = receiving.join();
            }
            run.sinks.join();
        }
    }

    fn reread(&mut self, _: &Config) -> Reread<Config> {
        let Some(path) = self.config_file else {
            info!(target: LOG, "SIGHUP: no config file to reload; restarting processing");
            return Reread::Keep;
        };
        match Config::load(path) {
            Ok(config) => {
                info!(target: LOG, config = %path.display(), "SIGHUP: configuration reloaded");
                // Set again below if it cannot start.
                self.config_error.succeeded();
                Reread::New(config)
            }
            Err(e) => {
                warn!(target: LOG, "SIGHUP: {e}; keeping the running configuration");
                self.config_error
                    .set(format!("reload refused, the running configuration is kept: {e}"));
                Reread::Keep
            }
        }
    }

    fn stop_timeout(&self, config: &Config) -> Option<u64> {
        Some(config.stop_timeout)
    }

    fn report(&self, event: Event<'_>) {
        match event {
            // Processing has already stopped with the signal; the reread said what follows.
            Event::Restarting | Event::Reloaded | Event::Stopping => {}
            Event::CannotStart(e) => {
                warn!(
                    target: LOG,
                    "SIGHUP: the new configuration cannot start ({e:#}); going back to the running one"
                );
                self.config_error.set(format!(
                    "reload refused, the running configuration is kept: the new configuration cannot start ({e:#})"
                ));
            }
            Event::StoppedDuringReload | Event::Stopped => info!(target: LOG, "stopped"),
        }
    }
}
