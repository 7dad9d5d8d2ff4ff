//! The configured sinks, started: each outbox opened under `outbox/<name>/` with its delivery
//! thread, ready to be handed to processing.

use super::config::SinkConfig;
use super::delivery::{Delivery, DeliveryStats};
use super::forward::{destination_label, ForwardMode, ForwardSink, ForwardTransport, Lane, Lanes, Origin};
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
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;
use tracing::info;

/// Sinks in use and the threads delivering their outboxes.
#[derive(Default)]
pub struct RunningSinks {
    pub sinks: Vec<Arc<dyn ResultSink>>,
    /// The config name of each sink in `sinks`, in the same order.
    pub names: Vec<String>,
    /// Delivery counters per sink (sinks with an outbox only).
    pub deliveries: Vec<(String, Arc<DeliveryStats>)>,
    threads: Vec<JoinHandle<()>>,
}

impl RunningSinks {
    /// Whether a delivery thread is still running.
    pub fn running(&self) -> bool {
        self.threads.iter().any(|thread| !thread.is_finished())
    }

    /// Waits for the delivery threads (they stop within about a second of `shutdown`).
    pub fn join(self) {
        for thread in self.threads {
            let _ = thread.join();
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
        match config {
            SinkConfig::Graphite(options) => {
                let limits = limits(&options.outbox, Some(options.queue_size as u64));
                let parts = QueuedParts {
                    encoder: Box::new(GraphiteEncoder::new(options)),
                    transport: Box::new(GraphiteTransport::new(options)),
                    route: route(name, config)?,
                    takes: config.route_keys().takes_text(),
                    retry: options.retry_policy(),
                    limits,
                };
                running.start_queued(base, name, parts, shutdown)?;
            }
            SinkConfig::Influxdb(options) => {
                let transport = influx::transport_for(options).with_context(|| format!("sink {name}"))?;
                let parts = QueuedParts {
                    encoder: Box::new(InfluxEncoder::new(options)),
                    transport,
                    route: route(name, config)?,
                    takes: config.route_keys().takes_text(),
                    retry: RetryPolicy::default(),
                    limits: limits(&options.outbox, None),
                };
                running.start_queued(base, name, parts, shutdown)?;
            }
            SinkConfig::Forward(options) => {
                let origin = Origin {
                    guid: crate::spool::identity::machine_guid(base).context("cannot read or make the machine GUID")?,
                    node: node.to_owned(),
                };
                // One lane (outbox) for the sink, or one per destination in mode: hash.
                let lane_names: Vec<String> = match options.mode {
                    ForwardMode::Failover => vec![name.clone()],
                    ForwardMode::Hash => options
                        .destinations
                        .iter()
                        .map(|d| format!("{name}@{}", destination_label(d)))
                        .collect(),
                };
                let mut lanes = Vec::new();
                for lane_name in &lane_names {
                    let outbox = running.open_outbox(base, lane_name, limits(&options.outbox, None))?;
                    lanes.push(Lane::open(lane_name, outbox).with_context(|| format!("sink {name}"))?);
                }
                let lanes = Arc::new(Lanes::new(lanes, options));
                for (index, lane) in lanes.lanes().iter().enumerate() {
                    let stats = Arc::new(DeliveryStats::default());
                    let transport = match options.mode {
                        ForwardMode::Failover => ForwardTransport::new(options),
                        ForwardMode::Hash => ForwardTransport::for_lane(options, lanes.clone(), index, stats.clone()),
                    };
                    let transport: Box<dyn Transport> =
                        Box::new(transport.with_context(|| format!("sink {name}: tls"))?);
                    let retry = RetryPolicy::default();
                    running.start_delivery_counted(lane.name(), lane.outbox(), transport, retry, shutdown, stats)?;
                }
                let sink = ForwardSink::new(name, options, route(name, config)?, lanes, origin);
                running.sinks.push(Arc::new(sink));
                running.names.push(name.clone());
                info!(sink = %name, to = %options.destinations.join(", "), mode = ?options.mode, node, "forward sink started");
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
        self.start_delivery(name, &outbox, parts.transport, parts.retry, shutdown)?;
        self.sinks
            .push(Arc::new(OutboxSink::new(name, parts.encoder, parts.route, outbox)));
        self.names.push(name.to_owned());
        info!(sink = name, to = %target, outbox = %dir.display(), takes = %parts.takes, "sink started");
        Ok(())
    }
}

impl RunningSinks {
    fn open_outbox(&self, base: &BaseDir, name: &str, limits: OutboxLimits) -> Result<Arc<Outbox>> {
        let outboxes = base
            .dir("outbox")
            .with_context(|| format!("cannot open the outbox of sink {name}"))?;
        Ok(Arc::new(
            Outbox::open_in(&outboxes, name, limits)
                .with_context(|| format!("cannot open the outbox of sink {name}"))?,
        ))
    }

    fn start_delivery(
        &mut self,
        name: &str,
        outbox: &Arc<Outbox>,
        transport: Box<dyn Transport>,
        retry: RetryPolicy,
        shutdown: &Arc<AtomicBool>,
    ) -> Result<()> {
        self.start_delivery_counted(name, outbox, transport, retry, shutdown, Arc::default())
    }

    /// [`RunningSinks::start_delivery`] counting into `stats` (which the transport shares).
    fn start_delivery_counted(
        &mut self,
        name: &str,
        outbox: &Arc<Outbox>,
        transport: Box<dyn Transport>,
        retry: RetryPolicy,
        shutdown: &Arc<AtomicBool>,
        stats: Arc<DeliveryStats>,
    ) -> Result<()> {
        let delivery = Delivery::new(name, outbox, transport, retry, shutdown.clone()).with_stats(stats);
        self.deliveries.push((name.to_owned(), delivery.stats()));
        self.threads.push(
            delivery
                .spawn()
                .with_context(|| format!("cannot start delivery of sink {name}"))?,
        );
        Ok(())
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
