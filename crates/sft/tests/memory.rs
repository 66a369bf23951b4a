//! The memory-saving paths of the training step compute what the plain path computes: gradient
//! checkpointing (layers recomputed in the backward pass, LoRA dropout masks replayed), the loss
//! over the vocabulary in chunks, frozen weights without gradients, and bf16 compute with f32
//! master copies. The plain path itself is checked against transformers + peft in parity.rs and
//! gemma3_parity.rs.

mod common;
use candle_core::{DType, Device, Tensor, Var};
use common::*;
use std::path::PathBuf;
use thrive_sft::{
    loss_and_grads, loss_and_grads_planned, next_token_loss, next_token_loss_in_chunks, AdamW, AdamWParams, Gemma,
    LoraConfig, LossPlan,
};

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name)
}

fn reference(name: &str) -> std::collections::HashMap<String, Tensor> {
    candle_core::safetensors::load(fixture(name).join("reference.safetensors"), &Device::Cpu).unwrap()
}

fn rng(seed: u64) -> thrive_core::Rng {
    thrive_core::Seeds::new(seed).stream(thrive_core::Stream::Training(1))
}

/// A LoRA model whose B matrices are random (not zero), so that every adapter gets a gradient.
fn lora_model(name: &str, dtype: DType, dropout: f64) -> (Gemma, Vec<Var>) {
    let mut model = Gemma::load(&fixture(name), dtype, &Device::Cpu).unwrap();
    let cfg = LoraConfig { rank: 4, alpha: 8.0, dropout, ..LoraConfig::default() };
    model.add_lora(&cfg, &mut rng(0)).unwrap();
    let vars: Vec<Var> = model.trainable().into_iter().map(|(_, v)| v).collect();
    for (i, v) in vars.iter().enumerate() {
        if i % 2 == 1 {
            v.set(&(Tensor::randn(0f32, 0.05, v.shape(), &Device::Cpu).unwrap())).unwrap();
        }
    }
    (model, vars)
}

fn assert_close(name: &str, got: &Tensor, want: &Tensor, rel: f32) {
    let scale = max_abs(want);
    assert!(scale > 0.0, "{name}: zero reference gradient");
    let diff = max_abs_diff(&got.to_dtype(DType::F32).unwrap(), &want.to_dtype(DType::F32).unwrap());
    assert!(diff <= rel * scale, "{name}: differs by {diff} (largest entry {scale})");
}

#[test]
fn gradient_checkpointing_gives_the_same_lora_gradients_and_dropout_masks() {
    for name in ["tiny-gemma2", "tiny-gemma3"] {
        let b = batch(&reference(name));
        let (model, vars) = lora_model(name, DType::F32, 0.1);
        let (mut r1, mut r2) = (rng(5), rng(5));
        let (l1, n1, g1) = loss_and_grads(&model, &b, Some(&mut r1), false, 20, &vars).unwrap();
        let (l2, n2, g2) = loss_and_grads(&model, &b, Some(&mut r2), true, 20, &vars).unwrap();
        assert_eq!(n1, n2);
        assert!((l1 - l2).abs() <= 1e-6 * l1.abs(), "{name}: loss {l1} vs {l2}");
        assert_eq!(r1.get_word_pos(), r2.get_word_pos(), "{name}: the dropout stream advanced differently");
        for (i, (a, c)) in g1.iter().zip(&g2).enumerate() {
            assert_close(&format!("{name} var {i}"), c, a, 1e-5);
        }
        // Dropout is on: a different stream gives other gradients, so the masks were replayed.
        let (_, _, g3) = loss_and_grads(&model, &b, Some(&mut rng(6)), true, 20, &vars).unwrap();
        assert!(max_abs_diff(&g3[0], &g1[0]) > 1e-4 * max_abs(&g1[0]), "{name}: dropout had no effect");
    }
}

#[test]
fn gradient_checkpointing_gives_the_same_full_fine_tuning_gradients() {
    for name in ["tiny-gemma2", "tiny-gemma3"] {
        let b = batch(&reference(name));
        let mut model = Gemma::load(&fixture(name), DType::F32, &Device::Cpu).unwrap();
        model.make_all_trainable().unwrap();
        let (names, vars): (Vec<String>, Vec<Var>) = model.trainable().into_iter().unzip();
        let (l1, _, g1) = loss_and_grads(&model, &b, None, false, 1, &vars).unwrap();
        let (l2, _, g2) = loss_and_grads(&model, &b, None, true, 1, &vars).unwrap();
        assert!((l1 - l2).abs() <= 1e-6 * l1.abs(), "{name}: loss {l1} vs {l2}");
        for ((n, a), c) in names.iter().zip(&g1).zip(&g2) {
            assert_close(&format!("{name} {n}"), c, a, 1e-5);
        }
    }
}

#[test]
fn the_loss_in_chunks_equals_the_loss_at_once() {
    for name in ["tiny-gemma2", "tiny-gemma3"] {
        let b = batch(&reference(name));
        let (model, vars) = lora_model(name, DType::F32, 0.0);
        let (whole, n) = next_token_loss(&model, &b, None).unwrap();
        let gw = whole.backward().unwrap();
        for rows in [1, 4, n - 1] {
            let (chunked, _) = next_token_loss_in_chunks(&model, &b, rows).unwrap();
            let (x, y) = (whole.to_scalar::<f32>().unwrap(), chunked.to_scalar::<f32>().unwrap());
            assert!((x - y).abs() <= 1e-6 * x.abs(), "{name}, {rows} rows a chunk: loss {y} vs {x}");
            let gc = chunked.backward().unwrap();
            for (i, v) in vars.iter().enumerate() {
                assert_close(&format!("{name} var {i}, {rows} rows"), gc.get(v).unwrap(), gw.get(v).unwrap(), 1e-5);
            }
        }
    }
}

#[test]
fn the_gpu_backward_passes_equal_autograd_and_the_fused_cpu_loss() {
    // RMSNorm, attention and each loss chunk have hand-written backward passes (candle's fused
    // norm and softmax, no autograd graph; on the CPU with a frozen output layer, the loss's
    // gradient is computed in the forward pass, as Liger's fused linear cross-entropy). Checked
    // against autograd through the norms and attention and the CPU's fused cross-entropy op,
    // for LoRA and for full fine-tuning (the tied embedding
    // takes a gradient through the loss too), with Gemma 2's soft-capping and Gemma 3's QK norms,
    // with and without gradient checkpointing, in one loss chunk and in several.
    for name in ["tiny-gemma2", "tiny-gemma3"] {
        let b = batch(&reference(name));
        for full in [false, true] {
            let (mut model, vars) = if full {
                let mut m = Gemma::load(&fixture(name), DType::F32, &Device::Cpu).unwrap();
                m.make_all_trainable().unwrap();
                let vars = m.trainable().into_iter().map(|(_, v)| v).collect();
                (m, vars)
            } else {
                lora_model(name, DType::F32, 0.0)
            };
            model.manual_backward = Some(false);
            let plain = LossPlan::default();
            let (l0, n0, g0) = loss_and_grads_planned(&model, &b, None, false, 7, &vars, plain).unwrap();
            model.manual_backward = Some(true);
            for (rows, checkpointing) in [(None, false), (Some(3), false), (None, true)] {
                let plan = LossPlan { chunk_rows: rows };
                let (l1, n1, g1) = loss_and_grads_planned(&model, &b, None, checkpointing, 7, &vars, plan).unwrap();
                let case = format!("{name} full={full} rows={rows:?} checkpointing={checkpointing}");
                assert_eq!(n0, n1);
                assert!((l0 - l1).abs() <= 1e-6 * l0.abs(), "{case}: loss {l1} vs {l0}");
                for (i, (a, c)) in g0.iter().zip(&g1).enumerate() {
                    if max_abs(a) > 0.0 {
                        assert_close(&format!("{case} var {i}"), c, a, 1e-5);
                    }
                }
            }
        }
    }
}

#[test]
fn frozen_weights_get_no_gradient() {
    // candle's own matmul would store a gradient for every weight it multiplies, the tied
    // (vocabulary, hidden) embedding included.
    let b = batch(&reference("tiny-gemma2"));
    let (model, vars) = lora_model("tiny-gemma2", DType::F32, 0.0);
    let (loss, _) = next_token_loss(&model, &b, None).unwrap();
    let store = loss.backward().unwrap();
    let (vocab, hidden) = (model.cfg.vocab_size, model.cfg.hidden_size);
    let ids: Vec<_> = store.get_ids().copied().collect();
    for id in &ids {
        let g = store.get_id(*id).unwrap();
        assert_ne!(g.dims(), [vocab, hidden], "a gradient of the frozen embedding was computed");
        assert_ne!(g.dims(), [model.cfg.intermediate_size, hidden], "a gradient of a frozen MLP weight was computed");
    }
    assert!(vars.iter().all(|v| store.get(v).is_some()), "every adapter still gets its gradient");
}

#[test]
fn bf16_compute_stays_within_bf16_tolerance_of_f32_with_f32_state() {
    for name in ["tiny-gemma2", "tiny-gemma3"] {
        let b = batch(&reference(name));
        let (m32, v32) = lora_model(name, DType::F32, 0.0);
        let (m16, v16) = lora_model(name, DType::BF16, 0.0);
        for (a, c) in v32.iter().zip(&v16) {
            c.set(a.as_tensor()).unwrap(); // the same adapters (both drew B from randn)
        }
        let (l32, _, g32) = loss_and_grads(&m32, &b, None, false, 1, &v32).unwrap();
        // bf16 through both backward paths: the CPU's and the GPU's hand-written one.
        let mut m16 = m16;
        for manual in [false, true] {
            m16.manual_backward = Some(manual);
            let (l16, _, g16) = loss_and_grads(&m16, &b, None, false, 1, &v16).unwrap();
            assert!((l32 - l16).abs() <= 2e-2 * l32.abs(), "{name} manual={manual}: bf16 loss {l16} vs f32 {l32}");
            for (i, (a, c)) in g32.iter().zip(&g16).enumerate() {
                assert_eq!(c.dtype(), DType::F32, "{name}: gradient {i} is not f32");
                assert_close(&format!("{name} manual={manual} bf16 var {i}"), c, a, 0.1);
            }
        }
        let opt = AdamW::new(v16.clone(), AdamWParams::default()).unwrap();
        assert!(v16.iter().all(|v| v.dtype() == DType::F32), "{name}: LoRA masters are f32");
        assert!(opt.moments.iter().all(|(m, v)| m.dtype() == DType::F32 && v.dtype() == DType::F32));
    }
}

#[test]
fn a_bf16_full_fine_tuning_step_at_the_papers_lr_moves_f32_masters_as_the_f32_path() {
    // lr 8e-6 is below bf16's resolution at most weights' magnitude: masters kept in bf16
    // would not move at all.
    let name = "tiny-gemma2";
    let b = batch(&reference(name));
    let step = |dtype: DType| -> Vec<(String, Tensor, Tensor)> {
        let mut model = Gemma::load_full(&fixture(name), dtype, &Device::Cpu).unwrap();
        assert_eq!(model.dtype(), dtype);
        let (names, vars): (Vec<String>, Vec<Var>) = model.trainable().into_iter().unzip();
        assert!(vars.iter().all(|v| v.dtype() == DType::F32), "full fine-tuning masters are f32");
        let before: Vec<Tensor> = vars.iter().map(|v| v.as_tensor().copy().unwrap()).collect();
        let (_, _, grads) = loss_and_grads(&model, &b, None, false, 1, &vars).unwrap();
        let mut opt =
            AdamW::new(vars.clone(), AdamWParams { lr: 8e-6, weight_decay: 0.0, ..Default::default() }).unwrap();
        opt.step(&grads, 8e-6).unwrap();
        names.into_iter().zip(before).zip(vars).map(|((n, b), v)| (n, b, v.as_tensor().copy().unwrap())).collect()
    };
    let (f32s, bf16s) = (step(DType::F32), step(DType::BF16));
    let (mut agree, mut moved, mut total) = (0usize, 0usize, 0usize);
    for ((name, b32, a32), (_, b16, a16)) in f32s.iter().zip(&bf16s) {
        assert_eq!(max_abs_diff(b32, b16), 0.0, "{name}: bf16 run did not start from the f32 weights");
        let d32: Vec<f32> = (a32 - b32).unwrap().flatten_all().unwrap().to_vec1().unwrap();
        let d16: Vec<f32> = (a16 - b16).unwrap().flatten_all().unwrap().to_vec1().unwrap();
        for (x, y) in d32.iter().zip(&d16) {
            total += 1;
            moved += (*y != 0.0) as usize;
            agree += (x.signum() == y.signum() && (x.abs() - y.abs()).abs() <= 0.05 * 8e-6) as usize;
        }
    }
    assert!(moved as f64 > 0.9 * total as f64, "only {moved} of {total} weights moved in bf16");
    assert!(agree as f64 > 0.9 * total as f64, "only {agree} of {total} bf16 updates match the f32 step");
}
