//! The socket-like API: [`Stack`], [`Listener`], [`Socket`]: connect / accept / send / recv of
//! whole messages.
//!
//! Contract:
//! - A [`Stack`] is one runtime (one poll loop, one port queue pair, one transport endpoint)
//!   driven by the thread that owns it: run-to-completion, the application thread *is* the
//!   poll loop, which gives the lowest latency. `Stack`, `Listener` and `Socket` are `!Send`;
//!   give each core its own stack.
//! - Over memif ([`Backend::Memif`]) a server stack listens from the moment
//!   [`StackBuilder::build`] returns (it does not wait for a client) and outlives its
//!   clients: one that leaves frees its interface for the next. With
//!   [`StackBuilder::memif_peers`] one server stack serves N client processes at once on
//!   one socket, each on an interface of its own, all through the stack's one poll loop
//!   (a fan-in port, [`pmd::fanin`](crate::pmd::fanin)); their connections arrive at the
//!   one [`Listener`]. Each client needs its own interface id and IPv4 address (a memif
//!   stack's default MAC is derived from its address: [`mac_for_ip`]); a client whose id
//!   serves another client, or a second server on the same socket in one process, gets an
//!   [`Error::Backend`] saying so at once.
//! - Every call that waits (`connect`, `accept`, `recv`, `send` under backpressure, `flush`,
//!   `close`, [`Stack::poll_events`], [`Stack::poll_ready`], [`Stack::poll_for`]) polls the
//!   stack until it can proceed or its timeout passes. While traffic flows it spins. With the
//!   default [`IdlePoll::Sleep`], once nothing was received, sent or due for `sleep_after`
//!   (1 ms), it sleeps in the kernel until a frame arrives (memif: the ring's interrupt eventfd,
//!   which the peer signals only while we sleep), a timer or connection deadline is due, or
//!   the call's timeout, and for `max_sleep` (10 ms) at most; an idle stack then costs well
//!   under 1 % of a core. [`IdlePoll::Spin`] (`StackBuilder::idle_poll`) never sleeps: the
//!   lowest latency, a whole core per waiting stack. The `try_*` forms never wait:
//!   "nothing yet" is `Ok(None)`, not an error.
//! - [`Stack::poll`] runs one iteration. For one thread serving thousands of connections,
//!   [`Stack::poll_events`] runs iterations until some socket got a message or an event (or
//!   a connection waits to be accepted) and lists them by [`SocketId`]: the readiness event
//!   list, O(ready) per call, nothing per idle connection. [`Stack::poll_ready`] does the
//!   same for a slice of sockets it scans on every spin (O(sockets given)). With
//!   [`Stack::connect_start`] and [`Socket::close_start`] such a thread opens and closes
//!   many connections at once, each reported by `poll_events` when it is done.
//! - A stack is freed when its `Stack` and all its sockets are dropped; it first keeps polling
//!   for up to 100 ms, until no connection is left, so that its last packets (the
//!   acknowledgement of the peer's close, the reset of a dropped socket) leave before the port
//!   goes. A process may exit right after `recv` reported the peer's close.
//! - Messages are delivered whole and exactly once. Copies and heap allocations per message
//!   (measured by `tests/socket_no_alloc.rs` with a counting allocator, once warmed up):
//!   - `send_bytes(Bytes)`: no copy, no allocation in the stack (the payload is written once,
//!     into packet buffers, by the transport). The stack keeps a clone of the `Bytes` until
//!     the transport took it; cloning a *fresh* `Bytes` made from a `Vec` or `Box` allocates
//!     its shared header once (that is the `bytes` crate), so reuse a `Bytes` (or slices of
//!     one) to send without allocating;
//!   - `send(&[u8])`: one copy into a new `Bytes`, one allocation (made only when the send
//!     queue has room, so waiting under backpressure allocates nothing);
//!   - `send_buf(len)` ([`SendBuf`], zero-copy send): the application writes the message into
//!     packet buffers of the port's pool, one packet's payload each, and the stack copies
//!     nothing on first transmission (a memif client posts the very slots; other ports copy
//!     as they copy any foreign buffer; retransmissions copy); no allocation once warm (the
//!     segment list is reused);
//!   - `recv_msg()`: a single-packet message (up to `max_datagram` minus the transport
//!     header: about 1.4 KiB by default) is a [`PktBytes`](crate::mem::PktBytes) view of the
//!     receive buffer: no copy, no allocation. A multi-packet message is copied once into a
//!     reassembly buffer allocated for it (one allocation per message), or into a target
//!     posted with [`Socket::post_target`] (none: the target comes back in the message and
//!     can be posted again); with `ConnectionConfig::rx_segments` (set through
//!     [`StackBuilder::connection_config`]) it is handed out as its packet buffers instead
//!     (`MsgData::Segments`: no copy, one small allocation for the list);
//!   - `recv() -> Bytes`: as `recv_msg`, plus one small allocation for a single-packet message
//!     (`Bytes::from_owner` boxes the buffer's owner; see `mem`); segments are joined by one
//!     copy into a new buffer.
//! - A message can be received into GPU memory ([`Socket::recv_into_gpu`], or several posted
//!   ahead with [`Socket::post_gpu`] and taken with [`Socket::recv_gpu`]): the GPU's copy engine
//!   copies each segment from its packet buffer to its final offset in device memory, with no
//!   reassembly in host memory (see [`GpuTarget`]). CUDA is loaded at run time
//!   ([`mem::gpu`](crate::mem::gpu)); without it these calls return [`Error::Gpu`].
//!
//! # Example
//!
//! Two stacks, each on its own thread, joined by an in-process port pair
//! ([`pmd::pair`](crate::pmd::pair)); over memif the two would be two processes (see
//! `examples/echo_server.rs` and `examples/echo_client.rs`).
//!
//! ```
//! use std::net::{Ipv4Addr, SocketAddrV4};
//! use std::time::Duration;
//!
//! use bypass::mem::{HugePages, Pool, PoolConfig};
//! use bypass::pmd::pair::pair;
//! use bypass::socket::{Backend, Error, Stack, DEFAULT_UDP_PORT};
//!
//! let pool = Pool::new(&PoolConfig {
//!     hugepages: HugePages::Never,
//!     ..PoolConfig::new("doc-example", 2048, 9216 + 256)
//! })?;
//! let (a, b) = pair(&pool, 256, 9000)?;
//! let server_ip = Ipv4Addr::new(10, 0, 0, 1);
//! let (ready_tx, ready_rx) = std::sync::mpsc::channel();
//!
//! let server = std::thread::spawn(move || -> Result<u32, Error> {
//!     // The stack lives on the thread that polls it.
//!     let stack = Stack::builder(Backend::Port(Box::new(a)), server_ip).build()?;
//!     let listener = stack.listen();
//!     ready_tx.send(()).unwrap();
//!     let sock = listener.accept(Duration::from_secs(10))?;
//!     let mut echoed = 0;
//!     loop {
//!         match sock.recv() {
//!             Ok(msg) => {
//!                 sock.send_bytes(msg)?; // no copy: the received bytes go back out
//!                 echoed += 1;
//!             }
//!             Err(Error::Closed) => return Ok(echoed), // the client closed
//!             Err(e) => return Err(e),
//!         }
//!     }
//! });
//!
//! ready_rx.recv()?;
//! let stack = Stack::builder(Backend::Port(Box::new(b)), Ipv4Addr::new(10, 0, 0, 2)).build()?;
//! let sock = stack.connect(
//!     SocketAddrV4::new(server_ip, DEFAULT_UDP_PORT),
//!     Duration::from_secs(10),
//! )?;
//! for msg in [&b"hello"[..], &[7u8; 100_000][..]] {
//!     sock.send(msg)?;
//!     assert_eq!(sock.recv()?, msg); // delivered whole, however many packets it took
//! }
//! sock.close()?;
//! assert_eq!(server.join().unwrap()?, 2);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod builder;
mod doorbell;
mod error;
mod gpu;
mod limits;
mod listener;
pub mod metrics;
mod sendbuf;
#[expect(
    clippy::module_inception,
    reason = "the file of the Socket type, as stack.rs is Stack's; private, re-exported"
)]
mod socket;
mod stack;
#[cfg(feature = "testing")]
#[doc(hidden)]
pub mod testing;

use std::path::PathBuf;

use crate::pmd::memif::Role;
use crate::pmd::Port;

pub use builder::{default_rx_budget, mac_for_ip, StackBuilder, MIN_PEER_REGION_BYTES};
pub use doorbell::Doorbell;
pub use error::Error;
pub use gpu::{GpuMsg, GpuRecvStats, GpuTarget};
pub use limits::Limits;
pub use listener::Listener;
pub use metrics::{CaptureError, CaptureLimits, CapturePolicy, CaptureStatus, Metrics};
pub use sendbuf::SendBuf;
pub use socket::Socket;
pub use stack::{SocketId, Stack, StackStats};

/// The UDP port the transport uses unless told otherwise.
pub const DEFAULT_UDP_PORT: u16 = 7200;

/// What a stack's blocking calls do while nothing happens ([`StackBuilder::idle_poll`]).
///
/// The default is [`IdlePoll::Sleep`] with [`IdlePoll::DEFAULT_SLEEP_AFTER`] and
/// [`IdlePoll::DEFAULT_MAX_SLEEP`]: a service that waits for clients most of the time must not
/// burn a core per stack, and while requests keep coming (more than one per
/// `sleep_after`) the loop never sleeps, so it costs nothing under load. What it costs is
/// the first message after an idle spell: the wake-up (tens of microseconds, measured in
/// bench/results/2026-12-07-adaptive-poll.md). A latency benchmark, or a service whose every
/// microsecond counts even after a quiet second, chooses [`IdlePoll::Spin`] (as
/// `bypass bench` does).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdlePoll {
    /// Busy-poll forever: every blocking call spins on the port (one core per waiting
    /// stack, the lowest latency).
    Spin,
    /// Spin while traffic flows; after `sleep_after` with nothing received, sent or due,
    /// sleep until a frame arrives (the port's receive interrupt: a memif ring's eventfd),
    /// the next timer or connection deadline is due, or the blocking call's own timeout
    /// comes, and for `max_sleep` at most: the most a missed interrupt can cost. A port
    /// without receive interrupts (DPDK here, an in-process pair, `sim`) naps for
    /// [`runtime::NAP`](crate::runtime::NAP) at a time instead.
    Sleep {
        /// Idle time before the first sleep.
        sleep_after: std::time::Duration,
        /// Longest single sleep (a ceiling on a missed wake-up).
        max_sleep: std::time::Duration,
    },
}

impl IdlePoll {
    /// Default idle time before sleeping: 1 ms (a stream of more than 1,000 requests a
    /// second never sleeps between them).
    pub const DEFAULT_SLEEP_AFTER: std::time::Duration = std::time::Duration::from_millis(1);
    /// Default ceiling of one sleep: 10 ms (an idle stack wakes at most about 100 times a
    /// second without traffic or timers).
    pub const DEFAULT_MAX_SLEEP: std::time::Duration = std::time::Duration::from_millis(10);
}

impl Default for IdlePoll {
    fn default() -> Self {
        IdlePoll::Sleep {
            sleep_after: IdlePoll::DEFAULT_SLEEP_AFTER,
            max_sleep: IdlePoll::DEFAULT_MAX_SLEEP,
        }
    }
}

/// Where the stack's frames go.
pub enum Backend {
    /// memif over a UNIX socket (the embedded default: another process on this host).
    Memif {
        /// Control socket path.
        socket: PathBuf,
        /// Our role: one side serves the socket, the other connects.
        role: Role,
        /// Interface id (both sides use the same).
        id: u32,
    },
    /// Any port (an in-process `pmd::pair` end in tests, a DPDK queue pair, a wrapped port).
    Port(Box<dyn Port>),
}

impl std::fmt::Debug for Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Backend::Memif { socket, role, id } => f
                .debug_struct("Memif")
                .field("socket", socket)
                .field("role", role)
                .field("id", id)
                .finish(),
            Backend::Port(p) => f.debug_tuple("Port").field(&p.info().name).finish(),
        }
    }
}
