//! Decoding throughput: `sample_bench MODEL_DIR PROMPTS NEW_TOKENS [BATCH]` greedily continues
//! PROMPTS copies of `<bos>` for exactly NEW_TOKENS tokens each (EOS ignored) and prints tokens/s.
//! scripts/bench-sampler.sh runs it beside Hugging Face `generate` on the same model.

use candle_core::{DType, Device};
use std::path::Path;
use thrive_sampler::{generate, sample_rng, SamplerSettings};
use thrive_sft::Gemma;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 4 {
        eprintln!("usage: sample_bench MODEL_DIR PROMPTS NEW_TOKENS [BATCH]");
        std::process::exit(2);
    }
    let dir = Path::new(&args[1]);
    let prompts: usize = args[2].parse().expect("PROMPTS");
    let new_tokens: usize = args[3].parse().expect("NEW_TOKENS");
    let batch: usize = args.get(4).map_or(prompts, |b| b.parse().expect("BATCH"));
    let device = Device::cuda_if_available(0).unwrap_or(Device::Cpu);
    let dtype = if device.is_cuda() { DType::BF16 } else { DType::F32 };
    let mut model = Gemma::load(dir, dtype, &device).expect("model");
    model.merge_lora().expect("merge");
    let s = SamplerSettings {
        temperature: 0.0,
        max_new_tokens: new_tokens,
        batch_size: batch,
        ignore_eos: true,
        ..SamplerSettings::default()
    };
    let bos = model.cfg.bos_token_id.unwrap_or(2);
    let eos = 1;
    let started = std::time::Instant::now();
    let mut total = 0usize;
    for first in (0..prompts).step_by(batch) {
        let n = batch.min(prompts - first);
        let mut rngs: Vec<_> = (0..n as u64).map(|i| sample_rng(0, first as u64 + i)).collect();
        let out = generate(&model, &vec![vec![bos]; n], &mut rngs, eos, &s).expect("generate");
        total += out.iter().map(Vec::len).sum::<usize>();
    }
    let secs = started.elapsed().as_secs_f64();
    println!("thrive: {total} tokens in {secs:.2} s = {:.1} tokens/s ({device:?})", total as f64 / secs);
}
