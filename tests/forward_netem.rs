//! A child in a network namespace of its own, joined to its parent by a veth pair (`ip netns`),
//! measuring 50 orders while the parent is killed -9 twice and the link is cut for a minute:
//! afterwards every step of every order is in the parent's RRDs once, with no gap, and the
//! child's outbox is empty.
//!
//! The cut is `tc qdisc add dev <end> root blackhole` on both ends of the veth pair: every
//! packet dropped, as `netem loss 100%` would (the kernel of these machines is built without
//! netem, `# CONFIG_NET_SCH_NETEM is not set` in /proc/config.gz; blackhole is part of every
//! kernel with traffic control). TCP sees the same thing: silence, no reset.

mod common;

use common::nodes::{config, last_time, measured_rows, outbox_lines, rrd_rows, KEY};
use common::{wait_for, Base};
use std::process::Command;
use std::time::Duration;

/// A network namespace with one end of a veth pair; both are removed when dropped.
struct Namespace {
    name: String,
    host_end: String,
}

fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("ip");
    assert!(
        out.status.success(),
        "ip {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn tc(namespace: Option<&str>, args: &[&str]) {
    let mut command = match namespace {
        Some(ns) => {
            let mut c = Command::new("ip");
            c.args(["netns", "exec", ns, "tc"]);
            c
        }
        None => Command::new("tc"),
    };
    let out = command.args(args).output().expect("tc");
    assert!(
        out.status.success(),
        "tc {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

impl Namespace {
    /// `smtest<n>`, its end `10.<a>.<b>.2/30` (`veth`), the host's end `10.<a>.<b>.1/30`.
    fn new() -> (Namespace, String, String) {
        let id = std::process::id() % 60_000;
        let name = format!("smt{id}");
        let (host_end, ns_end) = (format!("smh{id}"), format!("smn{id}"));
        let (a, b) = (200 + (id / 250) % 50, id % 250);
        let (host_ip, ns_ip) = (format!("10.{a}.{b}.1"), format!("10.{a}.{b}.2"));
        let _ = Command::new("ip").args(["netns", "del", &name]).output();
        ip(&["netns", "add", &name]);
        let namespace = Namespace {
            name: name.clone(),
            host_end: host_end.clone(),
        };
        ip(&["link", "add", &host_end, "type", "veth", "peer", "name", &ns_end]);
        ip(&["link", "set", &ns_end, "netns", &name]);
        ip(&["addr", "add", &format!("{host_ip}/30"), "dev", &host_end]);
        ip(&["link", "set", &host_end, "up"]);
        ip(&["-n", &name, "addr", "add", &format!("{ns_ip}/30"), "dev", &ns_end]);
        ip(&["-n", &name, "link", "set", &ns_end, "up"]);
        ip(&["-n", &name, "link", "set", "lo", "up"]);
        (namespace, host_ip, ns_end)
    }

    /// Drops every packet both ways (or lets them through again).
    fn cut(&self, ns_end: &str, cut: bool) {
        let verb = if cut { "add" } else { "del" };
        let mut args = vec!["qdisc", verb, "dev", &self.host_end, "root"];
        if cut {
            args.push("blackhole");
        }
        tc(None, &args);
        let mut args = vec!["qdisc", verb, "dev", ns_end, "root"];
        if cut {
            args.push("blackhole");
        }
        tc(Some(&self.name), &args);
    }
}

impl Drop for Namespace {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["link", "del", &self.host_end]).output();
        let _ = Command::new("ip").args(["netns", "del", &self.name]).output();
    }
}

#[test]
fn fifty_orders_survive_two_parent_kills_and_a_minute_without_a_link_with_no_gap() {
    common::require_root("network namespaces, netem and native ICMP");
    let (namespace, parent_ip, ns_end) = Namespace::new();
    let parent = Base::new();
    let port = common::servers::free_tcp_port();
    parent.write_config(
        &config(port)
            .replace("127.0.0.1:", &format!("{parent_ip}:"))
            .replace("allow-from: \"127.0.0.1\"", "allow-from: \"10.*\""),
    );
    let spawn_parent = || {
        let daemon = parent.spawn(&["--log-level", "debug"], "process");
        wait_for("the parent to listen", Duration::from_secs(30), Some(&daemon), || {
            std::net::TcpStream::connect((parent_ip.as_str(), port)).is_ok()
        });
        daemon
    };
    let mut parent_process = spawn_parent();
    let child = Base::new();
    let orders: Vec<String> = (1..=50).map(|i| format!("lan/t{i:02}")).collect();
    for (i, id) in orders.iter().enumerate() {
        child.write_order(id, &common::ping_order(&format!("127.0.10.{}", i + 1), 1, 1));
    }
    let config_path = child.write_config(&format!(
        "rescan-interval: 2\nnode-name: far\nsinks:\n  up:\n    type: forward\n    destinations: [\"http://{parent_ip}:{port}\"]\n    api-key: {KEY}\n    timeout: 2\n"
    ));
    let log = std::fs::File::create(child.join("daemon.log")).unwrap();
    let child_process = common::Daemon::from_child(
        Command::new("ip")
            .args([
                "netns",
                "exec",
                &namespace.name,
                env!("CARGO_BIN_EXE_spoolmon"),
                "--log-level",
                "debug",
                "run",
                "--base-dir",
            ])
            .arg(child.path())
            .arg("--config")
            .arg(&config_path)
            .stdout(std::process::Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap(),
        child.join("daemon.log"),
    );
    let at_parent = |id: &str| last_time(&parent, &format!("output/@far/{id}/last_result"));
    let at_child = |id: &str| last_time(&child, &format!("output/{id}/last_result"));
    wait_for(
        "all 50 orders at the parent",
        Duration::from_secs(60),
        Some(&child_process),
        || orders.iter().all(|id| at_parent(id).is_some()),
    );
    let first = at_parent(&orders[0]).unwrap();
    let steps = |n: i64| {
        let from = at_child(&orders[0]).unwrap();
        wait_for(
            &format!("{n} more steps at the child"),
            Duration::from_secs(120),
            Some(&child_process),
            || at_child(&orders[0]).is_some_and(|t| t >= from + n),
        );
    };
    // Killed -9, down for a few steps, back.
    parent_process.kill9();
    steps(3);
    parent_process = spawn_parent();
    // The link is cut both ways for a minute, then restored.
    wait_for(
        "the parent to receive again",
        Duration::from_secs(60),
        Some(&parent_process),
        || at_parent(&orders[0]).is_some_and(|t| t >= at_child(&orders[0]).unwrap_or(0) - 1),
    );
    namespace.cut(&ns_end, true);
    let cut_at = at_child(&orders[0]).unwrap();
    steps(60);
    // Nothing crossed the cut link.
    assert!(at_parent(&orders[0]).unwrap() <= cut_at + 2, "the link was not cut");
    namespace.cut(&ns_end, false);
    // Killed -9 again while the backlog arrives.
    steps(2);
    parent_process.kill9();
    steps(3);
    let until = at_child(&orders[0]).unwrap();
    parent_process = spawn_parent();
    wait_for(
        "the whole backlog at the parent",
        Duration::from_secs(180),
        Some(&parent_process),
        || orders.iter().all(|id| at_parent(id).is_some_and(|t| t >= until)),
    );
    wait_for(
        "the child's outbox empty",
        Duration::from_secs(60),
        Some(&child_process),
        || outbox_lines(&child, "up") == Some(0),
    );
    // Every step of every order once: each measured row of the child is a measured row of
    // the parent, and the RRD took no step twice (librrd refuses a time it already has; the
    // parent's log would show the error).
    for id in &orders {
        let local = measured_rows(&rrd_rows(
            &child.join(&format!("output/{id}/main.rrd")),
            1,
            first,
            until + 1,
        ));
        let remote = measured_rows(&rrd_rows(
            &parent.join(&format!("output/@far/{id}/main.rrd")),
            1,
            first,
            until + 1,
        ));
        assert!(
            local.len() as i64 >= until - first - 2,
            "{id}: the child measured {} of {} steps",
            local.len(),
            until - first
        );
        for step in &local {
            assert!(remote.contains(step), "{id}: step {step} missing at the parent");
        }
    }
    assert!(
        !parent_process.log_text().contains("illegal attempt to update"),
        "a step applied twice"
    );
    assert_eq!(parent.count("failed"), 0);
}
