//! File operations that never leave a directory: every open, create, rename and removal is made
//! relative to a directory file descriptor and refuses symbolic links.
//!
//! Other programs write into the base directory (collectors into `incoming/`, order producers
//! into `orders/`, soon remote nodes). Any of them can plant a symlink where spoolmon expects a
//! file or directory of its own. A path-based `open` or `is_dir()` would follow it, and spoolmon
//! (often root) would write outside the base. Everything here goes through a [`Dir`]:
//!
//! - directories are opened with `O_DIRECTORY | O_NOFOLLOW`, one component at a time from a
//!   descriptor we already hold (with `openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS)` where the
//!   kernel has it, so a `..` cannot climb out either);
//! - files are opened with `O_NOFOLLOW | O_NONBLOCK` and checked with `fstat` to be regular files
//!   before a byte is read (a FIFO or device planted under our name neither hangs nor feeds us
//!   endless data);
//! - new files are created with `O_CREAT | O_EXCL`, so an existing name (a symlink, a hard link
//!   to someone else's file) is never opened for writing;
//! - renames and removals are `renameat2` / `unlinkat` on names inside held directories, and
//!   [`Dir::remove_tree`] descends through descriptors, unlinking symlinks instead of following them.
//!
//! Errors keep the [`io::ErrorKind`] of the failing call and name the operation and the path.
//!
//! Callers: `spool::queue` (publish, list, remove, quarantine, clean), `spool::lock`,
//! `spool::state`, the outbox, and the readers of producer-written files (`orders/`,
//! `telegraf/`, snapshots).

use nix::fcntl::{AtFlags, OFlag};
use nix::sys::stat::{fstatat, Mode, SFlag};
use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io::{self, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// What a directory entry is, without following it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kind {
    File,
    Dir,
    Symlink,
    /// FIFO, socket, device.
    Other,
}

impl Kind {
    fn from_mode(mode: libc::mode_t) -> Kind {
        match SFlag::from_bits_truncate(mode & SFlag::S_IFMT.bits()) {
            SFlag::S_IFREG => Kind::File,
            SFlag::S_IFDIR => Kind::Dir,
            SFlag::S_IFLNK => Kind::Symlink,
            _ => Kind::Other,
        }
    }
}

/// An open directory; the path is kept for error messages and for callers that must hand a
/// path to a library (see [`Dir::fd_path`]).
#[derive(Debug)]
pub struct Dir {
    fd: OwnedFd,
    path: PathBuf,
}

/// An I/O error with the operation and the path it was about.
///
/// The cause is part of the message and deliberately not the error's `source()`: printed with
/// its chain (`{:#}`, as the commands print errors) it would otherwise appear twice.
#[derive(Debug, thiserror::Error)]
#[error("{op} {}: {cause}", path.display())]
pub struct PathError {
    op: String,
    path: PathBuf,
    cause: io::Error,
}

/// Adds the operation and the path to an error, keeping its kind and, inside, the error itself
/// (its errno stays readable with [`os_error`]).
pub fn context(op: &str, path: &Path, e: impl Into<io::Error>) -> io::Error {
    let cause = e.into();
    io::Error::new(
        cause.kind(),
        PathError {
            op: op.to_owned(),
            path: path.to_owned(),
            cause,
        },
    )
}

/// The errno of `e`, also when it was wrapped by [`context`] (any depth).
pub fn os_error(e: &io::Error) -> Option<i32> {
    e.raw_os_error().or_else(|| {
        let inner = e.get_ref()?.downcast_ref::<PathError>()?;
        os_error(&inner.cause)
    })
}

fn errno_err(op: &str, path: &Path, e: nix::errno::Errno) -> io::Error {
    match e {
        // O_NOFOLLOW / RESOLVE_NO_SYMLINKS: say what happened, not "too many levels".
        nix::errno::Errno::ELOOP => context(
            op,
            path,
            io::Error::new(
                io::ErrorKind::InvalidData,
                "a symbolic link is in the way (spoolmon never follows links inside its base directory)",
            ),
        ),
        nix::errno::Errno::EXDEV => context(
            op,
            path,
            io::Error::new(io::ErrorKind::InvalidData, "the path leaves the directory"),
        ),
        e => context(op, path, io::Error::from(e)),
    }
}

const DIR_FLAGS: OFlag = OFlag::O_RDONLY
    .union(OFlag::O_DIRECTORY)
    .union(OFlag::O_NOFOLLOW)
    .union(OFlag::O_CLOEXEC);

/// `O_NOFOLLOW | O_DIRECTORY` on a symlink answers ENOTDIR: report it as the symlink it is.
fn link_or(at: BorrowedFd<'_>, name: &std::ffi::OsStr, e: nix::errno::Errno) -> nix::errno::Errno {
    let is_link = || {
        fstatat(at, name, AtFlags::AT_SYMLINK_NOFOLLOW).is_ok_and(|stat| Kind::from_mode(stat.st_mode) == Kind::Symlink)
    };
    if e == nix::errno::Errno::ENOTDIR && is_link() {
        nix::errno::Errno::ELOOP
    } else {
        e
    }
}

/// How deep [`Dir::remove_tree`] descends before moving a subtree up (descriptors held at once).
pub const REMOVE_DEPTH: usize = 32;

/// False once `openat2` answered ENOSYS (an old kernel): the component walk is used instead.
static HAVE_OPENAT2: AtomicBool = AtomicBool::new(true);

/// The components of a relative path below a directory; absolute paths, `..` and empty paths
/// are refused.
fn components(rel: &Path) -> io::Result<Vec<&std::ffi::OsStr>> {
    let mut out = Vec::new();
    for component in rel.components() {
        match component {
            Component::Normal(name) => out.push(name),
            Component::CurDir => {}
            _ => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("{} is not a path below its directory", rel.display()),
                ))
            }
        }
    }
    Ok(out)
}

/// A single file name: no `/`, not empty, not `.` or `..`. Names are bytes: one that is not
/// UTF-8 (a producer may plant it) is handled like any other.
fn check_name(name: &OsStr) -> io::Result<&OsStr> {
    let bytes = name.as_bytes();
    if bytes.is_empty() || bytes == b"." || bytes == b".." || bytes.contains(&b'/') || bytes.contains(&0) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{name:?} is not a file name"),
        ));
    }
    Ok(name)
}

/// Whether a `renameat2(RENAME_NOREPLACE)` failed only because the filesystem (or kernel) does
/// not support the flag. The errno is read through the path context that `rename_flags` adds.
fn lacks_noreplace(e: &io::Error) -> bool {
    matches!(os_error(e), Some(libc::EINVAL | libc::ENOSYS))
}

impl Dir {
    /// Opens a directory by path (following symlinks in `path` itself: it is the operator's,
    /// e.g. a `/var/lib/spoolmon` that links to a data disk).
    pub fn open(path: &Path) -> io::Result<Dir> {
        let fd = nix::fcntl::open(
            path,
            OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| errno_err("cannot open directory", path, e))?;
        Ok(Dir {
            fd,
            path: path.to_owned(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// `/proc/self/fd/<n>`: a path that reaches this very directory, for libraries that only take
    /// paths (librrd). Valid while `self` lives.
    pub fn fd_path(&self) -> PathBuf {
        PathBuf::from(format!("/proc/self/fd/{}", self.fd.as_raw_fd()))
    }

    pub fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// A second descriptor of the same directory.
    pub fn try_clone(&self) -> io::Result<Dir> {
        Ok(Dir {
            fd: self
                .fd
                .try_clone()
                .map_err(|e| context("cannot duplicate descriptor of", &self.path, e))?,
            path: self.path.clone(),
        })
    }

    /// A new open of this same directory: its own open file description (for `flock`, which
    /// a duplicated descriptor would share).
    pub fn reopen(&self) -> io::Result<Dir> {
        let fd = nix::fcntl::openat(self.fd.as_fd(), ".", DIR_FLAGS, Mode::empty())
            .map_err(|e| errno_err("cannot open directory", &self.path, e))?;
        Ok(Dir {
            fd,
            path: self.path.clone(),
        })
    }

    /// The descriptor itself.
    pub fn into_fd(self) -> OwnedFd {
        self.fd
    }

    /// Opens the directory `rel` below this one (any depth), refusing symlinks in every
    /// component and anything that is not a directory.
    pub fn open_dir(&self, rel: impl AsRef<Path>) -> io::Result<Dir> {
        let rel = rel.as_ref();
        let path = self.path.join(rel);
        let parts = components(rel)?;
        if parts.is_empty() {
            return self.try_clone();
        }
        if HAVE_OPENAT2.load(Ordering::Relaxed) {
            use nix::fcntl::{openat2, OpenHow, ResolveFlag};
            let how = OpenHow::new()
                .flags(DIR_FLAGS)
                .resolve(ResolveFlag::RESOLVE_BENEATH | ResolveFlag::RESOLVE_NO_SYMLINKS);
            match openat2(self.fd.as_fd(), rel, how) {
                Ok(fd) => return Ok(Dir { fd, path }),
                Err(nix::errno::Errno::ENOSYS) => HAVE_OPENAT2.store(false, Ordering::Relaxed),
                // A final symlink answers ENOTDIR: the walk below says which component it is.
                Err(nix::errno::Errno::ENOTDIR) => {}
                Err(e) => return Err(errno_err("cannot open directory", &path, e)),
            }
        }
        let mut current: Option<OwnedFd> = None;
        for part in parts {
            let at = current.as_ref().map_or(self.fd.as_fd(), |fd| fd.as_fd());
            let fd = nix::fcntl::openat(at, part, DIR_FLAGS, Mode::empty())
                .map_err(|e| errno_err("cannot open directory", &path, link_or(at, part, e)))?;
            current = Some(fd);
        }
        Ok(Dir {
            fd: current.expect("at least one component"),
            path,
        })
    }

    /// Opens `rel` below this directory, creating missing directories (mode 0755 less umask);
    /// a symlink or a file in the way is an error, never followed.
    pub fn create_dir_all(&self, rel: impl AsRef<Path>) -> io::Result<Dir> {
        let rel = rel.as_ref();
        let path = self.path.join(rel);
        let mut current = self.try_clone()?;
        let mut so_far = self.path.clone();
        for part in components(rel)? {
            so_far.push(part);
            match nix::sys::stat::mkdirat(current.fd.as_fd(), part, Mode::from_bits_truncate(0o755)) {
                Ok(()) | Err(nix::errno::Errno::EEXIST) => {}
                Err(e) => return Err(errno_err("cannot create directory", &so_far, e)),
            }
            let fd = nix::fcntl::openat(current.fd.as_fd(), part, DIR_FLAGS, Mode::empty())
                .map_err(|e| errno_err("cannot open directory", &so_far, link_or(current.fd.as_fd(), part, e)))?;
            current = Dir {
                fd,
                path: so_far.clone(),
            };
        }
        current.path = path;
        Ok(current)
    }

    /// Creates the directory `name` (error if anything has that name).
    pub fn mkdir(&self, name: impl AsRef<OsStr>) -> io::Result<()> {
        let name = name.as_ref();
        check_name(name)?;
        nix::sys::stat::mkdirat(self.fd.as_fd(), name, Mode::from_bits_truncate(0o755))
            .map_err(|e| errno_err("cannot create directory", &self.path.join(name), e))
    }

    /// What `name` is, without following it; `None` if there is no such entry.
    pub fn kind(&self, name: impl AsRef<OsStr>) -> io::Result<Option<Kind>> {
        let name = name.as_ref();
        check_name(name)?;
        match fstatat(self.fd.as_fd(), name, AtFlags::AT_SYMLINK_NOFOLLOW) {
            Ok(stat) => Ok(Some(Kind::from_mode(stat.st_mode))),
            Err(nix::errno::Errno::ENOENT) => Ok(None),
            Err(e) => Err(errno_err("cannot stat", &self.path.join(name), e)),
        }
    }

    /// `lstat` of `name` (the entry itself, never what a symlink points to).
    pub fn stat(&self, name: impl AsRef<OsStr>) -> io::Result<nix::sys::stat::FileStat> {
        let name = name.as_ref();
        check_name(name)?;
        fstatat(self.fd.as_fd(), name, AtFlags::AT_SYMLINK_NOFOLLOW)
            .map_err(|e| errno_err("cannot stat", &self.path.join(name), e))
    }

    /// The entries of this directory (not `.` and `..`) with their kinds, unsorted (see
    /// [`sorted_names`] for tests that compare listings).
    pub fn entries(&self) -> io::Result<Vec<(OsString, Kind)>> {
        let dup = self.fd.try_clone().map_err(|e| context("cannot list", &self.path, e))?;
        let mut dir = nix::dir::Dir::from_fd(dup).map_err(|e| errno_err("cannot list", &self.path, e))?;
        let mut out = Vec::new();
        for entry in dir.iter() {
            let entry = entry.map_err(|e| errno_err("cannot list", &self.path, e))?;
            let name = entry.file_name().to_bytes();
            if name == b"." || name == b".." {
                continue;
            }
            let name = OsString::from(std::ffi::OsStr::from_bytes(name));
            let kind = match entry.file_type() {
                Some(nix::dir::Type::File) => Kind::File,
                Some(nix::dir::Type::Directory) => Kind::Dir,
                Some(nix::dir::Type::Symlink) => Kind::Symlink,
                Some(_) => Kind::Other,
                // Filesystems without d_type: ask the inode.
                None => match fstatat(self.fd.as_fd(), name.as_os_str(), AtFlags::AT_SYMLINK_NOFOLLOW) {
                    Ok(stat) => Kind::from_mode(stat.st_mode),
                    Err(nix::errno::Errno::ENOENT) => continue,
                    Err(e) => return Err(errno_err("cannot stat", &self.path.join(&name), e)),
                },
            };
            out.push((name, kind));
        }
        Ok(out)
    }

    /// Opens the file at `rel` below this directory (any depth) for reading, non-blocking,
    /// following no symlink on the way and never leaving the directory. The caller checks the
    /// file type from the returned file (a FIFO opens at once and reads as such).
    pub fn open_file_beneath(&self, rel: impl AsRef<Path>) -> io::Result<File> {
        let rel = rel.as_ref();
        let path = self.path.join(rel);
        let flags = OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_NONBLOCK | OFlag::O_CLOEXEC | OFlag::O_NOCTTY;
        if components(rel)?.is_empty() {
            return Err(context(
                "cannot open",
                &path,
                io::Error::from(io::ErrorKind::InvalidInput),
            ));
        }
        if HAVE_OPENAT2.load(Ordering::Relaxed) {
            use nix::fcntl::{openat2, OpenHow, ResolveFlag};
            let how = OpenHow::new()
                .flags(flags)
                .resolve(ResolveFlag::RESOLVE_BENEATH | ResolveFlag::RESOLVE_NO_SYMLINKS);
            match openat2(self.fd.as_fd(), rel, how) {
                Ok(fd) => return Ok(File::from(fd)),
                Err(nix::errno::Errno::ENOSYS) => HAVE_OPENAT2.store(false, Ordering::Relaxed),
                Err(e) => return Err(errno_err("cannot open", &path, e)),
            }
        }
        let parent = self.open_dir(rel.parent().unwrap_or(Path::new("")))?;
        let name = rel.file_name().unwrap_or_default();
        let fd = nix::fcntl::openat(parent.fd.as_fd(), name, flags, Mode::empty())
            .map_err(|e| errno_err("cannot open", &path, e))?;
        Ok(File::from(fd))
    }

    /// Opens the regular file `name` for reading; a symlink, FIFO, socket, device or directory
    /// is refused with [`io::ErrorKind::InvalidData`] before anything is read.
    pub fn open_read(&self, name: impl AsRef<OsStr>) -> io::Result<File> {
        let name = name.as_ref();
        self.open_regular(name, OFlag::O_RDONLY)
    }

    /// Opens the existing regular file `name` for reading and writing (same refusals).
    pub fn open_rw(&self, name: impl AsRef<OsStr>) -> io::Result<File> {
        let name = name.as_ref();
        self.open_regular(name, OFlag::O_RDWR)
    }

    fn open_regular(&self, name: impl AsRef<OsStr>, access: OFlag) -> io::Result<File> {
        let name = name.as_ref();
        check_name(name)?;
        let path = self.path.join(name);
        let fd = nix::fcntl::openat(
            self.fd.as_fd(),
            name,
            access | OFlag::O_NOFOLLOW | OFlag::O_NONBLOCK | OFlag::O_CLOEXEC | OFlag::O_NOCTTY,
            Mode::empty(),
        )
        .map_err(|e| errno_err("cannot open", &path, e))?;
        let file = File::from(fd);
        let meta = file.metadata().map_err(|e| context("cannot stat", &path, e))?;
        if !meta.file_type().is_file() {
            return Err(context(
                "refusing",
                &path,
                io::Error::new(io::ErrorKind::InvalidData, "not a regular file"),
            ));
        }
        // Regular files ignore O_NONBLOCK; clear it anyway so nothing surprises a later reader.
        let _ = nix::fcntl::fcntl(&file, nix::fcntl::FcntlArg::F_SETFL(OFlag::empty()));
        Ok(file)
    }

    /// Opens the regular file `name` for reading and writing, creating it (mode 0644 less umask)
    /// if there is no such entry; a symlink, FIFO or device in its place is refused.
    pub fn open_or_create(&self, name: impl AsRef<OsStr>) -> io::Result<File> {
        let name = name.as_ref();
        check_name(name)?;
        let path = self.path.join(name);
        match nix::fcntl::openat(
            self.fd.as_fd(),
            name,
            OFlag::O_RDWR | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::from_bits_truncate(0o644),
        ) {
            Ok(fd) => Ok(File::from(fd)),
            Err(nix::errno::Errno::EEXIST) => self.open_rw(name),
            Err(e) => Err(errno_err("cannot create", &path, e)),
        }
    }

    /// Creates the new file `name` for writing (mode 0644 less umask); fails if any entry of
    /// that name exists, so nothing planted there is ever written through.
    pub fn create_new(&self, name: impl AsRef<OsStr>) -> io::Result<File> {
        let name = name.as_ref();
        check_name(name)?;
        let fd = nix::fcntl::openat(
            self.fd.as_fd(),
            name,
            OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::from_bits_truncate(0o644),
        )
        .map_err(|e| errno_err("cannot create", &self.path.join(name), e))?;
        Ok(File::from(fd))
    }

    /// Reads the whole regular file `name`, refusing more than `limit` bytes.
    pub fn read_limited(&self, name: impl AsRef<OsStr>, limit: u64) -> io::Result<Vec<u8>> {
        let name = name.as_ref();
        let file = self.open_read(name)?;
        self.read_open_limited(&file, name, limit)
    }

    /// [`Dir::read_limited`] of a file replaced by [`Dir::replace_via_spare`]: `None` when, once
    /// read, `name` no longer names the file that was read (it may have become the spare and
    /// been rewritten during the read), so the caller reads again. What it returns was the
    /// contents of `name` at some moment during the call: never a spare being written, never
    /// older than what an earlier call returned.
    pub fn read_limited_current(&self, name: impl AsRef<OsStr>, limit: u64) -> io::Result<Option<Vec<u8>>> {
        use std::os::unix::fs::MetadataExt;
        let name = name.as_ref();
        let file = self.open_read(name)?;
        let bytes = self.read_open_limited(&file, name, limit)?;
        let read = file
            .metadata()
            .map_err(|e| context("cannot stat", &self.path.join(name), e))?;
        match self.stat(name) {
            Ok(now) => Ok((now.st_ino == read.ino() && now.st_dev == read.dev()).then_some(bytes)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn read_open_limited(&self, file: &File, name: &OsStr, limit: u64) -> io::Result<Vec<u8>> {
        use std::io::Read;
        let len = file.metadata().map(|m| m.len()).unwrap_or(0);
        if len > limit {
            return Err(context(
                "refusing",
                &self.path.join(name),
                io::Error::new(io::ErrorKind::InvalidData, format!("larger than {limit} bytes")),
            ));
        }
        let mut out = Vec::with_capacity(len as usize);
        file.take(limit + 1)
            .read_to_end(&mut out)
            .map_err(|e| context("cannot read", &self.path.join(name), e))?;
        if out.len() as u64 > limit {
            return Err(context(
                "refusing",
                &self.path.join(name),
                io::Error::new(io::ErrorKind::InvalidData, format!("larger than {limit} bytes")),
            ));
        }
        Ok(out)
    }

    /// Writes `contents` into the new file `name` and fsyncs it (see [`Dir::create_new`]).
    pub fn write_new(&self, name: impl AsRef<OsStr>, contents: &[u8]) -> io::Result<()> {
        let name = name.as_ref();
        let mut file = self.create_new(name)?;
        let path = self.path.join(name);
        file.write_all(contents)
            .map_err(|e| context("cannot write", &path, e))?;
        file.sync_all().map_err(|e| context("cannot fsync", &path, e))
    }

    /// Replaces `name` with `contents`: a new temporary file (`.tmp-<pid>-<name>.part`) is
    /// written, fsynced and renamed over `name`. Whatever `name` was (a file, a symlink) is
    /// replaced as an entry, never written through. The directory is not fsynced.
    pub fn replace(&self, name: impl AsRef<OsStr>, contents: &[u8]) -> io::Result<()> {
        let name = name.as_ref();
        check_name(name)?;
        let tmp = super::temp::temp_name(name);
        // A leftover of an earlier process with our pid and counter: removed as an entry.
        let _ = self.unlink(&tmp);
        let result = self
            .write_new(&tmp, contents)
            .and_then(|()| self.rename(&tmp, self, name));
        if result.is_err() {
            let _ = self.unlink(&tmp);
        }
        result
    }

    /// Replaces `name` with `contents` like [`Dir::replace`], but through the spare file `spare`
    /// kept beside it (created the first time) instead of a new temporary file each time: the
    /// spare is truncated, written and fsynced, then exchanged with `name` (`RENAME_EXCHANGE`),
    /// so it holds the previous contents until the next replace. No inode is created or freed
    /// per replace: on ext4 every new inode is checked against the recently deleted ones, which
    /// made a few replaces a second ~12 % of the outbox delivery thread. `name` holds the old
    /// or the new contents at every moment, never a mix. Where `name` does not exist yet or
    /// the filesystem cannot exchange, the spare is renamed onto `name` instead. A spare that
    /// is not a regular file of ours alone (a symlink, FIFO, hard link) is removed as an entry
    /// and created anew: nothing planted there is written through. The directory is not fsynced.
    pub fn replace_via_spare(
        &self,
        name: impl AsRef<OsStr>,
        spare: impl AsRef<OsStr>,
        contents: &[u8],
    ) -> io::Result<()> {
        use std::os::unix::fs::{FileExt, MetadataExt};
        let (name, spare) = (name.as_ref(), spare.as_ref());
        check_name(name)?;
        let ours = |file: &File| file.metadata().is_ok_and(|m| m.is_file() && m.nlink() == 1);
        let file = match self.open_or_create(spare) {
            Ok(file) if ours(&file) => file,
            _ => {
                let _ = self.unlink(spare);
                self.create_new(spare)?
            }
        };
        let path = self.path.join(spare);
        file.set_len(0)
            .and_then(|()| file.write_all_at(contents, 0))
            .and_then(|()| file.sync_data())
            .map_err(|e| context("cannot write", &path, e))?;
        match self.exchange(spare, self, name) {
            Err(e) if matches!(os_error(&e), Some(libc::ENOENT | libc::EINVAL | libc::ENOSYS)) => {
                self.rename(spare, self, name)
            }
            other => other,
        }
    }

    /// Renames `from` (in this directory) to `to` in `to_dir`, replacing an existing entry.
    pub fn rename(&self, from: impl AsRef<OsStr>, to_dir: &Dir, to: impl AsRef<OsStr>) -> io::Result<()> {
        let from = from.as_ref();
        let to = to.as_ref();
        self.rename_flags(from, to_dir, to, nix::fcntl::RenameFlags::empty())
    }

    /// Renames `from` to `to` in `to_dir`; fails with [`io::ErrorKind::AlreadyExists`] if `to`
    /// exists (atomically where the filesystem supports `RENAME_NOREPLACE`).
    pub fn rename_noreplace(&self, from: impl AsRef<OsStr>, to_dir: &Dir, to: impl AsRef<OsStr>) -> io::Result<()> {
        let from = from.as_ref();
        let to = to.as_ref();
        match self.rename_flags(from, to_dir, to, nix::fcntl::RenameFlags::RENAME_NOREPLACE) {
            Err(e) if lacks_noreplace(&e) => {
                if to_dir.kind(to)?.is_some() {
                    return Err(context(
                        "cannot rename onto",
                        &to_dir.path.join(to),
                        io::Error::from(io::ErrorKind::AlreadyExists),
                    ));
                }
                self.rename(from, to_dir, to)
            }
            other => other,
        }
    }

    /// Exchanges `a` (here) and `b` (in `b_dir`) atomically.
    pub fn exchange(&self, a: impl AsRef<OsStr>, b_dir: &Dir, b: impl AsRef<OsStr>) -> io::Result<()> {
        let a = a.as_ref();
        let b = b.as_ref();
        self.rename_flags(a, b_dir, b, nix::fcntl::RenameFlags::RENAME_EXCHANGE)
    }

    fn rename_flags(
        &self,
        from: impl AsRef<OsStr>,
        to_dir: &Dir,
        to: impl AsRef<OsStr>,
        flags: nix::fcntl::RenameFlags,
    ) -> io::Result<()> {
        let from = check_name(from.as_ref())?;
        let to = check_name(to.as_ref())?;
        nix::fcntl::renameat2(self.fd.as_fd(), from, to_dir.fd.as_fd(), to, flags).map_err(|e| {
            context(
                &format!("cannot rename {} to", self.path.join(from).display()),
                &to_dir.path.join(to),
                e,
            )
        })
    }

    /// Removes the non-directory entry `name` (a symlink itself, never its target).
    pub fn unlink(&self, name: impl AsRef<OsStr>) -> io::Result<()> {
        let name = name.as_ref();
        check_name(name)?;
        nix::unistd::unlinkat(self.fd.as_fd(), name, nix::unistd::UnlinkatFlags::NoRemoveDir)
            .map_err(|e| errno_err("cannot remove", &self.path.join(name), e))
    }

    /// Removes the empty directory `name`.
    pub fn rmdir(&self, name: impl AsRef<OsStr>) -> io::Result<()> {
        let name = name.as_ref();
        check_name(name)?;
        nix::unistd::unlinkat(self.fd.as_fd(), name, nix::unistd::UnlinkatFlags::RemoveDir)
            .map_err(|e| errno_err("cannot remove directory", &self.path.join(name), e))
    }

    /// Removes `name` and, if it is a directory, everything below it, descending through
    /// descriptors: symlinks are unlinked, never followed, and nothing outside is touched.
    ///
    /// A producer can nest directories thousands deep; holding a descriptor per level would run
    /// out of them (and recursion out of stack). Directories deeper than [`REMOVE_DEPTH`] are
    /// therefore first renamed up into this directory (`.tmp-done-deep-<pid>-<n>`) and removed
    /// from there, so at most that many descriptors are open at once.
    pub fn remove_tree(&self, name: impl AsRef<OsStr>) -> io::Result<()> {
        let name = name.as_ref();
        match self.kind(name)? {
            None => Ok(()),
            Some(Kind::Dir) => {
                let mut todo = vec![name.to_owned()];
                while let Some(next) = todo.pop() {
                    let sub = self.open_dir(&next)?;
                    self.empty_into(&sub, 1, &mut todo)?;
                    drop(sub);
                    self.rmdir(&next)?;
                }
                Ok(())
            }
            Some(_) => self.unlink(name),
        }
    }

    /// Empties `dir` (at `depth` below the tree's top); directories at [`REMOVE_DEPTH`] are
    /// moved up into `self` and their new names pushed onto `moved`.
    fn empty_into(&self, dir: &Dir, depth: usize, moved: &mut Vec<OsString>) -> io::Result<()> {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        for (entry, kind) in dir.entries()? {
            if kind != Kind::Dir {
                dir.unlink(&entry)?;
            } else if depth >= REMOVE_DEPTH {
                let n = NEXT.fetch_add(1, Ordering::Relaxed);
                let aside = OsString::from(format!(
                    "{}done-deep-{}-{n}",
                    super::temp::TMP_PREFIX,
                    std::process::id()
                ));
                dir.rename_noreplace(&entry, self, &aside)?;
                moved.push(aside);
            } else {
                let sub = dir.open_dir(&entry)?;
                self.empty_into(&sub, depth + 1, moved)?;
                drop(sub);
                dir.rmdir(&entry)?;
            }
        }
        Ok(())
    }

    /// Fsyncs the directory (makes creations, renames and removals in it durable).
    pub fn sync(&self) -> io::Result<()> {
        nix::unistd::fsync(self.fd.as_fd()).map_err(|e| errno_err("cannot fsync", &self.path, e))
    }
}

/// The names in `dir`, sorted, as text: what tests compare a directory's listing with (one
/// helper for every module's tests). Panics when `dir` cannot be listed.
#[cfg(test)]
pub(crate) fn sorted_names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display()))
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// `chattr +i` on a directory while alive (root only; fails the test otherwise): a real
/// permission fault for tests of what happens when a directory cannot be changed.
#[cfg(test)]
pub(crate) struct ImmutableDir(PathBuf);

#[cfg(test)]
impl ImmutableDir {
    pub(crate) fn new(dir: &Path) -> ImmutableDir {
        let status = std::process::Command::new("chattr").arg("+i").arg(dir).status();
        assert!(
            status.is_ok_and(|s| s.success()),
            "chattr +i {} failed: run the tests as root on a filesystem with attributes (e2fsprogs)",
            dir.display()
        );
        ImmutableDir(dir.to_owned())
    }
}

#[cfg(test)]
impl Drop for ImmutableDir {
    fn drop(&mut self) {
        let _ = std::process::Command::new("chattr").arg("-i").arg(&self.0).status();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unsupported_noreplace_is_recognised_through_the_path_context() {
        let path = Path::new("/base/incoming/x");
        for errno in [libc::EINVAL, libc::ENOSYS] {
            let wrapped = context("cannot rename", path, io::Error::from_raw_os_error(errno));
            assert!(lacks_noreplace(&wrapped), "{wrapped}");
        }
        let taken = context("cannot rename", path, io::Error::from_raw_os_error(libc::EEXIST));
        assert!(!lacks_noreplace(&taken));
    }
    use std::fs;
    use std::os::unix::fs::symlink;

    fn tree() -> (tempfile::TempDir, Dir, PathBuf) {
        let tmp = tempfile::tempdir().unwrap();
        let inside = tmp.path().join("base");
        let outside = tmp.path().join("outside");
        fs::create_dir_all(&inside).unwrap();
        fs::create_dir_all(&outside).unwrap();
        fs::write(outside.join("victim"), b"precious").unwrap();
        let dir = Dir::open(&inside).unwrap();
        (tmp, dir, outside)
    }

    #[test]
    fn a_symlinked_directory_is_refused_at_every_depth() {
        let (_tmp, dir, outside) = tree();
        symlink(&outside, dir.path().join("link")).unwrap();
        fs::create_dir_all(dir.path().join("a/b")).unwrap();
        symlink(&outside, dir.path().join("a/b/c")).unwrap();
        assert!(dir.open_dir("link").is_err());
        assert!(dir.open_dir("a/b/c").is_err());
        assert!(dir.open_dir("a/../../outside").is_err(), "`..` refused");
        assert!(dir.open_dir("/etc").is_err(), "absolute refused");
        assert!(dir.create_dir_all("link/new").is_err());
        assert!(!outside.join("new").exists());
        let b = dir.open_dir("a/b").unwrap();
        assert_eq!(b.path(), dir.path().join("a/b"));
    }

    #[test]
    fn files_are_read_only_when_regular_and_never_through_a_link() {
        let (_tmp, dir, outside) = tree();
        symlink(outside.join("victim"), dir.path().join("link")).unwrap();
        nix::unistd::mkfifo(&dir.path().join("fifo"), Mode::from_bits_truncate(0o600)).unwrap();
        fs::create_dir(dir.path().join("sub")).unwrap();
        for name in ["link", "fifo", "sub"] {
            let err = dir.open_read(name).unwrap_err();
            assert_eq!(err.kind(), io::ErrorKind::InvalidData, "{name}: {err}");
            assert!(err.to_string().contains(name), "names the path: {err}");
        }
        fs::write(dir.path().join("big"), vec![b'x'; 100]).unwrap();
        assert_eq!(dir.read_limited("big", 100).unwrap().len(), 100);
        assert!(dir.read_limited("big", 99).is_err());
    }

    #[test]
    fn files_below_are_opened_only_when_no_component_is_a_link() {
        let (_tmp, dir, outside) = tree();
        fs::create_dir_all(dir.path().join("a/b")).unwrap();
        fs::write(dir.path().join("a/b/order"), b"ok").unwrap();
        symlink(&outside, dir.path().join("a/swapped")).unwrap();
        symlink(outside.join("victim"), dir.path().join("a/b/link")).unwrap();
        let mut text = String::new();
        io::Read::read_to_string(&mut dir.open_file_beneath("a/b/order").unwrap(), &mut text).unwrap();
        assert_eq!(text, "ok");
        assert!(dir.open_file_beneath("a/swapped/victim").is_err());
        assert!(dir.open_file_beneath("a/b/link").is_err());
        assert!(dir.open_file_beneath("../outside/victim").is_err());
        assert!(
            dir.open_file_beneath(outside.join("victim")).is_err(),
            "absolute refused"
        );
    }

    #[test]
    fn writes_replace_the_entry_and_never_write_through_it() {
        let (_tmp, dir, outside) = tree();
        symlink(outside.join("victim"), dir.path().join("REASON")).unwrap();
        assert!(dir.create_new("REASON").is_err());
        dir.replace("REASON", b"why\n").unwrap();
        assert_eq!(fs::read(outside.join("victim")).unwrap(), b"precious");
        assert_eq!(fs::read(dir.path().join("REASON")).unwrap(), b"why\n");
        assert!(!fs::symlink_metadata(dir.path().join("REASON"))
            .unwrap()
            .file_type()
            .is_symlink());
    }

    #[test]
    fn remove_tree_unlinks_links_and_leaves_their_targets() {
        let (_tmp, dir, outside) = tree();
        fs::create_dir_all(dir.path().join("snap/deep")).unwrap();
        fs::write(dir.path().join("snap/deep/file"), b"x").unwrap();
        symlink(&outside, dir.path().join("snap/dirlink")).unwrap();
        symlink(outside.join("victim"), dir.path().join("snap/deep/filelink")).unwrap();
        dir.remove_tree("snap").unwrap();
        assert!(dir.kind("snap").unwrap().is_none());
        assert_eq!(fs::read(outside.join("victim")).unwrap(), b"precious");
        dir.remove_tree("absent").unwrap();
    }

    #[test]
    fn remove_tree_handles_trees_deeper_than_descriptors_last_and_names_that_are_not_utf8() {
        let (_tmp, dir, _outside) = tree();
        // 3,000 levels: one descriptor per level would pass the usual limit of 1,024.
        fs::create_dir(dir.path().join("snap")).unwrap();
        let top = Dir::open(&dir.path().join("snap")).unwrap();
        let mut current = top;
        for _ in 0..3000 {
            current.mkdir("d").unwrap();
            current = current.open_dir("d").unwrap();
        }
        current.write_new(OsStr::from_bytes(b"bad-\xff-name"), b"x").unwrap();
        dir.remove_tree("snap").unwrap();
        assert!(dir.kind("snap").unwrap().is_none());
        assert_eq!(dir.entries().unwrap(), [], "nothing moved up is left behind");
    }

    #[test]
    fn entries_report_kinds_without_following() {
        let (_tmp, dir, outside) = tree();
        fs::write(dir.path().join("f"), b"").unwrap();
        fs::create_dir(dir.path().join("d")).unwrap();
        symlink(&outside, dir.path().join("l")).unwrap();
        let mut entries = dir.entries().unwrap();
        entries.sort();
        let shown: Vec<(String, Kind)> = entries
            .into_iter()
            .map(|(n, k)| (n.to_string_lossy().into_owned(), k))
            .collect();
        assert_eq!(
            shown,
            [
                ("d".to_owned(), Kind::Dir),
                ("f".to_owned(), Kind::File),
                ("l".to_owned(), Kind::Symlink)
            ]
        );
    }

    #[test]
    fn replace_via_spare_reuses_two_inodes_and_never_writes_through_a_planted_spare() {
        use std::os::unix::fs::MetadataExt;
        let temp = tempfile::tempdir().unwrap();
        let dir = Dir::open(temp.path()).unwrap();
        let inode = |name: &str| std::fs::symlink_metadata(temp.path().join(name)).unwrap().ino();
        dir.replace_via_spare("ack", ".spare", b"one\n").unwrap();
        assert_eq!(std::fs::read(temp.path().join("ack")).unwrap(), b"one\n");
        dir.replace_via_spare("ack", ".spare", b"two, longer\n").unwrap();
        let inodes = [inode("ack"), inode(".spare")];
        for contents in ["three\n", "four, longer again\n", "5\n"] {
            dir.replace_via_spare("ack", ".spare", contents.as_bytes()).unwrap();
            assert_eq!(std::fs::read_to_string(temp.path().join("ack")).unwrap(), contents);
            let mut now = [inode("ack"), inode(".spare")];
            now.sort_unstable();
            let mut before = inodes;
            before.sort_unstable();
            assert_eq!(now, before, "no inode created or freed by a replace");
        }
        assert_eq!(
            std::fs::read(temp.path().join(".spare")).unwrap(),
            b"four, longer again\n"
        );

        // A symlink, a hard link or a FIFO planted as the spare: replaced as an entry.
        let victim = temp.path().join("victim");
        std::fs::write(&victim, "victim\n").unwrap();
        std::fs::remove_file(temp.path().join(".spare")).unwrap();
        std::os::unix::fs::symlink(&victim, temp.path().join(".spare")).unwrap();
        dir.replace_via_spare("ack", ".spare", b"six\n").unwrap();
        std::fs::remove_file(temp.path().join(".spare")).unwrap();
        std::fs::hard_link(&victim, temp.path().join(".spare")).unwrap();
        dir.replace_via_spare("ack", ".spare", b"seven\n").unwrap();
        assert_eq!(std::fs::read(&victim).unwrap(), b"victim\n", "never written through");
        std::fs::remove_file(temp.path().join(".spare")).unwrap();
        nix::unistd::mkfifo(&temp.path().join(".spare"), Mode::from_bits_truncate(0o644)).unwrap();
        dir.replace_via_spare("ack", ".spare", b"eight\n").unwrap();
        assert_eq!(std::fs::read(temp.path().join("ack")).unwrap(), b"eight\n");
        assert!(std::fs::symlink_metadata(temp.path().join(".spare")).unwrap().is_file());
    }

    #[test]
    fn rename_noreplace_refuses_an_existing_name() {
        let (_tmp, dir, _outside) = tree();
        fs::create_dir(dir.path().join("a")).unwrap();
        fs::create_dir(dir.path().join("b")).unwrap();
        let err = dir.rename_noreplace("a", &dir, "b").unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::AlreadyExists, "{err}");
        dir.rename_noreplace("a", &dir, "c").unwrap();
        assert_eq!(dir.kind("c").unwrap(), Some(Kind::Dir));
    }
}
