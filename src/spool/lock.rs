//! One daemon per base directory: an exclusive `flock` on `state/lock` holding the owner's pid.

use nix::fcntl::{Flock, FlockArg};
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};

/// Held for the daemon's lifetime; the lock is released when it is dropped or the process dies.
#[derive(Debug)]
pub struct DaemonLock {
    _lock: Flock<File>,
    pub path: PathBuf,
}

/// Why the lock could not be taken.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error("another spoolmon (pid {pid}) is running on this base directory (lock {path})")]
    Held { pid: String, path: PathBuf },
    #[error("cannot open lock file {path}: {source}")]
    Open { path: PathBuf, source: std::io::Error },
}

impl DaemonLock {
    /// Takes the lock at `path` without waiting and writes our pid into it.
    pub fn acquire(path: &Path) -> Result<DaemonLock, LockError> {
        let open_err = |source| LockError::Open {
            path: path.to_owned(),
            source,
        };
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .map_err(open_err)?;
        let mut lock = match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(lock) => lock,
            Err((mut file, _)) => {
                let mut pid = String::new();
                let _ = file.read_to_string(&mut pid);
                return Err(LockError::Held {
                    pid: pid.trim().to_owned(),
                    path: path.to_owned(),
                });
            }
        };
        let pid = format!("{}\n", std::process::id());
        lock.set_len(0).map_err(open_err)?;
        lock.rewind().map_err(open_err)?;
        lock.write_all(pid.as_bytes()).map_err(open_err)?;
        Ok(DaemonLock {
            _lock: lock,
            path: path.to_owned(),
        })
    }
}

/// The pid recorded in the lock file if a live process holds the lock, else `None`.
pub fn holder(path: &Path) -> Option<u32> {
    let file = File::open(path).ok()?;
    match Flock::lock(file, FlockArg::LockSharedNonblock) {
        Ok(_) => None,
        Err((mut file, _)) => {
            let mut pid = String::new();
            file.read_to_string(&mut pid).ok()?;
            pid.trim().parse().ok()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_lock_on_same_file_names_the_holder() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("lock");
        let first = DaemonLock::acquire(&path).unwrap();
        let err = DaemonLock::acquire(&path).unwrap_err();
        assert!(err.to_string().contains(&std::process::id().to_string()), "{err}");
        assert_eq!(holder(&path), Some(std::process::id()));
        drop(first);
        assert_eq!(holder(&path), None);
        DaemonLock::acquire(&path).unwrap();
    }
}
