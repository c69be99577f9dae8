//! The bindings link against the system's DPDK and the shim is callable without an EAL.

use std::ffi::CStr;

#[test]
fn version_and_shim_link() {
    // SAFETY: rte_version returns a static NUL-terminated string and needs no EAL.
    let v = unsafe { CStr::from_ptr(dpdk_sys::rte_version()) };
    let v = v.to_str().expect("ascii version");
    assert!(v.starts_with("DPDK "), "unexpected version string {v:?}");
    // SAFETY: rte_lcore_id reads a thread-local; outside the EAL it is LCORE_ID_ANY.
    let lcore = unsafe { dpdk_sys::shim_lcore_id() };
    assert_eq!(
        lcore,
        u32::MAX,
        "a non-EAL thread has lcore id LCORE_ID_ANY"
    );
}
