//! Adaptive polling (`IdlePoll`) over real memif between two threads: an idle stack sleeps in
//! the kernel instead of spinning, a frame from the peer wakes it (the memif ring's interrupt
//! eventfd), and while it sleeps its deadlines (a connection's idle timeout, a blocking call's
//! timeout) still come on time. CPU is the waiting thread's own, from /proc/thread-self/stat.

use std::net::{Ipv4Addr, SocketAddrV4};
use std::path::PathBuf;
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use crate::harness;

use bypass::pmd::memif::Role;
use bypass::proto::ConnectionConfig;
use bypass::socket::{
    Backend, Error, IdlePoll, Socket, Stack, StackBuilder, StackStats, DEFAULT_UDP_PORT,
};

const SERVER: Ipv4Addr = Ipv4Addr::new(10, 78, 0, 1);
const CLIENT: Ipv4Addr = Ipv4Addr::new(10, 78, 0, 2);
const SERVER_MAC: [u8; 6] = [0x02, 0x78, 0, 0, 0, 1];
const CLIENT_MAC: [u8; 6] = [0x02, 0x78, 0, 0, 0, 2];

/// Sleep after 1 ms idle, with a ceiling so long (30 s) that only a frame's interrupt or a
/// computed deadline can end a sleep within any of the tests' limits.
fn sleep_long() -> IdlePoll {
    IdlePoll::Sleep {
        sleep_after: Duration::from_millis(1),
        max_sleep: Duration::from_secs(30),
    }
}

/// utime + stime of the calling thread (/proc/thread-self/stat, fields 14 and 15).
fn thread_cpu() -> Duration {
    let stat = std::fs::read_to_string("/proc/thread-self/stat").expect("/proc/thread-self/stat");
    // The command name (field 2) may hold spaces: the fields that follow start after its ')'.
    let rest = &stat[stat.rfind(')').expect("stat has (comm)") + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // rest starts at field 3 (state): utime is field 14, stime 15.
    let ticks: u64 = f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap();
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as u64;
    Duration::from_nanos(ticks * 1_000_000_000 / hz)
}

/// Run `f` and return what it gave, with the fraction of a core the thread used meanwhile
/// and the wall time.
fn measure<R>(f: impl FnOnce() -> R) -> (R, f64, Duration) {
    let (c0, t0) = (thread_cpu(), Instant::now());
    let r = f();
    let (cpu, wall) = (thread_cpu() - c0, t0.elapsed());
    (r, cpu.as_secs_f64() / wall.as_secs_f64(), wall)
}

fn socket_path(what: &str) -> PathBuf {
    std::env::temp_dir().join(format!("bypass-idle-{what}-{}.sock", std::process::id()))
}

/// A memif server stack on a thread of its own (built with `server`, accepting one
/// connection within 20 s, then running `serve`) and a client stack here (built with
/// `client`), connected; `run` gets the client's socket. Returns `serve`'s and `run`'s
/// results.
fn memif_pair<S: Send + 'static, C>(
    what: &str,
    server: impl FnOnce(StackBuilder) -> StackBuilder + Send + 'static,
    serve: impl FnOnce(&Stack, Socket) -> S + Send + 'static,
    client: impl FnOnce(StackBuilder) -> StackBuilder,
    run: impl FnOnce(&Stack, &Socket) -> C,
) -> (S, C) {
    let path = socket_path(what);
    let _ = std::fs::remove_file(&path);
    let backend = |role| Backend::Memif {
        socket: path.clone(),
        role,
        id: 0,
    };
    let sb = backend(Role::Server);
    let (up_tx, up_rx) = mpsc::channel();
    let srv = thread::spawn(move || {
        let stack = server(Stack::builder(sb, SERVER))
            .mac(SERVER_MAC)
            .static_arp(CLIENT, CLIENT_MAC)
            .link_timeout(Duration::from_secs(20))
            .build()
            .expect("server stack");
        let l = stack.listen();
        up_tx.send(()).unwrap();
        let sock = l
            .accept(Duration::from_secs(20))
            .expect("accept the client");
        serve(&stack, sock)
    });
    harness::settle("the memif server's socket to appear", || path.exists());
    let stack = client(Stack::builder(backend(Role::Client), CLIENT))
        .mac(CLIENT_MAC)
        .static_arp(SERVER, SERVER_MAC)
        .link_timeout(Duration::from_secs(20))
        .build()
        .expect("client stack");
    up_rx
        .recv_timeout(Duration::from_secs(30))
        .expect("the server stack to listen");
    let sock = stack
        .connect(
            SocketAddrV4::new(SERVER, DEFAULT_UDP_PORT),
            Duration::from_secs(20),
        )
        .expect("connect to the server");
    let c = run(&stack, &sock);
    // Keep this end and its socket answering (acknowledgements) until the server is done.
    let end = Instant::now() + Duration::from_secs(60);
    while !srv.is_finished() && Instant::now() < end {
        stack.poll_for(Duration::from_millis(5));
    }
    let s = srv.join().expect("server thread");
    drop(sock);
    drop(stack);
    let _ = std::fs::remove_file(&path);
    (s, c)
}

/// Server side of the end of a test: the client has our last message (its socket stays
/// open, polled, until this thread ends).
fn wait_close(sock: &Socket) {
    sock.set_timeout(Some(Duration::from_secs(60)));
    sock.flush()
        .expect("the client to acknowledge our last message");
}

/// What the server of [`idle_cpu`] measured: core fractions blocked in `recv` and in
/// `accept`, and its stack's counters after.
struct IdleCpu {
    recv: f64,
    accept: f64,
    stats: StackStats,
}

/// A server blocked for 2 s in `recv` on a connected but silent client, then 2 s in `accept`
/// with no one connecting, under `policy`. The client waits (sleeping) for the server's
/// "done".
fn idle_cpu(what: &str, policy: IdlePoll, peers: u32) -> IdleCpu {
    let (server, ()) = memif_pair(
        what,
        move |b| {
            let b = b.idle_poll(policy);
            // More than one: a many-peer server (a fan-in port over `peers` interfaces).
            if peers > 1 {
                b.memif_peers(peers)
            } else {
                b
            }
        },
        |stack, sock| {
            let wait = Duration::from_secs(2);
            sock.set_timeout(Some(wait));
            let (r, recv, wall) = measure(|| sock.recv());
            assert!(
                matches!(r, Err(Error::TimedOut { .. })),
                "recv on a silent connection should time out: {r:?}"
            );
            assert!(
                wall >= wait,
                "recv returned after {wall:?}, before {wait:?}"
            );
            let l = stack.listen();
            let (r, accept, _) = measure(|| l.accept(wait));
            assert!(
                matches!(r, Err(Error::TimedOut { .. })),
                "accept with no client should time out: {r:?}"
            );
            sock.send(b"done").expect("send done");
            wait_close(&sock);
            IdleCpu {
                recv,
                accept,
                stats: stack.stats(),
            }
        },
        |b| b.idle_poll(IdlePoll::default()),
        |_, sock| {
            sock.set_timeout(Some(Duration::from_secs(60)));
            match sock.recv() {
                Ok(m) => assert_eq!(&m[..], b"done"),
                Err(e) => panic!("the client waited for the server's done: {e}"),
            }
        },
    );
    server
}

#[test]
fn idle_server_sleeps_and_uses_a_fraction_of_a_core_spinning_uses() {
    let _pair = harness::one_pair_at_a_time();
    let sleep = idle_cpu("cpu-sleep", IdlePoll::default(), 1);
    let spin = idle_cpu("cpu-spin", IdlePoll::Spin, 1);
    println!(
        "idle server thread CPU, % of a core over 2 s: default IdlePoll::Sleep: recv {:.2} %, \
         accept {:.2} % ({} sleeps, {} woken by a frame); IdlePoll::Spin: recv {:.1} %, \
         accept {:.1} %",
        sleep.recv * 100.0,
        sleep.accept * 100.0,
        sleep.stats.runtime.sleeps,
        sleep.stats.runtime.sleep_wakeups,
        spin.recv * 100.0,
        spin.accept * 100.0,
    );
    assert!(
        sleep.stats.runtime.sleeps > 0,
        "the sleeping stack never slept"
    );
    assert_eq!(spin.stats.runtime.sleeps, 0, "IdlePoll::Spin slept");
    for (what, v) in [("recv", sleep.recv), ("accept", sleep.accept)] {
        assert!(
            v < 0.05,
            "blocked in {what}, a sleeping stack used {:.1} % of a core (want < 5 %)",
            v * 100.0
        );
    }
    // The measurement sees a spinning thread (scheduling on a loaded machine may take some
    // of its core away, but not most of it).
    for (what, v) in [("recv", spin.recv), ("accept", spin.accept)] {
        assert!(
            v > 0.2,
            "blocked in {what}, a spinning stack used only {:.1} % of a core: the \
             measurement is broken",
            v * 100.0
        );
    }
}

/// A many-peer server (`memif_peers`: a fan-in port over its interfaces) sleeps on all its
/// members' interrupts as a one-peer server sleeps on its one.
#[test]
fn an_idle_many_peer_server_sleeps_too() {
    let _pair = harness::one_pair_at_a_time();
    let s = idle_cpu("cpu-fanin", IdlePoll::default(), 4);
    println!(
        "idle 4-peer server thread CPU, % of a core over 2 s: recv {:.2} %, accept {:.2} % \
         ({} sleeps, {} woken by a frame)",
        s.recv * 100.0,
        s.accept * 100.0,
        s.stats.runtime.sleeps,
        s.stats.runtime.sleep_wakeups,
    );
    assert!(s.stats.runtime.sleeps > 0, "the fan-in server never slept");
    // Sleeps on the members' interrupts last to the ceiling (10 ms) when nothing comes; a
    // port that cannot sleep naps 250 us at a time instead.
    let mean = s.stats.runtime.slept_ns / s.stats.runtime.sleeps;
    assert!(
        mean >= 1_000_000,
        "{} sleeps of {mean} ns on average: naps, not sleeps on the interrupts",
        s.stats.runtime.sleeps
    );
    for (what, v) in [("recv", s.recv), ("accept", s.accept)] {
        assert!(
            v < 0.05,
            "blocked in {what}, a sleeping 4-peer server used {:.1} % of a core (want < 5 %)",
            v * 100.0
        );
    }
}

/// Round trip of one small message (client sends, server echoes).
fn rtt(sock: &Socket, msg: &[u8]) -> Duration {
    let t0 = Instant::now();
    sock.send(msg).expect("send");
    let r = sock.recv().expect("the echo");
    let d = t0.elapsed();
    assert_eq!(&r[..], msg, "the echo differs");
    d
}

fn median(v: &mut [Duration]) -> Duration {
    v.sort();
    v[v.len() / 2]
}

#[test]
fn a_message_wakes_a_sleeping_server_which_answers_it() {
    let _pair = harness::one_pair_at_a_time();
    const COLD: usize = 10;
    let (stats, (warm, cold)) = memif_pair(
        "wake",
        |b| b.idle_poll(sleep_long()),
        |stack, sock| {
            sock.set_timeout(Some(Duration::from_secs(30)));
            loop {
                match sock.recv() {
                    Ok(m) if &m[..] == b"bye" => break,
                    Ok(m) => {
                        sock.send_bytes(m).expect("echo");
                    }
                    Err(e) => panic!("server recv: {e}"),
                }
            }
            stack.stats()
        },
        // The client spins: the round trips measure the server's wake-up alone.
        |b| b.idle_poll(IdlePoll::Spin),
        |_, sock| {
            sock.set_timeout(Some(Duration::from_secs(30)));
            let mut warm: Vec<Duration> = (0..2000).map(|_| rtt(sock, b"warm")).collect();
            let mut cold = Vec::new();
            for _ in 0..COLD {
                // 150 ms of silence: the server has been asleep for ~149 ms.
                thread::sleep(Duration::from_millis(150));
                cold.push(rtt(sock, b"cold"));
            }
            sock.send(b"bye").expect("bye");
            (median(&mut warm[1000..]), cold)
        },
    );
    let mut sorted = cold.clone();
    let cold_median = median(&mut sorted);
    println!(
        "4 B echo over memif, threads unpinned (the woken server may queue behind the \
         spinning client on one CPU: examples/idle_wake --pin measures it pinned): warm RTT \
         p50 {:.1} us; first after 150 ms idle (server asleep): p50 {:.1} us, max {:.1} us; \
         the wake-up adds {:.1} us (p50); server: {} sleeps, {} woken by a frame",
        warm.as_secs_f64() * 1e6,
        cold_median.as_secs_f64() * 1e6,
        sorted.last().unwrap().as_secs_f64() * 1e6,
        cold_median.saturating_sub(warm).as_secs_f64() * 1e6,
        stats.runtime.sleeps,
        stats.runtime.sleep_wakeups,
    );
    // Each cold message found the server asleep (30 s ceiling, nothing else due soon), and
    // only the ring's interrupt could wake it in time for these limits.
    assert!(
        stats.runtime.sleep_wakeups >= COLD as u64,
        "the server was woken by a frame {} times, want >= {COLD}",
        stats.runtime.sleep_wakeups
    );
    for d in &cold {
        assert!(
            *d < Duration::from_secs(2),
            "a message to the sleeping server was answered after {d:?}"
        );
    }
}

#[test]
fn a_sleeping_server_times_out_a_silent_peer_on_time() {
    let _pair = harness::one_pair_at_a_time();
    let idle_timeout = Duration::from_millis(600);
    let (silent_tx, silent_rx) = mpsc::channel::<()>();
    let ((r, took, stats), ()) = memif_pair(
        "timers",
        move |b| {
            b.idle_poll(sleep_long())
                .connection_config(ConnectionConfig {
                    idle_timeout,
                    ..ConnectionConfig::default()
                })
        },
        move |stack, sock| {
            sock.set_timeout(Some(Duration::from_secs(20)));
            silent_rx
                .recv_timeout(Duration::from_secs(30))
                .expect("the client to go silent");
            let t0 = Instant::now();
            let r = sock.recv();
            (r.map(|_| ()), t0.elapsed(), stack.stats())
        },
        |b| b,
        move |_, _sock| {
            // Silent: this stack is not polled at all until the server has given up on it.
            silent_tx.send(()).unwrap();
            thread::sleep(Duration::from_millis(600) * 4);
        },
    );
    println!(
        "idle timeout {idle_timeout:?} on a silent peer, server asleep: reported after \
         {took:?} ({} sleeps)",
        stats.runtime.sleeps
    );
    assert!(
        matches!(r, Err(Error::ConnectionLost { .. })),
        "the silent peer should be lost: {r:?}"
    );
    // The last frame from the client came before the recv began: at most the idle timeout,
    // plus scheduling on a loaded machine. A sleep that ignored the deadline would last its
    // 30 s ceiling (the recv's own 20 s timeout would end it first).
    assert!(
        took <= idle_timeout + Duration::from_secs(3),
        "the idle timeout ({idle_timeout:?}) fired after {took:?}"
    );
    assert!(stats.runtime.sleeps > 0, "the server never slept");
}

#[test]
fn blocking_calls_return_at_their_timeout_while_sleeping() {
    let _pair = harness::one_pair_at_a_time();
    let (got, ()) = memif_pair(
        "timeout",
        |b| b.idle_poll(sleep_long()),
        |stack, sock| {
            let t = Duration::from_millis(300);
            sock.set_timeout(Some(t));
            let before = stack.stats().runtime.sleeps;
            let t0 = Instant::now();
            let r = sock.recv().map(|_| ());
            let recv = (r, t0.elapsed());
            let t0 = Instant::now();
            let r = stack.listen().accept(t).map(|_| ());
            let accept = (r, t0.elapsed());
            let t0 = Instant::now();
            stack.poll_for(t);
            let poll_for = t0.elapsed();
            sock.send(b"done").expect("send done");
            wait_close(&sock);
            let slept = stack.stats().runtime.sleeps - before;
            (t, recv, accept, poll_for, slept)
        },
        |b| b,
        |_, sock| {
            sock.set_timeout(Some(Duration::from_secs(60)));
            assert_eq!(&sock.recv().expect("the server's done")[..], b"done");
        },
    );
    let (t, (recv, recv_took), (accept, accept_took), poll_for_took, slept) = got;
    println!(
        "timeout {t:?} while asleep: recv returned after {recv_took:?}, accept after \
         {accept_took:?}, poll_for after {poll_for_took:?} ({slept} sleeps)"
    );
    assert!(
        matches!(recv, Err(Error::TimedOut { .. })),
        "recv should time out: {recv:?}"
    );
    assert!(
        matches!(accept, Err(Error::TimedOut { .. })),
        "accept should time out: {accept:?}"
    );
    let late = t + Duration::from_secs(3);
    for (what, took) in [
        ("recv", recv_took),
        ("accept", accept_took),
        ("poll_for", poll_for_took),
    ] {
        assert!(
            took >= t && took <= late,
            "{what} with a {t:?} timeout returned after {took:?}"
        );
    }
    assert!(slept >= 3, "the server slept {slept} times in three waits");
}

/// A port without receive interrupts (an in-process `pmd::pair`, as DPDK here): the
/// sleeping policy naps instead, which costs a little CPU but far from a core, and a message
/// still reaches the napping server.
#[test]
fn a_port_without_interrupts_naps_instead() {
    use crate::socket_pair::{serve_and_connect, End};
    use bypass::mem::{HugePages, Pool, PoolConfig};
    use bypass::pmd::pair::pair;

    let _pair = harness::one_pair_at_a_time();
    let pool = Pool::new(&PoolConfig {
        hugepages: HugePages::Never,
        ..PoolConfig::new("socket-idle-nap", 4096, 9216 + 256)
    })
    .unwrap();
    let (a, b) = pair(&pool, 1024, 9000).unwrap();
    let (srv, stack, sock) = serve_and_connect(
        End {
            ip: SERVER,
            port: a,
            build: |b: StackBuilder| b.idle_poll(IdlePoll::default()),
        },
        End {
            ip: CLIENT,
            port: b,
            build: |b: StackBuilder| b.idle_poll(IdlePoll::default()),
        },
        |stack, sock| {
            sock.set_timeout(Some(Duration::from_secs(2)));
            let (r, cpu, _) = measure(|| sock.recv());
            assert!(
                matches!(r, Err(Error::TimedOut { .. })),
                "recv on a silent connection should time out: {r:?}"
            );
            sock.set_timeout(Some(Duration::from_secs(30)));
            let m = sock.recv().expect("the client's message");
            sock.send_bytes(m).expect("echo");
            sock.flush().expect("the echo acknowledged");
            (cpu, stack.stats().runtime)
        },
    );
    // While the server measures, this side waits too (napping as well); then one echo.
    sock.set_timeout(Some(Duration::from_secs(30)));
    let t0 = Instant::now();
    while t0.elapsed() < Duration::from_millis(2500) {
        stack.poll_for(Duration::from_millis(100));
    }
    sock.send(b"after the naps").expect("send");
    assert_eq!(&sock.recv().expect("the echo")[..], b"after the naps");
    let end = Instant::now() + Duration::from_secs(60);
    while !srv.is_finished() && Instant::now() < end {
        stack.poll_for(Duration::from_millis(5));
    }
    let (cpu, rt) = srv.join().expect("server thread");
    println!(
        "a port without interrupts (pmd::pair), server blocked 2 s in recv: {:.1} % of a core, \
         {} naps ({} woken by a frame: none expected)",
        cpu * 100.0,
        rt.sleeps,
        rt.sleep_wakeups
    );
    assert!(
        rt.sleeps > 1000,
        "the server napped only {} times",
        rt.sleeps
    );
    assert_eq!(rt.sleep_wakeups, 0, "a nap cannot be woken by a frame");
    assert!(
        cpu < 0.5,
        "napping, the server used {:.1} % of a core",
        cpu * 100.0
    );
}

/// A lone memif server stack (no client: its port adds no descriptor, so only a doorbell or
/// a deadline ends its sleep) blocked in `poll_events` for 30 s: another thread's
/// `Doorbell::ring` ends the wait at once, from the idle sleep (the ring had to signal the
/// sleeping stack: one eventfd write), and a ring while the stack is awake makes the next
/// wait return without sleeping.
#[test]
fn a_doorbell_wakes_a_sleeping_stack_from_another_thread() {
    let path = socket_path("bell");
    let _ = std::fs::remove_file(&path);
    let backend = Backend::Memif {
        socket: path.clone(),
        role: Role::Server,
        id: 0,
    };
    let stack = Stack::builder(backend, SERVER)
        .idle_poll(sleep_long())
        .build()
        .unwrap();
    let bell = stack.doorbell().unwrap();
    let (tx, rx) = mpsc::channel::<Instant>();
    let ringer = {
        let bell = bell.clone();
        thread::spawn(move || {
            // Long enough for the stack to be asleep (it sleeps after 1 ms idle).
            thread::sleep(Duration::from_millis(300));
            tx.send(Instant::now()).unwrap();
            bell.ring();
        })
    };
    let mut ready = Vec::new();
    let t0 = Instant::now();
    let sleeps0 = stack.stats().runtime.sleeps;
    stack.poll_events(&mut ready, Duration::from_secs(30));
    let woke = Instant::now();
    let rang_at = rx.recv().unwrap();
    ringer.join().unwrap();
    let waited = woke - t0;
    let latency = woke.saturating_duration_since(rang_at);
    let (rings, writes) = bell.counts();
    println!(
        "poll_events returned after {waited:?}, {latency:?} after the ring; {} sleeps; \
         rings {rings}, eventfd writes {writes}",
        stack.stats().runtime.sleeps - sleeps0
    );
    assert!(ready.is_empty());
    assert!(
        waited < Duration::from_secs(10),
        "the ring did not end the 30 s wait: {waited:?}"
    );
    assert!(stack.stats().runtime.sleeps > sleeps0, "it never slept");
    assert_eq!((rings, writes), (1, 1), "one ring, which woke a sleeper");

    // Rung while awake: the next wait returns at once, without a system call.
    bell.ring();
    let t0 = Instant::now();
    stack.poll_events(&mut ready, Duration::from_secs(30));
    assert!(t0.elapsed() < Duration::from_secs(10), "{:?}", t0.elapsed());
    assert_eq!(bell.counts(), (2, 1));
    // And only once: the wait after it runs to its timeout.
    let t0 = Instant::now();
    stack.poll_events(&mut ready, Duration::from_millis(100));
    assert!(t0.elapsed() >= Duration::from_millis(100));
    drop(stack);
    let _ = std::fs::remove_file(&path);
}
