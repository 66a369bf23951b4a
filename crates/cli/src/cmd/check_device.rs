//! `thrive check-device`: the same computations on a device and on the CPU in f32 (the
//! reference the parity tests tie to transformers + peft): logits, loss, every LoRA gradient and
//! greedy tokens, for each model and precision. One JSON line each; the exit status is non-zero
//! when an f32 comparison is outside its tolerance (bf16 is reported, not judged). The device
//! side always takes the GPU's code paths (fused kernels, hand-written backward passes), so
//! `--device cpu` checks them too.

use anyhow::{Context, Result};
use candle_core::{DType, Device, Tensor, Var};
use std::path::PathBuf;
use thrive_sampler::{generate, sample_rng, SamplerSettings};
use thrive_sft::{device_for, loss_and_grads, Batch, Gemma, LoraConfig, Precision};

#[derive(clap::Args)]
pub struct Args {
    /// A model directory (config.json, safetensors); repeat for several.
    #[arg(long, required = true)]
    model: Vec<PathBuf>,
    #[arg(long, default_value = "auto", value_parser = ["auto", "cpu", "cuda"])]
    device: String,
    /// Precisions to check on the device.
    #[arg(long, value_delimiter = ',', default_value = "f32,bf16", value_parser = ["f32", "bf16"])]
    dtype: Vec<String>,
}

/// Tolerances in f32, relative to the reference's largest entry (the parity tests' own).
const F32_LIMITS: [(&str, f64); 3] = [("logits", 1e-4), ("loss", 1e-5), ("grads", 1e-3)];

struct Outcome {
    logits: Tensor,
    loss: f64,
    grads: Vec<Tensor>,
    greedy: Vec<Vec<u32>>,
}

/// A fixed batch (two rows, the second right-padded) of ids below `vocab`.
fn batch(vocab: usize, device: &Device) -> Result<Batch> {
    let len = 12;
    let ids: Vec<u32> = (0..2 * len).map(|i| ((i * 37 + 5) % vocab.min(300)) as u32 + 3).collect();
    let mask = vec![vec![1u8; len], [vec![1u8; len - 4], vec![0u8; 4]].concat()];
    Ok(Batch { input_ids: Tensor::from_vec(ids, (2, len), device)?, attention_mask: mask.clone(), target_mask: mask })
}

/// `gpu_paths`: the kernels and hand-written backward passes GPUs use (`Gemma::manual_backward`),
/// also on the CPU, so that `--device cpu` rehearses the code a GPU runs.
fn run_on(
    dir: &std::path::Path,
    device: &Device,
    dtype: Precision,
    adapters: &[Tensor],
    gpu_paths: bool,
) -> Result<Outcome> {
    let mut model = Gemma::load(dir, dtype, device)?;
    model.manual_backward = Some(gpu_paths);
    let lora = LoraConfig { rank: 4, alpha: 8.0, ..LoraConfig::default() };
    model.add_lora(&lora, &mut sample_rng(0, 0))?;
    let vars: Vec<Var> = model.trainable().into_iter().map(|(_, v)| v).collect();
    for (v, t) in vars.iter().zip(adapters) {
        v.set(&t.to_device(device)?)?;
    }
    let b = batch(model.cfg.vocab_size, device)?;
    let logits = model.forward(&b.input_ids, &b.attention_mask)?.to_dtype(DType::F32)?.to_device(&Device::Cpu)?;
    let (loss, _, grads) = loss_and_grads(&model, &b, None, false, 1, &vars)?;
    let grads = grads.iter().map(|g| g.to_device(&Device::Cpu)).collect::<candle_core::Result<Vec<_>>>()?;
    model.merge_lora()?;
    let prompts: Vec<Vec<u32>> = b.input_ids.to_device(&Device::Cpu)?.to_vec2::<u32>()?;
    let prompts: Vec<Vec<u32>> = prompts.into_iter().map(|p| p[..6].to_vec()).collect();
    let settings = SamplerSettings {
        temperature: 0.0,
        top_p: 1.0,
        top_k: None,
        max_new_tokens: 16,
        batch_size: 2,
        ignore_eos: true,
    };
    let mut rngs = vec![sample_rng(1, 0), sample_rng(1, 1)];
    let greedy = generate(&model, &prompts, &mut rngs, u32::MAX, &settings)?;
    Ok(Outcome { logits, loss, grads, greedy })
}

fn rel(got: &Tensor, want: &Tensor) -> Result<f64> {
    let scale = want.abs()?.flatten_all()?.max(0)?.to_scalar::<f32>()? as f64;
    let diff = (got - want)?.abs()?.flatten_all()?.max(0)?.to_scalar::<f32>()? as f64;
    Ok(diff / scale.max(f64::MIN_POSITIVE))
}

pub fn run(a: Args) -> Result<()> {
    let mut failed = Vec::new();
    for dir in &a.model {
        let cfg = thrive_sft::GemmaConfig::from_file(&dir.join("config.json"))?;
        // Random adapters with non-zero B, drawn once on the CPU so both sides use the same.
        let mut reference_model = Gemma::load(dir, DType::F32, &Device::Cpu)?;
        let lora = LoraConfig { rank: 4, alpha: 8.0, ..LoraConfig::default() };
        reference_model.add_lora(&lora, &mut sample_rng(0, 0))?;
        let adapters = reference_model
            .trainable()
            .into_iter()
            .enumerate()
            .map(|(i, (_, v))| {
                if i % 2 == 1 {
                    Tensor::randn(0f32, 0.05, v.shape(), &Device::Cpu)
                } else {
                    Ok(v.as_tensor().clone())
                }
            })
            .collect::<candle_core::Result<Vec<_>>>()?;
        drop(reference_model);
        let reference = run_on(dir, &Device::Cpu, DType::F32.into(), &adapters, false).context("the CPU reference")?;
        for dtype_name in &a.dtype {
            let (device, dtype) = device_for(&a.device, dtype_name.parse()?).context("--device")?;
            let started = std::time::Instant::now();
            let got = run_on(dir, &device, dtype, &adapters, true)
                .with_context(|| format!("{} on {device:?}", dir.display()))?;
            let logits = rel(&got.logits, &reference.logits)?;
            let loss = (got.loss - reference.loss).abs() / reference.loss.abs();
            let mut grads = 0f64;
            for (g, w) in got.grads.iter().zip(&reference.grads) {
                grads = grads.max(rel(g, w)?);
            }
            let total: usize = reference.greedy.iter().map(Vec::len).sum();
            let same: usize = got
                .greedy
                .iter()
                .zip(&reference.greedy)
                .map(|(x, y)| x.iter().zip(y).take_while(|(a, b)| a == b).count())
                .sum();
            let line = serde_json::json!({
                "model": dir.display().to_string(), "model_type": cfg.model_type, "device": format!("{device:?}"),
                "dtype": dtype_name, "logits_rel": logits, "loss_rel": loss, "grads_rel": grads,
                "greedy_same_prefix": same, "greedy_tokens": total, "seconds": started.elapsed().as_secs_f64(),
            });
            println!("{line}");
            if dtype == DType::F32.into() {
                for ((what, limit), value) in F32_LIMITS.iter().zip([logits, loss, grads]) {
                    if value.is_nan() || value > *limit {
                        failed.push(format!("{} {dtype_name} {what}: {value:.3e} > {limit:e}", dir.display()));
                    }
                }
                if same != total {
                    failed.push(format!("{} f32 greedy tokens: {same} of {total} agree", dir.display()));
                }
            }
        }
    }
    if !failed.is_empty() {
        anyhow::bail!("outside tolerance: {}", failed.join("; "));
    }
    Ok(())
}
