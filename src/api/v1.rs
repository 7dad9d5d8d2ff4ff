//! `/api/v1/`: the REST endpoints, JSON in and out (documented with examples in `docs/api.md`).
//!
//! | endpoint | methods | what |
//! |---|---|---|
//! | `health` | GET | 200 `{"status": "ok"}` while the base directory can be read, else 503 |
//! | `orders?prefix=&state=&offset=&limit=` | GET | the orders with state, reason, probe, target, last result, expiry; paged |
//! | `orders/<id>?range=` | GET, PUT, DELETE | one order's report (as `spoolmon show --json`); write it; remove it |
//! | `results?prefix=` | GET | every order's last result, by id |
//! | `series/<id>?from=&until=&cf=&resolution=` | GET | the order's RRD rows, as `rrdtool fetch` |
//! | `status`, `queues`, `sinks`, `nodes` | GET | as `spoolmon status --json`, or one part of it |
//! | `archive?prefix=&offset=&limit=` | GET | the entries of `archive/` |
//!
//! Parsing ([`Route::parse`]) happens before anything is read or a token is looked at beyond
//! its presence; answering ([`Route::answer`]) runs in the blocking pool.

use super::query::{percent_decode, BadRequest, Params};
use super::Context;
use crate::http::answer;
use crate::orders::book::OrderState;
use crate::orders::write::{self, WriteError};
use crate::output::series::{self, Cf, SeriesError};
use crate::shared::measurement::OrderId;
use bytes::Bytes;
use http_body_util::Full;
use hyper::{Method, Response};
use serde::Serialize;
use std::io;

/// The prefix of every endpoint here.
pub const PREFIX: &str = "/api/v1/";

/// Default `range` of one order's report, seconds.
const DEFAULT_RANGE: u64 = 3600;

/// A request understood: what to answer.
#[derive(Debug)]
pub enum Route {
    Health,
    Orders {
        prefix: Option<String>,
        state: Option<OrderState>,
        sort: Sort,
        offset: usize,
        limit: usize,
    },
    Order {
        id: OrderId,
        range: u64,
    },
    PutOrder {
        id: OrderId,
        replace: bool,
    },
    DeleteOrder {
        id: OrderId,
    },
    Results {
        prefix: Option<String>,
    },
    Series {
        id: OrderId,
        from: String,
        until: String,
        cf: Cf,
        resolution: Option<u64>,
    },
    Status(StatusPart),
    Archive {
        prefix: Option<String>,
        offset: usize,
        limit: usize,
    },
    /// `/metrics` (outside `/api/v1/`, where Prometheus looks by default).
    Metrics,
}

/// The order of a listing: by id, or the worst first (most loss, slowest median, oldest
/// result; orders without a result last, by id among equals).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sort {
    Id,
    Loss,
    Median,
    Age,
}

impl Sort {
    fn named(text: &str) -> Result<Sort, BadRequest> {
        Ok(match text {
            "id" => Sort::Id,
            "loss" => Sort::Loss,
            "median" => Sort::Median,
            "age" => Sort::Age,
            _ => {
                return Err(BadRequest(format!(
                    "sort={:?}: one of id, loss, median, age",
                    crate::orders::book::printable(text)
                )))
            }
        })
    }

    /// How bad an order is by this sort (larger first); `None` without a result.
    fn key(self, order: &crate::output::wide::WideStatus) -> Option<f64> {
        let result = order.last_result.as_ref()?;
        match self {
            Sort::Id => Some(0.0),
            Sort::Loss => Some(f64::from(result.loss) / f64::from(result.pings.max(1))),
            // Nothing answered is the slowest of all.
            Sort::Median => Some(result.median_ms.unwrap_or(f64::INFINITY)),
            Sort::Age => Some(result.age as f64),
        }
    }
}

/// Which part of the status report.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StatusPart {
    All,
    Queues,
    Sinks,
    Nodes,
}

fn bad(e: BadRequest) -> (u16, String) {
    (400, e.0)
}

fn state_named(text: &str) -> Result<OrderState, BadRequest> {
    [
        OrderState::Active,
        OrderState::Failing,
        OrderState::Invalid,
        OrderState::Unresolved,
    ]
    .into_iter()
    .find(|s| s.as_str() == text)
    .ok_or_else(|| {
        BadRequest(format!(
            "state={:?}: one of active, failing, invalid, unresolved",
            crate::orders::book::printable(text)
        ))
    })
}

/// The order id of a path's tail (percent-decoded once, then checked like `spoolmon show`).
fn id_of(raw: &str) -> Result<OrderId, (u16, String)> {
    let text = percent_decode(raw, false).map_err(bad)?;
    write::lookup_id(&text).map_err(|e| (400, e.to_string()))
}

impl Route {
    /// Understands `method path?query`; a refusal is `(status, reason)`.
    pub fn parse(method: &Method, path: &str, query: Option<&str>) -> Result<Route, (u16, String)> {
        let read_only = |route: Route| match *method {
            Method::GET | Method::HEAD => Ok(route),
            _ => Err((405, format!("{path} is read-only (GET, HEAD)"))),
        };
        if path == "/metrics" {
            Params::parse(query, &[]).map_err(bad)?;
            return read_only(Route::Metrics);
        }
        let Some(rest) = path.strip_prefix(PREFIX) else {
            return Err((
                404,
                format!("no such endpoint (the API is below {PREFIX}, and /metrics)"),
            ));
        };
        let params = |known: &[&str]| Params::parse(query, known).map_err(bad);
        let (head, tail) = rest.split_once('/').unwrap_or((rest, ""));
        match (head, tail.is_empty()) {
            ("health", true) => {
                params(&[])?;
                read_only(Route::Health)
            }
            ("orders", true) => {
                let p = params(&["prefix", "state", "sort", "offset", "limit"])?;
                let (offset, limit) = p.page().map_err(bad)?;
                let state = p.get("state").map(state_named).transpose().map_err(bad)?;
                let sort = p.get("sort").map_or(Ok(Sort::Id), Sort::named).map_err(bad)?;
                read_only(Route::Orders {
                    prefix: p.get("prefix").map(str::to_owned),
                    state,
                    sort,
                    offset,
                    limit,
                })
            }
            ("orders", false) => {
                let id = id_of(tail)?;
                match *method {
                    Method::GET | Method::HEAD => {
                        let p = params(&["range"])?;
                        let range = match p.get("range") {
                            Some(text) => crate::output::history::parse_range(text).map_err(|e| (400, format!("range: {e}")))?,
                            None => DEFAULT_RANGE,
                        };
                        Ok(Route::Order { id, range })
                    }
                    Method::PUT => {
                        let p = params(&["replace"])?;
                        let replace = match p.get("replace") {
                            None | Some("true") => true,
                            Some("false") => false,
                            Some(_) => return Err((400, "replace: true or false".into())),
                        };
                        Ok(Route::PutOrder { id, replace })
                    }
                    _ => {
                        params(&[])?;
                        Ok(Route::DeleteOrder { id })
                    }
                }
            }
            ("results", true) => {
                let p = params(&["prefix"])?;
                read_only(Route::Results {
                    prefix: p.get("prefix").map(str::to_owned),
                })
            }
            ("series", false) => {
                let id = id_of(tail)?;
                let p = params(&["from", "until", "cf", "resolution"])?;
                let cf = p.get("cf").unwrap_or("AVERAGE").parse::<Cf>().map_err(|e| (400, format!("cf: {e}")))?;
                let resolution = match p.get("resolution") {
                    Some(text) => Some(crate::output::history::parse_range(text).map_err(|e| (400, format!("resolution: {e}")))?),
                    None => None,
                };
                // Times are checked when answered (they are relative to then).
                let from = p.get("from").unwrap_or("-1d").to_owned();
                let until = p.get("until").unwrap_or("now").to_owned();
                for (name, text) in [("from", &from), ("until", &until)] {
                    super::query::parse_time(text, 0).map_err(|e| (400, format!("{name}: {e}")))?;
                }
                read_only(Route::Series {
                    id,
                    from,
                    until,
                    cf,
                    resolution,
                })
            }
            (part @ ("status" | "queues" | "sinks" | "nodes"), true) => {
                params(&[])?;
                read_only(Route::Status(match part {
                    "status" => StatusPart::All,
                    "queues" => StatusPart::Queues,
                    "sinks" => StatusPart::Sinks,
                    _ => StatusPart::Nodes,
                }))
            }
            ("archive", true) => {
                let p = params(&["prefix", "offset", "limit"])?;
                let (offset, limit) = p.page().map_err(bad)?;
                read_only(Route::Archive {
                    prefix: p.get("prefix").map(str::to_owned),
                    offset,
                    limit,
                })
            }
            _ => Err((
                404,
                format!(
                    "no such endpoint {:?} (see {PREFIX}: health, orders, results, series, status, queues, sinks, nodes, archive)",
                    crate::orders::book::printable(path)
                ),
            )),
        }
    }

    /// Whether the request's body is read (a PUT).
    pub fn takes_body(&self) -> bool {
        matches!(self, Route::PutOrder { .. })
    }

    /// The answer, from the files (blocking).
    pub fn answer(self, context: &Context, body: Option<Bytes>) -> Response<Full<Bytes>> {
        match self.compute(context, body) {
            Ok(response) => response,
            Err((status, reason)) => super::refusal((status, reason)),
        }
    }

    fn compute(self, context: &Context, body: Option<Bytes>) -> Result<Response<Full<Bytes>>, (u16, String)> {
        let now = crate::shared::clock::unix_now();
        let base = &context.base;
        match self {
            Route::Health => {
                std::fs::read_dir(base.orders())
                    .map_err(|e| (503, format!("cannot read {}: {e}", base.orders().display())))?;
                ok(&serde_json::json!({ "status": "ok", "version": env!("CARGO_PKG_VERSION") }))
            }
            Route::Orders {
                prefix,
                state,
                sort,
                offset,
                limit,
            } => {
                readable_orders(context)?;
                let statuses: Vec<_> = context
                    .listing()
                    .iter()
                    .filter(|s| {
                        prefix.as_deref().is_none_or(|p| s.id.as_str().starts_with(p))
                            && state.is_none_or(|st| s.state == st)
                    })
                    .cloned()
                    .collect();
                let total = statuses.len();
                // By id only the page's last results are read; a sort by them reads them all.
                let orders = if sort == Sort::Id {
                    let page: Vec<_> = statuses.into_iter().skip(offset).take(limit).collect();
                    crate::output::wide::widen(base, &context.orders, page, now)
                } else {
                    let mut all = crate::output::wide::widen(base, &context.orders, statuses, now);
                    all.sort_by(|a, b| {
                        let (ka, kb) = (sort.key(a), sort.key(b));
                        kb.partial_cmp(&ka)
                            .unwrap_or(std::cmp::Ordering::Equal)
                            .then_with(|| a.status.id.cmp(&b.status.id))
                    });
                    all.into_iter().skip(offset).take(limit).collect()
                };
                ok(&serde_json::json!({ "total": total, "offset": offset, "limit": limit, "orders": orders }))
            }
            Route::Order { id, range } => match crate::output::show::report(base, &context.orders, &id, range, now) {
                Some(report) => ok(&report),
                None => Err((
                    404,
                    format!("no order {:?}: not below orders/, output/ or archive/", id.as_str()),
                )),
            },
            Route::PutOrder { id, replace } => {
                let text = write::order_text(body.unwrap_or_default().to_vec()).map_err(write_refusal)?;
                let written = write::write(base, &context.orders, &id, &text, replace).map_err(write_refusal)?;
                context.forget_listing();
                let status = if written.replaced { 200 } else { 201 };
                Ok(answer(
                    status,
                    serde_json::json!({ "id": id, "replaced": written.replaced, "warnings": written.warnings })
                        .to_string(),
                ))
            }
            Route::DeleteOrder { id } => {
                let orders = write::orders_dir(base).map_err(|e| (503, e.to_string()))?;
                write::remove(&orders, &id).map_err(write_refusal)?;
                context.forget_listing();
                ok(&serde_json::json!({ "id": id, "removed": true }))
            }
            Route::Results { prefix } => {
                readable_orders(context)?;
                let statuses: Vec<_> = context
                    .listing()
                    .iter()
                    .filter(|s| prefix.as_deref().is_none_or(|p| s.id.as_str().starts_with(p)))
                    .cloned()
                    .collect();
                let results: serde_json::Map<String, serde_json::Value> =
                    crate::output::wide::widen(base, &context.orders, statuses, now)
                        .into_iter()
                        .filter_map(|w| Some((w.status.id.to_string(), serde_json::to_value(w.last_result?).ok()?)))
                        .collect();
                ok(&serde_json::json!({ "results": results }))
            }
            Route::Series {
                id,
                from,
                until,
                cf,
                resolution,
            } => {
                let time = |name: &str, text: &str| {
                    super::query::parse_time(text, now).map_err(|e| (400, format!("{name}: {e}")))
                };
                let query = series::Query {
                    cf,
                    from: time("from", &from)?,
                    until: time("until", &until)?,
                    resolution,
                };
                ok(&fetch_series(context, &id, query)?)
            }
            Route::Status(part) => {
                let report = (context.status)().map_err(|e| (503, e))?;
                let key = match part {
                    StatusPart::All => return ok(&report),
                    StatusPart::Queues => "queue",
                    StatusPart::Sinks => "sinks",
                    StatusPart::Nodes => "children",
                };
                ok(&report[key])
            }
            Route::Archive { prefix, offset, limit } => {
                let mut entries = crate::output::archive::entries(base).map_err(|e| (503, e.to_string()))?;
                entries.retain(|e| prefix.as_deref().is_none_or(|p| e.id.starts_with(p)));
                let total = entries.len();
                let page: Vec<_> = entries.into_iter().skip(offset).take(limit).collect();
                ok(&serde_json::json!({ "total": total, "offset": offset, "limit": limit, "entries": page }))
            }
            Route::Metrics => Ok(crate::http::answer_with(
                200,
                super::metrics::CONTENT_TYPE,
                super::metrics::render(context, now),
            )),
        }
    }
}

fn ok(value: &impl Serialize) -> Result<Response<Full<Bytes>>, (u16, String)> {
    serde_json::to_string(value)
        .map(|body| answer(200, body))
        .map_err(|e| (500, format!("cannot encode the answer: {e}")))
}

/// `orders/` must be readable for a listing to mean anything (a listing of nothing is not "no
/// orders" when the directory cannot be read).
fn readable_orders(context: &Context) -> Result<(), (u16, String)> {
    let orders = context.base.orders();
    std::fs::read_dir(&orders)
        .map(drop)
        .map_err(|e| (503, format!("cannot read {}: {e}", orders.display())))
}

fn write_refusal(e: WriteError) -> (u16, String) {
    let status = match &e {
        WriteError::BadId(_) | WriteError::NotText => 400,
        WriteError::Invalid(_) => 422,
        WriteError::TooLarge => 413,
        WriteError::Exists { .. } => 409,
        WriteError::Missing(_) => 404,
        WriteError::NotAFile(_) => 409,
        WriteError::Io(_) => 503,
    };
    (status, e.to_string())
}

/// The series of `id` from `output/`, else (an archived order) from `archive/`.
fn fetch_series(context: &Context, id: &OrderId, query: series::Query) -> Result<series::Series, (u16, String)> {
    use crate::output::history::HistoryError;
    let mut last = None;
    for dir in ["output", "archive"] {
        let parent = match context.base.dir(dir) {
            Ok(parent) => parent,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err((503, format!("cannot open {dir}/: {e}"))),
        };
        match series::fetch(&parent, id, query) {
            Ok(series) => return Ok(series),
            Err(SeriesError::File(HistoryError::Missing)) => last = Some(HistoryError::Missing),
            Err(SeriesError::Query(reason)) => return Err((400, reason)),
            Err(SeriesError::File(e)) => return Err((500, e.to_string())),
        }
    }
    let reason = last.map_or_else(|| "no output/ or archive/ yet".to_string(), |e| e.to_string());
    Err((404, format!("no series for {:?}: {reason}", id.as_str())))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(method: Method, target: &str) -> Result<Route, (u16, String)> {
        let (path, query) = match target.split_once('?') {
            Some((p, q)) => (p, Some(q)),
            None => (target, None),
        };
        Route::parse(&method, path, query)
    }

    #[test]
    fn endpoints_are_understood() {
        assert!(matches!(parse(Method::GET, "/api/v1/health"), Ok(Route::Health)));
        match parse(Method::GET, "/api/v1/orders?prefix=dc1%2F&state=failing&limit=5") {
            Ok(Route::Orders {
                prefix,
                state,
                offset,
                limit,
                ..
            }) => {
                assert_eq!(prefix.as_deref(), Some("dc1/"));
                assert_eq!(state, Some(OrderState::Failing));
                assert_eq!((offset, limit), (0, 5));
            }
            other => panic!("{other:?}"),
        }
        match parse(Method::GET, "/api/v1/orders/dc1/web%2Fa?range=1d") {
            Ok(Route::Order { id, range }) => assert_eq!((id.as_str(), range), ("dc1/web/a", 86_400)),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            parse(Method::PUT, "/api/v1/orders/a"),
            Ok(Route::PutOrder { replace: true, .. })
        ));
        assert!(matches!(
            parse(Method::PUT, "/api/v1/orders/a?replace=false"),
            Ok(Route::PutOrder { replace: false, .. })
        ));
        assert!(matches!(
            parse(Method::DELETE, "/api/v1/orders/a"),
            Ok(Route::DeleteOrder { .. })
        ));
        match parse(Method::GET, "/api/v1/series/a?cf=max&resolution=5m&from=-3h") {
            Ok(Route::Series {
                cf,
                resolution,
                from,
                until,
                ..
            }) => {
                assert_eq!(
                    (cf, resolution, from.as_str(), until.as_str()),
                    (Cf::Max, Some(300), "-3h", "now")
                );
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            parse(Method::GET, "/api/v1/sinks"),
            Ok(Route::Status(StatusPart::Sinks))
        ));
        assert!(matches!(
            parse(Method::HEAD, "/api/v1/archive"),
            Ok(Route::Archive { .. })
        ));
    }

    #[test]
    fn hostile_and_wrong_requests_are_refused_with_a_reason() {
        let cases = [
            (Method::GET, "/api/v1/orders/..%2Fetc%2Fpasswd", 400, "invalid order id"),
            (Method::GET, "/api/v1/orders/%2e%2e/x", 400, "invalid order id"),
            (Method::GET, "/api/v1/orders/%2Fetc%2Fpasswd", 400, "invalid order id"),
            (Method::PUT, "/api/v1/orders/a/../../x", 400, "invalid order id"),
            (Method::GET, "/api/v1/orders/a%0Ab", 400, "control characters"),
            (Method::GET, "/api/v1/orders/a%ZZ", 400, "percent escape"),
            (Method::GET, "/api/v1/orders/%C3%28", 400, "UTF-8"),
            (Method::PUT, "/api/v1/orders/.hidden", 400, "ignores the name"),
            (Method::GET, "/api/v1/orders?state=dead", 400, "state="),
            (Method::GET, "/api/v1/orders?limit=-1", 400, "limit="),
            (Method::GET, "/api/v1/orders?colour=red", 400, "unknown parameter"),
            (Method::GET, "/api/v1/series/a?cf=median", 400, "cf:"),
            (Method::GET, "/api/v1/series/a?from=yesterday", 400, "from:"),
            (Method::GET, "/api/v1/series/a?resolution=0", 400, "resolution:"),
            (Method::PUT, "/api/v1/status", 405, "read-only"),
            (Method::DELETE, "/api/v1/orders", 405, "read-only"),
            (Method::GET, "/api/v1/nothing", 404, "no such endpoint"),
            (Method::GET, "/etc/passwd", 404, "no such endpoint"),
            (Method::GET, "/api/v1/health/x", 404, "no such endpoint"),
        ];
        for (method, target, status, expected) in cases {
            match parse(method.clone(), target) {
                Err((got, reason)) => {
                    assert_eq!(got, status, "{method} {target}: {reason}");
                    assert!(reason.contains(expected), "{method} {target}: {reason}");
                }
                Ok(route) => panic!("{method} {target} was taken: {route:?}"),
            }
        }
    }
}
