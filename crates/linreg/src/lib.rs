//! # thrive-linreg
//!
//! The authors' linear-regression setting (protocol §6): w* ~ N(0, I_d), a fixed design
//! X₀ (n × d, iid N(0, 1)), labels y = X₀w* + σε; each generation fits minimum-norm least
//! squares (the pseudo-inverse) and relabels the same design with the fit plus fresh noise.
//! The metric is the mean squared error on 1,000 noiseless test points.
//!
//! - Replace and Accumulate only ever fit copies of X₀: Accumulate's design is t stacked
//!   copies, and pinv(1_t ⊗ X₀) = (1/t) 1_tᵀ ⊗ pinv(X₀), so its fit is pinv(X₀) applied to
//!   the mean label vector. pinv(X₀) is computed once per run (a thin SVD) and a generation
//!   costs O(n d) instead of an SVD of the growing t·n × d stack.
//! - Accumulate-Subsample fits a subsample of the stacked rows (duplicated rows of X₀
//!   allowed), so it solves a fresh n × d least-squares problem by SVD every generation.
//! - The pseudo-inverse drops singular values below max(rows, d)·ε·σ_max, numpy's and
//!   faer's default, so n ≤ d fits are the minimum-norm ones.
//!
//! The generation loop, workflows and seeding are thrive-core's.

mod error;
mod setting;

pub use error::LinRegError;
pub use setting::{grid_specs, paper_grid, theory_mse, Batch, LinReg, LinRegFit, Pool, Run, METRICS, TEST_POINTS};
