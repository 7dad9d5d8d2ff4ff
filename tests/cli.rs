//! The command line: clear errors and exit codes for bad arguments and bad config files.

mod common;

use common::BIN;
use std::process::{Command, Output};

fn spoolmon(args: &[&str]) -> Output {
    Command::new(BIN).args(args).output().expect("spoolmon runs")
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn printed_defaults_are_a_valid_config_file() {
    let out = spoolmon(&["config", "--print-defaults"]);
    assert!(out.status.success());
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.yaml");
    std::fs::write(&path, &out.stdout).unwrap();
    let back = spoolmon(&["config", "--print", "--config", path.to_str().unwrap()]);
    assert!(back.status.success(), "{}", stderr(&back));
    // --print is the defaults without the commented-out sink and pull blocks.
    let printed = String::from_utf8(out.stdout).unwrap();
    let uncommented: String = printed
        .lines()
        .filter(|l| !l.starts_with('#'))
        .map(|l| format!("{l}\n"))
        .collect();
    assert!(uncommented.len() < printed.len(), "{printed}");
    assert_eq!(String::from_utf8(back.stdout).unwrap(), uncommented);
}

#[test]
fn the_checked_in_config_reference_is_what_the_binary_prints() {
    let out = spoolmon(&["config", "--reference"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let printed = String::from_utf8(out.stdout).unwrap();
    let checked_in = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/config-reference.md")).unwrap();
    assert!(
        printed == checked_in,
        "config-reference.md is out of date: regenerate it with `spoolmon config --reference > config-reference.md` \
         (cargo run -- config --reference > config-reference.md)"
    );
    for section in [
        "## Top level",
        "## `icmp:`",
        "## `pull:`",
        "## `process:`",
        "## `self-metrics:`",
        "## `sinks:`",
    ] {
        assert!(printed.contains(&format!("\n{section}\n")), "{section}");
    }
    for kind in ["graphite", "influxdb", "local-store"] {
        assert!(printed.contains(&format!("\n### `type: {kind}`\n")), "{kind}");
    }
}

#[test]
fn reference_does_not_combine_with_the_other_prints() {
    for other in ["--print", "--print-defaults"] {
        let out = spoolmon(&["config", "--reference", other]);
        assert_eq!(out.status.code(), Some(2), "{other}");
        assert!(
            stderr(&out).contains("cannot be used with"),
            "{other}: {}",
            stderr(&out)
        );
    }
}

#[test]
fn bad_config_files_name_the_file_and_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        ("unknown.yaml", "queue-sise: 10\n", "queue-sise"),
        ("negative.yaml", "queue-size: -1\n", "queue-size"),
        ("zero.yaml", "order-timeout: 0\n", "order-timeout"),
        ("garbage.yaml", "\u{0}\u{1}[[[", "garbage.yaml"),
        ("list.yaml", "- a\n- b\n", "list.yaml"),
    ];
    for (name, text, expected) in cases {
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        let out = spoolmon(&["config", "--print", "--config", path.to_str().unwrap()]);
        assert_eq!(out.status.code(), Some(2), "{name}");
        let err = stderr(&out);
        assert!(err.contains(name) && err.contains(expected), "{name}: {err}");
        // The daemon refuses the same file before touching the base directory.
        let base = dir.path().join(format!("base-{name}"));
        let run = spoolmon(&[
            "run",
            "--base-dir",
            base.to_str().unwrap(),
            "--config",
            path.to_str().unwrap(),
        ]);
        assert_eq!(run.status.code(), Some(2), "{name}: {}", stderr(&run));
        assert!(!base.exists(), "{name}: base directory created despite a bad config");
    }
    let missing = spoolmon(&["config", "--print", "--config", "/nonexistent/spoolmon.yaml"]);
    assert!(stderr(&missing).contains("/nonexistent/spoolmon.yaml"));
}

#[test]
fn orders_on_a_missing_base_directory_is_a_clear_error() {
    let out = spoolmon(&["orders", "--base-dir", "/nonexistent/base"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("/nonexistent/base/orders is not a directory"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn unknown_arguments_are_refused_with_usage() {
    for args in [&["run", "--bse-dir", "x"][..], &["frobnicate"][..], &["config"][..]] {
        let out = spoolmon(args);
        assert!(!out.status.success(), "{args:?}");
        assert!(!stderr(&out).is_empty(), "{args:?}");
    }
}

#[test]
fn outbox_shows_each_sinks_backlog_as_a_table_and_as_json() {
    use spoolmon::sink::outbox::{Outbox, OutboxLimits};
    let base = tempfile::tempdir().unwrap();
    let outbox = Outbox::open(&base.path().join("outbox/carbon"), OutboxLimits::default()).unwrap();
    outbox.append(b"t.a 1 1700000000\nt.b 2 1700000000\n", 2).unwrap();
    drop(outbox);
    let dir = base.path().to_str().unwrap();
    let table = spoolmon(&["outbox", "--base-dir", dir]);
    assert!(table.status.success(), "{}", stderr(&table));
    let text = String::from_utf8_lossy(&table.stdout);
    let row = text
        .lines()
        .find(|l| l.starts_with("carbon"))
        .unwrap_or_else(|| panic!("{text}"));
    assert_eq!(row.split_whitespace().nth(2), Some("2"), "{text}");
    let json = spoolmon(&["outbox", "--base-dir", dir, "--json"]);
    let parsed: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(parsed[0]["sink"], "carbon");
    assert_eq!(parsed[0]["lines"], 2);
    let missing = spoolmon(&["outbox", "--base-dir", "/nonexistent/base"]);
    assert_eq!(missing.status.code(), Some(2));
    assert!(stderr(&missing).contains("not a directory"), "{}", stderr(&missing));
}
