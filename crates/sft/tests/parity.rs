//! Parity with Hugging Face transformers 5.24 + peft 0.21.2 on a tiny random Gemma 2 (two layers:
//! one sliding-window with window 4 < sequence 10, one global; both soft-cappings on; GQA; a
//! right-padded row). The fixtures come from scripts/sft_fixtures.py.
//!
//! Tolerances (f32 on CPU both sides; the only differences are summation order and the tanh/GELU
//! kernels): logits 1e-4 absolute (they are capped at ±3), loss 1e-5 relative, gradients 1e-3
//! relative to each tensor's largest entry (backward chains more reductions), losses after AdamW
//! steps 1e-4 relative (Adam divides by √v, which amplifies tiny gradient differences at step 1).

mod common;
use candle_core::{DType, Device, Tensor};
use common::*;
use std::collections::HashMap;
use std::path::PathBuf;
use thrive_sft::{next_token_loss, AdamW, AdamWParams, Gemma, LoraConfig};

fn fixture() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tiny-gemma2")
}

fn reference() -> HashMap<String, Tensor> {
    candle_core::safetensors::load(fixture().join("reference.safetensors"), &Device::Cpu).unwrap()
}

fn lora_model() -> Gemma {
    let mut model = Gemma::load(&fixture(), DType::F32, &Device::Cpu).unwrap();
    let cfg = LoraConfig { rank: 4, alpha: 8.0, ..LoraConfig::default() };
    model.add_lora(&cfg, &mut thrive_core::Seeds::new(0).stream(thrive_core::Stream::Training(0))).unwrap();
    model.load_lora_weights(&fixture().join("adapter/adapter_model.safetensors")).unwrap();
    model
}

#[test]
fn logits_match_transformers() {
    let r = reference();
    let model = lora_model();
    let b = batch(&r);
    let logits = model.forward(&b.input_ids, &b.attention_mask).unwrap();
    assert_eq!(logits.dims(), r["logits"].dims());
    let diff = max_abs_diff(&logits, &r["logits"]);
    assert!(diff < 1e-4, "logits differ by {diff}");
}

#[test]
fn loss_and_every_lora_gradient_match_peft() {
    let r = reference();
    let mut model = lora_model();
    let (loss, n) = next_token_loss(&model, &batch(&r), None).unwrap();
    assert_eq!(n, 9 + 6);
    let loss_v = loss.to_scalar::<f32>().unwrap();
    let want = r["loss"].to_vec1::<f32>().unwrap()[0];
    assert!(((loss_v - want) / want).abs() < 1e-5, "loss {loss_v} vs {want}");
    let grads = loss.backward().unwrap();
    let trainable = model.trainable();
    assert_eq!(trainable.len(), 2 * 7 * 2, "A and B of 7 modules in 2 layers");
    for (name, var) in trainable {
        let g = grads.get(&var).unwrap_or_else(|| panic!("no gradient for {name}"));
        let want = &r[&format!("grad.{name}")];
        let scale = max_abs(want);
        assert!(scale > 0.0, "reference gradient of {name} is zero");
        let diff = max_abs_diff(g, want);
        assert!(diff <= 1e-3 * scale, "{name}: gradient differs by {diff} (largest entry {scale})");
    }
}

#[test]
fn loss_after_adamw_steps_matches_torch() {
    let r = reference();
    let mut model = lora_model();
    let b = batch(&r);
    let vars: Vec<_> = model.trainable().into_iter().map(|(_, v)| v).collect();
    let params = AdamWParams { lr: 1e-2, weight_decay: 0.01, ..AdamWParams::default() };
    let mut opt = AdamW::new(vars, params).unwrap();
    let (loss, _) = next_token_loss(&model, &b, None).unwrap();
    let mut grads = loss.backward().unwrap();
    let want = r["losses_after_steps"].to_vec1::<f32>().unwrap();
    for (step, want) in want.iter().enumerate() {
        opt.step(&thrive_sft::grads_of(&grads, &opt.vars.clone()).unwrap(), 1e-2).unwrap();
        let (loss, _) = next_token_loss(&model, &b, None).unwrap();
        let got = loss.to_scalar::<f32>().unwrap();
        assert!(((got - want) / want).abs() < 1e-4, "step {}: loss {got} vs {want}", step + 1);
        grads = loss.backward().unwrap();
    }
}

#[test]
fn full_fine_tuning_gradients_match_transformers() {
    // Every parameter of the base model (no adapter), the tied embedding included
    // (fixture from scripts/sft_full_fixtures.py).
    let r = reference();
    let want: HashMap<String, Tensor> =
        candle_core::safetensors::load(fixture().join("full_grads.safetensors"), &Device::Cpu).unwrap();
    let mut model = Gemma::load(&fixture(), DType::F32, &Device::Cpu).unwrap();
    model.make_all_trainable().unwrap();
    let (loss, _) = next_token_loss(&model, &batch(&r), None).unwrap();
    let expected = want["loss"].to_vec1::<f32>().unwrap()[0];
    let got = loss.to_scalar::<f32>().unwrap();
    assert!((got - expected).abs() <= 1e-5 * expected.abs(), "loss {got} vs {expected}");
    let grads = loss.backward().unwrap();
    let trainable = model.trainable();
    assert_eq!(trainable.len(), want.len() - 1, "every parameter is trained");
    for (name, var) in trainable {
        let g = grads.get(var.as_tensor()).unwrap_or_else(|| panic!("{name}: no gradient"));
        let w = want.get(&format!("grad.{name}")).unwrap_or_else(|| panic!("{name}: not in the fixture"));
        let scale = max_abs(w);
        assert!(scale > 0.0, "{name}: zero reference gradient");
        let diff = max_abs_diff(g, w);
        assert!(diff <= 1e-3 * scale, "{name}: gradient differs by {diff} (largest entry {scale})");
    }
}
