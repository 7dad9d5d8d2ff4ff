//! `allow-from`: Netdata's simple patterns, as its `stream.conf` takes them, with the decision
//! explained.
//!
//! A pattern is a list of words separated by spaces; each word is a glob in which `*` matches
//! any run of characters (none included), and a word starting with `!` is a negative one. The
//! subject (a peer's address) is tested against the words from left to right: the first word
//! that matches decides (allowed, or denied for a negative word), and a subject no word matches
//! is denied. So `!10.1.2.3 10.*` allows all of 10.* but 10.1.2.3, and `*` allows every peer.
//! Matching is exact, byte for byte (addresses are ASCII).
//!
//! The decision names the word that made it, so a refusal can say "address 10.1.2.3 is not
//! allowed by `!10.1.2.3` of `!10.1.2.3 10.*`" instead of Netdata's bare "not permitted".

use std::fmt;

/// Longest pattern text (bytes).
pub const MAX_PATTERN: usize = 4096;
/// Most words in one pattern.
pub const MAX_WORDS: usize = 256;

/// A parsed `allow-from` pattern.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SimplePattern {
    text: String,
    words: Vec<Word>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct Word {
    negative: bool,
    glob: String,
}

/// Why a pattern text was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PatternError {
    #[error("an allow-from pattern is longer than {MAX_PATTERN} bytes")]
    TooLong,
    #[error("an allow-from pattern has more than {MAX_WORDS} words")]
    TooManyWords,
    #[error("an allow-from pattern has no words: it would deny every peer (write `*` to allow all, `!*` to deny all)")]
    Empty,
    #[error("allow-from word {0:?} is a lone `!`: write `!` and the glob without a space between them")]
    LoneNegation(String),
    #[error("allow-from word {0:?} has a control character")]
    Control(String),
}

/// What a pattern decided for a subject, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision<'a> {
    /// A positive word matched.
    Allowed { word: &'a str },
    /// A negative word matched.
    DeniedBy { word: &'a str },
    /// No word matched.
    NoMatch,
}

impl Decision<'_> {
    pub fn allowed(&self) -> bool {
        matches!(self, Decision::Allowed { .. })
    }
}

impl SimplePattern {
    /// Parses a pattern; `*` allows everything.
    pub fn parse(text: &str) -> Result<SimplePattern, PatternError> {
        if text.len() > MAX_PATTERN {
            return Err(PatternError::TooLong);
        }
        let mut words = Vec::new();
        for word in text.split([' ', '\t']).filter(|w| !w.is_empty()) {
            if words.len() == MAX_WORDS {
                return Err(PatternError::TooManyWords);
            }
            if word.chars().any(char::is_control) {
                return Err(PatternError::Control(word.to_owned()));
            }
            let (negative, glob) = match word.strip_prefix('!') {
                Some("") => return Err(PatternError::LoneNegation(word.to_owned())),
                Some(glob) => (true, glob),
                None => (false, word),
            };
            words.push(Word {
                negative,
                glob: glob.to_owned(),
            });
        }
        if words.is_empty() {
            return Err(PatternError::Empty);
        }
        Ok(SimplePattern {
            text: words
                .iter()
                .map(|w| format!("{}{}", if w.negative { "!" } else { "" }, w.glob))
                .collect::<Vec<_>>()
                .join(" "),
            words,
        })
    }

    /// The pattern that allows every peer.
    pub fn any() -> SimplePattern {
        SimplePattern::parse("*").expect("`*` is a pattern")
    }

    /// The first word that matches `subject` decides.
    pub fn decide(&self, subject: &str) -> Decision<'_> {
        for (word, text) in self.words.iter().zip(self.text.split(' ')) {
            if glob_matches(word.glob.as_bytes(), subject.as_bytes()) {
                return if word.negative {
                    Decision::DeniedBy { word: text }
                } else {
                    Decision::Allowed { word: text }
                };
            }
        }
        Decision::NoMatch
    }
}

impl fmt::Display for SimplePattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// Whether `glob` (with `*` for any run of bytes) matches all of `text`. Linear in practice:
/// on a mismatch it only retries from the last `*`, which is enough because a later `*` can
/// absorb whatever an earlier one would have.
fn glob_matches(glob: &[u8], text: &[u8]) -> bool {
    let (mut g, mut t) = (0, 0);
    let mut retry: Option<(usize, usize)> = None;
    while t < text.len() {
        if g < glob.len() && glob[g] == b'*' {
            retry = Some((g, t));
            g += 1;
        } else if g < glob.len() && glob[g] == text[t] {
            g += 1;
            t += 1;
        } else if let Some((star, at)) = retry {
            g = star + 1;
            t = at + 1;
            retry = Some((star, at + 1));
        } else {
            return false;
        }
    }
    glob[g..].iter().all(|&b| b == b'*')
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn decide(pattern: &str, subject: &str) -> Decision<'static> {
        let p = Box::leak(Box::new(SimplePattern::parse(pattern).unwrap()));
        p.decide(subject)
    }

    #[test]
    fn netdata_examples() {
        assert!(decide("*", "192.0.2.1").allowed());
        assert_eq!(
            decide("!10.1.2.3 10.*", "10.1.2.3"),
            Decision::DeniedBy { word: "!10.1.2.3" }
        );
        assert_eq!(decide("!10.1.2.3 10.*", "10.1.2.4"), Decision::Allowed { word: "10.*" });
        assert_eq!(decide("!10.1.2.3 10.*", "11.0.0.1"), Decision::NoMatch);
        // First match decides: the order matters.
        assert!(decide("10.* !10.1.2.3", "10.1.2.3").allowed());
        assert!(decide("127.0.0.* ::1", "::1").allowed());
        assert!(decide("*.2 *.3", "127.0.0.3").allowed());
        assert!(!decide("127.0.0.2", "127.0.0.20").allowed());
        assert!(decide("127.*.2", "127.0.0.2").allowed());
        assert!(decide("fe80:*", "fe80::1").allowed());
    }

    #[test]
    fn bad_patterns_are_refused_with_advice() {
        assert_eq!(SimplePattern::parse("   "), Err(PatternError::Empty));
        assert_eq!(
            SimplePattern::parse("10.* ! 11.*"),
            Err(PatternError::LoneNegation("!".into()))
        );
        assert!(matches!(SimplePattern::parse("a\u{7}b"), Err(PatternError::Control(_))));
        assert_eq!(SimplePattern::parse(&"a ".repeat(300)), Err(PatternError::TooManyWords));
        assert_eq!(SimplePattern::parse(&"*".repeat(5000)), Err(PatternError::TooLong));
        assert!(PatternError::Empty.to_string().contains("`*` to allow all"));
    }

    #[test]
    fn display_is_the_normalised_pattern() {
        let p = SimplePattern::parse("  !10.1.2.3\t 10.*  ").unwrap();
        assert_eq!(p.to_string(), "!10.1.2.3 10.*");
        assert_eq!(p.decide("10.1.2.3"), Decision::DeniedBy { word: "!10.1.2.3" });
    }

    #[test]
    fn many_stars_against_a_long_subject_stays_fast_enough_to_finish() {
        let glob = "*a".repeat(100) + "b";
        let text = "a".repeat(4000);
        assert!(!glob_matches(glob.as_bytes(), text.as_bytes()));
    }

    /// A reference matcher: the same glob as a regular expression.
    fn by_regex(glob: &str, text: &str) -> bool {
        let re = format!(
            "^{}$",
            glob.split('*').map(regex::escape).collect::<Vec<_>>().join(".*")
        );
        regex::Regex::new(&re).unwrap().is_match(text)
    }

    proptest! {
        #[test]
        fn the_glob_agrees_with_a_regular_expression(glob in "[ab.*]{0,8}", text in "[ab.]{0,10}") {
            prop_assert_eq!(glob_matches(glob.as_bytes(), text.as_bytes()), by_regex(&glob, &text));
        }
    }
}
