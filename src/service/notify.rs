//! sd_notify: readiness, reload, stop and watchdog messages to the service manager over the
//! datagram socket named by `NOTIFY_SOCKET` (systemd's `Type=notify`). Without that variable
//! every call does nothing, so the same binary runs under any supervisor or none.

use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::UnixDatagram;
use std::path::PathBuf;
use std::time::{Duration, Instant};
use tracing::{debug, warn};

/// Where notifications go: a socket path, or a Linux abstract socket name (`@name`).
#[derive(Debug)]
enum Address {
    Path(PathBuf),
    Abstract(Vec<u8>),
}

/// A connection to the service manager, if one asked for notifications.
#[derive(Debug)]
pub struct Notifier {
    target: Option<(UnixDatagram, Address)>,
    watchdog: Option<Watchdog>,
}

/// The watchdog the service manager armed (`WATCHDOG_USEC`): we ping at half its period.
#[derive(Debug)]
struct Watchdog {
    every: Duration,
    last: Option<Instant>,
}

impl Notifier {
    /// Reads `NOTIFY_SOCKET`, `WATCHDOG_USEC` and `WATCHDOG_PID` from the environment.
    pub fn from_env() -> Notifier {
        let target = std::env::var_os("NOTIFY_SOCKET").and_then(|raw| {
            let address = parse_address(raw.as_encoded_bytes())?;
            match UnixDatagram::unbound() {
                Ok(socket) => Some((socket, address)),
                Err(e) => {
                    warn!("NOTIFY_SOCKET is set but no datagram socket can be opened: {e}");
                    None
                }
            }
        });
        let watchdog = watchdog_period(
            std::env::var("WATCHDOG_USEC").ok().as_deref(),
            std::env::var("WATCHDOG_PID").ok().as_deref(),
            std::process::id(),
        )
        .map(|period| Watchdog {
            every: period / 2,
            last: None,
        });
        Notifier { target, watchdog }
    }

    /// A notifier that sends nothing (for tests and embedded use).
    pub fn disabled() -> Notifier {
        Notifier {
            target: None,
            watchdog: None,
        }
    }

    /// The process is up and serving (`READY=1`), with a human-readable status line.
    pub fn ready(&self, status: &str) {
        self.send(&format!("READY=1\nSTATUS={status}"));
    }

    /// A configuration reload begins; [`Notifier::ready`] ends it.
    pub fn reloading(&self) {
        self.send(&format!("RELOADING=1\nMONOTONIC_USEC={}", monotonic_usec()));
    }

    /// The process is stopping.
    pub fn stopping(&self) {
        self.send("STOPPING=1\nSTATUS=stopping");
    }

    /// Pings the watchdog if half its period has passed since the last ping. Call it from the
    /// loop whose liveness the watchdog should prove.
    pub fn watchdog_tick(&mut self) {
        let Some(watchdog) = &mut self.watchdog else { return };
        if watchdog.last.is_some_and(|t| t.elapsed() < watchdog.every) {
            return;
        }
        watchdog.last = Some(Instant::now());
        self.send("WATCHDOG=1");
    }

    fn send(&self, message: &str) {
        let Some((socket, address)) = &self.target else { return };
        let sent = match address {
            Address::Path(path) => socket.send_to(message.as_bytes(), path),
            Address::Abstract(name) => send_abstract(socket, name, message.as_bytes()),
        };
        match sent {
            Ok(_) => debug!(message, "sd_notify"),
            Err(e) => warn!("cannot notify the service manager: {e}"),
        }
    }
}

#[cfg(target_os = "linux")]
fn send_abstract(socket: &UnixDatagram, name: &[u8], message: &[u8]) -> std::io::Result<usize> {
    use std::os::linux::net::SocketAddrExt;
    let address = std::os::unix::net::SocketAddr::from_abstract_name(name)?;
    socket.send_to_addr(message, &address)
}

#[cfg(not(target_os = "linux"))]
fn send_abstract(_: &UnixDatagram, _: &[u8], _: &[u8]) -> std::io::Result<usize> {
    Err(std::io::Error::other("abstract sockets exist only on Linux"))
}

/// `NOTIFY_SOCKET` as systemd sets it: an absolute path, or `@name` for an abstract socket.
fn parse_address(raw: &[u8]) -> Option<Address> {
    match raw.split_first() {
        Some((b'/', _)) => Some(Address::Path(PathBuf::from(
            std::ffi::OsStr::from_bytes(raw).to_os_string(),
        ))),
        Some((b'@', name)) if !name.is_empty() => Some(Address::Abstract(name.to_vec())),
        _ => {
            warn!(
                "NOTIFY_SOCKET {:?} is neither a path nor @name; not notifying",
                String::from_utf8_lossy(raw)
            );
            None
        }
    }
}

/// The watchdog period when the service manager armed one for this process.
fn watchdog_period(usec: Option<&str>, pid: Option<&str>, own_pid: u32) -> Option<Duration> {
    let usec: u64 = usec?.trim().parse().ok().filter(|&u| u > 0)?;
    if let Some(pid) = pid {
        if pid.trim().parse::<u32>().ok() != Some(own_pid) {
            return None;
        }
    }
    Some(Duration::from_micros(usec))
}

/// CLOCK_MONOTONIC in microseconds (what `RELOADING=1` pairs with).
fn monotonic_usec() -> u64 {
    nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC)
        .map(|t| t.tv_sec() as u64 * 1_000_000 + t.tv_nsec() as u64 / 1_000)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn notifier_at(path: &std::path::Path, watchdog: Option<Duration>) -> Notifier {
        Notifier {
            target: Some((UnixDatagram::unbound().unwrap(), Address::Path(path.to_path_buf()))),
            watchdog: watchdog.map(|every| Watchdog { every, last: None }),
        }
    }

    fn received(socket: &UnixDatagram) -> Vec<String> {
        socket.set_nonblocking(true).unwrap();
        let mut buf = [0u8; 512];
        let mut messages = Vec::new();
        while let Ok(n) = socket.recv(&mut buf) {
            messages.push(String::from_utf8_lossy(&buf[..n]).into_owned());
        }
        messages
    }

    #[test]
    fn ready_reloading_and_stopping_reach_the_socket() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify");
        let socket = UnixDatagram::bind(&path).unwrap();
        let notifier = notifier_at(&path, None);
        notifier.ready("3 orders");
        notifier.reloading();
        notifier.stopping();
        let messages = received(&socket);
        assert_eq!(messages.len(), 3, "{messages:?}");
        assert_eq!(messages[0], "READY=1\nSTATUS=3 orders");
        assert!(messages[1].starts_with("RELOADING=1\nMONOTONIC_USEC="), "{messages:?}");
        assert!(messages[1].rsplit('=').next().unwrap().parse::<u64>().unwrap() > 0);
        assert_eq!(messages[2], "STOPPING=1\nSTATUS=stopping");
    }

    #[test]
    fn abstract_socket_names_are_supported() {
        let name = format!("spoolmon-notify-test-{}", std::process::id());
        let address = {
            use std::os::linux::net::SocketAddrExt;
            std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).unwrap()
        };
        let socket = UnixDatagram::bind_addr(&address).unwrap();
        let Some(Address::Abstract(parsed)) = parse_address(format!("@{name}").as_bytes()) else {
            panic!("@name not parsed as abstract");
        };
        let notifier = Notifier {
            target: Some((UnixDatagram::unbound().unwrap(), Address::Abstract(parsed))),
            watchdog: None,
        };
        notifier.ready("up");
        assert_eq!(received(&socket), vec!["READY=1\nSTATUS=up".to_string()]);
    }

    #[test]
    fn watchdog_pings_at_most_once_per_half_period() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify");
        let socket = UnixDatagram::bind(&path).unwrap();
        let mut notifier = notifier_at(&path, Some(Duration::from_secs(3600)));
        notifier.watchdog_tick();
        notifier.watchdog_tick();
        assert_eq!(received(&socket), vec!["WATCHDOG=1".to_string()]);
        let mut eager = notifier_at(&path, Some(Duration::ZERO));
        eager.watchdog_tick();
        eager.watchdog_tick();
        assert_eq!(received(&socket).len(), 2);
    }

    #[test]
    fn watchdog_is_armed_only_for_this_process() {
        assert_eq!(
            watchdog_period(Some("20000000"), None, 7),
            Some(Duration::from_secs(20))
        );
        assert_eq!(
            watchdog_period(Some("20000000"), Some("7"), 7),
            Some(Duration::from_secs(20))
        );
        assert_eq!(watchdog_period(Some("20000000"), Some("8"), 7), None);
        assert_eq!(watchdog_period(Some("0"), None, 7), None);
        assert_eq!(watchdog_period(Some("soon"), None, 7), None);
        assert_eq!(watchdog_period(None, Some("7"), 7), None);
    }

    #[test]
    fn bad_addresses_disable_notification() {
        assert!(parse_address(b"").is_none());
        assert!(parse_address(b"relative/path").is_none());
        assert!(parse_address(b"@").is_none());
        assert!(matches!(parse_address(b"/run/systemd/notify"), Some(Address::Path(_))));
    }
}
