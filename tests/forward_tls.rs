//! Node to node over TLS, with real processes and certificates made by the openssl command
//! line: a child with a client certificate ships to a parent that asks for one
//! (`receive: {tls: {cert, key, client-ca}}`), so does one with `skip-verify: true` and no CA;
//! a child without a certificate, a child that does not trust
//! the parent's CA, and a plain-HTTP peer on the TLS port are refused, each with its cause, and
//! the children keep their backlog.

mod common;

use common::nodes::{outbox_lines, KEY};
use common::tls::{ca, signed};
use common::{servers::free_tcp_port, wait_for, Base};
use std::io::{Read, Write};
use std::time::Duration;

fn child_config(node: &str, port: u16, tls: &str) -> String {
    format!(
        "rescan-interval: 2\nnode-name: {node}\nsinks:\n  up:\n    type: forward\n    destinations: [\"https://127.0.0.1:{port}\"]\n    api-key: {KEY}\n    timeout: 2\n    tls: {tls}\n"
    )
}

#[test]
fn a_child_ships_over_mutual_tls_and_peers_without_a_certificate_or_trust_or_tls_are_refused() {
    common::require_root("native ICMP to 127.0.0.0/8");
    let pki = tempfile::tempdir().unwrap();
    let dir = pki.path();
    let ca_pem = ca(dir, "net");
    let other_ca = ca(dir, "other");
    let (server_pem, server_key) = signed(
        dir,
        "net",
        "parent",
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n",
    );
    let (client_pem, client_key) = signed(
        dir,
        "net",
        "prober",
        "basicConstraints=CA:FALSE\nextendedKeyUsage=clientAuth\n",
    );
    let parent = Base::new();
    let port = free_tcp_port();
    parent.write_config(&format!(
        "self-metrics:\n  interval: 1\nreceive:\n  listen: [\"127.0.0.1:{port}\"]\n  api-keys:\n    {KEY}: {{allow-from: \"127.0.0.1\"}}\n  timeout: 3\n  tls:\n    cert: {}\n    key: {}\n    client-ca: {}\n",
        server_pem.display(),
        server_key.display(),
        ca_pem.display()
    ));
    let parent_process = parent.spawn(&["--log-level", "debug"], "process");
    wait_for(
        "the parent to listen",
        Duration::from_secs(30),
        Some(&parent_process),
        || std::net::TcpStream::connect(("127.0.0.1", port)).is_ok(),
    );
    let start_child = |node: &str, target: &str, tls: String| {
        let child = Base::new();
        child.write_order("lan/t1", &common::ping_order(target, 1, 1));
        let process = child.start(&child_config(node, port, &tls));
        (child, process)
    };
    let (_good, good_process) = start_child(
        "good",
        "127.0.9.1",
        format!(
            "{{ca: {}, cert: {}, key: {}}}",
            ca_pem.display(),
            client_pem.display(),
            client_key.display()
        ),
    );
    let (anonymous, anonymous_process) = start_child("anonymous", "127.0.9.2", format!("{{ca: {}}}", ca_pem.display()));
    // Verification off (a test network): the parent's certificate is taken unchecked.
    let (_skipping, skipping_process) = start_child(
        "skipping",
        "127.0.9.4",
        format!(
            "{{skip-verify: true, cert: {}, key: {}}}",
            client_pem.display(),
            client_key.display()
        ),
    );
    let (distrusting, distrusting_process) = start_child(
        "distrusting",
        "127.0.9.3",
        format!(
            "{{ca: {}, cert: {}, key: {}}}",
            other_ca.display(),
            client_pem.display(),
            client_key.display()
        ),
    );
    wait_for(
        "the good child's results at the parent",
        Duration::from_secs(60),
        Some(&good_process),
        || parent.read("output/@good/lan/t1/last_result").is_some(),
    );
    wait_for(
        "the results of the child that does not verify",
        Duration::from_secs(60),
        Some(&skipping_process),
        || parent.read("output/@skipping/lan/t1/last_result").is_some(),
    );
    // A peer that speaks plain HTTP to the TLS port gets no HTTP answer.
    let mut plain = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    plain.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    plain
        .write_all(format!("POST /spoolmon/v1/snapshots HTTP/1.1\r\nHost: p\r\nAuthorization: Bearer {KEY}\r\nContent-Length: 0\r\n\r\n").as_bytes())
        .unwrap();
    let mut answer = Vec::new();
    let _ = plain.read_to_end(&mut answer);
    assert!(!answer.starts_with(b"HTTP/"), "{:?}", String::from_utf8_lossy(&answer));
    // The child without a certificate: refused in the handshake, counted, backlog kept.
    wait_for(
        "the refused handshakes counted",
        Duration::from_secs(30),
        Some(&parent_process),
        || {
            parent.read("state/metrics-process.prom").is_some_and(|m| {
                m.lines()
                    .find_map(|l| l.strip_prefix("spoolmon_receive_tls_failures_total "))
                    .and_then(|v| v.trim().parse::<u64>().ok())
                    .is_some_and(|n| n >= 3)
            })
        },
    );
    wait_for(
        "the refused children to keep their backlog",
        Duration::from_secs(30),
        None,
        || {
            outbox_lines(&anonymous, "up").is_some_and(|n| n >= 2)
                && outbox_lines(&distrusting, "up").is_some_and(|n| n >= 2)
        },
    );
    // The child that does not trust the parent's CA says so.
    wait_for(
        "the distrusting child's cause in its log",
        Duration::from_secs(30),
        Some(&distrusting_process),
        || {
            let log = distrusting_process.log_text().to_lowercase();
            log.contains("unknownissuer") || log.contains("unknown issuer")
        },
    );
    assert!(parent.read("output/@anonymous/lan/t1/last_result").is_none());
    assert!(parent.read("output/@distrusting/lan/t1/last_result").is_none());
    // The parent logs why it refused the child without a certificate (in TLS 1.3 the child
    // may see only the closed connection: it learns of the refusal after its handshake ended).
    wait_for(
        "the parent's cause in its log",
        Duration::from_secs(30),
        Some(&parent_process),
        || {
            parent_process
                .log_text()
                .contains("TLS handshake failed: peer sent no certificates")
        },
    );
    assert!(anonymous_process
        .log_text()
        .contains("delivery failed: https://127.0.0.1:"));
}
