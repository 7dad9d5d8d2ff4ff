//! The order book: which files below `orders/` are orders, which are valid, and what changed.
//!
//! One job: turn the state of `orders/` (and the old interface's `telegraf/<id>` files) into
//! [`OrderEvent`]s for the scheduler and a [`OrderStatus`] listing for `spoolmon orders`. The book
//! only reads: it never writes, moves or deletes a file (the caller archives expired orders).
//!
//! Invariants:
//! - every file below `orders/` (any depth) is tracked under its id (path relative to `orders/`),
//!   except names that are still being written: dotfiles and dot-directories, `*~`, `*.tmp`,
//!   `*.swp`, `*.swx`, `*.part`, `#name#`, and vim's `4913` probe. They are not even read until
//!   renamed into place;
//! - a symlink is followed only if its target stays inside `orders/`; otherwise, or if it cannot
//!   be resolved (loops included), it is listed as invalid. A directory symlink pointing to one of
//!   its own ancestors is a loop: listed invalid, never followed;
//! - an invalid order is logged once per change (of its content or its reason), left on disk and
//!   not measured; an active order that becomes invalid is `Removed`;
//! - an order whose host does not resolve is `unresolved` and retried on every examination; an
//!   active order's host name is looked up again every [`RERESOLVE_INTERVAL`] (at the next
//!   rescan): a new address makes it `Changed`, a failed lookup keeps the last known address;
//! - change detection is by (mtime, size) first, then a content hash: a touch that only refreshes
//!   the mtime postpones expiry but is not a change.
//!
//! Cost: one stat per known file per scan, plus one open + read for new or modified files. Entries
//! are kept sorted by id, so the orders below a directory are found without looking at the others.

use crate::measurement::OrderId;
use crate::orders::OrderOptions;
use crate::orders::order::{
    parse_order_with, resolve_host, Order, OrderError, ParsedOrder, ProbeSpec, MAX_ORDER_BYTES,
};
use crate::spool::beneath::Dir;
use crate::spool::BaseDir;
use serde::Serialize;
use std::cell::RefCell;
use std::collections::{BTreeMap, HashSet};
use std::ffi::OsStr;
use std::fs::{self, FileType, Metadata};
use std::hash::{DefaultHasher, Hasher};
use std::io::{self, Read};
use std::net::IpAddr;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tracing::{debug, info, warn};

/// Deepest directory nesting below `orders/` that is scanned.
pub const MAX_DEPTH: usize = 64;

/// What changed in the set of orders to measure.
// Events are short-lived and consumed at once; boxing the orders would only add allocations.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug, PartialEq)]
pub enum OrderEvent {
    /// A new valid order (new file, or a file that became valid or resolvable).
    Added(Order),
    /// A valid order whose content changed.
    Changed { old: Order, new: Order },
    /// An order that is no longer measured: its file is gone, or it became invalid.
    Removed(OrderId),
    /// An order not refreshed for `order_timeout`: the caller archives its output and moves the
    /// file at `path`. The book has forgotten it.
    Expired { id: OrderId, path: PathBuf },
}

/// The state of one tracked order file, as listed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum OrderState {
    Active,
    /// Active, but its output cannot be written (from `state/output-errors.json`; set by
    /// [`crate::orders::listing`], never by the book itself).
    Failing,
    Invalid,
    Unresolved,
}

impl OrderState {
    pub fn as_str(self) -> &'static str {
        match self {
            OrderState::Active => "active",
            OrderState::Failing => "failing",
            OrderState::Invalid => "invalid",
            OrderState::Unresolved => "unresolved",
        }
    }
}

/// One line of `spoolmon orders` (and of its `--json` output).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct OrderStatus {
    pub id: OrderId,
    pub path: PathBuf,
    pub state: OrderState,
    /// Why the order is invalid, unresolved or failing.
    pub reason: Option<String>,
    /// Last modification of the order file, unix seconds.
    pub mtime: i64,
    pub probe: Option<String>,
    pub step: Option<u32>,
    pub pings: Option<u32>,
    /// Host, URL or command the order measures.
    pub target: Option<String>,
    /// Harmless oddities of an active order (unknown keys).
    pub warnings: Vec<String>,
}

/// Identity of a file's content as last examined.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Stamp {
    mtime: SystemTime,
    size: u64,
    /// Hash of the content; 0 when the content was not read (problem found before reading).
    hash: u64,
}

impl Stamp {
    fn of_metadata(meta: &Metadata) -> Stamp {
        Stamp {
            mtime: modified(meta),
            size: meta.len(),
            hash: 0,
        }
    }

    fn same_metadata(&self, meta: &Metadata) -> bool {
        self.mtime == modified(meta) && self.size == meta.len()
    }

    fn same_content(&self, other: &Stamp) -> bool {
        self.size == other.size && self.hash == other.hash
    }
}

fn modified(meta: &Metadata) -> SystemTime {
    meta.modified().unwrap_or(UNIX_EPOCH)
}

// Active is by far the common state: keeping the order inline saves an allocation per order.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug)]
enum EntryState {
    Active(Order),
    Invalid(String),
    Unresolved(String),
}

impl EntryState {
    fn reason(&self) -> Option<&str> {
        match self {
            EntryState::Active(_) => None,
            EntryState::Invalid(reason) | EntryState::Unresolved(reason) => Some(reason),
        }
    }
}

/// One tracked file below `orders/`.
#[derive(Clone, Debug)]
struct Entry {
    id: OrderId,
    path: PathBuf,
    order: Stamp,
    telegraf: Option<Stamp>,
    state: EntryState,
    warnings: Vec<String>,
    /// When the file was last parsed (and its host name looked up).
    parsed_at: SystemTime,
}

impl Entry {
    /// True for an active order whose host is a name (not an address literal) that was looked
    /// up [`RERESOLVE_INTERVAL`] or longer before `now`.
    fn host_lookup_due(&self, now: SystemTime) -> bool {
        let EntryState::Active(order) = &self.state else {
            return false;
        };
        let by_name = last_known_address(order).is_some_and(|(host, _)| host.parse::<IpAddr>().is_err());
        by_name
            && now
                .duration_since(self.parsed_at)
                .is_ok_and(|age| age >= RERESOLVE_INTERVAL)
    }
}

/// How often the host names of active orders are looked up again (a changed DNS record takes
/// effect within this time; pingmachine's fping looked names up on every run).
pub const RERESOLVE_INTERVAL: Duration = Duration::from_secs(300);

/// What `telegraf/<id>` is.
enum TelegrafFile {
    Absent,
    Open {
        file: fs::File,
        meta: Metadata,
    },
    /// A symlink on the way, not a regular file, unreadable: the reason.
    Refused(String),
}

/// Why reading a file gave no content.
enum ReadFailure {
    /// The file vanished meanwhile: treat as deleted.
    Gone,
    Problem(OrderError),
}

/// How host names become addresses (the system resolver; tests substitute a scripted one to
/// simulate DNS records appearing and disappearing).
type Resolver = Box<dyn Fn(&str) -> Result<IpAddr, String>>;

/// Everything known about the files below `orders/`.
pub struct OrderBook {
    base: BaseDir,
    orders_dir: PathBuf,
    telegraf_dir: PathBuf,
    options: OrderOptions,
    resolver: Resolver,
    /// Keyed by the id's text, so the ids below a directory form one contiguous range.
    entries: BTreeMap<String, Entry>,
    /// Names that cannot be order ids (not UTF-8), warned about once.
    unnameable: HashSet<PathBuf>,
}

/// The state of one walk (full rescan or refresh of a subtree).
struct Walk<'e> {
    /// `orders/` canonicalized: symlink targets must stay below it.
    orders_real: PathBuf,
    /// `orders/` opened: order files are read beneath it, no link followed on the way, so a
    /// directory swapped for a symlink after the walk looked at it cannot lead outside.
    orders_fd: Dir,
    /// (device, inode) of the directories from `orders/` down to the current one.
    ancestors: Vec<(u64, u64)>,
    seen: HashSet<OrderId>,
    events: &'e mut Vec<OrderEvent>,
    /// The time of this walk (when host names are due to be looked up again).
    now: SystemTime,
}

impl OrderBook {
    pub fn new(base: BaseDir, options: OrderOptions) -> OrderBook {
        OrderBook {
            orders_dir: base.orders(),
            telegraf_dir: base.telegraf(),
            base,
            options,
            resolver: Box::new(resolve_host),
            entries: BTreeMap::new(),
            unnameable: HashSet::new(),
        }
    }

    /// Valid orders, in id order.
    pub fn active(&self) -> impl Iterator<Item = &Order> {
        self.entries.values().filter_map(|entry| match &entry.state {
            EntryState::Active(order) => Some(order),
            _ => None,
        })
    }

    /// Number of tracked files (active, invalid and unresolved).
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Walks all of `orders/` and returns what changed since the last look. Host names of active
    /// orders looked up [`RERESOLVE_INTERVAL`] or longer before `now` are looked up again; a new
    /// address makes the order `Changed`. (The expiry clock is each file's mtime.)
    pub fn rescan(&mut self, now: SystemTime) -> Vec<OrderEvent> {
        let mut events = Vec::new();
        let Some(mut walk) = self.start_walk(&mut events, now) else {
            let all: Vec<String> = self.entries.keys().cloned().collect();
            for key in all {
                self.forget(&key, &mut events);
            }
            return events;
        };
        let root = self.orders_dir.clone();
        if let Ok(meta) = fs::metadata(&root) {
            walk.ancestors.push((meta.dev(), meta.ino()));
            self.walk_dir(&mut walk, &root);
        }
        let seen = std::mem::take(&mut walk.seen);
        let gone: Vec<String> = self
            .entries
            .iter()
            .filter(|(_, entry)| !seen.contains(&entry.id))
            .map(|(key, _)| key.clone())
            .collect();
        for key in gone {
            self.forget(&key, &mut events);
        }
        events
    }

    /// Re-examines just `paths` (files or directories, recursively; paths below `telegraf/` mean
    /// the order of the same id). Vanished paths are removed.
    pub fn refresh(&mut self, paths: &[PathBuf], now: SystemTime) -> Vec<OrderEvent> {
        let mut events = Vec::new();
        for path in paths {
            let path = self.order_path_for(path);
            if path == self.orders_dir {
                events.extend(self.rescan(now));
                continue;
            }
            if !path.starts_with(&self.orders_dir) || self.is_ignored_path(&path) {
                debug!(path = %path.display(), "not an order path; ignored");
                continue;
            }
            self.refresh_one(&path, &mut events);
        }
        events
    }

    /// Forgets every active order not modified for `order_timeout` seconds and returns them.
    /// Invalid and unresolved files never expire: they are the user's to fix.
    pub fn expire(&mut self, now: SystemTime) -> Vec<OrderEvent> {
        let timeout = Duration::from_secs(self.options.order_timeout);
        let expired: Vec<String> = self
            .entries
            .iter()
            .filter(|(_, entry)| matches!(entry.state, EntryState::Active(_)))
            .filter(|(_, entry)| now.duration_since(entry.order.mtime).is_ok_and(|age| age > timeout))
            .map(|(key, _)| key.clone())
            .collect();
        let mut events = Vec::with_capacity(expired.len());
        for key in expired {
            if let Some(entry) = self.entries.remove(&key) {
                info!(order = %entry.id, path = %entry.path.display(), "order expired (not refreshed)");
                events.push(OrderEvent::Expired {
                    id: entry.id,
                    path: entry.path,
                });
            }
        }
        events
    }

    /// Every tracked file with its state, in id order.
    pub fn listing(&self) -> Vec<OrderStatus> {
        self.entries.values().map(status_of).collect()
    }

    /// How many tracked files are in each state (for self-metrics; no copies, unlike `listing`).
    pub fn state_counts(&self) -> Vec<(OrderState, usize)> {
        let mut counts = [0usize; 3];
        for entry in self.entries.values() {
            counts[match entry.state {
                EntryState::Active(_) => 0,
                EntryState::Invalid(_) => 1,
                EntryState::Unresolved(_) => 2,
            }] += 1;
        }
        let states = [OrderState::Active, OrderState::Invalid, OrderState::Unresolved];
        states.into_iter().zip(counts).collect()
    }

    /// Starts a walk; `None` when `orders/` does not exist (or cannot be resolved).
    fn start_walk<'e>(&self, events: &'e mut Vec<OrderEvent>, now: SystemTime) -> Option<Walk<'e>> {
        match fs::canonicalize(&self.orders_dir).and_then(|real| Ok((Dir::open(&real)?, real))) {
            Ok((orders_fd, orders_real)) => Some(Walk {
                orders_real,
                orders_fd,
                ancestors: Vec::new(),
                seen: HashSet::new(),
                events,
                now,
            }),
            Err(e) => {
                debug!(dir = %self.orders_dir.display(), error = %e, "orders directory missing");
                None
            }
        }
    }

    /// `telegraf/<id>` means `orders/<id>`; other paths are returned as they are.
    fn order_path_for(&self, path: &Path) -> PathBuf {
        match path.strip_prefix(&self.telegraf_dir) {
            Ok(rel) => self.orders_dir.join(rel),
            Err(_) => path.to_owned(),
        }
    }

    /// True if a component of `path` below `orders/` is a name that is never tracked.
    fn is_ignored_path(&self, path: &Path) -> bool {
        let Ok(rel) = path.strip_prefix(&self.orders_dir) else {
            return true;
        };
        rel.components().any(|c| is_ignored_name(c.as_os_str()))
    }

    fn refresh_one(&mut self, path: &Path, events: &mut Vec<OrderEvent>) {
        let Some(mut walk) = self.start_walk(events, SystemTime::now()) else {
            return;
        };
        let start = self.refresh_start(path, &mut walk);
        let Some(start_id) = self.id_for(&start) else {
            return;
        };
        // A vanished start is simply not seen: everything below it is forgotten.
        if let Ok(meta) = fs::symlink_metadata(&start) {
            self.visit(&mut walk, &start, meta.file_type());
        }
        let seen = std::mem::take(&mut walk.seen);
        for key in self.keys_below(&start_id) {
            let still_there = self.entries.get(&key).is_some_and(|entry| seen.contains(&entry.id));
            if !still_there {
                self.forget(&key, events);
            }
        }
    }

    /// Where to start re-examining `path`: the path itself, or its top-most ancestor below
    /// `orders/` that is a symlink or missing (so symlink checks and removals apply to it).
    /// Fills `walk.ancestors` with the directories above the start.
    fn refresh_start(&self, path: &Path, walk: &mut Walk<'_>) -> PathBuf {
        let mut current = self.orders_dir.clone();
        if let Ok(meta) = fs::metadata(&current) {
            walk.ancestors.push((meta.dev(), meta.ino()));
        }
        let Ok(rel) = path.strip_prefix(&self.orders_dir) else {
            return path.to_owned();
        };
        let parents: Vec<_> = rel.components().collect();
        for component in &parents[..parents.len().saturating_sub(1)] {
            current.push(component);
            match fs::symlink_metadata(&current) {
                Ok(meta) if meta.is_dir() => walk.ancestors.push((meta.dev(), meta.ino())),
                _ => return current,
            }
        }
        path.to_owned()
    }

    /// Keys of the entry `id` and every entry below it (as a directory).
    fn keys_below(&self, id: &OrderId) -> Vec<String> {
        let prefix = format!("{}/", id.as_str());
        let mut keys: Vec<String> = self
            .entries
            .range(prefix.clone()..)
            .take_while(|(key, _)| key.starts_with(&prefix))
            .map(|(key, _)| key.clone())
            .collect();
        if self.entries.contains_key(id.as_str()) {
            keys.push(id.as_str().to_string());
        }
        keys
    }

    fn id_for(&mut self, path: &Path) -> Option<OrderId> {
        match OrderId::from_relative_path(&self.orders_dir, path) {
            Ok(id) => Some(id),
            Err(e) => {
                if self.unnameable.insert(path.to_owned()) {
                    warn!(path = %path.display(), error = %e, "file in orders/ cannot be an order id; ignored");
                }
                None
            }
        }
    }

    /// Examines one path found below `orders/` (`file_type` as lstat sees it).
    fn visit(&mut self, walk: &mut Walk<'_>, path: &Path, file_type: FileType) {
        let Some(id) = self.id_for(path) else {
            return;
        };
        if walk.ancestors.len() > MAX_DEPTH {
            warn!(path = %path.display(), "orders nested deeper than {MAX_DEPTH} levels; not scanned");
            return;
        }
        if file_type.is_symlink() {
            match follow_symlink(&id, path, &walk.orders_real) {
                Ok((_, meta)) if meta.is_dir() => self.visit_dir(walk, &id, path, &meta),
                Ok((real, meta)) => self.visit_file(walk, id, path, &real, &meta),
                Err(problem) => {
                    let stamp = fs::symlink_metadata(path)
                        .map(|m| Stamp::of_metadata(&m))
                        .unwrap_or(Stamp {
                            mtime: UNIX_EPOCH,
                            size: 0,
                            hash: 0,
                        });
                    walk.seen.insert(id.clone());
                    self.record(id, path, stamp, None, Err(problem), walk.events);
                }
            }
        } else if file_type.is_dir() {
            match fs::metadata(path) {
                Ok(meta) => self.visit_dir(walk, &id, path, &meta),
                Err(e) => debug!(dir = %path.display(), error = %e, "directory vanished"),
            }
        } else {
            match fs::metadata(path) {
                Ok(meta) => self.visit_file(walk, id, path, path, &meta),
                Err(e) => debug!(path = %path.display(), error = %e, "file vanished"),
            }
        }
    }

    /// Walks a directory (reached directly or through a symlink inside the tree).
    fn visit_dir(&mut self, walk: &mut Walk<'_>, id: &OrderId, path: &Path, meta: &Metadata) {
        let inode = (meta.dev(), meta.ino());
        if walk.ancestors.contains(&inode) {
            walk.seen.insert(id.clone());
            let problem = OrderError::SymlinkBroken {
                id: id.clone(),
                path: path.to_owned(),
                message: "symlink loop: it points to a directory above itself".to_string(),
            };
            self.record(
                id.clone(),
                path,
                Stamp::of_metadata(meta),
                None,
                Err(problem),
                walk.events,
            );
            return;
        }
        walk.ancestors.push(inode);
        self.walk_dir(walk, path);
        walk.ancestors.pop();
    }

    fn walk_dir(&mut self, walk: &mut Walk<'_>, dir: &Path) {
        let entries = match fs::read_dir(dir) {
            Ok(entries) => entries,
            Err(e) => {
                warn!(dir = %dir.display(), error = %e, "cannot list orders directory");
                return;
            }
        };
        for entry in entries.flatten() {
            if is_ignored_name(&entry.file_name()) {
                continue;
            }
            if let Ok(file_type) = entry.file_type() {
                self.visit(walk, &entry.path(), file_type);
            }
        }
    }

    /// Examines one order file; `real` is the file to read (the symlink target, or `path`).
    fn visit_file(&mut self, walk: &mut Walk<'_>, id: OrderId, path: &Path, real: &Path, meta: &Metadata) {
        walk.seen.insert(id.clone());
        let telegraf_path = self.telegraf_dir.join(id.as_path());
        let telegraf_file = self.open_telegraf(&id);
        let telegraf_meta = match &telegraf_file {
            TelegrafFile::Open { meta, .. } => Some(meta.clone()),
            TelegrafFile::Absent | TelegrafFile::Refused(_) => None,
        };
        let old = self.entries.get(id.as_str());
        if let Some(old) = old {
            let unchanged = old.path == path
                && old.order.same_metadata(meta)
                && same_optional_metadata(old.telegraf.as_ref(), telegraf_meta.as_ref());
            if unchanged && !matches!(old.state, EntryState::Unresolved(_)) && !old.host_lookup_due(walk.now) {
                return;
            }
        }
        if !meta.is_file() {
            let problem = OrderError::NotRegularFile {
                id: id.clone(),
                path: path.to_owned(),
            };
            self.record(id, path, Stamp::of_metadata(meta), None, Err(problem), walk.events);
            return;
        }
        let (order_stamp, bytes) = match read_beneath(&id, real, walk) {
            Ok(content) => content,
            Err(ReadFailure::Gone) => return self.forget(id.as_str(), walk.events),
            Err(ReadFailure::Problem(problem)) => {
                let stamp = Stamp::of_metadata(meta);
                return self.record(id, path, stamp, None, Err(problem), walk.events);
            }
        };
        let mut refused = None;
        let telegraf = match telegraf_file {
            TelegrafFile::Open { file, meta } => match read_open(&id, &telegraf_path, file, &meta) {
                Ok(content) => Some(content),
                Err(ReadFailure::Gone) => None,
                Err(ReadFailure::Problem(problem)) => {
                    return self.record(id, path, order_stamp, None, Err(problem), walk.events);
                }
            },
            TelegrafFile::Absent => None,
            TelegrafFile::Refused(reason) => {
                refused = Some(reason);
                None
            }
        };
        let telegraf_stamp = telegraf.as_ref().map(|(stamp, _)| *stamp);
        if let Some(old) = self.entries.get_mut(id.as_str()) {
            let lookup_due = old.host_lookup_due(walk.now);
            let same = !lookup_due
                && old.path == path
                && old.order.same_content(&order_stamp)
                && same_optional_content(old.telegraf.as_ref(), telegraf_stamp.as_ref());
            if same && !matches!(old.state, EntryState::Unresolved(_)) {
                // A touch: the expiry clock moves, nothing else.
                old.order = order_stamp;
                old.telegraf = telegraf_stamp;
                return;
            }
        }
        let mut outcome = self.parse(&id, path, &bytes, telegraf.as_ref().map(|(_, b)| b.as_slice()));
        if let (Ok(parsed), Some(reason)) = (&mut outcome, refused) {
            parsed.warnings.push(format!(
                "telegraf/{id} is not used (its metadata is not attached): {reason}"
            ));
        }
        self.record(id, path, order_stamp, telegraf_stamp, outcome, walk.events);
    }

    /// Opens `telegraf/<id>` through directory descriptors: no component is followed if it is a
    /// symlink (a `telegraf/<dir>` linked out of the base is refused with the reason), and only a
    /// regular file is opened (non-blocking).
    fn open_telegraf(&self, id: &OrderId) -> TelegrafFile {
        let rel = id.as_path();
        let Some(name) = rel.file_name().and_then(|name| name.to_str()) else {
            return TelegrafFile::Absent;
        };
        let parent = rel.parent().unwrap_or(Path::new(""));
        let opened = self
            .base
            .dir("telegraf")
            .and_then(|telegraf| telegraf.open_dir(parent))
            .and_then(|dir| dir.open_read(name));
        match opened.and_then(|file| file.metadata().map(|meta| (file, meta))) {
            Ok((file, meta)) => TelegrafFile::Open { file, meta },
            Err(e) if e.kind() == io::ErrorKind::NotFound => TelegrafFile::Absent,
            Err(e) => TelegrafFile::Refused(e.to_string()),
        }
    }

    /// Parses an order; if its host no longer resolves but the order was active with the same
    /// host, the last known address is kept (with a warning).
    fn parse(
        &self,
        id: &OrderId,
        path: &Path,
        bytes: &[u8],
        telegraf: Option<&[u8]>,
    ) -> Result<ParsedOrder, OrderError> {
        let text = std::str::from_utf8(bytes).map_err(|_| OrderError::NotUtf8 {
            id: id.clone(),
            path: path.to_owned(),
        })?;
        let telegraf_path = self.telegraf_dir.join(id.as_path());
        let telegraf_text = telegraf
            .map(|bytes| {
                std::str::from_utf8(bytes).map_err(|_| OrderError::NotUtf8 {
                    id: id.clone(),
                    path: telegraf_path.clone(),
                })
            })
            .transpose()?;
        let last_known = self.entries.get(id.as_str()).and_then(|entry| match &entry.state {
            EntryState::Active(order) => last_known_address(order),
            _ => None,
        });
        let kept = RefCell::new(None);
        let resolver = |host: &str| match (self.resolver)(host) {
            Ok(address) => Ok(address),
            Err(message) => match &last_known {
                Some((known_host, address)) if known_host == host => {
                    *kept.borrow_mut() = Some((message, *address));
                    Ok(*address)
                }
                _ => Err(message),
            },
        };
        let parsed = parse_order_with(id, text, telegraf_text, &self.options, &resolver);
        if let (Ok(_), Some((message, address))) = (&parsed, kept.into_inner()) {
            warn!(
                order = %id, path = %path.display(), error = %message, %address,
                "host no longer resolves; keeping its last known address"
            );
        }
        parsed
    }

    /// Stores the outcome of examining a file, logs what is new, and emits the event.
    fn record(
        &mut self,
        id: OrderId,
        path: &Path,
        order: Stamp,
        telegraf: Option<Stamp>,
        outcome: Result<ParsedOrder, OrderError>,
        events: &mut Vec<OrderEvent>,
    ) {
        let old = self.entries.remove(id.as_str());
        let (state, warnings) = match outcome {
            Ok(parsed) => (EntryState::Active(parsed.order), parsed.warnings),
            Err(e) if e.is_retryable() => (EntryState::Unresolved(e.to_string()), Vec::new()),
            Err(e) => (EntryState::Invalid(e.to_string()), Vec::new()),
        };
        let content_changed = old.as_ref().is_none_or(|old| {
            !old.order.same_content(&order) || !same_optional_content(old.telegraf.as_ref(), telegraf.as_ref())
        });
        let old_state = old.map(|entry| entry.state);
        let news = content_changed || old_state.as_ref().and_then(EntryState::reason) != state.reason();
        if news {
            log_state(&id, path, &state, &warnings);
        }
        if let Some(event) = transition(&id, old_state, &state) {
            events.push(event);
        }
        self.entries.insert(
            id.as_str().to_string(),
            Entry {
                id,
                path: path.to_owned(),
                order,
                telegraf,
                state,
                warnings,
                parsed_at: SystemTime::now(),
            },
        );
    }

    /// Drops an entry (file gone); an active order is `Removed`.
    fn forget(&mut self, key: &str, events: &mut Vec<OrderEvent>) {
        if let Some(entry) = self.entries.remove(key) {
            debug!(order = %entry.id, "order file gone");
            if matches!(entry.state, EntryState::Active(_)) {
                events.push(OrderEvent::Removed(entry.id));
            }
        }
    }
}

fn log_state(id: &OrderId, path: &Path, state: &EntryState, warnings: &[String]) {
    match state {
        EntryState::Invalid(reason) => warn!(
            order = %id, path = %path.display(), %reason,
            "invalid order: left in place, not measured"
        ),
        EntryState::Unresolved(reason) => warn!(
            order = %id, path = %path.display(), %reason,
            "order waits for its host to resolve: retried on every rescan"
        ),
        EntryState::Active(_) => {
            for warning in warnings {
                warn!(order = %id, path = %path.display(), %warning, "order accepted with a warning");
            }
        }
    }
}

/// The event for a state change of one order, if any.
fn transition(id: &OrderId, old: Option<EntryState>, new: &EntryState) -> Option<OrderEvent> {
    match (old, new) {
        (Some(EntryState::Active(old)), EntryState::Active(new)) if old != *new => {
            Some(OrderEvent::Changed { old, new: new.clone() })
        }
        (Some(EntryState::Active(_)), EntryState::Active(_)) => None,
        (Some(EntryState::Active(_)), _) => Some(OrderEvent::Removed(id.clone())),
        (_, EntryState::Active(new)) => Some(OrderEvent::Added(new.clone())),
        _ => None,
    }
}

/// Host name and address of an order that resolves a host (fping, tcp).
fn last_known_address(order: &Order) -> Option<(String, IpAddr)> {
    match &order.probe {
        ProbeSpec::Fping(spec) => Some((spec.host.clone(), spec.address)),
        ProbeSpec::Tcp(spec) => Some((spec.host.clone(), spec.address.ip())),
        _ => None,
    }
}

fn same_optional_metadata(stamp: Option<&Stamp>, meta: Option<&Metadata>) -> bool {
    match (stamp, meta) {
        (Some(stamp), Some(meta)) => stamp.same_metadata(meta),
        (None, None) => true,
        _ => false,
    }
}

fn same_optional_content(a: Option<&Stamp>, b: Option<&Stamp>) -> bool {
    match (a, b) {
        (Some(a), Some(b)) => a.same_content(b),
        (None, None) => true,
        _ => false,
    }
}

/// Names of files still being written or never meant as orders: dotfiles (also `.#name` and
/// `.~lock.name#` editor locks, and dot-directories), `name~`, `*.tmp`, `*.swp`, `*.swx`, `*.part`,
/// `#name#` and vim's `4913` write probe.
pub fn is_ignored_name(name: &OsStr) -> bool {
    let Some(name) = name.to_str() else {
        return false;
    };
    name.starts_with('.')
        || name.ends_with('~')
        || [".tmp", ".swp", ".swx", ".part"]
            .iter()
            .any(|suffix| name.ends_with(suffix))
        || (name.len() > 1 && name.starts_with('#') && name.ends_with('#'))
        || name == "4913"
}

/// Resolves a symlink below `orders/`: its canonical target and metadata, if the target exists
/// and stays inside `orders/`.
fn follow_symlink(id: &OrderId, path: &Path, orders_real: &Path) -> Result<(PathBuf, Metadata), OrderError> {
    let broken = |e: io::Error| OrderError::SymlinkBroken {
        id: id.clone(),
        path: path.to_owned(),
        message: e.to_string(),
    };
    let real = fs::canonicalize(path).map_err(broken)?;
    if !real.starts_with(orders_real) {
        return Err(OrderError::SymlinkEscape {
            id: id.clone(),
            path: path.to_owned(),
            target: real,
        });
    }
    let meta = fs::metadata(&real).map_err(broken)?;
    Ok((real, meta))
}

/// Reads the order file `real` (a path below the walk's `orders/`) through the walk's
/// descriptor of `orders/`, following no link on the way; at most [`MAX_ORDER_BYTES`], never
/// blocking on a FIFO swapped in.
fn read_beneath(id: &OrderId, real: &Path, walk: &Walk<'_>) -> Result<(Stamp, Vec<u8>), ReadFailure> {
    // Through in-tree symlinks (allowed) the canonical path has none left: it is opened with no
    // link allowed, so a component swapped for a link since then is refused, not followed.
    let opened = fs::canonicalize(real).and_then(|canonical| match canonical.strip_prefix(&walk.orders_real) {
        Ok(rel) => walk.orders_fd.open_file_beneath(rel),
        Err(_) => Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{} is not below orders/", canonical.display()),
        )),
    });
    let file = opened.map_err(|e| match e.kind() {
        io::ErrorKind::NotFound => ReadFailure::Gone,
        _ => ReadFailure::Problem(OrderError::Read {
            id: id.clone(),
            path: real.to_owned(),
            message: e.to_string(),
        }),
    })?;
    let meta = file.metadata().map_err(|e| {
        ReadFailure::Problem(OrderError::Read {
            id: id.clone(),
            path: real.to_owned(),
            message: e.to_string(),
        })
    })?;
    read_open(id, real, file, &meta)
}

/// Reads the opened `file` (`meta` its metadata), refusing anything but a regular file of at
/// most [`MAX_ORDER_BYTES`].
fn read_open(id: &OrderId, path: &Path, file: fs::File, meta: &Metadata) -> Result<(Stamp, Vec<u8>), ReadFailure> {
    let failure = |e: io::Error| {
        if e.kind() == io::ErrorKind::NotFound {
            ReadFailure::Gone
        } else {
            ReadFailure::Problem(OrderError::Read {
                id: id.clone(),
                path: path.to_owned(),
                message: e.to_string(),
            })
        }
    };
    let too_large = || {
        ReadFailure::Problem(OrderError::TooLarge {
            id: id.clone(),
            path: path.to_owned(),
            limit: MAX_ORDER_BYTES,
        })
    };
    if !meta.is_file() {
        return Err(ReadFailure::Problem(OrderError::NotRegularFile {
            id: id.clone(),
            path: path.to_owned(),
        }));
    }
    if meta.len() > MAX_ORDER_BYTES {
        return Err(too_large());
    }
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    file.take(MAX_ORDER_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(failure)?;
    if bytes.len() as u64 > MAX_ORDER_BYTES {
        return Err(too_large());
    }
    let mut hasher = DefaultHasher::new();
    hasher.write(&bytes);
    let stamp = Stamp {
        mtime: modified(meta),
        size: bytes.len() as u64,
        hash: hasher.finish(),
    };
    Ok((stamp, bytes))
}

fn status_of(entry: &Entry) -> OrderStatus {
    let mtime = match entry.order.mtime.duration_since(UNIX_EPOCH) {
        Ok(age) => age.as_secs() as i64,
        Err(before) => -(before.duration().as_secs() as i64),
    };
    let (state, reason) = match &entry.state {
        EntryState::Active(_) => (OrderState::Active, None),
        EntryState::Invalid(reason) => (OrderState::Invalid, Some(reason.clone())),
        EntryState::Unresolved(reason) => (OrderState::Unresolved, Some(reason.clone())),
    };
    let order = match &entry.state {
        EntryState::Active(order) => Some(order),
        _ => None,
    };
    OrderStatus {
        id: entry.id.clone(),
        path: entry.path.clone(),
        state,
        reason,
        mtime,
        probe: order.map(|o| probe_name(&o.probe).to_string()),
        step: order.map(|o| o.step),
        pings: order.map(|o| o.pings),
        target: order.map(|o| target_of(&o.probe)),
        warnings: entry.warnings.clone(),
    }
}

fn probe_name(probe: &ProbeSpec) -> &'static str {
    use crate::orders::order::ExecKind;
    match probe {
        ProbeSpec::Fping(_) => "fping",
        ProbeSpec::Httping(_) => "httping",
        ProbeSpec::Tcp(_) => "tcp",
        ProbeSpec::Exec(spec) => match spec.kind {
            ExecKind::Exec => "exec",
            ExecKind::Sping => "sping",
            ExecKind::Pping => "pping",
        },
    }
}

fn target_of(probe: &ProbeSpec) -> String {
    match probe {
        ProbeSpec::Fping(spec) if spec.host == spec.address.to_string() => spec.host.clone(),
        ProbeSpec::Fping(spec) => format!("{} ({})", spec.host, spec.address),
        ProbeSpec::Httping(spec) => spec.url.clone(),
        ProbeSpec::Tcp(spec) => format!("{}:{}", spec.host, spec.port),
        ProbeSpec::Exec(spec) => spec.host.clone().unwrap_or_else(|| spec.command.join(" ")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spool::watch::{DirWatcher, WatchEvent};
    use std::collections::BTreeSet;
    use std::os::unix::fs::symlink;
    use std::time::Duration;

    const VALID: &str = "user: tmon\nstep: 20\npings: 3\nprobe: fping\nfping:\n    host: 127.0.0.1\n";

    struct Fixture {
        _dir: tempfile::TempDir,
        base: BaseDir,
        book: OrderBook,
    }

    impl Fixture {
        fn new() -> Fixture {
            let dir = tempfile::tempdir().unwrap();
            let base = BaseDir::new(dir.path());
            base.create_all().unwrap();
            let book = OrderBook::new(base.clone(), OrderOptions::default());
            Fixture { _dir: dir, base, book }
        }

        fn path(&self, rel: &str) -> PathBuf {
            self.base.orders().join(rel)
        }

        fn write(&self, rel: &str, content: impl AsRef<[u8]>) -> PathBuf {
            let path = self.path(rel);
            fs::create_dir_all(path.parent().unwrap()).unwrap();
            fs::write(&path, content).unwrap();
            path
        }

        fn status(&self, id: &str) -> Option<OrderStatus> {
            self.book.listing().into_iter().find(|s| s.id.as_str() == id)
        }

        fn rescan(&mut self) -> Vec<OrderEvent> {
            self.book.rescan(SystemTime::now())
        }
    }

    fn added_ids(events: &[OrderEvent]) -> BTreeSet<String> {
        events
            .iter()
            .filter_map(|e| match e {
                OrderEvent::Added(order) => Some(order.id.to_string()),
                _ => None,
            })
            .collect()
    }

    fn set_mtime(path: &Path, mtime: SystemTime) {
        let file = fs::File::options().write(true).open(path).unwrap();
        file.set_modified(mtime).unwrap();
    }

    #[test]
    fn valid_order_is_added_once_with_its_id_from_the_relative_path() {
        let mut f = Fixture::new();
        f.write("app1/sub/target1", VALID);
        let events = f.rescan();
        assert_eq!(added_ids(&events), BTreeSet::from(["app1/sub/target1".to_string()]));
        assert!(f.rescan().is_empty(), "second scan of an unchanged tree must be quiet");
        let status = f.status("app1/sub/target1").unwrap();
        assert_eq!(status.state, OrderState::Active);
        assert_eq!(status.probe.as_deref(), Some("fping"));
        assert_eq!(status.target.as_deref(), Some("127.0.0.1"));
        assert_eq!(f.book.active().count(), 1);
    }

    #[test]
    fn malformed_orders_stay_on_disk_untouched_and_are_listed_with_a_reason() {
        let mut f = Fixture::new();
        let mut bomb = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x]\n");
        for level in 1..=9 {
            let refs = vec![format!("*a{}", level - 1); 9].join(", ");
            bomb.push_str(&format!("a{level}: &a{level} [{refs}]\n"));
        }
        bomb.push_str(VALID);
        let binary: Vec<u8> = (0u8..=255).cycle().take(2000).collect();
        let cases: Vec<(&str, Vec<u8>, OrderState, &str)> = vec![
            (
                "bad/yaml",
                b"user: [unclosed\n".to_vec(),
                OrderState::Invalid,
                "invalid YAML",
            ),
            ("bad/binary", binary, OrderState::Invalid, "not UTF-8"),
            ("bad/empty", Vec::new(), OrderState::Invalid, "empty"),
            ("bad/list", b"- a\n- b\n".to_vec(), OrderState::Invalid, "must be a map"),
            (
                "bad/missing",
                VALID.replace("step: 20\n", "").into_bytes(),
                OrderState::Invalid,
                "step: required key missing",
            ),
            (
                "bad/type",
                VALID.replace("step: 20", "step: fast").into_bytes(),
                OrderState::Invalid,
                "step:",
            ),
            (
                "bad/step0",
                VALID.replace("step: 20", "step: 0").into_bytes(),
                OrderState::Invalid,
                "step: 0 is out of range",
            ),
            (
                "bad/pings0",
                VALID.replace("pings: 3", "pings: 0").into_bytes(),
                OrderState::Invalid,
                "pings: 0 is out of range",
            ),
            (
                "bad/negative",
                VALID.replace("pings: 3", "pings: -3").into_bytes(),
                OrderState::Invalid,
                "pings: -3 is negative",
            ),
            (
                "bad/probe",
                VALID.replace("probe: fping", "probe: smoke").into_bytes(),
                OrderState::Invalid,
                "unknown probe",
            ),
            (
                "bad/section",
                b"user: u\nstep: 20\npings: 3\nprobe: fping\n".to_vec(),
                OrderState::Invalid,
                "section missing",
            ),
            ("bad/huge", vec![b'#'; 1 << 20], OrderState::Invalid, "too large"),
            (
                "bad/bomb",
                bomb.into_bytes(),
                OrderState::Invalid,
                "alias expansion limit",
            ),
            (
                "bad/dns",
                VALID.replace("127.0.0.1", "no-such-host.invalid").into_bytes(),
                OrderState::Unresolved,
                "no-such-host.invalid",
            ),
        ];
        for (rel, content, _, _) in &cases {
            f.write(rel, content);
        }
        let outside = f._dir.path().join("secret");
        fs::write(&outside, VALID).unwrap();
        symlink(&outside, f.path("bad/escape")).unwrap();
        symlink("selfloop", f.path("bad/selfloop")).unwrap();
        fs::create_dir_all(f.path("bad/dir")).unwrap();
        symlink("..", f.path("bad/dir/up")).unwrap();
        nix::unistd::mkfifo(&f.path("bad/fifo"), nix::sys::stat::Mode::S_IRWXU).unwrap();

        let events = f.rescan();
        assert!(events.is_empty(), "no bad order may be measured: {events:?}");
        let mut expected: Vec<(String, OrderState, &str)> = cases
            .iter()
            .map(|(rel, _, state, reason)| (rel.to_string(), *state, *reason))
            .collect();
        expected.push((
            "bad/escape".into(),
            OrderState::Invalid,
            "escapes orders/ through a symlink",
        ));
        expected.push(("bad/selfloop".into(), OrderState::Invalid, "cannot be followed"));
        expected.push(("bad/dir/up".into(), OrderState::Invalid, "symlink loop"));
        expected.push(("bad/fifo".into(), OrderState::Invalid, "not a regular file"));
        for (id, state, reason) in &expected {
            let status = f.status(id).unwrap_or_else(|| panic!("{id} not listed"));
            assert_eq!(status.state, *state, "{id}: {status:?}");
            let got = status.reason.unwrap_or_default();
            assert!(got.contains(reason), "{id}: reason {got:?} lacks {reason:?}");
        }
        assert_eq!(f.book.len(), expected.len(), "{:#?}", f.book.listing());
        for (rel, content, _, _) in &cases {
            assert_eq!(&fs::read(f.path(rel)).unwrap(), content, "{rel} was modified");
        }
        assert!(f.rescan().is_empty(), "rescanning bad orders changes nothing");
        assert_eq!(f.book.len(), expected.len());
    }

    #[test]
    fn half_written_orders_are_ignored_until_renamed_into_place() {
        let mut f = Fixture::new();
        let names = [
            "app/.foo.tmp",
            "app/foo.swp",
            "app/foo.swx",
            "app/foo~",
            "app/foo.part",
            "app/foo.tmp",
            "app/.#foo",
            "app/#foo#",
            "app/4913",
            "app/.~lock.foo#",
            "app/.hidden/order",
        ];
        for name in names {
            f.write(name, "user: [half-written");
        }
        assert!(f.rescan().is_empty());
        assert!(f.book.listing().is_empty(), "{:?}", f.book.listing());
        let refreshed = f
            .book
            .refresh(&[f.path("app/.foo.tmp"), f.path("app/.hidden")], SystemTime::now());
        assert!(refreshed.is_empty() && f.book.is_empty());

        fs::write(f.path("app/.foo.tmp"), VALID).unwrap();
        fs::rename(f.path("app/.foo.tmp"), f.path("app/foo")).unwrap();
        let events = f.book.refresh(&[f.path("app/foo")], SystemTime::now());
        assert_eq!(added_ids(&events), BTreeSet::from(["app/foo".to_string()]));
    }

    #[test]
    fn modified_order_is_changed_and_a_touch_only_postpones_expiry() {
        let mut f = Fixture::new();
        let path = f.write("app/t", VALID);
        let old_time = SystemTime::now() - Duration::from_secs(3000);
        set_mtime(&path, old_time);
        f.rescan();

        // Touch: same content, new mtime (size unchanged, so the content hash decides).
        let now = SystemTime::now();
        set_mtime(&path, now);
        assert!(f.book.refresh(std::slice::from_ref(&path), now).is_empty());
        let later = now + Duration::from_secs(3000);
        assert!(f.book.expire(later).is_empty(), "the touch must postpone expiry");

        // Same size, different content: a change.
        fs::write(&path, VALID.replace("pings: 3", "pings: 4")).unwrap();
        let events = f.rescan();
        match events.as_slice() {
            [OrderEvent::Changed { old, new }] => {
                assert_eq!((old.pings, new.pings), (3, 4));
            }
            other => panic!("{other:?}"),
        }
        // A comment changes the file but not the order: no event.
        fs::write(&path, format!("# refreshed\n{}", VALID.replace("pings: 3", "pings: 4"))).unwrap();
        assert!(f.rescan().is_empty());
    }

    #[test]
    fn order_not_refreshed_for_the_timeout_expires_and_is_forgotten() {
        let mut f = Fixture::new();
        let stale = f.write("app/stale", VALID);
        f.write("app/fresh", VALID);
        f.write("app/broken", "step: [");
        let now = SystemTime::now();
        set_mtime(&stale, now - Duration::from_secs(3661));
        set_mtime(&f.path("app/broken"), now - Duration::from_secs(99_999));
        f.rescan();
        let events = f.book.expire(now);
        assert_eq!(
            events,
            vec![OrderEvent::Expired {
                id: OrderId::new("app/stale").unwrap(),
                path: stale.clone()
            }]
        );
        assert!(f.status("app/stale").is_none());
        assert!(f.status("app/broken").is_some(), "invalid orders never expire");
        assert!(f.book.expire(now).is_empty());
        assert!(stale.exists(), "the book never moves files");
    }

    #[test]
    fn deleted_order_is_removed_by_refresh_and_by_rescan() {
        let mut f = Fixture::new();
        let a = f.write("app/a", VALID);
        f.write("app/b", VALID);
        f.write("other/c", VALID);
        assert_eq!(f.rescan().len(), 3);
        fs::remove_file(&a).unwrap();
        assert_eq!(
            f.book.refresh(&[a], SystemTime::now()),
            vec![OrderEvent::Removed(OrderId::new("app/a").unwrap())]
        );
        fs::remove_dir_all(f.path("app")).unwrap();
        // A vanished directory removes everything below it, and only that.
        assert_eq!(
            f.book.refresh(&[f.path("app")], SystemTime::now()),
            vec![OrderEvent::Removed(OrderId::new("app/b").unwrap())]
        );
        fs::remove_file(f.path("other/c")).unwrap();
        assert_eq!(f.rescan(), vec![OrderEvent::Removed(OrderId::new("other/c").unwrap())]);
    }

    #[test]
    fn active_order_that_becomes_invalid_is_removed_and_comes_back_when_fixed() {
        let mut f = Fixture::new();
        let path = f.write("app/t", VALID);
        f.rescan();
        fs::write(&path, "step: [").unwrap();
        assert_eq!(f.rescan(), vec![OrderEvent::Removed(OrderId::new("app/t").unwrap())]);
        assert_eq!(f.status("app/t").unwrap().state, OrderState::Invalid);
        assert!(path.exists());
        fs::write(&path, VALID).unwrap();
        assert_eq!(added_ids(&f.rescan()), BTreeSet::from(["app/t".to_string()]));
    }

    #[test]
    fn host_names_of_active_orders_are_looked_up_again_and_a_new_address_changes_the_order() {
        let mut f = Fixture::new();
        let dns: std::rc::Rc<RefCell<IpAddr>> = std::rc::Rc::new(RefCell::new("127.0.0.7".parse().unwrap()));
        let records = dns.clone();
        let lookups = std::rc::Rc::new(RefCell::new(0));
        let counter = lookups.clone();
        f.book.resolver = Box::new(move |_host| {
            *counter.borrow_mut() += 1;
            Ok(*records.borrow())
        });
        f.write("app/named", VALID.replace("127.0.0.1", "moves.test"));
        f.write("app/literal", VALID);
        assert_eq!(f.rescan().len(), 2);
        let before = *lookups.borrow();
        *dns.borrow_mut() = "127.0.0.8".parse().unwrap();
        // Within the interval nothing is looked up again.
        assert!(f.rescan().is_empty());
        assert_eq!(*lookups.borrow(), before);
        // After it, the name is looked up (the literal is not) and the new address takes effect.
        let later = SystemTime::now() + RERESOLVE_INTERVAL + Duration::from_secs(1);
        match f.book.rescan(later).as_slice() {
            [OrderEvent::Changed { new, .. }] => match &new.probe {
                ProbeSpec::Fping(spec) => assert_eq!(spec.address, "127.0.0.8".parse::<IpAddr>().unwrap()),
                other => panic!("{other:?}"),
            },
            other => panic!("{other:?}"),
        }
        assert_eq!(*lookups.borrow(), before + 1);
        // Same address on the next lookup: no event.
        let even_later = later + RERESOLVE_INTERVAL + Duration::from_secs(1);
        assert!(f.book.rescan(even_later).is_empty());
        assert_eq!(*lookups.borrow(), before + 2);
    }

    #[test]
    fn unresolved_order_is_retried_on_rescan_and_added_when_its_host_resolves() {
        let mut f = Fixture::new();
        let dns: std::rc::Rc<RefCell<Option<IpAddr>>> = Default::default();
        let records = dns.clone();
        f.book.resolver = Box::new(move |host| match *records.borrow() {
            Some(address) if host == "later.test" => Ok(address),
            _ => Err(format!("{host}: name not known")),
        });
        f.write("app/t", VALID.replace("127.0.0.1", "later.test"));
        assert!(f.rescan().is_empty());
        assert_eq!(f.status("app/t").unwrap().state, OrderState::Unresolved);
        assert!(f.rescan().is_empty(), "still unresolved");

        *dns.borrow_mut() = Some("127.0.0.9".parse().unwrap());
        let events = f.rescan();
        assert_eq!(added_ids(&events), BTreeSet::from(["app/t".to_string()]));

        // The record disappears and the order is rewritten: the last known address is kept.
        *dns.borrow_mut() = None;
        fs::write(
            f.path("app/t"),
            VALID.replace("127.0.0.1", "later.test").replace("pings: 3", "pings: 5"),
        )
        .unwrap();
        match f.rescan().as_slice() {
            [OrderEvent::Changed { new, .. }] => match &new.probe {
                ProbeSpec::Fping(spec) => {
                    assert_eq!(spec.address, "127.0.0.9".parse::<IpAddr>().unwrap())
                }
                other => panic!("{other:?}"),
            },
            other => panic!("{other:?}"),
        }
        assert_eq!(f.status("app/t").unwrap().state, OrderState::Active);
    }

    #[test]
    fn unknown_keys_give_warnings_and_the_order_stays_active() {
        let mut f = Fixture::new();
        f.write("app/t", format!("{VALID}colour: blue\n"));
        assert_eq!(added_ids(&f.rescan()).len(), 1);
        let status = f.status("app/t").unwrap();
        assert_eq!(status.state, OrderState::Active);
        assert!(status.warnings.iter().any(|w| w.contains("colour")), "{status:?}");
    }

    #[test]
    fn old_interface_telegraf_file_attaches_metadata_and_its_change_is_a_change() {
        let mut f = Fixture::new();
        let id = "6dd803dc5d29b72564467de7ddbfc695";
        f.write(id, VALID);
        let telegraf = f.base.telegraf().join(id);
        fs::write(&telegraf, "measurement_name: tunnel\ntags:\n    tunnel_id: 12458\n").unwrap();
        let events = f.rescan();
        match events.as_slice() {
            [OrderEvent::Added(order)] => {
                let meta = order.telegraf.as_ref().unwrap();
                assert_eq!(meta.measurement_name, "tunnel");
                assert_eq!(meta.tags["tunnel_id"], "12458");
            }
            other => panic!("{other:?}"),
        }
        fs::write(&telegraf, "measurement_name: tunnel2\n").unwrap();
        // A change reported on the telegraf file refreshes the order of the same id.
        match f
            .book
            .refresh(std::slice::from_ref(&telegraf), SystemTime::now())
            .as_slice()
        {
            [OrderEvent::Changed { new, .. }] => {
                assert_eq!(new.telegraf.as_ref().unwrap().measurement_name, "tunnel2")
            }
            other => panic!("{other:?}"),
        }
        fs::remove_file(&telegraf).unwrap();
        match f.rescan().as_slice() {
            [OrderEvent::Changed { new, .. }] => assert_eq!(new.telegraf, None),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_telegraf_directory_linked_out_of_the_base_is_not_followed_and_the_reason_is_listed() {
        let mut f = Fixture::new();
        let outside = tempfile::tempdir().unwrap();
        fs::write(outside.path().join("t"), "measurement_name: stolen\n").unwrap();
        nix::unistd::mkfifo(
            &outside.path().join("fifo"),
            nix::sys::stat::Mode::from_bits_truncate(0o600),
        )
        .unwrap();
        symlink(outside.path(), f.base.telegraf().join("app")).unwrap();
        f.write("app/t", VALID);
        f.write("app/fifo", VALID);
        match f.rescan().as_slice() {
            [OrderEvent::Added(a), OrderEvent::Added(b)] => {
                assert_eq!(
                    (a.telegraf.as_ref(), b.telegraf.as_ref()),
                    (None, None),
                    "no metadata attached"
                );
            }
            other => panic!("{other:?}"),
        }
        for id in ["app/t", "app/fifo"] {
            let status = f.status(id).unwrap();
            assert_eq!(status.state, OrderState::Active, "{status:?}");
            assert!(
                status
                    .warnings
                    .iter()
                    .any(|w| w.contains(&format!("telegraf/{id} is not used"))),
                "{status:?}"
            );
        }
        assert!(f.rescan().is_empty(), "an unchanged refusal is not a change");
    }

    #[test]
    fn symlinks_inside_the_tree_are_followed() {
        let mut f = Fixture::new();
        f.write("real/dir/t", VALID);
        symlink("dir", f.path("real/alias")).unwrap();
        symlink("dir/t", f.path("real/file-alias")).unwrap();
        let events = f.rescan();
        let expected: BTreeSet<String> = ["real/dir/t", "real/alias/t", "real/file-alias"]
            .map(String::from)
            .into();
        assert_eq!(added_ids(&events), expected);
        assert!(f.rescan().is_empty());
    }

    #[test]
    fn symlinked_directory_escaping_orders_is_invalid_and_not_walked() {
        let mut f = Fixture::new();
        let outside = f._dir.path().join("elsewhere");
        fs::create_dir(&outside).unwrap();
        fs::write(outside.join("t"), VALID).unwrap();
        symlink(&outside, f.path("link")).unwrap();
        assert!(f.rescan().is_empty());
        let status = f.status("link").unwrap();
        assert_eq!(status.state, OrderState::Invalid);
        assert!(status.reason.unwrap().contains("escapes orders/"));
        assert!(f.status("link/t").is_none());
        // Refreshing a path below the escaping link checks the link itself.
        assert!(f.book.refresh(&[f.path("link/t")], SystemTime::now()).is_empty());
        assert!(f.status("link/t").is_none());
    }

    #[test]
    fn listing_serializes_state_as_a_word_and_the_table_names_each_order() {
        let mut f = Fixture::new();
        f.write("a/good", VALID);
        f.write("a/bad", VALID.replace("step: 20", "step: 0"));
        f.rescan();
        let listing = crate::orders::listing(&f.base, &OrderOptions::default());
        let json = serde_json::to_value(&listing).unwrap();
        let states: Vec<&str> = json
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["state"].as_str().unwrap())
            .collect();
        assert_eq!(states, ["invalid", "active"]);
        assert_eq!(json[1]["step"], 20);
        let table = crate::orders::format_table(&listing);
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines.len(), 3, "{table}");
        assert!(lines[1].starts_with("a/bad") && lines[1].contains("step: 0"), "{table}");
        assert!(lines[2].contains("a/good") && lines[2].contains("20s/3"), "{table}");
    }

    /// Waits on `watcher` and feeds the book until `want` orders are active (or nothing happens
    /// for a while). Returns the ids added.
    fn follow_watcher(f: &mut Fixture, watcher: &mut DirWatcher, want: usize) -> BTreeSet<String> {
        let mut added = BTreeSet::new();
        let mut idle = 0;
        while f.book.active().count() < want && idle < 20 {
            let events = watcher.wait(Duration::from_millis(250)).unwrap();
            if events.is_empty() {
                idle += 1;
                continue;
            }
            let now = SystemTime::now();
            let book_events = if events.contains(&WatchEvent::Rescan) {
                f.book.rescan(now)
            } else {
                let paths: Vec<PathBuf> = events
                    .into_iter()
                    .filter_map(|e| match e {
                        WatchEvent::Changed(p) | WatchEvent::Removed(p) => Some(p),
                        WatchEvent::Rescan => None,
                    })
                    .collect();
                f.book.refresh(&paths, now)
            };
            added.extend(added_ids(&book_events));
        }
        added
    }

    #[test]
    fn subdirectory_tree_moved_in_at_once_is_found_through_the_watcher() {
        let mut f = Fixture::new();
        let mut watcher = DirWatcher::new(&f.base.orders(), true).unwrap();
        assert!(f.rescan().is_empty());
        let staging = f._dir.path().join("staging/app");
        for rel in ["t1", "deep/t2", "deep/deeper/t3"] {
            let path = staging.join(rel);
            fs::create_dir_all(path.parent().unwrap()).unwrap();
            fs::write(path, VALID).unwrap();
        }
        fs::rename(&staging, f.path("app")).unwrap();
        let added = follow_watcher(&mut f, &mut watcher, 3);
        let expected: BTreeSet<String> = ["app/t1", "app/deep/t2", "app/deep/deeper/t3"].map(String::from).into();
        assert_eq!(added, expected);
    }

    fn drop_files(f: &Fixture, count: usize) -> BTreeSet<String> {
        let staging = f._dir.path().join("staging");
        fs::create_dir_all(&staging).unwrap();
        fs::create_dir_all(f.path("bulk")).unwrap();
        let mut ids = BTreeSet::new();
        for i in 0..count {
            let text = VALID.replace("127.0.0.1", &format!("127.0.{}.{}", i / 250, 1 + i % 250));
            let tmp = staging.join(format!("o{i}"));
            fs::write(&tmp, text).unwrap();
            fs::rename(&tmp, f.path(&format!("bulk/o{i}"))).unwrap();
            ids.insert(format!("bulk/o{i}"));
        }
        ids
    }

    #[test]
    fn ten_thousand_orders_dropped_at_once_are_all_added_by_rescan() {
        let mut f = Fixture::new();
        let ids = drop_files(&f, 10_000);
        let events = f.rescan();
        assert_eq!(added_ids(&events), ids);
        assert_eq!(events.len(), 10_000);
        assert!(f.rescan().is_empty());
    }

    #[test]
    fn ten_thousand_orders_dropped_at_once_are_all_added_through_the_watcher() {
        let mut f = Fixture::new();
        fs::create_dir_all(f.path("bulk")).unwrap();
        let mut watcher = DirWatcher::new(&f.base.orders(), true).unwrap();
        assert!(f.rescan().is_empty());
        let ids = drop_files(&f, 10_000);
        let added = follow_watcher(&mut f, &mut watcher, ids.len());
        assert_eq!(added, ids);
    }

    /// A log sink for one test: everything the book logs while `f` runs.
    fn captured_logs(f: impl FnOnce()) -> String {
        use std::sync::{Arc, Mutex};
        #[derive(Clone)]
        struct Sink(Arc<Mutex<Vec<u8>>>);
        impl io::Write for Sink {
            fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
                self.0.lock().unwrap().extend_from_slice(buf);
                Ok(buf.len())
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        let sink = Sink(Arc::default());
        let writer = sink.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || writer.clone())
            .with_ansi(false)
            .finish();
        tracing::subscriber::with_default(subscriber, f);
        let bytes = sink.0.lock().unwrap().clone();
        String::from_utf8(bytes).unwrap()
    }

    #[test]
    fn invalid_order_is_logged_once_per_change_not_on_every_scan() {
        let mut f = Fixture::new();
        let path = f.write("app/t", "step: 0\n");
        let logs = captured_logs(|| {
            for _ in 0..3 {
                f.rescan();
                f.book.refresh(std::slice::from_ref(&path), SystemTime::now());
            }
        });
        assert_eq!(logs.matches("invalid order").count(), 1, "{logs}");
        assert!(logs.contains("app/t"), "{logs}");

        fs::write(&path, "step: -1\n").unwrap();
        let logs = captured_logs(|| {
            f.rescan();
            f.rescan();
        });
        assert_eq!(logs.matches("invalid order").count(), 1, "{logs}");
    }
}
