//! The web page: the orders as a table (filter by prefix and state, sort by loss, latency or
//! age, paged by the API so that 10,000 orders cost one page's worth, a small graph per order),
//! one page per order (its state, last result, graphs over 3 h, 1 d, 1 w, 1 y, recent steps),
//! and a status page (daemon, queues, sinks, nodes, last errors).
//!
//! The assets are compiled into the binary (`index.html`, `app.js`, `app.css` beside this
//! file): nothing is loaded from elsewhere, and the `Content-Security-Policy` says so to the
//! browser. The page reads the same JSON API (`/api/v1/`) and graphs (`/graph/`) as anyone.
//! Owns on disk: nothing. Called by [`super::Api`] for `/`, `/order/...`, `/status` and
//! `/assets/...`.

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{HeaderValue, CACHE_CONTROL, CONTENT_SECURITY_POLICY, X_CONTENT_TYPE_OPTIONS};
use hyper::{Method, Response};

const INDEX: &str = include_str!("index.html");
const SCRIPT: &str = include_str!("app.js");
const STYLE: &str = include_str!("app.css");

/// Whether `path` is one of the page's.
pub fn handles(path: &str) -> bool {
    path == "/" || path == "/status" || path.starts_with("/order/") || path.starts_with("/assets/")
}

/// The page or asset at `path`.
pub fn answer(method: &Method, path: &str, query: Option<&str>) -> Result<Response<Full<Bytes>>, (u16, String)> {
    if !matches!(*method, Method::GET | Method::HEAD) {
        return Err((405, format!("{path} is read-only (GET, HEAD)")));
    }
    let (body, content_type) = match path {
        "/assets/app.js" => (SCRIPT, "text/javascript; charset=utf-8"),
        "/assets/app.css" => (STYLE, "text/css; charset=utf-8"),
        p if p.starts_with("/assets/") => return Err((404, format!("no asset {}", crate::orders::book::printable(p)))),
        _ => {
            // The pages take only their own filters; a query that long is no filter.
            if query.is_some_and(|q| q.len() > super::query::MAX_QUERY_BYTES) {
                return Err((400, "the query is too long".into()));
            }
            (INDEX, "text/html; charset=utf-8")
        }
    };
    let mut response = crate::http::answer_with(200, content_type, body);
    let headers = response.headers_mut();
    headers.insert(
        CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'self'; img-src 'self'; style-src 'self'; script-src 'self'; frame-ancestors 'none'",
        ),
    );
    headers.insert(X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_and_assets_are_served_and_nothing_else() {
        for path in ["/", "/status", "/order/dc1/web-1", "/assets/app.js", "/assets/app.css"] {
            assert!(handles(path), "{path}");
            assert_eq!(answer(&Method::GET, path, None).unwrap().status(), 200, "{path}");
        }
        assert!(!handles("/metrics"));
        assert_eq!(answer(&Method::GET, "/assets/../etc/passwd", None).unwrap_err().0, 404);
        assert_eq!(answer(&Method::PUT, "/", None).unwrap_err().0, 405);
        // Nothing from elsewhere: no URL with a scheme or a protocol-relative one in the assets.
        for asset in [INDEX, SCRIPT, STYLE] {
            assert!(!asset.contains("http://") && !asset.contains("https://") && !asset.contains("\"//"));
        }
    }
}
