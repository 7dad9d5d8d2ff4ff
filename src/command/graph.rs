//! `spoolmon graph ID [--range 1d | --from T --until T] [--width W --height H] -o FILE`: one
//! order's SmokePing graph ([`crate::output::graph`]) from its `main.rrd` (or its archive
//! entry's), written to FILE (PNG or SVG by the name's extension; `-` writes PNG to stdout).
//! Reads only; runs beside the daemon.
//!
//! Exit status: 0 when the graph was written; 1 when the order has no RRD (never measured,
//! `norrd`, no such order); 2 for a malformed id, window, size or file name.

use super::BaseArgs;
use crate::output::graph::{self, Format, GraphError};
use crate::output::history::HistoryError;
use anyhow::{bail, Context, Result};
use std::io::Write;
use std::path::Path;
use std::process::ExitCode;

/// What `spoolmon graph` takes besides the base directory.
#[derive(Debug, clap::Args)]
pub struct GraphArgs {
    /// The order id: its path below orders/, as `spoolmon orders` lists it.
    #[arg(value_name = "ID")]
    pub id: String,
    /// How far back the graph reaches from --until: 3h, 1d, 1w, 1y, or seconds (units s, m,
    /// h, d, w, y).
    #[arg(long, value_name = "DURATION", default_value = "1d", value_parser = crate::output::history::parse_range)]
    pub range: u64,
    /// Start instead of --range: unix seconds, now, or -<duration> (-3h).
    #[arg(long, value_name = "TIME")]
    pub from: Option<String>,
    /// End: unix seconds, now (the default), or -<duration>.
    #[arg(long, value_name = "TIME")]
    pub until: Option<String>,
    /// Width of the graph area, pixels (SmokePing's 600).
    #[arg(long, default_value_t = 600)]
    pub width: u32,
    /// Height of the graph area, pixels (SmokePing's 200).
    #[arg(long, default_value_t = 200)]
    pub height: u32,
    /// The file to write: its extension (.png or .svg) chooses the format; `-` writes PNG to
    /// stdout.
    #[arg(short, long, value_name = "FILE")]
    pub output: std::path::PathBuf,
}

pub fn run(base: BaseArgs, args: GraphArgs) -> Result<ExitCode> {
    let id = crate::orders::write::lookup_id(&args.id)?;
    let now = crate::shared::clock::unix_now();
    let time = |text: &Option<String>, default: i64, name: &str| -> Result<i64> {
        match text {
            None => Ok(default),
            Some(text) => crate::api::query::parse_time(text, now).map_err(|e| anyhow::anyhow!("--{name}: {e}")),
        }
    };
    let until = time(&args.until, now, "until")?;
    let from = time(&args.from, until - args.range as i64, "from")?;
    let to_stdout = args.output == Path::new("-");
    let format = if to_stdout {
        Format::Png
    } else {
        let extension = args.output.extension().and_then(|e| e.to_str()).unwrap_or("");
        match Format::from_extension(&extension.to_ascii_lowercase()) {
            Some(format) => format,
            None => bail!("{}: the file name must end in .png or .svg", args.output.display()),
        }
    };
    let base_dir = super::orders_base(&base)?;
    let request = graph::Request {
        from,
        until,
        format,
        width: args.width,
        height: args.height,
        title: id.to_string(),
        legend: true,
    };
    let image = match graph::draw_order(&base_dir, &id, &request) {
        Ok(image) => image,
        Err(GraphError::File(HistoryError::Missing)) => {
            eprintln!(
                "spoolmon: {:?} has no main.rrd below {}/output/ or archive/ (not measured yet, norrd, or no such order)",
                id.as_str(),
                base.base_dir.display()
            );
            return Ok(ExitCode::from(1));
        }
        Err(GraphError::Request(reason)) => bail!("{reason}"),
        Err(e) => return Err(e.into()),
    };
    if to_stdout {
        std::io::stdout()
            .lock()
            .write_all(&image)
            .context("cannot write the graph to stdout")?;
    } else {
        // A partial image never takes the name: written aside, then renamed.
        let partial = args.output.with_extension(format!(
            "{}.partial",
            args.output.extension().and_then(|e| e.to_str()).unwrap_or("")
        ));
        std::fs::write(&partial, &image).with_context(|| format!("cannot write {}", partial.display()))?;
        std::fs::rename(&partial, &args.output).with_context(|| format!("cannot write {}", args.output.display()))?;
    }
    Ok(ExitCode::SUCCESS)
}
