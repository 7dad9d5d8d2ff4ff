//! `spoolmon backfill` through a real Redis sink (Debian's `redis-server`, read back with the
//! independent `redis-cli`): RRD history made by the real `rrdtool` becomes the same series live
//! results make, each period from the finest archive covering it (20 s rows for the last hour,
//! 5-minute rows before, none overlapping), the values those of `rrdtool fetch`. Interrupted by
//! kill -9 while Redis is down, the same command again finishes from the durable outbox and the
//! progress file; nothing is missing. Wrong sinks and arguments are refused.

mod common;

use common::servers::{free_tcp_port, redis_cli, Redis};
use common::*;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

const LIMIT: Duration = Duration::from_secs(90);
const ORDERS: usize = 12;

/// (ms, value) of an order's median stream.
fn medians(port: u16, order: &str) -> Vec<(i64, f64)> {
    let ids = redis_cli(port, &["SMEMBERS", &format!("spoolmon:label:order:{order}")]);
    let medians = redis_cli(port, &["SMEMBERS", "spoolmon:metric.name:spoolmon.ping.median"]);
    let Some(id) = ids.lines().find(|id| medians.lines().any(|m| m == *id)) else {
        return Vec::new();
    };
    let out = redis_cli(port, &["XRANGE", &format!("spoolmon:values:{id}"), "-", "+"]);
    let lines: Vec<&str> = out.lines().collect();
    lines
        .chunks(3)
        .filter_map(|c| Some((c[0].strip_suffix("-0")?.parse().ok()?, c.get(2)?.parse().ok()?)))
        .collect()
}

/// A 3-ping SmokePing RRD with 6 hours of rows: 20 s rows for the last hour, 5-minute ones for
/// 12 hours. Returns the time of its last update.
fn history_rrd(base: &Base, id: &str, now: i64, scale: f64) -> i64 {
    let path = base.join(&format!("output/{id}/main.rrd"));
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let file = path.to_str().unwrap();
    let start = (now - 6 * 3600) / 300 * 300;
    rrdtool(&[
        "create",
        file,
        "--start",
        &(start - 20).to_string(),
        "--step",
        "20",
        "DS:loss:GAUGE:40:0:3",
        "DS:median:GAUGE:40:0:180",
        "DS:ping1:GAUGE:40:0:180",
        "DS:ping2:GAUGE:40:0:180",
        "DS:ping3:GAUGE:40:0:180",
        "RRA:AVERAGE:0.5:1:180",
        "RRA:AVERAGE:0.5:15:144",
        "RRA:MAX:0.5:15:144",
    ]);
    let steps = (now - start) / 20;
    let updates: Vec<String> = (0..steps)
        .map(|i| {
            let v = |k: f64| format!("{:e}", scale * (1.0 + (i % 11) as f64 + k) / 1000.0);
            let lost = i % 17 == 0;
            format!(
                "{}:{}:{}:{}:{}:{}",
                start + i * 20,
                u8::from(lost),
                v(0.5),
                v(0.0),
                v(0.5),
                if lost { "U".into() } else { v(1.0) }
            )
        })
        .collect();
    for chunk in updates.chunks(200) {
        let mut args = vec!["update", file];
        args.extend(chunk.iter().map(String::as_str));
        rrdtool(&args);
    }
    start + (steps - 1) * 20
}

fn backfill(base: &Base, args: &[&str]) -> Child {
    Command::new(env!("CARGO_BIN_EXE_spoolmon"))
        .args(["backfill", "--base-dir"])
        .arg(base.path())
        .arg("--config")
        .arg(base.join("spoolmon.yaml"))
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

#[test]
fn history_goes_through_the_sink_finest_first_and_an_interrupted_backfill_finishes() {
    let base = Base::new();
    let now = unix_now();
    let mut last = 0;
    for i in 0..ORDERS {
        last = history_rrd(&base, &format!("lab/o{i:02}"), now, 1.0 + i as f64);
    }
    std::fs::create_dir_all(base.join("state")).unwrap();
    let port = free_tcp_port();
    base.write_config(&format!(
        "node-name: n1\nsinks:\n  r:\n    type: redis\n    port: {port}\n    connect-timeout: 0.3\n    timeout: 2\n    takes: [ping]\n  debug:\n    type: local-store\n    dir: {}\n",
        base.join("ls").display()
    ));

    // Redis down: the history is read into the outbox; killed -9 while it waits to deliver.
    let mut first = backfill(&base, &["--to", "r"]);
    wait_for("the backfill reading orders", LIMIT, None, || {
        base.read("state/backfill-r.json")
            .is_some_and(|p| p.contains("last_done"))
    });
    first.kill().unwrap();
    first.wait().unwrap();
    assert!(base.read("state/backfill-r.json").is_some(), "the progress survives");

    // Redis up, the same command: it continues and ends once everything is delivered.
    let _redis = Redis::start(port);
    let second = backfill(&base, &["--to", "r"]).wait_with_output().unwrap();
    assert!(second.status.success(), "{}", String::from_utf8_lossy(&second.stderr));
    assert!(
        base.read("state/backfill-r.json").is_none(),
        "a finished backfill leaves no progress"
    );

    for i in 0..ORDERS {
        let order = format!("lab/o{i:02}");
        let values = medians(port, &order);
        let times: Vec<i64> = values.iter().map(|v| v.0 / 1000).collect();
        assert!(
            times.windows(2).all(|w| w[1] > w[0]),
            "{order}: in time order, no repeats"
        );
        // The last hour at 20 s, before it 5-minute rows, meeting without overlap.
        let fine: Vec<&i64> = times.iter().filter(|t| **t > last - 3600).collect();
        assert!(fine.len() >= 170, "{order}: {} rows of 20 s", fine.len());
        assert!(fine.windows(2).all(|w| w[1] - w[0] == 20), "{order}: every 20 s row");
        let coarse: Vec<&i64> = times.iter().filter(|t| **t <= last - 3600 - 300).collect();
        assert!(coarse.len() >= 50, "{order}: {} rows of 5 minutes", coarse.len());
        assert!(
            coarse.windows(2).all(|w| w[1] - w[0] == 300),
            "{order}: every 5-minute row"
        );
        // The values are rrdtool fetch's: a 20 s row (its time is the row's start).
        let (ms, value) = values[values.len() - 10];
        let row_end = ms / 1000 + 20;
        let fetched = rrdtool(&[
            "fetch",
            base.join(&format!("output/{order}/main.rrd")).to_str().unwrap(),
            "AVERAGE",
            "-r",
            "20",
            "-s",
            &(row_end - 20).to_string(),
            "-e",
            &row_end.to_string(),
        ]);
        let line = fetched
            .lines()
            .find(|l| l.starts_with(&format!("{row_end}:")))
            .unwrap_or_else(|| panic!("{fetched}"));
        let pings: Vec<f64> = line.split_whitespace().skip(3).filter_map(|v| v.parse().ok()).collect();
        // The median the sink sends is the upper median of the row's answered pings.
        let mut answered: Vec<f64> = pings.into_iter().filter(|v| v.is_finite()).collect();
        answered.sort_by(f64::total_cmp);
        assert!(
            ((answered[answered.len() / 2] - value) / value).abs() < 1e-9,
            "{order}: {line} vs {value}"
        );
    }

    // The backfill's outbox is drained; the daemon's outbox of the sink was never touched.
    let outbox = Command::new(env!("CARGO_BIN_EXE_spoolmon"))
        .args(["outbox", "--json", "--base-dir"])
        .arg(base.path())
        .output()
        .unwrap();
    let outbox: serde_json::Value = serde_json::from_slice(&outbox.stdout).unwrap();
    let listed: Vec<&serde_json::Value> = outbox.as_array().unwrap().iter().collect();
    assert!(
        listed.iter().any(|s| s["sink"] == "r@backfill" && s["records"] == 0),
        "{outbox}"
    );
    assert!(!base.join("outbox/r").exists());

    // Refused: an unknown sink, a sink without an outbox, a bad time, unknown orders glob.
    for (args, why) in [
        (vec!["--to", "nosuch"], "no sink \"nosuch\""),
        (vec!["--to", "debug"], "cannot be backfilled"),
        (vec!["--to", "r", "--since", "yesterday"], "--since"),
        (vec!["--to", "r", "--orders", "[a"], "--orders"),
    ] {
        let out = backfill(&base, &args).wait_with_output().unwrap();
        assert!(!out.status.success(), "{args:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(why), "{args:?}: {stderr}");
    }
}
