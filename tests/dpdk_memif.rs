//! Two OS processes, each with its own EAL (own --file-prefix, own core), talking over
//! net_memif through pmd::dpdk: the server sends numbered frames, the client echoes each one
//! (the received PktBuf is sent back as it is), the server checks every frame comes back intact
//! and in order, and both pools end with every slot free.
#![cfg(feature = "dpdk")]

#[path = "harness/dpdk_common.rs"]
mod dpdk_common;

use std::time::{Duration, Instant};

use bypass::pmd::dpdk::{Device, DeviceConfig, DpdkPool};
use bypass::pmd::{Port, MAX_BURST};
use dpdk_common::*;

const FRAMES: u32 = 20_000;

#[test]
fn memif_two_processes_echo() {
    let sock = format!("/tmp/bypass-memif-test-{}.sock", std::process::id());
    let sout = run_memif_pair("memif_child", &sock, "server", "client");
    assert!(sout.contains(&format!("server: {FRAMES} frames echoed intact")));
}

/// One side of the memif test; run by `memif_two_processes_echo` in a child process.
#[test]
#[ignore = "child process of memif_two_processes_echo"]
fn memif_child() {
    let role = std::env::var(ROLE).expect("role");
    let sock = std::env::var("BYPASS_MEMIF_SOCK").expect("socket");
    let server = role == "server";
    if !server {
        // The DPDK memif client fails its start when the server's socket is not there yet.
        let t0 = Instant::now();
        while !std::path::Path::new(&sock).exists() {
            assert!(
                t0.elapsed() < Duration::from_secs(20),
                "server socket never appeared"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    let eal = eal(if server { 0 } else { 1 }, &role);
    let pool = pool(&format!("memif-{role}"), 4096);
    let dpool = DpdkPool::new(&eal, &pool).expect("lend pool");
    let devargs = format!("net_memif0,role={role},id=0,socket={sock},socket-abstract=no");
    let name = Device::probe(&eal, &devargs).expect("probe memif");
    let (dev, mut ports) =
        Device::open(&eal, &name, &dpool, &DeviceConfig::default()).expect("open memif");
    let port = &mut ports[0];
    assert!(
        wait_link(port, Duration::from_secs(20)),
        "{role}: link never came up"
    );
    println!("{role}: link up {:?}", port.link());
    let mut rx = Vec::with_capacity(MAX_BURST);
    let deadline = Instant::now() + Duration::from_secs(60);
    if server {
        let mut next_tx = 0u32;
        let mut next_rx = 0u32;
        let mut txq = Vec::with_capacity(MAX_BURST);
        while next_rx < FRAMES {
            assert!(Instant::now() < deadline, "server: timed out at {next_rx}");
            while next_tx < FRAMES && next_tx - next_rx < 256 && txq.len() < 32 {
                let mut b = port.alloc_tx().expect("alloc");
                b.extend_from_slice(&frame(next_tx, 60 + (next_tx as usize % 1400)))
                    .unwrap();
                txq.push(b);
                next_tx += 1;
            }
            port.tx_burst(&mut txq);
            rx.clear();
            port.rx_burst(&mut rx, MAX_BURST);
            for b in rx.drain(..) {
                let want = frame(next_rx, 60 + (next_rx as usize % 1400));
                assert_eq!(&b[..], &want[..], "server: frame {next_rx} differs");
                next_rx += 1;
            }
        }
        println!("server: {FRAMES} frames echoed intact");
        // Tell the client it may close: a client that closes while its last frames are still
        // in the ring takes them with it.
        let mut done = vec![port.alloc_tx().expect("alloc")];
        done[0].extend_from_slice(&done_frame()).unwrap();
        while !done.is_empty() {
            assert!(Instant::now() < deadline, "server: could not send done");
            port.tx_burst(&mut done);
        }
        println!("server: port {:?} copies {}", port.stats(), port.copies());
        println!("server: device {:?}", dev.stats().unwrap());
        // Let the client drain before we close: it closes once it has seen `done`.
        wait_link_down(port, "server");
    } else {
        let mut echoed = 0u32;
        let mut txq = Vec::with_capacity(MAX_BURST);
        'run: loop {
            assert!(Instant::now() < deadline, "client: timed out at {echoed}");
            port.rx_burst(&mut txq, MAX_BURST);
            if let Some(i) = txq.iter().position(|b| is_done(b)) {
                assert_eq!(i, txq.len() - 1, "done comes last");
                txq.pop();
                while !txq.is_empty() {
                    echoed += port.tx_burst(&mut txq) as u32;
                }
                break 'run;
            }
            echoed += port.tx_burst(&mut txq) as u32;
        }
        assert_eq!(echoed, FRAMES);
        println!("client: echoed {echoed} copies {}", port.copies());
        assert_eq!(
            port.copies(),
            0,
            "echoing a received buffer copies nothing here"
        );
    }
    drop(ports);
    drop(dev);
    drop(dpool);
    println!("{role}: pool {:?}", pool.stats());
    assert_eq!(pool.stats().in_use, 0, "{role}: slots still held");
}
