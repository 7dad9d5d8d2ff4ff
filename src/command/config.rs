//! `spoolmon config`: prints every key with its default (`--print-defaults`, with each sink
//! type's and `pull:`'s defaults as commented-out blocks), the effective configuration, the
//! defaults plus a file (`--print`), as YAML ([`Config::to_yaml`]), or the reference of every key
//! with its type, default and meaning as Markdown (`--reference`, [`crate::config::reference`]).

use super::load_config;
use crate::config::Config;
use anyhow::Result;
use std::path::Path;
use std::process::ExitCode;

pub fn run(config: Option<&Path>, print_defaults: bool, print: bool, reference: bool) -> Result<ExitCode> {
    if reference {
        super::print_stdout(crate::config::reference::markdown())?;
        return Ok(ExitCode::SUCCESS);
    }
    if print_defaults {
        super::print_stdout(Config::defaults_yaml())?;
        return Ok(ExitCode::SUCCESS);
    }
    let effective = load_config(config)?;
    if !print {
        anyhow::bail!("say --print-defaults, --print or --reference");
    }
    super::print_stdout(effective.to_yaml())?;
    Ok(ExitCode::SUCCESS)
}
