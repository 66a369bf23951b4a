//! Gemma 3 270M from its GGUF (Q4_K_M, from PyPI via scripts/fetch-gemma3.sh), converted to a
//! model directory and run by our decoder, against transformers running the same file
//! (tests/fixtures/gemma3_reference.json, from scripts/gemma3_reference.py): the prompt ids, the
//! logits at the last prompt position, and 24 greedy tokens through the KV-cached decoding path.
//!
//! Without the GGUF the test prints SKIPPED on stderr and passes, unless `THRIVE_GEMMA3_GGUF` names the
//! file (CI fetches it and sets it).

mod common;
use candle_core::{DType, Device, Tensor, D};
use common::*;
use serde::Deserialize;
use std::path::PathBuf;
use thrive_sft::{gguf_model_dir, Gemma, KvCache, TextEncoder};

#[derive(Deserialize)]
struct Reference {
    gguf_sha256: String,
    prompts: Vec<Prompt>,
}

#[derive(Deserialize)]
struct Prompt {
    prompt: String,
    prompt_ids: Vec<u32>,
    greedy_ids: Vec<u32>,
    greedy_text: String,
    last_logits_first64: Vec<f32>,
    last_logits_top10_ids: Vec<u32>,
    last_logits_top10_values: Vec<f32>,
}

fn reference() -> Reference {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/gemma3_reference.json");
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

#[test]
fn gemma3_gguf_matches_transformers() {
    let Some(path) = gguf("gemma3_gguf_matches_transformers") else { return };
    let reference = reference();
    assert_eq!(
        sha256_file(&path),
        reference.gguf_sha256,
        "{} is not the file the fixture was made from",
        path.display()
    );
    let dir = gguf_model_dir(&path).unwrap();
    // Converted once: a second call finds the directory up to date.
    let stamp = std::fs::metadata(dir.join("model.safetensors")).unwrap().modified().unwrap();
    assert_eq!(gguf_model_dir(&path).unwrap(), dir);
    assert_eq!(std::fs::metadata(dir.join("model.safetensors")).unwrap().modified().unwrap(), stamp);

    let device = Device::Cpu;
    let model = Gemma::load(&dir, DType::F32, &device).unwrap();
    assert!(model.cfg.is_gemma3());
    let enc = TextEncoder::from_file(&dir.join("tokenizer.json")).unwrap();
    for p in &reference.prompts {
        let ids = enc.tokenizer().encode(p.prompt.as_str(), true).unwrap().get_ids().to_vec();
        assert_eq!(ids, p.prompt_ids, "prompt ids of {:?}", p.prompt);

        // Full-sequence forward (the training path): the last position's logits.
        let input = Tensor::new(ids.as_slice(), &device).unwrap().unsqueeze(0).unwrap();
        let logits = model.forward(&input, &[vec![1; ids.len()]]).unwrap();
        let last: Vec<f32> = logits.squeeze(0).unwrap().get(ids.len() - 1).unwrap().to_vec1().unwrap();
        let scale = p.last_logits_top10_values[0].abs().max(1.0);
        let worst = last[..64].iter().zip(&p.last_logits_first64).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
        assert!(worst < 2e-3 * scale, "{:?}: first 64 logits differ by {worst} (scale {scale})", p.prompt);
        for (id, value) in p.last_logits_top10_ids.iter().zip(&p.last_logits_top10_values) {
            let ours = last[*id as usize];
            assert!((ours - value).abs() < 2e-3 * scale, "{:?}: logit of {id}: {ours} vs {value}", p.prompt);
        }

        // Greedy decoding with the KV cache (the sampling path).
        let mut cache = KvCache::new(&model, ids.len() + p.greedy_ids.len());
        let positions: Vec<u32> = (0..ids.len() as u32).collect();
        let mut mask = vec![1u8; ids.len()];
        let mut logits = model.decode_step(&input, &[positions], &[mask.clone()], &mut cache).unwrap();
        let mut out = Vec::new();
        for _ in 0..p.greedy_ids.len() {
            let next = logits.argmax(D::Minus1).unwrap().to_vec1::<u32>().unwrap()[0];
            out.push(next);
            mask.push(1);
            let pos = (ids.len() + out.len() - 1) as u32;
            let step = Tensor::new(&[[next]], &device).unwrap();
            logits = model.decode_step(&step, &[vec![pos]], &[mask.clone()], &mut cache).unwrap();
        }
        let text = enc.tokenizer().decode(&out, false).unwrap();
        assert_eq!(out, p.greedy_ids, "{:?}: ours {text:?}, transformers {:?}", p.prompt, p.greedy_text);
    }
}
