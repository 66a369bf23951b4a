//! What the sft tests share: the Gemma 3 270M GGUF if it is here, the reference batch of the
//! parity fixtures, and tensor comparisons.
#![allow(dead_code)] // each test file uses its own part

use candle_core::{DType, Tensor};
use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use thrive_sft::Batch;

/// The GGUF, or None (test skipped) when it is absent and no one asked for it by name.
///
/// A skip is visible although cargo captures a test's output: the line goes straight to the
/// process's stderr, and when the test binary exits it prints how many tests it skipped.
pub fn gguf(test: &str) -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("THRIVE_GEMMA3_GGUF") {
        let path = PathBuf::from(path);
        assert!(path.is_file(), "THRIVE_GEMMA3_GGUF={} does not exist", path.display());
        return Some(path);
    }
    let cache = std::env::var_os("THRIVE_CACHE")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/thrive")))
        .unwrap_or_default();
    let path = cache.join("gemma3-270m/gemma-3-270m-q4_k_m.gguf");
    if path.is_file() {
        return Some(path);
    }
    skipped(test, &format!("{} is missing (bash scripts/fetch-gemma3.sh, or set THRIVE_GEMMA3_GGUF)", path.display()));
    None
}

static SKIPPED: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

extern "C" {
    fn atexit(f: extern "C" fn()) -> std::os::raw::c_int;
}

extern "C" fn report_skips() {
    let n = SKIPPED.load(std::sync::atomic::Ordering::SeqCst);
    let _ = writeln!(std::io::stderr(), "SKIPPED {n} real-weights test(s) of this binary: they passed without running");
}

/// Says on stderr, past cargo's capture, that `test` was skipped, and counts it for the line
/// printed at exit.
fn skipped(test: &str, why: &str) {
    static REGISTER: std::sync::Once = std::sync::Once::new();
    // SAFETY: atexit is the C library's; report_skips only reads an atomic and writes to stderr.
    REGISTER.call_once(|| unsafe {
        atexit(report_skips);
    });
    SKIPPED.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    let _ = writeln!(std::io::stderr(), "SKIPPED {test}: {why}");
}

/// The lowercase hex SHA-256 of a file.
pub fn sha256_file(path: &Path) -> String {
    use sha2::Digest;
    let mut hasher = sha2::Sha256::new();
    let mut file = std::fs::File::open(path).unwrap();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = std::io::Read::read(&mut file, &mut buf).unwrap();
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    hasher.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

/// The batch stored in a parity fixture's reference.safetensors (targets = attention mask).
pub fn batch(r: &HashMap<String, Tensor>) -> Batch {
    let ids = r["input_ids"].to_dtype(DType::U32).unwrap();
    let mask: Vec<Vec<u8>> = r["attention_mask"]
        .to_vec2::<i64>()
        .unwrap()
        .into_iter()
        .map(|row| row.into_iter().map(|m| m as u8).collect())
        .collect();
    Batch { input_ids: ids, attention_mask: mask.clone(), target_mask: mask }
}

pub fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
    (a - b).unwrap().abs().unwrap().flatten_all().unwrap().max(0).unwrap().to_scalar::<f32>().unwrap()
}

pub fn max_abs(a: &Tensor) -> f32 {
    a.abs().unwrap().flatten_all().unwrap().max(0).unwrap().to_scalar::<f32>().unwrap()
}
