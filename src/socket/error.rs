//! Errors of the socket API.

use std::net::SocketAddrV4;
use std::time::Duration;

use crate::mem::gpu::GpuError;
use crate::proto::CloseReason;

/// What went wrong with a socket call.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// No answer to the handshake: nobody listens there, or the path drops everything.
    #[error("peer {addr} unreachable: no answer to the handshake within {after:?} (is a bypass stack listening on that address and UDP port, and is the link up?)")]
    PeerUnreachable {
        /// Who we tried.
        addr: SocketAddrV4,
        /// How long we tried.
        after: Duration,
    },
    /// The peer reset the connection (or we did).
    #[error("connection reset: {0}")]
    ConnectionReset(CloseReason),
    /// The peer stopped answering (dead peer) or went idle past the idle timeout.
    #[error("connection lost: {0}")]
    ConnectionLost(CloseReason),
    /// The connection was closed gracefully; nothing more can be sent or received.
    #[error("connection closed")]
    Closed,
    /// A blocking call waited for its whole timeout.
    #[error("timed out after {after:?}")]
    TimedOut {
        /// How long it waited.
        after: Duration,
    },
    /// No packet buffer is free: the stack is out of memory for packets; retry later.
    #[error("packet buffer pool exhausted")]
    PoolExhausted,
    /// The message is larger than the configured maximum; nothing was sent.
    #[error(
        "message of {len} bytes is over the maximum of {max} bytes (StackBuilder::max_message)"
    )]
    MessageTooLarge {
        /// The message's length.
        len: u64,
        /// The limit.
        max: u64,
    },
    /// A [`SendBuf`](super::SendBuf) was used wrongly: a write past its end.
    #[error("send buffer misuse: {0}")]
    SendBuf(&'static str),
    /// The endpoint has as many connections as it is configured for.
    #[error("too many connections (StackBuilder::max_connections)")]
    TooManyConnections,
    /// Too many receive targets are posted.
    #[error("too many posted receive targets")]
    TooManyTargets,
    /// The message went into a posted target: take it with `recv_msg`.
    #[error("the message was written into a posted target; use recv_msg to take it")]
    TargetMessage,
    /// Receiving into GPU memory failed: no CUDA driver or device, or a driver call failed.
    #[error("GPU: {0}")]
    Gpu(#[from] GpuError),
    /// A message arrived for `Socket::recv_gpu` with no GPU target posted; it was dropped.
    #[error("a {len}-byte message arrived with no GPU target posted (Socket::post_gpu)")]
    NotPosted {
        /// The message's length.
        len: u64,
    },
    /// A [`StackBuilder`](super::StackBuilder) setting makes no sense (a limit of 0, a
    /// memif setting without memif, a server's setting on a client); `build` refused it
    /// before opening anything.
    #[error("{what}: {why}; to fix: {fix}")]
    Config {
        /// The setting.
        what: &'static str,
        /// What is wrong with its value.
        why: String,
        /// What to do about it.
        fix: &'static str,
    },
    /// The backend (memif, DPDK) or the runtime could not start.
    #[error("{what}: {why}; to fix: {fix}")]
    Backend {
        /// What failed to start.
        what: String,
        /// Why.
        why: String,
        /// What to do about it.
        fix: &'static str,
    },
}

impl Error {
    /// The error for a connection that ended with `r`. (A handshake that timed out is
    /// `Stack::connect`'s to report, as `PeerUnreachable` with the time it tried.)
    pub(crate) fn from_close(r: CloseReason) -> Error {
        match r {
            CloseReason::LocalClose(_) | CloseReason::PeerClose(_) => Error::Closed,
            CloseReason::LocalReset(_) | CloseReason::PeerReset(_) => Error::ConnectionReset(r),
            CloseReason::IdleTimeout
            | CloseReason::PeerUnresponsive
            | CloseReason::HandshakeTimeout => Error::ConnectionLost(r),
        }
    }
}
