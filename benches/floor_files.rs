//! Floors for issue 12: the cheapest this machine does the file operations processing needs,
//! measured with raw libc calls and nothing of spoolmon around them.
//!
//! (a) one atomic replace of a ~200-byte `last_result` in each of N order directories:
//!   - `path`: open(tmp, O_CREAT|O_EXCL) + write + close + rename, all by path;
//!   - `dirfd`: the same with a kept directory descriptor and openat/renameat;
//!   - `exchange`: spoolmon's way: openat(.next, no truncate) + write + close +
//!     renameat2(RENAME_EXCHANGE) over a kept `.next` file, with a kept directory descriptor;
//!   - `exchange+fstat`: as `exchange` plus the fstat spoolmon did on the spare file;
//!   - `exchange+fstat by path`: as `exchange+fstat` with full paths (AT_FDCWD), as spoolmon does.
//!   - `exchange after syncfs`: as `exchange`, each round after a `syncfs` of the directories'
//!     filesystem (timed with the round), as the daemon's rounds follow its syncfs: the journal
//!     has committed the previous replaces, so each rename and write starts new metadata work.
//!
//! (a') the daemon's pattern alone: rounds of one `exchange` replace in every directory followed
//!   by a `syncfs`, nothing else between them (the rows of (a) share their syncfs with the other
//!   variants' dirty pages), so the machine column is what one replace costs with its journal
//!   commit and writeback.
//!
//! (a'') the same pattern in spoolmon's own layout (`FLOOR_LAYOUT_ORDERS` directories, default
//!   10,000 under `--bench`, 0 to skip): every order directory in one parent, each created with
//!   a 470 KB file beside its `last_result` (a Smokeping RRD's size), one after the other as the
//!   daemon's first round creates them, so ext4 spreads their inodes over the block groups as
//!   it does the daemon's; replaces by full path, as `StagedFile` does. The difference to (a')
//!   is what the layout costs: each replace dirties inode-table blocks of its own.
//!
//! (b) one ping snapshot: a ~100 KB file of 1,000 results written into a new directory:
//!   - `fsync-all`: mkdir + write + fsync(file) + fsync(snapshot dir) + rename + fsync(parent);
//!   - `fsync-file+parent`: without the fsync of the snapshot directory;
//!   - `nosync`: the same calls without any fsync (what the write costs by itself).
//!
//! CPU (user + system) from getrusage per operation, the whole machine's CPU per operation from
//! /proc/stat minus the idle machine's (jbd2, writeback and softirq included; calibrated for 3 s
//! at the start, meaningful on a quiet machine only), and wall time; medians of R repetitions.
//! Under `cargo test` (no `--bench` argument) it runs a few operations only, as a smoke test.
//!
//! usage: cargo bench --profile profiling --bench floor_files -- [orders] [repetitions] [dir]
//! (dir defaults to a new temporary directory under /tmp, the filesystem spoolmon's bench uses)

#[path = "floor/machine.rs"]
mod machine;

use machine::{Machine, Span};
use std::ffi::CString;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::time::Instant;

// Only libc and std: the program builds without the crate (`rustc -O --extern libc=...`), so a
// floor can be measured while the crate itself does not build.

fn cpu_seconds() -> f64 {
    // SAFETY: getrusage fills the struct it is given.
    let usage = unsafe {
        let mut usage: libc::rusage = std::mem::zeroed();
        check(libc::getrusage(libc::RUSAGE_SELF, &mut usage), "getrusage");
        usage
    };
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    secs(usage.ru_utime) + secs(usage.ru_stime)
}

fn c(s: &str) -> CString {
    CString::new(s).unwrap()
}

fn cpath(p: &Path) -> CString {
    c(p.to_str().unwrap())
}

fn check(r: libc::c_int, what: &str) -> libc::c_int {
    assert!(r >= 0, "{what}: {}", std::io::Error::last_os_error());
    r
}

const LAST_RESULT: &[u8] = b"time: 1310116500\nupdated: 1310116524\nstep: 20\npings: 3\nloss: 0\nmin: 5.700000e-04\nmedian: 5.800000e-04\nmax: 5.900000e-04\n";

#[derive(Clone, Copy, Debug)]
enum Replace {
    Path,
    DirFd,
    Exchange,
    ExchangeFstat,
    ExchangeFstatPath,
}

/// One replace in every directory; returns nothing, panics on error.
fn replace_round(kind: Replace, dirs: &[PathBuf], fds: &[OwnedFd]) {
    let tmp = c(".last_result.next");
    let target = c("last_result");
    for (dir, fd) in dirs.iter().zip(fds) {
        let dfd = fd.as_raw_fd();
        // SAFETY (all blocks below): plain syscalls on valid, NUL-terminated names and buffers.
        unsafe {
            match kind {
                Replace::Path => {
                    let t = cpath(&dir.join(".last_result.tmp"));
                    let f = check(
                        libc::open(
                            t.as_ptr(),
                            libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL | libc::O_CLOEXEC,
                            0o644,
                        ),
                        "open",
                    );
                    check(
                        libc::write(f, LAST_RESULT.as_ptr().cast(), LAST_RESULT.len()) as i32,
                        "write",
                    );
                    check(libc::close(f), "close");
                    check(
                        libc::rename(t.as_ptr(), cpath(&dir.join("last_result")).as_ptr()),
                        "rename",
                    );
                }
                Replace::DirFd => {
                    let t = c(".last_result.tmp");
                    let f = check(
                        libc::openat(
                            dfd,
                            t.as_ptr(),
                            libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL | libc::O_CLOEXEC,
                            0o644,
                        ),
                        "openat",
                    );
                    check(
                        libc::write(f, LAST_RESULT.as_ptr().cast(), LAST_RESULT.len()) as i32,
                        "write",
                    );
                    check(libc::close(f), "close");
                    check(libc::renameat(dfd, t.as_ptr(), dfd, target.as_ptr()), "renameat");
                }
                Replace::ExchangeFstatPath => {
                    let t = cpath(&dir.join(".last_result.next"));
                    let f = check(
                        libc::open(
                            t.as_ptr(),
                            libc::O_WRONLY | libc::O_CREAT | libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC,
                            0o644,
                        ),
                        "open",
                    );
                    let mut st: libc::stat = std::mem::zeroed();
                    check(libc::fstat(f, &mut st), "fstat");
                    check(
                        libc::write(f, LAST_RESULT.as_ptr().cast(), LAST_RESULT.len()) as i32,
                        "write",
                    );
                    check(libc::close(f), "close");
                    let target = cpath(&dir.join("last_result"));
                    let r = libc::syscall(
                        libc::SYS_renameat2,
                        libc::AT_FDCWD,
                        t.as_ptr(),
                        libc::AT_FDCWD,
                        target.as_ptr(),
                        libc::RENAME_EXCHANGE,
                    );
                    check(r as i32, "renameat2");
                }
                Replace::Exchange | Replace::ExchangeFstat => {
                    let f = check(
                        libc::openat(
                            dfd,
                            tmp.as_ptr(),
                            libc::O_WRONLY | libc::O_CREAT | libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC,
                            0o644,
                        ),
                        "openat",
                    );
                    if matches!(kind, Replace::ExchangeFstat) {
                        let mut st: libc::stat = std::mem::zeroed();
                        check(libc::fstat(f, &mut st), "fstat");
                    }
                    check(
                        libc::write(f, LAST_RESULT.as_ptr().cast(), LAST_RESULT.len()) as i32,
                        "write",
                    );
                    check(libc::close(f), "close");
                    let r = libc::syscall(
                        libc::SYS_renameat2,
                        dfd,
                        tmp.as_ptr(),
                        dfd,
                        target.as_ptr(),
                        libc::RENAME_EXCHANGE,
                    );
                    check(r as i32, "renameat2");
                }
            }
        }
    }
}

/// `reps` rounds of one `kind` replace in every directory, each followed by a `syncfs` (timed
/// with it): per replace, the process CPU, the machine CPU and the wall time of each round, µs.
fn replace_then_syncfs(
    kind: Replace,
    dirs: &[PathBuf],
    fds: &[OwnedFd],
    fs: &OwnedFd,
    reps: usize,
    idle: &Machine,
) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
    let n = dirs.len() as f64;
    let (mut cpu, mut mach, mut wall) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..reps {
        let (c0, w0, span) = (cpu_seconds(), Instant::now(), Span::start());
        replace_round(kind, dirs, fds);
        // SAFETY: syncfs on a descriptor the caller owns.
        check(unsafe { libc::syncfs(fs.as_raw_fd()) }, "syncfs");
        cpu.push((cpu_seconds() - c0) * 1e6 / n);
        wall.push(w0.elapsed().as_secs_f64() * 1e6 / n);
        mach.push(idle.beyond_idle(span) * 1e6 / n);
    }
    (cpu, mach, wall)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

#[derive(Clone, Copy, Debug)]
enum Snapshot {
    FsyncAll,
    FsyncFileAndParent,
    NoSync,
}

fn snapshot_once(kind: Snapshot, parent: &Path, parent_fd: &OwnedFd, n: usize, body: &[u8]) {
    let tmp = c(&format!("tmp.{n}"));
    let fin = c(&format!("snap.{n}"));
    let pfd = parent_fd.as_raw_fd();
    // SAFETY: plain syscalls on valid names and buffers.
    unsafe {
        check(libc::mkdirat(pfd, tmp.as_ptr(), 0o755), "mkdirat");
        let sfd = check(
            libc::openat(pfd, tmp.as_ptr(), libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC),
            "open dir",
        );
        let f = check(
            libc::openat(
                sfd,
                c("ping").as_ptr(),
                libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL | libc::O_CLOEXEC,
                0o644,
            ),
            "openat",
        );
        check(libc::write(f, body.as_ptr().cast(), body.len()) as i32, "write");
        if !matches!(kind, Snapshot::NoSync) {
            check(libc::fsync(f), "fsync file");
        }
        check(libc::close(f), "close");
        if matches!(kind, Snapshot::FsyncAll) {
            check(libc::fsync(sfd), "fsync snapshot dir");
        }
        check(libc::close(sfd), "close dir");
        check(libc::renameat(pfd, tmp.as_ptr(), pfd, fin.as_ptr()), "renameat");
        if !matches!(kind, Snapshot::NoSync) {
            check(libc::fsync(pfd), "fsync parent");
        }
    }
    let _ = parent;
}

fn open_dir(p: &Path) -> OwnedFd {
    // SAFETY: a fresh descriptor owned by the OwnedFd.
    unsafe {
        OwnedFd::from_raw_fd(check(
            libc::open(cpath(p).as_ptr(), libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC),
            "open dir",
        ))
    }
}

fn main() {
    let benchmarking = std::env::args().any(|a| a == "--bench");
    let args: Vec<String> = std::env::args().skip(1).filter(|a| a != "--bench").collect();
    let orders: usize = args
        .first()
        .and_then(|a| a.parse().ok())
        .unwrap_or(if benchmarking { 5000 } else { 10 });
    let reps: usize = args
        .get(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(if benchmarking { 7 } else { 1 });
    let own = PathBuf::from(format!("/tmp/floor_files.{}", std::process::id()));
    let root = args.get(2).map(PathBuf::from).unwrap_or_else(|| own.clone());

    // (a) small-file replace: N directories, each with a last_result and a spare.
    println!(
        "(a) atomic replace of a {}-byte last_result, {orders} directories, median of {reps}",
        LAST_RESULT.len()
    );
    let idle = Machine::calibrate(if benchmarking { 3 } else { 0 });
    println!("idle machine: {:.3} CPU-s/s", idle.idle_rate);
    println!(
        "{:<20} {:>12} {:>14} {:>12}",
        "variant", "CPU us/op", "machine us/op", "wall us/op"
    );
    let dirs: Vec<PathBuf> = (0..orders)
        .map(|i| {
            let d = root.join(format!("a/{}/o{i}", i % 40));
            std::fs::create_dir_all(&d).unwrap();
            std::fs::write(d.join("last_result"), LAST_RESULT).unwrap();
            std::fs::write(d.join(".last_result.next"), LAST_RESULT).unwrap();
            d
        })
        .collect();
    let fds: Vec<OwnedFd> = dirs.iter().map(|d| open_dir(d)).collect();
    let kinds = [
        Replace::Path,
        Replace::DirFd,
        Replace::Exchange,
        Replace::ExchangeFstat,
        Replace::ExchangeFstatPath,
    ];
    // The last row: `exchange` again, each round after a syncfs (timed with it).
    let rows = kinds.len() + 1;
    let mut cpu: Vec<Vec<f64>> = vec![Vec::new(); rows];
    let mut wall: Vec<Vec<f64>> = vec![Vec::new(); rows];
    let mut mach: Vec<Vec<f64>> = vec![Vec::new(); rows];
    let fs = open_dir(&root);
    // Interleaved: every repetition runs every variant once, so load on the machine hits all.
    replace_round(Replace::Exchange, &dirs, &fds);
    for _ in 0..reps {
        for k in 0..rows {
            let (c0, w0, span) = (cpu_seconds(), Instant::now(), Span::start());
            if k == kinds.len() {
                // SAFETY: syncfs on a descriptor this function owns.
                check(unsafe { libc::syncfs(fs.as_raw_fd()) }, "syncfs");
            }
            replace_round(kinds.get(k).copied().unwrap_or(Replace::Exchange), &dirs, &fds);
            cpu[k].push((cpu_seconds() - c0) * 1e6 / orders as f64);
            wall[k].push(w0.elapsed().as_secs_f64() * 1e6 / orders as f64);
            mach[k].push(idle.beyond_idle(span) * 1e6 / orders as f64);
        }
    }
    for k in 0..rows {
        let label = kinds
            .get(k)
            .map_or("ExchangeAfterSyncfs".to_owned(), |kind| format!("{kind:?}"));
        println!(
            "{:<20} {:>12.2} {:>14.2} {:>12.2}",
            label,
            median(cpu[k].clone()),
            median(mach[k].clone()),
            median(wall[k].clone())
        );
    }

    // (a') the daemon's pattern alone: replace round, syncfs, nothing else between.
    // SAFETY: syncfs on a descriptor this function owns.
    check(unsafe { libc::syncfs(fs.as_raw_fd()) }, "syncfs");
    let (cpu, mach, wall) = replace_then_syncfs(Replace::Exchange, &dirs, &fds, &fs, reps, &idle);
    println!(
        "{:<20} {:>12.2} {:>14.2} {:>12.2}",
        "ExchangeThenSyncfs",
        median(cpu),
        median(mach),
        median(wall)
    );

    // (a'') the daemon's pattern in the daemon's layout.
    let layout_orders: usize = std::env::var("FLOOR_LAYOUT_ORDERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(if benchmarking { 10_000 } else { 10 });
    if layout_orders > 0 {
        let rrd = vec![0x5au8; 470_000];
        let parent = root.join("c/output/bench");
        std::fs::create_dir_all(&parent).unwrap();
        let dirs: Vec<PathBuf> = (0..layout_orders)
            .map(|i| {
                let d = parent.join(format!("o{i}"));
                std::fs::create_dir(&d).unwrap();
                std::fs::write(d.join("main.rrd"), &rrd).unwrap();
                std::fs::write(d.join("last_result"), LAST_RESULT).unwrap();
                std::fs::write(d.join(".last_result.next"), LAST_RESULT).unwrap();
                d
            })
            .collect();
        let fds: Vec<OwnedFd> = dirs.iter().map(|d| open_dir(d)).collect();
        let fs = open_dir(&parent);
        // SAFETY: syncfs on a descriptor this function owns.
        check(unsafe { libc::syncfs(fs.as_raw_fd()) }, "syncfs");
        for kind in [Replace::ExchangeFstatPath, Replace::Exchange] {
            let (cpu, mach, wall) = replace_then_syncfs(kind, &dirs, &fds, &fs, reps, &idle);
            println!(
                "{:<20} {:>12.2} {:>14.2} {:>12.2}   ({layout_orders} order directories in one parent, each beside a 470 KB file, then syncfs)",
                format!("Layout{kind:?}"),
                median(cpu),
                median(mach),
                median(wall)
            );
        }
        drop(fds);
        std::fs::remove_dir_all(root.join("c")).unwrap();
    }

    // (b) snapshot write + fsync.
    let results: String = (0..1000)
        .map(|i| format!("bench/o{i}\t1310116500\t1310116524\t20\t3\t0.000570\t0.000580\t0.000590\t-\t\n"))
        .collect();
    let mut body = format!("spoolmon-ping 1 batch 1000\n{results}").into_bytes();
    while body.len() < 100_000 {
        body.extend_from_slice(b"#\n");
    }
    let snaps = if benchmarking { 20 } else { 2 };
    println!();
    println!(
        "(b) snapshot of {} bytes (1,000 results), {snaps} snapshots, median of {reps}",
        body.len()
    );
    println!(
        "{:<20} {:>12} {:>16} {:>12}",
        "variant", "CPU us/snap", "machine us/snap", "wall ms/snap"
    );
    let skinds = [Snapshot::FsyncAll, Snapshot::FsyncFileAndParent, Snapshot::NoSync];
    let mut scpu: Vec<Vec<f64>> = vec![Vec::new(); skinds.len()];
    let mut swall: Vec<Vec<f64>> = vec![Vec::new(); skinds.len()];
    let mut smach: Vec<Vec<f64>> = vec![Vec::new(); skinds.len()];
    let mut n = 0;
    for _ in 0..reps {
        for (k, kind) in skinds.iter().enumerate() {
            let parent = root.join(format!("b/{k}"));
            std::fs::create_dir_all(&parent).unwrap();
            let pfd = open_dir(&parent);
            let (c0, w0, span) = (cpu_seconds(), Instant::now(), Span::start());
            for _ in 0..snaps {
                snapshot_once(*kind, &parent, &pfd, n, &body);
                n += 1;
            }
            scpu[k].push((cpu_seconds() - c0) * 1e6 / snaps as f64);
            swall[k].push(w0.elapsed().as_secs_f64() * 1e3 / snaps as f64);
            smach[k].push(idle.beyond_idle(span) * 1e6 / snaps as f64);
        }
    }
    for (k, kind) in skinds.iter().enumerate() {
        println!(
            "{:<20} {:>12.1} {:>16.1} {:>12.2}",
            format!("{kind:?}"),
            median(scpu[k].clone()),
            median(smach[k].clone()),
            median(swall[k].clone())
        );
    }
    if args.get(2).is_none() {
        std::fs::remove_dir_all(&own).unwrap();
    }
}
