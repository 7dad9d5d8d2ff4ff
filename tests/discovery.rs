//! Discovery of a forward sink's destinations with real processes: a watched file in `mode:
//! hash` (a parent added, a killed parent removed and its backlog drained to the others), DNS
//! SRV records from a real dnsmasq, and Consul's health API. Consul cannot be installed here
//! (Debian has no package): a small HTTP server replays the JSON Consul documents for
//! `/v1/health/service/<name>?passing`. An error or an empty answer keeps the last good set,
//! counted in the self-metrics.

mod common;

use common::nodes::{config, last_time, measured_rows, outbox_lines, rrd_rows, spawn_receiver, KEY};
use common::servers::{free_tcp_port, free_udp_port, Dnsmasq, ReplayServer};
use common::{wait_for, Base};
use std::time::Duration;

fn child_config(node: &str, mode: &str, discovery: &str) -> String {
    format!(
        "rescan-interval: 2\nnode-name: {node}\nself-metrics:\n  interval: 1\nsinks:\n  up:\n    type: forward\n    mode: {mode}\n    api-key: {KEY}\n    timeout: 2\n    discovery: {discovery}\n"
    )
}

/// The value of the metric line starting with `prefix` in `state/metrics.prom`.
fn metric(base: &Base, prefix: &str) -> Option<f64> {
    base.read("state/metrics.prom")?
        .lines()
        .find_map(|l| l.strip_prefix(prefix))
        .and_then(|v| v.trim().parse().ok())
}

fn parents(n: usize) -> (Vec<u16>, Vec<Base>) {
    let ports: Vec<u16> = (0..n).map(|_| free_tcp_port()).collect();
    let bases: Vec<Base> = ports
        .iter()
        .map(|&port| {
            let base = Base::new();
            base.write_config(&config(port));
            base
        })
        .collect();
    (ports, bases)
}

fn owner(node: &str, id: &str, ports: &[u16]) -> u16 {
    let identities: Vec<String> = ports.iter().map(|p| format!("127.0.0.1:{p}")).collect();
    let ring = spoolmon::sink::ring::Ring::new(&identities);
    let mut key = Vec::new();
    spoolmon::sink::ring::result_key(node, id, &mut key);
    ports[ring.owner(&key).unwrap()]
}

fn write_destinations(path: &std::path::Path, ports: &[u16]) {
    let text: String = ports.iter().map(|p| format!("http://127.0.0.1:{p}\n")).collect();
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, format!("# parents\n{text}")).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

#[test]
fn a_watched_file_adds_a_parent_and_a_removed_parents_backlog_drains_to_the_current_owners() {
    common::require_root("native ICMP to 127.0.0.0/8");
    let (ports, bases) = parents(3);
    let (a, b, c) = (ports[0], ports[1], ports[2]);
    let index = |port: u16| ports.iter().position(|&p| p == port).unwrap();
    let mut processes: Vec<Option<common::Daemon>> = bases
        .iter()
        .zip(&ports)
        .map(|(base, &port)| Some(spawn_receiver(base, port)))
        .collect();
    let child = Base::new();
    let orders: Vec<String> = (1..=12).map(|i| format!("lan/t{i}")).collect();
    for (i, id) in orders.iter().enumerate() {
        child.write_order(id, &common::ping_order(&format!("127.0.9.{}", i + 1), 1, 1));
    }
    let file = child.join("parents.txt");
    write_destinations(&file, &[a, b]);
    let child_process = child.start(&child_config(
        "child-f",
        "hash",
        &format!("{{file: {}, interval: 1}}", file.display()),
    ));
    let at = |port: u16, id: &str| last_time(&bases[index(port)], &format!("output/@child-f/{id}/last_result"));
    // Two parents from the file.
    wait_for(
        "every order at its owner of two",
        Duration::from_secs(60),
        Some(&child_process),
        || orders.iter().all(|id| at(owner("child-f", id, &[a, b]), id).is_some()),
    );
    // B is killed -9 and its share waits in its lane.
    processes[index(b)].take().unwrap().kill9();
    let b_orders: Vec<&String> = orders.iter().filter(|id| owner("child-f", id, &[a, b]) == b).collect();
    assert!(!b_orders.is_empty());
    let lane_b = format!("up@127.0.0.1_{b}");
    wait_for(
        "B's share to wait",
        Duration::from_secs(30),
        Some(&child_process),
        || outbox_lines(&child, &lane_b).is_some_and(|n| n >= 3),
    );
    let down_from = last_time(&child, &format!("output/{}/last_result", b_orders[0])).unwrap();
    // The file now names A and C: C gets its share, B's lane drains to the new owners.
    write_destinations(&file, &[a, c]);
    wait_for(
        "every order at its owner of A and C",
        Duration::from_secs(60),
        Some(&child_process),
        || {
            orders
                .iter()
                .all(|id| at(owner("child-f", id, &[a, c]), id).is_some_and(|t| t > down_from))
        },
    );
    wait_for(
        "B's lane drained",
        Duration::from_secs(30),
        Some(&child_process),
        || outbox_lines(&child, &lane_b) == Some(0),
    );
    let handed_off = format!("spoolmon_sink_handed_off_lines_total{{sink=\"{lane_b}\"}} ");
    wait_for(
        "the drain counted",
        Duration::from_secs(30),
        Some(&child_process),
        || metric(&child, &handed_off).is_some_and(|n| n >= 1.0),
    );
    // What B held while it was down reached B's orders' new owners: no gap from then on.
    let moved = b_orders[0];
    let new_owner = owner("child-f", moved, &[a, c]);
    let rrd = bases[index(new_owner)].join(&format!("output/@child-f/{moved}/main.rrd"));
    let until = at(new_owner, moved).unwrap();
    let measured = measured_rows(&rrd_rows(&rrd, 1, down_from, until));
    for step in (down_from + 1)..until {
        assert!(
            measured.contains(&(step + 1)),
            "step {step} of {moved} missing at its new owner"
        );
    }
    // A broken file and an empty one keep the last good set, counted.
    let errors_before = metric(&child, "spoolmon_sink_discovery_errors_total{sink=\"up\"} ").unwrap();
    std::fs::write(&file, "http://127.0.0.1:1\nnot a url\n").unwrap();
    wait_for(
        "the broken file counted",
        Duration::from_secs(30),
        Some(&child_process),
        || {
            metric(&child, "spoolmon_sink_discovery_errors_total{sink=\"up\"} ")
                .is_some_and(|n| n >= errors_before + 2.0)
        },
    );
    std::fs::write(&file, "# nothing\n").unwrap();
    let now = common::unix_now();
    wait_for(
        "results still at A and C",
        Duration::from_secs(30),
        Some(&child_process),
        || {
            orders
                .iter()
                .all(|id| at(owner("child-f", id, &[a, c]), id).is_some_and(|t| t > now))
        },
    );
    assert_eq!(metric(&child, "spoolmon_sink_destinations{sink=\"up\"} "), Some(2.0));
    assert!(
        child_process.log_text().contains("line 2: not a url"),
        "{}",
        child_process.log_text()
    );
}

#[test]
fn srv_records_from_dnsmasq_name_the_parent_and_a_change_moves_the_results() {
    common::require_root("native ICMP to 127.0.0.0/8");
    let (ports, bases) = parents(2);
    let _processes: Vec<common::Daemon> = bases.iter().zip(&ports).map(|(b, &p)| spawn_receiver(b, p)).collect();
    let dns_port = loop {
        // dnsmasq binds the port on UDP and TCP: one free on both.
        let port = free_udp_port();
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            break port;
        }
    };
    let name = "_spoolmon._tcp.test";
    let mut dns = Dnsmasq::start(dns_port, &[(name, "127.0.0.1", ports[0])]);
    let child = Base::new();
    child.write_order("lan/t1", &common::ping_order("127.0.9.1", 1, 1));
    let child_process = child.start(&child_config(
        "child-s",
        "failover",
        &format!("{{srv: \"{name}\", dns-server: \"127.0.0.1:{dns_port}\", scheme: http, interval: 1}}"),
    ));
    let at = |i: usize| last_time(&bases[i], "output/@child-s/lan/t1/last_result");
    wait_for(
        "results at the first SRV target",
        Duration::from_secs(60),
        Some(&child_process),
        || at(0).is_some(),
    );
    dns.restart(&[(name, "127.0.0.1", ports[1])]);
    wait_for(
        "results at the new SRV target",
        Duration::from_secs(60),
        Some(&child_process),
        || at(1).is_some(),
    );
    // The DNS server goes away: the last set is kept and the errors counted.
    dns.stop();
    let errors_before = metric(&child, "spoolmon_sink_discovery_errors_total{sink=\"up\"} ").unwrap_or(0.0);
    wait_for(
        "the DNS errors counted",
        Duration::from_secs(60),
        Some(&child_process),
        || metric(&child, "spoolmon_sink_discovery_errors_total{sink=\"up\"} ").is_some_and(|n| n > errors_before),
    );
    let now = at(1).unwrap();
    wait_for(
        "results still at the last target",
        Duration::from_secs(30),
        Some(&child_process),
        || at(1).is_some_and(|t| t > now + 1),
    );
}

#[test]
fn consuls_passing_instances_are_the_destinations_and_errors_or_nothing_keep_the_last() {
    common::require_root("native ICMP to 127.0.0.0/8");
    let (ports, bases) = parents(2);
    let _processes: Vec<common::Daemon> = bases.iter().zip(&ports).map(|(b, &p)| spawn_receiver(b, p)).collect();
    let instance = |port: u16| {
        format!(
            r#"[{{"Node": {{"ID": "n1", "Node": "parent", "Address": "127.0.0.1", "Datacenter": "dc1"}},
                 "Service": {{"ID": "parent-{port}", "Service": "spoolmon-parent", "Tags": ["spool"], "Address": "", "Port": {port}}},
                 "Checks": [{{"Node": "parent", "CheckID": "serfHealth", "Status": "passing"}}]}}]"#
        )
    };
    let consul = ReplayServer::start(200, &instance(ports[0]));
    let child = Base::new();
    child.write_order("lan/t1", &common::ping_order("127.0.9.1", 1, 1));
    let child_process = child.start(&child_config(
        "child-c",
        "failover",
        &format!(
            "{{consul: {{url: \"http://127.0.0.1:{}\", service: spoolmon-parent, tag: spool}}, scheme: http, interval: 1}}",
            consul.port
        ),
    ));
    let at = |i: usize| last_time(&bases[i], "output/@child-c/lan/t1/last_result");
    wait_for(
        "results at Consul's instance",
        Duration::from_secs(60),
        Some(&child_process),
        || at(0).is_some(),
    );
    consul.set(200, &instance(ports[1]));
    wait_for(
        "results at the new instance",
        Duration::from_secs(60),
        Some(&child_process),
        || at(1).is_some(),
    );
    for (status, body) in [
        (500, "No cluster leader"),
        (200, "[]"),
        (200, "{\"not\": \"an array\"}"),
    ] {
        let before = metric(&child, "spoolmon_sink_discovery_errors_total{sink=\"up\"} ").unwrap_or(0.0);
        consul.set(status, body);
        wait_for(
            &format!("Consul's {status} {body} counted"),
            Duration::from_secs(30),
            Some(&child_process),
            || metric(&child, "spoolmon_sink_discovery_errors_total{sink=\"up\"} ").is_some_and(|n| n > before),
        );
        let now = at(1).unwrap();
        wait_for(
            "results still at the last instance",
            Duration::from_secs(30),
            Some(&child_process),
            || at(1).is_some_and(|t| t > now),
        );
    }
    assert!(child_process.log_text().contains("No cluster leader"));
}
