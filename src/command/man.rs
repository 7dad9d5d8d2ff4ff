//! `spoolmon man`: the man pages, rendered by clap_mangen from the clap definitions `main.rs`
//! hands over, plus the sections `--help` does not have (FILES, SIGNALS, EXIT STATUS, SEE ALSO),
//! kept here. One page to stdout, or `spoolmon.1` and `spoolmon-<command>.1` for every visible
//! subcommand into a directory (what packages install).

use anyhow::{Context, Result};
use std::path::Path;
use std::process::ExitCode;

/// Prints the man page of `cli` (the whole `spoolmon` command), or writes one page per command
/// into `out_dir`.
pub fn run(cli: clap::Command, out_dir: Option<&Path>) -> Result<ExitCode> {
    let mut root = cli.disable_help_subcommand(true);
    root.build();
    match out_dir {
        Some(dir) => write_man_pages(&root, dir)?,
        None => {
            // Into a buffer first, so that a closed stdout is told apart from a rendering error.
            let mut page = Vec::new();
            render_man_page(&root, &mut page).context("cannot render the man page")?;
            super::print_stdout(page)?;
        }
    }
    Ok(ExitCode::SUCCESS)
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
             optional; spoolmon config --print-defaults lists them with their defaults, spoolmon \
             config --reference with their types and meanings (also in \
             /usr/share/doc/spoolmon/config-reference.md).",
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
            "An error (bad arguments, configuration or base directory); for spoolmon check, CRITICAL \
             (a check's own bad arguments are UNKNOWN, 3).",
        ),
        (
            "3",
            "spoolmon check: UNKNOWN (for example an unreadable base directory or a bad argument).",
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
