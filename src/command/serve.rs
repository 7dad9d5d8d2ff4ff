//! `spoolmon serve --base-dir DIR [--config FILE] [--listen ADDR]...`: the API ([`crate::api`])
//! alone, beside a daemon or on a base directory nobody measures into any more (an archive
//! kept for looking at). Serves the config's `api:` section, or its defaults (127.0.0.1:19998)
//! without one; `--listen` replaces the section's addresses. Runs until SIGTERM or SIGINT;
//! requests in flight get `api.header-timeout` to finish.

use super::{load_config, BaseArgs};
use crate::service::signals::Signals;
use crate::spool::BaseDir;
use anyhow::{Context, Result};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

pub fn run(base: BaseArgs, listen: Vec<String>) -> Result<ExitCode> {
    let config = load_config(base.config.as_deref())?;
    let mut options = config.api.clone().unwrap_or_default();
    if !listen.is_empty() {
        options.listen = listen;
    }
    let base_dir = BaseDir::new(&base.base_dir);
    anyhow::ensure!(
        base_dir.root().is_dir(),
        "{} is not a directory (is --base-dir right?)",
        base_dir.root().display()
    );
    let signals = Signals::install().context("cannot install signal handlers")?;
    let stop = Arc::new(AtomicBool::new(false));
    let server = crate::api::start(
        &base_dir,
        config.order_options(),
        crate::api::Readers {
            status: super::status::reader(&base_dir, &config),
            stats: Arc::default(),
            rtt: None,
            component: "serve",
            redis: config.series_redis(),
        },
        &options,
        stop.clone(),
    )?;
    while !signals.terminating() {
        // A signal is looked for once a second: idle, the server wakes up that rarely.
        std::thread::sleep(std::time::Duration::from_secs(1));
    }
    stop.store(true, Ordering::SeqCst);
    let _ = server.thread.join();
    Ok(ExitCode::SUCCESS)
}
