//! Multi-queue with RSS: a net_tap device (a kernel tap interface driven by DPDK) opened with
//! two queue pairs. The device reports IP/UDP RSS, so `Device::open` configures
//! `RTE_ETH_MQ_RX_RSS`; the kernel's frames to the tap (we make it send ARP by pinging an
//! address on the tap's subnet; IPv6 is off on it) arrive on the ports, each tagged with its
//! queue. Which queue a frame lands on is the kernel's multi-queue tap's choice, so the test
//! does not assert a spread. The tap interface is unique to this process and goes with the
//! device.
#![cfg(feature = "dpdk")]

#[path = "harness/dpdk_common.rs"]
mod dpdk_common;
mod harness;

use std::process::Command;
use std::time::{Duration, Instant};

use bypass::pmd::dpdk::{Device, DeviceConfig, DpdkPool};
use bypass::pmd::{Port, MAX_BURST};
use dpdk_common::*;

#[test]
fn tap_two_queues_with_rss() {
    if !std::path::Path::new("/dev/net/tun").exists() {
        harness::skip("/dev/net/tun is absent");
        return;
    }
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        harness::skip("creating a tap interface needs root");
        return;
    }
    let pid = std::process::id();
    let ifname = format!("bpt{}", pid % 100_000);
    let subnet = 1 + (pid / 7) % 250;
    let eal = eal(0, "tap");
    let pool = pool("tap", 2048);
    let dpool = DpdkPool::new(&eal, &pool).expect("lend pool");
    let name = Device::probe(&eal, &format!("net_tap0,iface={ifname}")).expect("probe tap");
    let cfg = DeviceConfig {
        queues: 2,
        ..DeviceConfig::default()
    };
    let (dev, mut ports) = Device::open(&eal, &name, &dpool, &cfg).expect("open tap, 2 queues");
    println!(
        "{} driver {} queues {} rss {}",
        dev.name(),
        dev.driver(),
        dev.queues(),
        dev.rss()
    );
    assert_eq!(ports.len(), 2);
    assert!(
        dev.rss(),
        "net_tap reports IP/UDP RSS, so two queues use it"
    );
    let ip = |args: &[&str]| {
        let o = Command::new("ip").args(args).output().expect("ip");
        assert!(
            o.status.success(),
            "ip {args:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
    };
    let _ = Command::new("sysctl")
        .args(["-qw", &format!("net.ipv6.conf.{ifname}.disable_ipv6=1")])
        .output();
    ip(&[
        "addr",
        "add",
        &format!("10.77.{subnet}.1/24"),
        "dev",
        &ifname,
    ]);
    ip(&["link", "set", &ifname, "up"]);
    // The kernel resolves 10.77.x.2 by ARP on the tap: those requests reach our queues.
    let mut ping = Command::new("ping")
        .args([
            "-c",
            "5",
            "-i",
            "0.2",
            "-W",
            "1",
            &format!("10.77.{subnet}.2"),
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("ping");
    let mut got = [0u64; 2];
    let mut rx = Vec::with_capacity(MAX_BURST);
    let t0 = Instant::now();
    while got.iter().sum::<u64>() == 0 && t0.elapsed() < Duration::from_secs(10) {
        for (q, p) in ports.iter_mut().enumerate() {
            rx.clear();
            got[q] += p.rx_burst(&mut rx, MAX_BURST) as u64;
            for b in &rx {
                assert_eq!(b.meta.queue as usize, q);
            }
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    let _ = ping.kill();
    let _ = ping.wait();
    println!(
        "frames per queue {got:?}; xstats {:?}",
        dev.xstats().map(|x| x.len())
    );
    assert!(
        got.iter().sum::<u64>() > 0,
        "the kernel's ARP requests arrived"
    );
    drop(rx);
    drop(ports);
    drop(dev);
    drop(dpool);
    assert_eq!(pool.stats().in_use, 0, "{:?}", pool.stats());
}
