//! The KDE setting as a thrive-core [`Setting`].

use crate::bandwidth::Bandwidth;
use crate::datasets::{BlobsCentres, Dataset};
use crate::density::{kernel_exponents, log_norm, LogSumExp};
use rand::seq::SliceRandom;
use rand::Rng as _;
use rand_distr::StandardNormal;
use std::borrow::Cow;
use std::sync::Arc;
use thrive_core::{Error, Points, Result, Rng, Seeds, Selection, Setting, Stream, Workflow};

/// Metric columns: the mean test NLL and the bandwidth of the fit.
pub const METRICS: [&str; 2] = ["nll", "h"];

/// Size of the real test set (hard-coded in the authors' code).
pub const TEST_POINTS: usize = 500;

/// Where the real data come from.
#[derive(Debug, Clone)]
pub enum RealData {
    /// A scikit-learn generator: n training points, then 500 test points from a second call.
    Generator { dataset: Dataset, centres: BlobsCentres },
    /// Users' points: every run splits them into training and test sets (seeded).
    File { name: String, points: Arc<Points>, test_fraction: f64 },
}

/// A KDE setting: real data and bandwidth rule.
#[derive(Debug, Clone)]
pub struct Kde {
    pub data: RealData,
    pub bandwidth: Bandwidth,
}

/// Per-run state: the real test set.
pub struct Run {
    test: Points,
}

/// The pool's points, and, with a fixed bandwidth and every point in the fit,
/// a running log-sum-exp of the kernel terms per test point.
pub struct Pool {
    points: Points,
    carried: Option<Carried>,
}

/// Kernel sums carried forward: one log-sum-exp per test point over every pool point.
struct Carried {
    test: Points,
    h: f64,
    sums: Vec<LogSumExp>,
}

/// A fitted KDE: its points, bandwidth and test NLL.
pub struct Fit<'a> {
    points: Cow<'a, Points>,
    h: f64,
    nll: f64,
}

impl Kde {
    pub fn new(data: RealData, bandwidth: Bandwidth) -> Result<Self> {
        if let Bandwidth::Fixed(h) | Bandwidth::Schedule { h1: h, .. } = bandwidth {
            if !(h > 0.0 && h.is_finite()) {
                return Err(Error::invalid("bandwidth", format!("{h} is not a positive number")));
            }
        }
        Ok(Kde { data, bandwidth })
    }

    pub fn dim(&self) -> usize {
        match &self.data {
            RealData::Generator { dataset, .. } => dataset.dim(),
            RealData::File { points, .. } => points.dim(),
        }
    }

    /// The number of training points a run of this setting has (users' data fix it).
    pub fn training_size(&self) -> Option<usize> {
        match &self.data {
            RealData::Generator { .. } => None,
            RealData::File { points, test_fraction, .. } => {
                Some(points.len() - test_size(points.len(), *test_fraction))
            }
        }
    }

    /// Mean NLL of the test set under the KDE whose kernel sums are `sums`.
    fn nll_from_sums(&self, sums: &[LogSumExp], points: usize, h: f64) -> f64 {
        let c = log_norm(self.dim(), h) - (points as f64).ln();
        -sums.iter().map(|s| s.value() + c).sum::<f64>() / sums.len() as f64
    }

    fn sums_over(&self, test: &Points, points: &Points, h: f64) -> Vec<LogSumExp> {
        let mut buf = Vec::with_capacity(points.len());
        test.rows()
            .map(|x| {
                kernel_exponents(x, points.as_slice(), h, &mut buf);
                let mut acc = LogSumExp::default();
                acc.add_all(&buf);
                acc
            })
            .collect()
    }
}

fn test_size(total: usize, fraction: f64) -> usize {
    ((total as f64 * fraction).round() as usize).clamp(1, total.saturating_sub(1).max(1))
}

impl Setting for Kde {
    type Run = Run;
    type Batch = Points;
    type Pool = Pool;
    type Model<'a> = Fit<'a>;

    fn metric_names(&self) -> Vec<String> {
        METRICS.iter().map(|s| s.to_string()).collect()
    }

    fn start(&self, seeds: &Seeds, n: usize) -> Result<(Run, Points)> {
        match &self.data {
            RealData::Generator { dataset, centres } => {
                let shared = (*centres == BlobsCentres::Shared && *dataset == Dataset::Blobs)
                    .then(|| Dataset::blob_centres(&mut seeds.stream(Stream::Setup)));
                let train = dataset.sample(n, &mut seeds.stream(Stream::RealData), shared.as_ref());
                let test = dataset.sample(TEST_POINTS, &mut seeds.stream(Stream::TestData), shared.as_ref());
                Ok((Run { test }, train))
            }
            RealData::File { points, test_fraction, .. } => {
                let mut order: Vec<usize> = (0..points.len()).collect();
                order.shuffle(&mut seeds.stream(Stream::TestData));
                let k = test_size(points.len(), *test_fraction);
                let test = points.select(&order[..k]);
                let train = points.select(&order[k..]);
                if train.len() != n {
                    return Err(Error::invalid("n", format!("the data give {} training points, not {n}", train.len())));
                }
                Ok((Run { test }, train))
            }
        }
    }

    fn batch_len(&self, batch: &Points) -> usize {
        batch.len()
    }

    fn batch_head(&self, batch: &Points, k: usize) -> Result<Points> {
        Ok(batch.head(k))
    }

    fn new_pool(&self, run: &Run, workflow: Workflow) -> Pool {
        // Carried-forward sums pay off whenever every pool point is in the fit with the same h.
        let carried = match self.bandwidth {
            Bandwidth::Fixed(h) if !workflow.subsamples() => {
                Some(Carried { test: run.test.clone(), h, sums: vec![LogSumExp::default(); run.test.len()] })
            }
            _ => None,
        };
        Pool { points: Points::empty(self.dim()), carried }
    }

    fn push(&self, pool: &mut Pool, batch: &Points) -> Result<()> {
        batch.check_finite("synthetic points")?;
        if let Some(c) = &mut pool.carried {
            // O(batch · n_test): the only kernel evaluations this generation needs.
            let mut buf = Vec::with_capacity(batch.len());
            for (x, acc) in c.test.rows().zip(&mut c.sums) {
                kernel_exponents(x, batch.as_slice(), c.h, &mut buf);
                acc.add_all(&buf);
            }
        }
        pool.points.extend(batch);
        Ok(())
    }

    fn clear(&self, pool: &mut Pool) {
        pool.points.clear();
        if let Some(c) = &mut pool.carried {
            c.sums.iter_mut().for_each(|s| *s = LogSumExp::default());
        }
    }

    fn pool_len(&self, pool: &Pool) -> usize {
        pool.points.len()
    }

    fn fit<'a>(&'a self, run: &'a Run, pool: &'a Pool, selection: Selection<'_>, generation: u32) -> Result<Fit<'a>> {
        let points: Cow<'a, Points> = match selection {
            Selection::All => Cow::Borrowed(&pool.points),
            Selection::Indices(idx) => Cow::Owned(pool.points.select(idx)),
        };
        if points.is_empty() {
            return Err(Error::Setting("cannot fit a KDE to no points".into()));
        }
        let h = self.bandwidth.at(points.len(), self.dim(), generation);
        let nll = match (&pool.carried, selection) {
            (Some(c), Selection::All) => self.nll_from_sums(&c.sums, points.len(), c.h),
            _ => self.nll_from_sums(&self.sums_over(&run.test, &points, h), points.len(), h),
        };
        Ok(Fit { points, h, nll })
    }

    fn evaluate(&self, _run: &Run, model: &Fit<'_>, out: &mut Vec<f64>) -> Result<()> {
        out.extend([model.nll, model.h]);
        Ok(())
    }

    fn sample(&self, model: &Fit<'_>, n: usize, rng: &mut Rng) -> Result<Points> {
        // NumPy: one uniform draw per sample picks the centre, then normal(centre, h).
        let count = model.points.len();
        let picks: Vec<usize> =
            (0..n).map(|_| ((rng.random::<f64>() * count as f64) as usize).min(count - 1)).collect();
        let mut out = Points::with_capacity(model.points.dim(), n);
        for &i in &picks {
            let row: Vec<f64> =
                model.points.row(i).iter().map(|c| c + model.h * rng.sample::<f64, _>(StandardNormal)).collect();
            out.push_row(&row);
        }
        Ok(out)
    }
}
