//! `bypass_stack` and `bypass_listener`: building a stack, polling it, accepting and
//! connecting, readiness across many sockets.

use std::ffi::c_char;
use std::net::SocketAddrV4;
use std::rc::Rc;
use std::time::Duration;

use bypass_core::pmd::memif::Role;
use bypass_core::proto::ConnectionConfig;
use bypass_core::socket::{Backend, Socket, Stack};

use crate::config::{c_str, parse_ip, BackendSpec, Config};
use crate::error::{bypass_result, guard, CError, CResult};
use crate::socket::{bypass_socket, SockEntry};
use crate::{with_state, State};

/// A transport stack (one poll loop over one port), owned by the thread that made it. An
/// opaque handle.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[allow(non_camel_case_types)]
pub struct bypass_stack {
    pub(crate) id: u64,
}

/// Accepts incoming connections of a stack. An opaque handle.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[allow(non_camel_case_types)]
pub struct bypass_listener {
    pub(crate) id: u64,
}

/// A live stack.
pub(crate) struct StackEntry {
    pub stack: Stack,
}

fn build(c: &Config) -> CResult<StackEntry> {
    let ip = c.ip.ok_or_else(|| {
        CError::new(
            bypass_result::BYPASS_ERR_INVALID_ARGUMENT,
            "the configuration has no IP address: call bypass_config_set_ip",
        )
    })?;
    let backend = match &c.backend {
        BackendSpec::None => {
            return Err(CError::new(
                bypass_result::BYPASS_ERR_INVALID_ARGUMENT,
                "the configuration has no backend: call bypass_config_set_memif or \
                 bypass_config_set_dpdk",
            ))
        }
        BackendSpec::Memif { socket, server, id } => Backend::Memif {
            socket: socket.clone(),
            role: if *server { Role::Server } else { Role::Client },
            id: *id,
        },
        BackendSpec::Dpdk { eal, device } => dpdk::open(eal, device, c)?,
    };
    let mut b = Stack::builder(backend, ip);
    if c.rx_segments {
        b = b.connection_config(ConnectionConfig {
            rx_segments: true,
            ..ConnectionConfig::default()
        });
    }
    // After connection_config, which replaces the connection settings.
    b = b.max_message(c.max_message.unwrap_or(1 << 30));
    if let Some(m) = c.mac {
        b = b.mac(m);
    }
    if let Some(p) = c.udp_port {
        b = b.udp_port(p);
    }
    if let Some(m) = c.mtu {
        b = b.mtu(m);
    }
    for &(ip, mac) in &c.static_arp {
        b = b.static_arp(ip, mac);
    }
    if let Some(n) = c.max_connections {
        b = b.max_connections(n);
    }
    if c.no_accept {
        b = b.no_accept();
    }
    if let Some(t) = c.link_timeout {
        b = b.link_timeout(t);
    }
    if let Some(p) = c.pin_core {
        b = b.pin_core(p);
    }
    if c.spin {
        b = b.idle_poll(bypass_core::socket::IdlePoll::Spin);
    }
    if let Some(s) = c.seed {
        b = b.seed(s);
    }
    if let Some(a) = c.metrics_addr {
        b = b
            .metrics_addr(a)
            .metrics_allow_remote(c.metrics_allow_remote);
    }
    if let Some(n) = &c.metrics_name {
        b = b.metrics_name(n);
    }
    if let Some(r) = c.memif_ring {
        b = b.memif_ring(r);
    }
    if let Some(n) = c.memif_extra {
        b = b.memif_extra_buffers(n);
    }
    // The memif interface's pages (DPDK's pool took its policy in `dpdk::open`).
    if let (BackendSpec::Memif { .. }, Some(h)) = (&c.backend, c.hugepages) {
        b = b.memif_hugepages(h);
    }
    b = b.omit_checksums(c.omit_checksums);
    // After connection_config, which would replace max_rx_slots.
    b = b.limits(&c.limits);
    Ok(StackEntry { stack: b.build()? })
}

#[cfg(feature = "dpdk")]
mod dpdk {
    use bypass_core::mem::{HugePages, Pool, PoolConfig};
    use bypass_core::pmd::dpdk::{Device, DeviceConfig, DpdkPool, Eal, EalConfig, EalMemory};
    use bypass_core::socket::{Backend, Error as SockError};

    use crate::config::Config;
    use crate::error::{bypass_result, CError, CResult};

    fn backend_error(what: impl Into<String>, why: impl std::fmt::Display) -> CError {
        CError::from(SockError::Backend {
            what: what.into(),
            why: why.to_string(),
            fix: "check the configuration (bypass_config_set_*) and that the peer or device \
                  exists",
        })
    }

    /// Starts the EAL with `eal` (whitespace-separated arguments), opens `device` and lends
    /// its first queue to the stack. The EAL starts on a thread of its own (it pins the
    /// thread that starts it to its main lcore; the caller keeps its affinity).
    pub(super) fn open(eal: &str, device: &str, c: &Config) -> CResult<Backend> {
        let mut cfg = EalConfig::new();
        let mut no_huge = c.hugepages == Some(HugePages::Never);
        let mut mb = None;
        let mut args = eal.split_whitespace();
        while let Some(a) = args.next() {
            let mut value = |flag: &str| {
                args.next().map(str::to_owned).ok_or_else(|| {
                    CError::new(
                        bypass_result::BYPASS_ERR_INVALID_ARGUMENT,
                        format!("eal_args: {flag} needs a value"),
                    )
                })
            };
            if let Some(v) = a.strip_prefix("--vdev=") {
                cfg.vdevs.push(v.to_owned());
            } else if a == "--vdev" {
                cfg.vdevs.push(value(a)?);
            } else if a == "-a" || a == "--allow" {
                cfg.pci_allow.push(value(a)?);
            } else if let Some(v) = a.strip_prefix("-a") {
                cfg.pci_allow.push(v.to_owned());
            } else if a == "--no-huge" {
                no_huge = true;
            } else if a == "-m" {
                let v = value(a)?;
                mb = Some(v.parse::<u32>().map_err(|_| {
                    CError::new(
                        bypass_result::BYPASS_ERR_INVALID_ARGUMENT,
                        format!("eal_args: -m {v:?} is not a number of megabytes"),
                    )
                })?);
            } else {
                cfg.extra.push(a.to_owned());
            }
        }
        cfg.no_pci = cfg.pci_allow.is_empty();
        cfg.memory = if no_huge {
            EalMemory::NoHuge {
                mb: mb.unwrap_or(256),
            }
        } else {
            EalMemory::Hugepages { mb }
        };
        let hugepages = if no_huge {
            HugePages::Never
        } else {
            c.hugepages.unwrap_or(HugePages::Prefer)
        };
        let (slots, slot_size) = (c.pool_slots, c.pool_slot_size);
        let device = device.to_owned();
        let port = std::thread::spawn(move || {
            let eal = Eal::init(&cfg).map_err(|e| backend_error("DPDK EAL", e))?;
            let mut pc = PoolConfig::new("bypass-capi-dpdk", slots, slot_size);
            pc.hugepages = hugepages;
            let pool = Pool::new(&pc).map_err(|e| backend_error("DPDK packet pool", e))?;
            let dpool =
                DpdkPool::new(&eal, &pool).map_err(|e| backend_error("DPDK packet pool", e))?;
            let (_dev, mut ports) =
                Device::open(&eal, &device, &dpool, &DeviceConfig::default())
                    .map_err(|e| backend_error(format!("DPDK device {device}"), e))?;
            // The port keeps the device, the pool and the EAL open.
            ports
                .pop()
                .ok_or_else(|| backend_error(format!("DPDK device {device}"), "no queue"))
        })
        .join()
        .map_err(|_| CError::new(bypass_result::BYPASS_ERR_INTERNAL, "starting DPDK panicked"))??;
        Ok(Backend::Port(Box::new(port)))
    }
}

#[cfg(not(feature = "dpdk"))]
mod dpdk {
    use bypass_core::socket::Backend;

    use crate::config::Config;
    use crate::error::{bypass_result, CError, CResult};

    pub(super) fn open(_eal: &str, _device: &str, _c: &Config) -> CResult<Backend> {
        Err(CError::new(
            bypass_result::BYPASS_ERR_UNSUPPORTED,
            "this libbypass was built without DPDK (feature `dpdk`)",
        ))
    }
}

/// Builds a stack from `cfg` on this thread, waiting for its link (memif: the peer) up to the
/// link timeout (a memif server does not wait: it listens), and writes it to `*out`. This
/// thread becomes its poll loop: the stack, its listeners, sockets, send buffers and
/// messages are used from this thread only (calls from another return
/// `BYPASS_ERR_WRONG_THREAD`). One stack per thread (each claims a core slot
/// for its buffer caches).
///
/// # Safety
/// `out` must be NULL or point to a writable `bypass_stack`.
#[no_mangle]
pub unsafe extern "C" fn bypass_stack_new(
    cfg: crate::bypass_config,
    out: *mut bypass_stack,
) -> bypass_result {
    guard("bypass_stack_new", || {
        if out.is_null() {
            return Err(CError::null("out"));
        }
        let c = with_state(|st| Ok(st.configs.get(cfg.id)?.clone()))?;
        // Built outside the state (it waits for the link), then stored.
        let entry = build(&c)?;
        let id = with_state(|st| st.stacks.insert(entry))?;
        // SAFETY: `out` is non-NULL and writable by the caller's contract.
        unsafe { out.write(bypass_stack { id }) };
        Ok(())
    })
}

/// Frees a stack. Its sockets stay usable until closed (the stack's memory lives until the
/// last of them is freed too); when the last goes, the stack keeps polling for up to 100 ms
/// so its last packets (the acknowledgement of a close) leave.
#[no_mangle]
pub extern "C" fn bypass_stack_free(stack: bypass_stack) -> bypass_result {
    guard("bypass_stack_free", || {
        let e = with_state(|st| st.stacks.remove(stack.id))?;
        drop(e);
        Ok(())
    })
}

fn with_stack<R>(stack: bypass_stack, f: impl FnOnce(&Stack) -> CResult<R>) -> CResult<R> {
    with_state(|st| f(&st.stacks.get(stack.id)?.stack))
}

/// Runs one iteration of the poll loop; `*did_work` (if not NULL) says whether it did
/// anything. Waiting calls poll by themselves; call this when the thread does other work
/// between calls, so that acknowledgements and retransmissions keep flowing.
///
/// # Safety
/// `did_work` must be NULL or point to a writable `bool`.
#[no_mangle]
pub unsafe extern "C" fn bypass_stack_poll(
    stack: bypass_stack,
    did_work: *mut bool,
) -> bypass_result {
    guard("bypass_stack_poll", || {
        let d = with_stack(stack, |s| Ok(s.poll()))?;
        if !did_work.is_null() {
            // SAFETY: non-NULL and writable by the caller's contract.
            unsafe { did_work.write(d) };
        }
        Ok(())
    })
}

/// Runs the poll loop for `us` microseconds.
#[no_mangle]
pub extern "C" fn bypass_stack_poll_for_us(stack: bypass_stack, us: u64) -> bypass_result {
    guard("bypass_stack_poll_for_us", || {
        with_stack(stack, |s| {
            s.poll_for(Duration::from_micros(us));
            Ok(())
        })
    })
}

/// Whether the stack's link is up (memif: the peer process is there), in `*up`.
///
/// # Safety
/// `up` must be NULL or point to a writable `bool`.
#[no_mangle]
pub unsafe extern "C" fn bypass_stack_link_up(stack: bypass_stack, up: *mut bool) -> bypass_result {
    guard("bypass_stack_link_up", || {
        if up.is_null() {
            return Err(CError::null("up"));
        }
        let u = with_stack(stack, |s| Ok(s.link_up()))?;
        // SAFETY: non-NULL and writable by the caller's contract.
        unsafe { up.write(u) };
        Ok(())
    })
}

/// The number of live connections of the stack, in `*n`.
///
/// # Safety
/// `n` must be NULL or point to a writable `size_t`.
#[no_mangle]
pub unsafe extern "C" fn bypass_stack_connections(
    stack: bypass_stack,
    n: *mut usize,
) -> bypass_result {
    guard("bypass_stack_connections", || {
        if n.is_null() {
            return Err(CError::null("n"));
        }
        let c = with_stack(stack, |s| Ok(s.connections()))?;
        // SAFETY: non-NULL and writable by the caller's contract.
        unsafe { n.write(c) };
        Ok(())
    })
}

/// Writes `"IP:PORT"` where the stack's metrics exporter listens (set with
/// `bypass_config_set_metrics_addr`) into `buf` (NUL-terminated, truncated to `len - 1`);
/// `*needed` (if not NULL) gets the length plus one. `BYPASS_NOT_READY` when the stack serves
/// no metrics.
///
/// # Safety
/// `buf` must be NULL or point to `len` writable bytes; `needed` NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn bypass_stack_metrics_addr(
    stack: bypass_stack,
    buf: *mut c_char,
    len: usize,
    needed: *mut usize,
) -> bypass_result {
    guard("bypass_stack_metrics_addr", || {
        let Some(a) = with_stack(stack, |s| Ok(s.metrics_addr()))? else {
            return Err(CError::new(bypass_result::BYPASS_NOT_READY, String::new()));
        };
        // SAFETY: forwarded contract.
        unsafe { write_c_string(&a.to_string(), buf, len, needed) }
    })
}

/// Writes `s` NUL-terminated into `buf` (truncated to `len - 1` bytes); `*needed` gets
/// `s.len() + 1`.
///
/// # Safety
/// `buf` must be NULL or point to `len` writable bytes; `needed` NULL or writable.
pub(crate) unsafe fn write_c_string(
    s: &str,
    buf: *mut c_char,
    len: usize,
    needed: *mut usize,
) -> CResult {
    if !needed.is_null() {
        // SAFETY: non-NULL and writable by the caller's contract.
        unsafe { needed.write(s.len() + 1) };
    }
    if buf.is_null() || len == 0 {
        return Ok(());
    }
    let n = s.len().min(len - 1);
    // SAFETY: `buf` has `len` writable bytes; we write n + 1 <= len.
    unsafe {
        std::ptr::copy_nonoverlapping(s.as_ptr(), buf.cast::<u8>(), n);
        *buf.add(n) = 0;
    }
    Ok(())
}

/// A listener for the stack's incoming connections, in `*out` (free it with
/// `bypass_listener_free`).
///
/// # Safety
/// `out` must be NULL or point to a writable `bypass_listener`.
#[no_mangle]
pub unsafe extern "C" fn bypass_stack_listen(
    stack: bypass_stack,
    out: *mut bypass_listener,
) -> bypass_result {
    guard("bypass_stack_listen", || {
        if out.is_null() {
            return Err(CError::null("out"));
        }
        let id = with_state(|st| {
            let l = st.stacks.get(stack.id)?.stack.listen();
            st.listeners.insert(l)
        })?;
        // SAFETY: non-NULL and writable by the caller's contract.
        unsafe { out.write(bypass_listener { id }) };
        Ok(())
    })
}

/// Frees a listener (connections it accepted are not affected).
#[no_mangle]
pub extern "C" fn bypass_listener_free(listener: bypass_listener) -> bypass_result {
    guard("bypass_listener_free", || {
        with_state(|st| st.listeners.remove(listener.id).map(drop))
    })
}

fn new_socket(st: &mut State, s: Socket) -> CResult<u64> {
    st.sockets.insert(SockEntry {
        sock: Rc::new(s),
        pending: None,
    })
}

/// Waits up to `timeout_ms` for an incoming connection; writes it to `*out`.
/// `BYPASS_ERR_TIMED_OUT` when none came.
///
/// # Safety
/// `out` must be NULL or point to a writable `bypass_socket`.
#[no_mangle]
pub unsafe extern "C" fn bypass_listener_accept(
    listener: bypass_listener,
    timeout_ms: u64,
    out: *mut bypass_socket,
) -> bypass_result {
    guard("bypass_listener_accept", || {
        if out.is_null() {
            return Err(CError::null("out"));
        }
        let id = with_state(|st| {
            let s = st
                .listeners
                .get(listener.id)?
                .accept(Duration::from_millis(timeout_ms))?;
            new_socket(st, s)
        })?;
        // SAFETY: non-NULL and writable by the caller's contract.
        unsafe { out.write(bypass_socket { id }) };
        Ok(())
    })
}

/// Polls once; writes an incoming connection to `*out` if one is ready, else returns
/// `BYPASS_NOT_READY`.
///
/// # Safety
/// `out` must be NULL or point to a writable `bypass_socket`.
#[no_mangle]
pub unsafe extern "C" fn bypass_listener_try_accept(
    listener: bypass_listener,
    out: *mut bypass_socket,
) -> bypass_result {
    guard("bypass_listener_try_accept", || {
        if out.is_null() {
            return Err(CError::null("out"));
        }
        let id = with_state(|st| {
            let Some(s) = st.listeners.get(listener.id)?.try_accept() else {
                return Err(CError::new(bypass_result::BYPASS_NOT_READY, String::new()));
            };
            new_socket(st, s)
        })?;
        // SAFETY: non-NULL and writable by the caller's contract.
        unsafe { out.write(bypass_socket { id }) };
        Ok(())
    })
}

/// Connects to the stack at `ip` (dotted) and UDP `port` (7200 by default), retrying the
/// handshake for up to `timeout_ms` (a peer that starts a little later is reached); writes
/// the connection to `*out`. `BYPASS_ERR_PEER_UNREACHABLE` when nobody answered.
///
/// # Safety
/// `ip` must be NULL or a NUL-terminated string; `out` NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn bypass_stack_connect(
    stack: bypass_stack,
    ip: *const c_char,
    port: u16,
    timeout_ms: u64,
    out: *mut bypass_socket,
) -> bypass_result {
    guard("bypass_stack_connect", || {
        if out.is_null() {
            return Err(CError::null("out"));
        }
        // SAFETY: forwarded contract.
        let ip = parse_ip(unsafe { c_str(ip, "ip") }?, "ip")?;
        let id = with_state(|st| {
            let s = st.stacks.get(stack.id)?.stack.connect(
                SocketAddrV4::new(ip, port),
                Duration::from_millis(timeout_ms),
            )?;
            new_socket(st, s)
        })?;
        // SAFETY: non-NULL and writable by the caller's contract.
        unsafe { out.write(bypass_socket { id }) };
        Ok(())
    })
}

/// `v` emptied, as a vector of references of another lifetime (its allocation reused: an
/// empty vector's map-collect into an element type of the same layout is done in place).
fn recycle<'b>(mut v: Vec<&'_ Socket>) -> Vec<&'b Socket> {
    v.clear();
    v.into_iter()
        .map(|_| -> &'b Socket { unreachable!() })
        .collect()
}

/// Runs the poll loop until one of the `n` sockets in `socks` has a message or an event to
/// take (a close, a reset), or `timeout_us` microseconds pass. Writes the indices (into
/// `socks`) of the ready sockets to `ready` (room for `n` entries) and their number to
/// `*n_ready` (0 after a timeout: not an error). One thread serving many connections calls
/// this, then `bypass_socket_try_recv_msg` (or `_try_recv`) on each ready socket.
///
/// # Safety
/// `socks` must point to `n` readable handles (or be NULL when `n` is 0); `ready` to `n`
/// writable `size_t`s; `n_ready` must be writable.
#[no_mangle]
pub unsafe extern "C" fn bypass_stack_poll_ready(
    stack: bypass_stack,
    socks: *const bypass_socket,
    n: usize,
    ready: *mut usize,
    n_ready: *mut usize,
    timeout_us: u64,
) -> bypass_result {
    guard("bypass_stack_poll_ready", || {
        if n_ready.is_null() {
            return Err(CError::null("n_ready"));
        }
        if n > 0 && (socks.is_null() || ready.is_null()) {
            return Err(CError::null(if socks.is_null() {
                "socks"
            } else {
                "ready"
            }));
        }
        let handles: &[bypass_socket] = if n == 0 {
            &[]
        } else {
            // SAFETY: `socks` points to `n` readable handles by the caller's contract.
            unsafe { std::slice::from_raw_parts(socks, n) }
        };
        let count = with_state(|st| {
            let State {
                stacks,
                sockets,
                poll_refs,
                poll_ready,
                ..
            } = st;
            let stack = &stacks.get(stack.id)?.stack;
            let mut refs = recycle(std::mem::take(poll_refs));
            for (k, h) in handles.iter().enumerate() {
                match sockets.get(h.id) {
                    Ok(e) => refs.push(&*e.sock),
                    Err(mut e) => {
                        e.msg = format!("socks[{k}]: {}", e.msg);
                        *poll_refs = recycle(refs);
                        return Err(e);
                    }
                }
            }
            stack.poll_ready(&refs, poll_ready, Duration::from_micros(timeout_us));
            *poll_refs = recycle(refs);
            for (j, &k) in poll_ready.iter().enumerate() {
                // SAFETY: `ready` has room for `n` entries; j < ready count <= n.
                unsafe { ready.add(j).write(k) };
            }
            Ok(poll_ready.len())
        })?;
        // SAFETY: non-NULL and writable by the caller's contract.
        unsafe { n_ready.write(count) };
        Ok(())
    })
}
