//! The pmd tests, one binary for the layer (one link instead of one per file), each
//! former test file a module; shared helpers come from tests/harness/.
#[path = "../harness/mod.rs"]
mod harness;

mod fanin;
mod wrappers;
mod wrappers_pcap;
