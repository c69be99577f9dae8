//! Wire formats: zero-copy header views.
//!
//! Contract:
//! - Ethernet, IPv4, UDP, ARP and ICMPv4 are smoltcp's views, re-exported here unchanged
//!   (`Packet<T>`/`Frame<T>` over a buffer, `Repr` with parse/emit).
//! - [`transport`] is our own header in the same style: `Packet<T: AsRef<[u8]>>` with constant
//!   field ranges, `new_checked` for untrusted input, setters when `T: AsMut<[u8]>`, and a
//!   `Repr` with `parse`, `emit`, `buffer_len`. The format is specified in `docs/WIRE.md`.
//! - [`frame`] puts our datagrams into Ethernet/IPv4/UDP frames and takes them out, writing
//!   headers into a [`PktBuf`](crate::mem::PktBuf)'s headroom so the payload is written once.
//! - Parsing never panics on any input; nothing here allocates, reads a clock or keeps state.

pub mod frame;
pub mod transport;

pub use smoltcp::phy::ChecksumCapabilities;
pub use smoltcp::wire::{
    ArpOperation, ArpPacket, ArpRepr, EthernetAddress, EthernetFrame, EthernetProtocol,
    EthernetRepr, Icmpv4Message, Icmpv4Packet, Icmpv4Repr, IpAddress, IpProtocol, Ipv4Address,
    Ipv4Packet, Ipv4Repr, UdpPacket, UdpRepr,
};
pub use transport::{AckRepr, Kind, Packet as TransportPacket, PacketType, Repr as TransportRepr};
