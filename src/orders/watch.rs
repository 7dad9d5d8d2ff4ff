//! Watching `orders/` and `telegraf/` for `spoolmon run`: turns what inotify reports into the
//! order book's [`OrderEvent`]s, with a full rescan every `rescan-interval`, on inotify overflow,
//! when a watcher fails and when asked ([`OrderWatch::rescan_soon`], on SIGHUP), and expiry
//! checked every few seconds.
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

    /// Waits up to 250 ms for changes and applies them to `book`: the changed files, or a full
    /// rescan when one is due; then expiry when due. Returns the book's events (often none).
    pub fn turn(&mut self, book: &mut OrderBook) -> Vec<OrderEvent> {
        let mut changed = Vec::new();
        let mut rescan = std::mem::take(&mut self.rescan_pending) || self.last_rescan.elapsed() >= self.rescan_every;
        for (i, watcher) in self.watchers.iter_mut().enumerate() {
            let timeout = if i == 0 { WAIT } else { Duration::ZERO };
            match watcher.wait(timeout) {
                Ok(events) => collect_paths(events, &mut changed, &mut rescan),
                Err(e) => {
                    warn!(target: "spoolmon::daemon", "order watcher failed, rescanning: {e}");
                    rescan = true;
                }
            }
        }
        let now = SystemTime::now();
        let mut events = if rescan {
            self.last_rescan = Instant::now();
            book.rescan(now)
        } else if changed.is_empty() {
            Vec::new()
        } else {
            book.refresh(&changed, now)
        };
        if self.last_expiry.elapsed() >= EXPIRY_CHECK {
            self.last_expiry = Instant::now();
            events.extend(book.expire(now));
        }
        events
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
