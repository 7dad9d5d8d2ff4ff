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

/// The status report of `base` as JSON, read afresh at each call (the API's `status`).
pub fn reader(base: &BaseDir, config: &crate::config::Config) -> crate::api::StatusReader {
    let (base, config) = (base.clone(), config.clone());
    std::sync::Arc::new(move || {
        let report = crate::status::read(&base, &config, std::time::SystemTime::now()).map_err(|e| e.to_string())?;
        serde_json::to_value(&report).map_err(|e| format!("cannot encode the status report: {e}"))
    })
}
