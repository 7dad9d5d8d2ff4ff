//! The `spoolmon` command: parses the command line, sets up logging and dispatches to the
//! subcommand's file in [`spoolmon::command`]; nothing else lives here.

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};
use spoolmon::command::{self, check::CheckCommand, order::OrderCommand, BaseArgs, ServiceArgs};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser, Debug)]
#[command(
    name = "spoolmon",
    version,
    about = "Monitoring pipeline where a directory is a queue"
)]
struct Cli {
    /// Log level (error, warn, info, debug, trace, off, or RUST_LOG-style directives such as
    /// spoolmon=debug,warn); RUST_LOG overrides it. Checks log nothing and the listings (status,
    /// orders, show, outbox) only errors unless this is given (whatever RUST_LOG says).
    #[arg(long, global = true, default_value = DEFAULT_LOG_LEVEL, value_parser = spoolmon::service::log::parse_log_level)]
    log_level: String,
    /// Log to this file (appended, with timestamps; reopened on SIGHUP for logrotate) instead
    /// of stderr. Under systemd, stderr goes to the journal with priorities and no timestamps.
    #[arg(long, global = true, value_name = "PATH")]
    log_file: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
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
    /// Serve the HTTP API (orders, results, series, status) on a base directory.
    ///
    /// Serves the config's `api:` section, or its defaults without one: 127.0.0.1:19998, reads
    /// without a token, no writes. See docs/api.md for the endpoints.
    Serve {
        #[command(flatten)]
        base: BaseArgs,
        /// Listen here instead of api.listen: address:port or unix:/absolute/path (repeatable).
        #[arg(long, value_name = "ADDR")]
        listen: Vec<String>,
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
        /// Add each order's last result (loss, median RTT, age) and the time until it expires.
        #[arg(long)]
        wide: bool,
    },
    /// Show one order: its state, last result and recent steps (from its main.rrd).
    ///
    /// The order's state as `spoolmon orders` lists it (with the failing reason), its probe and
    /// expiry, its last result, and a table of its recent steps read from output/<ID>/main.rrd
    /// (archive/<ID>/ for an archived order) with a sparkline of the median and the loss. Times
    /// are UTC; unknown steps are `-` in the table and `?` in the sparklines. Exit status 1 when
    /// the id is no order and has no output or archive entry, 2 for a malformed id.
    Show {
        #[command(flatten)]
        base: BaseArgs,
        /// The order id: its path below orders/, as `spoolmon orders` lists it.
        #[arg(value_name = "ID")]
        id: String,
        /// How far back the table reaches: 30m, 1h, 6h, 1d, 7d, or seconds (units s, m, h, d,
        /// w; at most 520w). At most 60 rows are shown: longer ranges average several steps
        /// per row, or read a coarser archive.
        #[arg(long, value_name = "DURATION", default_value = "1h", value_parser = spoolmon::output::history::parse_range)]
        range: u64,
        /// Print one JSON object instead (times in unix seconds, round-trip times in seconds,
        /// unknown values as null).
        #[arg(long)]
        json: bool,
    },
    /// Draw one order's SmokePing graph (PNG or SVG) from its main.rrd.
    ///
    /// The RTTs of each round as grey smoke (darker towards the middle of the distribution),
    /// the median as a line coloured by the round's loss, axes in milliseconds, a legend with
    /// the median's average, maximum, minimum and latest, the average loss and the period.
    /// Reads output/<ID>/main.rrd (archive/<ID>/ for an archived order). Exit status 1 when the
    /// order has no RRD, 2 for a malformed id, window or file name.
    Graph {
        #[command(flatten)]
        base: BaseArgs,
        #[command(flatten)]
        args: command::graph::GraphArgs,
    },
    /// Send the orders' RRD history through a sink (as pmseries --load does).
    ///
    /// Each order's main.rrd is read from its finest archive for each period (coarser ones
    /// further back, never two for one time) and every row sent through the sink as a result,
    /// by an outbox of its own (outbox/<SINK>@backfill/) delivered beside the daemon. Resumable:
    /// run the same command again after an interruption. Exit status 1 when interrupted.
    Backfill {
        #[command(flatten)]
        base: BaseArgs,
        #[command(flatten)]
        args: command::backfill::BackfillArgs,
    },
    /// Write, touch or remove an order file below orders/ (validated like the daemon does).
    Order {
        #[command(subcommand)]
        order: OrderCommand,
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
        /// Print every key of every section and sink type with its type, default and meaning
        /// (Markdown, as config-reference.md).
        #[arg(long, conflicts_with_all = ["print", "print_defaults"])]
        reference: bool,
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

/// The default of `--log-level`.
const DEFAULT_LOG_LEVEL: &str = "info";

/// Commands whose output is their report get a quieter default log level: a Nagios check prints
/// exactly one line (nothing on stderr), and the listings already show what the scan would
/// warn about (invalid orders).
fn quiet_level(command: &Command) -> Option<&'static str> {
    match command {
        Command::Check { .. } => Some("off"),
        Command::Status { .. }
        | Command::Orders { .. }
        | Command::Show { .. }
        | Command::Graph { .. }
        | Command::Outbox { .. }
        | Command::Order { .. } => Some("error"),
        _ => None,
    }
}

fn main() -> ExitCode {
    let matches = match Cli::command().try_get_matches() {
        Ok(matches) => matches,
        Err(e) => return refused(e),
    };
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
        // The reader took what it wanted; see command::StdoutClosed for why this is status 0.
        Err(e) if command::is_stdout_closed(&e) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("spoolmon: {e:#}");
            ExitCode::from(2)
        }
    }
}

/// A command line clap refused. Help and version are printed as asked; a `check` answers a usage
/// error like a Nagios plugin (UNKNOWN, exit 3, one line on stdout); every other command gets
/// clap's usage message and exit status 2.
fn refused(error: clap::Error) -> ExitCode {
    use clap::error::ErrorKind;
    let args: Vec<String> = std::env::args_os().map(|a| a.to_string_lossy().into_owned()).collect();
    match (error.kind(), check_command_line(&args)) {
        (ErrorKind::DisplayHelp | ErrorKind::DisplayVersion, _) | (_, None) => error.exit(),
        (_, Some(check)) => command::check::usage_error(check, &error),
    }
}

/// For a command line `spoolmon [global options] check [<name>] ...`: the word after `check`,
/// if any. The first two words that are neither options nor the values of the global options
/// are the command and the check (`check` itself takes no options but the global ones).
fn check_command_line(args: &[String]) -> Option<Option<&str>> {
    let mut words = Vec::new();
    let mut args = args.iter().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--" => break,
            "--log-level" | "--log-file" => {
                args.next();
            }
            option if option.starts_with('-') => {}
            word => words.push(word),
        }
        if words.len() == 2 {
            break;
        }
    }
    match words.as_slice() {
        ["check", rest @ ..] => Some(rest.first().copied()),
        _ => None,
    }
}

fn execute(command: Command, log_file: Option<PathBuf>) -> anyhow::Result<ExitCode> {
    match command {
        Command::Check { check } => Ok(command::check::run(check)),
        Command::Run { base, service } => command::run::run(base, service, log_file),
        Command::Serve { base, listen } => command::serve::run(base, listen),
        Command::Pull { base, service } => command::pull::run(base, service, log_file),
        Command::Process { base, service } => command::process::run(base, service, log_file),
        Command::Outbox { base, json } => command::outbox::run(base, json),
        Command::Orders { base, json, wide } => command::orders::run(base, json, wide),
        Command::Show { base, id, range, json } => command::show::run(base, &id, range, json),
        Command::Backfill { base, args } => command::backfill::run(base, args),
        Command::Graph { base, args } => command::graph::run(base, args),
        Command::Order { order } => command::order::run(order),
        Command::Config {
            config,
            print_defaults,
            print,
            reference,
        } => command::config::run(config.as_deref(), print_defaults, print, reference),
        Command::Completions { shell } => command::completions::run(shell, Cli::command()),
        Command::Man { out_dir } => command::man::run(Cli::command(), out_dir.as_deref()),
        Command::Status { base, json } => command::status::run(base, json),
    }
}
