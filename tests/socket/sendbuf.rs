//! Zero-copy send ([`Socket::send_buf`]) end to end over an in-process port pair: messages of
//! every size arrive intact; the frame the port transmits lies in the very buffer the
//! application wrote (no copy on first transmission); retransmissions under loss and
//! corruption deliver the original bytes; misuse gives clear errors and leaks no buffer.

use std::collections::HashSet;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use crate::harness;
use crate::port_spy;
use port_spy::Spy;

use bypass::mem::{HugePages, Pool, PoolConfig};
use bypass::pmd::faults::{FaultConfig, FaultSpec, Faults, Loss};
use bypass::pmd::pair::{pair, PairPort};
use bypass::pmd::Port;
use bypass::socket::{Backend, Error, Socket, Stack};

const SERVER: Ipv4Addr = Ipv4Addr::new(10, 97, 0, 1);
const CLIENT: Ipv4Addr = Ipv4Addr::new(10, 97, 0, 2);

fn ports(slots: u32) -> (PairPort, PairPort, Pool) {
    let pool = Pool::new(&PoolConfig {
        hugepages: HugePages::Never,
        ..PoolConfig::new("socket-sendbuf", slots, 9216 + 256)
    })
    .unwrap();
    let (a, b) = pair(&pool, 1024, 9000).unwrap();
    (a, b, pool)
}

fn byte(seed: u8, i: usize) -> u8 {
    (i as u8).wrapping_mul(31).wrapping_add(seed) ^ (i >> 8) as u8
}

/// An echo server on its own thread: every message goes back as received.
fn echo_server(port: Box<dyn Port>) -> (thread::JoinHandle<u64>, mpsc::Receiver<()>) {
    let (up_tx, up_rx) = mpsc::channel();
    let h = thread::spawn(move || {
        let stack = Stack::builder(Backend::Port(port), SERVER)
            .max_message(4 << 20)
            .build()
            .unwrap();
        let listener = stack.listen();
        up_tx.send(()).unwrap();
        let sock = listener.accept(Duration::from_secs(20)).unwrap();
        sock.set_timeout(Some(Duration::from_secs(60)));
        let mut n = 0;
        loop {
            match sock.recv() {
                Ok(m) => {
                    sock.send_bytes(m).unwrap();
                    n += 1;
                }
                Err(Error::Closed) => return n,
                Err(e) => panic!("server recv: {e}"),
            }
        }
    });
    (h, up_rx)
}

/// Write a patterned message with `send_buf` and send it; returns the end address of every
/// chunk (where its payload lies in memory).
fn send_pattern(sock: &Socket, len: usize, seed: u8) -> Vec<usize> {
    let mut b = sock.send_buf(len).unwrap();
    assert_eq!(b.len(), len);
    let seg = b.segment_len();
    let mut ends = Vec::new();
    for (k, c) in b.chunks_mut().enumerate() {
        assert!(
            c.len() == seg || (c.len() == len - k * seg),
            "chunk {k} of {}",
            c.len()
        );
        for (j, x) in c.iter_mut().enumerate() {
            *x = byte(seed, k * seg + j);
        }
        ends.push(c.as_ptr() as usize + c.len());
    }
    b.send().unwrap();
    ends
}

fn check(msg: &[u8], len: usize, seed: u8) {
    assert_eq!(msg.len(), len);
    if let Some(i) = (0..len).find(|&i| msg[i] != byte(seed, i)) {
        panic!("{len}-byte message differs first at byte {i}");
    }
}

#[test]
fn send_buf_messages_arrive_intact_and_go_out_of_the_written_buffers() {
    let _pair = harness::one_pair_at_a_time();
    let (a, b, pool) = ports(8192);
    let (server, up) = echo_server(Box::new(a));
    up.recv().unwrap();
    let ends = Arc::new(Mutex::new(Vec::new()));
    let spy = Spy {
        inner: b,
        ends: ends.clone(),
    };
    let stack = Stack::builder(Backend::Port(Box::new(spy)), CLIENT)
        .max_message(4 << 20)
        .build()
        .unwrap();
    let sock = stack
        .connect(SocketAddrV4::new(SERVER, 7200), Duration::from_secs(10))
        .unwrap();
    let seg = sock.send_buf(1).unwrap().segment_len();
    assert!(seg > 8000, "one chunk fills a 9000-byte datagram: {seg}");
    let sizes = [0usize, 1, 100, seg, seg + 1, 65536, 1 << 20, 3 * seg - 7];
    for (k, &len) in sizes.iter().enumerate() {
        ends.lock().unwrap().clear();
        let zc0 = sock.tx_zero_copy();
        let chunk_ends = send_pattern(&sock, len, k as u8);
        let back = sock.recv().unwrap();
        check(&back, len, k as u8);
        let zc = sock.tx_zero_copy() - zc0;
        let sent: HashSet<usize> = ends.lock().unwrap().iter().copied().collect();
        let same = chunk_ends.iter().filter(|e| sent.contains(e)).count();
        println!(
            "{len} B: {} chunks, {zc} sent without a copy, {same} frames ended in a chunk",
            chunk_ends.len()
        );
        assert_eq!(zc as usize, chunk_ends.len(), "every chunk went out itself");
        assert_eq!(
            same,
            chunk_ends.len(),
            "each chunk's own memory was transmitted"
        );
    }
    sock.close().unwrap();
    assert_eq!(server.join().unwrap(), sizes.len() as u64);
    drop(stack);
    assert_eq!(pool.stats().in_use, 0, "every buffer came back");
}

#[test]
fn send_buf_under_loss_and_corruption_delivers_the_written_bytes() {
    let _pair = harness::one_pair_at_a_time();
    let (a, b, _pool) = ports(8192);
    let (server, up) = echo_server(Box::new(a));
    up.recv().unwrap();
    // The client's transmissions (the shared, zero-copy frames) are lost and corrupted;
    // corruption must copy the frame first, or the retransmission would carry the flipped
    // bit and the echo would differ.
    let faulty = Faults::new(
        b,
        FaultConfig {
            seed: 0x5e11,
            tx: FaultSpec {
                loss: Loss::Random { p: 0.03 },
                corrupt: 0.03,
                corrupt_skip: 14 + 20 + 8 + 48,
                ..FaultSpec::default()
            },
            rx: FaultSpec::default(),
        },
    )
    .unwrap();
    let stack = Stack::builder(Backend::Port(Box::new(faulty)), CLIENT)
        .max_message(4 << 20)
        .build()
        .unwrap();
    let sock = stack
        .connect(SocketAddrV4::new(SERVER, 7200), Duration::from_secs(10))
        .unwrap();
    sock.set_timeout(Some(Duration::from_secs(60)));
    let sizes = [1usize << 20, 200_000, 9000, 1, 500_000];
    for (k, &len) in sizes.iter().enumerate() {
        send_pattern(&sock, len, 40 + k as u8);
        let back = sock.recv().unwrap();
        check(&back, len, 40 + k as u8);
    }
    let st = sock.stats().unwrap();
    println!(
        "retransmits {}, zero-copy {}",
        st.retransmits,
        sock.tx_zero_copy()
    );
    assert!(st.retransmits > 0, "the loss was recovered: {st:?}");
    assert!(sock.tx_zero_copy() > 0);
    sock.close().unwrap();
    assert_eq!(server.join().unwrap(), sizes.len() as u64);
}

/// Wait until the pool (shared with the server's stack, whose packets in flight hold slots
/// too) is back to at most `idle` buffers in use, polling our stack meanwhile; `what` names
/// the check. The wait ends as soon as that holds; the deadline (harness::SETTLE) only bounds
/// a failure, and is generous because on a busy machine the server's thread (which frees the
/// slots its packets hold) can wait seconds for a core: 2 s was lost there.
fn settles(stack: &Stack, pool: &Pool, idle: u64, what: &str) {
    let waited = harness::wait_for(
        &format!("{what}: the pool back to {idle} buffers in use"),
        harness::SETTLE,
        || {
            stack.poll();
            pool.stats().in_use <= idle
        },
    );
    match waited {
        Ok(took) => println!("{what}: settled in {took:?}"),
        Err(e) => panic!("{e} (still {} in use)", pool.stats().in_use),
    }
}

#[test]
fn send_buf_misuse_gives_clear_errors_and_leaks_nothing() {
    let _pair = harness::one_pair_at_a_time();
    let (a, b, pool) = ports(512);
    let (server, up) = echo_server(Box::new(a));
    up.recv().unwrap();
    let stack = Stack::builder(Backend::Port(Box::new(b)), CLIENT)
        .max_message(64 << 20)
        .build()
        .unwrap();
    let sock = stack
        .connect(SocketAddrV4::new(SERVER, 7200), Duration::from_secs(10))
        .unwrap();
    let idle = pool.stats().in_use;
    // Past the end.
    let mut b = sock.send_buf(100).unwrap();
    assert_eq!(b.write_at(0, &[1; 100]), Ok(()));
    let e = b.write_at(90, &[0; 11]).unwrap_err();
    assert!(matches!(e, Error::SendBuf(_)), "{e}");
    assert!(e.to_string().contains("past the end"), "{e}");
    assert_eq!(b.write_at(usize::MAX, &[0; 2]).unwrap_err(), e);
    drop(b);
    settles(&stack, &pool, idle, "an unsent SendBuf returns its buffers");
    // More buffers than the pool has.
    let e = sock.send_buf(600 * 9000).unwrap_err();
    assert_eq!(e, Error::PoolExhausted, "{e}");
    settles(&stack, &pool, idle, "a refused send_buf keeps nothing");
    // Over the maximum message.
    let e = sock.send_buf(65 << 20).unwrap_err();
    assert!(matches!(e, Error::MessageTooLarge { .. }), "{e}");
    // A written message spanning chunks, sent after all that.
    let mut b = sock.send_buf(20_000).unwrap();
    let data: Vec<u8> = (0..20_000).map(|i| byte(9, i)).collect();
    b.write_at(0, &data[..5]).unwrap();
    b.write_at(5, &data[5..]).unwrap();
    assert_eq!(b.chunks().map(<[u8]>::len).sum::<usize>(), 20_000);
    b.send().unwrap();
    check(&sock.recv().unwrap(), 20_000, 9);
    // After a local shutdown: refused.
    sock.shutdown().unwrap();
    let e = sock.send_buf(10).unwrap_err();
    assert_eq!(e, Error::Closed, "{e}");
    assert_eq!(server.join().unwrap(), 1);
}
