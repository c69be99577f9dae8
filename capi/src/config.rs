//! `bypass_config`: what a stack is built from (the C face of `StackBuilder`).

use std::ffi::{c_char, CStr};
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use bypass_core::mem::HugePages;

use crate::error::{bypass_result, guard, CError, CResult};
use crate::{with_state, State};
use bypass_core::socket::Limits;

/// memif role: serve the control socket (creates the socket file).
pub const BYPASS_MEMIF_SERVER: u32 = 0;
/// memif role: connect to the control socket (owns the shared memory).
pub const BYPASS_MEMIF_CLIENT: u32 = 1;

/// Hugepage policy: use 2 MiB hugepages when the kernel gives them, else 4 KiB pages.
pub const BYPASS_HUGEPAGES_PREFER: u32 = 0;
/// Hugepage policy: fail (`BYPASS_ERR_BACKEND`) when hugepages cannot be had.
pub const BYPASS_HUGEPAGES_REQUIRE: u32 = 1;
/// Hugepage policy: 4 KiB pages only.
pub const BYPASS_HUGEPAGES_NEVER: u32 = 2;

/// A stack configuration: the backend, addresses and options. Made by `bypass_config_new`,
/// freed by `bypass_config_free`; `bypass_stack_new` reads it (it can build several stacks,
/// on this thread). An opaque handle: copy it freely, never look inside.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[allow(non_camel_case_types)]
pub struct bypass_config {
    pub(crate) id: u64,
}

#[derive(Debug, Clone)]
pub(crate) enum BackendSpec {
    None,
    Memif {
        socket: PathBuf,
        server: bool,
        id: u32,
    },
    #[cfg_attr(not(feature = "dpdk"), allow(dead_code))]
    Dpdk {
        eal: String,
        device: String,
    },
}

/// The options; defaults are `StackBuilder`'s.
#[derive(Debug, Clone)]
pub(crate) struct Config {
    pub backend: BackendSpec,
    pub ip: Option<Ipv4Addr>,
    pub mac: Option<[u8; 6]>,
    pub udp_port: Option<u16>,
    pub mtu: Option<u16>,
    pub static_arp: Vec<(Ipv4Addr, [u8; 6])>,
    pub max_message: Option<u64>,
    pub max_connections: Option<usize>,
    pub no_accept: bool,
    pub link_timeout: Option<Duration>,
    pub pin_core: Option<usize>,
    pub spin: bool,
    pub seed: Option<u64>,
    pub metrics_addr: Option<SocketAddr>,
    pub metrics_allow_remote: bool,
    pub metrics_name: Option<String>,
    pub omit_checksums: bool,
    pub memif_ring: Option<u8>,
    pub memif_extra: Option<u32>,
    pub pool_slots: u32,
    pub pool_slot_size: u32,
    pub hugepages: Option<HugePages>,
    pub rx_segments: bool,
    /// The limits against hostile peers (`limits`).
    pub limits: Limits,
}

impl Config {
    fn new() -> Config {
        Config {
            backend: BackendSpec::None,
            ip: None,
            mac: None,
            udp_port: None,
            mtu: None,
            static_arp: Vec::new(),
            max_message: None,
            max_connections: None,
            no_accept: false,
            link_timeout: None,
            pin_core: None,
            spin: false,
            seed: None,
            metrics_addr: None,
            metrics_allow_remote: false,
            metrics_name: None,
            omit_checksums: false,
            memif_ring: None,
            memif_extra: None,
            pool_slots: 16384,
            pool_slot_size: 2048 + 128,
            hugepages: None,
            rx_segments: false,
            limits: Limits::default(),
        }
    }
}

/// A C string argument as `&str`.
///
/// # Safety
/// `p` must be NULL or a NUL-terminated string that stays valid for the call.
pub(crate) unsafe fn c_str<'a>(p: *const c_char, what: &str) -> CResult<&'a str> {
    if p.is_null() {
        return Err(CError::null(what));
    }
    // SAFETY: non-NULL and NUL-terminated by the caller's contract.
    let s = unsafe { CStr::from_ptr(p) };
    s.to_str().map_err(|_| {
        CError::new(
            bypass_result::BYPASS_ERR_INVALID_ARGUMENT,
            format!("{what} is not UTF-8"),
        )
    })
}

pub(crate) fn parse_ip(s: &str, what: &str) -> CResult<Ipv4Addr> {
    s.parse().map_err(|_| {
        CError::new(
            bypass_result::BYPASS_ERR_INVALID_ARGUMENT,
            format!("{what} {s:?} is not an IPv4 address (dotted quad, e.g. \"10.0.0.1\")"),
        )
    })
}

/// A 6-byte MAC argument.
///
/// # Safety
/// `p` must be NULL or point to 6 readable bytes.
unsafe fn mac_arg(p: *const u8, what: &str) -> CResult<[u8; 6]> {
    if p.is_null() {
        return Err(CError::null(what));
    }
    let mut m = [0u8; 6];
    // SAFETY: the caller gives 6 readable bytes at `p`.
    unsafe { std::ptr::copy_nonoverlapping(p, m.as_mut_ptr(), 6) };
    Ok(m)
}

pub(crate) fn with_config(cfg: bypass_config, f: impl FnOnce(&mut Config) -> CResult) -> CResult {
    with_state(|st: &mut State| f(st.configs.get_mut(cfg.id)?))
}

fn invalid(msg: impl Into<String>) -> CError {
    CError::new(bypass_result::BYPASS_ERR_INVALID_ARGUMENT, msg)
}

/// A new configuration with the defaults (no backend yet: set one with
/// `bypass_config_set_memif` or `bypass_config_set_dpdk`, and the address with
/// `bypass_config_set_ip`), written to `*out`.
///
/// # Safety
/// `out` must be NULL or point to a writable `bypass_config`.
#[no_mangle]
pub unsafe extern "C" fn bypass_config_new(out: *mut bypass_config) -> bypass_result {
    guard("bypass_config_new", || {
        if out.is_null() {
            return Err(CError::null("out"));
        }
        let id = with_state(|st| st.configs.insert(Config::new()))?;
        // SAFETY: `out` is non-NULL and writable by the caller's contract.
        unsafe { out.write(bypass_config { id }) };
        Ok(())
    })
}

/// Frees a configuration (stacks built from it are not affected).
#[no_mangle]
pub extern "C" fn bypass_config_free(cfg: bypass_config) -> bypass_result {
    guard("bypass_config_free", || {
        with_state(|st| st.configs.remove(cfg.id).map(drop))
    })
}

/// Backend: memif over the UNIX control socket `socket_path`, as the server
/// (`BYPASS_MEMIF_SERVER`: creates the socket file, removes it when the stack is freed) or the
/// client (`BYPASS_MEMIF_CLIENT`), interface `id` (both sides use the same).
///
/// # Safety
/// `socket_path` must be NULL or a NUL-terminated string.
#[no_mangle]
pub unsafe extern "C" fn bypass_config_set_memif(
    cfg: bypass_config,
    socket_path: *const c_char,
    role: u32,
    id: u32,
) -> bypass_result {
    guard("bypass_config_set_memif", || {
        // SAFETY: forwarded contract.
        let path = unsafe { c_str(socket_path, "socket_path") }?;
        if path.is_empty() {
            return Err(invalid("socket_path is empty"));
        }
        let server = match role {
            BYPASS_MEMIF_SERVER => true,
            BYPASS_MEMIF_CLIENT => false,
            r => {
                return Err(invalid(format!(
                    "role {r} is neither BYPASS_MEMIF_SERVER (0) nor BYPASS_MEMIF_CLIENT (1)"
                )))
            }
        };
        with_config(cfg, |c| {
            c.backend = BackendSpec::Memif {
                socket: PathBuf::from(path),
                server,
                id,
            };
            Ok(())
        })
    })
}

/// Backend: DPDK. `eal_args` are the EAL's arguments, whitespace-separated (e.g.
/// `"--vdev=net_ring0 --no-huge"`); `device` is the ethdev to open (e.g. `"net_ring0"`). The
/// EAL starts once per process: one DPDK stack per process. Returns
/// `BYPASS_ERR_UNSUPPORTED` when libbypass was built without the `dpdk` feature.
///
/// # Safety
/// `eal_args` and `device` must be NULL or NUL-terminated strings.
#[no_mangle]
pub unsafe extern "C" fn bypass_config_set_dpdk(
    cfg: bypass_config,
    eal_args: *const c_char,
    device: *const c_char,
) -> bypass_result {
    guard("bypass_config_set_dpdk", || {
        // SAFETY: forwarded contract.
        let eal = unsafe { c_str(eal_args, "eal_args") }?.to_owned();
        // SAFETY: forwarded contract.
        let device = unsafe { c_str(device, "device") }?.to_owned();
        if !cfg!(feature = "dpdk") {
            return Err(CError::new(
                bypass_result::BYPASS_ERR_UNSUPPORTED,
                "this libbypass was built without DPDK: rebuild it with \
                 `cargo build -p bypass-capi --features dpdk` (needs libdpdk-dev 22.11)",
            ));
        }
        if device.is_empty() {
            return Err(invalid("device is empty"));
        }
        with_config(cfg, |c| {
            c.backend = BackendSpec::Dpdk { eal, device };
            Ok(())
        })
    })
}

/// Our IPv4 address, dotted (e.g. `"10.77.0.1"`). Required.
///
/// # Safety
/// `ip` must be NULL or a NUL-terminated string.
#[no_mangle]
pub unsafe extern "C" fn bypass_config_set_ip(
    cfg: bypass_config,
    ip: *const c_char,
) -> bypass_result {
    guard("bypass_config_set_ip", || {
        // SAFETY: forwarded contract.
        let ip = parse_ip(unsafe { c_str(ip, "ip") }?, "ip")?;
        with_config(cfg, |c| {
            c.ip = Some(ip);
            Ok(())
        })
    })
}

/// Our Ethernet address (default: the port's).
///
/// # Safety
/// `mac` must be NULL or point to 6 bytes.
#[no_mangle]
pub unsafe extern "C" fn bypass_config_set_mac(
    cfg: bypass_config,
    mac: *const u8,
) -> bypass_result {
    guard("bypass_config_set_mac", || {
        // SAFETY: forwarded contract.
        let m = unsafe { mac_arg(mac, "mac") }?;
        with_config(cfg, |c| {
            c.mac = Some(m);
            Ok(())
        })
    })
}

/// A static ARP entry: `ip` (dotted) is at `mac` (6 bytes); no resolution for it.
///
/// # Safety
/// `ip` must be NULL or a NUL-terminated string; `mac` NULL or 6 bytes.
#[no_mangle]
pub unsafe extern "C" fn bypass_config_add_static_arp(
    cfg: bypass_config,
    ip: *const c_char,
    mac: *const u8,
) -> bypass_result {
    guard("bypass_config_add_static_arp", || {
        // SAFETY: forwarded contract.
        let ip = parse_ip(unsafe { c_str(ip, "ip") }?, "ip")?;
        // SAFETY: forwarded contract.
        let m = unsafe { mac_arg(mac, "mac") }?;
        with_config(cfg, |c| {
            c.static_arp.push((ip, m));
            Ok(())
        })
    })
}

/// The UDP port the transport listens on and sends from (default 7200).
#[no_mangle]
pub extern "C" fn bypass_config_set_udp_port(cfg: bypass_config, port: u16) -> bypass_result {
    guard("bypass_config_set_udp_port", || {
        with_config(cfg, |c| {
            c.udp_port = Some(port);
            Ok(())
        })
    })
}

/// IP MTU (default 9000 on memif: jumbo frames; the port's MTU otherwise).
#[no_mangle]
pub extern "C" fn bypass_config_set_mtu(cfg: bypass_config, mtu: u16) -> bypass_result {
    guard("bypass_config_set_mtu", || {
        with_config(cfg, |c| {
            c.mtu = Some(mtu);
            Ok(())
        })
    })
}

/// Largest message sent or accepted, in bytes (default 1 GiB).
#[no_mangle]
pub extern "C" fn bypass_config_set_max_message(cfg: bypass_config, bytes: u64) -> bypass_result {
    guard("bypass_config_set_max_message", || {
        with_config(cfg, |c| {
            c.max_message = Some(bytes);
            Ok(())
        })
    })
}

/// Most live connections (default 4096).
#[no_mangle]
pub extern "C" fn bypass_config_set_max_connections(cfg: bypass_config, n: u32) -> bypass_result {
    guard("bypass_config_set_max_connections", || {
        with_config(cfg, |c| {
            c.max_connections = Some(n as usize);
            Ok(())
        })
    })
}

/// Refuse incoming connections (a client-only stack) when `on`.
#[no_mangle]
pub extern "C" fn bypass_config_set_no_accept(cfg: bypass_config, on: bool) -> bypass_result {
    guard("bypass_config_set_no_accept", || {
        with_config(cfg, |c| {
            c.no_accept = on;
            Ok(())
        })
    })
}

/// How long `bypass_stack_new` waits for the link (memif: the peer) to come up, in
/// milliseconds (default 10000). A memif server does not wait: it listens.
#[no_mangle]
pub extern "C" fn bypass_config_set_link_timeout_ms(cfg: bypass_config, ms: u64) -> bypass_result {
    guard("bypass_config_set_link_timeout_ms", || {
        with_config(cfg, |c| {
            c.link_timeout = Some(Duration::from_millis(ms));
            Ok(())
        })
    })
}

/// Seed for connection ids (default: from the OS).
#[no_mangle]
pub extern "C" fn bypass_config_set_seed(cfg: bypass_config, seed: u64) -> bypass_result {
    guard("bypass_config_set_seed", || {
        with_config(cfg, |c| {
            c.seed = Some(seed);
            Ok(())
        })
    })
}

/// Leave UDP checksums out between two stacks on an intact link (memif between two
/// processes of this host) when both agree; saves a read of every payload. Off by default.
#[no_mangle]
pub extern "C" fn bypass_config_set_omit_checksums(cfg: bypass_config, on: bool) -> bypass_result {
    guard("bypass_config_set_omit_checksums", || {
        with_config(cfg, |c| {
            c.omit_checksums = on;
            Ok(())
        })
    })
}

/// memif: descriptors per ring, log2 (1..=14, default 10).
#[no_mangle]
pub extern "C" fn bypass_config_set_memif_ring(cfg: bypass_config, log2: u8) -> bypass_result {
    guard("bypass_config_set_memif_ring", || {
        with_config(cfg, |c| {
            c.memif_ring = Some(log2);
            Ok(())
        })
    })
}

/// memif: pool buffers beyond those the rings hold (default 1024), for frames the
/// application holds (received messages not yet released).
#[no_mangle]
pub extern "C" fn bypass_config_set_memif_extra_buffers(
    cfg: bypass_config,
    n: u32,
) -> bypass_result {
    guard("bypass_config_set_memif_extra_buffers", || {
        with_config(cfg, |c| {
            c.memif_extra = Some(n);
            Ok(())
        })
    })
}

/// Hand multi-packet messages out as their packet buffers (several segments per message,
/// no copy) instead of reassembling them into one buffer (one copy). Off by default.
#[no_mangle]
pub extern "C" fn bypass_config_set_rx_segments(cfg: bypass_config, on: bool) -> bypass_result {
    guard("bypass_config_set_rx_segments", || {
        with_config(cfg, |c| {
            c.rx_segments = on;
            Ok(())
        })
    })
}

/// Pin the thread that builds the stack (its poll loop) to CPU `cpu`.
#[no_mangle]
pub extern "C" fn bypass_config_set_pin_core(cfg: bypass_config, cpu: u32) -> bypass_result {
    guard("bypass_config_set_pin_core", || {
        with_config(cfg, |c| {
            c.pin_core = Some(cpu as usize);
            Ok(())
        })
    })
}

/// Waiting calls (receive, accept, connect, poll, a send under backpressure) keep polling
/// when `on` (the lowest latency, a whole core each) instead of sleeping in the kernel once
/// the stack was idle for 1 ms (the default: an idle stack costs well under 1 % of a core,
/// the first message after a quiet spell pays a wake-up of about 0.1 ms).
#[no_mangle]
pub extern "C" fn bypass_config_set_spin(cfg: bypass_config, on: bool) -> bypass_result {
    guard("bypass_config_set_spin", || {
        with_config(cfg, |c| {
            c.spin = on;
            Ok(())
        })
    })
}

/// DPDK: the packet pool, `slots` buffers of `slot_size` bytes each (headroom included;
/// default 16384 x 2176).
#[no_mangle]
pub extern "C" fn bypass_config_set_pool(
    cfg: bypass_config,
    slots: u32,
    slot_size: u32,
) -> bypass_result {
    guard("bypass_config_set_pool", || {
        if slots == 0 || slot_size < 256 {
            return Err(invalid(format!(
                "a pool of {slots} slots of {slot_size} bytes: need at least 1 slot of 256 bytes"
            )));
        }
        with_config(cfg, |c| {
            c.pool_slots = slots;
            c.pool_slot_size = slot_size;
            Ok(())
        })
    })
}

/// Hugepage policy of the packet memory (memif's shared memory, DPDK's pool):
/// `BYPASS_HUGEPAGES_PREFER` (default), `BYPASS_HUGEPAGES_REQUIRE` or `BYPASS_HUGEPAGES_NEVER`.
#[no_mangle]
pub extern "C" fn bypass_config_set_hugepages(cfg: bypass_config, policy: u32) -> bypass_result {
    guard("bypass_config_set_hugepages", || {
        let h = match policy {
            BYPASS_HUGEPAGES_PREFER => HugePages::Prefer,
            BYPASS_HUGEPAGES_REQUIRE => HugePages::Require,
            BYPASS_HUGEPAGES_NEVER => HugePages::Never,
            p => {
                return Err(invalid(format!(
                    "hugepage policy {p} is not one of BYPASS_HUGEPAGES_*"
                )))
            }
        };
        with_config(cfg, |c| {
            c.hugepages = Some(h);
            Ok(())
        })
    })
}

/// Serve this stack's Prometheus metrics (`/metrics`, `/capture`) on `addr`
/// (`"IP:PORT"`, port 0: any free port; read it back with `bypass_stack_metrics_addr`).
/// `bypass_stack_new` refuses an address other than loopback unless
/// `bypass_config_set_metrics_allow_remote` allows it. Capture cannot be enabled from C:
/// `POST /capture?on=1` answers 404, and every POST 403 (no token).
///
/// # Safety
/// `addr` must be NULL or a NUL-terminated string.
#[no_mangle]
pub unsafe extern "C" fn bypass_config_set_metrics_addr(
    cfg: bypass_config,
    addr: *const c_char,
) -> bypass_result {
    guard("bypass_config_set_metrics_addr", || {
        // SAFETY: forwarded contract.
        let s = unsafe { c_str(addr, "addr") }?;
        let a: SocketAddr = s.parse().map_err(|_| {
            invalid(format!(
                "addr {s:?} is not IP:PORT (e.g. \"127.0.0.1:9100\")"
            ))
        })?;
        with_config(cfg, |c| {
            c.metrics_addr = Some(a);
            Ok(())
        })
    })
}

/// Let `bypass_config_set_metrics_addr` name an address other than loopback (anyone who
/// reaches it reads the metrics). Off by default.
#[no_mangle]
pub extern "C" fn bypass_config_set_metrics_allow_remote(
    cfg: bypass_config,
    on: bool,
) -> bypass_result {
    guard("bypass_config_set_metrics_allow_remote", || {
        with_config(cfg, |c| {
            c.metrics_allow_remote = on;
            Ok(())
        })
    })
}

/// The name this stack's metric series carry (label `port`; default: the port's name).
///
/// # Safety
/// `name` must be NULL or a NUL-terminated string.
#[no_mangle]
pub unsafe extern "C" fn bypass_config_set_metrics_name(
    cfg: bypass_config,
    name: *const c_char,
) -> bypass_result {
    guard("bypass_config_set_metrics_name", || {
        // SAFETY: forwarded contract.
        let n = unsafe { c_str(name, "name") }?.to_owned();
        with_config(cfg, |c| {
            c.metrics_name = Some(n);
            Ok(())
        })
    })
}
