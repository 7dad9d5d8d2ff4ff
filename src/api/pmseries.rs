//! `/series/`: a subset of pmproxy's time-series REST API over what the Redis sinks wrote
//! ([`crate::sink::redis`]), so that the series of every node writing one Redis are queried
//! together:
//!
//! | endpoint | parameters | answer |
//! |---|---|---|
//! | `/series/query` | `expr` (`name.glob{label=="v",label!="v"}`), `start`, `finish` | `[{series, name, labels, values: [{timestamp, value}]}]` (without `start`: the series only) |
//! | `/series/values` | `series` (ids, comma-separated), `start`, `finish` | `[{series, timestamp, value}]` |
//! | `/series/labels` | `series` or `names` (label names, comma-separated) or none | labels per series, values per label name, or every label name |
//! | `/series/metrics` | `series` or `match` (a name glob) or none | names per series, or the names |
//!
//! Times are unix seconds, `now`, or `-1h` style offsets; timestamps in the answers are
//! milliseconds, values strings (as pmproxy gives them). Redis is asked with one connection per
//! request, opened with the sink's short connect timeout: Redis down is a 503 at once with the
//! cause, never a hanging request (pmproxy's `/series` hung when Redis was down, its issue
//! #1134). Owns on disk: nothing. Called by [`super::Api`] for `/series/` paths.

use super::query::{parse_time, Params};
use super::Context;
use crate::sink::redis::resp::{command, Connection, Reply};
use crate::sink::redis::RedisOptions;
use bytes::Bytes;
use http_body_util::Full;
use hyper::{Method, Response};
use serde_json::{json, Value};
use std::collections::BTreeMap;

pub const PREFIX: &str = "/series/";
/// Most series one query may match, and most values one series may return.
pub const MAX_SERIES: usize = 10_000;
pub const MAX_VALUES: usize = 100_000;

#[derive(Debug)]
pub struct Route {
    endpoint: &'static str,
    params: Vec<(String, String)>,
}

impl Route {
    pub fn parse(method: &Method, path: &str, query: Option<&str>) -> Result<Route, (u16, String)> {
        if !matches!(*method, Method::GET | Method::HEAD) {
            return Err((405, format!("{path} is read-only (GET, HEAD)")));
        }
        let (endpoint, known): (&'static str, &[&str]) = match path {
            "/series/query" => ("query", &["expr", "start", "finish"]),
            "/series/values" => ("values", &["series", "start", "finish"]),
            "/series/labels" => ("labels", &["series", "names"]),
            "/series/metrics" => ("metrics", &["series", "match"]),
            _ => {
                return Err((
                    404,
                    format!("no such endpoint (below {PREFIX}: query, values, labels, metrics)"),
                ))
            }
        };
        let p = Params::parse(query, known).map_err(|e| (400, e.0))?;
        let params = known
            .iter()
            .filter_map(|k| p.get(k).map(|v| (k.to_string(), v.to_string())))
            .collect();
        Ok(Route { endpoint, params })
    }

    pub fn answer(self, context: &Context, now: i64) -> Result<Response<Full<Bytes>>, (u16, String)> {
        let options = context.redis.as_ref().ok_or((
            503,
            "no Redis to read: the config has no sink of type: redis".to_string(),
        ))?;
        let get = |name: &str| self.params.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str());
        let time = |name: &str| -> Result<Option<i64>, (u16, String)> {
            get(name)
                .map(|t| parse_time(t, now).map_err(|e| (400, format!("{name}: {e}"))))
                .transpose()
        };
        let list = |name: &str| -> Vec<String> {
            get(name)
                .map(|v| v.split(',').filter(|s| !s.is_empty()).map(str::to_owned).collect())
                .unwrap_or_default()
        };
        // Parse everything before connecting: a bad request is a 400 whether Redis is up or not.
        let expr = match self.endpoint {
            "query" => Some(Expression::parse(
                get("expr").ok_or((400, "expr is missing".to_string()))?,
            )?),
            _ => None,
        };
        let (start, finish) = (time("start")?, time("finish")?);
        let ids = list("series");
        if ids.len() > MAX_SERIES
            || ids
                .iter()
                .any(|id| id.len() != 40 || !id.bytes().all(|b| b.is_ascii_hexdigit()))
        {
            return Err((
                400,
                format!("series: up to {MAX_SERIES} ids of 40 hex digits, comma-separated"),
            ));
        }
        let glob = get("match").map(name_glob).transpose()?;
        let mut redis = Redis::open(options)?;
        let answer = match self.endpoint {
            "query" => {
                let expr = expr.expect("parsed above");
                let ids = redis.matching(&expr)?;
                let mut out = Vec::new();
                for id in ids {
                    let (name, labels) = redis.describe(&id)?;
                    let mut entry = json!({ "series": id, "name": name, "labels": labels });
                    if start.is_some() {
                        entry["values"] = Value::Array(
                            redis
                                .values(&id, start, finish)?
                                .into_iter()
                                .map(|(t, v)| json!({ "timestamp": t, "value": v }))
                                .collect(),
                        );
                    }
                    out.push(entry);
                }
                Value::Array(out)
            }
            "values" => {
                let mut out = Vec::new();
                for id in &ids {
                    for (t, v) in redis.values(id, start, finish)? {
                        out.push(json!({ "series": id, "timestamp": t, "value": v }));
                    }
                }
                Value::Array(out)
            }
            "labels" => {
                let names = list("names");
                if !ids.is_empty() {
                    Value::Array(
                        ids.iter()
                            .map(|id| Ok(json!({ "series": id, "labels": redis.describe(id)?.1 })))
                            .collect::<Result<_, (u16, String)>>()?,
                    )
                } else if !names.is_empty() {
                    let mut out = serde_json::Map::new();
                    for name in names {
                        let values = redis.members(&format!("{}label:{name}:values", options.key_prefix))?;
                        out.insert(name, json!(values));
                    }
                    Value::Object(out)
                } else {
                    json!(redis.members(&format!("{}label.names", options.key_prefix))?)
                }
            }
            _ => {
                if !ids.is_empty() {
                    Value::Array(
                        ids.iter()
                            .map(|id| Ok(json!({ "series": id, "name": redis.describe(id)?.0 })))
                            .collect::<Result<_, (u16, String)>>()?,
                    )
                } else {
                    let mut names = redis.members(&format!("{}metric.names", options.key_prefix))?;
                    if let Some(glob) = &glob {
                        names.retain(|n| glob.matches(n));
                    }
                    json!(names)
                }
            }
        };
        Ok(crate::http::answer(200, answer.to_string()))
    }
}

/// `name.glob{label=="v",label!="v"}`: pmseries' query language, its name glob and label
/// equality filters.
struct Expression {
    name: super::graphite::store::Glob,
    literal_name: Option<String>,
    labels: Vec<(String, bool, String)>,
}

impl Expression {
    fn parse(text: &str) -> Result<Expression, (u16, String)> {
        let bad = |why: &str| {
            (
                400,
                format!(
                    "expr {:?}: {why}",
                    crate::orders::book::printable(&text.chars().take(200).collect::<String>())
                ),
            )
        };
        if text.len() > 4096 {
            return Err(bad("longer than 4096 bytes"));
        }
        let (name, rest) = match text.split_once('{') {
            Some((name, rest)) => (
                name.trim(),
                Some(rest.strip_suffix('}').ok_or_else(|| bad("a { is not closed"))?),
            ),
            None => (text.trim(), None),
        };
        if name.is_empty()
            || !name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._-*?[]".contains(&b))
        {
            return Err(bad(
                "a metric name (letters, digits, . _ - and the globs * ?) comes first",
            ));
        }
        let mut labels = Vec::new();
        for filter in rest
            .into_iter()
            .flat_map(|r| r.split(','))
            .map(str::trim)
            .filter(|f| !f.is_empty())
        {
            let (key, equal, value) = if let Some((k, v)) = filter.split_once("!=") {
                (k, false, v)
            } else if let Some((k, v)) = filter.split_once("==") {
                (k, true, v)
            } else {
                return Err(bad("label filters are label==\"value\" or label!=\"value\""));
            };
            let value = value.trim().trim_matches('"');
            let key = key.trim();
            if key.is_empty() || !key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
                return Err(bad("a label name is letters, digits and _"));
            }
            labels.push((key.to_string(), equal, value.to_string()));
        }
        Ok(Expression {
            name: name_glob(name)?,
            literal_name: (!name.contains(['*', '?'])).then(|| name.to_string()),
            labels,
        })
    }
}

/// A metric name glob as the Graphite API's (`*`, `?`, `[a-z]`, `{a,b}`).
fn name_glob(glob: &str) -> Result<super::graphite::store::Glob, (u16, String)> {
    super::graphite::store::Glob::new(glob).map_err(|e| (400, format!("match: {e}")))
}

struct Redis<'a> {
    connection: Connection,
    options: &'a RedisOptions,
}

impl<'a> Redis<'a> {
    fn open(options: &'a RedisOptions) -> Result<Redis<'a>, (u16, String)> {
        let mut endpoint = options.endpoint();
        // Never hold a request longer than a short look: the API answers 503 at once.
        endpoint.connect_timeout = endpoint.connect_timeout.min(std::time::Duration::from_secs(1));
        endpoint.timeout = endpoint.timeout.min(std::time::Duration::from_secs(5));
        let connection = Connection::open(&endpoint).map_err(|e| (503, format!("cannot read the series: {e}")))?;
        Ok(Redis { connection, options })
    }

    fn ask(&mut self, words: &[&str]) -> Result<Reply, (u16, String)> {
        let reply = self
            .connection
            .pipeline(&[command(words)])
            .map_err(|e| (503, format!("cannot read the series: {e}")))?
            .remove(0);
        match reply {
            Reply::Error(e) => Err((503, format!("redis: {e}"))),
            reply => Ok(reply),
        }
    }

    fn members(&mut self, key: &str) -> Result<Vec<String>, (u16, String)> {
        let mut names: Vec<String> = self
            .ask(&["SMEMBERS", key])?
            .items()
            .iter()
            .filter_map(Reply::text)
            .collect();
        names.sort();
        Ok(names)
    }

    /// The ids matching `expr`: by the name index, then the label indexes.
    fn matching(&mut self, expr: &Expression) -> Result<Vec<String>, (u16, String)> {
        let p = self.options.key_prefix.clone();
        let names = match &expr.literal_name {
            Some(name) => vec![name.clone()],
            None => self
                .members(&format!("{p}metric.names"))?
                .into_iter()
                .filter(|n| expr.name.matches(n))
                .collect(),
        };
        let mut ids: Vec<String> = Vec::new();
        for name in names {
            ids.extend(self.members(&format!("{p}metric.name:{name}"))?);
            if ids.len() > MAX_SERIES {
                return Err((
                    400,
                    format!("the expression matches more than {MAX_SERIES} series: narrow it"),
                ));
            }
        }
        for (key, equal, value) in &expr.labels {
            let with: std::collections::HashSet<String> =
                self.members(&format!("{p}label:{key}:{value}"))?.into_iter().collect();
            ids.retain(|id| with.contains(id) == *equal);
        }
        ids.sort();
        ids.dedup();
        Ok(ids)
    }

    fn describe(&mut self, id: &str) -> Result<(String, BTreeMap<String, String>), (u16, String)> {
        let p = &self.options.key_prefix;
        let reply = self.ask(&["HMGET", &format!("{p}series:{id}"), "name", "labels"])?;
        let items = reply.items();
        let name = items.first().and_then(Reply::text).unwrap_or_default();
        let labels = items
            .get(1)
            .and_then(Reply::text)
            .and_then(|t| serde_json::from_str(&t).ok())
            .unwrap_or_default();
        Ok((name, labels))
    }

    /// (ms, value) of a series' stream between `start` and `finish` (unix seconds).
    fn values(
        &mut self,
        id: &str,
        start: Option<i64>,
        finish: Option<i64>,
    ) -> Result<Vec<(i64, String)>, (u16, String)> {
        let p = &self.options.key_prefix;
        let from = start.map_or("-".to_string(), |s| (s * 1000).to_string());
        let to = finish.map_or("+".to_string(), |f| (f * 1000 + 999).to_string());
        let reply = self.ask(&[
            "XRANGE",
            &format!("{p}values:{id}"),
            &from,
            &to,
            "COUNT",
            &MAX_VALUES.to_string(),
        ])?;
        Ok(reply
            .items()
            .iter()
            .filter_map(|entry| {
                let parts = entry.items();
                let ms: i64 = parts.first()?.text()?.split('-').next()?.parse().ok()?;
                let fields = parts.get(1)?.items();
                let value = fields.get(1)?.text()?;
                Some((ms, value))
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expressions_are_a_name_glob_and_label_filters() {
        let e = Expression::parse("spoolmon.ping.median{order==\"dc1/a\",node!=\"x\"}").unwrap();
        assert_eq!(e.literal_name.as_deref(), Some("spoolmon.ping.median"));
        assert_eq!(
            e.labels,
            [
                ("order".into(), true, "dc1/a".into()),
                ("node".into(), false, "x".into())
            ]
        );
        let glob = Expression::parse("spoolmon.ping.*").unwrap();
        assert!(
            glob.literal_name.is_none()
                && glob.name.matches("spoolmon.ping.max")
                && !glob.name.matches("other.ping.max")
        );
        for bad in ["", "{a==\"b\"}", "a{b==\"c\"", "a{b~\"c\"}", "a;b", "a{b c==\"d\"}"] {
            assert_eq!(Expression::parse(bad).err().unwrap().0, 400, "{bad}");
        }
        assert!(Expression::parse(&"a".repeat(5000)).is_err());
    }

    #[test]
    fn parameters_are_checked_before_redis_is_asked() {
        assert_eq!(Route::parse(&Method::GET, "/series/nothing", None).unwrap_err().0, 404);
        assert_eq!(Route::parse(&Method::POST, "/series/query", None).unwrap_err().0, 405);
        assert_eq!(
            Route::parse(&Method::GET, "/series/query", Some("exp=x"))
                .unwrap_err()
                .0,
            400
        );
        assert!(Route::parse(&Method::GET, "/series/values", Some("series=ab&start=-1h")).is_ok());
    }
}
