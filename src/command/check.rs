//! `spoolmon check <what>`: the Nagios checks of a base directory, one line on stdout and the
//! plugin exit status (0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN). The checks themselves live in
//! [`crate::check`]; this file holds their arguments and default thresholds, and turns a bad
//! argument into UNKNOWN (a check never exits 2 for an error of its own), also one that clap
//! refuses ([`usage_error`], called by `main.rs`).

use super::load_config;
use crate::check::{self, Outcome, Thresholds};
use crate::orders::book::{is_ignored_name, MAX_DEPTH};
use crate::orders::order::Alert;
use crate::shared::measurement::OrderId;
use crate::spool::BaseDir;
use clap::{Args, Subcommand};
use std::ffi::OsStr;
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
    /// One order as one Nagios service (one per target): its last result's loss, median and max
    /// RTT against -w/-c, with perfdata.
    ///
    /// The order's own alert: thresholds win per level and metric over -w/-c. CRITICAL when the
    /// target is not being measured: no such order, an invalid or unresolved order file, a
    /// failing order, no result for --stale-steps steps (or never measured for that long).
    /// UNKNOWN for a bad argument, an unreadable base or last_result, and an order not measured
    /// yet.
    Order {
        /// The order's id: its path below orders/ (e.g. app1/target1).
        #[arg(value_name = "ID")]
        id: String,
        /// The base directory.
        #[arg(long, default_value = "/var/lib/spoolmon")]
        base_dir: PathBuf,
        /// Warning thresholds, metric=value items separated by commas: loss (lost pings, or a
        /// percentage: loss=20%), median and max (RTT in seconds, or with ms, us or s:
        /// median=100ms); each value a Nagios range (a plain value alerts above it), e.g.
        /// loss=2,median=100ms,max=0.5.
        #[arg(short, long, value_name = "LIST")]
        warning: Option<String>,
        /// Critical thresholds, as --warning.
        #[arg(short, long, value_name = "LIST")]
        critical: Option<String>,
        /// The configuration the daemon runs with (its defaults decide what is valid).
        #[arg(long)]
        config: Option<PathBuf>,
        /// The result is stale (CRITICAL) when collected more than this many steps ago (at least 1).
        #[arg(long, default_value = "3", value_parser = clap::value_parser!(u32).range(1..))]
        stale_steps: u32,
    },
    /// Active orders whose last_result is older than --stale-steps steps (-w/-c on their
    /// number, default 0 and 10), invalid or unresolved order files (--invalid-warning,
    /// --invalid-critical, default 0 and none), and every other active order's last result
    /// against --order-warning/--order-critical and its own alert: (the worst one named).
    Orders {
        #[command(flatten)]
        args: CheckArgs,
        /// The configuration the daemon runs with (its defaults decide what is valid).
        #[arg(long)]
        config: Option<PathBuf>,
        /// An active order is stale when its last_result is older than this many steps (at least 1).
        #[arg(long, default_value = "3", value_parser = clap::value_parser!(u32).range(1..))]
        stale_steps: u32,
        #[arg(long, default_value = "0")]
        invalid_warning: String,
        #[arg(long)]
        invalid_critical: Option<String>,
        /// Warning thresholds for each order's last result, as `check order -w`
        /// (loss=2,median=100ms,max=0.5); an order's own alert: wins per level and metric.
        #[arg(long, value_name = "LIST")]
        order_warning: Option<String>,
        /// Critical thresholds for each order's last result, as `check order -c`.
        #[arg(long, value_name = "LIST")]
        order_critical: Option<String>,
    },
    /// Age in seconds of the last HAProxy snapshot the pull collector published (-w/-c,
    /// default 60 and 300); CRITICAL when none ever was.
    Pull {
        #[command(flatten)]
        args: CheckArgs,
    },
    /// Children (nodes this one receives from) that are stale: silent for
    /// receive.child-timeout, their output archived (-w/-c, default 0 and 10); OK while none
    /// has shipped here.
    Children {
        #[command(flatten)]
        args: CheckArgs,
    },
}

/// The checks, as `spoolmon check <name>` names them.
const CHECK_NAMES: [&str; 8] = [
    "queue", "failed", "outbox", "daemon", "order", "orders", "pull", "children",
];

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
            CHECK_NAMES.join(", ").replace(", children", " or children")
        )
    } else {
        let text = error.render().to_string();
        let mut lines = text.lines();
        let first = lines.next().unwrap_or_default();
        let mut reason = first.strip_prefix("error: ").unwrap_or(first).to_string();
        // "the following required arguments were not provided:" names them on the next lines.
        if reason.ends_with(':') {
            let named: Vec<&str> = lines.map(str::trim).take_while(|line| !line.is_empty()).collect();
            reason = format!("{reason} {}", named.join(" "));
        }
        format!("{reason} (see --help)")
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
        CheckCommand::Children { args } => {
            thresholds(args, "0", "10").map(|count| check::check_children(&BaseDir::new(&args.base_dir), &count))
        }
        CheckCommand::Order {
            id,
            base_dir,
            warning,
            critical,
            config,
            stale_steps,
        } => Ok(check_order(id, base_dir, warning, critical, config, *stale_steps, now)
            .unwrap_or_else(|reason| Outcome::unknown("order", reason))),
        CheckCommand::Orders {
            args,
            config,
            stale_steps,
            invalid_warning,
            invalid_critical,
            order_warning,
            order_critical,
        } => match load_config(config.as_deref()) {
            Ok(config) => thresholds(args, "0", "10").and_then(|stale| {
                let results = match Alert::parse_lists(order_warning.as_deref(), order_critical.as_deref()) {
                    Ok(results) => results,
                    Err(e) => return Ok(Outcome::unknown("orders", e.to_string())),
                };
                let limits = check::OrderThresholds {
                    stale,
                    invalid: Thresholds::parse(Some(invalid_warning), invalid_critical.as_deref())?,
                    stale_steps: *stale_steps,
                    results,
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
        CheckCommand::Order { .. } => "order",
        CheckCommand::Orders { .. } => "orders",
        CheckCommand::Pull { .. } => "pull",
        CheckCommand::Children { .. } => "children",
    };
    let outcome = outcome.unwrap_or_else(|e| Outcome::unknown(name, e.to_string()));
    print_outcome(&outcome)
}

/// `check order`: the id and the lists checked (a bad one is the UNKNOWN reason), then the
/// configuration loaded, then the check.
fn check_order(
    id: &str,
    base_dir: &std::path::Path,
    warning: &Option<String>,
    critical: &Option<String>,
    config: &Option<PathBuf>,
    stale_steps: u32,
    now: std::time::SystemTime,
) -> Result<Outcome, String> {
    let id = order_id(id)?;
    let limits = check::OrderLimits {
        alert: Alert::parse_lists(warning.as_deref(), critical.as_deref()).map_err(|e| e.to_string())?,
        stale_steps,
    };
    let config = load_config(config.as_deref()).map_err(|e| format!("{e:#}"))?;
    Ok(check::check_order(&BaseDir::new(base_dir), &config, &id, &limits, now))
}

/// The order id of `check order`: an [`OrderId`] the order book could track (no `..`, no
/// absolute path, no name it ignores, no component longer than a file name can be, at most
/// [`MAX_DEPTH`] directories deep); a hostile one is refused (UNKNOWN) before any path is built.
fn order_id(text: &str) -> Result<OrderId, String> {
    let shown = crate::orders::order::alert::quote(text);
    let refuse = |why: &str| Err(format!("{shown} is not an order id: {why}"));
    let Ok(id) = OrderId::new(text) else {
        return refuse("it must be a relative path below orders/ without `.` or `..` parts");
    };
    let parts: Vec<&str> = id.as_str().split('/').collect();
    if parts.len() > MAX_DEPTH {
        return refuse(&format!("deeper than {MAX_DEPTH} directories"));
    }
    if parts.iter().any(|part| part.len() > 255) {
        return refuse("a part longer than 255 bytes");
    }
    if let Some(part) = parts.iter().find(|part| is_ignored_name(OsStr::new(part))) {
        return refuse(&format!(
            "the daemon ignores the name {} (dotfiles, *.tmp, *.part, *.swp, *~, #name#)",
            crate::orders::order::alert::quote(part)
        ));
    }
    Ok(id)
}

/// Prints the plugin's line and returns its exit status. The status is the check's answer
/// whether or not the line could be written (a closed stdout, super::StdoutClosed), and a check
/// has nowhere else to say anything, so a failed write changes neither.
fn print_outcome(outcome: &Outcome) -> ExitCode {
    let _ = super::print_stdout(format!("{}\n", outcome.line()));
    ExitCode::from(outcome.exit_code())
}
