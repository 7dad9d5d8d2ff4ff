//! SmokePing graphs through the real binary and librrd's graph: `spoolmon graph` and the API's
//! `/graph/<id>.png|.svg` on an RRD made by the real `rrdtool` with 20 pings per round. The
//! SVG shows SmokePing's construction (ten grey smoke bands from light outside to dark inside,
//! the median in the loss colours); the PNG is a real PNG of the asked size or larger (the
//! legend); graphs drawn in parallel over HTTP all come back (librrd's graph serialised);
//! thumbnails (`legend=0`, drawn by spoolmon itself) have the size asked, SmokePing's greys and
//! loss colours, and decode in Chromium; wrong
//! ids, windows, sizes and file names are refused with the documented exit codes and statuses.

mod common;

use common::servers::free_tcp_port;
use common::*;
use std::process::Command;
use std::time::Duration;

const LIMIT: Duration = Duration::from_secs(60);

/// A SmokePing RRD of `output/<id>/main.rrd`: 20 pings, step 20, two hours to now, every
/// 40th round losing some pings.
fn smokeping_rrd(base: &Base, id: &str) {
    let path = base.join(&format!("output/{id}/main.rrd"));
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let file = path.to_str().unwrap();
    let start = unix_now() - 7200;
    let mut args = vec![
        "create".to_string(),
        file.to_string(),
        "--start".into(),
        (start - 20).to_string(),
        "--step".into(),
        "20".into(),
        "DS:loss:GAUGE:40:0:20".into(),
        "DS:median:GAUGE:40:0:180".into(),
    ];
    args.extend((1..=20).map(|i| format!("DS:ping{i}:GAUGE:40:0:180")));
    args.extend(
        [
            "RRA:AVERAGE:0.5:1:1000",
            "RRA:AVERAGE:0.5:15:1000",
            "RRA:MIN:0.5:15:1000",
            "RRA:MAX:0.5:15:1000",
        ]
        .map(String::from),
    );
    rrdtool(&args.iter().map(String::as_str).collect::<Vec<_>>());
    let updates: Vec<String> = (0..360)
        .map(|i: i64| {
            let lost = if i % 40 == 39 { (i / 40 % 5 * 4) as usize } else { 0 };
            let rtts: Vec<String> = (0..20)
                .map(|k| {
                    if k < 20 - lost {
                        format!("{:.6}", 0.010 + 0.0002 * (k * k) as f64 + 0.00001 * (i % 17) as f64)
                    } else {
                        "U".into()
                    }
                })
                .collect();
            let median = if lost == 20 {
                "U".to_string()
            } else {
                rtts[(20 - lost) / 2].clone()
            };
            format!("{}:{lost}:{median}:{}", start + i * 20, rtts.join(":"))
        })
        .collect();
    for chunk in updates.chunks(60) {
        let mut args = vec!["update", file];
        args.extend(chunk.iter().map(String::as_str));
        rrdtool(&args);
    }
}

fn spoolmon(base: &Base, args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_spoolmon"))
        .arg("graph")
        .args(args)
        .arg("--base-dir")
        .arg(base.path())
        .output()
        .unwrap()
}

/// (width, height) from a PNG's IHDR, after checking the signature.
fn png_size(bytes: &[u8]) -> (u32, u32) {
    assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n", "not a PNG");
    assert_eq!(&bytes[12..16], b"IHDR");
    let be = |b: &[u8]| u32::from_be_bytes([b[0], b[1], b[2], b[3]]);
    (be(&bytes[16..20]), be(&bytes[20..24]))
}

/// The distinct grey fills of an SVG (cairo writes `fill:rgb(x%,x%,x%)`), as 0-255 levels.
fn grey_fills(svg: &str) -> Vec<u32> {
    let mut levels: Vec<u32> = svg
        .split("fill:rgb(")
        .skip(1)
        .filter_map(|rest| {
            let channels: Vec<f64> = rest
                .split(')')
                .next()?
                .split(',')
                .map(|c| c.trim_end_matches('%').parse::<f64>().ok())
                .collect::<Option<_>>()?;
            (channels.len() == 3 && channels[0] == channels[1] && channels[1] == channels[2])
                .then(|| (channels[0] * 2.55).round() as u32)
        })
        .filter(|level| (1..255).contains(level))
        .collect();
    levels.sort_unstable();
    levels.dedup();
    levels
}

#[test]
fn graphs_are_drawn_in_smokepings_language_by_the_command_and_the_api() {
    let base = Base::new();
    smokeping_rrd(&base, "dc1/web-1");

    // The command: SVG by the extension, PNG of at least the graph area asked for.
    let svg = base.join("web-1.svg");
    let out = spoolmon(&base, &["dc1/web-1", "--range", "2h", "-o", svg.to_str().unwrap()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = std::fs::read_to_string(&svg).unwrap();
    assert!(text.starts_with("<?xml"), "{}", &text[..100.min(text.len())]);
    // Ten smoke bands for 20 pings, SmokePing's greys: int(190/10 × (10 − i)) + 50.
    let expected: Vec<u32> = (1..=10).map(|i| 190 / 10 * (10 - i) + 50).rev().collect();
    let fills = grey_fills(&text);
    for level in &expected {
        assert!(fills.contains(level), "grey {level} missing from {fills:?}");
    }
    // The median in SmokePing's green for rounds without loss.
    assert!(text.contains("stroke:rgb(14.901961%,100%,0%)"), "no green median line");
    let png = base.join("web-1.png");
    let out = spoolmon(
        &base,
        &[
            "dc1/web-1",
            "--range",
            "1h",
            "--width",
            "400",
            "--height",
            "150",
            "-o",
            png.to_str().unwrap(),
        ],
    );
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let (w, h) = png_size(&std::fs::read(&png).unwrap());
    assert!(w > 400 && h > 150 && w < 600 && h < 400, "{w}x{h}");
    let out = spoolmon(&base, &["dc1/web-1", "-o", "-"]);
    assert!(out.status.success());
    png_size(&out.stdout);

    // Wrong input: exit 1 for an order without RRD, 2 for the rest; nothing written.
    let out = spoolmon(&base, &["dc1/none", "-o", base.join("x.png").to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(!base.join("x.png").exists());
    for args in [
        vec!["../../etc/passwd", "-o", "x.png"],
        vec!["dc1/web-1", "-o", "x.gif"],
        vec!["dc1/web-1", "--width", "0", "-o", "x.png"],
        vec!["dc1/web-1", "--from", "yesterday", "-o", "x.png"],
        vec!["dc1/web-1", "--range", "forever", "-o", "x.png"],
    ] {
        let out = spoolmon(&base, &args);
        assert_eq!(
            out.status.code(),
            Some(2),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(!String::from_utf8_lossy(&out.stderr).is_empty());
    }

    // The API: the same graphs, many at once (librrd's graph is serialised, nothing breaks).
    let port = free_tcp_port();
    base.write_config(&format!("api:\n  listen: [\"127.0.0.1:{port}\"]\n"));
    let serve = base.spawn(&["--log-level", "info"], "serve");
    wait_for("serve listening", LIMIT, Some(&serve), || {
        serve.log_text().contains("api listening")
    });
    let url = format!("http://127.0.0.1:{port}/graph");
    let children: Vec<_> = ["3h", "1d", "1w", "1y", "3h", "1d", "1w", "1y"]
        .iter()
        .enumerate()
        .map(|(i, range)| {
            let file = base.join(&format!("api-{i}.png"));
            let child = Command::new("curl")
                .args([
                    "-sS",
                    "--max-time",
                    "30",
                    "-o",
                    file.to_str().unwrap(),
                    "-w",
                    "%{http_code} %{content_type}",
                ])
                .arg(format!("{url}/dc1/web-1.png?range={range}"))
                .stdout(std::process::Stdio::piped())
                .spawn()
                .unwrap();
            (file, child)
        })
        .collect();
    for (file, child) in children {
        let out = child.wait_with_output().unwrap();
        assert_eq!(String::from_utf8_lossy(&out.stdout), "200 image/png");
        let (w, h) = png_size(&std::fs::read(&file).unwrap());
        assert!(w > 600 && h > 200, "{w}x{h}");
    }
    // Thumbnails (the graph area alone, drawn without librrd's graph): exactly the size asked,
    // SmokePing's two thumbnail greys for 20 pings (221 and 126) and the median in the loss
    // colours, lossy rounds included; decoded by a real browser.
    let thumb = format!("{url}/dc1/web-1.png?range=2h&width=150&height=30&legend=0");
    let thumbs: Vec<_> = (0..8)
        .map(|i| {
            let file = base.join(&format!("thumb-{i}.png"));
            let child = Command::new("curl")
                .args(["-sS", "--max-time", "30", "-o", file.to_str().unwrap()])
                .args(["-w", "%{http_code} %{content_type}", &thumb])
                .stdout(std::process::Stdio::piped())
                .spawn()
                .unwrap();
            (file, child)
        })
        .collect();
    for (file, child) in thumbs {
        let out = child.wait_with_output().unwrap();
        assert_eq!(String::from_utf8_lossy(&out.stdout), "200 image/png");
        assert_eq!(png_size(&std::fs::read(&file).unwrap()), (150, 30));
    }
    let svg_thumb = Command::new("curl")
        .args(["-sS", "--max-time", "30"])
        .arg(format!("{url}/dc1/web-1.svg?range=2h&width=150&height=30&legend=0"))
        .output()
        .unwrap();
    let svg_thumb = String::from_utf8_lossy(&svg_thumb.stdout);
    assert!(svg_thumb.starts_with("<svg") && svg_thumb.contains("width=\"150\" height=\"30\""));
    for fill in ["#dddddd", "#7e7e7e", "#26ff00"] {
        assert!(
            svg_thumb.contains(&format!("fill=\"{fill}\"")),
            "{fill} missing: {svg_thumb}"
        );
    }
    assert!(
        ["#00b8ff", "#0059ff", "#5e00ff", "#7e00ff", "#dd00ff", "#ff0000"]
            .iter()
            .any(|lossy| svg_thumb.contains(lossy)),
        "no lossy round coloured: {svg_thumb}"
    );
    let page = base.join("thumb.html");
    std::fs::write(
        &page,
        format!(
            "<html><body><img id=t src=\"{thumb}\"><script>\
             const t = document.getElementById('t');\
             t.onload = () => document.body.setAttribute('data-size', t.naturalWidth + 'x' + t.naturalHeight);\
             t.onerror = () => document.body.setAttribute('data-size', 'broken');\
             </script></body></html>"
        ),
    )
    .unwrap();
    let out = Command::new("chromium")
        .args(["--headless=new", "--no-sandbox", "--disable-gpu", "--dump-dom"])
        .arg("--virtual-time-budget=10000")
        .arg(format!("file://{}", page.display()))
        .output()
        .expect("chromium (make test-deps installs it)");
    let dom = String::from_utf8_lossy(&out.stdout);
    assert!(
        dom.contains("data-size=\"150x30\""),
        "the browser did not decode it: {dom}"
    );

    let status = |path: &str| {
        let out = Command::new("curl")
            .args(["-sS", "--max-time", "30", "-o", "/dev/null", "-w", "%{http_code}"])
            .arg(format!("http://127.0.0.1:{port}{path}"))
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    assert_eq!(status("/graph/dc1/web-1.svg?range=1d"), "200");
    assert_eq!(status("/graph/dc1/none.png"), "404");
    assert_eq!(status("/graph/..%2F..%2Fetc%2Fpasswd.png"), "400");
    assert_eq!(status("/graph/dc1/web-1.png?width=100000"), "400");
    assert_eq!(status("/graph/dc1/web-1.png?from=-1h&until=-2h"), "400");
    assert_eq!(status("/graph/dc1/web-1.bmp"), "404");
}
