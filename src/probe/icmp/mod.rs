//! The native ICMP engine: echo requests to thousands of targets from one process, shared by
//! all concurrent batch runs.
//!
//! Owns nothing on disk; it owns the engine's ICMP sockets (one IPv4 and one IPv6 by default,
//! plus one per (family, source address, interface) combination that orders ask for), one
//! receiver thread per socket, the engine-wide in-flight table and the send pacer.
//!
//! Invariants:
//! - Sends of all runs together never exceed `icmp.send-rate` per second (token bucket).
//! - A reply counts only for the ping it answers: matched by key (identifier + sequence for raw
//!   sockets, sequence for datagram sockets) AND by the engine's random token in the payload, so
//!   our own looped-back requests, other programs' pings and stale replies are ignored.
//! - [`Probe::run`] returns by `plan.deadline` with `plan.pings` entries per target; no reply
//!   within `plan.timeout`, the deadline, or a send that failed while others to the same target
//!   went out mean `None` (lost). A target the engine cannot ping at all in a run is a failure
//!   with the reason instead (not measured): no socket for its family (the default socket failed
//!   at start-up: `EPERM` without `CAP_NET_RAW` outside `ping_group_range`, IPv6 disabled), the
//!   order's source address or interface cannot be bound, the source is of the other family, or
//!   the kernel refused every echo request (`ENETUNREACH`: no route). Host names are resolved when
//!   the order is read (an order whose name does not resolve is `unresolved`, never probed).
//! - RTTs are measured with the monotonic clock from the send of the request to the kernel's
//!   receive timestamp of the reply (`SO_TIMESTAMPNS`, related to the monotonic clock per batch
//!   read; the read time where the kernel gives none), with 100 ns resolution. A request sent as
//!   request `i` of `n` in one `sendmmsg` is timed at `i/n` of that call's duration.
//! - The kernel delivers to a receiver only echo replies with this engine's token (and, on raw
//!   sockets, its identifier): a classic BPF filter on every socket. What passes and still does
//!   not match is counted ([`IcmpEngine::unmatched_packets`]).
//!
//! Syscalls per ping: one `sendmmsg` per paced chunk (5 ms of the send rate, at most 256
//! requests) and one `recvmmsg` per batch of replies that arrived together (up to 64); issue 12
//! in BENCHMARKS.md has the floor program (`benches/floor_icmp.rs`) and the before/after figures.

mod inflight;
mod options;
mod packet;
mod run;
mod socket;

pub use options::{Engine, IcmpOptions};
pub use packet::Family;
pub use socket::SocketKind;

use crate::orders::order::ProbeSpec;
use crate::probe::{Outcome, Probe, ProbeFailure, RunPlan};
use inflight::{InflightTable, Pacer};
use run::{EngineParts, RunTarget};
use socket::{Endpoint, EndpointKey, ReceiverContext};
use std::collections::hash_map::RandomState;
use std::collections::HashMap;
use std::hash::BuildHasher;
use std::io;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};
use tracing::{debug, info, warn};

/// The engine could not start.
#[derive(Debug, thiserror::Error)]
pub enum IcmpError {
    #[error("cannot open any ICMP socket (neither raw nor ping socket): IPv4: {ipv4}; IPv6: {ipv6}")]
    NoSocket { ipv4: io::Error, ipv6: io::Error },
}

/// The native ICMP engine. See the module documentation.
pub struct IcmpEngine {
    context: Arc<ReceiverContext>,
    pacer: Pacer,
    receive_buffer: usize,
    raw_allowed: bool,
    endpoints: Mutex<HashMap<EndpointKey, Arc<Endpoint>>>,
    ipv4_kind: Option<SocketKind>,
    ipv6_kind: Option<SocketKind>,
    /// Why the default IPv4 / IPv6 socket could not be opened, if it could not.
    missing: [Option<String>; 2],
    /// Whether the missing default IPv4 / IPv6 socket was already reported.
    missing_warned: [AtomicBool; 2],
}

impl IcmpEngine {
    /// Opens the default IPv4 and IPv6 sockets and starts their receivers. Fails only when
    /// neither family gets a socket; then the caller falls back to fping.
    pub fn open(options: &IcmpOptions) -> Result<IcmpEngine, IcmpError> {
        IcmpEngine::open_with(options, true)
    }

    /// [`IcmpEngine::open`], optionally skipping raw sockets (to test the ping-socket path as
    /// root).
    fn open_with(options: &IcmpOptions, raw_allowed: bool) -> Result<IcmpEngine, IcmpError> {
        IcmpEngine::open_filtered(options, raw_allowed, true)
    }

    /// [`IcmpEngine::open_with`], optionally without the kernel's BPF reply filter (to prove in a
    /// test that the filter is what keeps other replies away).
    fn open_filtered(options: &IcmpOptions, raw_allowed: bool, kernel_filter: bool) -> Result<IcmpEngine, IcmpError> {
        let timeout = Duration::from_millis(options.timeout_ms);
        let context = Arc::new(ReceiverContext {
            table: InflightTable::new(options.send_rate, timeout),
            token: engine_token(),
            stop: AtomicBool::new(false),
            unmatched: AtomicU64::new(0),
            kernel_filter,
        });
        let open_default = |family| {
            let key = EndpointKey {
                family,
                source: None,
                interface: None,
            };
            Endpoint::open(&key, options.receive_buffer, raw_allowed, Arc::clone(&context))
                .map(|endpoint| (key, endpoint))
        };
        let (ipv4, ipv6) = match (open_default(Family::V4), open_default(Family::V6)) {
            (Err(ipv4), Err(ipv6)) => return Err(IcmpError::NoSocket { ipv4, ipv6 }),
            pair => pair,
        };
        let mut endpoints = HashMap::new();
        let missing = [
            ipv4.as_ref().err().map(ToString::to_string),
            ipv6.as_ref().err().map(ToString::to_string),
        ];
        let ipv4_kind = register_default(&mut endpoints, ipv4);
        let ipv6_kind = register_default(&mut endpoints, ipv6);
        let engine = IcmpEngine {
            context,
            pacer: Pacer::new(options.send_rate),
            receive_buffer: options.receive_buffer,
            raw_allowed,
            endpoints: Mutex::new(endpoints),
            ipv4_kind,
            ipv6_kind,
            missing,
            missing_warned: [AtomicBool::new(false), AtomicBool::new(false)],
        };
        info!(
            "native ICMP engine: IPv4 {:?}, IPv6 {:?} sockets",
            engine.ipv4_kind, engine.ipv6_kind
        );
        Ok(engine)
    }

    /// Packets the receivers read that answered none of this engine's requests (with the kernel
    /// filter in place: none, unless a stale reply of our own outlived its slot).
    pub fn unmatched_packets(&self) -> u64 {
        self.context.unmatched.load(Ordering::Relaxed)
    }

    /// The kind of the default IPv4 socket (`None`: IPv4 targets are lost).
    pub fn ipv4_kind(&self) -> Option<SocketKind> {
        self.ipv4_kind
    }

    /// The kind of the default IPv6 socket (`None`: IPv6 targets are lost).
    pub fn ipv6_kind(&self) -> Option<SocketKind> {
        self.ipv6_kind
    }

    /// The socket for `key`, opened (and cached) on first use, or why there is none. A socket
    /// that cannot be opened is tried again in the next run (the address or device may appear).
    fn endpoint(&self, key: &EndpointKey) -> Result<Arc<Endpoint>, ProbeFailure> {
        let mut endpoints = self.endpoints.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(endpoint) = endpoints.get(key) {
            return Ok(Arc::clone(endpoint));
        }
        if key.source.is_none() && key.interface.is_none() {
            // The default socket of this family failed at start-up.
            let index = match key.family {
                Family::V4 => 0,
                Family::V6 => 1,
            };
            let why = self.missing[index].as_deref().unwrap_or("not opened");
            if !self.missing_warned[index].swap(true, Ordering::Relaxed) {
                warn!(
                    "native ICMP engine has no {:?} socket ({why}): those targets are not measured",
                    key.family
                );
            }
            return Err(ProbeFailure::new(format!(
                "the native ICMP engine has no {:?} socket: {why}",
                key.family
            )));
        }
        match Endpoint::open(key, self.receive_buffer, self.raw_allowed, Arc::clone(&self.context)) {
            Ok(endpoint) => {
                let endpoint = Arc::new(endpoint);
                endpoints.insert(key.clone(), Arc::clone(&endpoint));
                Ok(endpoint)
            }
            Err(e) => {
                let failure = ProbeFailure::new(format!(
                    "cannot open an ICMP {:?} socket{}{}: {e}",
                    key.family,
                    key.source.map(|s| format!(" from {s}")).unwrap_or_default(),
                    key.interface.as_ref().map(|i| format!(" on {i}")).unwrap_or_default(),
                ));
                debug!("{failure}; those targets are not measured");
                Err(failure)
            }
        }
    }

    /// Resolves each spec to its address and socket.
    fn run_targets(&self, targets: &[&ProbeSpec]) -> Vec<RunTarget> {
        let first = targets.iter().find_map(|spec| match spec {
            ProbeSpec::Fping(fping) => Some(fping),
            _ => None,
        });
        let source = first.and_then(|spec| spec.source_ip);
        let interface = first.and_then(|spec| spec.interface.clone());
        let mut by_family: HashMap<Family, Result<Arc<Endpoint>, ProbeFailure>> = HashMap::new();
        targets
            .iter()
            .map(|spec| match spec {
                ProbeSpec::Fping(fping) => {
                    let family = family_of(fping.address);
                    let endpoint = by_family
                        .entry(family)
                        .or_insert_with(|| self.endpoint_for(family, source, interface.clone()))
                        .clone();
                    RunTarget {
                        address: fping.address,
                        endpoint,
                    }
                }
                other => RunTarget {
                    address: IpAddr::from([0, 0, 0, 0]),
                    endpoint: Err(ProbeFailure::new(format!(
                        "the native ICMP engine got a non-ICMP order ({other:?})"
                    ))),
                },
            })
            .collect()
    }

    fn endpoint_for(
        &self,
        family: Family,
        source: Option<IpAddr>,
        interface: Option<String>,
    ) -> Result<Arc<Endpoint>, ProbeFailure> {
        if let Some(source) = source.filter(|source| family_of(*source) != family) {
            return Err(ProbeFailure::new(format!(
                "the ICMP source address {source} cannot reach {family:?} targets"
            )));
        }
        self.endpoint(&EndpointKey {
            family,
            source,
            interface,
        })
    }
}

impl Probe for IcmpEngine {
    fn run(&self, targets: &[&ProbeSpec], plan: &RunPlan) -> Vec<Outcome> {
        let run_targets = self.run_targets(targets);
        let parts = EngineParts {
            table: &self.context.table,
            pacer: &self.pacer,
            token: self.context.token,
        };
        run::run_rounds(&parts, &run_targets, plan)
    }
}

impl Drop for IcmpEngine {
    fn drop(&mut self) {
        self.context.stop.store(true, Ordering::Relaxed);
        let endpoints = std::mem::take(self.endpoints.get_mut().unwrap_or_else(PoisonError::into_inner));
        for (_, endpoint) in endpoints {
            if let Ok(mut endpoint) = Arc::try_unwrap(endpoint) {
                endpoint.join();
            }
        }
    }
}

/// Keeps a default socket that opened; logs the family that did not.
fn register_default(
    endpoints: &mut HashMap<EndpointKey, Arc<Endpoint>>,
    opened: io::Result<(EndpointKey, Endpoint)>,
) -> Option<SocketKind> {
    match opened {
        Ok((key, endpoint)) => {
            let kind = endpoint.kind;
            endpoints.insert(key, Arc::new(endpoint));
            Some(kind)
        }
        Err(e) => {
            warn!("native ICMP engine: an address family is unavailable: {e}");
            None
        }
    }
}

fn family_of(address: IpAddr) -> Family {
    match address {
        IpAddr::V4(_) => Family::V4,
        IpAddr::V6(_) => Family::V6,
    }
}

/// A random 64-bit token (std's hasher keys come from the OS random source), mixed with the
/// process id and time so two engines in one process differ too.
fn engine_token() -> u64 {
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_nanos());
    RandomState::new().hash_one((std::process::id(), now))
}

#[cfg(test)]
mod tests {
    //! Real ICMP on loopback only (127.0.0.0/8 and ::1); loss is produced inside a private
    //! network namespace whose kernel ignores echo requests, never by sending off the box.
    use super::*;
    use crate::orders::order::FpingSpec;
    use crate::probe::Rtts;
    use std::net::{Ipv4Addr, Ipv6Addr};
    use std::process::Command;
    use std::time::Instant;

    fn spec(address: IpAddr) -> ProbeSpec {
        ProbeSpec::fping_to(address)
    }

    fn bound_spec(address: IpAddr, source: Option<IpAddr>, interface: &str) -> ProbeSpec {
        ProbeSpec::Fping(FpingSpec {
            host: address.to_string(),
            address,
            source_ip: source,
            interface: Some(interface.to_owned()),
            interval_ms: None,
        })
    }

    /// `pings` rounds `interval` apart, 2 s timeout, deadline generous unless given.
    fn plan(pings: u32, interval: Duration, deadline_after: Duration) -> RunPlan {
        let start = Instant::now();
        RunPlan {
            pings,
            interval,
            timeout: Duration::from_secs(2),
            start,
            deadline: start + deadline_after,
        }
    }

    fn engine() -> IcmpEngine {
        let engine = IcmpEngine::open(&IcmpOptions::default()).expect("ICMP engine opens as root");
        assert_eq!(engine.ipv4_kind(), Some(SocketKind::Raw));
        assert_eq!(engine.ipv6_kind(), Some(SocketKind::Raw));
        engine
    }

    fn outcomes(engine: &IcmpEngine, specs: &[ProbeSpec], plan: &RunPlan) -> Vec<Outcome> {
        let refs: Vec<&ProbeSpec> = specs.iter().collect();
        let results = engine.run(&refs, plan);
        assert_eq!(results.len(), specs.len());
        for rtts in results.iter().flatten() {
            assert_eq!(rtts.len(), plan.pings as usize);
        }
        results
    }

    /// The RTTs of each spec; panics on one that was not measured.
    fn run(engine: &IcmpEngine, specs: &[ProbeSpec], plan: &RunPlan) -> Vec<Rtts> {
        outcomes(engine, specs, plan)
            .into_iter()
            .map(|outcome| outcome.unwrap_or_else(|failure| panic!("not measured: {failure}")))
            .collect()
    }

    fn assert_all_answered(results: &[Rtts], specs: &[ProbeSpec], timeout: Duration) {
        for (rtts, spec) in results.iter().zip(specs) {
            for rtt in rtts {
                let rtt = rtt.unwrap_or_else(|| panic!("{spec:?} lost a ping: {rtts:?}"));
                assert!(rtt > 0.0 && rtt < timeout.as_secs_f64(), "{rtt}");
            }
        }
    }

    fn lost_count(results: &[Rtts]) -> usize {
        results.iter().flatten().filter(|rtt| rtt.is_none()).count()
    }

    #[test]
    fn loopback_ipv4_spread_and_ipv6_answer_every_ping() {
        let engine = engine();
        let mut addresses: Vec<IpAddr> = vec![Ipv4Addr::LOCALHOST.into()];
        addresses.extend((0..20u8).map(|i| IpAddr::from([127, i * 12, 255 - i, i + 1])));
        addresses.push(Ipv6Addr::LOCALHOST.into());
        let specs: Vec<ProbeSpec> = addresses.into_iter().map(spec).collect();
        let plan = plan(3, Duration::from_millis(50), Duration::from_secs(10));
        let results = run(&engine, &specs, &plan);
        assert_all_answered(&results, &specs, plan.timeout);
        assert!(Instant::now() < plan.deadline, "answered run waits for the deadline");
    }

    /// Three engines on the same loopback: the replies of one reach the raw sockets of all, and
    /// the kernel filter keeps them from the other filtered engine, while the unfiltered one
    /// reads and rejects them. Counted, not slept on: raw sockets queue replies in arrival order,
    /// so once an engine has its own later replies it has read every earlier foreign one.
    #[test]
    fn the_kernel_filter_passes_only_our_own_replies() {
        let filtered = engine();
        let other = engine();
        let unfiltered = IcmpEngine::open_filtered(&IcmpOptions::default(), true, false).expect("engine");
        let specs: Vec<ProbeSpec> = (1..=50u8).map(|host| spec(IpAddr::from([127, 4, 0, host]))).collect();
        let plan = || plan(2, Duration::from_millis(20), Duration::from_secs(10));
        for engine in [&other, &filtered, &unfiltered] {
            let results = run(engine, &specs, &plan());
            assert_all_answered(&results, &specs, Duration::from_secs(2));
        }
        assert_eq!(filtered.unmatched_packets(), 0);
        // The 100 replies of `other` and of `filtered` came before `unfiltered`'s own (other
        // programs' pings on this machine may add more).
        assert!(
            unfiltered.unmatched_packets() >= 200,
            "{}",
            unfiltered.unmatched_packets()
        );
    }

    /// Runs `test` on a thread in a new network namespace whose loopback is up and whose ping
    /// sockets are open to gid 0, with an engine that uses ping sockets only.
    fn in_a_namespace_with_ping_sockets(test: impl FnOnce(IcmpEngine) + Send + 'static) {
        std::thread::spawn(|| {
            // SAFETY: unshare only changes this thread's namespace membership.
            let rc = unsafe { libc::unshare(libc::CLONE_NEWNET) };
            assert_eq!(rc, 0, "unshare: {}", io::Error::last_os_error());
            let status = Command::new("sh")
                .arg("-c")
                .arg("ip link set lo up && echo '0 0' > /proc/sys/net/ipv4/ping_group_range")
                .status()
                .expect("sh runs");
            assert!(status.success());
            let engine = IcmpEngine::open_with(&IcmpOptions::default(), false).expect("ping sockets allowed for gid 0");
            assert_eq!(engine.ipv4_kind(), Some(SocketKind::Datagram));
            test(engine);
        })
        .join()
        .expect("namespace thread");
    }

    #[test]
    fn ping_sockets_with_the_filter_answer_batches_of_many_targets() {
        in_a_namespace_with_ping_sockets(|engine| {
            let mut specs: Vec<ProbeSpec> = (0..600u32)
                .map(|i| spec(IpAddr::from([127, 6, (i / 250) as u8, (i % 250 + 1) as u8])))
                .collect();
            specs.push(spec(Ipv6Addr::LOCALHOST.into()));
            let plan = plan(2, Duration::from_millis(50), Duration::from_secs(20));
            let results = run(&engine, &specs, &plan);
            assert_all_answered(&results, &specs, plan.timeout);
            assert_eq!(engine.unmatched_packets(), 0);
        });
    }

    #[test]
    fn rounds_after_the_deadline_are_lost_and_the_run_ends_at_the_deadline() {
        let engine = engine();
        let specs = vec![spec(Ipv4Addr::LOCALHOST.into())];
        // Rounds every second for a minute; the deadline at 1.5 s allows only the first two
        // (each has at least 500 ms to be answered by loopback).
        let plan = plan(60, Duration::from_secs(1), Duration::from_millis(1500));
        let results = run(&engine, &specs, &plan);
        let returned = Instant::now();
        assert!(results[0][0].is_some() && results[0][1].is_some(), "{results:?}");
        // Loopback answers every ping it gets: the later rounds were not pinged.
        assert_eq!(results[0][2..], [None; 58]);
        assert!(returned >= plan.start + plan.interval);
        // The deadline guarantee itself: the run ends by it. Not a timing threshold: 10 s of
        // slack is far more than a loaded machine needs to stop, and far less than the 58 s of
        // rounds a run ignoring its deadline would still send.
        assert!(
            returned < plan.deadline + Duration::from_secs(10),
            "the run went on for {:?} after the deadline",
            returned - plan.deadline
        );
    }

    #[test]
    fn duplicate_host_in_one_batch_gets_its_own_answers_each_time() {
        let engine = engine();
        let specs: Vec<ProbeSpec> = (0..3).map(|_| spec(Ipv4Addr::LOCALHOST.into())).collect();
        let plan = plan(2, Duration::from_millis(20), Duration::from_secs(10));
        let results = run(&engine, &specs, &plan);
        assert_all_answered(&results, &specs, plan.timeout);
    }

    #[test]
    fn concurrent_runs_on_one_engine_are_all_answered() {
        let engine = engine();
        std::thread::scope(|scope| {
            let runs: Vec<_> = (0..4u8)
                .map(|thread| {
                    let engine = &engine;
                    scope.spawn(move || {
                        let mut specs: Vec<ProbeSpec> = (1..=100u8)
                            .map(|host| spec(IpAddr::from([127, 2, thread, host])))
                            .collect();
                        specs.push(spec(Ipv4Addr::LOCALHOST.into()));
                        let plan = plan(3, Duration::from_millis(30), Duration::from_secs(10));
                        let results = run(engine, &specs, &plan);
                        assert_all_answered(&results, &specs, plan.timeout);
                    })
                })
                .collect();
            for handle in runs {
                handle.join().expect("run thread");
            }
        });
    }

    #[test]
    fn two_thousand_targets_are_paced_without_loss() {
        let engine = engine();
        let specs: Vec<ProbeSpec> = (0..2000u32)
            .map(|i| spec(IpAddr::from([127, 1, (i / 250) as u8, (i % 250 + 1) as u8])))
            .collect();
        let plan = plan(2, Duration::from_millis(200), Duration::from_secs(20));
        let results = run(&engine, &specs, &plan);
        assert_eq!(lost_count(&results), 0);
    }

    #[test]
    fn socket_bound_to_lo_and_a_loopback_source_is_answered() {
        let engine = engine();
        let source = Some(IpAddr::from([127, 0, 0, 1]));
        let specs = vec![
            bound_spec(IpAddr::from([127, 0, 0, 1]), source, "lo"),
            bound_spec(IpAddr::from([127, 3, 0, 9]), source, "lo"),
        ];
        let plan = plan(2, Duration::from_millis(20), Duration::from_secs(10));
        let results = run(&engine, &specs, &plan);
        assert_all_answered(&results, &specs, plan.timeout);
    }

    #[test]
    fn an_unknown_interface_a_foreign_source_or_a_mismatched_family_is_not_measured() {
        let engine = engine();
        let plan = plan(2, Duration::from_millis(20), Duration::from_secs(2));
        let failure = |spec: ProbeSpec| {
            let outcome = outcomes(&engine, &[spec], &plan).remove(0);
            outcome.expect_err("not measured").reason().to_owned()
        };
        let reason = failure(bound_spec(Ipv4Addr::LOCALHOST.into(), None, "nosuchdev0"));
        assert!(
            reason.starts_with("cannot open an ICMP V4 socket on nosuchdev0: binding to device nosuchdev0: "),
            "{reason}"
        );
        let reason = failure(bound_spec(
            Ipv4Addr::LOCALHOST.into(),
            Some(Ipv6Addr::LOCALHOST.into()),
            "lo",
        ));
        assert_eq!(reason, "the ICMP source address ::1 cannot reach V4 targets");
        // 203.0.113.9 (TEST-NET-3) is no address of this machine.
        let foreign = ProbeSpec::Fping(FpingSpec {
            host: "127.0.0.1".into(),
            address: Ipv4Addr::LOCALHOST.into(),
            source_ip: Some([203, 0, 113, 9].into()),
            interface: None,
            interval_ms: None,
        });
        let reason = failure(foreign);
        assert!(
            reason.starts_with("cannot open an ICMP V4 socket from 203.0.113.9: binding to 203.0.113.9: Cannot assign requested address"),
            "{reason}"
        );
    }

    #[test]
    fn a_target_without_a_route_is_not_measured_and_its_neighbours_are() {
        std::thread::spawn(|| {
            // A fresh namespace: loopback up, no other route, so sendto to 10.1.1.1 fails with
            // ENETUNREACH at once. Nothing leaves the namespace.
            // SAFETY: unshare only changes this thread's namespace membership.
            let rc = unsafe { libc::unshare(libc::CLONE_NEWNET) };
            assert_eq!(rc, 0, "unshare: {}", io::Error::last_os_error());
            let status = Command::new("ip")
                .args(["link", "set", "lo", "up"])
                .status()
                .expect("ip");
            assert!(status.success());
            let engine = engine();
            let specs = vec![spec(Ipv4Addr::LOCALHOST.into()), spec([10, 1, 1, 1].into())];
            let plan = plan(2, Duration::from_millis(20), Duration::from_secs(5));
            let results = outcomes(&engine, &specs, &plan);
            assert!(
                results[0].as_ref().is_ok_and(|rtts| rtts.iter().all(Option::is_some)),
                "{results:?}"
            );
            let failure = results[1].as_ref().expect_err("no route");
            assert_eq!(
                failure.reason(),
                "cannot send ICMP echo requests to 10.1.1.1: Network is unreachable (os error 101)"
            );
        })
        .join()
        .expect("namespace thread");
    }

    /// Moves the calling thread into a fresh network namespace whose loopback is up and whose
    /// kernel ignores IPv4 echo requests (IPv6 still answers). Nothing leaves the namespace.
    fn enter_namespace_ignoring_ipv4_pings() {
        // SAFETY: unshare only changes this thread's namespace membership.
        let rc = unsafe { libc::unshare(libc::CLONE_NEWNET) };
        assert_eq!(rc, 0, "unshare: {}", io::Error::last_os_error());
        // Children forked from this thread start in the new namespace.
        let status = Command::new("sh")
            .arg("-c")
            .arg("ip link set lo up && echo 1 > /proc/sys/net/ipv4/icmp_echo_ignore_all")
            .status()
            .expect("sh runs");
        assert!(status.success());
    }

    #[test]
    fn ping_sockets_answer_loopback_when_raw_sockets_are_not_used() {
        in_a_namespace_with_ping_sockets(|engine| {
            assert_eq!(engine.ipv6_kind(), Some(SocketKind::Datagram));
            let specs = vec![
                spec(Ipv4Addr::LOCALHOST.into()),
                spec([127, 5, 6, 7].into()),
                spec(Ipv4Addr::LOCALHOST.into()),
                spec(Ipv6Addr::LOCALHOST.into()),
            ];
            let plan = plan(3, Duration::from_millis(20), Duration::from_secs(10));
            let results = run(&engine, &specs, &plan);
            assert_all_answered(&results, &specs, plan.timeout);
        });
    }

    #[test]
    fn no_icmp_socket_at_all_is_an_error() {
        std::thread::spawn(|| {
            // SAFETY: unshare only changes this thread's namespace membership.
            let rc = unsafe { libc::unshare(libc::CLONE_NEWNET) };
            assert_eq!(rc, 0, "unshare: {}", io::Error::last_os_error());
            // A fresh namespace keeps ping sockets closed ("1 0"); raw sockets are not used.
            match IcmpEngine::open_with(&IcmpOptions::default(), false) {
                Err(IcmpError::NoSocket { .. }) => {}
                Ok(engine) => panic!("opened {:?}", engine.ipv4_kind()),
            }
        })
        .join()
        .expect("namespace thread");
    }

    #[test]
    fn a_silent_target_with_a_minute_of_timeout_is_lost_at_the_deadline() {
        std::thread::spawn(|| {
            enter_namespace_ignoring_ipv4_pings();
            let engine = engine();
            let specs = vec![spec(Ipv4Addr::LOCALHOST.into()), spec(Ipv6Addr::LOCALHOST.into())];
            // Without its deadline the run would wait a minute for the silent target's replies.
            let mut plan = plan(2, Duration::from_millis(100), Duration::from_millis(1500));
            plan.timeout = Duration::from_secs(60);
            let results = run(&engine, &specs, &plan);
            let returned = Instant::now();
            assert_eq!(results[0], vec![None, None]);
            assert!(results[1].iter().all(Option::is_some), "{results:?}");
            // Not a timing threshold: 10 s of slack is far more than a loaded machine needs to
            // stop at the deadline, and far less than the minute a timeout-bound run would take.
            assert!(
                returned < plan.deadline + Duration::from_secs(10),
                "the run waited {:?} past its deadline for the silent target",
                returned - plan.deadline
            );
        })
        .join()
        .expect("namespace thread");
    }

    #[test]
    fn unanswered_pings_are_lost_and_do_not_borrow_other_runs_replies() {
        std::thread::spawn(|| {
            enter_namespace_ignoring_ipv4_pings();
            let engine = engine();
            let silent = vec![spec(Ipv4Addr::LOCALHOST.into()), spec([127, 9, 9, 9].into())];
            let answering = vec![spec(Ipv6Addr::LOCALHOST.into())];
            let plan = plan(3, Duration::from_millis(50), Duration::from_secs(5));
            std::thread::scope(|scope| {
                let (engine, plan) = (&engine, &plan);
                let silent_run = scope.spawn(move || run(engine, &silent, plan));
                let answering_run = scope.spawn(move || run(engine, &answering, plan));
                let silent_results = silent_run.join().expect("silent run");
                assert_eq!(lost_count(&silent_results), 6, "{silent_results:?}");
                let answered = answering_run.join().expect("answering run");
                assert_eq!(lost_count(&answered), 0, "{answered:?}");
            });
        })
        .join()
        .expect("namespace thread");
    }
}
