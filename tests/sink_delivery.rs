//! Sinks inside the daemon, against real servers: a Graphite that is down for a while (with a
//! kill -9 in between), a dead sink next to a live InfluxDB, an InfluxDB that rejects lines, and
//! a sink that cannot take lines at all (the queue fills and collection is suspended).
//!
//! The local-store sink is the ground truth: it writes every line synchronously before a
//! snapshot leaves `incoming/`, so whatever it holds must eventually reach every other sink.

mod common;

use common::servers::{free_tcp_port, Carbon, Influx, InfluxSetup};
use common::*;
use spoolmon::sink::outbox;
use std::collections::BTreeMap;
use std::fs;
use std::path::Path;
use std::time::Duration;

const LIMIT: Duration = Duration::from_secs(90);

/// Distinct times in a local-store directory.
fn stored_times(dir: &Path) -> usize {
    fs::read_dir(dir).map(|d| d.count()).unwrap_or(0)
}

fn local_store(dir: &Path) -> String {
    format!(
        "  store: {{type: local-store, dir: '{}', namespace: t, prefix-hostname: false}}\n",
        dir.display()
    )
}

fn graphite(name: &str, port: u16) -> String {
    format!(
        "  {name}: {{type: graphite, server: 127.0.0.1, port: {port}, namespace: t, prefix-hostname: false, \
         retries: 1, interval: 0.2, delay: 0.5, connect-timeout: 0.5, write-timeout: 1}}\n"
    )
}

fn telegraf_order(host: &str, measurement: &str) -> String {
    format!(
        "{}telegraf:\n    measurement_name: {measurement}\n    tags:\n        site: lab\n",
        ping_order(host, 1, 2)
    )
}

#[test]
fn graphite_down_for_a_while_and_a_kill_9_in_between_still_gets_every_line() {
    let base = Base::new();
    let store = base.join("ls");
    let port = free_tcp_port();
    let config = format!(
        "rescan-interval: 1\nsinks:\n{}{}",
        graphite("carbon", port),
        local_store(&store)
    );
    base.write_order("a/b", &ping_order("127.0.0.21", 1, 2));
    let daemon = base.start(&config);
    wait_for("5 steps measured while carbon is down", LIMIT, Some(&daemon), || {
        stored_times(&store) >= 5
    });
    let waiting = outbox::status(&base.join("outbox/carbon")).unwrap();
    assert!(
        waiting.lines >= 5,
        "the outbox should hold the undelivered lines: {waiting:?}"
    );
    daemon.kill9();

    let daemon = base.start(&config);
    let before_restart = stored_times(&store);
    wait_for("measuring again after the restart", LIMIT, Some(&daemon), || {
        stored_times(&store) >= before_restart + 3
    });
    let carbon = Carbon::start_on(port);
    let expected = local_store_lines(&store);
    let paths: Vec<String> = expected.keys().map(|(path, _)| path.clone()).collect();
    let (from, until) = (
        expected.keys().map(|k| k.1).min().unwrap(),
        expected.keys().map(|k| k.1).max().unwrap(),
    );
    let mut missing = Vec::new();
    wait_for("every stored line in whisper", LIMIT, Some(&daemon), || {
        let mut points = BTreeMap::new();
        for path in paths.iter().collect::<std::collections::BTreeSet<_>>() {
            for (time, value) in carbon.fetch(path, from, until) {
                if let Some(value) = value {
                    points.insert((path.clone(), time), value);
                }
            }
        }
        missing = expected
            .iter()
            .filter(|(key, value)| points.get(*key) != Some(value))
            .map(|(key, value)| format!("{key:?}={value}"))
            .collect();
        missing.is_empty()
    });
    assert!(expected.keys().any(|(path, _)| path == "t.ping.a.b.median"));
    let status = outbox::status(&base.join("outbox/carbon")).unwrap();
    assert_eq!(status.dropped_lines, 0, "{status:?}");
}

#[test]
fn a_dead_sink_does_not_hold_up_a_live_one() {
    let base = Base::new();
    let store = base.join("ls");
    let influx = Influx::start(InfluxSetup::default());
    influx.create_database("pings");
    let config = format!(
        "rescan-interval: 1\nsinks:\n{}  influx: {{type: influxdb, url: '{}', database: pings}}\n{}",
        graphite("dead", free_tcp_port()),
        influx.url(),
        local_store(&store)
    );
    base.write_order("site/rtt", &telegraf_order("127.0.0.22", "loopback"));
    let daemon = base.start(&config);
    let rows = influx.wait_for_rows("pings", "loopback", 12);
    // Every summary row InfluxDB holds matches what local-store got for that step.
    let stored = local_store_lines(&store);
    let mut checked = 0;
    for row in rows.iter().filter(|r| r.contains_key("median_rtt")) {
        let time = row["time"].as_i64().unwrap() / 1_000_000_000;
        let median = row["median_rtt"].as_f64().unwrap();
        assert_eq!(
            stored.get(&("t.ping.site.rtt.median".to_string(), time)),
            Some(&median),
            "{row:?}"
        );
        assert_eq!(row["site"], "lab");
        assert_eq!(row["loss"].as_f64(), Some(0.0));
        checked += 1;
    }
    assert!(checked >= 3, "too few summary rows: {rows:?}");
    let dead = outbox::status(&base.join("outbox/dead")).unwrap();
    assert!(dead.lines >= 12, "the dead sink's lines wait in its outbox: {dead:?}");
    assert!(daemon.log_text().contains("dead"));
}

#[test]
fn lines_influxdb_rejects_are_dropped_and_counted_while_the_rest_is_written() {
    let base = Base::new();
    let influx = Influx::start(InfluxSetup::default());
    influx.create_database("pings");
    // A string `loss` first (now, so in the shard our points go to): our float `loss` for this
    // measurement is then a field type conflict, which InfluxDB answers with 400.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap();
    let seed = format!("conflict,site=lab loss=\"text\" {}\n", now.as_secs() - 3600);
    let seeded = ureq::post(format!("{}/write?db=pings&precision=s", influx.url())).send(seed);
    assert!(seeded.is_ok(), "{seeded:?}");
    let config = format!(
        "rescan-interval: 1\nsinks:\n  influx: {{type: influxdb, url: '{}', database: pings}}\n",
        influx.url()
    );
    base.write_order("bad", &telegraf_order("127.0.0.23", "conflict"));
    base.write_order("good", &telegraf_order("127.0.0.24", "fine"));
    let daemon = base.start(&config);
    influx.wait_for_rows("pings", "fine", 6);
    wait_for("rejected lines counted", LIMIT, Some(&daemon), || {
        outbox::status(&base.join("outbox/influx")).is_ok_and(|s| s.rejected_lines > 0)
    });
    assert!(daemon.log_text().contains("rejected"), "rejection not logged");
    // The conflicting summary lines were refused (their `individual_rtt` lines carry no `loss`
    // and were written): the only `loss` in that measurement is the seeded string.
    let conflict = influx.rows("pings", "conflict");
    let losses: Vec<_> = conflict.iter().filter_map(|row| row.get("loss")).collect();
    assert_eq!(losses, vec![&serde_json::Value::from("text")], "{conflict:?}");
}

#[test]
fn a_sink_that_cannot_take_lines_fills_the_queue_and_suspends_collection() {
    let base = Base::new();
    let store = base.join("ls");
    fs::create_dir_all(&store).unwrap();
    base.write_order("q", &ping_order("127.0.0.10", 1, 1));
    let _frozen = ReadOnlyDir::new(&store);
    let daemon = base.start(&format!(
        "rescan-interval: 1\nqueue-size: 2\nsinks:\n{}",
        local_store(&store)
    ));
    let suspended_runs = || daemon.log_text().matches("collection suspended").count();
    wait_for("suspension logged", LIMIT, Some(&daemon), || suspended_runs() > 0);
    // Progress: two more steps came and were skipped (each suspended run is logged), and still
    // nothing was published past the bound.
    let first = suspended_runs();
    wait_for("two more suspended runs", LIMIT, Some(&daemon), || {
        suspended_runs() >= first + 2
    });
    let waiting = base.count("incoming");
    assert!(
        (1..=2).contains(&waiting),
        "incoming/ should stop at queue-size: {waiting}"
    );
    assert_eq!(base.count("failed"), 0, "a sink failure is not the snapshot's fault");
}
