//! Storing received frames: each new frame becomes a snapshot in `incoming/`, durably, before
//! the sender is told; a repeat is recognised and not stored again.
//!
//! Consecutive new ping frames of one request from one sender's stream, origin and chain are
//! stored as one snapshot (its `ping.jsonl` holds their results under the first frame's header,
//! up to processing's `max-results`; its marker is the last frame's header): a snapshot is
//! three inodes (directory, `ping.jsonl`, `SHIPPED`), and creating inodes is most of what a
//! receiver's disk does per frame. A frame of any other kind is stored alone, as sent.
//!
//! Owns on disk: `state/receive/<sender GUID>.<stream UUID>`, one file per (sender, stream)
//! holding the stream's high-water mark (`<sequence>\n`): every frame of that stream up to it
//! is in `incoming/` (or already processed). And, while a request is being stored, its staged
//! snapshots `incoming.tmp/<received name>/` (see [`crate::spool::ship::received_name`]).
//!
//! The order of one request's writes, and why nothing is lost or applied twice whatever the
//! moment of a crash (kill -9, power loss):
//! 1. every new frame's files are written into `incoming.tmp/<name>/`, and one `syncfs` makes
//!    them durable;
//! 2. each staged snapshot gets its [`SHIPPED_FILE`] marker (the frame's header), and a second
//!    `syncfs` makes the markers durable: from here a staged snapshot is *promised*;
//! 3. the high-water marks are replaced and `state/receive/` fsynced;
//! 4. the staged snapshots are renamed into `incoming/`, which is fsynced;
//! 5. only then does the caller answer the sender.
//!
//! [`Store::open`] finishes what a crash interrupted: a staged snapshot without its marker was
//! never promised and is removed (the sender, never answered, sends it again); one with its
//! marker raises its stream's mark (written durably first) and is renamed into `incoming/`, so
//! the repeat the sender then sends is acknowledged without being stored. The marks are durable
//! before anything is visible in `incoming/`, so processing can never consume a frame whose
//! mark a crash could still lose. A frame at or below its stream's mark is always a repeat.
//! Sequences need not be dense: a sender whose bounded outbox dropped its oldest records skips
//! numbers. A live process whose step 3 or 4 failed keeps the same state a restart would
//! rebuild: promised snapshots wait (renamed before the next request is stored), their marks
//! raised.
//!
//! Called by the receiver's request handler, one request at a time (the caller serialises).

use crate::spool::beneath::{context, Dir, Kind};
use crate::spool::identity::MachineGuid;
use crate::spool::ship::{self, Frame, ShipHeader, SHIPPED_FILE};
use crate::spool::BaseDir;
use std::collections::HashMap;
use std::io;

/// The directory under `state/`.
pub const DIR: &str = "receive";
/// Largest high-water-mark file read.
const MAX_MARK_FILE: u64 = 64;

/// What became of one frame of a request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Stored {
    /// Now in `incoming/` under this name.
    New(String),
    /// At or below its stream's high-water mark: stored before, not again.
    Repeat,
}

/// The receiver's queue writer and its high-water marks.
pub struct Store {
    base: BaseDir,
    marks_dir: Dir,
    marks: HashMap<(MachineGuid, uuid::Uuid), u64>,
    /// Staged snapshots at or below their marks whose rename into `incoming/` failed: durable,
    /// so their repeats are acknowledged, and renamed before anything else is stored.
    pending: Vec<String>,
    /// Marks raised in memory and not yet written.
    dirty: std::collections::HashSet<(MachineGuid, uuid::Uuid)>,
    /// Most results one staged snapshot of merged frames holds (processing's limit per
    /// snapshot).
    merge_results: usize,
}

fn mark_file(sender: MachineGuid, stream: uuid::Uuid) -> String {
    format!("{sender}.{}", stream.hyphenated())
}

impl Store {
    /// Reads the high-water marks and finishes what a crash interrupted (module doc).
    pub fn open(base: &BaseDir) -> io::Result<Store> {
        let state = base.dir("state")?;
        let marks_dir = state.create_dir_all(DIR)?;
        let mut marks = HashMap::new();
        for (name, kind) in marks_dir.entries()? {
            let Some(text) = name.to_str() else { continue };
            if kind != Kind::File || text.starts_with('.') {
                continue;
            }
            let path = marks_dir.path().join(text);
            let key = text
                .split_once('.')
                .and_then(|(sender, stream)| Some((sender.parse().ok()?, uuid::Uuid::try_parse(stream).ok()?)));
            let Some(key) = key else {
                tracing::warn!("ignoring {}: not a high-water mark of spoolmon's", path.display());
                continue;
            };
            let bytes = marks_dir.read_limited(text, MAX_MARK_FILE)?;
            let mark: u64 = std::str::from_utf8(&bytes)
                .ok()
                .and_then(|t| t.trim_end_matches('\n').parse().ok())
                .ok_or_else(|| {
                    context(
                        "cannot use",
                        &path,
                        io::Error::new(io::ErrorKind::InvalidData, "not a sequence number"),
                    )
                })?;
            marks.insert(key, mark);
        }
        let mut store = Store {
            base: base.clone(),
            marks_dir,
            marks,
            pending: Vec::new(),
            dirty: Default::default(),
            merge_results: crate::spool::snapshot::PingBounds::DEFAULT_MAX_RESULTS,
        };
        store.recover()?;
        Ok(store)
    }

    /// Merges consecutive ping frames of a request into snapshots of at most `results`
    /// results (processing's `max-results`; at least 1).
    pub fn with_merge_results(mut self, results: usize) -> Store {
        self.merge_results = results.max(1);
        self
    }

    /// The high-water mark of a sender's stream (0: nothing received yet).
    pub fn mark(&self, sender: MachineGuid, stream: uuid::Uuid) -> u64 {
        self.marks.get(&(sender, stream)).copied().unwrap_or(0)
    }

    /// Stores the frames of one request (module doc); returns one outcome per frame, in order.
    /// On an error nothing new is promised unless it is durable (module doc): the caller
    /// answers with the error.
    pub fn store(&mut self, frames: &[Frame<'_>]) -> io::Result<Vec<Stored>> {
        let tmp = self.base.dir("incoming.tmp")?;
        self.finish_pending(&tmp)?;
        let mut outcomes = Vec::with_capacity(frames.len());
        let mut raised: HashMap<(MachineGuid, uuid::Uuid), u64> = HashMap::new();
        // The new frames, consecutive ping frames of one sender, stream, origin and chain
        // merged into one snapshot each (module doc): fewer directories and files per result.
        let mut groups: Vec<Group<'_, '_>> = Vec::new();
        for frame in frames {
            let h = &frame.header;
            let key = (h.sender(), h.stream);
            let mark = raised.get(&key).copied().unwrap_or_else(|| self.mark(key.0, key.1));
            if h.sequence <= mark {
                outcomes.push(Stored::Repeat);
                continue;
            }
            raised.insert(key, h.sequence);
            let results = ping_results(frame);
            let joins = match (groups.last(), results) {
                (Some(group), Some(n)) => {
                    group.results.is_some_and(|total| total + n <= self.merge_results) && group.same_source(h)
                }
                _ => false,
            };
            if joins {
                let group = groups.last_mut().expect("checked");
                group.frames.push(frame);
                group.results = group.results.map(|total| total + results.unwrap_or(0));
            } else {
                groups.push(Group {
                    frames: vec![frame],
                    results,
                });
            }
            outcomes.push(Stored::New(
                ship::received_name(&groups.last().expect("pushed").frames[0].header)
                    .as_str()
                    .to_owned(),
            ));
        }
        let mut staged: Vec<String> = Vec::new();
        let mut promised = false;
        let result = (|| {
            for group in &groups {
                let name = ship::received_name(&group.frames[0].header).as_str().to_owned();
                staged.push(name.clone());
                group.stage(&tmp, &name)?;
            }
            if staged.is_empty() {
                return Ok(());
            }
            crate::spool::atomic::sync_filesystem(tmp.path())?;
            for (name, group) in staged.iter().zip(&groups) {
                write_marker(&tmp, name, &group.frames.last().expect("a group has a frame").header)?;
            }
            crate::spool::atomic::sync_filesystem(tmp.path())?;
            promised = true;
            self.pending.extend(staged.iter().cloned());
            self.raise(&raised);
            self.finish_pending(&tmp)
        })();
        if let Err(e) = result {
            if !promised {
                for name in &staged {
                    let _ = tmp.remove_tree(name);
                }
            }
            return Err(e);
        }
        Ok(outcomes)
    }

    /// Raises marks in memory; they are written by [`Store::finish_pending`].
    fn raise(&mut self, raised: &HashMap<(MachineGuid, uuid::Uuid), u64>) {
        for (&key, &mark) in raised {
            let entry = self.marks.entry(key).or_insert(0);
            if mark > *entry {
                *entry = mark;
                self.dirty.insert(key);
            }
        }
    }

    /// Steps 3 and 4 for every promised snapshot not yet in `incoming/`.
    fn finish_pending(&mut self, tmp: &Dir) -> io::Result<()> {
        if !self.dirty.is_empty() {
            for &(sender, stream) in &self.dirty {
                let mark = self.mark(sender, stream);
                self.marks_dir
                    .replace(mark_file(sender, stream), format!("{mark}\n").as_bytes())?;
            }
            self.marks_dir.sync()?;
            self.dirty.clear();
        }
        if !self.pending.is_empty() {
            // Oldest first, as they were sent: processing may start a round after any of
            // these renames, and an RRD refuses a step older than its newest one.
            let incoming = self.base.dir("incoming")?;
            let mut done = 0;
            let result = self.pending.iter().try_for_each(|name| {
                publish_staged(tmp, &incoming, name)?;
                done += 1;
                Ok::<(), io::Error>(())
            });
            self.pending.drain(..done);
            result?;
            incoming.sync()?;
        }
        Ok(())
    }

    /// Finishes staged snapshots a crash left in `incoming.tmp/` (module doc).
    fn recover(&mut self) -> io::Result<()> {
        let tmp = self.base.dir("incoming.tmp")?;
        let mut raised = HashMap::new();
        for (name, kind) in tmp.entries()? {
            let Some(name) = name.to_str().filter(|n| ship::is_received_name(n)) else {
                continue;
            };
            let header = (kind == Kind::Dir)
                .then(|| read_marker(&tmp, name))
                .and_then(Result::ok);
            match header {
                Some(h) => {
                    let mark = raised.entry((h.sender(), h.stream)).or_insert(0);
                    *mark = h.sequence.max(*mark);
                    self.pending.push(name.to_owned());
                }
                None => {
                    if let Err(e) = tmp.remove_tree(name) {
                        tracing::warn!("cannot remove a staged received snapshot in incoming.tmp/: {e}");
                    }
                }
            }
        }
        // Snapshot names sort by time, then stream and sequence: the order they were sent in.
        self.pending.sort_by(|a, b| {
            crate::spool::snapshot::SnapshotName::parse(a).cmp(&crate::spool::snapshot::SnapshotName::parse(b))
        });
        let moved = self.pending.len();
        self.raise(&raised);
        self.finish_pending(&tmp)?;
        if moved > 0 {
            tracing::info!("{moved} received snapshot(s) staged before a crash moved into incoming/");
        }
        Ok(())
    }
}

/// New frames stored as one snapshot: one frame, or consecutive ping frames of one source.
struct Group<'r, 'b> {
    frames: Vec<&'r Frame<'b>>,
    /// The results of its ping frames, when every one is a ping frame whose header could be
    /// read (only such groups take more frames).
    results: Option<usize>,
}

impl Group<'_, '_> {
    /// Whether a frame with header `h` comes from where this group's frames come from.
    fn same_source(&self, h: &ShipHeader) -> bool {
        let first = &self.frames[0].header;
        first.stream == h.stream
            && first.origin == h.origin
            && first.origin_node == h.origin_node
            && first.chain == h.chain
    }

    /// Writes `incoming.tmp/<name>/` (a leftover of that name, ours, is replaced): the one
    /// frame's files, or one `ping.jsonl` of every frame's results under the first frame's
    /// header with the total count. Nothing is fsynced here.
    fn stage(&self, tmp: &Dir, name: &str) -> io::Result<()> {
        if tmp.kind(name)?.is_some() {
            tmp.remove_tree(name)?;
        }
        tmp.mkdir(name)?;
        let dir = tmp.open_dir(name)?;
        let write = |file: &str, parts: &[&[u8]]| -> io::Result<()> {
            let mut out = dir.create_new(file)?;
            for part in parts {
                io::Write::write_all(&mut out, part).map_err(|e| context("cannot write", &dir.path().join(file), e))?;
            }
            Ok(())
        };
        let total = match self.results {
            Some(total) if self.frames.len() > 1 => total,
            // One frame (a group of several is always of ping frames that read).
            _ => {
                for (file, bytes) in &self.frames[0].files {
                    write(file, &[bytes])?;
                }
                return Ok(());
            }
        };
        let (line, _) = split_header(self.frames[0].files[0].1).expect("a merged frame has a header line");
        let mut header: crate::spool::snapshot::PingHeader =
            serde_json::from_slice(line).expect("a merged frame's header reads");
        header.results = total;
        let mut parts: Vec<&[u8]> = Vec::with_capacity(self.frames.len() + 1);
        let mut first_line = serde_json::to_vec(&header).expect("a header serializes");
        first_line.push(b'\n');
        parts.push(&first_line);
        for frame in &self.frames {
            let (_, rest) = split_header(frame.files[0].1).expect("a merged frame has a header line");
            parts.push(rest);
        }
        write(crate::spool::snapshot::PING_FILE, &parts)
    }
}

/// A ping file's header line and the rest.
fn split_header(bytes: &[u8]) -> Option<(&[u8], &[u8])> {
    let end = bytes.iter().position(|b| *b == b'\n')?;
    Some((&bytes[..end], &bytes[end + 1..]))
}

/// The results a ping frame announces, when it is one file `ping.jsonl` whose header line
/// reads, whose result lines end in a newline and whose count matches them: only such frames
/// are merged (any other is stored alone, as sent, for processing to judge).
fn ping_results(frame: &Frame<'_>) -> Option<usize> {
    let [(name, bytes)] = frame.files.as_slice() else {
        return None;
    };
    if *name != crate::spool::snapshot::PING_FILE {
        return None;
    }
    let (line, rest) = split_header(bytes)?;
    let header: crate::spool::snapshot::PingHeader = serde_json::from_slice(line).ok()?;
    let lines = rest.iter().filter(|b| **b == b'\n').count();
    (header.results == lines && rest.last().is_none_or(|b| *b == b'\n')).then_some(lines)
}

/// Adds the marker that makes a staged snapshot complete. Not fsynced here.
fn write_marker(tmp: &Dir, name: &str, header: &ShipHeader) -> io::Result<()> {
    let dir = tmp.open_dir(name)?;
    let mut out = dir.create_new(SHIPPED_FILE)?;
    io::Write::write_all(&mut out, &ship::encode_marker(header))
        .map_err(|e| context("cannot write", &dir.path().join(SHIPPED_FILE), e))
}

fn read_marker(tmp: &Dir, name: &str) -> io::Result<ShipHeader> {
    let dir = tmp.open_dir(name)?;
    let bytes = dir.read_limited(SHIPPED_FILE, ship::MAX_MARKER)?;
    ship::decode_marker(&bytes).map_err(|e| {
        context(
            "cannot read",
            &dir.path().join(SHIPPED_FILE),
            io::Error::new(io::ErrorKind::InvalidData, e),
        )
    })
}

/// Renames a staged snapshot into `incoming/`; one already there (the same frame, moved by an
/// earlier attempt) makes the staged copy redundant.
fn publish_staged(tmp: &Dir, incoming: &Dir, name: &str) -> io::Result<()> {
    match tmp.rename_noreplace(name, incoming, name) {
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => tmp.remove_tree(name),
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spool::snapshot::SnapshotName;

    fn base() -> (tempfile::TempDir, BaseDir) {
        crate::spool::layout::temp_base()
    }

    fn header(origin: MachineGuid, stream: uuid::Uuid, sequence: u64) -> ShipHeader {
        ShipHeader {
            origin,
            origin_node: "child".into(),
            chain: vec![origin],
            stream,
            sequence,
            snapshot: SnapshotName::new(1_700_000_000 + sequence as i64 * 20, "ping", sequence),
        }
    }

    fn names(dir: &std::path::Path) -> Vec<String> {
        crate::spool::beneath::sorted_names(dir)
    }

    #[test]
    fn new_frames_land_in_incoming_and_repeats_are_recognised_across_restarts() {
        let (_t, base) = base();
        let (child, stream) = (MachineGuid::random(), uuid::Uuid::new_v4());
        let body: &[u8] = b"spoolmon-ping 1 batch 0\n";
        let h1 = header(child, stream, 1);
        let h2 = header(child, stream, 2);
        let mut store = Store::open(&base).unwrap();
        let frames = [
            Frame {
                header: h1.clone(),
                files: vec![("ping.jsonl", body)],
            },
            Frame {
                header: h2.clone(),
                files: vec![("ping.jsonl", body)],
            },
            Frame {
                header: h1.clone(),
                files: vec![("ping.jsonl", body)],
            },
        ];
        let out = store.store(&frames).unwrap();
        assert!(matches!(&out[0], Stored::New(n) if n == ship::received_name(&h1).as_str()));
        assert!(matches!(&out[1], Stored::New(_)));
        assert_eq!(out[2], Stored::Repeat);
        let queued = names(&base.incoming());
        assert_eq!(queued.len(), 2);
        let one = base.incoming().join(&queued[0]);
        assert_eq!(std::fs::read(one.join("ping.jsonl")).unwrap(), body);
        assert_eq!(
            ship::decode_marker(&std::fs::read(one.join(SHIPPED_FILE)).unwrap()).unwrap(),
            h1
        );
        assert!(names(&base.incoming_tmp()).is_empty());
        drop(store);
        // Restarted: the marks are read back; a repeat is not stored, a newer frame is.
        let mut store = Store::open(&base).unwrap();
        assert_eq!(store.mark(child, stream), 2);
        let again = [
            Frame {
                header: h2,
                files: vec![("ping.jsonl", body)],
            },
            Frame {
                header: header(child, stream, 5),
                files: vec![],
            },
        ];
        let out = store.store(&again).unwrap();
        assert_eq!(out[0], Stored::Repeat);
        assert!(matches!(out[1], Stored::New(_)));
        assert_eq!(names(&base.incoming()).len(), 3);
        // Another stream of the same sender has its own sequence space.
        let other = [Frame {
            header: header(child, uuid::Uuid::new_v4(), 1),
            files: vec![],
        }];
        assert!(matches!(store.store(&other).unwrap()[0], Stored::New(_)));
    }

    #[test]
    fn frames_appear_in_incoming_oldest_first() {
        let (_t, base) = base();
        let (child, stream) = (MachineGuid::random(), uuid::Uuid::new_v4());
        let mut inotify = inotify::Inotify::init().unwrap();
        inotify
            .watches()
            .add(base.incoming(), inotify::WatchMask::MOVED_TO)
            .unwrap();
        let frames: Vec<Frame<'_>> = (1..=5)
            .map(|seq| Frame {
                header: header(child, stream, seq),
                files: vec![("ping.jsonl", &b"x"[..])],
            })
            .collect();
        let mut store = Store::open(&base).unwrap();
        store.store(&frames).unwrap();
        let mut buffer = [0u8; 4096];
        let arrived: Vec<String> = inotify
            .read_events(&mut buffer)
            .unwrap()
            .filter_map(|e| e.name.map(|n| n.to_string_lossy().into_owned()))
            .collect();
        let sent: Vec<String> = frames
            .iter()
            .map(|f| ship::received_name(&f.header).as_str().to_owned())
            .collect();
        assert_eq!(arrived, sent, "processing may start a round after any rename");
    }

    /// A ping frame of `n` results of stream `stream`, as a forward sink sends one.
    fn ping_frame(origin: MachineGuid, stream: uuid::Uuid, sequence: u64, n: usize) -> (ShipHeader, Vec<u8>) {
        let results: Vec<crate::shared::measurement::OrderResult> = (0..n)
            .map(|i| {
                crate::shared::measurement::OrderResult::builder(
                    crate::shared::measurement::OrderId::new(format!("o{i}")).unwrap(),
                    1_700_000_000 + sequence as i64 * 20,
                )
                .rtts([Some(0.001)])
                .build()
            })
            .collect();
        (
            header(origin, stream, sequence),
            crate::spool::snapshot::encode_ping("forward", &results),
        )
    }

    #[test]
    fn consecutive_ping_frames_of_one_source_become_one_snapshot_within_the_results_limit() {
        let (_t, base) = base();
        let (child, stream, other) = (MachineGuid::random(), uuid::Uuid::new_v4(), uuid::Uuid::new_v4());
        let mut store = Store::open(&base).unwrap().with_merge_results(5);
        let sent = [
            ping_frame(child, stream, 1, 2),
            ping_frame(child, stream, 2, 2),
            // Over the limit with the two before: a new snapshot.
            ping_frame(child, stream, 3, 2),
            // Another stream: a snapshot of its own.
            ping_frame(child, other, 1, 1),
            ping_frame(child, stream, 4, 1),
        ];
        let frames: Vec<Frame<'_>> = sent
            .iter()
            .map(|(h, body)| Frame {
                header: h.clone(),
                files: vec![("ping.jsonl", body.as_slice())],
            })
            .collect();
        let out = store.store(&frames).unwrap();
        assert!(out.iter().all(|o| matches!(o, Stored::New(_))));
        let stored = names(&base.incoming());
        assert_eq!(stored.len(), 4, "{stored:?}");
        // The first snapshot holds the first two frames' results under one header; its marker
        // is the second frame's (the stream's mark after it).
        let first_name = ship::received_name(&sent[0].0).as_str().to_owned();
        assert!(stored.contains(&first_name), "{stored:?}");
        let dir = Dir::open(&base.incoming().join(&first_name)).unwrap();
        let bounds = crate::spool::snapshot::PingBounds::at(1_700_000_040);
        let (header, results) = crate::spool::snapshot::read_ping(&dir, &bounds).unwrap();
        assert_eq!((header.results, results.len()), (4, 4));
        assert_eq!(
            read_marker(&Dir::open(&base.incoming()).unwrap(), &first_name)
                .unwrap()
                .sequence,
            2
        );
        assert_eq!((store.mark(child, stream), store.mark(child, other)), (4, 1));
        // A repeat of any of them is acknowledged, not stored.
        let again = store.store(&frames[1..2]).unwrap();
        assert_eq!(again, vec![Stored::Repeat]);
        assert_eq!(names(&base.incoming()).len(), 4);
    }

    #[test]
    fn a_crash_before_the_markers_forgets_the_staged_frames() {
        let (_t, base) = base();
        let (child, stream) = (MachineGuid::random(), uuid::Uuid::new_v4());
        let h = header(child, stream, 3);
        let tmp = base.dir("incoming.tmp").unwrap();
        // What step 1 leaves when the process dies before step 2.
        let frame = Frame {
            header: h.clone(),
            files: vec![("ping.jsonl", b"x")],
        };
        let group = Group {
            frames: vec![&frame],
            results: None,
        };
        group.stage(&tmp, ship::received_name(&h).as_str()).unwrap();
        // A staged directory without its marker (died inside step 1), and someone else's temp.
        let torn = ship::received_name(&header(child, stream, 4));
        std::fs::create_dir(base.incoming_tmp().join(torn.as_str())).unwrap();
        std::fs::create_dir(base.incoming_tmp().join("1700000000-ping-000000001")).unwrap();
        let store = Store::open(&base).unwrap();
        assert_eq!(store.mark(child, stream), 0);
        assert_eq!(
            names(&base.incoming_tmp()),
            vec!["1700000000-ping-000000001".to_string()]
        );
        assert!(names(&base.incoming()).is_empty());
    }

    #[test]
    fn a_crash_after_the_markers_raises_the_mark_and_finishes_the_rename() {
        let (_t, base) = base();
        let (child, stream) = (MachineGuid::random(), uuid::Uuid::new_v4());
        let h = header(child, stream, 3);
        let name = ship::received_name(&h);
        let tmp = base.dir("incoming.tmp").unwrap();
        // Step 2 done, step 3 not: the mark on disk is still an older one.
        let frame = Frame {
            header: h.clone(),
            files: vec![("ping.jsonl", &b"x"[..])],
        };
        let group = Group {
            frames: vec![&frame],
            results: None,
        };
        group.stage(&tmp, name.as_str()).unwrap();
        write_marker(&tmp, name.as_str(), &h).unwrap();
        let state = base.dir("state").unwrap().create_dir_all(DIR).unwrap();
        state.replace(mark_file(child, stream), b"1\n").unwrap();
        let mut store = Store::open(&base).unwrap();
        assert_eq!(store.mark(child, stream), 3);
        assert_eq!(
            std::fs::read_to_string(base.state().join(DIR).join(mark_file(child, stream))).unwrap(),
            "3\n"
        );
        assert_eq!(names(&base.incoming()), vec![name.as_str().to_string()]);
        assert!(names(&base.incoming_tmp()).is_empty());
        // The sender, never answered, sends it again: acknowledged, not stored twice.
        let out = store
            .store(&[Frame {
                header: h,
                files: vec![("ping.jsonl", b"x")],
            }])
            .unwrap();
        assert_eq!(out, vec![Stored::Repeat]);
        assert_eq!(names(&base.incoming()).len(), 1);
    }

    #[test]
    fn a_malformed_mark_is_an_error_naming_it_and_strangers_are_ignored() {
        let (_t, base) = base();
        let state = base.dir("state").unwrap().create_dir_all(DIR).unwrap();
        state.replace("not-a-mark", b"junk").unwrap();
        assert!(Store::open(&base).is_ok());
        let key = mark_file(MachineGuid::random(), uuid::Uuid::new_v4());
        state.replace(&key, b"twelve\n").unwrap();
        let e = Store::open(&base).err().unwrap().to_string();
        assert!(e.contains(&key) && e.contains("not a sequence number"), "{e}");
    }

    #[test]
    fn a_failed_rename_keeps_the_promised_frames_for_the_next_request() {
        let (_t, base) = base();
        let (child, stream) = (MachineGuid::random(), uuid::Uuid::new_v4());
        let mut store = Store::open(&base).unwrap();
        // incoming/ replaced by a file: the rename (step 4) fails after the markers and marks.
        std::fs::remove_dir(base.incoming()).unwrap();
        std::fs::write(base.incoming(), b"").unwrap();
        let frames = [Frame {
            header: header(child, stream, 1),
            files: vec![("ping.jsonl", b"x")],
        }];
        assert!(store.store(&frames).is_err());
        assert_eq!(names(&base.incoming_tmp()).len(), 1, "staged and promised: kept");
        // While incoming/ is still broken, nothing more is stored.
        assert!(store.store(&frames).is_err());
        // Repaired: the staged frame is renamed first, and the sender's repeat acknowledged.
        std::fs::remove_file(base.incoming()).unwrap();
        std::fs::create_dir(base.incoming()).unwrap();
        assert_eq!(store.store(&frames).unwrap(), vec![Stored::Repeat]);
        assert_eq!(names(&base.incoming()).len(), 1);
        assert!(names(&base.incoming_tmp()).is_empty());
    }

    #[test]
    fn a_failure_while_staging_removes_what_was_staged() {
        let (_t, base) = base();
        let (child, stream) = (MachineGuid::random(), uuid::Uuid::new_v4());
        let mut store = Store::open(&base).unwrap();
        let h2 = header(child, stream, 2);
        let frames = [
            Frame {
                header: header(child, stream, 1),
                files: vec![("ping.jsonl", &b"x"[..])],
            },
            Frame {
                header: h2.clone(),
                files: vec![("ping.jsonl", &b"y"[..])],
            },
        ];
        // The second frame's staging name is taken by a directory that cannot be removed.
        let blocker = base.incoming_tmp().join(ship::received_name(&h2).as_str());
        std::fs::create_dir(&blocker).unwrap();
        std::fs::write(blocker.join("f"), b"").unwrap();
        let immutable = crate::spool::beneath::ImmutableDir::new(&blocker);
        assert!(store.store(&frames).is_err());
        assert_eq!(store.mark(child, stream), 0, "nothing promised");
        assert_eq!(
            names(&base.incoming_tmp()),
            vec![ship::received_name(&h2).as_str().to_string()]
        );
        assert!(names(&base.incoming()).is_empty());
        drop(immutable);
        let out = store.store(&frames).unwrap();
        assert!(
            matches!(out[0], Stored::New(_)) && matches!(out[1], Stored::New(_)),
            "{out:?}"
        );
        assert_eq!(names(&base.incoming()).len(), 2);
        assert!(names(&base.incoming_tmp()).is_empty());
    }
}
