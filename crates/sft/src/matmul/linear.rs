//! `x Wᵀ` as custom ops whose backward passes compute only what training needs.
//!
//! - [`frozen_linear`]: a weight that is not trained. candle's own matmul backward always
//!   computes and stores the gradient of both operands, so a frozen weight (the tied 262,144 × 640
//!   embedding included) would cost a weight-sized buffer and a full matmul in every backward
//!   pass. This op's backward gives only the input's gradient.
//! - [`bf16_trained_linear`]: a trained f32 weight whose products run in bf16 (`bf16-mixed`).

use super::Mm;
use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, CudaStorage, CustomOp1, CustomOp2, Layout, Shape, Storage, Tensor};

type CResult<T> = candle_core::Result<T>;

/// `x Wᵀ` with `w` (out, in) frozen: no gradient for `w`, and none of its work in the backward.
pub fn frozen_linear(x: &Tensor, w: &Tensor) -> crate::Result<Tensor> {
    if !x.track_op() {
        // Inference (evaluation, sampling): nothing to keep anyway.
        return Ok(x.broadcast_mm(&w.t()?)?);
    }
    let w = w.detach().contiguous()?;
    Ok(x.contiguous()?.apply_op1(FrozenLinear { w })?)
}

struct FrozenLinear {
    /// (out, in), contiguous.
    w: Tensor,
}

impl FrozenLinear {
    /// `mul(x, w, bmnk, x's layout, w's layout)` is the backend's storage-level product.
    fn fwd<S: BackendStorage>(
        &self,
        x: &S,
        l: &Layout,
        pick: impl Fn(&Storage) -> Option<&S>,
        mul: impl Fn(&S, &S, (usize, usize, usize, usize), &Layout, &Layout) -> CResult<S>,
    ) -> CResult<(S, Shape)> {
        let (out_dim, in_dim) = self.w.dims2()?;
        let dims = l.shape().dims();
        if !l.is_contiguous() || dims.last() != Some(&in_dim) {
            candle_core::bail!("frozen_linear: input {:?} is not a contiguous (…, {in_dim}) tensor", l.shape());
        }
        let m = l.shape().elem_count() / in_dim;
        let (guard, wl) = self.w.storage_and_layout();
        let w =
            pick(&guard).ok_or_else(|| candle_core::Error::Msg("frozen_linear: weight on another device".into()))?;
        let lhs = Layout::contiguous_with_offset((1, m, in_dim), l.start_offset());
        // Wᵀ as a (1, in, out) view of the (out, in) storage, as `w.t()` broadcast would be.
        let rhs = Layout::new(Shape::from((1, in_dim, out_dim)), vec![0, 1, in_dim], wl.start_offset());
        let y = mul(x, w, (1, m, out_dim, in_dim), &lhs, &rhs)?;
        let mut out = dims.to_vec();
        *out.last_mut().expect("checked above") = out_dim;
        Ok((y, Shape::from(out)))
    }
}

impl CustomOp1 for FrozenLinear {
    fn name(&self) -> &'static str {
        "frozen-linear"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> CResult<(CpuStorage, Shape)> {
        self.fwd(
            s,
            l,
            |st| match st {
                Storage::Cpu(c) => Some(c),
                _ => None,
            },
            super::cpu_matmul,
        )
    }

    fn cuda_fwd(&self, s: &CudaStorage, l: &Layout) -> CResult<(CudaStorage, Shape)> {
        self.fwd(
            s,
            l,
            |st| match st {
                Storage::Cuda(c) => Some(c),
                _ => None,
            },
            CudaStorage::matmul,
        )
    }

    fn bwd(&self, _x: &Tensor, _res: &Tensor, grad: &Tensor) -> CResult<Option<Tensor>> {
        Ok(Some(grad.broadcast_mm(&self.w)?))
    }
}

/// `x Wᵀ` for a trained f32 weight `w` (out, in) whose products run in bf16, as PyTorch's CPU
/// autocast runs them (`--dtype bf16-mixed --full`): W is rounded once per call and x and the
/// output's gradient once per product, and every product (the forward, x's gradient, W's
/// gradient) accumulates in f32. W's gradient comes back in f32, unrounded.
pub fn bf16_trained_linear(x: &Tensor, w: &Tensor) -> crate::Result<Tensor> {
    let w16 = super::round_bf16(&w.detach())?;
    if !x.track_op() && !w.track_op() {
        return Ok(x.broadcast_mm(&w16.t()?)?);
    }
    Ok(x.contiguous()?.apply_op2(w, Bf16TrainedLinear { w16 })?)
}

struct Bf16TrainedLinear {
    /// The weight rounded to bf16, (out, in), contiguous.
    w16: Tensor,
}

impl CustomOp2 for Bf16TrainedLinear {
    fn name(&self) -> &'static str {
        "bf16-trained-linear"
    }

    fn cpu_fwd(&self, x: &CpuStorage, l: &Layout, _w: &CpuStorage, _wl: &Layout) -> CResult<(CpuStorage, Shape)> {
        FrozenLinear { w: self.w16.clone() }.cpu_fwd(x, l)
    }

    fn bwd(&self, x: &Tensor, w: &Tensor, _res: &Tensor, grad: &Tensor) -> CResult<(Option<Tensor>, Option<Tensor>)> {
        let (out_dim, in_dim) = self.w16.dims2()?;
        let m = grad.elem_count() / out_dim.max(1);
        let g16 = super::round_bf16(&grad.reshape((m, out_dim))?)?;
        let dx = if x.track_op() { Some(super::mm_f32_out(&g16, &self.w16)?.reshape(x.shape())?) } else { None };
        let dw = if w.track_op() {
            let x16 = super::round_bf16(&x.reshape((m, in_dim))?)?;
            Some(super::mm_f32_out(&g16.t()?, &x16)?)
        } else {
            None
        };
        Ok((dx, dw))
    }
}
