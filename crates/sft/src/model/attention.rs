//! Scaled dot-product attention for training, recomputed in the backward pass, and its
//! hand-written backward (FlashAttention's, in whole-matrix ops).

use super::layer::LayerPass;
use crate::matmul::Mm;
use crate::ops::{recompute, Recompute};
use crate::Result;
use candle_core::{DType, Tensor, D};
use std::sync::Arc;
use thrive_core::Rng;

/// Scaled dot-product attention of q (batch, seq, heads, hd) over k and v (batch, seq, kv heads,
/// hd), rotary embeddings included, in f32; returns (batch, seq, heads · hd) in q's dtype. Only
/// the inputs and the output are kept: the (seq × seq) scores and probabilities are recomputed
/// in the backward pass, one layer at a time, through autograd or (`pass.manual_backward`) the
/// hand-written [`AttentionCore::backward`].
pub(super) fn attention(q: &Tensor, k: &Tensor, v: &Tensor, pass: &LayerPass) -> Result<Tensor> {
    let core = AttentionCore(pass.clone());
    let (fwd, bwd) = (core.clone(), core);
    let body = move |a: &[Tensor], _: Option<&mut Rng>| -> Result<Tensor> { fwd.forward(a) };
    let mut extra = Recompute::default();
    if pass.manual_backward {
        extra.backward = Some(Arc::new(move |a: &[Tensor], g: &Tensor| bwd.backward(a, g)));
    }
    Ok(recompute("attention", &[q, k, v], Arc::new(body), extra)?.0)
}

#[derive(Clone)]
struct AttentionCore(LayerPass);

impl AttentionCore {
    /// (batch, heads, seq, hd) in f32.
    fn heads_first(t: &Tensor) -> Result<Tensor> {
        Ok(t.to_dtype(DType::F32)?.transpose(1, 2)?.contiguous()?)
    }

    /// q and k with rotary embeddings, v, all heads-first in f32; q stacked as (batch, kv heads,
    /// g · seq, hd): the g query heads that share a key/value head (head h uses kv head h / g, as
    /// transformers' repeat_kv) lie along the query axis, so k and v are never copied.
    fn qkv(&self, a: &[Tensor]) -> Result<(Tensor, Tensor, Tensor)> {
        let p = &self.0;
        let (b, seq, _, hd) = a[0].dims4()?;
        let nkv = a[1].dim(2)?;
        let q = candle_nn::rotary_emb::rope_slow(&Self::heads_first(&a[0])?, &p.cos, &p.sin)?;
        let k = candle_nn::rotary_emb::rope_slow(&Self::heads_first(&a[1])?, &p.cos, &p.sin)?;
        let g = a[0].dim(2)? / nkv;
        Ok((q.reshape((b, nkv, g * seq, hd))?, k, Self::heads_first(&a[2])?))
    }

    /// Masked scores (batch, kv heads, g · seq, seq), and tanh of the scaled scores when they are
    /// soft-capped (the cap's slope is 1 − tanh²).
    fn scores(&self, q: &Tensor, k: &Tensor) -> Result<(Tensor, Option<Tensor>)> {
        let p = &self.0;
        let (b, nkv, gs, seq) = (q.dim(0)?, q.dim(1)?, q.dim(2)?, k.dim(2)?);
        let mut scores = (q.mm(&k.t()?)? * p.scaling)?;
        let mut tanh = None;
        if let Some(cap) = p.softcap {
            let t = (scores / cap)?.tanh()?;
            scores = (&t * cap)?;
            tanh = Some(t);
        }
        let masked = scores.reshape((b, nkv, gs / seq, seq, seq))?.broadcast_add(&p.mask.unsqueeze(1)?)?;
        Ok((masked.reshape((b, nkv, gs, seq))?, tanh))
    }

    /// (batch, kv heads, g · seq, hd) back to (batch, seq, heads · hd) in `dtype`.
    fn merge_heads(x: &Tensor, nh: usize, dtype: DType) -> Result<Tensor> {
        let (b, _, gs, hd) = x.dims4()?;
        let seq = gs * x.dim(1)? / nh;
        Ok(x.reshape((b, nh, seq, hd))?.transpose(1, 2)?.reshape((b, seq, nh * hd))?.to_dtype(dtype)?)
    }

    fn forward(&self, a: &[Tensor]) -> Result<Tensor> {
        let (q, k, v) = self.qkv(a)?;
        let (scores, _) = self.scores(&q, &k)?;
        let probs = if self.0.manual_backward {
            // The forward pass keeps no graph, so candle's fused softmax (no backward) serves.
            candle_nn::ops::softmax_last_dim(&scores.contiguous()?)?
        } else {
            candle_nn::ops::softmax(&scores, D::Minus1)?
        };
        Self::merge_heads(&probs.mm(&v)?, a[0].dim(2)?, a[0].dtype())
    }

    /// The gradients of q, k and v (as given: (batch, seq, heads, hd), before the rotary
    /// embeddings, in their dtype) from the output's gradient, with the probabilities
    /// recomputed once; FlashAttention's backward, written in whole-matrix ops.
    fn backward(&self, a: &[Tensor], grad: &Tensor) -> Result<Vec<Option<Tensor>>> {
        let p = &self.0;
        let (b, seq, nh, hd) = a[0].dims4()?;
        let nkv = a[1].dim(2)?;
        let (q, k, v) = self.qkv(a)?;
        let (scores, tanh) = self.scores(&q, &k)?;
        let probs = candle_nn::ops::softmax_last_dim(&scores.contiguous()?)?;
        drop(scores);
        // The output's gradient in the layout of probs · v.
        let d_out = Self::heads_first(&grad.reshape((b, seq, nh, hd))?)?.reshape((b, nkv, nh / nkv * seq, hd))?;
        let d_v = probs.t()?.mm(&d_out)?;
        let d_probs = d_out.mm(&v.t()?)?;
        // Softmax: dS = P ⊙ (dP − Σ_j dP ⊙ P).
        let row = (&d_probs * &probs)?.sum_keepdim(D::Minus1)?;
        let mut d_scores = (d_probs.broadcast_sub(&row)? * &probs)?;
        drop(probs);
        if let Some(t) = tanh {
            d_scores = (d_scores * t.sqr()?.affine(-1.0, 1.0)?)?;
        }
        let d_scores = (d_scores * p.scaling)?;
        let d_q = d_scores.mm(&k)?.reshape((b, nh, seq, hd))?;
        let d_k = d_scores.t()?.mm(&q)?;
        // RoPE is a rotation: its transpose is the rotation by minus the angle.
        let minus_sin = p.sin.neg()?;
        let unrope = |x: &Tensor| candle_nn::rotary_emb::rope_slow(x, &p.cos, &minus_sin);
        let back = |x: Tensor, dtype: DType| -> Result<Tensor> { Ok(x.transpose(1, 2)?.to_dtype(dtype)?) };
        Ok(vec![
            Some(back(unrope(&d_q)?, a[0].dtype())?),
            Some(back(unrope(&d_k)?, a[1].dtype())?),
            Some(back(d_v, a[2].dtype())?),
        ])
    }
}
