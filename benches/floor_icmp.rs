//! The floor of loopback ICMP on this machine: CPU per echo request + reply with the best socket
//! setup we can find, step by step, independent of spoolmon's engine (its own sockets, libc
//! only). Sends `FLOOR_PINGS` (default 30,000) echo requests per variant to distinct 127.30.x.y
//! targets (nothing leaves the host), paced at `FLOOR_RATE` per second (default 50,000, the
//! engine's default send rate) in bursts of one batch, from the main thread; one receiver thread
//! reads the replies. CPU per ping is getrusage (user + system of the whole process) over the
//! variant divided by the pings: on loopback it includes the kernel answering the request.
//! Each variant runs `FLOOR_REPEAT` times (default 5), interleaved; the median is printed.
//!
//! The machine column is every CPU's busy time over the variant from /proc/stat minus the idle
//! machine's (calibrated for 3 s at the start), per ping: it adds the softirq time the kernel
//! may charge to no task, so it only means something on a quiet machine.
//!
//! Variants: `sendto+recv` (one syscall per packet each way, ICMP_FILTER by type: the engine
//! before issue 12), `+bpf` (SO_ATTACH_FILTER: echo reply, our identifier and token), `+sendmmsg
//! B` (one call per burst of B), `+recvmmsg` (up to 64 replies per call), `+timestamps`
//! (SO_TIMESTAMPNS on every reply, as the engine needs for batched receive).
//!
//! Needs root (raw sockets). usage: cargo bench --profile profiling --bench floor_icmp
//! Under `cargo test` (no `--bench`) it runs each variant once with 500 pings and asserts that
//! every reply arrived.

#[path = "floor/machine.rs"]
mod machine;

use machine::{Machine, Span};
use std::io;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const IDENTIFIER: u16 = 0x5a5a;
const TOKEN: u64 = 0x1234_5678_9abc_def0;
const LEN: usize = 24;

#[derive(Clone, Copy)]
struct Variant {
    name: &'static str,
    bpf: bool,
    send_batch: usize,
    recv_batch: usize,
    timestamps: bool,
}

fn cpu_micros() -> f64 {
    let usage = nix::sys::resource::getrusage(nix::sys::resource::UsageWho::RUSAGE_SELF).expect("getrusage");
    let micros = |t: nix::sys::time::TimeVal| t.tv_sec() as f64 * 1e6 + t.tv_usec() as f64;
    micros(usage.user_time()) + micros(usage.system_time())
}

fn check(rc: libc::c_int, what: &str) {
    assert!(rc >= 0, "{what}: {}", io::Error::last_os_error());
}

fn setsockopt<T>(fd: libc::c_int, level: libc::c_int, name: libc::c_int, value: &T) {
    // SAFETY: `value` is a live T of the size passed; the kernel only reads it.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            level,
            name,
            (value as *const T).cast(),
            std::mem::size_of::<T>() as libc::socklen_t,
        )
    };
    check(rc, "setsockopt");
}

fn open_socket(variant: Variant) -> libc::c_int {
    // SAFETY: plain socket(2).
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_RAW, libc::IPPROTO_ICMP) };
    check(fd, "raw socket (run as root)");
    let blocked: u32 = !1; // ICMP_FILTER: everything but echo reply
    setsockopt(fd, libc::SOL_RAW, 1, &blocked);
    let half: libc::c_int = 8 << 20;
    setsockopt(fd, libc::SOL_SOCKET, libc::SO_RCVBUFFORCE, &half);
    let timeout = libc::timeval {
        tv_sec: 0,
        tv_usec: 100_000,
    };
    setsockopt(fd, libc::SOL_SOCKET, libc::SO_RCVTIMEO, &timeout);
    if variant.bpf {
        let op = |code: u16, jt: u8, jf: u8, k: u32| libc::sock_filter { code, jt, jf, k };
        let program = [
            op(0xb1, 0, 0, 0), // ldxb 4*([0]&0xf)
            op(0x48, 0, 0, 0), // ldh [x+0]: type, code
            op(0x15, 0, 7, 0), // jeq echo reply 0/0
            op(0x48, 0, 0, 4), // ldh [x+4]: identifier
            op(0x15, 0, 5, u32::from(IDENTIFIER)),
            op(0x40, 0, 0, 8), // ld [x+8]: token high
            op(0x15, 0, 3, (TOKEN >> 32) as u32),
            op(0x40, 0, 0, 12), // ld [x+12]: token low
            op(0x15, 0, 1, TOKEN as u32),
            op(0x06, 0, 0, u32::MAX),
            op(0x06, 0, 0, 0),
        ];
        let fprog = libc::sock_fprog {
            len: program.len() as u16,
            filter: program.as_ptr().cast_mut(),
        };
        setsockopt(fd, libc::SOL_SOCKET, 26, &fprog); // SO_ATTACH_FILTER
    }
    if variant.timestamps {
        let on: libc::c_int = 1;
        setsockopt(fd, libc::SOL_SOCKET, 35, &on); // SO_TIMESTAMPNS
    }
    fd
}

fn checksum(data: &[u8]) -> u16 {
    let mut sum: u32 = data
        .chunks(2)
        .map(|pair| u32::from(u16::from_be_bytes([pair[0], *pair.get(1).unwrap_or(&0)])))
        .sum();
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

fn request(seq: u32) -> [u8; LEN] {
    let mut packet = [0u8; LEN];
    packet[0] = 8;
    packet[4..6].copy_from_slice(&IDENTIFIER.to_be_bytes());
    packet[6..8].copy_from_slice(&(seq as u16).to_be_bytes());
    packet[8..16].copy_from_slice(&TOKEN.to_be_bytes());
    packet[16..20].copy_from_slice(&seq.to_be_bytes());
    let sum = checksum(&packet);
    packet[2..4].copy_from_slice(&sum.to_be_bytes());
    packet
}

fn target(i: u32) -> libc::sockaddr_in {
    // SAFETY: sockaddr_in is plain old data.
    let mut address: libc::sockaddr_in = unsafe { std::mem::zeroed() };
    address.sin_family = libc::AF_INET as libc::sa_family_t;
    address.sin_addr.s_addr = u32::from_be_bytes([127, 30, (i >> 8) as u8, i as u8]).to_be();
    address
}

/// Counts replies that are ours (identifier + token), reading with recv or recvmmsg.
fn receive(fd: libc::c_int, variant: Variant, stop: &AtomicBool, ours: &AtomicU64) {
    let batch = variant.recv_batch;
    let mut buffers = vec![[0u8; 256]; batch];
    let mut controls = vec![[0u64; 8]; batch];
    let mut iovecs: Vec<libc::iovec> = buffers
        .iter_mut()
        .map(|buffer| libc::iovec {
            iov_base: buffer.as_mut_ptr().cast(),
            iov_len: 256,
        })
        .collect();
    let mut headers: Vec<libc::mmsghdr> = iovecs
        .iter_mut()
        .zip(&mut controls)
        .map(|(iovec, control)| {
            // SAFETY: mmsghdr is plain old data.
            let mut header: libc::mmsghdr = unsafe { std::mem::zeroed() };
            header.msg_hdr.msg_iov = iovec;
            header.msg_hdr.msg_iovlen = 1;
            header.msg_hdr.msg_control = control.as_mut_ptr().cast();
            header
        })
        .collect();
    while !stop.load(Ordering::Relaxed) {
        let count = if batch == 1 && !variant.timestamps {
            // SAFETY: buffers[0] is 256 writable bytes.
            let len = unsafe { libc::recv(fd, buffers[0].as_mut_ptr().cast(), 256, 0) };
            if len < 0 {
                continue;
            }
            headers[0].msg_len = len as u32;
            1
        } else {
            for header in &mut headers {
                header.msg_hdr.msg_controllen = 64;
            }
            // SAFETY: every header points at its own live buffers.
            let count = unsafe {
                libc::recvmmsg(
                    fd,
                    headers.as_mut_ptr(),
                    batch as u32,
                    libc::MSG_WAITFORONE,
                    std::ptr::null_mut(),
                )
            };
            if count < 0 {
                continue;
            }
            count as usize
        };
        let _now = Instant::now();
        for (header, buffer) in headers.iter().zip(&buffers).take(count) {
            let packet = &buffer[..header.msg_len as usize];
            let icmp = &packet[usize::from(packet[0] & 0xf) * 4..];
            if icmp.len() >= LEN
                && icmp[0] == 0
                && icmp[4..6] == IDENTIFIER.to_be_bytes()
                && icmp[8..16] == TOKEN.to_be_bytes()
            {
                ours.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

/// Sends `pings` requests, waits for the replies; returns (CPU µs per ping, replies received).
/// (process CPU µs per ping, machine CPU µs per ping, replies received)
fn measure(variant: Variant, pings: u32, rate: u32, idle: &Machine) -> (f64, f64, u64) {
    let fd = open_socket(variant);
    let stop = Arc::new(AtomicBool::new(false));
    let ours = Arc::new(AtomicU64::new(0));
    let receiver = {
        let (stop, ours) = (Arc::clone(&stop), Arc::clone(&ours));
        std::thread::spawn(move || receive(fd, variant, &stop, &ours))
    };
    let before = cpu_micros();
    let span = Span::start();
    let start = Instant::now();
    let burst = variant.send_batch as u32;
    let mut packets = vec![[0u8; LEN]; variant.send_batch];
    let mut addresses = vec![target(0); variant.send_batch];
    let mut iovecs: Vec<libc::iovec> = Vec::with_capacity(variant.send_batch);
    let mut headers: Vec<libc::mmsghdr> = Vec::with_capacity(variant.send_batch);
    let mut sent = 0u32;
    while sent < pings {
        let at = start + Duration::from_secs_f64(f64::from(sent) / f64::from(rate));
        if let Some(wait) = at.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        let n = burst.min(pings - sent) as usize;
        if burst == 1 {
            let packet = request(sent);
            let address = target(sent);
            // SAFETY: a live packet and address of the sizes passed.
            let rc = unsafe {
                libc::sendto(
                    fd,
                    packet.as_ptr().cast(),
                    LEN,
                    0,
                    (&raw const address).cast(),
                    std::mem::size_of::<libc::sockaddr_in>() as u32,
                )
            };
            check(rc as libc::c_int, "sendto");
        } else {
            iovecs.clear();
            headers.clear();
            for i in 0..n {
                packets[i] = request(sent + i as u32);
                addresses[i] = target(sent + i as u32);
            }
            for packet in packets.iter_mut().take(n) {
                iovecs.push(libc::iovec {
                    iov_base: packet.as_mut_ptr().cast(),
                    iov_len: LEN,
                });
            }
            for (iovec, address) in iovecs.iter_mut().zip(&mut addresses) {
                // SAFETY: mmsghdr is plain old data.
                let mut header: libc::mmsghdr = unsafe { std::mem::zeroed() };
                header.msg_hdr.msg_name = (address as *mut libc::sockaddr_in).cast();
                header.msg_hdr.msg_namelen = std::mem::size_of::<libc::sockaddr_in>() as u32;
                header.msg_hdr.msg_iov = iovec;
                header.msg_hdr.msg_iovlen = 1;
                headers.push(header);
            }
            let mut done = 0;
            while done < n {
                // SAFETY: headers point at live packets and addresses.
                let rc = unsafe { libc::sendmmsg(fd, headers.as_mut_ptr().add(done), (n - done) as u32, 0) };
                check(rc, "sendmmsg");
                done += rc as usize;
            }
        }
        sent += n as u32;
    }
    // Wait for the replies (counted, not slept on), at most 5 s.
    let give_up = Instant::now() + Duration::from_secs(5);
    while ours.load(Ordering::Relaxed) < u64::from(pings) && Instant::now() < give_up {
        std::thread::sleep(Duration::from_millis(1));
    }
    let cpu = cpu_micros() - before;
    let machine = idle.beyond_idle(span) * 1e6;
    stop.store(true, Ordering::Relaxed);
    receiver.join().expect("receiver");
    // SAFETY: our own fd, closed once.
    unsafe { libc::close(fd) };
    (
        cpu / f64::from(pings),
        machine / f64::from(pings),
        ours.load(Ordering::Relaxed),
    )
}

fn env_number(name: &str, default: u32) -> u32 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn main() {
    let bench = std::env::args().any(|arg| arg == "--bench");
    let (pings, repeat) = if bench {
        (env_number("FLOOR_PINGS", 30_000), env_number("FLOOR_REPEAT", 5))
    } else {
        (500, 1)
    };
    let rate = env_number("FLOOR_RATE", 50_000);
    let plain = Variant {
        name: "sendto+recv (ICMP_FILTER)",
        bpf: false,
        send_batch: 1,
        recv_batch: 1,
        timestamps: false,
    };
    let bpf = Variant {
        name: "+bpf",
        bpf: true,
        ..plain
    };
    let mmsg = |name, send_batch| Variant {
        name,
        send_batch,
        ..bpf
    };
    let recv = |name, send_batch| Variant {
        name,
        send_batch,
        recv_batch: 64,
        ..bpf
    };
    let stamped = |name, send_batch| Variant {
        name,
        send_batch,
        recv_batch: 64,
        timestamps: true,
        ..bpf
    };
    let variants = [
        plain,
        bpf,
        mmsg("+bpf +sendmmsg 16", 16),
        mmsg("+bpf +sendmmsg 64", 64),
        mmsg("+bpf +sendmmsg 250", 250),
        recv("+bpf +sendmmsg 250 +recvmmsg 64", 250),
        stamped("+bpf +sendmmsg 16 +recvmmsg +timestamps", 16),
        stamped("+bpf +sendmmsg 64 +recvmmsg +timestamps", 64),
        stamped("+bpf +sendmmsg 250 +recvmmsg +timestamps", 250),
    ];
    let idle = Machine::calibrate(if bench { 3 } else { 0 });
    let mut samples: Vec<Vec<f64>> = vec![Vec::new(); variants.len()];
    let mut machine: Vec<Vec<f64>> = vec![Vec::new(); variants.len()];
    for _ in 0..repeat {
        for (k, variant) in variants.iter().enumerate() {
            let (per_ping, machine_per_ping, received) = measure(*variant, pings, rate, &idle);
            assert_eq!(received, u64::from(pings), "{}: replies lost on loopback", variant.name);
            samples[k].push(per_ping);
            machine[k].push(machine_per_ping);
        }
    }
    println!(
        "pings={pings} rate={rate}/s repeat={repeat} idle={:.3} CPU-s/s (median CPU per ping, user+system, process; machine minus idle)",
        idle.idle_rate
    );
    for ((variant, samples), machine) in variants.iter().zip(&mut samples).zip(&mut machine) {
        samples.sort_by(f64::total_cmp);
        machine.sort_by(f64::total_cmp);
        let median = samples[samples.len() / 2];
        println!(
            "{:45} {median:6.2} us/ping  (min {:.2}, max {:.2})  machine {:6.2} us/ping",
            variant.name,
            samples[0],
            samples[samples.len() - 1],
            machine[machine.len() / 2]
        );
    }
}
