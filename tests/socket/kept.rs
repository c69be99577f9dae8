//! An application that keeps what it receives (issue 20: a store keeping the values of its
//! PUTs). Received messages are views of packet buffers; kept, they would take the receive
//! pool, the port could receive nothing, and the connection would die of silence (seen: the
//! 3,072nd PUT, then "idle timeout"). With `rx_pool_reserve` the stack copies messages out
//! of the pool while it is low: nothing is lost, and the log, the stats and the metrics say
//! what happened.

use std::io::Write;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use bytes::Bytes;

use crate::harness;

use bypass::pmd::memif::Role;
use bypass::socket::{Backend, Metrics, Stack};

const SERVER: Ipv4Addr = Ipv4Addr::new(10, 97, 0, 1);
const CLIENT: Ipv4Addr = Ipv4Addr::new(10, 97, 0, 2);
const PORT: u16 = bypass::socket::DEFAULT_UDP_PORT;

/// Where the server thread's log lines go.
#[derive(Clone, Default)]
struct Log(Arc<Mutex<Vec<u8>>>);

impl Write for Log {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn value_byte(put: u32, i: usize) -> u8 {
    (put as usize * 31 + i * 7) as u8
}

/// What the server saw, for the assertions on the test's thread.
struct Served {
    kept: Vec<Bytes>,
    copies: u64,
    episodes: u64,
    rx_no_buffer: u64,
    rx_pool_copies_metric: Option<u64>,
    log: String,
}

fn keep_puts(puts: u32, reserve: f64) -> Served {
    let path = std::env::temp_dir().join(format!(
        "bypass-kept-{}-{}.sock",
        std::process::id(),
        (reserve * 100.0) as u32
    ));
    let _ = std::fs::remove_file(&path);
    let backend = |role| Backend::Memif {
        socket: path.clone(),
        role,
        id: 0,
    };
    let m = Metrics::new();
    let log = Log::default();
    let server = {
        let (sb, m, log) = (backend(Role::Server), m.clone(), log.clone());
        thread::spawn(move || {
            let sub = tracing_subscriber::fmt()
                .with_writer(move || log.clone())
                .with_ansi(false)
                .finish();
            tracing::subscriber::with_default(sub, || {
                let stack = Stack::builder(sb, SERVER)
                    .metrics(&m)
                    .metrics_name("kept")
                    .rx_pool_reserve(reserve)
                    .link_timeout(Duration::from_secs(60))
                    .build()
                    .unwrap();
                let sock = stack.listen().accept(Duration::from_secs(60)).unwrap();
                sock.set_timeout(Some(Duration::from_secs(60)));
                let mut kept = Vec::with_capacity(puts as usize);
                for n in 0..puts {
                    match sock.recv() {
                        Ok(v) => kept.push(v),
                        Err(e) => panic!("PUT {n} of {puts} lost: {e} ({:?})", stack.stats()),
                    }
                }
                sock.send(b"stored").unwrap();
                // Let the answer's acknowledgement come back before the stack goes.
                let _ = sock.close();
                let st = stack.stats();
                // The metrics are published by the poll loop's tick (1 ms): copies made
                // after the last tick show once the loop has ticked again.
                let value = || {
                    m.registry().value(
                        "bypass_rx_pool_low_copied_messages",
                        &[("port", "kept"), ("queue", "0")],
                    )
                };
                let _ = harness::wait_for(
                    "the copied-messages metric to be published",
                    harness::SETTLE,
                    || {
                        stack.poll();
                        value() == Some(st.rx_pool_low_copies)
                    },
                );
                (kept, st, value())
            })
        })
    };
    harness::settle("the memif server's socket to appear", || path.exists());
    let client = Stack::builder(backend(Role::Client), CLIENT)
        .link_timeout(Duration::from_secs(60))
        .build()
        .unwrap();
    let sock = client
        .connect(SocketAddrV4::new(SERVER, PORT), Duration::from_secs(30))
        .unwrap();
    sock.set_timeout(Some(Duration::from_secs(60)));
    let mut v = vec![0u8; 4096];
    for n in 0..puts {
        for (i, b) in v.iter_mut().enumerate() {
            *b = value_byte(n, i);
        }
        v[..4].copy_from_slice(&n.to_le_bytes());
        sock.send(&v)
            .unwrap_or_else(|e| panic!("sending PUT {n}: {e}"));
    }
    let answer = sock.recv().expect("the server's answer after every PUT");
    assert_eq!(&answer[..], b"stored");
    let _ = sock.close();
    let (kept, st, value) = server.join().expect("the server thread");
    drop(client);
    let _ = std::fs::remove_file(&path);
    let log = String::from_utf8_lossy(&log.0.lock().unwrap()).into_owned();
    Served {
        kept,
        copies: st.rx_pool_low_copies,
        episodes: st.rx_pool_low_episodes,
        rx_no_buffer: st.port.rx_no_buffer,
        rx_pool_copies_metric: value,
        log,
    }
}

#[test]
fn a_server_that_keeps_every_value_loses_no_connection() {
    let _pair = harness::one_pair_at_a_time();
    let puts = 100_000;
    // BYPASS_KEPT_RESERVE=0 shows what this guards against (the copy turned off).
    let reserve = std::env::var("BYPASS_KEPT_RESERVE")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.25);
    let s = keep_puts(puts, reserve);
    // Every value, once, intact (by the PUT number each carries in its first 4 bytes).
    assert_eq!(s.kept.len(), puts as usize);
    let mut seen = vec![false; puts as usize];
    for v in &s.kept {
        assert_eq!(v.len(), 4096);
        let put = u32::from_le_bytes(v[..4].try_into().unwrap());
        assert!(put < puts, "a value with no PUT number: {put}");
        assert!(!seen[put as usize], "PUT {put} kept twice");
        assert!(
            v[4..]
                .iter()
                .enumerate()
                .all(|(i, &b)| b == value_byte(put, i + 4)),
            "PUT {put} corrupted"
        );
        seen[put as usize] = true;
    }
    println!(
        "kept {} values; copied out of the low pool: {} ({} episodes); rx_no_buffer {}; \
         metric {:?}",
        s.kept.len(),
        s.copies,
        s.episodes,
        s.rx_no_buffer,
        s.rx_pool_copies_metric
    );
    assert!(s.episodes >= 1, "the pool never went low");
    assert!(s.copies > 0, "nothing was copied out of the pool");
    assert_eq!(
        s.rx_pool_copies_metric,
        Some(s.copies),
        "bypass_rx_pool_low_copied_messages"
    );
    assert!(
        s.log.contains("receive pool low"),
        "no warning in the log: {}",
        s.log
    );
    assert!(
        s.log.contains("free=") && s.log.contains("slots="),
        "the warning says how low the pool is: {}",
        s.log
    );
    assert_eq!(s.rx_no_buffer, 0, "the port ran out of receive buffers");
}

#[test]
fn values_are_zero_copy_while_the_pool_has_room() {
    let _pair = harness::one_pair_at_a_time();
    // Far fewer than the pool's buffers: nothing copied, every value a view of its packet
    // buffer; and reserve 0 never copies.
    for reserve in [0.25, 0.0] {
        let s = keep_puts(500, reserve);
        assert_eq!(s.kept.len(), 500);
        assert_eq!((s.copies, s.episodes), (0, 0), "reserve {reserve}");
        assert!(!s.log.contains("receive pool low"), "{}", s.log);
    }
}
