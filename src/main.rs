//! The `spoolmon` command: each subcommand is a thin call into the library.

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
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
        Command::Run { base } => {
            let config = load_config(base.config.as_ref())?;
            let shutdown = Arc::new(AtomicBool::new(false));
            for signal in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
                signal_hook::flag::register(signal, shutdown.clone()).context("cannot install signal handler")?;
            }
            spoolmon::daemon::run(BaseDir::new(base.base_dir), config, shutdown)?;
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
    }
}
