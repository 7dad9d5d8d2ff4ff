//! Issue 9 from the attacker's side (as root), against `spoolmon run`: queued snapshots that
//! hold the names a restarted daemon would pick, FIFOs planted in an outbox, an exec command that
//! escapes into its own session, an immutable `incoming.tmp/`.

mod common;

use common::*;
use std::collections::BTreeSet;
use std::fs;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

fn exec_order(step: u32, script: &str) -> String {
    format!(
        "user: t\nstep: {step}\npings: 1\nprobe: exec\nexec:\n    command: [\"/bin/sh\", \"-c\", {}]\n",
        serde_json::to_string(script).unwrap()
    )
}

/// Polls `last_result` of `id`, collecting every `time` seen, until `count` distinct ones.
fn watch_times(base: &Base, id: &str, count: usize, daemon: &Daemon) -> BTreeSet<i64> {
    let mut seen = BTreeSet::new();
    wait_for(
        &format!("{count} results of {id}"),
        Duration::from_secs(90),
        Some(daemon),
        || {
            seen.extend(base.result_time(id));
            seen.len() >= count
        },
    );
    seen
}

/// Runs `spoolmon <args> --base-dir <base>` and returns (exit code, stdout); a hang guard only
/// (the assertion is that it answers at all).
fn answer(base: &Base, args: &[&str]) -> (i32, String) {
    let out_path = base.join(&format!("{}.out", args.join("-")));
    let out = fs::File::create(&out_path).unwrap();
    let mut child = Command::new(BIN)
        .args(args)
        .arg("--base-dir")
        .arg(base.path())
        .stdout(out)
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut status = None;
    wait_for(
        &format!("spoolmon {args:?} to answer"),
        Duration::from_secs(20),
        None,
        || {
            status = child.try_wait().unwrap();
            status.is_some()
        },
    );
    (
        status.unwrap().code().unwrap_or(-1),
        fs::read_to_string(out_path).unwrap(),
    )
}

fn mkfifo(path: &Path) {
    nix::unistd::mkfifo(path, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
}

#[test]
fn a_restart_among_queued_snapshots_of_the_same_steps_publishes_every_step_once_under_new_names() {
    let base = Base::new();
    base.write_order("exec/t", &exec_order(2, "echo time=1 ms"));
    // What a killed daemon leaves: snapshots waiting for the RRD flush (rrd-flush-interval:
    // 120), holding the names `<step>-ping-<seq>` that a sequence restarting at 0 would take
    // again for the coming steps.
    let now = unix_now();
    let first = now - now % 2;
    fs::create_dir_all(base.join("incoming")).unwrap();
    let header = "{\"format\":\"spoolmon-ping\",\"version\":1,\"batch\":\"left behind\",\"results\":0}\n";
    for epoch in (first..first + 80).step_by(2) {
        for seq in 0..=40 {
            let dir = base.join(&format!("incoming/{epoch}-ping-{seq:09}"));
            fs::create_dir(&dir).unwrap();
            fs::write(dir.join("ping.jsonl"), header).unwrap();
            fs::write(dir.join("APPLIED"), "left by a killed daemon\n").unwrap();
        }
    }
    let daemon = base.start("rescan-interval: 2\nrrd-flush-interval: 120\n");
    let times = watch_times(&base, "exec/t", 6, &daemon);
    let times: Vec<i64> = times.into_iter().collect();
    assert!(
        times.windows(2).all(|w| w[1] - w[0] == 2),
        "every step measured, none lost to a taken name: {times:?}\n{}",
        daemon.log_text()
    );
    let log = daemon.log_text();
    assert!(!log.contains("cannot publish"), "{log}");
    // Each measured step has exactly one new snapshot, named above the queued ones.
    let mut ours: Vec<(i64, u64)> = Vec::new();
    for entry in fs::read_dir(base.join("incoming")).unwrap() {
        let name = entry.unwrap().file_name().to_string_lossy().into_owned();
        let (epoch, seq) = name.split_once("-ping-").unwrap();
        let seq: u64 = seq.parse().unwrap();
        if seq > 40 {
            ours.push((epoch.parse().unwrap(), seq));
        }
    }
    ours.sort();
    for time in &times {
        assert_eq!(
            ours.iter().filter(|(epoch, _)| epoch == time).count(),
            1,
            "step {time} published once: {ours:?}"
        );
    }
}

#[test]
fn fifos_in_place_of_an_outbox_ack_and_segment_neither_stop_the_daemon_nor_hang_the_readers() {
    let base = Base::new();
    let outbox = base.join("outbox/carbon");
    fs::create_dir_all(&outbox).unwrap();
    mkfifo(&outbox.join("ack"));
    mkfifo(&outbox.join("00000000000000000003.seg"));
    // Before any daemon: the readers answer at once, with the reason.
    let (code, text) = answer(&base, &["outbox"]);
    assert_eq!(code, 0, "{text}");
    assert!(
        text.contains("acknowledgement") && text.contains("not a regular file"),
        "{text}"
    );
    let (code, text) = answer(&base, &["check", "outbox"]);
    assert_eq!(code, 1, "WARNING with the reason: {text}");
    assert!(text.contains("not a regular file"), "{text}");
    let (code, text) = answer(&base, &["status"]);
    assert_eq!(code, 0, "{text}");

    base.write_order("exec/t", &exec_order(1, "echo time=1 ms"));
    let config = "rescan-interval: 2\nsinks:\n  carbon: {type: graphite, server: 127.0.0.1, port: 9, retries: 1, interval: 0.2, delay: 0.5}\n";
    let daemon = base.start(config);
    wait_for("a result processed", Duration::from_secs(30), Some(&daemon), || {
        base.result_time("exec/t").is_some()
    });
    let log = daemon.log_text();
    assert!(log.contains("unreadable acknowledgement file"), "{log}");
    assert!(log.contains("not a regular file"), "{log}");
    for args in [&["outbox"][..], &["status"], &["check", "outbox"]] {
        let (code, text) = answer(&base, args);
        assert!(code >= 0, "{args:?} answered: {text}");
    }
    let (_, text) = answer(&base, &["outbox"]);
    assert!(text.contains("carbon"), "{text}");
}

/// Live processes whose command line has the argument `marker` (zombies have none).
fn processes_with(marker: &str) -> Vec<u32> {
    let mut found = Vec::new();
    for entry in fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else {
            continue;
        };
        let cmdline = fs::read(entry.path().join("cmdline")).unwrap_or_default();
        if cmdline.split(|&b| b == 0).any(|arg| arg == marker.as_bytes()) {
            found.push(pid);
        }
    }
    found
}

#[test]
fn an_exec_command_that_escapes_into_its_own_session_leaves_nothing_behind_after_its_step() {
    let base = Base::new();
    let marker = format!("1000.{}{}", std::process::id(), unix_now() % 1000);
    base.write_order(
        "exec/escape",
        &exec_order(5, &format!("setsid sleep {marker} & echo time=1 ms")),
    );
    let daemon = base.start(FAST);
    // Two steps measured: the second one's run is over, the next starts a step later.
    watch_times(&base, "exec/escape", 2, &daemon);
    assert_eq!(
        processes_with(&marker),
        Vec::<u32>::new(),
        "sleep {marker} outlived its step\n{}",
        daemon.log_text()
    );
}

#[test]
fn an_immutable_incoming_tmp_suspends_collection_with_a_reason_and_the_kept_results_follow() {
    let base = Base::new();
    base.write_order("exec/t", &exec_order(1, "echo time=1 ms"));
    let daemon = base.start("rescan-interval: 2\nself-metrics: {interval: 1}\n");
    wait_for("a first result", Duration::from_secs(30), Some(&daemon), || {
        base.result_time("exec/t").is_some()
    });
    let tmp = base.join("incoming.tmp");
    let frozen = ReadOnlyDir::new(&tmp);
    wait_for("collection suspended", Duration::from_secs(30), Some(&daemon), || {
        daemon
            .log_text()
            .contains("collection suspended: cannot publish snapshot")
    });
    let held_epoch: i64 = {
        let log = daemon.log_text();
        let at = log.find("cannot publish snapshot ").unwrap() + "cannot publish snapshot ".len();
        log[at..].split('-').next().unwrap().parse().unwrap()
    };
    wait_for(
        "the suspension counted in the metrics",
        Duration::from_secs(30),
        Some(&daemon),
        || {
            base.read("state/metrics.prom").is_some_and(|m| {
                m.lines().any(|l| {
                    l.strip_prefix("spoolmon_probe_runs_suspended_total ")
                        .is_some_and(|v| v.parse::<f64>().unwrap_or(0.0) > 0.0)
                })
            })
        },
    );
    wait_for(
        "the reason in the status file",
        Duration::from_secs(30),
        Some(&daemon),
        || {
            base.read("state/status.json")
                .is_some_and(|s| s.contains("collection suspended") && s.contains("kept in memory"))
        },
    );
    drop(frozen);
    // The kept result reaches the RRD (its update is at time + step); it may share a processing
    // round with the next step's, so `last_result` alone may never show it.
    let update = format!("args=[\"{}:", held_epoch + 1);
    wait_for(
        "the kept result published and written",
        Duration::from_secs(30),
        Some(&daemon),
        || {
            let log = daemon.log_text();
            log.contains(&format!("published snapshot={held_epoch}-ping-")) && log.contains(&update)
        },
    );
    wait_for("collection resumed", Duration::from_secs(30), Some(&daemon), || {
        daemon.log_text().contains("collection resumes") && base.result_time("exec/t") > Some(held_epoch)
    });
}

#[test]
fn fifos_in_place_of_state_records_make_the_checks_answer_unknown_with_the_reason() {
    let base = Base::new();
    fs::create_dir_all(base.join("state")).unwrap();
    for name in ["pull-published", "heartbeat", "status.json", "status-pull.json"] {
        mkfifo(&base.join(&format!("state/{name}")));
    }
    let (code, text) = answer(&base, &["check", "pull"]);
    assert_eq!(code, 3, "{text}");
    assert!(
        text.contains("pull-published") && text.contains("not a regular file"),
        "{text}"
    );
    let (code, text) = answer(&base, &["status"]);
    assert_eq!(code, 0, "{text}");
    let (code, text) = answer(&base, &["check", "daemon"]);
    assert_eq!(code, 2, "no daemon holds the lock: {text}");
}

#[test]
fn a_telegraf_directory_linked_out_of_the_base_is_listed_and_its_metadata_never_reaches_a_snapshot() {
    let base = Base::new();
    let outside = tempfile::tempdir().unwrap();
    fs::write(
        outside.path().join("t"),
        "measurement_name: stolen\ntags:\n    from: outside\n",
    )
    .unwrap();
    fs::create_dir_all(base.join("telegraf")).unwrap();
    std::os::unix::fs::symlink(outside.path(), base.join("telegraf/exec")).unwrap();
    base.write_order("exec/t", &exec_order(1, "echo time=1 ms"));
    let (code, text) = answer(&base, &["orders"]);
    assert_eq!(code, 0, "{text}");
    assert!(text.contains("telegraf/exec/t is not used"), "{text}");
    // The daemon measures the order without the metadata: its snapshots carry no `telegraf`.
    let daemon = base.start("rescan-interval: 2\nrrd-flush-interval: 120\n");
    wait_for("a snapshot of exec/t", Duration::from_secs(30), Some(&daemon), || {
        fs::read_dir(base.join("incoming"))
            .map(|d| d.count() > 0)
            .unwrap_or(false)
            && base.result_time("exec/t").is_some()
    });
    for entry in fs::read_dir(base.join("incoming")).unwrap() {
        let ping = fs::read_to_string(entry.unwrap().path().join("ping.jsonl")).unwrap_or_default();
        assert!(!ping.contains("stolen"), "{ping}");
    }
    assert!(daemon.log_text().contains("is not used"), "{}", daemon.log_text());
}
