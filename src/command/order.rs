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
//! Invariants: every access goes through [`crate::spool::beneath::Dir`] from the base
//! directory down: `orders/` and every directory of the id are opened without following a
//! symlink, so nothing is ever written, touched or removed outside `orders/`. An id is a valid
//! [`OrderId`] whose every part is a name the order book reads (no dotfiles, `*.tmp`, `*~`, ...:
//! the daemon would ignore them). An order is written under a temporary name (ignored by the
//! book), fsynced and renamed into place (without replacing anything unless `--force`), so the
//! daemon never reads half an order. Directories created for the id get the permission bits of
//! `orders/` (a group-writable, setgid `orders/` stays shared below), and the file is
//! group-writable when `orders/` is, so the group's producers can touch each other's orders.
//!
//! Exit status: 0 when everything asked was done; an error (an invalid order, an existing one,
//! a hostile id, a missing order) is printed as `spoolmon: <error>` with status 2.

use super::{load_config, BaseArgs};
use crate::orders::book::{is_ignored_name, MAX_DEPTH};
use crate::orders::order::{parse_order, MAX_ORDER_BYTES};
use crate::shared::measurement::OrderId;
use crate::spool::beneath::{Dir, Kind};
use crate::spool::BaseDir;
use anyhow::{bail, Context, Result};
use std::ffi::OsStr;
use std::io::{IsTerminal, Read, Write};
use std::os::fd::AsFd;
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
        OrderCommand::Touch { base, ids } => each(&base.base_dir, &ids, "touched", touch),
        OrderCommand::Remove { base, ids } => each(&base.base_dir, &ids, "removed", remove),
    }
}

/// A validated order id: an [`OrderId`] whose parts the order book reads (also `show`'s).
pub(super) fn order_id(text: &str) -> Result<OrderId> {
    let id = OrderId::new(text)?;
    let parts: Vec<&str> = id.as_str().split('/').collect();
    if parts.len() > MAX_DEPTH {
        bail!("order id {text:?} is deeper than {MAX_DEPTH} directories: the daemon would not read it");
    }
    if let Some(part) = parts.iter().find(|part| is_ignored_name(OsStr::new(part))) {
        bail!("order id {text:?}: the daemon ignores the name {part:?} (dotfiles, *.tmp, *.part, *.swp, *~, #name#)");
    }
    Ok(id)
}

/// `orders/`, opened from the base directory without following a symlink.
fn orders_dir(base: &Path) -> Result<Dir> {
    let base_dir = BaseDir::new(base);
    let root = base_dir.root_dir().with_context(|| {
        format!(
            "cannot open the base directory {} (is --base-dir right?)",
            base.display()
        )
    })?;
    Ok(root.open_dir("orders")?)
}

/// The directory holding order `id` and the file's name in it.
fn split(id: &OrderId) -> (PathBuf, &OsStr) {
    let path = Path::new(id.as_str());
    let parent = path.parent().unwrap_or(Path::new("")).to_path_buf();
    (parent, path.file_name().expect("an order id ends in a name"))
}

fn add(args: AddArgs) -> Result<ExitCode> {
    let id = order_id(&args.id)?;
    let text = order_text(&args)?;
    let config = load_config(args.base.config.as_deref())?;
    let orders = orders_dir(&args.base.base_dir)?;
    let telegraf = telegraf_file(&args.base, &id)?;
    let parsed = parse_order(&id, &text, telegraf.as_deref(), &config.order_options())
        .with_context(|| "refused: the daemon would not measure this order")?;
    for warning in &parsed.warnings {
        eprintln!("spoolmon: warning: order {id}: {warning}");
    }

    let (parent, name) = split(&id);
    let mode = nix::sys::stat::fstat(orders.as_fd())
        .map_err(|e| crate::spool::beneath::context("cannot stat", orders.path(), e))?
        .st_mode
        & 0o7777;
    let dir = create_dirs(&orders, &parent, mode)?;
    match dir.kind(name)? {
        Some(Kind::Dir) => bail!("{} is a directory, not an order", dir.path().join(name).display()),
        Some(_) if !args.force => bail!(
            "order {id} exists ({}): not replaced without --force",
            dir.path().join(name).display()
        ),
        _ => {}
    }
    let tmp = crate::spool::temp::temp_name(name);
    let written = write_file(&dir, &tmp, text.as_bytes(), 0o644 | (mode & 0o020)).and_then(|()| {
        if args.force {
            dir.rename(&tmp, &dir, name)
        } else {
            dir.rename_noreplace(&tmp, &dir, name)
        }
    });
    if let Err(e) = written {
        let _ = dir.unlink(&tmp);
        if e.kind() == std::io::ErrorKind::AlreadyExists {
            bail!("order {id} was created meanwhile: not replaced without --force");
        }
        return Err(e.into());
    }
    dir.sync()?;
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
    if bytes.len() as u64 > MAX_ORDER_BYTES {
        bail!("the order from {what} is larger than {MAX_ORDER_BYTES} bytes, the daemon's limit for an order file");
    }
    String::from_utf8(bytes).map_err(|_| anyhow::anyhow!("the order from {what} is not UTF-8 text"))
}

/// The old interface's `telegraf/<id>`, if there is one: the daemon reads it with the order.
fn telegraf_file(base: &BaseArgs, id: &OrderId) -> Result<Option<String>> {
    let base_dir = BaseDir::new(&base.base_dir);
    let root = base_dir.root_dir()?;
    let telegraf = match root.open_dir("telegraf") {
        Ok(dir) => dir,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    let (parent, name) = split(id);
    let dir = match telegraf.open_dir(&parent) {
        Ok(dir) => dir,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    if dir.kind(name)?.is_none() {
        return Ok(None);
    }
    let bytes = dir.read_limited(name, MAX_ORDER_BYTES)?;
    let text = String::from_utf8(bytes)
        .map_err(|_| anyhow::anyhow!("{} is not UTF-8 text", dir.path().join(name).display()))?;
    Ok(Some(text))
}

/// Opens `rel` below `orders`, creating missing directories with the permission bits `mode`
/// (those of `orders/`); a symlink or a file in the way is refused, never followed.
fn create_dirs(orders: &Dir, rel: &Path, mode: u32) -> Result<Dir> {
    let mut current = orders.try_clone()?;
    for part in rel.iter() {
        let created = match current.mkdir(part) {
            Ok(()) => true,
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => false,
            Err(e) => return Err(e.into()),
        };
        let next = current.open_dir(part)?;
        if created {
            nix::sys::stat::fchmod(next.as_fd(), nix::sys::stat::Mode::from_bits_truncate(mode))
                .map_err(|e| crate::spool::beneath::context("cannot set the mode of", next.path(), e))?;
        }
        current = next;
    }
    Ok(current)
}

/// Writes the new file `name` in `dir` with `contents` and permission bits `mode`, fsynced.
fn write_file(dir: &Dir, name: &str, contents: &[u8], mode: u32) -> std::io::Result<()> {
    let path = dir.path().join(name);
    let mut file = dir.create_new(name)?;
    nix::sys::stat::fchmod(file.as_fd(), nix::sys::stat::Mode::from_bits_truncate(mode))
        .map_err(|e| crate::spool::beneath::context("cannot set the mode of", &path, e))?;
    file.write_all(contents)
        .map_err(|e| crate::spool::beneath::context("cannot write", &path, e))?;
    file.sync_all()
        .map_err(|e| crate::spool::beneath::context("cannot fsync", &path, e))
}

/// Runs `action` on every id; every failure is printed, and any makes the exit status 2.
fn each(base: &Path, ids: &[String], done: &str, action: fn(&Dir, &OrderId) -> Result<()>) -> Result<ExitCode> {
    let orders = orders_dir(base)?;
    let mut failed = false;
    for text in ids {
        let result = order_id(text).and_then(|id| action(&orders, &id));
        if let Err(e) = result {
            eprintln!("spoolmon: order {text:?} not {done}: {e:#}");
            failed = true;
        }
    }
    Ok(if failed { ExitCode::from(2) } else { ExitCode::SUCCESS })
}

/// Sets the order's mtime (and atime) to now: allowed to its owner and to whoever may write it.
fn touch(orders: &Dir, id: &OrderId) -> Result<()> {
    let file = orders.open_file_beneath(id.as_str())?;
    let path = orders.path().join(id.as_str());
    let meta = file
        .metadata()
        .with_context(|| format!("cannot stat {}", path.display()))?;
    if !meta.file_type().is_file() {
        bail!("{} is not a regular file", path.display());
    }
    let now = nix::sys::time::TimeSpec::UTIME_NOW;
    nix::sys::stat::futimens(file.as_fd(), &now, &now)
        .map_err(|e| crate::spool::beneath::context("cannot touch", &path, e))?;
    Ok(())
}

/// Deletes the order file (a symlink itself, never its target); a directory is refused.
fn remove(orders: &Dir, id: &OrderId) -> Result<()> {
    let (parent, name) = split(id);
    let dir = orders.open_dir(&parent)?;
    match dir.kind(name)? {
        None => bail!("there is no order {}", dir.path().join(name).display()),
        Some(Kind::Dir) => bail!("{} is a directory, not an order", dir.path().join(name).display()),
        Some(_) => Ok(dir.unlink(name)?),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A NUL cannot come through the command line (argv strings end at it), but an id is checked
    /// for one all the same.
    #[test]
    fn ids_with_nul_parent_parts_or_ignored_names_are_refused() {
        for id in [
            "a\0b", "\0", "../x", "/etc/x", "a/./b", "a/.git/b", "#x#", "4913", "a.swp", "a.part",
        ] {
            assert!(order_id(id).is_err(), "{id:?}");
        }
        let deep = vec!["d"; MAX_DEPTH + 1].join("/");
        assert!(order_id(&deep).unwrap_err().to_string().contains("deeper"));
        assert_eq!(order_id("app/sub/t-1.yaml").unwrap().as_str(), "app/sub/t-1.yaml");
    }
}
