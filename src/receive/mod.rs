//! Receiving shipped snapshots from other spoolmon nodes.
//!
//! The parts: [`options`], the `receive:` section; [`server`], the HTTP/1.1 listener (`POST /spoolmon/v1/snapshots`, limits against
//! hostile peers, answers only once what it stores is durable); [`access`], who may ship here
//! (API key, then origin machine, each with an `allow-from` pattern, and loops); [`pattern`],
//! Netdata's simple patterns; [`store`], the frames written into `incoming/` exactly once, with
//! the per-sender high-water marks in `state/receive/` (owned there) and crash recovery. The
//! listener itself (accept loop, limits, TLS) is the shared [`crate::http`] layer.
//!
//! Started by `spoolmon run` and `spoolmon process` when the config has a `receive:` section;
//! processing applies what it stores under `output/@<node>/`. It sits beside `collect` in the import graph: a source of snapshots, importing only spool
//! and shared.

pub mod access;
pub mod options;
pub mod pattern;
pub mod server;
pub mod store;

use crate::spool::BaseDir;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

/// Binds the `receive:` section's addresses and serves them in the `receive` thread until
/// `stop` is set (called by `spoolmon run` and `spoolmon process`); `max_results` is
/// processing's limit of results per snapshot (merged frames stay within it). The node's machine GUID is
/// made here if it has none yet (it is what loops are detected by).
pub fn start(
    base: &BaseDir,
    options: &options::ReceiveOptions,
    stats: Arc<server::ReceiveStats>,
    stop: Arc<AtomicBool>,
    max_results: usize,
) -> anyhow::Result<std::thread::JoinHandle<()>> {
    use anyhow::Context;
    let me = crate::spool::identity::machine_guid(base).context("cannot read or make the machine GUID")?;
    let addresses = options.addresses()?;
    let access = options.access()?;
    let tls = match &options.tls {
        Some(tls) => Some(crate::http::tls::server_config(tls).context("receive.tls")?),
        None => None,
    };
    let limits = server::Limits {
        merge_results: max_results,
        ..options.limits()
    };
    let receiver = server::Receiver::bind(base, &addresses, access, me, limits, stats)
        .context("cannot start the receiver")?
        .with_tls(tls);
    Ok(receiver.spawn(stop)?)
}
