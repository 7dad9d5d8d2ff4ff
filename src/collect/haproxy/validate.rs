//! Is a reply complete? HAProxy ends both `show info` and `show stat` with an empty line and
//! then closes the connection, so a reply cut short (a peer that died or closed half-way) lacks
//! that line or ends inside a row. On top of that:
//!
//! - `show info`: every line is `Key: value` (key of letters, digits, `_`, `-` and inner spaces,
//!   as in `Ulimit-n` and `Build info`), and the keys
//!   processing relies on are there ([`REQUIRED_INFO_KEYS`]).
//! - `show stat`: the first line is the `# pxname,...` CSV header and every row has exactly as
//!   many columns as the header (double-quoted fields, which HAProxy uses for values holding a
//!   comma, count as one column).
//!
//! Replies must be UTF-8: haproxystats-process decodes them as such.

/// Keys a `show info` reply must have: its identity and the process number that
/// per-process metrics are keyed by.
pub const REQUIRED_INFO_KEYS: [&str; 4] = ["Name", "Version", "Pid", "Process_num"];

/// What is wrong with a reply (lines are numbered from 1).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReplyError {
    #[error("empty reply")]
    Empty,
    #[error("not UTF-8 (from byte {0})")]
    NotUtf8(usize),
    #[error("truncated: no terminating empty line after {0} bytes")]
    Unterminated(usize),
    #[error("line {line} is not `Key: value`: {text:?}")]
    NotKeyValue { line: usize, text: String },
    #[error("`{0}` is missing")]
    MissingKey(&'static str),
    #[error("no `# pxname,...` CSV header: {0:?}")]
    NoHeader(String),
    #[error("line {line} has {found} CSV columns, the header {expected}")]
    ColumnCount { line: usize, found: usize, expected: usize },
}

/// Checks a `show info` reply.
pub fn check_info(reply: &[u8]) -> Result<(), ReplyError> {
    let body = terminated_body(reply)?;
    let mut found = [false; REQUIRED_INFO_KEYS.len()];
    for (index, line) in body.split('\n').enumerate() {
        let key = info_key(line).ok_or_else(|| ReplyError::NotKeyValue {
            line: index + 1,
            text: shorten(line),
        })?;
        if let Some(position) = REQUIRED_INFO_KEYS.iter().position(|k| *k == key) {
            found[position] = true;
        }
    }
    match found.iter().position(|seen| !seen) {
        Some(missing) => Err(ReplyError::MissingKey(REQUIRED_INFO_KEYS[missing])),
        None => Ok(()),
    }
}

/// The key of a `Key: value` line.
fn info_key(line: &str) -> Option<&str> {
    let (key, _) = line
        .split_once(": ")
        .or_else(|| line.strip_suffix(':').map(|k| (k, "")))?;
    let valid = !key.is_empty()
        && !key.starts_with(' ')
        && !key.ends_with(' ')
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b' '));
    valid.then_some(key)
}

/// Checks a `show stat` reply.
pub fn check_stat(reply: &[u8]) -> Result<(), ReplyError> {
    let body = terminated_body(reply)?;
    let mut lines = body.split('\n');
    let header = lines.next().unwrap_or_default();
    let columns = header
        .strip_prefix("# pxname,")
        .map(|rest| csv_columns(rest) + 1)
        .ok_or_else(|| ReplyError::NoHeader(shorten(header)))?;
    for (index, row) in lines.enumerate() {
        let found = csv_columns(row);
        if found != columns {
            return Err(ReplyError::ColumnCount {
                line: index + 2,
                found,
                expected: columns,
            });
        }
    }
    Ok(())
}

/// The reply without its terminating empty line (`"...\n\n"` → `"..."`), as UTF-8.
fn terminated_body(reply: &[u8]) -> Result<&str, ReplyError> {
    if reply.is_empty() {
        return Err(ReplyError::Empty);
    }
    let text = std::str::from_utf8(reply).map_err(|e| ReplyError::NotUtf8(e.valid_up_to()))?;
    match text.strip_suffix("\n\n") {
        Some(body) if !body.is_empty() => Ok(body),
        _ => Err(ReplyError::Unterminated(reply.len())),
    }
}

/// Number of columns of a CSV line; a comma inside double quotes does not separate.
fn csv_columns(line: &str) -> usize {
    let mut columns = 1;
    let mut quoted = false;
    for byte in line.bytes() {
        match byte {
            b'"' => quoted = !quoted,
            b',' if !quoted => columns += 1,
            _ => {}
        }
    }
    columns
}

/// At most 80 characters of a line, for error messages.
fn shorten(line: &str) -> String {
    line.chars().take(80).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const INFO: &str = "Name: HAProxy\nVersion: 2.6.12\nRelease_date: 2023/03/28\nNbthread: 2\n\
                        Process_num: 1\nPid: 42\nUlimit-n: 4096\nUnstoppable Jobs: 0\nnode: lb-01\n\
                        description:\nBuild info: 2.6.12-1\nTainted: 0\n\n";
    const STAT: &str = "# pxname,svname,qcur,status,last_chk,\nfe.1,FRONTEND,,OPEN,,\n\
                        be.1,s1,0,DOWN,\"Layer4 timeout, 1001ms\",\nbe.1,BACKEND,0,DOWN,,\n\n";

    #[test]
    fn real_shaped_replies_are_complete() {
        assert_eq!(check_info(INFO.as_bytes()), Ok(()));
        assert_eq!(check_stat(STAT.as_bytes()), Ok(()));
        assert_eq!(check_stat(b"# pxname,svname,\n\n"), Ok(()), "no proxies at all");
    }

    #[test]
    fn every_cut_of_a_reply_is_detected() {
        for cut in 0..STAT.len() {
            assert!(check_stat(&STAT.as_bytes()[..cut]).is_err(), "stat cut at {cut}");
        }
        for cut in 0..INFO.len() {
            assert!(check_info(&INFO.as_bytes()[..cut]).is_err(), "info cut at {cut}");
        }
    }

    #[test]
    fn wrong_column_counts_and_garbage_are_named() {
        let short_row = STAT.replace("be.1,BACKEND,0,DOWN,,", "be.1,BACKEND,0,DOWN,");
        assert_eq!(
            check_stat(short_row.as_bytes()),
            Err(ReplyError::ColumnCount {
                line: 4,
                found: 5,
                expected: 6
            })
        );
        assert!(matches!(
            check_stat(b"Unknown command\n\n"),
            Err(ReplyError::NoHeader(_))
        ));
        assert!(matches!(check_stat(INFO.as_bytes()), Err(ReplyError::NoHeader(_))));
        assert!(matches!(
            check_info(STAT.as_bytes()),
            Err(ReplyError::NotKeyValue { line: 1, .. })
        ));
        let unknown = b"Unknown command, but maybe one of the following ones is a better match:\n  help\n\n";
        assert!(check_info(unknown).is_err());
        assert_eq!(check_info(b"\xff\xfe\n\n"), Err(ReplyError::NotUtf8(0)));
        assert_eq!(check_info(b""), Err(ReplyError::Empty));
        assert_eq!(check_stat(b"\n\n"), Err(ReplyError::Unterminated(2)));
    }

    #[test]
    fn info_without_the_keys_processing_needs_is_incomplete() {
        let without_pid = INFO.replace("Pid: 42\n", "");
        assert_eq!(check_info(without_pid.as_bytes()), Err(ReplyError::MissingKey("Pid")));
        let blank_line_inside = INFO.replace("Pid: 42\n", "Pid: 42\n\n");
        assert!(matches!(
            check_info(blank_line_inside.as_bytes()),
            Err(ReplyError::NotKeyValue { line: 7, .. })
        ));
        for bad_key in [" Pid: 1", "Pid : 1", "a,b: 1", ": 1", "no colon"] {
            let text = INFO.replace("Tainted: 0", bad_key);
            assert!(
                matches!(check_info(text.as_bytes()), Err(ReplyError::NotKeyValue { .. })),
                "{bad_key:?}"
            );
        }
    }
}
