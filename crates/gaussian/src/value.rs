//! The value of synthetic data in the Gaussian setting: the toy counterpart of docs/protocol.md §5.
//!
//! Each seed draws one stream of real points from N(0, σ²I_d) (the same stream as generation 1
//! of a chain with that seed). A *source* is the Gaussian fitted (mean, ML covariance) on the
//! first `source_real` of those points, as the paper's source model is fine-tuned on the real
//! training split; it samples one stream of synthetic points. A cell (`num_real`,
//! `num_synthetic`) fits a Gaussian on the first `num_real` real and the first `num_synthetic`
//! synthetic points (prefixes, as the paper takes the first rows of each data set) and is scored
//! against the truth:
//!
//! - `kl`: KL(N(0, σ²I) ‖ N(μ̂, Σ̂)), the expected negative log-likelihood of real data under
//!   the fit minus the truth's entropy: the counterpart of the language model's validation
//!   cross-entropy. Lower is better.
//! - `mean_squared_error`: ‖μ̂‖².
//! - `covariance_error`: ‖Σ̂ − σ²I‖_F / ‖σ²I‖_F.
//!
//! Cells without synthetic points do not depend on the source: they are fitted once per seed
//! and carry `source_real = -1` (as the language-model grid writes `source = -1`).
//!
//! Theory (the mean, per coordinate, σ = 1; the covariance behaves alike): with n real and s
//! synthetic points from a source fitted on m real points that include the cell's (nested
//! prefixes), the fitted mean's variance is (n + s + 2 n s / m + s² / m) / (n + s)² when n ≤ m
//! and (n + 3 s + s² / m) / (n + s)² when n ≥ m, against 1 / n without synthetic points. So
//! synthetic points help at every amount when n ≤ m / 2, hurt at every amount when n ≥ m (the
//! source then knows nothing the cell's real points do not, and its sampling adds noise), and in
//! between help only in amounts above n (2n − m) / (m − n): the crossover lies between
//! m / 2 and m.
//!
//! Every stream is a function of the seed alone, so the results are the same for any thread
//! count; the cost is O((max num_real + max source_real + max num_synthetic) d² + cells · d³)
//! per seed and source, whatever the grid.

use crate::moments::Moments;
use crate::setting::{Gaussian, Root};
use faer::{Mat, Side};
use rand::Rng as _;
use rand_distr::StandardNormal;
use thrive_core::{par_map, Error, Params, Result, ResultsTable, RunRecord, Seeds, Stream};

/// The results' setting name.
pub const VALUE_SETTING: &str = "gaussian-value";

/// Metric columns of the value grid, in order (lower is better for each).
pub const VALUE_METRICS: [&str; 3] = ["kl", "mean_squared_error", "covariance_error"];

/// The stream the source samples its synthetic points from.
const SOURCE_STREAM: Stream = Stream::Custom(0x5641, 0);

/// Points drawn at once, and the unit in which prefix moments are merged.
const BLOCK: usize = 256;

/// A value-of-synthetic grid: dims × source_real × num_real × num_synthetic × seeds.
#[derive(Debug, Clone, PartialEq)]
pub struct ValueGrid {
    pub dims: Vec<usize>,
    pub sigma2: f64,
    pub num_real: Vec<usize>,
    pub num_synthetic: Vec<usize>,
    pub source_real: Vec<usize>,
    pub seeds: Vec<u64>,
    /// The square root used to sample from the source.
    pub root: Root,
}

fn no_repeats(name: &str, values: &[usize]) -> Result<()> {
    if values.is_empty() {
        return Err(Error::invalid(name, "needs at least one value"));
    }
    for (i, v) in values.iter().enumerate() {
        if values[..i].contains(v) {
            return Err(Error::invalid(name, format!("{v} appears twice")));
        }
    }
    Ok(())
}

impl ValueGrid {
    /// Checks every size before anything runs; errors name the parameter (`num-real`, ...).
    pub fn validate(&self) -> Result<()> {
        no_repeats("dim", &self.dims)?;
        for &d in &self.dims {
            Gaussian::new(d, self.sigma2)?;
        }
        no_repeats("num-real", &self.num_real)?;
        no_repeats("num-synthetic", &self.num_synthetic)?;
        no_repeats("source-real", &self.source_real)?;
        if self.seeds.is_empty() {
            return Err(Error::invalid("seeds", "selects no seed"));
        }
        let d = *self.dims.iter().max().expect("checked");
        if let Some(&m) = self.source_real.iter().find(|&&m| m <= d) {
            return Err(Error::invalid(
                "source-real",
                format!("a source fitted on {m} points is singular in d = {d} (it needs more than {d})"),
            ));
        }
        let r = *self.num_real.iter().min().expect("checked");
        let s = *self.num_synthetic.iter().min().expect("checked");
        if r + s <= d {
            let name = if r <= d { "num-real" } else { "num-synthetic" };
            return Err(Error::invalid(
                name,
                format!(
                    "the cell num_real = {r}, num_synthetic = {s} has {} points; a fit in d = {d} needs more than {d}",
                    r + s
                ),
            ));
        }
        if !self.num_synthetic.iter().any(|&s| s > 0) {
            return Err(Error::invalid("num-synthetic", "needs a value above 0 (else no cell has synthetic points)"));
        }
        Ok(())
    }

    /// Number of cells (result rows) the grid writes.
    pub fn cells(&self) -> usize {
        let with = self.num_synthetic.iter().filter(|&&s| s > 0).count();
        let without = self.num_synthetic.len() - with;
        self.dims.len() * self.seeds.len() * self.num_real.len() * (without + with * self.source_real.len())
    }

    /// Runs every cell (seeds in parallel) and returns the results, in a fixed order: by d,
    /// source_real (−1 first), num_real, num_synthetic and seed, as the lists give them.
    pub fn run(&self) -> Result<ResultsTable> {
        self.validate()?;
        let units: Vec<(usize, usize)> =
            (0..self.dims.len()).flat_map(|a| (0..self.seeds.len()).map(move |b| (a, b))).collect();
        let out = par_map(&units, |&(di, si)| self.run_seed(di, si));
        // (d index, source index + 1 or 0, num_real index, num_synthetic index, seed index)
        let mut cells: Vec<([usize; 5], RunRecord)> = Vec::with_capacity(self.cells());
        for records in out {
            cells.extend(records?);
        }
        cells.sort_by_key(|(k, _)| *k);
        let mut table = ResultsTable::new(VALUE_SETTING, VALUE_METRICS.iter().map(|s| s.to_string()).collect());
        for (_, record) in cells {
            table.push(record)?;
        }
        Ok(table)
    }

    /// Every cell of one (d, seed).
    fn run_seed(&self, di: usize, si: usize) -> Result<Vec<([usize; 5], RunRecord)>> {
        let d = self.dims[di];
        let seed = self.seeds[si];
        let g = Gaussian { root: self.root, ..Gaussian::new(d, self.sigma2)? };
        let seeds = Seeds::new(seed);
        let sigma = self.sigma2.sqrt();
        // Real prefixes: every num_real and every source_real, from one stream.
        let mut real_sizes: Vec<usize> = self.num_real.iter().chain(&self.source_real).copied().collect();
        real_sizes.sort_unstable();
        real_sizes.dedup();
        let mut rng = seeds.stream(Stream::RealData);
        let real = prefix_moments(d, &real_sizes, |n| {
            (0..n * d).map(|_| sigma * rng.sample::<f64, _>(StandardNormal)).collect()
        });
        let real_at = |n: usize| &real[real_sizes.binary_search(&n).expect("every size is in the list")];
        let mut synth_sizes: Vec<usize> = self.num_synthetic.iter().copied().filter(|&s| s > 0).collect();
        synth_sizes.sort_unstable();

        let mut out = Vec::new();
        let record = |nr: usize, ns: usize, source: i64, fit: &Moments| -> Result<RunRecord> {
            Ok(RunRecord {
                params: Params::new()
                    .with("num_real", nr)
                    .with("num_synthetic", ns)
                    .with("source_real", source)
                    .with("d", d)
                    .with("sigma2", self.sigma2),
                workflow: None,
                seed,
                metrics: value_metrics(&g, fit)?.to_vec(),
            })
        };
        for (ri, &nr) in self.num_real.iter().enumerate() {
            for (ci, &ns) in self.num_synthetic.iter().enumerate() {
                if ns == 0 {
                    out.push(([di, 0, ri, ci, si], record(nr, 0, -1, real_at(nr))?));
                }
            }
        }
        for (mi, &m) in self.source_real.iter().enumerate() {
            let source = g.fit_moments(real_at(m))?;
            let mut rng = seeds.stream(SOURCE_STREAM);
            let synth = prefix_moments(d, &synth_sizes, |n| {
                g.draw(&source.mean, source.root.as_ref(), n, &mut rng).as_slice().to_vec()
            });
            for (ri, &nr) in self.num_real.iter().enumerate() {
                for (ci, &ns) in self.num_synthetic.iter().enumerate() {
                    if ns == 0 {
                        continue;
                    }
                    let mut fit = real_at(nr).clone();
                    fit.merge(&synth[synth_sizes.binary_search(&ns).expect("every size is in the list")]);
                    out.push(([di, mi + 1, ri, ci, si], record(nr, ns, m as i64, &fit)?));
                }
            }
        }
        Ok(out)
    }
}

/// The moments of the first `sizes[i]` points of a stream (sizes ascending, without repeats).
///
/// `draw(BLOCK)` gives the next [`BLOCK`] row-major points. Moments are merged block by block
/// from the start of the stream, then with the part of the last block, so the moments of a prefix
/// (to the last bit) depend only on its length, never on the other sizes of the grid.
fn prefix_moments(d: usize, sizes: &[usize], mut draw: impl FnMut(usize) -> Vec<f64>) -> Vec<Moments> {
    let mut full = Moments::empty(d);
    let mut block: Vec<f64> = Vec::new();
    let mut out = Vec::with_capacity(sizes.len());
    for &n in sizes {
        // Complete blocks strictly before the one holding point n − 1 (or ending at n).
        while full.count + BLOCK <= n {
            if block.is_empty() {
                block = draw(BLOCK);
            }
            full.merge(&Moments::of_rows(d, &block));
            block.clear();
        }
        let rest = n - full.count;
        let mut m = full.clone();
        if rest > 0 {
            if block.is_empty() {
                block = draw(BLOCK);
            }
            m.merge(&Moments::of_rows(d, &block[..rest * d]));
        }
        out.push(m);
    }
    out
}

/// KL(N(0, σ²I) ‖ N(μ̂, Σ̂)), ‖μ̂‖² and ‖Σ̂ − σ²I‖_F / ‖σ²I‖_F of the ML fit to `m`
/// (KL is +∞ where Σ̂ is singular).
pub fn value_metrics(g: &Gaussian, m: &Moments) -> Result<[f64; 3]> {
    if m.count == 0 {
        return Err(Error::NothingToFit { model: "a Gaussian", data: "points" });
    }
    let d = g.dim;
    let cov = m.covariance();
    let s2 = g.sigma2;
    let mse: f64 = m.mean.iter().map(|x| x * x).sum();
    let frob: f64 = (0..d)
        .flat_map(|i| (0..d).map(move |j| (i, j)))
        .map(|(i, j)| (cov[(i, j)] - if i == j { s2 } else { 0.0 }).powi(2))
        .sum::<f64>()
        .sqrt();
    let cov_error = frob / (s2 * (d as f64).sqrt());
    Ok([kl_from_truth(&cov, &m.mean, s2), mse, cov_error])
}

/// KL(N(0, σ²I) ‖ N(μ, Σ)) = ½ [σ² tr Σ⁻¹ + μᵀΣ⁻¹μ − d + ln det Σ − d ln σ²], through Cholesky.
fn kl_from_truth(cov: &Mat<f64>, mean: &[f64], s2: f64) -> f64 {
    let d = mean.len();
    let Ok(llt) = cov.llt(Side::Lower) else {
        return f64::INFINITY;
    };
    let l = llt.L();
    // Forward substitution: L y = b.
    let solve = |b: &mut [f64]| {
        for i in 0..d {
            let mut v = b[i];
            for k in 0..i {
                v -= l[(i, k)] * b[k];
            }
            b[i] = v / l[(i, i)];
        }
    };
    let mut y = mean.to_vec();
    solve(&mut y);
    let maha: f64 = y.iter().map(|v| v * v).sum();
    // tr Σ⁻¹ = ‖L⁻¹‖_F², column by column.
    let mut trace_inv = 0.0;
    let mut e = vec![0.0; d];
    for j in 0..d {
        e.iter_mut().for_each(|v| *v = 0.0);
        e[j] = 1.0;
        solve(&mut e);
        trace_inv += e.iter().map(|v| v * v).sum::<f64>();
    }
    let log_det: f64 = 2.0 * (0..d).map(|i| l[(i, i)].ln()).sum::<f64>();
    let kl = 0.5 * (s2 * trace_inv + maha - d as f64 + log_det - d as f64 * s2.ln());
    if kl.is_finite() {
        kl.max(0.0)
    } else {
        f64::INFINITY
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kl_of_known_fits() {
        let g = Gaussian::new(2, 1.0).unwrap();
        // The truth itself: 0.
        let exact = Moments::unweighted(10, vec![0.0, 0.0], Mat::from_fn(2, 2, |i, j| if i == j { 10.0 } else { 0.0 }));
        let [kl, mse, ce] = value_metrics(&g, &exact).unwrap();
        assert!(kl.abs() < 1e-12 && mse == 0.0 && ce.abs() < 1e-12);
        // Mean (1, 0), covariance diag(2, 0.5): ½ [(½ + 2) + ½ − 2 + ln 1] = 0.5.
        let m = Moments::unweighted(2, vec![1.0, 0.0], Mat::from_fn(2, 2, |i, j| [[4.0, 0.0], [0.0, 1.0]][i][j]));
        let [kl, mse, ce] = value_metrics(&g, &m).unwrap();
        assert!((kl - 0.5).abs() < 1e-12, "{kl}");
        assert_eq!(mse, 1.0);
        assert!((ce - (1.25f64 / 2.0).sqrt()).abs() < 1e-12, "{ce}");
        // Singular: +∞.
        let flat =
            Moments::unweighted(2, vec![0.0, 0.0], Mat::from_fn(2, 2, |i, j| if i == 0 && j == 0 { 1.0 } else { 0.0 }));
        assert_eq!(value_metrics(&g, &flat).unwrap()[0], f64::INFINITY);
    }
}
