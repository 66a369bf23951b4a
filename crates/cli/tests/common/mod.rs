//! What the `thrive` binary's tests share: running it, expecting success or a clear failure.
#![allow(dead_code)] // each test file uses its own part

pub mod run_toml;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// Runs `thrive` with warnings-only logging and collects its output.
pub fn thrive<S: AsRef<str>>(args: &[S]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_thrive"))
        .args(["--log", "warn"])
        .args(args.iter().map(AsRef::as_ref))
        .output()
        .expect("run thrive")
}

/// Runs `thrive`, expects success and returns its stdout.
pub fn ok<S: AsRef<str>>(args: &[S]) -> String {
    let o = thrive(args);
    let args: Vec<&str> = args.iter().map(AsRef::as_ref).collect();
    assert!(o.status.success(), "{args:?} failed:\n{}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8(o.stdout).unwrap()
}

/// Runs `thrive`, expects a non-zero exit without a panic and every needle in its stderr.
pub fn fails<S: AsRef<str>>(args: &[S], needles: &[&str]) {
    let o = thrive(args);
    let args: Vec<&str> = args.iter().map(AsRef::as_ref).collect();
    assert!(!o.status.success(), "{args:?} succeeded");
    let err = String::from_utf8_lossy(&o.stderr);
    for n in needles {
        assert!(err.contains(n), "{args:?}: expected `{n}` in:\n{err}");
    }
    assert!(!err.contains("panicked"), "{args:?} panicked:\n{err}");
}

/// The `crates/` folder.
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

pub fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}
