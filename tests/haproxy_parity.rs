//! Parity with haproxystats 0.5.1: for the real snapshot 1795431755 (default options, host
//! `vm`), spoolmon sends exactly the paths 0.5.1 sent, with numerically equal values. Only the
//! self-metrics' timings (`WallClockTime*`, `TotalWallClockTime`) may differ.

#[path = "data/haproxy/reference.rs"]
mod reference;

use spoolmon::process::handoff::SinkBatch;
use spoolmon::process::haproxy::{aggregate, HaproxyOptions};
use spoolmon::sink::graphite::GraphiteEncoder;
use spoolmon::sink::Encoder;
use std::collections::BTreeMap;

/// Path → (value, time) of Graphite plaintext lines; a repeated path is a failure.
fn parse_lines(text: &str) -> BTreeMap<String, (f64, i64)> {
    let mut lines = BTreeMap::new();
    for line in text.lines() {
        let fields: Vec<&str> = line.split(' ').collect();
        assert_eq!(fields.len(), 3, "not a Graphite line: {line:?}");
        let value = fields[1].parse().unwrap_or_else(|_| panic!("bad value in {line:?}"));
        let time = fields[2].parse().unwrap_or_else(|_| panic!("bad time in {line:?}"));
        assert!(
            lines.insert(fields[0].to_owned(), (value, time)).is_none(),
            "sent twice: {line:?}"
        );
    }
    lines
}

fn is_timing(path: &str) -> bool {
    path.contains(".haproxystats.") && path.contains("WallClockTime")
}

/// Equal within float rounding (pandas and polars may sum in a different order).
fn same_value(a: f64, b: f64) -> bool {
    a == b || (a - b).abs() <= 1e-9 * a.abs().max(b.abs())
}

/// Readable differences, at most `limit` per kind.
fn differences(
    ours: &BTreeMap<String, (f64, i64)>,
    golden: &BTreeMap<String, (f64, i64)>,
    limit: usize,
) -> Vec<String> {
    let missing = golden
        .keys()
        .filter(|p| !ours.contains_key(*p))
        .map(|p| format!("missing: {p}"));
    let extra = ours
        .keys()
        .filter(|p| !golden.contains_key(*p))
        .map(|p| format!("extra:   {p}"));
    let values = golden.iter().filter_map(|(path, (value, time))| {
        let (our_value, our_time) = ours.get(path)?;
        let value_differs = !is_timing(path) && !same_value(*our_value, *value);
        (value_differs || our_time != time)
            .then(|| format!("differs: {path}: ours {our_value} {our_time}, haproxystats {value} {time}"))
    });
    missing
        .take(limit)
        .chain(extra.take(limit))
        .chain(values.take(limit))
        .collect()
}

#[test]
fn reference_snapshot_matches_haproxystats_0_5_1_line_for_line() {
    let temp = tempfile::tempdir().unwrap();
    let dir = reference::unpack_snapshot(temp.path());
    let options = HaproxyOptions::default();
    options.validate().unwrap();
    let aggregate = aggregate(&dir, reference::TIME, &options).unwrap();
    assert_eq!(
        aggregate.processes,
        ["haproxy-1.sock", "haproxy-2.sock", "haproxy-3.sock", "haproxy-4.sock"]
    );

    let mut encoded = Vec::new();
    let batch = SinkBatch::round(&[], &aggregate.metrics);
    let count = GraphiteEncoder::with_prefix("loadbalancers", "loadbalancers.vm.").encode(batch, &mut encoded);
    let ours = parse_lines(std::str::from_utf8(&encoded).unwrap());
    let golden = parse_lines(&reference::golden_lines());
    assert_eq!(golden.len(), 78_455);

    let diff = differences(&ours, &golden, 20);
    assert!(
        diff.is_empty(),
        "{} differences from haproxystats 0.5.1 (first ones):\n{}",
        diff.len(),
        diff.join("\n")
    );
    assert_eq!(count, golden.len());
}

#[test]
fn the_comparison_itself_catches_missing_extra_and_changed_lines() {
    let golden = parse_lines("a.x 1.0 10\na.y 2 10\nhaproxy.haproxystats.WallClockTimeAllStats 0.9 10\n");
    let ours = parse_lines("a.x 1.0000000001 10\na.z 2 10\nhaproxy.haproxystats.WallClockTimeAllStats 0.001 10\n");
    assert_eq!(differences(&ours, &golden, 5), ["missing: a.y", "extra:   a.z"]);
    let changed = parse_lines("a.x 1.1 10\na.y 2 11\nhaproxy.haproxystats.WallClockTimeAllStats 0.001 10\n");
    assert_eq!(differences(&changed, &golden, 5).len(), 2);
}
