//! The bypass transport over DPDK in `bypass bench`: `bypass-dpdk`, for running one end of the
//! benchmark against a peer at an address, over any DPDK ethdev (a NIC bound to vfio-pci, or
//! a virtual device such as `net_af_packet` on a kernel interface).
//!
//! Contract:
//! - Each process (the `bypass bench` client and the `bypass bench-peer` server) starts DPDK's
//!   EAL once, from `--dpdk "EAL ARGS"`, opens one device (`--dpdk-dev NAME`, default the
//!   first `--vdev`/`-a` device of the arguments) with one queue pair, and keeps that queue for
//!   the rest of the process ([`DpdkOpts`] are the options, `open` does it once).
//! - A connection builds its bypass [`Stack`](bypass::socket::Stack) (`Backend::Port`) on the thread that first uses
//!   it, like the memif transport (a stack is `!Send`), borrowing the process's queue; when
//!   the connection is dropped its stack is dropped and the queue is given back for the next
//!   connection. So the process serves **one connection at a time**: cells with several
//!   connections (stream `--conns N`) are reported n/a, with the reason
//!   ([`Transport::max_conns`](super::transport::Transport::max_conns)).
//! - Addresses: this end's stack has the IP `--dpdk-ip` and the port's MAC; it listens and
//!   sends on UDP port [`DEFAULT_UDP_PORT`](bypass::socket::DEFAULT_UDP_PORT). The peer's listener address is
//!   `dpdk:IP:PORT` (its `--dpdk-ip`), sent to the client over the control channel, so the
//!   client needs no address of the peer's data path. The peer's MAC is resolved by ARP unless
//!   `--dpdk-arp IP=MAC` gives it.
//! - Over `net_af_packet` the kernel sees the same frames: give the stack an IP the kernel
//!   does not own on that interface (the kernel then ignores the stack's traffic and the stack
//!   ignores the kernel's).
//! - Setup errors say what to do: a build without the `dpdk` feature, missing options, an
//!   EAL that does not start, a device that is not there, a peer that does not answer.
//!
//! Two hosts (the same shape works between two network namespaces over a veth pair, as
//! cli/tests/bench_dpdk_peer.rs does):
//!
//! ```sh
//! there$ bypass bench-peer --listen 192.168.1.1:7300 --transports bypass-dpdk \
//!          --dpdk "-a 0000:01:00.0 --iova-mode=va" --dpdk-ip 10.9.0.1
//! here$  bypass bench --peer 192.168.1.1:7300 --transports bypass-dpdk \
//!          --dpdk "-a 0000:01:00.0 --iova-mode=va" --dpdk-ip 10.9.0.2
//! ```

use std::net::{Ipv4Addr, SocketAddrV4};

/// DPDK options of one process (`--dpdk`, `--dpdk-ip`, `--dpdk-dev`, `--dpdk-arp`), shared by
/// `bypass bench` and `bypass bench-peer`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DpdkOpts {
    /// EAL arguments, whitespace-separated, e.g. `--vdev=net_af_packet0,iface=eth1 --no-huge`.
    pub eal: Option<String>,
    /// This end's IPv4 address on the DPDK link.
    pub ip: Option<Ipv4Addr>,
    /// The ethdev to use (default: the first `--vdev` or `-a` device of the EAL arguments).
    pub dev: Option<String>,
    /// Static ARP entries (no resolution for these addresses).
    pub arp: Vec<(Ipv4Addr, [u8; 6])>,
}

impl DpdkOpts {
    /// Takes `flag` if it is one of the DPDK options, reading its value with `val`;
    /// `Ok(false)` if it is not a DPDK option.
    pub fn parse_flag<'a>(
        &mut self,
        flag: &str,
        val: impl FnOnce() -> Result<&'a str, String>,
    ) -> Result<bool, String> {
        let bad = |v: &str| format!("bad value {v:?} for {flag}");
        match flag {
            "--dpdk" => {
                let v = val()?;
                EalArgs::parse(v)?;
                self.eal = Some(v.to_owned());
            }
            "--dpdk-ip" => {
                let v = val()?;
                self.ip = Some(v.parse().map_err(|_| bad(v))?);
            }
            "--dpdk-dev" => self.dev = Some(val()?.to_owned()),
            "--dpdk-arp" => {
                let v = val()?;
                let (ip, mac) = v.split_once('=').ok_or_else(|| bad(v))?;
                let ip = ip.parse().map_err(|_| bad(v))?;
                let mac = parse_mac(mac).ok_or_else(|| bad(v))?;
                self.arp.push((ip, mac));
            }
            _ => return Ok(false),
        }
        Ok(true)
    }

    /// Whether any DPDK option was given.
    pub fn is_set(&self) -> bool {
        self.eal.is_some() || self.ip.is_some() || self.dev.is_some() || !self.arp.is_empty()
    }
}

/// Parses `aa:bb:cc:dd:ee:ff`.
fn parse_mac(s: &str) -> Option<[u8; 6]> {
    let mut mac = [0u8; 6];
    let mut parts = s.split(':');
    for b in &mut mac {
        *b = u8::from_str_radix(parts.next()?, 16).ok()?;
    }
    parts.next().is_none().then_some(mac)
}

#[cfg_attr(not(feature = "dpdk"), allow(dead_code))]
/// The EAL arguments the transport understands itself; everything else is passed to DPDK as
/// it is.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct EalArgs {
    vdevs: Vec<String>,
    pci: Vec<String>,
    cores: Option<Vec<usize>>,
    no_huge: bool,
    mem_mb: Option<u32>,
    file_prefix: Option<String>,
    log_level: Option<String>,
    extra: Vec<String>,
}

#[cfg_attr(not(feature = "dpdk"), allow(dead_code))]
impl EalArgs {
    fn parse(s: &str) -> Result<EalArgs, String> {
        let mut a = EalArgs::default();
        let mut it = s.split_whitespace();
        while let Some(w) = it.next() {
            // `--opt=value`, `--opt value`, `-o value` and `-ovalue` forms.
            let (name, inline) = match w.split_once('=') {
                Some((n, v)) if n.starts_with("--") => (n, Some(v)),
                _ => match w {
                    _ if w.starts_with("--") => (w, None),
                    _ if w.len() > 2 && w.starts_with('-') => (&w[..2], Some(&w[2..])),
                    _ => (w, None),
                },
            };
            let mut value = |what: &str| {
                inline
                    .or_else(|| it.next())
                    .map(str::to_owned)
                    .ok_or_else(|| format!("--dpdk: {what} takes a value"))
            };
            match name {
                "--vdev" => a.vdevs.push(value(name)?),
                "-a" | "--allow" => a.pci.push(value(name)?),
                "-l" => {
                    let v = value(name)?;
                    let cores = v
                        .split(',')
                        .map(|c| c.parse().ok())
                        .collect::<Option<Vec<usize>>>()
                        .ok_or_else(|| format!("--dpdk: -l takes a list of cores, got {v:?}"))?;
                    a.cores = Some(cores);
                }
                "-m" => {
                    let v = value(name)?;
                    a.mem_mb = Some(
                        v.parse()
                            .map_err(|_| format!("--dpdk: -m takes megabytes, got {v:?}"))?,
                    );
                }
                "--no-huge" => a.no_huge = true,
                "--file-prefix" => a.file_prefix = Some(value(name)?),
                "--log-level" => a.log_level = Some(value(name)?),
                // Always on (nothing is left in /var/run); PCI is scanned only with -a.
                "--in-memory" | "--no-shconf" | "--no-pci" => {}
                _ if w.starts_with('-') => a.extra.push(w.to_owned()),
                _ => {
                    return Err(format!(
                        "--dpdk: unexpected {w:?} (EAL arguments start with -)"
                    ))
                }
            }
        }
        Ok(a)
    }

    /// The device to open: `--dpdk-dev`, else the first vdev's or PCI device's name.
    fn device(&self, dev: Option<&str>) -> Option<String> {
        let first = |v: &String| v.split(',').next().unwrap_or(v).to_owned();
        dev.map(str::to_owned)
            .or_else(|| self.vdevs.first().map(first))
            .or_else(|| self.pci.first().map(first))
    }
}

/// Parses a listener address `dpdk:IP:PORT`.
#[cfg_attr(not(feature = "dpdk"), allow(dead_code))]
fn parse_addr(addr: &str) -> Option<SocketAddrV4> {
    addr.strip_prefix("dpdk:")?.parse().ok()
}

#[cfg(feature = "dpdk")]
pub use with_dpdk::BypassDpdk;

#[cfg(feature = "dpdk")]
mod with_dpdk {
    use std::net::{Ipv4Addr, SocketAddrV4};
    use std::sync::{Arc, Mutex, OnceLock};
    use std::time::{Duration, Instant};

    use bypass::mem::{HugePages, PktBuf, Pool, PoolConfig, PoolExhausted};
    use bypass::pmd::dpdk::{
        Device, DeviceConfig, DeviceError, DpdkPool, DpdkPort, Eal, EalConfig, EalMemory,
    };
    use bypass::pmd::{Link, Port, PortInfo, PortStats};
    use bypass::socket::{Backend, Error, Socket, Stack, DEFAULT_UDP_PORT};

    use super::super::bypass::{
        controller_from_env, setup_timeout, to_conn_error, BypassConn, Setup, MAX_MSG,
    };
    use super::super::transport::{ConnError, ConnOpts, Listener, MsgConn, Transport, Wait};
    use super::{parse_addr, DpdkOpts, EalArgs};

    /// Packet buffers of the process's pool (2 KiB frames: the port's MTU, 1500 on veth and
    /// most NICs).
    const POOL_SLOTS: u32 = 16384;
    const SLOT_SIZE: u32 = 2048 + 128;
    /// How long a connection waits for the queue to come back from the previous connection.
    const LEND_TIMEOUT: Duration = Duration::from_secs(2);

    /// The process's DPDK queue and the addresses its stacks use.
    pub struct Shared {
        /// The queue, while no connection has it.
        port: Mutex<Option<DpdkPort>>,
        ip: Ipv4Addr,
        arp: Vec<(Ipv4Addr, [u8; 6])>,
        /// `NAME (driver)`, for messages.
        what: String,
    }

    static SHARED: OnceLock<Result<Arc<Shared>, String>> = OnceLock::new();

    /// Starts the EAL and opens the device, once per process (later calls return the first
    /// call's result, whatever their options).
    pub fn open(opts: &DpdkOpts) -> Result<Arc<Shared>, String> {
        SHARED.get_or_init(|| start(opts)).clone()
    }

    fn start(opts: &DpdkOpts) -> Result<Arc<Shared>, String> {
        let example = "e.g. --dpdk \"--vdev=net_af_packet0,iface=eth1 --no-huge\" --dpdk-ip \
                       10.0.0.2";
        let raw = opts
            .eal
            .as_deref()
            .ok_or_else(|| format!("bypass-dpdk needs --dpdk \"EAL ARGS\" ({example})"))?;
        let ip = opts.ip.ok_or_else(|| {
            format!("bypass-dpdk needs --dpdk-ip, this end's address on the DPDK link ({example})")
        })?;
        let args = EalArgs::parse(raw)?;
        let name = args.device(opts.dev.as_deref()).ok_or_else(|| {
            "bypass-dpdk: no DPDK device in --dpdk: add a virtual device \
             (--vdev=net_af_packet0,iface=IFACE) or a NIC bound to vfio-pci (-a PCI_ADDRESS)"
                .to_owned()
        })?;
        let mut cfg = EalConfig::new();
        if let Some(c) = &args.cores {
            cfg.cores.clone_from(c);
        }
        cfg.memory = if args.no_huge {
            EalMemory::NoHuge {
                mb: args.mem_mb.unwrap_or(256),
            }
        } else {
            EalMemory::Hugepages { mb: args.mem_mb }
        };
        cfg.vdevs = args.vdevs.clone();
        cfg.pci_allow = args.pci.clone();
        cfg.no_pci = args.pci.is_empty();
        if let Some(p) = &args.file_prefix {
            cfg.file_prefix = Some(p.clone());
        }
        if let Some(l) = &args.log_level {
            cfg.log_level = Some(l.clone());
        }
        cfg.extra = args.extra.clone();
        let hugepages = if args.no_huge {
            HugePages::Never
        } else {
            HugePages::Prefer
        };
        // The EAL pins the thread that starts it to its main lcore; start it on a thread of
        // its own so the caller's affinity (and its children's) stays as the bench set it.
        let (port, what) = std::thread::spawn(move || {
            let eal = Eal::init(&cfg).map_err(|e| {
                format!(
                    "starting DPDK (EAL arguments {:?}) failed: {e}; check --dpdk: the device \
                     must exist (an interface for net_af_packet, a NIC bound to vfio-pci for \
                     -a), and add --no-huge if no hugepages are free",
                    cfg.args().unwrap_or_default().join(" ")
                )
            })?;
            let mut pc = PoolConfig::new("bench-dpdk", POOL_SLOTS, SLOT_SIZE);
            pc.hugepages = hugepages;
            let pool = Pool::new(&pc).map_err(|e| format!("bypass-dpdk packet pool: {e}"))?;
            let dpool = DpdkPool::new(&eal, &pool)
                .map_err(|e| format!("bypass-dpdk: lending the pool to DPDK: {e}"))?;
            let (dev, mut ports) = Device::open(&eal, &name, &dpool, &DeviceConfig::default())
                .map_err(|e| match e {
                    DeviceError::NotFound(_) => format!(
                        "bypass-dpdk: no DPDK device named {name:?}: its driver did not create \
                         it (see DPDK's messages above: e.g. no such interface for \
                         net_af_packet, a NIC not bound to vfio-pci), or it is not in --dpdk \
                         (add --vdev=... or -a PCI_ADDRESS, or name another with --dpdk-dev)"
                    ),
                    e => format!("bypass-dpdk: opening {name}: {e}"),
                })?;
            let what = format!("{} ({})", dev.name(), dev.driver());
            let port = ports
                .pop()
                .ok_or_else(|| format!("bypass-dpdk: {what} has no queue"))?;
            // The port keeps the device (and the pool, and the EAL) open.
            Ok::<_, String>((port, what))
        })
        .join()
        .map_err(|_| "bypass-dpdk: starting DPDK panicked".to_owned())??;
        Ok(Arc::new(Shared {
            port: Mutex::new(Some(port)),
            ip,
            arp: opts.arp.clone(),
            what,
        }))
    }

    /// A DPDK queue lent to one connection's stack; it goes back to [`Shared`] when the stack
    /// drops it. Every call is forwarded; nothing is locked on the data path.
    struct LentPort {
        port: Option<DpdkPort>,
        home: Arc<Shared>,
    }

    impl LentPort {
        fn lend(home: &Arc<Shared>) -> Result<LentPort, ConnError> {
            let deadline = Instant::now() + LEND_TIMEOUT;
            loop {
                let taken = home.port.lock().unwrap_or_else(|e| e.into_inner()).take();
                if let Some(port) = taken {
                    return Ok(LentPort {
                        port: Some(port),
                        home: home.clone(),
                    });
                }
                if Instant::now() >= deadline {
                    return Err(ConnError::Protocol(
                        "the DPDK queue is still used by another connection (bypass-dpdk \
                         serves one connection at a time per process)",
                    ));
                }
                std::thread::sleep(Duration::from_millis(1));
            }
        }

        fn p(&mut self) -> &mut DpdkPort {
            self.port
                .as_mut()
                .expect("a lent port is present until dropped")
        }
    }

    impl Port for LentPort {
        fn info(&self) -> PortInfo {
            self.port
                .as_ref()
                .expect("a lent port is present until dropped")
                .info()
        }
        fn link(&mut self) -> Link {
            self.p().link()
        }
        fn rx_burst(&mut self, out: &mut Vec<PktBuf>, max: usize) -> usize {
            self.p().rx_burst(out, max)
        }
        fn tx_burst(&mut self, pkts: &mut Vec<PktBuf>) -> usize {
            self.p().tx_burst(pkts)
        }
        fn alloc_tx(&mut self) -> Result<PktBuf, PoolExhausted> {
            self.p().alloc_tx()
        }
        fn stats(&self) -> PortStats {
            self.port
                .as_ref()
                .expect("a lent port is present until dropped")
                .stats()
        }
    }

    impl Drop for LentPort {
        fn drop(&mut self) {
            if let Some(p) = self.port.take() {
                *self.home.port.lock().unwrap_or_else(|e| e.into_inner()) = Some(p);
            }
        }
    }

    /// `bypass bench`'s bypass-over-DPDK transport (see the module docs).
    pub struct BypassDpdk {
        shared: Arc<Shared>,
    }

    impl BypassDpdk {
        /// The transport over the process's DPDK queue (`open` it first).
        pub fn new(opts: &DpdkOpts) -> Result<BypassDpdk, String> {
            Ok(BypassDpdk {
                shared: open(opts)?,
            })
        }
    }

    impl Transport for BypassDpdk {
        fn name(&self) -> &'static str {
            "bypass-dpdk"
        }

        fn variants(&self) -> &'static [Wait] {
            &[Wait::Busy]
        }

        fn max_msg(&self) -> usize {
            MAX_MSG
        }

        fn max_conns(&self) -> usize {
            1
        }

        fn listen(&self, _host: &str, opts: &ConnOpts) -> Result<Box<dyn Listener>, ConnError> {
            Ok(Box::new(DpdkListener {
                shared: self.shared.clone(),
                opts: *opts,
            }))
        }

        fn connect(&self, addr: &str, opts: &ConnOpts) -> Result<Box<dyn MsgConn>, ConnError> {
            let peer = parse_addr(addr).ok_or_else(|| ConnError::Address(addr.to_owned()))?;
            Ok(Box::new(BypassConn::with_setup(
                Box::new(DpdkSetup {
                    shared: self.shared.clone(),
                    peer: Some(peer),
                }),
                opts,
            )))
        }
    }

    struct DpdkListener {
        shared: Arc<Shared>,
        opts: ConnOpts,
    }

    impl Listener for DpdkListener {
        fn addr(&self) -> String {
            format!("dpdk:{}:{}", self.shared.ip, DEFAULT_UDP_PORT)
        }

        fn accept(&mut self, _timeout: Duration) -> Result<Box<dyn MsgConn>, ConnError> {
            // The stack is built by the thread that serves the connection.
            Ok(Box::new(BypassConn::with_setup(
                Box::new(DpdkSetup {
                    shared: self.shared.clone(),
                    peer: None,
                }),
                &self.opts,
            )))
        }
    }

    /// Builds a stack over the lent queue: accepts (`peer` None) or connects to `peer`.
    struct DpdkSetup {
        shared: Arc<Shared>,
        peer: Option<SocketAddrV4>,
    }

    impl Setup for DpdkSetup {
        fn build(&mut self, opts: &ConnOpts) -> Result<(Stack, Socket), ConnError> {
            let setup = setup_timeout(opts);
            let port = LentPort::lend(&self.shared)?;
            let mut b = Stack::builder(Backend::Port(Box::new(port)), self.shared.ip)
                .idle_poll(bypass::socket::IdlePoll::Spin)
                .max_message(MAX_MSG as u64)
                .link_timeout(setup);
            for &(ip, mac) in &self.shared.arp {
                b = b.static_arp(ip, mac);
            }
            if let Some(cc) = controller_from_env()? {
                b = b.controller(cc);
            }
            let stack = b.build().map_err(|e| {
                ConnError::Io(std::io::Error::other(format!(
                    "bypass stack on {}: {e}",
                    self.shared.what
                )))
            })?;
            let sock = match self.peer {
                None => stack.listen().accept(setup).map_err(|e| match e {
                    Error::TimedOut { .. } => ConnError::Io(std::io::Error::other(format!(
                        "no client connected to {}:{} on {} within {setup:?}",
                        self.shared.ip, DEFAULT_UDP_PORT, self.shared.what
                    ))),
                    e => to_conn_error(e),
                }),
                Some(peer) => stack.connect(peer, setup).map_err(|e| match e {
                    Error::TimedOut { .. } | Error::PeerUnreachable { .. } => {
                        ConnError::Io(std::io::Error::other(format!(
                        "the peer's stack at {peer} did not answer (tried for up to {setup:?}): \
                         check that \
                         both ends' --dpdk-ip are on one link and subnet, that the peer's MAC \
                         resolves (or give --dpdk-arp IP=MAC), and that nothing else owns \
                         {peer}"
                    )))
                    }
                    e => to_conn_error(e),
                }),
            }?;
            Ok((stack, sock))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_eal_args() {
        let a = EalArgs::parse(
            "--vdev=net_af_packet0,iface=veth0 --no-huge -m 128 -l 1 --log-level=debug \
             --iova-mode=va -a 0000:01:00.0 --vdev net_ring0",
        )
        .unwrap();
        assert_eq!(a.vdevs, ["net_af_packet0,iface=veth0", "net_ring0"]);
        assert_eq!(a.pci, ["0000:01:00.0"]);
        assert!(a.no_huge);
        assert_eq!(a.mem_mb, Some(128));
        assert_eq!(a.cores, Some(vec![1]));
        assert_eq!(a.log_level.as_deref(), Some("debug"));
        assert_eq!(a.extra, ["--iova-mode=va"]);
        assert_eq!(a.device(None).as_deref(), Some("net_af_packet0"));
        assert_eq!(a.device(Some("x")).as_deref(), Some("x"));
        let b = EalArgs::parse("-a0000:02:00.1,foo=1 -m256").unwrap();
        assert_eq!(b.device(None).as_deref(), Some("0000:02:00.1"));
        assert_eq!(b.mem_mb, Some(256));
        assert_eq!(EalArgs::parse("--no-huge").unwrap().device(None), None);
        assert!(EalArgs::parse("-m lots").is_err());
        assert!(EalArgs::parse("--vdev").is_err());
        assert!(EalArgs::parse("veth0").is_err());
    }

    #[test]
    fn parses_flags() {
        let mut o = DpdkOpts::default();
        assert!(!o.is_set());
        assert!(o.parse_flag("--dpdk-ip", || Ok("10.0.0.2")).unwrap());
        assert!(o
            .parse_flag("--dpdk-arp", || Ok("10.0.0.1=02:00:00:00:00:0a"))
            .unwrap());
        assert!(o.parse_flag("--dpdk", || Ok("--vdev=net_ring0")).unwrap());
        assert!(!o.parse_flag("--json", || Ok("x")).unwrap());
        assert!(o.is_set());
        assert_eq!(o.ip, Some(Ipv4Addr::new(10, 0, 0, 2)));
        assert_eq!(o.arp, [(Ipv4Addr::new(10, 0, 0, 1), [2, 0, 0, 0, 0, 0x0a])]);
        assert!(o.parse_flag("--dpdk-ip", || Ok("10.0.0")).is_err());
        assert!(o.parse_flag("--dpdk-arp", || Ok("10.0.0.1")).is_err());
        assert!(o.parse_flag("--dpdk-arp", || Ok("10.0.0.1=02:00")).is_err());
        assert!(o.parse_flag("--dpdk", || Ok("eth0")).is_err());
        assert!(o
            .parse_flag("--dpdk", || Err("--dpdk takes a value".into()))
            .is_err());
        assert_eq!(
            parse_addr("dpdk:10.0.0.1:7200"),
            Some("10.0.0.1:7200".parse().unwrap())
        );
        assert_eq!(parse_addr("memif:/tmp/x"), None);
    }
}
