//! Routing end to end: `spoolmon run` with two sinks of each type, each with its own route
//! (`takes`, `orders`, `metrics`), fed by real ping orders to 127.0.0.x, the self-metrics and
//! the real HAProxy snapshot of tests/data (200 frontends, ~78,000 metrics) dropped into
//! incoming/. Each sink must get exactly what its route says:
//!
//! - the two local-store sinks are compared line for line: `ls-route`'s files hold exactly the
//!   lines of `ls-all` (which takes everything) that its route passes;
//! - every outbox sink queued exactly as many lines as the lines of `ls-all` its route passes
//!   (counted after a graceful stop: delivered + still queued + rejected + dropped), so nothing
//!   else reached it, and what it delivered is read back from a real carbon-cache (two
//!   namespaces on one carbon) and a real InfluxDB 1.6 (two databases);
//! - the InfluxDB sink with the default route never gets a HAProxy measurement: checked after a
//!   ping result measured after the HAProxy snapshot left incoming/ reached the same database
//!   (its outbox delivers oldest first and an InfluxDB write is visible when it returns).

mod common;
#[path = "data/haproxy/reference.rs"]
mod reference;

use common::servers::{Carbon, Influx, InfluxSetup};
use common::*;
use std::collections::BTreeSet;
use std::fs;
use std::path::Path;
use std::time::Duration;

const LIMIT: Duration = Duration::from_secs(120);

/// Every line of a local-store directory (`<dir>/<time>/stats`), repeats included.
fn raw_lines(dir: &Path) -> Vec<String> {
    let mut lines = Vec::new();
    for entry in fs::read_dir(dir).into_iter().flatten() {
        let text = fs::read_to_string(entry.unwrap().path().join("stats")).unwrap_or_default();
        lines.extend(text.lines().map(str::to_string));
    }
    lines
}

/// The path of a Graphite line, without the local-store sinks' namespace `ls.`.
fn path(line: &str) -> &str {
    let path = line.split(' ').next().unwrap();
    path.strip_prefix("ls.")
        .unwrap_or_else(|| panic!("not below ls.: {line}"))
}

/// The order id part of a ping line's path (`web.a` of `ping.web.a.loss`), if it is one.
fn ping_order(path: &str) -> Option<&str> {
    path.strip_prefix("ping.").map(|rest| rest.rsplit_once('.').unwrap().0)
}

/// `haproxy.frontend.<name>.scur` → `<name>`.
fn scur_frontend(path: &str) -> Option<&str> {
    path.strip_prefix("haproxy.frontend.")
        .and_then(|rest| rest.strip_suffix(".scur"))
        .filter(|name| !name.contains('.'))
}

// The routes of the config below, spelled as predicates on the paths ls-all writes.

/// g-ping: `takes: [ping]`, `orders: {include: ['web/**'], exclude: ['web/skip-*']}`.
fn g_ping(path: &str) -> bool {
    ping_order(path).is_some_and(|order| order.starts_with("web.") && !order.starts_with("web.skip-"))
}

/// g-lb: `takes: [haproxy, self]`, `metrics: {include: ['haproxy.frontend.*.scur',
/// 'spoolmon.orders.*'], exclude: ['haproxy.frontend.fe_1*.scur']}`.
fn g_lb(path: &str) -> bool {
    scur_frontend(path).is_some_and(|name| !name.starts_with("fe_1"))
        || path
            .strip_prefix("spoolmon.orders.")
            .is_some_and(|rest| !rest.contains('.'))
}

/// i-hap: `takes: [haproxy]`, `metrics: {include: ['haproxy.frontend.fe_00?_*.scur']}`.
fn i_hap(path: &str) -> bool {
    scur_frontend(path).is_some_and(|name| name.starts_with("fe_00") && name.as_bytes().get(6) == Some(&b'_'))
}

/// ls-route: `orders: {exclude: ['web/skip-*']}`, `metrics: {include: ['haproxy.daemon.**',
/// 'spoolmon.**'], exclude: ['**.Uptime_sec']}`, all kinds.
fn ls_route(path: &str) -> bool {
    match ping_order(path) {
        Some(order) => !order.starts_with("web.skip-"),
        None => {
            (path.starts_with("haproxy.daemon.") || path.starts_with("spoolmon.")) && !path.ends_with(".Uptime_sec")
        }
    }
}

/// Lines the outbox of sink `name` took: delivered, still queued, refused and dropped.
fn queued_lines(base: &Base, name: &str) -> u64 {
    let status = spoolmon::sink::outbox::status(&base.join(&format!("outbox/{name}"))).unwrap();
    assert!(status.problems.is_empty(), "{name}: {:?}", status.problems);
    status.delivered_lines + status.lines + status.rejected_lines + status.dropped_lines
}

fn measurements(influx: &Influx, database: &str) -> BTreeSet<String> {
    let answer = influx.query(Some(database), "SHOW MEASUREMENTS");
    let Some(values) = answer["results"][0]["series"][0]["values"].as_array() else {
        return BTreeSet::new();
    };
    values.iter().map(|v| v[0].as_str().unwrap().to_string()).collect()
}

fn order(host: &str, measurement: Option<&str>) -> String {
    let telegraf = measurement.map_or(String::new(), |m| {
        format!("measurement_name: {m}\ntags: {{host: '{host}'}}\n")
    });
    format!("{}{telegraf}", common::ping_order(host, 2, 1))
}

#[test]
fn each_sink_takes_exactly_what_its_route_says() {
    let carbon = Carbon::start();
    let influx = Influx::start(InfluxSetup::default());
    influx.create_database("idef");
    influx.create_database("ihap");
    let base = Base::new();
    base.write_order("web/a", &order("127.0.0.2", Some("ping")));
    base.write_order("web/skip-b", &order("127.0.0.3", Some("ping")));
    base.write_order("db/c", &order("127.0.0.4", None));
    let (all_dir, route_dir) = (base.join("ls-all"), base.join("ls-route"));
    let graphite = format!(
        "type: graphite, port: {}, prefix-hostname: false, retries: 1, interval: 0.2, delay: 0.5",
        carbon.line_port
    );
    let config = format!(
        "rescan-interval: 1\n\
         self-metrics: {{interval: 1, sinks: [g-lb, i-def, ls-all, ls-route]}}\n\
         sinks:\n\
         \x20 g-ping: {{{graphite}, namespace: gping, takes: [ping],\n\
         \x20          orders: {{include: ['web/**'], exclude: ['web/skip-*']}}}}\n\
         \x20 g-lb: {{{graphite}, namespace: glb, takes: [haproxy, self],\n\
         \x20        metrics: {{include: ['haproxy.frontend.*.scur', 'spoolmon.orders.*'],\n\
         \x20                   exclude: ['haproxy.frontend.fe_1*.scur']}}}}\n\
         \x20 i-def: {{type: influxdb, url: '{url}', database: idef}}\n\
         \x20 i-hap: {{type: influxdb, url: '{url}', database: ihap, takes: [haproxy],\n\
         \x20         metrics: {{include: ['haproxy.frontend.fe_00?_*.scur']}}}}\n\
         \x20 ls-all: {{type: local-store, dir: '{all}', namespace: ls, prefix-hostname: false}}\n\
         \x20 ls-route: {{type: local-store, dir: '{route}', namespace: ls, prefix-hostname: false,\n\
         \x20            orders: {{exclude: ['web/skip-*']}},\n\
         \x20            metrics: {{include: ['haproxy.daemon.**', 'spoolmon.**'], exclude: ['**.Uptime_sec']}}}}\n",
        url = influx.url(),
        all = all_dir.display(),
        route = route_dir.display(),
    );
    fs::create_dir_all(base.join("incoming")).unwrap();
    let daemon = base.start(&config);

    // Ping results first, then the HAProxy snapshot, named by a recent time so that carbon's
    // one-hour retention keeps its points.
    wait_for("every order measured", LIMIT, Some(&daemon), || {
        ["web/a", "web/skip-b", "db/c"]
            .iter()
            .all(|id| base.result_time(id).is_some())
    });
    let now = unix_now();
    let epoch = now - now % 10 - 10;
    let unpacked = reference::unpack_snapshot(&base.join("unpack"));
    let snapshot = base.join(&format!("incoming/{epoch}"));
    fs::rename(unpacked, &snapshot).unwrap();
    // Gone from incoming/ = every sink took it, also those that take nothing of it (g-ping).
    wait_for("the HAProxy snapshot processed", LIMIT, Some(&daemon), || {
        !snapshot.exists()
    });
    let handed = unix_now();
    assert_eq!(base.count("failed"), 0);

    // What ls-all (everything) wrote of the snapshot, and the frontends' scur values.
    let all = local_store_lines(&all_dir);
    let scur: Vec<(String, f64)> = all
        .iter()
        .filter(|((p, t), _)| *t == epoch && scur_frontend(path(p)).is_some())
        .map(|((p, _), v)| (path(p).to_string(), *v))
        .collect();
    assert_eq!(scur.len(), 200, "ls-all holds every frontend's scur");

    // Delivered to carbon: g-lb's frontends and self-metrics, g-ping's ping results.
    for (path, value) in scur.iter().filter(|(p, _)| g_lb(p)) {
        carbon.wait_for_point(&format!("glb.{path}"), epoch, *value);
    }
    wait_for("g-lb's self-metrics in whisper", LIMIT, Some(&daemon), || {
        carbon.whisper_file("glb.spoolmon.orders.active").exists()
    });
    let web_a: Vec<i64> = all
        .keys()
        .filter(|(p, _)| p == "ls.ping.web.a.loss")
        .map(|(_, t)| *t)
        .collect();
    carbon.wait_for_point("gping.ping.web.a.loss", web_a[0], 0.0);

    // Delivered to InfluxDB: i-hap has fe_000 to fe_009 only, i-def its ping results (with a
    // measurement name) and self-metrics.
    let hap: BTreeSet<String> = scur.iter().filter(|(p, _)| i_hap(p)).map(|(p, _)| p.clone()).collect();
    assert_eq!(hap.len(), 10, "{hap:?}");
    wait_for("i-hap's ten frontends", LIMIT, Some(&daemon), || {
        measurements(&influx, "ihap") == hap
    });
    wait_for(
        "i-def: a ping result measured after the HAProxy snapshot was handed on",
        LIMIT,
        Some(&daemon),
        || {
            influx
                .rows("idef", "ping")
                .iter()
                .any(|row| row["time"].as_i64().unwrap() > handed * 1_000_000_000)
        },
    );
    let idef = measurements(&influx, "idef");
    assert!(
        idef.contains("ping") && idef.contains("spoolmon.orders.active"),
        "{idef:?}"
    );
    let unexpected: Vec<&String> = idef
        .iter()
        .filter(|m| *m != "ping" && !m.starts_with("spoolmon."))
        .collect();
    assert!(
        unexpected.is_empty(),
        "i-def's default route takes no HAProxy metric: {unexpected:?}"
    );
    let targets: BTreeSet<String> = influx
        .rows("idef", "ping")
        .iter()
        .map(|row| row["host"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(targets, BTreeSet::from(["127.0.0.2".into(), "127.0.0.3".into()]));

    assert!(daemon.terminate(Duration::from_secs(60)).is_some_and(|s| s.success()));

    // After the stop nothing changes any more: the exact comparisons.
    let all_lines = raw_lines(&all_dir);
    let all = local_store_lines(&all_dir);
    let expected: std::collections::BTreeMap<_, _> = all
        .iter()
        .filter(|((p, _), _)| ls_route(path(p)))
        .map(|(k, v)| (k.clone(), *v))
        .collect();
    let routed = local_store_lines(&route_dir);
    assert_eq!(routed.len(), expected.len());
    assert!(routed == expected, "ls-route holds other lines than its route passes");
    assert!(routed.keys().any(|(p, _)| p == "ls.haproxy.daemon.Idle_pct"));
    assert!(routed.keys().any(|(p, _)| p.starts_with("ls.ping.db.c.")));
    assert!(routed.keys().any(|(p, _)| p.starts_with("ls.spoolmon.")));
    assert_eq!(
        raw_lines(&route_dir).len(),
        all_lines.iter().filter(|l| ls_route(path(l))).count()
    );

    let count = |route: fn(&str) -> bool| all_lines.iter().filter(|l| route(path(l))).count() as u64;
    assert_eq!(queued_lines(&base, "g-ping"), count(g_ping), "g-ping");
    assert_eq!(queued_lines(&base, "g-lb"), count(g_lb), "g-lb");
    assert_eq!(queued_lines(&base, "i-hap"), count(i_hap), "i-hap");
    // InfluxDB: a summary line per result with a measurement name, an individual_rtt line per
    // answer (ls-all's `min` line), and every self-metric.
    let i_def = |p: &str| {
        ping_order(p).is_some_and(|order| order.starts_with("web.") && (p.ends_with(".loss") || p.ends_with(".min")))
            || p.starts_with("spoolmon.")
    };
    assert_eq!(queued_lines(&base, "i-def"), count(i_def), "i-def");
    for sink in ["g-ping", "g-lb", "i-hap", "i-def"] {
        assert!(queued_lines(&base, sink) > 0, "{sink} took nothing");
    }

    // And carbon never made a series outside each sink's route (what it has written so far).
    let whisper = carbon.dir.path().join("whisper");
    for absent in [
        "gping/haproxy",
        "gping/spoolmon",
        "gping/ping/web/skip-b",
        "gping/ping/db",
        "glb/ping",
    ] {
        assert!(!whisper.join(absent).exists(), "{absent} in whisper");
    }
    let frontends: Vec<String> = fs::read_dir(whisper.join("glb/haproxy/frontend"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(frontends.len(), 100, "{frontends:?}");
    assert!(frontends.iter().all(|f| !f.starts_with("fe_1")), "{frontends:?}");
}
