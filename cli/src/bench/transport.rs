//! The seam between the benchmark and a transport.
//!
//! A benchmark cell needs three things from a transport: a way to listen (the peer side), a
//! way to connect (the client side), and a connection that sends and receives whole messages.
//! Everything else (timing, histograms, load generation, reporting, the peer process) is the
//! benchmark's and is shared by every transport, so two transports are measured by the same
//! code.
//!
//! Contract of [`MsgConn`]:
//! - messages are whole and at most [`ConnOpts::max_msg`] bytes; a message is never split or
//!   merged by the transport as seen through this trait;
//! - [`MsgConn::send_msg`] takes `&Bytes` so a transport that takes ownership of buffers (the
//!   bypass socket) can send with no copy (a reference-count increment); the kernel copies it
//!   into the socket;
//! - [`MsgConn::recv_msg`] returns a view that lives until the next call on the connection: a
//!   transport that hands out `Bytes` keeps the last one in the connection and returns a slice
//!   of it (no copy); the kernel receives into a buffer the connection owns;
//! - [`MsgConn::recv_msg`] waits as the connection's [`Wait`] says (sleeping in the kernel, or
//!   spinning on a non-blocking receive) but never longer than [`ConnOpts::recv_timeout`], then
//!   fails with [`ConnError::TimedOut`] (and may be called again); nothing ever hangs;
//! - [`MsgConn::recv_msg_before`] waits the same way but only until a deadline (the open-loop
//!   rpc client waits for a response until its next request is due); with a deadline in the
//!   past it never waits;
//! - a connection is used by one thread at a time and may move between threads (`Send`); the
//!   connections of one cell run on separate threads (stream with `--conns N` runs N client
//!   threads on the client core and N server threads on the peer's core), so a transport whose
//!   stack is single-threaded opens one stack per connection.
//!
//! Plugging in a transport whose socket takes and hands out `Bytes` (a sketch for the bypass
//! socket; names of its API are placeholders):
//!
//! ```text
//! struct BypassConn { sock: Socket, last: Bytes }
//! impl MsgConn for BypassConn {
//!     fn send_msg(&mut self, msg: &Bytes) -> Result<(), ConnError> {
//!         self.sock.send(msg.clone()).map_err(..)          // a reference count, no copy
//!     }
//!     fn recv_msg(&mut self) -> Result<&[u8], ConnError> {
//!         self.last = self.sock.recv_timeout(self.timeout).map_err(..)?;  // no copy
//!         Ok(&self.last)
//!     }
//!     fn recv_msg_before(&mut self, deadline: Instant) -> Result<Option<&[u8]>, ConnError> {
//!         loop {
//!             if let Some(b) = self.sock.try_recv().map_err(..)? {
//!                 self.last = b;
//!                 return Ok(Some(&self.last));
//!             }
//!             if Instant::now() >= deadline { return Ok(None); }
//!         }
//!     }
//! }
//! ```
//!
//! plus a [`Transport`] (name, variants, max message, listen, connect) added to
//! [`super::TRANSPORTS`]. Both the client and the `bench-peer` process build it by name.
use std::time::{Duration, Instant};

use bytes::Bytes;

/// How a connection waits for a message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Wait {
    /// The receiving thread sleeps in the transport until a message arrives (a blocking socket).
    Blocking,
    /// The receiving thread spins on a non-blocking receive (busy-polling).
    Busy,
}

impl Wait {
    /// The name used in tables, JSON and the control protocol.
    pub fn name(self) -> &'static str {
        match self {
            Wait::Blocking => "blocking",
            Wait::Busy => "busy-poll",
        }
    }

    /// Parses [`Wait::name`] (and the short form `busy`).
    pub fn parse(s: &str) -> Option<Wait> {
        match s {
            "blocking" => Some(Wait::Blocking),
            "busy-poll" | "busy" => Some(Wait::Busy),
            _ => None,
        }
    }
}

/// Options a connection is opened with (both ends).
#[derive(Clone, Copy, Debug)]
pub struct ConnOpts {
    /// How `recv_msg` waits.
    pub wait: Wait,
    /// The largest message this connection will carry (its receive buffer is sized for it).
    pub max_msg: usize,
    /// The longest `recv_msg` waits before failing with [`ConnError::TimedOut`].
    pub recv_timeout: Duration,
    /// The longest a send may wait for room, and a connect or accept for its peer.
    pub io_timeout: Duration,
    /// The cell is a one-way stream: the client sends, the peer only receives. A transport
    /// may set its ends up for that direction (bypass over memif makes the receiver the
    /// memif client, the side whose memory the frames are written into, so it receives
    /// without a copy, and has it take multi-packet messages as their packet buffers).
    pub stream: bool,
}

/// Why a transport operation failed.
#[derive(Debug, thiserror::Error)]
pub enum ConnError {
    /// An operating-system call failed.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// Nothing arrived (or no room appeared) within the connection's timeout.
    #[error("timed out")]
    TimedOut,
    /// The peer closed the connection.
    #[error("connection closed by the peer")]
    Closed,
    /// A message is larger than the transport or the connection allows.
    #[error("message of {len} B exceeds the limit of {max} B")]
    TooLarge {
        /// The message's length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The peer sent something the transport's framing or handshake does not allow.
    #[error("protocol violation: {0}")]
    Protocol(&'static str),
    /// The address could not be used.
    #[error("bad address {0:?}")]
    Address(String),
}

/// One connection carrying whole messages. See the module docs for the contract.
pub trait MsgConn: Send {
    /// Finishes setting the connection up on the calling thread, before anything is timed
    /// (a transport that builds per-thread state lazily does it here; default: nothing).
    fn prepare(&mut self) -> Result<(), ConnError> {
        Ok(())
    }
    /// Sends one whole message, waiting (as the connection's [`Wait`] says) for room.
    fn send_msg(&mut self, msg: &Bytes) -> Result<(), ConnError>;
    /// Receives one whole message, waiting at most the connection's receive timeout.
    fn recv_msg(&mut self) -> Result<&[u8], ConnError>;
    /// Receives one whole message as [`recv_msg`](Self::recv_msg) does and returns its
    /// length: what a sink needs. A transport that can deliver a message without making
    /// its bytes one slice (bypass's zero-copy receive of packet buffers) does so here.
    fn recv_len(&mut self) -> Result<usize, ConnError> {
        self.recv_msg().map(<[u8]>::len)
    }
    /// Receives one whole message, waiting as the connection's [`Wait`] says (a blocking
    /// connection sleeps in the kernel, a busy-poll one spins) but only until `deadline`;
    /// `Ok(None)` then. A deadline already past makes it a try: a message already there is
    /// returned, nothing is waited for.
    fn recv_msg_before(&mut self, deadline: Instant) -> Result<Option<&[u8]>, ConnError>;
}

/// The peer side's endpoint that connections are accepted from.
pub trait Listener: Send {
    /// The address a client passes to [`Transport::connect`].
    fn addr(&self) -> String;
    /// Accepts one connection, waiting at most `timeout`.
    fn accept(&mut self, timeout: Duration) -> Result<Box<dyn MsgConn>, ConnError>;
}

/// A transport the benchmark can measure: a factory of listeners and connections.
///
/// Both processes build the transport by name ([`super::TRANSPORTS`]), once per process, so
/// `name` is also the key the client sends to the peer.
pub trait Transport {
    /// Short stable name, e.g. `kernel-udp` (tables, JSON, `--transports`, control protocol).
    fn name(&self) -> &'static str;
    /// Whether this is a kernel baseline: ratios are taken to the best baseline of a size.
    fn is_baseline(&self) -> bool {
        false
    }
    /// The ways of waiting this transport is measured with, in table order.
    fn variants(&self) -> &'static [Wait];
    /// The largest message it carries; larger sizes are reported as "n/a".
    fn max_msg(&self) -> usize;
    /// The most connections one cell may open (default: no limit); cells with more are
    /// reported as "n/a".
    fn max_conns(&self) -> usize {
        usize::MAX
    }
    /// Opens a listener on the host `host` (an IP address or name; the transport chooses the
    /// port or path and reports it through [`Listener::addr`]).
    fn listen(&self, host: &str, opts: &ConnOpts) -> Result<Box<dyn Listener>, ConnError>;
    /// Connects to a listener's [`Listener::addr`].
    fn connect(&self, addr: &str, opts: &ConnOpts) -> Result<Box<dyn MsgConn>, ConnError>;
}
