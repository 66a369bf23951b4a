//! One decoder layer: its linear layers and norms, and its forward pass (attention, then the
//! GeGLU MLP, each between two norms).

use super::attention::attention;
use super::norm::RmsNorm;
use crate::lora::LoraLinear;
use crate::ops::{recompute, Recompute};
use crate::Result;
use candle_core::{Tensor, Var};
use std::sync::Arc;
use thrive_core::Rng;

/// A decoder layer's weights (transformers' names in [`super::LINEAR_MODULES`] order) and its
/// attention shape.
#[derive(Debug, Clone)]
pub(super) struct Layer {
    pub(super) q: LoraLinear,
    pub(super) k: LoraLinear,
    pub(super) v: LoraLinear,
    pub(super) o: LoraLinear,
    pub(super) gate: LoraLinear,
    pub(super) up: LoraLinear,
    pub(super) down: LoraLinear,
    pub(super) input_norm: RmsNorm,
    pub(super) post_attn_norm: RmsNorm,
    pub(super) pre_ff_norm: RmsNorm,
    pub(super) post_ff_norm: RmsNorm,
    /// Gemma 3's RMSNorm of each query and key head (over head_dim), before RoPE.
    pub(super) q_norm: Option<RmsNorm>,
    pub(super) k_norm: Option<RmsNorm>,
    pub(super) window: Option<usize>,
    pub(super) rope_base: f64,
}

/// What every layer of one forward pass shares: its rotary table, its mask and the sizes.
#[derive(Clone)]
pub(super) struct LayerPass {
    pub(super) cos: Tensor,
    pub(super) sin: Tensor,
    /// Additive (batch, 1, seq, seq).
    pub(super) mask: Tensor,
    pub(super) scaling: f64,
    pub(super) softcap: Option<f64>,
    /// (query heads, key/value heads, head dim).
    pub(super) heads: (usize, usize, usize),
    pub(super) erf_gelu: bool,
    /// Attention's hand-written backward (see [`Gemma::manual_backward`]).
    pub(super) manual_backward: bool,
}

impl Layer {
    /// One decoder layer on (batch, seq, hidden).
    pub(super) fn forward(&self, x: &Tensor, pass: &LayerPass, mut rng: Option<&mut Rng>) -> Result<Tensor> {
        let (b, seq, _) = x.dims3()?;
        let (nh, nkv, hd) = pass.heads;
        let m = pass.manual_backward;
        let h = self.input_norm.forward(x, m)?;
        let q = self.q.forward(&h, rng.as_deref_mut())?.reshape((b, seq, nh, hd))?;
        let k = self.k.forward(&h, rng.as_deref_mut())?.reshape((b, seq, nkv, hd))?;
        let v = self.v.forward(&h, rng.as_deref_mut())?.reshape((b, seq, nkv, hd))?;
        let (q, k) = match (&self.q_norm, &self.k_norm) {
            (Some(qn), Some(kn)) => (qn.forward(&q, m)?, kn.forward(&k, m)?),
            _ => (q, k),
        };
        let attn = attention(&q, &k, &v, pass)?;
        let h = self.o.forward(&attn, rng.as_deref_mut())?;
        let x = (x + self.post_attn_norm.forward(&h, m)?)?;

        let h = self.pre_ff_norm.forward(&x, m)?;
        let gate = self.gate.forward(&h, rng.as_deref_mut())?;
        let up = self.up.forward(&h, rng.as_deref_mut())?;
        let h = self.down.forward(&geglu(&gate, &up, pass.erf_gelu)?, rng)?;
        Ok((x + self.post_ff_norm.forward(&h, m)?)?)
    }

    /// Every trainable tensor of the layer (LoRA matrices, or its weights and norms).
    pub(super) fn trainable_vars(&self) -> Vec<Var> {
        let mut out = Vec::new();
        for lin in [&self.q, &self.k, &self.v, &self.o, &self.gate, &self.up, &self.down] {
            if let Some(l) = &lin.lora {
                out.extend([l.a.clone(), l.b.clone()]);
            }
            out.extend(lin.full.clone());
        }
        let norms = [&self.input_norm, &self.post_attn_norm, &self.pre_ff_norm, &self.post_ff_norm];
        for n in norms.into_iter().chain(self.q_norm.iter()).chain(self.k_norm.iter()) {
            out.extend(n.var.clone());
        }
        out
    }
}

/// gelu(gate) · up, recomputed in the backward pass rather than keeping gelu(gate).
pub(super) fn geglu(gate: &Tensor, up: &Tensor, erf: bool) -> Result<Tensor> {
    if let Some(fused) = crate::ops::geglu_cpu(gate, up, erf)? {
        return Ok(fused);
    }
    let body = move |a: &[Tensor], _: Option<&mut Rng>| -> Result<Tensor> {
        let g = if erf { a[0].gelu_erf()? } else { a[0].gelu()? };
        Ok((g * &a[1])?)
    };
    Ok(recompute("geglu", &[gate, up], Arc::new(body), Recompute::default())?.0)
}
