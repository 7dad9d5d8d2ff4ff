//! Moving the output of orders that are gone into `archive/`, bringing it back, and purging it.
//!
//! Owns `archive/<id>/` (the former `output/<id>/`, plus `order.expired`, the order file of an
//! order that expired) and moves directories between `output/` and `archive/`.
//!
//! - [`archive`] moves `output/<id>` to `archive/<id>`; an expired order's file goes to
//!   `archive/<id>/order.expired` (the entry is created even without output).
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

use crate::measurement::OrderId;
use crate::spool::atomic::sync_dir;
use crate::spool::BaseDir;
use std::fs;
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
}

/// Moves `output/<id>` (if any) to `archive/<id>`, and the expired order file (if given) to
/// `archive/<id>/order.expired`.
pub fn archive(
    base: &BaseDir,
    id: &OrderId,
    expired_order_file: Option<&Path>,
) -> Result<ArchiveOutcome, ArchiveError> {
    let output_root = base.output();
    let output = output_root.join(id.as_path());
    let entry = base.archive().join(id.as_path());
    let has_output = is_dir(&output)?;
    let mut outcome = ArchiveOutcome::default();
    if !has_output && expired_order_file.is_none() {
        return Ok(outcome);
    }
    if exists(&entry)? {
        let aside = move_aside(&entry)?;
        info!(id = %id, aside = %aside.display(), "older archive entry renamed aside");
        outcome.previous_archive_aside = Some(aside);
    }
    create_parent(&entry)?;
    if has_output {
        move_and_sync(&output, &entry)?;
        remove_empty_parents(&output, &output_root);
        outcome.output_moved = true;
        info!(id = %id, "output archived");
    } else {
        fs::create_dir(&entry).map_err(|source| ArchiveError::CreateDir {
            path: entry.clone(),
            source,
        })?;
        sync(parent_of(&entry))?;
    }
    if let Some(order_file) = expired_order_file {
        let target = entry.join(EXPIRED_ORDER_FILE);
        if exists(&target)? {
            // An order file from an earlier expiry came back with a restored entry: keep it.
            move_aside(&target)?;
        }
        move_and_sync(order_file, &target)?;
        outcome.order_file_moved = true;
        info!(id = %id, file = %order_file.display(), "expired order file archived");
    }
    Ok(outcome)
}

/// Brings `archive/<id>` back to `output/<id>` when the order (re)appears.
pub fn restore(base: &BaseDir, id: &OrderId) -> Result<RestoreOutcome, ArchiveError> {
    let archive_root = base.archive();
    let entry = archive_root.join(id.as_path());
    let output = base.output().join(id.as_path());
    if !exists(&entry)? {
        return Ok(RestoreOutcome::NothingArchived);
    }
    if exists(&output)? {
        let aside = move_aside(&entry)?;
        remove_empty_parents(&entry, &archive_root);
        warn!(
            id = %id,
            aside = %aside.display(),
            "both output and archive exist for a returning order; archive entry renamed aside, both kept"
        );
        return Ok(RestoreOutcome::BothKept { archive_aside: aside });
    }
    create_parent(&output)?;
    move_and_sync(&entry, &output)?;
    remove_empty_parents(&entry, &archive_root);
    info!(id = %id, "archived output restored");
    Ok(RestoreOutcome::Restored)
}

/// Deletes archive entries whose directory mtime is more than `retention` before `now`; returns
/// how many entries were purged.
pub fn purge(base: &BaseDir, retention: Duration, now: SystemTime) -> Result<usize, ArchiveError> {
    let root = base.archive();
    if !exists(&root)? {
        return Ok(0);
    }
    let cutoff = now.checked_sub(retention).unwrap_or(UNIX_EPOCH);
    let purged = purge_below(&root, cutoff)?;
    if purged > 0 {
        info!(purged, "old archive entries purged");
    }
    Ok(purged)
}

/// Renames `from` to `dir/<stem><extension>`, or `dir/<stem>-1<extension>`, `-2`, ... whichever
/// is free: never replaces an existing file or directory. Returns the new path. The parent
/// directories are not synced.
pub fn rename_to_free_name(from: &Path, dir: &Path, stem: &str, extension: &str) -> io::Result<PathBuf> {
    for attempt in 0u32..1000 {
        let name = match attempt {
            0 => format!("{stem}{extension}"),
            n => format!("{stem}-{n}{extension}"),
        };
        let to = dir.join(name);
        match rename_no_replace(from, &to) {
            Ok(()) => return Ok(to),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        }
    }
    Err(io::Error::new(
        io::ErrorKind::AlreadyExists,
        format!("no free name for {stem}{extension} in {}", dir.display()),
    ))
}

/// Seconds since the epoch, for the names of things renamed aside.
pub fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

fn rename_no_replace(from: &Path, to: &Path) -> io::Result<()> {
    use nix::fcntl::{renameat2, RenameFlags, AT_FDCWD};
    match renameat2(AT_FDCWD, from, AT_FDCWD, to, RenameFlags::RENAME_NOREPLACE) {
        Ok(()) => Ok(()),
        // Filesystems without RENAME_NOREPLACE: check, then rename (one writer per id).
        Err(nix::errno::Errno::EINVAL) => {
            if fs::symlink_metadata(to).is_ok() {
                Err(io::Error::from(io::ErrorKind::AlreadyExists))
            } else {
                fs::rename(from, to)
            }
        }
        Err(errno) => Err(io::Error::from(errno)),
    }
}

/// Renames archive entry `entry` to `<entry>.<unix now>` (or a free variant) and syncs its parent.
fn move_aside(entry: &Path) -> Result<PathBuf, ArchiveError> {
    let dir = parent_of(entry);
    let stem = format!(
        "{}.{}",
        entry.file_name().unwrap_or_default().to_string_lossy(),
        unix_now()
    );
    let aside = rename_to_free_name(entry, dir, &stem, "").map_err(|source| ArchiveError::Move {
        from: entry.to_path_buf(),
        to: dir.join(&stem),
        source,
    })?;
    sync(dir)?;
    Ok(aside)
}

fn move_and_sync(from: &Path, to: &Path) -> Result<(), ArchiveError> {
    rename_no_replace(from, to).map_err(|source| ArchiveError::Move {
        from: from.to_path_buf(),
        to: to.to_path_buf(),
        source,
    })?;
    sync(parent_of(from))?;
    if parent_of(from) != parent_of(to) {
        sync(parent_of(to))?;
    }
    Ok(())
}

fn create_parent(path: &Path) -> Result<(), ArchiveError> {
    let parent = parent_of(path);
    fs::create_dir_all(parent).map_err(|source| ArchiveError::CreateDir {
        path: parent.to_path_buf(),
        source,
    })
}

/// Removes the now-empty parents of `moved` up to (not including) `root`, stopping at the first
/// one that is not empty.
fn remove_empty_parents(moved: &Path, root: &Path) {
    let mut dir = parent_of(moved);
    while dir != root && dir.starts_with(root) {
        if fs::remove_dir(dir).is_err() {
            break;
        }
        dir = parent_of(dir);
    }
}

/// Purges the entries at or below `dir`; `dir` itself only if it is not the archive root.
fn purge_below(dir: &Path, cutoff: SystemTime) -> Result<usize, ArchiveError> {
    purge_tree(dir, cutoff, true)
}

fn purge_tree(dir: &Path, cutoff: SystemTime, is_root: bool) -> Result<usize, ArchiveError> {
    // Read the mtime first: purging children below changes it.
    let modified = fs::symlink_metadata(dir)
        .and_then(|m| m.modified())
        .map_err(|source| inspect_error(dir, source))?;
    let (subdirs, files) = children(dir)?;
    let mut purged = 0;
    for subdir in &subdirs {
        purged += purge_tree(subdir, cutoff, false)?;
    }
    let is_entry = files
        .iter()
        .any(|f| f.file_name().is_some_and(|n| ENTRY_MARKERS.iter().any(|m| n == *m)));
    if !is_root && is_entry && modified < cutoff {
        for file in &files {
            fs::remove_file(file).map_err(|source| ArchiveError::Remove {
                path: file.clone(),
                source,
            })?;
        }
        // Fails (and keeps the directory) when young nested entries remain below it.
        let _ = fs::remove_dir(dir);
        purged += 1;
    } else if !is_root && purged > 0 && files.is_empty() {
        // A parent that held only purged entries.
        let _ = fs::remove_dir(dir);
    }
    Ok(purged)
}

/// The subdirectories and the other (non-directory) children of `dir`; symlinks are not followed.
fn children(dir: &Path) -> Result<(Vec<PathBuf>, Vec<PathBuf>), ArchiveError> {
    let mut subdirs = Vec::new();
    let mut files = Vec::new();
    let entries = fs::read_dir(dir).map_err(|source| inspect_error(dir, source))?;
    for entry in entries {
        let entry = entry.map_err(|source| inspect_error(dir, source))?;
        let file_type = entry
            .file_type()
            .map_err(|source| inspect_error(&entry.path(), source))?;
        if file_type.is_dir() {
            subdirs.push(entry.path());
        } else {
            files.push(entry.path());
        }
    }
    Ok((subdirs, files))
}

fn exists(path: &Path) -> Result<bool, ArchiveError> {
    match fs::symlink_metadata(path) {
        Ok(_) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(source) => Err(inspect_error(path, source)),
    }
}

fn is_dir(path: &Path) -> Result<bool, ArchiveError> {
    match fs::symlink_metadata(path) {
        Ok(meta) => Ok(meta.is_dir()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(source) => Err(inspect_error(path, source)),
    }
}

fn sync(dir: &Path) -> Result<(), ArchiveError> {
    sync_dir(dir).map_err(|source| ArchiveError::Sync {
        path: dir.to_path_buf(),
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
    use std::fs::File;

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

    fn names(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    fn set_mtime(path: &Path, time: SystemTime) {
        File::open(path).unwrap().set_modified(time).unwrap();
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

    #[test]
    fn rename_to_free_name_never_overwrites() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        for i in 0..3 {
            fs::write(dir.join("src"), format!("{i}")).unwrap();
            rename_to_free_name(&dir.join("src"), dir, "kept", ".rrd").unwrap();
        }
        assert_eq!(names(dir), vec!["kept-1.rrd", "kept-2.rrd", "kept.rrd"]);
        assert_eq!(fs::read_to_string(dir.join("kept.rrd")).unwrap(), "0");
    }
}
