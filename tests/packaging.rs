//! Packaging: `packaging/build-deb.sh` run on the test binary yields a package whose files are all
//! there, root-owned with sane modes; whose control data, conffiles and maintainer scripts are
//! valid; whose units systemd accepts and whose config spoolmon reads. `spoolmon completions` and
//! `spoolmon man` cover every subcommand. One test installs the package on this machine (the tests
//! run as root, CI on a disposable machine), runs it and purges it again.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

const BIN: &str = env!("CARGO_BIN_EXE_spoolmon");
const SHELLS: [&str; 5] = ["bash", "zsh", "fish", "elvish", "powershell"];
const UNITS: [&str; 3] = ["spoolmon.service", "spoolmon-pull.service", "spoolmon-process.service"];

fn run(program: &str, args: &[&str]) -> Output {
    Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {program}: {e}"))
}

fn run_ok(program: &str, args: &[&str]) -> String {
    let out = run(program, args);
    assert!(
        out.status.success(),
        "{program} {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("UTF-8 output")
}

fn path_str(path: &Path) -> &str {
    path.to_str().expect("UTF-8 path")
}

/// The subcommands `spoolmon --help` lists (without `help`).
fn subcommands() -> Vec<String> {
    let help = run_ok(BIN, &["--help"]);
    let names: Vec<String> = help
        .lines()
        .skip_while(|line| *line != "Commands:")
        .skip(1)
        .take_while(|line| !line.trim().is_empty())
        .filter_map(|line| line.split_whitespace().next())
        .filter(|name| *name != "help")
        .map(str::to_owned)
        .collect();
    for expected in ["run", "pull", "process", "check", "config", "completions", "man"] {
        assert!(
            names.iter().any(|name| name == expected),
            "--help lists no {expected}: {names:?}"
        );
    }
    names
}

/// The package built from the test binary, with its files and control area extracted.
struct BuiltDeb {
    deb: PathBuf,
    dir: PathBuf,
}

impl BuiltDeb {
    fn root(&self) -> PathBuf {
        self.dir.join("root")
    }

    fn control_dir(&self) -> PathBuf {
        self.dir.join("control")
    }

    fn file(&self, path: &str) -> PathBuf {
        self.root().join(path.trim_start_matches('/'))
    }

    fn field(&self, name: &str) -> String {
        run_ok("dpkg-deb", &["-f", path_str(&self.deb), name]).trim().to_owned()
    }

    /// `dpkg-deb -c`: (mode, owner, path) per entry, paths without the leading `.`.
    fn listing(&self) -> Vec<(String, String, String)> {
        run_ok("dpkg-deb", &["-c", path_str(&self.deb)])
            .lines()
            .map(|line| {
                let fields: Vec<&str> = line.split_whitespace().collect();
                assert!(fields.len() >= 6, "unexpected listing line {line:?}");
                let path = fields[5].trim_start_matches('.').to_owned();
                (fields[0].to_owned(), fields[1].to_owned(), path)
            })
            .collect()
    }
}

/// Built once per test run, into the target directory (kept for inspection, replaced next run).
fn built_deb() -> &'static BuiltDeb {
    static DEB: OnceLock<BuiltDeb> = OnceLock::new();
    DEB.get_or_init(build_deb)
}

fn build_deb() -> BuiltDeb {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("packaging-deb");
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).unwrap();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("packaging/build-deb.sh");
    let out = Command::new(script)
        .args(["--binary", BIN, "--out", path_str(&dir.join("out"))])
        // The debug binary is large: compressing it would only cost test time.
        .env("DPKG_DEB_COMPRESSOR_TYPE", "none")
        .output()
        .expect("build-deb.sh runs");
    assert!(
        out.status.success(),
        "build-deb.sh failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let deb = PathBuf::from(String::from_utf8(out.stdout).unwrap().trim());
    assert!(
        deb.starts_with(dir.join("out")),
        "the package went to {}",
        deb.display()
    );
    let built = BuiltDeb { deb, dir };
    run_ok("dpkg-deb", &["-x", path_str(&built.deb), path_str(&built.root())]);
    run_ok(
        "dpkg-deb",
        &["-e", path_str(&built.deb), path_str(&built.control_dir())],
    );
    built
}

fn expected_files() -> Vec<(String, &'static str)> {
    let mut files: Vec<(String, &str)> = vec![
        ("/usr/bin/spoolmon".into(), "-rwxr-xr-x"),
        ("/etc/spoolmon/spoolmon.yaml".into(), "-rw-r--r--"),
        ("/usr/lib/sysusers.d/spoolmon.conf".into(), "-rw-r--r--"),
        ("/usr/lib/tmpfiles.d/spoolmon.conf".into(), "-rw-r--r--"),
        ("/usr/share/bash-completion/completions/spoolmon".into(), "-rw-r--r--"),
        ("/usr/share/zsh/vendor-completions/_spoolmon".into(), "-rw-r--r--"),
        (
            "/usr/share/fish/vendor_completions.d/spoolmon.fish".into(),
            "-rw-r--r--",
        ),
        ("/usr/share/man/man1/spoolmon.1.gz".into(), "-rw-r--r--"),
    ];
    for doc in [
        "README.md",
        "README.systemd.md",
        "spool-layout.md",
        "config-reference.md",
        "copyright",
        "changelog.gz",
        "examples/nagios/spoolmon.cfg",
        "examples/orders/loopback/localhost-v4",
    ] {
        files.push((format!("/usr/share/doc/spoolmon/{doc}"), "-rw-r--r--"));
    }
    for unit in UNITS {
        files.push((format!("/usr/lib/systemd/system/{unit}"), "-rw-r--r--"));
    }
    for name in subcommands() {
        files.push((format!("/usr/share/man/man1/spoolmon-{name}.1.gz"), "-rw-r--r--"));
    }
    files
}

#[test]
fn deb_installs_every_file_root_owned_with_its_mode() {
    let listing = built_deb().listing();
    for (path, mode) in expected_files() {
        let entry = listing.iter().find(|(_, _, listed)| *listed == path);
        let (listed_mode, owner, _) = entry.unwrap_or_else(|| panic!("{path} is not in the package"));
        assert_eq!(listed_mode, mode, "mode of {path}");
        assert_eq!(owner, "root/root", "owner of {path}");
    }
    for (mode, owner, path) in &listing {
        assert_eq!(owner, "root/root", "owner of {path}");
        let expected = if mode.starts_with('d') {
            "drwxr-xr-x"
        } else {
            "-rw-r--r--"
        };
        if path != "/usr/bin/spoolmon" {
            assert_eq!(mode, expected, "mode of {path}");
        }
    }
}

#[test]
fn deb_binary_is_stripped_and_runs() {
    let binary = built_deb().file("/usr/bin/spoolmon");
    let version = run_ok(path_str(&binary), &["--version"]);
    assert_eq!(version.trim(), format!("spoolmon {}", env!("CARGO_PKG_VERSION")));
    let sections = run_ok("readelf", &["-S", "-W", path_str(&binary)]);
    assert!(
        !sections.contains(".debug_line"),
        "the packaged binary keeps debug info"
    );
}

#[test]
fn deb_control_names_package_version_and_library_dependencies() {
    let deb = built_deb();
    assert_eq!(deb.field("Package"), "spoolmon");
    assert_eq!(deb.field("Version"), env!("CARGO_PKG_VERSION"));
    assert_eq!(
        deb.field("Architecture"),
        run_ok("dpkg", &["--print-architecture"]).trim()
    );
    let depends = deb.field("Depends");
    for library in ["libc6 (>= ", "librrd8", "adduser"] {
        assert!(depends.contains(library), "Depends lacks {library}: {depends}");
    }
    assert_eq!(deb.field("Recommends"), "rrdtool, fping");
    assert_eq!(deb.field("Suggests"), "haproxy");
    let info = run_ok("dpkg-deb", &["-I", path_str(&deb.deb)]);
    assert!(info.contains("Description: monitoring pipeline"), "{info}");
}

#[test]
fn deb_config_is_a_conffile_that_spoolmon_reads() {
    let deb = built_deb();
    let conffiles = fs::read_to_string(deb.control_dir().join("conffiles")).unwrap();
    assert_eq!(conffiles, "/etc/spoolmon/spoolmon.yaml\n");
    let config = deb.file("/etc/spoolmon/spoolmon.yaml");
    run_ok(BIN, &["config", "--print", "--config", path_str(&config)]);
    let text = fs::read_to_string(&config).unwrap();
    assert!(
        !text.lines().any(|line| line.starts_with("sinks:")),
        "a fresh install must not send to servers that do not exist"
    );
}

#[test]
fn deb_maintainer_scripts_are_executable_valid_shell() {
    let deb = built_deb();
    for script in ["postinst", "prerm", "postrm"] {
        let path = deb.control_dir().join(script);
        let mode = fs::metadata(&path).unwrap().permissions();
        assert_eq!(
            std::os::unix::fs::PermissionsExt::mode(&mode) & 0o777,
            0o755,
            "{script}"
        );
        assert!(
            fs::read_to_string(&path).unwrap().starts_with("#!/bin/sh\n"),
            "{script}"
        );
        run_ok("sh", &["-n", path_str(&path)]);
    }
    let postinst = fs::read_to_string(deb.control_dir().join("postinst")).unwrap();
    let sysusers = "/usr/lib/sysusers.d/spoolmon.conf";
    assert!(
        postinst.contains(sysusers) && deb.file(sysusers).is_file(),
        "{sysusers}"
    );
    // orders/ is made for order producers in the group spoolmon: group-writable and setgid.
    assert!(
        postinst.contains(r#"install -d -o spoolmon -g spoolmon -m 2775 "$BASE/orders""#),
        "postinst must create a shared orders/: {postinst}"
    );
    let commands = postinst.lines().filter(|line| !line.trim_start().starts_with('#'));
    for line in commands {
        assert!(
            !line.contains("enable") && !line.contains(" start "),
            "postinst must not enable or start units: {line}"
        );
    }
}

#[test]
fn deb_md5sums_match_the_files() {
    let deb = built_deb();
    let sums = deb.control_dir().join("md5sums");
    let out = Command::new("md5sum")
        .args(["--check", "--quiet", path_str(&sums)])
        .current_dir(deb.root())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stdout));
    let listed = fs::read_to_string(&sums).unwrap();
    assert!(listed.contains("  usr/bin/spoolmon\n"), "{listed}");
}

#[test]
fn deb_man_pages_decompress_and_name_every_subcommand() {
    let deb = built_deb();
    let page = run_ok(
        "gzip",
        &["-dc", path_str(&deb.file("/usr/share/man/man1/spoolmon.1.gz"))],
    );
    for name in subcommands() {
        assert!(
            page.contains(&format!("spoolmon\\-{name}(1)")),
            "spoolmon.1 lacks {name}"
        );
    }
    for section in [
        ".SH FILES",
        ".SH SIGNALS",
        ".SH \"EXIT STATUS\"",
        "/etc/spoolmon/spoolmon.yaml",
    ] {
        assert!(page.contains(section), "spoolmon.1 lacks {section}");
    }
    let run_page = run_ok(
        "gzip",
        &["-dc", path_str(&deb.file("/usr/share/man/man1/spoolmon-run.1.gz"))],
    );
    assert!(
        run_page.contains("base\\-dir") && run_page.contains(".SH SIGNALS"),
        "{run_page}"
    );
}

#[test]
fn deb_completions_name_every_subcommand() {
    let deb = built_deb();
    let bash = deb.file("/usr/share/bash-completion/completions/spoolmon");
    run_ok("bash", &["-n", path_str(&bash)]);
    for path in [
        bash,
        deb.file("/usr/share/zsh/vendor-completions/_spoolmon"),
        deb.file("/usr/share/fish/vendor_completions.d/spoolmon.fish"),
    ] {
        let script = fs::read_to_string(&path).unwrap();
        for name in subcommands() {
            assert!(script.contains(&name), "{} lacks {name}", path.display());
        }
    }
}

/// The units with ExecStart pointing at the test binary, since /usr/bin/spoolmon is not
/// installed here and `systemd-analyze verify` checks that the command exists.
fn units_runnable_here(deb: &BuiltDeb) -> PathBuf {
    let dir = deb.dir.join("units");
    fs::create_dir_all(&dir).unwrap();
    for unit in UNITS {
        let text = fs::read_to_string(deb.file(&format!("/usr/lib/systemd/system/{unit}"))).unwrap();
        assert!(text.contains("ExecStart=/usr/bin/spoolmon "), "{unit}");
        fs::write(dir.join(unit), text.replace("/usr/bin/spoolmon", BIN)).unwrap();
    }
    dir
}

#[test]
fn deb_units_pass_systemd_analyze_verify() {
    let deb = built_deb();
    let dir = units_runnable_here(deb);
    let units: Vec<PathBuf> = UNITS.iter().map(|unit| dir.join(unit)).collect();
    // MANPATH: verify checks each Documentation=man: page, here against the packaged ones.
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .args(&units)
        .env("MANPATH", deb.file("/usr/share/man"))
        .output()
        .expect("systemd-analyze runs (package systemd)");
    let stderr = String::from_utf8_lossy(&out.stderr);
    // Other units installed on this machine may draw warnings; ours must draw none.
    let ours: Vec<&str> = stderr.lines().filter(|line| line.contains("spoolmon")).collect();
    assert!(
        out.status.success() && ours.is_empty(),
        "systemd-analyze verify:\n{stderr}"
    );
}

fn unit_settings(deb: &BuiltDeb, unit: &str) -> Vec<String> {
    let text = fs::read_to_string(deb.file(&format!("/usr/lib/systemd/system/{unit}"))).unwrap();
    text.lines()
        .map(str::to_owned)
        .filter(|line| line.contains('='))
        .collect()
}

#[test]
fn deb_units_run_as_spoolmon_with_the_hardening() {
    let deb = built_deb();
    for unit in UNITS {
        let settings = unit_settings(deb, unit);
        let mode = unit
            .trim_start_matches("spoolmon")
            .trim_start_matches('-')
            .trim_end_matches(".service");
        let mode = if mode.is_empty() { "run" } else { mode };
        let exec = format!(
            "ExecStart=/usr/bin/spoolmon {mode} --base-dir /var/lib/spoolmon --config /etc/spoolmon/spoolmon.yaml"
        );
        for required in [
            exec.as_str(),
            "Type=notify",
            "NotifyAccess=main",
            "User=spoolmon",
            "TimeoutStopSec=45",
            "ProtectSystem=strict",
            "ReadWritePaths=/var/lib/spoolmon",
            "NoNewPrivileges=yes",
            "PrivateTmp=yes",
            "RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6 AF_NETLINK",
            "UMask=0022",
            "WatchdogSec=60",
            "ExecReload=/bin/kill -HUP $MAINPID",
            "WantedBy=multi-user.target",
        ] {
            assert!(settings.iter().any(|line| line == required), "{unit} lacks {required}");
        }
    }
    let daemon = unit_settings(deb, "spoolmon.service");
    for required in [
        "WatchdogSec=60",
        "AmbientCapabilities=CAP_NET_RAW",
        "CapabilityBoundingSet=CAP_NET_RAW",
        "ExecReload=/bin/kill -HUP $MAINPID",
    ] {
        assert!(
            daemon.iter().any(|line| line == required),
            "spoolmon.service lacks {required}"
        );
    }
    for unit in ["spoolmon-pull.service", "spoolmon-process.service"] {
        let settings = unit_settings(deb, unit);
        assert!(
            settings.iter().any(|line| line == "CapabilityBoundingSet="),
            "{unit} keeps capabilities"
        );
        assert!(
            !settings.iter().any(|line| line.starts_with("AmbientCapabilities=")),
            "{unit}"
        );
    }
}

#[test]
fn completions_name_every_subcommand_in_every_shell() {
    let names = subcommands();
    for shell in SHELLS {
        let script = run_ok(BIN, &["completions", shell]);
        for name in &names {
            assert!(script.contains(name.as_str()), "{shell} completion lacks {name}");
        }
    }
    assert!(!run(BIN, &["completions", "tcsh"]).status.success());
}

#[test]
fn man_prints_one_page_or_writes_one_per_command() {
    let page = run_ok(BIN, &["man"]);
    assert!(page.contains(".TH spoolmon 1"), "{page}");
    for name in subcommands() {
        assert!(
            page.contains(&format!("spoolmon\\-{name}(1)")),
            "spoolmon.1 lacks {name}"
        );
    }
    let dir = tempfile::tempdir().unwrap();
    let out_dir = dir.path().join("man");
    run_ok(BIN, &["man", "--out-dir", path_str(&out_dir)]);
    let mut pages: Vec<String> = subcommands().iter().map(|name| format!("spoolmon-{name}.1")).collect();
    pages.push("spoolmon.1".into());
    pages.push("spoolmon-check-queue.1".into());
    for page in pages {
        let text = fs::read_to_string(out_dir.join(&page)).unwrap_or_else(|e| panic!("{page}: {e}"));
        assert!(text.contains(".SH NAME"), "{page}");
    }
    assert!(!out_dir.join("spoolmon-help.1").exists());
}

#[test]
fn rpm_spec_parses_and_carries_the_cargo_version() {
    let spec = concat!(env!("CARGO_MANIFEST_DIR"), "/packaging/rpm/spoolmon.spec");
    let version = run_ok("rpmspec", &["-q", "--srpm", "--qf", "%{VERSION}\n", spec]);
    assert_eq!(version.trim(), env!("CARGO_PKG_VERSION"));
    let parsed = run_ok("rpmspec", &["-P", spec]);
    for required in [
        "%config(noreplace) /etc/spoolmon/spoolmon.yaml",
        "/usr/lib/sysusers.d/spoolmon.conf",
        "%systemd_postun_with_restart spoolmon.service spoolmon-pull.service spoolmon-process.service",
    ] {
        assert!(parsed.contains(required), "the spec lacks {required}");
    }
    for unit in UNITS {
        assert!(
            parsed.contains(&format!("/usr/lib/systemd/system/{unit}")),
            "the spec lacks {unit}"
        );
    }
}

/// What the install test changed on this machine, undone when it ends (also when it fails).
struct Installed {
    /// The spoolmon user existed before (a purge keeps it: only the test's own is removed).
    user_existed: bool,
    /// /var/lib/spoolmon existed before (a purge keeps it: only the test's own is removed).
    base_existed: bool,
    daemon: Option<std::process::Child>,
}

const PRODUCER: &str = "spoolmon-test-producer";
const INSTALLED_BASE: &str = "/var/lib/spoolmon";

impl Drop for Installed {
    fn drop(&mut self) {
        if let Some(mut daemon) = self.daemon.take() {
            let _ = daemon.kill();
            let _ = daemon.wait();
        }
        if installed_version().is_some() {
            let _ = run("dpkg", &["--purge", "spoolmon"]);
        }
        let _ = run("userdel", &[PRODUCER]);
        if !self.base_existed {
            let _ = fs::remove_dir_all(INSTALLED_BASE);
        }
        if !self.user_existed {
            let _ = run("userdel", &["spoolmon"]);
            let _ = run("groupdel", &["spoolmon"]);
        }
    }
}

/// The installed version of the package spoolmon, if dpkg has it installed.
fn installed_version() -> Option<String> {
    let out = run(
        "dpkg-query",
        &["-W", "-f", "${db:Status-Status} ${Version}", "spoolmon"],
    );
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (status, version) = text.split_once(' ')?;
    (out.status.success() && status == "installed").then(|| version.to_owned())
}

/// (owner, group, mode with the setgid bit) of an installed path.
fn owner_group_mode(path: &str) -> (String, String, String) {
    let out = run_ok("stat", &["-c", "%U %G %a", path]);
    let fields: Vec<&str> = out.split_whitespace().collect();
    assert_eq!(fields.len(), 3, "stat {path}: {out}");
    (fields[0].to_owned(), fields[1].to_owned(), fields[2].to_owned())
}

/// Polls `done` every 200 ms for up to `limit`; panics naming `what` (and the daemon's log) when
/// it never holds.
fn wait_until(what: &str, log: &Path, limit: std::time::Duration, mut done: impl FnMut() -> bool) {
    let start = std::time::Instant::now();
    while !done() {
        if start.elapsed() > limit {
            let log = fs::read_to_string(log).unwrap_or_default();
            panic!("timed out after {limit:?} waiting for {what}\n--- daemon log ---\n{log}");
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
}

/// Installs the package on this machine (CI runs as root on a disposable machine), checks what
/// the maintainer scripts made (the system user, the base directory, the group-writable setgid
/// `orders/`), lets a producer in the group write an order, runs the daemon from the installed
/// unit (under systemd when it is PID 1 here, else the unit's ExecStart= as its User=) until
/// `spoolmon check daemon` is OK and the order was measured, then purges and checks what stays.
#[test]
fn deb_installs_runs_and_purges_on_this_machine() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "installing the package needs root: run the tests as root (as CI does)"
    );
    assert_eq!(
        installed_version(),
        None,
        "a spoolmon package is installed on this machine: this test would replace and purge it; \
         purge it first (dpkg --purge spoolmon)"
    );
    let deb = built_deb();
    let mut installed = Installed {
        user_existed: run("getent", &["passwd", "spoolmon"]).status.success(),
        base_existed: Path::new(INSTALLED_BASE).exists(),
        daemon: None,
    };
    run_ok("dpkg", &["-i", path_str(&deb.deb)]);
    let version = env!("CARGO_PKG_VERSION");
    assert_eq!(installed_version().as_deref(), Some(version));
    assert_eq!(
        run_ok("/usr/bin/spoolmon", &["--version"]).trim(),
        format!("spoolmon {version}")
    );

    // The user: a system account, home the base directory, no login shell.
    let passwd = run_ok("getent", &["passwd", "spoolmon"]);
    let fields: Vec<&str> = passwd.trim().split(':').collect();
    assert_eq!(fields.len(), 7, "{passwd}");
    let uid: u32 = fields[2].parse().unwrap();
    assert!(uid < 1000, "spoolmon is not a system user: {passwd}");
    assert_eq!(fields[5], INSTALLED_BASE, "{passwd}");
    assert!(
        fields[6].ends_with("nologin") || fields[6].ends_with("false"),
        "spoolmon can log in: {passwd}"
    );
    let group = run_ok("id", &["-gn", "spoolmon"]);
    assert_eq!(group.trim(), "spoolmon");

    // The base directory and the producers' orders/ (setgid, group-writable).
    if !installed.base_existed {
        assert_eq!(
            owner_group_mode(INSTALLED_BASE),
            ("spoolmon".into(), "spoolmon".into(), "755".into())
        );
    }
    let orders = format!("{INSTALLED_BASE}/orders");
    assert_eq!(
        owner_group_mode(&orders),
        ("spoolmon".into(), "spoolmon".into(), "2775".into())
    );
    let conffiles = run_ok("dpkg-query", &["-W", "-f", "${Conffiles}", "spoolmon"]);
    assert!(conffiles.contains("/etc/spoolmon/spoolmon.yaml"), "{conffiles}");
    for unit in UNITS {
        let path = format!("/usr/lib/systemd/system/{unit}");
        assert!(Path::new(&path).is_file(), "{path} not installed");
        assert_eq!(owner_group_mode(&path), ("root".into(), "root".into(), "644".into()));
        // Installed, not enabled: the operator picks all-in-one or split mode.
        let wanted = format!("/etc/systemd/system/multi-user.target.wants/{unit}");
        assert!(!Path::new(&wanted).exists(), "{unit} was enabled by the package");
    }

    // A producer in the group writes an order with the installed binary.
    run_ok("useradd", &["--system", "--no-create-home", "-G", "spoolmon", PRODUCER]);
    let add = run(
        "setpriv",
        &[
            "--reuid",
            PRODUCER,
            "--regid",
            PRODUCER,
            "--init-groups",
            "/usr/bin/spoolmon",
            "order",
            "add",
            "test/loopback",
            "--host",
            "127.0.0.1",
            "--step",
            "2",
            "--pings",
            "2",
        ],
    );
    assert!(
        add.status.success(),
        "the producer could not add an order: {}",
        String::from_utf8_lossy(&add.stderr)
    );
    let (_, order_group, order_mode) = owner_group_mode(&format!("{orders}/test/loopback"));
    assert_eq!((order_group.as_str(), order_mode.as_str()), ("spoolmon", "664"));

    // The daemon from the installed unit.
    let log = deb.dir.join("installed-daemon.log");
    let under_systemd = Path::new("/run/systemd/system").is_dir();
    if under_systemd {
        run_ok("systemctl", &["start", "spoolmon.service"]);
    } else {
        // No systemd here: the unit's own command line, as its user, without its sandbox.
        let unit = fs::read_to_string("/usr/lib/systemd/system/spoolmon.service").unwrap();
        let setting = |key: &str| -> String {
            unit.lines()
                .find_map(|line| line.strip_prefix(key))
                .unwrap_or_else(|| panic!("spoolmon.service has no {key}"))
                .to_owned()
        };
        let exec = setting("ExecStart=");
        let user = setting("User=");
        let group = setting("Group=");
        let mut command = Command::new("setpriv");
        command
            .args(["--reuid", &user, "--regid", &group, "--init-groups", "--"])
            .args(exec.split_whitespace())
            .args(["--log-file", path_str(&log)])
            .env_remove("NOTIFY_SOCKET");
        fs::write(&log, "").unwrap();
        run_ok("chown", &["spoolmon", path_str(&log)]);
        installed.daemon = Some(command.spawn().expect("the installed daemon starts"));
    }
    let check_daemon = || {
        run("/usr/bin/spoolmon", &["check", "daemon", "--base-dir", INSTALLED_BASE])
            .status
            .success()
    };
    let limit = std::time::Duration::from_secs(60);
    wait_until("check daemon OK", &log, limit, check_daemon);
    let last_result = format!("{INSTALLED_BASE}/output/test/loopback/last_result");
    wait_until("the producer's order measured", &log, limit, || {
        fs::read_to_string(&last_result).is_ok_and(|text| text.contains("loss: 0"))
    });
    assert_eq!(
        owner_group_mode(&last_result).0,
        "spoolmon",
        "the daemon did not run as spoolmon"
    );
    if under_systemd {
        run_ok("systemctl", &["stop", "spoolmon.service"]);
    } else {
        let mut daemon = installed.daemon.take().unwrap();
        let pid = nix::unistd::Pid::from_raw(i32::try_from(daemon.id()).unwrap());
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
        let status = daemon.wait().unwrap();
        assert!(status.success(), "the daemon stopped with {status}");
    }

    // Purge: the program, units and config go; the measurements and the user stay (postrm).
    run_ok("dpkg", &["--purge", "spoolmon"]);
    assert_eq!(installed_version(), None);
    for gone in [
        "/usr/bin/spoolmon",
        "/etc/spoolmon/spoolmon.yaml",
        "/usr/lib/systemd/system/spoolmon.service",
        "/usr/lib/sysusers.d/spoolmon.conf",
    ] {
        assert!(!Path::new(gone).exists(), "{gone} is left after purge");
    }
    assert!(Path::new(&last_result).is_file(), "purge removed the measurements");
    assert!(
        run("getent", &["passwd", "spoolmon"]).status.success(),
        "purge removed the user"
    );
}
