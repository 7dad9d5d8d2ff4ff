//! Paths of the base directory (the on-disk contract in `spool-layout.md`).

use std::io;
use std::path::{Path, PathBuf};

/// A spoolmon base directory (default `/var/lib/spoolmon`).
#[derive(Clone, Debug)]
pub struct BaseDir {
    root: PathBuf,
}

impl BaseDir {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        BaseDir { root: root.into() }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }
    /// User-owned YAML orders, any depth.
    pub fn orders(&self) -> PathBuf {
        self.root.join("orders")
    }
    /// Old interface: `telegraf/<id>` holds measurement_name and tags for order `<id>`.
    pub fn telegraf(&self) -> PathBuf {
        self.root.join("telegraf")
    }
    /// Snapshots under construction.
    pub fn incoming_tmp(&self) -> PathBuf {
        self.root.join("incoming.tmp")
    }
    /// Complete snapshots waiting to be processed.
    pub fn incoming(&self) -> PathBuf {
        self.root.join("incoming")
    }
    /// Snapshots that could not be processed, each with a `REASON` file.
    pub fn failed(&self) -> PathBuf {
        self.root.join("failed")
    }
    /// `output/<id>/main.rrd` and `last_result` of active orders.
    pub fn output(&self) -> PathBuf {
        self.root.join("output")
    }
    /// Output (and expired order files) of orders that are gone.
    pub fn archive(&self) -> PathBuf {
        self.root.join("archive")
    }
    /// Per-sink durable queues.
    pub fn outbox(&self) -> PathBuf {
        self.root.join("outbox")
    }
    /// Lock file, heartbeat, self-metrics.
    pub fn state(&self) -> PathBuf {
        self.root.join("state")
    }

    /// Creates every directory of the layout that does not exist yet.
    pub fn create_all(&self) -> io::Result<()> {
        for dir in self.all_dirs() {
            std::fs::create_dir_all(&dir)?;
        }
        Ok(())
    }

    /// The base directory itself and every directory of the layout.
    pub fn all_dirs(&self) -> Vec<PathBuf> {
        vec![
            self.root().to_path_buf(),
            self.orders(),
            self.telegraf(),
            self.incoming_tmp(),
            self.incoming(),
            self.failed(),
            self.output(),
            self.archive(),
            self.outbox(),
            self.state(),
        ]
    }
}
