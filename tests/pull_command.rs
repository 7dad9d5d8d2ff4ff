//! `spoolmon pull` as a process against real HAProxy instances: it publishes snapshots, keeps
//! its settings on a bad SIGHUP reload, takes new ones on a good one, refuses a second puller
//! on the same base, and stops promptly on SIGTERM.

mod common;

use common::servers::{Haproxy, HaproxySetup};
use common::*;
use std::process::Command;
use std::time::Duration;

const LIMIT: Duration = Duration::from_secs(60);

fn pull_config(socket_dir: &std::path::Path, interval: u32) -> String {
    format!(
        "pull:\n  socket-dir: '{}'\n  pull-interval: {interval}\n  pull-timeout: 0.9\n",
        socket_dir.display()
    )
}

fn start_pull(base: &Base) -> Daemon {
    base.spawn(&["--log-level", "debug"], "pull")
}

#[test]
fn pull_publishes_reloads_on_sighup_refuses_a_second_puller_and_stops_on_sigterm() {
    let haproxy = Haproxy::start(&HaproxySetup {
        instances: 2,
        ..HaproxySetup::default()
    });
    let base = Base::new();
    base.write_config(&pull_config(&haproxy.socket_dir, 1));
    let pull = start_pull(&base);
    wait_for("a snapshot from both instances", LIMIT, Some(&pull), || {
        std::fs::read_dir(base.join("incoming"))
            .is_ok_and(|entries| entries.flatten().any(|e| e.path().join("haproxy-2.sock_stat").exists()))
    });

    let checked = Command::new(BIN)
        .args(["check", "pull", "--base-dir"])
        .arg(base.path())
        .output()
        .unwrap();
    let line = String::from_utf8_lossy(&checked.stdout);
    assert_eq!(checked.status.code(), Some(0), "{line}");
    assert!(line.starts_with("SPOOLMON PULL OK - last snapshot "), "{line}");

    let second = Command::new(BIN)
        .args(["pull", "--base-dir"])
        .arg(base.path())
        .arg("--config")
        .arg(base.join("spoolmon.yaml"))
        .output()
        .unwrap();
    assert_eq!(second.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&second.stderr).contains("pid"), "{second:?}");

    base.write_config("pull:\n  socket-dir: '/nonexistent'\n  pull-interval: oops\n");
    signal(pull.pid(), "HUP");
    wait_for("bad reload logged", LIMIT, Some(&pull), || {
        pull.log_text().contains("keeping the old settings")
    });
    base.write_config(&pull_config(&haproxy.socket_dir, 3));
    signal(pull.pid(), "HUP");
    wait_for("good reload logged", LIMIT, Some(&pull), || {
        pull.log_text().contains("configuration reloaded")
    });
    // The loop logs its settings when it starts again, just after the reload line.
    wait_for("new settings in effect", LIMIT, Some(&pull), || {
        pull.log_text().contains("pull_interval=3")
    });

    let status = pull.terminate(Duration::from_secs(10)).expect("pull stops on SIGTERM");
    assert!(status.success(), "{status:?}");
    assert_eq!(base.count("incoming.tmp"), 0, "an orphan was left in incoming.tmp/");
}

#[test]
fn pull_without_a_pull_section_is_a_clear_error() {
    let base = Base::new();
    base.write_config("rescan-interval: 5\n");
    let out = Command::new(BIN)
        .args(["pull", "--base-dir"])
        .arg(base.path())
        .arg("--config")
        .arg(base.join("spoolmon.yaml"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("pull:"), "{out:?}");
}
