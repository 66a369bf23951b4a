//! `thrive sft`: fine-tune one generation's model on a pool view (or on jsonl files).

use anyhow::{bail, Context, Result};
use clap::builder::{PossibleValuesParser, TypedValueParser};
use std::path::PathBuf;
use thrive_core::manifest::{Manifest, Stopwatch};
use thrive_core::Workflow;
use thrive_orchestrator::to_sft;
use thrive_pool::{BatchKey, Pick, Pool, View};
use thrive_sft::{
    device_for, read_jsonl, resolve_model_dir, train, Example, Gemma, Hyperparams, PrecisionChoice, RunControl,
    TextEncoder, TrainSettings, LORA_TARGETS,
};

#[derive(Clone, Copy, clap::ValueEnum)]
enum ViewKind {
    Replace,
    Accumulate,
    AccumulateSubsample,
    /// `--num-real` real rows and `--num-synthetic` rows of one synthetic batch (value-of-synthetic grid).
    Mix,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum DeviceKind {
    /// CUDA if this binary was built with it and a GPU is present, else CPU.
    Auto,
    Cpu,
    Cuda,
}

impl DeviceKind {
    fn name(self) -> &'static str {
        match self {
            DeviceKind::Auto => "auto",
            DeviceKind::Cpu => "cpu",
            DeviceKind::Cuda => "cuda",
        }
    }
}

#[derive(clap::Args)]
pub struct Args {
    /// Model: a local directory (config.json, tokenizer.json, safetensors), a Gemma 3 .gguf file (dequantized
    /// once into <stem>-thrive/ beside it; scripts/fetch-gemma3.sh fetches Gemma 3 270M) or a Hub id such as
    /// google/gemma-2-2b.
    #[arg(long)]
    model: String,
    /// Output directory: checkpoints, metrics.parquet, adapter/, merged/ and a manifest.
    #[arg(long)]
    out: PathBuf,

    /// Data pool to train from (its real `validation` split, if any, is the evaluation set).
    #[arg(long, conflicts_with = "train")]
    pool: Option<PathBuf>,
    /// Which training set of the pool: a workflow's view of --generation, or a mix.
    #[arg(long, value_enum, default_value = "accumulate")]
    view: ViewKind,
    /// The generation being trained (1 trains on the real data).
    #[arg(long, default_value_t = 1)]
    generation: u32,
    /// Chain (seed) of the pool's synthetic batches; also keys the random streams.
    #[arg(long, default_value_t = 0)]
    chain: u64,
    /// Mix: real rows.
    #[arg(long)]
    num_real: Option<usize>,
    /// Mix: synthetic rows.
    #[arg(long)]
    num_synthetic: Option<usize>,
    /// Mix: the synthetic batch, as WORKFLOW/GENERATION (chain from --chain).
    #[arg(long)]
    synthetic: Option<String>,
    /// Mix: pick rows uniformly at random (seeded) instead of the first rows (the paper).
    #[arg(long)]
    random_pick: bool,
    /// Training examples as jsonl ({"prompt", "response"} per line) instead of a pool.
    #[arg(long)]
    train: Option<PathBuf>,
    /// Evaluation examples as jsonl (overrides the pool's validation split).
    #[arg(long)]
    valid: Option<PathBuf>,

    /// Fully fine-tune every linear layer (the paper) instead of LoRA.
    #[arg(long)]
    full: bool,
    #[arg(long, default_value_t = 16)]
    lora_rank: usize,
    #[arg(long, default_value_t = 32.0)]
    lora_alpha: f64,
    #[arg(long, default_value_t = 0.0)]
    lora_dropout: f64,
    /// Comma-separated modules to adapt [default: all of q,k,v,o,gate,up,down_proj].
    #[arg(long)]
    lora_targets: Option<String>,
    /// rsLoRA scaling alpha/√r.
    #[arg(long)]
    rslora: bool,
    /// Learning rate [default: 2e-4 with LoRA, 8e-6 (the paper) with --full].
    #[arg(long, allow_hyphen_values = true)]
    lr: Option<f64>,
    #[arg(long, default_value_t = 0.0)]
    weight_decay: f64,
    /// Fraction of steps of linear warm-up.
    #[arg(long, default_value_t = 0.05)]
    warmup_ratio: f64,
    /// A fixed number of warm-up steps instead of --warmup-ratio (docs/protocol.md §5: 16).
    #[arg(long)]
    warmup_steps: Option<usize>,
    /// After warm-up: constant (the paper) or cosine.
    #[arg(long, default_value = "constant", value_parser = ["constant", "cosine"])]
    schedule: String,
    /// Sequences per optimiser step (the paper: 128).
    #[arg(long, default_value_t = 128)]
    sequences_per_step: usize,
    /// Sequences per forward pass (gradients accumulate to --sequences-per-step).
    #[arg(long, default_value_t = 8)]
    micro_batch: usize,
    #[arg(long, default_value_t = 1)]
    epochs: usize,
    /// Drop examples with more tokens than this (the paper: 512; never truncated).
    #[arg(long, default_value_t = 512)]
    max_len: usize,
    /// Loss over the response only (the paper: the whole sequence).
    #[arg(long)]
    response_only: bool,
    /// Evaluate every this many steps (0: at the start and the end only).
    #[arg(long, default_value_t = 0)]
    eval_every: usize,
    /// Checkpoint every this many steps (0: never).
    #[arg(long, default_value_t = 0)]
    checkpoint_every: usize,
    #[arg(long, default_value_t = 1.0)]
    max_grad_norm: f64,
    /// Recompute each decoder layer in the backward pass: less memory, about a third more
    /// compute, the same results (a run may resume with it switched either way).
    #[arg(long)]
    gradient_checkpointing: bool,
    /// Continue from the newest checkpoint in --out.
    #[arg(long)]
    resume: bool,
    /// Stop after this many steps in all, leaving a checkpoint (resume later with --resume).
    #[arg(long)]
    stop_after: Option<usize>,
    /// Also write merged weights (merged/) for LoRA; always written for --full.
    #[arg(long)]
    merged: bool,
    /// Write neither adapter/ nor merged/ at the end, only the metrics and manifest (benchmarks:
    /// a full fine-tune of a 2B model would write gigabytes).
    #[arg(long, conflicts_with = "merged")]
    no_export: bool,
    #[arg(long, value_enum, default_value = "auto")]
    device: DeviceKind,
    /// Precision of the frozen weights and activations [default: bf16 on CUDA, f32 on the
    /// CPU]; bf16-mixed: f32 activations with every product of a weight in bf16 on AMX tiles
    /// (CPU, mkl build): LoRA stores the frozen weights in bf16, --full keeps f32 masters and
    /// rounds them for each product, as PyTorch's CPU autocast. Trained tensors, AdamW moments
    /// and the loss are f32 in every precision.
    #[arg(long, value_parser = dtype_parser())]
    dtype: Option<PrecisionChoice>,
}

/// `--dtype`'s values, as `--help` lists them, parsed by [`PrecisionChoice`]'s `FromStr`.
fn dtype_parser() -> impl TypedValueParser<Value = PrecisionChoice> {
    PossibleValuesParser::new(["f32", "bf16", "bf16-mixed"]).try_map(|s| s.parse::<PrecisionChoice>())
}

pub fn run(a: Args) -> Result<()> {
    let watch = Stopwatch::start();
    let (device, dtype) = device_for(a.device.name(), a.dtype.unwrap_or_default()).context("--device")?;
    let cfg = hyperparams(&a)?;
    let model_dir = resolve_model_dir(&a.model)?;
    let enc = TextEncoder::from_file(&model_dir.join("tokenizer.json"))?;
    let (train_set, valid_set, data_desc) = load_data(&a)?;
    tracing::info!("{} training and {} validation examples from {data_desc}", train_set.len(), valid_set.len());
    let mut model =
        if a.full { Gemma::load_full(&model_dir, dtype, &device)? } else { Gemma::load(&model_dir, dtype, &device)? };

    let control = RunControl {
        resume: a.resume,
        stop_after: a.stop_after,
        export_merged: a.merged,
        skip_export: a.no_export,
        progress: None,
    };
    let outcome = train(&mut model, &enc, (&train_set, &valid_set), &cfg, &a.out, control)?;
    let done = outcome.metrics.last().map_or(0, |m| m.step);
    let first = outcome.metrics.iter().find_map(|m| m.eval_loss);
    let last = outcome.metrics.iter().rev().find_map(|m| m.eval_loss);
    let metrics = a.out.join("metrics.parquet");
    let manifest = Manifest {
        tool: "thrive".into(),
        version: env!("CARGO_PKG_VERSION").into(),
        git_commit: thrive_core::GIT_COMMIT.into(),
        setting: "sft".into(),
        command: std::env::args().collect(),
        config: serde_json::json!({
            "model": a.model, "model_dir": model_dir, "data": data_desc, "device": format!("{device:?}"),
            "dtype": dtype.name(), "train": cfg, "dropped_train": outcome.dropped_train,
            "dropped_valid": outcome.dropped_valid, "steps_done": done, "total_steps": outcome.total_steps,
        }),
        seeds: cfg.seed.to_string(),
        started_unix: watch.started_unix(),
        wall_seconds: watch.seconds(),
        threads: rayon::current_num_threads(),
        runs: 1,
        rows: outcome.metrics.len(),
        results: "metrics.parquet".into(),
    };
    manifest.write_beside(&metrics)?;
    let fmt = |x: Option<f64>| x.map_or("-".into(), |v| format!("{v:.4}"));
    println!(
        "{done}/{} steps; validation loss {} -> {}; wrote {}",
        outcome.total_steps,
        fmt(first),
        fmt(last),
        a.out.display()
    );
    if done < outcome.total_steps {
        println!("stopped early: continue with --resume");
    }
    Ok(())
}

/// The flags as settings, checked once by thrive-sft; a bad value names its flag.
fn hyperparams(a: &Args) -> Result<Hyperparams> {
    let settings = TrainSettings {
        full: a.full,
        lr: a.lr,
        lora_rank: a.lora_rank,
        lora_alpha: a.lora_alpha,
        lora_dropout: a.lora_dropout,
        lora_targets: match &a.lora_targets {
            None => LORA_TARGETS.map(String::from).to_vec(),
            Some(list) => list.split(',').map(|t| t.trim().to_string()).collect(),
        },
        rslora: a.rslora,
        weight_decay: a.weight_decay,
        warmup_ratio: a.warmup_ratio,
        warmup_steps: a.warmup_steps,
        schedule: a.schedule.clone(),
        sequences_per_step: a.sequences_per_step,
        micro_batch: a.micro_batch,
        epochs: a.epochs,
        max_len: a.max_len,
        response_only: a.response_only,
        eval_every: a.eval_every,
        checkpoint_every: a.checkpoint_every,
        max_grad_norm: a.max_grad_norm,
        gradient_checkpointing: a.gradient_checkpointing,
    };
    settings
        .hyperparams(a.chain, a.generation)
        .map_err(|e| anyhow::anyhow!("--{}: {}", e.field.replace('_', "-"), e.message))
}

/// (training examples, validation examples, a description for the manifest).
fn load_data(a: &Args) -> Result<(Vec<Example>, Vec<Example>, String)> {
    let mut valid = match &a.valid {
        Some(path) => Some(read_jsonl(path)?),
        None => None,
    };
    let (train, desc) = match (&a.pool, &a.train) {
        (Some(dir), _) => {
            let pool = Pool::open(dir)?;
            if valid.is_none() {
                let key = BatchKey::real("validation");
                valid = Some(if pool.contains(&key) { to_sft(pool.read_batch(&key)?) } else { Vec::new() });
            }
            let view = pool_view(a)?;
            let rows = pool.view(&view)?.examples().with_context(|| format!("reading {view:?}"))?;
            if rows.is_empty() {
                bail!("{}: the training view {view:?} is empty", dir.display());
            }
            (to_sft(rows), format!("pool {}, {}", dir.display(), describe(&view)))
        }
        (None, Some(path)) => (read_jsonl(path)?, format!("jsonl {}", path.display())),
        (None, None) => bail!("say what to train on: --pool DIR (with --view/--generation) or --train FILE.jsonl"),
    };
    let valid = valid.unwrap_or_default();
    if valid.is_empty() {
        tracing::warn!("no validation data (pool without a `validation` split and no --valid): no evaluation loss");
    }
    Ok((train, valid, desc))
}

fn describe(view: &View) -> String {
    match view {
        View::Training { workflow, chain, generation, .. } => {
            format!("the {workflow} training set of generation {generation} (chain {chain})")
        }
        View::Mix { num_real, num_synthetic, synthetic, .. } => {
            format!("{num_real} real rows and {num_synthetic} rows of {synthetic}")
        }
        View::Batch { key, .. } => key.to_string(),
    }
}

fn pool_view(a: &Args) -> Result<View> {
    if a.generation == 0 {
        bail!("--generation: generation 1 is the first model (trained on the real data); 0 is the data itself");
    }
    // The length limit is applied by the trainer with the model's own tokenizer, not through the
    // pool's token counts, which come from whatever tokenizer was given at import.
    Ok(match a.view {
        ViewKind::Replace => View::training(Workflow::Replace, a.chain, a.generation),
        ViewKind::Accumulate => View::training(Workflow::Accumulate, a.chain, a.generation),
        ViewKind::AccumulateSubsample => View::training(Workflow::AccumulateSubsample, a.chain, a.generation),
        ViewKind::Mix => {
            let (Some(num_real), Some(num_synthetic), Some(spec)) = (a.num_real, a.num_synthetic, &a.synthetic) else {
                bail!("--view mix needs --num-real, --num-synthetic and --synthetic WORKFLOW/GENERATION");
            };
            let (w, g) = spec.split_once('/').context("--synthetic: expected WORKFLOW/GENERATION, e.g. replace/1")?;
            // A workflow's chain, or a value grid's source (`value-source/1`).
            let name = if w == thrive_pool::VALUE_SOURCE {
                w
            } else {
                let workflow: Workflow =
                    w.parse().map_err(|e| anyhow::anyhow!("--synthetic: {e} (or {})", thrive_pool::VALUE_SOURCE))?;
                workflow.name()
            };
            let generation: u32 = g.parse().map_err(|_| anyhow::anyhow!("--synthetic: `{g}` is not a generation"))?;
            let pick = if a.random_pick { Pick::Random { seed: a.chain } } else { Pick::First };
            View::Mix {
                num_real,
                num_synthetic,
                synthetic: BatchKey::Synthetic { workflow: name.into(), chain: a.chain, generation },
                pick,
                filter: None,
            }
        }
    })
}
