//! The DPDK backend (cargo feature `dpdk`): any DPDK ethdev as [`Port`](super::Port)s, one
//! per queue pair.
//!
//! Contract:
//! - [`Eal::init`] starts DPDK's environment abstraction layer from a typed [`EalConfig`]
//!   once per process; a second call returns [`EalError::AlreadyInitialized`]. The returned
//!   [`Eal`] token is required to make pools and open devices, so nothing can touch DPDK
//!   before the EAL is up. The EAL then runs until the process exits (see [`Eal`] for why
//!   `rte_eal_cleanup` is not called); DPDK cannot start it again in the same process.
//! - [`DpdkPool`] lends a bypass [`Pool`](crate::mem::Pool) to DPDK as an mbuf mempool (see
//!   "Buffers" below): the same slots are `PktBuf`s for us and mbufs for DPDK, and one pool
//!   can serve every device and every backend.
//! - [`Device::open`] configures a device with N rx/tx queue pairs (RSS over IP/UDP when
//!   N > 1 and the device can hash; IPv4/UDP checksum offloads when the device reports them,
//!   [`Offloads`](super::Offloads) says which, software otherwise; on receive a frame skips
//!   the software check only where the device verified its checksums, see
//!   [`DpdkPort::rx_bad_checksum`]), starts it and returns one
//!   [`DpdkPort`] per queue pair. [`Device`] gives link status, device stats and xstats; the
//!   device is stopped and closed when the `Device` and all of its ports are dropped.
//! - Every DPDK call that can fail goes through one helper ([`DpdkError`] carries the call's
//!   name and the `rte_errno` text); nothing on the data path can fail with an error value:
//!   shortfalls are counted in [`PortStats`](super::PortStats).
//!
//! # Buffers: one pool, mbufs pinned to its slots
//!
//! Design chosen: a mempool made with our own mempool *ops* (in the `dpdk-sys` shim) whose
//! mbufs are pinned external buffers (`RTE_PKTMBUF_POOL_F_PINNED_EXT_BUF`, as
//! `rte_pktmbuf_pool_create_extbuf` makes) over the slots of a bypass `Pool`: mbuf *i*'s
//! data buffer *is* slot *i*. The mempool's free list is the bypass pool's free list: DPDK's
//! dequeue takes slots with `Pool::alloc`, its enqueue (an mbuf freed by a driver after
//! transmit) returns them. The region is registered with `rte_extmem_register` (and mapped for
//! each device with `rte_dev_dma_map` where the bus supports it), so a NIC can DMA into it.
//!
//! Why this design rather than "attach extbufs at tx and copy at rx": receive lands in our
//! slots directly (no copy on either side), there is a single allocator and a single set of
//! counters (`Pool::stats` sees every buffer DPDK holds), and the buffer type is the one every
//! backend uses: a `PktBuf` received from DPDK can go to a port of another backend built over
//! the same `Pool` with no copy (`DpdkPool::new` takes any host `Pool`, e.g. the one a
//! pmd::memif client shares with its peer; that combination is not tested yet). The cost: the
//! mempool has no per-lcore cache of its own (the bypass pool's per-core caches serve instead,
//! for threads holding a `CoreSlot`), every mbuf alloc/free is a call through the mempool ops
//! into Rust, and `Pool`'s slot size must fit an mbuf's 16-bit buffer length.
//!
//! Copies, honestly:
//! - `rx_burst`: none when the mbuf is from a [`DpdkPool`] and is one segment (the slot becomes
//!   the `PktBuf`; the mbuf header is released). A chained or foreign mbuf (from a pool the
//!   driver made itself) is copied once into a fresh slot and freed. Counted in
//!   [`DpdkPort::copies`].
//! - `tx_burst`: none when the `PktBuf` is a slot of this port's pool (the mbuf of that slot is
//!   set to the buffer's offset and length and handed over); a buffer from any other pool is
//!   copied once into a slot of this pool. Counted in [`DpdkPort::copies`].
//! - Drivers copy on their own side: net_memif (copy mode) copies between its shared rings and
//!   mbufs, net_af_packet between the kernel's packet ring and mbufs; net_ring and NICs copy
//!   nothing.
//!
//! Known DPDK 22.11 net_memif hazard (not ours, dpdk-testpmd shows it too): when the peer
//! disconnects, the PMD unmaps the shared regions from the EAL's interrupt thread while the
//! data path may be inside `rx_burst`/`tx_burst` on them; a process that keeps sending while
//! its peer goes away can fault in `librte_net_memif`. We saw it in the benchmark when the
//! receiver exits first, and in dpdk-testpmd's forwarding lcore the same way. Stop traffic
//! before the peer closes (the tests do).
//!
//! IOVA: in IOVA-as-VA mode (vdevs, VFIO with an IOMMU) a slot's IOVA is its address. In
//! IOVA-as-PA mode the pool's IOVA is unknown to DPDK (`RTE_BAD_IOVA`): virtual devices work,
//! a physical NIC needs the EAL started with `--iova-mode=va`.
#![allow(unsafe_code)]

mod eal;
mod error;
mod pool;
mod port;

pub use eal::{Eal, EalConfig, EalError, EalMemory};
pub use error::DpdkError;
pub use pool::{DpdkPool, DpdkPoolError};
pub use port::{Device, DeviceConfig, DeviceError, DeviceStats, DpdkPort};

/// The raw bindings, for what the wrappers do not cover.
pub use dpdk_sys as sys;
