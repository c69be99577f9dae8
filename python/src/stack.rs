//! `bypass.Stack` and `bypass.Listener`.

use std::net::{Ipv4Addr, SocketAddrV4};
use std::path::PathBuf;
use std::time::Duration;

use bypass::pmd::memif::Role;
use bypass::socket::{Backend, Limits, Stack as RsStack};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::PyDict;

use crate::errors::{closed, timeout, to_py};
use crate::limits::{arp_config, seconds};
use crate::socket::Socket;
use crate::{deadline, duration, wait, without_gil};

/// The addresses the Rust examples use (`examples/echo_server.rs`): a server and a client on
/// one memif link, each with a static ARP entry for the other.
const SERVER_IP: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 1);
const CLIENT_IP: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 2);
const SERVER_MAC: [u8; 6] = [0x02, 0x77, 0, 0, 0, 1];
const CLIENT_MAC: [u8; 6] = [0x02, 0x77, 0, 0, 0, 2];

fn parse_ip(what: &str, s: &str) -> PyResult<Ipv4Addr> {
    s.parse()
        .map_err(|_| PyValueError::new_err(format!("{what}: not an IPv4 address: {s:?}")))
}

fn parse_mac(what: &str, s: &str) -> PyResult<[u8; 6]> {
    let bad = || PyValueError::new_err(format!("{what}: not an Ethernet address: {s:?}"));
    let mut mac = [0u8; 6];
    let mut parts = s.split(':');
    for b in &mut mac {
        let p = parts.next().ok_or_else(bad)?;
        *b = u8::from_str_radix(p, 16).map_err(|_| bad())?;
    }
    if parts.next().is_some() {
        return Err(bad());
    }
    Ok(mac)
}

/// A bypass stack over memif: one poll loop, driven by the thread that made it.
///
/// `Stack(socket_path, role="client")`: `role` is `"server"` (creates the memif control
/// socket and waits for the peer) or `"client"` (connects to it). With the default addresses
/// a server and a client find each other as the Rust examples do (10.77.0.1 and 10.77.0.2,
/// static ARP); set `ip`/`mac`/`peer_ip`/`peer_mac` for anything else.
///
/// The limits against hostile peers (`rx_budget` .. `memif_secret`, module `limits`) are the
/// Rust `StackBuilder`'s settings of the same name, durations in seconds and `arp` a dict of
/// `ArpConfig`'s fields; one that makes no sense raises `bypass.Error` naming it.
///
/// Threads: the stack, its listeners and sockets belong to the thread that made the stack
/// (it is the poll loop); using them from another thread raises `pyo3_runtime.PanicException`
/// (PyO3's check of an `unsendable` class, before anything runs). Give each
/// thread that needs the network its own stack (its own memif socket).
#[pyclass(module = "bypass", unsendable)]
pub struct Stack {
    stack: Option<RsStack>,
    /// Messages are delivered in send order (`ordered=True`).
    ordered: bool,
}

impl Stack {
    fn get(&self) -> PyResult<&RsStack> {
        self.stack.as_ref().ok_or_else(|| closed("the stack"))
    }
}

#[pymethods]
impl Stack {
    #[new]
    #[pyo3(signature = (
        socket_path,
        role = "client",
        *,
        ip = None,
        mac = None,
        peer_ip = None,
        peer_mac = None,
        udp_port = bypass::socket::DEFAULT_UDP_PORT,
        interface_id = 0,
        mtu = None,
        ring_log2 = None,
        pool_buffers = None,
        max_message = None,
        ordered = false,
        idle_timeout = None,
        max_probes = None,
        accept = None,
        link_timeout = 10.0,
        omit_checksums = false,
        pin_core = None,
        spin = false,
        rx_budget = None,
        max_connections_per_source = None,
        max_rx_slots = None,
        rx_pool_reserve = None,
        stateless_queue = None,
        arp = None,
        memif_copy_rx = None,
        memif_require_sealed_regions = None,
        memif_max_peer_region_bytes = None,
        memif_max_pending_handshakes = None,
        memif_allowed_uid = None,
        memif_handshake_timeout = None,
        memif_wedge_timeout = None,
        memif_secret = None,
    ))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        py: Python<'_>,
        socket_path: PathBuf,
        role: &str,
        ip: Option<&str>,
        mac: Option<&str>,
        peer_ip: Option<&str>,
        peer_mac: Option<&str>,
        udp_port: u16,
        interface_id: u32,
        mtu: Option<u16>,
        ring_log2: Option<u8>,
        pool_buffers: Option<u32>,
        max_message: Option<u64>,
        ordered: bool,
        idle_timeout: Option<f64>,
        max_probes: Option<u32>,
        accept: Option<bool>,
        link_timeout: Option<f64>,
        omit_checksums: bool,
        pin_core: Option<usize>,
        spin: bool,
        rx_budget: Option<u64>,
        max_connections_per_source: Option<usize>,
        max_rx_slots: Option<usize>,
        rx_pool_reserve: Option<f64>,
        stateless_queue: Option<usize>,
        arp: Option<&Bound<'_, PyDict>>,
        memif_copy_rx: Option<bool>,
        memif_require_sealed_regions: Option<bool>,
        memif_max_peer_region_bytes: Option<u64>,
        memif_max_pending_handshakes: Option<usize>,
        memif_allowed_uid: Option<u32>,
        memif_handshake_timeout: Option<f64>,
        memif_wedge_timeout: Option<f64>,
        memif_secret: Option<String>,
    ) -> PyResult<Stack> {
        let limits = Limits {
            rx_budget,
            max_connections_per_source,
            max_rx_slots,
            rx_pool_reserve,
            stateless_queue,
            arp: arp.map(arp_config).transpose()?,
            memif_copy_rx,
            memif_require_sealed_regions,
            memif_max_peer_region_bytes,
            memif_max_pending_handshakes,
            memif_allowed_uid,
            memif_handshake_timeout: seconds("memif_handshake_timeout", memif_handshake_timeout)?,
            memif_wedge_timeout: seconds("memif_wedge_timeout", memif_wedge_timeout)?,
            memif_secret,
        };
        let (role, my_ip, my_mac, other_ip, other_mac) = match role {
            "server" => (Role::Server, SERVER_IP, SERVER_MAC, CLIENT_IP, CLIENT_MAC),
            "client" => (Role::Client, CLIENT_IP, CLIENT_MAC, SERVER_IP, SERVER_MAC),
            r => {
                return Err(PyValueError::new_err(format!(
                    "role must be \"server\" or \"client\", not {r:?}"
                )))
            }
        };
        let ip = ip.map(|s| parse_ip("ip", s)).transpose()?.unwrap_or(my_ip);
        let mac = mac
            .map(|s| parse_mac("mac", s))
            .transpose()?
            .unwrap_or(my_mac);
        let peer_ip = peer_ip
            .map(|s| parse_ip("peer_ip", s))
            .transpose()?
            .unwrap_or(other_ip);
        let peer_mac = peer_mac
            .map(|s| parse_mac("peer_mac", s))
            .transpose()?
            .unwrap_or(other_mac);
        if let Some(r) = ring_log2 {
            if !(1..=14).contains(&r) {
                return Err(PyValueError::new_err(format!(
                    "ring_log2 must be 1..=14, not {r}"
                )));
            }
        }
        let mut b = RsStack::builder(
            Backend::Memif {
                socket: socket_path,
                role,
                id: interface_id,
            },
            ip,
        )
        .mac(mac)
        .static_arp(peer_ip, peer_mac)
        .udp_port(udp_port)
        .omit_checksums(omit_checksums)
        // Waiting forever is None from Python; the builder wants a bound.
        .link_timeout(duration(link_timeout)?.unwrap_or(Duration::from_secs(100 * 365 * 86400)));
        if let Some(m) = mtu {
            b = b.mtu(m);
        }
        if let Some(r) = ring_log2 {
            b = b.memif_ring(r);
        }
        if let Some(n) = pool_buffers {
            b = b.memif_extra_buffers(n);
        }
        let mut conn = bypass::proto::ConnectionConfig {
            ordered,
            // The builder's own default (ConnectionConfig's is 2 GiB).
            max_message: 1 << 30,
            ..Default::default()
        };
        if let Some(t) = duration(idle_timeout)? {
            conn.idle_timeout = t;
        }
        if let Some(n) = max_probes {
            conn.max_probes = n;
        }
        b = b.connection_config(conn);
        // After `connection_config`, which replaces the whole connection configuration.
        if let Some(m) = max_message {
            b = b.max_message(m);
        }
        b = b.limits(&limits);
        // A client accepts nothing unless asked; a server accepts.
        if !accept.unwrap_or(role == Role::Server) {
            b = b.no_accept();
        }
        if let Some(c) = pin_core {
            b = b.pin_core(c);
        }
        // Waiting calls sleep once idle (the default, IdlePoll::Sleep); `spin` keeps them
        // polling (the lowest latency, a whole core).
        if spin {
            b = b.idle_poll(bypass::socket::IdlePoll::Spin);
        }
        // Waiting for the memif peer can take the whole link timeout: without the GIL. The
        // stack is built on this thread (its poll loop) and stays here.
        let stack = without_gil(py, || b.build()).map_err(|e| match e {
            bypass::socket::Error::Backend { ref what, .. } if what == "core slot" => {
                crate::errors::StartError::new_err(format!(
                    "{e} (a thread runs one stack at a time: close the previous stack, its \
                     listeners and sockets, or make this stack on another thread)"
                ))
            }
            e => to_py(e),
        })?;
        Ok(Stack {
            stack: Some(stack),
            ordered,
        })
    }

    /// Connect to the stack at `ip`:`port` (default: the peer's address), waiting up to
    /// `timeout` seconds for the handshake.
    #[pyo3(signature = (ip = None, port = bypass::socket::DEFAULT_UDP_PORT, timeout = 10.0))]
    fn connect(
        &self,
        py: Python<'_>,
        ip: Option<&str>,
        port: u16,
        timeout: f64,
    ) -> PyResult<Socket> {
        let stack = self.get()?;
        let ip = match ip {
            Some(s) => parse_ip("ip", s)?,
            None => SERVER_IP,
        };
        let t = duration(Some(timeout))?.unwrap_or_default();
        let sock =
            without_gil(py, || stack.connect(SocketAddrV4::new(ip, port), t)).map_err(to_py)?;
        Socket::new(sock, self.ordered)
    }

    /// A listener for incoming connections (the stack must accept: the server role does).
    fn listen(&self) -> PyResult<Listener> {
        Ok(Listener {
            listener: Some(self.get()?.listen()),
            ordered: self.ordered,
        })
    }

    /// One iteration of the poll loop; True if it did anything.
    fn poll(&self) -> PyResult<bool> {
        Ok(self.get()?.poll())
    }

    /// Whether the memif link is up (the peer process is there).
    #[getter]
    fn link_up(&self) -> PyResult<bool> {
        Ok(self.get()?.link_up())
    }

    /// Live connections.
    #[getter]
    fn connections(&self) -> PyResult<usize> {
        Ok(self.get()?.connections())
    }

    /// Drop the stack. Its sockets keep it running until they are closed too; the port goes
    /// when the last of them does (after up to 100 ms for the last packets to leave).
    fn close(&mut self, py: Python<'_>) {
        if let Some(s) = self.stack.take() {
            without_gil(py, || drop(s));
        }
    }

    fn __enter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    fn __exit__(
        &mut self,
        py: Python<'_>,
        _t: Option<&Bound<'_, PyAny>>,
        _v: Option<&Bound<'_, PyAny>>,
        _tb: Option<&Bound<'_, PyAny>>,
    ) -> bool {
        self.close(py);
        false
    }
}

/// Accepts connections; from `Stack.listen()`.
#[pyclass(module = "bypass", unsendable)]
pub struct Listener {
    listener: Option<bypass::socket::Listener>,
    ordered: bool,
}

#[pymethods]
impl Listener {
    /// The next incoming connection, waiting up to `timeout` seconds (None: forever).
    #[pyo3(signature = (timeout = None))]
    fn accept(&self, py: Python<'_>, timeout: Option<f64>) -> PyResult<Socket> {
        let l = self
            .listener
            .as_ref()
            .ok_or_else(|| closed("the listener"))?;
        let t = duration(timeout)?;
        match wait(py, deadline(t), || Ok::<_, ()>(l.try_accept()))? {
            Ok(Some(s)) => Socket::new(s, self.ordered),
            _ => Err(timeout_of("accept", t)),
        }
    }

    /// The next incoming connection if one is ready (polls once), else None.
    fn try_accept(&self) -> PyResult<Option<Socket>> {
        let l = self
            .listener
            .as_ref()
            .ok_or_else(|| closed("the listener"))?;
        l.try_accept()
            .map(|s| Socket::new(s, self.ordered))
            .transpose()
    }

    /// Stop using the listener (connections already accepted stay).
    fn close(&mut self) {
        self.listener = None;
    }

    fn __enter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    fn __exit__(
        &mut self,
        _t: Option<&Bound<'_, PyAny>>,
        _v: Option<&Bound<'_, PyAny>>,
        _tb: Option<&Bound<'_, PyAny>>,
    ) -> bool {
        self.close();
        false
    }
}

fn timeout_of(what: &str, t: Option<Duration>) -> PyErr {
    timeout(what, t.unwrap_or_default())
}
