//! Loading a [`Gemma`]: safetensors model directories (frozen, or every weight trainable for
//! full fine-tuning) and Gemma 3 GGUF files for decoding.

use super::layer::Layer;
use super::norm::RmsNorm;
use super::Gemma;
use crate::gemma_config::GemmaConfig;
use crate::lora::LoraLinear;
use crate::matmul::Weight;
use crate::{Error, Precision, Result};
use candle_core::{DType, Device, Tensor};
use std::collections::HashMap;
use std::path::Path;

/// Loads every tensor of a model directory (single file or sharded with an index).
fn load_weights(dir: &Path, dtype: DType, device: &Device) -> Result<(HashMap<String, Tensor>, String)> {
    let single = dir.join("model.safetensors");
    let index = dir.join("model.safetensors.index.json");
    let files: Vec<std::path::PathBuf> = if single.exists() {
        vec![single]
    } else if index.exists() {
        let text = std::fs::read_to_string(&index).map_err(|e| Error::Io { path: index.clone(), source: e })?;
        let v: serde_json::Value =
            serde_json::from_str(&text).map_err(|e| Error::bad_model(&index, format!("not JSON: {e}")))?;
        let map =
            v.get("weight_map").and_then(|m| m.as_object()).ok_or_else(|| Error::bad_model(&index, "no weight_map"))?;
        let mut files: Vec<String> = map.values().filter_map(|f| f.as_str().map(String::from)).collect();
        files.sort();
        files.dedup();
        files.into_iter().map(|f| dir.join(f)).collect()
    } else {
        return Err(Error::bad_model(dir, "no model.safetensors or model.safetensors.index.json"));
    };
    let mut all = HashMap::new();
    for f in &files {
        all.extend(crate::weights::read(f, dtype, device)?);
    }
    Ok((all, files.iter().map(|f| f.display().to_string()).collect::<Vec<_>>().join(", ")))
}

impl Gemma {
    /// Loads `config.json` and the weights from `dir`, frozen, in `precision` (a dtype, f32 on
    /// the CPU and bf16 on CUDA, or [`Precision::BF16_MIXED`]: bf16 weights, f32 activations).
    pub fn load(dir: &Path, precision: impl Into<Precision>, device: &Device) -> Result<Self> {
        let precision = precision.into();
        let cfg = GemmaConfig::from_file(&dir.join("config.json"))?;
        let (w, files) = load_weights(dir, precision.weights, device)?;
        let w = w.into_iter().map(|(k, t)| (k, Weight::Dense(t))).collect();
        Self::from_weights(cfg, w, &files, precision.compute, device)
    }

    /// A Gemma 3 GGUF file for decoding only: its matrices (the tied embedding included) stay in
    /// the file's quantized blocks and go through candle's quantized matmul, which reads 4.5 to
    /// 8.5 bits a weight instead of 32; norms and activations are f32. It cannot be trained,
    /// merged with an adapter or exported (an adapter stays a separate f32 update).
    pub fn load_gguf(path: &Path, device: &Device) -> Result<Self> {
        let (cfg, w) = crate::gguf::read_quantized(path, device)?;
        Self::from_weights(cfg, w, &path.display().to_string(), DType::F32, device)
    }

    /// The model of `cfg` from its tensors under transformers' names (`files` names them in errors).
    fn from_weights(
        cfg: GemmaConfig,
        mut w: HashMap<String, Weight>,
        files: &str,
        dtype: DType,
        device: &Device,
    ) -> Result<Self> {
        let h = cfg.hidden_size;
        let (nh, nkv, hd, ff) = (cfg.num_attention_heads, cfg.num_key_value_heads, cfg.head_dim, cfg.intermediate_size);
        let mut take = |name: &str, shape: &[usize]| -> Result<Weight> {
            let t = w
                .remove(name)
                .or_else(|| w.remove(&name.replacen("model.", "", 1)))
                .ok_or_else(|| Error::bad_model(files, format!("missing tensor `{name}`")))?;
            let dims = match &t {
                Weight::Quantized(q) => q.shape().dims().to_vec(),
                Weight::Q8(q) => vec![q.dims().0, q.dims().1],
                dense => dense.dense()?.dims().to_vec(),
            };
            if dims != shape {
                return Err(Error::bad_model(
                    files,
                    format!("tensor `{name}` has shape {dims:?}, the config needs {shape:?}"),
                ));
            }
            Ok(t)
        };
        let norm = |t: Weight| -> Result<RmsNorm> {
            let t = t.dense()?.clone();
            Ok(RmsNorm { scale: (t.to_dtype(DType::F32)? + 1.0)?, weight: t, var: None, eps: cfg.rms_norm_eps })
        };
        let embed = take("model.embed_tokens.weight", &[cfg.vocab_size, h])?;
        let qk_norm = cfg.is_gemma3();
        let mut layers = Vec::with_capacity(cfg.num_hidden_layers);
        for i in 0..cfg.num_hidden_layers {
            let p = format!("model.layers.{i}");
            let lin = |weight: Weight| LoraLinear { weight, full: None, lora: None, bf16_products: false };
            layers.push(Layer {
                q: lin(take(&format!("{p}.self_attn.q_proj.weight"), &[nh * hd, h])?),
                k: lin(take(&format!("{p}.self_attn.k_proj.weight"), &[nkv * hd, h])?),
                v: lin(take(&format!("{p}.self_attn.v_proj.weight"), &[nkv * hd, h])?),
                o: lin(take(&format!("{p}.self_attn.o_proj.weight"), &[h, nh * hd])?),
                gate: lin(take(&format!("{p}.mlp.gate_proj.weight"), &[ff, h])?),
                up: lin(take(&format!("{p}.mlp.up_proj.weight"), &[ff, h])?),
                down: lin(take(&format!("{p}.mlp.down_proj.weight"), &[h, ff])?),
                input_norm: norm(take(&format!("{p}.input_layernorm.weight"), &[h])?)?,
                post_attn_norm: norm(take(&format!("{p}.post_attention_layernorm.weight"), &[h])?)?,
                pre_ff_norm: norm(take(&format!("{p}.pre_feedforward_layernorm.weight"), &[h])?)?,
                post_ff_norm: norm(take(&format!("{p}.post_feedforward_layernorm.weight"), &[h])?)?,
                q_norm: qk_norm.then(|| norm(take(&format!("{p}.self_attn.q_norm.weight"), &[hd])?)).transpose()?,
                k_norm: qk_norm.then(|| norm(take(&format!("{p}.self_attn.k_norm.weight"), &[hd])?)).transpose()?,
                window: cfg.window(i),
                rope_base: cfg.rope_base(i),
            });
        }
        let final_norm = norm(take("model.norm.weight", &[h])?)?;
        let erf_gelu = cfg.hidden_activation == "gelu";
        Ok(Gemma {
            cfg,
            embed,
            embed_var: None,
            layers,
            final_norm,
            dtype,
            device: device.clone(),
            erf_gelu,
            manual_backward: None,
            bf16_trained: false,
        })
    }

    /// For full fine-tuning: every weight read in f32 and made trainable (the f32 master
    /// copies, so a generation never starts from weights rounded through bf16), computed in
    /// `dtype`.
    /// Under `bf16-mixed` (CPU, `mkl` build) the weights stay f32 masters and every product that
    /// reads one rounds it and its other operand to bf16, accumulating in f32 (AMX), as PyTorch's
    /// CPU autocast does; activations, norms, attention and the loss stay f32.
    pub fn load_full(dir: &Path, precision: impl Into<Precision>, device: &Device) -> Result<Self> {
        let precision = precision.into();
        let mixed = precision == Precision::BF16_MIXED;
        if precision.weights != precision.compute && !mixed {
            return Err(Error::Invalid(format!("dtype {}: not a precision for full fine-tuning", precision.name())));
        }
        if mixed && !(device.is_cpu() && crate::matmul::mixed_products()) {
            return Err(Error::Invalid("dtype bf16-mixed needs the CPU of an mkl build; use f32 or bf16 here".into()));
        }
        let mut model = Self::load(dir, DType::F32, device)?;
        model.dtype = precision.compute;
        model.make_all_trainable()?;
        if mixed {
            model.bf16_trained = true;
            for (_, lin) in model.linears_mut() {
                lin.bf16_products = true;
            }
        }
        Ok(model)
    }
}
