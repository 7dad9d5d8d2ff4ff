//! Reading an exec order's command output: which stdout lines are answered pings
//! ([`parse_ping_line`]), where each answer goes in the run's result ([`PingAnswers`]), and the
//! bounded line splitting and stderr capture ([`ExecOutput`]) the child supervisor feeds.
//!
//! Owns nothing. Invariants: memory per command stays bounded whatever it prints (lines longer
//! than [`MAX_LINE`] bytes are dropped whole, stderr is kept up to [`STDERR_CAP`] bytes); at most
//! `pings` answers are kept, a duplicate sequence number or one outside the run is ignored.
//!
//! Called by [`ExecProbe`](super::ExecProbe) through `probe::child` (which reads the pipes).

use crate::orders::order::ExecKind;
use crate::probe::child::{Output, Stream};
use crate::probe::Rtts;

/// Longest stdout line considered; longer lines are dropped whole.
pub const MAX_LINE: usize = 4096;

/// Most stderr bytes kept per command (for the debug log).
pub const STDERR_CAP: usize = 4096;

/// Parses one output line: `Some((seq, rtt_seconds))` when it reports an answered ping.
///
/// The RTT is the decimal number after `time=`, directly followed by `ms` or ` ms` (and then not
/// by a letter). The sequence number is the integer after the first `seq=` (which also matches
/// `icmp_seq=` and `scmp_seq=`).
pub fn parse_ping_line(line: &str) -> Option<(Option<u64>, f64)> {
    let after_time = &line[line.find("time=")? + "time=".len()..];
    let number_len = after_time
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(after_time.len());
    let milliseconds: f64 = after_time[..number_len].parse().ok()?;
    let unit = after_time[number_len..]
        .strip_prefix(' ')
        .unwrap_or(&after_time[number_len..]);
    let rest = unit.strip_prefix("ms")?;
    if rest.starts_with(|c: char| c.is_ascii_alphabetic()) || !milliseconds.is_finite() {
        return None;
    }
    let seq = line.find("seq=").and_then(|at| {
        let digits = &line[at + "seq=".len()..];
        let len = digits.find(|c: char| !c.is_ascii_digit()).unwrap_or(digits.len());
        digits[..len].parse().ok()
    });
    Some((seq, milliseconds / 1000.0))
}

/// The answered pings of one command, in the order they were printed (at most `pings`).
///
/// Placement into the result ([`PingAnswers::into_rtts`]): an answer with a sequence number goes
/// to slot `seq - base`; answers without one fill the free slots in order. The base is 0 if any
/// answer has seq 0, else 1 if any has seq == `pings`, else the convention of the tool: 1 for
/// `exec` (iputils ping counts from 1), 0 for `sping`/`pping` (SCION ping counts from 0). A
/// sequence number seen twice (a duplicate reply) or outside the run is ignored.
#[derive(Debug)]
pub struct PingAnswers {
    pings: usize,
    answers: Vec<(Option<u64>, f64)>,
}

impl PingAnswers {
    pub fn new(pings: u32) -> PingAnswers {
        PingAnswers {
            pings: pings as usize,
            answers: Vec::new(),
        }
    }

    /// Records `line` if it reports an answer and there is room for it.
    pub fn add_line(&mut self, line: &str) {
        if self.answers.len() >= self.pings {
            return;
        }
        let Some((seq, rtt)) = parse_ping_line(line) else {
            return;
        };
        if seq.is_some() && self.answers.iter().any(|(seen, _)| *seen == seq) {
            return;
        }
        self.answers.push((seq, rtt));
    }

    /// How many answers were recorded (at most `pings`).
    pub fn count(&self) -> usize {
        self.answers.len()
    }

    /// Places the answers into `pings` slots (see the type's documentation).
    pub fn into_rtts(self, kind: ExecKind) -> Rtts {
        let seqs = || self.answers.iter().filter_map(|(seq, _)| *seq);
        let base = if seqs().any(|seq| seq == 0) {
            0
        } else if seqs().any(|seq| seq == self.pings as u64) || kind == ExecKind::Exec {
            1
        } else {
            0
        };
        let mut rtts: Rtts = vec![None; self.pings];
        for (seq, rtt) in &self.answers {
            let Some(seq) = seq else { continue };
            let slot = seq.checked_sub(base).and_then(|s| usize::try_from(s).ok());
            match slot.and_then(|slot| rtts.get_mut(slot)) {
                Some(entry @ None) => *entry = Some(*rtt),
                _ => tracing::debug!(seq, base, "exec probe: answer outside the run ignored"),
            }
        }
        let mut free = (0..self.pings).filter(|&slot| rtts[slot].is_none()).collect::<Vec<_>>();
        free.reverse();
        for (_, rtt) in self.answers.iter().filter(|(seq, _)| seq.is_none()) {
            if let Some(slot) = free.pop() {
                rtts[slot] = Some(*rtt);
            }
        }
        rtts
    }
}

/// Splits a byte stream into lines of at most [`MAX_LINE`] bytes; longer lines are dropped whole.
#[derive(Debug, Default)]
pub struct LineSplitter {
    partial: Vec<u8>,
    overlong: bool,
}

impl LineSplitter {
    /// Feeds `bytes`, calling `on_line` for every complete line (without its newline).
    pub fn push(&mut self, mut bytes: &[u8], on_line: &mut impl FnMut(&str)) {
        while let Some(newline) = bytes.iter().position(|&b| b == b'\n') {
            self.append(&bytes[..newline]);
            if !self.overlong {
                on_line(&String::from_utf8_lossy(&self.partial));
            }
            self.partial.clear();
            self.overlong = false;
            bytes = &bytes[newline + 1..];
        }
        self.append(bytes);
    }

    /// Ends the stream: a last line without newline still counts.
    pub fn finish(&mut self, on_line: &mut impl FnMut(&str)) {
        if !self.partial.is_empty() && !self.overlong {
            on_line(&String::from_utf8_lossy(&self.partial));
        }
        self.partial.clear();
        self.overlong = false;
    }

    /// Bytes currently held for an unfinished line (never more than [`MAX_LINE`]).
    pub fn buffered(&self) -> usize {
        self.partial.len()
    }

    fn append(&mut self, bytes: &[u8]) {
        if self.overlong {
            return;
        }
        if self.partial.len() + bytes.len() > MAX_LINE {
            self.partial.clear();
            self.overlong = true;
            return;
        }
        self.partial.extend_from_slice(bytes);
    }
}

/// What has been read from one command: its answers, whether it printed anything on stdout, and
/// the head of its stderr.
#[derive(Debug)]
pub struct ExecOutput {
    lines: LineSplitter,
    pub(super) answers: PingAnswers,
    /// A non-blank stdout line (of at most [`MAX_LINE`] bytes) was read.
    pub(super) printed: bool,
    pub(super) stderr_head: Vec<u8>,
}

impl ExecOutput {
    pub fn new(pings: u32) -> ExecOutput {
        ExecOutput {
            lines: LineSplitter::default(),
            answers: PingAnswers::new(pings),
            printed: false,
            stderr_head: Vec::new(),
        }
    }

    fn line(answers: &mut PingAnswers, printed: &mut bool, line: &str) {
        *printed |= !line.trim().is_empty();
        answers.add_line(line);
    }
}

impl Output for ExecOutput {
    fn consume(&mut self, stream: Stream, bytes: &[u8]) {
        match stream {
            Stream::Stdout => {
                let (answers, printed) = (&mut self.answers, &mut self.printed);
                self.lines
                    .push(bytes, &mut |line| ExecOutput::line(answers, printed, line));
            }
            Stream::Stderr => {
                let room = STDERR_CAP.saturating_sub(self.stderr_head.len());
                self.stderr_head.extend_from_slice(&bytes[..bytes.len().min(room)]);
            }
        }
    }

    fn end(&mut self, stream: Stream) {
        if stream == Stream::Stdout {
            let (answers, printed) = (&mut self.answers, &mut self.printed);
            self.lines.finish(&mut |line| ExecOutput::line(answers, printed, line));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_splitter_never_holds_more_than_max_line() {
        let mut splitter = LineSplitter::default();
        let mut lines = Vec::new();
        let chunk = vec![b'x'; 1 << 20];
        for _ in 0..10 {
            splitter.push(&chunk, &mut |line| lines.push(line.to_owned()));
            assert!(splitter.buffered() <= MAX_LINE);
        }
        splitter.push(b"\nshort\n", &mut |line| lines.push(line.to_owned()));
        assert_eq!(lines, vec!["short".to_owned()]);
    }

    #[test]
    fn ping_line_parser_accepts_only_millisecond_times() {
        assert_eq!(
            parse_ping_line("icmp_seq=7 ttl=64 time=1.5 ms"),
            Some((Some(7), 1.5 / 1000.0))
        );
        assert_eq!(parse_ping_line("time=2ms"), Some((None, 2.0 / 1000.0)));
        assert_eq!(
            parse_ping_line("seq=99999999999999999999999 time=1 ms"),
            Some((None, 1.0 / 1000.0))
        );
        for hostile in [
            "time=",
            "time=ms",
            "time=1.2.3 ms",
            "time=1 s",
            "time=1 msec",
            "time<1ms",
            "tim=1 ms",
            "time=\u{663} ms",
        ] {
            assert_eq!(parse_ping_line(hostile), None, "{hostile}");
        }
    }
}
