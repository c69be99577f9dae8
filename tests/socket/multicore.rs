//! Shared-nothing scaling: one memif interface with two queue pairs, one stack per queue on
//! its own thread pinned to its own core (each with its own core slot, endpoint and UDP
//! port), both queues carrying traffic at the same time.

use crate::harness;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::Duration;

use bypass::pmd::memif::{Memif, MemifConfig, Role};
use bypass::socket::{Backend, Stack};

const QUEUES: u16 = 2;
// Four busy-polling threads share two cores here, so each round trip can wait for a
// scheduler time slice: keep the count small.
const MSGS: usize = 200;

fn memif(path: &std::path::Path, role: Role) -> Memif {
    let mut cfg = MemifConfig::new(path, role, 0);
    cfg.interfaces[0].queue_pairs = QUEUES;
    cfg.interfaces[0].buffer_size = 2048;
    Memif::new(cfg).expect("memif")
}

#[test]
fn two_cores_two_queues_in_parallel() {
    // Busy-polling stacks: one such test at a time in this binary (harness).
    let _pair = harness::one_pair_at_a_time();
    let path = std::env::temp_dir().join(format!("bypass-mc-{}.sock", std::process::id()));
    let _ = std::fs::remove_file(&path);
    let server = memif(&path, Role::Server);
    let client = memif(&path, Role::Client);
    assert!(server.wait_up(0, Duration::from_secs(10)), "memif link up");
    let cores = core_affinity::get_core_ids()
        .unwrap_or_default()
        .len()
        .max(1);
    // Both sides of a queue start together; all four threads overlap in time.
    let start = Arc::new(Barrier::new(2 * QUEUES as usize));
    let mut handles = Vec::new();
    for q in 0..QUEUES {
        let port = 7300 + q;
        let sport = server.port(0, q).unwrap();
        let cport = client.port(0, q).unwrap();
        let b = start.clone();
        handles.push(thread::spawn(move || {
            let stack = Stack::builder(Backend::Port(Box::new(sport)), Ipv4Addr::new(10, 77, 0, 1))
                .mac([2, 0, 0, 0, 1, q as u8])
                .static_arp(Ipv4Addr::new(10, 77, 0, 2), [2, 0, 0, 0, 2, q as u8])
                .udp_port(port)
                .mtu(1500)
                .pin_core(q as usize % cores)
                .build()
                .unwrap();
            b.wait();
            let sock = stack.listen().accept(Duration::from_secs(20)).unwrap();
            for _ in 0..MSGS {
                let m = sock.recv().unwrap();
                sock.send_bytes(m).unwrap();
            }
            // The client closes when it has every echo; its close completes once we
            // acknowledge it, so both ends see the whole exchange through.
            assert_eq!(sock.recv().unwrap_err(), bypass::socket::Error::Closed);
            let st = stack.stats();
            (
                q,
                "server",
                st.port.rx_packets,
                st.port.tx_packets,
                thread_cpu(),
            )
        }));
        let b = start.clone();
        handles.push(thread::spawn(move || {
            let stack = Stack::builder(Backend::Port(Box::new(cport)), Ipv4Addr::new(10, 77, 0, 2))
                .mac([2, 0, 0, 0, 2, q as u8])
                .static_arp(Ipv4Addr::new(10, 77, 0, 1), [2, 0, 0, 0, 1, q as u8])
                .udp_port(port)
                .mtu(1500)
                .pin_core(q as usize % cores)
                .build()
                .unwrap();
            b.wait();
            let sock = stack
                .connect(
                    SocketAddrV4::new(Ipv4Addr::new(10, 77, 0, 1), port),
                    Duration::from_secs(10),
                )
                .unwrap();
            for i in 0..MSGS {
                let msg = format!("queue {q} message {i}");
                sock.send(msg.as_bytes()).unwrap();
                assert_eq!(&sock.recv().unwrap()[..], msg.as_bytes());
            }
            sock.close().unwrap();
            let st = stack.stats();
            (
                q,
                "client",
                st.port.rx_packets,
                st.port.tx_packets,
                thread_cpu(),
            )
        }));
    }
    let results: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    for (q, side, rx, tx, cpu) in &results {
        println!("queue {q} {side}: rx {rx} frames, tx {tx} frames, on CPU {cpu}");
        assert!(
            *rx >= MSGS as u64 && *tx >= MSGS as u64,
            "queue {q} {side} carried traffic"
        );
    }
    // Each queue's stacks ran on the core they were pinned to.
    if cores >= 2 {
        for (q, _, _, _, cpu) in &results {
            assert_eq!(*cpu, *q as i32, "queue {q} ran on core {q}");
        }
    }
    drop((server, client));
    let _ = std::fs::remove_file(&path);
}

fn thread_cpu() -> i32 {
    // SAFETY: sched_getcpu takes no arguments and only reads the calling thread's CPU.
    unsafe { libc::sched_getcpu() }
}
