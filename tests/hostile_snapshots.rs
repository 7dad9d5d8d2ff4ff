//! `spoolmon process` against hostile and unlucky input, from the attacker's side (as root):
//! snapshots out of bounds are quarantined at once with their reason and reach no sink, a huge
//! `ping.jsonl` costs no memory, an order whose output cannot be written fails alone and is
//! listed as failing, and a full disk keeps snapshots waiting instead of quarantining them.

mod common;

use common::*;
use std::fs;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

const LIMIT: Duration = Duration::from_secs(60);

/// Start of a step of 20 s a minute ago (inside the default window of 7 days back, 300 s ahead).
fn recent() -> i64 {
    let now = spoolmon::shared::clock::unix_now();
    now - now % 20 - 60
}

/// One result line of `ping.jsonl` (the contract of spool-layout.md).
fn line(id: &str, time: i64, step: u64, pings: usize, rtt: &str) -> String {
    let rtts = vec![rtt; pings].join(",");
    format!(
        r#"{{"id":"{id}","time":{time},"updated":{},"step":{step},"pings":{pings},"template":"smokeping","rtts":[{rtts}]}}"#,
        time + 20
    )
}

/// `ping.jsonl` text: a header announcing `lines`, then the lines.
fn ping_file(lines: &[String]) -> String {
    let mut text = format!(
        r#"{{"format":"spoolmon-ping","version":1,"batch":"test","results":{}}}"#,
        lines.len()
    );
    text.push('\n');
    for l in lines {
        text.push_str(l);
        text.push('\n');
    }
    text
}

/// Publishes a snapshot as a collector does: built in `incoming.tmp/`, renamed into `incoming/`.
fn publish(base: &Base, name: &str, fill: impl FnOnce(&Path)) {
    let tmp = base.join(&format!("incoming.tmp/{name}"));
    fs::create_dir_all(&tmp).unwrap();
    fill(&tmp.join("ping.jsonl"));
    fs::rename(&tmp, base.join(&format!("incoming/{name}"))).unwrap();
}

fn publish_text(base: &Base, name: &str, text: &str) {
    publish(base, name, |path| fs::write(path, text).unwrap());
}

/// Peak resident memory of `pid` (VmHWM), KiB.
fn peak_memory_kib(pid: u32) -> u64 {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM in /proc/<pid>/status")
}

/// Lines the local-store sink wrote for order `id` (`ping.<id with / as .>.<value> ...`; four
/// per result with answers: loss, min, median, max).
fn stored_lines(store: &Path, id: &str) -> usize {
    let needle = format!("ping.{}.", id.replace('/', "."));
    let Ok(entries) = fs::read_dir(store) else { return 0 };
    entries
        .flatten()
        .map(|e| {
            fs::read_to_string(e.path().join("stats"))
                .unwrap_or_default()
                .lines()
                .filter(|l| l.contains(&needle))
                .count()
        })
        .sum()
}

fn start(base: &Base, store: &Path) -> Daemon {
    base.write_config(&format!(
        "rescan-interval: 1\nself-metrics: {{interval: 1}}\nsinks:\n  store: {{type: local-store, dir: '{}'}}\n",
        store.display()
    ));
    let daemon = base.spawn(&["--log-level", "debug"], "process");
    wait_for("the daemon's heartbeat", LIMIT, Some(&daemon), || {
        base.join("state/heartbeat").exists()
    });
    daemon
}

fn reason(base: &Base, name: &str) -> String {
    base.read(&format!("failed/{name}/REASON"))
        .unwrap_or_else(|| panic!("no failed/{name}/REASON"))
}

#[test]
fn hostile_ping_snapshots_are_quarantined_at_once_with_their_reason_and_cost_no_memory() {
    let base = Base::new();
    let store = base.join("store");
    let daemon = start(&base, &store);
    let t = recent();
    // Warm up with a good snapshot, then take the peak memory as the baseline. Order p2000 gets
    // a real RRD of 3 pings first: a result claiming 2000 pings must not move it aside.
    publish_text(
        &base,
        &format!("{t}-ping-000000001"),
        &ping_file(&[line("warm", t, 20, 3, "0.001"), line("p2000", t - 20, 20, 3, "0.001")]),
    );
    wait_for("the good snapshot processed", LIMIT, Some(&daemon), || {
        base.count("incoming") == 0 && base.join("output/warm/last_result").exists()
    });
    let before = peak_memory_kib(daemon.pid());

    let sibling = line("sibling", t, 20, 3, "0.001");
    let cases: Vec<(&str, String, &str)> = vec![
        (
            "future",
            ping_file(&[sibling.clone(), line("o2100", 4_102_444_800, 20, 3, "0.001")]),
            "line 3: order \"o2100\": time 4102444800 is outside the accepted window",
        ),
        (
            "pings",
            ping_file(&[sibling.clone(), line("p2000", t, 20, 2000, "0.001")]),
            "line 3: order \"p2000\": pings 2000 is outside 1..=1000",
        ),
        (
            "huge-rtt",
            ping_file(&[sibling.clone(), line("r1e308", t, 20, 3, "1e308")]),
            "line 3: order \"r1e308\": round-trip time 1e308 (ping 1) is outside 0..=180 seconds",
        ),
        (
            "negative-time",
            ping_file(&[sibling.clone(), line("tneg", -100, 20, 3, "0.001")]),
            "line 3: order \"tneg\": time -100 is outside the accepted window",
        ),
        (
            "big-step",
            ping_file(&[sibling.clone(), line("s2p31", t, 1 << 31, 3, "0.001")]),
            "line 3: order \"s2p31\": step 2147483648 is outside 1..=86400",
        ),
    ];
    for (seq, (source, text, _)) in cases.iter().enumerate() {
        publish_text(&base, &format!("{t}-{source}-{seq:09}"), text);
    }
    // A sparse 1 GiB file, and a 60 MiB one (under the file limit) without a newline.
    publish(&base, &format!("{t}-sparse-000000001"), |path| {
        fs::File::create(path).unwrap().set_len(1 << 30).unwrap()
    });
    publish(&base, &format!("{t}-oneline-000000001"), |path| {
        fs::File::create(path).unwrap().set_len(60 << 20).unwrap()
    });
    wait_for("every hostile snapshot quarantined", LIMIT, Some(&daemon), || {
        base.count("failed") == cases.len() + 2 && base.count("incoming") == 0
    });
    let after = peak_memory_kib(daemon.pid());
    eprintln!("peak memory (VmHWM) before the hostile snapshots {before} KiB, after {after} KiB");
    assert!(
        after.saturating_sub(before) < 32 * 1024,
        "peak memory grew from {before} KiB to {after} KiB"
    );
    for (seq, (source, _, expected)) in cases.iter().enumerate() {
        let why = reason(&base, &format!("{t}-{source}-{seq:09}"));
        assert!(why.contains(expected), "{source}: {why}");
    }
    let sparse = reason(&base, &format!("{t}-sparse-000000001"));
    assert!(
        sparse.contains("too large: 1073741824 bytes, the limit is 67108864"),
        "{sparse}"
    );
    let oneline = reason(&base, &format!("{t}-oneline-000000001"));
    assert!(oneline.contains("line 1: line too long"), "{oneline}");
    // Nothing of a refused snapshot was written or handed on, not even its good sibling.
    for id in ["sibling", "o2100", "r1e308", "tneg", "s2p31"] {
        assert!(!base.join(&format!("output/{id}")).exists(), "output/{id} written");
        assert_eq!(stored_lines(&store, id), 0, "{id} reached the sink");
    }
    assert_eq!(stored_lines(&store, "p2000"), 4, "only the real result of p2000");
    let kept: Vec<String> = fs::read_dir(base.join("output/p2000"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name.ends_with(".rrd"))
        .collect();
    assert_eq!(kept, ["main.rrd"], "the real RRD was not moved aside");
    let info = rrdtool(&["info", base.join("output/p2000/main.rrd").to_str().unwrap()]);
    assert!(info.contains("ds[ping3]") && !info.contains("ds[ping4]"), "{info}");
    assert!(stored_lines(&store, "warm") > 0);
    // The order whose result was in 2100 still takes real updates.
    publish_text(
        &base,
        &format!("{t}-ping-000000002"),
        &ping_file(&[line("o2100", t, 20, 3, "0.002")]),
    );
    wait_for("a real update after the refused one", LIMIT, Some(&daemon), || {
        base.join("output/o2100/main.rrd").exists() && base.count("incoming") == 0
    });
    let last = rrdtool(&["lastupdate", base.join("output/o2100/main.rrd").to_str().unwrap()]);
    assert!(last.contains(&format!("{}: 0 0.002 0.002", t + 20)), "{last}");
}

#[test]
fn an_order_that_cannot_be_written_fails_alone_and_is_listed_failing() {
    let base = Base::new();
    let store = base.join("store");
    base.write_order("app/blocked", &ping_order("127.0.0.1", 20, 3));
    base.write_order("app/fine", &ping_order("127.0.0.1", 20, 3));
    let daemon = start(&base, &store);
    fs::create_dir_all(base.join("output/app")).unwrap();
    fs::write(
        base.join("output/app/blocked"),
        "a file where the order's directory belongs",
    )
    .unwrap();
    let t = recent();
    // A legal order id of 4,090 bytes (components of 250): its output path exceeds PATH_MAX.
    let mut long = vec!["x".repeat(250); 16].join("/");
    long.push('/');
    long.push_str(&"y".repeat(4090 - long.len()));
    let three = [
        line("app/blocked", t, 20, 3, "0.001"),
        line(&long, t, 20, 3, "0.001"),
        line("app/fine", t, 20, 3, "0.001"),
    ];
    publish_text(&base, &format!("{t}-ping-000000001"), &ping_file(&three));
    wait_for(
        "the snapshot processed and the failure recorded",
        LIMIT,
        Some(&daemon),
        || base.count("incoming") == 0 && base.join("state/output-errors.json").exists(),
    );
    assert!(base.join("output/app/fine/main.rrd").exists());
    assert_eq!(base.count("failed"), 0);
    assert_eq!(stored_lines(&store, "app/fine"), 4, "each line once");
    assert_eq!(
        stored_lines(&store, &long),
        4,
        "the long order's lines go to the sinks once"
    );
    let recorded = base.read("state/output-errors.json").unwrap();
    assert!(
        recorded.contains(&long) && recorded.contains("File name too long"),
        "{recorded}"
    );

    let run = |args: &[&str]| {
        let out = Command::new(BIN)
            .args(args)
            .arg("--base-dir")
            .arg(base.path())
            .output()
            .unwrap();
        (out.status.code(), String::from_utf8_lossy(&out.stdout).into_owned())
    };
    let (code, listing) = run(&["orders"]);
    assert_eq!(code, Some(0), "{listing}");
    let blocked = listing.lines().find(|l| l.starts_with("app/blocked")).expect("listed");
    assert!(
        blocked.contains("failing") && blocked.contains("cannot write output"),
        "{listing}"
    );
    assert!(
        listing
            .lines()
            .any(|l| l.starts_with("app/fine") && l.contains("active")),
        "{listing}"
    );
    let (_, status) = run(&["status"]);
    // The long id has no order file (spoolmon process writes any id): status counts it too.
    assert!(status.contains("1 active, 2 failing, 0 invalid"), "{status}");
    assert!(
        status.contains("order app/blocked (failing): cannot write output"),
        "{status}"
    );
    let (code, check) = run(&["check", "orders"]);
    assert_eq!(code, Some(1), "{check}");
    assert!(
        check.contains("1 failing (first: app/blocked: cannot write output"),
        "{check}"
    );

    // Fixed: the next result is written and the order is no longer failing.
    fs::remove_file(base.join("output/app/blocked")).unwrap();
    publish_text(
        &base,
        &format!("{}-ping-000000002", t + 20),
        &ping_file(&[line("app/blocked", t + 20, 20, 3, "0.001")]),
    );
    wait_for("the order written again", LIMIT, Some(&daemon), || {
        base.count("incoming") == 0
            && base
                .read("state/output-errors.json")
                .is_some_and(|text| !text.contains("app/blocked"))
    });
    assert!(base.join("output/app/blocked/main.rrd").exists());
    let (code, check) = run(&["check", "orders"]);
    assert!(check.contains("0 failing"), "{code:?} {check}");
}

/// A small tmpfs on a directory while alive.
struct SmallDisk(std::path::PathBuf);

impl SmallDisk {
    fn mount(dir: &Path) -> SmallDisk {
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=1m", "tmpfs"])
            .arg(dir)
            .status();
        assert!(
            status.is_ok_and(|s| s.success()),
            "mounting a tmpfs on {} failed: run this test as root",
            dir.display()
        );
        SmallDisk(dir.to_owned())
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// `spoolmon_process_rounds_total` in the process's status file.
fn rounds(base: &Base) -> f64 {
    base.read("state/status-process.json")
        .and_then(|text| serde_json::from_str::<serde_json::Value>(&text).ok())
        .and_then(|v| v["metrics"]["spoolmon_process_rounds_total"].as_f64())
        .unwrap_or(0.0)
}

#[test]
fn a_full_disk_keeps_the_snapshot_waiting_and_applies_it_once_space_returns() {
    let base = Base::new();
    let store = base.join("store");
    let daemon = start(&base, &store);
    let disk = SmallDisk::mount(&base.join("output"));
    let filler = base.join("output/filler");
    {
        use std::io::Write;
        let mut file = fs::File::create(&filler).unwrap();
        while file.write_all(&[0u8; 4096]).is_ok() {}
    }
    let t = recent();
    let name = format!("{t}-ping-000000001");
    publish_text(&base, &name, &ping_file(&[line("new", t, 20, 3, "0.001")]));
    wait_for("processing says it waits for disk space", LIMIT, Some(&daemon), || {
        daemon.log_text().contains("output suspended, waiting for disk space")
    });
    // Several retry rounds later, the snapshot still waits and nothing was quarantined.
    let seen = rounds(&base);
    wait_for("three more processing rounds", LIMIT, Some(&daemon), || {
        rounds(&base) >= seen + 3.0
    });
    assert!(base.join(&format!("incoming/{name}")).exists());
    assert_eq!(base.count("failed"), 0);
    assert_eq!(
        stored_lines(&store, "new"),
        4,
        "the sink got the lines once, not per retry"
    );
    assert_eq!(daemon.log_text().matches("output suspended").count(), 1, "logged once");
    fs::remove_file(&filler).unwrap();
    wait_for("the snapshot applied once space returned", LIMIT, Some(&daemon), || {
        base.count("incoming") == 0
    });
    // The snapshot leaves incoming/ within the round that logs the resumption, just before it.
    wait_for("processing says output resumed", LIMIT, Some(&daemon), || {
        daemon.log_text().contains("output resumed")
    });
    assert!(base.join("output/new/main.rrd").exists());
    assert_eq!(stored_lines(&store, "new"), 4);
    assert_eq!(base.count("failed"), 0);
    drop(daemon);
    drop(disk);
}

/// A result line of a run that could not measure `id`, with `reason` as JSON text (escaped).
fn failed_line(id: &str, time: i64, reason_json: &str) -> String {
    format!(
        r#"{{"id":"{id}","time":{time},"updated":{},"step":20,"pings":3,"template":"smokeping","rtts":[null,null,null],"failure":{reason_json}}}"#,
        time + 20
    )
}

#[test]
fn hostile_failure_reasons_are_refused_when_huge_and_shown_as_one_clean_line() {
    let base = Base::new();
    let store = base.join("store");
    for id in ["escape", "huge", "fine"] {
        base.write_order(&format!("app/{id}"), &ping_order("127.0.0.1", 20, 3));
    }
    let daemon = start(&base, &store);
    let t = recent();
    // Terminal escapes, a newline, a bidi override and a NUL in the reason: accepted, shown clean.
    let escape = r#""cannot run x\u001b[2J\u001b]0;pwned\u0007\nFAKE LINE\u202e\u0000 end""#;
    publish_text(
        &base,
        &format!("{t}-ping-000000001"),
        &ping_file(&[
            failed_line("app/escape", t, escape),
            line("app/fine", t, 20, 3, "0.001"),
        ]),
    );
    wait_for("the escaped reason recorded", LIMIT, Some(&daemon), || {
        base.read("state/output-errors.json")
            .is_some_and(|t| t.contains("app/escape"))
    });
    let out = Command::new(BIN)
        .args(["orders", "--json", "--base-dir"])
        .arg(base.path())
        .output()
        .unwrap();
    let listing: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let entry = listing
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["id"] == "app/escape")
        .unwrap();
    assert_eq!(entry["failure"], "probe", "{entry}");
    let shown = entry["reason"].as_str().unwrap();
    assert!(shown.ends_with("): cannot run x [2J ]0;pwned FAKE LINE end"), "{shown}");
    let log = daemon.log_text();
    assert!(
        !log.contains('\u{1b}') && !log.contains('\u{202e}'),
        "control characters reached the log"
    );
    assert!(!log.lines().any(|l| l.starts_with("FAKE LINE")), "a forged log line");
    // Nothing invented: no last_result, no line in the sink for the failed run.
    assert!(base.read("output/app/escape/last_result").is_none());
    assert_eq!(stored_lines(&store, "app/escape"), 0);
    assert_eq!(stored_lines(&store, "app/fine"), 4);

    // A reason beyond the bound quarantines its snapshot at once, naming the bound; one that
    // carries round-trip times too.
    // (A line beyond 256 KiB is refused before it is parsed, whatever it holds.)
    let huge = format!("\"{}\"", "x".repeat(100_000));
    let cases = [
        (
            failed_line("app/huge", t + 20, &huge),
            "failure reason of 100000 bytes is longer than 1024",
        ),
        (failed_line("app/huge", t + 20, "\"\""), "failure reason is empty"),
        (
            failed_line("app/huge", t + 20, "42"),
            "line 2: invalid type: integer `42`, expected a string",
        ),
        (
            failed_line("app/huge", t + 20, "\"x\"").replace("[null,null,null]", "[0.001,null,null]"),
            "a failed run (failure set) carries round-trip times",
        ),
    ];
    for (seq, (bad, expected)) in cases.iter().enumerate() {
        let name = format!("{}-ping-{:09}", t + 20, seq + 2);
        publish_text(&base, &name, &ping_file(std::slice::from_ref(bad)));
        wait_for(&format!("{name} quarantined"), LIMIT, Some(&daemon), || {
            base.join(&format!("failed/{name}/REASON")).exists()
        });
        let why = reason(&base, &name);
        assert!(why.contains(expected), "{why}");
        assert!(
            why.len() < 4096,
            "the reason does not quote the huge field: {} bytes",
            why.len()
        );
    }
    assert!(base.read("output/app/huge/last_result").is_none());
    assert!(!base.read("state/output-errors.json").unwrap().contains("app/huge"));
}
