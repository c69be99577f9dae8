//! The kernel baselines: UDP and TCP over the kernel's sockets (loopback when both ends run
//! here), each blocking or busy-polling.
//!
//! - UDP: one message per datagram on a connected socket; messages up to 65507 B (the IPv4
//!   datagram limit). A listener accepts a "connection" by a hello datagram: it answers from a
//!   fresh socket connected to the client, so every connection has its own socket.
//! - TCP: each message is a 4-byte little-endian length and the payload, written with one
//!   `writev`; `TCP_NODELAY` is set. Receives are buffered (one `read` may bring several
//!   messages, as any TCP application would do).
//! - Blocking: the socket blocks with `SO_RCVTIMEO`/`SO_SNDTIMEO` set to the connection's
//!   timeouts. Busy-poll: the socket is non-blocking and the thread spins on `recv`/`send`
//!   until it succeeds or the timeout passes (the clock is read every 64 tries).
//! - Waiting until a deadline (`recv_msg_before`): blocking sockets sleep in
//!   `ppoll(2)` (nanosecond timeout, unlike `SO_RCVTIMEO`, which counts in jiffies) and then
//!   receive; busy-poll sockets spin on the non-blocking receive.
//!
//! Socket buffer sizes are the kernel's defaults (as a newcomer's application would see them).
use std::io::{self, IoSlice, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, ToSocketAddrs, UdpSocket};
use std::os::fd::AsFd;
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::transport::{ConnError, ConnOpts, Listener, MsgConn, Transport, Wait};

/// The largest UDP payload over IPv4.
pub const UDP_MAX: usize = 65507;
/// The largest message over the TCP framing (the benchmark never needs more).
pub const TCP_MAX: usize = 1 << 30;

const HELLO: &[u8] = b"bypass-bench udp hello v1";
const ACCEPT: &[u8] = b"bypass-bench udp accept v1";
/// How many failed non-blocking tries between two clock reads while spinning.
const SPINS_PER_CLOCK_READ: u32 = 64;
const BOTH_WAYS: &[Wait] = &[Wait::Blocking, Wait::Busy];

fn resolve(addr: &str) -> Result<SocketAddr, ConnError> {
    addr.to_socket_addrs()
        .map_err(|_| ConnError::Address(addr.to_owned()))?
        .next()
        .ok_or_else(|| ConnError::Address(addr.to_owned()))
}

fn host_port0(host: &str) -> Result<SocketAddr, ConnError> {
    let with_port = if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]:0")
    } else {
        format!("{host}:0")
    };
    resolve(&with_port)
}

fn is_timeout(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
}

/// Sleeps in `ppoll` until `fd` is readable (true) or `deadline` passes (false). Readable
/// includes a pending error or hang-up: the receive that follows reports it.
fn wait_readable(fd: &impl AsFd, deadline: Instant) -> Result<bool, ConnError> {
    use rustix::event::{poll, PollFd, PollFlags, Timespec};
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let ts = Timespec {
            tv_sec: i64::try_from(left.as_secs()).unwrap_or(i64::MAX),
            tv_nsec: i64::from(left.subsec_nanos()),
        };
        let mut fds = [PollFd::new(fd, PollFlags::IN)];
        match poll(&mut fds, Some(&ts)) {
            Ok(0) => return Ok(false),
            Ok(_) => return Ok(true),
            Err(rustix::io::Errno::INTR) if !left.is_zero() => continue,
            Err(rustix::io::Errno::INTR) => return Ok(false),
            Err(e) => return Err(io::Error::from(e).into()),
        }
    }
}

/// Spins `op` until it yields `Some`, fails, or `timeout` passes.
fn spin<T>(
    timeout: Duration,
    mut op: impl FnMut() -> Result<Option<T>, ConnError>,
) -> Result<T, ConnError> {
    let mut deadline: Option<Instant> = None;
    let mut tries = 0u32;
    loop {
        if let Some(v) = op()? {
            return Ok(v);
        }
        tries += 1;
        if tries == SPINS_PER_CLOCK_READ {
            tries = 0;
            let now = Instant::now();
            match deadline {
                None => deadline = Some(now + timeout),
                Some(d) if now >= d => return Err(ConnError::TimedOut),
                Some(_) => {}
            }
        }
    }
}

/// Kernel UDP: one message per datagram.
pub struct KernelUdp;

impl Transport for KernelUdp {
    fn name(&self) -> &'static str {
        "kernel-udp"
    }
    fn is_baseline(&self) -> bool {
        true
    }
    fn variants(&self) -> &'static [Wait] {
        BOTH_WAYS
    }
    fn max_msg(&self) -> usize {
        UDP_MAX
    }
    fn listen(&self, host: &str, opts: &ConnOpts) -> Result<Box<dyn Listener>, ConnError> {
        let sock = UdpSocket::bind(host_port0(host)?)?;
        Ok(Box::new(UdpListener {
            sock,
            opts: *opts,
            accepted: Vec::new(),
        }))
    }
    fn connect(&self, addr: &str, opts: &ConnOpts) -> Result<Box<dyn MsgConn>, ConnError> {
        let to = resolve(addr)?;
        let local: SocketAddr = if to.is_ipv4() {
            "0.0.0.0:0".parse().expect("literal address")
        } else {
            "[::]:0".parse().expect("literal address")
        };
        let sock = UdpSocket::bind(local)?;
        // The hello is retransmitted every 100 ms until the accept arrives.
        sock.set_read_timeout(Some(Duration::from_millis(100)))?;
        let deadline = Instant::now() + opts.io_timeout;
        let mut buf = [0u8; 64];
        loop {
            if Instant::now() >= deadline {
                return Err(ConnError::TimedOut);
            }
            sock.send_to(HELLO, to)?;
            match sock.recv_from(&mut buf) {
                Ok((n, from)) if &buf[..n] == ACCEPT => {
                    sock.connect(from)?;
                    return Ok(Box::new(UdpConn::new(sock, opts)?));
                }
                Ok(_) => return Err(ConnError::Protocol("unexpected datagram during udp hello")),
                Err(e) if is_timeout(&e) => continue,
                // An ICMP port-unreachable from an earlier hello: nobody listens yet or any more.
                Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => continue,
                Err(e) => return Err(e.into()),
            }
        }
    }
}

struct UdpListener {
    sock: UdpSocket,
    opts: ConnOpts,
    accepted: Vec<SocketAddr>,
}

impl Listener for UdpListener {
    fn addr(&self) -> String {
        self.sock
            .local_addr()
            .map(|a| a.to_string())
            .unwrap_or_default()
    }

    fn accept(&mut self, timeout: Duration) -> Result<Box<dyn MsgConn>, ConnError> {
        let deadline = Instant::now() + timeout;
        let mut buf = [0u8; 64];
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(ConnError::TimedOut);
            }
            self.sock.set_read_timeout(Some(left))?;
            let (n, from) = match self.sock.recv_from(&mut buf) {
                Ok(v) => v,
                Err(e) if is_timeout(&e) => return Err(ConnError::TimedOut),
                Err(e) => return Err(e.into()),
            };
            // A retransmitted hello from a client already accepted is ignored.
            if &buf[..n] != HELLO || self.accepted.contains(&from) {
                continue;
            }
            let local = SocketAddr::new(self.sock.local_addr()?.ip(), 0);
            let sock = UdpSocket::bind(local)?;
            sock.connect(from)?;
            sock.send(ACCEPT)?;
            self.accepted.push(from);
            return Ok(Box::new(UdpConn::new(sock, &self.opts)?));
        }
    }
}

struct UdpConn {
    sock: UdpSocket,
    wait: Wait,
    max: usize,
    recv_timeout: Duration,
    io_timeout: Duration,
    buf: Vec<u8>,
}

impl UdpConn {
    fn new(sock: UdpSocket, opts: &ConnOpts) -> Result<Self, ConnError> {
        match opts.wait {
            Wait::Blocking => {
                sock.set_nonblocking(false)?;
                sock.set_read_timeout(Some(opts.recv_timeout))?;
                sock.set_write_timeout(Some(opts.io_timeout))?;
            }
            Wait::Busy => sock.set_nonblocking(true)?,
        }
        Ok(UdpConn {
            sock,
            wait: opts.wait,
            max: opts.max_msg.min(UDP_MAX),
            recv_timeout: opts.recv_timeout,
            io_timeout: opts.io_timeout,
            // One byte more than the limit so an oversized datagram is seen, not truncated.
            buf: vec![0; UDP_MAX + 1],
        })
    }
}

fn udp_result(r: io::Result<usize>) -> Result<Option<usize>, ConnError> {
    match r {
        Ok(n) => Ok(Some(n)),
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(None),
        Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => Err(ConnError::Closed),
        Err(e) => Err(e.into()),
    }
}

impl MsgConn for UdpConn {
    fn send_msg(&mut self, msg: &Bytes) -> Result<(), ConnError> {
        if msg.len() > self.max {
            return Err(ConnError::TooLarge {
                len: msg.len(),
                max: self.max,
            });
        }
        let sock = &self.sock;
        let n = match self.wait {
            Wait::Blocking => match sock.send(msg) {
                Ok(n) => n,
                Err(e) if is_timeout(&e) => return Err(ConnError::TimedOut),
                Err(e) => return udp_result(Err(e)).map(|_| ()),
            },
            Wait::Busy => spin(self.io_timeout, || udp_result(sock.send(msg)))?,
        };
        if n != msg.len() {
            return Err(ConnError::Protocol("short udp send"));
        }
        Ok(())
    }

    fn recv_msg(&mut self) -> Result<&[u8], ConnError> {
        let n = {
            let (sock, buf) = (&self.sock, &mut self.buf);
            match self.wait {
                Wait::Blocking => match sock.recv(buf) {
                    Ok(n) => n,
                    Err(e) if is_timeout(&e) => return Err(ConnError::TimedOut),
                    Err(e) => return udp_result(Err(e)).map(|_| &[][..]),
                },
                Wait::Busy => spin(self.recv_timeout, || udp_result(sock.recv(buf)))?,
            }
        };
        if n > self.max {
            return Err(ConnError::Protocol(
                "datagram larger than the connection's limit",
            ));
        }
        Ok(&self.buf[..n])
    }

    fn recv_msg_before(&mut self, deadline: Instant) -> Result<Option<&[u8]>, ConnError> {
        let n = loop {
            if self.wait == Wait::Blocking && !wait_readable(&self.sock, deadline)? {
                return Ok(None);
            }
            // Busy-poll: a non-blocking try. Blocking: the socket is readable, so this
            // returns at once (with the datagram or the pending error).
            match udp_result(self.sock.recv(&mut self.buf))? {
                Some(n) => break n,
                None if Instant::now() >= deadline => return Ok(None),
                None => {}
            }
        };
        if n > self.max {
            return Err(ConnError::Protocol(
                "datagram larger than the connection's limit",
            ));
        }
        Ok(Some(&self.buf[..n]))
    }
}

/// Kernel TCP: length-prefixed messages, `TCP_NODELAY`.
pub struct KernelTcp;

impl Transport for KernelTcp {
    fn name(&self) -> &'static str {
        "kernel-tcp"
    }
    fn is_baseline(&self) -> bool {
        true
    }
    fn variants(&self) -> &'static [Wait] {
        BOTH_WAYS
    }
    fn max_msg(&self) -> usize {
        TCP_MAX
    }
    fn listen(&self, host: &str, opts: &ConnOpts) -> Result<Box<dyn Listener>, ConnError> {
        let l = TcpListener::bind(host_port0(host)?)?;
        l.set_nonblocking(true)?;
        Ok(Box::new(TcpMsgListener { l, opts: *opts }))
    }
    fn connect(&self, addr: &str, opts: &ConnOpts) -> Result<Box<dyn MsgConn>, ConnError> {
        let s = TcpStream::connect_timeout(&resolve(addr)?, opts.io_timeout)?;
        Ok(Box::new(TcpConn::new(s, opts)?))
    }
}

struct TcpMsgListener {
    l: TcpListener,
    opts: ConnOpts,
}

impl Listener for TcpMsgListener {
    fn addr(&self) -> String {
        self.l
            .local_addr()
            .map(|a| a.to_string())
            .unwrap_or_default()
    }

    fn accept(&mut self, timeout: Duration) -> Result<Box<dyn MsgConn>, ConnError> {
        let deadline = Instant::now() + timeout;
        loop {
            match self.l.accept() {
                Ok((s, _)) => return Ok(Box::new(TcpConn::new(s, &self.opts)?)),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    if Instant::now() >= deadline {
                        return Err(ConnError::TimedOut);
                    }
                    std::thread::sleep(Duration::from_millis(1));
                }
                Err(e) => return Err(e.into()),
            }
        }
    }
}

struct TcpConn {
    s: TcpStream,
    wait: Wait,
    max: usize,
    recv_timeout: Duration,
    io_timeout: Duration,
    /// Received bytes not yet handed out are `buf[start..end]`.
    buf: Vec<u8>,
    start: usize,
    end: usize,
}

/// What one read attempt gave.
enum Got {
    Bytes,
    Nothing,
}

impl TcpConn {
    fn new(s: TcpStream, opts: &ConnOpts) -> Result<Self, ConnError> {
        s.set_nodelay(true)?;
        match opts.wait {
            Wait::Blocking => {
                s.set_nonblocking(false)?;
                s.set_read_timeout(Some(opts.recv_timeout))?;
                s.set_write_timeout(Some(opts.io_timeout))?;
            }
            Wait::Busy => s.set_nonblocking(true)?,
        }
        let max = opts.max_msg.min(TCP_MAX);
        Ok(TcpConn {
            s,
            wait: opts.wait,
            max,
            recv_timeout: opts.recv_timeout,
            io_timeout: opts.io_timeout,
            buf: vec![0; max + 4 + (64 << 10)],
            start: 0,
            end: 0,
        })
    }

    /// The byte range of a whole buffered message, if there is one.
    fn buffered_msg(&self) -> Result<Option<std::ops::Range<usize>>, ConnError> {
        let have = self.end - self.start;
        if have < 4 {
            return Ok(None);
        }
        let mut len = [0u8; 4];
        len.copy_from_slice(&self.buf[self.start..self.start + 4]);
        let len = u32::from_le_bytes(len) as usize;
        if len > self.max {
            return Err(ConnError::TooLarge { len, max: self.max });
        }
        if have < 4 + len {
            return Ok(None);
        }
        Ok(Some(self.start + 4..self.start + 4 + len))
    }

    /// Makes room after `end` for at least the rest of the current message.
    fn make_room(&mut self) {
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        } else if self.buf.len() - self.end < 64 << 10 {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
    }

    fn read_some(&mut self) -> Result<Got, ConnError> {
        match self.s.read(&mut self.buf[self.end..]) {
            Ok(0) => Err(ConnError::Closed),
            Ok(n) => {
                self.end += n;
                Ok(Got::Bytes)
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(Got::Nothing),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => Ok(Got::Nothing),
            Err(e) => Err(e.into()),
        }
    }

    fn take(&mut self, r: std::ops::Range<usize>) -> &[u8] {
        self.start = r.end;
        &self.buf[r]
    }
}

impl MsgConn for TcpConn {
    fn send_msg(&mut self, msg: &Bytes) -> Result<(), ConnError> {
        if msg.len() > self.max {
            return Err(ConnError::TooLarge {
                len: msg.len(),
                max: self.max,
            });
        }
        let hdr = (msg.len() as u32).to_le_bytes();
        let total = 4 + msg.len();
        let mut off = 0;
        let mut deadline: Option<Instant> = None;
        while off < total {
            let r = if off < 4 {
                self.s
                    .write_vectored(&[IoSlice::new(&hdr[off..]), IoSlice::new(msg)])
            } else {
                self.s.write(&msg[off - 4..])
            };
            match r {
                Ok(0) => return Err(ConnError::Closed),
                Ok(n) => off += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if is_timeout(&e) => {
                    if self.wait == Wait::Blocking {
                        return Err(ConnError::TimedOut);
                    }
                    let now = Instant::now();
                    match deadline {
                        None => deadline = Some(now + self.io_timeout),
                        Some(d) if now >= d => return Err(ConnError::TimedOut),
                        Some(_) => {}
                    }
                }
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }

    fn recv_msg(&mut self) -> Result<&[u8], ConnError> {
        let mut deadline: Option<Instant> = None;
        let mut tries = 0u32;
        loop {
            if let Some(r) = self.buffered_msg()? {
                return Ok(self.take(r));
            }
            self.make_room();
            match self.read_some() {
                Ok(Got::Bytes) => {}
                Ok(Got::Nothing) => {
                    // Blocking: SO_RCVTIMEO passed. Busy: nothing yet; read the clock now and then.
                    if self.wait == Wait::Blocking {
                        return Err(ConnError::TimedOut);
                    }
                    tries += 1;
                    if tries == SPINS_PER_CLOCK_READ {
                        tries = 0;
                        let now = Instant::now();
                        match deadline {
                            None => deadline = Some(now + self.recv_timeout),
                            Some(d) if now >= d => return Err(ConnError::TimedOut),
                            Some(_) => {}
                        }
                    }
                }
                Err(e) => return Err(e),
            }
        }
    }

    fn recv_msg_before(&mut self, deadline: Instant) -> Result<Option<&[u8]>, ConnError> {
        loop {
            if let Some(r) = self.buffered_msg()? {
                return Ok(Some(self.take(r)));
            }
            self.make_room();
            if self.wait == Wait::Blocking && !wait_readable(&self.s, deadline)? {
                return Ok(None);
            }
            // Busy-poll: a non-blocking try. Blocking: the socket is readable, so this read
            // returns at once with what is there (or the end of the stream).
            match self.read_some()? {
                Got::Bytes => {}
                Got::Nothing if Instant::now() >= deadline => return Ok(None),
                Got::Nothing => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(wait: Wait) -> ConnOpts {
        ConnOpts {
            wait,
            max_msg: 200_000,
            recv_timeout: Duration::from_millis(300),
            io_timeout: Duration::from_secs(2),
            stream: false,
        }
    }

    fn round_trip(t: &dyn Transport, wait: Wait, sizes: &[usize]) {
        let o = opts(wait);
        let mut l = t.listen("127.0.0.1", &o).unwrap();
        let addr = l.addr();
        let client = std::thread::spawn({
            let sizes = sizes.to_vec();
            let name = t.name();
            move || {
                let t: Box<dyn Transport> = if name == "kernel-udp" {
                    Box::new(KernelUdp)
                } else {
                    Box::new(KernelTcp)
                };
                let mut c = t.connect(&addr, &o).unwrap();
                for &n in &sizes {
                    let msg = Bytes::from((0..n).map(|i| i as u8).collect::<Vec<_>>());
                    c.send_msg(&msg).unwrap();
                    assert_eq!(c.recv_msg().unwrap(), &msg[..]);
                }
            }
        });
        let mut s = l.accept(Duration::from_secs(2)).unwrap();
        for _ in sizes {
            let m = Bytes::copy_from_slice(s.recv_msg().unwrap());
            s.send_msg(&m).unwrap();
        }
        client.join().unwrap();
        // Nothing more was sent: a receive times out instead of hanging.
        assert!(matches!(
            s.recv_msg(),
            Err(ConnError::TimedOut | ConnError::Closed)
        ));
        assert!(matches!(
            s.recv_msg_before(Instant::now()),
            Ok(None) | Err(ConnError::Closed)
        ));
    }

    #[test]
    fn udp_messages_round_trip_both_ways_of_waiting() {
        for w in BOTH_WAYS {
            round_trip(&KernelUdp, *w, &[0, 1, 64, 1500, UDP_MAX]);
        }
    }

    #[test]
    fn tcp_messages_round_trip_both_ways_of_waiting() {
        for w in BOTH_WAYS {
            round_trip(&KernelTcp, *w, &[0, 1, 64, 70_000, 200_000, 3]);
        }
    }

    #[test]
    fn udp_rejects_a_message_over_the_datagram_limit() {
        let o = opts(Wait::Busy);
        let mut l = KernelUdp.listen("127.0.0.1", &o).unwrap();
        let addr = l.addr();
        let h = std::thread::spawn(move || l.accept(Duration::from_secs(2)).map(|_| ()));
        let mut c = KernelUdp.connect(&addr, &o).unwrap();
        h.join().unwrap().unwrap();
        let big = Bytes::from(vec![0u8; UDP_MAX + 1]);
        assert!(matches!(c.send_msg(&big), Err(ConnError::TooLarge { .. })));
    }

    #[test]
    fn recv_before_a_deadline_returns_none_then_the_message_both_ways_of_waiting() {
        for t in [&KernelUdp as &dyn Transport, &KernelTcp] {
            for &w in BOTH_WAYS {
                let o = opts(w);
                let mut l = t.listen("127.0.0.1", &o).unwrap();
                let addr = l.addr();
                let h = std::thread::spawn(move || l.accept(Duration::from_secs(2)).unwrap());
                let mut c = t.connect(&addr, &o).unwrap();
                let mut s = h.join().unwrap();
                let t0 = Instant::now();
                let wait = Duration::from_millis(20);
                assert!(s.recv_msg_before(t0 + wait).unwrap().is_none());
                assert!(t0.elapsed() >= wait, "{} {:?}", t.name(), w);
                assert!(s.recv_msg_before(Instant::now()).unwrap().is_none());
                c.send_msg(&Bytes::from_static(b"ping")).unwrap();
                let later = Instant::now() + Duration::from_secs(2);
                assert_eq!(s.recv_msg_before(later).unwrap(), Some(&b"ping"[..]));
            }
        }
    }

    #[test]
    fn connect_to_nobody_times_out() {
        let o = ConnOpts {
            io_timeout: Duration::from_millis(300),
            ..opts(Wait::Blocking)
        };
        // A bound UDP socket that never answers.
        let silent = UdpSocket::bind("127.0.0.1:0").unwrap();
        let addr = silent.local_addr().unwrap().to_string();
        let t0 = Instant::now();
        assert!(matches!(
            KernelUdp.connect(&addr, &o),
            Err(ConnError::TimedOut)
        ));
        assert!(t0.elapsed() < Duration::from_secs(2));
    }
}
