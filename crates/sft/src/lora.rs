//! LoRA: a frozen linear layer plus a trainable low-rank update B·A, as PEFT defines it.

use crate::matmul::{Mm, Packed};
use crate::ops::{bf16_trained_linear, frozen_linear, lora_linear};
use crate::q8::Q8Matrix;
use crate::{Error, Result};
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

/// A frozen weight matrix (out, in): dense, or a GGUF file's quantized blocks, which only
/// inference reads (they have no gradient and cannot be trained or merged).
#[derive(Debug, Clone)]
pub enum Weight {
    Dense(Tensor),
    /// Multiplied by candle's quantized matmul, which quantizes the input too (to q8_0 or q8_K,
    /// the block type's partner) and reads 4.5 to 8.5 bits a weight.
    Quantized(Arc<QTensor>),
    /// Q8_0 blocks regrouped for our own SIMD kernels ([`Q8Matrix`]): the same values and
    /// bytes, multiplied by a VNNI or AVX2 kernel whatever the inner width.
    Q8(Arc<Q8Matrix>),
    /// A dense weight also packed for decoding's small products ([`Packed`]): inference without
    /// gradients takes the packed copy, anything else the dense one.
    Packed {
        dense: Tensor,
        packed: Arc<Packed>,
    },
}

impl Weight {
    /// The dense tensor; an error for quantized weights, which only decoding can use.
    pub fn dense(&self) -> Result<&Tensor> {
        match self {
            Weight::Dense(t) | Weight::Packed { dense: t, .. } => Ok(t),
            Weight::Quantized(_) | Weight::Q8(_) => Err(Error::Invalid(format!(
                "a quantized ({}) weight can only be used for decoding (training, merging and export need the \
                 dense weights: load the model with --dtype f32 or bf16)",
                self.quantized_kind().unwrap_or_default()
            ))),
        }
    }

    /// (out, in).
    pub fn dims2(&self) -> Result<(usize, usize)> {
        Ok(match self {
            Weight::Dense(t) | Weight::Packed { dense: t, .. } => t.dims2()?,
            Weight::Quantized(q) => q.shape().dims2()?,
            Weight::Q8(q) => q.dims(),
        })
    }

    /// `x Wᵀ` for inference. A quantized weight takes a contiguous f32 input.
    pub fn apply(&self, x: &Tensor) -> Result<Tensor> {
        match self {
            Weight::Dense(w) => frozen_linear(x, w),
            Weight::Packed { dense, .. } if x.track_op() => frozen_linear(x, dense),
            Weight::Packed { packed, .. } => Ok(packed.linear(x)?),
            Weight::Quantized(q) => Ok(x.contiguous()?.apply_op1_no_bwd(q.as_ref())?),
            Weight::Q8(q) => q.matmul(x),
        }
    }

    /// Rows `ids` of the matrix (an embedding lookup), as f32 (quantized) or in its dtype.
    pub fn rows(&self, ids: &Tensor) -> Result<Tensor> {
        match self {
            Weight::Dense(w) | Weight::Packed { dense: w, .. } => Ok(w.embedding(ids)?),
            Weight::Quantized(q) => Ok(q.embedding(ids)?),
            Weight::Q8(q) => q.rows(ids),
        }
    }

    pub fn is_quantized(&self) -> bool {
        matches!(self, Weight::Quantized(_) | Weight::Q8(_))
    }

    /// The block type of a quantized weight ("Q8_0", "Q4K", ...), `None` for dense ones.
    pub fn quantized_kind(&self) -> Option<String> {
        match self {
            Weight::Quantized(q) => Some(format!("{:?}", q.dtype())),
            Weight::Q8(_) => Some("Q8_0".into()),
            _ => None,
        }
    }

    /// A quantized weight for decoding: Q8_0 blocks on the CPU go to our own kernels
    /// ([`Q8Matrix`]), other block types and devices to candle's.
    pub fn from_qtensor(q: QTensor) -> Result<Weight> {
        if !q.device().is_cpu() {
            return Ok(Weight::Quantized(Arc::new(q)));
        }
        Ok(match Q8Matrix::from_qtensor(&q)? {
            Some(m) => Weight::Q8(Arc::new(m)),
            None => Weight::Quantized(Arc::new(q)),
        })
    }

    /// This weight with a packed copy for decoding, where the build and the weight allow one
    /// (see [`Packed::new`]); else unchanged.
    pub fn packed(&self) -> Result<Weight> {
        if let Weight::Dense(dense) = self {
            if let Some(p) = Packed::new(dense)? {
                return Ok(Weight::Packed { dense: dense.clone(), packed: Arc::new(p) });
            }
        }
        Ok(self.clone())
    }
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
