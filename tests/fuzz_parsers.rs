//! Fuzzing every parser of input that another program writes: order YAML, `ping.jsonl`, HAProxy
//! `show info` / `show stat` (the collector's reply check and processing), outbox segments and
//! the acknowledgement file, and the config.
//!
//! `cargo fuzz` needs a nightly toolchain, so these are proptest properties that run in
//! `cargo test`: 512 cases per property by default, `PROPTEST_CASES=<n>` for more (README,
//! "Fuzzing"). Each parser gets two kinds of property:
//! - **garbage**: real samples (`examples/`, `tests/data/haproxy/`) and generated valid inputs,
//!   mutated (cut at any byte, bit flips, inserted and deleted bytes, duplicated lines, huge
//!   numbers, deep nesting, long lines, invalid UTF-8, NUL bytes), and plain random bytes. The
//!   parser returns `Ok` or a typed error whose message is not empty; it never panics, never
//!   hangs (every case must finish), and what it accepts respects its documented limits. A
//!   counting allocator checks that neither the largest allocation nor the bytes allocated in
//!   all are out of proportion to the input (alias bombs of every shape, header counts).
//! - **round trip**: a generated valid input parses to exactly what was generated; for outbox
//!   segments, a corrupt one delivers exactly the records before its first changed byte, and
//!   whatever the `ack` says the reader resends whole lines.
//!
//! Orders are parsed with a resolver that accepts IP literals only, so no case waits for DNS.
//!
//! Only the public API is used, as a producer's file reaches it.

use proptest::prelude::*;
use proptest::sample::Index;
use proptest::test_runner::{Config as ProptestConfig, FileFailurePersistence};
use spoolmon::collect::haproxy::validate::{check_info, check_stat};
use spoolmon::config::Config;
use spoolmon::orders::order::alert::{Alert, Level, Metric, Threshold};
use spoolmon::orders::order::{
    parse_order_with, ExecKind, ExecSpec, Expiry, FpingSpec, HttpingSpec, Order, OrderError, ParsedOrder, ProbeSpec,
    TcpSpec, MAX_INTERVAL_MS, MAX_PINGS, MAX_STEP,
};
use spoolmon::probe::icmp::{Engine, IcmpOptions as IcmpConfig};
use spoolmon::process::haproxy::{aggregate, HaproxyOptions};
use spoolmon::shared::measurement::{failure_reason, OrderId, OrderResult, RrdTemplate, TelegrafMeta, MAX_FAILURE_LEN};
use spoolmon::sink::outbox::{self, Ack, AckRead, Counters, Outbox, OutboxLimits, Position};
use spoolmon::spool::beneath::Dir;
use spoolmon::spool::snapshot::{decode_ping, encode_ping, read_ping, PingBounds, PingHeader, PING_FILE};

/// The processing bounds at the time of the test (generated results are recent).
fn bounds() -> PingBounds {
    PingBounds::at(spoolmon::shared::clock::unix_now())
}
use spoolmon::yaml_expansion::MAX_ALIAS_NODES;
use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::collections::BTreeMap;
use std::io::Read;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

// ---------------------------------------------------------------------------------------------
// Harness: case count, the largest-allocation probe, scratch directories
// ---------------------------------------------------------------------------------------------

/// Cases per property: `PROPTEST_CASES`, else 512.
fn cases() -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(512)
}

fn fuzz_config() -> ProptestConfig {
    config_with_cases(cases())
}

/// For the properties over a small space of shapes (alias bombs, nesting depths), whose cases
/// are large documents: an eighth of the cases.
fn shapes_config() -> ProptestConfig {
    config_with_cases((cases() / 8).max(1))
}

fn config_with_cases(cases: u32) -> ProptestConfig {
    ProptestConfig {
        cases,
        // A failing case is kept in `tests/fuzz_parsers.proptest-regressions` and tried first
        // on every later run.
        failure_persistence: Some(Box::new(FileFailurePersistence::WithSource("proptest-regressions"))),
        ..ProptestConfig::default()
    }
}

/// The system allocator, remembering per thread the largest single allocation asked for and the
/// bytes asked for in all.
struct LargestAllocation;

thread_local! {
    static LARGEST: Cell<usize> = const { Cell::new(0) };
    static TOTAL: Cell<usize> = const { Cell::new(0) };
}

fn note(size: usize) {
    let _ = LARGEST.try_with(|largest| largest.set(largest.get().max(size)));
    let _ = TOTAL.try_with(|total| total.set(total.get().saturating_add(size)));
}

// SAFETY: every call is passed on unchanged to `System`; `note` only touches a const-initialised
// thread-local `Cell<usize>` (no allocation, no destructor).
unsafe impl GlobalAlloc for LargestAllocation {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note(new_size);
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: LargestAllocation = LargestAllocation;

/// What `parse` allocated: the largest single allocation and the bytes asked for in all
/// (freed or not: a bound on both the memory and the work of a parse).
#[derive(Clone, Copy, Debug)]
struct Allocated {
    largest: usize,
    total: usize,
}

impl Allocated {
    /// Panics unless this is within what a parser may allocate for `len` bytes of input: at
    /// once, a fixed allowance plus a small multiple of the input (strings, vectors and tables
    /// of what was read); in all, a larger one (every token, key and value is a few small
    /// allocations).
    fn check(self, what: &str, len: usize) {
        assert!(
            self.largest <= (1 << 20) + 16 * len,
            "{what} of {len} bytes allocated {} bytes at once",
            self.largest
        );
        assert!(
            self.total <= (64 << 20) + 512 * len,
            "{what} of {len} bytes allocated {} bytes in all",
            self.total
        );
    }
}

/// Runs `parse` and returns its result with what it allocated.
fn allocations<T>(parse: impl FnOnce() -> T) -> (T, Allocated) {
    LARGEST.with(|largest| largest.set(0));
    TOTAL.with(|total| total.set(0));
    let out = parse();
    let allocated = Allocated {
        largest: LARGEST.with(Cell::get),
        total: TOTAL.with(Cell::get),
    };
    (out, allocated)
}

/// A scratch directory, in memory when the machine has `/dev/shm` (the outbox fsyncs).
fn scratch() -> tempfile::TempDir {
    let shm = Path::new("/dev/shm");
    if shm.is_dir() {
        tempfile::Builder::new().prefix("fuzz-parsers").tempdir_in(shm).unwrap()
    } else {
        tempfile::tempdir().unwrap()
    }
}

/// The text a `&str` parser sees for `bytes`: as is when UTF-8, else with the invalid sequences
/// replaced (callers refuse non-UTF-8 files before parsing; the replacement characters still
/// reach the parser).
fn as_text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

// ---------------------------------------------------------------------------------------------
// Mutations: structured garbage made from a valid sample
// ---------------------------------------------------------------------------------------------

/// One change to a sample. Positions are [`Index`]es into the bytes as they are when applied.
#[derive(Clone, Debug)]
enum Mutation {
    Truncate(Index),
    FlipBit(Index, u8),
    Insert(Index, Vec<u8>),
    Delete(Index, usize),
    /// Overwrites bytes in place (the length is kept).
    Overwrite(Index, Vec<u8>),
    DuplicateLine(Index),
    DeleteLine(Index),
    /// Copies a range of the sample to another place (keys, rows and records out of place).
    Splice {
        from: Index,
        len: usize,
        to: Index,
    },
    /// Replaces the number (run of digits) at or after a position by a huge or odd one.
    HugeNumber(Index, &'static str),
    /// Inserts `depth` opening brackets (and, when `closed`, as many closing ones).
    Nesting {
        at: Index,
        depth: usize,
        open: u8,
        closed: bool,
    },
    /// Inserts a line of `len` bytes of one character.
    LongLine {
        at: Index,
        len: usize,
        byte: u8,
    },
    InvalidUtf8(Index, &'static [u8]),
    Nul(Index),
}

const HUGE_NUMBERS: [&str; 12] = [
    "99999999999999999999999999999999",
    "18446744073709551616",
    "18446744073709551615",
    "9223372036854775808",
    "-9223372036854775809",
    "4294967296",
    "-1",
    "1e308",
    "-1e309",
    "0x7fffffff",
    ".nan",
    "1.7976931348623157e308",
];

const INVALID_UTF8: [&[u8]; 6] = [
    b"\xff",
    b"\xc3",
    b"\xed\xa0\x80",
    b"\xf4\x90\x80\x80",
    b"\xc0\xaf",
    b"\xfe\xfe\xff",
];

fn mutation() -> impl Strategy<Value = Mutation> {
    let bytes = prop::collection::vec(any::<u8>(), 1..16);
    prop_oneof![
        3 => any::<Index>().prop_map(Mutation::Truncate),
        4 => (any::<Index>(), 0u8..8).prop_map(|(i, bit)| Mutation::FlipBit(i, bit)),
        3 => (any::<Index>(), bytes.clone()).prop_map(|(i, b)| Mutation::Insert(i, b)),
        2 => (any::<Index>(), 1usize..32).prop_map(|(i, n)| Mutation::Delete(i, n)),
        2 => (any::<Index>(), bytes).prop_map(|(i, b)| Mutation::Overwrite(i, b)),
        2 => any::<Index>().prop_map(Mutation::DuplicateLine),
        1 => any::<Index>().prop_map(Mutation::DeleteLine),
        2 => (any::<Index>(), 1usize..200, any::<Index>()).prop_map(|(from, len, to)| Mutation::Splice { from, len, to }),
        2 => (any::<Index>(), prop::sample::select(&HUGE_NUMBERS[..])).prop_map(|(i, n)| Mutation::HugeNumber(i, n)),
        1 => (any::<Index>(), 1usize..400, prop::sample::select(&b"[{(\""[..]), any::<bool>())
            .prop_map(|(at, depth, open, closed)| Mutation::Nesting { at, depth, open, closed }),
        1 => (any::<Index>(), 1usize..(64 << 10), prop::sample::select(&b"a 9,:\t-\"#"[..]))
            .prop_map(|(at, len, byte)| Mutation::LongLine { at, len, byte }),
        1 => (any::<Index>(), prop::sample::select(&INVALID_UTF8[..])).prop_map(|(i, b)| Mutation::InvalidUtf8(i, b)),
        1 => any::<Index>().prop_map(Mutation::Nul),
    ]
}

/// A mutation that cannot remove or copy whole records (whose removal or copy leaves a valid
/// segment: the format has no record numbers, by design): no line or range deletions,
/// duplicated lines or splices; cuts, flips, overwrites and insertions of new bytes.
fn corruption() -> impl Strategy<Value = Mutation> {
    mutation().prop_filter("removes or copies no whole record", |m| {
        !matches!(
            m,
            Mutation::DuplicateLine(_) | Mutation::DeleteLine(_) | Mutation::Delete(..) | Mutation::Splice { .. }
        )
    })
}

/// Up to eight mutations, applied in order.
fn mutations() -> impl Strategy<Value = Vec<Mutation>> {
    prop::collection::vec(mutation(), 1..8)
}

/// Position `index` in `0..=len`.
fn at(index: &Index, len: usize) -> usize {
    index.index(len + 1)
}

/// The line of `bytes` holding position `index`, as a byte range including its newline.
fn line_range(bytes: &[u8], index: &Index) -> std::ops::Range<usize> {
    let pos = at(index, bytes.len()).min(bytes.len().saturating_sub(1));
    let start = bytes[..pos].iter().rposition(|&b| b == b'\n').map_or(0, |p| p + 1);
    let end = bytes[pos..]
        .iter()
        .position(|&b| b == b'\n')
        .map_or(bytes.len(), |p| pos + p + 1);
    start..end
}

fn apply(sample: &[u8], mutations: &[Mutation]) -> Vec<u8> {
    let mut bytes = sample.to_vec();
    for mutation in mutations {
        let len = bytes.len();
        match mutation {
            Mutation::Truncate(i) => bytes.truncate(at(i, len)),
            Mutation::FlipBit(i, bit) if len > 0 => bytes[i.index(len)] ^= 1 << bit,
            Mutation::Insert(i, new) => {
                let pos = at(i, len);
                bytes.splice(pos..pos, new.iter().copied());
            }
            Mutation::Delete(i, n) => {
                let pos = at(i, len);
                bytes.drain(pos..(pos + n).min(len));
            }
            Mutation::Overwrite(i, new) => {
                let pos = at(i, len);
                for (offset, byte) in new.iter().enumerate() {
                    if let Some(slot) = bytes.get_mut(pos + offset) {
                        *slot = *byte;
                    }
                }
            }
            Mutation::DuplicateLine(i) if len > 0 => {
                let range = line_range(&bytes, i);
                let line = bytes[range.clone()].to_vec();
                bytes.splice(range.end..range.end, line);
            }
            Mutation::DeleteLine(i) if len > 0 => {
                bytes.drain(line_range(&bytes, i));
            }
            Mutation::Splice { from, len: n, to } if len > 0 => {
                let start = from.index(len);
                let chunk = bytes[start..(start + n).min(len)].to_vec();
                let pos = at(to, len);
                bytes.splice(pos..pos, chunk);
            }
            Mutation::HugeNumber(i, number) => {
                let pos = at(i, len);
                match bytes[pos..].iter().position(u8::is_ascii_digit) {
                    Some(offset) => {
                        let start = pos + offset;
                        let end = start + bytes[start..].iter().take_while(|b| b.is_ascii_digit()).count();
                        bytes.splice(start..end, number.bytes());
                    }
                    None => {
                        bytes.splice(pos..pos, number.bytes());
                    }
                }
            }
            Mutation::Nesting {
                at: i,
                depth,
                open,
                closed,
            } => {
                let pos = at(i, len);
                let close = match open {
                    b'[' => b']',
                    b'{' => b'}',
                    b'(' => b')',
                    other => *other,
                };
                let mut nest = vec![*open; *depth];
                if *closed {
                    nest.extend(std::iter::repeat_n(close, *depth));
                }
                bytes.splice(pos..pos, nest);
            }
            Mutation::LongLine { at: i, len: n, byte } => {
                let pos = at(i, len);
                let mut line = vec![*byte; *n];
                line.push(b'\n');
                bytes.splice(pos..pos, line);
            }
            Mutation::InvalidUtf8(i, sequence) => {
                let pos = at(i, len);
                bytes.splice(pos..pos, sequence.iter().copied());
            }
            Mutation::Nul(i) => {
                let pos = at(i, len);
                bytes.insert(pos, 0);
            }
            // Mutations of a byte or a line of an empty input leave it empty.
            Mutation::FlipBit(..) | Mutation::DuplicateLine(_) | Mutation::DeleteLine(_) | Mutation::Splice { .. } => {}
        }
    }
    bytes
}

/// Text for YAML: a double-quoted scalar that holds `text` exactly (every character outside
/// printable ASCII escaped), so generated strings reach the parser unchanged.
fn quoted(text: &str) -> String {
    let mut out = String::from("\"");
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            ' '..='~' => out.push(c),
            other => out.push_str(&format!("\\U{:08x}", other as u32)),
        }
    }
    out.push('"');
    out
}

// ---------------------------------------------------------------------------------------------
// Order YAML
// ---------------------------------------------------------------------------------------------

const README_ORDERS: [&str; 7] = [
    "user: tmon\ntask: tun_eth0_4061\nstep: 300\npings: 20\nprobe: fping\nfping:\n    host: 62.179.116.250\n    interface: eth0\n    source_ip: 10.0.0.12\nmeasurement_name: tunnel\ntags:\n    tunnel_id: 12458\n    remote_host: 5292\n",
    "user: tmon\nstep: 20\npings: 3\nprobe: httping\nhttping:\n    url: http://www.example.com\n    user_agent: pingmachine\n    proxy: http://10.0.0.24:8080\n    http_codes_as_failure: 403,407,503\n    interval: 0.5\n",
    "user: tmon\nstep: 20\npings: 3\nprobe: tcp\ntcp: {host: 127.0.0.1, port: 8080, interval: 250}\ntelegraf:\n  measurement_name: m\n  tags: {a: 1, b: two}\n",
    "user: tmon\nstep: 20\npings: 3\nprobe: exec\nexec: {command: ['/bin/echo', 'time=1 ms', '{host}'], host: '::1', timeout: 500}\nrrd_template: norrd\n",
    "user: tmon\nstep: 20\npings: 3\nprobe: sping\nsping:\n    host: 1-ff00:0:110,10.0.0.1\n    interface: eth0\n    flags: --sciond 1.2.3.4 -v\n",
    "defaults: &d {user: tmon, step: 20, pings: 3}\n<<: *d\nprobe: pping\npping: {host: 10.0.0.1, flags: [-v]}\n",
    "user: tmon\nstep: 20\npings: 20\nprobe: fping\nfping: {host: 192.0.2.1}\nalert:\n    warning: {loss: 10%, median: 100ms}\n    critical:\n        loss: 50%\n        max: 1s\n        median: \"@0.5:2\"\n",
];

/// The example orders shipped in `examples/orders/`, and the README's order shapes.
fn order_samples() -> &'static [String] {
    static SAMPLES: OnceLock<Vec<String>> = OnceLock::new();
    SAMPLES.get_or_init(|| {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/orders/loopback");
        let mut samples: Vec<String> = ["localhost-v4", "localhost-v6", "spread"]
            .iter()
            .map(|name| std::fs::read_to_string(root.join(name)).expect("example order"))
            .collect();
        samples.extend(README_ORDERS.iter().map(|s| s.to_string()));
        samples
    })
}

fn order_id() -> OrderId {
    OrderId::new("fuzz/target").unwrap()
}

/// Never asks a resolver: a name that is not an IP literal "does not resolve" (a fuzz case must
/// not wait for DNS).
fn literal_only(host: &str) -> Result<IpAddr, String> {
    host.parse().map_err(|_| format!("{host} is not an IP literal"))
}

fn parse_order_text(text: &str, telegraf: Option<&str>) -> Result<ParsedOrder, OrderError> {
    parse_order_with(
        &order_id(),
        text,
        telegraf,
        &Config::default().order_options(),
        &literal_only,
    )
}

/// What any accepted order must respect, whatever its text.
fn check_accepted_order(order: &Order) {
    assert!((1..=MAX_STEP).contains(&u64::from(order.step)), "step {}", order.step);
    assert!(
        (1..=MAX_PINGS).contains(&u64::from(order.pings)),
        "pings {}",
        order.pings
    );
    let interval_ok = |ms: Option<u64>| ms.is_none_or(|ms| (1..=MAX_INTERVAL_MS).contains(&ms));
    match &order.probe {
        ProbeSpec::Fping(f) => assert!(interval_ok(f.interval_ms), "{f:?}"),
        ProbeSpec::Tcp(t) => assert!(interval_ok(t.interval_ms) && t.port >= 1, "{t:?}"),
        ProbeSpec::Httping(h) => {
            assert!(
                h.interval.is_none_or(|s| s.is_finite() && s > 0.0 && s <= 3600.0),
                "{h:?}"
            );
            assert!(h.http_codes_as_failure.iter().all(|c| (100..=599).contains(c)), "{h:?}");
        }
        ProbeSpec::Exec(e) => assert!(!e.command.is_empty() && interval_ok(e.timeout_ms), "{e:?}"),
    }
}

/// Parses order text (and a `telegraf/<id>` file) that may be garbage: an order within its
/// limits or an error with a message, and no allocation out of proportion to the input.
fn parse_garbage_order(text: &str, telegraf: Option<&str>) {
    let input_len = text.len() + telegraf.map_or(0, str::len);
    let (result, allocated) = allocations(|| parse_order_text(text, telegraf));
    match result {
        Ok(parsed) => check_accepted_order(&parsed.order),
        Err(e) => assert!(!e.to_string().is_empty()),
    }
    allocated.check("parsing an order", input_len);
}

/// Strings without placeholders (`{`), so a command's needs are known.
fn word() -> impl Strategy<Value = String> {
    "[^{]{0,12}"
}

fn text_without_controls(max: usize) -> impl Strategy<Value = String> {
    prop::collection::vec(
        any::<char>().prop_filter("no control characters", |c| !c.is_control()),
        1..max,
    )
    .prop_map(|chars| chars.into_iter().collect())
}

fn ip() -> impl Strategy<Value = IpAddr> {
    prop_oneof![
        any::<[u8; 4]>().prop_map(IpAddr::from),
        any::<[u8; 16]>().prop_map(IpAddr::from),
    ]
}

fn interface() -> impl Strategy<Value = String> {
    prop::collection::vec(
        any::<char>().prop_filter("interface character", |c| {
            *c != '/' && !c.is_whitespace() && !c.is_control()
        }),
        1..6,
    )
    .prop_map(|chars| chars.into_iter().collect::<String>())
    .prop_filter("at most 15 bytes", |name| name.len() <= 15)
}

/// A host for sections that check only its shape (exec, sping, pping).
fn host_name() -> impl Strategy<Value = String> {
    "[a-z0-9][a-z0-9.:,-]{0,40}"
}

fn interval_ms() -> impl Strategy<Value = Option<u64>> {
    prop::option::of(1..=MAX_INTERVAL_MS)
}

/// An integer as YAML: plain, or quoted as pingmachine's Perl producers wrote it.
fn integer_text(value: u64, quote: bool) -> String {
    if quote {
        format!("'{value}'")
    } else {
        value.to_string()
    }
}

/// `key: value` lines of a section, indented.
fn section(name: &str, entries: &[(String, String)]) -> String {
    let mut text = format!("{name}:\n");
    for (key, value) in entries {
        text.push_str(&format!("    {key}: {value}\n"));
    }
    text
}

fn probe() -> impl Strategy<Value = (ProbeSpec, String, &'static str)> {
    let fping = (
        ip(),
        prop::option::of(ip()),
        prop::option::of(interface()),
        interval_ms(),
    )
        .prop_map(|(address, source_ip, interface, interval_ms)| {
            let mut entries = vec![("host".to_string(), quoted(&address.to_string()))];
            if let Some(ip) = source_ip {
                entries.push(("source_ip".into(), quoted(&ip.to_string())));
            }
            if let Some(name) = &interface {
                entries.push(("interface".into(), quoted(name)));
            }
            if let Some(ms) = interval_ms {
                entries.push(("interval".into(), ms.to_string()));
            }
            let spec = ProbeSpec::Fping(FpingSpec {
                host: address.to_string(),
                address,
                source_ip,
                interface,
                interval_ms,
            });
            (spec, section("fping", &entries), "fping")
        });
    let tcp = (ip(), 1..=u16::MAX, prop::option::of(ip()), interval_ms(), any::<bool>()).prop_map(
        |(address, port, source_ip, interval_ms, quote)| {
            let mut entries = vec![
                ("host".to_string(), quoted(&address.to_string())),
                ("port".into(), integer_text(u64::from(port), quote)),
            ];
            if let Some(ip) = source_ip {
                entries.push(("source_ip".into(), quoted(&ip.to_string())));
            }
            if let Some(ms) = interval_ms {
                entries.push(("interval".into(), ms.to_string()));
            }
            let spec = ProbeSpec::Tcp(TcpSpec {
                host: address.to_string(),
                port,
                address: SocketAddr::new(address, port),
                source_ip,
                interval_ms,
            });
            (spec, section("tcp", &entries), "tcp")
        },
    );
    let httping = (
        prop::sample::select(&["http://", "https://", "HTTP://", "HttpS://"][..]),
        "[a-z0-9.-]{1,20}(:[0-9]{1,5})?(/[!-~]{0,30})?",
        prop::option::of(any::<String>()),
        prop::option::of("[!-~]{1,30}"),
        prop::collection::vec(100u16..=599, 0..5),
        any::<bool>(),
        prop::option::of(1..=MAX_INTERVAL_MS),
    )
        .prop_map(|(scheme, rest, user_agent, proxy, codes, as_string, interval)| {
            let url = format!("{scheme}{rest}");
            let mut entries = vec![("url".to_string(), quoted(&url))];
            if let Some(agent) = &user_agent {
                entries.push(("user_agent".into(), quoted(agent)));
            }
            if let Some(proxy) = &proxy {
                entries.push(("proxy".into(), quoted(proxy)));
            }
            if !codes.is_empty() {
                let list: Vec<String> = codes.iter().map(u16::to_string).collect();
                let value = if as_string {
                    quoted(&list.join(","))
                } else {
                    format!("[{}]", list.join(", "))
                };
                entries.push(("http_codes_as_failure".into(), value));
            }
            let interval = interval.map(|ms| ms as f64 / 1000.0);
            if let Some(seconds) = interval {
                entries.push(("interval".into(), format!("{seconds}")));
            }
            let spec = ProbeSpec::Httping(HttpingSpec {
                url,
                user_agent,
                proxy,
                http_codes_as_failure: codes,
                interval,
            });
            (spec, section("httping", &entries), "httping")
        });
    let exec = (
        prop::collection::vec(word(), 1..4),
        prop::option::of(host_name()),
        prop::option::of(ip()),
        prop::option::of(interface()),
        interval_ms(),
    )
        .prop_map(|(mut command, host, source_ip, interface, timeout_ms)| {
            if host.is_some() {
                command.push("{host}".into());
            }
            let list: Vec<String> = command.iter().map(|w| quoted(w)).collect();
            let mut entries = vec![("command".to_string(), format!("[{}]", list.join(", ")))];
            if let Some(host) = &host {
                entries.push(("host".into(), quoted(host)));
            }
            if let Some(ip) = source_ip {
                entries.push(("source_ip".into(), quoted(&ip.to_string())));
            }
            if let Some(name) = &interface {
                entries.push(("interface".into(), quoted(name)));
            }
            if let Some(ms) = timeout_ms {
                entries.push(("timeout".into(), ms.to_string()));
            }
            let spec = ProbeSpec::Exec(ExecSpec {
                kind: ExecKind::Exec,
                command,
                host,
                source_ip,
                interface,
                flags: Vec::new(),
                timeout_ms,
            });
            (spec, section("exec", &entries), "exec")
        });
    let scion = (
        any::<bool>(),
        host_name(),
        prop::collection::vec("[!-z|~]{1,10}", 0..4),
        any::<bool>(),
        interval_ms(),
    )
        .prop_map(|(sping, host, flags, flags_as_list, timeout_ms)| {
            let (kind, name) = if sping {
                (ExecKind::Sping, "sping")
            } else {
                (ExecKind::Pping, "pping")
            };
            let mut entries = vec![("host".to_string(), quoted(&host))];
            if !flags.is_empty() {
                let value = if flags_as_list {
                    let list: Vec<String> = flags.iter().map(|w| quoted(w)).collect();
                    format!("[{}]", list.join(", "))
                } else {
                    quoted(&flags.join(" "))
                };
                entries.push(("flags".into(), value));
            }
            if let Some(ms) = timeout_ms {
                entries.push(("timeout".into(), ms.to_string()));
            }
            let defaults = Config::default();
            let spec = ProbeSpec::Exec(ExecSpec {
                kind,
                command: if sping {
                    defaults.sping_command
                } else {
                    defaults.pping_command
                },
                host: Some(host),
                source_ip: None,
                interface: None,
                flags,
                timeout_ms,
            });
            (spec, section(name, &entries), name)
        });
    prop_oneof![fping, tcp, httping, exec, scion]
}

fn telegraf_meta() -> impl Strategy<Value = TelegrafMeta> {
    (
        text_without_controls(20),
        // Not a tag named `<<`: yaml_serde reads a `<<` key as YAML 1.1's merge key even when
        // quoted, so such an order is refused ("merge key `<<`: expected a mapping"), a clear
        // error rather than a tag; every other name parses back as written.
        prop::collection::btree_map(
            text_without_controls(10).prop_filter("the merge key", |key| key != "<<"),
            text_without_controls(10),
            0..4,
        ),
    )
        .prop_map(|(measurement_name, tags)| TelegrafMeta { measurement_name, tags })
}

/// Where an order's forwarding metadata is written.
#[derive(Clone, Copy, Debug)]
enum TelegrafPlace {
    Section,
    TopLevel,
    OldInterfaceFile,
}

fn telegraf_text(meta: &TelegrafMeta, indent: &str) -> String {
    let mut text = format!("{indent}measurement_name: {}\n", quoted(&meta.measurement_name));
    if !meta.tags.is_empty() {
        text.push_str(&format!("{indent}tags:\n"));
        for (key, value) in &meta.tags {
            text.push_str(&format!("{indent}    {}: {}\n", quoted(key), quoted(value)));
        }
    }
    text
}

/// One generated threshold value: as written, and (for a plain value, no range) the value in
/// the metric's own unit at which it stops being quiet.
#[derive(Clone, Debug)]
struct GeneratedValue {
    metric: Metric,
    written: String,
    plain: Option<f64>,
}

fn threshold_value(metric: Metric) -> impl Strategy<Value = GeneratedValue> {
    let number = match metric {
        // A count, or a percentage (`%`), with up to two decimals.
        Metric::Loss => (0u32..=100_000, any::<bool>())
            .prop_map(|(hundredths, percent)| {
                let (value, unit) = if percent {
                    (f64::from(hundredths) / 1000.0, "%")
                } else {
                    (f64::from(hundredths % 1001), "")
                };
                (format!("{value}{unit}"), value)
            })
            .boxed(),
        // Milliseconds, microseconds or seconds.
        _ => (
            0u32..=3_600_000,
            prop::sample::select(&[("ms", -3), ("us", -6), ("s", 0), ("", 0)][..]),
        )
            .prop_map(|(n, (unit, exponent))| {
                let n = if exponent == 0 { n % 3601 } else { n };
                let value: f64 = format!("{n}e{exponent}").parse().unwrap();
                (format!("{n}{unit}"), value)
            })
            .boxed(),
    };
    (number.clone(), number, 0u8..5).prop_map(move |((a, a_value), (b, b_value), form)| {
        let low_high = if a_value <= b_value { (&a, &b) } else { (&b, &a) };
        let same_kind = a.ends_with('%') == b.ends_with('%');
        let (written, plain) = match form {
            0 | 1 => (a.clone(), Some(a_value)),
            2 if same_kind => (format!("{}:{}", low_high.0, low_high.1), None),
            3 => (format!("~:{a}"), None),
            4 if same_kind => (format!("@{}:{}", low_high.0, low_high.1), None),
            _ => (format!("{a}:"), None),
        };
        GeneratedValue { metric, written, plain }
    })
}

/// A generated level: any subset of the metrics.
fn threshold_level() -> impl Strategy<Value = Vec<GeneratedValue>> {
    (
        prop::option::of(threshold_value(Metric::Loss)),
        prop::option::of(threshold_value(Metric::Median)),
        prop::option::of(threshold_value(Metric::Max)),
    )
        .prop_map(|(a, b, c)| [a, b, c].into_iter().flatten().collect())
}

/// A value for YAML: plain when YAML reads it back as the same text (a unit makes it a
/// string, an integer prints as written), else double-quoted.
fn yaml_value(written: &str) -> String {
    let plain = written.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'%')
        && (written.bytes().any(|b| b.is_ascii_alphabetic() || b == b'%')
            || !written.starts_with('0')
            || written == "0");
    if plain {
        written.to_string()
    } else {
        quoted(written)
    }
}

/// An `alert:` block for `warning` and `critical` (block or flow maps) and the [`Alert`] it must
/// give: the same values as a `-w`/`-c` list give (the two input paths must agree).
fn alert_text(warning: &[GeneratedValue], critical: &[GeneratedValue], flow: bool) -> (String, Alert) {
    let list = |values: &[GeneratedValue]| {
        values
            .iter()
            .map(|v| format!("{}={}", v.metric.name(), v.written))
            .collect::<Vec<_>>()
            .join(",")
    };
    let (w, c) = (list(warning), list(critical));
    let expected = Alert::parse_lists((!w.is_empty()).then_some(&w[..]), (!c.is_empty()).then_some(&c[..]))
        .unwrap_or_else(|e| panic!("{e}: {w} / {c}"));
    let mut text = String::from("alert:\n");
    for (name, values) in [("warning", warning), ("critical", critical)] {
        if values.is_empty() {
            continue;
        }
        let items: Vec<String> = values
            .iter()
            .map(|v| format!("{}: {}", v.metric.name(), yaml_value(&v.written)))
            .collect();
        if flow {
            text.push_str(&format!("    {name}: {{{}}}\n", items.join(", ")));
        } else {
            text.push_str(&format!("    {name}:\n"));
            for item in items {
                text.push_str(&format!("        {item}\n"));
            }
        }
    }
    (text, expected)
}

/// A valid order, its YAML text and (old interface) its `telegraf/<id>` file.
#[derive(Clone, Debug)]
struct GeneratedOrder {
    order: Order,
    text: String,
    telegraf_file: Option<String>,
}

fn generated_order() -> impl Strategy<Value = GeneratedOrder> {
    (
        any::<String>(),
        prop::option::of(any::<String>()),
        1..=MAX_STEP,
        1..=MAX_PINGS,
        any::<(bool, bool)>(),
        prop::option::of(any::<bool>()),
        // `expire:`: absent, `never`, or an explicit null (the timeout, as absent).
        prop::option::of(any::<bool>()),
        // `alert:`: absent, or levels in block or flow style.
        prop::option::of((threshold_level(), threshold_level(), any::<bool>())),
        probe(),
        prop::option::of((
            telegraf_meta(),
            prop::sample::select(
                &[
                    TelegrafPlace::Section,
                    TelegrafPlace::TopLevel,
                    TelegrafPlace::OldInterfaceFile,
                ][..],
            ),
        )),
    )
        .prop_flat_map(
            |(
                user,
                task,
                step,
                pings,
                (quote_step, quote_pings),
                template,
                expire,
                alert,
                (probe, probe_text, name),
                telegraf,
            )| {
                let mut blocks = vec![
                    format!("user: {}\n", quoted(&user)),
                    format!("step: {}\n", integer_text(step, quote_step)),
                    format!("pings: {}\n", integer_text(pings, quote_pings)),
                    format!("probe: {name}\n"),
                    probe_text,
                ];
                if let Some(task) = &task {
                    blocks.push(format!("task: {}\n", quoted(task)));
                }
                let rrd_template = match template {
                    None => RrdTemplate::Smokeping,
                    Some(true) => {
                        blocks.push("rrd_template: smokeping\n".into());
                        RrdTemplate::Smokeping
                    }
                    Some(false) => {
                        blocks.push("rrd_template: norrd\n".into());
                        RrdTemplate::Norrd
                    }
                };
                let expire = match expire {
                    None => Expiry::Timeout,
                    Some(true) => {
                        blocks.push("expire: never\n".into());
                        Expiry::Never
                    }
                    Some(false) => {
                        blocks.push("expire: ~\n".into());
                        Expiry::Timeout
                    }
                };
                let alert = match alert {
                    None => Alert::default(),
                    Some((warning, critical, flow)) => {
                        let (text, alert) = alert_text(&warning, &critical, flow);
                        blocks.push(text);
                        alert
                    }
                };
                let mut telegraf_file = None;
                match &telegraf {
                    Some((meta, TelegrafPlace::Section)) => {
                        blocks.push(format!("telegraf:\n{}", telegraf_text(meta, "    ")))
                    }
                    Some((meta, TelegrafPlace::TopLevel)) => blocks.push(telegraf_text(meta, "")),
                    Some((meta, TelegrafPlace::OldInterfaceFile)) => telegraf_file = Some(telegraf_text(meta, "")),
                    None => {}
                }
                let order = Order {
                    id: order_id(),
                    user,
                    task,
                    step: step as u32,
                    pings: pings as u32,
                    rrd_template,
                    probe,
                    telegraf: telegraf.map(|(meta, _)| meta),
                    expire,
                    alert: alert.shared(),
                };
                Just(blocks).prop_shuffle().prop_map(move |blocks| GeneratedOrder {
                    order: order.clone(),
                    text: blocks.concat(),
                    telegraf_file: telegraf_file.clone(),
                })
            },
        )
}

/// A "billion laughs" document: `depth` levels of anchors, each referring `width` times to the
/// level below, as lists or maps, hung below `place`.
fn alias_bomb(depth: u32, width: usize, maps: bool, place: usize) -> String {
    let level = |n: u32, inner: &str| {
        if maps {
            let entries: Vec<String> = (0..width).map(|i| format!("k{i}: {inner}")).collect();
            format!("&a{n} {{{}}}", entries.join(", "))
        } else {
            format!("&a{n} [{}]", vec![inner; width].join(", "))
        }
    };
    let mut anchors = vec![format!("a0: {}", level(0, "lol"))];
    for n in 1..=depth {
        anchors.push(format!("a{n}: {}", level(n, &format!("*a{}", n - 1))));
    }
    let body = anchors.join("\n");
    let top = format!("*a{depth}");
    match place {
        0 => format!("{body}\nuser: tmon\nstep: 20\npings: 3\nprobe: fping\nfping: {{host: 127.0.0.1}}\n"),
        1 => format!("bomb:\n  {}\nuser: {top}\nstep: 20\npings: 3\nprobe: fping\nfping: {{host: 127.0.0.1}}\n", anchors.join("\n  ")),
        2 => format!("bomb:\n  {}\nuser: tmon\nstep: 20\npings: 3\nprobe: fping\nfping: {{host: 127.0.0.1, x: {top}}}\n", anchors.join("\n  ")),
        _ => format!("bomb:\n  {}\nuser: tmon\nstep: 20\npings: 3\nprobe: fping\nfping: {{host: 127.0.0.1}}\nmeasurement_name: m\ntags: {{t: {top}}}\n", anchors.join("\n  ")),
    }
}

/// `items` items anchored once, then `aliases` aliases of them, below `place`.
fn replayed_alias(items: usize, aliases: usize, maps: bool, place: usize) -> String {
    let anchored = if maps {
        let entries: Vec<String> = (0..items).map(|i| format!("k{i}: v")).collect();
        format!("&x {{{}}}", entries.join(", "))
    } else {
        format!("&x [{}]", vec!["lol"; items].join(", "))
    };
    let refs = vec!["*x"; aliases].join(", ");
    let order = "step: 20\npings: 3\nprobe: fping\n";
    match place {
        0 => format!("a: {anchored}\nb: [{refs}]\nuser: tmon\n{order}fping: {{host: 127.0.0.1}}\n"),
        1 => format!("a: {anchored}\nuser: [{refs}]\n{order}fping: {{host: 127.0.0.1}}\n"),
        _ => format!("user: tmon\n{order}fping: {{host: 127.0.0.1, x: {anchored}, y: [{refs}]}}\n"),
    }
}

/// True for the refusal of a document whose aliases would expand too far.
fn is_expansion_error(result: &Result<ParsedOrder, OrderError>) -> bool {
    matches!(result, Err(OrderError::Yaml { message, .. })
        if message.contains("alias expansion limit") || message.contains("repetition limit"))
}

/// Leaves of the fully expanded bomb.
fn bomb_leaves(depth: u32, width: usize) -> f64 {
    (width as f64).powi(depth as i32 + 1)
}

/// Nesting `depth` deep as the value of `key`: block maps (`b`, one indentation deeper each)
/// first, since block style cannot appear inside flow style, then flow lists and maps.
fn nested(depth: usize, kinds: &[u8], key: &str) -> String {
    let levels: Vec<u8> = (0..depth).map(|i| kinds[i % kinds.len()]).collect();
    let mut text = format!("{key}:");
    let mut indent = 0;
    for _ in levels.iter().filter(|&&kind| kind == b'b') {
        indent += 1;
        text.push('\n');
        text.push_str(&" ".repeat(indent));
        text.push_str("b:");
    }
    text.push(' ');
    let mut closing = Vec::new();
    for kind in levels.iter().filter(|&&kind| kind != b'b') {
        if *kind == b'[' {
            text.push('[');
            closing.push(']');
        } else {
            text.push_str("{a: ");
            closing.push('}');
        }
    }
    text.push('1');
    while let Some(c) = closing.pop() {
        text.push(c);
    }
    text.push('\n');
    text
}

proptest! {
    #![proptest_config(fuzz_config())]

    #[test]
    fn order_parser_survives_mutated_real_orders(
        sample in prop::sample::select(order_samples()),
        telegraf in prop::option::of(prop::sample::select(order_samples())),
        edits in mutations(),
        telegraf_edits in mutations(),
    ) {
        let text = as_text(&apply(sample.as_bytes(), &edits));
        let telegraf = telegraf.map(|t| as_text(&apply(t.as_bytes(), &telegraf_edits)));
        parse_garbage_order(&text, telegraf.as_deref());
    }

    #[test]
    fn order_parser_survives_mutated_generated_orders(generated in generated_order(), edits in mutations()) {
        let text = as_text(&apply(generated.text.as_bytes(), &edits));
        parse_garbage_order(&text, generated.telegraf_file.as_deref());
    }

    #[test]
    fn order_parser_survives_random_bytes(bytes in prop::collection::vec(any::<u8>(), 0..2048)) {
        parse_garbage_order(&as_text(&bytes), None);
        parse_garbage_order("user: tmon\nstep: 20\npings: 3\nprobe: fping\nfping: {host: 127.0.0.1}\n", Some(&as_text(&bytes)));
    }

    #[test]
    fn threshold_lists_survive_garbage_and_name_the_item(
        sample in prop::sample::select(&["loss=2,median=100ms,max=0.5", "loss=@10%:20%", "max=~:1s,median=5ms:"][..]),
        edits in mutations(),
        bytes in prop::collection::vec(any::<u8>(), 0..512),
    ) {
        for text in [as_text(&apply(sample.as_bytes(), &edits)), as_text(&bytes)] {
            let (result, allocated) = allocations(|| Level::parse_list(&text));
            if let Err(e) = result {
                let message = e.to_string();
                prop_assert!(message.starts_with("invalid threshold ") && message.len() < 600, "{}", message);
            }
            allocated.check("parsing a threshold list", text.len());
            for metric in Metric::ALL {
                let _ = Threshold::parse(metric, &text);
            }
        }
    }

    #[test]
    fn a_generated_threshold_means_what_it_says(warning in threshold_level(), critical in threshold_level()) {
        let (_, alert) = alert_text(&warning, &critical, false);
        for (values, level) in [(&warning, &alert.warning), (&critical, &alert.critical)] {
            for value in values.iter() {
                let threshold = level.get(value.metric).unwrap();
                prop_assert_eq!(&threshold.written, &value.written);
                prop_assert_eq!(threshold.percent, value.written.contains('%'));
                if let Some(at) = value.plain {
                    // A plain value alerts above it, never at it or below.
                    prop_assert!(!threshold.range.alerts(at) && !threshold.range.alerts(0.0), "{:?}", value);
                    prop_assert!(threshold.range.alerts(at * 1.0001 + 1e-9), "{:?}", value);
                }
            }
        }
        let empty = Level::default();
        prop_assert_eq!(warning.is_empty(), alert.warning == empty);
    }

    #[test]
    fn a_generated_order_parses_to_exactly_what_was_generated(generated in generated_order()) {
        let parsed = parse_order_text(&generated.text, generated.telegraf_file.as_deref())
            .map_err(|e| TestCaseError::fail(format!("{e}\n{}", generated.text)))?;
        prop_assert_eq!(&parsed.order, &generated.order, "{}", generated.text);
        prop_assert!(parsed.warnings.is_empty(), "{:?}", parsed.warnings);
    }

}

proptest! {
    #![proptest_config(shapes_config())]

    #[test]
    fn order_alias_bombs_of_any_shape_are_refused_once_they_would_expand(
        depth in 1u32..12,
        width in 2usize..12,
        maps in any::<bool>(),
        place in 0usize..4,
    ) {
        let text = alias_bomb(depth, width, maps, place);
        let expands = bomb_leaves(depth, width) > 2.0 * (text.len() + MAX_ALIAS_NODES) as f64;
        let (result, allocated) = allocations(|| parse_order_text(&text, None));
        if expands {
            prop_assert!(is_expansion_error(&result), "a bomb of {} leaves gave {:?}", bomb_leaves(depth, width), result);
        }
        if let Ok(parsed) = &result {
            check_accepted_order(&parsed.order);
        }
        allocated.check("parsing an alias bomb", text.len());
        // The same bomb as an old-interface `telegraf/<id>` file.
        let order = "user: tmon\nstep: 20\npings: 3\nprobe: fping\nfping: {host: 127.0.0.1}\n";
        let file = text.replace("user:", "measurement_name:");
        let (result, allocated) = allocations(|| parse_order_text(order, Some(&file)));
        if expands {
            prop_assert!(result.is_err(), "{:?}", result);
        }
        allocated.check("parsing an alias bomb", text.len());
    }

    #[test]
    fn one_order_alias_replaying_a_large_node_many_times_is_refused(
        items in 1usize..800,
        aliases in 1usize..800,
        maps in any::<bool>(),
        place in 0usize..3,
    ) {
        let text = replayed_alias(items, aliases, maps, place);
        let (result, allocated) = allocations(|| parse_order_text(&text, None));
        if items * aliases > 2 * (text.len() + MAX_ALIAS_NODES) {
            prop_assert!(is_expansion_error(&result), "{} aliases of {} items gave {:?}", aliases, items, result);
        }
        allocated.check("parsing replayed aliases", text.len());
    }

    #[test]
    fn deeply_nested_orders_are_refused_without_overflowing_the_stack(
        depth in 129usize..600,
        kinds in prop::collection::vec(prop::sample::select(&b"[{b"[..]), 1..4),
        key in prop::sample::select(&["user", "bomb", "tags"][..]),
    ) {
        let text = format!("{}step: 20\npings: 3\nprobe: fping\nfping: {{host: 127.0.0.1}}\n", nested(depth, &kinds, key));
        match parse_order_text(&text, None) {
            Err(OrderError::Yaml { .. }) => {}
            other => prop_assert!(false, "{} levels gave {:?}", depth, other),
        }
    }
}

#[test]
fn order_parser_survives_megabyte_lines() {
    for byte in [b'a', b'[', b'"'] {
        let mut text = order_samples()[0].clone().into_bytes();
        let line = vec![byte; 2 << 20];
        text.splice(20..20, line);
        parse_garbage_order(&as_text(&text), None);
    }
}

// ---------------------------------------------------------------------------------------------
// Config
// ---------------------------------------------------------------------------------------------

const SINKS_CONFIG: &str = "sinks:
  carbon:
    type: graphite
    server: 127.0.0.2
    port: 2003
    namespace: ping
    outbox: {max-bytes: 2097152, max-age: 3600}
    takes: [ping]
    orders: {include: ['web/**', 'db/[a-c]?-*'], exclude: ['web/test-*']}
  telegraf:
    type: influxdb
    url: http://127.0.0.1:8086
    database: pings
    takes: [ping, haproxy]
    metrics: {include: ['haproxy.frontend.*.scur', '**.stot'], exclude: ['haproxy.**.server.\\*']}
  debug:
    type: local-store
    dir: /tmp/ls
self-metrics: {interval: 5, sinks: [debug], prefix: mon.self}
pull:
  sockets: [/run/haproxy/admin.sock]
";

fn config_samples() -> &'static [String] {
    static SAMPLES: OnceLock<Vec<String>> = OnceLock::new();
    SAMPLES.get_or_init(|| {
        let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/spoolmon.yaml");
        vec![
            std::fs::read_to_string(example).expect("examples/spoolmon.yaml"),
            Config::default().to_yaml(),
            SINKS_CONFIG.to_string(),
        ]
    })
}

/// Parses config text that may be garbage: a valid config (which prints back to itself) or an
/// error message.
fn parse_garbage_config(text: &str) {
    let (result, allocated) = allocations(|| Config::parse(text));
    match result {
        Ok(config) => {
            assert!(config.order_timeout >= 1 && config.queue_size >= 1 && config.max_batch >= 1);
            assert!(config.icmp.send_rate >= 1 && config.stop_timeout >= 1);
            let printed = config.to_yaml();
            assert_eq!(
                Config::parse(&printed).as_ref(),
                Ok(&config),
                "an accepted config does not print back to itself:\n{printed}"
            );
        }
        Err(message) => assert!(!message.is_empty()),
    }
    allocated.check("parsing a config", text.len());
}

/// A config with generated top-level values, and the same config written as YAML by hand.
fn generated_config() -> impl Strategy<Value = (Config, String)> {
    (
        (1u64..=u64::MAX, 1u64..=u64::MAX, 1usize..=usize::MAX, any::<u64>()),
        (prop::sample::select(&["auto", "native", "fping"][..]), any::<String>()),
        (1u32..=u32::MAX, any::<usize>(), 1u64..=u64::MAX),
        (
            1usize..=usize::MAX,
            any::<usize>(),
            any::<u64>(),
            prop::option::of(any::<u64>()),
        ),
        (
            prop::collection::vec(any::<String>(), 1..4),
            prop::collection::vec(any::<String>(), 1..4),
            1u64..=u64::MAX,
        ),
    )
        .prop_map(|(a, b, c, d, e)| {
            let (order_timeout, rescan_interval, queue_size, min_free_space_mb) = a;
            let (engine, fping_path) = b;
            let (send_rate, receive_buffer, timeout_ms) = c;
            let (max_batch, workers, rrd_flush_interval, archive_retention) = d;
            let (sping_command, pping_command, stop_timeout) = e;
            let list = |words: &[String]| {
                let quoted: Vec<String> = words.iter().map(|w| quoted(w)).collect();
                format!("[{}]", quoted.join(", "))
            };
            let mut text = format!(
                "order-timeout: {order_timeout}\nrescan-interval: {rescan_interval}\nqueue-size: {queue_size}\n\
                 min-free-space-mb: {min_free_space_mb}\nengine: {engine}\nfping-path: {}\n\
                 icmp:\n  send-rate: {send_rate}\n  receive-buffer: {receive_buffer}\n  timeout-ms: {timeout_ms}\n\
                 max-batch: {max_batch}\nworkers: {workers}\nrrd-flush-interval: {rrd_flush_interval}\n\
                 sping-command: {}\npping-command: {}\nstop-timeout: {stop_timeout}\n",
                quoted(&fping_path),
                list(&sping_command),
                list(&pping_command),
            );
            if let Some(days) = archive_retention {
                text.push_str(&format!("archive-retention: {days}\n"));
            }
            let config = Config {
                order_timeout,
                rescan_interval,
                queue_size,
                min_free_space_mb,
                engine: match engine {
                    "auto" => Engine::Auto,
                    "native" => Engine::Native,
                    _ => Engine::Fping,
                },
                fping_path: PathBuf::from(fping_path),
                icmp: IcmpConfig {
                    send_rate,
                    receive_buffer,
                    timeout_ms,
                },
                max_batch,
                workers,
                rrd_flush_interval,
                archive_retention,
                sping_command,
                pping_command,
                stop_timeout,
                ..Config::default()
            };
            (config, text)
        })
}

proptest! {
    #![proptest_config(fuzz_config())]

    #[test]
    fn config_parser_survives_mutated_real_configs(
        sample in prop::sample::select(config_samples()),
        edits in mutations(),
    ) {
        parse_garbage_config(&as_text(&apply(sample.as_bytes(), &edits)));
    }

    #[test]
    fn config_parser_survives_random_bytes(bytes in prop::collection::vec(any::<u8>(), 0..2048)) {
        parse_garbage_config(&as_text(&bytes));
    }

    #[test]
    fn a_generated_config_parses_to_exactly_what_was_generated((config, text) in generated_config()) {
        let parsed = Config::parse(&text).map_err(|e| TestCaseError::fail(format!("{e}\n{text}")))?;
        prop_assert_eq!(&parsed, &config, "{}", text);
        prop_assert_eq!(Config::parse(&config.to_yaml()), Ok(config));
    }

}

proptest! {
    #![proptest_config(shapes_config())]

    #[test]
    fn config_alias_bombs_and_deep_nesting_are_refused(
        depth in 1u32..12,
        width in 2usize..12,
        maps in any::<bool>(),
        nesting in 129usize..600,
        kinds in prop::collection::vec(prop::sample::select(&b"[{b"[..]), 1..4),
    ) {
        // Sinks are internally tagged (`type:`), so serde buffers a sink's whole value before
        // looking at it: the place where a bomb would be expanded.
        let text = config_bomb(depth, width, maps);
        let (result, allocated) = allocations(|| Config::parse(&text));
        if bomb_leaves(depth, width) > 2.0 * (text.len() + MAX_ALIAS_NODES) as f64 {
            prop_assert!(result.is_err(), "a bomb of {} leaves was accepted", bomb_leaves(depth, width));
        }
        allocated.check("parsing an alias bomb", text.len());
        parse_garbage_config(&text);
        let deep = nested(nesting, &kinds, "sinks");
        prop_assert!(Config::parse(&deep).is_err());
    }

    #[test]
    fn one_config_alias_replaying_a_large_node_many_times_is_refused(
        items in 1usize..800,
        aliases in 1usize..800,
    ) {
        // The anchor is valid where it stands; the aliases fill a sink, which serde buffers
        // whole (internally tagged) before finding the unknown key.
        let text = format!(
            "sping-command: &x [{}]\nsinks:\n  b: {{type: graphite, y: [{}]}}\n",
            vec!["a"; items].join(", "),
            vec!["*x"; aliases].join(", "),
        );
        let (result, allocated) = allocations(|| Config::parse(&text));
        if items * aliases > 2 * (text.len() + MAX_ALIAS_NODES) {
            prop_assert!(result.as_ref().is_err_and(|e| e.contains("alias expansion limit")), "{:?}", result);
        }
        allocated.check("parsing replayed aliases", text.len());
    }
}

/// A billion-laughs config: sinks `s0`..`s<depth>`, each referring `width` times to the one
/// before.
fn config_bomb(depth: u32, width: usize, maps: bool) -> String {
    let mut text = String::from("sinks:\n");
    for n in 0..=depth {
        let inner = if n == 0 {
            "lol".to_string()
        } else {
            format!("*a{}", n - 1)
        };
        let value = if maps {
            let entries: Vec<String> = (0..width).map(|i| format!("k{i}: {inner}")).collect();
            format!("{{type: graphite, {}}}", entries.join(", "))
        } else {
            format!("[{}]", vec![inner.as_str(); width].join(", "))
        };
        text.push_str(&format!("  s{n}: &a{n} {value}\n"));
    }
    text
}

#[test]
fn config_parser_survives_megabyte_lines() {
    for byte in [b'a', b'[', b'"'] {
        let mut text = config_samples()[0].clone().into_bytes();
        let at = text.len() / 2;
        text.splice(at..at, vec![byte; 2 << 20]);
        parse_garbage_config(&as_text(&text));
    }
}

// ---------------------------------------------------------------------------------------------
// ping.jsonl
// ---------------------------------------------------------------------------------------------

fn generated_id() -> impl Strategy<Value = OrderId> {
    prop::collection::vec("[^/\u{0}]{1,8}", 1..4)
        .prop_filter_map("a valid order id", |parts| OrderId::new(parts.join("/")).ok())
}

/// A result as a probe writes it: measured in the last hour, within the order limits.
fn generated_result() -> impl Strategy<Value = OrderResult> {
    let now = spoolmon::shared::clock::unix_now();
    (
        generated_id(),
        // `updated` = time + late stays before now: inside the processing window.
        now - 3600..now - 600,
        0i64..600,
        1u32..=86_400,
        prop_oneof![9 => 1u32..=20, 1 => 1u32..=1000],
        any::<bool>(),
        prop::option::of(telegraf_meta()),
        // A run that could not measure: its reason as the probes write it (one clean line).
        prop::option::weighted(0.2, any::<String>().prop_map(|r| failure_reason(&r))),
    )
        .prop_flat_map(|(id, time, late, step, pings, norrd, telegraf, failure)| {
            let rtt = prop_oneof![1 => Just(None), 4 => (0.0f64..10.0).prop_map(Some)];
            prop::collection::vec(rtt, pings as usize).prop_map(move |rtts| {
                let builder = OrderResult::builder(id.clone(), time)
                    .step(step)
                    .updated(time + late)
                    .template(if norrd {
                        RrdTemplate::Norrd
                    } else {
                        RrdTemplate::Smokeping
                    })
                    .telegraf(telegraf.clone());
                match &failure {
                    Some(reason) => builder.rtts(vec![None; rtts.len()]).failure(reason.clone()),
                    None => builder.rtts(rtts),
                }
                .build()
            })
        })
}

fn generated_snapshot() -> impl Strategy<Value = (String, Vec<OrderResult>)> {
    (any::<String>(), prop::collection::vec(generated_result(), 0..6))
}

/// Decodes a ping snapshot that may be garbage: results consistent with their header, or an
/// error with a message; nothing allocated out of proportion to the file.
fn decode_garbage_ping(bytes: &[u8]) {
    let (result, allocated) = allocations(|| decode_ping(bytes, &bounds()));
    match result {
        Ok((header, results)) => {
            assert_eq!(header.results, results.len());
            for result in &results {
                assert!(
                    result.step >= 1 && result.rtts.len() == result.pings as usize,
                    "{result:?}"
                );
                if let Some(reason) = &result.failure {
                    // What reaches listings and logs: bounded, one line, nothing that steers a
                    // terminal, and no round-trip time beside it.
                    assert!(reason.len() <= MAX_FAILURE_LEN && !reason.is_empty(), "{reason:?}");
                    assert!(!reason.chars().any(|c| c.is_control()), "{reason:?}");
                    assert!(result.rtts.iter().all(Option::is_none), "{result:?}");
                }
            }
        }
        Err(e) => assert!(!e.to_string().is_empty()),
    }
    allocated.check("decoding ping.jsonl", bytes.len());
}

proptest! {
    #![proptest_config(fuzz_config())]

    #[test]
    fn ping_snapshot_decoder_survives_mutated_snapshots((batch, results) in generated_snapshot(), edits in mutations()) {
        decode_garbage_ping(&apply(&encode_ping(&batch, &results), &edits));
    }

    #[test]
    fn ping_snapshot_decoder_survives_random_bytes(
        bytes in prop::collection::vec(any::<u8>(), 0..2048),
        header in any::<bool>(),
    ) {
        let mut input = Vec::new();
        if header {
            input.extend_from_slice(&encode_ping("b", &[]));
        }
        input.extend_from_slice(&bytes);
        decode_garbage_ping(&input);
    }

    #[test]
    fn a_ping_snapshot_header_cannot_make_the_decoder_reserve_memory(results in any::<usize>()) {
        let header = format!("{{\"format\":\"spoolmon-ping\",\"version\":1,\"batch\":\"b\",\"results\":{results}}}\n");
        decode_garbage_ping(header.as_bytes());
    }

    #[test]
    fn a_generated_ping_snapshot_decodes_to_exactly_what_was_encoded((batch, results) in generated_snapshot()) {
        let bytes = encode_ping(&batch, &results);
        let (header, decoded) = decode_ping(&bytes[..], &bounds()).map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(header, PingHeader { format: "spoolmon-ping".into(), version: 1, batch, results: results.len() });
        prop_assert_eq!(decoded, results);
    }

    #[test]
    fn reading_ping_jsonl_from_a_directory_decodes_the_same_as_the_bytes(
        (batch, results) in generated_snapshot(),
        edits in prop::collection::vec(mutation(), 0..4),
    ) {
        let bytes = apply(&encode_ping(&batch, &results), &edits);
        let dir = scratch();
        std::fs::write(dir.path().join(PING_FILE), &bytes).unwrap();
        let from_file = read_ping(&Dir::open(dir.path()).unwrap(), &bounds()).map_err(|e| e.to_string());
        let from_bytes = decode_ping(&bytes[..], &bounds()).map_err(|e| e.to_string());
        prop_assert_eq!(from_file, from_bytes);
    }
}

#[test]
fn ping_snapshot_decoder_survives_megabyte_lines() {
    for byte in [b'a', b' ', b'[', b'"', b'9', b'{'] {
        let mut bytes = encode_ping("b", &[]);
        bytes.extend(std::iter::repeat_n(byte, 2 << 20));
        bytes.push(b'\n');
        decode_garbage_ping(&bytes);
    }
}

// ---------------------------------------------------------------------------------------------
// HAProxy `show info` / `show stat`
// ---------------------------------------------------------------------------------------------

const REAL_SNAPSHOT: &str = "tests/data/haproxy/1795431755";

fn gunzip(path: &Path) -> String {
    let mut text = String::new();
    flate2::read::GzDecoder::new(std::fs::File::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display())))
        .read_to_string(&mut text)
        .unwrap();
    text
}

/// The real replies of `tests/data/haproxy/1795431755/`: `(socket, show info, show stat)`.
fn real_replies() -> &'static [(String, String, String)] {
    static REPLIES: OnceLock<Vec<(String, String, String)>> = OnceLock::new();
    REPLIES.get_or_init(|| {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join(REAL_SNAPSHOT);
        (1..=4)
            .map(|n| {
                let socket = format!("haproxy-{n}.sock");
                let info = gunzip(&dir.join(format!("{socket}_info.gz")));
                let stat = gunzip(&dir.join(format!("{socket}_stat.gz")));
                (socket, info, stat)
            })
            .collect()
    })
}

/// Small real replies to mutate: each real `show info`, and the header, a few frontends and a
/// backend with its servers of each real `show stat` (the whole one takes too long per case in
/// a debug build).
fn haproxy_seeds() -> &'static [(String, String)] {
    static SEEDS: OnceLock<Vec<(String, String)>> = OnceLock::new();
    SEEDS.get_or_init(|| {
        real_replies()
            .iter()
            .map(|(_, info, stat)| {
                let lines: Vec<&str> = stat.lines().collect();
                let backend = lines
                    .iter()
                    .position(|l| l.contains(",BACKEND,"))
                    .expect("a backend row");
                let mut small: Vec<&str> = vec![lines[0]];
                small.extend(&lines[1..4]);
                small.extend(&lines[backend - 11..=backend + 1]);
                (info.clone(), format!("{}\n\n", small.join("\n")))
            })
            .collect()
    })
}

/// Aggregates a snapshot of `processes` (`(show info, show stat)` bytes) that may be garbage:
/// metrics with finite values (a sink cannot send `inf`), or an error with a message.
fn aggregate_garbage(processes: &[(Vec<u8>, Vec<u8>)]) {
    let temp = scratch();
    let dir = temp.path().join("1795431755");
    std::fs::create_dir(&dir).unwrap();
    for (n, (info, stat)) in processes.iter().enumerate() {
        std::fs::write(dir.join(format!("p{n}.sock_info")), info).unwrap();
        std::fs::write(dir.join(format!("p{n}.sock_stat")), stat).unwrap();
    }
    match aggregate(&dir, 1_795_431_755, &HaproxyOptions::default()) {
        Ok(aggregate) => {
            for metric in &aggregate.metrics {
                assert!(metric.path.starts_with("haproxy."), "{}", metric.path);
                assert!(metric.value.is_finite(), "{} is {}", metric.path, metric.value);
            }
        }
        Err(e) => assert!(!e.to_string().is_empty()),
    }
}

/// The collector's reply checks on bytes that may be garbage.
fn check_garbage_replies(info: &[u8], stat: &[u8]) {
    for result in [check_info(info), check_stat(info), check_info(stat), check_stat(stat)] {
        if let Err(e) = result {
            assert!(!e.to_string().is_empty());
        }
    }
}

/// Names HAProxy could report: frontends, backends and servers, unique within a kind.
fn proxy_names(count: std::ops::Range<usize>) -> impl Strategy<Value = Vec<String>> {
    prop::collection::btree_set("[a-z][a-z0-9_-]{0,10}", count).prop_map(|names| names.into_iter().collect())
}

/// A number as HAProxy writes it and as spoolmon reads it.
fn counter() -> impl Strategy<Value = u64> {
    prop_oneof![4 => 0u64..1000, 1 => 0u64..(1 << 53)]
}

/// A generated one-process snapshot: its `show info` and `show stat`, and the metrics they must
/// give.
#[derive(Clone, Debug)]
struct GeneratedHaproxy {
    info: String,
    stat: String,
    expected: BTreeMap<String, f64>,
}

const DAEMON_FIELDS: [&str; 8] = [
    "Maxconn",
    "CurrConns",
    "CumConns",
    "CumReq",
    "Ulimit-n",
    "Tasks",
    "Run_queue",
    "SessRate",
];

fn generated_haproxy() -> impl Strategy<Value = GeneratedHaproxy> {
    let daemon = prop::collection::vec(counter(), DAEMON_FIELDS.len());
    let frontends = proxy_names(1..5).prop_flat_map(|names| {
        let n = names.len();
        (Just(names), prop::collection::vec((counter(), counter(), counter()), n))
    });
    let backends = proxy_names(1..4).prop_flat_map(|names| {
        let n = names.len();
        (
            Just(names),
            prop::collection::vec((proxy_names(1..4), (counter(), counter(), counter())), n),
        )
    });
    (daemon, 0u64..=100, 0u64..1_000_000, frontends, backends, any::<u16>()).prop_map(
        |(daemon, idle, uptime, (frontends, frontend_values), (backends, backend_rows), seed)| {
            let mut expected = BTreeMap::new();
            let mut info =
                format!("Name: HAProxy\nVersion: 2.6.12\nRelease_date: 2023/03/28\nProcess_num: 1\nPid: {seed}\n");
            for (field, value) in DAEMON_FIELDS.iter().zip(&daemon) {
                info.push_str(&format!("{field}: {value}\n"));
                expected.insert(format!("haproxy.daemon.{field}"), *value as f64);
            }
            info.push_str(&format!(
                "Idle_pct: {idle}\nUptime_sec: {uptime}\nnode: lb-{seed}\nUnstoppable Jobs: 0\ndescription:\n\n"
            ));
            expected.insert("haproxy.daemon.Idle_pct".into(), idle as f64);
            expected.insert("haproxy.daemon.Uptime_sec".into(), uptime as f64);
            let mut stat = String::from("# pxname,svname,qcur,scur,stot,bin,status,weight,type,check_desc,\n");
            for (name, (scur, stot, bin)) in frontends.iter().zip(&frontend_values) {
                stat.push_str(&format!("{name},FRONTEND,,{scur},{stot},{bin},OPEN,,0,,\n"));
                for (metric, value) in [("scur", scur), ("stot", stot), ("bin", bin)] {
                    expected.insert(format!("haproxy.frontend.{name}.{metric}"), *value as f64);
                }
            }
            for (backend, (servers, (scur, stot, bin))) in backends.iter().zip(&backend_rows) {
                for (i, server) in servers.iter().enumerate() {
                    let (s_scur, s_bin) = (scur + i as u64, bin / (i as u64 + 1));
                    stat.push_str(&format!(
                        "{backend},{server},0,{s_scur},,{s_bin},UP,1,2,\"Layer4 check, passed\",\n"
                    ));
                    expected.insert(format!("haproxy.backend.{backend}.server.{server}.scur"), s_scur as f64);
                    expected.insert(format!("haproxy.backend.{backend}.server.{server}.bin"), s_bin as f64);
                }
                stat.push_str(&format!(
                    "{backend},BACKEND,0,{scur},{stot},{bin},UP,{},1,,\n",
                    servers.len()
                ));
                for (metric, value) in [("scur", scur), ("stot", stot), ("bin", bin)] {
                    expected.insert(format!("haproxy.backend.{backend}.{metric}"), *value as f64);
                }
                expected.insert(format!("haproxy.backend.{backend}.TotalServers"), servers.len() as f64);
            }
            stat.push('\n');
            GeneratedHaproxy { info, stat, expected }
        },
    )
}

proptest! {
    #![proptest_config(fuzz_config())]

    #[test]
    fn haproxy_reply_checks_survive_mutated_real_replies(
        seed in prop::sample::select(haproxy_seeds()),
        info_edits in mutations(),
        stat_edits in mutations(),
    ) {
        let info = apply(seed.0.as_bytes(), &info_edits);
        let stat = apply(seed.1.as_bytes(), &stat_edits);
        check_garbage_replies(&info, &stat);
    }

    #[test]
    fn haproxy_processing_survives_mutated_real_replies(
        seeds in prop::collection::vec(prop::sample::select(haproxy_seeds()), 1..3),
        edits in prop::collection::vec((mutations(), mutations(), any::<bool>(), any::<bool>()), 2),
    ) {
        let processes: Vec<(Vec<u8>, Vec<u8>)> = seeds
            .iter()
            .zip(&edits)
            .map(|((info, stat), (info_edits, stat_edits, edit_info, edit_stat))| {
                let info = if *edit_info { apply(info.as_bytes(), info_edits) } else { info.clone().into_bytes() };
                let stat = if *edit_stat || !edit_info { apply(stat.as_bytes(), stat_edits) } else { stat.clone().into_bytes() };
                (info, stat)
            })
            .collect();
        aggregate_garbage(&processes);
    }

    #[test]
    fn haproxy_parsers_survive_random_bytes(
        bytes in prop::collection::vec(any::<u8>(), 0..2048),
        prefix in prop::sample::select(&["", "# pxname,svname,type\n", "Name: HAProxy\n"][..]),
    ) {
        let mut input = prefix.as_bytes().to_vec();
        input.extend_from_slice(&bytes);
        check_garbage_replies(&input, &input);
        let seed = &haproxy_seeds()[0];
        aggregate_garbage(&[(input.clone(), seed.1.clone().into_bytes())]);
        aggregate_garbage(&[(seed.0.clone().into_bytes(), input)]);
    }

    #[test]
    fn every_cut_of_a_real_reply_is_refused_by_the_collector(
        reply in prop::sample::select(real_replies()),
        info_cut in any::<Index>(),
        stat_cut in any::<Index>(),
    ) {
        let (_, info, stat) = reply;
        prop_assert_eq!(check_info(info.as_bytes()), Ok(()));
        prop_assert_eq!(check_stat(stat.as_bytes()), Ok(()));
        let info = &info.as_bytes()[..info_cut.index(info.len())];
        let stat = &stat.as_bytes()[..stat_cut.index(stat.len())];
        prop_assert!(check_info(info).is_err(), "{:?}", String::from_utf8_lossy(info));
        prop_assert!(check_stat(stat).is_err(), "cut at {}", stat.len());
    }

    #[test]
    fn a_generated_haproxy_snapshot_is_accepted_and_aggregates_to_its_values(generated in generated_haproxy()) {
        prop_assert_eq!(check_info(generated.info.as_bytes()), Ok(()), "{}", generated.info);
        prop_assert_eq!(check_stat(generated.stat.as_bytes()), Ok(()), "{}", generated.stat);
        let temp = scratch();
        let dir = temp.path().join("1795431755");
        std::fs::create_dir(&dir).unwrap();
        std::fs::write(dir.join("p.sock_info"), &generated.info).unwrap();
        std::fs::write(dir.join("p.sock_stat"), &generated.stat).unwrap();
        let aggregate = aggregate(&dir, 1_795_431_755, &HaproxyOptions::default())
            .map_err(|e| TestCaseError::fail(format!("{e}\n{}\n{}", generated.info, generated.stat)))?;
        let metrics: BTreeMap<&str, f64> = aggregate.metrics.iter().map(|m| (m.path.as_str(), m.value)).collect();
        // Names were generated without dots, so they appear in the paths unchanged.
        for (path, value) in &generated.expected {
            prop_assert_eq!(metrics.get(path.as_str()), Some(value), "{}", path);
        }
    }
}

#[test]
fn haproxy_parsers_accept_the_real_snapshot_and_survive_megabyte_lines() {
    for (_, info, stat) in real_replies() {
        assert_eq!(check_info(info.as_bytes()), Ok(()));
        assert_eq!(check_stat(stat.as_bytes()), Ok(()));
    }
    let (info, stat) = &haproxy_seeds()[0];
    for byte in [b'a', b',', b'"', b':'] {
        let long = |text: &str| {
            let mut bytes = text.as_bytes().to_vec();
            let at = bytes.iter().position(|&b| b == b'\n').unwrap() + 1;
            let mut line = vec![byte; 2 << 20];
            line.push(b'\n');
            bytes.splice(at..at, line);
            bytes
        };
        check_garbage_replies(&long(info), &long(stat));
        aggregate_garbage(&[(long(info), stat.clone().into_bytes())]);
        aggregate_garbage(&[(info.clone().into_bytes(), long(stat))]);
    }
}

// ---------------------------------------------------------------------------------------------
// Outbox segments and acknowledgement
// ---------------------------------------------------------------------------------------------

/// One outbox record as generated: whole lines.
#[derive(Clone, Debug)]
struct Record {
    payload: Vec<u8>,
    lines: u32,
    appended_ms: u64,
}

fn record() -> impl Strategy<Value = Record> {
    (
        prop::collection::vec(
            prop::collection::vec(any::<u8>().prop_filter("not a newline", |b| *b != b'\n'), 0..40),
            1..6,
        ),
        1_600_000_000_000u64..2_000_000_000_000,
    )
        .prop_map(|(lines, appended_ms)| {
            let mut payload = Vec::new();
            for line in &lines {
                payload.extend_from_slice(line);
                payload.push(b'\n');
            }
            Record {
                payload,
                lines: lines.len() as u32,
                appended_ms,
            }
        })
}

const MAGIC: &[u8; 8] = b"SPOOLOB1";

/// A segment file as `src/sink/outbox/mod.rs` documents it: the magic, then for each record
/// `len u32, lines u32, appended u64, crc32 u32` (little-endian) and the payload.
fn encode_segment(records: &[Record]) -> Vec<u8> {
    let mut bytes = MAGIC.to_vec();
    for record in records {
        let mut header = Vec::with_capacity(16);
        header.extend_from_slice(&(record.payload.len() as u32).to_le_bytes());
        header.extend_from_slice(&record.lines.to_le_bytes());
        header.extend_from_slice(&record.appended_ms.to_le_bytes());
        let mut hasher = crc32fast::Hasher::new();
        hasher.update(&header);
        hasher.update(&record.payload);
        bytes.extend_from_slice(&header);
        bytes.extend_from_slice(&hasher.finalize().to_le_bytes());
        bytes.extend_from_slice(&record.payload);
    }
    bytes
}

/// Where each record of an encoded segment ends.
fn record_ends(records: &[Record]) -> Vec<usize> {
    let mut end = MAGIC.len();
    records
        .iter()
        .map(|record| {
            end += 20 + record.payload.len();
            end
        })
        .collect()
}

fn segment_file(seq: u64) -> String {
    format!("{seq:020}.seg")
}

/// Everything a fresh reader delivers from the outbox in `dir`, acknowledging each batch:
/// `(payload, lines)`. Fails the case if the reader loops (hands out more batches than bytes).
fn drain(dir: &Path, max_payload: usize) -> Result<(Vec<u8>, u64), String> {
    let outbox = Arc::new(Outbox::open(dir, OutboxLimits::default()).map_err(|e| e.to_string())?);
    let mut reader = outbox.reader();
    let mut payload = Vec::new();
    let mut lines = 0;
    let budget = 64 + dir_bytes(dir);
    for _ in 0..budget {
        match reader.next_batch(max_payload).map_err(|e| e.to_string())? {
            None => return Ok((payload, lines)),
            Some(batch) => {
                assert!(!batch.payload().is_empty(), "an empty batch");
                payload.extend_from_slice(batch.payload());
                lines += batch.lines();
                outbox
                    .acknowledge(batch, outbox::Outcome::Delivered)
                    .map_err(|e| e.to_string())?;
            }
        }
    }
    panic!("the reader handed out more than {budget} batches");
}

fn dir_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .filter_map(|e| e.metadata().ok())
        .map(|m| m.len())
        .sum()
}

fn concat(records: &[Record]) -> (Vec<u8>, u64) {
    let payload = records.iter().flat_map(|r| r.payload.iter().copied()).collect();
    (payload, records.iter().map(|r| u64::from(r.lines)).sum())
}

fn generated_ack() -> impl Strategy<Value = Ack> {
    (any::<[u64; 4]>(), any::<[u64; 5]>()).prop_map(|(p, c)| Ack {
        position: Position {
            segment: p[0],
            offset: p[1],
            skip_bytes: p[2],
            skip_lines: p[3],
        },
        counters: Counters {
            delivered_lines: c[0],
            rejected_lines: c[1],
            dropped_records: c[2],
            dropped_lines: c[3],
            dropped_bytes: c[4],
        },
    })
}

/// A file of an outbox directory as a producer (or a crash) could leave it.
#[derive(Clone, Debug)]
enum OutboxFile {
    Segment(u64, Vec<Record>, Vec<Mutation>),
    Garbage(String, Vec<u8>),
    Ack(Ack, Vec<Mutation>),
}

fn outbox_file() -> impl Strategy<Value = OutboxFile> {
    prop_oneof![
        4 => (0u64..4, prop::collection::vec(record(), 0..5), prop::collection::vec(mutation(), 0..3))
            .prop_map(|(seq, records, edits)| OutboxFile::Segment(seq, records, edits)),
        1 => (
            prop::sample::select(&["ack", "00000000000000000002.seg", ".tmp-1-ack.part", "00000000000000000001.seg.tmp", "notes"][..]),
            prop::collection::vec(any::<u8>(), 0..200),
        )
            .prop_map(|(name, bytes)| OutboxFile::Garbage(name.to_string(), bytes)),
        2 => (generated_ack(), prop::collection::vec(mutation(), 0..3)).prop_map(|(ack, edits)| OutboxFile::Ack(ack, edits)),
    ]
}

/// An acknowledgement near the records of segments 0..4 (where clamping matters).
fn nearby_ack() -> impl Strategy<Value = Ack> {
    (0u64..5, 0u64..600, 0u64..80, 0u64..6).prop_map(|(segment, offset, skip_bytes, skip_lines)| Ack {
        position: Position {
            segment,
            offset,
            skip_bytes,
            skip_lines,
        },
        counters: Counters::default(),
    })
}

proptest! {
    #![proptest_config(fuzz_config())]

    #[test]
    fn an_ack_decodes_to_exactly_what_was_encoded(ack in generated_ack()) {
        prop_assert_eq!(Ack::decode(&ack.encode()), Ok(ack));
    }

    #[test]
    fn ack_decoder_survives_mutated_acks(ack in generated_ack(), edits in mutations()) {
        let bytes = apply(ack.encode().as_bytes(), &edits);
        let (result, allocated) = allocations(|| Ack::decode(&as_text(&bytes)));
        if let Err(message) = result {
            prop_assert!(!message.is_empty());
        }
        allocated.check("decoding an ack", bytes.len());
        let dir = scratch();
        std::fs::write(dir.path().join("ack"), &bytes).unwrap();
        match Ack::read(&Dir::open(dir.path()).unwrap()).unwrap() {
            AckRead::Found(found) => prop_assert_eq!(Ok(found), Ack::decode(&as_text(&bytes))),
            AckRead::Garbage(why) => prop_assert!(!why.is_empty()),
            AckRead::Missing => prop_assert!(false, "the ack file is there"),
        }
    }

    #[test]
    fn ack_decoder_survives_random_bytes(bytes in prop::collection::vec(any::<u8>(), 0..1024)) {
        let mut text = String::from("spoolmon-outbox-ack 1\n");
        text.push_str(&as_text(&bytes));
        for input in [text.as_str(), &text[22..]] {
            if let Err(message) = Ack::decode(input) {
                prop_assert!(!message.is_empty());
            }
        }
    }

    #[test]
    fn outbox_segments_with_random_records_deliver_exactly_those_records(
        segments in prop::collection::vec(prop::collection::vec(record(), 1..8), 1..4),
        max_payload in prop_oneof![Just(usize::MAX >> 1), 1usize..300],
    ) {
        let dir = scratch();
        for (seq, records) in segments.iter().enumerate() {
            std::fs::write(dir.path().join(segment_file(seq as u64)), encode_segment(records)).unwrap();
        }
        let all: Vec<Record> = segments.concat();
        prop_assert_eq!(drain(dir.path(), max_payload).map_err(TestCaseError::fail)?, concat(&all));
        prop_assert_eq!(drain(dir.path(), max_payload).map_err(TestCaseError::fail)?, (Vec::new(), 0), "delivered twice");
    }

    #[test]
    fn records_appended_through_the_outbox_come_back_in_order(
        records in prop::collection::vec(record(), 1..6),
        max_payload in prop_oneof![Just(usize::MAX >> 1), 1usize..300],
    ) {
        let dir = scratch();
        {
            let outbox = Outbox::open(dir.path(), OutboxLimits::default()).unwrap();
            for record in &records {
                outbox.append(&record.payload, record.lines).unwrap();
            }
        }
        prop_assert_eq!(drain(dir.path(), max_payload).map_err(TestCaseError::fail)?, concat(&records));
    }

    #[test]
    fn a_corrupt_segment_keeps_exactly_the_records_before_the_first_bad_byte(
        segments in prop::collection::vec(prop::collection::vec(record(), 1..6), 1..4),
        which in any::<Index>(),
        edits in prop::collection::vec(corruption(), 1..8),
        max_payload in prop_oneof![Just(usize::MAX >> 1), 1usize..300],
    ) {
        let dir = scratch();
        let corrupt = which.index(segments.len());
        let mut expected = Vec::new();
        for (seq, records) in segments.iter().enumerate() {
            let good = encode_segment(records);
            let bytes = if seq == corrupt { apply(&good, &edits) } else { good.clone() };
            std::fs::write(dir.path().join(segment_file(seq as u64)), &bytes).unwrap();
            // The model: the records that end before the first byte that differs (a cut is a
            // difference at the cut; bytes appended after the last record change none).
            let first_bad = good.iter().zip(&bytes).take_while(|(a, b)| a == b).count();
            let intact = if first_bad < MAGIC.len() { 0 } else {
                record_ends(records).iter().take_while(|end| **end <= first_bad).count()
            };
            expected.extend_from_slice(&records[..intact]);
        }
        prop_assert_eq!(drain(dir.path(), max_payload).map_err(TestCaseError::fail)?, concat(&expected));
    }

    #[test]
    fn outbox_recovery_survives_any_directory(
        files in prop::collection::vec(outbox_file(), 0..6),
        ack in prop::option::of(nearby_ack()),
        max_payload in prop_oneof![Just(usize::MAX >> 1), 1usize..300],
    ) {
        let dir = scratch();
        for file in &files {
            match file {
                OutboxFile::Segment(seq, records, edits) => {
                    std::fs::write(dir.path().join(segment_file(*seq)), apply(&encode_segment(records), edits)).unwrap()
                }
                OutboxFile::Garbage(name, bytes) => std::fs::write(dir.path().join(name), bytes).unwrap(),
                OutboxFile::Ack(ack, edits) => {
                    std::fs::write(dir.path().join("ack"), apply(ack.encode().as_bytes(), edits)).unwrap()
                }
            }
        }
        if let Some(ack) = ack {
            std::fs::write(dir.path().join("ack"), ack.encode()).unwrap();
        }
        if let Err(e) = outbox::status(dir.path()) {
            prop_assert!(!e.to_string().is_empty());
        }
        match drain(dir.path(), max_payload) {
            Ok((payload, lines)) => {
                prop_assert!(payload.is_empty() || payload.ends_with(b"\n"), "a batch of partial lines");
                prop_assert_eq!(lines, payload.iter().filter(|&&b| b == b'\n').count() as u64);
            }
            Err(message) => prop_assert!(!message.is_empty()),
        }
    }
}

#[test]
fn haproxy_values_beyond_64_bits_are_refused_and_64_bit_ones_sum_to_finite_values() {
    let snapshot = |value: &str| {
        let info = format!("Name: HAProxy\nProcess_num: 1\nMaxconn: {value}\nIdle_pct: 90\n\n");
        let stat = format!("# pxname,svname,scur,type\nfe,FRONTEND,{value},0\nfe,FRONTEND,{value},0\n\n");
        let temp = scratch();
        let dir = temp.path().join("1795431755");
        std::fs::create_dir(&dir).unwrap();
        for process in ["a", "b"] {
            std::fs::write(dir.join(format!("{process}_info")), &info).unwrap();
            std::fs::write(dir.join(format!("{process}_stat")), &stat).unwrap();
        }
        aggregate(&dir, 1_795_431_755, &HaproxyOptions::default())
    };
    let err = snapshot("1.7976931348623157e308").unwrap_err();
    assert!(err.to_string().contains("not a number"), "{err}");
    let metrics = snapshot("18446744073709551615").unwrap().metrics;
    let value = |path: &str| metrics.iter().find(|m| m.path == path).map(|m| m.value);
    assert_eq!(value("haproxy.daemon.Maxconn"), Some(2.0 * u64::MAX as f64));
    assert_eq!(value("haproxy.frontend.fe.scur"), Some(4.0 * u64::MAX as f64));
    assert!(metrics.iter().all(|m| m.value.is_finite()));
}

/// An acknowledgement into the records of `segments`: at a record (sometimes), with a skip of
/// whole lines (sometimes) or of anything.
fn ack_into(segments: &[Vec<Record>]) -> impl Strategy<Value = Ack> {
    let starts: Vec<(u64, u64, Vec<u8>)> = segments
        .iter()
        .enumerate()
        .flat_map(|(seq, records)| {
            let mut offset = MAGIC.len() as u64;
            records
                .iter()
                .map(move |r| {
                    let start = (seq as u64, offset, r.payload.clone());
                    offset += 20 + r.payload.len() as u64;
                    start
                })
                .collect::<Vec<_>>()
        })
        .collect();
    (
        prop::sample::select(starts),
        any::<Index>(),
        any::<bool>(),
        0u64..4,
        -3i64..3,
    )
        .prop_map(|((segment, offset, payload), cut, whole_lines, skip_lines, nudge)| {
            let mut position = Position {
                segment,
                offset: offset.saturating_add_signed(nudge * (nudge.abs() > 1) as i64),
                skip_bytes: 0,
                skip_lines: 0,
            };
            let newlines: Vec<usize> = payload
                .iter()
                .enumerate()
                .filter(|(_, b)| **b == b'\n')
                .map(|(i, _)| i + 1)
                .collect();
            if whole_lines {
                let lines = cut.index(newlines.len());
                position.skip_bytes = if lines == 0 { 0 } else { newlines[lines - 1] as u64 };
                position.skip_lines = lines as u64;
            } else {
                position.skip_bytes = cut.index(payload.len()) as u64;
                position.skip_lines = skip_lines;
            }
            Ack {
                position,
                counters: Counters::default(),
            }
        })
}

proptest! {
    #![proptest_config(fuzz_config())]

    #[test]
    fn whatever_the_ack_says_the_reader_resends_whole_lines_from_a_line_boundary(
        (segments, ack) in prop::collection::vec(prop::collection::vec(record(), 1..5), 1..3)
            .prop_flat_map(|segments| {
                let ack = ack_into(&segments);
                (Just(segments), ack)
            }),
        max_payload in prop_oneof![Just(usize::MAX >> 1), 1usize..300],
    ) {
        let dir = scratch();
        for (seq, records) in segments.iter().enumerate() {
            std::fs::write(dir.path().join(segment_file(seq as u64)), encode_segment(records)).unwrap();
        }
        std::fs::write(dir.path().join("ack"), ack.encode()).unwrap();
        let (all, _) = concat(&segments.concat());
        let (delivered, lines) = drain(dir.path(), max_payload).map_err(TestCaseError::fail)?;
        prop_assert!(all.ends_with(&delivered), "not a suffix of what the segments hold");
        let start = all.len() - delivered.len();
        prop_assert!(start == 0 || all[start - 1] == b'\n', "starts inside a line ({} bytes in)", start);
        prop_assert_eq!(lines, delivered.iter().filter(|&&b| b == b'\n').count() as u64, "lines miscounted");
    }
}
