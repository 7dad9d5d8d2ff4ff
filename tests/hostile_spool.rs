//! The spool against hostile writers, from the attacker's side (as root, like the red team):
//! symlinks, FIFOs and swapped directories in the places producers can write, and the proof that
//! spoolmon neither touches anything outside its base directory nor lets a second daemon in.

mod common;

use common::*;
use proptest::prelude::*;
use spoolmon::process::round::Processor;
use spoolmon::spool::{queue, BaseDir};
use std::fs;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// A tree outside the base that must never be opened, written, moved or removed: watched with
/// inotify (every event, opens and reads included) and compared before and after.
struct Canary {
    root: PathBuf,
    inotify: inotify::Inotify,
    before: Vec<(String, Vec<u8>)>,
}

impl Canary {
    fn new(dir: &Path) -> Canary {
        let root = dir.join("canary");
        fs::create_dir_all(root.join("sub")).unwrap();
        fs::write(root.join("victim"), b"precious\n").unwrap();
        fs::write(root.join("sub/deep"), b"deep\n").unwrap();
        // Read before the watch starts: our own reads are not spoolmon's.
        let before = snapshot_tree(&root);
        let inotify = inotify::Inotify::init().unwrap();
        for watched in [root.clone(), root.join("sub")] {
            inotify.watches().add(&watched, inotify::WatchMask::ALL_EVENTS).unwrap();
        }
        Canary { root, inotify, before }
    }

    fn file(&self) -> PathBuf {
        self.root.join("victim")
    }

    /// Every inotify event since the start (none expected) and the tree's contents unchanged.
    ///
    /// A close with no open before it is left out: it closes a descriptor opened before the
    /// watch started, i.e. our own writes in [`Canary::new`], whose descriptors a child process
    /// that another test forks at that moment holds until it execs (then its close comes late).
    /// Anything spoolmon does to the tree starts with an open, a rename or a removal.
    fn assert_untouched(&mut self) {
        use inotify::EventMask;
        let mut buffer = [0u8; 4096];
        let raw: Vec<(EventMask, Option<std::ffi::OsString>)> = match self.inotify.read_events(&mut buffer) {
            Ok(events) => events.map(|e| (e.mask, e.name.map(|n| n.to_owned()))).collect(),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => Vec::new(),
            Err(e) => panic!("reading inotify: {e}"),
        };
        let closes = EventMask::CLOSE_WRITE | EventMask::CLOSE_NOWRITE;
        let events: Vec<String> = raw
            .iter()
            .enumerate()
            .filter(|(at, (mask, name))| {
                !closes.contains(*mask) || raw[..*at].iter().any(|(m, n)| m.contains(EventMask::OPEN) && n == name)
            })
            .map(|(_, (mask, name))| format!("{mask:?} {name:?}"))
            .collect();
        assert!(
            events.is_empty(),
            "spoolmon touched the canary outside the base: {events:?}"
        );
        assert_eq!(snapshot_tree(&self.root), self.before, "the canary tree changed");
    }
}

fn snapshot_tree(root: &Path) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in fs::read_dir(&dir).unwrap() {
            let entry = entry.unwrap();
            let rel = entry.path().strip_prefix(root).unwrap().display().to_string();
            if entry.file_type().unwrap().is_dir() {
                stack.push(entry.path());
                out.push((rel + "/", Vec::new()));
            } else {
                out.push((rel, fs::read(entry.path()).unwrap()));
            }
        }
    }
    out.sort();
    out
}

fn mkfifo(path: &Path) {
    nix::unistd::mkfifo(path, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
}

#[test]
fn hostile_entries_in_incoming_are_quarantined_by_a_running_daemon_without_touching_the_outside() {
    let tmp = tempfile::tempdir().unwrap();
    let base = Base::new();
    let mut canary = Canary::new(tmp.path());
    base.write_config("workers: 1\n");
    let mut daemon = base.spawn(&["--log-level", "debug"], "process");
    wait_for("the queue directories", Duration::from_secs(20), Some(&daemon), || {
        base.join("incoming").is_dir() && base.join("failed").is_dir()
    });
    let incoming = base.join("incoming");
    // incoming/x -> a directory outside: used to create outside/REASON.
    symlink(&canary.root, incoming.join("1700000000")).unwrap();
    // A snapshot whose REASON is a symlink to a file outside: used to overwrite it.
    fs::create_dir(incoming.join(".tmp-build")).unwrap();
    fs::write(incoming.join(".tmp-build/ping.jsonl"), b"garbage\n").unwrap();
    symlink(canary.file(), incoming.join(".tmp-build/REASON")).unwrap();
    symlink(canary.file(), incoming.join(".tmp-build/APPLIED")).unwrap();
    fs::rename(incoming.join(".tmp-build"), incoming.join("1700000001")).unwrap();
    // ping.jsonl itself a link to a file outside; a FIFO as a snapshot; a FIFO as its data.
    fs::create_dir(incoming.join(".tmp-build2")).unwrap();
    symlink(canary.file(), incoming.join(".tmp-build2/ping.jsonl")).unwrap();
    fs::rename(incoming.join(".tmp-build2"), incoming.join("1700000002")).unwrap();
    mkfifo(&incoming.join("1700000003"));
    fs::create_dir(incoming.join(".tmp-build4")).unwrap();
    mkfifo(&incoming.join(".tmp-build4/ping.jsonl"));
    fs::rename(incoming.join(".tmp-build4"), incoming.join("1700000004")).unwrap();
    // An HAProxy-looking snapshot whose halves are links outside.
    fs::create_dir(incoming.join(".tmp-build5")).unwrap();
    symlink(canary.file(), incoming.join(".tmp-build5/lb.sock_info")).unwrap();
    symlink(canary.file(), incoming.join(".tmp-build5/lb.sock_stat")).unwrap();
    fs::rename(incoming.join(".tmp-build5"), incoming.join("1700000005")).unwrap();

    let reasons = [
        ("1700000000", "failed/1700000000.REASON"),
        ("1700000001", "failed/1700000001/REASON"),
        ("1700000002", "failed/1700000002/REASON"),
        ("1700000003", "failed/1700000003.REASON"),
        ("1700000004", "failed/1700000004/REASON"),
        ("1700000005", "failed/1700000005/REASON"),
    ];
    // The REASON is written after the move: wait for it, not for the entry.
    wait_for(
        "every hostile entry quarantined with its reason",
        Duration::from_secs(60),
        Some(&daemon),
        || reasons.iter().all(|(_, file)| base.join(file).is_file()),
    );
    assert!(daemon.is_running(), "the daemon keeps running");
    canary.assert_untouched();
    assert!(
        base.join("failed/1700000000")
            .symlink_metadata()
            .unwrap()
            .file_type()
            .is_symlink(),
        "the link itself was moved"
    );
    for (entry, reason_file) in reasons {
        let reason = base
            .read(reason_file)
            .unwrap_or_else(|| panic!("{entry}: no {reason_file}"));
        assert!(
            reason.ends_with('\n') && reason.trim().len() > 10,
            "{entry}: {reason:?}"
        );
    }
    assert!(
        base.join("failed/1700000001/REASON.snapshot")
            .symlink_metadata()
            .unwrap()
            .file_type()
            .is_symlink(),
        "the producer's own REASON entry is kept beside ours"
    );
    assert_eq!(fs::read_dir(&incoming).unwrap().count(), 0);
    daemon.terminate(Duration::from_secs(20)).expect("stops");
}

#[test]
fn a_swapped_or_symlinked_state_directory_lets_no_second_daemon_in_and_the_first_keeps_its_outbox() {
    let tmp = tempfile::tempdir().unwrap();
    let base = Base::new();
    let mut canary = Canary::new(tmp.path());
    // A Graphite sink nobody listens on: the outbox keeps its segment while the daemon runs.
    let config = "sinks:\n  carbon:\n    type: graphite\n    server: 127.0.0.1\n    port: 9\n";
    base.write_order("loop/one", &ping_order("127.0.0.1", 1, 1));
    let mut first = base.start(config);
    wait_for("an outbox segment", Duration::from_secs(30), Some(&first), || {
        fs::read_dir(base.join("outbox/carbon"))
            .map(|d| d.flatten().any(|e| e.file_name().to_string_lossy().ends_with(".seg")))
            .unwrap_or(false)
    });
    let segments = || -> Vec<(String, u64)> {
        use std::os::unix::fs::MetadataExt;
        let mut out: Vec<(String, u64)> = fs::read_dir(base.join("outbox/carbon"))
            .unwrap()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().ends_with(".seg"))
            .map(|e| {
                (
                    e.file_name().to_string_lossy().into_owned(),
                    e.metadata().unwrap().ino(),
                )
            })
            .collect();
        out.sort();
        out
    };
    let before = segments();

    // 1. state/ moved away and replaced by an empty directory.
    fs::rename(base.join("state"), tmp.path().join("state.moved")).unwrap();
    fs::create_dir(base.join("state")).unwrap();
    let second = base
        .spawn(&[], "run")
        .wait_exit(Duration::from_secs(30))
        .expect("exits");
    assert_eq!(second.code(), Some(2), "refused with a usage-level error");
    let log = fs::read_to_string(base.join("run.log")).unwrap();
    assert!(log.contains("another spoolmon"), "{log}");

    // 2. state/ a symlink to a directory outside the base.
    fs::remove_dir(base.join("state")).unwrap();
    symlink(&canary.root, base.join("state")).unwrap();
    let third = base
        .spawn(&[], "run")
        .wait_exit(Duration::from_secs(30))
        .expect("exits");
    assert_ne!(third.code(), Some(0));
    let log = fs::read_to_string(base.join("run.log")).unwrap();
    assert!(log.contains("symbolic link"), "the refusal says why: {log}");

    assert!(first.is_running(), "the first daemon is unharmed");
    let after = segments();
    assert!(
        before.iter().all(|segment| after.contains(segment)),
        "outbox segments deleted or replaced: {before:?} -> {after:?}"
    );
    first.kill9();
    canary.assert_untouched();
}

/// One hostile entry a producer can put into `incoming/`.
#[derive(Clone, Debug)]
enum Entry {
    LinkToOutsideDir,
    LinkToOutsideFile,
    Fifo,
    PlainFile(Vec<u8>),
    EmptyDir,
    /// A snapshot directory holding these files.
    Snapshot(Vec<(FileName, Content)>),
}

#[derive(Clone, Copy, Debug)]
enum FileName {
    Ping,
    Reason,
    Applied,
    HaproxyInfo,
    HaproxyStat,
    Other,
}

impl FileName {
    fn as_str(self) -> &'static str {
        match self {
            FileName::Ping => "ping.jsonl",
            FileName::Reason => "REASON",
            FileName::Applied => "APPLIED",
            FileName::HaproxyInfo => "lb.sock_info",
            FileName::HaproxyStat => "lb.sock_stat",
            FileName::Other => "other",
        }
    }
}

#[derive(Clone, Debug)]
enum Content {
    LinkToOutsideFile,
    LinkToOutsideDir,
    Fifo,
    Dir,
    Bytes(Vec<u8>),
}

fn file_name() -> impl Strategy<Value = FileName> {
    prop_oneof![
        Just(FileName::Ping),
        Just(FileName::Reason),
        Just(FileName::Applied),
        Just(FileName::HaproxyInfo),
        Just(FileName::HaproxyStat),
        Just(FileName::Other),
    ]
}

fn content() -> impl Strategy<Value = Content> {
    prop_oneof![
        Just(Content::LinkToOutsideFile),
        Just(Content::LinkToOutsideDir),
        Just(Content::Fifo),
        Just(Content::Dir),
        prop::collection::vec(any::<u8>(), 0..64).prop_map(Content::Bytes),
        Just(Content::Bytes(
            b"{\"format\":\"spoolmon-ping\",\"version\":1,\"batch\":\"b\",\"results\":0}\n".to_vec()
        )),
    ]
}

fn entry() -> impl Strategy<Value = Entry> {
    prop_oneof![
        Just(Entry::LinkToOutsideDir),
        Just(Entry::LinkToOutsideFile),
        Just(Entry::Fifo),
        prop::collection::vec(any::<u8>(), 0..32).prop_map(Entry::PlainFile),
        Just(Entry::EmptyDir),
        prop::collection::vec((file_name(), content()), 0..4).prop_map(Entry::Snapshot),
    ]
}

fn snapshot_name() -> impl Strategy<Value = String> {
    prop_oneof![
        (1_600_000_000u64..1_900_000_000).prop_map(|t| t.to_string()),
        (1_600_000_000u64..1_900_000_000, 0u32..5).prop_map(|(t, s)| format!("{t}-ping-{s:09}")),
        "[a-z.]{1,8}".prop_filter("a file name", |n| n != "." && n != ".."),
        Just("..".to_owned()).prop_map(|_| "1700000000-..-x".to_owned()),
        Just(".tmp-done-1700000000".to_owned()),
    ]
}

fn plant(incoming: &Path, canary: &Canary, name: &str, entry: &Entry) {
    let path = incoming.join(name);
    if path.symlink_metadata().is_ok() {
        return;
    }
    let place = |path: &Path, content: &Content| match content {
        Content::LinkToOutsideFile => symlink(canary.file(), path).unwrap(),
        Content::LinkToOutsideDir => symlink(&canary.root, path).unwrap(),
        Content::Fifo => mkfifo(path),
        Content::Dir => fs::create_dir(path).unwrap(),
        Content::Bytes(bytes) => fs::write(path, bytes).unwrap(),
    };
    match entry {
        Entry::LinkToOutsideDir => place(&path, &Content::LinkToOutsideDir),
        Entry::LinkToOutsideFile => place(&path, &Content::LinkToOutsideFile),
        Entry::Fifo => place(&path, &Content::Fifo),
        Entry::PlainFile(bytes) => place(&path, &Content::Bytes(bytes.clone())),
        Entry::EmptyDir => place(&path, &Content::Dir),
        Entry::Snapshot(files) => {
            // Built aside and renamed in, as a collector does.
            let build = incoming.join(format!(".tmp-{name}"));
            fs::create_dir(&build).unwrap();
            for (file, content) in files {
                let target = build.join(file.as_str());
                if target.symlink_metadata().is_err() {
                    place(&target, content);
                }
            }
            fs::rename(&build, &path).unwrap();
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: std::env::var("PROPTEST_CASES").ok().and_then(|c| c.parse().ok()).unwrap_or(48),
        ..ProptestConfig::default()
    })]

    /// No sequence of names, symlinks and file types in `incoming/` makes processing open,
    /// write, move or remove anything outside the base; every entry ends in `failed/` or is
    /// removed as processed, and nothing is left half-handled in the queue.
    #[test]
    fn no_hostile_queue_makes_processing_touch_anything_outside_the_base(
        entries in prop::collection::vec((snapshot_name(), entry()), 1..8),
        flush in any::<bool>(),
    ) {
        let tmp = tempfile::tempdir().unwrap();
        let base = BaseDir::new(tmp.path().join("base"));
        base.create_all().unwrap();
        let mut canary = Canary::new(tmp.path());
        for (name, entry) in &entries {
            plant(&base.incoming(), &canary, name, entry);
        }
        let mut processor = Processor::new(base.clone(), 1, Vec::new(), false, Arc::default()).unwrap();
        for _ in 0..3 {
            let _ = processor.process_pending(flush);
        }
        let _ = processor.process_pending(true);
        let _ = queue::depth(&base);
        let owner = queue::TmpOwner { probes: true, pull: true, processing: true };
        queue::clean_tmp(&base, owner).unwrap();
        canary.assert_untouched();
        let left: Vec<String> = fs::read_dir(base.incoming())
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| !n.starts_with(".tmp-"))
            .collect();
        prop_assert!(left.is_empty(), "left in incoming/: {left:?}");
    }
}
