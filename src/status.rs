//! `spoolmon status`: one summary of a base directory (daemon, queues, orders, sinks, self-
//! metrics, last errors) for people, or as one JSON object for scripts.
//!
//! Like the checks it reads only the base directory: lock holders and the heartbeat in
//! `state/`, `incoming/` and `failed/`, the order files (a fresh listing, as `spoolmon orders`),
//! each outbox (as `spoolmon outbox`) and the `state/status*.json` files the running processes
//! write every `self-metrics: {interval}`. Read access is enough; nothing is written.

use crate::config::Config;
use crate::orders::book::{FailureKind, OrderState};
use crate::selfmetrics::{count_failed, Component, StatusFile};
use crate::sink::backlog::{self, SinkBacklog};
use crate::spool::queue::{self, QueueEntry};
use crate::spool::state::HEARTBEAT_FILE;
use crate::spool::{lock, BaseDir};
use serde::Serialize;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::SystemTime;

/// The base directory cannot be read at all.
#[derive(Debug, thiserror::Error)]
#[error("cannot read base directory {path}: {error} (is --base-dir right?)")]
pub struct StatusError {
    pub path: PathBuf,
    pub error: std::io::Error,
}

/// Everything `spoolmon status` reports (the `--json` object).
#[derive(Debug, Serialize)]
pub struct Report {
    pub base_dir: PathBuf,
    /// `spoolmon run` or `spoolmon process` (whoever holds `state/lock`).
    pub daemon: Holder,
    /// `spoolmon pull`, or `spoolmon run` with `pull:` (whoever holds `state/pull.lock`).
    pub pull: Holder,
    pub queue: Queue,
    pub orders: Orders,
    pub sinks: Vec<SinkBacklog>,
    /// One entry per `state/status*.json` found.
    pub self_metrics: Vec<ComponentMetrics>,
    /// The latest error of each part of each process, newest first.
    pub last_errors: Vec<ReportedError>,
    /// The nodes this one receives from (`state/children.json`), by name.
    pub children: Vec<ChildStatus>,
}

/// One child of `state/children.json`.
#[derive(Debug, Serialize)]
pub struct ChildStatus {
    pub node: String,
    pub machine: String,
    pub last_seen: i64,
    pub silent_seconds: i64,
    /// Since when it is stale (its output archived under `archive/@<node>/`).
    pub stale_since: Option<i64>,
}

/// A lock and the live process holding it, if any.
#[derive(Debug, Serialize)]
pub struct Holder {
    pub running: bool,
    pub pid: Option<u32>,
    /// Age of `state/heartbeat` (written by `spoolmon run` and `spoolmon process`).
    pub heartbeat_age_seconds: Option<i64>,
}

#[derive(Debug, Default, Serialize)]
pub struct Queue {
    /// Snapshots in `incoming/` that still need processing.
    pub incoming: usize,
    /// Age of the oldest of them, seconds.
    pub oldest_age_seconds: Option<i64>,
    /// Snapshots marked `APPLIED` that only wait for the RRD flush.
    pub waiting_for_rrd_flush: usize,
    /// Snapshots in `failed/`.
    pub failed: usize,
}

#[derive(Debug, Default, Serialize)]
pub struct Orders {
    pub active: usize,
    /// Orders whose output cannot be written or whose probe cannot measure them
    /// (`state/output-errors.json`; with `spoolmon process` also ids without an order file).
    pub failing: usize,
    /// Of the failing orders, those whose probe could not measure them in its newest run.
    pub probe_failing: usize,
    pub invalid: usize,
    pub unresolved: usize,
    /// Every failing, invalid or unresolved order with the reason.
    pub problems: Vec<OrderProblem>,
}

#[derive(Debug, Serialize)]
pub struct OrderProblem {
    pub id: String,
    pub state: OrderState,
    pub reason: String,
    /// For a failing order: what fails (`output` or `probe`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failure: Option<FailureKind>,
}

/// What one `state/status*.json` says.
#[derive(Debug, Serialize)]
pub struct ComponentMetrics {
    /// `run`, `pull` or `process`.
    pub component: String,
    pub pid: u32,
    /// False when the pid no longer holds its lock: the figures are the last it wrote.
    pub running: bool,
    pub written: i64,
    pub age_seconds: i64,
    /// `name` or `name{label="value"}` → value, as in the metrics file.
    pub metrics: BTreeMap<String, f64>,
}

#[derive(Debug, Serialize)]
pub struct ReportedError {
    /// `<component>: <part>`, e.g. `run: sink carbon` (`pull` alone for `spoolmon pull`'s puller).
    pub source: String,
    pub time: i64,
    pub age_seconds: i64,
    pub message: String,
}

/// Reads the report of `base`; only an unreadable base directory is an error.
pub fn read(base: &BaseDir, config: &Config, now: SystemTime) -> Result<Report, StatusError> {
    std::fs::read_dir(base.root()).map_err(|error| StatusError {
        path: base.root().to_owned(),
        error,
    })?;
    let now = crate::shared::clock::unix_secs(now);
    let daemon = holder(base, lock::LOCK_FILE, now);
    let pull = holder(base, crate::spool::lock::PULL_LOCK, now);
    let self_metrics = component_metrics(base, &daemon, &pull, now);
    let last_errors = last_errors(base, now);
    Ok(Report {
        base_dir: base.root().to_owned(),
        daemon,
        pull,
        queue: queue_of(base, now),
        orders: orders_of(base, config),
        sinks: backlog::read_all(
            &base.outbox(),
            SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(now as u64),
        )
        .unwrap_or_default(),
        self_metrics,
        last_errors,
        children: children_of(base, now),
    })
}

fn children_of(base: &BaseDir, now: i64) -> Vec<ChildStatus> {
    let file = crate::process::children::read(base).unwrap_or_default();
    file.children
        .into_iter()
        .map(|(node, child)| ChildStatus {
            node,
            machine: child.machine,
            last_seen: child.last_seen,
            silent_seconds: (now - child.last_seen).max(0),
            stale_since: child.stale_since,
        })
        .collect()
}

fn holder(base: &BaseDir, lock_name: &str, now: i64) -> Holder {
    let pid = lock::holder(&base.state().join(lock_name));
    let heartbeat = (lock_name == lock::LOCK_FILE)
        .then(|| read_state(base, HEARTBEAT_FILE, 4096))
        .flatten()
        .and_then(|bytes| {
            String::from_utf8_lossy(&bytes)
                .split_whitespace()
                .next()?
                .parse::<i64>()
                .ok()
        });
    Holder {
        running: pid.is_some(),
        pid,
        heartbeat_age_seconds: pid.and(heartbeat).map(|beat| (now - beat).max(0)),
    }
}

fn queue_of(base: &BaseDir, now: i64) -> Queue {
    let mut queue = Queue {
        failed: count_failed(base).unwrap_or(0),
        ..Queue::default()
    };
    let mut oldest: Option<i64> = None;
    for entry in queue::list(base).unwrap_or_default() {
        match entry {
            QueueEntry::Snapshot(name) if queue::is_applied(base, name.as_str()) => queue.waiting_for_rrd_flush += 1,
            QueueEntry::Snapshot(name) => {
                queue.incoming += 1;
                oldest = Some(oldest.map_or(name.epoch, |o| o.min(name.epoch)));
            }
            QueueEntry::Invalid(_) => queue.incoming += 1,
        }
    }
    queue.oldest_age_seconds = oldest.map(|epoch| (now - epoch).max(0));
    queue
}

fn orders_of(base: &BaseDir, config: &Config) -> Orders {
    let mut orders = Orders::default();
    let mut listed = std::collections::HashSet::new();
    let statuses = if base.orders().is_dir() {
        crate::output::failures::listing(base, &config.order_options())
    } else {
        Vec::new()
    };
    for status in statuses {
        listed.insert(status.id.to_string());
        match status.state {
            OrderState::Active => orders.active += 1,
            OrderState::Failing => orders.failing += 1,
            OrderState::Invalid => orders.invalid += 1,
            OrderState::Unresolved => orders.unresolved += 1,
        }
        orders.probe_failing += usize::from(status.failure == Some(FailureKind::Probe));
        if let Some(reason) = status.reason {
            orders.problems.push(OrderProblem {
                id: status.id.to_string(),
                state: status.state,
                reason,
                failure: status.failure,
            });
        }
    }
    // Failures of ids without an order file (`spoolmon process` writes any id).
    let failures = crate::output::failures::read(base).unwrap_or_default();
    for (id, failure) in failures.orders.into_iter().filter(|(id, _)| !listed.contains(id)) {
        orders.failing += 1;
        orders.probe_failing += usize::from(failure.kind == FailureKind::Probe);
        orders.problems.push(OrderProblem {
            id,
            state: OrderState::Failing,
            reason: failure.describe(),
            failure: Some(failure.kind),
        });
    }
    orders
}

/// Largest `status*.json` read (they hold a few hundred samples and messages cut at 500 bytes).
const MAX_STATUS_FILE_BYTES: u64 = 16 << 20;

/// `state/<name>` if it is a regular file of at most `limit` bytes: opened through the base's
/// descriptors, non-blocking (a FIFO planted there is skipped at once, never waited on).
fn read_state(base: &BaseDir, name: &str, limit: u64) -> Option<Vec<u8>> {
    match base.dir("state").and_then(|state| state.read_limited(name, limit)) {
        Ok(bytes) => Some(bytes),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => {
            tracing::debug!("skipping {name}: {e}");
            None
        }
    }
}

fn status_files(base: &BaseDir) -> Vec<StatusFile> {
    Component::ALL
        .iter()
        .filter_map(|c| read_state(base, &c.status_file(), MAX_STATUS_FILE_BYTES))
        .filter_map(|bytes| serde_json::from_slice::<StatusFile>(&bytes).ok())
        .collect()
}

fn component_metrics(base: &BaseDir, daemon: &Holder, pull: &Holder, now: i64) -> Vec<ComponentMetrics> {
    status_files(base)
        .into_iter()
        .map(|file| {
            let holder = if file.component == "pull" { pull } else { daemon };
            ComponentMetrics {
                running: holder.pid == Some(file.pid),
                component: file.component,
                pid: file.pid,
                written: file.written,
                age_seconds: (now - file.written).max(0),
                metrics: file.metrics,
            }
        })
        .collect()
}

fn last_errors(base: &BaseDir, now: i64) -> Vec<ReportedError> {
    let mut errors: Vec<ReportedError> = status_files(base)
        .into_iter()
        .flat_map(|file| {
            let component = file.component;
            file.last_errors.into_iter().map(move |e| ReportedError {
                source: if e.source == component {
                    component.clone()
                } else {
                    format!("{component}: {}", e.source)
                },
                time: e.time,
                age_seconds: (now - e.time).max(0),
                message: e.message,
            })
        })
        .collect();
    errors.sort_by(|a, b| b.time.cmp(&a.time).then_with(|| a.source.cmp(&b.source)));
    errors
}

/// Most order problems listed in the human summary (`--json` has them all).
const SHOWN_PROBLEMS: usize = 5;

/// The human summary: one aligned line (or a few) per topic.
pub fn format_summary(report: &Report) -> String {
    let mut out = String::new();
    let mut line = |label: &str, text: &str| {
        let _ = writeln!(out, "{label:<9} {text}");
    };
    line("base", &report.base_dir.display().to_string());
    line("daemon", &describe_holder(&report.daemon));
    line("pull", &describe_holder(&report.pull));
    let q = &report.queue;
    let oldest = q
        .oldest_age_seconds
        .map_or(String::new(), |age| format!(" (oldest {age} s)"));
    line(
        "queue",
        &format!(
            "{} waiting{oldest}, {} waiting for the RRD flush, {} failed",
            q.incoming, q.waiting_for_rrd_flush, q.failed
        ),
    );
    let o = &report.orders;
    line(
        "orders",
        &format!(
            "{} active, {} failing, {} invalid, {} unresolved",
            o.active, o.failing, o.invalid, o.unresolved
        ),
    );
    let sinks: Vec<String> = report.sinks.iter().map(describe_sink).collect();
    lines(&mut line, "sinks", &sinks, "no sink has an outbox");
    if !report.children.is_empty() {
        let children: Vec<String> = report
            .children
            .iter()
            .map(|c| match c.stale_since {
                None => format!("{} (heard {} s ago)", printable(&c.node), c.silent_seconds),
                Some(_) => format!(
                    "{} STALE: silent {} s, output archived under archive/@{}/",
                    printable(&c.node),
                    c.silent_seconds,
                    printable(&c.node)
                ),
            })
            .collect();
        lines(&mut line, "children", &children, "");
    }
    let metrics: Vec<String> = report.self_metrics.iter().map(describe_metrics).collect();
    lines(&mut line, "metrics", &metrics, "no state/status*.json yet");
    let mut errors: Vec<String> = report
        .last_errors
        .iter()
        .map(|e| format!("{} s ago  {}: {}", e.age_seconds, e.source, printable(&e.message)))
        .collect();
    for problem in o.problems.iter().take(SHOWN_PROBLEMS) {
        errors.push(format!(
            "order {} ({}): {}",
            printable(&problem.id),
            problem.state.as_str(),
            printable(&problem.reason)
        ));
    }
    if o.problems.len() > SHOWN_PROBLEMS {
        errors.push(format!(
            "... {} more order problems (spoolmon orders)",
            o.problems.len() - SHOWN_PROBLEMS
        ));
    }
    lines(&mut line, "errors", &errors, "none");
    out
}

/// `label` before the first of `texts`, blanks before the others; `empty` if there are none.
fn lines(line: &mut impl FnMut(&str, &str), label: &str, texts: &[String], empty: &str) {
    if texts.is_empty() {
        line(label, empty);
    }
    for (i, text) in texts.iter().enumerate() {
        line(if i == 0 { label } else { "" }, text);
    }
}

fn describe_holder(holder: &Holder) -> String {
    match (holder.pid, holder.heartbeat_age_seconds) {
        (None, _) => "not running".into(),
        (Some(pid), Some(age)) => format!("running, pid {pid}, heartbeat {age} s ago"),
        (Some(pid), None) => format!("running, pid {pid}"),
    }
}

fn describe_sink(b: &SinkBacklog) -> String {
    if let Some(error) = &b.error {
        return format!("{}: unreadable ({error})", b.sink);
    }
    let oldest = b
        .oldest_age_seconds
        .map_or(String::new(), |age| format!(", oldest {age} s"));
    format!(
        "{}: {} lines waiting{oldest}, {} dropped, {} rejected, {} delivered",
        b.sink, b.lines, b.dropped_lines, b.rejected_lines, b.delivered_lines
    )
}

/// Key counters of one process, those it has.
fn describe_metrics(c: &ComponentMetrics) -> String {
    const KEY: [(&str, &str); 10] = [
        ("spoolmon_snapshots_processed_total", "snapshots processed"),
        ("spoolmon_snapshots_failed_total", "failed"),
        ("spoolmon_rrd_updates_total", "RRD updates"),
        ("spoolmon_probe_pings_sent_total", "pings sent"),
        ("spoolmon_probe_pings_lost_total", "lost"),
        ("spoolmon_probe_orders_unmeasured_total", "orders not measured"),
        ("spoolmon_probe_runs_suspended_total", "runs suspended"),
        ("spoolmon_pull_cycles_total", "pull cycles"),
        ("spoolmon_pull_failed_cycles_total", "failed"),
        ("spoolmon_pull_suspended_cycles_total", "suspended"),
    ];
    let counters: Vec<String> = KEY
        .iter()
        .filter_map(|(key, label)| c.metrics.get(*key).map(|v| format!("{v} {label}")))
        .collect();
    let state = if c.running { "" } else { ", stopped" };
    format!(
        "{} (pid {}{state}) {} s ago: {}",
        c.component,
        c.pid,
        c.age_seconds,
        counters.join(", ")
    )
}

/// `text` with control characters shown as `?` (reasons may quote file content).
fn printable(text: &str) -> String {
    text.chars().map(|c| if c.is_control() { '?' } else { c }).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_base_reports_nothing_running_and_a_missing_one_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let base = BaseDir::new(dir.path());
        let report = read(&base, &Config::default(), SystemTime::now()).unwrap();
        assert!(!report.daemon.running && !report.pull.running);
        assert_eq!((report.queue.incoming, report.orders.active), (0, 0));
        let text = format_summary(&report);
        assert!(text.contains("daemon    not running"), "{text}");
        assert!(text.contains("errors    none"), "{text}");
        let missing = BaseDir::new(dir.path().join("nope"));
        let err = read(&missing, &Config::default(), SystemTime::now()).unwrap_err();
        assert!(
            err.to_string().contains("nope") && err.to_string().contains("--base-dir"),
            "{err}"
        );
    }

    #[test]
    fn a_linked_applied_mark_does_not_count_a_snapshot_as_waiting_for_the_flush() {
        let dir = tempfile::tempdir().unwrap();
        let base = BaseDir::new(dir.path().join("base"));
        base.create_all().unwrap();
        let outside = dir.path().join("elsewhere");
        std::fs::write(&outside, "").unwrap();
        let snapshot = base.incoming().join("1700000000-ping-1");
        std::fs::create_dir(&snapshot).unwrap();
        std::os::unix::fs::symlink(&outside, snapshot.join(crate::spool::queue::APPLIED_MARK)).unwrap();
        let queue = queue_of(&base, 1_700_000_100);
        assert_eq!((queue.incoming, queue.waiting_for_rrd_flush), (1, 0));
        assert_eq!(queue.oldest_age_seconds, Some(100));
    }

    #[test]
    fn queue_failed_orders_and_status_files_are_summarized() {
        let dir = tempfile::tempdir().unwrap();
        let base = BaseDir::new(dir.path());
        base.create_all().unwrap();
        std::fs::create_dir(base.incoming().join("1700000000-ping-1")).unwrap();
        std::fs::create_dir(base.incoming().join("1700000010-ping-2")).unwrap();
        std::fs::write(
            base.incoming()
                .join("1700000010-ping-2")
                .join(crate::spool::queue::APPLIED_MARK),
            "",
        )
        .unwrap();
        std::fs::create_dir(base.failed().join("1690000000-ping-1")).unwrap();
        std::fs::write(base.orders().join("bad"), "user: x\n").unwrap();
        let mut failures = crate::output::failures::OutputErrors::default();
        failures.orders.insert(
            "long/id".into(),
            crate::output::failures::OrderFailure {
                reason: "File name too long".into(),
                since: 1_700_000_030,
                kind: FailureKind::Output,
                at: None,
            },
        );
        failures.orders.insert(
            "gone/probe".into(),
            crate::output::failures::OrderFailure {
                reason: "cannot run /nonexistent: No such file\nor directory".into(),
                since: 1_700_000_040,
                kind: FailureKind::Probe,
                at: None,
            },
        );
        crate::output::failures::write(&base, &failures).unwrap();
        let status = StatusFile {
            component: "run".into(),
            pid: 4_000_000,
            version: "0".into(),
            started: 1_700_000_000,
            written: 1_700_000_050,
            metrics: [("spoolmon_snapshots_processed_total".to_string(), 12.0)].into(),
            last_errors: vec![crate::selfmetrics::SourceError {
                source: "sink carbon".into(),
                time: 1_700_000_040,
                message: "delivery failed: refused".into(),
            }],
        };
        std::fs::write(base.state().join("status.json"), serde_json::to_vec(&status).unwrap()).unwrap();
        let now = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_700_000_060);
        let report = read(&base, &Config::default(), now).unwrap();
        let q = &report.queue;
        assert_eq!(
            (q.incoming, q.oldest_age_seconds, q.waiting_for_rrd_flush, q.failed),
            (1, Some(60), 1, 1)
        );
        assert_eq!(
            (
                report.orders.invalid,
                report.orders.failing,
                report.orders.probe_failing,
                report.orders.problems.len()
            ),
            (1, 2, 1, 3)
        );
        assert_eq!(report.self_metrics.len(), 1);
        assert!(!report.self_metrics[0].running);
        assert_eq!(report.last_errors[0].source, "run: sink carbon");
        assert_eq!(report.last_errors[0].age_seconds, 20);
        let text = format_summary(&report);
        assert!(
            text.contains("queue     1 waiting (oldest 60 s), 1 waiting for the RRD flush, 1 failed"),
            "{text}"
        );
        assert!(
            text.contains("run (pid 4000000, stopped) 10 s ago: 12 snapshots processed"),
            "{text}"
        );
        assert!(
            text.contains("20 s ago  run: sink carbon: delivery failed: refused"),
            "{text}"
        );
        assert!(text.contains("order bad (invalid): "), "{text}");
        assert!(text.contains("0 active, 2 failing, 1 invalid"), "{text}");
        assert!(
            text.contains("order long/id (failing): cannot write output (since 1700000030): File name too long"),
            "{text}"
        );
        assert!(
            text.contains(
                "order gone/probe (failing): probe cannot measure (since 1700000040): cannot run /nonexistent: No such file or directory"
            ),
            "{text}"
        );
        let json = serde_json::to_value(&report.orders).unwrap();
        assert_eq!(json["probe_failing"], 1);
        let kinds: Vec<_> = json["problems"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["failure"].clone())
            .collect();
        assert!(
            kinds.contains(&"probe".into()) && kinds.contains(&"output".into()),
            "{json}"
        );
    }
}
