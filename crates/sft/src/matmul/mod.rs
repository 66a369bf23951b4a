//! Every matrix product of the model, its loss and their backward passes goes through here, so
//! that the `mkl` feature swaps candle's CPU kernel (the `gemm` crate) for oneMKL's in one place:
//! `cblas_sgemm` for f32 and `cblas_gemm_bf16bf16f32` (AMX tiles where the CPU has them) for bf16.
//! Without the feature, on CUDA, and for other dtypes these are candle's own products, unchanged.
//!
//! With the feature, an f32 operand may also meet a bf16 one (`--dtype bf16-mixed`: frozen
//! weights stored in bf16, f32 activations): the f32 side is rounded to bf16 once for the
//! product, which then runs as bf16 × bf16 → f32, as PyTorch's CPU autocast does.
//!
//! The dispatch is here; oneMKL's side in `mkl`, the frozen-weight and bf16 linear ops in
//! `linear`, the [`Weight`] forms a frozen matrix takes in `weight`, and our own Q8_0 kernels for
//! decoding in `q8`.

mod linear;
#[cfg(feature = "mkl")]
mod mkl;
mod q8;
mod weight;

pub(crate) use linear::{bf16_trained_linear, frozen_linear};
pub use weight::Weight;

use candle_core::{CpuStorage, DType, Layout, Result, Tensor};

/// Matrix products that take oneMKL's kernel on the CPU when the `mkl` feature is on.
pub trait Mm {
    /// `self · rhs` with equal batch dimensions, as candle's `matmul`.
    fn mm(&self, rhs: &Tensor) -> Result<Tensor>;
    /// `self · rhs` with broadcast batch dimensions, as candle's `broadcast_matmul`.
    fn broadcast_mm(&self, rhs: &Tensor) -> Result<Tensor>;
}

impl Mm for Tensor {
    fn mm(&self, rhs: &Tensor) -> Result<Tensor> {
        #[cfg(feature = "mkl")]
        if mkl::applies(self, rhs) {
            return mkl::matmul(self, rhs);
        }
        self.matmul(rhs)
    }

    fn broadcast_mm(&self, rhs: &Tensor) -> Result<Tensor> {
        #[cfg(feature = "mkl")]
        if mkl::applies(self, rhs) {
            return mkl::broadcast_matmul(self, rhs);
        }
        self.broadcast_matmul(rhs)
    }
}

/// A product on CPU storage, with the contract of candle's `BackendStorage::matmul`
/// (`(batch, m, n, k)` and the two operands' layouts), for custom ops' forward passes.
pub fn cpu_matmul(
    lhs: &CpuStorage,
    rhs: &CpuStorage,
    bmnk: (usize, usize, usize, usize),
    lhs_l: &Layout,
    rhs_l: &Layout,
) -> Result<CpuStorage> {
    #[cfg(feature = "mkl")]
    if let Some(out) = mkl::cpu_matmul(lhs, rhs, bmnk, lhs_l, rhs_l) {
        return Ok(out);
    }
    candle_core::backend::BackendStorage::matmul(lhs, rhs, bmnk, lhs_l, rhs_l)
}

/// Whether this build multiplies bf16 weights with f32 activations directly (`bf16-mixed`).
pub fn mixed_products() -> bool {
    cfg!(feature = "mkl")
}

/// A frozen weight ready to multiply activations of `dtype`: as it is where the pair multiplies
/// directly (bf16 with f32 on the CPU under `mkl`: converting the 262,144 × 640 output matrix
/// for every product would cost more than the product), else converted to `dtype`.
pub fn weight_for(w: &Tensor, dtype: DType) -> Result<Tensor> {
    if mixed_products() && w.device().is_cpu() && w.dtype() == DType::BF16 && dtype == DType::F32 {
        return Ok(w.clone());
    }
    w.to_dtype(dtype)
}

/// `t` rounded to bf16 (to nearest, ties to even, as `to_dtype`); an f32 tensor on the CPU of an
/// `mkl` build is rounded row by row over the threads (candle's conversion is one thread).
pub fn round_bf16(t: &Tensor) -> Result<Tensor> {
    #[cfg(feature = "mkl")]
    if t.device().is_cpu() && t.dtype() == DType::F32 {
        return mkl::round_bf16(t);
    }
    t.to_dtype(DType::BF16)
}

/// `a · b` (2-D) with f32 output, for bf16 operands whose product should not be rounded to bf16
/// (a trained weight's gradient): oneMKL's bf16 × bf16 → f32 on the CPU of an `mkl` build,
/// else the product of the operands widened to f32.
pub fn mm_f32_out(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    #[cfg(feature = "mkl")]
    if a.device().is_cpu() && a.dtype() == DType::BF16 && b.dtype() == DType::BF16 {
        return mkl::bf16_product_f32(a, b);
    }
    a.to_dtype(DType::F32)?.mm(&b.to_dtype(DType::F32)?)
}

/// `acc += dᵀ · rows` for `d` (m, n) and `rows` (m, k) f32 on the CPU, `acc` holding n × k:
/// the gradient of a matrix summed over chunks of rows in one buffer. With `bf16`, `d` and
/// `rows` are rounded for the product, which accumulates in f32 (an `mkl` build's AMX). With
/// the `mkl` feature the sum runs in place; without it each chunk's product is added.
pub fn accumulate_tn(acc: &mut [f32], d: &Tensor, rows: &Tensor, bf16: bool) -> Result<()> {
    let ((m, n), (m2, k)) = (d.dims2()?, rows.dims2()?);
    if m != m2 || acc.len() != n * k {
        candle_core::bail!(
            "accumulate_tn: d {:?}, rows {:?} and {} accumulated values",
            d.shape(),
            rows.shape(),
            acc.len()
        );
    }
    #[cfg(feature = "mkl")]
    if d.device().is_cpu() {
        return mkl::accumulate_tn(acc, d, rows, (m, n, k), bf16);
    }
    let (d, rows) = if bf16 {
        (d.to_dtype(DType::BF16)?.to_dtype(DType::F32)?, rows.to_dtype(DType::BF16)?.to_dtype(DType::F32)?)
    } else {
        (d.clone(), rows.clone())
    };
    let p = d.t()?.matmul(&rows)?.flatten_all()?.to_vec1::<f32>()?;
    acc.iter_mut().zip(p).for_each(|(a, p)| *a += p);
    Ok(())
}

/// A frozen (out, in) weight packed once in oneMKL's internal format for decoding's products,
/// which have few rows: a plain product repacks the weight on every call, and that was half of a
/// bf16-mixed decoding step. Only bf16 weights on the CPU of an `mkl` build are packed
/// ([`Packed::new`] says `None` otherwise). Each output row is the same bits whatever the number
/// of rows, so a sequence decodes as it would alone.
pub struct Packed {
    #[cfg(feature = "mkl")]
    b: thrive_mkl::PackedBf16,
    /// Nothing is packed without MKL.
    #[cfg(not(feature = "mkl"))]
    never: std::convert::Infallible,
}

impl std::fmt::Debug for Packed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        #[cfg(feature = "mkl")]
        return write!(f, "{:?}", self.b);
        #[cfg(not(feature = "mkl"))]
        {
            let _ = f;
            match self.never {}
        }
    }
}

impl Packed {
    /// Packs `w` (out, in) where this build multiplies it through a packed matrix.
    pub fn new(w: &Tensor) -> Result<Option<Packed>> {
        #[cfg(feature = "mkl")]
        return mkl::pack(w);
        #[cfg(not(feature = "mkl"))]
        {
            let _ = w;
            Ok(None)
        }
    }

    /// `x Wᵀ` for `x` (…, in) in f32 (rounded to bf16 for the product, f32 out, as
    /// `--dtype bf16-mixed`) or bf16 (bf16 out), with no gradient.
    pub fn linear(&self, x: &Tensor) -> Result<Tensor> {
        #[cfg(feature = "mkl")]
        return mkl::packed_linear(&self.b, x);
        #[cfg(not(feature = "mkl"))]
        {
            let _ = x;
            match self.never {}
        }
    }
}

/// How many products oneMKL has computed in this process (0 without the `mkl` feature).
pub fn mkl_products() -> u64 {
    #[cfg(feature = "mkl")]
    return thrive_mkl::products();
    #[cfg(not(feature = "mkl"))]
    0
}

/// Which kernel does the CPU's matrix products in this build, for `thrive --version`.
pub fn cpu_backend() -> String {
    #[cfg(feature = "mkl")]
    {
        // "Intel(R) oneAPI Math Kernel Library Version 2026.2-Product Build …": keep the number.
        let full = thrive_mkl::version();
        let number = full.split("Version ").nth(1).and_then(|v| v.split(['-', ' ']).next()).unwrap_or("?");
        format!("oneMKL {number} (f32, bf16)")
    }
    #[cfg(not(feature = "mkl"))]
    "candle gemm (pure Rust)".to_string()
}
