//! The demo's model and data, compiled into the binary so that `thrive demo` runs anywhere
//! (made by scripts/make_demo_assets.py; see data/README.md).

use anyhow::{Context, Result};
use std::path::{Path, PathBuf};

macro_rules! asset {
    ($path:literal) => {
        ($path, include_bytes!(concat!(env!("CARGO_MANIFEST_DIR"), "/../../data/demo/", $path)) as &[u8])
    };
}

const ASSETS: [(&str, &[u8]); 5] = [
    asset!("model/config.json"),
    asset!("model/model.safetensors"),
    asset!("model/tokenizer.json"),
    asset!("helpsteer2/train.jsonl"),
    asset!("helpsteer2/validation.jsonl"),
];

/// Writes the assets under `dir` (each file atomically, skipped if already identical) and
/// returns `dir`: `dir/model` is a model directory, `dir/helpsteer2` a HelpSteer2-shaped folder.
pub fn unpack(dir: &Path) -> Result<PathBuf> {
    for (name, bytes) in ASSETS {
        let path = dir.join(name);
        if std::fs::read(&path).is_ok_and(|b| b == bytes) {
            continue;
        }
        let parent = path.parent().unwrap_or(dir);
        std::fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
        thrive_core::fsutil::write_atomic(&path, |w| {
            std::io::Write::write_all(w, bytes).map_err(|e| thrive_core::Error::Io { path: path.clone(), source: e })
        })?;
    }
    Ok(dir.to_path_buf())
}
