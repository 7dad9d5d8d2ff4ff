//! The other nodes this node receives from, its "children": when each was last heard from,
//! and which are stale (silent for `receive: {child-timeout}`), with their output archived.
//!
//! Owns `state/children.json` (spool-layout.md, "state/"):
//!
//! ```json
//! {"children": {"prober-1": {"machine": "5f0c3a52-...", "last_seen": 1795455600, "stale_since": null}}}
//! ```
//!
//! Processing notes every received snapshot it applies ([`Children::heard`]): its origin node,
//! machine GUID and the time. A sweep ([`Children::sweep`]) marks a child stale once it has
//! been silent for the timeout; the caller then archives `output/@<node>/` like an expired
//! order's output (`archive/@<node>/`), and restores it when the child is heard from again,
//! before its results are applied. Netdata parents keep ephemeral children forever (its issues
//! #2832 and #16717); this is the bound.
//!
//! The file is replaced atomically at most every [`SAVE_EVERY`] and at once on a change of
//! state; a crash loses at most that much of `last_seen` (the child then looks silent a few
//! seconds longer, never shorter). A file that cannot be read is logged and replaced: it holds
//! nothing a sweep cannot rebuild from the next snapshots. Called by the processor; read by
//! `spoolmon status` and `spoolmon check children`.

use crate::spool::BaseDir;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};
use tracing::warn;

/// The file in `state/`.
pub const CHILDREN_FILE: &str = "children.json";
/// Longest the file's `last_seen` may lag behind.
pub const SAVE_EVERY: Duration = Duration::from_secs(10);
/// Largest file read back (64 bytes a child: a million children).
const MAX_FILE: u64 = 64 << 20;

/// One child as the file records it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Child {
    /// Its machine GUID (the origin of its snapshots).
    pub machine: String,
    /// Unix seconds when a snapshot of it was last applied here.
    pub last_seen: i64,
    /// Unix seconds since when it is stale (its output archived), or null.
    pub stale_since: Option<i64>,
}

/// The file's content.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChildrenFile {
    pub children: BTreeMap<String, Child>,
}

/// Reads `state/children.json` (an empty set when there is none).
pub fn read(base: &BaseDir) -> std::io::Result<ChildrenFile> {
    let state = base.dir("state")?;
    match state.read_limited(CHILDREN_FILE, MAX_FILE) {
        Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("{}: {e}", base.state().join(CHILDREN_FILE).display()),
            )
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(ChildrenFile::default()),
        Err(e) => Err(e),
    }
}

/// The children in memory, saved to the file now and then.
pub struct Children {
    file: ChildrenFile,
    timeout: Option<Duration>,
    dirty: bool,
    saved: Option<Instant>,
}

impl Children {
    /// Loads the file; `timeout` is `receive: {child-timeout}` (`None`: never stale).
    pub fn load(base: &BaseDir, timeout: Option<Duration>) -> Children {
        let file = read(base).unwrap_or_else(|e| {
            warn!("cannot read the children's record, starting a new one: {e}");
            ChildrenFile::default()
        });
        Children {
            file,
            timeout,
            dirty: false,
            saved: None,
        }
    }

    /// Notes a snapshot of `node` (machine `machine`) applied at `now`; true when it was stale
    /// (its output must be restored first).
    pub fn heard(&mut self, node: &str, machine: &str, now: i64) -> bool {
        let child = self.file.children.entry(node.to_owned()).or_insert_with(|| Child {
            machine: machine.to_owned(),
            last_seen: now,
            stale_since: None,
        });
        let was_stale = child.stale_since.take().is_some();
        if child.machine != machine {
            warn!(node, was = %child.machine, now = machine, "a child's node name is used by another machine");
            child.machine = machine.to_owned();
        }
        child.last_seen = child.last_seen.max(now);
        self.dirty = true;
        if was_stale {
            // A change of state is saved at once.
            self.saved = None;
        }
        was_stale
    }

    /// Marks the children silent for the timeout stale at `now`; their names (to archive).
    pub fn sweep(&mut self, now: i64) -> Vec<String> {
        let Some(timeout) = self.timeout else {
            return Vec::new();
        };
        let limit = now - timeout.as_secs() as i64;
        let mut stale = Vec::new();
        for (node, child) in &mut self.file.children {
            if child.stale_since.is_none() && child.last_seen < limit {
                child.stale_since = Some(now);
                stale.push(node.clone());
            }
        }
        if !stale.is_empty() {
            self.dirty = true;
            self.saved = None;
        }
        stale
    }

    /// Undoes [`Children::sweep`] for `node` when its output could not be archived (it is
    /// tried again at the next sweep).
    pub fn not_stale(&mut self, node: &str) {
        if let Some(child) = self.file.children.get_mut(node) {
            child.stale_since = None;
        }
    }

    /// Replaces the file when something changed and it is due (or a state changed).
    pub fn save(&mut self, base: &BaseDir) {
        if !self.dirty || self.saved.is_some_and(|at| at.elapsed() < SAVE_EVERY) {
            return;
        }
        let text = match serde_json::to_vec(&self.file) {
            Ok(text) => text,
            Err(e) => return warn!("cannot encode the children's record: {e}"),
        };
        match base.dir("state").and_then(|state| state.replace(CHILDREN_FILE, &text)) {
            Ok(()) => {
                self.dirty = false;
                self.saved = Some(Instant::now());
            }
            Err(e) => warn!("cannot write {}: {e}", base.state().join(CHILDREN_FILE).display()),
        }
    }

    pub fn file(&self) -> &ChildrenFile {
        &self.file
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_silent_child_becomes_stale_once_and_is_fresh_again_when_heard() {
        let (_tmp, base) = crate::spool::layout::temp_base();
        let mut children = Children::load(&base, Some(Duration::from_secs(100)));
        assert!(!children.heard("p1", "g1", 1000));
        assert!(!children.heard("p2", "g2", 1050));
        assert_eq!(children.sweep(1100), Vec::<String>::new());
        assert_eq!(children.sweep(1101), vec!["p1".to_string()]);
        assert_eq!(children.sweep(1200), vec!["p2".to_string()], "p1 is not swept twice");
        children.save(&base);
        let file = read(&base).unwrap();
        assert_eq!(file.children["p1"].stale_since, Some(1101));
        assert!(children.heard("p1", "g1", 1300), "it was stale");
        assert!(!children.heard("p1", "g1", 1301));
        children.save(&base);
        let file = read(&base).unwrap();
        assert_eq!(file.children["p1"].stale_since, None);
        assert_eq!(file.children["p1"].last_seen, 1301);
        // Without a timeout nobody is ever stale.
        let mut forever = Children::load(&base, None);
        assert!(forever.sweep(i64::MAX).is_empty());
    }

    #[test]
    fn a_bad_record_is_replaced_and_a_large_one_refused() {
        let (_tmp, base) = crate::spool::layout::temp_base();
        std::fs::write(base.state().join(CHILDREN_FILE), "{not json").unwrap();
        assert!(read(&base).unwrap_err().to_string().contains("children.json"));
        let mut children = Children::load(&base, None);
        children.heard("p1", "g1", 5);
        children.save(&base);
        assert_eq!(read(&base).unwrap().children.len(), 1);
    }
}
