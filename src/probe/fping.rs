//! The fping fallback: measures `fping` orders by running the real `fping` binary with
//! pingmachine's command line.
//!
//! Owns nothing on disk; it owns the fping child processes of a run and kills them by the run's
//! deadline, together with anything it started (each fping runs in a cgroup of its own, or carries
//! an environment tag, exactly as exec commands: `probe::child` supervises both), so a wrapper
//! script's leftover holding stderr can neither outlive the run nor keep it waiting.
//! Invariants: at most [`HOSTS_PER_PROCESS`] distinct addresses per process (several processes
//! run in parallel for bigger batches, all driven by the calling thread); a host listed by several
//! orders of the batch is pinged once and every such order gets that host's result; every result
//! has exactly `plan.pings` entries (missing, unparseable or cut-off pings are `None`), or is a
//! failure.
//!
//! Lost or not measured: a host's `-` values are lost pings, and so are the pings of a host fping
//! had no line for when it was killed at the deadline or interrupted. Not measured (a failure with
//! the reason, for every order of the host): fping cannot be started (`cannot run /usr/bin/fping:
//! No such file or directory`), it exits with a status above 2 without a line for the host (fping
//! itself failing: `fping: cannot bind source address`, no socket; its stderr is the reason), it
//! exits normally without a line for the host, or it printed `<host>: error while sending ping:
//! ...` for a host without any answer. fping 5.1 does not report a local send error with `-q`
//! (`ENETUNREACH` shows as `-`), so with this engine such pings stay lost; the native engine
//! tells them apart. Host names never reach fping: orders are resolved when read (a name that
//! does not resolve makes the order `unresolved`).
//!
//! Command line: `fping -q -p <P> -C <pings> -i 1 -t <T> [-S src] [-I if]`, hosts on stdin.
//! P is `plan.interval` in ms, at least [`MIN_PERIOD_MS`] (fping refuses smaller periods for
//! non-root users; pingmachine itself never goes below 1000). T is `plan.timeout` in ms (at least
//! 1); like pingmachine's fixed `-t 3000` it may exceed P.
//! fping prints `host : 0.04 - 0.05` (ms, `-` = lost) on stderr at the end, or at SIGINT with
//! the pings done so far; so the run sends SIGINT shortly before the deadline and SIGKILL at it.
//! fping stays in the daemon's process group (as it always did); its cgroup or tag contains it.
//!
//! Called by the scheduler (through `ProbeSet::icmp`) when the daemon chose `engine: fping`.

use crate::orders::order::ProbeSpec;
use crate::probe::child::{self, ChildError, Output, Placement, Stream, Supervised};
use crate::probe::{Outcome, Probe, ProbeFailure, Rtts, RunPlan};
use std::collections::HashMap;
use std::io::Write;
use std::net::IpAddr;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use tracing::{debug, warn};

/// Most distinct hosts given to one fping process (as pingmachine).
pub const HOSTS_PER_PROCESS: usize = 1000;
/// Smallest per-host period passed as `-p` (ms).
pub const MIN_PERIOD_MS: u64 = 10;
/// How long before the deadline fping is asked (SIGINT) to print what it has.
const INTERRUPT_GRACE: Duration = Duration::from_millis(300);
/// What the child supervisor calls an fping process in its log messages.
const LABEL: &str = "fping";

/// An fping process could not be run.
#[derive(Debug, thiserror::Error)]
pub enum FpingError {
    #[error("cannot run {path}: {source}")]
    Spawn { path: PathBuf, source: std::io::Error },
    #[error("cannot prepare the stderr pipe of {path}: {source}")]
    Pipe { path: PathBuf, source: nix::Error },
    #[error("cannot write the host list to {path} (first host {first_host}): {source}")]
    WriteHosts {
        path: PathBuf,
        first_host: IpAddr,
        source: std::io::Error,
    },
}

/// A line of fping output that is not a result line.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum FpingLineError {
    #[error("no ' : ' separator")]
    NoSeparator,
    #[error("value {0:?} is neither a number of milliseconds nor '-'")]
    BadValue(String),
    #[error("{found} values for {expected} pings")]
    TooManyValues { found: usize, expected: usize },
}

/// The fping probe.
pub struct FpingProbe {
    path: PathBuf,
}

impl FpingProbe {
    pub fn new(path: PathBuf) -> FpingProbe {
        FpingProbe { path }
    }

    /// The arguments of one fping process for `plan` and the batch's first spec.
    fn arguments(&self, plan: &RunPlan, source: Option<IpAddr>, interface: Option<&str>) -> Vec<String> {
        let period_ms = (plan.interval.as_millis() as u64).max(MIN_PERIOD_MS);
        let timeout_ms = (plan.timeout.as_millis() as u64).max(1);
        let mut args: Vec<String> = vec![
            "-q".into(),
            "-p".into(),
            period_ms.to_string(),
            "-C".into(),
            plan.pings.to_string(),
            "-i".into(),
            "1".into(),
            "-t".into(),
            timeout_ms.to_string(),
        ];
        if let Some(source) = source {
            args.extend(["-S".into(), source.to_string()]);
        }
        if let Some(interface) = interface {
            args.extend(["-I".into(), interface.to_owned()]);
        }
        args
    }

    /// Starts one fping for `hosts`, to be interrupted shortly before `deadline` and killed at
    /// it, and writes the host list to its stdin.
    fn spawn(&self, args: &[String], hosts: &[IpAddr], deadline: Instant) -> Result<RunningFping, FpingError> {
        let mut command = Command::new(&self.path);
        command
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let placement = Placement {
            process_group: false,
            cgroup: true,
        };
        let mut process =
            Supervised::spawn(LABEL, command, placement, Stderr::default(), deadline).map_err(|e| match e {
                ChildError::Spawn { source, .. } => FpingError::Spawn {
                    path: self.path.clone(),
                    source,
                },
                ChildError::Pipe { source, .. } => FpingError::Pipe {
                    path: self.path.clone(),
                    source,
                },
            })?;
        process.interrupt_at(deadline.checked_sub(INTERRUPT_GRACE).unwrap_or(deadline));
        let mut list = String::with_capacity(hosts.len() * 16);
        for host in hosts {
            list.push_str(&host.to_string());
            list.push('\n');
        }
        // Dropping stdin after the write closes it: fping starts pinging at end of input.
        let written = match process.take_stdin() {
            Some(mut stdin) => stdin.write_all(list.as_bytes()),
            None => Ok(()),
        };
        match written {
            Ok(()) => Ok(process),
            Err(source) => {
                process.abandon();
                Err(FpingError::WriteHosts {
                    path: self.path.clone(),
                    first_host: hosts[0],
                    source,
                })
            }
        }
    }
}

impl Probe for FpingProbe {
    fn run(&self, targets: &[&ProbeSpec], plan: &RunPlan) -> Vec<Outcome> {
        let pings = plan.pings as usize;
        let mut results: Vec<Outcome> = vec![Ok(vec![None; pings]); targets.len()];
        let (hosts, orders_of_host) = distinct_hosts(targets, &mut results);
        let first = targets.iter().find_map(|spec| match spec {
            ProbeSpec::Fping(fping) => Some(fping),
            _ => None,
        });
        let args = self.arguments(
            plan,
            first.and_then(|spec| spec.source_ip),
            first.and_then(|spec| spec.interface.as_deref()),
        );
        sleep_until(plan.start);
        let mut processes = Vec::new();
        for chunk in hosts.chunks(HOSTS_PER_PROCESS) {
            match self.spawn(&args, chunk, plan.deadline) {
                Ok(process) => processes.push((chunk, process)),
                Err(e) => {
                    debug!("{e}: those hosts are not measured");
                    let failure = ProbeFailure::new(&e);
                    for host in chunk {
                        set_all(&orders_of_host, *host, &Err(failure.clone()), &mut results);
                    }
                }
            }
        }
        let mut running: Vec<&mut RunningFping> = processes.iter_mut().map(|(_, process)| process).collect();
        child::drive(&mut running);
        child::kill_leftovers(processes.iter_mut().map(|(_, process)| process));
        let path = self.path.display().to_string();
        for (chunk, process) in processes {
            let report = finish(process, &path);
            let mut reported = HashMap::new();
            let mut send_errors: HashMap<IpAddr, String> = HashMap::new();
            for line in &report.lines {
                if let Some((host, error)) = send_error(line) {
                    send_errors.entry(host).or_insert_with(|| error.to_owned());
                    continue;
                }
                if let Some((host, rtts)) = result_line(line, pings) {
                    if orders_of_host.contains_key(&host) {
                        reported.insert(host, rtts);
                    } else {
                        warn!("fping reported host {host}, which was not asked for; ignored");
                    }
                }
            }
            for host in chunk {
                let outcome = match reported.remove(host) {
                    Some(rtts) => match send_errors.get(host) {
                        Some(error) if rtts.iter().all(Option::is_none) => {
                            Err(ProbeFailure::new(format!("fping could not send to {host}: {error}")))
                        }
                        _ => Ok(rtts),
                    },
                    None => report.missing(*host, pings),
                };
                set_all(&orders_of_host, *host, &outcome, &mut results);
            }
        }
        results
    }
}

/// Gives every order of the batch that asked for `host` the same outcome.
fn set_all(orders_of_host: &HashMap<IpAddr, Vec<usize>>, host: IpAddr, outcome: &Outcome, results: &mut [Outcome]) {
    for &position in orders_of_host.get(&host).map(Vec::as_slice).unwrap_or_default() {
        results[position].clone_from(outcome);
    }
}

/// Distinct addresses of the batch in first-seen order, and for each the batch positions that
/// asked for it. A non-fping spec is a failure in `results`.
fn distinct_hosts(targets: &[&ProbeSpec], results: &mut [Outcome]) -> (Vec<IpAddr>, HashMap<IpAddr, Vec<usize>>) {
    let mut hosts = Vec::new();
    let mut orders_of_host: HashMap<IpAddr, Vec<usize>> = HashMap::new();
    for (index, spec) in targets.iter().enumerate() {
        let ProbeSpec::Fping(fping) = spec else {
            results[index] = Err(ProbeFailure::new(format!(
                "the fping probe got a non-ICMP order ({spec:?})"
            )));
            continue;
        };
        let positions = orders_of_host.entry(fping.address).or_default();
        if positions.is_empty() {
            hosts.push(fping.address);
        }
        positions.push(index);
    }
    (hosts, orders_of_host)
}

/// The host and RTTs of a result line, or `None` (logged) for any other line.
fn result_line(line: &str, pings: usize) -> Option<(IpAddr, Rtts)> {
    let (host, rtts) = match parse_result_line(line, pings) {
        Ok(parsed) => parsed,
        Err(e) => {
            if !line.trim().is_empty() {
                warn!("ignoring fping output line {line:?}: {e}");
            }
            return None;
        }
    };
    match host.parse() {
        Ok(host) => Some((host, rtts)),
        Err(_) => {
            warn!("fping reported host {host:?}, which was not asked for; ignored");
            None
        }
    }
}

/// `<address>: error while sending ping: <error>`, fping's report of a ping it could not send.
pub fn send_error(line: &str) -> Option<(IpAddr, &str)> {
    let (host, error) = line.split_once(": error while sending ping: ")?;
    Some((host.trim().parse().ok()?, error.trim()))
}

/// Parses `host : 0.04 - 0.05` into the host and `pings` RTTs in seconds. Fewer values than
/// pings (fping interrupted) leave the rest `None`; more is an error.
pub fn parse_result_line(line: &str, pings: usize) -> Result<(&str, Rtts), FpingLineError> {
    let (host, values) = line.split_once(" : ").ok_or(FpingLineError::NoSeparator)?;
    let host = host.trim();
    if host.is_empty() || host.contains(char::is_whitespace) {
        return Err(FpingLineError::NoSeparator);
    }
    let mut rtts = Vec::with_capacity(pings);
    for value in values.split_whitespace() {
        rtts.push(parse_value(value)?);
    }
    if rtts.len() > pings {
        return Err(FpingLineError::TooManyValues {
            found: rtts.len(),
            expected: pings,
        });
    }
    rtts.resize(pings, None);
    Ok((host, rtts))
}

fn parse_value(value: &str) -> Result<Option<f64>, FpingLineError> {
    if value == "-" {
        return Ok(None);
    }
    match value.parse::<f64>() {
        Ok(ms) if ms.is_finite() && ms >= 0.0 => Ok(Some(ms / 1000.0)),
        _ => Err(FpingLineError::BadValue(value.to_owned())),
    }
}

/// One fping process of a run.
type RunningFping = Supervised<Stderr>;

/// Everything an fping process wrote on stderr (read as it comes, so fping never blocks on a
/// full pipe).
#[derive(Debug, Default)]
struct Stderr {
    bytes: Vec<u8>,
}

impl Output for Stderr {
    fn consume(&mut self, stream: Stream, bytes: &[u8]) {
        if stream == Stream::Stderr {
            self.bytes.extend_from_slice(bytes);
        }
    }

    fn end(&mut self, _stream: Stream) {}
}

impl Stderr {
    /// The lines, as `BufRead::lines` reads them (`\n` or `\r\n` removed, a last line without
    /// newline kept), up to the first line that is not UTF-8.
    fn lines(&self) -> Vec<String> {
        let mut lines = Vec::new();
        let mut rest = self.bytes.as_slice();
        while !rest.is_empty() {
            let (line, next) = match rest.iter().position(|&b| b == b'\n') {
                Some(newline) => {
                    let line = &rest[..newline];
                    (line.strip_suffix(b"\r").unwrap_or(line), &rest[newline + 1..])
                }
                None => (rest, &rest[rest.len()..]),
            };
            match std::str::from_utf8(line) {
                Ok(line) => lines.push(line.to_owned()),
                Err(_) => break,
            }
            rest = next;
        }
        lines
    }
}

/// How one fping process of a run ended, and what it printed on stderr.
struct Report {
    lines: Vec<String>,
    timed_out: bool,
    code: Option<i32>,
    path: String,
}

impl Report {
    /// The outcome of a host this process printed no result line for: lost when fping was
    /// killed at the deadline or by a signal (it was still pinging, or was interrupted), else
    /// not measured (an exit status above 2 is fping failing: bad source address, no socket; with
    /// 0 to 2 it simply reported nothing for that address).
    fn missing(&self, host: IpAddr, pings: usize) -> Outcome {
        let pings_lost = || Ok(vec![None; pings]);
        match self.code {
            _ if self.timed_out => pings_lost(),
            None => pings_lost(),
            Some(code) if code > 2 => {
                let said: String = self.lines.join(" | ").chars().take(STDERR_IN_REASON).collect();
                // fping(8): 3 invalid arguments, 4 a system call failed (it may say nothing).
                let meaning = match code {
                    3 => " (fping: invalid arguments)",
                    4 => " (fping: a system call failed, e.g. no permission for an ICMP socket: run as root or give fping cap_net_raw)",
                    _ => "",
                };
                Err(ProbeFailure::new(if said.trim().is_empty() {
                    format!("{} exited with status {code}{meaning}", self.path)
                } else {
                    format!("{} exited with status {code}{meaning}: {said}", self.path)
                }))
            }
            Some(code) => Err(ProbeFailure::new(format!(
                "{} reported no result for {host} (exit status {code})",
                self.path
            ))),
        }
    }
}

/// Most characters of fping's stderr quoted in a failure reason.
const STDERR_IN_REASON: usize = 300;

/// What a reaped process printed and how it ended; logs a kill at the deadline and unexpected
/// exit codes (1 and 2 mean unreachable or unknown hosts and are normal).
fn finish(process: RunningFping, path: &str) -> Report {
    let timed_out = process.timed_out();
    if timed_out {
        warn!(
            "fping process {} still running at the run's deadline: killed, its pings count as lost",
            process.pid()
        );
    }
    let code = process.status().and_then(|status| status.code());
    let lines = process.into_output().lines();
    if let Some(code) = code.filter(|&code| code > 2) {
        debug!("{path} exited with code {code}: {}", lines.join(" | "));
    }
    Report {
        lines,
        timed_out,
        code,
        path: path.to_owned(),
    }
}

fn sleep_until(at: Instant) {
    let now = Instant::now();
    if at > now {
        std::thread::sleep(at - now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, Ipv6Addr};
    use std::os::unix::fs::PermissionsExt;

    fn spec(address: IpAddr) -> ProbeSpec {
        ProbeSpec::fping_to(address)
    }

    fn plan(pings: u32, interval: Duration, deadline_after: Duration) -> RunPlan {
        let start = Instant::now();
        RunPlan {
            pings,
            interval,
            timeout: Duration::from_millis(500),
            start,
            deadline: start + deadline_after,
        }
    }

    fn outcomes(probe: &FpingProbe, specs: &[ProbeSpec], plan: &RunPlan) -> Vec<Outcome> {
        let refs: Vec<&ProbeSpec> = specs.iter().collect();
        let results = probe.run(&refs, plan);
        assert_eq!(results.len(), specs.len());
        for rtts in results.iter().flatten() {
            assert_eq!(rtts.len(), plan.pings as usize);
        }
        results
    }

    /// The RTTs of each spec; panics on one that was not measured.
    fn run(probe: &FpingProbe, specs: &[ProbeSpec], plan: &RunPlan) -> Vec<Rtts> {
        outcomes(probe, specs, plan)
            .into_iter()
            .map(|outcome| outcome.unwrap_or_else(|failure| panic!("not measured: {failure}")))
            .collect()
    }

    /// A shell script standing in for fping. Real fping cannot be made to print these faults on
    /// demand (5.1 never reports a failed send with `-q`, and always prints a line per address it
    /// was given), so the parsing of such output is tested with a script saying it.
    fn fake_fping(dir: &std::path::Path, body: &str) -> FpingProbe {
        let script = dir.join("fping");
        std::fs::write(&script, format!("#!/bin/sh\ncat >/dev/null\n{body}\n")).unwrap();
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
        FpingProbe::new(script)
    }

    fn real_fping() -> FpingProbe {
        FpingProbe::new(PathBuf::from("/usr/bin/fping"))
    }

    fn assert_answered(rtts: &Rtts) {
        for rtt in rtts {
            let rtt = rtt.unwrap_or_else(|| panic!("lost ping: {rtts:?}"));
            assert!(rtt > 0.0 && rtt < 0.5, "{rtt}");
        }
    }

    #[test]
    fn real_fping_answers_ipv4_and_ipv6_loopback() {
        let specs = vec![spec(Ipv4Addr::LOCALHOST.into()), spec(Ipv6Addr::LOCALHOST.into())];
        let plan = plan(3, Duration::from_millis(50), Duration::from_secs(10));
        for rtts in run(&real_fping(), &specs, &plan) {
            assert_answered(&rtts);
        }
    }

    #[test]
    fn duplicate_hosts_each_get_the_result() {
        let specs = vec![
            spec(Ipv4Addr::LOCALHOST.into()),
            spec([127, 0, 0, 5].into()),
            spec(Ipv4Addr::LOCALHOST.into()),
        ];
        let plan = plan(2, Duration::from_millis(20), Duration::from_secs(10));
        let results = run(&real_fping(), &specs, &plan);
        for rtts in &results {
            assert_answered(rtts);
        }
        assert_eq!(results[0], results[2]);
    }

    #[test]
    fn batch_larger_than_one_process_is_split_and_fully_answered() {
        let specs: Vec<ProbeSpec> = (0..1200u32)
            .map(|i| spec(IpAddr::from([127, 4, (i / 200) as u8, (i % 200 + 1) as u8])))
            .collect();
        let plan = plan(1, Duration::from_millis(20), Duration::from_secs(20));
        let results = run(&real_fping(), &specs, &plan);
        let lost = results.iter().flatten().filter(|rtt| rtt.is_none()).count();
        assert_eq!(lost, 0);
    }

    #[test]
    fn fping_running_into_the_deadline_keeps_early_pings_and_loses_the_rest() {
        // Left alone, this fping would ping loopback for 60 s (120 pings, 500 ms apart) and
        // answer every ping; the deadline is 1.6 s after the start.
        let specs = vec![spec(Ipv4Addr::LOCALHOST.into())];
        let plan = plan(120, Duration::from_millis(500), Duration::from_millis(1600));
        let results = run(&real_fping(), &specs, &plan);
        let returned = Instant::now();
        // Interrupted at the deadline, not run to its end: the pings it had done before the
        // interrupt count, the later rounds (answered had fping been left to run) are lost.
        assert!(results[0][0].is_some(), "{results:?}");
        assert_eq!(results[0][5..], [None; 115]);
        // It was waited for up to the interrupt, not abandoned early.
        assert!(returned >= plan.deadline - INTERRUPT_GRACE);
        // The deadline guarantee itself: the run ends by it. Not a timing threshold: 10 s of
        // slack is far more than a loaded machine needs to kill and reap one process, and far
        // less than the 58 s fping would still have run.
        assert!(
            returned < plan.deadline + Duration::from_secs(10),
            "the run waited for fping for {:?} after the deadline",
            returned - plan.deadline
        );
    }

    #[test]
    fn a_missing_binary_measures_nothing_and_says_why_for_every_order() {
        let probe = FpingProbe::new(PathBuf::from("/nonexistent/fping"));
        let specs = vec![spec(Ipv4Addr::LOCALHOST.into()), spec([127, 0, 0, 2].into())];
        let plan = plan(2, Duration::from_millis(20), Duration::from_secs(2));
        for outcome in outcomes(&probe, &specs, &plan) {
            let failure = outcome.expect_err("not measured");
            assert!(
                failure
                    .reason()
                    .starts_with("cannot run /nonexistent/fping: No such file or directory"),
                "{failure}"
            );
        }
    }

    #[test]
    fn real_fping_failing_to_bind_its_source_address_measures_nothing() {
        // 203.0.113.9 (TEST-NET-3) is no address of this machine: fping exits 4 at once.
        let specs = vec![ProbeSpec::Fping(crate::orders::order::FpingSpec {
            host: "127.0.0.1".into(),
            address: Ipv4Addr::LOCALHOST.into(),
            source_ip: Some([203, 0, 113, 9].into()),
            interface: None,
            interval_ms: None,
        })];
        let plan = plan(2, Duration::from_millis(20), Duration::from_secs(5));
        let failure = outcomes(&real_fping(), &specs, &plan)
            .remove(0)
            .expect_err("not measured");
        assert_eq!(
            failure.reason(),
            "/usr/bin/fping exited with status 4 (fping: a system call failed, e.g. no permission for an ICMP socket: \
             run as root or give fping cap_net_raw): /usr/bin/fping: cannot bind source address : Cannot assign requested address"
        );
    }

    #[test]
    fn real_fping_without_permission_for_an_icmp_socket_measures_nothing() {
        // The real binary, copied without its file capabilities, run as nobody: with the default
        // ping_group_range ("1 0": no group may open ping sockets) it cannot open a socket.
        let group_range = std::fs::read_to_string("/proc/sys/net/ipv4/ping_group_range").unwrap();
        let (low, high) = group_range.split_once(char::is_whitespace).unwrap();
        let (low, high): (u32, u32) = (low.trim().parse().unwrap(), high.trim().parse().unwrap());
        assert!(
            low > high || !(low..=high).contains(&65534),
            "ping_group_range {group_range:?} lets nobody open ping sockets: this test needs the kernel default"
        );
        let dir = tempfile::tempdir().unwrap();
        let copy = dir.path().join("fping-without-caps");
        std::fs::copy("/usr/bin/fping", &copy).unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let wrapper = dir.path().join("fping");
        std::fs::write(
            &wrapper,
            format!(
                "#!/bin/sh\nexec setpriv --reuid=65534 --regid=65534 --clear-groups {} \"$@\"\n",
                copy.display()
            ),
        )
        .unwrap();
        std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755)).unwrap();
        let probe = FpingProbe::new(wrapper);
        let specs = vec![spec(Ipv4Addr::LOCALHOST.into())];
        let plan = plan(2, Duration::from_millis(20), Duration::from_secs(5));
        let failure = outcomes(&probe, &specs, &plan).remove(0).expect_err("not measured");
        assert!(
            failure
                .reason()
                .contains("exited with status 4 (fping: a system call failed, e.g. no permission for an ICMP socket"),
            "{failure}"
        );
    }

    #[test]
    fn a_host_fping_says_nothing_about_or_could_not_send_to_is_not_measured() {
        let dir = tempfile::tempdir().unwrap();
        let probe = fake_fping(
            dir.path(),
            "echo '127.0.0.1 : 0.10 -' >&2\n\
             echo '127.0.0.2: error while sending ping: Network is unreachable' >&2\n\
             echo '127.0.0.2 : - -' >&2\n\
             echo '127.0.0.3: error while sending ping: No buffer space available' >&2\n\
             echo '127.0.0.3 : - 0.20' >&2\n\
             exit 1",
        );
        let specs: Vec<ProbeSpec> = (1..=4).map(|i| spec([127, 0, 0, i].into())).collect();
        let plan = plan(2, Duration::from_millis(20), Duration::from_secs(5));
        let results = outcomes(&probe, &specs, &plan);
        assert_eq!(results[0], Ok(vec![Some(0.0001), None]));
        let path = dir.path().join("fping");
        assert_eq!(
            results[1],
            Err(ProbeFailure::new(
                "fping could not send to 127.0.0.2: Network is unreachable"
            ))
        );
        assert_eq!(results[2], Ok(vec![None, Some(0.0002)]), "some answers: measured");
        assert_eq!(
            results[3],
            Err(ProbeFailure::new(format!(
                "{} reported no result for 127.0.0.4 (exit status 1)",
                path.display()
            )))
        );
    }

    #[test]
    fn fping_killed_at_the_deadline_loses_the_pings_of_hosts_without_a_line() {
        let dir = tempfile::tempdir().unwrap();
        // Ignores SIGINT and never prints: killed at the deadline.
        let probe = fake_fping(dir.path(), "trap '' INT\nexec sleep 60");
        let specs = vec![spec(Ipv4Addr::LOCALHOST.into())];
        let plan = plan(2, Duration::from_millis(20), Duration::from_millis(1500));
        assert_eq!(outcomes(&probe, &specs, &plan), vec![Ok(vec![None, None])]);
    }

    #[test]
    fn hostile_fping_output_is_skipped_and_good_lines_still_count() {
        let dir = tempfile::tempdir().unwrap();
        let script = dir.path().join("fping");
        let garbage = "x".repeat(1 << 20);
        std::fs::write(
            &script,
            format!(
                "#!/bin/sh\ncat >/dev/null\n\
                 echo '{garbage}' >&2\n\
                 echo '127.0.0.1 : 1.50 - 2.00' >&2\n\
                 echo '127.0.0.9 : 1.00 1.00 1.00' >&2\n\
                 echo '::1 : 0.10 0.20 0.30 0.40' >&2\n\
                 echo 'ICMP Host Unreachable from 10.0.0.1 for ICMP Echo sent to ::1' >&2\n\
                 printf '\\377\\376 : \\001\\n' >&2\n\
                 exit 3\n"
            ),
        )
        .unwrap();
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
        let specs = vec![spec(Ipv4Addr::LOCALHOST.into()), spec(Ipv6Addr::LOCALHOST.into())];
        let plan = plan(3, Duration::from_millis(20), Duration::from_secs(5));
        let results = outcomes(&FpingProbe::new(script), &specs, &plan);
        assert_eq!(results[0], Ok(vec![Some(0.0015), None, Some(0.002)]));
        // Exit 3 and no valid line for ::1: fping failed for it.
        let failure = results[1].as_ref().expect_err("no line for ::1");
        assert!(
            failure
                .reason()
                .contains("exited with status 3 (fping: invalid arguments): "),
            "{failure}"
        );
        assert!(
            failure.reason().len() <= crate::shared::measurement::MAX_FAILURE_LEN,
            "{}",
            failure.reason().len()
        );
    }

    #[test]
    fn a_wrapper_that_leaves_a_detached_child_holding_stderr_neither_blocks_nor_outlives_the_run() {
        let dir = tempfile::tempdir().unwrap();
        let script = dir.path().join("fping");
        let marker = format!("1000.{}7", std::process::id());
        std::fs::write(
            &script,
            format!("#!/bin/sh\ncat >/dev/null\nsetsid sleep {marker} &\necho '127.0.0.1 : 1.50' >&2\n"),
        )
        .unwrap();
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
        let specs = vec![spec(Ipv4Addr::LOCALHOST.into())];
        let plan = plan(1, Duration::from_millis(20), Duration::from_secs(5));
        assert_eq!(run(&FpingProbe::new(script), &specs, &plan), vec![vec![Some(0.0015)]]);
        let alive: Vec<_> = std::fs::read_dir("/proc")
            .unwrap()
            .flatten()
            .filter(|entry| {
                let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
                cmdline.split(|&b| b == 0).any(|arg| arg == marker.as_bytes())
            })
            .map(|entry| entry.file_name())
            .collect();
        assert!(alive.is_empty(), "sleep {marker} outlived the run: {alive:?}");
    }

    #[test]
    fn arguments_follow_pingmachine_with_period_and_timeout_floors() {
        let probe = real_fping();
        let mut plan = plan(5, Duration::from_millis(2500), Duration::from_secs(20));
        plan.timeout = Duration::from_secs(3);
        let args = probe.arguments(&plan, Some([127, 0, 0, 1].into()), Some("lo"));
        assert_eq!(args.join(" "), "-q -p 2500 -C 5 -i 1 -t 3000 -S 127.0.0.1 -I lo");
        plan.interval = Duration::from_micros(300);
        plan.timeout = Duration::from_micros(10);
        let args = probe.arguments(&plan, None, None);
        assert_eq!(args.join(" "), "-q -p 10 -C 5 -i 1 -t 1");
    }

    #[test]
    fn result_line_with_padding_and_losses_parses_to_seconds() {
        let (host, rtts) = parse_result_line("::1       : 0.022 - 1.5", 3).unwrap();
        assert_eq!(host, "::1");
        assert_eq!(rtts, vec![Some(0.000022), None, Some(0.0015)]);
    }

    #[test]
    fn interrupted_line_with_fewer_values_pads_with_lost() {
        let (_, rtts) = parse_result_line("127.0.0.1 : 0.5", 3).unwrap();
        assert_eq!(rtts, vec![Some(0.0005), None, None]);
        let (_, rtts) = parse_result_line("127.0.0.1 : ", 2).unwrap();
        assert_eq!(rtts, vec![None, None]);
    }

    #[test]
    fn malformed_result_lines_are_rejected() {
        let cases = [
            ("", FpingLineError::NoSeparator),
            ("127.0.0.1: 0.1", FpingLineError::NoSeparator),
            (" : 0.1", FpingLineError::NoSeparator),
            ("ICMP Host Unreachable from 1.2.3.4 : x", FpingLineError::NoSeparator),
            (
                "127.0.0.1 : 0.1 0.2 0.3",
                FpingLineError::TooManyValues { found: 3, expected: 2 },
            ),
            ("127.0.0.1 : abc", FpingLineError::BadValue("abc".into())),
            ("127.0.0.1 : NaN", FpingLineError::BadValue("NaN".into())),
            ("127.0.0.1 : inf", FpingLineError::BadValue("inf".into())),
            ("127.0.0.1 : -1", FpingLineError::BadValue("-1".into())),
            (
                "127.0.0.1 : duplicate for [0], 64 bytes, 0.05 ms",
                FpingLineError::BadValue("duplicate".into()),
            ),
        ];
        for (line, expected) in cases {
            assert_eq!(parse_result_line(line, 2).unwrap_err(), expected, "{line:?}");
        }
    }
}
