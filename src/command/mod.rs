//! The subcommands of `spoolmon`, one file each: what `main.rs` dispatches to once clap has
//! parsed the command line. Each is a thin composition of the stages and observers; none holds
//! pipeline logic of its own.
//!
//! - long-running, under the [`crate::service::supervisor`]: [`run`] (everything on one base
//!   directory), [`pull`] (the HAProxy collector alone), [`process`] (processing alone);
//! - one-shot reports: [`check`] (Nagios), [`status`], [`orders`], [`outbox`];
//! - about spoolmon itself: [`config`], [`completions`], [`man`].
//!
//! The commands (with `main.rs`, the checks and the status report) are the only code that reads
//! [`Config`]: each hands the stages the plain options they take. A command returns its exit
//! status, or an error that `main.rs` prints as `spoolmon: <error>` with exit status 2.
//!
//! The clap argument groups shared by several commands live here ([`BaseArgs`],
//! [`ServiceArgs`]); a command's own arguments live in its file.

pub mod check;
pub mod completions;
pub mod config;
pub mod man;
pub mod orders;
pub mod outbox;
pub mod process;
pub mod pull;
pub mod run;
pub mod status;

use crate::config::Config;
use crate::service::privilege::Account;
use crate::service::signals::Signals;
use anyhow::{Context, Result};
use std::path::{Path, PathBuf};

#[derive(clap::Args, Debug)]
pub struct BaseArgs {
    /// The base directory (orders/, incoming/, output/, archive/, ...).
    #[arg(long, default_value = "/var/lib/spoolmon")]
    pub base_dir: PathBuf,
    /// The configuration file (YAML); every key is optional.
    #[arg(long)]
    pub config: Option<PathBuf>,
}

/// Options of the long-running commands.
#[derive(clap::Args, Debug)]
pub struct ServiceArgs {
    /// Started as root: open the ICMP sockets and locks, then switch to this user for good
    /// (the base directory's own directories are given to it).
    #[arg(long, value_name = "NAME")]
    pub user: Option<String>,
}

/// The configuration in `path`, or the defaults without one.
pub fn load_config(path: Option<&Path>) -> Result<Config> {
    match path {
        Some(path) => Ok(Config::load(path)?),
        None => Ok(Config::default()),
    }
}

/// How a long-running command was started, besides its base directory.
pub struct Started {
    /// `--config`, read again on SIGHUP.
    pub config_file: Option<PathBuf>,
    /// `--user`, looked up before anything starts.
    pub user: Option<Account>,
    /// Files to give to `user` as well (`--log-file`, opened as root).
    pub user_files: Vec<PathBuf>,
    /// The stop and reload flags.
    pub signals: Signals,
}

impl Started {
    /// Looks up `--user` and installs the signal handlers.
    pub fn new(base: &BaseArgs, service: &ServiceArgs, log_file: Option<PathBuf>) -> Result<Started> {
        let user = service.user.as_deref().map(Account::lookup).transpose()?;
        Ok(Started {
            config_file: base.config.clone(),
            user,
            user_files: log_file.into_iter().collect(),
            signals: Signals::install().context("cannot install signal handlers")?,
        })
    }
}
