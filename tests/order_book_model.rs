//! Model-based test of the order book: random sequences of order-file creates, content changes,
//! deletes, ageings past `order-timeout` (of orders with and without `expire: never`), touches,
//! changes of an order's `alert:` thresholds (a change of the order; an invalid one makes the
//! order invalid), rescans, refreshes and expiries, run against a
//! real [`OrderBook`] on a temporary base directory and against a small in-memory model of what
//! the book must believe. After every step the events, the listing (state and expiry clock of
//! every tracked file) and the active orders must agree with the model, and every file the
//! "user" wrote must still be on disk, unchanged (the book never writes, moves or deletes).
//!
//! The model has two layers: `disk` (what the user's files hold) and `view` (what the book has
//! seen: it learns of a file only when a rescan or a refresh examines it, and forgets an expired
//! order until the next examination finds its file again).
//!
//! Every write sets the file's mtime explicitly to a value no other step uses, so a change is
//! never hidden by the filesystem's timestamp granularity (same size, same mtime); that is a
//! limit of (mtime, size) change detection the book documents, not what this test is about.
//!
//! Cases: `PROPTEST_CASES`, else 64, each at most 30 steps.

use proptest::prelude::*;
use proptest::test_runner::{Config as ProptestConfig, FileFailurePersistence};
use spoolmon::orders::book::{OrderBook, OrderEvent, OrderState};
use spoolmon::orders::order::Alert;
use spoolmon::orders::OrderOptions;
use spoolmon::spool::BaseDir;
use std::collections::BTreeMap;
use std::fs;
use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The files the user may write (ids below `orders/`); the last two are names the book must
/// never track (still being written / hidden).
const SLOTS: [&str; 7] = ["a", "b", "dir/c", "dir/d", "dir/sub/e", "dir/f.tmp", ".hidden"];

fn ignored(slot: &str) -> bool {
    slot.ends_with(".tmp") || slot.starts_with('.') || slot.contains("/.")
}

/// What a file holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Content {
    /// A valid fping order with `pings` pings; `comment` changes the bytes, not the order;
    /// `never` adds `expire: never` (the order never expires); `alert` adds one of
    /// [`ALERTS`] (0: none).
    Valid {
        pings: u32,
        comment: bool,
        never: bool,
        alert: usize,
    },
    /// An invalid order: broken YAML, an invalid `alert:`, or an out-of-range step.
    Invalid { broken_yaml: bool, bad_alert: bool },
}

/// The `alert:` of a valid order (index 0: none), with the same thresholds as `-w`/`-c` lists.
const ALERTS: [(&str, Option<&str>, Option<&str>); 3] = [
    ("", None, None),
    ("alert: {warning: {loss: 10%}}\n", Some("loss=10%"), None),
    (
        "alert:\n    critical:\n        median: 100ms\n        max: 1s\n",
        None,
        Some("median=100ms,max=1s"),
    ),
];

fn alert_of(index: usize) -> Alert {
    let (_, warning, critical) = ALERTS[index];
    Alert::parse_lists(warning, critical).unwrap()
}

impl Content {
    fn text(self) -> String {
        match self {
            Content::Valid {
                pings,
                comment,
                never,
                alert,
            } => format!(
                "{}user: tmon\nstep: 20\npings: {pings}\nprobe: fping\nfping:\n    host: 127.0.0.1\n{}{}",
                if comment { "# refreshed\n" } else { "" },
                if never { "expire: never\n" } else { "" },
                ALERTS[alert].0
            ),
            Content::Invalid { broken_yaml: true, .. } => "user: [tmon\nstep: 20\n".to_string(),
            Content::Invalid { bad_alert: true, .. } => {
                "user: tmon\nstep: 20\npings: 3\nprobe: fping\nfping:\n    host: 127.0.0.1\nalert: {warning: {loss: lots}}\n"
                    .to_string()
            }
            Content::Invalid { .. } => {
                "user: tmon\nstep: 0\npings: 3\nprobe: fping\nfping:\n    host: 127.0.0.1\n".to_string()
            }
        }
    }

    /// The order it gives (its pings, whether it never expires, its alert), if valid.
    fn order(self) -> Option<(u32, bool, usize)> {
        match self {
            Content::Valid {
                pings, never, alert, ..
            } => Some((pings, never, alert)),
            Content::Invalid { .. } => None,
        }
    }
}

#[derive(Clone, Debug)]
enum Step {
    /// Creates the file, or replaces its content (a change, or a rewrite of the same bytes).
    Write(usize, Content),
    Delete(usize),
    /// Sets the mtime beyond `order-timeout` in the past (the order is not refreshed).
    Age(usize),
    /// Sets a fresh mtime, content unchanged (the producer refreshes the order).
    Touch(usize),
    Rescan,
    /// Refreshes one slot's path, as inotify would report it.
    Refresh(usize),
    /// Refreshes the directory `dir` (a subtree event).
    RefreshDir,
    Expire,
}

fn content() -> impl Strategy<Value = Content> {
    prop_oneof![
        3 => (1u32..=3, any::<bool>(), prop::bool::weighted(0.3), 0..ALERTS.len())
            .prop_map(|(pings, comment, never, alert)| Content::Valid { pings, comment, never, alert }),
        1 => any::<(bool, bool)>().prop_map(|(broken_yaml, bad_alert)| Content::Invalid { broken_yaml, bad_alert }),
    ]
}

fn step() -> impl Strategy<Value = Step> {
    let slot = 0..SLOTS.len();
    prop_oneof![
        5 => (slot.clone(), content()).prop_map(|(slot, content)| Step::Write(slot, content)),
        2 => slot.clone().prop_map(Step::Delete),
        2 => slot.clone().prop_map(Step::Age),
        1 => slot.clone().prop_map(Step::Touch),
        3 => Just(Step::Rescan),
        3 => slot.prop_map(Step::Refresh),
        1 => Just(Step::RefreshDir),
        2 => Just(Step::Expire),
    ]
}

/// A user's file as the model knows it.
#[derive(Clone, Copy, Debug)]
struct File {
    content: Content,
    mtime: SystemTime,
}

/// What the book has seen of a file at its last examination.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Seen {
    /// The order's pings, `expire: never` and alert if active, `None` if invalid.
    order: Option<(u32, bool, usize)>,
    /// The mtime seen (the expiry clock), unix seconds.
    mtime: i64,
}

/// An event, comparable regardless of the order the book emitted them in.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Event {
    Added(String, u32),
    Changed(String, u32, u32),
    Removed(String),
    Expired(String),
}

struct Model {
    disk: BTreeMap<&'static str, File>,
    view: BTreeMap<&'static str, Seen>,
}

use spoolmon::shared::clock::unix_secs as unix;

impl Model {
    /// The book examines `slot`: the view follows the disk, with the event that implies.
    fn examine(&mut self, slot: &'static str, events: &mut Vec<Event>) {
        if ignored(slot) {
            return;
        }
        let id = slot.to_string();
        let old = self.view.get(slot).and_then(|seen| seen.order);
        let was_tracked = self.view.contains_key(slot);
        match self.disk.get(slot) {
            None => {
                self.view.remove(slot);
                if old.is_some() {
                    events.push(Event::Removed(id));
                }
            }
            Some(file) => {
                let new = file.content.order();
                self.view.insert(
                    slot,
                    Seen {
                        order: new,
                        mtime: unix(file.mtime),
                    },
                );
                match (was_tracked, old, new) {
                    (true, Some(old), Some(new)) if old != new => events.push(Event::Changed(id, old.0, new.0)),
                    (true, Some(_), None) => events.push(Event::Removed(id)),
                    (_, None, Some(new)) => events.push(Event::Added(id, new.0)),
                    _ => {}
                }
            }
        }
    }

    /// Active orders whose examined mtime is older than the timeout are candidates, except those
    /// with `expire: never`. A candidate is looked at on disk once more: one refreshed since it
    /// was examined (a touch no event reported) keeps its examined content and takes the new
    /// mtime; one still old, or gone, is expired and forgotten.
    fn expire(&mut self, now: SystemTime, timeout: u64, events: &mut Vec<Event>) {
        let limit = unix(now) - timeout as i64;
        let candidates: Vec<&'static str> = self
            .view
            .iter()
            .filter(|(_, seen)| matches!(seen.order, Some((_, false, _))) && seen.mtime < limit)
            .map(|(slot, _)| *slot)
            .collect();
        for slot in candidates {
            match self.disk.get(slot).map(|file| unix(file.mtime)) {
                Some(mtime) if mtime >= limit => {
                    self.view.get_mut(slot).expect("a candidate is in the view").mtime = mtime;
                }
                _ => {
                    self.view.remove(slot);
                    events.push(Event::Expired(slot.to_string()));
                }
            }
        }
    }
}

fn events_of(book_events: Vec<OrderEvent>) -> Vec<Event> {
    let mut events: Vec<Event> = book_events
        .into_iter()
        .map(|event| match event {
            OrderEvent::Added(order) => Event::Added(order.id.to_string(), order.pings),
            OrderEvent::Changed { old, new } => Event::Changed(new.id.to_string(), old.pings, new.pings),
            OrderEvent::Removed(id) => Event::Removed(id.to_string()),
            OrderEvent::Expired { id, .. } => Event::Expired(id.to_string()),
        })
        .collect();
    events.sort();
    events
}

fn set_mtime(path: &std::path::Path, mtime: SystemTime) {
    let file = fs::File::options().write(true).open(path).unwrap();
    file.set_modified(mtime).unwrap();
}

/// Runs `steps` against a fresh book and the model, checking agreement after each.
fn run(steps: &[Step]) -> Result<(), TestCaseError> {
    let dir = tempfile::tempdir().unwrap();
    let base = BaseDir::new(dir.path());
    base.create_all().unwrap();
    let options = OrderOptions::default();
    let timeout = options.order_timeout;
    let mut book = OrderBook::new(base.clone(), options);
    let orders = base.orders();
    let path = |slot: &str| -> PathBuf { orders.join(slot) };
    let now = UNIX_EPOCH + Duration::from_secs(unix(SystemTime::now()) as u64);
    // Every write gets an mtime no other write has: fresh ones within the timeout, aged ones
    // beyond it.
    let mut tick = 0u64;
    let mut fresh = || {
        tick += 1;
        now - Duration::from_secs(1000) + Duration::from_secs(tick)
    };
    let aged = |tick: u64| now - Duration::from_secs(timeout + 10_000 + tick);
    let mut age_tick = 0u64;

    let mut model = Model {
        disk: BTreeMap::new(),
        view: BTreeMap::new(),
    };
    for (n, step) in steps.iter().enumerate() {
        let mut expected = Vec::new();
        let book_events = match step {
            Step::Write(slot, content) => {
                let slot = SLOTS[*slot];
                let file = path(slot);
                fs::create_dir_all(file.parent().unwrap()).unwrap();
                fs::write(&file, content.text()).unwrap();
                let mtime = fresh();
                set_mtime(&file, mtime);
                model.disk.insert(
                    slot,
                    File {
                        content: *content,
                        mtime,
                    },
                );
                Vec::new()
            }
            Step::Delete(slot) => {
                let slot = SLOTS[*slot];
                if model.disk.remove(slot).is_some() {
                    fs::remove_file(path(slot)).unwrap();
                }
                Vec::new()
            }
            Step::Age(slot) | Step::Touch(slot) => {
                let slot = SLOTS[*slot];
                if let Some(file) = model.disk.get_mut(slot) {
                    file.mtime = if matches!(step, Step::Age(_)) {
                        age_tick += 1;
                        aged(age_tick)
                    } else {
                        fresh()
                    };
                    set_mtime(&path(slot), file.mtime);
                }
                Vec::new()
            }
            Step::Rescan => {
                for slot in SLOTS {
                    model.examine(slot, &mut expected);
                }
                book.rescan(now)
            }
            Step::Refresh(slot) => {
                let slot = SLOTS[*slot];
                model.examine(slot, &mut expected);
                book.refresh(&[path(slot)], now)
            }
            Step::RefreshDir => {
                for slot in SLOTS.iter().filter(|slot| slot.starts_with("dir/")) {
                    model.examine(slot, &mut expected);
                }
                book.refresh(&[path("dir")], now)
            }
            Step::Expire => {
                model.expire(now, timeout, &mut expected);
                book.expire(now)
            }
        };
        expected.sort();
        let context = format!("after step {n} ({step:?}) of {steps:#?}");
        prop_assert_eq!(events_of(book_events), expected, "events {}", context);

        let listed: BTreeMap<String, (OrderState, i64, Alert)> = book
            .listing()
            .into_iter()
            .map(|status| (status.id.to_string(), (status.state, status.mtime, status.alert)))
            .collect();
        let modelled: BTreeMap<String, (OrderState, i64, Alert)> = model
            .view
            .iter()
            .map(|(slot, seen)| {
                let (state, alert) = match seen.order {
                    Some((_, _, alert)) => (OrderState::Active, alert_of(alert)),
                    None => (OrderState::Invalid, Alert::default()),
                };
                (slot.to_string(), (state, seen.mtime, alert))
            })
            .collect();
        prop_assert_eq!(listed, modelled, "listing {}", context);

        let active: BTreeMap<String, u32> = book.active().map(|o| (o.id.to_string(), o.pings)).collect();
        let modelled: BTreeMap<String, u32> = model
            .view
            .iter()
            .filter_map(|(slot, seen)| seen.order.map(|(pings, ..)| (slot.to_string(), pings)))
            .collect();
        prop_assert_eq!(active, modelled, "active orders {}", context);

        // The user's files, exactly: none deleted, changed or added by the book.
        for slot in SLOTS {
            let on_disk = fs::read_to_string(path(slot)).ok();
            let in_model = model.disk.get(slot).map(|file| file.content.text());
            prop_assert_eq!(on_disk, in_model, "file {} {}", slot, context);
        }
    }
    Ok(())
}

fn config() -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(64);
    ProptestConfig {
        cases,
        // A failing case is kept in `tests/order_book_model.proptest-regressions` and tried
        // first on every later run.
        failure_persistence: Some(Box::new(FileFailurePersistence::WithSource("proptest-regressions"))),
        ..ProptestConfig::default()
    }
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn the_order_book_agrees_with_its_model_after_every_step(steps in prop::collection::vec(step(), 1..=30)) {
        run(&steps)?;
    }
}

/// A fixed sequence through every kind of step, so the model's paths are exercised whatever the
/// random cases draw.
#[test]
fn a_fixed_walk_through_every_kind_of_step_agrees_with_the_model() {
    let valid = |pings| Content::Valid {
        pings,
        comment: false,
        never: false,
        alert: 0,
    };
    let never = |pings| Content::Valid {
        pings,
        comment: false,
        never: true,
        alert: 0,
    };
    let alerting = |alert| Content::Valid {
        pings: 1,
        comment: false,
        never: false,
        alert,
    };
    let steps = [
        Step::Write(0, valid(1)),
        Step::Write(2, valid(2)),
        Step::Write(5, valid(1)),
        Step::Write(6, valid(1)),
        Step::Rescan,
        Step::Write(
            0,
            Content::Valid {
                pings: 1,
                comment: true,
                never: false,
                alert: 0,
            },
        ),
        Step::Refresh(0),
        Step::Write(0, valid(3)),
        Step::Refresh(0),
        Step::Write(
            2,
            Content::Invalid {
                broken_yaml: true,
                bad_alert: false,
            },
        ),
        Step::RefreshDir,
        Step::Age(0),
        Step::Age(2),
        Step::Expire,
        Step::Rescan,
        Step::Expire,
        Step::Touch(0),
        Step::Rescan,
        Step::Expire,
        // Aged, examined, then refreshed with no event: expiry looks once more and keeps it.
        Step::Age(0),
        Step::Rescan,
        Step::Touch(0),
        Step::Expire,
        Step::Expire,
        Step::Delete(0),
        Step::Write(4, valid(2)),
        Step::Rescan,
        Step::Delete(4),
        Step::RefreshDir,
        // `expire: never`: kept however old; adding or removing the key is a change.
        Step::Write(1, never(1)),
        Step::Rescan,
        Step::Age(1),
        Step::Rescan,
        Step::Expire,
        Step::Write(3, valid(2)),
        Step::RefreshDir,
        Step::Write(3, never(2)),
        Step::RefreshDir,
        Step::Age(3),
        Step::Write(1, valid(1)),
        Step::Age(1),
        Step::Rescan,
        Step::Expire,
        // `alert:`: adding, changing or removing it is a change (same pings); an invalid one
        // makes the order invalid (removed), fixing it adds it again.
        Step::Write(0, valid(1)),
        Step::Rescan,
        Step::Write(0, alerting(1)),
        Step::Refresh(0),
        Step::Write(0, alerting(2)),
        Step::Rescan,
        Step::Write(
            0,
            Content::Invalid {
                broken_yaml: false,
                bad_alert: true,
            },
        ),
        Step::Refresh(0),
        Step::Write(0, alerting(2)),
        Step::Refresh(0),
        Step::Write(0, valid(1)),
        Step::Rescan,
    ];
    run(&steps).unwrap();
}
