//! The delivery thread of one sink: oldest undelivered lines from its outbox through its
//! transport, acknowledged once the remote took them.
//!
//! One thread per sink, so a slow or dead remote delays only its own outbox. A batch that fails
//! with [`DeliveryError::Transient`] is sent again following the sink's [`RetryPolicy`]; one that
//! is [`DeliveryError::Rejected`] is dropped, logged and counted. The thread sleeps on the
//! outbox's condition variable while there is nothing to send (appends wake it) and stops within
//! [`WAKE_INTERVAL`] of its shutdown flag, except while a `send` is blocked in the transport.

use super::outbox::{Batch, Outbox, Outcome, Reader};
use super::{DeliveryError, RetryPolicy, Transport};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use tracing::{debug, info, warn};

/// Longest time the thread goes without looking at its shutdown flag while idle or backing off.
pub const WAKE_INTERVAL: Duration = Duration::from_millis(200);
/// How much of a rejected batch's first line goes into the log.
const LOGGED_LINE_BYTES: usize = 200;

/// Counters of one delivery thread since it started (for status and self-metrics).
#[derive(Debug, Default)]
pub struct DeliveryStats {
    pub sent_batches: AtomicU64,
    pub sent_lines: AtomicU64,
    pub sent_bytes: AtomicU64,
    /// Sends that failed transiently (each retry counts).
    pub failed_sends: AtomicU64,
    pub rejected_batches: AtomicU64,
    pub rejected_lines: AtomicU64,
    /// Lines taken out of this outbox for other destinations (a forward sink in `mode: hash`
    /// whose destination was down for `handoff-timeout`); they count as sent too.
    pub handed_off_lines: AtomicU64,
    /// Lines sent again after the remote reported them not delivered (a Kafka sink's messages
    /// whose delivery report was a failure): the in-process bound of what may be repeated.
    pub resent_lines: AtomicU64,
    /// The latest failed or rejected send (for `spoolmon status`).
    pub last_error: crate::shared::last_error::LastError,
}

/// The delivery counters of every running outbox, by outbox name. Shared: a lane a forward
/// sink opens at run time (a destination found by discovery) registers here, and the
/// self-metrics read the list as it is at each sample.
#[derive(Clone, Debug, Default)]
pub struct DeliveryRegistry(Arc<std::sync::Mutex<Vec<NamedStats>>>);

/// An outbox's name and its delivery counters.
pub type NamedStats = (String, Arc<DeliveryStats>);

impl DeliveryRegistry {
    pub fn add(&self, name: &str, stats: Arc<DeliveryStats>) {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push((name.to_owned(), stats));
    }

    /// The outboxes registered so far, in the order they started.
    pub fn list(&self) -> Vec<NamedStats> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub fn is_empty(&self) -> bool {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).is_empty()
    }
}

impl From<Vec<NamedStats>> for DeliveryRegistry {
    fn from(list: Vec<NamedStats>) -> DeliveryRegistry {
        DeliveryRegistry(Arc::new(std::sync::Mutex::new(list)))
    }
}

/// The waits between attempts at one batch, as [`RetryPolicy`] defines them.
#[derive(Debug)]
pub struct RetrySchedule<'a> {
    policy: &'a RetryPolicy,
    failures_in_cycle: u32,
}

impl<'a> RetrySchedule<'a> {
    pub fn new(policy: &'a RetryPolicy) -> RetrySchedule<'a> {
        RetrySchedule {
            policy,
            failures_in_cycle: 0,
        }
    }

    /// How long to wait after the latest failed attempt.
    pub fn next_wait(&mut self) -> Duration {
        let policy = self.policy;
        if self.failures_in_cycle >= policy.retries {
            self.failures_in_cycle = 0;
            return policy.delay;
        }
        let factor = policy.backoff.powi(self.failures_in_cycle as i32);
        self.failures_in_cycle += 1;
        Duration::try_from_secs_f64(policy.interval.as_secs_f64() * factor).unwrap_or(policy.delay)
    }
}

/// Everything but the reader: split so a batch borrowed from the reader can be sent.
struct Sender {
    name: String,
    outbox: Arc<Outbox>,
    transport: Box<dyn Transport>,
    retry: RetryPolicy,
    shutdown: Arc<AtomicBool>,
    stats: Arc<DeliveryStats>,
}

/// A sink's delivery loop; [`Delivery::spawn`] runs it on its own thread.
pub struct Delivery {
    reader: Reader,
    sender: Sender,
}

impl Delivery {
    /// Delivery of `outbox` (sink `name`) through `transport` until `shutdown` is set.
    pub fn new(
        name: &str,
        outbox: &Arc<Outbox>,
        transport: Box<dyn Transport>,
        retry: RetryPolicy,
        shutdown: Arc<AtomicBool>,
    ) -> Delivery {
        Delivery {
            reader: outbox.reader(),
            sender: Sender {
                name: name.to_owned(),
                outbox: Arc::clone(outbox),
                transport,
                retry,
                shutdown,
                stats: Arc::default(),
            },
        }
    }

    /// Counts into `stats` (shared with the transport) instead of counters of its own.
    pub fn with_stats(mut self, stats: Arc<DeliveryStats>) -> Delivery {
        self.sender.stats = stats;
        self
    }

    pub fn stats(&self) -> Arc<DeliveryStats> {
        Arc::clone(&self.sender.stats)
    }

    /// Runs [`Delivery::run`] on a thread named `deliver-<sink>`.
    pub fn spawn(self) -> std::io::Result<JoinHandle<()>> {
        std::thread::Builder::new()
            .name(format!("deliver-{}", self.sender.name))
            .spawn(move || self.run())
    }

    /// Delivers until the shutdown flag is set.
    pub fn run(mut self) {
        let sender = &mut self.sender;
        info!(sink = sender.name, to = sender.transport.describe(), "delivery started");
        let max_payload = sender.transport.max_payload();
        while !sender.stopping() {
            let seen = sender.outbox.appends();
            match self.reader.next_batch(max_payload) {
                Ok(Some(batch)) => sender.deliver(batch),
                Ok(None) => {
                    sender.outbox.wait_for_append(seen, WAKE_INTERVAL);
                }
                Err(e) => {
                    warn!(sink = sender.name, "cannot read the outbox: {e}");
                    sender.pause(sender.retry.delay);
                }
            }
        }
        // A failure is logged by the outbox; at worst the last batches are sent again.
        let _ = sender.outbox.write_unwritten_ack();
        info!(sink = sender.name, "delivery stopped");
    }
}

impl Sender {
    fn stopping(&self) -> bool {
        self.shutdown.load(Ordering::Relaxed)
    }

    /// Sends `batch` until it is taken, rejected, dropped from the outbox meanwhile, or shutdown.
    fn deliver(&mut self, batch: &Batch) {
        let mut schedule = RetrySchedule::new(&self.retry);
        let mut failures = 0u64;
        loop {
            match self.transport.send(batch.payload()) {
                Ok(()) => return self.delivered(batch, failures),
                Err(DeliveryError::Rejected(why)) => return self.rejected(batch, &why),
                Err(DeliveryError::Transient(why)) => {
                    failures += 1;
                    self.stats.failed_sends.fetch_add(1, Ordering::Relaxed);
                    self.stats.last_error.set(format!("delivery failed: {why}"));
                    let wait = schedule.next_wait();
                    if failures == 1 {
                        warn!(sink = self.name, to = self.transport.describe(), retry_in = ?wait, "delivery failed: {why}");
                    } else {
                        debug!(sink = self.name, failures, retry_in = ?wait, "delivery failed again: {why}");
                    }
                    let waited = self.pause(wait);
                    if !waited || !self.outbox.is_pending(batch) {
                        return;
                    }
                }
            }
        }
    }

    fn delivered(&self, batch: &Batch, failures: u64) {
        let stats = &self.stats;
        stats.sent_batches.fetch_add(1, Ordering::Relaxed);
        stats.sent_lines.fetch_add(batch.lines(), Ordering::Relaxed);
        stats
            .sent_bytes
            .fetch_add(batch.payload().len() as u64, Ordering::Relaxed);
        if failures > 0 {
            info!(sink = self.name, failures, "delivery works again");
        }
        stats.last_error.succeeded();
        // A failed acknowledgement is logged by the outbox; at worst the batch is sent again
        // after a restart (as are up to `ack_bytes` delivered before it, see `OutboxLimits`).
        let _ = self.outbox.acknowledge(batch, Outcome::Delivered);
    }

    fn rejected(&self, batch: &Batch, why: &str) {
        let first_line = batch.first_line();
        let shown = String::from_utf8_lossy(&first_line[..first_line.len().min(LOGGED_LINE_BYTES)]);
        warn!(
            sink = self.name,
            lines = batch.lines(),
            first_line = %shown,
            "the remote rejected a batch; it is dropped: {why}"
        );
        self.stats.rejected_batches.fetch_add(1, Ordering::Relaxed);
        self.stats.last_error.set(format!("the remote rejected a batch: {why}"));
        self.stats.rejected_lines.fetch_add(batch.lines(), Ordering::Relaxed);
        let _ = self.outbox.acknowledge(batch, Outcome::Rejected);
    }

    /// Sleeps `wait` unless shutdown comes first; false on shutdown.
    fn pause(&self, wait: Duration) -> bool {
        let deadline = Instant::now() + wait;
        loop {
            if self.stopping() {
                return false;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return true;
            }
            std::thread::sleep(left.min(WAKE_INTERVAL));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sink::outbox::{status, OutboxLimits};
    use std::sync::mpsc;

    /// Answers each send by the first rule whose marker the payload contains; records what it
    /// took and reports it on a channel.
    struct ScriptedTransport {
        transient_left: u32,
        taken: mpsc::Sender<Vec<u8>>,
    }

    impl Transport for ScriptedTransport {
        fn send(&mut self, payload: &[u8]) -> Result<(), DeliveryError> {
            let text = String::from_utf8_lossy(payload);
            if text.contains("bad") {
                return Err(DeliveryError::Rejected("HTTP 400: unparsable line".into()));
            }
            if text.contains("flaky") && self.transient_left > 0 {
                self.transient_left -= 1;
                return Err(DeliveryError::Transient("connection refused".into()));
            }
            let _ = self.taken.send(payload.to_vec());
            Ok(())
        }
        fn max_payload(&self) -> usize {
            16
        }
        fn describe(&self) -> String {
            "script".into()
        }
    }

    fn fast_retry() -> RetryPolicy {
        RetryPolicy {
            retries: 1,
            interval: Duration::from_millis(1),
            backoff: 2.0,
            delay: Duration::from_millis(5),
        }
    }

    /// Joins `handle`, failing the test instead of hanging if the thread does not stop.
    fn join_bounded(handle: JoinHandle<()>) {
        let (done, finished) = mpsc::channel();
        std::thread::spawn(move || done.send(handle.join().is_ok()));
        assert_eq!(
            finished.recv_timeout(Duration::from_secs(20)),
            Ok(true),
            "delivery thread stopped"
        );
    }

    #[test]
    fn rejected_batch_is_dropped_and_counted_transient_one_is_retried_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let outbox = Arc::new(Outbox::open(dir.path(), OutboxLimits::default()).unwrap());
        for line in ["good 1 1\n", "bad x 2\n", "flaky 3 3\n", "good 4 4\n"] {
            outbox.append(line.as_bytes(), 1).unwrap();
        }
        let (taken, received) = mpsc::channel();
        let transport = ScriptedTransport {
            transient_left: 3,
            taken,
        };
        let shutdown = Arc::new(AtomicBool::new(false));
        let delivery = Delivery::new(
            "test",
            &outbox,
            Box::new(transport),
            fast_retry(),
            Arc::clone(&shutdown),
        );
        let stats = delivery.stats();
        let handle = delivery.spawn().unwrap();
        let sent: Vec<Vec<u8>> = (0..3)
            .map(|_| received.recv_timeout(Duration::from_secs(20)).expect("a delivery"))
            .collect();
        shutdown.store(true, Ordering::Relaxed);
        outbox.wake_all();
        join_bounded(handle);
        assert_eq!(sent, [&b"good 1 1\n"[..], b"flaky 3 3\n", b"good 4 4\n"]);
        assert_eq!(stats.failed_sends.load(Ordering::Relaxed), 3);
        assert_eq!(stats.rejected_batches.load(Ordering::Relaxed), 1);
        let status = status(dir.path()).unwrap();
        assert_eq!((status.rejected_lines, status.delivered_lines, status.lines), (1, 3, 0));
    }

    /// A delivery thread whose transport fails every `flaky` line for good, waiting an hour
    /// between attempts; returns once the first attempt failed, with what the remote took
    /// before it (`taken` lines expected), the thread and its shutdown flag.
    fn stuck_at_the_first_flaky_line(
        outbox: &Arc<Outbox>,
        taken: usize,
    ) -> (Vec<Vec<u8>>, JoinHandle<()>, Arc<AtomicBool>) {
        let (sender, received) = mpsc::channel();
        let transport = ScriptedTransport {
            transient_left: u32::MAX,
            taken: sender,
        };
        let hour = RetryPolicy {
            interval: Duration::from_secs(3600),
            delay: Duration::from_secs(3600),
            ..RetryPolicy::default()
        };
        let shutdown = Arc::new(AtomicBool::new(false));
        let delivery = Delivery::new("test", outbox, Box::new(transport), hour, Arc::clone(&shutdown));
        let stats = delivery.stats();
        let handle = delivery.spawn().unwrap();
        let sent = (0..taken)
            .map(|_| received.recv_timeout(Duration::from_secs(20)).expect("a delivery"))
            .collect();
        for _ in 0..2000 {
            if stats.failed_sends.load(Ordering::Relaxed) > 0 {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        assert_eq!(stats.failed_sends.load(Ordering::Relaxed), 1, "stuck at the flaky line");
        (sent, handle, shutdown)
    }

    #[test]
    fn shutdown_interrupts_a_backoff_wait() {
        let dir = tempfile::tempdir().unwrap();
        let outbox = Arc::new(Outbox::open(dir.path(), OutboxLimits::default()).unwrap());
        outbox.append(b"flaky 1 1\n", 1).unwrap();
        let (_, handle, shutdown) = stuck_at_the_first_flaky_line(&outbox, 0);
        shutdown.store(true, Ordering::Relaxed);
        join_bounded(handle);
        assert_eq!(status(dir.path()).unwrap().lines, 1, "the batch stays queued");
    }

    #[test]
    fn a_stop_behind_the_outbox_writes_the_acknowledgements_not_written_yet() {
        let dir = tempfile::tempdir().unwrap();
        let limits = OutboxLimits {
            ack_bytes: 1 << 20,
            ..OutboxLimits::default()
        };
        let outbox = Arc::new(Outbox::open(dir.path(), limits).unwrap());
        for line in ["good 1 1\n", "good 2 2\n", "flaky 3 3\n"] {
            outbox.append(line.as_bytes(), 1).unwrap();
        }
        let (sent, handle, shutdown) = stuck_at_the_first_flaky_line(&outbox, 2);
        assert_eq!(sent, [&b"good 1 1\n"[..], b"good 2 2\n"]);
        // Two lines taken, 18 bytes of 1 MiB, more waiting: the file was not written yet.
        assert_eq!(status(dir.path()).unwrap().lines, 3);
        shutdown.store(true, Ordering::Relaxed);
        join_bounded(handle);
        let stopped = status(dir.path()).unwrap();
        assert_eq!((stopped.lines, stopped.delivered_lines), (1, 2), "written at the stop");
    }

    #[test]
    fn retry_waits_grow_by_backoff_then_pause_for_delay_and_start_over() {
        let policy = RetryPolicy::default();
        let mut schedule = RetrySchedule::new(&policy);
        let waits: Vec<u64> = (0..9).map(|_| schedule.next_wait().as_millis() as u64).collect();
        assert_eq!(waits, [1800, 3600, 7200, 10_000, 1800, 3600, 7200, 10_000, 1800]);
    }

    #[test]
    fn no_retries_means_every_failure_waits_the_delay() {
        let policy = RetryPolicy {
            retries: 0,
            ..RetryPolicy::default()
        };
        let mut schedule = RetrySchedule::new(&policy);
        assert_eq!(schedule.next_wait(), policy.delay);
        assert_eq!(schedule.next_wait(), policy.delay);
    }
}
