//! Where a model comes from: a local directory, or a Hugging Face Hub id downloaded with hf-hub
//! (token from HF_TOKEN or the usual cache).

use crate::{Error, Result};
use std::path::{Path, PathBuf};

/// A directory holding `config.json`, `tokenizer.json` and the safetensors of `spec`: `spec`
/// itself if it is a directory, the converted directory of a `.gguf` file, else the Hub snapshot
/// of the model id `owner/name`.
pub fn resolve_model_dir(spec: &str) -> Result<PathBuf> {
    let local = Path::new(spec);
    if local.is_dir() {
        return Ok(local.to_path_buf());
    }
    // A Gemma 3 GGUF file: dequantized once into a model directory beside it.
    if local.extension().is_some_and(|e| e.eq_ignore_ascii_case("gguf")) {
        if !local.is_file() {
            return Err(Error::Invalid(format!("--model {spec}: no such GGUF file")));
        }
        return crate::gguf::gguf_model_dir(local);
    }
    let (owner, name) = spec
        .split_once('/')
        .filter(|(o, n)| !o.is_empty() && !n.is_empty() && !n.contains('/'))
        .ok_or_else(|| Error::Invalid(format!("--model `{spec}` is neither a directory nor a Hub id (owner/name)")))?;
    let fail = |file: &str, e: String| {
        Error::Invalid(format!(
            "could not download {spec}/{file} from the Hugging Face Hub: {e} (gated models need HF_TOKEN; \
             offline? download it elsewhere and pass the directory)"
        ))
    };
    let client = hf_hub::HFClientSync::new().map_err(|e| fail("", e.to_string()))?;
    let repo = client.model(owner, name);
    let get = |file: &str| -> Result<PathBuf> {
        repo.download_file().filename(file.to_string()).send().map_err(|e| fail(file, e.to_string()))
    };
    let config = get("config.json")?;
    get("tokenizer.json")?;
    match get("model.safetensors.index.json") {
        Ok(index) => {
            let text = std::fs::read_to_string(&index).map_err(|e| Error::Io { path: index.clone(), source: e })?;
            let v: serde_json::Value =
                serde_json::from_str(&text).map_err(|e| Error::bad_model(&index, format!("not JSON: {e}")))?;
            let mut files: Vec<String> = v["weight_map"]
                .as_object()
                .ok_or_else(|| Error::bad_model(&index, "no weight_map"))?
                .values()
                .filter_map(|f| f.as_str().map(String::from))
                .collect();
            files.sort();
            files.dedup();
            for f in files {
                get(&f)?;
            }
        }
        Err(_) => {
            get("model.safetensors")?;
        }
    }
    Ok(config.parent().map(Path::to_path_buf).unwrap_or_default())
}
