//! The haproxystats snapshot layout: a directory named by its time holding, per HAProxy process,
//! `<socket>_info` (`show info`) and `<socket>_stat` (`show stat`). Other files (spoolmon's own
//! marks, for instance) are ignored. This module finds the pairs and reads them as text.

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

/// Reads every pair of `dir`, sorted by socket name.
pub fn read_processes(dir: &Path) -> Result<Vec<ProcessFiles>, HaproxySnapshotError> {
    let sockets = list_sockets(dir)?;
    sockets
        .into_iter()
        .map(|socket| {
            let info = read_text(dir, &format!("{socket}{INFO_SUFFIX}"))?;
            let stat = read_text(dir, &format!("{socket}{STAT_SUFFIX}"))?;
            Ok(ProcessFiles { socket, info, stat })
        })
        .collect()
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
/// would block), at most [`MAX_FILE`] bytes, not empty, UTF-8 without NUL bytes.
fn read_text(dir: &Path, name: &str) -> Result<String, HaproxySnapshotError> {
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
    let mut bytes = Vec::with_capacity(length as usize);
    file.take(MAX_FILE).read_to_end(&mut bytes).map_err(io_error)?;
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
