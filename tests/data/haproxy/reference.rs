//! The real HAProxy snapshot of `tests/data/haproxy/` (from `shared/reference/haproxy/`: 4
//! HAProxy 2.6.12 processes, 200 frontends, 200 backends × 10 servers each) and the Graphite
//! lines haproxystats 0.5.1 sent for it. Stored gzipped; unpacked into a temporary directory
//! because a snapshot is a directory named by its time. Shared by tests and benches.
#![allow(dead_code)]

use flate2::read::GzDecoder;
use std::io::Read;
use std::path::{Path, PathBuf};

/// The snapshot's time, also its directory name.
pub const TIME: i64 = 1_795_431_755;

fn data_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/haproxy")
}

fn gunzip(path: &Path) -> Vec<u8> {
    let mut text = Vec::new();
    GzDecoder::new(std::fs::File::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display())))
        .read_to_end(&mut text)
        .unwrap();
    text
}

/// Writes the snapshot to `<parent>/1795431755/` and returns that directory.
pub fn unpack_snapshot(parent: &Path) -> PathBuf {
    let dir = parent.join(TIME.to_string());
    std::fs::create_dir_all(&dir).unwrap();
    for entry in std::fs::read_dir(data_dir().join(TIME.to_string())).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_stem().unwrap();
        std::fs::write(dir.join(name), gunzip(&path)).unwrap();
    }
    dir
}

/// The golden Graphite lines of haproxystats 0.5.1 (namespace `loadbalancers`, host `vm`).
pub fn golden_lines() -> String {
    String::from_utf8(gunzip(
        &data_dir().join("1795431755.pypi-0.5.1-patched.graphite.txt.gz"),
    ))
    .unwrap()
}
