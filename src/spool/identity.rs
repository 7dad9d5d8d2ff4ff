//! The node's machine GUID: `state/machine-guid`, one UUID and a newline, made once and kept.
//!
//! Every spoolmon node has one, as every Netdata agent has its `machine-guid`: it names the
//! node to the nodes it ships snapshots to (their per-sender high-water marks and their loop
//! detection key on it), so it must survive restarts, upgrades and renames of the host, and it
//! must never change by itself. It is created the first time something asks for it (O_EXCL,
//! fsynced with `state/`), so two processes on one base directory that race agree on the
//! winner's. A file that exists but does not hold a GUID is an error that names it and says how
//! to get a new one (remove it): replacing it silently would make every parent see a new child.
//!
//! Called by the commands that ship or receive snapshots; the GUID is a value the stages take
//! as an argument, never read from here by a stage itself.

use super::beneath::context;
use super::BaseDir;
use std::io;

pub use crate::shared::node::{GuidError, MachineGuid};

/// The file in `state/`.
pub const MACHINE_GUID_FILE: &str = "machine-guid";

/// The base directory's GUID, made (and made durable) the first time.
pub fn machine_guid(base: &BaseDir) -> io::Result<MachineGuid> {
    let state = base.dir("state")?;
    let path = base.state().join(MACHINE_GUID_FILE);
    for _ in 0..2 {
        match state.read_limited(MACHINE_GUID_FILE, 256) {
            Ok(bytes) => {
                let text = String::from_utf8_lossy(&bytes);
                return text.trim_end_matches('\n').parse().map_err(|e: GuidError| {
                    context(
                        "cannot use",
                        &path,
                        io::Error::new(
                            io::ErrorKind::InvalidData,
                            format!("{e}; remove the file to give this node a new identity (its parents will see a new child)"),
                        ),
                    )
                });
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                let guid = MachineGuid::random();
                match state.write_new(MACHINE_GUID_FILE, format!("{guid}\n").as_bytes()) {
                    Ok(()) => {
                        state.sync()?;
                        return Ok(guid);
                    }
                    // Another process made it first: read theirs.
                    Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                    Err(e) => return Err(e),
                }
            }
            Err(e) => return Err(e),
        }
    }
    Err(context(
        "cannot read",
        &path,
        io::Error::other("it appeared and disappeared while being created"),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base() -> (tempfile::TempDir, BaseDir) {
        crate::spool::layout::temp_base()
    }

    #[test]
    fn the_guid_is_made_once_and_kept() {
        let (_tmp, base) = base();
        let first = machine_guid(&base).unwrap();
        assert_eq!(machine_guid(&base).unwrap(), first);
        let text = std::fs::read_to_string(base.state().join(MACHINE_GUID_FILE)).unwrap();
        assert_eq!(text, format!("{first}\n"));
        assert_eq!(text.len(), 37);
    }

    #[test]
    fn a_file_without_a_guid_is_an_error_naming_it_and_is_left_alone() {
        let (_tmp, base) = base();
        let path = base.state().join(MACHINE_GUID_FILE);
        for bad in [
            "",
            "not a guid\n",
            "5f0c3a529d1e4a4b8f7e2c1d0b9a8e7f\n",
            "5f0c3a52-9d1e-4a4b-8f7e-2c1d0b9a8e7f-x\n",
        ] {
            std::fs::write(&path, bad).unwrap();
            let e = machine_guid(&base).unwrap_err().to_string();
            assert!(
                e.contains("machine-guid") && e.contains("not a GUID") && e.contains("remove the file"),
                "{e}"
            );
            assert_eq!(std::fs::read_to_string(&path).unwrap(), bad);
        }
        std::fs::write(&path, vec![b'a'; 4096]).unwrap();
        assert!(machine_guid(&base).unwrap_err().to_string().contains("larger than"));
    }

    #[test]
    fn a_symlink_in_its_place_is_not_followed() {
        let (tmp, base) = base();
        let outside = tmp.path().join("outside");
        std::fs::write(&outside, "5f0c3a52-9d1e-4a4b-8f7e-2c1d0b9a8e7f\n").unwrap();
        std::os::unix::fs::symlink(&outside, base.state().join(MACHINE_GUID_FILE)).unwrap();
        assert!(machine_guid(&base).is_err());
    }
}
