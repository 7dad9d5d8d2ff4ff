//! One pull cycle: every request of every source at once, each on its own thread with its
//! retries, all bounded by `pull-timeout`; then the snapshot is published whole, or nothing is.
//!
//! Replies are kept in memory until every one of them is complete (at most `buffer-limit` bytes
//! each), so a failed cycle never touches the disk, and a successful one writes its directory
//! in one step through [`queue::publish`]. Request threads are not joined: when the cycle ends
//! early (deadline, shutdown) they are told to stop, and do within [`POLL`] or their connect
//! timeout, whichever is longer.

use super::fetch::{fetch, remaining, Command, FetchError, FetchLimits, POLL};
use super::options::PullOptions;
use super::source::{list_sources, parse_servers, FileNameClash, Source};
use super::validate::{check_info, check_stat};
use crate::shared::option::InvalidOption;
use crate::spool::snapshot::SnapshotName;
use crate::spool::{queue, BaseDir};
use crossbeam_channel::RecvTimeoutError;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::io;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tracing::{debug, info, warn};

/// What a published cycle did.
#[derive(Clone, Debug)]
pub struct CycleReport {
    /// The snapshot's name (`<epoch>`) and where it is now.
    pub snapshot: String,
    pub path: PathBuf,
    pub sources: usize,
    /// Bytes of all replies together.
    pub bytes: u64,
    /// Attempts beyond the first, over all requests.
    pub retries: u64,
    /// Wall time from the start of the cycle to the snapshot being durable in `incoming/`.
    pub wall: Duration,
    /// CPU time (user + system) of the cycle's own thread and of its request threads.
    pub cpu: Duration,
}

/// A request that got no complete reply.
#[derive(Debug)]
pub struct RequestFailure {
    /// The source as a URL (`unix:///run/haproxy/admin1.sock`, `tcp://127.0.0.1:5555`).
    pub source: String,
    pub command: Command,
    /// Attempts made (0 when the cycle ended while the first was still running).
    pub attempts: u64,
    pub error: FetchError,
}

impl fmt::Display for RequestFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}: {}", self.source, self.command.name(), self.error)?;
        if self.attempts > 1 {
            write!(f, " (after {} attempts)", self.attempts)?;
        }
        Ok(())
    }
}

/// Why a cycle published nothing.
#[derive(Debug, thiserror::Error)]
pub enum PullError {
    #[error("invalid pull options: {0}")]
    Options(#[from] InvalidOption),
    #[error("no stats socket to pull from: socket-dir holds none and no servers are set")]
    NoSources,
    #[error(transparent)]
    FileNameClash(#[from] FileNameClash),
    #[error("{} of {requests} requests failed, nothing published: {}", .failures.len(), failure_list(.failures))]
    Incomplete {
        requests: usize,
        failures: Vec<RequestFailure>,
    },
    #[error("shutdown: cycle abandoned, nothing published")]
    Cancelled,
    #[error("snapshot {0} exists already (in incoming/ or being built in incoming.tmp/), nothing published")]
    SnapshotExists(String),
    #[error("cannot publish snapshot {name}: {source}")]
    Publish { name: String, source: io::Error },
}

fn failure_list(failures: &[RequestFailure]) -> String {
    failures.iter().map(ToString::to_string).collect::<Vec<_>>().join("; ")
}

/// Pulls every source once and publishes `incoming/<epoch>/` if every reply is complete.
pub fn pull_cycle(base: &BaseDir, options: &PullOptions) -> Result<CycleReport, PullError> {
    pull_cycle_until(base, options, &AtomicBool::new(false))
}

/// [`pull_cycle`] that gives up (publishing nothing) within [`POLL`] of `shutdown` being set.
pub fn pull_cycle_until(
    base: &BaseDir,
    options: &PullOptions,
    shutdown: &AtomicBool,
) -> Result<CycleReport, PullError> {
    let started = Instant::now();
    let epoch = crate::shared::clock::unix_now() as u64;
    let cpu_before = thread_cpu();
    let servers = parse_servers(&options.servers)?;
    let sources = list_sources(options.socket_dir.as_deref(), &servers)?;
    if sources.is_empty() {
        return Err(PullError::NoSources);
    }
    let gathered = gather(&sources, options, started + options.cycle_timeout(), shutdown)?;
    let (snapshot, path) = publish(base, epoch, &sources, &gathered.replies)?;
    let report = CycleReport {
        snapshot,
        path,
        sources: sources.len(),
        bytes: gathered.replies.values().map(|r| r.len() as u64).sum(),
        retries: gathered.retries,
        wall: started.elapsed(),
        cpu: gathered.cpu + thread_cpu().saturating_sub(cpu_before),
    };
    debug!(
        snapshot = %report.snapshot,
        sources = report.sources,
        bytes = report.bytes,
        retries = report.retries,
        wall_ms = report.wall.as_millis() as u64,
        cpu_ms = report.cpu.as_millis() as u64,
        "HAProxy statistics published"
    );
    Ok(report)
}

/// Every reply of a cycle, keyed by (source index, command).
struct Gathered {
    replies: BTreeMap<(usize, Command), Vec<u8>>,
    retries: u64,
    cpu: Duration,
}

/// What a request thread sends back.
struct Outcome {
    key: (usize, Command),
    result: Result<Vec<u8>, FetchError>,
    attempts: u64,
    cpu: Duration,
}

/// How a request is retried.
#[derive(Clone, Copy)]
struct RetryPlan {
    limits: FetchLimits,
    /// `None`: until the deadline.
    attempts: Option<u64>,
    interval: Duration,
}

fn gather(
    sources: &[Source],
    options: &PullOptions,
    deadline: Instant,
    shutdown: &AtomicBool,
) -> Result<Gathered, PullError> {
    let plan = RetryPlan {
        limits: FetchLimits {
            connect_timeout: options.connect_timeout(),
            max_reply: options.buffer_limit,
            deadline,
        },
        attempts: options.attempts(),
        interval: options.retry_interval(),
    };
    let cancel = Arc::new(AtomicBool::new(false));
    let (tx, rx) = crossbeam_channel::unbounded();
    let mut failures = Vec::new();
    let mut pending = BTreeSet::new();
    for (index, source) in sources.iter().enumerate() {
        for command in Command::ALL {
            match spawn_request(source, command, index, plan, &cancel, tx.clone()) {
                Ok(()) => {
                    pending.insert((index, command));
                }
                Err(error) => failures.push(failure(source, command, 0, error)),
            }
        }
    }
    drop(tx);
    let outcomes = receive(&rx, &mut pending, deadline, shutdown);
    // Requests still running past the deadline (or at shutdown) stop now.
    cancel.store(true, Ordering::Relaxed);
    let mut gathered = Gathered {
        replies: BTreeMap::new(),
        retries: 0,
        cpu: Duration::ZERO,
    };
    for outcome in outcomes? {
        gathered.retries += outcome.attempts.saturating_sub(1);
        gathered.cpu += outcome.cpu;
        match outcome.result {
            Ok(reply) => {
                gathered.replies.insert(outcome.key, reply);
            }
            Err(error) => failures.push(failure(&sources[outcome.key.0], outcome.key.1, outcome.attempts, error)),
        }
    }
    for (index, command) in pending {
        let error = FetchError::Unfinished(options.cycle_timeout());
        failures.push(failure(&sources[index], command, 0, error));
    }
    if failures.is_empty() {
        return Ok(gathered);
    }
    for failed in &failures {
        warn!(source = %failed.source, command = failed.command.name(), attempts = failed.attempts, "no complete reply: {}", failed.error);
    }
    Err(PullError::Incomplete {
        requests: sources.len() * Command::ALL.len(),
        failures,
    })
}

fn failure(source: &Source, command: Command, attempts: u64, error: FetchError) -> RequestFailure {
    RequestFailure {
        source: source.to_string(),
        command,
        attempts,
        error,
    }
}

/// Collects outcomes until none is pending, the deadline passes (the rest stay in `pending`)
/// or `shutdown` is set.
fn receive(
    rx: &crossbeam_channel::Receiver<Outcome>,
    pending: &mut BTreeSet<(usize, Command)>,
    deadline: Instant,
    shutdown: &AtomicBool,
) -> Result<Vec<Outcome>, PullError> {
    let mut outcomes = Vec::new();
    while !pending.is_empty() {
        if shutdown.load(Ordering::Relaxed) {
            return Err(PullError::Cancelled);
        }
        let Some(left) = remaining(deadline) else { break };
        match rx.recv_timeout(left.min(POLL)) {
            Ok(outcome) => {
                pending.remove(&outcome.key);
                outcomes.push(outcome);
            }
            Err(RecvTimeoutError::Timeout) => {}
            // Every thread is gone: one died without an answer; it stays pending.
            Err(RecvTimeoutError::Disconnected) => break,
        }
    }
    Ok(outcomes)
}

/// Starts the thread of one request; it sends its [`Outcome`] on `tx`.
fn spawn_request(
    source: &Source,
    command: Command,
    index: usize,
    plan: RetryPlan,
    cancel: &Arc<AtomicBool>,
    tx: crossbeam_channel::Sender<Outcome>,
) -> Result<(), FetchError> {
    let source = source.clone();
    let cancel = Arc::clone(cancel);
    std::thread::Builder::new()
        .name("pull-request".into())
        .stack_size(256 * 1024)
        .spawn(move || {
            let (result, attempts) = request_with_retries(&source, command, &plan, &cancel);
            let _ = tx.send(Outcome {
                key: (index, command),
                result,
                attempts,
                cpu: thread_cpu(),
            });
        })
        .map(drop)
        .map_err(FetchError::Thread)
}

/// Fetches and checks one reply, retrying per `plan`; returns the last result and the
/// number of attempts made.
fn request_with_retries(
    source: &Source,
    command: Command,
    plan: &RetryPlan,
    cancel: &AtomicBool,
) -> (Result<Vec<u8>, FetchError>, u64) {
    let mut attempts = 0;
    loop {
        attempts += 1;
        let result = fetch(&source.address, command, &plan.limits, cancel)
            .and_then(|reply| check_reply(command, &reply).map(|()| reply));
        let error = match result {
            Ok(reply) => return (Ok(reply), attempts),
            Err(error) => error,
        };
        let may_retry = error.is_retryable() && plan.attempts.is_none_or(|max| attempts < max);
        if !may_retry || !pause(plan.interval, plan.limits.deadline, cancel) {
            return (Err(error), attempts);
        }
        info!(source = %source, command = command.name(), attempt = attempts, "retrying after: {error}");
    }
}

fn check_reply(command: Command, reply: &[u8]) -> Result<(), FetchError> {
    match command {
        Command::Info => check_info(reply)?,
        Command::Stat => check_stat(reply)?,
    }
    Ok(())
}

/// Sleeps `interval` in slices of at most [`POLL`]; false if `cancel` is set or the next
/// attempt would start after `deadline`.
fn pause(interval: Duration, deadline: Instant, cancel: &AtomicBool) -> bool {
    let until = Instant::now() + interval;
    if until >= deadline {
        return false;
    }
    while let Some(left) = remaining(until) {
        if cancel.load(Ordering::Relaxed) {
            return false;
        }
        std::thread::sleep(left.min(POLL));
    }
    !cancel.load(Ordering::Relaxed)
}

/// Writes the replies as `incoming/<epoch>/<file name>_info|_stat`, never over anything.
fn publish(
    base: &BaseDir,
    epoch: u64,
    sources: &[Source],
    replies: &BTreeMap<(usize, Command), Vec<u8>>,
) -> Result<(String, PathBuf), PullError> {
    let name = SnapshotName::parse(&epoch.to_string()).expect("a unix time is a snapshot name");
    let files: Vec<(String, &[u8])> = replies
        .iter()
        .map(|((index, command), reply)| {
            let file_name = format!("{}{}", sources[*index].file_name, command.file_suffix());
            (file_name, reply.as_slice())
        })
        .collect();
    let files: Vec<(&str, &[u8])> = files.iter().map(|(file, reply)| (file.as_str(), *reply)).collect();
    let published = ensure_queue_dirs(base).and_then(|()| queue::publish(base, &name, &files));
    match published {
        Ok(path) => Ok((name.to_string(), path)),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            warn!(snapshot = %name, "snapshot name taken, nothing published: {e}");
            Err(PullError::SnapshotExists(name.to_string()))
        }
        Err(source) => Err(PullError::Publish {
            name: name.to_string(),
            source,
        }),
    }
}

/// Creates `incoming/` and `incoming.tmp/` if they are missing (haproxystats-pull recreates a
/// removed `dst-dir` too).
pub fn ensure_queue_dirs(base: &BaseDir) -> io::Result<()> {
    std::fs::create_dir_all(base.incoming_tmp())?;
    std::fs::create_dir_all(base.incoming())
}

/// CPU time (user + system) the calling thread has used so far.
fn thread_cpu() -> Duration {
    use nix::sys::resource::{getrusage, UsageWho};
    let Ok(usage) = getrusage(UsageWho::RUSAGE_THREAD) else {
        return Duration::ZERO;
    };
    let duration = |t: nix::sys::time::TimeVal| {
        Duration::new(t.tv_sec().max(0) as u64, (t.tv_usec().clamp(0, 999_999) * 1000) as u32)
    };
    duration(usage.user_time()) + duration(usage.system_time())
}
