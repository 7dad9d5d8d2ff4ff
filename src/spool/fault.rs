//! Whose fault a failed write under the base directory is: the order's own (permanent) or the machine's
//! (transient), so processing can attribute it to the smallest unit.
//!
//! Transient: the disk is full or over quota (`ENOSPC`, `EDQUOT`), the device fails (`EIO`), the
//! process is short of memory or descriptors (`ENOMEM`, `EAGAIN`, `EMFILE`, `ENFILE`). These say
//! nothing about the order or the snapshot: the work waits and is retried. Everything else
//! (`ENAMETOOLONG`, `EACCES`, `EPERM`, `EROFS`, `ENOTDIR`, `ELOOP`, `EEXIST`, an unusable file,
//! an error without an errno) is the order's own: it fails alone, its siblings go on.
//!
//! librrd reports errors as text (`creating '<path>': No space left on device`), so a message is
//! classified by the `strerror` texts of the transient errnos it contains.

use std::io;

/// The two kinds of output failure.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Fault {
    /// The machine's: wait and retry the same work, count nothing against the snapshot.
    Transient,
    /// The order's own: the order fails alone, with the reason.
    Permanent,
}

/// The errnos that make a fault transient.
const TRANSIENT: [i32; 7] = [
    libc::ENOSPC,
    libc::EDQUOT,
    libc::EIO,
    libc::ENOMEM,
    libc::EAGAIN,
    libc::EMFILE,
    libc::ENFILE,
];

/// The kind of an I/O error (by its errno; an error without one is permanent).
pub fn of_io(error: &io::Error) -> Fault {
    // Errors wrapped with context (spool::beneath) keep the errno inside.
    match crate::spool::beneath::os_error(error) {
        Some(code) if TRANSIENT.contains(&code) => Fault::Transient,
        None if matches!(
            error.kind(),
            io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded | io::ErrorKind::OutOfMemory
        ) =>
        {
            Fault::Transient
        }
        None => of_text(&error.to_string()),
        Some(_) => Fault::Permanent,
    }
}

/// The kind of an error known only by its text (librrd's `<what> '<path>': <strerror>`). Only
/// the text after the last `": "` counts: the path before it is the order's, and an order named
/// `Input/output error/...` must not make its own fault look like the machine's.
pub fn of_text(text: &str) -> Fault {
    let tail = text.rsplit(": ").next().unwrap_or(text);
    let transient = TRANSIENT.iter().any(|&code| tail.starts_with(&strerror(code)));
    if transient {
        Fault::Transient
    } else {
        Fault::Permanent
    }
}

/// The C library's text for `code` ("No space left on device").
fn strerror(code: i32) -> String {
    let text = io::Error::from_raw_os_error(code).to_string();
    match text.find(" (os error") {
        Some(end) => text[..end].to_string(),
        None => text,
    }
}

/// What processing shows while it waits for a transient fault: "waiting for disk space", ...
/// (from the errno text, or "disk full" in spoolmon's own messages).
pub fn waiting_for(text: &str) -> &'static str {
    let has = |code: i32| text.contains(&strerror(code));
    if has(libc::ENOSPC) || text.contains("disk full") {
        "waiting for disk space"
    } else if has(libc::EDQUOT) {
        "waiting for disk quota"
    } else if has(libc::EIO) {
        "waiting for the disk (I/O error)"
    } else {
        "waiting for memory or file descriptors"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn disk_full_and_device_errors_are_transient_everything_else_the_orders() {
        for code in TRANSIENT {
            assert_eq!(of_io(&io::Error::from_raw_os_error(code)), Fault::Transient, "{code}");
        }
        for code in [
            libc::ENAMETOOLONG,
            libc::EACCES,
            libc::EPERM,
            libc::EROFS,
            libc::ENOTDIR,
            libc::ELOOP,
            libc::EEXIST,
        ] {
            assert_eq!(of_io(&io::Error::from_raw_os_error(code)), Fault::Permanent, "{code}");
        }
        assert_eq!(of_io(&io::Error::other("not an RRD")), Fault::Permanent);
        let wrapped = io::Error::new(io::ErrorKind::StorageFull, "cannot write x: disk full");
        assert_eq!(of_io(&wrapped), Fault::Transient);
    }

    #[test]
    fn librrd_messages_are_classified_by_their_strerror_text() {
        let full = "creating '/b/output/a/main.rrd': No space left on device";
        assert_eq!(of_text(full), Fault::Transient);
        assert_eq!(waiting_for(full), "waiting for disk space");
        assert_eq!(of_text("opening '/b/x': Permission denied"), Fault::Permanent);
        assert_eq!(of_text("'/b/x' is not an RRD file"), Fault::Permanent);
        // The order's own path says nothing about the machine.
        let named = "creating '/b/output/Input/output error/x/main.rrd': File name too long";
        assert_eq!(of_text(named), Fault::Permanent);
    }

    #[test]
    fn the_errno_of_an_error_wrapped_with_its_path_decides() {
        let path = std::path::Path::new("/b/output/No space left on device/x");
        let long =
            crate::spool::beneath::context("cannot create", path, io::Error::from_raw_os_error(libc::ENAMETOOLONG));
        assert_eq!(of_io(&long), Fault::Permanent, "{long}");
        let full = crate::spool::beneath::context("cannot create", path, io::Error::from_raw_os_error(libc::ENOSPC));
        let twice = crate::spool::beneath::context("while applying", path, full);
        assert_eq!(of_io(&twice), Fault::Transient, "{twice}");
        assert!(twice.to_string().contains("No space left"), "{twice}");
    }
}
