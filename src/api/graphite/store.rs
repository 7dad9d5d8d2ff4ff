//! The Graphite names of what `output/` holds, and reading them as graphite-web's RRD reader
//! does.
//!
//! Names: `ping.<order id, / as .>.<leaf>`, each directory name's own dots written as `_`
//! (Graphite splits names at dots); leaves are the file's data sources (`loss`, `median`,
//! `ping1`...`pingN`) and, for SmokePing-shaped files, `min` and `max` (the smallest and largest
//! answered ping of each row). Forwarded nodes' orders are below `output/@<node>/` and are named
//! `ping.@<node>....` the same way. Globs per name component as Graphite has them (`*`, `?`,
//! `[a-z]`, `[!a]`, `{a,b}`); a literal component names its directory directly.
//!
//! Reading (graphite-web 1.1's `RRDReader`): librrd's fetch of `AVERAGE` over the window, at
//! the finest archive that covers it; the last row is dropped (graphite-web does, "RRD returns
//! crazy last values sometimes"); each value is labelled with the start of its row. Files are
//! opened through [`CheckedRrd`] (no symlink followed, regular files only); directories through
//! [`Dir`], never leaving `output/`.

use super::series::Series;
use crate::output::history::{CheckedRrd, HistoryError, Layout};
use crate::shared::measurement::OrderId;
use crate::spool::beneath::{Dir, Kind};
use crate::spool::BaseDir;
use std::collections::HashMap;
use std::io;
use std::time::{Duration, UNIX_EPOCH};

pub const ROOT: &str = "ping";
/// Most nodes one pattern may match (a find or a render of `ping.*.*.*.*`).
pub const MAX_NODES: usize = 100_000;
/// Most values one render may read (all series together).
pub const MAX_VALUES: usize = 20_000_000;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The client's pattern or window (answered 400).
    #[error("{0}")]
    Query(String),
    /// output/ or a file in it could not be read (answered 503 or 500).
    #[error("{0}")]
    Unavailable(String),
}

/// One matched name.
#[derive(Clone, Debug, PartialEq)]
pub struct Node {
    pub path: String,
    /// A leaf is a series; the rest are branches.
    pub leaf: Option<Leaf>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Leaf {
    /// Relative to `output/`.
    pub id: OrderId,
    pub source: String,
}

/// Every node matching `pattern`.
pub fn find(base: &BaseDir, pattern: &str) -> Result<Vec<Node>, StoreError> {
    let parts: Vec<&str> = pattern.split('.').collect();
    if pattern.contains(['/', '\0']) || pattern.len() > super::target::MAX_TARGET_BYTES {
        return Err(StoreError::Query(format!(
            "{:?}: not a series name (no / or NUL; at most {} bytes)",
            printable(pattern),
            super::target::MAX_TARGET_BYTES
        )));
    }
    if parts.iter().any(|p| p.is_empty()) {
        return Err(StoreError::Query(format!(
            "{:?}: an empty name component",
            printable(pattern)
        )));
    }
    let matchers: Vec<Glob> = parts.iter().map(|p| Glob::new(p)).collect::<Result<_, _>>()?;
    let mut out = Vec::new();
    if !matchers[0].matches(ROOT) {
        return Ok(out);
    }
    if matchers.len() == 1 {
        out.push(Node {
            path: ROOT.into(),
            leaf: None,
        });
        return Ok(out);
    }
    let output = match base.dir("output") {
        Ok(dir) => dir,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(StoreError::Unavailable(format!("cannot open output/: {e}"))),
    };
    let mut walk = Walk {
        output: &output,
        out: &mut out,
    };
    walk.level(&output, ROOT.to_string(), Vec::new(), &matchers[1..])?;
    out.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(out)
}

struct Walk<'a> {
    output: &'a Dir,
    out: &'a mut Vec<Node>,
}

impl Walk<'_> {
    fn level(&mut self, dir: &Dir, path: String, id: Vec<String>, rest: &[Glob]) -> Result<(), StoreError> {
        let (glob, rest) = rest.split_first().expect("a component is left");
        for (name, child) in self.children(dir, glob)? {
            let shown = format!("{path}.{}", graphite_name(&name));
            let mut child_id = id.clone();
            child_id.push(name);
            let is_order = matches!(child.kind(FILE), Ok(Some(Kind::File)));
            if rest.is_empty() {
                self.push(Node {
                    path: shown,
                    leaf: None,
                })?;
            } else if is_order {
                if rest.len() == 1 {
                    self.leaves(&child_id.join("/"), &shown, &rest[0])?;
                }
            } else {
                self.level(&child, shown, child_id, rest)?;
            }
        }
        Ok(())
    }

    /// The subdirectories of `dir` whose Graphite name matches `glob` (hidden ones and
    /// anything that is not a directory left out; symlinks are never followed).
    fn children(&self, dir: &Dir, glob: &Glob) -> Result<Vec<(String, Dir)>, StoreError> {
        let unavailable = |e: io::Error| StoreError::Unavailable(e.to_string());
        if let Some(literal) = glob.literal() {
            return match dir.open_dir(literal) {
                Ok(child) => Ok(vec![(literal.to_string(), child)]),
                Err(e) if matches!(e.kind(), io::ErrorKind::NotFound | io::ErrorKind::NotADirectory) => {
                    self.scan(dir, glob, unavailable)
                }
                // A symlink: never followed, so no match.
                Err(e) if e.kind() == io::ErrorKind::InvalidData => Ok(Vec::new()),
                Err(e) => Err(unavailable(e)),
            };
        }
        self.scan(dir, glob, unavailable)
    }

    fn scan(
        &self,
        dir: &Dir,
        glob: &Glob,
        unavailable: impl Fn(io::Error) -> StoreError,
    ) -> Result<Vec<(String, Dir)>, StoreError> {
        let mut found = Vec::new();
        for (name, kind) in dir.entries().map_err(&unavailable)? {
            let Some(name) = name.to_str() else { continue };
            if kind != Kind::Dir || name.starts_with('.') || !glob.matches(&graphite_name(name)) {
                continue;
            }
            match dir.open_dir(name) {
                Ok(child) => found.push((name.to_string(), child)),
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(unavailable(e)),
            }
        }
        found.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(found)
    }

    fn leaves(&mut self, id: &str, path: &str, glob: &Glob) -> Result<(), StoreError> {
        let Ok(id) = OrderId::new(id) else { return Ok(()) };
        let sources = match sources(self.output, &id) {
            Ok(sources) => sources,
            // A file that is not an RRD here (damaged, foreign) has no leaves: listed, not fatal.
            Err(e) => {
                tracing::debug!(order = %id, "no graphite leaves: {e}");
                return Ok(());
            }
        };
        for source in sources.into_iter().filter(|s| glob.matches(s)) {
            self.push(Node {
                path: format!("{path}.{source}"),
                leaf: Some(Leaf { id: id.clone(), source }),
            })?;
        }
        Ok(())
    }

    fn push(&mut self, node: Node) -> Result<(), StoreError> {
        if self.out.len() >= MAX_NODES {
            return Err(StoreError::Query(format!(
                "the pattern matches more than {MAX_NODES} names: narrow it"
            )));
        }
        self.out.push(node);
        Ok(())
    }
}

const FILE: &str = "main.rrd";

/// A directory name as a Graphite name component.
fn graphite_name(name: &str) -> String {
    name.replace('.', "_")
}

fn printable(text: &str) -> String {
    crate::orders::book::printable(text)
}

/// The leaves of one file: its data sources, then `min` and `max` when it has `ping<N>` ones.
fn sources(output: &Dir, id: &OrderId) -> Result<Vec<String>, HistoryError> {
    let file = CheckedRrd::open(output, id)?;
    let info = rrd::ops::info::info(file.librrd_path()).map_err(|e| file.librrd_error(e))?;
    let mut sources = Layout::from_info(info).sources;
    if sources.iter().any(|s| ping_index(s).is_some()) {
        sources.extend(["min".to_string(), "max".to_string()]);
    }
    Ok(sources)
}

fn ping_index(source: &str) -> Option<u32> {
    source.strip_prefix("ping")?.parse().ok()
}

/// Fetched files of one request, each read once however many of its leaves are asked for.
#[derive(Default)]
pub struct Reader {
    files: HashMap<OrderId, Fetched>,
    values: usize,
}

struct Fetched {
    start: i64,
    end: i64,
    step: i64,
    sources: Vec<String>,
    /// Rows (without the last, as graphite-web), values NaN for unknown.
    rows: Vec<Vec<f64>>,
}

impl Reader {
    /// The series of `leaf` over [`from`, `until`], named `path`, for the expression `pattern`.
    pub fn series(
        &mut self,
        base: &BaseDir,
        leaf: &Leaf,
        path: &str,
        pattern: &str,
        from: i64,
        until: i64,
    ) -> Result<Series, StoreError> {
        if !self.files.contains_key(&leaf.id) {
            let fetched = fetch(base, &leaf.id, from, until)?;
            self.values = self
                .values
                .saturating_add(fetched.rows.len() * fetched.sources.len().max(1));
            if self.values > MAX_VALUES {
                return Err(StoreError::Query(format!(
                    "the targets need more than {MAX_VALUES} values: a shorter window or fewer series"
                )));
            }
            self.files.insert(leaf.id.clone(), fetched);
        }
        let fetched = &self.files[&leaf.id];
        let known = |v: f64| v.is_finite().then_some(v);
        let values: Vec<Option<f64>> = match fetched.sources.iter().position(|s| *s == leaf.source) {
            Some(i) => fetched.rows.iter().map(|row| known(row[i])).collect(),
            None => {
                let pings: Vec<usize> = (0..fetched.sources.len())
                    .filter(|&i| ping_index(&fetched.sources[i]).is_some())
                    .collect();
                let pick = |row: &Vec<f64>, max: bool| {
                    let answered = pings.iter().map(|&i| row[i]).filter(|v| v.is_finite());
                    if max {
                        answered.reduce(f64::max)
                    } else {
                        answered.reduce(f64::min)
                    }
                };
                match leaf.source.as_str() {
                    "min" if !pings.is_empty() => fetched.rows.iter().map(|r| pick(r, false)).collect(),
                    "max" if !pings.is_empty() => fetched.rows.iter().map(|r| pick(r, true)).collect(),
                    _ => return Err(StoreError::Unavailable(format!("{path}: no such data source"))),
                }
            }
        };
        Ok(Series::new(
            path,
            pattern,
            fetched.start,
            fetched.end,
            fetched.step,
            values,
        ))
    }
}

fn fetch(base: &BaseDir, id: &OrderId, from: i64, until: i64) -> Result<Fetched, StoreError> {
    let output = base
        .dir("output")
        .map_err(|e| StoreError::Unavailable(format!("cannot open output/: {e}")))?;
    let file = CheckedRrd::open(&output, id).map_err(|e| StoreError::Unavailable(e.to_string()))?;
    let at = |t: i64| UNIX_EPOCH + Duration::from_secs(t.max(0) as u64);
    let data = rrd::ops::fetch::fetch(
        file.librrd_path(),
        rrd::ConsolidationFn::Avg,
        at(from),
        at(until),
        Duration::from_secs(1),
    )
    .map_err(|e| StoreError::Unavailable(file.librrd_error(e).to_string()))?;
    let step = data.step().as_secs().max(1) as i64;
    let unix = crate::shared::clock::unix_secs;
    let mut rows: Vec<Vec<f64>> = data.rows().iter().map(|row| row.as_slice().to_vec()).collect();
    rows.pop();
    Ok(Fetched {
        // The crate gives the first row's time (its end); graphite-web labels rows by their start.
        start: unix(data.start()) - step,
        end: unix(data.end()),
        step,
        sources: data.ds_names().to_vec(),
        rows,
    })
}

/// One name component's pattern: `{a,b}` alternatives, each with `*`, `?` and `[...]`.
pub struct Glob {
    alternatives: Vec<Vec<Token>>,
    literal: Option<String>,
}

#[derive(Clone, Debug)]
enum Token {
    Char(char),
    Any,
    AnyOne,
    Class { negated: bool, ranges: Vec<(char, char)> },
}

/// Most alternatives one component may expand to (`{a,b}{c,d}` is 4).
const MAX_ALTERNATIVES: usize = 1024;

impl Glob {
    pub fn new(pattern: &str) -> Result<Glob, StoreError> {
        let bad = |why: &str| StoreError::Query(format!("{:?}: {why}", printable(pattern)));
        let literal = (!pattern.contains(['*', '?', '[', '{', ']', '}'])).then(|| pattern.to_string());
        let mut alternatives = vec![String::new()];
        let mut chars = pattern.chars().peekable();
        while let Some(c) = chars.next() {
            if c == '{' {
                let mut inner = String::new();
                loop {
                    match chars.next() {
                        Some('}') => break,
                        Some('{') => return Err(bad("nested { } are not supported")),
                        Some(c) => inner.push(c),
                        None => return Err(bad("a { is not closed")),
                    }
                }
                let options: Vec<&str> = inner.split(',').collect();
                if alternatives.len() * options.len() > MAX_ALTERNATIVES {
                    return Err(bad(&format!("more than {MAX_ALTERNATIVES} alternatives")));
                }
                alternatives = alternatives
                    .iter()
                    .flat_map(|a| options.iter().map(move |o| format!("{a}{o}")))
                    .collect();
            } else if c == '}' {
                return Err(bad("a } without {"));
            } else {
                for a in &mut alternatives {
                    a.push(c);
                }
            }
        }
        let alternatives = alternatives
            .iter()
            .map(|a| tokens(a).map_err(|why| bad(&why)))
            .collect::<Result<_, _>>()?;
        Ok(Glob { alternatives, literal })
    }

    /// The component itself when it has no glob characters.
    pub fn literal(&self) -> Option<&str> {
        self.literal.as_deref()
    }

    pub fn matches(&self, name: &str) -> bool {
        let name: Vec<char> = name.chars().collect();
        self.alternatives.iter().any(|tokens| match_tokens(tokens, &name))
    }
}

fn tokens(text: &str) -> Result<Vec<Token>, String> {
    let mut out = Vec::new();
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        out.push(match c {
            '*' => Token::Any,
            '?' => Token::AnyOne,
            '[' => {
                let mut negated = false;
                let mut ranges = Vec::new();
                let mut items: Vec<char> = Vec::new();
                loop {
                    match chars.next() {
                        Some(']') if !items.is_empty() || negated => break,
                        Some('!' | '^') if items.is_empty() && !negated => negated = true,
                        Some(c) => items.push(c),
                        None => return Err("a [ is not closed".into()),
                    }
                }
                let mut i = 0;
                while i < items.len() {
                    if i + 2 < items.len() && items[i + 1] == '-' {
                        ranges.push((items[i], items[i + 2]));
                        i += 3;
                    } else {
                        ranges.push((items[i], items[i]));
                        i += 1;
                    }
                }
                Token::Class { negated, ranges }
            }
            ']' => return Err("a ] without [".into()),
            c => Token::Char(c),
        });
    }
    Ok(out)
}

/// Glob matching without backtracking blow-up: the set of reachable token positions advances
/// one character at a time (O(tokens × characters)).
fn match_tokens(tokens: &[Token], name: &[char]) -> bool {
    let mut states = vec![false; tokens.len() + 1];
    states[0] = true;
    let close = |states: &mut Vec<bool>| {
        for i in 0..tokens.len() {
            if states[i] && matches!(tokens[i], Token::Any) {
                states[i + 1] = true;
            }
        }
    };
    close(&mut states);
    for &c in name {
        let mut next = vec![false; tokens.len() + 1];
        for (i, token) in tokens.iter().enumerate() {
            if !states[i] {
                continue;
            }
            match token {
                Token::Any => next[i] = true,
                Token::AnyOne => next[i + 1] = true,
                Token::Char(t) => next[i + 1] |= *t == c,
                Token::Class { negated, ranges } => {
                    next[i + 1] |= ranges.iter().any(|(a, b)| (*a..=*b).contains(&c)) != *negated;
                }
            }
        }
        close(&mut next);
        states = next;
        if !states.iter().any(|s| *s) {
            return false;
        }
    }
    states[tokens.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs_match_as_graphite_s() {
        let yes = |p: &str, n: &str| assert!(Glob::new(p).unwrap().matches(n), "{p} should match {n}");
        let no = |p: &str, n: &str| assert!(!Glob::new(p).unwrap().matches(n), "{p} should not match {n}");
        yes("*", "web-1");
        yes("web-*", "web-1");
        no("web-*", "db-1");
        yes("w?b", "web");
        yes("{web,db}-1", "db-1");
        no("{web,db}-1", "x-1");
        yes("ping[0-9]", "ping3");
        no("ping[!3]", "ping3");
        yes("*-*-*", "a-b-c");
        no(&"*a".repeat(50), &"a".repeat(40));
        assert_eq!(Glob::new("median").unwrap().literal(), Some("median"));
        assert!(Glob::new("m*").unwrap().literal().is_none());
    }

    #[test]
    fn bad_globs_are_refused() {
        for (p, why) in [
            ("{a", "not closed"),
            ("a}", "without {"),
            ("[ab", "not closed"),
            ("{a,{b}}", "nested"),
        ] {
            let e = Glob::new(p).err().unwrap().to_string();
            assert!(e.contains(why), "{p}: {e}");
        }
        let many = "{a,b,c,d}".repeat(6);
        assert!(Glob::new(&many).err().unwrap().to_string().contains("alternatives"));
    }

    #[test]
    fn names_are_found_per_level_and_dots_in_names_become_underscores() {
        let (_tmp, base) = crate::spool::layout::temp_base();
        for id in ["dc1/web-1", "dc1/db.example", "dc2/x"] {
            let dir = base.output().join(id);
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(dir.join(FILE), b"not an rrd").unwrap();
        }
        std::os::unix::fs::symlink(base.output().join("dc2"), base.output().join("dc3")).unwrap();
        let paths = |p: &str| find(&base, p).unwrap().into_iter().map(|n| n.path).collect::<Vec<_>>();
        assert_eq!(paths("ping"), ["ping"]);
        assert_eq!(paths("ping.*"), ["ping.dc1", "ping.dc2"], "the symlink is not followed");
        assert_eq!(paths("ping.dc1.*"), ["ping.dc1.db_example", "ping.dc1.web-1"]);
        assert_eq!(paths("ping.dc1.db_example"), ["ping.dc1.db_example"]);
        assert_eq!(paths("ping.dc3.*"), Vec::<String>::new());
        assert!(
            paths("ping.dc1.web-1.*").is_empty(),
            "a file that is not an RRD has no leaves"
        );
        assert!(paths("carbon.*").is_empty());
        assert!(find(&base, "ping..x").is_err());
        assert!(find(&base, "ping.dc1/web-1").is_err());
        assert!(find(&base, "ping.dc1\0").is_err());
    }
}
