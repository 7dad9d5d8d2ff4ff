//! The Graphite render API over the RRD files, for Grafana's Graphite data source without a
//! plugin: `/render` (`format=json`), `/metrics/find`, `/metrics/expand`, `/functions`.
//! Answers are those graphite-web 1.1.8 gives on the same files (its RRD reader, its JSON):
//! `tests/api_graphite.rs` runs both on the same RRDs and compares the values.
//!
//! | endpoint | methods | parameters |
//! |---|---|---|
//! | `/render` | GET, POST (form) | `target` (repeated), `from`, `until`, `format=json`, `maxDataPoints`, `noNullPoints` |
//! | `/metrics/find` | GET, POST (form) | `query`, `format=treejson`, `from`, `until` (accepted; the tree does not depend on time) |
//! | `/metrics/expand` | GET | `query` (repeated), `leavesOnly=0\|1` |
//! | `/functions` | GET | none |
//!
//! Names and reading: [`store`]; expressions: [`target`]; functions: [`series`]. Times as
//! Graphite reads them ([`graphite_time`]). Owns on disk: nothing; reads `output/` through
//! [`store`]. Called by [`super::Api`] for these paths.

pub mod series;
pub mod store;
pub mod target;

use super::query::{percent_decode, BadRequest, MAX_QUERY_BYTES};
use super::Context;
use crate::http::answer;
use bytes::Bytes;
use http_body_util::Full;
use hyper::{Method, Response};
use serde_json::{json, Value};

/// Most targets in one render.
pub const MAX_TARGETS: usize = 100;

/// The paths served here.
pub fn handles(path: &str) -> bool {
    matches!(path, "/render" | "/metrics/find" | "/metrics/expand" | "/functions")
}

/// Whether `path` takes a form in a POST (Grafana posts renders).
pub fn takes_post(path: &str) -> bool {
    matches!(path, "/render" | "/metrics/find")
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Endpoint {
    Render,
    Find,
    Expand,
    Functions,
}

/// A request to one of these endpoints, its parameters read when answered (a POST's form is
/// read first).
#[derive(Debug)]
pub struct Route {
    endpoint: Endpoint,
    query: Vec<(String, String)>,
    post: bool,
}

/// `name=value` pairs of a query string or form, decoded; `known` names, `repeated` of them
/// may come more than once.
fn pairs(text: &str, known: &[&str], repeated: &[&str], into: &mut Vec<(String, String)>) -> Result<(), BadRequest> {
    if text.len() > MAX_QUERY_BYTES {
        return Err(BadRequest(format!(
            "the parameters are longer than {MAX_QUERY_BYTES} bytes"
        )));
    }
    for pair in text.split('&').filter(|p| !p.is_empty()) {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        let name = percent_decode(name, true)?;
        let value = percent_decode(value, true)?;
        if !known.contains(&name.as_str()) {
            return Err(BadRequest(format!(
                "unknown parameter {:?} (this endpoint takes: {})",
                crate::orders::book::printable(&name),
                known.join(", ")
            )));
        }
        if !repeated.contains(&name.as_str()) && into.iter().any(|(n, _)| *n == name) {
            return Err(BadRequest(format!("parameter {name:?} is given twice")));
        }
        into.push((name, value));
    }
    Ok(())
}

impl Endpoint {
    fn parameters(self) -> (&'static [&'static str], &'static [&'static str]) {
        match self {
            Endpoint::Render => (
                &["target", "from", "until", "format", "maxDataPoints", "noNullPoints"],
                &["target"],
            ),
            Endpoint::Find => (&["query", "format", "from", "until"], &[]),
            Endpoint::Expand => (&["query", "leavesOnly"], &["query"]),
            Endpoint::Functions => (&[], &[]),
        }
    }
}

impl Route {
    pub fn parse(method: &Method, path: &str, query: Option<&str>) -> Result<Route, (u16, String)> {
        let endpoint = match path {
            "/render" => Endpoint::Render,
            "/metrics/find" => Endpoint::Find,
            "/metrics/expand" => Endpoint::Expand,
            _ => Endpoint::Functions,
        };
        let post = match *method {
            Method::GET | Method::HEAD => false,
            Method::POST if takes_post(path) => true,
            _ => {
                let allowed = if takes_post(path) {
                    "GET, HEAD, POST"
                } else {
                    "GET, HEAD"
                };
                return Err((405, format!("{path} answers {allowed}")));
            }
        };
        let (known, repeated) = endpoint.parameters();
        let mut pairs_found = Vec::new();
        pairs(query.unwrap_or(""), known, repeated, &mut pairs_found).map_err(|e| (400, e.0))?;
        Ok(Route {
            endpoint,
            query: pairs_found,
            post,
        })
    }

    pub fn takes_body(&self) -> bool {
        self.post
    }

    /// The answer (blocking: reads files).
    pub fn answer(
        self,
        context: &Context,
        body: Option<Bytes>,
        now: i64,
    ) -> Result<Response<Full<Bytes>>, (u16, String)> {
        let mut params = self.query;
        if let Some(body) = body {
            let text = std::str::from_utf8(&body).map_err(|_| (400, "the form is not UTF-8".to_string()))?;
            let (known, repeated) = self.endpoint.parameters();
            pairs(text.trim_end(), known, repeated, &mut params).map_err(|e| (400, e.0))?;
        }
        let get = |name: &str| params.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str());
        let all = |name: &str| {
            params
                .iter()
                .filter(|(n, _)| n == name)
                .map(|(_, v)| v.as_str())
                .collect::<Vec<_>>()
        };
        let json_answer = |value: &Value| answer(200, value.to_string());
        match self.endpoint {
            Endpoint::Functions => Ok(json_answer(&functions())),
            Endpoint::Find => {
                if let Some(format) = get("format").filter(|f| *f != "treejson") {
                    return Err((400, format!("format={format:?}: only treejson is served")));
                }
                let query = get("query").ok_or((400, "query is missing".to_string()))?;
                for name in ["from", "until"] {
                    if let Some(t) = get(name) {
                        graphite_time(t, now).map_err(|e| (400, format!("{name}: {e}")))?;
                    }
                }
                let nodes = store::find(&context.base, query).map_err(store_refusal)?;
                Ok(json_answer(&tree_json(query, &nodes)))
            }
            Endpoint::Expand => {
                let queries = all("query");
                if queries.is_empty() {
                    return Err((400, "query is missing".to_string()));
                }
                let leaves_only = match get("leavesOnly") {
                    None | Some("0") => false,
                    Some("1") => true,
                    Some(_) => return Err((400, "leavesOnly: 0 or 1".to_string())),
                };
                let mut results = std::collections::BTreeSet::new();
                for query in queries {
                    for node in store::find(&context.base, query).map_err(store_refusal)? {
                        if !leaves_only || node.leaf.is_some() {
                            results.insert(node.path);
                        }
                    }
                }
                Ok(json_answer(&json!({ "results": results })))
            }
            Endpoint::Render => {
                if let Some(format) = get("format").filter(|f| *f != "json") {
                    return Err((400, format!("format={format:?}: only json is served")));
                }
                let targets = all("target");
                if targets.len() > MAX_TARGETS {
                    return Err((400, format!("more than {MAX_TARGETS} targets")));
                }
                let time = |name: &str, default: &str| {
                    graphite_time(get(name).unwrap_or(default), now).map_err(|e| (400, format!("{name}: {e}")))
                };
                let (a, b) = (time("from", "-1d")?, time("until", "now")?);
                let (from, until) = (a.min(b), a.max(b));
                if from == until {
                    return Err((400, "from and until are the same time: an empty window".into()));
                }
                let max_points = match get("maxDataPoints") {
                    Some(text) if text.bytes().all(|b| b.is_ascii_digit()) && !text.is_empty() => Some(
                        text.parse::<u64>()
                            .map_err(|_| (400, "maxDataPoints is too large".to_string()))?,
                    ),
                    Some(_) => return Err((400, "maxDataPoints: a whole number".to_string())),
                    None => None,
                };
                let no_null_points = get("noNullPoints").is_some();
                let mut request = series::Request {
                    base: &context.base,
                    from,
                    until,
                    reader: store::Reader::default(),
                };
                let mut list = Vec::new();
                for text in targets.iter().filter(|t| !t.trim().is_empty()) {
                    let expr = target::parse(text).map_err(|e| (400, e.to_string()))?;
                    list.extend(series::evaluate(&mut request, &expr).map_err(eval_refusal)?);
                }
                if let Some(max) = max_points.filter(|m| *m > 0) {
                    series::limit_points(&mut list, max);
                }
                Ok(answer(200, render_json(&list, no_null_points)))
            }
        }
    }
}

/// graphite-web's `treejson`: each name once, sorted by name, branches before leaves, its
/// `id` the query's own prefix (globs and all) and the name.
fn tree_json(query: &str, nodes: &[store::Node]) -> Value {
    let prefix = query.rsplit_once('.').map_or(String::new(), |(p, _)| format!("{p}."));
    let mut named: Vec<(&str, bool)> = nodes
        .iter()
        .map(|n| (n.path.rsplit('.').next().unwrap_or(&n.path), n.leaf.is_some()))
        .collect();
    named.sort_by(|a, b| a.0.cmp(b.0));
    let mut seen = std::collections::HashSet::new();
    named.retain(|(name, _)| seen.insert(*name));
    let (leaves, branches): (Vec<_>, Vec<_>) = named.into_iter().partition(|(_, leaf)| *leaf);
    let listed = branches
        .into_iter()
        .chain(leaves)
        .map(|(name, leaf)| {
            let leaf = u8::from(leaf);
            json!({
                "text": name,
                "id": format!("{prefix}{name}"),
                "allowChildren": 1 - leaf,
                "expandable": 1 - leaf,
                "leaf": leaf,
            })
        })
        .collect();
    Value::Array(listed)
}

/// graphite-web's JSON: `[{"target", "tags", "datapoints": [[value|null, time], ...]}]`.
fn render_json(list: &[series::Series], no_null_points: bool) -> String {
    let rendered: Vec<Value> = list
        .iter()
        .filter_map(|s| {
            let points: Vec<Value> = s
                .datapoints()
                .into_iter()
                .filter(|(v, _)| !no_null_points || v.is_some())
                .map(|(v, t)| json!([v.filter(|x| x.is_finite()), t]))
                .collect();
            if no_null_points && points.is_empty() {
                return None;
            }
            Some(json!({ "target": s.name, "tags": s.tags, "datapoints": points }))
        })
        .collect();
    Value::Array(rendered).to_string()
}

fn functions() -> Value {
    let mut all = serde_json::Map::new();
    for (name, group, params, description) in series::FUNCTIONS {
        let params: Vec<Value> = params
            .iter()
            .map(|(name, kind, required, multiple)| {
                let mut p = json!({ "name": name, "type": kind, "required": required });
                if *multiple {
                    p["multiple"] = Value::Bool(true);
                }
                p
            })
            .collect();
        let signature: Vec<&str> = series::FUNCTIONS
            .iter()
            .find(|f| f.0 == name)
            .map(|f| f.2.iter().map(|p| p.0).collect())
            .unwrap_or_default();
        all.insert(
            name.to_string(),
            json!({
                "name": name,
                "function": format!("{name}({})", signature.join(", ")),
                "description": description,
                "module": "spoolmon",
                "group": group,
                "params": params,
            }),
        );
    }
    Value::Object(all)
}

fn store_refusal(e: store::StoreError) -> (u16, String) {
    match e {
        store::StoreError::Query(reason) => (400, reason),
        store::StoreError::Unavailable(reason) => (503, reason),
    }
}

fn eval_refusal(e: series::EvalError) -> (u16, String) {
    match e {
        series::EvalError::Bad(reason) => (400, reason),
        series::EvalError::Store(e) => store_refusal(e),
    }
}

/// A time as Graphite's `from`/`until` take it: `now`, unix seconds, or an offset from now
/// (`-1d`, `-6h`, `now-30min`, `+1h`), units as Graphite spells them: `s`, `min`, `h`, `d`,
/// `w`, `mon` (30 days), `y` (365 days), each also with more letters (`minutes`, `days`).
pub fn graphite_time(text: &str, now: i64) -> Result<i64, String> {
    let bad = || {
        format!(
            "{:?} is not a time: now, unix seconds, or an offset like -1d, -6h, now-30min",
            crate::orders::book::printable(text)
        )
    };
    let text = text.trim();
    if text == "now" {
        return Ok(now);
    }
    if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) {
        return text
            .parse::<i64>()
            .ok()
            .filter(|t| *t <= i64::from(u32::MAX) * 4)
            .ok_or_else(bad);
    }
    let offset = text.strip_prefix("now").unwrap_or(text);
    let (sign, rest) = match offset.as_bytes().first() {
        Some(b'-') => (-1, &offset[1..]),
        Some(b'+') => (1, &offset[1..]),
        _ => return Err(bad()),
    };
    let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
    let amount: i64 = rest[..digits].parse().map_err(|_| bad())?;
    let unit = &rest[digits..];
    let seconds = if unit.starts_with('s') {
        1
    } else if unit.starts_with("min") {
        60
    } else if unit.starts_with('h') {
        3600
    } else if unit.starts_with('d') {
        86_400
    } else if unit.starts_with('w') {
        7 * 86_400
    } else if unit.starts_with("mon") {
        30 * 86_400
    } else if unit.starts_with('y') {
        365 * 86_400
    } else {
        return Err(bad());
    };
    amount
        .checked_mul(seconds)
        .and_then(|s| now.checked_add(sign * s))
        .filter(|t| *t >= 0)
        .ok_or_else(bad)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_read_as_graphite_reads_them() {
        let now = 1_800_000_000;
        assert_eq!(graphite_time("now", now), Ok(now));
        assert_eq!(graphite_time("-1d", now), Ok(now - 86_400));
        assert_eq!(graphite_time("-6hours", now), Ok(now - 6 * 3600));
        assert_eq!(graphite_time("now-30min", now), Ok(now - 1800));
        assert_eq!(graphite_time("-2mon", now), Ok(now - 60 * 86_400));
        assert_eq!(graphite_time("1796600000", now), Ok(1_796_600_000));
        for bad in ["-5m", "yesterday", "-", "-1x", "", "-99999999999999999y"] {
            assert!(graphite_time(bad, now).is_err(), "{bad}");
        }
    }

    #[test]
    fn parameters_are_known_and_only_targets_repeat() {
        let parse = |q: &str| Route::parse(&Method::GET, "/render", Some(q));
        assert_eq!(parse("target=a&target=b&from=-1h").unwrap().query.len(), 3);
        assert!(parse("from=-1h&from=-2h").unwrap_err().1.contains("twice"));
        assert!(parse("targett=a").unwrap_err().1.contains("unknown parameter"));
        assert_eq!(Route::parse(&Method::PUT, "/render", None).unwrap_err().0, 405);
        assert_eq!(Route::parse(&Method::POST, "/functions", None).unwrap_err().0, 405);
        assert!(Route::parse(&Method::POST, "/render", None).unwrap().takes_body());
    }

    #[test]
    fn functions_list_every_function_evaluated() {
        let listed = functions();
        for (name, ..) in series::FUNCTIONS {
            assert!(
                series::Function::named(name).is_some(),
                "{name} is listed but not evaluated"
            );
            assert_eq!(listed[name]["name"], name);
        }
        assert_eq!(listed["constantLine"]["params"][0]["type"], "float");
    }
}
