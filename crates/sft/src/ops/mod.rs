//! Custom autograd ops that decide what the backward pass keeps and computes:
//!
//! - [`recompute`]: a differentiable function of one to three tensors whose intermediate values
//!   are not kept. The forward pass runs it on detached inputs (nothing is recorded), the backward
//!   pass runs it again on fresh variables and backpropagates through that copy. Attention, RMS
//!   norms, the loss (chunk by chunk over the vocabulary) and, with gradient checkpointing, whole
//!   decoder layers go through it. Trainable tensors used inside that are not among the inputs
//!   (a layer's LoRA matrices) send their gradients to a [`GradSink`].
//! - [`geglu_cpu`]: gelu(gate) · up in one pass forward and one backward (f32 on the CPU).
//! - [`lora_linear`]: a LoRA-adapted linear layer as one op that never computes the frozen
//!   weight's gradient.
//!
//! The products of frozen weights are in [`crate::matmul`], the fused loss kernels in the loss.

mod geglu;
mod lora;
mod recompute;

pub use geglu::geglu_cpu;
pub use lora::lora_linear;
pub use recompute::{recompute, take_backward_seconds, GradSink, Recompute};

use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, CudaStorage, Layout, Shape, Storage, Tensor};

type CResult<T> = candle_core::Result<T>;

fn to_candle(e: crate::Error) -> candle_core::Error {
    match e {
        crate::Error::Candle(c) => c,
        other => candle_core::Error::Msg(other.to_string()),
    }
}

/// An op's output as a storage of its own (a copy: candle gives no way to move a storage out of
/// a tensor), contiguous from offset 0 so that the copy is exactly the tensor.
fn own_storage(out: Tensor) -> CResult<Tensor> {
    let out = out.contiguous()?;
    Ok(if out.layout().start_offset() != 0 { out.force_contiguous()? } else { out })
}

fn cpu_storage(out: Tensor, name: &str) -> CResult<(CpuStorage, Shape)> {
    let out = own_storage(out)?;
    let (s, l) = out.storage_and_layout();
    match &*s {
        Storage::Cpu(c) => Ok((c.try_clone(l)?, out.shape().clone())),
        _ => candle_core::bail!("{name}: output not on the CPU"),
    }
}

fn cuda_storage(out: Tensor, name: &str) -> CResult<(CudaStorage, Shape)> {
    let out = own_storage(out)?;
    let (s, l) = out.storage_and_layout();
    match &*s {
        Storage::Cuda(c) => Ok((c.try_clone(l)?, out.shape().clone())),
        _ => candle_core::bail!("{name}: output not on the GPU"),
    }
}

/// A contiguous f32 CPU storage as a slice; `op` names the op in the error.
pub(crate) fn f32_slice<'a>(s: &'a CpuStorage, l: &Layout, op: &str) -> CResult<&'a [f32]> {
    match s {
        CpuStorage::F32(v) if l.is_contiguous() => Ok(&v[l.start_offset()..l.start_offset() + l.shape().elem_count()]),
        _ => candle_core::bail!("{op}: wants contiguous f32 input"),
    }
}
