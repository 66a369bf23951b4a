//! Gemma 2's `config.json`, as transformers writes it (4.x and 5.x).

use crate::{Error, Result};
use serde::Deserialize;
use std::path::Path;

/// The architecture hyper-parameters the model needs.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Gemma2Config {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub num_key_value_heads: usize,
    pub head_dim: usize,
    pub rms_norm_eps: f64,
    /// transformers 4.x keeps it at the top level, 5.x in `rope_parameters`.
    #[serde(default)]
    pub rope_theta: Option<f64>,
    #[serde(default)]
    pub rope_parameters: Option<RopeParameters>,
    pub query_pre_attn_scalar: f64,
    pub sliding_window: Option<usize>,
    pub attn_logit_softcapping: Option<f64>,
    pub final_logit_softcapping: Option<f64>,
    /// `sliding_attention` / `full_attention` per layer; default: sliding on even layers.
    #[serde(default)]
    pub layer_types: Option<Vec<String>>,
    #[serde(default = "default_activation")]
    pub hidden_activation: String,
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

/// transformers 5's rope block.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct RopeParameters {
    pub rope_theta: f64,
}

fn default_activation() -> String {
    "gelu_pytorch_tanh".into()
}

impl Gemma2Config {
    /// Reads and checks `config.json`.
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::Io { path: path.into(), source: e })?;
        let mut cfg: Gemma2Config =
            serde_json::from_str(&text).map_err(|e| Error::bad_model(path, format!("not a Gemma 2 config: {e}")))?;
        cfg.raw = serde_json::from_str(&text).unwrap_or_default();
        cfg.check().map_err(|m| Error::bad_model(path, m))?;
        Ok(cfg)
    }

    fn check(&self) -> std::result::Result<(), String> {
        if self.num_attention_heads % self.num_key_value_heads.max(1) != 0 {
            return Err("num_attention_heads must be a multiple of num_key_value_heads".into());
        }
        if self.head_dim % 2 != 0 {
            return Err("head_dim must be even for rotary embeddings".into());
        }
        if !matches!(self.hidden_activation.as_str(), "gelu_pytorch_tanh" | "gelu_new" | "gelu") {
            return Err(format!("hidden_activation `{}` is not Gemma 2's GELU", self.hidden_activation));
        }
        if let Some(t) = &self.layer_types {
            if t.len() != self.num_hidden_layers {
                return Err(format!("{} layer_types for {} layers", t.len(), self.num_hidden_layers));
            }
        }
        Ok(())
    }

    /// The RoPE base.
    pub fn rope_base(&self) -> f64 {
        self.rope_parameters.as_ref().map(|r| r.rope_theta).or(self.rope_theta).unwrap_or(10_000.0)
    }

    /// The sliding window of layer `i`, or `None` for a global layer.
    pub fn window(&self, i: usize) -> Option<usize> {
        let sliding = match &self.layer_types {
            Some(t) => t[i] == "sliding_attention",
            None => i % 2 == 0,
        };
        if sliding {
            self.sliding_window
        } else {
            None
        }
    }
}
