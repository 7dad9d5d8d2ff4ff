//! `spoolmon status`: the summary of a base directory (daemon, queues, orders, sinks,
//! self-metrics, last errors) that [`crate::status`] reads, as text or one JSON object.

use super::{load_config, BaseArgs};
use crate::spool::BaseDir;
use anyhow::Result;
use std::process::ExitCode;

pub fn run(base: BaseArgs, json: bool) -> Result<ExitCode> {
    let config = load_config(base.config.as_deref())?;
    let report = crate::status::read(&BaseDir::new(&base.base_dir), &config, std::time::SystemTime::now())?;
    if json {
        super::print_stdout(serde_json::to_string_pretty(&report)? + "\n")?;
    } else {
        super::print_stdout(crate::status::format_summary(&report))?;
    }
    Ok(ExitCode::SUCCESS)
}
