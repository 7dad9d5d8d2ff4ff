//! TCP connect probe: one ping is the time a TCP handshake with `host:port` takes.
//!
//! Each ping opens a fresh socket (bound to `source_ip` when the order sets one), connects with
//! the ping's time budget and closes at once, without sending data. Refused, reset, unreachable
//! and timed-out connects are lost pings (logged at debug): the SYN went out and the network or
//! the target answered no (a refused connection is the target's "port closed", a measurement of
//! the service being down). A ping the machine itself refuses to send — the socket cannot be
//! created, the source address cannot be bound (not local, wrong family), or the connect fails
//! locally ([`is_local`]: no local port or address, a local firewall's EPERM, out of
//! descriptors) — is not sent; an order none of whose pings could be sent in a run is a failure
//! with the reason (see `rounds`). The host was resolved when the order was read (an order whose
//! name does not resolve is `unresolved`, never probed). The order's `interval_ms` is used by the
//! scheduler to build the [`RunPlan`]; this probe follows the plan. Targets of a run are measured
//! concurrently on at most [`MAX_WORKERS`] threads (see `rounds`). Owns nothing on disk.

use super::rounds::{run_rounds, Ping};
use super::{Outcome, Probe, ProbeFailure, RunPlan};
use crate::orders::order::{ProbeSpec, TcpSpec};
use socket2::{Domain, Protocol, SockAddr, Socket, Type};
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

/// Most connects in flight at once in one run.
pub const MAX_WORKERS: usize = 16;

/// Why one TCP ping was lost.
#[derive(Debug, thiserror::Error)]
pub enum TcpPingError {
    #[error("creating a TCP socket for {address}: {source}")]
    Socket { address: SocketAddr, source: io::Error },
    #[error("binding the TCP socket for {address} to source {source_ip}: {source}")]
    Bind {
        address: SocketAddr,
        source_ip: IpAddr,
        source: io::Error,
    },
    #[error("connecting to {address}: {source}")]
    Connect { address: SocketAddr, source: io::Error },
    #[error("order for {0} is not a tcp order")]
    NotTcp(String),
}

/// Measures TCP connect time. Stateless, so one instance serves concurrent runs.
#[derive(Debug, Default, Clone)]
pub struct TcpProbe;

impl TcpProbe {
    pub fn new() -> TcpProbe {
        TcpProbe
    }
}

impl Probe for TcpProbe {
    fn run(&self, targets: &[&ProbeSpec], plan: &RunPlan) -> Vec<Outcome> {
        run_rounds(targets.len(), plan, MAX_WORKERS, |index, budget| {
            let result = match targets[index] {
                ProbeSpec::Tcp(spec) => connect_time(spec, budget),
                other => Err(TcpPingError::NotTcp(format!("{other:?}"))),
            };
            match result {
                Ok(rtt) => Ping::Answered(rtt),
                Err(error) if error.is_sent() => {
                    tracing::debug!(%error, "tcp ping lost");
                    Ping::Lost
                }
                Err(error) => {
                    tracing::debug!(%error, "tcp ping not sent");
                    Ping::NotSent(ProbeFailure::new(error))
                }
            }
        })
    }
}

impl TcpPingError {
    /// Whether the ping went out (a SYN was sent) before it failed: a lost ping, not a failure
    /// to measure.
    pub fn is_sent(&self) -> bool {
        match self {
            TcpPingError::Connect { source, .. } => !is_local(source),
            _ => false,
        }
    }
}

/// Whether a connect error comes from this machine before anything was sent: no local address
/// or port to use, a local firewall (EPERM, EACCES), out of descriptors or buffers, an address
/// the socket cannot use. Refused, reset, unreachable and timed-out connects are answers.
pub fn is_local(error: &io::Error) -> bool {
    matches!(
        error.raw_os_error(),
        Some(
            libc::EADDRNOTAVAIL
                | libc::EADDRINUSE
                | libc::EPERM
                | libc::EACCES
                | libc::EMFILE
                | libc::ENFILE
                | libc::ENOBUFS
                | libc::ENOMEM
                | libc::EAFNOSUPPORT
                | libc::EINVAL
        )
    )
}

/// Connects once to `spec.address` within `budget` and returns the handshake time in seconds.
pub fn connect_time(spec: &TcpSpec, budget: Duration) -> Result<f64, TcpPingError> {
    let address = spec.address;
    let socket = Socket::new(Domain::for_address(address), Type::STREAM, Some(Protocol::TCP))
        .map_err(|source| TcpPingError::Socket { address, source })?;
    if let Some(source_ip) = spec.source_ip {
        socket
            .bind(&SockAddr::from(SocketAddr::new(source_ip, 0)))
            .map_err(|source| TcpPingError::Bind {
                address,
                source_ip,
                source,
            })?;
    }
    let started = Instant::now();
    socket
        .connect_timeout(&SockAddr::from(address), budget)
        .map_err(|source| TcpPingError::Connect { address, source })?;
    Ok(started.elapsed().as_secs_f64())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    fn spec(address: SocketAddr, source_ip: Option<IpAddr>) -> ProbeSpec {
        ProbeSpec::Tcp(TcpSpec {
            host: address.ip().to_string(),
            port: address.port(),
            address,
            source_ip,
            interval_ms: None,
        })
    }

    fn plan(pings: u32) -> RunPlan {
        let start = Instant::now();
        RunPlan {
            pings,
            interval: Duration::from_millis(10),
            timeout: Duration::from_secs(2),
            start,
            deadline: start + Duration::from_secs(10),
        }
    }

    /// A port that was just listening and is now closed (connects are refused).
    fn closed_port(ip: &str) -> SocketAddr {
        let listener = TcpListener::bind((ip, 0)).expect("bind");
        listener.local_addr().expect("addr")
    }

    #[test]
    fn listening_ipv4_port_answers_every_ping_and_a_closed_port_loses_all() {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let open = spec(listener.local_addr().expect("addr"), None);
        let closed = spec(closed_port("127.0.0.1"), None);
        let results = TcpProbe::new().run(&[&open, &closed], &plan(3));
        assert_eq!(results.len(), 2);
        let answered = results[0].as_ref().expect("measured");
        assert_eq!(answered.len(), 3);
        assert!(answered.iter().all(|rtt| rtt.is_some_and(|s| s > 0.0 && s < 2.0)));
        assert_eq!(results[1], Ok(vec![None, None, None]), "refused is a measurement: lost");
    }

    #[test]
    fn ipv6_loopback_port_answers() {
        let listener = TcpListener::bind("[::1]:0").expect("bind ::1");
        let open = spec(listener.local_addr().expect("addr"), None);
        let results = TcpProbe::new().run(&[&open], &plan(2));
        assert!(results[0].as_ref().unwrap().iter().all(Option::is_some), "{results:?}");
    }

    #[test]
    fn connect_is_made_from_the_requested_source_ip() {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let target = listener.local_addr().expect("addr");
        let source: IpAddr = "127.0.0.42".parse().expect("ip");
        let rtt = connect_time(
            &TcpSpec {
                host: "127.0.0.1".into(),
                port: target.port(),
                address: target,
                source_ip: Some(source),
                interval_ms: None,
            },
            Duration::from_secs(2),
        );
        assert!(rtt.is_ok(), "{rtt:?}");
        let (_, peer) = listener.accept().expect("accept");
        assert_eq!(peer.ip(), source);
    }

    #[test]
    fn a_source_ip_that_cannot_be_bound_is_a_failure_to_measure_not_a_loss() {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let address = listener.local_addr().expect("addr");
        // The wrong family, and an address no interface of this machine has (TEST-NET-3).
        for source in ["::1", "203.0.113.9"] {
            let spec = spec(address, Some(source.parse().expect("ip")));
            let results = TcpProbe::new().run(&[&spec], &plan(2));
            let failure = results[0].as_ref().expect_err("not measured");
            assert!(
                failure
                    .reason()
                    .starts_with(&format!("binding the TCP socket for {address} to source {source}")),
                "{failure}"
            );
        }
    }

    #[test]
    fn connect_errors_from_the_network_are_answers_and_local_ones_are_not() {
        for errno in [
            libc::ECONNREFUSED,
            libc::ETIMEDOUT,
            libc::EHOSTUNREACH,
            libc::ENETUNREACH,
            libc::ECONNRESET,
        ] {
            assert!(!is_local(&io::Error::from_raw_os_error(errno)), "{errno}");
        }
        for errno in [
            libc::EADDRNOTAVAIL,
            libc::EPERM,
            libc::EACCES,
            libc::EMFILE,
            libc::EAFNOSUPPORT,
        ] {
            assert!(is_local(&io::Error::from_raw_os_error(errno)), "{errno}");
        }
        assert!(!is_local(&io::Error::new(io::ErrorKind::TimedOut, "timed out")));
    }

    #[test]
    fn connect_to_a_listener_with_a_full_backlog_times_out_within_the_budget() {
        // With the accept queue full, Linux drops further SYNs: the handshake never completes.
        let listener = Socket::new(Domain::IPV4, Type::STREAM, None).expect("socket");
        listener
            .bind(&SockAddr::from(SocketAddr::from(([127, 0, 0, 1], 0))))
            .expect("bind");
        listener.listen(0).expect("listen");
        let address = listener.local_addr().expect("addr").as_socket().expect("inet");
        let spec = TcpSpec {
            host: "127.0.0.1".into(),
            port: address.port(),
            address,
            source_ip: None,
            interval_ms: None,
        };
        let mut fillers = Vec::new();
        let error = loop {
            match connect_time(&spec, Duration::from_millis(300)) {
                Ok(_) if fillers.len() < 64 => fillers.push(()),
                Ok(_) => panic!("backlog never filled"),
                Err(error) => break error,
            }
        };
        match error {
            TcpPingError::Connect { source, .. } => {
                assert_eq!(source.kind(), io::ErrorKind::TimedOut, "{source}")
            }
            other => panic!("unexpected error {other}"),
        }
    }

    #[test]
    fn non_tcp_spec_is_lost_with_the_right_shape() {
        let other = ProbeSpec::Exec(crate::orders::order::ExecSpec {
            kind: crate::orders::order::ExecKind::Exec,
            command: vec!["true".into()],
            host: None,
            source_ip: None,
            interface: None,
            flags: vec![],
            timeout_ms: None,
        });
        let results = TcpProbe::new().run(&[&other], &plan(2));
        assert!(
            results[0]
                .as_ref()
                .is_err_and(|f| f.reason().contains("not a tcp order")),
            "{results:?}"
        );
    }
}
