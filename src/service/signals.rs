//! Stop and reload signals of the daemon commands. The first SIGTERM or SIGINT asks for a
//! drain (finish the work in hand, stop within `stop-timeout`); a second one ends the process
//! at once. SIGHUP asks for a reload. Nothing a stop interrupts is lost: every queue on disk
//! is crash-safe, so an immediate exit only leaves work for the next start.

use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tracing::{error, info};

/// Exit status when a second stop signal ends the process at once, or the drain overran
/// `stop-timeout`.
pub const EXIT_STOPPED_AT_ONCE: i32 = 1;

/// The flags the signal handlers set.
#[derive(Clone, Debug, Default)]
pub struct Signals {
    /// SIGTERM or SIGINT arrived: drain and stop.
    pub terminate: Arc<AtomicBool>,
    /// SIGHUP arrived: reload (cleared by whoever reloads).
    pub hup: Arc<AtomicBool>,
    /// Any of the three arrived: wakes loops that wait on one flag (cleared by the waiter).
    pub wake: Arc<AtomicBool>,
    /// How long a drain may take, seconds (`stop-timeout`; the owner keeps it current).
    pub stop_timeout_s: Arc<AtomicU64>,
}

impl Signals {
    /// Installs the handlers. A second SIGTERM/SIGINT (one arriving while `terminate` is
    /// already set) exits the process with [`EXIT_STOPPED_AT_ONCE`].
    pub fn install() -> std::io::Result<Signals> {
        let signals = Signals::default();
        for signal in [SIGTERM, SIGINT] {
            // Registered first, so it sees the flag as it was before this signal.
            signal_hook::flag::register_conditional_shutdown(signal, EXIT_STOPPED_AT_ONCE, signals.terminate.clone())?;
            signal_hook::flag::register(signal, signals.terminate.clone())?;
            signal_hook::flag::register(signal, signals.wake.clone())?;
        }
        signal_hook::flag::register(SIGHUP, signals.hup.clone())?;
        signal_hook::flag::register(SIGHUP, signals.wake.clone())?;
        Ok(signals)
    }

    /// Sets `wake` back to what the signals say after a part of the process raised it itself
    /// (to stop threads of a start that failed): cleared, then raised again if a stop or reload
    /// is pending. The handlers set their flag before `wake`, so no signal is lost in between.
    pub fn rearm_wake(&self) {
        self.wake.store(false, Ordering::SeqCst);
        if self.terminating() || self.hup.load(Ordering::SeqCst) {
            self.wake.store(true, Ordering::SeqCst);
        }
    }

    /// Whether a stop was asked for. SeqCst like the handlers' stores, so a loop that clears
    /// `wake` and then finds no stop here is sure to see `wake` set by a stop that follows.
    pub fn terminating(&self) -> bool {
        self.terminate.load(Ordering::SeqCst)
    }

    /// Ends the process `stop_timeout_s` (set here to `seconds`; the owner keeps it current
    /// across reloads) after the first stop signal if it has not stopped by then (a drain
    /// stuck on a hung peer or disk must not block a shutdown forever).
    pub fn bound_the_drain(&self, seconds: u64) -> std::io::Result<()> {
        self.stop_timeout_s.store(seconds, Ordering::Relaxed);
        let terminate = self.terminate.clone();
        let current = self.stop_timeout_s.clone();
        std::thread::Builder::new()
            .name("stop-deadline".into())
            .spawn(move || {
                while !terminate.load(Ordering::Relaxed) {
                    std::thread::sleep(Duration::from_millis(200));
                }
                let timeout = Duration::from_secs(current.load(Ordering::Relaxed));
                info!(timeout_s = timeout.as_secs(), "stop requested: draining");
                std::thread::sleep(timeout);
                error!(
                    "did not stop within stop-timeout ({}s); exiting now, unfinished work stays on disk for the next start",
                    timeout.as_secs()
                );
                std::process::exit(EXIT_STOPPED_AT_ONCE);
            })?;
        Ok(())
    }
}
