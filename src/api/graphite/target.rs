//! Graphite target expressions: `sumSeries(ping.dc1.*.median)`, `alias(ping.a.b.loss, "b")`,
//! `constantLine(100)`: function calls, series path expressions (with Graphite's globs `*`, `?`,
//! `[...]`, `{a,b}`), numbers, quoted strings and booleans. Bounded: an expression longer than
//! [`MAX_TARGET_BYTES`] or nested deeper than [`MAX_DEPTH`] is refused, not parsed.

pub const MAX_TARGET_BYTES: usize = 4096;
pub const MAX_DEPTH: usize = 16;

#[derive(Clone, Debug, PartialEq)]
pub enum Expr {
    Path(String),
    Call(String, Vec<Expr>),
    /// The number and whether it was written as an integer.
    Number(f64, bool),
    Str(String),
    Bool(bool),
}

/// Why a target is not an expression (answered 400).
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[error("target {target:?}: {reason} (at byte {at})")]
pub struct ParseError {
    pub target: String,
    pub reason: String,
    pub at: usize,
}

/// Parses one whole target.
pub fn parse(text: &str) -> Result<Expr, ParseError> {
    let fail = |reason: &str, at: usize| ParseError {
        target: crate::orders::book::printable(&text.chars().take(200).collect::<String>()),
        reason: reason.into(),
        at,
    };
    if text.len() > MAX_TARGET_BYTES {
        return Err(fail(&format!("longer than {MAX_TARGET_BYTES} bytes"), MAX_TARGET_BYTES));
    }
    let mut parser = Parser {
        bytes: text.as_bytes(),
        at: 0,
    };
    let expr = parser.expr(0).map_err(|(reason, at)| fail(&reason, at))?;
    parser.skip_spaces();
    if parser.at != parser.bytes.len() {
        return Err(fail("unexpected text after the expression", parser.at));
    }
    Ok(expr)
}

/// The first series path in `expr` (Graphite's `aliasByNode` on an aggregate's name uses it).
pub fn first_path(expr: &Expr) -> Option<&str> {
    match expr {
        Expr::Path(path) => Some(path),
        Expr::Call(_, args) => args.iter().find_map(first_path),
        _ => None,
    }
}

struct Parser<'a> {
    bytes: &'a [u8],
    at: usize,
}

type Failure = (String, usize);

fn path_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"_-.*?[]{}@:#%~^!$".contains(&b)
}

impl Parser<'_> {
    fn skip_spaces(&mut self) {
        while self.bytes.get(self.at).is_some_and(|b| *b == b' ') {
            self.at += 1;
        }
    }

    fn expr(&mut self, depth: usize) -> Result<Expr, Failure> {
        if depth > MAX_DEPTH {
            return Err((format!("nested deeper than {MAX_DEPTH} calls"), self.at));
        }
        self.skip_spaces();
        let start = self.at;
        match self.bytes.get(self.at) {
            None => Err(("an expression is missing".into(), self.at)),
            Some(b'"' | b'\'') => self.string(),
            Some(b) if path_byte(*b) => {
                let word = self.word();
                self.skip_spaces();
                if self.bytes.get(self.at) == Some(&b'(') {
                    if !word.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') || word.is_empty() {
                        return Err((format!("{word:?} is not a function name"), start));
                    }
                    self.at += 1;
                    let args = self.arguments(depth)?;
                    return Ok(Expr::Call(word, args));
                }
                Ok(scalar_or_path(word))
            }
            Some(_) => Err(("unexpected character".into(), self.at)),
        }
    }

    /// A path or name: path characters, with commas inside `{...}` kept.
    fn word(&mut self) -> String {
        let start = self.at;
        let mut braces = 0usize;
        while let Some(&b) = self.bytes.get(self.at) {
            match b {
                b'{' => braces += 1,
                b'}' => braces = braces.saturating_sub(1),
                b',' if braces > 0 => {}
                b if path_byte(b) => {}
                _ => break,
            }
            self.at += 1;
        }
        String::from_utf8_lossy(&self.bytes[start..self.at]).into_owned()
    }

    fn arguments(&mut self, depth: usize) -> Result<Vec<Expr>, Failure> {
        let mut args = Vec::new();
        self.skip_spaces();
        if self.bytes.get(self.at) == Some(&b')') {
            self.at += 1;
            return Ok(args);
        }
        loop {
            args.push(self.expr(depth + 1)?);
            self.skip_spaces();
            match self.bytes.get(self.at) {
                Some(b',') => self.at += 1,
                Some(b')') => {
                    self.at += 1;
                    return Ok(args);
                }
                Some(_) => return Err(("expected , or )".into(), self.at)),
                None => return Err(("a ) is missing".into(), self.at)),
            }
        }
    }

    fn string(&mut self) -> Result<Expr, Failure> {
        let quote = self.bytes[self.at];
        let start = self.at + 1;
        match self.bytes[start..].iter().position(|b| *b == quote) {
            Some(len) => {
                self.at = start + len + 1;
                Ok(Expr::Str(
                    String::from_utf8_lossy(&self.bytes[start..start + len]).into_owned(),
                ))
            }
            None => Err(("a string is not closed".into(), self.at)),
        }
    }
}

/// A bare word: a number, a boolean, or a series path.
fn scalar_or_path(word: String) -> Expr {
    match word.as_str() {
        "true" => return Expr::Bool(true),
        "false" => return Expr::Bool(false),
        _ => {}
    }
    let numeric = word.bytes().enumerate().all(|(i, b)| {
        b.is_ascii_digit()
            || b == b'.'
            || b == b'e'
            || b == b'E'
            || (b == b'-' || b == b'+') && (i == 0 || matches!(word.as_bytes()[i - 1], b'e' | b'E'))
    });
    if numeric && word.bytes().any(|b| b.is_ascii_digit()) {
        if let Ok(n) = word.parse::<i64>() {
            return Expr::Number(n as f64, true);
        }
        if let Ok(x) = word.parse::<f64>() {
            return Expr::Number(x, false);
        }
    }
    Expr::Path(word)
}

/// A float as Python's `str()` writes it (Graphite names series with it: `constantLine(100)`
/// is the series `100.0`): the shortest digits that read back, with a `.0` for whole numbers,
/// in exponent form (`1e+20`, `1e-05`) below 1e-4 and from 1e16.
pub fn python_float(x: f64) -> String {
    if x.is_nan() {
        return "nan".into();
    }
    if x.is_infinite() {
        return if x > 0.0 { "inf" } else { "-inf" }.into();
    }
    let magnitude = x.abs();
    if magnitude != 0.0 && !(1e-4..1e16).contains(&magnitude) {
        let text = format!("{x:e}");
        let (mantissa, exponent) = text.split_once('e').unwrap_or((&text, "0"));
        let (sign, digits) = match exponent.strip_prefix('-') {
            Some(d) => ('-', d),
            None => ('+', exponent),
        };
        return format!("{mantissa}e{sign}{digits:0>2}");
    }
    let text = format!("{x:?}");
    if text.contains('.') || text.contains('e') {
        text
    } else {
        format!("{text}.0")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calls_paths_numbers_and_strings() {
        assert_eq!(
            parse("alias(sumSeries(ping.dc1.{a,b}.median, ping.x.*), \"both\")").unwrap(),
            Expr::Call(
                "alias".into(),
                vec![
                    Expr::Call(
                        "sumSeries".into(),
                        vec![
                            Expr::Path("ping.dc1.{a,b}.median".into()),
                            Expr::Path("ping.x.*".into())
                        ]
                    ),
                    Expr::Str("both".into())
                ]
            )
        );
        assert_eq!(
            parse("constantLine(100)").unwrap(),
            Expr::Call("constantLine".into(), vec![Expr::Number(100.0, true)])
        );
        assert_eq!(
            parse("constantLine(-1.5e3)").unwrap(),
            Expr::Call("constantLine".into(), vec![Expr::Number(-1500.0, false)])
        );
        assert_eq!(
            parse("aliasByNode(a.b,1,-1)").unwrap(),
            Expr::Call(
                "aliasByNode".into(),
                vec![
                    Expr::Path("a.b".into()),
                    Expr::Number(1.0, true),
                    Expr::Number(-1.0, true)
                ]
            )
        );
        assert_eq!(
            first_path(&parse("sumSeries(averageSeries(a.*.c),d)").unwrap()),
            Some("a.*.c")
        );
    }

    #[test]
    fn hostile_targets_are_refused_with_where() {
        for (text, reason) in [
            ("sumSeries(a.b", "a ) is missing"),
            ("sumSeries(a.b))", "unexpected text"),
            ("alias(a, \"x)", "not closed"),
            ("a.b;rm", "unexpected text"),
            ("a.b(c)", "not a function name"),
            ("", "missing"),
            ("f(,)", "unexpected character"),
        ] {
            let e = parse(text).unwrap_err();
            assert!(e.to_string().contains(reason), "{text}: {e}");
        }
        let deep = format!("{}a{}", "f(".repeat(40), ")".repeat(40));
        assert!(parse(&deep).unwrap_err().reason.contains("nested deeper"));
        assert!(parse(&"a".repeat(MAX_TARGET_BYTES + 1))
            .unwrap_err()
            .reason
            .contains("longer than"));
    }

    #[test]
    fn floats_print_as_python_does() {
        for (x, text) in [
            (100.0, "100.0"),
            (1.5, "1.5"),
            (0.0001, "0.0001"),
            (0.00001, "1e-05"),
            (1e16, "1e+16"),
            (123456789012345.0, "123456789012345.0"),
            (-2.5e-7, "-2.5e-07"),
            (0.0, "0.0"),
        ] {
            assert_eq!(python_float(x), text);
        }
    }
}
