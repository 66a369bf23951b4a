//! The pool's manifest (`pool.json`): which batch files are committed, their row counts and hashes.

use crate::schema::SCHEMA_VERSION;
use crate::{Error, Result};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use thrive_core::Workflow;

/// The chain name of the value-of-synthetic grid's synthetic sources (in place of a workflow).
pub const VALUE_SOURCE: &str = "value-source";

/// Real or synthetic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    Real,
    Synthetic,
}

/// Identifies one immutable batch of the pool.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(tag = "source", rename_all = "lowercase")]
pub enum BatchKey {
    /// A split of the real data (`train`, `validation`), shared by every chain.
    Real { split: String },
    /// What generation `generation`'s model of chain (`workflow`, `chain`) sampled.
    Synthetic { workflow: String, chain: u64, generation: u32 },
}

impl BatchKey {
    /// The synthetic batch of a chain.
    pub fn synthetic(workflow: Workflow, chain: u64, generation: u32) -> Self {
        BatchKey::Synthetic { workflow: workflow.name().into(), chain, generation }
    }

    /// The synthetic rows of a source of the value-of-synthetic grid (docs/protocol.md §5: sampled by a
    /// model fine-tuned once on real training rows): its seed, and its quality setting's index
    /// among the run's (stored as generation `quality + 1`; the paper's grid has one, 0).
    pub fn value_source(seed: u64, quality: u32) -> Self {
        BatchKey::Synthetic { workflow: VALUE_SOURCE.into(), chain: seed, generation: quality + 1 }
    }

    /// A real split.
    pub fn real(split: &str) -> Self {
        BatchKey::Real { split: split.into() }
    }

    /// Real or synthetic.
    pub fn source(&self) -> Source {
        match self {
            BatchKey::Real { .. } => Source::Real,
            BatchKey::Synthetic { .. } => Source::Synthetic,
        }
    }

    /// The generation column of its rows (0 for real data).
    pub fn generation(&self) -> u32 {
        match self {
            BatchKey::Real { .. } => 0,
            BatchKey::Synthetic { generation, .. } => *generation,
        }
    }

    /// The file's path relative to the pool directory.
    pub fn relative_path(&self) -> PathBuf {
        match self {
            BatchKey::Real { split } => PathBuf::from(format!("real/{split}.parquet")),
            BatchKey::Synthetic { workflow, chain, generation } => {
                PathBuf::from(format!("synthetic/{workflow}/chain-{chain}/gen-{generation:04}.parquet"))
            }
        }
    }
}

impl std::fmt::Display for BatchKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BatchKey::Real { split } => write!(f, "real/{split}"),
            BatchKey::Synthetic { workflow, chain, generation } => {
                write!(f, "synthetic {workflow} chain {chain} generation {generation}")
            }
        }
    }
}

/// One committed file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FileEntry {
    #[serde(flatten)]
    pub key: BatchKey,
    /// Relative to the pool directory.
    pub path: PathBuf,
    pub rows: u64,
    pub bytes: u64,
    pub sha256: String,
    /// Sum of the `tokens` column (0 when no tokenizer was given).
    pub tokens: u64,
}

/// The manifest: the pool is exactly the files listed here.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PoolManifest {
    pub schema_version: u32,
    pub files: Vec<FileEntry>,
}

pub(crate) const MANIFEST: &str = "pool.json";

impl PoolManifest {
    pub(crate) fn empty() -> Self {
        PoolManifest { schema_version: SCHEMA_VERSION, files: Vec::new() }
    }

    /// Reads `dir/pool.json`, refusing a newer schema version.
    pub(crate) fn read(dir: &Path) -> Result<Self> {
        let path = dir.join(MANIFEST);
        let text = std::fs::read_to_string(&path).map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                Error::Invalid(format!(
                    "{}: not a pool (no {MANIFEST}); create one with `thrive pool import`",
                    dir.display()
                ))
            } else {
                Error::io(&path, e)
            }
        })?;
        let version: serde_json::Value =
            serde_json::from_str(&text).map_err(|e| Error::bad_file(&path, format!("not valid JSON: {e}")))?;
        let v = version.get("schema_version").and_then(|v| v.as_u64()).unwrap_or(0);
        if v > SCHEMA_VERSION as u64 {
            return Err(Error::bad_file(
                &path,
                format!("schema version {v} is newer than this thrive understands ({SCHEMA_VERSION}); upgrade thrive"),
            ));
        }
        serde_json::from_value(version).map_err(|e| Error::bad_file(&path, format!("unexpected manifest: {e}")))
    }

    /// Writes `dir/pool.json` atomically.
    pub(crate) fn write(&self, dir: &Path) -> Result<()> {
        let path = dir.join(MANIFEST);
        let text = serde_json::to_string_pretty(self).expect("manifest serialises");
        thrive_core::fsutil::write_atomic(&path, |out| {
            use std::io::Write;
            out.write_all(text.as_bytes()).map_err(|e| thrive_core::Error::io(&path, e))
        })?;
        Ok(())
    }

    /// The entry of a batch.
    pub fn entry(&self, key: &BatchKey) -> Option<&FileEntry> {
        self.files.iter().find(|f| &f.key == key)
    }
}
