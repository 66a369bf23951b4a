//! What a user asks of a pool after a run: a summary (rows and token lengths per batch, sample
//! rows) and exports of any view as jsonl or Parquet.

use crate::manifest::{BatchKey, FileEntry};
use crate::schema::{batch_to_examples, Columns, Example, VERSION_KEY};
use crate::store::Pool;
use crate::view::ViewReader;
use crate::{Error, Result, SCHEMA_VERSION};
use arrow::array::{Array, RecordBatch};
use parquet::arrow::ArrowWriter;
use parquet::basic::Compression;
use parquet::file::metadata::KeyValue;
use parquet::file::properties::WriterProperties;
use serde::Serialize;
use std::path::Path;

/// Token lengths of one batch (`None` when it was written without a tokenizer).
#[derive(Debug, Clone, Serialize)]
pub struct TokenSummary {
    pub min: u32,
    pub median: u32,
    pub p95: u32,
    pub max: u32,
    pub mean: f64,
    /// Rows over the paper's 512-token limit.
    pub over_512: u64,
}

/// One batch in a pool summary.
#[derive(Debug, Clone, Serialize)]
pub struct BatchSummary {
    #[serde(flatten)]
    pub entry: FileEntry,
    pub tokens_summary: Option<TokenSummary>,
}

/// A pool at a glance.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    pub dir: String,
    pub schema_version: u32,
    /// (column, Arrow type) of every pool file.
    pub schema: Vec<(String, String)>,
    pub batches: Vec<BatchSummary>,
    pub total_rows: u64,
    pub total_bytes: u64,
}

impl Pool {
    /// Rows, bytes and token lengths of every batch (reads only the `tokens` column).
    pub fn summary(&self) -> Result<Summary> {
        let mut batches = Vec::new();
        for entry in &self.manifest().files {
            let path = self.path_of(entry);
            let mut tokens = Vec::with_capacity(entry.rows as usize);
            let mut complete = true;
            for b in self.reader(entry, None, Some(&["tokens"]))? {
                let b = b.map_err(|e| Error::bad_file(&path, e))?;
                let t = Columns { batch: &b }.u32("tokens");
                complete &= t.null_count() == 0;
                tokens.extend(t.iter().flatten());
            }
            let tokens_summary = (complete && !tokens.is_empty()).then(|| summarise(&mut tokens));
            batches.push(BatchSummary { entry: entry.clone(), tokens_summary });
        }
        Ok(Summary {
            dir: self.dir().display().to_string(),
            schema_version: self.manifest().schema_version,
            schema: crate::COLUMNS.iter().map(|(n, t, _)| (n.to_string(), t.to_string())).collect(),
            total_rows: batches.iter().map(|b| b.entry.rows).sum(),
            total_bytes: batches.iter().map(|b| b.entry.bytes).sum(),
            batches,
        })
    }

    /// The first `n` rows of a batch.
    pub fn head(&self, key: &BatchKey, n: usize) -> Result<Vec<Example>> {
        let entry = self.entry(key)?;
        let path = self.path_of(entry);
        let mut out = Vec::new();
        for b in self.reader(entry, None, None)? {
            let b = b.map_err(|e| Error::bad_file(&path, e))?;
            out.extend(batch_to_examples(&b.slice(0, b.num_rows().min(n - out.len()))));
            if out.len() >= n {
                break;
            }
        }
        Ok(out)
    }
}

fn summarise(tokens: &mut [u32]) -> TokenSummary {
    tokens.sort_unstable();
    let at = |q: f64| tokens[((tokens.len() - 1) as f64 * q).round() as usize];
    TokenSummary {
        min: tokens[0],
        median: at(0.5),
        p95: at(0.95),
        max: tokens[tokens.len() - 1],
        mean: tokens.iter().map(|&t| t as f64).sum::<f64>() / tokens.len() as f64,
        over_512: tokens.iter().filter(|&&t| t > 512).count() as u64,
    }
}

/// Export formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExportFormat {
    /// One JSON object per row, null columns left out.
    Jsonl,
    /// The pool schema, as the pool stores it.
    Parquet,
}

/// An open export file in one format: the writer [`ViewReader::export`] feeds batch by batch.
enum Exporter<W: std::io::Write + Send> {
    Jsonl(arrow::json::LineDelimitedWriter<W>),
    Parquet(ArrowWriter<W>),
}

impl<W: std::io::Write + Send> Exporter<W> {
    /// Starts a file of `format` on `out` (Parquet: the pool's compression and version metadata).
    fn open(format: ExportFormat, out: W) -> Result<Self, String> {
        Ok(match format {
            ExportFormat::Jsonl => Exporter::Jsonl(arrow::json::LineDelimitedWriter::new(out)),
            ExportFormat::Parquet => {
                let props = WriterProperties::builder()
                    .set_compression(Compression::SNAPPY)
                    .set_key_value_metadata(Some(vec![KeyValue::new(
                        VERSION_KEY.to_string(),
                        SCHEMA_VERSION.to_string(),
                    )]))
                    .build();
                Exporter::Parquet(
                    ArrowWriter::try_new(out, crate::pool_schema(), Some(props)).map_err(|e| e.to_string())?,
                )
            }
        })
    }

    fn write(&mut self, batch: &RecordBatch) -> Result<(), String> {
        match self {
            Exporter::Jsonl(w) => w.write(batch).map_err(|e| e.to_string()),
            Exporter::Parquet(w) => w.write(batch).map_err(|e| e.to_string()),
        }
    }

    /// Ends the file (the Parquet footer).
    fn finish(self) -> Result<(), String> {
        match self {
            Exporter::Jsonl(mut w) => w.finish().map_err(|e| e.to_string()),
            Exporter::Parquet(w) => w.close().map(drop).map_err(|e| e.to_string()),
        }
    }
}

impl ViewReader<'_> {
    /// Writes the view to `path` atomically (nothing half-written on error); returns the row count.
    pub fn export(self, path: &Path, format: ExportFormat) -> Result<u64> {
        let mut rows = 0u64;
        let mut failure: Option<Error> = None;
        let written = thrive_core::fsutil::write_atomic(path, |out| {
            let fail = |message: String| thrive_core::Error::Codec { path: path.into(), message };
            let mut w = Exporter::open(format, out).map_err(fail)?;
            for b in self {
                let b = b.map_err(|e| {
                    let m = e.to_string();
                    failure = Some(e);
                    fail(m)
                })?;
                rows += b.num_rows() as u64;
                w.write(&b).map_err(fail)?;
            }
            w.finish().map_err(fail)
        });
        match (written, failure) {
            (Ok(()), _) => Ok(rows),
            (Err(_), Some(e)) => Err(e),
            (Err(e), None) => Err(e.into()),
        }
    }
}
