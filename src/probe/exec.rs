//! Exec probe (`exec`, `sping`, `pping` orders): runs one command per order per run and reads its
//! answered pings from its output.
//!
//! The command line is the order's `command` with placeholders substituted, then its `flags`
//! (see [`command_line`]). It is run directly (no shell), stdin from /dev/null, in its own process
//! group. Every stdout line with `time=<x> ms` (or `time=<x>ms`) is one answered ping of `x`
//! milliseconds; other lines are ignored, and so are answers beyond `pings` (see [`PingAnswers`]
//! for how `seq=` numbers place answers). Lines longer than [`MAX_LINE`] bytes are dropped and
//! stderr is kept only up to [`STDERR_CAP`] bytes (logged at debug on failure), so memory stays
//! bounded whatever the command prints.
//!
//! Lifetime: the command is killed (SIGKILL to its whole process group and to its cgroup, see
//! `probe::cgroup`) at `plan.deadline`, or `timeout_ms` after it started if the order sets one,
//! whichever comes first; pings it did not report by then are lost. When the command exits by
//! itself, whatever it left running is killed too, also what escaped its process group or
//! session (`setsid cmd &`): it is in the command's cgroup, or (without cgroup v2) found by the
//! command's environment tag after the run. Nothing outlives the run. A command that cannot be started
//! (missing binary, unusable placeholder) loses every ping and is warned about once per order
//! and distinct error.
//!
//! All commands of a run are driven by the calling thread with `poll(2)`: no thread per order.
//! Owns nothing on disk.

use super::warn_once::WarnOnce;
use super::{Probe, Rtts, RunPlan};
use crate::orders::order::{ExecKind, ExecSpec, ProbeSpec};
use nix::fcntl::{fcntl, FcntlArg, OFlag};
use nix::sys::signal::{killpg, Signal};
use nix::sys::wait::{waitid, Id, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;
use std::io::{self, Read};
use std::os::fd::{AsFd, AsRawFd};
use std::os::unix::process::CommandExt;
use std::process::{Child, ChildStderr, ChildStdout, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// Longest stdout line considered; longer lines are dropped whole.
pub const MAX_LINE: usize = 4096;

/// Most stderr bytes kept per command (for the debug log).
pub const STDERR_CAP: usize = 4096;

/// Bytes read from one pipe per call.
const READ_CHUNK: usize = 64 * 1024;

/// Chunks read from one pipe before the other pipes get their turn.
const CHUNKS_PER_TURN: usize = 16;

/// Longest sleep in `poll` while a command runs, so an exit without EOF (pipes kept open by a
/// background process) is noticed.
const EXIT_CHECK_INTERVAL: Duration = Duration::from_millis(100);

/// Why an order's command could not be run.
#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    #[error("command argument {argument:?} uses {placeholder} but the order sets no value for it")]
    UnsetPlaceholder {
        placeholder: &'static str,
        argument: String,
    },
    #[error("{placeholder} would be {value:?}, which the command would read as an option")]
    OptionLikeValue { placeholder: &'static str, value: String },
    #[error("the order's command is empty")]
    EmptyCommand,
    #[error("starting {program:?}: {source}")]
    Spawn { program: String, source: io::Error },
    #[error("preparing the output pipes of {program:?}: {source}")]
    Pipe { program: String, source: nix::Error },
    #[error("order {0} is not an exec order")]
    NotExec(String),
}

/// Runs exec-style orders. One instance serves concurrent runs.
#[derive(Debug)]
pub struct ExecProbe {
    warnings: WarnOnce,
    /// Run each command in a cgroup of its own when cgroup v2 is writable (else: tags only).
    cgroups: bool,
}

impl Default for ExecProbe {
    fn default() -> Self {
        ExecProbe::new()
    }
}

impl ExecProbe {
    pub fn new() -> ExecProbe {
        ExecProbe {
            warnings: WarnOnce::default(),
            cgroups: true,
        }
    }

    /// Without cgroups: escaped processes are found by their environment tag only.
    pub fn without_cgroups() -> ExecProbe {
        ExecProbe {
            cgroups: false,
            ..ExecProbe::new()
        }
    }

    /// Starts the command of one order, or warns (once) why it cannot be started.
    fn start(&self, spec: &ProbeSpec, plan: &RunPlan) -> Option<RunningCommand> {
        let ProbeSpec::Exec(spec) = spec else {
            let error = ExecError::NotExec(format!("{spec:?}"));
            self.warnings.warn("non-exec order", &error.to_string());
            return None;
        };
        let label = order_label(spec);
        let started = command_line(spec, plan)
            .and_then(|argv| RunningCommand::spawn(&argv, plan.pings, kill_time(spec, plan), self.cgroups));
        match started {
            Ok(command) => {
                self.warnings.forget(&label);
                Some(command)
            }
            Err(error) => {
                self.warnings.warn(&label, &error.to_string());
                None
            }
        }
    }
}

impl Probe for ExecProbe {
    fn run(&self, targets: &[&ProbeSpec], plan: &RunPlan) -> Vec<Rtts> {
        let lost = vec![None; plan.pings as usize];
        if plan.start >= plan.deadline {
            return vec![lost; targets.len()];
        }
        if let Some(wait) = plan.start.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        let mut commands: Vec<Option<RunningCommand>> = targets.iter().map(|spec| self.start(spec, plan)).collect();
        let mut running: Vec<&mut RunningCommand> = commands.iter_mut().flatten().collect();
        drive(&mut running);
        let tags: Vec<String> = commands
            .iter()
            .flatten()
            .filter(|command| command.cgroup.is_none())
            .map(|command| command.tag.clone())
            .collect();
        let killed = super::cgroup::kill_tagged(&tags);
        if killed > 0 {
            tracing::debug!(killed, "killed processes that exec commands left behind");
        }
        commands
            .into_iter()
            .zip(targets)
            .map(|(command, spec)| match (command, spec) {
                (Some(command), ProbeSpec::Exec(spec)) => command.finish(spec.kind, plan.pings),
                _ => lost.clone(),
            })
            .collect()
    }
}

/// When the command of `spec`, started now, must be gone: the deadline, or earlier with
/// `timeout_ms`.
fn kill_time(spec: &ExecSpec, plan: &RunPlan) -> Instant {
    match spec.timeout_ms {
        Some(ms) => plan.deadline.min(Instant::now() + Duration::from_millis(ms)),
        None => plan.deadline,
    }
}

/// How an order appears in warnings: its kind, host and command template.
fn order_label(spec: &ExecSpec) -> String {
    let host = spec.host.as_deref().unwrap_or("-");
    format!("{:?} {host} ({})", spec.kind, spec.command.join(" "))
}

/// The argv for one run: `spec.command` with placeholders substituted, then `spec.flags`
/// (appended as they are).
///
/// Substitution is a single pass: a value that itself looks like a placeholder stays literal.
/// A value starting with `-` is refused (it would be read as an option by the command).
///
/// Rules for a placeholder without a value (`{host}`, `{source_ip}` or `{interface}` that the
/// order does not set):
/// - an argument that is exactly that placeholder is removed, together with the argument just
///   before it when that one looks like an option taking a value (a template argument starting
///   with `-`, without `=` and without placeholder), so `-I {interface}` disappears as a whole;
/// - an argument that merely contains it (`--src={source_ip}`) is an error: substituting an
///   empty string would silently change the command's meaning.
///
/// Unknown `{...}` text is left as it is.
pub fn command_line(spec: &ExecSpec, plan: &RunPlan) -> Result<Vec<String>, ExecError> {
    let pings = plan.pings.to_string();
    let interval_ms = plan.interval.as_millis().to_string();
    let source_ip = spec.source_ip.map(|ip| ip.to_string());
    let values = PlaceholderValues {
        host: spec.host.as_deref(),
        pings: &pings,
        interval_ms: &interval_ms,
        source_ip: source_ip.as_deref(),
        interface: spec.interface.as_deref(),
    };
    // Each argument with whether it is an option that may take the next argument as value.
    let mut argv: Vec<(String, bool)> = Vec::with_capacity(spec.command.len() + spec.flags.len());
    for argument in &spec.command {
        let whole_placeholder = PLACEHOLDERS.into_iter().find(|p| p == argument);
        if whole_placeholder.map(|p| values.get(p)).transpose()? == Some(None) {
            if argv.len() > 1 && argv.last().is_some_and(|(_, option)| *option) {
                argv.pop();
            }
            continue;
        }
        let option = argument.len() > 1
            && argument.starts_with('-')
            && !argument.contains('=')
            && !PLACEHOLDERS.iter().any(|p| argument.contains(p));
        argv.push((substitute(argument, &values)?, option));
    }
    if argv.first().is_none_or(|(program, _)| program.is_empty()) {
        return Err(ExecError::EmptyCommand);
    }
    let mut argv: Vec<String> = argv.into_iter().map(|(argument, _)| argument).collect();
    argv.extend(spec.flags.iter().cloned());
    Ok(argv)
}

/// The placeholders [`command_line`] knows.
const PLACEHOLDERS: [&str; 5] = ["{host}", "{pings}", "{interval_ms}", "{source_ip}", "{interface}"];

/// What each placeholder stands for in one run (`None`: the order sets no value).
struct PlaceholderValues<'a> {
    host: Option<&'a str>,
    pings: &'a str,
    interval_ms: &'a str,
    source_ip: Option<&'a str>,
    interface: Option<&'a str>,
}

impl PlaceholderValues<'_> {
    /// The value of `placeholder` (one of [`PLACEHOLDERS`]); an error if it looks like an option.
    fn get(&self, placeholder: &'static str) -> Result<Option<&str>, ExecError> {
        let value = match placeholder {
            "{host}" => self.host,
            "{pings}" => Some(self.pings),
            "{interval_ms}" => Some(self.interval_ms),
            "{source_ip}" => self.source_ip,
            _ => self.interface,
        };
        match value {
            Some(value) if value.starts_with('-') => Err(ExecError::OptionLikeValue {
                placeholder,
                value: value.to_owned(),
            }),
            _ => Ok(value),
        }
    }
}

/// Replaces every placeholder in `argument` in one pass.
fn substitute(argument: &str, values: &PlaceholderValues) -> Result<String, ExecError> {
    let mut result = String::with_capacity(argument.len());
    let mut rest = argument;
    while let Some(open) = rest.find('{') {
        result.push_str(&rest[..open]);
        rest = &rest[open..];
        let Some(placeholder) = PLACEHOLDERS.into_iter().find(|p| rest.starts_with(p)) else {
            result.push('{');
            rest = &rest[1..];
            continue;
        };
        let value = values.get(placeholder)?.ok_or_else(|| ExecError::UnsetPlaceholder {
            placeholder,
            argument: argument.to_owned(),
        })?;
        result.push_str(value);
        rest = &rest[placeholder.len()..];
    }
    result.push_str(rest);
    Ok(result)
}

/// Parses one output line: `Some((seq, rtt_seconds))` when it reports an answered ping.
///
/// The RTT is the decimal number after `time=`, directly followed by `ms` or ` ms` (and then not
/// by a letter). The sequence number is the integer after the first `seq=` (which also matches
/// `icmp_seq=` and `scmp_seq=`).
pub fn parse_ping_line(line: &str) -> Option<(Option<u64>, f64)> {
    let after_time = &line[line.find("time=")? + "time=".len()..];
    let number_len = after_time
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(after_time.len());
    let milliseconds: f64 = after_time[..number_len].parse().ok()?;
    let unit = after_time[number_len..]
        .strip_prefix(' ')
        .unwrap_or(&after_time[number_len..]);
    let rest = unit.strip_prefix("ms")?;
    if rest.starts_with(|c: char| c.is_ascii_alphabetic()) || !milliseconds.is_finite() {
        return None;
    }
    let seq = line.find("seq=").and_then(|at| {
        let digits = &line[at + "seq=".len()..];
        let len = digits.find(|c: char| !c.is_ascii_digit()).unwrap_or(digits.len());
        digits[..len].parse().ok()
    });
    Some((seq, milliseconds / 1000.0))
}

/// The answered pings of one command, in the order they were printed (at most `pings`).
///
/// Placement into the result ([`PingAnswers::into_rtts`]): an answer with a sequence number goes
/// to slot `seq - base`; answers without one fill the free slots in order. The base is 0 if any
/// answer has seq 0, else 1 if any has seq == `pings`, else the convention of the tool: 1 for
/// `exec` (iputils ping counts from 1), 0 for `sping`/`pping` (SCION ping counts from 0). A
/// sequence number seen twice (a duplicate reply) or outside the run is ignored.
#[derive(Debug)]
pub struct PingAnswers {
    pings: usize,
    answers: Vec<(Option<u64>, f64)>,
}

impl PingAnswers {
    pub fn new(pings: u32) -> PingAnswers {
        PingAnswers {
            pings: pings as usize,
            answers: Vec::new(),
        }
    }

    /// Records `line` if it reports an answer and there is room for it.
    pub fn add_line(&mut self, line: &str) {
        if self.answers.len() >= self.pings {
            return;
        }
        let Some((seq, rtt)) = parse_ping_line(line) else {
            return;
        };
        if seq.is_some() && self.answers.iter().any(|(seen, _)| *seen == seq) {
            return;
        }
        self.answers.push((seq, rtt));
    }

    /// Places the answers into `pings` slots (see the type's documentation).
    pub fn into_rtts(self, kind: ExecKind) -> Rtts {
        let seqs = || self.answers.iter().filter_map(|(seq, _)| *seq);
        let base = if seqs().any(|seq| seq == 0) {
            0
        } else if seqs().any(|seq| seq == self.pings as u64) || kind == ExecKind::Exec {
            1
        } else {
            0
        };
        let mut rtts: Rtts = vec![None; self.pings];
        for (seq, rtt) in &self.answers {
            let Some(seq) = seq else { continue };
            let slot = seq.checked_sub(base).and_then(|s| usize::try_from(s).ok());
            match slot.and_then(|slot| rtts.get_mut(slot)) {
                Some(entry @ None) => *entry = Some(*rtt),
                _ => tracing::debug!(seq, base, "exec probe: answer outside the run ignored"),
            }
        }
        let mut free = (0..self.pings).filter(|&slot| rtts[slot].is_none()).collect::<Vec<_>>();
        free.reverse();
        for (_, rtt) in self.answers.iter().filter(|(seq, _)| seq.is_none()) {
            if let Some(slot) = free.pop() {
                rtts[slot] = Some(*rtt);
            }
        }
        rtts
    }
}

/// Splits a byte stream into lines of at most [`MAX_LINE`] bytes; longer lines are dropped whole.
#[derive(Debug, Default)]
pub struct LineSplitter {
    partial: Vec<u8>,
    overlong: bool,
}

impl LineSplitter {
    /// Feeds `bytes`, calling `on_line` for every complete line (without its newline).
    pub fn push(&mut self, mut bytes: &[u8], on_line: &mut impl FnMut(&str)) {
        while let Some(newline) = bytes.iter().position(|&b| b == b'\n') {
            self.append(&bytes[..newline]);
            if !self.overlong {
                on_line(&String::from_utf8_lossy(&self.partial));
            }
            self.partial.clear();
            self.overlong = false;
            bytes = &bytes[newline + 1..];
        }
        self.append(bytes);
    }

    /// Ends the stream: a last line without newline still counts.
    pub fn finish(&mut self, on_line: &mut impl FnMut(&str)) {
        if !self.partial.is_empty() && !self.overlong {
            on_line(&String::from_utf8_lossy(&self.partial));
        }
        self.partial.clear();
        self.overlong = false;
    }

    /// Bytes currently held for an unfinished line (never more than [`MAX_LINE`]).
    pub fn buffered(&self) -> usize {
        self.partial.len()
    }

    fn append(&mut self, bytes: &[u8]) {
        if self.overlong {
            return;
        }
        if self.partial.len() + bytes.len() > MAX_LINE {
            self.partial.clear();
            self.overlong = true;
            return;
        }
        self.partial.extend_from_slice(bytes);
    }
}

/// One started command and what has been read from it so far.
struct RunningCommand {
    program: String,
    child: Child,
    /// The command's own cgroup (killed with it, removed after it), if cgroups are used.
    cgroup: Option<super::cgroup::CommandCgroup>,
    /// Value of its `SPOOLMON_EXEC_TAG`, inherited by everything it starts.
    tag: String,
    stdout: Option<ChildStdout>,
    stderr: Option<ChildStderr>,
    lines: LineSplitter,
    stderr_head: Vec<u8>,
    answers: PingAnswers,
    kill_at: Instant,
    group_killed: bool,
    timed_out: bool,
    status: Option<ExitStatus>,
}

/// Which output pipe of a command.
#[derive(Clone, Copy, Debug)]
enum Pipe {
    Stdout,
    Stderr,
}

impl RunningCommand {
    /// Starts `argv` in its own process group with non-blocking output pipes.
    /// With `cgroups`, in a new cgroup it joins before `exec`.
    fn spawn(argv: &[String], pings: u32, kill_at: Instant, cgroups: bool) -> Result<RunningCommand, ExecError> {
        let program = argv[0].clone();
        let tag = super::cgroup::next_name();
        let mut cgroup = cgroups.then(|| super::cgroup::CommandCgroup::create(&tag)).flatten();
        let mut builder = Command::new(&program);
        builder
            .args(&argv[1..])
            .env(super::cgroup::TAG_VARIABLE, &tag)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0);
        if let Some(fd) = cgroup.as_ref().and_then(|group| group.procs_fd()) {
            // SAFETY: the closure runs in the child between fork and exec and only calls
            // write(2), which is async-signal-safe; `fd` stays open until after the spawn.
            unsafe {
                builder.pre_exec(move || {
                    // "0" moves the writing process itself; a failure is caught by `holds` below.
                    let _ = libc::write(fd, b"0".as_ptr().cast(), 1);
                    Ok(())
                });
            }
        }
        let spawned = builder.spawn().map_err(|source| ExecError::Spawn {
            program: program.clone(),
            source,
        });
        let mut child = match spawned {
            Ok(child) => child,
            Err(e) => {
                if let Some(group) = cgroup.take() {
                    group.remove();
                }
                return Err(e);
            }
        };
        if let Some(group) = &cgroup {
            if !group.holds(child.id()) && group.add(child.id()).is_err() {
                tracing::warn!(%program, "an exec command could not join its cgroup: what it leaves behind is found by its environment tag");
                cgroup.take().map(super::cgroup::CommandCgroup::remove);
            }
        }
        let (stdout, stderr) = (child.stdout.take(), child.stderr.take());
        let mut command = RunningCommand {
            program,
            child,
            cgroup,
            tag,
            stdout,
            stderr,
            lines: LineSplitter::default(),
            stderr_head: Vec::new(),
            answers: PingAnswers::new(pings),
            kill_at,
            group_killed: false,
            timed_out: false,
            status: None,
        };
        if let Err(source) = command.make_pipes_non_blocking() {
            command.kill_group();
            command.reap();
            return Err(ExecError::Pipe {
                program: command.program,
                source,
            });
        }
        Ok(command)
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

    fn pgid(&self) -> Pid {
        Pid::from_raw(self.child.id() as i32)
    }

    /// SIGKILL to the whole process group. Only called while the leader is not reaped yet, so the
    /// group id cannot have been reused.
    fn kill_group(&mut self) {
        if self.group_killed {
            return;
        }
        self.group_killed = true;
        if let Err(error) = killpg(self.pgid(), Signal::SIGKILL) {
            if error != nix::errno::Errno::ESRCH {
                tracing::warn!(program = %self.program, %error, "killing exec probe command");
            }
        }
        // Everything it started, whatever process group or session it is in now.
        match &self.cgroup {
            Some(group) => group.kill(),
            None => {
                super::cgroup::kill_tagged(std::slice::from_ref(&self.tag));
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
                tracing::warn!(program = %self.program, %error, "waiting for exec probe command");
                self.status = Some(ExitStatus::default());
            }
        }
    }

    /// Handles the passage of time: kills at the time limit, notices an exit.
    fn check(&mut self, now: Instant) {
        if self.status.is_none() && now >= self.kill_at {
            self.timed_out = true;
            self.kill_group();
            self.read(Pipe::Stdout);
            self.read(Pipe::Stderr);
            self.reap();
        }
        if self.status.is_none() && self.leader_exited() {
            // Leave nothing behind; the leader stays a zombie until reaped, so its pgid is safe.
            self.kill_group();
            self.reap();
        }
        if self.status.is_some() && now >= self.kill_at {
            // Pipes still held open by something that escaped the process group: stop reading.
            self.close(Pipe::Stdout);
            self.close(Pipe::Stderr);
        }
    }

    fn leader_exited(&self) -> bool {
        let flags = WaitPidFlag::WEXITED | WaitPidFlag::WNOHANG | WaitPidFlag::WNOWAIT;
        !matches!(waitid(Id::Pid(self.pgid()), flags), Ok(WaitStatus::StillAlive))
    }

    fn is_done(&self) -> bool {
        self.status.is_some() && self.stdout.is_none() && self.stderr.is_none()
    }

    /// Reads what `pipe` has now (up to a fair share); closes it at end of file or on error.
    fn read(&mut self, pipe: Pipe) {
        let mut buffer = vec![0u8; READ_CHUNK];
        for _ in 0..CHUNKS_PER_TURN {
            let result = match pipe {
                Pipe::Stdout => self.stdout.as_mut().map(|p| p.read(&mut buffer)),
                Pipe::Stderr => self.stderr.as_mut().map(|p| p.read(&mut buffer)),
            };
            match result {
                None => return,
                Some(Ok(0)) => return self.close(pipe),
                Some(Ok(n)) => self.consume(pipe, &buffer[..n]),
                Some(Err(e)) if e.kind() == io::ErrorKind::WouldBlock => return,
                Some(Err(e)) if e.kind() == io::ErrorKind::Interrupted => continue,
                Some(Err(error)) => {
                    tracing::debug!(program = %self.program, %error, ?pipe, "reading exec output");
                    return self.close(pipe);
                }
            }
        }
    }

    fn consume(&mut self, pipe: Pipe, bytes: &[u8]) {
        match pipe {
            Pipe::Stdout => {
                let answers = &mut self.answers;
                self.lines.push(bytes, &mut |line| answers.add_line(line));
            }
            Pipe::Stderr => {
                let room = STDERR_CAP.saturating_sub(self.stderr_head.len());
                self.stderr_head.extend_from_slice(&bytes[..bytes.len().min(room)]);
            }
        }
    }

    fn close(&mut self, pipe: Pipe) {
        match pipe {
            Pipe::Stdout => {
                if self.stdout.take().is_some() {
                    let answers = &mut self.answers;
                    self.lines.finish(&mut |line| answers.add_line(line));
                }
            }
            Pipe::Stderr => self.stderr = None,
        }
    }

    /// Logs how the command ended and returns its RTTs; its cgroup is removed.
    fn finish(mut self, kind: ExecKind, pings: u32) -> Rtts {
        if let Some(group) = self.cgroup.take() {
            group.kill();
            group.remove();
        }
        let stderr = String::from_utf8_lossy(&self.stderr_head);
        if self.timed_out {
            tracing::debug!(program = %self.program, %stderr, "exec probe command killed at its time limit");
        } else if let Some(status) = self.status.filter(|status| !status.success()) {
            tracing::debug!(program = %self.program, %status, %stderr, "exec probe command failed");
        }
        let rtts = self.answers.into_rtts(kind);
        debug_assert_eq!(rtts.len(), pings as usize);
        rtts
    }
}

/// Drives every command until it is done: reads output as it comes, kills at time limits.
fn drive(commands: &mut [&mut RunningCommand]) {
    loop {
        let now = Instant::now();
        for command in commands.iter_mut() {
            command.check(now);
        }
        if commands.iter().all(|command| command.is_done()) {
            return;
        }
        let mut fds = Vec::new();
        let mut owners = Vec::new();
        for (index, command) in commands.iter().enumerate() {
            let pipes = [
                (Pipe::Stdout, command.stdout.as_ref().map(|p| p.as_raw_fd())),
                (Pipe::Stderr, command.stderr.as_ref().map(|p| p.as_raw_fd())),
            ];
            for (pipe, fd) in pipes {
                if let Some(fd) = fd {
                    fds.push(libc::pollfd {
                        fd,
                        events: libc::POLLIN,
                        revents: 0,
                    });
                    owners.push((index, pipe));
                }
            }
        }
        let next_limit = commands
            .iter()
            .filter(|command| !command.is_done())
            .map(|command| command.kill_at.saturating_duration_since(now))
            .min()
            .unwrap_or_default();
        let wait = next_limit.min(EXIT_CHECK_INTERVAL);
        wait_for_output(&mut fds, wait);
        for (pollfd, (index, pipe)) in fds.iter().zip(owners) {
            if pollfd.revents != 0 {
                commands[index].read(pipe);
            }
        }
    }
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
            tracing::warn!(%error, "poll on exec probe output");
            std::thread::sleep(Duration::from_millis(millis as u64));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::IpAddr;

    fn exec(kind: ExecKind, command: &[&str]) -> ExecSpec {
        ExecSpec {
            kind,
            command: command.iter().map(|s| s.to_string()).collect(),
            host: Some("127.0.0.1".into()),
            source_ip: None,
            interface: None,
            flags: vec![],
            timeout_ms: None,
        }
    }

    /// A shell script run as the command (the probe itself never uses a shell).
    fn script(body: &str) -> ExecSpec {
        exec(ExecKind::Exec, &["/bin/sh", "-c", body])
    }

    fn plan(pings: u32, deadline: Duration) -> RunPlan {
        let start = Instant::now();
        RunPlan {
            pings,
            interval: Duration::from_millis(250),
            timeout: Duration::from_secs(1),
            start,
            deadline: start + deadline,
        }
    }

    fn run(probe: &ExecProbe, specs: &[ExecSpec], plan: &RunPlan) -> Vec<Rtts> {
        let specs: Vec<ProbeSpec> = specs.iter().cloned().map(ProbeSpec::Exec).collect();
        let refs: Vec<&ProbeSpec> = specs.iter().collect();
        probe.run(&refs, plan)
    }

    /// The expected RTT in seconds for a printed `time=<x> ms`.
    fn ms(x: f64) -> Option<f64> {
        Some(x / 1000.0)
    }

    /// Live processes whose command line holds `marker` (zombies have none).
    fn processes_with(marker: &str) -> Vec<u32> {
        let mut found = Vec::new();
        for entry in std::fs::read_dir("/proc").unwrap().flatten() {
            let Some(pid) = entry.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else {
                continue;
            };
            let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
            if cmdline.split(|&b| b == 0).any(|arg| arg == marker.as_bytes()) {
                found.push(pid);
            }
        }
        found
    }

    /// A `sleep` argument no other process has: `1000.<pid><n>` seconds.
    fn unique_sleep() -> String {
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(1);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        format!("1000.{}{n}", std::process::id())
    }

    #[test]
    fn a_process_that_escaped_into_its_own_session_dies_with_its_command_in_both_modes() {
        for (mode, probe) in [("cgroup", ExecProbe::new()), ("tag", ExecProbe::without_cgroups())] {
            // Exits at once, leaving a sleeper in a new session holding stdout.
            let exits = unique_sleep();
            // Runs into its deadline, with a sleeper in a new session.
            let overruns = unique_sleep();
            let specs = [
                script(&format!("setsid sleep {exits} & echo time=1 ms")),
                script(&format!("setsid sleep {overruns} & echo time=2 ms; sleep 1000")),
            ];
            let rtts = run(&probe, &specs, &plan(1, Duration::from_secs(2)));
            assert_eq!(rtts, [vec![ms(1.0)], vec![ms(2.0)]], "{mode}");
            for marker in [&exits, &overruns] {
                assert_eq!(
                    processes_with(marker),
                    Vec::<u32>::new(),
                    "{mode}: sleep {marker} outlived its run"
                );
            }
        }
    }

    fn run_one(spec: ExecSpec, pings: u32) -> Rtts {
        run(&ExecProbe::new(), &[spec], &plan(pings, Duration::from_secs(20))).remove(0)
    }

    const PING_OUTPUT: &str = "printf '%s\\n' \
        'PING 127.0.0.1 (127.0.0.1) 56(84) bytes of data.' \
        '64 bytes from 127.0.0.1: icmp_seq=1 ttl=64 time=0.045 ms' \
        '64 bytes from 127.0.0.1: icmp_seq=2 ttl=64 time=0.051 ms' \
        '64 bytes from 127.0.0.1: icmp_seq=3 ttl=64 time=12.5 ms' \
        '' '--- 127.0.0.1 ping statistics ---' \
        '3 packets transmitted, 3 received, 0% packet loss, time 2003ms' \
        'rtt min/avg/max/mdev = 0.045/4.198/12.500/5.871 ms'";

    #[test]
    fn iputils_ping_output_gives_one_rtt_per_reply_in_seconds() {
        let rtts = run_one(script(PING_OUTPUT), 3);
        assert_eq!(rtts, vec![ms(0.045), ms(0.051), ms(12.5)]);
    }

    /// The iputils `ping` binary, if this machine has one.
    fn ping_binary() -> Option<&'static str> {
        ["/usr/bin/ping", "/bin/ping"]
            .into_iter()
            .find(|path| std::path::Path::new(path).exists())
    }

    #[test]
    fn real_ping_binary_to_loopback_answers_every_ping() {
        let Some(ping) = ping_binary() else {
            eprintln!(
                "SKIPPED real_ping_binary_to_loopback_answers_every_ping: no ping binary \
                 (iputils-ping) installed; the sh-script tests cover the parsing"
            );
            return;
        };
        let spec = exec(ExecKind::Exec, &[ping, "-n", "-c", "{pings}", "-i", "0.2", "{host}"]);
        let rtts = run_one(spec, 3);
        assert!(
            rtts.iter().all(|rtt| rtt.is_some_and(|s| s > 0.0 && s < 1.0)),
            "{rtts:?}"
        );
    }

    #[test]
    fn replies_are_placed_by_their_sequence_number() {
        // Reply 2 lost, 3 printed before 1, a duplicate of 1 ignored.
        let body = "printf '%s\\n' 'icmp_seq=3 time=3 ms' 'icmp_seq=1 time=1 ms' \
                    'icmp_seq=1 time=9 ms (DUP!)'; exit 1";
        assert_eq!(run_one(script(body), 3), vec![ms(1.0), None, ms(3.0)]);
    }

    #[test]
    fn sequence_base_is_detected_from_zero_or_last_sequence_number() {
        let zero_based = "printf '%s\\n' 'scmp_seq=0 time=1ms' 'scmp_seq=2 time=3ms'";
        assert_eq!(run_one(script(zero_based), 3), vec![ms(1.0), None, ms(3.0)]);
        let one_based = "printf '%s\\n' 'seq=2 time=2ms' 'seq=3 time=3ms'";
        assert_eq!(run_one(script(one_based), 3), vec![None, ms(2.0), ms(3.0)]);
    }

    #[test]
    fn sequence_base_defaults_to_the_tools_convention() {
        let body = "printf '%s\\n' 'seq=1 time=1ms'";
        let mut sping = script(body);
        sping.kind = ExecKind::Sping;
        assert_eq!(run_one(sping, 3), vec![None, ms(1.0), None]);
        assert_eq!(run_one(script(body), 3), vec![ms(1.0), None, None]);
    }

    #[test]
    fn lines_without_sequence_fill_in_order_and_extra_answers_are_ignored() {
        let body = "printf '%s\\n' 'time=1 ms' 'noise time=abc ms' 'time=5 s' 'time=2 msec' \
                    'time=2ms' 'time=3 ms' 'time=4 ms'; printf 'time=5 ms'";
        assert_eq!(run_one(script(body), 3), vec![ms(1.0), ms(2.0), ms(3.0)]);
    }

    #[test]
    fn last_line_without_newline_counts() {
        let body = "printf 'icmp_seq=1 time=7 ms'";
        assert_eq!(run_one(script(body), 1), vec![ms(7.0)]);
    }

    /// Whether `pid` is dead (gone, or a zombie waiting for its new parent). SIGKILL is delivered
    /// asynchronously, so this waits up to 10 s for a killed process to finish dying; a process
    /// that was never killed (a 600 s sleep) is still alive then. A pid reused by an unrelated
    /// program (other command line) counts as gone.
    fn process_is_gone(pid: &str) -> bool {
        let alive = || {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            let state = stat.rsplit(')').next().unwrap_or_default().trim_start();
            let ours = cmdline.starts_with(b"sleep") || cmdline.starts_with(b"/bin/sh");
            !stat.is_empty() && !state.starts_with('Z') && ours
        };
        for _ in 0..200 {
            if !alive() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        false
    }

    #[test]
    fn command_running_past_the_deadline_is_killed_with_its_children() {
        let dir = tempfile::tempdir().expect("tempdir");
        let pids = dir.path().join("pids");
        let body = format!(
            "echo $$ > {0}; sleep 600 & echo $! >> {0}; \
             echo 'icmp_seq=1 time=1 ms'; wait",
            pids.display()
        );
        let started = Instant::now();
        let rtts = run(
            &ExecProbe::new(),
            &[script(&body)],
            &plan(3, Duration::from_millis(700)),
        );
        assert_eq!(rtts, vec![vec![ms(1.0), None, None]]);
        // Not a timing bound: the script alone would run for 600 s.
        assert!(
            started.elapsed() < Duration::from_secs(300),
            "run waited for the script"
        );
        let pids = std::fs::read_to_string(&pids).expect("pids");
        let pids: Vec<&str> = pids.lines().collect();
        assert_eq!(pids.len(), 2, "{pids:?}");
        for pid in pids {
            assert!(process_is_gone(pid), "process {pid} outlived the run");
        }
    }

    #[test]
    fn timeout_ms_kills_the_command_before_the_deadline() {
        let mut spec = script("echo 'seq=1 time=2 ms'; exec sleep 60");
        spec.timeout_ms = Some(300);
        let plan = plan(2, Duration::from_secs(60));
        let rtts = run(&ExecProbe::new(), &[spec], &plan);
        assert_eq!(rtts, vec![vec![ms(2.0), None]]);
        assert!(Instant::now() < plan.deadline, "waited for the deadline");
    }

    #[test]
    fn background_process_left_by_a_finished_command_is_killed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let pid_file = dir.path().join("pid");
        let body = format!(
            "sleep 60 >/dev/null 2>&1 & echo $! > {}; echo 'seq=1 time=1 ms'",
            pid_file.display()
        );
        let rtts = run_one(script(&body), 1);
        assert_eq!(rtts, vec![ms(1.0)]);
        let pid = std::fs::read_to_string(&pid_file).expect("pid");
        assert!(process_is_gone(pid.trim()), "background sleep {pid} survived");
    }

    #[test]
    fn slow_command_does_not_delay_the_others() {
        let slow = script("sleep 60");
        let quick = script("echo 'seq=1 time=4 ms'");
        let rtts = run(&ExecProbe::new(), &[slow, quick], &plan(1, Duration::from_millis(800)));
        assert_eq!(rtts, vec![vec![None], vec![ms(4.0)]]);
    }

    #[test]
    fn ten_megabytes_of_garbage_are_streamed_and_a_later_answer_still_counts() {
        // 10 MB of short garbage lines, then one 10 MB line without newline, then an answer.
        let body = "yes 'garbage line with time=but no number' | head -c 10000000; \
                    head -c 10000000 /dev/zero | tr '\\0' x; echo; \
                    echo 'icmp_seq=1 time=0.5 ms'";
        assert_eq!(run_one(script(body), 2), vec![ms(0.5), None]);
    }

    #[test]
    fn line_splitter_never_holds_more_than_max_line() {
        let mut splitter = LineSplitter::default();
        let mut lines = Vec::new();
        let chunk = vec![b'x'; 1 << 20];
        for _ in 0..10 {
            splitter.push(&chunk, &mut |line| lines.push(line.to_owned()));
            assert!(splitter.buffered() <= MAX_LINE);
        }
        splitter.push(b"\nshort\n", &mut |line| lines.push(line.to_owned()));
        assert_eq!(lines, vec!["short".to_owned()]);
    }

    #[test]
    fn stderr_flood_is_capped() {
        let body = "head -c 5000000 /dev/zero >&2; echo 'seq=1 time=1 ms'; exit 3";
        let spec = script(body);
        let plan = plan(1, Duration::from_secs(20));
        let argv = command_line(&spec, &plan).expect("argv");
        let mut command = RunningCommand::spawn(&argv, 1, plan.deadline, true).expect("spawn");
        drive(&mut [&mut command]);
        assert_eq!(command.stderr_head.len(), STDERR_CAP);
        assert_eq!(command.status.and_then(|s| s.code()), Some(3));
        assert_eq!(command.finish(ExecKind::Exec, 1), vec![ms(1.0)]);
    }

    #[test]
    fn missing_binary_loses_every_ping_and_is_warned_about_once() {
        let spec = exec(ExecKind::Pping, &["/nonexistent/pping", "{host}"]);
        let probe = ExecProbe::new();
        let plan = plan(2, Duration::from_secs(5));
        assert_eq!(run(&probe, std::slice::from_ref(&spec), &plan), vec![vec![None, None]]);
        assert_eq!(run(&probe, std::slice::from_ref(&spec), &plan), vec![vec![None, None]]);
        let argv = command_line(&spec, &plan).expect("argv");
        let error = RunningCommand::spawn(&argv, 2, plan.deadline, true)
            .err()
            .expect("error");
        // Already logged by the first run: a repeat is suppressed.
        assert!(!probe.warnings.warn(&order_label(&spec), &error.to_string()));
    }

    #[test]
    fn placeholders_are_substituted_and_flags_appended_without_a_shell() {
        let dir = tempfile::tempdir().expect("tempdir");
        let out = dir.path().join("argv");
        let mut spec = exec(
            ExecKind::Sping,
            &[
                "/bin/sh",
                "-c",
                "printf '%s\\n' \"$@\" > \"$0\"",
                out.to_str().expect("utf-8 path"),
                "{host}",
                "-c",
                "{pings}",
                "--interval={interval_ms}ms",
                "-I",
                "{interface}",
                "--local",
                "{source_ip}",
                "$HOME;{unknown}",
            ],
        );
        spec.host = Some("1-ff00:0:110,10.0.0.1".into());
        spec.source_ip = Some("192.0.2.7".parse::<IpAddr>().expect("ip"));
        spec.flags = vec!["--sequence".into(), "x y".into()];
        run_one(spec, 4);
        let argv = std::fs::read_to_string(&out).expect("argv file");
        let expected = "1-ff00:0:110,10.0.0.1\n-c\n4\n--interval=250ms\n--local\n192.0.2.7\n\
                        $HOME;{unknown}\n--sequence\nx y\n";
        assert_eq!(argv, expected);
    }

    #[test]
    fn unset_placeholder_inside_an_argument_is_an_error_not_an_empty_string() {
        let spec = exec(ExecKind::Exec, &["ping", "--src={source_ip}", "{host}"]);
        let plan = plan(2, Duration::from_secs(5));
        assert!(matches!(
            command_line(&spec, &plan),
            Err(ExecError::UnsetPlaceholder {
                placeholder: "{source_ip}",
                ..
            })
        ));
        assert_eq!(run(&ExecProbe::new(), &[spec], &plan), vec![vec![None, None]]);
    }

    #[test]
    fn hostile_values_are_not_substituted_twice_nor_read_as_options() {
        let plan = plan(2, Duration::from_secs(5));
        let mut spec = exec(ExecKind::Sping, &["scion", "ping", "{host}", "--src", "{source_ip}"]);
        spec.host = Some("{source_ip}{pings}".into());
        spec.source_ip = Some("10.0.0.1".parse::<IpAddr>().expect("ip"));
        let argv = command_line(&spec, &plan).expect("argv");
        assert_eq!(argv, ["scion", "ping", "{source_ip}{pings}", "--src", "10.0.0.1"]);
        spec.host = Some("--dispatcher=/tmp/evil".into());
        assert!(matches!(
            command_line(&spec, &plan),
            Err(ExecError::OptionLikeValue {
                placeholder: "{host}",
                ..
            })
        ));
    }

    #[test]
    fn unset_placeholder_after_a_placeholder_or_first_argument_removes_only_itself() {
        let plan = plan(2, Duration::from_secs(5));
        let mut spec = exec(ExecKind::Exec, &["-tool", "{interface}", "-x={pings}", "{source_ip}"]);
        spec.host = None;
        assert_eq!(command_line(&spec, &plan).expect("argv"), ["-tool", "-x=2"]);
    }

    #[test]
    fn command_made_only_of_unset_placeholders_is_empty() {
        let mut spec = exec(ExecKind::Exec, &["{interface}"]);
        spec.host = None;
        assert!(matches!(
            command_line(&spec, &plan(1, Duration::from_secs(1))),
            Err(ExecError::EmptyCommand)
        ));
    }

    #[test]
    fn ping_line_parser_accepts_only_millisecond_times() {
        assert_eq!(
            parse_ping_line("icmp_seq=7 ttl=64 time=1.5 ms"),
            Some((Some(7), 1.5 / 1000.0))
        );
        assert_eq!(parse_ping_line("time=2ms"), Some((None, 2.0 / 1000.0)));
        assert_eq!(
            parse_ping_line("seq=99999999999999999999999 time=1 ms"),
            Some((None, 1.0 / 1000.0))
        );
        for hostile in [
            "time=",
            "time=ms",
            "time=1.2.3 ms",
            "time=1 s",
            "time=1 msec",
            "time<1ms",
            "tim=1 ms",
            "time=\u{663} ms",
        ] {
            assert_eq!(parse_ping_line(hostile), None, "{hostile}");
        }
    }
}
