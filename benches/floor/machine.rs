//! Whole-machine CPU for the floor programs (included by `#[path]`, std only, so a floor
//! program still builds without the crate).
//!
//! A process's getrusage misses what the kernel does for it elsewhere: softirq time (loopback's
//! ICMP replies are generated in softirq, which the kernel may account to no task), the journal
//! thread (jbd2) committing its renames, the flusher threads writing its dirty pages back. The
//! benchmark scripts measure the daemons' "whole machine, minus idle" from /proc/stat; these
//! helpers measure a floor the same way: busy ticks of every CPU over the operation, minus the
//! idle machine's own busy rate (calibrated by sleeping first) over the same wall time.

use std::time::{Duration, Instant};

/// Busy CPU seconds of the whole machine since boot: /proc/stat's `cpu` line, every field but
/// idle and iowait (guest time is already in user). USER_HZ is 100 on every Linux this runs on.
pub fn busy_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let Some(line) = stat.lines().next() else {
        return 0.0;
    };
    let ticks: Vec<f64> = line.split_whitespace().skip(1).filter_map(|v| v.parse().ok()).collect();
    let busy: f64 = ticks
        .iter()
        .take(8)
        .enumerate()
        .filter(|(i, _)| *i != 3 && *i != 4)
        .map(|(_, v)| v)
        .sum();
    busy / 100.0
}

/// The idle machine's busy rate, and spans measured against it.
pub struct Machine {
    /// Busy CPU seconds per wall second while this program sleeps.
    pub idle_rate: f64,
}

/// One span: the machine's busy time in it and its wall time.
pub struct Span {
    busy: f64,
    start: Instant,
}

impl Machine {
    /// Sleeps `seconds` to measure what the machine does without us; 0 (a smoke test) assumes
    /// an idle machine does nothing.
    pub fn calibrate(seconds: u64) -> Machine {
        if seconds == 0 {
            return Machine { idle_rate: 0.0 };
        }
        let span = Span::start();
        std::thread::sleep(Duration::from_secs(seconds));
        let (busy, wall) = span.end();
        Machine { idle_rate: busy / wall }
    }

    /// The machine's CPU seconds a span cost beyond idle (never below zero).
    pub fn beyond_idle(&self, span: Span) -> f64 {
        let (busy, wall) = span.end();
        (busy - self.idle_rate * wall).max(0.0)
    }
}

impl Span {
    pub fn start() -> Span {
        Span {
            busy: busy_seconds(),
            start: Instant::now(),
        }
    }

    /// (busy CPU seconds, wall seconds) since the start.
    fn end(self) -> (f64, f64) {
        (busy_seconds() - self.busy, self.start.elapsed().as_secs_f64())
    }
}
