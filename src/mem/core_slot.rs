//! Core slots: per-core identity for the pool caches.
//!
//! A thread that runs a poll loop claims a core slot ([`CoreSlot::claim`]); while it holds
//! it, every pool gives that thread a private cache of free slots that it reaches with no
//! atomic operation. Threads without a slot still work: they go to the pool's shared
//! lock-free free list. A slot is held by one thread at a time (claimed with an atomic
//! compare-and-swap, released on drop), which is what makes the unsynchronised caches sound.
//!
//! This module knows nothing of pools: the pool layer registers what to do when a slot is
//! released ([`on_release`]), so the dependency runs one way (pool -> core_slot).

use std::cell::Cell;
use std::marker::PhantomData;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::OnceLock;

/// The most core slots a process can claim at once.
pub const MAX_CORES: usize = 64;

static CLAIMED: [AtomicBool; MAX_CORES] = [const { AtomicBool::new(false) }; MAX_CORES];

thread_local! {
    static CURRENT: Cell<u16> = const { Cell::new(NONE) };
}

const NONE: u16 = u16::MAX;

/// Run on the thread giving up a slot, with its index, before the slot is free again. Set
/// once, by the first pool with per-core caches (before it can cache anything).
static ON_RELEASE: OnceLock<fn(usize)> = OnceLock::new();

/// Register `f` to run whenever a thread releases its core slot (the pool layer returns the
/// slot's cached buffers to their pools). One hook per process: the first registration wins
/// (the pool layer always registers the same function).
pub(super) fn on_release(f: fn(usize)) {
    let _ = ON_RELEASE.set(f);
}

/// Errors claiming a core slot.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CoreError {
    /// The index is not below [`MAX_CORES`].
    #[error("core slot {0} is out of range (at most {MAX_CORES} slots)")]
    OutOfRange(usize),
    /// Another thread holds it.
    #[error("core slot {0} is already claimed by another thread")]
    Taken(usize),
    /// This thread already holds a slot.
    #[error("this thread already holds core slot {0}")]
    AlreadyHolding(usize),
}

/// Proof that the current thread owns one core slot. Not `Send`: it stays on the thread that
/// claimed it, and dropping it releases the slot.
#[derive(Debug)]
pub struct CoreSlot {
    id: u16,
    _not_send: PhantomData<*const ()>,
}

impl CoreSlot {
    /// Claim slot `id` for the current thread.
    pub fn claim(id: usize) -> Result<CoreSlot, CoreError> {
        if id >= MAX_CORES {
            return Err(CoreError::OutOfRange(id));
        }
        if let Some(held) = current() {
            return Err(CoreError::AlreadyHolding(held));
        }
        // Acquire pairs with the Release in drop: everything the previous holder did to the
        // per-core caches of this slot happens-before what we do next.
        if CLAIMED[id]
            .compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed)
            .is_err()
        {
            return Err(CoreError::Taken(id));
        }
        CURRENT.with(|c| c.set(id as u16));
        Ok(CoreSlot {
            id: id as u16,
            _not_send: PhantomData,
        })
    }

    /// Claim the first free slot.
    pub fn claim_any() -> Result<CoreSlot, CoreError> {
        if let Some(held) = current() {
            return Err(CoreError::AlreadyHolding(held));
        }
        for id in 0..MAX_CORES {
            match Self::claim(id) {
                Ok(s) => return Ok(s),
                Err(CoreError::Taken(_)) => continue,
                Err(e) => return Err(e),
            }
        }
        Err(CoreError::Taken(MAX_CORES))
    }

    /// The slot's index.
    pub fn id(&self) -> usize {
        self.id as usize
    }
}

impl Drop for CoreSlot {
    fn drop(&mut self) {
        // Return this core's cached slots to every pool's shared list first.
        if let Some(release) = ON_RELEASE.get() {
            release(self.id as usize);
        }
        CURRENT.with(|c| c.set(NONE));
        CLAIMED[self.id as usize].store(false, Ordering::Release);
    }
}

/// The slot the current thread holds, if any.
#[inline]
pub fn current() -> Option<usize> {
    let id = CURRENT.with(|c| c.get());
    (id != NONE).then_some(id as usize)
}
