//! The sampler on CPU: greedy decoding equals Hugging Face transformers' greedy `generate`
//! (fixture from scripts/sampler_fixtures.py) batched and unbatched; temperature 0 and top-k 1
//! are greedy; sampled rows depend on the seed only, not on the batch size; the filters count
//! rejections; provenance is on every row.

use candle_core::{DType, Device};
use std::path::{Path, PathBuf};
use thrive_core::Workflow;
use thrive_pool::Origin as RowOrigin;
use thrive_sampler::*;
use thrive_sft::{Gemma, TextEncoder};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

fn model() -> Gemma {
    Gemma::load(&fixtures().join("tiny-trained"), DType::F32, &Device::Cpu).unwrap()
}

fn tokenizer() -> TextEncoder {
    TextEncoder::from_file(&fixtures().join("tiny-trained/tokenizer.json")).unwrap()
}

struct Reference {
    prompts: Vec<Vec<u32>>,
    outputs: Vec<Vec<u32>>,
    max_new_tokens: usize,
    eos: u32,
}

fn reference() -> Reference {
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fixtures().join("greedy.json")).unwrap()).unwrap();
    let ids = |x: &serde_json::Value| -> Vec<Vec<u32>> {
        x.as_array()
            .unwrap()
            .iter()
            .map(|r| r.as_array().unwrap().iter().map(|t| t.as_u64().unwrap() as u32).collect())
            .collect()
    };
    Reference {
        prompts: ids(&v["prompts"]),
        outputs: ids(&v["outputs"]),
        max_new_tokens: v["max_new_tokens"].as_u64().unwrap() as usize,
        eos: v["eos"].as_u64().unwrap() as u32,
    }
}

fn rngs(n: usize) -> Vec<thrive_core::Rng> {
    (0..n as u64).map(|i| sample_rng(0, i)).collect()
}

#[test]
fn greedy_equals_transformers_batched_and_unbatched() {
    let m = model();
    let r = reference();
    assert!(r.outputs.iter().any(|o| o.iter().collect::<std::collections::HashSet<_>>().len() > 3), "fixture too dull");
    let greedy = SamplerSettings { temperature: 0.0, max_new_tokens: r.max_new_tokens, ..SamplerSettings::default() };
    for (p, want) in r.prompts.iter().zip(&r.outputs) {
        let got = generate(&m, std::slice::from_ref(p), &mut rngs(1), r.eos, &greedy).unwrap();
        assert_eq!(&got[0], want, "prompt {p:?}");
    }
    // All four together: prompts of different lengths, left-padded.
    let got = generate(&m, &r.prompts, &mut rngs(r.prompts.len()), r.eos, &greedy).unwrap();
    assert_eq!(got, r.outputs);
    // top-k 1 at temperature 1 is greedy too.
    let top1 = SamplerSettings { temperature: 1.0, top_k: Some(1), ..greedy };
    assert_eq!(generate(&m, &r.prompts, &mut rngs(r.prompts.len()), r.eos, &top1).unwrap(), r.outputs);
}

fn origin(call_seed: u64) -> Origin {
    Origin {
        workflow: Workflow::Accumulate.name().into(),
        chain: 3,
        generation: 2,
        base_model: "tiny-trained".into(),
        adapter_path: Some("gen2/adapter".into()),
        adapter_sha256: Some("ab".repeat(32)),
        call_seed,
    }
}

#[test]
fn samples_depend_on_the_seed_not_on_the_batch_size() {
    let m = model();
    let tok = tokenizer();
    let prompts: Vec<String> =
        ["Describe robots.", "Hi", "List three facts about bees.", "Summarise bread.", "Describe the moon."]
            .iter()
            .map(|s| s.to_string())
            .collect();
    let mode = Mode::Prompted { prompts: prompts.clone() };
    let run = |batch_size: usize, seed: u64, s: SamplerSettings| {
        let s = SamplerSettings { batch_size, max_new_tokens: 24, ..s };
        synthesize(&m, &tok, &mode, 100, &s, &origin(seed), None).unwrap()
    };
    let plain = SamplerSettings::default();
    let a = run(1, 11, plain);
    let b = run(2, 11, plain);
    let c = run(5, 11, plain);
    assert_eq!(a.rows.len() + a.rejections.values().sum::<u64>() as usize, prompts.len());
    assert_eq!(a.rows, b.rows);
    assert_eq!(a.rows, c.rows);
    let d = run(5, 12, plain);
    assert_ne!(a.rows, d.rows, "another call seed samples other responses");
    // Nucleus and top-k settings too.
    let cut = SamplerSettings { top_p: 0.9, top_k: Some(20), temperature: 0.8, ..plain };
    assert_eq!(run(1, 11, cut).rows, run(4, 11, cut).rows);
    // Provenance on every row.
    for (i, row) in a.rows.iter().enumerate() {
        let RowOrigin::Synthetic { workflow, chain, generation, provenance } = &row.origin else { panic!() };
        assert_eq!((workflow.as_str(), *chain, *generation), ("accumulate", 3, 2));
        assert_eq!(provenance.call_seed, 11);
        assert_eq!(provenance.filter, "accepted");
        assert_eq!(provenance.adapter_sha256.as_deref(), Some("ab".repeat(32).as_str()));
        assert_eq!(provenance.max_new_tokens, 24);
        assert!(provenance.sample_index >= i as u64);
        assert!(prompts.contains(&row.prompt));
    }
}

#[test]
fn unconditional_rejections_are_counted_and_reported() {
    // The fixture tokenizer cannot spell a space, so no generation starts with "user: ".
    let m = model();
    let s = SamplerSettings { max_new_tokens: 16, batch_size: 4, ..SamplerSettings::default() };
    let mode = Mode::Unconditional { strip_quirk: true, max_attempts: 10 };
    let err = synthesize(&m, &tokenizer(), &mode, 5, &s, &origin(0), None).unwrap_err().to_string();
    assert!(err.contains("0 of 5") && err.contains("10 generations") && err.contains("no_user_prefix"), "{err}");
}

#[test]
fn token_choice_respects_top_k_and_top_p() {
    // Probabilities 4/7, 2/7, 1/7.
    let logits = [0.0f32, (2.0f32).ln(), (4.0f32).ln()];
    let mut rng = sample_rng(5, 0);
    let mut counts = [0usize; 3];
    let all = SamplerSettings::default();
    for _ in 0..7000 {
        counts[choose_token(&logits, &all, &mut rng) as usize] += 1;
    }
    assert!((counts[2] as f64 / 7000.0 - 4.0 / 7.0).abs() < 0.03, "{counts:?}");
    assert!((counts[0] as f64 / 7000.0 - 1.0 / 7.0).abs() < 0.03, "{counts:?}");
    let k2 = SamplerSettings { top_k: Some(2), ..all };
    let p05 = SamplerSettings { top_p: 0.5, ..all };
    let p08 = SamplerSettings { top_p: 0.8, ..all };
    for _ in 0..500 {
        assert_ne!(choose_token(&logits, &k2, &mut rng), 0);
        assert_eq!(choose_token(&logits, &p05, &mut rng), 2);
        assert_ne!(choose_token(&logits, &p08, &mut rng), 0);
    }
    assert!(SamplerSettings { top_p: 0.0, ..all }.check().unwrap_err().to_string().contains("top-p"));
    assert!(SamplerSettings { temperature: -1.0, ..all }.check().unwrap_err().to_string().contains("temperature"));
}
