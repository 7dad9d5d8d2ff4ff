//! Reading what a client put in a URL: percent-decoding (strictly: a bad escape or bytes that are
//! not UTF-8 are refused, never guessed), query parameters, times and paging.
//!
//! Every refusal is a [`BadRequest`] naming the parameter, answered 400.

use std::collections::HashMap;

/// Longest query string taken (the request head is bounded anyway; this bounds the parsing).
pub const MAX_QUERY_BYTES: usize = 8192;

/// Largest page of a listing.
pub const MAX_LIMIT: usize = 10_000;

/// Default page size of a listing.
pub const DEFAULT_LIMIT: usize = 100;

/// A request the API cannot make sense of: answered 400 with this reason.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct BadRequest(pub String);

/// `text` with `%XX` escapes decoded (and `+` as a space when `plus_is_space`, as in a query).
pub fn percent_decode(text: &str, plus_is_space: bool) -> Result<String, BadRequest> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hex = bytes.get(i + 1..i + 3).and_then(|h| std::str::from_utf8(h).ok());
                let value = hex.and_then(|h| u8::from_str_radix(h, 16).ok()).ok_or_else(|| {
                    BadRequest(format!(
                        "bad percent escape at byte {i} of {:?}",
                        crate::orders::book::printable(text)
                    ))
                })?;
                out.push(value);
                i += 3;
            }
            b'+' if plus_is_space => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).map_err(|_| BadRequest("the URL decodes to bytes that are not UTF-8".into()))
}

/// The parameters of a query string: each name at most once.
#[derive(Debug, Default)]
pub struct Params {
    values: HashMap<String, String>,
}

impl Params {
    /// Parses `a=1&b=2`; `known` are the names this endpoint takes (any other is refused, so a
    /// typo never silently does nothing).
    pub fn parse(query: Option<&str>, known: &[&str]) -> Result<Params, BadRequest> {
        let mut values = HashMap::new();
        let Some(query) = query.filter(|q| !q.is_empty()) else {
            return Ok(Params { values });
        };
        if query.len() > MAX_QUERY_BYTES {
            return Err(BadRequest(format!("the query is longer than {MAX_QUERY_BYTES} bytes")));
        }
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            let name = percent_decode(name, true)?;
            let value = percent_decode(value, true)?;
            if !known.contains(&name.as_str()) {
                let name = crate::orders::book::printable(&name);
                return Err(BadRequest(if known.is_empty() {
                    format!("unknown parameter {name:?}: this endpoint takes none")
                } else {
                    format!("unknown parameter {name:?} (this endpoint takes: {})", known.join(", "))
                }));
            }
            if values.insert(name.clone(), value).is_some() {
                return Err(BadRequest(format!("parameter {name:?} is given twice")));
            }
        }
        Ok(Params { values })
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.values.get(name).map(String::as_str)
    }

    /// A whole number parameter, at most `max`.
    pub fn number(&self, name: &str, default: u64, max: u64) -> Result<u64, BadRequest> {
        match self.get(name) {
            None => Ok(default),
            Some(text) => match text.parse::<u64>() {
                Ok(n) if n <= max => Ok(n),
                _ => Err(BadRequest(format!(
                    "{name}={:?}: expected a whole number from 0 to {max}",
                    crate::orders::book::printable(text)
                ))),
            },
        }
    }

    /// `offset` and `limit` of a listing.
    pub fn page(&self) -> Result<(usize, usize), BadRequest> {
        let offset = self.number("offset", 0, u32::MAX as u64)? as usize;
        let limit = self.number("limit", DEFAULT_LIMIT as u64, MAX_LIMIT as u64)? as usize;
        Ok((offset, limit))
    }

    /// A time parameter (see [`parse_time`]), `default` when absent.
    pub fn time(&self, name: &str, default: i64, now: i64) -> Result<i64, BadRequest> {
        match self.get(name) {
            None => Ok(default),
            Some(text) => parse_time(text, now).map_err(|e| BadRequest(format!("{name}: {e}"))),
        }
    }
}

/// A point in time: unix seconds (`1764892800`), `now`, or a duration before now (`-1d`,
/// `-3h`, `now-30m`; units s, m, h, d, w, y).
pub fn parse_time(text: &str, now: i64) -> Result<i64, String> {
    if text == "now" {
        return Ok(now);
    }
    if let Some(ago) = text.strip_prefix("now-").or_else(|| text.strip_prefix('-')) {
        let seconds = crate::output::history::parse_range(ago)?;
        return Ok(now - seconds as i64);
    }
    match text.parse::<i64>() {
        Ok(t) if (0..=i64::from(u32::MAX) * 4).contains(&t) => Ok(t),
        _ => Err(format!(
            "{:?} is not a time: unix seconds, now, or -<duration> (-1d, -3h, now-30m)",
            crate::orders::book::printable(text)
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percent_escapes_are_decoded_strictly() {
        assert_eq!(percent_decode("a%2Fb%20c", false).unwrap(), "a/b c");
        assert_eq!(percent_decode("a+b", true).unwrap(), "a b");
        assert_eq!(percent_decode("a+b", false).unwrap(), "a+b");
        assert_eq!(percent_decode("%2e%2e", false).unwrap(), "..");
        assert!(percent_decode("a%2", false).is_err());
        assert!(percent_decode("a%zz", false).is_err());
        assert!(percent_decode("%ff%fe", false).unwrap_err().0.contains("UTF-8"));
    }

    #[test]
    fn parameters_are_known_single_and_bounded() {
        let params = Params::parse(Some("limit=5&prefix=a%2Fb"), &["limit", "prefix", "offset"]).unwrap();
        assert_eq!(params.get("prefix"), Some("a/b"));
        assert_eq!(params.page().unwrap(), (0, 5));
        assert!(Params::parse(Some("limt=5"), &["limit"])
            .unwrap_err()
            .0
            .contains("unknown parameter"));
        assert!(Params::parse(Some("limit=5&limit=6"), &["limit"])
            .unwrap_err()
            .0
            .contains("twice"));
        let huge = Params::parse(Some("limit=99999999"), &["limit"]).unwrap();
        assert!(huge.page().unwrap_err().0.contains("limit="));
        let negative = Params::parse(Some("offset=-1"), &["offset"]).unwrap();
        assert!(negative.page().is_err());
        assert!(Params::parse(Some(&"a".repeat(MAX_QUERY_BYTES + 1)), &[]).is_err());
        assert!(Params::parse(None, &[]).unwrap().get("x").is_none());
    }

    #[test]
    fn times_are_unix_seconds_now_or_a_duration_ago() {
        let now = 1_800_000_000;
        assert_eq!(parse_time("now", now), Ok(now));
        assert_eq!(parse_time("-1d", now), Ok(now - 86_400));
        assert_eq!(parse_time("now-30m", now), Ok(now - 1800));
        assert_eq!(parse_time("1764892800", now), Ok(1_764_892_800));
        assert_eq!(parse_time("-5", now), Ok(now - 5));
        assert_eq!(parse_time("-1y", now), Ok(now - 365 * 86_400));
        for bad in ["yesterday", "-1x", "1.5", "-", "99999999999999999999", "now+1d"] {
            assert!(parse_time(bad, now).is_err(), "{bad}");
        }
    }
}
