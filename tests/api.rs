//! The API through the real binary and the real `curl`: beside a real `spoolmon run` measuring
//! loopback (orders listed with their last results, one order's report, an order written with
//! PUT and measured, removed with DELETE and archived, the series equal to `rrdtool fetch` of the
//! same file and window, status parts), and `spoolmon serve` alone on files made by the real
//! `rrdtool` (exact values and unknowns, librrd's choice of archive), over TLS and a Unix
//! socket. Hostile input: bad and missing tokens, read tokens writing, path traversal in every
//! spelling, oversized and hostile orders, bad queries, a slow client, more connections than
//! allowed: each a clear 4xx (or 503), nothing written outside `orders/`, the daemon measuring on.

mod common;

use common::servers::free_tcp_port;
use common::tls::{ca, signed};
use common::*;
use serde_json::Value;
use std::fs;
use std::io::{Read, Write};
use std::process::Command;
use std::time::Duration;

const WRITE: &str = "wwwwwwww-1111-2222-3333-444444444444";
const READ: &str = "rrrrrrrr-1111-2222-3333-444444444444";
const LIMIT: Duration = Duration::from_secs(60);

/// `curl` with `args`; returns (HTTP status, body). `-k`-less: TLS is verified when used.
fn curl(args: &[&str]) -> (u16, String) {
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "30", "-w", "\n%{http_code}"])
        .args(args)
        .output()
        .expect("curl runs");
    let text = String::from_utf8(out.stdout).unwrap();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", &text));
    let code = code
        .parse()
        .unwrap_or_else(|_| panic!("curl {args:?}: {text} {}", String::from_utf8_lossy(&out.stderr)));
    (code, body.to_owned())
}

fn get(url: &str) -> (u16, Value) {
    let (status, body) = curl(&[url]);
    (
        status,
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("{url}: {e}: {body}")),
    )
}

fn with_token(token: &str, args: &[&str]) -> (u16, Value) {
    let header = format!("Authorization: Bearer {token}");
    let mut all = vec!["-H", header.as_str()];
    all.extend_from_slice(args);
    let (status, body) = curl(&all);
    (
        status,
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("{args:?}: {e}: {body}")),
    )
}

fn api_config(port: u16) -> String {
    format!(
        "rescan-interval: 2\napi:\n  listen: [\"127.0.0.1:{port}\"]\n  max-request-bytes: 4096\n  tokens:\n    {WRITE}: write\n    {READ}: read\n"
    )
}

/// The files below `dir` that the daemon does not write itself (output/, state/, incoming/,
/// logs), relative: what a refused write must leave as it was.
fn user_files(dir: &std::path::Path) -> Vec<String> {
    let daemons = |f: &String| ["output", "state", "incoming"].iter().any(|d| f.starts_with(d)) || f.ends_with(".log");
    files_below(dir).into_iter().filter(|f| !daemons(f)).collect()
}

/// Every file below `dir` (relative paths), to prove nothing appeared outside `orders/`.
fn files_below(dir: &std::path::Path) -> Vec<String> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in fs::read_dir(&d).unwrap() {
            let entry = entry.unwrap();
            let path = entry.path();
            if entry.file_type().unwrap().is_dir() {
                stack.push(path.clone());
            }
            found.push(path.strip_prefix(dir).unwrap().to_string_lossy().into_owned());
        }
    }
    found.sort();
    found
}

#[test]
fn beside_a_running_daemon_orders_are_listed_read_written_and_removed_and_series_match_rrdtool() {
    require_root("native ICMP to 127.0.0.0/8");
    let base = Base::new();
    base.write_order("dc1/a", &ping_order("127.0.0.1", 5, 3));
    base.write_order("dc2/b", &ping_order("127.0.0.2", 5, 3));
    let port = free_tcp_port();
    let daemon = base.start(&api_config(port));
    let api = format!("http://127.0.0.1:{port}/api/v1");
    wait_for("both orders measured", LIMIT, Some(&daemon), || {
        base.result_time("dc1/a").is_some() && base.result_time("dc2/b").is_some()
    });
    wait_for("the api listening", LIMIT, Some(&daemon), || {
        daemon.log_text().contains("api listening")
    });

    let (status, health) = get(&format!("{api}/health"));
    assert_eq!((status, health["status"].as_str()), (200, Some("ok")));

    let (status, list) = get(&format!("{api}/orders"));
    assert_eq!(status, 200, "{list}");
    assert_eq!(list["total"], 2);
    let first = &list["orders"][0];
    assert_eq!(first["id"], "dc1/a");
    assert_eq!(first["state"], "active");
    assert_eq!(first["probe"], "fping");
    assert_eq!(first["target"], "127.0.0.1");
    assert_eq!(first["last_result"]["loss"], 0, "{first}");
    assert!(first["last_result"]["median_ms"].as_f64().unwrap() > 0.0);
    let (_, filtered) = get(&format!("{api}/orders?prefix=dc2/"));
    assert_eq!(filtered["total"], 1);
    assert_eq!(filtered["orders"][0]["id"], "dc2/b");
    let (_, paged) = get(&format!("{api}/orders?offset=1&limit=1"));
    assert_eq!(
        (paged["total"].as_u64(), paged["orders"].as_array().unwrap().len()),
        (Some(2), 1)
    );
    assert_eq!(paged["orders"][0]["id"], "dc2/b");
    let (_, none) = get(&format!("{api}/orders?state=invalid"));
    assert_eq!(none["total"], 0);

    let (status, one) = get(&format!("{api}/orders/dc1/a"));
    assert_eq!(status, 200, "{one}");
    assert_eq!(one["location"], "output");
    assert_eq!(one["order"]["state"], "active");
    let (status, results) = get(&format!("{api}/results"));
    assert_eq!(status, 200);
    assert_eq!(results["results"]["dc2/b"]["pings"], 3);

    // A PUT is an order file like any producer's: validated, written, measured.
    let order = ping_order("127.0.0.3", 5, 3);
    let put = |token: &str, id: &str, body: &str| {
        with_token(
            token,
            &["-X", "PUT", "--data-binary", body, &format!("{api}/orders/{id}")],
        )
    };
    let (status, written) = put(WRITE, "dc3/new", &order);
    assert_eq!(status, 201, "{written}");
    assert_eq!(written["replaced"], false);
    assert_eq!(fs::read_to_string(base.join("orders/dc3/new")).unwrap(), order);
    wait_for("the PUT order measured", LIMIT, Some(&daemon), || {
        base.result_time("dc3/new").is_some()
    });
    let (status, replaced) = put(WRITE, "dc3/new", &order);
    assert_eq!((status, &replaced["replaced"]), (200, &Value::Bool(true)));
    let (status, kept) = with_token(
        WRITE,
        &[
            "-X",
            "PUT",
            "--data-binary",
            &order,
            &format!("{api}/orders/dc3/new?replace=false"),
        ],
    );
    assert_eq!(status, 409, "{kept}");

    // The series is what `rrdtool fetch` says of the same file and window.
    let until = unix_now() / 5 * 5;
    let from = until - 300;
    let (status, series) = get(&format!("{api}/series/dc1/a?from={from}&until={until}&cf=AVERAGE"));
    assert_eq!(status, 200, "{series}");
    let fetched = rrdtool(&[
        "fetch",
        base.join("output/dc1/a/main.rrd").to_str().unwrap(),
        "AVERAGE",
        "-s",
        &from.to_string(),
        "-e",
        &until.to_string(),
    ]);
    assert_same_as_rrdtool(&series, &fetched);

    for (part, key) in [("status", "queue"), ("queues", "incoming"), ("nodes", "")] {
        let (status, value) = get(&format!("{api}/{part}"));
        assert_eq!(status, 200, "{part}: {value}");
        if !key.is_empty() {
            assert!(value.get(key).is_some(), "{part}: {value}");
        }
    }
    let (status, sinks) = get(&format!("{api}/sinks"));
    assert_eq!((status, sinks.as_array().map(Vec::len)), (200, Some(0)));

    // DELETE removes the file; the daemon archives the output as for any removed order.
    let (status, removed) = with_token(WRITE, &["-X", "DELETE", &format!("{api}/orders/dc3/new")]);
    assert_eq!(status, 200, "{removed}");
    assert!(!base.join("orders/dc3/new").exists());
    wait_for("the removed order archived", LIMIT, Some(&daemon), || {
        base.join("archive/dc3/new/last_result").exists()
    });
    let (_, archive) = get(&format!("{api}/archive"));
    assert_eq!(archive["total"], 1, "{archive}");
    assert_eq!(archive["entries"][0]["id"], "dc3/new");
    assert_eq!(archive["entries"][0]["has_last_result"], true);
    let (status, _) = with_token(WRITE, &["-X", "DELETE", &format!("{api}/orders/dc3/new")]);
    assert_eq!(status, 404);

    // Hostile writes: refused with the reason, nothing written, the daemon measuring on.
    let before = user_files(base.path());
    let measured = base.result_time("dc1/a").unwrap();
    let (status, _) = curl(&["-X", "PUT", "--data-binary", &order, &format!("{api}/orders/x")]);
    assert_eq!(status, 401, "a write without a token");
    let (status, refused) = put(READ, "x", &order);
    assert_eq!(status, 403, "{refused}");
    let (status, refused) = put("not-a-token-at-all-0000", "x", &order);
    assert_eq!(status, 401, "{refused}");
    let (status, refused) = put(WRITE, "x", "step: [unclosed\n");
    assert_eq!(status, 422, "{refused}");
    assert!(
        refused["error"].as_str().unwrap().contains("would not measure"),
        "{refused}"
    );
    let (status, refused) = put(WRITE, "x", &"a".repeat(5000));
    assert_eq!(status, 413, "{refused}");
    for id in [
        "..%2F..%2Fetc%2Fcron.d%2Fx",
        "%2e%2e/%2e%2e/x",
        "%2Ftmp%2Fx",
        "a/..%2F..%2F..%2Fx",
        ".hidden",
        "a%00b",
    ] {
        let (status, refused) = put(WRITE, id, &order);
        assert_eq!(status, 400, "{id}: {refused}");
    }
    let (status, _) = curl(&[
        "--path-as-is",
        "-X",
        "PUT",
        "-H",
        &format!("Authorization: Bearer {WRITE}"),
        "--data-binary",
        &order,
        &format!("{api}/orders/../../x"),
    ]);
    assert_eq!(status, 400);
    assert_eq!(user_files(base.path()), before, "a refused write left something behind");
    for (url, status) in [
        (format!("{api}/orders?state=dead"), 400),
        (format!("{api}/series/dc1/a?cf=median"), 400),
        (format!("{api}/series/dc1/a?from=now&until=-1h"), 400),
        (format!("{api}/series/dc1/a?from=0&until=4000000000&resolution=1"), 400),
        (format!("{api}/series/nothing"), 404),
        (format!("{api}/orders/nothing"), 404),
        (format!("{api}/what"), 404),
    ] {
        let (got, body) = get(&url);
        assert_eq!(got, status, "{url}: {body}");
        assert!(body["error"].as_str().is_some_and(|e| !e.is_empty()), "{url}: {body}");
    }
    wait_for("the daemon measuring on", LIMIT, Some(&daemon), || {
        base.result_time("dc1/a").is_some_and(|t| t > measured)
    });
}

/// Compares the API's series with `rrdtool fetch`'s text output of the same query.
fn assert_same_as_rrdtool(series: &Value, fetched: &str) {
    let mut lines = fetched.lines().filter(|l| !l.trim().is_empty());
    let names: Vec<&str> = lines.next().unwrap().split_whitespace().collect();
    let sources: Vec<&str> = series["sources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert_eq!(sources, names);
    let rows = series["rows"].as_array().unwrap();
    let expected: Vec<(i64, Vec<Option<f64>>)> = lines
        .map(|line| {
            let (time, values) = line.split_once(':').unwrap();
            let values = values
                .split_whitespace()
                .map(|v| v.parse::<f64>().ok().filter(|v| v.is_finite()))
                .collect();
            (time.trim().parse().unwrap(), values)
        })
        .collect();
    assert_eq!(rows.len(), expected.len(), "{series}\n{fetched}");
    assert!(!rows.is_empty());
    for (row, (time, values)) in rows.iter().zip(&expected) {
        assert_eq!(row["time"].as_i64(), Some(*time));
        let got: Vec<Option<f64>> = row["values"].as_array().unwrap().iter().map(Value::as_f64).collect();
        for (g, e) in got.iter().zip(values) {
            match (g, e) {
                (Some(g), Some(e)) => assert!((g - e).abs() <= e.abs() * 1e-9, "{time}: {g} vs {e}"),
                (None, None) => {}
                _ => panic!("{time}: {got:?} vs {values:?}"),
            }
        }
    }
}

/// An RRD made by the real rrdtool with known values: step 60, two AVERAGE archives (1 × 60 s
/// for an hour, 10 × 60 s for a day) and a MAX one.
fn known_rrd(base: &Base, id: &str) -> i64 {
    let path = base.join(&format!("output/{id}/main.rrd"));
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    let start = (unix_now() - 7200) / 600 * 600;
    let file = path.to_str().unwrap();
    rrdtool(&[
        "create",
        file,
        "--start",
        &start.to_string(),
        "--step",
        "60",
        "DS:loss:GAUGE:120:0:3",
        "DS:median:GAUGE:120:0:180",
        "RRA:AVERAGE:0.5:1:60",
        "RRA:AVERAGE:0.5:10:144",
        "RRA:MAX:0.5:10:144",
    ]);
    for i in 1..=110i64 {
        let value = if i % 7 == 0 {
            "U".to_string()
        } else {
            format!("{}", i as f64 / 1000.0)
        };
        rrdtool(&["update", file, &format!("{}:{}:{value}", start + i * 60, i % 3)]);
    }
    start
}

#[test]
fn serve_alone_answers_rrd_series_as_rrdtool_fetch_chooses_them_over_tls_and_a_unix_socket() {
    let base = Base::new();
    let start = known_rrd(&base, "lab/x");
    let pki = tempfile::tempdir().unwrap();
    ca(pki.path(), "api");
    let (cert, key) = signed(pki.path(), "api", "server", "subjectAltName=IP:127.0.0.1\n");
    let port = free_tcp_port();
    let socket = base.join("api.sock");
    base.write_config(&format!(
        "api:\n  listen: [\"127.0.0.1:{port}\", \"unix:{}\"]\n  tls: {{cert: {}, key: {}}}\n  anonymous-read: false\n  tokens:\n    {READ}: read\n",
        socket.display(), cert.display(), key.display()
    ));
    let daemon = base.spawn(&["--log-level", "info"], "serve");
    wait_for("serve listening", LIMIT, Some(&daemon), || {
        daemon.log_text().contains("api listening")
    });
    let ca_file = pki.path().join("api-ca.pem");
    let url = format!("https://127.0.0.1:{port}/api/v1");
    let cacert = ca_file.to_str().unwrap();

    // Reads need a token here; plain HTTP on the TLS port gets nothing.
    let (status, refused) = curl(&["--cacert", cacert, &format!("{url}/health")]);
    assert_eq!(status, 401, "{refused}");
    let (status, _) = curl(&[&format!("http://127.0.0.1:{port}/api/v1/health")]);
    assert_ne!(status, 200);
    let (status, health) = with_token(READ, &["--cacert", cacert, &format!("{url}/health")]);
    assert_eq!((status, health["status"].as_str()), (200, Some("ok")));

    // The finest archive for the last hour, the 10-minute one for longer, MAX as asked; the
    // values rrdtool fetch prints, unknowns as null.
    let file = base.join("output/lab/x/main.rrd");
    let until = start + 110 * 60;
    for (from, cf, resolution) in [
        (until - 1800, "AVERAGE", None),
        (start, "AVERAGE", Some(600)),
        (start, "MAX", Some(600)),
        (until - 1800, "AVERAGE", Some(600)),
    ] {
        let mut query = format!("from={from}&until={until}&cf={cf}");
        let mut args = vec![
            "fetch".to_string(),
            file.display().to_string(),
            cf.into(),
            "-s".into(),
            from.to_string(),
            "-e".into(),
            until.to_string(),
        ];
        if let Some(r) = resolution {
            query.push_str(&format!("&resolution={r}"));
            args.extend(["-r".into(), r.to_string()]);
        }
        let (status, series) = with_token(READ, &["--cacert", cacert, &format!("{url}/series/lab/x?{query}")]);
        assert_eq!(status, 200, "{query}: {series}");
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        assert_same_as_rrdtool(&series, &rrdtool(&args));
        let rows = series["rows"].as_array().unwrap();
        assert!(
            rows.iter().any(|r| r["values"][1].is_null()),
            "{query}: unknowns stay null"
        );
    }

    // The same over the Unix socket (no TLS there).
    let (status, list) = with_token(
        READ,
        &[
            "--unix-socket",
            socket.to_str().unwrap(),
            "http://localhost/api/v1/orders",
        ],
    );
    assert_eq!((status, &list["total"]), (200, &Value::from(0)));
    let (status, _) = with_token(
        READ,
        &[
            "-X",
            "PUT",
            "--data-binary",
            "x",
            "--unix-socket",
            socket.to_str().unwrap(),
            "http://localhost/api/v1/orders/a",
        ],
    );
    assert_eq!(status, 403, "a read token cannot write");
    assert!(!base.join("orders/a").exists());

    assert_eq!(daemon.terminate(LIMIT).and_then(|s| s.code()), Some(0));
    assert!(!socket.exists(), "the socket is removed at stop");
}

#[test]
fn slow_clients_and_too_many_connections_are_cut_off_and_the_server_answers_on() {
    let base = Base::new();
    let port = free_tcp_port();
    base.write_config(&format!(
        "api:\n  listen: [\"127.0.0.1:{port}\"]\n  max-connections: 2\n  header-timeout: 0.5\n"
    ));
    let daemon = base.spawn(&["--log-level", "info"], "serve");
    wait_for("serve listening", LIMIT, Some(&daemon), || {
        daemon.log_text().contains("api listening")
    });
    let address = format!("127.0.0.1:{port}");

    // A client that sends half a head and stops is disconnected after header-timeout: the read
    // ends (EOF or an answer), it does not run into the 20 s guard.
    let mut slow = std::net::TcpStream::connect(&address).unwrap();
    slow.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    slow.write_all(b"GET /api/v1/health HTTP/1.1\r\nHost: x\r\n").unwrap();
    let mut buffer = Vec::new();
    let read = slow.read_to_end(&mut buffer);
    assert!(read.is_ok(), "the slow client was not cut off: {read:?}");
    let answer = String::from_utf8_lossy(&buffer);
    assert!(answer.is_empty() || answer.starts_with("HTTP/1.1 408"), "{answer}");

    // Two connections held open; a third is answered 503 at once and closed.
    let held: Vec<_> = (0..2)
        .map(|_| {
            let mut c = std::net::TcpStream::connect(&address).unwrap();
            c.write_all(b"GET /api/v1/health HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
            let mut first = [0u8; 12];
            c.read_exact(&mut first).unwrap();
            assert_eq!(&first, b"HTTP/1.1 200");
            c
        })
        .collect();
    let (status, _) = curl(&[&format!("http://{address}/api/v1/health")]);
    assert_eq!(status, 503);
    drop(held);
    wait_for("a connection free again", LIMIT, Some(&daemon), || {
        curl(&[&format!("http://{address}/api/v1/health")]).0 == 200
    });
    // Methods and endpoints the API does not serve.
    let (status, body) = curl(&["-X", "POST", &format!("http://{address}/api/v1/orders")]);
    assert_eq!(status, 405, "{body}");
    let (status, _) = curl(&[&format!("http://{address}/../../etc/passwd"), "--path-as-is"]);
    assert_eq!(status, 404);
    assert_eq!(daemon.terminate(LIMIT).and_then(|s| s.code()), Some(0));
}
