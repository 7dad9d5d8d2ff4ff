//! `spoolmon outbox`: each sink's outbox backlog (undelivered records, lines, bytes, oldest age,
//! drops) as [`crate::sink::backlog`] reads it, as a table or JSON. Reads only; runs beside the
//! daemon.

use super::BaseArgs;
use crate::spool::BaseDir;
use anyhow::{Context, Result};
use std::process::ExitCode;

pub fn run(base: BaseArgs, json: bool) -> Result<ExitCode> {
    let base_dir = BaseDir::new(&base.base_dir);
    anyhow::ensure!(
        base_dir.root().is_dir(),
        "{} is not a directory (is --base-dir right?)",
        base_dir.root().display()
    );
    let backlogs = crate::sink::backlog::read_all(&base_dir.outbox(), std::time::SystemTime::now())
        .with_context(|| format!("cannot read {}", base_dir.outbox().display()))?;
    if json {
        super::print_stdout(serde_json::to_string_pretty(&backlogs)? + "\n")?;
    } else {
        super::print_stdout(crate::sink::backlog::format_table(&backlogs))?;
    }
    Ok(ExitCode::SUCCESS)
}
