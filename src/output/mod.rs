//! Output of processing: `output/<id>/main.rrd`, `output/<id>/last_result`, and the archive.

pub mod archive;
pub mod last_result;
pub mod rrd;
