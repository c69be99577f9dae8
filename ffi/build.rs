//! Build script for dpdk-sys: finds the system's DPDK with pkg-config (`libdpdk`), runs
//! bindgen over its headers plus our shim header, and compiles the C shim that turns DPDK's
//! static-inline fast path into real functions. pkg-config's cflags (`-include rte_config.h`,
//! `-march=...`, include paths) go to both bindgen (clang) and the C compiler, so both see the
//! same configuration the library was built with.

use std::env;
use std::path::PathBuf;

const MISSING: &str = "\n\ndpdk-sys: DPDK was not found with pkg-config (`libdpdk`).\n\
    Install it and the tools bindgen needs, e.g. on Debian/Ubuntu:\n\n    \
    apt-get install libdpdk-dev pkg-config clang libclang-dev\n\n\
    (or set PKG_CONFIG_PATH to a DPDK install's lib/pkgconfig). The `dpdk` cargo feature of \
    `bypass` is the only thing that needs it.\n";

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed=src/shim.c");
    println!("cargo:rerun-if-changed=src/shim.h");
    println!("cargo:rerun-if-env-changed=PKG_CONFIG_PATH");
    println!("cargo:rerun-if-env-changed=DPDK_SYS_STATIC");

    let statik = env::var_os("DPDK_SYS_STATIC").is_some();
    let lib = match pkg_config::Config::new()
        .atleast_version("21.11")
        .statik(statik)
        .probe("libdpdk")
    {
        Ok(lib) => lib,
        Err(e) => panic!("{MISSING}\npkg-config said: {e}\n"),
    };

    // pkg-config's cflags that are not include paths or defines (`-include rte_config.h`,
    // `-march=corei7`, ...): pkg-config-rs splits out -I and -D but keeps nothing else, so ask
    // for the raw flags too.
    let raw = std::process::Command::new(env::var("PKG_CONFIG").unwrap_or("pkg-config".into()))
        .args(["--cflags", "libdpdk"])
        .output()
        .unwrap_or_else(|e| panic!("{MISSING}\nrunning pkg-config: {e}\n"));
    if !raw.status.success() {
        panic!("{MISSING}\npkg-config --cflags libdpdk failed\n");
    }
    let cflags: Vec<String> = String::from_utf8_lossy(&raw.stdout)
        .split_whitespace()
        .map(str::to_owned)
        .collect();

    // The C shim.
    let mut build = cc::Build::new();
    build.file("src/shim.c").opt_level(3).warnings(true);
    for f in &cflags {
        build.flag(f);
    }
    build.compile("dpdk_shim");

    // Bindings.
    let out = PathBuf::from(env::var("OUT_DIR").expect("OUT_DIR"));
    let bindings = bindgen::Builder::default()
        .header("src/shim.h")
        .clang_args(&cflags)
        .allowlist_function("rte_.*|shim_.*")
        .allowlist_type("rte_.*|shim_.*")
        .allowlist_var("RTE_.*|rte_.*|SHIM_.*")
        // Packed in DPDK but holding an aligned member: rustc refuses the layout.
        .opaque_type("rte_arp_ipv4")
        .opaque_type("rte_arp_hdr")
        .opaque_type("rte_l2tpv2_combined_msg_hdr")
        .no_debug("rte_flow_item_gtp_psc")
        // Function-like macros such as RTE_BIT64(n) in flag constants: let clang evaluate them.
        .clang_macro_fallback()
        .derive_default(true)
        .layout_tests(false)
        .generate_comments(false)
        .prepend_enum_name(false)
        .default_enum_style(bindgen::EnumVariation::Consts)
        .parse_callbacks(Box::new(bindgen::CargoCallbacks::new()))
        .generate()
        .unwrap_or_else(|e| panic!("{MISSING}\nbindgen failed: {e}\n"));
    bindings
        .write_to_file(out.join("bindings.rs"))
        .expect("write bindings.rs");

    // pkg-config already emitted the link lines for libdpdk; the shim library was emitted by
    // cc before them, so its references into librte_* resolve.
    for p in &lib.link_paths {
        println!("cargo:lib_dir={}", p.display());
    }
}
