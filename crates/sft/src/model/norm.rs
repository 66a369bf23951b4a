//! Gemma's (1 + w) RMSNorm, recomputed in the backward pass, with a hand-written backward for
//! candle's fused kernel.

use crate::ops::{recompute, Recompute};
use crate::Result;
use candle_core::{DType, Tensor, Var, D};
use std::sync::Arc;
use thrive_core::Rng;

/// An RMSNorm with its stored weight w, scaling by 1 + w.
#[derive(Debug, Clone)]
pub(super) struct RmsNorm {
    /// The stored weight w.
    pub(super) weight: Tensor,
    /// 1 + w, precomputed while w is frozen.
    pub(super) scale: Tensor,
    /// w itself (f32) when it is trained (full fine-tuning).
    pub(super) var: Option<Var>,
    pub(super) eps: f64,
}

impl RmsNorm {
    /// (1 + w) · x / rms(x) over the last axis, in f32, back in x's dtype. Recomputed in the
    /// backward pass rather than keeping its five intermediate tensors; with `manual` (GPUs, see
    /// [`Gemma::manual_backward`]) candle's fused kernel computes it and [`NormCore::backward`]
    /// gives the gradients.
    pub(super) fn forward(&self, x: &Tensor, manual: bool) -> Result<Tensor> {
        let core = NormCore { eps: self.eps, scale: self.var.is_none().then(|| self.scale.clone()), manual };
        let (fwd, bwd) = (core.clone(), core);
        let body = move |a: &[Tensor], _: Option<&mut Rng>| fwd.forward(a);
        let mut extra = Recompute::default();
        if manual {
            extra.backward = Some(Arc::new(move |a: &[Tensor], g: &Tensor| bwd.backward(a, g)));
        }
        let inputs: Vec<&Tensor> = match &self.var {
            Some(v) => vec![x, v.as_tensor()],
            None => vec![x],
        };
        Ok(recompute("rms-norm", &inputs, Arc::new(body), extra)?.0)
    }

    pub(super) fn make_trainable(&mut self) -> Result<Var> {
        let var = Var::from_tensor(&self.weight.to_dtype(DType::F32)?)?;
        self.weight = var.as_tensor().clone();
        self.var = Some(var.clone());
        Ok(var)
    }
}

/// The norm as a function of x (and w, when it is trained): inputs `[x]` or `[x, w]`.
#[derive(Clone)]
struct NormCore {
    eps: f64,
    /// 1 + w while w is frozen; `None` when w is the second input.
    scale: Option<Tensor>,
    manual: bool,
}

impl NormCore {
    fn scale(&self, a: &[Tensor]) -> Result<Tensor> {
        Ok(match &self.scale {
            Some(s) => s.clone(),
            None => (&a[1] + 1.0)?,
        })
    }

    fn forward(&self, a: &[Tensor]) -> Result<Tensor> {
        let (x, scale) = (&a[0], self.scale(a)?);
        let dtype = x.dtype();
        let x = x.to_dtype(DType::F32)?;
        if self.manual {
            // The fused kernel wants contiguous rows (a batch's last positions are not).
            return Ok(candle_nn::ops::rms_norm(&x.contiguous()?, &scale, self.eps as f32)?.to_dtype(dtype)?);
        }
        let ms = x.sqr()?.mean_keepdim(D::Minus1)?;
        let normed = x.broadcast_div(&(ms + self.eps)?.sqrt()?)?;
        Ok(normed.broadcast_mul(&scale)?.to_dtype(dtype)?)
    }

    /// With r = 1 / rms(x) and s = 1 + w: dx = r · (s ⊙ g − x · r² · mean(x ⊙ s ⊙ g)), and
    /// dw = Σ over rows of g ⊙ x · r.
    fn backward(&self, a: &[Tensor], grad: &Tensor) -> Result<Vec<Option<Tensor>>> {
        let (x, scale) = (a[0].to_dtype(DType::F32)?, self.scale(a)?);
        let g = grad.to_dtype(DType::F32)?;
        let r = (x.sqr()?.mean_keepdim(D::Minus1)? + self.eps)?.sqrt()?.recip()?;
        let gs = g.broadcast_mul(&scale)?;
        let dot = (&x * &gs)?.mean_keepdim(D::Minus1)?;
        let dx = (gs - x.broadcast_mul(&(dot * r.sqr()?)?)?)?.broadcast_mul(&r)?.to_dtype(a[0].dtype())?;
        let dw = match a.get(1) {
            Some(w) => {
                let hidden = x.dim(D::Minus1)?;
                let xr = x.broadcast_mul(&r)?;
                Some((g * xr)?.reshape(((), hidden))?.sum(0)?.to_dtype(w.dtype())?)
            }
            None => None,
        };
        Ok(std::iter::once(Some(dx)).chain(a.get(1).map(|_| dw)).collect())
    }
}
