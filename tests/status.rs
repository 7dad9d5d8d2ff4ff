//! Self-metrics and `spoolmon status` against a real daemon: `state/metrics.prom` is valid
//! exposition format with the daemon's counters and orders by state, the self-metrics reach a
//! local-store sink, and `spoolmon status --json` reports the same; `spoolmon process` and
//! `spoolmon pull` write their own files; status on a missing or idle base directory; a part's
//! error is shown until the part works again (a sink at a closed port, then a real carbon
//! there), and a config refused on SIGHUP is the `config` error until a reload is taken.

mod common;

use common::servers::{free_tcp_port, Carbon};
use common::{local_store_lines, ping_order, signal, wait_for, Base, BIN, FAST};
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

/// The message of `source`'s error in `spoolmon status --json`, if it shows one.
fn error_of(report: &Value, source: &str) -> Option<String> {
    report["last_errors"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["source"] == source)
        .map(|e| e["message"].as_str().unwrap().to_owned())
}

/// Whisper files carbon has written below `dir`.
fn whisper_files(dir: &std::path::Path) -> usize {
    std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| {
            let path = e.path();
            if path.is_dir() {
                whisper_files(&path)
            } else {
                usize::from(path.extension().is_some_and(|x| x == "wsp"))
            }
        })
        .sum()
}

#[test]
fn a_sink_error_is_shown_until_the_sink_delivers_again() {
    let port = free_tcp_port();
    let base = Base::new();
    base.write_order("lo", &ping_order("127.0.0.1", 1, 1));
    let daemon = base.start(&format!(
        "{FAST}self-metrics: {{interval: 1}}\nsinks:\n  carbon: {{type: graphite, server: 127.0.0.1, port: {port}, \
         namespace: t, prefix-hostname: false, retries: 1, interval: 0.2, delay: 0.5, connect-timeout: 0.5}}\n"
    ));
    let mut report = Value::Null;
    wait_for("the sink's error in status", LIMIT, Some(&daemon), || {
        report = status_json(&base);
        error_of(&report, "run: sink carbon").is_some()
    });
    let message = error_of(&report, "run: sink carbon").unwrap();
    assert!(
        message.contains("delivery failed") && message.contains(&port.to_string()),
        "{message}"
    );
    let (_, text, _) = status(&["--base-dir", base.path().to_str().unwrap()]);
    assert!(text.contains("run: sink carbon: delivery failed"), "{text}");

    let carbon = Carbon::start_on(port);
    wait_for("carbon to receive the lines", LIMIT, Some(&daemon), || {
        whisper_files(&carbon.dir.path().join("whisper")) > 0
    });
    wait_for("the sink's error gone from status", LIMIT, Some(&daemon), || {
        report = status_json(&base);
        error_of(&report, "run: sink carbon").is_none()
    });
    let (_, text, _) = status(&["--base-dir", base.path().to_str().unwrap()]);
    assert!(!text.contains("sink carbon:"), "{text}");
    assert!(daemon.terminate(LIMIT).is_some_and(|s| s.success()));
}

#[test]
fn a_config_refused_on_sighup_is_shown_until_a_reload_is_taken() {
    let base = Base::new();
    base.write_order("lo", &ping_order("127.0.0.1", 1, 1));
    let good = format!("{FAST}self-metrics: {{interval: 1}}\n");
    let daemon = base.start(&good);
    wait_for("status.json", LIMIT, Some(&daemon), || {
        base.read("state/status.json").is_some()
    });

    for (bad, key) in [
        ("rescan-interval: oops\n".to_owned(), "rescan-interval"),
        (
            format!("{good}sinks:\n  carbon: {{type: graphite, sever: x}}\n"),
            "sever",
        ),
        ("\u{0}\u{ff}: [\n".to_owned(), "spoolmon.yaml"),
    ] {
        base.write_config(&bad);
        signal(daemon.pid(), "HUP");
        let mut report = Value::Null;
        wait_for("the refused config in status", LIMIT, Some(&daemon), || {
            report = status_json(&base);
            error_of(&report, "run: config").is_some_and(|m| m.contains(key))
        });
        let message = error_of(&report, "run: config").unwrap();
        assert!(message.starts_with("reload refused"), "{message}");
        let (_, text, _) = status(&["--base-dir", base.path().to_str().unwrap()]);
        assert!(text.contains("run: config: reload refused"), "{text}");
    }

    // The running config again (unchanged, but taken): the error goes.
    base.write_config(&good);
    signal(daemon.pid(), "HUP");
    wait_for("the config error gone from status", LIMIT, Some(&daemon), || {
        error_of(&status_json(&base), "run: config").is_none()
    });
    assert!(daemon.log_text().contains("configuration unchanged"));
    // A changed one that is taken clears a refusal too.
    base.write_config("rescan-interval: oops\n");
    signal(daemon.pid(), "HUP");
    wait_for("refused again", LIMIT, Some(&daemon), || {
        error_of(&status_json(&base), "run: config").is_some()
    });
    base.write_config("rescan-interval: 3\nself-metrics: {interval: 1}\n");
    signal(daemon.pid(), "HUP");
    wait_for("reloaded, and the config error gone", LIMIT, Some(&daemon), || {
        daemon.log_text().contains("configuration reloaded") && error_of(&status_json(&base), "run: config").is_none()
    });
    assert!(daemon.terminate(LIMIT).is_some_and(|s| s.success()));
}

#[test]
fn spoolmon_pull_shows_a_refused_reload_until_a_good_one() {
    let base = Base::new();
    let settings = |interval: u32| {
        format!(
            "self-metrics: {{interval: 1}}\npull: {{socket-dir: '{}', pull-interval: {interval}}}\n",
            base.join("no-sockets").display()
        )
    };
    base.write_config(&settings(1));
    let pull = base.spawn(&[], "pull");
    wait_for("status-pull.json", LIMIT, Some(&pull), || {
        base.read("state/status-pull.json").is_some()
    });
    for (bad, key) in [
        ("pull: {pull-interval: oops}\n", "pull-interval"),
        ("self-metrics: {interval: 1}\n", "no pull: section"),
    ] {
        base.write_config(bad);
        signal(pull.pid(), "HUP");
        wait_for("the refused config in status", LIMIT, Some(&pull), || {
            error_of(&status_json(&base), "pull: config").is_some_and(|m| m.contains(key))
        });
    }
    base.write_config(&settings(2));
    signal(pull.pid(), "HUP");
    wait_for("the config error gone from status", LIMIT, Some(&pull), || {
        error_of(&status_json(&base), "pull: config").is_none()
    });
    assert!(pull.terminate(LIMIT).is_some_and(|s| s.success()));
}

#[test]
fn spoolmon_process_shows_a_refused_reload_until_a_good_one() {
    let base = Base::new();
    let good = format!("{FAST}self-metrics: {{interval: 1}}\n");
    base.write_config(&good);
    let process = base.spawn(&[], "process");
    wait_for("status-process.json", LIMIT, Some(&process), || {
        base.read("state/status-process.json").is_some()
    });
    base.write_config("workers: many\n");
    signal(process.pid(), "HUP");
    wait_for("the refused config in status", LIMIT, Some(&process), || {
        error_of(&status_json(&base), "process: config").is_some_and(|m| m.contains("workers"))
    });
    base.write_config(&good);
    signal(process.pid(), "HUP");
    wait_for("the config error gone from status", LIMIT, Some(&process), || {
        error_of(&status_json(&base), "process: config").is_none()
    });
    assert!(process.terminate(LIMIT).is_some_and(|s| s.success()));
}
