//! Handles: what C holds instead of a pointer.
//!
//! A handle is a 64-bit number naming a slot in a table of this thread:
//!
//! ```text
//!  63        47 46  44 43                  20 19            0
//! | thread (17) |kind 3| generation (24)     |  index (20)    |
//! ```
//!
//! - `thread`: a number given to each thread on its first call (1, 2, ...); a handle used on
//!   another thread than its own is refused with `BYPASS_ERR_WRONG_THREAD` before any table is
//!   looked at (the objects behind handles are `!Send`: a stack is driven by one thread).
//! - `kind`: config, stack, listener, socket, send buffer or message; a handle of one kind
//!   passed as another (through a cast in C) is refused.
//! - `generation`: bumped every time a slot is freed, so a freed handle (a double free, a
//!   use after close) no longer matches and is refused with `BYPASS_ERR_BAD_HANDLE`. After
//!   2^24 reuses of one slot a generation comes round again; an old copy of a handle held
//!   that long could then name the slot's new object (never freed memory: no UB, but the
//!   wrong object).
//! - `index`: the slot. A thread holds at most 2^20 live handles of one kind.
//!
//! The value 0 is never a handle (generations start at 1): a zeroed handle is invalid.
//!
//! Contract: a table grows (allocates) only when more handles of its kind are live at once
//! than ever before on this thread; inserting into a slot freed earlier, looking up and
//! freeing allocate nothing.

use std::cell::Cell;
use std::sync::atomic::{AtomicU32, Ordering};

use crate::error::{bypass_result, CError, CResult};

const INDEX_BITS: u32 = 20;
const GEN_BITS: u32 = 24;
const KIND_BITS: u32 = 3;
const THREAD_BITS: u32 = 17;
const INDEX_MASK: u64 = (1 << INDEX_BITS) - 1;
const GEN_MASK: u64 = (1 << GEN_BITS) - 1;
const KIND_MASK: u64 = (1 << KIND_BITS) - 1;
const THREAD_MASK: u64 = (1 << THREAD_BITS) - 1;
const GEN_SHIFT: u32 = INDEX_BITS;
const KIND_SHIFT: u32 = INDEX_BITS + GEN_BITS;
const THREAD_SHIFT: u32 = INDEX_BITS + GEN_BITS + KIND_BITS;

/// What a handle names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Config = 1,
    Stack = 2,
    Listener = 3,
    Socket = 4,
    SendBuf = 5,
    Msg = 6,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Config => "config",
            Kind::Stack => "stack",
            Kind::Listener => "listener",
            Kind::Socket => "socket",
            Kind::SendBuf => "send buffer",
            Kind::Msg => "message",
        }
    }
    fn from_bits(b: u64) -> Option<Kind> {
        Some(match b {
            1 => Kind::Config,
            2 => Kind::Stack,
            3 => Kind::Listener,
            4 => Kind::Socket,
            5 => Kind::SendBuf,
            6 => Kind::Msg,
            _ => return None,
        })
    }
}

static NEXT_THREAD: AtomicU32 = AtomicU32::new(1);

thread_local! {
    /// This thread's number (0: none given yet). Const-initialised and without a destructor,
    /// so it can be read while other thread-locals are being destroyed.
    static THREAD: Cell<u32> = const { Cell::new(0) };
}

/// This thread's number, given on first use.
pub(crate) fn thread_number() -> CResult<u32> {
    let t = THREAD.with(Cell::get);
    if t != 0 {
        return Ok(t);
    }
    let n = NEXT_THREAD
        .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
            (u64::from(n) <= THREAD_MASK).then_some(n + 1)
        })
        .map_err(|_| {
            CError::new(
                bypass_result::BYPASS_ERR_TOO_MANY_HANDLES,
                format!(
                    "more than {THREAD_MASK} threads of this process have used libbypass \
                     (a thread's number is in each of its handles); reuse threads"
                ),
            )
        })?;
    THREAD.with(|c| c.set(n));
    Ok(n)
}

struct Slot<T> {
    gen: u32,
    val: Option<T>,
}

/// The live objects of one kind on this thread.
pub(crate) struct Table<T> {
    kind: Kind,
    /// This thread's number (`thread_number`), set by `set_thread` before first use: kept
    /// here so that a lookup reads no thread-local (in a shared library each thread-local
    /// read is a call to `__tls_get_addr`).
    here: u32,
    slots: Vec<Slot<T>>,
    free: Vec<u32>,
}

impl<T> Table<T> {
    pub const fn new(kind: Kind) -> Table<T> {
        Table {
            kind,
            here: 0,
            slots: Vec::new(),
            free: Vec::new(),
        }
    }

    /// Tells the table this thread's number (once, before first use).
    pub fn set_thread(&mut self, here: u32) {
        self.here = here;
    }

    /// Stores `val`; returns its handle.
    #[inline]
    pub fn insert(&mut self, val: T) -> CResult<u64> {
        let thread = self.here;
        debug_assert_ne!(thread, 0, "set_thread before use");
        let index = match self.free.pop() {
            Some(i) => i,
            None => {
                if self.slots.len() as u64 > INDEX_MASK {
                    return Err(CError::new(
                        bypass_result::BYPASS_ERR_TOO_MANY_HANDLES,
                        format!(
                            "this thread holds {} live {} handles, the most a handle can number",
                            self.slots.len(),
                            self.kind.name()
                        ),
                    ));
                }
                self.slots.push(Slot { gen: 1, val: None });
                // Room in the free list for every slot, so that freeing never allocates.
                self.free.reserve(self.slots.len() - self.free.len());
                (self.slots.len() - 1) as u32
            }
        };
        let slot = &mut self.slots[index as usize];
        slot.val = Some(val);
        Ok(u64::from(index)
            | (u64::from(slot.gen) << GEN_SHIFT)
            | ((self.kind as u64) << KIND_SHIFT)
            | (u64::from(thread) << THREAD_SHIFT))
    }

    /// The slot index of a live handle of this table, or why it is not one.
    #[inline]
    fn index(&self, h: u64) -> CResult<usize> {
        let kind = self.kind.name();
        if h == 0 {
            return Err(CError::new(
                bypass_result::BYPASS_ERR_BAD_HANDLE,
                format!("the {kind} handle is 0 (never set, or zeroed)"),
            ));
        }
        let thread = ((h >> THREAD_SHIFT) & THREAD_MASK) as u32;
        let here = self.here;
        if thread != here {
            return Err(CError::new(
                bypass_result::BYPASS_ERR_WRONG_THREAD,
                format!(
                    "the {kind} handle belongs to libbypass thread #{thread}, this is thread \
                     #{here}: a stack and its listeners, sockets, send buffers and messages \
                     are used only by the thread that made the stack"
                ),
            ));
        }
        let k = (h >> KIND_SHIFT) & KIND_MASK;
        if k != self.kind as u64 {
            let other = Kind::from_bits(k).map_or("unknown", Kind::name);
            return Err(CError::new(
                bypass_result::BYPASS_ERR_BAD_HANDLE,
                format!("a {other} handle was passed where a {kind} handle was expected"),
            ));
        }
        let index = (h & INDEX_MASK) as usize;
        let gen = ((h >> GEN_SHIFT) & GEN_MASK) as u32;
        match self.slots.get(index) {
            Some(s) if s.gen == gen && s.val.is_some() => Ok(index),
            _ => Err(CError::new(
                bypass_result::BYPASS_ERR_BAD_HANDLE,
                format!("stale {kind} handle: already freed or closed (or never made)"),
            )),
        }
    }

    #[inline]
    pub fn get(&self, h: u64) -> CResult<&T> {
        let i = self.index(h)?;
        // `index` checked the slot is occupied.
        self.slots[i]
            .val
            .as_ref()
            .ok_or_else(|| CError::new(bypass_result::BYPASS_ERR_BAD_HANDLE, "empty slot"))
    }

    #[inline]
    pub fn get_mut(&mut self, h: u64) -> CResult<&mut T> {
        let i = self.index(h)?;
        self.slots[i]
            .val
            .as_mut()
            .ok_or_else(|| CError::new(bypass_result::BYPASS_ERR_BAD_HANDLE, "empty slot"))
    }

    /// Takes the object out; the handle (and every copy of it) is stale from now on.
    #[inline]
    pub fn remove(&mut self, h: u64) -> CResult<T> {
        let i = self.index(h)?;
        let slot = &mut self.slots[i];
        let val = slot
            .val
            .take()
            .ok_or_else(|| CError::new(bypass_result::BYPASS_ERR_BAD_HANDLE, "empty slot"))?;
        slot.gen = if u64::from(slot.gen) >= GEN_MASK {
            1
        } else {
            slot.gen + 1
        };
        // `insert` reserved room for every slot, so this does not allocate.
        self.free.push(i as u32);
        Ok(val)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_freed_handle_is_stale_and_its_slot_reused_with_a_new_generation() {
        let mut t = Table::new(Kind::Msg);
        t.set_thread(thread_number().unwrap());
        let a = t.insert(1u32).unwrap();
        assert_eq!(*t.get(a).unwrap(), 1);
        assert_eq!(t.remove(a).unwrap(), 1);
        assert_eq!(
            t.remove(a).unwrap_err().code,
            bypass_result::BYPASS_ERR_BAD_HANDLE
        );
        let b = t.insert(2).unwrap();
        assert_eq!(a & INDEX_MASK, b & INDEX_MASK, "the slot is reused");
        assert_ne!(a, b);
        assert_eq!(
            t.get(a).unwrap_err().code,
            bypass_result::BYPASS_ERR_BAD_HANDLE
        );
        assert_eq!(*t.get(b).unwrap(), 2);
        assert_eq!(
            t.get(0).unwrap_err().code,
            bypass_result::BYPASS_ERR_BAD_HANDLE
        );
    }

    #[test]
    fn a_handle_of_another_kind_is_refused() {
        let mut socks = Table::new(Kind::Socket);
        let mut msgs: Table<u32> = Table::new(Kind::Msg);
        socks.set_thread(thread_number().unwrap());
        msgs.set_thread(thread_number().unwrap());
        let s = socks.insert(1u32).unwrap();
        let e = msgs.get(s).unwrap_err();
        assert_eq!(e.code, bypass_result::BYPASS_ERR_BAD_HANDLE);
        assert!(
            e.msg.contains("socket handle was passed where a message"),
            "{}",
            e.msg
        );
    }

    #[test]
    fn a_handle_of_another_thread_is_refused() {
        let mut t = Table::new(Kind::Stack);
        t.set_thread(thread_number().unwrap());
        let h = t.insert(1u32).unwrap();
        let code = std::thread::spawn(move || {
            let mut t2: Table<u32> = Table::new(Kind::Stack);
            t2.set_thread(thread_number().unwrap());
            t2.get(h).unwrap_err().code
        })
        .join()
        .unwrap();
        assert_eq!(code, bypass_result::BYPASS_ERR_WRONG_THREAD);
    }
}
