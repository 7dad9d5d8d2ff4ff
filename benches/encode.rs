//! Cost of encoding alone: Graphite and line-protocol lines per second on one core, for HAProxy
//! style metrics and ping results, into a reused buffer as the outbox does. The outbox targets
//! 1 million lines/s/core end to end, so encoding must stay well under 1 µs per line.
//!
//! Under `cargo test` (no `--bench` argument) it encodes a few thousand lines only, as a smoke
//! test of the bench itself; it asserts line counts, never times.
//!
//! The routed rows encode the same metrics through a sink's route (`takes`/`metrics` globs):
//! without globs they must cost what the plain encoding does; with globs, one match per metric.
//!
//! usage: cargo bench --bench encode -- [lines]

use spoolmon::process::handoff::SinkBatch;
use spoolmon::shared::measurement::Metric;
use spoolmon::shared::measurement::{OrderId, OrderResult, TelegrafMeta};
use spoolmon::sink::graphite::GraphiteEncoder;
use spoolmon::sink::influx::{InfluxEncoder, Precision};
use spoolmon::sink::route::{Kind, MetricGlobs, OrderGlobs, Route, RouteKeys};
use spoolmon::sink::Encoder;
use std::collections::BTreeMap;
use std::time::Instant;

/// Metrics per batch: one HAProxy snapshot's worth is ~78,000; a tenth keeps the buffer small.
const BATCH: usize = 8_000;

fn metrics(count: usize) -> Vec<Metric> {
    (0..count)
        .map(|i| Metric {
            path: format!("haproxy.backend.backend_{}.server.server_{}.scur", i / 40, i % 40),
            value: if i % 3 == 0 { i as f64 } else { i as f64 / 7.0 },
            time: 1_795_431_755,
        })
        .collect()
}

fn results(count: usize) -> Vec<OrderResult> {
    (0..count)
        .map(|i| {
            // Step 20, Smokeping, collected one step later, 3 pings (the builder's defaults).
            OrderResult::builder(
                OrderId::new(format!("app{}/target-{i}", i % 10)).unwrap(),
                1_795_431_740,
            )
            .rtts([Some(1.25e-4 + i as f64 * 1e-9), None, Some(2.5e-4)])
            .telegraf(TelegrafMeta {
                measurement_name: "ping".into(),
                tags: BTreeMap::from([("target".into(), format!("target-{i}")), ("app".into(), "a".into())]),
            })
            .build()
        })
        .collect()
}

/// Encodes `batch` `rounds` times into a reused buffer; prints and returns lines per round.
fn measure(name: &str, encoder: &dyn Encoder, batch: SinkBatch<'_>, rounds: usize) -> usize {
    measure_routed(name, encoder, batch, None, rounds)
}

/// [`measure`] through `route` (`None`: `Encoder::encode`, everything).
fn measure_routed(
    name: &str,
    encoder: &dyn Encoder,
    batch: SinkBatch<'_>,
    route: Option<&Route>,
    rounds: usize,
) -> usize {
    let mut out = Vec::with_capacity(1 << 20);
    let started = Instant::now();
    let mut lines = 0;
    for _ in 0..rounds {
        out.clear();
        lines += match route {
            // What the outbox sink does for a route with globs (`sink::queued`).
            Some(route) => {
                let results: usize = route.results(batch).map(|r| encoder.encode_result(r, &mut out)).sum();
                let metrics: usize = route.metrics(batch).map(|m| encoder.encode_metric(m, &mut out)).sum();
                results + metrics
            }
            None => encoder.encode(batch, &mut out),
        };
    }
    let elapsed = started.elapsed().as_secs_f64();
    println!(
        "{name:<28} {lines:>9} lines  {:>7.1} ns/line  {:>6.2} M lines/s  {:>5} bytes/line",
        elapsed * 1e9 / lines as f64,
        lines as f64 / elapsed / 1e6,
        out.len() * rounds / lines.max(1)
    );
    lines / rounds
}

fn main() {
    let benchmarking = std::env::args().any(|a| a == "--bench");
    let args: Vec<String> = std::env::args().skip(1).filter(|a| a != "--bench").collect();
    let default_lines = if benchmarking { 4_000_000 } else { 4_000 };
    let lines: usize = args.first().and_then(|a| a.parse().ok()).unwrap_or(default_lines);
    let rounds = (lines / BATCH).max(1);
    let metrics = metrics(BATCH.min(lines));
    let results = results((BATCH / 4).min(lines));
    let graphite = GraphiteEncoder::with_prefix("loadbalancers", "loadbalancers.lb-01_example_com.");
    let influx = InfluxEncoder::with_tags(&BTreeMap::from([("host".into(), "lb-01".into())]), Precision::Ns);

    let metric_batch = SinkBatch::round(&[], &metrics);
    let result_batch = SinkBatch::round(&results, &[]);
    assert_eq!(
        measure("graphite metrics", &graphite, metric_batch, rounds),
        metrics.len()
    );
    assert_eq!(
        measure("graphite ping results", &graphite, result_batch, rounds),
        results.len() * 4
    );
    assert_eq!(
        measure("line protocol metrics", &influx, metric_batch, rounds),
        metrics.len()
    );
    assert_eq!(
        measure("line protocol ping results", &influx, result_batch, rounds),
        results.len() * 3
    );
    let everything = Route::everything();
    assert_eq!(
        measure_routed(
            "graphite metrics, no globs",
            &graphite,
            metric_batch,
            Some(&everything),
            rounds
        ),
        metrics.len()
    );
    let globs = MetricGlobs {
        include: vec!["haproxy.backend.*.server.**".into()],
        exclude: vec!["**.server_1?.scur".into()],
    };
    let keys = RouteKeys {
        takes: &Kind::ALL,
        orders: &OrderGlobs::default(),
        metrics: &globs,
    };
    let routed = keys.compile().unwrap();
    let kept = metrics
        .iter()
        .filter(|m| !m.path.contains(".server_1") || m.path.ends_with(".server_1.scur"))
        .count();
    assert_eq!(
        measure_routed(
            "graphite metrics, 2 globs",
            &graphite,
            metric_batch,
            Some(&routed),
            rounds
        ),
        kept
    );
}
