//! `spoolmon pull`: the HAProxy pull collector alone (haproxystats-pull's job), in the
//! foreground, under the [`crate::service::supervisor`]. Takes `state/pull.lock`
//! ([`PULL_LOCK`]), so two pullers never share a base directory.
//!
//! The pull loop stops on any signal: SIGTERM/SIGINT end it; SIGHUP re-reads the config file
//! and starts the loop again with its `pull:` section (an invalid file, or one without the
//! section, is logged and the old settings kept). Self-metrics run on their own thread for the
//! whole process, with the `self-metrics:` options read at start; `stop-timeout` too is the one
//! read at start.
//!
//! Log lines keep the target `spoolmon::pull_command` of the module this replaced.

use super::{load_config, BaseArgs, ServiceArgs, Started};
use crate::collect::haproxy::{run_pull, PullOptions, PullStats};
use crate::config::Config;
use crate::selfmetrics::{SelfMetrics, SelfMetricsOptions};
use crate::service::notify::Notifier;
use crate::service::signals::Signals;
use crate::service::supervisor::{self, Claim, Event, Reread, Served, Service};
use crate::shared::last_error::LastError;
use crate::spool::lock::{DaemonLock, PULL_LOCK};
use crate::spool::{queue, BaseDir};
use anyhow::{Context, Result};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::thread::JoinHandle;
use tracing::{info, warn};

/// The log target of every line of `spoolmon pull`.
const LOG: &str = "spoolmon::pull_command";

/// `spoolmon pull`: runs the collector on `--base-dir` until SIGTERM/SIGINT.
pub fn run(base: BaseArgs, service: ServiceArgs, log_file: Option<PathBuf>) -> Result<ExitCode> {
    let config = load_config(base.config.as_deref())?;
    let started = Started::new(&base, &service, log_file)?;
    pull(BaseDir::new(base.base_dir), config, started)?;
    Ok(ExitCode::SUCCESS)
}

/// Runs the collector on `base` with `config` until SIGTERM/SIGINT (see the module
/// documentation).
pub fn pull(base: BaseDir, config: Config, started: Started) -> Result<()> {
    let options = config
        .pull
        .clone()
        .context("the config has no pull: section (socket-dir or servers to pull from)")?;
    let claim = Claim {
        locks: &[PULL_LOCK],
        owner: queue::TmpOwner {
            probes: false,
            pull: true,
            processing: false,
        },
        user: started.user.as_ref(),
        user_files: &started.user_files,
        stop_timeout: config.stop_timeout,
    };
    let signals = &started.signals;
    supervisor::launch(&base, claim, signals, |locks| {
        let service = Puller {
            base: base.clone(),
            config_file: started.config_file.as_deref(),
            signals: signals.clone(),
            self_metrics_options: config.self_metrics.clone(),
            _locks: locks,
            stats: Arc::new(PullStats::default()),
            config_error: Arc::default(),
            self_metrics: None,
        };
        Ok((service, options))
    })
}

/// `spoolmon pull` as a [`Service`].
struct Puller<'a> {
    base: BaseDir,
    config_file: Option<&'a Path>,
    signals: Signals,
    /// The `self-metrics:` section read at start.
    self_metrics_options: SelfMetricsOptions,
    _locks: Vec<DaemonLock>,
    stats: Arc<PullStats>,
    /// Why the last SIGHUP's config was refused, until a reload is taken (status's `config`).
    config_error: Arc<LastError>,
    /// Started with the first pull loop (after the account switch) and runs until the stop
    /// signal, across reloads.
    self_metrics: Option<JoinHandle<()>>,
}

impl Service for Puller<'_> {
    type Settings = PullOptions;

    /// Starts self-metrics the first time; [`Service::serve`] runs the pull loop.
    fn start(&mut self, _: &PullOptions) -> Result<()> {
        if self.self_metrics.is_none() {
            let self_metrics = SelfMetrics::for_pull(&self.base, &self.self_metrics_options, self.stats.clone())
                .with_config_error(self.config_error.clone());
            self.self_metrics = Some(self_metrics.spawn(self.signals.terminate.clone())?);
        }
        Ok(())
    }

    fn ready(&self) -> String {
        "pulling".into()
    }

    /// The pull loop, again after a wake-up that left no signal pending.
    fn serve(&mut self, options: &PullOptions, signals: &Signals, notifier: &mut Notifier) -> Served {
        loop {
            run_pull(
                &self.base,
                options,
                signals.wake.clone(),
                self.stats.clone(),
                &mut || notifier.watchdog_tick(),
            );
            // Cleared before the flags are read: a signal arriving from here on ends the next wait.
            signals.wake.store(false, Ordering::SeqCst);
            if signals.terminating() || signals.hup.load(Ordering::SeqCst) {
                return Served::Ended;
            }
        }
    }

    fn stop(&mut self, _: &mut Notifier) {}

    fn reread(&mut self, _: &PullOptions) -> Reread<PullOptions> {
        let Some(path) = self.config_file else {
            info!(target: LOG, "SIGHUP: no config file to reload");
            return Reread::Keep;
        };
        match Config::load(path) {
            Ok(Config { pull: Some(pull), .. }) => {
                info!(target: LOG, config = %path.display(), "SIGHUP: configuration reloaded");
                self.config_error.succeeded();
                Reread::New(pull)
            }
            Ok(_) => {
                warn!(target: LOG, config = %path.display(), "SIGHUP: the config has no pull: section; keeping the old settings");
                self.config_error.set(format!(
                    "reload refused, the running settings are kept: {} has no pull: section",
                    path.display()
                ));
                Reread::Keep
            }
            Err(e) => {
                warn!(target: LOG, "SIGHUP: {e}; keeping the old settings");
                self.config_error
                    .set(format!("reload refused, the running settings are kept: {e}"));
                Reread::Keep
            }
        }
    }

    fn report(&self, event: Event<'_>) {
        match event {
            // The pull loop has already stopped with the signal and cannot fail to start.
            Event::Restarting | Event::Reloaded | Event::CannotStart(_) | Event::Stopping => {}
            Event::StoppedDuringReload | Event::Stopped => info!(target: LOG, "stopped"),
        }
    }

    fn shutdown(&mut self, _: &mut Notifier) {
        if let Some(self_metrics) = self.self_metrics.take() {
            let _ = self_metrics.join();
        }
    }
}
