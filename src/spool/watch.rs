//! Watching a directory (optionally its whole tree) with raw inotify, turned into a short list of
//! "look at this path again" events.
//!
//! One job: tell the caller which paths below a root may have changed, or that it must rescan
//! everything. The watcher owns nothing on disk and never reads files; the caller re-examines the
//! reported paths (a reported directory means "refresh everything below it").
//!
//! Contract used by the daemon: **watch first, then scan.** Once [`DirWatcher::new`] returns, every
//! change below the root is either reported by a later [`DirWatcher::wait`] or covered by the
//! scan the caller does right after creating the watcher. Invariants:
//! - a new subdirectory (created or moved in, possibly a whole tree at once) is watched, with all
//!   its subdirectories, *before* it is reported as [`WatchEvent::Changed`], so files created in it
//!   before the watch existed are found by the caller's recursive refresh;
//! - an inotify queue overflow, or the root itself vanishing or moving, is reported as
//!   [`WatchEvent::Rescan`]; a root that reappears is watched again and reported as `Rescan`;
//! - a directory that cannot be watched (out of watches, `fs.inotify.max_user_watches`, or
//!   refused, EACCES) is logged; the unwatched directory is
//!   still reported once as changed, later changes in it are left to the periodic rescan, and
//!   [`DirWatcher::missed_watches`] says so from then on (the orders watch then rescans in full);
//! - symlinks are never followed below the root (the root itself may be a symlink).

use inotify::{EventMask, Inotify, WatchDescriptor, WatchMask};
use std::collections::{BTreeMap, HashMap};
use std::ffi::OsString;
use std::io;
use std::os::fd::{AsFd, AsRawFd};
use std::path::{Path, PathBuf};
use std::time::Duration;
use tracing::{debug, warn};

/// What the caller should look at again.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum WatchEvent {
    /// This file or directory (recursively) was created, written, moved in or touched.
    Changed(PathBuf),
    /// This file or directory (with everything below it) was deleted or moved away.
    Removed(PathBuf),
    /// Events were lost (queue overflow) or the root went away: rescan everything.
    Rescan,
}

/// Why watching is impossible.
#[derive(Debug, thiserror::Error)]
pub enum WatchError {
    #[error("cannot create an inotify instance for {root}: {source}")]
    Init { root: PathBuf, source: io::Error },
    #[error("cannot watch directory {root}: {source}")]
    WatchRoot { root: PathBuf, source: io::Error },
    #[error("cannot wait for inotify events below {root}: {source}")]
    Wait { root: PathBuf, source: io::Error },
}

/// Events that make a directory worth looking at again.
fn event_mask() -> WatchMask {
    WatchMask::CLOSE_WRITE
        | WatchMask::MOVED_TO
        | WatchMask::MOVED_FROM
        | WatchMask::CREATE
        | WatchMask::DELETE
        | WatchMask::DELETE_SELF
        | WatchMask::MOVE_SELF
        | WatchMask::ATTRIB
        | WatchMask::ONLYDIR
        | WatchMask::EXCL_UNLINK
}

/// Bytes read from inotify at once (room for ~2,000 events with short names).
const READ_BUFFER_BYTES: usize = 64 * 1024;
/// Most buffers drained in one `wait`, so a storm of events cannot keep `wait` from returning.
const MAX_READS_PER_WAIT: usize = 256;

/// An inotify watch on `root` (and, if recursive, on every directory below it).
pub struct DirWatcher {
    inotify: Inotify,
    root: PathBuf,
    recursive: bool,
    table: WatchTable,
    buffer: Vec<u8>,
    /// The root's watch is gone (root deleted or moved); retried on every `wait`.
    root_lost: bool,
    /// A subdirectory could not be watched (watch limit): changes in it go unreported.
    missed: bool,
}

impl DirWatcher {
    /// Starts watching `root` (and its subdirectories if `recursive`). Fails only if the root
    /// itself cannot be watched; unwatchable subdirectories are logged.
    pub fn new(root: &Path, recursive: bool) -> Result<DirWatcher, WatchError> {
        let inotify = Inotify::init().map_err(|source| WatchError::Init {
            root: root.to_owned(),
            source,
        })?;
        let mut watcher = DirWatcher {
            inotify,
            root: root.to_owned(),
            recursive,
            table: WatchTable::default(),
            buffer: vec![0; READ_BUFFER_BYTES],
            root_lost: false,
            missed: false,
        };
        watcher.watch_root().map_err(|source| WatchError::WatchRoot {
            root: root.to_owned(),
            source,
        })?;
        Ok(watcher)
    }

    /// The watched root.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Number of directories currently watched.
    pub fn watched_dirs(&self) -> usize {
        self.table.by_wd.len()
    }

    /// True once a subdirectory could not be watched because the inotify watch limit was reached
    /// (sticky for the watcher's life): some changes below the root go unreported, so a caller
    /// relying on the events alone must rescan in full.
    pub fn missed_watches(&self) -> bool {
        self.missed
    }

    /// Waits up to `timeout` for changes and returns them, duplicates merged (the last event for a
    /// path wins). Returns an empty list on timeout or signal. `[Rescan]` alone when the caller
    /// must rescan everything.
    pub fn wait(&mut self, timeout: Duration) -> Result<Vec<WatchEvent>, WatchError> {
        let mut batch = EventBatch::default();
        if self.root_lost {
            self.retry_root(&mut batch);
        }
        let readable = wait_readable(&self.inotify, timeout).map_err(|source| WatchError::Wait {
            root: self.root.clone(),
            source,
        })?;
        if readable {
            self.drain(&mut batch)?;
        }
        Ok(batch.into_events())
    }

    fn watch_root(&mut self) -> io::Result<()> {
        // The root may be a symlink (e.g. a base directory on another disk): follow it.
        let wd = self.inotify.watches().add(&self.root, event_mask())?;
        self.table.root_wd = Some(self.table.insert(self.root.clone(), wd));
        if self.recursive {
            let root = self.root.clone();
            self.watch_subdirectories(&root);
        }
        Ok(())
    }

    fn retry_root(&mut self, batch: &mut EventBatch) {
        if self.watch_root().is_ok() {
            warn!(root = %self.root.display(), "watched directory is back; rescanning");
            self.root_lost = false;
            batch.rescan();
        }
    }

    /// Watches every directory below `dir` (not `dir` itself), never following symlinks.
    fn watch_subdirectories(&mut self, dir: &Path) {
        let mut pending = vec![dir.to_owned()];
        while let Some(current) = pending.pop() {
            let entries = match std::fs::read_dir(&current) {
                Ok(entries) => entries,
                Err(e) => {
                    debug!(dir = %current.display(), error = %e, "cannot list directory to watch");
                    continue;
                }
            };
            for entry in entries.flatten() {
                let is_dir = entry.file_type().map(|t| t.is_dir()).unwrap_or(false);
                if is_dir {
                    let path = entry.path();
                    if self.watch_dir(&path) {
                        pending.push(path);
                    }
                }
            }
        }
    }

    /// Adds a watch on one directory (not following a symlink). Returns false if it failed.
    fn watch_dir(&mut self, dir: &Path) -> bool {
        match self.inotify.watches().add(dir, event_mask() | WatchMask::DONT_FOLLOW) {
            Ok(wd) => {
                self.table.insert(dir.to_owned(), wd);
                true
            }
            Err(e) if e.raw_os_error() == Some(libc::ENOSPC) => {
                self.missed = true;
                warn!(
                    dir = %dir.display(),
                    "cannot watch directory: inotify watch limit reached \
                     (raise fs.inotify.max_user_watches); changes in it are seen by the periodic rescan only"
                );
                false
            }
            Err(e) if matches!(e.raw_os_error(), Some(libc::ENOENT | libc::ENOTDIR)) => {
                debug!(dir = %dir.display(), error = %e, "cannot watch directory (gone already?)");
                false
            }
            Err(e) => {
                // EACCES and the like: the directory stays unwatched, so the periodic rescan
                // must look at everything again (as for the watch limit).
                self.missed = true;
                warn!(
                    dir = %dir.display(),
                    error = %e,
                    "cannot watch directory; changes in it are seen by the periodic full rescan only"
                );
                false
            }
        }
    }

    /// Reads every queued event (bounded) and applies it.
    fn drain(&mut self, batch: &mut EventBatch) -> Result<(), WatchError> {
        for _ in 0..MAX_READS_PER_WAIT {
            let raw: Vec<RawEvent> = match self.inotify.read_events(&mut self.buffer) {
                Ok(events) => events
                    .map(|e| RawEvent {
                        wd: e.wd.get_watch_descriptor_id(),
                        mask: e.mask,
                        name: e.name.map(|n| n.to_os_string()),
                    })
                    .collect(),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(source) => {
                    return Err(WatchError::Wait {
                        root: self.root.clone(),
                        source,
                    })
                }
            };
            for event in raw {
                let action = translate(&event, &self.table, self.recursive);
                self.apply(action, batch);
            }
        }
        Ok(())
    }

    fn apply(&mut self, action: Action, batch: &mut EventBatch) {
        match action {
            Action::Nothing => {}
            Action::Report(event) => batch.push(event),
            Action::NewDir(dir) => {
                if self.watch_dir(&dir) {
                    self.watch_subdirectories(&dir);
                }
                batch.push(WatchEvent::Changed(dir));
            }
            Action::DirGone(dir) => {
                self.unwatch_tree(&dir);
                batch.push(WatchEvent::Removed(dir));
            }
            Action::Created(path) => {
                if created_complete(&path) {
                    batch.push(WatchEvent::Changed(path));
                }
            }
            Action::WatchGone(id) => {
                self.table.remove_id(id);
            }
            Action::RootLost => {
                warn!(root = %self.root.display(), "watched directory vanished or moved; rescanning");
                self.unwatch_tree(&self.root.clone());
                self.root_lost = true;
                batch.rescan();
            }
        }
    }

    /// Removes the watches of `dir` and every directory below it.
    fn unwatch_tree(&mut self, dir: &Path) {
        for wd in self.table.remove_tree(dir) {
            // Fails harmlessly when the kernel dropped the watch already (directory deleted).
            if let Err(e) = self.inotify.watches().remove(wd) {
                debug!(dir = %dir.display(), error = %e, "watch already gone");
            }
        }
    }
}

/// A file that appeared by `IN_CREATE` alone is complete only if it is a symlink or a hard link
/// (neither is followed by `IN_CLOSE_WRITE`); a file being written is reported when it is closed.
fn created_complete(path: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match std::fs::symlink_metadata(path) {
        Ok(meta) => meta.file_type().is_symlink() || meta.nlink() > 1,
        Err(_) => false,
    }
}

/// poll(2) on the inotify descriptor: true when events are queued, false on timeout or signal.
fn wait_readable(inotify: &Inotify, timeout: Duration) -> io::Result<bool> {
    let mut pollfd = libc::pollfd {
        fd: inotify.as_fd().as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    let millis = libc::c_int::try_from(timeout.as_millis()).unwrap_or(libc::c_int::MAX);
    // SAFETY: `pollfd` is one valid, initialised struct that lives for the whole call, and the
    // count passed is 1; the descriptor is owned by `inotify`, which outlives the call.
    let result = unsafe { libc::poll(&mut pollfd, 1, millis) };
    if result < 0 {
        let error = io::Error::last_os_error();
        return if error.kind() == io::ErrorKind::Interrupted {
            Ok(false)
        } else {
            Err(error)
        };
    }
    Ok(result > 0 && pollfd.revents & libc::POLLIN != 0)
}

/// Which directory each watch descriptor watches.
#[derive(Default)]
struct WatchTable {
    by_wd: HashMap<i32, (PathBuf, WatchDescriptor)>,
    /// Sorted by path, so a directory's descendants follow it contiguously.
    by_path: BTreeMap<PathBuf, i32>,
    root_wd: Option<i32>,
}

impl WatchTable {
    /// Records that `wd` watches `path`; returns the descriptor's number.
    fn insert(&mut self, path: PathBuf, wd: WatchDescriptor) -> i32 {
        let id = wd.get_watch_descriptor_id();
        if let Some(old) = self.by_path.insert(path.clone(), id) {
            if old != id {
                self.by_wd.remove(&old);
            }
        }
        self.by_wd.insert(id, (path, wd));
        id
    }

    fn path(&self, id: i32) -> Option<&Path> {
        self.by_wd.get(&id).map(|(path, _)| path.as_path())
    }

    fn remove_id(&mut self, id: i32) {
        if let Some((path, _)) = self.by_wd.remove(&id) {
            if self.by_path.get(&path) == Some(&id) {
                self.by_path.remove(&path);
            }
        }
        if self.root_wd == Some(id) {
            self.root_wd = None;
        }
    }

    /// Forgets `dir` and everything below it; returns their watch descriptors.
    fn remove_tree(&mut self, dir: &Path) -> Vec<WatchDescriptor> {
        let below: Vec<PathBuf> = self
            .by_path
            .range(dir.to_owned()..)
            .take_while(|(path, _)| path.starts_with(dir))
            .map(|(path, _)| path.clone())
            .collect();
        let mut removed = Vec::with_capacity(below.len());
        for path in below {
            if let Some(id) = self.by_path.remove(&path) {
                if let Some((_, wd)) = self.by_wd.remove(&id) {
                    removed.push(wd);
                }
                if self.root_wd == Some(id) {
                    self.root_wd = None;
                }
            }
        }
        removed
    }
}

/// One inotify event, owned.
#[derive(Clone, Debug)]
struct RawEvent {
    wd: i32,
    mask: EventMask,
    name: Option<OsString>,
}

/// What one inotify event means for the watcher.
#[derive(Debug, PartialEq)]
enum Action {
    Nothing,
    Report(WatchEvent),
    /// A directory appeared: watch it (recursively), then report it.
    NewDir(PathBuf),
    /// A directory went away: drop its watches, report it removed.
    DirGone(PathBuf),
    /// A file appeared by `IN_CREATE`: report it only if it is already complete.
    Created(PathBuf),
    /// The kernel dropped this watch (`IN_IGNORED`).
    WatchGone(i32),
    /// The root was deleted or moved.
    RootLost,
}

/// Translates one event; pure, so every case is unit-tested.
fn translate(event: &RawEvent, table: &WatchTable, recursive: bool) -> Action {
    let mask = event.mask;
    if mask.contains(EventMask::Q_OVERFLOW) {
        return Action::Report(WatchEvent::Rescan);
    }
    let is_root = table.root_wd == Some(event.wd);
    if mask.contains(EventMask::IGNORED) {
        return if is_root {
            Action::RootLost
        } else {
            Action::WatchGone(event.wd)
        };
    }
    let Some(dir) = table.path(event.wd) else {
        // Events still queued for a watch we removed.
        return Action::Nothing;
    };
    let Some(name) = &event.name else {
        // DELETE_SELF / MOVE_SELF: the parent's event reports subdirectories.
        let self_gone = mask.intersects(EventMask::DELETE_SELF | EventMask::MOVE_SELF);
        return if is_root && self_gone {
            Action::RootLost
        } else {
            Action::Nothing
        };
    };
    let path = dir.join(name);
    let appeared = mask.intersects(EventMask::CREATE | EventMask::MOVED_TO);
    let vanished = mask.intersects(EventMask::DELETE | EventMask::MOVED_FROM);
    if mask.contains(EventMask::ISDIR) {
        return match (appeared, vanished, recursive) {
            (true, _, true) => Action::NewDir(path),
            (true, _, false) => Action::Report(WatchEvent::Changed(path)),
            (_, true, true) => Action::DirGone(path),
            (_, true, false) => Action::Report(WatchEvent::Removed(path)),
            _ => Action::Nothing,
        };
    }
    if vanished {
        Action::Report(WatchEvent::Removed(path))
    } else if mask.contains(EventMask::CREATE) {
        Action::Created(path)
    } else if mask.intersects(EventMask::CLOSE_WRITE | EventMask::MOVED_TO | EventMask::ATTRIB) {
        Action::Report(WatchEvent::Changed(path))
    } else {
        Action::Nothing
    }
}

/// The events of one `wait`, duplicates merged in first-seen order (the last kind wins).
#[derive(Default)]
struct EventBatch {
    events: Vec<WatchEvent>,
    index: HashMap<PathBuf, usize>,
    rescan: bool,
}

impl EventBatch {
    fn push(&mut self, event: WatchEvent) {
        let path = match &event {
            WatchEvent::Rescan => return self.rescan(),
            WatchEvent::Changed(path) | WatchEvent::Removed(path) => path.clone(),
        };
        match self.index.get(&path) {
            Some(&i) => self.events[i] = event,
            None => {
                self.index.insert(path, self.events.len());
                self.events.push(event);
            }
        }
    }

    fn rescan(&mut self) {
        self.rescan = true;
    }

    fn into_events(self) -> Vec<WatchEvent> {
        if self.rescan {
            vec![WatchEvent::Rescan]
        } else {
            self.events
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;
    use std::fs;

    fn raw(wd: i32, mask: EventMask, name: Option<&str>) -> RawEvent {
        RawEvent {
            wd,
            mask,
            name: name.map(OsString::from),
        }
    }

    /// A table with root `/r` (wd 1) and `/r/sub` (wd 2), from a real inotify instance.
    fn table_with(dir: &Path) -> (Inotify, WatchTable) {
        let inotify = Inotify::init().unwrap();
        let mut table = WatchTable::default();
        let sub = dir.join("sub");
        fs::create_dir_all(&sub).unwrap();
        let root_wd = inotify.watches().add(dir, event_mask()).unwrap();
        table.root_wd = Some(table.insert(dir.to_owned(), root_wd));
        let sub_wd = inotify.watches().add(&sub, event_mask()).unwrap();
        table.insert(sub.clone(), sub_wd);
        (inotify, table)
    }

    fn id_of(table: &WatchTable, path: &Path) -> i32 {
        table.by_path[path]
    }

    #[test]
    fn queue_overflow_translates_to_rescan_and_rescan_swallows_the_batch() {
        let dir = tempfile::tempdir().unwrap();
        let (_inotify, table) = table_with(dir.path());
        let action = translate(&raw(-1, EventMask::Q_OVERFLOW, None), &table, true);
        assert_eq!(action, Action::Report(WatchEvent::Rescan));

        let mut batch = EventBatch::default();
        batch.push(WatchEvent::Changed(dir.path().join("a")));
        batch.push(WatchEvent::Rescan);
        batch.push(WatchEvent::Changed(dir.path().join("b")));
        assert_eq!(batch.into_events(), vec![WatchEvent::Rescan]);
    }

    #[test]
    fn translation_of_file_and_directory_events() {
        let dir = tempfile::tempdir().unwrap();
        let (_inotify, table) = table_with(dir.path());
        let root = id_of(&table, dir.path());
        let sub_path = dir.path().join("sub");
        let sub = id_of(&table, &sub_path);
        let cases = [
            (
                raw(sub, EventMask::CLOSE_WRITE, Some("f")),
                Action::Report(WatchEvent::Changed(sub_path.join("f"))),
            ),
            (
                raw(sub, EventMask::ATTRIB, Some("f")),
                Action::Report(WatchEvent::Changed(sub_path.join("f"))),
            ),
            (
                raw(root, EventMask::MOVED_TO, Some("f")),
                Action::Report(WatchEvent::Changed(dir.path().join("f"))),
            ),
            (
                raw(root, EventMask::DELETE, Some("f")),
                Action::Report(WatchEvent::Removed(dir.path().join("f"))),
            ),
            (
                raw(root, EventMask::MOVED_FROM, Some("f")),
                Action::Report(WatchEvent::Removed(dir.path().join("f"))),
            ),
            (
                raw(root, EventMask::CREATE, Some("f")),
                Action::Created(dir.path().join("f")),
            ),
            (
                raw(root, EventMask::CREATE | EventMask::ISDIR, Some("d")),
                Action::NewDir(dir.path().join("d")),
            ),
            (
                raw(root, EventMask::MOVED_TO | EventMask::ISDIR, Some("d")),
                Action::NewDir(dir.path().join("d")),
            ),
            (
                raw(root, EventMask::MOVED_FROM | EventMask::ISDIR, Some("sub")),
                Action::DirGone(sub_path.clone()),
            ),
            (
                raw(root, EventMask::ATTRIB | EventMask::ISDIR, Some("sub")),
                Action::Nothing,
            ),
            (raw(sub, EventMask::DELETE_SELF, None), Action::Nothing),
            (raw(sub, EventMask::IGNORED, None), Action::WatchGone(sub)),
            (raw(root, EventMask::DELETE_SELF, None), Action::RootLost),
            (raw(root, EventMask::MOVE_SELF, None), Action::RootLost),
            (raw(root, EventMask::IGNORED, None), Action::RootLost),
            (raw(9999, EventMask::CLOSE_WRITE, Some("f")), Action::Nothing),
        ];
        for (event, expected) in cases {
            assert_eq!(translate(&event, &table, true), expected, "{event:?}");
        }
        let flat = translate(
            &raw(root, EventMask::MOVED_TO | EventMask::ISDIR, Some("d")),
            &table,
            false,
        );
        assert_eq!(flat, Action::Report(WatchEvent::Changed(dir.path().join("d"))));
    }

    #[test]
    fn duplicate_events_for_one_path_are_merged_and_the_last_kind_wins() {
        let mut batch = EventBatch::default();
        let a = PathBuf::from("/x/a");
        let b = PathBuf::from("/x/b");
        batch.push(WatchEvent::Changed(a.clone()));
        batch.push(WatchEvent::Changed(b.clone()));
        batch.push(WatchEvent::Changed(a.clone()));
        batch.push(WatchEvent::Removed(a.clone()));
        assert_eq!(
            batch.into_events(),
            vec![WatchEvent::Removed(a), WatchEvent::Changed(b)]
        );
    }

    #[test]
    fn removing_a_directory_tree_forgets_exactly_its_watches() {
        let dir = tempfile::tempdir().unwrap();
        for sub in ["a/b/c", "a-b", "ab", "a0"] {
            fs::create_dir_all(dir.path().join(sub)).unwrap();
        }
        let mut watcher = DirWatcher::new(dir.path(), true).unwrap();
        assert_eq!(watcher.watched_dirs(), 7);
        let removed = watcher.table.remove_tree(&dir.path().join("a"));
        assert_eq!(removed.len(), 3);
        let left: HashSet<PathBuf> = watcher.table.by_path.keys().cloned().collect();
        for kept in ["a-b", "ab", "a0"] {
            assert!(left.contains(&dir.path().join(kept)), "{kept} lost");
        }
        assert_eq!(watcher.table.by_wd.len(), 4);
    }

    /// Collects events until `done` says so (or a generous number of empty waits pass).
    fn collect_until(watcher: &mut DirWatcher, mut done: impl FnMut(&[WatchEvent]) -> bool) -> Vec<WatchEvent> {
        let mut all = Vec::new();
        let mut idle = 0;
        while !done(&all) && idle < 20 {
            let events = watcher.wait(Duration::from_millis(250)).unwrap();
            if events.is_empty() {
                idle += 1;
            }
            all.extend(events);
        }
        all
    }

    #[test]
    fn written_renamed_touched_and_deleted_files_are_reported() {
        let dir = tempfile::tempdir().unwrap();
        let mut watcher = DirWatcher::new(dir.path(), true).unwrap();
        let written = dir.path().join("written");
        fs::write(&written, "x").unwrap();
        let events = collect_until(&mut watcher, |e| e.contains(&WatchEvent::Changed(written.clone())));
        assert!(events.contains(&WatchEvent::Changed(written.clone())), "{events:?}");

        let staged = dir.path().join(".staged.tmp");
        let renamed = dir.path().join("renamed");
        fs::write(&staged, "y").unwrap();
        fs::rename(&staged, &renamed).unwrap();
        let events = collect_until(&mut watcher, |e| e.contains(&WatchEvent::Changed(renamed.clone())));
        assert!(events.contains(&WatchEvent::Changed(renamed.clone())), "{events:?}");

        let file = fs::File::options().write(true).open(&written).unwrap();
        file.set_modified(std::time::SystemTime::now() + Duration::from_secs(5))
            .unwrap();
        drop(file);
        let events = collect_until(&mut watcher, |e| e.contains(&WatchEvent::Changed(written.clone())));
        assert!(
            events.contains(&WatchEvent::Changed(written.clone())),
            "touch not seen: {events:?}"
        );

        fs::remove_file(&renamed).unwrap();
        let events = collect_until(&mut watcher, |e| e.contains(&WatchEvent::Removed(renamed.clone())));
        assert!(events.contains(&WatchEvent::Removed(renamed)), "{events:?}");
    }

    #[test]
    fn a_tree_moved_in_at_once_is_watched_and_reported_as_its_top_directory() {
        let outside = tempfile::tempdir().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let staged = outside.path().join("app");
        fs::create_dir_all(staged.join("deep/deeper")).unwrap();
        fs::write(staged.join("deep/deeper/order"), "x").unwrap();
        let mut watcher = DirWatcher::new(dir.path(), true).unwrap();
        let app = dir.path().join("app");
        fs::rename(&staged, &app).unwrap();
        let events = collect_until(&mut watcher, |e| e.contains(&WatchEvent::Changed(app.clone())));
        assert!(events.contains(&WatchEvent::Changed(app.clone())), "{events:?}");
        assert_eq!(watcher.watched_dirs(), 4, "root, app, deep, deeper");

        // The new directories are watched: a file written deep inside is reported.
        let later = app.join("deep/deeper/later");
        fs::write(&later, "y").unwrap();
        let events = collect_until(&mut watcher, |e| e.contains(&WatchEvent::Changed(later.clone())));
        assert!(events.contains(&WatchEvent::Changed(later)), "{events:?}");

        // Moved away: reported removed, watches dropped.
        fs::rename(&app, outside.path().join("gone")).unwrap();
        let events = collect_until(&mut watcher, |e| e.contains(&WatchEvent::Removed(app.clone())));
        assert!(events.contains(&WatchEvent::Removed(app)), "{events:?}");
        assert_eq!(watcher.watched_dirs(), 1);
    }

    #[test]
    fn symlinks_and_hard_links_created_in_place_are_reported() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("target");
        fs::write(&target, "x").unwrap();
        let mut watcher = DirWatcher::new(dir.path(), true).unwrap();
        let symlink = dir.path().join("symlink");
        let hardlink = dir.path().join("hardlink");
        std::os::unix::fs::symlink(&target, &symlink).unwrap();
        fs::hard_link(&target, &hardlink).unwrap();
        let wanted = [WatchEvent::Changed(symlink), WatchEvent::Changed(hardlink)];
        let events = collect_until(&mut watcher, |e| wanted.iter().all(|w| e.contains(w)));
        for w in &wanted {
            assert!(events.contains(w), "{w:?} missing from {events:?}");
        }
    }

    #[test]
    fn deleted_root_gives_rescan_and_a_recreated_root_is_watched_again() {
        let parent = tempfile::tempdir().unwrap();
        let root = parent.path().join("orders");
        fs::create_dir(&root).unwrap();
        let mut watcher = DirWatcher::new(&root, true).unwrap();
        fs::remove_dir(&root).unwrap();
        let events = collect_until(&mut watcher, |e| e.contains(&WatchEvent::Rescan));
        assert!(events.contains(&WatchEvent::Rescan), "{events:?}");

        fs::create_dir(&root).unwrap();
        let events = collect_until(&mut watcher, |e| e.contains(&WatchEvent::Rescan));
        assert!(events.contains(&WatchEvent::Rescan), "{events:?}");
        let file = root.join("new");
        fs::write(&file, "x").unwrap();
        let events = collect_until(&mut watcher, |e| e.contains(&WatchEvent::Changed(file.clone())));
        assert!(events.contains(&WatchEvent::Changed(file)), "{events:?}");
    }

    #[test]
    fn wait_returns_nothing_on_timeout_and_new_fails_for_a_missing_root() {
        let dir = tempfile::tempdir().unwrap();
        let mut watcher = DirWatcher::new(dir.path(), false).unwrap();
        assert!(watcher.wait(Duration::from_millis(10)).unwrap().is_empty());
        let missing = dir.path().join("missing");
        assert!(matches!(
            DirWatcher::new(&missing, true),
            Err(WatchError::WatchRoot { .. })
        ));
    }
}
