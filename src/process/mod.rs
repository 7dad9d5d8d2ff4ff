//! Processing: snapshots from `incoming/` become RRD updates, `last_result` files and sink lines.

pub mod stats;
