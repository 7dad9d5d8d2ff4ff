//! Exec probe (`exec`, `sping`, `pping` orders): runs one command per order per run and reads its
//! answered pings from its output.
//!
//! The command line is the order's `command` with placeholders substituted, then its `flags`
//! (see [`command_line`], in `template`). It is run directly (no shell), stdin from /dev/null, in
//! its own process group. Every stdout line with `time=<x> ms` (or `time=<x>ms`) is one answered
//! ping of `x` milliseconds; other lines are ignored, and so are answers beyond `pings` (see
//! [`PingAnswers`], in `output`, for how `seq=` numbers place answers). Lines longer than
//! [`MAX_LINE`] bytes are dropped and stderr is kept only up to [`STDERR_CAP`] bytes (logged at
//! debug on failure), so memory stays bounded whatever the command prints.
//!
//! Lifetime (`probe::child` supervises the commands): the command is killed (SIGKILL to its whole
//! process group and to its cgroup, see `probe::cgroup`) at `plan.deadline`, or `timeout_ms` after
//! it started if the order sets one, whichever comes first; pings it did not report by then are
//! lost. When the command exits by itself, whatever it left running is killed too, also what
//! escaped its process group or session (`setsid cmd &`): it is in the command's cgroup, or
//! (without cgroup v2) found by the command's environment tag after the run. Nothing outlives the
//! run.
//!
//! Lost or not measured: a command that cannot be started (missing binary, not executable, an
//! unusable placeholder) measured nothing: the order's result is a failure with the reason
//! (`cannot run /usr/bin/nosuch: No such file or directory (os error 2)`). So is a command that
//! reported no answer and ended by itself without printing anything on stdout, or with an exit
//! status other than 0 and 1, or by a signal the probe did not send (see [`unmeasured`]): that is
//! a tool that could not ping (`ping: nosuch.invalid: Name or service not known`, exit 2), and its
//! stderr's head is the reason. A command that printed its lines and exits 0 or 1 without an
//! answer (iputils `ping` to a silent target: the `PING` header, `100% packet loss`, exit 1), or
//! that is killed at its time limit, measured: its pings are lost.
//!
//! All commands of a run are driven by the calling thread with `poll(2)`: no thread per order.
//! Owns nothing on disk. Called by the scheduler (through `ProbeSet::exec`), built by the daemon.

mod output;
mod template;

pub use output::{parse_ping_line, ExecOutput, LineSplitter, PingAnswers, MAX_LINE, STDERR_CAP};
pub use template::{command_line, TemplateError};

use super::child::{self, ChildError, Placement, Supervised};
use super::warn_once::WarnOnce;
use super::{Outcome, Probe, ProbeFailure, RunPlan};
use crate::orders::order::{ExecKind, ExecSpec, ProbeSpec};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Why an order's command could not be run.
#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    #[error(transparent)]
    Template(#[from] TemplateError),
    #[error(transparent)]
    Child(#[from] ChildError),
    #[error("order {0} is not an exec order")]
    NotExec(String),
}

/// What the child supervisor calls an exec command in its log messages.
const LABEL: &str = "exec probe command";

/// One started command of a run.
type RunningCommand = Supervised<ExecOutput>;

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

    /// Starts the command of one order, or says why it cannot be started (logged at debug,
    /// once per order and reason: the reason travels with the result, and processing logs when
    /// the order starts failing).
    fn start(&self, spec: &ProbeSpec, plan: &RunPlan) -> Result<RunningCommand, ProbeFailure> {
        let ProbeSpec::Exec(spec) = spec else {
            return Err(ProbeFailure::new(ExecError::NotExec(format!("{spec:?}"))));
        };
        let label = order_label(spec);
        let started = command_line(spec, plan)
            .map_err(ExecError::from)
            .and_then(|argv| spawn(&argv, plan.pings, kill_time(spec, plan), self.cgroups));
        match started {
            Ok(command) => {
                self.warnings.forget(&label);
                Ok(command)
            }
            Err(error) => {
                let failure = ProbeFailure::new(&error);
                if self.warnings.remember(&label, failure.reason()) {
                    tracing::debug!(order = %label, "exec probe cannot start the command: {failure}");
                }
                Err(failure)
            }
        }
    }
}

impl Probe for ExecProbe {
    fn run(&self, targets: &[&ProbeSpec], plan: &RunPlan) -> Vec<Outcome> {
        let lost = vec![None; plan.pings as usize];
        if plan.start >= plan.deadline {
            return vec![Ok(lost); targets.len()];
        }
        if let Some(wait) = plan.start.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        let mut commands: Vec<Result<RunningCommand, ProbeFailure>> =
            targets.iter().map(|spec| self.start(spec, plan)).collect();
        let mut running: Vec<&mut RunningCommand> = commands.iter_mut().flatten().collect();
        child::drive(&mut running);
        let killed = child::kill_leftovers(commands.iter_mut().flatten());
        if killed > 0 {
            tracing::debug!(killed, "killed processes that exec commands left behind");
        }
        commands
            .into_iter()
            .zip(targets)
            .map(|(command, spec)| match (command, spec) {
                (Ok(command), ProbeSpec::Exec(spec)) => finish(command, spec.kind, plan.pings),
                (Ok(_), _) => Err(ProbeFailure::new("not an exec order")),
                (Err(failure), _) => Err(failure),
            })
            .collect()
    }
}

/// Starts `argv` in its own process group with stdin from /dev/null and its output read into an
/// [`ExecOutput`]. With `cgroups`, in a new cgroup it joins before `exec`.
fn spawn(argv: &[String], pings: u32, kill_at: Instant, cgroups: bool) -> Result<RunningCommand, ExecError> {
    let mut command = Command::new(&argv[0]);
    command
        .args(&argv[1..])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let placement = Placement {
        process_group: true,
        cgroup: cgroups,
    };
    Ok(Supervised::spawn(
        LABEL,
        command,
        placement,
        ExecOutput::new(pings),
        kill_at,
    )?)
}

/// Logs how the (reaped) command ended and returns its RTTs, or why it measured nothing (see
/// [`unmeasured`]).
fn finish(command: RunningCommand, kind: ExecKind, pings: u32) -> Outcome {
    let program = command.program().to_owned();
    let (timed_out, status) = (command.timed_out(), command.status());
    let output = command.into_output();
    let stderr = String::from_utf8_lossy(&output.stderr_head);
    if timed_out {
        tracing::debug!(%program, %stderr, "exec probe command killed at its time limit");
    } else if let Some(status) = status.filter(|status| !status.success()) {
        tracing::debug!(%program, %status, %stderr, "exec probe command failed");
    }
    let ended = Ended {
        answered: output.answers.count() > 0,
        printed: output.printed,
        timed_out,
        status,
    };
    if let Some(reason) = unmeasured(&program, &ended, &stderr) {
        return Err(ProbeFailure::new(reason));
    }
    let rtts = output.answers.into_rtts(kind);
    debug_assert_eq!(rtts.len(), pings as usize);
    Ok(rtts)
}

/// What the output parser saw of one command that was started.
#[derive(Clone, Copy, Debug)]
struct Ended {
    /// At least one stdout line reported an answered ping.
    answered: bool,
    /// At least one non-blank stdout line (of at most [`MAX_LINE`] bytes) was printed.
    printed: bool,
    /// Killed at the run's deadline or the order's `timeout_ms`.
    timed_out: bool,
    status: Option<std::process::ExitStatus>,
}

/// Most characters of a command's stderr quoted in its failure reason.
const STDERR_IN_REASON: usize = 300;

/// Why a command that ran measured nothing, if it did not: it reported no answer AND ended by
/// itself (not killed at its time limit) either without printing anything on stdout, or with an
/// exit status other than 0 and 1, or killed by a signal the probe did not send. A ping tool that
/// printed its lines and exits 1 (iputils `ping`: no reply at all) measured: its pings are lost.
/// So is a command killed at its time limit: it was still waiting for answers.
fn unmeasured(program: &str, ended: &Ended, stderr: &str) -> Option<String> {
    if ended.answered || ended.timed_out {
        return None;
    }
    let status = ended.status?;
    let how = match status.code() {
        Some(0 | 1) if ended.printed => return None,
        Some(code) if ended.printed => format!("exited with status {code} without reporting a ping"),
        Some(code) => format!("exited with status {code} without printing anything"),
        None => {
            use std::os::unix::process::ExitStatusExt;
            let signal = status.signal().unwrap_or_default();
            format!("was killed by signal {signal} without reporting a ping")
        }
    };
    let stderr = stderr.trim();
    Some(if stderr.is_empty() {
        format!("{program} {how}")
    } else {
        let head: String = stderr.chars().take(STDERR_IN_REASON).collect();
        format!("{program} {how}: {head}")
    })
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

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use crate::probe::Rtts;
    use std::net::IpAddr;

    pub(super) fn exec(kind: ExecKind, command: &[&str]) -> ExecSpec {
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

    pub(super) fn plan(pings: u32, deadline: Duration) -> RunPlan {
        let start = Instant::now();
        RunPlan {
            pings,
            interval: Duration::from_millis(250),
            timeout: Duration::from_secs(1),
            start,
            deadline: start + deadline,
        }
    }

    /// The RTTs of each spec; panics on one that was not measured.
    fn run(probe: &ExecProbe, specs: &[ExecSpec], plan: &RunPlan) -> Vec<Rtts> {
        outcomes(probe, specs, plan)
            .into_iter()
            .map(|outcome| outcome.unwrap_or_else(|failure| panic!("not measured: {failure}")))
            .collect()
    }

    fn outcomes(probe: &ExecProbe, specs: &[ExecSpec], plan: &RunPlan) -> Vec<Outcome> {
        let specs: Vec<ProbeSpec> = specs.iter().cloned().map(ProbeSpec::Exec).collect();
        let refs: Vec<&ProbeSpec> = specs.iter().collect();
        probe.run(&refs, plan)
    }

    /// Why the one command of `spec` measured nothing (panics if it measured).
    fn failure_of(spec: ExecSpec, pings: u32) -> String {
        let outcome = outcomes(&ExecProbe::new(), &[spec], &plan(pings, Duration::from_secs(20))).remove(0);
        match outcome {
            Err(failure) => failure.reason().to_owned(),
            Ok(rtts) => panic!("measured: {rtts:?}"),
        }
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

    /// The iputils `ping` binary; the test fails (it does not pass unmeasured) without one.
    fn ping_binary() -> &'static str {
        ["/usr/bin/ping", "/bin/ping"]
            .into_iter()
            .find(|path| std::path::Path::new(path).exists())
            .expect("no ping binary in /usr/bin or /bin: install iputils-ping (apt-get install iputils-ping)")
    }

    #[test]
    fn real_ping_binary_to_loopback_answers_every_ping() {
        let ping = ping_binary();
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
        // The deadline leaves a loaded machine seconds to start the script and read its answer.
        let rtts = run(&ExecProbe::new(), &[script(&body)], &plan(3, Duration::from_secs(3)));
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
        // Seconds to start the script and read its answer, a minute less than the deadline.
        spec.timeout_ms = Some(2000);
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
        // The deadline leaves a loaded machine seconds to start `quick` and read its answer.
        let rtts = run(&ExecProbe::new(), &[slow, quick], &plan(1, Duration::from_secs(3)));
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
    fn stderr_flood_is_capped() {
        let body = "head -c 5000000 /dev/zero >&2; echo 'seq=1 time=1 ms'; exit 3";
        let spec = script(body);
        let plan = plan(1, Duration::from_secs(20));
        let argv = command_line(&spec, &plan).expect("argv");
        let mut command = spawn(&argv, 1, plan.deadline, true).expect("spawn");
        child::drive(&mut [&mut command]);
        assert_eq!(command.output().stderr_head.len(), STDERR_CAP);
        assert_eq!(command.status().and_then(|s| s.code()), Some(3));
        child::kill_leftovers([&mut command]);
        assert_eq!(finish(command, ExecKind::Exec, 1), Ok(vec![ms(1.0)]));
    }

    #[test]
    fn a_missing_binary_is_not_measured_and_logged_once() {
        let spec = exec(ExecKind::Pping, &["/nonexistent/pping", "{host}"]);
        let probe = ExecProbe::new();
        let plan = plan(2, Duration::from_secs(5));
        for _ in 0..2 {
            let outcome = outcomes(&probe, std::slice::from_ref(&spec), &plan).remove(0);
            let failure = outcome.expect_err("not measured");
            assert!(
                failure
                    .reason()
                    .starts_with("cannot run /nonexistent/pping: No such file or directory"),
                "{failure}"
            );
        }
        let argv = command_line(&spec, &plan).expect("argv");
        let error = spawn(&argv, 2, plan.deadline, true).err().expect("error");
        // Already noted by the first run: a repeat is not logged again.
        let reason = ProbeFailure::new(&error);
        assert!(!probe.warnings.remember(&order_label(&spec), reason.reason()));
    }

    #[test]
    fn a_command_that_is_not_executable_is_not_measured() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("tempdir");
        let script = dir.path().join("ping-like");
        std::fs::write(&script, "#!/bin/sh\necho 'seq=1 time=1 ms'\n").expect("write");
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        let path = script.to_str().expect("utf-8");
        let reason = failure_of(exec(ExecKind::Exec, &[path]), 1);
        assert_eq!(reason, format!("cannot run {path}: Permission denied (os error 13)"));
        // A script whose interpreter is missing.
        std::fs::write(&script, "#!/nonexistent/sh\necho 'seq=1 time=1 ms'\n").expect("write");
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        let reason = failure_of(exec(ExecKind::Exec, &[path]), 1);
        assert!(
            reason.starts_with(&format!("cannot run {path}: No such file")),
            "{reason}"
        );
    }

    #[test]
    fn a_command_that_ends_without_reporting_is_told_from_a_silent_target() {
        // Printed nothing: not measured, whatever the status; stderr's head is the reason.
        assert_eq!(
            failure_of(script("exit 0"), 2),
            "/bin/sh exited with status 0 without printing anything"
        );
        assert_eq!(
            failure_of(script("echo 'no such host' >&2; exit 1"), 2),
            "/bin/sh exited with status 1 without printing anything: no such host"
        );
        // Printed, but a status that is not ping's "no reply": not measured.
        assert_eq!(
            failure_of(script("echo usage; echo 'bad option -Z' >&2; exit 64"), 2),
            "/bin/sh exited with status 64 without reporting a ping: bad option -Z"
        );
        assert_eq!(
            failure_of(script("echo starting; kill -9 $$"), 2),
            "/bin/sh was killed by signal 9 without reporting a ping"
        );
        // Printed its lines, no answer, exit 0 or 1: measured, every ping lost.
        let silent = "printf '%s\\n' 'PING 192.0.2.1 (192.0.2.1) 56(84) bytes of data.' '' \
                      '2 packets transmitted, 0 received, 100% packet loss, time 1001ms'; exit 1";
        assert_eq!(run_one(script(silent), 2), vec![None, None]);
        assert_eq!(run_one(script("echo nothing answered"), 2), vec![None, None]);
        // An answer is a measurement whatever the status.
        assert_eq!(
            run_one(script("echo 'seq=1 time=1 ms'; exit 2"), 2),
            vec![ms(1.0), None]
        );
        // Hostile stderr: a terminal escape and a flood end as one short line.
        let reason = failure_of(
            script("printf '\\033[2J\\r\\n'; yes evil | head -c 100000 >&2; exit 2"),
            1,
        );
        assert!(
            reason.starts_with("/bin/sh exited with status 2 without reporting a ping: evil evil"),
            "{reason}"
        );
        assert!(
            reason.len() < 400 && !reason.contains('\n') && !reason.contains('\u{1b}'),
            "{reason}"
        );
    }

    #[test]
    fn the_classification_of_a_command_that_ran() {
        use std::os::unix::process::ExitStatusExt;
        let ended = |answered, printed, timed_out, raw: i32| Ended {
            answered,
            printed,
            timed_out,
            status: Some(std::process::ExitStatus::from_raw(raw)),
        };
        let exit = |code: i32| code << 8;
        assert_eq!(unmeasured("p", &ended(true, true, false, exit(2)), ""), None);
        assert_eq!(
            unmeasured("p", &ended(false, false, true, 9), ""),
            None,
            "killed at its limit: lost"
        );
        assert_eq!(unmeasured("p", &ended(false, true, false, exit(1)), ""), None);
        assert_eq!(unmeasured("p", &ended(false, true, false, exit(0)), ""), None);
        assert_eq!(
            unmeasured("p", &ended(false, true, false, exit(2)), " oops \n").as_deref(),
            Some("p exited with status 2 without reporting a ping: oops")
        );
        assert_eq!(
            unmeasured("p", &ended(false, false, false, exit(1)), "").as_deref(),
            Some("p exited with status 1 without printing anything")
        );
        assert_eq!(
            unmeasured("p", &ended(false, true, false, 15), "").as_deref(),
            Some("p was killed by signal 15 without reporting a ping")
        );
    }

    #[test]
    fn real_ping_to_a_name_that_does_not_resolve_is_not_measured() {
        let ping = ping_binary();
        let spec = exec(ExecKind::Exec, &[ping, "-n", "-c", "{pings}", "nosuch.invalid"]);
        let reason = failure_of(spec, 2);
        assert_eq!(
            reason,
            format!("{ping} exited with status 2 without printing anything: {ping}: nosuch.invalid: Name or service not known")
        );
    }

    #[test]
    fn real_ping_to_a_silent_target_is_measured_as_lost() {
        // In a network namespace of its own whose kernel ignores echo requests: ping prints its
        // header and statistics and exits 1 (no reply at all). Nothing leaves the namespace.
        let ping = ping_binary();
        let body = format!(
            "ip link set lo up && echo 1 > /proc/sys/net/ipv4/icmp_echo_ignore_all && \
             exec {ping} -n -c {{pings}} -i 0.2 -W 1 127.0.0.1"
        );
        let spec = exec(ExecKind::Exec, &["unshare", "-n", "/bin/sh", "-c", &body]);
        assert_eq!(run_one(spec, 2), vec![None, None]);
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
        // It prints nothing (not measured): only its arguments matter here.
        let _ = outcomes(&ExecProbe::new(), &[spec], &plan(4, Duration::from_secs(20)));
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
            Err(TemplateError::UnsetPlaceholder {
                placeholder: "{source_ip}",
                ..
            })
        ));
        let outcome = outcomes(&ExecProbe::new(), &[spec], &plan).remove(0);
        let failure = outcome.expect_err("not measured");
        assert!(
            failure
                .reason()
                .contains("uses {source_ip} but the order sets no value"),
            "{failure}"
        );
    }
}
