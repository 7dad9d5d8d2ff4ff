//! Watching `orders/` and `telegraf/` for `spoolmon run`: turns what inotify reports into the
//! order book's [`OrderEvent`]s, and expiry checked every few seconds.
//!
//! inotify is the source of truth: the reported paths are refreshed at once. Every
//! `rescan-interval` a catch-up rescan ([`OrderBook::catch_up`]: a listing of every directory,
//! no stat of a known order whose inode is unchanged) finds what a rename could hide. A full
//! rescan ([`OrderBook::rescan`]: every file stat'ed) replaces it on inotify overflow or a lost
//! root ([`WatchEvent::Rescan`]), when a watcher fails, when asked ([`OrderWatch::rescan_soon`],
//! on SIGHUP), and at every interval once a directory could not be watched
//! ([`DirWatcher::missed_watches`]): then events are missing and only stat'ing every file finds
//! an order edited in place.
//!
//! # Invariants
//!
//! - The watches are set up before the first scan and kept across reloads (invariant 5 of
//!   `spool-layout.md`: a file dropped between the two is not missed); only the timers restart
//!   with a rebuilt book ([`OrderWatch::scanned`]).
//! - Nothing here writes anything or knows the later stages: the caller (`command::run`) maps
//!   the events to schedule updates and processing's lifecycle commands.
//!
//! Log lines keep the target `spoolmon::daemon` they had before this module existed, so log
//! filters (`RUST_LOG`) and journal searches keep matching.

use super::book::{OrderBook, OrderEvent};
use crate::spool::watch::{DirWatcher, WatchError, WatchEvent};
use crate::spool::BaseDir;
use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime};
use tracing::warn;

/// How often expiry is checked (it only looks at in-memory mtimes).
const EXPIRY_CHECK: Duration = Duration::from_secs(5);

/// How long one [`OrderWatch::turn`] waits for `orders/` to change.
const WAIT: Duration = Duration::from_millis(250);

/// The watches on `orders/` and `telegraf/` and when the book was last scanned and expired.
pub struct OrderWatch {
    /// `orders/` first (waited on), then `telegraf/` (polled).
    watchers: Vec<DirWatcher>,
    rescan_every: Duration,
    last_rescan: Instant,
    last_expiry: Instant,
    rescan_pending: bool,
    full_rescans: u64,
    catch_ups: u64,
}

/// A watch that could not be set up.
#[derive(Debug, thiserror::Error)]
#[error("cannot watch {dir}/")]
pub struct WatchSetupError {
    dir: &'static str,
    #[source]
    source: WatchError,
}

impl OrderWatch {
    /// Watches `orders/` and `telegraf/` of `base` (recursively); a full rescan every
    /// `rescan_every`. Call it before the first scan.
    pub fn new(base: &BaseDir, rescan_every: Duration) -> Result<OrderWatch, WatchSetupError> {
        let watch = |dir: &'static str, path: PathBuf| {
            DirWatcher::new(&path, true).map_err(|source| WatchSetupError { dir, source })
        };
        let now = Instant::now();
        Ok(OrderWatch {
            watchers: vec![watch("orders", base.orders())?, watch("telegraf", base.telegraf())?],
            rescan_every,
            last_rescan: now,
            last_expiry: now,
            rescan_pending: false,
            full_rescans: 0,
            catch_ups: 0,
        })
    }

    /// The book was just built and scanned in full: the rescan and expiry timers start again,
    /// now with `rescan_every`.
    pub fn scanned(&mut self, rescan_every: Duration) {
        let now = Instant::now();
        self.rescan_every = rescan_every;
        self.last_rescan = now;
        self.last_expiry = now;
        self.rescan_pending = false;
    }

    /// Makes the next [`OrderWatch::turn`] rescan `orders/` in full.
    pub fn rescan_soon(&mut self) {
        self.rescan_pending = true;
    }

    /// Waits up to 250 ms for changes and applies them to `book` ([`OrderWatch::apply`]).
    /// Returns the book's events (often none).
    pub fn turn(&mut self, book: &mut OrderBook) -> Vec<OrderEvent> {
        let mut reported = Vec::new();
        let mut full = std::mem::take(&mut self.rescan_pending);
        for (i, watcher) in self.watchers.iter_mut().enumerate() {
            let timeout = if i == 0 { WAIT } else { Duration::ZERO };
            match watcher.wait(timeout) {
                Ok(events) => reported.extend(events),
                Err(e) => {
                    warn!(target: "spoolmon::daemon", "order watcher failed, rescanning: {e}");
                    full = true;
                }
            }
        }
        self.apply(book, reported, full)
    }

    /// Applies what the watchers reported to `book`: a full rescan if `full` (asked for, a
    /// watcher failed) or if `reported` holds [`WatchEvent::Rescan`] (queue overflow, root
    /// lost); else, when the periodic rescan is due, a catch-up rescan
    /// ([`OrderBook::catch_up`]), or a full one if a watcher could not watch some directory;
    /// then the reported paths ([`OrderBook::refresh`]); then expiry when due.
    ///
    /// `turn` calls it with the events it waited for; tests call it directly to force what the
    /// kernel cannot be made to do without changing global sysctls (a queue overflow).
    pub(crate) fn apply(&mut self, book: &mut OrderBook, reported: Vec<WatchEvent>, full: bool) -> Vec<OrderEvent> {
        let mut changed = Vec::new();
        let mut full = full;
        collect_paths(reported, &mut changed, &mut full);
        let now = SystemTime::now();
        let due = self.last_rescan.elapsed() >= self.rescan_every;
        let mut events = Vec::new();
        if full || (due && self.watchers.iter().any(DirWatcher::missed_watches)) {
            self.last_rescan = Instant::now();
            self.full_rescans += 1;
            events = book.rescan(now);
        } else {
            if due {
                self.last_rescan = Instant::now();
                self.catch_ups += 1;
                events = book.catch_up(now);
            }
            if !changed.is_empty() {
                events.extend(book.refresh(&changed, now));
            }
        }
        if self.last_expiry.elapsed() >= EXPIRY_CHECK {
            self.last_expiry = Instant::now();
            events.extend(book.expire(now));
        }
        events
    }

    /// How many full rescans and catch-up rescans were done so far.
    pub fn rescans(&self) -> (u64, u64) {
        (self.full_rescans, self.catch_ups)
    }
}

fn collect_paths(events: Vec<WatchEvent>, changed: &mut Vec<PathBuf>, rescan: &mut bool) {
    for event in events {
        match event {
            WatchEvent::Changed(path) | WatchEvent::Removed(path) => changed.push(path),
            WatchEvent::Rescan => *rescan = true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::orders::book::OrderBook;
    use crate::orders::OrderOptions;
    use crate::shared::measurement::OrderId;
    use std::fs;
    use std::io::{Seek, Write};

    const VALID: &str = "user: tmon\nstep: 20\npings: 3\nprobe: fping\nfping:\n    host: 127.0.0.1\n";

    struct Daemon {
        _dir: tempfile::TempDir,
        base: BaseDir,
        book: OrderBook,
        watch: OrderWatch,
    }

    /// The daemon's order side on a fresh base: watch first, then the first full scan.
    fn daemon(rescan_every: Duration, orders: &[&str]) -> Daemon {
        let dir = tempfile::tempdir().unwrap();
        let base = BaseDir::new(dir.path());
        base.create_all().unwrap();
        for rel in orders {
            write(&base, rel, VALID);
        }
        let mut watch = OrderWatch::new(&base, rescan_every).unwrap();
        let mut book = OrderBook::new(base.clone(), OrderOptions::default());
        assert_eq!(book.rescan(SystemTime::now()).len(), orders.len());
        watch.scanned(rescan_every);
        Daemon {
            _dir: dir,
            base,
            book,
            watch,
        }
    }

    fn write(base: &BaseDir, rel: &str, text: &str) {
        let path = base.orders().join(rel);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        let tmp = path.with_file_name(".tmp");
        fs::write(&tmp, text).unwrap();
        fs::rename(&tmp, &path).unwrap();
    }

    /// Rewrites `rel` in place (same inode, same size, new content): no rename, so neither the
    /// directory nor the listing's inode changes; only `IN_CLOSE_WRITE` tells.
    fn edit_in_place(base: &BaseDir, rel: &str, text: &str) {
        let mut file = fs::OpenOptions::new()
            .write(true)
            .open(base.orders().join(rel))
            .unwrap();
        file.rewind().unwrap();
        file.write_all(text.as_bytes()).unwrap();
    }

    fn id(text: &str) -> OrderId {
        OrderId::new(text).unwrap()
    }

    /// Turns the daemon's loop until `want` holds for the book's events so far (each turn waits
    /// up to 250 ms for inotify); panics after 80 turns.
    fn turn_until(d: &mut Daemon, want: impl Fn(&[OrderEvent]) -> bool) -> Vec<OrderEvent> {
        let mut events = Vec::new();
        for _ in 0..80 {
            events.extend(d.watch.turn(&mut d.book));
            if want(&events) {
                return events;
            }
        }
        panic!("the book never got there: {events:?}");
    }

    fn changed_pings(events: &[OrderEvent], order: &str) -> Option<u32> {
        events.iter().find_map(|e| match e {
            OrderEvent::Changed { new, .. } if new.id.as_str() == order => Some(new.pings),
            _ => None,
        })
    }

    #[test]
    fn an_order_edited_in_place_is_picked_up_from_inotify_between_rescans() {
        let mut d = daemon(Duration::from_secs(3600), &["app/t", "app/u"]);
        edit_in_place(&d.base, "app/t", &VALID.replace("pings: 3", "pings: 4"));
        let events = turn_until(&mut d, |events| changed_pings(events, "app/t").is_some());
        assert_eq!(changed_pings(&events, "app/t"), Some(4));
        assert_eq!(d.watch.rescans(), (0, 0), "no rescan was due: inotify alone");
    }

    #[test]
    fn catch_up_rescans_keep_in_place_edits_new_subdirectories_and_removals() {
        // Every turn is a catch-up rescan: the events it does not re-examine still count.
        let mut d = daemon(Duration::ZERO, &["app/t", "app/gone"]);
        edit_in_place(&d.base, "app/t", &VALID.replace("pings: 3", "pings: 5"));
        write(&d.base, "new/sub/deeper/n", VALID);
        fs::remove_file(d.base.orders().join("app/gone")).unwrap();
        let events = turn_until(&mut d, |events| {
            changed_pings(events, "app/t").is_some()
                && events.contains(&OrderEvent::Removed(id("app/gone")))
                && events
                    .iter()
                    .any(|e| matches!(e, OrderEvent::Added(o) if o.id.as_str() == "new/sub/deeper/n"))
        });
        assert_eq!(changed_pings(&events, "app/t"), Some(5));
        let (full, catch_ups) = d.watch.rescans();
        assert_eq!(full, 0);
        assert!(catch_ups > 0);
        let active: Vec<&str> = d.book.active().map(|o| o.id.as_str()).collect();
        assert_eq!(active, ["app/t", "new/sub/deeper/n"]);
    }

    #[test]
    fn a_queue_overflow_makes_a_full_rescan_that_finds_what_the_lost_events_said() {
        let mut d = daemon(Duration::ZERO, &["app/t"]);
        edit_in_place(&d.base, "app/t", &VALID.replace("pings: 3", "pings: 6"));
        // The edit's events are drained and thrown away, as an overflow would lose them.
        let path = d.base.orders().join("app/t");
        let mut lost = Vec::new();
        for _ in 0..80 {
            lost.extend(d.watch.watchers[0].wait(Duration::from_millis(250)).unwrap());
            if lost.contains(&WatchEvent::Changed(path.clone())) {
                break;
            }
        }
        assert!(lost.contains(&WatchEvent::Changed(path)), "{lost:?}");
        // The premise: a catch-up rescan cannot see an edit in place whose event was lost.
        assert_eq!(
            changed_pings(&d.watch.apply(&mut d.book, Vec::new(), false), "app/t"),
            None
        );
        assert_eq!(d.watch.rescans(), (0, 1));
        // What the watcher reports on IN_Q_OVERFLOW: a full rescan, which reads the file again.
        let events = d.watch.apply(&mut d.book, vec![WatchEvent::Rescan], false);
        assert_eq!(changed_pings(&events, "app/t"), Some(6));
        assert_eq!(d.watch.rescans(), (1, 1));
    }

    #[test]
    fn a_rescan_asked_for_is_full() {
        let mut d = daemon(Duration::from_secs(3600), &["app/t"]);
        d.watch.rescan_soon();
        d.watch.turn(&mut d.book);
        assert_eq!(d.watch.rescans(), (1, 0));
    }
}
