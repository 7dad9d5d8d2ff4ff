//! `spoolmon process`: processing alone (haproxystats-process's job, and ping snapshots from
//! another machine's probes), in the foreground: every snapshot in `incoming/` is applied and
//! handed to the configured sinks. Takes the base directory's lock, so it never runs beside
//! `spoolmon run` on the same base. SIGTERM/SIGINT finish the round in hand and stop.

use crate::config::Config;
use crate::process::{self, LoopTiming, ProcessStats, Processor};
use crate::spool::lock::DaemonLock;
use crate::spool::{queue, BaseDir};
use anyhow::{Context, Result};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;
use tracing::info;

/// Processes `base` until `shutdown` is set.
pub fn run(base: BaseDir, config: Config, shutdown: Arc<AtomicBool>) -> Result<()> {
    base.create_all()
        .with_context(|| format!("cannot create base directory {}", base.root().display()))?;
    let _lock = DaemonLock::acquire(&base.state().join("lock"))?;
    let owner = queue::TmpOwner {
        probes: false,
        pull: false,
        processing: true,
    };
    queue::clean_tmp(&base, owner).context("cannot clean incoming.tmp/")?;
    let sinks = crate::sink::running::start(&base, &config.sinks, &shutdown)?;
    let stats = Arc::new(ProcessStats::default());
    let self_metrics =
        crate::selfmetrics::SelfMetrics::for_process(&base, &config, &sinks, stats.clone()).spawn(shutdown.clone())?;
    let processor = Processor::new(base.clone(), config.workers, sinks.sinks.clone(), false, stats)?
        .with_haproxy(config.process.clone());
    let timing = LoopTiming {
        rescan: Duration::from_secs(config.rescan_interval),
        flush_interval: Duration::from_secs(config.rrd_flush_interval),
    };
    info!(base = %base.root().display(), sinks = sinks.sinks.len(), "spoolmon process running");
    // No orders here: nothing sends lifecycle commands or in-process wake-ups.
    let (_commands_tx, commands) = crossbeam_channel::unbounded();
    let (_wake_tx, wake) = crossbeam_channel::unbounded();
    process::run_loop(processor, commands, wake, shutdown, timing);
    let _ = self_metrics.join();
    sinks.join();
    info!("stopped");
    Ok(())
}
