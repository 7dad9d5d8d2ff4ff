//! `--user`: after the privileged work (ICMP sockets, locks, the base directory), a process
//! started as root switches to an unprivileged account for good. The raw sockets it already
//! holds keep working; the kernel clears every capability when the last root uid goes.

use crate::spool::BaseDir;
use nix::fcntl::{AtFlags, AT_FDCWD};
use nix::unistd::{fchownat, Gid, Uid, User};
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
    #[error(
        "--user {name}: {path} is a symbolic link; with --user the base directory's own directories must be real directories (root would follow a link the user planted)"
    )]
    Link { name: String, path: PathBuf },
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

    /// Whether the process already runs as this account, saved uid included (then there is
    /// nothing to switch).
    fn is_current(&self) -> bool {
        nix::unistd::getresuid().is_ok_and(|ids| [ids.real, ids.effective, ids.saved] == [self.uid; 3])
    }

    /// Refuses a base directory whose own directories (not the base itself, which the
    /// administrator names) are symbolic links: they belong to the account after a switch, and
    /// the next start, as root, would create, lock and chown through them. Call it before the
    /// base directory is created or locked.
    pub fn check_base(&self, base: &BaseDir) -> Result<(), PrivilegeError> {
        for dir in base.all_dirs().into_iter().skip(1) {
            if std::fs::symlink_metadata(&dir).is_ok_and(|m| m.file_type().is_symlink()) {
                return Err(PrivilegeError::Link {
                    name: self.name.clone(),
                    path: dir,
                });
            }
        }
        Ok(())
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
        self.check_base(base)?;
        for path in base
            .all_dirs()
            .iter()
            .map(PathBuf::as_path)
            .chain(owned_files.iter().copied())
        {
            // Never through a link: a link's own owner changes, not its target's.
            let flags = AtFlags::AT_SYMLINK_NOFOLLOW;
            fchownat(AT_FDCWD, path, Some(self.uid), Some(self.gid), flags).map_err(|source| {
                PrivilegeError::Chown {
                    name: self.name.clone(),
                    path: path.to_owned(),
                    source,
                }
            })?;
        }
        let step = |step: &'static str| {
            let name = self.name.clone();
            move |source| PrivilegeError::Switch { name, step, source }
        };
        // The account's own supplementary groups (e.g. `haproxy` for its stats sockets).
        let user =
            std::ffi::CString::new(self.name.as_str()).map_err(|_| PrivilegeError::NoSuchUser(self.name.clone()))?;
        nix::unistd::initgroups(&user, self.gid).map_err(step("initgroups"))?;
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
