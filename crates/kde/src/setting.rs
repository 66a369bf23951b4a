//! The KDE setting as a thrive-core [`Setting`].

use crate::bandwidth::Bandwidth;
use crate::datasets::{BlobsCentres, Dataset};
use crate::density::{kernel_exponents, log_density, log_norm, LogSumExp};
use rand::seq::SliceRandom;
use rand::Rng as _;
use rand_distr::StandardNormal;
use std::borrow::Cow;
use std::sync::Arc;
use thrive_core::workflow::subsample_indices;
use thrive_core::{Draws, Error, Knobs, Points, Result, Rng, Seeds, Selection, Setting, Stream, Workflow};

/// Metric columns: the mean test NLL, the bandwidth of the fit, and `tail_nll`, the mean NLL
/// of the tenth of the test points (rounded up) with the lowest density under generation 1's
/// fit (the KDE of the real training data): collapse shows in the tails first. The tail is
/// chosen from the real data alone and consumes no random numbers.
pub const METRICS: [&str; 3] = ["nll", "h", "tail_nll"];

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

/// Per-run state: the real test set and its low-density tail.
pub struct Run {
    test: Points,
    /// Indices of the test points in the tail (see [`METRICS`]).
    tail: Vec<usize>,
    /// Blob centres shared by every call of a run (`--blobs shared`), for fresh real data.
    centres: Option<[[f64; 2]; 3]>,
    /// Generation 1's fit (the real training points and their bandwidth), the verifier's model.
    first: (Points, f64),
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

/// A fitted KDE: its points, bandwidth, test NLL and tail NLL.
pub struct Fit<'a> {
    points: Cow<'a, Points>,
    h: f64,
    nll: f64,
    tail_nll: f64,
    /// Generation 1's fit, for the verifier.
    first: &'a (Points, f64),
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

    /// Mean NLL of the test set under the KDE whose kernel sums are `sums`, and of its `tail`.
    fn nll_from_sums(&self, sums: &[LogSumExp], tail: &[usize], points: usize, h: f64) -> (f64, f64) {
        let c = log_norm(self.dim(), h) - (points as f64).ln();
        let nll = -sums.iter().map(|s| s.value() + c).sum::<f64>() / sums.len() as f64;
        let tail_nll = -tail.iter().map(|&i| sums[i].value() + c).sum::<f64>() / tail.len() as f64;
        (nll, tail_nll)
    }

    /// The tenth of the test points (rounded up) with the lowest density under the KDE of the
    /// real training data with generation 1's bandwidth; ties by index.
    fn tail(&self, test: &Points, train: &Points) -> Vec<usize> {
        let h = self.bandwidth.at(train.len(), self.dim(), 1);
        let logs: Vec<f64> = self.sums_over(test, train, h).iter().map(LogSumExp::value).collect();
        let mut order: Vec<usize> = (0..test.len()).collect();
        order.sort_by(|&a, &b| logs[a].total_cmp(&logs[b]).then(a.cmp(&b)));
        order.truncate(test.len().div_ceil(10));
        order
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
                let tail = self.tail(&test, &train);
                let first = (train.clone(), self.bandwidth.at(train.len(), self.dim(), 1));
                Ok((Run { test, tail, centres: shared, first }, train))
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
                let tail = self.tail(&test, &train);
                let first = (train.clone(), self.bandwidth.at(train.len(), self.dim(), 1));
                Ok((Run { test, tail, centres: None, first }, train))
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
        let (nll, tail_nll) = match (&pool.carried, selection) {
            (Some(c), Selection::All) => self.nll_from_sums(&c.sums, &run.tail, points.len(), c.h),
            _ => self.nll_from_sums(&self.sums_over(&run.test, &points, h), &run.tail, points.len(), h),
        };
        Ok(Fit { points, h, nll, tail_nll, first: &run.first })
    }

    fn evaluate(&self, _run: &Run, model: &Fit<'_>, out: &mut Vec<f64>) -> Result<()> {
        out.extend([model.nll, model.h, model.tail_nll]);
        Ok(())
    }

    fn batch_pick(&self, batch: &Points, k: usize, rng: &mut Rng) -> Result<Points> {
        Ok(batch.select(&subsample_indices(rng, batch.len(), k)?))
    }

    /// m new points from the generator (a new call, as the test set is).
    fn fresh_real(&self, run: &Run, m: usize, rng: &mut Rng) -> Result<Points> {
        match &self.data {
            RealData::Generator { dataset, .. } => Ok(dataset.sample(m, rng, run.centres.as_ref())),
            RealData::File { name, .. } => {
                Err(Error::invalid("fresh-real", format!("the dataset {name} is a fixed sample")))
            }
        }
    }

    fn check_knobs(&self, knobs: &Knobs, _workflow: Workflow) -> Result<()> {
        if let (true, RealData::File { name, .. }) = (knobs.fresh() > 0, &self.data) {
            return Err(Error::invalid(
                "fresh-real",
                format!("the dataset {name} is a fixed sample: there are no new real points to draw"),
            ));
        }
        if knobs.top_p != 1.0 {
            return Err(Error::invalid("top-p", "is for the discrete setting; use --truncate for KDEs"));
        }
        Ok(())
    }

    /// Temperature τ scales the sampling bandwidth to τh. A draw is redrawn, centre and noise,
    /// up to the knobs' draw limit, when
    /// - truncation: its kernel noise lies farther than k from its centre (Mahalanobis distance
    ///   under the fit's kernel, τ‖z‖);
    /// - the verifier: its log-density under generation 1's KDE (the real data's) is below c.
    fn sample_distorted(
        &self,
        model: &Fit<'_>,
        n: usize,
        knobs: &Knobs,
        rng: &mut Rng,
        draws: &mut Draws,
    ) -> Result<Points> {
        let tau = knobs.temperature;
        if !knobs.truncate.is_finite() && !knobs.selects() {
            draws.add(n, n);
            return self.sample(&Fit { points: Cow::Borrowed(&*model.points), h: tau * model.h, ..*model }, n, rng);
        }
        let (count, dim) = (model.points.len(), model.points.dim());
        let mut out = Points::with_capacity(dim, n);
        let mut z = vec![0.0; dim];
        let limit = knobs.draw_limit(n);
        let mut made = 0;
        while out.len() < n {
            if made == limit {
                return Err(knobs.unfilled(out.len(), n, made));
            }
            made += 1;
            let i = ((rng.random::<f64>() * count as f64) as usize).min(count - 1);
            z.iter_mut().for_each(|v| *v = rng.sample(StandardNormal));
            if tau * z.iter().map(|v| v * v).sum::<f64>().sqrt() > knobs.truncate {
                continue;
            }
            let row: Vec<f64> = model.points.row(i).iter().zip(&z).map(|(c, v)| c + tau * model.h * v).collect();
            // The verifier: the log-density under generation 1's KDE must reach c.
            if knobs.selects() && log_density(&row, model.first.0.as_slice(), model.first.1) < knobs.select_threshold {
                continue;
            }
            out.push_row(&row);
        }
        draws.add(made, n);
        Ok(out)
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
