//! `spoolmon order add|touch|remove`: writing orders from the command line, for people and for
//! producers that would rather not write YAML files themselves.
//!
//! - `add ID` writes `orders/ID` from `--host` (an fping order built from `--step`, `--pings`,
//!   `--user`, `--expire-never`), from `--file`, or from stdin. The text is validated by the
//!   daemon's own parser ([`crate::orders::order::parse_order`] with the configuration's
//!   `order_options()`, and the old interface's `telegraf/ID` if there is one) and refused with
//!   its message if the daemon would not measure it; warnings (unknown keys) are printed and the
//!   order is written. An existing order is replaced only with `--force`.
//! - `touch ID...` renews the mtime of each order: what keeps an order alive past
//!   `order-timeout`.
//! - `remove ID...` deletes each order file; the daemon then archives its output as for any
//!   deleted order.
//!
//! The writing itself, with its invariants (nothing outside `orders/`, validated like the daemon
//! reads it, atomic, permissions following `orders/`), is [`crate::orders::write`], shared with
//! the API's `PUT` and `DELETE`.
//!
//! Exit status: 0 when everything asked was done; an error (an invalid order, an existing one,
//! a hostile id, a missing order) is printed as `spoolmon: <error>` with status 2.

use super::{load_config, BaseArgs};
use crate::orders::order::MAX_ORDER_BYTES;
use crate::orders::write;
use crate::shared::measurement::OrderId;
use crate::spool::beneath::Dir;
use crate::spool::BaseDir;
use anyhow::{bail, Context, Result};
use std::io::{IsTerminal, Read};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// `spoolmon order ...`.
#[derive(clap::Subcommand, Debug)]
pub enum OrderCommand {
    /// Write order ID: an fping order from --host, or any order from --file or stdin; validated
    /// like the daemon does, refused if invalid, never replacing an order unless --force.
    Add(AddArgs),
    /// Renew the mtime of each order ID (what keeps an order alive past order-timeout).
    Touch {
        #[command(flatten)]
        base: BaseDirArg,
        /// Order ids: paths below orders/.
        #[arg(required = true, value_name = "ID")]
        ids: Vec<String>,
    },
    /// Delete each order ID (the daemon archives its output, as for any deleted order).
    Remove {
        #[command(flatten)]
        base: BaseDirArg,
        /// Order ids: paths below orders/.
        #[arg(required = true, value_name = "ID")]
        ids: Vec<String>,
    },
}

/// The base directory alone: `touch` and `remove` read no configuration.
#[derive(clap::Args, Debug)]
pub struct BaseDirArg {
    /// The base directory (orders/, incoming/, output/, archive/, ...).
    #[arg(long, default_value = "/var/lib/spoolmon")]
    pub base_dir: PathBuf,
}

#[derive(clap::Args, Debug)]
pub struct AddArgs {
    #[command(flatten)]
    pub base: BaseArgs,
    /// The order id: its path below orders/ (directories are created).
    #[arg(value_name = "ID")]
    pub id: String,
    /// Build the order: the probe (only fping; anything else goes through --file or stdin).
    #[arg(long, value_enum, default_value = "fping", requires = "host")]
    pub probe: QuickProbe,
    /// Build the order: the host (name or address) to ping.
    #[arg(long, conflicts_with = "file")]
    pub host: Option<String>,
    /// Build the order: seconds between measurements.
    #[arg(long, default_value_t = 20, requires = "host")]
    pub step: u32,
    /// Build the order: pings per step.
    #[arg(long, default_value_t = 3, requires = "host")]
    pub pings: u32,
    /// Build the order: its `user:` (default: the account running the command).
    #[arg(long, requires = "host")]
    pub user: Option<String>,
    /// Build the order: `expire: never` (a static target; order-timeout does not apply).
    #[arg(long, requires = "host")]
    pub expire_never: bool,
    /// Read the order (YAML) from this file ("-": stdin) instead of building it.
    #[arg(long, value_name = "PATH")]
    pub file: Option<PathBuf>,
    /// Replace an existing order of the same id.
    #[arg(long)]
    pub force: bool,
}

/// The probes `--probe` can build an order for.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum QuickProbe {
    Fping,
}

pub fn run(command: OrderCommand) -> Result<ExitCode> {
    match command {
        OrderCommand::Add(args) => add(args),
        OrderCommand::Touch { base, ids } => each(&base.base_dir, &ids, "touched", write::touch),
        OrderCommand::Remove { base, ids } => each(&base.base_dir, &ids, "removed", write::remove),
    }
}

/// A validated order id (also `show`'s).
pub(super) fn order_id(text: &str) -> Result<OrderId> {
    Ok(write::order_id(text)?)
}

fn add(args: AddArgs) -> Result<ExitCode> {
    let id = order_id(&args.id)?;
    let text = order_text(&args)?;
    let config = load_config(args.base.config.as_deref())?;
    let base = BaseDir::new(&args.base.base_dir);
    let written = match write::write(&base, &config.order_options(), &id, &text, args.force) {
        Err(write::WriteError::Exists { id, path }) => {
            bail!("order {id} exists ({}): not replaced without --force", path.display())
        }
        written => written?,
    };
    for warning in &written.warnings {
        eprintln!("spoolmon: warning: order {id}: {warning}");
    }
    Ok(ExitCode::SUCCESS)
}

/// The order's text: built from `--host`, or read from `--file` or stdin, at most
/// [`MAX_ORDER_BYTES`] (the daemon's limit).
fn order_text(args: &AddArgs) -> Result<String> {
    if let Some(host) = &args.host {
        let user = match &args.user {
            Some(user) => user.clone(),
            None => nix::unistd::User::from_uid(nix::unistd::getuid())
                .ok()
                .flatten()
                .map(|user| user.name)
                .unwrap_or_else(|| nix::unistd::getuid().to_string()),
        };
        let QuickProbe::Fping = args.probe;
        let quote = |text: &str| serde_json::to_string(text).expect("a string serializes");
        let mut text = format!(
            "user: {}\nstep: {}\npings: {}\nprobe: fping\nfping:\n    host: {}\n",
            quote(&user),
            args.step,
            args.pings,
            quote(host)
        );
        if args.expire_never {
            text.push_str("expire: never\n");
        }
        return Ok(text);
    }
    let (what, reader): (String, Box<dyn Read>) = match args.file.as_deref() {
        Some(path) if path != Path::new("-") => (
            path.display().to_string(),
            Box::new(std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?),
        ),
        _ => {
            let stdin = std::io::stdin();
            if args.file.is_none() && stdin.is_terminal() {
                bail!("no order given: use --host, --file, or pipe the order's YAML into stdin");
            }
            ("stdin".to_string(), Box::new(stdin))
        }
    };
    let mut bytes = Vec::new();
    reader
        .take(MAX_ORDER_BYTES + 1)
        .read_to_end(&mut bytes)
        .with_context(|| format!("cannot read {what}"))?;
    write::order_text(bytes).with_context(|| format!("the order from {what}"))
}

/// Runs `action` on every id; every failure is printed, and any makes the exit status 2.
fn each(
    base: &Path,
    ids: &[String],
    done: &str,
    action: fn(&Dir, &OrderId) -> Result<(), write::WriteError>,
) -> Result<ExitCode> {
    let orders = write::orders_dir(&BaseDir::new(base))?;
    let mut failed = false;
    for text in ids {
        let result = write::order_id(text).and_then(|id| action(&orders, &id));
        if let Err(e) = result {
            eprintln!("spoolmon: order {text:?} not {done}: {e:#}");
            failed = true;
        }
    }
    Ok(if failed { ExitCode::from(2) } else { ExitCode::SUCCESS })
}
