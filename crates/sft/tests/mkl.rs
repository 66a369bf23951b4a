//! The `mkl` feature's products (crates/sft/src/matmul/mkl.rs) against candle's own: values, shapes,
//! broadcasting, gradients, bf16 rounding, and independence of the thread count for a whole LoRA
//! step. The step itself is checked against transformers + peft by parity.rs, which also runs
//! with the feature (`cargo test -p thrive-sft --features mkl`, as .ci/run does).
#![cfg(feature = "mkl")]

mod common;
use candle_core::{DType, Device, Tensor, Var};
use common::*;
use std::path::PathBuf;
use thrive_sft::matmul::{mkl_products, Mm};
use thrive_sft::{device_for, loss_and_grads, Gemma, LoraConfig, Precision};

/// Deterministic values in [-1, 1) (no global random state: the thread test compares runs).
fn values(shape: &[usize], seed: u64) -> Tensor {
    let n: usize = shape.iter().product();
    let v: Vec<f32> = (0..n as u64)
        .map(|i| {
            let x = (i + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15).wrapping_add(seed.wrapping_mul(0xD1B5_4A32_D192_ED03));
            ((x >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect();
    Tensor::from_vec(v, shape, &Device::Cpu).unwrap()
}

fn assert_close(what: &str, got: &Tensor, want: &Tensor, rel: f32) {
    assert_eq!(got.dims(), want.dims(), "{what}: shape");
    let scale = max_abs(want).max(1e-6);
    let diff = max_abs_diff(&got.to_dtype(DType::F32).unwrap(), &want.to_dtype(DType::F32).unwrap());
    assert!(diff <= rel * scale, "{what}: differs by {diff} (largest entry {scale})");
}

/// The tiny Gemma 2 in `precision` with LoRA r 4 on every linear, B set to small nonzero values
/// (so that A gets a gradient too), and its trainable variables.
fn lora_model(dir: &std::path::Path, precision: Precision) -> (Gemma, Vec<Var>) {
    let mut model = Gemma::load(dir, precision, &Device::Cpu).unwrap();
    let cfg = LoraConfig { rank: 4, alpha: 8.0, ..LoraConfig::default() };
    let mut rng = thrive_core::Seeds::new(0).stream(thrive_core::Stream::Training(1));
    model.add_lora(&cfg, &mut rng).unwrap();
    let vars: Vec<Var> = model.trainable().into_iter().map(|(_, v)| v).collect();
    for (i, v) in vars.iter().enumerate().filter(|(i, _)| i % 2 == 1) {
        v.set(&(values(v.dims(), i as u64) * 0.05).unwrap()).unwrap();
    }
    (model, vars)
}

/// The tiny Gemma 2 in `precision` with the fixture's trained LoRA adapter (r 4), not merged.
fn with_fixture_adapter(precision: Precision) -> Gemma {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tiny-gemma2");
    let mut model = Gemma::load(&dir, precision, &Device::Cpu).unwrap();
    let cfg = LoraConfig { rank: 4, alpha: 8.0, ..LoraConfig::default() };
    model.add_lora(&cfg, &mut thrive_core::Seeds::new(0).stream(thrive_core::Stream::Training(0))).unwrap();
    model.load_lora_weights(&dir.join("adapter/adapter_model.safetensors")).unwrap();
    model
}

/// Runs `f` and says how many MKL products it took.
fn counting<T>(f: impl FnOnce() -> T) -> (T, u64) {
    let before = mkl_products();
    let out = f();
    (out, mkl_products() - before)
}

#[test]
fn f32_products_equal_candles_in_every_layout() {
    let a = values(&[2, 3, 700, 40], 1);
    let b = values(&[2, 3, 40, 1100], 2);
    let (got, calls) = counting(|| a.mm(&b).unwrap());
    assert!(calls >= 1, "the product did not go through MKL");
    assert_close("batched, across tile edges", &got, &a.matmul(&b).unwrap(), 1e-5);

    // Transposed views are read in place; a broadcast batch and a shared 2-D weight too.
    let at = values(&[2, 3, 40, 700], 3).transpose(2, 3).unwrap();
    assert_close("transposed lhs", &at.mm(&b).unwrap(), &at.matmul(&b).unwrap(), 1e-5);
    let x = values(&[4, 9, 16], 4);
    let w = values(&[24, 16], 5);
    assert_close(
        "shared weight",
        &x.broadcast_mm(&w.t().unwrap()).unwrap(),
        &x.broadcast_matmul(&w.t().unwrap()).unwrap(),
        1e-5,
    );
    let p = values(&[3, 1, 9, 16], 6);
    let q = values(&[1, 2, 16, 5], 7);
    assert_close("broadcast batch", &p.broadcast_mm(&q).unwrap(), &p.broadcast_matmul(&q).unwrap(), 1e-5);
    // A batch whose dimensions do not collapse to one stride is copied first (candle's own
    // kernel refuses it).
    let odd = values(&[3, 2, 9, 16], 8).transpose(0, 1).unwrap();
    let q2 = values(&[2, 3, 16, 5], 9);
    assert!(odd.matmul(&q2).is_err());
    assert_close("uncollapsible batch", &odd.mm(&q2).unwrap(), &odd.contiguous().unwrap().matmul(&q2).unwrap(), 1e-5);
    // Shapes candle refuses are refused.
    assert!(a.mm(&a).is_err());
}

#[test]
fn bf16_products_accumulate_in_f32_and_round_once() {
    let a = values(&[3, 200, 96], 10).to_dtype(DType::BF16).unwrap();
    let b = values(&[3, 96, 130], 11).to_dtype(DType::BF16).unwrap();
    let (got, calls) = counting(|| a.mm(&b).unwrap());
    assert!(calls >= 1, "the bf16 product did not go through MKL");
    assert_eq!(got.dtype(), DType::BF16);
    // The exact product of the bf16 values, rounded once: at most one bf16 step (2⁻⁸ relative)
    // away, where candle's bf16 kernel may round more often.
    let exact = a.to_dtype(DType::F32).unwrap().matmul(&b.to_dtype(DType::F32).unwrap()).unwrap();
    let got = got.to_dtype(DType::F32).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
    let exact = exact.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    for (g, e) in got.iter().zip(&exact) {
        assert!((g - e).abs() <= e.abs() / 256.0 + 1e-6, "bf16 {g} vs exact {e}");
    }
}

#[test]
fn gradients_through_the_products_equal_candles_autograd() {
    let loss = |use_mkl: bool| {
        let a = Var::from_tensor(&values(&[2, 4, 6, 5], 20)).unwrap();
        let b = Var::from_tensor(&values(&[2, 4, 5, 3], 21)).unwrap();
        let w = Var::from_tensor(&values(&[7, 3], 22)).unwrap();
        let c = values(&[2, 4, 6, 7], 23);
        let (h, y) = if use_mkl {
            let h = a.as_tensor().mm(b.as_tensor()).unwrap();
            let y = h.broadcast_mm(&w.as_tensor().t().unwrap()).unwrap();
            (h, y)
        } else {
            let h = a.as_tensor().matmul(b.as_tensor()).unwrap();
            let y = h.broadcast_matmul(&w.as_tensor().t().unwrap()).unwrap();
            (h, y)
        };
        let _ = h;
        let grads = (y * &c).unwrap().sum_all().unwrap().backward().unwrap();
        [&a, &b, &w].map(|v| grads.get(v.as_tensor()).unwrap().clone())
    };
    let (mkl, calls) = counting(|| loss(true));
    assert!(calls >= 6, "only {calls} MKL products for two forward and four backward products");
    for (i, (g, want)) in mkl.iter().zip(loss(false).iter()).enumerate() {
        assert_close(&format!("gradient {i}"), g, want, 1e-5);
    }
}

#[test]
fn a_lora_step_does_not_depend_on_the_thread_count() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tiny-gemma2");
    let reference = candle_core::safetensors::load(dir.join("reference.safetensors"), &Device::Cpu).unwrap();
    let b = batch(&reference);
    let step = |threads: usize| {
        let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
        pool.install(|| {
            let (model, vars) = lora_model(&dir, DType::F32.into());
            let (loss, _, grads) = loss_and_grads(&model, &b, None, false, 1, &vars).unwrap();
            let grads: Vec<Vec<f32>> =
                grads.iter().map(|g| g.flatten_all().unwrap().to_vec1::<f32>().unwrap()).collect();
            (loss, grads)
        })
    };
    let ((one, grads_one), calls) = counting(|| step(1));
    assert!(calls > 0, "the LoRA step did not go through MKL");
    let (two, grads_two) = step(2);
    let (three, grads_three) = step(3);
    assert_eq!(one.to_bits(), two.to_bits());
    assert_eq!(one.to_bits(), three.to_bits());
    assert!(grads_one == grads_two && grads_one == grads_three, "gradients depend on the thread count");
}

/// `bf16-mixed`: an f32 operand meeting a bf16 one is rounded to bf16 once, and the product,
/// accumulated in f32, stays f32 — in either order, in a transposed layout, and with gradients.
#[test]
fn mixed_products_round_the_f32_side_once_and_give_f32() {
    let x = values(&[2, 37, 64], 30);
    let w = values(&[50, 64], 31).to_dtype(DType::BF16).unwrap();
    let exact = |a: &Tensor, b: &Tensor| {
        let f = |t: &Tensor| t.to_dtype(DType::BF16).unwrap().to_dtype(DType::F32).unwrap();
        f(a).broadcast_matmul(&f(b)).unwrap()
    };
    let (got, calls) = counting(|| x.broadcast_mm(&w.t().unwrap()).unwrap());
    assert!(calls >= 1, "the mixed product did not go through MKL");
    assert_eq!(got.dtype(), DType::F32);
    assert_close("f32 · bf16ᵀ", &got, &exact(&x, &w.t().unwrap()), 1e-5);
    let left = w.mm(&values(&[64, 9], 32)).unwrap();
    assert_eq!(left.dtype(), DType::F32);
    assert_close("bf16 · f32", &left, &exact(&w, &values(&[64, 9], 32)), 1e-5);
    // Through the frozen-weight op, as every frozen linear of a bf16-mixed model: the input's
    // gradient is the f32 output gradient times the bf16 weight, rounded the same way.
    let xv = Var::from_tensor(&x).unwrap();
    let y = thrive_sft::Weight::Dense(w.clone()).apply(xv.as_tensor()).unwrap();
    let g = values(&[2, 37, 50], 33);
    let grads = (y * &g).unwrap().sum_all().unwrap().backward().unwrap();
    let dx = grads.get(xv.as_tensor()).unwrap();
    assert_eq!(dx.dtype(), DType::F32);
    assert_close("dx", dx, &exact(&g, &w), 1e-5);
}

/// A LoRA step of the tiny Gemma 2 in `bf16-mixed` against the same step in f32: the loss and
/// every adapter gradient within bf16's rounding, the adapters still f32, the frozen weights bf16.
#[test]
fn a_bf16_mixed_lora_step_stays_within_bf16_rounding_of_f32() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tiny-gemma2");
    let reference = candle_core::safetensors::load(dir.join("reference.safetensors"), &Device::Cpu).unwrap();
    let b = batch(&reference);
    let (_, mixed) = device_for("cpu", "bf16-mixed".parse().unwrap()).unwrap();
    assert_eq!(mixed, Precision::BF16_MIXED);
    let step = |precision: Precision| {
        let (model, vars) = lora_model(&dir, precision);
        assert!(vars.iter().all(|v| v.dtype() == DType::F32), "adapters are f32 masters");
        let (loss, _, grads) = loss_and_grads(&model, &b, None, false, 1, &vars).unwrap();
        (model, loss, grads)
    };
    let (model, loss_mixed, grads_mixed) = step(mixed);
    assert_eq!(model.dtype(), DType::F32, "activations are f32");
    let frozen = model.merged_tensors().unwrap();
    assert!(frozen.values().all(|t| t.dtype() == DType::BF16), "frozen weights are bf16");
    let (_, loss_f32, grads_f32) = step(DType::F32.into());
    assert!((loss_mixed - loss_f32).abs() <= 2e-2 * loss_f32.abs(), "loss {loss_mixed} vs f32 {loss_f32}");
    // Equal bits would mean the products never saw a bf16 operand.
    assert_ne!(loss_mixed.to_bits(), loss_f32.to_bits(), "bf16-mixed gave the f32 loss exactly");
    for (i, (g, want)) in grads_mixed.iter().zip(&grads_f32).enumerate() {
        assert_eq!(g.dtype(), DType::F32);
        assert_close(&format!("adapter gradient {i}"), g, want, 5e-2);
    }

    // Training packs the frozen output matrix once for the loss (`thrive sft` does it): the same
    // loss and gradients up to the summation order of MKL's packed kernel.
    let (mut packed, vars) = lora_model(&dir, mixed);
    assert!(packed.pack_output_layer().unwrap(), "the bf16 output matrix was not packed");
    let (loss_packed, _, grads_packed) = loss_and_grads(&packed, &b, None, false, 1, &vars).unwrap();
    assert!((loss_packed - loss_mixed).abs() <= 1e-5 * loss_mixed.abs(), "packed loss {loss_packed} vs {loss_mixed}");
    for (i, (g, want)) in grads_packed.iter().zip(&grads_mixed).enumerate() {
        assert_close(&format!("packed: adapter gradient {i}"), g, want, 1e-4);
    }
    assert!(!lora_model(&dir, DType::F32.into()).0.pack_output_layer().unwrap(), "an f32 matrix is never packed");
}

/// Decoding in `bf16-mixed` (the sampler's cached path, merged LoRA) against the f32 model's full
/// forward: every step's logits within bf16's rounding, and the same greedy token wherever f32's
/// top two logits are not a near tie.
#[test]
fn bf16_mixed_decoding_stays_within_bf16_rounding_of_f32() {
    use thrive_sft::KvCache;
    let merged = |precision: Precision| {
        let mut model = with_fixture_adapter(precision);
        model.merge_lora().unwrap();
        model
    };
    let (f32_model, mixed) = (merged(DType::F32.into()), merged(Precision::BF16_MIXED));
    let ids: Vec<u32> = vec![2, 17, 250, 33, 91, 5, 120, 64, 300, 7, 45, 199];
    let t = Tensor::new(ids.as_slice(), &Device::Cpu).unwrap().unsqueeze(0).unwrap();
    let expected = f32_model.forward(&t, &[vec![1; ids.len()]]).unwrap().squeeze(0).unwrap();
    let scale = max_abs(&expected);
    let mut cache = KvCache::new(&mixed, 4);
    let (mut at, mut differs) = (0, 0f32);
    for chunk in [5usize, 1, 1, 1, 1, 1, 1, 1] {
        let input = Tensor::new(&ids[at..at + chunk], &Device::Cpu).unwrap().unsqueeze(0).unwrap();
        let positions = vec![(at as u32..(at + chunk) as u32).collect()];
        let logits = mixed.decode_step(&input, &positions, &[vec![1; at + chunk]], &mut cache).unwrap();
        let want = expected.narrow(0, at + chunk - 1, 1).unwrap();
        let d = max_abs_diff(&logits, &want);
        assert!(d <= 3e-2 * scale, "position {}: logits differ by {d} (largest {scale})", at + chunk - 1);
        differs = differs.max(d);
        let row = |t: &Tensor| t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let (got, want) = (row(&logits), row(&want));
        let argmax = |v: &[f32]| v.iter().enumerate().max_by(|a, b| a.1.total_cmp(b.1)).unwrap().0;
        let mut sorted = want.clone();
        sorted.sort_by(|a, b| b.total_cmp(a));
        if sorted[0] - sorted[1] > 2.0 * d {
            assert_eq!(argmax(&got), argmax(&want), "greedy token at position {}", at + chunk - 1);
        }
        at += chunk;
    }
    assert!(differs > 0.0, "bf16-mixed decoded exactly as f32: the weights were not bf16");
}

/// Decoding through packed weights (`Gemma::pack_for_decoding`, bf16 weights only): the same
/// logits as the unpacked bf16-mixed model up to MKL's summation order, and each sequence of a
/// batch decodes to the same bits as it does alone, which plain products do not give (MKL treats
/// a one-row product differently).
#[test]
fn packed_decoding_matches_the_unpacked_path_and_does_not_depend_on_the_batch() {
    use thrive_sft::KvCache;
    let mut plain = with_fixture_adapter(Precision::BF16_MIXED);
    plain.merge_lora().unwrap();
    let mut packed = with_fixture_adapter(Precision::BF16_MIXED);
    let layers = packed.merged_tensors().unwrap().keys().filter(|k| k.ends_with("q_proj.weight")).count();
    // Seven matrices a layer and the tied output layer; the adapters were merged first.
    assert_eq!(packed.pack_for_decoding().unwrap(), 7 * layers + 1);
    assert!(packed.lora_tensors().is_empty(), "adapters are merged before packing");
    assert_eq!(with_fixture_adapter(DType::F32.into()).pack_for_decoding().unwrap(), 0, "f32 weights are not packed");

    let rows: [&[u32]; 3] = [&[2, 17, 250, 33, 91, 5], &[2, 120, 64, 300, 7, 45], &[2, 199, 8, 61, 140, 3]];
    // Prompt of 4 tokens, then one token a step; (batch, vocab) logits of every step.
    let decode = |model: &Gemma, rows: &[&[u32]]| -> Vec<Tensor> {
        let b = rows.len();
        let mut cache = KvCache::new(model, 8);
        let mut out = Vec::new();
        for (at, len) in [(0usize, 4usize), (4, 1), (5, 1)] {
            let ids: Vec<u32> = rows.iter().flat_map(|r| r[at..at + len].iter().copied()).collect();
            let input = Tensor::from_vec(ids, (b, len), &Device::Cpu).unwrap();
            let positions = vec![(at as u32..(at + len) as u32).collect::<Vec<_>>(); b];
            out.push(model.decode_step(&input, &positions, &vec![vec![1; at + len]; b], &mut cache).unwrap());
        }
        out
    };
    let batch = decode(&packed, &rows);
    for (step, (got, want)) in batch.iter().zip(decode(&plain, &rows)).enumerate() {
        assert_close(&format!("step {step}, packed against plain"), got, &want, 1e-4);
    }
    for (i, row) in rows.iter().enumerate() {
        for (step, alone) in decode(&packed, &[row]).iter().enumerate() {
            let in_batch = batch[step].narrow(0, i, 1).unwrap();
            let bits = |t: &Tensor| t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
            assert!(bits(alone) == bits(&in_batch), "sequence {i}, step {step}: alone ≠ in the batch");
        }
    }
}

/// Full fine-tuning under `bf16-mixed`: f32 masters whose products (the layers', the tied
/// output matrix's, and their gradients) run in bf16 on MKL, as PyTorch's CPU autocast. The loss
/// and gradients stay within bf16 tolerance of the f32 path and the state stays f32; a step at
/// the paper's lr 8e-6 moves the masters as the f32 step does.
#[test]
fn full_fine_tuning_in_bf16_mixed_stays_near_f32_with_f32_masters() {
    use thrive_sft::{AdamW, AdamWParams};
    for name in ["tiny-gemma2", "tiny-gemma3"] {
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name);
        let reference = candle_core::safetensors::load(dir.join("reference.safetensors"), &Device::Cpu).unwrap();
        let b = batch(&reference);
        let run = |precision: Precision| {
            let mut model = Gemma::load_full(&dir, precision, &Device::Cpu).unwrap();
            assert_eq!(model.dtype(), DType::F32, "{name}: activations are f32");
            let vars: Vec<Var> = model.trainable().into_iter().map(|(_, v)| v).collect();
            assert!(vars.iter().all(|v| v.dtype() == DType::F32), "{name}: masters are f32");
            let before: Vec<Tensor> = vars.iter().map(|v| v.as_tensor().copy().unwrap()).collect();
            let (loss, _, grads) = loss_and_grads(&model, &b, None, false, 1, &vars).unwrap();
            assert!(grads.iter().all(|g| g.dtype() == DType::F32), "{name}: gradients are f32");
            // Gradient checkpointing recomputes the same products: the same gradients.
            let (again, _, checkpointed) = loss_and_grads(&model, &b, None, true, 1, &vars).unwrap();
            assert!((again - loss).abs() <= 1e-6 * loss.abs(), "{name}: checkpointed loss {again} vs {loss}");
            for (i, (a, c)) in grads.iter().zip(&checkpointed).enumerate() {
                assert_close(&format!("{name} checkpointed gradient {i}"), c, a, 1e-5);
            }
            let mut opt =
                AdamW::new(vars.clone(), AdamWParams { lr: 8e-6, weight_decay: 0.0, ..Default::default() }).unwrap();
            opt.step(&grads, 8e-6).unwrap();
            assert!(opt.moments.iter().all(|(m, v)| m.dtype() == DType::F32 && v.dtype() == DType::F32));
            let moved: Vec<Tensor> = vars.iter().zip(&before).map(|(v, b)| (v.as_tensor() - b).unwrap()).collect();
            (loss, grads, moved)
        };
        let (l32, g32, d32) = run(Precision::from(DType::F32));
        let (l16, g16, d16) = run(Precision::BF16_MIXED);
        assert!((l32 - l16).abs() <= 2e-2 * l32.abs(), "{name}: bf16-mixed loss {l16} vs f32 {l32}");
        // The products really were rounded: the f32 path's numbers are not reproduced exactly.
        assert_ne!(l32, l16, "{name}: bf16-mixed gave the f32 loss bit for bit");
        for (i, (a, c)) in g32.iter().zip(&g16).enumerate() {
            assert_close(&format!("{name} gradient {i}"), c, a, 0.1);
        }
        let (mut agree, mut total) = (0usize, 0usize);
        for (a, c) in d32.iter().zip(&d16) {
            let (a, c): (Vec<f32>, Vec<f32>) =
                (a.flatten_all().unwrap().to_vec1().unwrap(), c.flatten_all().unwrap().to_vec1().unwrap());
            for (x, y) in a.iter().zip(&c) {
                total += 1;
                agree += (x.signum() == y.signum() && (x.abs() - y.abs()).abs() <= 0.05 * 8e-6) as usize;
            }
        }
        assert!(agree as f64 > 0.9 * total as f64, "{name}: only {agree} of {total} updates match the f32 step");
    }
}
