//! TensorBoard event files: scalars (tag, step, value) that `tensorboard --logdir DIR` shows.
//!
//! No maintained crate writes them (tensorboard-rs and tboard have had no release in years), and
//! the format is small: a file of TFRecords (length, masked CRC-32C of the length, data, masked
//! CRC-32C of the data), each holding one `Event` protobuf message. The messages here carry the
//! field numbers of tensorflow/core/util/event.proto and summary.proto.
//!
//! Every writer owns one file, `events.out.tfevents.thrive`, in its run's directory. Opened to
//! continue (a resumed fine-tune) it keeps the events up to the resumed step and drops the rest,
//! so that a step killed after its events were written is not shown twice.

use crate::error::{Error, Result};
use prost::Message;
use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

/// The event file's name in its run directory (TensorBoard reads files whose name has `tfevents`).
pub const EVENTS_FILE: &str = "events.out.tfevents.thrive";

/// `tensorflow.Event` (the fields thrive writes).
#[derive(Clone, PartialEq, prost::Message)]
pub struct Event {
    #[prost(double, tag = "1")]
    pub wall_time: f64,
    #[prost(int64, tag = "2")]
    pub step: i64,
    #[prost(string, optional, tag = "3")]
    pub file_version: Option<String>,
    #[prost(message, optional, tag = "5")]
    pub summary: Option<Summary>,
}

/// `tensorflow.Summary`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Summary {
    #[prost(message, repeated, tag = "1")]
    pub value: Vec<SummaryValue>,
}

/// `tensorflow.Summary.Value` with a scalar.
#[derive(Clone, PartialEq, prost::Message)]
pub struct SummaryValue {
    #[prost(string, tag = "1")]
    pub tag: String,
    #[prost(float, optional, tag = "2")]
    pub simple_value: Option<f32>,
}

/// The CRC-32C of `data`, masked as TFRecord does (a CRC of data with embedded CRCs is weak).
pub fn masked_crc(data: &[u8]) -> u32 {
    let crc = crc32c::crc32c(data);
    crc.rotate_right(15).wrapping_add(0xa282_ead8)
}

/// One TFRecord: little-endian u64 length, its masked CRC, the data, the data's masked CRC.
pub fn record(data: &[u8]) -> Vec<u8> {
    let len = (data.len() as u64).to_le_bytes();
    let mut out = Vec::with_capacity(data.len() + 16);
    out.extend_from_slice(&len);
    out.extend_from_slice(&masked_crc(&len).to_le_bytes());
    out.extend_from_slice(data);
    out.extend_from_slice(&masked_crc(data).to_le_bytes());
    out
}

/// The whole, CRC-checked records at the start of `bytes`, with each record's end offset; a torn
/// or corrupt record ends the list (what a killed writer leaves).
pub fn read_records(bytes: &[u8]) -> Vec<(Vec<u8>, usize)> {
    let mut out = Vec::new();
    let mut at = 0;
    while bytes.len() >= at + 12 {
        let len_bytes = &bytes[at..at + 8];
        let len = u64::from_le_bytes(len_bytes.try_into().expect("8 bytes")) as usize;
        let len_crc = u32::from_le_bytes(bytes[at + 8..at + 12].try_into().expect("4 bytes"));
        if len_crc != masked_crc(len_bytes) || bytes.len() < at + 16 + len {
            break;
        }
        let data = &bytes[at + 12..at + 12 + len];
        let crc = u32::from_le_bytes(bytes[at + 12 + len..at + 16 + len].try_into().expect("4 bytes"));
        if crc != masked_crc(data) {
            break;
        }
        at += 16 + len;
        out.push((data.to_vec(), at));
    }
    out
}

/// The events of an event file.
pub fn read_events(path: &Path) -> Result<Vec<Event>> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    read_records(&bytes)
        .into_iter()
        .map(|(data, _)| {
            Event::decode(data.as_slice()).map_err(|e| Error::Codec { path: path.into(), message: e.to_string() })
        })
        .collect()
}

/// Writes scalars into one run directory's event file.
pub struct EventWriter {
    path: PathBuf,
    out: BufWriter<File>,
}

impl EventWriter {
    /// A new event file in `dir` (created if need be), replacing any earlier one.
    pub fn create(dir: &Path) -> Result<Self> {
        Self::open(dir, None)
    }

    /// Continues the event file in `dir` after step `step`: events of later steps (written before
    /// a kill, after the checkpoint being resumed) are dropped. No file yet: a new one.
    pub fn resume(dir: &Path, step: i64) -> Result<Self> {
        Self::open(dir, Some(step))
    }

    fn open(dir: &Path, keep_through: Option<i64>) -> Result<Self> {
        let unwritable =
            |reason: std::io::Error| Error::Unwritable { what: "TensorBoard directory", dir: dir.into(), reason };
        std::fs::create_dir_all(dir).map_err(unwritable)?;
        let path = dir.join(EVENTS_FILE);
        let mut file =
            OpenOptions::new().read(true).write(true).create(true).truncate(false).open(&path).map_err(unwritable)?;
        let mut keep = 0;
        if let Some(step) = keep_through {
            let mut bytes = Vec::new();
            file.read_to_end(&mut bytes).map_err(|e| Error::io(&path, e))?;
            for (data, end) in read_records(&bytes) {
                match Event::decode(data.as_slice()) {
                    Ok(event) if event.step <= step => keep = end,
                    _ => break,
                }
            }
        }
        file.set_len(keep as u64).map_err(|e| Error::io(&path, e))?;
        file.seek(SeekFrom::End(0)).map_err(|e| Error::io(&path, e))?;
        let mut writer = EventWriter { path, out: BufWriter::new(file) };
        if keep == 0 {
            writer.write(Event {
                wall_time: now(),
                step: 0,
                file_version: Some("brain.Event:2".into()),
                summary: None,
            })?;
        }
        Ok(writer)
    }

    /// The event file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Scalars at one step: (tag, value) pairs.
    pub fn scalars(&mut self, step: i64, values: &[(&str, f64)]) -> Result<()> {
        let value = values
            .iter()
            .map(|&(tag, v)| SummaryValue { tag: tag.to_string(), simple_value: Some(v as f32) })
            .collect();
        self.write(Event { wall_time: now(), step, file_version: None, summary: Some(Summary { value }) })
    }

    /// Writes out what is buffered (call after each step: a killed process loses at most the
    /// step in progress).
    pub fn flush(&mut self) -> Result<()> {
        self.out.flush().map_err(|e| Error::io(&self.path, e))
    }

    fn write(&mut self, event: Event) -> Result<()> {
        self.out.write_all(&record(&event.encode_to_vec())).map_err(|e| Error::io(&self.path, e))
    }
}

impl Drop for EventWriter {
    fn drop(&mut self) {
        let _ = self.out.flush();
    }
}

fn now() -> f64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64())
}

/// Checks that `dir` can take TensorBoard runs (created if need be), naming it when it cannot.
pub fn check_dir(dir: &Path) -> Result<()> {
    let bad = |reason: std::io::Error| Error::Unwritable { what: "--tensorboard", dir: dir.into(), reason };
    std::fs::create_dir_all(dir).map_err(bad)?;
    let probe = dir.join(format!(".thrive-probe.{}", std::process::id()));
    File::create(&probe).map_err(bad)?;
    let _ = std::fs::remove_file(&probe);
    Ok(())
}

/// Writes a results table's per-generation metrics as TensorBoard scalars: one run (directory)
/// per results run under `dir`, named by its parameters, workflow and seed, each metric a tag
/// with the generation as its step.
pub fn write_table(table: &crate::ResultsTable, dir: &Path) -> Result<()> {
    check_dir(dir)?;
    let m = table.metric_names.len().max(1);
    for run in &table.runs {
        let mut name: Vec<String> = run
            .params
            .0
            .iter()
            .map(|(k, v)| {
                let v = v.to_string().replace(['/', '\\', ' '], "-");
                format!("{k}-{v}")
            })
            .collect();
        name.extend(run.workflow.map(|w| w.name().to_string()));
        let run_dir = dir.join(name.join("_")).join(format!("seed-{}", run.seed));
        let mut w = EventWriter::create(&run_dir)?;
        for (g, row) in run.metrics.chunks(m).enumerate() {
            let values: Vec<(&str, f64)> = table
                .metric_names
                .iter()
                .map(String::as_str)
                .zip(row.iter().copied())
                .filter(|(_, v)| v.is_finite())
                .collect();
            w.scalars(g as i64 + 1, &values)?;
        }
        w.flush()?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    // The mask as TFRecord's reference code writes it, against `rotate_right` above.
    #[allow(clippy::manual_rotate)]
    fn crc32c_and_its_mask() {
        // The standard check value of CRC-32C.
        assert_eq!(crc32c::crc32c(b"123456789"), 0xE306_9283);
        let crc: u32 = 0xE306_9283;
        assert_eq!(masked_crc(b"123456789"), ((crc >> 15) | (crc << 17)).wrapping_add(0xa282_ead8));
    }

    #[test]
    fn records_are_framed_and_checked() {
        let r = record(b"abc");
        assert_eq!(r.len(), 3 + 16);
        assert_eq!(&r[..8], &3u64.to_le_bytes());
        assert_eq!(&r[8..12], &masked_crc(&3u64.to_le_bytes()).to_le_bytes());
        assert_eq!(&r[12..15], b"abc");
        assert_eq!(&r[15..], &masked_crc(b"abc").to_le_bytes());
        let mut two = [record(b"abc"), record(b"")].concat();
        assert_eq!(read_records(&two).len(), 2);
        // A torn record and a flipped byte end the list there.
        two.extend_from_slice(&record(b"torn")[..10]);
        assert_eq!(read_records(&two).len(), 2);
        two[13] ^= 1;
        assert_eq!(read_records(&two).len(), 0);
    }

    #[test]
    fn a_resumed_writer_drops_later_steps() {
        let tmp = tempfile::tempdir().unwrap();
        let mut w = EventWriter::create(tmp.path()).unwrap();
        for step in 1..=5 {
            w.scalars(step, &[("loss", step as f64 / 2.0)]).unwrap();
        }
        drop(w);
        let mut w = EventWriter::resume(tmp.path(), 3).unwrap();
        w.scalars(4, &[("loss", 9.0)]).unwrap();
        drop(w);
        let events = read_events(&tmp.path().join(EVENTS_FILE)).unwrap();
        assert_eq!(events[0].file_version.as_deref(), Some("brain.Event:2"));
        let steps: Vec<(i64, f32)> =
            events[1..].iter().map(|e| (e.step, e.summary.as_ref().unwrap().value[0].simple_value.unwrap())).collect();
        assert_eq!(steps, [(1, 0.5), (2, 1.0), (3, 1.5), (4, 9.0)]);
        // Created afresh: nothing of before.
        drop(EventWriter::create(tmp.path()).unwrap());
        assert_eq!(read_events(&tmp.path().join(EVENTS_FILE)).unwrap().len(), 1);
    }

    #[test]
    fn an_unwritable_directory_is_named() {
        let tmp = tempfile::tempdir().unwrap();
        let file = tmp.path().join("file");
        std::fs::write(&file, "").unwrap();
        let err = check_dir(&file.join("tb")).unwrap_err().to_string();
        assert!(err.contains("--tensorboard") && err.contains("file/tb"), "{err}");
    }
}
