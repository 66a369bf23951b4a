//! The run manifest written beside every results file.

use crate::error::{Error, Result};
use crate::fsutil::write_atomic;
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

/// What produced a results file: enough to reproduce it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Manifest {
    pub tool: String,
    pub version: String,
    pub git_commit: String,
    pub setting: String,
    /// The command line, as typed.
    pub command: Vec<String>,
    /// The resolved configuration (every flag, defaults included).
    pub config: serde_json::Value,
    /// The seeds of the runs, e.g. "0..100".
    pub seeds: String,
    /// Start time, seconds since the Unix epoch.
    pub started_unix: u64,
    pub wall_seconds: f64,
    pub threads: usize,
    pub runs: usize,
    pub rows: usize,
    /// The results file, relative to the manifest.
    pub results: String,
}

/// Measures a run's wall time for its manifest.
pub struct Stopwatch {
    started: Instant,
    started_unix: u64,
}

impl Stopwatch {
    pub fn start() -> Self {
        let started_unix = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
        Stopwatch { started: Instant::now(), started_unix }
    }
    pub fn started_unix(&self) -> u64 {
        self.started_unix
    }
    pub fn seconds(&self) -> f64 {
        self.started.elapsed().as_secs_f64()
    }
}

impl Manifest {
    /// The manifest path beside a results file: `x.parquet` -> `x.manifest.json`.
    pub fn path_for(results: &Path) -> PathBuf {
        let stem = results.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_else(|| "results".into());
        results.with_file_name(format!("{stem}.manifest.json"))
    }

    /// Writes the manifest atomically beside `results`.
    pub fn write_beside(&self, results: &Path) -> Result<PathBuf> {
        let path = Self::path_for(results);
        write_atomic(&path, |out| {
            serde_json::to_writer_pretty(&mut *out, self).map_err(|e| Error::io(&path, e.into()))?;
            out.write_all(b"\n").map_err(|e| Error::io(&path, e))
        })?;
        Ok(path)
    }

    pub fn read(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        serde_json::from_str(&text).map_err(|e| Error::BadResults { path: path.into(), message: e.to_string() })
    }
}
