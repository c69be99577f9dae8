//! The socket API end to end: two stacks (each on its own thread, as in production each
//! owns its core) over an in-process port pair; and misuse that must give clear errors.

use std::net::{Ipv4Addr, SocketAddrV4};
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use bypass::mem::{HugePages, Pool, PoolConfig};
use bypass::pmd::pair::{pair, PairPort};
use bypass::socket::{Backend, Error, Stack};

const SERVER: Ipv4Addr = Ipv4Addr::new(10, 99, 0, 1);
const CLIENT: Ipv4Addr = Ipv4Addr::new(10, 99, 0, 2);

fn ports() -> (PairPort, PairPort, Pool) {
    let pool = Pool::new(&PoolConfig {
        hugepages: HugePages::Never,
        ..PoolConfig::new("socket-test", 8192, 9216 + 256)
    })
    .unwrap();
    let (a, b) = pair(&pool, 1024, 9000).unwrap();
    (a, b, pool)
}

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

#[test]
fn echo_messages_of_every_size() {
    let (a, b, pool) = ports();
    let (up_tx, up_rx) = mpsc::channel();
    let server = thread::spawn(move || {
        let stack = Stack::builder(Backend::Port(Box::new(a)), SERVER)
            .build()
            .unwrap();
        let listener = stack.listen();
        up_tx.send(()).unwrap();
        let sock = listener.accept(Duration::from_secs(20)).unwrap();
        let mut n = 0;
        loop {
            match sock.recv() {
                Ok(m) => {
                    sock.send_bytes(m).unwrap();
                    n += 1;
                }
                Err(Error::Closed) => break,
                Err(e) => panic!("server recv: {e}"),
            }
        }
        n
    });
    up_rx.recv().unwrap();
    let stack = Stack::builder(Backend::Port(Box::new(b)), CLIENT)
        .build()
        .unwrap();
    let sock = stack
        .connect(SocketAddrV4::new(SERVER, 7200), Duration::from_secs(10))
        .unwrap();
    let sizes = [0usize, 1, 64, 1400, 8972, 8973, 65536, 1 << 20, 4 << 20];
    for (k, &len) in sizes.iter().enumerate() {
        let msg = pattern(len, k as u8);
        sock.send(&msg).unwrap();
        let back = sock.recv().unwrap();
        assert_eq!(back.len(), len, "size {len}");
        assert!(back[..] == msg[..], "payload of {len} bytes changed");
    }
    let st = sock.stats().unwrap();
    assert!(st.rx_messages >= sizes.len() as u64, "{st:?}");
    if let Err(e) = sock.close() {
        panic!("client close: {e}; stack {:?}", stack.stats());
    }
    assert_eq!(server.join().unwrap(), sizes.len());
    drop(stack);
    assert_eq!(pool.stats().in_use, 0, "every packet buffer came back");
}

#[test]
fn connecting_to_nobody_times_out_clearly() {
    let (a, b, _pool) = ports();
    // The peer end exists (link up) but no stack runs on it: nobody answers.
    let silent = thread::spawn(move || {
        thread::sleep(Duration::from_millis(1500));
        drop(a);
    });
    let stack = Stack::builder(Backend::Port(Box::new(b)), CLIENT)
        .static_arp(SERVER, [2, 0, 0, 0, 0, 1])
        .build()
        .unwrap();
    let err = stack
        .connect(SocketAddrV4::new(SERVER, 7200), Duration::from_millis(300))
        .unwrap_err();
    assert!(matches!(err, Error::PeerUnreachable { .. }), "{err:?}");
    let text = err.to_string();
    assert!(
        text.contains("10.99.0.1:7200") && text.contains("listening"),
        "{text}"
    );
    silent.join().unwrap();
}

#[test]
fn misuse_gives_clear_errors() {
    let (a, b, _pool) = ports();
    let (up_tx, up_rx) = mpsc::channel();
    let (done_tx, done_rx) = mpsc::channel::<()>();
    let (closed_tx, closed_rx) = mpsc::channel::<()>();
    let server = thread::spawn(move || {
        let stack = Stack::builder(Backend::Port(Box::new(a)), SERVER)
            .max_message(1024)
            .build()
            .unwrap();
        up_tx.send(()).unwrap();
        let sock = stack.listen().accept(Duration::from_secs(20)).unwrap();
        // Close from the server side; the client must see it.
        let st = sock.stats();
        if let Err(e) = sock.close() {
            panic!("server close: {e}; conn {st:?}; stack {:?}", stack.stats());
        }
        closed_tx.send(()).unwrap();
        while done_rx.try_recv().is_err() {
            stack.poll();
        }
    });
    up_rx.recv().unwrap();
    let stack = Stack::builder(Backend::Port(Box::new(b)), CLIENT)
        .max_message(1024)
        .build()
        .unwrap();
    let sock = stack
        .connect(SocketAddrV4::new(SERVER, 7200), Duration::from_secs(10))
        .unwrap();
    // Over the maximum: refused before anything is sent.
    let sent_before = stack.stats().port.tx_packets;
    let err = sock.send(&[0u8; 1025]).unwrap_err();
    assert_eq!(
        err,
        Error::MessageTooLarge {
            len: 1025,
            max: 1024
        }
    );
    assert!(err.to_string().contains("max_message"));
    assert_eq!(stack.stats().port.tx_packets, sent_before);
    // The peer closed: recv reports it, and so does send.
    sock.set_timeout(Some(Duration::from_secs(10)));
    assert_eq!(sock.recv().unwrap_err(), Error::Closed);
    assert_eq!(sock.send(b"late").unwrap_err(), Error::Closed);
    // Keep our stack running until the server has its close confirmed.
    while closed_rx.try_recv().is_err() {
        stack.poll();
    }
    done_tx.send(()).unwrap();
    server.join().unwrap();
}
