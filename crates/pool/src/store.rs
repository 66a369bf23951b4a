//! Opening, verifying and writing a pool directory.

use crate::id::file_sha256;
use crate::manifest::{BatchKey, FileEntry, PoolManifest, VALUE_SOURCE};
use crate::schema::{batch_to_examples, check_schema, examples_to_batch, Columns, Example, Origin, VERSION_KEY};
use crate::{Error, Result, SCHEMA_VERSION};
use arrow::array::{Array, RecordBatch};
use parquet::arrow::arrow_reader::{ParquetRecordBatchReader, ParquetRecordBatchReaderBuilder, RowSelection};
use parquet::arrow::{ArrowWriter, ProjectionMask};
use parquet::basic::Compression;
use parquet::file::metadata::KeyValue;
use parquet::file::properties::WriterProperties;
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::Duration;
use thrive_core::lock::{FileLock, Owner};
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

/// A writer of a pool. Any number may write one pool at once, from any number of processes and
/// hosts (jobs of a cluster on a shared file system), as long as they write different batches:
/// each batch's Parquet file is written to a temporary name of its own, and only the commit (a
/// rename and a rewrite of `pool.json`, milliseconds) takes the pool's `.lock`, whose owner is
/// host + PID and which is never taken over from another host ([`thrive_core::lock`]).
#[derive(Debug)]
pub struct PoolWriter {
    pool: Pool,
    lock_wait: Duration,
}

/// How long a commit waits for another writer's commit by default.
const LOCK_WAIT: Duration = Duration::from_secs(120);

impl PoolWriter {
    /// Opens (creating if needed) the pool in `dir` for writing, and removes the temporary files
    /// of writers that are gone.
    pub fn open(dir: impl AsRef<Path>) -> Result<PoolWriter> {
        let dir = dir.as_ref().to_path_buf();
        std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
        let lock = take_lock(&dir, LOCK_WAIT)?;
        if !dir.join(crate::manifest::MANIFEST).exists() {
            PoolManifest::empty().write(&dir)?;
        }
        let pool = Pool::open(&dir)?;
        clean_temporaries(&dir);
        drop(lock);
        Ok(PoolWriter { pool, lock_wait: LOCK_WAIT })
    }

    /// How long a commit waits while another writer commits (default two minutes; a commit
    /// takes milliseconds, so only a writer killed mid-commit on another host makes it wait).
    pub fn set_lock_wait(&mut self, wait: Duration) {
        self.lock_wait = wait;
    }

    /// The pool as of this writer's last commit (or its opening).
    pub fn pool(&self) -> &Pool {
        &self.pool
    }

    /// Commits `rows` as batch `key`: the Parquet file is written to a temporary name and
    /// fsynced; then, under the pool's lock, it is renamed into place and the manifest (as other
    /// writers left it) is rewritten the same way. Batches are immutable: writing a key twice,
    /// from this writer or another, is an error, and nothing committed is touched.
    pub fn write_batch(&mut self, key: &BatchKey, rows: &[Example]) -> Result<&FileEntry> {
        let already = || {
            Error::Invalid(format!(
                "{}: batch `{key}` is already committed (batches are immutable)",
                self.pool.dir.display()
            ))
        };
        if self.pool.contains(key) || PoolManifest::read(&self.pool.dir)?.entry(key).is_some() {
            return Err(already());
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
        let tmp = owned_temp(&path);
        let written = write_parquet(&tmp, rows).and_then(|()| {
            let bytes = std::fs::metadata(&tmp).map_err(|e| Error::io(&tmp, e))?.len();
            Ok((bytes, file_sha256(&tmp)?))
        });
        let (bytes, sha256) = match written {
            Ok(w) => w,
            Err(e) => {
                let _ = std::fs::remove_file(&tmp);
                return Err(e);
            }
        };
        let entry = FileEntry {
            key: key.clone(),
            path: relative,
            rows: rows.len() as u64,
            bytes,
            sha256,
            tokens: rows.iter().map(|r| r.tokens.unwrap_or(0) as u64).sum(),
        };
        let committed = (|| {
            let _lock = take_lock(&self.pool.dir, self.lock_wait)?;
            // Other writers may have committed since: the manifest as they left it.
            let mut manifest = PoolManifest::read(&self.pool.dir)?;
            if manifest.entry(key).is_some() {
                return Err(already());
            }
            std::fs::rename(&tmp, &path).map_err(|e| Error::io(&path, e))?;
            thrive_core::fsutil::sync_parent(&path);
            manifest.files.push(entry);
            manifest.files.sort_by(|a, b| a.key.cmp(&b.key));
            manifest.write(&self.pool.dir)?;
            Ok(manifest)
        })();
        let manifest = match committed {
            Ok(m) => m,
            Err(e) => {
                let _ = std::fs::remove_file(&tmp);
                return Err(e);
            }
        };
        self.pool.manifest = manifest;
        tracing::debug!("committed {key}: {} rows to {}", rows.len(), path.display());
        Ok(self.pool.manifest.entry(key).expect("just added"))
    }
}

/// Writes `rows` as a pool Parquet file at `path` and fsyncs it.
fn write_parquet(path: &Path, rows: &[Example]) -> Result<()> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(|e| Error::io(parent, e))?;
    }
    let props = WriterProperties::builder()
        .set_compression(Compression::SNAPPY)
        .set_max_row_group_row_count(Some(ROW_GROUP_ROWS))
        .set_key_value_metadata(Some(vec![KeyValue::new(VERSION_KEY.to_string(), SCHEMA_VERSION.to_string())]))
        .build();
    let file = std::fs::File::create(path).map_err(|e| Error::io(path, e))?;
    let out = std::io::BufWriter::new(file);
    let mut writer =
        ArrowWriter::try_new(out, crate::pool_schema(), Some(props)).map_err(|e| Error::bad_file(path, e))?;
    for chunk in rows.chunks(ROW_GROUP_ROWS) {
        let batch: RecordBatch = examples_to_batch(chunk).map_err(|e| Error::bad_file(path, e))?;
        writer.write(&batch).map_err(|e| Error::bad_file(path, e))?;
    }
    let out = writer.into_inner().map_err(|e| Error::bad_file(path, e))?;
    let file = out.into_inner().map_err(|e| Error::io(path, e.into_error()))?;
    file.sync_all().map_err(|e| Error::io(path, e))
}

/// Takes the pool's commit lock.
fn take_lock(dir: &Path, wait: Duration) -> Result<FileLock> {
    FileLock::acquire(&dir.join(LOCK), wait).map_err(|e| match e {
        thrive_core::Error::Locked { path, message } => {
            Error::Locked { message: format!("{}: the pool is being committed to; {message}", path.display()) }
        }
        other => other.into(),
    })
}

/// A temporary name beside `path` that names its writer (`.NAME~PID~HOST.tmp`), so that only
/// the temporaries of writers that are gone are cleaned up.
fn owned_temp(path: &Path) -> PathBuf {
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let me = Owner::me();
    path.with_file_name(format!(".{name}~{}~{}.tmp", me.pid, me.host.unwrap_or_default()))
}

/// The writer of a temporary file: `.NAME~PID~HOST.tmp`, or `.NAME.PID.tmp` as older writers
/// (and [`thrive_core::fsutil::temp_path`]) name them.
fn temp_owner(name: &str) -> Option<Owner> {
    let stem = name.strip_prefix('.')?.strip_suffix(".tmp")?;
    let parts: Vec<&str> = stem.split('~').collect();
    match parts.as_slice() {
        [_, pid, host] => Some(Owner { pid: pid.parse().ok()?, host: Some(host.to_string()), boot: None }),
        _ => Some(Owner { pid: stem.rsplit_once('.')?.1.parse().ok()?, host: None, boot: None }),
    }
}

/// Removes temporary files that writers now gone left behind (they were never in the manifest);
/// other writers' files in progress are left alone.
fn clean_temporaries(dir: &Path) {
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else { continue };
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.file_name().and_then(|n| n.to_str()).and_then(temp_owner).is_some_and(|o| o.is_gone()) {
                let _ = std::fs::remove_file(&p);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn temporaries_name_their_writer() {
        let tmp = owned_temp(Path::new("/p/synthetic/gen-0001.parquet"));
        let name = tmp.file_name().unwrap().to_str().unwrap();
        assert_eq!(temp_owner(name).unwrap().pid, std::process::id());
        assert!(!temp_owner(name).unwrap().is_gone());
        let old = temp_owner(".pool.json.4000000000.tmp").unwrap();
        assert_eq!((old.pid, old.is_gone()), (4_000_000_000, true));
        let other = temp_owner(".gen-0001.parquet~4000000000~node-7.cluster.tmp").unwrap();
        assert_eq!(other.host.as_deref(), Some("node-7.cluster"));
        assert!(!other.is_gone());
        assert!(temp_owner("gen-0001.parquet").is_none());
    }
}
