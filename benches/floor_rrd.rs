//! The floor of the RRD part of processing: what one librrd update of N steps costs on this
//! machine, called directly on a file librrd already has (no spoolmon code around it), beside
//! the same update through spoolmon's `RrdWriter::apply` (validation, the layout cache, the
//! stat of the file). Also what creating one file costs. Files are Smokeping RRDs of step 20 and
//! 3 pings (pingmachine's definition, 470 KB each), updated round robin like a flush round does.
//! CPU from getrusage (user + system), page faults from getrusage too: a major fault is a page
//! read from disk while librrd writes into its mapping of the file. The machine column is every
//! CPU's busy time from /proc/stat (the kernel's writeback and journal threads included) minus
//! the idle machine's (calibrated for 3 s at the start), so it only means something on a quiet
//! machine.
//!
//! The "after syncfs" rounds write every file back before the update, as the daemon's rounds do
//! (processing syncs the filesystem before it lets a snapshot go): the pages librrd writes into
//! are then clean and write-protected, and each first write to one faults (ext4's page_mkwrite).
//!
//! Under `cargo test` (no `--bench` argument) it runs 10 files only, as a smoke test.
//!
//! usage: cargo bench --bench floor_rrd -- [files] [rounds]

#[path = "floor/machine.rs"]
mod machine;

use machine::{Machine, Span};
use rrd::ops::update::{update_all, BatchTime, Datum, Options};
use spoolmon::output::rrd::{update_time, update_values, RrdWriter, FILE_NAME};
use spoolmon::shared::measurement::{OrderId, OrderResult};
use std::path::{Path, PathBuf};
use std::time::{Duration, UNIX_EPOCH};

struct Usage {
    cpu: f64,
    minor: i64,
    major: i64,
}

fn usage() -> Usage {
    let usage = nix::sys::resource::getrusage(nix::sys::resource::UsageWho::RUSAGE_SELF).unwrap();
    let secs = |t: nix::sys::time::TimeVal| t.tv_sec() as f64 + t.tv_usec() as f64 / 1e6;
    Usage {
        cpu: secs(usage.user_time()) + secs(usage.system_time()),
        minor: usage.minor_page_faults(),
        major: usage.major_page_faults(),
    }
}

/// Runs `work` and prints CPU µs and page faults per call.
fn measure(idle: &Machine, what: &str, calls: usize, work: impl FnOnce()) {
    let before = usage();
    let span = Span::start();
    work();
    let machine = idle.beyond_idle(span);
    let after = usage();
    let per = |v: f64| v / calls as f64;
    println!(
        "| {what} | {:.1} | {:.2} | {:.3} | {:.1} |",
        per((after.cpu - before.cpu) * 1e6),
        per((after.minor - before.minor) as f64),
        per((after.major - before.major) as f64),
        per(machine * 1e6),
    );
}

fn result(o: usize, time: i64) -> OrderResult {
    OrderResult::builder(OrderId::new(format!("o{o}")).unwrap(), time)
        .rtts([Some(1e-4), Some(2e-4), Some(3e-4)])
        .build()
}

fn raw_update(path: &Path, results: &[OrderResult]) {
    let batches: Vec<(BatchTime, Vec<Datum>)> = results
        .iter()
        .map(|r| {
            let at = UNIX_EPOCH + Duration::from_secs(update_time(r) as u64);
            (BatchTime::Timestamp(at), update_values(r))
        })
        .collect();
    update_all(path, Options::default(), &batches).unwrap();
}

fn main() {
    let benchmarking = std::env::args().any(|a| a == "--bench");
    let args: Vec<String> = std::env::args().skip(1).filter(|a| a != "--bench").collect();
    let files: usize = args
        .first()
        .and_then(|a| a.parse().ok())
        .unwrap_or(if benchmarking { 2000 } else { 10 });
    let rounds: i64 = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(3);
    let tmp = tempfile::tempdir_in(std::env::var_os("FLOOR_DIR").unwrap_or_else(|| "/var/tmp".into())).unwrap();
    let dirs: Vec<PathBuf> = (0..files).map(|o| tmp.path().join(format!("o{o}"))).collect();
    let now = std::time::SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    // Far enough back for every round of 15 steps to lie in the past.
    let mut t = now - now % 20 - 20 * (1 + 50 * (rounds + 1));
    let writer = RrdWriter::new();
    let idle = Machine::calibrate(if benchmarking { 3 } else { 0 });
    println!("idle machine: {:.3} CPU-s/s", idle.idle_rate);
    println!("{files} files in {}, step 20, 3 pings", tmp.path().display());
    println!("| what | CPU µs per call | minor faults per call | major faults per call | machine CPU µs per call |");
    println!("|---|---|---|---|---|");
    measure(&idle, "create one file (librrd, through spoolmon)", files, || {
        for (o, dir) in dirs.iter().enumerate() {
            writer.create_if_missing(dir, &result(o, t)).unwrap();
        }
    });
    for steps in [1usize, 15] {
        for round in 0..rounds {
            let batch = |o: usize, t: i64| (0..steps).map(|s| result(o, t + 20 * s as i64)).collect::<Vec<_>>();
            let label = |who: &str| format!("update of {steps} step(s), {who}, round {}", round + 1);
            measure(&idle, &label("librrd alone"), files, || {
                for (o, dir) in dirs.iter().enumerate() {
                    raw_update(&dir.join(FILE_NAME), &batch(o, t));
                }
            });
            t += 20 * steps as i64;
            measure(&idle, &label("spoolmon RrdWriter::apply"), files, || {
                for (o, dir) in dirs.iter().enumerate() {
                    let results = batch(o, t);
                    let refs: Vec<&OrderResult> = results.iter().collect();
                    assert_eq!(writer.apply(dir, &refs).unwrap().applied, steps);
                }
            });
            t += 20 * steps as i64;
        }
    }
    // As the daemon with `rrd-flush-interval: 0`: one step per file and round, the filesystem
    // synced between rounds. The syncfs is its own row (its CPU is mostly the machine's).
    let dir = std::fs::File::open(tmp.path()).unwrap();
    let syncfs = || {
        use std::os::fd::AsRawFd;
        // SAFETY: syncfs takes any open fd of the filesystem; `dir` outlives the call.
        assert_eq!(unsafe { libc::syncfs(dir.as_raw_fd()) }, 0);
    };
    syncfs();
    for round in 0..rounds {
        measure(
            &idle,
            &format!("update of 1 step after syncfs, librrd alone, round {}", round + 1),
            files,
            || {
                for (o, dir) in dirs.iter().enumerate() {
                    raw_update(&dir.join(FILE_NAME), &[result(o, t)]);
                }
            },
        );
        t += 20;
        measure(
            &idle,
            &format!("syncfs after those updates (per file), round {}", round + 1),
            files,
            syncfs,
        );
        measure(
            &idle,
            &format!(
                "update of 1 step after syncfs, spoolmon RrdWriter::apply, round {}",
                round + 1
            ),
            files,
            || {
                for (o, dir) in dirs.iter().enumerate() {
                    assert_eq!(writer.apply(dir, &[&result(o, t)]).unwrap().applied, 1);
                }
            },
        );
        t += 20;
        syncfs();
    }
    // As the daemon with `rrd-flush-interval: 300`: 15 steps per file and round, synced after.
    for round in 0..rounds {
        measure(
            &idle,
            &format!("update of 15 steps after syncfs, librrd alone, round {}", round + 1),
            files,
            || {
                for (o, dir) in dirs.iter().enumerate() {
                    let results: Vec<OrderResult> = (0..15).map(|s| result(o, t + 20 * s)).collect();
                    raw_update(&dir.join(FILE_NAME), &results);
                }
            },
        );
        t += 20 * 15;
        measure(
            &idle,
            &format!("syncfs after those updates (per file), round {}", round + 1),
            files,
            syncfs,
        );
    }
}
