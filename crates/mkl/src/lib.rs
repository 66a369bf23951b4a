//! oneMKL's matrix products for thrive's CPU path: f32 × f32 → f32 (`cblas_sgemm`) and
//! bf16 × bf16 → f32 (`cblas_gemm_bf16bf16f32`, which runs on AMX tiles where the CPU has them).
//!
//! MKL is linked statically with its sequential layer; the parallelism is ours: the output is cut
//! into fixed tiles ([`TILE_ROWS`] × [`TILE_COLS`]) that rayon spreads over its threads (an
//! f32 output of few tiles over a long inner dimension is also cut into [`K_BLOCK`]s of k,
//! summed in block order). Each tile is one MKL call whose shape does not depend on the thread
//! count, and MKL runs in its conditional-numerical-reproducibility mode, so a product is
//! bit-identical whatever `RAYON_NUM_THREADS` is (thrive's determinism rule).
//!
//! Everything here needs the `link` feature (thrive-sft's `mkl` feature turns it on); without it
//! the crate is empty, so that the workspace builds where MKL is not installed.
#![cfg(feature = "link")]

use half::bf16;
use rayon::prelude::*;
use std::ffi::{c_char, c_int};
use std::mem::MaybeUninit;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Once;

/// Rows of the output in one MKL call.
pub const TILE_ROWS: usize = 512;
/// Columns of the output in one MKL call.
pub const TILE_COLS: usize = 1024;
/// An f32 output with fewer tiles than this and an inner dimension of at least two
/// [`K_BLOCK`]s is also cut along k ([`for_each_f32_tile`]).
pub const K_SPLIT_BELOW_TILES: usize = 8;
/// The inner-dimension block of a product cut along k.
pub const K_BLOCK: usize = 16384;

const ROW_MAJOR: c_int = 101;
const NO_TRANS: c_int = 111;
const TRANS: c_int = 112;
const PACKED: c_int = 151;
const B_MATRIX: c_int = 162;
const CBWR_AUTO: c_int = 2;
const CBWR_STRICT: c_int = 0x10000;

extern "C" {
    #[allow(clippy::too_many_arguments)]
    fn cblas_sgemm(
        layout: c_int,
        transa: c_int,
        transb: c_int,
        m: c_int,
        n: c_int,
        k: c_int,
        alpha: f32,
        a: *const f32,
        lda: c_int,
        b: *const f32,
        ldb: c_int,
        beta: f32,
        c: *mut f32,
        ldc: c_int,
    );
    #[allow(clippy::too_many_arguments)]
    fn cblas_gemm_bf16bf16f32(
        layout: c_int,
        transa: c_int,
        transb: c_int,
        m: c_int,
        n: c_int,
        k: c_int,
        alpha: f32,
        a: *const u16,
        lda: c_int,
        b: *const u16,
        ldb: c_int,
        beta: f32,
        c: *mut f32,
        ldc: c_int,
    );
    fn cblas_gemm_bf16bf16f32_pack_get_size(identifier: c_int, m: c_int, n: c_int, k: c_int) -> usize;
    #[allow(clippy::too_many_arguments)]
    fn cblas_gemm_bf16bf16f32_pack(
        layout: c_int,
        identifier: c_int,
        trans: c_int,
        m: c_int,
        n: c_int,
        k: c_int,
        src: *const u16,
        ld: c_int,
        dest: *mut u16,
    );
    #[allow(clippy::too_many_arguments)]
    fn cblas_gemm_bf16bf16f32_compute(
        layout: c_int,
        transa: c_int,
        transb: c_int,
        m: c_int,
        n: c_int,
        k: c_int,
        alpha: f32,
        a: *const u16,
        lda: c_int,
        b: *const u16,
        ldb: c_int,
        beta: f32,
        c: *mut f32,
        ldc: c_int,
    );
    fn MKL_Get_Version_String(buffer: *mut c_char, len: c_int);
    fn MKL_CBWR_Set(settings: c_int) -> c_int;
}

/// Why a product was not computed; the caller falls back to another kernel.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    #[error("mkl: an operand is neither row- nor column-contiguous (strides {0:?})")]
    Strides((usize, usize)),
    #[error("mkl: dimension {0} does not fit MKL's 32-bit integers")]
    TooLarge(usize),
    #[error("mkl: operand of {len} elements is too short for a {rows} × {cols} view at offset {offset}")]
    OutOfBounds { len: usize, offset: usize, rows: usize, cols: usize },
    #[error("mkl: output holds {0} elements, expected {1}")]
    Output(usize, usize),
}

/// A read-only view of a batch of matrices: element (i, j) of matrix b sits at
/// `offset + b * batch_stride + i * row_stride + j * col_stride`. One of the two matrix strides
/// must be 1 (row- or column-major), as BLAS needs; the batch stride may be 0 (one matrix shared).
#[derive(Clone, Copy, Debug)]
pub struct MatRef<'a, T> {
    pub data: &'a [T],
    pub offset: usize,
    pub batch_stride: usize,
    pub row_stride: usize,
    pub col_stride: usize,
}

/// How BLAS reads one operand: transposed or not, and its leading dimension.
#[derive(Clone, Copy)]
struct Blas {
    trans: c_int,
    ld: usize,
}

impl<T> MatRef<'_, T> {
    /// The BLAS description of `batch` views of `rows × cols`, checking they stay inside `data`.
    fn blas(&self, batch: usize, rows: usize, cols: usize) -> Result<Blas, Error> {
        if batch > 0 && rows > 0 && cols > 0 {
            let last = self.offset
                + (batch - 1) * self.batch_stride
                + (rows - 1) * self.row_stride
                + (cols - 1) * self.col_stride;
            if last >= self.data.len() {
                return Err(Error::OutOfBounds { len: self.data.len(), offset: self.offset, rows, cols });
            }
        }
        // A stride over a dimension of size 1 is never used: any value that BLAS accepts will do.
        let (rs, cs) = (self.row_stride, self.col_stride);
        let blas = if (cs == 1 || cols == 1) && (rs >= cols || rows == 1) {
            Blas { trans: NO_TRANS, ld: if rows == 1 { cols.max(1) } else { rs } }
        } else if (rs == 1 || rows == 1) && (cs >= rows || cols == 1) {
            Blas { trans: TRANS, ld: if cols == 1 { rows.max(1) } else { cs } }
        } else {
            return Err(Error::Strides((rs, cs)));
        };
        int(blas.ld)?;
        Ok(blas)
    }

    /// Element offset of matrix `b`'s sub-view starting at (row, col).
    fn at(&self, b: usize, row: usize, col: usize) -> usize {
        self.offset + b * self.batch_stride + row * self.row_stride + col * self.col_stride
    }
}

fn int(x: usize) -> Result<c_int, Error> {
    c_int::try_from(x).map_err(|_| Error::TooLarge(x))
}

fn init() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // Strict CNR: results independent of alignment and of MKL's code path choices at run time.
        // SAFETY: a plain setter, called once before any product.
        let status = unsafe { MKL_CBWR_Set(CBWR_AUTO | CBWR_STRICT) };
        if status != 0 {
            tracing::warn!(status, "MKL refused conditional numerical reproducibility: products may vary run to run");
        }
    });
}

/// oneMKL's version string, for `thrive --version`.
pub fn version() -> String {
    let mut buf = vec![0 as c_char; 256];
    // SAFETY: MKL writes at most `len` bytes, NUL-terminated.
    unsafe { MKL_Get_Version_String(buf.as_mut_ptr(), buf.len() as c_int) };
    let bytes: Vec<u8> = buf.iter().take_while(|&&c| c != 0).map(|&c| c as u8).collect();
    String::from_utf8_lossy(&bytes).trim().to_string()
}

/// A raw output pointer shared by tiles that write disjoint parts of it.
#[derive(Clone, Copy)]
struct OutPtr<T>(*mut T);
// SAFETY: every tile writes only its own rows × columns of the output.
unsafe impl<T> Send for OutPtr<T> {}
unsafe impl<T> Sync for OutPtr<T> {}

impl<T> OutPtr<T> {
    /// The pointer. A method, so that closures capture the whole (Send) wrapper.
    fn get(self) -> *mut T {
        self.0
    }
}

/// One MKL call's share of the output: matrix `b`, rows `i..i + tm`, columns `j..j + tn`,
/// summed over the inner indices `k0..k0 + tk` (all of them unless the product is cut along k).
#[derive(Clone, Copy)]
struct Tile {
    b: usize,
    i: usize,
    tm: usize,
    j: usize,
    tn: usize,
    k0: usize,
    tk: usize,
}

/// The tiles of a batch of m × n outputs over all k inner indices, in a fixed order.
fn tiles(batch: usize, m: usize, n: usize, k: usize) -> Vec<Tile> {
    let mut out = Vec::with_capacity(batch * m.div_ceil(TILE_ROWS) * n.div_ceil(TILE_COLS));
    for b in 0..batch {
        for i in (0..m).step_by(TILE_ROWS) {
            for j in (0..n).step_by(TILE_COLS) {
                out.push(Tile { b, i, tm: TILE_ROWS.min(m - i), j, tn: TILE_COLS.min(n - j), k0: 0, tk: k });
            }
        }
    }
    out
}

/// The product's shape: `batch` products of (m × k) · (k × n).
#[derive(Clone, Copy, Debug)]
pub struct Dims {
    pub batch: usize,
    pub m: usize,
    pub n: usize,
    pub k: usize,
}

/// Runs `tile(t, out)` for every tile of the output in parallel, `out` pointing at the tile's
/// first element of C (leading dimension n); with k = 0 the product is all zeros.
fn for_each_tile<T: Copy + Send + Sync>(
    d: Dims,
    c: &mut [MaybeUninit<T>],
    zero: T,
    tile: impl Fn(Tile, *mut T) + Sync,
) {
    if d.k == 0 {
        c.fill(MaybeUninit::new(zero));
        return;
    }
    let out = OutPtr(c.as_mut_ptr().cast::<T>());
    tiles(d.batch, d.m, d.n, d.k).into_par_iter().for_each(|t| {
        // SAFETY: `check` sized C as batch × m × n, and the tile starts inside it.
        tile(t, unsafe { out.get().add(out_offset(d, t)) })
    });
}

/// [`for_each_tile`] for an f32 output, `tile(t, out, ldc)` writing tile `t` at `out` with
/// leading dimension `ldc`. An output of fewer than [`K_SPLIT_BELOW_TILES`] tiles over a long
/// inner dimension would keep most threads idle (the loss's gradient through the output
/// matrix: 512 × 640 over k = 262,144, one tile), so it is also cut into [`K_BLOCK`]s of k
/// whose partial products run in parallel and are summed in block order. The cut depends on
/// the shape alone, so the result still does not depend on the thread count.
fn for_each_f32_tile(d: Dims, c: &mut [MaybeUninit<f32>], tile: impl Fn(Tile, *mut f32, usize) + Sync) {
    let whole = tiles(d.batch, d.m, d.n, d.k);
    if whole.len() >= K_SPLIT_BELOW_TILES || d.k < 2 * K_BLOCK {
        return for_each_tile(d, c, 0.0, |t, out| tile(t, out, d.n));
    }
    let blocks = d.k.div_ceil(K_BLOCK);
    let partials: Vec<Vec<f32>> = (0..whole.len() * blocks)
        .into_par_iter()
        .map(|w| {
            let (t, kb) = (whole[w / blocks], w % blocks);
            let k0 = kb * K_BLOCK;
            let mut part = vec![0f32; t.tm * t.tn];
            tile(Tile { k0, tk: K_BLOCK.min(d.k - k0), ..t }, part.as_mut_ptr(), t.tn);
            part
        })
        .collect();
    for (w, t) in whole.iter().enumerate() {
        let parts = &partials[w * blocks..(w + 1) * blocks];
        let start = out_offset(d, *t);
        for r in 0..t.tm {
            let row = &mut c[start + r * d.n..start + r * d.n + t.tn];
            for (col, o) in row.iter_mut().enumerate() {
                let at = r * t.tn + col;
                o.write(parts.iter().skip(1).fold(parts[0][at], |sum, p| sum + p[at]));
            }
        }
    }
}

/// C (batch × m × n, row-major, contiguous) = A (m × k) · B (k × n) for each matrix, in f32.
pub fn gemm_f32(d: Dims, a: MatRef<f32>, b: MatRef<f32>, c: &mut [MaybeUninit<f32>]) -> Result<(), Error> {
    let (ba, bb) = check(d, &a, &b, c.len())?;
    for_each_f32_tile(d, c, |t, out, ldc| {
        // SAFETY: the views were bounds-checked in `check`; the tile writes its own rows and
        // columns of C (or its own partial buffer), which no other tile touches, and MKL never
        // reads C when β = 0 (so C may start uninitialised).
        unsafe { f32_tile(ba, bb, &a, &b, t, out, ldc, 0.0) }
    });
    Ok(())
}

/// C = A · B with bf16 inputs, f32 accumulation and f32 output (shapes as [`gemm_f32`]).
pub fn gemm_bf16(d: Dims, a: MatRef<bf16>, b: MatRef<bf16>, c: &mut [MaybeUninit<f32>]) -> Result<(), Error> {
    let (ba, bb) = check(d, &a, &b, c.len())?;
    // SAFETY: as in `gemm_f32`; bf16 is a u16 bit pattern, as MKL_BF16 is.
    for_each_f32_tile(d, c, |t, out, ldc| unsafe { bf16_tile(ba, bb, &a, &b, t, out, ldc, 0.0) });
    Ok(())
}

/// C += A · B in f32 (shapes as [`gemm_f32`]; C initialised). For gradients summed over chunks
/// (the loss's output matrix), which would otherwise each take a fresh C and an addition. The
/// tiles are never cut along k, so each element is summed in one MKL call whatever the threads.
pub fn gemm_f32_acc(d: Dims, a: MatRef<f32>, b: MatRef<f32>, c: &mut [f32]) -> Result<(), Error> {
    let (ba, bb) = check(d, &a, &b, c.len())?;
    for_each_acc_tile(d, c, |t, out| {
        // SAFETY: as in `gemm_f32`; with β = 1 MKL reads this tile's C, which is initialised.
        unsafe { f32_tile(ba, bb, &a, &b, t, out, d.n, 1.0) }
    });
    Ok(())
}

/// C += A · B with bf16 inputs and f32 accumulation into an f32 C ([`gemm_f32_acc`]'s rules).
pub fn gemm_bf16_acc(d: Dims, a: MatRef<bf16>, b: MatRef<bf16>, c: &mut [f32]) -> Result<(), Error> {
    let (ba, bb) = check(d, &a, &b, c.len())?;
    // SAFETY: as in `gemm_f32_acc`.
    for_each_acc_tile(d, c, |t, out| unsafe { bf16_tile(ba, bb, &a, &b, t, out, d.n, 1.0) });
    Ok(())
}

/// Runs `tile(t, out)` for every whole-k tile of an initialised f32 C in parallel (k = 0 adds
/// nothing).
fn for_each_acc_tile(d: Dims, c: &mut [f32], tile: impl Fn(Tile, *mut f32) + Sync) {
    if d.k == 0 {
        return;
    }
    let out = OutPtr(c.as_mut_ptr());
    tiles(d.batch, d.m, d.n, d.k).into_par_iter().for_each(|t| {
        // SAFETY: `check` sized C as batch × m × n, and the tile starts inside it.
        tile(t, unsafe { out.get().add(out_offset(d, t)) })
    });
}

/// C = A · B with bf16 inputs, accumulated in f32 and rounded once to a bf16 output (as a bf16
/// matmul on a GPU does).
pub fn gemm_bf16_to_bf16(d: Dims, a: MatRef<bf16>, b: MatRef<bf16>, c: &mut [MaybeUninit<bf16>]) -> Result<(), Error> {
    let (ba, bb) = check(d, &a, &b, c.len())?;
    for_each_tile(d, c, bf16::ZERO, |t, out| {
        let mut scratch = vec![0f32; t.tm * t.tn];
        // SAFETY: as in `gemm_bf16`; the scratch tile is tm × tn with leading dimension tn, and
        // the rounded tile goes to this tile's rows and columns of C only.
        unsafe {
            bf16_tile(ba, bb, &a, &b, t, scratch.as_mut_ptr(), t.tn, 0.0);
            for (r, row) in scratch.chunks_exact(t.tn).enumerate() {
                for (k, &v) in row.iter().enumerate() {
                    out.add(r * d.n + k).write(bf16::from_f32(v));
                }
            }
        }
    });
    Ok(())
}

fn out_offset(d: Dims, t: Tile) -> usize {
    (t.b * d.m + t.i) * d.n + t.j
}

/// One tile of an f32 product: C = A · B + β C.
#[allow(clippy::too_many_arguments)]
unsafe fn f32_tile(ba: Blas, bb: Blas, a: &MatRef<f32>, b: &MatRef<f32>, t: Tile, c: *mut f32, ldc: usize, beta: f32) {
    cblas_sgemm(
        ROW_MAJOR,
        ba.trans,
        bb.trans,
        t.tm as c_int,
        t.tn as c_int,
        t.tk as c_int,
        1.0,
        a.data.as_ptr().add(a.at(t.b, t.i, t.k0)),
        ba.ld as c_int,
        b.data.as_ptr().add(b.at(t.b, t.k0, t.j)),
        bb.ld as c_int,
        beta,
        c,
        ldc as c_int,
    )
}

/// One tile of a bf16 product: C = A · B + β C.
#[allow(clippy::too_many_arguments)]
unsafe fn bf16_tile(
    ba: Blas,
    bb: Blas,
    a: &MatRef<bf16>,
    b: &MatRef<bf16>,
    t: Tile,
    c: *mut f32,
    ldc: usize,
    beta: f32,
) {
    cblas_gemm_bf16bf16f32(
        ROW_MAJOR,
        ba.trans,
        bb.trans,
        t.tm as c_int,
        t.tn as c_int,
        t.tk as c_int,
        1.0,
        a.data.as_ptr().add(a.at(t.b, t.i, t.k0)).cast(),
        ba.ld as c_int,
        b.data.as_ptr().add(b.at(t.b, t.k0, t.j)).cast(),
        bb.ld as c_int,
        beta,
        c,
        ldc as c_int,
    )
}

/// A bf16 right-hand matrix B (k × n) stored once in MKL's internal packed format, one buffer per
/// block of columns (`pack_cols`), for [`gemm_bf16_packed`]. A plain product packs its B on every call,
/// which costs more than the product itself when A has few rows (decoding: one row a sequence),
/// so a frozen weight that many small products read is packed once.
///
/// MKL asks for at least 9.6 MB a buffer and about twice the matrix's bytes, but writes only
/// about the matrix's own bytes, spread over that room. Each buffer is an anonymous mapping, whose
/// pages the kernel commits only when written: the resident memory of a packed matrix is about
/// that of the matrix itself.
pub struct PackedBf16 {
    k: usize,
    n: usize,
    /// (first column, columns, packed buffer) of each column tile, in order.
    tiles: Vec<(usize, usize, memmap2::MmapMut)>,
}

impl std::fmt::Debug for PackedBf16 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PackedBf16 {{ k: {}, n: {}, tiles: {} }}", self.k, self.n, self.tiles.len())
    }
}

/// Why a matrix could not be packed.
#[derive(Debug, thiserror::Error)]
pub enum PackError {
    #[error(transparent)]
    View(#[from] Error),
    #[error("mkl: could not map {bytes} bytes for a packed matrix: {source}")]
    Map { bytes: usize, source: std::io::Error },
}

/// The row count MKL is told when packing. A packed matrix serves products of any row count with
/// the same bits (crates/mkl's tests check it); this one is decoding's typical batch.
const PACK_ROWS: c_int = 16;

/// Columns of a packed matrix in one buffer (one MKL call): [`TILE_COLS`], or a quarter of that
/// for matrices of at most 4 × [`TILE_COLS`] columns, so that a decoding step's few-row products
/// with a layer's weights (640 to 2,048 columns for Gemma 3 270M) spread over the threads instead
/// of running as one call on one core. It depends on the shape alone, never on the threads.
fn pack_cols(n: usize) -> usize {
    if n <= 4 * TILE_COLS {
        TILE_COLS / 4
    } else {
        TILE_COLS
    }
}

impl PackedBf16 {
    /// Packs B, a k × n view (a linear layer's (n, k) weight read transposed is row stride 1,
    /// column stride k), tile by tile over the threads.
    pub fn new(b: MatRef<bf16>, k: usize, n: usize) -> Result<Self, PackError> {
        init();
        for x in [k, n] {
            int(x)?;
        }
        let bb = b.blas(1, k, n)?;
        let cols = pack_cols(n);
        let tiles: Vec<(usize, usize)> = (0..n).step_by(cols).map(|j| (j, cols.min(n - j))).collect();
        let tiles = tiles
            .into_par_iter()
            .map(|(j, tn)| {
                // SAFETY: a size query.
                let bytes =
                    unsafe { cblas_gemm_bf16bf16f32_pack_get_size(B_MATRIX, PACK_ROWS, tn as c_int, k as c_int) };
                let mut buf =
                    memmap2::MmapMut::map_anon(bytes.max(1)).map_err(|source| PackError::Map { bytes, source })?;
                // SAFETY: the view was bounds-checked by `blas`; `buf` holds the `bytes` MKL asked for.
                unsafe {
                    cblas_gemm_bf16bf16f32_pack(
                        ROW_MAJOR,
                        B_MATRIX,
                        bb.trans,
                        PACK_ROWS,
                        tn as c_int,
                        k as c_int,
                        b.data.as_ptr().add(b.at(0, 0, j)).cast(),
                        bb.ld as c_int,
                        buf.as_mut_ptr().cast(),
                    )
                };
                Ok((j, tn, buf))
            })
            .collect::<Result<Vec<_>, PackError>>()?;
        Ok(PackedBf16 { k, n, tiles })
    }

    /// (k, n).
    pub fn dims(&self) -> (usize, usize) {
        (self.k, self.n)
    }
}

/// C (m × n, row-major, contiguous) = A (m × k) · B with B packed, bf16 inputs and f32 output.
/// Every row of C is the same bits whatever m is (a batch of sequences decodes each sequence as
/// it would alone), unlike a plain product, which treats one row differently.
pub fn gemm_bf16_packed(m: usize, a: MatRef<bf16>, b: &PackedBf16, c: &mut [MaybeUninit<f32>]) -> Result<(), Error> {
    init();
    PRODUCTS.fetch_add(1, Ordering::Relaxed);
    int(m)?;
    if c.len() != m * b.n {
        return Err(Error::Output(c.len(), m * b.n));
    }
    a.blas(1, m, b.k)?;
    if m == 0 {
        return Ok(());
    }
    if b.k == 0 {
        c.fill(MaybeUninit::new(0.0));
        return Ok(());
    }
    if m == 1 {
        // Without AMX, MKL sends a one-row product down a vector path that sums in another order
        // than its kernel for two rows or more: the row goes in twice and one copy comes back.
        // On the memory-bound one-row product the second row costs next to nothing.
        let row: Vec<bf16> = (0..b.k).map(|p| a.data[a.at(0, 0, p)]).collect();
        let twice = [row.as_slice(), row.as_slice()].concat();
        let a2 = MatRef { data: &twice[..], offset: 0, batch_stride: 0, row_stride: b.k, col_stride: 1 };
        let mut out = Vec::with_capacity(2 * b.n);
        packed_rows(2, a2, b, &mut out.spare_capacity_mut()[..2 * b.n])?;
        // SAFETY: `packed_rows` wrote all 2 × n outputs.
        unsafe { out.set_len(2 * b.n) };
        for (dst, &src) in c.iter_mut().zip(&out[..b.n]) {
            dst.write(src);
        }
        return Ok(());
    }
    packed_rows(m, a, b, c)
}

/// [`gemm_bf16_packed`] for m ≥ 2 rows, checked by the caller.
fn packed_rows(m: usize, a: MatRef<bf16>, b: &PackedBf16, c: &mut [MaybeUninit<f32>]) -> Result<(), Error> {
    let ba = a.blas(1, m, b.k)?;
    let out = OutPtr(c.as_mut_ptr().cast::<f32>());
    let work: Vec<(usize, usize)> =
        (0..m).step_by(TILE_ROWS).flat_map(|i| (0..b.tiles.len()).map(move |t| (i, t))).collect();
    work.into_par_iter().for_each(|(i, t)| {
        let (j, tn, buf) = &b.tiles[t];
        let tm = TILE_ROWS.min(m - i);
        // SAFETY: A was bounds-checked by `blas`; the packed tile holds k × tn; the call writes rows
        // i..i + tm and columns j..j + tn of C, which no other call touches (β = 0: C is not read).
        unsafe {
            cblas_gemm_bf16bf16f32_compute(
                ROW_MAJOR,
                ba.trans,
                PACKED,
                tm as c_int,
                *tn as c_int,
                b.k as c_int,
                1.0,
                a.data.as_ptr().add(a.at(0, i, 0)).cast(),
                ba.ld as c_int,
                buf.as_ptr().cast(),
                b.k as c_int,
                0.0,
                out.get().add(i * b.n + j),
                b.n as c_int,
            )
        }
    });
    Ok(())
}

static PRODUCTS: AtomicU64 = AtomicU64::new(0);

/// How many products this process has asked MKL for (one per call, whatever its tiles), so that
/// tests can tell that a path really ran through MKL.
pub fn products() -> u64 {
    PRODUCTS.load(Ordering::Relaxed)
}

fn check<T>(d: Dims, a: &MatRef<T>, b: &MatRef<T>, c_len: usize) -> Result<(Blas, Blas), Error> {
    init();
    PRODUCTS.fetch_add(1, Ordering::Relaxed);
    for x in [d.m, d.n, d.k] {
        int(x)?;
    }
    if c_len != d.batch * d.m * d.n {
        return Err(Error::Output(c_len, d.batch * d.m * d.n));
    }
    Ok((a.blas(d.batch, d.m, d.k)?, b.blas(d.batch, d.k, d.n)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn naive<T: Copy + Into<f32>>(d: Dims, a: &MatRef<T>, b: &MatRef<T>) -> Vec<f64> {
        let mut c = vec![0f64; d.batch * d.m * d.n];
        for t in 0..d.batch {
            for i in 0..d.m {
                for j in 0..d.n {
                    c[(t * d.m + i) * d.n + j] = (0..d.k)
                        .map(|p| a.data[a.at(t, i, p)].into() as f64 * b.data[b.at(t, p, j)].into() as f64)
                        .sum();
                }
            }
        }
        c
    }

    fn data(len: usize, seed: u32) -> Vec<f32> {
        (0..len)
            .map(|i| (((i as u32).wrapping_mul(2654435761).wrapping_add(seed) >> 8) % 1000) as f32 / 500.0 - 1.0)
            .collect()
    }

    /// A batch of `rows × cols` matrices at offset 3, row- or column-major; `shared` makes every
    /// matrix of the batch the same one (batch stride 0).
    fn view(data: &[f32], batch: usize, rows: usize, cols: usize, trans: bool, shared: bool) -> MatRef<'_, f32> {
        let (row_stride, col_stride) = if trans { (1, rows) } else { (cols, 1) };
        let batch_stride = if shared { 0 } else { rows * cols };
        assert!(data.len() >= 3 + if shared { 1 } else { batch } * rows * cols);
        MatRef { data, offset: 3, batch_stride, row_stride, col_stride }
    }

    fn same_view<'a, T, U>(v: &MatRef<T>, data: &'a [U]) -> MatRef<'a, U> {
        MatRef {
            data,
            offset: v.offset,
            batch_stride: v.batch_stride,
            row_stride: v.row_stride,
            col_stride: v.col_stride,
        }
    }

    /// Runs a product into a fresh, uninitialised output of `len` elements.
    fn product<T>(len: usize, f: impl FnOnce(&mut [MaybeUninit<T>]) -> Result<(), Error>) -> Result<Vec<T>, Error> {
        let mut c = Vec::with_capacity(len);
        f(&mut c.spare_capacity_mut()[..len])?;
        // SAFETY: the product wrote all `len` elements.
        unsafe { c.set_len(len) };
        Ok(c)
    }

    fn close(got: &[f32], want: &[f64], what: &str) {
        assert_eq!(got.len(), want.len());
        for (g, w) in got.iter().zip(want) {
            assert!((*g as f64 - w).abs() < 1e-4 * (1.0 + w.abs()), "{what}: {g} vs {w}");
        }
    }

    #[test]
    fn every_layout_and_tile_edge_matches_a_naive_product() {
        // 700 rows and 1100 columns cross both tile edges.
        for &(batch, m, n, k) in &[(1, 700, 1100, 37), (3, 1, 5, 3), (2, 5, 1, 4), (2, 3, 4, 1), (2, 0, 3, 2)] {
            let d = Dims { batch, m, n, k };
            for (ta, tb, shared) in
                [(false, false, false), (true, false, true), (false, true, false), (true, true, true)]
            {
                let what = format!("{d:?} trans {ta} {tb}, shared B {shared}");
                let ad = data(3 + batch * m * k, 1);
                let bd = data(3 + batch * k * n, 2);
                let (a, b) = (view(&ad, batch, m, k, ta, false), view(&bd, batch, k, n, tb, shared));
                let c = product(batch * m * n, |c| gemm_f32(d, a, b, c)).unwrap();
                close(&c, &naive(d, &a, &b), &what);
                // bf16 inputs: the exact product of the rounded values, accumulated in f32.
                let ah: Vec<bf16> = ad.iter().map(|&x| bf16::from_f32(x)).collect();
                let bh: Vec<bf16> = bd.iter().map(|&x| bf16::from_f32(x)).collect();
                let (ah, bh) = (same_view(&a, &ah), same_view(&b, &bh));
                let c = product(batch * m * n, |c| gemm_bf16(d, ah, bh, c)).unwrap();
                close(&c, &naive(d, &ah, &bh), &format!("bf16 {what}"));
                let c16 = product(batch * m * n, |c| gemm_bf16_to_bf16(d, ah, bh, c)).unwrap();
                assert!(c16.iter().zip(&c).all(|(h, f)| *h == bf16::from_f32(*f)), "{what}");
            }
        }
    }

    #[test]
    fn accumulating_products_add_to_what_c_holds() {
        // 700 × 1100 crosses both tile edges; k = 40,000 would be cut along k by `gemm_f32`.
        for &(m, n, k) in &[(700, 1100, 37), (3, 5, 40_000), (2, 3, 0)] {
            let d = Dims { batch: 1, m, n, k };
            let (ad, bd) = (data(3 + m * k, 5), data(3 + k * n, 6));
            // Aᵀ stored (k × m), as the loss's gradient dᵀ · rows reads it.
            let (a, b) = (view(&ad, 1, m, k, true, false), view(&bd, 1, k, n, false, false));
            let start: Vec<f32> = data(m * n, 7);
            let mut want = naive(d, &a, &b);
            want.iter_mut().zip(&start).for_each(|(w, s)| *w += *s as f64);
            let mut c = start.clone();
            gemm_f32_acc(d, a, b, &mut c).unwrap();
            close(&c, &want, &format!("f32 acc {d:?}"));
            let ah: Vec<bf16> = ad.iter().map(|&x| bf16::from_f32(x)).collect();
            let bh: Vec<bf16> = bd.iter().map(|&x| bf16::from_f32(x)).collect();
            let (ah, bh) = (same_view(&a, &ah), same_view(&b, &bh));
            let mut want = naive(d, &ah, &bh);
            want.iter_mut().zip(&start).for_each(|(w, s)| *w += *s as f64);
            let mut c = start.clone();
            gemm_bf16_acc(d, ah, bh, &mut c).unwrap();
            // bf16 products of k = 40,000 terms: f32 accumulation, so a looser bound.
            for (g, w) in c.iter().zip(&want) {
                assert!((*g as f64 - w).abs() < 1e-4 * (1.0 + w.abs()) * (1.0 + k as f64 / 1000.0), "bf16 acc {d:?}");
            }
        }
        let mut short = vec![0f32; 3];
        let d = Dims { batch: 1, m: 2, n: 2, k: 1 };
        let x = data(4, 0);
        let v = MatRef { data: &x, offset: 0, batch_stride: 0, row_stride: 1, col_stride: 1 };
        assert_eq!(gemm_f32_acc(d, v, v, &mut short), Err(Error::Output(3, 4)));
    }

    #[test]
    fn bad_views_are_refused() {
        let d = data(12, 0);
        let dims = Dims { batch: 1, m: 2, n: 2, k: 2 };
        let v = |offset, row_stride, col_stride| MatRef { data: &d, offset, batch_stride: 0, row_stride, col_stride };
        let run = |dims: Dims, a, b, len| product(len, |c| gemm_f32(dims, a, b, c)).map(|_| ());
        assert_eq!(run(dims, v(0, 3, 2), v(0, 2, 1), 4), Err(Error::Strides((3, 2))));
        assert!(matches!(run(dims, v(10, 2, 1), v(0, 2, 1), 4), Err(Error::OutOfBounds { .. })));
        assert_eq!(run(dims, v(0, 2, 1), v(0, 2, 1), 3), Err(Error::Output(3, 4)));
        let two = Dims { batch: 2, ..dims };
        let past = MatRef { data: &d, offset: 0, batch_stride: 9, row_stride: 2, col_stride: 1 };
        assert!(matches!(run(two, past, v(0, 2, 1), 8), Err(Error::OutOfBounds { .. })));
    }

    #[test]
    fn a_product_does_not_depend_on_the_thread_count() {
        let d = Dims { batch: 2, m: 1300, n: 2100, k: 300 };
        let ad = data(3 + 2 * d.m * d.k, 5);
        let bd = data(3 + d.k * d.n, 6);
        let (a, b) = (view(&ad, 2, d.m, d.k, false, false), view(&bd, 2, d.k, d.n, true, true));
        let run = |threads| {
            let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
            pool.install(|| product(2 * d.m * d.n, |c| gemm_f32(d, a, b, c))).unwrap()
        };
        let one = run(1);
        assert_eq!(one, run(3));
        assert_eq!(one, run(7));
    }

    /// A product whose output is one tile over a long k (the loss's gradient through the output
    /// matrix) is cut along k: still the naive product, and the same bits at any thread count.
    #[test]
    fn a_long_inner_dimension_is_cut_into_blocks_whatever_the_threads() {
        let d = Dims { batch: 1, m: 7, n: 9, k: 2 * K_BLOCK + 1234 };
        assert!(tiles(d.batch, d.m, d.n, d.k).len() < K_SPLIT_BELOW_TILES);
        let ad = data(3 + d.m * d.k, 7);
        let bd = data(3 + d.k * d.n, 8);
        let (a, b) = (view(&ad, 1, d.m, d.k, false, false), view(&bd, 1, d.k, d.n, true, false));
        let ah: Vec<bf16> = ad.iter().map(|&x| bf16::from_f32(x)).collect();
        let bh: Vec<bf16> = bd.iter().map(|&x| bf16::from_f32(x)).collect();
        let (ah, bh) = (same_view(&a, &ah), same_view(&b, &bh));
        let run = |threads, bf16: bool| {
            let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
            pool.install(|| product(d.m * d.n, |c| if bf16 { gemm_bf16(d, ah, bh, c) } else { gemm_f32(d, a, b, c) }))
                .unwrap()
        };
        let (f, h) = (run(1, false), run(1, true));
        // Sums of 34,000 terms of size about 1/3: f32 rounding allows more than the default.
        let near = |got: &[f32], want: &[f64], what: &str| {
            for (g, w) in got.iter().zip(want) {
                assert!((*g as f64 - w).abs() < 2e-3 * (1.0 + w.abs()), "{what}: {g} vs {w}");
            }
        };
        near(&f, &naive(d, &a, &b), "f32");
        near(&h, &naive(d, &ah, &bh), "bf16");
        for threads in [2, 3, 7] {
            assert_eq!(f, run(threads, false), "f32 at {threads} threads");
            assert_eq!(h, run(threads, true), "bf16 at {threads} threads");
        }
    }

    /// A packed B gives the plain product's values, and each row the same bits at any row count
    /// and thread count.
    #[test]
    fn packed_products_match_plain_ones_and_do_not_depend_on_the_rows() {
        // Ten 256-column buffers and five 1,024-column ones, the last one partial each time.
        for (n, buffers) in [(2500, 10), (4100, 5)] {
            packed_product_case(640, n, buffers);
        }
    }

    fn packed_product_case(k: usize, n: usize, buffers: usize) {
        let wd = data(3 + n * k, 9);
        let wh: Vec<bf16> = wd.iter().map(|&x| bf16::from_f32(x)).collect();
        // B = Wᵀ of an (n, k) weight, as a linear layer reads it.
        let b = MatRef { data: &wh[..], offset: 3, batch_stride: 0, row_stride: 1, col_stride: k };
        let packed = PackedBf16::new(b, k, n).unwrap();
        assert_eq!(packed.dims(), (k, n));
        assert_eq!(packed.tiles.len(), buffers, "n = {n}");
        let ad = data(3 + 600 * k, 10);
        let ah: Vec<bf16> = ad.iter().map(|&x| bf16::from_f32(x)).collect();
        let run = |m: usize, threads: usize| {
            let a = MatRef { data: &ah[..], offset: 3, batch_stride: 0, row_stride: k, col_stride: 1 };
            let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
            pool.install(|| product(m * n, |c| gemm_bf16_packed(m, a, &packed, c))).unwrap()
        };
        let all = run(600, 2);
        let a = MatRef { data: &ah[..], offset: 3, batch_stride: 0, row_stride: k, col_stride: 1 };
        close(&all, &naive(Dims { batch: 1, m: 600, n, k }, &a, &b), "packed");
        for (m, threads) in [(1, 1), (2, 3), (16, 2), (37, 7), (600, 1)] {
            assert_eq!(run(m, threads)[..], all[..m * n], "n = {n}: {m} rows at {threads} threads");
        }
        // The output must fit the product.
        let err = product(5, |c| gemm_bf16_packed(1, a, &packed, c)).unwrap_err();
        assert_eq!(err, Error::Output(5, n));
    }

    #[test]
    fn version_names_onemkl() {
        assert!(version().contains("Math Kernel Library"), "{}", version());
    }
}
