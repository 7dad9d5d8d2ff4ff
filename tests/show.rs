//! `spoolmon show ID` through the real binary: beside a real `spoolmon run` measuring loopback
//! (step-aligned rows, no loss, a median), on RRDs made by the real `rrdtool` with known values
//! and unknowns (shown exactly, unknowns as unknown), the resolution chosen for long ranges
//! (MIN/MAX archives), an archived order, a failing one, and every bad input: hostile ids,
//! unknown ids, bad ranges, a symlinked `main.rrd` or directory (never followed), truncated,
//! garbage, empty `main.rrd`, a FIFO in its place (no hang), a closed stdout.

mod common;

use common::*;
use serde_json::Value;
use std::collections::BTreeMap;
use std::fs;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

const LIMIT: Duration = Duration::from_secs(60);

/// `spoolmon show <args> --base-dir <base>`, killed (and the test failed) if it does not finish
/// within [`LIMIT`]: a reader blocked on a FIFO would hang here.
fn show_raw(base: &Base, args: &[&str]) -> Output {
    let mut child = Command::new(BIN)
        .arg("show")
        .args(args)
        .arg("--base-dir")
        .arg(base.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let started = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if started.elapsed() > LIMIT {
            child.kill().unwrap();
            panic!("spoolmon show {args:?} did not finish within {LIMIT:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().unwrap()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// The text report (exit 0 asserted).
fn show_text(base: &Base, args: &[&str]) -> String {
    let out = show_raw(base, args);
    assert_eq!(out.status.code(), Some(0), "{args:?}: {}", stderr(&out));
    String::from_utf8(out.stdout).unwrap()
}

/// The `--json` report (exit 0 asserted).
fn show_json(base: &Base, args: &[&str]) -> Value {
    let mut args = args.to_vec();
    args.push("--json");
    let out = show_raw(base, &args);
    assert_eq!(out.status.code(), Some(0), "{args:?}: {}", stderr(&out));
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stdout)))
}

/// The rows of a report by start time.
fn rows(report: &Value) -> BTreeMap<i64, Value> {
    let rows = report["history"]["rows"]
        .as_array()
        .unwrap_or_else(|| panic!("no rows: {report}"));
    rows.iter().map(|r| (r["start"].as_i64().unwrap(), r.clone())).collect()
}

/// The table line of the row starting at `start`, split on spaces (date, time, loss, median,
/// min, max).
fn table_row(text: &str, start: i64) -> Vec<String> {
    let when = spoolmon::shared::clock::utc_text(start);
    let line = text
        .lines()
        .find(|l| l.starts_with(&when))
        .unwrap_or_else(|| panic!("no row {when}:\n{text}"));
    line.split_whitespace().map(String::from).collect()
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-12 * b.abs().max(1e-3)
}

fn assert_value(row: &Value, key: &str, expected: Option<f64>) {
    match expected {
        None => assert!(row[key].is_null(), "{key} should be unknown: {row}"),
        Some(v) => {
            let got = row[key].as_f64().unwrap_or_else(|| panic!("{key} unknown: {row}"));
            assert!(close(got, v), "{key}: {got} != {v}: {row}");
        }
    }
}

/// A row's (start, loss, median, min, max).
type Expected = (i64, Option<f64>, Option<f64>, Option<f64>, Option<f64>);

fn last_result_text(time: i64, loss: u32, median: &str) -> String {
    format!(
        "time: {time}\nupdated: {}\nstep: 20\npings: 3\nloss: {loss}\nmin: {median}\nmedian: {median}\nmax: {median}\n",
        time + 23
    )
}

/// `rrdtool create` of a Smokeping-shaped file for 3 pings, step 20, one AVERAGE archive of
/// 100 rows, starting at `start`.
fn create_small(path: &std::path::Path, start: i64) {
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    let mut args = vec![
        "create".to_string(),
        path.to_str().unwrap().to_string(),
        "--start".to_string(),
        start.to_string(),
        "--step".to_string(),
        "20".to_string(),
        "DS:loss:GAUGE:40:0:3".to_string(),
        "DS:median:GAUGE:40:0:180".to_string(),
    ];
    args.extend((1..=3).map(|i| format!("DS:ping{i}:GAUGE:40:0:180")));
    args.push("RRA:AVERAGE:0.5:1:100".to_string());
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    rrdtool(&args);
}

/// Known values at known times (unknowns included); returns the file's start `t0` (a multiple
/// of 20, 400 s before now): rows start at t0, t0 + 20, ...
///
/// - t0: 0 lost, median 2 ms, pings 1, 2, 3 ms
/// - t0 + 20: 1 lost, median 4 ms, pings U, 3, 4 ms
/// - t0 + 40: everything U (an explicit unknown)
/// - t0 + 60: all 3 lost (median and pings U)
/// - t0 + 80 .. t0 + 160: no update for 100 s (longer than the 40 s heartbeat): unknown
/// - t0 + 180: 0 lost, 1 ms everywhere
fn known_values(path: &std::path::Path) -> i64 {
    let now = unix_now();
    let t0 = now - now % 20 - 400;
    create_small(path, t0);
    let updates = [
        format!("{}:0:0.002:0.001:0.002:0.003", t0 + 20),
        format!("{}:1:0.004:U:0.003:0.004", t0 + 40),
        format!("{}:U:U:U:U:U", t0 + 60),
        format!("{}:3:U:U:U:U", t0 + 80),
        format!("{}:0:0.001:0.001:0.001:0.001", t0 + 180),
        format!("{}:0:0.001:0.001:0.001:0.001", t0 + 200),
    ];
    let mut args = vec!["update", path.to_str().unwrap()];
    args.extend(updates.iter().map(String::as_str));
    rrdtool(&args);
    t0
}

#[test]
fn beside_a_running_daemon_loopback_rows_are_step_aligned_without_loss() {
    let base = Base::new();
    base.write_order("lo", &ping_order("127.0.0.1", 2, 3));
    let daemon = base.start(FAST);
    wait_for("a first result", LIMIT, Some(&daemon), || {
        base.result_time("lo").is_some()
    });
    let first = base.result_time("lo").unwrap();
    wait_for("two more results", LIMIT, Some(&daemon), || {
        base.result_time("lo").is_some_and(|t| t >= first + 4)
    });

    let report = show_json(&base, &["lo", "--range", "60"]);
    assert_eq!(report["id"], "lo");
    assert_eq!(report["location"], "output");
    assert_eq!(report["order"]["state"], "active", "{report}");
    assert_eq!(report["order"]["step"], 2);
    assert!(report["expires_in"].as_i64().unwrap() > 0, "{report}");
    let last = &report["last_result"];
    assert_eq!(last["loss"], 0, "{report}");
    assert_eq!(last["pings"], 3);
    assert!(last["median"].as_f64().unwrap() > 0.0, "{report}");
    assert!(last["age"].as_i64().unwrap() >= 0);
    let history = &report["history"];
    assert!(report["history_error"].is_null(), "{report}");
    assert_eq!(history["step"], 2);
    assert_eq!(history["pings"], 3);
    assert_eq!(history["resolution"], 2, "60 s at 2 s a row is 30 rows: {history}");
    assert_eq!(history["archive_resolution"], 2);
    let rows = rows(&report);
    assert!(!rows.is_empty() && rows.len() <= 60, "{history}");
    for (start, row) in &rows {
        assert_eq!(start % 2, 0, "row not step-aligned: {row}");
    }
    let known: Vec<&Value> = rows.values().filter(|r| !r["loss"].is_null()).collect();
    assert!(known.len() >= 2, "at least two measured steps: {history}");
    for row in known {
        assert_eq!(row["loss"].as_f64(), Some(0.0), "{row}");
        assert_eq!(row["loss_percent"].as_f64(), Some(0.0), "{row}");
        let (min, median, max) = (
            row["min"].as_f64().unwrap(),
            row["median"].as_f64().unwrap(),
            row["max"].as_f64().unwrap(),
        );
        assert!(median > 0.0 && min <= median && median <= max, "{row}");
    }
    // The newest row is the step last measured (or one newer, measured meanwhile).
    let newest = *rows.keys().last().unwrap();
    assert!(newest >= first + 4, "{history}");

    let text = show_text(&base, &["lo", "--range", "1m"]);
    assert!(text.starts_with("order:       lo (active)\n"), "{text}");
    assert!(
        text.contains("probe:       fping 127.0.0.1, every 2s, 3 pings, expires in"),
        "{text}"
    );
    assert!(text.contains("loss 0/3 (0%)"), "{text}");
    assert!(text.contains("one row per 2s"), "{text}");
    let header = text.lines().find(|l| l.starts_with("START")).unwrap();
    assert_eq!(
        header.split_whitespace().collect::<Vec<_>>(),
        ["START", "(UTC)", "LOSS", "MEDIAN", "MIN", "MAX"]
    );
    assert!(
        text.lines().any(|l| l.split_whitespace().nth(2) == Some("0/3")),
        "{text}"
    );
    let spark = text.lines().find(|l| l.starts_with("median  ")).unwrap();
    assert!(spark.chars().any(|c| ('▁'..='█').contains(&c)), "{spark}");
    let marks = text.lines().find(|l| l.starts_with("loss    ")).unwrap();
    assert!(marks.contains('.'), "{marks}");
    drop(daemon);
}

#[test]
fn known_values_made_by_rrdtool_are_shown_exactly_and_unknowns_as_unknown() {
    let base = Base::new();
    base.write_order("k", &ping_order("127.0.0.1", 20, 3));
    let t0 = known_values(&base.join("output/k/main.rrd"));
    fs::write(
        base.join("output/k/last_result"),
        last_result_text(t0 + 180, 0, "1.000000e-03"),
    )
    .unwrap();

    let report = show_json(&base, &["k", "--range", "10m"]);
    let history = &report["history"];
    assert_eq!(history["resolution"], 20, "{history}");
    assert_eq!(history["last_update"], t0 + 200);
    assert_eq!(history["end"], t0 + 200);
    assert_eq!(history["min_max_archives"], false);
    let rows = rows(&report);
    let expected: Vec<Expected> = vec![
        (t0 - 20, None, None, None, None),
        (t0, Some(0.0), Some(0.002), Some(0.001), Some(0.003)),
        (t0 + 20, Some(1.0), Some(0.004), Some(0.003), Some(0.004)),
        (t0 + 40, None, None, None, None),
        (t0 + 60, Some(3.0), None, None, None),
        (t0 + 80, None, None, None, None),
        (t0 + 100, None, None, None, None),
        (t0 + 120, None, None, None, None),
        (t0 + 140, None, None, None, None),
        (t0 + 160, None, None, None, None),
        (t0 + 180, Some(0.0), Some(0.001), Some(0.001), Some(0.001)),
    ];
    for (start, loss, median, min, max) in expected {
        let row = rows
            .get(&start)
            .unwrap_or_else(|| panic!("no row at {start}: {history}"));
        assert_value(row, "loss", loss);
        assert_value(row, "median", median);
        assert_value(row, "min", min);
        assert_value(row, "max", max);
        assert_value(row, "loss_percent", loss.map(|l| l * 100.0 / 3.0));
    }
    assert_eq!(*rows.keys().last().unwrap(), t0 + 180, "nothing after the last update");
    assert!(rows.values().filter(|r| !r["loss"].is_null()).count() == 4, "{history}");

    let text = show_text(&base, &["k", "--range", "600"]);
    assert_eq!(table_row(&text, t0)[2..], ["0/3", "2.000ms", "1.000ms", "3.000ms"]);
    assert_eq!(table_row(&text, t0 + 20)[2..], ["1/3", "4.000ms", "3.000ms", "4.000ms"]);
    assert_eq!(table_row(&text, t0 + 40)[2..], ["-", "-", "-", "-"]);
    assert_eq!(table_row(&text, t0 + 60)[2..], ["3/3", "-", "-", "-"]);
    assert!(text.contains("last result: "), "{text}");
    assert!(text.contains("median 1.000ms"), "{text}");
    // One mark per row, oldest first: ... t0 .x?X?????. (the rows before t0 are unknown).
    let marks = text.lines().find(|l| l.starts_with("loss    ")).unwrap();
    assert!(marks.contains(".x?X?????.  (. none"), "{marks}");
    let spark = text.lines().find(|l| l.starts_with("median  ")).unwrap();
    // 2 ms sits at a third of 1..4 ms: the third bar of eight.
    assert!(spark.contains("▃█???????▁  1.000ms .. 4.000ms"), "{spark}");
}

#[test]
fn consolidated_rows_average_steps_and_unknown_needs_half_of_them() {
    let base = Base::new();
    base.write_order("k", &ping_order("127.0.0.1", 20, 3));
    let t0 = known_values(&base.join("output/k/main.rrd"));
    // 2000 s asked, the archive has 100 rows of 20 s: two steps a row (at most 60 rows).
    let report = show_json(&base, &["k", "--range", "2000"]);
    let history = &report["history"];
    assert_eq!(
        (history["resolution"].as_i64(), history["archive_resolution"].as_i64()),
        (Some(40), Some(20))
    );
    let rows = rows(&report);
    assert!(rows.len() <= 60);
    // Rows start at multiples of 40: t0 is a multiple of 20, so pair the steps as they fall.
    let pair = t0 - t0 % 40;
    if pair == t0 {
        // (t0, t0 + 20) together, (t0 + 40, t0 + 60): one known of two is enough.
        let row = &rows[&t0];
        assert_value(row, "loss", Some(0.5));
        assert_value(row, "median", Some(0.003));
        assert_value(row, "min", Some(0.001));
        assert_value(row, "max", Some(0.004));
        assert_value(&rows[&(t0 + 40)], "loss", Some(3.0));
        assert_value(&rows[&(t0 + 40)], "median", None);
    } else {
        // (t0 - 20: unknown, t0), (t0 + 20, t0 + 40: unknown), (t0 + 60, t0 + 80: unknown).
        assert_value(&rows[&pair], "median", Some(0.002));
        assert_value(&rows[&(pair + 40)], "loss", Some(1.0));
        assert_value(&rows[&(pair + 80)], "loss", Some(3.0));
        assert_value(&rows[&(pair + 120)], "loss", None);
    }
}

/// A file of spoolmon's own definition (step 20, 3 pings; every archive) measured every step
/// for the last 3 hours: the ping ranks of step i are a, a + 1 ms, a + 2 ms with
/// a = (1 + i % 15) ms, so each 300 s row holds every a from 1 to 15 ms.
#[test]
fn long_ranges_read_coarser_archives_with_true_minimum_and_maximum() {
    let base = Base::new();
    base.write_order("long", &ping_order("127.0.0.1", 20, 3));
    let path = base.join("output/long/main.rrd");
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    let now = unix_now();
    let first = now - now % 3600 - 3 * 3600;
    let mut args = vec![
        "create".to_string(),
        path.to_str().unwrap().to_string(),
        "--start".to_string(),
        first.to_string(),
    ];
    args.extend(spoolmon::output::rrd::definition(20, 3).create_args());
    rrdtool(&args.iter().map(String::as_str).collect::<Vec<_>>());
    let updates: Vec<String> = (0..)
        .map(|i: i64| (i, first + 20 * (i + 1)))
        .take_while(|(_, t)| *t <= now)
        .map(|(i, t)| {
            let a = 0.001 * (1 + i % 15) as f64;
            format!("{t}:0:{}:{a}:{}:{}", a + 0.001, a + 0.001, a + 0.002)
        })
        .collect();
    let mut args = vec!["update", path.to_str().unwrap()];
    args.extend(updates.iter().map(String::as_str));
    rrdtool(&args);

    // (range, shown resolution, archive resolution, MIN/MAX archives)
    let cases = [
        ("30m", 40, 20, false),
        ("1h", 60, 20, false),
        ("6h", 600, 300, true),
        ("1d", 1500, 300, true),
        ("7d", 10_800, 3600, true),
    ];
    for (range, resolution, archive, extremes) in cases {
        let report = show_json(&base, &["long", "--range", range]);
        let history = &report["history"];
        assert_eq!(history["resolution"], resolution, "{range}: {history}");
        assert_eq!(history["archive_resolution"], archive, "{range}: {history}");
        assert_eq!(history["min_max_archives"], extremes, "{range}: {history}");
        let rows = rows(&report);
        assert!(!rows.is_empty() && rows.len() <= 60, "{range}: {} rows", rows.len());
        for (start, row) in &rows {
            assert_eq!(start % resolution, 0, "{range}: {row}");
            let row_end = start + resolution;
            let measured = *start >= first && row_end <= history["end"].as_i64().unwrap();
            if measured && resolution >= 300 {
                // Whole 300 s rows: every a from 1 to 15 ms in each.
                assert_value(row, "min", Some(0.001));
                assert_value(row, "max", Some(0.017));
                assert_value(row, "median", Some(0.009));
                assert_value(row, "loss", Some(0.0));
            }
            if row_end <= first {
                assert!(row["loss"].is_null(), "{range}: before the file: {row}");
            }
        }
        let measured = rows.values().filter(|r| !r["min"].is_null()).count();
        assert!(measured >= 1, "{range}: {history}");
        let text = show_text(&base, &["long", "--range", range]);
        assert!(text.contains(&format!("one row per {resolution}s")), "{range}: {text}");
        assert_eq!(extremes, text.contains("min/max from the MIN/MAX archives"), "{text}");
    }
}

#[test]
fn an_archived_order_shows_the_archive_before_its_last_update() {
    let base = Base::new();
    let t0 = known_values(&base.join("archive/gone/main.rrd"));
    fs::write(
        base.join("archive/gone/last_result"),
        last_result_text(t0 + 180, 0, "1.000000e-03"),
    )
    .unwrap();
    let report = show_json(&base, &["gone", "--range", "5m"]);
    assert_eq!(report["location"], "archive");
    assert!(report["order"].is_null(), "{report}");
    assert_eq!(report["last_result"]["time"], t0 + 180);
    let history = &report["history"];
    assert_eq!(history["window_end"], "last_update");
    assert_eq!(history["end"], t0 + 200);
    assert!(history["file"].as_str().unwrap().ends_with("archive/gone/main.rrd"));
    assert_value(&rows(&report)[&(t0 + 20)], "median", Some(0.004));
    let text = show_text(&base, &["gone", "--range", "5m"]);
    assert!(
        text.starts_with("order:       gone (archived: no order file, data from archive/gone/)\n"),
        "{text}"
    );
    assert!(text.contains("the 5m before the last update"), "{text}");
}

#[test]
fn output_left_without_an_order_file_is_shown_as_such() {
    let base = Base::new();
    let t0 = known_values(&base.join("output/orphan/main.rrd"));
    let report = show_json(&base, &["orphan", "--range", "10m"]);
    assert_eq!(report["location"], "output");
    assert!(report["order"].is_null());
    assert!(report["last_result"].is_null() && report["last_result_error"].is_null());
    assert_value(&rows(&report)[&t0], "loss", Some(0.0));
    let text = show_text(&base, &["orphan"]);
    assert!(
        text.contains("no order file; output/orphan/ not archived yet"),
        "{text}"
    );
    assert!(text.contains("last result: none (not measured yet)"), "{text}");
}

#[test]
fn a_failing_order_shows_its_reason_and_an_unmeasured_one_says_so() {
    let base = Base::new();
    base.write_order("f", &ping_order("127.0.0.1", 20, 3));
    base.write_order("new", &(ping_order("127.0.0.1", 20, 3) + "expire: never\n"));
    fs::create_dir_all(base.join("state")).unwrap();
    fs::write(
        base.join("state/output-errors.json"),
        "{\"version\":1,\"orders\":{\"f\":{\"reason\":\"creating directory x: File name too long\",\"since\":1700000020}}}\n",
    )
    .unwrap();
    let report = show_json(&base, &["f"]);
    assert_eq!(report["order"]["state"], "failing");
    let reason = report["order"]["reason"].as_str().unwrap();
    assert!(reason.contains("File name too long"), "{reason}");
    let text = show_text(&base, &["f"]);
    assert!(
        text.starts_with(
            "order:       f (failing: cannot write output (since 1700000020): creating directory x: File name too long)\n"
        ),
        "{text}"
    );
    let report = show_json(&base, &["new"]);
    assert!(
        report["last_result"].is_null() && report["history"].is_null(),
        "{report}"
    );
    assert!(
        report["history_error"].as_str().unwrap().contains("no main.rrd"),
        "{report}"
    );
    assert!(report["expires_in"].is_null());
    let text = show_text(&base, &["new"]);
    assert!(text.contains("expire: never"), "{text}");
    assert!(text.contains("last result: none (not measured yet)"), "{text}");
    assert!(text.contains("history:     cannot be shown: no main.rrd"), "{text}");
}

#[test]
fn unknown_and_hostile_ids_are_refused_clearly() {
    let base = Base::new();
    base.write_order("real", &ping_order("127.0.0.1", 20, 3));
    let out = show_raw(&base, &["nope"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(out.stdout.is_empty());
    assert!(stderr(&out).contains("no order \"nope\""), "{}", stderr(&out));
    // A file outside the base that a followed `..` would reach.
    fs::create_dir_all(base.join("output")).unwrap();
    let huge = "x".repeat(100_000);
    let cases = [
        ("../real", "invalid order id"),
        ("output/../../etc", "invalid order id"),
        ("/etc/passwd", "invalid order id"),
        ("", "invalid order id"),
        ("a//b", "invalid order id"),
        ("a\nb", "control characters"),
        ("\u{1b}[2Jx", "control characters"),
        ("a\tb", "control characters"),
        (huge.as_str(), "longer than any path"),
        (".real", "ignores"),
    ];
    for (id, expected) in cases {
        let out = show_raw(&base, &[id]);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(2), "{:?}: {err}", &id[..id.len().min(20)]);
        assert!(err.contains(expected), "{:?}: {err}", &id[..id.len().min(20)]);
        assert!(err.len() < 500 && !err.contains('\u{1b}'), "{err:?}");
        assert!(out.stdout.is_empty());
    }
    let out = Command::new(BIN)
        .args(["show", "real", "--base-dir", "/nonexistent/base"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("is not a directory"), "{}", stderr(&out));
}

#[test]
fn bad_ranges_are_refused_on_the_command_line() {
    let base = Base::new();
    base.write_order("k", &ping_order("127.0.0.1", 20, 3));
    for range in ["0", "-5m", "1x", "1.5h", "abc", "99999d", "", "1h30m"] {
        let arg = format!("--range={range}");
        let out = show_raw(&base, &["k", &arg]);
        assert_eq!(out.status.code(), Some(2), "{range:?}: {}", stderr(&out));
        let err = stderr(&out);
        assert!(err.contains("--range"), "{range:?}: {err}");
        assert!(out.stdout.is_empty());
    }
    assert_eq!(show_json(&base, &["k", "--range", "7d"])["history"], Value::Null);
}

#[test]
fn a_symlinked_main_rrd_or_directory_is_not_followed() {
    let base = Base::new();
    base.write_order("t", &ping_order("127.0.0.1", 20, 3));
    base.write_order("d/t", &ping_order("127.0.0.1", 20, 3));
    // A valid RRD and result outside the base: following either link would show them.
    let outside = tempfile::tempdir().unwrap();
    let t0 = known_values(&outside.path().join("t/main.rrd"));
    fs::write(
        outside.path().join("t/last_result"),
        last_result_text(t0 + 180, 0, "1.000000e-03"),
    )
    .unwrap();
    fs::create_dir_all(base.join("output/t")).unwrap();
    fs::write(
        base.join("output/t/last_result"),
        last_result_text(t0 + 180, 1, "2.000000e-03"),
    )
    .unwrap();
    std::os::unix::fs::symlink(outside.path().join("t/main.rrd"), base.join("output/t/main.rrd")).unwrap();
    std::os::unix::fs::symlink(outside.path(), base.join("output/d")).unwrap();

    let report = show_json(&base, &["t"]);
    assert!(report["history"].is_null(), "followed: {report}");
    let error = report["history_error"].as_str().unwrap();
    assert!(error.contains("main.rrd is a symlink (not followed)"), "{error}");
    assert_eq!(
        report["last_result"]["loss"], 1,
        "the last result is still shown: {report}"
    );
    let text = show_text(&base, &["t"]);
    assert!(text.contains("history:     cannot be shown: "), "{text}");
    assert!(!text.contains("START"), "{text}");

    let report = show_json(&base, &["d/t"]);
    assert!(
        report["history"].is_null() && report["last_result"].is_null(),
        "followed: {report}"
    );
    assert!(
        report["history_error"].as_str().unwrap().contains("symbolic link"),
        "{report}"
    );
    assert!(
        report["last_result_error"].as_str().unwrap().contains("symbolic link"),
        "{report}"
    );
    // A symlinked output/ itself.
    let other = Base::new();
    other.write_order("t", &ping_order("127.0.0.1", 20, 3));
    std::os::unix::fs::symlink(outside.path(), other.join("output")).unwrap();
    let report = show_json(&other, &["t"]);
    assert!(report["history"].is_null(), "followed: {report}");
    assert!(
        report["history_error"].as_str().unwrap().contains("output/"),
        "{report}"
    );
}

#[test]
fn a_damaged_main_rrd_is_named_and_the_last_result_still_shown() {
    let base = Base::new();
    let good = base.join("good.rrd");
    let t0 = known_values(&good);
    let bytes = fs::read(&good).unwrap();
    let garbage: Vec<u8> = (0..5000u32).map(|i| (i.wrapping_mul(2654435761) >> 13) as u8).collect();
    let cases: [(&str, &[u8], &str); 5] = [
        ("truncated", &bytes[..bytes.len() / 2], "too small"),
        ("header", &bytes[..100], "main.rrd"),
        ("garbage", &garbage, "main.rrd"),
        ("empty", b"", "main.rrd"),
        ("text", b"RRD\0 but not really\n", "main.rrd"),
    ];
    for (id, content, expected) in cases {
        base.write_order(id, &ping_order("127.0.0.1", 20, 3));
        fs::create_dir_all(base.join(&format!("output/{id}"))).unwrap();
        fs::write(base.join(&format!("output/{id}/main.rrd")), content).unwrap();
        fs::write(
            base.join(&format!("output/{id}/last_result")),
            last_result_text(t0 + 180, 0, "1.000000e-03"),
        )
        .unwrap();
        let report = show_json(&base, &[id]);
        assert!(report["history"].is_null(), "{id}: {report}");
        let error = report["history_error"].as_str().unwrap();
        assert!(error.contains(expected), "{id}: {error}");
        assert!(
            error.contains(&format!("output/{id}/main.rrd")),
            "{id}: names the file: {error}"
        );
        assert!(!error.contains("/proc/self/fd"), "{id}: {error}");
        assert_eq!(report["last_result"]["time"], t0 + 180, "{id}: {report}");
        let text = show_text(&base, &[id]);
        assert!(text.contains("median 1.000ms"), "{id}: {text}");
        assert!(text.contains("history:     cannot be shown: "), "{id}: {text}");
    }
    // Not a file: a FIFO (a blocking open would hang: show_raw fails the test), a directory.
    base.write_order("fifo", &ping_order("127.0.0.1", 20, 3));
    fs::create_dir_all(base.join("output/fifo")).unwrap();
    nix::unistd::mkfifo(
        &base.join("output/fifo/main.rrd"),
        nix::sys::stat::Mode::from_bits_truncate(0o644),
    )
    .unwrap();
    base.write_order("dir", &ping_order("127.0.0.1", 20, 3));
    fs::create_dir_all(base.join("output/dir/main.rrd")).unwrap();
    for id in ["fifo", "dir"] {
        let report = show_json(&base, &[id]);
        let error = report["history_error"].as_str().unwrap();
        assert!(error.contains("is not a regular file"), "{id}: {error}");
    }
    // A file of other data sources.
    base.write_order("foreign", &ping_order("127.0.0.1", 20, 3));
    let foreign = base.join("output/foreign/main.rrd");
    fs::create_dir_all(foreign.parent().unwrap()).unwrap();
    rrdtool(&[
        "create",
        foreign.to_str().unwrap(),
        "--step",
        "20",
        "DS:temperature:GAUGE:40:U:U",
        "RRA:AVERAGE:0.5:1:10",
    ]);
    let error = show_json(&base, &["foreign"])["history_error"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        error.contains("none of the data sources") && error.contains("temperature"),
        "{error}"
    );
}

/// Runs `spoolmon show` with stdout on a pipe whose reader is already closed.
fn show_into_closed_pipe(base: &Base, args: &[&str]) -> Output {
    let (reader, writer) = nix::unistd::pipe().unwrap();
    drop(reader);
    Command::new(BIN)
        .arg("show")
        .args(args)
        .arg("--base-dir")
        .arg(base.path())
        .stdout(writer)
        .stderr(Stdio::piped())
        .output()
        .unwrap()
}

#[test]
fn a_closed_stdout_ends_quietly() {
    let base = Base::new();
    base.write_order("k", &ping_order("127.0.0.1", 20, 3));
    known_values(&base.join("output/k/main.rrd"));
    for args in [&["k", "--range", "10m"][..], &["k", "--json"][..]] {
        assert!(!show_text(&base, args).is_empty());
        let out = show_into_closed_pipe(&base, args);
        assert_eq!(out.status.code(), Some(0), "{args:?}: {}", stderr(&out));
        assert_eq!(stderr(&out), "", "{args:?}");
    }
}
