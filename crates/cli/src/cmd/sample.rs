//! `thrive sample`: one generation's model samples that generation's synthetic data into the pool.

use anyhow::{bail, Context, Result};
use candle_core::DType;
use clap::builder::{PossibleValuesParser, TypedValueParser};
use std::path::PathBuf;
use thrive_core::fsutil::{recorded_model, relative_to};
use thrive_core::{Seeds, Stream, Workflow};
use thrive_pool::{BatchKey, PoolWriter, TokenCounter};
use thrive_sampler::{file_sha256, synthesize, Mode, Origin, SamplerSettings};
use thrive_sft::{
    device_for, quantized_source, resolve_model_dir, DecodeWeights, Gemma, LoraConfig, PrecisionChoice, TextEncoder,
};

/// `--dtype`'s values, as `--help` lists them, parsed by [`DecodeWeights`]' `FromStr`.
fn dtype_parser() -> impl TypedValueParser<Value = DecodeWeights> {
    PossibleValuesParser::new(["f32", "bf16", "bf16-mixed", "gguf"]).try_map(|s| s.parse::<DecodeWeights>())
}

#[derive(clap::Args)]
pub struct Args {
    /// Base model: a local directory, a Gemma 3 .gguf file or a Hub id (or a merged/ directory from `thrive sft --merged`).
    #[arg(long)]
    model: String,
    /// A PEFT adapter directory (adapter_config.json + adapter_model.safetensors), merged in for sampling.
    #[arg(long)]
    adapter: Option<PathBuf>,
    /// Pool to write the rows into (created if missing).
    #[arg(long)]
    pool: PathBuf,
    /// The chain's workflow: the rows become synthetic/<workflow>/chain-<chain>/gen-<generation>.
    #[arg(long)]
    workflow: Workflow,
    #[arg(long, default_value_t = 0)]
    chain: u64,
    /// The generation whose model samples.
    #[arg(long)]
    generation: u32,
    /// Accepted rows to produce (the paper: 12531).
    #[arg(long, default_value_t = 12531)]
    count: usize,
    /// Respond to the prompts of the pool's real train split instead of sampling from <bos> alone.
    #[arg(long)]
    prompted: bool,
    /// Unconditional mode: strip the prompt like the authors' lstrip("user: ") (a character set).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    strip_quirk: bool,
    /// Unconditional mode: give up after this many generations [default: 4 × --count + 4096].
    #[arg(long)]
    max_attempts: Option<u64>,
    #[arg(long, default_value_t = 1.0)]
    temperature: f64,
    #[arg(long, default_value_t = 1.0)]
    top_p: f64,
    #[arg(long)]
    top_k: Option<u32>,
    #[arg(long, default_value_t = 512)]
    max_new_tokens: usize,
    /// Sequences decoded together (results do not depend on it).
    #[arg(long, default_value_t = 64)]
    batch_size: usize,
    /// The call seed [default: derived from --chain and --generation].
    #[arg(long)]
    seed: Option<u64>,
    #[arg(long, default_value = "auto", value_parser = ["auto", "cpu", "cuda"])]
    device: String,
    /// Precision of the weights and activations [default: bf16 on CUDA, f32 on the CPU]; gguf:
    /// the GGUF file's own quantized weights with f32 activations (--model a .gguf file; fastest
    /// on the CPU, within a stated tolerance of f32); bf16-mixed: bf16 weights, f32 activations
    /// (CPU, mkl build).
    #[arg(long, value_parser = dtype_parser())]
    dtype: Option<DecodeWeights>,
}

pub fn run(a: Args) -> Result<()> {
    let settings = SamplerSettings {
        temperature: a.temperature,
        top_p: a.top_p,
        top_k: a.top_k,
        max_new_tokens: a.max_new_tokens,
        batch_size: a.batch_size,
        ignore_eos: false,
    };
    settings.check().map_err(|e| anyhow::anyhow!("sampler settings: {e}"))?;
    if a.count == 0 {
        bail!("--count: must be positive");
    }
    if a.generation == 0 {
        bail!("--generation: the first model is generation 1");
    }
    let (model_dir, model) = load_for_decoding(&a.model, a.adapter.as_deref(), &a.device, a.dtype.unwrap_or_default())?;
    let tokenizer_path = model_dir.join("tokenizer.json");
    let enc = TextEncoder::from_file(&tokenizer_path)?;
    let (adapter_path, adapter_sha256) = match &a.adapter {
        Some(dir) => (Some(relative_to(dir, &a.pool)), Some(file_sha256(&dir.join("adapter_model.safetensors"))?)),
        None => (None, None),
    };

    let mode = if a.prompted {
        let pool = thrive_pool::Pool::open(&a.pool)?;
        let prompts: Vec<String> = pool.read_batch(&BatchKey::real("train"))?.into_iter().map(|e| e.prompt).collect();
        Mode::Prompted { prompts }
    } else {
        Mode::Unconditional {
            strip_quirk: a.strip_quirk,
            max_attempts: a.max_attempts.unwrap_or(4 * a.count as u64 + 4096),
        }
    };
    let call_seed = a.seed.unwrap_or_else(|| Seeds::new(a.chain).derive_u64(Stream::Synthesize(a.generation)));
    let origin = Origin {
        workflow: a.workflow.name().into(),
        chain: a.chain,
        generation: a.generation,
        // Relative to the pool (a Hub id as written), as `thrive run` records them.
        base_model: recorded_model(&a.model, &a.pool),
        adapter_path,
        adapter_sha256,
        call_seed,
    };
    let key = BatchKey::synthetic(a.workflow, a.chain, a.generation);
    // Open the pool first: a second writer or a batch that exists already fails before hours of sampling.
    let mut writer = PoolWriter::open(&a.pool)?;
    if writer.pool().contains(&key) {
        bail!("{}: the pool already holds {key}", a.pool.display());
    }
    let mut out = synthesize(&model, &enc, &mode, a.count, &settings, &origin, None)?;
    TokenCounter::from_file(&tokenizer_path)?.annotate(&mut out.rows)?;
    let entry = writer.write_batch(&key, &out.rows)?;
    println!(
        "{key}: {} rows ({} generations, rejected {:?}) in {:.1} s, {:.0} new tokens/s -> {}",
        entry.rows,
        out.attempts,
        out.rejections,
        out.seconds,
        out.new_tokens as f64 / out.seconds.max(1e-9),
        a.pool.join(&entry.path).display()
    );
    Ok(())
}

/// The model directory of `--model` (its tokenizer) and the model for decoding, in `--dtype`
/// (`gguf`: the GGUF file's quantized weights), with `--adapter` merged in (kept beside quantized
/// weights as an f32 update) and its matrices packed where the build does that
/// ([`Gemma::pack_for_decoding`]).
fn load_for_decoding(
    spec: &str,
    adapter: Option<&std::path::Path>,
    device: &str,
    weights: DecodeWeights,
) -> Result<(PathBuf, Gemma)> {
    let (quantized, dtype) = match weights {
        // The GGUF file's quantized matrices with f32 activations.
        DecodeWeights::Gguf => (true, PrecisionChoice::Fixed(DType::F32.into())),
        DecodeWeights::Precision(p) => (false, p),
    };
    let (device, dtype) = device_for(device, dtype).context("--device")?;
    // Refused before a Hub download or a GGUF conversion.
    let gguf = if quantized { Some(quantized_source(spec)?) } else { None };
    let model_dir = resolve_model_dir(spec)?;
    let mut model = if let Some(gguf) = gguf {
        Gemma::load_gguf(&gguf, &device).with_context(|| format!("--dtype gguf: loading {}", gguf.display()))?
    } else {
        Gemma::load(&model_dir, dtype, &device)?
    };
    if let Some(dir) = adapter {
        let lora = read_adapter_config(dir)?;
        model.add_lora(&lora, &mut Seeds::new(0).stream(Stream::Training(0)))?;
        model.load_lora_weights(&dir.join("adapter_model.safetensors"))?;
    }
    model.pack_for_decoding()?;
    Ok((model_dir, model))
}

/// The LoRA settings of a PEFT adapter directory.
fn read_adapter_config(dir: &std::path::Path) -> Result<LoraConfig> {
    let path = dir.join("adapter_config.json");
    let text = std::fs::read_to_string(&path).with_context(|| format!("--adapter: reading {}", path.display()))?;
    let v: serde_json::Value = serde_json::from_str(&text).with_context(|| format!("{}: not JSON", path.display()))?;
    let rank = v["r"].as_u64().with_context(|| format!("{}: no `r`", path.display()))? as usize;
    let alpha = v["lora_alpha"].as_f64().with_context(|| format!("{}: no `lora_alpha`", path.display()))?;
    let targets: Vec<String> = match &v["target_modules"] {
        serde_json::Value::Array(a) => a.iter().filter_map(|t| t.as_str().map(String::from)).collect(),
        serde_json::Value::String(s) => vec![s.clone()],
        _ => bail!("{}: no `target_modules`", path.display()),
    };
    Ok(LoraConfig { rank, alpha, dropout: 0.0, targets, rslora: v["use_rslora"].as_bool().unwrap_or(false) })
}

#[derive(clap::Args)]
pub struct GenerateArgs {
    /// Model: a local directory, a Gemma 3 .gguf file or a Hub id.
    #[arg(long)]
    model: String,
    /// A PEFT adapter directory (from `thrive sft`), merged in.
    #[arg(long)]
    adapter: Option<PathBuf>,
    /// Text to continue (repeat for several; they are decoded together). `<bos>` is added.
    #[arg(long, required = true)]
    prompt: Vec<String>,
    /// 0 is greedy.
    #[arg(long, default_value_t = 0.0)]
    temperature: f64,
    #[arg(long, default_value_t = 1.0)]
    top_p: f64,
    #[arg(long)]
    top_k: Option<u32>,
    #[arg(long, default_value_t = 64)]
    max_new_tokens: usize,
    /// Seed of the sampling streams (prompt i uses stream i).
    #[arg(long, default_value_t = 0)]
    seed: u64,
    #[arg(long, default_value = "auto", value_parser = ["auto", "cpu", "cuda"])]
    device: String,
    /// Precision of the weights and activations [default: bf16 on CUDA, f32 on the CPU]; gguf:
    /// the GGUF file's own quantized weights with f32 activations (--model a .gguf file; fastest
    /// on the CPU, within a stated tolerance of f32); bf16-mixed: bf16 weights, f32 activations
    /// (CPU, mkl build).
    #[arg(long, value_parser = dtype_parser())]
    dtype: Option<DecodeWeights>,
    /// Keep going past EOS, so that every prompt gets exactly --max-new-tokens (benchmarks).
    #[arg(long)]
    ignore_eos: bool,
}

/// `thrive generate`: continue a few prompts and print the text (to look at a model, not to fill
/// a pool).
pub fn generate(a: GenerateArgs) -> Result<()> {
    let settings = SamplerSettings {
        temperature: a.temperature,
        top_p: a.top_p,
        top_k: a.top_k,
        max_new_tokens: a.max_new_tokens,
        batch_size: a.prompt.len(),
        ignore_eos: a.ignore_eos,
    };
    settings.check().map_err(|e| anyhow::anyhow!("sampler settings: {e}"))?;
    let (model_dir, model) = load_for_decoding(&a.model, a.adapter.as_deref(), &a.device, a.dtype.unwrap_or_default())?;
    let enc = TextEncoder::from_file(&model_dir.join("tokenizer.json"))?;
    let prompts: Vec<Vec<u32>> = a
        .prompt
        .iter()
        .map(|p| enc.tokenizer().encode(p.as_str(), true).map(|e| e.get_ids().to_vec()))
        .collect::<std::result::Result<_, _>>()
        .map_err(|e| anyhow::anyhow!("--prompt: tokenizing: {e}"))?;
    let mut rngs: Vec<_> = (0..prompts.len() as u64).map(|i| thrive_sampler::sample_rng(a.seed, i)).collect();
    let started = std::time::Instant::now();
    let out = thrive_sampler::generate(&model, &prompts, &mut rngs, enc.eos(), &settings)?;
    let new_tokens: usize = out.iter().map(Vec::len).sum();
    for (prompt, ids) in a.prompt.iter().zip(&out) {
        let text = enc.tokenizer().decode(ids, true).map_err(|e| anyhow::anyhow!("decoding: {e}"))?;
        println!("{prompt}{text}\n");
    }
    let secs = started.elapsed().as_secs_f64();
    tracing::info!("{new_tokens} new tokens in {secs:.1} s ({:.1} tokens/s)", new_tokens as f64 / secs.max(1e-9));
    Ok(())
}
