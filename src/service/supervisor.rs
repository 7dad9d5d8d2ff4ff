//! The life of every long-running command (`spoolmon run`, `pull`, `process`, and the network
//! commands to come), written once: claim the base directory → open what needs root → switch
//! user → bound the drain → start the work and tell the service manager it is ready → serve
//! until a signal → on SIGHUP reload, on SIGTERM/SIGINT drain and stop.
//!
//! A command describes its work as a [`Service`] (its hooks) and hands it to [`launch`]. The
//! command owns its configuration: it reads the file again on SIGHUP ([`Service::reread`]) and
//! words its own log lines ([`Service::report`]); this module never sees `Config`.
//!
//! # Invariants
//!
//! - Nothing runs before the base is claimed: the locks are held and the command's own
//!   unpublished leftovers removed ([`super::claim::claim_base`]) before [`launch`]'s `open`
//!   hook builds the service, and the account switch happens after `open` (ICMP sockets are
//!   opened as root) and before any work starts.
//! - `RELOADING=1` … `READY=1` bracket every restart of the work a SIGHUP causes; `READY=1`
//!   follows every start; `STOPPING=1` comes once, when the stop begins.
//! - A reload that brings new settings which cannot start goes back to the running ones; only
//!   when those cannot start either does the command fail.
//! - A stop always drains: the work finishes what it has in hand, within `stop-timeout`
//!   ([`super::signals::Signals::bound_the_drain`]; a second SIGTERM ends the process at once).
//!
//! # How a SIGHUP is handled
//!
//! The service rereads its settings. Work that survived the signal ([`Served::Running`], as
//! `run`'s order watching) keeps running when they are unchanged or unusable
//! ([`Service::keep`]), and is stopped and started again with changed ones. Work that ended with
//! the signal ([`Served::Ended`], as `process` and `pull`, whose loops stop on any signal) is
//! started again in any case, with the new settings or the running ones. A SIGHUP that arrives
//! before the first start is no reload: the settings are read again and the first start uses
//! them, without `RELOADING=1`.

use super::claim::claim_base;
use super::notify::Notifier;
use super::privilege::Account;
use super::signals::Signals;
use crate::spool::lock::DaemonLock;
use crate::spool::{queue, BaseDir};
use anyhow::Result;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use tracing::{info, warn};

/// How a command takes its base directory.
pub struct Claim<'a> {
    /// Lock files (names in `state/`) held for the whole run, in this order.
    pub locks: &'a [&'a str],
    /// Which unpublished snapshots in `incoming.tmp/` are this command's to remove.
    pub owner: queue::TmpOwner,
    /// `--user`: the account to switch to once `open` has run.
    pub user: Option<&'a Account>,
    /// Files to give to `user` besides the locks (a log file opened as root).
    pub user_files: &'a [PathBuf],
    /// `stop-timeout` at start (the supervisor keeps it current with [`Service::stop_timeout`]).
    pub stop_timeout: u64,
}

/// Whether the work is still running when [`Service::serve`] returns.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Served {
    /// Still running (it only stopped looking): a SIGHUP restarts it only for changed settings.
    Running,
    /// It stopped with the signal (drained): the supervisor starts it again unless stopping.
    Ended,
}

/// What a SIGHUP's reread found.
#[derive(Debug)]
pub enum Reread<S> {
    /// No settings to change to (no config file, an invalid or unchanged one; the service has
    /// logged which): the running settings stay.
    Keep,
    /// New settings to run with.
    New(S),
}

/// A step of the lifecycle the service words in its own log lines (each command keeps the lines
/// and log target its users filter on). The defaults suit a new command.
#[derive(Debug)]
pub enum Event<'a> {
    /// Changed settings stop the running work (before [`Service::stop`]).
    Restarting,
    /// The work started again with new settings.
    Reloaded,
    /// The new settings could not start; the running ones are started again.
    CannotStart(&'a anyhow::Error),
    /// A stop signal arrived while the work was stopped for a reload: nothing is started again.
    StoppedDuringReload,
    /// The stop begins (before the final [`Service::stop`]).
    Stopping,
    /// Everything has stopped.
    Stopped,
}

/// The hooks of one long-running command. The supervisor calls them from the main thread in
/// this order: `start` → `ready` → `serve` (again after each signal it does not stop on) →, on
/// SIGHUP, `reread` and then `keep`, or `prepare`, `stop`, `start`, `ready` → finally `stop`,
/// `shutdown`. The first start happens in the loop too, after any SIGHUP already pending.
pub trait Service {
    /// What one configuration gives the work (the whole config, or its section).
    type Settings: Clone + PartialEq;

    /// Starts the work with `settings`. A start that fails leaves nothing of it running.
    fn start(&mut self, settings: &Self::Settings) -> Result<()>;

    /// The status line of `READY=1` (and the service's own "running" log line, if any).
    fn ready(&self) -> String;

    /// Works until a stop or a reload is pending, pinging `notifier`'s watchdog.
    fn serve(&mut self, settings: &Self::Settings, signals: &Signals, notifier: &mut Notifier) -> Served;

    /// Stops the work if it runs, letting it finish what it has in hand.
    fn stop(&mut self, notifier: &mut Notifier);

    /// Reads the settings again for SIGHUP, logging what it found.
    fn reread(&mut self, running: &Self::Settings) -> Reread<Self::Settings>;

    /// A SIGHUP left the running work as it is (no new settings).
    fn keep(&mut self) {}

    /// Takes what `new` needs beyond what is held (a lock) while the work still runs; `false`
    /// (logged by the service) keeps the running settings.
    fn prepare(&mut self, _new: &Self::Settings) -> bool {
        true
    }

    /// `stop-timeout` of `settings`, if they set it.
    fn stop_timeout(&self, _settings: &Self::Settings) -> Option<u64> {
        None
    }

    /// Logs a lifecycle step.
    fn report(&self, event: Event<'_>) {
        match event {
            Event::Restarting => info!("SIGHUP: configuration changed; restarting"),
            Event::Reloaded => info!("configuration reloaded"),
            Event::CannotStart(e) => {
                warn!("SIGHUP: the new configuration cannot start ({e:#}); going back to the running one")
            }
            Event::StoppedDuringReload => info!("stopped (a stop came during the reload)"),
            Event::Stopping => info!("stopping"),
            Event::Stopped => info!("stopped"),
        }
    }

    /// Last call, once the work has stopped and before [`Event::Stopped`] (threads that outlive
    /// reloads are joined here).
    fn shutdown(&mut self, _notifier: &mut Notifier) {}
}

/// Claims `base`, builds the service with `open` (still with the privileges the process started
/// with; it gets the locks to keep), switches to `claim.user`, bounds the drain and supervises
/// the service until it stops. Returns when the service has stopped.
pub fn launch<S, F>(base: &BaseDir, claim: Claim<'_>, signals: &Signals, open: F) -> Result<()>
where
    S: Service,
    F: FnOnce(Vec<DaemonLock>) -> Result<(S, S::Settings)>,
{
    let mut notifier = Notifier::from_env();
    let locks = claim_base(base, claim.locks, claim.owner, claim.user)?;
    let lock_paths: Vec<PathBuf> = locks.iter().map(|lock| lock.path.clone()).collect();
    let (service, settings) = open(locks)?;
    if let Some(account) = claim.user {
        let owned: Vec<&Path> = claim
            .user_files
            .iter()
            .chain(&lock_paths)
            .map(PathBuf::as_path)
            .collect();
        account.switch_to(base, &owned)?;
    }
    signals.bound_the_drain(claim.stop_timeout)?;
    supervise(service, settings, signals, &mut notifier)
}

/// What the SIGHUP handling leaves the loop with.
enum AfterReload {
    Serve,
    Stopped,
}

/// The signal loop: see the module documentation.
fn supervise<S: Service>(
    mut service: S,
    mut settings: S::Settings,
    signals: &Signals,
    notifier: &mut Notifier,
) -> Result<()> {
    let mut running = false;
    let mut started = false;
    loop {
        // Cleared before the flags are read: a signal arriving from here on ends the next serve.
        signals.wake.store(false, Ordering::SeqCst);
        if signals.terminating() {
            break;
        }
        if !started {
            // A SIGHUP before the first start is no reload (nothing was READY yet): the settings
            // are read once more and the first start uses them.
            let mut first = None;
            if signals.hup.swap(false, Ordering::SeqCst) {
                if let Reread::New(new) = service.reread(&settings) {
                    first = service.prepare(&new).then_some(new);
                }
            }
            start(&mut service, &mut settings, first, signals)?;
            started = true;
            notifier.ready(&service.ready());
        } else if signals.hup.swap(false, Ordering::SeqCst) {
            if let AfterReload::Stopped = reload(&mut service, &mut settings, &mut running, signals, notifier)? {
                return Ok(());
            }
        } else if !running {
            start(&mut service, &mut settings, None, signals)?;
            notifier.ready(&service.ready());
        }
        running = service.serve(&settings, signals, notifier) == Served::Running;
    }
    notifier.stopping();
    service.report(Event::Stopping);
    service.stop(notifier);
    service.shutdown(notifier);
    service.report(Event::Stopped);
    Ok(())
}

/// SIGHUP: rereads the settings and restarts the work as the module documentation says.
fn reload<S: Service>(
    service: &mut S,
    settings: &mut S::Settings,
    running: &mut bool,
    signals: &Signals,
    notifier: &mut Notifier,
) -> Result<AfterReload> {
    let new = match service.reread(settings) {
        Reread::Keep if *running => {
            service.keep();
            return Ok(AfterReload::Serve);
        }
        Reread::Keep => None,
        Reread::New(new) => Some(new),
    };
    notifier.reloading();
    if *running {
        if new.as_ref().is_some_and(|new| !service.prepare(new)) {
            notifier.ready(&service.ready());
            return Ok(AfterReload::Serve);
        }
        service.report(Event::Restarting);
        service.stop(notifier);
        *running = false;
        if signals.terminating() {
            notifier.stopping();
            service.shutdown(notifier);
            service.report(Event::StoppedDuringReload);
            return Ok(AfterReload::Stopped);
        }
    }
    start(service, settings, new, signals)?;
    *running = true;
    notifier.ready(&service.ready());
    Ok(AfterReload::Serve)
}

/// Starts the work with `new` (then the settings in effect), or with `settings` if there is no
/// `new` or it cannot start; keeps `stop-timeout` current.
fn start<S: Service>(
    service: &mut S,
    settings: &mut S::Settings,
    new: Option<S::Settings>,
    signals: &Signals,
) -> Result<()> {
    match new {
        Some(new) if new != *settings => match service.start(&new) {
            Ok(()) => {
                *settings = new;
                service.report(Event::Reloaded);
            }
            Err(e) => {
                service.report(Event::CannotStart(&e));
                service.start(settings)?;
            }
        },
        _ => service.start(settings)?,
    }
    if let Some(seconds) = service.stop_timeout(settings) {
        signals.stop_timeout_s.store(seconds, Ordering::Relaxed);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A service whose settings are a number; `serve` raises the next scripted signal, and
    /// every hook call is recorded.
    struct Scripted {
        served: Served,
        /// Signals raised by successive serves: `'h'` SIGHUP, `'t'` SIGTERM.
        script: Vec<char>,
        /// What successive rereads find.
        rereads: Vec<Reread<u32>>,
        /// Settings whose start fails.
        broken: Option<u32>,
        calls: Vec<String>,
    }

    impl Scripted {
        fn new(served: Served, script: &str, rereads: Vec<Reread<u32>>) -> Scripted {
            Scripted {
                served,
                script: script.chars().rev().collect(),
                rereads: rereads.into_iter().rev().collect(),
                broken: None,
                calls: Vec::new(),
            }
        }
    }

    impl Service for Scripted {
        type Settings = u32;
        fn start(&mut self, settings: &u32) -> Result<()> {
            self.calls.push(format!("start {settings}"));
            match self.broken == Some(*settings) {
                true => Err(anyhow::anyhow!("broken")),
                false => Ok(()),
            }
        }
        fn ready(&self) -> String {
            String::new()
        }
        fn serve(&mut self, settings: &u32, signals: &Signals, _: &mut Notifier) -> Served {
            self.calls.push(format!("serve {settings}"));
            match self.script.pop() {
                Some('h') => signals.hup.store(true, Ordering::SeqCst),
                _ => signals.terminate.store(true, Ordering::SeqCst),
            }
            signals.wake.store(true, Ordering::SeqCst);
            self.served
        }
        fn stop(&mut self, _: &mut Notifier) {
            self.calls.push("stop".into());
        }
        fn reread(&mut self, _: &u32) -> Reread<u32> {
            self.rereads.pop().unwrap_or(Reread::Keep)
        }
        fn keep(&mut self) {
            self.calls.push("keep".into());
        }
    }

    /// The hook calls of `service` supervised from `settings` until its script stops it.
    fn calls(mut service: Scripted, settings: u32) -> Vec<String> {
        supervise_ref(&mut service, settings, &Signals::default()).unwrap();
        service.calls
    }

    /// Runs [`supervise`] on a borrowed service, so the test can read its calls afterwards.
    fn supervise_ref(service: &mut Scripted, settings: u32, signals: &Signals) -> Result<()> {
        struct Borrowed<'a>(&'a mut Scripted);
        impl Service for Borrowed<'_> {
            type Settings = u32;
            fn start(&mut self, s: &u32) -> Result<()> {
                self.0.start(s)
            }
            fn ready(&self) -> String {
                self.0.ready()
            }
            fn serve(&mut self, s: &u32, signals: &Signals, n: &mut Notifier) -> Served {
                self.0.serve(s, signals, n)
            }
            fn stop(&mut self, n: &mut Notifier) {
                self.0.stop(n)
            }
            fn reread(&mut self, s: &u32) -> Reread<u32> {
                self.0.reread(s)
            }
            fn keep(&mut self) {
                self.0.keep()
            }
        }
        supervise(Borrowed(service), settings, signals, &mut Notifier::disabled())
    }

    #[test]
    fn running_work_survives_a_sighup_without_new_settings_and_restarts_with_new_ones() {
        let service = Scripted::new(Served::Running, "hht", vec![Reread::Keep, Reread::New(2)]);
        assert_eq!(
            calls(service, 1),
            ["start 1", "serve 1", "keep", "serve 1", "stop", "start 2", "serve 2", "stop"]
        );
    }

    #[test]
    fn work_that_ends_with_the_signal_starts_again_with_the_running_or_the_new_settings() {
        let service = Scripted::new(Served::Ended, "hht", vec![Reread::Keep, Reread::New(2)]);
        assert_eq!(
            calls(service, 1),
            ["start 1", "serve 1", "start 1", "serve 1", "start 2", "serve 2", "stop"]
        );
    }

    #[test]
    fn new_settings_that_cannot_start_fall_back_to_the_running_ones() {
        for served in [Served::Running, Served::Ended] {
            let mut service = Scripted::new(served, "ht", vec![Reread::New(2)]);
            service.broken = Some(2);
            let restart: &[&str] = match served {
                Served::Running => &["stop", "start 2", "start 1"],
                Served::Ended => &["start 2", "start 1"],
            };
            let expected: Vec<&str> = [&["start 1", "serve 1"][..], restart, &["serve 1", "stop"]].concat();
            assert_eq!(calls(service, 1), expected, "{served:?}");
        }
    }

    #[test]
    fn a_sighup_before_the_first_start_rereads_the_settings_and_starts_once() {
        let mut service = Scripted::new(Served::Running, "t", vec![Reread::New(2)]);
        let signals = Signals::default();
        signals.hup.store(true, Ordering::SeqCst);
        supervise_ref(&mut service, 1, &signals).unwrap();
        assert_eq!(service.calls, ["start 2", "serve 2", "stop"]);
        assert!(
            !signals.hup.load(Ordering::SeqCst),
            "the SIGHUP was taken by the first start"
        );
    }

    #[test]
    fn rearming_wake_keeps_a_pending_signal_and_drops_a_wake_raised_by_the_process() {
        let signals = Signals::default();
        signals.wake.store(true, Ordering::SeqCst);
        signals.rearm_wake();
        assert!(!signals.wake.load(Ordering::SeqCst));
        signals.hup.store(true, Ordering::SeqCst);
        signals.wake.store(true, Ordering::SeqCst);
        signals.rearm_wake();
        assert!(
            signals.wake.load(Ordering::SeqCst),
            "a pending SIGHUP still wakes the loop"
        );
    }

    #[test]
    fn settings_that_cannot_start_without_a_fallback_fail_the_command() {
        let mut service = Scripted::new(Served::Ended, "ht", vec![Reread::Keep]);
        service.broken = Some(1);
        let signals = Signals::default();
        assert!(supervise_ref(&mut service, 1, &signals).is_err());
        assert_eq!(service.calls, ["start 1"]);
    }
}
