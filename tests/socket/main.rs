//! The socket tests, one binary for the layer (one link instead of one per file), each
//! former test file a module; shared helpers come from tests/harness/.
#[path = "../harness/mod.rs"]
mod harness;
#[path = "../harness/port_spy.rs"]
mod port_spy;
#[path = "../harness/socket_pair.rs"]
mod socket_pair;

mod api;
mod checksum;
mod hostile_metrics;
mod idle;
mod kept;
mod knobs;
mod manypeers;
mod multicore;
mod sendbuf;
mod sendbuf_memif;
mod tenk;
