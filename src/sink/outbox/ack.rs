//! The acknowledgement file: how far delivery got, and the counters that must survive a restart.

use super::format::SEGMENT_HEADER_LEN;
use crate::spool::beneath::Dir;
use std::io;

/// Name of the acknowledgement file in an outbox directory.
pub const ACK_FILE: &str = "ack";
/// The file each new acknowledgement is written into before it is exchanged with `ack`: it
/// then holds the previous one (see [`Ack::write`]).
pub const ACK_SPARE: &str = ".ack.spare";
const FIRST_LINE: &str = "spoolmon-outbox-ack 1";
/// An acknowledgement file is about 250 bytes; anything larger is not one.
const MAX_ACK_BYTES: u64 = 4096;

/// The first undelivered byte: the record at `offset` in segment `segment`, of which the first
/// `skip_bytes` payload bytes (`skip_lines` whole lines) are already delivered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Position {
    pub segment: u64,
    pub offset: u64,
    pub skip_bytes: u64,
    pub skip_lines: u64,
}

impl Position {
    /// The first record of segment `segment`.
    pub fn start_of(segment: u64) -> Position {
        Position {
            segment,
            offset: SEGMENT_HEADER_LEN,
            skip_bytes: 0,
            skip_lines: 0,
        }
    }
}

/// Lifetime counters of an outbox (lines and records that left it, one way or another).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    pub delivered_lines: u64,
    pub rejected_lines: u64,
    pub dropped_records: u64,
    pub dropped_lines: u64,
    pub dropped_bytes: u64,
}

/// The content of the acknowledgement file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ack {
    pub position: Position,
    pub counters: Counters,
}

/// What reading the acknowledgement file found.
#[derive(Debug, PartialEq, Eq)]
pub enum AckRead {
    Found(Ack),
    Missing,
    /// The file exists but is not an acknowledgement file; the reason says what is wrong.
    Garbage(String),
}

impl Ack {
    /// Nothing delivered, counters at zero: delivery starts with the oldest segment.
    pub fn from_oldest() -> Ack {
        Ack {
            position: Position::start_of(0),
            counters: Counters::default(),
        }
    }

    pub fn encode(&self) -> String {
        let fields = self.fields();
        let mut text = format!("{FIRST_LINE}\n");
        for (key, value) in fields {
            text.push_str(&format!("{key} {value}\n"));
        }
        text
    }

    pub fn decode(text: &str) -> Result<Ack, String> {
        // Every line ends in a newline: a file cut inside its last number is not a smaller one.
        if !text.ends_with('\n') {
            return Err("the last line does not end in a newline (cut short?)".to_owned());
        }
        let mut lines = text.lines();
        if lines.next() != Some(FIRST_LINE) {
            return Err(format!("first line is not {FIRST_LINE:?}"));
        }
        let mut ack = Ack::from_oldest();
        let mut seen = std::collections::HashSet::new();
        for line in lines {
            let (key, value) = line
                .split_once(' ')
                .ok_or_else(|| format!("line {line:?} is not `key value`"))?;
            let value: u64 = value.parse().map_err(|_| format!("{key}: {value:?} is not a number"))?;
            *ack.field_mut(key).ok_or_else(|| format!("unknown key {key:?}"))? = value;
            if !seen.insert(key) {
                return Err(format!("key {key:?} appears twice"));
            }
        }
        if let Some((missing, _)) = ack.fields().into_iter().find(|(key, _)| !seen.contains(key)) {
            return Err(format!("key {missing:?} is missing"));
        }
        Ok(ack)
    }

    /// Reads `<dir>/ack` without blocking and without following a link: a FIFO, device,
    /// symlink or directory in its place, or a file larger than an acknowledgement can be, is
    /// [`AckRead::Garbage`] with the reason (never opened for reading, never waited on).
    ///
    /// Another process (`spoolmon outbox`, `status`, a check) can open `ack` just before the
    /// daemon exchanges it with the spare, and read it while the next acknowledgement is being
    /// written into that same file. So a read counts only if `ack` still names the file read
    /// ([`Dir::read_limited_current`]), and is tried again otherwise (a few times; then the
    /// last read is taken as it is, which a reader of a daemon writing thousands of
    /// acknowledgements a second could meet).
    pub fn read(dir: &Dir) -> io::Result<AckRead> {
        for _ in 0..8 {
            match dir.read_limited_current(ACK_FILE, MAX_ACK_BYTES) {
                Ok(Some(bytes)) => return Ok(Ack::parse(&bytes)),
                Ok(None) => continue,
                Err(e) => return Ack::read_failed(e),
            }
        }
        match dir.read_limited(ACK_FILE, MAX_ACK_BYTES) {
            Ok(bytes) => Ok(Ack::parse(&bytes)),
            Err(e) => Ack::read_failed(e),
        }
    }

    fn parse(bytes: &[u8]) -> AckRead {
        match std::str::from_utf8(bytes) {
            Ok(text) => Ack::decode(text).map_or_else(AckRead::Garbage, AckRead::Found),
            Err(_) => AckRead::Garbage("not UTF-8 text".to_owned()),
        }
    }

    fn read_failed(e: io::Error) -> io::Result<AckRead> {
        match e.kind() {
            io::ErrorKind::NotFound => Ok(AckRead::Missing),
            io::ErrorKind::InvalidData => Ok(AckRead::Garbage(e.to_string())),
            _ => Err(e),
        }
    }

    /// Replaces `<dir>/ack` durably: the spare `.ack.spare` written and fsynced, exchanged with
    /// `ack` (see [`Dir::replace_via_spare`]; whatever entry had the name is replaced, never
    /// written through), fsync of `dir`.
    pub fn write(&self, dir: &Dir) -> io::Result<()> {
        dir.replace_via_spare(ACK_FILE, ACK_SPARE, self.encode().as_bytes())?;
        dir.sync()
    }

    fn fields(&self) -> [(&'static str, u64); 9] {
        let (p, c) = (&self.position, &self.counters);
        [
            ("segment", p.segment),
            ("offset", p.offset),
            ("skip_bytes", p.skip_bytes),
            ("skip_lines", p.skip_lines),
            ("delivered_lines", c.delivered_lines),
            ("rejected_lines", c.rejected_lines),
            ("dropped_records", c.dropped_records),
            ("dropped_lines", c.dropped_lines),
            ("dropped_bytes", c.dropped_bytes),
        ]
    }

    fn field_mut(&mut self, key: &str) -> Option<&mut u64> {
        let (p, c) = (&mut self.position, &mut self.counters);
        Some(match key {
            "segment" => &mut p.segment,
            "offset" => &mut p.offset,
            "skip_bytes" => &mut p.skip_bytes,
            "skip_lines" => &mut p.skip_lines,
            "delivered_lines" => &mut c.delivered_lines,
            "rejected_lines" => &mut c.rejected_lines,
            "dropped_records" => &mut c.dropped_records,
            "dropped_lines" => &mut c.dropped_lines,
            "dropped_bytes" => &mut c.dropped_bytes,
            _ => return None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Ack {
        Ack {
            position: Position {
                segment: 7,
                offset: 1234,
                skip_bytes: 60,
                skip_lines: 1,
            },
            counters: Counters {
                delivered_lines: 1,
                rejected_lines: 2,
                dropped_records: 3,
                dropped_lines: 4,
                dropped_bytes: 5,
            },
        }
    }

    #[test]
    fn ack_survives_write_and_read() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = Dir::open(tmp.path()).unwrap();
        assert_eq!(Ack::read(&dir).unwrap(), AckRead::Missing);
        sample().write(&dir).unwrap();
        assert_eq!(Ack::read(&dir).unwrap(), AckRead::Found(sample()));
    }

    #[test]
    fn a_fifo_or_a_link_in_place_of_the_ack_is_garbage_at_once_and_replaced_by_the_next_write() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = Dir::open(tmp.path()).unwrap();
        nix::unistd::mkfifo(
            &tmp.path().join(ACK_FILE),
            nix::sys::stat::Mode::from_bits_truncate(0o600),
        )
        .unwrap();
        match Ack::read(&dir).unwrap() {
            AckRead::Garbage(why) => assert!(why.contains("not a regular file"), "{why}"),
            other => panic!("a FIFO read as {other:?}"),
        }
        sample().write(&dir).unwrap();
        assert_eq!(Ack::read(&dir).unwrap(), AckRead::Found(sample()));
        let victim = tmp.path().join("victim");
        std::fs::write(&victim, sample().encode()).unwrap();
        std::fs::remove_file(tmp.path().join(ACK_FILE)).unwrap();
        std::os::unix::fs::symlink(&victim, tmp.path().join(ACK_FILE)).unwrap();
        assert!(
            matches!(Ack::read(&dir).unwrap(), AckRead::Garbage(_)),
            "a link is not followed"
        );
    }

    #[test]
    fn truncated_duplicated_or_foreign_ack_is_garbage() {
        let text = sample().encode();
        let cut = &text[..text.len() - 20];
        let cut_in_the_last_number = &text[..text.len() - 1];
        let doubled = format!("{text}segment 1\n");
        for bad in [
            cut,
            cut_in_the_last_number,
            doubled.as_str(),
            "",
            "hello\n",
            &text.replace("offset 1234", "offset -1"),
        ] {
            assert!(Ack::decode(bad).is_err(), "{bad:?}");
        }
    }
}
