//! Export of a trained model: a PEFT adapter (`adapter/`) that `peft.PeftModel.from_pretrained`
//! loads, and merged weights (`merged/`, with config.json and tokenizer.json) that
//! `from_pretrained` loads as a plain Gemma 2 or Gemma 3.

use crate::data::TextEncoder;
use crate::hyperparams::{Hyperparams, Mode};
use crate::model::Gemma;
use crate::{Error, Result};
use candle_core::{DType, Tensor};
use std::collections::HashMap;
use std::path::Path;

fn save(map: &HashMap<String, Tensor>, path: &Path) -> Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| Error::Io { path: dir.into(), source: e })?;
    }
    let tmp = thrive_core::fsutil::temp_path(path);
    let contiguous: HashMap<String, Tensor> =
        map.iter().map(|(k, v)| Ok((k.clone(), v.contiguous()?))).collect::<Result<_>>()?;
    candle_core::safetensors::save(&contiguous, &tmp)?;
    std::fs::rename(&tmp, path).map_err(|e| Error::Io { path: path.into(), source: e })
}

fn write_json(value: &serde_json::Value, path: &Path) -> Result<()> {
    let text = serde_json::to_string_pretty(value).map_err(|e| Error::Invalid(e.to_string()))?;
    thrive_core::fsutil::write_atomic(path, |w| {
        std::io::Write::write_all(w, text.as_bytes())
            .map_err(|e| thrive_core::Error::Io { path: path.into(), source: e })
    })
    .map_err(|e| Error::Invalid(e.to_string()))
}

/// Writes `adapter/` (LoRA only) and, with `merged` (always for full fine-tuning),
/// `merged/model.safetensors` + `merged/config.json` into `out`.
pub fn export(model: &Gemma, enc: &TextEncoder, cfg: &Hyperparams, out: &Path, merged: bool) -> Result<()> {
    if let Mode::Lora(l) = &cfg.mode {
        let dir = out.join("adapter");
        let tensors: HashMap<String, Tensor> =
            model.lora_tensors().into_iter().map(|(k, v)| Ok((k, v.to_dtype(DType::F32)?))).collect::<Result<_>>()?;
        save(&tensors, &dir.join("adapter_model.safetensors"))?;
        let config = serde_json::json!({
            "peft_type": "LORA",
            "task_type": "CAUSAL_LM",
            "r": l.rank,
            "lora_alpha": l.alpha,
            "lora_dropout": l.dropout,
            "target_modules": l.targets,
            "use_rslora": l.rslora,
            "bias": "none",
            "fan_in_fan_out": false,
            "inference_mode": true,
            "init_lora_weights": true,
            "modules_to_save": null,
            "layers_to_transform": null,
            "layers_pattern": null,
            "rank_pattern": {},
            "alpha_pattern": {},
            "use_dora": false,
            "base_model_name_or_path": null,
            "revision": null,
        });
        write_json(&config, &dir.join("adapter_config.json"))?;
    }
    if merged || cfg.mode == Mode::Full {
        let dir = out.join("merged");
        save(&model.merged_tensors()?, &dir.join("model.safetensors"))?;
        write_json(&model.cfg.raw, &dir.join("config.json"))?;
        // The tokenizer too, so that `merged/` is a model directory the next generation loads.
        let path = dir.join("tokenizer.json");
        let tmp = thrive_core::fsutil::temp_path(&path);
        enc.tokenizer().save(&tmp, false).map_err(|e| Error::Invalid(format!("{}: {e}", path.display())))?;
        std::fs::rename(&tmp, &path).map_err(|e| Error::Io { path: path.clone(), source: e })?;
    }
    Ok(())
}
