//! Not API (feature `testing`): what a [`Stack`](super::Stack) runs per received frame, its
//! runtime (net layer: Ethernet, ARP, IPv4, ICMP, UDP) and transport endpoint, assembled by
//! [`StackBuilder::build_core`] exactly as [`StackBuilder::build`] does with the same
//! defaults, but over a clock the caller moves (virtual time) and polled by the caller. For
//! the fuzz target `stack_frames` (fuzz/bodies/stack_frames.rs).

use crate::pmd::Port;
use crate::proto::Endpoint;
use crate::runtime::net::Net;
use crate::runtime::{PollResult, Runtime};
use crate::time::Clock;

use super::stack::{StackPort, Transport};
use super::{Backend, Error, StackBuilder};

/// A stack's runtime and transport without its socket API, telemetry or core slot.
pub struct StackCore<C: Clock> {
    rt: Runtime<StackPort, Transport, C>,
}

impl<C: Clock> std::fmt::Debug for StackCore<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StackCore").finish_non_exhaustive()
    }
}

impl StackBuilder {
    /// The runtime and transport `build` would assemble over this builder's
    /// [`Backend::Port`] (a memif backend is refused), with `clock` instead of the system's.
    pub fn build_core<C: Clock>(mut self, clock: C) -> Result<StackCore<C>, Error> {
        let port = match self.backend.take() {
            Some(Backend::Port(p)) => p,
            _ => {
                return Err(Error::Backend {
                    what: "stack core".into(),
                    why: "only over Backend::Port".into(),
                    fix: "pass a port (pmd::pair, pmd::sim)",
                })
            }
        };
        let info = port.info();
        Ok(StackCore {
            rt: self.assemble(port, &info, clock)?,
        })
    }
}

impl<C: Clock> StackCore<C> {
    /// One iteration of the poll loop, as [`Stack::poll`](super::Stack::poll) runs it.
    pub fn poll(&mut self) -> PollResult {
        let mut r = self.rt.poll_rx();
        self.rt.poll_rest(&mut r);
        r
    }

    /// The transport endpoint.
    pub fn endpoint(&mut self) -> &mut Endpoint {
        &mut self.rt.handler_mut().ep
    }

    /// The net layer (counters, ARP cache).
    pub fn net(&self) -> &Net {
        self.rt.net()
    }

    /// The port (to send frames from outside the stack, e.g. the far end of a pair).
    pub fn port_mut(&mut self) -> &mut dyn Port {
        self.rt.port_mut()
    }

    /// Datagrams the transport could not queue, and buffers it could not get.
    pub fn tx_drops(&self) -> (u64, u64) {
        let t = self.rt.handler();
        (t.tx_dropped, t.tx_pool_exhausted)
    }
}
