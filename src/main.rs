//! The `spoolmon` command: each subcommand is a thin call into the library.

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand};
use spoolmon::config::Config;
use spoolmon::spool::BaseDir;
use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

#[derive(Parser, Debug)]
#[command(
    name = "spoolmon",
    version,
    about = "Monitoring pipeline where a directory is a queue"
)]
struct Cli {
    /// Log level (error, warn, info, debug, trace); RUST_LOG overrides it.
    #[arg(long, global = true, default_value = "info")]
    log_level: String,
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

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the daemon in the foreground: orders, probes, processing, output.
    Run {
        #[command(flatten)]
        base: BaseArgs,
    },
    /// Pull HAProxy statistics into incoming/ (haproxystats-pull); needs a `pull:` config section.
    Pull {
        #[command(flatten)]
        base: BaseArgs,
    },
    /// Process incoming/ alone (haproxystats-process): snapshots → output/ and sinks.
    Process {
        #[command(flatten)]
        base: BaseArgs,
    },
    /// Nagios checks of the base directory (exit 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN).
    Check {
        #[command(subcommand)]
        check: CheckCommand,
    },
    /// List orders with their state (active, invalid, unresolved) and the reason.
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
    };
    let name = match command {
        CheckCommand::Queue { .. } => "queue",
        CheckCommand::Failed { .. } => "failed",
        CheckCommand::Outbox { .. } => "outbox",
        CheckCommand::Daemon { .. } => "daemon",
    };
    let outcome = outcome.unwrap_or_else(|e| Outcome::unknown(name, e.to_string()));
    println!("{}", outcome.line());
    ExitCode::from(outcome.exit_code())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(&cli.log_level);
    match execute(cli.command) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("spoolmon: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn init_logging(level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .or_else(|_| tracing_subscriber::EnvFilter::try_new(level))
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr)
        .init();
}

fn load_config(path: Option<&PathBuf>) -> Result<Config> {
    match path {
        Some(path) => Ok(Config::load(path)?),
        None => Ok(Config::default()),
    }
}

fn execute(command: Command) -> Result<ExitCode> {
    match command {
        Command::Check { check } => Ok(run_check(check)),
        Command::Run { base } => {
            let config = load_config(base.config.as_ref())?;
            let shutdown = Arc::new(AtomicBool::new(false));
            for signal in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
                signal_hook::flag::register(signal, shutdown.clone()).context("cannot install signal handler")?;
            }
            let hup = Arc::new(AtomicBool::new(false));
            signal_hook::flag::register(signal_hook::consts::SIGHUP, hup.clone())
                .context("cannot install signal handler")?;
            spoolmon::daemon::run(BaseDir::new(base.base_dir), config, shutdown, hup)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Pull { base } => {
            let config = load_config(base.config.as_ref())?;
            let options = config
                .pull
                .context("the config has no pull: section (socket-dir or servers to pull from)")?;
            let signals = spoolmon::pull_command::PullSignals {
                interrupt: Arc::new(AtomicBool::new(false)),
                terminate: Arc::new(AtomicBool::new(false)),
            };
            for signal in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
                signal_hook::flag::register(signal, signals.terminate.clone())
                    .context("cannot install signal handler")?;
            }
            for signal in [
                signal_hook::consts::SIGTERM,
                signal_hook::consts::SIGINT,
                signal_hook::consts::SIGHUP,
            ] {
                signal_hook::flag::register(signal, signals.interrupt.clone())
                    .context("cannot install signal handler")?;
            }
            spoolmon::pull_command::run(BaseDir::new(base.base_dir), base.config.as_deref(), options, signals)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Process { base } => {
            let config = load_config(base.config.as_ref())?;
            let shutdown = Arc::new(AtomicBool::new(false));
            for signal in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
                signal_hook::flag::register(signal, shutdown.clone()).context("cannot install signal handler")?;
            }
            spoolmon::process_command::run(BaseDir::new(base.base_dir), config, shutdown)?;
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
            let listing = spoolmon::orders::listing(&base_dir, &config);
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
