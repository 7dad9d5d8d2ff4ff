//! `spoolmon process`: processing alone (haproxystats-process's job, and ping snapshots from
//! another machine's probes), in the foreground: every snapshot in `incoming/` is applied and
//! handed to the configured sinks. Takes the base directory's lock, so it never runs beside
//! `spoolmon run` on the same base. SIGTERM/SIGINT finish the round in hand and stop; SIGHUP
//! reloads the configuration.

use crate::config::Config;
use crate::process::{self, LoopTiming, ProcessStats, Processor};
use crate::selfmetrics::SelfMetrics;
use crate::service::claim::claim_base;
use crate::service::notify::Notifier;
use crate::service::privilege::Account;
use crate::service::signals::Signals;
use crate::spool::lock::LOCK_FILE;
use crate::spool::{queue, state, BaseDir};
use anyhow::Result;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tracing::{info, warn};

/// Processes `base` until SIGTERM/SIGINT; SIGHUP reads `config_file` again (an invalid one is
/// logged and the running configuration kept) and restarts processing and sinks with it. With
/// `user`, switches to that account once the lock is held.
pub fn run(
    base: BaseDir,
    config_file: Option<&Path>,
    config: Config,
    user: Option<(&Account, &[&Path])>,
    signals: &Signals,
) -> Result<()> {
    let notifier = Notifier::from_env();
    let owner = queue::TmpOwner {
        probes: false,
        pull: false,
        processing: true,
    };
    let locks = claim_base(&base, &[LOCK_FILE], owner, user.map(|(account, _)| account))?;
    if let Some((account, files)) = user {
        let owned: Vec<&Path> = files
            .iter()
            .copied()
            .chain(locks.iter().map(|l| l.path.as_path()))
            .collect();
        account.switch_to(&base, &owned)?;
    }
    signals.bound_the_drain(config.stop_timeout)?;
    let stats = Arc::new(ProcessStats::default());
    let started = crate::selfmetrics::unix_now();
    let mut config = config;
    let mut last_good = config.clone();
    loop {
        // Cleared before the flags are read: a signal arriving from here on ends the next run.
        signals.wake.store(false, Ordering::SeqCst);
        if signals.terminating() {
            notifier.stopping();
            info!("stopped");
            return Ok(());
        }
        if signals.hup.swap(false, Ordering::SeqCst) {
            notifier.reloading();
            config = reloaded(config_file, config);
        }
        signals.stop_timeout_s.store(config.stop_timeout, Ordering::Relaxed);
        match process_until_signal(&base, &config, (&stats, started), signals, &notifier) {
            Ok(()) => last_good = config.clone(),
            Err(e) if config != last_good => {
                warn!("SIGHUP: the new configuration cannot start ({e:#}); going back to the running one");
                config = last_good.clone();
            }
            Err(e) => return Err(e),
        }
    }
}

/// One run of processing, sinks and self-metrics with `config`, until any signal. The counters
/// in `stats` and their start time outlive it.
fn process_until_signal(
    base: &BaseDir,
    config: &Config,
    (stats, started): (&Arc<ProcessStats>, i64),
    signals: &Signals,
    notifier: &Notifier,
) -> Result<()> {
    let sinks = crate::sink::running::start(base, &config.sinks, &signals.wake)?;
    let processor = match Processor::new(base.clone(), config.workers, sinks.sinks.clone(), false, stats.clone()) {
        Ok(processor) => processor
            .with_haproxy(config.process.clone())
            .with_limits(config.result_limits()),
        Err(e) => {
            // Nothing of a failed start may keep running (the sinks' threads own outboxes).
            signals.wake.store(true, Ordering::SeqCst);
            sinks.join();
            return Err(e.into());
        }
    };
    let self_metrics = SelfMetrics::for_process(base, config, &sinks, stats.clone())
        .started(started)
        .spawn(signals.wake.clone())?;
    let timing = LoopTiming {
        rescan: Duration::from_secs(config.rescan_interval),
        flush_interval: Duration::from_secs(config.rrd_flush_interval),
    };
    info!(base = %base.root().display(), sinks = sinks.sinks.len(), "spoolmon process running");
    notifier.ready(&format!("processing, {} sinks", sinks.sinks.len()));
    // No orders here: nothing sends lifecycle commands or in-process wake-ups.
    let (_commands_tx, commands) = crossbeam_channel::unbounded();
    let (_wake_tx, wake) = crossbeam_channel::unbounded();
    let mut watchdog = Notifier::from_env();
    let mut last_heartbeat: Option<Instant> = None;
    let mut liveness = || {
        watchdog.watchdog_tick();
        if last_heartbeat.is_none_or(|t| t.elapsed() >= state::HEARTBEAT_EVERY) {
            state::write_heartbeat(base);
            last_heartbeat = Some(Instant::now());
        }
    };
    process::run_loop(processor, commands, wake, signals.wake.clone(), timing, &mut liveness);
    let _ = self_metrics.join();
    sinks.join();
    Ok(())
}

/// The config file as it is now, or `running` if there is none or it cannot be used.
fn reloaded(config_file: Option<&Path>, running: Config) -> Config {
    let Some(path) = config_file else {
        info!("SIGHUP: no config file to reload; restarting processing");
        return running;
    };
    match Config::load(path) {
        Ok(config) => {
            info!(config = %path.display(), "SIGHUP: configuration reloaded");
            config
        }
        Err(e) => {
            warn!("SIGHUP: {e}; keeping the running configuration");
            running
        }
    }
}
