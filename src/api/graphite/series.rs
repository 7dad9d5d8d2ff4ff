//! Graphite's series and the functions spoolmon evaluates, with graphite-web 1.1's semantics
//! (checked against the real graphite-web in `tests/api_graphite.rs`): names and tags as it
//! gives them, `normalize` to the least common step, average consolidation of null-skipping
//! buckets, aggregates over the values present in each row, `maxDataPoints` consolidation with
//! its start nudge.

use super::store::{self, Reader, StoreError};
use super::target::{self, python_float, Expr};
use crate::spool::BaseDir;
use std::collections::BTreeMap;

/// One series (graphite-web's `TimeSeries`).
#[derive(Clone, Debug, PartialEq)]
pub struct Series {
    pub name: String,
    /// The path expression it was fetched by (aggregates name themselves by it).
    pub path_expression: String,
    pub tags: BTreeMap<String, String>,
    pub start: i64,
    pub end: i64,
    pub step: i64,
    pub values: Vec<Option<f64>>,
    /// Values averaged into each point when iterated (1: as they are).
    pub values_per_point: usize,
}

impl Series {
    pub fn new(name: &str, pattern: &str, start: i64, end: i64, step: i64, values: Vec<Option<f64>>) -> Series {
        Series {
            name: name.to_string(),
            path_expression: pattern.to_string(),
            tags: BTreeMap::from([("name".to_string(), name.to_string())]),
            start,
            end,
            step,
            values,
            values_per_point: 1,
        }
    }

    /// The values as iterated: each run of `values_per_point` averaged over its known values
    /// (null when none is known), the last run possibly shorter.
    pub fn points(&self) -> Vec<Option<f64>> {
        if self.values_per_point <= 1 {
            return self.values.clone();
        }
        self.values
            .chunks(self.values_per_point)
            .map(|chunk| {
                let known: Vec<f64> = chunk.iter().flatten().copied().collect();
                (!known.is_empty()).then(|| known.iter().sum::<f64>() / known.len() as f64)
            })
            .collect()
    }

    /// `(value, timestamp)` pairs: points labelled from `start`, every `step × values_per_point`
    /// seconds, as many as both allow.
    pub fn datapoints(&self) -> Vec<(Option<f64>, i64)> {
        let every = (self.step * self.values_per_point as i64).max(1);
        let times = (self.start..=self.end).step_by(every as usize);
        self.points().into_iter().zip(times).collect()
    }
}

/// What a target's evaluation needs.
pub struct Request<'a> {
    pub base: &'a BaseDir,
    pub from: i64,
    pub until: i64,
    pub reader: Reader,
}

/// Why a target cannot be answered.
#[derive(Debug, thiserror::Error)]
pub enum EvalError {
    #[error("{0}")]
    Bad(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

enum Value {
    Series(Vec<Series>),
    Number(f64),
    Str(String),
}

/// Evaluates one target into its series.
pub fn evaluate(request: &mut Request<'_>, expr: &Expr) -> Result<Vec<Series>, EvalError> {
    match eval(request, expr)? {
        Value::Series(list) => Ok(list),
        _ => Err(EvalError::Bad(
            "a target must be a series expression, not a number or a string".into(),
        )),
    }
}

fn eval(request: &mut Request<'_>, expr: &Expr) -> Result<Value, EvalError> {
    Ok(match expr {
        Expr::Path(pattern) => Value::Series(fetch(request, pattern)?),
        Expr::Number(n, _) => Value::Number(*n),
        Expr::Str(s) => Value::Str(s.clone()),
        Expr::Bool(_) => return Err(EvalError::Bad("no function served here takes a boolean".into())),
        Expr::Call(name, args) => {
            let function = Function::named(name).ok_or_else(|| {
                EvalError::Bad(format!(
                    "unknown function {:?} (see /functions)",
                    crate::orders::book::printable(name)
                ))
            })?;
            let args = args.iter().map(|a| eval(request, a)).collect::<Result<Vec<_>, _>>()?;
            Value::Series(function.apply(request, args)?)
        }
    })
}

/// A path expression's series, sorted by name (graphite-web's order).
fn fetch(request: &mut Request<'_>, pattern: &str) -> Result<Vec<Series>, EvalError> {
    let mut out = Vec::new();
    for node in store::find(request.base, pattern)? {
        if let Some(leaf) = &node.leaf {
            out.push(
                request
                    .reader
                    .series(request.base, leaf, &node.path, pattern, request.from, request.until)?,
            );
        }
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

/// The functions evaluated (`/functions` lists them).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Function {
    Alias,
    AliasByNode,
    ConstantLine,
    Aggregate(Aggregate),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Aggregate {
    Sum,
    Average,
    Max,
    Min,
}

impl Aggregate {
    /// Graphite's name of it (`sumSeries(...)`, `aggregatedBy: sum`).
    fn name(self) -> &'static str {
        match self {
            Aggregate::Sum => "sum",
            Aggregate::Average => "average",
            Aggregate::Max => "max",
            Aggregate::Min => "min",
        }
    }

    fn over(self, known: &[f64]) -> f64 {
        match self {
            Aggregate::Sum => known.iter().sum(),
            Aggregate::Average => known.iter().sum::<f64>() / known.len() as f64,
            Aggregate::Max => known.iter().copied().fold(f64::NEG_INFINITY, f64::max),
            Aggregate::Min => known.iter().copied().fold(f64::INFINITY, f64::min),
        }
    }
}

/// Name, group, parameters (name, type, required, multiple) and description, for `/functions`.
pub type Signature = (
    &'static str,
    &'static str,
    &'static [(&'static str, &'static str, bool, bool)],
    &'static str,
);

pub const FUNCTIONS: [Signature; 9] = [
    (
        "alias",
        "Alias",
        &[
            ("seriesList", "seriesList", true, false),
            ("newName", "string", true, false),
        ],
        "Names the series newName.",
    ),
    (
        "aliasByNode",
        "Alias",
        &[
            ("seriesList", "seriesList", true, false),
            ("nodes", "nodeOrTag", true, true),
        ],
        "Names each series by the given nodes of its name (0-based; negative from the end).",
    ),
    (
        "constantLine",
        "Special",
        &[("value", "float", true, false)],
        "A horizontal line at value across the window.",
    ),
    (
        "sumSeries",
        "Combine",
        &[("seriesLists", "seriesList", true, true)],
        "The sum of the series at each point (nulls skipped).",
    ),
    (
        "averageSeries",
        "Combine",
        &[("seriesLists", "seriesList", true, true)],
        "The average of the known values at each point.",
    ),
    (
        "maxSeries",
        "Combine",
        &[("seriesLists", "seriesList", true, true)],
        "The largest known value at each point.",
    ),
    (
        "minSeries",
        "Combine",
        &[("seriesLists", "seriesList", true, true)],
        "The smallest known value at each point.",
    ),
    (
        "sum",
        "Combine",
        &[("seriesLists", "seriesList", true, true)],
        "Short for sumSeries.",
    ),
    (
        "avg",
        "Combine",
        &[("seriesLists", "seriesList", true, true)],
        "Short for averageSeries.",
    ),
];

impl Function {
    pub fn named(name: &str) -> Option<Function> {
        Some(match name {
            "alias" => Function::Alias,
            "aliasByNode" => Function::AliasByNode,
            "constantLine" => Function::ConstantLine,
            "sumSeries" | "sum" => Function::Aggregate(Aggregate::Sum),
            "averageSeries" | "avg" => Function::Aggregate(Aggregate::Average),
            "maxSeries" => Function::Aggregate(Aggregate::Max),
            "minSeries" => Function::Aggregate(Aggregate::Min),
            _ => return None,
        })
    }

    fn apply(self, request: &Request<'_>, args: Vec<Value>) -> Result<Vec<Series>, EvalError> {
        let bad = |why: &str| EvalError::Bad(why.to_string());
        match self {
            Function::Alias => {
                let [Value::Series(mut list), Value::Str(name)] =
                    <[Value; 2]>::try_from(args).map_err(|_| bad("alias(seriesList, \"name\")"))?
                else {
                    return Err(bad("alias(seriesList, \"name\")"));
                };
                for series in &mut list {
                    series.name = name.clone();
                }
                Ok(list)
            }
            Function::AliasByNode => {
                let mut args = args.into_iter();
                let Some(Value::Series(mut list)) = args.next() else {
                    return Err(bad("aliasByNode(seriesList, node, ...)"));
                };
                let nodes: Vec<Node> = args
                    .map(|a| match a {
                        Value::Number(n) if n.fract() == 0.0 => Ok(Node::Index(n as i64)),
                        Value::Str(tag) => Ok(Node::Tag(tag)),
                        _ => Err(bad("aliasByNode: each node is a whole number or a tag name")),
                    })
                    .collect::<Result<_, _>>()?;
                if nodes.is_empty() {
                    return Err(bad("aliasByNode(seriesList, node, ...): name at least one node"));
                }
                for series in &mut list {
                    series.name = alias_by_node(series, &nodes);
                }
                Ok(list)
            }
            Function::ConstantLine => {
                let [Value::Number(value)] = <[Value; 1]>::try_from(args).map_err(|_| bad("constantLine(number)"))?
                else {
                    return Err(bad("constantLine(number)"));
                };
                let (start, end) = (request.from, request.until);
                let step = (end - start) / 2;
                let name = python_float(value);
                let pattern = format!("constantLine({name})");
                Ok(vec![Series::new(
                    &name,
                    &pattern,
                    start,
                    end,
                    step.max(1),
                    vec![Some(value); 3],
                )])
            }
            Function::Aggregate(kind) => {
                let mut all = Vec::new();
                for arg in args {
                    match arg {
                        Value::Series(list) => all.extend(list),
                        _ => return Err(bad(&format!("{}Series takes series only", kind.name()))),
                    }
                }
                Ok(aggregate(all, kind).into_iter().collect())
            }
        }
    }
}

enum Node {
    Index(i64),
    Tag(String),
}

fn alias_by_node(series: &Series, nodes: &[Node]) -> String {
    // A name that is itself a call names its nodes by its first path (graphite-web's aggKey).
    let parsed;
    let path = if series.name.ends_with(')') {
        parsed = target::parse(&series.name).ok();
        parsed.as_ref().and_then(target::first_path).unwrap_or(&series.name)
    } else {
        &series.name
    };
    let parts: Vec<&str> = path.split(';').next().unwrap_or("").split('.').collect();
    nodes
        .iter()
        .map(|node| match node {
            Node::Index(i) => {
                let at = if *i < 0 { parts.len() as i64 + i } else { *i };
                usize::try_from(at)
                    .ok()
                    .and_then(|at| parts.get(at))
                    .map(|s| s.to_string())
                    .unwrap_or_else(|| series.tags.get(&i.to_string()).cloned().unwrap_or_default())
            }
            Node::Tag(tag) => series.tags.get(tag).cloned().unwrap_or_default(),
        })
        .collect::<Vec<_>>()
        .join(".")
}

fn gcd(a: i64, b: i64) -> i64 {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

/// graphite-web's `normalize` then `aggregate`: every series consolidated to the least common
/// step, rows from the earliest start, each the aggregate of its known values.
fn aggregate(mut list: Vec<Series>, kind: Aggregate) -> Option<Series> {
    if list.is_empty() {
        return None;
    }
    let step = list
        .iter()
        .map(|s| s.step)
        .reduce(|a, b| if a == b { a } else { a / gcd(a.max(b), a.min(b)) * b })?;
    for series in &mut list {
        series.values_per_point = (step / series.step).max(1) as usize;
    }
    let start = list.iter().map(|s| s.start).min()?;
    let mut end = list.iter().map(|s| s.end).max()?;
    end -= (end - start).rem_euclid(step);
    let mut pathexprs: Vec<&str> = Vec::new();
    for series in &list {
        if !pathexprs.contains(&series.path_expression.as_str()) {
            pathexprs.push(&series.path_expression);
        }
    }
    let name = format!("{}Series({})", kind.name(), pathexprs.join(","));
    let columns: Vec<Vec<Option<f64>>> = list.iter().map(Series::points).collect();
    let rows = columns.iter().map(Vec::len).max().unwrap_or(0);
    let values = (0..rows)
        .map(|i| {
            let known: Vec<f64> = columns.iter().filter_map(|c| c.get(i).copied().flatten()).collect();
            (!known.is_empty()).then(|| kind.over(&known))
        })
        .collect();
    // Tags: those every series shares, then the name and how it was aggregated.
    let mut tags = list[0].tags.clone();
    for series in &list[1..] {
        tags.retain(|k, v| series.tags.get(k) == Some(v));
    }
    tags.entry("name".into()).or_insert_with(|| name.clone());
    tags.insert("aggregatedBy".into(), kind.name().into());
    Some(Series {
        path_expression: name.clone(),
        name,
        tags,
        start,
        end,
        step,
        values,
        values_per_point: 1,
    })
}

/// graphite-web's `maxDataPoints` for the JSON answer: each series with more points than asked
/// for (over the whole answer's time range) is consolidated, its start nudged so that buckets
/// align from one refresh to the next (and, as graphite-web does, one value fewer dropped than
/// the nudge covers).
pub fn limit_points(list: &mut [Series], max_points: u64) {
    let (Some(start), Some(end)) = (list.iter().map(|s| s.start).min(), list.iter().map(|s| s.end).max()) else {
        return;
    };
    let range = (end - start) as f64;
    for series in list.iter_mut() {
        if max_points == 1 {
            series.values_per_point = series.values.len().max(1);
            continue;
        }
        let points = range / series.step as f64;
        if (max_points as f64) < points {
            let per_point = (points / max_points as f64).ceil() as i64;
            let seconds = per_point * series.step;
            let nudge = seconds + series.start.rem_euclid(series.step) - series.start.rem_euclid(seconds);
            series.start += nudge;
            let lose = (nudge / series.step).max(0) as usize;
            let drop = lose.saturating_sub(1).min(series.values.len());
            series.values.drain(..drop);
            series.values_per_point = per_point as usize;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn series(name: &str, start: i64, step: i64, values: &[Option<f64>]) -> Series {
        Series::new(
            name,
            name,
            start,
            start + step * values.len() as i64,
            step,
            values.to_vec(),
        )
    }

    #[test]
    fn aggregates_skip_nulls_and_name_themselves_by_path_expressions() {
        let a = series("ping.a.median", 100, 20, &[Some(1.0), None, Some(3.0)]);
        let b = series("ping.b.median", 100, 20, &[Some(2.0), None, None]);
        let sum = aggregate(vec![a.clone(), b.clone()], Aggregate::Sum).unwrap();
        assert_eq!(sum.name, "sumSeries(ping.a.median,ping.b.median)");
        assert_eq!(sum.values, [Some(3.0), None, Some(3.0)]);
        assert_eq!(sum.tags["aggregatedBy"], "sum");
        assert_eq!(
            aggregate(vec![a.clone(), b.clone()], Aggregate::Average)
                .unwrap()
                .values[0],
            Some(1.5)
        );
        assert_eq!(
            aggregate(vec![a.clone(), b.clone()], Aggregate::Max).unwrap().values[0],
            Some(2.0)
        );
        assert_eq!(aggregate(vec![a, b], Aggregate::Min).unwrap().values[0], Some(1.0));
        assert!(aggregate(Vec::new(), Aggregate::Sum).is_none());
    }

    #[test]
    fn different_steps_are_consolidated_to_the_least_common_multiple() {
        let fine = series(
            "f",
            0,
            20,
            &[Some(1.0), Some(3.0), Some(5.0), None, Some(2.0), Some(4.0)],
        );
        let coarse = series("c", 0, 30, &[Some(10.0), Some(20.0), Some(30.0), Some(40.0)]);
        let sum = aggregate(vec![fine, coarse], Aggregate::Sum).unwrap();
        assert_eq!(sum.step, 60);
        assert_eq!(
            sum.values,
            [Some(3.0 + 15.0), Some(3.0 + 35.0)],
            "nulls are skipped in each bucket"
        );
    }

    #[test]
    fn max_data_points_nudges_and_averages_as_graphite_web() {
        // graphite-web on 15 values from 1796600100 at step 20 with maxDataPoints=4 gives
        // points at 160, 240, 320, 400 (seen in tests/api_graphite.rs against the real one).
        let values: Vec<Option<f64>> = (0..15).map(|i| Some(i as f64)).collect();
        let mut list = vec![Series::new("x", "x", 1796600100, 1796600420, 20, values)];
        limit_points(&mut list, 4);
        let points = list[0].datapoints();
        let times: Vec<i64> = points.iter().map(|p| p.1).collect();
        assert_eq!(times, [1796600160, 1796600240, 1796600320, 1796600400]);
        assert_eq!(points[0].0, Some((2.0 + 3.0 + 4.0 + 5.0) / 4.0));
        assert_eq!(points[3].0, Some(14.0));
    }

    #[test]
    fn alias_by_node_counts_from_either_end_and_reads_inside_calls() {
        let s = series("ping.dc1.web-1.median", 0, 20, &[None]);
        assert_eq!(alias_by_node(&s, &[Node::Index(2)]), "web-1");
        assert_eq!(alias_by_node(&s, &[Node::Index(1), Node::Index(-1)]), "dc1.median");
        assert_eq!(alias_by_node(&s, &[Node::Index(9)]), "");
        let mut sum = s.clone();
        sum.name = "sumSeries(ping.dc1.*.median)".into();
        assert_eq!(alias_by_node(&sum, &[Node::Index(1)]), "dc1");
    }
}
