//! What the sft tests share: the Gemma 3 270M GGUF if it is here, the reference batch of the
//! parity fixtures, and tensor comparisons.
#![allow(dead_code)] // each test file uses its own part

use candle_core::{DType, Tensor};
use std::collections::HashMap;
use std::path::PathBuf;
use thrive_sft::Batch;

/// The GGUF, or None (test skipped) when it is absent and no one asked for it by name.
pub fn gguf() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("THRIVE_GEMMA3_GGUF") {
        let path = PathBuf::from(path);
        assert!(path.is_file(), "THRIVE_GEMMA3_GGUF={} does not exist", path.display());
        return Some(path);
    }
    let cache = std::env::var_os("THRIVE_CACHE")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/thrive")))?;
    let path = cache.join("gemma3-270m/gemma-3-270m-q4_k_m.gguf");
    if path.is_file() {
        Some(path)
    } else {
        println!("skipped: {} is missing; run scripts/fetch-gemma3.sh", path.display());
        None
    }
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
