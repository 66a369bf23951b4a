//! Links oneMKL statically (LP64 interface, sequential layer: threads come from our rayon tiles).
//!
//! The libraries come from PyPI's `mkl-static` wheel, laid out by `scripts/setup-mkl.sh`, and are
//! found in `$THRIVE_MKL_LIB`, else `$MKLROOT/lib`, else `~/.cache/thrive/mkl/lib`.
//! MKL's three archives refer to each other, so they are given to the linker as one GROUP through
//! a one-line linker script (the way glibc's libc.so is a script): a library crate cannot pass
//! `--start-group` to its dependents' link.

use std::path::PathBuf;

const ARCHIVES: [&str; 3] = ["libmkl_intel_lp64.a", "libmkl_sequential.a", "libmkl_core.a"];

fn main() {
    if std::env::var_os("CARGO_FEATURE_LINK").is_none() {
        return;
    }
    println!("cargo:rerun-if-env-changed=THRIVE_MKL_LIB");
    println!("cargo:rerun-if-env-changed=MKLROOT");
    let dir = std::env::var_os("THRIVE_MKL_LIB")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("MKLROOT").map(|r| PathBuf::from(r).join("lib")))
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/thrive/mkl/lib")))
        .unwrap_or_default();
    let missing: Vec<_> = ARCHIVES.iter().filter(|a| !dir.join(a).is_file()).collect();
    if !missing.is_empty() {
        panic!(
            "thrive-mkl: {missing:?} not found in {}. Run `bash scripts/setup-mkl.sh` (it lays out PyPI's \
             mkl-static in ~/.cache/thrive/mkl), or set THRIVE_MKL_LIB to a directory holding them.",
            dir.display()
        );
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
