//! Containment of the probes' child processes (exec commands and fping processes, started by
//! `probe::child`), so that nothing a command starts outlives its run, not even a process that
//! left the command's process group or session (`setsid cmd &`, a double fork, a daemon).
//!
//! Two mechanisms, chosen once per process:
//!
//! - **cgroup v2** (when a cgroup2 hierarchy is mounted and writable, e.g. as root): each command
//!   runs in a cgroup of its own, `<our cgroup>/spoolmon-exec/<pid>-<n>/` (the child joins it
//!   between `fork` and `exec`, before it can start anything, by writing `0` into its
//!   `cgroup.procs`). Killing is `cgroup.kill` (Linux 5.14+; older kernels: SIGKILL to every pid
//!   in `cgroup.procs` until it is empty). A process cannot leave a cgroup without privileges,
//!   so every descendant is killed, whatever session or group it made. The cgroup is removed
//!   once empty; cgroups left by a daemon that was killed are emptied and removed when the next
//!   daemon starts.
//! - **Environment tag** (no writable cgroup v2: a container, an unprivileged user): each command
//!   gets `SPOOLMON_EXEC_TAG=<pid>-<n>` in its environment, which its descendants inherit; after
//!   the run every process whose environment holds one of the run's tags is killed (a scan of
//!   `/proc/*/environ`). This catches escapes by `setsid` and double forks, not a process that
//!   rewrites or clears its environment (`env -i`).
//!
//! In both modes the command's process group is killed too (`killpg`), at its deadline and when
//! it exits. `PR_SET_CHILD_SUBREAPER` is not used: it would make every orphan of every child
//! (fping's included) a zombie of the daemon, to be reaped by a wait that races with the waits
//! on our own children.

use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};
use tracing::{debug, info, warn};

/// The environment variable that tags a command and everything it starts.
pub const TAG_VARIABLE: &str = "SPOOLMON_EXEC_TAG";

/// Name of the cgroup, below the daemon's own, that holds the commands' cgroups.
const TREE_NAME: &str = "spoolmon-exec";

/// How long removing a killed command's cgroup waits for its processes to be gone.
const REMOVE_WAIT: Duration = Duration::from_secs(2);

static NEXT: AtomicU64 = AtomicU64::new(0);

/// A new tag / cgroup name, unique in this process and among live processes: `<pid>-<n>`.
pub fn next_name() -> String {
    format!("{}-{}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed))
}

/// `<our cgroup>/spoolmon-exec` if cgroup v2 can be used, found (and cleaned) once.
fn tree() -> Option<&'static Path> {
    static TREE: OnceLock<Option<PathBuf>> = OnceLock::new();
    TREE.get_or_init(|| match open_tree() {
        Ok(tree) => {
            info!(cgroup = %tree.display(), "exec probe commands run in a cgroup each (everything they start is killed with them)");
            Some(tree)
        }
        Err(why) => {
            info!("no writable cgroup v2 ({why}): exec probe commands' escaped processes are found by their {TAG_VARIABLE} environment variable");
            None
        }
    })
    .as_deref()
}

fn open_tree() -> Result<PathBuf, String> {
    let mount = cgroup2_mount().ok_or("no cgroup2 filesystem mounted")?;
    let own = fs::read_to_string("/proc/self/cgroup").map_err(|e| format!("/proc/self/cgroup: {e}"))?;
    let own = own
        .lines()
        .find_map(|line| line.strip_prefix("0::"))
        .ok_or("this process is in no cgroup v2")?;
    let tree = mount.join(own.trim_start_matches('/')).join(TREE_NAME);
    match fs::create_dir(&tree) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(format!("cannot create {}: {e}", tree.display())),
    }
    if !tree.join("cgroup.procs").exists() {
        return Err(format!("{} is not a cgroup", tree.display()));
    }
    remove_stale(&tree);
    Ok(tree)
}

/// The mount point of the cgroup2 filesystem, from `/proc/self/mountinfo`.
fn cgroup2_mount() -> Option<PathBuf> {
    let info = fs::read_to_string("/proc/self/mountinfo").ok()?;
    info.lines().find_map(|line| {
        let (left, right) = line.split_once(" - ")?;
        if right.split_whitespace().next()? != "cgroup2" {
            return None;
        }
        left.split_whitespace().nth(4).map(PathBuf::from)
    })
}

/// Empties and removes the cgroups of daemons that are gone (killed before removing them).
fn remove_stale(tree: &Path) {
    let Ok(entries) = fs::read_dir(tree) else { return };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some((pid, _)) = name.split_once('-') else { continue };
        if Path::new("/proc").join(pid).exists() {
            continue;
        }
        let group = CommandCgroup {
            dir: entry.path(),
            procs: None,
            removed: false,
        };
        group.kill();
        if group.remove() {
            info!(cgroup = %entry.path().display(), "removed the cgroup of an exec command of a daemon that is gone");
        }
    }
}

/// The cgroup of one command (see the module documentation).
#[derive(Debug)]
pub struct CommandCgroup {
    dir: PathBuf,
    /// `cgroup.procs`, open for writing (the child writes `0` into it before `exec`).
    procs: Option<File>,
    /// Set by [`CommandCgroup::remove`]; otherwise dropping kills and removes it.
    removed: bool,
}

impl CommandCgroup {
    /// A new, empty cgroup named `name`, or `None` when cgroups cannot be used (logged once).
    pub fn create(name: &str) -> Option<CommandCgroup> {
        let dir = tree()?.join(name);
        let created = fs::create_dir(&dir).and_then(|()| File::options().write(true).open(dir.join("cgroup.procs")));
        match created {
            Ok(procs) => Some(CommandCgroup {
                dir,
                procs: Some(procs),
                removed: false,
            }),
            Err(e) => {
                warn!(cgroup = %dir.display(), "cannot create a cgroup for an exec command, falling back to its environment tag: {e}");
                let _ = fs::remove_dir(&dir);
                None
            }
        }
    }

    /// The descriptor the child writes `0` into to join (async-signal-safe use only).
    pub fn procs_fd(&self) -> Option<RawFd> {
        self.procs.as_ref().map(|file| file.as_raw_fd())
    }

    /// Moves `pid` into the cgroup (a no-op if the child already joined it).
    pub fn add(&self, pid: u32) -> io::Result<()> {
        let mut procs = File::options().write(true).open(self.dir.join("cgroup.procs"))?;
        procs.write_all(pid.to_string().as_bytes())
    }

    /// True when `pid` is in this cgroup.
    pub fn holds(&self, pid: u32) -> bool {
        self.pids().contains(&pid)
    }

    fn pids(&self) -> Vec<u32> {
        let mut text = String::new();
        let read = File::open(self.dir.join("cgroup.procs")).and_then(|mut f| f.read_to_string(&mut text));
        if read.is_err() {
            return Vec::new();
        }
        text.lines().filter_map(|line| line.trim().parse().ok()).collect()
    }

    /// SIGKILL to every process in the cgroup.
    pub fn kill(&self) {
        let killed = File::options()
            .write(true)
            .open(self.dir.join("cgroup.kill"))
            .and_then(|mut file| file.write_all(b"1"));
        if killed.is_ok() {
            return;
        }
        // Before Linux 5.14: signal every member until none is left (new ones may be forking).
        for _ in 0..100 {
            let pids = self.pids();
            if pids.is_empty() {
                return;
            }
            for pid in pids {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid as i32),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    fn populated(&self) -> bool {
        match fs::read_to_string(self.dir.join("cgroup.events")) {
            Ok(events) => events.lines().any(|line| line == "populated 1"),
            Err(_) => !self.pids().is_empty(),
        }
    }

    /// Waits (at most [`REMOVE_WAIT`]) until the killed processes are gone and removes the
    /// cgroup; false (logged) when it is still busy: the next daemon start removes it.
    pub fn remove(mut self) -> bool {
        self.removed = true;
        self.procs = None;
        let deadline = Instant::now() + REMOVE_WAIT;
        while self.populated() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(2));
        }
        match fs::remove_dir(&self.dir) {
            Ok(()) => true,
            Err(e) => {
                warn!(cgroup = %self.dir.display(), "cannot remove a probe child's cgroup: {e}");
                false
            }
        }
    }
}

impl Drop for CommandCgroup {
    /// A command given up before it was finished (its pipes could not be set up): nothing of it
    /// may stay behind, not even its cgroup.
    fn drop(&mut self) {
        if !self.removed {
            self.kill();
            let group = CommandCgroup {
                dir: std::mem::take(&mut self.dir),
                procs: None,
                removed: false,
            };
            group.remove();
        }
    }
}

/// Kills every process whose environment holds `<TAG_VARIABLE>=<tag>` for one of `tags`
/// (the fallback without cgroups); returns how many were signalled.
pub fn kill_tagged(tags: &[String]) -> usize {
    if tags.is_empty() {
        return 0;
    }
    let wanted: Vec<Vec<u8>> = tags
        .iter()
        .map(|tag| format!("{TAG_VARIABLE}={tag}").into_bytes())
        .collect();
    let me = std::process::id();
    let mut killed = Vec::new();
    let Ok(entries) = fs::read_dir("/proc") else { return 0 };
    for entry in entries.flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else {
            continue;
        };
        if pid == me {
            continue;
        }
        let mut environ = Vec::new();
        let read = File::open(entry.path().join("environ")).and_then(|f| f.take(1 << 20).read_to_end(&mut environ));
        if read.is_err() {
            continue;
        }
        if environ
            .split(|&b| b == 0)
            .any(|var| wanted.iter().any(|w| var == w.as_slice()))
        {
            debug!(pid, "killing a process an exec command left behind");
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid as i32),
                nix::sys::signal::Signal::SIGKILL,
            );
            killed.push(pid);
        }
    }
    // SIGKILL is delivered asynchronously: wait (bounded) until each is dead (gone or a zombie).
    let deadline = Instant::now() + REMOVE_WAIT;
    while killed.iter().any(|&pid| is_alive(pid)) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(1));
    }
    killed.len()
}

/// True while `pid` exists and is not a zombie.
fn is_alive(pid: u32) -> bool {
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        // `pid (comm) S ...`: the state follows the last `)`.
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|state| state != "Z" && state != "X"),
        Err(_) => false,
    }
}
