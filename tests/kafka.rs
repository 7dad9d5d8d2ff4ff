//! The Kafka sink against a real Kafka-protocol broker (`tansu`, started by the test) and read
//! back by an independent consumer (librdkafka's): a real `spoolmon run` measuring loopback
//! sends each result as one JSON message keyed by its order, in order per key; the broker
//! killed with -9 and started again is a backlog in the outbox, delivered after the restart with
//! no step missing and repeats within what the sink counts as resent (tansu keeps messages in
//! memory, so the daemon is frozen with SIGSTOP for the moment the reader takes to read the
//! first broker to its high watermarks before it is killed). A wrong broker address
//! is a clear, counted error with the daemon measuring on; a message over `max-message-bytes`
//! is rejected, counted and dropped while the rest flows.

mod common;

use common::kafka::{Reader, Stored, Tansu};
use common::servers::free_tcp_port;
use common::*;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;
use std::time::Duration;

const LIMIT: Duration = Duration::from_secs(90);

fn metric(base: &Base, prefix: &str) -> Option<f64> {
    base.read("state/metrics.prom")?
        .lines()
        .find_map(|l| l.strip_prefix(prefix))
        .and_then(|v| v.trim().parse().ok())
}

/// (order, time) of each stored ping message, checking each is well-formed JSON keyed by its
/// order.
fn steps(stored: &[Stored]) -> Vec<(String, i64)> {
    stored
        .iter()
        .map(|m| {
            let json: Value = serde_json::from_str(&m.payload).unwrap_or_else(|e| panic!("{e}: {m:?}"));
            assert_eq!(json["type"], "ping", "{m:?}");
            let order = json["order"].as_str().unwrap().to_string();
            assert_eq!(m.key.as_deref(), Some(order.as_str()), "keyed by its order: {m:?}");
            (order, json["time"].as_i64().unwrap())
        })
        .collect()
}

/// Per order, its times in the order the broker stored them (one partition per key).
fn per_order(stored: &[Stored]) -> BTreeMap<String, Vec<i64>> {
    let mut orders: BTreeMap<String, Vec<i64>> = BTreeMap::new();
    for (order, time) in steps(stored) {
        orders.entry(order).or_default().push(time);
    }
    orders
}

#[test]
fn results_reach_kafka_keyed_in_order_and_a_broker_restart_is_a_backlog_not_a_loss() {
    require_root("native ICMP to 127.0.0.0/8");
    let base = Base::new();
    let port = free_tcp_port();
    let broker = Tansu::start(port, base.path());
    broker.create_topic("spoolmon.ping", 3);
    for (i, order) in ["lab/a", "lab/b", "lab/c"].iter().enumerate() {
        base.write_order(order, &ping_order(&format!("127.0.0.{}", i + 1), 2, 3));
    }
    let mut daemon = base.start(&format!(
        "rescan-interval: 2\nnode-name: node-1\nself-metrics:\n  interval: 1\nsinks:\n  k:\n    type: kafka\n    brokers: [\"127.0.0.1:{port}\"]\n    delivery-timeout: 1\n    takes: [ping]\n    librdkafka: {{topic.metadata.propagation.max.ms: \"60000\"}}\n"
    ));
    let mut first = Reader::new(&broker.brokers(), "spoolmon.ping", LIMIT);
    first.read_until(LIMIT, |stored| {
        let orders = per_order(stored);
        orders.len() == 3 && orders.values().all(|times| times.len() >= 3)
    });
    let json: Value = serde_json::from_str(&first.stored[0].payload).unwrap();
    assert_eq!(json["node"], "node-1");
    assert_eq!(json["pings"], 3);
    assert_eq!(json["rtts"].as_array().unwrap().len(), 3);

    // The broker killed in the middle of the stream. The daemon is frozen for the moment it
    // takes to read everything the first broker holds (its memory storage dies with it), then
    // goes on while the broker is down: its lines wait in the outbox.
    signal(daemon.pid(), "STOP");
    first.catch_up(LIMIT);
    drop(broker);
    signal(daemon.pid(), "CONT");
    let before = per_order(&first.stored);
    for (order, times) in &before {
        assert!(
            times.windows(2).all(|w| w[1] == w[0] + 2),
            "{order}: in order, every step: {times:?}"
        );
    }
    wait_for("a backlog in the outbox", LIMIT, Some(&daemon), || {
        outbox_figure(&base, "k", "lines") >= 9
    });
    assert!(daemon.is_running());
    let down = unix_now();

    // A new broker on the same port (empty): the sink delivers the backlog by itself.
    let broker = Tansu::start(port, base.path());
    broker.create_topic("spoolmon.ping", 3);
    let mut second = Reader::new(&broker.brokers(), "spoolmon.ping", LIMIT);
    second.read_until(LIMIT, |stored| {
        let orders = per_order(stored);
        orders.len() == 3 && orders.values().all(|times| times.last().is_some_and(|t| *t > down + 4))
    });
    wait_for("the backlog delivered", LIMIT, Some(&daemon), || {
        outbox_figure(&base, "k", "lines") == 0
    });
    wait_for("the counters written", LIMIT, Some(&daemon), || {
        metric(&base, "spoolmon_sink_resent_lines_total{sink=\"k\"} ").is_some()
    });
    let resent = metric(&base, "spoolmon_sink_resent_lines_total{sink=\"k\"} ").unwrap();
    let mut repeats = 0usize;
    for (order, times) in per_order(&second.stored) {
        // In order within the new broker's partition; a repeat only of a step sent again.
        assert!(times.windows(2).all(|w| w[1] >= w[0]), "{order} in order: {times:?}");
        repeats += times.windows(2).filter(|w| w[1] == w[0]).count();
        let old: BTreeSet<i64> = before[&order].iter().copied().collect();
        let new: BTreeSet<i64> = times.iter().copied().collect();
        repeats += old.intersection(&new).count();
        // Every step from the first read to the last, in one broker or the other.
        let all: BTreeSet<i64> = old.union(&new).copied().collect();
        let (low, high) = (*all.first().unwrap(), *all.last().unwrap());
        let missing: Vec<i64> = (low..=high).step_by(2).filter(|t| !all.contains(t)).collect();
        assert!(
            missing.is_empty(),
            "{order}: steps missing {missing:?} (broker down at {down})"
        );
    }
    // What arrived twice was produced twice: the messages in flight when the broker died,
    // which the sink counts as resent.
    assert!(
        repeats as f64 <= resent,
        "{repeats} repeated, {resent} counted as resent"
    );
    assert!(
        daemon.log_text().contains("delivery works again"),
        "{}",
        daemon.log_text()
    );
    daemon.terminate(LIMIT);
}

#[test]
fn a_wrong_broker_is_a_counted_error_and_an_oversized_message_is_dropped_not_stalling() {
    require_root("native ICMP to 127.0.0.0/8");
    let base = Base::new();
    let port = free_tcp_port();
    let broker = Tansu::start(port, base.path());
    broker.create_topic("spoolmon.ping", 3);
    // 120 pings make a JSON message of about 2.5 kB, over the 1000-byte limit; 3 pings do not.
    base.write_order("lab/big", &ping_order("127.0.0.1", 2, 120));
    base.write_order("lab/small", &ping_order("127.0.0.2", 2, 3));
    let dead = free_tcp_port();
    let daemon = base.start(&format!(
        "rescan-interval: 2\nself-metrics:\n  interval: 1\nsinks:\n  k:\n    type: kafka\n    brokers: [\"127.0.0.1:{port}\"]\n    delivery-timeout: 1\n    max-message-bytes: 1000\n    takes: [ping]\n  nowhere:\n    type: kafka\n    brokers: [\"127.0.0.1:{dead}\"]\n    delivery-timeout: 0.5\n    takes: [ping]\n  unknown:\n    type: kafka\n    brokers: [\"127.0.0.1:{port}\"]\n    topics: {{ping: no.such.topic}}\n    delivery-timeout: 2\n    takes: [ping]\n"
    ));
    let mut reader = Reader::new(&broker.brokers(), "spoolmon.ping", LIMIT);
    reader.read_until(LIMIT, |stored| {
        per_order(stored).get("lab/small").is_some_and(|t| t.len() >= 4)
    });
    reader.catch_up(LIMIT);
    assert!(
        !per_order(&reader.stored).contains_key("lab/big"),
        "the oversized results are not there"
    );
    wait_for("the rejections counted", LIMIT, Some(&daemon), || {
        metric(&base, "spoolmon_sink_rejected_lines_total{sink=\"k\"} ").is_some_and(|n| n >= 2.0)
    });
    assert!(
        daemon.log_text().contains("Kafka rejected messages; they are dropped"),
        "{}",
        daemon.log_text()
    );
    // Nothing waits for the rejected ones.
    wait_for("k's outbox empty", LIMIT, Some(&daemon), || {
        outbox_figure(&base, "k", "lines") == 0
    });

    // A topic the broker does not have: rejected after the metadata wait, counted, not stalling.
    wait_for("the unknown topic's rejections counted", LIMIT, Some(&daemon), || {
        metric(&base, "spoolmon_sink_rejected_lines_total{sink=\"unknown\"} ").is_some_and(|n| n >= 2.0)
    });
    wait_for("unknown's outbox empty", LIMIT, Some(&daemon), || {
        outbox_figure(&base, "unknown", "lines") == 0
    });
    assert!(daemon.log_text().contains("Unknown topic"), "{}", daemon.log_text());

    // The sink without a broker: failures counted and logged with the cause, lines kept.
    wait_for("the dead broker's failures counted", LIMIT, Some(&daemon), || {
        metric(&base, "spoolmon_sink_failed_sends_total{sink=\"nowhere\"} ").is_some_and(|n| n >= 2.0)
    });
    assert!(outbox_figure(&base, "nowhere", "lines") > 0);
    let log = daemon.log_text();
    assert!(
        log.contains("sink=\"nowhere\"") || log.contains("sink=nowhere"),
        "the failing sink is named: {log}"
    );
    assert!(log.contains("not delivered"), "{log}");
    // And measuring goes on: last_result keeps moving.
    let before = base.result_time("lab/small");
    wait_for("a newer last_result", LIMIT, Some(&daemon), || {
        base.result_time("lab/small") > before
    });
    daemon.terminate(LIMIT);
}

#[test]
fn a_kafka_sink_with_bad_options_is_refused_at_start_naming_the_key() {
    let base = Base::new();
    for (config, key) in [
        ("sinks:\n  k:\n    type: kafka\n", "kafka.brokers"),
        (
            "sinks:\n  k:\n    type: kafka\n    brokers: [\"no-port\"]\n",
            "kafka.brokers",
        ),
        (
            "sinks:\n  k:\n    type: kafka\n    brokers: [\"k:9092\"]\n    topics: {ping: \"a/b\"}\n",
            "kafka.topics.ping",
        ),
        (
            "sinks:\n  k:\n    type: kafka\n    brokers: [\"k:9092\"]\n    librdkafka: {no.such.setting: \"1\"}\n",
            "no.such.setting",
        ),
    ] {
        base.write_config(config);
        let out = Command::new(env!("CARGO_BIN_EXE_spoolmon"))
            .args(["run", "--base-dir"])
            .arg(base.path())
            .arg("--config")
            .arg(base.join("spoolmon.yaml"))
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{config}");
        assert!(stderr.contains(key), "{config}: {stderr}");
    }
}
