//! Self-metrics and `spoolmon status` against a real daemon: `state/metrics.prom` is valid
//! exposition format with the daemon's counters and orders by state, the self-metrics reach a
//! local-store sink, and `spoolmon status --json` reports the same; `spoolmon process` and
//! `spoolmon pull` write their own files; status on a missing or idle base directory.

mod common;

use common::{local_store_lines, ping_order, wait_for, Base, BIN, FAST};
use serde_json::Value;
use std::collections::{BTreeMap, HashSet};
use std::process::Command;
use std::time::Duration;

const LIMIT: Duration = Duration::from_secs(60);

/// Checks `text` against the exposition format (HELP, then TYPE, then that family's samples;
/// valid names; counters end in `_total`); returns `name{labels}` → value.
fn parse_exposition(text: &str) -> BTreeMap<String, f64> {
    let valid = |name: &str| {
        let mut chars = name.chars();
        chars
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
            && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
    };
    let (mut helped, mut typed) = (HashSet::new(), HashSet::new());
    let mut family = String::new();
    let mut samples = BTreeMap::new();
    assert!(text.ends_with('\n'), "no final newline");
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let name = rest.split(' ').next().unwrap();
            assert!(valid(name) && helped.insert(name.to_string()), "bad HELP: {line}");
        } else if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap();
            assert!(
                helped.contains(name) && typed.insert(name.to_string()),
                "bad TYPE: {line}"
            );
            assert!(
                kind == "gauge" || (kind == "counter" && name.ends_with("_total")),
                "{line}"
            );
            family = name.to_string();
        } else {
            let (key, value) = line.rsplit_once(' ').unwrap();
            let name = key.split('{').next().unwrap();
            assert_eq!(name, family, "sample outside its family: {line}");
            if let Some(labels) = key.strip_prefix(name) {
                assert!(
                    labels.is_empty() || (labels.starts_with('{') && labels.ends_with("\"}")),
                    "{line}"
                );
            }
            samples.insert(key.to_string(), value.parse::<f64>().unwrap());
        }
    }
    samples
}

fn status(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(BIN).arg("status").args(args).output().unwrap();
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    (out.status.code().unwrap_or(-1), text(&out.stdout), text(&out.stderr))
}

fn status_json(base: &Base) -> Value {
    let (code, out, err) = status(&["--base-dir", base.path().to_str().unwrap(), "--json"]);
    assert_eq!(code, 0, "{err}");
    serde_json::from_str(&out).unwrap()
}

fn metrics(base: &Base, file: &str) -> Option<BTreeMap<String, f64>> {
    base.read(&format!("state/{file}")).map(|text| parse_exposition(&text))
}

#[test]
fn the_daemon_writes_its_metrics_sends_them_to_the_sink_and_status_reports_the_same() {
    let base = Base::new();
    base.write_order("a/one", &ping_order("127.0.0.1", 1, 1));
    base.write_order("a/two", &ping_order("127.0.0.2", 1, 1));
    base.write_order("broken", "user: x\nstep: 1\n");
    let store = base.join("store");
    let config = format!(
        "{FAST}self-metrics: {{interval: 1, sinks: [store]}}\nsinks:\n  \
         store: {{type: local-store, dir: '{}', namespace: t, prefix-hostname: false}}\n",
        store.display()
    );
    let daemon = base.start(&config);
    wait_for("processed snapshots in metrics.prom", LIMIT, Some(&daemon), || {
        metrics(&base, "metrics.prom").is_some_and(|m| m.get("spoolmon_snapshots_processed_total") > Some(&0.0))
    });
    let samples = metrics(&base, "metrics.prom").unwrap();
    assert_eq!(samples["spoolmon_orders{state=\"active\"}"], 2.0);
    assert_eq!(samples["spoolmon_orders{state=\"invalid\"}"], 1.0);
    assert_eq!(samples["spoolmon_orders{state=\"unresolved\"}"], 0.0);
    assert!(samples["spoolmon_probe_pings_sent_total"] > 0.0, "{samples:?}");
    assert!(samples["spoolmon_start_time_seconds"] > 1.6e9);
    assert_eq!(samples["spoolmon_build_info{version=\"0.1.0\"}"], 1.0);

    wait_for("self-metrics in the local-store sink", LIMIT, Some(&daemon), || {
        let lines = local_store_lines(&store);
        let value = |path: &str| lines.iter().rev().find(|((p, _), _)| p == path).map(|(_, v)| *v);
        value("t.spoolmon.orders.active") == Some(2.0)
            && value("t.spoolmon.snapshots_processed_total").is_some_and(|v| v > 0.0)
    });

    let report = status_json(&base);
    assert_eq!(report["daemon"]["running"], true, "{report}");
    assert_eq!(report["daemon"]["pid"], daemon.pid());
    assert_eq!(report["orders"]["active"], 2);
    assert_eq!(report["orders"]["invalid"], 1);
    assert_eq!(report["orders"]["problems"][0]["id"], "broken");
    let run = &report["self_metrics"][0];
    assert_eq!(
        (run["component"].as_str(), run["running"].as_bool()),
        (Some("run"), Some(true))
    );
    assert_eq!(run["metrics"]["spoolmon_orders{state=\"invalid\"}"], 1.0);
    assert!(run["metrics"]["spoolmon_snapshots_processed_total"].as_f64() > Some(0.0));
    let (code, text, _) = status(&["--base-dir", base.path().to_str().unwrap()]);
    assert_eq!(code, 0);
    assert!(text.contains(&format!("running, pid {}", daemon.pid())), "{text}");
    assert!(text.contains("2 active, 0 failing, 1 invalid, 0 unresolved"), "{text}");
    assert!(text.contains("order broken (invalid)"), "{text}");

    assert!(daemon.terminate(LIMIT).is_some_and(|s| s.success()));
    let report = status_json(&base);
    assert_eq!(report["daemon"]["running"], false);
    assert_eq!(report["self_metrics"][0]["running"], false);
}

#[test]
fn spoolmon_process_writes_its_own_metrics_file() {
    let base = Base::new();
    base.write_config(FAST);
    let process = base.spawn(&[], "process");
    wait_for("state/metrics-process.prom", LIMIT, Some(&process), || {
        base.read("state/status-process.json").is_some()
    });
    let samples = metrics(&base, "metrics-process.prom").unwrap();
    assert_eq!(samples["spoolmon_snapshots_processed_total"], 0.0);
    assert!(!samples.keys().any(|k| k.starts_with("spoolmon_orders")), "{samples:?}");
    assert!(
        base.read("state/metrics.prom").is_none(),
        "process must not write run's file"
    );
    let report = status_json(&base);
    assert_eq!(report["self_metrics"][0]["component"], "process");
    assert_eq!(report["daemon"]["pid"], process.pid());
    assert!(process.terminate(LIMIT).is_some_and(|s| s.success()));
}

#[test]
fn spoolmon_pull_writes_its_own_metrics_and_its_last_error() {
    let base = Base::new();
    base.write_config(&format!(
        "self-metrics: {{interval: 1}}\npull: {{socket-dir: '{}', pull-interval: 1}}\n",
        base.join("no-sockets").display()
    ));
    let pull = base.spawn(&[], "pull");
    wait_for("failed cycles in metrics-pull.prom", LIMIT, Some(&pull), || {
        metrics(&base, "metrics-pull.prom").is_some_and(|m| m.get("spoolmon_pull_failed_cycles_total") > Some(&0.0))
    });
    // status-pull.json is written just after metrics-pull.prom: wait for it too.
    let mut report = serde_json::Value::Null;
    wait_for("the pull error in spoolmon status", LIMIT, Some(&pull), || {
        report = status_json(&base);
        report["last_errors"][0]["source"] == "pull"
    });
    assert_eq!(report["pull"]["pid"], pull.pid(), "{report}");
    assert_eq!(report["daemon"]["running"], false);
    assert_eq!(report["self_metrics"][0]["component"], "pull");
    let error = &report["last_errors"][0];
    assert_eq!(error["source"], "pull", "{report}");
    assert!(
        error["message"].as_str().unwrap().contains("pull cycle failed"),
        "{report}"
    );
    assert!(base.read("state/metrics.prom").is_none());
    assert!(pull.terminate(LIMIT).is_some_and(|s| s.success()));
}

#[test]
fn status_of_a_missing_base_fails_and_of_an_idle_one_says_nothing_runs() {
    let (code, out, err) = status(&["--base-dir", "/nonexistent/spoolmon"]);
    assert_eq!(code, 2, "{out}");
    assert!(
        err.contains("cannot read base directory /nonexistent/spoolmon") && !err.contains("panicked"),
        "{err}"
    );
    let base = Base::new();
    let (code, text, _) = status(&["--base-dir", base.path().to_str().unwrap()]);
    assert_eq!(code, 0);
    assert!(text.contains("daemon    not running"), "{text}");
    let report = status_json(&base);
    assert_eq!(report["daemon"]["running"], false);
    assert_eq!(report["self_metrics"].as_array().map(Vec::len), Some(0));
}
