//! Paths of the base directory (the on-disk contract in `spool-layout.md`).

use super::beneath::Dir;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// A spoolmon base directory (default `/var/lib/spoolmon`).
///
/// Paths (`incoming()`, ...) are for messages and for the few libraries that only take paths;
/// operations on what producers may write go through [`BaseDir::dir`], which opens the layout
/// directory from the base's own descriptor and refuses a symlink in its place.
#[derive(Clone, Debug)]
pub struct BaseDir {
    root: PathBuf,
    /// The base directory, opened once (the operator's path may itself be a symlink).
    root_fd: Arc<Mutex<Option<Arc<Dir>>>>,
}

/// The directories of the layout below the base, by name.
pub const LAYOUT_DIRS: [&str; 9] = [
    "orders",
    "telegraf",
    "incoming.tmp",
    "incoming",
    "failed",
    "output",
    "archive",
    "outbox",
    "state",
];

impl BaseDir {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        BaseDir {
            root: root.into(),
            root_fd: Arc::default(),
        }
    }

    /// The base directory's descriptor (opened at the first call).
    pub fn root_dir(&self) -> io::Result<Arc<Dir>> {
        let mut held = self.root_fd.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(dir) = held.as_ref() {
            return Ok(dir.clone());
        }
        let dir = Arc::new(Dir::open(&self.root)?);
        *held = Some(dir.clone());
        Ok(dir)
    }

    /// Opens the layout directory `name` (`"incoming"`, `"failed"`, ...) or a path below it
    /// (`"outbox/graphite"`) from the base's descriptor; a symlink anywhere on the way is refused.
    pub fn dir(&self, rel: &str) -> io::Result<Dir> {
        self.root_dir()?.open_dir(rel)
    }

    pub fn root(&self) -> &Path {
        &self.root
    }
    /// User-owned YAML orders, any depth.
    pub fn orders(&self) -> PathBuf {
        self.root.join("orders")
    }
    /// Old interface: `telegraf/<id>` holds measurement_name and tags for order `<id>`.
    pub fn telegraf(&self) -> PathBuf {
        self.root.join("telegraf")
    }
    /// Snapshots under construction.
    pub fn incoming_tmp(&self) -> PathBuf {
        self.root.join("incoming.tmp")
    }
    /// Complete snapshots waiting to be processed.
    pub fn incoming(&self) -> PathBuf {
        self.root.join("incoming")
    }
    /// Snapshots that could not be processed, each with a `REASON` file.
    pub fn failed(&self) -> PathBuf {
        self.root.join("failed")
    }
    /// `output/<id>/main.rrd` and `last_result` of active orders.
    pub fn output(&self) -> PathBuf {
        self.root.join("output")
    }
    /// Output (and expired order files) of orders that are gone.
    pub fn archive(&self) -> PathBuf {
        self.root.join("archive")
    }
    /// Per-sink durable queues.
    pub fn outbox(&self) -> PathBuf {
        self.root.join("outbox")
    }
    /// Lock file, heartbeat, self-metrics.
    pub fn state(&self) -> PathBuf {
        self.root.join("state")
    }

    /// Creates every directory of the layout that does not exist yet. The base itself is
    /// created by path; below it a symlink or a file where a layout directory belongs is refused
    /// (never followed), naming the path.
    pub fn create_all(&self) -> io::Result<()> {
        std::fs::create_dir_all(&self.root).map_err(|e| {
            let cause = in_the_way(&self.root, &e).unwrap_or(e);
            super::beneath::context("cannot create", &self.root, cause)
        })?;
        let root = self.root_dir()?;
        for name in LAYOUT_DIRS {
            root.create_dir_all(name)
                .map_err(|e| match in_the_way(&self.root.join(name), &e) {
                    Some(cause) => super::beneath::context("cannot create directory", &self.root.join(name), cause),
                    None => e,
                })?;
        }
        Ok(())
    }

    /// The base directory itself and every directory of the layout.
    pub fn all_dirs(&self) -> Vec<PathBuf> {
        vec![
            self.root().to_path_buf(),
            self.orders(),
            self.telegraf(),
            self.incoming_tmp(),
            self.incoming(),
            self.failed(),
            self.output(),
            self.archive(),
            self.outbox(),
            self.state(),
        ]
    }
}

/// What is in the way when the directory `path` could not be created with `error`: for "File
/// exists" and "Not a directory" (all the errno says), the first of `path` and its ancestors
/// that exists and is not a directory, as the cause to report ("it is a file, not a directory",
/// or "<ancestor> is a file, ..."). `None` for other errors (read-only file system, permission
/// denied, ...: the errno is the cause) and when nothing is found.
fn in_the_way(path: &Path, error: &io::Error) -> Option<io::Error> {
    if !matches!(super::beneath::os_error(error), Some(libc::EEXIST | libc::ENOTDIR)) {
        return None;
    }
    let who = |found: &Path| {
        if found == path {
            "it".to_string()
        } else {
            found.display().to_string()
        }
    };
    for ancestor in path.ancestors().filter(|a| !a.as_os_str().is_empty()) {
        let what = match std::fs::metadata(ancestor) {
            Ok(meta) if meta.is_dir() => return None,
            Ok(meta) if meta.is_file() => "a file",
            Ok(_) => "a special file (FIFO, socket or device)",
            Err(_) if std::fs::symlink_metadata(ancestor).is_ok() => "a symbolic link to nothing",
            Err(_) => continue,
        };
        return Some(io::Error::new(
            io::ErrorKind::NotADirectory,
            format!("{} is {what}, not a directory", who(ancestor)),
        ));
    }
    None
}

/// A base directory with all its directories, in a temporary directory removed when the guard
/// is dropped: what every module's tests start from.
#[cfg(test)]
pub(crate) fn temp_base() -> (tempfile::TempDir, BaseDir) {
    let dir = tempfile::tempdir().expect("tempdir");
    let base = BaseDir::new(dir.path());
    base.create_all().expect("base directories");
    (dir, base)
}
