//! `spoolmon orders`: every file below `orders/` with its state (active, failing, invalid,
//! unresolved) and the reason, from a fresh scan with processing's failures ([`crate::output::failures::listing`]), as a
//! table or JSON; with `--wide` each order's last result and expiry too
//! ([`crate::output::wide::listing`]). Reads only; runs beside the daemon.

use super::{load_config, BaseArgs};
use anyhow::Result;
use std::process::ExitCode;

pub fn run(base: BaseArgs, json: bool, wide: bool) -> Result<ExitCode> {
    let config = load_config(base.config.as_deref())?;
    let base_dir = super::orders_base(&base)?;
    if wide {
        let listing =
            crate::output::wide::listing(&base_dir, &config.order_options(), crate::shared::clock::unix_now());
        if json {
            super::print_stdout(serde_json::to_string_pretty(&listing)? + "\n")?;
        } else {
            super::print_stdout(crate::output::wide::format_table(&listing))?;
        }
        return Ok(ExitCode::SUCCESS);
    }
    let listing = crate::output::failures::listing(&base_dir, &config.order_options());
    if json {
        super::print_stdout(serde_json::to_string_pretty(&listing)? + "\n")?;
    } else {
        super::print_stdout(crate::orders::format_table(&listing))?;
    }
    Ok(ExitCode::SUCCESS)
}
