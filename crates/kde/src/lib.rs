//! # thrive-kde
//!
//! The paper's second setting (docs/protocol.md §3): Gaussian kernel density
//! estimates with an isotropic bandwidth, fitted on the training set each
//! generation and resampled (pick a fitted point uniformly, add N(0, h²I)).
//! The metric is the mean negative log-likelihood of a 500-point real test
//! set, computed exactly with log-sum-exp so that h = 0.01 does not underflow
//! and h = 100 does not overflow.
//!
//! - [`datasets`]: scikit-learn's blobs, circles, moons and swiss roll, with
//!   the authors' blobs quirk (test data from different centres) by default
//!   and a corrected mode with shared centres.
//! - [`Bandwidth`]: fixed, Scott, Silverman (on the N points of the current
//!   fit, scikit-learn ≥ 1.2 semantics) and schedules h_t = h₁ t^(−α).
//! - [`Kde`]: the thrive-core [`thrive_core::Setting`]. With a fixed bandwidth
//!   a pool carries, per test point, a running log-sum-exp of the kernel terms,
//!   so a generation costs O(n · n_test) however large the pool grows.
//! - [`data`]: users' own points from CSV or Parquet.
//!
//! The generation loop, workflows and seeding are thrive-core's.

pub mod bandwidth;
pub mod data;
pub mod datasets;
mod density;
mod setting;

pub use bandwidth::Bandwidth;
pub use datasets::{BlobsCentres, Dataset};
pub use density::{log_density, LogSumExp};
pub use setting::{Kde, RealData, METRICS};
