//! `show stat`: CSV whose header line starts with `# pxname,svname,`, one row per frontend,
//! backend, server and listener, ending with an empty line.
//!
//! Columns are found by name in each file's own header, so processes of different HAProxy
//! versions (extra or missing columns) mix freely: a metric column a process lacks counts as 0
//! for its rows, as does an empty cell (haproxystats' `fillna(0)`). Only the columns that are
//! aggregated must hold numbers; text columns (`status`, `check_desc`, …) are never parsed.
//!
//! We parse by hand rather than with a CSV library or polars' reader: the format is simple
//! (HAProxy quotes only text fields), every error can name its line and column, rows go
//! straight into per-kind column vectors, and only the ~40 wanted of 128 columns are converted.

use super::catalog::MetricSpec;
use super::error::HaproxySnapshotError;
use super::exclusions::Exclusions;
use super::names::NameTable;

/// The rows of one kind from every process, column-wise: `columns[j]` holds the values of the
/// j-th wanted metric, one per row. Names are numbers from [`StatRows`]' tables.
#[derive(Debug, Default)]
pub struct Rows {
    pub proxies: Vec<u32>,
    /// Server name numbers, for server rows only.
    pub servers: Vec<u32>,
    pub columns: Vec<Vec<f64>>,
}

impl Rows {
    fn with_metrics(count: usize) -> Rows {
        Rows {
            proxies: Vec::new(),
            servers: Vec::new(),
            columns: vec![Vec::new(); count],
        }
    }

    /// Makes room for `more` rows in every column.
    fn reserve(&mut self, more: usize) {
        self.proxies.reserve(more);
        for column in &mut self.columns {
            column.reserve(more);
        }
    }

    pub fn len(&self) -> usize {
        self.proxies.len()
    }
}

/// The metrics wanted for each kind of row.
#[derive(Clone, Copy, Debug)]
pub struct Wanted<'s> {
    pub frontend: &'s [MetricSpec],
    pub backend: &'s [MetricSpec],
    pub server: &'s [MetricSpec],
}

/// The rows of every process, by kind, and the names their numbers stand for.
#[derive(Debug)]
pub struct StatRows<'a> {
    pub frontends: Rows,
    pub backends: Rows,
    pub servers: Rows,
    /// Frontend and backend names (`pxname`).
    pub proxy_names: NameTable<'a>,
    /// Server names (`svname` of server rows).
    pub server_names: NameTable<'a>,
}

impl<'a> StatRows<'a> {
    pub fn new(wanted: Wanted<'_>) -> StatRows<'a> {
        StatRows {
            frontends: Rows::with_metrics(wanted.frontend.len()),
            backends: Rows::with_metrics(wanted.backend.len()),
            servers: Rows::with_metrics(wanted.server.len()),
            proxy_names: NameTable::default(),
            server_names: NameTable::default(),
        }
    }

    /// Makes room for about `lines` more rows (most rows are servers), so that columns do not
    /// grow by copying.
    fn reserve_for(&mut self, lines: usize) {
        self.servers.reserve(lines);
        self.servers.servers.reserve(lines);
        self.frontends.reserve(lines / 8);
        self.backends.reserve(lines / 8);
    }
}

/// Which rows a line is; listeners and anything else are not aggregated.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum RowKind {
    Frontend,
    Backend,
    Server,
    Other,
}

/// HAProxy's `type` of a server row.
const TYPE_SERVER: f64 = 2.0;

/// A file's header: its column names and where the columns spoolmon needs are.
struct Header<'a> {
    names: Vec<&'a str>,
    svname: usize,
    kind: usize,
}

impl<'a> Header<'a> {
    fn parse(file: &str, line: &'a str) -> Result<Header<'a>, HaproxySnapshotError> {
        let Some(rest) = line.strip_prefix("# pxname,") else {
            return Err(HaproxySnapshotError::Garbage {
                file: file.to_owned(),
                reason: "does not start with the `# pxname,` header of `show stat`".into(),
            });
        };
        let mut names = vec!["pxname"];
        names.extend(rest.split(','));
        let position = |column: &'static str| {
            names
                .iter()
                .position(|n| *n == column)
                .ok_or_else(|| HaproxySnapshotError::MissingColumn {
                    file: file.to_owned(),
                    column,
                })
        };
        let (svname, kind) = (position("svname")?, position("type")?);
        Ok(Header { names, svname, kind })
    }

    /// Where each of `specs` is in this file, `None` for a column this HAProxy lacks.
    fn positions(&self, specs: &[MetricSpec]) -> Vec<Option<usize>> {
        specs
            .iter()
            .map(|(name, _)| self.names.iter().position(|n| n == name))
            .collect()
    }
}

/// The column positions of each kind's wanted metrics in one file.
struct Positions {
    frontend: Vec<Option<usize>>,
    backend: Vec<Option<usize>>,
    server: Vec<Option<usize>>,
}

impl Positions {
    /// How many leading fields hold every column spoolmon reads.
    fn fields_needed(&self, header: &Header<'_>) -> usize {
        let metrics = self.frontend.iter().chain(&self.backend).chain(&self.server).flatten();
        1 + metrics
            .chain([&header.svname, &header.kind])
            .max()
            .copied()
            .unwrap_or(0)
    }
}

/// One file being parsed, for error messages.
struct Source<'f, 'a> {
    file: &'f str,
    header: Header<'a>,
    positions: Positions,
    /// Fields split off each row; the rest are only counted.
    needed: usize,
}

/// Parses the `show stat` text of `file` and appends its wanted rows to `rows`.
pub fn parse_stat<'a>(
    file: &str,
    text: &'a str,
    wanted: Wanted<'_>,
    exclusions: &Exclusions,
    rows: &mut StatRows<'a>,
) -> Result<(), HaproxySnapshotError> {
    let mut lines = Lines::new(text);
    let header = Header::parse(file, lines.next().unwrap_or_default())?;
    if !text.ends_with("\n\n") {
        return Err(HaproxySnapshotError::Truncated { file: file.to_owned() });
    }
    if text.len() > u32::MAX as usize {
        // Never met: snapshot files are read only up to 64 MiB (snapshot::MAX_FILE).
        return Err(HaproxySnapshotError::Garbage {
            file: file.to_owned(),
            reason: "larger than 4 GiB".into(),
        });
    }
    let positions = Positions {
        frontend: header.positions(wanted.frontend),
        backend: header.positions(wanted.backend),
        server: header.positions(wanted.server),
    };
    let needed = positions.fields_needed(&header);
    let source = Source {
        file,
        header,
        positions,
        needed,
    };
    // Rows are a byte or two per field: mostly small numbers and empty cells.
    rows.reserve_for(text.len() / (2 * source.header.names.len()));
    let mut fields = Fields::with_capacity(source.header.names.len());
    let mut data_rows = 0;
    for (index, line) in lines.by_ref().enumerate() {
        if line.is_empty() {
            break;
        }
        source.parse_row(index + 2, line, &mut fields, exclusions, rows)?;
        data_rows += 1;
    }
    if lines.any(|line| !line.is_empty()) {
        return Err(HaproxySnapshotError::Garbage {
            file: file.to_owned(),
            reason: "text after the empty line that ends the answer".into(),
        });
    }
    if data_rows == 0 {
        return Err(HaproxySnapshotError::HeaderOnly { file: file.to_owned() });
    }
    Ok(())
}

/// The lines of a text, as `str::split('\n')` yields them (an empty last piece after a final
/// newline included), found with the `memchr` crate's vectorised search: `split('\n')` cost
/// as much as a tenth of parsing (perf, reference snapshot).
struct Lines<'a> {
    text: &'a str,
    newlines: memchr::Memchr<'a>,
    start: usize,
    done: bool,
}

impl<'a> Lines<'a> {
    fn new(text: &'a str) -> Lines<'a> {
        Lines {
            text,
            newlines: memchr::memchr_iter(b'\n', text.as_bytes()),
            start: 0,
            done: false,
        }
    }
}

impl<'a> Iterator for Lines<'a> {
    type Item = &'a str;

    fn next(&mut self) -> Option<&'a str> {
        if self.done {
            return None;
        }
        let start = self.start;
        match self.newlines.next() {
            Some(end) => {
                self.start = end + 1;
                Some(&self.text[start..end])
            }
            None => {
                self.done = true;
                Some(&self.text[start..])
            }
        }
    }
}

/// The fields of one line: each a byte range of the line (quotes removed). Ranges rather than
/// `&str`s: pushing a `&str` per field checked both ends for a UTF-8 boundary, and most fields
/// are only ever read as bytes (numbers); names are sliced as text when used.
struct Fields<'a> {
    line: &'a str,
    bounds: Vec<(u32, u32)>,
}

impl<'a> Fields<'a> {
    fn with_capacity(capacity: usize) -> Fields<'a> {
        Fields {
            line: "",
            bounds: Vec::with_capacity(capacity),
        }
    }

    fn bytes(&self, index: usize) -> &'a [u8] {
        let (start, end) = self.bounds[index];
        &self.line.as_bytes()[start as usize..end as usize]
    }

    /// Field `index` as text. Fields end at commas, quotes or the line's ends, all ASCII, so
    /// they start and end on character boundaries.
    fn text(&self, index: usize) -> &'a str {
        let (start, end) = self.bounds[index];
        &self.line[start as usize..end as usize]
    }

    #[cfg(test)]
    fn texts(&self) -> Vec<&'a str> {
        (0..self.bounds.len()).map(|i| self.text(i)).collect()
    }
}

impl<'a> Source<'_, 'a> {
    fn parse_row(
        &self,
        number: usize,
        line: &'a str,
        fields: &mut Fields<'a>,
        exclusions: &Exclusions,
        rows: &mut StatRows<'a>,
    ) -> Result<(), HaproxySnapshotError> {
        let found = split_fields(line, self.needed, fields).map_err(|reason| HaproxySnapshotError::Garbage {
            file: self.file.to_owned(),
            reason: format!("line {number}: {reason}"),
        })?;
        if found != self.header.names.len() {
            return Err(HaproxySnapshotError::MismatchedColumns {
                file: self.file.to_owned(),
                line: number,
                expected: self.header.names.len(),
                found,
            });
        }
        let proxy = fields.text(0);
        let (positions, kind_rows) = match self.row_kind(number, fields)? {
            RowKind::Frontend if !exclusions.frontend(proxy) => (&self.positions.frontend, &mut rows.frontends),
            RowKind::Backend if !exclusions.backend(proxy) => (&self.positions.backend, &mut rows.backends),
            RowKind::Server if !exclusions.backend(proxy) => {
                let server = rows.server_names.id(fields.text(self.header.svname));
                rows.servers.servers.push(server);
                (&self.positions.server, &mut rows.servers)
            }
            _ => return Ok(()),
        };
        kind_rows.proxies.push(rows.proxy_names.id(proxy));
        self.push_values(number, fields, positions, kind_rows)
    }

    fn row_kind(&self, number: usize, fields: &Fields<'_>) -> Result<RowKind, HaproxySnapshotError> {
        match fields.bytes(self.header.svname) {
            b"FRONTEND" => Ok(RowKind::Frontend),
            b"BACKEND" => Ok(RowKind::Backend),
            _ if self.number(number, fields, self.header.kind)? == TYPE_SERVER => Ok(RowKind::Server),
            _ => Ok(RowKind::Other),
        }
    }

    /// Appends one row's wanted values (0 for a column this file lacks).
    fn push_values(
        &self,
        number: usize,
        fields: &Fields<'_>,
        positions: &[Option<usize>],
        rows: &mut Rows,
    ) -> Result<(), HaproxySnapshotError> {
        for (column, position) in rows.columns.iter_mut().zip(positions) {
            let value = match position {
                Some(at) => cell_value(fields.bytes(*at)).ok_or_else(|| self.not_a_number(number, fields, *at))?,
                None => 0.0,
            };
            column.push(value);
        }
        Ok(())
    }

    /// The number in field `at`; an empty cell is 0.
    fn number(&self, number: usize, fields: &Fields<'_>, at: usize) -> Result<f64, HaproxySnapshotError> {
        cell_value(fields.bytes(at)).ok_or_else(|| self.not_a_number(number, fields, at))
    }

    #[cold]
    fn not_a_number(&self, number: usize, fields: &Fields<'_>, at: usize) -> HaproxySnapshotError {
        HaproxySnapshotError::NotANumber {
            file: self.file.to_owned(),
            line: number,
            field: self.header.names[at].to_owned(),
            value: fields.text(at).to_owned(),
        }
    }
}

/// The number in a metric cell: an empty cell is 0 (haproxystats' `fillna(0)`).
#[inline]
fn cell_value(cell: &[u8]) -> Option<f64> {
    if cell.is_empty() {
        Some(0.0)
    } else {
        parse_number(cell)
    }
}

/// Splits a CSV line into `fields` (cleared first): at least its first `needed` fields, all of
/// them if the line has quotes. Returns how many fields the line has. A field may be quoted
/// (`"a,b"`, with `""` for a quote inside); the quotes are removed, `""` is left as is (text
/// fields are never used). `line` is at most 4 GiB ([`parse_stat`] checks).
fn split_fields<'a>(line: &'a str, needed: usize, fields: &mut Fields<'a>) -> Result<usize, &'static str> {
    fields.line = line;
    fields.bounds.clear();
    let bytes = line.as_bytes();
    if memchr::memchr(b'"', bytes).is_none() {
        return Ok(split_unquoted(bytes, needed, &mut fields.bounds));
    }
    let mut at = 0;
    loop {
        let (field, next) = if bytes.get(at) == Some(&b'"') {
            split_quoted(bytes, at + 1)?
        } else {
            match memchr::memchr(b',', &bytes[at..]) {
                Some(comma) => ((at, at + comma), Some(at + comma + 1)),
                None => ((at, bytes.len()), None),
            }
        };
        fields.bounds.push((field.0 as u32, field.1 as u32));
        match next {
            Some(next) => at = next,
            None => return Ok(fields.bounds.len()),
        }
    }
}

/// Splits off the first `needed` fields and counts the rest. Splitting is most of the parsing
/// time: finding commas eight bytes at a time (one load and a few word operations per eight
/// bytes, see [`comma_mask`]), stopping after the last column read (the 80th of 129) and
/// counting the remaining commas with a vectorised loop beat `str::split(',')` (a `memcmp`
/// call per field) by 4x, a byte loop by 2x, and `memchr_iter` (fields are a byte or two long)
/// too (perf, reference snapshot).
fn split_unquoted(bytes: &[u8], needed: usize, bounds: &mut Vec<(u32, u32)>) -> usize {
    let mut start = 0_usize;
    let mut word_at = 0_usize;
    while word_at < bytes.len() {
        let mut mask = comma_mask(word_of(bytes, word_at));
        while mask != 0 {
            let at = word_at + (mask.trailing_zeros() / 8) as usize;
            mask &= mask - 1;
            bounds.push((start as u32, at as u32));
            start = at + 1;
            if bounds.len() == needed {
                let rest = bytes[start..].iter().filter(|&&b| b == b',').count();
                return needed + rest + 1;
            }
        }
        word_at += 8;
    }
    bounds.push((start as u32, bytes.len() as u32));
    bounds.len()
}

/// The eight bytes of `bytes` at `at` as a little-endian word; past the end counts as zero
/// bytes (not commas). One unaligned load except at the end of the line.
#[inline]
fn word_of(bytes: &[u8], at: usize) -> u64 {
    match bytes.get(at..at + 8) {
        Some(word) => u64::from_le_bytes(word.try_into().expect("eight bytes")),
        None => {
            let mut word = [0_u8; 8];
            let tail = &bytes[at.min(bytes.len())..];
            word[..tail.len()].copy_from_slice(tail);
            u64::from_le_bytes(word)
        }
    }
}

/// A mask with the top bit of every comma byte of `word` set (exact: no carry crosses into
/// the next byte).
#[inline]
fn comma_mask(word: u64) -> u64 {
    const LOW_BITS: u64 = 0x7f7f_7f7f_7f7f_7f7f;
    const COMMAS: u64 = 0x2c2c_2c2c_2c2c_2c2c;
    let zero_where_comma = word ^ COMMAS;
    !(((zero_where_comma & LOW_BITS) + LOW_BITS) | zero_where_comma | LOW_BITS)
}

/// A quoted field whose opening quote is just before `from`: its range up to its closing
/// quote, and where the next field starts (`None` at the end of the line).
type FieldEnd = ((usize, usize), Option<usize>);

fn split_quoted(bytes: &[u8], from: usize) -> Result<FieldEnd, &'static str> {
    let mut at = from;
    while at < bytes.len() {
        if bytes[at] != b'"' {
            at += 1;
        } else if bytes.get(at + 1) == Some(&b'"') {
            at += 2;
        } else {
            return match bytes.get(at + 1) {
                None => Ok(((from, at), None)),
                Some(b',') => Ok(((from, at), Some(at + 2))),
                Some(_) => Err("text after a closing quote"),
            };
        }
    }
    Err("a quoted field is not closed")
}

/// Largest magnitude accepted: HAProxy's counters are 64-bit, so nothing it reports is larger,
/// and sums of such values over any number of rows stay finite (`1e308` twice was `inf`, which
/// no sink can send).
const MAX_MAGNITUDE: f64 = u64::MAX as f64;

/// A decimal number: integers (HAProxy's usual) without going through float parsing, else any
/// float of magnitude at most [`MAX_MAGNITUDE`]. `None` for anything else, `nan` and `inf`
/// included.
#[inline]
pub fn parse_number(text: &[u8]) -> Option<f64> {
    // A byte test, not `strip_prefix('-')`: that compiled to a `memcmp` call per cell, 9% of
    // HAProxy processing in a profile.
    let (negative, digits) = match text.first() {
        Some(b'-') => (true, &text[1..]),
        _ => (false, text),
    };
    if (1..=18).contains(&digits.len()) {
        let mut magnitude = 0_i64;
        for &byte in digits {
            if !byte.is_ascii_digit() {
                return parse_float(text);
            }
            magnitude = magnitude * 10 + i64::from(byte - b'0');
        }
        let value = magnitude as f64;
        return Some(if negative { -value } else { value });
    }
    parse_float(text)
}

#[cold]
fn parse_float(text: &[u8]) -> Option<f64> {
    std::str::from_utf8(text)
        .ok()?
        .parse::<f64>()
        .ok()
        .filter(|v| v.abs() <= MAX_MAGNITUDE)
}

#[cfg(test)]
mod tests {
    use super::super::catalog::Aggregation::Sum;
    use super::*;

    const SPECS: [MetricSpec; 2] = [("scur", Sum), ("stot", Sum)];
    const WANTED: Wanted = Wanted {
        frontend: &SPECS,
        backend: &SPECS,
        server: &SPECS,
    };

    fn parse(text: &str) -> Result<StatRows<'_>, HaproxySnapshotError> {
        let mut rows = StatRows::new(WANTED);
        parse_stat("p_stat", text, WANTED, &Exclusions::default(), &mut rows)?;
        Ok(rows)
    }

    #[test]
    fn rows_are_sorted_by_kind_and_columns_found_by_name() {
        let text = "# pxname,svname,stot,type,scur,\nfe,FRONTEND,5,0,1,\nbe,s1,7,2,,\nbe,BACKEND,9,1,2,\n\
                    fe,sock-1,3,3,0,\n\n";
        let rows = parse(text).unwrap();
        assert_eq!(rows.proxy_names.name(rows.frontends.proxies[0]), "fe");
        assert_eq!(rows.frontends.columns, vec![vec![1.0], vec![5.0]]);
        assert_eq!(rows.proxy_names.name(rows.servers.proxies[0]), "be");
        assert_eq!(rows.server_names.name(rows.servers.servers[0]), "s1");
        assert_eq!(rows.servers.columns, vec![vec![0.0], vec![7.0]]);
        assert_eq!(rows.backends.columns, vec![vec![2.0], vec![9.0]]);
    }

    #[test]
    fn a_metric_column_this_version_lacks_counts_as_zero() {
        let rows = parse("# pxname,svname,type,stot\nfe,FRONTEND,0,4\n\n").unwrap();
        assert_eq!(rows.frontends.columns, vec![vec![0.0], vec![4.0]]);
    }

    #[test]
    fn quoted_text_fields_may_hold_commas() {
        let rows = parse("# pxname,svname,check_desc,type,scur,stot\nbe,s,\"a, \"\"b\"\"\",2,1,2\n\n").unwrap();
        assert_eq!(rows.servers.columns, vec![vec![1.0], vec![2.0]]);
        assert!(matches!(
            parse("# pxname,svname,type\nbe,s,\"open,2\n\n"),
            Err(HaproxySnapshotError::Garbage { .. })
        ));
    }

    #[test]
    fn malformed_tables_are_typed_errors() {
        let header_only = parse("# pxname,svname,type,scur\n\n").unwrap_err();
        assert!(
            matches!(header_only, HaproxySnapshotError::HeaderOnly { .. }),
            "{header_only}"
        );
        let short = parse("# pxname,svname,type,scur\nfe,FRONTEND,0\n\n").unwrap_err();
        assert_eq!(short.to_string(), "p_stat line 2: 3 fields where the header has 4");
        let word = parse("# pxname,svname,type,scur\nfe,FRONTEND,0,many\n\n").unwrap_err();
        assert_eq!(word.to_string(), "p_stat line 2: scur is \"many\", not a number");
        let bad_type = parse("# pxname,svname,type,scur\nbe,s1,x,1\n\n").unwrap_err();
        assert!(matches!(bad_type, HaproxySnapshotError::NotANumber { ref field, .. } if field == "type"));
        let no_type = parse("# pxname,svname,scur\nfe,FRONTEND,1\n\n").unwrap_err();
        assert!(matches!(
            no_type,
            HaproxySnapshotError::MissingColumn { column: "type", .. }
        ));
        let truncated = parse("# pxname,svname,type,scur\nfe,FRONTEND,0,1\nfe2,FRONT").unwrap_err();
        assert!(
            matches!(truncated, HaproxySnapshotError::Truncated { .. }),
            "{truncated}"
        );
        let trailing = parse("# pxname,svname,type,scur\nfe,FRONTEND,0,1\n\nmore\n\n").unwrap_err();
        assert!(matches!(trailing, HaproxySnapshotError::Garbage { .. }), "{trailing}");
        let garbage = parse("<html>503</html>\n\n").unwrap_err();
        assert!(matches!(garbage, HaproxySnapshotError::Garbage { .. }), "{garbage}");
    }

    #[test]
    fn commas_are_found_in_every_position_of_a_word() {
        let line = ",a,,bcdefgh,ijklmnopq,r,\u{e9},";
        let expected: Vec<&str> = line.split(',').collect();
        let mut fields = Fields::with_capacity(0);
        assert_eq!(split_fields(line, 100, &mut fields), Ok(expected.len()));
        assert_eq!(fields.texts(), expected);
        // Every length from 0 to 40 (words whole, cut, and the last one short), commas
        // anywhere, bytes that differ from a comma by one bit or are not ASCII.
        let alphabet = [b',', b'-', b'\x01', b'\xac', b'l', b'0'];
        let mut seed = 7_u64;
        for length in 0..=40 {
            for _ in 0..20 {
                let bytes: Vec<u8> = (0..length)
                    .map(|_| {
                        seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
                        alphabet[(seed >> 33) as usize % alphabet.len()]
                    })
                    .collect();
                let expected: Vec<&[u8]> = bytes.split(|&b| b == b',').collect();
                let mut bounds = Vec::new();
                assert_eq!(split_unquoted(&bytes, usize::MAX, &mut bounds), expected.len());
                let found: Vec<&[u8]> = bounds.iter().map(|&(s, e)| &bytes[s as usize..e as usize]).collect();
                assert_eq!(found, expected, "{bytes:?}");
            }
        }
        let line = "a,b,c,d,e";
        assert_eq!(split_fields(line, 2, &mut fields), Ok(5));
        assert_eq!(fields.texts(), ["a", "b"]);
        assert_eq!(split_fields("a,,b", 9, &mut fields), Ok(3));
        assert_eq!(fields.texts(), ["a", "", "b"]);
        assert_eq!(split_fields("", 9, &mut fields), Ok(1));
        assert_eq!(fields.texts(), [""]);
    }

    #[test]
    fn quoted_fields_lose_their_quotes_and_keep_doubled_ones() {
        let mut fields = Fields::with_capacity(0);
        assert_eq!(split_fields("\"a,b\",c\"d,\"\"\"x\"\"\",\"\"", 1, &mut fields), Ok(4));
        assert_eq!(fields.texts(), ["a,b", "c\"d", "\"\"x\"\"", ""]);
        assert_eq!(split_fields("\"\u{e9}\",", 1, &mut fields), Ok(2));
        assert_eq!(fields.texts(), ["\u{e9}", ""]);
        assert!(split_fields("\"a\"b,c", 1, &mut fields).is_err());
        assert!(split_fields("x,\"open", 1, &mut fields).is_err());
    }

    #[test]
    fn lines_are_those_of_split_on_newlines() {
        for text in ["", "\n", "a", "a\n", "a\n\nb", "\n\n\n", "ab\ncd\n\n"] {
            assert_eq!(
                Lines::new(text).collect::<Vec<_>>(),
                text.split('\n').collect::<Vec<_>>(),
                "{text:?}"
            );
        }
    }

    #[test]
    fn numbers_are_integers_or_floats_within_the_64_bit_range_of_haproxy_counters() {
        let parse_number = |text: &str| parse_number(text.as_bytes());
        assert_eq!(parse_number("1234567"), Some(1_234_567.0));
        assert_eq!(parse_number("-3"), Some(-3.0));
        assert_eq!(parse_number("0.25"), Some(0.25));
        assert_eq!(parse_number("9999999999999999999"), Some(1e19));
        for bad in ["", "-", "nan", "inf", "1,2", "0x10", "12a"] {
            assert_eq!(parse_number(bad), None, "{bad:?}");
        }
        assert_eq!(super::parse_number(b"1\xff"), None);
        assert_eq!(parse_number("18446744073709551615"), Some(u64::MAX as f64));
        assert_eq!(parse_number("-18446744073709551615"), Some(-(u64::MAX as f64)));
        for beyond_64_bits in [
            "99999999999999999999",
            "1e308",
            "1.7976931348623157e308",
            "18446744073709555000",
            "-1e20",
        ] {
            assert_eq!(parse_number(beyond_64_bits), None, "{beyond_64_bits:?}");
        }
    }
}
