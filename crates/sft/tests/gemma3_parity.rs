//! Gemma 3 parity with transformers 5.24 + peft on a tiny random Gemma 3 (three layers: sliding,
//! global, sliding with window 4 < sequence 10; QK-norm; RoPE base 1e4 on sliding layers and 1e6 on
//! the global one; GQA; no soft-capping; a right-padded row), from scripts/gemma3_fixtures.py:
//! logits, the loss, every parameter's gradient under full fine-tuning (QK-norm weights included),
//! the LoRA adapters' gradients, and KV-cached decoding against the full forward pass.
//! Tolerances as in parity.rs (f32 on CPU both sides).

mod common;
use candle_core::{DType, Device, Tensor};
use common::*;
use std::collections::HashMap;
use std::path::PathBuf;
use thrive_sft::{next_token_loss, Gemma, KvCache, LoraConfig};

fn fixture() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tiny-gemma3")
}

fn reference() -> HashMap<String, Tensor> {
    candle_core::safetensors::load(fixture().join("reference.safetensors"), &Device::Cpu).unwrap()
}

fn load() -> Gemma {
    Gemma::load(&fixture(), DType::F32, &Device::Cpu).unwrap()
}

#[test]
fn config_is_read_as_gemma3() {
    let cfg = load().cfg;
    assert!(cfg.is_gemma3());
    assert_eq!((cfg.window(0), cfg.window(1), cfg.window(2)), (Some(4), None, Some(4)));
    assert_eq!((cfg.rope_base(0), cfg.rope_base(1)), (10_000.0, 1_000_000.0));
}

#[test]
fn logits_loss_and_full_gradients_match_transformers() {
    let r = reference();
    let mut model = load();
    let b = batch(&r);
    let logits = model.forward(&b.input_ids, &b.attention_mask).unwrap();
    let diff = max_abs_diff(&logits, &r["logits"]);
    let scale = max_abs(&r["logits"]);
    assert!(diff < 1e-4 * scale.max(1.0), "logits differ by {diff} (largest {scale})");

    model.make_all_trainable().unwrap();
    let (loss, _) = next_token_loss(&model, &b, None).unwrap();
    let (got, want) = (loss.to_scalar::<f32>().unwrap(), r["loss"].to_vec1::<f32>().unwrap()[0]);
    assert!((got - want).abs() <= 1e-5 * want.abs(), "loss {got} vs {want}");
    let grads = loss.backward().unwrap();
    let trainable = model.trainable();
    let expected = r.keys().filter(|k| k.starts_with("full.")).count();
    assert_eq!(trainable.len(), expected, "every parameter is trained");
    assert!(trainable.iter().any(|(n, _)| n.ends_with("self_attn.q_norm.weight")));
    for (name, var) in trainable {
        let g = grads.get(var.as_tensor()).unwrap_or_else(|| panic!("{name}: no gradient"));
        let w = r.get(&format!("full.{name}")).unwrap_or_else(|| panic!("{name}: not in the fixture"));
        let scale = max_abs(w);
        assert!(scale > 0.0, "{name}: zero reference gradient");
        let diff = max_abs_diff(g, w);
        assert!(diff <= 1e-3 * scale, "{name}: gradient differs by {diff} (largest entry {scale})");
    }
}

#[test]
fn lora_gradients_match_peft() {
    let r = reference();
    let mut model = load();
    let cfg = LoraConfig { rank: 4, alpha: 8.0, ..LoraConfig::default() };
    model.add_lora(&cfg, &mut thrive_core::Seeds::new(0).stream(thrive_core::Stream::Training(0))).unwrap();
    // The adapter values peft had (B off zero, so every gradient is non-zero).
    let values: HashMap<String, Tensor> =
        r.iter().filter_map(|(k, v)| k.strip_prefix("lora_value.").map(|n| (n.to_string(), v.clone()))).collect();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("adapter_model.safetensors");
    candle_core::safetensors::save(&values, &path).unwrap();
    model.load_lora_weights(&path).unwrap();
    let (loss, _) = next_token_loss(&model, &batch(&r), None).unwrap();
    let (got, want) = (loss.to_scalar::<f32>().unwrap(), r["lora_loss"].to_vec1::<f32>().unwrap()[0]);
    assert!((got - want).abs() <= 1e-5 * want.abs(), "loss {got} vs {want}");
    let grads = loss.backward().unwrap();
    let trainable = model.trainable();
    assert_eq!(trainable.len(), values.len());
    for (name, var) in trainable {
        let g = grads.get(var.as_tensor()).unwrap_or_else(|| panic!("{name}: no gradient"));
        let w = &r[&format!("lora.{name}")];
        let diff = max_abs_diff(g, w);
        assert!(diff <= 1e-3 * max_abs(w), "{name}: gradient differs by {diff}");
    }
}

#[test]
fn cached_decoding_matches_the_full_forward_pass() {
    let r = reference();
    let model = load();
    let ids: Vec<u32> = r["input_ids"].to_dtype(DType::U32).unwrap().get(0).unwrap().to_vec1().unwrap();
    let full = model.forward(&Tensor::new(ids.as_slice(), &Device::Cpu).unwrap().unsqueeze(0).unwrap(), &[vec![1; 10]]);
    let full = full.unwrap().squeeze(0).unwrap();
    // Prompt of 3 tokens, then one token at a time past the window of 4.
    let mut cache = KvCache::new(&model, 10);
    let prompt = Tensor::new(&ids[..3], &Device::Cpu).unwrap().unsqueeze(0).unwrap();
    let mut logits = model.decode_step(&prompt, &[vec![0, 1, 2]], &[vec![1; 3]], &mut cache).unwrap();
    for t in 3..=ids.len() {
        let want = full.get(t - 1).unwrap();
        let diff = max_abs_diff(&logits.squeeze(0).unwrap(), &want);
        assert!(diff < 1e-4 * max_abs(&want).max(1.0), "position {}: {diff}", t - 1);
        if t == ids.len() {
            break;
        }
        let step = Tensor::new(&[[ids[t]]], &Device::Cpu).unwrap();
        logits = model.decode_step(&step, &[vec![t as u32]], &[vec![1; t + 1]], &mut cache).unwrap();
    }
    assert_eq!(logits.dims(), &[1, 400]);
}
