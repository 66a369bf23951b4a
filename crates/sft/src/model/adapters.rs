//! LoRA adapters on a [`Gemma`]: adding fresh ones, loading PEFT's, merging them into the base
//! weights, and the tensors an export writes.

use super::Gemma;
use crate::lora::{LoraConfig, LoraLinear};
use crate::{Error, Result};
use candle_core::{DType, Tensor};
use std::collections::HashMap;
use std::path::Path;

impl Gemma {
    /// Adds fresh LoRA adapters (A from `rng`, B zero) to the configured modules.
    pub fn add_lora(&mut self, cfg: &LoraConfig, rng: &mut thrive_core::Rng) -> Result<()> {
        for t in &cfg.targets {
            if !crate::LORA_TARGETS.contains(&t.as_str()) {
                return Err(Error::Invalid(format!(
                    "unknown LoRA target module `{t}` (expected one of {:?})",
                    crate::LORA_TARGETS
                )));
            }
        }
        let device = self.device.clone();
        for (name, lin) in self.linears_mut() {
            let module = name.rsplit('.').next().unwrap_or_default();
            if cfg.targets.iter().any(|t| t == module) {
                *lin = lin.clone().with_lora(cfg, rng, &device)?;
            }
        }
        Ok(())
    }

    /// Loads A and B of every adapted module from a PEFT `adapter_model.safetensors`.
    pub fn load_lora_weights(&mut self, path: &Path) -> Result<()> {
        let tensors = candle_core::safetensors::load(path, &self.device)
            .map_err(|e| Error::bad_model(path, format!("not readable safetensors: {e}")))?;
        for (name, lin) in self.linears_mut() {
            let Some(l) = &lin.lora else { continue };
            for (part, var) in [("lora_A", &l.a), ("lora_B", &l.b)] {
                let key = format!("{name}.{part}.weight");
                let t = tensors.get(&key).ok_or_else(|| Error::bad_model(path, format!("missing tensor `{key}`")))?;
                if t.dims() != var.dims() {
                    return Err(Error::bad_model(
                        path,
                        format!("`{key}` has shape {:?}, expected {:?} (rank or targets differ)", t.dims(), var.dims()),
                    ));
                }
                var.set(&t.to_dtype(DType::F32)?)?;
            }
        }
        Ok(())
    }

    /// Folds every LoRA adapter into its base weight (W + scale·B·A) and drops the adapters:
    /// the same function, one matmul per layer instead of three (for sampling).
    pub fn merge_lora(&mut self) -> Result<()> {
        let dtype = self.dtype;
        for (_, lin) in self.linears_mut() {
            // Quantized weights keep their adapter as a separate f32 update: requantizing W + BA
            // would round the update away.
            if (lin.lora.is_some() || lin.full.is_some()) && !lin.weight.is_quantized() {
                // An adapted weight keeps its stored dtype (bf16 under bf16-mixed, whose compute
                // dtype is f32); a trained one (f32 masters) goes back to the model's.
                let merged = lin.merged_weight()?;
                let merged = if lin.full.is_some() { merged.to_dtype(dtype)? } else { merged };
                *lin = LoraLinear::frozen(merged);
            }
        }
        Ok(())
    }

    /// Every weight under transformers' names, LoRA merged in (W + scale·B·A): a checkpoint
    /// `Gemma2ForCausalLM` / `Gemma3ForCausalLM.from_pretrained` loads (tied embeddings, so no
    /// `lm_head`).
    pub fn merged_tensors(&self) -> Result<HashMap<String, Tensor>> {
        let mut out = HashMap::new();
        out.insert("model.embed_tokens.weight".to_string(), self.embed.dense()?.clone());
        for (name, lin) in self.linears() {
            out.insert(format!("{}.weight", name.trim_start_matches("base_model.model.")), lin.merged_weight()?);
        }
        for (name, norm) in self.norms() {
            out.insert(format!("{name}.weight"), norm.weight.clone());
        }
        Ok(out)
    }

    /// The LoRA tensors under PEFT's names (`base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight`).
    pub fn lora_tensors(&self) -> HashMap<String, Tensor> {
        let mut out = HashMap::new();
        for (name, lin) in self.linears() {
            if let Some(lora) = &lin.lora {
                out.insert(format!("{name}.lora_A.weight"), lora.a.as_tensor().clone());
                out.insert(format!("{name}.lora_B.weight"), lora.b.as_tensor().clone());
            }
        }
        out
    }
}
