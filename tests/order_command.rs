//! `spoolmon order add|touch|remove` through the real binary on a real base directory: orders
//! written as the daemon reads them, invalid, existing, hostile and huge input refused with
//! nothing written, symlinks never followed out of `orders/`, and one run beside a real
//! `spoolmon run` (an added order is measured, a removed one archived).

mod common;

use common::*;
use std::fs;
use std::io::Write;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, SystemTime};

const LIMIT: Duration = Duration::from_secs(60);

/// `spoolmon order <args> --base-dir <base>`, with `stdin` fed in (or nothing: /dev/null).
fn order(base: &Base, args: &[&str], stdin: Option<&[u8]>) -> Output {
    let mut child = Command::new(BIN)
        .arg("order")
        .args(args)
        .arg("--base-dir")
        .arg(base.path())
        .stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    if let Some(bytes) = stdin {
        let mut pipe = child.stdin.take().unwrap();
        // The command stops reading at the size limit: the rest may meet a closed pipe.
        let _ = pipe.write_all(bytes);
    }
    child.wait_with_output().unwrap()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Every entry below `dir`, relative, sorted (temporary files included: none may be left).
fn tree(dir: &Path) -> Vec<String> {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<String>) {
        for entry in fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            out.push(path.strip_prefix(root).unwrap().display().to_string());
            if path.is_dir() && !path.is_symlink() {
                walk(root, &path, out);
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out);
    out.sort();
    out
}

/// `spoolmon orders --json`: the entry of `id`.
fn listed(base: &Base, id: &str) -> Option<serde_json::Value> {
    let out = Command::new(BIN)
        .args(["orders", "--json", "--base-dir"])
        .arg(base.path())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let listing: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    listing.as_array().unwrap().iter().find(|e| e["id"] == id).cloned()
}

fn mtime(path: &Path) -> SystemTime {
    fs::symlink_metadata(path).unwrap().modified().unwrap()
}

fn set_old_mtime(path: &Path) -> SystemTime {
    let old = SystemTime::now() - Duration::from_secs(86_400);
    fs::File::options()
        .write(true)
        .open(path)
        .unwrap()
        .set_modified(old)
        .unwrap();
    old
}

#[test]
fn add_touch_and_remove_an_order_the_daemon_reads() {
    let base = Base::new();
    let out = order(
        &base,
        &[
            "add",
            "app/sub/t1",
            "--probe",
            "fping",
            "--host",
            "127.0.0.1",
            "--step",
            "30",
            "--pings",
            "4",
        ],
        None,
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(tree(&base.join("orders")), ["app", "app/sub", "app/sub/t1"]);
    let entry = listed(&base, "app/sub/t1").unwrap();
    assert_eq!(entry["state"], "active", "{entry}");
    assert_eq!((&entry["step"], &entry["pings"]), (&30.into(), &4.into()), "{entry}");
    assert_eq!(
        (&entry["target"], &entry["expire"]),
        (&"127.0.0.1".into(), &"timeout".into())
    );

    let out = order(
        &base,
        &[
            "add",
            "static",
            "--host",
            "127.0.0.2",
            "--expire-never",
            "--user",
            "ops",
        ],
        None,
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let text = base.read("orders/static").unwrap();
    assert!(
        text.contains("user: \"ops\"") && text.contains("step: 20") && text.contains("pings: 3"),
        "{text}"
    );
    assert_eq!(listed(&base, "static").unwrap()["expire"], "never");

    // touch: a fresh mtime, the content as it was.
    let path = base.join("orders/app/sub/t1");
    let before = fs::read(&path).unwrap();
    let old = set_old_mtime(&path);
    let out = order(&base, &["touch", "app/sub/t1", "static"], None);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(mtime(&path) > old + Duration::from_secs(86_000));
    assert_eq!(fs::read(&path).unwrap(), before);

    let out = order(&base, &["remove", "app/sub/t1", "static"], None);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(tree(&base.join("orders")), ["app", "app/sub"]);

    // Neither can act on an order that is not there: exit 2, the id named.
    for verb in ["touch", "remove"] {
        let out = order(&base, &[verb, "app/sub/t1"], None);
        assert_eq!(out.status.code(), Some(2), "{verb}");
        assert!(stderr(&out).contains("app/sub/t1"), "{}", stderr(&out));
    }
}

#[test]
fn add_takes_any_order_from_a_file_or_stdin() {
    let base = Base::new();
    let tcp = "user: ops\nstep: 10\npings: 2\nprobe: tcp\ntcp:\n    host: 127.0.0.1\n    port: 22\n";
    let file = base.join("tcp.yaml");
    fs::write(&file, tcp).unwrap();
    let out = order(&base, &["add", "web/tcp", "--file", file.to_str().unwrap()], None);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(base.read("orders/web/tcp").unwrap(), tcp);
    assert_eq!(listed(&base, "web/tcp").unwrap()["probe"], "tcp");

    let http = "user: ops\nstep: 60\npings: 1\nprobe: httping\nhttping:\n    url: http://127.0.0.1/\ncolour: blue\n";
    let out = order(&base, &["add", "web/http"], Some(http.as_bytes()));
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(base.read("orders/web/http").unwrap(), http);
    // An unknown key is the daemon's warning, not a refusal.
    assert!(
        stderr(&out).contains("warning") && stderr(&out).contains("colour"),
        "{}",
        stderr(&out)
    );
}

/// What the message must name, the arguments, stdin.
type Refusal<'a> = (&'a str, &'a [&'a str], Option<&'a [u8]>);

#[test]
fn an_invalid_order_is_refused_with_the_parsers_message_and_nothing_is_written() {
    let base = Base::new();
    let cases: [Refusal; 6] = [
        ("step: 0", &["add", "new/a", "--host", "127.0.0.1", "--step", "0"], None),
        (
            "alert.warning.loss",
            &["add", "new/a"],
            Some(
                b"user: u\nstep: 2\npings: 1\nprobe: fping\nfping: {host: 127.0.0.1}\nalert: {warning: {loss: lots}}\n",
            ),
        ),
        (
            "expire",
            &["add", "new/a"],
            Some(b"user: u\nstep: 2\npings: 1\nprobe: fping\nfping: {host: 127.0.0.1}\nexpire: sometimes\n"),
        ),
        (
            "carrier-pigeon",
            &["add", "new/a"],
            Some(b"user: u\nstep: 2\npings: 1\nprobe: carrier-pigeon\n"),
        ),
        ("YAML", &["add", "new/a"], Some(b"user: [unclosed\n")),
        ("UTF-8", &["add", "new/a"], Some(b"user: \xff\xfe\n")),
    ];
    for (expected, args, stdin) in cases {
        let out = order(&base, args, stdin);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stderr(&out));
        assert!(stderr(&out).contains(expected), "{args:?}: {}", stderr(&out));
        assert_eq!(tree(&base.join("orders")), Vec::<String>::new(), "{args:?}");
    }
    // A host that does not resolve would only wait in the daemon: refused here.
    let out = order(&base, &["add", "new/a", "--host", "no-such-host.invalid"], None);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("does not resolve"), "{}", stderr(&out));
    assert!(tree(&base.join("orders")).is_empty());
}

#[test]
fn an_existing_order_is_replaced_only_with_force() {
    let base = Base::new();
    base.write_order("app/t", &ping_order("127.0.0.1", 20, 3));
    let before = base.read("orders/app/t").unwrap();
    let out = order(&base, &["add", "app/t", "--host", "127.0.0.9"], None);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("--force"), "{}", stderr(&out));
    assert_eq!(base.read("orders/app/t").unwrap(), before);
    assert_eq!(tree(&base.join("orders")), ["app", "app/t"]);

    let out = order(&base, &["add", "app/t", "--host", "127.0.0.9", "--force"], None);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(base.read("orders/app/t").unwrap().contains("127.0.0.9"));
    assert_eq!(tree(&base.join("orders")), ["app", "app/t"], "no temporary file left");

    // A directory of that name is no order to replace, even with --force.
    fs::create_dir(base.join("orders/dir")).unwrap();
    let out = order(&base, &["add", "dir", "--host", "127.0.0.9", "--force"], None);
    assert_eq!(out.status.code(), Some(2));
    let out = order(&base, &["remove", "dir"], None);
    assert_eq!(out.status.code(), Some(2));
    assert!(base.join("orders/dir").is_dir());
}

#[test]
fn symlinks_below_orders_are_never_followed() {
    let base = Base::new();
    let outside = tempfile::tempdir().unwrap();
    let victim = outside.path().join("victim");
    fs::write(&victim, "not an order\n").unwrap();
    let victim_mtime = set_old_mtime(&victim);
    std::os::unix::fs::symlink(outside.path(), base.join("orders/linked")).unwrap();
    std::os::unix::fs::symlink(&victim, base.join("orders/file-link")).unwrap();

    let out = order(&base, &["add", "linked/x", "--host", "127.0.0.1"], None);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let out = order(&base, &["add", "linked/deeper/x", "--host", "127.0.0.1"], None);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    for verb in ["touch", "remove"] {
        let out = order(&base, &[verb, "linked/victim"], None);
        assert_eq!(out.status.code(), Some(2), "{verb}: {}", stderr(&out));
    }
    let out = order(&base, &["touch", "file-link"], None);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert_eq!(tree(outside.path()), ["victim"], "nothing written outside orders/");
    assert_eq!(fs::read_to_string(&victim).unwrap(), "not an order\n");
    assert_eq!(mtime(&victim), victim_mtime, "the target was touched");

    // remove of a symlinked order removes the link, never its target.
    let out = order(&base, &["remove", "file-link"], None);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(!base.join("orders/file-link").exists() && victim.exists());

    // orders/ itself a symlink: refused too.
    let other = Base::new();
    fs::remove_dir(other.join("orders")).unwrap();
    std::os::unix::fs::symlink(outside.path(), other.join("orders")).unwrap();
    let out = order(&other, &["add", "x", "--host", "127.0.0.1"], None);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert_eq!(tree(outside.path()), ["victim"]);
}

#[test]
fn hostile_ids_are_refused_and_nothing_is_written() {
    let base = Base::new();
    // `../x` and `a/../../x` from orders/ would land at <base>/x.
    let outside = base.path().to_path_buf();
    let absolute = base.join("abs-target");
    for id in [
        "../x",
        "a/../../x",
        absolute.to_str().unwrap(),
        "a//b",
        "./a",
        "",
        "a/",
        ".hidden",
        "dir/.hidden/x",
        "x.tmp",
        "x~",
    ] {
        let out = order(&base, &["add", id, "--host", "127.0.0.1"], None);
        assert_eq!(out.status.code(), Some(2), "{id:?}: {}", stderr(&out));
        assert!(stderr(&out).contains("order id"), "{id:?}: {}", stderr(&out));
        for verb in ["touch", "remove"] {
            assert_eq!(order(&base, &[verb, id], None).status.code(), Some(2), "{verb} {id:?}");
        }
    }
    assert!(tree(&base.join("orders")).is_empty());
    assert!(!outside.join("x").exists() && !absolute.exists());
}

#[test]
fn huge_input_is_refused_at_the_daemons_size_limit() {
    let base = Base::new();
    let limit = spoolmon::orders::order::MAX_ORDER_BYTES as usize;
    let mut huge = ping_order("127.0.0.1", 20, 3).into_bytes();
    huge.extend(std::iter::repeat_n(b'#', limit));
    let out = order(&base, &["add", "big"], Some(&huge));
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains(&format!("larger than {limit} bytes")),
        "{}",
        stderr(&out)
    );
    let file = base.join("big.yaml");
    fs::write(&file, &huge).unwrap();
    let out = order(&base, &["add", "big", "--file", file.to_str().unwrap()], None);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("larger than"), "{}", stderr(&out));
    assert!(tree(&base.join("orders")).is_empty());

    // Just at the limit is an order like any other.
    let mut fits = ping_order("127.0.0.1", 20, 3).into_bytes();
    fits.extend(std::iter::repeat_n(b'#', limit - fits.len()));
    let out = order(&base, &["add", "fits"], Some(&fits));
    assert!(out.status.success(), "{}", stderr(&out));
}

#[test]
fn a_shared_group_writable_orders_directory_stays_shared_below() {
    let base = Base::new();
    fs::set_permissions(base.join("orders"), fs::Permissions::from_mode(0o2775)).unwrap();
    let out = order(&base, &["add", "team/app/t", "--host", "127.0.0.1"], None);
    assert!(out.status.success(), "{}", stderr(&out));
    for dir in ["orders/team", "orders/team/app"] {
        assert_eq!(fs::metadata(base.join(dir)).unwrap().mode() & 0o7777, 0o2775, "{dir}");
    }
    assert_eq!(
        fs::metadata(base.join("orders/team/app/t")).unwrap().mode() & 0o777,
        0o664
    );

    // A private orders/: private below too.
    let private = Base::new();
    fs::set_permissions(private.join("orders"), fs::Permissions::from_mode(0o755)).unwrap();
    let out = order(&private, &["add", "a/t", "--host", "127.0.0.1"], None);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(fs::metadata(private.join("orders/a")).unwrap().mode() & 0o7777, 0o755);
    assert_eq!(fs::metadata(private.join("orders/a/t")).unwrap().mode() & 0o777, 0o644);
}

#[test]
fn beside_a_running_daemon_an_added_order_is_measured_and_a_removed_one_archived() {
    let base = Base::new();
    // Measured in the same batch as the added order: shows how far the pipeline got.
    base.write_order("witness", &ping_order("127.0.0.16", 2, 1));
    let daemon = base.start(FAST);
    wait_for("witness measured", LIMIT, Some(&daemon), || {
        base.read("output/witness/last_result").is_some()
    });
    let out = order(
        &base,
        &["add", "cli/t", "--host", "127.0.0.17", "--step", "2", "--pings", "1"],
        None,
    );
    assert!(out.status.success(), "{}", stderr(&out));
    wait_for("added order measured", LIMIT, Some(&daemon), || {
        base.read("output/cli/t/last_result").is_some()
    });
    let out = order(&base, &["remove", "cli/t"], None);
    assert!(out.status.success(), "{}", stderr(&out));
    wait_for("removed order archived", LIMIT, Some(&daemon), || {
        base.join("archive/cli/t/last_result").exists() && !base.join("output/cli/t").exists()
    });
    let archived_at = unix_now();
    wait_for("a later step of the witness measured", LIMIT, Some(&daemon), || {
        base.result_time("witness").is_some_and(|t| t >= archived_at + 4)
    });
    assert!(
        !base.join("output/cli/t").exists(),
        "output of the removed order came back"
    );
    assert!(listed(&base, "cli/t").is_none());
}

#[test]
fn add_checks_the_order_against_the_config_given() {
    let base = Base::new();
    let sping = b"user: ops\nstep: 10\npings: 2\nprobe: sping\nsping:\n    host: 1-ff00:0:110,10.0.0.1\n";
    // The default sping-command needs only {host}: accepted.
    let out = order(&base, &["add", "scion/a"], Some(sping));
    assert!(out.status.success(), "{}", stderr(&out));
    // A command that needs {interface}: the same order lacks it, as the daemon would say.
    let config = base.write_config("sping-command: [myping, --dev, \"{interface}\", \"{host}\"]\n");
    let out = order(
        &base,
        &["add", "scion/b", "--config", config.to_str().unwrap()],
        Some(sping),
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("sping.interface"), "{}", stderr(&out));
    assert!(!base.join("orders/scion/b").exists());
}

#[test]
fn an_orders_alert_thresholds_are_written_as_given_and_listed() {
    let base = Base::new();
    let text = "user: u\nstep: 20\npings: 3\nprobe: fping\nfping: {host: 127.0.0.1}\n\
                alert:\n    warning: {loss: 10%, median: 100ms}\n    critical: {max: 1s}\n";
    let out = order(&base, &["add", "app/alerting"], Some(text.as_bytes()));
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stderr(&out), "", "no warning: alert: is a key of the order");
    assert_eq!(base.read("orders/app/alerting").unwrap(), text);
    let entry = listed(&base, "app/alerting").unwrap();
    assert_eq!(
        entry["alert"],
        serde_json::json!({"warning": {"loss": "10%", "median": "100ms"}, "critical": {"max": "1s"}}),
        "{entry}"
    );
    // An order without one lists no alert at all.
    let out = order(&base, &["add", "app/plain", "--host", "127.0.0.1"], None);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(listed(&base, "app/plain").unwrap().get("alert").is_none());
}
