//! LoRA: a frozen linear layer plus a trainable low-rank update B·A, as PEFT defines it.

use crate::matmul::{bf16_trained_linear, Mm, Weight};
use crate::ops::lora_linear;
use crate::Result;
use candle_core::quantized::QTensor;
use candle_core::{DType, Device, Tensor, Var};
use rand::Rng as _;
use std::sync::Arc;

/// Every linear layer of Gemma's attention and MLP (PEFT's module names).
pub const LORA_TARGETS: [&str; 7] = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"];

/// LoRA hyper-parameters.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct LoraConfig {
    pub rank: usize,
    pub alpha: f64,
    pub dropout: f64,
    /// Module names to adapt (a subset of [`LORA_TARGETS`]).
    pub targets: Vec<String>,
    /// rsLoRA: scale by alpha/√r instead of alpha/r.
    pub rslora: bool,
}

impl Default for LoraConfig {
    fn default() -> Self {
        LoraConfig {
            rank: 16,
            alpha: 32.0,
            dropout: 0.0,
            targets: LORA_TARGETS.map(String::from).to_vec(),
            rslora: false,
        }
    }
}

impl LoraConfig {
    /// The factor applied to B·A·x.
    pub fn scale(&self) -> f64 {
        if self.rslora {
            self.alpha / (self.rank as f64).sqrt()
        } else {
            self.alpha / self.rank as f64
        }
    }
}

/// The trainable part of an adapted layer.
#[derive(Debug, Clone)]
pub struct LoraWeights {
    /// (rank, in) — initialised like PEFT: uniform(±1/√in) (Kaiming-uniform with a = √5).
    pub a: Var,
    /// (out, rank) — zero, so the adapted model starts equal to the base model.
    pub b: Var,
    pub scale: f64,
    pub dropout: f64,
}

/// A linear layer y = x Wᵀ (+ scale · dropout(x) Aᵀ Bᵀ).
#[derive(Debug, Clone)]
pub struct LoraLinear {
    /// The base weight (out, in): a constant when frozen (dense or quantized), a `Var`'s tensor
    /// for full fine-tuning.
    pub weight: Weight,
    pub full: Option<Var>,
    pub lora: Option<LoraWeights>,
    /// A trained base weight's products run in bf16 against its f32 master (`--dtype
    /// bf16-mixed --full`, [`bf16_trained_linear`]).
    pub bf16_products: bool,
}

impl LoraLinear {
    /// A frozen layer.
    pub fn frozen(weight: Tensor) -> Self {
        LoraLinear { weight: Weight::Dense(weight), full: None, lora: None, bf16_products: false }
    }

    /// A frozen layer of quantized weights (decoding only).
    pub fn quantized(weight: Arc<QTensor>) -> Self {
        LoraLinear { weight: Weight::Quantized(weight), full: None, lora: None, bf16_products: false }
    }

    /// A layer whose base weight is trained (full fine-tuning).
    pub fn trainable(weight: &Tensor) -> Result<Self> {
        let var = Var::from_tensor(&weight.to_dtype(DType::F32)?)?;
        Ok(LoraLinear {
            weight: Weight::Dense(var.as_tensor().clone()),
            full: Some(var),
            lora: None,
            bf16_products: false,
        })
    }

    /// Adds a LoRA adapter with fresh A (from `rng`) and zero B, kept in f32.
    pub fn with_lora(mut self, cfg: &LoraConfig, rng: &mut thrive_core::Rng, device: &Device) -> Result<Self> {
        let (out_dim, in_dim) = self.weight.dims2()?;
        let bound = 1.0 / (in_dim as f64).sqrt();
        let a: Vec<f32> = (0..cfg.rank * in_dim).map(|_| rng.random_range(-bound..bound) as f32).collect();
        let a = Var::from_tensor(&Tensor::from_vec(a, (cfg.rank, in_dim), device)?)?;
        let b = Var::zeros((out_dim, cfg.rank), DType::F32, device)?;
        self.lora = Some(LoraWeights { a, b, scale: cfg.scale(), dropout: cfg.dropout });
        Ok(self)
    }

    /// Applies the layer to `x` (…, in). `dropout_rng` is `Some` while training with dropout.
    /// The update is computed in x's dtype (as autocast would) from the f32 masters, so no f32
    /// copy of the input is made in bf16; a frozen base weight gets no gradient and no backward
    /// work.
    pub fn forward(&self, x: &Tensor, dropout_rng: Option<&mut thrive_core::Rng>) -> Result<Tensor> {
        let dropping = dropout_rng.is_some() && self.lora.as_ref().is_some_and(|l| l.dropout > 0.0);
        if let (Some(l), None, false, Weight::Dense(w)) = (&self.lora, &self.full, dropping, &self.weight) {
            // Without dropout the adapted layer is one op that keeps only its input and output.
            return lora_linear(x, w, &l.a, &l.b, l.scale);
        }
        let y = match &self.full {
            Some(v) if self.bf16_products => bf16_trained_linear(x, v.as_tensor())?,
            Some(v) => x.broadcast_mm(&v.as_tensor().to_dtype(x.dtype())?.t()?)?,
            None => self.weight.apply(x)?,
        };
        let Some(l) = &self.lora else { return Ok(y) };
        let xl = match dropout_rng {
            Some(rng) if l.dropout > 0.0 => dropout(x, l.dropout, rng)?,
            _ => x.clone(),
        };
        let (a, b) = (l.a.as_tensor().to_dtype(x.dtype())?, l.b.as_tensor().to_dtype(x.dtype())?);
        let update = xl.broadcast_mm(&a.t()?)?.broadcast_mm(&b.t()?)?;
        Ok((y + (update * l.scale)?)?)
    }

    /// W + scale·B·A: the weight with the adapter merged in (for sampling and export).
    pub fn merged_weight(&self) -> Result<Tensor> {
        let w = match &self.full {
            Some(v) => v.as_tensor().clone(),
            None => self.weight.dense()?.clone(),
        };
        match &self.lora {
            None => Ok(w),
            Some(l) => {
                let delta = (l.b.as_tensor().mm(l.a.as_tensor())? * l.scale)?;
                Ok((w.to_dtype(DType::F32)? + delta)?.to_dtype(w.dtype())?)
            }
        }
    }
}

/// Inverted dropout with a mask drawn from our own seeded stream, so a run is reproducible on
/// any device and thread count.
fn dropout(x: &Tensor, p: f64, rng: &mut thrive_core::Rng) -> Result<Tensor> {
    let keep = 1.0 - p;
    let mask: Vec<f32> =
        (0..x.elem_count()).map(|_| if rng.random::<f64>() < keep { (1.0 / keep) as f32 } else { 0.0 }).collect();
    let mask = Tensor::from_vec(mask, x.shape(), x.device())?.to_dtype(x.dtype())?;
    Ok((x * mask)?)
}
