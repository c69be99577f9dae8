//! Poll-mode drivers: the burst-oriented [`Port`] every transport byte crosses.
//!
//! Contract:
//! - A [`Port`] is one queue pair of a device. A device with N queues gives N ports, so one
//!   core owns one queue pair and no lock is needed between cores.
//! - [`Port::rx_burst`] appends up to `max` received frames to a caller-owned `Vec` (reuse it
//!   with its capacity reserved: the data path never allocates); [`Port::tx_burst`] sends
//!   frames from the front of a `Vec`, removes those it sent and leaves the rest for the
//!   caller: a port never drops a frame silently.
//! - Frames are [`PktBuf`]s. Transmit buffers should come from [`Port::alloc_tx`], which gives
//!   memory the device can send without a copy; a port copies a foreign buffer when it must.
//! - Counters ([`PortStats`]) are kept by the port and read at any time.
//! - Shared buffers ([`PktBuf::share`](crate::mem::PktBuf::share), zero-copy send: the
//!   transport keeps the slot to retransmit from): no port writes into one. The memif client
//!   posts it as is and drops that reference on reclaim; [`pair`] moves it to the peer, which
//!   reads it in place (a write copies, as for any shared buffer); [`faults`] and [`sim`]
//!   corrupt through `try_data_mut`, so a shared frame is copied before a bit flips (or
//!   passes intact when the pool has no slot for the copy); [`pcap`] only reads; DPDK copies
//!   it into a slot of its own (a driver frees an mbuf as its sole owner); the memif server
//!   copies every frame anyway.
//!
//! - A loop that is idle may sleep until a frame arrives: [`Port::rx_intr_arm`] gives the
//!   descriptors to sleep on ([`intr`]; memif: the rings' interrupt eventfds). A port without
//!   receive interrupts (the default; `sim`, `pair`, DPDK here) says so and the loop naps.
//!
//! Backends: [`memif`] (pure Rust, the default), `dpdk` (cargo feature), [`sim`]
//! (virtual-time link model). Wrappers over any port: [`faults`], [`pcap`]; [`fanin`] makes
//! one port of many (a learning bridge: a memif server's interfaces, one peer on each);
//! [`pair`] joins two ports in one process for tests.

#[cfg(feature = "dpdk")]
pub mod dpdk;
pub mod fanin;
pub mod faults;
pub mod intr;
pub mod memif;
pub mod pair;
pub mod pcap;

use crate::mem::{PktBuf, PoolExhausted};
pub use intr::{RxIntr, RxWait};
pub mod sim;

/// Largest burst any port accepts in one call.
pub const MAX_BURST: usize = 256;

/// What a device does for the stack (hardware offloads) and what its link guarantees.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Offloads {
    /// Verifies IPv4/UDP checksums on receive.
    pub rx_checksum: bool,
    /// Computes IPv4/UDP checksums on transmit.
    pub tx_checksum: bool,
    /// The link delivers every frame exactly as it was written: memory shared with the peer
    /// (memif, an in-process [`pair`]), where no wire, NIC or switch can flip a bit. A
    /// checksum catches nothing there, so the transport agrees with a peer whose link is
    /// intact too to send its datagrams without a UDP checksum (0, which UDP over IPv4
    /// allows), as Linux's loopback skips checksums. A wrapper that alters frames
    /// ([`faults`] with corruption) reports `false`.
    pub intact: bool,
}

/// What a port is and can do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortInfo {
    /// Human-readable name (interface id, socket path, vdev string).
    pub name: String,
    /// Largest frame payload (L3 MTU) the port carries.
    pub mtu: u16,
    /// Largest burst the port handles in one call.
    pub max_burst: u16,
    /// Ethernet address.
    pub mac: [u8; 6],
    /// Queue pairs on the device this port belongs to.
    pub queues: u16,
    /// This port's queue index.
    pub queue: u16,
    /// Hardware offloads.
    pub offloads: Offloads,
}

/// Link state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Link {
    /// Frames can flow; speed in Mb/s when the device knows it.
    Up {
        /// Speed in Mb/s (0 when unknown).
        speed_mbps: u32,
    },
    /// No peer, or the peer went away.
    Down,
}

impl Link {
    /// True when up.
    pub fn is_up(self) -> bool {
        matches!(self, Link::Up { .. })
    }
}

/// Port counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PortStats {
    /// Frames received.
    pub rx_packets: u64,
    /// Bytes received (frame bytes).
    pub rx_bytes: u64,
    /// Frames sent.
    pub tx_packets: u64,
    /// Bytes sent.
    pub tx_bytes: u64,
    /// Receives lost because no buffer was free.
    pub rx_no_buffer: u64,
    /// Transmits refused because the ring was full (returned to the caller, not dropped).
    pub tx_ring_full: u64,
    /// Malformed or invalid frames/descriptors dropped on receive.
    pub rx_errors: u64,
    /// Of `rx_errors`: frames dropped because their IPv4 or UDP checksum was wrong as the
    /// device verified it (checksum offload; DPDK), so that a corrupting link shows apart
    /// from a misbehaving driver or peer. 0 for ports that leave checksums to the stack
    /// (the stack counts its own in `NetCounters`).
    pub rx_bad_checksum: u64,
}

/// One queue pair of a packet device, polled.
pub trait Port: Send {
    /// What the port is.
    fn info(&self) -> PortInfo;
    /// Current link state (cheap; may be polled every loop iteration).
    fn link(&mut self) -> Link;
    /// Append up to `max` (and at most [`MAX_BURST`]) received frames to `out`; returns how
    /// many. Never blocks.
    fn rx_burst(&mut self, out: &mut Vec<PktBuf>, max: usize) -> usize;
    /// Send frames from the front of `pkts`; removes and returns the number sent. Frames not
    /// sent (ring full, link down) stay in `pkts`, in order.
    fn tx_burst(&mut self, pkts: &mut Vec<PktBuf>) -> usize;
    /// A buffer to fill and pass to `tx_burst`, from memory the device sends without a copy.
    fn alloc_tx(&mut self) -> Result<PktBuf, PoolExhausted>;
    /// Counters.
    fn stats(&self) -> PortStats;

    /// Arm receive interrupts, for a loop about to sleep because it is idle: add to `wait` the
    /// descriptors that become readable when a frame arrives. A port made of several ports
    /// arms each member into the same `wait`. After arming, the port checks its receive
    /// queue once more: a frame that arrived between the loop's last poll and the arming is
    /// [`RxIntr::Pending`] (the loop must not sleep past it). Every `Armed` or `Pending` is
    /// followed by one [`rx_intr_disarm`](Self::rx_intr_disarm), before the next `rx_burst`.
    /// The default: [`RxIntr::Unsupported`] (the loop naps for a short bounded time
    /// instead). Not on the data path: it may make system calls.
    fn rx_intr_arm(&mut self, wait: &mut RxWait) -> RxIntr {
        let _ = wait;
        RxIntr::Unsupported
    }

    /// Disarm receive interrupts after a sleep (or a `Pending` arm): the peer stops
    /// signalling, and what it signalled meanwhile is consumed.
    fn rx_intr_disarm(&mut self) {}
}

impl<P: Port + ?Sized> Port for Box<P> {
    fn info(&self) -> PortInfo {
        (**self).info()
    }
    fn link(&mut self) -> Link {
        (**self).link()
    }
    fn rx_burst(&mut self, out: &mut Vec<PktBuf>, max: usize) -> usize {
        (**self).rx_burst(out, max)
    }
    fn tx_burst(&mut self, pkts: &mut Vec<PktBuf>) -> usize {
        (**self).tx_burst(pkts)
    }
    fn alloc_tx(&mut self) -> Result<PktBuf, PoolExhausted> {
        (**self).alloc_tx()
    }
    fn stats(&self) -> PortStats {
        (**self).stats()
    }
    fn rx_intr_arm(&mut self, wait: &mut RxWait) -> RxIntr {
        (**self).rx_intr_arm(wait)
    }
    fn rx_intr_disarm(&mut self) {
        (**self).rx_intr_disarm()
    }
}
