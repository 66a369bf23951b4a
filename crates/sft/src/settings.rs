//! Fine-tuning settings as a user writes them (run files, command-line flags), and the one check
//! that turns them into a [`Hyperparams`]. Callers name a bad field their own way (`sft.lr` in a
//! run file, `--lr` on the command line).

use crate::hyperparams::{Hyperparams, Mode, Schedule};
use crate::lora::{LoraConfig, LORA_TARGETS};
use serde::{Deserialize, Serialize};

/// Fine-tuning settings (the meaning of each is `thrive sft --help`'s).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TrainSettings {
    pub full: bool,
    pub lr: Option<f64>,
    pub lora_rank: usize,
    pub lora_alpha: f64,
    pub lora_dropout: f64,
    pub lora_targets: Vec<String>,
    pub rslora: bool,
    pub weight_decay: f64,
    pub warmup_ratio: f64,
    /// A fixed number of warm-up steps (overrides `warmup_ratio`).
    pub warmup_steps: Option<usize>,
    /// `constant` or `cosine`.
    pub schedule: String,
    pub sequences_per_step: usize,
    pub micro_batch: usize,
    pub epochs: usize,
    pub max_len: usize,
    pub response_only: bool,
    pub eval_every: usize,
    pub checkpoint_every: usize,
    pub max_grad_norm: f64,
    /// Recompute each decoder layer in the backward pass (less memory, same results).
    pub gradient_checkpointing: bool,
}

impl Default for TrainSettings {
    fn default() -> Self {
        let l = LoraConfig::default();
        TrainSettings {
            full: false,
            lr: None,
            lora_rank: l.rank,
            lora_alpha: l.alpha,
            lora_dropout: l.dropout,
            lora_targets: l.targets,
            rslora: false,
            weight_decay: 0.0,
            warmup_ratio: 0.05,
            warmup_steps: None,
            schedule: "constant".into(),
            sequences_per_step: 128,
            micro_batch: 8,
            epochs: 1,
            max_len: 512,
            response_only: false,
            eval_every: 0,
            checkpoint_every: 10,
            max_grad_norm: 1.0,
            gradient_checkpointing: false,
        }
    }
}

/// A setting with a bad value: the field (as named in [`TrainSettings`]) and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SettingError {
    pub field: &'static str,
    pub message: String,
}

impl SettingError {
    fn new(field: &'static str, message: impl Into<String>) -> Self {
        SettingError { field, message: message.into() }
    }
}

impl TrainSettings {
    /// The training configuration of (seed, generation), or the first bad setting.
    pub fn hyperparams(&self, seed: u64, generation: u32) -> Result<Hyperparams, SettingError> {
        let mode = if self.full {
            Mode::Full
        } else {
            if let Some(bad) = self.lora_targets.iter().find(|t| !LORA_TARGETS.contains(&t.as_str())) {
                return Err(SettingError::new(
                    "lora_targets",
                    format!("unknown module `{bad}` (expected some of {})", LORA_TARGETS.join(",")),
                ));
            }
            if self.lora_targets.is_empty() {
                return Err(SettingError::new("lora_targets", "name at least one module"));
            }
            if self.lora_rank == 0 {
                return Err(SettingError::new("lora_rank", "must be positive"));
            }
            if !(0.0..1.0).contains(&self.lora_dropout) {
                return Err(SettingError::new("lora_dropout", "must be in [0, 1)"));
            }
            Mode::Lora(LoraConfig {
                rank: self.lora_rank,
                alpha: self.lora_alpha,
                dropout: self.lora_dropout,
                targets: self.lora_targets.clone(),
                rslora: self.rslora,
            })
        };
        let base = if self.full { Hyperparams::paper_full() } else { Hyperparams::default_lora() };
        let lr = self.lr.unwrap_or(base.lr);
        if !(lr > 0.0 && lr.is_finite()) {
            return Err(SettingError::new("lr", "must be a positive number"));
        }
        if !(0.0..1.0).contains(&self.warmup_ratio) {
            return Err(SettingError::new("warmup_ratio", "must be in [0, 1)"));
        }
        if !(self.weight_decay >= 0.0 && self.weight_decay.is_finite()) {
            return Err(SettingError::new("weight_decay", "must be a non-negative number"));
        }
        if self.max_grad_norm.is_nan() || self.max_grad_norm <= 0.0 {
            return Err(SettingError::new("max_grad_norm", "must be positive"));
        }
        let schedule = match self.schedule.as_str() {
            "constant" => Schedule::Constant,
            "cosine" => Schedule::Cosine,
            other => return Err(SettingError::new("schedule", format!("`{other}` is not constant or cosine"))),
        };
        for (field, v) in [
            ("sequences_per_step", self.sequences_per_step),
            ("micro_batch", self.micro_batch),
            ("epochs", self.epochs),
        ] {
            if v == 0 {
                return Err(SettingError::new(field, "must be positive"));
            }
        }
        if self.max_len < 2 {
            return Err(SettingError::new("max_len", "must be at least 2"));
        }
        Ok(Hyperparams {
            mode,
            lr,
            weight_decay: self.weight_decay,
            warmup_ratio: self.warmup_ratio,
            warmup_steps: self.warmup_steps,
            schedule,
            sequences_per_step: self.sequences_per_step,
            micro_batch: self.micro_batch,
            epochs: self.epochs,
            max_len: self.max_len,
            response_only: self.response_only,
            eval_every: self.eval_every,
            checkpoint_every: self.checkpoint_every,
            max_grad_norm: self.max_grad_norm,
            gradient_checkpointing: self.gradient_checkpointing,
            seed,
            generation,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_values_name_their_field() {
        let cases: Vec<(TrainSettings, &str)> = vec![
            (TrainSettings { lr: Some(-1.0), ..Default::default() }, "lr"),
            (TrainSettings { lora_targets: vec!["qq_proj".into()], ..Default::default() }, "lora_targets"),
            (TrainSettings { lora_rank: 0, ..Default::default() }, "lora_rank"),
            (TrainSettings { schedule: "linear".into(), ..Default::default() }, "schedule"),
            (TrainSettings { micro_batch: 0, ..Default::default() }, "micro_batch"),
            (TrainSettings { warmup_ratio: 1.5, ..Default::default() }, "warmup_ratio"),
            (TrainSettings { max_len: 1, ..Default::default() }, "max_len"),
        ];
        for (s, field) in cases {
            assert_eq!(s.hyperparams(0, 1).unwrap_err().field, field);
        }
    }

    #[test]
    fn defaults_are_the_lora_recipe() {
        let c = TrainSettings::default().hyperparams(3, 2).unwrap();
        assert_eq!((c.lr, c.seed, c.generation), (Hyperparams::default_lora().lr, 3, 2));
        let full = TrainSettings { full: true, ..Default::default() }.hyperparams(0, 1).unwrap();
        assert_eq!((full.mode, full.lr), (Mode::Full, 8e-6));
    }
}
