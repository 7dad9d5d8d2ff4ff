//! `spoolmon config`: prints every key with its default (`--print-defaults`) or the effective
//! configuration, the defaults plus a file (`--print`), as YAML ([`Config::to_yaml`]).

use super::load_config;
use crate::config::Config;
use anyhow::Result;
use std::path::Path;
use std::process::ExitCode;

pub fn run(config: Option<&Path>, print_defaults: bool, print: bool) -> Result<ExitCode> {
    let effective = if print_defaults {
        Config::default()
    } else {
        load_config(config)?
    };
    if !(print || print_defaults) {
        anyhow::bail!("say --print-defaults or --print");
    }
    super::print_stdout(effective.to_yaml())?;
    Ok(ExitCode::SUCCESS)
}
