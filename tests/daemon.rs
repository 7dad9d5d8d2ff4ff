//! End-to-end behaviour of `spoolmon run` on a real base directory: real ICMP on loopback,
//! real librrd files read back with the real `rrdtool`.

mod common;

use common::*;
use std::fs;
use std::time::Duration;

const LIMIT: Duration = Duration::from_secs(60);

#[test]
fn orders_are_measured_into_rrd_and_last_result() {
    let base = Base::new();
    base.write_order("app/v4", &ping_order("127.0.0.1", 2, 2));
    base.write_order("app/v6", &ping_order("::1", 2, 3));
    base.write_order("spread", &ping_order("127.45.67.89", 2, 2));
    let daemon = base.start(FAST);
    for id in ["app/v4", "app/v6", "spread"] {
        let rel = format!("output/{id}/last_result");
        wait_for(&rel, LIMIT, Some(&daemon), || base.read(&rel).is_some());
        let text = base.read(&rel).unwrap();
        assert_eq!(field(&text, "step"), "2", "{text}");
        assert_eq!(field(&text, "loss"), "0", "{id}: {text}");
        let median: f64 = field(&text, "median").parse().unwrap();
        assert!(median > 0.0 && median < 1.0, "{text}");
        assert_eq!(
            field(&text, "time").parse::<i64>().unwrap() % 2,
            0,
            "time is a step start: {text}"
        );
    }
    let rrd = base.join("output/app/v6/main.rrd");
    wait_for("rrd has an update", LIMIT, Some(&daemon), || {
        rrd.exists() && !rrdtool(&["lastupdate", rrd.to_str().unwrap()]).contains(" U U")
    });
    let info = rrdtool(&["info", rrd.to_str().unwrap()]);
    assert!(info.contains("step = 2\n"), "{info}");
    assert!(info.contains("ds[loss].max = 3.0000000000e+00"), "{info}");
    assert!(info.contains("ds[ping3].type = \"GAUGE\""), "{info}");
    assert!(!info.contains("ds[ping4]"), "{info}");
}

#[test]
fn invalid_orders_are_kept_listed_and_do_not_stop_the_daemon() {
    let base = Base::new();
    let bad = [
        ("bad/yaml", "user: x\nstep: [unclosed\n"),
        ("bad/missing-keys", "user: x\nprobe: fping\n"),
        (
            "bad/unknown-probe",
            "user: x\nstep: 2\npings: 1\nprobe: carrier-pigeon\n",
        ),
        (
            "bad/zero-step",
            "user: x\nstep: 0\npings: 1\nprobe: fping\nfping: {host: 127.0.0.1}\n",
        ),
        ("bad/no-section", "user: x\nstep: 2\npings: 1\nprobe: fping\n"),
        ("bad/binary", "\u{0}\u{1}\u{2}\u{fffd}garbage"),
    ];
    for (id, text) in bad {
        base.write_order(id, text);
    }
    base.write_order("good", &ping_order("127.0.0.2", 2, 1));
    let mut daemon = base.start(FAST);
    wait_for("good order measured", LIMIT, Some(&daemon), || {
        base.read("output/good/last_result").is_some()
    });
    assert!(daemon.is_running());
    for (id, text) in bad {
        assert_eq!(
            fs::read_to_string(base.join(&format!("orders/{id}"))).unwrap(),
            text,
            "{id} was altered"
        );
        assert!(!base.join(&format!("output/{id}")).exists(), "{id} produced output");
    }
    let out = std::process::Command::new(BIN)
        .args(["orders", "--json", "--base-dir"])
        .arg(base.path())
        .output()
        .unwrap();
    assert!(out.status.success());
    let listing: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let entries = listing.as_array().unwrap();
    for (id, _) in bad {
        let entry = entries
            .iter()
            .find(|e| e["id"] == id)
            .unwrap_or_else(|| panic!("{id} not listed: {listing}"));
        assert_eq!(entry["state"], "invalid", "{entry}");
        assert!(entry["reason"].as_str().is_some_and(|r| !r.is_empty()), "{entry}");
    }
    let good = entries.iter().find(|e| e["id"] == "good").unwrap();
    assert_eq!(good["state"], "active");
}

#[test]
fn deleted_order_is_archived_and_restored_when_re_added() {
    let base = Base::new();
    let order = ping_order("127.0.0.3", 2, 1);
    base.write_order("app/target", &order);
    // Measured in the same batch (same probe, step and pings): its results show how far the
    // pipeline got.
    base.write_order("witness", &ping_order("127.0.0.13", 2, 1));
    let daemon = base.start(FAST);
    wait_for("measured", LIMIT, Some(&daemon), || {
        base.read("output/app/target/last_result").is_some()
    });
    fs::remove_file(base.join("orders/app/target")).unwrap();
    wait_for("archived", LIMIT, Some(&daemon), || {
        base.join("archive/app/target/last_result").exists() && !base.join("output/app/target").exists()
    });
    // Results of runs in flight must not re-create output/ for the removed order: once a step
    // two steps after the archiving is measured and written, every earlier one was processed.
    let archived_at = unix_now();
    wait_for("a step after the archiving measured", LIMIT, Some(&daemon), || {
        base.result_time("witness").is_some_and(|t| t >= archived_at + 4)
    });
    assert!(
        !base.join("output/app/target").exists(),
        "output re-created after archiving"
    );
    let archived_rrd = fs::read(base.join("archive/app/target/main.rrd")).unwrap();
    base.write_order("app/target", &order);
    wait_for("restored", LIMIT, Some(&daemon), || {
        base.join("output/app/target/main.rrd").exists()
    });
    assert!(!base.join("archive/app/target").exists());
    let restored_rrd = fs::read(base.join("output/app/target/main.rrd")).unwrap();
    assert_eq!(
        &restored_rrd[..64],
        &archived_rrd[..64],
        "the restored RRD is the archived one"
    );
}

#[test]
fn expired_order_is_archived_with_its_file() {
    let base = Base::new();
    base.write_order("old", &ping_order("127.0.0.4", 2, 1));
    let daemon = base.start("rescan-interval: 1\norder-timeout: 4\n");
    wait_for("measured", LIMIT, Some(&daemon), || {
        base.read("output/old/last_result").is_some()
    });
    wait_for("expired and archived", LIMIT, Some(&daemon), || {
        base.join("archive/old/order.expired").exists()
    });
    assert!(!base.join("orders/old").exists());
    assert!(base.join("archive/old/last_result").exists());
    assert!(base.read("archive/old/order.expired").unwrap().contains("127.0.0.4"));
}

#[test]
fn expire_never_order_keeps_being_measured_after_the_timeout_while_a_normal_one_is_archived() {
    let base = Base::new();
    base.write_order("normal", &ping_order("127.0.0.14", 2, 1));
    base.write_order("static", &format!("{}expire: never\n", ping_order("127.0.0.15", 2, 1)));
    // Older than any timeout already: only `expire: never` keeps it.
    let old = std::time::SystemTime::now() - Duration::from_secs(86_400);
    fs::File::options()
        .write(true)
        .open(base.join("orders/static"))
        .unwrap()
        .set_modified(old)
        .unwrap();
    let daemon = base.start("rescan-interval: 1\norder-timeout: 4\n");
    wait_for("normal order expired and archived", LIMIT, Some(&daemon), || {
        base.join("archive/normal/order.expired").exists()
    });
    // Progress marker: a step of the static order that started after the other expired (and
    // after every expiry check the daemon made until then) was measured and written.
    let expired_at = unix_now();
    wait_for(
        "a later step of the static order measured",
        LIMIT,
        Some(&daemon),
        || base.result_time("static").is_some_and(|t| t >= expired_at + 4),
    );
    assert!(base.join("orders/static").exists(), "the static order was moved");
    assert!(!base.join("archive/static").exists(), "the static order was archived");
    assert!(!base.join("orders/normal").exists());
    let out = std::process::Command::new(BIN)
        .args(["orders", "--json", "--base-dir"])
        .arg(base.path())
        .output()
        .unwrap();
    let listing: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let entry = listing
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["id"] == "static")
        .unwrap_or_else(|| panic!("{listing}"));
    assert_eq!(
        (&entry["state"], &entry["expire"]),
        (&"active".into(), &"never".into()),
        "{entry}"
    );
}

#[test]
fn modified_order_takes_effect_and_keeps_the_old_rrd() {
    let base = Base::new();
    base.write_order("change", &ping_order("127.0.0.5", 2, 2));
    let daemon = base.start(FAST);
    let rrd = base.join("output/change/main.rrd");
    wait_for("first rrd", LIMIT, Some(&daemon), || rrd.exists());
    base.write_order("change", &ping_order("127.0.0.5", 2, 3));
    wait_for("new layout in effect", LIMIT, Some(&daemon), || {
        base.read("output/change/last_result")
            .is_some_and(|t| field(&t, "pings") == "3")
    });
    wait_for("old rrd kept beside", LIMIT, Some(&daemon), || {
        fs::read_dir(base.join("output/change")).unwrap().flatten().any(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            name.starts_with("main-") && name.ends_with("-step2-pings2.rrd")
        })
    });
    let info = rrdtool(&["info", rrd.to_str().unwrap()]);
    assert!(info.contains("ds[ping3]"), "{info}");
}

#[test]
fn half_written_orders_are_ignored_until_renamed_into_place() {
    let base = Base::new();
    let daemon = base.start(FAST);
    let text = ping_order("127.0.0.6", 2, 1);
    for name in [".hidden", "draft.tmp", "draft.swp", "draft~", "draft.part"] {
        fs::write(base.join(&format!("orders/{name}")), &text).unwrap();
    }
    // A real order written after them, then a rescan of orders/ (SIGHUP): once the real order
    // has a result for a step after the rescan, a temp-named one taken by the watcher or the
    // rescan would have been measured in the same batch.
    base.write_order("witness", &ping_order("127.0.0.14", 2, 1));
    wait_for("signals handled", LIMIT, Some(&daemon), || {
        daemon.log_text().contains("spoolmon running")
    });
    signal(daemon.pid(), "HUP");
    wait_for("rescan logged", LIMIT, Some(&daemon), || {
        daemon
            .log_text()
            .contains("SIGHUP: configuration unchanged; rescanning orders/")
    });
    let rescanned_at = unix_now();
    wait_for("a step after the rescan measured", LIMIT, Some(&daemon), || {
        base.result_time("witness").is_some_and(|t| t >= rescanned_at + 2)
    });
    assert_eq!(base.count("output"), 1, "a temp-named order was measured");
    fs::rename(base.join("orders/draft.tmp"), base.join("orders/draft")).unwrap();
    wait_for("renamed order measured", LIMIT, Some(&daemon), || {
        base.read("output/draft/last_result").is_some()
    });
    assert_eq!(base.count("output"), 2);
}

#[test]
fn second_daemon_on_the_same_base_exits_with_a_clear_message() {
    let base = Base::new();
    let first = base.start(FAST);
    let holder = format!("{}\n", first.pid());
    wait_for("lock taken with the pid written", LIMIT, Some(&first), || {
        base.read("state/lock").as_deref() == Some(holder.as_str())
    });
    let out = std::process::Command::new(BIN)
        .args(["run", "--base-dir"])
        .arg(base.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("another spoolmon") && stderr.contains(&first.pid().to_string()),
        "{stderr}"
    );
}

#[test]
fn sigterm_stops_the_daemon_cleanly() {
    let base = Base::new();
    base.write_order("t", &ping_order("127.0.0.7", 2, 1));
    let daemon = base.start(FAST);
    wait_for("measured", LIMIT, Some(&daemon), || {
        base.read("output/t/last_result").is_some()
    });
    let log = daemon.log.clone();
    let status = daemon
        .terminate(Duration::from_secs(30))
        .expect("daemon exits after SIGTERM");
    assert!(
        status.success(),
        "{status:?}\n{}",
        fs::read_to_string(log).unwrap_or_default()
    );
    assert_eq!(base.count("incoming.tmp"), 0);
}

#[test]
fn sighup_rescans_orders_and_the_daemon_keeps_measuring() {
    let base = Base::new();
    base.write_order("h", &ping_order("127.0.0.12", 1, 1));
    let mut daemon = base.start(FAST);
    wait_for("measured", LIMIT, Some(&daemon), || {
        base.read("output/h/last_result").is_some()
    });
    signal(daemon.pid(), "HUP");
    wait_for("rescan logged", LIMIT, Some(&daemon), || {
        daemon
            .log_text()
            .contains("SIGHUP: configuration unchanged; rescanning orders/")
    });
    let before = base.read("output/h/last_result").unwrap();
    wait_for("still measuring after SIGHUP", LIMIT, Some(&daemon), || {
        base.read("output/h/last_result").is_some_and(|now| now != before)
    });
    assert!(daemon.is_running());
}

#[test]
fn fping_engine_measures_with_the_fping_binary() {
    let base = Base::new();
    base.write_order("f4", &ping_order("127.0.0.8", 2, 2));
    base.write_order("f6", &ping_order("::1", 2, 2));
    let daemon = base.start("rescan-interval: 2\nengine: fping\n");
    for id in ["f4", "f6"] {
        let rel = format!("output/{id}/last_result");
        wait_for(&rel, LIMIT, Some(&daemon), || {
            base.read(&rel).is_some_and(|t| field(&t, "loss") == "0")
        });
    }
    let log = daemon.log_text();
    assert!(log.contains("measured with the fping binary"), "{log}");
    assert!(
        !log.contains("native ICMP engine:"),
        "the native engine was opened: {log}"
    );
}

#[test]
fn poison_snapshot_goes_to_failed_and_processing_continues() {
    let base = Base::new();
    for dir in ["incoming", "incoming/1700000000-ping-000000001", "incoming/not-a-time"] {
        fs::create_dir_all(base.join(dir)).unwrap();
    }
    fs::write(
        base.join("incoming/1700000000-ping-000000001/ping.jsonl"),
        b"{\"format\":\"spoolmon-ping\"",
    )
    .unwrap();
    fs::create_dir_all(base.join("incoming/1700000001-x-1")).unwrap();
    base.write_order("ok", &ping_order("127.0.0.9", 2, 1));
    let daemon = base.start(FAST);
    wait_for("quarantined", LIMIT, Some(&daemon), || {
        base.count("failed") >= 3 && base.count("incoming") == 0
    });
    let reason = base.read("failed/1700000000-ping-000000001/REASON").unwrap();
    assert!(reason.contains("ping.jsonl"), "{reason}");
    assert!(base.read("failed/not-a-time/REASON").is_some());
    wait_for("still measuring", LIMIT, Some(&daemon), || {
        base.read("output/ok/last_result").is_some()
    });
}

#[test]
fn low_disk_space_suspends_collection() {
    let base = Base::new();
    base.write_order("d", &ping_order("127.0.0.11", 1, 1));
    let daemon = base.start("rescan-interval: 1\nmin-free-space-mb: 1000000000\n");
    wait_for("suspension logged", LIMIT, Some(&daemon), || {
        daemon.log_text().contains("collection suspended") && daemon.log_text().contains("min-free-space-mb")
    });
    assert_eq!(base.count("incoming"), 0);
    assert!(base.read("output/d/last_result").is_none());
}

#[test]
fn ten_thousand_orders_dropped_at_once_are_all_measured() {
    let base = Base::new();
    let daemon = base.start("rescan-interval: 5\n");
    let staging = base.join("staging");
    fs::create_dir_all(staging.join("many")).unwrap();
    for i in 0..10_000u32 {
        let host = format!("127.{}.{}.{}", 100 + i / 62_500, (i / 250) % 250, 1 + i % 250);
        let text = format!("user: t\nstep: 10\npings: 1\nprobe: fping\nrrd_template: norrd\nfping: {{host: {host}}}\n");
        fs::write(staging.join(format!("many/o{i}")), text).unwrap();
    }
    // The whole tree appears at once, by one rename.
    fs::rename(staging.join("many"), base.join("orders/many")).unwrap();
    let all_measured = || (0..10_000).all(|i| base.join(&format!("output/many/o{i}/last_result")).exists());
    wait_for(
        "all 10,000 orders measured",
        Duration::from_secs(180),
        Some(&daemon),
        all_measured,
    );
    let lost: u32 = (0..10_000)
        .map(|i| {
            field(&base.read(&format!("output/many/o{i}/last_result")).unwrap(), "loss")
                .parse::<u32>()
                .unwrap()
        })
        .sum();
    assert!(lost <= 10, "{lost} of 10,000 loopback pings lost");
    assert!(!base.join("output/many/o0/main.rrd").exists(), "norrd order got an RRD");
}
