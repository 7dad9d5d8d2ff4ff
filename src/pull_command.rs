//! `spoolmon pull`: the HAProxy pull collector alone (haproxystats-pull's job), in the
//! foreground. SIGTERM/SIGINT stop it; SIGHUP re-reads the config file (an invalid one is
//! logged and the old settings kept).

use crate::collect::haproxy::{run_pull, PullOptions, PullStats};
use crate::config::Config;
use crate::selfmetrics::SelfMetrics;
use crate::service::claim::claim_base;
use crate::service::notify::Notifier;
use crate::service::privilege::Account;
use crate::service::signals::Signals;
use crate::spool::{queue, BaseDir};
use anyhow::{Context, Result};
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use tracing::{info, warn};

/// Lock file that keeps two pullers off one base directory (`spoolmon run` with a `pull:`
/// section takes it too).
pub use crate::spool::lock::PULL_LOCK;

/// Runs the collector on `base` until terminated, reloading `config_file` on SIGHUP. With
/// `user`, switches to that account once the lock is held.
pub fn run(
    base: BaseDir,
    config_file: Option<&Path>,
    config: Config,
    user: Option<(&Account, &[&Path])>,
    signals: &Signals,
) -> Result<()> {
    let mut options = config
        .pull
        .clone()
        .context("the config has no pull: section (socket-dir or servers to pull from)")?;
    let notifier = Notifier::from_env();
    let owner = queue::TmpOwner {
        probes: false,
        pull: true,
        processing: false,
    };
    let locks = claim_base(&base, &[PULL_LOCK], owner, user.map(|(account, _)| account))?;
    if let Some((account, files)) = user {
        let owned: Vec<&Path> = files
            .iter()
            .copied()
            .chain(locks.iter().map(|l| l.path.as_path()))
            .collect();
        account.switch_to(&base, &owned)?;
    }
    signals.bound_the_drain(config.stop_timeout)?;
    let stats = Arc::new(PullStats::default());
    let self_metrics =
        SelfMetrics::for_pull(&base, &config.self_metrics, stats.clone()).spawn(signals.terminate.clone())?;
    notifier.ready("pulling");
    let mut watchdog = Notifier::from_env();
    loop {
        // Cleared before the flags are read: a signal arriving from here on ends the next wait.
        signals.wake.store(false, Ordering::SeqCst);
        if signals.terminating() {
            notifier.stopping();
            let _ = self_metrics.join();
            info!("stopped");
            return Ok(());
        }
        if signals.hup.swap(false, Ordering::SeqCst) {
            notifier.reloading();
            options = reloaded(config_file, options);
            notifier.ready("pulling");
        }
        run_pull(&base, &options, signals.wake.clone(), stats.clone(), &mut || {
            watchdog.watchdog_tick()
        });
    }
}

/// The `pull:` settings of the config file as it is now, or `current` if it cannot be used.
fn reloaded(config_file: Option<&Path>, current: PullOptions) -> PullOptions {
    let Some(path) = config_file else {
        info!("SIGHUP: no config file to reload");
        return current;
    };
    match Config::load(path) {
        Ok(Config { pull: Some(pull), .. }) => {
            info!(config = %path.display(), "SIGHUP: configuration reloaded");
            pull
        }
        Ok(_) => {
            warn!(config = %path.display(), "SIGHUP: the config has no pull: section; keeping the old settings");
            current
        }
        Err(e) => {
            warn!("SIGHUP: {e}; keeping the old settings");
            current
        }
    }
}
