//! The Gemma 2 and Gemma 3 decoders, written so that every op between the loss and a trainable
//! tensor has a backward pass: composite softmax and rotary embeddings, full-sequence logits,
//! padding masks, sliding-window and global attention, soft-capping (Gemma 2), QK-norm and a RoPE
//! base per layer type (Gemma 3), (1 + w) RMSNorm, GeGLU. The two share everything else.
//!
//! [`Gemma`] and its walks over its parameters live here; loading in `load`, the training
//! forward pass in `forward` (one decoder layer in `layer`, its attention in `attention`, its
//! norms in `norm`), LoRA adapters in `adapters` and incremental decoding with its [`KvCache`]
//! in `decode`.

mod adapters;
mod attention;
mod decode;
mod forward;
mod layer;
mod load;
mod norm;

pub use decode::KvCache;

use crate::gemma_config::GemmaConfig;
use crate::lora::LoraLinear;
use crate::matmul::Weight;
use crate::Result;
use candle_core::{DType, Device, Var};
use layer::Layer;
use norm::RmsNorm;

/// The linear layers of a decoder layer, in the order of `Layer`'s fields (transformers' names).
const LINEAR_MODULES: [&str; 7] = [
    "self_attn.q_proj",
    "self_attn.k_proj",
    "self_attn.v_proj",
    "self_attn.o_proj",
    "mlp.gate_proj",
    "mlp.up_proj",
    "mlp.down_proj",
];

/// Added to masked attention scores (finite, so a fully masked row gives a uniform softmax, not NaN).
const MASKED: f32 = -1e30;

/// A Gemma 2 or Gemma 3 (text) causal language model with optional LoRA adapters.
#[derive(Debug, Clone)]
pub struct Gemma {
    pub cfg: GemmaConfig,
    /// The tied embedding and output matrix (dense, or quantized for decoding).
    embed: Weight,
    /// The embedding (f32) when it is trained (full fine-tuning); `embed` is then its tensor.
    embed_var: Option<Var>,
    layers: Vec<Layer>,
    final_norm: RmsNorm,
    dtype: DType,
    device: Device,
    erf_gelu: bool,
    /// candle's fused RMSNorm and softmax kernels (training and decoding) with hand-written
    /// backward passes for RMSNorm, attention and the loss (no autograd graph): `None` uses them
    /// on every device. candle's composite ops each cost a pass over (seq × seq) or (rows ×
    /// vocabulary) values and, on a GPU, a kernel launch; on the CPU the hand-written passes took
    /// a LoRA step of Gemma 3 270M from 36 to 29 s (docs/performance.md). `Some(false)` runs autograd through
    /// the composite ops instead, which tests and `thrive check-device` compare against.
    #[doc(hidden)]
    pub manual_backward: Option<bool>,
    /// Full fine-tuning under `--dtype bf16-mixed`: the trained weights' products (the output
    /// matrix's included) run in bf16 against their f32 masters, as PyTorch's CPU autocast.
    bf16_trained: bool,
}

impl Gemma {
    /// Whether the trained weights' products run in bf16 ([`Gemma::load_full`] under bf16-mixed).
    pub(crate) fn bf16_trained(&self) -> bool {
        self.bf16_trained
    }

    /// The device the model's tensors live on.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// The dtype its activations are computed in.
    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// Whether the matrices are quantized (decoding only).
    pub fn is_quantized(&self) -> bool {
        self.embed.is_quantized()
    }

    /// Every adaptable linear layer with its PEFT module path
    /// (`base_model.model.model.layers.{i}.self_attn.q_proj`).
    fn linears_mut(&mut self) -> Vec<(String, &mut LoraLinear)> {
        let mut out = Vec::new();
        for (i, l) in self.layers.iter_mut().enumerate() {
            let p = format!("base_model.model.model.layers.{i}");
            let [q, k, v, o, gate, up, down] =
                [&mut l.q, &mut l.k, &mut l.v, &mut l.o, &mut l.gate, &mut l.up, &mut l.down];
            for (module, lin) in LINEAR_MODULES.iter().zip([q, k, v, o, gate, up, down]) {
                out.push((format!("{p}.{module}"), lin));
            }
        }
        out
    }

    /// Every linear layer under PEFT's name (`base_model.model.model.layers.0.self_attn.q_proj`).
    fn linears(&self) -> Vec<(String, &LoraLinear)> {
        let mut out = Vec::new();
        for (i, l) in self.layers.iter().enumerate() {
            let p = format!("base_model.model.model.layers.{i}");
            for (module, lin) in LINEAR_MODULES.iter().zip([&l.q, &l.k, &l.v, &l.o, &l.gate, &l.up, &l.down]) {
                out.push((format!("{p}.{module}"), lin));
            }
        }
        out
    }

    /// The trainable tensors under PEFT's names (`….q_proj.lora_A.weight`), or, for full
    /// fine-tuning, the transformers names of the base weights.
    pub fn trainable(&mut self) -> Vec<(String, Var)> {
        let mut out = Vec::new();
        for (name, lin) in self.linears_mut() {
            if let Some(l) = &lin.lora {
                out.push((format!("{name}.lora_A.weight"), l.a.clone()));
                out.push((format!("{name}.lora_B.weight"), l.b.clone()));
            }
            if let Some(v) = &lin.full {
                out.push((format!("{}.weight", name.trim_start_matches("base_model.model.")), v.clone()));
            }
        }
        if let Some(v) = &self.embed_var {
            out.push(("model.embed_tokens.weight".into(), v.clone()));
        }
        for (name, norm) in self.norms() {
            if let Some(v) = &norm.var {
                out.push((format!("{name}.weight"), v.clone()));
            }
        }
        out
    }

    /// Every RMSNorm under its transformers name (without `.weight`).
    fn norms(&self) -> Vec<(String, &RmsNorm)> {
        let mut out = Vec::new();
        for (i, l) in self.layers.iter().enumerate() {
            let p = format!("model.layers.{i}");
            out.push((format!("{p}.input_layernorm"), &l.input_norm));
            out.push((format!("{p}.post_attention_layernorm"), &l.post_attn_norm));
            out.push((format!("{p}.pre_feedforward_layernorm"), &l.pre_ff_norm));
            out.push((format!("{p}.post_feedforward_layernorm"), &l.post_ff_norm));
            if let (Some(q), Some(k)) = (&l.q_norm, &l.k_norm) {
                out.push((format!("{p}.self_attn.q_norm"), q));
                out.push((format!("{p}.self_attn.k_norm"), k));
            }
        }
        out.push(("model.norm".into(), &self.final_norm));
        out
    }

    /// Makes every parameter trainable, as the paper's full fine-tuning: the linear layers, the
    /// (tied) embedding and every norm, each held in f32.
    pub fn make_all_trainable(&mut self) -> Result<()> {
        if self.embed_var.is_some() {
            return Ok(()); // already (Gemma::load_full)
        }
        for (_, lin) in self.linears_mut() {
            *lin = LoraLinear::trainable(lin.weight.dense()?)?;
        }
        let var = Var::from_tensor(&self.embed.dense()?.to_dtype(DType::F32)?)?;
        self.embed = Weight::Dense(var.as_tensor().clone());
        self.embed_var = Some(var);
        for l in &mut self.layers {
            for n in [&mut l.input_norm, &mut l.post_attn_norm, &mut l.pre_ff_norm, &mut l.post_ff_norm] {
                n.make_trainable()?;
            }
            for n in [&mut l.q_norm, &mut l.k_norm].into_iter().flatten() {
                n.make_trainable()?;
            }
        }
        self.final_norm.make_trainable()?;
        Ok(())
    }

    /// Whether attention and the loss use their hand-written backward passes.
    pub(crate) fn uses_manual_backward(&self) -> bool {
        self.manual_backward.unwrap_or(true)
    }

    /// The trained embedding, when there is one (full fine-tuning).
    pub(crate) fn embed_var(&self) -> Option<&Var> {
        self.embed_var.as_ref()
    }
}
