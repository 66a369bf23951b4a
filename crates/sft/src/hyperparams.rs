//! The hyper-parameters of one fine-tuning run: what is trained ([`Mode`]), the learning-rate
//! [`Schedule`] and the rest of [`Hyperparams`], shared by the training loop, the settings that
//! build it and the export that reads it.

use crate::lora::LoraConfig;
use serde::{Deserialize, Serialize};

/// The learning-rate schedule after warm-up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Schedule {
    Constant,
    Cosine,
}

/// What is trained.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Mode {
    /// LoRA adapters on a frozen base.
    Lora(LoraConfig),
    /// Every parameter (linear layers, the tied embedding, every norm), as the paper.
    Full,
}

/// Hyper-parameters of one fine-tuning run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Hyperparams {
    pub mode: Mode,
    pub lr: f64,
    pub weight_decay: f64,
    /// Fraction of the steps spent warming up linearly from 0.
    pub warmup_ratio: f64,
    /// A fixed number of warm-up steps instead of the ratio (docs/protocol.md §5 uses 16).
    #[serde(default)]
    pub warmup_steps: Option<usize>,
    pub schedule: Schedule,
    /// Sequences per optimiser step (the paper: 128).
    pub sequences_per_step: usize,
    /// Sequences per forward pass; gradients are accumulated over a step's micro-batches.
    pub micro_batch: usize,
    pub epochs: usize,
    /// Examples longer than this many tokens (with BOS and EOS) are dropped.
    pub max_len: usize,
    /// Loss over the response (and EOS) only; the paper uses the whole sequence.
    pub response_only: bool,
    /// Evaluate every this many steps (0: only at the start and the end).
    pub eval_every: usize,
    /// Checkpoint every this many steps (0: never).
    pub checkpoint_every: usize,
    pub max_grad_norm: f64,
    /// Recompute each decoder layer in the backward pass instead of keeping its activations:
    /// less memory, about a third more compute, the same gradients. A run may be resumed with
    /// it switched either way.
    #[serde(default)]
    pub gradient_checkpointing: bool,
    pub seed: u64,
    /// The model-collapse generation, which keys the random streams.
    pub generation: u32,
}

impl Hyperparams {
    /// The paper's full fine-tuning recipe (docs/protocol.md §4.2): lr 8e-6, 128 sequences a step,
    /// 5% warm-up then constant, one epoch, clipping at 1.0, whole-sequence loss.
    pub fn paper_full() -> Self {
        Hyperparams {
            mode: Mode::Full,
            lr: 8e-6,
            weight_decay: 0.0,
            warmup_ratio: 0.05,
            warmup_steps: None,
            schedule: Schedule::Constant,
            sequences_per_step: 128,
            micro_batch: 8,
            epochs: 1,
            max_len: 512,
            response_only: false,
            eval_every: 0,
            checkpoint_every: 0,
            max_grad_norm: 1.0,
            gradient_checkpointing: false,
            seed: 0,
            generation: 0,
        }
    }

    /// The same recipe with LoRA and a LoRA-sized learning rate (2e-4, the usual PEFT choice).
    pub fn default_lora() -> Self {
        Hyperparams { mode: Mode::Lora(LoraConfig::default()), lr: 2e-4, ..Self::paper_full() }
    }

    /// The learning rate of update `step` (0-based), as transformers' schedulers.
    pub fn lr_at(&self, step: usize, total: usize) -> f64 {
        let warmup = self.warmup_steps.unwrap_or((self.warmup_ratio * total as f64).ceil() as usize);
        if step < warmup {
            return self.lr * step as f64 / warmup.max(1) as f64;
        }
        match self.schedule {
            Schedule::Constant => self.lr,
            Schedule::Cosine => {
                let progress = (step - warmup) as f64 / (total - warmup).max(1) as f64;
                self.lr * 0.5 * (1.0 + (std::f64::consts::PI * progress).cos())
            }
        }
    }
}
