//! Sinks against real servers: lines encoded for Graphite reach a real carbon-cache (read back
//! with whisper-fetch), line protocol reaches a real InfluxDB 1.6 over HTTP and UDP (read back
//! with SELECT), and local-store writes its files. InfluxDB 2.x's `/api/v2/write` is checked
//! against a recording listener, because InfluxDB 1.6 does not have that endpoint.

mod common;

use common::servers::{Carbon, Influx, InfluxSetup, START_LIMIT};
use common::wait_for;
use common::ReadOnlyDir;
use serde_json::{json, Map, Value};
use spoolmon::process::handoff::ResultSink;
use spoolmon::process::handoff::SinkBatch;
use spoolmon::shared::measurement::Metric;
use spoolmon::shared::measurement::{OrderId, OrderResult, TelegrafMeta};
use spoolmon::sink::graphite::{GraphiteEncoder, GraphiteOptions, GraphiteTransport};
use spoolmon::sink::influx::{self, InfluxEncoder, InfluxOptions, Precision};
use spoolmon::sink::local_store::{LocalStore, LocalStoreOptions};
use spoolmon::sink::{DeliveryError, Encoder, Transport};
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::mpsc;
use std::time::Duration;

/// A step start a little in the past, so carbon's one-hour retention and InfluxDB's default
/// retention policy keep the points.
fn recent_step_start() -> i64 {
    let now = spoolmon::shared::clock::unix_now();
    now - now % 20 - 60
}

fn ping_result(id: &str, time: i64, rtts: Vec<Option<f64>>, measurement: Option<&str>) -> OrderResult {
    OrderResult::builder(OrderId::new(id).unwrap(), time)
        .rtts(rtts)
        .telegraf(measurement.map(|name| TelegrafMeta {
            measurement_name: name.to_string(),
            tags: BTreeMap::from([("target".to_string(), id.to_string())]),
        }))
        .build()
}

fn encoded(encoder: &dyn Encoder, results: &[OrderResult], metrics: &[Metric]) -> Vec<u8> {
    let mut out = Vec::new();
    encoder.encode(SinkBatch::round(results, metrics), &mut out);
    out
}

fn graphite_options(port: u16) -> GraphiteOptions {
    GraphiteOptions {
        port,
        namespace: "spoolmon".into(),
        hostname: Some("test-host.example".into()),
        fqdn: false,
        connect_timeout: 2.0,
        write_timeout: 2.0,
        ..GraphiteOptions::default()
    }
}

#[test]
fn graphite_lines_reach_carbon_at_their_timestamps() {
    let carbon = Carbon::start();
    let options = graphite_options(carbon.line_port);
    let t = recent_step_start();
    let results = [
        ping_result("app/db.1", t, vec![Some(0.003), None, Some(0.001), Some(0.002)], None),
        ping_result("app/down", t, vec![None, None], None),
    ];
    let metrics = [Metric {
        path: "haproxy.frontend.www.scur".into(),
        value: 12.5,
        time: t + 1,
    }];
    let payload = encoded(&GraphiteEncoder::new(&options), &results, &metrics);
    GraphiteTransport::new(&options).send(&payload).unwrap();

    let expected = [
        ("spoolmon.test-host.ping.app.db_1.loss", t, 1.0),
        ("spoolmon.test-host.ping.app.db_1.min", t, 0.001),
        ("spoolmon.test-host.ping.app.db_1.median", t, 0.002),
        ("spoolmon.test-host.ping.app.db_1.max", t, 0.003),
        ("spoolmon.test-host.ping.app.down.loss", t, 2.0),
        ("spoolmon.test-host.haproxy.frontend.www.scur", t + 1, 12.5),
    ];
    for (path, time, value) in expected {
        let points = carbon.wait_for_point(path, time, value);
        let others: Vec<_> = points.iter().filter(|(when, v)| *when != time && v.is_some()).collect();
        assert!(others.is_empty(), "{path}: unexpected points {others:?}");
    }
    assert!(!carbon.whisper_file("spoolmon.test-host.ping.app.down.min").exists());
}

#[test]
fn graphite_down_is_transient_and_the_same_transport_delivers_once_carbon_is_up() {
    // The port is held, bound but not listening, while carbon is down: connecting is refused and
    // no server of a test running beside this one can take the port meanwhile.
    let held = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    held.bind(&std::net::SocketAddr::from(([127, 0, 0, 1], 0)).into())
        .unwrap();
    let port = held.local_addr().unwrap().as_socket().unwrap().port();
    let options = graphite_options(port);
    let mut transport = GraphiteTransport::new(&options);
    let t = recent_step_start();
    let line = |path: &str, time: i64, value: f64| format!("{path} {value} {time}\n").into_bytes();

    let err = transport.send(&line("spoolmon.a", t, 1.0)).unwrap_err();
    assert!(matches!(err, DeliveryError::Transient(_)), "{err}");

    drop(held);
    let mut carbon = Carbon::start_on(port);
    transport.send(&line("spoolmon.a", t, 1.0)).unwrap();
    carbon.wait_for_point("spoolmon.a", t, 1.0);

    // Carbon goes away while the transport holds its connection: the next send must notice
    // instead of writing into the dead connection.
    carbon.stop();
    let err = transport.send(&line("spoolmon.a", t + 1, 2.0)).unwrap_err();
    assert!(matches!(err, DeliveryError::Transient(_)), "{err}");

    carbon.restart();
    transport.send(&line("spoolmon.a", t + 2, 3.0)).unwrap();
    carbon.wait_for_point("spoolmon.a", t + 2, 3.0);

    // A restart between two sends, with no failed send in between, loses nothing either.
    carbon.restart();
    transport.send(&line("spoolmon.a", t + 3, 4.0)).unwrap();
    carbon.wait_for_point("spoolmon.a", t + 3, 4.0);
}

fn influx_v1(influx: &Influx, database: &str) -> InfluxOptions {
    InfluxOptions {
        url: influx.url(),
        database: Some(database.into()),
        timeout: 10.0,
        ..InfluxOptions::default()
    }
}

/// Writes `results` and `metrics` encoded with `options` through `influx::transport_for`.
fn write_influx(options: &InfluxOptions, results: &[OrderResult], metrics: &[Metric]) -> Result<(), DeliveryError> {
    let payload = encoded(&InfluxEncoder::new(options), results, metrics);
    influx::transport_for(options).unwrap().send(&payload)
}

fn row(fields: Value) -> Map<String, Value> {
    fields.as_object().unwrap().clone()
}

/// The rows the standard test results produce, with timestamps in ns from step start `t`. The
/// first ping's `individual_rtt` has the summary's series and time, so InfluxDB merges the two
/// lines into one point.
fn expected_ping_rows(t: i64) -> Vec<Map<String, Value>> {
    let ns = t * 1_000_000_000;
    vec![
        row(json!({"time": ns, "target": "a/b", "host": "collector", "loss": 25,
                   "max_rtt": 0.003, "median_rtt": 0.002, "min_rtt": 0.001, "individual_rtt": 0.003})),
        row(json!({"time": ns, "target": "down", "host": "collector", "loss": 100})),
        row(json!({"time": ns + 10_000_000_000i64, "target": "a/b", "host": "collector", "individual_rtt": 0.001})),
        row(json!({"time": ns + 15_000_000_000i64, "target": "a/b", "host": "collector", "individual_rtt": 0.002})),
    ]
}

fn test_results(t: i64) -> Vec<OrderResult> {
    vec![
        ping_result(
            "a/b",
            t,
            vec![Some(0.003), None, Some(0.001), Some(0.002)],
            Some("ping"),
        ),
        ping_result("down", t, vec![None, None], Some("ping")),
        ping_result("no-measurement", t, vec![Some(0.5)], None),
    ]
}

fn sorted_by_time_and_target(mut rows: Vec<Map<String, Value>>) -> Vec<Map<String, Value>> {
    rows.sort_by_key(|r| (r["time"].as_i64().unwrap(), r["target"].to_string()));
    rows
}

#[test]
fn influx_http_v1_writes_read_back_exactly() {
    let influx = Influx::start(InfluxSetup::default());
    influx.create_database("pings");
    let t = recent_step_start();
    let options = InfluxOptions {
        global_tags: BTreeMap::from([("host".into(), "collector".into())]),
        ..influx_v1(&influx, "pings")
    };
    let metrics = [
        Metric {
            path: "haproxy.frontend.www.scur".into(),
            value: 12.0,
            time: t,
        },
        Metric {
            path: "haproxy.tiny".into(),
            value: 1e-7,
            time: t,
        },
        Metric {
            path: "haproxy.huge".into(),
            value: -1.5e300,
            time: t,
        },
    ];
    write_influx(&options, &test_results(t), &metrics).unwrap();

    let rows = influx.wait_for_rows("pings", "ping", 4);
    assert_eq!(
        sorted_by_time_and_target(rows),
        sorted_by_time_and_target(expected_ping_rows(t))
    );
    let ns = t * 1_000_000_000;
    for (path, value) in [("scur", json!(12)), ("tiny", json!(1e-7)), ("huge", json!(-1.5e300))] {
        let from = format!(
            "\"haproxy.{}\"",
            if path == "scur" { "frontend.www.scur" } else { path }
        );
        let rows = influx.wait_for_rows("pings", &from, 1);
        assert_eq!(
            rows,
            [row(json!({"time": ns, "host": "collector", "value": value}))],
            "{path}"
        );
    }
    assert!(influx.rows("pings", "\"no-measurement\"").is_empty());
}

#[test]
fn influx_http_v1_with_gzip_retention_policy_and_precision() {
    let influx = Influx::start(InfluxSetup::default());
    influx.create_database("db");
    influx.query(
        None,
        "CREATE RETENTION POLICY \"short\" ON \"db\" DURATION 2h REPLICATION 1",
    );
    let t = recent_step_start();
    let results = [ping_result("x", t, vec![Some(0.25), Some(0.5), Some(0.125)], Some("m"))];
    for (precision, measurement) in [(Precision::Us, "m_us"), (Precision::S, "m_s")] {
        let options = InfluxOptions {
            retention_policy: Some("short".into()),
            precision,
            gzip: true,
            ..influx_v1(&influx, "db")
        };
        let mut results = results.clone();
        results[0].telegraf.as_mut().unwrap().measurement_name = measurement.into();
        write_influx(&options, &results, &[]).unwrap();
    }
    // Offsets of the second and third ping: 20 s * 1/3 and * 2/3, floored to the precision.
    let ns = t * 1_000_000_000;
    let times = |from: &str, count| -> Vec<i64> {
        let rows = influx.wait_for_rows("db", from, count);
        rows.iter()
            .filter(|r| r.contains_key("individual_rtt"))
            .map(|r| r["time"].as_i64().unwrap())
            .collect()
    };
    assert_eq!(
        times("\"short\".\"m_us\"", 3),
        [ns, ns + 6_666_666_000, ns + 13_333_333_000]
    );
    assert_eq!(
        times("\"short\".\"m_s\"", 3),
        [ns, ns + 6_000_000_000, ns + 13_000_000_000]
    );
    assert!(
        influx.rows("db", "\"autogen\".\"m_us\"").is_empty(),
        "written outside the retention policy"
    );
}

#[test]
fn influx_http_v1_authentication() {
    let influx = Influx::start(InfluxSetup {
        auth: true,
        ..InfluxSetup::default()
    });
    influx.create_database("secure");
    let t = recent_step_start();
    let (user, password) = common::servers::INFLUX_ADMIN;
    let good = InfluxOptions {
        username: Some(user.into()),
        password: Some(password.into()),
        ..influx_v1(&influx, "secure")
    };
    let bad = InfluxOptions {
        password: Some("wrong".into()),
        ..good.clone()
    };
    let results = [ping_result("x", t, vec![None], Some("auth"))];
    let err = write_influx(&bad, &results, &[]).unwrap_err();
    assert!(
        matches!(&err, DeliveryError::Transient(m) if m.contains("401")),
        "{err}"
    );
    write_influx(&good, &results, &[]).unwrap();
    let rows = influx.wait_for_rows("secure", "auth", 1);
    assert_eq!(
        rows,
        [row(json!({"time": t * 1_000_000_000, "target": "x", "loss": 100}))]
    );
}

#[test]
fn influx_udp_datagrams_reach_the_listener() {
    let influx = Influx::start(InfluxSetup {
        udp_database: Some("udp"),
        ..InfluxSetup::default()
    });
    let t = recent_step_start();
    let options = InfluxOptions {
        url: format!("udp://127.0.0.1:{}", influx.udp_port.unwrap()),
        // Small datagrams: the five lines travel in several of them.
        max_datagram_size: 150,
        global_tags: BTreeMap::from([("host".into(), "collector".into())]),
        ..InfluxOptions::default()
    };
    write_influx(&options, &test_results(t), &[]).unwrap();
    let rows = influx.wait_for_rows("udp", "ping", 4);
    assert_eq!(
        sorted_by_time_and_target(rows),
        sorted_by_time_and_target(expected_ping_rows(t))
    );
}

#[test]
fn influx_bad_lines_are_rejected_and_unreachable_or_missing_targets_are_transient() {
    let mut influx = Influx::start(InfluxSetup::default());
    influx.create_database("db");
    let mut transport = influx::transport_for(&influx_v1(&influx, "db")).unwrap();
    let err = transport.send(b"good v=1 1\nthis is not line protocol\n").unwrap_err();
    assert!(matches!(&err, DeliveryError::Rejected(m) if m.contains("400")), "{err}");

    let mut missing = influx::transport_for(&influx_v1(&influx, "no_such_db")).unwrap();
    let err = missing.send(b"m v=1 1\n").unwrap_err();
    assert!(
        matches!(&err, DeliveryError::Transient(m) if m.contains("404")),
        "{err}"
    );

    influx.stop();
    let err = transport.send(b"m v=1 1\n").unwrap_err();
    assert!(matches!(err, DeliveryError::Transient(_)), "{err}");
}

#[test]
fn influx_unresolvable_host_is_transient() {
    let options = InfluxOptions {
        url: "http://no-such-host.invalid:8086".into(),
        database: Some("db".into()),
        ..InfluxOptions::default()
    };
    let err = influx::transport_for(&options).unwrap().send(b"m v=1 1\n").unwrap_err();
    assert!(matches!(err, DeliveryError::Transient(_)), "{err}");
}

/// One HTTP request as the recording listener saw it.
#[derive(Debug)]
struct RecordedRequest {
    request_line: String,
    /// Lower-case names.
    headers: BTreeMap<String, String>,
    body: Vec<u8>,
}

/// A one-request HTTP listener that records the request and answers `status`. Only for what
/// no real server here can produce: InfluxDB 2.x's API and 5xx answers.
fn recording_listener(status: u16) -> (u16, mpsc::Receiver<RecordedRequest>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let (sender, receiver) = mpsc::channel();
    std::thread::spawn(move || {
        let (stream, _) = listener.accept().unwrap();
        stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut reader = BufReader::new(stream.try_clone().unwrap());
        let mut request_line = String::new();
        reader.read_line(&mut request_line).unwrap();
        let mut headers = BTreeMap::new();
        loop {
            let mut line = String::new();
            reader.read_line(&mut line).unwrap();
            let Some((name, value)) = line.trim_end().split_once(": ") else {
                break;
            };
            headers.insert(name.to_ascii_lowercase(), value.to_string());
        }
        let length: usize = headers.get("content-length").map_or(0, |l| l.parse().unwrap());
        let mut body = vec![0; length];
        reader.read_exact(&mut body).unwrap();
        let reply = format!("HTTP/1.1 {status} Status\r\nContent-Length: 5\r\nConnection: close\r\n\r\noops\n");
        (&stream).write_all(reply.as_bytes()).unwrap();
        sender
            .send(RecordedRequest {
                request_line: request_line.trim_end().to_string(),
                headers,
                body,
            })
            .unwrap();
    });
    (port, receiver)
}

#[test]
fn influx_v2_request_has_the_api_v2_shape() {
    let (port, requests) = recording_listener(204);
    let options = InfluxOptions {
        url: format!("http://127.0.0.1:{port}/"),
        org: Some("my org".into()),
        bucket: Some("pings/autogen".into()),
        token: Some("s3cr3t".into()),
        precision: Precision::Ms,
        gzip: true,
        ..InfluxOptions::default()
    };
    influx::transport_for(&options)
        .unwrap()
        .send(b"m v=1 1700000000000\n")
        .unwrap();
    let request = requests.recv_timeout(START_LIMIT).unwrap();
    assert_eq!(
        request.request_line,
        "POST /api/v2/write?org=my%20org&bucket=pings%2Fautogen&precision=ms HTTP/1.1"
    );
    assert_eq!(request.headers["authorization"], "Token s3cr3t");
    assert_eq!(request.headers["content-encoding"], "gzip");
    assert_eq!(request.headers["content-type"], "text/plain; charset=utf-8");
    let mut body = String::new();
    flate2::read::GzDecoder::new(&request.body[..])
        .read_to_string(&mut body)
        .unwrap();
    assert_eq!(body, "m v=1 1700000000000\n");
}

#[test]
fn influx_server_errors_are_transient() {
    let (port, requests) = recording_listener(503);
    let options = InfluxOptions {
        url: format!("http://127.0.0.1:{port}"),
        database: Some("db".into()),
        ..InfluxOptions::default()
    };
    let err = influx::transport_for(&options).unwrap().send(b"m v=1 1\n").unwrap_err();
    assert!(
        matches!(&err, DeliveryError::Transient(m) if m.contains("503")),
        "{err}"
    );
    let request = requests.recv_timeout(START_LIMIT).unwrap();
    assert_eq!(request.request_line, "POST /write?db=db&precision=ns HTTP/1.1");
    assert!(!request.headers.contains_key("authorization"));
}

fn local_store(dir: &std::path::Path) -> LocalStore {
    let options = LocalStoreOptions {
        dir: dir.join("local-store"),
        hostname: Some("lb-01".into()),
        ..LocalStoreOptions::default()
    };
    options.validate().unwrap();
    let store = LocalStore::new("debug", &options, options.encoder()).unwrap();
    assert_eq!(options.encoder().prefix(), "loadbalancers.lb-01.");
    store
}

#[test]
fn local_store_appends_graphite_lines_per_time_directory() {
    let base = tempfile::tempdir().unwrap();
    let store = local_store(base.path());
    let results = [
        ping_result("a/b", 100, vec![Some(0.5), None], None),
        ping_result("c", 120, vec![None], None),
    ];
    let metrics = [Metric {
        path: "haproxy.daemon.Uptime_sec".into(),
        value: 7.0,
        time: 100,
    }];
    store.accept(SinkBatch::round(&results, &metrics)).unwrap();
    store.accept(SinkBatch::round(&results[1..], &[])).unwrap();

    let read = |time: &str| std::fs::read_to_string(base.path().join("local-store").join(time).join("stats")).unwrap();
    assert_eq!(
        read("100"),
        "loadbalancers.lb-01.ping.a.b.loss 1 100\nloadbalancers.lb-01.ping.a.b.min 0.5 100\n\
         loadbalancers.lb-01.ping.a.b.median 0.5 100\nloadbalancers.lb-01.ping.a.b.max 0.5 100\n\
         loadbalancers.lb-01.haproxy.daemon.Uptime_sec 7 100\n"
    );
    assert_eq!(
        read("120"),
        "loadbalancers.lb-01.ping.c.loss 1 120\nloadbalancers.lb-01.ping.c.loss 1 120\n"
    );
    let mut names: Vec<_> = std::fs::read_dir(base.path().join("local-store"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, ["100", "120"]);
    assert_eq!(store.name(), "debug");
}

#[test]
fn local_store_in_a_read_only_directory_fails_accept() {
    let base = tempfile::tempdir().unwrap();
    let store = local_store(base.path());
    let dir = base.path().join("local-store");
    std::fs::create_dir(&dir).unwrap();
    let _read_only = ReadOnlyDir::new(&dir);
    let results = [ping_result("a", 100, vec![None], None)];
    let err = store.accept(SinkBatch::round(&results, &[])).unwrap_err();
    assert_eq!(err.sink, "debug");
    assert!(err.message.contains("local-store/100/stats"), "{err}");
}

#[test]
fn servers_are_stopped_when_their_handle_is_dropped() {
    let carbon = Carbon::start();
    let port = carbon.line_port;
    drop(carbon);
    wait_for("carbon's port to close", START_LIMIT, None, || {
        !common::servers::accepts_connections(port)
    });
}
