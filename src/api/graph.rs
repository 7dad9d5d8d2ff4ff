//! `/graph/<order id>.png|.svg?range=1d` (or `from`/`until`, `width`, `height`, `legend=0`
//! for the graph area alone, a thumbnail): one order's
//! SmokePing graph ([`crate::output::graph`]), as `spoolmon graph` draws it. The web page's
//! graphs are these. Owns on disk: nothing. Called by [`super::Api`] for `/graph/` paths.

use super::query::{percent_decode, Params};
use super::Context;
use crate::output::graph::{self, Format, GraphError};
use crate::output::history::HistoryError;
use crate::shared::measurement::OrderId;
use bytes::Bytes;
use http_body_util::Full;
use hyper::{Method, Response};

pub const PREFIX: &str = "/graph/";

/// A graph request understood.
#[derive(Debug)]
pub struct Route {
    id: OrderId,
    format: Format,
    range: u64,
    from: Option<String>,
    until: Option<String>,
    width: u32,
    height: u32,
    legend: bool,
}

impl Route {
    pub fn parse(method: &Method, path: &str, query: Option<&str>) -> Result<Route, (u16, String)> {
        if !matches!(*method, Method::GET | Method::HEAD) {
            return Err((405, format!("{path} is read-only (GET, HEAD)")));
        }
        let tail = path.strip_prefix(PREFIX).unwrap_or("");
        let (raw_id, extension) = tail
            .rsplit_once('.')
            .ok_or((404, "a graph is /graph/<order id>.png or .svg".to_string()))?;
        let format =
            Format::from_extension(extension).ok_or((404, format!("{extension:?}: graphs are .png or .svg")))?;
        let text = percent_decode(raw_id, false).map_err(|e| (400, e.0))?;
        let id = crate::orders::write::lookup_id(&text).map_err(|e| (400, e.to_string()))?;
        let p =
            Params::parse(query, &["range", "from", "until", "width", "height", "legend"]).map_err(|e| (400, e.0))?;
        let legend = match p.get("legend") {
            None | Some("1") => true,
            Some("0") => false,
            Some(_) => return Err((400, "legend: 0 or 1".into())),
        };
        let range = match p.get("range") {
            Some(text) => crate::output::history::parse_range(text).map_err(|e| (400, format!("range: {e}")))?,
            None => 86_400,
        };
        let side = |name: &str, default: u64| {
            p.number(name, default, u64::from(graph::MAX_SIDE))
                .map(|n| n as u32)
                .map_err(|e| (400, e.0))
        };
        let (width, height) = (side("width", 600)?, side("height", 200)?);
        for name in ["from", "until"] {
            if let Some(text) = p.get(name) {
                super::query::parse_time(text, 0).map_err(|e| (400, format!("{name}: {e}")))?;
            }
        }
        Ok(Route {
            id,
            format,
            range,
            from: p.get("from").map(str::to_owned),
            until: p.get("until").map(str::to_owned),
            width,
            height,
            legend,
        })
    }

    /// The image (blocking: librrd draws a full graph, one at a time in the process; a
    /// thumbnail is drawn without it, in parallel).
    pub fn answer(self, context: &Context, now: i64) -> Result<Response<Full<Bytes>>, (u16, String)> {
        let time = |text: &Option<String>, default: i64, name: &str| match text {
            None => Ok(default),
            Some(text) => super::query::parse_time(text, now).map_err(|e| (400, format!("{name}: {e}"))),
        };
        let until = time(&self.until, now, "until")?;
        let from = time(&self.from, until - self.range as i64, "from")?;
        let request = graph::Request {
            from,
            until,
            format: self.format,
            width: self.width,
            height: self.height,
            title: self.id.to_string(),
            legend: self.legend,
        };
        match graph::draw_order(&context.base, &self.id, &request) {
            Ok(image) => {
                let mut response = crate::http::answer_with(200, self.format.content_type(), image);
                response.headers_mut().insert(
                    hyper::header::CACHE_CONTROL,
                    hyper::header::HeaderValue::from_static("max-age=10"),
                );
                Ok(response)
            }
            Err(GraphError::File(HistoryError::Missing)) => Err((
                404,
                format!(
                    "no main.rrd for {:?} (not measured yet, norrd, or no such order)",
                    self.id.as_str()
                ),
            )),
            Err(GraphError::Request(reason)) => Err((400, reason)),
            Err(GraphError::File(e @ HistoryError::Io(_))) => Err((503, e.to_string())),
            Err(e) => Err((500, e.to_string())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_extensions_and_sizes_are_checked_before_anything_is_read() {
        let parse = |path: &str, query: Option<&str>| Route::parse(&Method::GET, path, query);
        let ok = parse("/graph/dc1/web-1.png", Some("range=3h&width=300")).unwrap();
        assert_eq!(
            (ok.id.as_str(), ok.format, ok.range, ok.width),
            ("dc1/web-1", Format::Png, 10_800, 300)
        );
        assert_eq!(parse("/graph/dc1%2Fweb-1.svg", None).unwrap().format, Format::Svg);
        for (path, query, status) in [
            ("/graph/dc1/web-1.gif", None, 404),
            ("/graph/dc1/web-1", None, 404),
            ("/graph/..%2F..%2Fetc%2Fpasswd.png", None, 400),
            ("/graph/a/../../b.png", None, 400),
            ("/graph/a.png", Some("width=99999"), 400),
            ("/graph/a.png", Some("range=forever"), 400),
            ("/graph/a.png", Some("from=yesterday"), 400),
            ("/graph/a.png", Some("colour=red"), 400),
        ] {
            assert_eq!(parse(path, query).unwrap_err().0, status, "{path} {query:?}");
        }
        assert_eq!(Route::parse(&Method::PUT, "/graph/a.png", None).unwrap_err().0, 405);
    }
}
