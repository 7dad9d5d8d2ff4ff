//! The haproxystats snapshot layout: a directory named by its time holding, per HAProxy process,
//! `<socket>_info` (`show info`) and `<socket>_stat` (`show stat`). Other files (spoolmon's own
//! marks, for instance) are ignored. This module finds the pairs and reads them as text.
//!
//! Bounds: at most [`MAX_PAIRS`] pairs, each file at most [`MAX_FILE`] bytes and all of them
//! together at most [`MAX_SNAPSHOT`] bytes, checked from the files' sizes before any is read (and
//! again while reading, for a file that grows), so one snapshot never costs more memory than that.

use super::error::HaproxySnapshotError;
use crate::spool::snapshot::SnapshotName;
use std::io::Read;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

/// Suffix of the `show info` half of a pair.
pub const INFO_SUFFIX: &str = "_info";
/// Suffix of the `show stat` half of a pair.
pub const STAT_SUFFIX: &str = "_stat";
/// Largest file read: 16 times a 2,000-server process, far below what would hurt memory.
pub const MAX_FILE: u64 = 64 << 20;
/// Most bytes of all `_info`/`_stat` files of one snapshot together (four 64 MiB files).
pub const MAX_SNAPSHOT: u64 = 256 << 20;
/// Most `_info`/`_stat` pairs (HAProxy processes) in one snapshot.
pub const MAX_PAIRS: usize = 1024;

/// The two files of one HAProxy process, read.
#[derive(Debug)]
pub struct ProcessFiles {
    /// What precedes `_info`/`_stat`: the socket's file name or `host:port`.
    pub socket: String,
    pub info: String,
    pub stat: String,
}

impl ProcessFiles {
    pub fn info_name(&self) -> String {
        format!("{}{INFO_SUFFIX}", self.socket)
    }

    pub fn stat_name(&self) -> String {
        format!("{}{STAT_SUFFIX}", self.socket)
    }
}

/// True if `dir` holds at least one `<socket>_info` or `<socket>_stat` file.
pub fn is_haproxy_snapshot(dir: &Path) -> bool {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return false;
    };
    entries
        .flatten()
        .any(|entry| entry.file_name().to_str().and_then(pair_half).is_some())
}

/// Checks that the directory's name is a time.
pub fn check_name(dir: &Path) -> Result<SnapshotName, HaproxySnapshotError> {
    let name = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    SnapshotName::parse(&name).ok_or(HaproxySnapshotError::NameNotATime(name))
}

/// Reads every pair of `dir`, sorted by socket name, within [`MAX_PAIRS`] and [`MAX_SNAPSHOT`]
/// (checked from the sizes before anything is read).
pub fn read_processes(dir: &Path) -> Result<Vec<ProcessFiles>, HaproxySnapshotError> {
    let sockets = list_sockets(dir)?;
    if sockets.len() > MAX_PAIRS {
        return Err(HaproxySnapshotError::TooManyProcesses {
            count: sockets.len(),
            limit: MAX_PAIRS,
        });
    }
    let mut total = 0u64;
    for socket in &sockets {
        for suffix in [INFO_SUFFIX, STAT_SUFFIX] {
            total = total.saturating_add(regular_size(dir, &format!("{socket}{suffix}"))?);
        }
    }
    if total > MAX_SNAPSHOT {
        return Err(HaproxySnapshotError::SnapshotTooLarge {
            total,
            limit: MAX_SNAPSHOT,
        });
    }
    // Files may grow after the sizes were taken: what is read stays within the total too.
    let mut budget = MAX_SNAPSHOT;
    let mut read = |name: String| -> Result<String, HaproxySnapshotError> {
        let text = read_text(dir, &name, budget)?;
        budget -= text.len() as u64;
        Ok(text)
    };
    sockets
        .into_iter()
        .map(|socket| {
            let info = read(format!("{socket}{INFO_SUFFIX}"))?;
            let stat = read(format!("{socket}{STAT_SUFFIX}"))?;
            Ok(ProcessFiles { socket, info, stat })
        })
        .collect()
}

/// The size of the regular file `dir/name` (not followed through a symlink).
fn regular_size(dir: &Path, name: &str) -> Result<u64, HaproxySnapshotError> {
    let meta = std::fs::symlink_metadata(dir.join(name)).map_err(|source| HaproxySnapshotError::Io {
        file: name.to_owned(),
        source,
    })?;
    if !meta.file_type().is_file() {
        return Err(HaproxySnapshotError::NotAFile { file: name.to_owned() });
    }
    Ok(meta.len())
}

/// `(socket, is_info)` for a pair file name; `None` for other files.
fn pair_half(name: &str) -> Option<(&str, bool)> {
    let (socket, is_info) = match name.strip_suffix(INFO_SUFFIX) {
        Some(socket) => (socket, true),
        None => (name.strip_suffix(STAT_SUFFIX)?, false),
    };
    (!socket.is_empty()).then_some((socket, is_info))
}

/// The sockets of `dir`; an `_info` without its `_stat` (or the reverse) is an error.
fn list_sockets(dir: &Path) -> Result<Vec<String>, HaproxySnapshotError> {
    let io_error = |source| HaproxySnapshotError::Io {
        file: ".".into(),
        source,
    };
    let mut infos = Vec::new();
    let mut stats = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io_error)? {
        let name = entry.map_err(io_error)?.file_name();
        match name.to_str().and_then(pair_half) {
            Some((socket, true)) => infos.push(socket.to_owned()),
            Some((socket, false)) => stats.push(socket.to_owned()),
            None => {}
        }
    }
    infos.sort();
    stats.sort();
    if let Some(lone) = infos.iter().find(|s| stats.binary_search(s).is_err()) {
        return Err(missing_half(lone, INFO_SUFFIX, STAT_SUFFIX));
    }
    if let Some(lone) = stats.iter().find(|s| infos.binary_search(s).is_err()) {
        return Err(missing_half(lone, STAT_SUFFIX, INFO_SUFFIX));
    }
    if infos.is_empty() {
        return Err(HaproxySnapshotError::NoProcesses);
    }
    Ok(infos)
}

fn missing_half(socket: &str, present: &str, missing: &str) -> HaproxySnapshotError {
    HaproxySnapshotError::MissingHalf {
        present: format!("{socket}{present}"),
        missing: format!("{socket}{missing}"),
    }
}

/// Reads `dir/name` as text: a regular file (not followed through a symlink, never a FIFO that
/// would block), at most [`MAX_FILE`] bytes, not empty, UTF-8 without NUL bytes. More than
/// `budget` bytes (what is left of [`MAX_SNAPSHOT`]) means the snapshot grew past its bound.
fn read_text(dir: &Path, name: &str, budget: u64) -> Result<String, HaproxySnapshotError> {
    let io_error = |source| HaproxySnapshotError::Io {
        file: name.to_owned(),
        source,
    };
    let path = dir.join(name);
    if !std::fs::symlink_metadata(&path)
        .map_err(io_error)?
        .file_type()
        .is_file()
    {
        return Err(HaproxySnapshotError::NotAFile { file: name.to_owned() });
    }
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(&path)
        .map_err(io_error)?;
    let length = file.metadata().map_err(io_error)?.len();
    if length > MAX_FILE {
        return Err(HaproxySnapshotError::TooLarge {
            file: name.to_owned(),
            limit: MAX_FILE,
        });
    }
    let mut bytes = Vec::with_capacity(length.min(budget) as usize);
    let limit = MAX_FILE.min(budget);
    file.take(limit + 1).read_to_end(&mut bytes).map_err(io_error)?;
    if bytes.len() as u64 > limit {
        return Err(if limit == MAX_FILE {
            HaproxySnapshotError::TooLarge {
                file: name.to_owned(),
                limit: MAX_FILE,
            }
        } else {
            HaproxySnapshotError::SnapshotTooLarge {
                total: MAX_SNAPSHOT - budget + bytes.len() as u64,
                limit: MAX_SNAPSHOT,
            }
        });
    }
    into_text(name, bytes)
}

fn into_text(name: &str, bytes: Vec<u8>) -> Result<String, HaproxySnapshotError> {
    if bytes.is_empty() {
        return Err(HaproxySnapshotError::Empty { file: name.to_owned() });
    }
    let binary = |offset| HaproxySnapshotError::Binary {
        file: name.to_owned(),
        offset,
    };
    // `contains` is a vectorised search; the position is only wanted for the message.
    if bytes.contains(&0) {
        return Err(binary(bytes.iter().position(|&b| b == 0).unwrap_or_default()));
    }
    String::from_utf8(bytes).map_err(|e| binary(e.utf8_error().valid_up_to()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    #[test]
    fn pairs_are_found_and_other_files_ignored() {
        let dir = tempfile::tempdir().unwrap();
        for name in [
            "b.sock_info",
            "b.sock_stat",
            "a_info",
            "a_stat",
            "APPLIED",
            "_info",
            "notes",
        ] {
            fs::write(dir.path().join(name), "x\n").unwrap();
        }
        assert!(is_haproxy_snapshot(dir.path()));
        let processes = read_processes(dir.path()).unwrap();
        let sockets: Vec<_> = processes.iter().map(|p| p.socket.as_str()).collect();
        assert_eq!(sockets, ["a", "b.sock"]);
        assert_eq!(processes[1].stat_name(), "b.sock_stat");
    }

    #[test]
    fn a_missing_half_is_named() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("p1_info"), "x\n").unwrap();
        fs::write(dir.path().join("p1_stat"), "x\n").unwrap();
        fs::write(dir.path().join("p2_stat"), "x\n").unwrap();
        let err = read_processes(dir.path()).unwrap_err();
        assert!(err.to_string().contains("p2_stat has no p2_info"), "{err}");
    }

    #[test]
    fn empty_binary_and_special_files_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        assert!(!is_haproxy_snapshot(dir.path()));
        assert!(matches!(
            read_processes(dir.path()),
            Err(HaproxySnapshotError::NoProcesses)
        ));
        fs::write(dir.path().join("p_info"), "").unwrap();
        fs::write(dir.path().join("p_stat"), "x\n").unwrap();
        assert!(matches!(
            read_processes(dir.path()),
            Err(HaproxySnapshotError::Empty { .. })
        ));
        fs::write(dir.path().join("p_info"), b"Name: \xff\xfe\n").unwrap();
        let err = read_processes(dir.path()).unwrap_err();
        assert!(matches!(err, HaproxySnapshotError::Binary { offset: 6, .. }), "{err}");
        fs::remove_file(dir.path().join("p_info")).unwrap();
        nix::unistd::mkfifo(&dir.path().join("p_info"), nix::sys::stat::Mode::S_IRWXU).unwrap();
        assert!(matches!(
            read_processes(dir.path()),
            Err(HaproxySnapshotError::NotAFile { .. })
        ));
    }

    #[test]
    fn a_snapshot_whose_files_are_too_large_together_is_refused_before_anything_is_read() {
        let dir = tempfile::tempdir().unwrap();
        // Three pairs just under the per-file limit (sparse: nothing is on disk, nothing read).
        for socket in ["p1", "p2", "p3"] {
            for suffix in [INFO_SUFFIX, STAT_SUFFIX] {
                let file = fs::File::create(dir.path().join(format!("{socket}{suffix}"))).unwrap();
                file.set_len(MAX_FILE - 1).unwrap();
            }
        }
        let err = read_processes(dir.path()).unwrap_err();
        assert!(
            matches!(err, HaproxySnapshotError::SnapshotTooLarge { total, limit: MAX_SNAPSHOT } if total == 6 * (MAX_FILE - 1)),
            "{err}"
        );
        assert!(
            err.to_string().contains(&format!("more than the {MAX_SNAPSHOT}")),
            "{err}"
        );
    }

    #[test]
    fn a_snapshot_with_more_pairs_than_the_limit_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        for n in 0..=MAX_PAIRS {
            for suffix in [INFO_SUFFIX, STAT_SUFFIX] {
                fs::write(dir.path().join(format!("p{n}{suffix}")), "x\n").unwrap();
            }
        }
        let err = read_processes(dir.path()).unwrap_err();
        assert!(
            matches!(err, HaproxySnapshotError::TooManyProcesses { count, limit: MAX_PAIRS } if count == MAX_PAIRS + 1),
            "{err}"
        );
        assert!(err.to_string().contains("more than the 1024"), "{err}");
        fs::remove_file(dir.path().join(format!("p0{INFO_SUFFIX}"))).unwrap();
        fs::remove_file(dir.path().join(format!("p0{STAT_SUFFIX}"))).unwrap();
        assert_eq!(
            read_processes(dir.path()).unwrap().len(),
            MAX_PAIRS,
            "the limit itself is fine"
        );
    }

    #[test]
    fn only_io_errors_can_be_transient() {
        use crate::spool::fault::Fault;
        let io = |code| HaproxySnapshotError::Io {
            file: "p_stat".into(),
            source: std::io::Error::from_raw_os_error(code),
        };
        for code in [libc::EIO, libc::EMFILE, libc::ENOMEM] {
            assert_eq!(io(code).fault(), Fault::Transient, "{code}");
        }
        assert_eq!(io(libc::EACCES).fault(), Fault::Permanent);
        let content = [
            HaproxySnapshotError::NoProcesses,
            HaproxySnapshotError::Empty { file: "p_info".into() },
            HaproxySnapshotError::TooManyProcesses {
                count: 2000,
                limit: MAX_PAIRS,
            },
        ];
        for error in content {
            assert_eq!(error.fault(), Fault::Permanent, "{error}");
        }
    }

    #[test]
    fn directory_names_must_be_times() {
        assert_eq!(
            check_name(Path::new("/x/incoming/1795431755")).unwrap().epoch,
            1_795_431_755
        );
        assert!(check_name(Path::new("/x/incoming/1795431755-pull-000000001")).is_ok());
        let err = check_name(Path::new("/x/incoming/latest")).unwrap_err();
        assert!(matches!(err, HaproxySnapshotError::NameNotATime(ref n) if n == "latest"));
    }
}
