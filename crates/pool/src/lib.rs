//! # thrive-pool
//!
//! The data pool of a multi-generation language-model run: every example a run sees, the real
//! data and each generation's synthetic data, with where it came from. A pool is a directory:
//!
//! ```text
//! pool.json                                   manifest: schema version, files, row counts, SHA-256
//! real/train.parquet, real/validation.parquet real data, shared by every chain
//! synthetic/<workflow>/chain-<seed>/gen-0003.parquet   what generation 3's model of that chain sampled
//! .lock                                       present while a writer commits (host + PID of its owner)
//! ```
//!
//! Batches are immutable once committed. A write goes to a temporary file, is fsynced and renamed,
//! and only then is the manifest (written the same way) updated, so a crash at any point leaves
//! the last consistent pool readable, and no committed batch is ever lost. Many writers (jobs on
//! a cluster) may write different batches of one pool at once: only the commit itself takes the
//! lock, and readers see exactly the whole batches the manifest lists.
//!
//! [`Pool::view`] answers "which examples does generation t train on?" for every workflow of
//! [`thrive_core::Workflow`] (with its subsample rule and seeding stream) and for the
//! value-of-synthetic grid's [`View::Mix`], streaming Arrow record batches without copying the pool.
//!
//! This crate must not know about models or training: it stores text and provenance.

mod error;
mod id;
pub mod import;
mod inspect;
mod manifest;
mod schema;
mod store;
mod view;

pub use error::{Error, Result};
pub use id::example_id;
pub use import::{import_file, ColumnMapping, HubSource, TokenCounter};
pub use inspect::{BatchSummary, ExportFormat, Summary, TokenSummary};
pub use manifest::{BatchKey, FileEntry, PoolManifest, Source, VALUE_SOURCE};
pub use schema::{
    batch_to_examples, examples_to_batch, pool_schema, Example, Origin, Provenance, COLUMNS, SCHEMA_VERSION,
};
pub use store::{Lineage, Pool, PoolWriter};
pub use view::{LengthFilter, Pick, View, ViewReader};
