//! Reconciliation of `output/` with the orders at start: the output directories of orders that
//! went away while spoolmon was stopped (their file deleted, or expired) are found here, so the
//! caller can archive them exactly as if the order had gone while running.
//!
//! An order directory is any directory below `output/` that holds `main.rrd` or `last_result`
//! (ids may contain `/`, so they nest). Nothing here moves or writes anything: `spoolmon run`
//! (`command::run`) calls [`orphaned`] after the first scan of `orders/` and hands each id to
//! processing, which archives it ([`super::archive`]).
//!
//! Log lines keep the target `spoolmon::daemon` they had before this module existed, so log
//! filters (`RUST_LOG`) and journal searches keep matching.

use crate::shared::measurement::OrderId;
use crate::spool::BaseDir;
use std::collections::HashSet;
use std::path::Path;
use tracing::{info, warn};

/// The orders with a directory in `output/` that are not in `active` (ids as strings): their
/// output is to be archived. An unreadable directory is skipped; a directory name that is no
/// valid order id is logged and left alone. Other nodes' orders (`output/@<node>/...`) are not
/// the local book's to judge and are never orphans here.
pub fn orphaned(base: &BaseDir, active: &HashSet<String>) -> Vec<OrderId> {
    let mut found = Vec::new();
    find_order_dirs(&base.output(), &base.output(), &mut found);
    let mut orphans = Vec::new();
    let local = |id: &String| !id.starts_with(crate::spool::ship::NODE_PREFIX);
    for id in found
        .into_iter()
        .filter(|id| local(id) && !active.contains(id.as_str()))
    {
        match OrderId::new(id) {
            Ok(id) => {
                info!(target: "spoolmon::daemon", order = %id, "order gone while stopped: archiving its output");
                orphans.push(id);
            }
            Err(e) => warn!(target: "spoolmon::daemon", "unexpected directory in output/: {e}"),
        }
    }
    orphans
}

/// Order directories below `dir`: those holding `main.rrd` or `last_result`.
fn find_order_dirs(root: &Path, dir: &Path, found: &mut Vec<String>) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    let mut is_order_dir = false;
    for entry in entries.flatten() {
        let name = entry.file_name();
        if name == "main.rrd" || name == "last_result" {
            is_order_dir = true;
        } else if entry.file_type().is_ok_and(|t| t.is_dir()) {
            find_order_dirs(root, &entry.path(), found);
        }
    }
    if is_order_dir {
        if let Ok(rel) = dir.strip_prefix(root) {
            found.push(rel.to_string_lossy().into_owned());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn orders_gone_while_stopped_are_orphans_and_other_nodes_orders_never_are() {
        let tmp = tempfile::tempdir().unwrap();
        let base = BaseDir::new(tmp.path());
        base.create_all().unwrap();
        for id in ["kept/o", "gone/o", "@child-1/gone/o", "@child-1/kept/o"] {
            let dir = base.output().join(id);
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(dir.join("last_result"), b"x").unwrap();
        }
        let active: HashSet<String> = ["kept/o".to_string()].into();
        let orphans: Vec<String> = orphaned(&base, &active)
            .iter()
            .map(|id| id.as_str().to_string())
            .collect();
        assert_eq!(orphans, ["gone/o"]);
    }
}
