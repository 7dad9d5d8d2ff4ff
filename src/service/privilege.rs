//! `--user`: after the privileged work (ICMP sockets, locks, the base directory), a process
//! started as root switches to an unprivileged account for good. The raw sockets it already
//! holds keep working; the kernel clears every capability when the last root uid goes.

use crate::spool::BaseDir;
use nix::unistd::{Gid, Uid, User};
use std::path::{Path, PathBuf};
use tracing::info;

/// The account to run as.
#[derive(Clone, Debug)]
pub struct Account {
    pub name: String,
    pub uid: Uid,
    pub gid: Gid,
}

/// Why the switch cannot happen.
#[derive(Debug, thiserror::Error)]
pub enum PrivilegeError {
    #[error("--user {0}: no such user")]
    NoSuchUser(String),
    #[error("--user {name}: cannot look the user up: {source}")]
    Lookup { name: String, source: nix::Error },
    #[error("--user {0}: switching users needs root (or run as that user directly)")]
    NotRoot(String),
    #[error("--user {name}: cannot give {path} to the user: {source}")]
    Chown {
        name: String,
        path: PathBuf,
        source: nix::Error,
    },
    #[error("--user {name}: {step} failed: {source}")]
    Switch {
        name: String,
        step: &'static str,
        source: nix::Error,
    },
    #[error("--user {0}: root privileges could be regained after the switch; refusing to run")]
    NotDropped(String),
}

impl Account {
    /// Looks `name` up in the user database; fails early, before anything starts.
    pub fn lookup(name: &str) -> Result<Account, PrivilegeError> {
        match User::from_name(name) {
            Ok(Some(user)) => Ok(Account {
                name: name.to_string(),
                uid: user.uid,
                gid: user.gid,
            }),
            Ok(None) => Err(PrivilegeError::NoSuchUser(name.to_string())),
            Err(source) => Err(PrivilegeError::Lookup {
                name: name.to_string(),
                source,
            }),
        }
    }

    /// Whether the process already runs as this account (then there is nothing to switch).
    fn is_current(&self) -> bool {
        Uid::effective() == self.uid && Uid::current() == self.uid
    }

    /// Gives the base directory's own directories and `owned_files` (lock files, a log file)
    /// to the account, then switches group list, group and user. Files deeper in the base
    /// directory keep their owner (after running as root once: `chown -R`).
    pub fn switch_to(&self, base: &BaseDir, owned_files: &[&Path]) -> Result<(), PrivilegeError> {
        if self.is_current() {
            return Ok(());
        }
        if !Uid::effective().is_root() {
            return Err(PrivilegeError::NotRoot(self.name.clone()));
        }
        for path in base
            .all_dirs()
            .iter()
            .map(PathBuf::as_path)
            .chain(owned_files.iter().copied())
        {
            nix::unistd::chown(path, Some(self.uid), Some(self.gid)).map_err(|source| PrivilegeError::Chown {
                name: self.name.clone(),
                path: path.to_owned(),
                source,
            })?;
        }
        let step = |step: &'static str| {
            let name = self.name.clone();
            move |source| PrivilegeError::Switch { name, step, source }
        };
        nix::unistd::setgroups(&[self.gid]).map_err(step("setgroups"))?;
        nix::unistd::setgid(self.gid).map_err(step("setgid"))?;
        nix::unistd::setuid(self.uid).map_err(step("setuid"))?;
        if nix::unistd::setuid(Uid::from_raw(0)).is_ok() || !self.is_current() {
            return Err(PrivilegeError::NotDropped(self.name.clone()));
        }
        info!(user = %self.name, uid = self.uid.as_raw(), gid = self.gid.as_raw(), "switched to an unprivileged user");
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_users_are_refused_by_name() {
        let e = Account::lookup("no-such-user-spoolmon-test").unwrap_err();
        assert_eq!(e.to_string(), "--user no-such-user-spoolmon-test: no such user");
    }

    #[test]
    fn root_is_found_with_uid_zero() {
        let root = Account::lookup("root").unwrap();
        assert!(root.uid.is_root());
        assert_eq!(root.gid.as_raw(), 0);
    }
}
