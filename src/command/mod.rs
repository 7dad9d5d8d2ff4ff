//! The subcommands of `spoolmon`, one file each: what `main.rs` dispatches to once clap has
//! parsed the command line. Each is a thin composition of the stages and observers; none holds
//! pipeline logic of its own.
//!
//! - long-running, under the [`crate::service::supervisor`]: [`run`] (everything on one base
//!   directory), [`pull`] (the HAProxy collector alone), [`process`] (processing alone);
//! - serving the API: [`serve`] (also inside `run` with an `api:` section);
//! - one-shot reports: [`check`] (Nagios), [`status`], [`orders`], [`show`] (one order),
//!   [`outbox`];
//! - writing orders: [`order`] (`order add|touch|remove`);
//! - about spoolmon itself: [`config`], [`completions`], [`man`].
//!
//! The commands (with `main.rs`, the checks and the status report) are the only code that reads
//! [`Config`]: each hands the stages the plain options they take. A command returns its exit
//! status, or an error that `main.rs` prints as `spoolmon: <error>` with exit status 2.
//! Commands write their report to stdout through [`print_stdout`]: a reader that has gone away
//! ([`StdoutClosed`]) ends the command quietly with status 0 instead.
//!
//! The clap argument groups shared by several commands live here ([`BaseArgs`],
//! [`ServiceArgs`]); a command's own arguments live in its file.

pub mod backfill;
pub mod check;
pub mod completions;
pub mod config;
pub mod graph;
pub mod man;
pub mod order;
pub mod orders;
pub mod outbox;
pub mod process;
pub mod pull;
pub mod run;
pub mod serve;
pub mod show;
pub mod status;

use crate::config::Config;
use crate::service::privilege::Account;
use crate::service::signals::Signals;
use anyhow::{Context, Result};
use std::io::Write;
use std::path::{Path, PathBuf};

/// stdout's reader went away before the report was written (`spoolmon orders | head -1`).
///
/// The choice: such a command ends quietly with exit status 0, as if the reader had read it
/// all, rather than with the shell's 128 + SIGPIPE (141) that `ls` gets from being killed by
/// the signal. The reader took what it wanted, so this is no error (a 141 would fail
/// `set -o pipefail` scripts that merely `| head`), and SIGPIPE stays ignored in the whole
/// process (as Rust sets it up), which the daemon's sink sockets need. A check keeps its own
/// plugin status (see [`check::run`]).
#[derive(Debug, thiserror::Error)]
#[error("stdout is closed")]
pub struct StdoutClosed;

/// Writes `text` to stdout and flushes it. A closed pipe (EPIPE) is [`StdoutClosed`]; any other
/// failure names stdout.
pub fn print_stdout(text: impl AsRef<[u8]>) -> Result<()> {
    let mut stdout = std::io::stdout().lock();
    match stdout.write_all(text.as_ref()).and_then(|()| stdout.flush()) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Err(StdoutClosed.into()),
        Err(e) => Err(anyhow::Error::new(e).context("cannot write to stdout")),
    }
}

/// Whether `error` is (or was caused by) [`StdoutClosed`].
pub fn is_stdout_closed(error: &anyhow::Error) -> bool {
    error.chain().any(|cause| cause.is::<StdoutClosed>())
}

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

/// The base directory of a command that reads `orders/` (`orders`, `show`): refused, naming the
/// path, when `orders/` is not a directory (a wrong `--base-dir`).
pub fn orders_base(base: &BaseArgs) -> Result<crate::spool::BaseDir> {
    let base_dir = crate::spool::BaseDir::new(&base.base_dir);
    anyhow::ensure!(
        base_dir.orders().is_dir(),
        "{} is not a directory (is --base-dir right?)",
        base_dir.orders().display()
    );
    Ok(base_dir)
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
