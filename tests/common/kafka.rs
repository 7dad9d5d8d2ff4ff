//! A real Kafka-protocol broker for tests, and an independent consumer to read it back.
//!
//! The broker is `tansu` (crates.io, a Kafka-compatible broker in Rust; `make test-deps`
//! installs it with `cargo install tansu --locked --features dynostore` under
//! `~/.cache/spoolmon-test/tansu`, or `$TANSU` names the binary), started per test on a free
//! loopback port, killed with SIGKILL when dropped (a test kills it on purpose by dropping it).
//! The consumer is librdkafka's own (rdkafka's `BaseConsumer`), assigned every partition of a
//! topic from the beginning, without a group: what it reads is what the broker stored.
#![allow(dead_code)]

use super::wait_for;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The tansu binary: `$TANSU`, else where `make test-deps` installs it, else `tansu` on PATH.
pub fn tansu_binary() -> PathBuf {
    if let Some(path) = std::env::var_os("TANSU") {
        return PathBuf::from(path);
    }
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| "/root".into());
    let cached = home.join(".cache/spoolmon-test/tansu/bin/tansu");
    if cached.exists() {
        cached
    } else {
        PathBuf::from("tansu")
    }
}

/// A tansu broker on 127.0.0.1:`port`, storing in memory (a restart starts empty).
pub struct Tansu {
    child: Child,
    pub port: u16,
    log: PathBuf,
}

impl Tansu {
    pub fn start(port: u16, log_dir: &std::path::Path) -> Tansu {
        let url = format!("tcp://127.0.0.1:{port}");
        let log = log_dir.join(format!("tansu-{port}-{}.log", std::process::id()));
        let file = std::fs::File::create(&log).unwrap();
        let child = Command::new(tansu_binary())
            .args(["broker", "--listener-url", &url, "--advertised-listener-url", &url])
            .args(["--storage-engine", "memory://tansu/"])
            .stdout(Stdio::from(file.try_clone().unwrap()))
            .stderr(Stdio::from(file))
            .spawn()
            .expect("tansu (make test-deps installs it, or set TANSU)");
        let broker = Tansu { child, port, log };
        wait_for("tansu accepting connections", super::servers::START_LIMIT, None, || {
            super::servers::accepts_connections(port)
        });
        broker
    }

    /// Creates `topic` with `partitions` (tansu creates no topic by itself), with tansu's own
    /// command-line client.
    pub fn create_topic(&self, topic: &str, partitions: u32) {
        let out = Command::new(tansu_binary())
            .args(["topic", "create", topic, "--partitions", &partitions.to_string()])
            .args(["--broker", &format!("tcp://127.0.0.1:{}", self.port)])
            .output()
            .expect("tansu");
        assert!(
            out.status.success(),
            "tansu topic create {topic}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    pub fn brokers(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Tansu {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One message as the broker stored it.
#[derive(Clone, Debug, PartialEq)]
pub struct Stored {
    pub partition: i32,
    pub offset: i64,
    pub key: Option<String>,
    pub payload: String,
}

/// An independent reader of one topic: every partition from the beginning, no group, what it
/// has read kept in partition and offset order.
pub struct Reader {
    consumer: BaseConsumer,
    topic: String,
    partitions: Vec<i32>,
    pub stored: Vec<Stored>,
}

impl Reader {
    /// Waits (within `limit`) until `topic` exists on `brokers`, then assigns all its partitions.
    pub fn new(brokers: &str, topic: &str, limit: Duration) -> Reader {
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", brokers)
            .set("group.id", "spoolmon-test-reader")
            .set("enable.auto.commit", "false")
            .set("auto.offset.reset", "earliest")
            .create()
            .expect("a consumer");
        let deadline = Instant::now() + limit;
        let partitions = loop {
            let found: Vec<i32> = consumer
                .fetch_metadata(Some(topic), Duration::from_secs(2))
                .map(|metadata| {
                    metadata
                        .topics()
                        .iter()
                        .filter(|t| t.name() == topic && t.error().is_none())
                        .flat_map(|t| t.partitions().iter().map(|p| p.id()))
                        .collect()
                })
                .unwrap_or_default();
            if !found.is_empty() {
                break found;
            }
            assert!(Instant::now() < deadline, "{topic} has no partitions on {brokers}");
            std::thread::sleep(Duration::from_millis(200));
        };
        let mut list = TopicPartitionList::new();
        for partition in &partitions {
            list.add_partition_offset(topic, *partition, Offset::Beginning).unwrap();
        }
        consumer.assign(&list).unwrap();
        Reader {
            consumer,
            topic: topic.to_string(),
            partitions,
            stored: Vec::new(),
        }
    }

    fn poll(&mut self) {
        if let Some(Ok(message)) = self.consumer.poll(Duration::from_millis(200)) {
            self.stored.push(Stored {
                partition: message.partition(),
                offset: message.offset(),
                key: message.key().map(|k| String::from_utf8_lossy(k).into_owned()),
                payload: String::from_utf8_lossy(message.payload().unwrap_or_default()).into_owned(),
            });
            self.stored.sort_by_key(|m| (m.partition, m.offset));
        }
    }

    /// Reads until `until` holds for what has been read (checked after each poll).
    pub fn read_until(&mut self, limit: Duration, mut until: impl FnMut(&[Stored]) -> bool) {
        let deadline = Instant::now() + limit;
        while !until(&self.stored) {
            assert!(
                Instant::now() < deadline,
                "{}: the condition did not hold within {limit:?}; read {} message(s), the last: {:?}",
                self.topic,
                self.stored.len(),
                self.stored.iter().rev().take(3).collect::<Vec<_>>()
            );
            self.poll();
        }
    }

    /// Reads until every partition is read up to its high watermark as the broker tells it now
    /// (asked again once reached: true when the broker had nothing more).
    pub fn catch_up(&mut self, limit: Duration) {
        let deadline = Instant::now() + limit;
        loop {
            let marks: Vec<(i32, i64)> = self
                .partitions
                .iter()
                .map(|p| {
                    let (_, high) = self
                        .consumer
                        .fetch_watermarks(&self.topic, *p, Duration::from_secs(5))
                        .expect("watermarks");
                    (*p, high)
                })
                .collect();
            let read_all = |stored: &[Stored]| {
                marks
                    .iter()
                    .all(|(p, high)| *high == 0 || stored.iter().any(|m| m.partition == *p && m.offset + 1 >= *high))
            };
            let before = self.stored.len();
            while !read_all(&self.stored) {
                assert!(
                    Instant::now() < deadline,
                    "{}: not caught up within {limit:?}",
                    self.topic
                );
                self.poll();
            }
            if self.stored.len() == before {
                return;
            }
        }
    }
}
