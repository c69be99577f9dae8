//! A sleeping stack (`IdlePoll::Sleep`) allocates nothing per sleep or wake-up: a memif server
//! stack idles on a live connection whose keepalives (every 100 ms here) wake it.

use std::net::{Ipv4Addr, SocketAddrV4};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use crate::counting;
use crate::harness;

use bypass::pmd::memif::Role;
use bypass::proto::ConnectionConfig;
use bypass::socket::{Backend, IdlePoll, Stack, DEFAULT_UDP_PORT};

const SERVER: Ipv4Addr = Ipv4Addr::new(10, 79, 0, 1);
const CLIENT: Ipv4Addr = Ipv4Addr::new(10, 79, 0, 2);
const SERVER_MAC: [u8; 6] = [0x02, 0x79, 0, 0, 0, 1];
const CLIENT_MAC: [u8; 6] = [0x02, 0x79, 0, 0, 0, 2];

#[test]
fn sleeping_and_waking_allocate_nothing() {
    let _pair = harness::one_pair_at_a_time();
    let path = std::env::temp_dir().join(format!("bypass-alloc-idle-{}.sock", std::process::id()));
    let _ = std::fs::remove_file(&path);
    let backend = |role| Backend::Memif {
        socket: path.clone(),
        role,
        id: 0,
    };
    // Keepalives every idle_timeout / 3: frames that wake the sleeping server.
    let conn = || ConnectionConfig {
        idle_timeout: Duration::from_millis(300),
        ..ConnectionConfig::default()
    };
    let sb = backend(Role::Server);
    let (up_tx, up_rx) = mpsc::channel();
    let srv = thread::spawn(move || {
        let stack = Stack::builder(sb, SERVER)
            .mac(SERVER_MAC)
            .static_arp(CLIENT, CLIENT_MAC)
            .connection_config(conn())
            .idle_poll(IdlePoll::default())
            .link_timeout(Duration::from_secs(20))
            .build()
            .expect("server stack");
        let l = stack.listen();
        up_tx.send(()).unwrap();
        let sock = l.accept(Duration::from_secs(20)).expect("accept");
        // Warm up: the descriptor set and every sleeping path reach their capacity.
        stack.poll_for(Duration::from_millis(300));
        let before = stack.stats().runtime;
        let a0 = counting::allocs();
        stack.poll_for(Duration::from_secs(1));
        let allocs = counting::allocs() - a0;
        let after = stack.stats().runtime;
        drop(sock);
        (
            allocs,
            after.sleeps - before.sleeps,
            after.sleep_wakeups - before.sleep_wakeups,
        )
    });
    harness::settle("the memif server's socket to appear", || path.exists());
    let stack = Stack::builder(backend(Role::Client), CLIENT)
        .mac(CLIENT_MAC)
        .static_arp(SERVER, SERVER_MAC)
        .connection_config(conn())
        .link_timeout(Duration::from_secs(20))
        .build()
        .expect("client stack");
    up_rx
        .recv_timeout(Duration::from_secs(30))
        .expect("server up");
    let _sock = stack
        .connect(
            SocketAddrV4::new(SERVER, DEFAULT_UDP_PORT),
            Duration::from_secs(20),
        )
        .expect("connect");
    let end = Instant::now() + Duration::from_secs(60);
    while !srv.is_finished() && Instant::now() < end {
        stack.poll_for(Duration::from_millis(5));
    }
    let (allocs, sleeps, woken) = srv.join().expect("server thread");
    let _ = std::fs::remove_file(&path);
    println!("1 s idle on a live connection: {sleeps} sleeps, {woken} woken by a frame, {allocs} allocations");
    assert!(sleeps >= 10, "the server slept only {sleeps} times in 1 s");
    assert!(woken >= 1, "no keepalive woke the server");
    assert_eq!(allocs, 0, "{allocs} allocations in {sleeps} sleeps");
}
