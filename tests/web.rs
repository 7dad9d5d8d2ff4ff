//! The web page in a real browser: headless Chromium (Debian's `chromium`) loads each page from
//! a real `spoolmon run` measuring 120 loopback orders with real ICMP, and the tests read the
//! DOM it built: the orders table (paged, filtered by prefix and state, sorted by latency), one
//! order's page (state, last result, four graphs that really load), the status page. Screenshots
//! of each page are written to `target/web-screenshots/` to be looked at. Hostile paths and
//! methods on the page's URLs are refused.

mod common;

use common::servers::free_tcp_port;
use common::*;
use std::process::Command;
use std::time::Duration;

const LIMIT: Duration = Duration::from_secs(120);
const ORDERS: usize = 120;

/// The DOM Chromium has built once the page's script says it is drawn (`data-ready` set).
fn dom(url: &str) -> String {
    let mut last = String::new();
    for budget in ["5000", "15000"] {
        let out = Command::new("chromium")
            .args(["--headless=new", "--no-sandbox", "--disable-gpu", "--dump-dom"])
            .arg(format!("--virtual-time-budget={budget}"))
            .arg(url)
            .output()
            .expect("chromium (make test-deps installs it)");
        last = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        if last.contains("data-ready=\"1\"") {
            return last;
        }
    }
    panic!("{url} was not drawn: {last}");
}

fn screenshot(url: &str, name: &str) {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/web-screenshots");
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join(format!("{name}.png"));
    let _ = std::fs::remove_file(&file);
    let out = Command::new("chromium")
        .args([
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--virtual-time-budget=15000",
            "--window-size=1280,1000",
        ])
        .arg(format!("--screenshot={}", file.display()))
        .arg(url)
        .output()
        .unwrap();
    let bytes = std::fs::read(&file)
        .unwrap_or_else(|_| panic!("no screenshot of {url}: {}", String::from_utf8_lossy(&out.stderr)));
    assert_eq!(&bytes[..4], b"\x89PNG");
}

/// The `data-id`s of the orders table's rows, in order.
fn row_ids(dom: &str) -> Vec<String> {
    dom.split("<tr data-id=\"")
        .skip(1)
        .map(|rest| rest.split('"').next().unwrap().to_string())
        .collect()
}

/// The medians shown, in ms, in row order (`–` for none is left out).
fn medians(dom: &str) -> Vec<f64> {
    dom.split("class=\"num median\">")
        .skip(1)
        .filter_map(|rest| rest.split(" ms<").next()?.parse().ok())
        .collect()
}

#[test]
fn the_pages_draw_the_orders_one_order_and_status_in_a_real_browser() {
    require_root("native ICMP to 127.0.0.0/8");
    let base = Base::new();
    for i in 1..=ORDERS {
        base.write_order(
            &format!("lab/o{i:03}"),
            &ping_order(&format!("127.0.{}.{}", i / 200, i % 200 + 1), 2, 3),
        );
    }
    base.write_order("broken/x", "user: test\nstep: [not a number\n");
    let port = free_tcp_port();
    let daemon = base.start(&format!("rescan-interval: 2\napi:\n  listen: [\"127.0.0.1:{port}\"]\n"));
    wait_for(
        "every order measured twice (RRDs with rows)",
        LIMIT,
        Some(&daemon),
        || {
            (1..=ORDERS).all(|i| base.result_time(&format!("lab/o{i:03}")).is_some())
                && std::fs::metadata(base.join("output/lab/o120/main.rrd")).is_ok()
        },
    );
    let site = format!("http://127.0.0.1:{port}");

    // The orders: the first page of 50, in id order, with their last results and graphs.
    let first = dom(&format!("{site}/?limit=50"));
    let ids = row_ids(&first);
    assert_eq!(ids.len(), 50, "{first}");
    assert_eq!(ids[0], "broken/x");
    assert_eq!(ids[1], "lab/o001");
    assert!(first.contains(&format!("1–50 of {} orders", ORDERS + 1)), "{first}");
    assert!(first.contains("class=\"state-invalid\">invalid<"));
    assert!(
        first.contains("/graph/lab/o001.png?range=3h"),
        "a graph per measured order"
    );
    assert!(
        medians(&first).iter().all(|m| *m > 0.0 && *m < 10.0),
        "loopback medians"
    );
    // The next page, a prefix, a state.
    let second = dom(&format!("{site}/?limit=50&offset=50"));
    assert_eq!(row_ids(&second)[0], "lab/o050");
    let last = dom(&format!("{site}/?limit=50&offset=100"));
    assert_eq!(row_ids(&last).len(), ORDERS + 1 - 100);
    assert!(last.contains("id=\"next\" disabled"), "no page after the last");
    let bare = dom(&format!("{site}/?limit=50&graphs=0"));
    assert_eq!(row_ids(&bare).len(), 50);
    assert!(!bare.contains("/graph/"), "graphs=0: the table alone");
    let filtered = dom(&format!("{site}/?prefix=lab/o11"));
    assert_eq!(row_ids(&filtered).len(), 10, "lab/o110..o119");
    let invalid = dom(&format!("{site}/?state=invalid"));
    assert_eq!(row_ids(&invalid), ["broken/x"]);
    // Sorted by latency: slowest first, across the whole listing (not one page).
    let slowest = dom(&format!("{site}/?sort=median&limit=200"));
    let shown = medians(&slowest);
    assert_eq!(shown.len(), ORDERS);
    assert!(shown.windows(2).all(|w| w[0] >= w[1]), "{shown:?}");
    assert_eq!(row_ids(&slowest).last().unwrap(), "broken/x", "no result sorts last");

    // One order: state, last result, four graphs of different ranges that load as images.
    let order = dom(&format!("{site}/order/lab/o007"));
    assert!(
        order.contains("id=\"order-state\" class=\"state-active\">active<"),
        "{order}"
    );
    assert!(order.contains("loss 0/3"), "{order}");
    for range in ["3h", "1d", "1w", "1y"] {
        assert!(order.contains(&format!("data-range=\"{range}\"")), "{range}");
        let (status, _) = http_status(&format!("{site}/graph/lab/o007.png?range={range}"));
        assert_eq!(status, "200 image/png");
    }
    assert!(order.contains("id=\"history\""), "recent steps");
    let missing = Command::new("chromium")
        .args([
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--virtual-time-budget=5000",
            "--dump-dom",
        ])
        .arg(format!("{site}/order/lab/none"))
        .output()
        .unwrap();
    let missing = String::from_utf8_lossy(&missing.stdout);
    assert!(
        missing.contains("data-ready=\"error\"") && missing.contains("no order"),
        "{missing}"
    );

    // Status: the daemon running, queues, sinks (none here), nodes (none), errors.
    let status = dom(&format!("{site}/status"));
    assert!(status.contains("id=\"daemon\">running (pid"), "{status}");
    for table in ["queues", "sinks", "nodes", "errors"] {
        assert!(status.contains(&format!("<table id=\"{table}\"")), "{table}");
    }

    for (path, name) in [
        ("/", "orders"),
        ("/?sort=median", "orders-by-median"),
        ("/order/lab/o007", "order"),
        ("/status", "status"),
    ] {
        screenshot(&format!("{site}{path}"), name);
    }

    // Hostile: the page's own URLs take no writes, assets are only the three.
    assert_eq!(
        http_status(&format!("{site}/assets/..%2F..%2Fetc%2Fpasswd")).0,
        "404 application/json"
    );
    assert_eq!(
        http_status(&format!("{site}/assets/app.js")).0,
        "200 text/javascript; charset=utf-8"
    );
    let put = Command::new("curl")
        .args([
            "-sS",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "-X",
            "PUT",
            "--data",
            "x",
        ])
        .arg(format!("{site}/status"))
        .output()
        .unwrap();
    assert_ne!(String::from_utf8_lossy(&put.stdout), "200");
    let headers = Command::new("curl")
        .args(["-sS", "-D", "-", "-o", "/dev/null"])
        .arg(format!("{site}/"))
        .output()
        .unwrap();
    let headers = String::from_utf8_lossy(&headers.stdout).to_lowercase();
    assert!(
        headers.contains("content-security-policy: default-src 'self'"),
        "{headers}"
    );
    assert!(base.result_time("lab/o001").is_some());
}

/// `curl` status line: ("<code> <content type>", body length).
fn http_status(url: &str) -> (String, usize) {
    let out = Command::new("curl")
        .args([
            "-sS",
            "--max-time",
            "30",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code} %{content_type} %{size_download}",
        ])
        .arg(url)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (head, size) = text.rsplit_once(' ').unwrap();
    (head.to_string(), size.parse().unwrap())
}
