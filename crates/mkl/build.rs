//! Links oneMKL statically (LP64 interface, sequential layer: threads come from our rayon tiles).
//!
//! The libraries come from PyPI's `mkl-static` wheel, laid out by `scripts/setup-mkl.sh`, and are
//! found in `$THRIVE_MKL_LIB`, else `$MKLROOT/lib`, else `~/.cache/thrive/mkl/lib` (build_support.rs,
//! which also words the one-line message a build without them stops with).
//! MKL's three archives refer to each other, so they are given to the linker as one GROUP through
//! a one-line linker script (the way glibc's libc.so is a script): a library crate cannot pass
//! `--start-group` to its dependents' link.

use std::path::PathBuf;

include!("build_support.rs");

fn main() {
    if std::env::var_os("CARGO_FEATURE_LINK").is_none() {
        return;
    }
    println!("cargo:rerun-if-env-changed=THRIVE_MKL_LIB");
    println!("cargo:rerun-if-env-changed=MKLROOT");
    let dir = mkl_lib_dir(|name| std::env::var_os(name));
    let missing = missing_archives(&dir);
    if !missing.is_empty() {
        panic!("{}", missing_message(&dir, &missing));
    }
    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    let paths: Vec<String> = ARCHIVES.iter().map(|a| dir.join(a).display().to_string()).collect();
    std::fs::write(out.join("libthrive_mkl_group.a"), format!("GROUP ( {} )\n", paths.join(" ")))
        .expect("write the MKL linker script");
    for a in ARCHIVES {
        println!("cargo:rerun-if-changed={}", dir.join(a).display());
    }
    println!("cargo:rustc-link-search=native={}", out.display());
    println!("cargo:rustc-link-lib=static:-bundle=thrive_mkl_group");
    for lib in ["pthread", "m", "dl"] {
        println!("cargo:rustc-link-lib=dylib={lib}");
    }
    println!("cargo:lib_dir={}", dir.display());
}
