//! `exclude-frontends` / `exclude-backends`: files of names to leave out, re-read for every
//! snapshot so that editing them needs no restart. One name per line; `#` starts a comment;
//! blank lines are ignored; dots become underscores, and names are compared with the rows'
//! names after the same replacement (haproxystats compares the Graphite spellings).

use super::options::HaproxyOptions;
use super::paths::graphite_name;
use std::collections::HashSet;
use std::path::Path;
use tracing::warn;

/// The frontends and backends (with their servers) left out of one snapshot's aggregation.
#[derive(Clone, Debug, Default)]
pub struct Exclusions {
    frontends: HashSet<String>,
    backends: HashSet<String>,
}

impl Exclusions {
    /// Reads the files named in `options`. A file that cannot be read now (it was checked at
    /// start-up) excludes nothing this time, with a warning: the snapshot itself is fine.
    pub fn load(options: &HaproxyOptions) -> Exclusions {
        Exclusions {
            frontends: read_or_warn(options.exclude_frontends.as_deref()),
            backends: read_or_warn(options.exclude_backends.as_deref()),
        }
    }

    /// True if the frontend named `name` (as HAProxy spells it) is excluded.
    pub fn frontend(&self, name: &str) -> bool {
        !self.frontends.is_empty() && self.frontends.contains(graphite_name(name).as_ref())
    }

    /// True if the backend named `name` (and so its servers) is excluded.
    pub fn backend(&self, name: &str) -> bool {
        !self.backends.is_empty() && self.backends.contains(graphite_name(name).as_ref())
    }
}

fn read_or_warn(path: Option<&Path>) -> HashSet<String> {
    let Some(path) = path else { return HashSet::new() };
    match std::fs::read_to_string(path) {
        Ok(text) => parse_names(&text),
        Err(e) => {
            warn!(
                "cannot read exclude file {}: {e}; excluding nothing from it this time",
                path.display()
            );
            HashSet::new()
        }
    }
}

/// The names in an exclude file, in their Graphite spelling.
fn parse_names(text: &str) -> HashSet<String> {
    text.lines()
        .map(|line| line.split('#').next().unwrap_or_default().trim())
        .filter(|name| !name.is_empty())
        .map(|name| graphite_name(name).into_owned())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn comments_blank_lines_and_dots_are_handled() {
        let names = parse_names("# frontends we do not graph\nfe_1.example.com\n\n  www  # legacy\n#old\n");
        assert_eq!(
            names,
            HashSet::from(["fe_1_example_com".to_string(), "www".to_string()])
        );
    }

    #[test]
    fn rows_match_in_either_spelling_and_files_are_reread() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("exclude-backends");
        std::fs::write(&file, "be.one\n").unwrap();
        let options = HaproxyOptions {
            exclude_backends: Some(file.clone()),
            ..HaproxyOptions::default()
        };
        let first = Exclusions::load(&options);
        assert!(first.backend("be.one") && first.backend("be_one") && !first.backend("be.two"));
        assert!(!first.frontend("be.one"));
        std::fs::write(&file, "be.two\n").unwrap();
        assert!(Exclusions::load(&options).backend("be.two"));
        std::fs::remove_file(&file).unwrap();
        assert!(!Exclusions::load(&options).backend("be.two"));
    }
}
