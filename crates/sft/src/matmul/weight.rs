//! [`Weight`]: a frozen weight matrix in whichever form its products read it (dense, quantized,
//! or packed for decoding).

use super::linear::frozen_linear;
use super::q8::Q8Matrix;
use super::Packed;
use crate::{Error, Result};
use candle_core::quantized::QTensor;
use candle_core::Tensor;
use std::sync::Arc;

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
