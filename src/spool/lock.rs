//! One daemon per base directory, one puller per base directory.
//!
//! The daemon's lock is an exclusive `flock` on **the base directory itself** (a descriptor of
//! its own open of the base, not a path below it): whoever replaces `state/` by a symlink or by
//! another directory cannot make a second daemon believe the base is free. `state/lock` is also
//! locked and holds the owner's pid, for `spoolmon check daemon`, `status` and messages. The
//! puller's lock is the `state/` directory (reached from the base's descriptor, never through a
//! symlink) plus `state/pull.lock` with its pid. Lock files are opened without following links
//! and only if they are regular files.

use super::beneath::Dir;
use super::BaseDir;
use nix::fcntl::{Flock, FlockArg};
use std::fs::File;
use std::io::{Read, Seek, Write};
use std::os::fd::OwnedFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// The daemon's lock in `state/` (held by `spoolmon run` or `spoolmon process`).
pub const LOCK_FILE: &str = "lock";
/// The HAProxy puller's lock in `state/` (`spoolmon pull`, or `spoolmon run` with `pull:`).
pub const PULL_LOCK: &str = "pull.lock";

/// How often, and how far apart, a held lock is tried again before giving up (a check's shared
/// lock lasts microseconds; a daemon's lasts for its lifetime).
const LOCK_ATTEMPTS: u32 = 20;
const LOCK_RETRY: std::time::Duration = std::time::Duration::from_millis(10);

/// Held for the daemon's lifetime; the locks are released when it is dropped or the process dies.
#[derive(Debug)]
pub struct DaemonLock {
    _guard: Flock<OwnedFd>,
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

/// Tries an exclusive lock for a moment; gives the lockable back if it stays held.
fn lock_retrying<T: nix::fcntl::Flockable>(mut what: T) -> Result<Flock<T>, T> {
    let mut attempts = 0;
    loop {
        match Flock::lock(what, FlockArg::LockExclusiveNonblock) {
            Ok(lock) => return Ok(lock),
            Err((back, _)) if attempts < LOCK_ATTEMPTS => {
                attempts += 1;
                what = back;
                std::thread::sleep(LOCK_RETRY);
            }
            Err((back, _)) => return Err(back),
        }
    }
}

impl DaemonLock {
    /// Takes the lock `name` ([`LOCK_FILE`] or [`PULL_LOCK`]) of `base` and writes our pid into
    /// `state/<name>`. A symbolic link in place of `state/` or of the lock file is refused (a
    /// daemon started as root must not write through a link its user planted). The lock is
    /// retried for a moment: `spoolmon check` holds a shared lock while it looks.
    pub fn acquire(base: &BaseDir, name: &str) -> Result<DaemonLock, LockError> {
        let path = base.state().join(name);
        let open_err = |source| LockError::Open {
            path: path.clone(),
            source,
        };
        let state = base.dir("state").map_err(open_err)?;
        // A new open of the guarded directory: its own open file description, so even another
        // BaseDir of this process cannot share the lock.
        let guarded = if name == LOCK_FILE {
            base.root_dir().and_then(|root| root.reopen())
        } else {
            state.reopen()
        }
        .map_err(open_err)?;
        let held = |lock_file: &Path| {
            let pid = Dir::open(lock_file.parent().unwrap_or(Path::new(".")))
                .and_then(|dir| dir.read_limited(name, 64))
                .map(|bytes| String::from_utf8_lossy(&bytes).trim().to_owned())
                .ok()
                .filter(|pid| !pid.is_empty())
                .unwrap_or_else(|| "unknown".into());
            LockError::Held {
                pid,
                path: lock_file.to_owned(),
            }
        };
        let guard = lock_retrying(guarded.into_fd()).map_err(|_| held(&path))?;
        let file = state.open_or_create(name).map_err(open_err)?;
        let mut lock = lock_retrying(file).map_err(|_| held(&path))?;
        // Overwritten in place, then cut: a reader never finds the file empty.
        let pid = format!("{}\n", std::process::id());
        lock.rewind().map_err(open_err)?;
        lock.write_all(pid.as_bytes()).map_err(open_err)?;
        lock.set_len(pid.len() as u64).map_err(open_err)?;
        Ok(DaemonLock {
            _guard: guard,
            _lock: lock,
            path,
        })
    }
}

/// The pid recorded in the lock file if a live process holds the lock, else `None`. Never
/// blocks: a FIFO or a symlink in place of the lock file reads as "no holder".
pub fn holder(path: &Path) -> Option<u32> {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)
        .ok()?;
    if !file.metadata().ok()?.file_type().is_file() {
        return None;
    }
    match Flock::lock(file, FlockArg::LockSharedNonblock) {
        Ok(_) => None,
        Err((file, _)) => {
            let mut pid = String::new();
            file.take(64).read_to_string(&mut pid).ok()?;
            pid.trim().parse().ok()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base() -> (tempfile::TempDir, BaseDir) {
        let dir = tempfile::tempdir().unwrap();
        let base = BaseDir::new(dir.path().join("base"));
        base.create_all().unwrap();
        (dir, base)
    }

    #[test]
    fn second_lock_on_same_base_names_the_holder() {
        let (_dir, base) = base();
        let first = DaemonLock::acquire(&base, LOCK_FILE).unwrap();
        let other = BaseDir::new(base.root());
        let err = DaemonLock::acquire(&other, LOCK_FILE).unwrap_err();
        assert!(err.to_string().contains(&std::process::id().to_string()), "{err}");
        assert_eq!(holder(&base.state().join(LOCK_FILE)), Some(std::process::id()));
        let puller = DaemonLock::acquire(&other, PULL_LOCK).expect("the puller's lock is another one");
        drop(first);
        assert_eq!(holder(&base.state().join(LOCK_FILE)), None);
        DaemonLock::acquire(&other, LOCK_FILE).unwrap();
        assert!(DaemonLock::acquire(&base, PULL_LOCK).is_err());
        drop(puller);
    }

    #[test]
    fn replacing_state_does_not_free_the_daemon_lock() {
        let (dir, base) = base();
        let _first = DaemonLock::acquire(&base, LOCK_FILE).unwrap();
        // The red team's move: state/ swapped for another directory, then for a symlink.
        std::fs::rename(base.state(), dir.path().join("state.old")).unwrap();
        std::fs::create_dir(base.state()).unwrap();
        let second = BaseDir::new(base.root());
        let err = DaemonLock::acquire(&second, LOCK_FILE).unwrap_err();
        assert!(matches!(err, LockError::Held { .. }), "{err}");
        std::fs::remove_dir(base.state()).unwrap();
        let elsewhere = dir.path().join("elsewhere");
        std::fs::create_dir(&elsewhere).unwrap();
        std::os::unix::fs::symlink(&elsewhere, base.state()).unwrap();
        let third = BaseDir::new(base.root());
        assert!(DaemonLock::acquire(&third, LOCK_FILE).is_err());
        assert!(
            DaemonLock::acquire(&third, PULL_LOCK).is_err(),
            "a symlinked state/ is refused"
        );
        assert_eq!(
            std::fs::read_dir(&elsewhere).unwrap().count(),
            0,
            "nothing created through the link"
        );
    }

    #[test]
    fn a_symlink_or_fifo_in_place_of_the_lock_is_refused_and_its_target_untouched() {
        let (dir, base) = base();
        let target = dir.path().join("precious");
        std::fs::write(&target, "keep me\n").unwrap();
        std::os::unix::fs::symlink(&target, base.state().join(LOCK_FILE)).unwrap();
        let err = DaemonLock::acquire(&base, LOCK_FILE).unwrap_err();
        assert!(matches!(err, LockError::Open { .. }), "{err}");
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "keep me\n");
        assert_eq!(holder(&base.state().join(LOCK_FILE)), None);
        nix::unistd::mkfifo(
            &base.state().join(PULL_LOCK),
            nix::sys::stat::Mode::from_bits_truncate(0o600),
        )
        .unwrap();
        assert!(matches!(
            DaemonLock::acquire(&base, PULL_LOCK).unwrap_err(),
            LockError::Open { .. }
        ));
        assert_eq!(holder(&base.state().join(PULL_LOCK)), None, "never blocks on a FIFO");
    }

    #[test]
    fn a_checker_holding_the_lock_shared_for_a_moment_does_not_keep_a_daemon_out() {
        let (_dir, base) = base();
        let path = base.state().join(LOCK_FILE);
        std::fs::write(&path, "").unwrap();
        let probe = Flock::lock(File::open(&path).unwrap(), FlockArg::LockSharedNonblock).unwrap();
        let release = std::thread::spawn(move || {
            std::thread::sleep(std::time::Duration::from_millis(30));
            drop(probe);
        });
        DaemonLock::acquire(&base, LOCK_FILE).expect("taken once the checker lets go");
        release.join().unwrap();
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            format!("{}\n", std::process::id())
        );
    }
}
