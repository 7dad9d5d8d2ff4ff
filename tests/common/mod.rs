//! Test harness: a base directory in a temp dir and a real `spoolmon run` process on it.
#![allow(dead_code)]

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub mod kafka;
pub mod nodes;
pub mod servers;
pub mod tls;

pub const BIN: &str = env!("CARGO_BIN_EXE_spoolmon");

/// A temporary base directory with helpers to write orders and run the daemon.
pub struct Base {
    pub dir: tempfile::TempDir,
}

impl Base {
    pub fn new() -> Base {
        let base = Base {
            dir: tempfile::tempdir().expect("tempdir"),
        };
        fs::create_dir_all(base.path().join("orders")).unwrap();
        base
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn join(&self, rel: &str) -> PathBuf {
        self.path().join(rel)
    }

    /// Writes `orders/<id>` atomically (temp name, then rename, as clients should).
    pub fn write_order(&self, id: &str, yaml: &str) {
        let path = self.join(&format!("orders/{id}"));
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        let tmp = path.with_file_name(format!(".{}.tmp", path.file_name().unwrap().to_string_lossy()));
        fs::write(&tmp, yaml).unwrap();
        fs::rename(&tmp, &path).unwrap();
    }

    pub fn write_config(&self, yaml: &str) -> PathBuf {
        let path = self.join("spoolmon.yaml");
        fs::write(&path, yaml).unwrap();
        path
    }

    /// Starts `spoolmon <global...> <command> --base-dir <base> --config <base>/spoolmon.yaml`
    /// (the config as last written), stderr appended to `<command>.log`.
    pub fn spawn(&self, global: &[&str], command: &str) -> Daemon {
        let log_path = self.join(&format!("{command}.log"));
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .unwrap();
        let child = Command::new(BIN)
            .args(global)
            .args([command, "--base-dir"])
            .arg(self.path())
            .arg("--config")
            .arg(self.join("spoolmon.yaml"))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("spawn spoolmon {command}: {e}"));
        Daemon::from_child(child, log_path)
    }

    /// Starts `spoolmon run` on this base with `config` (YAML text).
    pub fn start(&self, config: &str) -> Daemon {
        let config_path = self.write_config(config);
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.join("daemon.log"))
            .unwrap();
        let child = Command::new(BIN)
            .args(["--log-level", "debug", "run", "--base-dir"])
            .arg(self.path())
            .arg("--config")
            .arg(&config_path)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn spoolmon");
        Daemon {
            child: Some(child),
            log: self.join("daemon.log"),
        }
    }

    pub fn read(&self, rel: &str) -> Option<String> {
        fs::read_to_string(self.join(rel)).ok()
    }

    /// `time:` of `output/<id>/last_result` (the start of the step last measured), if there is one.
    pub fn result_time(&self, id: &str) -> Option<i64> {
        let text = self.read(&format!("output/{id}/last_result"))?;
        last_result_fields(&text)
            .into_iter()
            .find(|(k, _)| k == "time")
            .and_then(|(_, v)| v.parse().ok())
    }

    /// Number of entries in a base subdirectory.
    pub fn count(&self, rel: &str) -> usize {
        fs::read_dir(self.join(rel)).map(|d| d.count()).unwrap_or(0)
    }
}

/// A running daemon; killed when dropped.
pub struct Daemon {
    child: Option<Child>,
    pub log: PathBuf,
}

impl Daemon {
    /// Wraps another spoolmon process (e.g. `spoolmon pull`) logging to `log`.
    pub fn from_child(child: Child, log: PathBuf) -> Daemon {
        Daemon {
            child: Some(child),
            log,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    pub fn log_text(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Sends SIGKILL and reaps the process.
    pub fn kill9(mut self) {
        let mut child = self.child.take().unwrap();
        child.kill().unwrap();
        child.wait().unwrap();
    }

    /// Sends SIGTERM and waits (up to `limit`) for the exit status.
    pub fn terminate(self, limit: Duration) -> Option<std::process::ExitStatus> {
        signal(self.pid(), "TERM");
        self.wait_exit(limit)
    }

    /// Waits (up to `limit`) for the process to exit by itself; kills it after that.
    pub fn wait_exit(mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let mut child = self.child.take().unwrap();
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if let Some(status) = child.try_wait().unwrap() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = child.kill();
        let _ = child.wait();
        None
    }

    pub fn is_running(&mut self) -> bool {
        self.child.as_mut().unwrap().try_wait().unwrap().is_none()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Now in unix seconds.
pub fn unix_now() -> i64 {
    spoolmon::shared::clock::unix_now()
}

pub fn signal(pid: u32, name: &str) {
    Command::new("kill")
        .arg(format!("-{name}"))
        .arg(pid.to_string())
        .status()
        .unwrap();
}

/// Polls `condition` every 50 ms until it holds or `limit` passes (a liveness bound, not a
/// speed assertion: limits are generous). Panics with `what` (and the tail of the daemon's log,
/// when there is one) otherwise. The one polling wait of the tests.
pub fn wait_for(what: &str, limit: Duration, daemon: Option<&Daemon>, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if condition() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    if condition() {
        return;
    }
    let log = daemon.map(|d| d.log_text()).unwrap_or_default();
    let tail: String = log
        .lines()
        .rev()
        .take(60)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect::<Vec<_>>()
        .join("\n");
    panic!("timed out after {limit:?} waiting for: {what}\n--- daemon log (tail) ---\n{tail}");
}

/// Panics unless the tests run as root, naming what needs it. CI runs them as root, like
/// `make test` on a machine set up with `make deps`; a prerequisite that is missing fails the test
/// rather than passing it silently.
pub fn require_root(what: &str) {
    assert!(
        nix::unistd::geteuid().is_root(),
        "{what} needs root: run the tests as root (as CI does; `make deps` installs the rest)"
    );
}

/// Parses a `last_result` file into (key, value) pairs.
pub fn last_result_fields(text: &str) -> Vec<(String, String)> {
    text.lines()
        .filter_map(|l| l.split_once(": "))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

pub fn field(text: &str, key: &str) -> String {
    last_result_fields(text)
        .into_iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v)
        .unwrap_or_else(|| panic!("no {key} in last_result:\n{text}"))
}

/// Runs `rrdtool` with `args`, returning stdout (panics on failure).
pub fn rrdtool(args: &[&str]) -> String {
    // A running daemon's librrd holds a file's lock while it updates it: rrdtool then answers
    // "could not lock RRD" (lastupdate locks), and asking again a moment later reads it.
    for _ in 0..500 {
        let out = Command::new("rrdtool").args(args).output().expect("rrdtool runs");
        let stderr = String::from_utf8_lossy(&out.stderr);
        if out.status.success() {
            return String::from_utf8(out.stdout).unwrap();
        }
        assert!(stderr.contains("could not lock"), "rrdtool {args:?}: {stderr}");
        std::thread::sleep(Duration::from_millis(10));
    }
    panic!("rrdtool {args:?}: the file stayed locked for 5 s");
}

/// A ping order in YAML.
pub fn ping_order(host: &str, step: u32, pings: u32) -> String {
    format!("user: test\nstep: {step}\npings: {pings}\nprobe: fping\nfping:\n    host: \"{host}\"\n")
}

/// One figure of sink `sink`'s outbox as `spoolmon outbox --json` reports it (`records`,
/// `lines`, ...); 0 when the sink or the figure is not listed.
pub fn outbox_figure(base: &Base, sink: &str, figure: &str) -> u64 {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_spoolmon"))
        .args(["outbox", "--json", "--base-dir"])
        .arg(base.path())
        .output()
        .unwrap();
    let value: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null);
    value
        .as_array()
        .and_then(|sinks| sinks.iter().find(|s| s["sink"] == sink))
        .and_then(|s| s[figure].as_u64())
        .unwrap_or(0)
}

/// A fast config for tests.
pub const FAST: &str = "rescan-interval: 2\n";

/// Makes `dir` unwritable even for root (immutable flag) while alive.
pub struct ReadOnlyDir<'a>(&'a std::path::Path);

impl<'a> ReadOnlyDir<'a> {
    pub fn new(dir: &'a std::path::Path) -> ReadOnlyDir<'a> {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o555)).unwrap();
        if nix::unistd::geteuid().is_root() {
            let status = std::process::Command::new("chattr")
                .arg("+i")
                .arg(dir)
                .status()
                .unwrap();
            assert!(status.success(), "chattr +i {}", dir.display());
        }
        ReadOnlyDir(dir)
    }
}

impl Drop for ReadOnlyDir<'_> {
    fn drop(&mut self) {
        use std::os::unix::fs::PermissionsExt;
        if nix::unistd::geteuid().is_root() {
            let _ = std::process::Command::new("chattr").arg("-i").arg(self.0).status();
        }
        let _ = std::fs::set_permissions(self.0, std::fs::Permissions::from_mode(0o755));
    }
}

/// `(path, time) -> value` of every line in a local-store directory (`<dir>/<time>/stats`).
pub fn local_store_lines(dir: &Path) -> std::collections::BTreeMap<(String, i64), f64> {
    let mut lines = std::collections::BTreeMap::new();
    for entry in fs::read_dir(dir).into_iter().flatten() {
        let text = fs::read_to_string(entry.unwrap().path().join("stats")).unwrap_or_default();
        for line in text.lines() {
            let fields: Vec<&str> = line.split(' ').collect();
            assert_eq!(fields.len(), 3, "bad line in local-store: {line:?}");
            lines.insert(
                (fields[0].to_string(), fields[2].parse().unwrap()),
                fields[1].parse().unwrap(),
            );
        }
    }
    lines
}
