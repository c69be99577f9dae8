//! UDP checksums over intact links: two stacks whose ports both deliver frames unaltered
//! (`Offloads::intact`: memif, an in-process pair) and whose applications allow it
//! (`StackBuilder::omit_checksums`) agree in the handshake to send without a UDP checksum;
//! anything else (either side not allowing it, the default, or a port that corrupts frames)
//! keeps them on every datagram, and corruption is still caught.

use crate::harness;

use std::net::{Ipv4Addr, SocketAddrV4};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use bypass::mem::{HugePages, PktBuf, Pool, PoolConfig, PoolExhausted};
use bypass::pmd::faults::{FaultConfig, FaultSpec, Faults};
use bypass::pmd::pair::pair;
use bypass::pmd::{Link, Port, PortInfo, PortStats};
use bypass::socket::{Backend, Error, Stack};

const SERVER: Ipv4Addr = Ipv4Addr::new(10, 98, 0, 1);
const CLIENT: Ipv4Addr = Ipv4Addr::new(10, 98, 0, 2);

/// The UDP checksum field and UDP length of every IPv4/UDP frame a port transmits.
type Seen = Arc<Mutex<Vec<(u16, u16)>>>;

/// What a [`TxHook`] runs on each burst before transmitting it.
type Hook = Box<dyn FnMut(&mut Vec<PktBuf>) + Send>;

/// A port that shows each burst it transmits to `hook` first (to record or alter frames),
/// and reports its counters through `stats` (to add what a driver would count).
struct TxHook<P> {
    inner: P,
    hook: Hook,
    stats: fn(PortStats) -> PortStats,
}

impl<P: Port> Port for TxHook<P> {
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
        (self.hook)(pkts);
        self.inner.tx_burst(pkts)
    }
    fn alloc_tx(&mut self) -> Result<PktBuf, PoolExhausted> {
        self.inner.alloc_tx()
    }
    fn stats(&self) -> PortStats {
        (self.stats)(self.inner.stats())
    }
}

/// The offset of the UDP header of an IPv4/UDP Ethernet frame.
fn udp_at(f: &[u8]) -> Option<usize> {
    // Ethernet type IPv4, protocol UDP.
    (f.len() >= 42 && f[12..14] == [0x08, 0x00] && f[23] == 17)
        .then(|| 14 + usize::from(f[14] & 0x0f) * 4)
}

/// Records the UDP checksum field and UDP length of every datagram `inner` transmits.
fn tap<P: Port>(inner: P, seen: Seen) -> TxHook<P> {
    TxHook {
        inner,
        stats: |s| s,
        hook: Box::new(move |pkts: &mut Vec<PktBuf>| {
            let mut seen = seen.lock().unwrap_or_else(|e| e.into_inner());
            for p in pkts.iter() {
                let f = p.data();
                if let Some(udp) = udp_at(f) {
                    let len = u16::from_be_bytes([f[udp + 4], f[udp + 5]]);
                    let sum = u16::from_be_bytes([f[udp + 6], f[udp + 7]]);
                    seen.push((sum, len));
                }
            }
        }),
    }
}

struct Case {
    /// The client allows leaving checksums out.
    client_omit: bool,
    /// The server allows leaving checksums out.
    server_omit: bool,
    /// The client's port corrupts 2 % of the frames it receives (after the UDP layer of the
    /// server computed or left out the checksum).
    client_corrupts: bool,
}

/// What each side sent, as (checksum, UDP length) per datagram, and the frames the client
/// dropped for a bad IPv4 or UDP checksum.
struct Outcome {
    server: Vec<(u16, u16)>,
    client: Vec<(u16, u16)>,
    client_bad_checksums: u64,
}

/// Echo messages of several sizes through the two stacks.
fn run(case: Case) -> Outcome {
    let pool = Pool::new(&PoolConfig {
        hugepages: HugePages::Never,
        ..PoolConfig::new("csum-test", 8192, 9216 + 256)
    })
    .unwrap();
    let (a, b) = pair(&pool, 1024, 9000).unwrap();
    let (server_seen, client_seen): (Seen, Seen) = Default::default();
    let a = tap(a, server_seen.clone());
    let b: Box<dyn Port> = if case.client_corrupts {
        let mut cfg = FaultConfig {
            seed: 7,
            ..FaultConfig::default()
        };
        cfg.rx = FaultSpec {
            corrupt: 0.02,
            corrupt_skip: 14,
            ..FaultSpec::default()
        };
        let f = Faults::new(b, cfg).unwrap();
        assert!(
            !f.info().offloads.intact,
            "a corrupting wrapper is not intact"
        );
        Box::new(tap(f, client_seen.clone()))
    } else {
        assert!(b.info().offloads.intact, "a pair is an intact link");
        Box::new(tap(b, client_seen.clone()))
    };
    let (up_tx, up_rx) = mpsc::channel();
    let server = thread::spawn(move || {
        let stack = Stack::builder(Backend::Port(Box::new(a)), SERVER)
            .omit_checksums(case.server_omit)
            .build()
            .unwrap();
        let listener = stack.listen();
        up_tx.send(()).unwrap();
        let sock = listener.accept(Duration::from_secs(20)).unwrap();
        // As long as the client waits for an echo: the next message may be 1 MiB crossing a
        // corrupting port.
        sock.set_timeout(Some(Duration::from_secs(20)));
        loop {
            match sock.recv() {
                Ok(m) => {
                    sock.send_bytes(m).unwrap();
                }
                Err(Error::Closed) => break,
                Err(e) => panic!("server recv: {e}"),
            }
        }
    });
    up_rx.recv().unwrap();
    let stack = Stack::builder(Backend::Port(b), CLIENT)
        .omit_checksums(case.client_omit)
        .build()
        .unwrap();
    let sock = stack
        .connect(SocketAddrV4::new(SERVER, 7200), Duration::from_secs(10))
        .unwrap();
    sock.set_timeout(Some(Duration::from_secs(20)));
    for (k, len) in [1usize, 64, 1400, 8972, 65536, 1 << 20]
        .into_iter()
        .enumerate()
    {
        for r in 0..3u8 {
            let msg: Vec<u8> = (0..len)
                .map(|i| (i as u8).wrapping_mul(29).wrapping_add(k as u8 ^ r))
                .collect();
            sock.send(&msg).unwrap();
            let back = sock.recv().unwrap();
            assert!(back[..] == msg[..], "{len} B message changed on the way");
        }
    }
    sock.close().unwrap();
    let net = stack.stats().net;
    drop(stack);
    server.join().unwrap();
    let server = server_seen.lock().unwrap().clone();
    let client = client_seen.lock().unwrap().clone();
    Outcome {
        server,
        client,
        client_bad_checksums: net.ip_bad_checksum + net.udp_bad_checksum,
    }
}

/// No datagram either side sent went without a checksum.
fn all_checksummed(o: &Outcome) {
    for (side, seen) in [("server", &o.server), ("client", &o.client)] {
        assert!(seen.len() >= 100, "{side}: {} datagrams", seen.len());
        assert!(
            seen.iter().all(|&(s, _)| s != 0),
            "{side}: a datagram without a checksum"
        );
    }
}

#[test]
fn intact_links_on_both_ends_send_without_udp_checksums() {
    let _pair = harness::one_pair_at_a_time();
    let o = run(Case {
        client_omit: true,
        server_omit: true,
        client_corrupts: false,
    });
    // Each side's first datagrams go before it has the peer's flags: the client's hello
    // (and its retries), the server's stateless ACCEPTs (one per hello). Everything after
    // (data, ACKs, the close) carries 0.
    for (side, seen) in [("server", &o.server), ("client", &o.client)] {
        assert!(seen.len() >= 100, "{side}: {} datagrams", seen.len());
        let handshake = seen.iter().take_while(|(s, _)| *s != 0).count();
        assert!(
            (1..=8).contains(&handshake),
            "{side}: {handshake} datagrams with a checksum before the first without"
        );
        assert!(
            seen[handshake..].iter().all(|&(s, _)| s == 0),
            "{side}: a datagram carried a checksum over two intact links: {:?} of {}",
            seen.iter()
                .enumerate()
                .filter(|(_, (s, _))| *s != 0)
                .collect::<Vec<_>>(),
            seen.len()
        );
    }
}

#[test]
fn checksums_stay_unless_both_ends_allow_leaving_them_out() {
    let _pair = harness::one_pair_at_a_time();
    // The default: neither allows it.
    all_checksummed(&run(Case {
        client_omit: false,
        server_omit: false,
        client_corrupts: false,
    }));
    // One side allows it; the other (client or server) does not.
    for (client_omit, server_omit) in [(true, false), (false, true)] {
        let o = run(Case {
            client_omit,
            server_omit,
            client_corrupts: false,
        });
        assert_eq!(o.client_bad_checksums, 0);
        all_checksummed(&o);
    }
}

#[test]
fn a_corrupting_port_keeps_checksums_and_corruption_is_caught() {
    let _pair = harness::one_pair_at_a_time();
    // Both applications allow it, but the client's port alters frames: not intact. `run`
    // asserts every echoed message came back byte for byte.
    let o = run(Case {
        client_omit: true,
        server_omit: true,
        client_corrupts: true,
    });
    assert!(
        o.client_bad_checksums > 0,
        "2 % corruption of a few hundred frames was never caught by a checksum"
    );
    all_checksummed(&o);
}

/// While `strip` is set, zeroes the UDP checksum of every datagram `inner` transmits: a peer
/// that leaves checksums out without having agreed to.
fn strip<P: Port>(inner: P, strip: Arc<std::sync::atomic::AtomicBool>) -> TxHook<P> {
    TxHook {
        inner,
        stats: |s| s,
        hook: Box::new(move |pkts: &mut Vec<PktBuf>| {
            if strip.load(std::sync::atomic::Ordering::Relaxed) {
                for p in pkts.iter_mut() {
                    if let Some(udp) = udp_at(p.data()) {
                        p.data_mut()[udp + 6..udp + 8].fill(0);
                    }
                }
            }
        }),
    }
}

#[test]
fn datagrams_without_a_checksum_are_dropped_unless_both_ends_agreed() {
    let _pair = harness::one_pair_at_a_time();
    use std::sync::atomic::{AtomicBool, Ordering};
    let pool = Pool::new(&PoolConfig {
        hugepages: HugePages::Never,
        ..PoolConfig::new("csum-strip", 8192, 9216 + 256)
    })
    .unwrap();
    let (a, b) = pair(&pool, 1024, 9000).unwrap();
    let stripping = Arc::new(AtomicBool::new(true));
    let b = strip(b, stripping.clone());
    // The server does not allow leaving checksums out (the default).
    let (up_tx, up_rx) = mpsc::channel();
    let (stats_tx, stats_rx) = mpsc::channel();
    let server = thread::spawn(move || {
        let stack = Stack::builder(Backend::Port(Box::new(a)), SERVER)
            .build()
            .unwrap();
        let listener = stack.listen();
        up_tx.send(()).unwrap();
        let sock = listener.accept(Duration::from_secs(20)).unwrap();
        // The first message arrives only once the client's checksums are back.
        sock.set_timeout(Some(Duration::from_secs(20)));
        let first = sock.recv().unwrap();
        stats_tx.send(stack.stats().endpoint).unwrap();
        sock.send_bytes(first).unwrap();
        while sock.recv().is_ok() {}
    });
    up_rx.recv().unwrap();
    let stack = Stack::builder(Backend::Port(Box::new(b)), CLIENT)
        .build()
        .unwrap();
    // Hellos without a checksum: none is answered.
    match stack.connect(SocketAddrV4::new(SERVER, 7200), Duration::from_millis(300)) {
        Err(Error::PeerUnreachable { .. }) => {}
        other => panic!("a hello without a checksum was answered: {:?}", other.err()),
    }
    stripping.store(false, Ordering::Relaxed);
    let sock = stack
        .connect(SocketAddrV4::new(SERVER, 7200), Duration::from_secs(10))
        .unwrap();
    // Established; the client's datagrams lose their checksums again: its message (and its
    // retransmissions) are dropped, until they carry checksums once more.
    stripping.store(true, Ordering::Relaxed);
    sock.send(b"checked").unwrap();
    stack.poll_for(Duration::from_millis(200));
    stripping.store(false, Ordering::Relaxed);
    sock.set_timeout(Some(Duration::from_secs(20)));
    let back = sock.recv().unwrap();
    assert_eq!(
        &back[..],
        b"checked",
        "the message arrives whole once checked"
    );
    let ep = stats_rx.recv().unwrap();
    assert!(
        ep.rx_no_checksum >= 2,
        "hellos and data without a checksum were not counted as dropped: {ep:?}"
    );
    sock.close().unwrap();
    drop(stack);
    server.join().unwrap();
}

/// A driver's checksum drops (`PortStats::rx_bad_checksum`, part of `rx_errors`) are
/// published as `cause="bad_checksum"`, apart from the driver's other errors
/// (`cause="device_error"`).
#[test]
fn device_checksum_drops_have_a_cause_of_their_own() {
    let pool = Pool::new(&PoolConfig {
        hugepages: HugePages::Never,
        ..PoolConfig::new("checksum-cause", 1024, 2048 + 256)
    })
    .unwrap();
    let (a, _b) = pair(&pool, 256, 1500).unwrap();
    let m = bypass::socket::Metrics::new();
    // The counters of a driver whose checksum offload dropped 3 frames of 5 errors.
    let port = TxHook {
        inner: a,
        hook: Box::new(|_| {}),
        stats: |s| PortStats {
            rx_errors: 5,
            rx_bad_checksum: 3,
            ..s
        },
    };
    let stack = Stack::builder(Backend::Port(Box::new(port)), SERVER)
        .metrics(&m)
        .metrics_name("offload")
        .build()
        .unwrap();
    let value = |cause: &str| {
        m.registry().value(
            "bypass_port_rx_dropped_packets",
            &[("port", "offload"), ("queue", "0"), ("cause", cause)],
        )
    };
    let _ = harness::wait_for("the port's drops to be published", harness::SETTLE, || {
        stack.poll();
        value("bad_checksum") == Some(3)
    });
    assert_eq!(value("bad_checksum"), Some(3));
    assert_eq!(value("device_error"), Some(2));
}
