//! A stack over DPDK (feature `dpdk`): a `net_ring` virtual device, ordinary pages. The EAL
//! starts once per process, so this is the only test that uses it.

use std::ffi::CString;

use super::*;

#[test]
fn a_stack_over_a_dpdk_ring_device_starts_and_stops() {
    let mut c = bypass_config { id: 0 };
    let eal = CString::new("--vdev=net_ring0 --no-huge -m 256").unwrap();
    let dev = CString::new("net_ring0").unwrap();
    let ip = CString::new("10.92.0.1").unwrap();
    // SAFETY: valid out-pointer and NUL-terminated strings.
    unsafe {
        ok(bypass_config_new(&mut c));
        ok(bypass_config_set_dpdk(c, eal.as_ptr(), dev.as_ptr()));
        ok(bypass_config_set_ip(c, ip.as_ptr()));
    }
    ok(bypass_config_set_pool(c, 2048, 2048 + 128));
    ok(bypass_config_set_hugepages(c, BYPASS_HUGEPAGES_NEVER));
    ok(bypass_config_set_link_timeout_ms(c, 10_000));
    let st = stack(c);
    let mut up = false;
    // SAFETY: valid out-pointer.
    ok(unsafe { bypass_stack_link_up(st, &mut up) });
    assert!(up);
    ok(bypass_stack_poll_for_us(st, 1000));
    let mut n = usize::MAX;
    // SAFETY: valid out-pointer.
    ok(unsafe { bypass_stack_connections(st, &mut n) });
    assert_eq!(n, 0);
    ok(bypass_stack_free(st));
}
