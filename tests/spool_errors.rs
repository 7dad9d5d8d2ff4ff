//! Every failing spool and atomic-file operation names the path it was about and what it was
//! doing: an operator reading the log must not have to guess which of 10,000 snapshots or
//! `last_result` files a bare "No such file or directory" was about.

use spoolmon::spool::atomic::{replace_file, sync_dir, sync_filesystem, StagedFile};
use spoolmon::spool::snapshot::SnapshotName;
use spoolmon::spool::{queue, BaseDir};
use std::fs;
use std::path::Path;

/// Asserts that `error` mentions `path` (as displayed) and is not just the bare OS message.
fn names(error: impl std::fmt::Display, path: &Path) {
    let text = error.to_string();
    let shown = path.display().to_string();
    assert!(text.contains(&shown), "error does not name {shown}: {text}");
    assert!(
        text.len() > shown.len() + 10,
        "error is only the path, without the operation or cause: {text}"
    );
}

/// A base directory whose `incoming/` and `incoming.tmp/` are regular files, so every queue
/// operation fails.
fn broken_base() -> (tempfile::TempDir, BaseDir) {
    let dir = tempfile::tempdir().unwrap();
    for name in ["incoming", "incoming.tmp", "failed", "state"] {
        fs::write(dir.path().join(name), b"not a directory").unwrap();
    }
    let base = BaseDir::new(dir.path());
    (dir, base)
}

#[test]
fn queue_errors_name_the_directory_they_failed_on() {
    let (dir, base) = broken_base();
    let incoming = dir.path().join("incoming");
    let name = SnapshotName::new(1_700_000_000, "ping", 1);
    names(
        queue::publish(&base, &name, &[("ping.jsonl", b"{}")]).unwrap_err(),
        &dir.path().join("incoming.tmp"),
    );
    names(queue::list(&base).unwrap_err(), &incoming);
    names(queue::depth(&base).unwrap_err(), &incoming);
    names(queue::mark_applied(&base, name.as_str()).unwrap_err(), &incoming);
    names(queue::remove(&base, name.as_str()).unwrap_err(), &incoming);
    names(
        queue::clean_tmp(
            &base,
            queue::TmpOwner {
                probes: true,
                pull: true,
                processing: true,
            },
        )
        .unwrap_err(),
        &dir.path().join("incoming.tmp"),
    );
}

#[test]
fn queue_errors_on_a_missing_snapshot_name_the_snapshot() {
    let dir = tempfile::tempdir().unwrap();
    let base = BaseDir::new(dir.path());
    base.create_all().unwrap();
    let missing = "2023-11-14T22:13:20Z-ping-1";
    let path = dir.path().join("incoming").join(missing);
    names(queue::mark_applied(&base, missing).unwrap_err(), &path);
    names(queue::remove(&base, missing).unwrap_err(), &path);
}

#[test]
fn atomic_file_errors_name_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let missing_dir = dir.path().join("output").join("app1");
    let target = missing_dir.join("last_result");
    names(replace_file(&target, b"x").unwrap_err(), &missing_dir);
    names(StagedFile::stage(&target, b"x").unwrap_err(), &missing_dir);
    names(sync_dir(&missing_dir).unwrap_err(), &missing_dir);
    names(sync_filesystem(&missing_dir).unwrap_err(), &missing_dir);

    // A staged file whose spare disappeared before the switch (someone cleaned the directory).
    fs::create_dir_all(&missing_dir).unwrap();
    let staged = StagedFile::stage(&target, b"x").unwrap();
    for entry in fs::read_dir(&missing_dir).unwrap() {
        fs::remove_file(entry.unwrap().path()).unwrap();
    }
    names(staged.commit().unwrap_err(), &target);
}
