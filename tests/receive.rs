//! The receiver in real processes: `spoolmon process` / `spoolmon run` with a `receive:` section
//! take shipped snapshots over a real socket, store them before answering, and processing writes
//! them under `output/@<node>/`. A kill -9 right after an answer loses nothing, and the sender's
//! replay (it never saw the answer) is acknowledged without a second RRD step.
//!
//! The first tests send frames themselves, written with spoolmon's own encoder
//! (`spoolmon::spool::ship`); the later ones run whole nodes: a child's `forward` sink into a
//! parent, a chain child → proxy → parent with the proxy killed -9 and the parent's Graphite
//! sink (a real carbon-cache) naming the child, and a loop A → B → A refused by A.

mod common;

use common::nodes::{
    assert_no_gap, child_with_orders, config, last_time, listening, measured_rows, outbox_lines, rrd_rows,
    spawn_receiver, wait_steps, KEY,
};
use common::{servers::free_tcp_port, wait_for, Base};
use spoolmon::shared::measurement::{OrderId, OrderResult};
use spoolmon::spool::identity::MachineGuid;
use spoolmon::spool::ship::{self, ShipHeader};
use spoolmon::spool::snapshot::{encode_ping, SnapshotName, PING_FILE};
use std::io::{Read, Write};
use std::time::Duration;

/// A child's config forwarding to the receiver on `port` as node `node` with `key`.
fn forward_config(node: &str, port: u16, key: &str) -> String {
    format!(
        "rescan-interval: 2\nnode-name: {node}\nsinks:\n  up:\n    type: forward\n    destinations: [\"http://127.0.0.1:{port}\"]\n    api-key: {key}\n    timeout: 2\n"
    )
}

/// POSTs `body` with the key, returns (status, body of the answer).
fn post(port: u16, key: &str, body: &[u8]) -> (u16, String) {
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    let head = format!(
        "POST {} HTTP/1.1\r\nHost: parent\r\nConnection: close\r\nAuthorization: Bearer {key}\r\nContent-Length: {}\r\n\r\n",
        spoolmon::receive::server::PATH,
        body.len()
    );
    stream.write_all(head.as_bytes()).unwrap();
    stream.write_all(body).unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    let (head, body) = answer.split_once("\r\n\r\n").unwrap_or((&answer, ""));
    (
        head.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0),
        body.to_string(),
    )
}

/// Steps of the child's two orders, `steps` of them from `t0`, one frame per step.
fn frames(child: MachineGuid, stream: uuid::Uuid, t0: i64, first_seq: u64, steps: u64) -> Vec<u8> {
    let mut body = Vec::new();
    for i in 0..steps {
        let time = t0 + 20 * i as i64;
        let results: Vec<OrderResult> = ["bench/a", "bench/b"]
            .iter()
            .map(|id| {
                OrderResult::builder(OrderId::new(*id).unwrap(), time)
                    .updated(time + 3)
                    .step(20)
                    .rtts([Some(0.001), Some(0.002), None])
                    .build()
            })
            .collect();
        let header = ShipHeader {
            origin: child,
            origin_node: "child-1".into(),
            chain: vec![child],
            stream,
            sequence: first_seq + i,
            snapshot: SnapshotName::new(time, "ping", first_seq + i),
        };
        ship::encode(&header, &[(PING_FILE, &encode_ping("b", &results))], &mut body);
    }
    body
}

#[test]
fn process_receives_stores_before_answering_and_a_replay_after_kill_9_is_not_applied_twice() {
    let base = Base::new();
    let port = free_tcp_port();
    base.write_config(&config(port));
    let daemon = spawn_receiver(&base, port);
    let (child, stream) = (MachineGuid::random(), uuid::Uuid::new_v4());
    let now = common::unix_now();
    let t0 = now - now % 20 - 20 * 10;
    let body = frames(child, stream, t0, 1, 5);
    let (status, answer) = post(port, KEY, &body);
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer.matches("\"stored\"").count(), 5, "{answer}");
    // Answered: durable. Kill -9 at once, before processing may have seen them.
    daemon.kill9();
    let daemon = spawn_receiver(&base, port);
    // The sender never saw the answer (say): it sends the same frames again.
    let (status, answer) = post(port, KEY, &body);
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer.matches("\"repeat\"").count(), 5, "{answer}");
    let last = "output/@child-1/bench/a/last_result";
    wait_for(
        "the child's newest step in last_result",
        Duration::from_secs(60),
        Some(&daemon),
        || {
            base.read(last)
                .is_some_and(|text| text.contains(&format!("time: {}\n", t0 + 80)))
        },
    );
    wait_for(
        "every received snapshot processed",
        Duration::from_secs(60),
        Some(&daemon),
        || base.count("incoming") == 0,
    );
    // Every step once in the child's RRD (its update time is the end of the step), none
    // twice: librrd would have refused a repeated time, and the rows hold the values sent
    // (loss 1 of 3, median 2 ms).
    let rrd = base.join("output/@child-1/bench/b/main.rrd");
    let rows = rrd_rows(&rrd, 20, t0, t0 + 100);
    let known = measured_rows(&rows);
    assert_eq!(
        known,
        (1..=5).map(|i| t0 + 20 * i).collect::<Vec<_>>(),
        "{rows:?}\n{}",
        daemon.log_text()
    );
    assert!(
        rows.iter()
            .take(5)
            .all(|(_, v)| v.starts_with("1.0000000000e+00 2.0000000000e-03")),
        "{rows:?}"
    );
    assert_eq!(base.count("failed"), 0, "nothing quarantined: {}", daemon.log_text());
    // Newer frames are taken after the restart.
    let (status, answer) = post(port, KEY, &frames(child, stream, t0 + 100, 6, 1));
    assert_eq!(status, 200, "{answer}");
    assert!(answer.contains("\"stored\""), "{answer}");
}

#[test]
fn run_listens_too_and_refuses_a_wrong_key_with_its_cause() {
    let base = Base::new();
    let port = free_tcp_port();
    let daemon = base.start(&config(port));
    wait_for(
        "spoolmon run's receiver to listen",
        Duration::from_secs(30),
        Some(&daemon),
        || listening(port),
    );
    let child = MachineGuid::random();
    let now = common::unix_now();
    let body = frames(child, uuid::Uuid::new_v4(), now - now % 20 - 40, 1, 1);
    let (status, answer) = post(port, "0b1f4d2e-6a7c-4e8b-9d0f-000000000000", &body);
    assert_eq!(status, 401, "{answer}");
    assert!(answer.contains("unknown API key"), "{answer}");
    let (status, answer) = post(port, KEY, &body);
    assert_eq!(status, 200, "{answer}");
    wait_for(
        "the child's order written under its node",
        Duration::from_secs(60),
        Some(&daemon),
        || base.read("output/@child-1/bench/a/last_result").is_some(),
    );
    // An order file named like another node's is refused with the reason, not measured.
    base.write_order("@child-1/x", &common::ping_order("127.0.0.1", 20, 1));
    wait_for(
        "the reserved name refused",
        Duration::from_secs(30),
        Some(&daemon),
        || {
            daemon
                .log_text()
                .contains("reserved for the orders of other spoolmon nodes")
        },
    );
}

#[test]
fn a_receive_section_that_cannot_listen_stops_the_start_with_the_address() {
    let base = Base::new();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    base.write_config(&config(port));
    let daemon = base.spawn(&[], "process");
    let status = daemon.wait_exit(Duration::from_secs(30)).expect("it exits");
    assert!(!status.success());
    let log = std::fs::read_to_string(base.join("process.log")).unwrap();
    assert!(log.contains(&format!("cannot listen on 127.0.0.1:{port}")), "{log}");
}

#[test]
fn a_child_forwards_to_its_parent_and_its_backlog_fills_the_gap_after_the_parent_was_killed() {
    common::require_root("native ICMP to 127.0.0.0/8");
    let parent = Base::new();
    let port = free_tcp_port();
    parent.write_config(&config(port));
    let mut parent_process = spawn_receiver(&parent, port);
    let child = child_with_orders(3);
    let child_process = child.start(&forward_config("child-a", port, KEY));
    let remote = "output/@child-a/lan/t1/last_result";
    wait_for(
        "the child's results at the parent",
        Duration::from_secs(60),
        Some(&parent_process),
        || (1..=3).all(|i| parent.read(&format!("output/@child-a/lan/t{i}/last_result")).is_some()),
    );
    // The parent dies (kill -9) while the child keeps measuring.
    let before = last_time(&parent, remote).unwrap();
    parent_process.kill9();
    wait_steps(&child, 5, &child_process);
    let down_until = last_time(&child, "output/lan/t1/last_result").unwrap();
    parent_process = parent.spawn(&["--log-level", "debug"], "process");
    wait_for(
        "the backlog to arrive",
        Duration::from_secs(60),
        Some(&parent_process),
        || last_time(&parent, remote).is_some_and(|t| t > down_until),
    );
    // No gap: every step the child measured while the parent was down is in the parent's RRD.
    assert_no_gap(&parent.join("output/@child-a/lan/t1/main.rrd"), before, down_until);
    drop(child_process);
}

#[test]
fn a_child_with_a_wrong_key_keeps_its_backlog_and_delivers_it_once_the_key_is_fixed() {
    let parent = Base::new();
    let port = free_tcp_port();
    parent.write_config(&config(port));
    let parent_process = spawn_receiver(&parent, port);
    let child = Base::new();
    child.write_order("lan/t1", &common::ping_order("127.0.0.1", 1, 1));
    let wrong = child.start(&forward_config("child-b", port, "0b1f4d2e-6a7c-4e8b-9d0f-000000000000"));
    wait_for(
        "the parent to refuse the wrong key",
        Duration::from_secs(60),
        Some(&wrong),
        || parent_process.log_text().contains("unknown API key"),
    );
    wait_for(
        "the child to log the cause",
        Duration::from_secs(60),
        Some(&wrong),
        || wrong.log_text().contains("unknown API key"),
    );
    let first = last_time(&child, "output/lan/t1/last_result").unwrap();
    drop(wrong);
    assert!(parent.read("output/@child-b/lan/t1/last_result").is_none());
    // Fixed: the backlog measured under the wrong key arrives, oldest first.
    let fixed = child.start(&forward_config("child-b", port, KEY));
    wait_for(
        "the backlog at the parent",
        Duration::from_secs(60),
        Some(&fixed),
        || parent.read("output/@child-b/lan/t1/last_result").is_some(),
    );
    let rrd = parent.join("output/@child-b/lan/t1/main.rrd");
    let rows = rrd_rows(&rrd, 1, first - 5, first + 1);
    assert!(
        measured_rows(&rows).contains(&(first + 1)),
        "step {first} of the backlog: {rows:?}"
    );
}

#[test]
fn the_receivers_counters_and_last_error_are_in_the_metrics_and_the_status() {
    let base = Base::new();
    let port = free_tcp_port();
    base.write_config(&format!("{}self-metrics:\n  interval: 1\n", config(port)));
    let daemon = spawn_receiver(&base, port);
    let child = MachineGuid::random();
    let now = common::unix_now();
    let body = frames(child, uuid::Uuid::new_v4(), now - now % 20 - 40, 1, 2);
    assert_eq!(post(port, "0b1f4d2e-6a7c-4e8b-9d0f-000000000000", &body).0, 401);
    assert_eq!(post(port, KEY, &body).0, 200);
    assert_eq!(post(port, KEY, &body).0, 200);
    wait_for(
        "the receiver's counters in the metrics file",
        Duration::from_secs(30),
        Some(&daemon),
        || {
            base.read("state/metrics-process.prom").is_some_and(|m| {
                m.contains("spoolmon_receive_requests_total 3")
                    && m.contains("spoolmon_receive_requests_refused_total 1")
                    && m.contains("spoolmon_receive_frames_total{result=\"stored\"} 2")
                    && m.contains("spoolmon_receive_frames_total{result=\"repeat\"} 2")
            })
        },
    );
    // The refusal was followed by requests taken whole: no last error left for "receive".
    let receive_error = || {
        let status: serde_json::Value = serde_json::from_str(&base.read("state/status-process.json")?).ok()?;
        status["last_errors"]
            .as_array()?
            .iter()
            .find(|e| e["source"] == "receive")
            .and_then(|e| e["message"].as_str().map(str::to_owned))
    };
    assert_eq!(receive_error(), None);
    assert_eq!(post(port, "0b1f4d2e-6a7c-4e8b-9d0f-000000000000", &body).0, 401);
    wait_for(
        "the refusal as the receiver's last error",
        Duration::from_secs(30),
        Some(&daemon),
        || receive_error().is_some_and(|m| m.contains("unknown API key")),
    );
}

/// The receiving node's config forwarding on to `port` as node `node`.
fn proxy_config(listen: u16, node: &str, port: u16, extra: &str) -> String {
    format!("{}{}{extra}", config(listen), forward_config(node, port, KEY))
}

#[test]
fn a_chain_child_proxy_parent_delivers_every_step_through_a_proxy_killed_9_and_the_parents_graphite_names_the_child() {
    common::require_root("native ICMP to 127.0.0.0/8");
    let carbon = common::servers::Carbon::start();
    let parent = Base::new();
    let parent_port = free_tcp_port();
    parent.write_config(&format!(
        "{}node-name: parent\nsinks:\n  carbon:\n    type: graphite\n    server: 127.0.0.1\n    port: {}\n    namespace: net\n",
        config(parent_port),
        carbon.line_port
    ));
    let parent_process = spawn_receiver(&parent, parent_port);
    // A pure proxy: it keeps nothing of what it passes on.
    let proxy = Base::new();
    let proxy_port = free_tcp_port();
    proxy.write_config(&proxy_config(
        proxy_port,
        "proxy",
        parent_port,
        "    keep-local: false\n",
    ));
    let mut proxy_process = spawn_receiver(&proxy, proxy_port);
    let child = child_with_orders(3);
    let child_process = child.start(&forward_config("child-c", proxy_port, KEY));
    let remote = "output/@child-c/lan/t1/last_result";
    wait_for(
        "the child's results at the parent, through the proxy",
        Duration::from_secs(60),
        Some(&parent_process),
        || (1..=3).all(|i| parent.read(&format!("output/@child-c/lan/t{i}/last_result")).is_some()),
    );
    // The proxy is killed -9 while the child keeps measuring, then comes back.
    let before = last_time(&parent, remote).unwrap();
    proxy_process.kill9();
    wait_steps(&child, 5, &child_process);
    let down_until = last_time(&child, "output/lan/t1/last_result").unwrap();
    proxy_process = spawn_receiver(&proxy, proxy_port);
    wait_for(
        "the backlog to arrive through the proxy",
        Duration::from_secs(60),
        Some(&proxy_process),
        || last_time(&parent, remote).is_some_and(|t| t > down_until),
    );
    assert_no_gap(&parent.join("output/@child-c/lan/t1/main.rrd"), before, down_until);
    // The proxy wrote nothing of the child's, and the parent knows the proxy as the sender
    // (its high-water marks are per sender) and the child as the origin (its paths).
    assert!(!proxy.join("output/@child-c").exists());
    let proxy_guid = proxy.read("state/machine-guid").unwrap();
    let marks: Vec<String> = std::fs::read_dir(parent.join("state/receive"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        !marks.is_empty() && marks.iter().all(|m| m.starts_with(proxy_guid.trim())),
        "{marks:?} vs proxy {proxy_guid}"
    );
    // The parent's Graphite sink names the child in place of the host.
    let text = parent.read(remote).unwrap();
    let time: i64 = common::field(&text, "time").parse().unwrap();
    let loss: f64 = common::field(&text, "loss").parse().unwrap();
    carbon.wait_for_point("net.child-c.ping.lan.t1.loss", time, loss);
    drop(child_process);
}

#[test]
fn a_loop_a_to_b_to_a_is_refused_with_its_cause_and_a_keeps_measuring() {
    common::require_root("native ICMP to 127.0.0.0/8");
    let (a, b) = (Base::new(), Base::new());
    let (a_port, b_port) = (free_tcp_port(), free_tcp_port());
    a.write_order("lan/t1", &common::ping_order("127.0.9.1", 1, 1));
    let a_process = a.start(&proxy_config(a_port, "node-a", b_port, ""));
    b.write_config(&proxy_config(b_port, "node-b", a_port, ""));
    let b_process = spawn_receiver(&b, b_port);
    wait_for("A's results at B", Duration::from_secs(60), Some(&b_process), || {
        b.read("output/@node-a/lan/t1/last_result").is_some()
    });
    // B passes them on to A, which sees its own GUID in the chain.
    let a_guid = a.read("state/machine-guid").unwrap();
    let cause = format!("loop: a snapshot of machine {} came back to this node", a_guid.trim());
    wait_for(
        "B to log A's refusal",
        Duration::from_secs(60),
        Some(&b_process),
        || b_process.log_text().contains(&cause),
    );
    wait_for(
        "A to count the refusal",
        Duration::from_secs(60),
        Some(&a_process),
        || {
            a.read("state/metrics.prom").is_some_and(|m| {
                m.contains("spoolmon_receive_frames_total{result=\"refused\"}")
                    && !m.contains("spoolmon_receive_frames_total{result=\"refused\"} 0")
            })
        },
    );
    assert!(
        !a.join("output/@node-a").exists(),
        "A never stored its own results back"
    );
    let before = a.result_time("lan/t1").unwrap();
    wait_for("A to keep measuring", Duration::from_secs(30), Some(&a_process), || {
        a.result_time("lan/t1").is_some_and(|t| t > before + 2)
    });
    // B's outbox is not stuck on the refused frames: they count as delivered, none rejected.
    wait_for(
        "B's outbox to move on",
        Duration::from_secs(30),
        Some(&b_process),
        || outbox_counts(&b, "up").is_some_and(|(delivered, rejected)| delivered >= 3 && rejected == 0),
    );
}

/// (delivered, rejected) lines of `sink`'s outbox on `base`, as `spoolmon outbox --json`
/// reports them.
fn outbox_counts(base: &Base, sink: &str) -> Option<(u64, u64)> {
    let backlog = common::nodes::outbox_entry(base, sink)?;
    Some((
        backlog["delivered_lines"].as_u64()?,
        backlog["rejected_lines"].as_u64()?,
    ))
}

/// A child's config forwarding in `mode: hash` to receivers on `ports`, with `extra` keys.
fn ring_config(node: &str, ports: &[u16], extra: &str) -> String {
    let destinations: Vec<String> = ports.iter().map(|p| format!("\"http://127.0.0.1:{p}\"")).collect();
    format!(
        "rescan-interval: 2\nnode-name: {node}\nsinks:\n  up:\n    type: forward\n    mode: hash\n    destinations: [{}]\n    api-key: {KEY}\n    timeout: 2\n{extra}",
        destinations.join(", ")
    )
}

/// Which of `ports` owns order `id` of `node`, by spoolmon's ring.
fn ring_owner(node: &str, id: &str, ports: &[u16]) -> usize {
    let identities: Vec<String> = ports.iter().map(|p| format!("127.0.0.1:{p}")).collect();
    let ring = spoolmon::sink::ring::Ring::new(&identities);
    let mut key = Vec::new();
    spoolmon::sink::ring::result_key(node, id, &mut key);
    ring.owner(&key).unwrap()
}

#[test]
fn a_ring_over_3_parents_sends_each_order_to_its_owner_and_a_killed_parents_share_waits_for_it() {
    common::require_root("native ICMP to 127.0.0.0/8");
    let ports: Vec<u16> = (0..3).map(|_| free_tcp_port()).collect();
    let parents: Vec<Base> = (0..3).map(|_| Base::new()).collect();
    let mut processes: Vec<Option<common::Daemon>> = parents
        .iter()
        .zip(&ports)
        .map(|(parent, &port)| {
            parent.write_config(&config(port));
            Some(spawn_receiver(parent, port))
        })
        .collect();
    let child = Base::new();
    let orders: Vec<String> = (1..=12).map(|i| format!("lan/t{i}")).collect();
    for (i, id) in orders.iter().enumerate() {
        child.write_order(id, &common::ping_order(&format!("127.0.9.{}", i + 1), 1, 1));
    }
    let owners: Vec<usize> = orders.iter().map(|id| ring_owner("child-h", id, &ports)).collect();
    let child_process = child.start(&ring_config("child-h", &ports, ""));
    let at = |parent: usize, id: &str| last_time(&parents[parent], &format!("output/@child-h/{id}/last_result"));
    wait_for(
        "every order at its owner",
        Duration::from_secs(60),
        Some(&child_process),
        || orders.iter().zip(&owners).all(|(id, &owner)| at(owner, id).is_some()),
    );
    // Each order at its owner only (every owner has had its results for a while now).
    for (id, &owner) in orders.iter().zip(&owners) {
        for other in (0..3).filter(|&p| p != owner) {
            assert!(at(other, id).is_none(), "{id} (owner {owner}) also at parent {other}");
        }
    }
    // The parent owning the most orders is killed -9; the others are unaffected.
    let down = (0..3)
        .max_by_key(|&p| owners.iter().filter(|&&o| o == p).count())
        .unwrap();
    let down_orders: Vec<&String> = orders
        .iter()
        .zip(&owners)
        .filter(|(_, &o)| o == down)
        .map(|(id, _)| id)
        .collect();
    let up_orders: Vec<(&String, usize)> = orders
        .iter()
        .zip(&owners)
        .filter(|(_, &o)| o != down)
        .map(|(id, &o)| (id, o))
        .collect();
    assert!(!down_orders.is_empty() && !up_orders.is_empty(), "{owners:?}");
    let before = at(down, down_orders[0]).unwrap();
    processes[down].take().unwrap().kill9();
    let local = format!("output/{}/last_result", down_orders[0]);
    let down_from = last_time(&child, &local).unwrap();
    wait_for(
        "the other parents to keep receiving",
        Duration::from_secs(60),
        Some(&child_process),
        || {
            up_orders
                .iter()
                .all(|(id, owner)| at(*owner, id).is_some_and(|t| t >= down_from + 5))
        },
    );
    let down_until = last_time(&child, &local).unwrap();
    let lane = format!("up@127.0.0.1_{}", ports[down]);
    let waiting = outbox_lines(&child, &lane).unwrap();
    assert!(waiting > 0, "the down parent's share waits in {lane}");
    assert!(
        at(down, down_orders[0]).unwrap() < down_from + 2,
        "nothing reached the killed parent"
    );
    let restarted = spawn_receiver(&parents[down], ports[down]);
    wait_for(
        "the waiting share to arrive",
        Duration::from_secs(60),
        Some(&restarted),
        || {
            down_orders
                .iter()
                .all(|id| at(down, id).is_some_and(|t| t > down_until))
        },
    );
    let rrd = parents[down].join(&format!("output/@child-h/{}/main.rrd", down_orders[0]));
    let rows = rrd_rows(&rrd, 1, before, down_until + 1);
    let measured = measured_rows(&rows);
    for step in (before + 1)..=down_until {
        assert!(
            measured.contains(&(step + 1)),
            "step {step} missing at the owner: {rows:?}"
        );
    }
    drop(child_process);
}

#[test]
fn after_the_handoff_timeout_a_down_destinations_share_goes_to_its_next_owner_and_is_counted() {
    common::require_root("native ICMP to 127.0.0.0/8");
    let ports: Vec<u16> = (0..3).map(|_| free_tcp_port()).collect();
    let orders: Vec<String> = (1..=12).map(|i| format!("lan/t{i}")).collect();
    let owners: Vec<usize> = orders.iter().map(|id| ring_owner("child-o", id, &ports)).collect();
    // The owner of the first order never comes up; the other two do.
    let down = owners[0];
    let parents: Vec<Base> = (0..3).map(|_| Base::new()).collect();
    let _up: Vec<common::Daemon> = (0..3)
        .filter(|&p| p != down)
        .map(|p| {
            parents[p].write_config(&config(ports[p]));
            spawn_receiver(&parents[p], ports[p])
        })
        .collect();
    let child = Base::new();
    for (i, id) in orders.iter().enumerate() {
        child.write_order(id, &common::ping_order(&format!("127.0.9.{}", i + 1), 1, 1));
    }
    let orphan = orders[0].clone();
    // Where its share goes: its next owner on the ring without the down destination.
    let identities: Vec<String> = ports.iter().map(|p| format!("127.0.0.1:{p}")).collect();
    let ring = spoolmon::sink::ring::Ring::new(&identities);
    let mut key = Vec::new();
    spoolmon::sink::ring::result_key("child-o", &orphan, &mut key);
    let next = ring.owner_among(&key, |d| d != down).unwrap();
    let child_process = child.start(&format!(
        "{}self-metrics:\n  interval: 1\n",
        ring_config("child-o", &ports, "    handoff-timeout: 3\n")
    ));
    wait_for(
        "the orphan's results at its next owner",
        Duration::from_secs(60),
        Some(&child_process),
        || {
            parents[next]
                .read(&format!("output/@child-o/{orphan}/last_result"))
                .is_some()
        },
    );
    let lane = format!("up@127.0.0.1_{}", ports[down]);
    wait_for(
        "the handoff in the metrics",
        Duration::from_secs(30),
        Some(&child_process),
        || {
            child.read("state/metrics.prom").is_some_and(|m| {
                m.lines().any(|l| {
                    l.starts_with(&format!("spoolmon_sink_handed_off_lines_total{{sink=\"{lane}\"}}"))
                        && !l.ends_with(" 0")
                })
            })
        },
    );
    assert!(child_process
        .log_text()
        .contains("handed off to the current owners on the ring"));
    // The orders of the destinations that are up never moved.
    for (id, &owner) in orders.iter().zip(&owners).filter(|(_, &o)| o != down) {
        let other = 3 - owner - down; // the other one that is up
        assert!(
            parents[other]
                .read(&format!("output/@child-o/{id}/last_result"))
                .is_none(),
            "{id} of destination {owner} at {other}"
        );
    }
}

/// `spoolmon check children` on `base`: (exit code, line).
fn check_children(base: &Base) -> (i32, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_spoolmon"))
        .args(["check", "children", "--base-dir"])
        .arg(base.path())
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

#[test]
fn a_silent_child_is_marked_stale_its_output_archived_and_restored_when_it_returns() {
    common::require_root("native ICMP to 127.0.0.0/8");
    let parent = Base::new();
    let port = free_tcp_port();
    parent.write_config(&format!("{}  child-timeout: 3\n", config(port)));
    let parent_process = spawn_receiver(&parent, port);
    let child = Base::new();
    child.write_order("lan/t1", &common::ping_order("127.0.9.1", 1, 1));
    let child_config = forward_config("child-z", port, KEY);
    let child_process = child.start(&child_config);
    let output = "output/@child-z/lan/t1/main.rrd";
    wait_for(
        "the child's results at the parent",
        Duration::from_secs(60),
        Some(&parent_process),
        || parent.read("output/@child-z/lan/t1/last_result").is_some(),
    );
    assert_eq!(check_children(&parent).0, 0, "{}", check_children(&parent).1);
    let heard_until = last_time(&parent, "output/@child-z/lan/t1/last_result").unwrap();
    child_process
        .terminate(Duration::from_secs(30))
        .expect("the child stops");
    wait_for(
        "the silent child's output archived",
        Duration::from_secs(60),
        Some(&parent_process),
        || parent.join("archive/@child-z/lan/t1/main.rrd").exists() && !parent.join(output).exists(),
    );
    let (code, line) = check_children(&parent);
    assert_eq!(code, 1, "{line}");
    assert!(
        line.contains("1 of 1 children stale (output archived): child-z"),
        "{line}"
    );
    let status = std::process::Command::new(env!("CARGO_BIN_EXE_spoolmon"))
        .args(["status", "--base-dir"])
        .arg(parent.path())
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&status.stdout).contains("child-z STALE"),
        "{}",
        String::from_utf8_lossy(&status.stdout)
    );
    // It returns: its output comes back with its history, and new steps are added to it.
    let child_process = child.start(&child_config);
    wait_for(
        "the returning child's new results",
        Duration::from_secs(60),
        Some(&child_process),
        || last_time(&parent, "output/@child-z/lan/t1/last_result").is_some_and(|t| t > heard_until + 1),
    );
    assert!(!parent.join("archive/@child-z").exists(), "restored, not kept twice");
    let rows = rrd_rows(&parent.join(output), 1, heard_until - 3, heard_until + 1);
    assert!(
        measured_rows(&rows).contains(&(heard_until + 1)),
        "the history before the silence: {rows:?}"
    );
    assert_eq!(check_children(&parent).0, 0, "{}", check_children(&parent).1);
}

#[test]
fn load_balancers_ship_haproxy_snapshots_and_the_parent_aggregates_each_as_the_load_balancer_would() {
    let haproxy = common::servers::Haproxy::start(&common::servers::HaproxySetup {
        instances: 2,
        ..common::servers::HaproxySetup::default()
    });
    let parent = Base::new();
    let port = free_tcp_port();
    let parent_store = parent.join("local-store");
    parent.write_config(&format!(
        "{}node-name: central\nsinks:\n  store:\n    type: local-store\n    dir: {}\n    namespace: net\n    takes: [haproxy]\n",
        config(port),
        parent_store.display()
    ));
    let parent_process = spawn_receiver(&parent, port);
    let pull = format!(
        "pull:\n  socket-dir: '{}'\n  pull-interval: 1\n  pull-timeout: 0.9\n",
        haproxy.socket_dir.display()
    );
    // lb-1 also aggregates for a local-store of its own (what a single node writes); lb-2 only
    // ships (it aggregates nothing).
    let lb1 = Base::new();
    let lb1_store = lb1.join("local-store");
    let lb1_process = lb1.start(&format!(
        "{pull}{}    takes: [haproxy]\n  store:\n    type: local-store\n    dir: {}\n    namespace: net\n    hostname: lb-1\n    takes: [haproxy]\n",
        forward_config("lb-1", port, KEY),
        lb1_store.display()
    ));
    let lb2 = Base::new();
    let lb2_process = lb2.start(&format!(
        "{pull}{}    takes: [haproxy]\n",
        forward_config("lb-2", port, KEY)
    ));
    let parent_lines = || common::local_store_lines(&parent_store);
    wait_for(
        "both load balancers' aggregates at the parent",
        Duration::from_secs(60),
        Some(&parent_process),
        || {
            let lines = parent_lines();
            ["net.lb-1.haproxy.", "net.lb-2.haproxy."]
                .iter()
                .all(|prefix| lines.keys().any(|(path, _)| path.starts_with(prefix)))
        },
    );
    // The same snapshot aggregated at lb-1 and at the parent: the same lines (but the
    // aggregation's own timings).
    let timings = "haproxy.haproxystats.";
    let of_time = |lines: &std::collections::BTreeMap<(String, i64), f64>, host: &str, time: i64| {
        lines
            .iter()
            .filter(|((path, t), _)| {
                *t == time && path.starts_with(&format!("net.{host}.haproxy.")) && !path.contains(timings)
            })
            .map(|((path, _), value)| (path.clone(), *value))
            .collect::<std::collections::BTreeMap<String, f64>>()
    };
    let mut compared = 0;
    wait_for(
        "a snapshot aggregated on both sides",
        Duration::from_secs(60),
        Some(&lb1_process),
        || {
            let (local, central) = (common::local_store_lines(&lb1_store), parent_lines());
            let times: std::collections::BTreeSet<i64> = central.keys().map(|(_, t)| *t).collect();
            compared = 0;
            for time in times {
                let (here, there) = (of_time(&local, "lb-1", time), of_time(&central, "lb-1", time));
                if !here.is_empty() && !there.is_empty() {
                    assert_eq!(here, there, "snapshot {time} aggregated differently");
                    assert!(here.len() > 20, "{here:?}");
                    compared += 1;
                }
            }
            compared > 0
        },
    );
    // lb-2 aggregated nothing itself: its processing sent no lines anywhere but the frames.
    assert!(!lb2.join("local-store").exists());
    assert!(parent_lines()
        .keys()
        .any(|(path, _)| path.starts_with("net.lb-2.haproxy.frontend.")));
    drop((lb1_process, lb2_process));
}

#[test]
fn a_child_killed_9_while_it_delivers_its_backlog_loses_nothing_and_repeats_no_step() {
    common::require_root("native ICMP to 127.0.0.0/8");
    let parent = Base::new();
    let port = free_tcp_port();
    parent.write_config(&config(port));
    let child = child_with_orders(3);
    // The child measures with no parent: a backlog of frames builds up.
    let child_config = format!("{}    frame-results: 3\n", forward_config("child-k", port, KEY));
    let child_process = child.start(&child_config);
    let local = "output/lan/t1/last_result";
    wait_for(
        "a backlog of 15 steps",
        Duration::from_secs(60),
        Some(&child_process),
        || outbox_lines(&child, "up").is_some_and(|n| n >= 15),
    );
    let parent_process = spawn_receiver(&parent, port);
    // Killed -9 as soon as the first of its backlog has arrived: mid-delivery.
    wait_for(
        "the backlog to start arriving",
        Duration::from_secs(60),
        Some(&parent_process),
        || parent.read("output/@child-k/lan/t1/last_result").is_some(),
    );
    child_process.kill9();
    let until = last_time(&child, local).unwrap();
    let child_process = child.start(&child_config);
    wait_for(
        "the rest of the backlog and new steps",
        Duration::from_secs(60),
        Some(&child_process),
        || {
            (1..=3).all(|i| {
                last_time(&parent, &format!("output/@child-k/lan/t{i}/last_result")).is_some_and(|t| t > until)
            })
        },
    );
    // Every step the child measured is at the parent, and none was applied twice (a repeated
    // frame is acknowledged without being stored; librrd would refuse a repeated time).
    for i in 1..=3 {
        let mine = measured_rows(&rrd_rows(
            &child.join(&format!("output/lan/t{i}/main.rrd")),
            1,
            until - 30,
            until + 1,
        ));
        let theirs = measured_rows(&rrd_rows(
            &parent.join(&format!("output/@child-k/lan/t{i}/main.rrd")),
            1,
            until - 30,
            until + 1,
        ));
        assert!(mine.len() >= 10, "t{i}: the child measured {mine:?}");
        for step in &mine {
            assert!(theirs.contains(step), "t{i}: step {step} lost");
        }
    }
    assert!(!parent_process.log_text().contains("illegal attempt to update"));
    assert_eq!(parent.count("failed"), 0);
}
