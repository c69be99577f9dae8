//! [`DpdkPool`]: a bypass [`Pool`] lent to DPDK as an mbuf mempool whose mbufs are pinned to
//! the pool's slots, with the bypass pool's free list as the mempool's (see the module docs of
//! `pmd::dpdk`, "Buffers").

use std::ffi::{c_int, c_uint, c_void, CString};
use std::ptr::NonNull;
use std::sync::Arc;

use super::eal::Eal;
use super::error::{check, check_ptr, DpdkError};
use crate::mem::{PageSize, Pool, BASE_PAGE_SIZE, HUGE_PAGE_SIZE};
use dpdk_sys as sys;

/// `RTE_BAD_IOVA`: the IOVA is unknown.
pub(crate) const BAD_IOVA: u64 = u64::MAX;

/// Errors lending a pool to DPDK.
#[derive(Debug, thiserror::Error)]
pub enum DpdkPoolError {
    /// The pool cannot back mbufs (slot size over 65535 bytes, a name with NUL, ...).
    #[error("pool cannot back a DPDK mempool: {0}")]
    Config(&'static str),
    /// A DPDK call failed.
    #[error(transparent)]
    Dpdk(#[from] DpdkError),
}

/// What the shim's mempool ops call back into: the bypass pool whose slots are the mbufs'
/// buffers.
pub(crate) struct SlotCtx {
    pub(crate) pool: Pool,
}

/// DPDK's dequeue: take `n` slots or none.
unsafe extern "C" fn slot_get(ctx: *mut c_void, slots: *mut u32, n: c_uint) -> c_int {
    // SAFETY: ctx is the SlotCtx this mempool was made with; it outlives the mempool.
    let ctx = unsafe { &*(ctx as *const SlotCtx) };
    for i in 0..n as usize {
        match ctx.pool.alloc() {
            // SAFETY: slots has room for n entries (the shim passes its chunk array).
            Ok(b) => unsafe { *slots.add(i) = b.into_raw().0 },
            Err(_) => {
                for j in 0..i {
                    // SAFETY: slot j was taken with into_raw just above and is re-owned once.
                    drop(unsafe { ctx.pool.from_raw(*slots.add(j), 0, 0) });
                }
                return -libc::ENOBUFS;
            }
        }
    }
    0
}

/// DPDK's enqueue: `n` mbufs were freed; their slots go back to the pool.
unsafe extern "C" fn slot_put(ctx: *mut c_void, slots: *const u32, n: c_uint) {
    // SAFETY: as in slot_get.
    let ctx = unsafe { &*(ctx as *const SlotCtx) };
    for i in 0..n as usize {
        // SAFETY: an mbuf DPDK frees owned its slot: it was handed to DPDK by slot_get or by
        // a port's tx (PktBuf::into_raw), and DPDK frees each mbuf once.
        drop(unsafe { ctx.pool.from_raw(*slots.add(i), 0, 0) });
    }
}

/// DPDK's free count.
unsafe extern "C" fn slot_count(ctx: *mut c_void) -> c_uint {
    // SAFETY: as in slot_get.
    let ctx = unsafe { &*(ctx as *const SlotCtx) };
    ctx.pool.free_slots() as c_uint
}

struct Shared {
    mp: NonNull<sys::rte_mempool>,
    ctx: Box<SlotCtx>,
    base: *mut u8,
    len: usize,
    iova: u64,
    registered: bool,
    _eal: Eal,
}

// SAFETY: the mempool is thread-safe (its ops call into the Sync Pool); the raw pointers are
// addresses of memory owned by the Pool inside ctx.
unsafe impl Send for Shared {}
// SAFETY: as above; nothing here is mutated after construction.
unsafe impl Sync for Shared {}

impl Drop for Shared {
    fn drop(&mut self) {
        // SAFETY: devices hold a DpdkPool clone, so no device uses the mempool any more.
        unsafe { sys::shim_extpool_free(self.mp.as_ptr()) };
        if self.registered {
            // SAFETY: registered by us in DpdkPool::new with this address and length.
            let r = unsafe { sys::rte_extmem_unregister(self.base.cast(), self.len) };
            if r < 0 {
                tracing::warn!(
                    errno = super::error::rte_errno(),
                    "rte_extmem_unregister failed"
                );
            }
        }
    }
}

/// A bypass [`Pool`] lent to DPDK as a mempool of mbufs pinned to its slots. Cheap to clone;
/// devices hold a clone, so the mempool outlives every device using it.
#[derive(Clone)]
pub struct DpdkPool {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for DpdkPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DpdkPool")
            .field("pool", &self.shared.ctx.pool)
            .field("iova", &self.shared.iova)
            .field("registered", &self.shared.registered)
            .finish()
    }
}

impl DpdkPool {
    /// Lend `pool` to DPDK: register its region as external memory and make a mempool whose
    /// mbuf *i* is pinned to slot *i*. The pool's slot size must be at most 65535 bytes (an
    /// mbuf's buffer length is 16 bits) and must hold the device's frames plus headroom.
    pub fn new(eal: &Eal, pool: &Pool) -> Result<DpdkPool, DpdkPoolError> {
        if pool.slot_size() > u16::MAX as usize {
            return Err(DpdkPoolError::Config("slot size over 65535 bytes"));
        }
        let region = pool.region();
        let base = region.as_ptr();
        let len = region.len();
        let page = match region.pages() {
            PageSize::Huge2M => HUGE_PAGE_SIZE,
            PageSize::Base4K | PageSize::Foreign => BASE_PAGE_SIZE,
        };
        // Register the region with DPDK's memory map so drivers can translate addresses and
        // map it for DMA. EEXIST: this region is lent twice, already registered.
        // SAFETY: [base, base + len) is mapped for as long as the Pool lives, and the Pool in
        // ctx lives until after unregistration (Shared::drop).
        let r =
            unsafe { sys::rte_extmem_register(base.cast(), len, std::ptr::null_mut(), 0, page) };
        let registered = match check("rte_extmem_register", r) {
            Ok(_) => true,
            Err(e) if e.errno == libc::EEXIST => false,
            Err(e) => return Err(e.into()),
        };
        let iova = if eal.iova_is_va() {
            base as u64
        } else {
            BAD_IOVA
        };
        let name = CString::new(format!("bp{:x}", base as usize))
            .map_err(|_| DpdkPoolError::Config("name"))?;
        let ctx = Box::new(SlotCtx { pool: pool.clone() });
        let cfg = sys::shim_extpool_cfg {
            name: name.as_ptr(),
            n: pool.capacity(),
            slot_size: pool.slot_size() as u32,
            headroom: pool.headroom(),
            // SAFETY: reads the calling thread's NUMA socket.
            socket_id: unsafe { sys::rte_socket_id() } as c_int,
            base: base.cast(),
            iova,
            ctx: (&*ctx as *const SlotCtx).cast_mut().cast(),
            get: Some(slot_get),
            put: Some(slot_put),
            count: Some(slot_count),
        };
        // SAFETY: cfg is valid for the call; ctx (boxed, address stable) and the slots it
        // describes outlive the mempool (Shared::drop frees the mempool first).
        let mp = check_ptr("shim_extpool_create", unsafe {
            sys::shim_extpool_create(&cfg)
        });
        let mp = match mp {
            Ok(mp) => mp,
            Err(e) => {
                if registered {
                    // SAFETY: registered just above.
                    unsafe { sys::rte_extmem_unregister(base.cast(), len) };
                }
                return Err(e.into());
            }
        };
        Ok(DpdkPool {
            shared: Arc::new(Shared {
                mp: NonNull::new(mp).expect("checked non-null"),
                ctx,
                base,
                len,
                iova,
                registered,
                _eal: eal.clone(),
            }),
        })
    }

    /// The bypass pool whose slots the mbufs use.
    pub fn pool(&self) -> &Pool {
        &self.shared.ctx.pool
    }

    /// The mempool, for raw DPDK calls.
    pub fn as_mempool(&self) -> *mut sys::rte_mempool {
        self.shared.mp.as_ptr()
    }

    /// The IOVA of the first slot, or `None` when DPDK runs in IOVA-as-PA mode.
    pub fn iova(&self) -> Option<u64> {
        (self.shared.iova != BAD_IOVA).then_some(self.shared.iova)
    }

    /// The address range the slots occupy (the registered region).
    pub fn memory(&self) -> (*mut u8, usize) {
        (self.shared.base, self.shared.len)
    }

    /// The callback context the shim reports for mbufs of this pool.
    pub(crate) fn ctx_ptr(&self) -> *const c_void {
        (&*self.shared.ctx as *const SlotCtx).cast()
    }
}
