//! Q8_0 weights repacked for decoding's small products, with our own SIMD kernels.
//!
//! candle's quantized matmul only takes its fast (repacked, VNNI) path when the inner width is a
//! multiple of 256; Gemma 3 270M's is 640, so its Q8_0 products (the tied 262,144 × 640 output
//! matrix above all, and the Q5_0 projections that the loader widens to Q8_0) ran a row at a time
//! through a dot product that converts two f16 scales a block through a function call. Here the
//! same blocks are regrouped sixteen rows at a time so that one 512-bit VNNI instruction (or a few
//! AVX2 ones) multiplies four inputs into sixteen rows at once, and the scales convert sixteen at
//! a time.
//!
//! Numerics: the input row is quantized to Q8_0 exactly as candle and ggml do (an f16 scale of
//! amax / 127 a block of 32), each block's integer dot product is exact, and a row's sum over
//! blocks is `acc = fma(d_w · d_x, dot, acc)` in block order, in every kernel (AVX-512 VNNI,
//! AVX2 and the portable loop give the same bits). An output depends on its own row of weights
//! and input only: the same bits at any thread count and batch size.
//!
//! `THRIVE_Q8_KERNEL=avx512|avx2|portable` picks a kernel below the best one the CPU has (to run
//! another CPU's path, as CI does for MKL with `MKL_ENABLE_INSTRUCTIONS`).

use crate::error::{Error, Result};
use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::{Device, Tensor};
use half::f16;
use rayon::prelude::*;

/// Weights a block (ggml's QK8_0).
const BLOCK: usize = 32;
/// Rows of weights in one tile: the sixteen i32 lanes of a 512-bit register.
const ROWS: usize = 16;
/// Bytes of one tile's block: 8 groups × 16 rows × 4 weights.
const TILE_BLOCK: usize = BLOCK * ROWS;

/// 64 bytes on a 64-byte boundary, so that a 512-bit load never splits a cache line.
#[derive(Clone, Copy)]
#[repr(C, align(64))]
struct Line([u8; 64]);

/// An (n, k) Q8_0 matrix, regrouped: tile t holds rows 16t..16t + 16 (the last tile padded with
/// zero rows); for each block b of k, its 512 weight bytes are 8 groups of 4 inputs, each group
/// the 16 rows' 4 weights side by side, stored + 128 as u8 (VNNI multiplies u8 by i8), and its 16
/// f16 scales sit in `scales` at (t · kb + b) · 16.
pub struct Q8Matrix {
    n: usize,
    k: usize,
    qs: Vec<Line>,
    scales: Vec<f16>,
}

impl std::fmt::Debug for Q8Matrix {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Q8Matrix({} × {})", self.n, self.k)
    }
}

/// One input row quantized to Q8_0: per block its f32 scale, the sum of its 32 quants (to take
/// the weights' + 128 back out) and the quants.
struct QuantizedRow {
    d: Vec<f32>,
    sums: Vec<i32>,
    qs: Vec<i8>,
}

impl QuantizedRow {
    /// ggml's `quantize_row_q8_0` (candle's `BlockQ8_0::from_float`): scale amax / 127 kept as
    /// f16, quants round(x / scale) computed with the f32 scale.
    fn new(x: &[f32]) -> Self {
        let kb = x.len() / BLOCK;
        let mut row = QuantizedRow { d: Vec::with_capacity(kb), sums: Vec::with_capacity(kb), qs: vec![0; x.len()] };
        for (xs, qs) in x.chunks_exact(BLOCK).zip(row.qs.chunks_exact_mut(BLOCK)) {
            let amax = xs.iter().fold(0f32, |m, &v| m.max(v.abs()));
            let d = amax / 127.0;
            let id = if d != 0.0 { 1.0 / d } else { 0.0 };
            let mut sum = 0i32;
            for (q, &v) in qs.iter_mut().zip(xs) {
                *q = (v * id).round() as i8;
                sum += *q as i32;
            }
            row.d.push(f16::from_f32(d).to_f32());
            row.sums.push(sum);
        }
        row
    }
}

impl Q8Matrix {
    /// The regrouped copy of a Q8_0 tensor of shape (n, k); `None` for other block types.
    pub fn from_qtensor(q: &QTensor) -> Result<Option<Self>> {
        if q.dtype() != GgmlDType::Q8_0 {
            return Ok(None);
        }
        let (n, k) = q.shape().dims2()?;
        let data = q.data()?;
        Ok(Some(Self::from_blocks(n, k, &data)?))
    }

    /// From ggml's Q8_0 blocks (an f16 scale and 32 i8 quants each), row-major.
    pub fn from_blocks(n: usize, k: usize, data: &[u8]) -> Result<Self> {
        if k == 0 || !k.is_multiple_of(BLOCK) || data.len() != n * (k / BLOCK) * 34 {
            return Err(Error::Invalid(format!(
                "Q8_0 matrix {n} × {k}: expected a width of whole 32-weight blocks and {} bytes of 34-byte \
                 blocks, got {}",
                n * k.div_ceil(BLOCK) * 34,
                data.len()
            )));
        }
        let kb = k / BLOCK;
        let tiles = n.div_ceil(ROWS);
        let lines_per_block = TILE_BLOCK / 64;
        let mut qs = vec![Line([128; 64]); tiles * kb * lines_per_block];
        let mut scales = vec![f16::ZERO; tiles * kb * ROWS];
        qs.par_chunks_mut(kb * lines_per_block).zip(scales.par_chunks_mut(kb * ROWS)).enumerate().for_each(
            |(t, (qs, scales))| {
                let bytes: &mut [u8] =
                    // SAFETY: `Line` is 64 plain bytes with no padding.
                    unsafe { std::slice::from_raw_parts_mut(qs.as_mut_ptr().cast::<u8>(), qs.len() * 64) };
                for r in 0..ROWS.min(n - t * ROWS) {
                    let row = t * ROWS + r;
                    for b in 0..kb {
                        let block = &data[(row * kb + b) * 34..][..34];
                        scales[b * ROWS + r] = f16::from_le_bytes([block[0], block[1]]);
                        for (j, &w) in block[2..].iter().enumerate() {
                            bytes[b * TILE_BLOCK + (j / 4) * 64 + r * 4 + j % 4] = (w as i8 as i16 + 128) as u8;
                        }
                    }
                }
            },
        );
        Ok(Q8Matrix { n, k, qs, scales })
    }

    /// (n, k).
    pub fn dims(&self) -> (usize, usize) {
        (self.n, self.k)
    }

    fn kb(&self) -> usize {
        self.k / BLOCK
    }

    /// Tile t's weight bytes (kb blocks of 512).
    fn tile(&self, t: usize) -> &[u8] {
        let lines = self.kb() * TILE_BLOCK / 64;
        let tile = &self.qs[t * lines..(t + 1) * lines];
        // SAFETY: `Line` is 64 plain bytes with no padding.
        unsafe { std::slice::from_raw_parts(tile.as_ptr().cast::<u8>(), tile.len() * 64) }
    }

    /// `x Wᵀ` for x (…, k) f32 on the CPU: (…, n) f32.
    pub fn matmul(&self, x: &Tensor) -> Result<Tensor> {
        let dims = x.dims().to_vec();
        let Some((&k, batch)) = dims.split_last() else {
            return Err(Error::Invalid("Q8_0 product of a scalar".into()));
        };
        if k != self.k {
            return Err(Error::Invalid(format!("Q8_0 product: input width {k}, the matrix takes {}", self.k)));
        }
        let x = x.to_dtype(candle_core::DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
        let y = self.matmul_rows(&x);
        let mut out_dims = batch.to_vec();
        out_dims.push(self.n);
        Ok(Tensor::from_vec(y, out_dims, &Device::Cpu)?)
    }

    /// `x Wᵀ` for m = x.len() / k rows of x, row-major.
    pub fn matmul_rows(&self, x: &[f32]) -> Vec<f32> {
        let m = x.len() / self.k;
        if m == 0 {
            return Vec::new();
        }
        let rows: Vec<QuantizedRow> = x.chunks_exact(self.k).map(QuantizedRow::new).collect();
        let (n, tiles) = (self.n, self.n.div_ceil(ROWS));
        // Tile-major results: out[t][i][r] is input row i by weight row 16t + r.
        let mut out = vec![0f32; tiles * m * ROWS];
        let out_at = SharedOut(out.as_mut_ptr());
        // candle's own pool, which its quantized products (the k-quant layers between ours) use:
        // one pool keeps its spinning workers from taking the cores from a second one, and the
        // calling thread works too.
        candle_core::utils::barrier_pool().execute_chunked(tiles, |range| {
            let len = range.len() * m * ROWS;
            // SAFETY: each range of tiles owns out[start · m · 16 .. end · m · 16], which no
            // other range touches, and `out` outlives the call.
            let out = unsafe { std::slice::from_raw_parts_mut(out_at.at(range.start * m * ROWS), len) };
            self.tiles_into(&rows, range, out);
        });
        let mut y = vec![0f32; m * n];
        for (t, block) in out.chunks_exact(m * ROWS).enumerate() {
            let width = ROWS.min(n - t * ROWS);
            for (i, acc) in block.chunks_exact(ROWS).enumerate() {
                y[i * n + t * ROWS..][..width].copy_from_slice(&acc[..width]);
            }
        }
        y
    }

    /// Tiles `range` of the product with `rows`, tile-major into `out`.
    fn tiles_into(&self, rows: &[QuantizedRow], range: std::ops::Range<usize>, out: &mut [f32]) {
        let kernel = Kernel::detect();
        let kb = self.kb();
        for (t, out) in range.zip(out.chunks_exact_mut(rows.len() * ROWS)) {
            let (tile, scales) = (self.tile(t), &self.scales[t * kb * ROWS..][..kb * ROWS]);
            for (row, acc) in rows.iter().zip(out.chunks_exact_mut(ROWS)) {
                kernel.tile(tile, scales, row, acc.try_into().expect("16 lanes"));
            }
        }
    }

    /// Rows `ids` dequantized (an embedding lookup): each value is quant × scale in f32, as
    /// candle's and ggml's dequantization compute it.
    pub fn rows(&self, ids: &Tensor) -> Result<Tensor> {
        let shape = ids.dims().to_vec();
        let ids = ids.flatten_all()?.to_dtype(candle_core::DType::U32)?.to_vec1::<u32>()?;
        let kb = self.kb();
        let mut out = vec![0f32; ids.len() * self.k];
        for (&id, dst) in ids.iter().zip(out.chunks_exact_mut(self.k)) {
            let id = id as usize;
            if id >= self.n {
                return Err(Error::Invalid(format!("token id {id} is outside the {}-row embedding", self.n)));
            }
            let (tile, r) = (self.tile(id / ROWS), id % ROWS);
            let scales = &self.scales[(id / ROWS) * kb * ROWS..];
            for (b, dst) in dst.chunks_exact_mut(BLOCK).enumerate() {
                let d = scales[b * ROWS + r].to_f32();
                for (j, v) in dst.iter_mut().enumerate() {
                    *v = (tile[b * TILE_BLOCK + (j / 4) * 64 + r * 4 + j % 4] as i16 - 128) as f32 * d;
                }
            }
        }
        let mut dims = shape;
        dims.push(self.k);
        Ok(Tensor::from_vec(out, dims, &Device::Cpu)?)
    }
}

/// The output buffer, shared by the pool's workers, which write disjoint ranges of it.
#[derive(Clone, Copy)]
struct SharedOut(*mut f32);
// SAFETY: see `matmul_rows`: every worker writes only its own tiles' range.
unsafe impl Send for SharedOut {}
unsafe impl Sync for SharedOut {}

impl SharedOut {
    /// The pointer `offset` floats in. A method, so that closures capture the whole wrapper.
    fn at(self, offset: usize) -> *mut f32 {
        // SAFETY: callers stay within the buffer.
        unsafe { self.0.add(offset) }
    }
}

/// The kernel this CPU runs, detected once.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kernel {
    #[cfg(target_arch = "x86_64")]
    Avx512Vnni,
    #[cfg(target_arch = "x86_64")]
    Avx2,
    Portable,
}

impl Kernel {
    fn detect() -> Self {
        static KERNEL: std::sync::OnceLock<Kernel> = std::sync::OnceLock::new();
        *KERNEL.get_or_init(|| {
            #[cfg(target_arch = "x86_64")]
            {
                let forced = std::env::var("THRIVE_Q8_KERNEL").ok();
                let want = |name: &str| forced.as_deref().is_none_or(|f| f == name);
                if want("avx512")
                    && is_x86_feature_detected!("avx512f")
                    && is_x86_feature_detected!("avx512bw")
                    && is_x86_feature_detected!("avx512vnni")
                {
                    return Kernel::Avx512Vnni;
                }
                if want("avx2")
                    && is_x86_feature_detected!("avx2")
                    && is_x86_feature_detected!("fma")
                    && is_x86_feature_detected!("f16c")
                {
                    return Kernel::Avx2;
                }
            }
            Kernel::Portable
        })
    }

    /// acc[r] = Σ_b fma-accumulated (d_w[r, b] · d_x[b]) · (Σ_j w[r, b, j] · x_q[b, j]).
    fn tile(self, tile: &[u8], scales: &[f16], x: &QuantizedRow, acc: &mut [f32; ROWS]) {
        match self {
            // SAFETY: detect() saw the features.
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx512Vnni => unsafe { x86::tile_avx512(tile, scales, x, acc) },
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx2 => unsafe { x86::tile_avx2(tile, scales, x, acc) },
            Kernel::Portable => tile_portable(tile, scales, x, acc),
        }
    }
}

fn tile_portable(tile: &[u8], scales: &[f16], x: &QuantizedRow, acc: &mut [f32; ROWS]) {
    *acc = [0.0; ROWS];
    for (b, (w, xq)) in tile.chunks_exact(TILE_BLOCK).zip(x.qs.chunks_exact(BLOCK)).enumerate() {
        let mut dot = [0i32; ROWS];
        for (j, &q) in xq.iter().enumerate() {
            for (r, dot) in dot.iter_mut().enumerate() {
                *dot += w[(j / 4) * 64 + r * 4 + j % 4] as i32 * q as i32;
            }
        }
        for r in 0..ROWS {
            let d = scales[b * ROWS + r].to_f32() * x.d[b];
            acc[r] = d.mul_add((dot[r] - 128 * x.sums[b]) as f32, acc[r]);
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::{QuantizedRow, BLOCK, ROWS, TILE_BLOCK};
    use half::f16;
    use std::arch::x86_64::*;

    /// Four quants of x starting at `j`, as one i32 to broadcast.
    #[inline(always)]
    fn four(xq: &[i8], j: usize) -> i32 {
        i32::from_le_bytes([xq[j] as u8, xq[j + 1] as u8, xq[j + 2] as u8, xq[j + 3] as u8])
    }

    /// # Safety
    /// Needs AVX-512 F, BW and VNNI; `tile` holds kb blocks of 512 bytes, `scales` kb × 16.
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
    pub(super) unsafe fn tile_avx512(tile: &[u8], scales: &[f16], x: &QuantizedRow, out: &mut [f32; ROWS]) {
        let kb = x.d.len();
        assert!(tile.len() >= kb * TILE_BLOCK && scales.len() >= kb * ROWS);
        let mut acc = _mm512_setzero_ps();
        for b in 0..kb {
            let w = tile.as_ptr().add(b * TILE_BLOCK);
            let xq = &x.qs[b * BLOCK..][..BLOCK];
            let mut dot = _mm512_setzero_si512();
            for g in 0..8 {
                let wv = _mm512_loadu_si512(w.add(g * 64).cast());
                dot = _mm512_dpbusd_epi32(dot, wv, _mm512_set1_epi32(four(xq, g * 4)));
            }
            // The weights were stored + 128: take 128 · Σ x_q back out (exact in i32).
            let dot = _mm512_sub_epi32(dot, _mm512_set1_epi32(128 * x.sums[b]));
            let dw = _mm512_cvtph_ps(_mm256_loadu_si256(scales.as_ptr().add(b * ROWS).cast()));
            let d = _mm512_mul_ps(dw, _mm512_set1_ps(x.d[b]));
            acc = _mm512_fmadd_ps(d, _mm512_cvtepi32_ps(dot), acc);
        }
        _mm512_storeu_ps(out.as_mut_ptr(), acc);
    }

    /// # Safety
    /// Needs AVX2, FMA and F16C; `tile` holds kb blocks of 512 bytes, `scales` kb × 16.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(super) unsafe fn tile_avx2(tile: &[u8], scales: &[f16], x: &QuantizedRow, out: &mut [f32; ROWS]) {
        let kb = x.d.len();
        assert!(tile.len() >= kb * TILE_BLOCK && scales.len() >= kb * ROWS);
        let (mut lo, mut hi) = (_mm256_setzero_ps(), _mm256_setzero_ps());
        let flip = _mm256_set1_epi8(-128);
        let ones = _mm256_set1_epi16(1);
        for b in 0..kb {
            let w = tile.as_ptr().add(b * TILE_BLOCK);
            let xq = &x.qs[b * BLOCK..][..BLOCK];
            let (mut dot_lo, mut dot_hi) = (_mm256_setzero_si256(), _mm256_setzero_si256());
            for g in 0..8 {
                let xv = _mm256_set1_epi32(four(xq, g * 4));
                // Back to signed weights, then |w| (u8) times x with w's sign (i8): maddubs's
                // pair sums stay within i16 (2 · 128 · 127).
                for (half, dot) in [(0, &mut dot_lo), (32, &mut dot_hi)] {
                    let wv = _mm256_xor_si256(_mm256_loadu_si256(w.add(g * 64 + half).cast()), flip);
                    let p = _mm256_maddubs_epi16(_mm256_sign_epi8(wv, wv), _mm256_sign_epi8(xv, wv));
                    *dot = _mm256_add_epi32(*dot, _mm256_madd_epi16(p, ones));
                }
            }
            let xd = _mm256_set1_ps(x.d[b]);
            let s = scales.as_ptr().add(b * ROWS);
            let d_lo = _mm256_mul_ps(_mm256_cvtph_ps(_mm_loadu_si128(s.cast())), xd);
            let d_hi = _mm256_mul_ps(_mm256_cvtph_ps(_mm_loadu_si128(s.add(8).cast())), xd);
            lo = _mm256_fmadd_ps(d_lo, _mm256_cvtepi32_ps(dot_lo), lo);
            hi = _mm256_fmadd_ps(d_hi, _mm256_cvtepi32_ps(dot_hi), hi);
        }
        _mm256_storeu_ps(out.as_mut_ptr(), lo);
        _mm256_storeu_ps(out.as_mut_ptr().add(8), hi);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A random Q8_0 matrix's blocks (scales of varied size, quants in ±127).
    fn blocks(n: usize, k: usize, seed: u64) -> Vec<u8> {
        let mut s = seed;
        let mut next = move || {
            s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            (s >> 33) as u32
        };
        let mut out = Vec::new();
        for _ in 0..n * k / BLOCK {
            let d = f16::from_f32((next() % 1000) as f32 / 1e5 + 1e-4);
            out.extend_from_slice(&d.to_le_bytes());
            out.extend((0..BLOCK).map(|_| ((next() % 255) as i32 - 127) as i8 as u8));
        }
        out
    }

    fn input(m: usize, k: usize, seed: u64) -> Vec<f32> {
        (0..m * k).map(|i| (((i as u64 * 2654435761 + seed) % 2001) as f32 - 1000.0) / 700.0).collect()
    }

    /// The product in f64 from the blocks and the quantized input, for comparison.
    fn reference(n: usize, k: usize, data: &[u8], x: &[f32]) -> Vec<f64> {
        let kb = k / BLOCK;
        let mut y = Vec::new();
        for xr in x.chunks_exact(k) {
            let q = QuantizedRow::new(xr);
            for row in 0..n {
                let mut s = 0f64;
                for b in 0..kb {
                    let block = &data[(row * kb + b) * 34..][..34];
                    let dw = f16::from_le_bytes([block[0], block[1]]).to_f64();
                    let dot: i64 = (0..BLOCK).map(|j| block[2 + j] as i8 as i64 * q.qs[b * BLOCK + j] as i64).sum();
                    s += dw * q.d[b] as f64 * dot as f64;
                }
                y.push(s);
            }
        }
        y
    }

    #[test]
    fn every_kernel_matches_the_reference_and_gives_the_same_bits() {
        for (n, k, m) in [(16, 32, 1), (37, 640, 3), (100, 96, 2), (5, 64, 1)] {
            let data = blocks(n, k, 7 + n as u64);
            let q = Q8Matrix::from_blocks(n, k, &data).unwrap();
            let x = input(m, k, 3);
            let want = reference(n, k, &data, &x);
            let got = q.matmul_rows(&x);
            for (g, w) in got.iter().zip(&want) {
                assert!((*g as f64 - w).abs() <= 1e-4 * (1.0 + w.abs()), "{n}×{k}: {g} vs {w}");
            }
            let rows: Vec<QuantizedRow> = x.chunks_exact(k).map(QuantizedRow::new).collect();
            let mut kernels = vec![Kernel::Portable];
            #[cfg(target_arch = "x86_64")]
            {
                if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
                    kernels.push(Kernel::Avx2);
                }
                if is_x86_feature_detected!("avx512f") && is_x86_feature_detected!("avx512vnni") {
                    kernels.push(Kernel::Avx512Vnni);
                }
            }
            for t in 0..n.div_ceil(ROWS) {
                let scales = &q.scales[t * q.kb() * ROWS..][..q.kb() * ROWS];
                for row in &rows {
                    let mut first = [0f32; ROWS];
                    tile_portable(q.tile(t), scales, row, &mut first);
                    for kernel in &kernels {
                        let mut acc = [f32::NAN; ROWS];
                        kernel.tile(q.tile(t), scales, row, &mut acc);
                        assert_eq!(acc.map(f32::to_bits), first.map(f32::to_bits), "{kernel:?}, {n}×{k}");
                    }
                }
            }
        }
    }

    #[test]
    fn rows_do_not_depend_on_the_batch_or_threads() {
        let (n, k) = (300, 640);
        let q = Q8Matrix::from_blocks(n, k, &blocks(n, k, 1)).unwrap();
        let x = input(9, k, 5);
        let all = q.matmul_rows(&x);
        for i in [0, 4, 8] {
            let one = q.matmul_rows(&x[i * k..(i + 1) * k]);
            assert_eq!(one, all[i * n..(i + 1) * n]);
        }
        // Tile by tile from the last one, as one thread of many might take them.
        let rows: Vec<QuantizedRow> = x.chunks_exact(k).map(QuantizedRow::new).collect();
        let tiles = n.div_ceil(ROWS);
        let mut out = vec![0f32; tiles * 9 * ROWS];
        for t in (0..tiles).rev() {
            q.tiles_into(&rows, t..t + 1, &mut out[t * 9 * ROWS..(t + 1) * 9 * ROWS]);
        }
        for (i, want) in all.chunks_exact(n).enumerate() {
            let got: Vec<f32> = (0..n).map(|c| out[(c / ROWS) * 9 * ROWS + i * ROWS + c % ROWS]).collect();
            assert_eq!(got, want);
        }
    }

    #[test]
    fn rows_dequantize_as_candle_does() {
        let (n, k) = (40, 64);
        let data = blocks(n, k, 2);
        let q = Q8Matrix::from_blocks(n, k, &data).unwrap();
        let storage = candle_core::quantized::QStorage::from_data(
            std::borrow::Cow::Borrowed(&data),
            &Device::Cpu,
            GgmlDType::Q8_0,
        )
        .unwrap();
        let qt = QTensor::new(storage, (n, k)).unwrap();
        let ids = Tensor::new(&[0u32, 17, 39, 16], &Device::Cpu).unwrap();
        let got = q.rows(&ids).unwrap().to_vec2::<f32>().unwrap();
        let want = qt.dequantize(&Device::Cpu).unwrap().embedding(&ids).unwrap().to_vec2::<f32>().unwrap();
        assert_eq!(got, want);
        assert!(q.rows(&Tensor::new(&[40u32], &Device::Cpu).unwrap()).is_err());
        assert!(Q8Matrix::from_blocks(n, k, &data[1..]).is_err());
        assert!(Q8Matrix::from_blocks(n, 48, &data).is_err());
        assert!(Q8Matrix::from_blocks(n, 0, &[]).is_err());
        assert!(q.matmul_rows(&[]).is_empty());
        assert!(q.matmul(&Tensor::zeros((2, 63), candle_core::DType::F32, &Device::Cpu).unwrap()).is_err());
        assert_eq!(
            q.matmul(&Tensor::zeros((0, 64), candle_core::DType::F32, &Device::Cpu).unwrap()).unwrap().dims(),
            [0, n]
        );
    }
}
