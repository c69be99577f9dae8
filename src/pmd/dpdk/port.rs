//! [`Device`]: a configured, started DPDK ethdev; [`DpdkPort`]: one of its queue pairs as a
//! [`Port`].

use std::ffi::{c_void, CStr, CString};
use std::sync::Arc;

use super::eal::Eal;
use super::error::{dpdk, DpdkError};
use super::pool::{DpdkPool, SlotCtx};
use crate::mem::{PktBuf, Pool, PoolExhausted};
use crate::pmd::{Link, Offloads, Port, PortInfo, PortStats, MAX_BURST};
use dpdk_sys as sys;

/// How to configure a device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceConfig {
    /// Queue pairs (one [`DpdkPort`] each). RSS spreads receive over them when > 1 and the
    /// device can hash.
    pub queues: u16,
    /// Receive descriptors per queue (adjusted to the device's limits).
    pub rx_desc: u16,
    /// Transmit descriptors per queue (adjusted to the device's limits).
    pub tx_desc: u16,
    /// Receive every frame, not only those to the device's address (ignored where the device
    /// cannot).
    pub promiscuous: bool,
    /// Use IPv4/UDP checksum offloads where the device reports them.
    pub checksum_offload: bool,
}

impl Default for DeviceConfig {
    fn default() -> Self {
        DeviceConfig {
            queues: 1,
            rx_desc: 1024,
            tx_desc: 1024,
            promiscuous: true,
            checksum_offload: true,
        }
    }
}

/// Errors opening or querying a device.
#[derive(Debug, thiserror::Error)]
pub enum DeviceError {
    /// No ethdev has this name (for vdevs, the name before the first comma).
    #[error("no DPDK device named {0:?}")]
    NotFound(String),
    /// The request does not fit the device.
    #[error("device {name}: {what}")]
    Unsupported {
        /// The device.
        name: String,
        /// What it cannot do.
        what: &'static str,
    },
    /// A name or devargs string held a NUL byte.
    #[error("string contains a NUL byte")]
    Nul,
    /// A DPDK call failed.
    #[error(transparent)]
    Dpdk(#[from] DpdkError),
}

/// Device-wide counters (`rte_eth_stats`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DeviceStats {
    /// Frames received.
    pub ipackets: u64,
    /// Frames sent.
    pub opackets: u64,
    /// Bytes received.
    pub ibytes: u64,
    /// Bytes sent.
    pub obytes: u64,
    /// Frames the device dropped because its receive queues were full.
    pub imissed: u64,
    /// Receive errors.
    pub ierrors: u64,
    /// Transmit errors.
    pub oerrors: u64,
    /// Receive buffer allocation failures.
    pub rx_nombuf: u64,
}

struct DevShared {
    id: u16,
    name: String,
    pool: DpdkPool,
    dma_mapped: Option<*mut sys::rte_device>,
    _eal: Eal,
}

// SAFETY: the port id and device pointer are process-wide DPDK handles; ethdev control calls
// made through them are thread-safe for distinct ports, and DevShared is only dropped once.
unsafe impl Send for DevShared {}
// SAFETY: as above.
unsafe impl Sync for DevShared {}

impl Drop for DevShared {
    fn drop(&mut self) {
        // SAFETY: every DpdkPort of this device holds this Arc, so no queue is polled now.
        if let Err(e) = dpdk!(rte_eth_dev_stop(self.id)) {
            tracing::warn!(device = %self.name, "{e}");
        }
        // SAFETY: as above; the port id is not used after close.
        if let Err(e) = dpdk!(rte_eth_dev_close(self.id)) {
            tracing::warn!(device = %self.name, "{e}");
        }
        if let Some(dev) = self.dma_mapped {
            let (base, len) = self.pool.memory();
            let iova = self.pool.iova().unwrap_or(super::pool::BAD_IOVA);
            // SAFETY: mapped in Device::open with the same arguments; the device is closed
            // (unmapping after close is what the API expects for a device no longer in use).
            unsafe { sys::rte_dev_dma_unmap(dev, base.cast(), iova, len) };
        }
    }
}

/// A configured and started DPDK ethdev. Stopped and closed when this and all of its ports
/// are dropped.
pub struct Device {
    shared: Arc<DevShared>,
    info: sys::rte_eth_dev_info,
    queues: u16,
    rss: bool,
}

impl std::fmt::Debug for Device {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Device")
            .field("id", &self.shared.id)
            .field("name", &self.shared.name)
            .field("queues", &self.queues)
            .field("rss", &self.rss)
            .finish()
    }
}

fn cstr(s: &str) -> Result<CString, DeviceError> {
    CString::new(s).map_err(|_| DeviceError::Nul)
}

impl Device {
    /// Hot-plug a device after the EAL started: a vdev (`net_memif0,role=client,...`) or a
    /// PCI address. Returns the name to pass to [`Device::open`].
    pub fn probe(_eal: &Eal, devargs: &str) -> Result<String, DeviceError> {
        let c = cstr(devargs)?;
        // SAFETY: c is a valid NUL-terminated string for the call; the EAL runs (_eal).
        dpdk!(rte_dev_probe(c.as_ptr()))?;
        Ok(devargs.split(',').next().unwrap_or(devargs).to_owned())
    }

    /// Configure and start the device named `name` with `cfg.queues` queue pairs receiving
    /// into `pool`; returns the device and one port per queue pair (index = queue).
    pub fn open(
        eal: &Eal,
        name: &str,
        pool: &DpdkPool,
        cfg: &DeviceConfig,
    ) -> Result<(Device, Vec<DpdkPort>), DeviceError> {
        let cname = cstr(name)?;
        let mut id = 0u16;
        // SAFETY: valid string and out-pointer for the call.
        let r = unsafe { sys::rte_eth_dev_get_port_by_name(cname.as_ptr(), &mut id) };
        if r < 0 {
            return Err(DeviceError::NotFound(name.to_owned()));
        }
        let unsupported = |what| DeviceError::Unsupported {
            name: name.to_owned(),
            what,
        };
        let mut info = sys::rte_eth_dev_info::default();
        // SAFETY: valid port id and out-pointer.
        dpdk!(rte_eth_dev_info_get(id, &mut info))?;
        let q = cfg.queues;
        if q == 0 || q > info.max_rx_queues || q > info.max_tx_queues {
            return Err(unsupported("queue count outside the device's limits"));
        }
        let room = pool.pool().slot_size() - pool.pool().headroom() as usize;
        if (info.min_rx_bufsize as usize) > room {
            return Err(unsupported(
                "pool slots smaller than the device's receive buffers",
            ));
        }

        let mut conf = sys::rte_eth_conf::default();
        let rss_want = (sys::RTE_ETH_RSS_IP | sys::RTE_ETH_RSS_UDP) as u64;
        let rss_hf = rss_want & info.flow_type_rss_offloads;
        let rss = q > 1 && rss_hf != 0;
        if rss {
            conf.rxmode.mq_mode = sys::RTE_ETH_MQ_RX_RSS;
            conf.rx_adv_conf.rss_conf.rss_hf = rss_hf;
        }
        let rx_ck = (sys::RTE_ETH_RX_OFFLOAD_IPV4_CKSUM | sys::RTE_ETH_RX_OFFLOAD_UDP_CKSUM) as u64;
        let tx_ck = (sys::RTE_ETH_TX_OFFLOAD_IPV4_CKSUM | sys::RTE_ETH_TX_OFFLOAD_UDP_CKSUM) as u64;
        let offloads = Offloads {
            rx_checksum: cfg.checksum_offload && info.rx_offload_capa & rx_ck == rx_ck,
            tx_checksum: cfg.checksum_offload && info.tx_offload_capa & tx_ck == tx_ck,
            // Frames cross a device (even a virtual one may lead to a wire): never assumed.
            intact: false,
        };
        if offloads.rx_checksum {
            conf.rxmode.offloads |= rx_ck;
        }
        if offloads.tx_checksum {
            conf.txmode.offloads |= tx_ck;
        }
        // SAFETY: valid port id and configuration.
        dpdk!(rte_eth_dev_configure(id, q, q, &conf))?;
        let (mut nrx, mut ntx) = (cfg.rx_desc, cfg.tx_desc);
        // SAFETY: valid port id and in/out pointers.
        dpdk!(rte_eth_dev_adjust_nb_rx_tx_desc(id, &mut nrx, &mut ntx))?;
        // SAFETY: valid port id.
        let socket = unsafe { sys::rte_eth_dev_socket_id(id) };
        // SOCKET_ID_ANY is -1.
        let socket = if socket < 0 { -1i32 } else { socket } as u32;
        for qi in 0..q {
            // SAFETY: valid port, queue, descriptor count; default rxconf (NULL); the mempool
            // outlives the device (DevShared holds the DpdkPool).
            dpdk!(rte_eth_rx_queue_setup(
                id,
                qi,
                nrx,
                socket,
                std::ptr::null(),
                pool.as_mempool()
            ))?;
            // SAFETY: as above, default txconf.
            dpdk!(rte_eth_tx_queue_setup(
                id,
                qi,
                ntx,
                socket,
                std::ptr::null()
            ))?;
        }

        // Map the pool's memory for the device's DMA where the bus can (PCI with VFIO);
        // virtual devices answer ENOTSUP, which is fine: they use virtual addresses.
        let mut dma_mapped = None;
        if let Some(iova) = pool.iova() {
            let (base, len) = pool.memory();
            // SAFETY: info.device is this port's device; the memory is registered with
            // rte_extmem_register and lives as long as the pool, which outlives the device.
            let r = unsafe { sys::rte_dev_dma_map(info.device, base.cast(), iova, len) };
            if r == 0 {
                dma_mapped = Some(info.device);
            } else {
                tracing::debug!(
                    device = name,
                    errno = super::error::rte_errno(),
                    "no DMA map"
                );
            }
        }
        let shared = Arc::new(DevShared {
            id,
            name: name.to_owned(),
            pool: pool.clone(),
            dma_mapped,
            _eal: eal.clone(),
        });

        // SAFETY: configured with queues set up.
        dpdk!(rte_eth_dev_start(id))?;
        if cfg.promiscuous {
            // SAFETY: valid port id. Not every device can; that is not an error here.
            let r = unsafe { sys::rte_eth_promiscuous_enable(id) };
            if r < 0 {
                tracing::debug!(device = name, errno = -r, "promiscuous mode unavailable");
            }
        }
        let mut mac = sys::rte_ether_addr::default();
        // SAFETY: valid port id and out-pointer.
        dpdk!(rte_eth_macaddr_get(id, &mut mac))?;
        let mut mtu = 1500u16;
        // SAFETY: valid port id and out-pointer; on failure mtu keeps 1500.
        if unsafe { sys::rte_eth_dev_get_mtu(id, &mut mtu) } < 0 {
            mtu = 1500;
        }
        let ports = (0..q)
            .map(|qi| DpdkPort {
                dev: shared.clone(),
                id,
                queue: qi,
                mp: pool.as_mempool(),
                ctx: pool.ctx_ptr(),
                pool: pool.pool().clone(),
                base: pool.memory().0 as usize,
                end: pool.memory().0 as usize
                    + pool.pool().capacity() as usize * pool.pool().slot_size(),
                info: PortInfo {
                    name: name.to_owned(),
                    mtu,
                    max_burst: MAX_BURST as u16,
                    mac: mac.addr_bytes,
                    queues: q,
                    queue: qi,
                    offloads,
                },
                stats: PortStats::default(),
                copies: 0,
                rx_bad_checksum: 0,
                rx_checksum_software: 0,
                mbufs: vec![std::ptr::null_mut(); MAX_BURST].into_boxed_slice(),
                scratch: Vec::with_capacity(MAX_BURST),
                copied: vec![false; MAX_BURST].into_boxed_slice(),
            })
            .collect();
        Ok((
            Device {
                shared,
                info,
                queues: q,
                rss,
            },
            ports,
        ))
    }

    /// DPDK's port id.
    pub fn id(&self) -> u16 {
        self.shared.id
    }

    /// The device's name.
    pub fn name(&self) -> &str {
        &self.shared.name
    }

    /// The driver's name (e.g. `net_ring`).
    pub fn driver(&self) -> String {
        if self.info.driver_name.is_null() {
            return String::new();
        }
        // SAFETY: driver_name is a static NUL-terminated string owned by the driver.
        unsafe { CStr::from_ptr(self.info.driver_name) }
            .to_string_lossy()
            .into_owned()
    }

    /// Queue pairs.
    pub fn queues(&self) -> u16 {
        self.queues
    }

    /// Whether receive is spread over the queues by RSS.
    pub fn rss(&self) -> bool {
        self.rss
    }

    /// Link state (does not wait).
    pub fn link(&self) -> Link {
        link_of(self.shared.id)
    }

    /// Device-wide counters.
    pub fn stats(&self) -> Result<DeviceStats, DeviceError> {
        let mut s = sys::rte_eth_stats::default();
        // SAFETY: valid port id and out-pointer.
        dpdk!(rte_eth_stats_get(self.shared.id, &mut s))?;
        Ok(DeviceStats {
            ipackets: s.ipackets,
            opackets: s.opackets,
            ibytes: s.ibytes,
            obytes: s.obytes,
            imissed: s.imissed,
            ierrors: s.ierrors,
            oerrors: s.oerrors,
            rx_nombuf: s.rx_nombuf,
        })
    }

    /// The driver's extended counters, by name.
    pub fn xstats(&self) -> Result<Vec<(String, u64)>, DeviceError> {
        let id = self.shared.id;
        // SAFETY: NULL/0 asks for the count.
        let n = dpdk!(rte_eth_xstats_get_names(id, std::ptr::null_mut(), 0))? as usize;
        let mut names = vec![sys::rte_eth_xstat_name::default(); n];
        let mut vals = vec![sys::rte_eth_xstat::default(); n];
        // SAFETY: arrays of n entries.
        let got = dpdk!(rte_eth_xstats_get_names(id, names.as_mut_ptr(), n as u32))? as usize;
        // SAFETY: arrays of n entries.
        let gotv = dpdk!(rte_eth_xstats_get(id, vals.as_mut_ptr(), n as u32))? as usize;
        let k = got.min(gotv).min(n);
        Ok(vals[..k]
            .iter()
            .filter_map(|v| {
                let nm = names.get(v.id as usize)?;
                // SAFETY: the name is a NUL-terminated array filled by the driver.
                let s = unsafe { CStr::from_ptr(nm.name.as_ptr()) };
                Some((s.to_string_lossy().into_owned(), v.value))
            })
            .collect())
    }
}

fn link_of(id: u16) -> Link {
    let mut l = sys::rte_eth_link::default();
    // SAFETY: valid port id and out-pointer.
    if unsafe { sys::rte_eth_link_get_nowait(id, &mut l) } < 0 {
        return Link::Down;
    }
    if l.link_status() as u32 == sys::RTE_ETH_LINK_UP {
        Link::Up {
            speed_mbps: if l.link_speed == sys::RTE_ETH_SPEED_NUM_UNKNOWN {
                0
            } else {
                l.link_speed
            },
        }
    } else {
        Link::Down
    }
}

/// One queue pair of a [`Device`], as a [`Port`]. Receives into the device's [`DpdkPool`];
/// `alloc_tx` gives slots of the same pool, which transmit without a copy.
pub struct DpdkPort {
    dev: Arc<DevShared>,
    id: u16,
    queue: u16,
    mp: *mut sys::rte_mempool,
    ctx: *const c_void,
    pool: Pool,
    base: usize,
    end: usize,
    info: PortInfo,
    stats: PortStats,
    copies: u64,
    rx_bad_checksum: u64,
    rx_checksum_software: u64,
    mbufs: Box<[*mut sys::rte_mbuf]>,
    scratch: Vec<PktBuf>,
    copied: Box<[bool]>,
}

// SAFETY: a DpdkPort is the only user of its queue pair; the mempool and device it points to
// are kept alive by the Arcs it holds and are thread-safe to use from any one thread.
unsafe impl Send for DpdkPort {}

impl std::fmt::Debug for DpdkPort {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DpdkPort")
            .field("device", &self.dev.name)
            .field("queue", &self.queue)
            .field("stats", &self.stats)
            .finish()
    }
}

const ETH_HDR: usize = 14;

impl DpdkPort {
    /// Frames copied at this layer (a foreign buffer on transmit, a chained or foreign mbuf on
    /// receive). Zero when every buffer comes from the port's pool.
    pub fn copies(&self) -> u64 {
        self.copies
    }

    /// Frames dropped on receive for a wrong IPv4 or UDP checksum, with receive checksum
    /// offload on: flagged BAD by the device, or found wrong by the software check of a frame
    /// whose status was UNKNOWN. Also counted in `PortStats::rx_errors`.
    pub fn rx_bad_checksum(&self) -> u64 {
        self.rx_bad_checksum
    }

    /// Frames checked in software despite receive checksum offload because the device
    /// reported no status (UNKNOWN) for one of their checksums.
    pub fn rx_checksum_software(&self) -> u64 {
        self.rx_checksum_software
    }

    /// The pool this port receives into and `alloc_tx` takes from.
    pub fn pool(&self) -> &Pool {
        &self.pool
    }

    /// DPDK's port id.
    pub fn port_id(&self) -> u16 {
        self.id
    }

    fn owns(&self, b: &PktBuf) -> bool {
        let p = b.data().as_ptr() as usize - b.data_offset();
        p >= self.base && p < self.end
    }

    /// Turn a received mbuf into a PktBuf: the slot itself when the mbuf is one segment of a
    /// DpdkPool, else a copy. With receive checksum offload, a frame the device flagged BAD
    /// is dropped, and one whose status is UNKNOWN is checked in software
    /// ([`rx_checksum_verdict`]); both drops count in `rx_errors`, `PortStats::rx_bad_checksum`
    /// and [`rx_bad_checksum`](Self::rx_bad_checksum).
    #[inline]
    fn take_mbuf(&mut self, m: *mut sys::rte_mbuf) -> Option<PktBuf> {
        // SAFETY: m is a valid mbuf the driver just gave us.
        let flags = unsafe { sys::shim_pktmbuf_ol_flags(m) };
        let offload = self.info.offloads.rx_checksum;
        if offload
            && (CsumStatus::ip(flags) == CsumStatus::Bad
                || CsumStatus::l4(flags) == CsumStatus::Bad)
        {
            self.stats.rx_errors += 1;
            self.stats.rx_bad_checksum += 1;
            self.rx_bad_checksum += 1;
            // SAFETY: we own m and free it once.
            unsafe { sys::shim_pktmbuf_free(m) };
            return None;
        }
        let b = self.mbuf_to_buf(m)?;
        if offload
            && (CsumStatus::ip(flags) == CsumStatus::Unknown
                || CsumStatus::l4(flags) == CsumStatus::Unknown)
        {
            self.rx_checksum_software += 1;
            if rx_checksum_verdict(flags, b.data()) == RxVerdict::Drop {
                self.stats.rx_errors += 1;
                self.stats.rx_bad_checksum += 1;
                self.rx_bad_checksum += 1;
                return None;
            }
        }
        Some(b)
    }

    /// A received mbuf as a PktBuf (see [`take_mbuf`](Self::take_mbuf)); consumes `m`.
    #[inline]
    fn mbuf_to_buf(&mut self, m: *mut sys::rte_mbuf) -> Option<PktBuf> {
        let (mut ctx, mut slot, mut off, mut len) = (std::ptr::null_mut(), 0u32, 0u32, 0u32);
        // SAFETY: m is valid; out-pointers are valid.
        let r = unsafe { sys::shim_extpool_take(m, &mut ctx, &mut slot, &mut off, &mut len) };
        if r == 0 {
            if std::ptr::eq(ctx as *const c_void, self.ctx) {
                // SAFETY: take released the mbuf's slot of our pool to us; off + len lies in
                // the slot (the mbuf's buffer is the slot).
                return Some(unsafe { self.pool.from_raw(slot, off, len) });
            }
            // Another DpdkPool's mbuf (a ring between two devices with different pools).
            // SAFETY: ctx is the SlotCtx of a live DpdkPool (its mempool made this mbuf).
            let other = unsafe { &*(ctx as *const SlotCtx) };
            // SAFETY: as above, for that pool.
            return Some(unsafe { other.pool.from_raw(slot, off, len) });
        }
        // Chained, shared or foreign: copy once.
        // SAFETY: m is valid.
        let plen = unsafe { sys::shim_pktmbuf_pkt_len(m) } as usize;
        let out = match self.pool.alloc() {
            Ok(mut b) => match b.append(plen) {
                Ok(dst) => {
                    // SAFETY: dst has plen bytes; m holds plen bytes.
                    let r = unsafe {
                        sys::shim_pktmbuf_copy_out(m, 0, plen as u32, dst.as_mut_ptr().cast())
                    };
                    if r == 0 {
                        self.copies += 1;
                        Some(b)
                    } else {
                        self.stats.rx_errors += 1;
                        None
                    }
                }
                Err(_) => {
                    self.stats.rx_errors += 1;
                    None
                }
            },
            Err(PoolExhausted) => {
                self.stats.rx_no_buffer += 1;
                None
            }
        };
        // SAFETY: we own m; freed once.
        unsafe { sys::shim_pktmbuf_free(m) };
        out
    }

    /// Ask the device to fill IPv4 (and UDP) checksums of an IPv4 frame.
    fn tx_offload(m: *mut sys::rte_mbuf, b: &mut PktBuf) {
        if let Some((flags, l3_len)) = prepare_cksum_offload(b.data_mut()) {
            // SAFETY: m is the mbuf about to carry b; setting offload fields is allowed.
            unsafe { sys::shim_pktmbuf_tx_offload(m, flags, ETH_HDR as u16, l3_len) };
        }
    }
}

/// What a port with receive checksum offload does with a received frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RxVerdict {
    /// Deliver it.
    Accept,
    /// Drop it: a checksum is wrong.
    Drop,
}

/// What the device says about one checksum of a received frame (DPDK's `RX_*_CKSUM_*`
/// statuses, two bits each for IP and L4).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CsumStatus {
    /// The device verified it: right (`GOOD`), or "not correct in the packet data, but the
    /// integrity is verified" (`NONE`: a virtual device that skipped a checksum nothing
    /// could have spoiled, a UDP datagram sent without one).
    Verified,
    /// The device found it wrong.
    Bad,
    /// No information (`UNKNOWN`): the device did not look (a protocol it does not parse,
    /// a chained mbuf on net_tap). Only software can tell.
    Unknown,
}

impl CsumStatus {
    fn decode(flags: u64, mask: u64, good: u64, bad: u64) -> CsumStatus {
        match flags & mask {
            f if f == good || f == mask => CsumStatus::Verified,
            f if f == bad => CsumStatus::Bad,
            _ => CsumStatus::Unknown,
        }
    }
    fn ip(flags: u64) -> CsumStatus {
        Self::decode(
            flags,
            sys::RTE_MBUF_F_RX_IP_CKSUM_MASK as u64,
            sys::RTE_MBUF_F_RX_IP_CKSUM_GOOD as u64,
            sys::RTE_MBUF_F_RX_IP_CKSUM_BAD as u64,
        )
    }
    fn l4(flags: u64) -> CsumStatus {
        Self::decode(
            flags,
            sys::RTE_MBUF_F_RX_L4_CKSUM_MASK as u64,
            sys::RTE_MBUF_F_RX_L4_CKSUM_GOOD as u64,
            sys::RTE_MBUF_F_RX_L4_CKSUM_BAD as u64,
        )
    }
}

/// The verdict on a received `frame` from its mbuf's offload flags, on a port with receive
/// checksum offload (the IP layer above then checks nothing): a `BAD` status drops it; an
/// `UNKNOWN` one is checked here in software ([`software_checksums_ok`]); only what the
/// device verified is taken on its word.
fn rx_checksum_verdict(flags: u64, frame: &[u8]) -> RxVerdict {
    let (ip, l4) = (CsumStatus::ip(flags), CsumStatus::l4(flags));
    if ip == CsumStatus::Bad || l4 == CsumStatus::Bad {
        return RxVerdict::Drop;
    }
    let (check_ip, check_l4) = (ip == CsumStatus::Unknown, l4 == CsumStatus::Unknown);
    if (check_ip || check_l4) && !software_checksums_ok(frame, check_ip, check_l4) {
        return RxVerdict::Drop;
    }
    RxVerdict::Accept
}

/// Software check of an Ethernet/IPv4 frame's IPv4 header checksum (`check_ip`) and UDP
/// checksum (`check_l4`; 0 in the field is "none sent", RFC 768, left to the transport).
/// True for whatever it cannot judge (not IPv4, options, a fragment, inconsistent lengths):
/// the IP layer drops those by their own cause. Reads each header field once.
fn software_checksums_ok(f: &[u8], check_ip: bool, check_l4: bool) -> bool {
    use smoltcp::wire::{checksum, IpProtocol};
    let Some(hdr) = f.get(ETH_HDR..ETH_HDR + 20) else {
        return true;
    };
    let mut ip = [0u8; 20];
    ip.copy_from_slice(hdr);
    if f[12..14] != [0x08, 0x00] || ip[0] != 0x45 {
        return true;
    }
    if check_ip && checksum::data(&ip) != !0 {
        return false;
    }
    let total = u16::from_be_bytes([ip[2], ip[3]]) as usize;
    let fragment = u16::from_be_bytes([ip[6], ip[7]]) & 0x3fff != 0;
    if !check_l4 || ip[9] != 17 || fragment {
        return true;
    }
    let Some(seg) = f.get(ETH_HDR + 20..ETH_HDR + total.max(20)) else {
        return true;
    };
    let Some(udp) = seg.get(..8) else {
        return true;
    };
    let mut uh = [0u8; 8];
    uh.copy_from_slice(udp);
    let udp_len = u16::from_be_bytes([uh[4], uh[5]]) as usize;
    if udp_len < 8 || udp_len > seg.len() || uh[6..8] == [0, 0] {
        return true;
    }
    let src = std::net::Ipv4Addr::new(ip[12], ip[13], ip[14], ip[15]);
    let dst = std::net::Ipv4Addr::new(ip[16], ip[17], ip[18], ip[19]);
    let ph = checksum::pseudo_header_v4(&src, &dst, IpProtocol::Udp, udp_len as u32);
    checksum::combine(&[ph, checksum::data(&uh), checksum::data(&seg[8..udp_len])]) == !0
}

/// Prepare an Ethernet/IPv4 frame for the device to fill its checksums: the IPv4 header
/// checksum is zeroed and, for UDP, the UDP checksum field gets the pseudo-header sum (what
/// DPDK's `RTE_MBUF_F_TX_UDP_CKSUM` expects). Returns the mbuf offload flags and the IPv4
/// header length, or `None` for anything that is not IPv4 (left untouched).
fn prepare_cksum_offload(d: &mut [u8]) -> Option<(u64, u16)> {
    let ip = ETH_HDR;
    if d.len() < ip + 20 || d[12..14] != [0x08, 0x00] || d[ip] >> 4 != 4 {
        return None;
    }
    let ihl = ((d[ip] & 0x0f) as usize) * 4;
    if ihl < 20 || d.len() < ip + ihl {
        return None;
    }
    let mut flags = sys::RTE_MBUF_F_TX_IPV4 | sys::RTE_MBUF_F_TX_IP_CKSUM;
    d[ip + 10] = 0;
    d[ip + 11] = 0;
    if d[ip + 9] == 17 && d.len() >= ip + ihl + 8 {
        let total = u16::from_be_bytes([d[ip + 2], d[ip + 3]]) as u32;
        let l4len = total.saturating_sub(ihl as u32);
        let mut sum: u32 = 17 + l4len;
        for i in (12..20).step_by(2) {
            sum += u16::from_be_bytes([d[ip + i], d[ip + i + 1]]) as u32;
        }
        while sum > 0xffff {
            sum = (sum & 0xffff) + (sum >> 16);
        }
        let c = (sum as u16).to_be_bytes();
        d[ip + ihl + 6] = c[0];
        d[ip + ihl + 7] = c[1];
        flags |= sys::RTE_MBUF_F_TX_UDP_CKSUM;
    }
    Some((flags, ihl as u16))
}

impl Port for DpdkPort {
    fn info(&self) -> PortInfo {
        self.info.clone()
    }

    fn link(&mut self) -> Link {
        link_of(self.id)
    }

    fn rx_burst(&mut self, out: &mut Vec<PktBuf>, max: usize) -> usize {
        let max = max.min(MAX_BURST);
        if max == 0 {
            return 0;
        }
        // SAFETY: mbufs has room for MAX_BURST >= max pointers; this port owns the queue.
        let n =
            unsafe { sys::shim_rx_burst(self.id, self.queue, self.mbufs.as_mut_ptr(), max as u16) }
                as usize;
        let mut got = 0;
        for i in 0..n {
            let m = self.mbufs[i];
            if let Some(mut b) = self.take_mbuf(m) {
                b.meta.port = self.id;
                b.meta.queue = self.queue;
                self.stats.rx_packets += 1;
                self.stats.rx_bytes += b.len() as u64;
                out.push(b);
                got += 1;
            }
        }
        got
    }

    fn tx_burst(&mut self, pkts: &mut Vec<PktBuf>) -> usize {
        let n = pkts.len().min(MAX_BURST);
        let mut ready = 0;
        self.scratch.clear();
        for (i, b) in pkts.iter_mut().enumerate().take(n) {
            // A shared buffer (zero-copy send: the transport keeps its slot to retransmit
            // from) is copied: the driver frees a given mbuf into the pool as its sole owner.
            let own = self.owns(b) && !b.is_shared();
            let m = if own {
                // SAFETY: b's slot belongs to this mempool's pool; the mbuf of that slot is
                // only touched by whoever owns the slot, and we hold b.
                unsafe {
                    sys::shim_extpool_give(
                        self.mp,
                        b.slot(),
                        b.data_offset() as u32,
                        b.len() as u32,
                    )
                }
            } else {
                let Ok(mut c) = self.pool.alloc() else {
                    break;
                };
                if c.extend_from_slice(b.data()).is_err() {
                    break;
                }
                // SAFETY: as above, for the copy's slot.
                let m = unsafe {
                    sys::shim_extpool_give(
                        self.mp,
                        c.slot(),
                        c.data_offset() as u32,
                        c.len() as u32,
                    )
                };
                self.scratch.push(c);
                m
            };
            if m.is_null() {
                break;
            }
            if self.info.offloads.tx_checksum {
                let b = if own {
                    b
                } else {
                    self.scratch.last_mut().expect("pushed")
                };
                Self::tx_offload(m, b);
            }
            self.copied[i] = !own;
            self.mbufs[i] = m;
            ready += 1;
        }
        if ready == 0 {
            return 0;
        }
        // SAFETY: mbufs[..ready] are valid mbufs of our mempool; the driver takes those it
        // sends.
        let sent = unsafe {
            sys::shim_tx_burst(self.id, self.queue, self.mbufs.as_mut_ptr(), ready as u16)
        } as usize;
        let mut copies = self.scratch.drain(..);
        for (i, b) in pkts.drain(..sent).enumerate() {
            self.stats.tx_bytes += b.len() as u64;
            if self.copied[i] {
                // The copy went; the original returns to its pool.
                if let Some(c) = copies.next() {
                    let _ = c.into_raw();
                    self.copies += 1;
                }
                drop(b);
            } else {
                // The slot now belongs to the driver, which frees the mbuf into our pool.
                let _ = b.into_raw();
            }
        }
        drop(copies); // unsent copies return to the pool
        self.stats.tx_packets += sent as u64;
        if sent < ready {
            self.stats.tx_ring_full += (ready - sent) as u64;
        }
        sent
    }

    fn alloc_tx(&mut self) -> Result<PktBuf, PoolExhausted> {
        self.pool.alloc()
    }

    fn stats(&self) -> PortStats {
        self.stats
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One's complement sum of 16-bit words, folded.
    fn sum16(b: &[u8]) -> u32 {
        let mut s: u32 = b
            .chunks(2)
            .map(|c| u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]) as u32)
            .sum();
        while s > 0xffff {
            s = (s & 0xffff) + (s >> 16);
        }
        s
    }

    #[test]
    fn checksum_offload_preparation_matches_software_checksums() {
        use smoltcp::phy::ChecksumCapabilities;
        use smoltcp::wire::*;
        let payload = b"hello, offload!";
        let udp = UdpRepr {
            src_port: 4791,
            dst_port: 9000,
        };
        let src = Ipv4Address::new(10, 77, 1, 1);
        let dst = Ipv4Address::new(10, 77, 1, 2);
        let ipr = Ipv4Repr {
            src_addr: src,
            dst_addr: dst,
            next_header: IpProtocol::Udp,
            payload_len: udp.header_len() + payload.len(),
            hop_limit: 64,
        };
        let mut f = vec![0u8; 14 + ipr.buffer_len() + udp.header_len() + payload.len()];
        f[12..14].copy_from_slice(&[0x08, 0x00]);
        let caps = ChecksumCapabilities::default();
        {
            let mut ip = Ipv4Packet::new_unchecked(&mut f[14..]);
            ipr.emit(&mut ip, &caps);
            let mut u = UdpPacket::new_unchecked(ip.payload_mut());
            udp.emit(
                &mut u,
                &src.into(),
                &dst.into(),
                payload.len(),
                |b| b.copy_from_slice(payload),
                &caps,
            );
        }
        let want_ip = [f[24], f[25]];
        let want_udp = [f[40], f[41]];
        let (flags, l3) = prepare_cksum_offload(&mut f).expect("ipv4");
        assert_eq!(l3, 20);
        assert_ne!(flags & sys::RTE_MBUF_F_TX_UDP_CKSUM, 0);
        assert_eq!([f[24], f[25]], [0, 0], "IPv4 checksum left to the device");
        // What the device does: sum the IP header / the UDP segment (whose checksum field
        // holds the pseudo-header sum) and write the complement.
        assert_eq!((!sum16(&f[14..34]) as u16).to_be_bytes(), want_ip);
        let seg = f[34..].to_vec();
        assert_eq!((!sum16(&seg) as u16).to_be_bytes(), want_udp);
        // Not IPv4: untouched.
        let mut arp = vec![0u8; 60];
        arp[12..14].copy_from_slice(&[0x08, 0x06]);
        assert!(prepare_cksum_offload(&mut arp).is_none());
        assert!(prepare_cksum_offload(&mut [0u8; 10]).is_none());
    }

    /// An Ethernet/IPv4/UDP frame with right checksums, 10.77.1.1:4791 -> 10.77.1.2:9000.
    fn udp_frame(payload: &[u8]) -> Vec<u8> {
        use smoltcp::phy::ChecksumCapabilities;
        use smoltcp::wire::*;
        let udp = UdpRepr {
            src_port: 4791,
            dst_port: 9000,
        };
        let (src, dst) = (
            Ipv4Address::new(10, 77, 1, 1),
            Ipv4Address::new(10, 77, 1, 2),
        );
        let ipr = Ipv4Repr {
            src_addr: src,
            dst_addr: dst,
            next_header: IpProtocol::Udp,
            payload_len: udp.header_len() + payload.len(),
            hop_limit: 64,
        };
        let mut f = vec![0u8; 14 + ipr.buffer_len() + udp.header_len() + payload.len()];
        f[12..14].copy_from_slice(&[0x08, 0x00]);
        let caps = ChecksumCapabilities::default();
        let mut ip = Ipv4Packet::new_unchecked(&mut f[14..]);
        ipr.emit(&mut ip, &caps);
        let mut u = UdpPacket::new_unchecked(ip.payload_mut());
        udp.emit(
            &mut u,
            &src.into(),
            &dst.into(),
            payload.len(),
            |b| b.copy_from_slice(payload),
            &caps,
        );
        f
    }

    /// Issue 18: with receive checksum offload on, only a GOOD status (or NONE: "not correct
    /// in the packet data, but the integrity is verified", DPDK's definition) lets a frame
    /// skip the software check; BAD drops it; UNKNOWN (the device did not look: a chained
    /// mbuf on net_tap, a protocol it does not parse) is verified here, in software.
    #[test]
    fn rx_checksum_flags_only_trust_what_the_device_verified() {
        use RxVerdict::{Accept, Drop};
        let good = udp_frame(b"checksummed payload");
        let mut bad_udp = good.clone();
        *bad_udp.last_mut().unwrap() ^= 0x5a;
        let mut bad_ip = good.clone();
        bad_ip[24] ^= 0x01;
        let mut no_udp_sum = bad_udp.clone();
        no_udp_sum[40..42].fill(0);
        let mut arp = vec![0u8; 60];
        arp[12..14].copy_from_slice(&[0x08, 0x06]);
        let (ip_good, ip_bad, ip_none) = (
            sys::RTE_MBUF_F_RX_IP_CKSUM_GOOD as u64,
            sys::RTE_MBUF_F_RX_IP_CKSUM_BAD as u64,
            sys::RTE_MBUF_F_RX_IP_CKSUM_NONE as u64,
        );
        let (l4_good, l4_bad, l4_none) = (
            sys::RTE_MBUF_F_RX_L4_CKSUM_GOOD as u64,
            sys::RTE_MBUF_F_RX_L4_CKSUM_BAD as u64,
            sys::RTE_MBUF_F_RX_L4_CKSUM_NONE as u64,
        );
        let unknown = 0u64;
        let cases: &[(&str, u64, &[u8], RxVerdict)] = &[
            ("both GOOD", ip_good | l4_good, &good, Accept),
            (
                "both GOOD: the device is trusted",
                ip_good | l4_good,
                &bad_udp,
                Accept,
            ),
            ("L4 BAD", ip_good | l4_bad, &good, Drop),
            ("IP BAD", ip_bad | l4_good, &good, Drop),
            (
                "both NONE (verified, field not filled)",
                ip_none | l4_none,
                &bad_udp,
                Accept,
            ),
            ("L4 UNKNOWN, good frame", ip_good | unknown, &good, Accept),
            (
                "L4 UNKNOWN, bad UDP checksum",
                ip_good | unknown,
                &bad_udp,
                Drop,
            ),
            ("all UNKNOWN, bad UDP checksum", unknown, &bad_udp, Drop),
            ("all UNKNOWN, bad IPv4 checksum", unknown, &bad_ip, Drop),
            (
                "IP UNKNOWN, L4 GOOD, bad IPv4 checksum",
                l4_good,
                &bad_ip,
                Drop,
            ),
            (
                "L4 UNKNOWN, UDP checksum 0 (none sent)",
                ip_good,
                &no_udp_sum,
                Accept,
            ),
            ("UNKNOWN, not IPv4", unknown, &arp, Accept),
            ("UNKNOWN, truncated", unknown, &good[..20], Accept),
        ];
        let wrong: Vec<String> = cases
            .iter()
            .filter_map(|&(what, flags, frame, want)| {
                let got = rx_checksum_verdict(flags, frame);
                (got != want).then(|| format!("{what}: {got:?}, want {want:?}"))
            })
            .collect();
        assert!(wrong.is_empty(), "wrong verdicts:\n{}", wrong.join("\n"));
    }

    #[test]
    fn default_config() {
        let c = DeviceConfig::default();
        assert_eq!(c.queues, 1);
        assert!(c.checksum_offload);
    }
}
