//! The command line of an exec order's run: the order's `command` template with its
//! placeholders (`{host}`, `{pings}`, `{interval_ms}`, `{source_ip}`, `{interface}`) substituted,
//! then its `flags`. See [`command_line`] for the rules.
//!
//! Owns nothing. Invariants: substitution is one pass (a value is never substituted again), a
//! value that would be read as an option is refused, an unset placeholder never silently becomes
//! an empty string, and no shell is involved (the result is an argv).
//!
//! Called by [`ExecProbe`](super::ExecProbe) before it starts each order's command.

use crate::orders::order::ExecSpec;
use crate::probe::RunPlan;

/// Why an order's command line cannot be built.
#[derive(Debug, thiserror::Error)]
pub enum TemplateError {
    #[error("command argument {argument:?} uses {placeholder} but the order sets no value for it")]
    UnsetPlaceholder {
        placeholder: &'static str,
        argument: String,
    },
    #[error("{placeholder} would be {value:?}, which the command would read as an option")]
    OptionLikeValue { placeholder: &'static str, value: String },
    #[error("the order's command is empty")]
    EmptyCommand,
}

/// The argv for one run: `spec.command` with placeholders substituted, then `spec.flags`
/// (appended as they are).
///
/// Substitution is a single pass: a value that itself looks like a placeholder stays literal.
/// A value starting with `-` is refused (it would be read as an option by the command).
///
/// Rules for a placeholder without a value (`{host}`, `{source_ip}` or `{interface}` that the
/// order does not set):
/// - an argument that is exactly that placeholder is removed, together with the argument just
///   before it when that one looks like an option taking a value (a template argument starting
///   with `-`, without `=` and without placeholder), so `-I {interface}` disappears as a whole;
/// - an argument that merely contains it (`--src={source_ip}`) is an error: substituting an
///   empty string would silently change the command's meaning.
///
/// Unknown `{...}` text is left as it is.
pub fn command_line(spec: &ExecSpec, plan: &RunPlan) -> Result<Vec<String>, TemplateError> {
    let pings = plan.pings.to_string();
    let interval_ms = plan.interval.as_millis().to_string();
    let source_ip = spec.source_ip.map(|ip| ip.to_string());
    let values = PlaceholderValues {
        host: spec.host.as_deref(),
        pings: &pings,
        interval_ms: &interval_ms,
        source_ip: source_ip.as_deref(),
        interface: spec.interface.as_deref(),
    };
    // Each argument with whether it is an option that may take the next argument as value.
    let mut argv: Vec<(String, bool)> = Vec::with_capacity(spec.command.len() + spec.flags.len());
    for argument in &spec.command {
        let whole_placeholder = PLACEHOLDERS.into_iter().find(|p| p == argument);
        if whole_placeholder.map(|p| values.get(p)).transpose()? == Some(None) {
            if argv.len() > 1 && argv.last().is_some_and(|(_, option)| *option) {
                argv.pop();
            }
            continue;
        }
        let option = argument.len() > 1
            && argument.starts_with('-')
            && !argument.contains('=')
            && !PLACEHOLDERS.iter().any(|p| argument.contains(p));
        argv.push((substitute(argument, &values)?, option));
    }
    if argv.first().is_none_or(|(program, _)| program.is_empty()) {
        return Err(TemplateError::EmptyCommand);
    }
    let mut argv: Vec<String> = argv.into_iter().map(|(argument, _)| argument).collect();
    argv.extend(spec.flags.iter().cloned());
    Ok(argv)
}

/// The placeholders [`command_line`] knows.
const PLACEHOLDERS: [&str; 5] = ["{host}", "{pings}", "{interval_ms}", "{source_ip}", "{interface}"];

/// What each placeholder stands for in one run (`None`: the order sets no value).
struct PlaceholderValues<'a> {
    host: Option<&'a str>,
    pings: &'a str,
    interval_ms: &'a str,
    source_ip: Option<&'a str>,
    interface: Option<&'a str>,
}

impl PlaceholderValues<'_> {
    /// The value of `placeholder` (one of [`PLACEHOLDERS`]); an error if it looks like an option.
    fn get(&self, placeholder: &'static str) -> Result<Option<&str>, TemplateError> {
        let value = match placeholder {
            "{host}" => self.host,
            "{pings}" => Some(self.pings),
            "{interval_ms}" => Some(self.interval_ms),
            "{source_ip}" => self.source_ip,
            _ => self.interface,
        };
        match value {
            Some(value) if value.starts_with('-') => Err(TemplateError::OptionLikeValue {
                placeholder,
                value: value.to_owned(),
            }),
            _ => Ok(value),
        }
    }
}

/// Replaces every placeholder in `argument` in one pass.
fn substitute(argument: &str, values: &PlaceholderValues) -> Result<String, TemplateError> {
    let mut result = String::with_capacity(argument.len());
    let mut rest = argument;
    while let Some(open) = rest.find('{') {
        result.push_str(&rest[..open]);
        rest = &rest[open..];
        let Some(placeholder) = PLACEHOLDERS.into_iter().find(|p| rest.starts_with(p)) else {
            result.push('{');
            rest = &rest[1..];
            continue;
        };
        let value = values
            .get(placeholder)?
            .ok_or_else(|| TemplateError::UnsetPlaceholder {
                placeholder,
                argument: argument.to_owned(),
            })?;
        result.push_str(value);
        rest = &rest[placeholder.len()..];
    }
    result.push_str(rest);
    Ok(result)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::orders::order::ExecKind;
    use crate::probe::exec::tests::{exec, plan};
    use std::net::IpAddr;
    use std::time::Duration;

    #[test]
    fn hostile_values_are_not_substituted_twice_nor_read_as_options() {
        let plan = plan(2, Duration::from_secs(5));
        let mut spec = exec(ExecKind::Sping, &["scion", "ping", "{host}", "--src", "{source_ip}"]);
        spec.host = Some("{source_ip}{pings}".into());
        spec.source_ip = Some("10.0.0.1".parse::<IpAddr>().expect("ip"));
        let argv = command_line(&spec, &plan).expect("argv");
        assert_eq!(argv, ["scion", "ping", "{source_ip}{pings}", "--src", "10.0.0.1"]);
        spec.host = Some("--dispatcher=/tmp/evil".into());
        assert!(matches!(
            command_line(&spec, &plan),
            Err(TemplateError::OptionLikeValue {
                placeholder: "{host}",
                ..
            })
        ));
    }

    #[test]
    fn unset_placeholder_after_a_placeholder_or_first_argument_removes_only_itself() {
        let plan = plan(2, Duration::from_secs(5));
        let mut spec = exec(ExecKind::Exec, &["-tool", "{interface}", "-x={pings}", "{source_ip}"]);
        spec.host = None;
        assert_eq!(command_line(&spec, &plan).expect("argv"), ["-tool", "-x=2"]);
    }

    #[test]
    fn command_made_only_of_unset_placeholders_is_empty() {
        let mut spec = exec(ExecKind::Exec, &["{interface}"]);
        spec.host = None;
        assert!(matches!(
            command_line(&spec, &plan(1, Duration::from_secs(1))),
            Err(TemplateError::EmptyCommand)
        ));
    }
}
