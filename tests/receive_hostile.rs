//! The receiver of a real `spoolmon run` against what peers can do to it: every refusal of the
//! access rules with its cause (wrong key, disabled key, an address the pattern denies — sent
//! from 127.0.0.2 —, a disabled machine), and hostile input: oversized and garbage bodies,
//! a slow-loris head, 10,000 connections at once. Each is refused or timed out, and the node
//! keeps measuring and answering.

mod common;

use common::nodes::{last_time, KEY};
use common::{servers::free_tcp_port, wait_for, Base};
use spoolmon::shared::measurement::{OrderId, OrderResult};
use spoolmon::spool::identity::MachineGuid;
use spoolmon::spool::ship::{self, ShipHeader};
use spoolmon::spool::snapshot::{encode_ping, SnapshotName, PING_FILE};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

const DISABLED_KEY: &str = "0b1f4d2e-6a7c-4e8b-9d0f-00000000000d";
const PICKY_KEY: &str = "0b1f4d2e-6a7c-4e8b-9d0f-00000000000e";
const DISABLED_MACHINE: &str = "5f0c3a52-9d1e-4a4b-8f7e-2c1d0b9a8e7f";

/// A TCP connection to the receiver from `source` (a loopback address).
fn connect_from(source: [u8; 4], port: u16) -> TcpStream {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    socket.bind(&SocketAddr::from((source, 0)).into()).unwrap();
    socket
        .connect_timeout(&SocketAddr::from(([127, 0, 0, 1], port)).into(), Duration::from_secs(5))
        .unwrap();
    let stream: TcpStream = socket.into();
    stream.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    stream
}

/// Sends `head` and `body` on `stream`, returns (status, body of the answer); 0 when the
/// connection closed without an answer.
fn exchange(mut stream: TcpStream, head: &str, body: &[u8]) -> (u16, String) {
    let _ = stream.write_all(head.as_bytes());
    let _ = stream.write_all(body);
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    let answer = String::from_utf8_lossy(&answer).into_owned();
    let (head, body) = answer.split_once("\r\n\r\n").unwrap_or((&answer, ""));
    (
        head.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0),
        body.to_string(),
    )
}

fn post_from(source: [u8; 4], port: u16, key: &str, body: &[u8]) -> (u16, String) {
    let head = format!(
        "POST {} HTTP/1.1\r\nHost: parent\r\nConnection: close\r\nAuthorization: Bearer {key}\r\nContent-Length: {}\r\n\r\n",
        spoolmon::receive::server::PATH,
        body.len()
    );
    exchange(connect_from(source, port), &head, body)
}

/// One frame of one result from machine `origin`.
fn frame(origin: MachineGuid, sequence: u64) -> Vec<u8> {
    let now = common::unix_now();
    let time = now - now % 20 - 40;
    let results = [OrderResult::builder(OrderId::new("lan/a").unwrap(), time)
        .step(20)
        .rtts([Some(0.001)])
        .build()];
    let header = ShipHeader {
        origin,
        origin_node: "prober".into(),
        chain: vec![origin],
        stream: uuid::Uuid::new_v4(),
        sequence,
        snapshot: SnapshotName::new(time, "ping", sequence),
    };
    let mut body = Vec::new();
    ship::encode(&header, &[(PING_FILE, &encode_ping("b", &results))], &mut body);
    body
}

fn start_parent(extra: &str) -> (Base, u16, common::Daemon) {
    let parent = Base::new();
    let port = free_tcp_port();
    parent.write_order("lan/self", &common::ping_order("127.0.9.1", 1, 1));
    let daemon = parent.start(&format!(
        "self-metrics:\n  interval: 1\nreceive:\n  listen: [\"127.0.0.1:{port}\"]\n  api-keys:\n    {KEY}: {{allow-from: \"127.0.0.*\"}}\n    {DISABLED_KEY}: {{enabled: false}}\n    {PICKY_KEY}: {{allow-from: \"!127.0.0.2 127.*\"}}\n  machines:\n    {DISABLED_MACHINE}: {{enabled: false}}\n{extra}"
    ));
    wait_for("the parent to listen", Duration::from_secs(30), Some(&daemon), || {
        TcpStream::connect(("127.0.0.1", port)).is_ok()
    });
    (parent, port, daemon)
}

#[test]
fn every_refusal_of_the_access_rules_says_its_cause() {
    common::require_root("native ICMP to 127.0.0.0/8");
    let (parent, port, daemon) = start_parent("");
    let good = MachineGuid::random();
    let (status, body) = post_from([127, 0, 0, 1], port, KEY, &frame(good, 1));
    assert_eq!((status, body.contains("\"stored\"")), (200, true), "{body}");
    let cases: [(&str, [u8; 4], u16, &str); 4] = [
        (
            "0b1f4d2e-6a7c-4e8b-9d0f-0000000000ff",
            [127, 0, 0, 1],
            401,
            "unknown API key",
        ),
        (DISABLED_KEY, [127, 0, 0, 1], 403, "the API key is disabled"),
        (
            PICKY_KEY,
            [127, 0, 0, 2],
            403,
            "address 127.0.0.2 is not allowed for this API key",
        ),
        (
            KEY,
            [127, 0, 1, 1],
            403,
            "address 127.0.1.1 is not allowed for this API key",
        ),
    ];
    for (key, source, expected, cause) in cases {
        let (status, body) = post_from(source, port, key, &frame(good, 2));
        assert_eq!(status, expected, "{key} from {source:?}: {body}");
        assert!(body.contains(cause), "{key} from {source:?}: {body}");
    }
    // The picky key from an address its pattern allows is taken.
    let (status, _) = post_from([127, 0, 0, 3], port, PICKY_KEY, &frame(good, 3));
    assert_eq!(status, 200);
    // A disabled machine's frame is refused by itself, with its cause.
    let disabled: MachineGuid = DISABLED_MACHINE.parse().unwrap();
    let (status, body) = post_from([127, 0, 0, 1], port, KEY, &frame(disabled, 1));
    assert_eq!(status, 200, "{body}");
    let answer: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(answer["frames"][0]["result"], "refused", "{body}");
    assert!(
        answer["frames"][0]["reason"].as_str().unwrap().contains("is disabled"),
        "{body}"
    );
    // Each refusal is logged with its cause; the taken ones are applied.
    let log = daemon.log_text();
    for cause in [
        "unknown API key",
        "the API key is disabled",
        "address 127.0.0.2 is not allowed",
    ] {
        assert!(log.contains(cause), "{cause} not logged");
    }
    wait_for("the good frame applied", Duration::from_secs(30), Some(&daemon), || {
        parent.read("output/@prober/lan/a/last_result").is_some()
    });
}

#[test]
fn hostile_peers_are_refused_or_timed_out_and_the_node_keeps_measuring() {
    common::require_root("native ICMP to 127.0.0.0/8 and 10,000 descriptors");
    // Room for 10,000 sockets in this test and in the daemon it starts.
    let (_, hard) = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE).unwrap();
    let wanted = hard.max(12_000);
    nix::sys::resource::setrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE, wanted, wanted).unwrap();
    let (parent, port, daemon) = start_parent("  timeout: 2\n  max-request-bytes: 65536\n  max-connections: 16\n");
    let measured = || last_time(&parent, "output/lan/self/last_result");
    wait_for("the node to measure", Duration::from_secs(30), Some(&daemon), || {
        measured().is_some()
    });
    let head = |length: usize| {
        format!(
            "POST {} HTTP/1.1\r\nHost: p\r\nConnection: close\r\nAuthorization: Bearer {KEY}\r\nContent-Length: {length}\r\n\r\n",
            spoolmon::receive::server::PATH
        )
    };
    // A body larger than max-request-bytes: 413 before it is read.
    let (status, body) = exchange(connect_from([127, 0, 0, 1], port), &head(10 << 20), &[0u8; 1024]);
    assert_eq!(status, 413, "{body}");
    // Garbage instead of frames: 400 with the offset and the cause; garbage instead of HTTP:
    // an error answer or a closed connection, never a hang.
    let (status, body) = exchange(connect_from([127, 0, 0, 1], port), &head(11), b"hello world");
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("not a shipped snapshot"), "{body}");
    let garbage: Vec<u8> = (0..4096u32).map(|i| (i.wrapping_mul(2654435761) >> 24) as u8).collect();
    let (status, _) = exchange(connect_from([127, 0, 0, 1], port), "", &garbage);
    assert!(status == 0 || (400..500).contains(&status), "{status}");
    // A slow loris: half a head, then nothing. The receiver closes it after its timeout.
    let mut slow = connect_from([127, 0, 0, 1], port);
    slow.write_all(b"POST /spoolmon/v1/snapshots HTTP/1.1\r\nHost: p\r\n")
        .unwrap();
    let mut rest = Vec::new();
    let closed = slow.read_to_end(&mut rest);
    assert!(
        closed.is_ok(),
        "the receiver closed the slow connection (not our read timeout): {closed:?}"
    );
    // 10,000 connections at once: at most max-connections are served, the others answered
    // 503 or left in the kernel's backlog; none brings the node down.
    let mut held = Vec::new();
    let (mut connected, mut failed) = (0, 0);
    for _ in 0..10_000 {
        match TcpStream::connect_timeout(&SocketAddr::from(([127, 0, 0, 1], port)), Duration::from_millis(200)) {
            Ok(stream) => {
                connected += 1;
                held.push(stream);
            }
            Err(_) => failed += 1,
        }
    }
    assert_eq!(connected + failed, 10_000);
    let before = measured().unwrap();
    wait_for(
        "the node to measure while 10,000 connections are held",
        Duration::from_secs(30),
        Some(&daemon),
        || measured().is_some_and(|t| t > before + 1),
    );
    drop(held);
    // Afterwards a good request is served (once the refusals have drained).
    let mut answered = 0;
    wait_for(
        "a good request served again",
        Duration::from_secs(30),
        Some(&daemon),
        || {
            answered = post_from([127, 0, 0, 1], port, KEY, &frame(MachineGuid::random(), 1)).0;
            answered == 200
        },
    );
    wait_for(
        "the refused connections counted",
        Duration::from_secs(30),
        Some(&daemon),
        || {
            parent.read("state/metrics.prom").is_some_and(|m| {
                m.lines()
                    .find_map(|l| l.strip_prefix("spoolmon_receive_connections_refused_total "))
                    .and_then(|v| v.trim().parse::<u64>().ok())
                    .is_some_and(|n| n > 0)
            })
        },
    );
    assert!(daemon
        .log_text()
        .contains("refused connection(s) since the last such line: over capacity"));
}
