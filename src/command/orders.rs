//! `spoolmon orders`: every file below `orders/` with its state (active, failing, invalid,
//! unresolved) and the reason, from a fresh scan with processing's failures ([`crate::output::failures::listing`]), as a
//! table or JSON.
//! Reads only; runs beside the daemon.

use super::{load_config, BaseArgs};
use crate::spool::BaseDir;
use anyhow::Result;
use std::process::ExitCode;

pub fn run(base: BaseArgs, json: bool) -> Result<ExitCode> {
    let config = load_config(base.config.as_deref())?;
    let base_dir = BaseDir::new(&base.base_dir);
    anyhow::ensure!(
        base_dir.orders().is_dir(),
        "{} is not a directory (is --base-dir right?)",
        base_dir.orders().display()
    );
    let listing = crate::output::failures::listing(&base_dir, &config.order_options());
    if json {
        super::print_stdout(serde_json::to_string_pretty(&listing)? + "\n")?;
    } else {
        super::print_stdout(crate::orders::format_table(&listing))?;
    }
    Ok(ExitCode::SUCCESS)
}
