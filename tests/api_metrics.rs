//! `/metrics` against real consumers: a real `spoolmon run` measuring loopback with real ICMP,
//! its exposition parsed by the OpenMetrics parser of the Python Prometheus client (Debian's
//! `python3-prometheus-client`, which refuses anything the format does not allow) and scraped
//! by a real Prometheus server (Debian's `prometheus`), whose queries give back the values:
//! the RTT histogram merges with `sum by (le)`, `histogram_quantile` works on it, self-metrics
//! carry their component. Hostile requests to `/metrics` (parameters, writes) are refused.

mod common;

use common::servers::free_tcp_port;
use common::*;
use serde_json::Value;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

const LIMIT: Duration = Duration::from_secs(90);

/// Parses `text` with prometheus_client's OpenMetrics parser; returns its families as JSON
/// (`[{name, type, samples: [[name, labels, value]]}]`), or panics with the parser's error.
fn parse_openmetrics(text: &str) -> Vec<Value> {
    let script = r#"
import json, sys
from prometheus_client.openmetrics.parser import text_string_to_metric_families
families = []
for f in text_string_to_metric_families(sys.stdin.read()):
    families.append({"name": f.name, "type": f.type,
                     "samples": [[s.name, s.labels, s.value] for s in f.samples]})
print(json.dumps(families))
"#;
    let mut child = Command::new("/usr/bin/python3")
        .args(["-c", script])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("/usr/bin/python3 (make test-deps installs python3-prometheus-client)");
    use std::io::Write;
    child.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "the OpenMetrics parser refused the exposition: {}\n{text}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice::<Value>(&out.stdout)
        .unwrap()
        .as_array()
        .unwrap()
        .clone()
}

/// `curl -sS -i URL` extras: (status, content type, body).
fn fetch(args: &[&str]) -> (u16, String, String) {
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "30", "-w", "\n%{http_code}\n%{content_type}"])
        .args(args)
        .output()
        .expect("curl runs");
    let text = String::from_utf8(out.stdout).unwrap();
    let mut parts = text.rsplitn(3, '\n');
    let content_type = parts.next().unwrap().to_owned();
    let status = parts.next().unwrap().parse().unwrap();
    (status, content_type, parts.next().unwrap_or("").to_owned())
}

fn family<'a>(families: &'a [Value], name: &str) -> &'a Value {
    families
        .iter()
        .find(|f| f["name"] == name)
        .unwrap_or_else(|| panic!("no family {name}"))
}

/// The samples of `family` named `sample` whose labels include `labels`.
fn samples<'a>(family: &'a Value, sample: &str, labels: &[(&str, &str)]) -> Vec<&'a Value> {
    family["samples"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s[0] == sample && labels.iter().all(|(k, v)| s[1][*k] == *v))
        .collect()
}

struct Prometheus(Child);

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A real Prometheus scraping `target` (host:port) every second.
fn start_prometheus(dir: &std::path::Path, target: &str) -> (Prometheus, String) {
    let config = dir.join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\nscrape_configs:\n  - job_name: spoolmon\n    static_configs:\n      - targets: ['{target}']\n"
        ),
    )
    .unwrap();
    let port = free_tcp_port();
    let address = format!("127.0.0.1:{port}");
    let child = Command::new("prometheus")
        .arg(format!("--config.file={}", config.display()))
        .arg(format!("--storage.tsdb.path={}", dir.join("data").display()))
        .arg(format!("--web.listen-address={address}"))
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join("prometheus.log")).unwrap())
        .spawn()
        .expect("prometheus (make test-deps installs it)");
    (Prometheus(child), format!("http://{address}/api/v1"))
}

/// The result vector of a Prometheus instant query (empty while there is no data).
fn query(prometheus: &str, expression: &str) -> Vec<Value> {
    let (status, _, body) = fetch(&[
        "-G",
        &format!("{prometheus}/query"),
        "--data-urlencode",
        &format!("query={expression}"),
    ]);
    if status != 200 {
        return Vec::new();
    }
    let answer: Value = serde_json::from_str(&body).unwrap();
    answer["data"]["result"].as_array().cloned().unwrap_or_default()
}

#[test]
fn metrics_parse_as_openmetrics_and_a_real_prometheus_scrapes_and_merges_the_histograms() {
    require_root("native ICMP to 127.0.0.0/8");
    let base = Base::new();
    base.write_order("dc1/a", &ping_order("127.0.0.1", 2, 5));
    base.write_order("dc2/b", &ping_order("127.0.0.2", 2, 5));
    let port = free_tcp_port();
    let mut daemon = base.start(&format!(
        "rescan-interval: 2\nself-metrics:\n  interval: 1\napi:\n  listen: [\"127.0.0.1:{port}\"]\n"
    ));
    let url = format!("http://127.0.0.1:{port}/metrics");
    wait_for("both orders measured twice", LIMIT, Some(&daemon), || {
        let (status, _, text) = fetch(&[&url]);
        status == 200
            && ["dc1/a", "dc2/b"].iter().all(|id| {
                text.lines().any(|l| {
                    l.starts_with(&format!("spoolmon_ping_sent_total{{order=\"{id}\"}} "))
                        && l.rsplit(' ').next().unwrap().parse::<u64>().unwrap() >= 10
                })
            })
            && text.contains("component=\"run\"")
    });

    let (status, content_type, text) = fetch(&[&url]);
    assert_eq!(status, 200);
    assert_eq!(
        content_type,
        "application/openmetrics-text; version=1.0.0; charset=utf-8"
    );
    assert!(text.ends_with("# EOF\n"));
    let families = parse_openmetrics(&text);

    // The histogram: cumulative buckets ending in +Inf equal to _count; loopback answers every
    // ping, well below 5 ms.
    let rtt = family(&families, "spoolmon_ping_rtt_seconds");
    assert_eq!(rtt["type"], "histogram");
    let sent = family(&families, "spoolmon_ping_sent");
    assert_eq!(sent["type"], "counter");
    for id in ["dc1/a", "dc2/b"] {
        let buckets = samples(rtt, "spoolmon_ping_rtt_seconds_bucket", &[("order", id)]);
        assert_eq!(buckets.len(), 16, "15 bounds and +Inf");
        let counts: Vec<f64> = buckets.iter().map(|b| b[2].as_f64().unwrap()).collect();
        assert!(counts.windows(2).all(|w| w[0] <= w[1]), "cumulative: {counts:?}");
        assert_eq!(buckets.last().unwrap()[1]["le"], "+Inf");
        let count = samples(rtt, "spoolmon_ping_rtt_seconds_count", &[("order", id)])[0][2]
            .as_f64()
            .unwrap();
        assert_eq!(*counts.last().unwrap(), count);
        let five_ms = buckets.iter().find(|b| b[1]["le"] == "0.005").unwrap()[2]
            .as_f64()
            .unwrap();
        assert_eq!(five_ms, count, "loopback answers within 5 ms");
        let sent = samples(sent, "spoolmon_ping_sent_total", &[("order", id)])[0][2]
            .as_f64()
            .unwrap();
        assert_eq!(sent, count, "loopback loses nothing");
        let sum = samples(rtt, "spoolmon_ping_rtt_seconds_sum", &[("order", id)])[0][2]
            .as_f64()
            .unwrap();
        assert!(sum > 0.0 && sum < count * 0.005, "{sum} for {count} pings");

        // The last round's gauges, as last_result has them.
        let last = base.read(&format!("output/{id}/last_result")).unwrap();
        let median: f64 = last_result_fields(&last)
            .into_iter()
            .find(|(k, _)| k == "median")
            .unwrap()
            .1
            .parse()
            .unwrap();
        let gauge = family(&families, "spoolmon_order_rtt_median_seconds");
        let shown = samples(gauge, "spoolmon_order_rtt_median_seconds", &[("order", id)])[0][2]
            .as_f64()
            .unwrap();
        // The file may have been replaced between the two reads; a median of loopback is
        // within the same bucket-sized range either way.
        assert!(shown > 0.0 && shown < 0.005 && median > 0.0, "{shown} vs {median}");
        let loss = family(&families, "spoolmon_order_loss_ratio");
        assert_eq!(samples(loss, "spoolmon_order_loss_ratio", &[("order", id)])[0][2], 0.0);
        let info = family(&families, "spoolmon_order_info");
        assert_eq!(
            samples(
                info,
                "spoolmon_order_info",
                &[("order", id), ("state", "active"), ("probe", "fping")]
            )
            .len(),
            1
        );
    }
    // Self-metrics from state/metrics.prom with their component; this server's own live.
    let active = family(&families, "spoolmon_orders");
    assert!(
        !samples(active, "spoolmon_orders", &[("component", "run"), ("state", "active")]).is_empty(),
        "{active}"
    );
    let requests = family(&families, "spoolmon_api_requests");
    let served = samples(requests, "spoolmon_api_requests_total", &[("component", "run")]);
    assert_eq!(served.len(), 1, "live, not also from the file: {requests}");
    assert!(served[0][2].as_f64().unwrap() >= 2.0);

    // Hostile requests: parameters and writes are refused, the daemon answers on.
    let (status, _, body) = fetch(&[&format!("{url}?name=x")]);
    assert_eq!(status, 400, "{body}");
    let (status, _, _) = fetch(&["-X", "PUT", "--data", "x", &url]);
    assert_ne!(status, 200);
    let (status, _, _) = fetch(&[&format!("{url}/../api/v1/health"), "--path-as-is"]);
    assert_eq!(status, 404);

    // A real Prometheus scrapes it (in OpenMetrics: it asks for that format first) and merges
    // the two orders' histograms bucket by bucket.
    let dir = tempfile::tempdir().unwrap();
    let (_prometheus, prometheus) = start_prometheus(dir.path(), &format!("127.0.0.1:{port}"));
    wait_for("prometheus has scraped the histograms", LIMIT, Some(&daemon), || {
        query(&prometheus, "spoolmon_ping_rtt_seconds_count").len() == 2
    });
    let up = query(&prometheus, "up{job=\"spoolmon\"}");
    assert_eq!(up[0]["value"][1], "1", "{up:?}");
    let (_, _, targets) = fetch(&[&format!("{prometheus}/targets")]);
    let targets: Value = serde_json::from_str(&targets).unwrap();
    assert_eq!(targets["data"]["activeTargets"][0]["lastError"], "", "{targets}");
    let merged = query(
        &prometheus,
        "histogram_quantile(0.5, sum by (le) (spoolmon_ping_rtt_seconds_bucket))",
    );
    assert_eq!(merged.len(), 1, "{merged:?}");
    let median: f64 = merged[0]["value"][1].as_str().unwrap().parse().unwrap();
    assert!(median > 0.0 && median <= 0.005, "merged median {median}");
    let counted = query(&prometheus, "sum(spoolmon_ping_rtt_seconds_count)");
    let total: f64 = counted[0]["value"][1].as_str().unwrap().parse().unwrap();
    assert!(total >= 20.0, "{total}");
    let by_component = query(&prometheus, "spoolmon_api_requests_total{component=\"run\"}");
    assert_eq!(by_component.len(), 1, "{by_component:?}");
    assert!(daemon.is_running(), "{}", daemon.log_text());
}
