//! Run files (run.toml) for the tiny test model and the HelpSteer2 fixture: one template whose
//! sections each test fills in or overrides.

use super::root;
use std::path::{Path, PathBuf};

/// A run file: `out`, the test model and data on the CPU, the loop's sections (`[run]` or
/// `[value]`, and any other such as `[slurm]`), then `[sft]` and `[sampling]` keys, each a
/// small LoRA fine-tune and a prompted sample unless a test sets it otherwise.
pub struct RunToml {
    out: String,
    sections: String,
    sft: Vec<(String, String)>,
    sampling: Vec<(String, String)>,
}

impl RunToml {
    /// A run into `out` (relative to the run file) with these sections (TOML text, each line
    /// ending in a newline), e.g. `[run]\nworkflows = ["replace"]\ngenerations = 2\nchains = [1]\n`.
    pub fn new(out: &str, sections: &str) -> Self {
        let pairs = |kv: &[(&str, &str)]| kv.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        RunToml {
            out: out.into(),
            sections: sections.into(),
            sft: pairs(&[
                ("lr", "1e-2"),
                ("warmup_ratio", "0.0"),
                ("lora_rank", "4"),
                ("lora_alpha", "8.0"),
                ("sequences_per_step", "8"),
                ("micro_batch", "4"),
                ("max_len", "128"),
            ]),
            sampling: pairs(&[
                ("mode", "\"prompted\""),
                ("count", "16"),
                ("max_new_tokens", "12"),
                ("batch_size", "8"),
            ]),
        }
    }

    /// Sets `[sft] key = value` (VALUE in TOML).
    pub fn sft(mut self, key: &str, value: &str) -> Self {
        set(&mut self.sft, key, value);
        self
    }

    /// Sets `[sampling] key = value` (VALUE in TOML).
    pub fn sampling(mut self, key: &str, value: &str) -> Self {
        set(&mut self.sampling, key, value);
        self
    }

    /// The run file's text.
    pub fn text(&self) -> String {
        let keys = |kv: &[(String, String)]| kv.iter().map(|(k, v)| format!("{k} = {v}\n")).collect::<String>();
        format!(
            "out = \"{out}\"\nmodel = \"{model}\"\ndevice = \"cpu\"\n[data]\nhelpsteer2 = \"{data}\"\n{sections}[sft]\n{sft}[sampling]\n{sampling}",
            out = self.out,
            model = root().join("sampler/tests/fixtures/tiny-trained").display(),
            data = root().join("pool/tests/fixtures/helpsteer2").display(),
            sections = self.sections,
            sft = keys(&self.sft),
            sampling = keys(&self.sampling),
        )
    }

    /// Writes the run file to `path` and returns it.
    pub fn write(&self, path: &Path) -> PathBuf {
        std::fs::write(path, self.text()).unwrap();
        path.to_path_buf()
    }
}

/// Replaces `key`'s value, or adds the key at the end.
fn set(keys: &mut Vec<(String, String)>, key: &str, value: &str) {
    match keys.iter_mut().find(|(k, _)| k == key) {
        Some(kv) => kv.1 = value.into(),
        None => keys.push((key.into(), value.into())),
    }
}
