//! The configured sinks, started: each outbox opened under `outbox/<name>/` with its delivery
//! thread, ready to be handed to processing.

use super::config::SinkConfig;
use super::delivery::DeliveryRegistry;
use super::delivery::{Delivery, DeliveryStats};
use super::discovery::{self, Discovery, DiscoveryStats};
use super::forward::{
    check_destination, destination_label, ForwardMode, ForwardOptions, ForwardSink, ForwardTransport, Lane, Lanes,
    Origin,
};
use super::graphite::{GraphiteEncoder, GraphiteTransport};
use super::influx::{self, InfluxEncoder};
use super::local_store::LocalStore;
use super::outbox::{Outbox, OutboxLimits};
use super::queued::OutboxSink;
use super::route::Route;
use super::{Encoder, OutboxBounds, RetryPolicy, Transport};
use crate::process::handoff::ResultSink;
use crate::spool::BaseDir;
use anyhow::{Context, Result};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;
use tracing::info;

/// Sinks in use and the threads delivering their outboxes.
#[derive(Default)]
pub struct RunningSinks {
    pub sinks: Vec<Arc<dyn ResultSink>>,
    /// The config name of each sink in `sinks`, in the same order.
    pub names: Vec<String>,
    /// Delivery counters per outbox (sinks with an outbox only; a forward sink in `mode:
    /// hash` has one per destination, registered as they are found).
    pub deliveries: DeliveryRegistry,
    /// Discovery counters per forward sink with `discovery:`.
    pub discoveries: Vec<(String, Arc<DiscoveryStats>)>,
    /// Delivery and discovery threads (lanes added at run time push theirs).
    threads: Arc<Mutex<Vec<JoinHandle<()>>>>,
}

impl RunningSinks {
    /// Whether a delivery thread is still running.
    pub fn running(&self) -> bool {
        self.threads
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .any(|thread| !thread.is_finished())
    }

    /// Waits for the delivery threads (they stop within about a second of `shutdown`).
    pub fn join(self) {
        loop {
            let next = self.threads.lock().unwrap_or_else(|p| p.into_inner()).pop();
            match next {
                Some(thread) => {
                    let _ = thread.join();
                }
                None => break,
            }
        }
    }
}

/// Opens every configured sink's outbox (recovering it) and starts its delivery thread. When a
/// sink cannot start, `shutdown` is set and the threads already started are joined before the
/// error is returned, so no delivery thread outlives a failed start (a second owner of the
/// same outbox would deliver its backlog twice).
/// `node` is this node's name, for the `forward` sinks (their frames' origin).
pub fn start(
    base: &BaseDir,
    configs: &BTreeMap<String, SinkConfig>,
    node: &str,
    shutdown: &Arc<AtomicBool>,
) -> Result<RunningSinks> {
    let mut running = RunningSinks::default();
    match start_each(&mut running, base, configs, node, shutdown) {
        Ok(()) => Ok(running),
        Err(e) => {
            shutdown.store(true, Ordering::SeqCst);
            running.join();
            Err(e)
        }
    }
}

fn start_each(
    running: &mut RunningSinks,
    base: &BaseDir,
    configs: &BTreeMap<String, SinkConfig>,
    node: &str,
    shutdown: &Arc<AtomicBool>,
) -> Result<()> {
    for (name, config) in configs {
        if let Some(parts) = queued_parts(name, config, node, shutdown)? {
            running.start_queued(base, name, parts, shutdown)?;
            continue;
        }
        match config {
            // Started above, through their outbox.
            SinkConfig::Graphite(_) | SinkConfig::Influxdb(_) | SinkConfig::Redis(_) | SinkConfig::Kafka(_) => {}
            SinkConfig::Forward(options) => {
                let sink = running.start_forward(base, name, options, route(name, config)?, node, shutdown)?;
                running.sinks.push(Arc::new(sink));
                running.names.push(name.clone());
            }
            SinkConfig::LocalStore(options) => {
                info!(sink = %name, dir = %options.dir.display(), takes = %config.route_keys().takes_text(),
                      "local-store enabled: it grows without bound");
                let store =
                    LocalStore::new(name, options, options.encoder()).with_context(|| format!("sink {name}"))?;
                running.sinks.push(Arc::new(store));
                running.names.push(name.clone());
            }
        }
    }
    Ok(())
}

/// The parts of a sink that delivers through an outbox of its own (Graphite, InfluxDB, Redis,
/// Kafka); `None` for the others (forward has lanes, local-store no outbox). A transport that
/// waits on its remote (Kafka's, for delivery reports) looks at `shutdown` itself.
fn queued_parts(
    name: &str,
    config: &SinkConfig,
    node: &str,
    shutdown: &Arc<AtomicBool>,
) -> Result<Option<QueuedParts>> {
    let stats = Arc::new(DeliveryStats::default());
    let (encoder, transport, retry, limits): (Box<dyn Encoder>, Box<dyn Transport>, RetryPolicy, OutboxLimits) =
        match config {
            SinkConfig::Graphite(options) => (
                Box::new(GraphiteEncoder::new(options)),
                Box::new(GraphiteTransport::new(options)),
                options.retry_policy(),
                limits(&options.outbox, Some(options.queue_size as u64)),
            ),
            SinkConfig::Influxdb(options) => (
                Box::new(InfluxEncoder::new(options)),
                influx::transport_for(options).with_context(|| format!("sink {name}"))?,
                RetryPolicy::default(),
                limits(&options.outbox, None),
            ),
            SinkConfig::Redis(options) => (
                Box::new(super::redis::RedisEncoder::new(options, node)),
                Box::new(super::redis::RedisTransport::new(options)),
                RetryPolicy::default(),
                limits(&options.outbox, None),
            ),
            SinkConfig::Kafka(options) => (
                Box::new(super::kafka::KafkaEncoder::new(options, node)),
                Box::new(
                    super::kafka::transport::KafkaTransport::new(options, node, stats.clone(), shutdown.clone())
                        .map_err(|e| anyhow::anyhow!("sink {name}: {e}"))?,
                ),
                RetryPolicy::default(),
                limits(&options.outbox, None),
            ),
            SinkConfig::Forward(_) | SinkConfig::LocalStore(_) => return Ok(None),
        };
    Ok(Some(QueuedParts {
        encoder,
        transport,
        route: route(name, config)?,
        takes: config.route_keys().takes_text(),
        retry,
        limits,
        stats,
    }))
}

/// One sink's encoder and route with a delivery thread on an outbox of its own,
/// `outbox/<sink>@<suffix>/`, beside the daemon's: what `spoolmon backfill` sends through.
pub struct Detached {
    pub outbox: Arc<Outbox>,
    pub encoder: Box<dyn Encoder>,
    pub route: Route,
    pub stats: Arc<DeliveryStats>,
    pub delivery: JoinHandle<()>,
}

/// Starts sink `name` detached (see [`Detached`]); an error for a sink without an outbox.
pub fn detached(
    base: &BaseDir,
    name: &str,
    config: &SinkConfig,
    node: &str,
    suffix: &str,
    shutdown: &Arc<AtomicBool>,
) -> Result<Detached> {
    let Some(parts) = queued_parts(name, config, node, shutdown)? else {
        anyhow::bail!("sink {name} has no outbox of its own (forward and local-store sinks cannot be backfilled)");
    };
    let outbox_name = format!("{name}@{suffix}");
    let running = RunningSinks::default();
    let outbox = running.open_outbox(base, &outbox_name, parts.limits)?;
    let delivery =
        Delivery::new(&outbox_name, &outbox, parts.transport, parts.retry, shutdown.clone()).with_stats(parts.stats);
    let stats = delivery.stats();
    let delivery = delivery
        .spawn()
        .with_context(|| format!("cannot start the delivery of {outbox_name}"))?;
    Ok(Detached {
        outbox,
        encoder: parts.encoder,
        route: parts.route,
        stats,
        delivery,
    })
}

/// The compiled route of sink `name` (its keys were validated with the config).
fn route(name: &str, config: &SinkConfig) -> Result<Route> {
    config.route_keys().compile().with_context(|| format!("sink {name}"))
}

/// What a sink with an outbox is made of.
struct QueuedParts {
    encoder: Box<dyn Encoder>,
    transport: Box<dyn Transport>,
    route: Route,
    /// `takes` as written, for the log.
    takes: String,
    retry: RetryPolicy,
    limits: OutboxLimits,
    /// The delivery counters, shared with the transport.
    stats: Arc<DeliveryStats>,
}

impl RunningSinks {
    fn start_queued(
        &mut self,
        base: &BaseDir,
        name: &str,
        parts: QueuedParts,
        shutdown: &Arc<AtomicBool>,
    ) -> Result<()> {
        let outbox = self.open_outbox(base, name, parts.limits)?;
        let target = parts.transport.describe();
        let dir = outbox.dir().to_owned();
        self.starter(base, shutdown)
            .start_delivery(name, &outbox, parts.transport, parts.retry, parts.stats)?;
        self.sinks
            .push(Arc::new(OutboxSink::new(name, parts.encoder, parts.route, outbox)));
        self.names.push(name.to_owned());
        info!(sink = name, to = %target, outbox = %dir.display(), takes = %parts.takes, "sink started");
        Ok(())
    }
}

/// What starting a delivery thread needs, shared with a forward sink's discovery thread (which
/// starts the lanes of destinations it finds).
#[derive(Clone)]
struct Starter {
    base: BaseDir,
    deliveries: DeliveryRegistry,
    threads: Arc<Mutex<Vec<JoinHandle<()>>>>,
    shutdown: Arc<AtomicBool>,
}

impl Starter {
    fn open_outbox(&self, name: &str, limits: OutboxLimits) -> Result<Arc<Outbox>> {
        let outboxes = self
            .base
            .dir("outbox")
            .with_context(|| format!("cannot open the outbox of sink {name}"))?;
        Ok(Arc::new(
            Outbox::open_in(&outboxes, name, limits)
                .with_context(|| format!("cannot open the outbox of sink {name}"))?,
        ))
    }

    /// Starts the delivery thread of outbox `name`, counting into `stats` (which the
    /// transport may share).
    fn start_delivery(
        &self,
        name: &str,
        outbox: &Arc<Outbox>,
        transport: Box<dyn Transport>,
        retry: RetryPolicy,
        stats: Arc<DeliveryStats>,
    ) -> Result<()> {
        let delivery = Delivery::new(name, outbox, transport, retry, self.shutdown.clone()).with_stats(stats);
        self.deliveries.add(name, delivery.stats());
        let thread = delivery
            .spawn()
            .with_context(|| format!("cannot start delivery of sink {name}"))?;
        self.threads.lock().unwrap_or_else(|p| p.into_inner()).push(thread);
        Ok(())
    }

    /// Opens lane `index` of a forward sink (its outbox, `<sink>@<label>` in mode: hash) and
    /// starts its delivery thread.
    fn open_lane(
        &self,
        sink: &str,
        options: &ForwardOptions,
        lanes: &Arc<Lanes>,
        index: usize,
        destination: Option<&str>,
    ) -> Result<Arc<Lane>> {
        let name = match destination {
            Some(d) => format!("{sink}@{}", destination_label(d)),
            None => sink.to_owned(),
        };
        let outbox = self.open_outbox(&name, limits(&options.outbox, None))?;
        let lane = Arc::new(Lane::open(&name, destination, outbox).with_context(|| format!("sink {sink}"))?);
        let stats = Arc::new(DeliveryStats::default());
        let transport = ForwardTransport::new(options, lanes.clone(), index, stats.clone())
            .with_context(|| format!("sink {sink}: tls"))?;
        self.start_delivery(&name, lane.outbox(), Box::new(transport), RetryPolicy::default(), stats)?;
        Ok(lane)
    }
}

impl RunningSinks {
    fn starter(&self, base: &BaseDir, shutdown: &Arc<AtomicBool>) -> Starter {
        Starter {
            base: base.clone(),
            deliveries: self.deliveries.clone(),
            threads: self.threads.clone(),
            shutdown: shutdown.clone(),
        }
    }

    fn open_outbox(&self, base: &BaseDir, name: &str, limits: OutboxLimits) -> Result<Arc<Outbox>> {
        Starter::open_outbox(&self.starter(base, &Arc::default()), name, limits)
    }

    /// A forward sink: its lanes (one, or one per destination in mode: hash) with their
    /// delivery threads, and its discovery thread when it has `discovery:`.
    fn start_forward(
        &mut self,
        base: &BaseDir,
        name: &str,
        options: &ForwardOptions,
        route: Route,
        node: &str,
        shutdown: &Arc<AtomicBool>,
    ) -> Result<ForwardSink> {
        let origin = Origin {
            guid: crate::spool::identity::machine_guid(base).context("cannot read or make the machine GUID")?,
            node: node.to_owned(),
        };
        let starter = self.starter(base, shutdown);
        let lanes = match options.mode {
            ForwardMode::Failover => {
                let outbox = starter.open_outbox(name, limits(&options.outbox, None))?;
                let lanes = Arc::new(Lanes::failover(Lane::open(name, None, outbox.clone())?, options));
                let stats = Arc::new(DeliveryStats::default());
                let transport = ForwardTransport::new(options, lanes.clone(), 0, stats.clone())
                    .with_context(|| format!("sink {name}: tls"))?;
                starter.start_delivery(name, &outbox, Box::new(transport), RetryPolicy::default(), stats)?;
                lanes
            }
            ForwardMode::Hash => {
                let lanes = Arc::new(Lanes::hash(options));
                lanes.set_destinations(&options.destinations, name, &mut |index, destination| {
                    starter.open_lane(name, options, &lanes, index, Some(destination))
                })?;
                lanes
            }
        };
        if let Some(discovery_options) = &options.discovery {
            let stats = Arc::new(DiscoveryStats::default());
            self.discoveries.push((name.to_owned(), stats.clone()));
            let (sink, options_copy, lanes_copy, starter_copy) =
                (name.to_owned(), options.clone(), lanes.clone(), starter.clone());
            let apply = Box::new(move |found: &[String]| {
                lanes_copy
                    .set_destinations(found, &sink, &mut |index, destination| {
                        starter_copy.open_lane(&sink, &options_copy, &lanes_copy, index, Some(destination))
                    })
                    .map_err(|e| format!("{e:#}"))
            });
            let discovery = Discovery::new(discovery_options.clone(), check_destination);
            info!(sink = %name, source = %discovery_options.describe(), every = discovery_options.interval, "discovering destinations");
            let thread = discovery::spawn(
                name,
                discovery,
                options.destinations.clone(),
                apply,
                stats,
                shutdown.clone(),
            )
            .with_context(|| format!("cannot start the discovery of sink {name}"))?;
            self.threads.lock().unwrap_or_else(|p| p.into_inner()).push(thread);
        }
        info!(sink = %name, to = %options.destinations.join(", "), mode = ?options.mode, node, "forward sink started");
        Ok(ForwardSink::new(name, options, route, lanes, origin))
    }
}

fn limits(bounds: &OutboxBounds, max_lines: Option<u64>) -> OutboxLimits {
    let defaults = OutboxLimits::default();
    OutboxLimits {
        max_bytes: bounds.max_bytes,
        max_lines,
        max_age: bounds.max_age.map(Duration::from_secs_f64),
        segment_bytes: defaults.segment_bytes.min(bounds.max_bytes / 4),
        ack_bytes: defaults.ack_bytes,
    }
}
