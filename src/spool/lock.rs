//! One daemon per base directory: an exclusive `flock` on `state/lock` holding the owner's pid.

use nix::fcntl::{Flock, FlockArg};
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// The daemon's lock in `state/` (held by `spoolmon run` or `spoolmon process`).
pub const LOCK_FILE: &str = "lock";

/// How often, and how far apart, a held lock is tried again before giving up (a check's shared
/// lock lasts microseconds; a daemon's lasts for its lifetime).
const LOCK_ATTEMPTS: u32 = 20;
const LOCK_RETRY: std::time::Duration = std::time::Duration::from_millis(10);

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
    /// Takes the lock at `path` and writes our pid into it. A symbolic link at `path` is
    /// refused (a daemon started as root must not write through a link its user planted). The
    /// lock is retried for a moment: `spoolmon check` holds a shared lock while it looks.
    pub fn acquire(path: &Path) -> Result<DaemonLock, LockError> {
        let open_err = |source| LockError::Open {
            path: path.to_owned(),
            source,
        };
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .custom_flags(libc::O_NOFOLLOW)
            .open(path)
            .map_err(open_err)?;
        let mut attempts = 0;
        let mut lock = loop {
            match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
                Ok(lock) => break lock,
                Err((back, _)) if attempts < LOCK_ATTEMPTS => {
                    attempts += 1;
                    file = back;
                    std::thread::sleep(LOCK_RETRY);
                }
                Err((mut back, _)) => {
                    let mut pid = String::new();
                    let _ = back.read_to_string(&mut pid);
                    return Err(LockError::Held {
                        pid: pid.trim().to_owned(),
                        path: path.to_owned(),
                    });
                }
            }
        };
        // Overwritten in place, then cut: a reader never finds the file empty.
        let pid = format!("{}\n", std::process::id());
        lock.rewind().map_err(open_err)?;
        lock.write_all(pid.as_bytes()).map_err(open_err)?;
        lock.set_len(pid.len() as u64).map_err(open_err)?;
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

    #[test]
    fn a_symlink_in_place_of_the_lock_is_refused_and_its_target_untouched() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("precious");
        std::fs::write(&target, "keep me\n").unwrap();
        std::os::unix::fs::symlink(&target, dir.path().join("lock")).unwrap();
        let err = DaemonLock::acquire(&dir.path().join("lock")).unwrap_err();
        assert!(matches!(err, LockError::Open { .. }), "{err}");
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "keep me\n");
    }

    #[test]
    fn a_checker_holding_the_lock_shared_for_a_moment_does_not_keep_a_daemon_out() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("lock");
        std::fs::write(&path, "").unwrap();
        let probe = Flock::lock(File::open(&path).unwrap(), FlockArg::LockSharedNonblock).unwrap();
        let release = std::thread::spawn(move || {
            std::thread::sleep(std::time::Duration::from_millis(30));
            drop(probe);
        });
        DaemonLock::acquire(&path).expect("taken once the checker lets go");
        release.join().unwrap();
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            format!("{}\n", std::process::id())
        );
    }
}
