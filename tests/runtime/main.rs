//! The runtime tests, one binary for the layer (one link instead of one per file), each
//! former test file a module; shared helpers come from tests/harness/.
#[path = "../harness/mod.rs"]
mod harness;
#[path = "../harness/runtime_util.rs"]
mod runtime_util;

mod clock;
mod faults;
mod pair;
mod threads;
mod timer;
