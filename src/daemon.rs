//! The daemon: wires orders, scheduler, probes, processing and output together.
