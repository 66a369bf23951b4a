//! Cached incremental decoding (the sampler's path) against the full-sequence forward pass (the
//! training path, itself checked against transformers): chunked prefill, one token at a time,
//! left padding, and merged LoRA.

use candle_core::{DType, Device, Tensor};
use std::path::PathBuf;
use thrive_sft::{Gemma, KvCache, LoraConfig};

fn fixture() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tiny-gemma2")
}

fn max_diff(a: &Tensor, b: &Tensor) -> f32 {
    (a - b).unwrap().abs().unwrap().flatten_all().unwrap().max(0).unwrap().to_scalar::<f32>().unwrap()
}

/// Logits of every position of `ids` (one row, no padding) by the training path.
fn full(model: &Gemma, ids: &[u32]) -> Tensor {
    let t = Tensor::new(ids, &Device::Cpu).unwrap().unsqueeze(0).unwrap();
    model.forward(&t, &[vec![1; ids.len()]]).unwrap().squeeze(0).unwrap()
}

fn adapted() -> Gemma {
    let mut model = Gemma::load(&fixture(), DType::F32, &Device::Cpu).unwrap();
    let cfg = LoraConfig { rank: 4, alpha: 8.0, ..LoraConfig::default() };
    model.add_lora(&cfg, &mut thrive_core::Seeds::new(0).stream(thrive_core::Stream::Training(0))).unwrap();
    model.load_lora_weights(&fixture().join("adapter/adapter_model.safetensors")).unwrap();
    model
}

#[test]
fn cached_steps_equal_the_full_forward() {
    let model = adapted();
    let ids: Vec<u32> = vec![2, 17, 250, 33, 91, 5, 120, 64, 300, 7, 45, 199];
    let expected = full(&model, &ids);
    let mut merged = model.clone();
    merged.merge_lora().unwrap();
    // GPUs decode with candle's fused RMSNorm and the training forward uses fused kernels too
    // (`manual_backward`); both paths run here.
    let mut fused = merged.clone();
    fused.manual_backward = Some(true);
    let mut fused_full = model.clone();
    fused_full.manual_backward = Some(true);
    let d = max_diff(&full(&fused_full, &ids), &expected);
    assert!(d < 1e-4, "the fused forward differs by {d}");
    for m in [&model, &merged, &fused] {
        let mut cache = KvCache::new(m, 4);
        // Prefill 5 tokens, then one at a time (the cache grows past its initial capacity).
        let mut at = 0;
        for chunk in [5usize, 1, 1, 1, 1, 1, 1, 1] {
            let input = Tensor::new(&ids[at..at + chunk], &Device::Cpu).unwrap().unsqueeze(0).unwrap();
            let positions = vec![(at as u32..(at + chunk) as u32).collect()];
            let logits = m.decode_step(&input, &positions, &[vec![1; at + chunk]], &mut cache).unwrap();
            let want = expected.narrow(0, at + chunk - 1, 1).unwrap();
            let d = max_diff(&logits, &want);
            assert!(d < 1e-4, "position {}: {d}", at + chunk - 1);
            at += chunk;
        }
    }
}

#[test]
fn left_padding_does_not_change_a_row() {
    // Also with the fused kernels GPUs use (`manual_backward`): a batch's last positions are
    // not contiguous, which candle's fused RMSNorm refuses unless made so.
    for fused in [false, true] {
        let mut model = adapted();
        model.manual_backward = Some(fused);
        left_padding_case(&model);
    }
}

fn left_padding_case(model: &Gemma) {
    let model = model.clone();
    let a: Vec<u32> = vec![2, 40, 41, 42, 43, 44, 45, 46];
    let b: Vec<u32> = vec![2, 99, 98];
    let (ea, eb) = (full(&model, &a), full(&model, &b));
    let pad = a.len() - b.len();
    let mut padded_b = vec![0u32; pad];
    padded_b.extend(&b);
    let input = Tensor::new([a.clone(), padded_b].concat(), &Device::Cpu).unwrap().reshape((2, a.len())).unwrap();
    let positions = vec![(0..a.len() as u32).collect(), [vec![0; pad], (0..b.len() as u32).collect()].concat()];
    let mut key_mask = vec![vec![1u8; a.len()], [vec![0u8; pad], vec![1u8; b.len()]].concat()];
    let mut cache = KvCache::new(&model, 16);
    let logits = model.decode_step(&input, &positions, &key_mask, &mut cache).unwrap();
    assert!(max_diff(&logits.get(0).unwrap(), &ea.get(a.len() - 1).unwrap()) < 1e-4);
    assert!(max_diff(&logits.get(1).unwrap(), &eb.get(b.len() - 1).unwrap()) < 1e-4);
    // One more token each: row b's next token sits at its position b.len().
    let next = Tensor::new(&[[7u32], [8u32]], &Device::Cpu).unwrap();
    for m in key_mask.iter_mut() {
        m.push(1);
    }
    let positions = vec![vec![a.len() as u32], vec![b.len() as u32]];
    let logits = model.decode_step(&next, &positions, &key_mask, &mut cache).unwrap();
    let ea = full(&model, &[a, vec![7]].concat());
    let eb = full(&model, &[b.clone(), vec![8]].concat());
    assert!(max_diff(&logits.get(0).unwrap(), &ea.get(ea.dim(0).unwrap() - 1).unwrap()) < 1e-4);
    assert!(max_diff(&logits.get(1).unwrap(), &eb.get(b.len()).unwrap()) < 1e-4);
}
