//! The `bypass` command's subcommands that are bigger than a match arm.
//!
//! These live in the binary, not the library: they drive the library (and, for baselines, the
//! kernel's sockets) and print for people.
pub mod bench;
pub mod path;
pub mod stat;
