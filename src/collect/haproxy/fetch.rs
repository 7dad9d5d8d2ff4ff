//! One request to a stats socket: connect (bounded by `timeout`), send the command, read the
//! reply to EOF (HAProxy closes the connection after answering one command), all before the
//! cycle's deadline and never more than `buffer-limit` bytes.
//!
//! Reads wait at most [`POLL`] at a time so that a cancelled cycle (shutdown, or another source
//! that already failed past its deadline) frees its threads promptly. UNIX and TCP sockets go
//! through the same code (`socket2`), so both get a real connect timeout.

use super::source::SourceAddress;
use socket2::{SockAddr, Socket, Type};
use std::io::{self, Read, Write};
use std::net::ToSocketAddrs;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// Longest single wait of a request between checks of its cancel flag.
pub const POLL: Duration = Duration::from_millis(100);

/// A stats command pulled from every source.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Command {
    Info,
    Stat,
}

impl Command {
    pub const ALL: [Command; 2] = [Command::Info, Command::Stat];

    /// The command as typed on the stats socket.
    pub fn name(self) -> &'static str {
        match self {
            Command::Info => "show info",
            Command::Stat => "show stat",
        }
    }

    /// Suffix of its file in a snapshot (haproxystats' names).
    pub fn file_suffix(self) -> &'static str {
        match self {
            Command::Info => "_info",
            Command::Stat => "_stat",
        }
    }
}

/// Bounds of one request.
#[derive(Clone, Copy, Debug)]
pub struct FetchLimits {
    pub connect_timeout: Duration,
    /// Largest reply accepted, bytes (`buffer-limit`).
    pub max_reply: u64,
    /// The cycle's deadline (`pull-timeout` after its start).
    pub deadline: Instant,
}

/// Why a request got no complete reply.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("cannot resolve the host: {0}")]
    Resolve(io::Error),
    #[error("connect failed: {0}")]
    Connect(io::Error),
    #[error("connect timed out after {0:?} (timeout)")]
    ConnectTimeout(Duration),
    #[error("cannot send the command: {0}")]
    Send(io::Error),
    #[error("read failed after {received} bytes: {source}")]
    Read { received: usize, source: io::Error },
    #[error("reply larger than buffer-limit ({limit} bytes)")]
    TooLarge { limit: u64 },
    #[error("incomplete reply: {0}")]
    Invalid(#[from] super::validate::ReplyError),
    #[error("pull-timeout reached after {received} bytes of the reply")]
    Deadline { received: usize },
    #[error("no complete reply within pull-timeout ({0:?})")]
    Unfinished(Duration),
    #[error("cannot start a request thread: {0}")]
    Thread(io::Error),
    #[error("cancelled (shutdown)")]
    Cancelled,
}

impl FetchError {
    /// Worth another attempt (the cycle's deadline and shutdown are final).
    pub fn is_retryable(&self) -> bool {
        !matches!(
            self,
            FetchError::Deadline { .. } | FetchError::Unfinished(_) | FetchError::Thread(_) | FetchError::Cancelled
        )
    }
}

/// Sends `command` to `address` and returns the whole reply (not yet validated).
pub fn fetch(
    address: &SourceAddress,
    command: Command,
    limits: &FetchLimits,
    cancel: &AtomicBool,
) -> Result<Vec<u8>, FetchError> {
    let socket = connect(address, limits)?;
    let remaining = remaining(limits.deadline).ok_or(FetchError::Deadline { received: 0 })?;
    socket.set_write_timeout(Some(remaining)).map_err(FetchError::Send)?;
    (&socket)
        .write_all(format!("{}\n", command.name()).as_bytes())
        .map_err(FetchError::Send)?;
    read_to_end(&socket, limits, cancel)
}

/// Time left before `deadline`, `None` once it passed.
pub fn remaining(deadline: Instant) -> Option<Duration> {
    Some(deadline.saturating_duration_since(Instant::now())).filter(|left| !left.is_zero())
}

fn connect(address: &SourceAddress, limits: &FetchLimits) -> Result<Socket, FetchError> {
    let targets: Vec<SockAddr> = match address {
        SourceAddress::Unix(path) => vec![SockAddr::unix(path).map_err(FetchError::Connect)?],
        SourceAddress::Tcp { host, port } => (host.as_str(), *port)
            .to_socket_addrs()
            .map_err(FetchError::Resolve)?
            .map(SockAddr::from)
            .collect(),
    };
    let mut last_error = FetchError::Resolve(io::Error::new(io::ErrorKind::NotFound, "no address"));
    for target in targets {
        let remaining = remaining(limits.deadline).ok_or(FetchError::Deadline { received: 0 })?;
        let timeout = limits.connect_timeout.min(remaining);
        match connect_one(&target, timeout) {
            Ok(socket) => return Ok(socket),
            Err(e) if e.kind() == io::ErrorKind::TimedOut && timeout < limits.connect_timeout => {
                return Err(FetchError::Deadline { received: 0 })
            }
            Err(e) if e.kind() == io::ErrorKind::TimedOut => last_error = FetchError::ConnectTimeout(timeout),
            Err(e) => last_error = FetchError::Connect(e),
        }
    }
    Err(last_error)
}

fn connect_one(target: &SockAddr, timeout: Duration) -> io::Result<Socket> {
    let socket = Socket::new(target.domain(), Type::STREAM.cloexec(), None)?;
    socket.connect_timeout(target, timeout)?;
    Ok(socket)
}

/// Reads until EOF, in waits of at most [`POLL`].
fn read_to_end(socket: &Socket, limits: &FetchLimits, cancel: &AtomicBool) -> Result<Vec<u8>, FetchError> {
    let mut reply = Vec::new();
    let mut chunk = vec![0u8; 64 * 1024];
    loop {
        if cancel.load(Ordering::Relaxed) {
            return Err(FetchError::Cancelled);
        }
        let received = reply.len();
        let wait = remaining(limits.deadline).ok_or(FetchError::Deadline { received })?;
        socket
            .set_read_timeout(Some(wait.min(POLL)))
            .map_err(|source| FetchError::Read { received, source })?;
        match (&*socket).read(&mut chunk) {
            Ok(0) => return Ok(reply),
            Ok(n) if (received + n) as u64 > limits.max_reply => {
                return Err(FetchError::TooLarge {
                    limit: limits.max_reply,
                })
            }
            Ok(n) => reply.extend_from_slice(&chunk[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut | io::ErrorKind::Interrupted
                ) => {}
            Err(source) => return Err(FetchError::Read { received, source }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixListener;

    fn limits(deadline_in: Duration) -> FetchLimits {
        FetchLimits {
            connect_timeout: Duration::from_millis(200),
            max_reply: 100,
            deadline: Instant::now() + deadline_in,
        }
    }

    #[test]
    fn reply_is_read_to_eof_and_bounded_by_buffer_limit() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.sock");
        let listener = UnixListener::bind(&path).unwrap();
        let server = std::thread::spawn(move || {
            for reply in [&b"Name: x\n\n"[..], &[b'x'; 101][..]] {
                let (mut stream, _) = listener.accept().unwrap();
                let mut command = [0u8; 10];
                stream.read_exact(&mut command).unwrap();
                assert_eq!(&command, b"show info\n");
                stream.write_all(reply).unwrap();
            }
        });
        let address = SourceAddress::Unix(path);
        let cancel = AtomicBool::new(false);
        let reply = fetch(&address, Command::Info, &limits(Duration::from_secs(5)), &cancel).unwrap();
        assert_eq!(reply, b"Name: x\n\n");
        let err = fetch(&address, Command::Info, &limits(Duration::from_secs(5)), &cancel).unwrap_err();
        assert!(matches!(err, FetchError::TooLarge { limit: 100 }), "{err}");
        server.join().unwrap();
    }

    #[test]
    fn missing_socket_is_a_connect_error_and_a_silent_peer_hits_the_deadline() {
        let dir = tempfile::tempdir().unwrap();
        let cancel = AtomicBool::new(false);
        let missing = SourceAddress::Unix(dir.path().join("missing.sock"));
        let err = fetch(&missing, Command::Stat, &limits(Duration::from_secs(5)), &cancel).unwrap_err();
        assert!(matches!(err, FetchError::Connect(_)) && err.is_retryable(), "{err}");
        // Bound but never accepted: the connect succeeds (the backlog) and the reply never
        // comes, so without its deadline this fetch would wait for as long as the test runs.
        let path = dir.path().join("silent.sock");
        let _listener = UnixListener::bind(&path).unwrap();
        let started = Instant::now();
        let err = fetch(
            &SourceAddress::Unix(path),
            Command::Stat,
            &limits(Duration::from_millis(300)),
            &cancel,
        )
        .unwrap_err();
        let took = started.elapsed();
        assert!(matches!(err, FetchError::Deadline { received: 0 }), "{err}");
        assert!(!err.is_retryable());
        // The deadline is taken after `started`, so it cannot be hit sooner.
        assert!(took >= Duration::from_millis(300), "{took:?}");
        // Not a timing threshold: 10 s is far more than a loaded machine needs to notice a 300 ms
        // deadline, and a fetch ignoring it would never end.
        assert!(took < Duration::from_secs(10), "a 300 ms deadline took {took:?}");
    }
}
