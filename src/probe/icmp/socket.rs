//! ICMP sockets of the native engine and the receiver thread that drains each of them.
//!
//! Owns nothing on disk. Invariants: a socket is raw when the kernel allows it and a datagram
//! ("ping") socket otherwise; raw sockets carry a kernel filter that passes only echo replies;
//! every socket has a large receive buffer; each socket has exactly one receiver thread, which
//! records matching replies in the shared in-flight table and stops when the stop flag is set.

use super::inflight::InflightTable;
use super::packet::{parse_echo_reply, Family, Framing};
use socket2::{Domain, Protocol, SockAddr, Socket, Type};
use std::io::{self, Read};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use tracing::{debug, warn};

/// How often a receiver looks at the stop flag while no packet arrives.
const RECEIVE_POLL: Duration = Duration::from_millis(100);
/// Send buffer: a paced chunk of requests must never block or fail for lack of room.
const SEND_BUFFER: usize = 1 << 20;

/// The kind of ICMP socket the engine got from the kernel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SocketKind {
    /// SOCK_RAW (root or CAP_NET_RAW).
    Raw,
    /// SOCK_DGRAM + IPPROTO_ICMP, allowed by `net.ipv4.ping_group_range`.
    Datagram,
}

/// What a dedicated socket is for: one address family, optionally bound to a source address
/// and/or a network device.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct EndpointKey {
    pub family: Family,
    pub source: Option<IpAddr>,
    pub interface: Option<String>,
}

/// What receivers share with the engine.
pub struct ReceiverContext {
    pub table: InflightTable,
    pub token: u64,
    pub stop: AtomicBool,
}

/// One open ICMP socket with its receiver thread.
pub struct Endpoint {
    pub socket: Arc<Socket>,
    pub kind: SocketKind,
    pub family: Family,
    receiver: Option<JoinHandle<()>>,
}

impl Endpoint {
    /// Opens a socket for `key` (raw first when `raw_allowed`, then datagram), configures it
    /// and starts its receiver thread.
    pub fn open(
        key: &EndpointKey,
        receive_buffer: usize,
        raw_allowed: bool,
        context: Arc<ReceiverContext>,
    ) -> io::Result<Endpoint> {
        let (socket, kind) = open_icmp_socket(key.family, raw_allowed)?;
        configure(&socket, key, kind, receive_buffer)?;
        let socket = Arc::new(socket);
        let framing = match (kind, key.family) {
            (SocketKind::Raw, Family::V4) => Framing::RawV4,
            (SocketKind::Raw, Family::V6) => Framing::RawV6,
            (SocketKind::Datagram, family) => Framing::Datagram(family),
        };
        let receiving = Arc::clone(&socket);
        let receiver = std::thread::Builder::new()
            .name(format!("icmp-rx-{:?}", key.family).to_lowercase())
            .spawn(move || receive_replies(&receiving, framing, &context))?;
        Ok(Endpoint {
            socket,
            kind,
            family: key.family,
            receiver: Some(receiver),
        })
    }

    /// Waits for the receiver thread (after the stop flag was set).
    pub fn join(&mut self) {
        if let Some(receiver) = self.receiver.take() {
            if receiver.join().is_err() {
                warn!("ICMP receiver thread panicked");
            }
        }
    }

    /// Sends one packet to `target`.
    pub fn send_to(&self, packet: &[u8], target: IpAddr) -> io::Result<()> {
        let address = SockAddr::from(SocketAddr::new(target, 0));
        self.socket.send_to(packet, &address).map(|_| ())
    }
}

fn open_icmp_socket(family: Family, raw_allowed: bool) -> io::Result<(Socket, SocketKind)> {
    let (domain, protocol) = match family {
        Family::V4 => (Domain::IPV4, Protocol::ICMPV4),
        Family::V6 => (Domain::IPV6, Protocol::ICMPV6),
    };
    let raw = if raw_allowed {
        Socket::new(domain, Type::RAW, Some(protocol))
    } else {
        Err(io::Error::new(io::ErrorKind::Unsupported, "not wanted"))
    };
    match raw {
        Ok(socket) => Ok((socket, SocketKind::Raw)),
        Err(raw_error) => {
            debug!("raw ICMP socket ({family:?}) refused: {raw_error}; trying a ping socket");
            Socket::new(domain, Type::DGRAM, Some(protocol))
                .map(|socket| (socket, SocketKind::Datagram))
                .map_err(|dgram_error| {
                    io::Error::new(
                        dgram_error.kind(),
                        format!("{family:?} raw socket: {raw_error}; ping socket: {dgram_error}"),
                    )
                })
        }
    }
}

fn configure(socket: &Socket, key: &EndpointKey, kind: SocketKind, receive_buffer: usize) -> io::Result<()> {
    set_receive_buffer(socket, receive_buffer);
    if let Err(e) = socket.set_send_buffer_size(SEND_BUFFER) {
        debug!("cannot enlarge ICMP send buffer: {e}");
    }
    if kind == SocketKind::Raw {
        pass_only_echo_replies(socket, key.family)?;
    }
    socket.set_read_timeout(Some(RECEIVE_POLL))?;
    if let Some(interface) = &key.interface {
        socket
            .bind_device(Some(interface.as_bytes()))
            .map_err(|e| io::Error::new(e.kind(), format!("binding to device {interface}: {e}")))?;
    }
    if let Some(source) = key.source {
        socket
            .bind(&SockAddr::from(SocketAddr::new(source, 0)))
            .map_err(|e| io::Error::new(e.kind(), format!("binding to {source}: {e}")))?;
    } else if kind == SocketKind::Datagram {
        let any: IpAddr = match key.family {
            Family::V4 => Ipv4Addr::UNSPECIFIED.into(),
            Family::V6 => Ipv6Addr::UNSPECIFIED.into(),
        };
        socket.bind(&SockAddr::from(SocketAddr::new(any, 0)))?;
    }
    Ok(())
}

/// SO_RCVBUFFORCE (root may exceed `net.core.rmem_max`), else SO_RCVBUF capped by the kernel.
fn set_receive_buffer(socket: &Socket, bytes: usize) {
    // The kernel doubles the value it is given; ask for half so the result is `bytes`.
    let request = (bytes / 2).max(1);
    if nix::sys::socket::setsockopt(socket, nix::sys::socket::sockopt::RcvBufForce, &request).is_ok() {
        return;
    }
    if let Err(e) = socket.set_recv_buffer_size(request) {
        warn!("cannot set ICMP receive buffer to {bytes} bytes: {e}");
    }
}

/// Kernel-side filtering: ICMP_FILTER (IPv4, bit set = type blocked) or ICMP6_FILTER (IPv6,
/// same convention over 256 types), so requests and errors never wake the receiver.
fn pass_only_echo_replies(socket: &Socket, family: Family) -> io::Result<()> {
    const ICMP_FILTER: libc::c_int = 1;
    const ICMP6_FILTER: libc::c_int = 1;
    const ICMPV6_ECHO_REPLY: usize = 129;
    match family {
        Family::V4 => {
            let blocked: u32 = !1; // everything but type 0, echo reply
            set_raw_option(socket, libc::SOL_RAW, ICMP_FILTER, &blocked)
        }
        Family::V6 => {
            let mut blocked = [u32::MAX; 8];
            blocked[ICMPV6_ECHO_REPLY >> 5] &= !(1 << (ICMPV6_ECHO_REPLY & 31));
            set_raw_option(socket, libc::IPPROTO_ICMPV6, ICMP6_FILTER, &blocked)
        }
    }
}

fn set_raw_option<T>(socket: &Socket, level: libc::c_int, name: libc::c_int, value: &T) -> io::Result<()> {
    // SAFETY: `value` points to a live, initialised `T` of the size we pass; the kernel only
    // reads it during the call.
    let result = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            level,
            name,
            (value as *const T).cast(),
            std::mem::size_of::<T>() as libc::socklen_t,
        )
    };
    if result == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// The receiver loop: read, timestamp, match, record; until the stop flag is set.
fn receive_replies(socket: &Socket, framing: Framing, context: &ReceiverContext) {
    let mut buf = [0u8; 2048];
    let mut reader = socket;
    while !context.stop.load(Ordering::Relaxed) {
        match reader.read(&mut buf) {
            Ok(len) => {
                let received = Instant::now();
                if let Some(key) = buf
                    .get(..len)
                    .and_then(|packet| parse_echo_reply(framing, context.token, packet))
                {
                    context.table.record_reply(key, received);
                }
            }
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut | io::ErrorKind::Interrupted
                ) => {}
            Err(e) => {
                warn!("ICMP receive failed: {e}");
                std::thread::sleep(RECEIVE_POLL);
            }
        }
    }
}
