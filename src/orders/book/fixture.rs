//! The test fixture of the book's unit tests: a base directory in a temporary directory, an
//! [`OrderBook`] on it with default options, and helpers to write order files.

use super::{OrderBook, OrderEvent, OrderStatus};
use crate::orders::OrderOptions;
use crate::spool::BaseDir;
use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

pub const VALID: &str = "user: tmon\nstep: 20\npings: 3\nprobe: fping\nfping:\n    host: 127.0.0.1\n";

pub struct Fixture {
    pub _dir: tempfile::TempDir,
    pub base: BaseDir,
    pub book: OrderBook,
}

impl Fixture {
    pub fn new() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let base = BaseDir::new(dir.path());
        base.create_all().unwrap();
        let book = OrderBook::new(base.clone(), OrderOptions::default());
        Fixture { _dir: dir, base, book }
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.base.orders().join(rel)
    }

    pub fn write(&self, rel: &str, content: impl AsRef<[u8]>) -> PathBuf {
        let path = self.path(rel);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(&path, content).unwrap();
        path
    }

    pub fn status(&self, id: &str) -> Option<OrderStatus> {
        self.book.listing().into_iter().find(|s| s.id.as_str() == id)
    }

    pub fn rescan(&mut self) -> Vec<OrderEvent> {
        self.book.rescan(SystemTime::now())
    }
}

pub fn added_ids(events: &[OrderEvent]) -> BTreeSet<String> {
    events
        .iter()
        .filter_map(|e| match e {
            OrderEvent::Added(order) => Some(order.id.to_string()),
            _ => None,
        })
        .collect()
}

pub fn set_mtime(path: &Path, mtime: SystemTime) {
    let file = fs::File::options().write(true).open(path).unwrap();
    file.set_modified(mtime).unwrap();
}
