//! How a long-running command takes a base directory at start: with `--user`, planted links
//! are refused first; then the layout is created, the command's locks are taken, and only then
//! are its own unpublished leftovers in `incoming.tmp/` removed (never another process's).

use super::privilege::Account;
use crate::spool::lock::DaemonLock;
use crate::spool::{queue, BaseDir};
use anyhow::{Context, Result};
use tracing::info;

/// Claims `base` for a command that holds the lock files `locks` (names in `state/`) and
/// builds the snapshots `owner` names. Returns the locks, in the order given.
pub fn claim_base(
    base: &BaseDir,
    locks: &[&str],
    owner: queue::TmpOwner,
    user: Option<&Account>,
) -> Result<Vec<DaemonLock>> {
    if let Some(account) = user {
        account.check_base(base)?;
    }
    base.create_all()
        .with_context(|| format!("cannot set up the base directory {}", base.root().display()))?;
    let held = locks
        .iter()
        .map(|name| DaemonLock::acquire(base, name))
        .collect::<Result<Vec<_>, _>>()?;
    let orphans = queue::clean_tmp(base, owner).context("cannot clean incoming.tmp/")?;
    if orphans > 0 {
        info!(orphans, "removed unpublished snapshots left by a previous run");
    }
    Ok(held)
}
