// Filled in by the DPDK backend work: bindgen over pkg-config `libdpdk` plus a C shim.
fn main() {
    println!("cargo:rerun-if-changed=build.rs");
}
