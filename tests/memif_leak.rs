//! No leak across connections: a server that sees its client go away and come back twenty
//! times ends with the same file descriptors, the same memory mappings and every buffer back
//! in its pool. (Its own test binary, so no other test opens descriptors meanwhile.)

use std::time::{Duration, Instant};

use bypass::pmd::memif::{InterfaceConfig, Memif, MemifConfig, MemifPort, Role};
use bypass::pmd::Port;

fn fds() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

fn maps() -> usize {
    std::fs::read_to_string("/proc/self/maps")
        .unwrap()
        .lines()
        .count()
}

fn wait(p: &mut MemifPort, up: bool) {
    let end = Instant::now() + Duration::from_secs(10);
    while p.link().is_up() != up {
        assert!(
            Instant::now() < end,
            "link never went {}",
            if up { "up" } else { "down" }
        );
        std::thread::sleep(Duration::from_millis(1));
    }
}

fn cfg(sock: &str, role: Role) -> MemifConfig {
    let mut c = MemifConfig::new(sock, role, 0);
    let mut ic = InterfaceConfig::new(0);
    ic.log2_ring_size = 6;
    ic.extra_buffers = 64;
    c.interfaces = vec![ic];
    c.reconnect_interval = Duration::from_millis(10);
    c
}

/// Bounce `n` frames client -> server -> client.
fn traffic(c: &mut MemifPort, s: &mut MemifPort, n: usize) {
    let mut v = vec![];
    for _ in 0..n {
        let mut b = c.alloc_tx().unwrap();
        b.append(100).unwrap().fill(7);
        v.push(b);
    }
    assert_eq!(c.tx_burst(&mut v), n);
    let end = Instant::now() + Duration::from_secs(5);
    while v.len() < n {
        s.rx_burst(&mut v, 64);
        assert!(Instant::now() < end);
    }
    assert_eq!(s.tx_burst(&mut v), n);
    let mut back = vec![];
    while back.len() < n {
        c.rx_burst(&mut back, 64);
        assert!(Instant::now() < end);
    }
    assert!(back.iter().all(|f| f.len() == 100));
}

#[test]
fn memif_reconnect_cycles_leak_nothing() {
    let sock = format!("/tmp/bpx-leak-{}.sock", std::process::id());
    let server = Memif::new(cfg(&sock, Role::Server)).unwrap();
    let pool = server.pool(0).unwrap();
    let mut s = server.port(0, 0).unwrap();
    let mut baseline = None;
    for cycle in 0..20 {
        let client = Memif::new(cfg(&sock, Role::Client)).unwrap();
        let mut c = client.port(0, 0).unwrap();
        wait(&mut c, true);
        wait(&mut s, true);
        traffic(&mut c, &mut s, 32);
        // Half the time a polite goodbye (DISCONNECT), half the time the socket just closes
        // after the port is gone.
        if cycle % 2 == 0 {
            drop(client);
            drop(c);
        } else {
            drop(c);
            drop(client);
        }
        wait(&mut s, false);
        let now = (fds(), maps(), pool.stats().in_use);
        println!(
            "cycle {cycle}: fds {} maps {} server pool in use {}",
            now.0, now.1, now.2
        );
        assert_eq!(now.2, 0, "server buffers all back");
        match baseline {
            None => baseline = Some(now),
            Some(b) => assert_eq!(now, b, "cycle {cycle}: fds/maps/buffers grew"),
        }
    }
    assert_eq!(server.connects(0), 20);
}
