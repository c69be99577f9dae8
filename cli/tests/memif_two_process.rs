//! memif between two OS processes (this test and a `bypass memif-bench` child that bounces
//! frames), in both roles; a peer killed mid-stream shows as link down and a restarted peer
//! reconnects with no buffer leaked; several queue pairs and interfaces on one socket.

#[path = "../../tests/harness/mod.rs"]
mod harness;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bypass::mem::PktBuf;
use bypass::pmd::memif::{InterfaceConfig, Memif, MemifConfig, MemifPort, Role};
use bypass::pmd::Port;

struct Peer(Child);
impl Drop for Peer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn sock_path(tag: &str) -> String {
    format!("/tmp/bpx-{tag}-{}.sock", std::process::id())
}

/// Removes a socket path when the test ends (a killed child leaves its socket file behind).
struct Cleanup(String);
impl Drop for Cleanup {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// A `bypass memif-bench --mode pong` child in `role`.
fn pong_child(role: &str, sock: &str) -> Peer {
    let c = Command::new(env!("CARGO_BIN_EXE_bypass"))
        .args([
            "memif-bench",
            "--role",
            role,
            "--socket",
            sock,
            "--mode",
            "pong",
            "--duration",
            "120s",
            "--link-timeout",
            "60s",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn bypass memif-bench");
    Peer(c)
}

fn frame_size(seq: u64) -> usize {
    60 + (seq as usize * 37) % 1400
}

fn fill(b: &mut PktBuf, seq: u64) {
    let n = frame_size(seq);
    let d = b.append(n).unwrap();
    d[..12].copy_from_slice(&[2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1]);
    d[12..14].copy_from_slice(&[0x88, 0xb5]);
    d[14..22].copy_from_slice(&seq.to_le_bytes());
    for (i, x) in d[22..].iter_mut().enumerate() {
        *x = (i as u8) ^ (seq as u8);
    }
}

fn check(d: &[u8], seq: u64) -> Result<(), String> {
    if d.len() != frame_size(seq) {
        return Err(format!(
            "frame {seq}: length {} != {}",
            d.len(),
            frame_size(seq)
        ));
    }
    if d[14..22] != seq.to_le_bytes() {
        return Err(format!("frame {seq}: got sequence {:?}", &d[14..22]));
    }
    if !d[22..]
        .iter()
        .enumerate()
        .all(|(i, &x)| x == (i as u8) ^ (seq as u8))
    {
        return Err(format!("frame {seq}: payload corrupted"));
    }
    Ok(())
}

/// Send `n` frames through `port` to a bouncing peer and check every one comes back intact,
/// in order.
fn exchange(port: &mut MemifPort, n: u64) -> Result<(), String> {
    let (mut sent, mut got) = (0u64, 0u64);
    let mut txv = Vec::with_capacity(64);
    let mut rxv = Vec::with_capacity(256);
    let end = Instant::now() + Duration::from_secs(60);
    while got < n {
        while sent < n && sent - got < 64 && txv.len() < 32 {
            let mut b = port.alloc_tx().map_err(|e| e.to_string())?;
            fill(&mut b, sent);
            txv.push(b);
            sent += 1;
        }
        port.tx_burst(&mut txv);
        port.rx_burst(&mut rxv, 256);
        for f in rxv.drain(..) {
            check(f.data(), got)?;
            got += 1;
        }
        if Instant::now() > end {
            return Err(format!(
                "timeout: sent {sent}, got {got}, {:?}",
                port.stats()
            ));
        }
    }
    Ok(())
}

fn wait_link(port: &mut MemifPort, up: bool, secs: u64) -> bool {
    let end = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < end {
        if port.link().is_up() == up {
            return true;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    false
}

fn memif(sock: &str, role: Role) -> Memif {
    let mut cfg = MemifConfig::new(sock, role, 0);
    cfg.reconnect_interval = Duration::from_millis(20);
    Memif::new(cfg).expect("memif")
}

#[test]
fn memif_client_to_server_child_exchanges_frames() {
    let sock = sock_path("c2s");
    let _cleanup = Cleanup(sock.clone());
    let _peer = pong_child("server", &sock);
    let m = memif(&sock, Role::Client);
    let mut port = m.port(0, 0).unwrap();
    assert!(
        wait_link(&mut port, true, 20),
        "link up: {:?}",
        m.last_error(0)
    );
    exchange(&mut port, 20_000).unwrap();
    let s = port.stats();
    println!("client stats: {s:?}");
    assert_eq!(s.rx_packets, 20_000);
    assert_eq!(s.rx_errors, 0);
}

#[test]
fn memif_server_to_client_child_exchanges_frames() {
    let sock = sock_path("s2c");
    let _cleanup = Cleanup(sock.clone());
    let m = memif(&sock, Role::Server);
    let _peer = pong_child("client", &sock);
    let mut port = m.port(0, 0).unwrap();
    assert!(
        wait_link(&mut port, true, 20),
        "link up: {:?}",
        m.last_error(0)
    );
    exchange(&mut port, 20_000).unwrap();
    let s = port.stats();
    println!("server stats: {s:?}");
    assert_eq!(s.rx_packets, 20_000);
    assert_eq!(s.rx_errors, 0);
    drop(port);
    drop(m);
    assert!(!std::path::Path::new(&sock).exists(), "socket file removed");
}

/// Kill the peer mid-stream: link goes down, nothing crashes, no buffer leaks; a restarted
/// peer reconnects and frames flow again. Both roles of the surviving side.
#[test]
fn memif_peer_death_and_reconnect() {
    for (ours, theirs) in [(Role::Client, "server"), (Role::Server, "client")] {
        let sock = sock_path(&format!("death-{theirs}"));
        let _cleanup = Cleanup(sock.clone());
        let m = memif(&sock, ours);
        let pool = m.pool(0).unwrap();
        let mut port = m.port(0, 0).unwrap();
        let mut peer = pong_child(theirs, &sock);
        assert!(wait_link(&mut port, true, 20), "{ours:?}: first link up");
        exchange(&mut port, 2_000).unwrap();
        port.tx_burst(&mut Vec::new()); // reclaim buffers the peer has returned
        let in_use_up = pool.stats().in_use;

        // Kill the peer while frames are in flight.
        let mut txv = Vec::with_capacity(32);
        for s in 0..32 {
            let mut b = port.alloc_tx().unwrap();
            fill(&mut b, s);
            txv.push(b);
        }
        port.tx_burst(&mut txv);
        peer.0.kill().unwrap();
        peer.0.wait().unwrap();
        assert!(
            wait_link(&mut port, false, 5),
            "{ours:?}: link down after peer death"
        );
        assert!(m.last_error(0).is_some());
        // Frames offered while down stay with the caller.
        let mut more = vec![port.alloc_tx().unwrap()];
        assert_eq!(port.tx_burst(&mut more), 0);
        assert_eq!(more.len(), 1);
        drop(more);
        drop(txv);
        let mut rxv = Vec::new();
        assert_eq!(port.rx_burst(&mut rxv, 32), 0);
        // Everything the dead connection held has come back to the pool.
        assert_eq!(
            pool.stats().in_use,
            0,
            "{ours:?}: buffers leaked after peer death"
        );

        // A restarted peer reconnects.
        let _peer2 = pong_child(theirs, &sock);
        assert!(wait_link(&mut port, true, 20), "{ours:?}: link up again");
        exchange(&mut port, 2_000).unwrap();
        port.tx_burst(&mut Vec::new());
        assert_eq!(m.connects(0), 2);
        assert_eq!(
            pool.stats().in_use,
            in_use_up,
            "{ours:?}: same buffers in use as on the first connection"
        );
        println!("{ours:?}: reconnected; stats {:?}", port.stats());
    }
}

/// Two interfaces (ids 1 and 2) on one socket, interface 1 with two queue pairs: frames sent
/// on a queue arrive on the same queue of the same interface, and nowhere else.
#[test]
fn memif_queue_pairs_and_interfaces_by_id() {
    let sock = sock_path("multi");
    let _cleanup = Cleanup(sock.clone());
    let mk = |role| {
        let mut cfg = MemifConfig::new(&sock, role, 1);
        let mut a = InterfaceConfig::new(1);
        a.queue_pairs = 2;
        a.log2_ring_size = 8;
        let mut b = InterfaceConfig::new(2);
        b.log2_ring_size = 8;
        cfg.interfaces = vec![a, b];
        cfg.reconnect_interval = Duration::from_millis(20);
        Memif::new(cfg).unwrap()
    };
    let server = mk(Role::Server);
    let client = mk(Role::Client);
    assert!(server.wait_up(1, Duration::from_secs(10)));
    assert!(server.wait_up(2, Duration::from_secs(10)));
    assert!(client.wait_up(1, Duration::from_secs(10)));
    assert!(client.wait_up(2, Duration::from_secs(10)));
    assert_eq!(client.active_queues(1), 2);
    assert_eq!(client.active_queues(2), 1);
    let mut pairs = vec![];
    for (id, q) in [(1, 0), (1, 1), (2, 0)] {
        pairs.push((
            (id, q),
            client.port(id, q).unwrap(),
            server.port(id, q).unwrap(),
        ));
    }
    assert!(client.port(1, 0).is_err(), "a queue is taken once");
    assert!(client.port(1, 2).is_err(), "no queue 2");
    for ((id, q), c, s) in pairs.iter_mut() {
        assert!(wait_link(c, true, 10) && wait_link(s, true, 10));
        let tag = (*id as u64) * 100 + *q as u64;
        // client -> server
        let mut v = vec![];
        for k in 0..10 {
            let mut b = c.alloc_tx().unwrap();
            fill(&mut b, tag * 1000 + k);
            v.push(b);
        }
        assert_eq!(c.tx_burst(&mut v), 10);
        let mut got = vec![];
        harness::settle("10 frames across the memif pair", || {
            s.rx_burst(&mut got, 32);
            got.len() >= 10
        });
        for (k, f) in got.iter().enumerate() {
            check(f.data(), tag * 1000 + k as u64).unwrap();
        }
        assert_eq!(got.len(), 10);
        // server -> client, the same frames back
        assert_eq!(s.tx_burst(&mut got), 10);
        let mut back = vec![];
        harness::settle("10 frames back across the memif pair", || {
            c.rx_burst(&mut back, 32);
            back.len() >= 10
        });
        assert_eq!(back.len(), 10);
        for (k, f) in back.iter().enumerate() {
            check(f.data(), tag * 1000 + k as u64).unwrap();
        }
    }
    // Nothing leaked onto another queue.
    let mut stray = vec![];
    for (_, c, s) in pairs.iter_mut() {
        c.rx_burst(&mut stray, 32);
        s.rx_burst(&mut stray, 32);
    }
    assert!(stray.is_empty());
}

/// A client buffer whose data spills into its headroom (longer than one memif buffer) goes
/// out as a descriptor chain over the same slot, zero copy, and arrives whole at the server.
#[test]
fn memif_client_sends_chained_frame() {
    let sock = sock_path("chain");
    let _cleanup = Cleanup(sock.clone());
    let server = memif(&sock, Role::Server);
    let client = memif(&sock, Role::Client);
    let mut s = server.port(0, 0).unwrap();
    let mut c = client.port(0, 0).unwrap();
    assert!(wait_link(&mut c, true, 10) && wait_link(&mut s, true, 10));
    let pool = client.pool(0).unwrap();
    let mut b = c.alloc_tx().unwrap();
    let tail = b.tailroom();
    b.append(tail).unwrap().fill(0x5a);
    b.prepend(100).unwrap().fill(0xa5);
    let len = b.len();
    assert!(len > 2048, "longer than one memif buffer: {len}");
    let mut v = vec![b];
    assert_eq!(c.tx_burst(&mut v), 1);
    let mut got = vec![];
    harness::settle("the chained frame across the memif pair", || {
        s.rx_burst(&mut got, 32);
        !got.is_empty()
    });
    assert_eq!(got.len(), 1);
    let d = got[0].data();
    assert_eq!(d.len(), len);
    assert!(d[..100].iter().all(|&x| x == 0xa5) && d[100..].iter().all(|&x| x == 0x5a));
    assert_eq!(s.stats().rx_errors, 0);
    // The slot comes back once (not once per descriptor), when the client reclaims what the
    // server consumed (the second receive call in a row that finds nothing does).
    let before = pool.stats().in_use;
    let mut none = Vec::new();
    assert_eq!(c.rx_burst(&mut none, 32), 0);
    assert_eq!(c.rx_burst(&mut none, 32), 0);
    assert_eq!(pool.stats().in_use, before - 1);
}

/// A server refuses a socket path held by a live listener or by a file that is not a socket
/// (and never deletes that file); a stale socket left by a dead process is replaced.
#[test]
fn memif_server_socket_path_rules() {
    let sock = sock_path("path");
    let _cleanup = Cleanup(sock.clone());
    let first = memif(&sock, Role::Server);
    assert!(Memif::new(MemifConfig::new(&sock, Role::Server, 0)).is_err());
    drop(first);
    let file = sock_path("notasocket");
    std::fs::write(&file, b"keep me").unwrap();
    assert!(Memif::new(MemifConfig::new(&file, Role::Server, 0)).is_err());
    assert_eq!(std::fs::read(&file).unwrap(), b"keep me");
    std::fs::remove_file(&file).unwrap();
    // A stale socket: bound by a listener that is gone.
    let stale = std::os::unix::net::UnixListener::bind(&sock).unwrap();
    drop(stale);
    assert!(std::path::Path::new(&sock).exists());
    let m = memif(&sock, Role::Server);
    drop(m);
    assert!(!std::path::Path::new(&sock).exists());
}
