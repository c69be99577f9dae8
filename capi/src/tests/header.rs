//! The committed `include/bypass.h` is what cbindgen makes from this crate now.

use std::path::Path;

#[test]
fn the_committed_header_is_current() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    let config = cbindgen::Config::from_file(dir.join("cbindgen.toml")).expect("cbindgen.toml");
    let fresh = cbindgen::Builder::new()
        .with_crate(dir)
        .with_config(config)
        .generate()
        .expect("cbindgen could not generate the header");
    let mut now = Vec::new();
    fresh.write(&mut now);
    let path = dir.join("include/bypass.h");
    let committed = std::fs::read(&path).unwrap_or_default();
    if now == committed {
        return;
    }
    if std::env::var_os("BYPASS_UPDATE_HEADER").is_some() {
        std::fs::write(&path, &now).expect("writing include/bypass.h");
        eprintln!("updated {}", path.display());
        return;
    }
    panic!(
        "capi/include/bypass.h differs from what cbindgen generates from capi/src now.\n\
         Regenerate it and commit the result:\n\
         \n    BYPASS_UPDATE_HEADER=1 cargo test -p bypass-capi header\n"
    );
}
