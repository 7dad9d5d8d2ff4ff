//! The Graphite render API against the real graphite-web 1.1.8 (Debian's `graphite-web` with
//! `python3-rrdtool`, its RRD reader) on the same RRD files made by the real `rrdtool`: the
//! same queries to both, the same JSON (names, tags, timestamps, every value, nulls) for plain
//! series, globs, `{a,b}`, names with dots, the aggregates across different steps, `alias`,
//! `aliasByNode`, `constantLine`, `maxDataPoints`, `noNullPoints`, and the same `/metrics/find`
//! and `/metrics/expand`. Then what graphite-web cannot be compared on (`min`/`max` leaves,
//! POST forms as Grafana sends them, `/functions`) and hostile input: bad expressions, bad
//! times, traversal in names, huge patterns, unknown functions and parameters — a 4xx each,
//! the server answering on.

mod common;

use common::servers::free_tcp_port;
use common::*;
use serde_json::Value;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

const LIMIT: Duration = Duration::from_secs(60);
/// The files' first timestamp (a fixed past time: both servers get absolute windows).
const T: i64 = 1_796_600_000;

/// `curl` GET or POST (no URL globbing: `{a,b}` is Graphite's): (status, body).
fn curl(args: &[&str]) -> (u16, String) {
    let out = Command::new("curl")
        .args(["-sS", "-g", "--max-time", "30", "-w", "\n%{http_code}"])
        .args(args)
        .output()
        .expect("curl runs");
    let text = String::from_utf8(out.stdout).unwrap();
    let (body, code) = text.rsplit_once('\n').unwrap();
    (code.parse().unwrap(), body.to_owned())
}

fn get_json(url: &str) -> Value {
    let (status, body) = curl(&[url]);
    assert_eq!(status, 200, "{url}: {body}");
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("{url}: {e}: {body}"))
}

/// A SmokePing-shaped RRD (loss, median, ping1..3) of `rows` steps of `step` s from `T`, with
/// unknown steps where `gap(i)`, as spoolmon and rrdtool make them.
fn smokeping_rrd(base: &Base, id: &str, step: i64, rows: i64, scale: f64, gap: impl Fn(i64) -> bool) {
    let path = base.join(&format!("output/{id}/main.rrd"));
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let file = path.to_str().unwrap();
    let heartbeat = format!("{}", step * 2);
    rrdtool(&[
        "create",
        file,
        "--start",
        &(T - step).to_string(),
        "--step",
        &step.to_string(),
        &format!("DS:loss:GAUGE:{heartbeat}:0:3"),
        &format!("DS:median:GAUGE:{heartbeat}:0:180"),
        &format!("DS:ping1:GAUGE:{heartbeat}:0:180"),
        &format!("DS:ping2:GAUGE:{heartbeat}:0:180"),
        &format!("DS:ping3:GAUGE:{heartbeat}:0:180"),
        "RRA:AVERAGE:0.5:1:400",
        "RRA:AVERAGE:0.5:15:100",
        "RRA:MIN:0.5:15:100",
        "RRA:MAX:0.5:15:100",
    ]);
    let updates: Vec<String> = (0..rows)
        .map(|i| {
            let t = T + i * step;
            if gap(i) {
                format!("{t}:U:U:U:U:U")
            } else {
                let lost = i % 4 == 3;
                let p = |k: f64| format!("{:e}", scale * (1.0 + (i % 9) as f64 + k) / 1000.0);
                let third = if lost { "U".to_string() } else { p(2.5) };
                format!("{t}:{}:{}:{}:{}:{third}", u8::from(lost), p(1.0), p(0.0), p(1.0))
            }
        })
        .collect();
    for chunk in updates.chunks(100) {
        let mut args = vec!["update", file];
        args.extend(chunk.iter().map(String::as_str));
        rrdtool(&args);
    }
}

struct GraphiteWeb(Child);

impl Drop for GraphiteWeb {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// graphite-web on `dir`, reading RRD_DIR `dir/rrd` (links to spoolmon's files, as its finder
/// follows them), on a free port; its base URL once it answers.
fn start_graphite_web(dir: &Path) -> (GraphiteWeb, String) {
    let d = dir.display();
    std::fs::create_dir_all(dir.join("storage/log")).unwrap();
    std::fs::write(
        dir.join("spoolmon_graphite_settings.py"),
        format!(
            "SECRET_KEY = 'spoolmon-test'\nTIME_ZONE = 'UTC'\nSTORAGE_DIR = '{d}/storage'\nRRD_DIR = '{d}/rrd'\n\
             STANDARD_DIRS = ['{d}/rrd']\nLOG_DIR = '{d}/storage/log'\nINDEX_FILE = '{d}/storage/index'\n\
             DATABASES = {{'default': {{'NAME': '{d}/storage/graphite.db', 'ENGINE': 'django.db.backends.sqlite3'}}}}\n"
        ),
    )
    .unwrap();
    let python = |args: &[&str]| {
        let mut command = Command::new("/usr/bin/python3");
        command
            .args(["-m", "django"])
            .args(args)
            .env("PYTHONPATH", dir)
            .env("GRAPHITE_SETTINGS_MODULE", "spoolmon_graphite_settings")
            .env("DJANGO_SETTINGS_MODULE", "graphite.settings");
        command
    };
    let migrated = python(&["migrate", "-v0"])
        .output()
        .expect("graphite-web (make test-deps installs it)");
    assert!(
        migrated.status.success(),
        "{}",
        String::from_utf8_lossy(&migrated.stderr)
    );
    let port = free_tcp_port();
    let child = python(&["runserver", "--noreload", &format!("127.0.0.1:{port}")])
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join("runserver.log")).unwrap())
        .spawn()
        .unwrap();
    let server = GraphiteWeb(child);
    let url = format!("http://127.0.0.1:{port}");
    wait_for("graphite-web answering", LIMIT, None, || {
        Command::new("curl")
            .args(["-sf", "--max-time", "5", &format!("{url}/metrics/find?query=*")])
            .output()
            .is_ok_and(|o| o.status.success())
    });
    (server, url)
}

/// `target=`-encoded query strings for curl's -G --data-urlencode.
fn render_args<'a>(url: &'a str, query: &'a [(&'a str, String)]) -> Vec<String> {
    let mut args = vec!["-G".to_string(), url.to_string()];
    for (name, value) in query {
        args.push("--data-urlencode".into());
        args.push(format!("{name}={value}"));
    }
    args
}

fn render(base_url: &str, query: &[(&str, String)]) -> (u16, String) {
    let url = format!("{base_url}/render");
    let args = render_args(&url, query);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    curl(&args)
}

#[test]
fn render_find_and_expand_answer_as_graphite_web_does_on_the_same_rrd_files() {
    let base = Base::new();
    smokeping_rrd(&base, "dc1/web-1", 20, 360, 1.0, |i| i % 11 == 5);
    smokeping_rrd(&base, "dc1/web-2", 20, 360, 2.0, |i| (100..130).contains(&i));
    smokeping_rrd(&base, "dc2/db.example", 60, 120, 5.0, |i| i % 13 == 0);
    // A forwarded node's order, where processing stores it.
    smokeping_rrd(&base, "@prober-1/bench/o1", 20, 360, 3.0, |_| false);
    // graphite-web's tree: the same files, linked where its finder looks for them.
    let graphite = tempfile::tempdir().unwrap();
    for (id, name) in [
        ("dc1/web-1", "dc1/web-1"),
        ("dc1/web-2", "dc1/web-2"),
        ("dc2/db.example", "dc2/db_example"),
        ("@prober-1/bench/o1", "@prober-1/bench/o1"),
    ] {
        let link = graphite.path().join(format!("rrd/ping/{name}.rrd"));
        std::fs::create_dir_all(link.parent().unwrap()).unwrap();
        std::os::unix::fs::symlink(base.join(&format!("output/{id}/main.rrd")), link).unwrap();
    }
    let (_graphite_web, reference) = start_graphite_web(graphite.path());
    let port = free_tcp_port();
    base.write_config(&format!("api:\n  listen: [\"127.0.0.1:{port}\"]\n"));
    let serve = base.spawn(&["--log-level", "info"], "serve");
    wait_for("serve listening", LIMIT, Some(&serve), || {
        serve.log_text().contains("api listening")
    });
    let ours = format!("http://127.0.0.1:{port}");

    let window = |from: i64, until: i64| vec![("from", (T + from).to_string()), ("until", (T + until).to_string())];
    let mut cases: Vec<Vec<(&str, String)>> = Vec::new();
    for target in [
        "ping.dc1.web-1.median",
        "ping.dc1.web-1.loss",
        "ping.dc1.*.ping3",
        "ping.dc1.web-{1,2}.median",
        "ping.dc2.db_example.median",
        "ping.@prober-1.bench.o1.median",
        "ping.*.*.median",
        "sumSeries(ping.dc1.*.median)",
        "averageSeries(ping.*.*.median)",
        "maxSeries(ping.dc1.web-1.ping1,ping.dc2.*.ping1)",
        "minSeries(ping.*.*.loss)",
        "sum(ping.dc1.*.loss)",
        "alias(ping.dc1.web-2.median,\"web two\")",
        "aliasByNode(ping.*.*.median,2)",
        "aliasByNode(ping.dc1.*.loss,1,-1)",
        "aliasByNode(sumSeries(ping.dc1.*.median),1)",
        "constantLine(100)",
        "constantLine(0.5)",
    ] {
        let mut q = window(1000, 5000);
        q.push(("target", target.to_string()));
        cases.push(q);
    }
    // Windows: inside one archive, crossing the gaps, longer than the finest archive (librrd
    // picks the 15-step one), odd lengths; maxDataPoints as Grafana sends it; noNullPoints.
    for (from, until, extra) in [
        (0, 7200, vec![]),
        (2000, 2600, vec![]),
        (-600, 300, vec![]),
        (0, 7199, vec![("maxDataPoints", "50")]),
        (1000, 5000, vec![("maxDataPoints", "7")]),
        (1000, 5000, vec![("maxDataPoints", "1")]),
        (1000, 5000, vec![("noNullPoints", "")]),
        (0, 40000, vec![]),
    ] {
        let mut q = window(from, until);
        q.push(("target", "ping.dc1.*.median".into()));
        q.push(("target", "sumSeries(ping.*.*.loss)".into()));
        q.extend(extra.into_iter().map(|(k, v)| (k, v.to_string())));
        cases.push(q);
    }
    for q in &cases {
        let mut q = q.clone();
        q.push(("format", "json".into()));
        let (status_ref, expected) = render(&reference, &q);
        let (status, got) = render(&ours, &q);
        assert_eq!(
            (status_ref, status),
            (200, 200),
            "{q:?}: graphite-web {expected} / spoolmon {got}"
        );
        let expected: Value = serde_json::from_str(&expected.replace("1e9999", "null")).unwrap();
        let got: Value = serde_json::from_str(&got).unwrap();
        assert!(
            expected.as_array().is_some_and(|a| !a.is_empty()),
            "{q:?}: graphite-web found nothing: {expected} (its tree: {})",
            get_json(&format!("{reference}/metrics/find?query=ping.*"))
        );
        assert_eq!(got, expected, "{q:?}");
    }

    for query in [
        "*",
        "ping.*",
        "ping.dc1.*",
        "ping.dc1.web-1.*",
        "ping.dc2.db_example.m*",
        "ping.{dc1,dc2}.*",
        "nothing.*",
    ] {
        let expected = get_json(&format!("{reference}/metrics/find?query={query}"));
        let mut got = get_json(&format!("{ours}/metrics/find?query={query}"));
        // spoolmon adds min and max leaves graphite-web cannot know.
        if let Some(list) = got.as_array_mut() {
            list.retain(|n| !matches!(n["text"].as_str(), Some("min" | "max")));
        }
        assert_eq!(got, expected, "find {query}");
    }
    let expected = get_json(&format!("{reference}/metrics/expand?query=ping.dc1.*.m*"));
    let got = get_json(&format!("{ours}/metrics/expand?query=ping.dc1.*.med*"));
    assert_eq!(got, expected);

    // What graphite-web cannot be compared on: min and max are the smallest and largest
    // answered ping of each row.
    let mut q = window(1000, 1400);
    q.push(("target", "ping.dc1.web-1.{min,max,ping1,ping2,ping3}".into()));
    let (status, body) = render(&ours, &q);
    assert_eq!(status, 200, "{body}");
    let series: Value = serde_json::from_str(&body).unwrap();
    let column = |name: &str| -> Vec<Value> {
        let s = series.as_array().unwrap().iter().find(|s| s["target"] == name).unwrap();
        s["datapoints"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p[0].clone())
            .collect()
    };
    let (min, max) = (column("ping.dc1.web-1.min"), column("ping.dc1.web-1.max"));
    let (p1, p2, p3) = (
        column("ping.dc1.web-1.ping1"),
        column("ping.dc1.web-1.ping2"),
        column("ping.dc1.web-1.ping3"),
    );
    for i in 0..min.len() {
        let known: Vec<f64> = [&p1[i], &p2[i], &p3[i]].iter().filter_map(|v| v.as_f64()).collect();
        assert_eq!(min[i].as_f64(), known.iter().copied().reduce(f64::min), "row {i}");
        assert_eq!(max[i].as_f64(), known.iter().copied().reduce(f64::max), "row {i}");
    }

    // Grafana posts its renders as a form, and asks /functions for the editor.
    let form = format!(
        "target=constantLine(100)&from={}&until={}&format=json&maxDataPoints=300",
        T,
        T + 3600
    );
    let (status, posted) = curl(&["--data", &form, &format!("{ours}/render")]);
    assert_eq!(status, 200, "{posted}");
    let posted: Value = serde_json::from_str(&posted).unwrap();
    assert_eq!(posted[0]["target"], "100.0");
    let functions = get_json(&format!("{ours}/functions"));
    for name in [
        "alias",
        "aliasByNode",
        "constantLine",
        "sumSeries",
        "averageSeries",
        "maxSeries",
        "minSeries",
    ] {
        assert_eq!(functions[name]["name"], name);
    }

    // Hostile and wrong input: a clear 400 (or 405) each, nothing else.
    let mut bad: Vec<(Vec<(&str, String)>, &str)> = Vec::new();
    for (target, why) in [
        ("sumSeries(ping.dc1.*.median", "a ) is missing"),
        ("nosuchFunction(ping.dc1.*.median)", "unknown function"),
        ("ping.dc1/../../etc.median", "unexpected text"),
        ("ping..median", "empty name component"),
        ("ping.{a,{b}}.median", "nested"),
        ("alias(ping.dc1.*.median)", "alias(seriesList"),
        ("constantLine(x.y)", "constantLine(number)"),
        ("42", "series expression"),
    ] {
        let mut q = window(0, 3600);
        q.push(("target", target.to_string()));
        bad.push((q, why));
    }
    let mut q = window(0, 3600);
    q.push(("target", format!("ping.{}.median", "{a,b,c,d}".repeat(6))));
    bad.push((q, "alternatives"));
    bad.push((
        vec![("from", "yesterday".into()), ("target", "ping.*".into())],
        "is not a time",
    ));
    bad.push((
        vec![("from", "-5m".into()), ("target", "ping.*".into())],
        "is not a time",
    ));
    bad.push((
        vec![
            ("from", "now".into()),
            ("until", "now".into()),
            ("target", "ping.*".into()),
        ],
        "empty window",
    ));
    bad.push((
        vec![("format", "pickle".into()), ("target", "ping.*".into())],
        "only json",
    ));
    bad.push((vec![("targets", "ping.*".into())], "unknown parameter"));
    bad.push((
        vec![("maxDataPoints", "-1".into()), ("target", "ping.*".into())],
        "maxDataPoints",
    ));
    for (q, why) in &bad {
        let (status, body) = render(&ours, q);
        assert_eq!(status, 400, "{q:?}: {body}");
        assert!(body.contains(why), "{q:?}: {body}");
    }
    let (status, body) = curl(&[&format!("{ours}/metrics/find?query={}", "a".repeat(9000))]);
    assert_eq!(status, 400, "{body}");
    for query in ["ping.dc1%2F..%2F..%2Fetc", "ping.dc1/../..", "ping.%00"] {
        let (status, body) = curl(&[&format!("{ours}/metrics/find?query={query}")]);
        assert_eq!(status, 400, "{query}: {body}");
        assert!(body.contains("not a series name"), "{query}: {body}");
    }
    let (status, _) = curl(&["-X", "DELETE", &format!("{ours}/render")]);
    assert!(status == 405 || status == 401, "{status}");
    let (status, _) = curl(&["--data", "x=1", &format!("{ours}/functions")]);
    assert_eq!(status, 405);
    let huge = format!("target={}", "a".repeat(100_000));
    let (status, _) = curl(&["--data", &huge, &format!("{ours}/render")]);
    assert_eq!(status, 413);
    // Still answering, nothing written.
    let again = get_json(&format!("{ours}/metrics/find?query=ping.*"));
    assert_eq!(again.as_array().unwrap().len(), 3, "{again}");
    assert!(!base.join("orders").exists() || std::fs::read_dir(base.join("orders")).unwrap().next().is_none());
}
