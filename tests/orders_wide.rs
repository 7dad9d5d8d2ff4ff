//! `spoolmon orders --wide` through the real binary on real files in a temporary base: the last
//! result's loss, median and age, the time until expiry, and every bad `last_result` (missing,
//! garbage, truncated, a FIFO, a symlink, a symlinked output directory, a huge file) shown as
//! `-` with a short reason, never a hang or a panic; and one run beside a real `spoolmon run`
//! measuring loopback.

mod common;

use common::*;
use std::fs;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant, UNIX_EPOCH};

const LIMIT: Duration = Duration::from_secs(60);

/// `spoolmon orders --wide [--json] --base-dir <base>`, killed (and the test failed) if it does
/// not finish within [`LIMIT`]: a reader blocked on a FIFO would hang here.
fn wide(base: &Base, json: bool) -> Output {
    let mut command = Command::new(BIN);
    command.args(["orders", "--wide"]);
    if json {
        command.arg("--json");
    }
    command.arg("--base-dir").arg(base.path());
    // The config the test wrote, if any (its order-timeout).
    if base.join("spoolmon.yaml").exists() {
        command.arg("--config").arg(base.join("spoolmon.yaml"));
    }
    let mut child = command.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let started = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if started.elapsed() > LIMIT {
            child.kill().unwrap();
            panic!("spoolmon orders --wide did not finish within {LIMIT:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "exit {:?}: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// The `--json` entry of `id`.
fn entry(base: &Base, id: &str) -> serde_json::Value {
    let out = wide(base, true);
    let listing: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let found = listing.as_array().unwrap().iter().find(|e| e["id"] == id).cloned();
    found.unwrap_or_else(|| panic!("{id} not listed: {listing}"))
}

/// The table row of `id`, split on runs of spaces (the reason column comes out in words).
fn row(base: &Base, id: &str) -> Vec<String> {
    let out = wide(base, false);
    let table = String::from_utf8(out.stdout).unwrap();
    let mut lines = table.lines();
    let header: Vec<&str> = lines.next().unwrap().split_whitespace().collect();
    assert_eq!(
        header,
        [
            "ID",
            "STATE",
            "PROBE",
            "STEP/PINGS",
            "TARGET",
            "LOSS",
            "MEDIAN",
            "AGE",
            "EXPIRES",
            "REASON"
        ]
    );
    let found = lines.find(|l| l.split_whitespace().next() == Some(id));
    let line = found.unwrap_or_else(|| panic!("{id} not in the table:\n{table}"));
    line.split_whitespace().map(String::from).collect()
}

fn set_mtime(path: &std::path::Path, unix: i64) {
    let when = UNIX_EPOCH + Duration::from_secs(unix as u64);
    fs::File::options()
        .write(true)
        .open(path)
        .unwrap()
        .set_modified(when)
        .unwrap();
}

fn last_result_text(time: i64, updated: i64, loss: u32, median: &str) -> String {
    format!(
        "time: {time}\nupdated: {updated}\nstep: 20\npings: 3\nloss: {loss}\nmin: {median}\nmedian: {median}\nmax: {median}\n"
    )
}

/// Writes `output/<id>/last_result` (the directory created).
fn put_result(base: &Base, id: &str, content: &[u8]) {
    let dir = base.join(&format!("output/{id}"));
    fs::create_dir_all(&dir).unwrap();
    fs::write(dir.join("last_result"), content).unwrap();
}

/// An order `id` with a `last_result` of `content` and what `--wide` makes of it: the JSON entry
/// and the table row.
fn listed_with(content: &[u8]) -> (serde_json::Value, Vec<String>) {
    let base = Base::new();
    base.write_order("t", &ping_order("127.0.0.1", 20, 3));
    put_result(&base, "t", content);
    (entry(&base, "t"), row(&base, "t"))
}

#[test]
fn a_result_shows_loss_median_age_and_the_time_until_expiry() {
    let base = Base::new();
    base.write_order("app/t", &ping_order("127.0.0.1", 20, 3));
    let mtime = unix_now() - 1000;
    set_mtime(&base.join("orders/app/t"), mtime);
    let updated = unix_now() - 300;
    put_result(
        &base,
        "app/t",
        last_result_text(updated - 24, updated, 1, "5.700000e-04").as_bytes(),
    );
    let before = unix_now();
    let e = entry(&base, "app/t");
    let after = unix_now();
    let result = &e["last_result"];
    assert_eq!(result["loss"], 1, "{e}");
    assert_eq!(result["pings"], 3);
    assert_eq!(result["updated"], updated);
    assert!((result["median_ms"].as_f64().unwrap() - 0.57).abs() < 1e-9, "{e}");
    let age = result["age"].as_i64().unwrap();
    assert!((before - updated..=after - updated).contains(&age), "{e}");
    // order-timeout (3660 s by default) after the order file's mtime.
    let left = e["expires_in"].as_i64().unwrap();
    assert!(
        (3660 - (after - mtime)..=3660 - (before - mtime)).contains(&left),
        "{e}"
    );
    assert!(e["last_result_error"].is_null());

    let cells = row(&base, "app/t");
    assert_eq!(&cells[5..7], ["1/3", "0.570ms"], "{cells:?}");
    assert!(cells[7] == "5m" || cells[7] == "4m", "{cells:?}");
    assert!(cells[8] == "44m" || cells[8] == "43m", "{cells:?}");
    assert_eq!(cells.len(), 9, "no reason: {cells:?}");
}

#[test]
fn a_never_measured_order_shows_dashes_and_expire_never_shows_never() {
    let base = Base::new();
    base.write_order("static", &(ping_order("127.0.0.1", 20, 3) + "expire: never\n"));
    let e = entry(&base, "static");
    assert!(e["last_result"].is_null(), "{e}");
    assert!(e["last_result_error"].is_null(), "{e}");
    assert!(e["expires_in"].is_null(), "{e}");
    assert_eq!(e["expire"], "never");
    let cells = row(&base, "static");
    assert_eq!(&cells[5..9], ["-", "-", "-", "never"], "{cells:?}");
}

#[test]
fn an_invalid_order_has_no_expiry() {
    let base = Base::new();
    base.write_order("broken", "step: [\n");
    let e = entry(&base, "broken");
    assert_eq!(e["state"], "invalid");
    assert!(e["expires_in"].is_null(), "{e}");
    let cells = row(&base, "broken");
    assert_eq!(&cells[5..9], ["-", "-", "-", "-"], "{cells:?}");
}

#[test]
fn an_order_where_nothing_answered_shows_full_loss_and_no_median() {
    let now = unix_now();
    let (e, cells) = listed_with(last_result_text(now - 20, now, 3, "~").as_bytes());
    assert_eq!(e["last_result"]["loss"], 3);
    assert!(e["last_result"]["median_ms"].is_null(), "{e}");
    assert_eq!(&cells[5..7], ["3/3", "-"], "{cells:?}");
}

#[test]
fn garbage_is_a_dash_and_the_parsers_reason() {
    let (e, cells) = listed_with(b"\x00\x1b[2Jnot a result at all\n");
    assert!(e["last_result"].is_null(), "{e}");
    let error = e["last_result_error"].as_str().unwrap();
    assert!(error.contains("last_result"), "{error}");
    assert_eq!(&cells[5..8], ["-", "-", "-"], "{cells:?}");
    let reason = cells[9..].join(" ");
    assert!(reason.contains("last_result"), "{reason}");
    assert!(
        !reason.contains('\x1b'),
        "control characters reach the terminal: {reason:?}"
    );
}

#[test]
fn a_truncated_file_is_a_dash_and_a_reason() {
    let now = unix_now();
    let full = last_result_text(now - 20, now, 0, "1.000000e-03");
    let (e, cells) = listed_with(&full.as_bytes()[..full.len() / 2]);
    assert!(e["last_result"].is_null(), "{e}");
    assert!(!e["last_result_error"].as_str().unwrap().is_empty(), "{e}");
    assert_eq!(&cells[5..8], ["-", "-", "-"], "{cells:?}");
    assert!(cells.len() > 9, "a reason: {cells:?}");
}

#[test]
fn a_huge_file_is_refused_by_its_size() {
    let (e, cells) = listed_with(&vec![b'9'; 20 << 20]);
    let error = e["last_result_error"].as_str().unwrap();
    assert!(error.contains("larger than"), "{error}");
    assert_eq!(&cells[5..8], ["-", "-", "-"], "{cells:?}");
}

#[test]
fn a_fifo_in_its_place_is_refused_without_blocking() {
    let base = Base::new();
    base.write_order("t", &ping_order("127.0.0.1", 20, 3));
    fs::create_dir_all(base.join("output/t")).unwrap();
    let fifo = base.join("output/t/last_result");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o644)).unwrap();
    // `wide` fails the test if the command does not finish: a blocking open would hang.
    let e = entry(&base, "t");
    let error = e["last_result_error"].as_str().unwrap();
    assert!(error.contains("not a regular file"), "{error}");
    let cells = row(&base, "t");
    assert_eq!(&cells[5..8], ["-", "-", "-"], "{cells:?}");
}

#[test]
fn a_symlink_in_its_place_or_on_the_way_is_not_followed() {
    let base = Base::new();
    base.write_order("t", &ping_order("127.0.0.1", 20, 3));
    base.write_order("d/t", &ping_order("127.0.0.1", 20, 3));
    // A valid result outside the base: following either link would show it.
    let outside = tempfile::tempdir().unwrap();
    let now = unix_now();
    fs::write(
        outside.path().join("last_result"),
        last_result_text(now - 20, now, 0, "1.000000e-03"),
    )
    .unwrap();
    fs::create_dir_all(base.join("output/t")).unwrap();
    std::os::unix::fs::symlink(outside.path().join("last_result"), base.join("output/t/last_result")).unwrap();
    fs::create_dir_all(base.join("output")).unwrap();
    std::os::unix::fs::symlink(outside.path(), base.join("output/d")).unwrap();

    let e = entry(&base, "t");
    assert!(e["last_result"].is_null(), "followed: {e}");
    assert!(e["last_result_error"].as_str().unwrap().contains("symlink"), "{e}");
    let e = entry(&base, "d/t");
    assert!(e["last_result"].is_null(), "followed: {e}");
    assert!(
        e["last_result_error"].as_str().unwrap().contains("symbolic link"),
        "{e}"
    );
    for id in ["t", "d/t"] {
        let cells = row(&base, id);
        assert_eq!(&cells[5..8], ["-", "-", "-"], "{cells:?}");
    }
}

#[test]
fn the_expiry_follows_the_configured_order_timeout() {
    let base = Base::new();
    base.write_config("order-timeout: 7200\n");
    base.write_order("t", &ping_order("127.0.0.1", 20, 3));
    let mtime = unix_now() - 600;
    set_mtime(&base.join("orders/t"), mtime);
    let before = unix_now();
    let e = entry(&base, "t");
    let after = unix_now();
    let left = e["expires_in"].as_i64().unwrap();
    assert!(
        (7200 - (after - mtime)..=7200 - (before - mtime)).contains(&left),
        "{e}"
    );
    // Past the timeout but not yet archived (no daemon): overdue, not a negative duration.
    set_mtime(&base.join("orders/t"), unix_now() - 8000);
    // (A fresh scan lists it as active: expiring is the daemon's, which archives it.)
    let e = entry(&base, "t");
    assert_eq!(e["state"], "active", "{e}");
    assert!(e["expires_in"].as_i64().unwrap() < 0, "{e}");
    assert_eq!(row(&base, "t")[8], "overdue");
}

#[test]
fn a_symlinked_output_directory_is_a_reason_on_every_order_not_followed() {
    let base = Base::new();
    base.write_order("t", &ping_order("127.0.0.1", 20, 3));
    let outside = tempfile::tempdir().unwrap();
    let now = unix_now();
    fs::create_dir_all(outside.path().join("t")).unwrap();
    fs::write(
        outside.path().join("t/last_result"),
        last_result_text(now - 20, now, 0, "1.000000e-03"),
    )
    .unwrap();
    std::os::unix::fs::symlink(outside.path(), base.join("output")).unwrap();
    let e = entry(&base, "t");
    assert!(e["last_result"].is_null(), "followed: {e}");
    assert!(e["last_result_error"].as_str().unwrap().contains("output/"), "{e}");
    assert_eq!(&row(&base, "t")[5..8], ["-", "-", "-"]);
}

#[test]
fn without_wide_the_listing_is_unchanged() {
    let base = Base::new();
    base.write_order("t", &ping_order("127.0.0.1", 20, 3));
    let out = Command::new(BIN)
        .args(["orders", "--json", "--base-dir"])
        .arg(base.path())
        .output()
        .unwrap();
    assert!(out.status.success());
    let listing: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let e = &listing[0];
    for key in ["last_result", "last_result_error", "expires_in"] {
        assert!(e.get(key).is_none(), "{key} without --wide: {e}");
    }
}

#[test]
fn beside_a_running_daemon_loopback_shows_no_loss_and_a_median() {
    let base = Base::new();
    base.write_order("lo", &ping_order("127.0.0.1", 2, 3));
    let daemon = base.start(FAST);
    wait_for("loopback measured", LIMIT, Some(&daemon), || {
        base.read("output/lo/last_result")
            .is_some_and(|text| field(&text, "pings") == "3")
    });
    let e = entry(&base, "lo");
    assert_eq!(e["last_result"]["loss"], 0, "{e}");
    assert_eq!(e["last_result"]["pings"], 3, "{e}");
    assert!(e["last_result"]["median_ms"].as_f64().unwrap() >= 0.0, "{e}");
    let cells = row(&base, "lo");
    assert_eq!(cells[5], "0/3", "{cells:?}");
    assert!(cells[6].ends_with("ms"), "{cells:?}");
    assert_ne!(cells[7], "-", "{cells:?}");
    drop(daemon);
}
