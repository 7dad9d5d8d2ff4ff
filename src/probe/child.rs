//! Supervision of the child processes a probe runs (exec commands, fping processes): starting a
//! child contained (its own process group, its own cgroup or environment tag), reading its
//! output with `poll(2)` until its time limit, killing it and whatever it started, reaping it.
//!
//! Owns nothing on disk (the cgroups are `probe::cgroup`'s). It owns the children of one run,
//! all driven by the calling thread ([`drive`]): no thread per child.
//!
//! Invariants:
//! - A child joins its cgroup between `fork` and `exec`, before it can start anything (see
//!   `probe::cgroup`); without a writable cgroup v2 it carries `SPOOLMON_EXEC_TAG=<tag>`.
//! - Nothing outlives the child's time limit (`kill_at`): at it, the child's process group (when
//!   it has one of its own), its cgroup (or every process with its tag) and the child itself get
//!   SIGKILL; it is then reaped, and pipes still held open by something that escaped are closed.
//!   A child that exits by itself earlier has whatever it left running killed the same way.
//! - The process group is signalled only while the leader is not reaped, so the group id cannot
//!   have been reused by then.
//! - Output memory is the [`Output`]'s business: the supervisor reads at most
//!   [`READ_CHUNK`] × [`CHUNKS_PER_TURN`] bytes of one pipe before the others get their turn.
//!
//! Called by `probe::exec` (one child per order) and `probe::fping` (one child per 1,000 hosts).
//! Each run ends with [`kill_leftovers`] over its children, then reads what each produced.

use super::cgroup::{self, CommandCgroup};
use nix::fcntl::{fcntl, FcntlArg, OFlag};
use nix::sys::signal::{kill, killpg, Signal};
use nix::sys::wait::{waitid, Id, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;
use std::io::{self, Read};
use std::os::fd::{AsFd, AsRawFd};
use std::os::unix::process::CommandExt;
use std::process::{Child, ChildStderr, ChildStdin, ChildStdout, Command, ExitStatus};
use std::time::{Duration, Instant};

/// Bytes read from one pipe per call.
pub const READ_CHUNK: usize = 64 * 1024;

/// Chunks read from one pipe before the other pipes get their turn.
pub const CHUNKS_PER_TURN: usize = 16;

/// Longest sleep in `poll` while a child runs, so an exit without EOF (pipes kept open by a
/// background process) is noticed.
const EXIT_CHECK_INTERVAL: Duration = Duration::from_millis(100);

/// How a child is contained.
#[derive(Clone, Copy, Debug)]
pub struct Placement {
    /// In a process group of its own, killed as a whole (`killpg`).
    pub process_group: bool,
    /// In a cgroup of its own when cgroup v2 is writable; otherwise (or when false) what it
    /// starts is found by its environment tag.
    pub cgroup: bool,
}

/// An output pipe of a child.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stream {
    Stdout,
    Stderr,
}

/// Where a child's output goes, as it is read.
pub trait Output {
    /// `bytes` just read from `stream`.
    fn consume(&mut self, stream: Stream, bytes: &[u8]);
    /// `stream` is closed (end of file, a read error, or the child's time is up).
    fn end(&mut self, stream: Stream);
}

/// A child could not be started.
#[derive(Debug, thiserror::Error)]
pub enum ChildError {
    #[error("cannot run {program}: {source}")]
    Spawn { program: String, source: io::Error },
    #[error("preparing the output pipes of {program:?}: {source}")]
    Pipe { program: String, source: nix::Error },
}

/// One started child and what has been read from it so far.
pub struct Supervised<O> {
    /// What the child is, in log messages ("exec probe command", "fping").
    label: &'static str,
    program: String,
    child: Child,
    /// The child's own cgroup (killed with it, removed after it), if cgroups are used.
    cgroup: Option<CommandCgroup>,
    /// Value of its `SPOOLMON_EXEC_TAG`, inherited by everything it starts.
    tag: String,
    own_group: bool,
    stdout: Option<ChildStdout>,
    stderr: Option<ChildStderr>,
    output: O,
    kill_at: Instant,
    /// When to send SIGINT to the child (it then reports what it has), if ever.
    interrupt_at: Option<Instant>,
    killed: bool,
    timed_out: bool,
    status: Option<ExitStatus>,
}

impl<O: Output> Supervised<O> {
    /// Starts `command` (its arguments and stdio set by the caller) contained as `placement`
    /// says, to be killed at `kill_at`; its piped stdout and stderr are made non-blocking and
    /// read into `output`.
    pub fn spawn(
        label: &'static str,
        mut command: Command,
        placement: Placement,
        output: O,
        kill_at: Instant,
    ) -> Result<Supervised<O>, ChildError> {
        let program = command.get_program().to_string_lossy().into_owned();
        let tag = cgroup::next_name();
        let mut cgroup = placement.cgroup.then(|| CommandCgroup::create(&tag)).flatten();
        command.env(cgroup::TAG_VARIABLE, &tag);
        if placement.process_group {
            command.process_group(0);
        }
        if let Some(fd) = cgroup.as_ref().and_then(|group| group.procs_fd()) {
            // SAFETY: the closure runs in the child between fork and exec and only calls
            // write(2), which is async-signal-safe; `fd` stays open until after the spawn.
            unsafe {
                command.pre_exec(move || {
                    // "0" moves the writing process itself; a failure is caught by `holds` below.
                    let _ = libc::write(fd, b"0".as_ptr().cast(), 1);
                    Ok(())
                });
            }
        }
        let mut child = match command.spawn() {
            Ok(child) => child,
            Err(source) => {
                if let Some(group) = cgroup.take() {
                    group.remove();
                }
                return Err(ChildError::Spawn { program, source });
            }
        };
        if let Some(group) = &cgroup {
            if !group.holds(child.id()) && group.add(child.id()).is_err() {
                tracing::warn!(%program, "{label} could not join its cgroup: what it leaves behind is found by its environment tag");
                cgroup.take().map(CommandCgroup::remove);
            }
        }
        let (stdout, stderr) = (child.stdout.take(), child.stderr.take());
        let supervised = Supervised {
            label,
            program,
            child,
            cgroup,
            tag,
            own_group: placement.process_group,
            stdout,
            stderr,
            output,
            kill_at,
            interrupt_at: None,
            killed: false,
            timed_out: false,
            status: None,
        };
        if let Err(source) = supervised.make_pipes_non_blocking() {
            let program = supervised.program.clone();
            supervised.abandon();
            return Err(ChildError::Pipe { program, source });
        }
        Ok(supervised)
    }

    /// Sends SIGINT to the child at `at` if it still runs then (before its `kill_at`).
    pub fn interrupt_at(&mut self, at: Instant) {
        self.interrupt_at = Some(at);
    }

    /// The child's stdin, if it was piped (taken: dropping it closes it).
    pub fn take_stdin(&mut self) -> Option<ChildStdin> {
        self.child.stdin.take()
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn program(&self) -> &str {
        &self.program
    }

    /// How the child ended (`None` until it is reaped).
    pub fn status(&self) -> Option<ExitStatus> {
        self.status
    }

    /// Whether the child was killed at its time limit.
    pub fn timed_out(&self) -> bool {
        self.timed_out
    }

    pub fn output(&self) -> &O {
        &self.output
    }

    /// The output read; a cgroup not yet released by [`kill_leftovers`] is killed and removed.
    pub fn into_output(self) -> O {
        self.output
    }

    /// Kills and reaps a child given up on (its input could not be written, its pipes could not
    /// be set up), with everything it started; its cgroup is removed.
    pub fn abandon(mut self) {
        self.kill();
        self.reap();
        if let Some(group) = self.cgroup.take() {
            group.kill();
            group.remove();
        }
    }

    fn make_pipes_non_blocking(&self) -> nix::Result<()> {
        let fds = [
            self.stdout.as_ref().map(|pipe| pipe.as_fd()),
            self.stderr.as_ref().map(|pipe| pipe.as_fd()),
        ];
        for fd in fds.into_iter().flatten() {
            let flags = OFlag::from_bits_truncate(fcntl(fd, FcntlArg::F_GETFL)?);
            fcntl(fd, FcntlArg::F_SETFL(flags | OFlag::O_NONBLOCK))?;
        }
        Ok(())
    }

    fn leader(&self) -> Pid {
        Pid::from_raw(self.child.id() as i32)
    }

    /// SIGKILL to the child, its process group and everything it started. Only called while the
    /// leader is not reaped yet, so the group id cannot have been reused.
    fn kill(&mut self) {
        if self.killed {
            return;
        }
        self.killed = true;
        if self.own_group {
            if let Err(error) = killpg(self.leader(), Signal::SIGKILL) {
                if error != nix::errno::Errno::ESRCH {
                    tracing::warn!(program = %self.program, %error, "killing {}", self.label);
                }
            }
        }
        // Everything it started, whatever process group or session it is in now.
        match &self.cgroup {
            Some(group) => group.kill(),
            None => {
                cgroup::kill_tagged(std::slice::from_ref(&self.tag));
            }
        }
        // The leader itself, even if the group could not be signalled, so `reap` cannot hang.
        let _ = self.child.kill();
    }

    /// Waits for the (killed or exited) leader.
    fn reap(&mut self) {
        match self.child.wait() {
            Ok(status) => self.status = Some(status),
            Err(error) => {
                tracing::warn!(program = %self.program, %error, "waiting for {}", self.label);
                self.status = Some(ExitStatus::default());
            }
        }
    }

    /// Handles the passage of time: kills at the time limit, notices an exit, interrupts.
    fn check(&mut self, now: Instant) {
        if self.status.is_none() && now >= self.kill_at {
            self.timed_out = true;
            self.kill();
            self.read(Stream::Stdout);
            self.read(Stream::Stderr);
            self.reap();
        }
        if self.status.is_none() && self.leader_exited() {
            // Leave nothing behind; the leader stays a zombie until reaped, so its pgid is safe.
            self.kill();
            self.reap();
        }
        if self.status.is_none() && self.interrupt_at.is_some_and(|at| now >= at) {
            self.interrupt_at = None;
            if let Err(error) = kill(self.leader(), Signal::SIGINT) {
                tracing::debug!(program = %self.program, %error, "cannot interrupt {}", self.label);
            }
        }
        if self.status.is_some() && now >= self.kill_at {
            // Pipes still held open by something that escaped the process group: stop reading.
            self.close(Stream::Stdout);
            self.close(Stream::Stderr);
        }
    }

    fn leader_exited(&self) -> bool {
        let flags = WaitPidFlag::WEXITED | WaitPidFlag::WNOHANG | WaitPidFlag::WNOWAIT;
        !matches!(waitid(Id::Pid(self.leader()), flags), Ok(WaitStatus::StillAlive))
    }

    fn is_done(&self) -> bool {
        self.status.is_some() && self.stdout.is_none() && self.stderr.is_none()
    }

    /// The next moment [`Supervised::check`] has something to do for a child that is not done.
    fn next_event(&self) -> Instant {
        match self.interrupt_at {
            Some(at) if self.status.is_none() => at.min(self.kill_at),
            _ => self.kill_at,
        }
    }

    /// Reads what `stream` has now (up to a fair share); closes it at end of file or on error.
    fn read(&mut self, stream: Stream) {
        let mut buffer = vec![0u8; READ_CHUNK];
        for _ in 0..CHUNKS_PER_TURN {
            let result = match stream {
                Stream::Stdout => self.stdout.as_mut().map(|p| p.read(&mut buffer)),
                Stream::Stderr => self.stderr.as_mut().map(|p| p.read(&mut buffer)),
            };
            match result {
                None => return,
                Some(Ok(0)) => return self.close(stream),
                Some(Ok(n)) => self.output.consume(stream, &buffer[..n]),
                Some(Err(e)) if e.kind() == io::ErrorKind::WouldBlock => return,
                Some(Err(e)) if e.kind() == io::ErrorKind::Interrupted => continue,
                Some(Err(error)) => {
                    tracing::debug!(program = %self.program, %error, ?stream, "reading the output of {}", self.label);
                    return self.close(stream);
                }
            }
        }
    }

    fn close(&mut self, stream: Stream) {
        let was_open = match stream {
            Stream::Stdout => self.stdout.take().is_some(),
            Stream::Stderr => self.stderr.take().is_some(),
        };
        if was_open {
            self.output.end(stream);
        }
    }

    fn pipe_fd(&self, stream: Stream) -> Option<libc::c_int> {
        match stream {
            Stream::Stdout => self.stdout.as_ref().map(|p| p.as_raw_fd()),
            Stream::Stderr => self.stderr.as_ref().map(|p| p.as_raw_fd()),
        }
    }
}

/// Drives every child until it is done (reaped, both pipes closed): reads output as it comes,
/// interrupts and kills at the time limits.
pub fn drive<O: Output>(children: &mut [&mut Supervised<O>]) {
    loop {
        let now = Instant::now();
        for child in children.iter_mut() {
            child.check(now);
        }
        if children.iter().all(|child| child.is_done()) {
            return;
        }
        let mut fds = Vec::new();
        let mut owners = Vec::new();
        for (index, child) in children.iter().enumerate() {
            for stream in [Stream::Stdout, Stream::Stderr] {
                if let Some(fd) = child.pipe_fd(stream) {
                    fds.push(libc::pollfd {
                        fd,
                        events: libc::POLLIN,
                        revents: 0,
                    });
                    owners.push((index, stream));
                }
            }
        }
        let next_event = children
            .iter()
            .filter(|child| !child.is_done())
            .map(|child| child.next_event().saturating_duration_since(now))
            .min()
            .unwrap_or_default();
        wait_for_output(&mut fds, next_event.min(EXIT_CHECK_INTERVAL));
        for (pollfd, (index, stream)) in fds.iter().zip(owners) {
            if pollfd.revents != 0 {
                children[index].read(stream);
            }
        }
    }
}

/// Kills what the (reaped) children of a run left running: one scan of `/proc` for the tags of
/// those without a cgroup, `cgroup.kill` for the others, whose cgroups are then removed. Returns
/// how many tagged processes were killed.
pub fn kill_leftovers<'a, O: 'a>(children: impl IntoIterator<Item = &'a mut Supervised<O>>) -> usize {
    let mut tags = Vec::new();
    let mut groups = Vec::new();
    for child in children {
        match child.cgroup.take() {
            Some(group) => groups.push(group),
            None => tags.push(child.tag.clone()),
        }
    }
    let killed = cgroup::kill_tagged(&tags);
    for group in groups {
        group.kill();
        group.remove();
    }
    killed
}

/// `poll(2)` on `fds` for at most `wait` (rounded up to a millisecond).
fn wait_for_output(fds: &mut [libc::pollfd], wait: Duration) {
    let millis = wait.as_micros().div_ceil(1000).min(i32::MAX as u128) as libc::c_int;
    if fds.is_empty() {
        std::thread::sleep(Duration::from_millis(millis as u64));
        return;
    }
    // SAFETY: `fds` is a valid, exclusively borrowed slice of `pollfd` for the whole call and its
    // length is passed with it; the descriptors are owned by live `ChildStdout`/`ChildStderr`s.
    let ready = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, millis) };
    if ready < 0 {
        let error = io::Error::last_os_error();
        if error.kind() != io::ErrorKind::Interrupted {
            tracing::warn!(%error, "poll on probe child output");
            std::thread::sleep(Duration::from_millis(millis as u64));
        }
    }
}
