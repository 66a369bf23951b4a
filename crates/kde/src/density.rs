//! Exact Gaussian-kernel log-densities through log-sum-exp.

use wide::f64x4;

/// A running log-sum-exp: log Σ exp(a_i) = max + ln(sum of exp(a_i − max)).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LogSumExp {
    max: f64,
    sum: f64,
}

impl Default for LogSumExp {
    fn default() -> Self {
        LogSumExp { max: f64::NEG_INFINITY, sum: 0.0 }
    }
}

impl LogSumExp {
    /// Adds the terms `a` (exponents) to the sum.
    pub fn add_all(&mut self, a: &[f64]) {
        let lanes = a.chunks_exact(4);
        let rest = lanes.remainder();
        let lane = |c: &[f64]| f64x4::new([c[0], c[1], c[2], c[3]]);
        let mut vmax = f64x4::splat(f64::NEG_INFINITY);
        for c in lanes.clone() {
            vmax = vmax.max(lane(c));
        }
        let batch_max =
            rest.iter().fold(vmax.to_array().into_iter().fold(f64::NEG_INFINITY, f64::max), |m, &v| m.max(v));
        if batch_max == f64::NEG_INFINITY {
            return;
        }
        if batch_max > self.max {
            // Rescale what we have to the new maximum.
            self.sum *= (self.max - batch_max).exp();
            self.max = batch_max;
        }
        // wide's exp is a vectorised Cody–Waite + degree-13 polynomial (VCL), accurate to about 1 ulp;
        // it returns 0 below e^−708, where every term is negligible next to the maximum's e^0 = 1.
        let m = f64x4::splat(self.max);
        let mut acc = f64x4::ZERO;
        for c in lanes {
            acc += (lane(c) - m).exp();
        }
        self.sum += acc.reduce_add() + rest.iter().map(|&v| (v - self.max).exp()).sum::<f64>();
    }

    /// The log of the sum (−∞ when empty).
    pub fn value(&self) -> f64 {
        self.max + self.sum.ln()
    }
}

/// −‖x − y‖² / (2h²) for every `point` (row-major, dimension `x.len()`), into `out`.
pub fn kernel_exponents(x: &[f64], points: &[f64], h: f64, out: &mut Vec<f64>) {
    let scale = -0.5 / (h * h);
    let d = x.len();
    out.clear();
    match d {
        2 => out.extend(points.chunks_exact(2).map(|p| {
            let (a, b) = (p[0] - x[0], p[1] - x[1]);
            scale * (a * a + b * b)
        })),
        3 => out.extend(points.chunks_exact(3).map(|p| {
            let (a, b, c) = (p[0] - x[0], p[1] - x[1], p[2] - x[2]);
            scale * (a * a + b * b + c * c)
        })),
        _ => out.extend(
            points.chunks_exact(d).map(|p| scale * p.iter().zip(x).map(|(u, v)| (u - v) * (u - v)).sum::<f64>()),
        ),
    }
}

/// ln of the normalising constant: −(D/2) ln(2πh²).
pub fn log_norm(dim: usize, h: f64) -> f64 {
    -0.5 * dim as f64 * (2.0 * std::f64::consts::PI * h * h).ln()
}

/// ln f(x) for the KDE on `points` (row-major) with bandwidth `h`:
/// f(x) = (1/N) Σ_i (2πh²)^(−D/2) exp(−‖x − x_i‖² / (2h²)), as scikit-learn's `score_samples`.
pub fn log_density(x: &[f64], points: &[f64], h: f64) -> f64 {
    let n = points.len() / x.len();
    let mut buf = Vec::with_capacity(n);
    kernel_exponents(x, points, h, &mut buf);
    let mut acc = LogSumExp::default();
    acc.add_all(&buf);
    acc.value() - (n as f64).ln() + log_norm(x.len(), h)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn running_sum_equals_one_pass() {
        let a: Vec<f64> = (0..100).map(|i| -((i * 37 % 101) as f64) * 0.7).collect();
        let mut one = LogSumExp::default();
        one.add_all(&a);
        let mut parts = LogSumExp::default();
        for c in a.chunks(7).rev() {
            parts.add_all(c);
        }
        let naive = a.iter().map(|v| v.exp()).sum::<f64>().ln();
        assert!((one.value() - naive).abs() < 1e-13 && (parts.value() - naive).abs() < 1e-13);
    }

    #[test]
    fn vectorised_sum_matches_libm() {
        // Exponents spread over [−800, 0]: the sum must equal the libm one to a few ulp.
        let a: Vec<f64> = (0..10_003).map(|i| -((i * 7919 % 10_007) as f64) * 0.08).collect();
        let mut acc = LogSumExp::default();
        acc.add_all(&a);
        let naive = a.iter().map(|v| v.exp()).sum::<f64>().ln();
        assert!((acc.value() - naive).abs() < 1e-14, "{} vs {naive}", acc.value());
        let mut worst = 0.0f64;
        for i in 0..200_000 {
            let x = -(i as f64) * 0.003_541_7;
            let ours = (f64x4::splat(x)).exp().to_array()[0];
            if x > -708.0 {
                worst = worst.max(((ours - x.exp()) / x.exp()).abs());
            }
        }
        assert!(worst < 5e-16, "worst relative error of the vector exp {worst:e}");
    }

    #[test]
    fn no_underflow_far_from_every_point() {
        // With h = 0.01 a point at distance 1 has exponent -5000: exp underflows, log-sum-exp does not.
        let v = log_density(&[0.0, 0.0], &[1.0, 0.0, 0.0, 1.0], 0.01);
        let expected = -5000.0 + log_norm(2, 0.01);
        assert!((v - expected).abs() < 1e-9, "{v} vs {expected}");
    }
}
