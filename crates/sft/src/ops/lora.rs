//! [`lora_linear`]: a LoRA-adapted linear layer with a frozen base weight as one op.

use super::{cpu_storage, cuda_storage};
use crate::matmul::Mm;
use candle_core::{CpuStorage, CudaStorage, CustomOp3, Layout, Shape, Tensor, Var};

type CResult<T> = candle_core::Result<T>;

/// `x Wᵀ + scale · (x Aᵀ) Bᵀ` with W frozen and A, B trained, as one op that keeps only its
/// input and output (candle's ops would keep three output-sized tensors) and whose backward
/// computes the input's gradient and A's and B's, never W's. A and B (f32 masters) are used in
/// x's dtype; their gradients come back in f32.
pub fn lora_linear(x: &Tensor, w: &Tensor, a: &Var, b: &Var, scale: f64) -> crate::Result<Tensor> {
    // A and B are variables, so the op is always part of the graph.
    let (a_t, b_t) = (a.as_tensor(), b.as_tensor());
    let x = x.contiguous()?;
    let inputs = [x.detach(), a_t.detach(), b_t.detach()];
    let op = LoraOp { w: w.detach().contiguous()?, scale, inputs };
    Ok(x.apply_op3(a_t, b_t, op)?)
}

struct LoraOp {
    w: Tensor,
    scale: f64,
    /// x, A and B detached (sharing the arguments' storage), for the forward pass.
    inputs: [Tensor; 3],
}

/// `x Wᵀ + scale · (x Aᵀ) Bᵀ`, A and B in x's dtype.
fn lora_forward(x: &Tensor, w: &Tensor, a: &Tensor, b: &Tensor, scale: f64) -> CResult<Tensor> {
    let dt = x.dtype();
    let y = x.broadcast_mm(&w.t()?)?;
    let update = x.broadcast_mm(&a.to_dtype(dt)?.t()?)?.broadcast_mm(&(b.to_dtype(dt)? * scale)?.t()?)?;
    y + update
}

impl CustomOp3 for LoraOp {
    fn name(&self) -> &'static str {
        "lora-linear"
    }

    fn cpu_fwd(
        &self,
        _: &CpuStorage,
        _: &Layout,
        _: &CpuStorage,
        _: &Layout,
        _: &CpuStorage,
        _: &Layout,
    ) -> CResult<(CpuStorage, Shape)> {
        let [x, a, b] = &self.inputs;
        cpu_storage(lora_forward(x, &self.w, a, b, self.scale)?, "lora")
    }

    fn cuda_fwd(
        &self,
        _: &CudaStorage,
        _: &Layout,
        _: &CudaStorage,
        _: &Layout,
        _: &CudaStorage,
        _: &Layout,
    ) -> CResult<(CudaStorage, Shape)> {
        let [x, a, b] = &self.inputs;
        cuda_storage(lora_forward(x, &self.w, a, b, self.scale)?, "lora")
    }

    fn bwd(
        &self,
        x: &Tensor,
        a: &Tensor,
        b: &Tensor,
        _res: &Tensor,
        g: &Tensor,
    ) -> CResult<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        // The arguments are part of the forward graph: gradients computed from them undetached
        // would keep that graph alive as long as they live.
        let (x, a, b, g) = (&x.detach(), &a.detach(), &b.detach(), &g.detach());
        let dt = x.dtype();
        let (a16, b16) = (a.to_dtype(dt)?, b.to_dtype(dt)?);
        let in_dim = x.dim(candle_core::D::Minus1)?;
        let out_dim = g.dim(candle_core::D::Minus1)?;
        let x2 = x.reshape(((), in_dim))?;
        let g2 = g.to_dtype(dt)?.reshape(((), out_dim))?;
        let xa = x2.mm(&a16.t()?)?; // (rows, r)
        let gb = g2.mm(&b16)?; // (rows, r)
        let dx = (g2.mm(&self.w)? + (gb.mm(&a16)? * self.scale)?)?.reshape(x.shape())?;
        let da = (gb.t()?.mm(&x2)? * self.scale)?.to_dtype(a.dtype())?;
        let db = (g2.t()?.mm(&xa)? * self.scale)?.to_dtype(b.dtype())?;
        Ok((Some(dx), Some(da), Some(db)))
    }
}
