//! `spoolmon pull`: the HAProxy pull collector alone (haproxystats-pull's job), in the
//! foreground. SIGTERM/SIGINT stop it; SIGHUP re-reads the config file (an invalid one is
//! logged and the old settings kept).

use crate::collect::haproxy::{run_pull, PullOptions, PullStats};
use crate::config::Config;
use crate::spool::lock::DaemonLock;
use crate::spool::{queue, BaseDir};
use anyhow::{Context, Result};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use tracing::{info, warn};

/// Signal flags: `interrupt` is set by every signal that must end the current loop (SIGTERM,
/// SIGINT, SIGHUP), `terminate` only by the ones that stop the process.
pub struct PullSignals {
    pub interrupt: Arc<AtomicBool>,
    pub terminate: Arc<AtomicBool>,
}

/// Lock file that keeps two pullers off one base directory (`spoolmon run` with a `pull:`
/// section takes it too).
pub const PULL_LOCK: &str = "pull.lock";

/// Runs the collector on `base` until terminated, reloading `config_file` on SIGHUP.
pub fn run(base: BaseDir, config_file: Option<&Path>, options: PullOptions, signals: PullSignals) -> Result<()> {
    base.create_all()
        .with_context(|| format!("cannot create base directory {}", base.root().display()))?;
    let _lock = DaemonLock::acquire(&base.state().join(PULL_LOCK))?;
    let owner = queue::TmpOwner {
        probes: false,
        pull: true,
        processing: false,
    };
    let orphans = queue::clean_tmp(&base, owner).context("cannot clean incoming.tmp/")?;
    if orphans > 0 {
        info!(orphans, "removed unpublished snapshots left by a previous pull");
    }
    let stats = Arc::new(PullStats::default());
    let self_metrics = crate::selfmetrics::SelfMetrics::for_pull(&base, config_file, stats.clone())
        .spawn(signals.terminate.clone())?;
    let mut options = options;
    loop {
        run_pull(&base, &options, signals.interrupt.clone(), stats.clone());
        if signals.terminate.load(Ordering::Relaxed) {
            let _ = self_metrics.join();
            info!("stopped");
            return Ok(());
        }
        signals.interrupt.store(false, Ordering::Relaxed);
        options = reloaded(config_file, options);
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
