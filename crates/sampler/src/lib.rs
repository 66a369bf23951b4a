//! Synthetic data from a fine-tuned model (docs/protocol.md §4.3).
//!
//! [`generate`] decodes many sequences at once with a KV cache, left-padding prompts so that a
//! row's tokens do not depend on the rest of its batch. Every sample draws from its own random
//! stream, keyed by (call seed, sample index), so neither the batch size nor the order of the
//! samples changes what is sampled. [`synthesize`] turns generations into (prompt, response)
//! rows: the paper's unconditional mode (from `<bos>` alone, parsed back with its filter) or a
//! prompt-conditioned mode (real prompts, synthetic responses), with every accepted row carrying
//! the pool's provenance columns.

mod error;
mod generate;
mod synthesize;

pub use error::{Error, Result};
pub use generate::{choose_token, generate, sample_rng, SamplerSettings};
pub use synthesize::{file_sha256, synthesize, Mode, Origin, Synthesized};
