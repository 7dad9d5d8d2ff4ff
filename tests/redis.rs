//! The Redis sink and the API's `/series/` against a real `redis-server` (Debian's), started by
//! the test: a real `spoolmon run` measuring loopback writes pmseries-style series (read back
//! with the independent `redis-cli`), `/series/query`, `/values`, `/labels`, `/metrics` answer
//! from them; Redis killed with -9 means a backlog in the outbox and a 503 at once from
//! `/series/`, the daemon measuring on; a new Redis on the same port gets the backlog by the
//! sink's own reconnecting, every step of the outage there, none missing.

mod common;

use common::servers::{free_tcp_port, redis_cli, Redis};
use common::*;
use serde_json::Value;
use std::process::Command;
use std::time::Duration;

const LIMIT: Duration = Duration::from_secs(90);

/// GET `url` with `params` URL-encoded (`name=value` each).
fn get_with(url: &str, params: &[&str]) -> (u16, Value) {
    let mut command = Command::new("curl");
    command.args(["-sS", "-G", "--max-time", "30", "-w", "\n%{http_code}", url]);
    for param in params {
        command.args(["--data-urlencode", param]);
    }
    let out = command.output().unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    let (body, code) = text.rsplit_once('\n').unwrap();
    (code.parse().unwrap(), serde_json::from_str(body).unwrap_or(Value::Null))
}

fn get(url: &str) -> (u16, Value) {
    get_with(url, &[])
}

/// The stream entries (ms) of lab/a's median, read with redis-cli.
fn median_times(port: u16) -> Vec<i64> {
    let ids = redis_cli(port, &["SMEMBERS", "spoolmon:label:order:lab/a"]);
    let medians = redis_cli(port, &["SMEMBERS", "spoolmon:metric.name:spoolmon.ping.median"]);
    let Some(id) = ids.lines().find(|id| medians.lines().any(|m| m == *id)) else {
        return Vec::new();
    };
    redis_cli(port, &["XRANGE", &format!("spoolmon:values:{id}"), "-", "+"])
        .lines()
        .filter_map(|l| l.strip_suffix("-0")?.parse().ok())
        .collect()
}

#[test]
fn series_reach_redis_queries_read_them_and_an_outage_is_a_backlog_not_a_loss() {
    require_root("native ICMP to 127.0.0.0/8");
    let redis_port = free_tcp_port();
    let redis = Redis::start(redis_port);
    let base = Base::new();
    base.write_order("lab/a", &ping_order("127.0.0.1", 2, 3));
    base.write_order("lab/b", &ping_order("127.0.0.2", 2, 3));
    let api_port = free_tcp_port();
    let mut daemon = base.start(&format!(
        "rescan-interval: 2\nnode-name: node-1\napi:\n  listen: [\"127.0.0.1:{api_port}\"]\nsinks:\n  r:\n    type: redis\n    port: {redis_port}\n    connect-timeout: 0.5\n    timeout: 2\n    takes: [ping]\n"
    ));
    wait_for("lab/a's medians in Redis", LIMIT, Some(&daemon), || {
        median_times(redis_port).len() >= 3
    });

    // pmseries' layout, read by another client: names, labels, metadata.
    let names = redis_cli(redis_port, &["SMEMBERS", "spoolmon:metric.names"]);
    for name in [
        "spoolmon.ping.loss",
        "spoolmon.ping.median",
        "spoolmon.ping.min",
        "spoolmon.ping.max",
    ] {
        assert!(names.lines().any(|l| l == name), "{name} in {names}");
    }
    assert!(redis_cli(redis_port, &["SMEMBERS", "spoolmon:label:node:values"]).contains("node-1"));
    let times = median_times(redis_port);
    assert!(times.windows(2).all(|w| w[1] > w[0]), "{times:?}");
    assert!(times.iter().all(|t| t % 2000 == 0), "steps of 2 s: {times:?}");

    // The API reads them: query by name and label, values, labels, metrics.
    let api = format!("http://127.0.0.1:{api_port}/series");
    let (status, found) = get_with(
        &format!("{api}/query"),
        &["expr=spoolmon.ping.median{order==\"lab/a\"}", "start=-1h"],
    );
    assert_eq!(status, 200, "{found}");
    let found = found.as_array().unwrap();
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0]["labels"]["order"], "lab/a");
    assert_eq!(found[0]["labels"]["node"], "node-1");
    let values = found[0]["values"].as_array().unwrap();
    assert!(values.len() >= 3);
    let median: f64 = values.last().unwrap()["value"].as_str().unwrap().parse().unwrap();
    assert!(median > 0.0 && median < 0.01, "loopback: {median}");
    let id = found[0]["series"].as_str().unwrap().to_string();
    let (_, all) = get(&format!("{api}/query?expr=spoolmon.ping.*"));
    assert_eq!(all.as_array().unwrap().len(), 8, "4 names × 2 orders: {all}");
    let (_, without_b) = get_with(&format!("{api}/query"), &["expr=spoolmon.ping.loss{order!=\"lab/b\"}"]);
    assert_eq!(without_b.as_array().unwrap().len(), 1);
    let (status, by_id) = get(&format!("{api}/values?series={id}&start=-1h"));
    assert_eq!(status, 200);
    assert!(
        by_id.as_array().unwrap().len() >= values.len(),
        "every value of the query, and newer"
    );
    let (_, labels) = get(&format!("{api}/labels?names=order"));
    assert_eq!(labels["order"], serde_json::json!(["lab/a", "lab/b"]));
    let (_, metrics) = get(&format!("{api}/metrics?match=spoolmon.ping.m*"));
    assert_eq!(
        metrics,
        serde_json::json!(["spoolmon.ping.max", "spoolmon.ping.median", "spoolmon.ping.min"])
    );
    for (endpoint, param) in [
        ("query", "expr=spoolmon.ping.median{order"),
        ("query", "expr="),
        ("values", "series=zz"),
        ("query", "exprs=x"),
        ("query", "expr=a;b"),
        ("query", "expr=a{b~\"c\"}"),
    ] {
        let (status, answer) = get_with(&format!("{api}/{endpoint}"), &[param]);
        assert_eq!(status, 400, "{param}: {answer}");
        assert!(answer["error"].is_string(), "{answer}");
    }

    // Redis killed: a backlog, /series/ answers 503 at once with the cause, measuring goes on.
    drop(redis);
    let down_at = unix_now() * 1000;
    let (status, refused) = get(&format!("{api}/query?expr=spoolmon.ping.median"));
    assert_eq!(status, 503, "{refused}");
    assert!(
        refused["error"].as_str().unwrap().contains("cannot read the series"),
        "{refused}"
    );
    wait_for("a backlog in the outbox", LIMIT, Some(&daemon), || {
        outbox_figure(&base, "r", "records") >= 3
    });
    assert!(daemon.is_running());

    // A new, empty Redis on the same port: the sink reconnects by itself and delivers every
    // step of the outage.
    let _redis = Redis::start(redis_port);
    wait_for("the backlog delivered", LIMIT, Some(&daemon), || {
        outbox_figure(&base, "r", "records") == 0 && median_times(redis_port).len() >= 4
    });
    let after = median_times(redis_port);
    assert!(
        after[0] <= down_at + 2000,
        "the first step of the outage is there: {after:?} (down at {down_at})"
    );
    assert!(after.windows(2).all(|w| w[1] > w[0]), "{after:?}");
    // Every step the daemon measured from the outage on (its RRD rows, updated at the end of
    // each step) is in the new Redis.
    let last = *after.last().unwrap() / 1000;
    let rrd = base.join("output/lab/a/main.rrd");
    let fetched = rrdtool(&[
        "fetch",
        rrd.to_str().unwrap(),
        "AVERAGE",
        "-r",
        "2",
        "-s",
        &(after[0] / 1000).to_string(),
        "-e",
        &(last + 2).to_string(),
    ]);
    let measured: Vec<i64> = fetched
        .lines()
        .filter_map(|line| {
            let (time, values) = line.split_once(':')?;
            let median: f64 = values.split_whitespace().nth(1)?.parse().ok()?;
            let end: i64 = time.trim().parse().ok()?;
            median.is_finite().then_some((end - 2) * 1000)
        })
        .filter(|t| *t >= after[0] && *t <= last * 1000)
        .collect();
    assert!(measured.len() >= 2, "{fetched}");
    for time in &measured {
        assert!(after.contains(time), "step {time} measured but not in Redis: {after:?}");
    }
    assert!(daemon.is_running(), "{}", daemon.log_text());
}
