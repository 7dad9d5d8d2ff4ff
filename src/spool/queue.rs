//! The snapshot queue: publish into `incoming/`, list it oldest first, remove or quarantine.

use super::atomic::{sync_dir, write_synced, TMP_PREFIX};
use super::snapshot::SnapshotName;
use super::BaseDir;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

/// Builds `incoming.tmp/<name>/` from `files`, fsyncs everything and renames it to
/// `incoming/<name>`. On error nothing of ours is left in `incoming.tmp/`.
///
/// Never overwrites: if `incoming/<name>` exists the rename fails with
/// [`io::ErrorKind::AlreadyExists`] (atomically, `RENAME_NOREPLACE`: a plain rename would replace
/// an empty directory). If `incoming.tmp/<name>` exists it belongs to someone else's snapshot
/// under construction: the same error, and it is left alone.
pub fn publish(base: &BaseDir, name: &SnapshotName, files: &[(&str, &[u8])]) -> io::Result<PathBuf> {
    let tmp = base.incoming_tmp().join(name.as_str());
    let target = base.incoming().join(name.as_str());
    fs::create_dir(&tmp)?;
    let result = fill_and_rename(&tmp, &target, files);
    if result.is_err() {
        let _ = fs::remove_dir_all(&tmp);
    }
    result.map(|()| target)
}

fn fill_and_rename(tmp: &Path, target: &Path, files: &[(&str, &[u8])]) -> io::Result<()> {
    for (file_name, contents) in files {
        write_synced(&tmp.join(file_name), contents)?;
    }
    sync_dir(tmp)?;
    rename_no_replace(tmp, target)?;
    sync_dir(target.parent().expect("incoming/ has a parent"))
}

/// `rename` that fails with `AlreadyExists` instead of replacing `to`. Where the filesystem
/// cannot do that atomically, an existence check comes first (racy, but only there).
fn rename_no_replace(from: &Path, to: &Path) -> io::Result<()> {
    use nix::errno::Errno;
    use nix::fcntl::{renameat2, RenameFlags, AT_FDCWD};
    match renameat2(AT_FDCWD, from, AT_FDCWD, to, RenameFlags::RENAME_NOREPLACE) {
        Ok(()) => Ok(()),
        Err(Errno::EINVAL | Errno::ENOSYS) if to.exists() => Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            format!("{} exists", to.display()),
        )),
        Err(Errno::EINVAL | Errno::ENOSYS) => fs::rename(from, to),
        Err(e) => Err(e.into()),
    }
}

/// An entry of `incoming/`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum QueueEntry {
    Snapshot(SnapshotName),
    /// A name that is not a time, or a plain file: to be quarantined.
    Invalid(String),
}

/// Lists `incoming/` (temp names skipped): snapshots oldest first, then invalid entries.
pub fn list(base: &BaseDir) -> io::Result<Vec<QueueEntry>> {
    let mut snapshots = Vec::new();
    let mut invalid = Vec::new();
    for entry in fs::read_dir(base.incoming())? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with(TMP_PREFIX) {
            continue;
        }
        match SnapshotName::parse(&name) {
            Some(snapshot) if entry.file_type()?.is_dir() => snapshots.push(snapshot),
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
    let mut depth = 0;
    for entry in fs::read_dir(base.incoming())? {
        let path = entry?.path();
        if !path.join(APPLIED_MARK).exists() {
            depth += 1;
        }
    }
    Ok(depth)
}

/// True when `incoming/<name>` holds [`APPLIED_MARK`].
pub fn is_applied(base: &BaseDir, name: &str) -> bool {
    base.incoming().join(name).join(APPLIED_MARK).exists()
}

/// Marks `incoming/<name>` as applied except for its RRD updates. The marker is made durable
/// by the caller's next filesystem flush.
pub fn mark_applied(base: &BaseDir, name: &str) -> io::Result<()> {
    fs::write(
        base.incoming().join(name).join(APPLIED_MARK),
        b"last_result and sinks done; RRD updates wait for the next flush\n",
    )
}

/// Removes a processed snapshot; the removal is durable when this returns.
///
/// The directory is first renamed out of `incoming/` (into `incoming.tmp/`, which is emptied at
/// start-up) and only then deleted: a crash in the middle of deleting its files never leaves a
/// half-deleted snapshot in the queue to be mistaken for a bad one.
pub fn remove(base: &BaseDir, name: &str) -> io::Result<()> {
    let doomed = base.incoming_tmp().join(format!("{TMP_PREFIX}done-{name}"));
    fs::rename(base.incoming().join(name), &doomed)?;
    sync_dir(&base.incoming())?;
    fs::remove_dir_all(&doomed)
}

/// Moves `incoming/<name>` to `failed/<name>` (or `failed/<name>.<n>` if taken) with a `REASON`
/// file, so a poison snapshot is never processed again. Returns the new path.
pub fn quarantine(base: &BaseDir, name: &str, reason: &str) -> io::Result<PathBuf> {
    let source = base.incoming().join(name);
    let mut target = base.failed().join(name);
    let mut n = 1;
    while target.exists() {
        target = base.failed().join(format!("{name}.{n}"));
        n += 1;
    }
    fs::rename(&source, &target)?;
    let reason_text = format!("{}\n", reason.trim_end());
    if target.is_dir() {
        write_synced(&target.join("REASON"), reason_text.as_bytes())?;
    } else {
        write_synced(&target.with_extension("REASON"), reason_text.as_bytes())?;
    }
    sync_dir(&base.failed())?;
    sync_dir(&base.incoming())?;
    Ok(target)
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
    fn owns(&self, name: &str) -> bool {
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
pub fn clean_tmp(base: &BaseDir, owner: TmpOwner) -> io::Result<usize> {
    let mut removed = 0;
    for entry in fs::read_dir(base.incoming_tmp())? {
        let entry = entry?;
        if !owner.owns(&entry.file_name().to_string_lossy()) {
            continue;
        }
        let path = entry.path();
        if path.is_dir() {
            fs::remove_dir_all(&path)?;
        } else {
            fs::remove_file(&path)?;
        }
        removed += 1;
    }
    Ok(removed)
}

/// Free space of the filesystem holding the base directory, in bytes.
pub fn free_space(base: &BaseDir) -> io::Result<u64> {
    let stat = nix::sys::statvfs::statvfs(base.root()).map_err(io::Error::from)?;
    Ok(stat.blocks_available() as u64 * stat.fragment_size() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base() -> (tempfile::TempDir, BaseDir) {
        let dir = tempfile::tempdir().unwrap();
        let base = BaseDir::new(dir.path());
        base.create_all().unwrap();
        (dir, base)
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
                QueueEntry::Invalid(s) => format!("!{s}"),
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
