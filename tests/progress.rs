//! The progress lines against real processes: `spoolmon run` with loopback fping orders, a real
//! carbon sink and a pull without sources logs one line per part every `progress-interval`
//! with the counts those parts did; `spoolmon pull` against a real HAProxy logs its cycles in
//! the periodic line and no longer one info line per cycle; a bad `progress-interval` is
//! refused naming the key.

mod common;

use common::servers::{Carbon, Haproxy, HaproxySetup};
use common::*;
use std::process::Command;
use std::time::Duration;

const LIMIT: Duration = Duration::from_secs(60);

/// The numbers of the progress lines of `part` (`probes`, `pull`, `sink carbon`, ...) in `log`,
/// in order: each line's counts as they appear, the trailing "in the last N s" left out.
fn progress(log: &str, part: &str) -> Vec<Vec<u64>> {
    let marker = format!("spoolmon::progress: {part}: ");
    log.lines()
        .filter_map(|line| line.split_once(&marker).map(|(_, rest)| rest))
        .map(|rest| {
            let counts = rest.split(" in the last ").next().unwrap();
            counts
                .split(", ")
                .map(|field| {
                    field
                        .split(' ')
                        .next()
                        .unwrap()
                        .parse()
                        .unwrap_or_else(|e| panic!("{field:?} in {rest:?}: {e}"))
                })
                .collect()
        })
        .collect()
}

fn metric(base: &Base, file: &str, name: &str) -> Option<f64> {
    let text = base.read(&format!("state/{file}"))?;
    text.lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
}

#[test]
fn run_logs_one_progress_line_per_part_with_what_it_did() {
    let carbon = Carbon::start();
    let base = Base::new();
    base.write_order("lo/one", &ping_order("127.0.0.1", 1, 3));
    base.write_order("lo/two", &ping_order("127.0.0.2", 1, 3));
    let daemon = base.start(&format!(
        "rescan-interval: 1\nself-metrics: {{interval: 1, progress-interval: 1}}\n\
         pull: {{socket-dir: '{}', pull-interval: 1}}\nsinks:\n  \
         carbon: {{type: graphite, server: 127.0.0.1, port: {}, namespace: t, prefix-hostname: false}}\n",
        base.join("no-sockets").display(),
        carbon.line_port
    ));
    wait_for(
        "progress lines with orders measured and lines delivered",
        LIMIT,
        Some(&daemon),
        || {
            let log = daemon.log_text();
            progress(&log, "probes").iter().filter(|c| c[0] > 0).count() >= 2
                && progress(&log, "sink carbon").iter().any(|c| c[0] > 0)
                && progress(&log, "pull").iter().any(|c| c[0] > 0)
        },
    );
    let log = daemon.log_text();
    // A line reads the counters one by one while the parts count on, so a run (or a cycle) can
    // be split between two lines: what holds per line is checked per line, the rest on sums.
    let probes = progress(&log, "probes");
    for counts in &probes {
        let [measured, _, lost, suspended] = counts[..] else {
            panic!("probes line {counts:?}")
        };
        // Both orders are one batch: each run measures both (one count), none lost.
        assert_eq!(measured % 2, 0, "{log}");
        assert_eq!((lost, suspended), (0, 0), "{log}");
    }
    let measured: u64 = probes.iter().map(|c| c[0]).sum();
    let sent: u64 = probes.iter().map(|c| c[1]).sum();
    // 3 pings per order; the pings of the last run may come in the next line.
    assert!(
        sent <= 3 * measured && sent + 6 >= 3 * measured,
        "{sent} pings for {measured}: {log}"
    );
    assert!(measured >= 4, "{log}");
    wait_for("the orders of the lines in metrics.prom", LIMIT, Some(&daemon), || {
        metric(&base, "metrics.prom", "spoolmon_probe_orders_measured_total").is_some_and(|t| t >= measured as f64)
    });

    let processing = progress(&log, "processing");
    assert!(!processing.is_empty(), "{log}");
    assert!(
        processing.iter().all(|c| c.len() == 3 && c[2] == 0),
        "none quarantined: {log}"
    );
    assert!(processing.iter().map(|c| c[1]).sum::<u64>() > 0, "{log}");

    // No sources to pull from: every cycle fails, and the lines say so.
    let pull = progress(&log, "pull");
    assert!(pull.iter().all(|c| c.len() == 3 && c[1] == 0), "{log}");
    let (cycles, failed) = (
        pull.iter().map(|c| c[0]).sum::<u64>(),
        pull.iter().map(|c| c[2]).sum::<u64>(),
    );
    assert!(failed <= cycles && failed + 1 >= cycles && cycles > 0, "{log}");
    for counts in progress(&log, "sink carbon") {
        assert_eq!(counts[1..3], [0, 0], "nothing rejected or dropped: {log}");
    }
    assert!(daemon.terminate(LIMIT).is_some_and(|s| s.success()));
}

#[test]
fn pull_logs_its_cycles_in_the_progress_line_not_one_info_line_each() {
    let haproxy = Haproxy::start(&HaproxySetup::default());
    let base = Base::new();
    base.write_config(&format!(
        "self-metrics: {{interval: 1, progress-interval: 2}}\n\
         pull: {{socket-dir: '{}', pull-interval: 1, pull-timeout: 0.9}}\n",
        haproxy.socket_dir.display()
    ));
    // At the default level (info): what an operator's journal gets.
    let pull = base.spawn(&[], "pull");
    wait_for("a progress line with 2 cycles published", LIMIT, Some(&pull), || {
        progress(&pull.log_text(), "pull").iter().any(|c| c[1] >= 2)
    });
    let log = pull.log_text();
    for counts in progress(&log, "pull") {
        assert_eq!(counts[2], 0, "no failed cycles: {log}");
    }
    assert!(!log.contains("HAProxy statistics published"), "{log}");
    for part in ["probes", "processing", "sink"] {
        assert!(!log.contains(&format!("spoolmon::progress: {part}")), "{part}: {log}");
    }
    assert!(pull.terminate(LIMIT).is_some_and(|s| s.success()));
}

#[test]
fn a_bad_progress_interval_is_refused_naming_the_key() {
    let base = Base::new();
    for bad in ["oops", "-1", "1.5", "99999999999999999999999"] {
        let config = base.write_config(&format!("self-metrics: {{progress-interval: {bad}}}\n"));
        let out = Command::new(BIN)
            .args(["config", "--print", "--config"])
            .arg(&config)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{bad}: {stderr}");
        assert!(stderr.contains("progress-interval"), "{bad}: {stderr}");
    }
    // Off, and the largest value, are taken.
    for good in ["0", "18446744073709551615"] {
        let config = base.write_config(&format!("self-metrics: {{progress-interval: {good}}}\n"));
        let out = Command::new(BIN)
            .args(["config", "--print", "--config"])
            .arg(&config)
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{good}: {}", String::from_utf8_lossy(&out.stderr));
        assert!(stdout.contains(&format!("progress-interval: {good}")), "{stdout}");
    }
}
