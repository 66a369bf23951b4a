//! # thrive-discrete
//!
//! The authors' discrete-distribution setting (protocol §7): K outcomes, a uniform start,
//! n draws a generation, and the fit is the empirical frequencies. Under Replace this is
//! neutral Wright-Fisher drift: outcomes are lost one by one until one is left (fixation),
//! after about −2nK(1 − 1/K) ln(1 − 1/K) generations.
//!
//! - Batches and pools are counts per outcome, and a batch of n draws from a fit is one
//!   multinomial draw (sequential binomials on the integer counts, exact, O(K)), so a
//!   generation costs O(K) whatever n is. Accumulate-Subsample keeps the individual draws,
//!   since it subsamples them.
//! - Under Replace a run ends at fixation (an absorbing state, [`thrive_core::Setting::stop`]);
//!   `fixation_generation` is filled on every row of the run once it is known.
//!
//! The generation loop, workflows and seeding are thrive-core's.

mod error;
mod setting;

pub use error::DiscreteError;
pub use setting::{distorted_probabilities, grid_specs, theory_fixation, Batch, Discrete, DiscreteFit, Pool, METRICS};
