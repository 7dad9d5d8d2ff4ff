use super::*;
use crate::shared::measurement::{Metric, OrderId};

fn options(yaml: &str) -> KafkaOptions {
    yaml_serde::from_str(yaml).unwrap()
}

fn lines(out: &[u8]) -> Vec<(String, String, String)> {
    String::from_utf8(out.to_vec())
        .unwrap()
        .lines()
        .map(|line| {
            let mut parts = line.splitn(3, '\t');
            (
                parts.next().unwrap().to_string(),
                parts.next().unwrap().to_string(),
                parts.next().unwrap().to_string(),
            )
        })
        .collect()
}

fn result() -> OrderResult {
    OrderResult::builder(OrderId::new("dc1/web-1").unwrap(), 1_800_000_000)
        .rtts([Some(0.001), None, Some(0.003)])
        .build()
}

#[test]
fn a_result_is_one_json_message_keyed_by_its_order_with_every_documented_field() {
    let encoder = KafkaEncoder::new(&options("brokers: [k:9092]"), "lb-01");
    let mut out = Vec::new();
    assert_eq!(encoder.encode_result(&result(), &mut out), 1);
    let first = &lines(&out)[0];
    assert_eq!((first.0.as_str(), first.1.as_str()), ("p", "dc1/web-1"));
    let json: serde_json::Value = serde_json::from_str(&first.2).unwrap();
    assert_eq!(
        json,
        serde_json::json!({
            "type": "ping", "node": "lb-01", "order": "dc1/web-1", "time": 1_800_000_000,
            "updated": 1_800_000_020, "step": 20, "pings": 3, "loss": 1,
            "min": 0.001, "median": 0.003, "max": 0.003, "rtts": [0.001, null, 0.003],
            "failure": null
        })
    );
    // A probe failure: nothing measured, loss unknown (null), the reason given.
    let failed = OrderResult::builder(OrderId::new("dc1/web-1").unwrap(), 1_800_000_020)
        .rtts([None, None, None])
        .failure("no route")
        .build();
    let mut out = Vec::new();
    encoder.encode_result(&failed, &mut out);
    let json: serde_json::Value = serde_json::from_str(&lines(&out)[0].2).unwrap();
    assert_eq!(json["loss"], serde_json::Value::Null);
    assert_eq!(json["failure"], "no route");
}

#[test]
fn metrics_go_to_their_kinds_topic_keyed_by_path() {
    let encoder = KafkaEncoder::new(&options("brokers: [k:9092]"), "lb-01");
    let metric = Metric {
        path: "haproxy.frontend.www.scur".into(),
        value: 12.0,
        time: 1_800_000_000,
    };
    let mut out = Vec::new();
    encoder.encode_metric_of(MetricKind::Haproxy, (&metric).into(), &mut out);
    encoder.encode_metric_of(MetricKind::SelfMetrics, (&metric).into(), &mut out);
    let encoded = lines(&out);
    assert_eq!(encoded[0].0, "h");
    assert_eq!(encoded[1].0, "s");
    assert_eq!(encoded[0].1, "haproxy.frontend.www.scur");
    let json: serde_json::Value = serde_json::from_str(&encoded[1].2).unwrap();
    assert_eq!(
        json,
        serde_json::json!({"type": "self", "node": "lb-01", "path": "haproxy.frontend.www.scur",
                           "time": 1_800_000_000, "value": 12.0})
    );
    // Not a number, or a path with a tab: nothing.
    let nan = Metric {
        value: f64::NAN,
        ..metric.clone()
    };
    let tab = Metric {
        path: "a\tb".into(),
        ..metric
    };
    let mut out = Vec::new();
    assert_eq!(encoder.encode_metric((&nan).into(), &mut out), 0);
    assert_eq!(encoder.encode_metric((&tab).into(), &mut out), 0);
    assert!(out.is_empty());
}

#[test]
fn influx_and_graphite_formats_are_one_message_per_line_and_keys_follow_the_choice() {
    // Line protocol for orders with a `telegraf:` section, as the influxdb sink writes them.
    let influx = KafkaEncoder::new(&options("brokers: [k:9092]\nformat: influx\nkey: node"), "lb-01");
    let mut out = Vec::new();
    assert_eq!(influx.encode_result(&result(), &mut out), 0, "no telegraf: section");
    let mut telegraf = result();
    telegraf.telegraf = Some(crate::shared::measurement::TelegrafMeta {
        measurement_name: "ping".into(),
        tags: BTreeMap::from([("url".to_string(), "web-1".to_string())]),
    });
    let n = influx.encode_result(&telegraf, &mut out);
    let lines_influx = lines(&out);
    assert_eq!(n, lines_influx.len());
    assert!(n >= 1);
    assert!(lines_influx.iter().all(|(k, key, _)| k == "p" && key == "lb-01"));
    assert!(lines_influx[0].2.contains("node=lb-01"), "{:?}", lines_influx[0]);

    let graphite = KafkaEncoder::new(&options("brokers: [k:9092]\nformat: graphite\nkey: none"), "lb.01");
    let mut out = Vec::new();
    let n = graphite.encode_result(&result(), &mut out);
    let lines_graphite = lines(&out);
    assert_eq!(n, lines_graphite.len());
    assert!(n > 1, "a Graphite line per value");
    for (kind, key, message) in &lines_graphite {
        assert_eq!((kind.as_str(), key.as_str()), ("p", ""));
        assert!(message.starts_with("spoolmon.lb_01."), "{message}");
        assert_eq!(message.split(' ').count(), 3, "{message}");
    }
}

#[test]
fn topics_take_the_node_name_and_bad_options_are_named() {
    let o = options("brokers: [k:9092]\ntopics: {ping: 'ping.{node}'}");
    assert_eq!(o.topic(MessageKind::Ping, "lb-01"), "ping.lb-01");
    assert_eq!(o.topic(MessageKind::SelfMetrics, "lb-01"), "spoolmon.self");
    o.validate().unwrap();
    for (yaml, key) in [
        ("{}", "kafka.brokers"),
        ("brokers: [nohost]", "kafka.brokers"),
        ("brokers: ['k:0']", "kafka.brokers"),
        ("brokers: ['a:1,b:2']", "kafka.brokers"),
        ("brokers: [k:1]\ntopics: {ping: 'a b'}", "kafka.topics.ping"),
        ("brokers: [k:1]\ntopics: {haproxy: ''}", "kafka.topics.haproxy"),
        ("brokers: [k:1]\ntopics: {self: '..'}", "kafka.topics.self"),
        ("brokers: [k:1]\ndelivery-timeout: 0", "kafka.delivery-timeout"),
        ("brokers: [k:1]\nmax-message-bytes: 10", "kafka.max-message-bytes"),
        (
            "brokers: [k:1]\nsasl: {mechanism: GSSAPI, username: u, password: p}",
            "kafka.sasl.mechanism",
        ),
        ("brokers: [k:1]\ntls: {cert: /c.pem}", "kafka.tls"),
        ("brokers: [k:1]\nlibrdkafka: {acks: '1'}", "kafka.librdkafka.acks"),
        ("brokers: [k:1]\nnamespace: 'a b'", "kafka.namespace"),
    ] {
        let error = options(yaml).validate().unwrap_err();
        assert!(error.to_string().contains(key), "{yaml}: {error}");
    }
    let long = format!("brokers: [k:1]\ntopics: {{ping: {}}}", "t".repeat(250));
    assert!(options(&long).validate().is_err());
    assert!(yaml_serde::from_str::<KafkaOptions>("brokers: [k:1]\nformat: avro").is_err());
    assert!(yaml_serde::from_str::<KafkaOptions>("brokers: [k:1]\nbroker: [x]").is_err());
}

#[test]
fn librdkafka_gets_idempotence_acks_all_and_the_security_the_options_say() {
    let o = options(
        "brokers: [a:9092, b:9093]\ncompression: zstd\ndelivery-timeout: 2.5\n\
         tls: {ca: /etc/ca.pem}\nsasl: {mechanism: SCRAM-SHA-256, username: u, password: p}\n\
         librdkafka: {linger.ms: '20'}",
    );
    o.validate().unwrap();
    let config = transport::client_config(&o, "lb-01");
    for (key, value) in [
        ("bootstrap.servers", "a:9092,b:9093"),
        ("acks", "all"),
        ("enable.idempotence", "true"),
        ("compression.type", "zstd"),
        ("message.timeout.ms", "2500"),
        ("security.protocol", "sasl_ssl"),
        ("ssl.ca.location", "/etc/ca.pem"),
        ("sasl.mechanisms", "SCRAM-SHA-256"),
        ("linger.ms", "20"),
        ("client.id", "spoolmon-lb-01"),
    ] {
        assert_eq!(config.get(key), Some(value), "{key}");
    }
}
