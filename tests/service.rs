//! `spoolmon run` as a system service: SIGHUP reloads under load (a bad config is refused and
//! the running one kept, a good one takes effect and loses or repeats nothing), sd_notify
//! messages reach the service manager's socket, `--user` drops root while ICMP keeps working,
//! and logs go to the journal (priorities, no timestamps) or to `--log-file` (reopened on
//! SIGHUP).

mod common;

use common::*;
use std::collections::BTreeMap;
use std::fs;
use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

const LIMIT: Duration = Duration::from_secs(90);

/// Starts `spoolmon run` on `base` with `args` before the subcommand's own and `env` set;
/// stderr goes to `daemon.log`.
fn spawn_run(base: &Base, global: &[&str], extra: &[&str], env: &[(&str, String)]) -> Daemon {
    let log = fs::File::create(base.join("daemon.log")).unwrap();
    let mut command = Command::new(BIN);
    command
        .args(global)
        .args(["run", "--base-dir"])
        .arg(base.path())
        .arg("--config")
        .arg(base.join("spoolmon.yaml"))
        .args(extra)
        .stdout(Stdio::null())
        .stderr(log)
        .env_remove("RUST_LOG")
        .env_remove("NOTIFY_SOCKET")
        .env_remove("JOURNAL_STREAM");
    for (key, value) in env {
        command.env(key, value);
    }
    Daemon::from_child(command.spawn().unwrap(), base.join("daemon.log"))
}

fn store_config(stores: &[(&str, &Path)], extra: &str) -> String {
    let mut text = format!("rescan-interval: 2\n{extra}sinks:\n");
    for (name, dir) in stores {
        text.push_str(&format!(
            "  {name}: {{type: local-store, dir: '{}', hostname: vm}}\n",
            dir.display()
        ));
    }
    text
}

/// `(order path, time) -> number of median lines` in a local store.
fn medians(dir: &Path) -> BTreeMap<(String, i64), usize> {
    let mut counts = BTreeMap::new();
    for entry in fs::read_dir(dir).into_iter().flatten() {
        let text = fs::read_to_string(entry.unwrap().path().join("stats")).unwrap_or_default();
        for line in text.lines().filter(|l| l.contains(".median ")) {
            let fields: Vec<&str> = line.split(' ').collect();
            *counts
                .entry((fields[0].to_string(), fields[2].parse().unwrap()))
                .or_default() += 1;
        }
    }
    counts
}

const ORDERS: usize = 40;

/// The value of an unlabelled sample in `state/metrics.prom` (0 when absent).
fn metric(base: &Base, name: &str) -> f64 {
    let text = base.read("state/metrics.prom").unwrap_or_default();
    text.lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
        .unwrap_or(0.0)
}

#[test]
fn sighup_under_load_refuses_a_bad_config_and_applies_a_good_one_losing_nothing() {
    let base = Base::new();
    for o in 0..ORDERS {
        base.write_order(&format!("load/o{o}"), &ping_order(&format!("127.0.1.{}", o + 1), 2, 2));
    }
    let (first, second) = (base.join("store-a"), base.join("store-b"));
    base.write_config(&store_config(&[("a", &first)], "self-metrics: {interval: 1}\n"));
    let daemon = spawn_run(&base, &["--log-level", "debug"], &[], &[]);
    wait_for("results in store a", LIMIT, Some(&daemon), || {
        medians(&first).len() >= 3 * ORDERS
    });

    base.write_config("rescan-interval: [\n");
    signal(daemon.pid(), "HUP");
    wait_for("bad config refused", LIMIT, Some(&daemon), || {
        daemon.log_text().contains("keeping the running configuration")
    });
    let before = medians(&first).len();
    wait_for("still measuring", LIMIT, Some(&daemon), || {
        medians(&first).len() >= before + 2 * ORDERS
    });

    // Counters outlive the reload: the same start time, the processed count keeps growing.
    let processed_before = metric(&base, "spoolmon_snapshots_processed_total");
    let started = metric(&base, "spoolmon_start_time_seconds");
    assert!(started > 0.0 && processed_before > 0.0, "state/metrics.prom is written");
    base.write_config(&store_config(
        &[("a", &first), ("b", &second)],
        "self-metrics: {interval: 1}\n",
    ));
    signal(daemon.pid(), "HUP");
    wait_for("good config applied", LIMIT, Some(&daemon), || {
        daemon.log_text().contains("configuration reloaded")
    });
    wait_for("results in the new store b", LIMIT, Some(&daemon), || {
        medians(&second).len() >= 3 * ORDERS
    });
    // An unchanged config is only a rescan.
    signal(daemon.pid(), "HUP");
    wait_for("unchanged config noticed", LIMIT, Some(&daemon), || {
        daemon.log_text().contains("configuration unchanged")
    });
    assert!(daemon.terminate(LIMIT).is_some_and(|s| s.success()));

    assert_eq!(base.count("failed"), 0);
    let a = medians(&first);
    assert!(a.values().all(|&n| n == 1), "a result was delivered twice: {a:?}");
    assert!(medians(&second).values().all(|&n| n == 1));
    // Every order kept being measured across both reloads: per order, the steps in store a
    // cover its whole time span with at most one step missing (no run starts while the old
    // pipeline finishes its processing round; with 2 s steps on a busy machine that can be one).
    for o in 0..ORDERS {
        let path = format!("loadbalancers.vm.ping.load.o{o}.median");
        let times: Vec<i64> = a.keys().filter(|(p, _)| *p == path).map(|(_, t)| *t).collect();
        assert!(
            !times.is_empty(),
            "no {path} in {:?}",
            a.keys().take(3).collect::<Vec<_>>()
        );
        let span = (times.last().unwrap() - times.first().unwrap()) / 2 + 1;
        assert!(
            times.len() as i64 >= span - 1,
            "order {o}: {} results over {span} steps: {times:?}",
            times.len()
        );
    }
}

#[test]
fn the_service_manager_hears_ready_watchdog_reloading_and_stopping() {
    let base = Base::new();
    base.write_order("n", &ping_order("127.0.0.7", 2, 2));
    base.write_config(FAST);
    let socket_path = base.join("notify.sock");
    let socket = UnixDatagram::bind(&socket_path).unwrap();
    socket.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    let env = [
        ("NOTIFY_SOCKET", socket_path.display().to_string()),
        ("WATCHDOG_USEC", "1000000".to_string()),
    ];
    let daemon = spawn_run(&base, &[], &[], &env);
    let mut buf = [0u8; 1024];
    let n = socket.recv(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"READY=1\nSTATUS=1 orders active", "the first message");
    expect_notifications(&socket, &["WATCHDOG=1", "WATCHDOG=1"]);
    base.write_config("rescan-interval: 3\n");
    signal(daemon.pid(), "HUP");
    expect_notifications(&socket, &["RELOADING=1", "READY=1"]);
    signal(daemon.pid(), "TERM");
    expect_notifications(&socket, &["STOPPING=1"]);
    assert!(daemon.wait_exit(LIMIT).is_some_and(|s| s.success()));
}

/// Real and effective uid of `pid` from /proc.
fn uids(pid: u32) -> Vec<u32> {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("Uid:")).unwrap();
    line.split_whitespace().skip(1).map(|v| v.parse().unwrap()).collect()
}

#[test]
fn user_drops_root_after_opening_the_icmp_sockets_and_pings_still_answer() {
    require_root("--user (switching to nobody after opening the ICMP sockets)");
    let nobody = nix::unistd::User::from_name("nobody").unwrap().expect("user nobody");
    let base = Base::new();
    base.write_order("u", &ping_order("127.0.0.9", 2, 3));
    base.write_config("rescan-interval: 2\nengine: native\n");
    let daemon = spawn_run(&base, &[], &["--user", "nobody"], &[]);
    wait_for("answered pings", LIMIT, Some(&daemon), || {
        base.read("output/u/last_result")
            .is_some_and(|t| field(&t, "loss") == "0")
    });
    let uid = nobody.uid.as_raw();
    assert_eq!(uids(daemon.pid()), vec![uid; 4], "real, effective, saved and fs uid");
    use std::os::unix::fs::MetadataExt;
    let written = fs::metadata(base.join("output/u/last_result")).unwrap();
    assert_eq!(written.uid(), uid, "output is written after the switch");
    assert!(daemon.log_text().contains("switched to an unprivileged user"));
    // Still measuring as nobody: the next step's result answers too.
    let first = field(&base.read("output/u/last_result").unwrap(), "time");
    wait_for("a later answered step", LIMIT, Some(&daemon), || {
        base.read("output/u/last_result")
            .is_some_and(|t| field(&t, "time") != first && field(&t, "loss") == "0")
    });
    assert!(daemon.terminate(LIMIT).is_some_and(|s| s.success()));

    // After a switch the user owns state/; a link it plants there is refused at the next start
    // as root, and its target is left alone.
    let elsewhere = tempfile::tempdir().unwrap();
    fs::write(elsewhere.path().join("lock"), "precious\n").unwrap();
    fs::rename(base.join("state"), base.join("state.old")).unwrap();
    std::os::unix::fs::symlink(elsewhere.path(), base.join("state")).unwrap();
    let out = Command::new(BIN)
        .args(["run", "--user", "nobody", "--base-dir"])
        .arg(base.path())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("state is a symbolic link"), "{stderr}");
    assert_eq!(fs::read_to_string(elsewhere.path().join("lock")).unwrap(), "precious\n");
    assert_eq!(
        fs::metadata(elsewhere.path()).unwrap().uid(),
        0,
        "the link's target keeps its owner"
    );

    let out = Command::new(BIN)
        .args(["run", "--user", "no-such-user-here", "--base-dir"])
        .arg(base.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--user no-such-user-here: no such user"));
}

#[test]
fn logs_to_the_journal_carry_priorities_and_no_timestamps() {
    use std::os::unix::fs::MetadataExt;
    let base = Base::new();
    base.write_config(FAST);
    // stderr is daemon.log: JOURNAL_STREAM names it, as systemd names the journal's stream.
    let log = fs::File::create(base.join("daemon.log")).unwrap();
    let meta = log.metadata().unwrap();
    drop(log);
    let stream = format!("{}:{}", meta.dev(), meta.ino());
    let daemon = spawn_run(&base, &[], &[], &[("JOURNAL_STREAM", stream)]);
    wait_for("running", LIMIT, Some(&daemon), || {
        daemon.log_text().contains("spoolmon running")
    });
    assert!(daemon.terminate(LIMIT).is_some_and(|s| s.success()));
    let text = fs::read_to_string(base.join("daemon.log")).unwrap();
    let running = text.lines().find(|l| l.contains("spoolmon running")).unwrap();
    assert!(
        running.starts_with("<6>spoolmon::daemon: spoolmon running"),
        "{running}"
    );
    assert!(text.lines().all(|l| l.starts_with('<')), "{text}");
    assert!(!text.contains("Z "), "no timestamps: {text}");
}

#[test]
fn log_file_has_timestamps_and_is_reopened_on_sighup() {
    let base = Base::new();
    base.write_config(FAST);
    let file = base.join("spoolmon.log");
    let path = file.to_str().unwrap();
    let daemon = spawn_run(&base, &["--log-file", path], &[], &[]);
    wait_for("logging to the file", LIMIT, Some(&daemon), || {
        fs::read_to_string(&file).is_ok_and(|t| t.contains("spoolmon running"))
    });
    fs::rename(&file, base.join("spoolmon.log.1")).unwrap();
    signal(daemon.pid(), "HUP");
    wait_for("reopened", LIMIT, Some(&daemon), || {
        fs::read_to_string(&file).is_ok_and(|t| t.contains("SIGHUP"))
    });
    assert!(daemon.terminate(LIMIT).is_some_and(|s| s.success()));
    let rotated = fs::read_to_string(base.join("spoolmon.log.1")).unwrap();
    let first = rotated.lines().next().unwrap();
    assert!(
        first.starts_with("20") && first.contains("Z  INFO"),
        "timestamped: {first}"
    );
    assert!(fs::read_to_string(&file).unwrap().contains("stopped"));
    assert_eq!(
        fs::read_to_string(base.join("daemon.log")).unwrap(),
        "",
        "nothing on stderr"
    );
}

/// Publishes one ping snapshot for order `p` at `time` (as a remote prober would).
fn publish_ping(base: &Base, time: i64) {
    use spoolmon::shared::measurement::{OrderId, OrderResult};
    use spoolmon::spool::snapshot::{encode_ping, SnapshotName, PING_FILE};
    let spool = spoolmon::spool::BaseDir::new(base.path());
    let result = OrderResult::builder(OrderId::new("p").unwrap(), time)
        .step(60)
        .rtts([Some(0.001), Some(0.002)])
        .build();
    let name = SnapshotName::new(time, "remote", 1);
    spoolmon::spool::queue::publish(&spool, &name, &[(PING_FILE, &encode_ping("remote", &[result]))]).unwrap();
}

#[test]
fn process_reloads_its_sinks_on_sighup_and_keeps_them_on_a_bad_config() {
    let base = Base::new();
    spoolmon::spool::BaseDir::new(base.path()).create_all().unwrap();
    let (first, second) = (base.join("store-a"), base.join("store-b"));
    base.write_config(&store_config(&[("a", &first)], ""));
    let process = base.spawn(&[], "process");
    // Recent: results older than result-max-age (7 days) are refused.
    let now = spoolmon::shared::clock::unix_now();
    let t0 = now - now % 60 - 600;
    let has = |dir: &Path, time: i64| medians(dir).contains_key(&("loadbalancers.vm.ping.p.median".to_string(), time));
    publish_ping(&base, t0);
    wait_for("first snapshot in a", LIMIT, Some(&process), || has(&first, t0));

    base.write_config("sinks: {a: {type: nosuch}}\n");
    signal(process.pid(), "HUP");
    wait_for("bad config refused", LIMIT, Some(&process), || {
        process.log_text().contains("keeping the running configuration")
    });
    publish_ping(&base, t0 + 60);
    wait_for("second snapshot still in a", LIMIT, Some(&process), || {
        has(&first, t0 + 60)
    });

    base.write_config(&store_config(&[("a", &first), ("b", &second)], ""));
    signal(process.pid(), "HUP");
    wait_for("good config applied", LIMIT, Some(&process), || {
        process.log_text().contains("configuration reloaded")
    });
    publish_ping(&base, t0 + 120);
    wait_for("third snapshot in a and b", LIMIT, Some(&process), || {
        has(&first, t0 + 120) && has(&second, t0 + 120)
    });
    assert!(!has(&second, t0), "b only gets what arrived after it was configured");
    assert!(medians(&first).values().all(|&n| n == 1), "nothing delivered twice");
    assert!(process.terminate(LIMIT).is_some_and(|s| s.success()));
}

#[test]
fn bad_service_arguments_are_clear_errors() {
    let base = Base::new();
    let run = |global: &[&str], config: &str| {
        base.write_config(config);
        let out = Command::new(BIN)
            .args(global)
            .args(["run", "--base-dir"])
            .arg(base.path())
            .arg("--config")
            .arg(base.join("spoolmon.yaml"))
            .output()
            .unwrap();
        (out.status.code(), String::from_utf8_lossy(&out.stderr).into_owned())
    };
    let link = base.join("linked.log");
    std::os::unix::fs::symlink(base.join("target.log"), &link).unwrap();
    let (code, stderr) = run(&["--log-file", link.to_str().unwrap()], FAST);
    assert_eq!(code, Some(2), "a log file that is a symbolic link is refused: {stderr}");
    assert!(!base.join("target.log").exists());
    let (code, stderr) = run(&["--log-file", "/nonexistent/dir/spoolmon.log"], FAST);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains("cannot open --log-file /nonexistent/dir/spoolmon.log"),
        "{stderr}"
    );
    let (code, stderr) = run(&[], "stop-timeout: 0\n");
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("stop-timeout: must be at least 1"), "{stderr}");
    let (code, stderr) = run(&[], "stop-timeout: -5\n");
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("stop-timeout"), "{stderr}");

    // `--user` when not root: as root, the command runs as nobody to be unprivileged.
    let mut unprivileged = Command::new(BIN);
    unprivileged
        .args(["run", "--user", "root", "--base-dir"])
        .arg(base.path());
    if nix::unistd::geteuid().is_root() {
        use std::os::unix::fs::PermissionsExt;
        use std::os::unix::process::CommandExt;
        fs::set_permissions(base.path(), fs::Permissions::from_mode(0o777)).unwrap();
        unprivileged.uid(65534).gid(65534);
    }
    let out = unprivileged.output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("--user root: switching users needs root"), "{stderr}");
}

#[test]
fn a_reloaded_config_that_cannot_start_falls_back_to_the_running_one() {
    let base = Base::new();
    base.write_order("f", &ping_order("127.0.0.31", 1, 1));
    let store = base.join("store");
    base.write_config(&store_config(&[("a", &store)], ""));
    let daemon = spawn_run(&base, &[], &[], &[]);
    wait_for("measuring", LIMIT, Some(&daemon), || !medians(&store).is_empty());
    // A valid config whose Graphite sink cannot open its outbox (a file where its directory goes).
    fs::create_dir_all(base.join("outbox")).unwrap();
    fs::write(base.join("outbox/carbon"), "not a directory").unwrap();
    let broken = format!(
        "{}  carbon: {{type: graphite, server: 127.0.0.1, port: 9}}\n",
        store_config(&[("a", &store)], "")
    );
    base.write_config(&broken);
    signal(daemon.pid(), "HUP");
    wait_for("fallback logged", LIMIT, Some(&daemon), || {
        daemon.log_text().contains("going back to the running one")
    });
    let before = medians(&store).len();
    wait_for("still measuring with the old sinks", LIMIT, Some(&daemon), || {
        medians(&store).len() >= before + 2
    });
    assert!(daemon.terminate(LIMIT).is_some_and(|s| s.success()));
}

/// Waits on `socket` for a message starting with each of `wanted`, in order.
fn expect_notifications(socket: &UnixDatagram, wanted: &[&str]) {
    let mut heard = Vec::new();
    for want in wanted {
        loop {
            let mut buf = [0u8; 1024];
            let n = socket
                .recv(&mut buf)
                .unwrap_or_else(|e| panic!("waiting for {want}: {e}; heard {heard:?}"));
            let message = String::from_utf8_lossy(&buf[..n]).into_owned();
            heard.push(message.clone());
            if message.starts_with(want) {
                break;
            }
        }
    }
}

#[test]
fn pull_and_process_notify_and_ping_the_watchdog_too() {
    for command in ["process", "pull"] {
        let base = Base::new();
        let sockets = base.join("haproxy-sockets");
        fs::create_dir_all(&sockets).unwrap();
        base.write_config(&format!(
            "pull:\n  socket-dir: '{}'\n  pull-interval: 30\n",
            sockets.display()
        ));
        let socket_path = base.join("notify.sock");
        let socket = UnixDatagram::bind(&socket_path).unwrap();
        socket.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
        let log = fs::File::create(base.join("daemon.log")).unwrap();
        let child = Command::new(BIN)
            .args([command, "--base-dir"])
            .arg(base.path())
            .arg("--config")
            .arg(base.join("spoolmon.yaml"))
            .env("NOTIFY_SOCKET", &socket_path)
            .env("WATCHDOG_USEC", "1000000")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        let daemon = Daemon::from_child(child, base.join("daemon.log"));
        // pull-interval 30: the pull loop is asleep, and pings the watchdog while it sleeps.
        expect_notifications(&socket, &["READY=1", "WATCHDOG=1", "WATCHDOG=1", "WATCHDOG=1"]);
        signal(daemon.pid(), "TERM");
        expect_notifications(&socket, &["STOPPING=1"]);
        assert!(daemon.wait_exit(LIMIT).is_some_and(|s| s.success()), "{command}");
    }
}
