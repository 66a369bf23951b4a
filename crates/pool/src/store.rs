//! Opening, verifying and writing a pool directory.

use crate::id::file_sha256;
use crate::manifest::{BatchKey, FileEntry, PoolManifest, VALUE_SOURCE};
use crate::schema::{batch_to_examples, check_schema, examples_to_batch, Columns, Example, Origin, VERSION_KEY};
use crate::view::{View, ViewReader};
use crate::{Error, Result, SCHEMA_VERSION};
use arrow::array::{Array, RecordBatch};
use parquet::arrow::arrow_reader::{ParquetRecordBatchReader, ParquetRecordBatchReaderBuilder, RowSelection};
use parquet::arrow::{ArrowWriter, ProjectionMask};
use parquet::basic::Compression;
use parquet::file::metadata::KeyValue;
use parquet::file::properties::WriterProperties;
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use thrive_core::{BatchRef, Workflow};

/// Rows per Arrow batch when reading.
pub(crate) const READ_BATCH_ROWS: usize = 8192;
/// Rows per Parquet row group when writing.
const ROW_GROUP_ROWS: usize = 65_536;
const LOCK: &str = ".lock";

/// A pool opened for reading.
#[derive(Debug, Clone)]
pub struct Pool {
    dir: PathBuf,
    manifest: PoolManifest,
}

/// Where an example came from, and for a synthetic one the data its model was trained on.
#[derive(Debug, Clone)]
pub struct Lineage {
    pub example: Example,
    /// The file that holds it.
    pub file: PathBuf,
    /// For synthetic rows: the batches generation k's model was fine-tuned on (its workflow's training set).
    pub model_trained_on: Vec<BatchKey>,
}

impl Pool {
    /// Opens the pool in `dir`: reads its manifest (refusing a newer schema) and checks that every
    /// listed file exists with its recorded size. [`Pool::verify`] checks contents too.
    pub fn open(dir: impl AsRef<Path>) -> Result<Pool> {
        let dir = dir.as_ref().to_path_buf();
        let manifest = PoolManifest::read(&dir)?;
        for f in &manifest.files {
            let path = dir.join(&f.path);
            let meta = std::fs::metadata(&path).map_err(|e| Error::io(&path, e))?;
            if meta.len() != f.bytes {
                return Err(Error::bad_file(
                    &path,
                    format!("{} bytes, but the manifest recorded {} (truncated or replaced)", meta.len(), f.bytes),
                ));
            }
        }
        Ok(Pool { dir, manifest })
    }

    /// The pool directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The committed files.
    pub fn manifest(&self) -> &PoolManifest {
        &self.manifest
    }

    /// Whether a batch is committed.
    pub fn contains(&self, key: &BatchKey) -> bool {
        self.manifest.entry(key).is_some()
    }

    /// The manifest entry of a batch, or an error naming it.
    pub fn entry(&self, key: &BatchKey) -> Result<&FileEntry> {
        self.manifest.entry(key).ok_or_else(|| Error::Invalid(format!("{}: no batch `{key}`", self.dir.display())))
    }

    pub(crate) fn path_of(&self, entry: &FileEntry) -> PathBuf {
        self.dir.join(&entry.path)
    }

    /// A reader over one file, checked for version and schema; errors name the file.
    pub(crate) fn reader(
        &self,
        entry: &FileEntry,
        selection: Option<RowSelection>,
        columns: Option<&[&str]>,
    ) -> Result<ParquetRecordBatchReader> {
        let path = self.path_of(entry);
        let file = std::fs::File::open(&path).map_err(|e| Error::io(&path, e))?;
        let builder = ParquetRecordBatchReaderBuilder::try_new(file)
            .map_err(|e| Error::bad_file(&path, format!("not a readable Parquet file: {e}")))?;
        let version = builder
            .metadata()
            .file_metadata()
            .key_value_metadata()
            .and_then(|kv| kv.iter().find(|k| k.key == VERSION_KEY))
            .and_then(|k| k.value.as_deref())
            .and_then(|v| v.parse::<u32>().ok())
            .ok_or_else(|| Error::bad_file(&path, format!("no `{VERSION_KEY}` metadata: not a thrive pool file")))?;
        if version > SCHEMA_VERSION {
            return Err(Error::bad_file(
                &path,
                format!("schema version {version} is newer than this thrive understands ({SCHEMA_VERSION})"),
            ));
        }
        check_schema(&path, builder.schema())?;
        let mut builder = builder.with_batch_size(READ_BATCH_ROWS);
        if let Some(cols) = columns {
            let schema = builder.parquet_schema();
            let indices: Vec<usize> =
                cols.iter().map(|c| builder.schema().index_of(c).expect("schema checked")).collect();
            let mask = ProjectionMask::roots(schema, indices);
            builder = builder.with_projection(mask);
        }
        if let Some(sel) = selection {
            builder = builder.with_row_selection(sel);
        }
        builder.build().map_err(|e| Error::bad_file(&path, e))
    }

    /// Reads a whole batch as typed examples.
    pub fn read_batch(&self, key: &BatchKey) -> Result<Vec<Example>> {
        let entry = self.entry(key)?;
        let path = self.path_of(entry);
        let mut out = Vec::with_capacity(entry.rows as usize);
        for b in self.reader(entry, None, None)? {
            out.extend(batch_to_examples(&b.map_err(|e| Error::bad_file(&path, e))?));
        }
        Ok(out)
    }

    /// Streams the training set (or other selection) that `view` describes.
    pub fn view(&self, view: &View) -> Result<ViewReader<'_>> {
        ViewReader::new(self, view)
    }

    /// The batches generation `generation` of (`workflow`, `chain`) trains on, as pool keys
    /// ([`Workflow::training_batches`] is the one definition).
    pub fn training_batches(workflow: Workflow, chain: u64, generation: u32) -> Vec<BatchKey> {
        workflow
            .training_batches(generation)
            .into_iter()
            .map(|b| match b {
                BatchRef::Real => BatchKey::real("train"),
                BatchRef::Synthetic(k) => BatchKey::synthetic(workflow, chain, k),
            })
            .collect()
    }

    /// Reads every file in full: Parquet readable, version and schema, row counts and hashes as
    /// recorded, no duplicate example_id anywhere. Errors name the file.
    pub fn verify(&self) -> Result<()> {
        let mut seen: HashSet<String> = HashSet::new();
        for entry in &self.manifest.files {
            let path = self.path_of(entry);
            let sha = file_sha256(&path)?;
            if sha != entry.sha256 {
                return Err(Error::bad_file(&path, "content does not match the manifest's SHA-256 (corrupted)"));
            }
            let mut rows = 0u64;
            for b in self.reader(entry, None, Some(&["example_id"]))? {
                let b = b.map_err(|e| Error::bad_file(&path, e))?;
                let ids = Columns { batch: &b }.str("example_id");
                for i in 0..ids.len() {
                    if !seen.insert(ids.value(i).to_string()) {
                        return Err(Error::bad_file(&path, format!("duplicate example_id {}", ids.value(i))));
                    }
                }
                rows += b.num_rows() as u64;
            }
            if rows != entry.rows {
                return Err(Error::bad_file(&path, format!("{rows} rows, but the manifest recorded {}", entry.rows)));
            }
        }
        Ok(())
    }

    /// Finds an example by id (a full scan of the id column) and traces it back.
    pub fn lineage(&self, example_id: &str) -> Result<Lineage> {
        for entry in &self.manifest.files {
            let path = self.path_of(entry);
            let mut offset = 0usize;
            for b in self.reader(entry, None, Some(&["example_id"]))? {
                let b = b.map_err(|e| Error::bad_file(&path, e))?;
                let ids = Columns { batch: &b }.str("example_id");
                if let Some(i) = (0..ids.len()).find(|&i| ids.value(i) == example_id) {
                    let row = offset + i;
                    let sel = RowSelection::from_consecutive_ranges(std::iter::once(row..row + 1), entry.rows as usize);
                    let batch = self
                        .reader(entry, Some(sel), None)?
                        .next()
                        .transpose()
                        .map_err(|e| Error::bad_file(&path, e))?;
                    let example = batch
                        .and_then(|b| batch_to_examples(&b).into_iter().next())
                        .ok_or_else(|| Error::bad_file(&path, "row vanished while reading"))?;
                    let model_trained_on = match &example.origin {
                        Origin::Synthetic { workflow, .. } if workflow == VALUE_SOURCE => {
                            vec![BatchKey::real("train")]
                        }
                        Origin::Synthetic { workflow, chain, generation, .. } => match workflow.parse::<Workflow>() {
                            Ok(w) if *generation >= 1 => Pool::training_batches(w, *chain, *generation),
                            _ => Vec::new(),
                        },
                        Origin::Real { .. } => Vec::new(),
                    };
                    return Ok(Lineage { example, file: path, model_trained_on });
                }
                offset += b.num_rows();
            }
        }
        Err(Error::Invalid(format!("{}: no example with id {example_id}", self.dir.display())))
    }
}

/// The single writer of a pool: holds `.lock` until dropped.
#[derive(Debug)]
pub struct PoolWriter {
    pool: Pool,
    lock: PathBuf,
}

impl PoolWriter {
    /// Opens (creating if needed) the pool in `dir` for writing. Fails with a clear message when
    /// another live process holds the lock; a lock left by a dead process is taken over.
    pub fn open(dir: impl AsRef<Path>) -> Result<PoolWriter> {
        let dir = dir.as_ref().to_path_buf();
        std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
        let lock = dir.join(LOCK);
        acquire_lock(&lock)?;
        let result = (|| {
            if !dir.join(crate::manifest::MANIFEST).exists() {
                PoolManifest::empty().write(&dir)?;
            }
            let pool = Pool::open(&dir)?;
            clean_temporaries(&dir);
            Ok(pool)
        })();
        match result {
            Ok(pool) => Ok(PoolWriter { pool, lock }),
            Err(e) => {
                let _ = std::fs::remove_file(&lock);
                Err(e)
            }
        }
    }

    /// The pool as committed so far.
    pub fn pool(&self) -> &Pool {
        &self.pool
    }

    /// Commits `rows` as batch `key`: the Parquet file is written to a temporary name, fsynced
    /// and renamed, then the manifest is rewritten the same way. Batches are immutable: writing
    /// a key twice is an error, and nothing committed is touched.
    pub fn write_batch(&mut self, key: &BatchKey, rows: &[Example]) -> Result<&FileEntry> {
        if self.pool.contains(key) {
            return Err(Error::Invalid(format!(
                "{}: batch `{key}` is already committed (batches are immutable)",
                self.pool.dir.display()
            )));
        }
        if rows.is_empty() {
            return Err(Error::Invalid(format!("batch `{key}`: no rows to write")));
        }
        let mut ids = HashSet::with_capacity(rows.len());
        for r in rows {
            let matches = match (&r.origin, key) {
                (Origin::Real { .. }, BatchKey::Real { split }) => &r.split == split,
                (
                    Origin::Synthetic { workflow, chain, generation, .. },
                    BatchKey::Synthetic { workflow: w, chain: c, generation: g },
                ) => workflow == w && chain == c && generation == g,
                _ => false,
            };
            if !matches {
                return Err(Error::Invalid(format!("example {} does not belong to batch `{key}`", r.example_id)));
            }
            if !ids.insert(r.example_id.as_str()) {
                return Err(Error::Invalid(format!("batch `{key}`: duplicate example_id {}", r.example_id)));
            }
        }
        let relative = key.relative_path();
        let path = self.pool.dir.join(&relative);
        let props = WriterProperties::builder()
            .set_compression(Compression::SNAPPY)
            .set_max_row_group_row_count(Some(ROW_GROUP_ROWS))
            .set_key_value_metadata(Some(vec![KeyValue::new(VERSION_KEY.to_string(), SCHEMA_VERSION.to_string())]))
            .build();
        thrive_core::fsutil::write_atomic(&path, |out| {
            let perr = |e: parquet::errors::ParquetError| thrive_core::Error::Parquet {
                path: path.clone(),
                message: e.to_string(),
            };
            let mut writer = ArrowWriter::try_new(out, crate::pool_schema(), Some(props)).map_err(perr)?;
            for chunk in rows.chunks(ROW_GROUP_ROWS) {
                let batch: RecordBatch =
                    examples_to_batch(chunk).map_err(|e| thrive_core::Error::Setting(e.to_string()))?;
                writer.write(&batch).map_err(perr)?;
            }
            writer.close().map_err(perr)?;
            Ok(())
        })?;
        let bytes = std::fs::metadata(&path).map_err(|e| Error::io(&path, e))?.len();
        let entry = FileEntry {
            key: key.clone(),
            path: relative,
            rows: rows.len() as u64,
            bytes,
            sha256: file_sha256(&path)?,
            tokens: rows.iter().map(|r| r.tokens.unwrap_or(0) as u64).sum(),
        };
        let mut manifest = self.pool.manifest.clone();
        manifest.files.push(entry);
        manifest.files.sort_by(|a, b| a.key.cmp(&b.key));
        manifest.write(&self.pool.dir)?;
        self.pool.manifest = manifest;
        tracing::debug!("committed {key}: {} rows to {}", rows.len(), path.display());
        Ok(self.pool.manifest.entry(key).expect("just added"))
    }
}

impl Drop for PoolWriter {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.lock);
    }
}

fn acquire_lock(lock: &Path) -> Result<()> {
    use std::io::Write;
    for _ in 0..2 {
        match std::fs::OpenOptions::new().write(true).create_new(true).open(lock) {
            Ok(mut f) => {
                let _ = writeln!(f, "{}", std::process::id());
                let _ = f.sync_all();
                return Ok(());
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                let holder = std::fs::read_to_string(lock).ok().and_then(|s| s.trim().parse::<u32>().ok());
                match holder {
                    Some(pid) if process_alive(pid) => {
                        return Err(Error::Locked {
                            message: format!(
                                "{}: the pool is being written by process {pid}; wait for it to finish \
                                 (or, if it is gone, delete this lock file)",
                                lock.display()
                            ),
                        })
                    }
                    _ => {
                        tracing::warn!("{}: taking over a lock left by a process that is gone", lock.display());
                        std::fs::remove_file(lock).map_err(|e| Error::io(lock, e))?;
                    }
                }
            }
            Err(e) => return Err(Error::io(lock, e)),
        }
    }
    Err(Error::Locked { message: format!("{}: could not take the lock", lock.display()) })
}

/// Whether a process is alive (Linux: /proc; elsewhere assume it is, to stay safe).
fn process_alive(pid: u32) -> bool {
    if cfg!(target_os = "linux") {
        Path::new(&format!("/proc/{pid}")).exists()
    } else {
        true
    }
}

/// Removes temporary files a killed writer left behind (they were never in the manifest).
fn clean_temporaries(dir: &Path) {
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else { continue };
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with('.') && n.ends_with(".tmp"))
            {
                let _ = std::fs::remove_file(&p);
            }
        }
    }
}
