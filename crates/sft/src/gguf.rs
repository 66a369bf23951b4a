//! A Gemma 3 GGUF file as a model directory: `config.json` (transformers' `gemma3_text`, built
//! from the GGUF metadata), `model.safetensors` (every tensor dequantized to f32 under
//! transformers' names) and `tokenizer.json` (rebuilt from the SentencePiece vocabulary). Training
//! (LoRA on the frozen dequantized weights, or full), sampling and export then read it like any
//! other model directory.
//!
//! llama.cpp stores Gemma's RMSNorm weights as w + 1 (the norm scales by 1 + w); they are written
//! back as w, as transformers' GGUF loader does. Gemma's q and k weights are not permuted by
//! llama.cpp's converter (it uses NeoX-style RoPE for Gemma), so they are copied as they are.

use crate::gguf_tokenizer::{bad, get, read_gguf, string, tokenizer_from_gguf};
use crate::matmul::Weight;
use crate::GemmaConfig;
use crate::{Error, Result};
use candle_core::quantized::gguf_file::Content;
use candle_core::quantized::{GgmlDType, QStorage, QTensor};
use candle_core::{Device, Tensor};
use std::borrow::Cow;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// llama.cpp tensor name (after `blk.N.`) → transformers name (after `model.layers.N.`), and
/// whether it is a norm stored as w + 1.
const LAYER_TENSORS: [(&str, &str, bool); 13] = [
    ("attn_q.weight", "self_attn.q_proj.weight", false),
    ("attn_k.weight", "self_attn.k_proj.weight", false),
    ("attn_v.weight", "self_attn.v_proj.weight", false),
    ("attn_output.weight", "self_attn.o_proj.weight", false),
    ("ffn_gate.weight", "mlp.gate_proj.weight", false),
    ("ffn_up.weight", "mlp.up_proj.weight", false),
    ("ffn_down.weight", "mlp.down_proj.weight", false),
    ("attn_norm.weight", "input_layernorm.weight", true),
    ("post_attention_norm.weight", "post_attention_layernorm.weight", true),
    ("ffn_norm.weight", "pre_feedforward_layernorm.weight", true),
    ("post_ffw_norm.weight", "post_feedforward_layernorm.weight", true),
    ("attn_q_norm.weight", "self_attn.q_norm.weight", true),
    ("attn_k_norm.weight", "self_attn.k_norm.weight", true),
];

/// The model directory of a GGUF file, converted once into `<file stem>-thrive/` beside it and
/// converted again when the file changes (size or modification time).
pub fn gguf_model_dir(path: &Path) -> Result<PathBuf> {
    let meta = std::fs::metadata(path).map_err(|source| Error::Io { path: path.into(), source })?;
    let stamp = serde_json::json!({
        "gguf": path.canonicalize().unwrap_or_else(|_| path.into()).display().to_string(),
        "size": meta.len(),
        "modified": meta.modified().ok().and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok()).map(|d| d.as_secs()),
    });
    let stem = path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_else(|| "model".into());
    let dir = path.with_file_name(format!("{stem}-thrive"));
    let stamp_file = dir.join("source.json");
    let current =
        std::fs::read_to_string(&stamp_file).ok().and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok());
    if current.as_ref() == Some(&stamp) {
        return Ok(dir);
    }
    tracing::info!(gguf = %path.display(), out = %dir.display(), "converting GGUF to a model directory (once)");
    // Build beside the target and rename, so a killed conversion leaves nothing half-written.
    let tmp = path.with_file_name(format!(".{stem}-thrive.{}.tmp", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    let result = convert_gguf(path, &tmp).and_then(|()| {
        let text = serde_json::to_string_pretty(&stamp).expect("JSON");
        std::fs::write(tmp.join("source.json"), text)
            .map_err(|source| Error::Io { path: tmp.join("source.json"), source })?;
        if dir.exists() {
            std::fs::remove_dir_all(&dir).map_err(|source| Error::Io { path: dir.clone(), source })?;
        }
        std::fs::rename(&tmp, &dir).map_err(|source| Error::Io { path: dir.clone(), source })
    });
    if result.is_err() {
        let _ = std::fs::remove_dir_all(&tmp);
    }
    result.map(|()| dir)
}

/// The GGUF file behind `--model spec`, for decoding with its quantized weights: the file itself,
/// or the one a converted directory ([`gguf_model_dir`]) was made from.
pub fn quantized_source(spec: &str) -> Result<PathBuf> {
    let path = Path::new(spec);
    if path.is_file() && path.extension().is_some_and(|e| e.eq_ignore_ascii_case("gguf")) {
        return Ok(path.to_path_buf());
    }
    let from_stamp = std::fs::read_to_string(path.join("source.json"))
        .ok()
        .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
        .and_then(|v| v.get("gguf").and_then(|g| g.as_str()).map(PathBuf::from))
        .filter(|g| g.is_file());
    from_stamp.ok_or_else(|| {
        Error::Invalid(format!(
            "--dtype gguf: `{spec}` has no quantized weights (only a Gemma 3 .gguf file has them); pass the .gguf \
             file as --model, or use --dtype f32 or bf16"
        ))
    })
}

/// Writes the model directory of the Gemma 3 GGUF file `path` into `out`.
pub fn convert_gguf(path: &Path, out: &Path) -> Result<()> {
    let (content, mut file) = read_gguf(path)?;
    let arch = string(&content, "general.architecture")?;
    if arch != "gemma3" {
        return Err(bad(
            "general.architecture",
            format!("is `{arch}` in {}; only gemma3 GGUF files are supported", path.display()),
        ));
    }
    std::fs::create_dir_all(out).map_err(|source| Error::Io { path: out.into(), source })?;
    let cpu = Device::Cpu;
    let mut tensors: HashMap<String, Tensor> = HashMap::new();
    let mut read = |name: &str, norm: bool| -> Result<Tensor> {
        let q = content
            .tensor(&mut file, name, &cpu)
            .map_err(|e| Error::bad_model(path, format!("tensor `{name}`: {e}")))?;
        let t = q.dequantize(&cpu).map_err(|e| Error::bad_model(path, format!("dequantizing `{name}`: {e}")))?;
        Ok(if norm { (t - 1.0)? } else { t })
    };
    let layers = usize_of(&content, "gemma3.block_count")?;
    let embed = read("token_embd.weight", false)?;
    let vocab = embed.dims2()?.0;
    tensors.insert("model.embed_tokens.weight".into(), embed);
    tensors.insert("model.norm.weight".into(), read("output_norm.weight", true)?);
    for i in 0..layers {
        for (gguf, hf, norm) in LAYER_TENSORS {
            tensors.insert(format!("model.layers.{i}.{hf}"), read(&format!("blk.{i}.{gguf}"), norm)?);
        }
    }
    if content.tensor_infos.contains_key("output.weight") {
        return Err(Error::bad_model(path, "has an untied output.weight; Gemma ties it to the embedding"));
    }

    let config = config_json(&content, vocab)?;
    let write_err = |p: &Path, e: String| Error::bad_model(p, format!("writing: {e}"));
    let config_path = out.join("config.json");
    std::fs::write(&config_path, serde_json::to_string_pretty(&config).expect("JSON"))
        .map_err(|source| Error::Io { path: config_path.clone(), source })?;
    let weights = out.join("model.safetensors");
    candle_core::safetensors::save(&tensors, &weights).map_err(|e| write_err(&weights, e.to_string()))?;
    let tokenizer = out.join("tokenizer.json");
    tokenizer_from_gguf(&content)?.save(&tokenizer, false).map_err(|e| write_err(&tokenizer, e.to_string()))?;
    Ok(())
}

/// The config of a Gemma 3 GGUF file and its tensors under transformers' names, on `device`, for
/// decoding: the matrices keep the file's quantized blocks, the norms are dequantized to f32 and
/// written back as w (llama.cpp's w + 1 minus 1), and f32/f16 matrices are dense f32.
pub(crate) fn read_quantized(path: &Path, device: &Device) -> Result<(GemmaConfig, HashMap<String, Weight>)> {
    let (content, mut file) = read_gguf(path)?;
    let arch = string(&content, "general.architecture")?;
    if arch != "gemma3" {
        return Err(bad(
            "general.architecture",
            format!("is `{arch}` in {}; only gemma3 GGUF files are supported", path.display()),
        ));
    }
    if content.tensor_infos.contains_key("output.weight") {
        return Err(Error::bad_model(path, "has an untied output.weight; Gemma ties it to the embedding"));
    }
    let mut read = |name: &str, norm: bool| -> Result<Weight> {
        let q = content
            .tensor(&mut file, name, device)
            .map_err(|e| Error::bad_model(path, format!("tensor `{name}`: {e}")))?;
        let dense = matches!(q.dtype(), GgmlDType::F32 | GgmlDType::F16 | GgmlDType::BF16);
        if q.dtype() == GgmlDType::Q5_0 && device.is_cpu() {
            return Weight::from_qtensor(q5_0_as_q8_0(&q)?);
        }
        if !(norm || dense) {
            return Weight::from_qtensor(q);
        }
        let t = q.dequantize(device).map_err(|e| Error::bad_model(path, format!("dequantizing `{name}`: {e}")))?;
        Ok(Weight::Dense(if norm { (t - 1.0)? } else { t }))
    };
    let mut tensors = HashMap::new();
    let embed = read("token_embd.weight", false)?;
    let vocab = embed.dims2()?.0;
    tensors.insert("model.embed_tokens.weight".to_string(), embed);
    tensors.insert("model.norm.weight".into(), read("output_norm.weight", true)?);
    for i in 0..usize_of(&content, "gemma3.block_count")? {
        for (gguf, hf, norm) in LAYER_TENSORS {
            tensors.insert(format!("model.layers.{i}.{hf}"), read(&format!("blk.{i}.{gguf}"), norm)?);
        }
    }
    let cfg = GemmaConfig::from_value(config_json(&content, vocab)?, path)?;
    Ok((cfg, tensors))
}

/// Q5_0 blocks rewritten as Q8_0 blocks that hold the same values (each 5-bit q − 16 as an i8
/// under the same f16 scale, so exactly): candle's CPU kernels have SIMD for Q8_0 but only a
/// scalar loop for Q5_0, which took 40% of a decoding step. Both multiply q8_0 inputs; the
/// weights read 8.5 bits instead of 5.5.
fn q5_0_as_q8_0(q: &QTensor) -> Result<QTensor> {
    let data = q.data()?;
    let mut out = Vec::with_capacity(data.len() / 22 * 34);
    for block in data.chunks_exact(22) {
        // ggml's block_q5_0: f16 d, u32 qh (the fifth bits), 16 bytes of low nibbles.
        out.extend_from_slice(&block[..2]);
        let qh = u32::from_le_bytes([block[2], block[3], block[4], block[5]]);
        let qs = &block[6..22];
        let mut values = [0u8; 32];
        for j in 0..16 {
            let high0 = ((qh >> j) << 4) & 0x10;
            let high1 = (qh >> (j + 12)) & 0x10;
            values[j] = ((((qs[j] & 0x0F) as u32 | high0) as i32 - 16) as i8) as u8;
            values[j + 16] = ((((qs[j] >> 4) as u32 | high1) as i32 - 16) as i8) as u8;
        }
        out.extend_from_slice(&values);
    }
    let storage = QStorage::from_data(Cow::Owned(out), &Device::Cpu, GgmlDType::Q8_0)?;
    Ok(QTensor::new(storage, q.shape().clone())?)
}

/// transformers' `Gemma3TextConfig` of the file (what its GGUF loader builds): the local layers'
/// RoPE base (10,000), the every-sixth-layer global pattern and the attention scale (head_dim)
/// are Gemma 3's constants, which llama.cpp does not store either.
fn config_json(content: &Content, vocab: usize) -> Result<serde_json::Value> {
    let layers = usize_of(content, "gemma3.block_count")?;
    let head_dim = usize_of(content, "gemma3.attention.key_length")?;
    let layer_types: Vec<&str> =
        (0..layers).map(|i| if (i + 1) % 6 == 0 { "full_attention" } else { "sliding_attention" }).collect();
    let id =
        |key: &str, default: u64| content.metadata.get(key).and_then(|v| v.to_u32().ok()).map_or(default, u64::from);
    Ok(serde_json::json!({
        "architectures": ["Gemma3ForCausalLM"],
        "model_type": "gemma3_text",
        "vocab_size": vocab,
        "hidden_size": usize_of(content, "gemma3.embedding_length")?,
        "intermediate_size": usize_of(content, "gemma3.feed_forward_length")?,
        "num_hidden_layers": layers,
        "num_attention_heads": usize_of(content, "gemma3.attention.head_count")?,
        "num_key_value_heads": usize_of(content, "gemma3.attention.head_count_kv")?,
        "head_dim": head_dim,
        "query_pre_attn_scalar": head_dim,
        "rms_norm_eps": f64_of(content, "gemma3.attention.layer_norm_rms_epsilon")?,
        "sliding_window": usize_of(content, "gemma3.attention.sliding_window")?,
        "layer_types": layer_types,
        "rope_parameters": {
            "full_attention": {"rope_type": "default", "rope_theta": f64_of(content, "gemma3.rope.freq_base")?},
            "sliding_attention": {"rope_type": "default", "rope_theta": 10000.0},
        },
        "max_position_embeddings": usize_of(content, "gemma3.context_length")?,
        "attn_logit_softcapping": null,
        "final_logit_softcapping": null,
        "hidden_activation": "gelu_pytorch_tanh",
        "tie_word_embeddings": true,
        "bos_token_id": id("tokenizer.ggml.bos_token_id", 2),
        "eos_token_id": id("tokenizer.ggml.eos_token_id", 1),
        "pad_token_id": id("tokenizer.ggml.padding_token_id", 0),
        "dtype": "float32",
    }))
}

fn usize_of(content: &Content, key: &str) -> Result<usize> {
    let v = get(content, key)?;
    v.to_u32()
        .map(|x| x as usize)
        .or_else(|_| v.to_u64().map(|x| x as usize))
        .map_err(|e| bad(key, format!("not an unsigned integer: {e}")))
}

fn f64_of(content: &Content, key: &str) -> Result<f64> {
    let v = get(content, key)?;
    v.to_f32().map(f64::from).or_else(|_| v.to_f64()).map_err(|e| bad(key, format!("not a number: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn q5_0_blocks_become_q8_0_blocks_with_the_same_values() {
        let values: Vec<f32> = (0..4 * 64).map(|i| ((i * 37 % 101) as f32 - 50.0) * 0.013).collect();
        let t = Tensor::from_vec(values, (4, 64), &Device::Cpu).unwrap();
        let q5 = QTensor::quantize(&t, GgmlDType::Q5_0).unwrap();
        let q8 = q5_0_as_q8_0(&q5).unwrap();
        assert_eq!(q8.dtype(), GgmlDType::Q8_0);
        let (a, b) = (q5.dequantize(&Device::Cpu).unwrap(), q8.dequantize(&Device::Cpu).unwrap());
        assert_eq!(a.to_vec2::<f32>().unwrap(), b.to_vec2::<f32>().unwrap());
        // Quantization did round (the test is not vacuous).
        assert_ne!(a.to_vec2::<f32>().unwrap(), t.to_vec2::<f32>().unwrap());
    }
}
