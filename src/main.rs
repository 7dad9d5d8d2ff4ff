//! The `spoolmon` command: each subcommand is a thin call into the library.

use anyhow::{Context, Result};
use clap::{Args, CommandFactory, FromArgMatches, Parser, Subcommand};
use spoolmon::config::Config;
use spoolmon::service::privilege::Account;
use spoolmon::service::signals::Signals;
use spoolmon::spool::BaseDir;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

#[derive(Parser, Debug)]
#[command(
    name = "spoolmon",
    version,
    about = "Monitoring pipeline where a directory is a queue"
)]
struct Cli {
    /// Log level (error, warn, info, debug, trace); RUST_LOG overrides it. Checks log nothing
    /// and the listings (status, orders, outbox) only errors unless this is given (whatever
    /// RUST_LOG says).
    #[arg(long, global = true, default_value = DEFAULT_LOG_LEVEL)]
    log_level: String,
    /// Log to this file (appended, with timestamps; reopened on SIGHUP for logrotate) instead
    /// of stderr. Under systemd, stderr goes to the journal with priorities and no timestamps.
    #[arg(long, global = true, value_name = "PATH")]
    log_file: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Args, Debug)]
struct BaseArgs {
    /// The base directory (orders/, incoming/, output/, archive/, ...).
    #[arg(long, default_value = "/var/lib/spoolmon")]
    base_dir: PathBuf,
    /// The configuration file (YAML); every key is optional.
    #[arg(long)]
    config: Option<PathBuf>,
}

/// Options of the long-running commands.
#[derive(clap::Args, Debug)]
struct ServiceArgs {
    /// Started as root: open the ICMP sockets and locks, then switch to this user for good
    /// (the base directory's own directories are given to it).
    #[arg(long, value_name = "NAME")]
    user: Option<String>,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the daemon in the foreground: orders, probes, processing, output.
    Run {
        #[command(flatten)]
        base: BaseArgs,
        #[command(flatten)]
        service: ServiceArgs,
    },
    /// Pull HAProxy statistics into incoming/ (haproxystats-pull); needs a `pull:` config section.
    Pull {
        #[command(flatten)]
        base: BaseArgs,
        #[command(flatten)]
        service: ServiceArgs,
    },
    /// Process incoming/ alone (haproxystats-process): snapshots → output/ and sinks.
    Process {
        #[command(flatten)]
        base: BaseArgs,
        #[command(flatten)]
        service: ServiceArgs,
    },
    /// Nagios checks of the base directory (exit 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN).
    Check {
        #[command(subcommand)]
        check: CheckCommand,
    },
    /// List orders with their state (active, failing, invalid, unresolved) and the reason.
    Orders {
        #[command(flatten)]
        base: BaseArgs,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Show each sink's outbox backlog: undelivered records, lines, bytes, oldest age, drops.
    Outbox {
        #[command(flatten)]
        base: BaseArgs,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Print the configuration.
    Config {
        /// The configuration file to read for --print.
        #[arg(long)]
        config: Option<PathBuf>,
        /// Print every key with its default value.
        #[arg(long, conflicts_with = "print")]
        print_defaults: bool,
        /// Print the effective configuration (defaults plus the file).
        #[arg(long)]
        print: bool,
    },
    /// Print the shell completion script for SHELL to stdout.
    Completions {
        /// The shell to complete for.
        shell: clap_complete::Shell,
    },
    /// Print the man page (roff) to stdout, or write one page per command into a directory.
    Man {
        /// Write spoolmon.1 and spoolmon-<command>.1 for every subcommand into this directory.
        #[arg(long)]
        out_dir: Option<PathBuf>,
    },
    /// Summary of a base directory: daemon, queues, orders, sinks, self-metrics, last errors.
    Status {
        #[command(flatten)]
        base: BaseArgs,
        /// Print one JSON object instead of the summary.
        #[arg(long)]
        json: bool,
    },
}

/// Threshold options every check takes (Nagios range syntax).
#[derive(Args, Debug)]
struct CheckArgs {
    /// The base directory.
    #[arg(long, default_value = "/var/lib/spoolmon")]
    base_dir: PathBuf,
    /// Warning range for the checked count (Nagios syntax: 10, 10:, ~:10, 10:20, @10:20).
    #[arg(short, long)]
    warning: Option<String>,
    /// Critical range for the checked count.
    #[arg(short, long)]
    critical: Option<String>,
}

#[derive(Subcommand, Debug)]
enum CheckCommand {
    /// Snapshots waiting in incoming/ (-w/-c, default 10 and 100) and the age of the oldest in
    /// seconds (--age-warning/--age-critical, default 60 and 300).
    Queue {
        #[command(flatten)]
        args: CheckArgs,
        #[arg(long, default_value = "60")]
        age_warning: String,
        #[arg(long, default_value = "300")]
        age_critical: String,
    },
    /// Snapshots in failed/ (-w/-c, default 0 and 10: any failed snapshot warns).
    Failed {
        #[command(flatten)]
        args: CheckArgs,
    },
    /// Per sink, the age in seconds of the oldest undelivered line (-w/-c, default 300 and
    /// 3600); lines dropped at the outbox's bound warn.
    Outbox {
        #[command(flatten)]
        args: CheckArgs,
    },
    /// A live daemon holds the base directory's lock (else CRITICAL) and its heartbeat is
    /// fresh (age in seconds, -w/-c, default 60 and 300).
    Daemon {
        #[command(flatten)]
        args: CheckArgs,
    },
    /// Active orders whose last_result is older than --stale-steps steps (-w/-c on their
    /// number, default 0 and 10), and invalid or unresolved order files (--invalid-warning,
    /// --invalid-critical, default 0 and none).
    Orders {
        #[command(flatten)]
        args: CheckArgs,
        /// The configuration the daemon runs with (its defaults decide what is valid).
        #[arg(long)]
        config: Option<PathBuf>,
        #[arg(long, default_value = "3")]
        stale_steps: u32,
        #[arg(long, default_value = "0")]
        invalid_warning: String,
        #[arg(long)]
        invalid_critical: Option<String>,
    },
    /// Age in seconds of the last HAProxy snapshot the pull collector published (-w/-c,
    /// default 60 and 300); CRITICAL when none ever was.
    Pull {
        #[command(flatten)]
        args: CheckArgs,
    },
}

fn run_check(command: CheckCommand) -> ExitCode {
    use spoolmon::check::{self, Outcome, Thresholds};
    let now = std::time::SystemTime::now();
    let thresholds = |args: &CheckArgs, warning: &str, critical: &str| {
        Thresholds::parse(
            Some(args.warning.as_deref().unwrap_or(warning)),
            Some(args.critical.as_deref().unwrap_or(critical)),
        )
    };
    let outcome = match &command {
        CheckCommand::Queue {
            args,
            age_warning,
            age_critical,
        } => thresholds(args, "10", "100").and_then(|count| {
            let age = Thresholds::parse(Some(age_warning), Some(age_critical))?;
            Ok(check::check_queue(&BaseDir::new(&args.base_dir), &count, &age, now))
        }),
        CheckCommand::Failed { args } => {
            thresholds(args, "0", "10").map(|count| check::check_failed(&BaseDir::new(&args.base_dir), &count))
        }
        CheckCommand::Outbox { args } => {
            thresholds(args, "300", "3600").map(|age| check::check_outbox(&BaseDir::new(&args.base_dir), &age, now))
        }
        CheckCommand::Daemon { args } => {
            thresholds(args, "60", "300").map(|age| check::check_daemon(&BaseDir::new(&args.base_dir), &age, now))
        }
        CheckCommand::Pull { args } => {
            thresholds(args, "60", "300").map(|age| check::check_pull(&BaseDir::new(&args.base_dir), &age, now))
        }
        CheckCommand::Orders {
            args,
            config,
            stale_steps,
            invalid_warning,
            invalid_critical,
        } => match load_config(config.as_ref()) {
            Ok(config) => thresholds(args, "0", "10").and_then(|stale| {
                let limits = check::OrderThresholds {
                    stale,
                    invalid: Thresholds::parse(Some(invalid_warning), invalid_critical.as_deref())?,
                    stale_steps: *stale_steps,
                };
                Ok(check::check_orders(
                    &BaseDir::new(&args.base_dir),
                    &config,
                    &limits,
                    now,
                ))
            }),
            Err(e) => Ok(Outcome::unknown("orders", format!("{e:#}"))),
        },
    };
    let name = match command {
        CheckCommand::Queue { .. } => "queue",
        CheckCommand::Failed { .. } => "failed",
        CheckCommand::Outbox { .. } => "outbox",
        CheckCommand::Daemon { .. } => "daemon",
        CheckCommand::Orders { .. } => "orders",
        CheckCommand::Pull { .. } => "pull",
    };
    let outcome = outcome.unwrap_or_else(|e| Outcome::unknown(name, e.to_string()));
    println!("{}", outcome.line());
    ExitCode::from(outcome.exit_code())
}

/// The default of `--log-level`.
const DEFAULT_LOG_LEVEL: &str = "info";

/// Commands whose output is their report get a quieter default log level: a Nagios check prints
/// exactly one line (nothing on stderr), and the listings already show what the scan would
/// warn about (invalid orders).
fn quiet_level(command: &Command) -> Option<&'static str> {
    match command {
        Command::Check { .. } => Some("off"),
        Command::Status { .. } | Command::Orders { .. } | Command::Outbox { .. } => Some("error"),
        _ => None,
    }
}

fn main() -> ExitCode {
    let matches = Cli::command().get_matches();
    let cli = match Cli::from_arg_matches(&matches) {
        Ok(cli) => cli,
        Err(e) => e.exit(),
    };
    let level_given = matches.value_source("log_level") == Some(clap::parser::ValueSource::CommandLine);
    let quiet = quiet_level(&cli.command).filter(|_| !level_given);
    let level = quiet.unwrap_or(&cli.log_level);
    if let Err(e) = spoolmon::service::log::init(level, quiet.is_none(), cli.log_file.as_deref()) {
        eprintln!("spoolmon: {e}");
        return ExitCode::from(2);
    }
    match execute(cli.command, cli.log_file) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("spoolmon: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn load_config(path: Option<&PathBuf>) -> Result<Config> {
    match path {
        Some(path) => Ok(Config::load(path)?),
        None => Ok(Config::default()),
    }
}

fn install_signals() -> Result<Signals> {
    Signals::install().context("cannot install signal handlers")
}

/// The `--user` account, looked up before anything starts.
fn account(service: &ServiceArgs) -> Result<Option<Account>> {
    Ok(service.user.as_deref().map(Account::lookup).transpose()?)
}

fn execute(command: Command, log_file: Option<PathBuf>) -> Result<ExitCode> {
    match command {
        Command::Check { check } => Ok(run_check(check)),
        Command::Run { base, service } => {
            let config = load_config(base.config.as_ref())?;
            let options = spoolmon::daemon::RunOptions {
                config_file: base.config.clone(),
                user: account(&service)?,
                user_files: log_file.into_iter().collect(),
            };
            spoolmon::daemon::run(BaseDir::new(base.base_dir), config, options, &install_signals()?)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Pull { base, service } => {
            let config = load_config(base.config.as_ref())?;
            let account = account(&service)?;
            let files: Vec<&Path> = log_file.iter().map(PathBuf::as_path).collect();
            let user = account.as_ref().map(|a| (a, files.as_slice()));
            let base_dir = BaseDir::new(base.base_dir);
            spoolmon::pull_command::run(base_dir, base.config.as_deref(), config, user, &install_signals()?)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Process { base, service } => {
            let config = load_config(base.config.as_ref())?;
            let account = account(&service)?;
            let files: Vec<&Path> = log_file.iter().map(PathBuf::as_path).collect();
            let user = account.as_ref().map(|a| (a, files.as_slice()));
            let base_dir = BaseDir::new(base.base_dir);
            spoolmon::process_command::run(base_dir, base.config.as_deref(), config, user, &install_signals()?)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Outbox { base, json } => {
            let base_dir = BaseDir::new(&base.base_dir);
            anyhow::ensure!(
                base_dir.root().is_dir(),
                "{} is not a directory (is --base-dir right?)",
                base_dir.root().display()
            );
            let backlogs = spoolmon::sink::backlog::read_all(&base_dir.outbox(), std::time::SystemTime::now())
                .with_context(|| format!("cannot read {}", base_dir.outbox().display()))?;
            if json {
                println!("{}", serde_json::to_string_pretty(&backlogs)?);
            } else {
                print!("{}", spoolmon::sink::backlog::format_table(&backlogs));
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Orders { base, json } => {
            let config = load_config(base.config.as_ref())?;
            let base_dir = BaseDir::new(&base.base_dir);
            anyhow::ensure!(
                base_dir.orders().is_dir(),
                "{} is not a directory (is --base-dir right?)",
                base_dir.orders().display()
            );
            let listing = spoolmon::orders::listing(&base_dir, &config.order_options());
            if json {
                println!("{}", serde_json::to_string_pretty(&listing)?);
            } else {
                print!("{}", spoolmon::orders::format_table(&listing));
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Config {
            config,
            print_defaults,
            print,
        } => {
            let effective = if print_defaults {
                Config::default()
            } else {
                load_config(config.as_ref())?
            };
            if !(print || print_defaults) {
                anyhow::bail!("say --print-defaults or --print");
            }
            print!("{}", effective.to_yaml());
            Ok(ExitCode::SUCCESS)
        }
        Command::Completions { shell } => {
            // Into a buffer first: clap_complete panics on a write error such as a closed pipe.
            let mut script = Vec::new();
            clap_complete::generate(shell, &mut Cli::command(), "spoolmon", &mut script);
            std::io::Write::write_all(&mut std::io::stdout(), &script).context("cannot write the completion script")?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Man { out_dir } => {
            let mut root = Cli::command().disable_help_subcommand(true);
            root.build();
            match out_dir {
                Some(dir) => write_man_pages(&root, &dir)?,
                None => render_man_page(&root, &mut std::io::stdout()).context("cannot write the man page")?,
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Status { base, json } => {
            let config = load_config(base.config.as_ref())?;
            let report = spoolmon::status::read(&BaseDir::new(&base.base_dir), &config, std::time::SystemTime::now())?;
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                print!("{}", spoolmon::status::format_summary(&report));
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// A man page section beyond what `--help` says: a heading and its tagged paragraphs.
struct ManSection {
    heading: &'static str,
    entries: &'static [(&'static str, &'static str)],
}

const MAN_FILES: ManSection = ManSection {
    heading: "FILES",
    entries: &[
        (
            "/etc/spoolmon/spoolmon.yaml",
            "The configuration file the packaged systemd units pass with --config. Every key is \
             optional; spoolmon config --print-defaults lists them with their defaults.",
        ),
        (
            "/var/lib/spoolmon",
            "The default base directory (--base-dir): orders/, incoming/, failed/, output/, archive/, \
             outbox/ and state/, described in /usr/share/doc/spoolmon/spool-layout.md.",
        ),
        (
            "/var/lib/spoolmon/state/lock",
            "Locked by the daemon working on the base directory; a second daemon on the same base \
             refuses to start.",
        ),
    ],
};

const MAN_SIGNALS: ManSection = ManSection {
    heading: "SIGNALS",
    entries: &[
        (
            "SIGHUP",
            "spoolmon run, pull and process re-read the configuration file: an invalid one is \
             logged and the running settings are kept; a changed one restarts the work with it \
             (engine, icmp and fping-path change only at restart). --log-file is reopened.",
        ),
        (
            "SIGTERM, SIGINT",
            "Drain: finish the work in hand and stop, within stop-timeout seconds (default 30). A \
             second SIGTERM stops at once (exit status 1); nothing on disk is lost.",
        ),
    ],
};

const MAN_EXIT_STATUS: ManSection = ManSection {
    heading: "EXIT STATUS",
    entries: &[
        ("0", "Success; for spoolmon check, OK."),
        ("1", "spoolmon check: WARNING."),
        (
            "2",
            "An error (bad arguments, configuration or base directory); for spoolmon check, CRITICAL.",
        ),
        (
            "3",
            "spoolmon check: UNKNOWN (for example an unreadable base directory).",
        ),
    ],
};

const MAN_SEE_ALSO: ManSection = ManSection {
    heading: "SEE ALSO",
    entries: &[
        (
            "/usr/share/doc/spoolmon/spool-layout.md",
            "The on-disk contract: every directory and file format, and the rules that keep it safe.",
        ),
        (
            "rrdtool(1), fping(8), systemd.service(5)",
            "Reading the RRDs, the fallback ping engine, the packaged units.",
        ),
    ],
};

/// The extra sections of the page named `page` (`spoolmon`, `spoolmon-run`, ...).
fn man_sections(page: &str) -> &'static [ManSection] {
    match page {
        "spoolmon" => &[MAN_FILES, MAN_SIGNALS, MAN_EXIT_STATUS, MAN_SEE_ALSO],
        "spoolmon-run" | "spoolmon-pull" | "spoolmon-process" => &[MAN_FILES, MAN_SIGNALS, MAN_SEE_ALSO],
        page if page.starts_with("spoolmon-check") => &[MAN_EXIT_STATUS],
        _ => &[],
    }
}

/// Renders the man page of `command` (a built clap command): clap_mangen's sections from the
/// clap definitions, then this page's extra sections.
fn render_man_page(command: &clap::Command, out: &mut dyn std::io::Write) -> std::io::Result<()> {
    use clap_mangen::roff::{bold, roman, Roff};
    let man = clap_mangen::Man::new(command.clone())
        .source(concat!("spoolmon ", env!("CARGO_PKG_VERSION")))
        .manual("spoolmon manual");
    man.render_title(out)?;
    man.render_name_section(out)?;
    man.render_synopsis_section(out)?;
    man.render_description_section(out)?;
    if command.get_arguments().any(|arg| !arg.is_hide_set()) {
        man.render_options_section(out)?;
    }
    if command.has_subcommands() {
        man.render_subcommands_section(out)?;
    }
    let mut extra = Roff::new();
    for section in man_sections(command.get_display_name().unwrap_or(command.get_name())) {
        extra.control("SH", [section.heading]);
        for (term, text) in section.entries {
            extra.control("TP", []).text([bold(*term)]).text([roman(*text)]);
        }
    }
    extra.to_writer(out)?;
    if command.get_version().is_some() {
        man.render_version_section(out)?;
    }
    Ok(())
}

/// Writes `<name>.1` for `command` and every visible subcommand, recursively, into `dir`.
fn write_man_pages(command: &clap::Command, dir: &std::path::Path) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    for subcommand in command.get_subcommands().filter(|sub| !sub.is_hide_set()) {
        write_man_pages(subcommand, dir)?;
    }
    let name = command.get_display_name().unwrap_or(command.get_name());
    let path = dir.join(format!("{name}.1"));
    let mut page = Vec::new();
    render_man_page(command, &mut page).with_context(|| format!("cannot render {}", path.display()))?;
    std::fs::write(&path, page).with_context(|| format!("cannot write {}", path.display()))
}
