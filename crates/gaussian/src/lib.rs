//! # thrive-gaussian
//!
//! The paper's first setting (docs/protocol.md §2): the true distribution is
//! N(0, σ²I_d); each generation fits the sample mean and the
//! maximum-likelihood covariance (1/N) and samples n points from the fit.
//!
//! - Sampling goes through a square root R of Σ̂ (X = Z Rᵀ + μ̂): by default the
//!   Cholesky factor, and the symmetric eigendecomposition Σ̂ = U Λ Uᵀ (R = U Λ^½)
//!   wherever Cholesky fails, because Σ̂ is singular whenever the fit has at most
//!   d points and becomes numerically singular under Replace. `--root eigen` uses
//!   the eigendecomposition always. Any square root gives the same distribution.
//! - The cost of a generation does not grow with the pool: pools keep
//!   (count, mean, M2 = Σ(x−mean)(x−mean)ᵀ) and merge each new batch with
//!   Chan et al.'s pairwise update, which stays exact when the covariance
//!   has collapsed to 1e-10 while the mean is O(1) (Σxxᵀ/N − μμᵀ would not).
//!   Only Accumulate-Subsample keeps the raw points, since it refits on a
//!   fresh subsample every generation.
//! - Under Accumulate and Replace the pool needs only the moments of each
//!   synthetic batch, and for n > d those can be drawn directly: the sample
//!   mean is N(μ̂, Σ̂/n) and M2 is Wishart(Σ̂, n − 1) (Bartlett). That is exact
//!   in distribution and costs O(d³) instead of O(n d²) per generation.
//!   `Gaussian::sample_points` (`--sample-points`) draws the points instead.
//! - faer is built without rayon: each fit runs on one thread and runs go in
//!   parallel (thrive_core::run_grid), so results do not depend on threads.
//!
//! The generation loop, workflows and seeding are thrive-core's. [`ValueGrid`] is the
//! value-of-synthetic-data grid (docs/protocol.md §5) on Gaussians: real points plus points sampled
//! from a Gaussian fitted on `source_real` real points.

mod error;
mod moments;
mod setting;
pub mod spectrum;
mod value;

pub use error::GaussianError;
pub use moments::Moments;
pub use setting::{grid_specs, paper_grid, Batch, Gaussian, GaussianFit, Pool, Root, METRICS};
pub use value::{value_metrics, ValueGrid, VALUE_METRICS, VALUE_SETTING};
