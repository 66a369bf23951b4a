//! Sample moments of a set of points, mergeable batch by batch.

use faer::linalg::matmul::matmul;
use faer::{Accum, Mat, MatRef, Par};

/// Count, weight, mean and M2 = Σ w(x − mean)(x − mean)ᵀ of a set of points in R^d.
///
/// Points weigh 1 unless they are real data under `--real-weight` (frequency weights: a point
/// of weight w counts as w points). Without weights `weight` is `count` exactly, so every
/// formula gives what it gave before weights existed.
#[derive(Debug, Clone)]
pub struct Moments {
    pub count: usize,
    /// Σ w over the points (the effective number of points).
    pub weight: f64,
    pub mean: Vec<f64>,
    /// d × d, symmetric.
    pub m2: Mat<f64>,
}

impl Moments {
    /// The moments of no points.
    pub fn empty(dim: usize) -> Self {
        Moments { count: 0, weight: 0.0, mean: vec![0.0; dim], m2: Mat::zeros(dim, dim) }
    }

    /// Moments of `count` points of weight 1 each.
    pub fn unweighted(count: usize, mean: Vec<f64>, m2: Mat<f64>) -> Self {
        Moments { count, weight: count as f64, mean, m2 }
    }

    /// Moments of row-major points that each weigh `weight`: the mean of [`Moments::of_rows`]
    /// and its M2 scaled by the weight.
    pub fn of_rows_weighing(dim: usize, data: &[f64], weight: f64) -> Self {
        let mut m = Self::of_rows(dim, data);
        if weight != 1.0 {
            m.weight *= weight;
            let d = m.m2.nrows();
            m.m2 = Mat::from_fn(d, d, |i, j| weight * m.m2[(i, j)]);
        }
        m
    }

    /// Moments of row-major points with one weight each.
    pub fn of_weighted_rows(dim: usize, data: &[f64], weights: &[f64]) -> Self {
        assert_eq!(weights.len(), data.len() / dim, "one weight per point");
        Self::two_pass(dim, data, Some(weights))
    }

    /// Moments of `n` row-major points of dimension `dim` (two passes: mean, then centred products).
    pub fn of_rows(dim: usize, data: &[f64]) -> Self {
        Self::two_pass(dim, data, None)
    }

    /// The mean, then M2 from the centred points (scaled by √w where weighted). Unit weights
    /// take no multiplications, so unweighted moments are what they were before weights.
    fn two_pass(dim: usize, data: &[f64], weights: Option<&[f64]>) -> Self {
        let n = data.len() / dim;
        if n == 0 {
            return Self::empty(dim);
        }
        let mut mean = vec![0.0; dim];
        for (r, row) in data.chunks_exact(dim).enumerate() {
            let w = weights.map(|w| w[r]);
            for (m, x) in mean.iter_mut().zip(row) {
                *m += w.map_or(*x, |w| w * x);
            }
        }
        let total = weights.map_or(n as f64, |w| w.iter().sum());
        mean.iter_mut().for_each(|m| *m /= total);
        let mut centred = data.to_vec();
        for (r, row) in centred.chunks_exact_mut(dim).enumerate() {
            let s = weights.map(|w| w[r].sqrt());
            for (x, m) in row.iter_mut().zip(&mean) {
                *x = s.map_or(*x - m, |s| s * (*x - m));
            }
        }
        // Row-major n × d is column-major d × n: each column one centred point.
        let xt = MatRef::from_column_major_slice(&centred, dim, n);
        let mut m2 = Mat::zeros(dim, dim);
        matmul(m2.as_mut(), Accum::Replace, xt, xt.transpose(), 1.0, Par::Seq);
        Moments { count: n, weight: total, mean, m2 }
    }

    /// Merges `other` into `self` (Chan, Golub and LeVeque's pairwise update).
    pub fn merge(&mut self, other: &Moments) {
        if other.count == 0 {
            return;
        }
        if self.count == 0 {
            *self = other.clone();
            return;
        }
        let (na, nb) = (self.weight, other.weight);
        let n = na + nb;
        let delta: Vec<f64> = other.mean.iter().zip(&self.mean).map(|(b, a)| b - a).collect();
        let w = na * nb / n;
        let d = self.mean.len();
        for j in 0..d {
            for i in 0..d {
                self.m2[(i, j)] += other.m2[(i, j)] + w * delta[i] * delta[j];
            }
        }
        for (m, dl) in self.mean.iter_mut().zip(&delta) {
            *m += dl * nb / n;
        }
        self.count += other.count;
        self.weight += other.weight;
    }

    /// The maximum-likelihood covariance M2 / Σw (numpy's `cov(bias=True)`, with `fweights`
    /// under weights).
    pub fn covariance(&self) -> Mat<f64> {
        let n = if self.weight > 0.0 { self.weight } else { 1.0 };
        Mat::from_fn(self.m2.nrows(), self.m2.ncols(), |i, j| self.m2[(i, j)] / n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn naive_cov(dim: usize, data: &[f64]) -> (Vec<f64>, Vec<f64>) {
        let n = data.len() / dim;
        let mean: Vec<f64> = (0..dim).map(|j| data.chunks(dim).map(|r| r[j]).sum::<f64>() / n as f64).collect();
        let mut cov = vec![0.0; dim * dim];
        for r in data.chunks(dim) {
            for i in 0..dim {
                for j in 0..dim {
                    cov[i * dim + j] += (r[i] - mean[i]) * (r[j] - mean[j]) / n as f64;
                }
            }
        }
        (mean, cov)
    }

    #[test]
    fn merged_batches_equal_the_whole() {
        let dim = 3;
        let data: Vec<f64> = (0..3 * 37).map(|i| ((i * 7919) % 101) as f64 / 10.0 - 5.0 + 1e3).collect();
        let mut merged = Moments::empty(dim);
        for chunk in data.chunks(3 * 5) {
            merged.merge(&Moments::of_rows(dim, chunk));
        }
        let (mean, cov) = naive_cov(dim, &data);
        let c = merged.covariance();
        assert_eq!(merged.count, 37);
        for i in 0..dim {
            assert!((merged.mean[i] - mean[i]).abs() < 1e-9);
            for j in 0..dim {
                assert!((c[(i, j)] - cov[i * dim + j]).abs() < 1e-9, "{i} {j}");
            }
        }
    }

    #[test]
    fn weights_count_as_copies() {
        // Weight 3 on the first 4 points equals those points three times over, by any route.
        let dim = 2;
        let data: Vec<f64> = (0..2 * 9).map(|i| ((i * 37) % 23) as f64 / 7.0 - 1.0).collect();
        let (head, tail) = data.split_at(2 * 4);
        let copies: Vec<f64> = [head, head, head, tail].concat();
        let (mean, cov) = naive_cov(dim, &copies);
        let weights: Vec<f64> = (0..9).map(|i| if i < 4 { 3.0 } else { 1.0 }).collect();
        let mut merged = Moments::of_rows_weighing(dim, head, 3.0);
        merged.merge(&Moments::of_rows(dim, tail));
        for m in [Moments::of_weighted_rows(dim, &data, &weights), merged] {
            assert_eq!((m.count, m.weight), (9, 17.0));
            let c = m.covariance();
            for i in 0..dim {
                assert!((m.mean[i] - mean[i]).abs() < 1e-12);
                for j in 0..dim {
                    assert!((c[(i, j)] - cov[i * dim + j]).abs() < 1e-12, "{i} {j}");
                }
            }
        }
        // Unit weights are the unweighted moments.
        let ones = Moments::of_weighted_rows(dim, &data, &[1.0; 9]);
        let plain = Moments::of_rows(dim, &data);
        assert_eq!((ones.weight, ones.mean.clone()), (plain.weight, plain.mean.clone()));
    }

    #[test]
    fn tiny_spread_around_large_mean_is_exact() {
        // Variance 1e-20 around a mean of 1: raw second moments would cancel to noise.
        let data: Vec<f64> = (0..100).map(|i| 1.0 + if i % 2 == 0 { 1e-10 } else { -1e-10 }).collect();
        let mut m = Moments::empty(1);
        for chunk in data.chunks(10) {
            m.merge(&Moments::of_rows(1, chunk));
        }
        let var = m.covariance()[(0, 0)];
        assert!((var - 1e-20).abs() < 1e-26, "{var}");
    }
}
