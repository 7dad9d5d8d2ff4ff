//! httping, tcp and exec orders measured end to end by `spoolmon run` against real servers on
//! loopback (python3's http.server) and a real command; orders a probe cannot measure (a missing
//! or non-executable command, a URL that does not resolve, fping that cannot run) shown as
//! failing everywhere, unknown in the RRD, until they are fixed; and a host that does not
//! resolve with either ICMP engine.

mod common;

use common::*;
use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

const LIMIT: Duration = Duration::from_secs(60);

struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn http_server(dir: &std::path::Path) -> (Server, u16) {
    let port = free_port();
    let child = Command::new("python3")
        .args(["-m", "http.server", "--bind", "127.0.0.1", &port.to_string()])
        .current_dir(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("python3 http.server");
    let server = Server(child);
    wait_for("http.server listening", Duration::from_secs(30), None, || {
        std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
    });
    (server, port)
}

#[test]
fn httping_tcp_and_exec_orders_are_measured() {
    let base = Base::new();
    let (_server, port) = http_server(base.path());
    let closed = free_port();
    let http = format!("user: t\nstep: 2\npings: 2\nprobe: httping\nhttping:\n    url: http://127.0.0.1:{port}/\n");
    let http_fail =
        format!("user: t\nstep: 2\npings: 2\nprobe: httping\nhttping:\n    url: http://127.0.0.1:{port}/missing\n    http_codes_as_failure: 404\n");
    let tcp = format!("user: t\nstep: 2\npings: 2\nprobe: tcp\ntcp:\n    host: 127.0.0.1\n    port: {port}\n");
    let tcp_closed = format!("user: t\nstep: 2\npings: 2\nprobe: tcp\ntcp:\n    host: 127.0.0.1\n    port: {closed}\n");
    let exec = "user: t\nstep: 2\npings: 3\nprobe: exec\nexec:\n    command: [\"/bin/sh\", \"-c\", \"echo 'seq=1 time=1.5 ms'; echo 'seq=3 time=2.5 ms'\"]\n";
    base.write_order("http/ok", &http);
    base.write_order("http/404", &http_fail);
    base.write_order("tcp/open", &tcp);
    base.write_order("tcp/closed", &tcp_closed);
    base.write_order("exec/sh", exec);
    let daemon = base.start(FAST);
    let expect = [
        ("http/ok", "0"),
        ("http/404", "2"),
        ("tcp/open", "0"),
        ("tcp/closed", "2"),
        ("exec/sh", "1"),
    ];
    for (id, loss) in expect {
        let rel = format!("output/{id}/last_result");
        wait_for(
            &format!("{id} loss {loss}"),
            Duration::from_secs(60),
            Some(&daemon),
            || base.read(&rel).is_some_and(|t| field(&t, "loss") == loss),
        );
    }
    let exec_result = base.read("output/exec/sh/last_result").unwrap();
    assert_eq!(field(&exec_result, "min"), "1.500000e-03", "{exec_result}");
    assert_eq!(field(&exec_result, "max"), "2.500000e-03", "{exec_result}");
    assert_eq!(
        field(&base.read("output/tcp/closed/last_result").unwrap(), "median"),
        "~"
    );
}

/// `spoolmon <args> --base-dir <base>`: exit code and stdout.
fn spoolmon(base: &Base, args: &[&str]) -> (i32, String) {
    let out = Command::new(BIN)
        .args(args)
        .arg("--base-dir")
        .arg(base.path())
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

fn json(base: &Base, args: &[&str]) -> serde_json::Value {
    let (code, out) = spoolmon(base, args);
    assert_eq!(code, 0, "spoolmon {args:?}: {out}");
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("spoolmon {args:?}: {e}: {out}"))
}

/// The `spoolmon orders --json` entry of `id`.
fn listed(base: &Base, id: &str) -> serde_json::Value {
    let listing = json(base, &["orders", "--json"]);
    let found = listing.as_array().unwrap().iter().find(|e| e["id"] == id).cloned();
    found.unwrap_or_else(|| panic!("{id} not listed: {listing}"))
}

/// A sample of `state/metrics.prom`.
fn metric(base: &Base, name: &str) -> Option<f64> {
    let text = base.read("state/metrics.prom")?;
    text.lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
}

/// `rrdtool lastupdate` of an order's RRD: the time and the values.
fn last_update(base: &Base, id: &str) -> Option<(i64, Vec<String>)> {
    let rrd = base.join(&format!("output/{id}/main.rrd"));
    if !rrd.exists() {
        return None;
    }
    let text = rrdtool(&["lastupdate", rrd.to_str().unwrap()]);
    let (time, values) = text.lines().last()?.split_once(": ")?;
    Some((
        time.parse().ok()?,
        values.split_whitespace().map(String::from).collect(),
    ))
}

/// The number of log lines of the daemon that contain every one of `parts`.
fn log_lines(daemon: &Daemon, parts: &[&str]) -> usize {
    daemon
        .log_text()
        .lines()
        .filter(|line| parts.iter().all(|part| line.contains(part)))
        .count()
}

fn exec_order(command: &str) -> String {
    format!("user: t\nstep: 2\npings: 3\nprobe: exec\nexec:\n    command: [\"{command}\", \"{{host}}\"]\n    host: 127.0.0.1\n")
}

/// A ping-like script: three answers, iputils' format.
const PING_LIKE: &str = "#!/bin/sh\necho 'PING 127.0.0.1 (127.0.0.1) 56(84) bytes of data.'\n\
    echo '64 bytes from 127.0.0.1: icmp_seq=1 ttl=64 time=0.5 ms'\n\
    echo '64 bytes from 127.0.0.1: icmp_seq=2 ttl=64 time=0.6 ms'\n\
    echo '64 bytes from 127.0.0.1: icmp_seq=3 ttl=64 time=0.7 ms'\n";

#[test]
fn an_order_its_probe_cannot_run_is_failing_with_the_reason_and_unknown_until_it_can() {
    use std::os::unix::fs::PermissionsExt;
    let base = Base::new();
    let missing = "/usr/lib/spoolmon-test/no-such-ping";
    let script = base.join("ping-like");
    std::fs::write(&script, PING_LIKE).unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o644)).unwrap();
    let script = script.to_str().unwrap().to_string();
    base.write_order("exec/missing", &exec_order(missing));
    base.write_order("exec/noexec", &exec_order(&script));
    base.write_order(
        "http/unresolvable",
        "user: t\nstep: 2\npings: 2\nprobe: httping\nhttping:\n    url: http://spoolmon-test.invalid/\n",
    );
    base.write_order("icmp/ok", &ping_order("127.0.0.1", 2, 2));
    let config = format!("{FAST}self-metrics: {{interval: 1}}\n");
    let daemon = base.start(&config);
    let failing = ["exec/missing", "exec/noexec", "http/unresolvable"];
    let reasons = [
        "probe cannot measure (since ".to_string(),
        format!("cannot run {missing}: No such file or directory (os error 2)"),
        format!("cannot run {script}: Permission denied (os error 13)"),
        "GET http://spoolmon-test.invalid/: io: failed to lookup address information".to_string(),
    ];
    wait_for("three orders failing in spoolmon orders", LIMIT, Some(&daemon), || {
        failing.iter().all(|id| listed(&base, id)["state"] == "failing")
    });
    for (id, reason) in failing.iter().zip(&reasons[1..]) {
        let entry = listed(&base, id);
        assert_eq!(entry["failure"], "probe", "{entry}");
        let text = entry["reason"].as_str().unwrap();
        assert!(
            text.starts_with(&reasons[0]) && text.contains(reason.as_str()),
            "{id}: {entry}"
        );
    }
    assert_eq!(listed(&base, "icmp/ok")["state"], "active");
    let (code, table) = spoolmon(&base, &["orders"]);
    assert_eq!(code, 0);
    let row = table.lines().find(|l| l.starts_with("exec/missing ")).expect("listed");
    assert!(row.contains("failing") && row.contains(&reasons[1]), "{table}");
    let wide = json(&base, &["orders", "--wide", "--json"]);
    let entry = wide
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["id"] == "exec/missing")
        .unwrap();
    assert_eq!(
        (&entry["failure"], &entry["last_result"]),
        (&"probe".into(), &serde_json::Value::Null),
        "{entry}"
    );

    // Measured steps go by: the failing orders get all-unknown RRD updates, never a loss, and no
    // last_result; the working order is measured beside them.
    wait_for(
        "unknown RRD updates and a measured neighbour",
        LIMIT,
        Some(&daemon),
        || {
            base.result_time("icmp/ok").is_some()
                && failing
                    .iter()
                    .all(|id| last_update(&base, id).is_some_and(|(time, _)| time > 0))
        },
    );
    let first = last_update(&base, "exec/missing").unwrap().0;
    wait_for("three more steps of exec/missing", LIMIT, Some(&daemon), || {
        last_update(&base, "exec/missing").is_some_and(|(time, _)| time >= first + 6)
    });
    for id in failing {
        let (time, values) = last_update(&base, id).unwrap();
        assert!(values.iter().all(|v| v == "U"), "{id} at {time}: {values:?}");
        assert!(
            base.read(&format!("output/{id}/last_result")).is_none(),
            "{id}: no invented last_result"
        );
    }
    let rrd = base.join("output/exec/missing/main.rrd");
    let fetched = rrdtool(&[
        "fetch",
        rrd.to_str().unwrap(),
        "AVERAGE",
        "-r",
        "2",
        "-s",
        &(first - 2).to_string(),
        "-e",
        &(first + 6).to_string(),
    ]);
    let rows: Vec<&str> = fetched.lines().filter(|l| l.contains(": ")).collect();
    assert!(rows.len() >= 4, "{fetched}");
    assert!(
        rows.iter()
            .all(|row| row.split_whitespace().skip(1).all(|v| v == "-nan" || v == "nan")),
        "{fetched}"
    );
    // Entering the state is logged once per order, not every step.
    assert_eq!(
        log_lines(&daemon, &["probe cannot measure the order", "exec/missing"]),
        1
    );
    assert_eq!(
        log_lines(&daemon, &["probe cannot measure the order", "http/unresolvable"]),
        1
    );

    // Status, metrics and the check agree.
    let report = json(&base, &["status", "--json"]);
    assert_eq!(report["orders"]["failing"], 3, "{report}");
    assert_eq!(report["orders"]["probe_failing"], 3, "{report}");
    let problem = report["orders"]["problems"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["id"] == "exec/missing")
        .cloned()
        .expect("listed as a problem");
    assert_eq!(problem["failure"], "probe");
    assert!(problem["reason"].as_str().unwrap().contains(&reasons[1]), "{problem}");
    let (code, text) = spoolmon(&base, &["status"]);
    assert_eq!(code, 0);
    assert!(text.contains("1 active, 3 failing, 0 invalid, 0 unresolved"), "{text}");
    assert!(
        text.contains("order exec/missing (failing): probe cannot measure (since "),
        "{text}"
    );
    wait_for("the probe failing gauge in metrics.prom", LIMIT, Some(&daemon), || {
        metric(&base, "spoolmon_order_probe_failing") == Some(3.0)
            && metric(&base, "spoolmon_probe_orders_unmeasured_total").is_some_and(|n| n >= 9.0)
    });
    assert_eq!(metric(&base, "spoolmon_order_output_failing"), Some(0.0));
    let (code, line) = spoolmon(&base, &["check", "orders"]);
    assert_eq!(code, 2, "{line}");
    assert!(
        line.starts_with("SPOOLMON ORDERS CRITICAL - 4 active, 0 invalid, 3 failing (first: exec/missing: probe cannot measure (since "),
        "{line}"
    );
    assert!(
        line.contains(&reasons[1]) && line.contains("| active=4 invalid=0;0;;0 failing=3 "),
        "{line}"
    );

    // Fixed: the script made executable, the missing command replaced by it.
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    base.write_order("exec/missing", &exec_order(&script));
    for id in ["exec/missing", "exec/noexec"] {
        let rel = format!("output/{id}/last_result");
        wait_for(&format!("{id} measured"), LIMIT, Some(&daemon), || {
            base.read(&rel).is_some_and(|t| field(&t, "loss") == "0")
        });
        assert_eq!(field(&base.read(&rel).unwrap(), "median"), "6.000000e-04");
        wait_for(&format!("{id} active again"), LIMIT, Some(&daemon), || {
            listed(&base, id)["state"] == "active"
        });
        assert!(listed(&base, id).get("failure").is_none());
        let (_, values) = last_update(&base, id).unwrap();
        assert_eq!(
            values,
            ["0", "0.0006", "0.0005", "0.0006", "0.0007"].map(String::from).to_vec(),
            "{id}"
        );
        assert_eq!(log_lines(&daemon, &["probe measures the order again", id]), 1, "{id}");
    }
    wait_for("one order left failing", LIMIT, Some(&daemon), || {
        metric(&base, "spoolmon_order_probe_failing") == Some(1.0)
    });
    assert_eq!(json(&base, &["status", "--json"])["orders"]["probe_failing"], 1);
    let (code, line) = spoolmon(&base, &["check", "orders"]);
    assert_eq!(code, 2, "the unresolvable URL still fails: {line}");
    assert!(line.contains("1 failing (first: http/unresolvable: "), "{line}");
    std::fs::remove_file(base.join("orders/http/unresolvable")).unwrap();
    wait_for("no order failing", LIMIT, Some(&daemon), || {
        metric(&base, "spoolmon_order_probe_failing") == Some(0.0) && spoolmon(&base, &["check", "orders"]).0 == 0
    });
}

#[test]
fn a_host_that_does_not_resolve_leaves_its_order_unresolved_and_unmeasured_with_both_engines() {
    for engine in ["fping", "native"] {
        let base = Base::new();
        base.write_order("icmp/unresolvable", &ping_order("spoolmon-test.invalid", 2, 2));
        base.write_order("icmp/ok", &ping_order("127.0.0.1", 2, 2));
        let daemon = base.start(&format!("{FAST}engine: {engine}\nfping-path: /usr/bin/fping\n"));
        wait_for(&format!("{engine}: a measured neighbour"), LIMIT, Some(&daemon), || {
            base.result_time("icmp/ok").is_some()
        });
        let first = base.result_time("icmp/ok").unwrap();
        wait_for(&format!("{engine}: two more steps"), LIMIT, Some(&daemon), || {
            base.result_time("icmp/ok").is_some_and(|time| time >= first + 4)
        });
        let entry = listed(&base, "icmp/unresolvable");
        assert_eq!(entry["state"], "unresolved", "{engine}: {entry}");
        assert!(
            entry["reason"]
                .as_str()
                .unwrap()
                .contains("host \"spoolmon-test.invalid\" does not resolve"),
            "{engine}: {entry}"
        );
        assert!(
            !base.join("output/icmp/unresolvable").exists(),
            "{engine}: never probed, nothing invented"
        );
        let report = json(&base, &["status", "--json"]);
        assert_eq!(report["orders"]["unresolved"], 1, "{engine}: {report}");
        let (code, line) = spoolmon(&base, &["check", "orders"]);
        assert_eq!(code, 1, "{engine}: {line}");
        assert!(
            line.contains("1 invalid (first: icmp/unresolvable: "),
            "{engine}: {line}"
        );
        drop(daemon);
    }
}

#[test]
fn fping_that_cannot_run_fails_its_orders_with_the_reason() {
    let base = Base::new();
    base.write_order("icmp/a", &ping_order("127.0.0.1", 2, 2));
    base.write_order("icmp/b", &ping_order("::1", 2, 2));
    let daemon = base.start(&format!(
        "{FAST}engine: fping\nfping-path: /usr/lib/spoolmon-test/fping\n"
    ));
    for id in ["icmp/a", "icmp/b"] {
        wait_for(&format!("{id} failing"), LIMIT, Some(&daemon), || {
            listed(&base, id)["state"] == "failing"
        });
        let reason = listed(&base, id)["reason"].as_str().unwrap().to_string();
        assert!(
            reason.ends_with("cannot run /usr/lib/spoolmon-test/fping: No such file or directory (os error 2)"),
            "{reason}"
        );
        wait_for(&format!("{id}: unknown in the RRD"), LIMIT, Some(&daemon), || {
            last_update(&base, id).is_some_and(|(_, values)| values.iter().all(|v| v == "U"))
        });
        assert!(base.read(&format!("output/{id}/last_result")).is_none());
    }
}
