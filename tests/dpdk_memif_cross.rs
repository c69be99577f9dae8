//! pmd::dpdk (DPDK's net_memif, server) in one process talking to our pure-Rust pmd::memif
//! (client) in another: the DPDK side sends numbered frames, the memif side echoes each one,
//! the DPDK side checks every frame comes back intact and in order; both pools end with every
//! slot free. And the other way round: DPDK's client, our server (which sends and checks).
//!
//! Verified locally (3 runs pass) against `memif` at c3d8107 merged into a scratch tree.
#![cfg(feature = "dpdk")]

#[path = "harness/dpdk_common.rs"]
mod dpdk_common;

use std::time::{Duration, Instant};

use bypass::pmd::dpdk::{Device, DeviceConfig, DpdkPool};
use bypass::pmd::memif::{Memif, MemifConfig, Role};
use bypass::pmd::{Port, MAX_BURST};
use dpdk_common::*;

const FRAMES: u32 = 20_000;

fn len_of(seq: u32) -> usize {
    60 + (seq as usize % 1400)
}

#[test]
fn dpdk_memif_server_with_rust_memif_client() {
    let sock = format!("/tmp/bypass-memif-cross-{}.sock", std::process::id());
    let sout = run_memif_pair("cross_child", &sock, "dpdk-server", "rust-client");
    assert!(sout.contains(&format!("dpdk-server: {FRAMES} frames echoed intact")));
}

/// The other way round: DPDK's net_memif as the client (its memfd regions, its eventfds)
/// and our server, which checks what a peer passes (interrupt fds must be eventfds, the
/// regions within `MemifConfig::peer_region_limit`): a real peer passes every check.
#[test]
fn dpdk_memif_client_with_rust_memif_server() {
    let sock = format!("/tmp/bypass-memif-cross-r-{}.sock", std::process::id());
    let sout = run_memif_pair("cross_child", &sock, "rust-server", "dpdk-client");
    assert!(sout.contains(&format!("rust-server: {FRAMES} frames echoed intact")));
    assert!(sout.contains("interrupts_skipped 0"), "{sout}");
}

/// Send FRAMES numbered frames on `port`, check each comes back intact and in order, then
/// send the done frame. `who` names the side in messages.
fn send_and_check(port: &mut dyn Port, who: &str, deadline: Instant) {
    let mut rx = Vec::with_capacity(MAX_BURST);
    let (mut next_tx, mut next_rx) = (0u32, 0u32);
    let mut txq = Vec::with_capacity(MAX_BURST);
    while next_rx < FRAMES {
        assert!(Instant::now() < deadline, "{who}: timed out at {next_rx}");
        while next_tx < FRAMES && next_tx - next_rx < 256 && txq.len() < 32 {
            let mut b = port.alloc_tx().expect("alloc");
            b.extend_from_slice(&frame(next_tx, len_of(next_tx)))
                .unwrap();
            txq.push(b);
            next_tx += 1;
        }
        port.tx_burst(&mut txq);
        rx.clear();
        port.rx_burst(&mut rx, MAX_BURST);
        for b in rx.drain(..) {
            assert_eq!(
                &b[..],
                &frame(next_rx, len_of(next_rx))[..],
                "frame {next_rx}"
            );
            next_rx += 1;
        }
    }
    println!("{who}: {FRAMES} frames echoed intact");
    // Tell the client it may close (it would take frames still in the ring with it).
    let mut done = vec![port.alloc_tx().expect("alloc")];
    done[0].extend_from_slice(&done_frame()).unwrap();
    while !done.is_empty() {
        assert!(Instant::now() < deadline, "{who}: could not send done");
        port.tx_burst(&mut done);
    }
}

/// Echo every frame on `port` until the done frame; returns how many were echoed.
fn echo_until_done(port: &mut dyn Port, who: &str, deadline: Instant) -> u32 {
    let mut rx = Vec::with_capacity(MAX_BURST);
    let mut echoed = 0u32;
    loop {
        assert!(Instant::now() < deadline, "{who}: timed out at {echoed}");
        port.rx_burst(&mut rx, MAX_BURST);
        if let Some(i) = rx.iter().position(|b| is_done(b)) {
            assert_eq!(i, rx.len() - 1, "done comes last");
            rx.pop();
            while !rx.is_empty() {
                echoed += port.tx_burst(&mut rx) as u32;
            }
            return echoed;
        }
        echoed += port.tx_burst(&mut rx) as u32;
    }
}

/// One side of the cross tests, run in a child process.
#[test]
#[ignore = "child process of the dpdk_memif_* tests"]
fn cross_child() {
    let role = std::env::var(ROLE).expect("role");
    let sock = std::env::var("BYPASS_MEMIF_SOCK").expect("socket");
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut rx = Vec::with_capacity(MAX_BURST);
    if role == "rust-server" {
        let memif = Memif::new(MemifConfig::new(&sock, Role::Server, 0)).expect("memif server");
        let mut port = memif.port(0, 0).expect("port");
        assert!(
            memif.wait_up(0, Duration::from_secs(30)),
            "DPDK client never connected: {:?}",
            memif.last_error(0)
        );
        send_and_check(&mut port, "rust-server", deadline);
        println!(
            "rust-server: {:?} interrupts_skipped {} unsealed_regions {} refused {}",
            port.stats(),
            memif.interrupts_skipped(0),
            memif.unsealed_regions(0),
            memif.refused()
        );
        wait_link_down(&mut port, "rust-server");
        return;
    }
    if role == "dpdk-client" {
        // The server child binds the socket; DPDK's client connects when the device starts.
        while !std::path::Path::new(&sock).exists() {
            assert!(Instant::now() < deadline, "no server socket");
            std::thread::sleep(Duration::from_millis(10));
        }
        let eal = eal(0, &role);
        let pool = pool("cross-dpdk-c", 4096);
        let dpool = DpdkPool::new(&eal, &pool).expect("lend pool");
        let devargs = format!("net_memif0,role=client,id=0,socket={sock},socket-abstract=no");
        let name = Device::probe(&eal, &devargs).expect("probe memif");
        let (dev, mut ports) =
            Device::open(&eal, &name, &dpool, &DeviceConfig::default()).expect("open memif");
        let port = &mut ports[0];
        assert!(
            wait_link(port, Duration::from_secs(30)),
            "link never came up"
        );
        let echoed = echo_until_done(port, "dpdk-client", deadline);
        assert_eq!(echoed, FRAMES);
        println!("dpdk-client: echoed {echoed}; {:?}", port.stats());
        drop(ports);
        drop(dev);
        drop(dpool);
        assert_eq!(pool.stats().in_use, 0, "{:?}", pool.stats());
        return;
    }
    if role == "dpdk-server" {
        let eal = eal(0, &role);
        let pool = pool("cross-dpdk", 4096);
        let dpool = DpdkPool::new(&eal, &pool).expect("lend pool");
        let devargs = format!("net_memif0,role=server,id=0,socket={sock},socket-abstract=no");
        let name = Device::probe(&eal, &devargs).expect("probe memif");
        let (dev, mut ports) =
            Device::open(&eal, &name, &dpool, &DeviceConfig::default()).expect("open memif");
        let port = &mut ports[0];
        assert!(
            wait_link(port, Duration::from_secs(30)),
            "link never came up"
        );
        let (mut next_tx, mut next_rx) = (0u32, 0u32);
        let mut txq = Vec::with_capacity(MAX_BURST);
        while next_rx < FRAMES {
            assert!(
                Instant::now() < deadline,
                "dpdk-server: timed out at {next_rx}"
            );
            while next_tx < FRAMES && next_tx - next_rx < 256 && txq.len() < 32 {
                let mut b = port.alloc_tx().expect("alloc");
                b.extend_from_slice(&frame(next_tx, len_of(next_tx)))
                    .unwrap();
                txq.push(b);
                next_tx += 1;
            }
            port.tx_burst(&mut txq);
            rx.clear();
            port.rx_burst(&mut rx, MAX_BURST);
            for b in rx.drain(..) {
                assert_eq!(
                    &b[..],
                    &frame(next_rx, len_of(next_rx))[..],
                    "frame {next_rx}"
                );
                next_rx += 1;
            }
        }
        println!("dpdk-server: {FRAMES} frames echoed intact");
        // Tell the client it may close (it would take frames still in the ring with it).
        let mut done = vec![port.alloc_tx().expect("alloc")];
        done[0].extend_from_slice(&done_frame()).unwrap();
        while !done.is_empty() {
            assert!(
                Instant::now() < deadline,
                "dpdk-server: could not send done"
            );
            port.tx_burst(&mut done);
        }
        println!("dpdk-server: {:?} copies {}", port.stats(), port.copies());
        // Let the client drain before we close: it closes once it has seen `done`.
        wait_link_down(port, "dpdk-server");
        drop(ports);
        drop(dev);
        drop(dpool);
        assert_eq!(pool.stats().in_use, 0, "{:?}", pool.stats());
    } else {
        // The pure-Rust client retries until the DPDK server listens.
        let memif = Memif::new(MemifConfig::new(&sock, Role::Client, 0)).expect("memif client");
        assert!(
            memif.wait_up(0, Duration::from_secs(30)),
            "memif never connected"
        );
        let mut port = memif.port(0, 0).expect("port");
        let mut echoed = 0u32;
        'run: loop {
            assert!(
                Instant::now() < deadline,
                "rust-client: timed out at {echoed}"
            );
            port.rx_burst(&mut rx, MAX_BURST);
            if let Some(i) = rx.iter().position(|b| is_done(b)) {
                assert_eq!(i, rx.len() - 1, "done comes last");
                rx.pop();
                while !rx.is_empty() {
                    echoed += port.tx_burst(&mut rx) as u32;
                }
                break 'run;
            }
            echoed += port.tx_burst(&mut rx) as u32;
        }
        assert_eq!(echoed, FRAMES);
        println!("rust-client: echoed {echoed}; {:?}", port.stats());
    }
}
