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
//!   the mtime postpones expiry but is not a change;
//! - an active order not modified for `order-timeout` is `Expired` and forgotten, unless it says
//!   `expire: never`; invalid and unresolved files never expire.
//!
//! Parts:
//! - this file: the state of the book (one entry per tracked file), what an examination's outcome
//!   does to it (events, logging once per change) and expiry;
//! - `walk`: the safe walk of `orders/` ([`OrderBook::rescan`], [`OrderBook::refresh`]): names
//!   ignored, symlinks confined to `orders/`, files read beneath a directory descriptor, bounded
//!   in size and depth;
//! - `listing`: each tracked file's state for `spoolmon orders`, `status`, the checks
//!   ([`fresh_scan`], [`format_table`]) and self-metrics ([`OrderBook::state_counts`]).
//!
//! Cost: a full scan ([`OrderBook::rescan`]) stats every known file and opens its `telegraf/<id>`,
//! plus one open + read for new or modified files; a catch-up scan ([`OrderBook::catch_up`], the
//! daemon's periodic one while inotify misses nothing) costs one stat and the `getdents` of each
//! directory, a known active order whose listed inode is unchanged costing nothing more. Entries
//! are kept sorted by id, so the orders below a directory are found without looking at the others.
//!
//! Called by the daemon (events, expiry), self-metrics (state counts), and through
//! [`fresh_scan`] by `spoolmon orders`, `status` and the checks.

#[cfg(test)]
mod fixture;
mod listing;
mod walk;

pub use listing::{
    format_table, fresh_lookup, fresh_scan, printable, render_table, table_row, FailureKind, OrderState, OrderStatus,
    TABLE_HEADER,
};
pub use walk::{is_ignored_name, MAX_DEPTH};

use crate::orders::order::{parse_order_with, resolve_host, Expiry, Order, OrderError, ParsedOrder};
use crate::orders::OrderOptions;
use crate::shared::measurement::OrderId;
use crate::spool::BaseDir;
use std::cell::RefCell;
use std::collections::{BTreeMap, HashSet};
use std::fs::Metadata;
use std::net::IpAddr;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tracing::{debug, info, warn};

/// What changed in the set of orders to measure.
// Events are short-lived and consumed at once; boxing the orders would only add allocations.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug, PartialEq)]
pub enum OrderEvent {
    /// A new valid order (new file, or a file that became valid or resolvable).
    Added(Arc<Order>),
    /// A valid order whose content changed.
    Changed { old: Arc<Order>, new: Arc<Order> },
    /// An order that is no longer measured: its file is gone, or it became invalid.
    Removed(OrderId),
    /// An order not refreshed for `order_timeout`: the caller archives its output and moves the
    /// file at `path`. The book has forgotten it.
    Expired { id: OrderId, path: PathBuf },
}

/// Identity of a file's content as last examined.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Stamp {
    mtime: SystemTime,
    size: u64,
    /// Hash of the content; 0 when the content was not read (problem found before reading).
    hash: u64,
    /// Inode of the file examined (the target's for a symlink): a catch-up rescan compares it
    /// with the directory listing's `d_ino` to see a file replaced by a rename.
    ino: u64,
}

impl Stamp {
    fn of_metadata(meta: &Metadata) -> Stamp {
        Stamp {
            mtime: modified(meta),
            size: meta.len(),
            hash: 0,
            ino: meta.ino(),
        }
    }

    fn same_metadata(&self, meta: &Metadata) -> bool {
        self.mtime == modified(meta) && self.size == meta.len() && self.ino == meta.ino()
    }

    fn same_content(&self, other: &Stamp) -> bool {
        self.size == other.size && self.hash == other.hash
    }
}

fn modified(meta: &Metadata) -> SystemTime {
    meta.modified().unwrap_or(UNIX_EPOCH)
}

// The order is shared with the scheduler (and the events): one copy of 100,000 orders, not
// two (an `Order` is 280 bytes inline plus its strings).
#[derive(Clone, Debug)]
enum EntryState {
    Active(Arc<Order>),
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
    /// An active order whose host is a name, not an address literal (looked up again every
    /// [`RERESOLVE_INTERVAL`]); kept so a rescan of 100,000 orders parses no address.
    by_name: bool,
    /// The last catch-up walk that found the file unchanged ([`OrderBook::catch_up`]'s fast
    /// path marks entries here instead of in a set of ids: no clone, no hash).
    seen_in: u64,
}

impl Entry {
    /// True for an active order whose host is a name (not an address literal) that was looked
    /// up [`RERESOLVE_INTERVAL`] or longer before `now`.
    fn host_lookup_due(&self, now: SystemTime) -> bool {
        self.by_name
            && now
                .duration_since(self.parsed_at)
                .is_ok_and(|age| age >= RERESOLVE_INTERVAL)
    }
}

/// How often the host names of active orders are looked up again (a changed DNS record takes
/// effect within this time; pingmachine's fping looked names up on every run).
pub const RERESOLVE_INTERVAL: Duration = Duration::from_secs(300);

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
    /// Walks of the whole tree so far (each walk's number marks the entries it found as they were).
    walks: u64,
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
            walks: 0,
        }
    }

    /// Valid orders, in id order (shared: cloning one is a reference count).
    pub fn active(&self) -> impl Iterator<Item = &Arc<Order>> {
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

    /// Forgets every active order not modified for `order_timeout` seconds and returns them.
    /// Orders with `expire: never` and invalid and unresolved files never expire: they are the
    /// user's to delete or fix.
    ///
    /// A candidate's file is looked at once more before it expires: a catch-up rescan trusts
    /// inotify for refreshes, and a touch inotify cannot see (through a hard link elsewhere, on
    /// a network filesystem, in a directory whose watch failed) must not expire a live order.
    pub fn expire(&mut self, now: SystemTime) -> Vec<OrderEvent> {
        let timeout = Duration::from_secs(self.options.order_timeout);
        let old = |mtime: SystemTime| now.duration_since(mtime).is_ok_and(|age| age > timeout);
        let candidates: Vec<String> = self
            .entries
            .iter()
            .filter(|(_, entry)| matches!(&entry.state, EntryState::Active(order) if order.expire == Expiry::Timeout))
            .filter(|(_, entry)| old(entry.order.mtime))
            .map(|(key, _)| key.clone())
            .collect();
        let mut expired = Vec::with_capacity(candidates.len());
        for key in candidates {
            let Some(entry) = self.entries.get_mut(&key) else {
                continue;
            };
            match std::fs::metadata(&entry.path) {
                Ok(meta) if !old(modified(&meta)) => {
                    debug!(order = %entry.id, "refreshed without an inotify event; not expired");
                    entry.order.mtime = modified(&meta);
                }
                _ => expired.push(key),
            }
        }
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
            EntryState::Active(order) => order
                .probe
                .resolved_host()
                .map(|(host, address)| (host.to_string(), address)),
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
            Ok(parsed) => (EntryState::Active(Arc::new(parsed.order)), parsed.warnings),
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
        let by_name = match &state {
            EntryState::Active(order) => order
                .probe
                .resolved_host()
                .is_some_and(|(host, _)| host.parse::<IpAddr>().is_err()),
            _ => false,
        };
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
                by_name,
                seen_in: 0,
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

fn same_optional_content(a: Option<&Stamp>, b: Option<&Stamp>) -> bool {
    match (a, b) {
        (Some(a), Some(b)) => a.same_content(b),
        (None, None) => true,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::orders::book::fixture::*;
    use crate::orders::order::ProbeSpec;
    use std::collections::BTreeSet;
    use std::fs;
    use std::io;

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
    fn an_order_refreshed_behind_the_books_back_is_looked_at_again_and_not_expired() {
        let mut f = Fixture::new();
        let path = f.write("app/t", VALID);
        let now = SystemTime::now();
        set_mtime(&path, now - Duration::from_secs(3661));
        f.rescan();
        // Refreshed with no rescan and no event reaching the book (a touch through a hard link
        // elsewhere, a network filesystem): the expiry looks at the file itself.
        set_mtime(&path, now);
        assert!(f.book.expire(now).is_empty());
        assert!(f.status("app/t").is_some());
        // Later, unrefreshed for the timeout again, it does expire.
        let later = now + Duration::from_secs(3661);
        assert_eq!(f.book.expire(later).len(), 1);
    }

    #[test]
    fn expire_never_order_is_kept_however_old_and_expires_again_once_the_key_is_gone() {
        let mut f = Fixture::new();
        let path = f.write("static/t", format!("{VALID}expire: never\n"));
        let now = SystemTime::now();
        set_mtime(&path, now - Duration::from_secs(10 * 365 * 86_400));
        assert_eq!(added_ids(&f.rescan()).len(), 1);
        assert!(f.book.expire(now).is_empty());
        assert!(f.book.expire(now + Duration::from_secs(1_000_000)).is_empty());
        let status = f.status("static/t").unwrap();
        assert_eq!((status.state, status.expire), (OrderState::Active, Some(Expiry::Never)));
        assert!(crate::orders::format_table(&[status]).contains("expire: never"));

        // The key removed (the file now older than the timeout): the order expires as any other.
        fs::write(&path, VALID).unwrap();
        set_mtime(&path, now - Duration::from_secs(3661));
        assert!(matches!(f.rescan().as_slice(), [OrderEvent::Changed { .. }]));
        assert_eq!(f.status("static/t").unwrap().expire, Some(Expiry::Timeout));
        assert!(matches!(f.book.expire(now).as_slice(), [OrderEvent::Expired { .. }]));
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
