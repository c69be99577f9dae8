//! The proto tests, one binary for the layer (one link instead of one per file), each
//! former test file a module; shared helpers come from tests/harness/.

mod ack_policy;
mod basic;
mod batch;
mod cc;
mod close;
mod events;
mod faults;
mod flow;
mod hostile;
mod large;
mod multi;
mod prop;
mod regressions;
mod rx_segments;
mod segments;
