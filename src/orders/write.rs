//! Writing orders for producers that would rather not write files themselves: `spoolmon order
//! add|touch|remove` and the API's `PUT`/`DELETE /api/v1/orders/<id>`.
//!
//! Owns on disk: only the order files (and the directories of their ids) it is asked to write,
//! touch or remove below `orders/`, and its temporary files there (names the book ignores).
//!
//! Invariants:
//! - **Nothing outside `orders/`.** Every access goes through [`crate::spool::beneath::Dir`] from
//!   the base directory down: `orders/` and every directory of the id are opened without
//!   following a symlink. An id is a valid [`OrderId`] whose every part is a name the order book
//!   reads ([`order_id`]: no dotfiles, `*.tmp`, `*~`, not deeper than the book walks).
//! - **Validated like the daemon reads it.** The text is parsed by the daemon's own parser
//!   ([`parse_order`] with the caller's [`OrderOptions`], and the old interface's `telegraf/<id>`
//!   if there is one); an order the daemon would not measure is refused with the parser's reason.
//! - **Atomic.** An order is written under a temporary name, fsynced, and renamed into place
//!   (without replacing anything unless asked to), then its directory is fsynced: the daemon
//!   never reads half an order, and an order acknowledged survives a crash.
//! - **Permissions follow `orders/`.** Directories created for the id get the permission bits of
//!   `orders/` (a group-writable, setgid `orders/` stays shared below), and the file is
//!   group-writable when `orders/` is.
//!
//! The daemon itself never writes here; it reads what this writes like any producer's file.

use super::book::{is_ignored_name, MAX_DEPTH};
use super::order::{parse_order, MAX_ORDER_BYTES};
use super::OrderOptions;
use crate::shared::measurement::OrderId;
use crate::spool::beneath::{self, Dir, Kind};
use crate::spool::BaseDir;
use std::ffi::OsStr;
use std::io::{self, Write};
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};

/// Why an order was not written, touched or removed.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    /// The id is not one the daemon reads.
    #[error("{0}")]
    BadId(String),
    /// The text is not an order the daemon would measure (the parser's reason).
    #[error("refused: the daemon would not measure this order: {0}")]
    Invalid(String),
    /// The text is larger than an order may be.
    #[error("the order is larger than {MAX_ORDER_BYTES} bytes, the daemon's limit for an order file")]
    TooLarge,
    /// The text is not UTF-8.
    #[error("the order is not UTF-8 text")]
    NotText,
    /// There is an order of this id already (and replacing was not asked for).
    #[error("order {id} exists ({path}): not replaced")]
    Exists { id: OrderId, path: PathBuf },
    /// There is no order of this id.
    #[error("there is no order {0}")]
    Missing(PathBuf),
    /// A directory (or something else that is not an order file) has the order's name.
    #[error("{0} is not an order file")]
    NotAFile(PathBuf),
    /// The filesystem refused (the error names the path).
    #[error(transparent)]
    Io(#[from] io::Error),
}

impl WriteError {
    /// Whether the caller asked for something wrong (not the machine failing).
    pub fn is_callers(&self) -> bool {
        !matches!(self, WriteError::Io(_))
    }
}

/// What a written order said besides being valid.
#[derive(Debug, Default)]
pub struct Written {
    /// The parser's warnings (unknown keys, ...): the order was written all the same.
    pub warnings: Vec<String>,
    /// Whether an order of the same id was replaced.
    pub replaced: bool,
}

/// A validated order id: an [`OrderId`] whose parts the order book reads.
pub fn order_id(text: &str) -> Result<OrderId, WriteError> {
    let id = OrderId::new(text).map_err(|e| WriteError::BadId(e.to_string()))?;
    let parts: Vec<&str> = id.as_str().split('/').collect();
    if parts.len() > MAX_DEPTH {
        return Err(WriteError::BadId(format!(
            "order id {text:?} is deeper than {MAX_DEPTH} directories: the daemon would not read it"
        )));
    }
    if let Some(part) = parts.iter().find(|part| is_ignored_name(OsStr::new(part))) {
        return Err(WriteError::BadId(format!(
            "order id {text:?}: the daemon ignores the name {part:?} (dotfiles, *.tmp, *.part, *.swp, *~, #name#)"
        )));
    }
    Ok(id)
}

/// An id longer than this cannot name a path (PATH_MAX, 4096 bytes with the final NUL).
pub const MAX_ID_BYTES: usize = 4095;

/// An id to look up (`spoolmon show`, the API): an [`order_id`] of printable characters, short
/// enough to be a path, checked before anything is read. The message quotes at most 80
/// characters of it, control characters replaced.
pub fn lookup_id(text: &str) -> Result<OrderId, WriteError> {
    if text.len() > MAX_ID_BYTES {
        return Err(WriteError::BadId(format!(
            "order id of {} bytes refused: longer than any path can be ({MAX_ID_BYTES} bytes)",
            text.len()
        )));
    }
    if text.chars().any(char::is_control) {
        let shown: String = super::book::printable(text).chars().take(80).collect();
        return Err(WriteError::BadId(format!(
            "order id {shown:?} refused: it contains control characters"
        )));
    }
    order_id(text)
}

/// The order text from bytes a producer sent: at most [`MAX_ORDER_BYTES`], UTF-8.
pub fn order_text(bytes: Vec<u8>) -> Result<String, WriteError> {
    if bytes.len() as u64 > MAX_ORDER_BYTES {
        return Err(WriteError::TooLarge);
    }
    String::from_utf8(bytes).map_err(|_| WriteError::NotText)
}

/// `orders/` of a base directory, opened without following a symlink.
pub fn orders_dir(base: &BaseDir) -> io::Result<Dir> {
    let root = base.root_dir().map_err(|e| {
        io::Error::new(
            e.kind(),
            format!(
                "cannot open the base directory {} (is --base-dir right?): {e}",
                base.root().display()
            ),
        )
    })?;
    root.open_dir("orders")
}

/// Validates `text` as order `id` and writes it atomically below `orders/`; an existing order is
/// replaced only when `replace`.
pub fn write(
    base: &BaseDir,
    options: &OrderOptions,
    id: &OrderId,
    text: &str,
    replace: bool,
) -> Result<Written, WriteError> {
    let orders = orders_dir(base)?;
    let telegraf = telegraf_file(base, id)?;
    let parsed =
        parse_order(id, text, telegraf.as_deref(), options).map_err(|e| WriteError::Invalid(format!("{e:#}")))?;
    let (parent, name) = split(id);
    let mode = nix::sys::stat::fstat(orders.as_fd())
        .map_err(|e| beneath::context("cannot stat", orders.path(), e))?
        .st_mode
        & 0o7777;
    let dir = create_dirs(&orders, &parent, mode)?;
    let replaced = match dir.kind(name)? {
        Some(Kind::Dir) => return Err(WriteError::NotAFile(dir.path().join(name))),
        Some(_) if !replace => {
            return Err(WriteError::Exists {
                id: id.clone(),
                path: dir.path().join(name),
            })
        }
        Some(_) => true,
        None => false,
    };
    let tmp = crate::spool::temp::temp_name(name);
    let written = write_file(&dir, &tmp, text.as_bytes(), 0o644 | (mode & 0o020)).and_then(|()| {
        if replace {
            dir.rename(&tmp, &dir, name)
        } else {
            dir.rename_noreplace(&tmp, &dir, name)
        }
    });
    if let Err(e) = written {
        let _ = dir.unlink(&tmp);
        if e.kind() == io::ErrorKind::AlreadyExists {
            return Err(WriteError::Exists {
                id: id.clone(),
                path: dir.path().join(name),
            });
        }
        return Err(e.into());
    }
    dir.sync()?;
    Ok(Written {
        warnings: parsed.warnings,
        replaced,
    })
}

/// Sets the order's mtime (and atime) to now: what keeps an order alive past `order-timeout`.
pub fn touch(orders: &Dir, id: &OrderId) -> Result<(), WriteError> {
    let path = orders.path().join(id.as_str());
    let file = orders.open_file_beneath(id.as_str()).map_err(|e| match e.kind() {
        io::ErrorKind::NotFound => WriteError::Missing(path.clone()),
        _ => WriteError::Io(e),
    })?;
    let meta = file.metadata().map_err(|e| beneath::context("cannot stat", &path, e))?;
    if !meta.file_type().is_file() {
        return Err(WriteError::NotAFile(path));
    }
    let now = nix::sys::time::TimeSpec::UTIME_NOW;
    nix::sys::stat::futimens(file.as_fd(), &now, &now).map_err(|e| beneath::context("cannot touch", &path, e))?;
    Ok(())
}

/// Deletes the order file (a symlink itself, never its target); a directory is refused. The
/// daemon then archives the order's output, as for any deleted order.
pub fn remove(orders: &Dir, id: &OrderId) -> Result<(), WriteError> {
    let (parent, name) = split(id);
    let dir = orders.open_dir(&parent).map_err(|e| match e.kind() {
        io::ErrorKind::NotFound => WriteError::Missing(orders.path().join(id.as_str())),
        _ => WriteError::Io(e),
    })?;
    match dir.kind(name)? {
        None => Err(WriteError::Missing(dir.path().join(name))),
        Some(Kind::Dir) => Err(WriteError::NotAFile(dir.path().join(name))),
        Some(_) => Ok(dir.unlink(name)?),
    }
}

/// The directory holding order `id` and the file's name in it.
fn split(id: &OrderId) -> (PathBuf, &OsStr) {
    let path = Path::new(id.as_str());
    let parent = path.parent().unwrap_or(Path::new("")).to_path_buf();
    (parent, path.file_name().expect("an order id ends in a name"))
}

/// The old interface's `telegraf/<id>`, if there is one: the daemon reads it with the order.
fn telegraf_file(base: &BaseDir, id: &OrderId) -> Result<Option<String>, WriteError> {
    let root = base.root_dir()?;
    let telegraf = match root.open_dir("telegraf") {
        Ok(dir) => dir,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    let (parent, name) = split(id);
    let dir = match telegraf.open_dir(&parent) {
        Ok(dir) => dir,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    if dir.kind(name)?.is_none() {
        return Ok(None);
    }
    let bytes = dir.read_limited(name, MAX_ORDER_BYTES)?;
    String::from_utf8(bytes)
        .map(Some)
        .map_err(|_| WriteError::Invalid(format!("{} is not UTF-8 text", dir.path().join(name).display())))
}

/// Opens `rel` below `orders`, creating missing directories with the permission bits `mode`
/// (those of `orders/`); a symlink or a file in the way is refused, never followed.
fn create_dirs(orders: &Dir, rel: &Path, mode: u32) -> io::Result<Dir> {
    let mut current = orders.try_clone()?;
    for part in rel.iter() {
        let created = match current.mkdir(part) {
            Ok(()) => true,
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => false,
            Err(e) => return Err(e),
        };
        let next = current.open_dir(part)?;
        if created {
            nix::sys::stat::fchmod(next.as_fd(), nix::sys::stat::Mode::from_bits_truncate(mode))
                .map_err(|e| beneath::context("cannot set the mode of", next.path(), e))?;
        }
        current = next;
    }
    Ok(current)
}

/// Writes the new file `name` in `dir` with `contents` and permission bits `mode`, fsynced.
fn write_file(dir: &Dir, name: &str, contents: &[u8], mode: u32) -> io::Result<()> {
    let path = dir.path().join(name);
    let mut file = dir.create_new(name)?;
    nix::sys::stat::fchmod(file.as_fd(), nix::sys::stat::Mode::from_bits_truncate(mode))
        .map_err(|e| beneath::context("cannot set the mode of", &path, e))?;
    file.write_all(contents)
        .map_err(|e| beneath::context("cannot write", &path, e))?;
    file.sync_all().map_err(|e| beneath::context("cannot fsync", &path, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A NUL cannot come through the command line (argv strings end at it), but an id is checked
    /// for one all the same (the API takes ids from URLs).
    #[test]
    fn ids_with_nul_parent_parts_or_ignored_names_are_refused() {
        for id in [
            "a\0b", "\0", "../x", "/etc/x", "a/./b", "a/.git/b", "#x#", "4913", "a.swp", "a.part", "",
        ] {
            assert!(order_id(id).is_err(), "{id:?}");
        }
        let deep = vec!["d"; MAX_DEPTH + 1].join("/");
        assert!(order_id(&deep).unwrap_err().to_string().contains("deeper"));
        assert_eq!(order_id("app/sub/t-1.yaml").unwrap().as_str(), "app/sub/t-1.yaml");
    }

    #[test]
    fn texts_over_the_limit_or_not_utf8_are_refused() {
        assert!(matches!(
            order_text(vec![b'a'; MAX_ORDER_BYTES as usize + 1]),
            Err(WriteError::TooLarge)
        ));
        assert!(matches!(order_text(vec![0xff, 0xfe]), Err(WriteError::NotText)));
        assert_eq!(order_text(b"step: 20\n".to_vec()).unwrap(), "step: 20\n");
    }

    #[test]
    fn an_order_is_written_validated_and_never_replaced_unless_asked() {
        let (_tmp, base) = crate::spool::layout::temp_base();
        let options = OrderOptions::default();
        let id = order_id("team/t1").unwrap();
        let text = "user: u\nstep: 20\npings: 3\nprobe: fping\nfping:\n    host: 127.0.0.1\n";
        let written = write(&base, &options, &id, text, false).unwrap();
        assert!(!written.replaced);
        let on_disk = std::fs::read_to_string(base.root().join("orders/team/t1")).unwrap();
        assert_eq!(on_disk, text);
        assert!(matches!(
            write(&base, &options, &id, text, false),
            Err(WriteError::Exists { .. })
        ));
        assert!(write(&base, &options, &id, text, true).unwrap().replaced);
        let bad = write(&base, &options, &order_id("team/t2").unwrap(), "step: x\n", false).unwrap_err();
        assert!(matches!(bad, WriteError::Invalid(_)), "{bad}");
        assert!(!base.root().join("orders/team/t2").exists());
        let names = crate::spool::beneath::sorted_names(&base.root().join("orders/team"));
        assert_eq!(names, ["t1"], "no temporary file is left");

        let orders = orders_dir(&base).unwrap();
        remove(&orders, &id).unwrap();
        assert!(matches!(remove(&orders, &id), Err(WriteError::Missing(_))));
        assert!(matches!(touch(&orders, &id), Err(WriteError::Missing(_))));
    }

    #[test]
    fn a_symlinked_directory_in_the_id_is_refused_and_nothing_is_written_through_it() {
        let (_tmp, base) = crate::spool::layout::temp_base();
        let outside = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink(outside.path(), base.root().join("orders/evil")).unwrap();
        let text = "user: u\nstep: 20\npings: 3\nprobe: fping\nfping:\n    host: 127.0.0.1\n";
        let id = order_id("evil/t").unwrap();
        assert!(write(&base, &OrderOptions::default(), &id, text, false).is_err());
        assert_eq!(std::fs::read_dir(outside.path()).unwrap().count(), 0);
    }
}
