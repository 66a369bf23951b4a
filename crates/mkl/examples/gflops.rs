//! GFLOP/s of the two products on the LoRA job's shapes (rows = 8 sequences × 250 tokens, Gemma 3
//! 270M's widths): `cargo run --release -p thrive-mkl --example gflops`.
use half::bf16;
use std::time::Instant;
use thrive_mkl::{gemm_bf16, gemm_f32, Dims, MatRef};

fn main() {
    for &(m, n, k) in &[(2000, 16384, 640), (2000, 2048, 640), (2000, 640, 2048), (640, 2048, 2000)] {
        let d = Dims { batch: 1, m, n, k };
        let a: Vec<f32> = (0..m * k).map(|i| (i % 7) as f32 * 0.1).collect();
        let b: Vec<f32> = (0..k * n).map(|i| (i % 5) as f32 * 0.1).collect();
        let ah: Vec<bf16> = a.iter().map(|&x| bf16::from_f32(x)).collect();
        let bh: Vec<bf16> = b.iter().map(|&x| bf16::from_f32(x)).collect();
        let mut c = Vec::<f32>::with_capacity(m * n);
        let c = &mut c.spare_capacity_mut()[..m * n];
        // A row-major, B as the transposed view of an (n, k) weight, as a linear layer reads it.
        let ar = MatRef { data: &a[..], offset: 0, batch_stride: 0, row_stride: k, col_stride: 1 };
        let br = MatRef { data: &b[..], offset: 0, batch_stride: 0, row_stride: 1, col_stride: k };
        let ahr = MatRef { data: &ah[..], offset: 0, batch_stride: 0, row_stride: k, col_stride: 1 };
        let bhr = MatRef { data: &bh[..], offset: 0, batch_stride: 0, row_stride: 1, col_stride: k };
        let flop = 2.0 * (m * n * k) as f64;
        let rate = |f: &mut dyn FnMut()| {
            f();
            let t = Instant::now();
            for _ in 0..5 {
                f();
            }
            flop * 5.0 / t.elapsed().as_secs_f64() / 1e9
        };
        let f32_rate = rate(&mut || gemm_f32(d, ar, br, c).unwrap());
        let bf16_rate = rate(&mut || gemm_bf16(d, ahr, bhr, c).unwrap());
        println!("{m} × {n} × {k}: f32 {f32_rate:.0} GFLOP/s, bf16 → f32 {bf16_rate:.0} GFLOP/s");
    }
}
