//! Moving the output of orders that are gone into `archive/`, bringing it back, and purging it.
//!
//! Owns `archive/<id>/` (the former `output/<id>/`, plus `order.expired`, the order file of an
//! order that expired) and moves directories between `output/` and `archive/`.
//!
//! - [`archive`] moves `output/<id>` to `archive/<id>`; an expired order's file goes to
//!   `archive/<id>/order.expired` (the entry is created even without output). Only a regular
//!   file or a symlink is moved: a directory (or FIFO, device) a producer put in its place is
//!   left in `orders/` and reported, so nothing producer-writable enters `archive/`.
//! - [`restore`] moves `archive/<id>` back when the order (re)appears.
//! - [`purge`] deletes entries whose directory mtime is older than a retention (off unless the
//!   caller asks).
//!
//! Invariants: nothing is ever overwritten. When the destination already exists, the older
//! archive entry is renamed aside to `archive/<id>.<unix seconds>` (then `...-1`, `-2` if that
//! name is taken) and both are kept. Every rename is followed by an fsync of the directories it
//! changed. Parent directories that a move leaves empty in `output/` (or `archive/` on restore)
//! are removed with `rmdir`, never recursively. Purge deletes only the plain files of an entry
//! and then `rmdir`s it, so nested entries below an old entry survive if they are young.

use crate::shared::measurement::OrderId;
use crate::spool::beneath::{Dir, Kind};
use crate::spool::BaseDir;
use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tracing::{info, warn};

/// Name of an expired order's file inside its archive entry.
pub const EXPIRED_ORDER_FILE: &str = "order.expired";

/// Files whose presence makes a directory of `archive/` an entry (rather than a parent of ones).
const ENTRY_MARKERS: [&str; 3] = ["main.rrd", "last_result", EXPIRED_ORDER_FILE];

/// What [`archive`] did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ArchiveOutcome {
    /// `output/<id>` existed and now is `archive/<id>`.
    pub output_moved: bool,
    /// The expired order file is now `archive/<id>/order.expired`.
    pub order_file_moved: bool,
    /// An older `archive/<id>` that was in the way, renamed to this path.
    pub previous_archive_aside: Option<PathBuf>,
}

/// What [`restore`] did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RestoreOutcome {
    /// `archive/<id>` is `output/<id>` again.
    Restored,
    /// Both existed: the archive entry was renamed to this path and `output/<id>` kept.
    BothKept { archive_aside: PathBuf },
    /// There was nothing in the archive for this id.
    NothingArchived,
}

/// A filesystem operation of the archive that failed, naming the path(s) involved.
#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    #[error("creating directory {path}: {source}")]
    CreateDir { path: PathBuf, source: io::Error },
    #[error("moving {from} to {to}: {source}")]
    Move {
        from: PathBuf,
        to: PathBuf,
        source: io::Error,
    },
    #[error("syncing directory {path}: {source}")]
    Sync { path: PathBuf, source: io::Error },
    #[error("inspecting {path}: {source}")]
    Inspect { path: PathBuf, source: io::Error },
    #[error("removing {path}: {source}")]
    Remove { path: PathBuf, source: io::Error },
    /// The expired order file is not a regular file or a symlink (a producer swapped it for a
    /// directory, a FIFO, ...): it is left where it is, never moved into `archive/`.
    #[error("expired order file {path} is {found}, not a regular file or a symlink: left in place, not archived")]
    NotAnOrderFile { path: PathBuf, found: &'static str },
}

/// Moves `output/<id>` (if any) to `archive/<id>`, and the expired order file (if given, a path
/// below `orders/`) to `archive/<id>/order.expired`.
///
/// Only a regular file or a symlink (moved as the link itself) is taken from `orders/`: anything
/// else there is the producer's (a directory they own would become producer-writable inside
/// `archive/`, and inside `output/` after a restore). It is left in place and the output is
/// still archived; the error [`ArchiveError::NotAnOrderFile`] names it.
///
/// Every directory on the way is opened from the base's descriptor without following links
/// (`spool::beneath`): an order producer who swaps a directory of `orders/` for a symlink
/// between the expiry and the move cannot make spoolmon move a file from outside the base.
pub fn archive(
    base: &BaseDir,
    id: &OrderId,
    expired_order_file: Option<&Path>,
) -> Result<ArchiveOutcome, ArchiveError> {
    let output_path = base.output().join(id.as_path());
    let entry_path = base.archive().join(id.as_path());
    let output_root = layout_dir(base, "output")?;
    let archive_root = layout_dir(base, "archive")?;
    let (parent_rel, name) = split_id(id);
    let output_parent = open_existing(&output_root, parent_rel, &output_path)?;
    let has_output = match &output_parent {
        Some(parent) => parent.kind(name).map_err(|e| inspect_error(&output_path, e))? == Some(Kind::Dir),
        None => false,
    };
    let mut outcome = ArchiveOutcome::default();
    // What is wrong with the order file does not keep the output from being archived.
    let (order_file, refused) = match expired_order_file.map(|path| (path, expired_file(base, path, &entry_path))) {
        None => (None, None),
        Some((_, Ok((parent, name, Some(Kind::File | Kind::Symlink))))) => (Some((parent, name)), None),
        Some((path, Ok((_, _, found)))) => (
            None,
            Some(ArchiveError::NotAnOrderFile {
                path: path.to_path_buf(),
                found: match found {
                    None => "gone",
                    Some(Kind::Dir) => "a directory",
                    Some(_) => "a FIFO, socket or device",
                },
            }),
        ),
        Some((_, Err(e))) => (None, Some(e)),
    };
    if !has_output && order_file.is_none() {
        return refused.map_or(Ok(outcome), Err);
    }
    let archive_parent = archive_root
        .create_dir_all(parent_rel)
        .map_err(|source| ArchiveError::CreateDir {
            path: parent_of(&entry_path).to_path_buf(),
            source,
        })?;
    if archive_parent
        .kind(name)
        .map_err(|e| inspect_error(&entry_path, e))?
        .is_some()
    {
        let aside = move_aside(&archive_parent, name)?;
        info!(id = %id, aside = %aside.display(), "older archive entry renamed aside");
        outcome.previous_archive_aside = Some(aside);
    }
    match (has_output, &output_parent) {
        (true, Some(output_parent)) => {
            move_and_sync(output_parent, name, &archive_parent, name)?;
            remove_empty_parents(&output_root, parent_rel);
            outcome.output_moved = true;
            info!(id = %id, "output archived");
        }
        _ => {
            archive_parent.mkdir(name).map_err(|source| ArchiveError::CreateDir {
                path: entry_path.clone(),
                source,
            })?;
            sync(&archive_parent)?;
        }
    }
    if let (Some((order_parent, order_name)), Some(order_file)) = (order_file, expired_order_file) {
        let entry = archive_parent
            .open_dir(name)
            .map_err(|e| inspect_error(&entry_path, e))?;
        if entry
            .kind(EXPIRED_ORDER_FILE)
            .map_err(|e| inspect_error(&entry_path, e))?
            .is_some()
        {
            // An order file from an earlier expiry came back with a restored entry: keep it.
            move_aside(&entry, EXPIRED_ORDER_FILE)?;
        }
        move_and_sync(&order_parent, &order_name, &entry, EXPIRED_ORDER_FILE)?;
        // Swapped for a directory between the check and the move: it goes back, not archived.
        let moved = entry
            .kind(EXPIRED_ORDER_FILE)
            .map_err(|e| inspect_error(&entry_path, e))?;
        if !matches!(moved, Some(Kind::File | Kind::Symlink)) {
            move_and_sync(&entry, EXPIRED_ORDER_FILE, &order_parent, &order_name)?;
            return Err(ArchiveError::NotAnOrderFile {
                path: order_file.to_path_buf(),
                found: "not a regular file or a symlink when moved",
            });
        }
        outcome.order_file_moved = true;
        info!(id = %id, file = %order_file.display(), "expired order file archived");
    }
    match refused {
        Some(refused) => Err(refused),
        None => Ok(outcome),
    }
}

/// The directory of an expired order file below `orders/` (opened without links), its name, and
/// what the entry is there (not followed).
fn expired_file(
    base: &BaseDir,
    order_file: &Path,
    entry_path: &Path,
) -> Result<(Dir, String, Option<Kind>), ArchiveError> {
    let rel = order_file.strip_prefix(base.orders()).map_err(|_| ArchiveError::Move {
        from: order_file.to_path_buf(),
        to: entry_path.join(EXPIRED_ORDER_FILE),
        source: io::Error::new(io::ErrorKind::InvalidInput, "the order file is not below orders/"),
    })?;
    let (order_parent_rel, order_name) = split_path(rel).ok_or_else(|| ArchiveError::Move {
        from: order_file.to_path_buf(),
        to: entry_path.join(EXPIRED_ORDER_FILE),
        source: io::Error::new(io::ErrorKind::InvalidInput, "not a file name"),
    })?;
    let order_parent = layout_dir(base, "orders")?
        .open_dir(order_parent_rel)
        .map_err(|e| inspect_error(order_file, e))?;
    let kind = order_parent
        .kind(&order_name)
        .map_err(|e| inspect_error(order_file, e))?;
    Ok((order_parent, order_name, kind))
}

/// Brings `archive/<id>` back to `output/<id>` when the order (re)appears.
pub fn restore(base: &BaseDir, id: &OrderId) -> Result<RestoreOutcome, ArchiveError> {
    let entry_path = base.archive().join(id.as_path());
    let output_path = base.output().join(id.as_path());
    let archive_root = layout_dir(base, "archive")?;
    let output_root = layout_dir(base, "output")?;
    let (parent_rel, name) = split_id(id);
    let Some(archive_parent) = open_existing(&archive_root, parent_rel, &entry_path)? else {
        return Ok(RestoreOutcome::NothingArchived);
    };
    if archive_parent
        .kind(name)
        .map_err(|e| inspect_error(&entry_path, e))?
        .is_none()
    {
        return Ok(RestoreOutcome::NothingArchived);
    }
    let output_exists = match open_existing(&output_root, parent_rel, &output_path)? {
        Some(parent) => parent.kind(name).map_err(|e| inspect_error(&output_path, e))?.is_some(),
        None => false,
    };
    if output_exists {
        let aside = move_aside(&archive_parent, name)?;
        remove_empty_parents(&archive_root, parent_rel);
        warn!(
            id = %id,
            aside = %aside.display(),
            "both output and archive exist for a returning order; archive entry renamed aside, both kept"
        );
        return Ok(RestoreOutcome::BothKept { archive_aside: aside });
    }
    let output_parent = output_root
        .create_dir_all(parent_rel)
        .map_err(|source| ArchiveError::CreateDir {
            path: parent_of(&output_path).to_path_buf(),
            source,
        })?;
    move_and_sync(&archive_parent, name, &output_parent, name)?;
    remove_empty_parents(&archive_root, parent_rel);
    info!(id = %id, "archived output restored");
    Ok(RestoreOutcome::Restored)
}

/// Deletes archive entries whose directory mtime is more than `retention` before `now`; returns
/// how many entries were purged.
pub fn purge(base: &BaseDir, retention: Duration, now: SystemTime) -> Result<usize, ArchiveError> {
    let root = match base.dir("archive") {
        Ok(root) => root,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(inspect_error(&base.archive(), e)),
    };
    let cutoff = now.checked_sub(retention).unwrap_or(UNIX_EPOCH);
    let purged = purge_below(&root, cutoff)?;
    if purged > 0 {
        info!(purged, "old archive entries purged");
    }
    Ok(purged)
}

/// One entry of `archive/` (the API's archive listing).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct ArchivedEntry {
    /// The order id (its path below `archive/`; a renamed-aside entry keeps its `.<unix time>`).
    pub id: String,
    /// The entry directory's mtime, unix seconds: when it was archived (what purge goes by).
    pub archived: i64,
    pub has_rrd: bool,
    pub has_last_result: bool,
    /// Whether the order expired (its file is `order.expired` in the entry).
    pub expired: bool,
}

/// How deep [`entries`] looks below `archive/` (the order book reads no deeper ids; nodes'
/// `@<node>/` add one level).
const MAX_LISTING_DEPTH: usize = crate::orders::book::MAX_DEPTH + 1;

/// Every entry below `archive/`, in id order; none when there is no `archive/`. Reads by
/// descriptor, never through a symlink.
pub fn entries(base: &BaseDir) -> Result<Vec<ArchivedEntry>, ArchiveError> {
    let root = match base.dir("archive") {
        Ok(root) => root,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(inspect_error(&base.archive(), e)),
    };
    entries_below(&root)
}

/// The order directories below `root` (`archive/`, or `output/` for `spoolmon backfill`): those
/// holding a `main.rrd`, `last_result` or expiry marker, in id order, depth-bounded, read by
/// descriptor, never through a symlink.
pub fn entries_below(root: &Dir) -> Result<Vec<ArchivedEntry>, ArchiveError> {
    let mut found = Vec::new();
    list_tree(root, "", 0, &mut found)?;
    found.sort_by(|a, b| a.id.cmp(&b.id));
    Ok(found)
}

fn list_tree(dir: &Dir, prefix: &str, depth: usize, found: &mut Vec<ArchivedEntry>) -> Result<(), ArchiveError> {
    let mut files = Vec::new();
    let mut subdirs = Vec::new();
    for (name, kind) in dir.entries().map_err(|e| inspect_error(dir.path(), e))? {
        let name = name.to_string_lossy().into_owned();
        match kind {
            Kind::Dir => subdirs.push(name),
            _ => files.push(name),
        }
    }
    let has = |name: &str| files.iter().any(|f| f == name);
    if !prefix.is_empty() && ENTRY_MARKERS.iter().any(|m| has(m)) {
        let stat = nix::sys::stat::fstat(dir.as_fd()).map_err(|e| inspect_error(dir.path(), e.into()))?;
        found.push(ArchivedEntry {
            id: prefix.to_owned(),
            archived: stat.st_mtime,
            has_rrd: has("main.rrd"),
            has_last_result: has("last_result"),
            expired: has(EXPIRED_ORDER_FILE),
        });
    }
    if depth >= MAX_LISTING_DEPTH {
        return Ok(());
    }
    for name in subdirs {
        let sub = dir
            .open_dir(&name)
            .map_err(|e| inspect_error(&dir.path().join(&name), e))?;
        let id = if prefix.is_empty() {
            name
        } else {
            format!("{prefix}/{name}")
        };
        list_tree(&sub, &id, depth + 1, found)?;
    }
    Ok(())
}

/// Opens a layout directory (`output`, `archive`, `orders`) from the base's descriptor.
fn layout_dir(base: &BaseDir, name: &str) -> Result<Dir, ArchiveError> {
    base.dir(name).map_err(|e| inspect_error(&base.root().join(name), e))
}

/// `(parent, last component)` of an order id (`app/db/1` -> `("app/db", "1")`).
fn split_id(id: &OrderId) -> (&Path, &str) {
    let text = id.as_str();
    match text.rsplit_once('/') {
        Some((parent, name)) => (Path::new(parent), name),
        None => (Path::new(""), text),
    }
}

fn split_path(path: &Path) -> Option<(&Path, String)> {
    let name = path.file_name()?.to_str()?.to_owned();
    Some((path.parent().unwrap_or(Path::new("")), name))
}

/// The directory `rel` below `root` if it exists (never through a link); `None` if missing.
fn open_existing(root: &Dir, rel: &Path, for_path: &Path) -> Result<Option<Dir>, ArchiveError> {
    match root.open_dir(rel) {
        Ok(dir) => Ok(Some(dir)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(inspect_error(for_path, e)),
    }
}

/// Renames `parent/name` to `<name>.<unix now>` (or a free variant) and syncs `parent`.
fn move_aside(parent: &Dir, name: &str) -> Result<PathBuf, ArchiveError> {
    let stem = format!("{name}.{}", crate::shared::clock::unix_now());
    for attempt in 0u32..1000 {
        let aside = match attempt {
            0 => stem.clone(),
            n => format!("{stem}-{n}"),
        };
        match parent.rename_noreplace(name, parent, &aside) {
            Ok(()) => {
                sync(parent)?;
                return Ok(parent.path().join(aside));
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(source) => {
                return Err(ArchiveError::Move {
                    from: parent.path().join(name),
                    to: parent.path().join(aside),
                    source,
                })
            }
        }
    }
    Err(ArchiveError::Move {
        from: parent.path().join(name),
        to: parent.path().join(stem),
        source: io::Error::from(io::ErrorKind::AlreadyExists),
    })
}

fn move_and_sync(from_dir: &Dir, from: &str, to_dir: &Dir, to: &str) -> Result<(), ArchiveError> {
    from_dir
        .rename_noreplace(from, to_dir, to)
        .map_err(|source| ArchiveError::Move {
            from: from_dir.path().join(from),
            to: to_dir.path().join(to),
            source,
        })?;
    sync(from_dir)?;
    if from_dir.path() != to_dir.path() {
        sync(to_dir)?;
    }
    Ok(())
}

/// Removes the now-empty directories of `rel` below `root`, deepest first, stopping at the
/// first one that is not empty (or cannot be opened without following a link).
fn remove_empty_parents(root: &Dir, rel: &Path) {
    let parts: Vec<&std::ffi::OsStr> = rel.iter().collect();
    for depth in (1..=parts.len()).rev() {
        let parent: PathBuf = parts[..depth - 1].iter().collect();
        let Some(name) = parts[depth - 1].to_str() else { break };
        let removed = root.open_dir(&parent).and_then(|dir| dir.rmdir(name));
        if removed.is_err() {
            break;
        }
    }
}

/// Purges the entries at or below `dir`; `dir` itself only if it is not the archive root.
fn purge_below(dir: &Dir, cutoff: SystemTime) -> Result<usize, ArchiveError> {
    purge_tree(None, dir, cutoff)
}

/// Purges below `dir` (the entry `name` of `parent`, or the root when `parent` is `None`).
/// Descends by descriptor: a symlink is a plain child, never followed.
fn purge_tree(parent: Option<(&Dir, &str)>, dir: &Dir, cutoff: SystemTime) -> Result<usize, ArchiveError> {
    // Read the mtime first: purging children below changes it.
    let stat = nix::sys::stat::fstat(dir.as_fd()).map_err(|e| inspect_error(dir.path(), e.into()))?;
    let modified = UNIX_EPOCH
        + Duration::new(
            stat.st_mtime.max(0) as u64,
            stat.st_mtime_nsec.clamp(0, 999_999_999) as u32,
        );
    let mut subdirs = Vec::new();
    let mut files = Vec::new();
    for (name, kind) in dir.entries().map_err(|e| inspect_error(dir.path(), e))? {
        let name = name.to_string_lossy().into_owned();
        if kind == Kind::Dir {
            subdirs.push(name);
        } else {
            files.push(name);
        }
    }
    let mut purged = 0;
    for name in &subdirs {
        let sub = dir
            .open_dir(name)
            .map_err(|e| inspect_error(&dir.path().join(name), e))?;
        purged += purge_tree(Some((dir, name)), &sub, cutoff)?;
    }
    let Some((parent, name)) = parent else {
        return Ok(purged);
    };
    let is_entry = files.iter().any(|f| ENTRY_MARKERS.contains(&f.as_str()));
    if is_entry && modified < cutoff {
        for file in &files {
            dir.unlink(file).map_err(|source| ArchiveError::Remove {
                path: dir.path().join(file),
                source,
            })?;
        }
        // Fails (and keeps the directory) when young nested entries remain below it.
        let _ = parent.rmdir(name);
        purged += 1;
    } else if purged > 0 && files.is_empty() {
        // A parent that held only purged entries.
        let _ = parent.rmdir(name);
    }
    Ok(purged)
}

fn sync(dir: &Dir) -> Result<(), ArchiveError> {
    dir.sync().map_err(|source| ArchiveError::Sync {
        path: dir.path().to_path_buf(),
        source,
    })
}

fn parent_of(path: &Path) -> &Path {
    path.parent().unwrap_or(Path::new("/"))
}

fn inspect_error(path: &Path, source: io::Error) -> ArchiveError {
    ArchiveError::Inspect {
        path: path.to_path_buf(),
        source,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs::{self, File};

    fn setup() -> (tempfile::TempDir, BaseDir) {
        let tmp = tempfile::tempdir().unwrap();
        let base = BaseDir::new(tmp.path());
        base.create_all().unwrap();
        (tmp, base)
    }

    fn id(s: &str) -> OrderId {
        OrderId::new(s).unwrap()
    }

    fn make_output(base: &BaseDir, id: &OrderId, content: &str) -> PathBuf {
        let dir = base.output().join(id.as_path());
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join("last_result"), content).unwrap();
        dir
    }

    use crate::spool::beneath::sorted_names as names;

    fn set_mtime(path: &Path, time: SystemTime) {
        File::open(path).unwrap().set_modified(time).unwrap();
    }

    #[test]
    fn an_expired_order_file_swapped_for_a_directory_is_left_in_place_and_the_output_archived() {
        let (_tmp, base) = setup();
        let gone = id("app/gone");
        make_output(&base, &gone, "one");
        // The producer's directory (a file inside it) where the order file was.
        let planted = base.orders().join("app/gone.yaml");
        fs::create_dir_all(&planted).unwrap();
        fs::write(planted.join("theirs"), b"x").unwrap();
        let err = archive(&base, &gone, Some(&planted)).unwrap_err();
        assert!(
            matches!(&err, ArchiveError::NotAnOrderFile { path, found: "a directory" } if *path == planted),
            "{err}"
        );
        assert!(
            err.to_string().contains(&planted.display().to_string()),
            "names the path: {err}"
        );
        assert!(planted.join("theirs").is_file(), "left where it was");
        let entry = base.archive().join("app/gone");
        assert_eq!(names(&entry), ["last_result"], "output archived, nothing of theirs");
        // Without output, no archive entry is made for it either.
        let other = id("other");
        let planted = base.orders().join("other.yaml");
        fs::create_dir(&planted).unwrap();
        assert!(matches!(
            archive(&base, &other, Some(&planted)),
            Err(ArchiveError::NotAnOrderFile { .. })
        ));
        assert!(!base.archive().join("other").exists());
        // A symlink is moved as the link itself.
        let linked = id("linked");
        let link = base.orders().join("linked.yaml");
        std::os::unix::fs::symlink("/etc/hostname", &link).unwrap();
        let outcome = archive(&base, &linked, Some(&link)).unwrap();
        assert!(outcome.order_file_moved);
        let moved = base.archive().join("linked").join(EXPIRED_ORDER_FILE);
        assert!(fs::symlink_metadata(moved).unwrap().file_type().is_symlink());
    }

    #[test]
    fn nested_output_is_archived_and_empty_output_parents_are_removed() {
        let (_tmp, base) = setup();
        let target = id("app1/sub/target");
        make_output(&base, &target, "one");
        make_output(&base, &id("app1/other"), "keep");
        let outcome = archive(&base, &target, None).unwrap();
        assert!(outcome.output_moved && !outcome.order_file_moved);
        let archived = base.archive().join("app1/sub/target/last_result");
        assert_eq!(fs::read_to_string(archived).unwrap(), "one");
        assert!(!base.output().join("app1/sub").exists());
        assert!(base.output().join("app1/other/last_result").exists());
        assert!(base.output().exists());
    }

    #[test]
    fn expired_order_file_is_archived_even_without_output() {
        let (_tmp, base) = setup();
        let target = id("app1/expired");
        let order_file = base.orders().join("app1/expired");
        fs::create_dir_all(order_file.parent().unwrap()).unwrap();
        fs::write(&order_file, "user: x\n").unwrap();
        let outcome = archive(&base, &target, Some(&order_file)).unwrap();
        assert!(!outcome.output_moved && outcome.order_file_moved);
        assert!(!order_file.exists());
        let kept = base.archive().join("app1/expired").join(EXPIRED_ORDER_FILE);
        assert_eq!(fs::read_to_string(kept).unwrap(), "user: x\n");
    }

    #[test]
    fn an_orders_directory_swapped_for_a_symlink_cannot_bring_an_outside_file_into_the_archive() {
        let (tmp, base) = setup();
        let outside = tmp.path().join("etc");
        fs::create_dir(&outside).unwrap();
        fs::write(outside.join("passwd"), "root:x:0:0\n").unwrap();
        // The producer's order `app/passwd` expired; before the move, `orders/app` becomes a
        // link to a directory outside the base holding a file of that name.
        std::os::unix::fs::symlink(&outside, base.orders().join("app")).unwrap();
        let err = archive(&base, &id("app/passwd"), Some(&base.orders().join("app/passwd"))).unwrap_err();
        assert!(err.to_string().contains("symbolic link"), "{err}");
        assert_eq!(fs::read_to_string(outside.join("passwd")).unwrap(), "root:x:0:0\n");
        // And a link inside output/ or archive/ is never followed either.
        std::os::unix::fs::symlink(&outside, base.output().join("lb")).unwrap();
        assert!(archive(&base, &id("lb/passwd"), None).is_err());
        std::os::unix::fs::symlink(&outside, base.archive().join("db")).unwrap();
        assert!(restore(&base, &id("db/passwd")).is_err());
        assert_eq!(names(&outside), ["passwd"]);
    }

    #[test]
    fn expired_order_with_output_carries_both() {
        let (_tmp, base) = setup();
        let target = id("t");
        make_output(&base, &target, "data");
        let order_file = base.orders().join("t");
        fs::write(&order_file, "user: x\n").unwrap();
        archive(&base, &target, Some(&order_file)).unwrap();
        assert_eq!(
            names(&base.archive().join("t")),
            vec!["last_result", EXPIRED_ORDER_FILE]
        );
    }

    #[test]
    fn second_expiry_keeps_the_earlier_expired_order_file() {
        let (_tmp, base) = setup();
        let target = id("t");
        let order_file = base.orders().join("t");
        fs::write(&order_file, "first\n").unwrap();
        archive(&base, &target, Some(&order_file)).unwrap();
        restore(&base, &target).unwrap();
        fs::write(&order_file, "second\n").unwrap();
        archive(&base, &target, Some(&order_file)).unwrap();
        let entry = base.archive().join("t");
        assert_eq!(fs::read_to_string(entry.join(EXPIRED_ORDER_FILE)).unwrap(), "second\n");
        let kept = names(&entry);
        assert_eq!(kept.len(), 2, "{kept:?}");
        let earlier = kept.iter().find(|n| *n != EXPIRED_ORDER_FILE).unwrap();
        assert_eq!(fs::read_to_string(entry.join(earlier)).unwrap(), "first\n");
    }

    #[test]
    fn archiving_twice_keeps_the_older_entry_aside() {
        let (_tmp, base) = setup();
        let target = id("app/t");
        make_output(&base, &target, "first");
        archive(&base, &target, None).unwrap();
        make_output(&base, &target, "second");
        let outcome = archive(&base, &target, None).unwrap();
        let aside = outcome.previous_archive_aside.expect("older entry aside");
        assert_eq!(fs::read_to_string(aside.join("last_result")).unwrap(), "first");
        assert_eq!(
            fs::read_to_string(base.archive().join("app/t/last_result")).unwrap(),
            "second"
        );
        // A third time within the same second must not clobber the first aside entry.
        make_output(&base, &target, "third");
        let third = archive(&base, &target, None).unwrap();
        let aside2 = third.previous_archive_aside.unwrap();
        assert_ne!(aside, aside2);
        assert_eq!(names(&base.archive().join("app")).len(), 3);
    }

    #[test]
    fn archiving_an_id_without_output_does_nothing() {
        let (_tmp, base) = setup();
        let outcome = archive(&base, &id("never/ran"), None).unwrap();
        assert_eq!(outcome, ArchiveOutcome::default());
        assert!(names(&base.archive()).is_empty());
    }

    #[test]
    fn restore_brings_the_archive_back_and_removes_empty_archive_parents() {
        let (_tmp, base) = setup();
        let target = id("a/b/c");
        make_output(&base, &target, "data");
        archive(&base, &target, None).unwrap();
        assert_eq!(restore(&base, &target).unwrap(), RestoreOutcome::Restored);
        assert_eq!(
            fs::read_to_string(base.output().join("a/b/c/last_result")).unwrap(),
            "data"
        );
        assert!(names(&base.archive()).is_empty());
    }

    #[test]
    fn restore_with_both_present_keeps_both() {
        let (_tmp, base) = setup();
        let target = id("x/y");
        make_output(&base, &target, "old");
        archive(&base, &target, None).unwrap();
        make_output(&base, &target, "new");
        let RestoreOutcome::BothKept { archive_aside } = restore(&base, &target).unwrap() else {
            panic!("expected both kept");
        };
        assert_eq!(fs::read_to_string(archive_aside.join("last_result")).unwrap(), "old");
        assert_eq!(
            fs::read_to_string(base.output().join("x/y/last_result")).unwrap(),
            "new"
        );
        assert!(!base.archive().join("x/y").exists());
    }

    #[test]
    fn restore_without_archive_does_nothing() {
        let (_tmp, base) = setup();
        assert_eq!(restore(&base, &id("nothing")).unwrap(), RestoreOutcome::NothingArchived);
    }

    #[test]
    fn purge_removes_old_entries_and_keeps_young_ones_and_nested_siblings() {
        let (_tmp, base) = setup();
        let now = SystemTime::now();
        let old = now - Duration::from_secs(40 * 86400);
        for (name, marker) in [
            ("app/old", "main.rrd"),
            ("app/young", "last_result"),
            ("app/old/nested-young", "order.expired"),
            ("gone/deep/old2", "last_result"),
        ] {
            let dir = base.archive().join(name);
            fs::create_dir_all(&dir).unwrap();
            fs::write(dir.join(marker), "x").unwrap();
            fs::write(dir.join("main-1-step20-pings3.rrd"), "x").unwrap();
        }
        fs::create_dir_all(base.archive().join("app/empty-intermediate")).unwrap();
        for name in ["app/old", "gone/deep/old2", "app", "gone/deep", "gone"] {
            set_mtime(&base.archive().join(name), old);
        }
        let purged = purge(&base, Duration::from_secs(30 * 86400), now).unwrap();
        assert_eq!(purged, 2);
        assert_eq!(
            names(&base.archive().join("app/old")),
            vec!["nested-young"],
            "old entry's files gone, young nested entry kept"
        );
        assert!(base.archive().join("app/old/nested-young/order.expired").exists());
        assert!(base.archive().join("app/young/last_result").exists());
        assert!(base.archive().join("app/empty-intermediate").exists());
        assert!(!base.archive().join("gone").exists());
    }

    #[test]
    fn purge_never_follows_symlinks_out_of_the_archive() {
        let (tmp, base) = setup();
        let outside = tmp.path().join("precious");
        fs::create_dir_all(&outside).unwrap();
        fs::write(outside.join("main.rrd"), "keep").unwrap();
        let entry = base.archive().join("e");
        fs::create_dir_all(&entry).unwrap();
        fs::write(entry.join("last_result"), "x").unwrap();
        std::os::unix::fs::symlink(&outside, entry.join("link")).unwrap();
        std::os::unix::fs::symlink(&outside, base.archive().join("toplink")).unwrap();
        let later = SystemTime::now() + Duration::from_secs(365 * 86400);
        assert_eq!(purge(&base, Duration::from_secs(1), later).unwrap(), 1);
        assert!(outside.join("main.rrd").exists());
        assert!(!entry.exists());
    }
}
