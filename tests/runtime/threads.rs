//! Runtimes on their own threads: pinning, core slots, and two real poll loops on two
//! threads exchanging datagrams over the in-process pair with the system clock.

use crate::runtime_util;

use std::net::SocketAddrV4;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bypass::mem::{current_core, CoreError};
use bypass::pmd::Port;
use bypass::runtime::clock::SystemClock;
use bypass::runtime::net::NetConfig;
use bypass::runtime::{Runtime, RuntimeConfig, RuntimeError};
use bypass::time::ManualClock;
use runtime_util::{pair, Recorder, IP_A, IP_B};

/// The CPUs this thread may run on, from /proc (no unsafe needed).
fn cpus_allowed() -> String {
    let s = std::fs::read_to_string("/proc/thread-self/status").unwrap();
    s.lines()
        .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
        .unwrap()
        .trim()
        .to_string()
}

/// The CPUs this process may use (the test may run under taskset).
fn allowed_cpus() -> Vec<usize> {
    let list = cpus_allowed();
    let mut v = Vec::new();
    for part in list.split(',') {
        match part.split_once('-') {
            Some((a, b)) => v.extend(a.parse::<usize>().unwrap()..=b.parse::<usize>().unwrap()),
            None => v.push(part.parse().unwrap()),
        }
    }
    v
}

#[test]
fn runtime_pins_its_thread_and_holds_a_core_slot() {
    let cpu = *allowed_cpus().last().unwrap();
    std::thread::spawn(move || {
        let (pa, _pb) = pair(8, 64);
        let mut cfg = RuntimeConfig::new(NetConfig::new(pa.info().mac, IP_A));
        cfg.pin_core = Some(cpu);
        cfg.core_slot = Some(40);
        let rt = Runtime::new(cfg, pa, Recorder::default(), ManualClock::new(0)).unwrap();
        assert_eq!(cpus_allowed(), cpu.to_string(), "pinned");
        assert_eq!(current_core(), Some(40), "core slot held");
        drop(rt);
        assert_eq!(current_core(), None, "core slot released with the runtime");
    })
    .join()
    .unwrap();
}

#[test]
fn bad_pin_and_taken_core_slot_are_errors() {
    std::thread::spawn(|| {
        let (pa, _pb) = pair(8, 64);
        let mut cfg = RuntimeConfig::new(NetConfig::new(pa.info().mac, IP_A));
        cfg.pin_core = Some(100_000);
        let r = Runtime::new(cfg, pa, Recorder::default(), ManualClock::new(0));
        assert!(matches!(r, Err(RuntimeError::Pin(100_000))));

        let (pa, pb) = pair(8, 64);
        let mut cfg = RuntimeConfig::new(NetConfig::new(pa.info().mac, IP_A));
        cfg.core_slot = Some(41);
        let _a = Runtime::new(cfg.clone(), pa, Recorder::default(), ManualClock::new(0)).unwrap();
        let r = Runtime::new(cfg, pb, Recorder::default(), ManualClock::new(0));
        assert!(matches!(
            r,
            Err(RuntimeError::CoreSlot(CoreError::AlreadyHolding(41)))
        ));
    })
    .join()
    .unwrap();
}

/// A and B each run a real poll loop on their own (pinned, when there are two CPUs) thread
/// with the system clock. A sends 10 000 datagrams as fast as the transmit queue lets it;
/// B echoes them in place; A counts the echoes. Nothing may be lost: the pair's rings are
/// small (64), so this exercises backpressure and the keep-unsent path under real timing.
#[test]
fn two_threads_exchange_datagrams() {
    const N: u64 = 10_000;
    let cpus = allowed_cpus();
    let (pa, pb) = pair(64, 1024);
    let done = Arc::new(AtomicBool::new(false));
    let clock = SystemClock::new();

    let b_done = done.clone();
    let b_cpu = cpus.get(1).copied();
    let b = std::thread::spawn(move || {
        let mut cfg = RuntimeConfig::new(NetConfig::new(pb.info().mac, IP_B));
        cfg.pin_core = b_cpu;
        cfg.core_slot = Some(43);
        let mut rt = Runtime::new(
            cfg,
            pb,
            Recorder {
                echo: true,
                ..Default::default()
            },
            clock,
        )
        .unwrap();
        rt.net_mut().bind(8000);
        rt.run(&b_done);
        (rt.handler().seen.len() as u64, *rt.net_counters())
    });

    let a_cpu = cpus.first().copied();
    let a = std::thread::spawn(move || {
        let mut cfg = RuntimeConfig::new(NetConfig::new(pa.info().mac, IP_A));
        cfg.pin_core = a_cpu;
        cfg.core_slot = Some(42);
        let mut rt = Runtime::new(cfg, pa, Recorder::default(), clock).unwrap();
        rt.net_mut().bind(7000);
        let dst = SocketAddrV4::new(IP_B, 8000);
        let mut sent = 0u64;
        let start = Instant::now();
        while (rt.handler().seen.len() as u64) < N {
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "stalled: sent {sent}, echoed {}",
                rt.handler().seen.len()
            );
            while sent < N && rt.net().tx_space() > 0 && rt.net().arp_waiting() < 32 {
                let ok = rt.with_io(|_, io| {
                    let Ok(mut buf) = io.alloc_tx() else {
                        return false;
                    };
                    buf.extend_from_slice(&sent.to_le_bytes()).unwrap();
                    io.send_udp(7000, dst, buf).is_ok()
                });
                if !ok {
                    break;
                }
                sent += 1;
            }
            rt.poll_once();
        }
        let mut got: Vec<u64> = rt
            .handler()
            .seen
            .iter()
            .map(|s| u64::from_le_bytes(s.payload[..8].try_into().unwrap()))
            .collect();
        got.sort_unstable();
        (got, *rt.net_counters())
    });

    let (got, ca) = a.join().unwrap();
    done.store(true, Ordering::Relaxed);
    let (b_seen, cb) = b.join().unwrap();
    assert_eq!(
        got,
        (0..N).collect::<Vec<u64>>(),
        "every datagram echoed once"
    );
    assert_eq!(b_seen, N);
    assert_eq!(ca.rx_drops() + cb.rx_drops(), 0);
    assert_eq!(ca.arp_pending_full + ca.tx_full, 0);
}
