//! A port wrapper shared by the zero-copy send tests: it records where each transmitted
//! frame's data ends in memory, so a test can tell the frame left from the very buffer the
//! application wrote (no copy on the way).
#![allow(dead_code)]

use std::sync::{Arc, Mutex};

use bypass::mem::{PktBuf, PoolExhausted};
use bypass::pmd::{Link, Port, PortInfo, PortStats};

/// Records where each transmitted frame's data ends (its address in memory).
pub struct Spy<P> {
    pub inner: P,
    pub ends: Arc<Mutex<Vec<usize>>>,
}

impl<P: Port> Port for Spy<P> {
    fn info(&self) -> PortInfo {
        self.inner.info()
    }
    fn link(&mut self) -> Link {
        self.inner.link()
    }
    fn rx_burst(&mut self, out: &mut Vec<PktBuf>, max: usize) -> usize {
        self.inner.rx_burst(out, max)
    }
    fn tx_burst(&mut self, pkts: &mut Vec<PktBuf>) -> usize {
        let mut e = self.ends.lock().unwrap_or_else(|e| e.into_inner());
        for p in pkts.iter() {
            e.push(p.data().as_ptr() as usize + p.len());
        }
        drop(e);
        self.inner.tx_burst(pkts)
    }
    fn alloc_tx(&mut self) -> Result<PktBuf, PoolExhausted> {
        self.inner.alloc_tx()
    }
    fn stats(&self) -> PortStats {
        self.inner.stats()
    }
}
