//! The operator-facing errors of the command line (issue 11, point 7): each message names the
//! file or key and the real cause once, bad arguments get the exit status their command
//! promises, and a closed stdout ends a command quietly.

mod common;

use common::BIN;
use std::process::{Command, Output};

fn spoolmon(args: &[&str]) -> Output {
    Command::new(BIN).args(args).output().expect("spoolmon runs")
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn a_missing_config_file_is_one_line_naming_it_and_the_cause_once() {
    let out = spoolmon(&["config", "--print", "--config", "/nonexistent/spoolmon.yaml"]);
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("/nonexistent/spoolmon.yaml"), "{err}");
    assert_eq!(err.matches("No such file or directory").count(), 1, "{err}");
}
