//! HAProxy snapshots built in temporary directories: every kind of malformed input fails with
//! its own typed error naming the file, and the options (exclusions, groups, per-process
//! metrics, selections, mixed HAProxy versions) change the metrics as documented.

use spoolmon::process::haproxy::{aggregate, is_haproxy_snapshot, HaproxyOptions, HaproxySnapshotError};
use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

const TIME: i64 = 1_700_000_000;

const INFO: &str = "Name: HAProxy\nProcess_num: 1\nMaxconn: 100\nCurrConns: 5\nIdle_pct: 90\nUptime_sec: 10\n\n";

const STAT: &str = "# pxname,svname,scur,stot,bin,weight,act,rtime,type,status,\n\
www.example.com,FRONTEND,3,10,100,,,,0,OPEN,\n\
app,s1.local,1,4,40,1,1,10,2,UP,\n\
app,s2.local,2,6,60,1,1,30,2,UP,\n\
app,BACKEND,3,10,100,2,2,20,1,UP,\n\
api,s1.local,0,1,5,1,1,0,2,UP,\n\
api,BACKEND,0,1,5,1,1,0,1,UP,\n\n";

/// A snapshot directory `<parent>/<name>/` holding `files` (name → contents).
fn snapshot(parent: &Path, name: &str, files: &[(&str, &[u8])]) -> PathBuf {
    let dir = parent.join(name);
    fs::create_dir_all(&dir).unwrap();
    for (file, contents) in files {
        fs::write(dir.join(file), contents).unwrap();
    }
    dir
}

fn run(dir: &Path, options: &HaproxyOptions) -> BTreeMap<String, f64> {
    options.validate().unwrap();
    let metrics = aggregate(dir, TIME, options).unwrap().metrics;
    assert!(metrics.iter().all(|m| m.time == TIME));
    let count = metrics.len();
    let map: BTreeMap<String, f64> = metrics.into_iter().map(|m| (m.path, m.value)).collect();
    assert_eq!(map.len(), count, "a path was sent twice");
    map
}

fn two_processes(parent: &Path) -> PathBuf {
    snapshot(
        parent,
        &TIME.to_string(),
        &[
            ("a.sock_info", INFO.as_bytes()),
            ("a.sock_stat", STAT.as_bytes()),
            ("b.sock_info", INFO.as_bytes()),
            ("b.sock_stat", STAT.as_bytes()),
        ],
    )
}

fn error_for(files: &[(&str, &[u8])]) -> HaproxySnapshotError {
    let temp = tempfile::tempdir().unwrap();
    let dir = snapshot(temp.path(), "1700000000", files);
    aggregate(&dir, TIME, &HaproxyOptions::default()).unwrap_err()
}

fn stat_error(stat: &[u8]) -> HaproxySnapshotError {
    error_for(&[("p_info", INFO.as_bytes()), ("p_stat", stat)])
}

#[test]
fn sums_means_and_server_counts_across_processes() {
    let temp = tempfile::tempdir().unwrap();
    let metrics = run(&two_processes(temp.path()), &HaproxyOptions::default());
    assert_eq!(metrics["haproxy.frontend.www_example_com.stot"], 20.0);
    assert_eq!(metrics["haproxy.backend.app.scur"], 6.0);
    assert_eq!(metrics["haproxy.backend.app.rtime"], 20.0);
    assert_eq!(metrics["haproxy.backend.app.TotalServers"], 2.0);
    assert_eq!(metrics["haproxy.backend.app.server.s2_local.bin"], 120.0);
    assert_eq!(metrics["haproxy.backend.app.server.s2_local.rtime"], 30.0);
    assert_eq!(metrics["haproxy.daemon.Maxconn"], 200.0);
    assert_eq!(metrics["haproxy.haproxystats.MetricsFrontend"], 32.0);
    assert_eq!(metrics["haproxy.haproxystats.MetricsServer"], 3.0 * 32.0 + 2.0 + 1.0);
    assert!(!metrics
        .keys()
        .any(|k| k.starts_with("haproxy.server.") || k.contains(".process.")));
}

#[test]
fn extra_and_missing_columns_across_processes_are_tolerated() {
    let newer = "# pxname,svname,type,stot,future_metric,scur,\nwww,FRONTEND,0,7,99,1,\n\n";
    let older = "# pxname,svname,type,stot\nwww,FRONTEND,0,5\n\n";
    let temp = tempfile::tempdir().unwrap();
    let dir = snapshot(
        temp.path(),
        "1700000000",
        &[
            ("new_info", INFO.as_bytes()),
            ("new_stat", newer.as_bytes()),
            ("old_info", b"Maxconn: 50\n\n"),
            ("old_stat", older.as_bytes()),
        ],
    );
    let metrics = run(&dir, &HaproxyOptions::default());
    assert_eq!(metrics["haproxy.frontend.www.stot"], 12.0);
    assert_eq!(metrics["haproxy.frontend.www.scur"], 1.0);
    assert_eq!(metrics["haproxy.frontend.www.bin"], 0.0);
    assert!(!metrics.keys().any(|k| k.contains("future_metric")));
    assert_eq!(metrics["haproxy.daemon.Maxconn"], 150.0);
    // Only one process reports Idle_pct: its mean, and no percentiles across one value.
    assert_eq!(metrics["haproxy.daemon.Idle_pct"], 90.0);
    assert!(!metrics.keys().any(|k| k.contains("PercentileCpuUsagePct")));
}

#[test]
fn exclude_files_with_comments_drop_frontends_and_backends_with_their_servers() {
    let temp = tempfile::tempdir().unwrap();
    let dir = two_processes(temp.path());
    let frontends = temp.path().join("exclude-frontends");
    let backends = temp.path().join("exclude-backends");
    fs::write(
        &frontends,
        "# not graphed\nwww.example.com # dots as HAProxy spells them\n",
    )
    .unwrap();
    fs::write(&backends, "\n# legacy\napi\n").unwrap();
    let options = HaproxyOptions {
        exclude_frontends: Some(frontends),
        exclude_backends: Some(backends),
        aggr_server_metrics: true,
        ..HaproxyOptions::default()
    };
    let metrics = run(&dir, &options);
    assert!(!metrics
        .keys()
        .any(|k| k.contains("www_example_com") || k.contains(".api.")));
    assert_eq!(metrics["haproxy.backend.app.TotalServers"], 2.0);
    // s1.local remains only through app.
    assert_eq!(metrics["haproxy.server.s1_local.stot"], 8.0);
    assert_eq!(metrics["haproxy.haproxystats.MetricsFrontend"], 1.0);
}

#[test]
fn group_namespace_with_double_writes_sends_grouped_and_plain_paths() {
    let temp = tempfile::tempdir().unwrap();
    let dir = two_processes(temp.path());
    let yaml = "group-namespace: flavor\ngroup-namespace-double-writes: true\n\
                frontend-groups: {web: '_example_com$'}\nbackend-groups: {apps: '^ap', rest: '.'}\n\
                server-groups: {first: '^s1_'}\n";
    let options: HaproxyOptions = yaml_serde::from_str(yaml).unwrap();
    let metrics = run(&dir, &options);
    for path in [
        "haproxy.flavor.web.frontend.www_example_com.stot",
        "haproxy.frontend.www_example_com.stot",
        "haproxy.flavor.apps.backend.app.scur",
        "haproxy.flavor.apps.backend.api.TotalServers",
        "haproxy.backend.app.scur",
        "haproxy.flavor.first.backend.app.server.s1_local.bin",
        "haproxy.backend.app.server.s1_local.bin",
        "haproxy.backend.app.server.s2_local.bin",
    ] {
        assert!(metrics.contains_key(path), "{path} missing");
    }
    assert!(!metrics
        .keys()
        .any(|k| k.contains(".rest.") || k.contains("flavor.first.backend.app.server.s2")));
    assert_eq!(metrics["haproxy.haproxystats.MetricsFrontend"], 2.0 * 31.0 + 1.0);

    let single: HaproxyOptions = yaml_serde::from_str(&yaml.replace("writes: true", "writes: false")).unwrap();
    let grouped_only = run(&dir, &single);
    assert!(grouped_only.contains_key("haproxy.flavor.apps.backend.app.scur"));
    assert!(!grouped_only.contains_key("haproxy.backend.app.scur"));
    assert!(grouped_only.contains_key("haproxy.backend.app.server.s2_local.bin"));
}

#[test]
fn per_process_metrics_are_keyed_by_socket_name() {
    let temp = tempfile::tempdir().unwrap();
    let other = INFO
        .replace("Maxconn: 100", "Maxconn: 300")
        .replace("Idle_pct: 90", "Idle_pct: 50");
    let dir = snapshot(
        temp.path(),
        "1700000000-pull-000000001",
        &[
            ("lb1.sock_info", INFO.as_bytes()),
            ("lb1.sock_stat", STAT.as_bytes()),
            ("10.0.0.2:9000_info", other.as_bytes()),
            ("10.0.0.2:9000_stat", STAT.as_bytes()),
        ],
    );
    let options = HaproxyOptions {
        per_process_metrics: true,
        calculate_percentages: true,
        ..HaproxyOptions::default()
    };
    let metrics = run(&dir, &options);
    assert_eq!(metrics["haproxy.daemon.process.lb1_sock.Maxconn"], 100.0);
    assert_eq!(metrics["haproxy.daemon.process.10_0_0_2:9000.Maxconn"], 300.0);
    assert_eq!(metrics["haproxy.daemon.process.10_0_0_2:9000.CpuUsagePct"], 50.0);
    assert_eq!(metrics["haproxy.daemon.process.lb1_sock.ConnPercentage"], 5.0);
    assert_eq!(metrics["haproxy.daemon.ConnPercentage"], 2.0);
    assert!(!metrics.keys().any(|k| k.contains(".process.1.")));
}

#[test]
fn selections_send_exactly_the_named_metrics() {
    let temp = tempfile::tempdir().unwrap();
    let options: HaproxyOptions =
        yaml_serde::from_str("frontend-metrics: stot\nbackend-metrics: act scur\nserver-metrics: [rtime]\n").unwrap();
    let metrics = run(&two_processes(temp.path()), &options);
    let frontend: Vec<_> = metrics.keys().filter(|k| k.starts_with("haproxy.frontend.")).collect();
    assert_eq!(frontend, ["haproxy.frontend.www_example_com.stot"]);
    let app: Vec<_> = metrics
        .keys()
        .filter(|k| k.starts_with("haproxy.backend.app.") && !k.contains(".server."))
        .collect();
    assert_eq!(
        app,
        [
            "haproxy.backend.app.TotalServers",
            "haproxy.backend.app.act",
            "haproxy.backend.app.scur"
        ]
    );
    assert_eq!(metrics["haproxy.backend.app.act"], 2.0);
    assert!(metrics.contains_key("haproxy.backend.app.server.s1_local.rtime"));
    assert!(!metrics.contains_key("haproxy.backend.app.server.s1_local.bin"));
}

#[test]
fn only_directories_with_info_or_stat_files_are_haproxy_snapshots() {
    let temp = tempfile::tempdir().unwrap();
    let ping = snapshot(temp.path(), "1700000000-ping-000000001", &[("ping.jsonl", b"{}\n")]);
    assert!(!is_haproxy_snapshot(&ping));
    assert!(is_haproxy_snapshot(&two_processes(temp.path())));
}

#[test]
fn a_directory_name_that_is_not_a_time_is_refused() {
    let temp = tempfile::tempdir().unwrap();
    let dir = snapshot(
        temp.path(),
        "latest",
        &[("p_info", INFO.as_bytes()), ("p_stat", STAT.as_bytes())],
    );
    let err = aggregate(&dir, TIME, &HaproxyOptions::default()).unwrap_err();
    assert!(matches!(err, HaproxySnapshotError::NameNotATime(_)), "{err}");
}

#[test]
fn a_snapshot_without_pairs_or_with_a_missing_half_is_refused() {
    assert!(matches!(
        error_for(&[("notes", b"x")]),
        HaproxySnapshotError::NoProcesses
    ));
    let err = error_for(&[
        ("p_info", INFO.as_bytes()),
        ("p_stat", STAT.as_bytes()),
        ("q_info", INFO.as_bytes()),
    ]);
    assert!(
        matches!(err, HaproxySnapshotError::MissingHalf { ref missing, .. } if missing == "q_stat"),
        "{err}"
    );
}

#[test]
fn empty_and_binary_files_are_refused() {
    let err = stat_error(b"");
    assert!(
        matches!(err, HaproxySnapshotError::Empty { ref file } if file == "p_stat"),
        "{err}"
    );
    let err = error_for(&[("p_info", b"\x7fELF\x02\x01\x01\x00\x00"), ("p_stat", STAT.as_bytes())]);
    assert!(
        matches!(err, HaproxySnapshotError::Binary { ref file, .. } if file == "p_info"),
        "{err}"
    );
    let err = stat_error(b"# pxname,svname\n\xff\xfe\xfd\n\n");
    assert!(matches!(err, HaproxySnapshotError::Binary { .. }), "{err}");
}

#[test]
fn garbage_is_refused_with_the_reason() {
    let err = stat_error(b"Unknown command. Please enter one of the following commands only :\n\n");
    assert!(matches!(err, HaproxySnapshotError::Garbage { .. }), "{err}");
    assert!(err.to_string().starts_with("p_stat: does not start with"), "{err}");
    let err = error_for(&[
        ("p_info", b"<html>gateway timeout</html>\n\n"),
        ("p_stat", STAT.as_bytes()),
    ]);
    assert!(
        matches!(err, HaproxySnapshotError::Garbage { ref file, .. } if file == "p_info"),
        "{err}"
    );
}

#[test]
fn header_only_truncated_and_mismatched_tables_are_refused() {
    let err = stat_error(b"# pxname,svname,type,scur,\n\n");
    assert!(matches!(err, HaproxySnapshotError::HeaderOnly { .. }), "{err}");
    let cut = &STAT.as_bytes()[..STAT.len() / 2];
    assert!(matches!(stat_error(cut), HaproxySnapshotError::Truncated { .. }));
    let at_line_end = &STAT.as_bytes()[..STAT.len() - 1];
    assert!(matches!(
        stat_error(at_line_end),
        HaproxySnapshotError::Truncated { .. }
    ));
    let info_cut = &INFO.as_bytes()[..INFO.len() - 8];
    let err = error_for(&[("p_info", info_cut), ("p_stat", STAT.as_bytes())]);
    assert!(
        matches!(err, HaproxySnapshotError::Truncated { ref file } if file == "p_info"),
        "{err}"
    );
    let err = stat_error(STAT.replace("app,BACKEND,3,", "app,BACKEND,").as_bytes());
    assert_eq!(err.to_string(), "p_stat line 5: 10 fields where the header has 11");
}

#[test]
fn non_numeric_cells_in_aggregated_columns_are_refused_and_text_columns_ignored() {
    let err = stat_error(STAT.replace("app,s2.local,2,", "app,s2.local,two,").as_bytes());
    assert_eq!(err.to_string(), "p_stat line 4: scur is \"two\", not a number");
    let text_status = STAT.replace("UP,", "DOWN (agent),");
    let temp = tempfile::tempdir().unwrap();
    let dir = snapshot(
        temp.path(),
        "1700000000",
        &[("p_info", INFO.as_bytes()), ("p_stat", text_status.as_bytes())],
    );
    assert!(aggregate(&dir, TIME, &HaproxyOptions::default()).is_ok());
    let err = error_for(&[("p_info", b"Maxconn: 4k\n\n"), ("p_stat", STAT.as_bytes())]);
    assert!(
        matches!(err, HaproxySnapshotError::NotANumber { ref field, .. } if field == "Maxconn"),
        "{err}"
    );
}
