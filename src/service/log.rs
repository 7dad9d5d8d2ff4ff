//! Where log lines go: a terminal (colours, timestamps), the systemd journal (no timestamps,
//! each line prefixed with its syslog priority `<N>` so `journalctl -p` filters by level), or
//! `--log-file` (timestamps, reopened on SIGHUP so logrotate can move it away).

use std::fs::{File, OpenOptions};
use std::io::{self, IsTerminal, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, MakeWriter};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::EnvFilter;

/// What `--log-level` accepts, said when it refuses a value.
const ACCEPTED_LEVELS: &str =
    "error, warn, info, debug, trace or off, or RUST_LOG-style target=level directives (spoolmon=debug,warn)";

/// Checks a `--log-level` value: a level, or comma-separated RUST_LOG-style directives
/// (`spoolmon=debug,warn`). A directive without `=` must be a level: tracing would take an
/// unknown word (`warning`) for a target name and silence everything else.
pub fn parse_log_level(text: &str) -> Result<String, String> {
    for directive in text.split(',') {
        let level = directive.rsplit_once('=').map_or(directive, |(_, level)| level).trim();
        // tracing reads "" as `error`; as a directive it is a mistake.
        if level.is_empty() || level.parse::<tracing::level_filters::LevelFilter>().is_err() {
            return Err(format!("unknown log level {directive:?}: expected {ACCEPTED_LEVELS}"));
        }
    }
    EnvFilter::try_new(text).map_err(|e| format!("{e}: expected {ACCEPTED_LEVELS}"))?;
    Ok(text.to_owned())
}

/// Installs the global logger. `level` is the `--log-level` filter; `RUST_LOG` overrides it
/// when `env_overrides` (not for commands whose output must stay exactly as specified).
pub fn init(level: &str, env_overrides: bool, log_file: Option<&Path>) -> io::Result<()> {
    let from_env = if env_overrides {
        EnvFilter::try_from_default_env().ok()
    } else {
        None
    };
    let filter = from_env
        .or_else(|| EnvFilter::try_new(level).ok())
        .unwrap_or_else(|| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    match log_file {
        Some(path) => {
            let file = LogFile::open(path)?;
            signal_hook::flag::register(signal_hook::consts::SIGHUP, file.reopen.clone())?;
            builder.with_ansi(false).with_writer(file).init();
        }
        None if stderr_is_the_journal(std::env::var("JOURNAL_STREAM").ok().as_deref()) => {
            let format = PriorityPrefix(tracing_subscriber::fmt::format().without_time().with_level(false));
            builder
                .with_ansi(false)
                .with_writer(io::stderr)
                .event_format(format)
                .init();
        }
        None => builder
            .with_ansi(io::stderr().is_terminal())
            .with_writer(io::stderr)
            .init(),
    }
    Ok(())
}

/// Whether stderr is the stream systemd connected to the journal: `JOURNAL_STREAM` holds its
/// `device:inode`, which a redirected stderr (e.g. `2>file` in a unit's script) no longer has.
fn stderr_is_the_journal(journal_stream: Option<&str>) -> bool {
    let Some((dev, ino)) = journal_stream.and_then(|v| v.split_once(':')) else {
        return false;
    };
    let (Ok(dev), Ok(ino)) = (dev.parse::<u64>(), ino.parse::<u64>()) else {
        return false;
    };
    nix::sys::stat::fstat(io::stderr()).is_ok_and(|st| st.st_dev == dev && st.st_ino == ino)
}

/// Prefixes each line with its syslog priority (sd-daemon's `<N>` convention).
struct PriorityPrefix<F>(F);

impl<S, N, F> FormatEvent<S, N> for PriorityPrefix<F>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
    F: FormatEvent<S, N>,
{
    fn format_event(&self, ctx: &FmtContext<'_, S, N>, mut writer: Writer<'_>, event: &Event<'_>) -> std::fmt::Result {
        write!(writer, "<{}>", syslog_priority(*event.metadata().level()))?;
        self.0.format_event(ctx, writer, event)
    }
}

fn syslog_priority(level: Level) -> u8 {
    match level {
        Level::ERROR => 3,
        Level::WARN => 4,
        Level::INFO => 6,
        Level::DEBUG | Level::TRACE => 7,
    }
}

/// An append-only log file that is opened again at the same path when `reopen` is set.
struct LogFile {
    path: PathBuf,
    file: Mutex<File>,
    reopen: Arc<AtomicBool>,
}

impl LogFile {
    fn open(path: &Path) -> io::Result<LogFile> {
        let file = open_append(path)
            .map_err(|e| io::Error::new(e.kind(), format!("cannot open --log-file {}: {e}", path.display())))?;
        Ok(LogFile {
            path: path.to_owned(),
            file: Mutex::new(file),
            reopen: Arc::new(AtomicBool::new(false)),
        })
    }

    fn write_line(&self, line: &[u8]) -> io::Result<()> {
        let mut file = self.file.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if self.reopen.swap(false, Ordering::Relaxed) {
            match open_append(&self.path) {
                Ok(new) => *file = new,
                // Keep logging to the old file rather than nowhere, and say why once in it.
                Err(e) => writeln!(file, "cannot reopen {}: {e}; still writing here", self.path.display())?,
            }
        }
        file.write_all(line)
    }
}

/// Opens for appending, never through a symbolic link (a process started as root must not
/// append to whatever a link in a writable log directory points at).
fn open_append(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
}

/// One event's text, written to the file in one call when complete.
struct LogLine<'a> {
    file: &'a LogFile,
    buffer: Vec<u8>,
}

impl Write for LogLine<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.buffer.extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Drop for LogLine<'_> {
    fn drop(&mut self) {
        if !self.buffer.is_empty() {
            // Nowhere left to report a failed log write.
            let _ = self.file.write_line(&self.buffer);
        }
    }
}

impl<'a> MakeWriter<'a> for LogFile {
    type Writer = LogLine<'a>;
    fn make_writer(&'a self) -> LogLine<'a> {
        LogLine {
            file: self,
            buffer: Vec::with_capacity(256),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_levels_are_levels_or_target_directives() {
        for good in [
            "info",
            "WARN",
            "off",
            "3",
            "spoolmon=debug",
            "spoolmon::probe=trace,warn",
        ] {
            assert_eq!(parse_log_level(good).as_deref(), Ok(good));
        }
        for bad in [
            "warning",
            "",
            "spoolmon",
            "spoolmon=",
            "info,",
            "spoolmon=loud",
            "info,verbose",
        ] {
            let err = parse_log_level(bad).unwrap_err();
            assert!(err.contains("error, warn, info, debug, trace or off"), "{bad:?}: {err}");
        }
    }

    #[test]
    fn priorities_follow_syslog() {
        assert_eq!(syslog_priority(Level::ERROR), 3);
        assert_eq!(syslog_priority(Level::WARN), 4);
        assert_eq!(syslog_priority(Level::INFO), 6);
        assert_eq!(syslog_priority(Level::DEBUG), 7);
    }

    #[test]
    fn journal_stream_must_name_stderr() {
        assert!(!stderr_is_the_journal(None));
        assert!(!stderr_is_the_journal(Some("garbage")));
        assert!(!stderr_is_the_journal(Some("1:2:3")));
        let st = nix::sys::stat::fstat(io::stderr()).unwrap();
        let own = format!("{}:{}", st.st_dev, st.st_ino);
        assert!(stderr_is_the_journal(Some(&own)));
        let other = format!("{}:{}", st.st_dev, st.st_ino + 1);
        assert!(!stderr_is_the_journal(Some(&other)));
    }

    #[test]
    fn log_file_is_reopened_at_its_path_after_a_move() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("spoolmon.log");
        let log = LogFile::open(&path).unwrap();
        log.make_writer().write_all(b"first\n").unwrap();
        std::fs::rename(&path, dir.path().join("spoolmon.log.1")).unwrap();
        log.make_writer().write_all(b"second\n").unwrap();
        log.reopen.store(true, Ordering::Relaxed);
        log.make_writer().write_all(b"third\n").unwrap();
        let rotated = std::fs::read_to_string(dir.path().join("spoolmon.log.1")).unwrap();
        assert_eq!(rotated, "first\nsecond\n");
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "third\n");
    }

    #[test]
    fn a_failed_reopen_keeps_the_old_file_and_says_so() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/spoolmon.log");
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        let log = LogFile::open(&path).unwrap();
        std::fs::rename(dir.path().join("sub"), dir.path().join("gone")).unwrap();
        log.reopen.store(true, Ordering::Relaxed);
        log.make_writer().write_all(b"after\n").unwrap();
        let text = std::fs::read_to_string(dir.path().join("gone/spoolmon.log")).unwrap();
        assert!(text.contains("cannot reopen") && text.ends_with("after\n"), "{text}");
    }
}
