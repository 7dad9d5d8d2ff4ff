//! Helpers for tests that run spoolmon nodes: a receiver's config and start, the RRD rows a
//! parent holds for a child, a node's outbox backlog.
#![allow(dead_code)]

use super::{wait_for, Base};
use std::time::Duration;

pub const KEY: &str = "0b1f4d2e-6a7c-4e8b-9d0f-1a2b3c4d5e6f";

pub fn config(port: u16) -> String {
    format!(
        "receive:\n  listen: [\"127.0.0.1:{port}\"]\n  api-keys:\n    {KEY}: {{allow-from: \"127.0.0.1\"}}\n  timeout: 5\n"
    )
}

/// Starts `spoolmon process` on `base` (its config written before) and waits until it listens.
pub fn spawn_receiver(base: &Base, port: u16) -> super::Daemon {
    let daemon = base.spawn(&["--log-level", "debug"], "process");
    wait_for("the receiver to listen", Duration::from_secs(30), Some(&daemon), || {
        listening(port)
    });
    daemon
}

pub fn listening(port: u16) -> bool {
    std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
}

pub fn rrd_rows(path: &std::path::Path, resolution: u32, from: i64, until: i64) -> Vec<(i64, String)> {
    let text = super::rrdtool(&[
        "fetch",
        path.to_str().unwrap(),
        "AVERAGE",
        "-r",
        &resolution.to_string(),
        "-s",
        &from.to_string(),
        "-e",
        &until.to_string(),
    ]);
    text.lines()
        .filter_map(|line| {
            let (time, values) = line.split_once(':')?;
            Some((time.trim().parse().ok()?, values.trim().to_string()))
        })
        .collect()
}

/// The times of the rows whose first value (loss) is known.
pub fn measured_rows(rows: &[(i64, String)]) -> Vec<i64> {
    rows.iter()
        .filter(|(_, values)| !values.split_whitespace().next().unwrap_or("nan").ends_with("nan"))
        .map(|(time, _)| *time)
        .collect()
}

/// `time:` of a last_result, if the file exists.
pub fn last_time(base: &Base, rel: &str) -> Option<i64> {
    let text = base.read(rel)?;
    super::field(&text, "time").parse().ok()
}

/// `spoolmon outbox --json` of `base`: `sink`'s entry.
pub fn outbox_entry(base: &Base, sink: &str) -> Option<serde_json::Value> {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_spoolmon"))
        .args(["outbox", "--json", "--base-dir"])
        .arg(base.path())
        .output()
        .ok()?;
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
    json.as_array()?.iter().find(|s| s["sink"] == sink).cloned()
}

/// Lines pending in `sink`'s outbox on `base`, as `spoolmon outbox --json` reports them.
pub fn outbox_lines(base: &Base, sink: &str) -> Option<u64> {
    outbox_entry(base, sink)?["lines"].as_u64()
}

/// A child base with orders `lan/t1`..`lan/t<n>` pinging `127.0.9.<i>` every second.
pub fn child_with_orders(n: usize) -> Base {
    let child = Base::new();
    for i in 1..=n {
        child.write_order(&format!("lan/t{i}"), &super::ping_order(&format!("127.0.9.{i}"), 1, 1));
    }
    child
}

/// Waits until `base`'s order `lan/t1` has measured `steps` more steps than now.
pub fn wait_steps(base: &Base, steps: i64, daemon: &super::Daemon) {
    let local = "output/lan/t1/last_result";
    let from = last_time(base, local).unwrap();
    wait_for(
        &format!("{steps} more steps"),
        Duration::from_secs(60),
        Some(daemon),
        || last_time(base, local).is_some_and(|t| t >= from + steps),
    );
}

/// Asserts every 1-second step in `from + 1 ..= until` is a measured row of `rrd` (a row is
/// labelled with the end of its step).
pub fn assert_no_gap(rrd: &std::path::Path, from: i64, until: i64) {
    let rows = rrd_rows(rrd, 1, from, until + 1);
    let measured = measured_rows(&rows);
    for step in (from + 1)..=until {
        assert!(
            measured.contains(&(step + 1)),
            "step {step} missing in {}: {rows:?}",
            rrd.display()
        );
    }
}
