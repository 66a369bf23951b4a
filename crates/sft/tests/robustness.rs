//! Gradient clipping and clear errors for bad model directories and adapters.

use candle_core::{DType, Device, Tensor};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use thrive_sft::*;

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tiny-gemma2")
}

fn model_with_adapter() -> Gemma {
    let mut model = Gemma::load(&fixture(), DType::F32, &Device::Cpu).unwrap();
    let cfg = LoraConfig { rank: 4, alpha: 8.0, ..LoraConfig::default() };
    model.add_lora(&cfg, &mut thrive_core::Seeds::new(0).stream(thrive_core::Stream::Training(1))).unwrap();
    model.load_lora_weights(&fixture().join("adapter/adapter_model.safetensors")).unwrap();
    model
}

fn batch() -> Batch {
    let r: HashMap<String, Tensor> =
        candle_core::safetensors::load(fixture().join("reference.safetensors"), &Device::Cpu).unwrap();
    let mask: Vec<Vec<u8>> = r["attention_mask"]
        .to_vec2::<i64>()
        .unwrap()
        .into_iter()
        .map(|row| row.into_iter().map(|v| v as u8).collect())
        .collect();
    Batch { input_ids: r["input_ids"].to_dtype(DType::U32).unwrap(), attention_mask: mask.clone(), target_mask: mask }
}

#[test]
fn clipping_bounds_the_global_norm() {
    let mut model = model_with_adapter();
    let (loss, _) = next_token_loss(&model, &batch(), None).unwrap();
    let store = loss.backward().unwrap();
    let vars: Vec<_> = model.trainable().into_iter().map(|(_, v)| v).collect();
    let mut grads = grads_of(&store, &vars).unwrap();
    let before = clip_grad_norm(&mut grads, 1e-3).unwrap();
    assert!(before > 1e-3);
    let after = clip_grad_norm(&mut grads, f64::INFINITY).unwrap();
    assert!((after - 1e-3).abs() < 1e-6, "{after}");
}

#[test]
fn bad_model_directories_and_adapters_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let err = Gemma::load(dir.path(), DType::F32, &Device::Cpu).unwrap_err().to_string();
    assert!(err.contains("config.json"), "{err}");
    std::fs::copy(fixture().join("config.json"), dir.path().join("config.json")).unwrap();
    let err = Gemma::load(dir.path(), DType::F32, &Device::Cpu).unwrap_err().to_string();
    assert!(err.contains("model.safetensors"), "{err}");
    // Weights of another shape than the config: the tensor is named.
    let cfg = std::fs::read_to_string(fixture().join("config.json"))
        .unwrap()
        .replace("\"vocab_size\": 400", "\"vocab_size\": 401");
    std::fs::write(dir.path().join("config.json"), cfg).unwrap();
    std::fs::copy(fixture().join("model.safetensors"), dir.path().join("model.safetensors")).unwrap();
    let err = Gemma::load(dir.path(), DType::F32, &Device::Cpu).unwrap_err().to_string();
    assert!(err.contains("embed_tokens") && err.contains("401"), "{err}");
    // An adapter of another rank is refused with the tensor's name.
    let mut model = Gemma::load(&fixture(), DType::F32, &Device::Cpu).unwrap();
    let cfg = LoraConfig { rank: 8, ..LoraConfig::default() };
    model.add_lora(&cfg, &mut thrive_core::Seeds::new(0).stream(thrive_core::Stream::Training(1))).unwrap();
    let err = model.load_lora_weights(&fixture().join("adapter/adapter_model.safetensors")).unwrap_err().to_string();
    assert!(err.contains("lora_A") && err.contains("rank"), "{err}");
    // An unknown target module is refused.
    let cfg = LoraConfig { targets: vec!["qkv".into()], ..LoraConfig::default() };
    let err = model.add_lora(&cfg, &mut thrive_core::Seeds::new(0).stream(thrive_core::Stream::Training(1)));
    assert!(err.unwrap_err().to_string().contains("qkv"));
}
