//! What waking a sleeping stack costs: the first message after an idle spell against a warm
//! one, over memif between two threads of this process. The server sleeps when idle (the
//! default `IdlePoll::Sleep`) and echoes; the client spins (`IdlePoll::Spin`) and measures
//! round trips of a 64 B message: back to back (warm), and each after `--idle-ms` of silence
//! (cold: the server is asleep in `ppoll` on the ring's eventfd). As a floor, the same
//! machine's bare kernel wake-up: one thread writes an eventfd another sleeps on in `ppoll`
//! and spins until it woke (what any sleeping receiver pays, whatever the stack). And a
//! stack's `Doorbell`: a stack asleep in `poll_events` (a memif server with no peer), woken
//! by another thread's `ring`, one way, measured as the floor is.
//!
//! `cargo run --profile test --example idle_wake -- [--rounds N] [--idle-ms MS]
//! [--max-sleep-ms MS] [--server-spin]` (the server's sleep ceiling, default 10 as
//! `IdlePoll::default()`; `--server-spin`: a server that never sleeps, the baseline;
//! `--pin`: server on CPU 1, client on CPU 0)
//! (results: bench/results/2026-12-07-adaptive-poll.md)

use std::net::{Ipv4Addr, SocketAddrV4};
use std::os::fd::AsFd;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::thread;
use std::time::{Duration, Instant};

use bypass::pmd::memif::Role;
use bypass::pmd::RxWait;
use bypass::socket::{Backend, Doorbell, Error, IdlePoll, Stack, DEFAULT_UDP_PORT};

const SERVER: Ipv4Addr = Ipv4Addr::new(10, 80, 0, 1);
const CLIENT: Ipv4Addr = Ipv4Addr::new(10, 80, 0, 2);
const SERVER_MAC: [u8; 6] = [0x02, 0x80, 0, 0, 0, 1];
const CLIENT_MAC: [u8; 6] = [0x02, 0x80, 0, 0, 0, 2];

fn arg(name: &str, default: u64) -> u64 {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .map_or(default, |v| v.parse().expect("a number"))
}

fn pct(v: &mut [Duration], p: f64) -> f64 {
    v.sort();
    let i = ((v.len() as f64 - 1.0) * p).round() as usize;
    v[i].as_secs_f64() * 1e6
}

/// One-way wake-up of a thread asleep in ppoll on an eventfd, `rounds` times after `idle`.
fn eventfd_floor(rounds: u64, idle: Duration) -> Vec<Duration> {
    let efd = rustix::event::eventfd(0, rustix::event::EventfdFlags::NONBLOCK).expect("eventfd");
    let efd = Arc::new(efd);
    let base = Instant::now();
    let sent = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicU64::new(0));
    let (e, s, d) = (efd.clone(), sent.clone(), done.clone());
    let sleeper = thread::spawn(move || {
        let mut w = RxWait::new();
        let mut lat = Vec::new();
        while (lat.len() as u64) < rounds {
            w.clear();
            w.push(e.as_fd());
            if w.wait(Duration::from_secs(10)).expect("ppoll") {
                let woke = base.elapsed().as_nanos() as u64;
                let _ = rustix::io::read(&*e, &mut [0u8; 8]);
                lat.push(Duration::from_nanos(
                    woke.saturating_sub(s.load(Ordering::Acquire)),
                ));
                d.store(lat.len() as u64, Ordering::Release);
            }
        }
        lat
    });
    for k in 0..rounds {
        thread::sleep(idle);
        sent.store(base.elapsed().as_nanos() as u64, Ordering::Release);
        rustix::io::write(&*efd, &1u64.to_ne_bytes()).expect("eventfd write");
        // Spin until the sleeper woke, as the spinning client below waits for its answer
        // (on a loaded machine a waker that yields its core would make the floor look lower).
        while done.load(Ordering::Acquire) <= k {
            std::hint::spin_loop();
        }
    }
    sleeper.join().expect("sleeper")
}

/// One-way wake-up of a stack asleep in `poll_events` by another thread's
/// `Doorbell::ring`, `rounds` times after `idle`.
fn doorbell_wake(rounds: u64, idle: Duration, max_sleep: Duration, pin: bool) -> Vec<Duration> {
    let path = std::env::temp_dir().join(format!("bypass-idle-bell-{}.sock", std::process::id()));
    let _ = std::fs::remove_file(&path);
    let base = Instant::now();
    let sent = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicU64::new(0));
    let (s, d, p) = (sent.clone(), done.clone(), path.clone());
    let (bell_tx, bell_rx) = mpsc::channel();
    let sleeper = thread::spawn(move || {
        let b = Stack::builder(
            Backend::Memif {
                socket: p,
                role: Role::Server,
                id: 0,
            },
            SERVER,
        )
        .idle_poll(IdlePoll::Sleep {
            sleep_after: IdlePoll::DEFAULT_SLEEP_AFTER,
            max_sleep,
        });
        let stack = if pin { b.pin_core(1) } else { b }
            .build()
            .expect("doorbell stack");
        bell_tx.send(stack.doorbell().expect("doorbell")).unwrap();
        let mut ready = Vec::new();
        let mut lat = Vec::new();
        while (lat.len() as u64) < rounds {
            stack.poll_events(&mut ready, Duration::from_secs(10));
            let woke = base.elapsed().as_nanos() as u64;
            let at = s.load(Ordering::Acquire);
            if at > 0 {
                s.store(0, Ordering::Release);
                lat.push(Duration::from_nanos(woke.saturating_sub(at)));
                d.store(lat.len() as u64, Ordering::Release);
            }
        }
        (lat, stack.stats().runtime)
    });
    let bell: Doorbell = bell_rx.recv().expect("the stack's doorbell");
    for k in 0..rounds {
        thread::sleep(idle);
        sent.store(base.elapsed().as_nanos() as u64, Ordering::Release);
        bell.ring();
        while done.load(Ordering::Acquire) <= k {
            std::hint::spin_loop();
        }
    }
    let (lat, rt) = sleeper.join().expect("sleeper");
    let _ = std::fs::remove_file(&path);
    println!(
        "doorbell: {} rings, {} eventfd writes; the stack slept {} times",
        bell.counts().0,
        bell.counts().1,
        rt.sleeps
    );
    lat
}

fn main() {
    let rounds = arg("--rounds", 50);
    let idle = Duration::from_millis(arg("--idle-ms", 150));
    let max_sleep = Duration::from_millis(arg("--max-sleep-ms", 10));
    // The baseline: a server that never sleeps (the cold round trips then show what an idle
    // spell costs without any wake-up).
    let spin = std::env::args().any(|a| a == "--server-spin");
    // Pin the server to CPU 1 and the client to CPU 0 (as deployed: a stack per core), so the
    // scheduler cannot queue the woken server behind the spinning client on one CPU.
    let pin = std::env::args().any(|a| a == "--pin");
    let mut floor = eventfd_floor(rounds, idle);
    let mut bell = doorbell_wake(rounds, idle, max_sleep, pin);

    let path = std::env::temp_dir().join(format!("bypass-idle-wake-{}.sock", std::process::id()));
    let _ = std::fs::remove_file(&path);
    let backend = |role| Backend::Memif {
        socket: path.clone(),
        role,
        id: 0,
    };
    let sb = backend(Role::Server);
    let (up_tx, up_rx) = mpsc::channel();
    let server = thread::spawn(move || {
        let stack = Stack::builder(sb, SERVER)
            .idle_poll(if spin {
                IdlePoll::Spin
            } else {
                IdlePoll::Sleep {
                    sleep_after: IdlePoll::DEFAULT_SLEEP_AFTER,
                    max_sleep,
                }
            })
            .mac(SERVER_MAC)
            .static_arp(CLIENT, CLIENT_MAC);
        let stack = if pin { stack.pin_core(1) } else { stack }
            .build()
            .expect("server stack");
        let l = stack.listen();
        up_tx.send(()).unwrap();
        let sock = l.accept(Duration::from_secs(20)).expect("accept");
        sock.set_timeout(None);
        loop {
            match sock.recv() {
                Ok(m) => {
                    sock.send_bytes(m).expect("echo");
                }
                Err(Error::Closed | Error::ConnectionReset(_)) => break,
                Err(e) => panic!("server: {e}"),
            }
        }
        stack.stats().runtime
    });
    while !path.exists() {
        thread::sleep(Duration::from_millis(1));
    }
    let stack = Stack::builder(backend(Role::Client), CLIENT)
        .mac(CLIENT_MAC)
        .static_arp(SERVER, SERVER_MAC)
        .idle_poll(IdlePoll::Spin);
    let stack = if pin { stack.pin_core(0) } else { stack }
        .build()
        .expect("client stack");
    up_rx.recv().expect("server up");
    let sock = stack
        .connect(
            SocketAddrV4::new(SERVER, DEFAULT_UDP_PORT),
            Duration::from_secs(20),
        )
        .expect("connect");
    let msg = bytes::Bytes::from_static(&[7u8; 64]);
    let rtt = || {
        let t0 = Instant::now();
        sock.send_bytes(msg.clone()).expect("send");
        let r = sock.recv().expect("echo");
        assert_eq!(r.len(), 64);
        t0.elapsed()
    };
    for _ in 0..10_000 {
        rtt();
    }
    let mut warm: Vec<Duration> = (0..20_000).map(|_| rtt()).collect();
    let mut cold = Vec::new();
    for _ in 0..rounds {
        thread::sleep(idle);
        cold.push(rtt());
    }
    sock.close().expect("close");
    let srv = server.join().expect("server");
    let _ = std::fs::remove_file(&path);
    let (w50, c50) = (pct(&mut warm, 0.5), pct(&mut cold, 0.5));
    println!(
        "kernel floor, eventfd -> ppoll wake-up after {idle:?} idle ({rounds} rounds): p50 \
         {:.1} us, p90 {:.1} us, max {:.1} us",
        pct(&mut floor, 0.5),
        pct(&mut floor, 0.9),
        pct(&mut floor, 1.0)
    );
    println!(
        "Doorbell::ring -> a stack asleep in poll_events returns, after {idle:?} idle \
         ({rounds} rounds): p50 {:.1} us, p90 {:.1} us, max {:.1} us",
        pct(&mut bell, 0.5),
        pct(&mut bell, 0.9),
        pct(&mut bell, 1.0)
    );
    println!(
        "64 B RTT over memif, server {}, client spinning: warm p50 \
         {w50:.1} us p90 {:.1} us; first after {idle:?} idle ({rounds} rounds) p50 {c50:.1} \
         us p90 {:.1} us max {:.1} us; the wake-up adds {:.1} us at p50",
        if spin {
            "IdlePoll::Spin"
        } else {
            "IdlePoll::Sleep"
        },
        pct(&mut warm, 0.9),
        pct(&mut cold, 0.9),
        pct(&mut cold, 1.0),
        c50 - w50
    );
    println!(
        "server loop: {} sleeps, {} woken by a frame, {:.3} s asleep",
        srv.sleeps,
        srv.sleep_wakeups,
        srv.slept_ns as f64 / 1e9
    );
}
