//! The snapshot queue: publish into `incoming/`, list it oldest first, remove or quarantine.
//!
//! `incoming/` and `incoming.tmp/` are written by other programs (collectors, scripts, soon
//! remote nodes), so everything here works on directory descriptors ([`super::beneath::Dir`]):
//! an entry is classified without following it, a snapshot directory is entered with
//! `O_NOFOLLOW`, files are created with `O_EXCL`, and removal never follows a symlink. A symlink
//! in the queue is an invalid entry: it is moved to `failed/` as the link itself, and nothing it
//! points to is read, written or removed.

use super::beneath::{Dir, Kind};
use super::snapshot::SnapshotName;
use super::temp::TMP_PREFIX;
use super::BaseDir;
use std::ffi::{OsStr, OsString};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;

/// Builds `incoming.tmp/<name>/` from `files`, fsyncs everything and renames it to
/// `incoming/<name>`. On error nothing of ours is left in `incoming.tmp/`.
///
/// Never overwrites: if `incoming/<name>` exists the rename fails with
/// [`io::ErrorKind::AlreadyExists`] (atomically, `RENAME_NOREPLACE`: a plain rename would replace
/// an empty directory). If `incoming.tmp/<name>` exists it belongs to someone else's snapshot
/// under construction: the same error, and it is left alone.
pub fn publish(base: &BaseDir, name: &SnapshotName, files: &[(&str, &[u8])]) -> io::Result<PathBuf> {
    let tmp = base.dir("incoming.tmp")?;
    let incoming = base.dir("incoming")?;
    tmp.mkdir(name.as_str())?;
    let result = fill_and_rename(&tmp, &incoming, name.as_str(), files);
    if result.is_err() {
        let _ = tmp.remove_tree(name.as_str());
    }
    result.map(|()| incoming.path().join(name.as_str()))
}

fn fill_and_rename(tmp: &Dir, incoming: &Dir, name: &str, files: &[(&str, &[u8])]) -> io::Result<()> {
    let snapshot = tmp.open_dir(name)?;
    for (file_name, contents) in files {
        snapshot.write_new(file_name, contents)?;
    }
    snapshot.sync()?;
    tmp.rename_noreplace(name, incoming, name)?;
    incoming.sync()
}

/// An entry of `incoming/`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum QueueEntry {
    Snapshot(SnapshotName),
    /// A name that is not a time (or not UTF-8, or too long), a plain file, a symlink or
    /// anything else: to be quarantined. The name exactly as it is on disk.
    Invalid(OsString),
}

/// Lists `incoming/` (temp names skipped): snapshots oldest first, then invalid entries. Only
/// real directories are snapshots; a symlink is invalid whatever it points to.
pub fn list(base: &BaseDir) -> io::Result<Vec<QueueEntry>> {
    let mut snapshots = Vec::new();
    let mut invalid = Vec::new();
    for (name, kind) in base.dir("incoming")?.entries()? {
        if name.as_bytes().starts_with(TMP_PREFIX.as_bytes()) {
            continue;
        }
        match name.to_str().and_then(SnapshotName::parse) {
            Some(snapshot) if kind == Kind::Dir => snapshots.push(snapshot),
            _ => invalid.push(name),
        }
    }
    snapshots.sort();
    invalid.sort();
    Ok(snapshots
        .into_iter()
        .map(QueueEntry::Snapshot)
        .chain(invalid.into_iter().map(QueueEntry::Invalid))
        .collect())
}

/// Name of the marker file inside a snapshot whose results are all applied except the RRD
/// updates, which wait for the next RRD flush (`rrd-flush-interval`).
pub const APPLIED_MARK: &str = "APPLIED";

/// Entries of `incoming/` that still need processing (the `queue-size` measure): snapshots that
/// only wait for an RRD flush (they hold [`APPLIED_MARK`]) do not count.
pub fn depth(base: &BaseDir) -> io::Result<usize> {
    let incoming = base.dir("incoming")?;
    let mut depth = 0;
    for (name, kind) in incoming.entries()? {
        let applied = kind == Kind::Dir && has_applied_mark(&incoming, &name);
        depth += usize::from(!applied);
    }
    Ok(depth)
}

/// True when the snapshot directory `name` in `incoming` (not a symlink) holds a regular
/// [`APPLIED_MARK`].
fn has_applied_mark(incoming: &Dir, name: &OsStr) -> bool {
    incoming
        .open_dir(name)
        .and_then(|snapshot| snapshot.kind(APPLIED_MARK))
        .is_ok_and(|kind| kind == Some(Kind::File))
}

/// True when `incoming/<name>` holds [`APPLIED_MARK`].
pub fn is_applied(base: &BaseDir, name: &str) -> bool {
    base.dir("incoming")
        .is_ok_and(|incoming| has_applied_mark(&incoming, OsStr::new(name)))
}

/// Marks `incoming/<name>` as applied except for its RRD updates. The marker is made durable
/// by the caller's next filesystem flush. An entry already named like the marker (a producer's)
/// is replaced as an entry, never written through.
pub fn mark_applied(base: &BaseDir, name: &str) -> io::Result<()> {
    let snapshot = base.dir("incoming")?.open_dir(name)?;
    let text = b"last_result and sinks done; RRD updates wait for the next flush\n";
    match snapshot.create_new(APPLIED_MARK) {
        Ok(mut file) => io::Write::write_all(&mut file, text)
            .map_err(|e| super::beneath::context("cannot write", &snapshot.path().join(APPLIED_MARK), e)),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            snapshot.remove_tree(APPLIED_MARK)?;
            snapshot.write_new(APPLIED_MARK, text)
        }
        Err(e) => Err(e),
    }
}

/// Removes a processed snapshot; the removal is durable when this returns.
///
/// The directory is first renamed out of `incoming/` (into `incoming.tmp/`, which is emptied at
/// start-up) and only then deleted: a crash in the middle of deleting its files never leaves a
/// half-deleted snapshot in the queue to be mistaken for a bad one.
pub fn remove(base: &BaseDir, name: &str) -> io::Result<()> {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let incoming = base.dir("incoming")?;
    let tmp = base.dir("incoming.tmp")?;
    // A name of our own, never the snapshot's: a collector cannot plant it in advance (to block
    // the removal), and a long snapshot name cannot make it too long.
    let doomed = loop {
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let doomed = format!("{TMP_PREFIX}done-{}-{n}", std::process::id());
        match incoming.rename_noreplace(name, &tmp, &doomed) {
            Ok(()) => break doomed,
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        }
    };
    incoming.sync()?;
    tmp.remove_tree(&doomed)
}

/// The file inside a quarantined snapshot directory that says why.
pub const REASON_FILE: &str = "REASON";

/// Why a quarantine did not complete.
#[derive(Debug, thiserror::Error)]
pub enum QuarantineError {
    /// The entry is still in `incoming/` (nothing moved).
    #[error("cannot move incoming/{name} to failed/: {source}")]
    Move { name: String, source: io::Error },
    /// The entry is in `failed/` at `path`, but its reason could not be written yet: retry with
    /// [`write_reason`] (the reason is not lost).
    #[error("moved to {}, but cannot write its reason: {source}", path.display())]
    Reason { path: PathBuf, source: io::Error },
}

/// Moves `incoming/<name>` to `failed/<name>` (or `failed/<name>.<n>` if taken) with a `REASON`
/// file, so a poison snapshot is never processed again. Returns the new path.
///
/// The entry is moved as it is, without following it: a symlink moves as the link. The reason
/// is written only into a real directory (`<target>/REASON`), else beside the entry
/// (`<target>.REASON`); a `REASON` the producer left in the snapshot is kept as
/// `REASON.snapshot`. Nothing outside the base is opened.
pub fn quarantine(base: &BaseDir, name: impl AsRef<OsStr>, reason: &str) -> Result<PathBuf, QuarantineError> {
    let name = name.as_ref();
    let moved = (|| {
        let incoming = base.dir("incoming")?;
        let failed = base.dir("failed")?;
        let target = move_to_free_name(&incoming, name, &failed)?;
        incoming.sync()?;
        Ok::<_, io::Error>(failed.path().join(target))
    })()
    .map_err(|source| QuarantineError::Move {
        name: name.to_string_lossy().into_owned(),
        source,
    })?;
    write_reason(base, &moved, reason).map_err(|source| QuarantineError::Reason {
        path: moved.clone(),
        source,
    })?;
    Ok(moved)
}

/// Longest name an entry keeps in `failed/`: room is left for `.<n>` and `.REASON` within the
/// 255-byte limit of a file name.
const MAX_FAILED_NAME: usize = 200;

/// Renames `name` from `from` into `to` under its own name (cut to [`MAX_FAILED_NAME`] bytes),
/// or `<name>.<n>` for the first free `n`, never replacing anything. Returns the name used.
fn move_to_free_name(from: &Dir, name: &OsStr, to: &Dir) -> io::Result<OsString> {
    let stem = OsStr::from_bytes(&name.as_bytes()[..name.len().min(MAX_FAILED_NAME)]);
    let mut target = stem.to_owned();
    for n in 1u32.. {
        match from.rename_noreplace(name, to, &target) {
            Ok(()) => return Ok(target),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                target = stem.to_owned();
                target.push(format!(".{n}"));
            }
            Err(e) => return Err(e),
        }
    }
    unreachable!("u32 names run out")
}

/// Writes the reason of the quarantined entry `failed/<entry>` (the path [`quarantine`]
/// returned) and makes it durable.
pub fn write_reason(base: &BaseDir, quarantined: &std::path::Path, reason: &str) -> io::Result<()> {
    let failed = base.dir("failed")?;
    let entry = quarantined
        .file_name()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "no entry name"))?;
    let text = format!("{}\n", reason.trim_end());
    if failed.kind(entry)? == Some(Kind::Dir) {
        let snapshot = failed.open_dir(entry)?;
        if snapshot.kind(REASON_FILE)?.is_some() {
            // The producer's own entry of that name (whatever it is) is kept, renamed.
            let mut aside = format!("{REASON_FILE}.snapshot");
            for n in 1u32.. {
                match snapshot.rename_noreplace(REASON_FILE, &snapshot, &aside) {
                    Ok(()) => break,
                    Err(e) if e.kind() == io::ErrorKind::AlreadyExists => aside = format!("{REASON_FILE}.snapshot.{n}"),
                    Err(e) => return Err(e),
                }
            }
        }
        snapshot.replace(REASON_FILE, text.as_bytes())?;
        snapshot.sync()?;
    } else {
        let mut beside = entry.to_owned();
        beside.push(format!(".{REASON_FILE}"));
        failed.replace(&beside, text.as_bytes())?;
    }
    failed.sync()
}

/// Whose leftovers in `incoming.tmp/` a starting process may remove: only its own, so a
/// `spoolmon pull` and a `spoolmon run` sharing a base never delete each other's snapshots
/// under construction.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TmpOwner {
    /// `<epoch>-ping-<seq>` (the probes of `spoolmon run`).
    pub probes: bool,
    /// `<epoch>` (the HAProxy pull collector).
    pub pull: bool,
    /// `.tmp-done-<snap>` (snapshots being removed by processing).
    pub processing: bool,
}

impl TmpOwner {
    fn owns(&self, name: &OsStr) -> bool {
        let Some(name) = name.to_str() else {
            return false;
        };
        if name.starts_with(&format!("{TMP_PREFIX}done-")) {
            return self.processing;
        }
        match SnapshotName::parse(name) {
            Some(snapshot) if snapshot.as_str().contains("-ping-") => self.probes,
            Some(snapshot) if snapshot.as_str() == snapshot.epoch.to_string() => self.pull,
            _ => false,
        }
    }
}

/// Removes leftovers that `owner` left when it died while building a snapshot (never
/// published, so never promised to anyone) or removing one. Returns how many were removed.
/// Removal descends by descriptor and unlinks symlinks without following them.
///
/// A leftover that cannot be removed (a producer made it unremovable) is logged and left: it
/// never keeps the daemon from starting.
pub fn clean_tmp(base: &BaseDir, owner: TmpOwner) -> io::Result<usize> {
    let tmp = base.dir("incoming.tmp")?;
    let mut removed = 0;
    for (name, _) in tmp.entries()? {
        if !owner.owns(&name) {
            continue;
        }
        match tmp.remove_tree(&name) {
            Ok(()) => removed += 1,
            Err(e) => tracing::warn!("cannot remove a leftover in incoming.tmp/: {e}"),
        }
    }
    Ok(removed)
}

/// Free space of the filesystem holding the base directory, in bytes.
pub fn free_space(base: &BaseDir) -> io::Result<u64> {
    let root = base.root_dir()?;
    let stat =
        nix::sys::statvfs::fstatvfs(root.as_fd()).map_err(|e| super::beneath::context("statvfs", root.path(), e))?;
    Ok(stat.blocks_available() as u64 * stat.fragment_size() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    fn base() -> (tempfile::TempDir, BaseDir) {
        crate::spool::layout::temp_base()
    }

    #[test]
    fn published_snapshot_is_complete_and_tmp_is_empty() {
        let (_dir, base) = base();
        let name = SnapshotName::new(1_700_000_000, "ping", 1);
        let path = publish(&base, &name, &[("ping.jsonl", b"x\n")]).unwrap();
        assert_eq!(fs::read(path.join("ping.jsonl")).unwrap(), b"x\n");
        assert_eq!(fs::read_dir(base.incoming_tmp()).unwrap().count(), 0);
        assert!(
            publish(&base, &name, &[("ping.jsonl", b"y")]).is_err(),
            "same name published twice"
        );
        assert_eq!(fs::read_dir(base.incoming_tmp()).unwrap().count(), 0);
    }

    #[test]
    fn publish_never_replaces_an_existing_snapshot_nor_removes_a_foreign_tmp_dir() {
        let (_dir, base) = base();
        let name = SnapshotName::parse("1700000000").unwrap();
        // An empty directory: a plain rename(2) would silently replace it.
        fs::create_dir(base.incoming().join("1700000000")).unwrap();
        let err = publish(&base, &name, &[("a_info", b"x")]).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::AlreadyExists);
        assert_eq!(fs::read_dir(base.incoming().join("1700000000")).unwrap().count(), 0);
        assert_eq!(fs::read_dir(base.incoming_tmp()).unwrap().count(), 0);
        let other = SnapshotName::parse("1700000001").unwrap();
        fs::create_dir(base.incoming_tmp().join("1700000001")).unwrap();
        fs::write(base.incoming_tmp().join("1700000001/theirs"), b"in progress").unwrap();
        let err = publish(&base, &other, &[("a_info", b"x")]).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::AlreadyExists);
        assert!(base.incoming_tmp().join("1700000001/theirs").exists());
        assert!(!base.incoming().join("1700000001").exists());
    }

    #[test]
    fn list_orders_snapshots_and_separates_invalid_names() {
        let (_dir, base) = base();
        for name in ["1700000020-ping-000000001", "1700000000", "garbage"] {
            fs::create_dir(base.incoming().join(name)).unwrap();
        }
        fs::write(base.incoming().join("1700000001"), b"a file, not a dir").unwrap();
        let entries = list(&base).unwrap();
        let shown: Vec<String> = entries
            .iter()
            .map(|e| match e {
                QueueEntry::Snapshot(s) => s.to_string(),
                QueueEntry::Invalid(s) => format!("!{}", s.to_string_lossy()),
            })
            .collect();
        assert_eq!(
            shown,
            ["1700000000", "1700000020-ping-000000001", "!1700000001", "!garbage"]
        );
    }

    #[test]
    fn quarantined_snapshot_keeps_its_files_and_gets_a_reason() {
        let (_dir, base) = base();
        for _ in 0..2 {
            fs::create_dir(base.incoming().join("1700000000")).unwrap();
            fs::write(base.incoming().join("1700000000/data"), b"keep me").unwrap();
            quarantine(&base, "1700000000", "bad data").unwrap();
        }
        assert_eq!(fs::read(base.failed().join("1700000000/data")).unwrap(), b"keep me");
        fs::create_dir(base.incoming().join("1700000002")).unwrap();
        fs::write(base.incoming().join("1700000002/data"), b"done").unwrap();
        remove(&base, "1700000002").unwrap();
        assert_eq!(depth(&base).unwrap(), 0);
        assert_eq!(
            fs::read_dir(base.incoming_tmp()).unwrap().count(),
            0,
            "nothing left behind"
        );
        assert_eq!(
            fs::read_to_string(base.failed().join("1700000000.1/REASON")).unwrap(),
            "bad data\n"
        );
        assert_eq!(depth(&base).unwrap(), 0);
    }

    /// A tree outside the base whose every file must stay as it is, and nothing be added.
    fn canary(dir: &std::path::Path) -> std::path::PathBuf {
        let outside = dir.join("outside");
        fs::create_dir_all(outside.join("sub")).unwrap();
        fs::write(outside.join("victim"), b"precious").unwrap();
        fs::write(outside.join("sub/file"), b"deep").unwrap();
        outside
    }

    fn assert_canary_untouched(outside: &std::path::Path) {
        let mut names: Vec<String> = walk(outside);
        names.sort();
        assert_eq!(names, ["sub", "sub/file", "victim"], "nothing added or removed outside");
        assert_eq!(fs::read(outside.join("victim")).unwrap(), b"precious");
        assert_eq!(fs::read(outside.join("sub/file")).unwrap(), b"deep");
    }

    fn walk(dir: &std::path::Path) -> Vec<String> {
        let mut out = Vec::new();
        for entry in fs::read_dir(dir).unwrap() {
            let entry = entry.unwrap();
            let name = entry.file_name().to_string_lossy().into_owned();
            if entry.file_type().unwrap().is_dir() {
                out.extend(walk(&entry.path()).into_iter().map(|n| format!("{name}/{n}")));
            }
            out.push(name);
        }
        out
    }

    #[test]
    fn a_reason_symlink_planted_in_a_snapshot_is_never_written_through() {
        let (dir, base) = base();
        let outside = canary(dir.path());
        fs::create_dir(base.incoming().join("1700000000")).unwrap();
        std::os::unix::fs::symlink(outside.join("victim"), base.incoming().join("1700000000/REASON")).unwrap();
        let moved = quarantine(&base, "1700000000", "bad data").unwrap();
        assert_canary_untouched(&outside);
        assert_eq!(fs::read_to_string(moved.join("REASON")).unwrap(), "bad data\n");
        assert!(
            fs::symlink_metadata(moved.join("REASON.snapshot"))
                .unwrap()
                .file_type()
                .is_symlink(),
            "the producer's entry is kept, renamed"
        );
    }

    #[test]
    fn a_symlinked_snapshot_is_quarantined_as_the_link_and_its_target_untouched() {
        let (dir, base) = base();
        let outside = canary(dir.path());
        std::os::unix::fs::symlink(&outside, base.incoming().join("1700000000")).unwrap();
        std::os::unix::fs::symlink(outside.join("victim"), base.incoming().join("1700000001")).unwrap();
        let entries = list(&base).unwrap();
        assert_eq!(
            entries,
            [
                QueueEntry::Invalid("1700000000".into()),
                QueueEntry::Invalid("1700000001".into()),
            ]
        );
        assert_eq!(depth(&base).unwrap(), 2);
        assert!(!is_applied(&base, "1700000000"));
        assert!(mark_applied(&base, "1700000000").is_err(), "never entered");
        assert!(remove(&base, "1700000001").is_ok(), "a link is removed as a link");
        let moved = quarantine(&base, "1700000000", "not a directory").unwrap();
        assert!(fs::symlink_metadata(&moved).unwrap().file_type().is_symlink());
        assert_eq!(
            fs::read_to_string(base.failed().join("1700000000.REASON")).unwrap(),
            "not a directory\n"
        );
        assert_canary_untouched(&outside);
    }

    #[test]
    fn cleaning_incoming_tmp_unlinks_planted_links_without_following_them() {
        let (dir, base) = base();
        let outside = canary(dir.path());
        fs::create_dir(base.incoming_tmp().join("1700000000-ping-000000001")).unwrap();
        std::os::unix::fs::symlink(&outside, base.incoming_tmp().join("1700000000-ping-000000001/sub")).unwrap();
        std::os::unix::fs::symlink(&outside, base.incoming_tmp().join("1700000001-ping-000000001")).unwrap();
        let owner = TmpOwner {
            probes: true,
            pull: true,
            processing: true,
        };
        assert_eq!(clean_tmp(&base, owner).unwrap(), 2);
        assert_canary_untouched(&outside);
    }

    #[test]
    fn publish_refuses_a_symlinked_incoming_and_writes_nothing_through_it() {
        let (dir, base) = base();
        let outside = canary(dir.path());
        fs::remove_dir(base.incoming()).unwrap();
        std::os::unix::fs::symlink(&outside, base.incoming()).unwrap();
        let name = SnapshotName::new(1_700_000_000, "ping", 1);
        assert!(publish(&base, &name, &[("ping.jsonl", b"x\n")]).is_err());
        assert!(list(&base).is_err());
        assert_canary_untouched(&outside);
        assert_eq!(
            fs::read_dir(base.incoming_tmp()).unwrap().count(),
            0,
            "nothing left behind"
        );
    }

    #[test]
    fn names_that_are_not_utf8_or_too_long_are_quarantined_and_never_block_the_queue() {
        use std::os::unix::ffi::OsStrExt;
        let (_dir, base) = base();
        let raw = OsStr::from_bytes(b"1700000000-\xff");
        fs::create_dir(base.incoming().join(raw)).unwrap();
        let long = format!("1700000001-{}", "x".repeat(240));
        fs::create_dir(base.incoming().join(&long)).unwrap();
        let entries = list(&base).unwrap();
        assert!(
            entries.iter().all(|e| matches!(e, QueueEntry::Invalid(_))),
            "{entries:?}"
        );
        for entry in entries {
            let QueueEntry::Invalid(name) = entry else {
                unreachable!()
            };
            let moved = quarantine(&base, &name, "bad name").unwrap();
            assert!(
                moved.file_name().unwrap().len() <= MAX_FAILED_NAME,
                "{}",
                moved.display()
            );
            assert_eq!(fs::read_to_string(moved.join("REASON")).unwrap(), "bad name\n");
        }
        assert_eq!(depth(&base).unwrap(), 0);
    }

    #[test]
    fn a_producers_reason_entries_never_keep_ours_from_being_written() {
        let (_dir, base) = base();
        fs::create_dir_all(base.incoming().join("1700000000/REASON")).unwrap();
        fs::write(base.incoming().join("1700000000/REASON.snapshot"), b"theirs").unwrap();
        let moved = quarantine(&base, "1700000000", "ours").unwrap();
        assert_eq!(fs::read_to_string(moved.join("REASON")).unwrap(), "ours\n");
        assert!(
            moved.join("REASON.snapshot.1").is_dir(),
            "their REASON directory kept aside"
        );
        assert_eq!(fs::read(moved.join("REASON.snapshot")).unwrap(), b"theirs");
    }

    #[test]
    fn removal_uses_a_name_of_its_own_and_a_leftover_that_cannot_go_never_stops_a_start() {
        let (_dir, base) = base();
        // A collector plants what the old removal name would have been.
        fs::create_dir_all(base.incoming_tmp().join(".tmp-done-1700000000/x")).unwrap();
        fs::create_dir(base.incoming().join("1700000000")).unwrap();
        fs::write(base.incoming().join("1700000000/ping.jsonl"), b"x").unwrap();
        remove(&base, "1700000000").unwrap();
        assert_eq!(fs::read_dir(base.incoming()).unwrap().count(), 0);
        // An unremovable leftover is logged and left.
        let stuck = base.incoming_tmp().join("1700000002-ping-000000001");
        fs::create_dir_all(stuck.join("frozen")).unwrap();
        fs::write(stuck.join("frozen/f"), b"x").unwrap();
        let chattr = |flag: &str| {
            std::process::Command::new("chattr")
                .arg(flag)
                .arg(stuck.join("frozen"))
                .status()
        };
        assert!(
            chattr("+i").is_ok_and(|s| s.success()),
            "chattr +i failed: run the tests as root (e2fsprogs)"
        );
        let owner = TmpOwner {
            probes: true,
            pull: true,
            processing: true,
        };
        let removed = clean_tmp(&base, owner);
        chattr("-i").unwrap();
        assert_eq!(
            removed.unwrap(),
            1,
            "the planted .tmp-done- leftover went, the frozen one stayed"
        );
        assert!(stuck.join("frozen/f").exists());
    }

    #[test]
    fn each_process_cleans_only_its_own_leftovers() {
        let (_dir, base) = base();
        let names = [
            "1700000000-ping-000000001",
            "1700000000",
            ".tmp-done-1699999999",
            "stranger",
        ];
        let make = || {
            for name in names {
                fs::create_dir_all(base.incoming_tmp().join(name).join("x")).unwrap();
            }
        };
        let left = || {
            let mut left: Vec<String> = fs::read_dir(base.incoming_tmp())
                .unwrap()
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect();
            left.sort();
            left
        };
        make();
        let pull = TmpOwner {
            probes: false,
            pull: true,
            processing: false,
        };
        assert_eq!(clean_tmp(&base, pull).unwrap(), 1);
        assert_eq!(
            left(),
            [".tmp-done-1699999999", "1700000000-ping-000000001", "stranger"]
        );
        let daemon = TmpOwner {
            probes: true,
            pull: false,
            processing: true,
        };
        assert_eq!(clean_tmp(&base, daemon).unwrap(), 2);
        assert_eq!(left(), ["stranger"], "an unknown name is nobody's to delete");
    }
}
