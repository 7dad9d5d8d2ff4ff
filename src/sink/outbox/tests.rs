//! Outbox behaviour on real files in temporary directories.

use super::ack::{Ack, AckRead, ACK_FILE};
use super::format::list_segments;
use super::*;
use std::fs;
use std::io::Write;
use std::sync::{Arc, Mutex};

/// `n` Graphite-like lines `<prefix>.<i> <i> 1700000000`, and their count.
fn lines(prefix: &str, n: u32) -> (Vec<u8>, u32) {
    let mut out = Vec::new();
    for i in 0..n {
        writeln!(out, "{prefix}.{i} {i} 1700000000").unwrap();
    }
    (out, n)
}

/// An outbox that writes every acknowledgement at once (most tests are about positions; the
/// cadence of [`OutboxLimits::ack_bytes`] has tests of its own).
fn open(dir: &Path) -> Arc<Outbox> {
    let limits = OutboxLimits {
        ack_bytes: 0,
        ..OutboxLimits::default()
    };
    Arc::new(Outbox::open(dir, limits).unwrap())
}

fn append(outbox: &Outbox, prefix: &str, n: u32) -> Vec<u8> {
    let (payload, count) = lines(prefix, n);
    outbox.append(&payload, count).unwrap();
    payload
}

/// Reads and acknowledges everything there is, in batches of at most `max_payload` bytes.
fn drain(outbox: &Arc<Outbox>, max_payload: usize) -> Vec<u8> {
    let mut reader = outbox.reader();
    let mut out = Vec::new();
    while let Some(batch) = reader.next_batch(max_payload).unwrap() {
        out.extend_from_slice(batch.payload());
        outbox.acknowledge(batch, Outcome::Delivered).unwrap();
    }
    out
}

fn segments(dir: &Path) -> Vec<PathBuf> {
    list_segments(&crate::spool::beneath::Dir::open(dir).unwrap())
        .unwrap()
        .into_iter()
        .map(|e| dir.join(e.name))
        .collect()
}

/// Runs `f` with this thread's log lines collected; returns them.
fn logs_of<T>(f: impl FnOnce() -> T) -> (T, String) {
    #[derive(Clone, Default)]
    struct Collected(Arc<Mutex<Vec<u8>>>);
    impl io::Write for Collected {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }
    let collected = Collected::default();
    let writer = collected.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .finish();
    let result = tracing::subscriber::with_default(subscriber, f);
    let text = String::from_utf8_lossy(&collected.0.lock().unwrap()).into_owned();
    (result, text)
}

#[test]
fn delivery_resumes_exactly_at_the_acknowledgement_after_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let outbox = open(dir.path());
    let first = append(&outbox, "a", 10);
    let second = append(&outbox, "b", 10);
    let third = append(&outbox, "c", 10);
    let mut reader = outbox.reader();
    let batch = reader.next_batch(first.len()).unwrap().unwrap();
    assert_eq!(batch.payload(), first);
    outbox.acknowledge(batch, Outcome::Delivered).unwrap();
    drop((reader, outbox));

    let outbox = open(dir.path());
    assert_eq!(drain(&outbox, 1 << 20), [second, third].concat());
    assert_eq!(drain(&outbox, 1 << 20), b"");
    let status = status(dir.path()).unwrap();
    assert_eq!((status.records, status.lines, status.delivered_lines), (0, 0, 30));
}

#[test]
fn unacknowledged_batch_comes_again_after_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let outbox = open(dir.path());
    let first = append(&outbox, "a", 3);
    let mut reader = outbox.reader();
    assert_eq!(reader.next_batch(1 << 20).unwrap().unwrap().payload(), first);
    drop((reader, outbox));
    assert_eq!(drain(&open(dir.path()), 1 << 20), first);
}

#[test]
fn several_records_share_one_batch_up_to_the_payload_limit() {
    let dir = tempfile::tempdir().unwrap();
    let outbox = open(dir.path());
    let records: Vec<Vec<u8>> = (0..5).map(|i| append(&outbox, &format!("r{i}"), 4)).collect();
    let mut reader = outbox.reader();
    let limit = records[0].len() + records[1].len() + records[2].len() / 2;
    let batch = reader.next_batch(limit).unwrap().unwrap();
    assert_eq!(batch.payload(), [records[0].clone(), records[1].clone()].concat());
    assert_eq!(batch.lines(), 8);
}

#[test]
fn torn_or_corrupt_tail_is_cut_logged_and_earlier_records_delivered() {
    type Damage = fn(&Path);
    type Dropped = (u64, u64, u64);
    // (what, damage, whether the last record survives, dropped (records, lines, bytes)): the
    // last record is "c" x 5 lines of 17 bytes, 85 payload bytes, 105 with its header.
    let damages: [(&str, Damage, bool, Dropped); 3] = [
        (
            "truncated mid-record",
            |p| {
                let len = fs::metadata(p).unwrap().len();
                fs::OpenOptions::new()
                    .write(true)
                    .open(p)
                    .unwrap()
                    .set_len(len - 7)
                    .unwrap();
            },
            false,
            (0, 0, 98),
        ),
        (
            "byte flipped in the last payload",
            |p| {
                let mut bytes = fs::read(p).unwrap();
                let at = bytes.len() - 3;
                bytes[at] ^= 0x20;
                fs::write(p, bytes).unwrap();
            },
            false,
            (1, 5, 85),
        ),
        (
            "garbage appended",
            |p| {
                fs::OpenOptions::new()
                    .append(true)
                    .open(p)
                    .unwrap()
                    .write_all(&[0xab; 37])
                    .unwrap();
            },
            true,
            (0, 0, 37),
        ),
    ];
    for (what, damage, last_survives, (records, lines, bytes)) in damages {
        let dir = tempfile::tempdir().unwrap();
        let outbox = open(dir.path());
        let kept = [append(&outbox, "a", 5), append(&outbox, "b", 5)].concat();
        let last = append(&outbox, "c", 5);
        drop(outbox);
        let segment = segments(dir.path()).pop().unwrap();
        damage(&segment);

        let (outbox, logs) = logs_of(|| open(dir.path()));
        assert!(logs.contains("cutting off a torn or corrupt tail"), "{what}: {logs}");
        let counted = status(dir.path()).unwrap();
        assert_eq!(
            (counted.dropped_records, counted.dropped_lines, counted.dropped_bytes),
            (records, lines, bytes),
            "{what}: what the cut discarded is counted (and written to the ack at once)"
        );
        assert!(logs.contains(&format!("dropped_bytes={bytes}")), "{what}: {logs}");
        assert!(
            logs.contains(&segment.display().to_string()),
            "{what}: log names the file: {logs}"
        );
        let expected = if last_survives {
            [kept.clone(), last].concat()
        } else {
            kept.clone()
        };
        assert_eq!(drain(&outbox, 1 << 20), expected, "{what}");
        let after = append(&outbox, "d", 2);
        assert_eq!(drain(&outbox, 1 << 20), after, "{what}: appends work after the cut");
    }
}

#[test]
fn record_larger_than_the_payload_limit_goes_in_line_aligned_pieces_across_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let outbox = open(dir.path());
    let mut big = Vec::new();
    for i in 0..100 {
        writeln!(big, "servers.host{i}.{} {i} 1700000000", "x".repeat(i % 13)).unwrap();
    }
    outbox.append(&big, 100).unwrap();
    let tail = append(&outbox, "after", 2);
    let limit = 250;
    let mut reader = outbox.reader();
    let batch = reader.next_batch(limit).unwrap().unwrap();
    let mut received = batch.payload().to_vec();
    outbox.acknowledge(batch, Outcome::Delivered).unwrap();
    drop((reader, outbox));
    let mid_record = status(dir.path()).unwrap();
    assert_eq!(
        mid_record.records, 2,
        "the acknowledgement points inside the first record"
    );
    assert_eq!(
        mid_record.lines,
        102 - received.iter().filter(|&&b| b == b'\n').count() as u64
    );

    let outbox = open(dir.path());
    let mut reader = outbox.reader();
    while let Some(batch) = reader.next_batch(limit).unwrap() {
        assert!(batch.payload().len() <= limit && batch.payload().ends_with(b"\n"));
        received.extend_from_slice(batch.payload());
        outbox.acknowledge(batch, Outcome::Delivered).unwrap();
    }
    assert_eq!(received, [big, tail].concat());
    assert_eq!(status(dir.path()).unwrap().delivered_lines, 102);
}

#[test]
fn single_line_longer_than_the_payload_limit_is_sent_whole() {
    let dir = tempfile::tempdir().unwrap();
    let outbox = open(dir.path());
    let payload = format!("short 1 1\n{} 1 1\nshort 2 2\n", "long".repeat(50));
    outbox.append(payload.as_bytes(), 3).unwrap();
    let mut reader = outbox.reader();
    let mut batches = Vec::new();
    while let Some(batch) = reader.next_batch(20).unwrap() {
        batches.push(String::from_utf8(batch.payload().to_vec()).unwrap());
        outbox.acknowledge(batch, Outcome::Delivered).unwrap();
    }
    let expected: Vec<String> = payload.split_inclusive('\n').map(str::to_owned).collect();
    assert_eq!(batches, expected);
}

fn bounded(dir: &Path, limits: OutboxLimits) -> Arc<Outbox> {
    Arc::new(Outbox::open(dir, limits).unwrap())
}

/// Appends records of 10 lines `r<k>.<i>`; returns the total number of lines.
fn fill(outbox: &Outbox, records: u32) -> u64 {
    for k in 0..records {
        append(outbox, &format!("r{k:04}"), 10);
    }
    u64::from(records) * 10
}

/// Checks that what is delivered is the newest lines, contiguous, and that with the dropped
/// lines it adds up to everything appended.
fn assert_newest_survive(delivered: &[u8], total: u64, dropped_lines: u64) {
    let count = delivered.iter().filter(|&&b| b == b'\n').count() as u64;
    assert!(dropped_lines > 0, "something was dropped");
    assert_eq!(count + dropped_lines, total);
    let first_kept = (dropped_lines / 10) as u32;
    let expected: Vec<u8> = (first_kept..(total / 10) as u32)
        .flat_map(|k| lines(&format!("r{k:04}"), 10).0)
        .collect();
    assert_eq!(delivered, expected);
}

#[test]
fn byte_bound_drops_the_oldest_segments_and_the_count_survives_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let limits = OutboxLimits {
        max_bytes: 8 << 10,
        segment_bytes: 1 << 10,
        ..OutboxLimits::default()
    };
    let outbox = bounded(dir.path(), limits.clone());
    let (total, logs) = logs_of(|| fill(&outbox, 200));
    assert!(logs.contains("dropped undelivered lines"), "{logs}");
    let on_disk: u64 = segments(dir.path())
        .iter()
        .map(|p| fs::metadata(p).unwrap().len())
        .sum();
    assert!(on_disk <= limits.max_bytes, "{on_disk} bytes on disk");
    let dropped = status(dir.path()).unwrap();
    drop(outbox);

    let outbox = bounded(dir.path(), limits);
    assert_eq!(status(dir.path()).unwrap(), dropped);
    let delivered = drain(&outbox, 1 << 20);
    assert_newest_survive(&delivered, total, dropped.dropped_lines);
    let after = status(dir.path()).unwrap();
    assert_eq!(
        after.dropped_lines, dropped.dropped_lines,
        "the drop count survives reopen"
    );
    assert_eq!(
        after.dropped_bytes + delivered.len() as u64,
        200 * lines("r0000", 10).0.len() as u64
    );
}

#[test]
fn line_bound_keeps_at_most_max_lines_undelivered() {
    let dir = tempfile::tempdir().unwrap();
    let limits = OutboxLimits {
        max_lines: Some(100),
        ..OutboxLimits::default()
    };
    let outbox = bounded(dir.path(), limits);
    let total = fill(&outbox, 50);
    let backlog = status(dir.path()).unwrap();
    assert!(backlog.lines <= 100, "{backlog:?}");
    assert_newest_survive(&drain(&outbox, 1 << 20), total, backlog.dropped_lines);
}

#[test]
fn age_bound_drops_segments_whose_newest_record_is_too_old() {
    let dir = tempfile::tempdir().unwrap();
    let limits = OutboxLimits {
        max_age: Some(Duration::from_millis(40)),
        ..OutboxLimits::default()
    };
    let outbox = bounded(dir.path(), limits);
    let old = fill(&outbox, 3);
    std::thread::sleep(Duration::from_millis(100));
    let fresh = append(&outbox, "fresh", 4);
    let status = status(dir.path()).unwrap();
    assert_eq!((status.dropped_records, status.dropped_lines), (3, old));
    assert_eq!(drain(&outbox, 1 << 20), fresh);
}

#[test]
fn acknowledgement_past_the_end_is_clamped_and_logged() {
    let dir = tempfile::tempdir().unwrap();
    let outbox = open(dir.path());
    append(&outbox, "a", 3);
    drop(outbox);
    let mut ack = Ack::from_oldest();
    ack.position.offset = 1 << 40;
    ack.write(&crate::spool::beneath::Dir::open(dir.path()).unwrap())
        .unwrap();
    let (outbox, logs) = logs_of(|| open(dir.path()));
    assert!(logs.contains("points past the end"), "{logs}");
    assert_eq!(
        drain(&outbox, 1 << 20),
        b"",
        "everything in the segment counts as delivered"
    );
    let later = append(&outbox, "b", 1);
    assert_eq!(drain(&outbox, 1 << 20), later);
}

#[test]
fn acknowledgement_inside_a_record_resends_that_record() {
    let dir = tempfile::tempdir().unwrap();
    let outbox = open(dir.path());
    let first = append(&outbox, "a", 3);
    let second = append(&outbox, "b", 3);
    drop(outbox);
    let mut ack = Ack::from_oldest();
    ack.position.offset = format::SEGMENT_HEADER_LEN + 5;
    ack.write(&crate::spool::beneath::Dir::open(dir.path()).unwrap())
        .unwrap();
    let (outbox, logs) = logs_of(|| open(dir.path()));
    assert!(logs.contains("points inside a record"), "{logs}");
    assert_eq!(drain(&outbox, 1 << 20), [first, second].concat());
}

#[test]
fn missing_or_garbage_acknowledgement_restarts_from_the_oldest_record() {
    for (what, content, expected_log) in [
        ("missing", None, "no acknowledgement file"),
        (
            "garbage",
            Some(&b"\x00\x01garbage"[..]),
            "unreadable acknowledgement file",
        ),
        (
            "truncated",
            Some(&b"spoolmon-outbox-ack 1\nsegment 0\n"[..]),
            "unreadable acknowledgement file",
        ),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let outbox = open(dir.path());
        let first = append(&outbox, "a", 2);
        drain(&outbox, 1 << 20);
        let second = append(&outbox, "b", 2);
        drop(outbox);
        match content {
            None => fs::remove_file(dir.path().join(ACK_FILE)).unwrap(),
            Some(bytes) => fs::write(dir.path().join(ACK_FILE), bytes).unwrap(),
        }
        let (outbox, logs) = logs_of(|| open(dir.path()));
        assert!(logs.contains(expected_log), "{what}: {logs}");
        assert_eq!(drain(&outbox, 1 << 20), [first, second].concat(), "{what}");
    }
}

#[test]
fn stray_temporary_files_are_ignored_and_removed() {
    let dir = tempfile::tempdir().unwrap();
    let outbox = open(dir.path());
    let first = append(&outbox, "a", 2);
    drop(outbox);
    let stray = dir.path().join(".tmp-99999-ack");
    fs::write(&stray, b"half an ack").unwrap();
    let outbox = open(dir.path());
    assert!(!stray.exists());
    assert_eq!(drain(&outbox, 1 << 20), first);
}

#[test]
fn delivered_segments_are_removed_and_numbering_continues() {
    let dir = tempfile::tempdir().unwrap();
    let limits = OutboxLimits {
        segment_bytes: 512,
        ..OutboxLimits::default()
    };
    let outbox = bounded(dir.path(), limits.clone());
    fill(&outbox, 20);
    assert!(segments(dir.path()).len() > 3);
    drain(&outbox, 1 << 20);
    let left = segments(dir.path());
    assert_eq!(left.len(), 1, "only the segment being written stays: {left:?}");
    drop(outbox);
    let outbox = bounded(dir.path(), limits);
    let next = append(&outbox, "next", 1);
    let names = segments(dir.path());
    assert!(
        names.last().unwrap() > &left[0],
        "a new segment after the old ones: {names:?}"
    );
    assert_eq!(drain(&outbox, 1 << 20), next);
    assert_eq!(segments(dir.path()).len(), 1);
}

#[test]
fn corrupt_record_in_an_older_segment_drops_the_rest_of_it_and_delivers_the_next() {
    let dir = tempfile::tempdir().unwrap();
    let limits = OutboxLimits {
        segment_bytes: 600,
        ..OutboxLimits::default()
    };
    let outbox = bounded(dir.path(), limits.clone());
    fill(&outbox, 12);
    drop(outbox);
    let files = segments(dir.path());
    assert!(files.len() >= 3);
    let first = &files[0];
    let mut bytes = fs::read(first).unwrap();
    let at = bytes.len() - 5;
    bytes[at] ^= 1;
    fs::write(first, bytes).unwrap();

    let outbox = bounded(dir.path(), limits);
    let (delivered, logs) = logs_of(|| drain(&outbox, 1 << 20));
    assert!(logs.contains("corrupt outbox record"), "{logs}");
    let status = status(dir.path()).unwrap();
    assert_eq!(
        status.dropped_records, 1,
        "the corrupt record is the last one of its segment"
    );
    let delivered_lines = delivered.iter().filter(|&&b| b == b'\n').count() as u64;
    assert_eq!(delivered_lines + status.dropped_lines, 120);
}

#[test]
fn status_reports_the_backlog_from_the_files_alone() {
    let dir = tempfile::tempdir().unwrap();
    let before = SystemTime::now() - Duration::from_millis(1);
    let outbox = open(dir.path());
    let first = append(&outbox, "a", 4);
    append(&outbox, "b", 6);
    let mut reader = outbox.reader();
    let batch = reader.next_batch(first.len()).unwrap().unwrap();
    outbox.acknowledge(batch, Outcome::Delivered).unwrap();
    let status = status(dir.path()).unwrap();
    assert_eq!((status.records, status.lines), (1, 6));
    assert_eq!(status.bytes, lines("b", 6).0.len() as u64);
    assert_eq!(status.delivered_lines, 4);
    let oldest = status.oldest.unwrap();
    assert!(oldest >= before && oldest <= SystemTime::now(), "{oldest:?}");
}

#[test]
fn append_refuses_partial_lines_and_keeps_the_outbox_unchanged() {
    let dir = tempfile::tempdir().unwrap();
    let outbox = open(dir.path());
    assert!(matches!(
        outbox.append(b"no newline", 1),
        Err(OutboxError::NotWholeLines { .. })
    ));
    assert!(matches!(outbox.append(b"", 0), Err(OutboxError::NotWholeLines { .. })));
    assert_eq!(status(dir.path()).unwrap(), OutboxStatus::default());
}

#[test]
fn an_append_wakes_a_waiting_reader() {
    let dir = tempfile::tempdir().unwrap();
    let outbox = open(dir.path());
    let seen = outbox.appends();
    let writer = {
        let outbox = Arc::clone(&outbox);
        std::thread::spawn(move || append(&outbox, "x", 1))
    };
    let mut now = seen;
    for _ in 0..100 {
        now = outbox.wait_for_append(seen, Duration::from_millis(100));
        if now != seen {
            break;
        }
    }
    assert_eq!(now, seen + 1);
    assert_eq!(drain(&outbox, 1 << 20), writer.join().unwrap());
}

#[test]
fn an_ack_past_the_end_of_its_segment_counts_the_records_it_skips_as_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let outbox = open(dir.path());
    append(&outbox, "a", 4);
    append(&outbox, "b", 3);
    drop(outbox);
    let segment = segments(dir.path()).pop().unwrap();
    let len = fs::metadata(&segment).unwrap().len();
    let fd = crate::spool::beneath::Dir::open(dir.path()).unwrap();
    let seq = list_segments(&fd).unwrap().pop().unwrap().seq;
    let mut ack = Ack::from_oldest();
    ack.position = super::ack::Position::start_of(seq);
    ack.position.offset = len + 1000;
    ack.write(&fd).unwrap();
    let (outbox, logs) = logs_of(|| open(dir.path()));
    assert!(logs.contains("points past the end"), "{logs}");
    let counted = status_in(&fd).unwrap();
    // "a.0 0 1700000000\n" is 17 bytes: 4 + 3 lines, 119 payload bytes.
    assert_eq!(
        (counted.dropped_records, counted.dropped_lines, counted.dropped_bytes),
        (2, 7, 119)
    );
    assert_eq!((counted.records, counted.lines), (0, 0));
    assert_eq!(drain(&outbox, 1 << 20), b"", "nothing is sent twice");
    drop(outbox);
    let again = status_in(&fd).unwrap();
    assert_eq!(again.dropped_lines, 7, "counted once, not at every open");
    let _ = open(dir.path());
    assert_eq!(status_in(&fd).unwrap().dropped_lines, 7);
}

#[test]
fn a_fifo_in_place_of_the_ack_or_named_like_a_segment_neither_hangs_open_nor_status() {
    use nix::sys::stat::Mode;
    let dir = tempfile::tempdir().unwrap();
    let outbox = open(dir.path());
    let payload = append(&outbox, "a", 3);
    drop(outbox);
    fs::remove_file(dir.path().join(ACK_FILE)).ok();
    nix::unistd::mkfifo(&dir.path().join(ACK_FILE), Mode::from_bits_truncate(0o600)).unwrap();
    let planted = dir.path().join(super::format::segment_name(7));
    nix::unistd::mkfifo(&planted, Mode::from_bits_truncate(0o600)).unwrap();
    let fd = crate::spool::beneath::Dir::open(dir.path()).unwrap();
    let seen = status_in(&fd).unwrap();
    assert_eq!(seen.lines, 3, "the real segment is still counted");
    assert!(
        seen.problems.iter().any(|p| p.contains("acknowledgement")),
        "{:?}",
        seen.problems
    );
    assert!(
        seen.problems
            .iter()
            .any(|p| p.contains(&super::format::segment_name(7))),
        "{:?}",
        seen.problems
    );
    let (outbox, logs) = logs_of(|| open(dir.path()));
    assert!(logs.contains("unreadable acknowledgement file"), "{logs}");
    assert!(logs.contains("not a regular file"), "{logs}");
    assert!(fs::symlink_metadata(&planted).is_err(), "the planted FIFO is removed");
    assert_eq!(
        drain(&outbox, 1 << 20),
        payload,
        "delivery restarts at the oldest record"
    );
    let after = append(&outbox, "b", 1);
    assert_eq!(drain(&outbox, 1 << 20), after, "the writer skips the planted number");
    assert!(status_in(&fd).unwrap().problems.is_empty());
}

#[test]
fn an_outbox_directory_that_is_a_symlink_is_refused_never_followed() {
    let base = tempfile::tempdir().unwrap();
    let outside = tempfile::tempdir().unwrap();
    std::os::unix::fs::symlink(outside.path(), base.path().join("carbon")).unwrap();
    let parent = crate::spool::beneath::Dir::open(base.path()).unwrap();
    let err = Outbox::open_in(&parent, "carbon", OutboxLimits::default()).unwrap_err();
    assert!(err.to_string().contains("carbon"), "{err}");
    assert_eq!(
        fs::read_dir(outside.path()).unwrap().count(),
        0,
        "nothing written outside"
    );
    let outbox = Outbox::open_in(&parent, "graphite", OutboxLimits::default()).unwrap();
    assert_eq!(outbox.dir(), base.path().join("graphite"));
}

#[test]
fn counters_at_their_maximum_in_a_planted_ack_saturate_instead_of_overflowing() {
    let dir = tempfile::tempdir().unwrap();
    let outbox = open(dir.path());
    append(&outbox, "a", 3);
    drop(outbox);
    // Another program may write the ack: counters at u64::MAX, and a torn tail to count.
    let mut ack = Ack::from_oldest();
    ack.counters = Counters {
        delivered_lines: u64::MAX,
        rejected_lines: u64::MAX,
        dropped_records: u64::MAX,
        dropped_lines: u64::MAX,
        dropped_bytes: u64::MAX,
    };
    ack.write(&crate::spool::beneath::Dir::open(dir.path()).unwrap())
        .unwrap();
    let segment = segments(dir.path()).pop().unwrap();
    fs::OpenOptions::new()
        .append(true)
        .open(&segment)
        .unwrap()
        .write_all(&[1, 2, 3])
        .unwrap();
    let outbox = open(dir.path());
    assert_eq!(drain(&outbox, 1 << 20), lines("a", 3).0);
    let status = status_in(&crate::spool::beneath::Dir::open(dir.path()).unwrap()).unwrap();
    assert_eq!((status.dropped_bytes, status.delivered_lines), (u64::MAX, u64::MAX));
}

#[test]
fn a_piece_of_a_large_record_comes_again_unchanged_until_acknowledged_and_small_records_follow() {
    let dir = tempfile::tempdir().unwrap();
    let outbox = open(dir.path());
    let big = append(&outbox, "big", 200);
    let small = [append(&outbox, "a", 2), append(&outbox, "b", 2)].concat();
    let limit = 1000;
    assert!(big.len() > 3 * limit);
    let mut reader = outbox.reader();
    let mut received = Vec::new();
    let mut batches = 0;
    while let Some(batch) = reader.next_batch(limit).unwrap() {
        let first = batch.payload().to_vec();
        let (start, lines) = (batch.start, batch.lines());
        assert!(first.len() <= limit && first.ends_with(b"\n"));
        assert_eq!(lines, first.iter().filter(|&&b| b == b'\n').count() as u64);
        // Not acknowledged: the same lines again (a send that failed is retried as it was).
        let again = reader.next_batch(limit).unwrap().unwrap();
        assert_eq!((again.payload(), again.start), (&first[..], start));
        outbox.acknowledge(again, Outcome::Delivered).unwrap();
        received.extend_from_slice(&first);
        batches += 1;
    }
    assert_eq!(received, [big.clone(), small].concat());
    assert!(batches > big.len() / limit, "{batches} batches");
    assert_eq!(status(dir.path()).unwrap().delivered_lines, 204);
}

#[test]
fn a_batch_of_several_records_is_seen_whole_only_once_finished_and_delivered_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let outbox = open(dir.path());
    let before = append(&outbox, "before", 3);
    let mut reader = outbox.reader();
    let first = reader.next_batch(1 << 20).unwrap().unwrap();
    assert_eq!(first.payload(), before.as_slice());
    outbox.acknowledge(first, Outcome::Delivered).unwrap();

    let (one, n1) = lines("one", 4);
    let (two, n2) = lines("two", 5);
    let (three, n3) = lines("three", 6);
    let mut batch = outbox.begin();
    batch.push(&one, n1).unwrap();
    batch.push(&two, n2).unwrap();
    assert!(
        reader.next_batch(1 << 20).unwrap().is_none(),
        "records of an unfinished batch are not visible"
    );
    assert_eq!(status(dir.path()).unwrap().lines, 0, "nor to status");
    batch.finish(&three, n3).unwrap();
    let queued = status(dir.path()).unwrap();
    assert_eq!((queued.records, queued.lines), (3, 15));
    assert_eq!(drain(&outbox, 1 << 20), [one, two, three].concat());
}

#[test]
fn an_unfinished_batch_is_cut_away_when_dropped_and_after_a_crash_and_earlier_ones_stay() {
    // Dropped: the records it wrote are truncated at once.
    let dir = tempfile::tempdir().unwrap();
    let outbox = open(dir.path());
    let kept = append(&outbox, "kept", 3);
    let len = fs::metadata(segments(dir.path()).pop().unwrap()).unwrap().len();
    let (piece, n) = lines("dropped", 4);
    let mut batch = outbox.begin();
    batch.push(&piece, n).unwrap();
    drop(batch);
    assert_eq!(fs::metadata(segments(dir.path()).pop().unwrap()).unwrap().len(), len);
    let after = append(&outbox, "after", 2);
    assert_eq!(drain(&outbox, 1 << 20), [kept, after].concat());

    // A crash: the process dies with two records of a batch written and not its last (the
    // batch is forgotten, as by a kill, so no cut runs). Opening cuts them and counts them.
    let dir = tempfile::tempdir().unwrap();
    let outbox = open(dir.path());
    let kept = [append(&outbox, "a", 2), append(&outbox, "b", 2)].concat();
    let mut batch = outbox.begin();
    batch.push(&lines("torn", 4).0, 4).unwrap();
    batch.push(&lines("torn2", 3).0, 3).unwrap();
    std::mem::forget(batch);
    drop(outbox);
    let (outbox, logs) = logs_of(|| open(dir.path()));
    assert!(logs.contains("the file ends inside a batch"), "{logs}");
    let counted = status(dir.path()).unwrap();
    assert_eq!((counted.dropped_records, counted.dropped_lines), (2, 7));
    assert_eq!(drain(&outbox, 1 << 20), kept);
    let after = append(&outbox, "after", 2);
    assert_eq!(drain(&outbox, 1 << 20), after, "appends work after the cut");
}

#[test]
fn a_batch_is_never_split_across_segments_and_a_record_without_the_flag_ends_it() {
    let dir = tempfile::tempdir().unwrap();
    let limits = OutboxLimits {
        segment_bytes: 200,
        ..OutboxLimits::default()
    };
    let outbox = bounded(dir.path(), limits);
    let mut expected = Vec::new();
    let mut batch = outbox.begin();
    for i in 0..4 {
        let (piece, n) = lines(&format!("p{i}"), 5);
        batch.push(&piece, n).unwrap();
        expected.extend(piece);
    }
    let (last, n) = lines("last", 5);
    batch.finish(&last, n).unwrap();
    expected.extend(last);
    assert_eq!(
        segments(dir.path()).len(),
        1,
        "five records, past segment_bytes, one segment"
    );
    let next = append(&outbox, "next", 2);
    assert_eq!(segments(dir.path()).len(), 2, "the next batch starts a new segment");
    expected.extend(next);
    drop(outbox);
    let outbox = open(dir.path());
    assert_eq!(status(dir.path()).unwrap().dropped_records, 0, "nothing cut on reopen");
    assert_eq!(drain(&outbox, 1 << 20), expected);
}

#[test]
fn a_reader_in_another_thread_never_sees_an_acknowledgement_cut_short_while_they_are_replaced() {
    let dir = tempfile::tempdir().unwrap();
    let fd = crate::spool::beneath::Dir::open(dir.path()).unwrap();
    let mut ack = Ack::from_oldest();
    ack.write(&fd).unwrap();
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let reader = {
        let done = Arc::clone(&done);
        let path = dir.path().to_owned();
        std::thread::spawn(move || {
            let fd = crate::spool::beneath::Dir::open(&path).unwrap();
            let (mut reads, mut newest) = (0_u64, 0_u64);
            while !done.load(std::sync::atomic::Ordering::Relaxed) {
                match Ack::read(&fd).unwrap() {
                    AckRead::Found(ack) => {
                        let lines = ack.counters.delivered_lines;
                        assert!(lines >= newest, "went back from {newest} to {lines}");
                        newest = lines;
                    }
                    other => panic!("read {other:?} after {reads} good reads"),
                }
                reads += 1;
            }
            reads
        })
    };
    for lines in 1..=2000 {
        // Lengths change, so a read of a file being rewritten would be cut or mixed.
        ack.counters.delivered_lines =
            lines * 999_999_937 % 10_u64.pow((lines % 12) as u32 + 1) + lines * 10_u64.pow(13);
        ack.write(&fd).unwrap();
    }
    done.store(true, std::sync::atomic::Ordering::Relaxed);
    let reads = reader.join().expect("the reader saw every acknowledgement whole");
    assert!(reads > 0);
}

#[test]
fn a_batch_whose_record_is_refused_loses_its_earlier_records_too_and_the_next_batch_is_clean() {
    let dir = tempfile::tempdir().unwrap();
    let outbox = open(dir.path());
    let kept = append(&outbox, "kept", 2);
    let mut batch = outbox.begin();
    batch.push(&lines("orphan", 3).0, 3).unwrap();
    let refused = batch.push(b"not a whole line", 1).unwrap_err();
    assert!(matches!(refused, OutboxError::NotWholeLines { .. }), "{refused}");
    drop(batch);
    let after = append(&outbox, "after", 2);
    assert_eq!(drain(&outbox, 1 << 20), [kept, after].concat());
    drop(outbox);
    assert_eq!(
        status(dir.path()).unwrap().dropped_records,
        0,
        "nothing torn left behind"
    );
}

/// The position the acknowledgement file on disk holds.
fn written_ack(dir: &Path) -> Option<Position> {
    match Ack::read(&crate::spool::beneath::Dir::open(dir).unwrap()).unwrap() {
        AckRead::Found(ack) => Some(ack.position),
        _ => None,
    }
}

#[test]
fn acknowledgements_are_written_every_ack_bytes_while_behind_and_at_once_when_caught_up() {
    let dir = tempfile::tempdir().unwrap();
    let limits = OutboxLimits {
        ack_bytes: 1000,
        ..OutboxLimits::default()
    };
    let outbox = bounded(dir.path(), limits);
    // Ten records of 180 bytes: behind, the file moves once 1,000 bytes are delivered.
    let records: Vec<Vec<u8>> = (0..10).map(|r| append(&outbox, &format!("r{r}"), 10)).collect();
    let mut reader = outbox.reader();
    let (mut unwritten, mut on_disk, mut writes) = (0, written_ack(dir.path()), 0);
    for (i, expected) in records.iter().enumerate() {
        let batch = reader.next_batch(expected.len()).unwrap().unwrap();
        assert_eq!(batch.payload(), expected);
        unwritten += batch.payload().len();
        let end = batch.end;
        outbox.acknowledge(batch, Outcome::Delivered).unwrap();
        let caught_up = i == records.len() - 1;
        if unwritten >= 1000 || caught_up {
            (unwritten, on_disk, writes) = (0, Some(end), writes + 1);
        }
        assert_eq!(written_ack(dir.path()), on_disk, "after batch {i}");
    }
    let total: usize = records.iter().map(Vec::len).sum();
    assert_eq!(
        (total, writes),
        (1800, 2),
        "one write behind (after 1,000 bytes), one caught up"
    );
    assert!(reader.next_batch(1 << 20).unwrap().is_none());

    // Caught up, every batch is written at once; a rejection is written at once too.
    let more = append(&outbox, "more", 3);
    let batch = reader.next_batch(1 << 20).unwrap().unwrap();
    assert_eq!(batch.payload(), more);
    let end = batch.end;
    outbox.acknowledge(batch, Outcome::Delivered).unwrap();
    assert_eq!(written_ack(dir.path()), Some(end));
    append(&outbox, "bad", 1);
    append(&outbox, "behind", 1);
    let batch = reader.next_batch(1).unwrap().unwrap();
    let end = batch.end;
    outbox.acknowledge(batch, Outcome::Rejected).unwrap();
    assert_eq!(written_ack(dir.path()), Some(end), "a rejection is written at once");
    assert_eq!(status(dir.path()).unwrap().rejected_lines, 1);
}

#[test]
fn a_stop_behind_writes_what_was_acknowledged_and_a_reopen_resumes_there() {
    let dir = tempfile::tempdir().unwrap();
    let limits = OutboxLimits {
        ack_bytes: 1 << 20,
        ..OutboxLimits::default()
    };
    let outbox = bounded(dir.path(), limits.clone());
    let first = append(&outbox, "first", 10);
    let rest = [append(&outbox, "second", 10), append(&outbox, "third", 10)].concat();
    let mut reader = outbox.reader();
    let batch = reader.next_batch(first.len()).unwrap().unwrap();
    assert_eq!(batch.payload(), first);
    outbox.acknowledge(batch, Outcome::Delivered).unwrap();
    assert_eq!(
        written_ack(dir.path()),
        None,
        "behind and under ack_bytes: not written yet"
    );
    let status_behind = status(dir.path()).unwrap();
    assert_eq!(
        status_behind.lines, 30,
        "other processes see the file: 10 lines more than there are"
    );
    outbox.write_unwritten_ack().unwrap();
    assert_eq!(status(dir.path()).unwrap().lines, 20);
    outbox.write_unwritten_ack().unwrap();
    drop((reader, outbox));

    let outbox = bounded(dir.path(), limits);
    assert_eq!(
        drain(&outbox, 1 << 20),
        rest,
        "resumed after the first batch, nothing twice"
    );
    assert_eq!(status(dir.path()).unwrap().delivered_lines, 30);
}
