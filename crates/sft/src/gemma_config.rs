//! Gemma 2's and Gemma 3's (text) `config.json`, as transformers writes them (4.x and 5.x).

use crate::{Error, Result};
use serde::Deserialize;
use std::path::Path;

/// The architecture hyper-parameters the model needs.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct GemmaConfig {
    /// `gemma2` or `gemma3_text` (absent: Gemma 2).
    #[serde(default)]
    pub model_type: Option<String>,
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub num_key_value_heads: usize,
    pub head_dim: usize,
    pub rms_norm_eps: f64,
    /// transformers 4.x keeps it at the top level, 5.x in `rope_parameters` (Gemma 3: one entry
    /// per layer type).
    #[serde(default)]
    pub rope_theta: Option<f64>,
    #[serde(default)]
    pub rope_parameters: Option<serde_json::Value>,
    /// Gemma 3 under transformers 4.x: the sliding layers' RoPE base.
    #[serde(default)]
    pub rope_local_base_freq: Option<f64>,
    #[serde(default)]
    pub rope_scaling: Option<serde_json::Value>,
    /// Gemma 3 under transformers 4.x: every `sliding_window_pattern`-th layer is global.
    #[serde(default)]
    pub sliding_window_pattern: Option<usize>,
    pub query_pre_attn_scalar: f64,
    pub sliding_window: Option<usize>,
    #[serde(default)]
    pub attn_logit_softcapping: Option<f64>,
    #[serde(default)]
    pub final_logit_softcapping: Option<f64>,
    /// `sliding_attention` / `full_attention` per layer; default: Gemma 2 sliding on even
    /// layers, Gemma 3 global on every sixth.
    #[serde(default)]
    pub layer_types: Option<Vec<String>>,
    #[serde(default = "default_activation")]
    pub hidden_activation: String,
    /// EmbeddingGemma-style bidirectional attention (not a causal LM; refused).
    #[serde(default)]
    pub use_bidirectional_attention: Option<bool>,
    #[serde(default)]
    pub eos_token_id: Option<serde_json::Value>,
    #[serde(default)]
    pub bos_token_id: Option<u32>,
    #[serde(default)]
    pub pad_token_id: Option<u32>,
    /// The file as read, written back unchanged beside merged weights.
    #[serde(skip)]
    pub raw: serde_json::Value,
}

fn default_activation() -> String {
    "gelu_pytorch_tanh".into()
}

impl GemmaConfig {
    /// Reads and checks `config.json`.
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::Io { path: path.into(), source: e })?;
        let raw: serde_json::Value = serde_json::from_str(&text)
            .map_err(|e| Error::bad_model(path, format!("not a Gemma 2 or Gemma 3 config: {e}")))?;
        Self::from_value(raw, path)
    }

    /// Checks a parsed `config.json` (`source` names where it came from in errors).
    pub fn from_value(raw: serde_json::Value, source: &Path) -> Result<Self> {
        let mut cfg: GemmaConfig = serde_json::from_value(raw.clone())
            .map_err(|e| Error::bad_model(source, format!("not a Gemma 2 or Gemma 3 config: {e}")))?;
        cfg.raw = raw;
        cfg.check().map_err(|m| Error::bad_model(source, m))?;
        Ok(cfg)
    }

    /// Gemma 3 (QK-norm, two RoPE bases, global attention on every sixth layer).
    pub fn is_gemma3(&self) -> bool {
        self.model_type.as_deref().is_some_and(|t| t.starts_with("gemma3"))
    }

    fn check(&self) -> std::result::Result<(), String> {
        match self.model_type.as_deref() {
            None | Some("gemma2" | "gemma3_text" | "gemma3") => {}
            Some(other) => return Err(format!("model_type `{other}` is not gemma2 or gemma3_text")),
        }
        if self.use_bidirectional_attention == Some(true) {
            return Err("use_bidirectional_attention: not a causal language model".into());
        }
        if !self.num_attention_heads.is_multiple_of(self.num_key_value_heads.max(1)) {
            return Err("num_attention_heads must be a multiple of num_key_value_heads".into());
        }
        if !self.head_dim.is_multiple_of(2) {
            return Err("head_dim must be even for rotary embeddings".into());
        }
        if !matches!(self.hidden_activation.as_str(), "gelu_pytorch_tanh" | "gelu_new" | "gelu") {
            return Err(format!("hidden_activation `{}` is not Gemma's GELU", self.hidden_activation));
        }
        if let Some(t) = &self.layer_types {
            if t.len() != self.num_hidden_layers {
                return Err(format!("{} layer_types for {} layers", t.len(), self.num_hidden_layers));
            }
        }
        // Only plain RoPE (the 270M and 1B Gemma 3 models); the larger ones scale the global layers.
        let scaled = |v: &serde_json::Value| {
            v.get("rope_type").and_then(|t| t.as_str()).is_some_and(|t| t != "default")
                || v.get("type").and_then(|t| t.as_str()).is_some_and(|t| t != "default")
        };
        let mut blocks: Vec<&serde_json::Value> = self.rope_scaling.iter().filter(|v| !v.is_null()).collect();
        if let Some(p) = &self.rope_parameters {
            blocks.push(p);
            blocks.extend(p.as_object().into_iter().flat_map(|o| o.values()).filter(|v| v.is_object()));
        }
        if blocks.iter().any(|v| scaled(v)) {
            return Err("RoPE scaling (rope_type other than default) is not supported".into());
        }
        for i in 0..self.num_hidden_layers {
            if self.rope_base(i).is_nan() || self.rope_base(i) <= 0.0 {
                return Err(format!("no valid RoPE base for layer {i}"));
            }
        }
        Ok(())
    }

    /// Whether layer `i` attends within the sliding window.
    pub fn is_sliding(&self, i: usize) -> bool {
        match &self.layer_types {
            Some(t) => t[i] == "sliding_attention",
            None if self.is_gemma3() => !(i + 1).is_multiple_of(self.sliding_window_pattern.unwrap_or(6).max(1)),
            None => i.is_multiple_of(2),
        }
    }

    /// The RoPE base of layer `i` (Gemma 3: 10,000 on sliding layers, `rope_theta` on global ones).
    pub fn rope_base(&self, i: usize) -> f64 {
        let sliding = self.is_sliding(i);
        let theta = |v: &serde_json::Value| v.get("rope_theta").and_then(|t| t.as_f64());
        if let Some(p) = &self.rope_parameters {
            let kind = if sliding { "sliding_attention" } else { "full_attention" };
            if let Some(t) = p.get(kind).and_then(theta).or_else(|| theta(p)) {
                return t;
            }
        }
        if self.is_gemma3() && sliding {
            return self.rope_local_base_freq.unwrap_or(10_000.0);
        }
        self.rope_theta.unwrap_or(10_000.0)
    }

    /// The sliding window of layer `i`, or `None` for a global layer.
    pub fn window(&self, i: usize) -> Option<usize> {
        if self.is_sliding(i) {
            self.sliding_window
        } else {
            None
        }
    }
}
