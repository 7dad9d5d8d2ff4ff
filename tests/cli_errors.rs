//! The operator-facing errors of the command line (issue 11, point 7): each message names the
//! file or key and the real cause once, bad arguments get the exit status their command
//! promises, and a closed stdout ends a command quietly.

mod common;

use common::BIN;
use std::process::{Command, Output};

fn spoolmon(args: &[&str]) -> Output {
    Command::new(BIN).args(args).output().expect("spoolmon runs")
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn a_missing_config_file_is_one_line_naming_it_and_the_cause_once() {
    let out = spoolmon(&["config", "--print", "--config", "/nonexistent/spoolmon.yaml"]);
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("/nonexistent/spoolmon.yaml"), "{err}");
    assert_eq!(err.matches("No such file or directory").count(), 1, "{err}");
}

/// Runs spoolmon with stdout on a pipe whose reader is already closed (the first write fails
/// with EPIPE, as `spoolmon orders | true` does once `true` has exited).
fn spoolmon_into_closed_pipe(args: &[&str]) -> Output {
    let (reader, writer) = nix::unistd::pipe().expect("pipe");
    drop(reader);
    Command::new(BIN)
        .args(args)
        .stdout(writer)
        .stderr(std::process::Stdio::piped())
        .output()
        .expect("spoolmon runs")
}

#[test]
fn a_closed_stdout_ends_every_printing_command_quietly() {
    let base = common::Base::new();
    base.write_order("a", "fping: {host: 127.0.0.1}\n");
    let dir = base.path().to_str().unwrap();
    let config = base.join("spoolmon.yaml");
    std::fs::write(&config, "queue-size: 10\n").unwrap();
    let config = config.to_str().unwrap();
    let commands: &[&[&str]] = &[
        &["orders", "--base-dir", dir],
        &["orders", "--base-dir", dir, "--json"],
        &["show", "a", "--base-dir", dir],
        &["show", "a", "--base-dir", dir, "--json"],
        &["status", "--base-dir", dir],
        &["status", "--base-dir", dir, "--json"],
        &["outbox", "--base-dir", dir],
        &["outbox", "--base-dir", dir, "--json"],
        &["config", "--print-defaults"],
        &["config", "--reference"],
        &["config", "--print", "--config", config],
        &["completions", "bash"],
        &["man"],
    ];
    for args in commands {
        // Each prints something when stdout is open (else the test would prove nothing).
        let open = spoolmon(args);
        assert!(
            open.status.success() && !open.stdout.is_empty(),
            "{args:?}: {}",
            stderr(&open)
        );
        let closed = spoolmon_into_closed_pipe(args);
        assert_eq!(closed.status.code(), Some(0), "{args:?}: {}", stderr(&closed));
        assert_eq!(stderr(&closed), "", "{args:?}");
    }
    // A check keeps its plugin status: it is the answer, whether or not its line was read.
    for check in ["queue", "failed", "outbox", "daemon", "order", "orders", "pull"] {
        // `check order` takes the order's id first.
        let args: Vec<&str> = match check {
            "order" => vec!["check", check, "app/t", "--base-dir", dir],
            _ => vec!["check", check, "--base-dir", dir],
        };
        let open = spoolmon(&args);
        assert!(!open.stdout.is_empty(), "{args:?}");
        let closed = spoolmon_into_closed_pipe(&args);
        assert_eq!(
            closed.status.code(),
            open.status.code(),
            "{args:?}: {}",
            stderr(&closed)
        );
        assert_eq!(stderr(&closed), "", "{args:?}");
    }
}

#[test]
fn an_unknown_log_level_is_refused_naming_the_accepted_ones() {
    for level in ["warning", "verbose", "spoolmon=loud", "info,spoolmon"] {
        let out = spoolmon(&["--log-level", level, "config", "--print-defaults"]);
        assert_eq!(out.status.code(), Some(2), "{level}");
        let err = stderr(&out);
        assert!(
            err.contains("error, warn, info, debug, trace or off") && err.contains("--log-level"),
            "{level}: {err}"
        );
        assert!(out.stdout.is_empty(), "{level}");
    }
    for level in [
        "warn",
        "WARN",
        "off",
        "trace",
        "spoolmon=debug",
        "spoolmon::probe=trace,warn",
    ] {
        let out = spoolmon(&["--log-level", level, "config", "--print-defaults"]);
        assert!(out.status.success(), "{level}: {}", stderr(&out));
    }
}

/// Asserts a Nagios UNKNOWN for a usage error: exit 3, one `SPOOLMON <CHECK> UNKNOWN - ...`
/// line on stdout that contains `reason`, nothing on stderr.
fn assert_unknown(args: &[&str], check: &str, reason: &str) {
    let out = spoolmon(args);
    assert_eq!(out.status.code(), Some(3), "{args:?}: {}{}", stdout(&out), stderr(&out));
    let text = stdout(&out);
    assert_eq!(text.lines().count(), 1, "{args:?}: {text}");
    let prefix = format!("SPOOLMON {check} UNKNOWN - ");
    assert!(text.starts_with(&prefix) && text.contains(reason), "{args:?}: {text}");
    assert_eq!(stderr(&out), "", "{args:?}");
}

#[test]
fn check_argument_errors_are_nagios_unknown() {
    let base = tempfile::tempdir().unwrap();
    let dir = base.path().to_str().unwrap();
    for check in ["queue", "failed", "outbox", "daemon", "order", "orders", "pull"] {
        let upper = check.to_uppercase();
        // `check order` takes the order's id first (and a threshold list, not a range).
        let id: &[&str] = if check == "order" { &["app/t"] } else { &[] };
        let at =
            |rest: &[&'static str]| -> Vec<&str> { [&["check", check][..], id, &["--base-dir", dir], rest].concat() };
        assert_unknown(&at(&["--bogus"]), &upper, "--bogus");
        assert_unknown(&at(&["-w"]), &upper, "--warning");
        assert_unknown(&at(&["-c", "x:y"]), &upper, "x:y");
        assert_unknown(&at(&["--log-level", "warning"]), &upper, "warning");
        assert_unknown(
            &[&["--log-level", "info", "check", check][..], id, &["stray"]].concat(),
            &upper,
            "stray",
        );
    }
    assert_unknown(&["check", "order", "--base-dir", dir], "ORDER", "<ID>");
    assert_unknown(
        &["check", "order", "../x", "--base-dir", dir],
        "ORDER",
        "not an order id",
    );
    assert_unknown(
        &["check", "orders", "--base-dir", dir, "--order-warning", "loss=2,max"],
        "ORDERS",
        "\"max\": expected metric=value",
    );
    assert_unknown(
        &["check", "orders", "--base-dir", dir, "--stale-steps", "x"],
        "ORDERS",
        "--stale-steps",
    );
    // 0 steps would make every result stale at once.
    assert_unknown(
        &["check", "orders", "--base-dir", dir, "--stale-steps", "0"],
        "ORDERS",
        "0 is not in 1..",
    );
    assert_unknown(
        &["check", "order", "app/t", "--base-dir", dir, "--stale-steps", "0"],
        "ORDER",
        "0 is not in 1..",
    );
    assert_unknown(&["check", "frobnicate"], "CHECK", "frobnicate");
    assert_unknown(
        &["check"],
        "CHECK",
        "queue, failed, outbox, daemon, order, orders, pull or children",
    );
    // Help is still help.
    let help = spoolmon(&["check", "queue", "--help"]);
    assert_eq!(help.status.code(), Some(0));
    assert!(stdout(&help).contains("--warning"));
    // Other commands keep clap's usage error and exit status 2.
    let other = spoolmon(&["orders", "--bogus"]);
    assert_eq!(other.status.code(), Some(2));
    assert!(stderr(&other).contains("--bogus"));
}

/// `spoolmon run` on `base`, which must refuse to start: its error (exit 2).
fn refused_base(base: &std::path::Path) -> String {
    let out = spoolmon(&["run", "--base-dir", base.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let err = stderr(&out);
    assert_eq!(err.lines().count(), 1, "{err}");
    err
}

#[test]
fn a_base_directory_that_cannot_be_made_names_the_path_and_the_real_cause() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("file");
    std::fs::write(&file, "").unwrap();
    let err = refused_base(&file);
    assert!(
        err.contains(&format!("{}: it is a file, not a directory", file.display())),
        "{err}"
    );
    let err = refused_base(&file.join("base"));
    assert!(
        err.contains(&format!("{} is a file, not a directory", file.display())),
        "{err}"
    );
    // A file where a directory of the layout belongs.
    let base = dir.path().join("base");
    std::fs::create_dir(&base).unwrap();
    std::fs::write(base.join("orders"), "").unwrap();
    let err = refused_base(&base);
    assert!(
        err.contains(&format!(
            "{}: it is a file, not a directory",
            base.join("orders").display()
        )),
        "{err}"
    );

    // Read-only: a tmpfs mounted read-only, as the base's parent and as the base itself.
    let ro = ReadOnlyMount::new(&dir.path().join("ro"));
    for base in [ro.0.join("base"), ro.0.clone()] {
        let err = refused_base(&base);
        assert!(err.contains(base.to_str().unwrap()), "{err}");
        assert_eq!(err.matches("Read-only file system").count(), 1, "{err}");
    }
    // Immutable (chattr +i): even root may not create in it.
    let immutable = dir.path().join("immutable");
    std::fs::create_dir(&immutable).unwrap();
    let _attr = Immutable::new(&immutable);
    let err = refused_base(&immutable.join("base"));
    assert!(err.contains(immutable.join("base").to_str().unwrap()), "{err}");
    assert_eq!(err.matches("Operation not permitted").count(), 1, "{err}");
    // Without permission: the temporary directory is root's (mode 0700), spoolmon runs as nobody.
    let base = dir.path().join("base-of-nobody");
    let out = Command::new("runuser")
        .args(["-u", "nobody", "--", BIN, "run", "--base-dir", base.to_str().unwrap()])
        .output()
        .expect("runuser runs (util-linux; the tests run as root)");
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains(base.to_str().unwrap()), "{err}");
    assert_eq!(err.matches("Permission denied").count(), 1, "{err}");
}

/// A read-only tmpfs at a new directory, unmounted on drop. Needs root (the tests run as root).
struct ReadOnlyMount(std::path::PathBuf);

impl ReadOnlyMount {
    fn new(path: &std::path::Path) -> ReadOnlyMount {
        std::fs::create_dir(path).unwrap();
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", "ro", "tmpfs"])
            .arg(path)
            .status()
            .expect("mount runs (util-linux)");
        assert!(
            status.success(),
            "mount -t tmpfs -o ro failed: the test needs root and util-linux's mount"
        );
        ReadOnlyMount(path.to_owned())
    }
}

impl Drop for ReadOnlyMount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

/// The immutable attribute on a directory, removed on drop (so the temporary directory can go).
struct Immutable(std::path::PathBuf);

impl Immutable {
    fn new(path: &std::path::Path) -> Immutable {
        let status = Command::new("chattr")
            .arg("+i")
            .arg(path)
            .status()
            .expect("chattr runs (e2fsprogs)");
        assert!(
            status.success(),
            "chattr +i failed: the test needs root and a filesystem with attributes"
        );
        Immutable(path.to_owned())
    }
}

impl Drop for Immutable {
    fn drop(&mut self) {
        let _ = Command::new("chattr").arg("-i").arg(&self.0).status();
    }
}

#[test]
fn a_typo_in_a_sink_is_named_with_the_file_the_sink_and_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sinks.yaml");
    std::fs::write(&path, "sinks:\n  carbon:\n    type: graphite\n    sever: x\n").unwrap();
    let out = spoolmon(&["config", "--print", "--config", path.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(
        err.contains("sinks.yaml") && err.contains("sinks.carbon.sever") && err.contains("`server`"),
        "{err}"
    );
}
