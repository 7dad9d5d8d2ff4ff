//! Making files visible atomically and durably.
//!
//! `replace_file` writes a temporary file beside the target, fsyncs it and renames it over the
//! target: readers see the old content or the new one, never a missing or partial file.
//! `publish_dir` does the same for a whole directory (a snapshot).

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use super::beneath::context;

/// Replaces `path` with `contents`: write temp, fsync, rename (the directory is not fsynced; use
/// [`sync_dir`] or a later `syncfs` when the rename itself must survive a crash).
///
/// The temporary file is created new (`O_EXCL`) in the parent directory and renamed over the
/// final name, so a symlink or hard link planted at either name is replaced, never written
/// through. Under the base directory prefer [`super::beneath::Dir::replace`] on a descriptor from
/// [`super::BaseDir::dir`], which also refuses a symlinked parent.
pub fn replace_file(path: &Path, contents: &[u8]) -> io::Result<()> {
    let (parent, name) = split(path)?;
    super::beneath::Dir::open(parent)?.replace(name, contents)
}

fn split(path: &Path) -> io::Result<(&Path, &str)> {
    let name = path.file_name().and_then(|n| n.to_str()).ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{} has no file name", path.display()),
        )
    })?;
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    Ok((parent, name))
}

/// A file written under its temporary name, waiting to be switched with its target.
///
/// Used to replace many files durably at the price of two `syncfs` calls instead of one fsync
/// each: stage them all, [`sync_filesystem`], [`StagedFile::commit`] them all, sync again.
///
/// The temporary name is fixed (`.<name>.next`) and the switch is `renameat2(RENAME_EXCHANGE)`:
/// the old content moves to the temporary name and is overwritten in place next time. No inode is
/// created or freed per update; on ext4 a create per update (write-temp + rename) made inode
/// allocation, which scans recently freed inodes, the largest CPU cost of processing.
///
/// A reader may still hold the exchanged-out inode open, so it is only reused once it has been
/// out of sight for [`REUSE_AFTER`] (its ctime, set by the exchange); a younger one is unlinked
/// (the reader keeps its complete copy) and a new file is created.
#[derive(Debug)]
pub struct StagedFile {
    tmp: PathBuf,
    target: PathBuf,
}

impl StagedFile {
    /// Writes `contents` to the temporary sibling of `target` (not synced, not visible yet).
    pub fn stage(target: &Path, contents: &[u8]) -> io::Result<StagedFile> {
        let name = target.file_name().ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{} has no file name", target.display()),
            )
        })?;
        let tmp = target.with_file_name(format!(".{}.next", name.to_string_lossy()));
        let (mut file, old_len) = open_spare(&tmp)?;
        file.write_all(contents).map_err(|e| context("write", &tmp, e))?;
        // Usually the new content has the old length: no ftruncate that changes nothing (ext4
        // journals it); only cut what is left of longer old content.
        if old_len > contents.len() as u64 {
            file.set_len(contents.len() as u64)
                .map_err(|e| context("truncate", &tmp, e))?;
        }
        Ok(StagedFile {
            tmp,
            target: target.to_owned(),
        })
    }

    /// Switches the staged content into place: exchanged with the target if it exists (falls
    /// back to a rename where the filesystem cannot exchange), renamed onto it otherwise.
    pub fn commit(self) -> io::Result<()> {
        use nix::fcntl::{renameat2, RenameFlags, AT_FDCWD};
        // Exchange first (the usual case); ENOENT means there is no target yet.
        match renameat2(
            AT_FDCWD,
            &self.tmp,
            AT_FDCWD,
            &self.target,
            RenameFlags::RENAME_EXCHANGE,
        ) {
            Ok(()) => Ok(()),
            Err(nix::errno::Errno::ENOENT | nix::errno::Errno::EINVAL | nix::errno::Errno::ENOSYS) => {
                fs::rename(&self.tmp, &self.target).map_err(|e| context("rename into place", &self.target, e))
            }
            Err(e) => Err(context("exchange into place", &self.target, e)),
        }
    }

    pub fn target(&self) -> &Path {
        &self.target
    }
}

/// How long an exchanged-out file must have been out of sight before it is overwritten in place:
/// far longer than any reader takes to read a small file it has just opened.
pub const REUSE_AFTER: std::time::Duration = std::time::Duration::from_secs(2);

/// Opens the spare file for writing, with its current length: the existing one if it has been
/// out of sight for [`REUSE_AFTER`], else a new, empty one (the young one is unlinked first).
fn open_spare(tmp: &Path) -> io::Result<(File, u64)> {
    use std::os::unix::fs::MetadataExt;
    use std::os::unix::fs::OpenOptionsExt;
    // Never through a symlink planted at the spare's name; never a FIFO (O_NONBLOCK) or device.
    let file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(tmp)
        .map_err(|e| context("open spare file", tmp, e))?;
    let meta = file.metadata().map_err(|e| context("stat", tmp, e))?;
    if !meta.file_type().is_file() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{} is not a regular file", tmp.display()),
        ));
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let changed = std::time::Duration::new(
        meta.ctime().max(0) as u64,
        meta.ctime_nsec().clamp(0, 999_999_999) as u32,
    );
    if meta.len() == 0 || now.saturating_sub(changed) >= REUSE_AFTER {
        return Ok((file, meta.len()));
    }
    drop(file);
    fs::remove_file(tmp).map_err(|e| context("remove young spare file", tmp, e))?;
    let file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(tmp)
        .map_err(|e| context("create spare file", tmp, e))?;
    Ok((file, 0))
}

/// Fsyncs a directory, making renames and creations in it durable.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| context("fsync directory", dir, e))
}

/// Flushes every dirty page of the filesystem holding `path` (one call for a whole batch of
/// RRD updates and `last_result` files instead of one fsync per file).
pub fn sync_filesystem(path: &Path) -> io::Result<()> {
    let file = File::open(path).map_err(|e| context("open for syncfs", path, e))?;
    nix::unistd::syncfs(&file).map_err(|e| context("syncfs", path, e))
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
            Err(e) => return Err(context("rename", &to, e)),
        }
    }
    Err(io::Error::new(
        io::ErrorKind::AlreadyExists,
        format!("no free name for {stem}{extension} in {}", dir.display()),
    ))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaced_file_has_new_content_and_no_temp_remains() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("last_result");
        replace_file(&path, b"one").unwrap();
        replace_file(&path, b"two").unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"two");
        let names: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("last_result")]);
    }

    #[test]
    fn staged_file_is_invisible_until_committed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("last_result");
        fs::write(&path, b"old").unwrap();
        let staged = StagedFile::stage(&path, b"new").unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"old");
        staged.commit().unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"new");
        // The next, shorter content reuses the temporary file and leaves no stale bytes.
        StagedFile::stage(&path, b"v3").unwrap().commit().unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"v3");
        let fresh = dir.path().join("fresh");
        StagedFile::stage(&fresh, b"first").unwrap().commit().unwrap();
        assert_eq!(fs::read(&fresh).unwrap(), b"first");
    }

    #[test]
    fn replace_into_missing_directory_fails_cleanly() {
        let dir = tempfile::tempdir().unwrap();
        assert!(replace_file(&dir.path().join("nope/file"), b"x").is_err());
    }

    #[test]
    fn rename_to_free_name_never_overwrites() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        for i in 0..3 {
            fs::write(dir.join("src"), format!("{i}")).unwrap();
            rename_to_free_name(&dir.join("src"), dir, "kept", ".rrd").unwrap();
        }
        for (name, content) in [("kept.rrd", "0"), ("kept-1.rrd", "1"), ("kept-2.rrd", "2")] {
            assert_eq!(fs::read_to_string(dir.join(name)).unwrap(), content, "{name}");
        }
        assert!(!dir.join("src").exists());
    }
}
