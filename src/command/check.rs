//! `spoolmon check <what>`: the Nagios checks of a base directory, one line on stdout and the
//! plugin exit status (0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN). The checks themselves live in
//! [`crate::check`]; this file holds their arguments and default thresholds, and turns a bad
//! argument into UNKNOWN (a check never exits 2 for an error of its own), also one that clap
//! refuses ([`usage_error`], called by `main.rs`).

use super::load_config;
use crate::check::{self, Outcome, Thresholds};
use crate::spool::BaseDir;
use clap::{Args, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

/// Threshold options every check takes (Nagios range syntax).
#[derive(Args, Debug)]
pub struct CheckArgs {
    /// The base directory.
    #[arg(long, default_value = "/var/lib/spoolmon")]
    pub base_dir: PathBuf,
    /// Warning range for the checked count (Nagios syntax: 10, 10:, ~:10, 10:20, @10:20).
    #[arg(short, long)]
    pub warning: Option<String>,
    /// Critical range for the checked count.
    #[arg(short, long)]
    pub critical: Option<String>,
}

#[derive(Subcommand, Debug)]
pub enum CheckCommand {
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

/// The checks, as `spoolmon check <name>` names them.
const CHECK_NAMES: [&str; 6] = ["queue", "failed", "outbox", "daemon", "orders", "pull"];

/// Answers a command line that clap refused for `spoolmon check [<name>]` (an unknown option, a
/// missing or malformed value, no such check) as Nagios plugins answer a usage error: UNKNOWN,
/// exit 3, one line on stdout, with clap's first line as the reason. `check` is the word after
/// `spoolmon check`, if any.
pub fn usage_error(check: Option<&str>, error: &clap::Error) -> ExitCode {
    let name = CHECK_NAMES
        .into_iter()
        .find(|name| Some(*name) == check)
        .unwrap_or("check");
    let reason = if error.kind() == clap::error::ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand {
        // clap's text would be the whole help.
        format!(
            "no check given: say {}",
            CHECK_NAMES.join(", ").replace(", pull", " or pull")
        )
    } else {
        let text = error.render().to_string();
        let first = text.lines().next().unwrap_or_default();
        format!("{} (see --help)", first.strip_prefix("error: ").unwrap_or(first))
    };
    print_outcome(&Outcome::unknown(name, reason))
}

/// Runs one check: prints its line, returns its plugin exit status.
pub fn run(command: CheckCommand) -> ExitCode {
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
        } => match load_config(config.as_deref()) {
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
    print_outcome(&outcome)
}

/// Prints the plugin's line and returns its exit status. The status is the check's answer
/// whether or not the line could be written (a closed stdout, super::StdoutClosed), and a check
/// has nowhere else to say anything, so a failed write changes neither.
fn print_outcome(outcome: &Outcome) -> ExitCode {
    let _ = super::print_stdout(format!("{}\n", outcome.line()));
    ExitCode::from(outcome.exit_code())
}
