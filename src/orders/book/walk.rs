//! The safe walk of `orders/`: [`OrderBook::rescan`] (the whole tree) and
//! [`OrderBook::refresh`] (the paths inotify reported), each file examined and its outcome
//! handed to the book's state (`record` / `forget` in `mod.rs`).
//!
//! Invariants:
//! - names still being written ([`is_ignored_name`]) are never read;
//! - a symlink is followed only if its canonical target stays below `orders/`; a directory that
//!   is one of its own ancestors (a loop) is listed invalid, never entered; at most
//!   [`MAX_DEPTH`] levels are walked;
//! - files are opened beneath a descriptor of `orders/` (`telegraf/` for metadata) with no link
//!   followed on the way, non-blocking, and only if regular; at most [`MAX_ORDER_BYTES`] are
//!   read. Nothing is ever written, moved or deleted;
//! - a file that vanishes meanwhile is treated as deleted, not as an error.
//!
//! Called by the book's owner (the daemon's orders watcher, `listing`) through the two methods.

use super::{modified, same_optional_content, EntryState, OrderBook, OrderEvent, Stamp};
use crate::orders::order::{OrderError, MAX_ORDER_BYTES};
use crate::shared::measurement::OrderId;
use crate::spool::beneath::Dir;
use std::collections::HashSet;
use std::ffi::OsStr;
use std::fs::{self, FileType, Metadata};
use std::hash::{DefaultHasher, Hasher};
use std::io::{self, Read};
use std::os::unix::fs::DirEntryExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};
use tracing::{debug, warn};

/// Deepest directory nesting below `orders/` that is scanned.
pub const MAX_DEPTH: usize = 64;

/// What `telegraf/<id>` is.
enum TelegrafFile {
    Absent,
    Open {
        file: fs::File,
        meta: Metadata,
    },
    /// A symlink on the way, not a regular file, unreadable: the reason.
    Refused(String),
}

/// Why reading a file gave no content.
enum ReadFailure {
    /// The file vanished meanwhile: treat as deleted.
    Gone,
    Problem(OrderError),
}

/// The state of one walk (full rescan or refresh of a subtree).
struct Walk<'e> {
    /// `orders/` canonicalized: symlink targets must stay below it.
    orders_real: PathBuf,
    /// `orders/` opened: order files are read beneath it, no link followed on the way, so a
    /// directory swapped for a symlink after the walk looked at it cannot lead outside.
    orders_fd: Dir,
    /// (device, inode) of the directories from `orders/` down to the current one.
    ancestors: Vec<(u64, u64)>,
    /// Ids examined by this walk (the catch-up fast path marks its entries' `seen_in` instead).
    seen: HashSet<OrderId>,
    /// This walk's number ([`Entry::seen_in`](super::Entry)); 0 for walks without a fast path.
    generation: u64,
    events: &'e mut Vec<OrderEvent>,
    /// The time of this walk (when host names are due to be looked up again).
    now: SystemTime,
    /// A catch-up rescan ([`OrderBook::catch_up`]): a known active regular file whose listing
    /// inode is unchanged is taken as it was, without a stat.
    catch_up: bool,
    /// How many of the directories being walked were reached through a symlink (inotify does
    /// not see changes through them, so nothing below them is taken as it was).
    linked: usize,
}

impl OrderBook {
    /// Walks all of `orders/` and returns what changed since the last look. Host names of active
    /// orders looked up [`RERESOLVE_INTERVAL`](super::RERESOLVE_INTERVAL) or longer before `now` are looked up again; a new
    /// address makes the order `Changed`. (The expiry clock is each file's mtime.)
    pub fn rescan(&mut self, now: SystemTime) -> Vec<OrderEvent> {
        self.walk_all(now, false)
    }

    /// The periodic rescan of a tree whose every change inotify reports: lists every directory
    /// (one stat and a `getdents` each) like [`OrderBook::rescan`], finds new, replaced (another
    /// inode under the name) and removed files, but takes a known active regular file whose
    /// inode in the listing is unchanged as it was, without a stat or a read: an edit in place
    /// or a touch of it is reported by inotify (`IN_CLOSE_WRITE`, `IN_ATTRIB`) and refreshed
    /// then. Symlinks, files below a directory symlink, invalid and unresolved files, and orders
    /// whose host name is due to be looked up again are examined as in a full rescan.
    ///
    /// Only sound while inotify has missed nothing: after a queue overflow, or when a directory
    /// could not be watched, the caller runs [`OrderBook::rescan`] instead.
    pub fn catch_up(&mut self, now: SystemTime) -> Vec<OrderEvent> {
        self.walk_all(now, true)
    }

    fn walk_all(&mut self, now: SystemTime, catch_up: bool) -> Vec<OrderEvent> {
        let mut events = Vec::new();
        let Some(mut walk) = self.start_walk(&mut events, now) else {
            let all: Vec<String> = self.entries.keys().cloned().collect();
            for key in all {
                self.forget(&key, &mut events);
            }
            return events;
        };
        walk.catch_up = catch_up;
        self.walks += 1;
        walk.generation = self.walks;
        let root = self.orders_dir.clone();
        if let Ok(meta) = fs::metadata(&root) {
            walk.ancestors.push((meta.dev(), meta.ino()));
            self.walk_dir(&mut walk, &root);
        }
        let seen = std::mem::take(&mut walk.seen);
        let generation = walk.generation;
        let gone: Vec<String> = self
            .entries
            .iter()
            .filter(|(_, entry)| entry.seen_in != generation && !seen.contains(&entry.id))
            .map(|(key, _)| key.clone())
            .collect();
        for key in gone {
            self.forget(&key, &mut events);
        }
        events
    }

    /// Re-examines just `paths` (files or directories, recursively; paths below `telegraf/` mean
    /// the order of the same id). Vanished paths are removed.
    pub fn refresh(&mut self, paths: &[PathBuf], now: SystemTime) -> Vec<OrderEvent> {
        let mut events = Vec::new();
        for path in paths {
            let path = self.order_path_for(path);
            if path == self.orders_dir {
                events.extend(self.rescan(now));
                continue;
            }
            if !path.starts_with(&self.orders_dir) || self.is_ignored_path(&path) {
                debug!(path = %path.display(), "not an order path; ignored");
                continue;
            }
            self.refresh_one(&path, &mut events);
        }
        events
    }

    /// Starts a walk; `None` when `orders/` does not exist (or cannot be resolved).
    fn start_walk<'e>(&self, events: &'e mut Vec<OrderEvent>, now: SystemTime) -> Option<Walk<'e>> {
        match fs::canonicalize(&self.orders_dir).and_then(|real| Ok((Dir::open(&real)?, real))) {
            Ok((orders_fd, orders_real)) => Some(Walk {
                orders_real,
                orders_fd,
                ancestors: Vec::new(),
                seen: HashSet::new(),
                generation: 0,
                events,
                now,
                catch_up: false,
                linked: 0,
            }),
            Err(e) => {
                debug!(dir = %self.orders_dir.display(), error = %e, "orders directory missing");
                None
            }
        }
    }

    /// `telegraf/<id>` means `orders/<id>`; other paths are returned as they are.
    fn order_path_for(&self, path: &Path) -> PathBuf {
        match path.strip_prefix(&self.telegraf_dir) {
            Ok(rel) => self.orders_dir.join(rel),
            Err(_) => path.to_owned(),
        }
    }

    /// True if a component of `path` below `orders/` is a name that is never tracked.
    fn is_ignored_path(&self, path: &Path) -> bool {
        let Ok(rel) = path.strip_prefix(&self.orders_dir) else {
            return true;
        };
        rel.components().any(|c| is_ignored_name(c.as_os_str()))
    }

    fn refresh_one(&mut self, path: &Path, events: &mut Vec<OrderEvent>) {
        let Some(mut walk) = self.start_walk(events, SystemTime::now()) else {
            return;
        };
        let start = self.refresh_start(path, &mut walk);
        let Some(start_id) = self.id_for(&start) else {
            return;
        };
        // A vanished start is simply not seen: everything below it is forgotten.
        if let Ok(meta) = fs::symlink_metadata(&start) {
            self.visit(&mut walk, &start, meta.file_type());
        }
        let seen = std::mem::take(&mut walk.seen);
        for key in self.keys_below(&start_id) {
            let still_there = self.entries.get(&key).is_some_and(|entry| seen.contains(&entry.id));
            if !still_there {
                self.forget(&key, events);
            }
        }
    }

    /// Where to start re-examining `path`: the path itself, or its top-most ancestor below
    /// `orders/` that is a symlink or missing (so symlink checks and removals apply to it).
    /// Fills `walk.ancestors` with the directories above the start.
    fn refresh_start(&self, path: &Path, walk: &mut Walk<'_>) -> PathBuf {
        let mut current = self.orders_dir.clone();
        if let Ok(meta) = fs::metadata(&current) {
            walk.ancestors.push((meta.dev(), meta.ino()));
        }
        let Ok(rel) = path.strip_prefix(&self.orders_dir) else {
            return path.to_owned();
        };
        let parents: Vec<_> = rel.components().collect();
        for component in &parents[..parents.len().saturating_sub(1)] {
            current.push(component);
            match fs::symlink_metadata(&current) {
                Ok(meta) if meta.is_dir() => walk.ancestors.push((meta.dev(), meta.ino())),
                _ => return current,
            }
        }
        path.to_owned()
    }

    /// Keys of the entry `id` and every entry below it (as a directory).
    fn keys_below(&self, id: &OrderId) -> Vec<String> {
        let prefix = format!("{}/", id.as_str());
        let mut keys: Vec<String> = self
            .entries
            .range(prefix.clone()..)
            .take_while(|(key, _)| key.starts_with(&prefix))
            .map(|(key, _)| key.clone())
            .collect();
        if self.entries.contains_key(id.as_str()) {
            keys.push(id.as_str().to_string());
        }
        keys
    }

    fn id_for(&mut self, path: &Path) -> Option<OrderId> {
        match OrderId::from_relative_path(&self.orders_dir, path) {
            Ok(id) => Some(id),
            Err(e) => {
                if self.unnameable.insert(path.to_owned()) {
                    warn!(path = %path.display(), error = %e, "file in orders/ cannot be an order id; ignored");
                }
                None
            }
        }
    }

    /// Examines one path found below `orders/` (`file_type` as lstat sees it).
    fn visit(&mut self, walk: &mut Walk<'_>, path: &Path, file_type: FileType) {
        let Some(id) = self.id_for(path) else {
            return;
        };
        if walk.ancestors.len() > MAX_DEPTH {
            warn!(path = %path.display(), "orders nested deeper than {MAX_DEPTH} levels; not scanned");
            return;
        }
        if file_type.is_symlink() {
            match follow_symlink(&id, path, &walk.orders_real) {
                Ok((_, meta)) if meta.is_dir() => {
                    walk.linked += 1;
                    self.visit_dir(walk, &id, path, &meta);
                    walk.linked -= 1;
                }
                Ok((real, meta)) => self.visit_file(walk, id, path, &real, &meta),
                Err(problem) => {
                    let stamp = fs::symlink_metadata(path)
                        .map(|m| Stamp::of_metadata(&m))
                        .unwrap_or(Stamp {
                            mtime: UNIX_EPOCH,
                            size: 0,
                            hash: 0,
                            ino: 0,
                        });
                    walk.seen.insert(id.clone());
                    self.record(id, path, stamp, None, Err(problem), walk.events);
                }
            }
        } else if file_type.is_dir() {
            match fs::metadata(path) {
                Ok(meta) => self.visit_dir(walk, &id, path, &meta),
                Err(e) => debug!(dir = %path.display(), error = %e, "directory vanished"),
            }
        } else {
            match fs::metadata(path) {
                Ok(meta) => self.visit_file(walk, id, path, path, &meta),
                Err(e) => debug!(path = %path.display(), error = %e, "file vanished"),
            }
        }
    }

    /// Walks a directory (reached directly or through a symlink inside the tree).
    fn visit_dir(&mut self, walk: &mut Walk<'_>, id: &OrderId, path: &Path, meta: &Metadata) {
        let inode = (meta.dev(), meta.ino());
        if walk.ancestors.contains(&inode) {
            walk.seen.insert(id.clone());
            let problem = OrderError::SymlinkBroken {
                id: id.clone(),
                path: path.to_owned(),
                message: "symlink loop: it points to a directory above itself".to_string(),
            };
            self.record(
                id.clone(),
                path,
                Stamp::of_metadata(meta),
                None,
                Err(problem),
                walk.events,
            );
            return;
        }
        walk.ancestors.push(inode);
        self.walk_dir(walk, path);
        walk.ancestors.pop();
    }

    fn walk_dir(&mut self, walk: &mut Walk<'_>, dir: &Path) {
        let entries = match fs::read_dir(dir) {
            Ok(entries) => entries,
            Err(e) => {
                warn!(dir = %dir.display(), error = %e, "cannot list orders directory");
                return;
            }
        };
        for entry in entries.flatten() {
            if is_ignored_name(&entry.file_name()) {
                continue;
            }
            if let Ok(file_type) = entry.file_type() {
                let path = entry.path();
                if walk.catch_up && walk.linked == 0 && file_type.is_file() && self.unchanged(walk, &path, entry.ino())
                {
                    continue;
                }
                self.visit(walk, &path, file_type);
            }
        }
    }

    /// For a catch-up rescan: true (and the entry marked seen) if `path` is a known active order
    /// without warnings, read from that very path, whose inode is still `ino` and whose host is
    /// not due to be looked up again.
    fn unchanged(&mut self, walk: &mut Walk<'_>, path: &Path, ino: u64) -> bool {
        let Ok(rel) = path.strip_prefix(&self.orders_dir) else {
            return false;
        };
        let Some(entry) = rel.to_str().and_then(|key| self.entries.get_mut(key)) else {
            return false;
        };
        // An entry with warnings (a telegraf file refused, a host kept from before) is looked
        // at again: what made the warning may have passed.
        let unchanged = matches!(entry.state, EntryState::Active(_))
            && entry.warnings.is_empty()
            && entry.order.ino == ino
            && entry.path == path
            && !entry.host_lookup_due(walk.now);
        if unchanged {
            entry.seen_in = walk.generation;
        }
        unchanged
    }

    /// Examines one order file; `real` is the file to read (the symlink target, or `path`).
    fn visit_file(&mut self, walk: &mut Walk<'_>, id: OrderId, path: &Path, real: &Path, meta: &Metadata) {
        walk.seen.insert(id.clone());
        let telegraf_path = self.telegraf_dir.join(id.as_path());
        let telegraf_file = self.open_telegraf(&id);
        let telegraf_meta = match &telegraf_file {
            TelegrafFile::Open { meta, .. } => Some(meta.clone()),
            TelegrafFile::Absent | TelegrafFile::Refused(_) => None,
        };
        let old = self.entries.get(id.as_str());
        if let Some(old) = old {
            let unchanged = old.path == path
                && old.order.same_metadata(meta)
                && same_optional_metadata(old.telegraf.as_ref(), telegraf_meta.as_ref());
            if unchanged && !matches!(old.state, EntryState::Unresolved(_)) && !old.host_lookup_due(walk.now) {
                return;
            }
        }
        if !meta.is_file() {
            let problem = OrderError::NotRegularFile {
                id: id.clone(),
                path: path.to_owned(),
            };
            self.record(id, path, Stamp::of_metadata(meta), None, Err(problem), walk.events);
            return;
        }
        if id.as_str().starts_with(crate::spool::ship::NODE_PREFIX) {
            let problem = OrderError::ReservedName {
                id: id.clone(),
                path: path.to_owned(),
            };
            self.record(id, path, Stamp::of_metadata(meta), None, Err(problem), walk.events);
            return;
        }
        let (order_stamp, bytes) = match read_beneath(&id, real, walk) {
            Ok(content) => content,
            Err(ReadFailure::Gone) => return self.forget(id.as_str(), walk.events),
            Err(ReadFailure::Problem(problem)) => {
                let stamp = Stamp::of_metadata(meta);
                return self.record(id, path, stamp, None, Err(problem), walk.events);
            }
        };
        let mut refused = None;
        let telegraf = match telegraf_file {
            TelegrafFile::Open { file, meta } => match read_open(&id, &telegraf_path, file, &meta) {
                Ok(content) => Some(content),
                Err(ReadFailure::Gone) => None,
                Err(ReadFailure::Problem(problem)) => {
                    return self.record(id, path, order_stamp, None, Err(problem), walk.events);
                }
            },
            TelegrafFile::Absent => None,
            TelegrafFile::Refused(reason) => {
                refused = Some(reason);
                None
            }
        };
        let telegraf_stamp = telegraf.as_ref().map(|(stamp, _)| *stamp);
        if let Some(old) = self.entries.get_mut(id.as_str()) {
            let lookup_due = old.host_lookup_due(walk.now);
            let same = !lookup_due
                && old.path == path
                && old.order.same_content(&order_stamp)
                && same_optional_content(old.telegraf.as_ref(), telegraf_stamp.as_ref());
            if same && !matches!(old.state, EntryState::Unresolved(_)) {
                // A touch: the expiry clock moves, nothing else.
                old.order = order_stamp;
                old.telegraf = telegraf_stamp;
                return;
            }
        }
        let mut outcome = self.parse(&id, path, &bytes, telegraf.as_ref().map(|(_, b)| b.as_slice()));
        if let (Ok(parsed), Some(reason)) = (&mut outcome, refused) {
            parsed.warnings.push(format!(
                "telegraf/{id} is not used (its metadata is not attached): {reason}"
            ));
        }
        self.record(id, path, order_stamp, telegraf_stamp, outcome, walk.events);
    }

    /// Opens `telegraf/<id>` through directory descriptors: no component is followed if it is a
    /// symlink (a `telegraf/<dir>` linked out of the base is refused with the reason), and only a
    /// regular file is opened (non-blocking).
    fn open_telegraf(&self, id: &OrderId) -> TelegrafFile {
        let rel = id.as_path();
        let Some(name) = rel.file_name().and_then(|name| name.to_str()) else {
            return TelegrafFile::Absent;
        };
        let parent = rel.parent().unwrap_or(Path::new(""));
        let opened = self
            .base
            .dir("telegraf")
            .and_then(|telegraf| telegraf.open_dir(parent))
            .and_then(|dir| dir.open_read(name));
        match opened.and_then(|file| file.metadata().map(|meta| (file, meta))) {
            Ok((file, meta)) => TelegrafFile::Open { file, meta },
            Err(e) if e.kind() == io::ErrorKind::NotFound => TelegrafFile::Absent,
            Err(e) => TelegrafFile::Refused(e.to_string()),
        }
    }
}

fn same_optional_metadata(stamp: Option<&Stamp>, meta: Option<&Metadata>) -> bool {
    match (stamp, meta) {
        (Some(stamp), Some(meta)) => stamp.same_metadata(meta),
        (None, None) => true,
        _ => false,
    }
}

/// Names of files still being written or never meant as orders: dotfiles (also `.#name` and
/// `.~lock.name#` editor locks, and dot-directories), `name~`, `*.tmp`, `*.swp`, `*.swx`, `*.part`,
/// `#name#` and vim's `4913` write probe.
pub fn is_ignored_name(name: &OsStr) -> bool {
    let Some(name) = name.to_str() else {
        return false;
    };
    name.starts_with('.')
        || name.ends_with('~')
        || [".tmp", ".swp", ".swx", ".part"]
            .iter()
            .any(|suffix| name.ends_with(suffix))
        || (name.len() > 1 && name.starts_with('#') && name.ends_with('#'))
        || name == "4913"
}

/// Resolves a symlink below `orders/`: its canonical target and metadata, if the target exists
/// and stays inside `orders/`.
fn follow_symlink(id: &OrderId, path: &Path, orders_real: &Path) -> Result<(PathBuf, Metadata), OrderError> {
    let broken = |e: io::Error| OrderError::SymlinkBroken {
        id: id.clone(),
        path: path.to_owned(),
        message: e.to_string(),
    };
    let real = fs::canonicalize(path).map_err(broken)?;
    if !real.starts_with(orders_real) {
        return Err(OrderError::SymlinkEscape {
            id: id.clone(),
            path: path.to_owned(),
            target: real,
        });
    }
    let meta = fs::metadata(&real).map_err(broken)?;
    Ok((real, meta))
}

/// Reads the order file `real` (a path below the walk's `orders/`) through the walk's
/// descriptor of `orders/`, following no link on the way; at most [`MAX_ORDER_BYTES`], never
/// blocking on a FIFO swapped in.
fn read_beneath(id: &OrderId, real: &Path, walk: &Walk<'_>) -> Result<(Stamp, Vec<u8>), ReadFailure> {
    // Through in-tree symlinks (allowed) the canonical path has none left: it is opened with no
    // link allowed, so a component swapped for a link since then is refused, not followed.
    let opened = fs::canonicalize(real).and_then(|canonical| match canonical.strip_prefix(&walk.orders_real) {
        Ok(rel) => walk.orders_fd.open_file_beneath(rel),
        Err(_) => Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{} is not below orders/", canonical.display()),
        )),
    });
    let file = opened.map_err(|e| match e.kind() {
        io::ErrorKind::NotFound => ReadFailure::Gone,
        _ => ReadFailure::Problem(OrderError::Read {
            id: id.clone(),
            path: real.to_owned(),
            message: e.to_string(),
        }),
    })?;
    let meta = file.metadata().map_err(|e| {
        ReadFailure::Problem(OrderError::Read {
            id: id.clone(),
            path: real.to_owned(),
            message: e.to_string(),
        })
    })?;
    read_open(id, real, file, &meta)
}

/// Reads the opened `file` (`meta` its metadata), refusing anything but a regular file of at
/// most [`MAX_ORDER_BYTES`].
fn read_open(id: &OrderId, path: &Path, file: fs::File, meta: &Metadata) -> Result<(Stamp, Vec<u8>), ReadFailure> {
    let failure = |e: io::Error| {
        if e.kind() == io::ErrorKind::NotFound {
            ReadFailure::Gone
        } else {
            ReadFailure::Problem(OrderError::Read {
                id: id.clone(),
                path: path.to_owned(),
                message: e.to_string(),
            })
        }
    };
    let too_large = || {
        ReadFailure::Problem(OrderError::TooLarge {
            id: id.clone(),
            path: path.to_owned(),
            limit: MAX_ORDER_BYTES,
        })
    };
    if !meta.is_file() {
        return Err(ReadFailure::Problem(OrderError::NotRegularFile {
            id: id.clone(),
            path: path.to_owned(),
        }));
    }
    if meta.len() > MAX_ORDER_BYTES {
        return Err(too_large());
    }
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    file.take(MAX_ORDER_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(failure)?;
    if bytes.len() as u64 > MAX_ORDER_BYTES {
        return Err(too_large());
    }
    let mut hasher = DefaultHasher::new();
    hasher.write(&bytes);
    let stamp = Stamp {
        mtime: modified(meta),
        size: bytes.len() as u64,
        hash: hasher.finish(),
        ino: meta.ino(),
    };
    Ok((stamp, bytes))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::orders::book::fixture::*;
    use crate::orders::book::OrderState;
    use crate::spool::watch::{DirWatcher, WatchEvent};
    use std::collections::BTreeSet;
    use std::os::unix::fs::symlink;
    use std::time::Duration;

    #[test]
    fn malformed_orders_stay_on_disk_untouched_and_are_listed_with_a_reason() {
        let mut f = Fixture::new();
        let mut bomb = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x]\n");
        for level in 1..=9 {
            let refs = vec![format!("*a{}", level - 1); 9].join(", ");
            bomb.push_str(&format!("a{level}: &a{level} [{refs}]\n"));
        }
        bomb.push_str(VALID);
        let binary: Vec<u8> = (0u8..=255).cycle().take(2000).collect();
        let cases: Vec<(&str, Vec<u8>, OrderState, &str)> = vec![
            (
                "bad/yaml",
                b"user: [unclosed\n".to_vec(),
                OrderState::Invalid,
                "invalid YAML",
            ),
            ("bad/binary", binary, OrderState::Invalid, "not UTF-8"),
            (
                "@child/o",
                VALID.as_bytes().to_vec(),
                OrderState::Invalid,
                "reserved for the orders of other spoolmon nodes",
            ),
            ("bad/empty", Vec::new(), OrderState::Invalid, "empty"),
            ("bad/list", b"- a\n- b\n".to_vec(), OrderState::Invalid, "must be a map"),
            (
                "bad/missing",
                VALID.replace("step: 20\n", "").into_bytes(),
                OrderState::Invalid,
                "step: required key missing",
            ),
            (
                "bad/type",
                VALID.replace("step: 20", "step: fast").into_bytes(),
                OrderState::Invalid,
                "step:",
            ),
            (
                "bad/step0",
                VALID.replace("step: 20", "step: 0").into_bytes(),
                OrderState::Invalid,
                "step: 0 is out of range",
            ),
            (
                "bad/pings0",
                VALID.replace("pings: 3", "pings: 0").into_bytes(),
                OrderState::Invalid,
                "pings: 0 is out of range",
            ),
            (
                "bad/negative",
                VALID.replace("pings: 3", "pings: -3").into_bytes(),
                OrderState::Invalid,
                "pings: -3 is negative",
            ),
            (
                "bad/probe",
                VALID.replace("probe: fping", "probe: smoke").into_bytes(),
                OrderState::Invalid,
                "unknown probe",
            ),
            (
                "bad/section",
                b"user: u\nstep: 20\npings: 3\nprobe: fping\n".to_vec(),
                OrderState::Invalid,
                "section missing",
            ),
            ("bad/huge", vec![b'#'; 1 << 20], OrderState::Invalid, "too large"),
            (
                "bad/bomb",
                bomb.into_bytes(),
                OrderState::Invalid,
                "alias expansion limit",
            ),
            (
                "bad/dns",
                VALID.replace("127.0.0.1", "no-such-host.invalid").into_bytes(),
                OrderState::Unresolved,
                "no-such-host.invalid",
            ),
        ];
        for (rel, content, _, _) in &cases {
            f.write(rel, content);
        }
        let outside = f._dir.path().join("secret");
        fs::write(&outside, VALID).unwrap();
        symlink(&outside, f.path("bad/escape")).unwrap();
        symlink("selfloop", f.path("bad/selfloop")).unwrap();
        fs::create_dir_all(f.path("bad/dir")).unwrap();
        symlink("..", f.path("bad/dir/up")).unwrap();
        nix::unistd::mkfifo(&f.path("bad/fifo"), nix::sys::stat::Mode::S_IRWXU).unwrap();

        let events = f.rescan();
        assert!(events.is_empty(), "no bad order may be measured: {events:?}");
        let mut expected: Vec<(String, OrderState, &str)> = cases
            .iter()
            .map(|(rel, _, state, reason)| (rel.to_string(), *state, *reason))
            .collect();
        expected.push((
            "bad/escape".into(),
            OrderState::Invalid,
            "escapes orders/ through a symlink",
        ));
        expected.push(("bad/selfloop".into(), OrderState::Invalid, "cannot be followed"));
        expected.push(("bad/dir/up".into(), OrderState::Invalid, "symlink loop"));
        expected.push(("bad/fifo".into(), OrderState::Invalid, "not a regular file"));
        for (id, state, reason) in &expected {
            let status = f.status(id).unwrap_or_else(|| panic!("{id} not listed"));
            assert_eq!(status.state, *state, "{id}: {status:?}");
            let got = status.reason.unwrap_or_default();
            assert!(got.contains(reason), "{id}: reason {got:?} lacks {reason:?}");
        }
        assert_eq!(f.book.len(), expected.len(), "{:#?}", f.book.listing());
        for (rel, content, _, _) in &cases {
            assert_eq!(&fs::read(f.path(rel)).unwrap(), content, "{rel} was modified");
        }
        assert!(f.rescan().is_empty(), "rescanning bad orders changes nothing");
        assert_eq!(f.book.len(), expected.len());
    }

    #[test]
    fn half_written_orders_are_ignored_until_renamed_into_place() {
        let mut f = Fixture::new();
        let names = [
            "app/.foo.tmp",
            "app/foo.swp",
            "app/foo.swx",
            "app/foo~",
            "app/foo.part",
            "app/foo.tmp",
            "app/.#foo",
            "app/#foo#",
            "app/4913",
            "app/.~lock.foo#",
            "app/.hidden/order",
        ];
        for name in names {
            f.write(name, "user: [half-written");
        }
        assert!(f.rescan().is_empty());
        assert!(f.book.listing().is_empty(), "{:?}", f.book.listing());
        let refreshed = f
            .book
            .refresh(&[f.path("app/.foo.tmp"), f.path("app/.hidden")], SystemTime::now());
        assert!(refreshed.is_empty() && f.book.is_empty());

        fs::write(f.path("app/.foo.tmp"), VALID).unwrap();
        fs::rename(f.path("app/.foo.tmp"), f.path("app/foo")).unwrap();
        let events = f.book.refresh(&[f.path("app/foo")], SystemTime::now());
        assert_eq!(added_ids(&events), BTreeSet::from(["app/foo".to_string()]));
    }

    #[test]
    fn deleted_order_is_removed_by_refresh_and_by_rescan() {
        let mut f = Fixture::new();
        let a = f.write("app/a", VALID);
        f.write("app/b", VALID);
        f.write("other/c", VALID);
        assert_eq!(f.rescan().len(), 3);
        fs::remove_file(&a).unwrap();
        assert_eq!(
            f.book.refresh(&[a], SystemTime::now()),
            vec![OrderEvent::Removed(OrderId::new("app/a").unwrap())]
        );
        fs::remove_dir_all(f.path("app")).unwrap();
        // A vanished directory removes everything below it, and only that.
        assert_eq!(
            f.book.refresh(&[f.path("app")], SystemTime::now()),
            vec![OrderEvent::Removed(OrderId::new("app/b").unwrap())]
        );
        fs::remove_file(f.path("other/c")).unwrap();
        assert_eq!(f.rescan(), vec![OrderEvent::Removed(OrderId::new("other/c").unwrap())]);
    }

    #[test]
    fn a_telegraf_directory_linked_out_of_the_base_is_not_followed_and_the_reason_is_listed() {
        let mut f = Fixture::new();
        let outside = tempfile::tempdir().unwrap();
        fs::write(outside.path().join("t"), "measurement_name: stolen\n").unwrap();
        nix::unistd::mkfifo(
            &outside.path().join("fifo"),
            nix::sys::stat::Mode::from_bits_truncate(0o600),
        )
        .unwrap();
        symlink(outside.path(), f.base.telegraf().join("app")).unwrap();
        f.write("app/t", VALID);
        f.write("app/fifo", VALID);
        match f.rescan().as_slice() {
            [OrderEvent::Added(a), OrderEvent::Added(b)] => {
                assert_eq!(
                    (a.telegraf.as_ref(), b.telegraf.as_ref()),
                    (None, None),
                    "no metadata attached"
                );
            }
            other => panic!("{other:?}"),
        }
        for id in ["app/t", "app/fifo"] {
            let status = f.status(id).unwrap();
            assert_eq!(status.state, OrderState::Active, "{status:?}");
            assert!(
                status
                    .warnings
                    .iter()
                    .any(|w| w.contains(&format!("telegraf/{id} is not used"))),
                "{status:?}"
            );
        }
        assert!(f.rescan().is_empty(), "an unchanged refusal is not a change");
    }

    #[test]
    fn catch_up_finds_new_replaced_and_removed_files_and_rereads_what_it_cannot_trust() {
        let mut f = Fixture::new();
        f.write("app/same", VALID);
        f.write("app/replaced", VALID);
        f.write("app/gone", VALID);
        f.write("app/broken", "step: [");
        f.write("real/t", VALID);
        symlink("real", f.path("alias")).unwrap();
        assert_eq!(f.rescan().len(), 5);
        assert!(f.book.catch_up(SystemTime::now()).is_empty(), "nothing changed");

        f.write("app/new/n", VALID);
        let staged = f._dir.path().join("replacement");
        fs::write(&staged, VALID.replace("pings: 3", "pings: 7")).unwrap();
        fs::rename(&staged, f.path("app/replaced")).unwrap();
        fs::remove_file(f.path("app/gone")).unwrap();
        fs::write(f.path("app/broken"), VALID).unwrap();
        // An edit in place seen through a directory symlink: inotify would not report it.
        fs::write(f.path("real/t"), VALID.replace("pings: 3", "pings: 8")).unwrap();
        let events = f.book.catch_up(SystemTime::now());
        let mut changed: Vec<(String, u32)> = events
            .iter()
            .filter_map(|e| match e {
                OrderEvent::Changed { new, .. } => Some((new.id.to_string(), new.pings)),
                _ => None,
            })
            .collect();
        changed.sort();
        assert_eq!(changed, [("alias/t".to_string(), 8), ("app/replaced".to_string(), 7)]);
        assert_eq!(
            added_ids(&events),
            BTreeSet::from(["app/broken".to_string(), "app/new/n".to_string()])
        );
        assert!(events.contains(&OrderEvent::Removed(OrderId::new("app/gone").unwrap())));
        assert_eq!(events.len(), 5, "{events:?}");
        assert!(f.book.catch_up(SystemTime::now()).is_empty());
        // The edit in place of a plain file is left to inotify; a full rescan reads it.
        assert!(f
            .rescan()
            .iter()
            .any(|e| matches!(e, OrderEvent::Changed { new, .. } if new.id.as_str() == "real/t")));
    }

    #[test]
    fn symlinks_inside_the_tree_are_followed() {
        let mut f = Fixture::new();
        f.write("real/dir/t", VALID);
        symlink("dir", f.path("real/alias")).unwrap();
        symlink("dir/t", f.path("real/file-alias")).unwrap();
        let events = f.rescan();
        let expected: BTreeSet<String> = ["real/dir/t", "real/alias/t", "real/file-alias"]
            .map(String::from)
            .into();
        assert_eq!(added_ids(&events), expected);
        assert!(f.rescan().is_empty());
    }

    #[test]
    fn symlinked_directory_escaping_orders_is_invalid_and_not_walked() {
        let mut f = Fixture::new();
        let outside = f._dir.path().join("elsewhere");
        fs::create_dir(&outside).unwrap();
        fs::write(outside.join("t"), VALID).unwrap();
        symlink(&outside, f.path("link")).unwrap();
        assert!(f.rescan().is_empty());
        let status = f.status("link").unwrap();
        assert_eq!(status.state, OrderState::Invalid);
        assert!(status.reason.unwrap().contains("escapes orders/"));
        assert!(f.status("link/t").is_none());
        // Refreshing a path below the escaping link checks the link itself.
        assert!(f.book.refresh(&[f.path("link/t")], SystemTime::now()).is_empty());
        assert!(f.status("link/t").is_none());
    }

    /// Waits on `watcher` and feeds the book until `want` orders are active (or nothing happens
    /// for a while). Returns the ids added.
    fn follow_watcher(f: &mut Fixture, watcher: &mut DirWatcher, want: usize) -> BTreeSet<String> {
        let mut added = BTreeSet::new();
        let mut idle = 0;
        while f.book.active().count() < want && idle < 20 {
            let events = watcher.wait(Duration::from_millis(250)).unwrap();
            if events.is_empty() {
                idle += 1;
                continue;
            }
            let now = SystemTime::now();
            let book_events = if events.contains(&WatchEvent::Rescan) {
                f.book.rescan(now)
            } else {
                let paths: Vec<PathBuf> = events
                    .into_iter()
                    .filter_map(|e| match e {
                        WatchEvent::Changed(p) | WatchEvent::Removed(p) => Some(p),
                        WatchEvent::Rescan => None,
                    })
                    .collect();
                f.book.refresh(&paths, now)
            };
            added.extend(added_ids(&book_events));
        }
        added
    }

    #[test]
    fn subdirectory_tree_moved_in_at_once_is_found_through_the_watcher() {
        let mut f = Fixture::new();
        let mut watcher = DirWatcher::new(&f.base.orders(), true).unwrap();
        assert!(f.rescan().is_empty());
        let staging = f._dir.path().join("staging/app");
        for rel in ["t1", "deep/t2", "deep/deeper/t3"] {
            let path = staging.join(rel);
            fs::create_dir_all(path.parent().unwrap()).unwrap();
            fs::write(path, VALID).unwrap();
        }
        fs::rename(&staging, f.path("app")).unwrap();
        let added = follow_watcher(&mut f, &mut watcher, 3);
        let expected: BTreeSet<String> = ["app/t1", "app/deep/t2", "app/deep/deeper/t3"].map(String::from).into();
        assert_eq!(added, expected);
    }

    fn drop_files(f: &Fixture, count: usize) -> BTreeSet<String> {
        let staging = f._dir.path().join("staging");
        fs::create_dir_all(&staging).unwrap();
        fs::create_dir_all(f.path("bulk")).unwrap();
        let mut ids = BTreeSet::new();
        for i in 0..count {
            let text = VALID.replace("127.0.0.1", &format!("127.0.{}.{}", i / 250, 1 + i % 250));
            let tmp = staging.join(format!("o{i}"));
            fs::write(&tmp, text).unwrap();
            fs::rename(&tmp, f.path(&format!("bulk/o{i}"))).unwrap();
            ids.insert(format!("bulk/o{i}"));
        }
        ids
    }

    #[test]
    fn ten_thousand_orders_dropped_at_once_are_all_added_by_rescan() {
        let mut f = Fixture::new();
        let ids = drop_files(&f, 10_000);
        let events = f.rescan();
        assert_eq!(added_ids(&events), ids);
        assert_eq!(events.len(), 10_000);
        assert!(f.rescan().is_empty());
    }

    #[test]
    fn ten_thousand_orders_dropped_at_once_are_all_added_through_the_watcher() {
        let mut f = Fixture::new();
        fs::create_dir_all(f.path("bulk")).unwrap();
        let mut watcher = DirWatcher::new(&f.base.orders(), true).unwrap();
        assert!(f.rescan().is_empty());
        let ids = drop_files(&f, 10_000);
        let added = follow_watcher(&mut f, &mut watcher, ids.len());
        assert_eq!(added, ids);
    }
}
