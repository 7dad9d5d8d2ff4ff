//! The small records in `state/` that the checks read: the daemon's heartbeat and the last
//! snapshot the HAProxy puller published. Each is one line `<unix seconds> <detail>\n`,
//! replaced atomically; a failed write is logged (the check then reports the record as old).

use super::BaseDir;
use tracing::warn;

/// `state/heartbeat`: `<unix time> <pid>\n`, rewritten every [`HEARTBEAT_EVERY`] by the process
/// holding `state/lock` (read by `spoolmon check daemon`).
pub const HEARTBEAT_FILE: &str = "heartbeat";

/// How often the heartbeat is rewritten.
pub const HEARTBEAT_EVERY: std::time::Duration = std::time::Duration::from_secs(10);

/// `state/pull-published`: `<unix time> <snapshot name>\n` after each published HAProxy
/// snapshot (read by `spoolmon check pull`).
pub const LAST_PUBLISHED_FILE: &str = "pull-published";

/// Rewrites the heartbeat with this process's pid.
pub fn write_heartbeat(base: &BaseDir) {
    write_record(base, HEARTBEAT_FILE, &std::process::id().to_string());
}

/// Records that `snapshot` was published.
pub fn write_last_published(base: &BaseDir, snapshot: &str) {
    write_record(base, LAST_PUBLISHED_FILE, snapshot);
}

fn write_record(base: &BaseDir, name: &str, detail: &str) {
    let text = format!("{} {detail}\n", crate::shared::clock::unix_now());
    if let Err(e) = base.dir("state").and_then(|state| state.replace(name, text.as_bytes())) {
        warn!("cannot write state/{name}: {e}");
    }
}
