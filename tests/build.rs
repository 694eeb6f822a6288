//! Compiles `c/ring_shim.c`, Xen's shared-ring macros from `<xen/io/ring.h>`
//! (Debian's `libxen-dev`), into a static library for the differential test
//! `tests/ring_diff.rs`, which links it with `#[link]`.

fn main() {
    println!("cargo::rerun-if-changed=c/ring_shim.c");
    let out = std::env::var("OUT_DIR").expect("cargo sets OUT_DIR");
    if !std::path::Path::new("/usr/include/xen/io/ring.h").exists() {
        panic!(
            "Xen's public headers are missing (/usr/include/xen/io/ring.h). The ring \
             differential test compiles Xen's own ring.h macros: install Debian's \
             libxen-dev (`sudo apt-get install libxen-dev`); .ci/run does."
        );
    }
    cc::Build::new()
        .file("c/ring_shim.c")
        .std("c11")
        .warnings(true)
        .extra_warnings(true)
        .flag("-Werror")
        // No link directive for the library crate: only the test uses it.
        .cargo_metadata(false)
        .compile("ring_shim");
    println!("cargo::rustc-link-search=native={out}");
}
