//! oneMKL's products for the `mkl` feature: f32 `cblas_sgemm`, bf16 × bf16 → f32 (AMX tiles
//! where the CPU has them) for bf16 and mixed bf16/f32 pairs, bf16 rounding over the threads, and
//! weights packed once for decoding.

use super::Mm;
use candle_core::{CpuStorage, CustomOp1, CustomOp2, DType, Layout, Result, Shape, Tensor};
use thrive_mkl::{Dims, MatRef};

/// f32 and bf16 operands in any pairing (a mixed pair gives f32).
pub(super) fn applies(a: &Tensor, b: &Tensor) -> bool {
    let ok = |t: &Tensor| matches!(t.dtype(), DType::F32 | DType::BF16);
    a.device().is_cpu() && ok(a) && ok(b)
}

pub(super) fn matmul(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    let (ad, bd) = (a.dims(), b.dims());
    let r = ad.len();
    // Shapes candle would refuse go to candle, for its error message.
    if r < 2 || bd.len() != r || ad[..r - 2] != bd[..r - 2] || ad[r - 1] != bd[r - 2] {
        return a.matmul(b);
    }
    // Batch dimensions that do not collapse to one stride (a broadcast in the middle, a
    // transposed batch) are copied once, as candle's own kernel needs too.
    let dense = |t: &Tensor| match batch_stride(t.dims(), t.stride()) {
        Some(_) => Ok(t.clone()),
        None => t.contiguous(),
    };
    dense(a)?.apply_op2(&dense(b)?, MklMatmul)
}

pub(super) fn broadcast_matmul(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    let (ad, bd) = (a.dims(), b.dims());
    if ad.len() < 2 || bd.len() < 2 {
        return a.broadcast_matmul(b);
    }
    if bd.len() == 2 && ad.len() > 2 {
        // A shared matrix on the right (a linear layer's weight): fold the batch into rows, so
        // that one product runs and the weight's gradient is not summed from per-batch copies.
        let k = ad[ad.len() - 1];
        let rows = a.elem_count() / k.max(1);
        let y = a.reshape((rows, k))?.mm(b)?;
        let mut out = ad.to_vec();
        *out.last_mut().expect("rank > 2") = bd[1];
        return y.reshape(out);
    }
    let (ab, bb) = (&ad[..ad.len() - 2], &bd[..bd.len() - 2]);
    let batch = Shape::from(ab).broadcast_shape_binary_op(&Shape::from(bb), "broadcast_mm")?;
    let a_shape = [batch.dims(), &ad[ad.len() - 2..]].concat();
    let b_shape = [batch.dims(), &bd[bd.len() - 2..]].concat();
    a.broadcast_as(a_shape)?.mm(&b.broadcast_as(b_shape)?)
}

/// `a · b` with equal batch dimensions; its backward pass uses the same kernel and computes
/// only the gradients that something needs.
struct MklMatmul;

impl CustomOp2 for MklMatmul {
    fn name(&self) -> &'static str {
        "mkl-matmul"
    }

    fn cpu_fwd(&self, a: &CpuStorage, al: &Layout, b: &CpuStorage, bl: &Layout) -> Result<(CpuStorage, Shape)> {
        let (ad, bd) = (al.dims(), bl.dims());
        let r = ad.len();
        let (m, k, n) = (ad[r - 2], ad[r - 1], bd[r - 1]);
        let batch: usize = ad[..r - 2].iter().product();
        let out = super::cpu_matmul(a, b, (batch, m, n, k), al, bl)?;
        Ok((out, Shape::from([&ad[..r - 2], &[m, n]].concat())))
    }

    fn bwd(&self, a: &Tensor, b: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<(Option<Tensor>, Option<Tensor>)> {
        // A mixed pair's gradients come back in their operands' dtypes.
        let da = if a.track_op() { Some(grad.mm(&b.t()?)?.to_dtype(a.dtype())?) } else { None };
        let db = if b.track_op() { Some(a.t()?.mm(grad)?.to_dtype(b.dtype())?) } else { None };
        Ok((da, db))
    }
}

/// oneMKL's product for f32 or bf16 operands whose layouts BLAS can read; `None` sends the
/// product to candle's kernel. A mixed pair rounds its f32 side to bf16 and gives f32.
pub(super) fn cpu_matmul(
    a: &CpuStorage,
    b: &CpuStorage,
    (batch, m, n, k): (usize, usize, usize, usize),
    al: &Layout,
    bl: &Layout,
) -> Option<CpuStorage> {
    let d = Dims { batch, m, n, k };
    let out = match (a, b) {
        (CpuStorage::F32(a), CpuStorage::F32(b)) => {
            let (a, b) = (view(a, al, batch, m, k)?, view(b, bl, batch, k, n)?);
            output(batch * m * n, |c| thrive_mkl::gemm_f32(d, a, b, c)).map(CpuStorage::F32)
        }
        (CpuStorage::BF16(a), CpuStorage::BF16(b)) => {
            let (a, b) = (view(a, al, batch, m, k)?, view(b, bl, batch, k, n)?);
            output(batch * m * n, |c| thrive_mkl::gemm_bf16_to_bf16(d, a, b, c)).map(CpuStorage::BF16)
        }
        (CpuStorage::F32(a), CpuStorage::BF16(b)) => {
            let a16 = rounded(view(a, al, batch, m, k)?, batch, m, k);
            let (a, b) = (dense(&a16, m, k), view(b, bl, batch, k, n)?);
            output(batch * m * n, |c| thrive_mkl::gemm_bf16(d, a, b, c)).map(CpuStorage::F32)
        }
        (CpuStorage::BF16(a), CpuStorage::F32(b)) => {
            let b16 = rounded(view(b, bl, batch, k, n)?, batch, k, n);
            let (a, b) = (view(a, al, batch, m, k)?, dense(&b16, k, n));
            output(batch * m * n, |c| thrive_mkl::gemm_bf16(d, a, b, c)).map(CpuStorage::F32)
        }
        _ => return None,
    };
    out.map_err(|e| tracing::debug!("{e}; candle's kernel does this product")).ok()
}

pub(super) fn round_bf16(t: &Tensor) -> Result<Tensor> {
    let t = t.contiguous()?;
    let n = t.elem_count();
    let (guard, l) = t.storage_and_layout();
    let candle_core::Storage::Cpu(CpuStorage::F32(data)) = &*guard else {
        candle_core::bail!("round_bf16: not f32 CPU storage")
    };
    let cols = t.dims().last().copied().unwrap_or(1).max(1);
    let v = MatRef { data, offset: l.start_offset(), batch_stride: 0, row_stride: cols, col_stride: 1 };
    let out = rounded(v, 1, n / cols, cols);
    drop(guard);
    Tensor::from_vec(out, t.shape(), t.device())
}

pub(super) fn bf16_product_f32(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    a.apply_op2_no_bwd(b, &Bf16ProductF32)
}

/// (m, k) · (k, n) of bf16 operands in any BLAS-readable layout, f32 out.
struct Bf16ProductF32;

impl CustomOp2 for Bf16ProductF32 {
    fn name(&self) -> &'static str {
        "mkl-bf16-product-f32"
    }

    fn cpu_fwd(&self, a: &CpuStorage, al: &Layout, b: &CpuStorage, bl: &Layout) -> Result<(CpuStorage, Shape)> {
        let ((m, k), (k2, n)) = (al.shape().dims2()?, bl.shape().dims2()?);
        if k != k2 {
            candle_core::bail!("bf16 product: {:?} · {:?}", al.shape(), bl.shape());
        }
        let (CpuStorage::BF16(a), CpuStorage::BF16(b)) = (a, b) else {
            candle_core::bail!("bf16 product: bf16 operands expected")
        };
        let layout = || candle_core::Error::Msg("bf16 product: a layout BLAS cannot read".into());
        let (a, b) = (view(a, al, 1, m, k).ok_or_else(layout)?, view(b, bl, 1, k, n).ok_or_else(layout)?);
        let c = output(m * n, |c| thrive_mkl::gemm_bf16(Dims { batch: 1, m, n, k }, a, b, c))
            .map_err(|e| candle_core::Error::Msg(e.to_string()))?;
        Ok((CpuStorage::F32(c), Shape::from((m, n))))
    }
}

pub(super) fn accumulate_tn(
    acc: &mut [f32],
    d: &Tensor,
    rows: &Tensor,
    (m, n, k): (usize, usize, usize),
    bf16: bool,
) -> Result<()> {
    let (d, rows) = (d.contiguous()?, rows.contiguous()?);
    let (dg, dl) = d.storage_and_layout();
    let (rg, rl) = rows.storage_and_layout();
    let (candle_core::Storage::Cpu(CpuStorage::F32(dd)), candle_core::Storage::Cpu(CpuStorage::F32(rd))) = (&*dg, &*rg)
    else {
        candle_core::bail!("accumulate_tn: f32 CPU operands expected")
    };
    // dᵀ (n × m) read from the (m, n) storage; rows as (m × k).
    fn dt<T>(data: &[T], n: usize) -> MatRef<'_, T> {
        MatRef { data, offset: 0, batch_stride: 0, row_stride: 1, col_stride: n }
    }
    fn rv<T>(data: &[T], k: usize) -> MatRef<'_, T> {
        MatRef { data, offset: 0, batch_stride: 0, row_stride: k, col_stride: 1 }
    }
    let dims = Dims { batch: 1, m: n, n: k, k: m };
    let (dv, rvw) =
        (&dd[dl.start_offset()..dl.start_offset() + m * n], &rd[rl.start_offset()..rl.start_offset() + m * k]);
    let done = if bf16 {
        let (d16, r16) = (rounded(dense(dv, m, n), 1, m, n), rounded(dense(rvw, m, k), 1, m, k));
        thrive_mkl::gemm_bf16_acc(dims, dt(&d16, n), rv(&r16, k), acc)
    } else {
        thrive_mkl::gemm_f32_acc(dims, dt(dv, n), rv(rvw, k), acc)
    };
    done.map_err(|e| candle_core::Error::Msg(e.to_string()))
}

pub(super) fn pack(w: &Tensor) -> Result<Option<super::Packed>> {
    if !w.device().is_cpu() || w.dtype() != DType::BF16 {
        return Ok(None);
    }
    let (n, k) = w.dims2()?;
    let (guard, l) = w.storage_and_layout();
    let candle_core::Storage::Cpu(CpuStorage::BF16(data)) = &*guard else { return Ok(None) };
    // Wᵀ (k × n) read from the (n, k) weight: element (i, j) is W[j, i].
    let (rs, cs) = (l.stride()[0], l.stride()[1]);
    let b = MatRef { data, offset: l.start_offset(), batch_stride: 0, row_stride: cs, col_stride: rs };
    match thrive_mkl::PackedBf16::new(b, k, n) {
        Ok(b) => Ok(Some(super::Packed { b })),
        // A layout BLAS cannot read stays unpacked (its products go through candle).
        Err(thrive_mkl::PackError::View(e)) => {
            tracing::debug!("{e}; the weight stays unpacked");
            Ok(None)
        }
        Err(e) => Err(candle_core::Error::Msg(e.to_string())),
    }
}

pub(super) fn packed_linear(b: &thrive_mkl::PackedBf16, x: &Tensor) -> Result<Tensor> {
    let (k, n) = b.dims();
    let dims = x.dims();
    if dims.last() != Some(&k) {
        candle_core::bail!("packed linear: input {:?} does not end in the weight's {k} columns", x.shape());
    }
    let m = x.elem_count() / k.max(1);
    let y = x.reshape((m, k))?.apply_op1_no_bwd(&PackedLinear(b))?;
    let mut out = dims.to_vec();
    *out.last_mut().expect("checked above") = n;
    y.reshape(out)
}

/// (m, k) · packed (k × n) → (m, n); f32 in and out, or bf16 in and out.
struct PackedLinear<'a>(&'a thrive_mkl::PackedBf16);

impl CustomOp1 for PackedLinear<'_> {
    fn name(&self) -> &'static str {
        "mkl-packed-linear"
    }

    fn cpu_fwd(&self, x: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let (m, k) = l.shape().dims2()?;
        let n = self.0.dims().1;
        let run = |a: MatRef<'_, half::bf16>| {
            output(m * n, |c| thrive_mkl::gemm_bf16_packed(m, a, self.0, c))
                .map_err(|e| candle_core::Error::Msg(e.to_string()))
        };
        let y = match x {
            CpuStorage::F32(d) => {
                let v = view(d, l, 1, m, k).ok_or_else(|| candle_core::Error::Msg("packed linear: layout".into()))?;
                CpuStorage::F32(run(dense(&rounded(v, 1, m, k), m, k))?)
            }
            CpuStorage::BF16(d) => {
                let v = view(d, l, 1, m, k).ok_or_else(|| candle_core::Error::Msg("packed linear: layout".into()))?;
                CpuStorage::BF16(run(v)?.into_iter().map(half::bf16::from_f32).collect())
            }
            other => candle_core::bail!(
                "packed linear: {:?} input (f32 or bf16 expected)",
                candle_core::backend::BackendStorage::dtype(other)
            ),
        };
        Ok((y, Shape::from((m, n))))
    }
}

/// Runs a product into a fresh output of `len` elements that is not zeroed first: MKL writes
/// every element (β = 0; thrive-mkl fills the k = 0 case). Zeroing a buffer that the
/// allocator reuses cost a pass over every product's output.
fn output<T>(
    len: usize,
    f: impl FnOnce(&mut [std::mem::MaybeUninit<T>]) -> std::result::Result<(), thrive_mkl::Error>,
) -> std::result::Result<Vec<T>, thrive_mkl::Error> {
    let mut c = Vec::with_capacity(len);
    f(&mut c.spare_capacity_mut()[..len])?;
    // SAFETY: the product wrote all `len` elements.
    unsafe { c.set_len(len) };
    Ok(c)
}

/// Values below which [`rounded`] stays on the calling thread.
const SERIAL_BELOW: usize = 1 << 16;

/// The `batch` matrices of `rows × cols` that `v` reads, rounded to bf16 (to nearest, ties to
/// even, as candle's `to_dtype`) into one contiguous buffer, row by row over the threads.
fn rounded(v: MatRef<'_, f32>, batch: usize, rows: usize, cols: usize) -> Vec<half::bf16> {
    use rayon::prelude::*;
    use std::mem::MaybeUninit;
    let len = batch * rows * cols;
    // Not zeroed first: every element is written below (a logits chunk is 67 M of them).
    let mut out: Vec<half::bf16> = Vec::with_capacity(len);
    let round_row = |(i, row): (usize, &mut [MaybeUninit<half::bf16>])| {
        let start = v.offset + (i / rows) * v.batch_stride + (i % rows) * v.row_stride;
        let put = |(o, x): (&mut MaybeUninit<half::bf16>, f32)| {
            o.write(half::bf16::from_bits(bf16_bits(x)));
        };
        if v.col_stride == 1 {
            round_into(&v.data[start..start + cols], row);
        } else {
            row.iter_mut().zip((0..cols).map(|j| v.data[start + j * v.col_stride])).for_each(put);
        }
    };
    let rows_out = &mut out.spare_capacity_mut()[..len];
    if len < SERIAL_BELOW {
        // A decoding step's few rows: waking the other threads costs more than the work.
        rows_out.chunks_mut(cols.max(1)).enumerate().for_each(round_row);
    } else {
        rows_out.par_chunks_mut(cols.max(1)).enumerate().for_each(round_row);
    }
    // SAFETY: the rows above cover all `len` elements, each written once.
    unsafe { out.set_len(len) };
    out
}

/// `x` rounded to bf16's bits: to nearest, ties to even, a NaN kept a (quiet) NaN, as
/// `half::bf16::from_f32` (tested bit for bit), but without branches, so that [`round_into`]
/// vectorises. The scalar conversion was 8 % of a short LoRA step (perf).
#[inline(always)]
fn bf16_bits(x: f32) -> u16 {
    let b = x.to_bits();
    let rounded = b.wrapping_add(0x7FFF + ((b >> 16) & 1)) >> 16;
    let nan = (b & 0x7FFF_FFFF) > 0x7F80_0000;
    (if nan { (b >> 16) | 0x0040 } else { rounded }) as u16
}

/// `src` rounded into `dst` (equal lengths), with AVX2 where the CPU has it (the default
/// build targets plain x86-64).
fn round_into(src: &[f32], dst: &mut [std::mem::MaybeUninit<half::bf16>]) {
    #[cfg(target_arch = "x86_64")]
    if std::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU has AVX2, checked just above.
        return unsafe { round_into_avx2(src, dst) };
    }
    round_into_plain(src, dst)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn round_into_avx2(src: &[f32], dst: &mut [std::mem::MaybeUninit<half::bf16>]) {
    round_into_plain(src, dst)
}

#[inline(always)]
fn round_into_plain(src: &[f32], dst: &mut [std::mem::MaybeUninit<half::bf16>]) {
    for (o, &x) in dst.iter_mut().zip(src) {
        o.write(half::bf16::from_bits(bf16_bits(x)));
    }
}

/// A contiguous buffer as consecutive `rows × cols` matrices.
fn dense<T>(data: &[T], rows: usize, cols: usize) -> MatRef<'_, T> {
    MatRef { data, offset: 0, batch_stride: rows * cols, row_stride: cols, col_stride: 1 }
}

/// A layout as `batch` matrices of `rows × cols`, if its batch dimensions collapse to one
/// stride (dimensions of size 1 have no stride that matters).
fn view<'a, T>(data: &'a [T], l: &Layout, batch: usize, rows: usize, cols: usize) -> Option<MatRef<'a, T>> {
    let (dims, stride) = (l.dims(), l.stride());
    let r = dims.len();
    if r < 2 || dims[r - 2] != rows || dims[r - 1] != cols || dims[..r - 2].iter().product::<usize>() != batch {
        return None;
    }
    let batch_stride = batch_stride(dims, stride)?;
    Some(MatRef { data, offset: l.start_offset(), batch_stride, row_stride: stride[r - 2], col_stride: stride[r - 1] })
}

/// The one stride between consecutive matrices of a (…, rows, cols) layout, if its batch
/// dimensions collapse to one (dimensions of size 1 have no stride that matters).
fn batch_stride(dims: &[usize], stride: &[usize]) -> Option<usize> {
    let r = dims.len();
    if r < 2 {
        return None;
    }
    let mut batch_stride = 0;
    let mut inner: Option<(usize, usize)> = None; // (size, stride) of the next batch dimension in
    for (&size, &st) in dims[..r - 2].iter().zip(&stride[..r - 2]).rev().filter(|(&size, _)| size != 1) {
        match inner {
            None => batch_stride = st,
            Some((isize, ist)) if st == isize * ist => {}
            Some(_) => return None,
        }
        inner = Some((size, st));
    }
    Some(batch_stride)
}

#[cfg(test)]
mod tests {
    #[test]
    fn rounding_to_bf16_matches_half_bit_for_bit() {
        // Ties, carries into the exponent, the largest finite values, infinities, signed
        // zeros, subnormals and NaNs with payloads, then a spread of other bit patterns.
        let mut bits: Vec<u32> = vec![
            0x3F80_8000,
            0x3F81_8000,
            0x3F80_7FFF,
            0x3F80_8001,
            0x3FFF_FFFF,
            0x7F7F_FFFF,
            0xFF7F_FFFF,
            0x7F80_0000,
            0xFF80_0000,
            0x0000_0000,
            0x8000_0000,
            0x0000_8000,
            0x0001_8000,
            0x7F80_0001,
            0x7FC0_0000,
            0xFFFF_FFFF,
            0x7FFF_8000,
            0xFF80_8000,
        ];
        let mut x = 0x9E37_79B9u32;
        for _ in 0..1_000_000 {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            bits.push(x);
        }
        let src: Vec<f32> = bits.iter().map(|&b| f32::from_bits(b)).collect();
        let mut dst = vec![std::mem::MaybeUninit::uninit(); src.len()];
        super::round_into(&src, &mut dst);
        for ((&b, x), o) in bits.iter().zip(&src).zip(&dst) {
            // SAFETY: round_into wrote every element.
            let got = unsafe { o.assume_init() }.to_bits();
            assert_eq!(got, half::bf16::from_f32(*x).to_bits(), "{b:#010x}");
            assert_eq!(super::bf16_bits(*x), got, "{b:#010x}");
        }
    }
}
