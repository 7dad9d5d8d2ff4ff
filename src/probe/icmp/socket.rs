//! ICMP sockets of the native engine and the receiver thread that drains each of them.
//!
//! Owns nothing on disk. Invariants: a socket is raw when the kernel allows it and a datagram
//! ("ping") socket otherwise; every socket carries a classic BPF filter (`SO_ATTACH_FILTER`)
//! that passes only echo replies (type and code) carrying this engine's token and, on raw
//! sockets, its identifier, so other programs' pings, other engines' replies, our own looped-back
//! requests and ICMP errors never wake the receiver (raw sockets carry ICMP_FILTER as well, the
//! kernel's cheaper first check by type); every socket has a large receive buffer; each socket
//! has exactly one receiver thread, which reads replies in batches (`recvmmsg`), times each with
//! the kernel's receive timestamp (`SO_TIMESTAMPNS`, realtime, converted to the monotonic clock
//! against a pair of clock readings taken right after the batch), records matching replies in the
//! shared in-flight table, counts what it received but could not match, and stops when the stop
//! flag is set. Requests go out in batches too: one `sendmmsg` per paced chunk ([`SendBatch`]).
//!
//! What the BPF program sees is what `recv` returns: the IPv4 header then ICMP on raw IPv4
//! sockets, the ICMP(v6) header first on raw IPv6 and on datagram sockets. Datagram sockets get
//! no identifier check: the kernel chose the identifier and already delivers only its replies.

use super::inflight::InflightTable;
use super::packet::{
    build_echo_request, echo_reply_type_code, identifier, parse_echo_reply, Family, Framing, IDENTIFIER_AT,
    REQUEST_LEN, TOKEN_AT,
};
use socket2::{Domain, Protocol, SockAddr, Socket, Type};
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};
use tracing::{debug, warn};

/// How often a receiver looks at the stop flag while no packet arrives.
const RECEIVE_POLL: Duration = Duration::from_millis(100);
/// Send buffer: a paced chunk of requests must never block or fail for lack of room.
const SEND_BUFFER: usize = 1 << 20;
/// Replies read by one `recvmmsg` at most.
const RECEIVE_BATCH: usize = 64;
/// Room for one received packet: our replies are at most 60 (IPv4 header with options) + 24 bytes;
/// anything longer is not ours and may be truncated.
const PACKET_ROOM: usize = 256;
/// A kernel receive timestamp older than this (against the realtime clock read after the batch)
/// means the realtime clock was stepped meanwhile: the batch's read time is used instead.
const MAX_TIMESTAMP_AGE: Duration = Duration::from_secs(1);
/// Linux socket options not in every `libc` target (asm-generic values, as on x86-64/arm64).
const SO_ATTACH_FILTER: libc::c_int = 26;
const SO_TIMESTAMPNS: libc::c_int = 35;
const SCM_TIMESTAMPNS: libc::c_int = SO_TIMESTAMPNS;

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
    /// Packets the receivers read that were not a reply to one of our requests (the kernel
    /// filter should leave none; a test proves it does).
    pub unmatched: AtomicU64,
    /// Whether sockets get the BPF filter (always, except in the test proving it works).
    pub kernel_filter: bool,
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
        if context.kernel_filter {
            attach_reply_filter(&socket, key.family, kind, context.token)?;
        }
        let timestamps = enable_receive_timestamps(&socket);
        let socket = Arc::new(socket);
        let framing = match (kind, key.family) {
            (SocketKind::Raw, Family::V4) => Framing::RawV4,
            (SocketKind::Raw, Family::V6) => Framing::RawV6,
            (SocketKind::Datagram, family) => Framing::Datagram(family),
        };
        let receiving = Arc::clone(&socket);
        let receiver = std::thread::Builder::new()
            .name(format!("icmp-rx-{:?}", key.family).to_lowercase())
            .spawn(move || receive_replies(&receiving, framing, timestamps, &context))?;
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

    /// Sends every request of `batch` with as few `sendmmsg` calls as the kernel allows (one,
    /// unless a request fails); `outcome(i, result)` is called once per request `i`, in order.
    /// A failed request is skipped and the rest sent on, so each target keeps its own error.
    pub fn send_batch(&self, batch: &mut SendBatch, mut outcome: impl FnMut(usize, io::Result<()>)) {
        let count = batch.len();
        batch.prepare();
        let mut at = 0;
        while at < count {
            // SAFETY: `prepare` pointed every header at its own packet, iovec and address, all
            // owned by `batch` and untouched until the call returns; `at < count` = headers.len().
            let sent = unsafe {
                libc::sendmmsg(
                    self.socket.as_raw_fd(),
                    batch.headers.as_mut_ptr().add(at),
                    (count - at) as libc::c_uint,
                    0,
                )
            };
            match usize::try_from(sent) {
                Ok(0) => {
                    outcome(
                        at,
                        Err(io::Error::new(io::ErrorKind::WriteZero, "sendmmsg sent nothing")),
                    );
                    at += 1;
                }
                Ok(sent) => {
                    for i in at..at + sent {
                        outcome(i, Ok(()));
                    }
                    at += sent;
                }
                Err(_) => {
                    let error = io::Error::last_os_error();
                    if error.kind() != io::ErrorKind::Interrupted {
                        outcome(at, Err(error));
                        at += 1;
                    }
                }
            }
        }
    }
}

/// Echo requests of one paced chunk, for one `sendmmsg`: the packets, their destinations and
/// the message headers pointing at them. Reused from chunk to chunk (no allocation per packet).
pub struct SendBatch {
    packets: Vec<[u8; REQUEST_LEN]>,
    lens: Vec<usize>,
    addresses: Vec<libc::sockaddr_storage>,
    address_lens: Vec<libc::socklen_t>,
    iovecs: Vec<libc::iovec>,
    headers: Vec<libc::mmsghdr>,
}

impl SendBatch {
    pub fn with_capacity(capacity: usize) -> SendBatch {
        SendBatch {
            packets: Vec::with_capacity(capacity),
            lens: Vec::with_capacity(capacity),
            addresses: Vec::with_capacity(capacity),
            address_lens: Vec::with_capacity(capacity),
            iovecs: Vec::with_capacity(capacity),
            headers: Vec::with_capacity(capacity),
        }
    }

    pub fn clear(&mut self) {
        self.packets.clear();
        self.lens.clear();
        self.addresses.clear();
        self.address_lens.clear();
    }

    pub fn len(&self) -> usize {
        self.packets.len()
    }

    /// Adds the echo request for `key` to `target`.
    pub fn push(&mut self, family: Family, token: u64, key: u32, target: IpAddr) {
        let mut packet = [0u8; REQUEST_LEN];
        let len = build_echo_request(family, token, key, &mut packet);
        let address = SockAddr::from(SocketAddr::new(target, 0));
        // SAFETY: sockaddr_storage is plain old data; all-zero is a valid value.
        let mut storage: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
        // SAFETY: `address` holds `address.len()` (<= size_of sockaddr_storage) initialised
        // bytes; the two regions do not overlap.
        unsafe {
            std::ptr::copy_nonoverlapping(
                address.as_ptr().cast::<u8>(),
                (&raw mut storage).cast::<u8>(),
                address.len() as usize,
            );
        }
        self.packets.push(packet);
        self.lens.push(len);
        self.addresses.push(storage);
        self.address_lens.push(address.len());
    }

    /// Points one iovec and one message header at each packet and destination.
    fn prepare(&mut self) {
        self.iovecs.clear();
        self.headers.clear();
        for (packet, len) in self.packets.iter_mut().zip(&self.lens) {
            self.iovecs.push(libc::iovec {
                iov_base: packet.as_mut_ptr().cast(),
                iov_len: *len,
            });
        }
        for ((iovec, address), address_len) in self.iovecs.iter_mut().zip(&mut self.addresses).zip(&self.address_lens) {
            // SAFETY: mmsghdr is plain old data; all-zero (no control data, no flags) is valid.
            let mut header: libc::mmsghdr = unsafe { std::mem::zeroed() };
            header.msg_hdr.msg_name = (address as *mut libc::sockaddr_storage).cast();
            header.msg_hdr.msg_namelen = *address_len;
            header.msg_hdr.msg_iov = iovec;
            header.msg_hdr.msg_iovlen = 1;
            self.headers.push(header);
        }
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

/// Attaches the classic BPF program of the module doc: accept an echo reply (type and code)
/// whose identifier (raw sockets only) and payload token are this engine's, drop the rest.
/// Loads beyond the packet's end drop it too (the kernel returns 0 for them).
fn attach_reply_filter(socket: &Socket, family: Family, kind: SocketKind, token: u64) -> io::Result<()> {
    let program = reply_filter(family, kind, token);
    let fprog = libc::sock_fprog {
        len: program.len() as libc::c_ushort,
        filter: program.as_ptr().cast_mut(),
    };
    set_raw_option(socket, libc::SOL_SOCKET, SO_ATTACH_FILTER, &fprog)
        .map_err(|e| io::Error::new(e.kind(), format!("attaching the echo-reply filter: {e}")))
}

/// The filter program for [`attach_reply_filter`] (the kernel copies it while attaching).
fn reply_filter(family: Family, kind: SocketKind, token: u64) -> Vec<libc::sock_filter> {
    const LD: u16 = 0x00;
    const LDX: u16 = 0x01;
    const JMP: u16 = 0x05;
    const RET: u16 = 0x06;
    const W: u16 = 0x00;
    const H: u16 = 0x08;
    const B: u16 = 0x10;
    const IMM: u16 = 0x00;
    const IND: u16 = 0x40;
    const MSH: u16 = 0xa0;
    const JEQ: u16 = 0x10;
    let op = |code: u16, k: u32| libc::sock_filter { code, jt: 0, jf: 0, k };
    let mut program = Vec::with_capacity(12);
    // X = offset of the ICMP header: behind the IPv4 header (4 * IHL) on raw IPv4 sockets.
    program.push(match (family, kind) {
        (Family::V4, SocketKind::Raw) => op(LDX | B | MSH, 0),
        _ => op(LDX | W | IMM, 0),
    });
    let mut checks = vec![(H, 0, u32::from(echo_reply_type_code(family)))];
    if kind == SocketKind::Raw {
        checks.push((H, IDENTIFIER_AT, u32::from(identifier(token))));
    }
    checks.push((W, TOKEN_AT, (token >> 32) as u32));
    checks.push((W, TOKEN_AT + 4, token as u32));
    for (size, at, expected) in checks {
        program.push(op(LD | size | IND, at));
        program.push(op(JMP | JEQ, expected));
    }
    program.push(op(RET, u32::MAX));
    program.push(op(RET, 0));
    // Every failed comparison jumps to the final "drop".
    let drop_at = program.len() - 1;
    for (i, instruction) in program.iter_mut().enumerate() {
        if instruction.code == JMP | JEQ {
            instruction.jf = (drop_at - i - 1) as u8;
        }
    }
    program
}

/// Asks for kernel receive timestamps; `false` (the receiver's own clock is used) if refused.
fn enable_receive_timestamps(socket: &Socket) -> bool {
    let on: libc::c_int = 1;
    match set_raw_option(socket, libc::SOL_SOCKET, SO_TIMESTAMPNS, &on) {
        Ok(()) => true,
        Err(e) => {
            debug!("no kernel receive timestamps on the ICMP socket ({e}): RTTs end at the read");
            false
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

/// The receiver loop: read a batch, timestamp, match, record; until the stop flag is set.
fn receive_replies(socket: &Socket, framing: Framing, timestamps: bool, context: &ReceiverContext) {
    let mut batch = ReceiveBatch::new();
    while !context.stop.load(Ordering::Relaxed) {
        match batch.receive(socket) {
            Ok(count) => {
                // The realtime reading paired with `read_at`: the midpoint of one before and one
                // after it, so a preemption between the readings cannot shift every RTT of the
                // batch by its length (at most by half of it).
                let before = SystemTime::now();
                let read_at = Instant::now();
                let after = SystemTime::now();
                let read_real = after.duration_since(before).map_or(after, |gap| before + gap / 2);
                for i in 0..count {
                    let (packet, kernel_time) = batch.packet(i);
                    let received = match kernel_time.filter(|_| timestamps) {
                        Some(stamp) => monotonic_receive_time(stamp, read_real, read_at),
                        None => read_at,
                    };
                    match parse_echo_reply(framing, context.token, packet) {
                        Some(key) => context.table.record_reply(key, received),
                        None => {
                            context.unmatched.fetch_add(1, Ordering::Relaxed);
                        }
                    }
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

/// The monotonic time of a packet the kernel stamped at `stamp` (realtime), given a realtime
/// and a monotonic reading taken together after the packet was read: `read_at` minus the
/// packet's age. A stamp from the future or older than [`MAX_TIMESTAMP_AGE`] (the realtime
/// clock was stepped in between) gives `read_at`, never a time before the packet could be sent.
fn monotonic_receive_time(stamp: SystemTime, read_real: SystemTime, read_at: Instant) -> Instant {
    match read_real.duration_since(stamp) {
        Ok(age) if age <= MAX_TIMESTAMP_AGE => read_at.checked_sub(age).unwrap_or(read_at),
        _ => read_at,
    }
}

/// Buffers and headers of one `recvmmsg`, reused for every batch.
struct ReceiveBatch {
    packets: Box<[[u8; PACKET_ROOM]; RECEIVE_BATCH]>,
    /// Control data (the timestamp); u64 for cmsghdr alignment.
    controls: Box<[[u64; 8]; RECEIVE_BATCH]>,
    iovecs: Vec<libc::iovec>,
    headers: Vec<libc::mmsghdr>,
}

impl ReceiveBatch {
    fn new() -> ReceiveBatch {
        let mut batch = ReceiveBatch {
            packets: Box::new([[0; PACKET_ROOM]; RECEIVE_BATCH]),
            controls: Box::new([[0; 8]; RECEIVE_BATCH]),
            iovecs: Vec::with_capacity(RECEIVE_BATCH),
            headers: Vec::with_capacity(RECEIVE_BATCH),
        };
        for packet in batch.packets.iter_mut() {
            batch.iovecs.push(libc::iovec {
                iov_base: packet.as_mut_ptr().cast(),
                iov_len: PACKET_ROOM,
            });
        }
        for (iovec, control) in batch.iovecs.iter_mut().zip(batch.controls.iter_mut()) {
            // SAFETY: mmsghdr is plain old data; all-zero is valid.
            let mut header: libc::mmsghdr = unsafe { std::mem::zeroed() };
            header.msg_hdr.msg_iov = iovec;
            header.msg_hdr.msg_iovlen = 1;
            header.msg_hdr.msg_control = control.as_mut_ptr().cast();
            batch.headers.push(header);
        }
        batch
    }

    /// Waits (up to the socket's read timeout) for one packet, then takes every packet already
    /// queued, up to [`RECEIVE_BATCH`]; returns how many.
    fn receive(&mut self, socket: &Socket) -> io::Result<usize> {
        for header in &mut self.headers {
            header.msg_hdr.msg_controllen = std::mem::size_of::<[u64; 8]>() as _;
            header.msg_hdr.msg_flags = 0;
            header.msg_len = 0;
        }
        // SAFETY: every header points at its own iovec, packet buffer and control buffer, all
        // owned by `self` (boxed or never reallocated after `new`) and alive during the call.
        let count = unsafe {
            libc::recvmmsg(
                socket.as_raw_fd(),
                self.headers.as_mut_ptr(),
                RECEIVE_BATCH as libc::c_uint,
                libc::MSG_WAITFORONE,
                std::ptr::null_mut(),
            )
        };
        usize::try_from(count).map_err(|_| io::Error::last_os_error())
    }

    /// Packet `i` of the last batch and its kernel receive timestamp, if any.
    fn packet(&self, i: usize) -> (&[u8], Option<SystemTime>) {
        let header = &self.headers[i];
        let len = (header.msg_len as usize).min(PACKET_ROOM);
        let mut stamp = None;
        // SAFETY: the kernel filled msg_control/msg_controllen of this header; the CMSG macros
        // walk only within that buffer, and a timespec is read unaligned from CMSG_DATA.
        unsafe {
            let mut cmsg = libc::CMSG_FIRSTHDR(&header.msg_hdr);
            while !cmsg.is_null() {
                if (*cmsg).cmsg_level == libc::SOL_SOCKET && (*cmsg).cmsg_type == SCM_TIMESTAMPNS {
                    let time = std::ptr::read_unaligned(libc::CMSG_DATA(cmsg).cast::<libc::timespec>());
                    stamp = u64::try_from(time.tv_sec)
                        .ok()
                        .map(|seconds| SystemTime::UNIX_EPOCH + Duration::new(seconds, time.tv_nsec as u32));
                }
                cmsg = libc::CMSG_NXTHDR(&header.msg_hdr, cmsg);
            }
        }
        (&self.packets[i][..len], stamp)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_timestamps_become_monotonic_times_by_their_age() {
        let read_at = Instant::now();
        let read_real = SystemTime::now();
        let stamp = read_real - Duration::from_micros(250);
        assert_eq!(
            monotonic_receive_time(stamp, read_real, read_at),
            read_at - Duration::from_micros(250)
        );
        // From the future, or older than a clock step allows: the read time.
        let future = read_real + Duration::from_millis(3);
        assert_eq!(monotonic_receive_time(future, read_real, read_at), read_at);
        let stepped = read_real - Duration::from_secs(3600);
        assert_eq!(monotonic_receive_time(stepped, read_real, read_at), read_at);
    }

    /// Two datagrams 50 ms apart, read with one `recvmmsg`: each keeps its own kernel receive
    /// time, on the monotonic clock, on its side of a reading taken between them.
    #[test]
    fn a_batch_read_together_keeps_each_packets_own_receive_time() {
        let receiver = Socket::new(Domain::IPV4, Type::DGRAM, None).expect("udp socket");
        receiver
            .bind(&SockAddr::from(SocketAddr::from(([127, 0, 0, 1], 0))))
            .expect("bind");
        receiver
            .set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        assert!(enable_receive_timestamps(&receiver));
        let to = receiver.local_addr().expect("address");
        let sender = Socket::new(Domain::IPV4, Type::DGRAM, None).expect("udp socket");
        wait_until_packets_are_stamped_on_arrival(&receiver, &sender);
        sender.send_to(b"first", &to).expect("send");
        std::thread::sleep(Duration::from_millis(25));
        let between = Instant::now();
        std::thread::sleep(Duration::from_millis(25));
        sender.send_to(b"second", &to).expect("send");
        // Loopback queues both before the second send returns, so one batch holds both.
        let mut batch = ReceiveBatch::new();
        assert_eq!(batch.receive(&receiver).expect("recvmmsg"), 2);
        let read_at = Instant::now();
        let read_real = SystemTime::now();
        let (first, first_stamp) = batch.packet(0);
        assert_eq!(first, b"first");
        let first_at = monotonic_receive_time(first_stamp.expect("timestamp"), read_real, read_at);
        let (second, second_stamp) = batch.packet(1);
        assert_eq!(second, b"second");
        let second_at = monotonic_receive_time(second_stamp.expect("timestamp"), read_real, read_at);
        assert!(
            first_at < between && between < second_at,
            "{first_at:?} {between:?} {second_at:?}"
        );
        assert!(second_at - first_at >= Duration::from_millis(50));
        assert!(second_at <= read_at);
    }

    /// The kernel turns arrival timestamps on for the whole machine through deferred work once
    /// the first socket asks for them; until it has run, a packet is stamped when it is read.
    /// (The daemon's sockets live long; only their first packets can meet this, and they read
    /// as received a little later than they were.) Sends warm-up datagrams until one, read
    /// 20 ms after it arrived, carries a stamp from before the read.
    fn wait_until_packets_are_stamped_on_arrival(receiver: &Socket, sender: &Socket) {
        let to = receiver.local_addr().expect("address");
        let mut batch = ReceiveBatch::new();
        for _ in 0..250 {
            sender.send_to(b"warm-up", &to).expect("send");
            std::thread::sleep(Duration::from_millis(20));
            assert_eq!(batch.receive(receiver).expect("recvmmsg"), 1);
            let read_real = SystemTime::now();
            let (_, stamp) = batch.packet(0);
            let stamp = stamp.expect("timestamp");
            if read_real
                .duration_since(stamp)
                .is_ok_and(|age| age >= Duration::from_millis(20))
            {
                return;
            }
        }
        panic!("packets were never stamped on arrival within 250 tries");
    }

    #[test]
    fn reply_filter_jumps_to_its_drop_and_checks_the_identifier_only_on_raw_sockets() {
        let raw = reply_filter(Family::V4, SocketKind::Raw, 0x0102_0304_0506_0708);
        let datagram = reply_filter(Family::V6, SocketKind::Datagram, 0x0102_0304_0506_0708);
        assert_eq!(raw.len(), datagram.len() + 2);
        for program in [&raw, &datagram] {
            let drop_at = program.len() - 1;
            assert_eq!((program[drop_at].code, program[drop_at].k), (0x06, 0));
            for (i, op) in program.iter().enumerate().filter(|(_, op)| op.code == 0x15) {
                assert_eq!(i + 1 + usize::from(op.jf), drop_at);
            }
        }
        assert!(raw.iter().any(|op| op.code == 0x15 && op.k == 0x0102));
        assert!(!datagram.iter().any(|op| op.code == 0x15 && op.k == 0x0102));
    }
}
